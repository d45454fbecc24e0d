//! The writer: a GNU tar stream whose bytes depend on nothing but the entries (no
//! user-name look-ups, no clock), so that two builds from the same inputs are identical.
//!
//! Long names and links go into `././@LongLink` records, numbers too large for octal
//! into GNU base-256, pax records (when an entry has any) into a local `x` header named
//! as GNU tar names it. Directories are written with a trailing `/`, as GNU tar and
//! dpkg-deb write them. Two flavours differ only in the owner names and the date of the
//! long-name records: images leave the names empty (they are extracted with
//! `--numeric-owner`) and date long-name records 0, as GNU tar does; .deb members
//! ([`Writer::dpkg`]) name root on every header and date long-name records like their
//! entry, as `dpkg-deb --build` does.

use std::io::{self, Read, Write};

use super::{BLOCK, Entry, Kind, padding};

fn bad(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, reason.to_owned())
}

/// Writes a GNU tar stream.
pub struct Writer<W: Write> {
    out: W,
    /// Data bytes the current entry still needs.
    remaining: u64,
    padding: u64,
    written: u64,
    /// Owner names on every header (`root`), as dpkg-deb writes them.
    root_names: bool,
    /// Long-name records dated like their entry rather than 0.
    dated_long_names: bool,
}

impl<W: Write> Writer<W> {
    /// A writer of image tarballs.
    pub fn new(out: W) -> Self {
        Writer {
            out,
            remaining: 0,
            padding: 0,
            written: 0,
            root_names: false,
            dated_long_names: false,
        }
    }

    /// A writer of .deb members, headers as `dpkg-deb --build` writes them.
    pub fn dpkg(out: W) -> Self {
        Writer {
            root_names: true,
            dated_long_names: true,
            ..Writer::new(out)
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the header(s) of `entry`; a regular file's `entry.size` bytes of data must
    /// follow through [`Writer::write_data`] or [`Writer::copy_data`].
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let owner = self.root_names.then_some("root");
        self.append_as(entry, owner)
    }

    /// As [`Writer::append`], with the root user's names (for members the publisher
    /// generates, as system-image does).
    pub fn append_root_owned(&mut self, entry: &Entry) -> io::Result<()> {
        self.append_as(entry, Some("root"))
    }

    fn append_as(&mut self, entry: &Entry, owner_name: Option<&str>) -> io::Result<()> {
        if self.remaining != 0 {
            return Err(bad("tar writer: previous entry's data incomplete"));
        }
        let mut name = entry.path.clone();
        if entry.kind == Kind::Directory && !name.ends_with('/') {
            name.push('/');
        }
        if !entry.pax.is_empty() {
            let mut data = Vec::new();
            for (key, value) in &entry.pax {
                data.extend_from_slice(&pax_record(key, value));
            }
            let mut ext = Entry::new(pax_name(&entry.path), Kind::File);
            ext.size = data.len() as u64;
            ext.mtime = entry.mtime.max(0);
            self.header(&ext, b'x', &ext.path, "", None)?;
            self.raw(&data)?;
            self.raw(&vec![0u8; padding(data.len() as u64) as usize])?;
        }
        let long_mtime = if self.dated_long_names {
            entry.mtime
        } else {
            0
        };
        if entry.link.len() > 100 {
            self.long(b'K', &entry.link, long_mtime)?;
        }
        if name.len() > 100 {
            self.long(b'L', &name, long_mtime)?;
        }
        self.header(entry, entry.kind.typeflag(), &name, &entry.link, owner_name)?;
        if entry.kind == Kind::File {
            self.remaining = entry.size;
            self.padding = padding(entry.size);
            self.finish_data()?;
        }
        Ok(())
    }

    /// Writes data of the current entry.
    pub fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() as u64 > self.remaining {
            return Err(bad("tar writer: more data than the entry's size"));
        }
        self.raw(data)?;
        self.remaining -= data.len() as u64;
        self.finish_data()
    }

    /// Copies the current entry's data from `reader`, which must yield exactly the
    /// entry's size.
    pub fn copy_data(&mut self, reader: &mut dyn Read) -> io::Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        while self.remaining > 0 {
            let want = buf
                .len()
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            let n = reader.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than its recorded size (changed while read?)",
                ));
            }
            self.write_data(&buf[..n])?;
        }
        Ok(())
    }

    fn finish_data(&mut self) -> io::Result<()> {
        if self.remaining == 0 && self.padding > 0 {
            let zeros = vec![0u8; self.padding as usize];
            self.padding = 0;
            self.raw(&zeros)?;
        }
        Ok(())
    }

    /// Writes raw, already framed tar bytes (a body written by another writer).
    pub fn copy_raw(&mut self, reader: &mut dyn Read) -> io::Result<u64> {
        let n = io::copy(reader, &mut self.out)?;
        self.written += n;
        Ok(n)
    }

    /// Ends the archive with two zero blocks and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if self.remaining != 0 {
            return Err(bad("tar writer: last entry's data incomplete"));
        }
        self.raw(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }

    /// The output without the end-of-archive blocks (for a body spliced into another
    /// archive).
    pub fn into_inner(self) -> io::Result<W> {
        if self.remaining != 0 {
            return Err(bad("tar writer: last entry's data incomplete"));
        }
        Ok(self.out)
    }

    fn raw(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn long(&mut self, typeflag: u8, text: &str, mtime: i64) -> io::Result<()> {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        let mut ext = Entry::new("././@LongLink".into(), Kind::File);
        ext.size = data.len() as u64;
        ext.mtime = mtime;
        self.header(&ext, typeflag, "././@LongLink", "", Some("root"))?;
        self.raw(&data)?;
        self.raw(&vec![0u8; padding(data.len() as u64) as usize])
    }

    fn header(
        &mut self,
        entry: &Entry,
        typeflag: u8,
        name: &str,
        link: &str,
        owner_name: Option<&str>,
    ) -> io::Result<()> {
        let mut block = [0u8; BLOCK];
        put_str(&mut block[0..100], name);
        put_num(&mut block[100..108], u64::from(entry.mode & 0o7777));
        put_num(&mut block[108..116], entry.uid);
        put_num(&mut block[116..124], entry.gid);
        let size = if matches!(typeflag, b'0' | b'x' | b'L' | b'K') {
            entry.size
        } else {
            0
        };
        put_num(&mut block[124..136], size);
        put_num(
            &mut block[136..148],
            u64::try_from(entry.mtime.max(0)).unwrap_or(0),
        );
        block[156] = typeflag;
        put_str(&mut block[157..257], link);
        // GNU magic and version ("ustar  \0"), as GNU tar and dpkg-deb write.
        block[257..265].copy_from_slice(b"ustar  \0");
        if let Some(owner) = owner_name {
            put_str(&mut block[265..297], owner);
            put_str(&mut block[297..329], owner);
        }
        if matches!(entry.kind, Kind::CharDevice | Kind::BlockDevice) && typeflag != b'x' {
            put_num(&mut block[329..337], u64::from(entry.dev_major));
            put_num(&mut block[337..345], u64::from(entry.dev_minor));
        }
        block[148..156].copy_from_slice(b"        ");
        let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(text.as_bytes());
        self.raw(&block)
    }
}

fn put_str(field: &mut [u8], text: &str) {
    let bytes = text.as_bytes();
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

/// Octal with a NUL terminator when it fits, GNU base-256 otherwise.
fn put_num(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() <= digits {
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        for (i, byte) in field.iter_mut().rev().enumerate() {
            *byte = if i < 8 { (value >> (8 * i)) as u8 } else { 0 };
        }
        field[0] |= 0x80;
    }
}

fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    loop {
        let total = len.to_string().len() + body.len();
        if total == len {
            break;
        }
        len = total;
    }
    format!("{len}{body}").into_bytes()
}

/// The name GNU tar gives a pax header: `DIR/PaxHeaders/NAME`, cut to fit.
fn pax_name(path: &str) -> String {
    let (dir, base) = match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (".", path),
    };
    let mut name = format!("{dir}/PaxHeaders/{base}");
    while name.len() > 99 {
        name.remove(0);
    }
    name
}
