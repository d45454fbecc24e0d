//! The meta-release list (`metarelease::MetaRelease::parse`) and the choice made from it
//! (`select`), for every listed codename.
//!
//! Invariants: a selected target is newer than the running release, not the same
//! codename, and supported unless unsupported ones were asked for; releases whose values
//! are single lines round-trip through the publisher's writer
//! (`publish::metarelease::render`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_client::metarelease::{MetaRelease, ReleaseEntry, Selection};
use ru_publish::metarelease::{Stanza, render};
use release_upgrader_fuzz as f;

fn stanza(r: &ReleaseEntry) -> Stanza {
    let mut s = Stanza::default()
        .field("Dist", &r.dist)
        .field("Version", &r.version)
        .field("Date", &r.date)
        .field("Supported", if r.supported { "1" } else { "0" })
        .field("UpgradeToolPackages", r.upgrade_tool_packages.join(", "));
    for (name, value) in [
        ("Name", &r.name),
        ("Description", &r.description),
        ("Release-File", &r.release_file),
        ("ReleaseNotes", &r.release_notes),
        ("ReleaseNotesHtml", &r.release_notes_html),
        ("UpgradeTool", &r.upgrade_tool),
        ("UpgradeToolSignature", &r.upgrade_tool_signature),
        ("UpgradeBroken", &r.upgrade_broken),
        ("UpgradeToolBaseURI", &r.upgrade_tool_base_uri),
    ] {
        if let Some(v) = value {
            s = s.field(name, v);
        }
    }
    s
}

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(meta) = MetaRelease::parse(text) else {
        return;
    };
    for current in &meta.releases {
        for unsupported in [false, true] {
            match meta.select(&current.dist, unsupported) {
                Selection::NotListed => panic!("{} is listed", current.dist),
                Selection::UpToDate { current: c } => assert_eq!(c.dist, current.dist),
                Selection::Available { current: c, target } => {
                    assert_eq!(c.dist, current.dist);
                    assert_ne!(target.dist, c.dist);
                    assert!(target.timestamp > c.timestamp);
                    assert!(target.supported || unsupported);
                }
            }
        }
    }
    let single_line = meta.releases.iter().all(|r| {
        let s = stanza(r);
        s.fields
            .iter()
            .all(|(_, v)| !v.contains(['\n', '\r']) && !v.is_empty() && v.trim() == v)
            && r.upgrade_tool_packages.iter().all(|p| !p.contains(','))
    });
    f::trace(&format!("{} releases, round trip: {single_line}", meta.releases.len()));
    if single_line && !meta.releases.is_empty() {
        let stanzas: Vec<Stanza> = meta.releases.iter().map(stanza).collect();
        let written = render(&stanzas);
        let again = MetaRelease::parse(&written)
            .unwrap_or_else(|e| panic!("the rendered meta-release does not parse: {e}"));
        assert_eq!(again.releases, meta.releases, "meta-release does not round-trip:\n{written}");
    }
});
