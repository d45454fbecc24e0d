//! The distribution side: signing keys, signed helper pockets and meta-release files.
//!
//! Everything a client verifies is produced here with the same formats and checks, so the
//! two sides cannot drift apart; tests and the demo publish through this module too.

pub mod archive;
pub mod definition;
pub mod helper;
pub mod image;
pub mod key;
pub mod metarelease;
pub mod pocket;

pub use key::SigningKey;
