//! The helper prefix, `/usr/lib/release-upgrader`: installing the target release's helper
//! packages as one transaction, listing them, removing them, and running with them.
//!
//! The prefix is only ever replaced whole. A new tree is built next to it (same
//! filesystem), synced, and exchanged with the old one by a single `renameat2(EXCHANGE)`,
//! so at every instant the prefix is a complete old or a complete new set of helpers. The
//! journal (`journal.rs`) ties the swap to the manifests in the state directory, which may
//! live on another filesystem, so an interrupted run is rolled back or finished by the next.

pub mod env;
pub mod install;
pub mod journal;
pub mod lock;
pub mod manifest;
pub mod remove;

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::root::SystemRoot;

pub use install::{InstallOutcome, install};
pub use manifest::Manifest;
pub use remove::{RemoveReport, remove_all};

/// Where a system keeps its helpers and their bookkeeping.
#[derive(Clone, Debug)]
pub struct Store {
    pub root: SystemRoot,
    /// `<root>/var/lib/release-upgrader`
    pub state: PathBuf,
    /// `<root>/usr/lib/release-upgrader`
    pub prefix: PathBuf,
}

impl Store {
    pub fn new(root: &SystemRoot) -> Self {
        Store {
            root: root.clone(),
            state: root.state_dir(),
            prefix: root.prefix(),
        }
    }

    /// Where the new tree is built: a sibling of the prefix, so the swap is a rename.
    pub fn staging(&self) -> PathBuf {
        self.sibling(".release-upgrader.staging")
    }

    /// Where the old tree is parked when the filesystem cannot exchange two names.
    pub fn aside(&self) -> PathBuf {
        self.sibling(".release-upgrader.old")
    }

    fn sibling(&self, name: &str) -> PathBuf {
        self.prefix
            .parent()
            .map(|p| p.join(name))
            .unwrap_or_else(|| PathBuf::from(name))
    }

    pub fn manifests_dir(&self) -> PathBuf {
        manifest::dir(&self.state)
    }

    /// Downloaded helper debs waiting to be installed.
    pub fn download_dir(&self) -> PathBuf {
        self.state.join("cache/debs")
    }

    /// The installed helpers (finishing or rolling back an interrupted transaction first
    /// needs the lock; this only reads).
    pub fn installed(&self) -> Result<Vec<Manifest>, Error> {
        manifest::load_all(&self.manifests_dir())
    }

    /// Whether an interrupted transaction is waiting for recovery.
    pub fn interrupted(&self) -> Result<bool, Error> {
        Ok(journal::Journal::load(&self.state)?.is_some())
    }
}

/// Removes a tree if it exists (a missing one is fine: removal is idempotent).
pub(crate) fn remove_tree(path: &Path) -> Result<(), Error> {
    match fs_err::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs_err::remove_dir_all(path).map_err(|e| Error::io(path, e)),
        Ok(_) => fs_err::remove_file(path).map_err(|e| Error::io(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}
