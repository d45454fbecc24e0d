//! The server side of image-delta mode (docs/protocol.md §5): system-image compatible full
//! images, version tarballs, keyrings, deltas, our `zdelta` type, and the signed server
//! tree that the system-image client and `release-upgrader image` read.
//!
//! Every image this module writes lists its entries in one order
//! ([`ru_format::tarfile::cmp_paths`]: depth first, names by bytes), so that two images
//! can be compared as streams. Images are read and written through ru-format's one tar
//! layer ([`ru_format::tarfile`]).

pub mod bases;
pub mod build;
pub mod delta;
pub mod keyring;
pub mod output;
pub mod server;
pub mod source;
pub mod zdelta;
