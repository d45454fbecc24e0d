//! A detached signature (`Release.gpg`, `meta-release.gpg`, an image file's `.asc`)
//! through `openpgp::verify_detached` and `verify_detached_file`, against the fixture's
//! trusted keyring. Input: `data SEP signature`; seeds are the fixture's signed pairs.
//!
//! Invariants: the two entry points agree; a verified value is the data given, names at
//! least one signer, and every signer is a key of the trusted keyring.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_trust::openpgp;
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let parts = f::split_parts(data, 2);
    let (signed, signature) = (parts[0], parts[1]);
    let keyring = f::fixture_keyring();
    let in_memory = openpgp::verify_detached(keyring, signed.to_vec(), signature, "fuzz");
    let path = f::scratch_file("signed", signed);
    let from_file = openpgp::verify_detached_file(keyring, &path, signature, "fuzz");
    f::trace(&format!("verify: {:?}", in_memory.as_ref().map(|v| v.signers().len()).map_err(|e| e.to_string())));
    assert_eq!(in_memory.is_ok(), from_file.is_ok(), "the two verifiers disagree");
    let Ok(verified) = in_memory else {
        return;
    };
    assert_eq!(verified.value().as_slice(), signed);
    assert!(!verified.signers().is_empty(), "verified without a signer");
    let trusted: Vec<String> = keyring.certs().iter().map(|c| c.fingerprint().to_hex()).collect();
    for signer in verified.signers() {
        assert!(trusted.contains(&signer.fingerprint), "signed by an untrusted key");
    }
});
