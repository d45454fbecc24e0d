//! The system being upgraded, reached through one seam.
//!
//! Every file the tool reads or writes on the target system is named through
//! [`SystemRoot`], so `--root DIR` (a chroot, an image tree, a test's temp dir) works the
//! same as `/` and tests never touch the host.

use crate::confine::{RelPath, Tree};
use crate::error::Error;
use crate::os_release::OsRelease;
use std::path::{Component, Path, PathBuf};

/// Where release-upgrader keeps its state on the system (docs/protocol.md §7).
pub const STATE_DIR: &str = "/var/lib/release-upgrader";
/// The helper prefix (docs/protocol.md §3).
pub const PREFIX: &str = "/usr/lib/release-upgrader";
/// Logs of each run.
pub const LOG_DIR: &str = "/var/log/dist-upgrade";
/// Configuration, with trusted keyrings under `trusted.gpg.d/`.
pub const CONFIG_DIR: &str = "/etc/release-upgrader";

/// The root directory of the system being upgraded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemRoot {
    dir: PathBuf,
}

impl SystemRoot {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SystemRoot { dir: dir.into() }
    }

    /// The directory itself (`/` for the running system).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this is the running system rather than a tree under another directory.
    pub fn is_host(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// An absolute path on the target system, as seen from here. For the paths the
    /// program itself names (constants); a path from a flag, a configuration or a state
    /// file goes through [`Self::resolve`], which refuses `..`.
    pub fn path(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let absolute = absolute.as_ref();
        debug_assert!(
            !absolute.components().any(|c| c == Component::ParentDir),
            "{} names a parent directory",
            absolute.display()
        );
        let relative = absolute.strip_prefix("/").unwrap_or(absolute);
        self.dir.join(relative)
    }

    /// A path on the target system that came from outside the program (a flag, a
    /// configuration file, a state file), as seen from here: refused when it has a `..`
    /// component, so it cannot name anything outside the root. It may still pass through
    /// a symlink in the tree; what is written or removed there goes through
    /// [`crate::confine::Tree`], which refuses those.
    pub fn resolve(&self, absolute: impl AsRef<Path>) -> Result<PathBuf, Error> {
        Ok(self.dir.join(self.relative(absolute)?.as_path()))
    }

    /// [`Self::resolve`]'s check, giving the path relative to the root.
    pub fn relative(&self, absolute: impl AsRef<Path>) -> Result<RelPath, Error> {
        let absolute = absolute.as_ref();
        let text = absolute.to_str().ok_or_else(|| Error::Refused {
            path: absolute.to_owned(),
            reason: "it is not UTF-8".into(),
        })?;
        RelPath::new(text.trim_start_matches('/').trim_end_matches('/')).map_err(|e| {
            Error::Refused {
                path: absolute.to_owned(),
                reason: format!(
                    "it cannot name a path on {}: {}",
                    self.dir.display(),
                    e.reason
                ),
            }
        })
    }

    /// The root, opened: what is removed or renamed through it stays inside it.
    pub fn tree(&self) -> Result<Tree, Error> {
        Tree::open(&self.dir)
    }

    /// The directory `absolute` of the target system, opened; `None` when missing. On
    /// the running system the path is resolved as usual: its symlinks are the machine's
    /// own. Under another root, a symlink on the way could lead out of it, so none is
    /// followed; mount points are entered (a root's `/var` may be a filesystem of its
    /// own). Either way, whatever is done through the returned handle stays below it.
    pub fn open_dir(&self, absolute: impl AsRef<Path>) -> Result<Option<Tree>, Error> {
        let absolute = absolute.as_ref();
        if self.is_host() {
            return Tree::open_existing(&self.path(absolute));
        }
        match self.relative(absolute) {
            Ok(rel) => self.tree()?.open_dir_across_mounts(&rel),
            Err(_) if absolute == Path::new("/") => self.tree().map(Some),
            Err(e) => Err(e),
        }
    }

    /// [`Self::open_dir`], creating the directory and its parents (0755) when missing.
    pub fn create_dir(&self, absolute: impl AsRef<Path>) -> Result<Tree, Error> {
        let absolute = absolute.as_ref();
        if self.is_host() {
            let path = self.path(absolute);
            fs_err::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            return Tree::open(&path);
        }
        match self.relative(absolute) {
            Ok(rel) => self.tree()?.create_dir_all_across_mounts(&rel),
            Err(_) if absolute == Path::new("/") => self.tree(),
            Err(e) => Err(e),
        }
    }

    /// Replaces the file `absolute` of the target system with `data`, atomically and
    /// durably, creating its directory: through [`Self::create_dir`], so never through a
    /// symlink that could lead out of another root.
    pub fn write_file(&self, absolute: impl AsRef<Path>, data: &[u8]) -> Result<(), Error> {
        let absolute = absolute.as_ref();
        let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
            return Err(Error::Refused {
                path: self.path(absolute),
                reason: "it is not a file name".into(),
            });
        };
        let name = RelPath::new(name.to_string_lossy()).map_err(|e| Error::Refused {
            path: self.path(absolute),
            reason: e.to_string(),
        })?;
        self.create_dir(dir)?.write_atomic(&name, data)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path(STATE_DIR)
    }

    pub fn prefix(&self) -> PathBuf {
        self.path(PREFIX)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.path(LOG_DIR)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.path(CONFIG_DIR)
    }

    /// The running release, from `/etc/os-release` or `/usr/lib/os-release`.
    pub fn os_release(&self) -> Result<OsRelease, Error> {
        let candidates = [
            self.path("/etc/os-release"),
            self.path("/usr/lib/os-release"),
        ];
        for path in &candidates {
            match fs_err::read_to_string(path) {
                Ok(text) => return Ok(OsRelease::parse(&text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Err(Error::Config {
            path: candidates[0].clone(),
            reason: "missing (neither /etc/os-release nor /usr/lib/os-release exists)".into(),
        })
    }

    /// The running release's codename, which the meta-release is searched for.
    pub fn codename(&self) -> Result<(OsRelease, String), Error> {
        let os = self.os_release()?;
        match os.codename.clone() {
            Some(codename) => Ok((os, codename)),
            None => Err(Error::Config {
                path: self.path("/etc/os-release"),
                reason: "no VERSION_CODENAME: cannot tell which release is running".into(),
            }),
        }
    }
}

/// The Debian architecture name of this machine (`dpkg --print-architecture`), falling
/// back to the name that matches the architecture this program was built for.
pub fn host_architecture() -> String {
    if let Ok(out) = crate::task::Task::new("dpkg")
        .arg("--print-architecture")
        .output()
    {
        let arch = String::from_utf8_lossy(&out).trim().to_owned();
        if !arch.is_empty() {
            return arch;
        }
    }
    debian_arch_of(std::env::consts::ARCH).to_owned()
}

/// Maps Rust's architecture names to Debian's.
pub fn debian_arch_of(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "i386",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_under_the_root() {
        let root = SystemRoot::new("/tmp/r");
        assert_eq!(
            root.path("/etc/os-release"),
            Path::new("/tmp/r/etc/os-release")
        );
        assert_eq!(
            root.state_dir(),
            Path::new("/tmp/r/var/lib/release-upgrader")
        );
        assert!(SystemRoot::new("/").is_host());
        assert_eq!(SystemRoot::new("/").path("/etc"), Path::new("/etc"));
    }

    #[test]
    fn paths_from_outside_the_program_cannot_leave_the_root() {
        let root = SystemRoot::new("/tmp/r");
        assert_eq!(
            root.resolve("/userdata/.writable_image").unwrap(),
            Path::new("/tmp/r/userdata/.writable_image")
        );
        for bad in ["/userdata/../../etc/passwd", "/..", "/", "relative/../x"] {
            let err = root.resolve(bad).unwrap_err();
            assert!(matches!(err, Error::Refused { .. }), "{bad}: {err:?}");
        }
    }

    #[test]
    fn missing_codename_is_a_config_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/os-release"), "ID=debian\n").unwrap();
        let err = SystemRoot::new(dir.path()).codename().unwrap_err();
        assert!(err.to_string().contains("etc/os-release"), "{err}");
        assert!(err.to_string().contains("VERSION_CODENAME"), "{err}");
    }
}
