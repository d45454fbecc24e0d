//! Our own state files, read back by a later run, never lead it outside the root (issue
//! 11, findings 3, 5 and 6): a helper journal, an upgrade journal or a manifest naming
//! paths elsewhere is refused with exit 2 before anything is removed or renamed; a copy
//! of a crashed root recovers itself and leaves the original alone; a symlink or a mount
//! where the helpers keep their trees is refused, not followed.
//!
//! A temp directory outside the root stands in for the host (`fake_host`); every test
//! checks it byte for byte afterwards.

use std::path::Path;
use std::process::Command;

use crate::support::{BIN, Fixture, copy_tree, fake_host, snapshot, test_helpers};

fn fixture() -> Fixture {
    let f = Fixture::new();
    f.publish_test_helpers(&test_helpers("3.0.3"));
    f
}

/// A helper journal as the current main writes one, naming `staging` and `manifests`.
fn helper_journal(phase: &str, staging: &Path, manifests: &Path) -> String {
    serde_json::json!({
        "operation": "install",
        "phase": phase,
        "packages": ["release-upgrader-apt"],
        "staging": staging,
        "new_manifests": manifests,
        "old_manifests": manifests.with_extension("old"),
        "new_inode": null,
        "pid": 1,
    })
    .to_string()
}

fn write_state(root: &Path, name: &str, text: &str) {
    let state = root.join("var/lib/release-upgrader");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join(name), text).unwrap();
}

// --- finding 3: the helper journal ---

#[test]
fn a_helper_journal_naming_the_host_is_refused_by_cleanup_and_bootstrap() {
    for args in [&["cleanup"][..], &["bootstrap", "--no-reexec"][..]] {
        let f = fixture();
        let host = fake_host(f.dir.path());
        let journal = helper_journal("staging", &host.join("var"), &host.join("etc"));
        write_state(&f.root, "journal.json", &journal);
        let before = snapshot(&host);
        let run = f.run(args);
        assert_eq!(snapshot(&host), before, "{args:?} changed the host");
        run.expect(2).mentions(&["journal.json"]);
        assert!(
            f.state().join("journal.json").exists(),
            "{args:?}: the journal was acted on"
        );
        assert!(
            !f.prefix().exists(),
            "{args:?} installed despite the journal"
        );
    }
}

#[test]
fn a_helper_journal_naming_the_host_is_refused_by_upgrade() {
    let w = crate::upgrade::World::new();
    let host = fake_host(w.root.parent().unwrap());
    let journal = helper_journal("staging", &host.join("var"), &host.join("etc"));
    write_state(&w.root, "journal.json", &journal);
    let before = snapshot(&host);
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    assert_eq!(snapshot(&host), before, "upgrade changed the host");
    run.expect(2).mentions(&["journal.json"]);
    assert!(w.read("/etc/os-release").contains("alpha"));
}

/// Kills `bootstrap --no-reexec` at crash point `at` (a `LABEL:N`).
fn crash_install(f: &Fixture, at: &str) {
    let run = f.run_with(
        &["bootstrap", "--no-reexec"],
        &[("RELEASE_UPGRADER_CRASH_AT", at)],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&run.0.status),
        Some(9),
        "not killed at {at}: {}",
        run.stderr()
    );
}

#[test]
fn a_copy_of_a_crashed_root_recovers_itself_and_leaves_the_original_alone() {
    // A fresh install killed once its staging tree is complete: the copy rolls back.
    let f = fixture();
    crash_install(&f, "journal staged:1");
    assert!(f.root.join("usr/lib/.release-upgrader.staging").is_dir());
    assert!(f.state().join("helpers.new").is_dir());
    let original = snapshot(&f.root);
    let copy = f.dir.path().join("copy");
    copy_tree(&f.root, &copy);
    f.run_at(&copy, &["cleanup"], &[]).expect(0);
    assert_eq!(
        snapshot(&f.root),
        original,
        "cleanup of the copy changed the original"
    );
    assert!(!copy.join("usr/lib/.release-upgrader.staging").exists());
    assert!(!copy.join("var/lib/release-upgrader/helpers.new").exists());
    assert!(!copy.join("var/lib/release-upgrader/journal.json").exists());
    assert!(!copy.join("usr/lib/release-upgrader").exists());

    // Replacing 3.0.3 with 3.0.4, killed right after the exchange: the copy (whose
    // inodes are not the journal's) finishes to 3.0.4 with 3.0.4's manifests.
    let f = fixture();
    f.run(&["bootstrap", "--no-reexec"]).expect(0);
    f.publish_test_helpers_with(&test_helpers("3.0.4"), |s| s.date += 60);
    crash_install(&f, "swapped:1");
    let original = snapshot(&f.root);
    let copy = f.dir.path().join("copy");
    copy_tree(&f.root, &copy);
    let run = f.run_at(&copy, &["-v", "bootstrap", "--no-reexec"], &[]);
    run.expect(0)
        .mentions(&["inodes are not this root's", "already installed"]);
    assert_eq!(
        snapshot(&f.root),
        original,
        "recovering the copy changed the original"
    );
    let prefix = copy.join("usr/lib/release-upgrader");
    assert_eq!(
        std::fs::read_to_string(prefix.join("root/usr/share/doc/apt/version")).unwrap(),
        "3.0.4\n"
    );
    let store = ru_client::helpers::Store::new(&ru_client::root::SystemRoot::new(&copy));
    for manifest in store.installed().unwrap() {
        for entry in &manifest.files {
            assert!(
                ru_client::helpers::manifest::check_entry(&prefix, entry).is_none(),
                "{} differs from its manifest",
                entry.path
            );
        }
    }
    assert!(!copy.join("usr/lib/.release-upgrader.staging").exists());
    assert!(!copy.join("var/lib/release-upgrader/journal.json").exists());
    // The original recovers on its own too.
    f.run(&["bootstrap", "--no-reexec"])
        .expect(0)
        .mentions(&["already installed"]);
}

/// A copy of a root killed at each step of replacing 3.0.3 with 3.0.4 recovers to exactly
/// one of the two (its files and its manifests agree), and the original is not touched.
#[test]
fn a_copy_recovers_to_old_or_new_from_every_step_of_a_replace() {
    use ru_client::helpers::{self, Store};
    use ru_client::root::SystemRoot;
    for at in [
        "staging created:1",
        "deb extracted:2",
        "new manifests written:1",
        "journal staged:1",
        "swapped:1",
        "journal swapped:1",
        "manifests aside:1",
        "manifests in place:1",
        "old tree removed:1",
        "install finished:1",
    ] {
        let f = fixture();
        f.run(&["bootstrap", "--no-reexec"]).expect(0);
        f.publish_test_helpers_with(&test_helpers("3.0.4"), |s| s.date += 60);
        crash_install(&f, at);
        let original = snapshot(&f.root);
        let copy = f.dir.path().join("copy");
        copy_tree(&f.root, &copy);
        let store = Store::new(&SystemRoot::new(&copy));
        {
            let _lock = helpers::lock::StateLock::acquire(&store).unwrap();
            helpers::install::recover(&store).unwrap();
        }
        assert_eq!(snapshot(&f.root), original, "{at}: the original changed");
        let version = std::fs::read_to_string(store.prefix.join("root/usr/share/doc/apt/version"))
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        let manifests = store.installed().unwrap();
        let apt = manifests
            .iter()
            .find(|m| m.package == "release-upgrader-apt")
            .unwrap();
        assert_eq!(format!("{}\n", apt.version), version, "{at}: mixed");
        for manifest in &manifests {
            for entry in &manifest.files {
                assert!(
                    helpers::manifest::check_entry(&store.prefix, entry).is_none(),
                    "{at}: {} differs from its manifest",
                    entry.path
                );
            }
        }
        for leftover in [
            "usr/lib/.release-upgrader.staging",
            "usr/lib/.release-upgrader.old",
            "var/lib/release-upgrader/journal.json",
            "var/lib/release-upgrader/helpers.new",
            "var/lib/release-upgrader/helpers.old",
        ] {
            assert!(!copy.join(leftover).exists(), "{at}: {leftover} left");
        }
    }
}

#[test]
fn a_symlink_at_the_staging_name_is_refused_not_followed() {
    let f = fixture();
    let host = fake_host(f.dir.path());
    let staging = f.root.join("usr/lib/.release-upgrader.staging");
    std::os::unix::fs::symlink(host.join("var"), &staging).unwrap();
    let before = snapshot(&host);
    let run = f.run(&["bootstrap", "--no-reexec"]);
    assert_eq!(snapshot(&host), before);
    run.expect(2).mentions(&["symlink"]);
    assert!(std::fs::symlink_metadata(&staging).unwrap().is_symlink());
    assert!(!f.prefix().exists());
    // Recovering an interrupted install refuses it the same way.
    let journal = helper_journal("staging", &staging, &f.state().join("helpers.new"));
    write_state(&f.root, "journal.json", &journal);
    let run = f.run(&["cleanup"]);
    assert_eq!(snapshot(&host), before);
    run.expect(2).mentions(&["symlink"]);
}

/// Mounting needs root and a mount namespace of our own: the client runs in one made by
/// `unshare`, so that the bind mount is never seen outside it.
#[test]
fn a_mount_below_the_staging_tree_is_never_entered() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount");
        return;
    }
    let f = fixture();
    let host = fake_host(f.dir.path());
    let staging = f.root.join("usr/lib/.release-upgrader.staging");
    std::fs::create_dir_all(staging.join("mnt")).unwrap();
    std::fs::write(staging.join("left-over"), "x").unwrap();
    // A journal this root wrote itself: its paths are exactly this root's.
    let journal = helper_journal("staging", &staging, &f.state().join("helpers.new"));
    write_state(&f.root, "journal.json", &journal);
    let before = snapshot(&host);
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
        .arg("sh")
        .arg(host.join("var"))
        .arg(staging.join("mnt"))
        .arg(BIN)
        .arg("--root")
        .arg(&f.root)
        .arg("cleanup")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        snapshot(&host),
        before,
        "the removal went through the mount"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mount point"), "{stderr}");
}

// --- finding 5: the upgrade journal ---

/// An upgrade journal as the current main writes one.
fn upgrade_journal(phase: &str, sources: &[&Path], media: Option<&Path>) -> String {
    serde_json::json!({
        "from": "bookworm",
        "to": "trixie",
        "to_version": "13",
        "phase": phase,
        "sources": sources,
        "media_source": media,
        "cdrom": null,
        "from_distribution": [],
        "obsolete": [],
        "autoremove": false,
        "started": "2026-01-01T00:00:00+00:00",
    })
    .to_string()
}

#[test]
fn an_upgrade_journal_naming_the_host_is_refused_even_by_a_dry_run() {
    // Which field names the host: `sources` (renamed back from a "backup"), or
    // `media_source` (removed).
    for what in ["sources", "media_source"] {
        let journal = |host: &Path| match what {
            "sources" => upgrade_journal(
                "sources-rewritten",
                &[&host.join("etc/apt/sources.list")],
                None,
            ),
            _ => upgrade_journal("sources-rewritten", &[], Some(&host.join("var/lib"))),
        };
        for args in [&["upgrade", "--dry-run"][..], &["upgrade", "-y"][..]] {
            let f = fixture();
            let host = fake_host(f.dir.path());
            write_state(&f.root, "upgrade.json", &journal(&host));
            let (host_before, root_before) = (snapshot(&host), snapshot(&f.root));
            let run = f.run(args);
            assert_eq!(
                snapshot(&host),
                host_before,
                "{what} {args:?} changed the host"
            );
            assert_eq!(
                snapshot(&f.root),
                root_before,
                "{what} {args:?} changed the root"
            );
            run.expect(2).mentions(&["upgrade.json"]);
        }
    }
}

#[test]
fn a_dry_run_reports_an_interrupted_upgrade_and_changes_nothing() {
    let f = fixture();
    let apt = f.root.join("etc/apt");
    std::fs::create_dir_all(&apt).unwrap();
    std::fs::write(
        apt.join("sources.list"),
        "deb http://mirror/debian trixie main\n",
    )
    .unwrap();
    std::fs::write(
        apt.join("sources.list.distUpgrade"),
        "deb http://mirror/debian bookworm main\n",
    )
    .unwrap();
    // Before dpkg ran: a real run would undo it. The journal is main's format, naming
    // this root's files by absolute path.
    write_state(
        &f.root,
        "upgrade.json",
        &upgrade_journal("planned", &[&apt.join("sources.list")], None),
    );
    let before = snapshot(&f.root);
    let run = f.run(&["upgrade", "--dry-run"]);
    assert_eq!(snapshot(&f.root), before, "the dry run changed the root");
    run.expect(0)
        .mentions(&["interrupted", "would", "Nothing was changed"]);
    // While dpkg ran: a real run would resume it.
    write_state(
        &f.root,
        "upgrade.json",
        &upgrade_journal("installing", &[&apt.join("sources.list")], None),
    );
    let before = snapshot(&f.root);
    let run = f.run(&["upgrade", "--dry-run"]);
    assert_eq!(snapshot(&f.root), before, "the dry run changed the root");
    run.expect(0)
        .mentions(&["interrupted", "would", "Nothing was changed"]);
}

// --- finding 6: manifests ---

#[test]
fn a_manifest_naming_paths_outside_the_prefix_is_refused_before_anything_is_removed() {
    let f = fixture();
    f.run(&["bootstrap", "--no-reexec"]).expect(0);
    let host = fake_host(f.dir.path());
    // The prefix is <dir>/root/usr/lib/release-upgrader: four levels up is <dir>.
    for bad in [
        host.join("etc/passwd").display().to_string(),
        "../../../../host/var/log/syslog".to_owned(),
    ] {
        let manifest_path = f.state().join("helpers/release-upgrader-apt.json");
        let original = std::fs::read(&manifest_path).unwrap();
        let mut manifest: serde_json::Value = serde_json::from_slice(&original).unwrap();
        let files = manifest["files"].as_array_mut().unwrap();
        let mut entry = files.iter().find(|e| e["type"] == "file").unwrap().clone();
        entry["path"] = bad.clone().into();
        files.push(entry);
        std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        let (host_before, root_before) = (snapshot(&host), snapshot(&f.root));
        let run = f.run(&["cleanup"]);
        assert_eq!(snapshot(&host), host_before, "{bad}: the host changed");
        assert_eq!(snapshot(&f.root), root_before, "{bad}: the root changed");
        run.expect(2).mentions(&["release-upgrader-apt.json"]);
        std::fs::write(&manifest_path, &original).unwrap();
    }
    // The untampered manifests still clean up.
    f.run(&["cleanup"]).expect(0);
    assert!(!f.prefix().exists());
}

// --- base directories: written through handles opened from the root ---

/// A root whose state directory, log directory and sources directory are symlinks to the
/// host's (as a hostile or careless chroot may hold): nothing is written, renamed or
/// removed there; the upgrade refuses at the first such directory with exit 2.
#[test]
fn symlinked_base_directories_of_another_root_never_lead_writes_to_the_host() {
    let w = crate::upgrade::World::new();
    let host = fake_host(w.root.parent().unwrap());
    std::fs::create_dir_all(host.join("var/lib/release-upgrader")).unwrap();
    std::fs::create_dir_all(host.join("var/log/dist-upgrade")).unwrap();
    for (inside, outside) in [
        ("var/lib/release-upgrader", "var/lib/release-upgrader"),
        ("var/log/dist-upgrade", "var/log/dist-upgrade"),
    ] {
        let at = w.root.join(inside);
        if at.is_dir() {
            std::fs::remove_dir_all(&at).unwrap();
        }
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(host.join(outside), &at).unwrap();
    }
    let before = snapshot(&host);
    for args in [
        &["upgrade", "-y", "-f", "noninteractive"][..],
        &["bootstrap", "--no-reexec"][..],
        &["cleanup"][..],
    ] {
        let run = w.run(args);
        assert_eq!(snapshot(&host), before, "{args:?} wrote to the host");
        run.expect(2).mentions(&["symlink"]);
    }
    assert!(w.read("/etc/os-release").contains("alpha"));
}
