//! Reading and extracting .deb packages that may be hostile.
//!
//! The client installs `release-upgrader-*` helpers by extracting them itself (dpkg is
//! not run on them), and the publisher extracts real upstream packages to build those
//! helpers. Both read archives they must not trust beyond their signature: a package
//! that could write outside its destination, plant a setuid binary or a device node, or
//! point a link at `/etc` must be refused before it does any of that. This module is
//! the one place that turns a .deb into files.
//!
//! # What is read
//!
//! A .deb is an ar archive: `debian-binary` (format `2.x`), `control.tar[.gz|.xz|.zst]`,
//! then `data.tar[.gz|.xz|.zst|.bz2]`. Members whose name starts with `_` are skipped, as
//! dpkg skips them; any other member, a second control or data member, the data member
//! before the control member, or trailing bytes are refused. Everything is streamed: no
//! member is ever held in memory (only the `control` file, capped at 1 MiB), compressed
//! data members are decompressed in a thread of their own feeding the tar reader through
//! a few recycled buffers, and memory is bounded whatever the size of the package (xz's
//! parallel decoder holds whole blocks, up to a fixed limit: see [`crate::compress`]).
//! The tar reader is the crate's one ([`crate::tarfile`]), shared with the image code.
//!
//! # The order of checks
//!
//! [`extract`] reads and parses the control member, checks it against the [`Policy`] and
//! calls [`ExtractHooks::before_data`] **before a single byte of data is written**. Then
//! each data entry is checked (name, placement, type, mode, links, duplicates), shown to
//! [`ExtractHooks::before_entry`], and only then written. The first failure stops the
//! extraction.
//!
//! # The destination
//!
//! `dest` must be an existing, empty directory that the caller owns; the archive's root
//! (or, with [`Policy::within`], that directory) maps onto it. Its own mode, owner and
//! mtime are never changed (dpkg-deb -x applies the `./` entry's to it; here the caller
//! decides about the directory it made). Nothing outside `dest` is ever written: every
//! path is created beneath a descriptor of `dest`, walking each component with
//! `O_NOFOLLOW` (see `write.rs`), so not even a bug in the checks above could make an
//! archive write through a symlink. **On failure `dest` may hold part of the package;
//! the caller removes it** (`std::fs::remove_dir_all` does not follow symlinks, and
//! directories stay writable by their owner until the extraction succeeds).
//!
//! # What is written, compared with `dpkg-deb -x`
//!
//! For what both accept, the tree is the same as `dpkg-deb -x` (GNU `tar -xp`) makes:
//! types, exact modes (setuid, setgid, sticky; no umask), symlink targets, hard links
//! (one inode), file, directory and symlink mtimes (directories get theirs after their
//! contents: all of them at the end, where tar restores a directory when it extracts
//! something outside it, so that a directory the archive comes back to, as dpkg-deb's
//! symlinks-last order does, keeps the time of the extraction under `dpkg-deb -x`).
//! Owners are applied only when running as root, and from the header's
//! *numeric* uid and gid (tar prefers the user and group names when they exist on the
//! machine; for the root-owned files packages ship the two agree). Sub-second pax mtimes
//! are truncated to seconds. Directories the archive does not list but needs are
//! created `0755` with the extraction's start time, like tar's implicit directories.
//! Nothing is fsynced; a caller that needs the tree on disk syncs it (each file from
//! [`ExtractHooks::after_file`], or the file system once).
//!
//! # Bounds
//!
//! A package's size is not its download's: a few KB of xz or zstd can hold a GiB of
//! zeros. [`Limits`] bound what an extraction writes, checked from each entry's header
//! **before the entry is created**, so a refused package never gets to write the bytes
//! it was refused for. [`Policy::helper`] sets them:
//!
//! - a helper's regular files together hold at most its `Installed-Size` plus
//!   [`INSTALLED_SIZE_SLACK`] (1 MiB). dpkg-gencontrol and our `helper build` count each
//!   file rounded up to a KiB, so an honest package never needs the slack; it is there
//!   for builders that round otherwise. A helper that declares no `Installed-Size` is
//!   held to the slack alone;
//! - a whole helper set (every extraction sharing one [`SetBudget`]: the helpers of
//!   one install, the debs of one `deb check` or `pocket build`) holds at most
//!   [`HELPER_SET_MAX`] (1 GiB; the real trixie helpers take some 40 MB), and a helper
//!   whose `Installed-Size` alone is more is refused before its data is read;
//! - a helper writes at most [`HELPER_ENTRIES_MAX`] entries, the directories it
//!   implies and the archive's own entries for its prefix's parents included.
//!
//! Whatever the policy, the control member may hold at most [`CONTROL_MEMBER_MAX`]
//! bytes in at most [`CONTROL_ENTRIES_MAX`] entries, and a tar stream may carry at most
//! 1 MiB after its end-of-archive block: what is read but never written is bounded too.
//!
//! # Policy
//!
//! Always refused, whatever the policy: absolute names, `..`, device nodes, fifos and
//! other special types, writing through a symlink, a non-directory path shipped twice,
//! a hard link to anything but a regular file extracted earlier from the same archive.
//! [`Policy::helper`] adds the rules of docs/protocol.md §3 for `release-upgrader-*` helpers;
//! [`Policy::upstream`] only these basics, for real upstream packages.
//!
//! # Use
//!
//! - [`read_control`] reads a package's [`Control`] and never touches its data.
//! - [`extract`] extracts it under a [`Policy`] and returns the [`Extracted`] control and
//!   [`Entry`] list (path, type, mode, owner, mtime, size and SHA256 of each file): the
//!   material of a manifest.
//! - [`ExtractHooks`] lets the caller refuse a package from its control
//!   ([`ExtractHooks::before_data`]) or an entry before it is written
//!   ([`ExtractHooks::before_entry`], which sees an [`EntryHeader`]: the digest is not
//!   known yet). [`PathOwners`] is the hook a transaction installing several helpers
//!   passes to each extraction, so that no path is shipped by two of them.
//!
//! ```no_run
//! use std::path::Path;
//! use ru_format::deb::{self, PathOwners, Policy};
//!
//! # fn main() -> Result<(), ru_format::Error> {
//! let mut owners = PathOwners::new();
//! for (deb, dest) in [("apt.deb", "stage/apt"), ("dpkg.deb", "stage/dpkg")] {
//!     std::fs::create_dir_all(dest).map_err(|e| ru_format::Error::io(dest, e))?;
//!     let extracted = deb::extract(Path::new(deb), Path::new(dest), &Policy::helper("amd64"), &mut owners)?;
//!     println!("{} {}: {} entries", extracted.control.package, extracted.control.version, extracted.entries.len());
//! }
//! # Ok(())
//! # }
//! ```

mod ar;
mod control;
mod path;
mod write;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::digest::{Sha256, Sha256Hasher};
use crate::error::Error;
use crate::layout;

use crate::compress::{self, Compression};
use crate::tarfile as tar;
pub use control::{Control, MAINTAINER_SCRIPTS};
use path::Placement;
use write::{Meta, Tree};

/// The largest `control` file read.
const CONTROL_MAX: u64 = 1024 * 1024;
/// The largest `debian-binary` member read.
const DEBIAN_BINARY_MAX: u64 = 1024;
/// The most the entries of a control member may hold together (`md5sums` of a package
/// with a hundred thousand files is some 8 MB; the largest `symbols` files a few).
pub const CONTROL_MEMBER_MAX: u64 = 64 * 1024 * 1024;
/// The most entries a control member may have (real ones have a dozen at most).
pub const CONTROL_ENTRIES_MAX: u64 = 1024;
/// What a helper's files may hold beyond its `Installed-Size` (see "Bounds" above).
pub const INSTALLED_SIZE_SLACK: u64 = 1024 * 1024;
/// The most a whole set of helpers may write together.
pub const HELPER_SET_MAX: u64 = 1024 * 1024 * 1024;
/// The most entries one helper may write.
pub const HELPER_ENTRIES_MAX: u64 = 100_000;

/// What may be extracted.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The directory every data entry must lie under (normalized, no leading `/` or
    /// `./`, e.g. `usr/lib/release-upgrader`); it maps onto `dest`. Its ancestors may
    /// appear only as directories and are not extracted. `None`: the archive's root
    /// maps onto `dest`.
    pub within: Option<String>,
    /// Symlinks must resolve, lexically, inside `within` (or the archive's root): an
    /// absolute target must lie under `/<within>/`, a relative one is joined to the
    /// link's directory, and `..` is accepted only as its leading components.
    pub confine_links: bool,
    /// Setuid and setgid bits are accepted.
    pub allow_setid: bool,
    /// The package name must be a helper name ([`layout::is_helper_name`]).
    pub helper_names_only: bool,
    /// The package's `Architecture` must be one of these.
    pub architectures: Option<Vec<String>>,
    /// Maintainer scripts are refused unless the package declares them reversible
    /// (`X-Release-Upgrader-Reversible: yes`). They are never run either way.
    pub refuse_maintainer_scripts: bool,
    /// Bounds on what is written.
    pub limits: Limits,
}

/// Bounds on what extractions write, checked from each entry's header before the
/// entry is created. `None` leaves a bound unset.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// A package's regular files together may hold at most its `Installed-Size` (KiB)
    /// plus this many bytes; this alone when it declares none.
    pub installed_size_slack: Option<u64>,
    /// The most entries one package may write (directories it implies included) or
    /// list.
    pub entries: Option<u64>,
    /// The bytes of regular files that every extraction under this policy, and under
    /// its clones, may write together.
    pub set: Option<Arc<SetBudget>>,
}

/// Bytes that several extractions (at once or one after another) may write together.
/// What a failed extraction wrote is given back: its files are removed by the caller.
#[derive(Debug)]
pub struct SetBudget {
    limit: u64,
    used: AtomicU64,
}

impl SetBudget {
    pub fn new(limit: u64) -> Self {
        SetBudget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// What the extractions charged so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Takes `bytes` from the budget; when they do not fit, takes nothing and returns
    /// the total they would have made.
    fn charge(&self, bytes: u64) -> Result<(), u64> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .map(|_| ())
            .map_err(|used| used.saturating_add(bytes))
    }

    fn refund(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
    }
}

impl Policy {
    /// The rules for `release-upgrader-*` helpers on an `arch` system (docs/protocol.md §3):
    /// everything under `usr/lib/release-upgrader/`, which maps onto `dest`.
    pub fn helper(arch: &str) -> Self {
        Policy {
            within: Some(layout::PREFIX_IN_DEB.to_owned()),
            confine_links: true,
            allow_setid: false,
            helper_names_only: true,
            architectures: Some(vec![arch.to_owned(), "all".to_owned()]),
            refuse_maintainer_scripts: true,
            limits: Limits {
                installed_size_slack: Some(INSTALLED_SIZE_SLACK),
                entries: Some(HELPER_ENTRIES_MAX),
                set: Some(Arc::new(SetBudget::new(HELPER_SET_MAX))),
            },
        }
    }

    /// For real upstream packages the publisher takes apart: any path, setuid bits,
    /// links anywhere (they are data). Still never `..` or absolute names, never
    /// devices or fifos, never writing through a symlink.
    pub fn upstream() -> Self {
        Policy {
            within: None,
            confine_links: false,
            allow_setid: true,
            helper_names_only: false,
            architectures: None,
            refuse_maintainer_scripts: false,
            limits: Limits::default(),
        }
    }

    /// Checks a package's control against the policy.
    pub fn check(&self, deb: &Path, control: &Control) -> Result<(), Error> {
        let bad = |reason: String| Error::BadPackage {
            deb: deb.display().to_string(),
            reason,
        };
        if self.helper_names_only && !layout::is_helper_name(&control.package) {
            return Err(bad(format!(
                "package {:?} is not named {}*",
                control.package,
                layout::HELPER_PREFIX
            )));
        }
        if let Some(archs) = &self.architectures
            && !archs.contains(&control.architecture)
        {
            return Err(bad(format!(
                "{} is for architecture {:?}, expected {}",
                control.package,
                control.architecture,
                archs.join(" or ")
            )));
        }
        if self.refuse_maintainer_scripts
            && !control.maintainer_scripts.is_empty()
            && !control.reversible
        {
            return Err(bad(format!(
                "{} has maintainer scripts ({}) and does not declare them reversible \
                 (X-Release-Upgrader-Reversible: yes)",
                control.package,
                control.maintainer_scripts.join(", ")
            )));
        }
        if let (Some(set), Some(kib)) = (&self.limits.set, control.installed_size_kib)
            && kib
                .checked_mul(1024)
                .is_none_or(|bytes| bytes > set.limit())
        {
            return Err(bad(format!(
                "{} declares Installed-Size: {kib} (KiB), more than the {} bytes a whole \
                 set of packages may take",
                control.package,
                set.limit()
            )));
        }
        Ok(())
    }

    /// The bytes of regular files `control`'s package may write, if bounded.
    fn byte_bound(&self, control: &Control) -> Option<u64> {
        let slack = self.limits.installed_size_slack?;
        Some(
            control
                .installed_size_kib
                .unwrap_or(0)
                .saturating_mul(1024)
                .saturating_add(slack),
        )
    }
}

/// One extracted entry, as written: the material of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to `dest`, normalized: no leading `./`, no trailing `/`.
    pub path: String,
    #[serde(flatten)]
    pub kind: EntryKind,
    /// Permission bits, including setuid, setgid and sticky (`0o7777` at most).
    pub mode: u32,
    /// The numeric owner from the archive (applied only when running as root).
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    File {
        size: u64,
        sha256: Sha256,
    },
    Dir,
    /// `target` as the archive has it.
    Symlink {
        target: String,
    },
    /// `target` relative to `dest`, like `path`.
    HardLink {
        target: String,
    },
}

/// An entry about to be written, as [`ExtractHooks::before_entry`] sees it: like
/// [`Entry`], but a file's digest is not known yet.
#[derive(Clone, Copy, Debug)]
pub struct EntryHeader<'a> {
    pub path: &'a str,
    pub kind: HeaderKind<'a>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
}

/// What an entry about to be written is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderKind<'a> {
    File { size: u64 },
    Dir,
    Symlink { target: &'a str },
    HardLink { target: &'a str },
}

impl HeaderKind<'_> {
    pub fn is_dir(&self) -> bool {
        matches!(self, HeaderKind::Dir)
    }
}

/// The caller's say in an extraction. An error from a hook stops the extraction and is
/// returned as it is.
pub trait ExtractHooks {
    /// After the control member passed the policy, before any data is written.
    fn before_data(&mut self, _deb: &Path, _control: &Control) -> Result<(), Error> {
        Ok(())
    }

    /// Before each entry is written, including directories the archive implies and
    /// directories it lists again.
    fn before_entry(&mut self, _entry: &EntryHeader<'_>) -> Result<(), Error> {
        Ok(())
    }

    /// After a regular file is written and has its metadata, before it is closed: a
    /// caller that needs the file on disk may sync it (or hand a duplicate of the
    /// descriptor to a thread that does) while the extraction goes on.
    fn after_file(&mut self, _path: &str, _file: &File) -> Result<(), Error> {
        Ok(())
    }
}

/// No hooks.
impl ExtractHooks for () {}

/// The hook for a transaction installing several packages into one tree: refuses a
/// path that another package of the transaction already ships (directories excepted,
/// which packages share).
#[derive(Debug, Default)]
pub struct PathOwners {
    owners: HashMap<String, (String, bool)>,
    current: Option<(PathBuf, String)>,
}

impl PathOwners {
    pub fn new() -> Self {
        Self::default()
    }

    /// The package that ships `path` (relative to the destination), if any.
    pub fn owner(&self, path: &str) -> Option<&str> {
        self.owners.get(path).map(|(package, _)| package.as_str())
    }
}

impl ExtractHooks for PathOwners {
    fn before_data(&mut self, deb: &Path, control: &Control) -> Result<(), Error> {
        self.current = Some((deb.to_owned(), control.package.clone()));
        Ok(())
    }

    fn before_entry(&mut self, entry: &EntryHeader<'_>) -> Result<(), Error> {
        let (deb, package) = self
            .current
            .take()
            .expect("before_data runs before before_entry");
        let claimed = self.claim(&deb, &package, entry);
        self.current = Some((deb, package));
        claimed
    }
}

impl PathOwners {
    /// Records that `package` (extracted from `deb`) ships `entry`, or refuses it if
    /// another package does. The form for extractions that run at the same time: each
    /// names its own package, and they share one `PathOwners` behind a lock.
    pub fn claim(
        &mut self,
        deb: &Path,
        package: &str,
        entry: &EntryHeader<'_>,
    ) -> Result<(), Error> {
        let is_dir = entry.kind.is_dir();
        match self.owners.get(entry.path) {
            Some((owner, owner_dir)) if owner != package && !(is_dir && *owner_dir) => {
                Err(Error::BadPackage {
                    deb: deb.display().to_string(),
                    reason: format!("{} is also shipped by {owner}", entry.path),
                })
            }
            Some(_) => Ok(()),
            None => {
                self.owners
                    .insert(entry.path.to_owned(), (package.to_owned(), is_dir));
                Ok(())
            }
        }
    }
}

/// The result of an extraction.
#[derive(Clone, Debug)]
pub struct Extracted {
    pub control: Control,
    /// Every entry written, in archive order (a directory listed twice appears once,
    /// with its last metadata). The destination itself is not listed.
    pub entries: Vec<Entry>,
}

/// Reads a package's control member; never reads the data member.
pub fn read_control(deb: &Path) -> Result<Control, Error> {
    Package::open(deb)?.control()
}

/// Extracts `deb` into `dest`, an existing empty directory, under `policy`. See the
/// module documentation for the guarantees, and for what the caller must do on failure
/// (remove `dest`).
pub fn extract(
    deb: &Path,
    dest: &Path,
    policy: &Policy,
    hooks: &mut dyn ExtractHooks,
) -> Result<Extracted, Error> {
    extract_with(deb, dest, policy, hooks, Destination::Fresh)
}

/// Like [`extract`], into a `dest` that earlier packages of the same transaction extracted
/// into: their directories are shared, anything else in the way fails. Pair it with
/// [`PathOwners`] so two packages cannot ship the same path.
pub fn extract_into(
    deb: &Path,
    dest: &Path,
    policy: &Policy,
    hooks: &mut dyn ExtractHooks,
) -> Result<Extracted, Error> {
    extract_with(deb, dest, policy, hooks, Destination::Shared)
}

/// Like [`extract_into`], for packages extracted into one `dest` at the same time: the
/// directories keep the private mode they were created with (`0700`, so that no other
/// extraction is locked out of one) and get their metadata only from [`finish_dirs`],
/// which the caller runs once every extraction succeeded, in the packages' order. The
/// tree is then the one [`extract_into`] one package after another makes.
pub fn extract_unfinished(
    deb: &Path,
    dest: &Path,
    policy: &Policy,
    hooks: &mut dyn ExtractHooks,
) -> Result<Extracted, Error> {
    extract_with(deb, dest, policy, hooks, Destination::SharedUnfinished)
}

/// Gives the directories of one package extracted by [`extract_unfinished`] their mode,
/// owner and mtime, deepest first.
pub fn finish_dirs(dest: &Path, extracted: &Extracted) -> Result<(), Error> {
    Tree::open_shared(dest)?.finish(dirs_of(&extracted.entries))
}

fn dirs_of(entries: &[Entry]) -> impl Iterator<Item = (&str, Meta)> {
    entries.iter().filter_map(|e| match e.kind {
        EntryKind::Dir => Some((e.path.as_str(), e.meta())),
        _ => None,
    })
}

/// What `dest` is to an extraction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// Empty, the package's alone.
    Fresh,
    /// Shared with the packages extracted before.
    Shared,
    /// Shared with packages being extracted at the same time; directories unfinished.
    SharedUnfinished,
}

fn extract_with(
    deb: &Path,
    dest: &Path,
    policy: &Policy,
    hooks: &mut dyn ExtractHooks,
    into: Destination,
) -> Result<Extracted, Error> {
    let mut package = Package::open(deb)?;
    let control = package.control()?;
    policy.check(deb, &control)?;
    hooks.before_data(deb, &control)?;
    let within = match policy.within.as_deref() {
        None => String::new(),
        Some(within) => path::normalize(within).map_err(|reason| Error::Config {
            path: deb.to_owned(),
            reason: format!("extraction policy: within {within:?}: {reason}"),
        })?,
    };
    let tree = match into {
        Destination::Fresh => Tree::open(dest)?,
        Destination::Shared | Destination::SharedUnfinished => Tree::open_shared(dest)?,
    };
    let (member, compression) = package.data_member()?;
    let raw = package.ar.reader(&member);
    let stream = compression
        .reader(raw, compress::Limits::DEB)
        .map_err(|e| package.fail(&member.name, Failure::Bad(e.to_string())))?;
    let mut extraction = Extraction {
        package: &package,
        member: &member.name,
        policy,
        within: &within,
        hooks,
        tree,
        entries: Vec::new(),
        index: HashMap::new(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        control: &control,
        byte_bound: policy.byte_bound(&control),
        written: 0,
        counted: 0,
    };
    let ran = extraction.run(tar::Reader::new(stream));
    let Extraction {
        mut tree,
        entries,
        written,
        ..
    } = extraction;
    // A failed extraction's files are the caller's to remove: they no longer count.
    let refund = |err: Error| {
        if let Some(set) = &policy.limits.set {
            set.refund(written);
        }
        err
    };
    ran.map_err(refund)?;
    package.end().map_err(refund)?;
    if into != Destination::SharedUnfinished {
        tree.finish(dirs_of(&entries)).map_err(refund)?;
    }
    Ok(Extracted { control, entries })
}

impl Entry {
    fn meta(&self) -> Meta {
        Meta {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
        }
    }
}

/// Why a low-level read failed.
#[derive(Debug)]
enum Failure {
    /// The package is malformed.
    Bad(String),
    /// The .deb file could not be read.
    Io(io::Error),
}

impl From<tar::Error> for Failure {
    /// A malformed archive, or a truncated or corrupt compressed stream under it, is a
    /// bad package; a read error of the .deb file itself stays an I/O error.
    fn from(e: tar::Error) -> Failure {
        match e {
            tar::Error::Malformed(reason) => Failure::Bad(reason),
            tar::Error::Read(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Failure::Bad(format!("truncated: {e}"))
            }
            tar::Error::Read(e) if e.get_ref().is_some_and(|inner| inner.is::<ar::FileError>()) => {
                Failure::Io(e)
            }
            tar::Error::Read(e) => Failure::Bad(e.to_string()),
        }
    }
}

/// An open .deb, walked member by member.
struct Package {
    deb: PathBuf,
    ar: ar::Archive,
}

impl Package {
    fn open(deb: &Path) -> Result<Package, Error> {
        let file = File::open(deb).map_err(|e| Error::io(deb, e))?;
        let mut package = Package {
            deb: deb.to_owned(),
            ar: ar::Archive::new(file).map_err(|f| fail(deb, "", f))?,
        };
        let first = package
            .ar
            .next_member()
            .map_err(|f| package.fail("", f))?
            .ok_or_else(|| package.bad("empty ar archive, not a .deb".into()))?;
        if first.name != "debian-binary" {
            return Err(package.bad(format!(
                "not a .deb: the first member is {:?}, not debian-binary",
                first.name
            )));
        }
        if first.size > DEBIAN_BINARY_MAX {
            return Err(package.bad(format!("debian-binary is {} bytes long", first.size)));
        }
        let mut text = Vec::new();
        package
            .ar
            .reader(&first)
            .read_to_end(&mut text)
            .map_err(|e| package.fail("debian-binary", Failure::Io(e)))?;
        let version = text.split(|&b| b == b'\n').next().unwrap_or_default();
        let supported = text.contains(&b'\n')
            && version
                .strip_prefix(b"2.")
                .is_some_and(|minor| !minor.is_empty() && minor.iter().all(u8::is_ascii_digit));
        if !supported {
            return Err(package.bad(format!(
                "unsupported .deb format {:?} in debian-binary (expected 2.x)",
                String::from_utf8_lossy(&text)
            )));
        }
        Ok(package)
    }

    fn bad(&self, reason: String) -> Error {
        Error::BadPackage {
            deb: self.deb.display().to_string(),
            reason,
        }
    }

    fn fail(&self, member: &str, failure: Failure) -> Error {
        fail(&self.deb, member, failure)
    }

    /// The next member dpkg would not skip.
    fn next_member(&mut self) -> Result<Option<ar::Member>, Error> {
        loop {
            match self.ar.next_member().map_err(|f| fail(&self.deb, "", f))? {
                Some(m) if m.name.starts_with('_') => continue,
                other => return Ok(other),
            }
        }
    }

    /// Reads the control member, which must come next.
    fn control(&mut self) -> Result<Control, Error> {
        let member = self
            .next_member()?
            .ok_or_else(|| self.bad("no control member".into()))?;
        let Some(compression) = Compression::of_control(&member.name) else {
            return Err(self.bad(if Compression::of_data(&member.name).is_some() {
                format!(
                    "the data member {} comes before the control member",
                    member.name
                )
            } else {
                format!(
                    "unexpected member {:?} where the control member belongs",
                    member.name
                )
            }));
        };
        let fail = |f: Failure| fail(&self.deb, &member.name, f);
        let decoder = compression
            .decoder(self.ar.reader(&member), compress::Limits::DEB)
            .map_err(|e| fail(Failure::Bad(e.to_string())))?;
        let mut tar = tar::Reader::new(io::BufReader::new(decoder));
        let mut text: Option<String> = None;
        let mut scripts = Vec::new();
        let (mut count, mut bytes) = (0u64, 0u64);
        while let Some(header) = tar.next_entry().map_err(|e| fail(e.into()))? {
            count += 1;
            bytes = bytes.saturating_add(header.size);
            if count > CONTROL_ENTRIES_MAX {
                return Err(fail(Failure::Bad(format!(
                    "more than {CONTROL_ENTRIES_MAX} entries"
                ))));
            }
            if bytes > CONTROL_MEMBER_MAX {
                return Err(fail(Failure::Bad(format!(
                    "{}: its entries hold more than the {CONTROL_MEMBER_MAX} bytes accepted",
                    header.path
                ))));
            }
            let name = path::normalize(&header.path)
                .map_err(|reason| fail(Failure::Bad(format!("{}: {reason}", header.path))))?;
            if MAINTAINER_SCRIPTS.contains(&name.as_str()) {
                scripts.push(name);
            } else if name == "control" {
                if header.kind != tar::Kind::File {
                    return Err(fail(Failure::Bad(format!(
                        "{}: control is a {}, not a regular file",
                        header.path,
                        header.kind.describe()
                    ))));
                }
                if text.is_some() {
                    return Err(fail(Failure::Bad("two control files".into())));
                }
                if header.size > CONTROL_MAX {
                    return Err(fail(Failure::Bad(format!(
                        "the control file is {} bytes (at most {CONTROL_MAX} accepted)",
                        header.size
                    ))));
                }
                let mut bytes = Vec::with_capacity(header.size as usize);
                loop {
                    let data = tar.data().map_err(|e| fail(e.into()))?;
                    if data.is_empty() {
                        break;
                    }
                    bytes.extend_from_slice(data);
                    let n = data.len();
                    tar.consume(n);
                }
                text = Some(
                    String::from_utf8(bytes)
                        .map_err(|_| fail(Failure::Bad("the control file is not UTF-8".into())))?,
                );
            }
        }
        tar.drain().map_err(|e| fail(e.into()))?;
        let text = text.ok_or_else(|| fail(Failure::Bad("no control file".into())))?;
        Control::parse(&text, scripts).map_err(|reason| self.bad(reason))
    }

    /// The data member, which must come next.
    fn data_member(&mut self) -> Result<(ar::Member, Compression), Error> {
        let member = self
            .next_member()?
            .ok_or_else(|| self.bad("no data member".into()))?;
        match Compression::of_data(&member.name) {
            Some(compression) => Ok((member, compression)),
            None if Compression::of_control(&member.name).is_some() => {
                Err(self.bad(format!("a second control member {}", member.name)))
            }
            None => Err(self.bad(format!(
                "unexpected member {:?} where the data member belongs",
                member.name
            ))),
        }
    }

    /// Checks that nothing but skippable members follow the data member.
    fn end(&mut self) -> Result<(), Error> {
        match self.next_member()? {
            None => Ok(()),
            Some(m) => Err(self.bad(format!(
                "unexpected member {:?} after the data member",
                m.name
            ))),
        }
    }
}

fn fail(deb: &Path, member: &str, failure: Failure) -> Error {
    match failure {
        Failure::Bad(reason) if member.is_empty() => Error::BadPackage {
            deb: deb.display().to_string(),
            reason,
        },
        Failure::Bad(reason) => Error::BadPackage {
            deb: deb.display().to_string(),
            reason: format!("{member}: {reason}"),
        },
        // A read error of the file, perhaps passed up through a decoder: report the
        // error itself, not its wrapping.
        Failure::Io(e) => match e.get_ref().and_then(|i| i.downcast_ref::<ar::FileError>()) {
            Some(file_error) => Error::io(
                deb,
                io::Error::new(file_error.0.kind(), file_error.0.to_string()),
            ),
            None => Error::io(deb, e),
        },
    }
}

/// The state of one data member's extraction.
struct Extraction<'a> {
    package: &'a Package,
    member: &'a str,
    policy: &'a Policy,
    within: &'a str,
    hooks: &'a mut dyn ExtractHooks,
    tree: Tree,
    entries: Vec<Entry>,
    /// Index into `entries` by path.
    index: HashMap<String, usize>,
    started: i64,
    control: &'a Control,
    /// The bytes of regular files the package may write ([`Policy::byte_bound`]).
    byte_bound: Option<u64>,
    /// The bytes of regular files admitted so far (and charged to the set budget).
    written: u64,
    /// Entries listed or implied so far.
    counted: u64,
}

impl Extraction<'_> {
    fn bad(&self, name: &str, reason: impl std::fmt::Display) -> Error {
        self.package
            .bad(format!("{}: {name}: {reason}", self.member))
    }

    fn fail(&self, failure: Failure) -> Error {
        self.package.fail(self.member, failure)
    }

    /// Counts one entry of the archive, or one directory it implies, against
    /// [`Limits::entries`].
    fn count(&mut self, name: &str) -> Result<(), Error> {
        self.counted += 1;
        match self.policy.limits.entries {
            Some(max) if self.counted > max => Err(self.bad(
                name,
                format!("{} has more than {max} entries", self.control.package),
            )),
            _ => Ok(()),
        }
    }

    /// Admits a regular file of `size` bytes against the package's bound and the set's
    /// budget, before it is created.
    fn admit(&mut self, name: &str, size: u64) -> Result<(), Error> {
        let total = self.written.saturating_add(size);
        if let Some(bound) = self.byte_bound
            && total > bound
        {
            let package = &self.control.package;
            let slack = self.policy.limits.installed_size_slack.unwrap_or(0);
            let allowed = match self.control.installed_size_kib {
                Some(kib) => format!(
                    "more than its Installed-Size of {kib} KiB allows ({bound} bytes: {} \
                     declared and {slack} of slack)",
                    kib.saturating_mul(1024)
                ),
                None => format!(
                    "more than the {bound} bytes a package that declares no Installed-Size \
                     may write"
                ),
            };
            return Err(self.bad(
                name,
                format!("{size} bytes would bring {package}'s files to {total} bytes, {allowed}"),
            ));
        }
        if let Some(set) = &self.policy.limits.set
            && let Err(set_total) = set.charge(size)
        {
            return Err(self.bad(
                name,
                format!(
                    "{size} bytes would bring the files of the packages extracted together \
                     to {set_total} bytes, more than the {} they may take",
                    set.limit()
                ),
            ));
        }
        self.written = total;
        Ok(())
    }

    fn run<R: io::BufRead>(&mut self, mut tar: tar::Reader<R>) -> Result<(), Error> {
        while let Some(header) = tar.next_entry().map_err(|e| self.fail(e.into()))? {
            self.entry(&header, &mut tar)?;
        }
        tar.drain().map_err(|e| self.fail(e.into()))
    }

    fn entry<R: io::BufRead>(
        &mut self,
        header: &tar::Entry,
        tar: &mut tar::Reader<R>,
    ) -> Result<(), Error> {
        let name = header.path.as_str();
        self.count(name)?;
        let archive_path = path::normalize(name).map_err(|reason| self.bad(name, reason))?;
        let rel = match path::place(&archive_path, self.within) {
            Placement::Inside(rel) => rel.to_owned(),
            Placement::Root | Placement::Ancestor if header.kind == tar::Kind::Directory => {
                return Ok(());
            }
            Placement::Root | Placement::Ancestor => {
                let place = if self.within.is_empty() {
                    "the archive's root".to_owned()
                } else {
                    format!("/{} and its parents", self.within)
                };
                return Err(self.bad(
                    name,
                    format!(
                        "a {} where only a directory may be ({place})",
                        header.kind.describe()
                    ),
                ));
            }
            Placement::Outside => {
                return Err(self.bad(name, format!("outside /{}/", self.within)));
            }
        };
        match header.kind {
            tar::Kind::CharDevice | tar::Kind::BlockDevice | tar::Kind::Fifo => {
                return Err(self.bad(name, format!("{}s are not allowed", header.kind.describe())));
            }
            _ => {}
        }
        if !self.policy.allow_setid && header.mode & 0o6000 != 0 {
            let bits = match header.mode & 0o6000 {
                0o4000 => "setuid",
                0o2000 => "setgid",
                _ => "setuid and setgid",
            };
            return Err(self.bad(name, format!("{bits} mode {:04o}", header.mode)));
        }
        for id in [header.uid, header.gid] {
            if id >= u64::from(u32::MAX) {
                return Err(self.bad(name, format!("owner id {id} out of range")));
            }
        }
        if let Some(&i) = self.index.get(&rel) {
            let both_dirs =
                header.kind == tar::Kind::Directory && self.entries[i].kind == EntryKind::Dir;
            if !both_dirs {
                return Err(self.bad(name, "shipped twice in the archive"));
            }
        }
        self.parents(name, &rel)?;
        let link_target = match header.kind {
            tar::Kind::HardLink => self.hardlink_target(name, &header.link)?,
            _ => String::new(),
        };
        let kind = match header.kind {
            tar::Kind::Symlink => {
                if self.policy.confine_links {
                    path::resolve_symlink(&archive_path, &header.link, self.within)
                        .map_err(|reason| self.bad(name, reason))?;
                } else if header.link.is_empty() {
                    return Err(self.bad(name, "empty symlink target"));
                }
                HeaderKind::Symlink {
                    target: &header.link,
                }
            }
            tar::Kind::HardLink => HeaderKind::HardLink {
                target: &link_target,
            },
            tar::Kind::Directory => HeaderKind::Dir,
            tar::Kind::File => HeaderKind::File { size: header.size },
            tar::Kind::CharDevice | tar::Kind::BlockDevice | tar::Kind::Fifo => {
                unreachable!("refused above")
            }
        };
        if let HeaderKind::File { size } = kind {
            self.admit(name, size)?;
        }
        let entry = EntryHeader {
            path: &rel,
            kind,
            mode: header.mode,
            uid: header.uid,
            gid: header.gid,
            mtime: header.mtime,
        };
        self.hooks.before_entry(&entry)?;
        let meta = Meta {
            mode: header.mode,
            uid: header.uid,
            gid: header.gid,
            mtime: header.mtime,
        };
        let kind = match kind {
            HeaderKind::Dir => {
                if let Some(&i) = self.index.get(&rel) {
                    let e = &mut self.entries[i];
                    (e.mode, e.uid, e.gid, e.mtime) = (meta.mode, meta.uid, meta.gid, meta.mtime);
                    return Ok(());
                }
                self.tree.mkdir(&rel)?;
                EntryKind::Dir
            }
            HeaderKind::File { size } => {
                let mut file = self.tree.create_file(&rel)?;
                let mut hasher = Sha256Hasher::new();
                loop {
                    let data = tar
                        .data()
                        .map_err(|e| self.fail(with_name(name, e.into())))?;
                    if data.is_empty() {
                        break;
                    }
                    hasher.update(data);
                    file.write_all(data)
                        .map_err(|e| Error::io(self.tree_path(&rel), e))?;
                    let n = data.len();
                    tar.consume(n);
                }
                self.tree.finish_file(&rel, &file, &meta)?;
                self.hooks.after_file(&rel, &file)?;
                EntryKind::File {
                    size,
                    sha256: hasher.finish(),
                }
            }
            HeaderKind::Symlink { target } => {
                self.tree.symlink(&rel, target, &meta)?;
                EntryKind::Symlink {
                    target: target.to_owned(),
                }
            }
            HeaderKind::HardLink { target } => {
                self.tree.hardlink(&rel, target)?;
                EntryKind::HardLink {
                    target: target.to_owned(),
                }
            }
        };
        self.record(Entry {
            path: rel,
            kind,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
        });
        Ok(())
    }

    fn tree_path(&self, rel: &str) -> PathBuf {
        self.tree.dest().join(rel)
    }

    fn record(&mut self, entry: Entry) {
        self.index.insert(entry.path.clone(), self.entries.len());
        self.entries.push(entry);
    }

    /// Checks that `rel`'s ancestors are directories, creating those the archive did
    /// not list.
    fn parents(&mut self, name: &str, rel: &str) -> Result<(), Error> {
        for (i, _) in rel.match_indices('/') {
            let ancestor = &rel[..i];
            match self.index.get(ancestor) {
                Some(&j) if self.entries[j].kind == EntryKind::Dir => {}
                Some(&j) => {
                    let what = match &self.entries[j].kind {
                        EntryKind::Symlink { .. } => "a symlink",
                        _ => "a file",
                    };
                    return Err(self.bad(
                        name,
                        format!("its parent {ancestor} is {what}; refusing to write through it"),
                    ));
                }
                None => {
                    self.count(name)?;
                    let (uid, gid) = (
                        u64::from(nix::unistd::geteuid().as_raw()),
                        u64::from(nix::unistd::getegid().as_raw()),
                    );
                    let header = EntryHeader {
                        path: ancestor,
                        kind: HeaderKind::Dir,
                        mode: 0o755,
                        uid,
                        gid,
                        mtime: self.started,
                    };
                    self.hooks.before_entry(&header)?;
                    self.tree.mkdir(ancestor)?;
                    self.record(Entry {
                        path: ancestor.to_owned(),
                        kind: EntryKind::Dir,
                        mode: 0o755,
                        uid,
                        gid,
                        mtime: self.started,
                    });
                }
            }
        }
        Ok(())
    }

    /// A hard link's target, relative to `dest`: a regular file extracted earlier.
    fn hardlink_target(&self, name: &str, link: &str) -> Result<String, Error> {
        let refuse = |why: &str| self.bad(name, format!("hard link to {link:?}, {why}"));
        let target = path::normalize(link).map_err(|reason| refuse(&reason))?;
        let rel = match path::place(&target, self.within) {
            Placement::Inside(rel) => rel,
            Placement::Outside => return Err(refuse(&format!("outside /{}/", self.within))),
            Placement::Root | Placement::Ancestor => {
                return Err(refuse("which is not a regular file"));
            }
        };
        match self.index.get(rel) {
            Some(&i) => match self.entries[i].kind {
                EntryKind::File { .. } | EntryKind::HardLink { .. } => Ok(rel.to_owned()),
                _ => Err(refuse("which is not a regular file")),
            },
            None => Err(refuse("which was not extracted before it")),
        }
    }
}

fn with_name(name: &str, failure: Failure) -> Failure {
    match failure {
        Failure::Bad(reason) => Failure::Bad(format!("{name}: {reason}")),
        io => io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_serialize_as_flat_json_for_manifests() {
        let entries = vec![
            Entry {
                path: "bin/apt".into(),
                kind: EntryKind::File {
                    size: 3,
                    sha256: Sha256::of(b"abc"),
                },
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 1_700_000_000,
            },
            Entry {
                path: "bin/apt-get".into(),
                kind: EntryKind::HardLink {
                    target: "bin/apt".into(),
                },
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 1_700_000_000,
            },
            Entry {
                path: "lib".into(),
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 1,
            },
        ];
        let json = serde_json::to_value(&entries).unwrap();
        assert_eq!(
            json[0],
            serde_json::json!({
                "path": "bin/apt", "type": "file", "size": 3,
                "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                "mode": 0o755, "uid": 0, "gid": 0, "mtime": 1_700_000_000
            })
        );
        assert_eq!(json[1]["type"], "hardlink");
        assert_eq!(json[2]["type"], "dir");
        let back: Vec<Entry> = serde_json::from_value(json).unwrap();
        assert_eq!(back, entries);
    }

    #[test]
    fn the_helper_policy_checks_name_architecture_and_scripts() {
        let deb = Path::new("x.deb");
        let control = |package: &str, arch: &str, scripts: &[&str], reversible: bool| {
            let mut text = format!("Package: {package}\nVersion: 1\nArchitecture: {arch}\n");
            if reversible {
                text.push_str("X-Release-Upgrader-Reversible: yes\n");
            }
            Control::parse(&text, scripts.iter().map(|s| s.to_string()).collect()).unwrap()
        };
        let helper = Policy::helper("amd64");
        assert!(
            helper
                .check(deb, &control("release-upgrader-apt", "amd64", &[], false))
                .is_ok()
        );
        assert!(
            helper
                .check(deb, &control("release-upgrader-apt", "all", &[], false))
                .is_ok()
        );
        assert!(
            helper
                .check(deb, &control("release-upgrader-apt", "i386", &[], false))
                .is_err()
        );
        assert!(
            helper
                .check(deb, &control("apt", "amd64", &[], false))
                .is_err()
        );
        assert!(
            helper
                .check(
                    deb,
                    &control("release-upgrader-apt", "amd64", &["postinst"], false)
                )
                .is_err()
        );
        assert!(
            helper
                .check(
                    deb,
                    &control("release-upgrader-apt", "amd64", &["postinst"], true)
                )
                .is_ok()
        );
        let upstream = Policy::upstream();
        assert!(
            upstream
                .check(deb, &control("apt", "i386", &["postinst"], false))
                .is_ok()
        );
    }
}
