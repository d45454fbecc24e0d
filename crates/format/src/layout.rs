//! The layout of the helper prefix: the contract between the publisher, which lays out
//! `release-upgrader-*` packages, and the client, which runs what they ship.
//!
//! Every helper ships its files under [`PREFIX_IN_DEB`]. Inside the prefix:
//!
//! | path | what |
//! |---|---|
//! | `root/` | the relocated upstream tree of the target release (programs, libraries, the dynamic loader) |
//! | `bin/` | entry points: `apt`, `apt-get`, `apt-cache`, `apt-config`, `apt-mark`, `dpkg`, `dpkg-query`, `dpkg-deb`, `dpkg-split`, `dpkg-divert`, `dpkg-trigger`, `dpkg-statoverride`, `tar`, `gpgv`, … |
//! | `methods/` | entry points for apt's acquire methods (`http`, `https`, `file`, `copy`, `store`, `gpgv`, …), named as apt expects; each sees its own name as `argv[0]` |
//! | `dpkg-path/` | only `dpkg-deb`, `dpkg-split` and `tar`: what dpkg, and the maintainer scripts it runs, find on `PATH` |
//!
//! An entry point is either a loader wrapper or an ELF file patched to use the bundled
//! loader; the client only runs them by these names and never sets `LD_LIBRARY_PATH`.

/// Where helper packages install, relative to the system root.
pub const PREFIX_IN_DEB: &str = "usr/lib/release-upgrader";
/// The relocated upstream tree.
pub const ROOT: &str = "root";
/// Entry points of programs.
pub const BIN: &str = "bin";
/// Entry points of apt's acquire methods (`Dir::Bin::Methods`).
pub const METHODS: &str = "methods";
/// The only programs dpkg and maintainer scripts find from the helpers on `PATH`.
pub const DPKG_PATH: &str = "dpkg-path";
/// Programs that must be in [`DPKG_PATH`].
pub const DPKG_PATH_PROGRAMS: [&str; 3] = ["dpkg-deb", "dpkg-split", "tar"];
/// The helper that may carry a newer `release-upgrader` (`bin/release-upgrader`).
pub const CORE_PACKAGE: &str = "release-upgrader-core";

/// The prefix every helper package name carries.
pub const HELPER_PREFIX: &str = "release-upgrader-";

/// Whether `name` is a helper package name: [`HELPER_PREFIX`] followed by at least one
/// more character. The one rule the publisher (recipes, meta-release), the package
/// policy and the client's resolver apply.
pub fn is_helper_name(name: &str) -> bool {
    name.strip_prefix(HELPER_PREFIX)
        .is_some_and(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_names_carry_the_prefix_and_something_after_it() {
        assert!(is_helper_name("release-upgrader-core"));
        assert!(is_helper_name(CORE_PACKAGE));
        assert!(is_helper_name("release-upgrader-x"));
    }

    #[test]
    fn the_bare_prefix_and_other_names_are_not_helper_names() {
        for name in [
            "release-upgrader-",
            "release-upgrader",
            "apt",
            "",
            "xrelease-upgrader-core",
            "Release-Upgrader-core",
        ] {
            assert!(!is_helper_name(name), "{name:?}");
        }
    }
}
