//! The distribution side: signing keys ([`key`]), relocatable helper debs built from the
//! target release's packages ([`helper`]), signed helper pockets ([`pocket`], [`archive`]),
//! meta-release files ([`metarelease`], from [`definition`]s), upgrade media ([`media`]),
//! and system-image compatible images, deltas and their server ([`image`]).
//!
//! Everything a client verifies is produced here with the same formats and checks (the
//! client's own parsers check what is written), so the two sides cannot drift apart; tests
//! and the demo publish through this crate too.

pub mod archive;
pub mod definition;
pub mod epoch;
pub mod helper;
pub mod image;
pub mod key;
pub mod media;
pub mod metarelease;
pub mod pocket;

pub use key::SigningKey;

// The crates below, reachable as `crate::…` inside this one.
use ru_client::{error, metarelease as client_metarelease, pocket as client_pocket};
use ru_format::{date, deb, digest, fsutil, json_state, layout, version};
use ru_trust::{fetch, openpgp};
