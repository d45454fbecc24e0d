//! The formats release-upgrader reads and writes, as pure code: no network, no system
//! state, nothing that needs root. Every reader here takes hostile input (a .deb, a tar
//! member, a patch, a date) and either returns a checked value or an [`Error`] that names
//! what was wrong; the writers produce exactly what the readers accept.
//!
//! - values: [`version`] (dpkg's order), [`date`], [`digest`], [`ini`], [`os_release`];
//! - archives: [`tarfile`] (the one tar reader and the one tar writer) and [`compress`]
//!   (the one decompression layer), under both the .debs and the images;
//! - packages: [`deb`] (ar, control, paths, extraction, the writer of .debs) and
//!   [`layout`], the helper prefix both sides agree on;
//! - image updates: [`image`] (the checks of tar members, the zdelta, gzip-token and
//!   regzip patch formats, their rebuilds);
//! - [`fsutil`]: the one crash-safe file replacement every crate writes through;
//! - [`error`]: the exit codes, the trait every crate's error enum implements, and the
//!   formats' own errors.

pub mod compress;
pub mod date;
pub mod deb;
pub mod digest;
pub mod error;
pub mod fsutil;
pub mod image;
pub mod ini;
pub mod json_state;
pub mod layout;
pub mod os_release;
pub mod tarfile;
pub mod version;

pub use error::{Error, ExitCode, UserError};
