//! The .deb extractor against `dpkg-deb -x` and against hostile packages.
//!
//! Real bookworm packages (downloaded once by `scripts/setup`) and packages built here
//! with `dpkg-deb --build` in every compression must extract to the same tree as
//! `dpkg-deb -x` makes, entry by entry. Hostile packages, assembled byte by byte where
//! the tools would refuse to write them, must be refused with `BadPackage` naming the
//! package and the entry, and must leave everything outside the destination untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ru_format::deb::{self, Control, EntryHeader, EntryKind, ExtractHooks, PathOwners, Policy};
use ru_format::digest::Sha256;
use ru_format::{Error, ExitCode};

use crate::support::{PUBLISH_BIN, Run};

// ---------------------------------------------------------------------------------
// Trees: what a directory holds, compared entry by entry.

/// One entry of an extracted tree, as `lstat` and its content show it.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Node {
    kind: char,
    /// Permission bits (`0o7777`); 0 for symlinks, whose mode means nothing on Linux.
    mode: u32,
    owner: Option<(u32, u32)>,
    size: u64,
    sha256: Option<Sha256>,
    target: Option<PathBuf>,
    mtime: i64,
}

struct Scan {
    nodes: BTreeMap<String, Node>,
    /// Paths sharing an inode, for every inode with more than one.
    hardlinks: BTreeSet<Vec<String>>,
}

fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Every entry below `root` (not `root` itself), never following a symlink.
fn scan(root: &Path) -> Scan {
    fn walk(
        root: &Path,
        dir: &Path,
        nodes: &mut BTreeMap<String, Node>,
        inodes: &mut BTreeMap<u64, Vec<String>>,
    ) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let (kind, size, sha256, target) = if ft.is_dir() {
                ('d', 0, None, None)
            } else if ft.is_symlink() {
                ('l', 0, None, Some(std::fs::read_link(&path).unwrap()))
            } else if ft.is_file() {
                let mut file = std::fs::File::open(&path).unwrap();
                let (digest, size) = Sha256::of_reader(&mut file).unwrap();
                if meta.nlink() > 1 {
                    inodes.entry(meta.ino()).or_default().push(rel.clone());
                }
                ('f', size, Some(digest), None)
            } else {
                ('?', 0, None, None)
            };
            nodes.insert(
                rel,
                Node {
                    kind,
                    mode: if kind == 'l' { 0 } else { meta.mode() & 0o7777 },
                    owner: as_root().then(|| (meta.uid(), meta.gid())),
                    size,
                    sha256,
                    target,
                    mtime: meta.mtime(),
                },
            );
            if ft.is_dir() {
                walk(root, &path, nodes, inodes);
            }
        }
    }
    let mut nodes = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    walk(root, root, &mut nodes, &mut inodes);
    let hardlinks = inodes
        .into_values()
        .filter(|paths| paths.len() > 1)
        .map(|mut paths| {
            paths.sort();
            paths
        })
        .collect();
    Scan { nodes, hardlinks }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asserts that two trees hold the same entries, listing every difference.
///
/// One difference is tar's, not ours: tar restores a directory's mtime as soon as it
/// extracts an entry outside that directory, so when the archive comes back into it
/// later (dpkg-deb puts symlinks last) the directory keeps the time of the extraction.
/// We give every directory the archive's mtime. So a directory whose mtime under
/// `dpkg-deb -x` is not older than `dpkg_started` (the archive cannot have said that)
/// is compared on everything but its mtime.
#[track_caller]
fn assert_same_tree(ours: &Path, theirs: &Path, dpkg_started: i64, what: &str) {
    let (a, b) = (scan(ours), scan(theirs));
    let mut diffs = Vec::new();
    for (path, node) in &a.nodes {
        match b.nodes.get(path) {
            None => diffs.push(format!("only in ours: {path}")),
            Some(other)
                if other.kind == 'd'
                    && other.mtime >= dpkg_started
                    && other
                        == &Node {
                            mtime: other.mtime,
                            ..node.clone()
                        } => {}
            Some(other) if other != node => {
                diffs.push(format!("{path}:\n  ours   {node:?}\n  dpkg   {other:?}"))
            }
            Some(_) => {}
        }
    }
    for path in b.nodes.keys().filter(|p| !a.nodes.contains_key(*p)) {
        diffs.push(format!("only in dpkg-deb -x: {path}"));
    }
    if a.hardlinks != b.hardlinks {
        diffs.push(format!(
            "hard-link groups differ:\n  ours {:?}\n  dpkg {:?}",
            a.hardlinks, b.hardlinks
        ));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences from dpkg-deb -x:\n{}",
        diffs.len(),
        diffs[..diffs.len().min(40)].join("\n")
    );
    assert!(!a.nodes.is_empty(), "{what}: nothing extracted");
}

/// Asserts that the manifest material matches what is on disk.
#[track_caller]
fn assert_entries_match_tree(extracted: &deb::Extracted, dest: &Path) {
    let tree = scan(dest);
    let listed: BTreeSet<&str> = extracted.entries.iter().map(|e| e.path.as_str()).collect();
    let on_disk: BTreeSet<&str> = tree.nodes.keys().map(String::as_str).collect();
    assert_eq!(listed, on_disk, "entries listed vs on disk");
    for entry in &extracted.entries {
        let node = &tree.nodes[&entry.path];
        assert_eq!(node.mtime, entry.mtime, "{}", entry.path);
        match &entry.kind {
            EntryKind::File { size, sha256 } => {
                assert_eq!(
                    (node.kind, node.size, node.sha256),
                    ('f', *size, Some(*sha256))
                );
                assert_eq!(node.mode, entry.mode, "{}", entry.path);
            }
            EntryKind::Dir => assert_eq!((node.kind, node.mode), ('d', entry.mode)),
            EntryKind::Symlink { target } => {
                assert_eq!(node.target.as_deref(), Some(Path::new(target)))
            }
            EntryKind::HardLink { target } => {
                let linked = &tree.nodes[target];
                assert_eq!((node.kind, node.sha256), ('f', linked.sha256));
                let ino = |p: &str| std::fs::metadata(dest.join(p)).unwrap().ino();
                assert_eq!(ino(&entry.path), ino(target), "{}", entry.path);
            }
        }
    }
}

fn dpkg_deb_extract(deb: &Path, dest: &Path) {
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb -x {}: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Extracts `deb` with `policy` and with `dpkg-deb -x`, and compares the trees. Returns
/// our result.
fn compare_with_dpkg_deb(deb: &Path, policy: &Policy, subtree: &str) -> deb::Extracted {
    let work = tempfile::tempdir().unwrap();
    let (ours, theirs) = (work.path().join("ours"), work.path().join("dpkg"));
    std::fs::create_dir(&ours).unwrap();
    let extracted = deb::extract(deb, &ours, policy, &mut ())
        .unwrap_or_else(|e| panic!("{}: {e}", deb.display()));
    let started = now();
    dpkg_deb_extract(deb, &theirs);
    assert_same_tree(
        &ours,
        &theirs.join(subtree),
        started,
        &deb.display().to_string(),
    );
    assert_entries_match_tree(&extracted, &ours);
    extracted
}

// ---------------------------------------------------------------------------------
// Real packages.

fn cached_debs() -> Result<Vec<PathBuf>, String> {
    let dir = match std::env::var_os("RELEASE_UPGRADER_TEST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/release-upgrader-tests"),
    }
    .join("debs");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e} (run scripts/setup)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    if debs.is_empty() {
        return Err(format!("no .deb in {} (run scripts/setup)", dir.display()));
    }
    Ok(debs)
}

#[test]
fn real_bookworm_packages_extract_exactly_like_dpkg_deb() {
    let debs = match cached_debs() {
        Ok(debs) => debs,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let mut large = false;
    for deb in &debs {
        let extracted = compare_with_dpkg_deb(deb, &Policy::upstream(), "");
        let control = deb::read_control(deb).unwrap();
        assert_eq!(control.package, extracted.control.package);
        assert!(
            deb.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{}_", control.package)),
            "{}",
            deb.display()
        );
        large |= std::fs::metadata(deb).unwrap().len() > 30 << 20;
    }
    assert!(
        large,
        "no package over 30 MB in the cache (run scripts/setup)"
    );
}

// ---------------------------------------------------------------------------------
// Packages built here with dpkg-deb.

const MTIME: i64 = 1_600_000_000;

fn touch(path: &Path, mtime: i64) {
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &nix::sys::time::TimeSpec::new(mtime, 0),
        &nix::sys::time::TimeSpec::new(mtime, 0),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Pseudo-random bytes that compress badly, so the big file spans many buffers.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A package source tree under `dir/root` with every kind of entry dpkg-deb -x keeps:
/// modes from 0555 to 4755 and sticky, hard links, relative, absolute and dangling
/// symlinks, a name over 100 bytes, non-ASCII names, an empty and a multi-megabyte
/// file, and a distinct mtime on everything. `prefix` is where the files go.
fn package_tree(dir: &Path, package: &str, prefix: &str, setid: bool) -> PathBuf {
    let root = dir.join("root");
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian).unwrap();
    let base = root.join(prefix);
    let mut t = MTIME;
    let mut next = || {
        t += 1000;
        t
    };
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![
        ("bin/tool".into(), b"#!/bin/sh\necho tool\n".to_vec(), 0o755),
        ("lib/x/big.bin".into(), noise(3 << 20, 7), 0o644),
        ("lib/x/empty".into(), Vec::new(), 0o644),
        ("lib/x/private".into(), b"secret".to_vec(), 0o600),
        ("lib/x/odd size".into(), noise(513, 3), 0o640),
        ("share/ünïcødé/naïve file".into(), b"utf-8".to_vec(), 0o444),
        (
            format!("share/{}/{}", "d".repeat(90), "f".repeat(60)),
            b"long".to_vec(),
            0o644,
        ),
        ("share/readonly/inside".into(), b"ro".to_vec(), 0o644),
    ];
    if setid {
        files.push(("bin/suid".into(), b"suid".to_vec(), 0o4755));
        files.push(("bin/sgid".into(), b"sgid".to_vec(), 0o2755));
    }
    // As dpkg-gencontrol counts: files rounded up to a KiB (the hard link adds nothing),
    // a KiB for each link and directory; a generous 100 for those.
    let installed_kib: u64 = files
        .iter()
        .map(|(_, data, _)| (data.len() as u64).div_ceil(1024))
        .sum::<u64>()
        + 100;
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: {package}\nVersion: 1.0-1\nArchitecture: amd64\n\
             Maintainer: Test <test@example.invalid>\nInstalled-Size: {installed_kib}\n\
             Description: test package\n long\n .\n text\n"
        ),
    )
    .unwrap();
    for (rel, data, mode) in &files {
        let path = base.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        chmod(&path, *mode);
        touch(&path, next());
    }
    std::fs::hard_link(base.join("lib/x/big.bin"), base.join("lib/x/big-hardlink")).unwrap();
    std::fs::create_dir_all(base.join("share/sticky")).unwrap();
    chmod(&base.join("share/sticky"), 0o1777);
    let links = [
        ("lib/x/rel", "big.bin".to_owned()),
        ("lib/x/up", "../../bin/tool".to_owned()),
        ("lib/x/abs", format!("/{prefix}/bin/tool")),
        ("lib/x/dangling", "no-such-file".to_owned()),
    ];
    for (rel, target) in &links {
        std::os::unix::fs::symlink(target, base.join(rel)).unwrap();
        touch(&base.join(rel), next());
    }
    if setid {
        std::fs::create_dir_all(base.join("share/setgid-dir")).unwrap();
        chmod(&base.join("share/setgid-dir"), 0o2775);
    }
    // Directories last, deepest first, so their mtimes stick.
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() && p != debian {
                stack.push(p.clone());
                dirs.push(p);
            }
        }
    }
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in &dirs {
        touch(d, next());
    }
    chmod(&base.join("share/readonly"), 0o555);
    root
}

fn dpkg_deb_build(root: &Path, deb: &Path, compression: &str) {
    let out = Command::new("dpkg-deb")
        .args([
            "--root-owner-group",
            "--nocheck",
            &format!("-Z{compression}"),
            "--build",
        ])
        .arg(root)
        .arg(deb)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb --build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rebuilds an uncompressed package with a bzip2 data member, with `ar` and `bzip2`.
fn with_bzip2_data(plain: &Path, out: &Path) {
    let work = tempfile::tempdir().unwrap();
    run(Command::new("ar")
        .arg("x")
        .arg(plain)
        .current_dir(work.path()));
    run(Command::new("bzip2")
        .arg("data.tar")
        .current_dir(work.path()));
    let control = [
        "control.tar",
        "control.tar.gz",
        "control.tar.xz",
        "control.tar.zst",
    ]
    .into_iter()
    .find(|m| work.path().join(m).exists())
    .unwrap();
    run(Command::new("ar")
        .arg("rc")
        .arg(out)
        .args(["debian-binary", control, "data.tar.bz2"])
        .current_dir(work.path()));
}

#[test]
fn every_compression_extracts_like_dpkg_deb() {
    let work = tempfile::tempdir().unwrap();
    let root = package_tree(work.path(), "variants", "usr", true);
    for compression in ["none", "gzip", "xz", "zstd"] {
        let deb = work.path().join(format!("variants-{compression}.deb"));
        dpkg_deb_build(&root, &deb, compression);
        let extracted = compare_with_dpkg_deb(&deb, &Policy::upstream(), "");
        assert_eq!(extracted.control.package, "variants");
        assert_eq!(
            extracted.control.field("Description"),
            Some("test package\n long\n .\n text")
        );
    }
    let bz2 = work.path().join("variants-bzip2.deb");
    with_bzip2_data(&work.path().join("variants-none.deb"), &bz2);
    compare_with_dpkg_deb(&bz2, &Policy::upstream(), "");
}

#[test]
fn a_helper_extracts_its_prefix_into_dest_like_dpkg_deb() {
    let work = tempfile::tempdir().unwrap();
    let root = package_tree(
        work.path(),
        "release-upgrader-test",
        "usr/lib/release-upgrader",
        false,
    );
    let deb = work.path().join("helper.deb");
    dpkg_deb_build(&root, &deb, "xz");
    let extracted =
        compare_with_dpkg_deb(&deb, &Policy::helper("amd64"), "usr/lib/release-upgrader");
    let paths: Vec<&str> = extracted.entries.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"bin/tool"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("usr")), "{paths:?}");
    let hardlink = extracted
        .entries
        .iter()
        .find(|e| matches!(e.kind, EntryKind::HardLink { .. }))
        .expect("dpkg-deb keeps the hard link");
    assert!(
        matches!(&hardlink.kind, EntryKind::HardLink { target } if target.starts_with("lib/x/big")),
        "{hardlink:?}"
    );
}

/// The hook of one of several extractions running at once: claims its paths in the
/// shared owners.
struct Claims<'a> {
    owners: &'a std::sync::Mutex<PathOwners>,
    package: &'a str,
}

impl ExtractHooks for Claims<'_> {
    fn before_entry(&mut self, entry: &EntryHeader<'_>) -> Result<(), Error> {
        self.owners
            .lock()
            .unwrap()
            .claim(Path::new(self.package), self.package, entry)
    }
}

#[test]
fn helpers_extracted_at_once_into_one_tree_match_dpkg_deb_one_after_another() {
    let work = tempfile::tempdir().unwrap();
    // Three helpers sharing their upper directories, each with every kind of entry.
    let names = [
        "release-upgrader-a",
        "release-upgrader-b",
        "release-upgrader-c",
    ];
    let debs: Vec<PathBuf> = names
        .iter()
        .map(|name| {
            let dir = work.path().join(name);
            let prefix = format!("usr/lib/release-upgrader/root/{name}");
            let root = package_tree(&dir, name, &prefix, false);
            let deb = work.path().join(format!("{name}.deb"));
            dpkg_deb_build(&root, &deb, "xz");
            deb
        })
        .collect();
    let (ours, theirs) = (work.path().join("ours"), work.path().join("dpkg"));
    std::fs::create_dir(&ours).unwrap();
    let owners = std::sync::Mutex::new(PathOwners::new());
    let policy = Policy::helper("amd64");
    let start = std::sync::Barrier::new(debs.len());
    let extracted: Vec<deb::Extracted> = std::thread::scope(|scope| {
        let threads: Vec<_> = debs
            .iter()
            .zip(names)
            .map(|(deb, package)| {
                let (ours, owners, policy, start) = (&ours, &owners, &policy, &start);
                scope.spawn(move || {
                    start.wait();
                    let mut claims = Claims { owners, package };
                    deb::extract_unfinished(deb, ours, policy, &mut claims).unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    // Until finished, directories stay private: 0700.
    let root_mode = std::fs::metadata(ours.join("root")).unwrap().mode() & 0o7777;
    assert_eq!(root_mode, 0o700);
    for one in &extracted {
        deb::finish_dirs(&ours, one).unwrap();
    }
    let started = now();
    for deb in &debs {
        dpkg_deb_extract(deb, &theirs);
    }
    assert_same_tree(
        &ours,
        &theirs.join("usr/lib/release-upgrader"),
        started,
        "three helpers at once",
    );
    let owners = owners.into_inner().unwrap();
    for name in names {
        assert_eq!(owners.owner(&format!("root/{name}/bin/tool")), Some(name));
    }
}

#[test]
fn the_destination_keeps_its_own_mode_and_mtime() {
    // dpkg-deb -x gives the destination the `./` entry's metadata; we leave the
    // caller's directory as the caller made it.
    let work = tempfile::tempdir().unwrap();
    let deb = work.path().join("p.deb");
    let data = Tar::new()
        .add(E::dir("./").mode(0o700).mtime(12345))
        .add(E::file("./x", b"x"))
        .finish();
    std::fs::write(&deb, build_deb(&control_text("pkg", "all"), &[], data)).unwrap();
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    chmod(&dest, 0o750);
    touch(&dest, 999);
    let extracted = deb::extract(&deb, &dest, &Policy::upstream(), &mut ()).unwrap();
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o750);
    assert_ne!(meta.mtime(), 12345);
    assert_eq!(
        extracted
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect::<Vec<_>>(),
        ["x"],
        "the root is not an entry"
    );
}

#[test]
fn numeric_owners_from_the_archive_are_applied_as_root() {
    if !as_root() {
        eprintln!("skipped: owners are applied only when running as root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let deb = work.path().join("p.deb");
    let data = Tar::new()
        .add(E::dir("./d/").owner(1234, 5678))
        .add(E::file("./d/f", b"f").owner(4321, 8765).mode(0o4750))
        .add(E::symlink("./d/l", "f").owner(1111, 2222))
        .finish();
    std::fs::write(&deb, build_deb(&control_text("pkg", "all"), &[], data)).unwrap();
    let ours = work.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    deb::extract(&deb, &ours, &Policy::upstream(), &mut ()).unwrap();
    let owner = |p: &str| {
        let m = std::fs::symlink_metadata(ours.join(p)).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(owner("d"), (1234, 5678, 0o755));
    assert_eq!(
        owner("d/f"),
        (4321, 8765, 0o4750),
        "chown must not eat the setuid bit"
    );
    assert_eq!((owner("d/l").0, owner("d/l").1), (1111, 2222));
    // The same as dpkg-deb -x, whose tar finds no user names for these ids.
    let theirs = work.path().join("dpkg");
    let started = now();
    dpkg_deb_extract(&deb, &theirs);
    assert_same_tree(&ours, &theirs, started, "crafted owners");
}

#[test]
fn missing_parent_directories_are_created_and_listed() {
    let work = tempfile::tempdir().unwrap();
    let deb = work.path().join("p.deb");
    let data = Tar::new()
        .add(E::file("./a/b/c/f", b"deep"))
        .add(E::file("./a/g", b"g"))
        .finish();
    std::fs::write(&deb, build_deb(&control_text("pkg", "all"), &[], data)).unwrap();
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let extracted = deb::extract(&deb, &dest, &Policy::upstream(), &mut ()).unwrap();
    let listed: Vec<(&str, u32)> = extracted
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.mode))
        .collect();
    assert_eq!(
        listed,
        [
            ("a", 0o755),
            ("a/b", 0o755),
            ("a/b/c", 0o755),
            ("a/b/c/f", 0o644),
            ("a/g", 0o644)
        ]
    );
    assert_entries_match_tree(&extracted, &dest);
}

// ---------------------------------------------------------------------------------
// Hand-made archives: what the tools would refuse to write.

/// One tar entry, written byte by byte.
struct E {
    name: Vec<u8>,
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    link: Vec<u8>,
    data: Vec<u8>,
}

impl E {
    fn new(name: &str, typeflag: u8, mode: u32) -> E {
        E {
            name: name.as_bytes().to_vec(),
            typeflag,
            mode,
            uid: 0,
            gid: 0,
            mtime: MTIME,
            link: Vec::new(),
            data: Vec::new(),
        }
    }
    fn file(name: &str, data: &[u8]) -> E {
        E {
            data: data.to_vec(),
            ..E::new(name, b'0', 0o644)
        }
    }
    fn dir(name: &str) -> E {
        E::new(name, b'5', 0o755)
    }
    fn symlink(name: &str, target: &str) -> E {
        E {
            link: target.as_bytes().to_vec(),
            ..E::new(name, b'2', 0o777)
        }
    }
    fn hardlink(name: &str, target: &str) -> E {
        E {
            link: target.as_bytes().to_vec(),
            ..E::new(name, b'1', 0o644)
        }
    }
    fn mode(self, mode: u32) -> E {
        E { mode, ..self }
    }
    fn mtime(self, mtime: i64) -> E {
        E { mtime, ..self }
    }
    fn owner(self, uid: u64, gid: u64) -> E {
        E { uid, gid, ..self }
    }
}

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

/// A tar stream in GNU format; names over 100 bytes get a GNU long-name header.
struct Tar(Vec<u8>);

impl Tar {
    fn new() -> Tar {
        Tar(Vec::new())
    }

    fn header(name: &[u8], typeflag: u8, e: &E, size: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        octal(&mut h[100..108], u64::from(e.mode));
        octal(&mut h[108..116], e.uid);
        octal(&mut h[116..124], e.gid);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], e.mtime as u64);
        h[156] = typeflag;
        let link = &e.link[..e.link.len().min(100)];
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..265].copy_from_slice(b"ustar  \0");
        Tar::checksum(&mut h);
        h
    }

    fn checksum(h: &mut [u8; 512]) {
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
    }

    fn raw(mut self, bytes: &[u8]) -> Tar {
        self.0.extend_from_slice(bytes);
        self
    }

    fn block_data(mut self, data: &[u8]) -> Tar {
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn add(self, e: E) -> Tar {
        let mut tar = self;
        if e.name.len() > 100 {
            let mut long = e.name.clone();
            long.push(0);
            let h = Tar::header(
                b"././@LongLink",
                b'L',
                &E::new("", b'L', 0o644),
                long.len() as u64,
            );
            tar = tar.raw(&h).block_data(&long);
        }
        let h = Tar::header(&e.name, e.typeflag, &e, e.data.len() as u64);
        tar.raw(&h).block_data(&e.data)
    }

    /// A pax extended header applying to the next entry.
    fn pax(self, typeflag: u8, records: &[(&str, &str)]) -> Tar {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = format!(" {k}={v}\n");
            let mut len = rest.len() + 1;
            while format!("{len}{rest}").len() != len {
                len += 1;
            }
            body.extend(format!("{len}{rest}").into_bytes());
        }
        let h = Tar::header(
            b"./PaxHeaders/x",
            typeflag,
            &E::new("", typeflag, 0o644),
            body.len() as u64,
        );
        self.raw(&h).block_data(&body)
    }

    fn finish(self) -> Vec<u8> {
        self.raw(&[0u8; 1024]).0
    }
}

/// An ar archive of `members`.
fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            "100644",
            data.len()
        );
        assert_eq!(header.len(), 60);
        out.extend(header.into_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

fn control_text(package: &str, arch: &str) -> String {
    format!(
        "Package: {package}\nVersion: 1.0\nArchitecture: {arch}\n\
         Maintainer: Test <test@example.invalid>\nDescription: test\n"
    )
}

fn control_tar(control: &str, scripts: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = Tar::new()
        .add(E::dir("./"))
        .add(E::file("./control", control.as_bytes()));
    for (name, body) in scripts {
        tar = tar.add(E::file(&format!("./{name}"), body.as_bytes()).mode(0o755));
    }
    tar.finish()
}

fn build_deb(control: &str, scripts: &[(&str, &str)], data: Vec<u8>) -> Vec<u8> {
    ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control_tar(control, scripts)),
        ("data.tar", &data),
    ])
}

fn xz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const PREFIX: &str = "./usr/lib/release-upgrader";

/// The directories down to the helper prefix, as dpkg-deb writes them.
fn helper_dirs() -> Tar {
    Tar::new()
        .add(E::dir("./"))
        .add(E::dir("./usr/"))
        .add(E::dir("./usr/lib/"))
        .add(E::dir(&format!("{PREFIX}/")))
        .add(E::dir(&format!("{PREFIX}/bin/")))
}

fn helper_control() -> String {
    control_text("release-upgrader-test", "amd64")
}

/// A helper package whose data is the prefix's directories plus `entries`.
fn helper_deb(entries: Vec<E>) -> Vec<u8> {
    let mut tar = helper_dirs();
    for e in entries {
        tar = tar.add(e);
    }
    build_deb(&helper_control(), &[], tar.finish())
}

fn p(rel: &str) -> String {
    format!("{PREFIX}/{rel}")
}

/// A temp root holding the package, an empty destination and an `outside` directory
/// the hostile packages aim at; everything but the destination is snapshotted.
struct Arena {
    dir: tempfile::TempDir,
}

impl Arena {
    fn new() -> Arena {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dest")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/victim"), b"precious").unwrap();
        Arena { dir }
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn outside(&self) -> String {
        self.root().join("outside").display().to_string()
    }
    fn deb(&self) -> PathBuf {
        self.root().join("pkg.deb")
    }
    fn dest(&self) -> PathBuf {
        self.root().join("dest")
    }
    /// Removes what an earlier extraction left, as a caller does after a failure.
    fn reset_dest(&self) {
        std::fs::remove_dir_all(self.dest()).unwrap();
        std::fs::create_dir(self.dest()).unwrap();
    }
    /// Everything under the root except the destination, and the root's own metadata.
    fn snapshot(&self) -> (BTreeMap<String, Node>, Node) {
        let mut nodes = scan(self.root()).nodes;
        nodes.retain(|path, _| !path.starts_with("dest/") && path != "dest");
        let meta = std::fs::metadata(self.root()).unwrap();
        let root = Node {
            kind: 'd',
            mode: meta.mode() & 0o7777,
            owner: None,
            size: 0,
            sha256: None,
            target: None,
            mtime: meta.mtime(),
        };
        (nodes, root)
    }
}

/// Asserts that `deb` is refused under `policy` with a `BadPackage` naming the package
/// and mentioning every one of `needles`, and that nothing outside the destination
/// changed.
#[track_caller]
/// `deb` extracts under `policy` into a fresh destination.
fn assert_extracts(arena: &Arena, deb: &[u8], policy: &Policy) {
    arena.reset_dest();
    std::fs::write(arena.deb(), deb).unwrap();
    deb::extract(&arena.deb(), &arena.dest(), policy, &mut ()).unwrap();
}

fn assert_refused(arena: &Arena, deb: &[u8], policy: &Policy, needles: &[&str]) -> String {
    arena.reset_dest();
    std::fs::write(arena.deb(), deb).unwrap();
    let before = arena.snapshot();
    let result = deb::extract(&arena.deb(), &arena.dest(), policy, &mut ());
    let after = arena.snapshot();
    let err = match result {
        Ok(x) => panic!("accepted: {:?}", x.entries),
        Err(err) => err,
    };
    let Error::BadPackage { deb: named, reason } = &err else {
        panic!("not BadPackage: {err:?}");
    };
    assert_eq!(named, &arena.deb().display().to_string());
    assert_eq!(err.exit_code(), ExitCode::Verification);
    for needle in needles {
        assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
    }
    assert_eq!(before, after, "something outside the destination changed");
    assert_eq!(
        std::fs::read(arena.root().join("outside/victim")).unwrap(),
        b"precious"
    );
    reason.clone()
}

/// Like [`assert_refused`], for one hostile helper package in a fresh arena.
#[track_caller]
fn refused_helper(entries: impl FnOnce(&Arena) -> Vec<E>, needles: &[&str]) -> String {
    let arena = Arena::new();
    let deb = helper_deb(entries(&arena));
    assert_refused(&arena, &deb, &Policy::helper("amd64"), needles)
}

#[test]
fn a_well_formed_helper_is_accepted() {
    let arena = Arena::new();
    let deb = helper_deb(vec![
        E::file(&p("bin/tool"), b"tool").mode(0o755),
        E::symlink(&p("bin/rel"), "tool"),
        E::symlink(&p("bin/abs"), "/usr/lib/release-upgrader/bin/tool"),
        E::symlink(&p("bin/prefix"), ".."),
        E::hardlink(&p("bin/hard"), &p("bin/tool")),
        E::dir(&p("root/")).mode(0o1755),
    ]);
    arena.reset_dest();
    std::fs::write(arena.deb(), deb).unwrap();
    let x = deb::extract(
        &arena.deb(),
        &arena.dest(),
        &Policy::helper("amd64"),
        &mut (),
    )
    .unwrap();
    assert_eq!(x.control.package, "release-upgrader-test");
    assert_entries_match_tree(&x, &arena.dest());
    let paths: Vec<&str> = x.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bin",
            "bin/tool",
            "bin/rel",
            "bin/abs",
            "bin/prefix",
            "bin/hard",
            "root"
        ]
    );
}

#[test]
fn absolute_names_are_refused() {
    refused_helper(
        |a| vec![E::file(&format!("{}/abs", a.outside()), b"x")],
        &["absolute file name", "/outside/abs"],
    );
    // Not even the upstream policy takes them.
    let arena = Arena::new();
    let data = Tar::new()
        .add(E::file(&format!("{}/abs", arena.outside()), b"x"))
        .finish();
    assert_refused(
        &arena,
        &build_deb(&control_text("pkg", "all"), &[], data),
        &Policy::upstream(),
        &["absolute"],
    );
}

#[test]
fn dot_dot_is_refused_in_names_long_names_and_pax_paths() {
    refused_helper(
        |_| vec![E::file(&p("../../../../outside/x"), b"x")],
        &["`..`", "outside/x"],
    );
    let long = format!("{}/{}/../../../../../outside/x", PREFIX, "l".repeat(100));
    refused_helper(|_| vec![E::file(&long, b"x")], &["`..`"]);
    let arena = Arena::new();
    let data = helper_dirs()
        .pax(
            b'x',
            &[("path", "usr/lib/release-upgrader/../../../outside/x")],
        )
        .add(E::file(&p("bin/innocent"), b"x"))
        .finish();
    assert_refused(
        &arena,
        &build_deb(&helper_control(), &[], data),
        &Policy::helper("amd64"),
        &["`..`", "outside/x"],
    );
}

#[test]
fn paths_outside_the_prefix_are_refused() {
    refused_helper(
        |_| vec![E::file("./etc/passwd", b"x")],
        &["./etc/passwd", "outside /usr/lib/release-upgrader/"],
    );
    refused_helper(
        |_| vec![E::file("./usr/lib/release-upgrader-evil/x", b"x")],
        &["release-upgrader-evil/x", "outside"],
    );
    refused_helper(
        |_| vec![E::file("./usr/lib/x", b"x")],
        &["./usr/lib/x", "outside"],
    );
}

#[test]
fn the_prefix_and_its_parents_must_be_directories() {
    let arena = Arena::new();
    let data = Tar::new()
        .add(E::dir("./"))
        .add(E::dir("./usr/"))
        .add(E::symlink("./usr/lib", &arena.outside()))
        .finish();
    assert_refused(
        &arena,
        &build_deb(&helper_control(), &[], data),
        &Policy::helper("amd64"),
        &["./usr/lib", "a symlink where only a directory may be"],
    );
    let arena = Arena::new();
    let data = Tar::new()
        .add(E::dir("./usr/lib/"))
        .add(E::symlink(PREFIX, &arena.outside()))
        .finish();
    assert_refused(
        &arena,
        &build_deb(&helper_control(), &[], data),
        &Policy::helper("amd64"),
        &[PREFIX, "only a directory"],
    );
}

#[test]
fn symlinks_escaping_the_prefix_are_refused() {
    refused_helper(
        |_| vec![E::symlink(&p("bin/x"), "/etc/passwd")],
        &["bin/x", "\"/etc/passwd\"", "outside"],
    );
    refused_helper(
        |a| vec![E::symlink(&p("bin/x"), &a.outside())],
        &["bin/x", "outside"],
    );
    refused_helper(
        |_| vec![E::symlink(&p("bin/x"), "../../../../etc/passwd")],
        &["bin/x", "outside"],
    );
    refused_helper(
        |_| vec![E::symlink(&p("bin/x"), "../../../../../../../../../etc")],
        &["bin/x", "climbs above"],
    );
    refused_helper(
        |_| {
            vec![E::symlink(
                &p("bin/x"),
                "/usr/lib/release-upgrader/../../../etc",
            )]
        },
        &["bin/x", "`..` after"],
    );
    // Two links that each stay inside, lexically, but escape together.
    refused_helper(
        |_| {
            vec![
                E::symlink(&p("bin/up"), ".."),
                E::symlink(&p("bin/esc"), "up/../../x"),
            ]
        },
        &["bin/esc", "`..` after a path component"],
    );
}

#[test]
fn hard_links_must_name_a_regular_file_extracted_before() {
    refused_helper(
        |_| vec![E::hardlink(&p("bin/h"), "./etc/passwd")],
        &["bin/h", "outside"],
    );
    refused_helper(
        |a| vec![E::hardlink(&p("bin/h"), &format!("{}/victim", a.outside()))],
        &["bin/h", "absolute"],
    );
    refused_helper(
        |_| vec![E::hardlink(&p("bin/h"), &p("bin/../../../../etc/passwd"))],
        &["bin/h", "`..`"],
    );
    refused_helper(
        |_| {
            vec![
                E::hardlink(&p("bin/h"), &p("bin/later")),
                E::file(&p("bin/later"), b"x"),
            ]
        },
        &["bin/h", "not extracted before"],
    );
    refused_helper(
        |_| vec![E::hardlink(&p("bin/h"), &p("bin"))],
        &["bin/h", "not a regular file"],
    );
    refused_helper(
        |_| {
            vec![
                E::symlink(&p("bin/s"), "x"),
                E::hardlink(&p("bin/h"), &p("bin/s")),
            ]
        },
        &["bin/h", "not a regular file"],
    );
    // And under the upstream policy too.
    let arena = Arena::new();
    let data = Tar::new()
        .add(E::hardlink("./h", &format!("{}/victim", arena.outside())))
        .finish();
    assert_refused(
        &arena,
        &build_deb(&control_text("pkg", "all"), &[], data),
        &Policy::upstream(),
        &["./h", "absolute"],
    );
}

#[test]
fn nothing_is_written_through_a_symlink() {
    // Upstream packages may carry links anywhere, but never write through them.
    let arena = Arena::new();
    let data = Tar::new()
        .add(E::symlink("./x", &arena.outside()))
        .add(E::file("./x/evil", b"evil"))
        .finish();
    assert_refused(
        &arena,
        &build_deb(&control_text("pkg", "all"), &[], data),
        &Policy::upstream(),
        &["./x/evil", "its parent x is a symlink"],
    );
    assert!(!Path::new(&arena.outside()).join("evil").exists());
    // A deeper variant: a directory entry below the link.
    let arena = Arena::new();
    let data = Tar::new()
        .add(E::symlink("./x", &arena.outside()))
        .add(E::dir("./x/sub/"))
        .finish();
    assert_refused(
        &arena,
        &build_deb(&control_text("pkg", "all"), &[], data),
        &Policy::upstream(),
        &["./x/sub/", "symlink"],
    );
    // A helper's link inside its prefix is no way through either.
    refused_helper(
        |_| {
            vec![
                E::symlink(&p("x"), "/usr/lib/release-upgrader/bin"),
                E::file(&p("x/evil"), b"evil"),
            ]
        },
        &["x/evil", "its parent x is a symlink"],
    );
    // Nor is a file replaced by a link to the outside, or the other way round.
    let arena = Arena::new();
    let data = Tar::new()
        .add(E::symlink("./x", &format!("{}/victim", arena.outside())))
        .add(E::file("./x", b"overwrite"))
        .finish();
    assert_refused(
        &arena,
        &build_deb(&control_text("pkg", "all"), &[], data),
        &Policy::upstream(),
        &["./x", "shipped twice"],
    );
}

#[test]
fn devices_fifos_and_exotic_types_are_refused_by_every_policy() {
    for (typeflag, what) in [
        (b'3', "character devices are not allowed"),
        (b'4', "block devices are not allowed"),
        (b'6', "fifos are not allowed"),
        (b'S', "GNU sparse file"),
        (b'V', "unsupported tar entry type 'V'"),
        (b'M', "unsupported tar entry type 'M'"),
    ] {
        for policy in [Policy::helper("amd64"), Policy::upstream()] {
            let arena = Arena::new();
            let deb = helper_deb(vec![E::new(&p("bin/thing"), typeflag, 0o644)]);
            assert_refused(&arena, &deb, &policy, &["bin/thing", what]);
        }
    }
}

#[test]
fn setuid_and_setgid_bits_are_refused_in_helpers() {
    refused_helper(
        |_| vec![E::file(&p("bin/su"), b"x").mode(0o4755)],
        &["bin/su", "setuid mode 4755"],
    );
    refused_helper(
        |_| vec![E::file(&p("bin/sg"), b"x").mode(0o2755)],
        &["bin/sg", "setgid mode 2755"],
    );
    refused_helper(
        |_| vec![E::dir(&p("dir/")).mode(0o2775)],
        &["dir/", "setgid"],
    );
    refused_helper(
        |_| vec![E::file(&p("bin/both"), b"x").mode(0o6755)],
        &["setuid and setgid"],
    );
}

#[test]
fn a_path_shipped_twice_is_refused() {
    refused_helper(
        |_| vec![E::file(&p("bin/a"), b"1"), E::file(&p("bin/a"), b"2")],
        &["bin/a", "shipped twice"],
    );
    refused_helper(
        |_| vec![E::file(&p("bin/a"), b"1"), E::dir(&p("bin/a/"))],
        &["bin/a/", "shipped twice"],
    );
    refused_helper(
        |_| vec![E::dir(&p("bin/a/")), E::symlink(&p("bin/a"), "x")],
        &["bin/a", "shipped twice"],
    );
    refused_helper(
        |_| vec![E::file(&p("bin/a"), b"1"), E::file(&p("bin//./a"), b"2")],
        &["shipped twice"],
    );
}

#[test]
fn a_directory_listed_twice_is_fine_and_keeps_its_last_metadata() {
    let arena = Arena::new();
    let deb = helper_deb(vec![
        E::dir(&p("d/")).mode(0o700).mtime(1),
        E::file(&p("d/f"), b"f"),
        E::dir(&p("d/")).mode(0o750).mtime(2),
    ]);
    arena.reset_dest();
    std::fs::write(arena.deb(), deb).unwrap();
    let x = deb::extract(
        &arena.deb(),
        &arena.dest(),
        &Policy::helper("amd64"),
        &mut (),
    )
    .unwrap();
    let d = x.entries.iter().find(|e| e.path == "d").unwrap();
    assert_eq!((d.mode, d.mtime), (0o750, 2));
    assert_eq!(x.entries.iter().filter(|e| e.path == "d").count(), 1);
    assert_entries_match_tree(&x, &arena.dest());
}

#[test]
fn maintainer_scripts_are_refused_unless_declared_reversible_and_never_run() {
    let arena = Arena::new();
    let ran = arena.root().join("outside/ran");
    let script = format!("#!/bin/sh\ntouch {}\n", ran.display());
    for name in ["preinst", "postinst", "prerm", "postrm", "config"] {
        let deb = build_deb(
            &helper_control(),
            &[(name, &script)],
            helper_dirs().finish(),
        );
        assert_refused(
            &arena,
            &deb,
            &Policy::helper("amd64"),
            &[name, "X-Release-Upgrader-Reversible: yes"],
        );
    }
    let reversible = format!("{}X-Release-Upgrader-Reversible: yes\n", helper_control());
    let deb = build_deb(
        &reversible,
        &[("postinst", &script), ("prerm", &script)],
        helper_dirs().add(E::file(&p("bin/x"), b"x")).finish(),
    );
    arena.reset_dest();
    std::fs::write(arena.deb(), deb).unwrap();
    let x = deb::extract(
        &arena.deb(),
        &arena.dest(),
        &Policy::helper("amd64"),
        &mut (),
    )
    .unwrap();
    assert!(x.control.reversible);
    assert_eq!(x.control.maintainer_scripts, ["postinst", "prerm"]);
    assert!(!ran.exists(), "a maintainer script ran");
    assert!(!arena.dest().join("postinst").exists());
}

#[test]
fn the_package_name_and_architecture_are_checked() {
    let arena = Arena::new();
    let data = helper_dirs().finish();
    let deb = build_deb(&control_text("apt", "amd64"), &[], data.clone());
    assert_refused(
        &arena,
        &deb,
        &Policy::helper("amd64"),
        &["\"apt\"", "release-upgrader-*"],
    );
    let deb = build_deb(
        &control_text("release-upgrader-x", "arm64"),
        &[],
        data.clone(),
    );
    assert_refused(
        &arena,
        &deb,
        &Policy::helper("amd64"),
        &["\"arm64\"", "amd64 or all"],
    );
    let deb = build_deb(&control_text("release-upgrader-x", "all"), &[], data);
    assert_extracts(&arena, &deb, &Policy::helper("amd64"));
}

#[test]
fn the_control_member_must_come_first_and_be_sound() {
    let arena = Arena::new();
    let control = control_tar(&helper_control(), &[]);
    let data = helper_dirs().add(E::file(&p("bin/x"), b"x")).finish();
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("data.tar", &data),
        ("control.tar", &control),
    ]);
    let reason = assert_refused(
        &arena,
        &deb,
        &Policy::upstream(),
        &["data.tar comes before the control member"],
    );
    assert!(
        std::fs::read_dir(arena.dest()).unwrap().next().is_none(),
        "{reason}: data was written"
    );

    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("control.tar", &control),
        ("data.tar", &data),
    ]);
    assert_refused(
        &arena,
        &deb,
        &Policy::upstream(),
        &["second control member"],
    );
    let deb = ar(&[("debian-binary", b"2.0\n"), ("control.tar", &control)]);
    assert_refused(&arena, &deb, &Policy::upstream(), &["no data member"]);
    let no_control_file = Tar::new().add(E::file("./md5sums", b"")).finish();
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &no_control_file),
        ("data.tar", &data),
    ]);
    assert_refused(
        &arena,
        &deb,
        &Policy::upstream(),
        &["control.tar: no control file"],
    );
    let symlinked = Tar::new()
        .add(E::symlink("./control", "/etc/passwd"))
        .finish();
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &symlinked),
        ("data.tar", &data),
    ]);
    assert_refused(&arena, &deb, &Policy::upstream(), &["control is a symlink"]);
    let deb = build_deb(
        "Package: release-upgrader-x\nVersion: 1\n",
        &[],
        data.clone(),
    );
    assert_refused(
        &arena,
        &deb,
        &Policy::upstream(),
        &["no Architecture field"],
    );
}

#[test]
fn debian_binary_must_say_format_2() {
    let arena = Arena::new();
    let control = control_tar(&helper_control(), &[]);
    let data = helper_dirs().finish();
    for version in [&b"3.0\n"[..], b"2.0", b"0.939000\n", b"2.x\n", b""] {
        let deb = ar(&[
            ("debian-binary", version),
            ("control.tar", &control),
            ("data.tar", &data),
        ]);
        assert_refused(&arena, &deb, &Policy::upstream(), &["debian-binary"]);
    }
    let deb = ar(&[("control.tar", &control), ("data.tar", &data)]);
    assert_refused(
        &arena,
        &deb,
        &Policy::upstream(),
        &["first member is \"control.tar\""],
    );
    // A newer minor version and extra lines are fine, as deb(5) asks.
    let deb = ar(&[
        ("debian-binary", b"2.1\nmore\n"),
        ("control.tar", &control),
        ("data.tar", &data),
    ]);
    assert_extracts(&arena, &deb, &Policy::upstream());
}

#[test]
fn unknown_members_are_refused_and_underscore_members_skipped() {
    let arena = Arena::new();
    let control = control_tar(&helper_control(), &[]);
    let data = helper_dirs().finish();
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("garbage", b"junk"),
        ("data.tar", &data),
    ]);
    assert_refused(&arena, &deb, &Policy::upstream(), &["\"garbage\""]);
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar", &data),
        ("garbage", b"junk"),
    ]);
    assert_refused(
        &arena,
        &deb,
        &Policy::upstream(),
        &["\"garbage\" after the data member"],
    );
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar.lzma", &data),
    ]);
    assert_refused(&arena, &deb, &Policy::upstream(), &["data.tar.lzma"]);
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar.gz", &noise(5000, 1)),
    ]);
    assert_refused(&arena, &deb, &Policy::upstream(), &["data.tar.gz"]);
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar", &noise(5000, 1)),
    ]);
    assert_refused(&arena, &deb, &Policy::upstream(), &["data.tar", "checksum"]);

    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("_sig", b"ignored"),
        ("control.tar", &control),
        ("_x", b"1"),
        ("data.tar", &data),
        ("_trailer", b"ok"),
    ]);
    assert_extracts(&arena, &deb, &Policy::upstream());
}

#[test]
fn truncated_packages_are_refused() {
    let arena = Arena::new();
    let data = helper_dirs()
        .add(E::file(&p("bin/big"), &noise(100_000, 5)))
        .finish();
    let whole = build_deb(&helper_control(), &[], data.clone());
    // The ar archive cut short.
    assert_refused(
        &arena,
        &whole[..whole.len() / 2],
        &Policy::helper("amd64"),
        &["truncated"],
    );
    assert_refused(&arena, &whole[..30], &Policy::helper("amd64"), &[]);
    // A tar stream cut inside a file, in a consistent ar archive.
    let control = control_tar(&helper_control(), &[]);
    let cut = &data[..data.len() - 50_000];
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar", cut),
    ]);
    assert_refused(
        &arena,
        &deb,
        &Policy::helper("amd64"),
        &["data.tar", "bin/big", "truncated"],
    );
    // A tar stream without its end-of-archive block.
    let unended = helper_dirs().add(E::file(&p("bin/x"), b"x")).0;
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar", &unended),
    ]);
    assert_refused(&arena, &deb, &Policy::helper("amd64"), &["end-of-archive"]);
    // A compressed stream cut short.
    let compressed = xz(&data);
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar.xz", &compressed[..compressed.len() - 100]),
    ]);
    assert_refused(&arena, &deb, &Policy::helper("amd64"), &["data.tar.xz"]);
    // And one with a flipped bit.
    let mut flipped = compressed.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x10;
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar.xz", &flipped),
    ]);
    assert_refused(&arena, &deb, &Policy::helper("amd64"), &["data.tar.xz"]);
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar.xz", &compressed),
    ]);
    assert_extracts(&arena, &deb, &Policy::helper("amd64"));
}

#[test]
fn malformed_tar_headers_are_refused() {
    // A corrupt checksum.
    let arena = Arena::new();
    let mut data = helper_dirs().add(E::file(&p("bin/x"), b"x")).finish();
    data[5 * 512 + 10] ^= 1;
    let deb = build_deb(&helper_control(), &[], data);
    assert_refused(&arena, &deb, &Policy::helper("amd64"), &["checksum"]);
    // A global pax header, which would rename everything after it.
    let data = helper_dirs()
        .pax(b'g', &[("path", "etc/passwd")])
        .add(E::file(&p("bin/x"), b"x"))
        .finish();
    let deb = build_deb(&helper_control(), &[], data);
    assert_refused(
        &arena,
        &deb,
        &Policy::helper("amd64"),
        &["global pax header"],
    );
    // A name with a newline, and one that is not UTF-8.
    refused_helper(|_| vec![E::file(&p("bin/a\nb"), b"x")], &["newline"]);
    let arena = Arena::new();
    let mut bad_utf8 = E::file(&p("bin/x"), b"x");
    bad_utf8.name.push(0xff);
    let deb = helper_deb(vec![bad_utf8]);
    assert_refused(&arena, &deb, &Policy::helper("amd64"), &["not UTF-8"]);
    // A directory carrying data.
    refused_helper(
        |_| {
            vec![E {
                data: b"x".to_vec(),
                ..E::dir(&p("d/"))
            }]
        },
        &["directory carrying 1 bytes"],
    );
}

/// Records every entry and checks that it is not on disk yet when the hook runs.
struct Recorder {
    dest: PathBuf,
    control: Option<String>,
    seen: Vec<(String, bool)>,
    fail_at: Option<&'static str>,
}

impl ExtractHooks for Recorder {
    fn before_data(&mut self, _deb: &Path, control: &Control) -> Result<(), Error> {
        assert!(std::fs::read_dir(&self.dest).unwrap().next().is_none());
        self.control = Some(control.package.clone());
        Ok(())
    }
    fn before_entry(&mut self, entry: &EntryHeader<'_>) -> Result<(), Error> {
        let exists = std::fs::symlink_metadata(self.dest.join(entry.path)).is_ok();
        self.seen.push((entry.path.to_owned(), exists));
        if self.fail_at == Some(entry.path) {
            return Err(Error::BadPackage {
                deb: "hook".into(),
                reason: format!("{} refused by the hook", entry.path),
            });
        }
        Ok(())
    }
}

#[test]
fn hooks_see_every_entry_before_it_is_written() {
    let arena = Arena::new();
    let deb = helper_deb(vec![
        E::file(&p("bin/a"), b"a"),
        E::file(&p("implied/dir/f"), b"f"),
        E::symlink(&p("bin/l"), "a"),
        E::hardlink(&p("bin/h"), &p("bin/a")),
        E::dir(&p("bin/")),
    ]);
    arena.reset_dest();
    std::fs::write(arena.deb(), &deb).unwrap();
    let mut hooks = Recorder {
        dest: arena.dest(),
        control: None,
        seen: Vec::new(),
        fail_at: None,
    };
    deb::extract(
        &arena.deb(),
        &arena.dest(),
        &Policy::helper("amd64"),
        &mut hooks,
    )
    .unwrap();
    assert_eq!(hooks.control.as_deref(), Some("release-upgrader-test"));
    let expected = [
        ("bin", false),
        ("bin/a", false),
        ("implied", false),
        ("implied/dir", false),
        ("implied/dir/f", false),
        ("bin/l", false),
        ("bin/h", false),
        ("bin", true), // listed again: only its metadata changes
    ];
    let expected: Vec<(String, bool)> = expected.iter().map(|(p, e)| (p.to_string(), *e)).collect();
    assert_eq!(hooks.seen, expected);

    // A hook's refusal stops the extraction before the entry is written.
    let arena = Arena::new();
    arena.reset_dest();
    std::fs::write(arena.deb(), &deb).unwrap();
    let mut hooks = Recorder {
        dest: arena.dest(),
        control: None,
        seen: Vec::new(),
        fail_at: Some("bin/l"),
    };
    let err = deb::extract(
        &arena.deb(),
        &arena.dest(),
        &Policy::helper("amd64"),
        &mut hooks,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("bin/l refused by the hook"),
        "{err}"
    );
    assert!(arena.dest().join("bin/a").exists());
    assert!(std::fs::symlink_metadata(arena.dest().join("bin/l")).is_err());
}

#[test]
fn a_path_shipped_by_two_helpers_is_refused_and_directories_are_shared() {
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("dest");
    let first = work.path().join("first.deb");
    let second = work.path().join("second.deb");
    let third = work.path().join("third.deb");
    let helper = |name: &str, entries: Vec<E>| {
        let mut tar = helper_dirs();
        for e in entries {
            tar = tar.add(e);
        }
        build_deb(&control_text(name, "amd64"), &[], tar.finish())
    };
    std::fs::write(
        &first,
        helper("release-upgrader-one", vec![E::file(&p("bin/apt"), b"1")]),
    )
    .unwrap();
    std::fs::write(
        &second,
        helper("release-upgrader-two", vec![E::file(&p("bin/dpkg"), b"2")]),
    )
    .unwrap();
    std::fs::write(
        &third,
        helper(
            "release-upgrader-three",
            vec![E::symlink(&p("bin/apt"), "dpkg")],
        ),
    )
    .unwrap();
    let mut owners = PathOwners::new();
    let policy = Policy::helper("amd64");
    for (i, deb) in [&first, &second].into_iter().enumerate() {
        let d = dest.join(i.to_string());
        std::fs::create_dir_all(&d).unwrap();
        deb::extract(deb, &d, &policy, &mut owners).unwrap();
    }
    assert_eq!(owners.owner("bin/apt"), Some("release-upgrader-one"));
    assert_eq!(owners.owner("bin"), Some("release-upgrader-one"));
    let d = dest.join("3");
    std::fs::create_dir_all(&d).unwrap();
    let err = deb::extract(&third, &d, &policy, &mut owners).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("third.deb"), "{text}");
    assert!(
        text.contains("bin/apt is also shipped by release-upgrader-one"),
        "{text}"
    );
    assert_eq!(err.exit_code(), ExitCode::Verification);
}

#[test]
fn read_control_never_reads_the_data_member() {
    let work = tempfile::tempdir().unwrap();
    let deb = work.path().join("p.deb");
    let control = control_tar(
        &format!("{}X-Release-Upgrader-Reversible: yes\n", helper_control()),
        &[("postinst", "#!/bin/sh\n")],
    );
    let bytes = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar.xz", b"not xz at all"),
    ]);
    std::fs::write(&deb, bytes).unwrap();
    let c = deb::read_control(&deb).unwrap();
    assert_eq!(c.package, "release-upgrader-test");
    assert_eq!(c.version.to_string(), "1.0");
    assert_eq!(c.architecture, "amd64");
    assert_eq!(c.maintainer_scripts, ["postinst"]);
    assert!(c.reversible);
    let err = deb::extract(
        &deb,
        &work.path().join("missing"),
        &Policy::helper("amd64"),
        &mut (),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[test]
fn an_unreadable_package_is_an_io_error_naming_it() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("missing.deb");
    let err = deb::read_control(&missing).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &missing),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), ExitCode::Usage);
    // A directory opens, but reading it fails: still the file's error, not a bad package.
    let dir = work.path().join("dir.deb");
    std::fs::create_dir(&dir).unwrap();
    let err = deb::read_control(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &dir),
        "{err:?}"
    );
    assert!(err.to_string().contains("Is a directory"), "{err}");
}

// ---------------------------------------------------------------------------------
// The publisher's commands.

fn publish(args: &[&std::ffi::OsStr]) -> Run {
    Run(Command::new(PUBLISH_BIN).args(args).output().unwrap())
}

#[test]
fn publish_deb_check_reports_each_package() {
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.deb");
    let bad = work.path().join("bad.deb");
    std::fs::write(&good, helper_deb(vec![E::file(&p("bin/x"), b"x")])).unwrap();
    std::fs::write(&bad, helper_deb(vec![E::file("./etc/passwd", b"x")])).unwrap();
    let run = publish(&[
        "deb".as_ref(),
        "check".as_ref(),
        "--arch".as_ref(),
        "amd64".as_ref(),
        good.as_ref(),
    ]);
    run.expect(0);
    assert_eq!(run.stdout(), "ok release-upgrader-test 1.0\n");
    let run = publish(&[
        "deb".as_ref(),
        "check".as_ref(),
        "--arch".as_ref(),
        "amd64".as_ref(),
        bad.as_ref(),
        good.as_ref(),
    ]);
    run.expect(3).mentions(&[
        "bad.deb",
        "./etc/passwd",
        "outside /usr/lib/release-upgrader/",
        "hint:",
    ]);
    assert_eq!(run.stdout(), "ok release-upgrader-test 1.0\n");
    let run = publish(&[
        "deb".as_ref(),
        "check".as_ref(),
        "--arch".as_ref(),
        "arm64".as_ref(),
        good.as_ref(),
    ]);
    run.expect(3).mentions(&["architecture \"amd64\""]);
}

#[test]
fn publish_deb_extract_works_like_dpkg_deb_and_cleans_up_after_a_refusal() {
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.deb");
    std::fs::write(&good, helper_deb(vec![E::file(&p("bin/x"), b"x")])).unwrap();
    let out = work.path().join("out");
    publish(&[
        "deb".as_ref(),
        "extract".as_ref(),
        good.as_ref(),
        out.as_ref(),
    ])
    .expect(0);
    assert_eq!(
        std::fs::read(out.join("usr/lib/release-upgrader/bin/x")).unwrap(),
        b"x"
    );
    let helper_out = work.path().join("helper-out");
    publish(&[
        "deb".as_ref(),
        "extract".as_ref(),
        "--helper".as_ref(),
        "--arch".as_ref(),
        "amd64".as_ref(),
        good.as_ref(),
        helper_out.as_ref(),
    ])
    .expect(0);
    assert_eq!(std::fs::read(helper_out.join("bin/x")).unwrap(), b"x");

    // Refused part way: the directory it made is gone, one that existed is emptied.
    let bad = work.path().join("bad.deb");
    std::fs::write(
        &bad,
        helper_deb(vec![
            E::file(&p("bin/x"), b"x"),
            E::new(&p("bin/dev"), b'3', 0o644),
        ]),
    )
    .unwrap();
    let made = work.path().join("made");
    publish(&[
        "deb".as_ref(),
        "extract".as_ref(),
        bad.as_ref(),
        made.as_ref(),
    ])
    .expect(3)
    .mentions(&["bad.deb", "bin/dev", "character devices are not allowed"]);
    assert!(!made.exists());
    let existing = work.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    publish(&[
        "deb".as_ref(),
        "extract".as_ref(),
        bad.as_ref(),
        existing.as_ref(),
    ])
    .expect(3);
    assert!(existing.is_dir());
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 0);
    // A directory that is not empty is refused before anything is written.
    std::fs::write(existing.join("mine"), b"keep").unwrap();
    publish(&[
        "deb".as_ref(),
        "extract".as_ref(),
        good.as_ref(),
        existing.as_ref(),
    ])
    .expect(2)
    .mentions(&["empty directory"]);
    assert_eq!(std::fs::read(existing.join("mine")).unwrap(), b"keep");
}

// ---------------------------------------------------------------------------------
// Bounds on what a helper writes (issue 11, finding 10).

/// A helper package `package` `version` whose control declares `installed_kib` (none
/// when `None`) and whose data member (zstd, streamed: the zeros never sit in memory)
/// holds `files`, each `(name under the prefix, size)` of zero bytes. A GiB of zeros
/// compresses to some 30 KB.
fn zero_filled_helper(
    package: &str,
    version: &str,
    installed_kib: Option<u64>,
    files: &[(&str, u64)],
) -> Vec<u8> {
    use std::io::Write;
    let mut control = format!(
        "Package: {package}\nVersion: {version}\nArchitecture: amd64\n\
         Maintainer: Test <test@example.invalid>\n"
    );
    if let Some(kib) = installed_kib {
        control.push_str(&format!("Installed-Size: {kib}\n"));
    }
    control.push_str("Description: zero-filled\n");
    let mut data = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    data.write_all(&helper_dirs().0).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for (name, size) in files {
        let e = E::file(&p(name), b"");
        data.write_all(&Tar::header(&e.name, b'0', &e, *size))
            .unwrap();
        let mut left = *size + (512 - size % 512) % 512;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            data.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
    }
    data.write_all(&[0u8; 1024]).unwrap();
    let data = data.finish().unwrap();
    ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control_tar(&control, &[])),
        ("data.tar.zst", &data),
    ])
}

const GIB: u64 = 1 << 30;

/// Every regular file under `dir` bigger than `limit`, as paths.
fn files_bigger_than(dir: &Path, limit: u64) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() && meta.len() > limit {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn deb_check_refuses_a_helper_whose_files_outgrow_its_installed_size() {
    let work = tempfile::tempdir().unwrap();
    let deb = work.path().join("big.deb");
    std::fs::write(
        &deb,
        zero_filled_helper("release-upgrader-big", "1.0", Some(10), &[("big", GIB)]),
    )
    .unwrap();
    assert!(std::fs::metadata(&deb).unwrap().len() < 100_000);
    // `deb check` extracts into a temporary directory: make it one we can look into.
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let run = Run(Command::new(PUBLISH_BIN)
        .args(["deb", "check", "--arch", "amd64"])
        .arg(&deb)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap());
    run.expect(3).mentions(&[
        "big.deb",
        "release-upgrader-big",
        "Installed-Size",
        "10 KiB",
        "1073741824 bytes",
    ]);
    assert!(!run.stdout().contains("ok "), "{}", run.stdout());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "left behind");
}

#[test]
fn bootstrap_refuses_a_helper_whose_files_outgrow_its_installed_size_before_writing_them() {
    use ru_publish::pocket::{self, PocketEntry};
    let f = crate::support::Fixture::new();
    let work = f.dir.path().join("build");
    std::fs::create_dir_all(&work).unwrap();
    let mut files: Vec<PathBuf> = crate::support::test_helpers("3.0.3")
        .iter()
        .filter(|h| h.name != "release-upgrader-runtime")
        .map(|h| crate::support::build_deb(&work, h))
        .collect();
    // The runtime the others depend on, 30 KB of deb claiming 10 KiB installed.
    let big = work.join("release-upgrader-runtime_2.41-12_amd64.deb");
    std::fs::write(
        &big,
        zero_filled_helper(
            "release-upgrader-runtime",
            "2.41-12",
            Some(10),
            &[("root/usr/lib/libfake.so.1", GIB)],
        ),
    )
    .unwrap();
    files.push(big);
    let entries: Vec<PocketEntry> = files
        .into_iter()
        .map(|file| PocketEntry {
            fields: deb::read_control(&file).unwrap().fields,
            file,
        })
        .collect();
    pocket::write(
        &f.pocket_dir(),
        &crate::support::Fixture::default_spec(),
        &entries,
        &f.key,
    )
    .unwrap();
    f.run(&["bootstrap", "--no-reexec"]).expect(3).mentions(&[
        "release-upgrader-runtime",
        "Installed-Size",
        "10 KiB",
        "1073741824 bytes",
    ]);
    assert!(!f.prefix().exists(), "the prefix exists");
    let usr_lib: Vec<String> = std::fs::read_dir(f.root.join("usr/lib"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(usr_lib.is_empty(), "the staging is left: {usr_lib:?}");
    assert!(!f.state().join("helpers").exists(), "manifests exist");
    assert_eq!(
        files_bigger_than(f.dir.path(), 1 << 20),
        Vec::<PathBuf>::new()
    );
}

/// A helper policy whose set budget is `set` bytes and which may write `entries`.
fn bounded_policy(set: u64, entries: u64) -> Policy {
    let mut policy = Policy::helper("amd64");
    policy.limits.set = Some(std::sync::Arc::new(deb::SetBudget::new(set)));
    policy.limits.entries = Some(entries);
    policy
}

#[test]
fn a_helper_may_write_its_installed_size_and_the_slack_but_not_a_byte_more() {
    const MIB: u64 = 1 << 20;
    let arena = Arena::new();
    let policy = Policy::helper("amd64");
    let accept = |deb: Vec<u8>| {
        arena.reset_dest();
        std::fs::write(arena.deb(), deb).unwrap();
        deb::extract(&arena.deb(), &arena.dest(), &policy, &mut ())
    };
    // Honest: 3 MiB declared, 3 MiB written, in two files.
    let honest = zero_filled_helper(
        "release-upgrader-x",
        "1",
        Some(3072),
        &[("a", 2 * MIB), ("b", MIB)],
    );
    accept(honest).unwrap();
    // 10 KiB declared: the slack on top, exactly.
    let at_bound = zero_filled_helper(
        "release-upgrader-x",
        "1",
        Some(10),
        &[("a", 10 * 1024 + MIB)],
    );
    accept(at_bound).unwrap();
    let over = zero_filled_helper(
        "release-upgrader-x",
        "1",
        Some(10),
        &[("a", 10 * 1024), ("b", MIB + 1)],
    );
    let reason = assert_refused(
        &arena,
        &over,
        &policy,
        &[
            "usr/lib/release-upgrader/b",
            "1048577 bytes would bring release-upgrader-x's files to 1058817 bytes",
            "Installed-Size of 10 KiB",
            "1058816 bytes: 10240 declared and 1048576 of slack",
        ],
    );
    assert!(!reason.contains("/a:"), "{reason}");
    // The file it was refused for was never created; the one before it was.
    assert!(arena.dest().join("a").exists());
    assert!(!arena.dest().join("b").exists());
    // No Installed-Size: the slack alone.
    accept(zero_filled_helper(
        "release-upgrader-x",
        "1",
        None,
        &[("a", MIB)],
    ))
    .unwrap();
    let undeclared = zero_filled_helper("release-upgrader-x", "1", None, &[("a", MIB + 1)]);
    assert_refused(
        &arena,
        &undeclared,
        &policy,
        &["declares no Installed-Size", "1048576 bytes"],
    );
    // Upstream packages are data to the publisher: no bound.
    std::fs::write(arena.deb(), &undeclared).unwrap();
    arena.reset_dest();
    deb::extract(&arena.deb(), &arena.dest(), &Policy::upstream(), &mut ()).unwrap();
}

#[test]
fn a_set_of_helpers_shares_one_budget_and_a_refused_one_gives_its_share_back() {
    const MIB: u64 = 1 << 20;
    let work = tempfile::tempdir().unwrap();
    let policy = bounded_policy(3 * MIB, 1000);
    // The clones a transaction hands its threads share the budget.
    let clone = policy.clone();
    let extract = |name: &str, files: &[(&str, u64)]| {
        let deb = work.path().join(format!("{name}.deb"));
        let kib = files.iter().map(|(_, size)| size.div_ceil(1024)).sum();
        std::fs::write(&deb, zero_filled_helper(name, "1", Some(kib), files)).unwrap();
        let dest = work.path().join(name);
        std::fs::create_dir(&dest).unwrap();
        deb::extract(&deb, &dest, &clone, &mut ())
    };
    extract("release-upgrader-a", &[("a", 2 * MIB)]).unwrap();
    let err = extract("release-upgrader-b", &[("b1", MIB / 2), ("b2", MIB)]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("b2: 1048576 bytes would bring the files of the packages extracted together to 3670016 bytes, more than the 3145728 they may take"),
        "{text}"
    );
    assert_eq!(err.exit_code(), ExitCode::Verification);
    // b1 was given back with the failure.
    let set = policy.limits.set.as_ref().unwrap();
    assert_eq!(set.used(), 2 * MIB);
    extract("release-upgrader-c", &[("c", MIB)]).unwrap();
    assert_eq!(set.used(), 3 * MIB);
}

#[test]
fn a_helper_declaring_more_than_a_whole_set_is_refused_before_its_data() {
    let arena = Arena::new();
    let policy = Policy::helper("amd64");
    let huge_kib = deb::HELPER_SET_MAX / 1024 + 1;
    let deb = zero_filled_helper("release-upgrader-x", "1", Some(huge_kib), &[("a", 1)]);
    assert_refused(
        &arena,
        &deb,
        &policy,
        &[
            &format!("declares Installed-Size: {huge_kib} (KiB)"),
            "1073741824 bytes",
        ],
    );
    assert_eq!(
        std::fs::read_dir(arena.dest()).unwrap().count(),
        0,
        "data was written"
    );
    // So is one whose Installed-Size does not fit 64 bits of bytes.
    let deb = zero_filled_helper("release-upgrader-x", "1", Some(u64::MAX / 512), &[("a", 1)]);
    assert_refused(&arena, &deb, &policy, &["Installed-Size"]);
}

#[test]
fn a_helper_may_list_and_imply_only_so_many_entries() {
    let arena = Arena::new();
    let policy = bounded_policy(1 << 30, 12);
    // helper_dirs() lists 5 entries; 7 files more fit, 8 do not.
    let files = |n: usize| {
        (0..n)
            .map(|i| E::file(&p(&format!("bin/f{i}")), b"x"))
            .collect::<Vec<_>>()
    };
    std::fs::write(arena.deb(), helper_deb(files(7))).unwrap();
    deb::extract(&arena.deb(), &arena.dest(), &policy, &mut ()).unwrap();
    assert_refused(
        &arena,
        &helper_deb(files(8)),
        &policy,
        &["more than 12 entries", "bin/f7"],
    );
    // Directories a deep name implies count too.
    let deep = format!(
        "{}/f",
        (0..20)
            .map(|i| format!("d{i}"))
            .collect::<Vec<_>>()
            .join("/")
    );
    assert_refused(
        &arena,
        &helper_deb(vec![E::file(&p(&deep), b"x")]),
        &policy,
        &["more than 12 entries"],
    );
}

#[test]
fn a_control_member_holding_too_much_is_refused() {
    let arena = Arena::new();
    let data = helper_dirs().finish();
    let control = helper_control();
    // Too many entries.
    let mut tar = Tar::new()
        .add(E::dir("./"))
        .add(E::file("./control", control.as_bytes()));
    for i in 0..deb::CONTROL_ENTRIES_MAX {
        tar = tar.add(E::file(&format!("./extra{i}"), b""));
    }
    let many = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &tar.finish()),
        ("data.tar", &data),
    ]);
    assert_refused(
        &arena,
        &many,
        &Policy::upstream(),
        &["control.tar", "more than 1024 entries"],
    );
    // Too many bytes, in a few KB of zstd: refused at the header, never read through.
    use std::io::Write;
    let mut zst = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let control_tar = Tar::new()
        .add(E::dir("./"))
        .add(E::file("./control", control.as_bytes()));
    zst.write_all(&control_tar.0).unwrap();
    let big = E::file("./md5sums", b"");
    zst.write_all(&Tar::header(&big.name, b'0', &big, 1 << 32))
        .unwrap();
    zst.write_all(&vec![0u8; 1 << 20]).unwrap();
    let zst = zst.finish().unwrap();
    let bomb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.zst", &zst),
        ("data.tar", &data),
    ]);
    assert_refused(
        &arena,
        &bomb,
        &Policy::upstream(),
        &["./md5sums", "67108864 bytes"],
    );
}

#[test]
fn more_than_padding_after_the_end_of_a_tar_archive_is_refused() {
    let arena = Arena::new();
    let mut data = helper_dirs().add(E::file(&p("bin/x"), b"x")).finish();
    // 10 KiB records: what tar pads with is fine.
    data.resize(data.len().next_multiple_of(10240), 0);
    std::fs::write(arena.deb(), build_deb(&helper_control(), &[], data.clone())).unwrap();
    deb::extract(
        &arena.deb(),
        &arena.dest(),
        &Policy::helper("amd64"),
        &mut (),
    )
    .unwrap();
    data.resize(data.len() + (2 << 20), 0);
    let deb = build_deb(&helper_control(), &[], data);
    assert_refused(
        &arena,
        &deb,
        &Policy::helper("amd64"),
        &["data.tar", "after the end of the tar archive"],
    );
}
