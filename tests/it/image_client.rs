//! `release-upgrader image …` against a signed system-image server tree built here:
//! keyring chain, channels, index, a full image and deltas (file-level and zstd
//! patches) served from 127.0.0.1, applied to a device root; every tamper refused;
//! SIGKILL at seeded points during apply; mode choice on a read-only bind mount
//! (opt-out and opt-in: `image_optout.rs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ru_format::digest::Sha256;
use ru_publish::SigningKey;
use ru_testing::serve::{Fault, Server};
use serde_json::{Value, json};

use crate::support::{BIN, Run};

pub(crate) const DEVICE: &str = "testdev";
pub(crate) const CHANNEL: &str = "stable";

/// One node of a test tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    Dir(u32),
    File(Vec<u8>, u32),
    Link(String),
    /// A file owned by uid = gid = the third field.
    Owned(Vec<u8>, u32, u32),
    /// A hard link to another path of the tree.
    HardLink(String),
    /// A character device (created only when the tests run as root).
    Char(u32, u32),
    Fifo,
}

pub(crate) fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub(crate) type Tree = BTreeMap<String, Node>;

pub(crate) fn big(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[0] ^ seed)
        .collect()
}

/// An x86-64 ELF file in miniature: a header, 4 KiB of functions, then 20,000 calls
/// into them that every build moves by 16 bytes more, so each call's relative
/// displacement changes while its target does not (what a rebuilt library looks like to
/// a patch; zdelta patches it in its branch conversion).
pub(crate) fn x86_code(build: u64) -> Vec<u8> {
    let mut code = vec![0u8; 64];
    code[..4].copy_from_slice(b"\x7fELF");
    code[4] = 2; // 64-bit
    code[5] = 1; // little-endian
    code[6] = 1;
    code[18] = 62; // x86-64
    code.extend(big(3, 4096));
    code.extend(std::iter::repeat_n(0x90, 16 * build as usize));
    for i in 0..20_000u32 {
        let target = 64 + (i.wrapping_mul(2_654_435_761) % 4096) as i64;
        let next = code.len() as i64 + 5;
        code.push(0xE8);
        code.extend_from_slice(&((target - next) as i32).to_le_bytes());
        code.extend_from_slice(&[0x48, 0x89, (i % 251) as u8]);
    }
    code
}

/// A changelog with an entry per build up to `build` over a long history, compressed as
/// packages compress theirs (level 9, no name, no time).
fn changelog_gz(build: u64) -> Vec<u8> {
    let mut text = String::new();
    for b in (1..=build).rev() {
        text.push_str(&format!(
            "pkg ({b}) stable; urgency=medium\n\n  * Build {b}.\n\n"
        ));
    }
    for i in 0..3000u32 {
        let word = i.wrapping_mul(2_654_435_761) % 9973;
        text.push_str(&format!(
            "pkg (0.{i}) old; urgency=low\n  * Fix bug #{word}.\n\n"
        ));
    }
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

/// The system tree of `build` (config and keyring included, as a real image has).
pub(crate) fn tree(build: u64, port: u16) -> Tree {
    let mut t = Tree::new();
    for d in [
        "etc",
        "etc/system-image",
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/share",
        "usr/share/system-image",
        "usr/share/doc",
        "var",
        "var/lib",
    ] {
        t.insert(d.into(), Node::Dir(0o755));
    }
    // system-image 3.x's layout, as the real server's version tarballs make it: the
    // image's defaults in client.ini, config.d linking to it and to channel.ini.
    t.insert("etc/system-image/config.d".into(), Node::Dir(0o775));
    t.insert(
        "etc/system-image/config.d/00_default.ini".into(),
        Node::Link("../client.ini".into()),
    );
    t.insert(
        "etc/system-image/config.d/01_channel.ini".into(),
        Node::Link("../channel.ini".into()),
    );
    t.insert(
        "etc/system-image/client.ini".into(),
        Node::File(
            format!(
                "[service]\nbase: 127.0.0.1\nhttp_port: {port}\nhttps_port: disabled\n\
                 channel: {CHANNEL}\ndevice: {DEVICE}\nbuild_number: 0\n\n[system]\ntimeout: 10s\n"
            )
            .into_bytes(),
            0o644,
        ),
    );
    t.insert("etc/system-image/channel.ini".into(), channel_ini(build));
    t.insert(
        "etc/os-release".into(),
        Node::File(b"ID=debian\nVERSION_CODENAME=bookworm\n".to_vec(), 0o644),
    );
    let (am, am_asc) = archive_master();
    t.insert(
        "usr/share/system-image/archive-master.tar.xz".into(),
        Node::File(am, 0o644),
    );
    t.insert(
        "usr/share/system-image/archive-master.tar.xz.asc".into(),
        Node::File(am_asc, 0o644),
    );
    t.insert(
        "usr/bin/tool".into(),
        Node::File(format!("#!/bin/sh\necho {build}\n").into_bytes(), 0o755),
    );
    t.insert("usr/bin/sh".into(), Node::Link("tool".into()));
    // A large library that changes a little each build (zdelta patches it).
    let mut lib = big(7, 300_000);
    lib[1000] = build as u8;
    lib.extend_from_slice(format!("build {build}").as_bytes());
    t.insert("usr/lib/libbig.so".into(), Node::File(lib, 0o644));
    // A library whose file name carries the build (a zdelta patches it against the
    // previous build's name, which the same delta removes).
    let mut ver = big(9, 200_000);
    ver[5000] = build as u8;
    t.insert(format!("usr/lib/libver.so.{build}"), Node::File(ver, 0o644));
    // x86-64 code whose calls all move each build: zdelta patches it in its branch
    // conversion.
    t.insert(
        "usr/lib/libcode.so".into(),
        Node::File(x86_code(build), 0o644),
    );
    // A changelog that grows each build, gzip'd: zdelta patches its content.
    t.insert("usr/share/doc/pkg".into(), Node::Dir(0o755));
    t.insert(
        "usr/share/doc/pkg/changelog.gz".into(),
        Node::File(changelog_gz(build), 0o644),
    );
    // The same changelog in a second package of the same source (as Debian's
    // libtinfo6, ncurses-base and ncurses-bin have): the device copies the result of
    // the first (in tar order) and gives this one its own mode.
    t.insert("usr/share/doc/pkg2".into(), Node::Dir(0o755));
    t.insert(
        "usr/share/doc/pkg2/changelog.gz".into(),
        Node::File(changelog_gz(build), 0o600),
    );
    // Its NEWS too: zdelta patches its deflate tokens.
    t.insert(
        "usr/share/doc/pkg/NEWS.gz".into(),
        Node::File(changelog_gz(build + 1), 0o644),
    );
    t.insert(
        "usr/share/doc/stays".into(),
        Node::File(b"unchanged\n".to_vec(), 0o644),
    );
    if build.is_multiple_of(2) {
        t.insert("usr/share/doc/even".into(), Node::Dir(0o755));
        t.insert(
            "usr/share/doc/even/a".into(),
            Node::File(b"even".to_vec(), 0o600),
        );
        t.insert("usr/lib/kind".into(), Node::Link("libbig.so".into()));
    } else {
        t.insert(
            "usr/share/doc/odd".into(),
            Node::File(b"odd".to_vec(), 0o644),
        );
        t.insert("usr/lib/kind".into(), Node::Dir(0o700));
        t.insert("usr/lib/kind/x".into(), Node::File(b"x".to_vec(), 0o644));
    }
    if build >= 3 {
        t.insert(
            "usr/bin/new-in-3".into(),
            Node::File(b"new".to_vec(), 0o4755),
        );
    }
    if build >= 2 {
        // Hard-linked to a file every image changes.
        t.insert(
            "usr/bin/zz-link".into(),
            Node::HardLink("usr/bin/tool".into()),
        );
    }
    t.insert("usr/share/nodes".into(), Node::Dir(0o755));
    t.insert(
        "usr/share/nodes/owned".into(),
        Node::Owned(format!("owned {}", build.min(2)).into_bytes(), 0o640, 1000),
    );
    t.insert("usr/share/nodes/fifo".into(), Node::Fifo);
    if as_root() {
        t.insert("usr/share/nodes/null".into(), Node::Char(1, 3));
    }
    t
}

pub(crate) fn channel_ini(build: u64) -> Node {
    Node::File(
        format!("[service]\nbuild_number: {build}\nchannel: {CHANNEL}\n").into_bytes(),
        0o644,
    )
}

pub(crate) fn materialize(tree: &Tree, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (path, node) in tree {
        let p = dir.join(path);
        match node {
            Node::Dir(mode) => {
                std::fs::create_dir_all(&p).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
            }
            Node::File(data, mode) => {
                std::fs::write(&p, data).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
            }
            Node::Link(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
            Node::Owned(data, mode, id) => {
                std::fs::write(&p, data).unwrap();
                std::os::unix::fs::chown(&p, Some(*id), Some(*id)).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
            }
            Node::HardLink(target) => std::fs::hard_link(dir.join(target), &p).unwrap(),
            Node::Char(major, minor) => nix::sys::stat::mknod(
                &p,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(u64::from(*major), u64::from(*minor)),
            )
            .unwrap(),
            Node::Fifo => {
                nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
            }
        }
    }
}

/// What a directory holds: path → kind, mode, owner, content digest or link target.
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if path == "var/lib/release-upgrader" || path == "cache" || path == "userdata" {
                continue;
            }
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let desc = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(e.path()).unwrap().display())
            } else if m.is_dir() {
                stack.push((e.path(), path.clone()));
                format!("dir {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid())
            } else if m.file_type().is_char_device() {
                format!(
                    "char {:x} {:o} {}:{}",
                    m.rdev(),
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid()
                )
            } else if m.file_type().is_fifo() {
                format!("fifo {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid())
            } else {
                format!(
                    "file {:o} {}:{} {} links {}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    Sha256::of(&std::fs::read(e.path()).unwrap()),
                    m.nlink()
                )
            };
            out.insert(path, desc);
        }
    }
    out
}

pub(crate) fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| Keys {
        archive: SigningKey::generate("archive master <a@invalid>", None).unwrap(),
        master: SigningKey::generate("image master <m@invalid>", None).unwrap(),
        signing: SigningKey::generate("image signing <s@invalid>", None).unwrap(),
        device: SigningKey::generate("device signing <d@invalid>", None).unwrap(),
        evil: SigningKey::generate("someone else <e@invalid>", None).unwrap(),
    })
}

pub(crate) struct Keys {
    pub(crate) archive: SigningKey,
    pub(crate) master: SigningKey,
    pub(crate) signing: SigningKey,
    pub(crate) device: SigningKey,
    pub(crate) evil: SigningKey,
}

pub(crate) fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A keyring tarball holding `keys` and `json`.
pub(crate) fn keyring_tar(keys: &[&SigningKey], json: Value) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let gpg: Vec<u8> = keys.iter().flat_map(|k| k.public_keyring()).collect();
    for (name, data) in [
        ("keyring.gpg", gpg),
        ("keyring.json", json.to_string().into_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    xz(&b.into_inner().unwrap())
}

pub(crate) fn archive_master() -> (Vec<u8>, Vec<u8>) {
    static AM: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    AM.get_or_init(|| {
        let k = &keys().archive;
        let t = keyring_tar(&[k], json!({"type": "archive-master"}));
        let asc = k.detached_signature(&t).unwrap();
        (t, asc)
    })
    .clone()
}

/// A tarball of `system/…` members for `entries` (path → node), `removed` first when
/// given. Changed files of `patch_from` become zstd patches (zdelta), and so do new
/// files with a file of `patch_from` at the same path up to digits (patched across
/// paths, with a base-path record).
pub(crate) fn image_tar(
    entries: &Tree,
    removed: Option<&[String]>,
    patch_from: Option<&Tree>,
) -> Vec<u8> {
    image_tar_with_base(entries, removed, patch_from, None)
}

/// [`image_tar`], with `base_path` written as the base path of every patch made across
/// paths (a hostile server's).
pub(crate) fn image_tar_with_base(
    entries: &Tree,
    removed: Option<&[String]>,
    patch_from: Option<&Tree>,
    base_path: Option<&str>,
) -> Vec<u8> {
    use ru_publish::image::bases::digits_folded;
    let mut b = tar::Builder::new(Vec::new());
    if let Some(removed) = removed {
        let text: String = removed.iter().map(|p| format!("system/{p}\n")).collect();
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "removed", text.as_bytes()).unwrap();
    }
    for (path, node) in entries {
        let name = format!("system/{path}");
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match node {
            Node::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                h.set_cksum();
                b.append_data(&mut h, &name, std::io::empty()).unwrap();
            }
            Node::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, &name, target).unwrap();
            }
            Node::Owned(data, mode, id) => {
                h.set_mode(*mode);
                h.set_uid(u64::from(*id));
                h.set_gid(u64::from(*id));
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append_data(&mut h, &name, data.as_slice()).unwrap();
            }
            Node::HardLink(target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, &name, format!("system/{target}"))
                    .unwrap();
            }
            Node::Char(major, minor) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_size(0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                h.set_cksum();
                b.append_data(&mut h, &name, std::io::empty()).unwrap();
            }
            Node::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o644);
                h.set_size(0);
                h.set_cksum();
                b.append_data(&mut h, &name, std::io::empty()).unwrap();
            }
            Node::File(data, mode) => {
                let base = patch_from.and_then(|t| match t.get(path) {
                    Some(Node::File(old, _)) if old != data && data.len() > 1000 => {
                        Some((old, None))
                    }
                    Some(_) => None,
                    None => t.iter().find_map(|(old_path, node)| match node {
                        Node::File(old, _)
                            if data.len() > 1000
                                && digits_folded(old_path) == digits_folded(path) =>
                        {
                            Some((
                                old,
                                Some(base_path.map_or(format!("system/{old_path}"), str::to_owned)),
                            ))
                        }
                        _ => None,
                    }),
                });
                h.set_mode(*mode);
                h.set_entry_type(tar::EntryType::Regular);
                use ru_publish::image::zdelta;
                let gzip = base.as_ref().and_then(|(old, _)| {
                    match path.ends_with("NEWS.gz") {
                        true => zdelta::make_tokens_patch(old, data, 19),
                        false => zdelta::make_gzip_patch(old, data, 19),
                    }
                    .unwrap()
                });
                let branches = base.as_ref().and_then(|(old, _)| {
                    // The first conversion (what a publisher of before wrote): the
                    // device still applies it.
                    let filter = ru_format::image::branches::Filter::Branches;
                    zdelta::make_x86_patch(old, data, 19, filter).unwrap()
                });
                if let (Some((base, base_path)), Some((frame, gzip))) = (&base, gzip) {
                    let mut records = vec![
                        ("RELEASE_UPGRADER.patch".to_string(), gzip.method().into()),
                        (
                            "RELEASE_UPGRADER.base-sha256".into(),
                            Sha256::of(base).to_hex(),
                        ),
                        ("RELEASE_UPGRADER.sha256".into(), Sha256::of(data).to_hex()),
                        ("RELEASE_UPGRADER.size".into(), data.len().to_string()),
                    ];
                    if let Some(base_path) = base_path {
                        records.push(("RELEASE_UPGRADER.base-path".into(), base_path.clone()));
                    }
                    records.extend(gzip.pax_records());
                    b.append_pax_extensions(
                        records.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
                    )
                    .unwrap();
                    h.set_size(frame.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, &name, frame.as_slice()).unwrap();
                } else if let (Some((base, base_path)), Some(frame)) = (&base, branches) {
                    let mut records = vec![
                        (
                            "RELEASE_UPGRADER.patch",
                            ru_format::image::branches::Filter::Branches
                                .method()
                                .to_string(),
                        ),
                        ("RELEASE_UPGRADER.base-sha256", Sha256::of(base).to_hex()),
                        ("RELEASE_UPGRADER.sha256", Sha256::of(data).to_hex()),
                        ("RELEASE_UPGRADER.size", data.len().to_string()),
                    ];
                    if let Some(base_path) = base_path {
                        records.push(("RELEASE_UPGRADER.base-path", base_path.clone()));
                    }
                    b.append_pax_extensions(records.iter().map(|(k, v)| (*k, v.as_bytes())))
                        .unwrap();
                    h.set_size(frame.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, &name, frame.as_slice()).unwrap();
                } else if let Some((base, base_path)) = base {
                    let mut enc =
                        zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), 19, base)
                            .unwrap();
                    enc.window_log(22).unwrap();
                    enc.write_all(data).unwrap();
                    let patch = enc.finish().unwrap();
                    let mut records = vec![
                        ("RELEASE_UPGRADER.patch", "zstd-patch-from".to_string()),
                        ("RELEASE_UPGRADER.base-sha256", Sha256::of(base).to_hex()),
                        ("RELEASE_UPGRADER.sha256", Sha256::of(data).to_hex()),
                        ("RELEASE_UPGRADER.size", data.len().to_string()),
                    ];
                    if let Some(base_path) = base_path {
                        records.push(("RELEASE_UPGRADER.base-path", base_path));
                    }
                    b.append_pax_extensions(records.iter().map(|(k, v)| (*k, v.as_bytes())))
                        .unwrap();
                    h.set_size(patch.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, &name, patch.as_slice()).unwrap();
                } else {
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, &name, data.as_slice()).unwrap();
                }
            }
        }
    }
    b.into_inner().unwrap()
}

/// What changed from `old` to `new`: removed paths and added/changed entries.
pub(crate) fn diff(old: &Tree, new: &Tree) -> (Vec<String>, Tree) {
    let mut removed = Vec::new();
    for (path, node) in old {
        let gone = match (node, new.get(path)) {
            (_, None) => true,
            (Node::Dir(_), Some(Node::Dir(_))) => false,
            (Node::Dir(_), Some(_)) => true,
            _ => false,
        };
        if gone
            && !removed
                .iter()
                .any(|r: &String| path.starts_with(&format!("{r}/")))
        {
            removed.push(path.clone());
        }
    }
    let differs = |p: &String, n: &Node| old.get(p) != Some(n);
    let changed = new
        .iter()
        .filter(|(p, n)| {
            differs(p, n)
                || matches!(n, Node::HardLink(t) if new.get(t).is_some_and(|tn| differs(t, tn)))
        })
        .map(|(p, n)| (p.clone(), n.clone()))
        .collect();
    (removed, changed)
}

/// A signed system-image server tree served on 127.0.0.1 and a device root at build 1.
pub(crate) struct ImageFixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) srv: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) server: Server,
    pub(crate) port: u16,
    /// Faults for the next request whose path ends with the suffix (used once).
    pub(crate) faults: std::sync::Arc<std::sync::Mutex<Vec<(String, Fault)>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeltaKind {
    Delta,
    Zdelta,
}

impl ImageFixture {
    pub(crate) fn new(kind: DeltaKind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        let faults: std::sync::Arc<std::sync::Mutex<Vec<(String, Fault)>>> = Default::default();
        let hook = faults.clone();
        let server = Server::start_with(&srv, move |req| {
            let mut rules = hook.lock().unwrap();
            match rules
                .iter()
                .position(|(suffix, _)| req.path.ends_with(suffix.as_str()))
            {
                Some(i) => rules.remove(i).1,
                None => Fault::None,
            }
        })
        .unwrap();
        let port = server.addr().port();
        let root = dir.path().join("root");
        materialize(&tree(1, port), &root);
        let f = ImageFixture {
            dir,
            srv,
            root,
            server,
            port,
            faults,
        };
        f.publish_keyrings(json!({}), json!({}));
        f.publish(kind, Some(0));
        f
    }

    pub(crate) fn sign_file(&self, rel: &str, key: &SigningKey) {
        let data = std::fs::read(self.srv.join(rel)).unwrap();
        std::fs::write(
            self.srv.join(format!("{rel}.asc")),
            key.detached_signature(&data).unwrap(),
        )
        .unwrap();
    }

    pub(crate) fn put(&self, rel: &str, data: &[u8], key: &SigningKey) {
        let p = self.srv.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        self.sign_file(rel, key);
    }

    /// gpg/ keyrings; `master_extra` and `signing_extra` are merged into keyring.json.
    fn publish_keyrings(&self, master_extra: Value, signing_extra: Value) {
        let k = keys();
        let mut m = json!({"type": "image-master"});
        m.as_object_mut()
            .unwrap()
            .extend(master_extra.as_object().unwrap().clone());
        self.put(
            "gpg/image-master.tar.xz",
            &keyring_tar(&[&k.master], m),
            &k.archive,
        );
        let mut s =
            json!({"type": "image-signing", "expiry": ru_format::date::now() + 86_400 * 365});
        s.as_object_mut()
            .unwrap()
            .extend(signing_extra.as_object().unwrap().clone());
        self.put(
            "gpg/image-signing.tar.xz",
            &keyring_tar(&[&k.signing], s),
            &k.master,
        );
    }

    fn publish_blacklist(&self, keys_: &[&SigningKey]) {
        self.put(
            "gpg/blacklist.tar.xz",
            &keyring_tar(keys_, json!({"type": "blacklist"})),
            &keys().master,
        );
    }

    pub(crate) fn entry(&self, rel: &str, order: u32) -> Value {
        let data = std::fs::read(self.srv.join(rel)).unwrap();
        json!({"path": format!("/{rel}"), "signature": format!("/{rel}.asc"),
               "checksum": Sha256::of(&data).to_hex(), "size": data.len(), "order": order})
    }

    /// Full image of build 2, a delta (or zdelta) 2 → 3, version tarballs, index and
    /// channels. `age_days` ages generated_at.
    pub(crate) fn publish(&self, kind: DeltaKind, age_days: Option<i64>) {
        let k = keys();
        let t2 = tree(2, self.port);
        let t3 = tree(3, self.port);
        // The full image, by GNU tar from a staged tree.
        let stage = self.dir.path().join("stage2");
        let _ = std::fs::remove_dir_all(&stage);
        materialize(&t2, &stage.join("system"));
        std::fs::create_dir_all(self.srv.join("pool")).unwrap();
        let full = self.srv.join("pool/full-2.tar.xz");
        let status = Command::new("tar")
            .args(["--numeric-owner", "--sort=name", "-cJf"])
            .arg(&full)
            .arg("-C")
            .arg(&stage)
            .arg("system")
            .status()
            .unwrap();
        assert!(status.success());
        self.sign_file("pool/full-2.tar.xz", &k.signing);
        for b in [2, 3] {
            let mut v = Tree::new();
            v.insert("etc/system-image/channel.ini".into(), channel_ini(b));
            self.put(
                &format!("pool/version-{b}.tar.xz"),
                &xz(&image_tar(&v, None, None)),
                &k.signing,
            );
        }
        let (removed, changed) = diff(&t2, &t3);
        let (name, kind_name, data) = match kind {
            DeltaKind::Delta => (
                "pool/delta-3.tar.xz",
                "delta",
                xz(&image_tar(&changed, Some(&removed), None)),
            ),
            DeltaKind::Zdelta => (
                "pool/zdelta-3.tar.zst",
                "zdelta",
                zstd::encode_all(image_tar(&changed, Some(&removed), Some(&t2)).as_slice(), 3)
                    .unwrap(),
            ),
        };
        self.put(name, &data, &k.signing);
        let generated = ru_format::date::now() - age_days.unwrap_or(0) * 86_400;
        let index = json!({
            "global": {"generated_at": generated.to_string()},
            "images": [
                {"type": "full", "version": 2, "description": "Full 2",
                 "files": [self.entry("pool/full-2.tar.xz", 1), self.entry("pool/version-2.tar.xz", 2)]},
                {"type": kind_name, "base": 2, "version": 3, "description": "Delta 3",
                 "files": [self.entry(name, 1), self.entry("pool/version-3.tar.xz", 2)]}
            ]
        });
        self.put(
            &format!("{CHANNEL}/{DEVICE}/index.json"),
            serde_json::to_string_pretty(&index).unwrap().as_bytes(),
            &k.signing,
        );
        let channels = json!({
            CHANNEL: {"devices": {DEVICE: {"index": format!("/{CHANNEL}/{DEVICE}/index.json")}}},
            "secret": {"hidden": true, "devices": {}},
            "old": {"redirect": CHANNEL, "devices": {}}
        });
        self.put("channels.json", channels.to_string().as_bytes(), &k.signing);
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    pub(crate) fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(BIN);
        // In the fixture's own directory: a relative path the tool should never have
        // used lands there, not in the source tree.
        cmd.current_dir(self.dir.path())
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env("RELEASE_UPGRADER_RETRY_DELAY_MS", "10");
        for v in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
            cmd.env_remove(v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run(cmd.output().unwrap())
    }

    pub(crate) fn tamper(&self, rel: &str) {
        let p = self.srv.join(rel);
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&p, bytes).unwrap();
    }
}

pub(crate) fn expect_tree(root: &Path, build: u64, port: u16) {
    let dir = tempfile::tempdir().unwrap();
    materialize(&tree(build, port), dir.path());
    let want = snapshot(dir.path());
    let got = snapshot(root);
    if want != got {
        let diffs: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: want {v}, got {:?}", got.get(k)))
            .chain(
                got.keys()
                    .filter(|k| !want.contains_key(*k))
                    .map(|k| format!("{k}: extra")),
            )
            .collect();
        panic!("tree differs from build {build}:\n{}", diffs.join("\n"));
    }
}

#[test]
fn check_reports_the_full_plus_delta_path() {
    let f = ImageFixture::new(DeltaKind::Delta);
    let run = f.run(&["--json", "image", "check"]);
    run.expect(0);
    let lines = run.json_lines();
    let check = lines.iter().find(|l| l["event"] == "check").unwrap();
    assert_eq!(check["available"], true);
    assert_eq!(check["target"], 3);
    let versions: Vec<_> = check["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].clone())
        .collect();
    assert_eq!(versions, [json!(2), json!(3)]);
    // Hidden channels are listed only on request; redirects are shown.
    let run = f.run(&["image", "channels"]);
    run.expect(0);
    assert!(
        !run.stdout().contains("secret") && run.stdout().contains("old -> stable"),
        "{}",
        run.stdout()
    );
    f.run(&["image", "channels", "--all"])
        .expect(0)
        .mentions(&["secret [hidden]"]);
    // Following a redirected channel ends on the same path.
    f.run(&["image", "check", "--channel", "old"]).expect(0);
    // At build 3 there is nothing newer.
    f.run(&["image", "check", "--build", "3"]).expect(1);
}

#[test]
fn apply_takes_the_device_from_1_to_3_through_full_and_delta() {
    let f = ImageFixture::new(DeltaKind::Delta);
    expect_tree(&f.root, 1, f.port);
    f.run(&["image", "apply"])
        .expect(0)
        .mentions(&["Applied build 3"]);
    expect_tree(&f.root, 3, f.port);
    assert!(
        !f.root
            .join("var/lib/release-upgrader/image/staging")
            .exists()
    );
    // Current now: check says so.
    f.run(&["image", "check"]).expect(1);
}

#[test]
fn zdelta_patches_apply_to_the_same_tree() {
    let f = ImageFixture::new(DeltaKind::Zdelta);
    let zdelta =
        zstd::decode_all(std::fs::File::open(f.srv.join("pool/zdelta-3.tar.zst")).unwrap())
            .unwrap();
    // libver.so.3 is patched against libver.so.2, a file this delta removes.
    let record = b"RELEASE_UPGRADER.base-path=system/usr/lib/libver.so.2\n";
    assert!(zdelta.windows(record.len()).any(|w| w == record));
    // The changelog is patched in its content and compressed again on the device.
    let record = b"RELEASE_UPGRADER.patch=gzip+zstd-patch-from\n";
    assert!(zdelta.windows(record.len()).any(|w| w == record));
    // The x86-64 code is patched in its branch conversion.
    let record = b"RELEASE_UPGRADER.patch=x86-branches+zstd-patch-from\n";
    assert!(zdelta.windows(record.len()).any(|w| w == record));
    f.run(&["image", "apply"]).expect(0);
    expect_tree(&f.root, 3, f.port);
}

/// Changes one hex digit in the middle of a pax record of the last member named `name`
/// in the fixture's zdelta to build 3, and publishes that signed: a zdelta its publisher
/// got wrong. `key` is how the record starts (its name and `=`, and any leading digits
/// to leave alone). Returns where the digits after `key` start in the tar.
fn tamper_zdelta_record(f: &ImageFixture, name: &str, key: &str) -> usize {
    let path = f.srv.join("pool/zdelta-3.tar.zst");
    let mut raw = zstd::decode_all(std::fs::File::open(&path).unwrap()).unwrap();
    // The pax header of the member comes right before its name.
    let member = raw
        .windows(name.len())
        .rposition(|w| w == name.as_bytes())
        .unwrap();
    let key = key.as_bytes();
    let at = raw[..member]
        .windows(key.len())
        .rposition(|w| w == key)
        .unwrap()
        + key.len();
    let hex_end = at + raw[at..].iter().position(|&b| b == b'\n').unwrap();
    let i = (at + hex_end) / 2;
    raw[i] = if raw[i] == b'0' { b'1' } else { b'0' };
    f.put(
        "pool/zdelta-3.tar.zst",
        &zstd::encode_all(raw.as_slice(), 3).unwrap(),
        &keys().signing,
    );
    f.publish_index_keeping_files();
    at
}

/// A file that an earlier patch of the same tarball makes too (the same digest and size)
/// is a copy of that one's result: its own patch is never decoded, so recompression
/// data changed there does not matter, and the tree is build 3's all the same.
#[test]
fn a_file_another_patch_makes_too_is_copied_from_its_result() {
    let f = ImageFixture::new(DeltaKind::Zdelta);
    let path = f.srv.join("pool/zdelta-3.tar.zst");
    let raw = zstd::decode_all(std::fs::File::open(&path).unwrap()).unwrap();
    let first = raw
        .windows(b"doc/pkg/changelog.gz".len())
        .rposition(|w| w == b"doc/pkg/changelog.gz")
        .unwrap();
    let at = tamper_zdelta_record(
        &f,
        "usr/share/doc/pkg2/changelog.gz",
        "RELEASE_UPGRADER.preflate=",
    );
    // pkg2's own record, not pkg's before it.
    assert!(at > first, "pkg's member comes first in the tarball");
    f.run(&["image", "apply"]).expect(0);
    expect_tree(&f.root, 3, f.port);
}

/// A gzip patch whose recompression data was changed does not rebuild the file the
/// index promises: refused, and the device stays at build 1.
#[test]
fn zdelta_gzip_patch_with_tampered_recompression_data_is_refused() {
    // One hex digit of preflate's corrections (changelog.gz), one byte of the gzip header
    // that precedes the tokens (NEWS.gz): same length, still hex.
    for (key, file) in [
        ("RELEASE_UPGRADER.preflate=", "changelog.gz"),
        ("RELEASE_UPGRADER.gzip-header=1f8b0800000000000", "NEWS.gz"),
    ] {
        let f = ImageFixture::new(DeltaKind::Zdelta);
        let name = format!("usr/share/doc/pkg/{file}");
        tamper_zdelta_record(&f, &name, key);
        let run = f.run(&["image", "apply"]);
        assert_ne!(run.code(), 0, "{}", run.stderr());
        // Refused at the check of the rebuilt file against the signed size and digest.
        assert!(
            run.stderr().contains(&format!("patched {name}")),
            "{file}: {}",
            run.stderr()
        );
        expect_tree(&f.root, 1, f.port);
    }
}

/// A patch frame too large to queue for a worker is applied by the member loop as it is
/// read: the file comes out right, and a byte changed in it is refused.
#[test]
fn zdelta_patch_larger_than_the_queue_is_applied_as_it_is_read() {
    let mut state = 1u64;
    let noise: Vec<u8> = (0..9 << 20)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 56) as u8
        })
        .collect();
    for tamper in [false, true] {
        let f = ImageFixture::new(DeltaKind::Zdelta);
        let (t2, t3) = (tree(2, f.port), tree(3, f.port));
        let (removed, mut changed) = diff(&t2, &t3);
        // Patched against libver.so.2 (same name up to the version): a frame of ~9 MiB.
        changed.insert(
            "usr/lib/libver.so.99".into(),
            Node::File(noise.clone(), 0o644),
        );
        let mut data = image_tar(&changed, Some(&removed), Some(&t2));
        if tamper {
            let at = data.len() / 2;
            data[at] ^= 0x01;
        }
        f.put(
            "pool/zdelta-3.tar.zst",
            &zstd::encode_all(data.as_slice(), 3).unwrap(),
            &keys().signing,
        );
        f.publish_index_keeping_files();
        let run = f.run(&["image", "apply"]);
        let huge = f.root.join("usr/lib/libver.so.99");
        if tamper {
            assert_eq!(run.code(), 3, "{}", run.stderr());
            assert!(
                run.stderr().contains("patched usr/lib/libver.so.99"),
                "{}",
                run.stderr()
            );
            expect_tree(&f.root, 1, f.port);
        } else {
            run.expect(0);
            assert!(std::fs::read(&huge).unwrap() == noise);
            std::fs::remove_file(&huge).unwrap();
            expect_tree(&f.root, 3, f.port);
        }
    }
}

/// A patch whose base path leaves the tree, names a missing file, or names a file with
/// other content is refused, and the device stays at build 1.
#[test]
fn zdelta_base_paths_outside_the_tree_missing_or_of_other_content_are_refused() {
    for (base_path, reason) in [
        ("system/../system/usr/lib/libver.so.2", "`..` in path"),
        ("../usr/lib/libver.so.2", "`..` in path"),
        ("/system/usr/lib/libver.so.2", "absolute path"),
        ("usr/lib/libver.so.2", "outside system/"),
        (
            "system/usr/lib/libver.so.9",
            "a file this system does not have",
        ),
        (
            "system/var/lib/release-upgrader",
            "a file this system does not have",
        ),
        ("system/usr/bin/sh", "a file this system does not have"),
        ("system/usr/lib/libbig.so", "SHA256 mismatch"),
    ] {
        let f = ImageFixture::new(DeltaKind::Zdelta);
        let (t2, t3) = (tree(2, f.port), tree(3, f.port));
        let (removed, changed) = diff(&t2, &t3);
        let data = image_tar_with_base(&changed, Some(&removed), Some(&t2), Some(base_path));
        f.put(
            "pool/zdelta-3.tar.zst",
            &zstd::encode_all(data.as_slice(), 3).unwrap(),
            &keys().signing,
        );
        f.publish_index_keeping_files();
        let run = f.run(&["image", "apply"]);
        assert_eq!(run.code(), 3, "{base_path}: {}", run.stderr());
        assert!(
            run.stderr().contains(reason),
            "{base_path}: wanted {reason:?}: {}",
            run.stderr()
        );
        expect_tree(&f.root, 1, f.port);
    }
}

#[test]
fn upgrade_uses_images_on_an_image_device() {
    let f = ImageFixture::new(DeltaKind::Delta);
    f.run(&["upgrade", "--dry-run"])
        .expect(0)
        .mentions(&["Update available: build 1 -> 3"]);
    expect_tree(&f.root, 1, f.port);
    f.run(&["upgrade", "-y"])
        .expect(0)
        .mentions(&["updates with images"]);
    expect_tree(&f.root, 3, f.port);
}

/// The slots and the active link are paths on the device (resolved under `--root`);
/// the link is switched to name the new slot as the device sees it.
#[test]
fn ab_slots_switch_atomically() {
    let f = ImageFixture::new(DeltaKind::Zdelta);
    let a = f.root.join("slots/a");
    let b = f.root.join("slots/b");
    materialize(&tree(1, f.port), &a);
    std::fs::create_dir_all(&b).unwrap();
    let active = f.root.join("var/lib/release-upgrader/image/active");
    std::fs::create_dir_all(active.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/slots/a", &active).unwrap();
    f.run(&[
        "image", "apply", "--slot-a", "/slots/a", "--slot-b", "/slots/b",
    ])
    .expect(0);
    assert_eq!(std::fs::read_link(&active).unwrap(), Path::new("/slots/b"));
    expect_tree(&b, 3, f.port);
    expect_tree(&a, 1, f.port);
    assert!(!f.root.join("slots/.b.staging").exists());
}

#[test]
fn recovery_mode_writes_ubuntu_command() {
    let f = ImageFixture::new(DeltaKind::Delta);
    f.run(&["image", "apply", "--recovery"]).expect(0);
    let dir = f.root.join("cache/recovery");
    let command = std::fs::read_to_string(dir.join("ubuntu_command")).unwrap();
    assert_eq!(
        command,
        "load_keyring image-master.tar.xz image-master.tar.xz.asc\n\
         load_keyring image-signing.tar.xz image-signing.tar.xz.asc\n\
         format system\nmount system\n\
         update full-2.tar.xz full-2.tar.xz.asc\nupdate version-2.tar.xz version-2.tar.xz.asc\n\
         update delta-3.tar.xz delta-3.tar.xz.asc\nupdate version-3.tar.xz version-3.tar.xz.asc\n\
         unmount system\n"
    );
    for name in [
        "full-2.tar.xz",
        "delta-3.tar.xz.asc",
        "image-signing.tar.xz.asc",
    ] {
        assert!(dir.join(name).exists(), "{name}");
    }
    expect_tree(&f.root, 1, f.port);
}

/// On a device /cache is a partition of its own and the state directory is bind-mounted
/// from the data partition (the root being read-only): the recovery path writes through
/// both mount points, and `image recover` reads its state there. Mounted in a private
/// mount namespace that ends with the command.
#[test]
fn recovery_mode_writes_through_the_cache_and_state_mount_points_of_a_device() {
    if !as_root() {
        eprintln!("skipped: needs root for mount");
        return;
    }
    let f = ImageFixture::new(DeltaKind::Delta);
    let parts = f.dir.path().join("parts");
    let (cache, state) = (parts.join("cache"), parts.join("state"));
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(f.root.join("cache")).unwrap();
    std::fs::create_dir_all(f.root.join("var/lib/release-upgrader")).unwrap();
    let in_namespace = |args: &str| {
        let script = format!(
            "set -e\nmount --bind '{cache}' '{root}/cache'\n\
             mount --bind '{state}' '{root}/var/lib/release-upgrader'\n\
             exec '{bin}' --root '{root}' {args}\n",
            cache = cache.display(),
            state = state.display(),
            root = f.root.display(),
            bin = BIN,
        );
        Run(Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("RELEASE_UPGRADER_RETRY_DELAY_MS", "10")
            .output()
            .unwrap())
    };
    in_namespace("image apply --recovery --no-reboot")
        .expect(0)
        .mentions(&[
            "ubuntu_command",
            "Reboot to start the recovery to apply build 3.",
        ]);
    assert!(cache.join("recovery/ubuntu_command").is_file());
    assert!(
        state.join("image").is_dir(),
        "the download cache is on the state mount"
    );
    assert!(!f.root.join("cache/recovery").exists());
    in_namespace("image recover").expect(0);
    // In place, the staging area would be on another filesystem than the root: refused
    // before the root is touched.
    in_namespace("image apply --no-reboot")
        .expect(2)
        .mentions(&["mount point"]);
    in_namespace("image recover").expect(0);
    assert!(crate::debian_root::mounted_below(f.dir.path()).is_empty());
    expect_tree(&f.root, 1, f.port);
}

type TamperCase = (&'static str, &'static str, Box<dyn Fn(&ImageFixture)>);

/// Every tamper: refused with exit 3 and the device left at build 1.
#[test]
fn every_tamper_is_refused_and_the_device_is_untouched() {
    let k = keys();
    let cases: Vec<TamperCase> = vec![
        (
            "a byte of the delta",
            "SHA256 mismatch",
            Box::new(|f| f.tamper("pool/delta-3.tar.xz")),
        ),
        (
            "a byte of the full image",
            "SHA256 mismatch",
            Box::new(|f| f.tamper("pool/full-2.tar.xz")),
        ),
        (
            "a byte of index.json",
            "Message has been manipulated",
            Box::new(|f| f.tamper(&format!("{CHANNEL}/{DEVICE}/index.json"))),
        ),
        (
            "a byte of channels.json",
            "no good signature on channels.json",
            Box::new(|f| f.tamper("channels.json")),
        ),
        (
            "a byte of a keyring",
            "no good signature on image-signing keyring",
            Box::new(|f| f.tamper("gpg/image-signing.tar.xz")),
        ),
        (
            "a file signed by another key",
            "not in the trusted keyrings",
            Box::new(|f| f.sign_file("pool/delta-3.tar.xz", &keys().evil)),
        ),
        (
            "an expired signing keyring",
            "image-signing keyring expired",
            Box::new(|f| {
                f.publish_keyrings(json!({}), json!({"expiry": ru_format::date::now() - 60}))
            }),
        ),
        (
            "a keyring for another model",
            "is for model \"other-device\"",
            Box::new(|f| f.publish_keyrings(json!({}), json!({"model": "other-device"}))),
        ),
        (
            "a blacklisted signing key",
            "image-signing keyring from a trusted key: every key in it is blacklisted",
            Box::new(move |f| f.publish_blacklist(&[&k.signing])),
        ),
        (
            "a blacklisted image master",
            "image-master keyring from a trusted key: every key in it is blacklisted",
            Box::new(move |f| f.publish_blacklist(&[&k.master])),
        ),
        (
            "a file larger than promised",
            "the server sent more than the",
            Box::new(|f| {
                let p = f.srv.join("pool/delta-3.tar.xz");
                let mut data = std::fs::read(&p).unwrap();
                data.extend_from_slice(&[0; 4096]);
                std::fs::write(&p, data).unwrap();
            }),
        ),
    ];
    for (what, reason, tamper) in cases {
        let f = ImageFixture::new(DeltaKind::Delta);
        tamper(&f);
        let run = f.run(&["image", "apply"]);
        assert_eq!(run.code(), 3, "{what}: {}\n{}", run.stdout(), run.stderr());
        assert!(run.stderr().contains(reason), "{what}: {}", run.stderr());
        expect_tree(&f.root, 1, f.port);
    }
}

/// Every request of the image flow names the tool's version, the device, its channel and
/// its build: what the server's logs need to tell devices and rollouts apart.
#[test]
fn image_requests_introduce_the_device_channel_and_build() {
    let f = ImageFixture::new(DeltaKind::Delta);
    f.run(&["image", "check"]).expect(0);
    let expected = format!(
        "release-upgrader/{} ({DEVICE}; {CHANNEL}; build 1)",
        env!("CARGO_PKG_VERSION")
    );
    assert!(f.server.requests().len() >= 4);
    crate::support::every_request_introduces_itself_as(&f.server, &expected);
}

/// Real servers rewrite index.json only when its content changes, so its age alone says
/// nothing: it is held to a limit only when the command (`--max-age DAYS`, 0 for none)
/// or the device (`[service] max_age`) gives one.
#[test]
fn index_age_is_enforced_only_when_the_command_or_the_device_asks() {
    let f = ImageFixture::new(DeltaKind::Delta);
    f.publish(DeltaKind::Delta, Some(45));
    f.run(&["image", "check"]).expect(0);
    let run = f.run(&["image", "check", "--max-age", "30"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    assert!(
        run.stderr().contains("older than the allowed 30 days"),
        "{}",
        run.stderr()
    );
    f.run(&["image", "check", "--max-age", "60"]).expect(0);
    std::fs::write(
        f.root.join("etc/system-image/config.d/50_age.ini"),
        "[service]\nmax_age: 30d\n",
    )
    .unwrap();
    let run = f.run(&["image", "apply"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    assert!(run.stderr().contains("older than the allowed 30 days"));
    f.run(&["image", "check", "--max-age", "0"]).expect(0);
}

/// A correctly signed image whose members try to leave the tree is refused.
#[test]
fn hostile_members_are_refused() {
    for hostile in ["system/../escape", "/system/abs", "other/top"] {
        let f = ImageFixture::new(DeltaKind::Delta);
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        // Write the raw name so `..` and `/` survive.
        let name = hostile.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let data = xz(&b.into_inner().unwrap());
        f.put("pool/delta-3.tar.xz", &data, &keys().signing);
        f.publish_index_keeping_files();
        let run = f.run(&["image", "apply"]);
        assert_eq!(run.code(), 3, "{hostile}: {}", run.stderr());
        assert!(
            ["`..` in path", "absolute path", "outside system/"]
                .iter()
                .any(|r| run.stderr().contains(r)),
            "{hostile}: {}",
            run.stderr()
        );
        expect_tree(&f.root, 1, f.port);
        assert!(!f.dir.path().join("escape").exists());
    }
    // A symlink leaving the tree.
    let f = ImageFixture::new(DeltaKind::Delta);
    let mut t = Tree::new();
    t.insert("usr/bin/out".into(), Node::Link("../../../outside".into()));
    f.put(
        "pool/delta-3.tar.xz",
        &xz(&image_tar(&t, Some(&[]), None)),
        &keys().signing,
    );
    f.publish_index_keeping_files();
    let run = f.run(&["image", "apply"]);
    assert_eq!(run.code(), 3);
    assert!(
        run.stderr().contains("points outside the system tree"),
        "{}",
        run.stderr()
    );
    expect_tree(&f.root, 1, f.port);
}

impl ImageFixture {
    /// Rewrites index.json for the files now in pool/ (after replacing one).
    pub(crate) fn publish_index_keeping_files(&self) {
        let rel = format!("{CHANNEL}/{DEVICE}/index.json");
        let mut index: Value =
            serde_json::from_slice(&std::fs::read(self.srv.join(&rel)).unwrap()).unwrap();
        for image in index["images"].as_array_mut().unwrap() {
            for file in image["files"].as_array_mut().unwrap() {
                let path = file["path"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches('/')
                    .to_owned();
                let order = file["order"].as_u64().unwrap() as u32;
                *file = self.entry(&path, order);
            }
        }
        self.put(&rel, index.to_string().as_bytes(), &keys().signing);
    }
}

pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub(crate) fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigkill_at_seeded_points_leaves_old_or_new_never_mixed() {
    let seed = std::env::var("RELEASE_UPGRADER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1a6e_2026u64);
    eprintln!("crash seed {seed:#x} (set RELEASE_UPGRADER_CRASH_SEED to repeat another)");
    let mut rng = Rng(seed);
    let mut tried = 0;
    for kind in [DeltaKind::Delta, DeltaKind::Zdelta] {
        let f = ImageFixture::new(kind);
        let pristine = f.dir.path().join("pristine");
        // Download once so every killed run starts from the cache.
        f.run(&["image", "download"]).expect(0);
        copy_tree(&f.root, &pristine);
        let counter = f.dir.path().join("count");
        f.run_env(
            &["image", "apply"],
            &[("RELEASE_UPGRADER_CRASH_COUNT", counter.to_str().unwrap())],
        )
        .expect(0);
        let total: u64 = std::fs::read_to_string(&counter)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(total > 40, "{total}");
        let mut points: Vec<u64> = (0..20).map(|_| rng.next() % total + 1).collect();
        points.extend([1, total]);
        points.sort();
        points.dedup();
        eprintln!("{} crash points, trying {points:?}", total);
        let (mut old, mut new) = (0, 0);
        for n in points {
            copy_tree(&pristine, &f.root);
            let run = f.run_env(
                &["image", "apply"],
                &[("RELEASE_UPGRADER_CRASH_AT", &n.to_string())],
            );
            assert_eq!(
                run.0.status.signal(),
                Some(9),
                "not killed at {n}: {}",
                run.stderr()
            );
            f.run(&["image", "recover"]).expect(0);
            let got = snapshot(&f.root);
            let is = |b| {
                let d = tempfile::tempdir().unwrap();
                materialize(&tree(b, f.port), d.path());
                snapshot(d.path()) == got
            };
            if is(1) {
                old += 1;
            } else if is(3) {
                new += 1;
            } else {
                expect_tree(&f.root, 3, f.port); // shows the difference
            }
            // And the next run always ends at the new build (exit 1: already there).
            let again = f.run(&["image", "apply"]);
            assert!(matches!(again.code(), 0 | 1), "{}", again.stderr());
            expect_tree(&f.root, 3, f.port);
        }
        eprintln!("old {old}, new {new}");
        assert!(old > 0 && new > 0, "old {old} new {new}");
        tried += old + new;
    }
    assert!(tried >= 30, "only {tried} crash points tried");
}

#[test]
fn mode_choice_sees_a_read_only_bind_mount() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for mount");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    let ro = dir.path().join("ro");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    let info = |root: &Path| {
        let out = Command::new(BIN)
            .arg("--root")
            .arg(root)
            .args(["--json", "image", "info"])
            .output()
            .unwrap();
        let run = Run(out);
        run.expect(0);
        run.json_lines()[0].clone()
    };
    assert_eq!(info(&plain)["mode"], "apt");
    let mount = |args: &[&str]| {
        let s = Command::new("mount").args(args).status().unwrap();
        assert!(s.success(), "mount {args:?}");
    };
    mount(&["--bind", plain.to_str().unwrap(), ro.to_str().unwrap()]);
    mount(&["-o", "remount,bind,ro", ro.to_str().unwrap()]);
    let seen = info(&ro);
    let _ = Command::new("umount").arg(&ro).status();
    assert_eq!(seen["mode"], "image", "{seen}");
    assert_eq!(seen["facts"]["read_only"], true);
    // The same directory, writable, is still apt.
    assert_eq!(info(&plain)["mode"], "apt");
}

/// A zdelta patch made against another base than the device will have is refused (when
/// its result is wrong: the base is checked then, to say which was).
#[test]
fn zdelta_patch_against_the_wrong_base_is_refused() {
    let f = ImageFixture::new(DeltaKind::Zdelta);
    let (t2, t3) = (tree(2, f.port), tree(3, f.port));
    let (removed, changed) = diff(&t2, &t3);
    // libbig.so's patch is made against build 3's own file (but one byte): it copies
    // nearly all of it from a base the device does not have.
    let mut wrong = t2.clone();
    let Some(Node::File(lib, _)) = t3.get("usr/lib/libbig.so") else {
        panic!("no libbig.so")
    };
    let mut lib = lib.clone();
    lib[200_000] ^= 0xff;
    wrong.insert("usr/lib/libbig.so".into(), Node::File(lib, 0o644));
    let data = image_tar(&changed, Some(&removed), Some(&wrong));
    f.put(
        "pool/zdelta-3.tar.zst",
        &zstd::encode_all(data.as_slice(), 3).unwrap(),
        &keys().signing,
    );
    f.publish_index_keeping_files();
    let run = f.run(&["image", "apply"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("base of the patch for usr/lib/libbig.so"),
        "{}",
        run.stderr()
    );
    expect_tree(&f.root, 1, f.port);
}

impl ImageFixture {
    /// A device-signing keyring for the device (with `json` merged in keyring.json),
    /// named in channels.json, and index.json signed by it.
    fn publish_device_keyring(&self, extra: Value) {
        let k = keys();
        let mut j = json!({"type": "device-signing"});
        j.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let rel = format!("{CHANNEL}/{DEVICE}/device.tar.xz");
        self.put(&rel, &keyring_tar(&[&k.device], j), &k.signing);
        let channels = json!({
            CHANNEL: {"devices": {DEVICE: {
                "index": format!("/{CHANNEL}/{DEVICE}/index.json"),
                "keyring": {"path": format!("/{rel}"), "signature": format!("/{rel}.asc")}}}}
        });
        self.put("channels.json", channels.to_string().as_bytes(), &k.signing);
        self.sign_file(&format!("{CHANNEL}/{DEVICE}/index.json"), &k.device);
    }
}

#[test]
fn device_signing_keyring_signs_the_index() {
    let f = ImageFixture::new(DeltaKind::Delta);
    f.publish_device_keyring(json!({"model": DEVICE}));
    f.run(&["image", "apply"]).expect(0);
    expect_tree(&f.root, 3, f.port);
    // A device keyring for another model is refused.
    let f = ImageFixture::new(DeltaKind::Delta);
    f.publish_device_keyring(json!({"model": "other-device"}));
    let run = f.run(&["image", "apply"]);
    assert_eq!(run.code(), 3);
    assert!(
        run.stderr()
            .contains("device-signing keyring: the keyring is for model"),
        "{}",
        run.stderr()
    );
    // A device keyring signed by the image master instead of image-signing is refused.
    let f = ImageFixture::new(DeltaKind::Delta);
    f.publish_device_keyring(json!({}));
    f.sign_file(&format!("{CHANNEL}/{DEVICE}/device.tar.xz"), &keys().master);
    let run = f.run(&["image", "apply"]);
    assert_eq!(run.code(), 3);
    assert!(
        run.stderr().contains("device-signing keyring"),
        "{}",
        run.stderr()
    );
    expect_tree(&f.root, 1, f.port);
}

/// A download cut short resumes where it stopped (Range) on the next run.
#[test]
fn interrupted_download_resumes_on_the_next_run() {
    let f = ImageFixture::new(DeltaKind::Delta);
    f.faults
        .lock()
        .unwrap()
        .push(("full-2.tar.xz".into(), Fault::Truncate(2000)));
    let run = f.run(&["--retries", "0", "image", "download"]);
    assert_eq!(run.code(), 4, "{}", run.stderr());
    let partial = f
        .root
        .join("var/lib/release-upgrader/image/cache/full-2.tar.xz.partial");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 2000);
    f.run(&["image", "download"]).expect(0);
    let resumed = f
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("full-2.tar.xz"))
        .filter_map(|r| r.header("range").map(str::to_owned))
        .collect::<Vec<_>>();
    assert_eq!(resumed, ["bytes=2000-"]);
    f.run(&["image", "apply"]).expect(0);
    expect_tree(&f.root, 3, f.port);
}

/// A symlink in the device tree pointing outside it is never followed: a `removed`
/// path below it is left alone, a member below it is refused.
#[test]
fn deltas_never_act_through_a_symlink_leaving_the_tree() {
    let f = ImageFixture::new(DeltaKind::Delta);
    let outside = f.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), "host").unwrap();
    let at_build_2 = || {
        let _ = std::fs::remove_dir_all(&f.root);
        materialize(&tree(2, f.port), &f.root);
        std::os::unix::fs::symlink(&outside, f.root.join("usr/share/outside")).unwrap();
    };
    let (t2, t3) = (tree(2, f.port), tree(3, f.port));
    let (mut removed, changed) = diff(&t2, &t3);
    removed.push("usr/share/outside/victim".into());
    at_build_2();
    f.put(
        "pool/delta-3.tar.xz",
        &xz(&image_tar(&changed, Some(&removed), None)),
        &keys().signing,
    );
    f.publish_index_keeping_files();
    f.run(&["image", "apply"]).expect(0);
    assert_eq!(
        std::fs::read_to_string(outside.join("victim")).unwrap(),
        "host"
    );

    let mut changed = changed;
    changed.insert(
        "usr/share/outside/new".into(),
        Node::File(b"x".to_vec(), 0o644),
    );
    at_build_2();
    f.put(
        "pool/delta-3.tar.xz",
        &xz(&image_tar(&changed, Some(&[]), None)),
        &keys().signing,
    );
    f.publish_index_keeping_files();
    let run = f.run(&["image", "apply"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    assert!(run.stderr().contains("is a symlink"), "{}", run.stderr());
    assert!(!outside.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(outside.join("victim")).unwrap(),
        "host"
    );
}

/// SIGKILL during an A/B apply: after recovery the active link names a complete slot,
/// the old one or the new one.
#[test]
fn sigkill_during_an_ab_apply_leaves_a_complete_active_slot() {
    let f = ImageFixture::new(DeltaKind::Zdelta);
    let (a, b) = (f.root.join("slots/a"), f.root.join("slots/b"));
    // A relative link, beside the slots.
    let active = f.root.join("slots/active");
    let reset = || {
        for s in [&a, &b] {
            let _ = std::fs::remove_dir_all(s);
        }
        materialize(&tree(1, f.port), &a);
        std::fs::create_dir_all(&b).unwrap();
        let _ = std::fs::remove_file(&active);
        std::os::unix::fs::symlink("a", &active).unwrap();
    };
    let args = [
        "image",
        "apply",
        "--slot-a",
        "/slots/a",
        "--slot-b",
        "/slots/b",
        "--active",
        "/slots/active",
    ];
    reset();
    let counter = f.dir.path().join("count");
    f.run_env(
        &args,
        &[("RELEASE_UPGRADER_CRASH_COUNT", counter.to_str().unwrap())],
    )
    .expect(0);
    let total: u64 = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut rng = Rng(0xab_2026);
    let mut points: Vec<u64> = (0..8).map(|_| rng.next() % total + 1).collect();
    points.extend([1, total - 2, total - 1, total]);
    points.sort();
    points.dedup();
    let (mut old, mut new) = (0, 0);
    for n in points {
        reset();
        let run = f.run_env(&args, &[("RELEASE_UPGRADER_CRASH_AT", &n.to_string())]);
        assert_eq!(
            run.0.status.signal(),
            Some(9),
            "not killed at {n}: {}",
            run.stderr()
        );
        f.run(&["image", "recover"]).expect(0);
        let now = std::fs::read_link(&active).unwrap();
        if now == Path::new("a") {
            expect_tree(&a, 1, f.port);
            old += 1;
        } else {
            assert_eq!(now, Path::new("/slots/b"), "point {n}");
            expect_tree(&b, 3, f.port);
            new += 1;
        }
    }
    assert!(old > 0 && new > 0, "old {old} new {new}");
}

/// A blacklist is optional, but one without its signature stops the update.
#[test]
fn a_blacklist_without_its_signature_is_not_ignored() {
    let f = ImageFixture::new(DeltaKind::Delta);
    f.publish_blacklist(&[&keys().evil]);
    f.run(&["image", "check"]).expect(0);
    std::fs::remove_file(f.srv.join("gpg/blacklist.tar.xz.asc")).unwrap();
    let run = f.run(&["--retries", "0", "image", "apply"]);
    assert_eq!(run.code(), 4, "{}", run.stderr());
    assert!(
        run.stderr().contains("blacklist.tar.xz.asc"),
        "{}",
        run.stderr()
    );
    expect_tree(&f.root, 1, f.port);
}

/// Makes the three keys of an image server under `d/keys/` and their keyring chain
/// (archive-master self-signed, image-master signed by it, image-signing by image-master)
/// under `d/gpg/` with `release-upgrader-publish key generate` and `image keyring`: the
/// secret key file of a key by name, and the `gpg/` directory.
pub(crate) fn cli_keyrings(d: &Path) -> (impl Fn(&str) -> String + use<>, PathBuf) {
    use crate::support::PUBLISH_BIN;
    let publish = |args: &[&str]| {
        let out = Command::new(PUBLISH_BIN).args(args).output().unwrap();
        Run(out).expect(0);
    };
    let p = |path: &Path| path.to_str().unwrap().to_owned();
    let keys = d.join("keys");
    for k in ["archive-master", "image-master", "image-signing"] {
        publish(&["key", "generate", "--out", &p(&keys.join(k)), "--uid", k]);
    }
    let secret = move |k: &str| p(&keys.join(k).join("secret.asc"));
    let gpg = d.join("gpg");
    for (kind, signer) in [
        ("archive-master", "archive-master"),
        ("image-master", "archive-master"),
        ("image-signing", "image-master"),
    ] {
        publish(&[
            "image",
            "keyring",
            "--type",
            kind,
            "--key",
            &secret(kind),
            "--signed-by",
            &secret(signer),
            "--out",
            &p(&gpg.join(format!("{kind}.tar.xz"))),
        ]);
    }
    (secret, gpg)
}

/// What `release-upgrader-publish image …` (the server side of this crate) publishes
/// takes a device from build 1 to 3 through deltas (and, by default, zdeltas).
#[test]
fn a_tree_published_by_release_upgrader_publish_takes_the_device_through_deltas() {
    use crate::support::PUBLISH_BIN;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let server = Server::start(&www).unwrap();
    let port = server.addr().port();
    let publish = |args: &[&str]| {
        let out = Command::new(PUBLISH_BIN).args(args).output().unwrap();
        Run(out).expect(0);
    };
    let p = |path: &Path| path.to_str().unwrap().to_owned();
    let (secret, gpg) = cli_keyrings(d);
    let archive_master = std::fs::read(gpg.join("archive-master.tar.xz")).unwrap();
    let with_anchor = |build: u64| {
        let mut t = tree(build, port);
        // An incompressible file no build changes: full images cost megabytes more
        // than deltas, so the delta chain wins on size.
        let mut rng = Rng(0x5eed);
        let noise: Vec<u8> = (0..3 << 20).map(|_| rng.next() as u8).collect();
        t.insert("usr/share/noise".into(), Node::File(noise, 0o644));
        t.insert(
            "usr/share/system-image/archive-master.tar.xz".into(),
            Node::File(archive_master.clone(), 0o644),
        );
        // x86-64 code new in build 2, and other code new in 3, with no base by name:
        // zdelta sends them in their code conversion, a frame of their own.
        for (since, name, seed) in [(2, "usr/lib/newtool", 5), (3, "usr/lib/helper", 9)] {
            if build >= since {
                t.insert(name.into(), Node::File(x86_code(seed), 0o755));
            }
        }
        t
    };
    for build in 1..=3u64 {
        let root = d.join(format!("tree-{build}"));
        materialize(&with_anchor(build), &root);
        // Same times in every build, so unchanged files stay out of the deltas.
        let status = Command::new("find")
            .arg(&root)
            .args(["-exec", "touch", "-h", "-d", "@1700000000", "{}", "+"])
            .status()
            .unwrap();
        assert!(status.success());
        let out = d.join(format!("build-{build}"));
        publish(&["image", "build", "--root", &p(&root), "--out", &p(&out)]);
        let v = build.to_string();
        let port_s = port.to_string();
        publish(&[
            "image",
            "publish",
            &p(&out.join("rootfs.tar.xz")),
            "--out",
            &p(&www),
            "--key",
            &secret("image-signing"),
            "--channel",
            CHANNEL,
            "--device",
            DEVICE,
            "--version",
            &v,
            "--keyrings",
            &p(&gpg),
            "--zdelta",
            "--server",
            "127.0.0.1",
            "--http-port",
            &port_s,
            "--https-port",
            "disabled",
        ]);
    }
    // The publisher patched the x86-64 code of each zdelta in its PC-relative conversion.
    let found = Command::new("find")
        .arg(&www)
        .args(["-name", "*.zdelta-*.tar.zst"])
        .output()
        .unwrap();
    let zdeltas: Vec<&str> = std::str::from_utf8(&found.stdout)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(zdeltas.len(), 2, "{zdeltas:?}");
    // The new code came as frames of their own, with no base.
    let record = b"RELEASE_UPGRADER.patch=x86-pcrel+zstd-patch-from\n";
    let alone = b"RELEASE_UPGRADER.patch=x86-pcrel+zstd\n";
    for zdelta in zdeltas {
        let raw = zstd::decode_all(std::fs::File::open(zdelta).unwrap()).unwrap();
        assert!(raw.windows(record.len()).any(|w| w == record), "{zdelta}");
        assert!(raw.windows(alone.len()).any(|w| w == alone), "{zdelta}");
    }
    let without_version_files = |mut s: BTreeMap<String, String>| {
        s.remove("etc/system-image/channel.ini");
        s.remove("etc/ubuntu-build");
        s
    };
    for extra in [&[][..], &["--no-zdelta"][..]] {
        let root = d.join("device");
        let _ = std::fs::remove_dir_all(&root);
        materialize(&with_anchor(1), &root);
        let mut args = vec!["--root", root.to_str().unwrap(), "--json", "image", "check"];
        args.extend_from_slice(extra);
        let run = Run(Command::new(BIN).args(&args).output().unwrap());
        run.expect(0);
        let check = run
            .json_lines()
            .into_iter()
            .find(|l| l["event"] == "check")
            .unwrap();
        let path: Vec<(String, u64)> = check["path"]
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
        let kind = if extra.is_empty() { "zdelta" } else { "delta" };
        assert_eq!(
            path,
            [(kind.to_owned(), 2), (kind.to_owned(), 3)],
            "{extra:?}"
        );
        args[3] = "image";
        args[4] = "apply";
        Run(Command::new(BIN).args(&args).output().unwrap()).expect(0);
        let want = d.join("want");
        let _ = std::fs::remove_dir_all(&want);
        materialize(&with_anchor(3), &want);
        assert_eq!(
            without_version_files(snapshot(&root)),
            without_version_files(snapshot(&want)),
            "{extra:?}"
        );
        let ini = std::fs::read_to_string(root.join("etc/system-image/channel.ini")).unwrap();
        assert!(ini.contains("build_number: 3"), "{ini}");
    }
    // For the recovery, which unpacks with xzcat, the deltas (.tar.xz), never the zdeltas
    // the device itself would take.
    let root = d.join("device");
    let _ = std::fs::remove_dir_all(&root);
    materialize(&with_anchor(1), &root);
    Run(Command::new(BIN)
        .args([
            "--root",
            root.to_str().unwrap(),
            "image",
            "apply",
            "--recovery",
        ])
        .output()
        .unwrap())
    .expect(0);
    let command = std::fs::read_to_string(root.join("cache/recovery/ubuntu_command")).unwrap();
    let updates: Vec<&str> = command
        .lines()
        .filter_map(|l| l.strip_prefix("update "))
        .collect();
    assert_eq!(updates.len(), 4, "{command}");
    assert!(
        updates
            .iter()
            .all(|u| u.contains(".tar.xz ") && u.contains(".delta-") != u.contains("version-")),
        "{command}"
    );
}
