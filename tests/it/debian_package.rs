//! The Debian packages, as users get them: `scripts/package` builds them (CI runs it
//! before the heavy tier), and these tests install them into debootstrapped roots — a
//! Debian 12 root that the installed `/usr/bin/release-upgrader` then upgrades to Debian
//! 13 for real, a Debian 12 root purged back to what it was (what piuparts checks), and a
//! Debian 11 root, the oldest release the static client starts on.
//!
//! Heavy, so ignored by the default `cargo test`; CI runs them with `--ignored`. The
//! packages are read from `RELEASE_UPGRADER_DEBS` (default: target/debian).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::debian_root::{TestDir, in_root, minbase_tarball, unpack};
use crate::debian_upgrade::{
    assert_upgraded, fresh_root, published, serve, the_mirror, transcript, upgrade_in_chroot,
};

/// The directory holding the built packages.
fn debs() -> PathBuf {
    let dir = std::env::var_os("RELEASE_UPGRADER_DEBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian"));
    assert!(
        deb(&dir, "release-upgrader").is_some(),
        "no release-upgrader_*.deb in {}: build the packages first with scripts/package \
         (or point RELEASE_UPGRADER_DEBS at them)",
        dir.display()
    );
    dir
}

/// The newest `NAME_*.deb` in `dir`.
fn deb(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Copies the client package into the root's /tmp; returns its path inside the root.
fn put_package(root: &Path) -> String {
    let deb = deb(&debs(), "release-upgrader").unwrap();
    let name = deb.file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::copy(&deb, root.join("tmp").join(&name)).unwrap();
    format!("/tmp/{name}")
}

/// Copies the signed fixture (tests/fixtures/check) into the root's /tmp/src, where the
/// relative paths its meta-release names resolve.
fn put_fixture(root: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check");
    let into = root.join("tmp/src/tests/fixtures");
    std::fs::create_dir_all(&into).unwrap();
    crate::support::copy_tree(&fixture, &into.join("check"));
}

/// Runs `script` with `sh -euc` inside the root; panics with its output when it fails.
fn sh(root: &Path, script: &str) -> String {
    let (ok, out) = in_root(root, &["sh", "-euc", script]);
    assert!(ok, "in the root: {script}\n{out}");
    out
}

/// Every path in the root, but the ones any package operation changes (dpkg's and apt's
/// own records, caches, logs) and the kernel's file systems: what piuparts compares.
fn files(root: &Path) -> BTreeSet<String> {
    const IGNORED: [&str; 10] = [
        "proc",
        "sys",
        "dev",
        "tmp",
        "var/lib/dpkg",
        "var/lib/apt",
        "var/cache",
        "var/log/dpkg.log",
        "var/log/apt",
        "var/log/alternatives.log",
    ];
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if IGNORED
                .iter()
                .any(|i| rel == *i || rel.starts_with(&format!("{i}/")))
            {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                todo.push(path);
            }
            out.insert(rel);
        }
    }
    out
}

/// The Debian 12 root (with systemd, man-db and bash-completion, as a real one has them)
/// with the package installed by apt from its file, the way the README says; then its man page, bash completion, units and login notice; then the real
/// upgrade to Debian 13 by the installed /usr/bin/release-upgrader, which must still be
/// there, and working, afterwards (Debian 13 does not carry it: never removed as obsolete).
#[test]
#[ignore = "heavy: installs the built package into Debian 12 and upgrades to 13; CI runs it with --ignored"]
fn the_installed_package_upgrades_debian_12_to_13_and_stays() {
    let dir = TestDir::new();
    let root = fresh_root(dir.path());
    let deb = put_package(&root);
    sh(
        &root,
        &format!(
            "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; \
             apt-get install -y -qq --no-install-recommends man-db bash-completion systemd; \
             apt-get install -y -qq --no-install-recommends {deb}"
        ),
    );
    let version = sh(&root, "release-upgrader --version");
    assert_eq!(
        version.trim(),
        format!("release-upgrader {}", env!("CARGO_PKG_VERSION"))
    );

    // The man page renders, groff says nothing, and it is the upgrade command's.
    let page = sh(
        &root,
        "MANWIDTH=80 man --warnings -P cat release-upgrader-upgrade 2>&1",
    );
    assert!(
        page.contains("release-upgrader-upgrade") && page.contains("--dry-run"),
        "{page}"
    );
    assert!(!page.contains("warning"), "{page}");
    let top = sh(
        &root,
        "MANWIDTH=80 man --warnings -P cat release-upgrader 2>&1",
    );
    assert!(
        top.contains("SUBCOMMANDS") && top.contains("release-upgrader-upgrade(1)"),
        "{top}"
    );
    assert!(!top.contains("warning"), "{top}");
    // bash completes `release-upgrader up<TAB>` from the installed completion, loaded on
    // demand by bash-completion as in an interactive shell.
    let completed = sh(
        &root,
        r#"bash --norc -c '. /usr/share/bash-completion/bash_completion
_completion_loader release-upgrader
f=$(complete -p release-upgrader | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
COMP_WORDS=(release-upgrader up); COMP_CWORD=1; COMP_LINE="release-upgrader up"; COMP_POINT=19
"$f" release-upgrader up release-upgrader
echo "${COMPREPLY[@]}"'"#,
    );
    assert_eq!(completed.trim(), "upgrade");
    // The units are where systemd reads them and pass the root's own systemd's check
    // (the ExecStart binary exists, the Documentation man page opens, the syntax holds).
    let said = sh(
        &root,
        "systemd-analyze verify /lib/systemd/system/release-upgrader-check.service \
         /lib/systemd/system/release-upgrader-check.timer \
         /lib/systemd/system/release-upgrader-image-recover.service 2>&1",
    );
    assert!(
        !said.contains("release-upgrader-check") && !said.contains("release-upgrader-image"),
        "systemd-analyze verify complains about the units:\n{said}"
    );
    // The desktop user's units, as the user's systemd reads them (dh_installsystemduser
    // enables the timer for every user's graphical session).
    let said = sh(
        &root,
        "XDG_RUNTIME_DIR=$(mktemp -d) systemd-analyze --user verify \
         /usr/lib/systemd/user/release-upgrader-notify.service \
         /usr/lib/systemd/user/release-upgrader-notify.timer 2>&1",
    );
    assert!(
        !said.contains("release-upgrader-notify"),
        "systemd-analyze --user verify complains about the user units:\n{said}"
    );
    let wanted =
        root.join("etc/systemd/user/graphical-session.target.wants/release-upgrader-notify.timer");
    assert_eq!(
        std::fs::read_link(&wanted).unwrap(),
        Path::new("/usr/lib/systemd/user/release-upgrader-notify.timer")
    );
    assert!(
        root.join("etc/xdg/autostart/release-upgrader-notify.desktop")
            .exists()
    );
    // The check timer is enabled by the package; the service is run by it only.
    let wanted = root.join("etc/systemd/system/timers.target.wants/release-upgrader-check.timer");
    assert_eq!(
        std::fs::read_link(&wanted).unwrap(),
        Path::new("/lib/systemd/system/release-upgrader-check.timer")
    );
    // The boot-time finisher of a staged image opt-out is enabled (it runs only when one
    // is under way).
    let wanted = root
        .join("etc/systemd/system/multi-user.target.wants/release-upgrader-image-recover.service");
    assert_eq!(
        std::fs::read_link(&wanted).unwrap(),
        Path::new("/lib/systemd/system/release-upgrader-image-recover.service")
    );

    // The login notice: nothing before a check, the new release after one.
    let upgrade = serve(&dir.path().join("srv"));
    let trusted = root.join("etc/release-upgrader/trusted.gpg.d");
    std::fs::copy(&published().keyring, trusted.join("test-publisher.gpg")).unwrap();
    let motd = "/etc/update-motd.d/91-release-upgrader";
    assert_eq!(sh(&root, motd), "");
    sh(
        &root,
        &format!(
            "release-upgrader --meta-release-uri {} check --motd",
            upgrade.url
        ),
    );
    assert_eq!(
        sh(&root, motd),
        "\nNew release '13' (trixie) available.\nRun 'release-upgrader upgrade' to upgrade to it.\n"
    );

    // The upgrade, by the installed package.
    let out = upgrade_in_chroot(&root, "/usr/bin/release-upgrader", &upgrade.url);
    let text = transcript(&out);
    assert!(
        out.status.success(),
        "the installed upgrader failed:\n{text}"
    );
    assert_upgraded(&root, &text);
    let status = sh(
        &root,
        "dpkg-query -W -f '${Status} ${Version}' release-upgrader",
    );
    assert_eq!(
        status,
        format!("install ok installed {}", env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    assert!(sh(&root, "release-upgrader --version").starts_with("release-upgrader "));
    assert_eq!(sh(&root, motd), "", "the notice goes with the upgrade");

    // Purged on Debian 13: the state and logs go, the administrator's keyring stays.
    sh(
        &root,
        "DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq release-upgrader",
    );
    for gone in [
        "var/lib/release-upgrader",
        "var/log/dist-upgrade",
        "usr/bin/release-upgrader",
        "lib/systemd/system/release-upgrader-check.timer",
        "etc/systemd/system/timers.target.wants/release-upgrader-check.timer",
        "etc/update-motd.d/91-release-upgrader",
    ] {
        assert!(
            root.join(gone).symlink_metadata().is_err(),
            "{gone} is left after the purge"
        );
    }
    assert!(trusted.join("test-publisher.gpg").exists());
}

/// piuparts' install → purge check, by hand in a Debian 12 root: after the package ran
/// (a check that wrote its state, a notice, an upgrade's logs) a purge leaves exactly the
/// files there were before. And a purge keeps the state and helpers of an upgrade that is
/// running or was interrupted, saying so.
#[test]
#[ignore = "heavy: installs and purges the built package in Debian 12; CI runs it with --ignored"]
fn purge_leaves_nothing_behind_but_keeps_an_interrupted_upgrade() {
    let dir = TestDir::new();
    let root = fresh_root(dir.path());
    let deb = put_package(&root);
    put_fixture(&root);
    let before = files(&root);

    sh(&root, &format!("dpkg -i {deb}"));
    let checked = sh(
        &root,
        "cd /tmp/src && release-upgrader --keyring tests/fixtures/check/keyring.gpg \
         --meta-release-uri tests/fixtures/check/meta-release check --motd",
    );
    assert!(checked.contains("New release '13' (trixie)"), "{checked}");
    assert!(
        root.join("var/lib/release-upgrader/release-upgrade-available")
            .exists()
    );
    sh(
        &root,
        "mkdir -p /var/log/dist-upgrade && echo run > /var/log/dist-upgrade/main.log",
    );
    sh(&root, "dpkg --purge release-upgrader");
    let after = files(&root);
    let left: Vec<_> = after.difference(&before).collect();
    let lost: Vec<_> = before.difference(&after).collect();
    assert!(
        left.is_empty() && lost.is_empty(),
        "left: {left:?}\nlost: {lost:?}"
    );

    // An interrupted upgrade: its journal and helpers stay, and the purge says why.
    sh(&root, &format!("dpkg -i {deb}"));
    sh(
        &root,
        "mkdir -p /var/lib/release-upgrader; echo '{}' > /var/lib/release-upgrader/upgrade.json; \
         mkdir -p /usr/lib/release-upgrader/bin /var/log/dist-upgrade; \
         echo x > /usr/lib/release-upgrader/bin/apt-get; echo run > /var/log/dist-upgrade/main.log",
    );
    let said = sh(&root, "dpkg --purge release-upgrader 2>&1");
    assert!(
        said.contains("an upgrade is running or was interrupted"),
        "{said}"
    );
    for kept in [
        "var/lib/release-upgrader/upgrade.json",
        "usr/lib/release-upgrader/bin/apt-get",
        "var/log/dist-upgrade/main.log",
    ] {
        assert!(root.join(kept).exists(), "{kept} was purged");
    }
    // A helper transaction in progress holds the state directory's lock: kept too.
    sh(&root, "rm /var/lib/release-upgrader/upgrade.json");
    sh(&root, &format!("dpkg -i {deb}"));
    let said = sh(
        &root,
        "flock /var/lib/release-upgrader dpkg --purge release-upgrader 2>&1",
    );
    assert!(said.contains("kept"), "{said}");
    assert!(root.join("usr/lib/release-upgrader/bin/apt-get").exists());
}

/// The static client installs and works on Debian 11, whose glibc (2.31) a Debian 12
/// glibc build cannot start on: `--version`, and the signed fixture's `check` and
/// `bootstrap --dry-run` (OpenPGP, the meta-release, the pocket and its indices).
#[test]
#[ignore = "heavy: debootstraps Debian 11 and installs the built package; CI runs it with --ignored"]
fn the_packaged_client_installs_and_runs_on_debian_11() {
    let dir = TestDir::new();
    let root = dir.path().join("root");
    unpack(&minbase_tarball("bullseye", &the_mirror()), &root);
    assert!(
        std::fs::read_to_string(root.join("etc/debian_version"))
            .unwrap()
            .starts_with("11."),
        "not a Debian 11 root"
    );
    let deb = put_package(&root);
    put_fixture(&root);
    sh(&root, &format!("dpkg -i {deb}"));
    assert!(sh(&root, "release-upgrader --version").starts_with("release-upgrader "));
    let run = |args: &str| {
        sh(
            &root,
            &format!(
                "cd /tmp/src && release-upgrader --root tests/fixtures/check/root \
                 --keyring tests/fixtures/check/keyring.gpg \
                 --meta-release-uri tests/fixtures/check/meta-release --arch amd64 {args} 2>&1"
            ),
        )
    };
    let checked = run("check");
    assert!(
        checked.contains("New release '13' (trixie) available."),
        "{checked}"
    );
    let planned = run("bootstrap --dry-run");
    assert!(planned.contains("release-upgrader-apt"), "{planned}");
}

/// `dpkg-deb ARGS DEB`'s output; panics when it fails.
fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = std::process::Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb");
    assert!(
        out.status.success(),
        "dpkg-deb {args:?} {}: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The window's package, read with dpkg-deb (not installed: into a Debian 12 minbase root
/// its GTK would bring about 170 packages, 92 MB to download): the binary, what the desktop finds it by, the
/// German catalogue in release-upgrader's gettext domain, and the dependencies
/// dh_shlibdeps computed for its dynamic build, beside the exact client version.
#[test]
#[ignore = "heavy tier: reads the packages scripts/package built; CI runs it with --ignored"]
fn the_gtk_package_carries_the_window_its_desktop_files_and_the_german_catalogue() {
    let dir = debs();
    let gtk = deb(&dir, "release-upgrader-gtk").expect("no release-upgrader-gtk_*.deb");
    let paths: BTreeSet<String> = dpkg_deb(&["-c"], &gtk)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect();
    for path in [
        "/usr/bin/release-upgrader-gtk",
        "/usr/share/applications/org.releaseupgrader.Gtk.desktop",
        "/usr/share/icons/hicolor/scalable/apps/org.releaseupgrader.Gtk.svg",
        "/usr/share/metainfo/org.releaseupgrader.Gtk.metainfo.xml",
        "/usr/share/locale/de/LC_MESSAGES/release-upgrader.mo",
        "/usr/share/man/man1/release-upgrader-gtk.1.gz",
    ] {
        assert!(
            paths.contains(path),
            "{path} not in {}: {paths:#?}",
            gtk.display()
        );
    }
    let field = |deb: &Path, name: &str| {
        dpkg_deb(&["-f"], deb)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let depends = field(&gtk, "Depends").unwrap_or_default();
    let client = deb(&dir, "release-upgrader").unwrap();
    let version = field(&client, "Version").unwrap();
    let names: Vec<&str> = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .collect();
    for name in ["libgtk-4-1", "libc6", "libglib2.0-0", "release-upgrader"] {
        assert!(names.contains(&name), "Depends lacks {name}: {depends}");
    }
    assert!(
        depends.contains(&format!("release-upgrader (= {version})")),
        "not the client's exact version {version}: {depends}"
    );
}
