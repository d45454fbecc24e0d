//! Writing into the destination without ever following a symlink.
//!
//! Every path is reached from a descriptor of the destination, one component at a time,
//! with `O_NOFOLLOW | O_DIRECTORY`: a symlink or a file where a directory should be
//! stops the walk with an error instead of leading elsewhere. The last component is
//! created with calls that do not follow it either (`O_CREAT | O_EXCL | O_NOFOLLOW`,
//! `mkdirat`, `symlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`), and metadata is set
//! through the open descriptor or with `AT_SYMLINK_NOFOLLOW`. So nothing outside the
//! destination can be written, whatever the archive says, and whatever the extraction
//! logic above missed.
//!
//! Directories are created `0700` and get their mode, owner and mtime at the end,
//! deepest first (tar's delayed restore): their mtime then survives their contents being
//! written, and a read-only directory in the archive does not stop its own extraction.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, UtimensatFlags, fchmod, futimens, mkdirat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, symlinkat};

use super::path::{file_name, parent};
use crate::error::Error;

/// Mode, owner and mtime of an entry.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
}

/// The destination directory, written only beneath its descriptor.
pub struct Tree {
    dest: PathBuf,
    dest_fd: OwnedFd,
    /// Owners are applied only when running as root, as tar does.
    as_root: bool,
    /// The directory of the last entry, kept open: archives list a directory's
    /// entries together, so most entries need no walk at all.
    cached: Option<(String, OwnedFd)>,
    /// Shared with other packages of one transaction: directories they made may exist.
    shared: bool,
}

impl Tree {
    /// Opens `dest`, which must be an existing, empty directory (not a symlink to one).
    pub fn open(dest: &Path) -> Result<Tree, Error> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags(OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW))
            .open(dest)
            .map_err(|e| Error::io(dest, e))?;
        let mut listing = fs_err::read_dir(dest).map_err(|e| Error::io(dest, e))?;
        if listing.next().is_some() {
            return Err(Error::io(
                dest,
                io::Error::new(
                    io::ErrorKind::DirectoryNotEmpty,
                    "the destination of an extraction must be an empty directory",
                ),
            ));
        }
        Ok(Tree {
            dest: dest.to_owned(),
            dest_fd: file.into(),
            as_root: nix::unistd::geteuid().is_root(),
            cached: None,
            shared: false,
        })
    }

    /// Opens `dest` for one more package of a transaction: it may already hold what
    /// earlier packages extracted. Their directories are reused; anything else that is
    /// in the way still fails (files are created `O_EXCL`, nothing is followed).
    pub fn open_shared(dest: &Path) -> Result<Tree, Error> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags(OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW))
            .open(dest)
            .map_err(|e| Error::io(dest, e))?;
        Ok(Tree {
            dest: dest.to_owned(),
            dest_fd: file.into(),
            as_root: nix::unistd::geteuid().is_root(),
            cached: None,
            shared: true,
        })
    }

    /// The destination directory.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }

    /// Creates directory `rel` (its metadata comes in [`Tree::finish`]).
    pub fn mkdir(&mut self, rel: &str) -> Result<(), Error> {
        let path = self.path(rel);
        let parent = self.dir(parent(rel)).map_err(|e| Error::io(&path, e))?;
        match mkdirat(parent, file_name(rel), Mode::S_IRWXU) {
            // A directory an earlier package of the transaction made (never a symlink:
            // the check opens it with O_NOFOLLOW).
            Err(nix::errno::Errno::EEXIST)
                if self.shared && self.open_beneath(rel, OFlag::O_PATH).is_ok() =>
            {
                Ok(())
            }
            other => other.map_err(|e| Error::io(path, e.into())),
        }
    }

    /// Creates regular file `rel`, empty and private until [`Tree::finish_file`].
    pub fn create_file(&mut self, rel: &str) -> Result<File, Error> {
        let path = self.path(rel);
        let parent = self.dir(parent(rel)).map_err(|e| Error::io(&path, e))?;
        openat(
            parent,
            file_name(rel),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map(File::from)
        .map_err(|e| Error::io(path, e.into()))
    }

    /// Gives a written file its owner, mode and mtime, in the order that keeps setuid
    /// bits (chown clears them) and the mtime (chmod does not touch it).
    pub fn finish_file(&self, rel: &str, file: &File, meta: &Meta) -> Result<(), Error> {
        self.apply(file, meta)
            .map_err(|e| Error::io(self.path(rel), e))
    }

    /// Creates symlink `rel` pointing at `target`.
    pub fn symlink(&mut self, rel: &str, target: &str, meta: &Meta) -> Result<(), Error> {
        let path = self.path(rel);
        let as_root = self.as_root;
        let parent = self.dir(parent(rel)).map_err(|e| Error::io(&path, e))?;
        let name = file_name(rel);
        (|| -> io::Result<()> {
            symlinkat(target, parent, name)?;
            if as_root {
                let (uid, gid) = owner(meta)?;
                fchownat(
                    parent,
                    name,
                    Some(uid),
                    Some(gid),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
            }
            utimensat(
                parent,
                name,
                &TimeSpec::UTIME_OMIT,
                &TimeSpec::new(meta.mtime, 0),
                UtimensatFlags::NoFollowSymlink,
            )?;
            Ok(())
        })()
        .map_err(|e| Error::io(path, e))
    }

    /// Creates `rel` as a hard link to the regular file `target` (both under `dest`).
    pub fn hardlink(&mut self, rel: &str, target: &str) -> Result<(), Error> {
        let path = self.path(rel);
        let target_dir = match self.open_beneath(parent(target), OFlag::O_PATH) {
            Ok(Some(fd)) => fd,
            Ok(None) => self
                .dest_fd
                .try_clone()
                .map_err(|e| Error::io(&self.dest, e))?,
            Err(e) => return Err(Error::io(self.path(target), e)),
        };
        let parent = self.dir(parent(rel)).map_err(|e| Error::io(&path, e))?;
        linkat(
            &target_dir,
            file_name(target),
            parent,
            file_name(rel),
            nix::fcntl::AtFlags::empty(),
        )
        .map_err(|e| Error::io(path, e.into()))
    }

    /// Applies the directories' metadata, deepest first.
    pub fn finish<'a>(
        &mut self,
        dirs: impl IntoIterator<Item = (&'a str, Meta)>,
    ) -> Result<(), Error> {
        self.cached = None;
        let mut dirs: Vec<(&str, Meta)> = dirs.into_iter().collect();
        dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.matches('/').count()));
        for (rel, meta) in dirs {
            let dir = self
                .open_beneath(rel, OFlag::O_RDONLY)
                .and_then(|fd| fd.ok_or_else(|| io::Error::other("not a subdirectory")))
                .and_then(|fd| self.apply(&fd, &meta))
                .map_err(|e| Error::io(self.path(rel), e));
            dir?;
        }
        Ok(())
    }

    fn apply(&self, fd: &impl AsFd, meta: &Meta) -> io::Result<()> {
        if self.as_root {
            let (uid, gid) = owner(meta)?;
            fchown(fd, Some(uid), Some(gid))?;
        }
        fchmod(fd, Mode::from_bits_truncate(meta.mode))?;
        futimens(fd, &TimeSpec::UTIME_OMIT, &TimeSpec::new(meta.mtime, 0))?;
        Ok(())
    }

    /// The directory `rel` (`""`: the destination), reusing the cached descriptor.
    fn dir(&mut self, rel: &str) -> io::Result<BorrowedFd<'_>> {
        if rel.is_empty() {
            return Ok(self.dest_fd.as_fd());
        }
        let hit = self.cached.as_ref().is_some_and(|(path, _)| path == rel);
        if !hit {
            let fd = self
                .open_beneath(rel, OFlag::O_PATH)?
                .expect("a non-empty path names a subdirectory");
            self.cached = Some((rel.to_owned(), fd));
        }
        Ok(self.cached.as_ref().expect("just cached").1.as_fd())
    }

    /// Opens directory `rel` beneath the destination, each component with `O_NOFOLLOW`,
    /// starting from the cached directory when it is an ancestor. `None` for `""`.
    fn open_beneath(&self, rel: &str, last: OFlag) -> io::Result<Option<OwnedFd>> {
        if rel.is_empty() {
            return Ok(None);
        }
        let (mut fd, rest): (Option<OwnedFd>, &str) = match &self.cached {
            Some((path, cached))
                if rel
                    .strip_prefix(path.as_str())
                    .is_some_and(|r| r.starts_with('/')) =>
            {
                (Some(cached.try_clone()?), &rel[path.len() + 1..])
            }
            _ => (None, rel),
        };
        let mut components = rest.split('/').peekable();
        while let Some(component) = components.next() {
            let kind = if components.peek().is_some() {
                OFlag::O_PATH
            } else {
                last
            };
            let base = fd.as_ref().map_or(self.dest_fd.as_fd(), |f| f.as_fd());
            let next = openat(
                base,
                component,
                kind | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            fd = Some(next);
        }
        Ok(fd)
    }
}

fn owner(meta: &Meta) -> io::Result<(Uid, Gid)> {
    let id = |n: u64| {
        u32::try_from(n)
            .ok()
            .filter(|&n| n != u32::MAX)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("owner id {n} out of range"),
                )
            })
    };
    Ok((Uid::from_raw(id(meta.uid)?), Gid::from_raw(id(meta.gid)?)))
}

fn libc_flags(flags: OFlag) -> i32 {
    flags.bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            uid: u64::from(nix::unistd::geteuid().as_raw()),
            gid: u64::from(nix::unistd::getegid().as_raw()),
            mtime: 1_000_000_000,
        }
    }

    #[test]
    fn a_symlinked_directory_is_never_written_through() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::open(dir.path()).unwrap();
        tree.symlink("link", outside.path().to_str().unwrap(), &meta(0o777))
            .unwrap();
        let err = tree.create_file("link/evil").unwrap_err();
        assert!(err.to_string().contains("link/evil"), "{err}");
        assert!(tree.mkdir("link/evil").is_err());
        assert!(tree.symlink("link/evil", "x", &meta(0o777)).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_existing_file_is_never_replaced_or_followed() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        std::fs::write(&target, b"precious").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::open(dir.path()).unwrap();
        tree.symlink("f", target.to_str().unwrap(), &meta(0o777))
            .unwrap();
        assert!(tree.create_file("f").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn the_destination_must_be_an_empty_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"").unwrap();
        let err = Tree::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("empty directory"), "{err}");
        let link = dir.path().join("link");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        std::os::unix::fs::symlink(&empty, &link).unwrap();
        assert!(Tree::open(&link).is_err());
        assert!(Tree::open(&empty).is_ok());
    }

    #[test]
    fn directories_get_their_metadata_after_their_contents() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::open(dir.path()).unwrap();
        tree.mkdir("a").unwrap();
        tree.mkdir("a/b").unwrap();
        let file = tree.create_file("a/b/f").unwrap();
        tree.finish_file("a/b/f", &file, &meta(0o640)).unwrap();
        tree.finish([("a", meta(0o555)), ("a/b", meta(0o2750))])
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let a = std::fs::metadata(dir.path().join("a")).unwrap();
        let b = std::fs::metadata(dir.path().join("a/b")).unwrap();
        let f = std::fs::metadata(dir.path().join("a/b/f")).unwrap();
        assert_eq!(a.mode() & 0o7777, 0o555);
        assert_eq!(b.mode() & 0o7777, 0o2750);
        assert_eq!(f.mode() & 0o7777, 0o640);
        assert_eq!(
            (a.mtime(), b.mtime(), f.mtime()),
            (1_000_000_000, 1_000_000_000, 1_000_000_000)
        );
        // Let the temp dir be removed.
        std::fs::set_permissions(
            dir.path().join("a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
}
