//! Where image entries come from: a root directory walked in image order, or a tarball
//! (an image this module wrote, or any rootfs tarball) read as a stream.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use ru_format::compress::{self, Limits};
use ru_format::tarfile::{self as tar, Entry, Kind};

/// A stream of entries in image order, each regular file's data readable once before
/// the next entry is asked for.
pub trait Source {
    /// The next entry, `None` at the end.
    fn next_entry(&mut self) -> Result<Option<Entry>, Error>;
    /// Reads the current regular file's data.
    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// The file or directory the entries come from (for messages).
    fn origin(&self) -> &Path;
}

/// Reads the current entry's data of a [`Source`].
pub struct Data<'a>(pub &'a mut dyn Source);

impl Read for Data<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_data(buf)
    }
}

/// Opens `path` as a root directory or an image tarball. Entries of a directory are
/// named `system/…`; a tarball's names are taken as they are (an image already has them
/// under `system/`).
pub fn open(path: &Path) -> Result<Box<dyn Source>, Error> {
    let meta = fs_err::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        Ok(Box::new(DirSource::new(path, "system", None)?))
    } else {
        Ok(Box::new(TarSource::open(path, "", true)?))
    }
}

/// A decompressing reader for `path`, chosen by the file's magic bytes (xz, zstd, gzip,
/// bzip2, or plain tar).
pub fn decompressed(path: &Path) -> Result<Box<dyn BufRead + Send>, Error> {
    compress::open_sniffed(path, Limits::IMAGE).map_err(Error::from)
}

/// Entries of a tarball, names normalised (and prefixed with `prefix/` when one is
/// given), in archive order.
pub struct TarSource {
    path: PathBuf,
    reader: tar::Reader<Box<dyn BufRead + Send>>,
    prefix: String,
    /// Refuse archives not in image order (deltas merge two ordered streams).
    check_order: bool,
    last: Option<String>,
}

impl TarSource {
    pub fn open(path: &Path, prefix: &str, check_order: bool) -> Result<Self, Error> {
        Ok(TarSource {
            path: path.to_owned(),
            reader: tar::Reader::new(decompressed(path)?),
            prefix: prefix.to_owned(),
            check_order,
            last: None,
        })
    }

    /// Offset of the current entry's data in the uncompressed stream.
    pub fn data_position(&self) -> u64 {
        self.reader.position()
    }

    fn bad(&self, reason: String) -> Error {
        Error::Config {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Joins `prefix` and a normalised name.
fn prefixed(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}/{name}"),
    }
}

impl Source for TarSource {
    fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
        loop {
            let Some(mut entry) = self
                .reader
                .next_entry()
                .map_err(|e| Error::io(&self.path, e.into()))?
            else {
                self.reader
                    .drain()
                    .map_err(|e| Error::io(&self.path, e.into()))?;
                return Ok(None);
            };
            let name = tar::normalise(&entry.path).map_err(|r| self.bad(r))?;
            if name.is_empty() && self.prefix.is_empty() {
                // The archive's `./`: an image has no entry above `system`.
                continue;
            }
            entry.path = prefixed(&self.prefix, &name);
            if entry.kind == Kind::HardLink {
                let target = tar::normalise(&entry.link).map_err(|r| self.bad(r))?;
                if target.is_empty() {
                    return Err(self.bad(format!("{}: hard link to the top", entry.path)));
                }
                entry.link = prefixed(&self.prefix, &target);
            }
            if self.check_order {
                if let Some(last) = &self.last
                    && tar::cmp_paths(last, &entry.path) != std::cmp::Ordering::Less
                {
                    return Err(self.bad(format!(
                        "entries are not in image order ({} after {last}); rebuild it with \
                             `release-upgrader-publish image build --tarball`",
                        entry.path
                    )));
                }
                self.last = Some(entry.path.clone());
            }
            return Ok(Some(entry));
        }
    }

    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }

    fn origin(&self) -> &Path {
        &self.path
    }
}

/// A root directory walked depth first, children by name bytes; symlinks are recorded,
/// never followed, and files are opened with `O_NOFOLLOW`.
pub struct DirSource {
    root: PathBuf,
    prefix: String,
    /// Directories being walked: their image path and the children not visited yet
    /// (reversed, so the next is at the end).
    stack: Vec<(String, Vec<Vec<u8>>)>,
    started: bool,
    /// First image path of each multiply linked file, by (device, inode).
    links: HashMap<(u64, u64), String>,
    current: Option<io::Take<File>>,
    clamp_mtime: Option<i64>,
}

impl DirSource {
    /// `clamp_mtime`: no entry gets an mtime later than this (SOURCE_DATE_EPOCH).
    pub fn new(root: &Path, prefix: &str, clamp_mtime: Option<i64>) -> Result<Self, Error> {
        let meta = fs_err::symlink_metadata(root).map_err(|e| Error::io(root, e))?;
        if !meta.is_dir() {
            return Err(Error::Config {
                path: root.to_owned(),
                reason: "not a directory".into(),
            });
        }
        Ok(DirSource {
            root: root.to_owned(),
            prefix: prefix.to_owned(),
            stack: Vec::new(),
            started: false,
            links: HashMap::new(),
            current: None,
            clamp_mtime,
        })
    }

    fn fs_path(&self, image_path: &str) -> PathBuf {
        let rel = image_path
            .strip_prefix(&self.prefix)
            .unwrap_or(image_path)
            .trim_start_matches('/');
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    fn children(&self, dir: &Path) -> Result<Vec<Vec<u8>>, Error> {
        use std::os::unix::ffi::OsStrExt;
        let mut names: Vec<Vec<u8>> = fs_err::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::io(dir, e))?;
        names.sort();
        names.reverse();
        Ok(names)
    }

    fn entry(&mut self, image_path: String) -> Result<Entry, Error> {
        use std::os::unix::fs::FileTypeExt;
        let fs_path = self.fs_path(&image_path);
        let meta = fs_err::symlink_metadata(&fs_path).map_err(|e| Error::io(&fs_path, e))?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Directory
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_char_device() {
            Kind::CharDevice
        } else if ft.is_block_device() {
            Kind::BlockDevice
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            return Err(Error::Config {
                path: fs_path,
                reason: "a socket or other special file cannot go into an image".into(),
            });
        };
        let mut entry = Entry::new(image_path, kind);
        entry.mode = meta.mode() & 0o7777;
        entry.uid = meta.uid() as u64;
        entry.gid = meta.gid() as u64;
        entry.mtime = meta.mtime();
        if let Some(clamp) = self.clamp_mtime {
            entry.mtime = entry.mtime.min(clamp);
        }
        match kind {
            Kind::Symlink => {
                let target = fs_err::read_link(&fs_path).map_err(|e| Error::io(&fs_path, e))?;
                entry.link = target
                    .to_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Error::Config {
                        path: fs_path.clone(),
                        reason: "symlink target is not UTF-8".into(),
                    })?;
            }
            Kind::CharDevice | Kind::BlockDevice => {
                let rdev = meta.rdev();
                entry.dev_major = nix::sys::stat::major(rdev) as u32;
                entry.dev_minor = nix::sys::stat::minor(rdev) as u32;
            }
            Kind::File => {
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = self.links.get(&key) {
                        entry.kind = Kind::HardLink;
                        entry.link = first.clone();
                        return Ok(entry);
                    }
                    self.links.insert(key, entry.path.clone());
                }
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                    .open(&fs_path)
                    .map_err(|e| Error::io(&fs_path, e))?;
                entry.size = meta.len();
                self.current = Some(file.take(meta.len()));
            }
            _ => {}
        }
        Ok(entry)
    }
}

impl Source for DirSource {
    fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
        self.current = None;
        if !self.started {
            self.started = true;
            let entry = self.entry(self.prefix.clone())?;
            let children = self.children(&self.root.clone())?;
            self.stack.push((self.prefix.clone(), children));
            return Ok(Some(entry));
        }
        loop {
            let Some((dir, names)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(name) = names.pop() else {
                self.stack.pop();
                continue;
            };
            let dir = dir.clone();
            let name = String::from_utf8(name).map_err(|n| Error::Config {
                path: self.fs_path(&dir),
                reason: format!(
                    "file name {:?} is not UTF-8",
                    String::from_utf8_lossy(n.as_bytes())
                ),
            })?;
            if name.contains('\n') {
                return Err(Error::Config {
                    path: self.fs_path(&dir).join(&name),
                    reason: "file names with a newline cannot be listed in `removed`".into(),
                });
            }
            let path = prefixed(&dir, &name);
            let entry = self.entry(path.clone())?;
            if entry.kind == Kind::Directory {
                let children = self.children(&self.fs_path(&path))?;
                self.stack.push((path, children));
            }
            return Ok(Some(entry));
        }
    }

    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.current {
            Some(file) => file.read(buf),
            None => Ok(0),
        }
    }

    fn origin(&self) -> &Path {
        &self.root
    }
}
