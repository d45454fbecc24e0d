//! Writing `.deb` files byte for byte reproducibly.
//!
//! Our own minimal ar writer and ru-format's tar writer rather than the `ar`/`tar`
//! crates: every byte of the output is decided here (entry order, `./`-prefixed names
//! and `/`-terminated directories as `dpkg-deb --build` writes them, root:root with
//! numeric ids 0, clamped mtimes, GNU long-name records), so two builds from the same inputs are identical and
//! nothing depends on the crates' defaults or on the build machine (user names, umask,
//! time). Compression is one of [`DebCompression`], each deterministic: xz with CRC64 in
//! fixed-size blocks (the same bytes whatever the number of threads), zstd in one thread
//! with its content checksum, gzip without a name or time in its header.
//!
//! zstd is the default of `helper build`: the client extracts the helpers on every upgrade,
//! and decoding zstd costs a fraction of decoding xz (on the trixie helper set, 5.6 MB of
//! xz took 0.46 s of the bootstrap), for debs a little larger; dpkg reads zstd members
//! since Debian 12 and Ubuntu 21.10, and so does the client's own reader.

use std::io::Write as _;
use std::path::Path;

use ru_format::tarfile::{self, Kind, Writer};

use crate::error::Error;
use crate::fsutil;

/// What a data entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// One entry of `data.tar` (or `control.tar`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    /// Relative, normalized, without `./` (written as `./<path>`).
    pub path: String,
    pub content: Content,
    /// Permission bits.
    pub mode: u32,
    pub mtime: i64,
}

/// A tar archive of `entries`, in the order given, headers as `dpkg-deb --build` writes
/// them (ru-format's one tar writer, [`Writer::dpkg`]).
pub fn tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut writer = Writer::dpkg(Vec::new());
    for entry in entries {
        let name = if entry.path.is_empty() {
            "./".to_owned()
        } else {
            format!("./{}", entry.path)
        };
        let (kind, data): (Kind, &[u8]) = match &entry.content {
            Content::Dir => (Kind::Directory, b""),
            Content::File(data) => (Kind::File, data),
            Content::Symlink(_) => (Kind::Symlink, b""),
        };
        let mut header = tarfile::Entry::new(name, kind);
        header.mode = entry.mode & 0o7777;
        header.mtime = entry.mtime;
        header.size = data.len() as u64;
        if let Content::Symlink(target) = &entry.content {
            header.link = target.clone();
        }
        // Writing to memory: the writer's only errors are entries it was misused with.
        writer
            .append(&header)
            .and_then(|()| {
                if kind == Kind::File {
                    writer.write_data(data)
                } else {
                    Ok(())
                }
            })
            .expect("a tar archive in memory");
    }
    writer.finish().expect("a tar archive in memory")
}

/// The xz block size. Fixed, so the output does not depend on how many threads compress
/// it (liblzma's multi-threaded encoder splits the input at block boundaries only), and
/// small enough that a helper's data member has several blocks: the client decodes them
/// in parallel too.
pub const XZ_BLOCK_SIZE: u64 = 4 << 20;

/// xz at `preset`, CRC64, in [`XZ_BLOCK_SIZE`] blocks compressed on every core; the same
/// bytes whatever the core count.
pub fn xz(data: &[u8], preset: u32) -> Result<Vec<u8>, Error> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8)) as u32;
    xz_with_threads(data, preset, threads)
}

fn xz_with_threads(data: &[u8], preset: u32, threads: u32) -> Result<Vec<u8>, Error> {
    let stream = liblzma::stream::MtStreamBuilder::new()
        .preset(preset)
        .check(liblzma::stream::Check::Crc64)
        .block_size(XZ_BLOCK_SIZE)
        .threads(threads)
        .encoder()
        .map_err(|e| Error::io("(xz in memory)", std::io::Error::other(e)))?;
    let mut encoder = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .map_err(|e| Error::io("(xz in memory)", e))
}

/// The largest zstd window of a helper deb's members: 1 MiB. Level 19's own window (8 MiB)
/// makes members 3% smaller, but decoding it misses the CPU caches: measured on the
/// trixie apt helper (18.5 MiB of tar) on a machine with 1 MiB of L2 per core, 250–270 MB/s
/// with an 8 MiB window, 355–470 MB/s with this one, for 6.20 MB instead of 6.03 MB.
/// Every system that bootstraps pays the decoding; the publisher pays the bytes once.
pub const ZSTD_WINDOW_LOG: u32 = 20;

/// The compression of a helper deb's members (`control.tar.*` and `data.tar.*` alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebCompression {
    /// xz at a preset (0–9), in [`XZ_BLOCK_SIZE`] blocks.
    Xz(u32),
    /// zstd at a level (1–22), with a content checksum and a window of at most
    /// 2^[`ZSTD_WINDOW_LOG`] bytes.
    Zstd(i32),
    /// gzip at a level (0–9).
    Gzip(u32),
    /// Plain tar members.
    None,
}

impl DebCompression {
    /// `--compression NAME`, at `level` or the default level of NAME (xz 6, as Debian
    /// builds; zstd 19, as small as zstd gets without its memory-hungry ultra levels;
    /// gzip 9).
    pub fn parse(name: &str, level: Option<i32>) -> Result<Self, Error> {
        let bad = |reason: String| Error::Config {
            path: format!("--compression {name}").into(),
            reason,
        };
        let level_in = |range: std::ops::RangeInclusive<i32>, default: i32| match level {
            None => Ok(default),
            Some(n) if range.contains(&n) => Ok(n),
            Some(n) => Err(bad(format!(
                "level {n} is out of range (give --level {}-{}, or none for the default)",
                range.start(),
                range.end()
            ))),
        };
        match name {
            "xz" => Ok(DebCompression::Xz(level_in(0..=9, 6)? as u32)),
            "zstd" => Ok(DebCompression::Zstd(level_in(1..=22, 19)?)),
            "gzip" => Ok(DebCompression::Gzip(level_in(0..=9, 9)? as u32)),
            "none" if level.is_none() => Ok(DebCompression::None),
            "none" => Err(bad("--level does not apply to uncompressed members".into())),
            _ => Err(bad("not one of xz, zstd, gzip, none".into())),
        }
    }

    /// The suffix of the member names (`.xz`, `.zst`, `.gz`, or nothing).
    pub fn suffix(self) -> &'static str {
        match self {
            DebCompression::Xz(_) => ".xz",
            DebCompression::Zstd(_) => ".zst",
            DebCompression::Gzip(_) => ".gz",
            DebCompression::None => "",
        }
    }

    /// `data` compressed, deterministically.
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, Error> {
        let in_memory = |what: &str, e: std::io::Error| Error::io(format!("({what} in memory)"), e);
        match self {
            DebCompression::Xz(preset) => xz(data, preset),
            DebCompression::Zstd(level) => {
                let mut compressor =
                    zstd::bulk::Compressor::new(level).map_err(|e| in_memory("zstd", e))?;
                let window = zstd::zstd_safe::CParameter::WindowLog(ZSTD_WINDOW_LOG);
                compressor
                    .include_checksum(true)
                    .and_then(|()| match level >= 3 {
                        // Levels 1 and 2 have a smaller window of their own.
                        true => compressor.set_parameter(window),
                        false => Ok(()),
                    })
                    .and_then(|()| compressor.compress(data))
                    .map_err(|e| in_memory("zstd", e))
            }
            DebCompression::Gzip(level) => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                encoder
                    .write_all(data)
                    .and_then(|()| encoder.finish())
                    .map_err(|e| in_memory("gzip", e))
            }
            DebCompression::None => Ok(data.to_vec()),
        }
    }
}

/// An ar archive of `members` (name, data), every member dated `mtime`, owned by 0:0,
/// mode 0644.
pub fn ar(members: &[(&str, &[u8])], mtime: i64) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let head = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            mtime.max(0),
            0,
            0,
            "100644",
            data.len()
        );
        debug_assert_eq!(head.len(), 60);
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// Writes a binary package: `debian-binary`, `control.tar.*` with `control`, and
/// `data.tar.*` with `data` (the caller orders it and includes every directory), both
/// compressed with `compression`.
pub fn write_deb(
    path: &Path,
    control: &str,
    data: &[TarEntry],
    mtime: i64,
    compression: DebCompression,
) -> Result<(), Error> {
    let control_tar = tar(&[
        TarEntry {
            path: String::new(),
            content: Content::Dir,
            mode: 0o755,
            mtime,
        },
        TarEntry {
            path: "control".into(),
            content: Content::File(control.as_bytes().to_vec()),
            mode: 0o644,
            mtime,
        },
    ]);
    let control_member = compression.compress(&control_tar)?;
    let data_member = compression.compress(&tar(data))?;
    let suffix = compression.suffix();
    let bytes = ar(
        &[
            ("debian-binary", b"2.0\n"),
            (&format!("control.tar{suffix}"), &control_member),
            (&format!("data.tar{suffix}"), &data_member),
        ],
        mtime,
    );
    fsutil::write_atomic(path, &bytes).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn dpkg_deb_reads_what_we_write_including_long_names() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("t.deb");
        let long = format!("usr/lib/release-upgrader/{}", "d".repeat(120));
        let entries = vec![
            TarEntry {
                path: String::new(),
                content: Content::Dir,
                mode: 0o755,
                mtime: 7,
            },
            TarEntry {
                path: "usr".into(),
                content: Content::Dir,
                mode: 0o755,
                mtime: 7,
            },
            TarEntry {
                path: "usr/lib".into(),
                content: Content::Dir,
                mode: 0o755,
                mtime: 7,
            },
            TarEntry {
                path: "usr/lib/release-upgrader".into(),
                content: Content::Dir,
                mode: 0o755,
                mtime: 7,
            },
            TarEntry {
                path: long.clone(),
                content: Content::File(b"hello\n".to_vec()),
                mode: 0o755,
                mtime: 7,
            },
            TarEntry {
                path: "usr/lib/release-upgrader/link".into(),
                content: Content::Symlink("d".repeat(120)),
                mode: 0o777,
                mtime: 7,
            },
        ];
        let control = "Package: release-upgrader-t\nVersion: 1\nArchitecture: all\nMaintainer: m <m@m.invalid>\nDescription: t\n";
        write_deb(&deb, control, &entries, 7, DebCompression::Xz(6)).unwrap();
        let out = std::process::Command::new("dpkg-deb")
            .arg("--contents")
            .arg(&deb)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{listing}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(listing.contains(&format!("./{long}")), "{listing}");
        assert!(listing.contains("root/root"), "{listing}");
        assert!(
            listing.contains(&format!("link -> {}", "d".repeat(120))),
            "{listing}"
        );
        let extracted = crate::deb::extract(
            &deb,
            &dir.path().join("x").tap_mkdir(),
            &crate::deb::Policy::helper("amd64"),
            &mut (),
        )
        .unwrap();
        assert_eq!(extracted.control.package, "release-upgrader-t");
        let first = fs_err::read(&deb).unwrap();
        write_deb(&deb, control, &entries, 7, DebCompression::Xz(6)).unwrap();
        assert_eq!(first, fs_err::read(&deb).unwrap());
    }

    #[test]
    fn every_compression_is_read_by_dpkg_deb_and_our_reader_and_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = ["", "usr", "usr/lib", "usr/lib/release-upgrader"];
        let mut entries: Vec<TarEntry> = dirs
            .iter()
            .map(|d| TarEntry {
                path: (*d).into(),
                content: Content::Dir,
                mode: 0o755,
                mtime: 7,
            })
            .collect();
        // Large enough for several xz blocks and a zstd window's worth.
        let big: Vec<u8> = (0..(XZ_BLOCK_SIZE as usize + 1000))
            .map(|i| ((i * 7919) % 251) as u8 ^ (i / 4096) as u8)
            .collect();
        entries.push(TarEntry {
            path: "usr/lib/release-upgrader/big".into(),
            content: Content::File(big.clone()),
            mode: 0o644,
            mtime: 7,
        });
        // The client holds a helper to its Installed-Size (KiB).
        let control = format!(
            "Package: release-upgrader-t\nVersion: 1\nArchitecture: all\nMaintainer: m <m@m.invalid>\nInstalled-Size: {}\nDescription: t\n",
            big.len().div_ceil(1024)
        );
        let control = control.as_str();
        for (compression, member) in [
            (DebCompression::Zstd(19), "data.tar.zst"),
            (DebCompression::Xz(6), "data.tar.xz"),
            (DebCompression::Gzip(9), "data.tar.gz"),
            (DebCompression::None, "data.tar"),
        ] {
            let deb = dir.path().join(format!("{member}.deb"));
            write_deb(&deb, control, &entries, 7, compression).unwrap();
            let info = std::process::Command::new("dpkg-deb")
                .arg("--info")
                .arg(&deb)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&info.stdout);
            assert!(info.status.success(), "{member}: {text}");
            assert!(text.contains("Package: release-upgrader-t"), "{text}");
            let theirs = dir.path().join(format!("{member}.dpkg"));
            let status = std::process::Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(&theirs)
                .status()
                .unwrap();
            assert!(status.success(), "dpkg-deb -x {member}");
            assert_eq!(
                fs_err::read(theirs.join("usr/lib/release-upgrader/big")).unwrap(),
                big
            );
            let ours = dir.path().join(format!("{member}.ours")).tap_mkdir();
            crate::deb::extract(&deb, &ours, &crate::deb::Policy::helper("amd64"), &mut ())
                .unwrap();
            assert_eq!(fs_err::read(ours.join("big")).unwrap(), big, "{member}");
            let first = fs_err::read(&deb).unwrap();
            let header = format!("{member:<16}");
            assert!(
                first.windows(16).any(|w| w == header.as_bytes()),
                "no {member} member"
            );
            write_deb(&deb, control, &entries, 7, compression).unwrap();
            assert!(first == fs_err::read(&deb).unwrap(), "{member} differs");
        }
    }

    #[test]
    fn compression_names_and_levels_are_checked() {
        assert_eq!(
            DebCompression::parse("zstd", None).unwrap(),
            DebCompression::Zstd(19)
        );
        assert_eq!(
            DebCompression::parse("xz", Some(9)).unwrap(),
            DebCompression::Xz(9)
        );
        assert_eq!(
            DebCompression::parse("gzip", None).unwrap(),
            DebCompression::Gzip(9)
        );
        assert_eq!(
            DebCompression::parse("none", None).unwrap(),
            DebCompression::None
        );
        for (name, level) in [
            ("zstd", Some(23)),
            ("xz", Some(10)),
            ("none", Some(1)),
            ("lz4", None),
        ] {
            let err = DebCompression::parse(name, level).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn zstd_members_fit_a_one_mib_window() {
        // 4 MiB that repeats at a 2 MiB distance: level 19's own window would reach back.
        let half: Vec<u8> = (0..2 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let data = [half.as_slice(), half.as_slice()].concat();
        let decode_in_window = |frame: &[u8]| {
            let mut out = Vec::new();
            let mut decoder = zstd::stream::read::Decoder::new(frame).unwrap();
            decoder.window_log_max(ZSTD_WINDOW_LOG).unwrap();
            std::io::copy(&mut decoder, &mut out).map(|_| out)
        };
        let ours = DebCompression::Zstd(19).compress(&data).unwrap();
        assert!(decode_in_window(&ours).unwrap() == data);
        // The check can fail: zstd's own level 19 needs more than the cap.
        let plain = zstd::bulk::compress(&data, 19).unwrap();
        assert!(decode_in_window(&plain).is_err());
    }
    trait TapMkdir {
        fn tap_mkdir(self) -> Self;
    }
    impl TapMkdir for std::path::PathBuf {
        fn tap_mkdir(self) -> Self {
            std::fs::create_dir_all(&self).unwrap();
            self
        }
    }

    #[test]
    fn xz_output_does_not_depend_on_the_thread_count() {
        // Three blocks and a bit of input that compresses, but not to nothing.
        let data: Vec<u8> = (0..(3 * XZ_BLOCK_SIZE as usize + 12_345))
            .map(|i| ((i * 7919) % 251) as u8 ^ (i / 4096) as u8)
            .collect();
        let one = xz_with_threads(&data, 1, 1).unwrap();
        let four = xz_with_threads(&data, 1, 4).unwrap();
        assert_eq!(one, four);
        let mut back = Vec::new();
        liblzma::read::XzDecoder::new_multi_decoder(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
    /// The helpers' reproducibility rests on these bytes: the digest was taken from the
    /// writer this file had before the tar layer moved to ru-format (long names and
    /// links, the archive's `./`, negative and large mtimes, setuid bits).
    #[test]
    fn tar_members_are_byte_identical_to_what_earlier_builds_wrote() {
        let e = |path: &str, content: Content, mode: u32, mtime: i64| TarEntry {
            path: path.into(),
            content,
            mode,
            mtime,
        };
        let long = "d".repeat(120);
        let entries = [
            e("", Content::Dir, 0o755, 1_700_000_000),
            e("usr", Content::Dir, 0o755, -5),
            e(
                "usr/bin/apt",
                Content::File(vec![7; 1000]),
                0o104755,
                1_700_000_000,
            ),
            e(
                &format!("usr/lib/{long}"),
                Content::Dir,
                0o755,
                1_600_000_000,
            ),
            e(
                &format!("usr/lib/{long}/f"),
                Content::File(b"x".to_vec()),
                0o644,
                1,
            ),
            e(
                "usr/l",
                Content::Symlink("t".repeat(150)),
                0o777,
                1_700_000_000,
            ),
            e(
                &format!("usr/{}", "s".repeat(98)),
                Content::Symlink("short".into()),
                0o777,
                0,
            ),
            e("usr/empty", Content::File(Vec::new()), 0o600, 1_700_000_000),
        ];
        assert_eq!(
            ru_format::digest::Sha256::of(&tar(&entries)).to_hex(),
            "ea7db31834a0a34e8a36562cfe8f21486871faad6578a60234627b5558c6cf06"
        );
    }
}
