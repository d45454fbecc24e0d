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

use crate::confine::{self, Kind, RelPath, Tree};
use crate::error::Error;
use crate::root::{PREFIX, STATE_DIR, SystemRoot};

pub use install::{InstallOutcome, install};
pub use manifest::Manifest;
pub use remove::{RemoveReport, remove_all};

/// Where the new tree is built: a sibling of the prefix, so the swap is a rename.
const STAGING: &str = ".release-upgrader.staging";
/// Where the old tree is parked when the filesystem cannot exchange two names.
const ASIDE: &str = ".release-upgrader.old";
/// In the state directory: the manifests of the installed helpers, ...
const MANIFESTS: &str = "helpers";
/// ... the new ones until the swap, ...
const NEW_MANIFESTS: &str = "helpers.new";
/// ... and the previous ones while being replaced.
const OLD_MANIFESTS: &str = "helpers.old";
/// Downloaded helper debs waiting to be installed.
const DOWNLOADS: &str = "cache/debs";

/// One of the names above, as a path below its directory.
fn name(name: &str) -> RelPath {
    RelPath::new(name).expect("the helpers' own names are relative paths")
}

/// Where a system keeps its helpers and their bookkeeping.
///
/// Every path is derived from the root of this call, never read from a state file, and
/// everything removed or renamed is reached through a [`Tree`] opened from that root:
/// the directory holding the prefix, or the state directory.
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
        self.sibling(STAGING)
    }

    /// Where the old tree is parked when the filesystem cannot exchange two names.
    pub fn aside(&self) -> PathBuf {
        self.sibling(ASIDE)
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

    /// Where the new manifests wait until the swap.
    pub fn new_manifests_dir(&self) -> PathBuf {
        self.state.join(NEW_MANIFESTS)
    }

    /// Where the previous manifests go while being replaced.
    pub fn old_manifests_dir(&self) -> PathBuf {
        self.state.join(OLD_MANIFESTS)
    }

    /// Downloaded helper debs waiting to be installed.
    pub fn download_dir(&self) -> PathBuf {
        self.state.join(DOWNLOADS)
    }

    /// The prefix's directory (`usr/lib`) and the prefix's name in it, relative.
    fn prefix_parts(&self) -> Result<(RelPath, RelPath), Error> {
        let prefix = self.root.relative(PREFIX)?;
        match prefix.split_last() {
            (Some(dir), base) => Ok((name(dir), name(base))),
            (None, _) => unreachable!("the prefix is not at the top of the root"),
        }
    }

    /// The prefix's name in [`Self::prefix_parent`].
    fn prefix_name(&self) -> Result<RelPath, Error> {
        Ok(self.prefix_parts()?.1)
    }

    /// The directory holding the prefix, the staging tree and the parked old tree,
    /// opened from the root (`None` when it does not exist). `/usr` may be a filesystem
    /// of its own; below this directory, nothing is done across a mount or a symlink.
    fn prefix_parent(&self) -> Result<Option<Tree>, Error> {
        self.root.open_dir(prefix_parent_on_system())
    }

    /// [`Self::prefix_parent`], created when missing.
    fn create_prefix_parent(&self) -> Result<Tree, Error> {
        self.root.create_dir(prefix_parent_on_system())
    }

    /// The state directory, opened from the root (and created when missing).
    pub(crate) fn state_tree(&self) -> Result<Tree, Error> {
        self.root.create_dir(STATE_DIR)
    }

    /// The installed helpers (finishing or rolling back an interrupted transaction first
    /// needs the lock; this only reads).
    pub fn installed(&self) -> Result<Vec<Manifest>, Error> {
        manifest::load_all(&self.manifests_dir())
    }

    /// Whether an interrupted transaction is waiting for recovery. A journal that names
    /// what this root does not derive is refused ([`Error::BadState`]).
    pub fn interrupted(&self) -> Result<bool, Error> {
        Ok(journal::Journal::load(self)?.is_some())
    }
}

/// The directory holding the prefix, as the target system names it (`/usr/lib`).
fn prefix_parent_on_system() -> &'static Path {
    Path::new(PREFIX)
        .parent()
        .expect("the prefix is not the root")
}

/// Whether `tree` holds the directory `name` of ours: `false` when nothing is there, a
/// refusal when something else is (a symlink or a file planted where we keep a tree).
fn own_dir(tree: &Tree, name: &RelPath) -> Result<bool, Error> {
    match tree.kind(name)? {
        None => Ok(false),
        Some(Kind::Dir) => Ok(true),
        Some(other) => Err(Error::Refused {
            path: tree.display(name),
            reason: format!(
                "release-upgrader keeps a directory of its own there, but it is {}",
                match other {
                    Kind::Symlink => "a symlink (never followed)",
                    _ => "not a directory",
                }
            ),
        }),
    }
}

/// Removes a tree if it exists (a missing one is fine: removal is idempotent), without
/// following a symlink or entering another mount below `path`'s directory.
pub(crate) fn remove_tree(path: &Path) -> Result<(), Error> {
    confine::remove_all(path).map(|_| ())
}
