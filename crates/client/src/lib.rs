//! The client: everything that runs as root on the machine being upgraded, and nothing
//! else. It depends on the formats and on trust, never on the publisher or the test
//! fixtures (the workspace's dependency graph enforces it).
//!
//! The apt flow, in order: [`session`] (one root, its keyrings, a fetcher) →
//! [`metarelease`] (which release is next) → [`pocket`] (the signed helper pocket) →
//! [`resolve`] (the helper set) → [`helpers`] (their journaled install into the prefix,
//! the re-exec with them) → [`upgrade`] (preflight → plan → execute with the target's apt
//! and dpkg) and [`cdrom`] for upgrade media.
//!
//! The image flow, in order: [`image`] — config → keyrings → index → path → download →
//! apply, and the opt-out back to apt.
//!
//! Beneath both: [`root`] (the system, reached through one seam), [`confine`] (every
//! path derived from the root and re-checked), [`state`] (what is remembered between
//! runs), [`crashpoint`] (where tests kill the process) and [`ui`] (text or JSON lines).

pub mod session;

pub mod metarelease;
pub mod notify;
pub mod pocket;
pub mod resolve;

pub mod helpers;
pub mod upgrade;

pub mod cdrom;
pub mod image;

pub mod confine;
pub mod crashpoint;
pub mod events;
pub mod reboot;
pub mod release_notes;
pub mod root;
pub mod service;
pub mod state;
pub mod task;
pub mod ui;

pub mod error;

// The crates below, reachable as `crate::…` inside this one.
use ru_format::{date, deb, digest, fsutil, ini, json_state, layout, os_release, version};
use ru_trust::{fetch, openpgp, progress};

pub use error::{Error, ExitCode};
