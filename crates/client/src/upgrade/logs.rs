//! The logs of an upgrade, `<root>/var/log/dist-upgrade/`: `main.log` (what the tool did
//! and why), `apt.log` (apt's messages), `apt-term.log` (everything apt, dpkg and the
//! maintainer scripts printed). A previous run's logs are moved into a folder named after
//! its start (`YYYYMMDD-HHMM`, as Ubuntu's upgrader does) so each run's story stays whole.
//!
//! The directory is opened from the root without following a symlink, rotation renames
//! only plain files inside it through that handle, and the logs are opened without
//! following a symlink: a link planted at `var/log/dist-upgrade` or `main.log` never makes
//! the tool move or append to a file elsewhere.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::confine::{Kind, RelPath, Tree};
use crate::error::Error;
use crate::root::{LOG_DIR, SystemRoot};

pub const MAIN: &str = "main.log";
pub const APT: &str = "apt.log";
pub const APT_TERM: &str = "apt-term.log";

/// The log directory of one run.
#[derive(Debug)]
pub struct Logs {
    pub dir: PathBuf,
    main: Mutex<File>,
}

impl Logs {
    /// Rotates the previous run's logs (unless `resume`, which continues them) and opens
    /// `main.log` for appending.
    pub fn open(root: &SystemRoot, resume: bool) -> Result<Self, Error> {
        let dir = root.log_dir();
        let tree = root.create_dir(LOG_DIR)?;
        if !resume {
            rotate(&tree)?;
        }
        let main = open_append(&dir.join(MAIN))?;
        Ok(Logs {
            dir,
            main: Mutex::new(main),
        })
    }

    /// Logs that go nowhere, for a dry run (which writes nothing under the root).
    pub fn discard() -> Self {
        let sink = std::fs::OpenOptions::new()
            .append(true)
            .open("/dev/null")
            .expect("/dev/null opens");
        Logs {
            dir: PathBuf::from("/dev/null"),
            main: Mutex::new(sink),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Appends a timestamped line to `main.log`.
    pub fn main(&self, line: &str) {
        let stamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f");
        if let Ok(mut f) = self.main.lock() {
            let _ = writeln!(f, "{stamp} {line}");
            let _ = f.flush();
        }
    }

    /// Opens another log of this run for appending (for apt's output).
    pub fn append(&self, name: &str) -> Result<File, Error> {
        open_append(&self.path(name))
    }
}

/// Opens a log for appending, creating it; a symlink in its place is refused.
fn open_append(path: &Path) -> Result<File, Error> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// A name in the log directory.
fn name(name: &str) -> Result<RelPath, Error> {
    RelPath::new(name).map_err(|e| Error::Refused {
        path: PathBuf::from(name),
        reason: e.to_string(),
    })
}

/// Moves the loose log files of the log directory into a dated folder, all inside it.
fn rotate(dir: &Tree) -> Result<(), Error> {
    let main = name(MAIN)?;
    if dir.kind(&main)? != Some(Kind::File) {
        return Ok(());
    }
    let started: chrono::DateTime<chrono::Utc> = std::fs::symlink_metadata(dir.display(&main))
        .and_then(|meta| meta.modified())
        .map(Into::into)
        .unwrap_or_else(|_| chrono::Utc::now());
    let stamp = started.format("%Y%m%d-%H%M").to_string();
    let mut target = name(&stamp)?;
    let mut n = 1;
    while dir.kind(&target)?.is_some() {
        n += 1;
        target = name(&format!("{stamp}-{n}"))?;
    }
    dir.create_dir_all(&target)?;
    for (entry, kind) in dir.entries()? {
        if kind == Kind::File {
            let from = name(&entry)?;
            let to = target.join(&entry).map_err(|e| Error::Refused {
                path: dir.display(&from),
                reason: e.to_string(),
            })?;
            dir.rename(&from, &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_logs_are_rotated_into_a_dated_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        let logs = Logs::open(&root, false).unwrap();
        logs.main("first run");
        std::fs::write(logs.path(APT), "apt said\n").unwrap();
        drop(logs);
        let logs = Logs::open(&root, false).unwrap();
        logs.main("second run");
        let main = std::fs::read_to_string(logs.path(MAIN)).unwrap();
        assert!(
            main.contains("second run") && !main.contains("first run"),
            "{main}"
        );
        let folders: Vec<_> = std::fs::read_dir(&logs.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .collect();
        assert_eq!(folders.len(), 1);
        let old = folders[0].path();
        assert!(
            std::fs::read_to_string(old.join(MAIN))
                .unwrap()
                .contains("first run")
        );
        assert_eq!(
            std::fs::read_to_string(old.join(APT)).unwrap(),
            "apt said\n"
        );
        // Resuming continues the same logs.
        drop(logs);
        let logs = Logs::open(&root, true).unwrap();
        logs.main("resumed");
        let main = std::fs::read_to_string(logs.path(MAIN)).unwrap();
        assert!(main.contains("second run") && main.contains("resumed"));
    }
}

#[cfg(test)]
mod confinement {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlinked_log_directory_is_refused_and_not_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join(MAIN), "someone else's\n").unwrap();
        std::fs::write(elsewhere.path().join("passwd"), "root:x:0:0\n").unwrap();
        std::fs::create_dir_all(dir.path().join("var/log")).unwrap();
        symlink(elsewhere.path(), dir.path().join("var/log/dist-upgrade")).unwrap();
        let err = Logs::open(&SystemRoot::new(dir.path()), false).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        let mut left: Vec<_> = std::fs::read_dir(elsewhere.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [MAIN, "passwd"]);
    }

    #[test]
    fn a_symlinked_log_is_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let logs = dir.path().join("var/log/dist-upgrade");
        std::fs::create_dir_all(&logs).unwrap();
        symlink(&victim, logs.join(MAIN)).unwrap();
        // Resuming (no rotation) opens main.log as it is.
        let err = Logs::open(&SystemRoot::new(dir.path()), true).unwrap_err();
        assert!(err.to_string().contains(MAIN), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        // Rotating leaves the link where it is (only plain files move).
        std::fs::remove_file(logs.join(MAIN)).unwrap();
        std::fs::write(logs.join(MAIN), "old run\n").unwrap();
        symlink(&victim, logs.join(APT)).unwrap();
        let opened = Logs::open(&SystemRoot::new(dir.path()), false).unwrap();
        opened.main("new run");
        assert!(
            std::fs::symlink_metadata(logs.join(APT))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }
}
