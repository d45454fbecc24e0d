//! Installing helpers for real: a pocket of dpkg-deb-built test helpers served from
//! 127.0.0.1, installed as one transaction into a temp root, re-executed with, replaced,
//! removed; hostile packages, faults, signals and SIGKILL at seeded points.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use ru_client::helpers::{self, Store};
use ru_client::root::SystemRoot;
use ru_testing::serve::Fault;

use crate::support::{BIN, Fixture, Item, program, test_helpers};

fn fixture() -> Fixture {
    let f = Fixture::new();
    f.publish_test_helpers(&test_helpers("3.0.3"));
    f
}

/// Every path under `dir`, relative, with a type marker, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if t.is_dir() {
                stack.push(p);
                out.push(format!("{rel}/"));
            } else if t.is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// Asserts the prefix holds exactly the helper set with `apt_version`, or nothing.
fn assert_installed(f: &Fixture, apt_version: &str) {
    let prefix = f.prefix();
    let marker = prefix.join("root/usr/share/doc/apt/version");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default(),
        format!("{apt_version}\n"),
        "prefix: {:?}",
        tree(&prefix)
    );
    let store = Store::new(&SystemRoot::new(&f.root));
    let manifests = store.installed().unwrap();
    assert_eq!(manifests.len(), 3);
    // Every listed path is there, unchanged, and nothing else is.
    let mut listed: Vec<String> = Vec::new();
    for m in &manifests {
        for e in &m.files {
            assert!(
                ru_client::helpers::manifest::check_entry(&prefix, e).is_none(),
                "{} differs from its manifest",
                e.path
            );
            listed.push(e.path.to_string());
        }
    }
    listed.sort();
    listed.dedup();
    let mut on_disk: Vec<String> = tree(&prefix)
        .into_iter()
        .map(|l| {
            l.split(" -> ")
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, listed);
    assert_clean_state(f);
}

/// No transaction leftovers: no journal, no staging tree, no parked tree, no downloads.
fn assert_clean_state(f: &Fixture) {
    let state = f.state();
    assert!(!state.join("journal.json").exists(), "journal left behind");
    assert!(!state.join("helpers.new").exists());
    assert!(!state.join("helpers.old").exists());
    assert!(!state.join("cache/debs").exists() || tree(&state.join("cache/debs")).is_empty());
    let lib = f.root.join("usr/lib");
    assert!(
        !lib.join(".release-upgrader.staging").exists(),
        "staging left behind"
    );
    assert!(!lib.join(".release-upgrader.old").exists());
}

fn assert_nothing_installed(f: &Fixture) {
    assert!(
        !f.prefix().exists(),
        "prefix exists: {:?}",
        tree(&f.prefix())
    );
    assert!(!f.state().join("helpers").exists(), "manifests exist");
    assert_clean_state(f);
}

#[test]
fn bootstrap_installs_reexecs_and_reports_helper_versions() {
    let f = fixture();
    let run = f.run(&["bootstrap"]);
    run.expect(0);
    let out = run.stdout();
    assert!(out.contains("Installed 3 helpers for 13 (trixie)"), "{out}");
    // The rest comes from the re-executed process, in the helper environment.
    assert!(
        out.contains("apt-get --version: apt 3.0.3 (amd64)"),
        "{out}"
    );
    assert!(
        out.contains(
            "dpkg --version: Debian 'dpkg' package management program version 1.22.21 (amd64)."
        ),
        "{out}"
    );
    assert!(out.contains("(re-executed; PATH starts with"), "{out}");
    assert_installed(&f, "3.0.3");
    // Modes and links as packaged; the generated apt configuration points at the prefix.
    let meta = std::fs::metadata(f.prefix().join("bin/apt-get")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read_link(f.prefix().join("methods/https")).unwrap(),
        Path::new("http")
    );
    let conf = std::fs::read_to_string(f.state().join("apt.conf")).unwrap();
    assert!(
        conf.contains(&format!(
            "Dir::Bin::dpkg \"{}/bin/dpkg\"",
            f.prefix().display()
        )),
        "{conf}"
    );
}

#[test]
fn reexecuted_process_runs_with_helpers_first_on_path_and_no_ld_library_path() {
    let f = fixture();
    f.run(&["bootstrap", "--no-reexec"]).expect(0);
    // What a re-executed process passes to the programs it starts.
    let store = Store::new(&SystemRoot::new(&f.root));
    let env = helpers::env::helper_env(&store);
    let out = Command::new("sh")
        .args(["-c", "apt-get update"])
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("ran {}/bin/apt-get update", f.prefix().display())),
        "{text}"
    );
    assert!(text.contains("LD_LIBRARY_PATH=unset"), "{text}");
}

#[test]
fn reexec_happens_only_once() {
    let f = fixture();
    // With the guard set, as in the re-executed process, bootstrap does not exec again.
    let run = f.run_with(
        &["bootstrap"],
        &[("RELEASE_UPGRADER_HELPERS", "/somewhere")],
    );
    run.expect(0);
    assert!(run.stdout().contains("Installed 3 helpers"));
    assert!(
        !run.stdout().contains("apt-get --version"),
        "re-executed again: {}",
        run.stdout()
    );
}

#[test]
fn newer_release_upgrader_core_is_the_reexec_target() {
    let f = Fixture::new();
    let mut helpers = test_helpers("3.0.3");
    helpers.push(crate::support::TestHelper {
        name: "release-upgrader-core".into(),
        version: "99.0".into(),
        depends: String::new(),
        items: vec![Item::File(
            "bin/release-upgrader".into(),
            program("release-upgrader 99.0"),
            0o755,
        )],
        index_fields: Vec::new(),
    });
    f.publish_test_helpers(&helpers);
    let mut stanzas = f.default_stanzas();
    stanzas[1] = stanzas[1].clone().field(
        "UpgradeToolPackages",
        "release-upgrader-apt, release-upgrader-dpkg, release-upgrader-core",
    );
    f.publish_meta_release(&stanzas);
    let run = f.run(&["bootstrap"]);
    run.expect(0);
    let out = run.stdout();
    // The stand-in core prints how it was run: the same global flags, then `helpers`.
    let core = f.prefix().join("bin/release-upgrader");
    assert!(out.contains(&format!("ran {}", core.display())), "{out}");
    assert!(
        out.contains("--root")
            && out
                .trim_end()
                .lines()
                .any(|l| l.starts_with("ran ") && l.ends_with(" helpers")),
        "{out}"
    );
}

#[test]
fn rerunning_with_the_same_helpers_is_a_no_op() {
    let f = fixture();
    f.run(&["bootstrap", "--no-reexec"]).expect(0);
    let inode = std::fs::metadata(f.prefix()).unwrap().ino();
    let debs_before = deb_requests(&f);
    let run = f.run(&["bootstrap", "--no-reexec"]);
    run.expect(0);
    assert!(
        run.stdout().contains("already installed"),
        "{}",
        run.stdout()
    );
    assert_eq!(
        std::fs::metadata(f.prefix()).unwrap().ino(),
        inode,
        "prefix was rebuilt"
    );
    assert_eq!(deb_requests(&f), debs_before, "debs downloaded again");
    assert_installed(&f, "3.0.3");
}

fn deb_requests(f: &Fixture) -> usize {
    f.server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(".deb"))
        .count()
}

#[test]
fn newer_pocket_replaces_the_helpers_as_one_transaction() {
    let f = fixture();
    f.run(&["bootstrap", "--no-reexec"]).expect(0);
    assert!(f.prefix().join("root/usr/share/apt/only-in-3.0.3").exists());
    f.publish_test_helpers_with(&test_helpers("3.0.4"), |s| s.date += 60);
    let run = f.run(&["bootstrap"]);
    run.expect(0);
    assert!(
        run.stdout().contains("Replaced 3 older helpers"),
        "{}",
        run.stdout()
    );
    assert!(run.stdout().contains("apt 3.0.4"), "{}", run.stdout());
    assert!(!f.prefix().join("root/usr/share/apt/only-in-3.0.3").exists());
    assert!(f.prefix().join("root/usr/share/apt/only-in-newer").exists());
    assert_installed(&f, "3.0.4");
}

#[test]
fn helpers_lists_what_is_installed() {
    let f = fixture();
    let run = f.run(&["helpers"]);
    run.expect(0);
    assert_eq!(run.stdout(), "No helpers are installed.\n");
    f.run(&["bootstrap", "--no-reexec"]).expect(0);
    let run = f.run(&["--json", "helpers"]);
    run.expect(0);
    let line = &run.json_lines()[0];
    assert_eq!(line["helpers"].as_array().unwrap().len(), 3);
    assert_eq!(line["apt_get_version"], "apt 3.0.3 (amd64)");
    assert_eq!(line["reexecuted"], false);
    let run = f.run(&["helpers"]);
    assert!(
        run.stdout().contains("release-upgrader-runtime  2.41-12"),
        "{}",
        run.stdout()
    );
}

#[test]
fn cleanup_removes_exactly_what_the_manifests_list() {
    let f = fixture();
    f.run(&["bootstrap", "--no-reexec"]).expect(0);
    // A file of the user's in the prefix, and a helper file changed since install.
    std::fs::write(f.prefix().join("bin/mine"), "mine\n").unwrap();
    std::fs::write(f.prefix().join("root/usr/share/runtime/r3"), "edited\n").unwrap();
    let run = f.run(&["cleanup"]);
    run.expect(0);
    let out = run.stdout();
    assert!(out.contains("Removed 3 helpers"), "{out}");
    assert!(
        out.contains("changed since install: root/usr/share/runtime/r3"),
        "{out}"
    );
    assert!(out.contains("bin/mine"), "{out}");
    assert_eq!(tree(&f.prefix()), ["bin/", "bin/mine"]);
    assert!(!f.state().join("helpers").exists());
    std::fs::remove_file(f.prefix().join("bin/mine")).unwrap();
    std::fs::remove_dir(f.prefix().join("bin")).unwrap();
    f.run(&["cleanup"]).expect(0);
    assert!(!f.prefix().exists(), "empty prefix not removed");
    // --purge-state empties the state directory entirely.
    f.run(&["cleanup", "--purge-state"]).expect(0);
    assert_eq!(tree(&f.state()), Vec::<String>::new());
}

// --- hostile packages: refused, nothing left anywhere ---

fn hostile(items: Vec<Item>) -> Fixture {
    let f = Fixture::new();
    let mut helpers = test_helpers("3.0.3");
    helpers[0].items.extend(items);
    f.publish_test_helpers(&helpers);
    f
}

#[test]
fn helper_shipping_a_path_outside_the_prefix_is_refused() {
    let f = Fixture::new();
    let mut helpers = test_helpers("3.0.3");
    // dpkg-deb builds from a tree; put a file next to the prefix.
    helpers[1]
        .items
        .push(Item::Link("../../../etc/evil".into(), "x".into()));
    let before = tree(&f.root);
    f.publish_test_helpers(&helpers);
    f.run(&["bootstrap", "--no-reexec"])
        .expect(3)
        .mentions(&["release-upgrader-dpkg"]);
    assert_nothing_installed(&f);
    let after: Vec<String> = tree(&f.root)
        .into_iter()
        .filter(|p| !p.starts_with("var/"))
        .collect();
    let before: Vec<String> = before
        .into_iter()
        .filter(|p| !p.starts_with("var/"))
        .collect();
    assert_eq!(after, before, "something was written");
}

#[test]
fn symlink_escaping_the_prefix_is_refused() {
    let f = hostile(vec![Item::Link(
        "root/etc/passwd".into(),
        "/etc/passwd".into(),
    )]);
    f.run(&["bootstrap", "--no-reexec"])
        .expect(3)
        .mentions(&["release-upgrader-apt", "root/etc/passwd"]);
    assert_nothing_installed(&f);
}

#[test]
fn two_helpers_shipping_one_path_are_refused() {
    let f = Fixture::new();
    let mut helpers = test_helpers("3.0.3");
    helpers[2].items.push(Item::File(
        "bin/apt-get".into(),
        "runtime's copy\n".into(),
        0o755,
    ));
    f.publish_test_helpers(&helpers);
    f.run(&["bootstrap", "--no-reexec"]).expect(3).mentions(&[
        "bin/apt-get",
        "release-upgrader-apt",
        "release-upgrader-runtime",
    ]);
    assert_nothing_installed(&f);
}

#[test]
fn deb_other_than_the_index_promised_is_refused() {
    let f = fixture();
    // Swap two debs on the server and fix their hashes in a re-signed index: the
    // signatures are fine, but each file is not the package its stanza names.
    let dir = f.pocket_dir();
    let apt = dir.join("release-upgrader-apt_3.0.3_amd64.deb");
    let dpkg = dir.join("release-upgrader-dpkg_1.22.21_amd64.deb");
    let tmp = dir.join("swap");
    std::fs::rename(&apt, &tmp).unwrap();
    std::fs::rename(&dpkg, &apt).unwrap();
    std::fs::rename(&tmp, &dpkg).unwrap();
    let packages = std::fs::read_to_string(dir.join("Packages")).unwrap();
    // Re-publish the index over the swapped files.
    let entries: Vec<ru_publish::pocket::PocketEntry> = packages
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|stanza| {
            let fields: Vec<(String, String)> = stanza
                .lines()
                .filter_map(|l| l.split_once(": "))
                .filter(|(k, _)| !["Filename", "Size", "SHA256"].contains(k))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let name = &fields.iter().find(|(k, _)| k == "Package").unwrap().1;
            let version = &fields.iter().find(|(k, _)| k == "Version").unwrap().1;
            let file = dir.join(format!("{name}_{version}_amd64.deb"));
            let copy = f.dir.path().join(format!("{name}.deb"));
            std::fs::copy(&file, &copy).unwrap();
            ru_publish::pocket::PocketEntry { fields, file: copy }
        })
        .collect();
    ru_publish::pocket::write(&dir, &Fixture::default_spec(), &entries, &f.key).unwrap();
    f.run(&["bootstrap", "--no-reexec"])
        .expect(3)
        .mentions(&["promised"]);
    assert_nothing_installed(&f);
}

// --- faults ---

#[test]
fn connection_dropped_mid_deb_exits_4_and_installs_nothing() {
    let f = fixture();
    f.fault(".deb", Fault::Truncate(100), usize::MAX);
    f.run(&["--retries", "1", "bootstrap", "--no-reexec"])
        .expect(4)
        .mentions(&["connection closed"]);
    assert!(!f.prefix().exists());
    assert!(!f.state().join("journal.json").exists());
    // The next run resumes and completes.
    f.clear_faults();
    f.run(&["bootstrap", "--no-reexec"]).expect(0);
    assert_installed(&f, "3.0.3");
}

#[test]
fn corrupted_deb_exits_3_and_leaves_nothing() {
    let f = fixture();
    f.fault(
        "release-upgrader-dpkg_1.22.21_amd64.deb",
        Fault::Corrupt,
        usize::MAX,
    );
    f.run(&["bootstrap", "--no-reexec"])
        .expect(3)
        .mentions(&["SHA256 mismatch", "release-upgrader-dpkg"]);
    assert_nothing_installed(&f);
}

/// Mounts a tmpfs of `size` over `dir`; `None` (with the reason printed) if not allowed.
fn tmpfs(dir: &Path, size: &str) -> Option<TmpfsGuard> {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "skipped: cannot mount a tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(TmpfsGuard(dir.to_path_buf()))
}

struct TmpfsGuard(std::path::PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn big_helpers(lie_about_size: bool) -> Vec<crate::support::TestHelper> {
    let mut helpers = test_helpers("3.0.3");
    // 3 MB that xz cannot shrink much.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: String = (0..3_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    helpers[2]
        .items
        .push(Item::File("root/usr/share/big".into(), noise, 0o644));
    if lie_about_size {
        helpers[2]
            .index_fields
            .push(("Installed-Size".into(), "1".into()));
    }
    helpers
}

#[test]
fn a_hostile_deb_among_debs_extracting_at_once_stops_them_all_and_leaves_nothing() {
    let f = Fixture::new();
    // The first and last helpers take a while to extract (3 MB each); the middle one
    // is refused while they do.
    let mut helpers = big_helpers(false);
    let Some(Item::File(_, data, mode)) = helpers[2].items.last() else {
        panic!("big_helpers ends with the big file");
    };
    let big = Item::File("root/usr/share/big-apt".into(), data.clone(), *mode);
    helpers[0].items.push(big);
    helpers[1].items.push(Item::Link(
        "root/usr/share/escape".into(),
        "../../../../../../etc/passwd".into(),
    ));
    f.publish_test_helpers(&helpers);
    f.run(&["bootstrap", "--no-reexec"])
        .expect(3)
        .mentions(&["release-upgrader-dpkg", "root/usr/share/escape"]);
    assert_nothing_installed(&f);
    assert_eq!(tree(&f.root.join("usr")), ["lib/"], "something was left");
}

#[test]
fn too_little_space_is_refused_up_front_with_numbers() {
    let f = Fixture::new();
    f.publish_test_helpers(&big_helpers(false));
    let Some(_mount) = tmpfs(&f.root.join("usr"), "3m") else {
        return;
    };
    f.run(&["bootstrap", "--no-reexec"])
        .expect(2)
        .mentions(&["not enough free space", "bytes needed"]);
    assert_nothing_installed(&f);
}

#[test]
fn disk_full_during_unpacking_rolls_back() {
    let f = Fixture::new();
    // The index understates the installed size, so the up-front check passes.
    f.publish_test_helpers(&big_helpers(true));
    let Some(_mount) = tmpfs(&f.root.join("usr"), "2m") else {
        return;
    };
    f.run(&["bootstrap", "--no-reexec"])
        .expect(2)
        .mentions(&["No space left on device"]);
    assert_nothing_installed(&f);
    assert_eq!(
        tree(&f.root.join("usr")),
        ["lib/"],
        "staging not cleaned from the full disk"
    );
}

#[test]
fn sigterm_during_bootstrap_rolls_back_and_exits_130() {
    let f = fixture();
    f.fault(
        "release-upgrader-apt_3.0.3_amd64.deb",
        Fault::Trickle {
            chunk: 64,
            delay: std::time::Duration::from_millis(50),
        },
        usize::MAX,
    );
    let child = Command::new(BIN)
        .args([
            "--root",
            f.root.to_str().unwrap(),
            "--keyring",
            f.keyring.to_str().unwrap(),
        ])
        .args([
            "--meta-release-uri",
            &f.meta_release_uri(),
            "--arch",
            "amd64",
            "bootstrap",
            "--no-reexec",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while deb_requests(&f) == 0 {
        assert!(started.elapsed().as_secs() < 20, "download never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!f.prefix().exists());
    assert!(!f.state().join("journal.json").exists());
}

// --- crash recovery: SIGKILL at seeded points ---

/// A small deterministic generator (no dependency needed for picking test points).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn crash_seed() -> u64 {
    std::env::var("RELEASE_UPGRADER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026)
}

/// Runs `args` once to count its crash points.
fn count_points(f: &Fixture, args: &[&str]) -> u64 {
    let counter = f.dir.path().join("crash-count");
    let _ = std::fs::remove_file(&counter);
    f.run_with(
        args,
        &[("RELEASE_UPGRADER_CRASH_COUNT", counter.to_str().unwrap())],
    )
    .expect(0);
    std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Runs `args`, killed at crash point `n`; the process must have died of SIGKILL.
fn run_killed_at(f: &Fixture, args: &[&str], n: u64) {
    let run = f.run_with(args, &[("RELEASE_UPGRADER_CRASH_AT", &n.to_string())]);
    assert_eq!(
        run.0.status.signal(),
        Some(9),
        "not killed at point {n}: {}",
        run.stderr()
    );
}

/// Recovers as the next run would, then reports which state the system is in.
fn recover(f: &Fixture) -> Option<String> {
    let store = Store::new(&SystemRoot::new(&f.root));
    {
        let _lock = helpers::lock::StateLock::acquire(&store).unwrap();
        helpers::install::recover(&store).unwrap();
    }
    assert_clean_state(f);
    if !f.prefix().exists() {
        assert_nothing_installed(f);
        return None;
    }
    let version =
        std::fs::read_to_string(f.prefix().join("root/usr/share/doc/apt/version")).unwrap();
    let version = version.trim().to_owned();
    assert_installed(f, &version);
    Some(version)
}

fn pick(rng: &mut Rng, total: u64, count: usize) -> Vec<u64> {
    let mut points: Vec<u64> = if total as usize <= count {
        (1..=total).collect()
    } else {
        let mut set = std::collections::BTreeSet::new();
        while set.len() < count {
            set.insert(rng.next() % total + 1);
        }
        set.into_iter().collect()
    };
    points.sort();
    points
}

#[test]
fn sigkill_at_seeded_points_always_recovers_to_old_or_new() {
    let seed = crash_seed();
    let mut rng = Rng(seed);
    eprintln!("crash seed {seed:#x} (set RELEASE_UPGRADER_CRASH_SEED to repeat another)");
    let install = ["bootstrap", "--no-reexec"];
    let mut tried = 0;

    // A fresh install: nothing or everything.
    let f = fixture();
    let total = count_points(&f, &install);
    f.run(&["cleanup", "--purge-state"]).expect(0);
    let points = pick(&mut rng, total, 40);
    eprintln!("install: {total} crash points, trying {points:?}");
    for n in points {
        run_killed_at(&f, &install, n);
        let state = recover(&f);
        assert!(
            state.is_none() || state.as_deref() == Some("3.0.3"),
            "point {n}: {state:?}"
        );
        f.run(&["cleanup", "--purge-state"]).expect(0);
        assert!(!f.prefix().exists());
        assert_eq!(
            tree(&f.state()),
            Vec::<String>::new(),
            "point {n}: state dir not empty"
        );
        tried += 1;
    }

    // Replacing 3.0.3 with 3.0.4: exactly the old set or exactly the new one.
    f.run(&install).expect(0);
    f.publish_test_helpers_with(&test_helpers("3.0.4"), |s| s.date += 60);
    let total = count_points(&f, &install);
    let points = pick(&mut rng, total, 15);
    eprintln!("replace: {total} crash points, trying {points:?}");
    for n in points {
        f.run(&["cleanup", "--purge-state"]).expect(0);
        f.publish_test_helpers(&test_helpers("3.0.3"));
        f.run(&install).expect(0);
        f.publish_test_helpers_with(&test_helpers("3.0.4"), |s| s.date += 60);
        run_killed_at(&f, &install, n);
        let state = recover(&f);
        assert!(
            matches!(state.as_deref(), Some("3.0.3" | "3.0.4")),
            "point {n}: {state:?}"
        );
        tried += 1;
    }

    // Removing: recovery finishes the removal.
    f.run(&install).expect(0);
    let total = count_points(&f, &["cleanup"]);
    let points = pick(&mut rng, total, 8);
    eprintln!("cleanup: {total} crash points, trying {points:?}");
    for n in points {
        f.run(&install).expect(0);
        run_killed_at(&f, &["cleanup"], n);
        assert_eq!(recover(&f), None, "point {n}: removal not finished");
        tried += 1;
    }
    assert!(tried >= 50, "only {tried} crash points tried");
}
