//! Pending updates of the running release, read straight from the indices apt stored.
//!
//! Asking apt (`apt-get upgrade` without installing, then `apt-cache policy`) first makes
//! it build its cache from every index, seconds on a release the size of Debian's. The
//! question is narrower: is any installed package older than a version the running
//! release's own suites (`C`, `C-updates`, `C-security`) offer, and which installed
//! packages does the distribution offer at all. One pass over the stored `Packages` files
//! answers both. Versions still being phased in (`Phased-Update-Percentage`, Ubuntu) are
//! not pending: apt would not install them either. Third-party sources never count.
//!
//! Any index this scan cannot read as apt stored it (compressed lists) gives `None`, and
//! the caller asks apt instead.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::root::SystemRoot;
use crate::upgrade::dpkg_status::Status;
use crate::upgrade::prefetch::{self, Archive};
use crate::upgrade::sources::{self, SourceEntry};
use crate::version::Version;

/// What the running release's indices say about the installed packages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Installed packages (not held) with a newer version in the release's own suites:
    /// the newest such version.
    pub pending: BTreeMap<String, Offer>,
    /// Installed packages that some distribution source offers.
    pub from_distribution: BTreeSet<String>,
}

/// A newer version an index offers for an installed package.
#[derive(Debug, PartialEq, Eq)]
pub struct Offer {
    pub version: String,
    /// Where to fetch it and what it must hash to, as apt would store it; `None` when the
    /// stanza lacks a usable `Filename`, `Size` or `SHA256`.
    pub archive: Option<Archive>,
}

/// One stored `Packages` file and what it counts for.
struct Index {
    path: PathBuf,
    /// The archive's base URI (where `Filename` is relative to).
    uri: String,
    /// From the distribution's archive.
    distribution: bool,
    /// A suite of the running release itself, whose newer versions are pending updates.
    running: bool,
}

/// Scans the stored indices of the root's `deb` sources; `None` when some index is stored
/// compressed (apt's `Acquire::GzipIndexes`) or the lists cannot be read.
pub fn scan(
    root: &SystemRoot,
    codename: &str,
    arch: &str,
    status: &Status,
    is_distribution: &dyn Fn(&SourceEntry) -> bool,
) -> Option<Scan> {
    let entries = sources::entries(root).ok()?;
    let lists = root.path("/var/lib/apt/lists");
    let names: Vec<String> = std::fs::read_dir(&lists)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let indices = indices(&entries, &names, codename, arch, is_distribution)?;
    let mut scan = Scan::default();
    for index in &indices {
        read_index(&lists.join(&index.path), |stanza| {
            let (package, version, architecture, phased) = (
                stanza.package.as_str(),
                stanza.version.as_str(),
                stanza.architecture.as_str(),
                stanza.phased,
            );
            // The status database is by name:arch; a version for `all` updates the
            // native package and the other way round (a package may change between them).
            let Some(installed) = [architecture, arch, "all"]
                .iter()
                .find_map(|a| status.packages.get(&format!("{package}:{a}")))
            else {
                return;
            };
            if !installed.is_installed() {
                return;
            }
            if index.distribution {
                scan.from_distribution.insert(package.to_owned());
            }
            let same_arch = architecture == installed.architecture
                || architecture == "all"
                || installed.architecture == "all";
            if !index.running || !same_arch || phased || installed.is_held() {
                return;
            }
            let Ok(offered) = version.parse::<Version>() else {
                return;
            };
            let newer = installed
                .version
                .parse::<Version>()
                .is_ok_and(|current| offered > current);
            let newest = scan.pending.get(package).is_none_or(|known| {
                known
                    .version
                    .parse::<Version>()
                    .is_ok_and(|known| offered > known)
            });
            if newer && newest {
                let offer = Offer {
                    version: version.to_owned(),
                    archive: archive(&index.uri, stanza),
                };
                scan.pending.insert(package.to_owned(), offer);
            }
        })
        .ok()?;
    }
    Some(scan)
}

/// The archive of a stanza as apt stores it (`name_version_arch.deb`, with `:` and `_`
/// quoted), if its fields make a safe one.
fn archive(base: &str, stanza: &Stanza) -> Option<Archive> {
    let quote = |text: &str| text.replace('_', "%5f").replace(':', "%3a");
    let file = format!(
        "{}_{}_{}.deb",
        quote(&stanza.package),
        quote(&stanza.version),
        quote(&stanza.architecture)
    );
    let filename = &stanza.filename;
    let relative = !filename.is_empty()
        && !filename.starts_with('/')
        && filename
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !relative || !prefetch::plain_file_name(&file) {
        return None;
    }
    Some(Archive {
        uri: format!("{base}/{filename}"),
        file,
        size: stanza.size?,
        sha256: stanza.sha256.parse().ok()?,
    })
}

/// The `Packages` files (names in the lists directory) of every `deb` entry, for `arch`
/// and `all` (pure).
fn indices(
    entries: &[SourceEntry],
    names: &[String],
    codename: &str,
    arch: &str,
    is_distribution: &dyn Fn(&SourceEntry) -> bool,
) -> Option<Vec<Index>> {
    let own_suites = [
        codename.to_owned(),
        format!("{codename}-updates"),
        format!("{codename}-security"),
    ];
    let mut out: Vec<Index> = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| e.types.iter().any(|t| t == "deb"))
    {
        let distribution = is_distribution(entry);
        for uri in &entry.uris {
            for suite in &entry.suites {
                let prefix = sources::apt_list_name(&format!(
                    "{}/dists/{suite}/",
                    uri.trim_end_matches('/')
                ));
                for name in names.iter().filter(|n| n.starts_with(&prefix)) {
                    let rest = &name[prefix.len()..];
                    let binary = [
                        format!("_binary-{arch}_Packages"),
                        "_binary-all_Packages".into(),
                    ];
                    let Some(stored) = binary.iter().find_map(|b| {
                        let at = rest.find(b.as_str())?;
                        Some(&rest[at + b.len()..])
                    }) else {
                        continue;
                    };
                    // The component is one path segment: "main_binary-amd64_Packages".
                    if rest.split('_').next().is_none_or(str::is_empty) {
                        continue;
                    }
                    if !stored.is_empty() {
                        return None;
                    }
                    if out.iter().any(|i| i.path.as_os_str() == name.as_str()) {
                        continue;
                    }
                    out.push(Index {
                        path: PathBuf::from(name),
                        uri: uri.trim_end_matches('/').to_owned(),
                        distribution,
                        running: distribution && own_suites.contains(suite),
                    });
                }
            }
        }
    }
    Some(out)
}

/// The fields of one `Packages` stanza that these scans use.
#[derive(Default)]
struct Stanza {
    package: String,
    version: String,
    architecture: String,
    /// A version still being phased in (`Phased-Update-Percentage` below 100).
    phased: bool,
    filename: String,
    size: Option<u64>,
    sha256: String,
}

/// Calls `each` for every stanza of a `Packages` file, reading it a line at a time.
fn read_index(path: &Path, mut each: impl FnMut(&Stanza)) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut line = String::new();
    let mut stanza = Stanza::default();
    loop {
        line.clear();
        let read = reader.read_line(&mut line)?;
        let text = line.trim_end_matches(['\n', '\r']);
        if read == 0 || text.is_empty() {
            if !stanza.package.is_empty() && !stanza.version.is_empty() {
                each(&stanza);
            }
            stanza = Stanza::default();
            if read == 0 {
                return Ok(());
            }
            continue;
        }
        let Some((key, value)) = text.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Package" => stanza.package = value.to_owned(),
            "Version" => stanza.version = value.to_owned(),
            "Architecture" => stanza.architecture = value.to_owned(),
            "Phased-Update-Percentage" => {
                stanza.phased = value.parse::<u32>().is_ok_and(|p| p < 100)
            }
            "Filename" => stanza.filename = value.to_owned(),
            "Size" => stanza.size = value.parse().ok(),
            "SHA256" => stanza.sha256 = value.to_owned(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2-1\n\n\
        Package: held\nStatus: hold ok installed\nArchitecture: amd64\nVersion: 1.0\n\n\
        Package: local\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n\n\
        Package: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-1\n\n\
        Package: phased\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n\n\
        Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n";

    fn root_with(lists: &[(&str, &str)], sources: &str) -> (tempfile::TempDir, SystemRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        std::fs::create_dir_all(root.path("/var/lib/apt/lists")).unwrap();
        std::fs::create_dir_all(root.path("/etc/apt")).unwrap();
        std::fs::write(root.path("/etc/apt/sources.list"), sources).unwrap();
        for (name, text) in lists {
            std::fs::write(root.path("/var/lib/apt/lists").join(name), text).unwrap();
        }
        (dir, root)
    }

    #[test]
    fn newer_versions_of_the_running_release_are_pending_and_others_are_not() {
        let main = "Package: bash\nVersion: 5.2-1\nArchitecture: amd64\n\n\
                    Package: tzdata\nVersion: 2024a-1\nArchitecture: all\n\n\
                    Package: held\nVersion: 1.0\nArchitecture: amd64\n";
        let security = "Package: bash\nVersion: 5.2-1+deb12u1\nArchitecture: amd64\n\n\
                        Package: bash\nVersion: 5.2-1+deb12u2\nArchitecture: amd64\n\n\
                        Package: held\nVersion: 2.0\nArchitecture: amd64\n\n\
                        Package: phased\nVersion: 2.0\nArchitecture: amd64\nPhased-Update-Percentage: 10\n\n\
                        Package: gone\nVersion: 2.0\nArchitecture: amd64\n";
        let updates = "Package: tzdata\nVersion: 2025b-0+deb12u1\nArchitecture: all\n";
        let backports = "Package: bash\nVersion: 5.3-1~bpo12+1\nArchitecture: amd64\n";
        let (_dir, root) = root_with(
            &[
                ("m_debian_dists_bookworm_main_binary-amd64_Packages", main),
                (
                    "m_debian_dists_bookworm-updates_main_binary-amd64_Packages",
                    updates,
                ),
                (
                    "s_debian-security_dists_bookworm-security_main_binary-amd64_Packages",
                    security,
                ),
                (
                    "m_debian_dists_bookworm-backports_main_binary-amd64_Packages",
                    backports,
                ),
                (
                    "m_debian_dists_bookworm_main_i18n_Translation-en",
                    "Package: bash\n",
                ),
            ],
            "deb http://m/debian bookworm main\n\
             deb http://m/debian bookworm-updates main\n\
             deb http://s/debian-security bookworm-security main\n\
             deb http://m/debian bookworm-backports main\n",
        );
        let status = Status::parse(STATUS).unwrap();
        let scan = scan(&root, "bookworm", "amd64", &status, &|_| true).unwrap();
        let pending: Vec<(&str, &str)> = scan
            .pending
            .iter()
            .map(|(k, v)| (k.as_str(), v.version.as_str()))
            .collect();
        // Backports and a phased update are not pending; a held package is not; a removed
        // one is not installed.
        assert_eq!(
            pending,
            [("bash", "5.2-1+deb12u2"), ("tzdata", "2025b-0+deb12u1")]
        );
        let from: Vec<&str> = scan.from_distribution.iter().map(String::as_str).collect();
        assert_eq!(from, ["bash", "held", "phased", "tzdata"]);
    }

    #[test]
    fn an_offer_names_its_archive_as_apt_stores_it() {
        let hash = "720e43fda316676076498b4224ad3318049deafe60cc7c601011048de03ee97d";
        let stanza = |filename: &str| Stanza {
            package: "login".into(),
            version: "1:4.16.0-2+really2.41.5-0+deb13u1".into(),
            architecture: "amd64".into(),
            filename: filename.into(),
            size: Some(123),
            sha256: hash.into(),
            ..Stanza::default()
        };
        let a = archive(
            "http://m/debian",
            &stanza("pool/main/s/shadow/login_4.16.deb"),
        )
        .unwrap();
        assert_eq!(
            a.file,
            "login_1%3a4.16.0-2+really2.41.5-0+deb13u1_amd64.deb"
        );
        assert_eq!(a.uri, "http://m/debian/pool/main/s/shadow/login_4.16.deb");
        assert_eq!((a.size, a.sha256.to_hex().as_str()), (123, hash));
        // Filenames that leave the archive, and stanzas without a usable hash or size.
        for bad in [
            "",
            "/etc/passwd",
            "pool/../../x.deb",
            "pool//x.deb",
            "./x.deb",
        ] {
            assert_eq!(archive("http://m/debian", &stanza(bad)), None, "{bad}");
        }
        let mut no_hash = stanza("pool/x.deb");
        no_hash.sha256 = "MD5:abc".into();
        assert_eq!(archive("http://m/debian", &no_hash), None);
        let mut no_size = stanza("pool/x.deb");
        no_size.size = None;
        assert_eq!(archive("http://m/debian", &no_size), None);
        let mut odd_name = stanza("pool/x.deb");
        odd_name.package = "../evil".into();
        assert_eq!(archive("http://m/debian", &odd_name), None);
    }

    #[test]
    fn compressed_indices_are_left_to_apt() {
        let (_dir, root) = root_with(
            &[(
                "m_debian_dists_bookworm_main_binary-amd64_Packages.lz4",
                "x",
            )],
            "deb http://m/debian bookworm main\n",
        );
        let status = Status::parse(STATUS).unwrap();
        assert_eq!(scan(&root, "bookworm", "amd64", &status, &|_| true), None);
    }

    #[test]
    fn a_third_party_source_never_makes_updates_pending() {
        // The same codename, another archive: its newer bash is not the release's update.
        let (_dir, root) = root_with(
            &[
                (
                    "m_debian_dists_bookworm_main_binary-amd64_Packages",
                    "Package: bash\nVersion: 5.2-1\nArchitecture: amd64\n",
                ),
                (
                    "vendor_repo_dists_bookworm_main_binary-amd64_Packages",
                    "Package: bash\nVersion: 9.9\nArchitecture: amd64\n",
                ),
            ],
            "deb http://m/debian bookworm main\ndeb http://vendor/repo bookworm main\n",
        );
        let debian = |e: &SourceEntry| e.uris.iter().all(|u| u.contains("/debian"));
        let status = Status::parse(STATUS).unwrap();
        let scan = scan(&root, "bookworm", "amd64", &status, &debian).unwrap();
        assert!(scan.pending.is_empty(), "{:?}", scan.pending);
        assert!(scan.from_distribution.contains("bash"));
    }
}
