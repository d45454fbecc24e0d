//! Image-delta mode (PROTOCOL §5, §6): system-image compatible updates for read-only
//! devices, and the switch between image updates and apt.
//!
//! [`config`] reads the device's system-image configuration, [`keyring`] the signed
//! keyring chain, [`index`] and [`plan`] the server's documents and the path to take,
//! [`client`] fetches and verifies, [`extract`] and [`overlay`] stage a path's tarballs
//! with every member checked, [`apply`] commits the result under a journal, [`mode`]
//! decides between apt and images, and [`optout`] moves a device between them.

pub mod apply;
pub mod client;
pub mod config;
pub mod extract;
pub mod gztokens;
pub mod index;
pub mod keyring;
pub mod mode;
pub mod optout;
pub mod overlay;
pub mod plan;
pub mod rebuilds;
pub mod regzip;

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::root::SystemRoot;

/// Where image mode keeps its state: `<root>/var/lib/release-upgrader/image/`.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn new(root: &SystemRoot) -> Layout {
        Layout {
            dir: root.state_dir().join("image"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
