//! The integration tests, in one binary (one link, shared fixtures).

mod archive;
mod bootstrap;
mod cli_docs;
mod core_helper;
mod deb;
mod debian_package;
mod debian_root;
mod debian_upgrade;
mod demo;
mod events;
mod faults;
mod fetcher;
mod helper_build;
mod image_client;
mod image_safety;
mod image_server;
mod interactive;
mod media;
mod openpgp;
mod prefetch;
mod publish;
mod readme_fixture;
mod real_data;
mod state_files;
mod support;
mod upgrade;
