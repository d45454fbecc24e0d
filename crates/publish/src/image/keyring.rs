//! system-image keyrings: `keyring.tar.xz` holding `keyring.json` (`type`, optional
//! `expiry` in unix seconds, optional `model`) and `keyring.gpg` (binary public keys),
//! with a detached armored `.asc` made by the key above it in the chain
//! (archive-master signs itself and image-master; image-master signs image-signing and
//! the blacklist, as the real server, client and recovery have it; image-signing signs
//! device-signing).

use std::io::Write;
use std::path::{Path, PathBuf};

use openpgp::cert::CertParser;
use openpgp::parse::Parse;
use openpgp::serialize::Serialize as _;
use sequoia_openpgp as openpgp;
use serde::Serialize;

use super::build::generated_mtime;
use super::output::{AtomicFile, Compression};
use crate::SigningKey;
use crate::error::Error;
use crate::fsutil;
use ru_format::tarfile::{Entry, Kind, Writer};

/// The keyring types of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyringType {
    ArchiveMaster,
    ImageMaster,
    ImageSigning,
    DeviceSigning,
    Blacklist,
}

impl KeyringType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyringType::ArchiveMaster => "archive-master",
            KeyringType::ImageMaster => "image-master",
            KeyringType::ImageSigning => "image-signing",
            KeyringType::DeviceSigning => "device-signing",
            KeyringType::Blacklist => "blacklist",
        }
    }
}

/// `keyring.json`, keys in sorted order as system-image writes them.
#[derive(Clone, Debug, Serialize)]
pub struct KeyringJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
}

/// JSON as system-image writes it: four-space indent, a final newline.
pub fn to_json_text<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut ser)
        .expect("serialising to memory cannot fail");
    out.push(b'\n');
    out
}

/// Public keys (binary) of every certificate in `files` (secret or public, armored or
/// binary); secret key material is never copied.
pub fn public_keys(files: &[PathBuf]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    for path in files {
        let bytes = fs_err::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |reason: String| Error::Keyring {
            path: path.clone(),
            reason,
        };
        let parser = CertParser::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut found = 0;
        for cert in parser {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            cert.strip_secret_key_material()
                .serialize(&mut out)
                .map_err(|e| bad(e.to_string()))?;
            found += 1;
        }
        if found == 0 {
            return Err(bad("no OpenPGP certificate in it".into()));
        }
    }
    Ok(out)
}

/// Parses `--expiry`: unix seconds, or a date `YYYY-MM-DD` (midnight UTC).
pub fn parse_expiry(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| {
            d.and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp()
        })
        .map_err(|_| format!("{text:?} is neither unix seconds nor YYYY-MM-DD"))
}

/// Writes `out` (the keyring tarball) and `out.asc` (signed by `signer`).
pub fn write_keyring(
    kind: KeyringType,
    keys: &[u8],
    expiry: Option<i64>,
    model: Option<&str>,
    signer: &SigningKey,
    out: &Path,
) -> Result<(), Error> {
    let json = to_json_text(&KeyringJson {
        expiry,
        model: model.map(str::to_owned),
        kind: kind.as_str().to_owned(),
    });
    let mtime = generated_mtime()?;
    let io = |e: std::io::Error| Error::io(out, e);
    let file = AtomicFile::create(out)?;
    let mut writer = Writer::new(Compression::Xz(9).writer(file).map_err(io)?);
    for (name, data) in [("keyring.json", &json[..]), ("keyring.gpg", keys)] {
        let mut entry = Entry::new(name.into(), Kind::File);
        entry.size = data.len() as u64;
        entry.mtime = mtime;
        writer.append_root_owned(&entry).map_err(io)?;
        writer.write_data(data).map_err(io)?;
    }
    let mut encoder = writer.finish().map_err(io)?;
    encoder.flush().map_err(io)?;
    encoder.finish().map_err(io)?.commit()?;
    sign_file(signer, out)
}

/// Writes `path.asc`, an armored detached signature over the file.
pub fn sign_file(signer: &SigningKey, path: &Path) -> Result<(), Error> {
    let data = fs_err::read(path).map_err(|e| Error::io(path, e))?;
    let signature = signer.detached_signature(&data)?;
    fsutil::write_atomic(&asc_path(path), &signature).map_err(Error::from)
}

/// `path` with `.asc` appended.
pub fn asc_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".asc");
    PathBuf::from(name)
}
