//! Signature policy: what counts as a good signature by a trusted key, and what does not.

use std::io::Write;
use std::time::{Duration, SystemTime};

use openpgp::cert::prelude::*;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Message, Signer};
use openpgp::types::{HashAlgorithm, ReasonForRevocation};
use ru_publish::SigningKey;
use ru_trust::Error;
use ru_trust::openpgp::{Keyring, verify_clearsigned, verify_detached};
use sequoia_openpgp as openpgp;

use crate::support::{other_key, test_key};

/// Clearsigns with a chosen hash algorithm (the publisher always uses a strong one).
pub fn clearsign_with(key: &SigningKey, data: &[u8], hash: HashAlgorithm) -> Vec<u8> {
    sign_raw(key.cert(), data, true, hash, None, None)
}

/// Signs with full control: key selection (`subkey_index`), creation time, hash.
fn sign_raw(
    cert: &Cert,
    data: &[u8],
    clear: bool,
    hash: HashAlgorithm,
    created: Option<SystemTime>,
    subkey_index: Option<usize>,
) -> Vec<u8> {
    let keypair = match subkey_index {
        None => {
            let p = StandardPolicy::new();
            let at = created.unwrap_or_else(SystemTime::now);
            cert.keys()
                .with_policy(&p, at)
                .for_signing()
                .secret()
                .next()
                .expect("a signing key")
                .key()
                .clone()
                .into_keypair()
                .unwrap()
        }
        Some(i) => cert
            .keys()
            .subkeys()
            .secret()
            .nth(i)
            .unwrap()
            .key()
            .clone()
            .into_keypair()
            .unwrap(),
    };
    let mut out = Vec::new();
    {
        let message = Message::new(&mut out);
        let mut builder = if clear {
            Signer::new(message, keypair).unwrap().cleartext()
        } else {
            let armored = Armorer::new(message)
                .kind(openpgp::armor::Kind::Signature)
                .build()
                .unwrap();
            Signer::new(armored, keypair).unwrap().detached()
        };
        builder = builder.hash_algo(hash).unwrap();
        if let Some(t) = created {
            builder = builder.creation_time(t);
        }
        let mut signer = builder.build().unwrap();
        signer.write_all(data).unwrap();
        signer.finalize().unwrap();
    }
    out
}

fn keyring_of(certs: &[&Cert]) -> Keyring {
    Keyring::from_certs(certs.iter().map(|c| (*c).clone()))
}

fn reason(err: Error) -> String {
    match err {
        Error::BadSignature { reason, .. } => reason,
        other => panic!("expected a signature failure, got {other}"),
    }
}

#[test]
fn clearsigned_yields_only_the_signed_text() {
    let key = test_key();
    let signed = key.clearsign(b"Codename: trixie\n- dashed line\n").unwrap();
    let mut hostile = b"Codename: evil\n".to_vec();
    hostile.extend_from_slice(&signed);
    hostile.extend_from_slice(b"Codename: evil-after\n");
    let verified = verify_clearsigned(&keyring_of(&[key.cert()]), &hostile, "x").unwrap();
    assert_eq!(verified.value(), b"Codename: trixie\n- dashed line\n");
    assert_eq!(verified.signers()[0].fingerprint, key.fingerprint());
}

#[test]
fn second_clearsigned_block_is_never_read() {
    let key = test_key();
    let first = key.clearsign(b"Codename: trixie\n").unwrap();
    let second = key.clearsign(b"Codename: evil\n").unwrap();
    let both = [first, second].concat();
    let verified = verify_clearsigned(&keyring_of(&[key.cert()]), &both, "x").unwrap();
    assert_eq!(verified.value(), b"Codename: trixie\n");
}

#[test]
fn one_good_signature_among_unknown_ones_is_enough() {
    let data = b"Release\n";
    // Debian's Release.gpg holds several signature packets in one armored block.
    let binary = |armored: Vec<u8>| {
        let mut reader = openpgp::armor::Reader::from_bytes(
            &armored,
            openpgp::armor::ReaderMode::Tolerant(None),
        );
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
        out
    };
    let mine = binary(test_key().detached_signature(data).unwrap());
    let theirs = binary(other_key().detached_signature(data).unwrap());
    let both = [theirs, mine].concat();
    let verified =
        verify_detached(&keyring_of(&[test_key().cert()]), data.to_vec(), &both, "x").unwrap();
    assert_eq!(verified.signers().len(), 1);
}

#[test]
fn untrusted_signer_is_refused() {
    let data = b"Release\n";
    let sig = other_key().detached_signature(data).unwrap();
    let why = reason(
        verify_detached(&keyring_of(&[test_key().cert()]), data.to_vec(), &sig, "x").unwrap_err(),
    );
    assert!(why.contains("not in the trusted keyrings"), "{why}");
}

#[test]
fn sha1_signature_is_refused() {
    let key = test_key();
    let signed = clearsign_with(key, b"Codename: trixie\n", HashAlgorithm::SHA1);
    let why = reason(verify_clearsigned(&keyring_of(&[key.cert()]), &signed, "x").unwrap_err());
    assert!(why.contains("SHA1"), "{why}");
    // The same data with SHA-256 passes: the refusal is about the hash.
    let signed = clearsign_with(key, b"Codename: trixie\n", HashAlgorithm::SHA256);
    verify_clearsigned(&keyring_of(&[key.cert()]), &signed, "x").unwrap();
}

fn cert_created(ago: Duration, validity: Option<Duration>, suite: CipherSuite) -> Cert {
    CertBuilder::new()
        .add_userid("policy test <p@invalid>")
        .set_cipher_suite(suite)
        .set_creation_time(SystemTime::now() - ago)
        .set_validity_period(validity)
        .add_signing_subkey()
        .generate()
        .unwrap()
        .0
}

#[test]
fn key_expired_since_signing_is_refused() {
    let hour = Duration::from_secs(3600);
    let cert = cert_created(3 * hour, Some(hour * 2), CipherSuite::Cv25519);
    // Signed 2.5 h ago, while the key was alive; it expired an hour ago.
    let made = SystemTime::now() - hour * 5 / 2;
    let sig = sign_raw(
        &cert,
        b"data",
        false,
        HashAlgorithm::SHA256,
        Some(made),
        None,
    );
    let why =
        reason(verify_detached(&keyring_of(&[&cert]), b"data".to_vec(), &sig, "x").unwrap_err());
    assert!(why.contains("expired"), "{why}");
    // The same key without expiry is fine.
    let cert = cert_created(3 * hour, None, CipherSuite::Cv25519);
    let sig = sign_raw(
        &cert,
        b"data",
        false,
        HashAlgorithm::SHA256,
        Some(made),
        None,
    );
    verify_detached(&keyring_of(&[&cert]), b"data".to_vec(), &sig, "x").unwrap();
}

#[test]
fn revoked_key_is_refused_even_for_older_signatures() {
    let hour = Duration::from_secs(3600);
    let cert = cert_created(3 * hour, None, CipherSuite::Cv25519);
    let made = SystemTime::now() - hour;
    let sig = sign_raw(
        &cert,
        b"data",
        false,
        HashAlgorithm::SHA256,
        Some(made),
        None,
    );
    let mut signer = cert
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap()
        .into_keypair()
        .unwrap();
    let revocation = CertRevocationBuilder::new()
        .set_reason_for_revocation(ReasonForRevocation::KeyRetired, b"retired")
        .unwrap()
        .build(&mut signer, &cert, None)
        .unwrap();
    let (revoked, _) = cert.insert_packets(revocation).unwrap();
    let why =
        reason(verify_detached(&keyring_of(&[&revoked]), b"data".to_vec(), &sig, "x").unwrap_err());
    assert!(why.contains("revoked"), "{why}");
}

#[test]
fn signature_by_a_subkey_that_may_not_sign_is_refused() {
    // An RSA encryption subkey can compute a signature; the policy must not accept it.
    let (cert, _) = CertBuilder::new()
        .add_userid("enc only <e@invalid>")
        .set_cipher_suite(CipherSuite::RSA2k)
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let sig = sign_raw(&cert, b"data", false, HashAlgorithm::SHA256, None, Some(0));
    let result = verify_detached(&keyring_of(&[&cert]), b"data".to_vec(), &sig, "x");
    assert!(
        result.is_err(),
        "a signature by an encryption-only subkey was accepted"
    );
}

#[test]
fn signature_by_an_unbound_subkey_is_refused() {
    let cert = cert_created(Duration::from_secs(60), None, CipherSuite::Cv25519);
    let sig = sign_raw(&cert, b"data", false, HashAlgorithm::SHA256, None, Some(0));
    // The keyring holds the certificate without the subkey's binding signature.
    let stripped: Vec<openpgp::Packet> = cert
        .clone()
        .into_packets()
        .filter(|p| match p {
            openpgp::Packet::Signature(s) => {
                s.typ() != openpgp::types::SignatureType::SubkeyBinding
            }
            _ => true,
        })
        .collect();
    let unbound = Cert::from_packets(stripped.into_iter()).unwrap();
    let result = verify_detached(&keyring_of(&[&unbound]), b"data".to_vec(), &sig, "x");
    assert!(
        result.is_err(),
        "a signature by an unbound subkey was accepted"
    );
}

#[test]
fn keyrings_load_from_binary_armored_files_and_directories() {
    use openpgp::serialize::SerializeInto;
    let dir = tempfile::tempdir().unwrap();
    let a = test_key();
    let b = other_key();
    std::fs::write(dir.path().join("a.gpg"), a.public_keyring()).unwrap();
    let armored = b
        .cert()
        .clone()
        .strip_secret_key_material()
        .armored()
        .to_vec()
        .unwrap();
    std::fs::write(dir.path().join("b.asc"), armored).unwrap();
    std::fs::write(
        dir.path().join("README"),
        "not a keyring, skipped by extension",
    )
    .unwrap();
    let keyring = Keyring::load(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(keyring.certs().len(), 2);
    // Secret keys given by mistake are reduced to public ones.
    std::fs::write(dir.path().join("secret.asc"), a.secret_armored()).unwrap();
    let keyring = Keyring::load(&[dir.path().join("secret.asc")]).unwrap();
    assert!(!keyring.certs()[0].is_tsk());
    // A broken file named explicitly is an error that names it.
    std::fs::write(dir.path().join("bad.gpg"), "garbage").unwrap();
    let err = Keyring::load(&[dir.path().join("bad.gpg")]).unwrap_err();
    assert!(err.to_string().contains("bad.gpg"), "{err}");
}

#[test]
fn gpgv_accepts_what_the_publisher_signs() {
    let Ok(status) = std::process::Command::new("gpgv").arg("--version").output() else {
        eprintln!("skipped: gpgv is not installed (scripts/setup installs it)");
        return;
    };
    assert!(status.status.success());
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.gpg");
    std::fs::write(&keyring, test_key().public_keyring()).unwrap();
    let data = b"Origin: Test\nCodename: trixie\n";
    std::fs::write(
        dir.path().join("InRelease"),
        test_key().clearsign(data).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("Release"), data).unwrap();
    std::fs::write(
        dir.path().join("Release.gpg"),
        test_key().detached_signature(data).unwrap(),
    )
    .unwrap();
    let gpgv = |args: &[&str]| {
        std::process::Command::new("gpgv")
            .arg("--keyring")
            .arg(&keyring)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = gpgv(&["InRelease"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = gpgv(&["Release.gpg", "Release"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        dir.path().join("Release"),
        b"Origin: Evil\nCodename: trixie\n",
    )
    .unwrap();
    assert!(!gpgv(&["Release.gpg", "Release"]).status.success());
}

#[test]
fn a_file_that_cannot_be_read_is_named_once_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir/InRelease");
    let keyring = dir.path().join("keyring.gpg");
    std::fs::write(&keyring, test_key().public_keyring()).unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .arg("--keyring")
        .arg(&keyring)
        .arg("verify")
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let shown = missing.display().to_string();
    assert_eq!(stderr.matches(&shown).count(), 1, "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");
}

/// What `key generate` makes signs with its primary key and has no subkey: stock
/// system-image clients accept only signatures whose issuer fingerprint is a primary key
/// of their keyring. gpgv still verifies what it signs.
#[test]
fn a_generated_key_signs_with_its_primary_key() {
    use openpgp::parse::Parse;
    let key = SigningKey::generate("primary-signer <p@example.invalid>", None).unwrap();
    assert_eq!(key.cert().keys().subkeys().count(), 0);
    let sig = key.detached_signature(b"data").unwrap();
    let packet = openpgp::Packet::from_bytes(&sig).unwrap();
    let openpgp::Packet::Signature(sig_packet) = packet else {
        panic!("not a signature: {packet:?}");
    };
    let issuers = sig_packet.get_issuers();
    assert!(!issuers.is_empty());
    for issuer in issuers {
        assert!(
            issuer.aliases(openpgp::KeyHandle::from(key.cert().fingerprint())),
            "{issuer:?} is not the primary key {}",
            key.fingerprint()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keyring.gpg"), key.public_keyring()).unwrap();
    std::fs::write(dir.path().join("data"), b"data").unwrap();
    std::fs::write(dir.path().join("data.sig"), &sig).unwrap();
    let gpgv = std::process::Command::new("gpgv")
        .arg("--keyring")
        .arg(dir.path().join("keyring.gpg"))
        .arg(dir.path().join("data.sig"))
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        gpgv.status.success(),
        "{}",
        String::from_utf8_lossy(&gpgv.stderr)
    );
}
