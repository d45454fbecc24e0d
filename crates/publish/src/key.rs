//! OpenPGP signing keys for pockets and meta-releases.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Message, Signer};
use openpgp::serialize::{Serialize, SerializeInto};
use sequoia_openpgp as openpgp;

use crate::error::Error;
use crate::fsutil;

/// A certificate with secret signing key material.
#[derive(Clone)]
pub struct SigningKey {
    cert: Cert,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.cert.fingerprint())
    }
}

impl SigningKey {
    /// Generates an Ed25519 key whose primary key both certifies and signs, with no
    /// subkey: stock system-image clients accept only signatures whose issuer is a
    /// primary key of their keyring (a signing subkey's are refused), and apt, gpgv and
    /// this client take either. `valid_for` of `None` means the key does not expire.
    pub fn generate(user_id: &str, valid_for: Option<Duration>) -> Result<Self, Error> {
        let (cert, _revocation) = CertBuilder::new()
            .add_userid(user_id)
            .set_primary_key_flags(
                openpgp::types::KeyFlags::empty()
                    .set_certification()
                    .set_signing(),
            )
            .set_validity_period(valid_for)
            .generate()
            .map_err(|e| Error::Config {
                path: "(key generation)".into(),
                reason: e.to_string(),
            })?;
        Ok(SigningKey { cert })
    }

    /// Wraps an existing certificate; it must hold a usable secret signing key.
    pub fn from_cert(cert: Cert) -> Result<Self, String> {
        let key = SigningKey { cert };
        key.signing_keypair()?;
        Ok(key)
    }

    /// Loads a secret key (armored or binary) from `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::Keyring {
            path: path.to_owned(),
            reason,
        };
        let bytes = fs_err::read(path).map_err(|e| Error::io(path, e))?;
        let cert = Cert::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        SigningKey::from_cert(cert).map_err(bad)
    }

    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// Fingerprint of the certificate, upper-case hex.
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// The public certificate as a binary keyring (what `--keyring` and apt's
    /// `signed-by` take).
    pub fn public_keyring(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.cert
            .clone()
            .strip_secret_key_material()
            .serialize(&mut out)
            .expect("serialising to memory cannot fail");
        out
    }

    /// The secret key, ASCII-armored.
    pub fn secret_armored(&self) -> Vec<u8> {
        self.cert
            .as_tsk()
            .armored()
            .to_vec()
            .expect("serialising to memory cannot fail")
    }

    /// Writes `DIR/secret.asc` (mode 0600) and `DIR/keyring.gpg`; refuses to when
    /// `DIR/secret.asc` exists (see [`SigningKey::replace_in`]).
    pub fn write_to(&self, dir: &Path) -> Result<(), Error> {
        self.write_secret(dir, false)?;
        fsutil::write_atomic(&dir.join("keyring.gpg"), &self.public_keyring()).map_err(Error::from)
    }

    /// Like [`SigningKey::write_to`], replacing a key already in `DIR`: the old secret
    /// stays in place until the new one replaces it in one rename.
    pub fn replace_in(&self, dir: &Path) -> Result<(), Error> {
        self.write_secret(dir, true)?;
        fsutil::write_atomic(&dir.join("keyring.gpg"), &self.public_keyring()).map_err(Error::from)
    }

    /// Writes the secret to a temporary file that is created `0600` (never, not even
    /// empty, readable by anyone else: a descriptor opened on a wider file would read
    /// the key once written), synced, then put in place: renamed over `DIR/secret.asc`
    /// when `replace`, else linked to that name, which fails if anything (a key, a
    /// symlink) is there, checked and done in one step.
    fn write_secret(&self, dir: &Path, replace: bool) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let secret = dir.join("secret.asc");
        let mut file = fsutil::AtomicFile::create_with_mode(&secret, 0o600)?;
        // The umask may have taken bits away; it cannot have added any.
        file.file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(&secret, e))?;
        file.write_all(&self.secret_armored())
            .map_err(|e| Error::io(&secret, e))?;
        let written = if replace {
            file.commit()
        } else {
            file.commit_new()
        };
        match written {
            Ok(_) => Ok(()),
            Err(ru_format::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists && !replace =>
            {
                Err(Error::Config {
                    path: secret,
                    reason: "a key is already there; it is not replaced unless asked to \
                             (--force)"
                        .into(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn signing_keypair(&self) -> Result<openpgp::crypto::KeyPair, String> {
        let policy = StandardPolicy::new();
        let key = self
            .cert
            .keys()
            .with_policy(&policy, SystemTime::now())
            .supported()
            .alive()
            .revoked(false)
            .for_signing()
            .secret()
            .next()
            .ok_or_else(|| {
                format!(
                    "key {} has no valid secret signing key",
                    self.cert.fingerprint()
                )
            })?;
        key.key()
            .clone()
            .into_keypair()
            .map_err(|e| format!("key {}: {e}", self.cert.fingerprint()))
    }

    /// A clearsigned copy of `text` (as `InRelease` and signed meta-releases are).
    pub fn clearsign(&self, text: &[u8]) -> Result<Vec<u8>, Error> {
        self.sign(text, true)
    }

    /// An armored detached signature over `data` (as `Release.gpg` is).
    pub fn detached_signature(&self, data: &[u8]) -> Result<Vec<u8>, Error> {
        self.sign(data, false)
    }

    fn sign(&self, data: &[u8], clear: bool) -> Result<Vec<u8>, Error> {
        let fail = |reason: String| Error::Config {
            path: "(signing)".into(),
            reason,
        };
        let keypair = self.signing_keypair().map_err(fail)?;
        let mut out = Vec::new();
        let run = || -> openpgp::Result<()> {
            let message = Message::new(&mut out);
            let mut signer = if clear {
                Signer::new(message, keypair)?.cleartext().build()?
            } else {
                let armored = Armorer::new(message)
                    .kind(openpgp::armor::Kind::Signature)
                    .build()?;
                Signer::new(armored, keypair)?.detached().build()?
            };
            signer.write_all(data)?;
            signer.finalize()?;
            Ok(())
        };
        run().map_err(|e| fail(e.to_string()))?;
        Ok(out)
    }
}
