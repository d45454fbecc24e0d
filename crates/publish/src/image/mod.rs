//! The server side of image-delta mode (PROTOCOL.md §5): system-image compatible full
//! images, version tarballs, keyrings, deltas, our `zdelta` type, and the signed server
//! tree that the system-image client and `release-upgrader image` read.
//!
//! Every image this module writes lists its entries in one order ([`tar::cmp_paths`]:
//! depth first, names by bytes), so that two images can be compared as streams.

pub mod bases;
pub mod build;
pub mod delta;
pub mod keyring;
pub mod output;
pub mod server;
pub mod source;
pub mod tar;
pub mod zdelta;
