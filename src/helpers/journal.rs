//! The on-disk journal of a helper transaction, `<state>/journal.json`.
//!
//! A `Drop` does not run after `kill -9` or a power cut, so every transaction writes
//! down where it is before each step that changes the system, and every later run starts
//! by reading it back: an interrupted install is rolled back if the new tree never
//! replaced the prefix, and finished if it did; an interrupted removal is finished.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::fsutil;

/// What the transaction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Install,
    Remove,
}

/// How far it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The new tree is being built in `staging`; nothing outside it changed.
    Staging,
    /// The new tree is complete and synced, its manifests are in `new_manifests`;
    /// the swap may or may not have happened (compare the prefix's inode).
    Staged,
    /// The prefix is the new tree; what is left is bookkeeping.
    Swapped,
    /// Installed files are being removed, as listed by the manifests of `packages`.
    Removing,
}

/// One transaction in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub operation: Operation,
    pub phase: Phase,
    /// Packages the transaction installs or removes.
    pub packages: Vec<String>,
    /// Sibling of the prefix where the new tree is built (and where the old tree lands
    /// after the swap).
    pub staging: PathBuf,
    /// Where the new manifests wait until the swap.
    pub new_manifests: PathBuf,
    /// Where the previous manifests go while being replaced.
    pub old_manifests: PathBuf,
    /// Inode of the new tree, set once it is complete: after a crash, the prefix having
    /// this inode means the swap happened.
    pub new_inode: Option<u64>,
    /// Process that wrote it, for messages.
    pub pid: u32,
}

/// Path of the journal in a state dir.
pub fn path(state: &Path) -> PathBuf {
    state.join("journal.json")
}

impl Journal {
    /// Reads the journal, if a transaction was interrupted.
    pub fn load(state: &Path) -> Result<Option<Journal>, Error> {
        let path = path(state);
        match fs_err::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Config {
                    path,
                    reason: format!(
                        "unreadable transaction journal ({e}); the helper prefix may need manual \
                     inspection"
                    ),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Writes the journal durably (temp file, fsync, rename, fsync dir).
    pub fn save(&self, state: &Path) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(self).expect("journal serialises");
        fsutil::write_atomic(&path(state), &json)
    }

    /// Ends the transaction.
    pub fn clear(state: &Path) -> Result<(), Error> {
        let path = path(state);
        match fs_err::remove_file(&path) {
            Ok(()) => fsutil::sync_dir(state).map_err(|e| Error::io(state, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}
