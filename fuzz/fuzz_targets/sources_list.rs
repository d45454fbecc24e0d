//! One-line apt sources (`sources.list`, `*.list`) rewritten for the upgrade
//! (`upgrade::sources::rewrite_list`), bookworm → trixie; the first byte picks
//! `allow_third_party` and which entries count as the distribution's.
//!
//! Invariants: the edit is lossless (rules that match nothing give the text back
//! unchanged; lines keep their count); it is idempotent (a second pass changes nothing):
//! no entry for the old release is left enabled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_client::upgrade::sources::{Rules, rewrite_list};
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Some((mode, text)) = f::mode_and_text(data) else {
        return;
    };
    let is_distribution = f::distribution_rule(mode);
    let rules = f::upgrade_rules(mode, &is_distribution);
    // No suite matches a space: suites are whitespace-separated words.
    let nothing = Rules { from: " ", ..rules };
    let (same, changes) = rewrite_list(text, &nothing);
    assert!(changes.is_empty());
    assert_eq!(same, text, "a rewrite that matches nothing changed the text");

    let (out, changes) = rewrite_list(text, &rules);
    assert_eq!(out.matches('\n').count(), text.matches('\n').count());
    for change in &changes {
        assert!(change.line >= 1 && change.line <= text.split_inclusive('\n').count());
    }
    f::trace(&format!("{} changes", changes.len()));
    let (again, more) = rewrite_list(&out, &rules);
    assert!(more.is_empty(), "a second pass changes {more:?}\nafter the first:\n{out}");
    assert_eq!(again, out);
});
