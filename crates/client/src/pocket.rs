//! The helper pocket (docs/protocol.md §2): a signed flat apt repository holding the
//! `release-upgrader-*` helper debs of the target release.
//!
//! Order of trust: the `Release` is verified (InRelease, or Release + Release.gpg) before
//! a field of it is read; it must name the target release, be unexpired (on the network:
//! media are read-only and old by nature, so `Valid-Until` does not apply to them), and
//! be no older than the newest one seen from the same pocket (media: from media of the
//! same release); the `Packages` index is used only after its size and SHA256 match what
//! that `Release` promised.
//!
//! Signed is not the same as sane: a field given twice (deb822 readers differ on which
//! one counts), a package listed twice with the same version, a `Packages` index
//! promised bigger than [`PACKAGES_CAP`], and helper sizes beyond what a whole helper
//! set may take ([`crate::deb::HELPER_SET_MAX`]; sums of such sizes would wrap the
//! free-space check) are refused as malformed (exit 3) before anything is fetched on
//! their word.

use serde::Serialize;

use crate::date::{self, Timestamp};
use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::{self, Fetcher, Location, METADATA_CAP};
use crate::openpgp::{self, Keyring, Verified};
use crate::state::StateDir;
use crate::version::Version;

/// A `Release` (or `InRelease`) file of a pocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseFile {
    pub origin: Option<String>,
    pub label: Option<String>,
    pub suite: Option<String>,
    pub codename: String,
    pub architectures: Vec<String>,
    /// `Components` (archives list them; flat pockets have none).
    pub components: Vec<String>,
    pub date: Timestamp,
    pub date_text: String,
    pub valid_until: Option<(Timestamp, String)>,
    /// `Version` (archives and media carry it; pockets need not).
    pub version: Option<String>,
    /// Indices listed under `SHA256:`.
    pub files: Vec<IndexFile>,
}

/// One line of the `SHA256:` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexFile {
    pub name: String,
    pub size: u64,
    pub sha256: Sha256,
}

impl ReleaseFile {
    pub fn parse(text: &str) -> Result<Self, String> {
        let doc: deb822_fast::Deb822 = text.parse().map_err(|e| format!("not deb822: {e}"))?;
        let mut stanzas = doc.iter();
        let stanza = stanzas.next().ok_or("empty")?;
        if stanzas.next().is_some() {
            return Err("more than one stanza".into());
        }
        if let Some(name) = repeated_field(stanza) {
            return Err(format!("the field {name} is given more than once"));
        }
        let field = |name: &str| {
            stanza
                .get(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let codename = field("Codename").ok_or("no Codename field")?;
        let date_text = field("Date").ok_or("no Date field")?;
        let date =
            date::parse(&date_text).ok_or_else(|| format!("unreadable Date {date_text:?}"))?;
        let valid_until = match field("Valid-Until") {
            Some(text) => Some((
                date::parse(&text).ok_or_else(|| format!("unreadable Valid-Until {text:?}"))?,
                text,
            )),
            None => None,
        };
        let mut files = Vec::new();
        for line in field("SHA256").unwrap_or_default().lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(hash), Some(size), Some(name), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("malformed SHA256 line {line:?}"));
            };
            files.push(IndexFile {
                name: name.to_owned(),
                size: size
                    .parse()
                    .map_err(|_| format!("malformed size in SHA256 line {line:?}"))?,
                sha256: hash
                    .parse()
                    .map_err(|e| format!("{e} in SHA256 line {line:?}"))?,
            });
        }
        Ok(ReleaseFile {
            origin: field("Origin"),
            label: field("Label"),
            suite: field("Suite"),
            codename,
            architectures: field("Architectures")
                .map(|a| a.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            components: field("Components")
                .map(|a| a.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            date,
            date_text,
            valid_until,
            version: field("Version"),
            files,
        })
    }

    pub fn index(&self, name: &str) -> Option<&IndexFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// One package of a `Packages` index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageEntry {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    pub filename: String,
    pub size: u64,
    pub sha256: Sha256,
    pub installed_size_kib: Option<u64>,
    pub depends: String,
    pub pre_depends: String,
}

/// The first field name a deb822 stanza gives more than once (names compare
/// case-insensitively, as in deb822), if any.
pub(crate) fn repeated_field(stanza: &deb822_fast::Paragraph) -> Option<&str> {
    let names: Vec<&str> = stanza.iter().map(|(name, _)| name).collect();
    names
        .iter()
        .enumerate()
        .find(|(i, name)| names[..*i].iter().any(|n| n.eq_ignore_ascii_case(name)))
        .map(|(_, name)| *name)
}

/// One stanza of a `Packages` index, read with deb822-fast: the fields every reader of
/// an index checks the same way (the client's helper pockets here, the publisher's
/// upstream archive in `ru_publish::helper::source`), each error naming the package.
pub struct PackagesStanza<'a> {
    stanza: &'a deb822_fast::Paragraph,
    name: String,
}

impl<'a> PackagesStanza<'a> {
    /// The stanzas of the `Packages` index `text`.
    pub fn parse_all(text: &str) -> Result<deb822_fast::Deb822, String> {
        text.parse().map_err(|e| format!("not deb822: {e}"))
    }

    pub fn new(stanza: &'a deb822_fast::Paragraph) -> Self {
        let name = stanza
            .get("Package")
            .map(str::trim)
            .unwrap_or("")
            .to_owned();
        PackagesStanza { stanza, name }
    }

    /// `Package` (empty if absent).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first field given more than once, if any.
    pub fn repeated_field(&self) -> Option<&'a str> {
        repeated_field(self.stanza)
    }

    /// A field, trimmed; empty if absent.
    pub fn field(&self, field_name: &str) -> String {
        self.stanza
            .get(field_name)
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    }

    /// A field that must be there and not be empty.
    pub fn required(&self, field_name: &str) -> Result<String, String> {
        let value = self.field(field_name);
        if value.is_empty() {
            Err(format!("package {:?} has no {field_name} field", self.name))
        } else {
            Ok(value)
        }
    }

    pub fn version(&self) -> Result<Version, String> {
        let text = self.required("Version")?;
        text.parse()
            .map_err(|e| format!("package {}: bad Version {text:?}: {e}", self.name))
    }

    /// `Filename`, a relative path that stays below the archive.
    pub fn filename(&self) -> Result<String, String> {
        let filename = self.required("Filename")?;
        fetch::check_relative(&filename)
            .map_err(|reason| format!("package {}: Filename {filename:?} {reason}", self.name))?;
        Ok(filename)
    }

    pub fn size(&self) -> Result<u64, String> {
        self.required("Size")?
            .parse()
            .map_err(|_| format!("package {}: bad Size", self.name))
    }

    pub fn sha256(&self) -> Result<Sha256, String> {
        self.required("SHA256")?
            .parse()
            .map_err(|e| format!("package {}: {e}", self.name))
    }
}

/// Parses a `Packages` index of a helper pocket.
pub fn parse_packages(text: &str) -> Result<Vec<PackageEntry>, String> {
    let doc = PackagesStanza::parse_all(text)?;
    let packages = doc
        .iter()
        .map(|stanza| {
            let stanza = PackagesStanza::new(stanza);
            let name = stanza.name().to_owned();
            if let Some(repeated) = stanza.repeated_field() {
                return Err(format!(
                    "package {name:?}: the field {repeated} is given more than once"
                ));
            }
            if name.is_empty() {
                return Err("a stanza has no Package field".to_owned());
            }
            let version = stanza.version()?;
            let filename = stanza.filename()?;
            let size = stanza.size()?;
            let limit = crate::deb::HELPER_SET_MAX;
            if size > limit {
                return Err(format!(
                    "package {name}: Size {size} is more than the {limit} bytes a whole \
                     helper set may take"
                ));
            }
            let installed_size_kib = match stanza.field("Installed-Size") {
                text if text.is_empty() => None,
                text => {
                    let kib: u64 = text
                        .parse()
                        .map_err(|_| format!("package {name}: bad Installed-Size {text:?}"))?;
                    if kib > limit / 1024 {
                        return Err(format!(
                            "package {name}: Installed-Size {kib} KiB is more than the {limit} \
                             bytes a whole helper set may take"
                        ));
                    }
                    Some(kib)
                }
            };
            let sha256 = stanza.sha256()?;
            Ok(PackageEntry {
                architecture: stanza.required("Architecture")?,
                installed_size_kib,
                depends: stanza.field("Depends"),
                pre_depends: stanza.field("Pre-Depends"),
                name,
                version,
                filename,
                size,
                sha256,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    for (i, p) in packages.iter().enumerate() {
        let twin = packages[..i].iter().any(|q| {
            q.name == p.name && q.version == p.version && q.architecture == p.architecture
        });
        if twin {
            return Err(format!(
                "package {} {} ({}) is listed twice",
                p.name, p.version, p.architecture
            ));
        }
    }
    Ok(packages)
}

/// Where a pocket (or a media's archive `Release`) is read from, which decides whether
/// freshness applies to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PocketSource {
    /// The network: a mirror serves what the distribution signs now, so `Valid-Until`
    /// must be there and not past (a stale copy could not be told from a current one).
    Network,
    /// Upgrade media: read-only and old by nature (a CD from the release day is months
    /// old when it is used), so `Valid-Until` is not read. `Date` still may not lie in
    /// the future nor be older than the newest seen from media of the same release and
    /// architecture (rollback), whatever the mount point.
    Media,
}

/// What the client expects of the pocket it opens.
#[derive(Clone, Debug)]
pub struct PocketRequest {
    /// The pocket directory.
    pub location: Location,
    /// The release the pocket must be for (`Codename`).
    pub codename: String,
    /// The architecture being upgraded.
    pub arch: String,
    /// Network or media: whether `Valid-Until` applies.
    pub source: PocketSource,
    /// The time to judge `Date` and `Valid-Until` by.
    pub now: Timestamp,
}

impl PocketRequest {
    /// The name under which the newest `Date` accepted is remembered
    /// (`release-dates.json`): the pocket's URI on the network; on media one name per
    /// release and architecture, so that an older medium mounted elsewhere is still
    /// recognised as a rollback.
    pub fn rollback_key(&self) -> String {
        match self.source {
            PocketSource::Network => self.location.to_string(),
            PocketSource::Media => media_rollback_key(&self.codename, &self.arch, "dist-upgrader"),
        }
    }
}

/// The rollback key of a media's `what` (`dist-upgrader`, its helper pocket; `archive`,
/// its package archive) for `codename` on `arch`.
pub fn media_rollback_key(codename: &str, arch: &str, what: &str) -> String {
    format!("media:{codename}/{what}/{arch}")
}

/// Tolerance for a `Date` in the future (clock skew between server and client).
const FUTURE_TOLERANCE: Timestamp = 600;

/// Checks a verified `Release` against the request and the newest `Date` seen (pure).
pub fn check_release(
    release: &ReleaseFile,
    request: &PocketRequest,
    last_seen: Option<(Timestamp, String)>,
) -> Result<(), Error> {
    let what = format!("Release of {}", request.location);
    if release.codename != request.codename {
        return Err(Error::WrongCodename {
            what,
            expected: request.codename.clone(),
            found: release.codename.clone(),
        });
    }
    // `all`: a pocket for every architecture (media's `binary-all`), whose helpers are
    // still chosen by their own `Architecture`.
    let for_arch = |a: &String| *a == request.arch || a == "all";
    if !release.architectures.is_empty() && !release.architectures.iter().any(for_arch) {
        return Err(Error::WrongArchitecture {
            what,
            expected: request.arch.clone(),
            found: release.architectures.join(" "),
        });
    }
    match &release.valid_until {
        _ if request.source == PocketSource::Media => {}
        Some((until, text)) if request.now > *until => {
            return Err(Error::Expired {
                what,
                valid_until: text.clone(),
            });
        }
        None => {
            return Err(Error::Malformed {
                what,
                reason: "no Valid-Until field, so a stale copy could not be told from a \
                         current one"
                    .into(),
            });
        }
        _ => {}
    }
    if release.date > request.now + FUTURE_TOLERANCE {
        return Err(Error::NotYetValid {
            what,
            date: release.date_text.clone(),
        });
    }
    if let Some((seen, seen_text)) = last_seen
        && release.date < seen
    {
        return Err(Error::Rollback {
            what,
            date: release.date_text.clone(),
            last_seen: seen_text,
        });
    }
    Ok(())
}

/// An opened, verified pocket.
#[derive(Clone, Debug)]
pub struct Pocket {
    pub location: Location,
    /// Under which name its `Date` is remembered ([`PocketRequest::rollback_key`]).
    pub rollback_key: String,
    pub release: Verified<ReleaseFile>,
    pub packages: Verified<Vec<PackageEntry>>,
}

/// Largest `Packages` index accepted after decompression.
pub const PACKAGES_CAP: u64 = 256 * 1024 * 1024;

/// Fetches and verifies a pocket's `Release` and `Packages`.
pub fn open(
    fetcher: &Fetcher,
    keyring: &Keyring,
    state: Option<&StateDir>,
    request: &PocketRequest,
) -> Result<Pocket, Error> {
    let location = &request.location;
    let release = verified_release(fetcher, keyring, location)?;
    let what = format!("Release of {location}");
    let last_seen = match state {
        Some(state) => state.last_release_date(&request.rollback_key())?,
        None => None,
    };
    check_release(&release, request, last_seen)?;

    let index = ["Packages.xz", "Packages.gz", "Packages"]
        .iter()
        .find_map(|name| release.index(name))
        .ok_or_else(|| Error::Malformed {
            what: what.clone(),
            reason: "lists no Packages index under SHA256".into(),
        })?;
    if index.size > PACKAGES_CAP {
        return Err(Error::Malformed {
            what,
            reason: format!(
                "promises {} of {} bytes, more than the {PACKAGES_CAP} accepted",
                index.name, index.size
            ),
        });
    }
    let index_location = location.join(&index.name)?;
    let compressed = fetcher.fetch_checked_bytes(&index_location, index.size, index.sha256)?;
    let compressed = release.vouch_for_checked(
        &index_location.to_string(),
        compressed,
        index.size,
        &index.sha256,
    )?;
    let packages = compressed.try_map(|compressed| -> Result<_, Error> {
        let plain = decompress(&index.name, &compressed).map_err(|reason| Error::Malformed {
            what: index_location.to_string(),
            reason,
        })?;
        // When the plain index is listed too, its digest must match what we decompressed.
        if index.name != "Packages"
            && let Some(listed) = release.index("Packages")
        {
            let actual = Sha256::of(&plain);
            if listed.sha256 != actual || listed.size != plain.len() as u64 {
                return Err(Error::HashMismatch {
                    what: format!("{index_location} (decompressed)"),
                    expected: listed.sha256.to_hex(),
                    actual: actual.to_hex(),
                });
            }
        }
        let text = String::from_utf8(plain).map_err(|_| Error::Malformed {
            what: index_location.to_string(),
            reason: "not UTF-8 text".into(),
        })?;
        parse_packages(&text).map_err(|reason| Error::Malformed {
            what: index_location.to_string(),
            reason,
        })
    })?;
    Ok(Pocket {
        location: location.clone(),
        rollback_key: request.rollback_key(),
        release,
        packages,
    })
}

impl Pocket {
    /// Remembers this pocket's `Date`, so an older copy is refused from now on.
    pub fn record_date(&self, state: &StateDir) -> Result<(), Error> {
        state.record_release_date(&self.rollback_key, self.release.date)
    }

    /// The location of a package's `.deb`.
    pub fn deb_location(&self, package: &PackageEntry) -> Result<Location, Error> {
        Ok(self.location.join(&package.filename)?)
    }
}

/// The verified and parsed `Release` of a repository directory (a pocket, or a media
/// archive's `dists/<codename>/`).
pub fn verified_release(
    fetcher: &Fetcher,
    keyring: &Keyring,
    location: &Location,
) -> Result<Verified<ReleaseFile>, Error> {
    fetch_release(fetcher, keyring, location)?
        .try_map(|bytes| {
            let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
            ReleaseFile::parse(&text)
        })
        .map_err(|reason| Error::Malformed {
            what: format!("Release of {location}"),
            reason,
        })
}

/// InRelease, or Release + Release.gpg when the pocket has no InRelease.
fn fetch_release(
    fetcher: &Fetcher,
    keyring: &Keyring,
    location: &Location,
) -> Result<Verified<Vec<u8>>, Error> {
    let inrelease = location.join("InRelease")?;
    match fetcher.fetch_bytes(&inrelease, METADATA_CAP) {
        Ok(bytes) => {
            return Ok(openpgp::verify_clearsigned(
                keyring,
                &bytes,
                &inrelease.to_string(),
            )?);
        }
        Err(e) if e.is_not_found() => {
            log::debug!("{inrelease} not found; trying Release and Release.gpg");
        }
        Err(other) => return Err(other.into()),
    }
    let release_location = location.join("Release")?;
    let release = fetcher.fetch_bytes(&release_location, METADATA_CAP)?;
    let signature_location = location.join("Release.gpg")?;
    let signature = match fetcher.fetch_bytes(&signature_location, METADATA_CAP) {
        Ok(signature) => signature,
        Err(e) if e.is_not_found() => {
            return Err(Error::Unsigned {
                what: format!("{release_location} (no InRelease, no Release.gpg)"),
            });
        }
        Err(other) => return Err(other.into()),
    };
    Ok(openpgp::verify_detached(
        keyring,
        release,
        &signature,
        &release_location.to_string(),
    )?)
}

/// Decompresses an index by its file name, refusing output beyond [`PACKAGES_CAP`].
/// Public for the fuzz targets (`fuzz/`), not for use.
#[doc(hidden)]
pub fn decompress(name: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    ru_format::compress::index(name, data, PACKAGES_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Test\nLabel: Test helpers\nSuite: trixie\nCodename: trixie\n\
        Architectures: amd64\nDate: Sat, 01 Nov 2026 00:00:00 UTC\n\
        Valid-Until: Sat, 01 Jan 2028 00:00:00 UTC\nSHA256:\n \
        ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 3 Packages\n";

    fn request(now: Timestamp) -> PocketRequest {
        PocketRequest {
            location: Location::parse("http://h/p/").unwrap(),
            codename: "trixie".into(),
            arch: "amd64".into(),
            source: PocketSource::Network,
            now,
        }
    }

    #[test]
    fn release_parses() {
        let r = ReleaseFile::parse(RELEASE).unwrap();
        assert_eq!(r.codename, "trixie");
        assert_eq!(r.architectures, ["amd64"]);
        assert!(r.components.is_empty());
        let archive = ReleaseFile::parse(&RELEASE.replace(
            "Architectures: amd64\n",
            "Architectures: amd64\nComponents: main contrib main/debian-installer\n",
        ))
        .unwrap();
        assert_eq!(
            archive.components,
            ["main", "contrib", "main/debian-installer"]
        );
        assert_eq!(r.index("Packages").unwrap().size, 3);
        assert!(r.valid_until.is_some());
    }

    #[test]
    fn release_checks_refuse_each_policy_violation() {
        let r = ReleaseFile::parse(RELEASE).unwrap();
        let now = date::parse("Sun, 02 Nov 2026 00:00:00 UTC").unwrap();
        check_release(&r, &request(now), None).unwrap();

        let mut wrong = request(now);
        wrong.codename = "forky".into();
        assert!(matches!(
            check_release(&r, &wrong, None),
            Err(Error::WrongCodename { .. })
        ));

        let mut arch = request(now);
        arch.arch = "arm64".into();
        assert!(matches!(
            check_release(&r, &arch, None),
            Err(Error::WrongArchitecture { .. })
        ));

        let later = date::parse("Sun, 02 Jan 2028 00:00:00 UTC").unwrap();
        assert!(matches!(
            check_release(&r, &request(later), None),
            Err(Error::Expired { .. })
        ));

        let earlier = date::parse("Fri, 31 Oct 2026 00:00:00 UTC").unwrap();
        assert!(matches!(
            check_release(&r, &request(earlier), None),
            Err(Error::NotYetValid { .. })
        ));

        let newer_seen = Some((r.date + 1, "later".to_owned()));
        assert!(matches!(
            check_release(&r, &request(now), newer_seen),
            Err(Error::Rollback { .. })
        ));
        check_release(&r, &request(now), Some((r.date, "same".into()))).unwrap();

        let unbounded = ReleaseFile::parse(
            &RELEASE.replace("Valid-Until: Sat, 01 Jan 2028 00:00:00 UTC\n", ""),
        )
        .unwrap();
        assert!(check_release(&unbounded, &request(now), None).is_err());
        let mut media = request(now);
        media.source = PocketSource::Media;
        check_release(&unbounded, &media, None).unwrap();
    }

    /// Media are read-only and old by nature: a medium used two months after it was
    /// made, its pocket signed with a `Valid-Until` long past, is accepted; its `Date`
    /// is still judged (future, rollback), and the network's pockets still expire.
    #[test]
    fn media_pockets_do_not_expire_but_do_not_roll_back() {
        let r = ReleaseFile::parse(RELEASE).unwrap();
        let later = date::parse("Sun, 02 Jan 2028 00:00:00 UTC").unwrap();
        let mut media = request(later);
        media.source = PocketSource::Media;
        check_release(&r, &media, None).unwrap();
        assert!(matches!(
            check_release(&r, &request(later), None),
            Err(Error::Expired { .. })
        ));
        let newer_seen = Some((r.date + 1, "later".to_owned()));
        assert!(matches!(
            check_release(&r, &media, newer_seen),
            Err(Error::Rollback { .. })
        ));
        let mut early = media.clone();
        early.now = date::parse("Fri, 31 Oct 2026 00:00:00 UTC").unwrap();
        assert!(matches!(
            check_release(&r, &early, None),
            Err(Error::NotYetValid { .. })
        ));
        // One rollback name per release and architecture, wherever the media are mounted.
        let mut elsewhere = media.clone();
        elsewhere.location = Location::parse("/media/user/DEMO").unwrap();
        assert_eq!(elsewhere.rollback_key(), media.rollback_key());
        assert_ne!(request(later).rollback_key(), media.rollback_key());
    }

    #[test]
    fn a_pocket_for_all_architectures_serves_each() {
        let all =
            ReleaseFile::parse(&RELEASE.replace("Architectures: amd64", "Architectures: all"))
                .unwrap();
        let now = date::parse("Sun, 02 Nov 2026 00:00:00 UTC").unwrap();
        let mut arm = request(now);
        arm.arch = "arm64".into();
        check_release(&all, &arm, None).unwrap();
        let two = ReleaseFile::parse(
            &RELEASE.replace("Architectures: amd64", "Architectures: amd64 arm64"),
        )
        .unwrap();
        check_release(&two, &arm, None).unwrap();
        arm.arch = "riscv64".into();
        assert!(check_release(&two, &arm, None).is_err());
    }

    #[test]
    fn malformed_release_is_refused() {
        assert!(ReleaseFile::parse("Origin: x\n").is_err());
        assert!(ReleaseFile::parse(&RELEASE.replace(" 3 Packages", " x Packages")).is_err());
        assert!(ReleaseFile::parse(&RELEASE.replace("ba78", "zz78")).is_err());
    }

    #[test]
    fn packages_with_escaping_filenames_are_refused() {
        let stanza = |filename: &str| {
            format!(
                "Package: release-upgrader-apt\nVersion: 3.0.3\nArchitecture: amd64\n\
                 Filename: {filename}\nSize: 1\nSHA256: {}\n",
                "0".repeat(64)
            )
        };
        assert_eq!(parse_packages(&stanza("./a.deb")).unwrap().len(), 1);
        for bad in ["../a.deb", "/etc/a.deb", "pool/../../a.deb"] {
            let err = parse_packages(&stanza(bad)).unwrap_err();
            assert!(err.contains("release-upgrader-apt"), "{err}");
        }
    }

    #[test]
    fn a_field_given_twice_is_refused() {
        let twice = RELEASE.replace("Codename: trixie\n", "Codename: trixie\ncodename: forky\n");
        let err = ReleaseFile::parse(&twice).unwrap_err();
        assert!(err.contains("codename"), "{err}");
        let stanza = format!(
            "Package: release-upgrader-apt\nVersion: 3.0.3\nArchitecture: amd64\n\
             Filename: a.deb\nSize: 1\nSHA256: {}\nSHA256: {}\n",
            "0".repeat(64),
            "1".repeat(64)
        );
        let err = parse_packages(&stanza).unwrap_err();
        assert!(
            err.contains("release-upgrader-apt") && err.contains("SHA256"),
            "{err}"
        );
    }

    fn package(version: &str, size: &str, installed: Option<&str>) -> String {
        let mut text = format!(
            "Package: release-upgrader-apt\nVersion: {version}\nArchitecture: amd64\n\
             Filename: a-{version}.deb\nSize: {size}\nSHA256: {}\n",
            "0".repeat(64)
        );
        if let Some(kib) = installed {
            text.push_str(&format!("Installed-Size: {kib}\n"));
        }
        text
    }

    #[test]
    fn a_package_listed_twice_with_one_version_is_refused() {
        let two_versions = [package("3.0.3", "1", None), package("3.0.4", "1", None)].join("\n");
        assert_eq!(parse_packages(&two_versions).unwrap().len(), 2);
        let twins = [package("3.0.3", "1", None), package("3.0.3", "2", None)].join("\n");
        let err = parse_packages(&twins).unwrap_err();
        assert!(
            err.contains("release-upgrader-apt 3.0.3 (amd64) is listed twice"),
            "{err}"
        );
    }

    #[test]
    fn absurd_sizes_in_the_index_are_refused() {
        let ok = parse_packages(&package("1", "40000", Some("10"))).unwrap();
        assert_eq!(ok[0].installed_size_kib, Some(10));
        assert_eq!(
            parse_packages(&package("1", "1", None)).unwrap()[0].installed_size_kib,
            None
        );
        // Sizes that would wrap the free-space check's sums, or a helper bigger than a
        // whole helper set.
        for (size, installed) in [
            ("18446744073709551615", "1"),
            ("1", "18014398509481984"),
            ("2147483648", "1"),
            ("1", "2097152"),
        ] {
            let err = parse_packages(&package("1", size, Some(installed))).unwrap_err();
            assert!(err.contains("helper set"), "{err}");
        }
        let err = parse_packages(&package("1", "1", Some("ten"))).unwrap_err();
        assert!(err.contains("Installed-Size"), "{err}");
    }

    #[test]
    fn decompression_is_bounded_and_by_name() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"Package: x\n").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress("Packages.gz", &gz).unwrap(), b"Package: x\n");
        assert!(decompress("Packages.xz", &gz).is_err());
        assert_eq!(decompress("Packages", b"plain").unwrap(), b"plain");
    }
}
