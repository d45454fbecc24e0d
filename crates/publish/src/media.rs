//! Upgrade media (docs/protocol.md §2, "Media"): a directory tree, and optionally an ISO
//! 9660 image of it, from which a client upgrades with neither a meta-release nor the
//! network (`release-upgrader upgrade --cdrom PATH`).
//!
//! The layout is the one Ubuntu's upgrade CDs had and the client looks for
//! (`ru_client::cdrom`):
//!
//! ```text
//! .disk/info                                   one line naming the medium
//! dists/<codename>/{InRelease,Release,Release.gpg}
//! dists/<codename>/main/binary-<arch>/Packages{,.xz}
//! dists/<codename>/main/dist-upgrader/binary-<arch>/   the helper pocket (§2)
//! dists/stable -> <codename>
//! pool/main/…                                  the packages
//! ```
//!
//! The archive is a subset of the release's own (verified with its keyring, the packages
//! asked for and what they depend on, each `.deb` checked against the signed index) or
//! all of it, written by [`crate::archive`] and the pocket by [`crate::pocket`], both
//! signed with the distribution's key. Nothing on a medium expires: neither `Release`
//! carries a `Valid-Until`, because a medium is used months after it is made; the client
//! still refuses one dated in the future or older than media it used before (rollback).
//! The tree is built beside its destination and renamed into place, so a failed build
//! leaves no half medium.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ru_client::task::Task;

use crate::SigningKey;
use crate::archive::{self, ArchiveRelease};
use crate::client_pocket::ReleaseFile;
use crate::date::Timestamp;
use crate::error::Error;
use crate::fetch::{Fetcher, Location};
use crate::fsutil;
use crate::helper::source::{Archive, ArchivePackage, Index};
use crate::openpgp::Keyring;
use crate::pocket::{self, PocketEntry, PocketSpec};

/// What goes on a medium.
#[derive(Clone, Debug)]
pub struct Medium {
    /// The release it upgrades to.
    pub codename: String,
    pub arch: String,
    /// `Version` of the release (the client shows it), if known.
    pub version: Option<String>,
    /// The first line of `.disk/info`.
    pub info: String,
    /// `Release` fields of the archive (`Valid-Until` is never written).
    pub archive: PocketSpec,
    /// The packages of the archive.
    pub debs: Vec<PathBuf>,
    /// `Release` fields of the helper pocket (`Valid-Until` is never written).
    pub pocket: PocketSpec,
    /// The helpers, already checked with the client's rules.
    pub helpers: Vec<PocketEntry>,
}

/// The helper pocket's directory on a medium, relative to its root.
pub fn pocket_dir(codename: &str, arch: &str) -> String {
    format!("dists/{codename}/main/dist-upgrader/binary-{arch}")
}

/// The `.disk/info` line of a medium when none is given, in the style of Ubuntu's
/// (`Ubuntu 8.10 "Intrepid Ibex" - Beta amd64 (20080930.4)`).
pub fn default_info(
    origin: &str,
    version: Option<&str>,
    codename: &str,
    arch: &str,
    date: Timestamp,
) -> String {
    let day = chrono::DateTime::from_timestamp(date, 0)
        .unwrap_or_default()
        .format("%Y%m%d");
    let version = version.map(|v| format!(" {v}")).unwrap_or_default();
    format!("{origin}{version} \"{codename}\" - upgrade media {arch} ({day})")
}

/// An ISO 9660 volume identifier: at most 32 of `A-Z 0-9 _` (what every reader takes),
/// made from `words`.
pub fn volume_id(words: &[&str]) -> String {
    let mut id: String = words
        .iter()
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("_");
    id.truncate(32);
    if id.is_empty() { "UPGRADE".into() } else { id }
}

/// Writes `medium` as a directory tree at `out` (which must not exist, or be empty),
/// signed with `key`. Built in a temporary directory beside `out` and renamed into place.
pub fn write(out: &Path, medium: &Medium, key: &SigningKey) -> Result<(), Error> {
    for (what, value) in [
        ("codename", &medium.codename),
        ("architecture", &medium.arch),
    ] {
        if value.is_empty() || value.contains('/') || value.starts_with('.') {
            return Err(Error::Config {
                path: out.to_owned(),
                reason: format!("{what} {value:?} is not a plain name"),
            });
        }
    }
    if medium.info.contains('\n') || medium.info.trim().is_empty() {
        return Err(Error::Config {
            path: out.to_owned(),
            reason: "the medium's description (.disk/info) must be one non-empty line".into(),
        });
    }
    let empty = match fs_err::read_dir(out) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io(out, e)),
    };
    if !empty {
        return Err(Error::Config {
            path: out.to_owned(),
            reason: "not empty: a medium is written into a new or empty directory".into(),
        });
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs_err::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let building = tempfile::Builder::new()
        .prefix(".release-upgrader-media.")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    let tree = building.path();
    archive::write(
        tree,
        &ArchiveRelease {
            spec: PocketSpec {
                valid_until: None,
                ..medium.archive.clone()
            },
            version: medium.version.clone(),
            component: "main".into(),
            debs: medium.debs.clone(),
        },
        key,
    )?;
    let pocket = PocketSpec {
        valid_until: None,
        ..medium.pocket.clone()
    };
    pocket::write(
        &tree.join(pocket_dir(&medium.codename, &medium.arch)),
        &pocket,
        &medium.helpers,
        key,
    )?;
    fsutil::write_atomic(
        &tree.join(".disk/info"),
        format!("{}\n", medium.info.trim()).as_bytes(),
    )?;
    let stable = tree.join("dists/stable");
    std::os::unix::fs::symlink(&medium.codename, &stable).map_err(|e| Error::io(&stable, e))?;
    // Readable by everyone, as on a pressed disc (tempfile makes its directory 0700).
    use std::os::unix::fs::PermissionsExt as _;
    fs_err::set_permissions(tree, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(tree, e))?;
    if out.exists() {
        fs_err::remove_dir(out).map_err(|e| Error::io(out, e))?;
    }
    let built = building.keep();
    fs_err::rename(&built, out).map_err(|e| Error::io(out, e))?;
    fsutil::sync_dir(parent).map_err(|e| Error::io(parent, e))?;
    Ok(())
}

/// Writes an ISO 9660 image of the medium at `tree` to `iso` with `xorriso` (Rock Ridge
/// keeps the `dists/stable` link and the modes, Joliet long names for other systems),
/// through a temporary file renamed into place.
pub fn write_iso(tree: &Path, iso: &Path, volume_id: &str) -> Result<(), Error> {
    let mut partial = iso.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let made = Task::plain("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-r", "-J", "-joliet-long", "-V"])
        .arg(volume_id)
        .arg("-o")
        .arg(&partial)
        .arg(tree)
        .output();
    if let Err(e) = made {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::Config {
            path: iso.to_owned(),
            reason: format!("xorriso could not write the image (install the xorriso package): {e}"),
        });
    }
    fs_err::rename(&partial, iso).map_err(|e| Error::io(iso, e))
}

/// Where a medium's packages come from: the release in an apt archive.
#[derive(Clone, Debug)]
pub struct ArchiveSource<'a> {
    /// The archive root (`dists/`, `pool/`): a URI or a directory.
    pub location: &'a Location,
    /// The release (`dists/<release>/`).
    pub release: &'a str,
    pub components: &'a [String],
    pub arch: &'a str,
    /// The packages to take, with what they depend on; empty: all of them.
    pub packages: &'a [String],
    /// Where downloaded debs are kept.
    pub cache: &'a Path,
}

/// The release's verified `Release` and the debs of `source` (downloaded into its cache,
/// each checked against the signed index), sorted by name.
pub fn archive_debs(
    fetcher: &Fetcher,
    keyring: &Keyring,
    source: &ArchiveSource<'_>,
) -> Result<(ReleaseFile, Vec<PathBuf>), Error> {
    if source.components.is_empty() {
        return Err(Error::Config {
            path: PathBuf::from(source.location.to_string()),
            reason: "no component to take packages from".into(),
        });
    }
    let mut opened = Vec::new();
    for component in source.components {
        opened.push(Archive::open(
            fetcher,
            keyring,
            source.location,
            source.release,
            component,
            source.arch,
        )?);
    }
    let index = merged(&opened);
    let chosen: Vec<&ArchivePackage> = if source.packages.is_empty() {
        index.packages.values().collect()
    } else {
        index.closure(source.packages, &BTreeSet::new())?
    };
    fs_err::create_dir_all(source.cache).map_err(|e| Error::io(source.cache, e))?;
    let mut debs = Vec::new();
    for package in chosen {
        // Every component's index verified against the same Release; the package is
        // fetched through the archive that listed it.
        let archive = opened
            .iter()
            .find(|a| a.index.packages.get(&package.name) == Some(package))
            .unwrap_or(&opened[0]);
        debs.push(archive.download(fetcher, package, source.cache)?);
    }
    debs.sort();
    let release = opened.swap_remove(0).release.into_value();
    Ok((release, debs))
}

/// The packages of several components' indices as one (the newest version of each).
fn merged(archives: &[Archive]) -> Index {
    let mut packages: BTreeMap<String, ArchivePackage> = BTreeMap::new();
    for archive in archives {
        for (name, package) in &archive.index.packages {
            match packages.get(name) {
                Some(old) if old.version >= package.version => {}
                _ => {
                    packages.insert(name.clone(), package.clone());
                }
            }
        }
    }
    let mut providers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in packages.values() {
        for provided in &package.provides {
            providers
                .entry(provided.clone())
                .or_default()
                .push(package.name.clone());
        }
    }
    Index {
        source: archives
            .first()
            .map(|a| a.index.source.clone())
            .unwrap_or_default(),
        packages,
        providers,
    }
}

/// The archive `Release` fields of a medium for `codename` on `arch`, taken from the
/// source release's `Release` where it has them, dated `date`, never expiring.
pub fn archive_spec(
    source: Option<&ReleaseFile>,
    codename: &str,
    arch: &str,
    date: Timestamp,
) -> PocketSpec {
    let origin = source
        .and_then(|r| r.origin.clone())
        .unwrap_or_else(|| "release-upgrader".into());
    PocketSpec {
        label: source
            .and_then(|r| r.label.clone())
            .unwrap_or_else(|| origin.clone()),
        origin,
        suite: source
            .and_then(|r| r.suite.clone())
            .unwrap_or_else(|| codename.to_owned()),
        codename: codename.to_owned(),
        architectures: vec![arch.to_owned()],
        description: Some(format!("upgrade media for {codename} ({arch})")),
        date,
        valid_until: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids_are_what_every_iso_reader_takes() {
        assert_eq!(volume_id(&["Demo", "2", "amd64"]), "DEMO_2_AMD64");
        assert_eq!(
            volume_id(&["Debian GNU/Linux", "13.1", "arm64"]),
            "DEBIAN_GNU_LINUX_13_1_ARM64"
        );
        let long = volume_id(&["a very long origin name indeed", "13", "amd64"]);
        assert_eq!(long.len(), 32);
        assert!(
            long.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        );
        assert_eq!(volume_id(&[""]), "UPGRADE");
    }

    #[test]
    fn the_default_description_names_release_architecture_and_day() {
        let info = default_info("Demo", Some("2"), "beta", "amd64", 1_790_000_000);
        assert_eq!(info, "Demo 2 \"beta\" - upgrade media amd64 (20260921)");
        assert_eq!(
            default_info("Demo", None, "beta", "amd64", 0),
            "Demo \"beta\" - upgrade media amd64 (19700101)"
        );
    }

    #[test]
    fn the_archive_of_a_medium_keeps_the_releases_names_and_never_expires() {
        let source = ReleaseFile::parse(
            "Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: trixie\nVersion: 13.1\n\
             Date: Sat, 09 Aug 2025 07:00:00 UTC\nValid-Until: Sat, 16 Aug 2025 07:00:00 UTC\n",
        )
        .unwrap();
        let spec = archive_spec(Some(&source), "trixie", "amd64", 5);
        assert_eq!(
            (spec.origin.as_str(), spec.suite.as_str()),
            ("Debian", "stable")
        );
        assert_eq!(spec.valid_until, None);
        assert_eq!(spec.date, 5);
        let bare = archive_spec(None, "beta", "amd64", 5);
        assert_eq!(
            (bare.origin.as_str(), bare.suite.as_str()),
            ("release-upgrader", "beta")
        );
    }
}
