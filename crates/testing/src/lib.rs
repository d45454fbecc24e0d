//! What the tests and the demo stand on, never linked into the client: [`serve`], the
//! fixture HTTP server on 127.0.0.1 that misbehaves on request, and [`dbus`], a private
//! message bus.

pub mod dbus;
pub mod serve;

pub use serve::{Fault, Server};
