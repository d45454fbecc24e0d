//! OpenPGP verification: the only way to obtain a [`Verified`] value.
//!
//! Everything the tool trusts (meta-release, pocket `Release`, and through their digests
//! every index and `.deb`) is reached from a signature checked here against the configured
//! keyrings under sequoia's standard policy: no SHA-1, no expired or revoked keys, only
//! bound, signing-capable (sub)keys. A file passes when at least one signature on it is
//! good *and* its key is still valid now. Callers get only the signed bytes; text around a
//! clearsigned block is never returned, so it can never be re-read by mistake.

use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationError, VerificationHelper,
    VerifierBuilder,
};
use openpgp::policy::StandardPolicy;
use openpgp::types::RevocationStatus;
use openpgp::{Cert, KeyHandle};
use sequoia_openpgp as openpgp;

use crate::Error;
use crate::digest::Sha256;

/// The first line of a clearsigned document.
const CLEARSIGN_HEADER: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";

/// Trusted certificates, loaded from keyring files and directories.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    certs: Vec<Cert>,
    sources: Vec<PathBuf>,
}

impl Keyring {
    /// Loads every certificate from `paths`: keyring files (binary or armored, any name)
    /// and directories of them (`*.gpg`, `*.asc`, `*.pgp`, as apt's `trusted.gpg.d`).
    /// A path that does not exist is skipped; one that cannot be parsed is an error.
    pub fn load(paths: &[PathBuf]) -> Result<Self, Error> {
        let mut keyring = Keyring::default();
        for path in paths {
            let meta = match std::fs::metadata(path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(path, e)),
            };
            if meta.is_dir() {
                let mut files: Vec<PathBuf> = fs_err::read_dir(path)
                    .map_err(|e| Error::io(path, e))?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|p| is_keyring_name(p))
                    .collect();
                files.sort();
                for file in files {
                    keyring.add_file(&file)?;
                }
            } else {
                keyring.add_file(path)?;
            }
        }
        Ok(keyring)
    }

    /// A keyring of the given certificates (secret parts are dropped).
    pub fn from_certs(certs: impl IntoIterator<Item = Cert>) -> Self {
        Keyring {
            certs: certs
                .into_iter()
                .map(Cert::strip_secret_key_material)
                .collect(),
            sources: Vec::new(),
        }
    }

    /// A keyring of the certificates in `bytes` (binary or armored), read from `path` by
    /// the caller (a file reached through a confined directory handle, say): `path`
    /// names it in messages and in [`Self::sources`]. No certificate in it is an error.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, Error> {
        let mut keyring = Keyring::default();
        keyring.add_bytes(path, bytes)?;
        if keyring.certs.is_empty() {
            return Err(Error::Keyring {
                path: path.to_owned(),
                reason: "no OpenPGP certificates in it".into(),
            });
        }
        Ok(keyring)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), Error> {
        let bytes = fs_err::read(path).map_err(|e| Error::io(path, e))?;
        self.add_bytes(path, &bytes)
    }

    fn add_bytes(&mut self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        if bytes.is_empty() {
            self.sources.push(path.to_owned());
            return Ok(());
        }
        let bad = |reason: String| Error::Keyring {
            path: path.to_owned(),
            reason,
        };
        let parser = CertParser::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
        let before = self.certs.len();
        for cert in parser {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            self.certs.push(cert.strip_secret_key_material());
        }
        if self.certs.len() == before {
            return Err(bad("no OpenPGP certificates in it".into()));
        }
        self.sources.push(path.to_owned());
        Ok(())
    }

    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The files the certificates came from.
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }
}

fn is_keyring_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && [".gpg", ".asc", ".pgp"]
            .iter()
            .any(|ext| name.ends_with(ext))
        && path.is_file()
}

/// The keyrings trusted when none is given on the command line: the tool's own
/// `trusted.gpg.d/` under `config_dir` and the distributions' archive keyrings in
/// `share_keyrings` (`/usr/share/keyrings` of the system's root).
pub fn default_keyring_paths(config_dir: &Path, share_keyrings: &Path) -> Vec<PathBuf> {
    let mut paths = vec![config_dir.join("trusted.gpg.d")];
    if let Ok(entries) = std::fs::read_dir(share_keyrings) {
        let mut archive: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with("-archive-keyring.gpg"))
            })
            .collect();
        archive.sort();
        paths.extend(archive);
    }
    paths
}

/// Who made a good signature.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    /// Fingerprint of the certificate (primary key), upper-case hex.
    pub fingerprint: String,
    /// Fingerprint of the (sub)key that signed.
    pub key_fingerprint: String,
    /// The certificate's primary user ID, if it has a valid one.
    pub user_id: Option<String>,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.user_id {
            Some(uid) => write!(f, "{} ({uid})", self.fingerprint),
            None => write!(f, "{}", self.fingerprint),
        }
    }
}

/// A value whose bytes carried at least one good signature by a trusted key, or that
/// was derived from such a value through a digest it vouches for. Only this crate can
/// build one, and only by checking.
#[derive(Clone, Debug)]
pub struct Verified<T> {
    value: T,
    signers: Arc<[Signer]>,
}

impl<T> Verified<T> {
    pub fn value(&self) -> &T {
        &self.value
    }

    pub fn into_value(self) -> T {
        self.value
    }

    /// The keys whose good signatures vouch for this value.
    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }

    /// Parses or transforms the verified value; the result is as trusted as the input.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Verified<U>, E> {
        Ok(Verified {
            value: f(self.value)?,
            signers: self.signers,
        })
    }

    /// Vouches for `data` because it has the size and SHA256 that this verified value
    /// lists for it (a Release file's index entry, say): both are checked here, so the
    /// result is as trusted as this value and nothing else can make one.
    pub fn vouch_for_checked(
        &self,
        what: &str,
        data: Vec<u8>,
        size: u64,
        sha256: &Sha256,
    ) -> Result<Verified<Vec<u8>>, Error> {
        if data.len() as u64 != size {
            return Err(Error::SizeMismatch {
                what: what.to_owned(),
                expected: size,
                actual: data.len() as u64,
            });
        }
        let actual = Sha256::of(&data);
        if actual != *sha256 {
            return Err(Error::HashMismatch {
                what: what.to_owned(),
                expected: sha256.to_hex(),
                actual: actual.to_hex(),
            });
        }
        Ok(self.vouch_for(data))
    }

    /// Marks `value` as verified because this verified value carries a digest that
    /// `value` was checked against. Call only after that check.
    fn vouch_for<U>(&self, value: U) -> Verified<U> {
        Verified {
            value,
            signers: self.signers.clone(),
        }
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// Whether `input` is (or contains) a clearsigned block.
pub fn is_clearsigned(input: &[u8]) -> bool {
    input
        .split(|&b| b == b'\n')
        .any(|line| line.strip_suffix(b"\r").unwrap_or(line) == CLEARSIGN_HEADER)
}

/// Verifies a clearsigned (or inline-signed) document and returns only the signed text.
pub fn verify_clearsigned(
    keyring: &Keyring,
    input: &[u8],
    what: &str,
) -> Result<Verified<Vec<u8>>, Error> {
    let (policy, now, fail) = (
        StandardPolicy::new(),
        SystemTime::now(),
        bad_signature(what),
    );
    let helper = Helper::checking(keyring, &policy, now, what)?;
    let mut verifier = VerifierBuilder::from_bytes(input)
        .and_then(|b| b.with_policy(&policy, now, helper))
        .map_err(|e| fail(format!("not a signed OpenPGP document ({e})")))?;
    let mut content = Vec::new();
    let read = verifier.read_to_end(&mut content);
    let helper = verifier.into_helper();
    if let Err(e) = read {
        return Err(fail(helper.explain(Some(e.to_string()))));
    }
    helper.into_verified(content).map_err(fail)
}

/// Verifies `data` against a detached signature (binary or armored).
pub fn verify_detached(
    keyring: &Keyring,
    data: Vec<u8>,
    signature: &[u8],
    what: &str,
) -> Result<Verified<Vec<u8>>, Error> {
    let verified = check_detached(keyring, signature, what, |verifier| {
        verifier.verify_bytes(&data)
    })?;
    Ok(verified.vouch_for(data))
}

/// Verifies the file at `path` against a detached signature, streaming it (images are
/// too large to hold in memory). The result names the file; its bytes were the ones
/// signed at the time of the check, so the caller must keep the file from changing.
pub fn verify_detached_file(
    keyring: &Keyring,
    path: &Path,
    signature: &[u8],
    what: &str,
) -> Result<Verified<PathBuf>, Error> {
    let file = fs_err::File::open(path).map_err(|e| Error::io(path, e))?;
    let verified = check_detached(keyring, signature, what, |verifier| {
        verifier.verify_reader(std::io::BufReader::new(file))
    })?;
    Ok(verified.vouch_for(path.to_owned()))
}

/// The detached-signature check both callers share: `verify` feeds the signed bytes to
/// the verifier; the result vouches for nothing yet (the caller names what was signed).
fn check_detached(
    keyring: &Keyring,
    signature: &[u8],
    what: &str,
    verify: impl FnOnce(
        &mut openpgp::parse::stream::DetachedVerifier<'_, Helper<'_>>,
    ) -> openpgp::Result<()>,
) -> Result<Verified<Vec<u8>>, Error> {
    let (policy, now, fail) = (
        StandardPolicy::new(),
        SystemTime::now(),
        bad_signature(what),
    );
    let helper = Helper::checking(keyring, &policy, now, what)?;
    let mut verifier = DetachedVerifierBuilder::from_bytes(signature)
        .and_then(|b| b.with_policy(&policy, now, helper))
        .map_err(|e| fail(format!("not an OpenPGP signature ({e})")))?;
    let result = verify(&mut verifier);
    let helper = verifier.into_helper();
    if let Err(e) = result {
        return Err(fail(helper.explain(Some(e.to_string()))));
    }
    helper.into_verified(Vec::new()).map_err(fail)
}

/// Collects good signers and the reasons the other signatures failed.
struct Helper<'a> {
    keyring: &'a Keyring,
    policy: &'a StandardPolicy<'a>,
    now: SystemTime,
    good: Vec<Signer>,
    problems: Vec<String>,
}

/// The error of a signature check on `what`, for a reason.
fn bad_signature(what: &str) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::BadSignature {
        what: what.to_owned(),
        reason,
    }
}

impl<'a> Helper<'a> {
    /// A helper for checking signatures on `what` with `keyring`, which must hold a key.
    fn checking(
        keyring: &'a Keyring,
        policy: &'a StandardPolicy<'a>,
        now: SystemTime,
        what: &str,
    ) -> Result<Self, Error> {
        if keyring.is_empty() {
            return Err(bad_signature(what)("the trusted keyring is empty".into()));
        }
        Ok(Helper::new(keyring, policy, now))
    }

    fn new(keyring: &'a Keyring, policy: &'a StandardPolicy<'a>, now: SystemTime) -> Self {
        Helper {
            keyring,
            policy,
            now,
            good: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn explain(&self, fallback: Option<String>) -> String {
        let mut reasons = self.problems.clone();
        if reasons.is_empty() {
            reasons.extend(fallback);
        }
        if reasons.is_empty() {
            reasons.push("no signature found".into());
        }
        reasons.join("; ")
    }

    fn into_verified(self, value: Vec<u8>) -> Result<Verified<Vec<u8>>, String> {
        if self.good.is_empty() {
            return Err(self.explain(None));
        }
        Ok(Verified {
            value,
            signers: self.good.into(),
        })
    }

    /// The signature was good when it was made; the key must also be valid now.
    fn check_still_valid(
        &self,
        cert: &Cert,
        signing_key: &openpgp::Fingerprint,
    ) -> Result<Signer, String> {
        let fpr = cert.fingerprint().to_hex();
        let valid = cert
            .with_policy(self.policy, self.now)
            .map_err(|e| format!("key {fpr} is not valid now: {e}"))?;
        valid
            .alive()
            .map_err(|e| format!("key {fpr} has expired: {e}"))?;
        if let RevocationStatus::Revoked(_) = valid.revocation_status() {
            return Err(format!("key {fpr} has been revoked"));
        }
        let usable = valid
            .keys()
            .for_signing()
            .alive()
            .revoked(false)
            .any(|k| k.key().fingerprint() == *signing_key);
        if !usable {
            return Err(format!(
                "signing key {} of {fpr} is expired, revoked or not signing-capable now",
                signing_key.to_hex()
            ));
        }
        let user_id = valid
            .primary_userid()
            .ok()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned());
        Ok(Signer {
            fingerprint: fpr,
            key_fingerprint: signing_key.to_hex(),
            user_id,
        })
    }
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self
            .keyring
            .certs
            .iter()
            .filter(|cert| {
                cert.keys()
                    .any(|k| ids.iter().any(|id| id.aliases(k.key().key_handle())))
            })
            .cloned()
            .collect())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure.into_iter() {
            match layer {
                MessageLayer::SignatureGroup { results } => {
                    for result in results {
                        match result {
                            Ok(good) => {
                                let key = good.ka.key().fingerprint();
                                match self.check_still_valid(good.ka.cert(), &key) {
                                    Ok(signer) => self.good.push(signer),
                                    Err(problem) => self.problems.push(problem),
                                }
                            }
                            Err(err) => self.problems.push(describe(&err)),
                        }
                    }
                }
                MessageLayer::Compression { .. } => self
                    .problems
                    .push("compressed messages are not accepted".into()),
                MessageLayer::Encryption { .. } => self
                    .problems
                    .push("encrypted messages are not accepted".into()),
            }
        }
        // The verdict is taken from `good` by the caller; failing here would only hide
        // the reasons behind a generic I/O error.
        Ok(())
    }
}

fn describe(err: &VerificationError<'_>) -> String {
    match err {
        VerificationError::MissingKey { sig } => match sig.get_issuers().first() {
            Some(issuer) => format!("signed by key {issuer}, which is not in the trusted keyrings"),
            None => "signature names no issuer".into(),
        },
        VerificationError::BadSignature { sig, error, .. } => {
            format!("bad signature (hash {}): {error}", sig.hash_algo())
        }
        VerificationError::BadKey { ka, error, .. } => {
            format!(
                "key {} cannot be used: {error}",
                ka.key().fingerprint().to_hex()
            )
        }
        VerificationError::UnboundKey { cert, error, .. } => format!(
            "signing subkey of {} is not bound to it: {error}",
            cert.fingerprint().to_hex()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearsign_header_is_found_only_on_its_own_line() {
        assert!(is_clearsigned(
            b"junk\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: x\n"
        ));
        assert!(!is_clearsigned(
            b"Dist: x -----BEGIN PGP SIGNED MESSAGE-----\n"
        ));
    }

    #[test]
    fn a_keyring_from_bytes_holds_their_certificates_and_refuses_none() {
        use openpgp::serialize::Serialize as _;
        let (cert, _) = CertBuilder::general_purpose(Some("t <t@example.org>"))
            .generate()
            .unwrap();
        let mut bytes = Vec::new();
        cert.serialize(&mut bytes).unwrap();
        let path = Path::new("/usr/share/keyrings/x-archive-keyring.gpg");
        let keyring = Keyring::from_bytes(path, &bytes).unwrap();
        assert_eq!(keyring.certs().len(), 1);
        assert_eq!(keyring.sources(), [path]);
        for nothing in [&b""[..], b"not a key"] {
            let err = Keyring::from_bytes(path, nothing).unwrap_err();
            assert!(
                matches!(&err, Error::Keyring { path: p, .. } if p == path),
                "{err:?}"
            );
        }
    }

    #[test]
    fn empty_keyring_refuses_everything() {
        let err = verify_detached(&Keyring::default(), b"x".to_vec(), b"", "file").unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }));
    }
}
