//! One helper transaction at a time: an exclusive `flock` on the state directory itself
//! (a lock file would be one more file left behind).

use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;
use crate::helpers::Store;

/// Held while a transaction runs; released on drop, and by the kernel on any exit.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<std::fs::File>,
}

impl StateLock {
    /// Takes the lock on the state directory `store` keeps (created, from the root), or
    /// fails at once if another process holds it.
    pub fn acquire(store: &Store) -> Result<Self, Error> {
        let dir = store.state_tree()?;
        let path = dir.path().to_owned();
        let dir = std::fs::File::from(std::os::fd::OwnedFd::from(dir));
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StateLock { _lock: lock }),
            Err(_) => Err(Error::Config {
                path,
                reason: "another release-upgrader is working on this system; wait for it to \
                         finish"
                    .into(),
            }),
        }
    }
}
