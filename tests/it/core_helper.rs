//! The target release's upgrader runs the upgrade: a pocket that carries
//! `release-upgrader-core` newer than the client has it verified, installed and
//! re-executed into, with every flag the user gave; one that is not newer is installed but
//! never run; one whose deb does not match the signed pocket is refused before anything
//! changes. The newer core is the client binary itself, packaged by `helper build --core`
//! with the relocated apt and dpkg of this machine (tests/it/helper_build.rs).

use std::path::{Path, PathBuf};

use ru_publish::pocket::{self, PocketEntry};

use crate::helper_build::{core_build, newer_core_version};
use crate::support::{Item, TestHelper, test_key};
use crate::upgrade::World;

const POCKET: &str = "dists/beta/main/dist-upgrader-amd64/current";

/// Replaces the world's helper pocket with `debs`.
fn publish_debs(world: &World, debs: &[PathBuf]) {
    let entries: Vec<PocketEntry> = debs
        .iter()
        .map(|file| PocketEntry {
            fields: ru_format::deb::read_control(file).unwrap().fields,
            file: file.clone(),
        })
        .collect();
    let mut spec = crate::support::Fixture::default_spec();
    spec.codename = "beta".into();
    spec.suite = "beta".into();
    let dir = world.srv.join(POCKET);
    let _ = std::fs::remove_dir_all(&dir);
    pocket::write(&dir, &spec, &entries, test_key()).unwrap();
}

/// A stand-in core helper of `version` whose entry point only leaves `marker` behind and
/// fails: if it ever runs, the upgrade fails and says so.
fn marker_core(version: &str, marker: &Path) -> TestHelper {
    TestHelper {
        name: "release-upgrader-core".into(),
        version: version.into(),
        depends: String::new(),
        items: vec![Item::File(
            "bin/release-upgrader".into(),
            format!(
                "#!/bin/sh\necho \"$0 $*\" > '{}'\necho 'the stand-in core ran' >&2\nexit 99\n",
                marker.display()
            ),
            0o755,
        )],
        index_fields: Vec::new(),
    }
}

fn main_log(world: &World) -> String {
    world.read("var/log/dist-upgrade/main.log")
}

#[test]
fn a_newer_core_helper_from_the_pocket_runs_the_upgrade_with_the_users_flags() {
    let world = World::new();
    let debs: Vec<PathBuf> = core_build().iter().map(|(_, p)| p.clone()).collect();
    publish_debs(&world, &debs);
    let version = newer_core_version();
    let run = world.run(&[
        "upgrade",
        "-y",
        "-f",
        "noninteractive",
        "--keep-helpers",
        "--lock-timeout",
        "30",
    ]);
    run.expect(0).mentions(&[&format!(
        "Running release-upgrader {version} from the beta pocket"
    )]);
    world.assert_all_on_beta("after the core's upgrade");
    let log = main_log(&world);
    // Written by the process whose executable (the bundled loader) is inside the prefix,
    // and so only by the core.
    let prefix = world.root.join("usr/lib/release-upgrader");
    let banner = format!(
        "release-upgrader-core {version} runs this upgrade: release-upgrader {} ({})",
        env!("CARGO_PKG_VERSION"),
        prefix.join("bin/release-upgrader").display()
    );
    assert!(log.contains(&banner), "no {banner:?} in main.log:\n{log}");
    let takeover = log.find("Running release-upgrader").unwrap();
    let core_ran = log.find(&banner).unwrap();
    let sources = log.find("Upgrade http").expect("the sources were moved");
    assert!(
        takeover < core_ran && core_ran < sources,
        "the core did the upgrade's work: {log}"
    );
    // The user's --keep-helpers reached the core: the helpers are still there.
    assert!(prefix.join("bin/release-upgrader").is_file());
    assert!(prefix.join("bin/apt-get").is_file());
}

#[test]
fn a_core_helper_that_is_not_newer_is_installed_but_never_run() {
    let world = World::new();
    let marker = world.work.join("core-ran");
    std::fs::create_dir_all(&world.work).unwrap();
    // The same version as the client: not newer.
    world.republish_helpers(|helpers| {
        helpers.push(marker_core(env!("CARGO_PKG_VERSION"), &marker));
    });
    let run = world.run(&["upgrade", "-y", "-f", "noninteractive", "--keep-helpers"]);
    run.expect(0);
    assert!(
        !marker.exists(),
        "the core ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    assert!(
        !run.stderr().contains("Running release-upgrader"),
        "{}",
        run.stderr()
    );
    assert!(!main_log(&world).contains("release-upgrader-core"));
    world.assert_all_on_beta("after the client's own upgrade");
    // It came with the pocket and was installed like every helper.
    assert!(
        world
            .root
            .join("usr/lib/release-upgrader/bin/release-upgrader")
            .is_file()
    );
}

#[test]
fn a_core_helper_whose_deb_does_not_match_the_signed_pocket_is_refused_before_anything_runs() {
    let world = World::new();
    let marker = world.work.join("core-ran");
    std::fs::create_dir_all(&world.work).unwrap();
    world.republish_helpers(|helpers| {
        helpers.push(marker_core("99.0", &marker));
    });
    // The deb is swapped for one of the same size; the signed index keeps its SHA256.
    let dir = world.srv.join(POCKET);
    let deb = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("release-upgrader-core_")
        })
        .expect("the core's deb in the pocket");
    let mut bytes = std::fs::read(&deb).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x55;
    std::fs::write(&deb, bytes).unwrap();
    let before = world.before();
    let run = world.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(3).mentions(&["release-upgrader-core", "SHA256"]);
    assert!(!marker.exists(), "the tampered core ran");
    world.assert_put_back(&before);
    assert!(!main_log(&world).contains("Running release-upgrader"));
}
