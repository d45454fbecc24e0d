//! apt's and dpkg's locks: who holds them, and waiting (with a limit) until nobody does.
//!
//! dpkg and apt lock with `fcntl` write locks on these files; `F_GETLK` names the holder
//! without taking the lock, so an unattended-upgrades run or a package manager GUI can be
//! named in the message instead of "could not get lock".
//!
//! A holder that descends from an earlier run of this tool that is over (an `apt-get`
//! or `dpkg` left running when the tool was killed, see [`children`]) is not waited for:
//! it is stopped, and the wait goes on. Any other holder is someone else's and only
//! waited for.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::root::SystemRoot;
use crate::upgrade::children::{self, Ended, Orphan};

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
    /// Set when it is left over from an earlier run of ours that is over.
    pub leftover: Option<Orphan>,
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
        leftover: children::orphan(query.l_pid),
    })
}

/// The first lock of the system that is held, if any.
pub fn first_holder(root: &SystemRoot) -> Option<Holder> {
    LOCK_FILES.iter().find_map(|f| holder(&root.path(f)))
}

/// What happened while waiting for the locks.
#[derive(Debug)]
pub enum LockEvent<'a> {
    /// Someone else holds a lock: waiting (told once).
    Waiting(&'a Holder),
    /// A leftover of an earlier run held a lock and was stopped.
    Cleared(&'a Holder, Ended),
}

/// How long a leftover gets to stop on SIGTERM before it is killed.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(10);

/// Waits until no lock is held, stopping leftovers of earlier runs of ours and telling
/// `event` what it does (once per holder waited for); fails after `timeout` naming the
/// holder.
pub fn wait_until_free(
    root: &SystemRoot,
    timeout: Duration,
    mut event: impl FnMut(LockEvent<'_>),
) -> Result<(), Error> {
    let start = Instant::now();
    let mut told: Option<i32> = None;
    // apt, then the dpkg it ran: a run leaves few; the bound only makes the loop finite.
    let mut clearings = 0;
    loop {
        let Some(holder) = first_holder(root) else {
            return Ok(());
        };
        if let Some(leftover) = holder.leftover.as_ref().filter(|_| clearings < 16) {
            clearings += 1;
            match children::terminate(leftover, LEFTOVER_GRACE) {
                Ok(ended) => {
                    event(LockEvent::Cleared(&holder, ended));
                    continue;
                }
                // Not ours to stop after all (EPERM): wait for it like for anyone's.
                Err(e) => log::warn!("stopping {holder}: {e}"),
            }
        }
        if start.elapsed() >= timeout {
            return Err(Error::Locked {
                path: holder.path.clone(),
                holder: holder.to_string(),
                waited: timeout.as_secs(),
            });
        }
        if told != Some(holder.pid) {
            event(LockEvent::Waiting(&holder));
            told = Some(holder.pid);
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
        // Someone else's: named, waited for, never stopped.
        assert_eq!(holder.leftover, None);
        let mut told = Vec::new();
        let err = wait_until_free(&root, Duration::from_millis(300), |e| match e {
            LockEvent::Waiting(h) => told.push(h.pid),
            LockEvent::Cleared(h, _) => panic!("stopped {h}"),
        })
        .unwrap_err();
        assert_eq!(told, [child.id() as i32]);
        assert!(child.try_wait().unwrap().is_none());
        assert!(err.to_string().contains("python"), "{err}");
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until_free(&root, Duration::from_secs(5), |_| {}).unwrap();
    }

    /// Holds an fcntl lock on `lock` from a child with `RELEASE_UPGRADER_RUN=run`.
    fn hold(lock: &Path, run: Option<&str>) -> std::process::Child {
        let mut cmd = std::process::Command::new("python3");
        cmd.args([
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
        ])
        .arg(lock)
        .stdout(std::process::Stdio::piped());
        match run {
            Some(run) => cmd.env(children::RUN_ENV, run),
            None => cmd.env_remove(children::RUN_ENV),
        };
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        child
    }

    /// The name of a run that is over: a process that has exited (and was reaped).
    fn finished_run() -> children::RunId {
        let mut done = std::process::Command::new("true").spawn().unwrap();
        let pid = done.id() as i32;
        // Exited or not, it is not reaped before wait(): its start time is readable.
        let start = children::stat(pid).unwrap().start;
        done.wait().unwrap();
        children::RunId {
            pid,
            start,
            ..children::RunId::current().unwrap()
        }
    }

    #[test]
    fn a_lock_held_by_a_leftover_of_a_finished_run_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        let lock = root.path("/var/lib/dpkg/lock-frontend");
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        std::fs::write(&lock, "").unwrap();
        let run = finished_run();
        let mut child = hold(&lock, Some(&run.to_string()));
        let holder = first_holder(&root).expect("held");
        assert_eq!(holder.leftover.as_ref().map(|o| o.run), Some(run));
        let mut events = Vec::new();
        let started = Instant::now();
        wait_until_free(&root, Duration::from_secs(60), |e| match e {
            LockEvent::Cleared(h, ended) => events.push((h.pid, ended)),
            LockEvent::Waiting(h) => panic!("waited for {h}"),
        })
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(events, [(child.id() as i32, Ended::Terminated)]);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(nix::libc::SIGTERM)
        );
    }

    #[test]
    fn a_lock_held_by_a_child_of_a_live_run_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        let lock = root.path("/var/lib/dpkg/lock");
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        std::fs::write(&lock, "").unwrap();
        // Another run that still goes on (this test process's parent stands in for it),
        // and a marker that is not a run's name at all.
        let parent = nix::unistd::getppid().as_raw();
        let live = children::RunId {
            pid: parent,
            start: children::stat(parent).unwrap().start,
            ..children::RunId::current().unwrap()
        };
        for marker in [live.to_string(), "1:1".to_owned()] {
            let mut child = hold(&lock, Some(&marker));
            assert_eq!(first_holder(&root).unwrap().leftover, None, "{marker}");
            let err = wait_until_free(&root, Duration::from_millis(300), |e| {
                if let LockEvent::Cleared(h, _) = e {
                    panic!("stopped {h}")
                }
            })
            .unwrap_err();
            assert!(matches!(err, Error::Locked { .. }), "{err}");
            assert!(child.try_wait().unwrap().is_none(), "{marker}");
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}
