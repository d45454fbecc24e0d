//! Installing a helper set: download the debs (in parallel), extract each into a new
//! prefix next to the old one as soon as it is downloaded and verified (a few at a time,
//! while the others download), sync exactly what was written, swap it in with one rename,
//! then update the manifests. Every step is journaled; see the module docs of `helpers`.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use crate::confine::RelPath;
use crate::crashpoint;
use crate::deb::{self, EntryKind, ExtractHooks, PathOwners, Policy};
use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::Fetcher;
use crate::helpers::journal::{Journal, Operation, Phase};
use crate::helpers::lock::StateLock;
use crate::helpers::manifest::{self, FileKind, Manifest, ManifestEntry};
use crate::helpers::{
    ASIDE, DOWNLOADS, MANIFESTS, NEW_MANIFESTS, OLD_MANIFESTS, STAGING, Store, env, name, own_dir,
};
use crate::pocket::PackageEntry;
use crate::progress::Progress;
use crate::session::HelperPlan;

/// At most this many helper debs download at once.
const PARALLEL_DOWNLOADS: usize = 4;
/// At most this many helper debs extract at once (see [`extract_threads`]).
const MAX_PARALLEL_EXTRACTIONS: usize = 4;
/// Threads syncing extracted files while the extraction goes on. An fsync mostly waits
/// for the disk, and concurrent ones share journal commits: more threads than cores.
const SYNC_THREADS: usize = 8;
/// Written files waiting for a syncing thread (each an open descriptor).
const SYNC_QUEUE: usize = 64;

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

/// Finishes or rolls back an interrupted transaction. The caller holds the lock. A
/// journal naming paths this root does not derive is refused before anything changes.
pub fn recover(store: &Store) -> Result<Option<Recovery>, Error> {
    let Some(journal) = Journal::load(store)? else {
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
            rollback(store, false)?;
            Recovery::RolledBack
        }
        (Operation::Install, Phase::Staged) => {
            if swapped(store, &journal)? {
                finish(store)?;
                Recovery::Finished
            } else {
                rollback(store, false)?;
                Recovery::RolledBack
            }
        }
        (Operation::Install, Phase::Swapped) => {
            finish(store)?;
            Recovery::Finished
        }
        (Operation::Remove, _) | (Operation::Install, Phase::Removing) => {
            crate::helpers::remove::finish(store)?;
            Recovery::Finished
        }
    };
    Ok(Some(recovery))
}

/// The device and inode of `path` (not following a final symlink).
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Whether the new tree of an install interrupted in phase `Staged` is already the
/// prefix. The journal recorded the new tree's inode: the prefix having it means yes, the
/// staging name having it means no. When neither has it, the root is not the one the
/// journal was written on (a `cp -a` copy, a restored backup: every inode differs) or a
/// rollback was cut short; then the two trees are compared with the new manifests, and
/// the one that holds more of the new files is the new tree.
fn swapped(store: &Store, journal: &Journal) -> Result<bool, Error> {
    let prefix = identity(&store.prefix);
    let staging = identity(&store.staging());
    if let Some(ino) = journal.new_inode {
        let is_new = |id: Option<(u64, u64)>| {
            id.is_some_and(|(dev, i)| i == ino && journal.new_device.is_none_or(|d| d == dev))
        };
        if is_new(prefix) {
            return Ok(true);
        }
        if is_new(staging) {
            return Ok(false);
        }
    }
    if prefix.is_none() {
        return Ok(false);
    }
    let new = manifest::load_all(&store.new_manifests_dir())?;
    if new.is_empty() {
        // Gone: a rollback removed them (and the staging tree before them), or the swap
        // happened and they are the current manifests. Either way the prefix and the
        // manifests in place belong together; rolling back keeps them so.
        return Ok(false);
    }
    let holds = |tree: &Path| {
        new.iter()
            .flat_map(|m| &m.files)
            .filter(|e| e.kind != FileKind::Dir && manifest::check_entry(tree, e).is_none())
            .count()
    };
    let in_prefix = holds(&store.prefix);
    let in_staging = if staging.is_some() {
        holds(&store.staging())
    } else {
        0
    };
    log::info!(
        "the journal's inodes are not this root's (a copy?): the prefix holds {in_prefix} of \
         the new helpers' files, the staging tree {in_staging}"
    );
    Ok(in_prefix > in_staging || (in_prefix == in_staging && staging.is_none()))
}

/// Undoes an install that never swapped: the staging tree and new manifests go (and the
/// downloads, unless kept for the next run to resume), and an old tree parked aside
/// (filesystems without exchange) comes back.
fn rollback(store: &Store, keep_downloads: bool) -> Result<(), Error> {
    crashpoint::reached("rollback");
    if let Some(parent) = store.prefix_parent()? {
        let prefix = store.prefix_name()?;
        if parent.kind(&prefix)?.is_none() && own_dir(&parent, &name(ASIDE))? {
            parent.rename(&name(ASIDE), &prefix)?;
            parent.sync()?;
        }
        parent.remove_dir_all(&name(STAGING))?;
    }
    let state = store.state_tree()?;
    state.remove_dir_all(&name(NEW_MANIFESTS))?;
    if own_dir(&state, &name(MANIFESTS))? {
        // Left by a finish that a copy of this root recovered as a rollback.
        state.remove_dir_all(&name(OLD_MANIFESTS))?;
    }
    if !keep_downloads {
        state.remove_dir_all(&name(DOWNLOADS))?;
    }
    Journal::clear(store)
}

/// Completes an install whose new tree is in place: manifests, leftovers, journal.
fn finish(store: &Store) -> Result<(), Error> {
    let state = store.state_tree()?;
    let (current, new, old) = (name(MANIFESTS), name(NEW_MANIFESTS), name(OLD_MANIFESTS));
    if own_dir(&state, &new)? {
        if own_dir(&state, &current)? {
            state.remove_dir_all(&old)?;
            state.rename(&current, &old)?;
            crashpoint::reached("manifests aside");
        }
        state.rename(&new, &current)?;
        state.sync()?;
        crashpoint::reached("manifests in place");
    }
    state.remove_dir_all(&old)?;
    if let Some(parent) = store.prefix_parent()? {
        // After an exchange, the staging name holds the old tree.
        parent.remove_dir_all(&name(STAGING))?;
        parent.remove_dir_all(&name(ASIDE))?;
    }
    crashpoint::reached("old tree removed");
    state.remove_dir_all(&name(DOWNLOADS))?;
    env::write_apt_conf(store)?;
    Journal::clear(store)?;
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
    let _lock = StateLock::acquire(store)?;
    recover(store)?;
    let installed = store.installed()?;
    if same_set(&installed, &plan.packages) && store.prefix.is_dir() {
        return Ok(InstallOutcome::AlreadyInstalled(installed));
    }
    check_space(store, plan)?;

    let mut journal = Journal {
        operation: Operation::Install,
        phase: Phase::Staging,
        packages: plan.packages.iter().map(|p| p.name.clone()).collect(),
        new_inode: None,
        new_device: None,
        pid: std::process::id(),
    };
    journal.save(store)?;
    crashpoint::reached("journal staging");

    progress.step(&format!(
        "Downloading and unpacking {} helper packages from {}",
        plan.packages.len(),
        plan.pocket.location
    ));
    let staged = stage(store, fetcher, plan, arch, cancel, &mut journal);
    let manifests = match staged {
        Ok(manifests) => manifests,
        Err(err) => {
            // Keep downloads for the next run to resume only after network trouble.
            let keep_downloads = err.exit_code() == crate::error::ExitCode::Network;
            if let Err(e) = rollback(store, keep_downloads) {
                log::error!("rolling back the helper install failed: {e}");
            }
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
    journal.save(store)?;
    crashpoint::reached("journal swapped");
    finish(store)?;
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

/// Downloads the planned debs into the download dir (reusing complete, verified ones), a
/// few at a time, and extracts each into the staging tree as soon as it is there and
/// verified, while the others download, a few at a time too; then gives the directories
/// their metadata in the packages' order, syncs the tree and writes the new manifests.
///
/// Nothing but the staging tree and the download dir is written before the swap, and a
/// deb is read only after its SHA256 and size matched the signed index, so extracting
/// one while another downloads keeps the rule "verify before use". The first failure (or
/// Ctrl-C) stops every thread at its next entry or download; the caller rolls back.
fn stage(
    store: &Store,
    fetcher: &Fetcher,
    plan: &HelperPlan,
    arch: &str,
    cancel: &Arc<AtomicBool>,
    journal: &mut Journal,
) -> Result<Vec<Manifest>, Error> {
    let parent = store.create_prefix_parent()?;
    parent.remove_dir_all(&name(STAGING))?;
    store.state_tree()?.remove_dir_all(&name(NEW_MANIFESTS))?;
    parent.create_dir_all(&name(STAGING))?;
    drop(parent);
    crashpoint::reached("staging created");
    let staging_dir = store.staging();
    let new_manifests = store.new_manifests_dir();

    // Made here, from the root, so the downloads never go through a symlink.
    store.state_tree()?.create_dir_all(&name(DOWNLOADS))?;
    let dir = store.download_dir();
    let debs: Vec<PathBuf> = plan
        .packages
        .iter()
        .map(|p| dir.join(format!("{}_{}.deb", p.name, &p.sha256.to_hex()[..16])))
        .collect();
    let policy = Policy::helper(arch);
    let run = Run {
        failures: Mutex::new(Vec::new()),
        failed: AtomicBool::new(false),
        cancel,
    };
    let owners = Mutex::new(PathOwners::new());
    let extracted: Mutex<Vec<Option<deb::Extracted>>> = Mutex::new(vec![None; plan.packages.len()]);
    let next_download = AtomicUsize::new(0);
    let (ready_tx, ready_rx) = mpsc::channel::<usize>();
    let ready_rx = Mutex::new(ready_rx);
    let (sync_tx, sync_rx) = mpsc::sync_channel::<(PathBuf, std::fs::File)>(SYNC_QUEUE);
    let sync_rx = Mutex::new(sync_rx);
    std::thread::scope(|scope| {
        for _ in 0..SYNC_THREADS {
            let (run, sync_rx) = (&run, &sync_rx);
            scope.spawn(move || {
                loop {
                    let received = sync_rx.lock().expect("sync queue").recv();
                    let Ok((path, file)) = received else { break };
                    if run.stopped() {
                        continue;
                    }
                    if let Err(e) = file.sync_all() {
                        run.fail(Error::io(path, e));
                    }
                }
            });
        }
        for _ in 0..PARALLEL_DOWNLOADS.min(plan.packages.len()) {
            let ready_tx = ready_tx.clone();
            let (run, next_download, debs) = (&run, &next_download, &debs);
            scope.spawn(move || {
                while !run.stopped() {
                    let i = next_download.fetch_add(1, Ordering::SeqCst);
                    let (Some(package), Some(deb)) = (plan.packages.get(i), debs.get(i)) else {
                        break;
                    };
                    match download_one(fetcher, plan, package, deb) {
                        // The extractors outlive the downloaders; a send cannot fail.
                        Ok(()) => ready_tx.send(i).expect("the extractors are waiting"),
                        Err(e) => run.fail(e),
                    }
                }
            });
        }
        drop(ready_tx);
        for _ in 0..extract_threads().min(plan.packages.len()) {
            let (run, ready_rx, debs, policy, owners, extracted) =
                (&run, &ready_rx, &debs, &policy, &owners, &extracted);
            let staging = &staging_dir;
            let sync = sync_tx.clone();
            scope.spawn(move || {
                loop {
                    let received = ready_rx.lock().expect("ready queue").recv();
                    let Ok(i) = received else { break };
                    if run.stopped() {
                        continue;
                    }
                    let mut guard = Guard {
                        owners,
                        expected: &plan.packages[i],
                        run,
                        staging,
                        sync: &sync,
                    };
                    match deb::extract_unfinished(&debs[i], staging, policy, &mut guard) {
                        Ok(result) => {
                            extracted.lock().expect("extracted")[i] = Some(result);
                            crashpoint::reached("deb extracted");
                        }
                        Err(e) => run.fail(e.into()),
                    }
                }
            });
        }
        drop(sync_tx);
    });
    if let Some(err) = run.into_error() {
        return Err(err);
    }
    let extracted: Vec<deb::Extracted> = extracted
        .into_inner()
        .expect("extracted")
        .into_iter()
        .map(|e| e.expect("every deb extracted when nothing failed"))
        .collect();

    let mut manifests = Vec::new();
    // What is left to sync once the files are: every directory (after its metadata),
    // what hard links changed, the manifests.
    let mut to_sync = vec![staging_dir.clone()];
    to_sync.extend(staging_dir.parent().map(Path::to_owned));
    for (package, extracted) in plan.packages.iter().zip(&extracted) {
        deb::finish_dirs(&staging_dir, extracted)?;
        to_sync.extend(extracted.entries.iter().filter_map(|e| match e.kind {
            EntryKind::Dir | EntryKind::HardLink { .. } => Some(staging_dir.join(&e.path)),
            _ => None,
        }));
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
            files: manifest_entries(&package.name, &extracted.entries)?,
        });
    }
    let new_dir = store.state_tree()?.create_dir_all(&name(NEW_MANIFESTS))?;
    to_sync.extend(manifest::store_all(&new_dir, &manifests)?);
    to_sync.push(new_manifests);
    crashpoint::reached("new manifests written");
    // Only what this install wrote, not the whole filesystem (syncfs would also wait for
    // whatever else is being written on it, which can take seconds).
    to_sync.sort();
    to_sync.dedup();
    sync_all(&to_sync)?;
    crashpoint::reached("staging synced");
    journal.phase = Phase::Staged;
    let new_tree = identity(&staging_dir);
    journal.new_inode = new_tree.map(|(_, ino)| ino);
    journal.new_device = new_tree.map(|(dev, _)| dev);
    journal.save(store)?;
    crashpoint::reached("journal staged");
    Ok(manifests)
}

/// fsyncs `paths` (files and directories, none a symlink), [`SYNC_THREADS`] at a time.
fn sync_all(paths: &[PathBuf]) -> Result<(), Error> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..SYNC_THREADS.min(paths.len()) {
            scope.spawn(|| {
                while let Some(path) = paths.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let synced = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                        .open(path)
                        .and_then(|f| f.sync_all());
                    if let Err(e) = synced {
                        failure
                            .lock()
                            .expect("failure")
                            .get_or_insert(Error::io(path, e));
                        return;
                    }
                }
            });
        }
    });
    match failure.into_inner().expect("failure") {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// At most this many debs extract at once: one per core (each also decodes its data
/// member in threads of its own when it is multi-block xz), and no more than a few, so
/// that memory stays a few decoders' worth.
fn extract_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_PARALLEL_EXTRACTIONS)
}

/// The failures of the downloading and extracting threads of one [`stage`].
struct Run<'a> {
    /// The first failure, and any cancellation (which is reported over anything else).
    failures: Mutex<Vec<Error>>,
    /// Something failed: every thread stops at its next step.
    failed: AtomicBool,
    cancel: &'a Arc<AtomicBool>,
}

impl Run<'_> {
    fn stopped(&self) -> bool {
        self.failed.load(Ordering::SeqCst) || self.cancel.load(Ordering::SeqCst)
    }

    /// Records a thread's failure. Only the first one is the cause; those that follow are
    /// mostly threads stopping because of it, and are kept only if they are Ctrl-C.
    fn fail(&self, err: Error) {
        let first = !self.failed.swap(true, Ordering::SeqCst);
        if first || err.is_cancelled() {
            self.failures.lock().expect("failures").push(err);
        } else {
            log::debug!("after an earlier failure: {err}");
        }
    }

    fn into_error(self) -> Option<Error> {
        let mut failures = self.failures.into_inner().expect("failures");
        if let Some(i) = failures.iter().position(Error::is_cancelled) {
            return Some(failures.swap_remove(i));
        }
        if failures.is_empty() && self.cancel.load(Ordering::SeqCst) {
            return Some(Error::Cancelled);
        }
        failures.into_iter().next()
    }
}

fn download_one(
    fetcher: &Fetcher,
    plan: &HelperPlan,
    package: &PackageEntry,
    dest: &Path,
) -> Result<(), Error> {
    if let Ok(mut file) = std::fs::File::open(dest)
        && let Ok((sha256, size)) = Sha256::of_reader(&mut file)
        && sha256 == package.sha256
        && size == package.size
    {
        return Ok(());
    }
    let location = plan.pocket.deb_location(package)?;
    let label = format!("{} {}", package.name, package.version);
    fetcher
        .fetch_file_unsynced(&location, dest, package.size, package.sha256, &label)
        .map(|_| ())
        .map_err(Error::from)
}

/// The manifest entries of a package's extracted entries. The prefix itself (the data
/// member's `./usr/lib/release-upgrader/`, extracted as "") is not one: it is not the
/// package's to remove.
fn manifest_entries(package: &str, entries: &[deb::Entry]) -> Result<Vec<ManifestEntry>, Error> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries.iter().filter(|e| !e.path.is_empty()) {
        let path = RelPath::new(entry.path.as_str()).map_err(|e| Error::BadPackage {
            deb: package.to_owned(),
            reason: e.to_string(),
        })?;
        out.push(manifest_entry(path, entry));
    }
    Ok(out)
}

fn manifest_entry(path: RelPath, entry: &deb::Entry) -> ManifestEntry {
    ManifestEntry {
        path,
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
/// shipped by two helpers, Ctrl-C or another thread's failure stops it, and each entry
/// is a crash point.
struct Guard<'a> {
    owners: &'a Mutex<PathOwners>,
    expected: &'a PackageEntry,
    run: &'a Run<'a>,
    staging: &'a Path,
    /// Where written files go to be synced.
    sync: &'a mpsc::SyncSender<(PathBuf, std::fs::File)>,
}

impl ExtractHooks for Guard<'_> {
    fn before_data(&mut self, deb: &Path, control: &deb::Control) -> Result<(), ru_format::Error> {
        Ok(self.guard_before_data(deb, control)?)
    }

    fn before_entry(&mut self, entry: &deb::EntryHeader<'_>) -> Result<(), ru_format::Error> {
        Ok(self.guard_before_entry(entry)?)
    }

    fn after_file(&mut self, path: &str, file: &std::fs::File) -> Result<(), ru_format::Error> {
        Ok(self.guard_after_file(path, file)?)
    }
}

/// The checks behind the hooks, in the client's own error type (a cancellation, a path
/// another helper owns), which the formats pass back unchanged.
impl Guard<'_> {
    fn guard_before_data(&mut self, deb: &Path, control: &deb::Control) -> Result<(), Error> {
        let expected = self.expected;
        if control.package != expected.name || control.version != expected.version {
            return Err(Error::BadPackage {
                deb: deb.display().to_string(),
                reason: format!(
                    "is {} {}, but the pocket's index promised {} {}",
                    control.package, control.version, expected.name, expected.version
                ),
            });
        }
        Ok(())
    }

    fn guard_before_entry(&mut self, entry: &deb::EntryHeader<'_>) -> Result<(), Error> {
        if self.run.cancel.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        if self.run.failed.load(Ordering::SeqCst) {
            // Not reported: the failure that set the flag is.
            return Err(Error::BadPackage {
                deb: self.expected.name.clone(),
                reason: "stopped: another helper failed".into(),
            });
        }
        self.owners.lock().expect("path owners").claim(
            Path::new(&self.expected.name),
            &self.expected.name,
            entry,
        )?;
        crashpoint::reached("entry");
        Ok(())
    }

    fn guard_after_file(&mut self, path: &str, file: &std::fs::File) -> Result<(), Error> {
        let path = self.staging.join(path);
        let file = file.try_clone().map_err(|e| Error::io(&path, e))?;
        // The syncing threads outlive the extractions; a send cannot fail.
        self.sync
            .send((path, file))
            .expect("the syncing threads are waiting");
        Ok(())
    }
}

/// Exchanges the staging tree with the prefix (or renames it into place when there is
/// no prefix yet), then syncs their directory; all through that directory, opened from
/// the root.
fn swap_into_place(store: &Store) -> Result<(), Error> {
    let parent = store.create_prefix_parent()?;
    let (staging, prefix, aside) = (name(STAGING), store.prefix_name()?, name(ASIDE));
    if !own_dir(&parent, &prefix)? {
        parent.rename(&staging, &prefix)?;
        return parent.sync();
    }
    match parent.exchange(&staging, &prefix) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EINVAL | nix::libc::ENOSYS | nix::libc::EOPNOTSUPP)
            ) =>
        {
            // No exchange on this filesystem: park the old tree, then rename. The
            // journal (phase Staged, new inode) lets recovery tell the two apart.
            log::debug!(
                "{}: no RENAME_EXCHANGE, swapping in two renames",
                parent.path().display()
            );
            parent.rename(&prefix, &aside)?;
            crashpoint::reached("old tree aside");
            parent.rename(&staging, &prefix)?;
        }
        Err(e) => return Err(Error::io(&store.prefix, e)),
    }
    parent.sync()
}
