//! Running with the helpers: the environment and apt configuration that make the target
//! release's apt use the target release's dpkg, methods and signature verifier, and the
//! re-exec of this program into that environment (docs/protocol.md §4).
//!
//! `LD_LIBRARY_PATH` is never set: every system program started under it (maintainer
//! scripts, `/bin/sh`) would load the helpers' libc and die on `GLIBC_PRIVATE` symbols once
//! the two releases' libcs differ. The entry points in `bin/` and `methods/` find their own
//! libraries (see `layout`).
//!
//! The process re-executed is the upgrader of the *target* release when the pocket
//! carries one newer than this program (`release-upgrader-core`, verified and installed
//! like every helper): an N → N+1 upgrade then runs N+1's upgrade logic, as Ubuntu's
//! dist-upgrader tarball does. That core runs through its loader wrapper, so its
//! `/proc/self/exe` is the bundled dynamic loader, inside the prefix: that is how it
//! knows it is the core ([`running_core`]), and why it starts itself again (the guard of
//! its children) through its entry point rather than `/proc/self/exe`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::Error;
use crate::helpers::{Manifest, Store};
use crate::layout;
use crate::version::Version;

/// Set in the re-executed process (to the prefix it runs with); its presence stops a
/// second re-exec.
pub const GUARD: &str = "RELEASE_UPGRADER_HELPERS";

/// Whether this process is the re-executed one.
pub fn reexecuted() -> Option<PathBuf> {
    std::env::var_os(GUARD).map(PathBuf::from)
}

/// The apt options that point apt at the helpers in `prefix`.
pub fn apt_options(prefix: &Path) -> Vec<(String, String)> {
    let p = |rel: &str| prefix.join(rel).display().to_string();
    let dpkg_path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", p(layout::DPKG_PATH));
    vec![
        ("Dir::Bin::dpkg".into(), p(&format!("{}/dpkg", layout::BIN))),
        ("Dir::Bin::Methods".into(), p(layout::METHODS)),
        (
            "APT::Key::GPGVCommand".into(),
            p(&format!("{}/gpgv", layout::BIN)),
        ),
        ("DPkg::Path".into(), dpkg_path),
    ]
}

/// Where the generated apt configuration lives.
pub fn apt_conf_path(store: &Store) -> PathBuf {
    store.state.join(APT_CONF)
}

/// Its name in the state directory.
const APT_CONF: &str = "apt.conf";

/// Renders [`apt_options`] as an apt configuration file.
pub fn render_apt_conf(prefix: &Path) -> String {
    let mut out = String::from(
        "// Written by release-upgrader: run apt with the helpers of the target release.\n",
    );
    for (key, value) in apt_options(prefix) {
        out.push_str(&format!("{key} \"{value}\";\n"));
    }
    out
}

/// Writes the apt configuration for the installed helpers.
pub fn write_apt_conf(store: &Store) -> Result<(), Error> {
    store.state_tree()?.write_atomic(
        &super::name(APT_CONF),
        render_apt_conf(&store.prefix).as_bytes(),
    )
}

pub fn remove_apt_conf(store: &Store) -> Result<(), Error> {
    store.state_tree()?.remove_file(&super::name(APT_CONF))?;
    Ok(())
}

/// The environment of a process that runs with the helpers: their entry points first on
/// `PATH`, apt configured through `APT_CONFIG`, and the guard.
pub fn helper_env(store: &Store) -> Vec<(OsString, OsString)> {
    let bin = store.prefix.join(layout::BIN);
    let mut path = OsString::from(bin.as_os_str());
    match std::env::var_os("PATH") {
        Some(old) if !old.is_empty() => {
            path.push(":");
            path.push(old);
        }
        _ => path.push(":/usr/sbin:/usr/bin:/sbin:/bin"),
    }
    vec![
        ("PATH".into(), path),
        ("APT_CONFIG".into(), apt_conf_path(store).into_os_string()),
        (GUARD.into(), store.prefix.clone().into_os_string()),
    ]
}

/// The entry point `release-upgrader-core` ships, relative to the prefix.
pub const CORE_ENTRY: &str = "bin/release-upgrader";

/// This program's version, which a core helper must exceed to take over.
pub const OWN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The installed core helper, when its version is newer than `ours` (Debian order) and its
/// manifest lists the entry point. Pure.
pub fn newer_core<'a>(installed: &'a [Manifest], ours: &str) -> Option<&'a Manifest> {
    let ours: Version = ours.parse().ok()?;
    installed.iter().find(|m| {
        m.package == layout::CORE_PACKAGE
            && m.version.parse::<Version>().is_ok_and(|core| core > ours)
            && m.files.iter().any(|f| f.path.as_str() == CORE_ENTRY)
    })
}

/// The core helper that takes over from this program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreTakeover {
    /// Its package version.
    pub version: String,
    /// Its entry point.
    pub program: PathBuf,
}

/// The core helper to re-execute instead of this program, if one is installed, newer than
/// this program and its entry point is there.
pub fn core_takeover(store: &Store, installed: &[Manifest]) -> Option<CoreTakeover> {
    let core = newer_core(installed, OWN_VERSION)?;
    let program = store.prefix.join(CORE_ENTRY);
    program.is_file().then(|| CoreTakeover {
        version: core.version.clone(),
        program,
    })
}

/// The program to re-execute: the core helper's `release-upgrader` when one takes over
/// ([`core_takeover`]), otherwise this very program.
pub fn reexec_target(core: Option<&CoreTakeover>) -> PathBuf {
    core.map_or_else(
        || PathBuf::from("/proc/self/exe"),
        |core| core.program.clone(),
    )
}

/// What the running client says before handing the upgrade to the core helper; also
/// written to `main.log` (appended: the upgrade's logs are open already).
pub fn announce_takeover(store: &Store, core: &CoreTakeover) -> String {
    let pocket = match crate::upgrade::journal::UpgradeJournal::load(&store.root) {
        Ok(Some(journal)) => format!("the {} pocket", journal.to),
        _ => "the target release's pocket".to_owned(),
    };
    let text = format!("Running release-upgrader {} from {pocket}", core.version);
    log::info!("{text} ({}; this is {OWN_VERSION})", core.program.display());
    if let Ok(logs) = crate::upgrade::logs::Logs::open(&store.root, true) {
        logs.main(&format!(
            "{text}: re-executing {} (this release-upgrader is {OWN_VERSION})",
            core.program.display()
        ));
    }
    text
}

/// When this process is the core helper's `release-upgrader`: its entry point, which
/// starts it again. It is when it runs re-executed ([`GUARD`] names the prefix) and its
/// executable, the bundled loader, lies inside that prefix.
pub fn running_core() -> Option<&'static Path> {
    static CORE: OnceLock<Option<PathBuf>> = OnceLock::new();
    CORE.get_or_init(|| {
        let prefix = reexecuted()?.canonicalize().ok()?;
        let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
        exe.starts_with(&prefix).then(|| prefix.join(CORE_ENTRY))
    })
    .as_deref()
}

/// The line the core writes into `main.log` first: which upgrader runs the upgrade.
pub fn core_banner(store: &Store) -> Option<String> {
    let entry = running_core()?;
    let package = store
        .installed()
        .ok()
        .and_then(|installed| {
            installed
                .into_iter()
                .find(|m| m.package == layout::CORE_PACKAGE)
        })
        .map_or_else(|| "?".to_owned(), |m| m.version);
    Some(format!(
        "{} {package} runs this upgrade: release-upgrader {OWN_VERSION} ({})",
        layout::CORE_PACKAGE,
        entry.display()
    ))
}

/// Replaces this process with `target args…` in the helper environment. Returns only on
/// failure. Refuses when this process already is the re-executed one.
pub fn reexec(
    store: &Store,
    target: &Path,
    args: &[OsString],
) -> Result<std::convert::Infallible, Error> {
    if let Some(prefix) = reexecuted() {
        return Err(Error::Config {
            path: prefix,
            reason: format!(
                "already running with the helpers ({GUARD} is set); not re-executing again"
            ),
        });
    }
    log::info!(
        "re-executing {} with the helpers from {}",
        target.display(),
        store.prefix.display()
    );
    let err = std::process::Command::new(target)
        .arg0("release-upgrader")
        .args(args)
        .envs(helper_env(store))
        .exec();
    Err(Error::io(target, err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::manifest::{FileKind, ManifestEntry};

    fn core(version: &str, entry: bool) -> Manifest {
        let mut files = vec![ManifestEntry {
            path: "root/usr/bin/release-upgrader".try_into().unwrap(),
            kind: FileKind::Dir,
            mode: 0o755,
        }];
        if entry {
            files.push(ManifestEntry {
                path: CORE_ENTRY.try_into().unwrap(),
                kind: FileKind::Dir,
                mode: 0o755,
            });
        }
        Manifest {
            package: layout::CORE_PACKAGE.into(),
            version: version.into(),
            architecture: "amd64".into(),
            deb_sha256: crate::digest::Sha256::of(b""),
            deb_size: 0,
            source: "http://127.0.0.1/pocket/".into(),
            files,
        }
    }

    #[test]
    fn only_a_core_newer_than_this_program_takes_over() {
        for (version, takes_over) in [
            ("0.1.0+demo2", true),
            ("0.1.1", true),
            ("1:0.0.1", true),
            ("0.1.0", false),
            ("0.1.0~rc1", false),
            ("0.0.9", false),
            ("not a version", false),
        ] {
            let installed = [core(version, true)];
            assert_eq!(
                newer_core(&installed, "0.1.0").is_some(),
                takes_over,
                "{version}"
            );
        }
    }

    #[test]
    fn a_core_without_its_entry_point_or_another_helper_does_not_take_over() {
        assert!(newer_core(&[core("9.0", false)], "0.1.0").is_none());
        let mut other = core("9.0", true);
        other.package = "release-upgrader-apt".into();
        assert!(newer_core(&[other], "0.1.0").is_none());
        assert!(newer_core(&[], "0.1.0").is_none());
    }

    #[test]
    fn this_test_process_is_not_the_core() {
        assert!(running_core().is_none());
    }

    #[test]
    fn apt_is_pointed_at_the_helpers_without_ld_library_path() {
        let conf = render_apt_conf(Path::new("/r/usr/lib/release-upgrader"));
        assert!(
            conf.contains("Dir::Bin::dpkg \"/r/usr/lib/release-upgrader/bin/dpkg\";"),
            "{conf}"
        );
        assert!(
            conf.contains("Dir::Bin::Methods \"/r/usr/lib/release-upgrader/methods\";"),
            "{conf}"
        );
        assert!(conf.contains("APT::Key::GPGVCommand \"/r/usr/lib/release-upgrader/bin/gpgv\";"));
        assert!(conf.contains("DPkg::Path \"/r/usr/lib/release-upgrader/dpkg-path:/usr/sbin:"));
        let store = Store::new(&crate::root::SystemRoot::new("/r"));
        let env = helper_env(&store);
        assert!(
            env.iter()
                .all(|(k, _)| k != "LD_LIBRARY_PATH" && k != "LD_PRELOAD")
        );
        let path = &env.iter().find(|(k, _)| k == "PATH").unwrap().1;
        assert!(
            path.to_string_lossy()
                .starts_with("/r/usr/lib/release-upgrader/bin:")
        );
    }
}
