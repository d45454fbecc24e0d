//! The commit: putting a verified overlay in place, all or nothing.
//!
//! Three steps, so that what can fail fails before the tree changes:
//!
//! 1. **Plan** ([`plan`], pure): from the overlay's final states and a snapshot of what
//!    the destination has at each of those paths, the ordered list of operations. Each
//!    one is a single rename or a directory change that can be undone, and each moves
//!    what it replaces into the staging area (same file system) instead of deleting it:
//!    - `aside`: what is at a path the update removes (or turns from a file into a
//!      directory) is renamed to `staging/aside/N`; a removed directory goes whole;
//!    - `swap`: a staged object is exchanged with what is at its path
//!      (`RENAME_EXCHANGE`: the path is never missing, and the old file or directory
//!      lands where the object was);
//!    - `put`: a staged object is renamed to a path where nothing is;
//!    - `mkdir`, `chmod`, `mtime`: directories made or changed (old values recorded).
//!
//!    Directory times come after every entry, and `etc/system-image/channel.ini`, the
//!    build marker, last of all.
//! 2. **Check** ([`preflight`]): on the real file system, everything that would stop an
//!    operation and can be known beforehand: names longer than the file system takes
//!    (`NAME_MAX`, `PATH_MAX`), immutable or append-only files and directories the
//!    update replaces, removes or writes into (inode flags, also of everything inside
//!    a directory moved aside, which is deleted afterwards), mount points and symlinks
//!    on the way (refused, never crossed or followed), free space and inodes for new
//!    directories.
//! 3. **Execute** ([`forward`]) under the journal that holds the plan. Whether an
//!    operation has happened is read from the file system itself (an `aside/N` exists,
//!    a staged object is gone, the path holds the object's inode, the directory
//!    exists), so the plan is enough to finish it or undo it from any point, and no
//!    per-operation journal write is needed. On a failure (EIO, ENOSPC, EPERM that
//!    slipped past the check) the operations done so far are undone in reverse order
//!    ([`backward`]): every replaced or removed path is still in the staging area.
//!
//! After a crash in the middle, recovery rolls **forward**: the staged result was
//! verified and checked before the first operation, so finishing it is what the user
//! asked for and usually a few renames; if that fails, it rolls back. A crash during a
//! roll back finishes the roll back. Only when the last operation is done and synced
//! does the journal say so, and only then is the staging area (with the old files)
//! deleted.
//!
//! Hard links: staged objects that are links of each other keep being one inode when
//! renamed into place; a hard link to a file the update leaves alone is linked into the
//! staging area first ([`link_base_files`]) and then handled as any staged object; a
//! file of the old tree hard-linked to one the update replaces keeps the old content,
//! as with `tar`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::confine::{Blocked, Cursor, Kind, Pinned, RelPath, Stat, Tree};
use crate::crashpoint;
use crate::error::Error;
use crate::image::extract::Meta;
use crate::image::overlay::{Final, ObjectKind, preserved, protects};

/// The format of `plan.json`.
pub const PLAN_VERSION: u32 = 1;
/// Linux's `PATH_MAX`, the terminating NUL included.
const PATH_MAX: usize = 4096;

/// The staging area of a commit: the staged objects and where replaced paths go.
pub struct Staging {
    pub objects: Tree,
    pub aside: Tree,
}

impl Staging {
    /// Opens `objects/` and `aside/` (made if missing) in the staging directory `dir`.
    pub fn open(dir: &Tree) -> Result<Staging, Error> {
        let objects = dir.create_dir_all(&RelPath::new("objects").expect("plain"))?;
        let aside = dir.create_dir_all(&RelPath::new("aside").expect("plain"))?;
        if !objects.same_mount(dir) || !aside.same_mount(dir) {
            return Err(Error::Refused {
                path: dir.path().to_owned(),
                reason: "its objects are on another file system".into(),
            });
        }
        Ok(Staging { objects, aside })
    }
}

/// What the destination has at a path before the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Have {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub ino: u64,
}

impl From<&Stat> for Have {
    fn from(st: &Stat) -> Have {
        Have {
            kind: st.kind,
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            mtime: st.mtime,
            ino: st.ino,
        }
    }
}

/// One operation of the commit; paths are relative to the destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Rename what is at `path` to `aside/<n>`.
    Aside { path: RelPath, n: u64 },
    /// Rename the staged object `objects/<id>` to `path`, where nothing is.
    Put { path: RelPath, id: u64 },
    /// Exchange `objects/<id>` (inode `ino`) with what is at `path`.
    Swap { path: RelPath, id: u64, ino: u64 },
    /// Make the directory `path`, where nothing is.
    Mkdir { path: RelPath, meta: Meta },
    /// Set owner and mode of the directory `path` (it had `old`).
    Chmod {
        path: RelPath,
        meta: Meta,
        old: Meta,
    },
    /// Set the modification time of the directory `path` (it had `old`; none when made
    /// by this commit).
    Mtime {
        path: RelPath,
        mtime: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old: Option<i64>,
    },
}

impl Op {
    pub fn path(&self) -> &RelPath {
        match self {
            Op::Aside { path, .. }
            | Op::Put { path, .. }
            | Op::Swap { path, .. }
            | Op::Mkdir { path, .. }
            | Op::Chmod { path, .. }
            | Op::Mtime { path, .. } => path,
        }
    }
}

/// The operations of a commit, in order (`plan.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub ops: Vec<Op>,
}

impl Plan {
    /// Checks a plan read back from a journal: this version's, and no operation on a
    /// preserved path, nor one that would move or replace an ancestor of one. (Its
    /// paths were checked to stay inside the tree as it was read.)
    pub fn validate(&self) -> Result<(), String> {
        if self.version != PLAN_VERSION {
            return Err(format!(
                "plan version {} is not {PLAN_VERSION}",
                self.version
            ));
        }
        let mut asides = HashSet::new();
        for op in &self.ops {
            let path = op.path().as_str();
            if preserved(path) {
                return Err(format!("{path} is a preserved path"));
            }
            let moves = matches!(op, Op::Aside { .. } | Op::Put { .. } | Op::Swap { .. });
            if moves && protects(path) {
                return Err(format!("{path} holds preserved paths"));
            }
            if let Op::Aside { n, .. } = op
                && !asides.insert(*n)
            {
                return Err(format!("aside/{n} is used twice"));
            }
        }
        Ok(())
    }
}

fn malformed(what: &str, reason: String) -> Error {
    Error::Malformed {
        what: what.to_owned(),
        reason,
    }
}

/// Refuses a path the destination's file system cannot hold: a name longer than
/// `name_max` bytes, or the whole path (as `/path` on the device) longer than
/// `PATH_MAX`.
pub fn check_names<'a>(
    paths: impl IntoIterator<Item = &'a RelPath>,
    name_max: u64,
    what: &str,
) -> Result<(), Error> {
    for path in paths {
        if let Some(long) = path.components().find(|c| c.len() as u64 > name_max) {
            return Err(malformed(
                what,
                format!(
                    "{path}: a name of {} bytes ({}…), longer than the {name_max} bytes the \
                     file system takes",
                    long.len(),
                    long.chars().take(16).collect::<String>()
                ),
            ));
        }
        if path.as_str().len() + 2 > PATH_MAX {
            return Err(malformed(
                what,
                format!(
                    "a path of {} bytes, longer than the {PATH_MAX} bytes Linux takes",
                    path.as_str().len() + 1
                ),
            ));
        }
    }
    Ok(())
}

/// The operations that take the destination from what `have` says it holds (path →
/// what is there; absent: nothing) to `finals`. `objects` gives the inode of each
/// staged object present; with `resume` (a commit of an older version cut short), a
/// missing object is one already renamed into place. `last` is done after everything
/// else.
pub fn plan(
    finals: &BTreeMap<RelPath, Final>,
    have: &BTreeMap<RelPath, Have>,
    objects: &BTreeMap<u64, u64>,
    last: Option<&RelPath>,
    resume: bool,
    what: &str,
) -> Result<Plan, Error> {
    let mut ops = Vec::new();
    let mut tail = Vec::new();
    // Paths whose old content is moved away whole: nothing of the old tree is below.
    let mut gone: HashSet<&str> = HashSet::new();
    // Directories of the result, with their time and the one they had.
    let mut dirs: Vec<(&RelPath, i64, Option<i64>)> = Vec::new();
    let mut next_aside = 0u64;
    let ancestors = |path: &'_ str| -> Vec<usize> {
        path.match_indices('/').map(|(i, _)| i).collect::<Vec<_>>()
    };
    for (path, fin) in finals {
        let p = path.as_str();
        if preserved(p) {
            continue;
        }
        let cuts = ancestors(p);
        // A path is in the result only below a directory of the result.
        if *fin != Final::Absent
            && let Some(&i) = cuts
                .iter()
                .rev()
                .find(|&&i| finals.contains_key(&RelPath::new(&p[..i]).expect("ancestor")))
        {
            let parent = &p[..i];
            if !matches!(
                finals.get(&RelPath::new(parent).expect("ancestor")),
                Some(Final::Dir { .. })
            ) {
                return Err(malformed(
                    what,
                    format!("{p}: its parent {parent} is not a directory in the result"),
                ));
            }
        }
        let under_gone = cuts.iter().any(|&i| gone.contains(&p[..i]));
        let old = if under_gone { None } else { have.get(path) };
        let refuse_protected = || {
            if protects(p) {
                Err(malformed(
                    what,
                    format!("{p}: it holds paths images never touch, and would be replaced"),
                ))
            } else {
                Ok(())
            }
        };
        let mut out = Vec::new();
        match (fin, old) {
            (Final::Absent, None) => {}
            (Final::Absent, Some(_)) => {
                refuse_protected()?;
                next_aside += 1;
                out.push(Op::Aside {
                    path: path.clone(),
                    n: next_aside,
                });
                gone.insert(p);
            }
            (Final::Dir { meta }, None) => {
                out.push(Op::Mkdir {
                    path: path.clone(),
                    meta: *meta,
                });
                dirs.push((path, meta.mtime, None));
            }
            (Final::Dir { meta }, Some(h)) if h.kind == Kind::Dir => {
                if (h.mode, h.uid, h.gid) != (meta.mode & 0o7777, meta.uid, meta.gid) {
                    out.push(Op::Chmod {
                        path: path.clone(),
                        meta: *meta,
                        old: Meta {
                            mode: h.mode,
                            uid: h.uid,
                            gid: h.gid,
                            mtime: h.mtime,
                        },
                    });
                }
                dirs.push((path, meta.mtime, Some(h.mtime)));
            }
            (Final::Dir { meta }, Some(_)) => {
                refuse_protected()?;
                next_aside += 1;
                out.push(Op::Aside {
                    path: path.clone(),
                    n: next_aside,
                });
                gone.insert(p);
                out.push(Op::Mkdir {
                    path: path.clone(),
                    meta: *meta,
                });
                dirs.push((path, meta.mtime, None));
            }
            (Final::Staged { id, .. }, old) => {
                refuse_protected()?;
                let ino = match objects.get(id) {
                    Some(ino) => *ino,
                    None if resume => continue,
                    None => {
                        return Err(malformed(
                            what,
                            format!("{p}: its staged object {id} is missing"),
                        ));
                    }
                };
                match old {
                    None => out.push(Op::Put {
                        path: path.clone(),
                        id: *id,
                    }),
                    // Already that very file (a hard link to it, say).
                    Some(h) if h.ino == ino && h.kind != Kind::Dir => {}
                    Some(h) => {
                        out.push(Op::Swap {
                            path: path.clone(),
                            id: *id,
                            ino,
                        });
                        if h.kind == Kind::Dir {
                            gone.insert(p);
                        }
                    }
                }
            }
            (Final::BaseLink { .. }, _) => {
                return Err(malformed(
                    what,
                    format!("{p}: a hard link not staged before the commit"),
                ));
            }
        }
        if last == Some(path) {
            tail = out;
        } else {
            ops.extend(out);
        }
    }
    // Directory times once their entries are in place, deepest first.
    for (path, mtime, old) in dirs.iter().rev() {
        ops.push(Op::Mtime {
            path: (*path).clone(),
            mtime: *mtime,
            old: *old,
        });
    }
    if !tail.is_empty() {
        ops.extend(tail);
        // Its rename changed its directory's time again.
        if let Some(Some(parent)) = last.map(|l| l.split_last().0)
            && let Some((path, mtime, old)) = dirs.iter().find(|(p, ..)| p.as_str() == parent)
        {
            ops.push(Op::Mtime {
                path: (*path).clone(),
                mtime: *mtime,
                old: *old,
            });
        }
    }
    Ok(Plan {
        version: PLAN_VERSION,
        ops,
    })
}

/// Hard links to files the update leaves alone ([`Final::BaseLink`]) become staged
/// objects: a link of the file, made now in `objects/` under a new id.
pub fn link_base_files(
    dest: &Tree,
    staging: &Staging,
    finals: &mut BTreeMap<RelPath, Final>,
    what: &str,
) -> Result<(), Error> {
    let mut next = finals
        .values()
        .filter_map(|f| match f {
            Final::Staged { id, .. } => Some(*id),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut cursor = Cursor::new(dest);
    for (path, fin) in finals.iter_mut() {
        let Final::BaseLink { target } = fin else {
            continue;
        };
        let target = RelPath::new(target.as_str())
            .map_err(|e| malformed(what, format!("{path}: hard link to {e}")))?;
        let (dir, name) = target.split_last();
        let Some(dir) = cursor.open(dir)? else {
            return Err(malformed(
                what,
                format!("{path}: hard link to {target}, which does not exist"),
            ));
        };
        next += 1;
        dir.hard_link_at(name, &staging.objects, &next.to_string())?;
        *fin = Final::Staged {
            id: next,
            kind: ObjectKind::File,
            sha256: None,
            size: 0,
        };
    }
    Ok(())
}

/// What the destination has at each path of `finals` (paths under a symlink or a
/// non-directory are not in this tree: nothing there; under a mount point: refused).
fn snapshot(
    dest: &Tree,
    finals: &BTreeMap<RelPath, Final>,
) -> Result<BTreeMap<RelPath, Have>, Error> {
    let mut have = BTreeMap::new();
    let mut cursor = Cursor::new(dest);
    for path in finals.keys() {
        if preserved(path.as_str()) {
            continue;
        }
        let (dir, name) = path.split_last();
        match cursor.dir(dir)? {
            Ok(dir) => {
                if let Some(st) = dir.stat_at(name)? {
                    have.insert(path.clone(), Have::from(&st));
                }
            }
            Err((at, Blocked::MountPoint)) => {
                return Err(Error::Refused {
                    path: dest.path().join(at),
                    reason: format!(
                        "it is a mount point, and the update changes {path} below it \
                         (mount points are never crossed)"
                    ),
                });
            }
            Err(_) => {}
        }
    }
    Ok(have)
}

/// The inode of each staged object of `finals` that is present.
fn object_inodes(
    staging: &Staging,
    finals: &BTreeMap<RelPath, Final>,
) -> Result<BTreeMap<u64, u64>, Error> {
    let mut inodes = BTreeMap::new();
    for fin in finals.values() {
        if let Final::Staged { id, .. } = fin
            && let Some(st) = staging.objects.stat_at(&id.to_string())?
        {
            inodes.insert(*id, st.ino);
        }
    }
    Ok(inodes)
}

/// Plans the commit of `finals` into `dest` and checks it on the file system; nothing
/// of `dest` is changed. Hard links to unchanged files are staged first.
pub fn prepare(
    dest: &Tree,
    staging: &Staging,
    mut finals: BTreeMap<RelPath, Final>,
    last: Option<&RelPath>,
    resume: bool,
    what: &str,
) -> Result<Plan, Error> {
    check_names(finals.keys(), dest.space()?.name_max, what)?;
    link_base_files(dest, staging, &mut finals, what)?;
    let have = snapshot(dest, &finals)?;
    let objects = object_inodes(staging, &finals)?;
    let plan = plan(&finals, &have, &objects, last, resume, what)?;
    preflight(dest, staging, &plan)?;
    Ok(plan)
}

/// Bytes and inodes the plan needs beyond what it moves: its new directories and the
/// directory entries it adds (with a margin).
pub fn space_needed(plan: &Plan, block: u64) -> (u64, u64) {
    let mut bytes = 256 * 1024;
    let mut inodes = 8;
    for op in &plan.ops {
        match op {
            Op::Mkdir { path, .. } => {
                bytes += block + path.split_last().1.len() as u64 + 16;
                inodes += 1;
            }
            Op::Put { path, .. } | Op::Aside { path, .. } => {
                bytes += path.split_last().1.len() as u64 + 16;
            }
            _ => {}
        }
    }
    (bytes, inodes)
}

fn pinned_error(dest: &Tree, path: &str, pinned: Pinned, why: &str) -> Error {
    Error::io(
        dest.path().join(path),
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "it is {}, and the update {why}; nothing was changed (clear the flag with \
                 chattr to apply the update)",
                pinned.describe()
            ),
        ),
    )
}

fn stale(dest: &Tree, path: &str) -> Error {
    Error::Refused {
        path: dest.path().join(path),
        reason: "it changed while the update was being prepared".into(),
    }
}

/// Checks, before anything is changed, what would stop the plan's operations (see the
/// module docs).
pub fn preflight(dest: &Tree, staging: &Staging, plan: &Plan) -> Result<(), Error> {
    if !staging.objects.same_mount(dest) || !staging.aside.same_mount(dest) {
        return Err(Error::Refused {
            path: staging.objects.path().to_owned(),
            reason: format!(
                "the staging area is not on the mount of {} (it is committed by renames)",
                dest.path().display()
            ),
        });
    }
    let space = dest.space()?;
    check_names(plan.ops.iter().map(Op::path), space.name_max, "the update")?;
    let (bytes, inodes) = space_needed(plan, space.block);
    if space.bytes < bytes {
        return Err(Error::NoSpace {
            path: dest.path().to_owned(),
            needed: bytes,
            available: space.bytes,
        });
    }
    if let Some(available) = space.inodes
        && available < inodes
    {
        return Err(Error::io(
            dest.path(),
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("{inodes} free inodes needed for new directories, {available} left"),
            ),
        ));
    }
    let mut cursor = Cursor::new(dest);
    let mut created: HashSet<&str> = HashSet::new();
    let mut dir_flags: HashMap<String, Pinned> = HashMap::new();
    let mut dir_pinned = |cursor: &mut Cursor<'_>, dir: Option<&str>| -> Result<Pinned, Error> {
        let key = dir.unwrap_or("").to_owned();
        if let Some(p) = dir_flags.get(&key) {
            return Ok(*p);
        }
        let tree = cursor.open(dir)?.ok_or_else(|| stale(dest, &key))?;
        let p = tree.pinned_self()?;
        dir_flags.insert(key, p);
        Ok(p)
    };
    for op in &plan.ops {
        let path = op.path().as_str();
        let (parent, name) = op.path().split_last();
        match op {
            Op::Aside { .. } | Op::Swap { .. } => {
                let pinned = dir_pinned(&mut cursor, parent)?;
                if pinned.any() {
                    return Err(pinned_error(
                        dest,
                        parent.unwrap_or(""),
                        pinned,
                        &format!("replaces or removes {name} in it"),
                    ));
                }
                let dir = cursor.open(parent)?.ok_or_else(|| stale(dest, path))?;
                let st = dir.stat_at(name)?.ok_or_else(|| stale(dest, path))?;
                if st.mount_point {
                    return Err(Error::Refused {
                        path: dest.path().join(path),
                        reason: format!(
                            "{} (the update replaces or removes it)",
                            Blocked::MountPoint.reason()
                        ),
                    });
                }
                let pinned = dir.pinned(name, &st)?;
                if pinned.any() {
                    return Err(pinned_error(dest, path, pinned, "replaces or removes it"));
                }
                if st.kind == Kind::Dir {
                    // Moved aside whole, and deleted with the staging area afterwards.
                    let inner = dir.dir(name)?.ok_or_else(|| stale(dest, path))?;
                    inner.walk_below(&mut |d, n, rel, st| {
                        let pinned = d.pinned(n, st)?;
                        if pinned.any() {
                            return Err(pinned_error(
                                dest,
                                &format!("{path}/{rel}"),
                                pinned,
                                &format!("removes it with {path}"),
                            ));
                        }
                        Ok(true)
                    })?;
                }
                if let Op::Swap { id, .. } = op
                    && staging.objects.stat_at(&id.to_string())?.is_none()
                {
                    return Err(stale(dest, path));
                }
            }
            Op::Put { .. } | Op::Mkdir { .. } => {
                if let Op::Put { id, .. } = op
                    && staging.objects.stat_at(&id.to_string())?.is_none()
                {
                    return Err(stale(dest, path));
                }
                if !parent.is_some_and(|p| created.contains(p)) {
                    let pinned = dir_pinned(&mut cursor, parent)?;
                    if pinned.immutable {
                        return Err(pinned_error(
                            dest,
                            parent.unwrap_or(""),
                            pinned,
                            &format!("adds {name} to it"),
                        ));
                    }
                }
                if matches!(op, Op::Mkdir { .. }) {
                    created.insert(path);
                }
            }
            Op::Chmod { .. } | Op::Mtime { .. } => {
                if created.contains(path) {
                    continue;
                }
                let pinned = dir_pinned(&mut cursor, Some(path))?;
                if pinned.any() {
                    return Err(pinned_error(
                        dest,
                        path,
                        pinned,
                        "changes its owner, mode or time",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `RELEASE_UPGRADER_FAIL_AT=LABEL:N`: the N-th operation counted under LABEL
/// (`image-commit`, `image-rollback`) fails with EIO before it is done — how tests
/// reach a failure in the middle of a commit without a broken disk.
fn injected_failure(label: &str, n: usize) -> Option<std::io::Error> {
    static AT: OnceLock<Option<(String, usize)>> = OnceLock::new();
    let at = AT.get_or_init(|| {
        let value = std::env::var("RELEASE_UPGRADER_FAIL_AT").ok()?;
        let (label, n) = value.rsplit_once(':')?;
        Some((label.to_owned(), n.parse().ok()?))
    });
    match at {
        Some((l, at)) if l == label && *at == n => Some(std::io::Error::from_raw_os_error(
            nix::errno::Errno::EIO as i32,
        )),
        _ => None,
    }
}

/// Carries out and undoes operations.
struct Exec<'a> {
    dest: &'a Tree,
    staging: &'a Staging,
    cursor: Cursor<'a>,
    as_root: bool,
}

impl<'a> Exec<'a> {
    fn new(dest: &'a Tree, staging: &'a Staging) -> Self {
        Exec {
            dest,
            staging,
            cursor: Cursor::new(dest),
            as_root: nix::unistd::geteuid().is_root(),
        }
    }

    /// The directory holding `path`, and its name there.
    fn parent<'p>(&mut self, path: &'p RelPath) -> Result<(&Tree, &'p str), Error> {
        let (dir, name) = path.split_last();
        let dest = self.dest;
        let tree = self.cursor.open(dir)?.ok_or_else(|| Error::Refused {
            path: dest.display(path),
            reason: "its directory does not exist".into(),
        })?;
        Ok((tree, name))
    }

    fn stat(&mut self, path: &RelPath) -> Result<Option<Stat>, Error> {
        let (dir, name) = path.split_last();
        match self.cursor.open(dir)? {
            Some(tree) => tree.stat_at(name),
            None => Ok(None),
        }
    }

    fn is_dir(&mut self, path: &RelPath) -> Result<bool, Error> {
        Ok(self.stat(path)?.is_some_and(|s| s.kind == Kind::Dir))
    }

    /// Opens the directory `path` itself.
    fn open_dir(&mut self, path: &RelPath) -> Result<Option<&Tree>, Error> {
        self.cursor.open(Some(path.as_str()))
    }

    fn set_dir_meta(&mut self, path: &RelPath, meta: &Meta) -> Result<(), Error> {
        let owner = self.as_root.then_some((meta.uid, meta.gid));
        if let Some(dir) = self.open_dir(path)? {
            dir.set_owner_mode(owner, meta.mode)?;
        }
        Ok(())
    }

    fn set_dir_mtime(&mut self, path: &RelPath, mtime: i64) -> Result<(), Error> {
        if let Some(dir) = self.open_dir(path)? {
            dir.set_mtime(mtime)?;
        }
        Ok(())
    }

    /// Does `op` unless the file system shows it done; idempotent.
    fn forward(&mut self, op: &Op) -> Result<(), Error> {
        let staging = self.staging;
        match op {
            Op::Aside { path, n } => {
                let n = n.to_string();
                if staging.aside.stat_at(&n)?.is_none() {
                    let (dir, name) = self.parent(path)?;
                    dir.rename_at(name, &staging.aside, &n, true)?;
                    self.cursor.forget(path.as_str());
                }
            }
            Op::Put { path, id } => {
                let id = id.to_string();
                if staging.objects.stat_at(&id)?.is_some() {
                    let (dir, name) = self.parent(path)?;
                    staging.objects.rename_at(&id, dir, name, true)?;
                }
            }
            Op::Swap { path, id, ino } => {
                if self.stat(path)?.is_none_or(|s| s.ino != *ino) {
                    let (dir, name) = self.parent(path)?;
                    staging.objects.exchange_at(&id.to_string(), dir, name)?;
                    self.cursor.forget(path.as_str());
                }
            }
            Op::Mkdir { path, meta } => {
                if !self.is_dir(path)? {
                    let (dir, name) = self.parent(path)?;
                    dir.mkdir_at(name, meta.mode & 0o700)?;
                }
                self.set_dir_meta(path, meta)?;
            }
            Op::Chmod { path, meta, .. } => self.set_dir_meta(path, meta)?,
            Op::Mtime { path, mtime, .. } => self.set_dir_mtime(path, *mtime)?,
        }
        Ok(())
    }

    /// Undoes `op` if the file system shows it done; idempotent.
    fn backward(&mut self, op: &Op) -> Result<(), Error> {
        let staging = self.staging;
        match op {
            Op::Aside { path, n } => {
                let n = n.to_string();
                if staging.aside.stat_at(&n)?.is_some() {
                    let (dir, name) = self.parent(path)?;
                    staging.aside.rename_at(&n, dir, name, true)?;
                    self.cursor.forget(path.as_str());
                }
            }
            Op::Put { path, id } => {
                let id = id.to_string();
                if staging.objects.stat_at(&id)?.is_none() {
                    let (dir, name) = self.parent(path)?;
                    dir.rename_at(name, &staging.objects, &id, true)?;
                }
            }
            Op::Swap { path, id, ino } => {
                if self.stat(path)?.is_some_and(|s| s.ino == *ino) {
                    let (dir, name) = self.parent(path)?;
                    staging.objects.exchange_at(&id.to_string(), dir, name)?;
                    self.cursor.forget(path.as_str());
                }
            }
            Op::Mkdir { path, .. } => {
                if self.is_dir(path)? {
                    self.cursor.forget(path.as_str());
                    let (dir, name) = self.parent(path)?;
                    dir.rmdir_at(name)?;
                }
            }
            Op::Chmod { path, old, .. } => self.set_dir_meta(path, old)?,
            Op::Mtime { path, old, .. } => {
                if let Some(old) = old {
                    self.set_dir_mtime(path, *old)?;
                }
            }
        }
        Ok(())
    }
}

/// Carries out the plan from the start, skipping what is already done (a commit
/// resumed after a crash), and syncs. On failure: the index of the operation that
/// failed, for [`backward`].
pub fn forward(dest: &Tree, staging: &Staging, plan: &Plan) -> Result<(), (usize, Error)> {
    forward_with(dest, staging, plan, &|n| {
        injected_failure("image-commit", n)
    })
}

/// [`forward`], with `fail(n)` saying whether the n-th operation fails.
fn forward_with(
    dest: &Tree,
    staging: &Staging,
    plan: &Plan,
    fail: &dyn Fn(usize) -> Option<std::io::Error>,
) -> Result<(), (usize, Error)> {
    let mut exec = Exec::new(dest, staging);
    for (i, op) in plan.ops.iter().enumerate() {
        if let Some(e) = fail(i + 1) {
            return Err((i, Error::io(dest.display(op.path()), e)));
        }
        exec.forward(op).map_err(|e| (i, e))?;
        crashpoint::reached("image-commit");
    }
    let last = plan.ops.len().saturating_sub(1);
    dest.sync_fs().map_err(|e| (last, e))
}

/// Undoes the plan's operations up to `upto` (included), last first, skipping what is
/// not done, and syncs: the destination is as it was before the commit.
pub fn backward(dest: &Tree, staging: &Staging, plan: &Plan, upto: usize) -> Result<(), Error> {
    backward_with(dest, staging, plan, upto, &|n| {
        injected_failure("image-rollback", n)
    })
}

fn backward_with(
    dest: &Tree,
    staging: &Staging,
    plan: &Plan,
    upto: usize,
    fail: &dyn Fn(usize) -> Option<std::io::Error>,
) -> Result<(), Error> {
    let mut exec = Exec::new(dest, staging);
    let end = (upto + 1).min(plan.ops.len());
    for (k, op) in plan.ops[..end].iter().rev().enumerate() {
        if let Some(e) = fail(k + 1) {
            return Err(Error::io(dest.display(op.path()), e));
        }
        exec.backward(op)?;
        crashpoint::reached("image-rollback");
    }
    dest.sync_fs()
}

/// Plans, checks and carries out the commit of `finals` without a journal (a failure
/// is rolled back in the process; a crash is not recovered): for benchmarks and tests.
/// [`crate::image::apply`] journals it. Returns the number of operations.
pub fn commit(
    dest: &Tree,
    staging: &Staging,
    finals: BTreeMap<RelPath, Final>,
    last: Option<&RelPath>,
) -> Result<usize, Error> {
    let plan = prepare(dest, staging, finals, last, false, "the update")?;
    match forward(dest, staging, &plan) {
        Ok(()) => Ok(plan.ops.len()),
        Err((i, e)) => {
            backward(dest, staging, &plan, i)?;
            Err(e)
        }
    }
}

/// The overlay's paths as checked relative paths.
pub fn finals_of(
    paths: &BTreeMap<String, Final>,
    what: &str,
) -> Result<BTreeMap<RelPath, Final>, Error> {
    paths
        .iter()
        .map(|(p, f)| {
            RelPath::new(p.as_str())
                .map(|p| (p, f.clone()))
                .map_err(|e| malformed(what, e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn rp(p: &str) -> RelPath {
        RelPath::new(p).unwrap()
    }

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
        }
    }

    fn have(kind: Kind, ino: u64) -> Have {
        Have {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 1,
            ino,
        }
    }

    fn staged(id: u64) -> Final {
        Final::Staged {
            id,
            kind: ObjectKind::File,
            sha256: None,
            size: 0,
        }
    }

    fn finals(entries: &[(&str, Final)]) -> BTreeMap<RelPath, Final> {
        entries.iter().map(|(p, f)| (rp(p), f.clone())).collect()
    }

    fn haves(entries: &[(&str, Have)]) -> BTreeMap<RelPath, Have> {
        entries.iter().map(|(p, h)| (rp(p), *h)).collect()
    }

    fn objects(ids: &[u64]) -> BTreeMap<u64, u64> {
        ids.iter().map(|id| (*id, 1000 + id)).collect()
    }

    #[test]
    fn each_final_state_becomes_the_operation_that_keeps_what_it_replaces() {
        let f = finals(&[
            ("a", Final::Dir { meta: meta(0o750) }),
            ("a/changed", staged(1)),
            ("a/new", staged(2)),
            ("a/gone", Final::Absent),
            ("a/gone/deep", Final::Absent),
            ("dir-to-file", staged(3)),
            ("dir-to-file/inner", Final::Absent),
            ("file-to-dir", Final::Dir { meta: meta(0o755) }),
            ("file-to-dir/x", staged(4)),
            ("newdir", Final::Dir { meta: meta(0o755) }),
        ]);
        let h = haves(&[
            ("a", have(Kind::Dir, 1)),
            ("a/changed", have(Kind::File, 2)),
            ("a/gone", have(Kind::Dir, 3)),
            ("a/gone/deep", have(Kind::File, 4)),
            ("dir-to-file", have(Kind::Dir, 5)),
            ("dir-to-file/inner", have(Kind::File, 6)),
            ("file-to-dir", have(Kind::Symlink, 7)),
        ]);
        let plan = plan(&f, &h, &objects(&[1, 2, 3, 4]), None, false, "t").unwrap();
        let ops: Vec<String> = plan
            .ops
            .iter()
            .map(|op| serde_json::to_string(op).unwrap())
            .collect();
        let want = [
            r#"{"op":"chmod","path":"a","meta":{"mode":488,"uid":0,"gid":0,"mtime":1700000000},"old":{"mode":493,"uid":0,"gid":0,"mtime":1}}"#,
            r#"{"op":"swap","path":"a/changed","id":1,"ino":1001}"#,
            r#"{"op":"aside","path":"a/gone","n":1}"#,
            r#"{"op":"put","path":"a/new","id":2}"#,
            r#"{"op":"swap","path":"dir-to-file","id":3,"ino":1003}"#,
            r#"{"op":"aside","path":"file-to-dir","n":2}"#,
            r#"{"op":"mkdir","path":"file-to-dir","meta":{"mode":493,"uid":0,"gid":0,"mtime":1700000000}}"#,
            r#"{"op":"put","path":"file-to-dir/x","id":4}"#,
            r#"{"op":"mkdir","path":"newdir","meta":{"mode":493,"uid":0,"gid":0,"mtime":1700000000}}"#,
            r#"{"op":"mtime","path":"newdir","mtime":1700000000}"#,
            r#"{"op":"mtime","path":"file-to-dir","mtime":1700000000}"#,
            r#"{"op":"mtime","path":"a","mtime":1700000000,"old":1}"#,
        ];
        assert_eq!(ops, want);
    }

    #[test]
    fn the_build_marker_changes_after_everything_else() {
        let ini = rp("etc/system-image/channel.ini");
        let f = finals(&[
            ("etc", Final::Dir { meta: meta(0o755) }),
            ("etc/system-image", Final::Dir { meta: meta(0o755) }),
            ("etc/system-image/channel.ini", staged(1)),
            ("usr/bin/z", staged(2)),
        ]);
        let h = haves(&[
            ("etc", have(Kind::Dir, 1)),
            ("etc/system-image", have(Kind::Dir, 2)),
            ("etc/system-image/channel.ini", have(Kind::File, 3)),
        ]);
        let plan = plan(&f, &h, &objects(&[1, 2]), Some(&ini), false, "t").unwrap();
        let n = plan.ops.len();
        assert_eq!(
            plan.ops[n - 2],
            Op::Swap {
                path: ini.clone(),
                id: 1,
                ino: 1001
            }
        );
        // Then only its directory's time, which the rename changed.
        assert!(
            matches!(&plan.ops[n - 1], Op::Mtime { path, .. } if path.as_str() == "etc/system-image")
        );
    }

    #[test]
    fn preserved_paths_are_never_touched_and_their_ancestors_never_replaced() {
        // Preserved paths in the final states are skipped.
        let f = finals(&[("var/lib/release-upgrader/x", Final::Absent)]);
        let h = haves(&[("var/lib/release-upgrader/x", have(Kind::File, 1))]);
        assert!(
            plan(&f, &h, &objects(&[]), None, false, "t")
                .unwrap()
                .ops
                .is_empty()
        );
        // An ancestor of one is never moved aside or swapped.
        for fin in [Final::Absent, staged(1)] {
            let f = finals(&[("var/lib", fin)]);
            let h = haves(&[("var/lib", have(Kind::Dir, 1))]);
            let err = plan(&f, &h, &objects(&[1]), None, false, "t").unwrap_err();
            assert!(err.to_string().contains("var/lib"), "{err}");
        }
        // A plan read back with such an operation is refused.
        for op in [
            r#"{"op":"aside","path":"var","n":1}"#,
            r#"{"op":"put","path":"userdata/x","id":1}"#,
            r#"{"op":"mtime","path":"proc","mtime":0}"#,
        ] {
            let plan: Plan =
                serde_json::from_str(&format!(r#"{{"version":1,"ops":[{op}]}}"#)).unwrap();
            assert!(plan.validate().is_err(), "{op}");
        }
    }

    #[test]
    fn a_plan_naming_a_path_outside_the_tree_does_not_load() {
        for op in [
            r#"{"op":"aside","path":"../x","n":1}"#,
            r#"{"op":"put","path":"/etc/passwd","id":1}"#,
            r#"{"op":"swap","path":"a/../../b","id":1,"ino":2}"#,
        ] {
            let err = serde_json::from_str::<Plan>(&format!(r#"{{"version":1,"ops":[{op}]}}"#))
                .unwrap_err();
            assert!(err.to_string().contains("not a path inside"), "{op}: {err}");
        }
        let plan: Plan = serde_json::from_str(
            r#"{"version":1,"ops":[{"op":"aside","path":"a","n":1},{"op":"aside","path":"b","n":1}]}"#,
        )
        .unwrap();
        assert!(plan.validate().unwrap_err().contains("twice"));
    }

    #[test]
    fn objects_already_in_place_and_the_same_inode_need_no_operation() {
        let f = finals(&[("a", staged(1)), ("b", staged(2))]);
        // `a` already is the object's inode (a hard link made before).
        let h = haves(&[("a", have(Kind::File, 1001))]);
        let p = plan(&f, &h, &objects(&[1]), None, true, "t").unwrap();
        assert!(p.ops.is_empty(), "{:?}", p.ops);
        // Without `resume`, a missing object is an error.
        let err = plan(&f, &h, &objects(&[1]), None, false, "t").unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn a_path_below_a_non_directory_of_the_result_is_refused() {
        let f = finals(&[("a", staged(1)), ("a/b", staged(2))]);
        let err = plan(&f, &BTreeMap::new(), &objects(&[1, 2]), None, false, "t").unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn names_longer_than_the_file_system_takes_are_refused() {
        let ok = rp(&format!("usr/{}", "n".repeat(255)));
        check_names([&ok], 255, "t").unwrap();
        let long = rp(&format!("usr/{}", "n".repeat(256)));
        let err = check_names([&long], 255, "t").unwrap_err();
        assert!(err.to_string().contains("256 bytes"), "{err}");
        // 4095 bytes: with its `/` and the terminating NUL, one more than PATH_MAX.
        let deep = rp(&format!(
            "{}/{}",
            vec!["d".repeat(200); 20].join("/"),
            "e".repeat(75)
        ));
        let err = check_names([&deep], 255, "t").unwrap_err();
        assert!(err.to_string().contains("4096"), "{err}");
    }

    #[test]
    fn space_needed_counts_new_directories_and_entries() {
        let plan = Plan {
            version: PLAN_VERSION,
            ops: vec![
                Op::Mkdir {
                    path: rp("a"),
                    meta: meta(0o755),
                },
                Op::Put {
                    path: rp("a/bb"),
                    id: 1,
                },
                Op::Swap {
                    path: rp("c"),
                    id: 2,
                    ino: 3,
                },
            ],
        };
        let (bytes, inodes) = space_needed(&plan, 4096);
        assert_eq!(inodes, 9);
        assert_eq!(bytes, 256 * 1024 + 4096 + 1 + 16 + 2 + 16);
    }

    /// A device tree, a staging area with objects, and the final states taking one to
    /// the other: every kind of change, hard links and the build marker included.
    struct Scene {
        _dir: tempfile::TempDir,
        dest: std::path::PathBuf,
        staging: std::path::PathBuf,
        finals: BTreeMap<RelPath, Final>,
    }

    fn write(path: &Path, data: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    fn scene() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        let staging = dir
            .path()
            .join("dest/var/lib/release-upgrader/image/staging");
        let d = |p: &str| dest.join(p);
        write(&d("etc/system-image/channel.ini"), "build 1");
        write(&d("a/changed"), "old");
        write(&d("a/keep"), "keep");
        write(&d("a/gone/deep/f"), "gone");
        write(&d("dir-to-file/inner"), "inner");
        write(&d("file-to-dir"), "was a file");
        write(&d("removed"), "removed");
        write(&d("h"), "hard");
        std::fs::hard_link(d("h"), d("a/h2")).unwrap();
        std::os::unix::fs::symlink("a/keep", d("link")).unwrap();
        write(&d("var/lib/release-upgrader/state"), "state");
        std::fs::set_permissions(d("a"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let o = |id: u64| staging.join("objects").join(id.to_string());
        write(&o(1), "new changed");
        write(&o(2), "new file");
        std::fs::hard_link(o(2), o(3)).unwrap();
        write(&o(4), "file replacing a dir");
        write(&o(5), "in a dir replacing a file");
        std::os::unix::fs::symlink("a/new", o(6)).unwrap();
        write(&o(7), "build 2");
        let finals = finals(&[
            ("a", Final::Dir { meta: meta(0o750) }),
            ("a/changed", staged(1)),
            ("a/gone", Final::Absent),
            ("a/gone/deep", Final::Absent),
            ("a/gone/deep/f", Final::Absent),
            ("a/new", staged(2)),
            ("a/new-link", staged(3)),
            ("a/h3", Final::BaseLink { target: "h".into() }),
            ("dir-to-file", staged(4)),
            ("dir-to-file/inner", Final::Absent),
            ("file-to-dir", Final::Dir { meta: meta(0o700) }),
            ("file-to-dir/x", staged(5)),
            ("link", staged(6)),
            ("removed", Final::Absent),
            ("b", Final::Dir { meta: meta(0o755) }),
            ("b/c", Final::Dir { meta: meta(0o755) }),
            ("etc/system-image/channel.ini", staged(7)),
        ]);
        Scene {
            _dir: dir,
            dest,
            staging,
            finals,
        }
    }

    /// Every path below `dir` but the staging area: type, mode, content or target,
    /// and inode identity among the tree's hard links.
    fn listing(dir: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
        let mut stack = vec![(dir.to_path_buf(), String::new())];
        while let Some((d, rel)) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap()).collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name().to_string_lossy().into_owned();
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if path.starts_with("var/lib/release-upgrader/image") {
                    continue;
                }
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                let desc = if m.file_type().is_symlink() {
                    format!("link {}", std::fs::read_link(e.path()).unwrap().display())
                } else if m.is_dir() {
                    stack.push((e.path(), path.clone()));
                    format!("dir {:o}", m.mode() & 0o7777)
                } else {
                    let first = inodes
                        .entry(m.ino())
                        .or_insert_with(|| path.clone())
                        .clone();
                    format!(
                        "file {:o} {:?} same as {first}",
                        m.mode() & 0o7777,
                        std::fs::read_to_string(e.path()).unwrap()
                    )
                };
                out.insert(path, desc);
            }
        }
        out
    }

    fn open(s: &Scene) -> (Tree, Staging) {
        let dest = Tree::open(&s.dest).unwrap();
        let staging = Staging::open(&Tree::open(&s.staging).unwrap()).unwrap();
        (dest, staging)
    }

    fn prepared(s: &Scene) -> (Tree, Staging, Plan) {
        let (dest, staging) = open(s);
        let ini = rp("etc/system-image/channel.ini");
        let plan = prepare(&dest, &staging, s.finals.clone(), Some(&ini), false, "t").unwrap();
        (dest, staging, plan)
    }

    fn never(_: usize) -> Option<std::io::Error> {
        None
    }

    fn eio(_: usize) -> Option<std::io::Error> {
        Some(std::io::Error::from_raw_os_error(5))
    }

    #[test]
    fn a_commit_puts_every_kind_of_change_in_place() {
        let s = scene();
        let (dest, staging, plan) = prepared(&s);
        forward_with(&dest, &staging, &plan, &never).unwrap();
        let got = listing(&s.dest);
        let want: BTreeMap<String, String> = [
            ("a", "dir 750"),
            ("a/changed", "file 644 \"new changed\" same as a/changed"),
            ("a/h2", "file 644 \"hard\" same as h"),
            ("a/h3", "file 644 \"hard\" same as h"),
            ("a/keep", "file 644 \"keep\" same as a/keep"),
            ("a/new", "file 644 \"new file\" same as a/new"),
            ("a/new-link", "file 644 \"new file\" same as a/new"),
            ("b", "dir 755"),
            ("b/c", "dir 755"),
            (
                "dir-to-file",
                "file 644 \"file replacing a dir\" same as dir-to-file",
            ),
            ("etc", "dir 755"),
            ("etc/system-image", "dir 755"),
            (
                "etc/system-image/channel.ini",
                "file 644 \"build 2\" same as etc/system-image/channel.ini",
            ),
            ("file-to-dir", "dir 700"),
            (
                "file-to-dir/x",
                "file 644 \"in a dir replacing a file\" same as file-to-dir/x",
            ),
            ("h", "file 644 \"hard\" same as h"),
            ("link", "link a/new"),
            ("var", "dir 755"),
            ("var/lib", "dir 755"),
            ("var/lib/release-upgrader", "dir 755"),
            (
                "var/lib/release-upgrader/state",
                "file 644 \"state\" same as var/lib/release-upgrader/state",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(got, want);
        // Everything replaced or removed is in the staging area, until it is deleted.
        assert_eq!(
            std::fs::read_to_string(s.staging.join("objects/1")).unwrap(),
            "old"
        );
        assert!(s.staging.join("objects/4/inner").is_file());
    }

    /// A failure at any operation, undone: the tree is exactly as before, and the
    /// staged objects are back for another try.
    #[test]
    fn a_failure_at_any_operation_rolls_back_to_exactly_the_old_tree() {
        let n = {
            let s = scene();
            prepared(&s).2.ops.len()
        };
        assert!(n > 15, "{n}");
        for k in 1..=n {
            let s = scene();
            let (dest, staging, plan) = prepared(&s);
            let before = listing(&s.dest);
            let fail = |i: usize| (i == k).then(|| std::io::Error::from_raw_os_error(5));
            let (at, err) = forward_with(&dest, &staging, &plan, &fail).unwrap_err();
            assert_eq!(at, k - 1);
            assert!(err.to_string().contains("Input/output error"), "{err}");
            backward(&dest, &staging, &plan, at).unwrap();
            assert_eq!(listing(&s.dest), before, "failed at operation {k}");
            // And a second roll back (a crash during the first) changes nothing.
            backward(&dest, &staging, &plan, plan.ops.len()).unwrap();
            assert_eq!(listing(&s.dest), before, "rolled back twice at {k}");
            // The same plan then goes through.
            forward_with(&dest, &staging, &plan, &never).unwrap();
        }
    }

    /// Cut short after any operation (a crash), the commit finishes by running it
    /// again, or rolls back to exactly the old tree; a roll back cut short finishes too.
    #[test]
    fn a_commit_cut_short_anywhere_finishes_or_rolls_back_exactly() {
        let done = {
            let s = scene();
            let (dest, staging, plan) = prepared(&s);
            forward_with(&dest, &staging, &plan, &never).unwrap();
            listing(&s.dest)
        };
        let n = {
            let s = scene();
            prepared(&s).2.ops.len()
        };
        for k in 1..=n {
            for roll_back in [false, true] {
                let s = scene();
                let (dest, staging, plan) = prepared(&s);
                let before = listing(&s.dest);
                // Stops before operation k: operations 1..k-1 are done.
                let stop = |i: usize| (i == k).then(|| std::io::Error::from_raw_os_error(4));
                let _ = forward_with(&dest, &staging, &plan, &stop);
                // A new process: new handles.
                let (dest, staging) = open(&s);
                if roll_back {
                    // Cut short in the middle of the roll back too.
                    let half = |i: usize| (i == k / 2 + 1).then(|| eio(i).unwrap());
                    let _ = backward_with(&dest, &staging, &plan, plan.ops.len(), &half);
                    backward(&dest, &staging, &plan, plan.ops.len()).unwrap();
                    assert_eq!(listing(&s.dest), before, "rolled back after {k}");
                } else {
                    forward_with(&dest, &staging, &plan, &never).unwrap();
                    assert_eq!(listing(&s.dest), done, "finished after {k}");
                }
            }
        }
    }

    #[test]
    fn the_check_refuses_immutable_files_before_anything_changes() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to set inode flags");
            return;
        }
        for (path, flag, why) in [
            (
                "a/changed",
                rustix::fs::IFlags::IMMUTABLE,
                "replaces or removes it",
            ),
            (
                "removed",
                rustix::fs::IFlags::APPEND,
                "replaces or removes it",
            ),
            (
                "a/gone/deep/f",
                rustix::fs::IFlags::IMMUTABLE,
                "removes it with a/gone",
            ),
            ("b", rustix::fs::IFlags::IMMUTABLE, "adds"),
            (
                "a",
                rustix::fs::IFlags::IMMUTABLE,
                "changes its owner, mode or time",
            ),
        ] {
            let s = scene();
            std::fs::create_dir_all(s.dest.join("b")).unwrap();
            let target = s.dest.join(path);
            let fd = std::fs::File::open(&target).unwrap();
            let flags = match rustix::fs::ioctl_getflags(&fd) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("skipped: no inode flags on the temporary directory ({e})");
                    return;
                }
            };
            if rustix::fs::ioctl_setflags(&fd, flags | flag).is_err() {
                eprintln!("skipped: cannot set inode flags here");
                return;
            }
            let before = listing(&s.dest);
            let (dest, staging) = open(&s);
            let ini = rp("etc/system-image/channel.ini");
            let err =
                prepare(&dest, &staging, s.finals.clone(), Some(&ini), false, "t").unwrap_err();
            rustix::fs::ioctl_setflags(&fd, flags).unwrap();
            let text = err.to_string();
            assert!(text.contains(path) && text.contains(why), "{path}: {text}");
            assert!(
                matches!(err, Error::Format(ru_format::Error::Io { .. })),
                "{err:?}"
            );
            assert_eq!(listing(&s.dest), before, "{path}");
        }
    }

    #[test]
    fn a_commit_without_a_journal_rolls_back_its_own_failure() {
        let s = scene();
        let (dest, staging) = open(&s);
        let ops = commit(
            &dest,
            &staging,
            s.finals.clone(),
            Some(&rp("etc/system-image/channel.ini")),
        )
        .unwrap();
        assert!(ops > 15);
        assert_eq!(
            std::fs::read_to_string(s.dest.join("etc/system-image/channel.ini")).unwrap(),
            "build 2"
        );
    }
}
