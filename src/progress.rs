//! Progress reporting from the library to whoever draws it.
//!
//! The library never prints: long operations report through [`Progress`], and the binary
//! decides whether that becomes progress bars (a terminal), JSON lines (`--json`) or
//! nothing (a pipe, `-q`).

/// Receives progress of long-running work. Every method has a do-nothing default.
pub trait Progress: Send + Sync {
    /// A transfer or task called `label` started; `total` is its size in bytes if known.
    fn begin(&self, _id: u64, _label: &str, _total: Option<u64>) {}
    /// `bytes` more bytes of task `id` are done.
    fn advance(&self, _id: u64, _bytes: u64) {}
    /// The task restarted from `position` (a resumed or restarted download).
    fn reset(&self, _id: u64, _position: u64) {}
    /// Task `id` ended, successfully or not.
    fn finish(&self, _id: u64, _ok: bool) {}
    /// A step of the overall operation, such as "Verifying the helper pocket".
    fn step(&self, _text: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}

/// Hands out ids for [`Progress`] tasks.
pub fn next_task_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
