//! Reading image tarballs as hostile input: every member's header is checked here
//! before anything is written (the `tar` crate would silently skip `..` and flatten
//! devices), and members are turned into [`Member`]s that the overlay stages.
//!
//! Image members live under `system/` (mapped to the root of the system tree); the
//! first member of a delta is `removed`; `partitions/` members (boot images) are
//! reported and skipped, as this client flashes no partitions. Anything else is refused.

use std::io::{self, Read};
use std::path::Path;

use crate::error::Error;
use crate::image::{gztokens, regzip};

/// How a tarball is compressed, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Zstd,
}

impl Compression {
    pub fn of(path: &str) -> Option<Compression> {
        if path.ends_with(".tar.xz") {
            Some(Compression::Xz)
        } else if path.ends_with(".tar.zst") {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// The memory an xz stream may ask for (xz -9 needs 65 MiB).
const XZ_MEMLIMIT: u64 = 256 * 1024 * 1024;
/// The largest zstd window accepted (the zdelta contract allows `--long` up to 31).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 31;
const CHUNK: usize = 1024 * 1024;

/// A decompressing reader of `path`, decoding in a thread of its own so that
/// decompression overlaps writing.
pub fn open(path: &Path, compression: Compression) -> Result<Box<dyn Read + Send>, Error> {
    let file = fs_err::File::open(path).map_err(|e| Error::io(path, e))?;
    let raw = io::BufReader::with_capacity(CHUNK, file);
    let decoder: Box<dyn Read + Send> = match compression {
        Compression::Xz => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(threads.clamp(1, 8))
                .memlimit_threading(XZ_MEMLIMIT)
                .memlimit_stop(XZ_MEMLIMIT)
                .decoder()
                .map_err(|e| Error::io(path, io::Error::other(e)))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(raw, stream))
        }
        Compression::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::with_buffer(raw).map_err(|e| Error::io(path, e))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| Error::io(path, e))?;
            Box::new(d)
        }
    };
    Ok(Box::new(Pipe::spawn(decoder)))
}

/// Moves a reader's bytes through a bounded channel from a thread of its own.
struct Pipe {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Pipe {
    fn spawn(mut inner: Box<dyn Read + Send>) -> Pipe {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            loop {
                let mut buf = vec![0; CHUNK];
                let mut filled = 0;
                while filled < CHUNK {
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                buf.truncate(filled);
                let done = filled == 0;
                if tx.send(Ok(buf)).is_err() || done {
                    return;
                }
            }
        });
        Pipe {
            rx,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Pipe {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Metadata of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// What a checked member is.
#[derive(Debug, PartialEq, Eq)]
pub enum What {
    /// The `removed` list of a delta.
    Removed,
    /// A `partitions/…` member (not applied by this client).
    Partition(String),
    Dir,
    File,
    /// A zdelta patch of the file at the same path, or at its `base_path`.
    Patch(PatchInfo),
    Symlink(String),
    /// A hard link to another path of the system tree.
    HardLink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, PartialEq, Eq, Clone)]
pub struct PatchInfo {
    pub base_sha256: crate::digest::Sha256,
    pub sha256: crate::digest::Sha256,
    pub size: u64,
    /// The path in the system tree (checked like a member's) of the base file, when it
    /// is not the member's own path. The base is that file as it was before this
    /// tarball changed anything.
    pub base_path: Option<String>,
    /// For a `.gz` file patched in its content or tokens: what makes it the file again.
    pub gzip: Option<crate::image::regzip::GzipPatch>,
}

/// A member that passed the checks: its path in the system tree (no leading `/`,
/// normalised) and what to make there.
#[derive(Debug)]
pub struct Member {
    pub path: String,
    pub what: What,
    pub meta: Meta,
    pub size: u64,
}

/// Normalises a path inside an image (`system/usr/bin/x` → `usr/bin/x` with
/// `strip_system`), refusing absolute paths, `..`, NUL and empty names.
pub fn clean_path(raw: &[u8], what: &str) -> Result<String, Error> {
    let bad = |reason: &str| Error::Malformed {
        what: what.to_owned(),
        reason: format!("{reason}: {:?}", String::from_utf8_lossy(raw)),
    };
    let text = std::str::from_utf8(raw).map_err(|_| bad("file name is not UTF-8"))?;
    if text.starts_with('/') {
        return Err(bad("absolute path"));
    }
    if text.contains('\0') || text.contains('\n') {
        return Err(bad("control character in path"));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(bad("`..` in path")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("empty path"));
    }
    Ok(parts.join("/"))
}

/// Checks a symlink target lexically: a relative target must not climb above the
/// root of the system tree (absolute targets resolve inside the system when it runs).
pub fn check_symlink(link: &str, target: &str, what: &str) -> Result<(), Error> {
    let bad = |reason: String| Error::Malformed {
        what: what.to_owned(),
        reason,
    };
    if target.is_empty() || target.contains('\0') {
        return Err(bad(format!(
            "symlink {link} has an empty or invalid target"
        )));
    }
    if target.starts_with('/') {
        return Ok(());
    }
    let mut depth: i64 = link.matches('/').count() as i64;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(bad(format!(
                        "symlink {link} -> {target} points outside the system tree"
                    )));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Checks one tar entry's header and maps it to a [`Member`]. Device nodes are
/// accepted only when `as_root`.
pub fn check_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    as_root: bool,
    what: &str,
) -> Result<Member, Error> {
    let bad = |reason: String| Error::Malformed {
        what: what.to_owned(),
        reason,
    };
    let raw = entry.path_bytes().into_owned();
    let full = clean_path(&raw, what)?;
    let header = entry.header();
    let kind = header.entry_type();
    let size = entry.size();
    let meta = Meta {
        mode: header.mode().map_err(|e| bad(e.to_string()))? & 0o7777,
        uid: header.uid().map_err(|e| bad(e.to_string()))? as u32,
        gid: header.gid().map_err(|e| bad(e.to_string()))? as u32,
        mtime: header.mtime().map_err(|e| bad(e.to_string()))? as i64,
    };
    if full == "removed" {
        if !kind.is_file() {
            return Err(bad("`removed` is not a regular file".into()));
        }
        return Ok(Member {
            path: full,
            what: What::Removed,
            meta,
            size,
        });
    }
    if full == "system" && kind.is_dir() {
        return Ok(Member {
            path: String::new(),
            what: What::Dir,
            meta,
            size,
        });
    }
    if full == "partitions" || full.starts_with("partitions/") {
        return Ok(Member {
            path: full.clone(),
            what: What::Partition(full),
            meta,
            size,
        });
    }
    let Some(path) = full.strip_prefix("system/") else {
        return Err(bad(format!("member {full:?} is outside system/")));
    };
    let path = path.to_owned();
    let link = || -> Result<String, Error> {
        let bytes = entry
            .link_name_bytes()
            .ok_or_else(|| bad(format!("{path}: link without a target")))?;
        String::from_utf8(bytes.into_owned())
            .map_err(|_| bad(format!("{path}: link target is not UTF-8")))
    };
    let what_is = if kind.is_dir() {
        What::Dir
    } else if kind.is_file() || kind == tar::EntryType::Continuous {
        What::File
    } else if kind.is_symlink() {
        let target = link()?;
        check_symlink(&path, &target, what)?;
        What::Symlink(target)
    } else if kind.is_hard_link() {
        let target = clean_path(link()?.as_bytes(), what)?;
        let Some(target) = target.strip_prefix("system/") else {
            return Err(bad(format!("hard link {path} -> {target} leaves system/")));
        };
        What::HardLink(target.to_owned())
    } else if kind.is_character_special() || kind.is_block_special() {
        if !as_root {
            return Err(bad(format!(
                "device node {path} can only be created by root"
            )));
        }
        let major = header
            .device_major()
            .map_err(|e| bad(e.to_string()))?
            .unwrap_or(0);
        let minor = header
            .device_minor()
            .map_err(|e| bad(e.to_string()))?
            .unwrap_or(0);
        if kind.is_character_special() {
            What::Char(major, minor)
        } else {
            What::Block(major, minor)
        }
    } else if kind.is_fifo() {
        What::Fifo
    } else {
        return Err(bad(format!("{path}: unsupported entry type {kind:?}")));
    };
    if !matches!(what_is, What::File) && size != 0 {
        return Err(bad(format!("{path}: data on an entry that has none")));
    }
    // zdelta patches are regular files carrying our PAX records.
    let what_is = match what_is {
        What::File => patch_info(entry, &path, what)?.map_or(What::File, What::Patch),
        other => other,
    };
    Ok(Member {
        path,
        what: what_is,
        meta,
        size,
    })
}

fn patch_info<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &str,
    what: &str,
) -> Result<Option<PatchInfo>, Error> {
    let bad = |reason: String| Error::Malformed {
        what: what.to_owned(),
        reason: format!("{path}: {reason}"),
    };
    let Some(extensions) = entry.pax_extensions().map_err(|e| bad(e.to_string()))? else {
        return Ok(None);
    };
    let mut kind = None;
    let mut base = None;
    let mut sha = None;
    let mut size = None;
    let mut base_path = None;
    let mut gzip_records: Vec<(String, String)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for ext in extensions {
        let ext = ext.map_err(|e| bad(e.to_string()))?;
        let key = ext.key().map_err(|e| bad(e.to_string()))?;
        let value = ext.value().map_err(|e| bad(e.to_string()))?.to_owned();
        // Ours only once: the publisher's reader would take another value than this one.
        if key.starts_with("RELEASE_UPGRADER.") {
            if seen.iter().any(|k| k == key) {
                return Err(bad(format!("the pax record {key} is given twice")));
            }
            seen.push(key.to_owned());
        }
        match key {
            "RELEASE_UPGRADER.patch" => kind = Some(value),
            "RELEASE_UPGRADER.base-sha256" => base = Some(value),
            "RELEASE_UPGRADER.sha256" => sha = Some(value),
            "RELEASE_UPGRADER.size" => size = Some(value),
            "RELEASE_UPGRADER.base-path" => base_path = Some(value),
            regzip::HEADER_KEY
            | regzip::PREFLATE_KEY
            | regzip::CONTENT_SIZE_KEY
            | gztokens::TOKENS_SIZE_KEY => gzip_records.push((key.to_owned(), value)),
            _ => {}
        }
    }
    let Some(kind) = kind else {
        return Ok(None);
    };
    let gzip = match kind.as_str() {
        "zstd-patch-from" => None,
        method => {
            let get = |key: &str| {
                gzip_records
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            match regzip::GzipPatch::from_records(method, get) {
                Some(gzip) => Some(gzip.map_err(bad)?),
                None => return Err(bad(format!("unknown patch type {kind:?}"))),
            }
        }
    };
    let digest = |v: Option<String>, name: &str| -> Result<crate::digest::Sha256, Error> {
        v.ok_or_else(|| bad(format!("patch without {name}")))?
            .parse()
            .map_err(|_| bad(format!("bad {name}")))
    };
    // The base path names a file of the system tree like a hard link does: no absolute
    // path, no `..`, under `system/`.
    let base_path = match base_path {
        None => None,
        Some(raw) => {
            let full = clean_path(raw.as_bytes(), what)?;
            match full.strip_prefix("system/") {
                Some(rel) => Some(rel.to_owned()),
                None => return Err(bad(format!("patch base {raw:?} is outside system/"))),
            }
        }
    };
    Ok(Some(PatchInfo {
        base_path,
        gzip,
        base_sha256: digest(base, "base-sha256")?,
        sha256: digest(sha, "sha256")?,
        size: size
            .ok_or_else(|| bad("patch without size".into()))?
            .parse()
            .map_err(|_| bad("bad size".into()))?,
    }))
}

/// Parses a `removed` member: one `system/…` path per line.
pub fn parse_removed(text: &[u8], what: &str) -> Result<Vec<String>, Error> {
    let mut paths = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let full = clean_path(line, what)?;
        if full == "partitions" || full.starts_with("partitions/") {
            continue;
        }
        let Some(path) = full.strip_prefix("system/") else {
            return Err(Error::Malformed {
                what: what.to_owned(),
                reason: format!("removed path {full:?} is outside system/"),
            });
        };
        paths.push(path.to_owned());
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            clean_path(b"./system//usr/./bin", "t").unwrap(),
            "system/usr/bin"
        );
        assert!(clean_path(b"system/../etc", "t").is_err());
        assert!(clean_path(b"/system/etc", "t").is_err());
        assert!(clean_path(b"./", "t").is_err());
    }

    #[test]
    fn symlinks() {
        assert!(check_symlink("usr/bin/x", "../lib/y", "t").is_ok());
        assert!(check_symlink("usr/bin/x", "../../y", "t").is_ok());
        assert!(check_symlink("usr/bin/x", "../../../y", "t").is_err());
        assert!(check_symlink("x", "/etc/passwd", "t").is_ok());
        assert!(check_symlink("x", "..", "t").is_err());
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/zdelta.rs`): a patch member whose pax
    /// records give one of ours twice (`size=40`, then `size=405`) was read with the last
    /// value here and the first by the publisher's `image expand`. Refused now.
    #[test]
    fn a_patch_member_with_a_record_given_twice_is_refused() {
        let digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let member = |extra: &[(&str, &str)]| {
            let mut records = vec![
                ("RELEASE_UPGRADER.patch", "zstd-patch-from"),
                ("RELEASE_UPGRADER.base-sha256", digest),
                ("RELEASE_UPGRADER.sha256", digest),
                ("RELEASE_UPGRADER.size", "40"),
            ];
            records.extend_from_slice(extra);
            let mut builder = tar::Builder::new(Vec::new());
            builder
                .append_pax_extensions(records.iter().map(|(k, v)| (*k, v.as_bytes())))
                .unwrap();
            let mut header = tar::Header::new_ustar();
            header.set_size(3);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, "system/usr/bin/x", &b"zst"[..])
                .unwrap();
            let tarball = builder.into_inner().unwrap();
            let mut archive = tar::Archive::new(tarball.as_slice());
            let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
            check_entry(&mut entry, false, "t")
        };
        let once = member(&[]).unwrap();
        assert!(matches!(once.what, What::Patch(PatchInfo { size: 40, .. })));
        let err = member(&[("RELEASE_UPGRADER.size", "405")]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(member(&[("RELEASE_UPGRADER.patch", "zstd-patch-from")]).is_err());
    }

    #[test]
    fn removed_lists() {
        let r = parse_removed(b"system/usr/bin/foo\n\nsystem/etc/x\r\n", "t").unwrap();
        assert_eq!(r, ["usr/bin/foo", "etc/x"]);
        assert!(parse_removed(b"system/../../etc\n", "t").is_err());
        assert!(parse_removed(b"etc/passwd\n", "t").is_err());
    }
}
