//! system-image's JSON documents: `channels.json` and `<channel>/<device>/index.json`.
//!
//! Parsed leniently where system-image is lenient (unknown keys, missing optional
//! fields) and strictly where a wrong value would change what is installed (versions,
//! sizes, checksums, paths). Types other than `full`, `delta` and our `zdelta` are kept
//! so they can be reported, and never chosen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// `channels.json`: channel name → channel.
pub type Channels = BTreeMap<String, Channel>;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Channel {
    #[serde(default)]
    pub devices: BTreeMap<String, Device>,
    /// Informational: the channel this one tracks (e.g. `daily` → `saucy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Devices on this channel are to follow another channel instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// Not listed to users, but usable when configured.
    #[serde(default)]
    pub hidden: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Device {
    pub index: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<KeyringRef>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct KeyringRef {
    pub path: String,
    pub signature: String,
}

/// `index.json`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Index {
    pub global: Global,
    #[serde(default)]
    pub images: Vec<Image>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Global {
    pub generated_at: String,
}

/// The kinds of image a path can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Full,
    Delta,
    /// Our binary-delta extension (a delta whose changed files may be zstd patches).
    Zdelta,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Image {
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    #[serde(default)]
    pub bootme: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minversion: Option<u64>,
    #[serde(
        rename = "phased-percentage",
        default = "hundred",
        skip_serializing_if = "is_hundred"
    )]
    pub phased_percentage: u32,
    #[serde(default)]
    pub files: Vec<FileRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_detail: Option<String>,
    /// `description`, `description-en_US`, … (system-image's `descriptions`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn hundred() -> u32 {
    100
}
fn is_hundred(v: &u32) -> bool {
    *v == 100
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct FileRecord {
    #[serde(default)]
    pub checksum: String,
    #[serde(default)]
    pub order: i64,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub signature: String,
    #[serde(default)]
    pub size: u64,
}

impl Image {
    pub fn kind(&self) -> Option<Kind> {
        match self.kind.as_str() {
            "full" => Some(Kind::Full),
            "delta" => Some(Kind::Delta),
            "zdelta" => Some(Kind::Zdelta),
            _ => None,
        }
    }

    /// The English description (`description`), if any.
    pub fn description(&self) -> &str {
        self.extra
            .get("description")
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }

    /// Total download size of the image's files (saturating: sizes are the server's word).
    pub fn size(&self) -> u64 {
        self.files
            .iter()
            .fold(0, |sum, f| sum.saturating_add(f.size))
    }

    /// The files in their `order`.
    pub fn ordered_files(&self) -> Vec<&FileRecord> {
        let mut files: Vec<&FileRecord> = self.files.iter().collect();
        files.sort_by_key(|f| f.order);
        files
    }
}

impl Index {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Index, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }

    /// When the index was generated, in seconds since the epoch.
    pub fn generated_at(&self) -> Option<i64> {
        parse_generated_at(&self.global.generated_at)
    }
}

pub fn parse_channels(bytes: &[u8], what: &str) -> Result<Channels, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// `generated_at` as system-image writes it (`date`'s `Mon Apr 29 18:45:27 UTC 2013`),
/// or an RFC 2822 date, or seconds since the epoch.
pub fn parse_generated_at(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Some(n);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() == 6 {
        // weekday month day time zone year
        let reordered = format!(
            "{}, {} {} {} {} {}",
            words[0], words[2], words[1], words[5], words[3], words[4]
        );
        if let Some(ts) = crate::date::parse(&reordered) {
            return Some(ts);
        }
    }
    crate::date::parse(text)
}

/// Resolves the channel to use: follows `redirect`s (at most a few, no loops).
pub fn resolve_channel<'a>(
    channels: &'a Channels,
    name: &str,
) -> Result<(String, &'a Channel), Error> {
    let mut current = name.to_owned();
    for _ in 0..8 {
        let channel = channels.get(&current).ok_or_else(|| Error::Config {
            path: "channels.json".into(),
            reason: format!("the server has no channel {current:?}"),
        })?;
        match &channel.redirect {
            Some(next) if next != &current => current = next.clone(),
            _ => return Ok((current, channel)),
        }
    }
    Err(Error::Malformed {
        what: "channels.json".into(),
        reason: format!("redirects from channel {name:?} do not end"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn testdata() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/system-image/client-testdata")
    }

    #[test]
    fn every_sample_parses() {
        let mut indexes = 0;
        let mut channels = 0;
        for entry in std::fs::read_dir(testdata()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let bytes = std::fs::read(&path).unwrap();
            if name.contains(".index_") {
                let index = Index::parse(&bytes, &name).unwrap();
                assert!(index.generated_at().is_some(), "{name}");
                indexes += 1;
            } else if name.contains(".channels_") {
                let parsed = parse_channels(&bytes, &name).unwrap();
                assert!(!parsed.is_empty(), "{name}");
                channels += 1;
            }
        }
        assert!(indexes >= 50 && channels >= 20, "{indexes} {channels}");
    }

    #[test]
    fn generated_at_formats() {
        assert_eq!(
            parse_generated_at("Mon Apr 29 18:45:27 UTC 2013"),
            Some(1367261127)
        );
        assert_eq!(parse_generated_at("1367261127"), Some(1367261127));
        assert_eq!(parse_generated_at("garbage"), None);
    }

    #[test]
    fn device_keyrings_aliases_and_redirects() {
        let bytes = std::fs::read(testdata().join("channel.channels_01.json")).unwrap();
        let c = parse_channels(&bytes, "x").unwrap();
        let daily = &c["daily"];
        assert_eq!(
            daily.devices["nexus7"].keyring.as_ref().unwrap().path,
            "/daily/nexus7/device-keyring.tar.xz"
        );
        assert!(daily.devices["nexus4"].keyring.is_none());
        let bytes = std::fs::read(testdata().join("state.channels_06.json")).unwrap();
        let c = parse_channels(&bytes, "x").unwrap();
        assert_eq!(c["daily"].alias.as_deref(), Some("saucy"));
        let c: Channels = serde_json::from_str(
            r#"{"old": {"redirect": "new", "devices": {}}, "new": {"hidden": true,
                "devices": {"d": {"index": "/new/d/index.json"}}},
                "loop": {"redirect": "loop2", "devices": {}}, "loop2": {"redirect": "loop", "devices": {}}}"#,
        )
        .unwrap();
        let (name, channel) = resolve_channel(&c, "old").unwrap();
        assert_eq!(name, "new");
        assert!(channel.hidden);
        assert!(resolve_channel(&c, "loop").is_err());
        assert!(resolve_channel(&c, "missing").is_err());
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/index.rs`): file sizes whose sum does not fit
    /// in 64 bits overflowed (a panic, or a small wrapped size in release builds that
    /// could make the image look cheapest). The sum saturates.
    #[test]
    fn an_image_whose_file_sizes_overflow_is_as_large_as_can_be() {
        let index = Index::parse(
            br#"{"global": {"generated_at": "1"}, "images": [{"type": "delta", "base": 1,
                "version": 2, "files": [{"size": 200}, {"size": 18446744073709551615}]}]}"#,
            "index.json",
        )
        .unwrap();
        assert_eq!(index.images[0].size(), u64::MAX);
    }
}
