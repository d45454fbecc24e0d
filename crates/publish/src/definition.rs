//! The publisher's definition files (TOML, kept in `pockets/`): what a helper pocket and a
//! meta-release say, checked before anything is signed, so that a typo fails here, on the
//! distribution's build machine, and not on a user's machine.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::client_metarelease::MetaRelease;
use crate::date::{self, Timestamp};
use crate::error::Error;
use crate::metarelease::Stanza;
use crate::pocket::PocketSpec;

/// A pocket definition (`pockets/*.toml`): the `Release` fields of a
/// `dist-upgrader-<arch>` pocket and where its helper debs are.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PocketDefinition {
    pub origin: Option<String>,
    pub label: Option<String>,
    /// Defaults to the codename.
    pub suite: Option<String>,
    /// The target release (the client refuses a pocket for another one).
    pub codename: Option<String>,
    /// The one architecture of the pocket (`dist-upgrader-<arch>`).
    pub arch: Option<String>,
    pub description: Option<String>,
    /// Days from `Date` to `Valid-Until`; 0 writes no `Valid-Until`, for media only
    /// (clients refuse a network pocket without it).
    pub valid_days: Option<u64>,
    /// Helper debs: files, or directories whose `*.deb` are all taken; relative to the
    /// definition file.
    #[serde(default)]
    pub debs: Vec<PathBuf>,
}

/// A pocket's fields once the definition and the command line are merged.
#[derive(Clone, Debug)]
pub struct PocketSettings {
    pub spec: PocketSpec,
    pub arch: String,
    pub debs: Vec<PathBuf>,
}

/// The longest validity a pocket may be signed for.
const MAX_VALID_DAYS: u64 = 36_500;

/// Days a pocket stays valid when neither the definition nor the command line says.
pub const DEFAULT_VALID_DAYS: u64 = 14;

impl PocketDefinition {
    /// Reads a definition; relative `debs` are made relative to its directory.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = fs_err::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut definition: PocketDefinition = parse_toml(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for deb in &mut definition.debs {
            if deb.is_relative() {
                *deb = base.join(&*deb);
            }
        }
        Ok(definition)
    }

    /// Fills in defaults and checks what a client will check. `now` is the `Date`.
    pub fn settle(self, origin_of: &str, now: Timestamp) -> Result<PocketSettings, Error> {
        let missing = |what: &str, flag: &str| Error::Config {
            path: PathBuf::from(origin_of),
            reason: format!("no {what}: give `{flag}` or set it in a pocket definition"),
        };
        let codename = self
            .codename
            .ok_or_else(|| missing("codename", "--codename"))?;
        let arch = self.arch.ok_or_else(|| missing("architecture", "--arch"))?;
        let valid_days = self.valid_days.unwrap_or(DEFAULT_VALID_DAYS);
        for (what, value) in [("codename", &codename), ("architecture", &arch)] {
            if value.is_empty()
                || !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+' | '_'))
            {
                return Err(Error::Config {
                    path: PathBuf::from(origin_of),
                    reason: format!("{what} {value:?} is not a plain name"),
                });
            }
        }
        if valid_days > MAX_VALID_DAYS {
            return Err(Error::Config {
                path: PathBuf::from(origin_of),
                reason: format!(
                    "valid-days {valid_days} is more than {MAX_VALID_DAYS} (100 years): a \
                     pocket is re-signed well before it expires"
                ),
            });
        }
        let spec = PocketSpec {
            origin: self.origin.unwrap_or_else(|| "release-upgrader".into()),
            label: self
                .label
                .unwrap_or_else(|| format!("release-upgrader helpers for {codename}")),
            suite: self.suite.unwrap_or_else(|| codename.clone()),
            architectures: vec![arch.clone()],
            description: self.description,
            date: now,
            // Media do not expire (docs/protocol.md §2).
            valid_until: (valid_days > 0).then(|| now + (valid_days as i64) * 86_400),
            codename,
        };
        Ok(PocketSettings {
            spec,
            arch,
            debs: self.debs,
        })
    }
}

/// Expands directories in `debs` to the `*.deb` files in them, sorted; files stay.
pub fn expand_debs(debs: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for path in debs {
        let meta = fs_err::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = fs_err::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "deb") && p.is_file())
                .collect();
            if found.is_empty() {
                return Err(Error::Config {
                    path: path.clone(),
                    reason: "no .deb files in this directory".into(),
                });
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// A meta-release definition: the release stanzas in the order they are published.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetaReleaseDefinition {
    /// Default `UpgradeToolBaseURI` for every release that has none; `{dist}` is
    /// replaced by the release's codename.
    pub upgrade_tool_base_uri: Option<String>,
    #[serde(rename = "release")]
    pub releases: Vec<ReleaseDefinition>,
}

/// One release stanza (docs/protocol.md §1).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReleaseDefinition {
    pub dist: String,
    pub name: Option<String>,
    pub version: String,
    /// RFC 2822, e.g. `Sat, 09 Aug 2025 07:00:00 UTC`.
    pub date: String,
    pub supported: bool,
    pub description: Option<String>,
    pub release_file: Option<String>,
    pub release_notes: Option<String>,
    pub release_notes_html: Option<String>,
    pub upgrade_tool: Option<String>,
    pub upgrade_tool_signature: Option<String>,
    pub upgrade_broken: Option<String>,
    pub upgrade_tool_base_uri: Option<String>,
    #[serde(default)]
    pub upgrade_tool_packages: Vec<String>,
}

impl MetaReleaseDefinition {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = fs_err::read_to_string(path).map_err(|e| Error::io(path, e))?;
        parse_toml(path, &text)
    }

    /// The stanzas, with `base_uri` (from the command line) overriding the definition's
    /// default base URI. Checked: every date parses, codenames are unique, and the
    /// result reads back with the client's own parser.
    pub fn stanzas(&self, path: &Path, base_uri: Option<&str>) -> Result<Vec<Stanza>, Error> {
        let bad = |reason: String| Error::Config {
            path: path.to_owned(),
            reason,
        };
        if self.releases.is_empty() {
            return Err(bad("no [[release]] is defined".into()));
        }
        let default_base = base_uri.or(self.upgrade_tool_base_uri.as_deref());
        let mut stanzas = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for release in &self.releases {
            if !seen.insert(release.dist.as_str()) {
                return Err(bad(format!("release {} is defined twice", release.dist)));
            }
            if date::parse(&release.date).is_none() {
                return Err(bad(format!(
                    "release {}: date {:?} is not an RFC 2822 date (e.g. \"Sat, 09 Aug 2025 07:00:00 UTC\")",
                    release.dist, release.date
                )));
            }
            for (name, value) in [
                ("dist", &release.dist),
                ("version", &release.version),
                ("date", &release.date),
            ] {
                if value.trim().is_empty() || value.contains('\n') {
                    return Err(bad(format!(
                        "release {}: {name} must be one non-empty line",
                        release.dist
                    )));
                }
            }
            let mut stanza = Stanza::default().field("Dist", &release.dist);
            let optional = |stanza: Stanza, name: &str, value: &Option<String>| match value {
                Some(v) if !v.trim().is_empty() => stanza.field(name, v.trim()),
                _ => stanza,
            };
            stanza = optional(stanza, "Name", &release.name);
            stanza = stanza
                .field("Version", &release.version)
                .field("Date", &release.date)
                .field("Supported", if release.supported { "1" } else { "0" });
            stanza = optional(stanza, "Description", &release.description);
            stanza = optional(stanza, "Release-File", &release.release_file);
            stanza = optional(stanza, "ReleaseNotes", &release.release_notes);
            stanza = optional(stanza, "ReleaseNotesHtml", &release.release_notes_html);
            stanza = optional(stanza, "UpgradeTool", &release.upgrade_tool);
            stanza = optional(
                stanza,
                "UpgradeToolSignature",
                &release.upgrade_tool_signature,
            );
            stanza = optional(stanza, "UpgradeBroken", &release.upgrade_broken);
            let base = release
                .upgrade_tool_base_uri
                .clone()
                .or_else(|| default_base.map(|b| b.replace("{dist}", &release.dist)));
            stanza = optional(stanza, "UpgradeToolBaseURI", &base);
            if !release.upgrade_tool_packages.is_empty() {
                if let Some(bad_name) = release
                    .upgrade_tool_packages
                    .iter()
                    .find(|p| !ru_format::layout::is_helper_name(p))
                {
                    return Err(bad(format!(
                        "release {}: upgrade-tool-packages may only name release-upgrader-* \
                         packages, not {bad_name:?}",
                        release.dist
                    )));
                }
                stanza = stanza.field(
                    "UpgradeToolPackages",
                    release.upgrade_tool_packages.join(", "),
                );
            }
            stanzas.push(stanza);
        }
        let text = crate::metarelease::render(&stanzas);
        let parsed = MetaRelease::parse(&text).map_err(|e| bad(format!("renders badly: {e}")))?;
        if parsed.releases.len() != stanzas.len() {
            return Err(bad(format!(
                "{} releases defined but {} read back",
                stanzas.len(),
                parsed.releases.len()
            )));
        }
        Ok(stanzas)
    }
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|e| Error::Config {
        path: path.to_owned(),
        reason: e.to_string().trim_end().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pocket_definition_defaults_and_validity() {
        let def: PocketDefinition =
            toml::from_str("codename = \"trixie\"\narch = \"amd64\"\n").unwrap();
        let settled = def.settle("test", 1_000).unwrap();
        assert_eq!(settled.spec.suite, "trixie");
        assert_eq!(
            settled.spec.valid_until,
            Some(1_000 + 14 * 86_400),
            "default validity is two weeks"
        );
    }

    /// `valid-days = 0` is a pocket for media, which do not expire: no `Valid-Until`.
    #[test]
    fn zero_valid_days_writes_no_valid_until() {
        let def: PocketDefinition =
            toml::from_str("codename = \"trixie\"\narch = \"amd64\"\nvalid-days = 0\n").unwrap();
        let settled = def.settle("t", 1_000).unwrap();
        assert_eq!(settled.spec.valid_until, None);
        let text = crate::pocket::render_release(&settled.spec, &[]);
        assert!(!text.contains("Valid-Until"), "{text}");
        assert!(text.contains("Date: "), "{text}");
    }

    #[test]
    fn pocket_definition_rejects_unknown_fields_and_absurd_validity() {
        assert!(toml::from_str::<PocketDefinition>("codenam = \"x\"").is_err());
        // A validity of 2^63 days overflowed the date (a panic, or a wrapped Valid-Until).
        let def: PocketDefinition = toml::from_str(
            "codename = \"trixie\"\narch = \"amd64\"\nvalid-days = 9223372036854775807\n",
        )
        .unwrap();
        let err = def.settle("t", 0).unwrap_err().to_string();
        assert!(err.contains("100 years"), "{err}");
        let def: PocketDefinition =
            toml::from_str("codename = \"../x\"\narch = \"amd64\"\n").unwrap();
        assert!(def.settle("t", 0).is_err());
        let def: PocketDefinition = toml::from_str("arch = \"amd64\"\n").unwrap();
        let err = def.settle("t", 0).unwrap_err().to_string();
        assert!(err.contains("--codename"), "{err}");
    }

    #[test]
    fn meta_release_definition_renders_what_the_client_reads() {
        let def: MetaReleaseDefinition = toml::from_str(
            r#"
upgrade-tool-base-uri = "http://upgrader.invalid/{dist}/"
[[release]]
dist = "bookworm"
version = "12"
date = "Sat, 10 Jun 2023 07:00:00 UTC"
supported = true
[[release]]
dist = "trixie"
name = "Trixie"
version = "13"
date = "Sat, 09 Aug 2025 07:00:00 UTC"
supported = true
upgrade-tool-packages = ["release-upgrader-apt", "release-upgrader-dpkg"]
"#,
        )
        .unwrap();
        let stanzas = def.stanzas(Path::new("t"), None).unwrap();
        let text = crate::metarelease::render(&stanzas);
        let parsed = MetaRelease::parse(&text).unwrap();
        let trixie = parsed.releases.iter().find(|r| r.dist == "trixie").unwrap();
        assert_eq!(
            trixie.upgrade_tool_base_uri.as_deref(),
            Some("http://upgrader.invalid/trixie/")
        );
        assert_eq!(trixie.upgrade_tool_packages.len(), 2);
        let overridden = def.stanzas(Path::new("t"), Some("file:///srv/")).unwrap();
        assert!(
            crate::metarelease::render(&overridden).contains("UpgradeToolBaseURI: file:///srv/")
        );
    }

    #[test]
    fn meta_release_definition_refuses_bad_dates_duplicates_and_foreign_packages() {
        let base = "[[release]]\ndist = \"a\"\nversion = \"1\"\nsupported = true\n";
        let bad_date: MetaReleaseDefinition =
            toml::from_str(&format!("{base}date = \"yesterday\"\n")).unwrap();
        assert!(
            bad_date
                .stanzas(Path::new("t"), None)
                .unwrap_err()
                .to_string()
                .contains("yesterday")
        );
        let twice: MetaReleaseDefinition = toml::from_str(&format!(
            "{base}date = \"Sat, 10 Jun 2023 07:00:00 UTC\"\n{base}date = \"Sat, 10 Jun 2023 07:00:00 UTC\"\n"
        ))
        .unwrap();
        assert!(twice.stanzas(Path::new("t"), None).is_err());
        let foreign: MetaReleaseDefinition = toml::from_str(&format!(
            "{base}date = \"Sat, 10 Jun 2023 07:00:00 UTC\"\nupgrade-tool-packages = [\"apt\"]\n"
        ))
        .unwrap();
        assert!(foreign.stanzas(Path::new("t"), None).is_err());
    }
}
