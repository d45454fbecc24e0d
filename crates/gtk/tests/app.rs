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

/// The entries of a catalogue (after `msgcat --no-wrap`: one line a string), as
/// (msgid, msgstr, fuzzy); the header is left out.
fn po_entries(path: &Path) -> Vec<(String, String, bool)> {
    let out = Command::new("msgcat")
        .arg("--no-wrap")
        .arg(path)
        .output()
        .expect("msgcat (gettext, scripts/setup)");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let unquote = |s: &str| -> String {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s} in {}", path.display()))
    };
    let mut entries = Vec::new();
    let (mut fuzzy, mut id) = (false, None);
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        if line.starts_with("#,") && line.contains("fuzzy") {
            fuzzy = true;
        } else if let Some(s) = line.strip_prefix("msgid ") {
            id = Some(unquote(s));
        } else if let Some(s) = line
            .strip_prefix("msgstr ")
            .or_else(|| line.strip_prefix("msgstr[0] "))
        {
            let id = id.take().expect("msgstr without msgid");
            if !id.is_empty() {
                entries.push((id, unquote(s), fuzzy));
            }
            fuzzy = false;
        }
    }
    entries
}

/// The `{name}` placeholders of a string, sorted.
fn placeholders(s: &str) -> Vec<&str> {
    let mut out: Vec<&str> = s
        .match_indices('{')
        .filter_map(|(i, _)| s[i..].find('}').map(|j| &s[i..=i + j]))
        .collect();
    out.sort();
    out
}

#[test]
fn every_translation_compiles_and_translates_every_string_of_the_template() {
    let po = Path::new(ROOT).join("po");
    let linguas: Vec<String> = std::fs::read_to_string(po.join("LINGUAS"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(&po)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".po").map(str::to_owned)
        })
        .collect();
    files.sort();
    let mut listed = linguas.clone();
    listed.sort();
    assert_eq!(listed, files, "po/LINGUAS must name every po/*.po");
    assert!(files.contains(&"de".to_owned()));

    let template: Vec<String> = po_entries(&po.join("release-upgrader-gtk.pot"))
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert!(template.len() > 20, "{template:?}");
    let dir = tempfile::tempdir().unwrap();
    for lang in &linguas {
        let file = po.join(format!("{lang}.po"));
        let out = Command::new("msgfmt")
            .arg("--check")
            .arg("-o")
            .arg(dir.path().join(format!("{lang}.mo")))
            .arg(&file)
            .output()
            .expect("msgfmt (gettext, scripts/setup)");
        assert!(
            out.status.success(),
            "msgfmt --check {lang}.po: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let entries = po_entries(&file);
        let mut problems = Vec::new();
        for id in &template {
            match entries.iter().find(|(i, _, _)| i == id) {
                None => problems.push(format!("missing: {id:?}")),
                Some((_, _, true)) => problems.push(format!("fuzzy: {id:?}")),
                Some((_, s, _)) if s.is_empty() => problems.push(format!("untranslated: {id:?}")),
                Some((_, s, _)) if placeholders(s) != placeholders(id) => {
                    problems.push(format!("placeholders differ: {id:?} -> {s:?}"))
                }
                Some((_, s, _)) if id.contains('_') && s.matches('_').count() != 1 => {
                    problems.push(format!("no single mnemonic: {id:?} -> {s:?}"))
                }
                Some(_) => {}
            }
        }
        assert!(
            problems.is_empty(),
            "po/{lang}.po against po/release-upgrader-gtk.pot (msgmerge --update po/{lang}.po \
             po/release-upgrader-gtk.pot, then translate):\n{}",
            problems.join("\n")
        );
    }
}
