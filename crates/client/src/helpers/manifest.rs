//! What each installed helper put into the prefix: one JSON manifest per package under
//! `<state>/helpers/`. Cleanup removes exactly what these list, and can tell which files
//! were changed since they were installed.
//!
//! Every entry's path is checked again when a manifest is read ([`RelPath`]): an absolute
//! path or one with `..` makes the whole manifest refused ([`Error::BadState`]) before
//! anything is removed. Link targets are data only, compared but never followed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::confine::{RelPath, Tree};
use crate::digest::Sha256;
use crate::error::Error;
use crate::json_state;

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
    pub path: RelPath,
    #[serde(flatten)]
    pub kind: FileKind,
    pub mode: u32,
}

/// An installed helper package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredManifest")]
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

/// A manifest as read from disk, before its paths are checked.
#[derive(Deserialize)]
struct StoredManifest {
    package: String,
    version: String,
    architecture: String,
    deb_sha256: Sha256,
    deb_size: u64,
    source: String,
    files: Vec<StoredEntry>,
}

#[derive(Deserialize)]
struct StoredEntry {
    path: String,
    #[serde(flatten)]
    kind: FileKind,
    mode: u32,
}

impl TryFrom<StoredManifest> for Manifest {
    type Error = String;

    fn try_from(stored: StoredManifest) -> Result<Self, String> {
        let mut files = Vec::with_capacity(stored.files.len());
        for entry in stored.files {
            // Earlier versions listed the prefix itself as a directory named "": it is
            // not a path to remove (the prefix goes once it is empty), so it is dropped.
            if entry.path.is_empty() && entry.kind == FileKind::Dir {
                continue;
            }
            let path = RelPath::new(entry.path).map_err(|e| e.to_string())?;
            files.push(ManifestEntry {
                path,
                kind: entry.kind,
                mode: entry.mode,
            });
        }
        Ok(Manifest {
            package: stored.package,
            version: stored.version,
            architecture: stored.architecture,
            deb_sha256: stored.deb_sha256,
            deb_size: stored.deb_size,
            source: stored.source,
            files,
        })
    }
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
    let path = prefix.join(entry.path.as_path());
    let change = |what: &str| {
        Some(Change {
            path: entry.path.to_string(),
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

/// Loads every manifest in `dir`, sorted by package name; one that names a path outside
/// the prefix is refused.
pub fn load_all(dir: &Path) -> Result<Vec<Manifest>, Error> {
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut manifests: Vec<Manifest> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        // Listed a moment ago: gone now is a change under our feet, not "no manifest".
        let bytes = fs_err::read(&path).map_err(|e| Error::io(&path, e))?;
        manifests.push(json_state::decode(&path, "helper manifest", &bytes)?);
    }
    manifests.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(manifests)
}

/// Writes `manifests` into the directory `dir`, one file each, and returns the files.
pub fn store_all(dir: &Tree, manifests: &[Manifest]) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    for manifest in manifests {
        let name = format!("{}.json", manifest.package);
        let rel = RelPath::new(name.as_str()).map_err(|e| Error::Refused {
            path: dir.path().join(&name),
            reason: e.to_string(),
        })?;
        dir.save_json(&rel, manifest)?;
        written.push(dir.path().join(name));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as version 0.1 writes it: the prefix itself listed as "".
    fn stored(paths: &[(&str, &str)]) -> String {
        let files: Vec<serde_json::Value> = paths
            .iter()
            .map(|(path, kind)| match *kind {
                "dir" => serde_json::json!({"path": path, "type": "dir", "mode": 0o755}),
                "symlink" => serde_json::json!(
                    {"path": path, "type": "symlink", "target": "../../../etc", "mode": 0o777}),
                _ => serde_json::json!({"path": path, "type": "file", "size": 3,
                    "sha256": Sha256::of(b"abc").to_hex(), "mode": 0o644}),
            })
            .collect();
        serde_json::json!({
            "package": "release-upgrader-apt", "version": "3.0.3", "architecture": "amd64",
            "deb_sha256": Sha256::of(b"deb").to_hex(), "deb_size": 3, "source": "file:/p",
            "files": files,
        })
        .to_string()
    }

    #[test]
    fn manifests_of_earlier_versions_still_load() {
        let text = stored(&[
            ("", "dir"),
            ("bin", "dir"),
            ("bin/apt-get", "file"),
            ("methods/https", "symlink"),
        ]);
        let manifest: Manifest = serde_json::from_str(&text).unwrap();
        let paths: Vec<&str> = manifest.files.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["bin", "bin/apt-get", "methods/https"]);
        assert_eq!(manifest.file_count(), 2);
        // And what this version writes reads back the same.
        let again: Manifest =
            serde_json::from_slice(&serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert_eq!(again, manifest);
    }

    #[test]
    fn entries_naming_paths_outside_the_prefix_are_refused() {
        for bad in [
            "/etc/passwd",
            "../../x",
            "bin/../../x",
            "bin//x",
            "./bin",
            "bin/",
        ] {
            let err = serde_json::from_str::<Manifest>(&stored(&[("bin", "dir"), (bad, "file")]))
                .unwrap_err();
            assert!(
                err.to_string().contains("not a path inside"),
                "{bad}: {err}"
            );
        }
        // "" stands for the prefix only as a directory.
        assert!(serde_json::from_str::<Manifest>(&stored(&[("", "file")])).is_err());
    }

    #[test]
    fn a_tampered_manifest_is_a_bad_state_naming_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.json"), stored(&[("bin", "dir")])).unwrap();
        assert_eq!(load_all(dir.path()).unwrap().len(), 1);
        std::fs::write(
            dir.path().join("bad.json"),
            stored(&[("/etc/passwd", "file")]),
        )
        .unwrap();
        let err = load_all(dir.path()).unwrap_err();
        assert!(err.is_bad_state(), "{err:?}");
        assert!(err.to_string().contains("bad.json"), "{err}");
    }
}
