//! Removing the helpers: exactly the paths their manifests list (deepest first, directories
//! only once empty), reporting files changed since install and anything else found in the
//! prefix, which is left alone. Journaled, so an interrupted removal is finished next time.

use serde::Serialize;

use crate::confine::{Kind, RelPath, Tree};
use crate::crashpoint;
use crate::error::Error;
use crate::helpers::journal::{Journal, Operation, Phase};
use crate::helpers::lock::StateLock;
use crate::helpers::manifest::{self, Change, FileKind};
use crate::helpers::{
    ASIDE, DOWNLOADS, MANIFESTS, NEW_MANIFESTS, OLD_MANIFESTS, STAGING, Store, env, install, name,
};

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
    let _lock = StateLock::acquire(store)?;
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
        new_inode: None,
        new_device: None,
        pid: std::process::id(),
    };
    journal.save(store)?;
    crashpoint::reached("journal removing");
    let mut report = finish(store)?;
    report.changed = changed;
    report.removed = journal.packages;
    if purge_state {
        let state = store.state_tree()?;
        for file in ["release-dates.json", "cache"] {
            state.remove_all(&name(file))?;
        }
    }
    Ok(report)
}

/// Removes what the manifests list (idempotent), then the manifests, then the journal.
/// Everything goes through the prefix opened from the root: a symlink or a mount point
/// where a listed path's directory should be is refused, never followed.
pub(crate) fn finish(store: &Store) -> Result<RemoveReport, Error> {
    let manifests = store.installed()?;
    let mut report = RemoveReport::default();
    // Deepest paths first, so directories are empty when their turn comes.
    let mut entries: Vec<(&RelPath, bool)> = manifests
        .iter()
        .flat_map(|m| m.files.iter())
        .map(|e| (&e.path, e.kind == FileKind::Dir))
        .collect();
    entries.sort_by(|a, b| b.0.as_str().cmp(a.0.as_str()));
    entries.dedup();
    let parent = store.prefix_parent()?;
    let prefix_name = store.prefix_name()?;
    let prefix = match &parent {
        Some(parent) => parent.open_dir(&prefix_name)?,
        None => None,
    };
    if let Some(prefix) = &prefix {
        for (relative, is_dir) in entries {
            let removed = if is_dir {
                // Not empty: it holds something no manifest lists; reported below.
                prefix.remove_dir(relative)?
            } else {
                match prefix.kind(relative)? {
                    // Something replaced the file with a directory: leave the user's tree.
                    Some(Kind::Dir) | None => false,
                    Some(_) => prefix.remove_file(relative)?,
                }
            };
            if removed {
                report.paths += 1;
                crashpoint::reached("path removed");
            }
        }
        report.foreign = leftovers(prefix)?;
    }
    if let (Some(parent), true) = (&parent, report.foreign.is_empty()) {
        report.prefix_removed = parent.remove_dir(&prefix_name)?;
    }
    drop(prefix);
    crashpoint::reached("prefix removed");
    let state = store.state_tree()?;
    for dir in [MANIFESTS, NEW_MANIFESTS, OLD_MANIFESTS] {
        state.remove_dir_all(&name(dir))?;
    }
    if let Some(parent) = &parent {
        parent.remove_dir_all(&name(STAGING))?;
        parent.remove_dir_all(&name(ASIDE))?;
    }
    state.remove_dir_all(&name(DOWNLOADS))?;
    env::remove_apt_conf(store)?;
    crashpoint::reached("manifests removed");
    Journal::clear(store)?;
    Ok(report)
}

/// Every path left under `prefix`, relative to it. A mount point or a symlink is listed
/// and not entered.
fn leftovers(prefix: &Tree) -> Result<Vec<String>, Error> {
    let mut found = Vec::new();
    collect(prefix, None, &mut found, 0)?;
    found.sort();
    Ok(found)
}

/// How deep [`leftovers`] looks (each level holds an open directory).
const MAX_DEPTH: usize = 64;

fn collect(
    dir: &Tree,
    at: Option<&RelPath>,
    found: &mut Vec<String>,
    depth: usize,
) -> Result<(), Error> {
    for (entry, kind) in dir.entries()? {
        let (Ok(relative), Ok(own)) = (
            match at {
                Some(at) => at.join(&entry),
                None => RelPath::new(entry.as_str()),
            },
            RelPath::new(entry.as_str()),
        ) else {
            continue;
        };
        if kind == Kind::Dir
            && depth < MAX_DEPTH
            && let Ok(Some(inner)) = dir.open_dir(&own)
        {
            collect(&inner, Some(&relative), found, depth + 1)?;
        }
        found.push(relative.to_string());
    }
    Ok(())
}
