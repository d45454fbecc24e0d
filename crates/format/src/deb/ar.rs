//! The ar container of a .deb, read as dpkg-deb reads it: a magic line, then 60-byte
//! member headers with space-padded names (GNU ar's trailing `/` allowed) and decimal
//! sizes, each member padded to an even offset.
//!
//! Members are read with positional reads on a shared file, so a member can be handed to
//! a decompressor thread while this reader keeps its own place, and a member that claims
//! more bytes than the file has is refused before any of it is read.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::Failure;

const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER: usize = 60;

/// A member header.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub size: u64,
    offset: u64,
}

/// A read error of the .deb file itself, as opposed to bad data in it. Decoders pass it
/// through unchanged inside an `io::Error`, so the caller can tell an unreadable file
/// (an I/O error, exit 2) from a corrupt package (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub io::Error);

/// Walks the members of an ar archive.
pub struct Archive {
    file: Arc<File>,
    len: u64,
    next: u64,
}

impl Archive {
    /// Opens an archive: checks the magic.
    pub fn new(file: File) -> Result<Self, Failure> {
        let len = file.metadata().map_err(Failure::Io)?.len();
        let mut magic = [0u8; 8];
        read_exact_at(&file, &mut magic, 0)?;
        if &magic != MAGIC {
            return Err(Failure::Bad("not an ar archive (no !<arch> magic)".into()));
        }
        Ok(Archive {
            file: Arc::new(file),
            len,
            next: MAGIC.len() as u64,
        })
    }

    /// The next member's header, or `None` at the end of the archive. Skips whatever
    /// was not read of the previous member.
    pub fn next_member(&mut self) -> Result<Option<Member>, Failure> {
        if self.next >= self.len {
            return Ok(None);
        }
        if self.len - self.next < HEADER as u64 {
            // The padding byte after an odd-sized last member is optional in practice.
            if self.len - self.next == 1 {
                return Ok(None);
            }
            return Err(Failure::Bad(
                "truncated archive: partial member header".into(),
            ));
        }
        let mut header = [0u8; HEADER];
        read_exact_at(&self.file, &mut header, self.next)?;
        if &header[58..60] != b"`\n" {
            return Err(Failure::Bad(format!(
                "corrupt member header at offset {} (bad end marker)",
                self.next
            )));
        }
        let raw_name = &header[..16];
        let name_end = raw_name
            .iter()
            .rposition(|&b| b != b' ' && b != b'/')
            .map_or(0, |i| i + 1);
        let name = std::str::from_utf8(&raw_name[..name_end])
            .ok()
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                Failure::Bad(format!(
                    "member name {:?} is not printable ASCII",
                    String::from_utf8_lossy(raw_name)
                ))
            })?
            .to_owned();
        let size = parse_size(&header[48..58]).ok_or_else(|| {
            Failure::Bad(format!(
                "member {name}: bad size field {:?}",
                String::from_utf8_lossy(&header[48..58])
            ))
        })?;
        let offset = self.next + HEADER as u64;
        if size > self.len - offset {
            return Err(Failure::Bad(format!(
                "truncated archive: member {name} needs {size} bytes, the file has {}",
                self.len - offset
            )));
        }
        self.next = offset + size + (size & 1);
        Ok(Some(Member { name, size, offset }))
    }

    /// A reader of `member`'s bytes, independent of this archive's position.
    pub fn reader(&self, member: &Member) -> MemberReader {
        MemberReader {
            file: self.file.clone(),
            pos: member.offset,
            end: member.offset + member.size,
        }
    }
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), Failure> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Failure::Bad("truncated archive".into())
        } else {
            Failure::Io(e)
        }
    })
}

/// A decimal, space-padded size field.
fn parse_size(field: &[u8]) -> Option<u64> {
    let end = field.iter().rposition(|&b| b != b' ')? + 1;
    let digits = &field[..end];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The bytes of one member, read positionally.
pub struct MemberReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl MemberReader {
    /// Bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }
}

impl Read for MemberReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining()).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self
            .file
            .read_at(&mut buf[..want], self.pos)
            .map_err(|e| io::Error::other(FileError(e)))?;
        if n == 0 {
            // The file shrank under us.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the .deb ended early",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: &str) -> Vec<u8> {
        let mut h = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n",
            "0", "0", "0", "100644"
        )
        .into_bytes();
        h.truncate(HEADER);
        h
    }

    fn archive(bytes: &[u8]) -> Result<Archive, Failure> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.deb");
        std::fs::write(&path, bytes).unwrap();
        Archive::new(File::open(&path).unwrap())
    }

    #[test]
    fn members_are_read_with_gnu_and_plain_names_and_padding() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(header("debian-binary", "4"));
        bytes.extend(b"2.0\n");
        bytes.extend(header("control.tar/", "3"));
        bytes.extend(b"abc\n");
        bytes.extend(header("data.tar", "1"));
        bytes.extend(b"z");
        let mut ar = archive(&bytes).unwrap();
        let mut seen = Vec::new();
        while let Some(m) = ar.next_member().unwrap() {
            let mut data = Vec::new();
            ar.reader(&m).read_to_end(&mut data).unwrap();
            seen.push((m.name, data));
        }
        assert_eq!(
            seen,
            vec![
                ("debian-binary".to_owned(), b"2.0\n".to_vec()),
                ("control.tar".to_owned(), b"abc".to_vec()),
                ("data.tar".to_owned(), b"z".to_vec()),
            ]
        );
    }

    #[test]
    fn truncated_and_malformed_archives_are_refused() {
        let bad = |bytes: &[u8]| -> String {
            let result = archive(bytes).and_then(|mut ar| {
                while ar.next_member()?.is_some() {}
                Ok(())
            });
            match result {
                Err(Failure::Bad(reason)) => reason,
                other => panic!("{other:?}"),
            }
        };
        assert!(bad(b"!<arch").contains("truncated"));
        assert!(bad(b"!<arcx>\n").contains("magic"));
        let mut short = MAGIC.to_vec();
        short.extend(header("data.tar", "100"));
        short.extend(b"only a few bytes");
        assert!(bad(&short).contains("truncated"), "{}", bad(&short));
        let mut partial = MAGIC.to_vec();
        partial.extend(&header("data.tar", "1")[..30]);
        assert!(bad(&partial).contains("partial member header"));
        let mut size = MAGIC.to_vec();
        size.extend(header("data.tar", "-1"));
        assert!(bad(&size).contains("bad size"));
        let mut fmag = MAGIC.to_vec();
        let mut h = header("data.tar", "0");
        h[59] = b'x';
        fmag.extend(h);
        assert!(bad(&fmag).contains("end marker"));
    }

    #[test]
    fn sizes_are_decimal_and_space_padded() {
        assert_eq!(parse_size(b"1234      "), Some(1234));
        assert_eq!(parse_size(b"0         "), Some(0));
        assert_eq!(parse_size(b"          "), None);
        assert_eq!(parse_size(b"12 34     "), None);
        assert_eq!(parse_size(b"+1        "), None);
        assert_eq!(parse_size(b"0x10      "), None);
    }
}
