//! Confinement to a root.
//!
//! The tool runs as root and deletes, renames and writes whole trees: staging
//! directories, old helper trees, image overlays, backups of sources. A path that reaches
//! those operations from a state file, a tarball or a flag must not be able to name
//! anything outside the root the call was given, and a tree being deleted must not lead
//! the delete into another filesystem mounted below it (a chroot's `/dev`, bind-mounted
//! from the host, is the classic way to wipe a machine from a test).
//!
//! Two pieces:
//! - [`RelPath`]: a path checked to stay below whatever directory it is joined to
//!   (relative, no `..`, `.` or empty components). State files hold these, and reading
//!   one back checks it again, so a tampered or foreign state file is refused instead of
//!   acted on.
//! - [`Tree`]: an open directory. Everything below it is reached with `openat` one
//!   component at a time, never following a symlink and never entering another mount,
//!   so nothing done through it can leave it, whatever the tree holds or becomes while
//!   we work.
//!
//! cap-std's `Dir` does the first half of this, but it follows symlinks that stay inside
//! and its `remove_dir_all` walks into mount points; we want neither, so the handful of
//! calls we need are written here on rustix.

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Error;

/// The longest relative path accepted (Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;
/// The deepest tree [`Tree::remove_all`] walks (each level holds one open descriptor).
const MAX_DEPTH: usize = 512;

/// A relative path that stays below the directory it is joined to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RelPath(String);

/// Why a path is not a [`RelPath`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} is not a path inside the tree: {reason}")]
pub struct BadRelPath {
    pub path: String,
    pub reason: &'static str,
}

impl RelPath {
    /// Checks `path`: not empty, not absolute, every `/`-separated component a plain
    /// name (no `.`, `..` or empty component, so no trailing or doubled `/`), no NUL,
    /// at most [`MAX_PATH`] bytes.
    pub fn new(path: impl Into<String>) -> Result<RelPath, BadRelPath> {
        let path = path.into();
        let bad = |reason| {
            Err(BadRelPath {
                path: path.clone(),
                reason,
            })
        };
        if path.is_empty() {
            return bad("empty");
        }
        if path.starts_with('/') {
            return bad("absolute");
        }
        if path.len() > MAX_PATH {
            return bad("too long");
        }
        if path.contains('\0') {
            return bad("contains a NUL byte");
        }
        for component in path.split('/') {
            match component {
                "" => return bad("has an empty component"),
                "." => return bad("has a `.` component"),
                ".." => return bad("has a `..` component"),
                _ => {}
            }
        }
        Ok(RelPath(path))
    }

    /// The relative path of `path` below `base`, both taken lexically (neither may hold
    /// `..`, `.` is ignored): how an absolute path of an older state file is checked
    /// against where the current root says it must be.
    pub fn below(base: &Path, path: &Path) -> Result<RelPath, BadRelPath> {
        let not_below = |reason| BadRelPath {
            path: path.display().to_string(),
            reason,
        };
        let normal = |p: &Path| -> Option<Vec<String>> {
            let mut out = Vec::new();
            for c in p.components() {
                match c {
                    Component::RootDir | Component::CurDir => {}
                    Component::Normal(n) => out.push(n.to_str()?.to_owned()),
                    Component::ParentDir | Component::Prefix(_) => return None,
                }
            }
            Some(out)
        };
        if !path.is_absolute() || !base.is_absolute() {
            return Err(not_below("not absolute"));
        }
        let (Some(base), Some(path)) = (normal(base), normal(path)) else {
            return Err(not_below("has a `..` component or is not UTF-8"));
        };
        match path.strip_prefix(base.as_slice()) {
            Some(rest) if !rest.is_empty() => RelPath::new(rest.join("/")),
            _ => Err(not_below("not below the directory it must be in")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// `self/name`, where `name` is one more plain component.
    pub fn join(&self, name: &str) -> Result<RelPath, BadRelPath> {
        if name.contains('/') {
            return Err(BadRelPath {
                path: name.to_owned(),
                reason: "not a single name",
            });
        }
        RelPath::new(format!("{}/{name}", self.0))
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The directory part (None at the top) and the last name.
    pub fn split_last(&self) -> (Option<&str>, &str) {
        match self.0.rsplit_once('/') {
            Some((dir, name)) => (Some(dir), name),
            None => (None, &self.0),
        }
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        RelPath::new(raw).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&str> for RelPath {
    type Error = BadRelPath;
    fn try_from(path: &str) -> Result<Self, Self::Error> {
        RelPath::new(path)
    }
}

/// Which mount a directory belongs to: the kernel's mount id where `statx` gives one
/// (Linux 5.8+), else the device, which tells filesystems apart but not two bind mounts
/// of one filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MountId {
    Id(u64),
    Device(u32, u32),
}

fn mount_of(fd: impl AsFd) -> std::io::Result<MountId> {
    match rustix::fs::statx(
        &fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::MNT_ID | StatxFlags::TYPE,
    ) {
        Ok(st) if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 => Ok(MountId::Id(st.stx_mnt_id)),
        Ok(st) => Ok(MountId::Device(st.stx_dev_major, st.stx_dev_minor)),
        Err(Errno::NOSYS) => {
            let st = rustix::fs::fstat(&fd)?;
            Ok(MountId::Device(
                rustix::fs::major(st.st_dev),
                rustix::fs::minor(st.st_dev),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a walk down a [`Tree`] may enter another mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mounts {
    /// Never: a mount point on the way is refused.
    Stay,
    /// Yes (symlinks are still refused).
    Enter,
}

/// What a name below a [`Tree`] is, without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Symlink,
    File,
    /// Anything else: a device, fifo or socket.
    Other,
}

/// An open directory that everything done through it stays inside.
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
    /// Where it was opened, for messages only: never used to reach a file.
    path: PathBuf,
    mount: MountId,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Tree {
    /// Opens the directory `path`. The path itself is taken as given (it is the root the
    /// caller chose, symlinks and all); everything below it is confined.
    pub fn open(path: &Path) -> Result<Tree, Error> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(path, e.into()))?;
        let mount = mount_of(&fd).map_err(|e| Error::io(path, e))?;
        Ok(Tree {
            fd,
            path: path.to_owned(),
            mount,
        })
    }

    /// Opens `path` if it is a directory, `None` if it does not exist.
    pub fn open_existing(path: &Path) -> Result<Option<Tree>, Error> {
        match Tree::open(path) {
            Ok(tree) => Ok(Some(tree)),
            Err(Error::Format(ru_format::Error::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Where the tree was opened (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` as a path below where the tree was opened (for messages and for handing to
    /// programs that take paths).
    pub fn display(&self, rel: &RelPath) -> PathBuf {
        self.path.join(rel.as_path())
    }

    fn refused(&self, at: impl AsRef<Path>, reason: &str) -> Error {
        Error::Refused {
            path: self.path.join(at),
            reason: reason.to_owned(),
        }
    }

    /// Opens the directory `name` directly inside this one: never through a symlink,
    /// never onto another mount.
    fn child(&self, name: &str) -> Result<Option<Tree>, Error> {
        self.child_in(name, Mounts::Stay)
    }

    /// [`Self::child`], entering a mount point only with [`Mounts::Enter`].
    fn child_in(&self, name: &str, mounts: Mounts) -> Result<Option<Tree>, Error> {
        match self.child_or(name, mounts)? {
            Ok(tree) => Ok(Some(tree)),
            Err(Blocked::Missing) => Ok(None),
            Err(blocked) => Err(self.refused(name, blocked.reason())),
        }
    }

    /// [`Self::child_in`], saying what is in the way instead of refusing.
    fn child_or(&self, name: &str, mounts: Mounts) -> Result<Result<Tree, Blocked>, Error> {
        check_name(name).map_err(|reason| self.refused(name, reason))?;
        let fd = match rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Err(Blocked::Missing)),
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                return match self.kind_of(name)? {
                    Some(Kind::Symlink) => Ok(Err(Blocked::Symlink)),
                    None => Ok(Err(Blocked::Missing)),
                    _ => Ok(Err(Blocked::NotDir)),
                };
            }
            Err(e) => return Err(Error::io(self.path.join(name), e.into())),
        };
        let mount = mount_of(&fd).map_err(|e| Error::io(self.path.join(name), e))?;
        if mount != self.mount && mounts == Mounts::Stay {
            return Ok(Err(Blocked::MountPoint));
        }
        Ok(Ok(Tree {
            fd,
            path: self.path.join(name),
            mount,
        }))
    }

    fn kind_of(&self, name: &str) -> Result<Option<Kind>, Error> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => Kind::Dir,
                FileType::Symlink => Kind::Symlink,
                FileType::RegularFile => Kind::File,
                _ => Kind::Other,
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io(self.path.join(name), e.into())),
        }
    }

    /// Opens the directory `rel` below this one (`None` if some part of it is missing);
    /// a symlink or a mount point on the way is refused.
    pub fn open_dir(&self, rel: &RelPath) -> Result<Option<Tree>, Error> {
        self.walk(rel.components())
    }

    /// Like [`Self::open_dir`], but mount points on the way are entered (symlinks are
    /// still refused): for the fixed system directories a root holds, such as
    /// `var/lib/release-upgrader` or `usr/lib`, where `/var` or `/usr` may well be
    /// filesystems of their own. The tree returned is confined from there on: nothing
    /// done through it crosses into another mount below it.
    pub fn open_dir_across_mounts(&self, rel: &RelPath) -> Result<Option<Tree>, Error> {
        self.walk_in(rel.components(), Mounts::Enter)
    }

    fn walk<'a>(&self, components: impl Iterator<Item = &'a str>) -> Result<Option<Tree>, Error> {
        self.walk_in(components, Mounts::Stay)
    }

    fn walk_in<'a>(
        &self,
        components: impl Iterator<Item = &'a str>,
        mounts: Mounts,
    ) -> Result<Option<Tree>, Error> {
        let mut at: Option<Tree> = None;
        let mut walked = String::new();
        for name in components {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(name);
            match at.as_ref().unwrap_or(self).child_in(name, mounts)? {
                Some(next) => at = Some(next),
                None => return Ok(None),
            }
        }
        match at {
            Some(tree) => Ok(Some(tree)),
            None => Ok(Some(Tree {
                fd: self.fd.try_clone().map_err(|e| Error::io(&self.path, e))?,
                path: self.path.clone(),
                mount: self.mount,
            })),
        }
    }

    /// The directory holding `rel` (opened confined) and `rel`'s last name; `None` when
    /// that directory does not exist.
    fn parent(&self, rel: &RelPath) -> Result<Option<(Tree, String)>, Error> {
        let (dir, name) = rel.split_last();
        let parent = match dir {
            Some(dir) => self.walk(dir.split('/'))?,
            None => self.walk(std::iter::empty())?,
        };
        Ok(parent.map(|p| (p, name.to_owned())))
    }

    /// What `rel` is, not following a final symlink; `None` if it does not exist. A
    /// symlink or mount point among its parents is refused.
    pub fn kind(&self, rel: &RelPath) -> Result<Option<Kind>, Error> {
        match self.parent(rel)? {
            Some((dir, name)) => dir.kind_of(&name),
            None => Ok(None),
        }
    }

    /// Creates the directory `rel` and its missing parents (mode 0755), refusing
    /// symlinks and mount points on the way; returns it open.
    pub fn create_dir_all(&self, rel: &RelPath) -> Result<Tree, Error> {
        self.create_dir_all_in(rel, Mounts::Stay)
    }

    /// [`Self::create_dir_all`], entering mount points on the way as
    /// [`Self::open_dir_across_mounts`] does.
    pub fn create_dir_all_across_mounts(&self, rel: &RelPath) -> Result<Tree, Error> {
        self.create_dir_all_in(rel, Mounts::Enter)
    }

    fn create_dir_all_in(&self, rel: &RelPath, mounts: Mounts) -> Result<Tree, Error> {
        let mut at: Option<Tree> = None;
        let mut walked = String::new();
        for name in rel.components() {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(name);
            let here = at.as_ref().unwrap_or(self);
            let next = match here.child_in(name, mounts)? {
                Some(next) => next,
                None => {
                    match rustix::fs::mkdirat(&here.fd, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(Error::io(self.path.join(&walked), e.into())),
                    }
                    here.child_in(name, mounts)?
                        .ok_or_else(|| self.refused(&walked, "it vanished while being created"))?
                }
            };
            at = Some(next);
        }
        at.ok_or_else(|| self.refused(rel.as_str(), "it is empty"))
    }

    /// Removes the file, symlink or empty-or-not directory `rel` and everything below it.
    /// Returns whether anything was there. Nothing outside `rel` is touched: symlinks
    /// are removed, never followed, and a mount point anywhere below `rel` stops the
    /// removal before anything inside that mount is touched (what was removed before it
    /// stays removed; the error names the mount point).
    pub fn remove_all(&self, rel: &RelPath) -> Result<bool, Error> {
        let Some((dir, name)) = self.parent(rel)? else {
            return Ok(false);
        };
        match dir.kind_of(&name)? {
            None => Ok(false),
            Some(Kind::Dir) => {
                let inner = dir
                    .child(&name)?
                    .ok_or_else(|| self.refused(rel.as_str(), "it vanished while being removed"))?;
                inner.empty_out(0)?;
                drop(inner);
                dir.unlink(&name, true)?;
                Ok(true)
            }
            Some(_) => {
                dir.unlink(&name, false)?;
                Ok(true)
            }
        }
    }

    /// Removes `rel` if it is not a directory; `false` if it was not there.
    pub fn remove_file(&self, rel: &RelPath) -> Result<bool, Error> {
        let Some((dir, name)) = self.parent(rel)? else {
            return Ok(false);
        };
        match dir.kind_of(&name)? {
            None => Ok(false),
            Some(Kind::Dir) => Err(self.refused(rel.as_str(), "it is a directory")),
            Some(_) => dir.unlink(&name, false).map(|()| true),
        }
    }

    /// Removes the directory `rel` if it is empty. Returns whether it was removed: `false`
    /// when it is missing, not empty, or not a directory (left alone in both cases).
    pub fn remove_dir(&self, rel: &RelPath) -> Result<bool, Error> {
        let Some((dir, name)) = self.parent(rel)? else {
            return Ok(false);
        };
        if dir.kind_of(&name)? != Some(Kind::Dir) {
            return Ok(false);
        }
        match rustix::fs::unlinkat(&dir.fd, name.as_str(), AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR) => Ok(false),
            Err(e) => Err(Error::io(self.display(rel), e.into())),
        }
    }

    /// Removes the directory `rel` and everything below it, as [`Self::remove_all`] does,
    /// but refuses when `rel` itself is not a directory: for names the caller keeps its
    /// own directories under, where a symlink or a file is something planted there.
    /// Returns whether it was there.
    pub fn remove_dir_all(&self, rel: &RelPath) -> Result<bool, Error> {
        match self.kind(rel)? {
            None => Ok(false),
            Some(Kind::Dir) => self.remove_all(rel),
            Some(Kind::Symlink) => Err(self.refused(
                rel.as_str(),
                "it is a symlink where a directory is expected (never followed)",
            )),
            Some(_) => Err(self.refused(rel.as_str(), "it is not a directory")),
        }
    }

    /// The names directly inside this directory and what each is (not following
    /// symlinks), sorted by name.
    pub fn entries(&self) -> Result<Vec<(String, Kind)>, Error> {
        // A descriptor of its own (not a dup, which would share the read position).
        let mut stream =
            rustix::fs::Dir::read_from(&self.fd).map_err(|e| Error::io(&self.path, e.into()))?;
        let mut names = Vec::new();
        while let Some(entry) = stream.read() {
            let entry = entry.map_err(|e| Error::io(&self.path, e.into()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push(OsStr::from_bytes(name).to_string_lossy().into_owned());
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // Gone in between: not an entry any more.
            if let Some(kind) = self.kind_of(&name)? {
                out.push((name, kind));
            }
        }
        Ok(out)
    }

    fn unlink(&self, name: &str, dir: bool) -> Result<(), Error> {
        let flags = if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(&self.fd, name, flags) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io(self.path.join(name), e.into())),
        }
    }

    /// Removes everything inside this directory, depth first.
    fn empty_out(&self, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(self.refused("", "it is nested too deeply to remove"));
        }
        loop {
            // Read a batch of names, then remove them: removing while reading a
            // directory stream may skip entries.
            let mut names = Vec::new();
            // A descriptor of its own, read from the start (a dup would share the read
            // position and skip what the previous batch left).
            let mut stream = rustix::fs::Dir::read_from(&self.fd)
                .map_err(|e| Error::io(&self.path, e.into()))?;
            while let Some(entry) = stream.read() {
                let entry = entry.map_err(|e| Error::io(&self.path, e.into()))?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                names.push((
                    OsStr::from_bytes(name).to_owned(),
                    entry.file_type() == FileType::Directory,
                ));
                if names.len() >= 4096 {
                    break;
                }
            }
            if names.is_empty() {
                return Ok(());
            }
            for (name, _is_dir) in names {
                let name = name.to_string_lossy().into_owned();
                // The type from the directory stream may be unknown or stale: ask again.
                match self.kind_of(&name)? {
                    None => {}
                    Some(Kind::Dir) => {
                        if let Some(inner) = self.child(&name)? {
                            inner.empty_out(depth + 1)?;
                        }
                        self.unlink(&name, true)?;
                    }
                    Some(_) => self.unlink(&name, false)?,
                }
            }
        }
    }

    /// Renames `from` to `to`, both below this tree (replacing a file or an empty
    /// directory at `to`, as rename does). Parents are walked confined.
    pub fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), Error> {
        let (from_dir, from_name) = self
            .parent(from)?
            .ok_or_else(|| self.refused(from.as_str(), "its directory does not exist"))?;
        let (to_dir, to_name) = self
            .parent(to)?
            .ok_or_else(|| self.refused(to.as_str(), "its directory does not exist"))?;
        rustix::fs::renameat(
            &from_dir.fd,
            from_name.as_str(),
            &to_dir.fd,
            to_name.as_str(),
        )
        .map_err(|e| Error::io(self.display(from), e.into()))
    }

    /// Exchanges `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`).
    pub fn exchange(&self, a: &RelPath, b: &RelPath) -> Result<(), std::io::Error> {
        let missing = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let confined = |e: Error| std::io::Error::other(e.to_string());
        let (a_dir, a_name) = self.parent(a).map_err(confined)?.ok_or_else(missing)?;
        let (b_dir, b_name) = self.parent(b).map_err(confined)?.ok_or_else(missing)?;
        rustix::fs::renameat_with(
            &a_dir.fd,
            a_name.as_str(),
            &b_dir.fd,
            b_name.as_str(),
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(Into::into)
    }

    /// fsyncs the directory itself (its entries: renames and removals in it).
    pub fn sync(&self) -> Result<(), Error> {
        rustix::fs::fsync(&self.fd).map_err(|e| Error::io(&self.path, e.into()))
    }
}

/// What stands where a directory was wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    Missing,
    Symlink,
    NotDir,
    MountPoint,
}

impl Blocked {
    pub fn reason(self) -> &'static str {
        match self {
            Blocked::Missing => "it does not exist",
            Blocked::Symlink => "it is a symlink (never followed)",
            Blocked::NotDir => "it is not a directory",
            Blocked::MountPoint => "it is a mount point (never crossed)",
        }
    }
}

/// A name directly inside a directory: one plain component.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        Err("it is not a plain name")
    } else {
        Ok(())
    }
}

/// The inode flags that stop a rename, a removal or a change of metadata
/// (`chattr +i`, `chattr +a`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pinned {
    pub immutable: bool,
    pub append_only: bool,
}

impl Pinned {
    pub fn any(self) -> bool {
        self.immutable || self.append_only
    }

    /// `immutable` or `append-only`, for messages.
    pub fn describe(self) -> &'static str {
        if self.immutable {
            "immutable (chattr +i)"
        } else {
            "append-only (chattr +a)"
        }
    }
}

/// `FS_IOC_GETFLAGS` of an open file or directory.
fn flags_of(fd: impl AsFd, path: &Path) -> Result<Pinned, Error> {
    match rustix::fs::ioctl_getflags(fd) {
        Ok(flags) => Ok(Pinned {
            immutable: flags.contains(rustix::fs::IFlags::IMMUTABLE),
            append_only: flags.contains(rustix::fs::IFlags::APPEND),
        }),
        // A file system without inode flags has none set.
        Err(Errno::NOTTY) | Err(Errno::OPNOTSUPP) | Err(Errno::INVAL) | Err(Errno::NOSYS) => {
            Ok(Pinned::default())
        }
        Err(e) => Err(Error::io(path, e.into())),
    }
}

/// What a name inside a [`Tree`] is, not following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub ino: u64,
    pub nlink: u32,
    pub size: u64,
    /// Another file system is mounted here.
    pub mount_point: bool,
    /// The inode flags, when `statx` reports them (else [`Tree::pinned`] asks).
    pinned: Option<Pinned>,
}

/// Free space and names of a file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes available (`f_bavail * f_frsize`: without the reserve of root, to be safe).
    pub bytes: u64,
    /// Inodes available (`f_favail`); `None` when the file system does not count them.
    pub inodes: Option<u64>,
    /// The longest name (`f_namemax`).
    pub name_max: u64,
    pub block: u64,
}

impl Tree {
    /// Opens the directory `name` directly inside this one (`None` if it does not
    /// exist); a symlink, a non-directory or a mount point there is refused.
    pub fn dir(&self, name: &str) -> Result<Option<Tree>, Error> {
        self.child(name)
    }

    /// What `name` (directly inside this directory) is, not following it; `None` if it
    /// does not exist.
    pub fn stat_at(&self, name: &str) -> Result<Option<Stat>, Error> {
        check_name(name).map_err(|reason| self.refused(name, reason))?;
        let st = match rustix::fs::statx(
            &self.fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
            StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
        ) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(Error::io(self.path.join(name), e.into())),
        };
        let kind = match FileType::from_raw_mode(st.stx_mode.into()) {
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::RegularFile => Kind::File,
            _ => Kind::Other,
        };
        let mount_point = if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
            matches!(self.mount, MountId::Id(id) if id != st.stx_mnt_id)
        } else {
            matches!(self.mount, MountId::Device(major, minor)
                if (major, minor) != (st.stx_dev_major, st.stx_dev_minor))
        };
        use rustix::fs::StatxAttributes as A;
        let known = A::IMMUTABLE | A::APPEND;
        let pinned = st.stx_attributes_mask.contains(known).then(|| Pinned {
            immutable: st.stx_attributes.contains(A::IMMUTABLE),
            append_only: st.stx_attributes.contains(A::APPEND),
        });
        Ok(Some(Stat {
            kind,
            mode: u32::from(st.stx_mode) & 0o7777,
            uid: st.stx_uid,
            gid: st.stx_gid,
            mtime: st.stx_mtime.tv_sec,
            ino: st.stx_ino,
            nlink: st.stx_nlink,
            size: st.stx_size,
            mount_point,
            pinned,
        }))
    }

    /// What `rel` is (its parents walked confined); `None` if it or a parent does not
    /// exist.
    pub fn stat(&self, rel: &RelPath) -> Result<Option<Stat>, Error> {
        match self.parent(rel)? {
            Some((dir, name)) => dir.stat_at(&name),
            None => Ok(None),
        }
    }

    /// This directory's own inode flags.
    pub fn pinned_self(&self) -> Result<Pinned, Error> {
        flags_of(&self.fd, &self.path)
    }

    /// Whether `other` is on the same mount as this tree (a rename between them works).
    pub fn same_mount(&self, other: &Tree) -> bool {
        self.mount == other.mount
    }

    /// This directory's own metadata.
    pub fn stat_self(&self) -> Result<Stat, Error> {
        let st = rustix::fs::fstat(&self.fd).map_err(|e| Error::io(&self.path, e.into()))?;
        let mut stat = Stat {
            kind: Kind::Dir,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            ino: st.st_ino,
            nlink: st.st_nlink as u32,
            size: st.st_size as u64,
            mount_point: false,
            pinned: None,
        };
        stat.pinned = Some(flags_of(&self.fd, &self.path)?);
        Ok(stat)
    }

    /// The inode flags of `name` (stat by [`Self::stat_at`]): from `statx` when it
    /// reported them, else `FS_IOC_GETFLAGS` on the file or directory opened without
    /// following it (other kinds cannot carry them).
    pub fn pinned(&self, name: &str, stat: &Stat) -> Result<Pinned, Error> {
        if let Some(pinned) = stat.pinned {
            return Ok(pinned);
        }
        if !matches!(stat.kind, Kind::File | Kind::Dir) || stat.mount_point {
            return Ok(Pinned::default());
        }
        check_name(name).map_err(|reason| self.refused(name, reason))?;
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Pinned::default()),
            Err(e) => return Err(Error::io(self.path.join(name), e.into())),
        };
        flags_of(&fd, &self.path.join(name))
    }

    /// Renames `name` to `to_name` in the directory `to` (both confined handles, so
    /// nothing is resolved through a path). With `no_replace`, an existing `to_name` is an
    /// error instead of being replaced.
    pub fn rename_at(
        &self,
        name: &str,
        to: &Tree,
        to_name: &str,
        no_replace: bool,
    ) -> Result<(), Error> {
        check_name(name).map_err(|reason| self.refused(name, reason))?;
        check_name(to_name).map_err(|reason| to.refused(to_name, reason))?;
        let flags = if no_replace {
            rustix::fs::RenameFlags::NOREPLACE
        } else {
            rustix::fs::RenameFlags::empty()
        };
        rustix::fs::renameat_with(&self.fd, name, &to.fd, to_name, flags)
            .map_err(|e| Error::io(self.path.join(name), e.into()))
    }

    /// Exchanges `name` here and `other_name` in `other` atomically
    /// (`renameat2(RENAME_EXCHANGE)`): both must exist; either may be a directory.
    pub fn exchange_at(&self, name: &str, other: &Tree, other_name: &str) -> Result<(), Error> {
        check_name(name).map_err(|reason| self.refused(name, reason))?;
        check_name(other_name).map_err(|reason| other.refused(other_name, reason))?;
        rustix::fs::renameat_with(
            &self.fd,
            name,
            &other.fd,
            other_name,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| Error::io(self.path.join(name), e.into()))
    }

    /// Makes the directory `name` here (mode before the umask); an existing one is an
    /// error.
    pub fn mkdir_at(&self, name: &str, mode: u32) -> Result<(), Error> {
        check_name(name).map_err(|reason| self.refused(name, reason))?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode & 0o7777))
            .map_err(|e| Error::io(self.path.join(name), e.into()))
    }

    /// Removes the empty directory `name` here.
    pub fn rmdir_at(&self, name: &str) -> Result<(), Error> {
        check_name(name).map_err(|reason| self.refused(name, reason))?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)
            .map_err(|e| Error::io(self.path.join(name), e.into()))
    }

    /// Removes `name` here if it is not a directory; `false` if it was not there.
    pub fn unlink_at(&self, name: &str) -> Result<bool, Error> {
        check_name(name).map_err(|reason| self.refused(name, reason))?;
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io(self.path.join(name), e.into())),
        }
    }

    /// Makes `to_name` in `to` another hard link of `name` here (a symlink is linked
    /// itself, never followed).
    pub fn hard_link_at(&self, name: &str, to: &Tree, to_name: &str) -> Result<(), Error> {
        check_name(name).map_err(|reason| self.refused(name, reason))?;
        check_name(to_name).map_err(|reason| to.refused(to_name, reason))?;
        rustix::fs::linkat(&self.fd, name, &to.fd, to_name, AtFlags::empty())
            .map_err(|e| Error::io(to.path.join(to_name), e.into()))
    }

    /// The target of the symlink `rel` (its parents walked confined); `None` if it does
    /// not exist.
    pub fn read_link(&self, rel: &RelPath) -> Result<Option<PathBuf>, Error> {
        let Some((dir, name)) = self.parent(rel)? else {
            return Ok(None);
        };
        match rustix::fs::readlinkat(&dir.fd, name.as_str(), Vec::new()) {
            Ok(target) => Ok(Some(PathBuf::from(OsStr::from_bytes(target.as_bytes())))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io(self.display(rel), e.into())),
        }
    }

    /// Points the symlink `rel` at `target`, atomically (a new link renamed over it,
    /// the directory fsynced). Its directory must exist.
    pub fn replace_symlink(&self, rel: &RelPath, target: &Path) -> Result<(), Error> {
        let (dir, name) = self
            .parent(rel)?
            .ok_or_else(|| self.refused(rel.as_str(), "its directory does not exist"))?;
        // Unique to this process, thread and call: two writers never share it.
        let tmp = crate::fsutil::temp_file_name(&name);
        rustix::fs::symlinkat(target, &dir.fd, tmp.as_str())
            .map_err(|e| Error::io(self.display(rel), e.into()))?;
        dir.rename_at(&tmp, &dir, &name, false)?;
        dir.sync()
    }

    /// The content of the file `rel` (opened without following a symlink, its parents
    /// walked confined); `None` if it does not exist.
    pub fn read(&self, rel: &RelPath) -> Result<Option<Vec<u8>>, Error> {
        let Some((dir, name)) = self.parent(rel)? else {
            return Ok(None);
        };
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(&dir.fd, name.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => {
                return Err(self.refused(rel.as_str(), "it is a symlink (never followed)"));
            }
            Err(e) => return Err(Error::io(self.display(rel), e.into())),
        };
        let mut file = std::fs::File::from(fd);
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut data)
            .map_err(|e| Error::io(self.display(rel), e))?;
        Ok(Some(data))
    }

    /// Opens the lock file `name` directly in this directory for `flock`, creating it
    /// (mode 0600) if missing: a regular file, never through a symlink; a symlink, a
    /// directory or anything else there is refused (nothing is created then).
    pub fn open_lock_file(&self, name: &str) -> Result<std::fs::File, Error> {
        check_name(name).map_err(|reason| self.refused(name, reason))?;
        let flags = OFlags::RDWR
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NOCTTY
            | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => {
                return Err(self.refused(name, "it is a symlink (never followed), not a lock file"));
            }
            Err(Errno::ISDIR) => {
                return Err(self.refused(name, "it is a directory, not a lock file"));
            }
            Err(e) => return Err(Error::io(self.path.join(name), e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(self.path.join(name), e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(self.refused(name, "it is not a regular file, not a lock file"));
        }
        Ok(std::fs::File::from(fd))
    }

    /// The JSON state file `rel`, a `what` (see [`crate::json_state`]); `None` if it
    /// does not exist.
    pub fn load_json<T: serde::de::DeserializeOwned>(
        &self,
        rel: &RelPath,
        what: &str,
    ) -> Result<Option<T>, Error> {
        self.read(rel)?
            .map(|bytes| {
                crate::json_state::decode(&self.display(rel), what, &bytes).map_err(Error::from)
            })
            .transpose()
    }

    /// Replaces the JSON state file `rel` with `value` (see [`crate::json_state`]).
    pub fn save_json<T: Serialize + ?Sized>(&self, rel: &RelPath, value: &T) -> Result<(), Error> {
        self.write_atomic(rel, &crate::json_state::encode(value))
    }

    /// Replaces the file `rel` with `data` (mode 0644) atomically and durably: written to
    /// a temporary name in its directory, fsynced, renamed over, the directory fsynced.
    /// Missing parents are created; a symlink or mount point on the way is refused, and
    /// a symlink at `rel` itself is replaced, not written through.
    /// This is the root-confined variant of `fsutil::write_atomic` (the same steps
    /// through `openat`), for every write below a system root; it stays separate.
    pub fn write_atomic(&self, rel: &RelPath, data: &[u8]) -> Result<(), Error> {
        let (dir_part, name) = rel.split_last();
        let dir = match dir_part {
            Some(d) => self.create_dir_all(&RelPath::new(d).map_err(|e| Error::Refused {
                path: self.display(rel),
                reason: e.to_string(),
            })?)?,
            None => self.walk(std::iter::empty())?.expect("the tree itself"),
        };
        // Unique to this process, thread and call: two writers never share it.
        let tmp = crate::fsutil::temp_file_name(name);
        let result = (|| -> std::io::Result<()> {
            let fd = rustix::fs::openat(
                &dir.fd,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
            let mut file = std::fs::File::from(fd);
            std::io::Write::write_all(&mut file, data)?;
            file.sync_all()?;
            rustix::fs::renameat(&dir.fd, tmp.as_str(), &dir.fd, name)?;
            rustix::fs::fsync(&dir.fd)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&dir.fd, tmp.as_str(), AtFlags::empty());
        }
        result.map_err(|e| Error::io(self.display(rel), e))
    }

    /// Sets this directory's owner (when `owner` is given) and then its mode (chown
    /// clears set-id bits), through its descriptor.
    pub fn set_owner_mode(&self, owner: Option<(u32, u32)>, mode: u32) -> Result<(), Error> {
        let err = |e: Errno| Error::io(&self.path, e.into());
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(
                &self.fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(err)?;
        }
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode & 0o7777)).map_err(err)
    }

    /// Sets this directory's modification time (seconds), leaving its access time.
    pub fn set_mtime(&self, mtime: i64) -> Result<(), Error> {
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
        };
        rustix::fs::futimens(&self.fd, &times).map_err(|e| Error::io(&self.path, e.into()))
    }

    /// Free space, inodes and the longest name on this tree's file system.
    pub fn space(&self) -> Result<Space, Error> {
        let st = rustix::fs::fstatvfs(&self.fd).map_err(|e| Error::io(&self.path, e.into()))?;
        Ok(Space {
            bytes: st.f_bavail.saturating_mul(st.f_frsize),
            inodes: (st.f_files != 0).then_some(st.f_favail),
            name_max: st.f_namemax,
            block: st.f_frsize.max(512),
        })
    }

    /// `syncfs` of this tree's file system.
    pub fn sync_fs(&self) -> Result<(), Error> {
        rustix::fs::syncfs(&self.fd).map_err(|e| Error::io(&self.path, e.into()))
    }

    /// Calls `visit` for everything below this directory (depth first, a directory
    /// before what it holds), with its path relative to here and its [`Stat`]. A mount
    /// point or anything `visit` refuses stops the walk; nothing on another mount and
    /// nothing behind a symlink is visited. `visit` returns whether to enter a directory.
    pub fn walk_below(&self, visit: &mut Visit<'_>) -> Result<(), Error> {
        self.walk_below_at("", visit, 0)
    }

    fn walk_below_at(&self, rel: &str, visit: &mut Visit<'_>, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(self.refused("", "it is nested too deeply"));
        }
        let dup = self.fd.try_clone().map_err(|e| Error::io(&self.path, e))?;
        let mut stream = rustix::fs::Dir::new(dup).map_err(|e| Error::io(&self.path, e.into()))?;
        let mut names = Vec::new();
        while let Some(entry) = stream.read() {
            let entry = entry.map_err(|e| Error::io(&self.path, e.into()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push(String::from_utf8_lossy(name).into_owned());
        }
        names.sort();
        for name in names {
            let Some(stat) = self.stat_at(&name)? else {
                continue;
            };
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if stat.mount_point {
                return Err(self.refused(&name, Blocked::MountPoint.reason()));
            }
            let enter = visit(self, &name, &path, &stat)?;
            if enter
                && stat.kind == Kind::Dir
                && let Some(inner) = self.child(&name)?
            {
                inner.walk_below_at(&path, visit, depth + 1)?;
            }
        }
        Ok(())
    }
}

/// What [`Tree::walk_below`] calls for each entry: the directory holding it, its name,
/// its path below where the walk started, its [`Stat`]; returns whether to enter it.
pub type Visit<'v> = dyn FnMut(&Tree, &str, &str, &Stat) -> Result<bool, Error> + 'v;

/// Opens directories below a [`Tree`] one after another, keeping the chain to the last
/// one open, so that operations on paths in tree order open each directory once. Every
/// directory is opened confined ([`Tree::dir`]). Whoever renames or removes a directory
/// tells the cursor ([`Self::forget`]), so that no stale handle is used for its path.
pub struct Cursor<'t> {
    root: &'t Tree,
    chain: Vec<(String, Tree)>,
}

impl<'t> Cursor<'t> {
    pub fn new(root: &'t Tree) -> Self {
        Cursor {
            root,
            chain: Vec::new(),
        }
    }

    /// The directory `dir` (relative to the root; `None` or `""`: the root itself), or
    /// what stands in its way and where.
    pub fn dir(&mut self, dir: Option<&str>) -> Result<Result<&Tree, (String, Blocked)>, Error> {
        let wanted: Vec<&str> = match dir {
            None | Some("") => Vec::new(),
            Some(d) => d.split('/').collect(),
        };
        let common = self
            .chain
            .iter()
            .zip(&wanted)
            .take_while(|((have, _), want)| have == *want)
            .count();
        self.chain.truncate(common);
        for (i, name) in wanted.iter().enumerate().skip(common) {
            let here = self.chain.last().map_or(self.root, |(_, t)| t);
            match here.child_or(name, Mounts::Stay)? {
                Ok(tree) => self.chain.push(((*name).to_owned(), tree)),
                Err(blocked) => return Ok(Err((wanted[..=i].join("/"), blocked))),
            }
        }
        Ok(Ok(self.chain.last().map_or(self.root, |(_, t)| t)))
    }

    /// [`Self::dir`], refusing what stands in the way (`None` if part is missing).
    pub fn open(&mut self, dir: Option<&str>) -> Result<Option<&Tree>, Error> {
        let root = self.root;
        match self.dir(dir)? {
            Ok(tree) => Ok(Some(tree)),
            Err((_, Blocked::Missing)) => Ok(None),
            Err((at, blocked)) => Err(root.refused(&at, blocked.reason())),
        }
    }

    /// Drops the handles of `path` and of everything below it (it was renamed or
    /// removed).
    pub fn forget(&mut self, path: &str) {
        let depth = path.split('/').count();
        let matches = self.chain.len() >= depth
            && self
                .chain
                .iter()
                .zip(path.split('/'))
                .all(|((have, _), want)| have == want);
        if matches {
            self.chain.truncate(depth - 1);
        }
    }
}

impl From<Tree> for OwnedFd {
    fn from(tree: Tree) -> OwnedFd {
        tree.fd
    }
}

impl AsFd for Tree {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The mount points strictly below the directory `dir`, relative to it, from
/// `/proc/self/mountinfo` (so, as this process sees them), sorted.
pub fn mount_points_below(dir: &Path) -> Result<Vec<String>, Error> {
    let dir = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    let table = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(table) => table,
        // No /proc (a minimal container): nothing can be told apart, nothing is listed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("/proc/self/mountinfo", e)),
    };
    Ok(mount_points_in(&table, &dir))
}

/// [`mount_points_below`] on the text of a `mountinfo` table.
fn mount_points_in(table: &str, dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = table
        .lines()
        // Field 5 is the mount point, with space, tab, newline and backslash escaped
        // in octal.
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter_map(|point| {
            let rest = point.strip_prefix(dir).ok()?.to_str()?.to_owned();
            (!rest.is_empty()).then_some(rest)
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// A field of `/proc/self/mountinfo` as the path it names: the kernel escapes space,
/// tab, newline and backslash in octal (`\040` is a space).
pub fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = field.get(i + 1..i + 4)
            && let Ok(value) = u8::from_str_radix(octal, 8)
        {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // The kernel's bytes, not a lossy copy: a mount point may have any name.
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Removes `path` and everything below it without following a symlink or crossing a
/// mount anywhere below `path`'s parent, which is taken as given. For callers that hold
/// a path they derived from the root themselves.
pub fn remove_all(path: &Path) -> Result<bool, Error> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::Refused {
            path: path.to_owned(),
            reason: "it has no parent directory".into(),
        });
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let Some(tree) = Tree::open_existing(parent)? else {
        return Ok(false);
    };
    let name = RelPath::new(name.to_string_lossy().into_owned()).map_err(|e| Error::Refused {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    tree.remove_all(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    #[test]
    fn relative_paths_that_could_leave_the_tree_are_refused() {
        for bad in [
            "", "/etc", "a/../b", "..", "./a", "a/./b", "a//b", "a/", "a\0b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a",
            "a/b",
            "var/lib/release-upgrader",
            "..a",
            "a..",
            ".hidden",
        ] {
            assert_eq!(RelPath::new(good).unwrap().as_str(), good);
        }
        assert!(RelPath::new("a".repeat(5000)).is_err());
    }

    #[test]
    fn state_files_cannot_smuggle_a_bad_path() {
        let ok: Vec<RelPath> = serde_json::from_str(r#"["a/b"]"#).unwrap();
        assert_eq!(ok[0].as_str(), "a/b");
        for bad in [r#"["/etc"]"#, r#"["../x"]"#, r#"["a/../../x"]"#] {
            let err = serde_json::from_str::<Vec<RelPath>>(bad).unwrap_err();
            assert!(err.to_string().contains("not a path inside"), "{err}");
        }
    }

    #[test]
    fn an_absolute_path_is_accepted_only_below_its_base() {
        let base = Path::new("/r/var/lib/release-upgrader");
        assert_eq!(
            RelPath::below(base, Path::new("/r/var/lib/release-upgrader/helpers.new"))
                .unwrap()
                .as_str(),
            "helpers.new"
        );
        for outside in [
            "/var/lib/release-upgrader/helpers.new",
            "/r/var/lib/release-upgrader",
            "/r/var/lib/release-upgrader/../../../etc",
            "relative/helpers.new",
        ] {
            assert!(
                RelPath::below(base, Path::new(outside)).is_err(),
                "{outside}"
            );
        }
    }

    #[test]
    fn remove_all_removes_a_tree_and_leaves_its_siblings() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
        std::fs::write(dir.path().join("a/b/c/f"), "x").unwrap();
        std::fs::write(dir.path().join("a/g"), "x").unwrap();
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        assert!(tree.remove_all(&RelPath::new("a").unwrap()).unwrap());
        assert!(!dir.path().join("a").exists());
        assert!(dir.path().join("keep").exists());
        assert!(!tree.remove_all(&RelPath::new("a").unwrap()).unwrap());
        assert!(!tree.remove_all(&RelPath::new("x/y/z").unwrap()).unwrap());
    }

    #[test]
    fn remove_all_removes_symlinks_without_following_them() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "data").unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        symlink(outside.path(), dir.path().join("a/link")).unwrap();
        symlink(outside.path(), dir.path().join("top")).unwrap();
        tree.remove_all(&RelPath::new("a").unwrap()).unwrap();
        tree.remove_all(&RelPath::new("top").unwrap()).unwrap();
        assert_eq!(
            std::fs::read(outside.path().join("precious")).unwrap(),
            b"data"
        );
        assert!(std::fs::symlink_metadata(dir.path().join("top")).is_err());
    }

    #[test]
    fn a_symlinked_parent_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("victim")).unwrap();
        std::fs::write(outside.path().join("victim/f"), "data").unwrap();
        symlink(outside.path(), dir.path().join("var")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let err = tree
            .remove_all(&RelPath::new("var/victim").unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(outside.path().join("victim/f").exists());
        let err = tree
            .rename(
                &RelPath::new("var/victim").unwrap(),
                &RelPath::new("gone").unwrap(),
            )
            .unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        assert!(outside.path().join("victim/f").exists());
        let err = tree
            .create_dir_all(&RelPath::new("var/new").unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        assert!(!outside.path().join("new").exists());
    }

    #[test]
    fn rename_and_create_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let made = tree
            .create_dir_all(&RelPath::new("x/y/z").unwrap())
            .unwrap();
        assert_eq!(made.path(), dir.path().join("x/y/z"));
        std::fs::write(dir.path().join("x/y/z/f"), "1").unwrap();
        tree.rename(
            &RelPath::new("x/y/z/f").unwrap(),
            &RelPath::new("x/g").unwrap(),
        )
        .unwrap();
        assert_eq!(std::fs::read(dir.path().join("x/g")).unwrap(), b"1");
        assert_eq!(
            tree.kind(&RelPath::new("x/g").unwrap()).unwrap(),
            Some(Kind::File)
        );
        assert_eq!(tree.kind(&RelPath::new("x/nope").unwrap()).unwrap(), None);
    }

    #[test]
    fn operations_on_names_stay_in_their_directories() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("f"), "f").unwrap();
        std::fs::write(dir.path().join("d/g"), "g").unwrap();
        let d = tree.dir("d").unwrap().unwrap();
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(matches!(
                tree.rename_at(bad, &d, "x", false),
                Err(Error::Refused { .. })
            ));
            assert!(tree.stat_at(bad).is_err(), "{bad:?}");
        }
        // No replace: an existing name is an error, and nothing moved.
        let err = tree.rename_at("f", &d, "g", true).unwrap_err();
        assert!(
            matches!(&err, Error::Format(ru_format::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{err:?}"
        );
        tree.rename_at("f", &d, "f2", true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("d/f2")).unwrap(), b"f");
        // Exchange a file and a directory.
        std::fs::create_dir(dir.path().join("e")).unwrap();
        d.exchange_at("g", &tree, "e").unwrap();
        assert!(dir.path().join("d/g").is_dir());
        assert_eq!(std::fs::read(dir.path().join("e")).unwrap(), b"g");
        // Hard links (of a symlink: the symlink itself).
        symlink("/nowhere", dir.path().join("l")).unwrap();
        tree.hard_link_at("l", &d, "l2").unwrap();
        let (a, b) = (
            tree.stat_at("l").unwrap().unwrap(),
            d.stat_at("l2").unwrap().unwrap(),
        );
        assert_eq!((a.kind, a.ino), (Kind::Symlink, b.ino));
        assert_eq!(a.nlink, 2);
        tree.mkdir_at("m", 0o700).unwrap();
        assert!(tree.mkdir_at("m", 0o700).is_err());
        assert_eq!(tree.stat_at("m").unwrap().unwrap().kind, Kind::Dir);
        tree.rmdir_at("m").unwrap();
        assert!(tree.stat_at("m").unwrap().is_none());
        assert!(tree.unlink_at("l").unwrap());
        assert!(!tree.unlink_at("l").unwrap());
        assert!(!tree.stat_at("d").unwrap().unwrap().mount_point);
    }

    #[test]
    fn files_are_read_and_written_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "data").unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let rel = |p: &str| RelPath::new(p).unwrap();
        tree.write_atomic(&rel("a/b/state.json"), b"one").unwrap();
        tree.write_atomic(&rel("a/b/state.json"), b"two").unwrap();
        assert_eq!(tree.read(&rel("a/b/state.json")).unwrap().unwrap(), b"two");
        assert_eq!(tree.read(&rel("a/b/none")).unwrap(), None);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        // A symlink at the name is replaced, not written through; nor read through.
        symlink(outside.path().join("precious"), dir.path().join("a/link")).unwrap();
        let err = tree.read(&rel("a/link")).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        tree.write_atomic(&rel("a/link"), b"mine").unwrap();
        assert_eq!(
            std::fs::read(outside.path().join("precious")).unwrap(),
            b"data"
        );
        // A symlinked directory on the way is refused.
        symlink(outside.path(), dir.path().join("out")).unwrap();
        let err = tree.write_atomic(&rel("out/precious"), b"x").unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        assert!(tree.read(&rel("out/precious")).is_err());
        // Symlinks themselves.
        tree.replace_symlink(&rel("a/active"), Path::new("/slots/a"))
            .unwrap();
        tree.replace_symlink(&rel("a/active"), Path::new("/slots/b"))
            .unwrap();
        assert_eq!(
            tree.read_link(&rel("a/active")).unwrap().unwrap(),
            Path::new("/slots/b")
        );
        assert_eq!(tree.read_link(&rel("a/none")).unwrap(), None);
    }

    #[test]
    fn a_cursor_reuses_open_directories_and_says_what_blocks_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
        std::fs::write(dir.path().join("a/file"), "x").unwrap();
        symlink("b", dir.path().join("a/link")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let mut cursor = Cursor::new(&tree);
        let ino = |t: &Tree| t.stat_self().unwrap().ino;
        let c = ino(cursor.dir(Some("a/b/c")).unwrap().unwrap());
        assert_eq!(
            c,
            std::fs::metadata(dir.path().join("a/b/c")).unwrap().ino()
        );
        assert_eq!(cursor.chain.len(), 3);
        let b = ino(cursor.dir(Some("a/b")).unwrap().unwrap());
        assert_eq!(b, std::fs::metadata(dir.path().join("a/b")).unwrap().ino());
        for (path, at, blocked) in [
            ("a/link/c", "a/link", Blocked::Symlink),
            ("a/file/x", "a/file", Blocked::NotDir),
            ("a/none/x", "a/none", Blocked::Missing),
        ] {
            let Err((where_, what)) = cursor.dir(Some(path)).unwrap() else {
                panic!("{path} opened");
            };
            assert_eq!((where_.as_str(), what), (at, blocked));
        }
        assert!(cursor.open(Some("a/none")).unwrap().is_none());
        assert!(matches!(
            cursor.open(Some("a/link")),
            Err(Error::Refused { .. })
        ));
        // A directory renamed away and made again: after `forget`, the new one.
        cursor.dir(Some("a/b/c")).unwrap().unwrap();
        std::fs::rename(dir.path().join("a/b"), dir.path().join("moved")).unwrap();
        std::fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
        cursor.forget("a/b");
        let now = ino(cursor.dir(Some("a/b/c")).unwrap().unwrap());
        assert_eq!(
            now,
            std::fs::metadata(dir.path().join("a/b/c")).unwrap().ino()
        );
        assert_ne!(now, c);
        // Forgetting a path not held changes nothing.
        cursor.forget("x/y");
        assert_eq!(cursor.chain.len(), 3);
        assert_eq!(ino(cursor.dir(None).unwrap().unwrap()), ino(&tree));
    }

    #[test]
    fn walk_below_visits_everything_once_and_not_behind_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), "f").unwrap();
        symlink(outside.path(), dir.path().join("a/out")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let mut seen = Vec::new();
        tree.walk_below(&mut |_, _, path, st| {
            seen.push(format!("{path} {:?}", st.kind));
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, ["a Dir", "a/b Dir", "a/b/f File", "a/out Symlink"]);
    }

    #[test]
    fn directory_metadata_and_inode_flags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let d = tree.dir("d").unwrap().unwrap();
        d.set_owner_mode(None, 0o705).unwrap();
        d.set_mtime(1_000_000).unwrap();
        let st = tree.stat_at("d").unwrap().unwrap();
        assert_eq!((st.mode, st.mtime), (0o705, 1_000_000));
        assert!(!tree.pinned("d", &st).unwrap().any());
        assert!(tree.space().unwrap().name_max >= 255);
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        std::fs::write(dir.path().join("f"), "f").unwrap();
        let file = std::fs::File::open(dir.path().join("f")).unwrap();
        let Ok(flags) = rustix::fs::ioctl_getflags(&file) else {
            eprintln!("skipped: no inode flags here");
            return;
        };
        for (flag, immutable) in [
            (rustix::fs::IFlags::IMMUTABLE, true),
            (rustix::fs::IFlags::APPEND, false),
        ] {
            if rustix::fs::ioctl_setflags(&file, flags | flag).is_err() {
                eprintln!("skipped: cannot set inode flags here");
                return;
            }
            let st = tree.stat_at("f").unwrap().unwrap();
            let pinned = tree.pinned("f", &st);
            let by_ioctl = {
                let mut st = st;
                st.pinned = None;
                tree.pinned("f", &st)
            };
            rustix::fs::ioctl_setflags(&file, flags).unwrap();
            let (pinned, by_ioctl) = (pinned.unwrap(), by_ioctl.unwrap());
            assert_eq!(pinned, by_ioctl);
            assert_eq!(
                (pinned.immutable, pinned.append_only),
                (immutable, !immutable)
            );
        }
    }

    #[test]
    fn remove_dir_removes_only_an_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("full/inner")).unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        symlink(dir.path().join("empty"), dir.path().join("link")).unwrap();
        let rel = |p: &str| RelPath::new(p).unwrap();
        assert!(!tree.remove_dir(&rel("full")).unwrap());
        assert!(!tree.remove_dir(&rel("file")).unwrap());
        assert!(!tree.remove_dir(&rel("link")).unwrap());
        assert!(!tree.remove_dir(&rel("missing/x")).unwrap());
        assert!(tree.remove_dir(&rel("full/inner")).unwrap());
        assert!(tree.remove_dir(&rel("empty")).unwrap());
        assert!(dir.path().join("full").is_dir() && dir.path().join("file").is_file());
        assert!(std::fs::symlink_metadata(dir.path().join("link")).is_ok());
        let err = tree.remove_dir(&rel("link/x")).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    }

    #[test]
    fn remove_dir_all_refuses_what_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "data").unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        symlink(outside.path(), dir.path().join("staging")).unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let rel = |p: &str| RelPath::new(p).unwrap();
        let err = tree.remove_dir_all(&rel("staging")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(dir.path().join("staging").exists());
        assert!(outside.path().join("precious").exists());
        let err = tree.remove_dir_all(&rel("file")).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        assert!(!tree.remove_dir_all(&rel("missing")).unwrap());
        std::fs::create_dir_all(dir.path().join("d/e")).unwrap();
        assert!(tree.remove_dir_all(&rel("d")).unwrap());
        assert!(!dir.path().join("d").exists());
    }

    #[test]
    fn entries_lists_names_and_kinds_without_following() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        symlink("/etc", dir.path().join("l")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let expected = vec![
            ("d".to_owned(), Kind::Dir),
            ("f".to_owned(), Kind::File),
            ("l".to_owned(), Kind::Symlink),
        ];
        assert_eq!(tree.entries().unwrap(), expected);
        // Its own read position: listing twice lists everything twice.
        assert_eq!(tree.entries().unwrap(), expected);
    }

    #[test]
    fn walking_across_mounts_still_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib")).unwrap();
        symlink(outside.path(), dir.path().join("var/lib/release-upgrader")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let rel = |p: &str| RelPath::new(p).unwrap();
        assert!(
            tree.open_dir_across_mounts(&rel("var/lib"))
                .unwrap()
                .is_some()
        );
        assert!(
            tree.open_dir_across_mounts(&rel("var/nope"))
                .unwrap()
                .is_none()
        );
        let err = tree
            .create_dir_all_across_mounts(&rel("var/lib/release-upgrader"))
            .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        let err = tree
            .open_dir_across_mounts(&rel("var/lib/release-upgrader"))
            .unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        let made = tree.create_dir_all_across_mounts(&rel("usr/lib")).unwrap();
        assert_eq!(made.path(), dir.path().join("usr/lib"));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn remove_all_empties_directories_larger_than_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("big")).unwrap();
        for i in 0..10_000 {
            std::fs::write(dir.path().join(format!("big/{i}")), "").unwrap();
        }
        let tree = Tree::open(dir.path()).unwrap();
        assert!(tree.remove_all(&RelPath::new("big").unwrap()).unwrap());
        assert!(!dir.path().join("big").exists());
    }

    #[test]
    fn write_atomic_replaces_a_file_and_never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, dir.path().join("state.json")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        tree.write_atomic(&RelPath::new("state.json").unwrap(), b"one")
            .unwrap();
        tree.write_atomic(&RelPath::new("state.json").unwrap(), b"two")
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("state.json")).unwrap(),
            b"two"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary left");
    }

    #[test]
    fn mount_points_below_a_directory_are_read_from_mountinfo() {
        let table = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw shared:2 - proc proc rw
40 22 0:30 / /srv/root/tmp rw - tmpfs tmpfs rw
41 22 8:1 /data/home /srv/root/home/my\\040files rw - ext4 /dev/vda rw
42 22 8:1 / /srv/root rw - ext4 /dev/vda rw
43 22 8:1 / /srv/rootless rw - ext4 /dev/vda rw
";
        assert_eq!(
            mount_points_in(table, Path::new("/srv/root")),
            ["home/my files", "tmp"]
        );
        assert!(mount_points_in(table, Path::new("/nowhere")).is_empty());
    }

    /// Mounting needs root and a mount namespace of our own; the test makes one with
    /// `unshare` so that nothing it mounts is ever seen outside it.
    #[test]
    fn remove_all_stops_at_a_mount_point() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to mount");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("precious"), "data").unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        // A child in its own mount namespace bind-mounts the "host" directory into the
        // tree and runs this test binary's helper mode to remove the tree.
        let exe = std::env::current_exe().unwrap();
        let status = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                r#"mount --bind "$1" "$2/dev" && RELEASE_UPGRADER_CONFINE_REMOVE="$2" "$3" --exact confine::tests::remove_helper --nocapture"#,
            )
            .arg("sh")
            .arg(host.path())
            .arg(&root)
            .arg(&exe)
            .status()
            .unwrap();
        assert!(status.success(), "the helper reports the refusal: {status}");
        assert_eq!(
            std::fs::read(host.path().join("precious")).unwrap(),
            b"data",
            "the removal went through the mount"
        );
    }

    /// Run by [`remove_all_stops_at_a_mount_point`] inside its mount namespace.
    #[test]
    fn remove_helper() {
        let Ok(root) = std::env::var("RELEASE_UPGRADER_CONFINE_REMOVE") else {
            return;
        };
        let err = remove_all(Path::new(&root)).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        assert!(err.to_string().contains("mount point"), "{err}");
        assert!(err.to_string().contains("/dev"), "{err}");
    }
}
