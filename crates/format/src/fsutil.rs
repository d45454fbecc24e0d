//! Crash-safe file replacement.
//!
//! A file the tool depends on after a crash (state, journal, cache) is written to a
//! temporary name in the same directory, fsynced, renamed over the old one, and the
//! directory fsynced, so a power cut leaves either the old or the new content.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Replaces `path` with `data` atomically and durably, creating parent directories.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = parent_of(path);
    fs_err::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = temp_name(path);
    let result = (|| {
        // A new file, never through a symlink someone planted at the temporary name.
        let mut file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs_err::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(path, e))
}

/// fsyncs a directory so that renames and unlinks in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

/// A temporary sibling for replacing `path`: unique to this process and call, so two
/// threads replacing one file never share it.
pub fn temp_name(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    parent_of(path).join(name)
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
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
}
