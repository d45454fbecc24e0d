//! The formats of image-delta mode (docs/protocol.md §5) that both sides share: the tar
//! members of an image and their checks ([`extract`]), and the patch formats a zdelta
//! carries for gzip members ([`regzip`], [`gztokens`]) with their rebuilds ([`rebuilds`]),
//! and the conversions of x86-64 code that patches are made in ([`branches`]).

pub mod branches;
pub mod extract;
pub mod gztokens;
pub mod rebuilds;
pub mod regzip;
