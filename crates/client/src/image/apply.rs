//! Applying the downloaded files of a path: into the system tree itself through a
//! staged overlay, or into the inactive slot of an A/B pair; or, for devices whose
//! recovery applies updates, writing system-image's `ubuntu_command` instead.
//!
//! The journal (`<root>/var/lib/release-upgrader/image/journal/`): `state.json` says how
//! far a run got, `plan.json` holds the commit's operations ([`crate::image::commit`]).
//! Every path they name is relative to the root and checked as it is read, so a
//! journal means the same inside a chroot and from outside it with `--root`; one that
//! names anything else (a journal of the older format with absolute paths naming
//! another root, a path with `..`, a preserved path, a staging area other than this
//! layout's) is refused with exit 2 and never acted on.
//!
//! Recovery, run first by every apply, by phase:
//! - `staging`: throw the staging area away (the system was not touched);
//! - `committing`: finish the commit (roll forward: the staged result was verified and
//!   checked before the first operation, and finishing is what was asked for), or,
//!   when that fails, roll it back from the journal;
//! - `rolling-back`: finish the roll back;
//! - `switching` (A/B): point the `active` link at the new slot;
//! - `done`: delete the staging area (with the files the commit replaced).
//!
//! So after a crash or a failure at any point the next run finds the old system intact
//! or the new one complete, and `channel.ini` says which (it changes last).

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::confine::{RelPath, Tree};
use crate::crashpoint;
use crate::digest::Sha256;
use crate::error::{Error, ExitCode};
use crate::image::Layout;
use crate::image::commit::{self, Plan, Staging};
use crate::image::index::{Image, Kind};
use crate::image::overlay::{Final, Overlay, PRESERVED};
use crate::root::SystemRoot;
use ru_format::compress::Compression;

/// One file to apply, in order.
#[derive(Clone, Debug)]
pub struct Step<'a> {
    pub image: &'a Image,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: Sha256,
    pub name: String,
}

/// An A/B pair of system trees below the root, and the symlink naming the active one;
/// all relative to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slots {
    pub a: RelPath,
    pub b: RelPath,
    pub active: RelPath,
}

/// Where the result goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// The system tree at the root, through a staged overlay.
    Root,
    /// The inactive slot of an A/B pair, then the `active` link switched to it.
    Slots(Slots),
}

/// Whether `path` is `outer` or below it.
fn within(path: &str, outer: &str) -> bool {
    path == outer || path.strip_prefix(outer).is_some_and(|r| r.starts_with('/'))
}

/// Why `slot` cannot be a slot (it is replaced whole: it must not hold a preserved
/// path, the client's state among them).
fn slot_problem(slot: &RelPath) -> Option<String> {
    PRESERVED
        .iter()
        .find(|p| within(p, slot.as_str()))
        .map(|p| format!("it would hold /{p}, which images never touch (a slot is replaced whole)"))
}

impl Slots {
    /// The slots and link named by the command line (paths on the device, resolved
    /// under the root): refused when one is the root itself, leaves it, holds a
    /// preserved path (the state directory among them) or the active link, or when the
    /// two overlap. `active` defaults to `<state>/image/active`.
    pub fn new(
        root: &SystemRoot,
        a: &Path,
        b: &Path,
        active: Option<&Path>,
    ) -> Result<Slots, Error> {
        let bad = |path: &Path, reason: String| Error::Config {
            path: path.to_owned(),
            reason,
        };
        let rel = |flag: &str, path: &Path| {
            root.relative(path).map_err(|e| {
                let reason = match e {
                    Error::Refused { reason, .. } => reason,
                    other => other.to_string(),
                };
                bad(path, format!("{flag}: {reason}"))
            })
        };
        let (a_rel, b_rel) = (rel("--slot-a", a)?, rel("--slot-b", b)?);
        let active_rel = match active {
            Some(p) => rel("--active", p)?,
            None => Layout::new(root)
                .rel()
                .join("active")
                .expect("a plain name"),
        };
        if within(a_rel.as_str(), b_rel.as_str()) || within(b_rel.as_str(), a_rel.as_str()) {
            return Err(bad(
                b,
                format!("--slot-b overlaps --slot-a (/{a_rel}): they must be apart"),
            ));
        }
        for (flag, path, slot) in [("--slot-a", a, &a_rel), ("--slot-b", b, &b_rel)] {
            if let Some(problem) = slot_problem(slot) {
                return Err(bad(path, format!("{flag}: {problem}")));
            }
            if within(active_rel.as_str(), slot.as_str()) {
                return Err(bad(
                    path,
                    format!("{flag}: it would hold the active link /{active_rel}"),
                ));
            }
        }
        Ok(Slots {
            a: a_rel,
            b: b_rel,
            active: active_rel,
        })
    }

    /// The active slot (from the link: an absolute target is a path on the device, a
    /// relative one is taken from the link's directory) and the inactive one.
    pub fn current(&self, root: &SystemRoot, tree: &Tree) -> Result<(RelPath, RelPath), Error> {
        let link = tree.display(&self.active);
        let bad = |reason: String| Error::Config {
            path: link.clone(),
            reason,
        };
        let target = tree
            .read_link(&self.active)?
            .ok_or_else(|| bad("missing: it must be a symlink naming the active slot".into()))?;
        let named = if target.is_absolute() {
            root.relative(&target).map_err(|e| bad(e.to_string()))?
        } else {
            let mut parts: Vec<String> = self
                .active
                .split_last()
                .0
                .map(|d| d.split('/').map(str::to_owned).collect())
                .unwrap_or_default();
            for c in target.components() {
                match c {
                    Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
                    Component::CurDir => {}
                    Component::ParentDir if parts.pop().is_some() => {}
                    _ => {
                        return Err(bad(format!(
                            "points at {}, outside the root",
                            target.display()
                        )));
                    }
                }
            }
            RelPath::new(parts.join("/")).map_err(|e| bad(e.to_string()))?
        };
        if named == self.a {
            Ok((self.a.clone(), self.b.clone()))
        } else if named == self.b {
            Ok((self.b.clone(), self.a.clone()))
        } else {
            Err(bad(format!(
                "points at {}, neither slot (/{} or /{})",
                target.display(),
                self.a,
                self.b
            )))
        }
    }
}

/// Where the overlay for `slot` is staged: `.<name>.staging` beside it.
fn slot_staging(slot: &RelPath) -> RelPath {
    let (dir, name) = slot.split_last();
    let staging = format!(".{name}.staging");
    match dir {
        Some(d) => RelPath::new(format!("{d}/{staging}")),
        None => RelPath::new(staging),
    }
    .expect("a plain name beside a checked path")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    Staging,
    Committing,
    RollingBack,
    Switching,
    Done,
}

/// The format of `state.json` with paths relative to the root.
const JOURNAL_VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    version: u32,
    phase: Phase,
    target_build: u64,
    /// Where the overlay is committed, relative to the root (none: the root itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dest: Option<RelPath>,
    /// The staging area, relative to the root.
    staging: RelPath,
    /// A/B: the slot to make active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    switch_to: Option<RelPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_link: Option<RelPath>,
}

/// `state.json` as versions before 2 wrote it: absolute paths, as seen by the process
/// that wrote it.
#[derive(Debug, Deserialize)]
struct LegacyJournal {
    phase: Phase,
    target_build: u64,
    dest: PathBuf,
    staging: PathBuf,
    #[serde(default)]
    switch_to: Option<PathBuf>,
    #[serde(default)]
    active_link: Option<PathBuf>,
}

const STATE_JSON: &str = "journal/state.json";
const PLAN_JSON: &str = "journal/plan.json";
/// The overlay's final states, in journals before version 2.
const OVERLAY_JSON: &str = "journal/overlay.json";

fn rel(path: &str) -> RelPath {
    RelPath::new(path).expect("a constant relative path")
}

/// What recovery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovered {
    Nothing,
    /// An interrupted or failed apply was undone; the old system is intact.
    RolledBack,
    /// An interrupted apply was finished; the new system is complete.
    RolledForward(u64),
}

/// Why an apply or a recovery stopped.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    /// Before the commit (nothing changed), or a refused state file.
    #[error(transparent)]
    Error(#[from] Error),
    /// The commit failed and everything it had done was undone.
    #[error("the update could not be put in place and was rolled back: the system is as it was")]
    RolledBack(#[source] Error),
    /// The commit failed and undoing it failed too; the journal still holds it.
    #[error(
        "the update could not be put in place, and rolling it back failed too ({undo}); \
         `release-upgrader image recover` tries again"
    )]
    Stuck {
        #[source]
        cause: Box<Error>,
        undo: Box<Error>,
    },
}

impl Failed {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failed::Error(e) => e.exit_code(),
            Failed::RolledBack(_) => ExitCode::RolledBack,
            Failed::Stuck { .. } => ExitCode::PartlyUpgraded,
        }
    }
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Partition images skipped.
    pub partitions: Vec<String>,
    /// Mount points in the tree, left alone as preserved paths are (relative to it).
    pub mounts_left_alone: Vec<String>,
    /// The device's state a full image kept because the image does not have it
    /// (top-most paths, relative to the tree; see [`crate::image::overlay::STATE_DIRS`]).
    pub state_kept: Vec<String>,
    /// Operations of the commit.
    pub operations: usize,
}

/// The state directory and the root, opened.
struct Store<'a> {
    layout: &'a Layout,
    root: Tree,
    state: Tree,
}

impl<'a> Store<'a> {
    /// `None` when there is no state directory (nothing to recover).
    fn open(layout: &'a Layout, create: bool) -> Result<Option<Store<'a>>, Error> {
        let root = layout.root().tree()?;
        // The state directory may be a filesystem of its own (a device's read-only root
        // has its writable state bind-mounted from the data partition): mount points on
        // the way are entered, symlinks never followed.
        let state_dir = Path::new("/").join(layout.rel().as_path());
        let state = if create {
            Some(layout.root().create_dir(&state_dir)?)
        } else {
            layout.root().open_dir(&state_dir)?
        };
        Ok(state.map(|state| Store {
            layout,
            root,
            state,
        }))
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.layout.dir().join(rel)
    }

    fn bad(&self, rel: &str, reason: impl Into<String>) -> Error {
        Error::BadState {
            file: self.file(rel),
            reason: reason.into(),
        }
    }

    /// The error for a journal file this version cannot parse.
    fn unreadable(&self, rel: &str, e: serde_json::Error) -> Error {
        crate::json_state::unreadable(&self.file(rel), "image-update journal", e).into()
    }

    fn write_journal(&self, journal: &Journal) -> Result<(), Error> {
        self.state.save_json(&rel(STATE_JSON), journal)
    }

    fn write_plan(&self, plan: &Plan) -> Result<(), Error> {
        let data = crate::json_state::encode_compact(plan);
        self.state.write_atomic(&rel(PLAN_JSON), &data)
    }

    fn clear_journal(&self) -> Result<(), Error> {
        for name in [STATE_JSON, PLAN_JSON, OVERLAY_JSON] {
            self.state.remove_file(&rel(name))?;
        }
        if let Some(dir) = self.state.open_dir(&rel("journal"))? {
            dir.sync()?;
        }
        Ok(())
    }

    /// The journal, checked against this root; `None` if there is none.
    fn read_journal(&self) -> Result<Option<(Journal, bool)>, Error> {
        let Some(bytes) = self.state.read(&rel(STATE_JSON))? else {
            return Ok(None);
        };
        let bad = |reason: String| self.bad(STATE_JSON, reason);
        let unreadable = |e: serde_json::Error| self.unreadable(STATE_JSON, e);
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(unreadable)?;
        let (journal, legacy) = if value.get("version").is_some() {
            let journal: Journal = serde_json::from_value(value).map_err(unreadable)?;
            if journal.version != JOURNAL_VERSION {
                return Err(bad(format!(
                    "journal version {} is not {JOURNAL_VERSION}",
                    journal.version
                )));
            }
            (journal, false)
        } else {
            let old: LegacyJournal = serde_json::from_value(value).map_err(unreadable)?;
            (self.convert(old).map_err(bad)?, true)
        };
        self.check(&journal).map_err(bad)?;
        Ok(Some((journal, legacy)))
    }

    /// A journal of the older format, if every path it names is in this root.
    fn convert(&self, old: LegacyJournal) -> Result<Journal, String> {
        let root = self.layout.root();
        let below = |path: &Path| below_root(root, path);
        let required = |path: &Path| {
            below(path)?.ok_or_else(|| format!("it names {} (the root itself)", path.display()))
        };
        Ok(Journal {
            version: JOURNAL_VERSION,
            phase: old.phase,
            target_build: old.target_build,
            dest: below(&old.dest)?,
            staging: required(&old.staging)?,
            switch_to: old.switch_to.as_deref().map(required).transpose()?,
            active_link: old.active_link.as_deref().map(required).transpose()?,
        })
    }

    /// Whether the journal is one this layout writes.
    fn check(&self, journal: &Journal) -> Result<(), String> {
        match &journal.dest {
            None => {
                let expected = self.layout.staging_rel();
                if journal.staging != expected {
                    return Err(format!(
                        "its staging area /{} is not /{expected}",
                        journal.staging
                    ));
                }
                if journal.switch_to.is_some() || journal.active_link.is_some() {
                    return Err("it names a slot to switch to, but no slot".into());
                }
            }
            Some(dest) => {
                if let Some(problem) = slot_problem(dest) {
                    return Err(format!("its slot /{dest}: {problem}"));
                }
                let expected = slot_staging(dest);
                if journal.staging != expected {
                    return Err(format!(
                        "its staging area /{} is not /{expected}",
                        journal.staging
                    ));
                }
                if journal.switch_to.as_ref() != Some(dest) {
                    return Err(format!("it switches to another slot than /{dest}"));
                }
                match &journal.active_link {
                    Some(link) if !within(link.as_str(), dest.as_str()) => {}
                    _ => return Err("its active link is missing or inside the slot".into()),
                }
            }
        }
        Ok(())
    }

    fn dest(&self, journal: &Journal) -> Result<Tree, Error> {
        match &journal.dest {
            None => self.layout.root().tree(),
            Some(dest) => self
                .root
                .open_dir(dest)?
                .ok_or_else(|| self.bad(STATE_JSON, format!("its slot /{dest} does not exist"))),
        }
    }

    fn read_plan(&self) -> Result<Option<Plan>, Error> {
        let Some(bytes) = self.state.read(&rel(PLAN_JSON))? else {
            return Ok(None);
        };
        let plan: Plan =
            serde_json::from_slice(&bytes).map_err(|e| self.unreadable(PLAN_JSON, e))?;
        plan.validate().map_err(|e| self.bad(PLAN_JSON, e))?;
        Ok(Some(plan))
    }

    /// The plan of a journal of the older format, made now from its overlay (a commit
    /// of that version is finished with this one's operations).
    fn plan_from_overlay(
        &self,
        journal: &Journal,
        dest: &Tree,
        staging: &Staging,
    ) -> Result<Plan, Error> {
        let bytes = self
            .state
            .read(&rel(OVERLAY_JSON))?
            .ok_or_else(|| self.bad(OVERLAY_JSON, "missing"))?;
        let finals: std::collections::BTreeMap<RelPath, Final> =
            serde_json::from_slice(&bytes).map_err(|e| self.unreadable(OVERLAY_JSON, e))?;
        for (path, fin) in &finals {
            if let Final::BaseLink { target } = fin {
                RelPath::new(target.as_str())
                    .map_err(|e| self.bad(OVERLAY_JSON, format!("{path}: hard link to {e}")))?;
            }
        }
        let last = channel_ini();
        let plan = commit::prepare(
            dest,
            staging,
            finals,
            Some(&last),
            true,
            &format!("build {}", journal.target_build),
        )?;
        plan.validate().map_err(|e| self.bad(OVERLAY_JSON, e))?;
        Ok(plan)
    }

    /// Throws the staging area away and clears the journal (the destination is as it
    /// was).
    fn discard(&self, journal: &mut Journal) -> Result<(), Error> {
        if journal.phase != Phase::Staging {
            journal.phase = Phase::Staging;
            self.write_journal(journal)?;
        }
        self.root.remove_all(&journal.staging)?;
        self.clear_journal()
    }

    /// After the commit: switches slots, marks it done, deletes the staging area.
    fn finish(&self, journal: &mut Journal) -> Result<(), Error> {
        if let (Some(to), Some(link)) = (journal.switch_to.clone(), journal.active_link.clone()) {
            if journal.phase != Phase::Switching {
                journal.phase = Phase::Switching;
                self.write_journal(journal)?;
                crashpoint::reached("image-apply");
            }
            switch_link(&self.root, &link, &to)?;
            crashpoint::reached("image-apply");
        }
        journal.phase = Phase::Done;
        self.write_journal(journal)?;
        self.root.remove_all(&journal.staging)?;
        self.clear_journal()
    }

    /// Runs the plan forward; on failure, rolls back (the journal saying so first).
    fn commit(
        &self,
        journal: &mut Journal,
        dest: &Tree,
        staging: &Staging,
        plan: &Plan,
    ) -> Result<(), Failed> {
        let Err((failed_at, cause)) = commit::forward(dest, staging, plan) else {
            return Ok(());
        };
        journal.phase = Phase::RollingBack;
        // Rolled back even if this cannot be written: undoing is right either way.
        let noted = self.write_journal(journal);
        match commit::backward(dest, staging, plan, failed_at) {
            Ok(()) => {
                // The old system is back; a leftover staging area is thrown away by the
                // next run.
                let _ = noted.and_then(|()| self.discard(journal));
                Err(Failed::RolledBack(cause))
            }
            Err(undo) => Err(Failed::Stuck {
                cause: Box::new(cause),
                undo: Box::new(undo),
            }),
        }
    }
}

/// `path` relative to the root (`None`: the root itself), taken lexically against the
/// root as given and as resolved; an error naming it when it is elsewhere.
fn below_root(root: &SystemRoot, path: &Path) -> Result<Option<RelPath>, String> {
    fn plain(p: &Path) -> Vec<Component<'_>> {
        p.components().filter(|c| *c != Component::CurDir).collect()
    }
    let mut bases = vec![root.dir().to_path_buf()];
    if let Ok(resolved) = root.dir().canonicalize() {
        bases.push(resolved);
    }
    for base in &bases {
        if plain(base) == plain(path) {
            return Ok(None);
        }
        if let Ok(rel) = RelPath::below(base, path) {
            return Ok(Some(rel));
        }
    }
    Err(format!(
        "it names {}, which is not inside {} (a journal written for another root, or inside \
         a chroot of this one?)",
        path.display(),
        root.dir().display()
    ))
}

/// `etc/system-image/channel.ini`, which the commit changes last.
fn channel_ini() -> RelPath {
    rel(crate::image::config::CHANNEL_INI.trim_start_matches('/'))
}

/// Finishes or undoes an interrupted apply (see the module docs).
pub fn recover(layout: &Layout) -> Result<Recovered, Failed> {
    let Some(store) = Store::open(layout, false)? else {
        return Ok(Recovered::Nothing);
    };
    let Some((mut journal, legacy)) = store.read_journal()? else {
        return Ok(Recovered::Nothing);
    };
    match journal.phase {
        Phase::Staging => {
            store.discard(&mut journal)?;
            Ok(Recovered::RolledBack)
        }
        Phase::Committing | Phase::RollingBack => {
            let dest = store.dest(&journal)?;
            let staging_dir = match store.root.open_dir(&journal.staging)? {
                Some(dir) => dir,
                None if legacy => store.root.create_dir_all(&journal.staging)?,
                None => {
                    return Err(store
                        .bad(
                            STATE_JSON,
                            format!("its staging area /{} is gone", journal.staging),
                        )
                        .into());
                }
            };
            let staging = Staging::open(&staging_dir)?;
            let plan = match store.read_plan()? {
                Some(plan) if !legacy => plan,
                _ if legacy => {
                    let plan = store.plan_from_overlay(&journal, &dest, &staging)?;
                    store.write_plan(&plan)?;
                    store.write_journal(&journal)?;
                    plan
                }
                _ => return Err(store.bad(PLAN_JSON, "missing").into()),
            };
            if journal.phase == Phase::RollingBack {
                commit::backward(&dest, &staging, &plan, plan.ops.len()).map_err(|undo| {
                    Failed::Stuck {
                        cause: Box::new(store.bad(STATE_JSON, "an interrupted roll back")),
                        undo: Box::new(undo),
                    }
                })?;
                store.discard(&mut journal)?;
                return Ok(Recovered::RolledBack);
            }
            match store.commit(&mut journal, &dest, &staging, &plan) {
                Ok(()) => {}
                Err(Failed::RolledBack(_)) => return Ok(Recovered::RolledBack),
                Err(other) => return Err(other),
            }
            store.finish(&mut journal)?;
            Ok(Recovered::RolledForward(journal.target_build))
        }
        Phase::Switching | Phase::Done => {
            store.finish(&mut journal)?;
            Ok(Recovered::RolledForward(journal.target_build))
        }
    }
}

/// Re-checks a downloaded file's size and digest now, just before it is used.
fn recheck(step: &Step<'_>) -> Result<(), Error> {
    let mut file = fs_err::File::open(&step.path).map_err(|e| Error::io(&step.path, e))?;
    let (actual, size) = Sha256::of_reader(&mut file).map_err(|e| Error::io(&step.path, e))?;
    if size != step.size {
        return Err(Error::SizeMismatch {
            what: step.name.clone(),
            expected: step.size,
            actual: size,
        });
    }
    if actual != step.sha256 {
        return Err(Error::HashMismatch {
            what: step.name.clone(),
            expected: step.sha256.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(())
}

/// Applies `steps` (all files of the path's images, in order) to `target`, ending at
/// `target_build`.
pub fn apply(
    layout: &Layout,
    target: &Target,
    steps: &[Step<'_>],
    target_build: u64,
) -> Result<Applied, Failed> {
    recover(layout)?;
    let store = Store::open(layout, true)?.expect("created");
    let (dest, staging, switch) = match target {
        Target::Root => (None, layout.staging_rel(), None),
        Target::Slots(slots) => {
            let (current, inactive) = slots.current(layout.root(), &store.root)?;
            let staging = slot_staging(&inactive);
            (
                Some(inactive.clone()),
                staging,
                Some((current, inactive, slots.active.clone())),
            )
        }
    };
    let mut journal = Journal {
        version: JOURNAL_VERSION,
        phase: Phase::Staging,
        target_build,
        dest,
        staging,
        switch_to: switch.as_ref().map(|s| s.1.clone()),
        active_link: switch.as_ref().map(|s| s.2.clone()),
    };
    store.check(&journal).map_err(|reason| Error::Config {
        path: layout.root().dir().to_owned(),
        reason,
    })?;
    // The commit renames from the staging area into the tree, so the way to it may not
    // cross a mount (a state directory bind-mounted from another partition): checked
    // before the journal, so that a refusal leaves nothing to recover.
    if let (Some(parent), _) = journal.staging.split_last() {
        store.root.create_dir_all(&rel(parent))?;
    }
    store.write_journal(&journal)?;
    crashpoint::reached("image-apply");
    let staged = stage(&store, &journal, switch.as_ref(), steps, target_build);
    let Staged {
        dest,
        staging_dir,
        plan,
        partitions,
        mounts: mounts_left_alone,
        state_kept,
    } = match staged {
        Ok(staged) => staged,
        Err(e) => {
            // Nothing was changed: the staging area goes now (or on the next run).
            let _ = store.discard(&mut journal);
            return Err(e.into());
        }
    };
    let staging = Staging::open(&staging_dir)?;
    store.write_plan(&plan)?;
    crashpoint::reached("image-apply");
    journal.phase = Phase::Committing;
    store.write_journal(&journal)?;
    crashpoint::reached("image-apply");
    store.commit(&mut journal, &dest, &staging, &plan)?;
    store.finish(&mut journal)?;
    Ok(Applied {
        partitions,
        mounts_left_alone,
        state_kept,
        operations: plan.ops.len(),
    })
}

/// What [`stage`] made ready for the commit.
struct Staged {
    dest: Tree,
    staging_dir: Tree,
    plan: Plan,
    /// Partition images skipped.
    partitions: Vec<String>,
    /// Mount points left alone.
    mounts: Vec<String>,
    /// State a full image kept.
    state_kept: Vec<String>,
}

/// Everything before the commit: the inactive slot copied, the overlay staged and
/// verified, the commit planned and checked. The destination is not changed.
fn stage(
    store: &Store<'_>,
    journal: &Journal,
    switch: Option<&(RelPath, RelPath, RelPath)>,
    steps: &[Step<'_>],
    target_build: u64,
) -> Result<Staged, Error> {
    let root = store.layout.root();
    if let Some((current, inactive, _)) = switch {
        copy_tree(root, &store.root, current, inactive)?;
        crashpoint::reached("image-apply");
    }
    let dest = store.dest(journal)?;
    let base = match &journal.dest {
        Some(d) => root.dir().join(d.as_path()),
        None => root.dir().to_owned(),
    };
    // Its parents made confined; Overlay::new empties it and makes `objects/`.
    if let (Some(parent), _) = journal.staging.split_last() {
        store.root.create_dir_all(&rel(parent))?;
    }
    let mut overlay = Overlay::new(&base, &root.dir().join(journal.staging.as_path()))?;
    let staging_dir = store.root.create_dir_all(&journal.staging)?;
    let mut partitions = Vec::new();
    let mut last_image: Option<*const Image> = None;
    for step in steps {
        recheck(step)?;
        let new_image = last_image != Some(step.image as *const Image);
        if new_image && step.image.kind() == Some(Kind::Full) {
            overlay.reset_for_full_image()?;
        }
        last_image = Some(step.image as *const Image);
        let compression = Compression::of_image(&step.name).ok_or_else(|| Error::Malformed {
            what: step.name.clone(),
            reason: "not a .tar.xz or .tar.zst image file".into(),
        })?;
        overlay.apply_tarball(&step.path, compression, &step.name, &mut partitions)?;
        crashpoint::reached("image-apply");
    }
    let what = format!("build {target_build}");
    overlay.verify(target_build, &what)?;
    let staging = Staging::open(&staging_dir)?;
    let finals = commit::finals_of(&overlay.paths, &what)?;
    let plan = commit::prepare(&dest, &staging, finals, Some(&channel_ini()), false, &what)?;
    // The staged objects (and the links just made) are on disk before the journal
    // says the commit started.
    overlay.sync()?;
    Ok(Staged {
        dest,
        staging_dir,
        plan,
        partitions,
        mounts: overlay.mounts_left_alone().to_vec(),
        state_kept: overlay.state_kept(),
    })
}

/// Points the symlink `link` at the slot `to` (as a path on the device), atomically.
fn switch_link(root: &Tree, link: &RelPath, to: &RelPath) -> Result<(), Error> {
    let target = PathBuf::from(format!("/{to}"));
    if root.read_link(link)?.as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    if let (Some(dir), _) = link.split_last() {
        root.create_dir_all(&rel(dir))?;
    }
    root.replace_symlink(link, &target)
}

/// Makes the slot `to` an exact copy of the slot `from` (`cp -a`, which keeps hard
/// links, devices, owners and times); what `to` held is removed confined (no symlink
/// followed, no mount crossed).
fn copy_tree(root: &SystemRoot, tree: &Tree, from: &RelPath, to: &RelPath) -> Result<(), Error> {
    tree.open_dir(from)?.ok_or_else(|| Error::Config {
        path: tree.display(from),
        reason: "the active slot does not exist".into(),
    })?;
    tree.remove_all(to)?;
    tree.create_dir_all(to)?;
    let (from, to) = (
        root.dir().join(from.as_path()),
        root.dir().join(to.as_path()),
    );
    crate::task::Task::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(format!("{}/.", from.display()))
        .arg(&to)
        .run()
}

/// Writes system-image's `ubuntu_command` for a recovery that applies the update, with
/// the files and keyrings it names, into `dir` (the configured `[updater]
/// cache_partition` under the root, made confined by the caller).
pub fn write_recovery(
    dir: &Path,
    keyrings: &Path,
    images: &[&Image],
    files: &[(PathBuf, PathBuf)],
) -> Result<PathBuf, Error> {
    fs_err::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut command = String::new();
    for name in [
        "image-master.tar.xz",
        "image-signing.tar.xz",
        "device-signing.tar.xz",
    ] {
        let src = keyrings.join(name);
        if !src.exists() {
            continue;
        }
        copy_file(&src, &dir.join(name))?;
        copy_file(
            &keyrings.join(format!("{name}.asc")),
            &dir.join(format!("{name}.asc")),
        )?;
        command.push_str(&format!("load_keyring {name} {name}.asc\n"));
    }
    if images.iter().any(|i| i.kind() == Some(Kind::Full)) {
        command.push_str("format system\n");
    }
    command.push_str("mount system\n");
    for (file, sig) in files {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let sig_name = sig
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        copy_file(file, &dir.join(&name))?;
        copy_file(sig, &dir.join(&sig_name))?;
        command.push_str(&format!("update {name} {sig_name}\n"));
    }
    command.push_str("unmount system\n");
    let path = dir.join("ubuntu_command");
    crate::fsutil::write_atomic(&path, command.as_bytes())?;
    Ok(path)
}

fn copy_file(from: &Path, to: &Path) -> Result<(), Error> {
    Ok(crate::fsutil::copy_atomic(from, to).map(drop)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(p: &str) -> RelPath {
        RelPath::new(p).unwrap()
    }

    #[test]
    fn slots_are_paths_on_the_device_that_cannot_wipe_what_they_must_not() {
        let root = SystemRoot::new("/r");
        let slots = |a: &str, b: &str, active: Option<&str>| {
            Slots::new(&root, Path::new(a), Path::new(b), active.map(Path::new))
        };
        let ok = slots("/slots/a", "/slots/b", None).unwrap();
        assert_eq!(
            ok,
            Slots {
                a: rp("slots/a"),
                b: rp("slots/b"),
                active: rp("var/lib/release-upgrader/image/active"),
            }
        );
        for (a, b, active, reason) in [
            ("/slots/a", "/", None, "--slot-b"),
            ("/", "/slots/b", None, "--slot-a"),
            ("/slots/a", "/slots/../../host", None, "`..`"),
            ("/slots/a", "/slots/a", None, "overlaps"),
            ("/slots", "/slots/b", None, "overlaps"),
            ("/slots/a", "/var", None, "/var/lib/release-upgrader"),
            (
                "/slots/a",
                "/var/lib/release-upgrader",
                None,
                "images never touch",
            ),
            ("/slots/a", "/userdata", None, "images never touch"),
            (
                "/slots/a",
                "/slots/b",
                Some("/slots/b/active"),
                "active link",
            ),
            ("/slots/a", "/slots/b", Some("/../active"), "--active"),
        ] {
            let err = slots(a, b, active).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{a} {b}: {err:?}");
            assert!(
                err.to_string().contains(reason),
                "{a} {b} {active:?}: {err}"
            );
        }
    }

    #[test]
    fn the_active_link_is_read_as_the_device_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("slots/a")).unwrap();
        std::fs::create_dir_all(dir.path().join("x")).unwrap();
        let tree = root.tree().unwrap();
        let slots = Slots {
            a: rp("slots/a"),
            b: rp("slots/b"),
            active: rp("x/active"),
        };
        let link = dir.path().join("x/active");
        let current = |target: &str| {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).unwrap();
            slots.current(&root, &tree)
        };
        assert_eq!(current("/slots/a").unwrap(), (rp("slots/a"), rp("slots/b")));
        assert_eq!(
            current("../slots/b").unwrap(),
            (rp("slots/b"), rp("slots/a"))
        );
        assert_eq!(current("./../slots/a/").unwrap().0, rp("slots/a"));
        // The host's path of the slot is not the device's.
        let host = dir.path().join("slots/a");
        assert!(current(host.to_str().unwrap()).is_err());
        for bad in ["../../slots/a", "/slots/../slots/a", "/slots/c"] {
            assert!(current(bad).is_err(), "{bad}");
        }
        switch_link(&tree, &slots.active, &slots.b).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/slots/b"));
    }

    /// A root with a journal in it.
    fn with_journal(
        state: serde_json::Value,
        files: &[(&str, &str)],
    ) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let layout = Layout::new(&SystemRoot::new(&root));
        let journal = layout.journal();
        std::fs::create_dir_all(&journal).unwrap();
        std::fs::write(journal.join("state.json"), state.to_string()).unwrap();
        for (name, data) in files {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        (dir, layout)
    }

    fn refused(layout: &Layout, file: &str) -> String {
        match recover(layout) {
            Err(Failed::Error(
                Error::BadState { file: f, reason }
                | Error::Format(ru_format::Error::BadState { file: f, reason }),
            )) => {
                assert!(f.ends_with(file), "{}: {reason}", f.display());
                reason
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn journals_naming_anything_but_this_root_are_refused() {
        let staging = "var/lib/release-upgrader/image/staging";
        for (state, why) in [
            (
                serde_json::json!({"version": 2, "phase": "committing", "target_build": 3,
                                   "dest": "/", "staging": staging}),
                "absolute",
            ),
            (
                serde_json::json!({"version": 2, "phase": "staging", "target_build": 3,
                                   "staging": "var/lib/release-upgrader/image/../../../x"}),
                "`..`",
            ),
            (
                serde_json::json!({"version": 2, "phase": "staging", "target_build": 3,
                                   "staging": "usr"}),
                "is not /var/lib/release-upgrader/image/staging",
            ),
            (
                serde_json::json!({"version": 2, "phase": "staging", "target_build": 3,
                                   "dest": "var", "staging": ".var.staging",
                                   "switch_to": "var", "active_link": "x"}),
                "images never touch",
            ),
            (
                serde_json::json!({"version": 3, "phase": "staging", "target_build": 3,
                                   "staging": staging}),
                "version 3",
            ),
            (
                serde_json::json!({"phase": "staging", "target_build": 3,
                                   "dest": "/", "staging": "/var/lib/release-upgrader/image/staging"}),
                "not inside",
            ),
        ] {
            let (dir, layout) = with_journal(state.clone(), &[("usr/keep", "x")]);
            let reason = refused(&layout, "journal/state.json");
            assert!(reason.contains(why), "{state}: {reason}");
            assert!(dir.path().join("root/usr/keep").exists());
        }
    }

    #[test]
    fn a_plan_with_a_preserved_path_is_refused() {
        let (dir, layout) = with_journal(
            serde_json::json!({"version": 2, "phase": "committing", "target_build": 3,
                               "staging": "var/lib/release-upgrader/image/staging"}),
            &[
                ("var/lib/release-upgrader/image/staging/objects/1", "x"),
                ("userdata/photo", "photo"),
                (
                    "var/lib/release-upgrader/image/journal/plan.json",
                    r#"{"version":1,"ops":[{"op":"aside","path":"userdata","n":1}]}"#,
                ),
            ],
        );
        let reason = refused(&layout, "journal/plan.json");
        assert!(reason.contains("preserved"), "{reason}");
        assert!(dir.path().join("root/userdata/photo").exists());
    }

    #[test]
    fn a_journal_of_the_older_format_for_this_root_is_finished() {
        // Interrupted while staging: the staging area is thrown away.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let staging = root.join("var/lib/release-upgrader/image/staging");
        let (_keep, layout) = {
            let state = serde_json::json!({"phase": "staging", "target_build": 3,
                                           "dest": root, "staging": staging});
            let layout = Layout::new(&SystemRoot::new(&root));
            std::fs::create_dir_all(layout.journal()).unwrap();
            std::fs::write(layout.journal().join("state.json"), state.to_string()).unwrap();
            std::fs::create_dir_all(staging.join("objects")).unwrap();
            (dir, layout)
        };
        assert_eq!(recover(&layout).unwrap(), Recovered::RolledBack);
        assert!(!staging.exists());
        assert_eq!(recover(&layout).unwrap(), Recovered::Nothing);

        // Interrupted while committing: finished with this version's operations.
        let state = serde_json::json!({"phase": "committing", "target_build": 3,
                                       "dest": root, "staging": staging});
        std::fs::write(layout.journal().join("state.json"), state.to_string()).unwrap();
        std::fs::write(
            layout.journal().join("overlay.json"),
            r#"{"etc": {"state": "dir", "meta": {"mode": 493, "uid": 0, "gid": 0, "mtime": 0}},
                "etc/new": {"state": "staged", "id": 1, "kind": "file", "size": 3},
                "etc/done": {"state": "staged", "id": 2, "kind": "file", "size": 3},
                "old": {"state": "absent"}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(staging.join("objects")).unwrap();
        std::fs::write(staging.join("objects/1"), "new").unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/done"), "was renamed before the crash").unwrap();
        std::fs::write(root.join("old"), "old").unwrap();
        assert_eq!(recover(&layout).unwrap(), Recovered::RolledForward(3));
        assert_eq!(
            std::fs::read_to_string(root.join("etc/new")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/done")).unwrap(),
            "was renamed before the crash"
        );
        assert!(!root.join("old").exists());
        assert!(!staging.exists());
        assert!(!layout.journal().join("overlay.json").exists());
        assert_eq!(recover(&layout).unwrap(), Recovered::Nothing);
    }
}
