//! Progress reporting from the library to whoever draws it.
//!
//! The library never prints: long operations report through [`Progress`], and the binary
//! decides whether that becomes progress bars (a terminal), JSON lines (`--json`) or
//! nothing (a pipe, `-q`).

/// What a task counts: its `total` and positions are in this unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A transfer: bytes.
    Bytes,
    /// apt's or dpkg's work: packages (the worker also reports a percent).
    Packages,
}

impl Unit {
    /// The unit's name in `--json` progress events.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Packages => "packages",
        }
    }
}

/// Receives progress of long-running work. Every method has a do-nothing default.
pub trait Progress: Send + Sync {
    /// A transfer or task called `label` started; `total` is its size in bytes if known.
    fn begin(&self, _id: u64, _label: &str, _total: Option<u64>) {}
    /// A task counted in `unit` started ([`Progress::begin`] is this in bytes).
    fn begin_in(&self, id: u64, label: &str, total: Option<u64>, _unit: Unit) {
        self.begin(id, label, total);
    }
    /// Task `id` is at `done` units, `percent` of the whole as the worker reports it
    /// (apt's own percent, which weighs unpacking and configuring), on `item` (a
    /// package name, or empty).
    fn at(&self, _id: u64, _done: u64, _percent: f64, _item: &str) {}
    /// `bytes` more bytes of task `id` are done.
    fn advance(&self, _id: u64, _bytes: u64) {}
    /// The task restarted from `position` (a resumed or restarted download).
    fn reset(&self, _id: u64, _position: u64) {}
    /// Task `id` ended, successfully or not.
    fn finish(&self, _id: u64, _ok: bool) {}
    /// A step of the overall operation, such as "Verifying the helper pocket".
    fn step(&self, _text: &str) {}
    /// `true` while a question is on the terminal: bars are hidden so the question and
    /// its answer stay readable; `false` draws them again.
    fn hold(&self, _held: bool) {}
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

/// Sizes as people read them (kB, MB: powers of 1000, as apt prints them).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_like_apts() {
        assert_eq!(super::human_size(999), "999 B");
        assert_eq!(super::human_size(831_000), "831.0 kB");
        assert_eq!(super::human_size(36_000_000), "36.0 MB");
    }
}
