//! The `zdelta` image type's patch members (see the zdelta contract): a changed regular
//! file stored as one zstd frame compressed with the base file's bytes as reference
//! prefix (`zstd --patch-from`), described by `RELEASE_UPGRADER.*` pax records.
//!
//! The base is the file at the member's own path in the tree the delta applies to, or,
//! with a `RELEASE_UPGRADER.base-path` record, the file at that other path of the same
//! tree (before the delta changes anything): between releases most changed files are
//! renamed ones (`libstdc++.so.6.0.30` → `.0.33`, `perl-base/5.36/…` → `5.40/…`), and
//! without it they would ship whole. A new x86-64 file that no base matches may be a
//! frame of its own, of its code conversion ([`make_x86_alone`]).
//!
//! [`apply_member`] checks the base before and decodes with the device's own decoders
//! ([`rebuilds::decode_checked`](ru_format::image::rebuilds::decode_checked),
//! [`GzipPatch::apply`]), which check the result after and return an error instead of
//! unverified bytes' success. [`expand`]
//! turns a whole zdelta into the equivalent plain `delta` tar against a base tree.

use std::io::{self, Read, Write};
use std::path::Path;

use super::source;
use crate::digest::Sha256;
use crate::error::Error;
use ru_format::image::branches::{self, Filter};
use ru_format::image::gztokens;
use ru_format::image::regzip::{self, GzipPatch, Recompress};
use ru_format::tarfile::{self as tar, Kind};

pub const PATCH_KEY: &str = "RELEASE_UPGRADER.patch";
pub const PATCH_METHOD: &str = "zstd-patch-from";
pub const BASE_SHA256_KEY: &str = "RELEASE_UPGRADER.base-sha256";
pub const SHA256_KEY: &str = "RELEASE_UPGRADER.sha256";
pub const SIZE_KEY: &str = "RELEASE_UPGRADER.size";
pub const BASE_PATH_KEY: &str = "RELEASE_UPGRADER.base-path";

/// The largest window a patch frame may declare (2^31, zstd's `--long` maximum).
pub const WINDOW_LOG_MAX: u32 = 31;

/// What a patch member promises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchInfo {
    /// The base file the patch applies to; `None` for a new file's frame that decodes on
    /// its own ([`branches::ALONE_METHOD`], the only method without a base).
    pub base: Option<PatchBase>,
    /// SHA256 and size of the resulting file.
    pub sha256: Sha256,
    pub size: u64,
    /// For a `.gz` file patched in its content or its tokens ([`regzip::Recompress`]):
    /// what makes the frame's output the file again.
    pub gzip: Option<GzipPatch>,
    /// The frame was made from base and file in this x86 code conversion
    /// ([`branches`]).
    pub x86: Option<Filter>,
}

/// The base file of a patch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchBase {
    /// SHA256 of the base file.
    pub sha256: Sha256,
    /// The image path (`system/…`) of the base file when it is not the member's own
    /// path: normalised, relative, no `..`.
    pub path: Option<String>,
}

/// Checks a `RELEASE_UPGRADER.base-path` value: an image path under `system/`, relative,
/// without `..`, `.` or empty components. Returns it normalised.
pub fn check_base_path(value: &str) -> Result<String, String> {
    if value.starts_with('/') {
        return Err(format!("base path {value:?} is absolute"));
    }
    let clean = tar::normalise(value).map_err(|e| format!("base path: {e}"))?;
    if clean != value || !clean.starts_with("system/") {
        return Err(format!(
            "base path {value:?} is not a normalised path under system/"
        ));
    }
    Ok(clean)
}

impl PatchInfo {
    /// The patch records among a member's pax records: `None` when the member is not a
    /// patch, an error when it claims to be one but the records are incomplete, unknown
    /// or malformed.
    pub fn from_pax(records: &[(String, String)], what: &str) -> Result<Option<Self>, Error> {
        let get = |key: &str| {
            records
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let Some(method) = get(PATCH_KEY) else {
            return Ok(None);
        };
        let bad = |reason: String| Error::Malformed {
            what: what.to_owned(),
            reason,
        };
        // Ours only once: the device's reader would take another value than `get`.
        for (i, (key, _)) in records.iter().enumerate() {
            if key.starts_with("RELEASE_UPGRADER.") && records[..i].iter().any(|(k, _)| k == key) {
                return Err(bad(format!("the pax record {key} is given twice")));
            }
        }
        let alone = method == branches::ALONE_METHOD;
        let gzip = match method {
            PATCH_METHOD => None,
            _ if alone || Filter::of_method(method).is_some() => None,
            _ => match GzipPatch::from_records(method, get) {
                Some(gzip) => Some(gzip.map_err(bad)?),
                None => return Err(bad(format!("unknown patch method {method:?}"))),
            },
        };
        let digest = |key: &str| -> Result<Sha256, Error> {
            get(key)
                .ok_or_else(|| bad(format!("patch without {key}")))?
                .parse()
                .map_err(|e| bad(format!("{key}: {e}")))
        };
        let size = get(SIZE_KEY)
            .ok_or_else(|| bad(format!("patch without {SIZE_KEY}")))?
            .parse::<u64>()
            .map_err(|e| bad(format!("{SIZE_KEY}: {e}")))?;
        let base_path = get(BASE_PATH_KEY)
            .map(|v| check_base_path(v).map_err(bad))
            .transpose()?;
        let x86 = match alone {
            true => Some(Filter::PcRelative),
            false => Filter::of_method(method),
        };
        if x86.is_some() && size > branches::SIZE_MAX {
            return Err(bad(format!(
                "an x86-converted patch makes at most {} bytes, this one {size}",
                branches::SIZE_MAX
            )));
        }
        let base = match alone {
            true if get(BASE_SHA256_KEY).is_some() || base_path.is_some() => {
                return Err(bad(format!("a {method} patch has no base record")));
            }
            true => None,
            false => Some(PatchBase {
                sha256: digest(BASE_SHA256_KEY)?,
                path: base_path,
            }),
        };
        Ok(Some(PatchInfo {
            base,
            sha256: digest(SHA256_KEY)?,
            size,
            gzip,
            x86,
        }))
    }

    /// The pax records that describe this patch, in the order the writer emits them.
    pub fn pax_records(&self) -> Vec<(String, String)> {
        let method = match (&self.gzip, &self.base) {
            (Some(gzip), _) => gzip.method(),
            (None, None) => branches::ALONE_METHOD,
            (None, Some(_)) => self.x86.map_or(PATCH_METHOD, Filter::method),
        };
        let mut records = vec![(PATCH_KEY.into(), method.into())];
        if let Some(base) = &self.base {
            records.push((BASE_SHA256_KEY.into(), base.sha256.to_hex()));
        }
        records.push((SHA256_KEY.into(), self.sha256.to_hex()));
        records.push((SIZE_KEY.into(), self.size.to_string()));
        if let Some(path) = self.base.as_ref().and_then(|b| b.path.as_ref()) {
            records.push((BASE_PATH_KEY.into(), path.clone()));
        }
        if let Some(gzip) = &self.gzip {
            records.extend(gzip.pax_records());
        }
        records
    }
}

/// The window log a patch of `target` against `base` needs: the frame must reach back
/// over the whole base (zstd's `--patch-from` sizes it the same way).
pub fn window_log_for(base_len: u64, target_len: u64) -> u32 {
    let total = base_len.saturating_add(target_len).max(1);
    let mut log = 10; // ZSTD_WINDOWLOG_MIN
    while (1u64 << log) < total && log < WINDOW_LOG_MAX {
        log += 1;
    }
    log
}

/// One zstd frame of `target` with `base` as reference prefix, long-distance matching
/// on, the window covering base and target, a content checksum.
pub fn make_patch(base: &[u8], target: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), level, base)?;
    enc.window_log(window_log_for(base.len() as u64, target.len() as u64))?;
    enc.long_distance_matching(true)?;
    enc.include_checksum(true)?;
    enc.set_pledged_src_size(Some(target.len() as u64))?;
    enc.write_all(target)?;
    enc.finish()
}

/// The x86 code conversion the publisher patches x86-64 files in: of the two, the one
/// whose patches were smaller on Debian 12 → 13 (0.973 of those in [`Filter::Branches`]).
pub const X86_FILTER: Filter = Filter::PcRelative;

/// The patch of `target` against `base` made from their x86 code conversion `filter`
/// ([`branches`]), when both are x86-64 ELF files and `target` is at most
/// [`branches::SIZE_MAX`] bytes.
pub fn make_x86_patch(
    base: &[u8],
    target: &[u8],
    level: i32,
    filter: Filter,
) -> io::Result<Option<Vec<u8>>> {
    if !(branches::is_x86_64_elf(base) && branches::is_x86_64_elf(target))
        || target.len() as u64 > branches::SIZE_MAX
    {
        return Ok(None);
    }
    let (mut base, mut target) = (base.to_vec(), target.to_vec());
    branches::encode(&mut base, filter);
    branches::encode(&mut target, filter);
    make_patch(&base, &target, level).map(Some)
}

/// The frame of a file with no base ([`branches::ALONE_METHOD`]): its x86 code
/// conversion compressed alone, when it is an x86-64 ELF file of at most
/// [`branches::SIZE_MAX`] bytes.
pub fn make_x86_alone(target: &[u8], level: i32) -> io::Result<Option<Vec<u8>>> {
    if !branches::is_x86_64_elf(target) || target.len() as u64 > branches::SIZE_MAX {
        return Ok(None);
    }
    let mut converted = target.to_vec();
    branches::encode(&mut converted, Filter::PcRelative);
    make_patch(&[], &converted, level).map(Some)
}

/// The gzip patch of `target` against `base` when both are gzip files and `target`
/// rebuilds exactly from its content ([`regzip::split`]): the frame of its content with
/// the base's content as reference prefix, and what recompresses it.
pub fn make_gzip_patch(
    base: &[u8],
    target: &[u8],
    level: i32,
) -> io::Result<Option<(Vec<u8>, GzipPatch)>> {
    if regzip::header_len(base).is_none() || regzip::header_len(target).is_none() {
        return Ok(None);
    }
    let (Some(split), Ok(base_content)) = (regzip::split(target), regzip::gunzip(base)) else {
        return Ok(None);
    };
    let frame = make_patch(&base_content, &split.content, level)?;
    Ok(Some((
        frame,
        GzipPatch {
            header: split.header,
            how: Recompress::Content {
                corrections: split.corrections,
                content_size: split.content.len() as u64,
            },
        },
    )))
}

/// The token patch of `target` against `base` when both are gzip files and `target`
/// rebuilds exactly from its token stream ([`gztokens::split`]): the frame of its token
/// stream with the base's as reference prefix.
pub fn make_tokens_patch(
    base: &[u8],
    target: &[u8],
    level: i32,
) -> io::Result<Option<(Vec<u8>, GzipPatch)>> {
    let (Ok(split), Ok(base_tokens)) = (gztokens::split(target), gztokens::tokens(base)) else {
        return Ok(None);
    };
    if split.tokens.len() > gztokens::TOKENS_MAX {
        return Ok(None);
    }
    let frame = make_patch(&base_tokens, &split.tokens, level)?;
    Ok(Some((
        frame,
        GzipPatch {
            header: split.header,
            how: Recompress::Tokens {
                tokens_size: split.tokens.len() as u64,
            },
        },
    )))
}

/// Rebuilds the file a patch member describes into `out`: the base must hash to
/// `info.base`'s digest (a patch with no base gets none, and `base` is not used);
/// `patch` must be exactly one zstd frame that decodes (with `base` as reference
/// prefix) to `info.size` bytes hashing to `info.sha256`. `out` receives
/// bytes as they decode, so callers write to a temporary and keep it only on `Ok`.
/// Returns the size written.
pub fn apply_member(
    info: &PatchInfo,
    base: &[u8],
    patch: &mut dyn Read,
    out: &mut dyn Write,
    what: &str,
) -> Result<u64, Error> {
    let base = match &info.base {
        Some(expected) => {
            let base_digest = Sha256::of(base);
            if base_digest != expected.sha256 {
                return Err(Error::HashMismatch {
                    what: format!("{what} (base of the patch)"),
                    expected: expected.sha256.to_hex(),
                    actual: base_digest.to_hex(),
                });
            }
            base
        }
        None => &[],
    };
    if let Some(gzip) = &info.gzip {
        let file = gzip.apply(base, patch, info.size, &info.sha256, what)?;
        out.write_all(&file)
            .map_err(|e| Error::io(Path::new(what), e))?;
        return Ok(file.len() as u64);
    }
    if let Some(filter) = info.x86 {
        let file = ru_format::image::rebuilds::decode_x86(
            filter,
            &mut base.to_vec(),
            patch,
            info.size,
            &info.sha256,
            what,
        )?;
        out.write_all(&file)
            .map_err(|e| Error::io(Path::new(what), e))?;
        return Ok(file.len() as u64);
    }
    ru_format::image::rebuilds::decode_checked(base, patch, info.size, &info.sha256, what, out)?;
    Ok(info.size)
}

/// Turns the zdelta `input` into the plain `delta` tar it stands for, resolving every
/// patch member against the file at its base path (its own, or the one its
/// `RELEASE_UPGRADER.base-path` names) under `base_root` (the tree the delta applies
/// to, holding `system/…`). Writes an uncompressed tar to `out`; the base tree is only
/// read, and must not change while this runs: a base may be a path the delta removes or
/// replaces, so the result is unpacked elsewhere, or after this returns. Refuses a
/// tampered or mismatched member, and a base path reached through a symlink.
pub fn expand(input: &Path, base_root: &Path, out: &mut dyn Write) -> Result<ExpandStats, Error> {
    let mut reader = tar::Reader::new(source::decompressed(input)?);
    let mut writer = tar::Writer::new(out);
    let mut stats = ExpandStats::default();
    let io_err = |e: io::Error| Error::io(input, e);
    let mut first = true;
    while let Some(mut entry) = reader.next_entry().map_err(|e| io_err(e.into()))? {
        let name = tar::normalise(&entry.path).map_err(|reason| Error::Malformed {
            what: input.display().to_string(),
            reason,
        })?;
        if first && (name != "removed" || entry.kind != Kind::File) {
            return Err(Error::Malformed {
                what: input.display().to_string(),
                reason: "the first member is not `removed`".into(),
            });
        }
        first = false;
        entry.path = name;
        let what = format!("{}: {}", input.display(), entry.path);
        match PatchInfo::from_pax(&entry.pax, &what)? {
            Some(info) => {
                if entry.kind != Kind::File {
                    return Err(Error::Malformed {
                        what,
                        reason: "a patch on an entry that is not a regular file".into(),
                    });
                }
                let base = match &info.base {
                    Some(base) => {
                        let base_rel = base.path.as_deref().unwrap_or(&entry.path);
                        read_nofollow(&inside(base_root, base_rel, &what)?)?
                    }
                    None => Vec::new(),
                };
                let mut decoded = Vec::with_capacity(info.size.min(1 << 30) as usize);
                apply_member(&info, &base, &mut reader, &mut decoded, &what)?;
                entry.pax.clear();
                entry.size = decoded.len() as u64;
                writer.append(&entry).map_err(io_err)?;
                writer.write_data(&decoded).map_err(io_err)?;
                stats.patched += 1;
            }
            None => {
                entry.pax.clear();
                if entry.path == "removed" {
                    writer.append_root_owned(&entry).map_err(io_err)?;
                } else {
                    writer.append(&entry).map_err(io_err)?;
                }
                if entry.kind == Kind::File {
                    writer.copy_data(&mut reader).map_err(io_err)?;
                }
            }
        }
        stats.entries += 1;
    }
    reader.drain().map_err(|e| io_err(e.into()))?;
    writer.finish().map_err(io_err)?;
    Ok(stats)
}

/// What [`expand`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExpandStats {
    pub entries: u64,
    pub patched: u64,
}

/// `root/rel` when no directory on the way is a symlink (so the path stays inside
/// `root`; the file itself is opened with `O_NOFOLLOW`).
fn inside(root: &Path, rel: &str, what: &str) -> Result<std::path::PathBuf, Error> {
    let mut at = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        if i + 1 == parts.len() {
            break;
        }
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => {
                return Err(Error::Malformed {
                    what: what.to_owned(),
                    reason: format!(
                        "the base {rel} is not reached through real directories of {}",
                        root.display()
                    ),
                });
            }
        }
    }
    Ok(at)
}

fn read_nofollow(path: &Path) -> Result<Vec<u8>, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| Error::io(path, e))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Vec<u8>) {
        let base: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut target = base.clone();
        target[1000..1010].copy_from_slice(b"0123456789");
        target.extend_from_slice(b"tail");
        (base, target)
    }

    fn info(base: &[u8], target: &[u8]) -> PatchInfo {
        PatchInfo {
            base: Some(PatchBase {
                sha256: Sha256::of(base),
                path: None,
            }),
            sha256: Sha256::of(target),
            size: target.len() as u64,
            gzip: None,
            x86: None,
        }
    }

    #[test]
    fn patch_round_trips_and_is_small() {
        let (base, target) = sample();
        let patch = make_patch(&base, &target, 19).unwrap();
        assert!(patch.len() < 200, "patch of {} bytes", patch.len());
        let mut out = Vec::new();
        apply_member(&info(&base, &target), &base, &mut &patch[..], &mut out, "t").unwrap();
        assert_eq!(out, target);
    }

    /// x86-64 code in miniature: calls into 4 KiB of functions, each followed by a
    /// RIP-relative `lea` of a variable there, moved by `shift` bytes.
    fn x86_code(shift: usize) -> Vec<u8> {
        let mut code = vec![0u8; 64];
        code[..4].copy_from_slice(b"\x7fELF");
        code[4] = 2;
        code[5] = 1;
        code[18] = 62;
        code.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        code.extend(std::iter::repeat_n(0x90, shift));
        for i in 0..20_000u32 {
            let target = 64 + i64::from(i.wrapping_mul(2_654_435_761) % 4096);
            let next = code.len() as i64 + 5;
            code.push(0xE8);
            code.extend_from_slice(&((target - next) as i32).to_le_bytes());
            let variable = 64 + i64::from(i.wrapping_mul(40_503) % 4096);
            let next = code.len() as i64 + 7;
            code.extend_from_slice(&[0x48, 0x8D, 0x05]);
            code.extend_from_slice(&((variable - next) as i32).to_le_bytes());
            code.extend_from_slice(&[0x48, 0x89, (i % 251) as u8]);
        }
        code
    }

    #[test]
    fn moved_x86_code_patched_in_its_code_conversion_round_trips_and_is_smaller() {
        let (base, target) = (x86_code(0), x86_code(16));
        let plain = make_patch(&base, &target, 19).unwrap();
        let mut sizes = Vec::new();
        for filter in Filter::ALL {
            let converted = make_x86_patch(&base, &target, 19, filter).unwrap().unwrap();
            let mut i = info(&base, &target);
            i.x86 = Some(filter);
            let mut out = Vec::new();
            apply_member(&i, &base, &mut &converted[..], &mut out, "t").unwrap();
            assert_eq!(out, target, "{filter:?}");
            sizes.push(converted.len());
        }
        let [branches, pc_relative] = sizes[..] else {
            unreachable!()
        };
        assert!(
            branches * 2 < plain.len(),
            "{branches} bytes with branches converted, {} plain",
            plain.len()
        );
        assert!(
            pc_relative * 4 < branches,
            "{pc_relative} bytes with the lea displacements converted too, {branches} without"
        );
        assert_eq!(X86_FILTER, Filter::PcRelative);
        // Only x86-64 ELF files, and none larger than the device converts in memory.
        assert!(
            make_x86_patch(&base[1..], &target, 19, X86_FILTER)
                .unwrap()
                .is_none()
        );
        let (other, _) = sample();
        assert!(
            make_x86_patch(&base, &other, 19, X86_FILTER)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_patch_applied_with_the_wrong_conversion_is_refused() {
        let (base, target) = (x86_code(0), x86_code(16));
        let frame_of = |filter: Option<Filter>| match filter {
            Some(f) => make_x86_patch(&base, &target, 19, f).unwrap().unwrap(),
            None => make_patch(&base, &target, 19).unwrap(),
        };
        let kinds = [None, Some(Filter::Branches), Some(Filter::PcRelative)];
        for made in kinds {
            let frame = frame_of(made);
            for claimed in kinds.into_iter().filter(|k| *k != made) {
                let mut i = info(&base, &target);
                i.x86 = claimed;
                // zstd's own checksum or the result's digest says so; never the wrong file.
                let mut out = Vec::new();
                assert!(
                    apply_member(&i, &base, &mut &frame[..], &mut out, "t").is_err(),
                    "made {made:?}, applied as {claimed:?}"
                );
                assert_ne!(out, target);
            }
        }
    }

    #[test]
    fn a_new_x86_file_in_its_code_conversion_decodes_alone_and_is_smaller() {
        let target = x86_code(16);
        let frame = make_x86_alone(&target, 19).unwrap().unwrap();
        let plain = make_patch(&[], &target, 19).unwrap();
        assert!(
            frame.len() * 3 < plain.len() * 2,
            "{} bytes converted, {} plain",
            frame.len(),
            plain.len()
        );
        let alone = PatchInfo {
            base: None,
            x86: Some(Filter::PcRelative),
            ..info(&[], &target)
        };
        let records = alone.pax_records();
        assert_eq!(
            records.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            [PATCH_KEY, SHA256_KEY, SIZE_KEY]
        );
        assert!(records.contains(&(PATCH_KEY.to_owned(), branches::ALONE_METHOD.to_owned())));
        assert_eq!(
            PatchInfo::from_pax(&records, "t").unwrap(),
            Some(alone.clone())
        );
        let apply = |info: &PatchInfo, frame: &[u8]| {
            let mut out = Vec::new();
            apply_member(
                info,
                b"whatever the caller passes",
                &mut &frame[..],
                &mut out,
                "t",
            )
            .map(|_| out)
        };
        assert_eq!(apply(&alone, &frame).unwrap(), target);
        // Tampered: a frame byte, the promised digest; the plain frame is not the
        // converted file (the result's digest says so).
        let mut bad = frame.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x10;
        assert!(apply(&alone, &bad).is_err());
        let mut wrong = alone.clone();
        wrong.sha256 = Sha256::of(b"another file");
        assert!(apply(&wrong, &frame).is_err());
        assert!(apply(&alone, &plain).is_err());
        // No base record with it, and no more than the device converts in memory.
        for (key, value) in [
            (BASE_SHA256_KEY, Sha256::of(b"").to_hex()),
            (BASE_PATH_KEY, "system/usr/lib/libfoo.so".to_owned()),
        ] {
            let mut with_base = records.clone();
            with_base.push((key.to_owned(), value));
            let err = PatchInfo::from_pax(&with_base, "t").unwrap_err();
            assert!(err.to_string().contains("has no base record"), "{err}");
        }
        let mut large = alone.clone();
        large.size = branches::SIZE_MAX + 1;
        assert!(PatchInfo::from_pax(&large.pax_records(), "t").is_err());
        // Only x86-64 ELF files.
        assert!(make_x86_alone(&target[1..], 19).unwrap().is_none());
    }

    #[test]
    fn x86_patch_records_round_trip_and_promise_no_more_than_the_device_converts() {
        let (base, target) = (x86_code(0), x86_code(16));
        for filter in Filter::ALL {
            let mut i = info(&base, &target);
            i.x86 = Some(filter);
            let records = i.pax_records();
            assert!(records.contains(&(PATCH_KEY.to_owned(), filter.method().to_owned())));
            assert_eq!(PatchInfo::from_pax(&records, "t").unwrap(), Some(i.clone()));
            i.size = branches::SIZE_MAX + 1;
            assert!(PatchInfo::from_pax(&i.pax_records(), "t").is_err());
        }
    }

    #[test]
    fn refuses_wrong_base_and_tampered_patch() {
        let (base, target) = sample();
        let patch = make_patch(&base, &target, 19).unwrap();
        let mut other = base.clone();
        other[5] ^= 1;
        let err = apply_member(
            &info(&base, &target),
            &other,
            &mut &patch[..],
            &mut Vec::new(),
            "t",
        )
        .unwrap_err();
        assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
        let mut bad = patch.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        assert!(
            apply_member(
                &info(&base, &target),
                &base,
                &mut &bad[..],
                &mut Vec::new(),
                "t"
            )
            .is_err()
        );
        let mut wrong = info(&base, &target);
        wrong.size -= 1;
        assert!(apply_member(&wrong, &base, &mut &patch[..], &mut Vec::new(), "t").is_err());
        let mut trailing = patch.clone();
        trailing.extend_from_slice(&patch);
        assert!(
            apply_member(
                &info(&base, &target),
                &base,
                &mut &trailing[..],
                &mut Vec::new(),
                "t"
            )
            .is_err()
        );
    }

    fn gz(text: &[u8]) -> Vec<u8> {
        let mut enc = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        enc.write_all(text).unwrap();
        enc.finish().unwrap()
    }

    fn changelog(entries: u32) -> Vec<u8> {
        (0..entries)
            .rev()
            .flat_map(|i| {
                format!(
                    "pkg (1.{i}) unstable; urgency=medium\n  * Change {}.\n\n",
                    i * 7919 % 1009
                )
                .into_bytes()
            })
            .collect()
    }

    #[test]
    fn gzip_files_are_patched_in_their_content_and_rebuilt_exactly() {
        let (base, target) = (gz(&changelog(3000)), gz(&changelog(3010)));
        let (frame, gzip) = make_gzip_patch(&base, &target, 19).unwrap().unwrap();
        assert!(frame.len() < 1000, "frame of {} bytes", frame.len());
        assert!(make_patch(&base, &target, 19).unwrap().len() > target.len() / 2);
        let info = PatchInfo {
            gzip: Some(gzip),
            ..info(&base, &target)
        };
        assert_eq!(
            PatchInfo::from_pax(&info.pax_records(), "t").unwrap(),
            Some(info.clone())
        );
        let mut out = Vec::new();
        apply_member(&info, &base, &mut &frame[..], &mut out, "t").unwrap();
        assert_eq!(out, target);
        // Not gzip on either side: no gzip patch.
        assert!(
            make_gzip_patch(&changelog(3), &target, 19)
                .unwrap()
                .is_none()
        );
        assert!(make_gzip_patch(&base, &changelog(3), 19).unwrap().is_none());
    }

    #[test]
    fn gzip_patches_with_tampered_parts_are_refused() {
        let (base, target) = (gz(&changelog(3000)), gz(&changelog(3010)));
        let (frame, gzip) = make_gzip_patch(&base, &target, 19).unwrap().unwrap();
        let good = PatchInfo {
            gzip: Some(gzip),
            ..info(&base, &target)
        };
        let apply = |info: &PatchInfo, base: &[u8], frame: &[u8]| {
            apply_member(info, base, &mut &frame[..], &mut Vec::new(), "t")
        };
        let mut corrections = good.clone();
        let Recompress::Content { corrections: c, .. } =
            &mut corrections.gzip.as_mut().unwrap().how
        else {
            unreachable!()
        };
        let mid = c.len() / 2;
        c[mid] ^= 0x21;
        assert!(apply(&corrections, &base, &frame).is_err());
        let mut header = good.clone();
        header.gzip.as_mut().unwrap().header[9] ^= 1; // the OS byte
        assert!(apply(&header, &base, &frame).is_err());
        let mut size = good.clone();
        let Recompress::Content { content_size, .. } = &mut size.gzip.as_mut().unwrap().how else {
            unreachable!()
        };
        *content_size -= 1;
        assert!(apply(&size, &base, &frame).is_err());
        let mut bad_frame = frame.clone();
        let mid = bad_frame.len() / 2;
        bad_frame[mid] ^= 0x40;
        assert!(apply(&good, &base, &bad_frame).is_err());
        // A base that is not gzip (with a digest that matches it) is refused too.
        let plain = changelog(3000);
        let not_gzip = PatchInfo {
            base: Some(PatchBase {
                sha256: Sha256::of(&plain),
                path: None,
            }),
            ..good.clone()
        };
        assert!(apply(&not_gzip, &plain, &frame).is_err());
        assert!(apply(&good, &base, &frame).is_ok());
    }

    #[test]
    fn gzip_files_are_patched_in_their_tokens_and_rebuilt_exactly() {
        let (base, target) = (gz(&changelog(3000)), gz(&changelog(3010)));
        let (frame, gzip) = make_tokens_patch(&base, &target, 19).unwrap().unwrap();
        assert!(frame.len() < 2000, "frame of {} bytes", frame.len());
        let good = PatchInfo {
            gzip: Some(gzip),
            ..info(&base, &target)
        };
        assert_eq!(
            PatchInfo::from_pax(&good.pax_records(), "t").unwrap(),
            Some(good.clone())
        );
        let apply = |info: &PatchInfo, base: &[u8], frame: &[u8]| {
            let mut out = Vec::new();
            apply_member(info, base, &mut &frame[..], &mut out, "t").map(|_| out)
        };
        assert_eq!(apply(&good, &base, &frame).unwrap(), target);
        assert!(
            make_tokens_patch(&changelog(3), &target, 19)
                .unwrap()
                .is_none()
        );
        assert!(
            make_tokens_patch(&base, &changelog(3), 19)
                .unwrap()
                .is_none()
        );
        // Tampered: the header, the size of the token stream, the frame.
        let mut header = good.clone();
        header.gzip.as_mut().unwrap().header[4] ^= 1; // the mtime
        assert!(apply(&header, &base, &frame).is_err());
        let mut size = good.clone();
        size.gzip.as_mut().unwrap().how = Recompress::Tokens {
            tokens_size: good.gzip.as_ref().unwrap().decoded_size() + 1,
        };
        assert!(apply(&size, &base, &frame).is_err());
        for at in [frame.len() / 3, frame.len() / 2, frame.len() - 5] {
            let mut bad_frame = frame.clone();
            bad_frame[at] ^= 0x08;
            assert!(apply(&good, &base, &bad_frame).is_err(), "byte {at}");
        }
    }

    #[test]
    fn pax_records_round_trip() {
        let (base, target) = sample();
        let i = info(&base, &target);
        assert_eq!(PatchInfo::from_pax(&i.pax_records(), "t").unwrap(), Some(i));
        assert_eq!(PatchInfo::from_pax(&[], "t").unwrap(), None);
        let odd = vec![(PATCH_KEY.to_owned(), "bsdiff".to_owned())];
        assert!(PatchInfo::from_pax(&odd, "t").is_err());
        let mut elsewhere = info(&base, &target);
        elsewhere.base.as_mut().unwrap().path = Some("system/usr/lib/libfoo.so.1.2.3".into());
        let records = elsewhere.pax_records();
        assert!(records.contains(&(
            BASE_PATH_KEY.to_owned(),
            "system/usr/lib/libfoo.so.1.2.3".to_owned()
        )));
        assert_eq!(PatchInfo::from_pax(&records, "t").unwrap(), Some(elsewhere));
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/zdelta.rs`): with a record given twice
    /// (`size=40`, then `size=405`) this reader took the first and the device's the
    /// last, so `image expand` and the device made different files of one member. Both
    /// refuse such a member now.
    #[test]
    fn a_patch_record_given_twice_is_refused() {
        let (base, target) = sample();
        let records = info(&base, &target).pax_records();
        for key in [PATCH_KEY, SIZE_KEY, SHA256_KEY, BASE_SHA256_KEY] {
            let mut twice = records.clone();
            let value = records.iter().find(|(k, _)| k == key).unwrap().1.clone();
            twice.push((key.to_owned(), value));
            let err = PatchInfo::from_pax(&twice, "t").unwrap_err();
            assert!(err.to_string().contains("twice"), "{key}: {err}");
        }
        let mut other = records.clone();
        other.push(("comment".into(), "z".into()));
        other.push(("comment".into(), "z".into()));
        assert!(PatchInfo::from_pax(&other, "t").unwrap().is_some());
    }

    #[test]
    fn base_paths_leaving_the_image_tree_are_refused() {
        for bad in [
            "/system/etc/shadow",
            "system/../etc/shadow",
            "system/usr/../../x",
            "etc/shadow",
            "system",
            "./system/x",
            "system//x",
            "",
        ] {
            assert!(check_base_path(bad).is_err(), "{bad:?} accepted");
            let (base, target) = sample();
            let mut records = info(&base, &target).pax_records();
            records.push((BASE_PATH_KEY.to_owned(), bad.to_owned()));
            assert!(
                PatchInfo::from_pax(&records, "t").is_err(),
                "{bad:?} accepted in a member"
            );
        }
        assert_eq!(
            check_base_path("system/usr/lib/x").unwrap(),
            "system/usr/lib/x"
        );
    }
}
