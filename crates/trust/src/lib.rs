//! Trust: what turns bytes from the network or from media into values the client may act
//! on. [`openpgp`] is the only way to obtain a `Verified` value (a signature checked
//! against a trusted keyring); [`fetch`] downloads with every byte counted against a cap
//! and hashed as it arrives (resume, retries, `file://` and paths); [`progress`] reports
//! long transfers to whoever draws them; [`error`] is what they fail with.

pub mod error;
pub mod fetch;
pub mod openpgp;
pub mod progress;

// The formats' vocabulary, reachable as `crate::…` inside this crate.
use ru_format::{digest, fsutil};

pub use error::Error;
