//! The window's desktop integration as the package installs it (dist/, debian/rules): the
//! .desktop file and the AppStream metainfo pass their validators (desktop-file-utils and
//! appstream, scripts/setup), and they, the icon and the app agree on one name, the app id:
//! the shell matches a window to its .desktop file by it, and the file names the icon.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn dist() -> PathBuf {
    Path::new(ROOT).join("../../dist")
}

/// `APP_ID` of src/main.rs.
fn app_id() -> String {
    let main = std::fs::read_to_string(Path::new(ROOT).join("src/main.rs")).unwrap();
    let line = main
        .lines()
        .find(|l| l.starts_with("const APP_ID: &str = "))
        .expect("const APP_ID in src/main.rs");
    line.split('"').nth(1).unwrap().to_owned()
}

/// Runs a validator; it must succeed and say nothing (no warnings, no hints).
fn validate(program: &str, args: &[&str], file: &Path, package: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{program} ({package}, scripts/setup): {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {}: {said}", file.display());
    said
}

#[test]
fn the_desktop_file_is_valid_and_named_after_the_app_id_it_shares_with_the_icon() {
    let id = app_id();
    assert_eq!(id, "org.releaseupgrader.Gtk");
    let file = dist().join(format!("applications/{id}.desktop"));
    let said = validate("desktop-file-validate", &[], &file, "desktop-file-utils");
    assert_eq!(said, "", "desktop-file-validate {}", file.display());
    let text = std::fs::read_to_string(&file).unwrap();
    for line in [
        "Type=Application",
        "Exec=release-upgrader-gtk",
        &format!("Icon={id}"),
        "Terminal=false",
        "StartupNotify=true",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in {text}");
    }
    let icon = dist().join(format!("icons/hicolor/scalable/apps/{id}.svg"));
    let svg = std::fs::read_to_string(&icon).unwrap();
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg ") && svg.trim_end().ends_with("</svg>"),
        "{}",
        icon.display()
    );
    // The package installs exactly these.
    let install =
        std::fs::read_to_string(Path::new(ROOT).join("../../debian/release-upgrader-gtk.install"))
            .unwrap();
    for f in [
        format!("dist/applications/{id}.desktop usr/share/applications"),
        format!("dist/icons/hicolor/scalable/apps/{id}.svg usr/share/icons/hicolor/scalable/apps"),
        format!("dist/metainfo/{id}.metainfo.xml usr/share/metainfo"),
    ] {
        assert!(install.lines().any(|l| l == f), "{f:?} not in {install}");
    }
}

#[test]
fn the_metainfo_is_valid_and_launches_the_desktop_file_of_this_version() {
    let id = app_id();
    let file = dist().join(format!("metainfo/{id}.metainfo.xml"));
    let said = validate(
        "appstreamcli",
        &["validate", "--no-net", "--no-color"],
        &file,
        "appstream",
    );
    assert!(said.contains("Validation was successful"), "{said}");
    // Nothing but the success line: pedantic notes are not shown without --pedantic.
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    let text = std::fs::read_to_string(&file).unwrap();
    for piece in [
        format!("<id>{id}</id>"),
        format!("<launchable type=\"desktop-id\">{id}.desktop</launchable>"),
        "<binary>release-upgrader-gtk</binary>".to_owned(),
        // The newest release first: this one.
        format!(
            "<releases>\n    <release version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(text.contains(&piece), "no {piece:?} in {}", file.display());
    }
}
