//! deb822 apt sources (`*.sources`) rewritten for the upgrade
//! (`upgrade::sources::rewrite_sources`), bookworm → trixie; the first byte picks
//! `allow_third_party` and which entries count as the distribution's.
//!
//! Invariants: the edit is lossless (rules that match nothing give the text back
//! unchanged); what it writes parses again; it is idempotent (a second pass changes
//! nothing): no entry for the old release is left enabled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_client::upgrade::sources::{Rules, rewrite_sources};
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Some((mode, text)) = f::mode_and_text(data) else {
        return;
    };
    let is_distribution = f::distribution_rule(mode);
    let rules = f::upgrade_rules(mode, &is_distribution);
    // No suite matches a space: suites are whitespace-separated words.
    let nothing = Rules { from: " ", ..rules };
    let Ok((same, changes)) = rewrite_sources(text, &nothing) else {
        return;
    };
    assert!(changes.is_empty());
    assert_eq!(same, text, "a rewrite that matches nothing changed the text");

    let (out, changes) = rewrite_sources(text, &rules).expect("parsed once, parses again");
    f::trace(&format!("{} changes", changes.len()));
    let (again, more) = rewrite_sources(&out, &rules)
        .unwrap_or_else(|e| panic!("the rewritten sources do not parse: {e}\n{out}"));
    assert!(
        more.is_empty(),
        "a second pass changes {more:?}\nafter the first ({changes:?}):\n{out}"
    );
    assert_eq!(again, out);
});
