//! release-upgrader upgrades Debian and Ubuntu systems to the next release with the
//! *target* release's own apt and dpkg, fetched as signed `release-upgrader-*` helper
//! packages into a private prefix (Ubuntu's UpdateManagerArchDependent spec).
//!
//! The contract between server and client is PROTOCOL.md; this crate holds both sides.
//! Data flows parse → plan (pure) → execute; the system root, the network and
//! subprocesses are reached through [`root::SystemRoot`], [`fetch::Fetcher`] and friends
//! so tests can point them at a temp dir and a local server.

pub mod cdrom;
pub mod cli;
pub mod client;
pub mod confine;
pub mod crashpoint;
pub mod date;
pub mod deb;
pub mod demo;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod fsutil;
pub mod helpers;
pub mod image;
pub mod ini;
pub mod layout;
pub mod metarelease;
pub mod openpgp;
pub mod os_release;
pub mod pocket;
pub mod progress;
pub mod publish;
pub mod resolve;
pub mod root;
pub mod serve;
pub mod state;
pub mod upgrade;
pub mod version;

pub use error::{Error, ExitCode};
