//! The apt sources an opted-out device gets (docs/protocol.md §6): which suites of its
//! release a mirror carries, and which components each one has, read from each suite's
//! own signed `Release` — never guessed.
//!
//! Why this way: sources written blind (`<codename>-updates` on a mirror without it, one
//! component, no key) leave a device whose first `apt-get update` fails, on a system
//! that just lost its image updates. So every suite is fetched and its signature checked
//! with the device's archive keyring *before anything is written*, and that same keyring
//! is what each line names in `signed-by`: apt then trusts exactly what was checked
//! here. A suite the mirror lacks is left out; one it serves under another name
//! (another release's signed files) is refused, as are one for other architectures, an
//! expired one, one dated in the future.
//!
//! Parse and plan are pure ([`check_uri`], [`security_archives`], [`components_for`],
//! [`render`]); [`plan`] does the fetching.

use serde::{Deserialize, Serialize};

use crate::confine::RelPath;
use crate::date::Timestamp;
use crate::error::Error;
use crate::fetch::{Fetcher, Location};
use crate::openpgp::Keyring;
use crate::pocket::{self, ReleaseFile};
use crate::root::SystemRoot;

/// Where a distribution keeps its archive keyring (`<ID>` from os-release).
pub const KEYRING_DIR: &str = "/usr/share/keyrings";

/// Tolerance for a `Date` in the future (clock skew between the mirror and the device).
const FUTURE_TOLERANCE: Timestamp = 600;

/// One line of the sources list: a suite of an archive and the components it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suite {
    /// The archive (as given: it is what apt is told).
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
}

/// What the device needs from the mirror.
#[derive(Clone, Debug)]
pub struct Request {
    /// `--mirror`: the release's archive.
    pub mirror: String,
    /// `--security-mirror`: the archive holding `<codename>-security`, when given.
    pub security: Option<String>,
    pub codename: String,
    pub arch: String,
    /// The time to judge `Date` and `Valid-Until` by.
    pub now: Timestamp,
}

/// A suite the mirror does not have (so it is not written), and where it was looked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Absent {
    pub suite: String,
    pub tried: Vec<String>,
}

/// The suites verified and the ones found missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub suites: Vec<Suite>,
    pub absent: Vec<Absent>,
}

/// Whether `text` may stand as one word of a one-line sources entry: not empty, no
/// white space or control character, nothing apt reads as syntax (`#`, `[`, `]`).
fn is_word(text: &str) -> bool {
    !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "#[]\"'".contains(c))
}

/// Checks an archive URI given with `flag`: http, https or file, one word of a sources
/// line, and a location the fetcher can reach.
pub fn check_uri(uri: &str, flag: &str) -> Result<(), Error> {
    let bad = |reason: String| Error::Config {
        path: flag.into(),
        reason: format!("{uri:?} {reason}"),
    };
    let scheme = uri.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("http" | "https" | "file")) {
        return Err(bad("is not an http://, https:// or file:// URI".into()));
    }
    if !is_word(uri) {
        return Err(bad(
            "has a space, a control character or one of # [ ] \" ' in it".into(),
        ));
    }
    Location::parse(uri).map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// Checks a release codename (from os-release): it names directories on the mirror.
pub fn check_codename(codename: &str) -> Result<(), String> {
    let plain = !codename.is_empty()
        && codename
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-_".contains(c))
        && !codename.starts_with('.');
    if plain {
        Ok(())
    } else {
        Err(format!(
            "VERSION_CODENAME {codename:?} is not a plain release name"
        ))
    }
}

/// The archive keyring of a distribution with os-release `ID` `id`, as a path on the
/// device: `/usr/share/keyrings/<id>-archive-keyring.gpg` (Debian's and Ubuntu's name).
pub fn default_keyring(id: &str) -> Option<String> {
    check_codename(id).is_ok().then(|| {
        format!(
            "{KEYRING_DIR}/{}-archive-keyring.gpg",
            id.to_ascii_lowercase()
        )
    })
}

/// The archives to look for `<codename>-security` in, in order: the one given with
/// `--security-mirror` alone; else the mirror itself (Ubuntu's layout), then the mirror
/// with `-security` appended to its last path segment (Debian's layout, `…/debian` and
/// `…/debian-security` side by side). A mirror at the top of its host has no such
/// sibling: a changed host name would be another server.
pub fn security_archives(mirror: &str, explicit: Option<&str>) -> Vec<String> {
    if let Some(explicit) = explicit {
        return vec![explicit.to_owned()];
    }
    let mut out = vec![mirror.to_owned()];
    let trimmed = mirror.trim_end_matches('/');
    let path = trimmed
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    if !path.is_empty() {
        out.push(format!("{trimmed}-security"));
    }
    out
}

/// The components of a verified `Release` fetched as `dists/<suite>/` that the device
/// gets: after checking that it is that suite (its `Codename` or its `Suite` is `suite`,
/// as apt requires), for `arch`, current at `now`. Each component listed in
/// `Components` is kept when the `Release` lists a `Packages` index for `arch` under it;
/// the installer's (`main/debian-installer`: any name with a `/`) never.
pub fn components_for(
    release: &ReleaseFile,
    suite: &str,
    arch: &str,
    now: Timestamp,
    what: &str,
) -> Result<Vec<String>, Error> {
    if release.codename != suite && release.suite.as_deref() != Some(suite) {
        return Err(Error::WrongSuite {
            what: what.to_owned(),
            expected: suite.to_owned(),
            found: match &release.suite {
                Some(s) => format!("Codename {:?}, Suite {s:?}", release.codename),
                None => format!("Codename {:?}", release.codename),
            },
        });
    }
    if !release.architectures.is_empty() && !release.architectures.iter().any(|a| a == arch) {
        return Err(Error::WrongArchitecture {
            what: what.to_owned(),
            expected: arch.to_owned(),
            found: release.architectures.join(" "),
        });
    }
    if let Some((until, text)) = &release.valid_until
        && now > *until
    {
        return Err(Error::Expired {
            what: what.to_owned(),
            valid_until: text.clone(),
        });
    }
    if release.date > now + FUTURE_TOLERANCE {
        return Err(Error::NotYetValid {
            what: what.to_owned(),
            date: release.date_text.clone(),
        });
    }
    if release.components.is_empty() {
        return Err(Error::Malformed {
            what: what.to_owned(),
            reason: "no Components field, so it is not an archive suite apt can use".into(),
        });
    }
    let index = |component: &str| {
        let prefix = format!("{component}/binary-{arch}/Packages");
        release.files.iter().any(|f| {
            f.name
                .strip_prefix(&prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
    };
    let components: Vec<String> = release
        .components
        .iter()
        .filter(|c| !c.contains('/') && is_word(c) && index(c))
        .cloned()
        .collect();
    if components.is_empty() {
        return Err(Error::Malformed {
            what: what.to_owned(),
            reason: format!(
                "none of its components ({}) has a Packages index for {arch}",
                release.components.join(" ")
            ),
        });
    }
    Ok(components)
}

/// The sources list of `suites`, each line `signed-by` `keyring` (a path on the device).
/// Refuses (the reason) a word that would not stay one word of its line: the values
/// come back from a state file when an opt-out finishes after a reboot.
pub fn render(suites: &[Suite], keyring: &str) -> Result<String, String> {
    if !is_word(keyring) || !keyring.starts_with('/') {
        return Err(format!("the keyring {keyring:?} is not an absolute path"));
    }
    if suites.is_empty() {
        return Err("it lists no suite".into());
    }
    let mut text = String::from(
        "# Written by release-upgrader image opt-out: this device now upgrades with apt.\n\
         # Suites and components as the mirror's signed Release files list them, checked\n\
         # with the keyring each line names.\n",
    );
    for s in suites {
        for word in [&s.uri, &s.suite].into_iter().chain(&s.components) {
            if !is_word(word) {
                return Err(format!("{word:?} is not one word of a sources line"));
            }
        }
        if s.components.is_empty() {
            return Err(format!("the suite {} has no component", s.suite));
        }
        text.push_str(&format!(
            "deb [signed-by={keyring}] {} {} {}\n",
            s.uri,
            s.suite,
            s.components.join(" ")
        ));
    }
    Ok(text)
}

/// The device's archive keyring at `device_path` (a path on the device), read without
/// following a symlink: what the sources will name in `signed-by` is what is checked.
pub fn load_keyring(root: &SystemRoot, device_path: &str) -> Result<Keyring, Error> {
    let rel = root.relative(device_path)?;
    let shown = root.dir().join(rel.as_path());
    let missing = || Error::Config {
        path: shown.clone(),
        reason: "missing: this is the archive keyring the apt sources are checked with and \
                 will name in signed-by; pass --archive-keyring PATH (a keyring on the \
                 device) for another"
            .into(),
    };
    let (dir, name) = rel.split_last();
    let dir = match dir {
        Some(dir) => root.open_dir(format!("/{dir}"))?,
        None => Some(root.tree()?),
    }
    .ok_or_else(missing)?;
    let name = RelPath::new(name).map_err(|e| Error::Refused {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let bytes = dir.read(&name)?.ok_or_else(missing)?;
    Ok(Keyring::from_bytes(&shown, &bytes)?)
}

/// Opens `dists/<suite>/` of `archive`: its `Release` verified with `keyring`, then
/// checked ([`components_for`]).
fn open_suite(
    fetcher: &Fetcher,
    keyring: &Keyring,
    archive: &str,
    suite: &str,
    request: &Request,
) -> Result<Suite, Error> {
    let location = Location::parse(archive)?.join(&format!("dists/{suite}"))?;
    let release = pocket::verified_release(fetcher, keyring, &location)?;
    let what = format!("Release of {location}");
    let components = components_for(&release, suite, &request.arch, request.now, &what)?;
    Ok(Suite {
        uri: archive.to_owned(),
        suite: suite.to_owned(),
        components,
    })
}

/// [`open_suite`] for a suite that may be missing: `None` when the archive has neither
/// its `InRelease` nor its `Release` (HTTP 404). A suite that is there must verify.
fn open_optional(
    fetcher: &Fetcher,
    keyring: &Keyring,
    archive: &str,
    suite: &str,
    request: &Request,
) -> Result<Option<Suite>, Error> {
    match open_suite(fetcher, keyring, archive, suite, request) {
        Ok(found) => Ok(Some(found)),
        Err(e) if e.is_not_found() => {
            log::debug!("{archive}: no {suite} ({e})");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Fetches and verifies the suites of `request`'s release: `<codename>` from the mirror
/// (required), `<codename>-updates` from the mirror when it has it, `<codename>-security`
/// from the first of [`security_archives`] that has it (required when
/// `--security-mirror` names the archive). Any failure to reach the mirror, and any
/// suite that is there but does not verify, fails the whole plan.
pub fn plan(fetcher: &Fetcher, keyring: &Keyring, request: &Request) -> Result<Plan, Error> {
    let codename = &request.codename;
    let mut suites = vec![open_suite(
        fetcher,
        keyring,
        &request.mirror,
        codename,
        request,
    )?];
    let mut absent = Vec::new();
    let updates = format!("{codename}-updates");
    match open_optional(fetcher, keyring, &request.mirror, &updates, request)? {
        Some(found) => suites.push(found),
        None => absent.push(Absent {
            suite: updates,
            tried: vec![request.mirror.clone()],
        }),
    }
    let security = format!("{codename}-security");
    let archives = security_archives(&request.mirror, request.security.as_deref());
    let mut found = None;
    for archive in &archives {
        found = if request.security.is_some() {
            Some(open_suite(fetcher, keyring, archive, &security, request)?)
        } else {
            open_optional(fetcher, keyring, archive, &security, request)?
        };
        if found.is_some() {
            break;
        }
    }
    match found {
        Some(found) => suites.push(found),
        None => absent.push(Absent {
            suite: security,
            tried: archives,
        }),
    }
    Ok(Plan { suites, absent })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: bookworm\n\
        Architectures: amd64 arm64\nComponents: main contrib non-free main/debian-installer\n\
        Date: Sat, 01 Nov 2026 00:00:00 UTC\nSHA256:\n \
        ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 3 main/binary-amd64/Packages\n \
        ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 3 main/binary-arm64/Packages.xz\n \
        ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 3 contrib/binary-amd64/Packages.gz\n \
        ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 3 non-free/binary-amd64/Packagesx\n \
        ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 3 main/debian-installer/binary-amd64/Packages\n";

    fn now() -> Timestamp {
        crate::date::parse("Sun, 02 Nov 2026 00:00:00 UTC").unwrap()
    }

    fn components(text: &str, suite: &str, arch: &str) -> Result<Vec<String>, Error> {
        let release = ReleaseFile::parse(text).unwrap();
        components_for(&release, suite, arch, now(), "Release")
    }

    #[test]
    fn components_are_those_with_an_index_for_the_architecture_never_the_installers() {
        assert_eq!(
            components(RELEASE, "bookworm", "amd64").unwrap(),
            ["main", "contrib"]
        );
        assert_eq!(components(RELEASE, "bookworm", "arm64").unwrap(), ["main"]);
        // The suite is named by Codename or by Suite, as apt takes either.
        assert_eq!(
            components(RELEASE, "stable", "amd64").unwrap(),
            ["main", "contrib"]
        );
        let err = components(
            &RELEASE.replace(
                "main/binary-arm64/Packages.xz",
                "main/binary-armhf/Packages",
            ),
            "bookworm",
            "arm64",
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Malformed { reason, .. } if reason.contains("arm64")),
            "{err:?}"
        );
        let err = components(
            &RELEASE.replace(
                "Components: main contrib non-free main/debian-installer\n",
                "",
            ),
            "bookworm",
            "amd64",
        )
        .unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn a_release_of_another_suite_architecture_or_time_is_refused() {
        // Another release's signed files served under dists/bookworm-updates/.
        let err = components(RELEASE, "bookworm-updates", "amd64").unwrap_err();
        assert!(matches!(err, Error::WrongSuite { .. }), "{err:?}");
        assert_eq!(err.exit_code(), crate::error::ExitCode::Verification);
        let trixie = RELEASE
            .replace("Codename: bookworm", "Codename: trixie")
            .replace("Suite: stable", "Suite: testing");
        let err = components(&trixie, "bookworm", "amd64").unwrap_err();
        assert!(
            err.to_string().contains("\"trixie\"") && err.to_string().contains("bookworm"),
            "{err}"
        );
        // Ubuntu's updates: Codename is the release, Suite the pocket.
        let ubuntu = RELEASE.replace("Suite: stable", "Suite: bookworm-updates");
        assert!(components(&ubuntu, "bookworm-updates", "amd64").is_ok());

        let err = components(RELEASE, "bookworm", "riscv64").unwrap_err();
        assert!(matches!(err, Error::WrongArchitecture { .. }), "{err:?}");
        let expired = RELEASE.replace("Date:", "Valid-Until: Sat, 01 Nov 2026 12:00:00 UTC\nDate:");
        let err = components(&expired, "bookworm", "amd64").unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err:?}");
        let future = RELEASE.replace("01 Nov 2026", "03 Nov 2026");
        let err = components(&future, "bookworm", "amd64").unwrap_err();
        assert!(matches!(err, Error::NotYetValid { .. }), "{err:?}");
    }

    #[test]
    fn the_security_archive_is_the_given_one_else_the_mirror_then_its_sibling() {
        assert_eq!(
            security_archives("http://m/debian", None),
            ["http://m/debian", "http://m/debian-security"]
        );
        assert_eq!(
            security_archives("http://m/a/debian/", None),
            ["http://m/a/debian/", "http://m/a/debian-security"]
        );
        assert_eq!(
            security_archives("file:///srv/debian", None),
            ["file:///srv/debian", "file:///srv/debian-security"]
        );
        // At the top of a host: no sibling (it would be another host).
        assert_eq!(security_archives("http://m/", None), ["http://m/"]);
        assert_eq!(security_archives("http://m", None), ["http://m"]);
        assert_eq!(
            security_archives("http://m/debian", Some("http://s/x")),
            ["http://s/x"]
        );
    }

    #[test]
    fn uris_must_be_one_word_of_a_scheme_apt_and_the_fetcher_share() {
        for good in ["http://m/debian", "https://m:8443/d", "file:///srv/debian"] {
            check_uri(good, "--mirror").unwrap();
        }
        for bad in [
            "/srv/debian",
            "ftp://m/debian",
            "http://m/deb ian",
            "http://m/debian\nftp://x",
            "http://m/#x",
            "http://m/]x",
            "",
        ] {
            let err = check_uri(bad, "--mirror").unwrap_err();
            assert_eq!(err.exit_code(), crate::error::ExitCode::Usage, "{bad:?}");
            assert!(err.to_string().starts_with("--mirror: "), "{err}");
        }
        assert!(check_codename("bookworm").is_ok());
        for bad in ["", "../x", "a b", "a/b", ".hidden"] {
            assert!(check_codename(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            default_keyring("debian").as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert_eq!(default_keyring("a/b"), None);
    }

    #[test]
    fn sources_name_the_keyring_on_every_line_and_refuse_what_would_split_a_line() {
        let suites = vec![
            Suite {
                uri: "http://m/debian".into(),
                suite: "bookworm".into(),
                components: vec!["main".into(), "contrib".into()],
            },
            Suite {
                uri: "http://m/debian-security".into(),
                suite: "bookworm-security".into(),
                components: vec!["main".into()],
            },
        ];
        let k = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let text = render(&suites, k).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                format!("deb [signed-by={k}] http://m/debian bookworm main contrib"),
                format!("deb [signed-by={k}] http://m/debian-security bookworm-security main"),
            ]
        );
        assert!(render(&suites, "relative.gpg").is_err());
        assert!(render(&suites, "/k.gpg] [trusted=yes").is_err());
        assert!(render(&[], k).is_err());
        for field in 0..3 {
            let mut bad = suites.clone();
            match field {
                0 => bad[0].uri = "http://m/x\ndeb [trusted=yes] http://evil/ x".into(),
                1 => bad[0].suite = "bookworm main".into(),
                _ => bad[0].components = vec![],
            }
            assert!(render(&bad, k).is_err(), "{bad:?}");
        }
    }
}
