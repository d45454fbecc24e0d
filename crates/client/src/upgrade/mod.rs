//! The release upgrade itself (docs/protocol.md §1–4): preflight, sources, the run with the
//! target release's apt and dpkg, logs and recovery.

pub mod apt;
pub mod children;
pub mod dpkg_status;
pub mod freshness;
pub mod journal;
pub mod locks;
pub mod logs;
pub mod mode;
pub mod obsolete;
pub mod pending;
pub mod plan;
pub mod prefetch;
pub mod pty;
pub mod run;
pub mod sources;
pub mod statoverride;
pub mod term;
