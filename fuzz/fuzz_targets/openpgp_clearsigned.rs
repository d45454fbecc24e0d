//! A clearsigned document (`InRelease`, the signed meta-release) through
//! `openpgp::verify_clearsigned` against the fixture's trusted keyring, then the signed
//! text through the parser that would read it (`ReleaseFile::parse`,
//! `MetaRelease::parse`). Seeds are the fixture's signed files, so mutations start from
//! good signatures.
//!
//! Invariant: a verified value names at least one signer, and that signer is a key of
//! the trusted keyring.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_trust::openpgp;
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let keyring = f::fixture_keyring();
    let _ = openpgp::is_clearsigned(data);
    let result = openpgp::verify_clearsigned(keyring, data, "fuzz");
    f::trace(&format!("verify: {:?}", result.as_ref().map(|v| v.signers().len()).map_err(|e| e.to_string())));
    let Ok(verified) = result else {
        return;
    };
    assert!(!verified.signers().is_empty(), "verified without a signer");
    let trusted: Vec<String> = keyring.certs().iter().map(|c| c.fingerprint().to_hex()).collect();
    for signer in verified.signers() {
        assert!(trusted.contains(&signer.fingerprint), "signed by an untrusted key");
    }
    if let Ok(text) = std::str::from_utf8(verified.value()) {
        let _ = ru_client::pocket::ReleaseFile::parse(text);
        let _ = ru_client::metarelease::MetaRelease::parse(text);
    }
});
