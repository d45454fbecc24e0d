//! The app's own checks that need no display: the translation template is what the
//! sources say, every translatable string is in a file `po/POTFILES.in` names, and the
//! binary answers `--help`/`--version` (and refuses what it does not know) before any
//! GTK is touched. They also make `cargo test` build the binary the root package's
//! window test (tests/it/gtk.rs) drives.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const APP: &str = env!("CARGO_BIN_EXE_release-upgrader-gtk");

/// The template without the line that changes at each run.
fn pot_body(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("\"POT-Creation-Date:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_pot_lists_every_translatable_string() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.pot");
    let status = Command::new(Path::new(ROOT).join("po/update-pot"))
        .arg(&fresh)
        .status()
        .expect("xgettext (gettext, scripts/setup)");
    assert!(status.success());
    let fresh = std::fs::read_to_string(&fresh).unwrap();
    let shipped =
        std::fs::read_to_string(Path::new(ROOT).join("po/release-upgrader-gtk.pot")).unwrap();
    assert!(fresh.contains("msgid \"_Keep your version\""), "{fresh}");
    let (shipped, fresh) = (pot_body(&shipped), pot_body(&fresh));
    if let Some((line, (old, new))) = shipped
        .lines()
        .chain(std::iter::repeat(""))
        .zip(fresh.lines().chain(std::iter::repeat("")))
        .take(shipped.lines().count().max(fresh.lines().count()))
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!(
            "po/release-upgrader-gtk.pot is stale (line {}: {old:?}, now {new:?}): \
             run crates/gtk/po/update-pot",
            line + 1
        );
    }
}

#[test]
fn gettext_is_called_only_in_the_files_potfiles_names() {
    let listed: Vec<String> = std::fs::read_to_string(Path::new(ROOT).join("po/POTFILES.in"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    assert!(!listed.is_empty());
    let mut callers = Vec::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("src")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("gettext(") {
            callers.push(format!(
                "src/{}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    callers.sort();
    assert!(callers.contains(&"src/text.rs".to_owned()), "{callers:?}");
    for c in &callers {
        assert!(
            listed.contains(c),
            "{c} calls gettext but po/POTFILES.in does not name it"
        );
    }
}

#[test]
fn help_and_version_answer_without_a_display_and_unknown_arguments_are_refused() {
    let run = |arg: &str| {
        Command::new(APP)
            .arg(arg)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .unwrap()
    };
    let version = run("--version");
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("release-upgrader-gtk {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = run("--help");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("org.releaseupgrader.ReleaseUpgrader"));
    let bad = run("--root=/");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unexpected argument \"--root=/\""));
}
