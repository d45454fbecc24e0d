//! A real Debian 12 root for the end-to-end tests: debootstrapped once (minbase, from the
//! mirror this machine's apt uses) into a cached tarball, unpacked fresh for each test,
//! with /proc, /sys and /dev mounted while maintainer scripts need them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian mirror: `RELEASE_UPGRADER_DEBIAN_MIRROR`, or the first `…/debian` URI of this
/// machine's apt sources. Never written into the repository.
pub fn mirror() -> Option<String> {
    if let Ok(uri) = std::env::var("RELEASE_UPGRADER_DEBIAN_MIRROR") {
        return Some(uri);
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| !w.starts_with('['))
            } else {
                None
            };
            if let Some(uri) = uri
                && uri.starts_with("http")
                && uri.trim_end_matches('/').ends_with("/debian")
            {
                return Some(uri.trim_end_matches('/').to_owned());
            }
        }
    }
    None
}

/// The cache shared by test runs (CI keeps it between runs).
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("RELEASE_UPGRADER_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/release-upgrader-tests")
        });
    std::fs::create_dir_all(&base).unwrap();
    base
}

/// A tarball of a debootstrapped Debian `suite` minbase root, made once.
pub fn minbase_tarball(suite: &str, mirror: &str) -> PathBuf {
    // Tests running in parallel wait for one debootstrap rather than each running one.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tarball = cache_dir().join(format!("debootstrap-{suite}-minbase.tar"));
    if tarball.exists() {
        return tarball;
    }
    let work = tempfile::tempdir_in(cache_dir()).unwrap();
    let root = work.path().join("root");
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", suite])
        .arg(&root)
        .arg(mirror)
        .output()
        .expect("debootstrap runs (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "debootstrap failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let partial = tarball.with_extension("tar.partial");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "-cf"])
        .arg(&partial)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::rename(&partial, &tarball).unwrap();
    tarball
}

/// Unpacks a fresh root from `tarball` into `dir`.
pub fn unpack(tarball: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["--numeric-owner", "-xpf"])
        .arg(tarball)
        .status()
        .unwrap();
    assert!(status.success());
    // No daemons start inside a chroot.
    let policy = dir.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// /proc, /sys and /dev (bind) mounted in a root; unmounted on drop.
pub struct Mounts {
    points: Vec<PathBuf>,
}

impl Mounts {
    pub fn new(root: &Path) -> Mounts {
        let mut points = Vec::new();
        for (kind, source, target) in [
            (Some("proc"), "proc", "proc"),
            (Some("sysfs"), "sysfs", "sys"),
            (None, "/dev", "dev"),
            (None, "/dev/pts", "dev/pts"),
        ] {
            let path = root.join(target);
            std::fs::create_dir_all(&path).unwrap();
            let mut cmd = Command::new("mount");
            match kind {
                Some(kind) => cmd.args(["-t", kind, source]),
                None => cmd.args(["--bind", source]),
            };
            let status = cmd.arg(&path).status().unwrap();
            assert!(status.success(), "mounting {} failed", path.display());
            points.push(path);
        }
        Mounts { points }
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for point in self.points.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
    }
}

/// Runs a command inside `root` (chroot) and returns its stdout.
pub fn in_root(root: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("chroot")
        .arg(root)
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
