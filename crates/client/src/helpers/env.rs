//! Running with the helpers: the environment and apt configuration that make the target
//! release's apt use the target release's dpkg, methods and signature verifier, and the
//! re-exec of this program into that environment (docs/protocol.md §4).
//!
//! `LD_LIBRARY_PATH` is never set: every system program started under it (maintainer
//! scripts, `/bin/sh`) would load the helpers' libc and die on `GLIBC_PRIVATE` symbols once
//! the two releases' libcs differ. The entry points in `bin/` and `methods/` find their own
//! libraries (see `layout`).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

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

/// The program to re-execute: the `release-upgrader` shipped in `release-upgrader-core`
/// when that is newer than this one, otherwise this very program.
pub fn reexec_target(store: &Store, installed: &[Manifest]) -> PathBuf {
    let ours: Option<Version> = env!("CARGO_PKG_VERSION").parse().ok();
    let shipped = store.prefix.join(layout::BIN).join("release-upgrader");
    let core_newer = installed
        .iter()
        .find(|m| m.package == layout::CORE_PACKAGE)
        .and_then(|m| m.version.parse::<Version>().ok())
        .zip(ours)
        .is_some_and(|(core, ours)| core > ours);
    if core_newer && shipped.is_file() {
        shipped
    } else {
        PathBuf::from("/proc/self/exe")
    }
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
