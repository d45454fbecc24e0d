//! A streaming tar reader for the members of a .deb: ustar, GNU (long names and links)
//! and pax local headers, which is what dpkg-deb and the usual tools write.
//!
//! Written here rather than taken from the `tar` crate because hostile input needs
//! bounds that crate does not set (it reads long names and pax headers of any size into
//! memory) and because refusals must say exactly what was wrong. Nothing here decides
//! what may be extracted; it only says what the archive claims, one header at a time,
//! and hands out the entry's data as slices of the underlying buffer (no copies).
//!
//! Refused outright: bad checksums, global pax headers (they would silently change every
//! later entry), GNU sparse files, multi-volume and other exotic entry types, and data
//! on entries that cannot have any.

use std::io::{self, BufRead};

use super::Failure;

const BLOCK: usize = 512;
/// The most a long name, long link or pax header may hold.
const EXTENSION_MAX: u64 = 1024 * 1024;
/// The most a stream may carry after its end-of-archive block. tar pads an archive to
/// whole records (10 KiB by default); more than this is not padding, just work for the
/// decompressor.
const TRAILING_MAX: u64 = 1024 * 1024;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

/// One entry's header, with GNU long names and pax records applied.
#[derive(Debug)]
pub struct Header {
    /// The name as the archive spells it.
    pub name: String,
    pub kind: Kind,
    /// Permission bits, including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    /// The link target, for symlinks and hard links.
    pub link: String,
}

/// Reads entries from an uncompressed tar stream.
pub struct Reader<R> {
    inner: R,
    /// Data bytes of the current entry not consumed yet.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    done: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            remaining: 0,
            padding: 0,
            done: false,
        }
    }

    /// The next entry, or `None` after the end-of-archive block. Skips the unread data
    /// of the previous entry.
    pub fn next_header(&mut self) -> Result<Option<Header>, Failure> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Pax> = None;
        let mut block = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut block)? {
                return Err(Failure::Bad(
                    "truncated tar archive: no end-of-archive block".into(),
                ));
            }
            if block.iter().all(|&b| b == 0) {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(Failure::Bad(
                        "tar archive ends after an extended header".into(),
                    ));
                }
                self.done = true;
                return Ok(None);
            }
            check_checksum(&block)?;
            let size = number(&block[124..136])
                .ok_or_else(|| bad_field(&block, "size", &block[124..136]))?;
            let typeflag = block[156];
            let once = |seen: bool, what: &str| {
                if seen {
                    Err(Failure::Bad(format!("two {what} headers for one entry")))
                } else {
                    Ok(())
                }
            };
            match typeflag {
                b'L' => {
                    once(long_name.is_some(), "GNU long name")?;
                    long_name = Some(cut_nul(self.read_extension(size, "GNU long name")?));
                }
                b'K' => {
                    once(long_link.is_some(), "GNU long link")?;
                    long_link = Some(cut_nul(self.read_extension(size, "GNU long link")?));
                }
                b'x' => {
                    once(pax.is_some(), "pax")?;
                    let data = self.read_extension(size, "pax header")?;
                    pax = Some(Pax::parse(&data)?);
                }
                _ => {
                    let header = self.header(&block, size, long_name, long_link, pax)?;
                    self.remaining = header.size;
                    self.padding = padding(header.size);
                    return Ok(Some(header));
                }
            }
        }
    }

    fn header(
        &self,
        block: &[u8; BLOCK],
        size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Option<Pax>,
    ) -> Result<Header, Failure> {
        let pax = pax.unwrap_or_default();
        let ustar = &block[257..263] == b"ustar\0";
        let name = match (pax.path, long_name) {
            (Some(path), _) => path,
            (None, Some(long)) => utf8(long, "file name")?,
            (None, None) => {
                let name = cut_nul(block[..100].to_vec());
                let prefix = cut_nul(block[345..500].to_vec());
                if ustar && !prefix.is_empty() {
                    let mut full = prefix;
                    full.push(b'/');
                    full.extend(name);
                    utf8(full, "file name")?
                } else {
                    utf8(name, "file name")?
                }
            }
        };
        let link = match (pax.linkpath, long_link) {
            (Some(path), _) => path,
            (None, Some(long)) => utf8(long, "link target")?,
            (None, None) => utf8(cut_nul(block[157..257].to_vec()), "link target")?,
        };
        let field = |what: &str, range: std::ops::Range<usize>| {
            number(&block[range.clone()]).ok_or_else(|| {
                Failure::Bad(format!(
                    "{name}: bad {what} field {:?} in tar header",
                    String::from_utf8_lossy(&block[range])
                ))
            })
        };
        let mode = field("mode", 100..108)?;
        let uid = match pax.uid {
            Some(uid) => uid,
            None => field("uid", 108..116)?,
        };
        let gid = match pax.gid {
            Some(gid) => gid,
            None => field("gid", 116..124)?,
        };
        let mtime = match pax.mtime {
            Some(mtime) => mtime,
            None => signed_number(&block[136..148])
                .ok_or_else(|| Failure::Bad(format!("{name}: bad mtime field in tar header")))?,
        };
        let size = pax.size.unwrap_or(size);
        let kind = match block[156] {
            b'0' | b'\0' | b'7' => Kind::File,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' => Kind::Directory,
            b'6' => Kind::Fifo,
            b'g' => {
                return Err(Failure::Bad(
                    "global pax header (it would change every later entry)".into(),
                ));
            }
            b'S' => return Err(Failure::Bad(format!("{name}: GNU sparse file"))),
            other => {
                return Err(Failure::Bad(format!(
                    "{name}: unsupported tar entry type {:?}",
                    other as char
                )));
            }
        };
        if kind == Kind::File && name.ends_with('/') {
            return Err(Failure::Bad(format!(
                "{name}: a regular file whose name ends with /"
            )));
        }
        if kind != Kind::File && size != 0 {
            return Err(Failure::Bad(format!(
                "{name}: a {} carrying {size} bytes of data",
                kind.describe()
            )));
        }
        Ok(Header {
            name,
            kind,
            mode: u32::try_from(mode & 0o7777).unwrap_or(0),
            uid,
            gid,
            mtime,
            size,
            link,
        })
    }

    /// The current entry's data not read yet, as much as is buffered (empty when the
    /// entry's data is all read). Call [`Reader::consume`] with what was used.
    pub fn data(&mut self) -> Result<&[u8], Failure> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let remaining = self.remaining;
        let buf = self.inner.fill_buf().map_err(read_error)?;
        if buf.is_empty() {
            return Err(Failure::Bad(
                "truncated tar archive: entry data cut short".into(),
            ));
        }
        let n = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        Ok(&buf[..n])
    }

    /// Marks `n` bytes returned by [`Reader::data`] as used.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n as u64 <= self.remaining);
        self.inner.consume(n);
        self.remaining -= n as u64;
    }

    /// Reads the rest of the stream after the end-of-archive block (tar pads archives to
    /// whole records), so that a decompressor gets to check its stream to the end.
    pub fn drain(&mut self) -> Result<(), Failure> {
        let mut drained: u64 = 0;
        loop {
            let n = self.inner.fill_buf().map_err(read_error)?.len();
            if n == 0 {
                return Ok(());
            }
            drained += n as u64;
            if drained > TRAILING_MAX {
                return Err(Failure::Bad(format!(
                    "more than {TRAILING_MAX} bytes after the end of the tar archive"
                )));
            }
            self.inner.consume(n);
        }
    }

    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, Failure> {
        let mut filled = 0;
        while filled < BLOCK {
            let buf = self.inner.fill_buf().map_err(read_error)?;
            if buf.is_empty() {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(Failure::Bad("truncated tar archive: partial header".into()));
            }
            let n = buf.len().min(BLOCK - filled);
            block[filled..filled + n].copy_from_slice(&buf[..n]);
            self.inner.consume(n);
            filled += n;
        }
        Ok(true)
    }

    fn read_extension(&mut self, size: u64, what: &str) -> Result<Vec<u8>, Failure> {
        if size > EXTENSION_MAX {
            return Err(Failure::Bad(format!(
                "{what} of {size} bytes (at most {EXTENSION_MAX} accepted)"
            )));
        }
        let mut data = Vec::with_capacity(size as usize);
        let mut left = size as usize;
        while left > 0 {
            let buf = self.inner.fill_buf().map_err(read_error)?;
            if buf.is_empty() {
                return Err(Failure::Bad(format!(
                    "truncated tar archive: {what} cut short"
                )));
            }
            let n = buf.len().min(left);
            data.extend_from_slice(&buf[..n]);
            self.inner.consume(n);
            left -= n;
        }
        self.skip(padding(size))?;
        Ok(data)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), Failure> {
        while n > 0 {
            let buf = self.inner.fill_buf().map_err(read_error)?;
            if buf.is_empty() {
                return Err(Failure::Bad("truncated tar archive".into()));
            }
            let step = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.inner.consume(step);
            n -= step as u64;
        }
        Ok(())
    }
}

impl Kind {
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
}

/// An error of the stream under the tar reader: a truncated or corrupt compressed stream
/// is a bad package; a read error of the file itself stays an I/O error.
fn read_error(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => Failure::Bad(format!("truncated: {e}")),
        _ if e
            .get_ref()
            .is_some_and(|inner| inner.is::<super::ar::FileError>()) =>
        {
            Failure::Io(e)
        }
        _ => Failure::Bad(e.to_string()),
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn cut_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(end) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(end);
    }
    bytes
}

fn utf8(bytes: Vec<u8>, what: &str) -> Result<String, Failure> {
    String::from_utf8(bytes).map_err(|e| {
        Failure::Bad(format!(
            "{what} {:?} is not UTF-8",
            String::from_utf8_lossy(e.as_bytes())
        ))
    })
}

fn bad_field(block: &[u8; BLOCK], what: &str, field: &[u8]) -> Failure {
    Failure::Bad(format!(
        "{}: bad {what} field {:?} in tar header",
        String::from_utf8_lossy(&cut_nul(block[..100].to_vec())),
        String::from_utf8_lossy(field)
    ))
}

fn check_checksum(block: &[u8; BLOCK]) -> Result<(), Failure> {
    let stored = number(&block[148..156]);
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    // Old writers summed signed chars; tar accepts either.
    if stored == Some(unsigned) || stored.is_some_and(|s| i64::try_from(s) == Ok(signed)) {
        Ok(())
    } else {
        Err(Failure::Bad(
            "tar header checksum mismatch (corrupt or not a tar archive)".into(),
        ))
    }
}

/// An unsigned numeric field: octal digits (space- or NUL-padded), or GNU base-256.
fn number(field: &[u8]) -> Option<u64> {
    match signed_number(field)? {
        n if n >= 0 => Some(n as u64),
        _ => None,
    }
}

/// A numeric field that may be negative (mtime): octal or GNU base-256.
fn signed_number(field: &[u8]) -> Option<i64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        // Base-256, big-endian: 0xff first marks a negative (two's complement) value,
        // any other first byte with the high bit set a positive one.
        if field.len() > 15 {
            return None;
        }
        let negative = field[0] == 0xff;
        let mut value: i128 = 0;
        for (i, &b) in field.iter().enumerate() {
            let b = if i == 0 && !negative { b & 0x7f } else { b };
            value = value * 256 + i128::from(b);
        }
        if negative {
            value -= 1i128 << (8 * field.len());
        }
        return i64::try_from(value).ok();
    }
    let start = field.iter().position(|&b| b != b' ').unwrap_or(field.len());
    let digits_end = field[start..]
        .iter()
        .position(|b| !(b'0'..=b'7').contains(b))
        .map_or(field.len(), |i| start + i);
    if !field[digits_end..].iter().all(|&b| b == b' ' || b == 0) {
        return None;
    }
    let mut value: i64 = 0;
    for &b in &field[start..digits_end] {
        value = value.checked_mul(8)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(value)
}

/// The pax keywords that change what is extracted; the rest (atime, ctime, user and
/// group names, comments, extended attributes, which dpkg-deb -x does not restore
/// either) are ignored, as tar ignores keywords it does not know.
#[derive(Default)]
struct Pax {
    path: Option<String>,
    linkpath: Option<String>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<i64>,
}

impl Pax {
    fn parse(mut data: &[u8]) -> Result<Pax, Failure> {
        let bad = |why: &str| Failure::Bad(format!("malformed pax header: {why}"));
        let mut pax = Pax::default();
        while !data.is_empty() {
            let space = data
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| bad("record without a length"))?;
            let len: usize = std::str::from_utf8(&data[..space])
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("bad record length"))?;
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err(bad("record length does not match"));
            }
            let record = &data[space + 1..len - 1];
            data = &data[len..];
            let eq = record
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| bad("record without ="))?;
            let key = std::str::from_utf8(&record[..eq]).map_err(|_| bad("key not UTF-8"))?;
            let value = &record[eq + 1..];
            let text = || {
                std::str::from_utf8(value)
                    .map(str::to_owned)
                    .map_err(|_| bad(&format!("{key} is not UTF-8")))
            };
            let int = || {
                text()?
                    .parse::<u64>()
                    .map_err(|_| bad(&format!("{key} is not a number")))
            };
            match key {
                "path" => pax.path = Some(text()?),
                "linkpath" => pax.linkpath = Some(text()?),
                "size" => pax.size = Some(int()?),
                "uid" => pax.uid = Some(int()?),
                "gid" => pax.gid = Some(int()?),
                "mtime" => {
                    pax.mtime = Some(pax_time(&text()?).ok_or_else(|| bad("mtime is not a time"))?)
                }
                k if k.starts_with("GNU.sparse.") => {
                    return Err(Failure::Bad("GNU sparse file (pax)".into()));
                }
                _ => {}
            }
        }
        Ok(pax)
    }
}

/// A pax time (`[-]seconds[.fraction]`), rounded down to whole seconds.
fn pax_time(text: &str) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let (negative, digits) = match int.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, int),
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let seconds: i64 = digits.parse().ok()?;
    let has_fraction = frac.bytes().any(|b| b != b'0');
    Some(match (negative, has_fraction) {
        (false, _) => seconds,
        (true, false) => -seconds,
        (true, true) => -seconds - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_base256_numbers_parse() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"  644 \0\0"), Some(0o644));
        assert_eq!(number(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(number(b"00000001750\0"), Some(1000));
        assert_eq!(number(b"0000068\0"), None);
        assert_eq!(number(b"12 4\0\0\0\0"), None);
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00]),
            Some(256)
        );
        assert_eq!(signed_number(&[0xff; 12]), Some(-1));
        assert_eq!(
            signed_number(&[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe
            ]),
            Some(-2)
        );
        assert_eq!(number(&[0xff; 8]), None);
        assert_eq!(
            number(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }

    #[test]
    fn pax_times_round_down_to_seconds() {
        assert_eq!(pax_time("1700000000"), Some(1_700_000_000));
        assert_eq!(pax_time("1700000000.999"), Some(1_700_000_000));
        assert_eq!(pax_time("-1.5"), Some(-2));
        assert_eq!(pax_time("-3.000"), Some(-3));
        assert_eq!(pax_time("1e9"), None);
        assert_eq!(pax_time(""), None);
    }

    fn record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = [key.as_bytes(), b"=", value, b"\n"].concat();
        let mut len = body.len() + 2;
        while format!("{len} ").len() + body.len() != len {
            len += 1;
        }
        [format!("{len} ").into_bytes(), body].concat()
    }

    #[test]
    fn pax_records_set_path_size_and_owners() {
        let data = [
            record("path", b"usr/lib/a/long/name"),
            record("uid", b"42"),
            record("size", b"1234567890"),
            record("SCHILY.xattr.user.x", b"\x00\xff\x01"),
            record("atime", b"1.5"),
        ]
        .concat();
        let pax = Pax::parse(&data).unwrap();
        assert_eq!(pax.path.as_deref(), Some("usr/lib/a/long/name"));
        assert_eq!(pax.uid, Some(42));
        assert_eq!(pax.size, Some(1_234_567_890));
        assert_eq!(pax.gid, None);
        let mut wrong_length = record("path", b"x");
        wrong_length[0] = b'8';
        for bad in [
            wrong_length,
            b"path=x\n".to_vec(),
            record("uid", b"abc"),
            record("mtime", b"soon"),
            record("path", b"\xff"),
            record("GNU.sparse.major", b"1"),
        ] {
            assert!(
                Pax::parse(&bad).is_err(),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
