//! OpenPGP certificates as the client loads keyrings (`openpgp::Keyring::load`: binary or
//! armored, one or more certificates; a system-image `keyring.gpg` is read the same way),
//! then used to verify the fixture's signed `Release` (`verify_detached`), so a fuzzed
//! certificate also goes through the key lookup and the validity checks of a signer.
//!
//! Invariant: a verification that succeeds names a signer whose certificate is in the
//! loaded keyring.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_trust::openpgp::{self, Keyring};
use release_upgrader_fuzz as f;

const RELEASE: &[u8] = include_bytes!(
    "../../tests/fixtures/check/dists/trixie/main/dist-upgrader-amd64/current/Release"
);
const RELEASE_GPG: &[u8] = include_bytes!(
    "../../tests/fixtures/check/dists/trixie/main/dist-upgrader-amd64/current/Release.gpg"
);

fuzz_target!(init: f::init(), |data: &[u8]| {
    let path = f::scratch_file("keyring.gpg", data);
    let Ok(keyring) = Keyring::load(&[path]) else {
        return;
    };
    let result = openpgp::verify_detached(&keyring, RELEASE.to_vec(), RELEASE_GPG, "fuzz");
    f::trace(&format!("{} certs, verify: {:?}", keyring.certs().len(), result.as_ref().map(|v| v.signers().len()).map_err(|e| e.to_string())));
    if let Ok(verified) = result {
        let loaded: Vec<String> = keyring.certs().iter().map(|c| c.fingerprint().to_hex()).collect();
        for signer in verified.signers() {
            assert!(loaded.contains(&signer.fingerprint), "signed by a key not loaded");
        }
    }
});
