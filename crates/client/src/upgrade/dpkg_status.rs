//! What dpkg knows about the installed system, read from `<root>/var/lib/dpkg/status`:
//! held packages, essential packages (never to be removed), installed versions, and
//! whether dpkg was interrupted.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::root::SystemRoot;

/// One package in dpkg's database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub architecture: String,
    pub version: String,
    /// The three words of `Status:` (want, flag, status).
    pub want: String,
    pub status: String,
    /// The flag is `reinstreq`: dpkg failed half-way and neither configures nor removes
    /// the package until it is unpacked again.
    pub reinstall_required: bool,
    pub essential: bool,
    pub protected: bool,
    pub installed_size_kib: u64,
}

impl Installed {
    pub fn is_installed(&self) -> bool {
        self.status == "installed"
    }

    /// Installed, or on its way in or out: what a half-finished dpkg run leaves.
    pub fn is_present(&self) -> bool {
        self.status != "not-installed" && self.status != "config-files"
    }

    pub fn is_held(&self) -> bool {
        self.want == "hold"
    }
}

/// The parsed status database, by `name:arch`.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub packages: BTreeMap<String, Installed>,
}

impl Status {
    pub fn read(root: &SystemRoot) -> Result<Self, Error> {
        let path = root.path("/var/lib/dpkg/status");
        let text = fs_err::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::parse(&text).map_err(|reason| Error::Config { path, reason })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut status = Status::default();
        for paragraph in deb822_fast::Deb822::iter_paragraphs_from_reader(text.as_bytes()) {
            let paragraph = paragraph.map_err(|e| format!("unreadable: {e}"))?;
            let get = |k: &str| paragraph.get(k).map(str::trim).unwrap_or("").to_owned();
            let name = get("Package");
            if name.is_empty() {
                continue;
            }
            let words: Vec<String> = get("Status")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            let [want, flag, state] = words.as_slice() else {
                return Err(format!("package {name} has a malformed Status line"));
            };
            let architecture = get("Architecture");
            let key = format!("{name}:{architecture}");
            status.packages.insert(
                key,
                Installed {
                    version: get("Version"),
                    want: want.clone(),
                    status: state.clone(),
                    reinstall_required: flag == "reinstreq",
                    essential: get("Essential") == "yes",
                    protected: get("Protected") == "yes",
                    installed_size_kib: get("Installed-Size").parse().unwrap_or(0),
                    name,
                    architecture,
                },
            );
        }
        Ok(status)
    }

    pub fn installed(&self) -> impl Iterator<Item = &Installed> {
        self.packages.values().filter(|p| p.is_installed())
    }

    pub fn held(&self) -> Vec<&Installed> {
        self.packages
            .values()
            .filter(|p| p.is_held() && p.is_present())
            .collect()
    }

    /// Packages in a half-installed or half-configured state.
    pub fn broken(&self) -> Vec<&Installed> {
        self.packages
            .values()
            .filter(|p| {
                matches!(
                    p.status.as_str(),
                    "half-installed"
                        | "unpacked"
                        | "half-configured"
                        | "triggers-awaited"
                        | "triggers-pending"
                )
            })
            .collect()
    }

    /// The packages dpkg wants unpacked again before it configures them, as apt names
    /// them (`name:arch`, or `name` for `Architecture: all`).
    pub fn reinstall_required(&self) -> Vec<String> {
        self.packages
            .values()
            .filter(|p| p.reinstall_required && p.is_present())
            .map(|p| match p.architecture.as_str() {
                "all" | "" => p.name.clone(),
                arch => format!("{}:{arch}", p.name),
            })
            .collect()
    }

    /// Whether a package of this name (any architecture) is essential or protected.
    pub fn is_essential(&self, name: &str) -> bool {
        self.packages
            .values()
            .any(|p| p.name == name && p.is_installed() && (p.essential || p.protected))
    }
}

/// Whether dpkg was interrupted: its journal of pending updates is not empty.
pub fn dpkg_interrupted(root: &SystemRoot) -> bool {
    !pending_updates(root).is_empty()
}

/// The entries of dpkg's journal of pending updates (`updates/NNNN`), sorted. dpkg's
/// scratch file `updates/tmp.i` is not one: dpkg creates it whenever it opens its
/// database for writing, and ignores it on recovery.
fn pending_updates(root: &SystemRoot) -> Vec<String> {
    let updates = root.path("/var/lib/dpkg/updates");
    let mut names: Vec<String> = std::fs::read_dir(updates)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// dpkg's database at one moment: the status file (its digest) and the journal of
/// pending updates. Taken just before the upgrade's dpkg run and again after it fails,
/// it tells whether dpkg changed anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbSnapshot {
    status_sha256: [u8; 32],
    status_len: u64,
    pending: Vec<String>,
}

impl DbSnapshot {
    pub fn take(root: &SystemRoot) -> Result<Self, Error> {
        use sha2::Digest;
        let path = root.path("/var/lib/dpkg/status");
        let bytes = fs_err::read(&path).map_err(|e| Error::io(&path, e))?;
        Ok(DbSnapshot {
            status_sha256: sha2::Sha256::digest(&bytes).into(),
            status_len: bytes.len() as u64,
            pending: pending_updates(root),
        })
    }
}

/// Whether a failed dpkg run left the system as it was: the status database byte for
/// byte what it was before, no pending update in dpkg's journal, and no status line
/// of the run naming a package (`package_lines`, see `term::Status::names_a_package`).
/// dpkg records every change of a package in its journal before making it, so an
/// unchanged database with an empty journal means nothing was unpacked, configured or
/// removed; the status lines rule out the one exception, a package whose `preinst`
/// failed and was unwound by dpkg back to the very same database (its scripts ran).
pub fn untouched(before: &DbSnapshot, after: &DbSnapshot, package_lines: usize) -> bool {
    before == after && after.pending.is_empty() && package_lines == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: dpkg\nEssential: yes\nStatus: install ok installed\n\
        Architecture: amd64\nVersion: 1.21.22\nInstalled-Size: 6000\n\n\
        Package: vim\nStatus: hold ok installed\nArchitecture: amd64\nVersion: 2:9.0\n\n\
        Package: half\nStatus: install reinstreq half-configured\nArchitecture: all\nVersion: 1\n\n\
        Package: libx\nStatus: install reinstreq unpacked\nArchitecture: i386\nVersion: 2\n\n\
        Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n\
        Package: purged\nStatus: purge reinstreq not-installed\nArchitecture: amd64\n";

    #[test]
    fn status_is_read_with_holds_essentials_and_breakage() {
        let s = Status::parse(STATUS).unwrap();
        assert_eq!(s.packages.len(), 6);
        assert!(s.is_essential("dpkg"));
        assert!(!s.is_essential("vim"));
        assert_eq!(
            s.held().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["vim"]
        );
        assert_eq!(
            s.broken()
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["half", "libx"]
        );
        assert_eq!(s.installed().count(), 2);
        // What is gone needs no reinstalling; a foreign architecture is named.
        assert_eq!(s.reinstall_required(), ["half", "libx:i386"]);
    }

    #[test]
    fn malformed_status_is_refused() {
        assert!(Status::parse("Package: x\nStatus: install\n").is_err());
    }

    #[test]
    fn pending_dpkg_updates_mean_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        assert!(!dpkg_interrupted(&root));
        std::fs::create_dir_all(root.path("/var/lib/dpkg/updates")).unwrap();
        std::fs::write(root.path("/var/lib/dpkg/updates/tmp.i"), "").unwrap();
        assert!(!dpkg_interrupted(&root));
        std::fs::write(root.path("/var/lib/dpkg/updates/0001"), "Package: x\n").unwrap();
        assert!(dpkg_interrupted(&root));
    }

    #[test]
    fn a_failed_dpkg_run_changed_nothing_only_if_database_journal_and_status_lines_agree() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        let updates = root.path("/var/lib/dpkg/updates");
        std::fs::create_dir_all(&updates).unwrap();
        let status = root.path("/var/lib/dpkg/status");
        std::fs::write(&status, STATUS).unwrap();
        let before = DbSnapshot::take(&root).unwrap();
        // dpkg opened its database and stopped (what a refusal at start-up leaves).
        std::fs::write(updates.join("tmp.i"), [0u8; 4608]).unwrap();
        let after = DbSnapshot::take(&root).unwrap();
        assert!(untouched(&before, &after, 0));
        // apt said it started dpkg on a package: something may have run.
        assert!(!untouched(&before, &after, 1));
        // A pending update in the journal.
        std::fs::write(
            updates.join("0000"),
            "Package: vim\nStatus: hold ok half-installed\n",
        )
        .unwrap();
        assert!(!untouched(&before, &DbSnapshot::take(&root).unwrap(), 0));
        std::fs::remove_file(updates.join("0000")).unwrap();
        // The status file changed, even by one byte and back to the same length.
        std::fs::write(&status, STATUS.replace("hold ok", "hold ik")).unwrap();
        assert!(!untouched(&before, &DbSnapshot::take(&root).unwrap(), 0));
        std::fs::write(&status, STATUS).unwrap();
        assert!(untouched(&before, &DbSnapshot::take(&root).unwrap(), 0));
        // A journal left from before is no "nothing changed" either.
        std::fs::write(updates.join("0007"), "x").unwrap();
        let stale = DbSnapshot::take(&root).unwrap();
        assert!(!untouched(&stale, &stale, 0));
        // No status database at all is an error, not "unchanged".
        std::fs::remove_file(&status).unwrap();
        assert!(DbSnapshot::take(&root).is_err());
    }
}
