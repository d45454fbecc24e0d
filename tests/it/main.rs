//! The integration tests, in one binary (one link, shared fixtures).

mod archive;
mod bootstrap;
mod deb;
mod debian_root;
mod fetcher;
mod image_server;
mod openpgp;
mod readme_fixture;
mod real_data;
mod support;
mod upgrade;
