//! The two binaries' front ends: parse arguments, run a command from the library,
//! render its result, and map failures to the exit codes of PROTOCOL.md §7.

pub mod args;
mod client;
mod deb;
mod demo;
mod helper;
pub mod image;
pub mod image_publish;
mod pocket;
mod publish;
pub mod ui;

pub use client::main as client_main;
pub use publish::main as publish_main;
