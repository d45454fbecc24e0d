//! Image-delta mode (docs/protocol.md §5, §6): system-image compatible updates for read-only
//! devices, and the switch between image updates and apt.
//!
//! [`config`] reads the device's system-image configuration, [`keyring`] the signed
//! keyring chain, [`index`] and [`plan`] the server's documents and the path to take,
//! [`client`] fetches and verifies, [`extract`] and [`overlay`] stage a path's tarballs
//! with every member checked, [`apply`] commits the result under a journal, [`mode`]
//! decides between apt and images, and [`optout`] moves a device between them, with the
//! apt sources [`archive`] reads and verifies from the release's mirror.

pub mod apply;
pub mod archive;
pub mod client;
pub mod commit;
pub mod config;
pub mod index;
pub mod keyring;
pub mod mode;
pub mod optout;
pub mod overlay;
pub mod plan;

// The formats shared with the publisher.
pub use ru_format::image::{extract, gztokens, rebuilds, regzip};

use std::path::{Path, PathBuf};

use crate::confine::RelPath;
use crate::error::Error;
use crate::root::SystemRoot;

/// Where image mode keeps its state, relative to the root.
pub const STATE_DIR: &str = "var/lib/release-upgrader/image";

/// Where image mode keeps its state: `<root>/var/lib/release-upgrader/image/`. The
/// paths its state files name are relative to the root (or to this directory), so the
/// files mean the same inside a chroot and from outside it with `--root`.
#[derive(Clone, Debug)]
pub struct Layout {
    root: SystemRoot,
    dir: PathBuf,
}

impl Layout {
    pub fn new(root: &SystemRoot) -> Layout {
        Layout {
            root: root.clone(),
            dir: root.dir().join(STATE_DIR),
        }
    }

    pub fn root(&self) -> &SystemRoot {
        &self.root
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// [`Self::dir`] relative to the root.
    pub fn rel(&self) -> RelPath {
        RelPath::new(STATE_DIR).expect("a plain relative path")
    }

    /// Downloaded image files and their signatures.
    pub fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// The verified keyrings of the last check (for `--recovery`).
    pub fn keyrings(&self) -> PathBuf {
        self.dir.join("keyrings")
    }

    /// The overlay being built for the system tree.
    pub fn staging(&self) -> PathBuf {
        self.dir.join("staging")
    }

    /// [`Self::staging`] relative to the root.
    pub fn staging_rel(&self) -> RelPath {
        self.rel().join("staging").expect("a plain name")
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal")
    }

    pub fn opt_out(&self) -> PathBuf {
        self.dir.join("opt-out.json")
    }
}

/// The file name of a server path (`/pool/x.tar.xz` → `x.tar.xz`), refusing names
/// that could not be a plain file in the cache.
pub fn file_name(server_path: &str, what: &str) -> Result<String, Error> {
    let name = server_path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." || name.starts_with('.') {
        return Err(Error::Malformed {
            what: what.to_owned(),
            reason: format!("file path {server_path:?} has no usable file name"),
        });
    }
    Ok(name.to_owned())
}
