//! What each installed helper put into the prefix: one JSON manifest per package under
//! `<state>/helpers/`. Cleanup removes exactly what these list, and can tell which files
//! were changed since they were installed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Sha256;
use crate::error::Error;

/// The kind of one installed path, with what identifies its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FileKind {
    File { size: u64, sha256: Sha256 },
    Dir,
    Symlink { target: String },
    Hardlink { target: String },
}

/// One installed path, relative to the prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    #[serde(flatten)]
    pub kind: FileKind,
    pub mode: u32,
}

/// An installed helper package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Digest of the `.deb` it came from: equal digests mean nothing to do.
    pub deb_sha256: Sha256,
    pub deb_size: u64,
    /// The pocket it came from.
    pub source: String,
    pub files: Vec<ManifestEntry>,
}

impl Manifest {
    /// Number of non-directory entries.
    pub fn file_count(&self) -> usize {
        self.files
            .iter()
            .filter(|e| e.kind != FileKind::Dir)
            .count()
    }
}

/// How an installed path differs from its manifest entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    pub what: String,
}

/// Compares the path on disk (under `prefix`) with its manifest entry. `None` when it
/// matches (or is gone: nothing to report about a missing file but its absence).
pub fn check_entry(prefix: &Path, entry: &ManifestEntry) -> Option<Change> {
    let path = prefix.join(&entry.path);
    let change = |what: &str| {
        Some(Change {
            path: entry.path.clone(),
            what: what.to_owned(),
        })
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(_) => return change("missing"),
    };
    let kind_ok = match &entry.kind {
        FileKind::File { .. } | FileKind::Hardlink { .. } => meta.file_type().is_file(),
        FileKind::Dir => meta.file_type().is_dir(),
        FileKind::Symlink { .. } => meta.file_type().is_symlink(),
    };
    if !kind_ok {
        return change("type changed");
    }
    match &entry.kind {
        FileKind::File { size, sha256 } => {
            if meta.len() != *size {
                return change("content changed");
            }
            let digest = std::fs::File::open(&path)
                .and_then(|mut f| Sha256::of_reader(&mut f))
                .map(|(d, _)| d);
            if digest.ok() != Some(*sha256) {
                return change("content changed");
            }
        }
        FileKind::Symlink { target } => {
            if std::fs::read_link(&path).ok().as_deref() != Some(Path::new(target)) {
                return change("link target changed");
            }
            return None;
        }
        FileKind::Dir | FileKind::Hardlink { .. } => {}
    }
    if meta.permissions().mode() & 0o7777 != entry.mode & 0o7777 {
        return change("mode changed");
    }
    None
}

/// The manifests directory of a state dir.
pub fn dir(state: &Path) -> PathBuf {
    state.join("helpers")
}

/// Loads every manifest in `dir`, sorted by package name.
pub fn load_all(dir: &Path) -> Result<Vec<Manifest>, Error> {
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut manifests = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bytes = fs_err::read(&path).map_err(|e| Error::io(&path, e))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Config {
            path: path.clone(),
            reason: format!("unreadable helper manifest: {e}"),
        })?;
        manifests.push(manifest);
    }
    manifests.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(manifests)
}

/// Writes `manifests` into `dir` (created), one file each, and returns the files. They
/// are not synced: the install syncs them, with its staging tree, before its journal says
/// they are complete.
pub fn store_all(dir: &Path, manifests: &[Manifest]) -> Result<Vec<PathBuf>, Error> {
    fs_err::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    for manifest in manifests {
        let path = dir.join(format!("{}.json", manifest.package));
        let json = serde_json::to_vec_pretty(manifest).expect("manifests serialise");
        fs_err::write(&path, &json).map_err(|e| Error::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}
