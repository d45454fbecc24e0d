//! The signed fixture behind `scripts/check-fixture` (the README's smaller look, without root):
//! a bookworm root, a meta-release and a trixie helper pocket, signed by a committed
//! test-only key. CI checks that it still verifies; `cargo test -- --ignored
//! regenerate_check_fixture` rebuilds it.

use std::path::Path;

use ru_format::date;
use ru_publish::SigningKey;
use ru_publish::metarelease;
use ru_publish::pocket::{self, PocketEntry, PocketSpec};

const FIXTURE: &str = "tests/fixtures/check";

#[test]
fn committed_check_fixture_still_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(
        Path::new(FIXTURE).join("root/etc/os-release"),
        root.join("etc/os-release"),
    )
    .unwrap();
    let run = std::process::Command::new(crate::support::BIN)
        .args(["--root", root.to_str().unwrap()])
        .args(["--keyring", &format!("{FIXTURE}/keyring.gpg")])
        .args(["--meta-release-uri", &format!("{FIXTURE}/meta-release")])
        .args(["--arch", "amd64", "check"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "New release '13' (trixie) available.\n",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.status.code(), Some(0));
}

#[test]
#[ignore = "rewrites tests/fixtures/check; run by hand when the fixture must change"]
fn regenerate_check_fixture() {
    let dir = Path::new(FIXTURE);
    let secret = dir.join("test-only-secret.asc");
    let key = if secret.exists() {
        SigningKey::load(&secret).unwrap()
    } else {
        let key = SigningKey::generate(
            "release-upgrader fixture key (TEST ONLY) <fixture@invalid>",
            None,
        )
        .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&secret, key.secret_armored()).unwrap();
        key
    };
    std::fs::write(dir.join("keyring.gpg"), key.public_keyring()).unwrap();
    std::fs::create_dir_all(dir.join("root/etc")).unwrap();
    std::fs::write(
        dir.join("root/etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
         VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n",
    )
    .unwrap();
    let base = format!("{FIXTURE}/dists/trixie/main/");
    let stanzas = crate::support::bookworm_and_trixie(&base, None);
    metarelease::write(
        &dir.join("meta-release"),
        &metarelease::render(&stanzas),
        &key,
    )
    .unwrap();

    let pocket_dir = dir.join("dists/trixie/main/dist-upgrader-amd64/current");
    let _ = std::fs::remove_dir_all(&pocket_dir);
    let stand_ins = tempfile::tempdir().unwrap();
    let entries: Vec<PocketEntry> = crate::support::default_packages()
        .into_iter()
        .map(|(name, version, depends)| {
            let file = stand_ins.path().join(format!("{name}.deb"));
            std::fs::write(&file, format!("stand-in for {name} {version}\n")).unwrap();
            let mut fields = vec![
                ("Package".to_owned(), name.clone()),
                ("Version".to_owned(), version),
                ("Architecture".to_owned(), "amd64".to_owned()),
            ];
            if !depends.is_empty() {
                fields.push(("Depends".to_owned(), depends));
            }
            fields.push((
                "Description".to_owned(),
                format!("stand-in for the {name} helper"),
            ));
            PocketEntry { fields, file }
        })
        .collect();
    let spec = PocketSpec {
        origin: "release-upgrader fixture".into(),
        label: "release-upgrader fixture helpers".into(),
        suite: "trixie".into(),
        codename: "trixie".into(),
        architectures: vec!["amd64".into()],
        description: Some("TEST ONLY: stand-in helpers for the README's first command".into()),
        date: date::parse("Sun, 01 Nov 2026 00:00:00 UTC").unwrap(),
        valid_until: Some(date::parse("Tue, 01 Jan 2036 00:00:00 UTC").unwrap()),
    };
    pocket::write(&pocket_dir, &spec, &entries, &key).unwrap();
}
