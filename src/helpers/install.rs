//! Installing a helper set: download and verify everything first (in parallel), build the
//! complete new prefix next to the old one, sync it, swap it in with one rename, then
//! update the manifests. Every step is journaled; see the module docs of `helpers`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::client::HelperPlan;
use crate::crashpoint;
use crate::deb::{self, EntryKind, ExtractHooks, PathOwners, Policy};
use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::Fetcher;
use crate::fsutil;
use crate::helpers::journal::{Journal, Operation, Phase};
use crate::helpers::lock::StateLock;
use crate::helpers::manifest::{self, FileKind, Manifest, ManifestEntry};
use crate::helpers::{Store, env, remove_tree};
use crate::pocket::PackageEntry;
use crate::progress::Progress;

/// At most this many helper debs download at once.
const PARALLEL_DOWNLOADS: usize = 4;

/// What an install did.
#[derive(Debug)]
pub enum InstallOutcome {
    /// The same helpers (same debs) were already installed: nothing changed.
    AlreadyInstalled(Vec<Manifest>),
    /// The helpers are installed; `replaced` were there before.
    Installed {
        manifests: Vec<Manifest>,
        replaced: Vec<Manifest>,
    },
}

/// What a run found and did about an interrupted transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    RolledBack,
    Finished,
}

/// Finishes or rolls back an interrupted transaction. The caller holds the lock.
pub fn recover(store: &Store) -> Result<Option<Recovery>, Error> {
    let Some(journal) = Journal::load(&store.state)? else {
        return Ok(None);
    };
    log::warn!(
        "an earlier run (pid {}) was interrupted while {} {}; recovering",
        journal.pid,
        match journal.operation {
            Operation::Install => "installing",
            Operation::Remove => "removing",
        },
        journal.packages.join(", ")
    );
    let recovery = match (journal.operation, journal.phase) {
        (Operation::Install, Phase::Staging) => {
            rollback(store, &journal)?;
            Recovery::RolledBack
        }
        (Operation::Install, Phase::Staged) => {
            let swapped = journal.new_inode.is_some() && inode(&store.prefix) == journal.new_inode;
            if swapped {
                finish(store, &journal)?;
                Recovery::Finished
            } else {
                rollback(store, &journal)?;
                Recovery::RolledBack
            }
        }
        (Operation::Install, Phase::Swapped) => {
            finish(store, &journal)?;
            Recovery::Finished
        }
        (Operation::Remove, _) | (Operation::Install, Phase::Removing) => {
            crate::helpers::remove::finish(store, &journal)?;
            Recovery::Finished
        }
    };
    Ok(Some(recovery))
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// Undoes an install that never swapped: the staging tree and new manifests go, and an
/// old tree parked aside (filesystems without exchange) comes back.
fn rollback(store: &Store, journal: &Journal) -> Result<(), Error> {
    crashpoint::reached("rollback");
    if !store.prefix.exists() && store.aside().exists() {
        fs_err::rename(store.aside(), &store.prefix).map_err(|e| Error::io(&store.prefix, e))?;
    }
    remove_tree(&journal.staging)?;
    remove_tree(&journal.new_manifests)?;
    remove_tree(&store.download_dir())?;
    Journal::clear(&store.state)
}

/// Completes an install whose new tree is in place: manifests, leftovers, journal.
fn finish(store: &Store, journal: &Journal) -> Result<(), Error> {
    let current = store.manifests_dir();
    if journal.new_manifests.exists() {
        if current.exists() {
            remove_tree(&journal.old_manifests)?;
            fs_err::rename(&current, &journal.old_manifests).map_err(|e| Error::io(&current, e))?;
            crashpoint::reached("manifests aside");
        }
        fs_err::rename(&journal.new_manifests, &current).map_err(|e| Error::io(&current, e))?;
        fsutil::sync_dir(&store.state).map_err(|e| Error::io(&store.state, e))?;
        crashpoint::reached("manifests in place");
    }
    remove_tree(&journal.old_manifests)?;
    // After an exchange, the staging name holds the old tree.
    remove_tree(&journal.staging)?;
    remove_tree(&store.aside())?;
    crashpoint::reached("old tree removed");
    remove_tree(&store.download_dir())?;
    env::write_apt_conf(store)?;
    Journal::clear(&store.state)?;
    crashpoint::reached("install finished");
    Ok(())
}

/// Installs the helpers of `plan` (or does nothing if exactly they are installed).
pub fn install(
    store: &Store,
    fetcher: &Fetcher,
    plan: &HelperPlan,
    arch: &str,
    progress: &dyn Progress,
    cancel: &Arc<AtomicBool>,
) -> Result<InstallOutcome, Error> {
    let _lock = StateLock::acquire(&store.state)?;
    recover(store)?;
    let installed = store.installed()?;
    if same_set(&installed, &plan.packages) && store.prefix.is_dir() {
        return Ok(InstallOutcome::AlreadyInstalled(installed));
    }
    check_space(store, plan)?;

    progress.step(&format!(
        "Downloading {} helper packages from {}",
        plan.packages.len(),
        plan.pocket.location
    ));
    let debs = download_all(store, fetcher, plan).inspect_err(|err| {
        // Keep downloads for the next run to resume only after network trouble.
        if err.exit_code() != crate::error::ExitCode::Network {
            let _ = remove_tree(&store.download_dir());
        }
    })?;
    if cancel.load(Ordering::SeqCst) {
        return Err(Error::Cancelled);
    }

    let mut journal = Journal {
        operation: Operation::Install,
        phase: Phase::Staging,
        packages: plan.packages.iter().map(|p| p.name.clone()).collect(),
        staging: store.staging(),
        new_manifests: store.state.join("helpers.new"),
        old_manifests: store.state.join("helpers.old"),
        new_inode: None,
        pid: std::process::id(),
    };
    journal.save(&store.state)?;
    crashpoint::reached("journal staging");

    let staged = stage(store, plan, &debs, arch, progress, cancel, &mut journal);
    let manifests = match staged {
        Ok(manifests) => manifests,
        Err(err) => {
            if let Err(e) = rollback(store, &journal) {
                log::error!("rolling back the helper install failed: {e}");
            }
            let _ = remove_tree(&store.download_dir());
            return Err(err);
        }
    };

    progress.step(&format!(
        "Putting the helpers in place at {}",
        store.prefix.display()
    ));
    swap_into_place(store)?;
    crashpoint::reached("swapped");
    journal.phase = Phase::Swapped;
    journal.save(&store.state)?;
    crashpoint::reached("journal swapped");
    finish(store, &journal)?;
    Ok(InstallOutcome::Installed {
        manifests,
        replaced: installed,
    })
}

/// Whether the installed manifests are exactly the planned packages (same debs).
fn same_set(installed: &[Manifest], planned: &[PackageEntry]) -> bool {
    installed.len() == planned.len()
        && planned.iter().all(|p| {
            installed
                .iter()
                .any(|m| m.package == p.name && m.deb_sha256 == p.sha256)
        })
}

/// Refuses to start when the helpers cannot fit (free space where the staging tree and the
/// downloads go), with the numbers.
fn check_space(store: &Store, plan: &HelperPlan) -> Result<(), Error> {
    let installed: u64 = plan
        .packages
        .iter()
        .map(|p| p.installed_size_kib.unwrap_or(p.size / 1024 * 3) * 1024)
        .sum();
    let download: u64 = plan.download_size();
    // Measure where the files will go without creating anything yet.
    let existing = |path: &Path| -> PathBuf {
        path.ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"))
            .to_owned()
    };
    let prefix_fs = existing(&store.prefix);
    let state_fs = existing(&store.state);
    let same_fs = std::fs::metadata(&prefix_fs).map(|m| m.dev()).ok()
        == std::fs::metadata(&state_fs).map(|m| m.dev()).ok();
    let mut needs = vec![(prefix_fs, installed)];
    if same_fs {
        needs[0].1 += download;
    } else {
        needs.push((state_fs, download));
    }
    for (path, needed) in needs {
        let stat = nix::sys::statvfs::statvfs(&path).map_err(|e| Error::io(&path, e.into()))?;
        let available = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        // A margin for directories and filesystem overhead.
        let needed = needed + needed / 10 + 1024 * 1024;
        if needed > available {
            return Err(Error::NoSpace {
                path,
                needed,
                available,
            });
        }
    }
    Ok(())
}

/// Downloads every planned deb into the download dir (reusing complete, verified ones),
/// a few at a time.
fn download_all(
    store: &Store,
    fetcher: &Fetcher,
    plan: &HelperPlan,
) -> Result<Vec<PathBuf>, Error> {
    let dir = store.download_dir();
    let dests: Vec<PathBuf> = plan
        .packages
        .iter()
        .map(|p| dir.join(format!("{}_{}.deb", p.name, &p.sha256.to_hex()[..16])))
        .collect();
    let next = AtomicUsize::new(0);
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_DOWNLOADS.min(plan.packages.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let (Some(package), Some(dest)) = (plan.packages.get(i), dests.get(i)) else {
                        break;
                    };
                    if let Err(e) = download_one(fetcher, plan, package, dest) {
                        errors.lock().expect("errors").push(e);
                    }
                }
            });
        }
    });
    let mut errors = errors.into_inner().expect("errors");
    // Report cancellation over whatever else it caused.
    if let Some(i) = errors.iter().position(|e| matches!(e, Error::Cancelled)) {
        return Err(errors.swap_remove(i));
    }
    match errors.into_iter().next() {
        Some(err) => Err(err),
        None => Ok(dests),
    }
}

fn download_one(
    fetcher: &Fetcher,
    plan: &HelperPlan,
    package: &PackageEntry,
    dest: &Path,
) -> Result<(), Error> {
    if let Ok(mut file) = std::fs::File::open(dest) {
        if let Ok((sha256, size)) = Sha256::of_reader(&mut file) {
            if sha256 == package.sha256 && size == package.size {
                return Ok(());
            }
        }
    }
    let location = plan.pocket.deb_location(package)?;
    let label = format!("{} {}", package.name, package.version);
    fetcher
        .fetch_file(&location, dest, package.size, package.sha256, &label)
        .map(|_| ())
}

/// Extracts every deb into the staging tree and syncs it; returns the manifests.
fn stage(
    store: &Store,
    plan: &HelperPlan,
    debs: &[PathBuf],
    arch: &str,
    progress: &dyn Progress,
    cancel: &Arc<AtomicBool>,
    journal: &mut Journal,
) -> Result<Vec<Manifest>, Error> {
    progress.step("Unpacking the helpers");
    remove_tree(&journal.staging)?;
    remove_tree(&journal.new_manifests)?;
    if let Some(parent) = journal.staging.parent() {
        fs_err::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    fs_err::create_dir(&journal.staging).map_err(|e| Error::io(&journal.staging, e))?;
    crashpoint::reached("staging created");
    let policy = Policy::helper(arch);
    let mut guard = Guard {
        owners: PathOwners::new(),
        expected: None,
        cancel: cancel.clone(),
    };
    let mut manifests = Vec::new();
    for (package, deb) in plan.packages.iter().zip(debs) {
        guard.expected = Some(package.clone());
        let extracted = deb::extract_into(deb, &journal.staging, &policy, &mut guard)?;
        let control = &extracted.control;
        if !control.maintainer_scripts.is_empty() {
            log::warn!(
                "{} ships maintainer scripts ({}) declared reversible; they are not run",
                package.name,
                control.maintainer_scripts.join(", ")
            );
        }
        manifests.push(Manifest {
            package: package.name.clone(),
            version: package.version.to_string(),
            architecture: control.architecture.clone(),
            deb_sha256: package.sha256,
            deb_size: package.size,
            source: plan.pocket.location.to_string(),
            files: extracted.entries.iter().map(manifest_entry).collect(),
        });
        crashpoint::reached("deb extracted");
    }
    // One filesystem-wide sync instead of an fsync per file.
    let dir = std::fs::File::open(&journal.staging).map_err(|e| Error::io(&journal.staging, e))?;
    nix::unistd::syncfs(&dir).map_err(|e| Error::io(&journal.staging, e.into()))?;
    crashpoint::reached("staging synced");
    manifest::store_all(&journal.new_manifests, &manifests)?;
    crashpoint::reached("new manifests written");
    journal.phase = Phase::Staged;
    journal.new_inode = inode(&journal.staging);
    journal.save(&store.state)?;
    crashpoint::reached("journal staged");
    Ok(manifests)
}

fn manifest_entry(entry: &deb::Entry) -> ManifestEntry {
    ManifestEntry {
        path: entry.path.clone(),
        kind: match &entry.kind {
            EntryKind::File { size, sha256 } => FileKind::File {
                size: *size,
                sha256: *sha256,
            },
            EntryKind::Dir => FileKind::Dir,
            EntryKind::Symlink { target } => FileKind::Symlink {
                target: target.clone(),
            },
            EntryKind::HardLink { target } => FileKind::Hardlink {
                target: target.clone(),
            },
        },
        mode: entry.mode,
    }
}

/// The transaction's say in each extraction: the deb must be the package the signed
/// index promised (checked on its control, before any data is written), no path may be
/// shipped by two helpers, Ctrl-C stops it, and each entry is a crash point.
struct Guard {
    owners: PathOwners,
    expected: Option<PackageEntry>,
    cancel: Arc<AtomicBool>,
}

impl ExtractHooks for Guard {
    fn before_data(&mut self, deb: &Path, control: &deb::Control) -> Result<(), Error> {
        if let Some(expected) = &self.expected {
            if control.package != expected.name || control.version != expected.version {
                return Err(Error::BadPackage {
                    deb: deb.display().to_string(),
                    reason: format!(
                        "is {} {}, but the pocket's index promised {} {}",
                        control.package, control.version, expected.name, expected.version
                    ),
                });
            }
        }
        self.owners.before_data(deb, control)
    }

    fn before_entry(&mut self, entry: &deb::EntryHeader<'_>) -> Result<(), Error> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        self.owners.before_entry(entry)?;
        crashpoint::reached("entry");
        Ok(())
    }
}

/// Exchanges the staging tree with the prefix (or renames it into place when there is
/// no prefix yet), then syncs their directory.
fn swap_into_place(store: &Store) -> Result<(), Error> {
    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    let staging = store.staging();
    let prefix = &store.prefix;
    let parent = prefix.parent().unwrap_or(Path::new("/"));
    let result = if prefix.exists() {
        match renameat2(
            AT_FDCWD,
            &staging,
            AT_FDCWD,
            prefix,
            RenameFlags::RENAME_EXCHANGE,
        ) {
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                // No exchange on this filesystem: park the old tree, then rename. The
                // journal (phase Staged, new inode) lets recovery tell the two apart.
                log::debug!(
                    "{}: no RENAME_EXCHANGE, swapping in two renames",
                    parent.display()
                );
                std::fs::rename(prefix, store.aside())
                    .and_then(|()| {
                        crashpoint::reached("old tree aside");
                        std::fs::rename(&staging, prefix)
                    })
                    .map_err(|e| Error::io(prefix, e))
            }
            other => other.map_err(|e| Error::io(prefix, e.into())),
        }
    } else {
        std::fs::rename(&staging, prefix).map_err(|e| Error::io(prefix, e))
    };
    result?;
    fsutil::sync_dir(parent).map_err(|e| Error::io(parent, e))
}
