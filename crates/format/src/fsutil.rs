//! Crash-safe file replacement: the one atomic writer of the workspace.
//!
//! A file the tool depends on after a crash (state, journal, cache, a published index or
//! image) is written to a temporary name in the same directory, fsynced, renamed over the
//! old one, and the directory fsynced, so a power cut leaves either the old or the new
//! content. [`write_atomic`] does it for bytes in memory, [`AtomicFile`] for a stream,
//! [`copy_atomic`] for a copy of another file.
//!
//! The client's writes below a system root go through `ru_client::confine::Tree`
//! instead, the root-confined variant of the same steps (`openat` one component at a
//! time, never through a symlink or into another mount); it names its temporaries with
//! [`temp_file_name`] too.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

/// Replaces `path` with `data` atomically and durably, creating parent directories.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(data).map_err(|e| Error::io(path, e))?;
    file.commit().map(drop)
}

/// Replaces `to` with a copy of `from` atomically and durably, creating parent
/// directories.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<u64, Error> {
    let mut source = fs_err::File::open(from).map_err(|e| Error::io(from, e))?;
    let mut file = AtomicFile::create(to)?;
    io::copy(&mut source, &mut file).map_err(|e| Error::io(to, e))?;
    file.commit()
}

/// fsyncs a directory so that renames and unlinks in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

/// A temporary file name for replacing the file `name` in its directory, unique to this
/// process, this thread and this call (`.NAME.tmp-PID-THREAD-N`), so two threads or two
/// processes replacing one file never share it.
pub fn temp_file_name(name: impl std::fmt::Display) -> String {
    static NEXT_CALL: AtomicU64 = AtomicU64::new(0);
    static NEXT_THREAD: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    }
    let n = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
    let thread = THREAD.with(|t| *t);
    format!(".{name}.tmp-{}-{thread}-{n}", std::process::id())
}

/// A temporary sibling for replacing `path` (see [`temp_file_name`]).
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    parent_of(path).join(temp_file_name(&name))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A file written to a temporary sibling and put in place by [`AtomicFile::commit`]
/// (or [`AtomicFile::commit_new`]); dropped uncommitted, the temporary is removed.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<std::fs::File>>,
    written: u64,
}

impl AtomicFile {
    /// Starts replacing `path` (mode 0666 less the umask), creating parent directories.
    pub fn create(path: &Path) -> Result<Self, Error> {
        Self::create_with_mode(path, 0o666)
    }

    /// Starts replacing `path` with a file created with at most `mode` (the umask may
    /// take bits away; it is never, not even empty, more open than `mode`).
    pub fn create_with_mode(path: &Path, mode: u32) -> Result<Self, Error> {
        let dir = parent_of(path);
        fs_err::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let tmp = temp_name(path);
        // A new file, never through a symlink someone planted at the temporary name.
        let file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| Error::io(path, e))?;
        Ok(AtomicFile {
            path: path.to_owned(),
            tmp,
            file: Some(BufWriter::with_capacity(256 * 1024, file.into())),
            written: 0,
        })
    }

    /// The file being written, e.g. to narrow its permissions before any data is in it.
    pub fn file(&self) -> &std::fs::File {
        self.file.as_ref().expect("not committed").get_ref()
    }

    /// fsyncs, renames over the path, fsyncs the directory; returns the file's size.
    pub fn commit(self) -> Result<u64, Error> {
        self.finish(true)
    }

    /// Like [`AtomicFile::commit`], but the file is put in place only if nothing (not
    /// even a symlink) is at the path: checked and done in one step (a hard link).
    /// Fails with [`io::ErrorKind::AlreadyExists`] in the error's source otherwise.
    pub fn commit_new(self) -> Result<u64, Error> {
        self.finish(false)
    }

    fn finish(mut self, replace: bool) -> Result<u64, Error> {
        let file = self.file.take().expect("committed once");
        let result = (|| -> io::Result<()> {
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            if replace {
                fs_err::rename(&self.tmp, &self.path)?;
            } else {
                let linked = fs_err::hard_link(&self.tmp, &self.path);
                let _ = std::fs::remove_file(&self.tmp);
                linked?;
            }
            sync_dir(&parent_of(&self.path))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result.map_err(|e| Error::io(&self.path, e))?;
        Ok(self.written)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("not committed").write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("state.json");
        // Every name the next calls could use.
        let next = temp_name(&path);
        let text = next.to_string_lossy().into_owned();
        let (stem, n) = text.rsplit_once('-').unwrap();
        let n: u64 = n.parse().unwrap();
        for i in n + 1..n + 1000 {
            std::os::unix::fs::symlink(&victim, format!("{stem}-{i}")).unwrap();
        }
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn failure_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let err = write_atomic(&blocker.join("below"), b"x").unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
    }

    #[test]
    fn temporary_names_differ_between_threads_and_calls() {
        let path = Path::new("dir/state.json");
        let mine = [temp_name(path), temp_name(path)];
        let theirs = std::thread::spawn(move || temp_name(Path::new("dir/state.json")))
            .join()
            .unwrap();
        assert_ne!(mine[0], mine[1]);
        assert!(!mine.contains(&theirs));
        let thread = |p: &Path| {
            let text = p.to_string_lossy().into_owned();
            let parts: Vec<_> = text.rsplitn(3, '-').map(str::to_owned).collect();
            parts[1].clone()
        };
        assert_eq!(thread(&mine[0]), thread(&mine[1]));
        assert_ne!(thread(&mine[0]), thread(&theirs));
        assert!(mine[0].starts_with("dir"), "{mine:?}");
    }

    #[test]
    fn commit_new_refuses_an_existing_file_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let mut first = AtomicFile::create_with_mode(&path, 0o600).unwrap();
        first.write_all(b"one").unwrap();
        assert_eq!(first.commit_new().unwrap(), 3);
        let mut second = AtomicFile::create(&path).unwrap();
        second.write_all(b"two").unwrap();
        let err = second.commit_new().unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }

    #[test]
    fn an_uncommitted_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"half").unwrap();
        drop(file);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn copy_atomic_replaces_the_destination_with_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let to = dir.path().join("sub/to");
        std::fs::write(&from, b"payload").unwrap();
        write_atomic(&to, b"old").unwrap();
        assert_eq!(copy_atomic(&from, &to).unwrap(), 7);
        assert_eq!(std::fs::read(&to).unwrap(), b"payload");
        assert_eq!(std::fs::read_dir(to.parent().unwrap()).unwrap().count(), 1);
    }
}
