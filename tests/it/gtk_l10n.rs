//! `release-upgrader-gtk` in German: the catalogues of `crates/gtk/po`, compiled by msgfmt
//! the way debian/rules compiles them and found through `RELEASE_UPGRADER_LOCALEDIR`, turn
//! the window's start page German under `LANGUAGE=de` with the C.UTF-8 locale (glibc
//! ignores LANGUAGE only under the plain C locale), against the real service on a private
//! bus as in tests/it/gtk.rs, whose harness this reuses. The German strings are those of
//! `crates/gtk/po/de.po`; the screenshots land in `target/gtk-screenshots-de/` for a
//! person to check that the longer words fit.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::gtk::{Window, button, has_label, usable};
use crate::service_upgrade::Desktop;
use crate::support::BIN;
use crate::upgrade::World;

/// Compiles each language of `crates/gtk/po/LINGUAS` into
/// `dir/LANG/LC_MESSAGES/release-upgrader.mo`, the layout of /usr/share/locale.
fn compile_catalogues(dir: &Path) {
    let po = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/gtk/po");
    let linguas = std::fs::read_to_string(po.join("LINGUAS")).unwrap();
    let langs: Vec<&str> = linguas
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(langs.contains(&"de"), "{linguas}");
    for lang in langs {
        let into = dir.join(lang).join("LC_MESSAGES");
        std::fs::create_dir_all(&into).unwrap();
        let out = Command::new("msgfmt")
            .arg("--check")
            .arg("-o")
            .arg(into.join("release-upgrader.mo"))
            .arg(po.join(format!("{lang}.po")))
            .output()
            .expect("msgfmt (gettext, scripts/setup)");
        assert!(
            out.status.success(),
            "{lang}.po: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_window_speaks_german_under_language_de_with_the_compiled_catalogue() {
    let app = Path::new(BIN).with_file_name("release-upgrader-gtk");
    assert!(
        app.exists(),
        "{} is missing: build it: cargo build -p release-upgrader-gtk",
        app.display()
    );
    let locale = tempfile::tempdir().unwrap();
    compile_catalogues(locale.path());
    let d = Desktop::new(World::new());

    let dir = Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("gtk-screenshots-de");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = d.bus.env().to_vec();
    env.push(("LANGUAGE", "de"));
    let localedir = locale.path().to_str().unwrap();
    env.push(("RELEASE_UPGRADER_LOCALEDIR", localedir));
    let mut win = Window::start(&app, &dir, &env);
    let minute = Duration::from_secs(60);

    let start = win.wait("the German start page with alpha and beta", minute, |s| {
        s["page"] == "start" && has_label(s, "Version 2 (beta) ist verfügbar.")
    });
    for german in [
        "Auf eine neue Version aktualisieren",
        "Auf diesem Rechner läuft Demo Linux 1 (alpha).",
        "Version 2 (beta) ist verfügbar.",
        "Die Aktualisierung lädt die neue Version herunter und installiert sie über die \
         bisherige. Ihre Dateien und Einstellungen bleiben erhalten.",
        "Versionshinweise",
    ] {
        assert!(has_label(&start, german), "no label {german:?}: {start:#}");
    }
    for english in [
        "Upgrade to a new release",
        "This computer runs",
        "is available",
    ] {
        assert!(
            !has_label(&start, english),
            "still English: {english:?}: {start:#}"
        );
    }
    assert_eq!(
        button(&start, "upgrade").unwrap()["label"],
        "Aktualisieren",
        "{start:#}"
    );
    assert_eq!(
        button(&start, "close").unwrap()["label"],
        "Schließen",
        "{start:#}"
    );

    // The start page as drawn at its width (a person looks at the screenshot), then at a
    // phone's: the German words are longer, and the buttons must still fit the window.
    screenshot(&win, "-start.png", minute);
    win.send("resize 360");
    let narrow = win.wait("the German window at 360 px", minute, |s| {
        s["after"] == "resize-360"
    });
    assert!(
        usable(&narrow, "upgrade") && usable(&narrow, "close"),
        "{narrow:#}"
    );
    screenshot(&win, "-resize-360.png", minute);
}

/// Waits for the screenshot whose file name ends with `suffix`; checks it is a PNG.
fn screenshot(win: &Window, suffix: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let shot: Option<Value> = win.lines().into_iter().find(|l| {
            l["screenshot"]
                .as_str()
                .is_some_and(|s| s.ends_with(suffix))
        });
        if let Some(l) = shot {
            assert!(l["error"].is_null(), "{l}");
            let png = std::fs::read(l["screenshot"].as_str().unwrap()).unwrap();
            assert!(png.starts_with(b"\x89PNG") && png.len() > 1000, "{l}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no screenshot *{suffix} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
