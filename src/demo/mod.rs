//! `release-upgrader demo`: a complete, offline upgrade of a throwaway root between two
//! tiny releases published on the spot, in a temporary directory.

pub mod repack;
pub mod run;
pub mod tiny;
