//! One helper transaction at a time: an exclusive `flock` on the state directory itself
//! (a lock file would be one more file left behind).

use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;

/// Held while a transaction runs; released on drop, and by the kernel on any exit.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<std::fs::File>,
}

impl StateLock {
    /// Takes the lock, or fails at once if another process holds it.
    pub fn acquire(state: &Path) -> Result<Self, Error> {
        fs_err::create_dir_all(state).map_err(|e| Error::io(state, e))?;
        let dir = std::fs::File::open(state).map_err(|e| Error::io(state, e))?;
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StateLock { _lock: lock }),
            Err(_) => Err(Error::Config {
                path: state.to_owned(),
                reason: "another release-upgrader is working on this system; wait for it to \
                         finish"
                    .into(),
            }),
        }
    }
}
