//! Writing `.deb` files byte for byte reproducibly.
//!
//! Our own minimal ar and tar writers rather than the `ar`/`tar` crates: every byte of
//! the output is decided here (entry order, `./`-prefixed names and `/`-terminated
//! directories as `dpkg-deb --build` writes them, root:root with numeric ids 0, clamped
//! mtimes, GNU long-name records), so two builds from the same inputs are identical and
//! nothing depends on the crates' defaults or on the build machine (user names, umask,
//! time). Compression is xz (preset 6 unless asked otherwise) with CRC64 in fixed-size blocks:
//! deterministic whatever the number of threads.

use std::io::Write as _;
use std::path::Path;

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

const BLOCK: usize = 512;

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    field[width] = 0;
}

fn header(name: &[u8], link: &[u8], kind: u8, mode: u32, size: u64, mtime: i64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let name_len = name.len().min(100);
    h[..name_len].copy_from_slice(&name[..name_len]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], u64::try_from(mtime.max(0)).unwrap_or(0));
    h[156] = kind;
    let link_len = link.len().min(100);
    h[157..157 + link_len].copy_from_slice(&link[..link_len]);
    // GNU magic and version ("ustar  \0"), as GNU tar and dpkg-deb write.
    h[257..265].copy_from_slice(b"ustar  \0");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    let rest = out.len() % BLOCK;
    if rest != 0 {
        out.resize(out.len() + BLOCK - rest, 0);
    }
}

/// A GNU long-name (`L`) or long-link (`K`) record for a value over 100 bytes.
fn long_record(out: &mut Vec<u8>, kind: u8, value: &[u8], mtime: i64) {
    let mut data = value.to_vec();
    data.push(0);
    out.extend_from_slice(&header(
        b"././@LongLink",
        b"",
        kind,
        0o644,
        data.len() as u64,
        mtime,
    ));
    out.extend_from_slice(&data);
    pad(out);
}

/// A tar archive of `entries`, in the order given.
pub fn tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let mut name = if entry.path.is_empty() {
            "./".to_owned()
        } else {
            format!("./{}", entry.path)
        };
        if entry.content == Content::Dir && !name.ends_with('/') {
            name.push('/');
        }
        let (kind, link, data): (u8, &[u8], &[u8]) = match &entry.content {
            Content::Dir => (b'5', b"", b""),
            Content::File(data) => (b'0', b"", data),
            Content::Symlink(target) => (b'2', target.as_bytes(), b""),
        };
        if link.len() > 100 {
            long_record(&mut out, b'K', link, entry.mtime);
        }
        if name.len() > 100 {
            long_record(&mut out, b'L', name.as_bytes(), entry.mtime);
        }
        out.extend_from_slice(&header(
            name.as_bytes(),
            link,
            kind,
            entry.mode & 0o7777,
            data.len() as u64,
            entry.mtime,
        ));
        out.extend_from_slice(data);
        pad(&mut out);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
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

/// Writes a binary package: `debian-binary`, `control.tar.xz` with `control`, and
/// `data.tar.xz` with `data` (the caller orders it and includes every directory).
pub fn write_deb(
    path: &Path,
    control: &str,
    data: &[TarEntry],
    mtime: i64,
    xz_preset: u32,
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
    let control_xz = xz(&control_tar, xz_preset)?;
    let data_xz = xz(&tar(data), xz_preset)?;
    let bytes = ar(
        &[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &control_xz),
            ("data.tar.xz", &data_xz),
        ],
        mtime,
    );
    fsutil::write_atomic(path, &bytes)
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
        write_deb(&deb, control, &entries, 7, 6).unwrap();
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
        write_deb(&deb, control, &entries, 7, 6).unwrap();
        assert_eq!(first, fs_err::read(&deb).unwrap());
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
}
