//! Pointing apt's sources at the target release: one-line `.list` files and deb822
//! `.sources` files, edited losslessly (comments, order, options and spacing kept).
//!
//! An entry for the running release (`bookworm`, `bookworm-updates`, `-security`,
//! `-backports`, …) is moved to the target if it is the distribution's own archive;
//! other repositories using the same codename are disabled with a comment saying why,
//! unless `--allow-third-party`, because a third-party repository for the old release
//! can pull the upgrade apart. Entries for other suites (`stable`, `sid`, `./`) are left
//! as they are. Whether an entry is the distribution's is decided by the caller.

use serde::Serialize;

use crate::confine::{Kind, RelPath, Tree};

/// One source as apt sees it, for classification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub signed_by: Option<String>,
}

/// What happens to an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Suites moved to the target release.
    Upgrade,
    /// Disabled: a third-party repository for the old release.
    Disable,
    /// Left alone: not about the running release.
    Keep,
}

/// What changed in a file, entry by entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// 1-based line of the entry (its first line for deb822).
    pub line: usize,
    pub action: Action,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
}

/// How to rewrite.
pub struct Rules<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub allow_third_party: bool,
    /// Whether an entry is the distribution's own archive.
    pub is_distribution: &'a dyn Fn(&SourceEntry) -> bool,
}

impl Rules<'_> {
    /// The suite for the target release, if `suite` belongs to the running one.
    pub fn map_suite(&self, suite: &str) -> Option<String> {
        if suite == self.from {
            return Some(self.to.to_owned());
        }
        if let Some(rest) = suite.strip_prefix(self.from) {
            if let Some(pocket) = rest.strip_prefix('-')
                && !pocket.is_empty()
            {
                return Some(format!("{}-{pocket}", self.to));
            }
            // The security suite's old name ("buster/updates").
            if rest == "/updates" {
                return Some(format!("{}-security", self.to));
            }
        }
        None
    }

    fn action(&self, entry: &SourceEntry) -> Action {
        if !entry.suites.iter().any(|s| self.map_suite(s).is_some()) {
            Action::Keep
        } else if self.allow_third_party || (self.is_distribution)(entry) {
            Action::Upgrade
        } else {
            Action::Disable
        }
    }

    fn disabled_note(&self) -> String {
        format!("disabled on upgrade to {}", self.to)
    }
}

/// Rewrites a one-line-style file (`sources.list`, `*.list`).
pub fn rewrite_list(text: &str, rules: &Rules<'_>) -> (String, Vec<Change>) {
    let mut out = String::with_capacity(text.len() + 64);
    let mut changes = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let Some(parsed) = parse_line(line) else {
            out.push_str(line);
            continue;
        };
        let action = rules.action(&parsed.entry);
        match action {
            Action::Keep => out.push_str(line),
            Action::Upgrade => {
                let mapped = rules
                    .map_suite(&parsed.entry.suites[0])
                    .unwrap_or_else(|| parsed.entry.suites[0].clone());
                out.push_str(&line[..parsed.suite.start]);
                out.push_str(&mapped);
                out.push_str(&line[parsed.suite.end..]);
            }
            Action::Disable => {
                let (body, newline) = match line.strip_suffix('\n') {
                    Some(body) => (body, "\n"),
                    None => (line, ""),
                };
                out.push_str(&format!("# {body} # {}{newline}", rules.disabled_note()));
            }
        }
        if action != Action::Keep {
            changes.push(Change {
                line: n + 1,
                action,
                uris: parsed.entry.uris.clone(),
                suites: parsed.entry.suites.clone(),
            });
        }
    }
    (out, changes)
}

struct ParsedLine {
    entry: SourceEntry,
    /// Byte range of the suite token in the line.
    suite: std::ops::Range<usize>,
}

/// Parses `deb [opts] uri suite [components]`; `None` for comments, blanks and junk.
fn parse_line(line: &str) -> Option<ParsedLine> {
    let body = line.split('#').next().unwrap_or("");
    let mut rest = body.trim_start();
    let start = body.len() - rest.len();
    let kind_end = rest.find(char::is_whitespace)?;
    let kind = &rest[..kind_end];
    if kind != "deb" && kind != "deb-src" {
        return None;
    }
    let mut offset = start + kind_end;
    rest = &rest[kind_end..];
    let skip_ws = |rest: &mut &str, offset: &mut usize| {
        let trimmed = rest.trim_start();
        *offset += rest.len() - trimmed.len();
        *rest = trimmed;
    };
    skip_ws(&mut rest, &mut offset);
    let mut signed_by = None;
    if rest.starts_with('[') {
        let close = rest.find(']')?;
        for option in rest[1..close].split_whitespace() {
            if let Some(value) = option.strip_prefix("signed-by=") {
                signed_by = Some(value.to_owned());
            }
        }
        offset += close + 1;
        rest = &rest[close + 1..];
        skip_ws(&mut rest, &mut offset);
    }
    let uri_end = rest.find(char::is_whitespace)?;
    let uri = rest[..uri_end].to_owned();
    offset += uri_end;
    rest = &rest[uri_end..];
    skip_ws(&mut rest, &mut offset);
    let suite_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if suite_end == 0 {
        return None;
    }
    let suite = rest[..suite_end].to_owned();
    Some(ParsedLine {
        entry: SourceEntry {
            types: vec![kind.to_owned()],
            uris: vec![uri],
            suites: vec![suite],
            signed_by,
        },
        suite: offset..offset + suite_end,
    })
}

/// Rewrites a deb822 `.sources` file.
pub fn rewrite_sources(text: &str, rules: &Rules<'_>) -> Result<(String, Vec<Change>), String> {
    let original = text;
    // deb822-lossless appends a new field right after the last value: without a final
    // newline `Enabled: no` would be glued to the last line (`Suites: bookwormEnabled:
    // no`). Edit as if there were one; give the text back as it was if nothing changes.
    let with_newline;
    let text = if text.is_empty() || text.ends_with('\n') {
        text
    } else {
        with_newline = format!("{text}\n");
        &with_newline
    };
    let parsed = deb822_lossless::Deb822::parse(text);
    if !parsed.errors().is_empty() {
        return Err(parsed.errors().join("; "));
    }
    // Line numbers come from the text as read, before any edit shifts offsets.
    let lines: Vec<usize> = parsed
        .tree()
        .paragraphs()
        .map(|p| {
            text[..usize::from(p.text_range().start())]
                .matches('\n')
                .count()
                + 1
        })
        .collect();
    let doc = parsed.tree();
    let mut changes = Vec::new();
    for (mut paragraph, line) in doc.paragraphs().zip(lines) {
        let words = |key: &str| -> Vec<String> {
            paragraph
                .get(key)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let entry = SourceEntry {
            types: words("Types"),
            uris: words("URIs"),
            suites: words("Suites"),
            signed_by: paragraph.get("Signed-By").map(|v| v.trim().to_owned()),
        };
        let enabled = paragraph
            .get("Enabled")
            .is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if entry.suites.is_empty() || !enabled {
            continue;
        }
        let action = rules.action(&entry);
        match action {
            Action::Keep => continue,
            Action::Upgrade => {
                let suites: Vec<String> = entry
                    .suites
                    .iter()
                    .map(|s| rules.map_suite(s).unwrap_or_else(|| s.clone()))
                    .collect();
                paragraph.set("Suites", &suites.join(" "));
            }
            Action::Disable => {
                paragraph.insert_comment_before(&rules.disabled_note());
                // deb822-lossless keeps an existing field's spacing: an empty `Enabled:`
                // would become `Enabled: ` and a line `no`. Written whole instead, once:
                // every `Enabled` goes first (`remove` takes one of several at a time).
                for _ in 0..text.len() {
                    if paragraph.get("Enabled").is_none() {
                        break;
                    }
                    paragraph.remove("Enabled");
                }
                paragraph.set("Enabled", "no");
            }
        }
        changes.push(Change {
            line,
            action,
            uris: entry.uris,
            suites: entry.suites,
        });
    }
    if changes.is_empty() {
        return Ok((original.to_owned(), changes));
    }
    Ok((doc.to_string(), changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules<'a>(is_distribution: &'a dyn Fn(&SourceEntry) -> bool) -> Rules<'a> {
        Rules {
            from: "bookworm",
            to: "trixie",
            allow_third_party: false,
            is_distribution,
        }
    }

    fn debian_only(entry: &SourceEntry) -> bool {
        entry.uris.iter().all(|u| u.contains("/debian"))
    }

    #[test]
    fn suites_of_the_running_release_map_to_the_target() {
        let r = rules(&debian_only);
        assert_eq!(r.map_suite("bookworm").as_deref(), Some("trixie"));
        assert_eq!(
            r.map_suite("bookworm-updates").as_deref(),
            Some("trixie-updates")
        );
        assert_eq!(
            r.map_suite("bookworm-security").as_deref(),
            Some("trixie-security")
        );
        assert_eq!(
            r.map_suite("bookworm-backports-sloppy").as_deref(),
            Some("trixie-backports-sloppy")
        );
        assert_eq!(
            r.map_suite("bookworm/updates").as_deref(),
            Some("trixie-security")
        );
        assert_eq!(r.map_suite("bookwormish"), None);
        assert_eq!(r.map_suite("stable"), None);
        assert_eq!(r.map_suite("./"), None);
    }

    #[test]
    fn one_line_files_keep_everything_but_the_suite() {
        let text = "# my sources\n\
                    deb http://mirror/debian bookworm main contrib\n\
                    deb-src  [arch=amd64 signed-by=/k.gpg]   http://mirror/debian   bookworm-updates   main # note\n\
                    \n\
                    # deb http://mirror/debian bookworm-backports main\n\
                    deb https://vendor.example/repo bookworm stable\n\
                    deb http://mirror/debian sid main\n\
                    deb file:/srv/pocket ./";
        let (out, changes) = rewrite_list(text, &rules(&debian_only));
        assert_eq!(
            out,
            "# my sources\n\
             deb http://mirror/debian trixie main contrib\n\
             deb-src  [arch=amd64 signed-by=/k.gpg]   http://mirror/debian   trixie-updates   main # note\n\
             \n\
             # deb http://mirror/debian bookworm-backports main\n\
             # deb https://vendor.example/repo bookworm stable # disabled on upgrade to trixie\n\
             deb http://mirror/debian sid main\n\
             deb file:/srv/pocket ./"
        );
        let actions: Vec<_> = changes.iter().map(|c| (c.line, c.action)).collect();
        assert_eq!(
            actions,
            [
                (2, Action::Upgrade),
                (3, Action::Upgrade),
                (6, Action::Disable)
            ]
        );
        // With --allow-third-party the vendor entry moves too.
        let mut r = rules(&debian_only);
        r.allow_third_party = true;
        let (out, _) = rewrite_list(text, &r);
        assert!(
            out.contains("deb https://vendor.example/repo trixie stable\n"),
            "{out}"
        );
    }

    #[test]
    fn deb822_files_are_edited_losslessly() {
        let text = "# Debian\nTypes: deb deb-src\nURIs: http://mirror/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                    Types: deb\nURIs: https://vendor.example/repo\nSuites: bookworm\nComponents: stable\n\n\
                    Types: deb\nURIs: http://mirror/debian\nSuites: sid\nComponents: main\n";
        let (out, changes) = rewrite_sources(text, &rules(&debian_only)).unwrap();
        assert_eq!(
            out,
            "# Debian\nTypes: deb deb-src\nURIs: http://mirror/debian\n\
             Suites: trixie trixie-updates\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
             # disabled on upgrade to trixie\nTypes: deb\nURIs: https://vendor.example/repo\nSuites: bookworm\nComponents: stable\nEnabled: no\n\n\
             Types: deb\nURIs: http://mirror/debian\nSuites: sid\nComponents: main\n"
        );
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1].line, 8);
    }

    #[test]
    fn ubuntu_conformance_sample_rewrites_as_expected() {
        let fill = |t: &str, dist: &str| {
            t.replace("{dist}", dist)
                .replace("{default_source_uri}", "http://archive.invalid/ubuntu")
                .replace("{security_source_uri}", "http://security.invalid/ubuntu")
        };
        let base = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/conformance/ubuntu-release-upgrader/deb822-test_sources_rewrite"
        );
        let input = std::fs::read_to_string(format!("{base}/in/ubuntu.sources")).unwrap();
        let expect = std::fs::read_to_string(format!("{base}/expect/ubuntu.sources")).unwrap();
        let all = |_: &SourceEntry| true;
        let r = Rules {
            from: "noble",
            to: "plucky",
            allow_third_party: false,
            is_distribution: &all,
        };
        let (out, changes) = rewrite_sources(&fill(&input, "noble"), &r).unwrap();
        assert_eq!(out, fill(&expect, "plucky"));
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn apt_list_names_match_apts() {
        assert_eq!(
            apt_list_name("http://mirror.example/debian/dists/bookworm/InRelease"),
            "mirror.example_debian_dists_bookworm_InRelease"
        );
        assert_eq!(
            apt_list_name("https://user:pw@deb.example/node_20.x/dists/nodistro/InRelease"),
            "deb.example_node%5f20.x_dists_nodistro_InRelease"
        );
    }

    #[test]
    fn files_are_backed_up_and_restored_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::root::SystemRoot::new(dir.path());
        let etc = root.path("/etc/apt/sources.list.d");
        std::fs::create_dir_all(&etc).unwrap();
        let list = "deb http://mirror/debian bookworm main\r\n# odd line ending kept\n";
        std::fs::write(root.path("/etc/apt/sources.list"), list).unwrap();
        std::fs::write(
            etc.join("vendor.list"),
            "deb https://vendor/repo bookworm main\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("ignored.list.save"),
            "deb http://mirror/debian bookworm main\n",
        )
        .unwrap();
        let plans = plan(&root, &rules(&debian_only)).unwrap();
        assert_eq!(plans.len(), 2);
        apply(&root, &plans).unwrap();
        assert!(
            std::fs::read_to_string(root.path("/etc/apt/sources.list"))
                .unwrap()
                .contains("trixie")
        );
        // Applying again (an interrupted run resumed) keeps the original backup.
        apply(&root, &plan(&root, &rules(&debian_only)).unwrap()).unwrap();
        let files: Vec<_> = plans.iter().map(|p| p.file.clone()).collect();
        assert_eq!(
            files.iter().map(RelPath::as_str).collect::<Vec<_>>(),
            ["etc/apt/sources.list", "etc/apt/sources.list.d/vendor.list"]
        );
        restore(&root, &files).unwrap();
        assert_eq!(
            std::fs::read(root.path("/etc/apt/sources.list")).unwrap(),
            list.as_bytes()
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("vendor.list")).unwrap(),
            "deb https://vendor/repo bookworm main\n"
        );
        assert!(!backup_path(&root.path("/etc/apt/sources.list")).exists());
        assert_eq!(
            std::fs::read_to_string(etc.join("ignored.list.save")).unwrap(),
            "deb http://mirror/debian bookworm main\n"
        );
    }

    /// The media vouch for a source apt stored no lists for only when the
    /// distribution's archive key signed them; a source whose stored Release does not
    /// verify stays third-party whatever the media say.
    #[test]
    fn sources_without_stored_lists_are_the_distributions_when_its_media_vouch() {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/check");
        let signed = std::fs::read(format!(
            "{fixture}/dists/trixie/main/dist-upgrader-amd64/current/InRelease"
        ))
        .unwrap();
        let forged = String::from_utf8(signed.clone())
            .unwrap()
            .replacen("Codename: trixie", "Codename: trixiE", 1)
            .into_bytes();
        assert_ne!(forged, signed);
        let dir = tempfile::tempdir().unwrap();
        let root = crate::root::SystemRoot::new(dir.path().join("root"));
        let keyrings = root.path("/usr/share/keyrings");
        let lists = root.path("/var/lib/apt/lists");
        std::fs::create_dir_all(&keyrings).unwrap();
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::copy(
            format!("{fixture}/keyring.gpg"),
            keyrings.join("demo-archive-keyring.gpg"),
        )
        .unwrap();
        let store = |uri: &str, bytes: &[u8]| {
            let name = apt_list_name(&format!("{uri}/dists/alpha/"));
            std::fs::write(lists.join(format!("{name}InRelease")), bytes).unwrap();
        };
        store("http://mirror.example/demo", &signed);
        store("https://vendor.example/repo", &forged);
        let media = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.join("dists/stable")).unwrap();
            std::fs::write(path.join("dists/stable/InRelease"), bytes).unwrap();
            path
        };
        let (good, bad) = (media("good", &signed), media("bad", &forged));
        let entry = |uri: &str| SourceEntry {
            types: vec!["deb".into()],
            uris: vec![uri.into()],
            suites: vec!["alpha".into()],
            signed_by: None,
        };
        let (stored, unknown, vendor) = (
            entry("http://mirror.example/demo"),
            entry("http://cdn.example/demo"),
            entry("https://vendor.example/repo"),
        );
        let check = |media: Option<&std::path::Path>| {
            DistributionCheck::new(&root, "demo")
                .unwrap()
                .with_media(media)
        };
        let plain = check(None);
        assert!(plain.is_distribution(&stored));
        assert!(
            !plain.is_distribution(&unknown),
            "no lists, no media: unknown"
        );
        assert!(!plain.is_distribution(&vendor));
        let vouched = check(Some(&good));
        assert!(vouched.media_vouches());
        assert!(vouched.is_distribution(&stored));
        assert!(vouched.is_distribution(&unknown));
        assert!(
            !vouched.is_distribution(&vendor),
            "its stored Release does not verify"
        );
        let mixed = SourceEntry {
            uris: vec![
                "http://cdn.example/demo".into(),
                "https://vendor.example/repo".into(),
            ],
            ..unknown.clone()
        };
        assert!(!vouched.is_distribution(&mixed));
        let forged_media = check(Some(&bad));
        assert!(!forged_media.media_vouches());
        assert!(!forged_media.is_distribution(&unknown));
        let signed_by = SourceEntry {
            signed_by: Some("/usr/share/keyrings/demo-archive-keyring.gpg".into()),
            ..unknown
        };
        assert!(forged_media.is_distribution(&signed_by));
    }

    #[test]
    fn disabled_deb822_stanzas_are_left_alone() {
        let text = "Types: deb\nURIs: https://vendor.example/repo\nSuites: bookworm\nComponents: x\nEnabled: no\n";
        let (out, changes) = rewrite_sources(text, &rules(&debian_only)).unwrap();
        assert_eq!(out, text);
        assert!(changes.is_empty());
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/sources_deb822.rs`): in a file without a
    /// final newline, the `Enabled: no` that disables the last stanza was glued to its
    /// last line (`Suites: bookwormEnabled: no`), so the repository stayed enabled, with a
    /// mangled suite. A file without a final newline is rewritten as if it had one, and
    /// given back as it was when nothing changes.
    #[test]
    fn the_last_stanza_of_a_file_without_a_final_newline_is_disabled_too() {
        let text = "Types: deb\nURIs: https://vendor.example/repo\nSuites: bookworm";
        let (out, changes) = rewrite_sources(text, &rules(&debian_only)).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].action, Action::Disable);
        assert!(out.contains("\nSuites: bookworm\nEnabled: no\n"), "{out}");
        let (again, more) = rewrite_sources(&out, &rules(&debian_only)).unwrap();
        assert!(more.is_empty(), "still enabled: {more:?}");
        assert_eq!(again, out);
        let untouched = "Types: deb\nURIs: http://mirror/debian\nSuites: sid";
        let (out, changes) = rewrite_sources(untouched, &rules(&debian_only)).unwrap();
        assert!(changes.is_empty());
        assert_eq!(out, untouched);
    }

    /// Found by fuzzing: a stanza with an empty `Enabled:` (apt reads it as enabled) was
    /// disabled as `Enabled: ` followed by a line `no`, which no parser reads (apt
    /// refuses the file). The field is written whole.
    #[test]
    fn an_empty_enabled_field_is_replaced_by_enabled_no() {
        let text = "Types: deb\nURIs: https://vendor.example/repo\nSuites: bookworm\nEnabled: \n\n";
        let (out, changes) = rewrite_sources(text, &rules(&debian_only)).unwrap();
        assert_eq!(changes.len(), 1);
        assert!(out.contains("\nEnabled: no\n"), "{out}");
        assert!(!out.lines().any(|l| l.trim() == "no"), "{out}");
        let (again, more) = rewrite_sources(&out, &rules(&debian_only)).unwrap();
        assert!(more.is_empty(), "still enabled: {more:?}");
        assert_eq!(again, out);
    }

    /// Found by fuzzing: with `Enabled` given twice, the second (empty) one was kept and
    /// rewritten as `Enabled: ` and a line `no`. A disabled stanza has one `Enabled: no`.
    #[test]
    fn a_stanza_with_several_enabled_fields_ends_with_one_enabled_no() {
        let text = "Types: deb\nURIs: https://vendor.example/repo\nSuites: bookworm\nEnabled:yes\nEnabled: \nenabled: yes\n";
        let (out, changes) = rewrite_sources(text, &rules(&debian_only)).unwrap();
        assert_eq!(changes.len(), 1);
        let parsed = deb822_lossless::Deb822::parse(&out);
        assert!(parsed.errors().is_empty(), "{out}");
        assert_eq!(
            out.to_ascii_lowercase().matches("enabled").count(),
            1,
            "{out}"
        );
        assert!(out.ends_with("\nEnabled: no\n"), "{out}");
        let (again, more) = rewrite_sources(&out, &rules(&debian_only)).unwrap();
        assert!(more.is_empty());
        assert_eq!(again, out);
    }

    /// A value that starts on a continuation line is replaced as one value.
    #[test]
    fn suites_written_on_continuation_lines_are_upgraded_in_place() {
        let text = "Types: deb\nURIs: http://mirror/debian\nSuites:\n bookworm\n bookworm-updates\nComponents: main\n";
        let (out, changes) = rewrite_sources(text, &rules(&debian_only)).unwrap();
        assert_eq!(changes.len(), 1, "{out}");
        let parsed = deb822_lossless::Deb822::parse(&out);
        assert!(parsed.errors().is_empty(), "{out}");
        let p = parsed.tree().paragraphs().next().unwrap();
        let suites: Vec<String> = p
            .get("Suites")
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(suites, ["trixie", "trixie-updates"], "{out}");
        assert_eq!(
            p.get("Components").as_deref().map(str::trim),
            Some("main"),
            "{out}"
        );
        let (again, more) = rewrite_sources(&out, &rules(&debian_only)).unwrap();
        assert!(more.is_empty());
        assert_eq!(again, out);
    }
}

/// The two formats apt reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One-line `deb uri suite components` (`sources.list`, `*.list`).
    List,
    /// deb822 stanzas (`*.sources`).
    Deb822,
}

/// A sources file that the upgrade changes.
#[derive(Clone, Debug, Serialize)]
pub struct FilePlan {
    pub path: std::path::PathBuf,
    /// The same file relative to the root: what the upgrade journal records.
    #[serde(skip)]
    pub file: RelPath,
    pub format: Format,
    #[serde(skip)]
    pub original: String,
    #[serde(skip)]
    pub rewritten: String,
    pub changes: Vec<Change>,
}

/// The suffix of the backup kept of every changed file (as Ubuntu's upgrader names it).
pub const BACKUP_SUFFIX: &str = ".distUpgrade";

/// The backup of `path`.
pub fn backup_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(BACKUP_SUFFIX);
    name.into()
}

/// The main sources file, relative to the root.
const MAIN_LIST: &str = "etc/apt/sources.list";
/// The directory of the other sources files, relative to the root.
const PARTS_DIR: &str = "etc/apt/sources.list.d";

/// The format of a file in `sources.list.d` by apt's rule (only these extensions, and no
/// hidden or odd names); `None` when apt ignores it.
fn part_format(name: &str) -> Option<Format> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !valid {
        None
    } else if name.ends_with(".list") {
        Some(Format::List)
    } else if name.ends_with(".sources") {
        Some(Format::Deb822)
    } else {
        None
    }
}

/// Whether `file` (relative to the root) is one the upgrade may rewrite, restore or
/// remove: `etc/apt/sources.list`, or a `*.list` or `*.sources` file apt reads in
/// `etc/apt/sources.list.d`. A state file naming anything else is not acted on.
pub fn is_sources_file(file: &RelPath) -> bool {
    match file.split_last() {
        (Some("etc/apt"), "sources.list") => true,
        (Some(PARTS_DIR), name) => part_format(name).is_some(),
        _ => false,
    }
}

/// The sources files apt reads on the system at `root`, in apt's order: each as seen
/// from here, relative to the root, and its format.
pub fn discover(
    root: &crate::root::SystemRoot,
) -> Result<Vec<(std::path::PathBuf, RelPath, Format)>, crate::Error> {
    let relative = |p: &str| RelPath::new(p).expect("a sources file name is a relative path");
    let mut files = Vec::new();
    let main = root.dir().join(MAIN_LIST);
    if main.is_file() {
        files.push((main, relative(MAIN_LIST), Format::List));
    }
    let dir = root.dir().join(PARTS_DIR);
    let mut parts: Vec<(std::path::PathBuf, RelPath, Format)> = match fs_err::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_owned();
                let format = part_format(&name)?;
                let file = relative(&format!("{PARTS_DIR}/{name}"));
                p.is_file().then_some((p, file, format))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(crate::Error::io(&dir, e)),
    };
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    files.extend(parts);
    Ok(files)
}

/// Computes the rewrite of every sources file (pure apart from reading them); only files
/// that change are returned.
pub fn plan(
    root: &crate::root::SystemRoot,
    rules: &Rules<'_>,
) -> Result<Vec<FilePlan>, crate::Error> {
    let mut plans = Vec::new();
    for (path, file, format) in discover(root)? {
        let original = fs_err::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
        let (rewritten, changes) = match format {
            Format::List => rewrite_list(&original, rules),
            Format::Deb822 => {
                rewrite_sources(&original, rules).map_err(|reason| crate::Error::Config {
                    path: path.clone(),
                    reason: format!("not a valid deb822 sources file: {reason}"),
                })?
            }
        };
        if rewritten != original {
            plans.push(FilePlan {
                path,
                file,
                format,
                original,
                rewritten,
                changes,
            });
        }
    }
    Ok(plans)
}

/// Writes the rewritten files, each after a durable backup of its original (an existing
/// backup, from an interrupted earlier attempt, is kept: it holds the true original).
/// Each is written through its directory opened from the root, never through a symlink.
pub fn apply(root: &crate::root::SystemRoot, plans: &[FilePlan]) -> Result<(), crate::Error> {
    for plan in plans {
        let (dir, name) = sources_dir(root, &plan.file)?.ok_or_else(|| crate::Error::Refused {
            path: plan.path.clone(),
            reason: "its directory is gone".into(),
        })?;
        let backup = RelPath::new(format!("{name}{BACKUP_SUFFIX}")).expect("a plain name");
        if dir.kind(&backup)?.is_none() {
            dir.write_atomic(&backup, plan.original.as_bytes())?;
        }
        crate::crashpoint::reached("sources backed up");
        dir.write_atomic(&name, plan.rewritten.as_bytes())?;
        crate::crashpoint::reached("sources rewritten");
    }
    Ok(())
}

/// The directory of a sources file, opened from the root (`None` when it does not
/// exist), and the file's name in it. Only the files [`is_sources_file`] accepts.
fn sources_dir(
    root: &crate::root::SystemRoot,
    file: &RelPath,
) -> Result<Option<(Tree, RelPath)>, crate::Error> {
    let refused = |reason: &str| crate::Error::Refused {
        path: root.dir().join(file.as_path()),
        reason: reason.to_owned(),
    };
    if !is_sources_file(file) {
        return Err(refused("it is not a sources file release-upgrader changes"));
    }
    let (Some(dir), name) = file.split_last() else {
        return Err(refused("it has no directory"));
    };
    let (dir, name) = match (RelPath::new(dir), RelPath::new(name)) {
        (Ok(dir), Ok(name)) => (dir, name),
        _ => return Err(refused("it is not a path below the root")),
    };
    Ok(root
        .open_dir(std::path::Path::new("/").join(dir.as_path()))?
        .map(|tree| (tree, name)))
}

/// Puts the originals of `files` (relative to the root) back, byte for byte, from their
/// backups: each a rename inside the file's directory, opened from the root without
/// following a symlink.
pub fn restore(root: &crate::root::SystemRoot, files: &[RelPath]) -> Result<(), crate::Error> {
    for file in files {
        let Some((dir, name)) = sources_dir(root, file)? else {
            continue;
        };
        let backup =
            RelPath::new(format!("{name}{BACKUP_SUFFIX}")).map_err(|e| crate::Error::Refused {
                path: dir.display(&name),
                reason: e.to_string(),
            })?;
        match dir.kind(&backup)? {
            None => {}
            Some(Kind::File) => {
                dir.rename(&backup, &name)?;
                dir.sync()?;
            }
            Some(_) => {
                return Err(crate::Error::Refused {
                    path: dir.display(&backup),
                    reason: "the backup is not a plain file".into(),
                });
            }
        }
    }
    Ok(())
}

/// Removes a sources file the upgrade added (the media's), through its directory opened
/// from the root.
pub fn remove_added(root: &crate::root::SystemRoot, file: &RelPath) -> Result<(), crate::Error> {
    if let Some((dir, name)) = sources_dir(root, file)?
        && dir.remove_file(&name)?
    {
        dir.sync()?;
    }
    Ok(())
}

/// The enabled entries of every sources file at `root`, in apt's order.
pub fn entries(root: &crate::root::SystemRoot) -> Result<Vec<SourceEntry>, crate::Error> {
    let mut out = Vec::new();
    for (path, _, format) in discover(root)? {
        let text = fs_err::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
        match format {
            Format::List => out.extend(text.lines().filter_map(|l| Some(parse_line(l)?.entry))),
            Format::Deb822 => {
                let parsed = deb822_lossless::Deb822::parse(&text);
                for paragraph in parsed.tree().paragraphs() {
                    let words = |key: &str| -> Vec<String> {
                        paragraph
                            .get(key)
                            .map(|v| v.split_whitespace().map(str::to_owned).collect())
                            .unwrap_or_default()
                    };
                    let enabled = paragraph
                        .get("Enabled")
                        .is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
                    let entry = SourceEntry {
                        types: words("Types"),
                        uris: words("URIs"),
                        suites: words("Suites"),
                        signed_by: paragraph.get("Signed-By").map(|v| v.trim().to_owned()),
                    };
                    if enabled && !entry.suites.is_empty() && !entry.uris.is_empty() {
                        out.push(entry);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// apt's file name for a URI in `/var/lib/apt/lists` (`URItoFileName`): no scheme or
/// credentials, `_ ~ %`, blanks and non-ASCII quoted as `%xx`, then `/` → `_`.
pub fn apt_list_name(uri: &str) -> String {
    let without_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let without_user = match without_scheme.split_once('/') {
        Some((host, rest)) => {
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            format!("{host}/{rest}")
        }
        None => without_scheme
            .rsplit_once('@')
            .map_or(without_scheme, |(_, h)| h)
            .to_owned(),
    };
    let mut out = String::new();
    for b in without_user.bytes() {
        match b {
            b'/' => out.push('_'),
            b' ' | b'_' | b'~' | b'%' | 0..=0x20 | 0x7f..=0xff => {
                out.push_str(&format!("%{b:02x}"))
            }
            _ => out.push(b as char),
        }
    }
    out
}

/// Tells the distribution's own archive from other repositories without a list of
/// mirror host names: an entry is the distribution's when its `Signed-By` is the
/// distribution's archive keyring, or when the Release file apt downloaded for it
/// (`/var/lib/apt/lists`) verifies with that keyring. Any mirror of the archive passes;
/// a vendor repository that reuses the codename does not.
///
/// An entry apt stored no Release for (a system that never reached its mirror, lists
/// cleaned) proves nothing either way. When upgrade media serve the upgrade and their
/// `Release` verifies with the archive keyring, the distribution itself vouches for the
/// upgrade, and such an entry is taken for the distribution's: moved to the target, never
/// disabled for want of stored lists (which would leave the upgraded system with no
/// source). An entry whose stored Release another key signed stays third-party.
pub struct DistributionCheck {
    lists: std::path::PathBuf,
    keyring_files: Vec<std::path::PathBuf>,
    keyring: crate::openpgp::Keyring,
    verdicts: std::sync::Mutex<std::collections::HashMap<(String, String), Verdict>>,
    /// Upgrade media whose `Release` the archive keyring signed.
    media: Option<std::path::PathBuf>,
}

/// What the Release apt stored for one URI and suite says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// It verifies with the distribution's archive keyring.
    Distribution,
    /// It does not.
    Other,
    /// None is stored.
    Unknown,
}

impl DistributionCheck {
    /// For the system at `root`, whose `os-release` `ID` is `os_id` (`debian`, `ubuntu`).
    pub fn new(root: &crate::root::SystemRoot, os_id: &str) -> Result<Self, crate::Error> {
        let keyring_file = root.path(format!("/usr/share/keyrings/{os_id}-archive-keyring.gpg"));
        if !keyring_file.is_file() {
            return Err(crate::Error::Keyring {
                path: keyring_file,
                reason: "missing, so the distribution's archive cannot be told from other \
                         repositories (install the archive keyring, or pass --allow-third-party)"
                    .into(),
            });
        }
        let keyring = crate::openpgp::Keyring::load(std::slice::from_ref(&keyring_file))?;
        Ok(DistributionCheck {
            lists: root.path("/var/lib/apt/lists"),
            keyring_files: vec![
                keyring_file,
                std::path::PathBuf::from(format!(
                    "/usr/share/keyrings/{os_id}-archive-keyring.gpg"
                )),
            ],
            keyring,
            verdicts: Default::default(),
            media: None,
        })
    }

    /// With the upgrade media at `media` (their `dists/stable/`), when the archive
    /// keyring verifies their `InRelease` (or `Release` + `Release.gpg`); media signed by
    /// any other key change nothing.
    pub fn with_media(mut self, media: Option<&std::path::Path>) -> Self {
        self.media = media
            .filter(|media| {
                let dir = media.join("dists/stable");
                let vouches = verifies_release_in(&self.keyring, &dir, "");
                if !vouches {
                    log::info!(
                        "{}: not signed by the distribution's archive key; sources without \
                         stored lists are not taken for the distribution's",
                        dir.display()
                    );
                }
                vouches
            })
            .map(std::path::Path::to_owned);
        self
    }

    /// Whether upgrade media signed by the distribution's archive key vouch for entries
    /// apt stored no lists for.
    pub fn media_vouches(&self) -> bool {
        self.media.is_some()
    }

    /// Whether every URI of `entry` is the distribution's archive.
    pub fn is_distribution(&self, entry: &SourceEntry) -> bool {
        if let Some(signed_by) = &entry.signed_by {
            let signed_by = std::path::Path::new(signed_by.trim());
            if self.keyring_files.iter().any(|k| k == signed_by) {
                return true;
            }
        }
        let Some(suite) = entry.suites.first() else {
            return false;
        };
        if entry.uris.is_empty() {
            return false;
        }
        let verdicts: Vec<Verdict> = entry
            .uris
            .iter()
            .map(|uri| self.verdict(uri, suite))
            .collect();
        if verdicts.contains(&Verdict::Other) {
            return false;
        }
        verdicts.iter().all(|v| *v == Verdict::Distribution) || self.media_vouches()
    }

    fn verdict(&self, uri: &str, suite: &str) -> Verdict {
        let key = (uri.to_owned(), suite.to_owned());
        if let Some(v) = self.verdicts.lock().expect("verdicts").get(&key) {
            return *v;
        }
        let base = format!("{}/dists/{suite}/", uri.trim_end_matches('/'));
        let name = apt_list_name(&base);
        let stored = ["InRelease", "Release"]
            .iter()
            .any(|file| self.lists.join(format!("{name}{file}")).is_file());
        let verdict = if !stored {
            Verdict::Unknown
        } else if verifies_release_in(&self.keyring, &self.lists, &name) {
            Verdict::Distribution
        } else {
            Verdict::Other
        };
        self.verdicts.lock().expect("verdicts").insert(key, verdict);
        verdict
    }
}

/// Whether `dir/<prefix>InRelease` (else `<prefix>Release` with `<prefix>Release.gpg`)
/// verifies with `keyring`.
fn verifies_release_in(
    keyring: &crate::openpgp::Keyring,
    dir: &std::path::Path,
    prefix: &str,
) -> bool {
    let inrelease = dir.join(format!("{prefix}InRelease"));
    if let Ok(bytes) = std::fs::read(&inrelease) {
        return crate::openpgp::verify_clearsigned(
            keyring,
            &bytes,
            &inrelease.display().to_string(),
        )
        .is_ok();
    }
    let release = std::fs::read(dir.join(format!("{prefix}Release")));
    let signature = std::fs::read(dir.join(format!("{prefix}Release.gpg")));
    match (release, signature) {
        (Ok(release), Ok(signature)) => {
            let what = dir.join(format!("{prefix}Release")).display().to_string();
            crate::openpgp::verify_detached(keyring, release, &signature, &what).is_ok()
        }
        _ => false,
    }
}
