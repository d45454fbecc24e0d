//! A real Debian 12 root for the end-to-end tests: debootstrapped once (minbase, from the
//! mirror this machine's apt uses) into a cached tarball, unpacked fresh for each test,
//! with /proc, /sys and /dev mounted while maintainer scripts need them — only ever in a
//! private mount namespace of the command that needs them ([`with_mounts`]), and test
//! directories are deleted only when nothing is mounted below them ([`TestDir`]).

#![allow(dead_code)]

use std::ffi::OsStr;
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
    let work = TestDir::new_in(&cache_dir());
    let root = work.path().join("root");
    // debootstrap mounts /proc and /sys in the root it makes: in a namespace of its own,
    // those go with it, also when it fails part way.
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "debootstrap"])
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
    pack(&root, &tarball);
    tarball
}

/// Packs the tree at `root` into `tarball`, which appears whole or not at all (a cache
/// other test runs read).
pub fn pack(root: &Path, tarball: &Path) {
    let partial = tarball.with_extension("tar.partial");
    let status = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["--numeric-owner", "-cf"])
        .arg(&partial)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::rename(&partial, tarball).unwrap();
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

/// What one mount below a chroot is: a file system of a type, or a bind mount.
#[derive(Clone, Debug)]
pub enum MountKind {
    /// `mount -t TYPE SOURCE TARGET`
    Fs(&'static str),
    /// `mount --bind SOURCE TARGET`
    Bind,
}

/// One mount below a chroot: `target` is relative to the root.
#[derive(Clone, Debug)]
pub struct Mount {
    pub kind: MountKind,
    pub source: String,
    pub target: String,
}

/// What maintainer scripts need in a chroot: /proc, /sys, /dev and /dev/pts.
pub fn chroot_mounts() -> Vec<Mount> {
    let m = |kind, source: &str, target: &str| Mount {
        kind,
        source: source.into(),
        target: target.into(),
    };
    vec![
        m(MountKind::Fs("proc"), "proc", "proc"),
        m(MountKind::Fs("sysfs"), "sysfs", "sys"),
        m(MountKind::Bind, "/dev", "dev"),
        m(MountKind::Bind, "/dev/pts", "dev/pts"),
    ]
}

/// Mounts `mounts` below `root`, in order, then runs the program that follows; run by
/// `sh -eu` inside a mount namespace of its own, so the first mount that fails ends it.
const MOUNT_THEN_EXEC: &str = r#"
root=$1 n=$2
shift 2
while [ "$n" -gt 0 ]; do
  kind=$1 source=$2 target=$3
  shift 3
  n=$((n - 1))
  mkdir -p "$root/$target"
  if [ "$kind" = bind ]; then
    mount --bind "$source" "$root/$target"
  else
    mount -t "$kind" "$source" "$root/$target"
  fi
done
exec "$@"
"#;

/// A command that runs `program` (arguments are added to the returned command) with
/// `mounts` mounted below `root` — in a private mount namespace of its own
/// (`unshare --mount --propagation private`): the mounts exist only while the program
/// (or anything it left running) lives, are never seen by this process, and vanish
/// with the namespace, also when one of them fails part way. So no delete of the test's
/// directory can run through them (a bind of the host's /dev, say).
pub fn with_mounts(root: &Path, mounts: &[Mount], program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-euc"])
        .arg(MOUNT_THEN_EXEC)
        .arg("sh")
        .arg(root)
        .arg(mounts.len().to_string());
    for mount in mounts {
        match mount.kind {
            MountKind::Fs(kind) => cmd.arg(kind),
            MountKind::Bind => cmd.arg("bind"),
        };
        cmd.arg(&mount.source).arg(&mount.target);
    }
    cmd.arg(program);
    cmd
}

/// [`with_mounts`] with the [`chroot_mounts`].
pub fn with_chroot_mounts(root: &Path, program: impl AsRef<OsStr>) -> Command {
    with_mounts(root, &chroot_mounts(), program)
}

/// Mount points at or below `dir` in this process's mount namespace
/// (`/proc/self/mountinfo`).
pub fn mounted_below(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").expect("/proc/self/mountinfo is readable");
    mount_points(&mountinfo)
        .into_iter()
        .filter(|point| point.starts_with(&dir))
        .collect()
}

/// The mount points of a mountinfo text (the fifth field, octal escapes undone).
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    ru_client::cdrom::mount_points(mountinfo)
}

/// A temporary directory for tests that build roots: removed on drop only when nothing
/// is mounted at or below it (checked in `/proc/self/mountinfo` first); otherwise it is
/// left in place, named on stderr, and never deleted through the mount.
pub struct TestDir(Option<tempfile::TempDir>);

impl TestDir {
    pub fn new() -> TestDir {
        TestDir(Some(tempfile::tempdir().unwrap()))
    }

    pub fn new_in(parent: &Path) -> TestDir {
        TestDir(Some(tempfile::tempdir_in(parent).unwrap()))
    }

    pub fn path(&self) -> &Path {
        self.0
            .as_ref()
            .expect("a TestDir is live until dropped")
            .path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else { return };
        let mounted = mounted_below(dir.path());
        if mounted.is_empty() {
            let _ = dir.close();
        } else {
            let kept = dir.keep();
            eprintln!(
                "NOT deleting {}: mounted below it: {mounted:?}; unmount them, then remove it",
                kept.display()
            );
        }
    }
}

/// Runs a command inside `root` (chroot, with the [`chroot_mounts`] in a namespace of its
/// own) and returns its stdout and stderr.
pub fn in_root(root: &Path, args: &[&str]) -> (bool, String) {
    let out = with_chroot_mounts(root, "chroot")
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

/// Whether this process may make mounts in a namespace of its own (root, `unshare`).
pub(crate) fn can_mount() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for mounts");
        return false;
    }
    let ok = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: unshare --mount is not allowed here");
    }
    ok
}

/// This process's mount points, except those of other tests' temporary directories
/// (tests running in parallel mount tmpfs and binds below theirs).
fn mount_table_outside_temp() -> Vec<PathBuf> {
    let temp = std::env::temp_dir()
        .canonicalize()
        .unwrap_or_else(|_| std::env::temp_dir());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mount_points(&mountinfo)
        .into_iter()
        .filter(|p| !p.starts_with(&temp))
        .collect()
}

/// A directory standing in for a host directory a chroot binds (as it binds `/dev`): a
/// file in it shows whether a delete ran through the bind.
fn stand_in_host_dir() -> (tempfile::TempDir, PathBuf) {
    let host = tempfile::tempdir().unwrap();
    let marker = host.path().join("precious");
    std::fs::write(&marker, "the host's\n").unwrap();
    (host, marker)
}

#[test]
fn a_chroot_whose_second_mount_fails_leaves_nothing_mounted_and_the_host_dir_intact() {
    if !can_mount() {
        return;
    }
    let (host, marker) = stand_in_host_dir();
    let before = mount_table_outside_temp();
    let dir = TestDir::new();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let bind = |source: &Path, target: &str| Mount {
        kind: MountKind::Bind,
        source: source.to_str().unwrap().into(),
        target: target.into(),
    };
    // The first mount works (the stand-in for the host's /dev), the second cannot.
    let mounts = [
        bind(host.path(), "dev"),
        bind(&dir.path().join("no such source"), "dev/pts"),
    ];
    let out = with_mounts(&root, &mounts, "true").output().unwrap();
    assert!(
        !out.status.success(),
        "a chroot command ran although a mount failed"
    );
    assert_eq!(mounted_below(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(
        mount_table_outside_temp(),
        before,
        "the mount table changed"
    );
    let dir_path = dir.path().to_path_buf();
    drop(dir);
    assert!(!dir_path.exists(), "the test directory was not removed");
    assert!(
        marker.exists(),
        "deleting the test root deleted the host's file"
    );

    // And with every mount working, the program sees them; this process never does.
    let dir = TestDir::new();
    let root = dir.path().join("root");
    let out = with_mounts(&root, &[bind(host.path(), "dev")], "cat")
        .arg(root.join("dev/precious"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "the host's\n");
    assert_eq!(mounted_below(dir.path()), Vec::<PathBuf>::new());
    drop(dir);
    assert!(marker.exists());
}

#[test]
fn a_test_directory_with_a_mount_below_it_is_not_deleted() {
    if !can_mount() {
        return;
    }
    let (host, marker) = stand_in_host_dir();
    let dir = TestDir::new();
    let point = dir.path().join("root/dev");
    std::fs::create_dir_all(&point).unwrap();
    // A real bind in this process's namespace (of a directory of this test's own).
    let status = Command::new("mount")
        .arg("--bind")
        .arg(host.path())
        .arg(&point)
        .status()
        .unwrap();
    assert!(status.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let unmount = Unmount(point.clone());
    assert_eq!(
        mounted_below(dir.path()),
        [point.canonicalize().unwrap()],
        "mountinfo shows the bind"
    );
    let dir_path = dir.path().to_path_buf();
    drop(dir);
    assert!(marker.exists(), "the delete ran through the bind mount");
    assert!(
        dir_path.exists(),
        "the directory was deleted with a mount below it"
    );
    drop(unmount);
    assert_eq!(mounted_below(&dir_path), Vec::<PathBuf>::new());
    std::fs::remove_dir_all(&dir_path).unwrap();
    assert!(marker.exists());
}

#[test]
fn mount_points_undo_mountinfo_escapes() {
    let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                37 35 98:0 / /back\\134slash rw - ext4 /dev/vda rw\n";
    assert_eq!(
        mount_points(text),
        [
            PathBuf::from("/mnt/with space"),
            PathBuf::from("/back\\slash")
        ]
    );
}
