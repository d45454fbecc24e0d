//! Crash points: places in a transaction where a test may kill the process for real.
//!
//! Recovery code is only as good as the crashes it has survived. Each step of a journaled
//! transaction calls [`reached`]; when `RELEASE_UPGRADER_CRASH_AT=N` is set, the N-th
//! call sends the process `SIGKILL` (no destructors, no flushing: the same as a power cut
//! from the process's point of view); `RELEASE_UPGRADER_CRASH_AT=LABEL:N` counts only the
//! points with that label. `RELEASE_UPGRADER_CRASH_COUNT=FILE` records how many points a
//! run passed, so a test can pick N across the whole range.
//!
//! Only builds with the `crashpoints` feature have them (`cargo test` turns it on, and the
//! fault campaign builds with it); in a release build [`reached`] is an empty inline
//! function and the environment variables mean nothing.

/// Marks a crash point; without the `crashpoints` feature, nothing.
#[cfg(not(feature = "crashpoints"))]
#[inline(always)]
pub fn reached(_label: &str) {}

#[cfg(feature = "crashpoints")]
pub use armed::reached;

#[cfg(feature = "crashpoints")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static PASSED: AtomicU64 = AtomicU64::new(0);
    static PASSED_LABEL: AtomicU64 = AtomicU64::new(0);

    /// The crash point to die at: an optional label and a count.
    fn crash_at() -> &'static Option<(Option<String>, u64)> {
        static AT: OnceLock<Option<(Option<String>, u64)>> = OnceLock::new();
        AT.get_or_init(|| {
            let value = std::env::var("RELEASE_UPGRADER_CRASH_AT").ok()?;
            match value.rsplit_once(':') {
                Some((label, n)) => Some((Some(label.to_owned()), n.parse().ok()?)),
                None => Some((None, value.parse().ok()?)),
            }
        })
    }

    /// Marks a crash point; see the module docs.
    pub fn reached(label: &str) {
        let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(path) = std::env::var("RELEASE_UPGRADER_CRASH_COUNT") {
            let _ = std::fs::write(path, n.to_string());
        }
        let die = match crash_at() {
            Some((None, at)) => *at == n,
            Some((Some(wanted), at)) if wanted == label => {
                PASSED_LABEL.fetch_add(1, Ordering::SeqCst) + 1 == *at
            }
            _ => false,
        };
        if die {
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
            // SIGKILL cannot be caught; wait for it to land.
            loop {
                std::thread::park();
            }
        }
    }
}
