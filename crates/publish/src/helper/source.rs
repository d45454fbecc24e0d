//! The upstream packages a helper build starts from: an apt archive in the standard
//! layout (`dists/<release>/`, `pool/`), trusted only through its signed `InRelease`
//! (the client's own verification code), its `Packages` index only after the SHA256 the
//! `Release` promised, each `.deb` only after its SHA256 in that index.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use debian_control::lossy::Relations;

use crate::client_pocket::{self as pocket, PackagesStanza, ReleaseFile};
use crate::date;
use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::{Fetcher, Location};
use crate::openpgp::{Keyring, Verified};
use crate::version::Version;

/// The largest uncompressed `Packages` index accepted.
const PACKAGES_CAP: u64 = 1024 * 1024 * 1024;

/// One package of the archive's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePackage {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    pub filename: String,
    pub size: u64,
    pub sha256: Sha256,
    pub depends: String,
    pub pre_depends: String,
    pub provides: Vec<String>,
}

/// A verified archive release and its index for one component and architecture.
#[derive(Debug)]
pub struct Archive {
    pub location: Location,
    pub release: Verified<ReleaseFile>,
    pub index: Index,
}

/// The packages of an index.
#[derive(Debug)]
pub struct Index {
    /// Where it came from, for messages.
    pub source: String,
    /// The newest version of each package.
    pub packages: BTreeMap<String, ArchivePackage>,
    /// Virtual package → real packages providing it (sorted).
    pub providers: BTreeMap<String, Vec<String>>,
}

impl Archive {
    /// Fetches and verifies `dists/<release>/InRelease` of the archive at `location`
    /// with `keyring`, then its `<component>/binary-<arch>/Packages` index.
    pub fn open(
        fetcher: &Fetcher,
        keyring: &Keyring,
        location: &Location,
        release: &str,
        component: &str,
        arch: &str,
    ) -> Result<Archive, Error> {
        let dists = location.join(&format!("dists/{release}/"))?;
        let verified = pocket::verified_release(fetcher, keyring, &dists)?;
        let file = verified.value();
        let what = format!("{dists}InRelease");
        if file.codename != release && file.suite.as_deref() != Some(release) {
            return Err(Error::WrongCodename {
                what,
                expected: release.to_owned(),
                found: file.codename.clone(),
            });
        }
        if let Some((valid_until, text)) = &file.valid_until
            && *valid_until < date::now()
        {
            return Err(Error::Expired {
                what,
                valid_until: text.clone(),
            });
        }
        if !file.architectures.is_empty() && !file.architectures.iter().any(|a| a == arch) {
            return Err(Error::WrongArchitecture {
                what,
                expected: arch.to_owned(),
                found: file.architectures.join(" "),
            });
        }
        let base = format!("{component}/binary-{arch}/Packages");
        let (name, index) = ["xz", "gz", ""]
            .iter()
            .find_map(|ext| {
                let name = if ext.is_empty() {
                    base.clone()
                } else {
                    format!("{base}.{ext}")
                };
                file.index(&name).map(|index| (name, index.clone()))
            })
            .ok_or_else(|| Error::Malformed {
                what: what.clone(),
                reason: format!("it lists no {base} index (.xz, .gz or plain)"),
            })?;
        let index_location = dists.join(&name)?;
        log::info!("fetching {index_location}");
        let bytes = fetcher.fetch_checked_bytes(&index_location, index.size, index.sha256)?;
        let text = decompress(&name, &bytes).map_err(|reason| Error::Malformed {
            what: index_location.to_string(),
            reason,
        })?;
        let (packages, providers) =
            parse_index(&text, arch).map_err(|reason| Error::Malformed {
                what: index_location.to_string(),
                reason,
            })?;
        let source = format!("{location} ({} {})", file.codename, file.date_text);
        Ok(Archive {
            location: location.clone(),
            release: verified,
            index: Index {
                source,
                packages,
                providers,
            },
        })
    }

    /// The `.deb` of `package` in `cache` (named after its `Filename`), downloaded unless
    /// a file with its SHA256 is already there.
    pub fn download(
        &self,
        fetcher: &Fetcher,
        package: &ArchivePackage,
        cache: &Path,
    ) -> Result<PathBuf, Error> {
        let base = package
            .filename
            .rsplit('/')
            .next()
            .unwrap_or(&package.filename);
        let dest = cache.join(base);
        if let Ok(mut file) = std::fs::File::open(&dest)
            && let Ok((digest, size)) = Sha256::of_reader(&mut file)
            && digest == package.sha256
            && size == package.size
        {
            log::debug!("{} is cached", dest.display());
            return Ok(dest);
        }
        let location = self.location.join(&package.filename)?;
        log::info!("fetching {location}");
        let fetched = fetcher.fetch_file(
            &location,
            &dest,
            package.size,
            package.sha256,
            &format!("{} {}", package.name, package.version),
        )?;
        Ok(fetched.path().to_owned())
    }
}

impl Index {
    /// The real package a name stands for: itself, or its first provider.
    fn lookup(&self, name: &str) -> Option<&ArchivePackage> {
        let name = name.split(':').next().unwrap_or(name);
        self.packages.get(name).or_else(|| {
            self.providers
                .get(name)
                .and_then(|p| p.first())
                .and_then(|p| self.packages.get(p))
        })
    }

    /// The `Pre-Depends`/`Depends` closure of `roots` (alternatives: the first one that
    /// is not-needed or available; virtual packages: their first provider), not entering
    /// `not_needed`. A root or a dependency that the archive cannot satisfy is an error
    /// naming it.
    pub fn closure(
        &self,
        roots: &[String],
        not_needed: &BTreeSet<String>,
    ) -> Result<Vec<&ArchivePackage>, Error> {
        let mut queue: VecDeque<(&ArchivePackage, String)> = VecDeque::new();
        for root in roots {
            let package = self.lookup(root).ok_or_else(|| Error::Config {
                path: PathBuf::from(&self.source),
                reason: format!("the recipe's package {root} is not in the archive"),
            })?;
            queue.push_back((package, "the recipe".to_owned()));
        }
        let mut seen: BTreeMap<&str, &ArchivePackage> = BTreeMap::new();
        while let Some((package, _)) = queue.pop_front() {
            if seen.contains_key(package.name.as_str()) {
                continue;
            }
            seen.insert(&package.name, package);
            for (field, text) in [
                ("Pre-Depends", &package.pre_depends),
                ("Depends", &package.depends),
            ] {
                let groups = relation_names(text).map_err(|e| Error::Config {
                    path: PathBuf::from(&self.source),
                    reason: format!("{}: unreadable {field} {text:?}: {e}", package.name),
                })?;
                self.follow(package, &groups, not_needed, &mut queue)?;
            }
        }
        Ok(seen.into_values().collect())
    }

    /// Queues what satisfies each relation group (alternatives) of `package`.
    fn follow<'a>(
        &'a self,
        package: &ArchivePackage,
        groups: &[Vec<String>],
        not_needed: &BTreeSet<String>,
        queue: &mut VecDeque<(&'a ArchivePackage, String)>,
    ) -> Result<(), Error> {
        for names in groups {
            if names.iter().any(|n| not_needed.contains(n)) {
                continue;
            }
            let chosen = names.iter().find_map(|n| self.lookup(n));
            match chosen {
                Some(dep) if !not_needed.contains(&dep.name) => {
                    queue.push_back((dep, package.name.clone()));
                }
                Some(_) => {}
                None => {
                    return Err(Error::Config {
                        path: PathBuf::from(&self.source),
                        reason: format!(
                            "{} depends on {}, which the archive does not have",
                            package.name,
                            names.join(" | ")
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The package names of a relation field (`Depends`, `Provides`, …), one list of
/// alternatives per comma-separated group, read with debian-control as the client's
/// resolver reads them; architecture qualifiers (`:any`) and version constraints are
/// not part of a name.
fn relation_names(text: &str) -> Result<Vec<Vec<String>>, String> {
    let relations = text.parse::<Relations>().map_err(|e| e.to_string())?;
    Ok(relations
        .iter()
        .map(|group| group.iter().map(|r| r.name.clone()).collect())
        .collect())
}

fn decompress(name: &str, bytes: &[u8]) -> Result<String, String> {
    let out = ru_format::compress::index(name, bytes, PACKAGES_CAP)?;
    String::from_utf8(out).map_err(|_| "not UTF-8 text".to_owned())
}

type Parsed = (
    BTreeMap<String, ArchivePackage>,
    BTreeMap<String, Vec<String>>,
);

/// Parses a `Packages` index (only the fields a closure and a download need), keeping
/// the newest version of each package built for `arch` or `all`. Read as the client
/// reads a helper pocket's index ([`PackagesStanza`]); `Provides` with debian-control.
pub fn parse_index(text: &str, arch: &str) -> Result<Parsed, String> {
    let mut packages: BTreeMap<String, ArchivePackage> = BTreeMap::new();
    for stanza in PackagesStanza::parse_all(text)?.iter() {
        let stanza = PackagesStanza::new(stanza);
        let name = stanza.name().to_owned();
        if name.is_empty() {
            continue;
        }
        let architecture = stanza.required("Architecture")?;
        if architecture != arch && architecture != "all" {
            continue;
        }
        let version = stanza.version()?;
        let filename = stanza.filename()?;
        let provides = relation_names(&stanza.field("Provides"))
            .map_err(|e| format!("package {name}: unreadable Provides: {e}"))?
            .into_iter()
            .flatten()
            .collect();
        let package = ArchivePackage {
            size: stanza.size()?,
            sha256: stanza.sha256()?,
            depends: stanza.field("Depends"),
            pre_depends: stanza.field("Pre-Depends"),
            provides,
            name: name.clone(),
            version,
            architecture,
            filename,
        };
        match packages.get(&name) {
            Some(old) if old.version >= package.version => {}
            _ => {
                packages.insert(name, package);
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
    Ok((packages, providers))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn stanza(name: &str, version: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nFilename: pool/{name}_{version}.deb\nSize: 1\nSHA256: {HASH}\n{extra}"
        )
    }

    fn index(text: &str) -> Index {
        let (packages, providers) = parse_index(text, "amd64").unwrap();
        Index {
            source: "test".into(),
            packages,
            providers,
        }
    }

    #[test]
    fn the_closure_follows_alternatives_virtuals_and_stops_where_told() {
        let text = [
            stanza(
                "apt",
                "3.0",
                "Depends: libapt (>= 3), gpgv | sqv, debconf, mta\nPre-Depends: libc6:any\n",
            ),
            stanza("libapt", "3.0", "Depends: libc6 (>= 2.3)\n"),
            stanza("libapt", "2.0", "Depends: old\n"),
            stanza("libc6", "2.41", ""),
            stanza("sqv", "1", ""),
            stanza("gpgv", "2", "Depends: libc6\n"),
            stanza("exim", "4", "Provides: mta (= 1)\n"),
            stanza("debconf", "1", "Depends: perl\n"),
        ]
        .join("\n");
        let archive = index(&text);
        let not_needed: BTreeSet<String> = ["debconf".to_owned()].into();
        let names: Vec<&str> = archive
            .closure(&["apt".to_owned()], &not_needed)
            .unwrap()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["apt", "exim", "gpgv", "libapt", "libc6"]);
        assert_eq!(archive.packages["libapt"].version.to_string(), "3.0");
        let err = archive
            .closure(&["nosuch".to_owned()], &not_needed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nosuch"), "{err}");
        let broken = index(&stanza("a", "1", "Depends: gone | also-gone\n"));
        let err = broken
            .closure(&["a".to_owned()], &not_needed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a depends on gone | also-gone"), "{err}");
    }

    #[test]
    fn a_hostile_filename_is_refused() {
        let text = stanza("a", "1", "").replace("pool/a_1.deb", "../../etc/passwd");
        assert!(parse_index(&text, "amd64").unwrap_err().contains(".."));
    }
}
