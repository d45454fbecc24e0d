//! The core helper, `release-upgrader-core`: the upgrader itself, packaged beside the
//! target release's apt and dpkg so that an N → N+1 upgrade runs N+1's upgrade logic
//! (what Ubuntu's dist-upgrader tarball is for; docs/protocol.md §3 and §4).
//!
//! The `release-upgrader` binary is built for the target release: it links that
//! release's C library, which the system being upgraded may not have. So it is laid out
//! like every other helper program: the file goes into the relocated tree
//! (`root/usr/bin/release-upgrader`), its libraries are resolved inside the target's
//! unpacked packages by the same ELF closure, and its entry point `bin/release-upgrader`
//! is the same loader wrapper. The loader and the shared libraries stay in the runtime
//! helper, which the core depends on (exact version), as the other helpers do. A static
//! binary would need none of that, but it would be built against a C library of its own
//! choosing instead of the target's, and glibc's static NSS and `dlopen` do not work
//! across releases; one arrangement for every helper is also one thing to verify.
//!
//! Before anything is written the binary is run once through the bundled loader and
//! libraries (`--version`): a binary built against a newer C library than the target's
//! fails here, not on the user's system. Its answer is the package version unless one is
//! given; when it cannot run on the building machine at all (another architecture) a
//! version must be given.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::layout;
use crate::version::Version;

use super::Unpacked;
use super::recipe::{HelperRecipe, Ship};

/// Where the binary goes in the relocated tree (relative to `root/`).
pub const PROGRAM: &str = "usr/bin/release-upgrader";

/// The name the binary is known by: its entry point, and the "upstream package" its file
/// is attributed to in `X-Release-Upgrader-Upstream`.
pub const NAME: &str = "release-upgrader";

/// The core helper to build beside a recipe's helpers.
#[derive(Clone, Debug)]
pub struct CoreRequest<'a> {
    /// The `release-upgrader` binary, built for the target release and architecture.
    pub binary: &'a Path,
    /// The package version; `None`: what the binary prints for `--version`.
    pub version: Option<&'a str>,
}

/// The recipe entry of the core helper (its version is filled in once known).
pub(super) fn recipe() -> HelperRecipe {
    HelperRecipe {
        name: layout::CORE_PACKAGE.to_owned(),
        version_from: NAME.to_owned(),
        upstream: vec![NAME.to_owned()],
        ship: Ship::All,
        shared_libraries: false,
        bin: vec![NAME.to_owned()],
        dpkg_path: Vec::new(),
        methods: None,
        depends: Vec::new(),
        description: "release-upgrader, the upgrader of the target release itself".to_owned(),
        version: None,
    }
}

/// Puts the binary into the unpacked tree as the file of the pseudo-package [`NAME`]. Its
/// mtime is the newest of the upstream files, so a build without `SOURCE_DATE_EPOCH` stays
/// as reproducible as one without the core.
pub(super) fn add_to_tree(unpacked: &mut Unpacked, request: &CoreRequest<'_>) -> Result<(), Error> {
    let binary = request.binary;
    if !super::elf::is_elf(binary)? {
        return Err(Error::Config {
            path: binary.to_owned(),
            reason: "not an ELF program: --core takes the release-upgrader binary".into(),
        });
    }
    if unpacked.versions.contains_key(NAME) {
        return Err(Error::Config {
            path: binary.to_owned(),
            reason: format!("the archive's packages already include one named {NAME}"),
        });
    }
    let target = unpacked.tree.join(PROGRAM);
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(Error::Config {
            path: binary.to_owned(),
            reason: format!("the target's packages already ship {PROGRAM}"),
        });
    }
    if let Some(parent) = target.parent() {
        fs_err::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    fs_err::copy(binary, &target).map_err(|e| Error::io(&target, e))?;
    let mtime = unpacked.meta.values().map(|m| m.1).max().unwrap_or(0);
    unpacked.owners.insert(PROGRAM.to_owned(), NAME.to_owned());
    unpacked.meta.insert(PROGRAM.to_owned(), (0o755, mtime));
    Ok(())
}

/// Runs the core as a user's system will (the bundled loader, `--library-path`, nothing
/// from the environment's library settings) and decides its package version.
pub(super) fn version(
    request: &CoreRequest<'_>,
    tree: &Path,
    loader: &str,
    directories: &[String],
) -> Result<String, Error> {
    let library_path = directories
        .iter()
        .map(|dir| tree.join(dir).display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let program = tree.join(PROGRAM);
    let output = std::process::Command::new(tree.join(loader))
        .arg("--library-path")
        .arg(&library_path)
        .arg(&program)
        .arg("--version")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .stdin(std::process::Stdio::null())
        .output();
    let reported = match output {
        Ok(out) if out.status.success() => Some(
            parse_version_output(&String::from_utf8_lossy(&out.stdout)).map_err(|reason| {
                Error::Config {
                    path: request.binary.to_owned(),
                    reason,
                }
            })?,
        ),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Config {
                path: request.binary.to_owned(),
                reason: format!(
                    "does not run with the target release's loader and libraries ({}): {}",
                    out.status,
                    stderr.trim()
                ),
            });
        }
        // Another architecture: it cannot be tried here.
        Err(e) => {
            log::warn!(
                "cannot run {} here ({e}); trusting --core-version",
                request.binary.display()
            );
            None
        }
    };
    let version = match (request.version, reported) {
        (Some(given), reported) => {
            if let Some(reported) = reported
                && reported != given
            {
                log::info!("the core reports version {reported}; packaging it as {given}");
            }
            given.to_owned()
        }
        (None, Some(reported)) => reported,
        (None, None) => {
            return Err(Error::Config {
                path: request.binary.to_owned(),
                reason: "cannot run it to ask its version; give --core-version".into(),
            });
        }
    };
    version.parse::<Version>().map_err(|e| Error::Config {
        path: PathBuf::from(layout::CORE_PACKAGE),
        reason: format!("version {version:?}: {e}"),
    })?;
    Ok(version)
}

/// The version in `release-upgrader --version`'s answer: one line,
/// `release-upgrader VERSION`.
pub fn parse_version_output(text: &str) -> Result<String, String> {
    let line = text.lines().next().unwrap_or("").trim();
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(NAME), Some(version), None) => {
            version
                .parse::<Version>()
                .map_err(|e| format!("its --version names an invalid version {version:?}: {e}"))?;
            Ok(version.to_owned())
        }
        _ => Err(format!(
            "its --version says {line:?}, not \"{NAME} VERSION\": is it release-upgrader?"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_clients_answer() {
        assert_eq!(
            parse_version_output("release-upgrader 0.1.0\n").as_deref(),
            Ok("0.1.0")
        );
        assert_eq!(
            parse_version_output("release-upgrader 1:2.0~rc1+b2\n").as_deref(),
            Ok("1:2.0~rc1+b2")
        );
    }

    #[test]
    fn another_programs_answer_or_a_bad_version_is_refused() {
        for bad in [
            "",
            "apt 2.6.1 (amd64)",
            "release-upgrader",
            "release-upgrader 1.0 extra",
            "release-upgrader not_a_version!",
            "release-upgrader-publish 0.1.0",
        ] {
            assert!(parse_version_output(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_core_recipe_ships_one_entry_point_and_names_the_core_package() {
        let core = recipe();
        assert_eq!(core.name, layout::CORE_PACKAGE);
        assert_eq!(core.bin, [NAME]);
        assert!(!core.shared_libraries);
        assert!(core.dpkg_path.is_empty() && core.methods.is_none());
    }
}
