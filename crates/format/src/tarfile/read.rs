//! The reader: ustar, GNU (long names and links, base-256 numbers) and pax local
//! headers, which is what dpkg-deb, GNU tar and our own writer produce.
//!
//! Nothing here decides what may be extracted where; it says what the archive claims,
//! one entry at a time, after the checks every reader needs: header checksums, numbers
//! that parse, names that are neither absolute nor hold `..` or NUL, extension headers
//! of bounded size given at most once per entry, no data on entries that cannot have
//! any. Refused outright: global pax headers (they would silently change every later
//! entry), GNU sparse files, multi-volume and other exotic entry types.

use std::io::{self, BufRead, Read};

use super::{BLOCK, EXTENSION_MAX, Entry, Error, Kind, check_name, number, padding, signed_number};

/// The most a stream may carry after its end-of-archive block. tar pads an archive to
/// whole records (10 KiB by default); more than this is not padding, just work for the
/// decompressor.
const TRAILING_MAX: u64 = 1024 * 1024;

fn bad(reason: impl Into<String>) -> Error {
    Error::Malformed(reason.into())
}

/// Reads entries from an uncompressed tar stream.
pub struct Reader<R> {
    inner: R,
    /// Bytes consumed from `inner` so far.
    position: u64,
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

    /// The next entry, with the name as the archive spells it (not normalised), or
    /// `None` after the end-of-archive block. Skips the unread data of the previous
    /// entry.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
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
                return Err(bad("truncated tar archive: no end-of-archive block"));
            }
            if block.iter().all(|&b| b == 0) {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(bad("tar archive ends after an extended header"));
                }
                self.done = true;
                return Ok(None);
            }
            check_checksum(&block)?;
            let size = number(&block[124..136])
                .ok_or_else(|| bad_field(&block, "size", &block[124..136]))?;
            let once = |seen: bool, what: &str| {
                if seen {
                    Err(bad(format!("two {what} headers for one entry")))
                } else {
                    Ok(())
                }
            };
            match block[156] {
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
                    let entry = entry(&block, size, long_name, long_link, pax)?;
                    self.remaining = entry.size;
                    self.padding = padding(entry.size);
                    return Ok(Some(entry));
                }
            }
        }
    }

    /// The current entry's data not read yet, as much as is buffered (empty when the
    /// entry's data is all read), without copying. Call [`Reader::consume`] with what
    /// was used.
    pub fn data(&mut self) -> Result<&[u8], Error> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let remaining = self.remaining;
        let buf = self.inner.fill_buf().map_err(Error::Read)?;
        if buf.is_empty() {
            return Err(bad("truncated tar archive: entry data cut short"));
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
        self.position += n as u64;
        self.remaining -= n as u64;
    }

    /// Reads the rest of the stream after the end-of-archive block (tar pads archives to
    /// whole records), so that a decompressor gets to check its stream to the end.
    pub fn drain(&mut self) -> Result<(), Error> {
        let mut drained: u64 = 0;
        loop {
            let n = self.inner.fill_buf().map_err(Error::Read)?.len();
            if n == 0 {
                return Ok(());
            }
            drained += n as u64;
            if drained > TRAILING_MAX {
                return Err(bad(format!(
                    "more than {TRAILING_MAX} bytes after the end of the tar archive"
                )));
            }
            self.inner.consume(n);
            self.position += n as u64;
        }
    }

    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, Error> {
        let mut filled = 0;
        while filled < BLOCK {
            let buf = self.inner.fill_buf().map_err(Error::Read)?;
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

    fn read_extension(&mut self, size: u64, what: &str) -> Result<Vec<u8>, Error> {
        if size > EXTENSION_MAX {
            return Err(bad(format!(
                "{what} of {size} bytes (at most {EXTENSION_MAX} accepted)"
            )));
        }
        let mut data = Vec::with_capacity(size as usize);
        let mut left = size as usize;
        while left > 0 {
            let buf = self.inner.fill_buf().map_err(Error::Read)?;
            if buf.is_empty() {
                return Err(bad(format!("truncated tar archive: {what} cut short")));
            }
            let n = buf.len().min(left);
            data.extend_from_slice(&buf[..n]);
            self.inner.consume(n);
            self.position += n as u64;
            left -= n;
        }
        self.skip(padding(size))?;
        Ok(data)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), Error> {
        while n > 0 {
            let buf = self.inner.fill_buf().map_err(Error::Read)?;
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

/// Reads the current entry's data.
impl<R: BufRead> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let data = self.data()?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The entry a header block describes, with the extension headers before it applied.
fn entry(
    block: &[u8; BLOCK],
    size: u64,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Pax>,
) -> Result<Entry, Error> {
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
            bad(format!(
                "{name}: bad {what} field {:?} in tar header",
                String::from_utf8_lossy(&block[range])
            ))
        })
    };
    let kind = match block[156] {
        b'0' | b'\0' | b'7' => Kind::File,
        b'1' => Kind::HardLink,
        b'2' => Kind::Symlink,
        b'3' => Kind::CharDevice,
        b'4' => Kind::BlockDevice,
        b'5' => Kind::Directory,
        b'6' => Kind::Fifo,
        b'g' => {
            return Err(bad("global pax header (it would change every later entry)"));
        }
        b'S' => return Err(bad(format!("{name}: GNU sparse file"))),
        other => {
            return Err(bad(format!(
                "{name}: unsupported tar entry type {:?}",
                other as char
            )));
        }
    };
    check_name(&name).map_err(|reason| bad(format!("{name}: {reason}")))?;
    if kind == Kind::HardLink {
        check_name(&link)
            .map_err(|reason| bad(format!("{name}: hard link target {link:?}: {reason}")))?;
    }
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
            .ok_or_else(|| bad(format!("{name}: bad mtime field in tar header")))?,
    };
    let size = pax.size.unwrap_or(size);
    if kind == Kind::File && name.ends_with('/') {
        return Err(bad(format!(
            "{name}: a regular file whose name ends with /"
        )));
    }
    if kind != Kind::File && size != 0 {
        return Err(bad(format!(
            "{name}: a {} carrying {size} bytes of data",
            kind.describe()
        )));
    }
    let (dev_major, dev_minor) = if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
        let device = |what: &str, range| {
            u32::try_from(field(what, range)?)
                .map_err(|_| bad(format!("{name}: {what} out of range")))
        };
        (device("devmajor", 329..337)?, device("devminor", 337..345)?)
    } else {
        (0, 0)
    };
    Ok(Entry {
        path: name,
        kind,
        mode: u32::try_from(mode & 0o7777).unwrap_or(0),
        uid,
        gid,
        mtime,
        size,
        link,
        dev_major,
        dev_minor,
        pax: pax.rest,
    })
}

fn cut_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(end) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(end);
    }
    bytes
}

fn utf8(bytes: Vec<u8>, what: &str) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "{what} {:?} is not UTF-8",
            String::from_utf8_lossy(e.as_bytes())
        ))
    })
}

fn bad_field(block: &[u8; BLOCK], what: &str, field: &[u8]) -> Error {
    bad(format!(
        "{}: bad {what} field {:?} in tar header",
        String::from_utf8_lossy(&cut_nul(block[..100].to_vec())),
        String::from_utf8_lossy(field)
    ))
}

fn check_checksum(block: &[u8; BLOCK]) -> Result<(), Error> {
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
        Err(bad(
            "tar header checksum mismatch (corrupt or not a tar archive)",
        ))
    }
}

/// The pax records of one entry: the keywords that change what is extracted folded in,
/// the others kept as they are (the image formats' own records among them). Records
/// whose value is not UTF-8 (binary extended attributes) and that we do not interpret
/// are dropped: nothing here restores them, as `dpkg-deb -x` does not.
#[derive(Default)]
pub(super) struct Pax {
    pub(super) path: Option<String>,
    pub(super) linkpath: Option<String>,
    pub(super) size: Option<u64>,
    pub(super) uid: Option<u64>,
    pub(super) gid: Option<u64>,
    pub(super) mtime: Option<i64>,
    pub(super) rest: Vec<(String, String)>,
}

impl Pax {
    pub(super) fn parse(mut data: &[u8]) -> Result<Pax, Error> {
        let bad = |why: &str| bad(format!("malformed pax header: {why}"));
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
                    return Err(Error::Malformed("GNU sparse file (pax)".into()));
                }
                k if k.starts_with("RELEASE_UPGRADER.") => {
                    pax.rest.push((k.to_owned(), text()?));
                }
                k => {
                    if let Ok(value) = std::str::from_utf8(value) {
                        pax.rest.push((k.to_owned(), value.to_owned()));
                    }
                }
            }
        }
        Ok(pax)
    }
}

/// A pax time (`[-]seconds[.fraction]`), rounded down to whole seconds.
pub(super) fn pax_time(text: &str) -> Option<i64> {
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
