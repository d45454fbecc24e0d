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
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
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
        let fd = match rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                return match self.kind_of(name)? {
                    Some(Kind::Symlink) => {
                        Err(self.refused(name, "it is a symlink (never followed)"))
                    }
                    _ => Err(self.refused(name, "it is not a directory")),
                };
            }
            Err(e) => return Err(Error::io(self.path.join(name), e.into())),
        };
        let mount = mount_of(&fd).map_err(|e| Error::io(self.path.join(name), e))?;
        if mount != self.mount && mounts == Mounts::Stay {
            return Err(self.refused(name, "it is a mount point (never crossed)"));
        }
        Ok(Some(Tree {
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

    /// Replaces the file `name` (directly in this directory) with `data`, atomically and
    /// durably: a new temporary file (never opened through a symlink), fsynced, renamed
    /// over `name`, the directory fsynced. A symlink at `name` is replaced, not followed.
    pub fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), Error> {
        use std::io::Write;
        let shown = self.path.join(name);
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(self.refused(name, "it is not a plain file name"));
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = format!("{name}.tmp-{}-{n}", std::process::id());
        let result = (|| -> std::io::Result<()> {
            let fd = rustix::fs::openat(
                &self.fd,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
            let mut file = std::fs::File::from(fd);
            file.write_all(data)?;
            file.sync_all()?;
            drop(file);
            rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
            rustix::fs::fsync(&self.fd)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
        }
        result.map_err(|e| Error::io(shown, e))
    }

    /// fsyncs the directory itself (its entries: renames and removals in it).
    pub fn sync(&self) -> Result<(), Error> {
        rustix::fs::fsync(&self.fd).map_err(|e| Error::io(&self.path, e.into()))
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
    use std::os::unix::fs::symlink;

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
    fn write_atomic_replaces_a_file_and_never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, dir.path().join("state.json")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        tree.write_atomic("state.json", b"one").unwrap();
        tree.write_atomic("state.json", b"two").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("state.json")).unwrap(),
            b"two"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary left");
        for bad in ["", "a/b", "..", "."] {
            assert!(matches!(
                tree.write_atomic(bad, b"x").unwrap_err(),
                Error::Refused { .. }
            ));
        }
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
        // A walk across mounts enters it; what it returns stays in that mount.
        let tree = Tree::open(Path::new(&root)).unwrap();
        let dev = RelPath::new("dev").unwrap();
        assert!(tree.open_dir(&dev).is_err());
        let inside = tree.open_dir_across_mounts(&dev).unwrap().unwrap();
        assert!(inside.kind(&RelPath::new("precious").unwrap()).unwrap() == Some(Kind::File));
    }
}
