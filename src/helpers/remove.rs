//! Removing the helpers: exactly the paths their manifests list (deepest first, directories
//! only once empty), reporting files changed since install and anything else found in the
//! prefix, which is left alone. Journaled, so an interrupted removal is finished next time.

use std::path::Path;

use serde::Serialize;

use crate::crashpoint;
use crate::error::Error;
use crate::helpers::journal::{Journal, Operation, Phase};
use crate::helpers::lock::StateLock;
use crate::helpers::manifest::{self, Change, FileKind};
use crate::helpers::{Store, env, install, remove_tree};

/// What a removal did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RemoveReport {
    /// Packages removed.
    pub removed: Vec<String>,
    /// Paths removed.
    pub paths: usize,
    /// Listed files that had been changed since they were installed (removed anyway).
    pub changed: Vec<Change>,
    /// Paths in the prefix that no manifest lists (left in place).
    pub foreign: Vec<String>,
    /// Whether the prefix itself was removed (it was empty).
    pub prefix_removed: bool,
}

/// Removes every installed helper. With `purge_state`, also forgets the pocket dates
/// seen and the meta-release cache, leaving the state directory empty.
pub fn remove_all(store: &Store, purge_state: bool) -> Result<RemoveReport, Error> {
    let _lock = StateLock::acquire(&store.state)?;
    install::recover(store)?;
    let manifests = store.installed()?;
    // Look before touching anything, so the report is about what was installed.
    let mut changed = Vec::new();
    for manifest in &manifests {
        for entry in &manifest.files {
            if let Some(change) = manifest::check_entry(&store.prefix, entry) {
                changed.push(change);
            }
        }
    }
    let journal = Journal {
        operation: Operation::Remove,
        phase: Phase::Removing,
        packages: manifests.iter().map(|m| m.package.clone()).collect(),
        staging: store.staging(),
        new_manifests: store.state.join("helpers.new"),
        old_manifests: store.state.join("helpers.old"),
        new_inode: None,
        pid: std::process::id(),
    };
    journal.save(&store.state)?;
    crashpoint::reached("journal removing");
    let mut report = finish(store, &journal)?;
    report.changed = changed;
    report.removed = journal.packages;
    if purge_state {
        for name in ["release-dates.json", "cache"] {
            remove_tree(&store.state.join(name))?;
        }
    }
    Ok(report)
}

/// Removes what the manifests list (idempotent), then the manifests, then the journal.
pub(crate) fn finish(store: &Store, journal: &Journal) -> Result<RemoveReport, Error> {
    let manifests = manifest::load_all(&store.manifests_dir())?;
    let mut report = RemoveReport::default();
    // Deepest paths first, so directories are empty when their turn comes.
    let mut entries: Vec<(&str, bool)> = manifests
        .iter()
        .flat_map(|m| m.files.iter())
        .map(|e| (e.path.as_str(), e.kind == FileKind::Dir))
        .collect();
    entries.sort_by(|a, b| b.0.cmp(a.0));
    entries.dedup();
    for (relative, is_dir) in entries {
        if relative.is_empty() {
            continue; // the prefix itself: handled below
        }
        let path = store.prefix.join(relative);
        let removed = if is_dir {
            match std::fs::remove_dir(&path) {
                Ok(()) => true,
                // Not empty: it holds something no manifest lists; reported below.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOTEMPTY) => false,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(Error::io(&path, e)),
            }
        } else {
            match std::fs::symlink_metadata(&path) {
                // Something replaced the file with a directory: leave the user's tree.
                Ok(meta) if meta.is_dir() => false,
                Ok(_) => {
                    fs_err::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                    true
                }
                Err(_) => false,
            }
        };
        if removed {
            report.paths += 1;
            crashpoint::reached("path removed");
        }
    }
    report.foreign = leftovers(&store.prefix);
    if report.foreign.is_empty() {
        report.prefix_removed = match std::fs::remove_dir(&store.prefix) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(&store.prefix, e)),
        };
    }
    crashpoint::reached("prefix removed");
    remove_tree(&store.manifests_dir())?;
    remove_tree(&journal.new_manifests)?;
    remove_tree(&journal.old_manifests)?;
    remove_tree(&journal.staging)?;
    remove_tree(&store.download_dir())?;
    env::remove_apt_conf(store)?;
    crashpoint::reached("manifests removed");
    Journal::clear(&store.state)?;
    Ok(report)
}

/// Every path left under `prefix`, relative to it.
fn leftovers(prefix: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![prefix.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            if let Ok(relative) = path.strip_prefix(prefix) {
                found.push(relative.display().to_string());
            }
        }
    }
    found.sort();
    found
}
