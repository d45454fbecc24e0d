//! A `Release` file (the signed text of `InRelease`, or `Release`):
//! `pocket::ReleaseFile::parse`, then the pure checks the client makes of it
//! (`pocket::check_release`) and the index lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_trust::fetch::Location;
use ru_client::pocket::{PocketRequest, PocketSource, ReleaseFile, check_release};
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(release) = ReleaseFile::parse(text) else {
        return;
    };
    assert!(!release.codename.is_empty());
    for file in &release.files {
        assert!(release.index(&file.name).is_some());
    }
    let request = PocketRequest {
        location: Location::parse("http://127.0.0.1/pocket/").expect("location"),
        codename: release.codename.clone(),
        arch: "amd64".into(),
        source: PocketSource::Network,
        now: 1_750_000_000,
    };
    f::trace(&format!("release {} with {} files", release.codename, release.files.len()));
    let verdict = check_release(&release, &request, Some((release.date, release.date_text.clone())));
    if verdict.is_ok() {
        let (until, _) = release.valid_until.as_ref().expect("Valid-Until was required");
        assert!(*until >= request.now);
        assert!(release.date <= request.now + 600);
    }
});
