//! system-image's keyring chain: archive-master (pre-installed) → image-master →
//! image-signing (→ device-signing per channel and device), with the blacklist's keys
//! taken out of every keyring below the archive master.
//!
//! A keyring is `keyring.tar.xz` holding `keyring.gpg` and `keyring.json`
//! (`type`, optional `expiry` in seconds since the epoch, optional `model`) plus a
//! detached `keyring.tar.xz.asc`. A [`VerifiedKeyring`] is built only after the
//! signature on the tarball was checked with the keyring above it, and its
//! `keyring.json` agreed with the role, the clock and the device.

use std::io::Read;

use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use sequoia_openpgp as openpgp;
use serde::Deserialize;

use ru_format::compress::{Compression, Limits};
use ru_format::tarfile::{self, Kind};

use crate::error::Error;
use crate::openpgp::{Keyring, verify_detached};

/// The most a keyring tarball may unpack to.
const KEYRING_CAP: u64 = 4 * 1024 * 1024;

/// The place of a keyring in the chain; `keyring.json`'s `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ArchiveMaster,
    ImageMaster,
    ImageSigning,
    DeviceSigning,
    Blacklist,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::ArchiveMaster => "archive-master",
            Role::ImageMaster => "image-master",
            Role::ImageSigning => "image-signing",
            Role::DeviceSigning => "device-signing",
            Role::Blacklist => "blacklist",
        }
    }
}

#[derive(Debug, Deserialize)]
struct KeyringJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    expiry: Option<f64>,
    #[serde(default)]
    model: Option<String>,
}

/// A keyring whose tarball carried a good signature from the keyring above it (or,
/// for the archive master, was installed on the system), and whose metadata fits.
#[derive(Clone, Debug)]
pub struct VerifiedKeyring {
    role: Role,
    keyring: Keyring,
    expiry: Option<i64>,
    model: Option<String>,
}

/// What a keyring is checked against besides its signature.
#[derive(Clone, Debug)]
pub struct Checks<'a> {
    /// Seconds since the epoch.
    pub now: i64,
    /// The device name, for `model`.
    pub device: Option<&'a str>,
}

impl VerifiedKeyring {
    /// The pre-installed archive master: the trust anchor, trusted because it is part
    /// of the (read-only) system image, as system-image trusts it. Its `.asc` is a
    /// self-signature and proves nothing more, so it is not consulted (the real
    /// UBports one binds its signing subkey in a way sequoia's policy refuses, though
    /// gpgv accepts it). Its `keyring.json` is still checked: type, expiry, model.
    pub fn anchor(tarball: &[u8], checks: &Checks<'_>, what: &str) -> Result<Self, Error> {
        unpack(tarball, what)?.check(Role::ArchiveMaster, checks, what)
    }

    /// Verifies `tarball` with `signer` (minus `blacklist`), then checks its metadata.
    pub fn verify(
        role: Role,
        tarball: &[u8],
        signature: &[u8],
        signer: &VerifiedKeyring,
        blacklist: Option<&VerifiedKeyring>,
        checks: &Checks<'_>,
        what: &str,
    ) -> Result<Self, Error> {
        let trusted = match blacklist {
            Some(b) => signer.without(b),
            None => signer.keyring.clone(),
        };
        verify_detached(&trusted, tarball.to_vec(), signature, what)?;
        let unpacked = unpack(tarball, what)?;
        let mut keyring = unpacked.check(role, checks, what)?;
        if let Some(b) = blacklist {
            keyring.keyring = keyring.without(b);
        }
        if keyring.keyring.is_empty() && role != Role::Blacklist {
            return Err(Error::BadSignature {
                what: what.to_owned(),
                reason: "every key in it is blacklisted".into(),
            });
        }
        Ok(keyring)
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn expiry(&self) -> Option<i64> {
        self.expiry
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Primary key fingerprints.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keyring
            .certs()
            .iter()
            .map(|c| c.fingerprint().to_hex())
            .collect()
    }

    /// This keyring without the keys of `blacklist` (primary keys or subkeys).
    fn without(&self, blacklist: &VerifiedKeyring) -> Keyring {
        let banned: Vec<openpgp::Fingerprint> = blacklist
            .keyring
            .certs()
            .iter()
            .flat_map(|c| c.keys().map(|k| k.key().fingerprint()).collect::<Vec<_>>())
            .collect();
        Keyring::from_certs(
            self.keyring
                .certs()
                .iter()
                .filter(|c| !c.keys().any(|k| banned.contains(&k.key().fingerprint())))
                .cloned(),
        )
    }

    /// Joins two keyrings (index and files may be signed by image-signing or
    /// device-signing).
    pub fn union(&self, other: &VerifiedKeyring) -> Keyring {
        Keyring::from_certs(
            self.keyring
                .certs()
                .iter()
                .chain(other.keyring.certs())
                .cloned(),
        )
    }
}

struct Unpacked {
    certs: Vec<Cert>,
    json: KeyringJson,
}

impl Unpacked {
    fn check(self, role: Role, checks: &Checks<'_>, what: &str) -> Result<VerifiedKeyring, Error> {
        let bad = |reason: String| Error::Malformed {
            what: what.to_owned(),
            reason,
        };
        if self.json.kind != role.name() {
            return Err(bad(format!(
                "keyring.json says type {:?}, expected {:?}",
                self.json.kind,
                role.name()
            )));
        }
        let expiry = self.json.expiry.map(|e| e as i64);
        if let Some(expiry) = expiry
            && expiry <= checks.now
        {
            return Err(Error::Expired {
                what: what.to_owned(),
                valid_until: crate::date::format(expiry),
            });
        }
        if let (Some(model), Some(device)) = (&self.json.model, checks.device)
            && model != device
        {
            return Err(bad(format!(
                "the keyring is for model {model:?}, this device is {device:?}"
            )));
        }
        if self.certs.is_empty() && role != Role::Blacklist {
            return Err(bad("keyring.gpg holds no keys".into()));
        }
        Ok(VerifiedKeyring {
            role,
            keyring: Keyring::from_certs(self.certs),
            expiry,
            model: self.json.model,
        })
    }
}

/// Reads `keyring.gpg` and `keyring.json` out of a keyring tarball. Only those two
/// regular files (optionally under `./`) are accepted.
fn unpack(tarball: &[u8], what: &str) -> Result<Unpacked, Error> {
    let bad = |reason: String| Error::Malformed {
        what: what.to_owned(),
        reason,
    };
    let limits = Limits {
        max_output: Some(KEYRING_CAP),
        ..Limits::IMAGE
    };
    let decoder = Compression::Xz
        .decoder(tarball, limits)
        .map_err(|e| bad(e.to_string()))?;
    let mut archive = tarfile::Reader::new(std::io::BufReader::new(decoder));
    let mut gpg = None;
    let mut json = None;
    while let Some(entry) = archive.next_entry().map_err(|e| bad(e.to_string()))? {
        let path = entry.path;
        let name = path.strip_prefix("./").unwrap_or(&path).to_owned();
        let kind = entry.kind;
        if kind == Kind::Directory && (name.is_empty() || name == "." || name == "./") {
            continue;
        }
        if kind != Kind::File {
            return Err(bad(format!("unexpected member {path:?} ({kind:?})")));
        }
        let mut data = Vec::new();
        archive
            .read_to_end(&mut data)
            .map_err(|e| bad(e.to_string()))?;
        match name.as_str() {
            "keyring.gpg" => gpg = Some(data),
            "keyring.json" => json = Some(data),
            _ => return Err(bad(format!("unexpected member {path:?}"))),
        }
    }
    archive.drain().map_err(|e| bad(e.to_string()))?;
    let gpg = gpg.ok_or_else(|| bad("no keyring.gpg in it".into()))?;
    let json = json.ok_or_else(|| bad("no keyring.json in it".into()))?;
    let json: KeyringJson =
        serde_json::from_slice(&json).map_err(|e| bad(format!("keyring.json: {e}")))?;
    let mut certs = Vec::new();
    if !gpg.is_empty() {
        for cert in CertParser::from_bytes(&gpg).map_err(|e| bad(e.to_string()))? {
            certs.push(cert.map_err(|e| bad(format!("keyring.gpg: {e}")))?);
        }
    }
    Ok(Unpacked { certs, json })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_archive_master_loads() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("tests/conformance/system-image/keyrings");
        let tarball = std::fs::read(dir.join("ubports-archive-master.tar.xz")).unwrap();
        let asc = std::fs::read(dir.join("ubports-archive-master.tar.xz.asc")).unwrap();
        let checks = Checks {
            now: crate::date::now(),
            device: Some("mako"),
        };
        let unpacked = unpack(&tarball, "archive-master").unwrap();
        assert_eq!(unpacked.json.kind, "archive-master");
        assert_eq!(unpacked.json.expiry, None);
        assert_eq!(unpacked.certs.len(), 1);
        let k = VerifiedKeyring::anchor(&tarball, &checks, "archive-master").unwrap();
        assert_eq!(k.role(), Role::ArchiveMaster);
        assert_eq!(k.fingerprints().len(), 1);
        // Not an image-master.
        let err = unpack(&tarball, "x")
            .unwrap()
            .check(Role::ImageMaster, &checks, "x")
            .unwrap_err();
        assert!(err.to_string().contains("archive-master"), "{err}");
        // Its self-signature names the key in it (gpgv agrees; see `anchor`).
        assert!(!asc.is_empty());
        // No expiry in it: fine at any time.
        let later = Checks {
            now: i64::MAX,
            device: None,
        };
        assert!(VerifiedKeyring::anchor(&tarball, &later, "x").is_ok());
        let truncated = &tarball[..tarball.len() / 2];
        assert!(VerifiedKeyring::anchor(truncated, &checks, "x").is_err());
    }
}
