//! apt's and dpkg's locks: who holds them, and waiting (with a limit) until nobody does.
//!
//! dpkg and apt lock with `fcntl` write locks on these files; `F_GETLK` names the holder
//! without taking the lock, so an unattended-upgrades run or a package manager GUI can be
//! named in the message instead of "could not get lock".

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::root::SystemRoot;

/// The lock files apt and dpkg take, under the system root.
pub const LOCK_FILES: [&str; 4] = [
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
];

/// A process holding one of the locks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub path: PathBuf,
    pub pid: i32,
    /// Its command name, from `/proc/<pid>/comm`.
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {}) holds {}",
            self.command,
            self.pid,
            self.path.display()
        )
    }
}

/// Who holds the write lock on `path`, if anyone.
pub fn holder(path: &Path) -> Option<Holder> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ok()?;
    let mut query = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_GETLK(&mut query)).ok()?;
    if query.l_type == nix::libc::F_UNLCK as i16 {
        return None;
    }
    let command = std::fs::read_to_string(format!("/proc/{}/comm", query.l_pid))
        .map(|c| c.trim().to_owned())
        .unwrap_or_else(|_| "another process".into());
    Some(Holder {
        path: path.to_owned(),
        pid: query.l_pid,
        command,
    })
}

/// The first lock of the system that is held, if any.
pub fn first_holder(root: &SystemRoot) -> Option<Holder> {
    LOCK_FILES.iter().find_map(|f| holder(&root.path(f)))
}

/// Waits until no lock is held, telling `waiting` once who is in the way; fails after
/// `timeout` naming the holder.
pub fn wait_until_free(
    root: &SystemRoot,
    timeout: Duration,
    mut waiting: impl FnMut(&Holder),
) -> Result<(), Error> {
    let start = Instant::now();
    let mut told = false;
    loop {
        let Some(holder) = first_holder(root) else {
            return Ok(());
        };
        if start.elapsed() >= timeout {
            return Err(Error::Locked {
                path: holder.path.clone(),
                holder: holder.to_string(),
                waited: timeout.as_secs(),
            });
        }
        if !told {
            waiting(&holder);
            told = true;
        }
        std::thread::sleep(Duration::from_millis(250).min(timeout));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_holder_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        let lock = root.path("/var/lib/dpkg/lock");
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        std::fs::write(&lock, "").unwrap();
        assert_eq!(first_holder(&root), None);
        // flock(1) would take a different kind of lock; hold an fcntl lock from a child.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)",
            ])
            .arg(&lock)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let holder = first_holder(&root).expect("held");
        assert_eq!(holder.pid, child.id() as i32);
        assert!(holder.command.starts_with("python"), "{holder}");
        let mut told = Vec::new();
        let err =
            wait_until_free(&root, Duration::from_millis(300), |h| told.push(h.pid)).unwrap_err();
        assert_eq!(told, [child.id() as i32]);
        assert!(err.to_string().contains("python"), "{err}");
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until_free(&root, Duration::from_secs(5), |_| {}).unwrap();
    }
}
