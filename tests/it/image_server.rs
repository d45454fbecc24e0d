//! The image server (`release-upgrader-publish image …`): full images, deltas and zdeltas
//! of real trees applied the way system-image clients apply them (delete `removed`, then
//! GNU tar as root with --same-owner --numeric-owner -p), keyrings and a published tree
//! checked with our verifier and gpgv, and reproducibility.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ru_publish::SigningKey;
use ru_publish::image::zdelta;
use ru_trust::openpgp::{Keyring, verify_detached};

use crate::support::{PUBLISH_BIN, Run};

/// After every mtime in the trees: SOURCE_DATE_EPOCH clamps nothing, but fixes the
/// stamps of generated members so that outputs are reproducible.
const SDE: &str = "2000000000";
const T0: i64 = 1_600_000_000;

fn publish(args: &[&str]) -> Run {
    let out = Command::new(PUBLISH_BIN)
        .args(args)
        .env("SOURCE_DATE_EPOCH", SDE)
        .output()
        .unwrap();
    Run(out)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn chmod(root: &Path, rel: &str, mode: u32) {
    std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(root: &Path, rel: &str, id: u32) {
    if is_root() {
        std::os::unix::fs::lchown(root.join(rel), Some(id), Some(id)).unwrap();
    }
}

fn symlink(root: &Path, rel: &str, target: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, path).unwrap();
}

fn hardlink(root: &Path, from: &str, to: &str) {
    std::fs::hard_link(root.join(from), root.join(to)).unwrap();
}

fn mknod(root: &Path, rel: &str, kind: nix::sys::stat::SFlag, major: u64, minor: u64) {
    use nix::sys::stat::{Mode, makedev};
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    nix::sys::stat::mknod(
        &path,
        kind,
        Mode::from_bits_truncate(0o644),
        makedev(major, minor),
    )
    .unwrap();
}

/// Pseudo-random bytes (a fixed LCG), compressible only as a whole.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// Sets every mtime under `root` (children before their directory): T0 plus an offset
/// from the path, and `extra` for chosen paths.
fn stamp(root: &Path, extra: &BTreeMap<&str, i64>) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(&path, out);
            }
            out.push(path);
        }
    }
    let mut paths = Vec::new();
    walk(root, &mut paths);
    paths.push(root.to_owned());
    for path in paths {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let t = T0 + (rel.len() as i64) * 60 + extra.get(rel.as_str()).copied().unwrap_or(0);
        let ts = TimeSpec::new(t, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &ts,
            &ts,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

/// The base (`v = 1`) and target (`v = 2`, `v = 3`) trees: every kind of change a delta
/// must carry.
fn tree(root: &Path, v: u8) {
    use nix::sys::stat::SFlag;
    std::fs::create_dir_all(root).unwrap();
    let big = noise(300_000, 7);
    write(root, "etc/keep.conf", b"unchanged\n");
    write(
        root,
        "etc/changed.conf",
        if v == 1 { b"value=1\n" } else { b"value=2\n" },
    );
    write(
        root,
        "etc/grow.conf",
        if v == 1 {
            &b"short\n"[..]
        } else {
            &b"a longer line\n"[..]
        },
    );
    write(root, "etc/mode.conf", b"mode\n");
    chmod(root, "etc/mode.conf", if v == 1 { 0o644 } else { 0o600 });
    write(root, "etc/owner.conf", b"owner\n");
    chown(root, "etc/owner.conf", if v == 1 { 0 } else { 1000 });
    write(root, "etc/mtime.conf", b"mtime\n");
    write(root, "usr/bin/suid", b"#!/bin/sh\n");
    chmod(root, "usr/bin/suid", 0o4755);
    // A large binary-like file with a small edit: a zdelta patch.
    let mut lib = big.clone();
    if v >= 2 {
        lib[1000..1008].copy_from_slice(b"PATCHED!");
        lib.extend_from_slice(&noise(2000, u64::from(v)));
    }
    write(root, "usr/lib/libbig.so.1", &lib);
    // Type changes both ways, and a directory turned symlink.
    if v == 1 {
        write(root, "opt/thing", b"a file\n");
        write(root, "opt/dir2/a", b"a\n");
        write(root, "opt/dir2/sub/b", b"b\n");
        std::fs::create_dir_all(root.join("opt/todir")).unwrap();
        write(root, "opt/todir/x", b"x\n");
    } else {
        write(root, "opt/thing/inside", b"now a directory\n");
        write(root, "opt/dir2", b"now a file\n");
        symlink(root, "opt/todir", "thing");
    }
    symlink(root, "bin", "usr/bin");
    // Pointing out of the tree: recorded as links, never followed.
    symlink(root, "usr/host-etc", "/etc");
    symlink(root, "usr/host-etc-rel", "../../../../../../../../etc");
    symlink(root, "usr/bin/sh", if v == 1 { "dash" } else { "bash" });
    if v == 1 {
        symlink(root, "usr/bin/tofile", "suid");
    } else {
        write(root, "usr/bin/tofile", b"was a symlink\n");
    }
    // Hard links: changed and still linked; unchanged; split; new.
    write(
        root,
        "usr/bin/a",
        if v == 1 {
            b"linked one\n"
        } else {
            b"linked two\n"
        },
    );
    hardlink(root, "usr/bin/a", "usr/bin/b");
    write(root, "usr/bin/c", b"stays linked\n");
    hardlink(root, "usr/bin/c", "usr/bin/d");
    write(root, "usr/bin/e", b"split later\n");
    if v == 1 {
        hardlink(root, "usr/bin/e", "usr/bin/f");
    } else {
        write(root, "usr/bin/f", b"split later\n");
        write(root, "usr/bin/h", b"new link\n");
        hardlink(root, "usr/bin/h", "usr/bin/g");
    }
    // Removed and added files and trees.
    if v == 1 {
        write(root, "etc/gone.conf", b"bye\n");
        write(root, "var/old/deep/file", b"old\n");
    } else {
        write(root, "etc/new.conf", b"hello\n");
        write(root, "srv/new/x", b"x\n");
    }
    if v == 3 {
        write(root, "etc/three.conf", b"third build\n");
        write(root, "etc/changed.conf", b"value=3\n");
    }
    let long = format!(
        "usr/share/{}/{}",
        "long-directory-name".repeat(4),
        "f".repeat(90)
    );
    write(root, &long, if v == 1 { b"long 1\n" } else { b"long 2\n" });
    if is_root() {
        mknod(root, "run/fifo", SFlag::S_IFIFO, 0, 0);
        mknod(
            root,
            "dev/null2",
            SFlag::S_IFCHR,
            1,
            if v == 1 { 3 } else { 5 },
        );
        if v >= 2 {
            mknod(root, "dev/loop9", SFlag::S_IFBLK, 7, 9);
        }
    }
    let mut extra = BTreeMap::new();
    if v >= 2 {
        extra.insert("etc/mtime.conf", 3600);
    }
    stamp(root, &extra);
}

/// GNU tar as root extracts an image or delta.
fn untar(archive: &Path, dest: &Path, extra: &[&str]) {
    std::fs::create_dir_all(dest).unwrap();
    let out = Command::new("tar")
        .args(["-x", "--same-owner", "--numeric-owner", "-p"])
        .args(extra)
        .arg("-f")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -x {}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `removed` member of a delta.
fn removed_of(delta: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(delta)
        .arg("removed")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The members of an archive, in order.
fn members(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect()
}

/// The anchor's apply: delete every `removed` path, then unpack the rest.
fn apply_delta(delta: &Path, dest: &Path) {
    for path in removed_of(delta) {
        assert!(!path.is_empty() && !path.contains(".."), "{path:?}");
        let _ = Command::new("rm")
            .arg("-rf")
            .arg(dest.join(&path))
            .status()
            .unwrap();
    }
    untar(delta, dest, &["--anchored", "--exclude=removed"]);
}

/// A zdelta through our decoder: expanded against the tree to the plain delta it stands
/// for, which is then applied as any delta.
fn apply_zdelta(zd: &Path, dest: &Path, work: &Path) {
    let plain = work.join("expanded.tar");
    let mut file = std::fs::File::create(&plain).unwrap();
    zdelta::expand(zd, dest, &mut file).unwrap();
    drop(file);
    apply_delta(&plain, dest);
}

/// Everything about a tree that an image must reproduce.
fn manifest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            out.push(path.clone());
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(&path, out);
            }
        }
    }
    let mut paths = Vec::new();
    walk(root, &mut paths);
    for path in paths {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let what = if ft.is_symlink() {
            format!("link {}", std::fs::read_link(&path).unwrap().display())
        } else if ft.is_file() {
            let group = if meta.nlink() > 1 {
                let first = inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_insert(rel.clone());
                format!(" same-inode-as {first}")
            } else {
                String::new()
            };
            let data = std::fs::read(&path).unwrap();
            format!(
                "file {} {}{group}",
                data.len(),
                ru_format::digest::Sha256::of(&data)
            )
        } else if ft.is_dir() {
            "dir".to_owned()
        } else {
            format!("special {:o} {}", meta.mode() & 0o170000, meta.rdev())
        };
        let mtime = if ft.is_symlink() { 0 } else { meta.mtime() };
        out.insert(
            rel,
            format!(
                "{what} mode={:o} owner={}:{} mtime={mtime}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ),
        );
    }
    out
}

#[track_caller]
fn assert_same_tree(got: &Path, want: &Path) {
    let (got, want) = (manifest(got), manifest(want));
    let keys: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| format!("{k}:\n   got  {:?}\n   want {:?}", got.get(k), want.get(k)))
        .collect();
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

/// Builds the image of a tree: `dir/<name>.tar.xz`.
/// Two images and both deltas between them, in `d`.
struct Deltas {
    image1: PathBuf,
    image2: PathBuf,
    /// `image delta`'s output.
    delta: PathBuf,
    /// `image delta --zdelta`'s output, and what that run printed.
    zd: PathBuf,
    zdelta_run: Run,
}

fn deltas(one: &Path, two: &Path, d: &Path) -> Deltas {
    let image1 = build_image(one, d, "one");
    let image2 = build_image(two, d, "two");
    let (delta, zd) = (d.join("d.tar.xz"), d.join("d.tar.zst"));
    publish(&["image", "delta", p(&image1), p(&image2), "--out", p(&delta)]).expect(0);
    let zdelta_run = publish(&[
        "image",
        "delta",
        "--zdelta",
        p(&image1),
        p(&image2),
        "--out",
        p(&zd),
    ]);
    zdelta_run.expect(0);
    Deltas {
        image1,
        image2,
        delta,
        zd,
        zdelta_run,
    }
}

fn build_image(root: &Path, out: &Path, name: &str) -> PathBuf {
    publish(&[
        "image",
        "build",
        "--root",
        p(root),
        "--out",
        p(out),
        "--name",
        name,
    ])
    .expect(0);
    out.join(format!("{name}.tar.xz"))
}

struct Trees {
    dir: tempfile::TempDir,
    images: Vec<PathBuf>,
}

fn trees(versions: &[u8]) -> Trees {
    let dir = tempfile::tempdir().unwrap();
    let images = versions
        .iter()
        .map(|&v| {
            let root = dir.path().join(format!("tree{v}"));
            tree(&root, v);
            build_image(&root, dir.path(), &format!("image{v}"))
        })
        .collect();
    Trees { dir, images }
}

#[test]
fn full_image_unpacks_to_the_tree_under_system() {
    let t = trees(&[2]);
    let names = members(&t.images[0]);
    assert_eq!(names[0], "system");
    assert!(
        names
            .iter()
            .all(|n| n == "system" || n.starts_with("system/")),
        "{names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    assert_eq!(names, sorted, "image order");
    let out = t.dir.path().join("x");
    untar(&t.images[0], &out, &[]);
    assert_same_tree(&out.join("system"), &t.dir.path().join("tree2"));
}

#[test]
fn delta_then_apply_gives_the_target_tree() {
    let t = trees(&[1, 2]);
    let work = t.dir.path();
    let delta = work.join("d.tar.xz");
    publish(&[
        "image",
        "delta",
        p(&t.images[0]),
        p(&t.images[1]),
        "--out",
        p(&delta),
    ])
    .expect(0);

    let names = members(&delta);
    assert_eq!(names[0], "removed", "{names:?}");
    let removed = removed_of(&delta);
    for path in [
        "system/etc/gone.conf",
        "system/var/old",
        "system/var/old/deep/file",
        "system/opt/thing",
        "system/opt/dir2",
        "system/opt/dir2/sub/b",
        "system/opt/todir",
        "system/usr/bin/tofile",
    ] {
        assert!(
            removed.contains(&path.to_owned()),
            "{path} not in removed: {removed:?}"
        );
    }
    assert!(!removed.contains(&"system/etc/changed.conf".to_owned()));
    for unchanged in [
        "system/etc/keep.conf",
        "system/usr/bin/c",
        "system/usr/bin/d",
        "system/bin",
    ] {
        assert!(
            !names.contains(&unchanged.to_owned()),
            "{unchanged} shipped"
        );
    }
    for changed in [
        "system/etc/changed.conf",
        "system/etc/mode.conf",
        "system/etc/mtime.conf",
        "system/usr/bin/a",
        "system/usr/bin/b",
        "system/usr/bin/f",
        "system/usr/bin/g",
        "system/usr/bin/sh",
        "system/etc/new.conf",
        "system/srv/new/x",
    ] {
        assert!(
            names.contains(&changed.to_owned()),
            "{changed} missing from {names:?}"
        );
    }

    let applied = work.join("applied");
    untar(&t.images[0], &applied, &[]);
    apply_delta(&delta, &applied);
    let expected = work.join("expected");
    untar(&t.images[1], &expected, &[]);
    assert_same_tree(&applied, &expected);

    // From the root directories, the same delta.
    let from_dirs = work.join("d2.tar.xz");
    publish(&[
        "image",
        "delta",
        p(&work.join("tree1")),
        p(&work.join("tree2")),
        "--out",
        p(&from_dirs),
    ])
    .expect(0);
    assert_eq!(
        std::fs::read(&from_dirs).unwrap(),
        std::fs::read(&delta).unwrap()
    );
}

#[test]
fn zdelta_then_apply_gives_the_target_tree() {
    let t = trees(&[1, 2]);
    let work = t.dir.path();
    let delta = work.join("d.tar.xz");
    let zd = work.join("d.tar.zst");
    publish(&[
        "image",
        "delta",
        p(&t.images[0]),
        p(&t.images[1]),
        "--out",
        p(&delta),
    ])
    .expect(0);
    let run = publish(&[
        "image",
        "delta",
        "--zdelta",
        p(&t.images[0]),
        p(&t.images[1]),
        "--out",
        p(&zd),
    ]);
    run.expect(0).mentions(&["1 patched"]);
    assert_eq!(
        &std::fs::read(&zd).unwrap()[..4],
        &[0x28, 0xb5, 0x2f, 0xfd],
        "zstd magic"
    );
    // Same members as the delta, in the same order.
    assert_eq!(members(&zd), members(&delta));
    let zsize = std::fs::metadata(&zd).unwrap().len();
    let dsize = std::fs::metadata(&delta).unwrap().len();
    assert!(zsize < dsize, "zdelta {zsize} bytes, delta {dsize}");

    let applied = work.join("applied");
    untar(&t.images[0], &applied, &[]);
    apply_zdelta(&zd, &applied, work);
    let expected = work.join("expected");
    untar(&t.images[1], &expected, &[]);
    assert_same_tree(&applied, &expected);
}

#[test]
fn zdelta_refuses_a_tampered_patch_or_a_different_base() {
    let t = trees(&[1, 2]);
    let work = t.dir.path();
    let zd = work.join("d.tar.zst");
    publish(&[
        "image",
        "delta",
        "--zdelta",
        p(&t.images[0]),
        p(&t.images[1]),
        "--out",
        p(&zd),
    ])
    .expect(0);
    let base = work.join("base");
    untar(&t.images[0], &base, &[]);

    // A base file that is not the one the patch was made from.
    let lib = base.join("system/usr/lib/libbig.so.1");
    let mut data = std::fs::read(&lib).unwrap();
    data[10] ^= 1;
    std::fs::write(&lib, &data).unwrap();
    let err = zdelta::expand(&zd, &base, &mut std::io::sink()).unwrap_err();
    assert!(err.to_string().contains("SHA256 mismatch"), "{err}");
    data[10] ^= 1;
    std::fs::write(&lib, &data).unwrap();
    zdelta::expand(&zd, &base, &mut std::io::sink()).unwrap();

    // A byte changed inside the patch (decompressed, changed, recompressed: the outer
    // stream stays valid, so the patch checks are what refuse it).
    let raw = zstd::decode_all(std::fs::File::open(&zd).unwrap()).unwrap();
    let at = find(&raw, b"RELEASE_UPGRADER.size=").expect("a patch member");
    // The patch data starts at the next 512-byte boundary after the pax block and the
    // member's header.
    let pax_end = (at / 512 + 1) * 512;
    let data_at = pax_end + 512 + 40;
    let mut bad = raw.clone();
    bad[data_at] ^= 0x55;
    let tampered = work.join("bad.tar.zst");
    std::fs::write(&tampered, zstd::encode_all(&bad[..], 3).unwrap()).unwrap();
    let err = zdelta::expand(&tampered, &base, &mut std::io::sink()).unwrap_err();
    assert_eq!(err.exit_code().code(), 3, "{err}");

    // A promised digest that is not the result's.
    let at = find(&raw, b"RELEASE_UPGRADER.sha256=").unwrap() + b"RELEASE_UPGRADER.sha256=".len();
    let mut bad = raw.clone();
    bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
    // The pax header has no checksum of its own; the tar header checksum covers only
    // the header block, so the archive still reads.
    std::fs::write(&tampered, zstd::encode_all(&bad[..], 3).unwrap()).unwrap();
    let err = zdelta::expand(&tampered, &base, &mut std::io::sink()).unwrap_err();
    assert!(err.to_string().contains("SHA256 mismatch"), "{err}");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn build_from_an_unsorted_tarball_equals_build_from_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    tree(&root, 2);
    let tarball = dir.path().join("rootfs.tar.gz");
    // GNU tar in directory order (not sorted), with hard links as it finds them.
    let out = Command::new("tar")
        .args(["-czf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success());
    let a = build_image(&root, &dir.path().join("a"), "rootfs");
    publish(&[
        "image",
        "build",
        "--tarball",
        p(&tarball),
        "--out",
        p(&dir.path().join("b")),
    ])
    .expect(0);
    let b = dir.path().join("b/rootfs.tar.xz");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // Reproducible: the same input gives the same bytes.
    let c = build_image(&root, &dir.path().join("c"), "rootfs");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
}

/// The member list of an image, in the order tar is to write it.
type MemberOrder<'a> = Option<&'a dyn Fn(&Path) -> Vec<String>>;

/// A full image packed as system-image-server packs one: `partitions/` and `system/`
/// from a staging directory, by GNU tar, in whatever order `files` gives (`None`: tar's
/// own directory order), hard links as tar finds them.
fn server_full_image(tree: &Path, boot: &[u8], files: MemberOrder<'_>) -> PathBuf {
    let stage = tree.with_extension("stage");
    std::fs::create_dir_all(stage.join("partitions")).unwrap();
    std::fs::write(stage.join("partitions/boot.img"), boot).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(tree)
        .arg(stage.join("system"))
        .status()
        .unwrap();
    assert!(copied.success());
    let image = tree.with_extension("full.tar.xz");
    let mut tar = Command::new("tar");
    tar.arg("-cJf").arg(&image).arg("-C").arg(&stage);
    match files {
        None => {
            tar.args(["partitions/", "system/"]);
        }
        Some(order) => {
            let list = tree.with_extension("list");
            std::fs::write(&list, order(&stage).join("\n") + "\n").unwrap();
            tar.arg("--no-recursion").arg("-T").arg(&list);
        }
    }
    let out = tar.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// Every path under `stage`, relative to it, in reverse order: children before their
/// directories, and of each hard link pair the later name first.
fn reversed_paths(stage: &Path) -> Vec<String> {
    let out = Command::new("find")
        .args(["partitions", "system"])
        .current_dir(stage)
        .output()
        .unwrap();
    let mut paths: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    paths.sort();
    paths.reverse();
    paths
}

#[test]
fn delta_takes_full_images_as_system_image_server_packs_them() {
    let t = trees(&[1, 2]);
    let work = t.dir.path();
    let orders: [(&str, MemberOrder<'_>); 2] = [("tar", None), ("reversed", Some(&reversed_paths))];
    for (name, order) in orders {
        let case = work.join(name);
        let (one, two) = (case.join("one"), case.join("two"));
        for (from, to) in [("tree1", &one), ("tree2", &two)] {
            std::fs::create_dir_all(&case).unwrap();
            let copied = Command::new("cp")
                .arg("-a")
                .arg(work.join(from))
                .arg(to)
                .status()
                .unwrap();
            assert!(copied.success());
        }
        let full1 = server_full_image(&one, b"boot one", order);
        let full2 = server_full_image(&two, b"boot two", order);
        if order.is_some() {
            let names = members(&full1);
            assert!(
                names.iter().position(|n| n == "system/usr/bin/b")
                    < names.iter().position(|n| n == "system/usr/bin/a"),
                "{names:?}"
            );
        }
        let expected = case.join("expected");
        untar(&full2, &expected, &[]);
        for zdelta in [false, true] {
            let out = case.join(if zdelta { "d.tar.zst" } else { "d.tar.xz" });
            let mut args = vec!["image", "delta", p(&full1), p(&full2), "--out", p(&out)];
            if zdelta {
                args.insert(2, "--zdelta");
            }
            publish(&args).expect(0);
            let names = members(&out);
            assert!(
                names.contains(&"partitions/boot.img".to_owned()),
                "{names:?}"
            );
            let applied = case.join(format!("applied-{zdelta}"));
            untar(&full1, &applied, &[]);
            if zdelta {
                apply_zdelta(&out, &applied, &case);
            } else {
                apply_delta(&out, &applied);
            }
            assert_same_tree(&applied, &expected);
        }
    }
}

#[test]
fn delta_refuses_a_full_image_with_a_member_twice_or_a_dangling_hard_link() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    tree(&root, 1);
    let image = build_image(&root, dir.path(), "image");
    let stage = dir.path().join("stage/system");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(stage.join("file"), b"one").unwrap();
    let twice = dir.path().join("twice.tar");
    for op in ["-cf", "-rf"] {
        let out = Command::new("tar")
            .arg(op)
            .arg(&twice)
            .arg("-C")
            .arg(dir.path().join("stage"))
            .arg("system/file")
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    publish(&[
        "image",
        "delta",
        p(&twice),
        p(&image),
        "--out",
        p(&dir.path().join("d1.tar.xz")),
    ])
    .expect(2)
    .mentions(&["system/file is in the archive twice"]);
    // GNU tar stores the second name of a hard link pair as a link to the first; taking
    // the first out of the list leaves a link to a path the archive lacks.
    std::fs::hard_link(stage.join("file"), stage.join("link")).unwrap();
    let dangling = dir.path().join("dangling.tar");
    let out = Command::new("tar")
        .arg("-cf")
        .arg(&dangling)
        .arg("-C")
        .arg(dir.path().join("stage"))
        .args(["system/file", "system/link"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new("tar")
        .arg("--delete")
        .arg("-f")
        .arg(&dangling)
        .arg("system/file")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    publish(&[
        "image",
        "delta",
        p(&image),
        p(&dangling),
        "--out",
        p(&dir.path().join("d2.tar.xz")),
    ])
    .expect(2)
    .mentions(&["system/link: hard link to system/file, which is not in the archive"]);
    assert!(!dir.path().join("d1.tar.xz").exists() && !dir.path().join("d2.tar.xz").exists());
}

#[test]
fn version_tarball_carries_channel_ini() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    publish(&[
        "image",
        "build",
        "--root",
        p(&root),
        "--out",
        p(dir.path()),
        "--version",
        "42",
        "--channel",
        "stable",
        "--device",
        "mako",
        "--server",
        "images.example.org",
    ])
    .expect(0);
    let version = dir.path().join("version-42.tar.xz");
    // The real server's members, in its order: a 3.x client reads config.d.
    assert_eq!(
        members(&version),
        vec![
            "system/etc/ubuntu-build",
            "system/etc/system-image/channel.ini",
            "system/etc/system-image/config.d",
            "system/etc/system-image/config.d/00_default.ini",
            "system/etc/system-image/config.d/01_channel.ini",
        ]
    );
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(&version)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(
        listing.contains("config.d/00_default.ini -> ../client.ini")
            && listing.contains("config.d/01_channel.ini -> ../channel.ini")
            && listing.contains("drwxrwxr-x root/root"),
        "{listing}"
    );
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(&version)
        .arg("system/etc/system-image/channel.ini")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "[service]\nbase: images.example.org\nhttp_port: 80\nhttps_port: 443\nchannel: stable\n\
         device: mako\nbuild_number: 42\nversion_detail: version=42\n"
    );
}

/// Writes a fresh key: `dir/<name>/secret.asc`, `dir/<name>/keyring.gpg`.
fn key(dir: &Path, name: &str) -> (SigningKey, PathBuf) {
    let key = SigningKey::generate(&format!("{name} <{name}@invalid>"), None).unwrap();
    let kdir = dir.join(name);
    key.write_to(&kdir).unwrap();
    (key, kdir.join("secret.asc"))
}

fn gpgv(keyring: &[u8], sig: &Path, data: &Path) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let kr = dir.path().join("k.gpg");
    std::fs::write(&kr, keyring).unwrap();
    Command::new("gpgv")
        .arg("--keyring")
        .arg(&kr)
        .arg(sig)
        .arg(data)
        .output()
        .unwrap()
        .status
        .success()
}

#[track_caller]
fn verifies(signer: &SigningKey, file: &Path) -> bool {
    let keyring = Keyring::from_certs([signer.cert().clone()]);
    let data = std::fs::read(file).unwrap();
    let sig = std::fs::read(format!("{}.asc", file.display())).unwrap();
    let ours = verify_detached(&keyring, data, &sig, "test").is_ok();
    let theirs = gpgv(
        &signer.public_keyring(),
        Path::new(&format!("{}.asc", file.display())),
        file,
    );
    assert_eq!(
        ours,
        theirs,
        "our verifier and gpgv disagree on {}",
        file.display()
    );
    ours
}

fn keyring_json(tarball: &Path) -> serde_json::Value {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(tarball)
        .arg("keyring.json")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn keyring_chain_is_signed_by_the_key_above() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (archive, archive_secret) = key(d, "archive-master");
    let (image_master, image_master_secret) = key(d, "image-master");
    let (signing, signing_secret) = key(d, "image-signing");
    let (_device, device_secret) = key(d, "device-signing");
    let (_evil, evil_secret) = key(d, "blacklisted");
    let out = d.join("gpg");
    let chain = [
        (
            "archive-master",
            &archive_secret,
            &archive_secret,
            &archive,
            vec![],
        ),
        (
            "image-master",
            &image_master_secret,
            &archive_secret,
            &archive,
            vec![],
        ),
        (
            "image-signing",
            &signing_secret,
            &image_master_secret,
            &image_master,
            vec!["--expiry", "2099-01-01"],
        ),
        (
            "device-signing",
            &device_secret,
            &signing_secret,
            &signing,
            vec!["--model", "mako", "--expiry", "4070908800"],
        ),
        ("blacklist", &evil_secret, &archive_secret, &archive, vec![]),
    ];
    for (kind, key_file, signed_by, signer, extra) in &chain {
        let file = out.join(format!("{kind}.tar.xz"));
        let mut args = vec![
            "image",
            "keyring",
            "--type",
            kind,
            "--key",
            p(key_file),
            "--signed-by",
            p(signed_by),
            "--out",
            p(&file),
        ];
        args.extend(extra.iter().copied());
        publish(&args).expect(0);
        assert_eq!(members(&file), vec!["keyring.json", "keyring.gpg"]);
        assert!(verifies(signer, &file), "{kind} signature");
        assert!(
            !verifies(&image_master, &file) || *kind == "image-signing",
            "{kind} by the wrong key"
        );
        // No secret key material in the published keyring.
        let gpg = Command::new("tar")
            .arg("-xOf")
            .arg(&file)
            .arg("keyring.gpg")
            .output()
            .unwrap();
        use sequoia_openpgp::parse::Parse;
        let cert = sequoia_openpgp::Cert::from_bytes(&gpg.stdout).unwrap();
        assert!(!cert.is_tsk(), "{kind}: secret key material published");
    }
    assert_eq!(
        keyring_json(&out.join("archive-master.tar.xz")),
        serde_json::json!({"type": "archive-master"})
    );
    assert_eq!(
        keyring_json(&out.join("image-signing.tar.xz")),
        serde_json::json!({"type": "image-signing", "expiry": 4070908800i64})
    );
    assert_eq!(
        keyring_json(&out.join("device-signing.tar.xz")),
        serde_json::json!({"type": "device-signing", "expiry": 4070908800i64, "model": "mako"})
    );
    // Same shape as the real archive-master keyring.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/system-image/keyrings/ubports-archive-master.tar.xz");
    assert_eq!(
        members(&sample),
        members(&out.join("archive-master.tar.xz"))
    );
    let sample_json = Command::new("tar")
        .arg("-xOf")
        .arg(&sample)
        .arg("keyring.json")
        .output()
        .unwrap();
    let ours = Command::new("tar")
        .arg("-xOf")
        .arg(out.join("archive-master.tar.xz"))
        .arg("keyring.json")
        .output()
        .unwrap();
    assert_eq!(
        ours.stdout, sample_json.stdout,
        "keyring.json byte for byte as the sample"
    );

    // Tampered: one byte of the tarball changed.
    let file = out.join("image-master.tar.xz");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    assert!(!verifies(&archive, &file));
}

fn json_keys(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.insert(format!("{prefix}.{k}"));
                json_keys(v, &format!("{prefix}.{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                json_keys(v, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// The key paths of an index.json, with channel and device names generalised.
fn index_shape(value: &serde_json::Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    json_keys(value, "", &mut keys);
    keys
}

/// What a stock system-image client would refuse on every device is refused when it is
/// published: the blacklist is signed by image-master (as the real server signs it, and
/// system-image verifies it), the chain holds, and the publishing key is in image-signing.
#[test]
fn publish_refuses_keyrings_a_stock_client_would_refuse() {
    let t = trees(&[1]);
    let work = t.dir.path();
    let (_, archive) = key(work, "archive-master");
    let (_, master) = key(work, "image-master");
    let (_, signing) = key(work, "image-signing");
    let (_, other) = key(work, "other");
    let keyring = |dir: &Path, kind: &str, key: &Path, signer: &Path| {
        publish(&[
            "image",
            "keyring",
            "--type",
            kind,
            "--key",
            p(key),
            "--signed-by",
            p(signer),
            "--out",
            p(&dir.join(format!("{kind}.tar.xz"))),
        ])
        .expect(0);
    };
    let chain = |name: &str, blacklisted: &Path, blacklist_signer: &Path| {
        let dir = work.join(name);
        keyring(&dir, "archive-master", &archive, &archive);
        keyring(&dir, "image-master", &master, &archive);
        keyring(&dir, "image-signing", &signing, &master);
        keyring(&dir, "blacklist", blacklisted, blacklist_signer);
        dir
    };
    let run = |keyrings: &Path, key: &Path| {
        let srv = work.join("srv");
        let _ = std::fs::remove_dir_all(&srv);
        let run = publish(&[
            "image",
            "publish",
            p(&t.images[0]),
            "--out",
            p(&srv),
            "--key",
            p(key),
            "--channel",
            "stable",
            "--device",
            "mako",
            "--version",
            "1",
            "--keyrings",
            p(keyrings),
        ]);
        let published = srv.join("stable/mako/index.json").exists();
        (run, published)
    };
    // As the real server makes it: published.
    let good = chain("good", &other, &master);
    let (ok, published) = run(&good, &signing);
    ok.expect(0);
    assert!(published);
    // The blacklist signed by archive-master (what earlier README versions said).
    let by_archive = chain("by-archive", &other, &archive);
    let (refused, published) = run(&by_archive, &signing);
    refused.expect(2).mentions(&[
        "blacklist.tar.xz",
        "a stock system-image client would refuse it",
        "must be signed by image-master",
    ]);
    assert!(!published);
    // Files signed by a key the devices do not trust.
    let (refused, published) = run(&good, &other);
    refused
        .expect(2)
        .mentions(&["image-signing.tar.xz", "the publishing key"]);
    assert!(!published);
    // The publishing key blacklisted.
    let revoked = chain("revoked", &signing, &master);
    let (refused, published) = run(&revoked, &signing);
    refused.expect(2).mentions(&["image-signing.tar.xz"]);
    assert!(!published);
}

#[test]
fn published_tree_is_signed_chains_and_expires() {
    let t = trees(&[1, 2, 3]);
    let work = t.dir.path();
    let (signing, signing_secret) = key(work, "image-signing");
    let (archive, archive_secret) = key(work, "archive-master");
    let keyrings = work.join("keyrings");
    for (kind, secret) in [
        ("archive-master", &archive_secret),
        ("image-signing", &signing_secret),
    ] {
        let signer = if kind == "image-signing" {
            &archive_secret
        } else {
            secret
        };
        publish(&[
            "image",
            "keyring",
            "--type",
            kind,
            "--key",
            p(secret),
            "--signed-by",
            p(signer),
            "--out",
            p(&keyrings.join(format!("{kind}.tar.xz"))),
        ])
        .expect(0);
    }
    let srv = work.join("srv");
    let base = |v: &str, image: &Path, extra: &[&str]| {
        let mut args = vec![
            "image",
            "publish",
            p(image),
            "--out",
            p(&srv),
            "--key",
            p(&signing_secret),
            "--channel",
            "stable",
            "--device",
            "mako",
            "--version",
            v,
            "--keyrings",
            p(&keyrings),
        ];
        args.extend_from_slice(extra);
        publish(&args).expect(0);
    };
    base("1", &t.images[0], &["--minversion", "1"]);
    base("2", &t.images[1], &["--zdelta", "--bootme"]);
    let index_path = srv.join("stable/mako/index.json");
    let index2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let kinds: Vec<(String, u64)> = index2["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["type"].as_str().unwrap().to_owned(),
                i["version"].as_u64().unwrap(),
            )
        })
        .collect();
    // Only the types a stock system-image client knows (candidates.py asserts full or
    // delta): the zdelta rides on its delta's entry, with the build's version tarball.
    assert_eq!(
        kinds,
        vec![("full".into(), 1), ("full".into(), 2), ("delta".into(), 2)]
    );
    let delta = &index2["images"][2];
    let carried: Vec<&str> = delta["zdelta"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        carried.len() == 2
            && carried[0].ends_with(".tar.zst")
            && carried[1] == delta["files"][1]["path"].as_str().unwrap(),
        "{carried:?}"
    );
    for file in delta["zdelta"]["files"].as_array().unwrap() {
        let local = srv.join(file["path"].as_str().unwrap().trim_start_matches('/'));
        assert!(verifies(&signing, &local), "{}", local.display());
    }
    base(
        "3",
        &t.images[2],
        &["--keep", "2", "--phased-percentage", "50"],
    );

    // Every file listed is signed by image-signing, with its checksum and size.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    assert!(verifies(&signing, &index_path));
    assert!(verifies(&signing, &srv.join("channels.json")));
    assert!(!verifies(&archive, &srv.join("channels.json")));
    for image in index["images"].as_array().unwrap() {
        for file in image["files"].as_array().unwrap() {
            let local = srv.join(file["path"].as_str().unwrap().trim_start_matches('/'));
            assert_eq!(
                format!("{}.asc", file["path"].as_str().unwrap()),
                file["signature"].as_str().unwrap()
            );
            assert!(verifies(&signing, &local), "{}", local.display());
            let data = std::fs::read(&local).unwrap();
            assert_eq!(file["size"].as_u64().unwrap(), data.len() as u64);
            assert_eq!(
                file["checksum"].as_str().unwrap(),
                ru_format::digest::Sha256::of(&data).to_hex()
            );
        }
    }
    for kind in ["archive-master", "image-signing"] {
        assert!(srv.join(format!("gpg/{kind}.tar.xz.asc")).exists());
    }
    // Build 1 expired with its files; 2 and 3 left, with the delta 2 -> 3.
    let kinds: Vec<(String, Option<u64>, u64)> = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["type"].as_str().unwrap().to_owned(),
                i["base"].as_u64(),
                i["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("full".into(), None, 2),
            ("full".into(), None, 3),
            ("delta".into(), Some(2), 3)
        ]
    );
    assert!(!srv.join("stable/mako/version-1.tar.xz").exists());
    let pool: Vec<String> = std::fs::read_dir(srv.join("pool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(pool.len(), 2 * 3, "{pool:?}"); // full 2, full 3, delta 2->3, each with .asc

    // The shapes are the conformance samples' (same keys, ours a subset of theirs).
    let samples = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/system-image/client-testdata");
    let mut sample_keys = BTreeSet::new();
    for entry in std::fs::read_dir(&samples).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains(".index_") {
            let value: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            sample_keys.extend(index_shape(&value));
        }
    }
    let ours = index_shape(&index);
    let foreign: Vec<&String> = ours.difference(&sample_keys).collect();
    assert!(
        foreign.is_empty(),
        "keys the samples never use: {foreign:?}"
    );
    for needed in [
        ".global.generated_at",
        ".images[].files[].checksum",
        ".images[].version_detail",
        ".images[].phased-percentage",
    ] {
        assert!(ours.contains(needed), "{needed}");
    }
    let channels: serde_json::Value =
        serde_json::from_slice(&std::fs::read(srv.join("channels.json")).unwrap()).unwrap();
    assert_eq!(
        channels,
        serde_json::json!({"stable": {"devices": {"mako": {"index": "/stable/mako/index.json"}}}})
    );
    let generated = index["global"]["generated_at"].as_str().unwrap();
    assert_eq!(generated, "Wed May 18 03:33:20 UTC 2033");

    // Full 2, then delta 2 -> 3 (with its version tarball), is full 3.
    let find = |kind: &str, v: u64| -> Vec<PathBuf> {
        let image = index["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == kind && i["version"] == v)
            .unwrap();
        let mut files: Vec<&serde_json::Value> =
            image["files"].as_array().unwrap().iter().collect();
        files.sort_by_key(|f| f["order"].as_u64());
        files
            .iter()
            .map(|f| srv.join(f["path"].as_str().unwrap().trim_start_matches('/')))
            .collect()
    };
    let applied = work.join("applied");
    for file in find("full", 2) {
        untar(&file, &applied, &[]);
    }
    let files = find("delta", 3);
    apply_delta(&files[0], &applied);
    untar(&files[1], &applied, &[]);
    let expected = work.join("expected");
    for file in find("full", 3) {
        untar(&file, &expected, &[]);
    }
    // Version tarballs carry files only (as system-image's do), so a directory they add a
    // file to gets the time of that extraction: the two extractions above may straddle a
    // second. Those mtimes are the unpacking's, not the images'.
    for dir in ["system/etc", "system/etc/system-image"] {
        let status = std::process::Command::new("touch")
            .args(["-c", "-m", "-r"])
            .arg(expected.join(dir))
            .arg(applied.join(dir))
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert_same_tree(&applied, &expected);
    let ini = std::fs::read_to_string(applied.join("system/etc/system-image/channel.ini")).unwrap();
    assert!(ini.contains("build_number: 3\n"), "{ini}");

    // Publishing a build that is there already is refused.
    let run = publish(&[
        "image",
        "publish",
        p(&t.images[2]),
        "--out",
        p(&srv),
        "--key",
        p(&signing_secret),
        "--channel",
        "stable",
        "--device",
        "mako",
        "--version",
        "3",
    ]);
    run.expect(2).mentions(&["already published"]);
}

/// Words in a pseudo-random order: text xz packs much better than zstd at level 1.
fn text(len_words: usize) -> Vec<u8> {
    let words = [
        "the", "of", "and", "image", "delta", "system", "file", "new", "build", "one",
    ];
    let mut x: u64 = 99;
    let mut out = String::new();
    for _ in 0..len_words {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(words[((x >> 40) % words.len() as u64) as usize]);
        out.push(if (x >> 20).is_multiple_of(13) {
            '\n'
        } else {
            ' '
        });
    }
    out.into_bytes()
}

#[test]
fn a_zdelta_larger_than_its_delta_is_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, secret) = key(d, "image-signing");
    let one = d.join("one");
    write(&one, "etc/a", b"a\n");
    let two = d.join("two");
    write(&two, "etc/a", b"a\n");
    write(&two, "usr/share/doc/words.txt", &text(100_000));
    for root in [&one, &two] {
        stamp(root, &BTreeMap::new());
    }
    let image1 = build_image(&one, d, "one");
    let image2 = build_image(&two, d, "two");
    let srv = d.join("srv");
    let common = [
        "--out",
        p(&srv),
        "--key",
        p(&secret),
        "--channel",
        "devel",
        "--device",
        "pc",
    ];
    let mut args = vec!["image", "publish", p(&image1), "--version", "1"];
    args.extend_from_slice(&common);
    publish(&args).expect(0);
    let mut args = vec![
        "image",
        "publish",
        p(&image2),
        "--version",
        "2",
        "--zdelta",
        "--zstd-level",
        "1",
    ];
    args.extend_from_slice(&common);
    publish(&args)
        .expect(0)
        .mentions(&["skipped zdelta 1 -> 2", "not smaller than the delta"]);
    let index = std::fs::read_to_string(srv.join("devel/pc/index.json")).unwrap();
    assert!(
        index.contains("\"delta\"") && !index.contains("zdelta"),
        "{index}"
    );
    let pool: Vec<String> = std::fs::read_dir(srv.join("pool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(pool.iter().all(|n| !n.contains("zdelta")), "{pool:?}");
    // At a level where zstd competes, the zdelta is written by `image delta` all the
    // same: the choice is the publisher's.
    publish(&[
        "image",
        "delta",
        "--zdelta",
        p(&image1),
        p(&image2),
        "--out",
        p(&d.join("z.tar.zst")),
    ])
    .expect(0);
}

/// A base tree and a target where a library moves to its next version and a versioned
/// directory is renamed, both with small edits; the base also has a directory symlink.
fn renamed_trees(d: &Path) -> (PathBuf, PathBuf) {
    let (one, two) = (d.join("one"), d.join("two"));
    let lib = noise(300_000, 11);
    let mut lib2 = lib.clone();
    lib2[5000..5008].copy_from_slice(b"VERSION2");
    lib2.extend_from_slice(&noise(1000, 12));
    let pm = noise(60_000, 13);
    let mut pm2 = pm.clone();
    pm2[10..14].copy_from_slice(b"5.40");
    for root in [&one, &two] {
        write(root, "etc/keep", b"keep\n");
    }
    write(&one, "usr/lib/libfoo.so.1.2.3", &lib);
    symlink(&one, "usr/lib/libfoo.so.1", "libfoo.so.1.2.3");
    symlink(&one, "usr/liblink", "lib");
    write(&one, "usr/share/perl/5.36/Foo.pm", &pm);
    write(&two, "usr/lib/libfoo.so.1.2.4", &lib2);
    symlink(&two, "usr/lib/libfoo.so.1", "libfoo.so.1.2.4");
    write(&two, "usr/share/perl/5.40/Foo.pm", &pm2);
    for root in [&one, &two] {
        stamp(root, &BTreeMap::new());
    }
    (one, two)
}

#[test]
fn zdelta_patches_renamed_files_against_their_old_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (one, two) = renamed_trees(d);
    let Deltas {
        image1,
        image2,
        delta,
        zd,
        zdelta_run,
    } = deltas(&one, &two, d);
    zdelta_run.mentions(&["2 patched, 2 against another path"]);
    let raw = zstd::decode_all(std::fs::File::open(&zd).unwrap()).unwrap();
    for record in [
        &b"RELEASE_UPGRADER.base-path=system/usr/lib/libfoo.so.1.2.3\n"[..],
        b"RELEASE_UPGRADER.base-path=system/usr/share/perl/5.36/Foo.pm\n",
    ] {
        assert!(
            find(&raw, record).is_some(),
            "{}",
            String::from_utf8_lossy(record)
        );
    }
    // Noise compresses to itself: shipped whole, the two files are ~360 KB.
    let (zsize, dsize) = (
        std::fs::metadata(&zd).unwrap().len(),
        std::fs::metadata(&delta).unwrap().len(),
    );
    assert!(zsize * 20 < dsize, "zdelta {zsize} bytes, delta {dsize}");

    // The old names are removed by this very delta: expanded first (against the tree
    // as it is), then applied like a delta.
    let applied = d.join("applied");
    untar(&image1, &applied, &[]);
    apply_zdelta(&zd, &applied, d);
    let expected = d.join("expected");
    untar(&image2, &expected, &[]);
    assert_same_tree(&applied, &expected);
}

/// `text` compressed as Debian's packages compress changelogs and manuals: `gzip -9n`.
fn gzip_9n(text: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Changed `.gz` files are patched in their deflate tokens, or in their content when
/// that is far smaller, and come out byte for byte.
#[test]
fn zdelta_patches_gzip_files_in_their_content_or_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (one, two) = (d.join("one"), d.join("two"));
    let history: String = (0..4000u32)
        .map(|i| {
            format!(
                "pkg (0.{i}) old; urgency=low\n  * Fix #{}.\n\n",
                i * 7919 % 10007
            )
        })
        .collect();
    let news = "pkg (1.0) unstable; urgency=medium\n\n  * New upstream release.\n\n";
    write(
        &one,
        "usr/share/doc/pkg/changelog.gz",
        &gzip_9n(history.as_bytes()),
    );
    write(
        &two,
        "usr/share/doc/pkg/changelog.gz",
        &gzip_9n(format!("{news}{history}").as_bytes()),
    );
    // Renamed with the package (libfoo1 -> libfoo2): patched against the old name.
    write(
        &one,
        "usr/share/doc/libfoo1/NEWS.gz",
        &gzip_9n(&history.as_bytes()[..60_000]),
    );
    write(
        &two,
        "usr/share/doc/libfoo2/NEWS.gz",
        &gzip_9n(&history.as_bytes()[..61_000]),
    );
    // Its halves swapped: deflate's matches (32 KiB back at most) all change, the content
    // is two copies of the base's, so the content patch is the far smaller one.
    let words = [
        "the", "package", "now", "builds", "with", "upstream", "release", "fix", "for", "crash",
        "when", "reading", "empty", "files", "and", "manual", "page", "typo",
    ];
    let mut state = 7u64;
    let prose: Vec<u8> = (0..20_000)
        .flat_map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let word = words[(state >> 33) as usize % words.len()];
            format!("{word}{} ", (state >> 40) % 1000).into_bytes()
        })
        .collect();
    let h = &prose[..100_000];
    write(&one, "usr/share/doc/pkg/README.gz", &gzip_9n(h));
    write(
        &two,
        "usr/share/doc/pkg/README.gz",
        &gzip_9n(&[&h[50_000..], &h[..50_000]].concat()),
    );
    for root in [&one, &two] {
        stamp(root, &BTreeMap::new());
    }
    let Deltas {
        image1,
        image2,
        delta,
        zd,
        zdelta_run,
    } = deltas(&one, &two, d);
    zdelta_run.mentions(&[
        "3 patched, 1 against another path, 1 gzip files in their content, 2 in their tokens",
    ]);
    // The files compressed are ~90 KB of a delta; their patches are a few KB.
    let (zsize, dsize) = (
        std::fs::metadata(&zd).unwrap().len(),
        std::fs::metadata(&delta).unwrap().len(),
    );
    assert!(zsize * 5 < dsize, "zdelta {zsize} bytes, delta {dsize}");
    let applied = d.join("applied");
    untar(&image1, &applied, &[]);
    apply_zdelta(&zd, &applied, d);
    let expected = d.join("expected");
    untar(&image2, &expected, &[]);
    assert_same_tree(&applied, &expected);
    // --no-regzip ships them whole (their compressed bytes share nothing).
    let whole = d.join("whole.tar.zst");
    publish(&[
        "image",
        "delta",
        "--zdelta",
        "--no-regzip",
        p(&image1),
        p(&image2),
        "--out",
        p(&whole),
    ])
    .expect(0)
    .mentions(&["0 gzip files in their content, 0 in their tokens"]);
    assert!(std::fs::metadata(&whole).unwrap().len() > zsize * 5);
}

/// The zdelta `zd` with the base path of its patch for `member` replaced by `base_path`.
fn with_base_path(zd: &Path, member: &str, base_path: &str, out: &Path) {
    use ru_format::tarfile::{Reader, Writer};
    let raw = zstd::decode_all(std::fs::File::open(zd).unwrap()).unwrap();
    let mut reader = Reader::new(&raw[..]);
    let mut writer = Writer::new(Vec::new());
    let mut found = false;
    while let Some(mut entry) = reader.next_entry().unwrap() {
        if entry.path == member {
            for (k, v) in &mut entry.pax {
                if k == zdelta::BASE_PATH_KEY {
                    *v = base_path.to_owned();
                    found = true;
                }
            }
        }
        writer.append(&entry).unwrap();
        writer.copy_data(&mut reader).unwrap();
    }
    assert!(found, "no base path on {member}");
    let tar = writer.finish().unwrap();
    std::fs::write(out, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
}

#[test]
fn expand_refuses_base_paths_that_leave_the_tree_are_missing_or_differ() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (one, two) = renamed_trees(d);
    let image1 = build_image(&one, d, "one");
    let image2 = build_image(&two, d, "two");
    let zd = d.join("d.tar.zst");
    publish(&[
        "image",
        "delta",
        "--zdelta",
        p(&image1),
        p(&image2),
        "--out",
        p(&zd),
    ])
    .expect(0);
    let base = d.join("base");
    untar(&image1, &base, &[]);
    let before = manifest(&base);
    let member = "system/usr/lib/libfoo.so.1.2.4";
    // The unmodified zdelta expands (so each refusal below is the base path's doing).
    let bad = d.join("bad.tar.zst");
    with_base_path(&zd, member, "system/usr/lib/libfoo.so.1.2.3", &bad);
    zdelta::expand(&bad, &base, &mut std::io::sink()).unwrap();
    for (base_path, reason) in [
        ("system/../system/usr/lib/libfoo.so.1.2.3", "base path"),
        ("../../etc/passwd", "base path"),
        ("/system/usr/lib/libfoo.so.1.2.3", "is absolute"),
        ("usr/lib/libfoo.so.1.2.3", "under system/"),
        ("system/usr/lib/libfoo.so.9", "No such file"),
        ("system/usr/liblink/libfoo.so.1.2.3", "real directories"),
        ("system/usr/lib/libfoo.so.1", "symbolic links"),
        ("system/etc/keep", "SHA256 mismatch"),
    ] {
        with_base_path(&zd, member, base_path, &bad);
        let mut out = Vec::new();
        let err = zdelta::expand(&bad, &base, &mut out).unwrap_err();
        assert!(
            err.to_string().contains(reason),
            "{base_path}: {err} (wanted {reason:?})"
        );
        assert_eq!(manifest(&base), before, "{base_path}: base tree changed");
    }
}

#[test]
fn zdelta_sends_a_file_whose_only_change_is_its_mtime_as_a_patch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (one, two) = (d.join("one"), d.join("two"));
    let data = noise(100_000, 21);
    for root in [&one, &two] {
        write(root, "usr/share/locale/fr/bash.mo", &data);
    }
    stamp(&one, &BTreeMap::new());
    stamp(
        &two,
        &BTreeMap::from([("usr/share/locale/fr/bash.mo", 3600)]),
    );
    let Deltas {
        image1,
        image2,
        delta,
        zd,
        zdelta_run,
    } = deltas(&one, &two, d);
    zdelta_run.mentions(&["1 patched, 0 against another path"]);
    let (zsize, dsize) = (
        std::fs::metadata(&zd).unwrap().len(),
        std::fs::metadata(&delta).unwrap().len(),
    );
    assert!(
        dsize > 100_000 && zsize < 5_000,
        "zdelta {zsize} bytes, delta {dsize}"
    );
    let applied = d.join("applied");
    untar(&image1, &applied, &[]);
    apply_zdelta(&zd, &applied, d);
    let expected = d.join("expected");
    untar(&image2, &expected, &[]);
    assert_same_tree(&applied, &expected);
}

/// A channel published before zdeltas rode on their deltas lists them as entries of type
/// `zdelta`, which stop every stock client: the next `image publish` moves each onto its
/// delta's entry.
#[test]
fn a_legacy_zdelta_entry_moves_onto_its_delta_at_the_next_publish() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, secret) = key(d, "image-signing");
    let mut images = Vec::new();
    for (n, words) in [(1, 100_000), (2, 100_500), (3, 101_000)] {
        let root = d.join(format!("tree{n}"));
        write(&root, "etc/a", b"a\n");
        write(&root, "usr/share/doc/words.txt", &text(words));
        stamp(&root, &BTreeMap::new());
        images.push(build_image(&root, d, &format!("tree{n}")));
    }
    let srv = d.join("srv");
    let publish_build = |n: usize| {
        publish(&[
            "image",
            "publish",
            p(&images[n - 1]),
            "--version",
            &n.to_string(),
            "--zdelta",
            "--out",
            p(&srv),
            "--key",
            p(&secret),
            "--channel",
            "devel",
            "--device",
            "pc",
        ])
        .expect(0);
    };
    publish_build(1);
    publish_build(2);
    // Rewrite build 2's zdelta as the earlier publisher wrote it: an entry of its own.
    let index_path = srv.join("devel/pc/index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let images_json = index["images"].as_array_mut().unwrap();
    let delta = images_json
        .iter_mut()
        .find(|i| i["type"] == "delta")
        .unwrap();
    let carried = delta
        .as_object_mut()
        .unwrap()
        .remove("zdelta")
        .expect("a zdelta 1 -> 2");
    let mut legacy = delta.clone();
    legacy["type"] = "zdelta".into();
    legacy["files"] = carried["files"].clone();
    images_json.push(legacy);
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();

    publish_build(3);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entries: Vec<(String, Option<u64>, u64, bool)> = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["type"].as_str().unwrap().to_owned(),
                i["base"].as_u64(),
                i["version"].as_u64().unwrap(),
                i.get("zdelta").is_some(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("full".into(), None, 1, false),
            ("full".into(), None, 2, false),
            ("delta".into(), Some(1), 2, true),
            ("full".into(), None, 3, false),
            ("delta".into(), Some(2), 3, true),
        ]
    );
}
