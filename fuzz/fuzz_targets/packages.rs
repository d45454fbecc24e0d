//! A pocket's `Packages` index (`pocket::parse_packages`) and where each package is then
//! fetched from (`fetch::Location::join`, as `Pocket::deb_location` does).
//!
//! Invariant: a `Filename` never leaves the pocket: joined to an http pocket URL it stays
//! on the same scheme, host and port, under the pocket's path; joined to a directory it
//! stays under it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_trust::fetch::Location;
use ru_client::pocket::parse_packages;
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packages) = parse_packages(text) else {
        return;
    };
    let url = Location::parse("http://127.0.0.1:8080/dists/trixie/pocket/").expect("url");
    let dir = Location::parse("/srv/pocket").expect("dir");
    f::trace(&format!("{} packages", packages.len()));
    for package in &packages {
        assert!(!package.name.is_empty());
        let name = &package.filename;
        assert!(!name.starts_with('/'), "absolute Filename {name:?} accepted");
        match url.join(name) {
            Ok(Location::Url(joined)) => {
                assert_eq!(joined.scheme(), "http", "Filename {name:?} → {joined}");
                assert_eq!(joined.host_str(), Some("127.0.0.1"), "Filename {name:?} → {joined}");
                assert_eq!(joined.port(), Some(8080), "Filename {name:?} → {joined}");
                assert!(
                    joined.path().starts_with("/dists/trixie/pocket/"),
                    "Filename {name:?} leaves the pocket: {joined}"
                );
            }
            Ok(other) => panic!("an http pocket joined to {other:?}"),
            Err(_) => {}
        }
        if let Ok(Location::Path(path)) = dir.join(name) {
            let mut depth = 0i32;
            for c in path.strip_prefix("/srv/pocket").expect("under the dir").components() {
                match c {
                    std::path::Component::Normal(_) => depth += 1,
                    std::path::Component::ParentDir => depth -= 1,
                    _ => {}
                }
                assert!(depth >= 0, "Filename {name:?} leaves the pocket: {}", path.display());
            }
        }
    }
});
