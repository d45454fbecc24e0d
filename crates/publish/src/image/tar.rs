//! The tar layer of image files: one entry model, a streaming reader (ustar, GNU long
//! names and links, pax local headers, GNU base-256 numbers) and a deterministic GNU
//! writer.
//!
//! Written here rather than taken from the `tar` crate because the image code needs a
//! reader it can own in a struct next to its decompressor (the crate's entries borrow
//! their archive), device numbers and pax records on every entry, and a writer whose
//! bytes depend on nothing but the entry (no user-name look-ups, no clock).

use std::cmp::Ordering;
use std::io::{self, BufRead, Read, Write};

const BLOCK: usize = 512;
/// The most a GNU long name, long link or pax header may hold.
const EXTENSION_MAX: u64 = 1024 * 1024;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

impl Kind {
    /// Entries of one class replace each other in place on extraction; a change of class
    /// (file to directory, directory to symlink, ...) needs the old path deleted first.
    pub fn class(self) -> u8 {
        match self {
            Kind::File | Kind::HardLink => 0,
            Kind::Symlink => 1,
            Kind::CharDevice => 2,
            Kind::BlockDevice => 3,
            Kind::Directory => 4,
            Kind::Fifo => 5,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "regular file",
            Kind::HardLink => "hard link",
            Kind::Symlink => "symlink",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Directory => "directory",
            Kind::Fifo => "fifo",
        }
    }

    fn typeflag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::CharDevice => b'3',
            Kind::BlockDevice => b'4',
            Kind::Directory => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One entry of an image: a path relative to the image root (`system/usr/bin/foo`, no
/// leading `./`, no trailing `/`) and everything tar records about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// Data size; 0 for everything but regular files.
    pub size: u64,
    /// Symlink target, or the path a hard link refers to.
    pub link: String,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Pax records other than the ones folded into the fields above, in archive order.
    pub pax: Vec<(String, String)>,
}

impl Entry {
    pub fn new(path: String, kind: Kind) -> Self {
        Entry {
            path,
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link: String::new(),
            dev_major: 0,
            dev_minor: 0,
            pax: Vec::new(),
        }
    }

    /// Whether everything but the data is the same (for files: the size too).
    pub fn same_metadata(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.mtime == other.mtime
            && self.size == other.size
            && self.link == other.link
            && self.dev_major == other.dev_major
            && self.dev_minor == other.dev_minor
    }

    /// The pax record `key`, if the entry has one.
    pub fn pax_value(&self, key: &str) -> Option<&str> {
        self.pax
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The order of entries in every image this module writes: depth first, the children of
/// a directory by the bytes of their names (what `tar --sort=name` gives). Parents come
/// before their children, and a whole subtree before the parent's next sibling.
pub fn cmp_paths(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Whether `ancestor` is a proper ancestor directory of `path`.
pub fn is_ancestor(ancestor: &str, path: &str) -> bool {
    path.len() > ancestor.len()
        && path.starts_with(ancestor)
        && path.as_bytes()[ancestor.len()] == b'/'
}

/// The parent of `path` (`None` at the top).
pub fn parent(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

/// Normalises an archive name: drops leading `./` and `/` and a trailing `/`, refuses
/// `..`, empty and `.` components inside. The top (`.` or `./`) becomes "".
pub fn normalise(name: &str) -> Result<String, String> {
    let mut rest = name;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('/') {
            rest = r;
        } else {
            break;
        }
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest == "." {
        return Ok(String::new());
    }
    for part in rest.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("unsafe path {name:?}"));
        }
        if part.contains('\0') || part.contains('\n') {
            return Err(format!("path {name:?} holds a NUL or newline"));
        }
    }
    Ok(rest.to_owned())
}

/// Reads entries from an uncompressed tar stream.
pub struct Reader<R> {
    inner: R,
    /// Bytes consumed from `inner` so far.
    position: u64,
    /// Data bytes of the current entry not read yet.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    done: bool,
}

fn bad(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

impl<R: BufRead> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            position: 0,
            remaining: 0,
            padding: 0,
            done: false,
        }
    }

    /// Offset in the uncompressed stream of the next byte to be read (after a header:
    /// where the entry's data starts).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next entry with its raw archive name in `path` (not normalised), or `None`
    /// after the end-of-archive blocks. Skips the unread data of the previous entry.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut long_name: Option<String> = None;
        let mut long_link: Option<String> = None;
        let mut pax: Vec<(String, String)> = Vec::new();
        let mut block = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut block)? {
                return Err(bad("truncated tar archive: no end-of-archive block"));
            }
            if block.iter().all(|&b| b == 0) {
                self.done = true;
                return Ok(None);
            }
            let sum: u64 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        b as u64
                    }
                })
                .sum();
            if number(&block[148..156]) != Some(sum) {
                return Err(bad("tar header checksum mismatch"));
            }
            let size = number(&block[124..136]).ok_or_else(|| bad("bad tar size field"))?;
            match block[156] {
                b'L' => long_name = Some(cut_nul(self.read_extension(size)?)),
                b'K' => long_link = Some(cut_nul(self.read_extension(size)?)),
                b'x' => pax.extend(parse_pax(&self.read_extension(size)?)?),
                b'g' => return Err(bad("global pax headers are not accepted")),
                typeflag => {
                    let kind = match typeflag {
                        b'0' | 0 | b'7' => Kind::File,
                        b'1' => Kind::HardLink,
                        b'2' => Kind::Symlink,
                        b'3' => Kind::CharDevice,
                        b'4' => Kind::BlockDevice,
                        b'5' => Kind::Directory,
                        b'6' => Kind::Fifo,
                        other => {
                            return Err(bad(format!(
                                "unsupported tar entry type {:?}",
                                other as char
                            )));
                        }
                    };
                    let field = |range: std::ops::Range<usize>, what: &str| {
                        number(&block[range]).ok_or_else(|| bad(format!("bad tar {what} field")))
                    };
                    let mut entry = Entry::new(String::new(), kind);
                    entry.mode = (field(100..108, "mode")? & 0o7777) as u32;
                    entry.uid = field(108..116, "uid")?;
                    entry.gid = field(116..124, "gid")?;
                    entry.mtime = signed_number(&block[136..148])
                        .ok_or_else(|| bad("bad tar mtime field"))?;
                    entry.size = size;
                    if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
                        entry.dev_major = field(329..337, "devmajor")? as u32;
                        entry.dev_minor = field(337..345, "devminor")? as u32;
                    }
                    let mut name = string(&block[0..100]);
                    if &block[257..263] == b"ustar\0" && block[345] != 0 {
                        name = format!("{}/{}", string(&block[345..500]), name);
                    }
                    entry.path = long_name.take().unwrap_or(name);
                    entry.link = long_link.take().unwrap_or_else(|| string(&block[157..257]));
                    for (key, value) in pax {
                        let num = || {
                            value
                                .split('.')
                                .next()
                                .and_then(|v| v.parse::<i64>().ok())
                                .ok_or_else(|| bad(format!("bad pax {key} record {value:?}")))
                        };
                        match key.as_str() {
                            "path" => entry.path = value,
                            "linkpath" => entry.link = value,
                            "size" => entry.size = num()? as u64,
                            "uid" => entry.uid = num()? as u64,
                            "gid" => entry.gid = num()? as u64,
                            "mtime" => entry.mtime = num()?,
                            k if k.starts_with("GNU.sparse") => {
                                return Err(bad("sparse files are not accepted"));
                            }
                            _ => entry.pax.push((key, value)),
                        }
                    }
                    if !matches!(kind, Kind::File) {
                        if entry.size != 0 && kind != Kind::HardLink {
                            return Err(bad(format!(
                                "{}: a {} with data",
                                entry.path,
                                kind.describe()
                            )));
                        }
                        // Hard links may carry a size field but never data.
                        entry.size = 0;
                    }
                    self.remaining = entry.size;
                    self.padding = pad(entry.size);
                    return Ok(Some(entry));
                }
            }
        }
    }

    /// Reads the current entry's data.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let avail = self.inner.fill_buf()?;
        if avail.is_empty() {
            return Err(bad("truncated tar archive: entry data cut short"));
        }
        let n = avail
            .len()
            .min(buf.len())
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&avail[..n]);
        self.inner.consume(n);
        self.position += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Reads the rest of the stream so that a decompressor checks its stream to the end.
    pub fn drain(&mut self) -> io::Result<()> {
        loop {
            let n = self.inner.fill_buf()?.len();
            if n == 0 {
                return Ok(());
            }
            self.inner.consume(n);
            self.position += n as u64;
        }
    }

    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < BLOCK {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(bad("truncated tar archive: partial header"));
            }
            let n = buf.len().min(BLOCK - filled);
            block[filled..filled + n].copy_from_slice(&buf[..n]);
            self.inner.consume(n);
            self.position += n as u64;
            filled += n;
        }
        Ok(true)
    }

    fn read_extension(&mut self, size: u64) -> io::Result<Vec<u8>> {
        if size > EXTENSION_MAX {
            return Err(bad(format!("tar extension header of {size} bytes")));
        }
        let mut data = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < data.len() {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(bad("truncated tar archive: extension header cut short"));
            }
            let n = buf.len().min(data.len() - filled);
            data[filled..filled + n].copy_from_slice(&buf[..n]);
            self.inner.consume(n);
            self.position += n as u64;
            filled += n;
        }
        self.skip(pad(size))?;
        Ok(data)
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(bad("truncated tar archive"));
            }
            let step = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.inner.consume(step);
            self.position += step as u64;
            n -= step as u64;
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_data(buf)
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn cut_nul(mut data: Vec<u8>) -> String {
    if let Some(i) = data.iter().position(|&b| b == 0) {
        data.truncate(i);
    }
    String::from_utf8_lossy(&data).into_owned()
}

fn string(field: &[u8]) -> String {
    cut_nul(field.to_vec())
}

/// An octal field, or GNU base-256 (high bit of the first byte set).
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut value: u64 = (field[0] & 0x3f) as u64;
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(value);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim_matches(' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn signed_number(field: &[u8]) -> Option<i64> {
    if field.first().is_some_and(|&b| b & 0xc0 == 0xc0) {
        // GNU base-256 negative: two's complement over the field.
        let mut value: i64 = -1;
        for &b in field {
            value = (value << 8) | b as i64;
        }
        return Some(value);
    }
    number(field).and_then(|n| i64::try_from(n).ok())
}

fn parse_pax(data: &[u8]) -> io::Result<Vec<(String, String)>> {
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("bad pax record"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > space + 1 && l <= rest.len())
            .ok_or_else(|| bad("bad pax record length"))?;
        let record = &rest[space + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("pax record without newline"))?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("pax record without '='"))?;
        let key = String::from_utf8(record[..eq].to_vec()).map_err(|_| bad("pax key"))?;
        let value = String::from_utf8(record[eq + 1..].to_vec())
            .map_err(|_| bad(format!("pax record {key} is not UTF-8")))?;
        records.push((key, value));
        rest = &rest[len..];
    }
    Ok(records)
}

/// Writes a GNU tar stream: long names and links as `././@LongLink` entries, numbers
/// too large for octal in base-256, pax records (when an entry has any) in a local `x`
/// header. User and group names are left empty: images are extracted with
/// `--numeric-owner`. Directories are written with a trailing `/`, as GNU tar does.
pub struct Writer<W: Write> {
    out: W,
    /// Data bytes the current entry still needs.
    remaining: u64,
    padding: u64,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out,
            remaining: 0,
            padding: 0,
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the header(s) of `entry`; a regular file's `entry.size` bytes of data must
    /// follow through [`Writer::write_data`] or [`Writer::copy_data`].
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        self.append_as(entry, None)
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
        if entry.kind == Kind::Directory {
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
            self.raw(&vec![0u8; pad(data.len() as u64) as usize])?;
        }
        if entry.link.len() > 100 {
            self.long(b'K', &entry.link)?;
        }
        if name.len() > 100 {
            self.long(b'L', &name)?;
        }
        self.header(entry, entry.kind.typeflag(), &name, &entry.link, owner_name)?;
        if entry.kind == Kind::File {
            self.remaining = entry.size;
            self.padding = pad(entry.size);
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

    fn long(&mut self, typeflag: u8, text: &str) -> io::Result<()> {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        let mut ext = Entry::new("././@LongLink".into(), Kind::File);
        ext.size = data.len() as u64;
        self.header(&ext, typeflag, "././@LongLink", "", Some("root"))?;
        self.raw(&data)?;
        self.raw(&vec![0u8; pad(data.len() as u64) as usize])
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
        put_num(&mut block[100..108], entry.mode as u64);
        put_num(&mut block[108..116], entry.uid);
        put_num(&mut block[116..124], entry.gid);
        let size = if typeflag == b'0' || typeflag == b'x' || typeflag == b'L' || typeflag == b'K' {
            entry.size
        } else {
            0
        };
        put_num(&mut block[124..136], size);
        put_num(&mut block[136..148], entry.mtime.max(0) as u64);
        block[156] = typeflag;
        put_str(&mut block[157..257], link);
        block[257..263].copy_from_slice(b"ustar ");
        block[263..265].copy_from_slice(b" \0");
        if let Some(owner) = owner_name {
            put_str(&mut block[265..297], owner);
            put_str(&mut block[297..329], owner);
        }
        if matches!(entry.kind, Kind::CharDevice | Kind::BlockDevice) && typeflag != b'x' {
            put_num(&mut block[329..337], entry.dev_major as u64);
            put_num(&mut block[337..345], entry.dev_minor as u64);
        }
        block[148..156].copy_from_slice(b"        ");
        let sum: u64 = block.iter().map(|&b| b as u64).sum();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(entries: &[(Entry, Vec<u8>)]) -> Vec<(Entry, Vec<u8>)> {
        let mut w = Writer::new(Vec::new());
        for (e, data) in entries {
            w.append(e).unwrap();
            if e.kind == Kind::File {
                w.write_data(data).unwrap();
            }
        }
        let bytes = w.finish().unwrap();
        let mut r = Reader::new(&bytes[..]);
        let mut out = Vec::new();
        while let Some(mut e) = r.next_entry().unwrap() {
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            e.path = e.path.trim_end_matches('/').to_owned();
            out.push((e, data));
        }
        out
    }

    #[test]
    fn writes_what_it_reads_back() {
        let long = format!("system/{}/file", "d".repeat(150));
        let mut file = Entry::new(long.clone(), Kind::File);
        file.size = 5;
        file.uid = 3_000_000; // base-256
        file.mtime = 1_700_000_000;
        file.pax = vec![("RELEASE_UPGRADER.x".into(), "é value".into())];
        let mut link = Entry::new("system/l".into(), Kind::Symlink);
        link.link = "t".repeat(120);
        link.mode = 0o777;
        let mut dev = Entry::new("system/dev/null".into(), Kind::CharDevice);
        dev.dev_major = 1;
        dev.dev_minor = 3;
        let dir = Entry::new("system".into(), Kind::Directory);
        let input = vec![
            (dir, vec![]),
            (file, b"hello".to_vec()),
            (link, vec![]),
            (dev, vec![]),
        ];
        assert_eq!(roundtrip(&input), input);
    }

    #[test]
    fn gnu_tar_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new(Vec::new());
        let mut file = Entry::new(format!("system/{}", "n".repeat(120)), Kind::File);
        file.size = 3;
        file.mode = 0o4755;
        w.append(&file).unwrap();
        w.write_data(b"abc").unwrap();
        let path = dir.path().join("t.tar");
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("-rwsr-xr-x"), "{text}");
        assert!(text.contains(&"n".repeat(120)), "{text}");
    }

    #[test]
    fn order_is_depth_first() {
        let mut paths = vec!["a-c", "a/b", "a", "a/b/c", "b", "a.d"];
        paths.sort_by(|a, b| cmp_paths(a, b));
        assert_eq!(paths, vec!["a", "a/b", "a/b/c", "a-c", "a.d", "b"]);
    }

    #[test]
    fn refuses_unsafe_names() {
        assert_eq!(normalise("./usr/bin/").unwrap(), "usr/bin");
        assert_eq!(normalise("./").unwrap(), "");
        assert!(normalise("usr/../etc").is_err());
        assert!(normalise("a//b").is_err());
    }
}
