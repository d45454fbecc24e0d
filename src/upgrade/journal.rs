//! The journal of an upgrade, `<state>/upgrade.json`: how far the upgrade got, so that
//! a killed or powered-off upgrade is recognised by the next run and resumed (once
//! packages started changing) or undone (before that).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::fsutil;

/// Steps of an upgrade, in order. Everything before `Installing` can be undone exactly
/// (sources restored from their backups, helpers removed); from `Installing` on, dpkg
/// may have unpacked packages and the way out is forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Helpers installed; the system is otherwise untouched.
    Prepared,
    /// Sources are being or have been rewritten (backups exist for `sources`).
    SourcesRewritten,
    /// The target's indices are downloaded and the plan accepted.
    Planned,
    /// Every package is downloaded.
    Downloaded,
    /// dpkg is changing the system.
    Installing,
    /// Packages are upgraded; obsolete packages and helpers are being removed.
    Installed,
}

/// An upgrade in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeJournal {
    pub from: String,
    pub to: String,
    pub to_version: String,
    pub phase: Phase,
    /// Sources files rewritten (each has a `.distUpgrade` backup until the upgrade ends).
    pub sources: Vec<PathBuf>,
    /// A sources file added for upgrade media, removed on rollback.
    pub media_source: Option<PathBuf>,
    /// Upgrade media in use.
    pub cdrom: Option<PathBuf>,
    /// Installed packages that came from the distribution before the upgrade: the ones
    /// that may be purged as obsolete afterwards.
    pub from_distribution: Vec<String>,
    /// Obsolete packages that leave with the upgrade's own apt run (their configuration
    /// is purged after); kept so that a resumed run does the same.
    #[serde(default)]
    pub obsolete: Vec<String>,
    /// The upgrade's apt run also removes what nothing needs any more (`--autoremove`).
    #[serde(default)]
    pub autoremove: bool,
    pub started: String,
}

pub fn path(state: &Path) -> PathBuf {
    state.join("upgrade.json")
}

impl UpgradeJournal {
    pub fn load(state: &Path) -> Result<Option<Self>, Error> {
        let path = path(state);
        match fs_err::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Config {
                    path,
                    reason: format!("unreadable upgrade journal: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    pub fn save(&self, state: &Path) -> Result<(), Error> {
        fsutil::write_atomic(
            &path(state),
            &serde_json::to_vec_pretty(self).expect("journal serialises"),
        )
    }

    /// Moves to `phase` and records it durably.
    pub fn advance(&mut self, state: &Path, phase: Phase) -> Result<(), Error> {
        self.phase = phase;
        self.save(state)?;
        crate::crashpoint::reached("upgrade phase");
        Ok(())
    }

    pub fn clear(state: &Path) -> Result<(), Error> {
        crate::helpers::remove_tree(&path(state))
    }
}
