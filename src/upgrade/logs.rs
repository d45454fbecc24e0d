//! The logs of an upgrade, `<root>/var/log/dist-upgrade/`: `main.log` (what the tool did
//! and why), `apt.log` (apt's messages), `apt-term.log` (everything apt, dpkg and the
//! maintainer scripts printed). A previous run's logs are moved into a folder named after
//! its start (`YYYYMMDD-HHMM`, as Ubuntu's upgrader does) so each run's story stays whole.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::Error;
use crate::root::SystemRoot;

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
        fs_err::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        if !resume {
            rotate(&dir)?;
        }
        let path = dir.join(MAIN);
        let main = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Logs {
            dir,
            main: Mutex::new(main),
        })
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
        let path = self.path(name);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))
    }
}

/// Moves the loose log files of `dir` into a dated folder.
fn rotate(dir: &Path) -> Result<(), Error> {
    let main = dir.join(MAIN);
    let Ok(meta) = std::fs::metadata(&main) else {
        return Ok(());
    };
    let started: chrono::DateTime<chrono::Utc> = meta
        .modified()
        .map(Into::into)
        .unwrap_or_else(|_| chrono::Utc::now());
    let mut target = dir.join(started.format("%Y%m%d-%H%M").to_string());
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = dir.join(format!("{}-{n}", started.format("%Y%m%d-%H%M")));
    }
    fs_err::create_dir(&target).map_err(|e| Error::io(&target, e))?;
    for entry in fs_err::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let path = entry.path();
        if path.is_file() {
            let dest = target.join(entry.file_name());
            fs_err::rename(&path, &dest).map_err(|e| Error::io(&path, e))?;
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
