//! Where image entries come from: a root directory walked in image order, or a tarball
//! (an image this module or system-image-server wrote, or any rootfs tarball) unpacked,
//! indexed and read back in image order.

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

/// An image to read, as often as needed: a root directory (walked again each time, its
/// entries named `system/…`) or an image tarball (unpacked and indexed once, see
/// [`SortedTar`]; its names taken as they are).
pub enum Image {
    Dir(PathBuf),
    Tar(SortedTar),
}

impl Image {
    /// Opens `path`; a tarball's temporary plain copy goes to `scratch`.
    pub fn open(path: &Path, scratch: &Path) -> Result<Self, Error> {
        let meta = fs_err::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            Ok(Image::Dir(path.to_owned()))
        } else {
            Ok(Image::Tar(SortedTar::open(path, Names::Image, scratch)?))
        }
    }

    /// The image's entries in image order.
    pub fn entries(&self) -> Result<Box<dyn Source + '_>, Error> {
        Ok(match self {
            Image::Dir(root) => Box::new(DirSource::new(root, "system", None)?),
            Image::Tar(tar) => Box::new(tar.entries()),
        })
    }
}

/// A decompressing reader for `path`, chosen by the file's magic bytes (xz, zstd, gzip,
/// bzip2, or plain tar).
pub fn decompressed(path: &Path) -> Result<Box<dyn BufRead + Send>, Error> {
    compress::open_sniffed(path, Limits::IMAGE).map_err(Error::from)
}

/// How a tarball's member names become image paths.
#[derive(Clone, Copy, Debug)]
pub enum Names {
    /// A full image: names as they are (`system/…`, `partitions/…`), pax records kept.
    Image,
    /// A rootfs: names go under `system/` (the archive's top becomes `system`, added
    /// when the archive has none), pax records dropped, mtimes clamped to `clamp`.
    Rootfs { clamp: Option<i64> },
}

/// A tarball in whatever order its tool wrote it, read in image order. GNU tar writes
/// directory order, and so do system-image-server's full images (`tar -cJf … partitions/
/// system/`), while deltas merge two streams sorted by path. The stream is unpacked once
/// to an unnamed temporary plain tar, indexed (memory: one [`Entry`] per member, not
/// their data), and handed out sorted. Each hard link group is re-pointed so that its
/// first path in image order carries the data and the others link to it, which is what
/// an image written in order has and what unpacking in that order needs.
pub struct SortedTar {
    plain: File,
    origin: PathBuf,
    /// Entries in image order, each with where its data starts in `plain`.
    entries: Vec<(Entry, u64)>,
}

impl SortedTar {
    pub fn open(tarball: &Path, names: Names, scratch: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::Config {
            path: tarball.to_owned(),
            reason,
        };
        let mut plain = tempfile::tempfile_in(scratch).map_err(|e| Error::io(scratch, e))?;
        {
            let mut input = decompressed(tarball)?;
            io::copy(&mut input, &mut plain).map_err(|e| Error::io(tarball, e))?;
        }
        let mut index: Vec<(Entry, u64)> = Vec::new();
        {
            let copy = plain.try_clone().map_err(|e| Error::io(tarball, e))?;
            let mut reader = tar::Reader::new(io::BufReader::with_capacity(
                256 * 1024,
                PositionedReader { file: copy, at: 0 },
            ));
            while let Some(mut entry) = reader
                .next_entry()
                .map_err(|e| Error::io(tarball, e.into()))?
            {
                let name = tar::normalise(&entry.path).map_err(bad)?;
                if entry.kind == Kind::HardLink {
                    let target = tar::normalise(&entry.link).map_err(bad)?;
                    if target.is_empty() {
                        return Err(bad(format!("{name}: hard link to the top")));
                    }
                    entry.link = match names {
                        Names::Image => target,
                        Names::Rootfs { .. } => format!("system/{target}"),
                    };
                }
                match names {
                    // The archive's `./`: an image has no entry above `system`.
                    Names::Image if name.is_empty() => continue,
                    Names::Image => entry.path = name,
                    Names::Rootfs { clamp } => {
                        if name.is_empty() && entry.kind != Kind::Directory {
                            return Err(bad("the archive's top is not a directory".into()));
                        }
                        entry.path = prefixed("system", &name);
                        entry.pax.clear();
                        if let Some(clamp) = clamp {
                            entry.mtime = entry.mtime.min(clamp);
                        }
                    }
                }
                index.push((entry, reader.position()));
            }
        }
        if let Names::Rootfs { clamp } = names
            && !index.iter().any(|(e, _)| e.path == "system")
        {
            let mut top = Entry::new("system".into(), Kind::Directory);
            top.mode = 0o755;
            top.mtime = clamp.unwrap_or(0);
            index.push((top, 0));
        }
        index.sort_by(|a, b| tar::cmp_paths(&a.0.path, &b.0.path));
        for pair in index.windows(2) {
            if tar::cmp_paths(&pair[0].0.path, &pair[1].0.path) == std::cmp::Ordering::Equal {
                return Err(bad(format!("{} is in the archive twice", pair[0].0.path)));
            }
        }
        repoint_hard_links(&mut index).map_err(bad)?;
        Ok(SortedTar {
            plain,
            origin: tarball.to_owned(),
            entries: index,
        })
    }

    /// The entries in image order.
    pub fn entries(&self) -> SortedEntries<'_> {
        SortedEntries {
            tar: self,
            next: 0,
            data: None,
        }
    }
}

/// Makes the first path of each hard link group (in `index`'s order) the one that
/// carries the data, taking the data entry's metadata and offset, and points every
/// other member of the group at it.
fn repoint_hard_links(index: &mut [(Entry, u64)]) -> Result<(), String> {
    let position: HashMap<&str, usize> = index
        .iter()
        .enumerate()
        .map(|(i, (e, _))| (e.path.as_str(), i))
        .collect();
    // The data entry of each group -> the group's first position.
    let mut first_of: HashMap<usize, usize> = HashMap::new();
    let mut data_of_link: Vec<(usize, usize)> = Vec::new();
    for (i, (entry, _)) in index.iter().enumerate() {
        if entry.kind != Kind::HardLink {
            continue;
        }
        let target = *position.get(entry.link.as_str()).ok_or_else(|| {
            format!(
                "{}: hard link to {}, which is not in the archive",
                entry.path, entry.link
            )
        })?;
        if index[target].0.kind != Kind::File {
            return Err(format!(
                "{}: hard link to {}, which is not a regular file",
                entry.path, entry.link
            ));
        }
        let first = first_of.entry(target).or_insert(target);
        *first = (*first).min(i);
        data_of_link.push((i, target));
    }
    let holder_path: HashMap<usize, String> = first_of
        .iter()
        .map(|(&data, &first)| (data, index[first].0.path.clone()))
        .collect();
    for (&data, &first) in &first_of {
        if first == data {
            continue;
        }
        // The first link becomes the file: the data entry's metadata and bytes.
        let (holder, offset) = index[data].clone();
        let path = std::mem::take(&mut index[first].0.path);
        index[first] = (Entry { path, ..holder }, offset);
        let entry = &mut index[data].0;
        entry.kind = Kind::HardLink;
        entry.link = holder_path[&data].clone();
        entry.size = 0;
    }
    for (link, data) in data_of_link {
        if first_of[&data] != link {
            index[link].0.link = holder_path[&data].clone();
        }
    }
    Ok(())
}

/// Reads a file from a position of its own (so several readers can share one file).
struct PositionedReader {
    file: File,
    at: u64,
}

impl Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// One pass over a [`SortedTar`].
pub struct SortedEntries<'a> {
    tar: &'a SortedTar,
    next: usize,
    /// The current regular file's data: where the rest starts and how much is left.
    data: Option<(u64, u64)>,
}

impl Source for SortedEntries<'_> {
    fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
        self.data = None;
        let Some((entry, offset)) = self.tar.entries.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        if entry.kind == Kind::File {
            self.data = Some((*offset, entry.size));
        }
        Ok(Some(entry.clone()))
    }

    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let Some((at, left)) = &mut self.data else {
            return Ok(0);
        };
        let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.tar.plain.read_at(&mut buf[..want], *at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the unpacked archive ends inside a member",
            ));
        }
        *at += n as u64;
        *left -= n as u64;
        Ok(n)
    }

    fn origin(&self) -> &Path {
        &self.tar.origin
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
