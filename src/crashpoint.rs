//! Crash points: places in a transaction where a test may kill the process for real.
//!
//! Recovery code is only as good as the crashes it has survived. Each step of a journaled
//! transaction calls [`reached`]; when `RELEASE_UPGRADER_CRASH_AT=N` is set, the N-th
//! call sends the process `SIGKILL` (no destructors, no flushing: the same as a power cut
//! from the process's point of view). `RELEASE_UPGRADER_CRASH_COUNT=FILE` records how many
//! points a run passed, so a test can pick N across the whole range.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static PASSED: AtomicU64 = AtomicU64::new(0);

fn crash_at() -> Option<u64> {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    *AT.get_or_init(|| {
        std::env::var("RELEASE_UPGRADER_CRASH_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// Marks a crash point; see the module docs.
pub fn reached(_label: &str) {
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if let Ok(path) = std::env::var("RELEASE_UPGRADER_CRASH_COUNT") {
        let _ = std::fs::write(path, n.to_string());
    }
    if crash_at() == Some(n) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; wait for it to land.
        loop {
            std::thread::park();
        }
    }
}
