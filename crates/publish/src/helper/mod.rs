//! `release-upgrader-publish helper build`: relocatable `release-upgrader-*` helper
//! packages made from the target release's real packages (docs/protocol.md §3).
//!
//! The pipeline: verify the archive's `InRelease` and fetch its `Packages`
//! ([`source`]); resolve the recipe's packages and their dependencies inside it; download
//! and extract them with the hostile-input reader ([`crate::deb`]) into one tree; pick
//! each helper's files; compute the libraries their programs need from the ELF files
//! ([`elf`]); give every program a loader wrapper that runs it with the bundled loader
//! and libraries; write the debs reproducibly ([`debfile`]).
//!
//! # The entry points
//!
//! Each entry point in `bin/`, `methods/` and `dpkg-path/` is a `/bin/sh` script that
//! finds the prefix from its own path (`$0`, so it works in any root: under `--root`,
//! from `PATH`, through a symlink) and runs
//! `exec "$root/<loader>" --library-path "<dirs in root>" --argv0 "$0" "$root/<program>"`.
//! An upgrade starts dpkg and its backends through them about a thousand times, so the
//! common case, an absolute `$0` (apt's `Dir::Bin::dpkg`, a `PATH` lookup), takes the
//! prefix by name: the subshell that asks the file system costs 0.4 ms of the 1.9 ms a
//! start through an entry point takes here, and is kept for relative paths, `.`/`..` and
//! a `//` before the name.
//! The library path is an argument of the loader, not `LD_LIBRARY_PATH`: nothing the
//! program starts inherits it. `--argv0` keeps the name the program was called by (apt's
//! http method is `https` when called so).

pub mod core;
pub mod debfile;
pub mod elf;
pub mod recipe;
pub mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::deb::{self, EntryKind, Policy};
use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::{Fetcher, Location};
use crate::layout;
use crate::openpgp::Keyring;
use crate::version::Version;

pub use core::CoreRequest;
pub use debfile::DebCompression;
use debfile::{Content, TarEntry};
use recipe::{HelperRecipe, Recipe, Ship};
use source::Archive;

/// What `helper build` is asked to do.
#[derive(Debug)]
pub struct BuildRequest<'a> {
    pub recipe: &'a Recipe,
    /// The target release (`dists/<release>/`).
    pub release: &'a str,
    /// The archive root (the directory holding `dists/` and `pool/`).
    pub archive: &'a Location,
    pub arch: &'a str,
    pub out: &'a Path,
    pub keyring: &'a Keyring,
    /// Where upstream debs are kept between builds.
    pub cache: &'a Path,
    /// `SOURCE_DATE_EPOCH`: no mtime in the output is newer.
    pub source_date_epoch: Option<i64>,
    /// The compression of the debs' members.
    pub compression: DebCompression,
    /// Also package this `release-upgrader` binary as `release-upgrader-core`.
    pub core: Option<CoreRequest<'a>>,
}

/// A helper package written.
#[derive(Clone, Debug, Serialize)]
pub struct BuiltDeb {
    pub package: String,
    pub version: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// Files and symlinks in it.
    pub entries: usize,
    /// `name version` of every upstream package it bundles files of.
    pub upstream: Vec<String>,
}

/// Where upstream debs are cached by default: `$XDG_CACHE_HOME/release-upgrader/debs`
/// (or `~/.cache/…`).
pub fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("release-upgrader/debs")
}

/// A file a helper ships, keyed by its path under the prefix.
#[derive(Clone, Debug)]
enum Item {
    /// A regular file of the unpacked tree.
    Tree {
        path: String,
        mode: u32,
        mtime: i64,
    },
    Symlink {
        target: String,
        mtime: i64,
    },
    /// An entry point script.
    Script(String),
}

/// The unpacked upstream packages, merged into one tree.
struct Unpacked {
    tree: PathBuf,
    /// Non-directory path → the package that shipped it.
    owners: BTreeMap<String, String>,
    /// Path → (mode, mtime) as the package had it.
    meta: BTreeMap<String, (u32, i64)>,
    /// Package → version.
    versions: BTreeMap<String, String>,
}

/// Builds the helpers of `request.recipe` (and the core helper, when asked); returns the
/// debs written into `request.out`.
pub fn build(fetcher: &Fetcher, request: &BuildRequest<'_>) -> Result<Vec<BuiltDeb>, Error> {
    if request
        .recipe
        .helpers
        .iter()
        .any(|h| h.name == layout::CORE_PACKAGE)
    {
        return Err(Error::Config {
            path: PathBuf::from(layout::CORE_PACKAGE),
            reason: "a recipe cannot define the core helper; `helper build --core` makes it".into(),
        });
    }
    // The core is one more helper of the recipe, laid out like the others.
    let mut with_core: Option<Recipe> = request.core.as_ref().map(|_| {
        let mut recipe = request.recipe.clone();
        recipe.helpers.push(core::recipe());
        recipe
    });
    let recipe = with_core.as_ref().unwrap_or(request.recipe);
    let archive = Archive::open(
        fetcher,
        request.keyring,
        request.archive,
        request.release,
        &recipe.component,
        request.arch,
    )?;
    // The core's "upstream" is the binary given, not a package of the archive.
    let mut roots: Vec<String> = Vec::new();
    for helper in &request.recipe.helpers {
        for name in helper.upstream.iter().chain([&helper.version_from]) {
            if !roots.contains(name) {
                roots.push(name.clone());
            }
        }
    }
    let not_needed: BTreeSet<String> = recipe.not_needed.iter().cloned().collect();
    let packages = archive.index.closure(&roots, &not_needed)?;
    log::info!(
        "{} upstream packages: {}",
        packages.len(),
        packages
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    fs_err::create_dir_all(request.out).map_err(|e| Error::io(request.out, e))?;
    fs_err::create_dir_all(request.cache).map_err(|e| Error::io(request.cache, e))?;
    let work = tempfile::Builder::new()
        .prefix(".helper-build-")
        .tempdir_in(request.out)
        .map_err(|e| Error::io(request.out, e))?;
    let mut unpacked = Unpacked {
        tree: work.path().join("tree"),
        owners: BTreeMap::new(),
        meta: BTreeMap::new(),
        versions: BTreeMap::new(),
    };
    fs_err::create_dir(&unpacked.tree).map_err(|e| Error::io(&unpacked.tree, e))?;
    for package in &packages {
        let deb = archive.download(fetcher, package, request.cache)?;
        let dest = work.path().join("debs").join(&package.name);
        fs_err::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
        let extracted = deb::extract(&deb, &dest, &Policy::upstream(), &mut ())?;
        if extracted.control.package != package.name {
            return Err(Error::BadPackage {
                deb: deb.display().to_string(),
                reason: format!(
                    "it is {}, but the archive's index calls it {}",
                    extracted.control.package, package.name
                ),
            });
        }
        merge(&dest, &extracted.entries, &package.name, &mut unpacked)?;
        unpacked
            .versions
            .insert(package.name.clone(), package.version.to_string());
    }
    log::info!("unpacked {} packages", packages.len());
    if let Some(core) = &request.core {
        core::add_to_tree(&mut unpacked, core)?;
    }
    let plan = plan(recipe, request.arch, &unpacked)?;
    log::info!("computed the library closure and entry points");
    if let (Some(core), Some(recipe)) = (&request.core, with_core.as_mut()) {
        let version = core::version(core, &unpacked.tree, &plan.loader, &plan.directories)?;
        log::info!("{} {version}", layout::CORE_PACKAGE);
        unpacked
            .versions
            .insert(core::NAME.to_owned(), version.clone());
        if let Some(helper) = recipe.helpers.last_mut() {
            helper.version = Some(version);
        }
    }
    let recipe = with_core.as_ref().unwrap_or(request.recipe);
    let mut built = Vec::new();
    for (helper, items) in recipe.helpers.iter().zip(&plan.items) {
        let deb = write_helper(recipe, request, helper, items, &plan, &unpacked)?;
        log::info!("wrote {}", deb.path.display());
        built.push(deb);
    }
    Ok(built)
}

/// Adds the extracted package at `dest` to the merged tree; the first package to ship
/// a path keeps it.
fn merge(
    dest: &Path,
    entries: &[deb::Entry],
    package: &str,
    unpacked: &mut Unpacked,
) -> Result<(), Error> {
    let tree = unpacked.tree.clone();
    let under_link = |owners: &BTreeMap<String, String>, path: &str| {
        let mut at = path;
        while let Some((parent, _)) = at.rsplit_once('/') {
            if owners.contains_key(parent) {
                return true;
            }
            at = parent;
        }
        false
    };
    for entry in entries {
        let path = entry.path.as_str();
        if path.is_empty() || under_link(&unpacked.owners, path) {
            continue;
        }
        let target = tree.join(path);
        let taken = std::fs::symlink_metadata(&target).ok();
        match &entry.kind {
            EntryKind::Dir => {
                if taken.is_none() {
                    fs_err::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
                }
                unpacked
                    .meta
                    .entry(path.to_owned())
                    .or_insert((entry.mode, entry.mtime));
                continue;
            }
            _ if taken.is_some() => {
                log::debug!(
                    "{path} of {package} is already unpacked from {}",
                    unpacked.owners.get(path).map_or("?", String::as_str)
                );
                continue;
            }
            EntryKind::File { .. } | EntryKind::HardLink { .. } => {
                if let Some(parent) = target.parent() {
                    fs_err::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                let source = dest.join(path);
                fs_err::hard_link(&source, &target)
                    .or_else(|_| fs_err::copy(&source, &target).map(|_| ()))
                    .map_err(|e| Error::io(&target, e))?;
            }
            EntryKind::Symlink { target: link } => {
                if let Some(parent) = target.parent() {
                    fs_err::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                std::os::unix::fs::symlink(link, &target).map_err(|e| Error::io(&target, e))?;
            }
        }
        unpacked.owners.insert(path.to_owned(), package.to_owned());
        unpacked
            .meta
            .insert(path.to_owned(), (entry.mode, entry.mtime));
    }
    Ok(())
}

/// The target of the link at `link` (relative to the tree), resolved lexically; `None`
/// when it climbs out of the tree.
fn link_destination(link: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        link.split('/').collect::<Vec<_>>()[..link.split('/').count() - 1].to_vec()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// What every helper ships, and the loader and library path the entry points use.
struct Plan {
    /// Per helper, in recipe order: path under the prefix → item.
    items: Vec<BTreeMap<String, Item>>,
    /// The dynamic loader, relative to the tree.
    loader: String,
    /// The library path of the entry points, relative to the tree.
    directories: Vec<String>,
}

fn root_path(path: &str) -> String {
    format!("{}/{path}", layout::ROOT)
}

fn plan(recipe: &Recipe, arch: &str, unpacked: &Unpacked) -> Result<Plan, Error> {
    let tree = &unpacked.tree;
    let mut items: Vec<BTreeMap<String, Item>> = vec![BTreeMap::new(); recipe.helpers.len()];
    // Which helper ships each tree path.
    let mut shipped_by: BTreeMap<String, usize> = BTreeMap::new();
    for (index, helper) in recipe.helpers.iter().enumerate() {
        if helper.ship != Ship::All {
            continue;
        }
        for (path, owner) in &unpacked.owners {
            if !helper.upstream.contains(owner) || recipe.drops(path) {
                continue;
            }
            let item = tree_item(tree, path, unpacked)?;
            let Some(item) = item else { continue };
            items[index].insert(root_path(path), item);
            shipped_by.insert(path.clone(), index);
        }
    }
    // The libraries of each helper's programs.
    let search = elf::default_search(arch);
    let shared = recipe.helpers.iter().position(|h| h.shared_libraries);
    let mut users: BTreeMap<String, (elf::Library, BTreeSet<usize>)> = BTreeMap::new();
    let mut loaders: BTreeSet<String> = BTreeSet::new();
    let mut directories: Vec<String> = Vec::new();
    for (index, helper_items) in items.iter().enumerate() {
        let mut programs = Vec::new();
        for item in helper_items.values() {
            if let Item::Tree { path, .. } = item
                && elf::is_elf(&tree.join(path))?
            {
                programs.push(path.clone());
            }
        }
        if programs.is_empty() {
            continue;
        }
        let closure = elf::closure(tree, &programs, &search)?;
        loaders.extend(closure.loaders);
        for dir in closure.directories {
            if !directories.contains(&dir) {
                directories.push(dir);
            }
        }
        for (found, library) in closure.libraries {
            users
                .entry(found)
                .or_insert_with(|| (library, BTreeSet::new()))
                .1
                .insert(index);
        }
    }
    // Keep the search order for the library path.
    directories.sort_by_key(|dir| search.iter().position(|s| s == dir).unwrap_or(0));
    let loader = match loaders.len() {
        1 => loaders.into_iter().next().unwrap_or_default(),
        0 => {
            return Err(Error::Config {
                path: tree.clone(),
                reason: "no program of the recipe names a dynamic loader (PT_INTERP)".into(),
            });
        }
        _ => {
            return Err(Error::Config {
                path: tree.clone(),
                reason: format!(
                    "the programs name different dynamic loaders: {}",
                    loaders.into_iter().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    };
    let mut place = |index: usize, path: &str, item: Item| {
        if !shipped_by.contains_key(path) {
            shipped_by.insert(path.to_owned(), index);
            items[index].insert(root_path(path), item);
        }
    };
    for (found, (library, helper_set)) in &users {
        let owner_package = unpacked
            .owners
            .get(&library.real)
            .cloned()
            .unwrap_or_default();
        let index = match shared {
            Some(shared)
                if helper_set.len() > 1
                    || recipe.helpers[shared].upstream.contains(&owner_package) =>
            {
                shared
            }
            _ if helper_set.len() == 1 => *helper_set.iter().next().unwrap_or(&0),
            _ => {
                return Err(Error::Config {
                    path: PathBuf::from(found),
                    reason: "needed by several helpers, and no helper of the recipe has \
                             shared-libraries = true"
                        .into(),
                });
            }
        };
        let (mode, mtime) = unpacked
            .meta
            .get(&library.real)
            .copied()
            .unwrap_or((0o644, 0));
        place(
            index,
            &library.real,
            Item::Tree {
                path: library.real.clone(),
                mode,
                mtime,
            },
        );
        if found != &library.real {
            let mtime = unpacked.meta.get(found).map_or(mtime, |m| m.1);
            place(
                index,
                found,
                Item::Symlink {
                    target: elf::relative(parent_dir(found), &library.real),
                    mtime,
                },
            );
        }
    }
    let loader_owner = shared.unwrap_or(0);
    let (mode, mtime) = unpacked.meta.get(&loader).copied().unwrap_or((0o755, 0));
    place(
        loader_owner,
        &loader,
        Item::Tree {
            path: loader.clone(),
            mode,
            mtime,
        },
    );
    // A helper may only rely on libraries of itself, the shared helper, or helpers it
    // depends on (directly or not): otherwise installing it alone would break it.
    for (found, (library, helper_set)) in &users {
        let Some(&owner) = shipped_by.get(&library.real) else {
            continue;
        };
        for &user in helper_set {
            if user != owner && Some(owner) != shared && !depends_on(recipe, user, owner) {
                return Err(Error::Config {
                    path: PathBuf::from(found),
                    reason: format!(
                        "{} needs it, but it is shipped by {}, which {} does not depend on",
                        recipe.helpers[user].name,
                        recipe.helpers[owner].name,
                        recipe.helpers[user].name
                    ),
                });
            }
        }
    }
    // The entry points.
    for (index, helper) in recipe.helpers.iter().enumerate() {
        let mut entries: Vec<(String, String)> = Vec::new();
        for program in &helper.bin {
            let path = ["usr/bin", "usr/sbin", "bin", "sbin"]
                .iter()
                .map(|dir| format!("{dir}/{program}"))
                .find(|path| items[index].contains_key(&root_path(path)))
                .ok_or_else(|| Error::Config {
                    path: PathBuf::from(&helper.name),
                    reason: format!(
                        "program {program} is in none of usr/bin, usr/sbin, bin, sbin of {}",
                        helper.upstream.join(", ")
                    ),
                })?;
            let real = program_file(tree, &path)?;
            entries.push((format!("{}/{program}", layout::BIN), real.clone()));
            if helper.dpkg_path.contains(program) {
                entries.push((format!("{}/{program}", layout::DPKG_PATH), real));
            }
        }
        if let Some(methods) = &helper.methods {
            let methods = methods.trim_matches('/');
            let prefix = root_path(&format!("{methods}/"));
            let names: Vec<String> = items[index]
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|name| !name.contains('/'))
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                return Err(Error::Config {
                    path: PathBuf::from(&helper.name),
                    reason: format!("no acquire method in {methods}"),
                });
            }
            for name in names {
                let path = format!("{methods}/{name}");
                let Some(real) = elf::resolve(tree, &path, true) else {
                    continue;
                };
                if !elf::is_elf(&tree.join(&real))? {
                    continue;
                }
                entries.push((format!("{}/{name}", layout::METHODS), real));
            }
        }
        for (entry, program) in entries {
            let script = wrapper(&helper.name, &loader, &directories, &program);
            items[index].insert(entry, Item::Script(script));
        }
    }
    // No path in two helpers (directories aside: they are implied, not items).
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (helper, helper_items) in recipe.helpers.iter().zip(&items) {
        for path in helper_items.keys() {
            if let Some(other) = seen.insert(path, &helper.name) {
                return Err(Error::Config {
                    path: PathBuf::from(path),
                    reason: format!("shipped by both {other} and {}", helper.name),
                });
            }
        }
    }
    Ok(Plan {
        items,
        loader,
        directories,
    })
}

/// Whether helper `from` depends on helper `to`, directly or through other helpers.
fn depends_on(recipe: &Recipe, from: usize, to: usize) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(at) = stack.pop() {
        if !seen.insert(at) {
            continue;
        }
        for name in &recipe.helpers[at].depends {
            if let Some(next) = recipe.helpers.iter().position(|h| &h.name == name) {
                if next == to {
                    return true;
                }
                stack.push(next);
            }
        }
    }
    false
}

/// The item for a non-directory tree path, or `None` for a link that leaves the tree.
fn tree_item(tree: &Path, path: &str, unpacked: &Unpacked) -> Result<Option<Item>, Error> {
    let full = tree.join(path);
    let meta = fs_err::symlink_metadata(&full).map_err(|e| Error::io(&full, e))?;
    let (mode, mtime) = unpacked
        .meta
        .get(path)
        .copied()
        .unwrap_or((meta.mode() & 0o7777, meta.mtime()));
    if meta.file_type().is_symlink() {
        let target = fs_err::read_link(&full).map_err(|e| Error::io(&full, e))?;
        let target = target.to_string_lossy();
        let Some(destination) = link_destination(path, &target) else {
            log::warn!("{path}: skipping a link that leaves the tree ({target})");
            return Ok(None);
        };
        return Ok(Some(Item::Symlink {
            target: elf::relative(parent_dir(path), &destination),
            mtime,
        }));
    }
    Ok(Some(Item::Tree {
        path: path.to_owned(),
        mode,
        mtime,
    }))
}

/// The regular ELF file the program at `path` resolves to.
fn program_file(tree: &Path, path: &str) -> Result<String, Error> {
    let real = elf::resolve(tree, path, true).ok_or_else(|| Error::Config {
        path: tree.join(path),
        reason: "a link to nothing".into(),
    })?;
    if !elf::is_elf(&tree.join(&real))? {
        return Err(Error::Config {
            path: tree.join(path),
            reason: "not an ELF program; entry points run programs through the bundled loader"
                .into(),
        });
    }
    Ok(real)
}

/// Single-quotes `text` for /bin/sh.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The entry point that runs `program` (relative to the root) with the bundled `loader`
/// and libraries in `directories` (relative to the root).
fn wrapper(helper: &str, loader: &str, directories: &[String], program: &str) -> String {
    let library_path = directories
        .iter()
        .map(|dir| format!("\"$root\"/{}", quote(dir)))
        .collect::<Vec<_>>()
        .join(":");
    format!(
        r#"#!/bin/sh
# Entry point of {helper}: runs the bundled {program} with the bundled
# dynamic loader and libraries (never LD_LIBRARY_PATH). Written by release-upgrader-publish.
self=$0
if [ -L "$self" ]; then self=$(readlink -f -- "$self") || exit 127; fi
case $self in */*) dir=${{self%/*}} ;; *) dir=. ;; esac
# An absolute directory without . or .. names the prefix as its parent (no subshell).
case $dir in
  */ | */. | */./* | */.. | */../* | [!/]*) root=$(cd -- "$dir/.." && pwd -P) || exit 127 ;;
  *) root=${{dir%/*}} ;;
esac
root=$root/{root}
exec "$root"/{loader} --library-path {library_path} --argv0 "$0" "$root"/{program} "$@"
"#,
        root = layout::ROOT,
        loader = quote(loader),
        program = quote(program),
    )
}

fn write_helper(
    recipe: &Recipe,
    request: &BuildRequest<'_>,
    helper: &HelperRecipe,
    items: &BTreeMap<String, Item>,
    plan: &Plan,
    unpacked: &Unpacked,
) -> Result<BuiltDeb, Error> {
    let version_of = |name: &str| -> Result<String, Error> {
        let upstream = unpacked.versions.get(name).ok_or_else(|| Error::Config {
            path: PathBuf::from(&helper.name),
            reason: format!("takes its version from {name}, which was not unpacked"),
        })?;
        let text = format!("{upstream}{}", recipe.version_suffix);
        text.parse::<Version>().map_err(|e| Error::Config {
            path: PathBuf::from(&helper.name),
            reason: format!("version {text:?}: {e}"),
        })?;
        Ok(text)
    };
    let version = match &helper.version {
        Some(version) => version.clone(),
        None => version_of(&helper.version_from)?,
    };
    let epoch = request.source_date_epoch.unwrap_or_else(|| {
        plan.items
            .iter()
            .flat_map(|items| items.values())
            .filter_map(|item| match item {
                Item::Tree { mtime, .. } | Item::Symlink { mtime, .. } => Some(*mtime),
                Item::Script(_) => None,
            })
            .max()
            .unwrap_or(0)
    });
    let clamp = |mtime: i64| mtime.min(epoch);
    let prefix = layout::PREFIX_IN_DEB;
    let mut entries: BTreeMap<String, TarEntry> = BTreeMap::new();
    let add_dirs = |entries: &mut BTreeMap<String, TarEntry>, path: &str| {
        let mut at = path;
        loop {
            at = parent_dir(at);
            entries.entry(at.to_owned()).or_insert_with(|| TarEntry {
                path: at.to_owned(),
                content: Content::Dir,
                mode: 0o755,
                mtime: epoch,
            });
            if at.is_empty() {
                break;
            }
        }
    };
    let mut installed_kib: u64 = 0;
    let mut upstream: BTreeSet<String> = BTreeSet::new();
    for (path, item) in items {
        let full = format!("{prefix}/{path}");
        add_dirs(&mut entries, &full);
        let (content, mode, mtime) = match item {
            Item::Tree { path, mode, mtime } => {
                if let Some(owner) = unpacked.owners.get(path) {
                    upstream.insert(owner.clone());
                }
                let file = unpacked.tree.join(path);
                let data = fs_err::read(&file).map_err(|e| Error::io(&file, e))?;
                (Content::File(data), mode & 0o777, clamp(*mtime))
            }
            Item::Symlink { target, mtime } => {
                (Content::Symlink(target.clone()), 0o777, clamp(*mtime))
            }
            Item::Script(text) => (Content::File(text.as_bytes().to_vec()), 0o755, epoch),
        };
        installed_kib += match &content {
            Content::File(data) => (data.len() as u64).div_ceil(1024),
            _ => 1,
        };
        entries.insert(
            full.clone(),
            TarEntry {
                path: full,
                content,
                mode,
                mtime,
            },
        );
    }
    let mut depends: Vec<String> = Vec::new();
    if let Some(shared) = recipe.helpers.iter().find(|h| h.shared_libraries)
        && shared.name != helper.name
    {
        depends.push(format!(
            "{} (= {})",
            shared.name,
            version_of(&shared.version_from)?
        ));
    }
    for name in &helper.depends {
        let other = recipe
            .helpers
            .iter()
            .find(|h| &h.name == name)
            .ok_or_else(|| Error::Config {
                path: PathBuf::from(&helper.name),
                reason: format!("depends on unknown helper {name}"),
            })?;
        let line = format!("{name} (= {})", version_of(&other.version_from)?);
        if !depends.contains(&line) {
            depends.push(line);
        }
    }
    let mut bundled: Vec<String> = helper
        .upstream
        .iter()
        .filter(|name| upstream.contains(*name))
        .cloned()
        .collect();
    bundled.extend(
        upstream
            .iter()
            .filter(|name| !helper.upstream.contains(name))
            .cloned(),
    );
    let bundled: Vec<String> = bundled
        .iter()
        .map(|name| {
            format!(
                "{name} {}",
                unpacked.versions.get(name).map_or("?", String::as_str)
            )
        })
        .collect();
    let release = request.release;
    let mut control = format!(
        "Package: {}\nVersion: {version}\nArchitecture: {}\nMaintainer: {}\nInstalled-Size: {installed_kib}\n",
        helper.name, request.arch, recipe.maintainer
    );
    if !depends.is_empty() {
        control.push_str(&format!("Depends: {}\n", depends.join(", ")));
    }
    control.push_str(&format!(
        "Section: admin\nPriority: optional\nX-Release-Upgrader-Upstream: {}\n\
         Description: {}\n {release}'s packages, relocated under /{prefix}/ so that they run on the\n \
         release being upgraded (release-upgrader's helper layout, docs/protocol.md section 3).\n",
        bundled.join(", "),
        helper.description
    ));
    let version_in_name = version.split_once(':').map_or(version.as_str(), |(_, v)| v);
    let path = request.out.join(format!(
        "{}_{version_in_name}_{}.deb",
        helper.name, request.arch
    ));
    let data: Vec<TarEntry> = entries.into_values().collect();
    let count = data.iter().filter(|e| e.content != Content::Dir).count();
    debfile::write_deb(&path, &control, &data, epoch, request.compression)?;
    let bytes = fs_err::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok(BuiltDeb {
        package: helper.name.clone(),
        version,
        size: bytes.len() as u64,
        sha256: Sha256::of(&bytes).to_string(),
        path,
        entries: count,
        upstream: bundled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_resolved_lexically_inside_the_tree() {
        assert_eq!(
            link_destination("usr/lib/apt/methods/https", "http").as_deref(),
            Some("usr/lib/apt/methods/http")
        );
        assert_eq!(
            link_destination("usr/lib64/ld.so", "/usr/lib/x/ld.so").as_deref(),
            Some("usr/lib/x/ld.so")
        );
        assert_eq!(link_destination("a/b", "../../../etc"), None);
    }

    #[test]
    fn helper_dependencies_are_followed_transitively() {
        let recipe = Recipe::load(
            &Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("helpers/debian.toml"),
        )
        .unwrap();
        let at = |name: &str| recipe.helpers.iter().position(|h| h.name == name).unwrap();
        let (runtime, dpkg, apt) = (
            at("release-upgrader-runtime"),
            at("release-upgrader-dpkg"),
            at("release-upgrader-apt"),
        );
        assert!(depends_on(&recipe, apt, dpkg));
        assert!(!depends_on(&recipe, dpkg, apt));
        assert!(!depends_on(&recipe, runtime, dpkg));
    }

    #[test]
    fn the_wrapper_quotes_and_never_sets_ld_library_path() {
        let script = wrapper(
            "release-upgrader-apt",
            "usr/lib/x/ld.so",
            &["usr/lib/x".into(), "lib/it's".into()],
            "usr/bin/apt-get",
        );
        assert!(!script.contains("LD_LIBRARY_PATH="), "{script}");
        assert!(
            script.contains(r#"--library-path "$root"/'usr/lib/x':"$root"/'lib/it'\''s'"#),
            "{script}"
        );
        assert!(
            script.contains(r#"--argv0 "$0" "$root"/'usr/bin/apt-get' "$@""#),
            "{script}"
        );
    }

    /// However an entry point is started (an absolute path, the prefix reached through a
    /// symlink, a relative path, `.`, `..` or `//` in the path, `PATH`, a symlink to the
    /// entry point),
    /// it runs the loader of its own prefix on its own program, from the caller's working
    /// directory. The "loader" here is a script that prints the program it was given.
    #[test]
    fn the_wrapper_finds_its_prefix_however_it_is_started() {
        use std::os::unix::fs::{PermissionsExt as _, symlink};
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let prefix = base.join("prefix");
        let root = prefix.join(layout::ROOT);
        let write = |path: &Path, text: &str| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        write(
            &root.join("lib/ld.so"),
            "#!/bin/sh\nwhile [ \"$1\" != --argv0 ]; do shift; done\necho \"$3\"; pwd\n",
        );
        write(&root.join("usr/bin/tool"), "");
        write(
            &prefix.join("bin/tool"),
            &wrapper("h", "lib/ld.so", &["lib".into()], "usr/bin/tool"),
        );
        let cwd = base.join("cwd");
        std::fs::create_dir(&cwd).unwrap();
        symlink(&prefix, base.join("link")).unwrap();
        symlink(prefix.join("bin/tool"), base.join("tool-link")).unwrap();
        let program = root.join("usr/bin/tool");

        // `sh -c` starts the entry point exactly as written, from `from`, with `path`.
        let start = |from: &Path, how: &str, path: &str| {
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", &format!("cd -- \"$0\" && PATH=\"$1\" exec {how}")])
                .arg(from)
                .arg(path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{how}: {out:?}");
            let text = String::from_utf8(out.stdout).unwrap();
            let mut lines = text.lines();
            let ran = PathBuf::from(lines.next().unwrap());
            assert_eq!(lines.next().unwrap(), from.to_str().unwrap(), "{how}: cwd");
            ran
        };
        let quoted = |path: &Path| quote(path.to_str().unwrap());
        let system = "/usr/bin:/bin";
        // Absolute, by name: the program's path exactly.
        let ran = start(&cwd, &quoted(&prefix.join("bin/tool")), system);
        assert_eq!(ran, program);
        let on_path = format!("{}:{system}", prefix.join("bin").display());
        assert_eq!(start(&cwd, "tool", &on_path), program);
        // Through the symlinked prefix, by name: the same file.
        let ran = start(&cwd, &quoted(&base.join("link/bin/tool")), system);
        assert_eq!(
            ran,
            base.join("link").join(layout::ROOT).join("usr/bin/tool")
        );
        assert_eq!(ran.canonicalize().unwrap(), program);
        // The others ask the file system.
        for (from, how) in [
            (&prefix, "bin/tool".to_string()),
            (&prefix, "./bin/tool".to_string()),
            (&cwd, quoted(&prefix.join("bin/../bin/tool"))),
            (&cwd, quoted(&prefix.join("bin/./tool"))),
            (&cwd, format!("{}//tool", quoted(&prefix.join("bin")))),
            (&cwd, quoted(&base.join("tool-link"))),
        ] {
            assert_eq!(start(from, &how, system), program, "{how}");
        }
    }
}
