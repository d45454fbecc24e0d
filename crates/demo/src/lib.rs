//! `release-upgrader demo`: a complete, offline upgrade of a throwaway root between two
//! tiny releases published on the spot, in a temporary directory.

pub mod repack;
pub mod run;
pub mod tiny;

// The crates below, reachable as `crate::…` inside this one.
use ru_client::{error, root, upgrade};
use ru_format::{date, deb, fsutil, layout};
use ru_trust::{fetch, openpgp};
