//! The one tar layer of the project: a streaming reader of hostile archives ([`Reader`])
//! and a deterministic writer ([`Writer`]), over one entry model ([`Entry`]) and one
//! numeric-field parser.
//!
//! Both the .deb code (control and data members) and the image code (image tarballs on
//! the device, sources and outputs on the publisher) read and write through here, so
//! an archive means the same thing wherever it is read: the same checksum rule, the same
//! octal and base-256 numbers, the same pax records, the same refusals.
//!
//! Written here rather than taken from the `tar` crate because hostile input needs
//! bounds that crate does not set (it reads long names and pax headers of any size into
//! memory, and leaves `..` and absolute names to the caller), because refusals must say
//! exactly what was wrong, because the image code needs a reader it can own in a struct
//! next to its decompressor (the crate's entries borrow their archive), and because the
//! writer's bytes must depend on nothing but the entry (no user-name look-ups, no clock).
//! Named `tarfile` so that it does not shadow the crate in code that still uses it as an
//! independent reference (the integration tests).

mod read;
mod write;

use std::cmp::Ordering;
use std::fmt;
use std::io;

pub use read::Reader;
pub use write::Writer;

const BLOCK: usize = 512;
/// The most a GNU long name, long link or pax header may hold.
const EXTENSION_MAX: u64 = 1024 * 1024;
/// The longest entry name or hard-link target accepted, in bytes (Linux's `PATH_MAX`
/// less the NUL). Nothing longer can be created through a path anyway.
pub const MAX_NAME: usize = 4095;

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

/// One entry: its name and everything tar records about it, with GNU long names and
/// pax records applied. The reader gives the name as the archive spells it (after the
/// reader's own checks); image code keeps normalised paths here (`system/usr/bin/foo`,
/// no leading `./`, no trailing `/`).
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
    /// Pax records other than the ones folded into the fields above (`path`,
    /// `linkpath`, `size`, `uid`, `gid`, `mtime`), in archive order: the image formats'
    /// `RELEASE_UPGRADER.*` records among them.
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

/// Why reading an archive failed.
#[derive(Debug)]
pub enum Error {
    /// The archive is malformed or refused (the reason says which rule).
    Malformed(String),
    /// The stream under the archive failed (a read error, or a decompressor's).
    Read(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed(reason) => f.write_str(reason),
            Error::Read(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Malformed(reason) => io::Error::new(io::ErrorKind::InvalidData, reason),
            Error::Read(e) => e,
        }
    }
}

/// The order of entries in every image the publisher writes: depth first, the children
/// of a directory by the bytes of their names (what `tar --sort=name` gives). Parents
/// come before their children, and a whole subtree before the parent's next sibling.
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

/// Normalises an image archive name: drops leading `./` and a trailing `/`, refuses
/// `..`, empty and `.` components inside, NUL and newline. The top (`.` or `./`)
/// becomes "".
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

/// What every reader of an archive refuses in an entry's name or a hard link's target,
/// whatever it goes on to do with it: absolute names, `..`, NUL (possible through long
/// names and pax records) and overlong names.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.len() > MAX_NAME {
        return Err("file name longer than 4095 bytes");
    }
    if name.starts_with('/') {
        return Err("absolute file name (an absolute path leaves the destination)");
    }
    if name.contains('\0') {
        return Err("NUL in file name");
    }
    if name.split('/').any(|part| part == "..") {
        return Err("`..` in path");
    }
    Ok(())
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// An unsigned numeric field: octal digits (space- or NUL-padded), or GNU base-256.
fn number(field: &[u8]) -> Option<u64> {
    match signed_number(field)? {
        n if n >= 0 => Some(n as u64),
        _ => None,
    }
}

/// A numeric field that may be negative (mtime): octal or GNU base-256. The one parser
/// of tar numbers in the project.
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

#[cfg(test)]
mod tests;
