//! The meta-release list (docs/protocol.md §1): which releases exist, which one runs here,
//! and which one to upgrade to.
//!
//! Selection follows Ubuntu's `MetaRelease.py` so that the same file gives the same
//! answer: the running release is the (last) stanza whose `Dist` is our codename, and the
//! target is the next newer one by `Date`, skipping unsupported ones unless `--devel`.
//! Deliberate differences: stanzas are ordered by `Date` rather than file position, a
//! `Date`'s time zone is honoured instead of ignored, and a fetched meta-release that is
//! ambiguous (a `Dist` listed twice, a field given twice in a stanza) is refused where
//! `MetaRelease.py` silently takes the last stanza for the running release and the
//! first newer one in file order as the target: two `Dist: trixie` stanzas with
//! different `UpgradeToolBaseURI`s would otherwise send two clients reading the same
//! signed file to two different helper pockets. [`MetaRelease::parse`] itself stays as
//! lenient as Ubuntu's parser; [`MetaRelease::ambiguities`] lists what `fetch` refuses.

use std::path::PathBuf;

use serde::Serialize;

use crate::date::{self, Timestamp};
use crate::error::Error;
use crate::fetch::{Conditional, Fetcher, Location, METADATA_CAP};
use crate::ini::Ini;
use crate::openpgp::{self, Keyring, Signer};
use crate::root::SystemRoot;
use crate::state::StateDir;

/// The helpers an upgrade needs when the meta-release does not say.
pub const DEFAULT_UPGRADE_TOOL_PACKAGES: [&str; 2] =
    ["release-upgrader-apt", "release-upgrader-dpkg"];

/// One release (one stanza of the meta-release).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReleaseEntry {
    pub dist: String,
    pub name: Option<String>,
    pub version: String,
    /// `Date` as written.
    pub date: String,
    /// `Date` as seconds since the epoch, the ordering key.
    #[serde(skip)]
    pub timestamp: Timestamp,
    pub supported: bool,
    pub description: Option<String>,
    pub release_file: Option<String>,
    pub release_notes: Option<String>,
    pub release_notes_html: Option<String>,
    pub upgrade_tool: Option<String>,
    pub upgrade_tool_signature: Option<String>,
    pub upgrade_broken: Option<String>,
    pub upgrade_tool_base_uri: Option<String>,
    pub upgrade_tool_packages: Vec<String>,
}

/// Whether a release's `Version` (`24.04 LTS`) names a long-term release: the word `LTS`
/// in it, as do-release-upgrade reads it.
pub fn version_is_lts(version: &str) -> bool {
    version.split_whitespace().any(|w| w == "LTS")
}

impl ReleaseEntry {
    /// Whether this is a long-term release (`LTS` in its `Version`).
    pub fn is_lts(&self) -> bool {
        version_is_lts(&self.version)
    }

    fn from_stanza(stanza: &deb822_fast::Paragraph) -> Result<Self, String> {
        let field = |name: &str| {
            stanza
                .get(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let required = |name: &str| field(name).ok_or_else(|| format!("no {name} field"));
        let dist = required("Dist")?;
        let version = required("Version")?;
        let date_text = required("Date")?;
        let timestamp =
            date::parse(&date_text).ok_or_else(|| format!("unreadable Date {date_text:?}"))?;
        let supported = match required("Supported")?.as_str() {
            "1" => true,
            "0" => false,
            other => return Err(format!("Supported must be 0 or 1, not {other:?}")),
        };
        let upgrade_tool_packages = match field("UpgradeToolPackages") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            None => DEFAULT_UPGRADE_TOOL_PACKAGES.map(str::to_owned).to_vec(),
        };
        Ok(ReleaseEntry {
            dist,
            name: field("Name"),
            version,
            date: date_text,
            timestamp,
            supported,
            description: field("Description"),
            release_file: field("Release-File"),
            release_notes: field("ReleaseNotes"),
            release_notes_html: field("ReleaseNotesHtml"),
            upgrade_tool: field("UpgradeTool"),
            upgrade_tool_signature: field("UpgradeToolSignature"),
            upgrade_broken: field("UpgradeBroken"),
            upgrade_tool_base_uri: field("UpgradeToolBaseURI"),
            upgrade_tool_packages,
        })
    }
}

/// A parsed meta-release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaRelease {
    /// Releases in file order.
    pub releases: Vec<ReleaseEntry>,
    /// Stanzas that name a `Dist` but could not be used, with the reason.
    pub skipped: Vec<String>,
}

/// The outcome of looking for the next release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection<'a> {
    /// The running release is not in the list.
    NotListed,
    /// The running release is listed and nothing newer qualifies.
    UpToDate { current: &'a ReleaseEntry },
    /// `target` is the release to upgrade to.
    Available {
        current: &'a ReleaseEntry,
        target: &'a ReleaseEntry,
    },
}

impl MetaRelease {
    /// Parses a meta-release. Stanzas without `Dist` are ignored, as Ubuntu's client does;
    /// stanzas with a `Dist` but missing or unreadable required fields are skipped and
    /// listed in `skipped` rather than failing the whole list.
    pub fn parse(text: &str) -> Result<Self, String> {
        let doc: deb822_fast::Deb822 = text.parse().map_err(|e| format!("not deb822: {e}"))?;
        let mut meta = MetaRelease::default();
        for stanza in doc.iter() {
            let Some(dist) = stanza.get("Dist").map(str::trim) else {
                continue;
            };
            match ReleaseEntry::from_stanza(stanza) {
                Ok(entry) => meta.releases.push(entry),
                Err(reason) => meta.skipped.push(format!("{dist}: {reason}")),
            }
        }
        Ok(meta)
    }

    /// What makes a meta-release ambiguous: each `Dist` named by more than one stanza
    /// (usable or not), each field given more than once in a stanza naming a `Dist`.
    /// [`fetch`] refuses a list with any; `parse` accepts them, as Ubuntu's parser does.
    pub fn ambiguities(text: &str) -> Result<Vec<String>, String> {
        let doc: deb822_fast::Deb822 = text.parse().map_err(|e| format!("not deb822: {e}"))?;
        let mut found = Vec::new();
        // Each Dist with the number of stanzas naming it, in order of first appearance.
        let mut listed: Vec<(&str, usize)> = Vec::new();
        for stanza in doc.iter() {
            let Some(dist) = stanza.get("Dist").map(str::trim) else {
                continue;
            };
            match listed.iter_mut().find(|(d, _)| *d == dist) {
                Some((_, n)) => *n += 1,
                None => listed.push((dist, 1)),
            }
            if let Some(field) = crate::pocket::repeated_field(stanza) {
                found.push(format!(
                    "release {dist}: the field {field} is given more than once"
                ));
            }
        }
        for (dist, n) in listed.into_iter().filter(|(_, n)| *n > 1) {
            found.push(format!("release {dist} is listed {n} times"));
        }
        Ok(found)
    }

    /// Finds the running release and the release to upgrade to.
    pub fn select(&self, codename: &str, include_unsupported: bool) -> Selection<'_> {
        // Ubuntu's client keeps the last stanza for a Dist listed twice (a fetched list
        // never has one: `fetch` refuses it).
        let Some(current) = self.releases.iter().rev().find(|r| r.dist == codename) else {
            return Selection::NotListed;
        };
        let target = self
            .releases
            .iter()
            .filter(|r| r.dist != codename && r.timestamp > current.timestamp)
            .filter(|r| r.supported || include_unsupported)
            // The earliest newer release; on equal dates the first in the file.
            .min_by_key(|r| r.timestamp);
        match target {
            Some(target) => Selection::Available { current, target },
            None => Selection::UpToDate { current },
        }
    }
}

/// `Prompt=` of `/etc/update-manager/release-upgrades`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prompt {
    Never,
    Normal,
    Lts,
}

/// Path of the upgrade policy file.
pub const RELEASE_UPGRADES: &str = "/etc/update-manager/release-upgrades";
/// Path of the meta-release location file.
pub const META_RELEASE_CONFIG: &str = "/etc/update-manager/meta-release";

fn read_ini(root: &SystemRoot, path: &str) -> Result<Option<Ini>, Error> {
    let full = root.path(path);
    match fs_err::read_to_string(&full) {
        Ok(text) => Ini::parse(&text).map(Some).map_err(|e| Error::Config {
            path: full,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(full, e)),
    }
}

/// Reads the upgrade policy; a missing file or key means `normal`.
pub fn read_prompt(root: &SystemRoot) -> Result<Prompt, Error> {
    let Some(ini) = read_ini(root, RELEASE_UPGRADES)? else {
        return Ok(Prompt::Normal);
    };
    Ok(
        match ini
            .get("DEFAULT", "Prompt")
            .map(|p| p.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("never" | "no") => Prompt::Never,
            Some("lts") => Prompt::Lts,
            Some("normal") | None => Prompt::Normal,
            Some(other) => {
                return Err(Error::Config {
                    path: root.path(RELEASE_UPGRADES),
                    reason: format!("Prompt={other} is not one of never, normal, lts"),
                });
            }
        },
    )
}

/// Where the meta-release lists live (`[METARELEASE]` of `/etc/update-manager/meta-release`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaReleaseUris {
    pub uri: Option<String>,
    pub uri_lts: Option<String>,
    pub unstable_postfix: String,
    pub proposed_postfix: String,
    /// The file they came from, for messages.
    pub config: PathBuf,
}

pub fn read_uris(root: &SystemRoot) -> Result<MetaReleaseUris, Error> {
    let ini = read_ini(root, META_RELEASE_CONFIG)?.unwrap_or_default();
    let get = |key: &str| {
        ini.get("METARELEASE", key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Ok(MetaReleaseUris {
        uri: get("URI"),
        uri_lts: get("URI_LTS"),
        unstable_postfix: get("URI_UNSTABLE_POSTFIX").unwrap_or_else(|| "-development".into()),
        proposed_postfix: get("URI_PROPOSED_POSTFIX").unwrap_or_else(|| "-proposed".into()),
        config: root.path(META_RELEASE_CONFIG),
    })
}

/// Which list to read besides the normal one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channel {
    /// `-d/--devel`: the development list; unsupported releases qualify.
    pub devel: bool,
    /// `-p/--proposed`: the proposed list.
    pub proposed: bool,
}

/// Chooses the meta-release URI (pure): the command-line override or the configured
/// list (`lts` only when running an LTS, as Ubuntu does), plus the `-development` or
/// `-proposed` postfix. `Ok(None)` means `Prompt=never`.
pub fn choose_uri(
    uris: &MetaReleaseUris,
    prompt: Prompt,
    running_lts: bool,
    channel: Channel,
    override_uri: Option<&str>,
) -> Result<Option<String>, Error> {
    if prompt == Prompt::Never && override_uri.is_none() {
        return Ok(None);
    }
    let base = match override_uri {
        Some(uri) => uri.to_owned(),
        None => {
            let lts = (prompt == Prompt::Lts && running_lts)
                .then(|| uris.uri_lts.clone())
                .flatten();
            match lts.or_else(|| uris.uri.clone()) {
                Some(uri) => uri,
                None => {
                    return Err(Error::NoMetaReleaseUri {
                        config: uris.config.clone(),
                    });
                }
            }
        }
    };
    Ok(Some(if channel.devel {
        base + &uris.unstable_postfix
    } else if channel.proposed {
        base + &uris.proposed_postfix
    } else {
        base
    }))
}

/// How a fetched meta-release was authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authenticity {
    /// Good signatures by these trusted keys.
    Signed(Vec<Signer>),
    /// Unsigned, accepted because `--allow-unsigned-meta-release` was given.
    UnsignedAllowed,
}

/// A meta-release as fetched and checked.
#[derive(Clone, Debug)]
pub struct FetchedMetaRelease {
    pub uri: String,
    pub document: MetaRelease,
    pub authenticity: Authenticity,
}

/// Fetches, authenticates and parses the meta-release at `location`.
///
/// A clearsigned file is verified in place; otherwise `<uri>.gpg` must be a detached
/// signature over it. Without either, the file is refused unless `allow_unsigned`.
/// Network copies are cached in `state` and revalidated with If-Modified-Since; the
/// cache only ever holds a copy that passed verification, and it is verified again on use.
pub fn fetch(
    fetcher: &Fetcher,
    keyring: &Keyring,
    location: &Location,
    state: Option<&StateDir>,
    allow_unsigned: bool,
) -> Result<FetchedMetaRelease, Error> {
    let uri = location.to_string();
    let cache = state.filter(|_| location.is_network());
    let cached = cache.and_then(|s| s.cached(&uri));
    let since = cached.as_ref().and_then(|(_, e)| e.last_modified.clone());
    let (body, last_modified, from_cache) =
        match fetcher.fetch_if_modified(location, METADATA_CAP, since.as_deref())? {
            Conditional::Modified {
                body,
                last_modified,
            } => (body, last_modified, false),
            Conditional::NotModified => {
                let (body, entry) = cached.expect("304 only when a cached copy was offered");
                log::debug!("{uri}: not modified, using the cached copy");
                (body, entry.last_modified, true)
            }
        };

    let what = format!("meta-release {uri}");
    let (text, authenticity) = if openpgp::is_clearsigned(&body) {
        let verified = openpgp::verify_clearsigned(keyring, &body, &what)?;
        let signers = verified.signers().to_vec();
        (verified.into_value(), Authenticity::Signed(signers))
    } else {
        let signature_location = location.with_suffix(".gpg");
        match fetcher.fetch_bytes(&signature_location, METADATA_CAP) {
            Ok(signature) => {
                let verified = openpgp::verify_detached(keyring, body.clone(), &signature, &what)?;
                let signers = verified.signers().to_vec();
                (verified.into_value(), Authenticity::Signed(signers))
            }
            Err(e) if e.is_not_found() && allow_unsigned => {
                log::warn!(
                    "{uri} is not signed; accepted because of --allow-unsigned-meta-release"
                );
                (body.clone(), Authenticity::UnsignedAllowed)
            }
            Err(e) if e.is_not_found() => return Err(Error::Unsigned { what }),
            Err(other) => return Err(other.into()),
        }
    };

    let text = String::from_utf8(text).map_err(|_| Error::Malformed {
        what: what.clone(),
        reason: "not UTF-8 text".into(),
    })?;
    let document = MetaRelease::parse(&text).map_err(|reason| Error::Malformed {
        what: what.clone(),
        reason,
    })?;
    // A signed list that names a release twice is not one the signer can have meant
    // either way: it is refused like a signed list that does not parse (`Malformed`,
    // exit 3, a verification failure of what was served), not as a local configuration
    // error (exit 2: nothing on this machine can fix it).
    let ambiguities = MetaRelease::ambiguities(&text).map_err(|reason| Error::Malformed {
        what: what.clone(),
        reason,
    })?;
    if !ambiguities.is_empty() {
        return Err(Error::Malformed {
            what,
            reason: format!("{}; refusing to choose", ambiguities.join("; ")),
        });
    }
    for skipped in &document.skipped {
        log::warn!("{uri}: ignoring release {skipped}");
    }
    // Only a copy that passed verification is cached, exactly as served.
    if let (Some(state), false, Authenticity::Signed(_)) = (cache, from_cache, &authenticity)
        && let Err(e) = state.store_cached(&uri, &body, last_modified)
    {
        log::debug!("not caching the meta-release: {e}");
    }
    Ok(FetchedMetaRelease {
        uri,
        document,
        authenticity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HISTORIC: &str =
        include_str!("../../../tests/conformance/ubuntu-release-upgrader/meta-release.historic");

    fn target_of<'a>(meta: &'a MetaRelease, codename: &str, devel: bool) -> Option<&'a str> {
        match meta.select(codename, devel) {
            Selection::Available { target, .. } => Some(target.dist.as_str()),
            _ => None,
        }
    }

    #[test]
    fn historic_sample_parses_unchanged() {
        let meta = MetaRelease::parse(HISTORIC).unwrap();
        assert!(meta.skipped.is_empty(), "{:?}", meta.skipped);
        let dists: Vec<_> = meta.releases.iter().map(|r| r.dist.as_str()).collect();
        assert_eq!(
            dists,
            [
                "warty", "hoary", "breezy", "dapper", "edgy", "feisty", "gutsy", "hardy", "lucid",
                "intrepid", "jaunty", "karmic", "lucid"
            ]
        );
        let dapper = &meta.releases[3];
        assert!(dapper.is_lts() && dapper.supported);
        assert_eq!(dapper.upgrade_tool_base_uri, None);
        assert_eq!(dapper.upgrade_tool_packages, DEFAULT_UPGRADE_TOOL_PACKAGES);
        assert!(
            dapper
                .upgrade_tool
                .as_deref()
                .unwrap()
                .ends_with("dapper.tar.gz")
        );
        // "Name: Hoary  Hedgehog" keeps its inner spacing; trailing blanks are trimmed.
        assert_eq!(meta.releases[1].name.as_deref(), Some("Hoary  Hedgehog"));
        // Ubuntu's test data lists lucid twice (a stray 2008 stanza): parsed, and noted
        // as what would make `fetch` refuse the list.
        assert_eq!(
            MetaRelease::ambiguities(HISTORIC).unwrap(),
            ["release lucid is listed 2 times"]
        );
    }

    #[test]
    fn a_release_listed_twice_or_a_field_given_twice_is_an_ambiguity() {
        let stanza = |dist: &str, uri: &str| {
            format!(
                "Dist: {dist}\nVersion: 13\nDate: Sat, 09 Aug 2025 07:00:00 UTC\nSupported: 1\n\
                 UpgradeToolBaseURI: {uri}\n"
            )
        };
        let once = [
            stanza("bookworm", "http://a/"),
            stanza("trixie", "http://a/"),
        ]
        .join("\n");
        assert!(MetaRelease::ambiguities(&once).unwrap().is_empty());
        let twice = [
            stanza("bookworm", "http://a/"),
            stanza("trixie", "http://a/"),
            stanza("trixie ", "http://b/"),
        ]
        .join("\n");
        assert_eq!(
            MetaRelease::ambiguities(&twice).unwrap(),
            ["release trixie is listed 2 times"]
        );
        // Parsed all the same, as Ubuntu parses it.
        assert_eq!(MetaRelease::parse(&twice).unwrap().releases.len(), 3);
        // A stanza that cannot be used still counts: it names the release.
        let unusable = [
            stanza("trixie", "http://a/"),
            "Dist: trixie\nVersion: 13\n".into(),
        ]
        .join("\n");
        assert_eq!(
            MetaRelease::ambiguities(&unusable).unwrap(),
            ["release trixie is listed 2 times"]
        );
        // The same field twice in one stanza (deb822 readers differ on which one wins).
        let field_twice = format!(
            "{}UpgradeToolBaseURI: http://b/\n",
            stanza("trixie", "http://a/")
        );
        assert_eq!(
            MetaRelease::ambiguities(&field_twice).unwrap(),
            ["release trixie: the field UpgradeToolBaseURI is given more than once"]
        );
    }

    #[test]
    fn historic_sample_selects_as_ubuntu_does() {
        let meta = MetaRelease::parse(HISTORIC).unwrap();
        // Unsupported releases are skipped: warty → dapper (hoary, breezy are Supported: 0).
        assert_eq!(target_of(&meta, "warty", false), Some("dapper"));
        assert_eq!(target_of(&meta, "warty", true), Some("hoary"));
        // "Dist: edgy " (trailing blank) still matches edgy.
        assert_eq!(target_of(&meta, "edgy", false), Some("hardy"));
        assert_eq!(target_of(&meta, "edgy", true), Some("feisty"));
        // hardy → the stray 2008 lucid stanza, exactly as Ubuntu's first-newer loop finds it.
        assert_eq!(target_of(&meta, "hardy", false), Some("lucid"));
        assert_eq!(target_of(&meta, "jaunty", false), Some("karmic"));
        assert_eq!(target_of(&meta, "karmic", false), Some("lucid"));
        // lucid is listed twice; the last stanza (2010) is the running one: nothing newer.
        assert!(matches!(
            meta.select("lucid", true),
            Selection::UpToDate { .. }
        ));
        assert_eq!(meta.select("noble", false), Selection::NotListed);
    }

    #[test]
    fn xenial_stanza_with_comments_and_truncation_parses() {
        let text = include_str!(
            "../../../tests/conformance/ubuntu-release-upgrader/meta-release.xenial-stanza"
        );
        let meta = MetaRelease::parse(text).unwrap();
        assert_eq!(meta.releases.len(), 1);
        let xenial = &meta.releases[0];
        assert_eq!(xenial.version, "16.04.2 LTS");
        assert_eq!(
            Some(xenial.timestamp),
            date::parse("Thu, 21 Apr 2016 16:04:00 UTC")
        );
    }

    #[test]
    fn order_is_by_date_not_position() {
        let text = "Dist: c\nVersion: 3\nDate: Thu, 01 Jan 2026 00:00:00 UTC\nSupported: 1\n\n\
                    Dist: b\nVersion: 2\nDate: Thu, 01 Jan 2025 00:00:00 UTC\nSupported: 1\n\n\
                    Dist: a\nVersion: 1\nDate: Thu, 01 Jan 2024 00:00:00 UTC\nSupported: 1\n";
        let meta = MetaRelease::parse(text).unwrap();
        assert_eq!(target_of(&meta, "a", false), Some("b"));
        assert_eq!(target_of(&meta, "b", false), Some("c"));
    }

    #[test]
    fn unusable_stanzas_are_skipped_with_a_reason() {
        let text = "Dist: a\nVersion: 1\nDate: yesterday\nSupported: 1\n\n\
                    Dist: b\nVersion: 2\nDate: Thu, 01 Jan 2025 00:00:00 UTC\nSupported: 1\n\n\
                    Comment: no Dist here\n";
        let meta = MetaRelease::parse(text).unwrap();
        assert_eq!(meta.releases.len(), 1);
        assert_eq!(meta.skipped.len(), 1);
        assert!(meta.skipped[0].contains("Date"), "{:?}", meta.skipped);
    }

    #[test]
    fn upgrade_tool_fields_are_read() {
        let text = "Dist: trixie\nVersion: 13\nDate: Sat, 09 Aug 2025 00:00:00 UTC\nSupported: 1\n\
                    UpgradeToolBaseURI: http://h/dists/trixie/main/\n\
                    UpgradeToolPackages: release-upgrader-apt, release-upgrader-dpkg ,release-upgrader-core\n\
                    UpgradeBroken: see bug 1\n";
        let entry = &MetaRelease::parse(text).unwrap().releases[0];
        assert_eq!(
            entry.upgrade_tool_base_uri.as_deref(),
            Some("http://h/dists/trixie/main/")
        );
        assert_eq!(
            entry.upgrade_tool_packages,
            [
                "release-upgrader-apt",
                "release-upgrader-dpkg",
                "release-upgrader-core"
            ]
        );
        assert_eq!(entry.upgrade_broken.as_deref(), Some("see bug 1"));
    }

    fn uris() -> MetaReleaseUris {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        std::fs::create_dir_all(root.path("/etc/update-manager")).unwrap();
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/conformance/ubuntu-release-upgrader/etc-update-manager-meta-release"
            ),
            root.path(META_RELEASE_CONFIG),
        )
        .unwrap();
        read_uris(&root).unwrap()
    }

    #[test]
    fn uri_choice_follows_prompt_channel_and_override() {
        let u = uris();
        let normal = Channel::default();
        let devel = Channel {
            devel: true,
            proposed: false,
        };
        let proposed = Channel {
            devel: false,
            proposed: true,
        };
        let base = "https://changelogs.ubuntu.com/meta-release";
        let pick = |p, lts, c, o| choose_uri(&u, p, lts, c, o).unwrap();
        assert_eq!(
            pick(Prompt::Normal, true, normal, None).as_deref(),
            Some(base)
        );
        assert_eq!(
            pick(Prompt::Lts, true, normal, None).unwrap(),
            format!("{base}-lts")
        );
        // Prompt=lts on a non-LTS release means normal, as in Ubuntu.
        assert_eq!(
            pick(Prompt::Lts, false, normal, None).as_deref(),
            Some(base)
        );
        assert_eq!(
            pick(Prompt::Normal, false, devel, None).unwrap(),
            format!("{base}-development")
        );
        assert_eq!(
            pick(Prompt::Lts, true, devel, None).unwrap(),
            format!("{base}-lts-development")
        );
        assert_eq!(
            pick(Prompt::Normal, false, proposed, None).unwrap(),
            format!("{base}-proposed")
        );
        assert_eq!(pick(Prompt::Never, false, normal, None), None);
        assert_eq!(
            pick(Prompt::Never, false, devel, Some("file:///m")).as_deref(),
            Some("file:///m-development")
        );
    }

    #[test]
    fn conformance_release_upgrades_says_normal() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        assert_eq!(read_prompt(&root).unwrap(), Prompt::Normal);
        std::fs::create_dir_all(root.path("/etc/update-manager")).unwrap();
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/conformance/ubuntu-release-upgrader/etc-update-manager-release-upgrades"
            ),
            root.path(RELEASE_UPGRADES),
        )
        .unwrap();
        assert_eq!(read_prompt(&root).unwrap(), Prompt::Normal);
        std::fs::write(root.path(RELEASE_UPGRADES), "[DEFAULT]\nPrompt=never\n").unwrap();
        assert_eq!(read_prompt(&root).unwrap(), Prompt::Never);
        std::fs::write(root.path(RELEASE_UPGRADES), "[DEFAULT]\nPrompt=sometimes\n").unwrap();
        assert!(read_prompt(&root).is_err());
    }

    #[test]
    fn no_configured_uri_is_an_error_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let u = read_uris(&SystemRoot::new(dir.path())).unwrap();
        let err = choose_uri(&u, Prompt::Normal, false, Channel::default(), None).unwrap_err();
        assert!(matches!(err, Error::NoMetaReleaseUri { .. }));
        assert!(err.hint().unwrap().contains("--meta-release-uri"));
    }
}
