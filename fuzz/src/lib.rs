//! What the fuzz targets share: a panic policy, a scratch directory on tmpfs, input
//! splitting, and the few containers (ar, tar, a stored xz stream) the targets wrap
//! fuzzed bytes in so that they reach the parsers through the client's own entry points.
//!
//! Nothing here decides what is valid: the targets only build inputs and check
//! invariants on what the crate returns.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Separates the parts of a multi-part input (`a SEP b SEP c`).
pub const SEP: &[u8] = b"\n--8<--\n";

/// Once per process: panics abort (libFuzzer reports them as crashes), except those
/// raised inside `preflate-rs` or `cabac` (its entropy coder, used by nothing else),
/// which `image::regzip` runs under `catch_unwind` on purpose (a bug there is an error
/// of one file, not an abort of the apply): they unwind to that guard, as they do in
/// the client, and are counted on stderr.
pub fn init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // A deflate rebuild that spins is given up after its budget (an error of the
        // file, found by fuzzing); a short one keeps such inputs under libFuzzer's
        // timeout, which would otherwise report them.
        ru_format::image::regzip::set_rebuild_budget(std::time::Duration::from_secs(2));
        let aborting = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_preflate = info.location().is_some_and(|l| {
                l.file().contains("/preflate-rs-") || l.file().contains("/cabac-")
            });
            if in_preflate {
                eprintln!("contained panic in preflate-rs (caught by regzip::guarded): {info}");
                return;
            }
            aborting(info);
        }));
    });
}

/// This process's scratch directory, on tmpfs when there is one (the deb and image
/// targets write small trees per input). Directories of earlier, dead fuzz processes
/// are removed when it is made.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = match std::env::var_os("RELEASE_UPGRADER_FUZZ_TMP") {
            Some(dir) => PathBuf::from(dir),
            None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        const PREFIX: &str = "release-upgrader-fuzz.";
        if let Ok(entries) = std::fs::read_dir(&base) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                    continue;
                };
                if !pid.is_empty()
                    && pid.bytes().all(|b| b.is_ascii_digit())
                    && !Path::new("/proc").join(pid).exists()
                {
                    wipe(&entry.path());
                }
            }
        }
        let dir = base.join(format!("{PREFIX}{}", std::process::id()));
        wipe(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// Removes `dir` and everything in it (never following symlinks), first making its
/// directories writable: an extraction may have left a `0555` directory.
pub fn wipe(dir: &Path) {
    fn open_up(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&entry.path());
                }
            }
        }
    }
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        open_up(dir);
        let _ = std::fs::remove_dir_all(dir);
    } else {
        let _ = std::fs::remove_file(dir);
    }
}

/// A fresh, empty directory `name` in the scratch directory.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    wipe(&dir);
    std::fs::create_dir(&dir).expect("fresh scratch directory");
    dir
}

/// Writes `data` to the file `name` in the scratch directory.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, data).expect("scratch file");
    path
}

/// `data` cut at each [`SEP`] into exactly `n` parts (missing parts are empty; the last
/// part keeps any further separators).
pub fn split_parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match find(rest, SEP) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + SEP.len()..];
            }
            None => {
                parts.push(rest);
                rest = &[];
            }
        }
    }
    parts.push(rest);
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites the checksum field of every header block of an uncompressed tar stream
/// (found by walking the headers' size fields, as a reader does), so that mutated headers
/// get past the checksum and reach the field parsers.
pub fn fix_tar_checksums(tar: &mut [u8]) {
    let mut at = 0usize;
    while at + 512 <= tar.len() {
        let block = &mut tar[at..at + 512];
        if block.iter().all(|&b| b == 0) {
            at += 512;
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(field.as_bytes());
        let size = tar_size(&block[124..136]);
        let data = size.div_ceil(512).saturating_mul(512);
        match usize::try_from(data)
            .ok()
            .and_then(|d| (at + 512).checked_add(d))
        {
            Some(next) => at = next,
            None => break,
        }
    }
}

/// A tar size field: octal, or GNU base-256 (0 when unreadable).
fn tar_size(field: &[u8]) -> u64 {
    if field[0] & 0x80 != 0 {
        return field[1..].iter().fold(0u64, |n, &b| {
            n.saturating_mul(256).saturating_add(u64::from(b))
        });
    }
    field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .fold(0u64, |n, &b| {
            n.saturating_mul(8).saturating_add(u64::from(b - b'0'))
        })
}

/// An ar archive of `members` (name, data), as dpkg-deb writes it.
pub fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            100644,
            data.len()
        );
        assert_eq!(header.len(), 60, "ar member name too long: {name}");
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// The `control.tar` of a minimal helper package (uncompressed).
pub fn helper_control_tar() -> &'static [u8] {
    static TAR: OnceLock<Vec<u8>> = OnceLock::new();
    TAR.get_or_init(|| {
        tar_of(&[(
            "./control",
            b"Package: release-upgrader-fuzz\nVersion: 1.0\nArchitecture: amd64\n\
              Installed-Size: 1\nDescription: fuzz\n"
                .as_slice(),
        )])
    })
}

/// The header of a regular file of `size` bytes, root-owned, mode 0644.
pub fn regular_header(mut header: tar::Header, size: usize) -> tar::Header {
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// An uncompressed tar of regular files (name, data), root-owned, mode 0644.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = regular_header(tar::Header::new_gnu(), data.len());
        builder
            .append_data(&mut header, name, *data)
            .expect("tar in memory");
    }
    builder.into_inner().expect("tar in memory")
}

/// The input of the tar targets: a mode byte, then a tar whose header checksums are
/// fixed up unless mode bit 0 says not to (so mutations reach past the checksum).
pub fn tar_input(data: &[u8]) -> Option<(u8, Vec<u8>)> {
    let (&mode, tar) = data.split_first()?;
    let mut tar = tar.to_vec();
    if mode & 1 == 0 {
        fix_tar_checksums(&mut tar);
    }
    Some((mode, tar))
}

/// The input of the apt sources targets: a mode byte, then UTF-8 text.
pub fn mode_and_text(data: &[u8]) -> Option<(u8, &str)> {
    let (&mode, text) = data.split_first()?;
    Some((mode, std::str::from_utf8(text).ok()?))
}

/// Which sources entries count as the distribution's, by mode bits 1-2: all, none, or
/// those whose URI names debian.
pub fn distribution_rule(
    mode: u8,
) -> impl Fn(&ru_client::upgrade::sources::SourceEntry) -> bool {
    move |e| match mode & 6 {
        0 => true,
        2 => false,
        _ => e.uris.iter().any(|u| u.contains("debian")),
    }
}

/// The sources targets' rules: bookworm → trixie, third-party sources allowed by mode
/// bit 0.
pub fn upgrade_rules<'a>(
    mode: u8,
    is_distribution: &'a dyn Fn(&ru_client::upgrade::sources::SourceEntry) -> bool,
) -> ru_client::upgrade::sources::Rules<'a> {
    ru_client::upgrade::sources::Rules {
        from: "bookworm",
        to: "trixie",
        allow_third_party: mode & 1 != 0,
        is_distribution,
    }
}

/// A .deb of the given members after `debian-binary`.
pub fn deb(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut all: Vec<(&str, &[u8])> = vec![("debian-binary", b"2.0\n")];
    all.extend_from_slice(members);
    ar(&all)
}

/// An .xz stream holding `data` in LZMA2 *uncompressed* chunks, without an integrity
/// check: what a fuzzed tar must be wrapped in to reach a parser that only reads .xz,
/// without spending the input's bytes (and the fuzzer's time) on a real compressor.
pub fn xz_stored(data: &[u8]) -> Vec<u8> {
    let crc32 = |bytes: &[u8]| {
        let mut crc = flate2::Crc::new();
        crc.update(bytes);
        crc.sum().to_le_bytes()
    };
    let varint = |mut n: u64, out: &mut Vec<u8>| {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    };
    let mut out = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
    let flags = [0u8, 0u8]; // check: none
    out.extend_from_slice(&flags);
    out.extend_from_slice(&crc32(&flags));
    // Block header: size, flags (one filter, no sizes), LZMA2 with a 4 KiB dictionary
    // (uncompressed chunks need none), padding, CRC32.
    let mut header = vec![0x02, 0x00, 0x21, 0x01, 0x00, 0, 0, 0];
    let header_crc = crc32(&header);
    header.extend_from_slice(&header_crc);
    let mut block = header.clone();
    for (i, chunk) in data.chunks(65536).enumerate() {
        block.push(if i == 0 { 0x01 } else { 0x02 });
        block.extend_from_slice(&((chunk.len() - 1) as u16).to_be_bytes());
        block.extend_from_slice(chunk);
    }
    block.push(0x00);
    let unpadded = block.len() as u64;
    while block.len() % 4 != 0 {
        block.push(0);
    }
    out.extend_from_slice(&block);
    let mut index = vec![0x00];
    varint(1, &mut index);
    varint(unpadded, &mut index);
    varint(data.len() as u64, &mut index);
    while index.len() % 4 != 0 {
        index.push(0);
    }
    let index_crc = crc32(&index);
    index.extend_from_slice(&index_crc);
    out.extend_from_slice(&index);
    let mut footer = ((index.len() / 4 - 1) as u32).to_le_bytes().to_vec();
    footer.extend_from_slice(&flags);
    let footer_crc = crc32(&footer);
    out.extend_from_slice(&footer_crc);
    out.extend_from_slice(&footer);
    out.extend_from_slice(b"YZ");
    out
}

/// The trusted keyring of the test fixture (`tests/fixtures/check/keyring.gpg`), which
/// signed the fixture's `InRelease`, `Release.gpg` and `meta-release.gpg` (the seeds).
pub fn fixture_keyring() -> &'static ru_trust::openpgp::Keyring {
    static KEYRING: OnceLock<ru_trust::openpgp::Keyring> = OnceLock::new();
    KEYRING.get_or_init(|| {
        let path = scratch_file(
            "fixture-keyring.gpg",
            include_bytes!("../../tests/fixtures/check/keyring.gpg"),
        );
        ru_trust::openpgp::Keyring::load(&[path]).expect("the fixture keyring loads")
    })
}

/// Checks that a path the crate produced from an archive is relative and normalised:
/// not empty, no leading `/`, no empty, `.` or `..` component.
pub fn assert_clean_relative(path: &str, context: &str) {
    assert!(!path.is_empty(), "{context}: empty path");
    assert!(!path.starts_with('/'), "{context}: absolute path {path:?}");
    for component in path.split('/') {
        assert!(
            !matches!(component, "" | "." | ".."),
            "{context}: path {path:?} has a {component:?} component"
        );
    }
}

/// Lists everything under `dir` (relative paths, no symlink followed).
pub fn walk(dir: &Path) -> Vec<(String, std::fs::Metadata)> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<(String, std::fs::Metadata)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let is_dir = meta.is_dir();
            out.push((rel, meta));
            if is_dir {
                go(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out
}

/// Writes to stderr once per process (for notes a target wants in the run's log).
pub fn note_once(key: &'static str, message: &str) {
    static SEEN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().expect("notes");
    if !seen.contains(&key) {
        seen.push(key);
        let _ = writeln!(std::io::stderr(), "note: {message}");
    }
}

/// Extracts the .deb `deb_bytes` the way the client installs a helper (`helper`:
/// [`Policy::helper`](ru_format::deb::Policy::helper)) or the publisher takes an
/// upstream package apart ([`Policy::upstream`](ru_format::deb::Policy::upstream)),
/// into a fresh directory, and checks what the crate promises of it:
///
/// - nothing is ever written outside the destination (a sibling directory stays empty,
///   whether the extraction succeeded or not), and no device node or fifo is made;
/// - on success, every entry's path is relative and normalised, the tree on disk is
///   exactly the entry list (types, sizes, link targets), hard links name a file listed
///   before them, and for helpers no setuid/setgid bit is set and every symlink resolves
///   lexically under the helper prefix.
pub fn extract_and_check(deb_bytes: &[u8], helper: bool) {
    use ru_format::deb::{self, EntryKind, Policy};
    let deb_path = scratch_file("input.deb", deb_bytes);
    let outside = fresh_dir("outside");
    let dest = fresh_dir("dest");
    let policy = if helper {
        Policy::helper("amd64")
    } else {
        Policy::upstream()
    };
    let control = deb::read_control(&deb_path);
    let result = deb::extract(&deb_path, &dest, &policy, &mut ());
    assert!(
        std::fs::read_dir(&outside).map_or(false, |mut d| d.next().is_none()),
        "the extraction wrote outside its destination"
    );
    let on_disk = walk(&dest);
    for (path, meta) in &on_disk {
        let t = meta.file_type();
        assert!(
            t.is_file() || t.is_dir() || t.is_symlink(),
            "{path}: a special file was created ({t:?})"
        );
    }
    let extracted = match result {
        Ok(extracted) => extracted,
        Err(e) => {
            trace(&format!("extract refused: {e}"));
            return;
        }
    };
    trace(&format!("extracted {} entries", extracted.entries.len()));
    let control = control.expect("extract succeeded where read_control failed");
    assert_eq!(control.package, extracted.control.package);
    let prefix = ru_format::layout::PREFIX_IN_DEB;
    let mut listed: std::collections::HashMap<&str, &EntryKind> = Default::default();
    for entry in &extracted.entries {
        assert_clean_relative(&entry.path, "extracted entry");
        assert!(
            entry.mode <= 0o7777,
            "{}: mode {:o}",
            entry.path,
            entry.mode
        );
        if helper {
            assert_eq!(
                entry.mode & 0o6000,
                0,
                "{}: setid bits in a helper",
                entry.path
            );
        }
        match &entry.kind {
            EntryKind::HardLink { target } => {
                assert_clean_relative(target, "hard link target");
                assert!(
                    matches!(
                        listed.get(target.as_str()),
                        Some(EntryKind::File { .. } | EntryKind::HardLink { .. })
                    ),
                    "{}: hard link to {target}, not a file listed before it",
                    entry.path
                );
            }
            EntryKind::Symlink { target } if helper => {
                let archive_path = format!("{prefix}/{}", entry.path);
                let resolved = resolve_lexically(&archive_path, target);
                assert!(
                    resolved
                        .as_deref()
                        .is_some_and(|r| r == prefix || r.starts_with(&format!("{prefix}/"))),
                    "{}: symlink to {target:?} resolves to {resolved:?}, outside /{prefix}",
                    entry.path
                );
            }
            _ => {}
        }
        let previous = listed.insert(&entry.path, &entry.kind);
        assert!(
            previous.is_none() || matches!(entry.kind, EntryKind::Dir),
            "{}: listed twice",
            entry.path
        );
    }
    assert_eq!(
        on_disk.len(),
        listed.len(),
        "the tree on disk is not the entry list"
    );
    for (path, meta) in &on_disk {
        let kind = listed
            .get(path.as_str())
            .unwrap_or_else(|| panic!("{path} is on disk but not listed"));
        let t = meta.file_type();
        match kind {
            EntryKind::File { size, .. } => {
                assert!(t.is_file(), "{path}: listed as a file, on disk {t:?}");
                assert_eq!(meta.len(), *size, "{path}: size on disk");
            }
            EntryKind::HardLink { .. } => assert!(t.is_file(), "{path}: hard link is {t:?}"),
            EntryKind::Dir => assert!(t.is_dir(), "{path}: listed as a directory, on disk {t:?}"),
            EntryKind::Symlink { target } => {
                assert!(t.is_symlink(), "{path}: listed as a symlink, on disk {t:?}");
                let on_disk = std::fs::read_link(dest.join(path)).expect("read_link");
                assert_eq!(on_disk.as_os_str().to_string_lossy(), target.as_str());
            }
        }
    }
}

/// Where the symlink at archive path `link` pointing to `target` lands, lexically
/// (`None`: above the root). Leading `..` climb from the link's directory.
pub fn resolve_lexically(link: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = match target.strip_prefix('/') {
        Some(_) => Vec::new(),
        None => {
            let mut p: Vec<&str> = link.split('/').filter(|c| !c.is_empty()).collect();
            p.pop();
            p
        }
    };
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// With `RELEASE_UPGRADER_FUZZ_TRACE` set, says on stderr which outcome an input reached
/// (to check that the seeds get past the checks they should: run a target on one file).
pub fn trace(outcome: &str) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("RELEASE_UPGRADER_FUZZ_TRACE").is_some()) {
        eprintln!("trace: {outcome}");
    }
}
