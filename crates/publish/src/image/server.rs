//! `image publish`: a system-image server tree.
//!
//! ```text
//! channels.json(.asc)
//! <channel>/<device>/index.json(.asc)
//! <channel>/<device>/version-N.tar.xz(.asc)
//! <channel>/<device>/device-signing.tar.xz(.asc)   (when given)
//! pool/<name>-<sha256>.tar.xz(.asc)                 full images
//! pool/<name>-<sha256>.delta-<name>-<sha256>.tar.xz(.asc)
//! pool/<name>-<sha256>.zdelta-<name>-<sha256>.tar.zst(.asc)
//! gpg/{archive-master,image-master,image-signing,blacklist}.tar.xz(.asc)
//! ```
//!
//! Images are added one build at a time: the full image, a delta (and optionally a
//! zdelta) from each chosen earlier build, old builds expired as asked. A zdelta that is
//! not smaller than its delta is not published. Every file is
//! signed by the image-signing key (index.json by the device-signing key when one is
//! given), as system-image does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::build::{self, ChannelIni};
use super::delta::{self, DeltaKind, DeltaOptions};
use super::keyring::{asc_path, sign_file, to_json_text};
use crate::SigningKey;
use crate::digest::Sha256;
use crate::error::Error;
use crate::{fsutil, json_state};

/// `index.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Index {
    pub global: Global,
    pub images: Vec<Image>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Global {
    pub generated_at: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One image of `index.json`; keys in sorted order, as system-image writes them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Image {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bootme: bool,
    pub description: String,
    pub files: Vec<ImageFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minversion: Option<u64>,
    #[serde(
        rename = "phased-percentage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub phased_percentage: Option<u8>,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_detail: Option<String>,
    /// Our zdelta of the same two builds, on the `delta` entry: stock system-image
    /// clients keep an unknown key unread, but stop at an entry of an unknown `type`
    /// (docs/protocol.md §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zdelta: Option<ZdeltaFiles>,
    /// Keys this tool does not write (`description-en`, ...), kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageFile {
    pub checksum: String,
    pub order: u32,
    pub path: String,
    pub signature: String,
    pub size: u64,
}

/// The files of a zdelta, carried by its delta's entry ([`Image::zdelta`]): the zdelta
/// and the build's version tarball, as a delta's own files are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ZdeltaFiles {
    pub files: Vec<ImageFile>,
}

/// `channels.json`: channel name to channel.
pub type Channels = BTreeMap<String, Channel>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Channel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    pub devices: BTreeMap<String, Device>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Device {
    pub index: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<KeyringRef>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyringRef {
    pub path: String,
    pub signature: String,
}

/// Everything `image publish` needs for one build.
#[derive(Clone, Debug)]
pub struct PublishSpec {
    pub out: PathBuf,
    pub channel: String,
    pub device: String,
    pub version: u64,
    /// The full image (from `image build`).
    pub image: PathBuf,
    /// Name of the image file in the pool (`<name>-<sha256>.tar.xz`).
    pub name: String,
    pub description: Option<String>,
    pub version_detail: Option<String>,
    pub bootme: bool,
    pub minversion: Option<u64>,
    pub phased_percentage: Option<u8>,
    /// Builds to write deltas from; `None`: the newest full build already published.
    pub delta_from: Option<Vec<u64>>,
    pub zdelta: bool,
    /// Full builds to keep (the new one included); `None` keeps all.
    pub keep: Option<usize>,
    /// `channel.ini` of the version tarball.
    pub server_base: String,
    pub http_port: String,
    pub https_port: String,
    /// Directory with `{archive-master,image-master,image-signing,blacklist}.tar.xz(.asc)`.
    pub keyrings: Option<PathBuf>,
    /// A device-signing keyring tarball (with its `.asc` beside it).
    pub device_keyring: Option<PathBuf>,
    pub hidden: bool,
    pub alias: Option<String>,
    pub delta_options: DeltaOptions,
}

/// What `publish` did.
#[derive(Clone, Debug, Default)]
pub struct Published {
    pub index: PathBuf,
    pub added: Vec<(String, Option<u64>, u64)>,
    pub expired: Vec<(String, Option<u64>, u64)>,
    pub removed_files: Vec<String>,
    /// Zdeltas written but not published (not smaller than the delta).
    pub skipped: Vec<String>,
}

/// The `generated_at` stamp: SOURCE_DATE_EPOCH or now, as system-image formats it.
pub fn generated_at() -> Result<String, Error> {
    let secs = build::generated_mtime()?;
    Ok(chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%a %b %d %H:%M:%S UTC %Y")
        .to_string())
}

fn file_digest(path: &Path) -> Result<(Sha256, u64), Error> {
    let mut file = fs_err::File::open(path).map_err(|e| Error::io(path, e))?;
    Sha256::of_reader(&mut file).map_err(|e| Error::io(path, e))
}

/// The server path (`/pool/...`) of a file under `out`.
fn server_path(out: &Path, file: &Path) -> String {
    format!(
        "/{}",
        file.strip_prefix(out).unwrap_or(file).to_string_lossy()
    )
}

/// The local file of a server path.
fn local(out: &Path, server: &str) -> PathBuf {
    out.join(server.trim_start_matches('/'))
}

/// Adds one signed file to an image's list.
fn image_file(out: &Path, file: &Path, order: u32, key: &SigningKey) -> Result<ImageFile, Error> {
    sign_file(key, file)?;
    let (digest, size) = file_digest(file)?;
    Ok(ImageFile {
        checksum: digest.to_hex(),
        order,
        path: server_path(out, file),
        signature: server_path(out, &asc_path(file)),
        size,
    })
}

fn type_rank(kind: &str) -> u8 {
    match kind {
        "full" => 0,
        "delta" => 1,
        _ => 2,
    }
}

/// Publishes one build into the tree at `spec.out`.
pub fn publish(
    spec: &PublishSpec,
    key: &SigningKey,
    index_key: Option<&SigningKey>,
) -> Result<Published, Error> {
    let out = &spec.out;
    if let Some(dir) = &spec.keyrings {
        check_keyrings(dir, key)?;
    }
    let device_dir = out.join(&spec.channel).join(&spec.device);
    let index_path = device_dir.join("index.json");
    let mut index: Index = json_state::load(&index_path, "system-image index")?.unwrap_or(Index {
        global: Global {
            generated_at: String::new(),
            extra: BTreeMap::new(),
        },
        images: Vec::new(),
    });
    if index.images.iter().any(|i| i.version == spec.version) {
        return Err(Error::Config {
            path: index_path,
            reason: format!("build {} is already published", spec.version),
        });
    }
    if let Some(newest) = index.images.iter().map(|i| i.version).max()
        && newest > spec.version
    {
        return Err(Error::Config {
            path: index_path,
            reason: format!(
                "build {} is older than build {newest}, already published",
                spec.version
            ),
        });
    }
    let mut published = Published {
        index: index_path.clone(),
        ..Published::default()
    };
    // A channel published by an earlier version of this tool lists zdeltas as entries of
    // their own, which stop stock clients: each moves onto its delta's entry (one without
    // a delta to carry it goes, reported as expired).
    let (legacy, images): (Vec<Image>, Vec<Image>) = std::mem::take(&mut index.images)
        .into_iter()
        .partition(|i| i.kind == "zdelta");
    index.images = images;
    for zdelta in legacy {
        match index
            .images
            .iter_mut()
            .find(|i| i.kind == "delta" && i.base == zdelta.base && i.version == zdelta.version)
        {
            Some(delta) => {
                delta.zdelta = Some(ZdeltaFiles {
                    files: zdelta.files,
                })
            }
            None => published
                .expired
                .push(("zdelta".into(), zdelta.base, zdelta.version)),
        }
    }

    // The full image into the pool, named by its digest.
    let (digest, _) = file_digest(&spec.image)?;
    let pool = out.join("pool");
    let image_name = format!("{}-{}", spec.name, digest.to_hex());
    let pooled = pool.join(format!("{image_name}.tar.xz"));
    if !pooled.exists() {
        fsutil::copy_atomic(&spec.image, &pooled)?;
    }

    // The version tarball.
    let mut detail = Vec::new();
    if let Some(extra) = &spec.version_detail {
        detail.push(extra.clone());
    }
    detail.push(format!("version={}", spec.version));
    let version_detail = detail.join(",");
    let version_tarball = device_dir.join(format!("version-{}.tar.xz", spec.version));
    build::write_version_tarball(
        &ChannelIni {
            base: spec.server_base.clone(),
            http_port: spec.http_port.clone(),
            https_port: spec.https_port.clone(),
            channel: spec.channel.clone(),
            device: spec.device.clone(),
            build_number: spec.version,
            version_detail: Some(version_detail.clone()),
        },
        &version_tarball,
    )?;
    let version_file = image_file(out, &version_tarball, 1, key)?;
    let description = spec
        .description
        .clone()
        .unwrap_or_else(|| format!("Build {}", spec.version));
    let new_image = |kind: &str, base: Option<u64>, main: ImageFile| Image {
        base,
        bootme: spec.bootme,
        description: description.clone(),
        files: vec![main, version_file.clone()],
        minversion: if kind == "full" {
            spec.minversion
        } else {
            None
        },
        phased_percentage: spec.phased_percentage,
        kind: kind.to_owned(),
        version: spec.version,
        version_detail: Some(version_detail.clone()),
        zdelta: None,
        extra: BTreeMap::new(),
    };
    index
        .images
        .push(new_image("full", None, image_file(out, &pooled, 0, key)?));
    published.added.push(("full".into(), None, spec.version));

    // Deltas from earlier builds.
    let bases: Vec<u64> = match &spec.delta_from {
        Some(list) => list.clone(),
        None => index
            .images
            .iter()
            .filter(|i| i.kind == "full" && i.version < spec.version)
            .map(|i| i.version)
            .max()
            .into_iter()
            .collect(),
    };
    for base in bases {
        let base_image = index
            .images
            .iter()
            .find(|i| i.kind == "full" && i.version == base)
            .ok_or_else(|| Error::Config {
                path: index_path.clone(),
                reason: format!("no full image of build {base} to make a delta from"),
            })?;
        let base_file = base_image
            .files
            .iter()
            .min_by_key(|f| f.order)
            .ok_or_else(|| Error::Config {
                path: index_path.clone(),
                reason: format!("the full image of build {base} has no files"),
            })?;
        let base_local = local(out, &base_file.path);
        let base_stem = Path::new(&base_file.path)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".tar.xz"))
            .unwrap_or("base")
            .to_owned();
        let mut kinds = vec![DeltaKind::Delta];
        if spec.zdelta {
            kinds.push(DeltaKind::Zdelta);
        }
        let mut delta_size = None;
        for kind in kinds {
            let (label, ext) = match kind {
                DeltaKind::Delta => ("delta", "tar.xz"),
                DeltaKind::Zdelta => ("zdelta", "tar.zst"),
            };
            let path = pool.join(format!("{image_name}.{label}-{base_stem}.{ext}"));
            let mut opts = spec.delta_options.clone();
            opts.kind = kind;
            let stats = delta::write_delta(&base_local, &pooled, &path, &opts)?;
            match (kind, delta_size) {
                (DeltaKind::Delta, _) => delta_size = Some(stats.size),
                (DeltaKind::Zdelta, Some(plain)) if stats.size >= plain => {
                    // Not worth offering: clients would download the delta anyway.
                    fs_err::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                    published.skipped.push(format!(
                        "zdelta {base} -> {}: {} bytes, not smaller than the delta's {plain}",
                        spec.version, stats.size
                    ));
                    continue;
                }
                _ => {}
            }
            let main = image_file(out, &path, 0, key)?;
            match kind {
                DeltaKind::Delta => index.images.push(new_image(label, Some(base), main)),
                DeltaKind::Zdelta => {
                    let delta = index
                        .images
                        .last_mut()
                        .filter(|i| i.kind == "delta" && i.base == Some(base))
                        .expect("the delta of the same builds was pushed just before");
                    delta.zdelta = Some(ZdeltaFiles {
                        files: vec![main, version_file.clone()],
                    });
                }
            }
            published
                .added
                .push((label.into(), Some(base), spec.version));
        }
    }

    // Expiry: keep the newest `keep` full builds, and deltas between kept builds.
    if let Some(keep) = spec.keep {
        let mut fulls: Vec<u64> = index
            .images
            .iter()
            .filter(|i| i.kind == "full")
            .map(|i| i.version)
            .collect();
        fulls.sort_unstable_by(|a, b| b.cmp(a));
        fulls.dedup();
        let kept: BTreeSet<u64> = fulls.into_iter().take(keep.max(1)).collect();
        index.images.retain(|i| {
            let keep_it = kept.contains(&i.version) && i.base.is_none_or(|b| kept.contains(&b));
            if !keep_it {
                published.expired.push((i.kind.clone(), i.base, i.version));
            }
            keep_it
        });
    }
    index.images.sort_by(|a, b| {
        (a.version, type_rank(&a.kind), a.base).cmp(&(b.version, type_rank(&b.kind), b.base))
    });
    index.global.generated_at = generated_at()?;
    fsutil::write_atomic(&index_path, &to_json_text(&index))?;
    sign_file(index_key.unwrap_or(key), &index_path)?;

    // Device keyring, gpg/ keyrings, channels.json.
    let mut device_keyring = None;
    if let Some(keyring) = &spec.device_keyring {
        let dest = device_dir.join("device-signing.tar.xz");
        copy_with_signature(keyring, &dest)?;
        device_keyring = Some(KeyringRef {
            path: server_path(out, &dest),
            signature: server_path(out, &asc_path(&dest)),
        });
    }
    if let Some(dir) = &spec.keyrings {
        for name in [
            "archive-master",
            "image-master",
            "image-signing",
            "blacklist",
        ] {
            let source = dir.join(format!("{name}.tar.xz"));
            if source.exists() {
                copy_with_signature(&source, &out.join("gpg").join(format!("{name}.tar.xz")))?;
            }
        }
    }
    let channels_path = out.join("channels.json");
    let mut channels: Channels =
        json_state::load(&channels_path, "channels file")?.unwrap_or_default();
    let channel = channels.entry(spec.channel.clone()).or_default();
    if spec.hidden {
        channel.hidden = true;
    }
    if spec.alias.is_some() {
        channel.alias = spec.alias.clone();
    }
    let device = channel.devices.entry(spec.device.clone()).or_default();
    device.index = server_path(out, &index_path);
    if device_keyring.is_some() {
        device.keyring = device_keyring;
    }
    fsutil::write_atomic(&channels_path, &to_json_text(&channels))?;
    sign_file(key, &channels_path)?;

    published.removed_files = collect_garbage(out, &channels)?;
    Ok(published)
}

/// The `gpg/` keyrings checked as system-image 3.x checks them on the device, before
/// anything is published: image-master signed by archive-master, the blacklist signed by
/// image-master (not archive-master: the real server signs it so, and the stock client,
/// its recovery and this client verify it so), image-signing signed by image-master
/// without the blacklisted keys, and `key` (what signs `index.json` and the files) in
/// image-signing. A chain a stock device would refuse is refused here, once, instead.
fn check_keyrings(dir: &Path, key: &SigningKey) -> Result<(), Error> {
    use ru_client::image::keyring::{Checks, Role, VerifiedKeyring};
    /// A keyring tarball, its bytes and its detached signature's.
    type Signed = (PathBuf, Vec<u8>, Vec<u8>);
    let read = |name: &str| -> Result<Option<Signed>, Error> {
        let path = dir.join(format!("{name}.tar.xz"));
        if !path.exists() {
            return Ok(None);
        }
        let data = fs_err::read(&path).map_err(|e| Error::io(&path, e))?;
        let asc = asc_path(&path);
        let signature = fs_err::read(&asc).map_err(|e| Error::io(&asc, e))?;
        Ok(Some((path, data, signature)))
    };
    let checks = Checks {
        now: chrono::Utc::now().timestamp(),
        device: None,
    };
    let refused = |path: &Path, signer: &str, e: Error| Error::Config {
        path: path.to_owned(),
        reason: format!(
            "a stock system-image client would refuse it ({e}); it must be signed by \
             {signer} (release-upgrader-publish image keyring … --signed-by <{signer} key>)"
        ),
    };
    let Some((path, data, _)) = read("archive-master")? else {
        return Ok(());
    };
    let archive = VerifiedKeyring::anchor(&data, &checks, &path.display().to_string())?;
    let Some((path, data, signature)) = read("image-master")? else {
        return Ok(());
    };
    let what = path.display().to_string();
    let master = VerifiedKeyring::verify(
        Role::ImageMaster,
        &data,
        &signature,
        &archive,
        None,
        &checks,
        &what,
    )
    .map_err(|e| refused(&path, "archive-master", e))?;
    let blacklist = match read("blacklist")? {
        Some((path, data, signature)) => {
            let what = path.display().to_string();
            Some(
                VerifiedKeyring::verify(
                    Role::Blacklist,
                    &data,
                    &signature,
                    &master,
                    None,
                    &checks,
                    &what,
                )
                .map_err(|e| refused(&path, "image-master", e))?,
            )
        }
        None => None,
    };
    if let Some((path, data, signature)) = read("image-signing")? {
        let what = path.display().to_string();
        let signing = VerifiedKeyring::verify(
            Role::ImageSigning,
            &data,
            &signature,
            &master,
            blacklist.as_ref(),
            &checks,
            &what,
        )
        .map_err(|e| refused(&path, "image-master", e))?;
        let fingerprint = key.fingerprint();
        if !signing.fingerprints().contains(&fingerprint) {
            return Err(Error::Config {
                path,
                reason: format!(
                    "the publishing key {fingerprint} is not in it (or is blacklisted): \
                     devices would refuse index.json and every file"
                ),
            });
        }
    }
    Ok(())
}

fn copy_with_signature(source: &Path, dest: &Path) -> Result<(), Error> {
    let source_asc = asc_path(source);
    if !source_asc.exists() {
        return Err(Error::Config {
            path: source_asc,
            reason: "the keyring's detached signature is missing".into(),
        });
    }
    for (from, to) in [
        (source.to_owned(), dest.to_owned()),
        (source_asc, asc_path(dest)),
    ] {
        let data = fs_err::read(&from).map_err(|e| Error::io(&from, e))?;
        fsutil::write_atomic(&to, &data)?;
    }
    Ok(())
}

/// Deletes pool files and version tarballs no index refers to any more.
fn collect_garbage(out: &Path, channels: &Channels) -> Result<Vec<String>, Error> {
    let mut referenced = BTreeSet::new();
    let mut device_dirs = Vec::new();
    for channel in channels.values() {
        for device in channel.devices.values() {
            let index_path = local(out, &device.index);
            if let Some(parent) = index_path.parent() {
                device_dirs.push(parent.to_owned());
            }
            if let Some(index) = json_state::load::<Index>(&index_path, "system-image index")? {
                for image in &index.images {
                    let carried = image.zdelta.iter().flat_map(|z| &z.files);
                    for file in image.files.iter().chain(carried) {
                        referenced.insert(local(out, &file.path));
                        referenced.insert(local(out, &file.signature));
                    }
                }
            }
        }
    }
    let mut removed = Vec::new();
    let mut candidates = Vec::new();
    let pool = out.join("pool");
    if pool.is_dir() {
        for entry in fs_err::read_dir(&pool).map_err(|e| Error::io(&pool, e))? {
            candidates.push(entry.map_err(|e| Error::io(&pool, e))?.path());
        }
    }
    for dir in device_dirs {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("version-") {
                    candidates.push(entry.path());
                }
            }
        }
    }
    candidates.sort();
    for path in candidates {
        if !referenced.contains(&path) {
            fs_err::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed.push(server_path(out, &path));
        }
    }
    Ok(removed)
}
