//! A system-image keyring tarball (`keyring.tar.xz`: `keyring.gpg` and `keyring.json`)
//! through `image::keyring::VerifiedKeyring::anchor`, the check every keyring of the
//! chain gets after its signature (the signature itself is the OpenPGP targets' part).
//!
//! Mode (first byte) 0: the rest is the `.tar.xz` as downloaded. 1: the rest is the tar,
//! wrapped here in a stored xz stream (so the fuzzer works on the tar, not on LZMA).
//! 2: the rest is `json SEP gpg`, made into the tarball here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_client::image::keyring::{Checks, VerifiedKeyring};
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tarball = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let mut tar = rest.to_vec();
            f::fix_tar_checksums(&mut tar);
            f::xz_stored(&tar)
        }
        _ => {
            let parts = f::split_parts(rest, 2);
            f::xz_stored(&f::tar_of(&[("keyring.json", parts[0]), ("keyring.gpg", parts[1])]))
        }
    };
    let checks = Checks {
        now: 1_750_000_000,
        device: Some("mako"),
    };
    let anchor = VerifiedKeyring::anchor(&tarball, &checks, "fuzz");
    f::trace(&format!("anchor: {:?}", anchor.as_ref().map(|k| k.fingerprints()).map_err(|e| e.to_string())));
    if let Ok(keyring) = anchor {
        assert!(!keyring.keyring().is_empty(), "an anchor without keys");
        if let Some(expiry) = keyring.expiry() {
            assert!(expiry > checks.now, "an expired keyring accepted");
        }
        if let Some(model) = keyring.model() {
            assert_eq!(model, "mako");
        }
        let _ = keyring.fingerprints();
    }
});
