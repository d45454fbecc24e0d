//! The changes a chain of images makes to a system tree, staged beside it; the commit
//! ([`crate::image::commit`]) then puts them in place with renames.
//!
//! Applying never writes into the live tree. Each member becomes a staged object
//! (`staging/objects/N`: a file, symlink or node with its final metadata) and the
//! overlay records the final state of every path it touches: absent, a directory, a
//! staged object, or a hard link to an unchanged file. Until the commit starts the live
//! tree is untouched.
//!
//! Preserved paths ([`PRESERVED`]: the client's state, user data, mount points) are
//! never touched, and neither are their ancestors (`var`, `var/lib`): an image that
//! removes or lacks one empties it of everything else instead, and one that would make
//! it a file or a symlink is refused.
//!
//! A zdelta patch applies to the file at its base path as it was before its tarball
//! changed anything (the base may be a path that the same tarball removes or replaces,
//! as a renamed library's old name is). Staged objects are never rewritten before the
//! commit and the base tree is not touched, so it is enough to remember, while a
//! tarball is applied, the state each path had before the tarball set it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crashpoint;
use crate::error::Error;
use crate::image::extract::{self, Member, Meta, What};
use crate::image::rebuilds::{self, Rebuilds};
use ru_format::compress::{self, Compression, Limits};
use ru_format::tarfile;

/// Paths of the system tree that images never touch (state, mounts, user data).
pub const PRESERVED: &[&str] = &[
    "var/lib/release-upgrader",
    "proc",
    "sys",
    "dev",
    "run",
    "userdata",
    "cache",
    "lost+found",
];

/// Whether `path` is a preserved path or below one: images never touch it.
pub fn preserved(path: &str) -> bool {
    PRESERVED
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// Where a system keeps its state and its users' files. A full image replaces the
/// system, not its data: what the device has here and the image does not is kept (and
/// reported), where a delta's explicit removals and the image's own members still apply.
/// (On a stock device these are bind mounts from the user data partition, left alone as
/// every mount point is; on a tree without them, the data is in the tree itself.)
pub const STATE_DIRS: &[&str] = &["var/lib", "home", "root", "srv"];

/// Whether `path` is a state directory of [`STATE_DIRS`] or below one.
pub fn is_state(path: &str) -> bool {
    STATE_DIRS.iter().any(|d| is_at_or_below(path, d))
}

/// Whether `path` is an ancestor of a preserved path (`var`, `var/lib`): it stays a
/// directory whatever an image says, and removing it empties it of everything but the
/// preserved paths instead (removing it would remove them with it).
pub fn protects(path: &str) -> bool {
    PRESERVED
        .iter()
        .any(|p| p.strip_prefix(path).is_some_and(|r| r.starts_with('/')))
}

/// What an overlay leaves alone: the [`PRESERVED`] paths, and the mount points below its
/// base. A mount point holds another file system (a device's tmpfs `/tmp`, user data
/// bind-mounted over a system path): it is not the image's to replace, and nothing in it
/// is the image's to remove. Like a preserved path, it stays as it is, members below it
/// are skipped, and its ancestors stay directories.
#[derive(Debug, Default)]
struct Kept {
    /// Mount points below the base, relative to it.
    mounts: Vec<String>,
}

impl Kept {
    fn below(base: &Path) -> Result<Kept, Error> {
        Ok(Kept {
            mounts: crate::confine::mount_points_below(base)?,
        })
    }

    /// Whether the image leaves `path` alone (it is kept, or below something kept).
    fn keeps(&self, path: &str) -> bool {
        preserved(path) || self.mounts.iter().any(|m| is_at_or_below(path, m))
    }

    /// Whether `path` is an ancestor of something kept.
    fn holds(&self, path: &str) -> bool {
        protects(path)
            || self
                .mounts
                .iter()
                .any(|m| is_at_or_below(m, path) && m != path)
    }

    /// What `path` holds that is kept, for messages.
    fn held_by(&self, path: &str) -> Vec<&str> {
        PRESERVED
            .iter()
            .copied()
            .chain(self.mounts.iter().map(String::as_str))
            .filter(|p| is_at_or_below(p, path) && *p != path)
            .collect()
    }
}

/// Whether `path` is `dir` or below it.
fn is_at_or_below(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// The kind of a staged object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    File,
    Symlink,
    Node,
}

/// The final state of one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Final {
    Absent,
    Dir {
        meta: Meta,
    },
    Staged {
        id: u64,
        kind: ObjectKind,
        /// For files: the content's size, checked again before commit, and for patched
        /// files the digest their bytes were checked against as they were written.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<Sha256Hex>,
        #[serde(default)]
        size: u64,
    },
    /// A hard link to a path the overlay leaves unchanged.
    BaseLink {
        target: String,
    },
}

/// A digest as hex in the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sha256Hex(pub String);

/// The overlay being built over `base`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Overlay {
    pub base: PathBuf,
    pub staging: PathBuf,
    pub paths: BTreeMap<String, Final>,
    next_id: u64,
    #[serde(skip)]
    as_root: bool,
    /// While a tarball is applied: the state each path it set had before (`None`: not
    /// in the overlay), for patch bases.
    #[serde(skip)]
    before: BTreeMap<String, Option<Final>>,
    /// While a tarball is applied: the workers writing its patched files.
    #[serde(skip)]
    rebuilds: Option<Rebuilds>,
    /// While a tarball is applied: the object each file its patches make (by digest and
    /// size) is written to, so that the same file again is a copy of it.
    #[serde(skip)]
    patched: HashMap<(ru_format::digest::Sha256, u64), PathBuf>,
    /// Directories of the base tree seen to be real (the base does not change while
    /// the overlay is built, and every member asks for its parents again).
    #[serde(skip)]
    base_dirs: RealDirs,
    /// What is left alone: preserved paths and mount points.
    #[serde(skip)]
    kept: Kept,
    /// The device's state a full image kept because the image does not have it: the
    /// top-most such paths (see [`STATE_DIRS`]).
    #[serde(skip)]
    kept_state: std::collections::BTreeSet<String>,
}

/// What a path currently resolves to through the overlay.
enum Lookup<'a> {
    Overlay(&'a Final),
    /// Unchanged: whatever the base tree has (possibly nothing).
    Base,
    /// Under a path the overlay removed or replaced by a non-directory.
    Hidden,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

impl Overlay {
    /// Starts an empty overlay over `base`, staging under `staging` (created empty; it
    /// must be on the filesystem of `base`, and derived from the root by the caller:
    /// what was there is removed without following symlinks or crossing mounts).
    pub fn new(base: &Path, staging: &Path) -> Result<Overlay, Error> {
        crate::confine::remove_all(staging)?;
        let objects = staging.join("objects");
        fs_err::create_dir_all(&objects).map_err(io_err(&objects))?;
        Ok(Overlay {
            base: base.to_owned(),
            staging: staging.to_owned(),
            paths: BTreeMap::new(),
            next_id: 0,
            as_root: nix::unistd::geteuid().is_root(),
            before: BTreeMap::new(),
            rebuilds: None,
            patched: HashMap::new(),
            base_dirs: RealDirs::default(),
            kept: Kept::below(base)?,
            kept_state: Default::default(),
        })
    }

    /// The mount points below the base, which the overlay leaves alone.
    pub fn mounts_left_alone(&self) -> &[String] {
        &self.kept.mounts
    }

    /// The device's state (files and directories under [`STATE_DIRS`]) that a full image
    /// kept because the image does not have it; only the top-most paths, and only those
    /// the images applied since left as the device had them.
    pub fn state_kept(&self) -> Vec<String> {
        self.kept_state
            .iter()
            .filter(|p| !self.paths.contains_key(p.as_str()))
            .cloned()
            .collect()
    }

    fn object(&self, id: u64) -> PathBuf {
        self.staging.join("objects").join(id.to_string())
    }

    fn new_object(&mut self) -> (u64, PathBuf) {
        self.next_id += 1;
        (self.next_id, self.object(self.next_id))
    }

    fn lookup(&self, path: &str) -> Lookup<'_> {
        lookup_in(|p| self.paths.get(p), path)
    }

    /// What `path` resolved to before the tarball being applied changed anything.
    fn lookup_before(&self, path: &str) -> Lookup<'_> {
        lookup_in(
            |p| match self.before.get(p) {
                Some(prior) => prior.as_ref(),
                None => self.paths.get(p),
            },
            path,
        )
    }

    /// Sets the state of `path`, remembering the one it had before this tarball.
    fn set(&mut self, path: String, state: Final) {
        let prior = self.paths.insert(path.clone(), state);
        self.before.entry(path).or_insert(prior);
    }

    /// Marks `path` and everything below it (in the overlay and in the base) absent;
    /// preserved paths stay, and so do their ancestors, emptied of everything else.
    pub fn remove(&mut self, path: &str) -> Result<(), Error> {
        if self.kept.keeps(path) {
            return Ok(());
        }
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .paths
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !self.kept.keeps(k) && !self.kept.holds(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.set(k, Final::Absent);
        }
        if matches!(self.lookup(path), Lookup::Base) {
            self.hide_base_below(path, false)?;
        }
        if !self.kept.holds(path) {
            self.set(path.to_owned(), Final::Absent);
        }
        Ok(())
    }

    /// Marks what the base tree has below `path` absent (when `path` is a real
    /// directory there). With `keep_state`, what is under [`STATE_DIRS`] stays.
    fn hide_base_below(&mut self, path: &str, keep_state: bool) -> Result<(), Error> {
        let dir = self.base.join(path);
        let is_dir = (path.is_empty() || self.base_dirs.ancestors_real(&self.base, path))
            && std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        if !is_dir {
            return Ok(());
        }
        let mut stack = vec![(dir, path.to_owned())];
        while let Some((dir, rel)) = stack.pop() {
            for entry in fs_err::read_dir(&dir).map_err(io_err(&dir))? {
                let entry = entry.map_err(io_err(&dir))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let child = if rel.is_empty() {
                    name.into_owned()
                } else {
                    format!("{rel}/{name}")
                };
                if self.kept.keeps(&child) || self.paths.contains_key(&child) {
                    continue;
                }
                let ft = entry.file_type().map_err(io_err(&entry.path()))?;
                if keep_state && is_state(&child) {
                    // A state directory stays as it is; what it holds is reported.
                    if STATE_DIRS.contains(&child.as_str()) && ft.is_dir() {
                        stack.push((entry.path(), child));
                    } else {
                        self.kept_state.insert(child);
                    }
                    continue;
                }
                if ft.is_dir() {
                    stack.push((entry.path(), child.clone()));
                }
                // An ancestor of a preserved path stays, emptied (a symlink or file in
                // its place is refused by the commit's plan).
                if !self.kept.holds(&child) {
                    self.set(child, Final::Absent);
                }
            }
        }
        Ok(())
    }

    /// A full image replaces the whole system: everything the base has becomes absent
    /// but its state ([`STATE_DIRS`]), earlier changes are dropped.
    pub fn reset_for_full_image(&mut self) -> Result<(), Error> {
        self.paths.clear();
        self.before.clear();
        self.kept_state.clear();
        self.hide_base_below("", true)
    }

    /// Makes sure every ancestor of `path` is a directory in the result.
    fn ensure_parents(&mut self, path: &str, what: &str) -> Result<(), Error> {
        let mut ancestors = Vec::new();
        let mut at = path;
        while let Some(i) = at.rfind('/') {
            at = &at[..i];
            ancestors.push(at.to_owned());
        }
        for a in ancestors.into_iter().rev() {
            let default_dir = Final::Dir {
                meta: Meta {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: crate::date::now(),
                },
            };
            match self.lookup(&a) {
                Lookup::Overlay(Final::Dir { .. }) => {}
                Lookup::Overlay(_) | Lookup::Hidden => {
                    self.replace_with(&a, default_dir, what)?;
                }
                Lookup::Base if self.base_dirs.is_real(&self.base, &a) => {}
                Lookup::Base => match std::fs::symlink_metadata(self.base.join(&a)) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(Error::Malformed {
                            what: what.to_owned(),
                            reason: format!(
                                "{path}: its parent {a} is a symlink on this system \
                                 (refusing to write through it)"
                            ),
                        });
                    }
                    Ok(_) => self.replace_with(&a, default_dir, what)?,
                    Err(_) => {
                        self.set(a, default_dir);
                    }
                },
            }
        }
        Ok(())
    }

    /// Sets the final state of `path`, hiding what was below it unless it stays a
    /// directory. An ancestor of a preserved path can only stay a directory.
    fn replace_with(&mut self, path: &str, state: Final, what: &str) -> Result<(), Error> {
        if self.kept.holds(path) && !matches!(state, Final::Dir { .. }) {
            return Err(Error::Malformed {
                what: what.to_owned(),
                reason: format!(
                    "{path}: the image makes it something other than a directory, but it \
                     holds paths images never touch ({})",
                    self.kept.held_by(path).join(", ")
                ),
            });
        }
        let was_dir = match self.lookup(path) {
            Lookup::Overlay(Final::Dir { .. }) => true,
            Lookup::Base => {
                std::fs::symlink_metadata(self.base.join(path)).is_ok_and(|m| m.is_dir())
            }
            _ => false,
        };
        let stays_dir = matches!(state, Final::Dir { .. });
        if was_dir && !stays_dir {
            self.remove(path)?;
        }
        if !was_dir && stays_dir {
            // A directory replacing a non-directory starts empty.
            self.remove(path)?;
        }
        self.set(path.to_owned(), state);
        Ok(())
    }

    /// Applies the members of one tarball. `full` images first reset the overlay.
    pub fn apply_tarball(
        &mut self,
        tarball: &Path,
        compression: Compression,
        what: &str,
        partitions: &mut Vec<String>,
    ) -> Result<(), Error> {
        self.before.clear();
        self.patched.clear();
        self.rebuilds = Some(Rebuilds::start());
        let result = self.apply_members(tarball, compression, what, partitions);
        let rebuilt = self
            .rebuilds
            .take()
            .map_or(Ok(()), Rebuilds::finish)
            .map_err(Error::from);
        self.before.clear();
        self.patched.clear();
        result.and(rebuilt)
    }

    fn apply_members(
        &mut self,
        tarball: &Path,
        compression: Compression,
        what: &str,
        partitions: &mut Vec<String>,
    ) -> Result<(), Error> {
        let reader = compress::open(tarball, compression, Limits::IMAGE)?;
        let mut archive = tarfile::Reader::new(reader);
        let bad = |e: tarfile::Error| Error::Malformed {
            what: what.to_owned(),
            reason: e.to_string(),
        };
        let mut first = true;
        while let Some(entry) = archive.next_entry().map_err(bad)? {
            let member = extract::check_entry(&entry, self.as_root, what)?;
            if member.what == What::Removed {
                if !first {
                    return Err(Error::Malformed {
                        what: what.to_owned(),
                        reason: "`removed` is not the first member".into(),
                    });
                }
                let mut text = Vec::new();
                (&mut archive)
                    .take(64 * 1024 * 1024)
                    .read_to_end(&mut text)
                    .map_err(|e| bad(tarfile::Error::Read(e)))?;
                for path in extract::parse_removed(&text, what)? {
                    self.remove(&path)?;
                }
                first = false;
                continue;
            }
            first = false;
            if let What::Partition(name) = &member.what {
                partitions.push(name.clone());
                continue;
            }
            if member.path.is_empty() || self.kept.keeps(&member.path) {
                continue;
            }
            self.add(member, &mut archive, what)?;
            crashpoint::reached("image-apply");
        }
        archive.drain().map_err(bad)
    }

    /// The file a patch's base path names, as it was before this tarball: never an
    /// object of this tarball (those may still be rebuilding).
    fn patch_base(&self, base_path: &str) -> Option<PathBuf> {
        let base_file = match self.lookup_before(base_path) {
            Lookup::Overlay(Final::Staged {
                id,
                kind: ObjectKind::File,
                ..
            }) => self.object(*id),
            Lookup::Overlay(Final::BaseLink { target })
                if self.base_dirs.ancestors_real(&self.base, target) =>
            {
                self.base.join(target)
            }
            Lookup::Base
                if !self.kept.keeps(base_path)
                    && self.base_dirs.ancestors_real(&self.base, base_path) =>
            {
                self.base.join(base_path)
            }
            _ => return None,
        };
        std::fs::symlink_metadata(&base_file)
            .is_ok_and(|m| m.is_file())
            .then_some(base_file)
    }

    fn add(&mut self, member: Member, data: &mut impl Read, what: &str) -> Result<(), Error> {
        let path = member.path.clone();
        self.ensure_parents(&path, what)?;
        let bad = |reason: String| Error::Malformed {
            what: what.to_owned(),
            reason: format!("{path}: {reason}"),
        };
        let state = match member.what {
            What::Dir => Final::Dir { meta: member.meta },
            What::File => {
                let (id, object) = self.new_object();
                // The tarball's digest was checked just before; the size of what was
                // written is checked again before commit.
                let (file, size) = self.write_object(&object, data, member.size + 1)?;
                if size != member.size {
                    return Err(bad("short data".into()));
                }
                set_file_meta(&file, &object, member.meta, self.as_root)?;
                Final::Staged {
                    id,
                    kind: ObjectKind::File,
                    sha256: None,
                    size,
                }
            }
            What::Patch(info) => {
                let base = match &info.base {
                    Some(base) => Some(rebuilds::Base {
                        path: {
                            let base_path = base.path.as_deref().unwrap_or(&path);
                            self.patch_base(base_path).ok_or_else(|| {
                                bad(format!(
                                    "patch against {base_path}, a file this system does not have"
                                ))
                            })?
                        },
                        sha256: base.sha256,
                        what: match &base.path {
                            Some(b) => format!("{what}: base of the patch for {path} ({b})"),
                            None => format!("{what}: base of the patch for {path}"),
                        },
                    }),
                    None => None,
                };
                let (meta, as_root) = (member.meta, self.as_root);
                let finish: rebuilds::Finish =
                    Box::new(move |file: &std::fs::File, object: &Path| {
                        set_file_meta(file, object, meta, as_root).map_err(Into::into)
                    });
                // A file an earlier patch of this tarball makes too: copied from that
                // one's object once the patches are written (the frame is not used).
                let same = self.patched.get(&(info.sha256, info.size)).cloned();
                if let (Some(from), Some(_)) = (same, &self.rebuilds) {
                    std::io::copy(&mut data.take(member.size), &mut std::io::sink())
                        .map_err(|e| bad(e.to_string()))?;
                    let (id, object) = self.new_object();
                    fs_err::File::create_new(&object).map_err(io_err(&object))?;
                    let duplicate = rebuilds::Duplicate {
                        from,
                        object,
                        sha256: info.sha256,
                        size: info.size,
                        finish,
                        what: format!("{what}: patched {path}"),
                    };
                    let rebuilds = self.rebuilds.as_mut().expect("checked");
                    rebuilds.submit_duplicate(duplicate);
                    return self.replace_with(
                        &path,
                        Final::Staged {
                            id,
                            kind: ObjectKind::File,
                            sha256: Some(Sha256Hex(info.sha256.to_hex())),
                            size: info.size,
                        },
                        what,
                    );
                }
                // Queued for a worker with its frame in memory, or, when large, applied
                // here as it is read.
                let queued = self.rebuilds.is_some() && member.size <= rebuilds::QUEUED_FRAME_MAX;
                let mut frame = Vec::new();
                if queued {
                    data.take(member.size)
                        .read_to_end(&mut frame)
                        .map_err(|e| bad(e.to_string()))?;
                }
                let (id, object) = self.new_object();
                // Created now, so that a hard link to it can be made at once; written
                // on a worker while the next members apply.
                fs_err::File::create_new(&object).map_err(io_err(&object))?;
                // (A source the copy can read back: root reads any mode.)
                if as_root || meta.mode & 0o400 != 0 {
                    self.patched
                        .insert((info.sha256, info.size), object.clone());
                }
                let job = rebuilds::Job {
                    object,
                    base,
                    frame,
                    gzip: info.gzip.clone(),
                    x86: info.x86,
                    sha256: info.sha256,
                    size: info.size,
                    finish,
                    what: format!("{what}: patched {path}"),
                };
                match &self.rebuilds {
                    Some(rebuilds) if queued => rebuilds.submit(job)?,
                    _ => rebuilds::run_reading(job, &mut data.take(member.size))?,
                }
                // Whatever of the member the frame did not use is an error too.
                let mut rest = Vec::new();
                data.read_to_end(&mut rest)
                    .map_err(|e| bad(e.to_string()))?;
                if !rest.is_empty() {
                    return Err(bad("data after the patch".into()));
                }
                Final::Staged {
                    id,
                    kind: ObjectKind::File,
                    sha256: Some(Sha256Hex(info.sha256.to_hex())),
                    size: info.size,
                }
            }
            What::Symlink(target) => {
                let (id, object) = self.new_object();
                std::os::unix::fs::symlink(&target, &object).map_err(io_err(&object))?;
                self.finish_object(&object, member.meta, true)?;
                Final::Staged {
                    id,
                    kind: ObjectKind::Symlink,
                    sha256: None,
                    size: 0,
                }
            }
            What::HardLink(target) => match self.lookup(&target) {
                Lookup::Overlay(Final::Staged {
                    id: tid,
                    kind,
                    sha256,
                    size,
                }) => {
                    let (kind, sha256, size, from) =
                        (*kind, sha256.clone(), *size, self.object(*tid));
                    let (id, object) = self.new_object();
                    fs_err::hard_link(&from, &object).map_err(io_err(&object))?;
                    Final::Staged {
                        id,
                        kind,
                        sha256,
                        size,
                    }
                }
                Lookup::Overlay(Final::BaseLink { target }) => Final::BaseLink {
                    target: target.clone(),
                },
                Lookup::Base
                    if self.base_dirs.ancestors_real(&self.base, &target)
                        && std::fs::symlink_metadata(self.base.join(&target))
                            .is_ok_and(|m| !m.is_dir()) =>
                {
                    Final::BaseLink { target }
                }
                _ => return Err(bad(format!("hard link to {target}, which does not exist"))),
            },
            What::Char(major, minor) | What::Block(major, minor) => {
                let (id, object) = self.new_object();
                let kind = if matches!(member.what, What::Char(..)) {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(
                    &object,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(member.meta.mode),
                    nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
                )
                .map_err(|e| Error::io(&object, e.into()))?;
                self.finish_object(&object, member.meta, false)?;
                Final::Staged {
                    id,
                    kind: ObjectKind::Node,
                    sha256: None,
                    size: 0,
                }
            }
            What::Fifo => {
                let (id, object) = self.new_object();
                nix::unistd::mkfifo(
                    &object,
                    nix::sys::stat::Mode::from_bits_truncate(member.meta.mode),
                )
                .map_err(|e| Error::io(&object, e.into()))?;
                self.finish_object(&object, member.meta, false)?;
                Final::Staged {
                    id,
                    kind: ObjectKind::Node,
                    sha256: None,
                    size: 0,
                }
            }
            What::Removed | What::Partition(_) => unreachable!("handled by the caller"),
        };
        self.replace_with(&path, state, what)
    }

    /// Writes `data` (at most `cap` bytes) to a new object: the object, open, and its size.
    fn write_object(
        &self,
        object: &Path,
        data: &mut impl Read,
        cap: u64,
    ) -> Result<(std::fs::File, u64), Error> {
        let mut file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(object)
            .map_err(io_err(object))?;
        let mut size = 0u64;
        let mut buf = vec![0u8; cap.clamp(1, 256 * 1024) as usize];
        let mut limited = data.take(cap);
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Malformed {
                        what: object.display().to_string(),
                        reason: e.to_string(),
                    });
                }
            };
            file.write_all(&buf[..n]).map_err(io_err(object))?;
            size += n as u64;
        }
        Ok((file.into_parts().0, size))
    }

    /// Owner, mode and mtime of a staged object (owner first: chown clears setuid).
    fn finish_object(&self, object: &Path, meta: Meta, symlink: bool) -> Result<(), Error> {
        set_meta(object, meta, symlink, self.as_root)
    }

    /// Checks the staged result before it is committed: every staged file is still
    /// there with the size it was written with (patched files had their digests
    /// checked as they were written), and the target's `channel.ini` names `build`.
    pub fn verify(&self, build: u64, what: &str) -> Result<(), Error> {
        for (path, state) in &self.paths {
            let Final::Staged {
                id,
                kind: ObjectKind::File,
                size,
                ..
            } = state
            else {
                continue;
            };
            let object = self.object(*id);
            let actual_size = fs_err::symlink_metadata(&object)
                .map_err(io_err(&object))?
                .len();
            if actual_size != *size {
                return Err(Error::SizeMismatch {
                    what: format!("staged {path}"),
                    expected: *size,
                    actual: actual_size,
                });
            }
        }
        let channel_ini = crate::image::config::CHANNEL_INI.trim_start_matches('/');
        let file = match self.lookup(channel_ini) {
            Lookup::Overlay(Final::Staged {
                id,
                kind: ObjectKind::File,
                ..
            }) => self.object(*id),
            Lookup::Base => self.base.join(channel_ini),
            _ => PathBuf::new(),
        };
        let found = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| crate::ini::Ini::parse(&t).ok())
            .and_then(|ini| ini.get("service", "build_number").map(str::to_owned));
        if found.as_deref() != Some(build.to_string().as_str()) {
            return Err(Error::Malformed {
                what: what.to_owned(),
                reason: format!(
                    "the result is not build {build}: its {} says build_number {}",
                    crate::image::config::CHANNEL_INI,
                    found.as_deref().unwrap_or("(missing)")
                ),
            });
        }
        Ok(())
    }

    /// Flushes the staged objects to disk.
    pub fn sync(&self) -> Result<(), Error> {
        sync_fs(&self.staging)
    }
}

/// What `path` resolves to in an overlay whose states `get` returns.
fn lookup_in<'a>(get: impl Fn(&str) -> Option<&'a Final>, path: &str) -> Lookup<'a> {
    if let Some(f) = get(path) {
        return Lookup::Overlay(f);
    }
    let mut at = path;
    while let Some(i) = at.rfind('/') {
        at = &at[..i];
        match get(at) {
            Some(Final::Dir { .. }) => return Lookup::Base,
            Some(_) => return Lookup::Hidden,
            None => {}
        }
    }
    Lookup::Base
}

/// Directories below the base tree seen to be real (no symlink on the way to them).
/// Reading `dir/path` stays inside `dir` only when every ancestor is one, and asking the
/// file system for each ancestor of each path cost 14 `statx` calls a member (72,000 on
/// Debian 12 → 13). The base does not change while the overlay is built.
#[derive(Debug, Default)]
struct RealDirs {
    known: std::cell::RefCell<std::collections::HashSet<String>>,
}

impl RealDirs {
    /// Whether `dir/rel` is a real directory (and its ancestors were, when asked
    /// through [`Self::ancestors_real`]).
    fn is_real(&self, dir: &Path, rel: &str) -> bool {
        if self.known.borrow().contains(rel) {
            return true;
        }
        let real = std::fs::symlink_metadata(dir.join(rel)).is_ok_and(|m| m.is_dir());
        if real {
            self.known.borrow_mut().insert(rel.to_owned());
        }
        real
    }

    /// Whether every ancestor of `path` below `dir` is a real directory.
    fn ancestors_real(&self, dir: &Path, path: &str) -> bool {
        path.match_indices('/')
            .all(|(i, _)| self.is_real(dir, &path[..i]))
    }
}

/// Owner (as root), mode (not of a symlink) and mtime of a staged object, owner first:
/// chown clears setuid.
fn set_meta(object: &Path, meta: Meta, symlink: bool, as_root: bool) -> Result<(), Error> {
    if as_root {
        std::os::unix::fs::lchown(object, Some(meta.uid), Some(meta.gid))
            .map_err(io_err(object))?;
    }
    if !symlink {
        fs_err::set_permissions(object, std::fs::Permissions::from_mode(meta.mode))
            .map_err(io_err(object))?;
    }
    set_mtime(object, meta.mtime)
}

/// [`set_meta`] of a regular file through its open descriptor (no path walked again).
pub(crate) fn set_file_meta(
    file: &std::fs::File,
    object: &Path,
    meta: Meta,
    as_root: bool,
) -> Result<(), Error> {
    use nix::sys::stat::{Mode, fchmod, futimens};
    let err = |e: nix::Error| Error::io(object, e.into());
    if as_root {
        nix::unistd::fchown(
            file,
            Some(nix::unistd::Uid::from_raw(meta.uid)),
            Some(nix::unistd::Gid::from_raw(meta.gid)),
        )
        .map_err(err)?;
    }
    fchmod(file, Mode::from_bits_truncate(meta.mode)).map_err(err)?;
    let mtime = nix::sys::time::TimeSpec::new(meta.mtime, 0);
    futimens(file, &nix::sys::time::TimeSpec::UTIME_OMIT, &mtime).map_err(err)
}

fn set_mtime(path: &Path, mtime: i64) -> Result<(), Error> {
    let spec = nix::sys::time::TimeSpec::new(mtime, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        &spec,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| Error::io(path, e.into()))
}

/// `syncfs` on the filesystem holding `path`.
pub fn sync_fs(path: &Path) -> Result<(), Error> {
    let dir = fs_err::File::open(path).map_err(io_err(path))?;
    nix::unistd::syncfs(&dir).map_err(|e| Error::io(path, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for (path, data) in [
            ("var/lib/dpkg/status", "dpkg"),
            ("var/lib/release-upgrader/image/cache/x", "cache"),
            ("var/cache/junk", "junk"),
            ("userdata/photo", "photo"),
            ("usr/bin/tool", "tool"),
        ] {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        (dir, root)
    }

    fn test_dir() -> Final {
        Final::Dir {
            meta: Meta {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
            },
        }
    }

    fn absent(o: &Overlay) -> Vec<&str> {
        o.paths
            .iter()
            .filter(|(_, f)| **f == Final::Absent)
            .map(|(p, _)| p.as_str())
            .collect()
    }

    #[test]
    fn ancestors_of_preserved_paths_are_known() {
        assert!(protects("var") && protects("var/lib"));
        assert!(!protects("var/lib/release-upgrader") && !protects("var/cache"));
        assert!(!protects("va") && !protects("var/li") && !protects("usr"));
        assert!(preserved("var/lib/release-upgrader/image/journal"));
        assert!(preserved("userdata") && !preserved("userdata2"));
    }

    #[test]
    fn a_full_image_removes_the_old_system_but_keeps_the_state_and_the_preserved_paths() {
        let (dir, root) = base();
        for (path, data) in [("home/user/notes", "mine"), ("srv/www/index.html", "site")] {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        std::os::unix::fs::symlink("/userdata/root", root.join("root")).unwrap();
        let mut o = Overlay::new(&root, &dir.path().join("staging")).unwrap();
        o.reset_for_full_image().unwrap();
        assert_eq!(
            absent(&o),
            [
                "usr",
                "usr/bin",
                "usr/bin/tool",
                "var/cache",
                "var/cache/junk"
            ]
        );
        assert_eq!(
            o.state_kept(),
            ["home/user", "root", "srv/www", "var/lib/dpkg"]
        );
        // What the image has in a state directory is the image's: no longer reported.
        o.set("var/lib/dpkg".into(), test_dir());
        assert_eq!(o.state_kept(), ["home/user", "root", "srv/www"]);
        // A delta's explicit removal still removes.
        o.remove("home/user").unwrap();
        assert!(absent(&o).contains(&"home/user/notes"));
        assert!(is_state("var/lib/x") && is_state("home") && !is_state("var/libx"));
        assert!(!is_state("var") && !is_state("usr/lib"));
    }

    #[test]
    fn removing_an_ancestor_of_a_preserved_path_empties_it() {
        let (dir, root) = base();
        let mut o = Overlay::new(&root, &dir.path().join("staging")).unwrap();
        o.remove("var").unwrap();
        o.remove("userdata").unwrap();
        assert_eq!(
            absent(&o),
            [
                "var/cache",
                "var/cache/junk",
                "var/lib/dpkg",
                "var/lib/dpkg/status"
            ]
        );
        // Nor may an image make one a file.
        let err = o.replace_with("var/lib", Final::Absent, "img").unwrap_err();
        assert!(
            err.to_string().contains("var/lib/release-upgrader"),
            "{err}"
        );
        o.replace_with("var/lib", test_dir(), "img").unwrap();
    }
}
