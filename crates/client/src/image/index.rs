//! system-image's JSON documents: `channels.json` and `<channel>/<device>/index.json`.
//!
//! Parsed leniently where system-image is lenient (unknown keys, missing optional
//! fields) and strictly where a wrong value would change what is installed (versions,
//! sizes, checksums, paths). Types other than `full`, `delta` and our `zdelta` are kept
//! so they can be reported, and never chosen.
//!
//! Numbers are bounded ([`FILE_SIZE_MAX`], [`IMAGE_SIZE_MAX`], [`BUILD_MAX`]): a
//! file's `size` is the cap its download is held to, so a petabyte promise would cap
//! nothing, and sizes and build numbers that wrap a `u64` when summed or scored would
//! make the cheapest-path choice pick the wrong path. The bounds are far above what
//! real servers publish (the samples' largest file is 800 MiB, their largest build a
//! date stamp of 8 digits). A signed index beyond them is malformed (exit 3), and the
//! error names the image and the file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The largest file an image may list: 16 GiB.
pub const FILE_SIZE_MAX: u64 = 16 << 30;
/// The most the files of one image may add up to: 32 GiB.
pub const IMAGE_SIZE_MAX: u64 = 32 << 30;
/// The highest build number (`version`, `base`, `minversion`): 15 digits, room for any
/// date-and-time stamp (`YYYYMMDDhhmmss` is 14), and small enough that system-image's
/// score (9001 per build a path falls short of the highest target) stays within a `u64`.
pub const BUILD_MAX: u64 = 999_999_999_999_999;

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
    /// Our zstd binary delta of the same two builds, on a `delta` entry: where stock
    /// system-image clients do not look (their `Image` keeps unknown keys unread, while an
    /// entry of an unknown `type` stops their whole update), so one index serves both.
    /// [`Index::parse`] turns it into an image of type `zdelta` of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zdelta: Option<Zdelta>,
    /// `description`, `description-en_US`, … (system-image's `descriptions`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The files of a zdelta carried by its `delta` entry ([`Image::zdelta`]).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Zdelta {
    pub files: Vec<FileRecord>,
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

    /// Checks the numbers against [`FILE_SIZE_MAX`], [`IMAGE_SIZE_MAX`] and [`BUILD_MAX`].
    fn check(&self) -> Result<(), String> {
        let builds = [
            ("version", Some(self.version)),
            ("base", self.base),
            ("minversion", self.minversion),
        ];
        for (name, build) in builds {
            if let Some(build) = build
                && build > BUILD_MAX
            {
                return Err(format!(
                    "{name} {build} is beyond the highest build number accepted ({BUILD_MAX})"
                ));
            }
        }
        let mut total: u64 = 0;
        for file in &self.files {
            if file.size > FILE_SIZE_MAX {
                return Err(format!(
                    "{} claims {} bytes, more than the {FILE_SIZE_MAX} a file may have",
                    file.path, file.size
                ));
            }
            total += file.size;
            if total > IMAGE_SIZE_MAX {
                return Err(format!(
                    "its files add up to more than the {IMAGE_SIZE_MAX} bytes an image may have \
                     ({} is where they pass it)",
                    file.path
                ));
            }
        }
        Ok(())
    }

    /// The files in their `order`.
    pub fn ordered_files(&self) -> Vec<&FileRecord> {
        let mut files: Vec<&FileRecord> = self.files.iter().collect();
        files.sort_by_key(|f| f.order);
        files
    }
}

impl Index {
    /// Parses an `index.json` and checks its numbers against the bounds above. The
    /// zdelta a `delta` entry carries becomes an image of its own, of type `zdelta` (as
    /// older servers of ours list them, which are read too).
    pub fn parse(bytes: &[u8], what: &str) -> Result<Index, Error> {
        let mut index: Index = serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        let carried: Vec<Image> = index
            .images
            .iter_mut()
            .filter_map(|image| {
                let zdelta = image.zdelta.take()?;
                (image.kind == "delta").then(|| Image {
                    kind: "zdelta".into(),
                    files: zdelta.files,
                    ..image.clone()
                })
            })
            .collect();
        index.images.extend(carried);
        for image in &index.images {
            image.check().map_err(|reason| Error::Malformed {
                what: what.to_owned(),
                reason: format!("{} image {}: {reason}", image.kind, image.version),
            })?;
        }
        Ok(index)
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
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("tests/conformance/system-image/client-testdata")
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

    fn index_with(image: &str) -> String {
        format!(
            r#"{{"global": {{"generated_at": "Mon Apr 29 18:45:27 UTC 2013"}}, "images": [{image}]}}"#
        )
    }

    fn full_image(version: &str, size: &str) -> String {
        format!(
            r#"{{"type": "full", "version": {version}, "description": "x", "files": [
                {{"checksum": "aa", "order": 0, "path": "/pool/a.tar.xz", "signature": "/pool/a.tar.xz.asc", "size": 1000}},
                {{"checksum": "bb", "order": 1, "path": "/pool/b.tar.xz", "signature": "/pool/b.tar.xz.asc", "size": {size}}}]}}"#
        )
    }

    #[test]
    fn a_zdelta_carried_by_its_delta_becomes_an_image_of_its_own() {
        let delta = r#"{"type": "delta", "base": 1, "version": 2, "description": "d",
            "files": [{"order": 0, "path": "/pool/d.tar.xz", "signature": "/pool/d.tar.xz.asc", "size": 900}],
            "zdelta": {"files": [{"order": 0, "path": "/pool/z.tar.zst", "signature": "/pool/z.tar.zst.asc", "size": 300}]}}"#;
        let index = Index::parse(index_with(delta).as_bytes(), "x").unwrap();
        let kinds: Vec<(&str, u64, u64)> = index
            .images
            .iter()
            .map(|i| (i.kind.as_str(), i.version, i.size()))
            .collect();
        assert_eq!(kinds, [("delta", 2, 900), ("zdelta", 2, 300)]);
        assert_eq!(index.images[1].base, Some(1));
        assert_eq!(index.images[1].description(), "d");
        assert!(index.images.iter().all(|i| i.zdelta.is_none()));
        // Its sizes are checked like any image's.
        let huge = delta.replace("\"size\": 300", "\"size\": 1000000000000000");
        assert!(Index::parse(index_with(&huge).as_bytes(), "x").is_err());
        // On anything but a delta it means nothing.
        let full = full_image("3", "1").replace(
            r#""type": "full","#,
            r#""type": "full", "zdelta": {"files": []},"#,
        );
        assert_eq!(
            Index::parse(index_with(&full).as_bytes(), "x")
                .unwrap()
                .images
                .len(),
            1
        );
    }

    #[test]
    fn absurd_sizes_are_refused_naming_the_entry() {
        assert!(Index::parse(index_with(&full_image("7", "1000")).as_bytes(), "x").is_ok());
        // A petabyte: beyond any device, and a download cap that caps nothing.
        let err = Index::parse(
            index_with(&full_image("7", "1000000000000000")).as_bytes(),
            "index.json",
        )
        .unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
        assert_eq!(err.exit_code(), crate::error::ExitCode::Verification);
        let text = err.to_string();
        for needle in [
            "index.json",
            "full image 7",
            "/pool/b.tar.xz",
            "1000000000000000",
        ] {
            assert!(text.contains(needle), "{text} lacks {needle}");
        }
        // Files each within bounds, together more than an image may be.
        let files: Vec<String> = (0..5)
            .map(|i| {
                format!(
                    r#"{{"checksum": "aa", "order": {i}, "path": "/pool/{i}.tar.xz", "signature": "", "size": {}}}"#,
                    FILE_SIZE_MAX
                )
            })
            .collect();
        let image = format!(
            r#"{{"type": "full", "version": 7, "files": [{}]}}"#,
            files.join(",")
        );
        let err = Index::parse(index_with(&image).as_bytes(), "x").unwrap_err();
        assert!(err.to_string().contains("full image 7"), "{err}");
        // Sizes that would wrap a u64 when summed.
        let image = format!(
            r#"{{"type": "full", "version": 7, "files": [{{"path": "/a", "size": {m}}}, {{"path": "/b", "size": {m}}}]}}"#,
            m = u64::MAX
        );
        assert!(Index::parse(index_with(&image).as_bytes(), "x").is_err());
    }

    #[test]
    fn absurd_build_numbers_are_refused() {
        let err = Index::parse(
            index_with(&full_image(&u64::MAX.to_string(), "1000")).as_bytes(),
            "x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("18446744073709551615"), "{err}");
        let delta = format!(
            r#"{{"type": "delta", "version": 8, "base": {}, "files": []}}"#,
            BUILD_MAX + 1
        );
        assert!(Index::parse(index_with(&delta).as_bytes(), "x").is_err());
        let full = format!(
            r#"{{"type": "full", "version": 8, "minversion": {}, "files": []}}"#,
            u64::MAX
        );
        assert!(Index::parse(index_with(&full).as_bytes(), "x").is_err());
        // Date-stamped builds, as real servers number them, are fine.
        assert!(Index::parse(index_with(&full_image("20130500", "1")).as_bytes(), "x").is_ok());
        assert!(
            Index::parse(
                index_with(&full_image("20250101235959", "1")).as_bytes(),
                "x"
            )
            .is_ok()
        );
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
    /// could make the image look cheapest). Such a size is refused when the index is
    /// read now (no file may claim more than `FILE_SIZE_MAX`); the sum saturates anyway.
    #[test]
    fn an_image_whose_file_sizes_overflow_is_refused_and_its_size_saturates() {
        let text = |size: u64| {
            format!(
                r#"{{"global": {{"generated_at": "1"}}, "images": [{{"type": "delta", "base": 1,
                "version": 2, "files": [{{"size": 200}}, {{"size": {size}}}]}}]}}"#
            )
        };
        let err = Index::parse(text(u64::MAX).as_bytes(), "index.json").unwrap_err();
        assert!(err.to_string().contains("18446744073709551615"), "{err}");
        let mut index = Index::parse(text(300).as_bytes(), "index.json").unwrap();
        assert_eq!(index.images[0].size(), 500);
        index.images[0].files[1].size = u64::MAX;
        assert_eq!(index.images[0].size(), u64::MAX);
    }
}
