//! Reading image tarballs as hostile input: every member's header, as
//! [`crate::tarfile::Reader`] read it, is checked here before anything is written, and
//! members are turned into [`Member`]s that the overlay stages.
//!
//! Image members live under `system/` (mapped to the root of the system tree); the
//! first member of a delta is `removed`; `partitions/` members (boot images) are
//! reported and skipped, as this client flashes no partitions. Anything else is refused.

use crate::error::Error;
use crate::image::{branches, gztokens, regzip};
use crate::tarfile::{Entry, Kind};

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
    /// A zdelta patch of the file at the same path or at its base's path, or a new file's
    /// frame that decodes on its own.
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
    /// The file the frame was made against; `None` for an `x86-pcrel+zstd` member
    /// ([`branches::ALONE_METHOD`]), whose frame decodes on its own.
    pub base: Option<PatchBase>,
    pub sha256: crate::digest::Sha256,
    pub size: u64,
    /// For a `.gz` file patched in its content or tokens: what makes it the file again.
    pub gzip: Option<crate::image::regzip::GzipPatch>,
    /// The frame was made from base and file in this x86 code conversion
    /// ([`crate::image::branches`]): the base is converted before, the result back after.
    pub x86: Option<branches::Filter>,
}

/// The base file of a patch.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct PatchBase {
    pub sha256: crate::digest::Sha256,
    /// The path in the system tree (checked like a member's) of the base file, when it
    /// is not the member's own path. The base is that file as it was before this
    /// tarball changed anything.
    pub path: Option<String>,
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
pub fn check_entry(entry: &Entry, as_root: bool, what: &str) -> Result<Member, Error> {
    let bad = |reason: String| Error::Malformed {
        what: what.to_owned(),
        reason,
    };
    let full = clean_path(entry.path.as_bytes(), what)?;
    let kind = entry.kind;
    let size = entry.size;
    let id =
        |id: u64| u32::try_from(id).map_err(|_| bad(format!("{full}: owner id {id} out of range")));
    let meta = Meta {
        mode: entry.mode & 0o7777,
        uid: id(entry.uid)?,
        gid: id(entry.gid)?,
        mtime: entry.mtime,
    };
    if full == "removed" {
        if kind != Kind::File {
            return Err(bad("`removed` is not a regular file".into()));
        }
        return Ok(Member {
            path: full,
            what: What::Removed,
            meta,
            size,
        });
    }
    if full == "system" && kind == Kind::Directory {
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
    let what_is = match kind {
        Kind::Directory => What::Dir,
        Kind::File => What::File,
        Kind::Symlink => {
            check_symlink(&path, &entry.link, what)?;
            What::Symlink(entry.link.clone())
        }
        Kind::HardLink => {
            let target = clean_path(entry.link.as_bytes(), what)?;
            let Some(target) = target.strip_prefix("system/") else {
                return Err(bad(format!("hard link {path} -> {target} leaves system/")));
            };
            What::HardLink(target.to_owned())
        }
        Kind::CharDevice | Kind::BlockDevice if !as_root => {
            return Err(bad(format!(
                "device node {path} can only be created by root"
            )));
        }
        Kind::CharDevice => What::Char(entry.dev_major, entry.dev_minor),
        Kind::BlockDevice => What::Block(entry.dev_major, entry.dev_minor),
        Kind::Fifo => What::Fifo,
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

fn patch_info(entry: &Entry, path: &str, what: &str) -> Result<Option<PatchInfo>, Error> {
    let bad = |reason: String| Error::Malformed {
        what: what.to_owned(),
        reason: format!("{path}: {reason}"),
    };
    let mut kind = None;
    let mut base = None;
    let mut sha = None;
    let mut size = None;
    let mut base_path = None;
    let mut gzip_records: Vec<(String, String)> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in &entry.pax {
        let key = key.as_str();
        let value = value.clone();
        // Ours only once: the publisher's reader would take another value than this one.
        if key.starts_with("RELEASE_UPGRADER.") {
            if seen.contains(&key) {
                return Err(bad(format!("the pax record {key} is given twice")));
            }
            seen.push(key);
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
    let alone = kind == branches::ALONE_METHOD;
    let x86 = match alone {
        true => Some(branches::Filter::PcRelative),
        false => branches::Filter::of_method(&kind),
    };
    let gzip = match kind.as_str() {
        "zstd-patch-from" => None,
        _ if x86.is_some() => None,
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
    let size: u64 = size
        .ok_or_else(|| bad("patch without size".into()))?
        .parse()
        .map_err(|_| bad("bad size".into()))?;
    if x86.is_some() && size > branches::SIZE_MAX {
        return Err(bad(format!(
            "an x86-converted patch makes at most {} bytes, this one {size}",
            branches::SIZE_MAX
        )));
    }
    // A file with no base names none: a base record there would be read one way here
    // and perhaps another by a later reader.
    let base = match (alone, base, base_path) {
        (true, None, None) => None,
        (true, _, _) => return Err(bad(format!("a {kind} patch has no base record"))),
        (false, sha256, path) => Some(PatchBase {
            sha256: digest(sha256, "base-sha256")?,
            path,
        }),
    };
    Ok(Some(PatchInfo {
        base,
        gzip,
        x86,
        sha256: digest(sha, "sha256")?,
        size,
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

    /// `entry` with `data` as the tar layer writes and reads it back, then checked.
    fn member_of(entry: &Entry, data: &[u8], as_root: bool) -> Result<Member, Error> {
        let mut writer = crate::tarfile::Writer::new(Vec::new());
        writer.append(entry).unwrap();
        if entry.kind == Kind::File {
            writer.write_data(data).unwrap();
        }
        let tarball = writer.finish().unwrap();
        let mut reader = crate::tarfile::Reader::new(tarball.as_slice());
        let entry = reader.next_entry().unwrap().unwrap();
        check_entry(&entry, as_root, "t")
    }

    #[test]
    fn a_symlink_member_that_climbs_out_of_the_system_tree_is_refused() {
        let mut link = Entry::new("system/usr/bin/x".into(), Kind::Symlink);
        link.link = "../../y".into();
        let member = member_of(&link, b"", false).unwrap();
        assert_eq!(member.what, What::Symlink("../../y".into()));
        link.link = "../../../etc/shadow".into();
        let err = member_of(&link, b"", false).unwrap_err();
        assert!(err.to_string().contains("outside the system tree"), "{err}");
    }

    #[test]
    fn device_members_need_root_and_keep_their_numbers() {
        let mut dev = Entry::new("system/dev/sda".into(), Kind::BlockDevice);
        (dev.dev_major, dev.dev_minor) = (8, 1);
        let err = member_of(&dev, b"", false).unwrap_err();
        assert!(err.to_string().contains("only be created by root"), "{err}");
        assert_eq!(member_of(&dev, b"", true).unwrap().what, What::Block(8, 1));
    }

    #[test]
    fn an_owner_id_beyond_32_bits_is_refused() {
        let mut file = Entry::new("system/etc/x".into(), Kind::File);
        file.size = 1;
        file.uid = 1 << 32;
        let err = member_of(&file, b"x", false).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    /// A member at `path` with these pax records and 3 bytes of data.
    fn patch_member(path: &str, records: &[(&str, &str)]) -> Result<Member, Error> {
        let mut entry = Entry::new(path.into(), Kind::File);
        entry.size = 3;
        entry.pax = records
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        member_of(&entry, b"zst", false)
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
            patch_member("system/usr/bin/x", &records)
        };
        let once = member(&[]).unwrap();
        assert!(matches!(once.what, What::Patch(PatchInfo { size: 40, .. })));
        let err = member(&[("RELEASE_UPGRADER.size", "405")]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(member(&[("RELEASE_UPGRADER.patch", "zstd-patch-from")]).is_err());
    }

    #[test]
    fn a_new_x86_file_has_no_base_and_no_base_record() {
        let digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let member = |records: &[(&str, &str)]| patch_member("system/usr/lib/libnew.so", records);
        let alone = [
            ("RELEASE_UPGRADER.patch", branches::ALONE_METHOD),
            ("RELEASE_UPGRADER.sha256", digest),
            ("RELEASE_UPGRADER.size", "40"),
        ];
        let What::Patch(info) = member(&alone).unwrap().what else {
            panic!("not a patch")
        };
        assert_eq!(info.base, None);
        assert_eq!(info.x86, Some(branches::Filter::PcRelative));
        assert_eq!(info.gzip, None);
        for extra in [
            ("RELEASE_UPGRADER.base-sha256", digest),
            ("RELEASE_UPGRADER.base-path", "system/usr/lib/libold.so"),
        ] {
            let mut records = alone.to_vec();
            records.push(extra);
            let err = member(&records).unwrap_err();
            assert!(err.to_string().contains("has no base record"), "{err}");
        }
        let mut large = alone;
        let too_large = (branches::SIZE_MAX + 1).to_string();
        large[2].1 = &too_large;
        let err = member(&large).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        // Every other method still needs its base's digest.
        let based = [
            ("RELEASE_UPGRADER.patch", "x86-pcrel+zstd-patch-from"),
            ("RELEASE_UPGRADER.sha256", digest),
            ("RELEASE_UPGRADER.size", "40"),
        ];
        let err = member(&based).unwrap_err();
        assert!(err.to_string().contains("without base-sha256"), "{err}");
    }

    #[test]
    fn removed_lists() {
        let r = parse_removed(b"system/usr/bin/foo\n\nsystem/etc/x\r\n", "t").unwrap();
        assert_eq!(r, ["usr/bin/foo", "etc/x"]);
        assert!(parse_removed(b"system/../../etc\n", "t").is_err());
        assert!(parse_removed(b"etc/passwd\n", "t").is_err());
    }
}
