//! Image apply under hostile state files, hostile flags and ordinary faults (issue 11):
//! a full image keeps the preserved paths and their ancestors; a journal, an overlay or
//! a flag naming something outside the root is refused (exit 2) and nothing outside is
//! touched; a commit that cannot finish (a name too long, an immutable file, an I/O
//! error, a kill) leaves the device exactly at the old build or exactly at the new one.
//!
//! Every "host" directory below is a temporary directory standing in for the host.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ru_format::digest::Sha256;
use serde_json::{Value, json};

use crate::image_client::{
    CHANNEL, DEVICE, DeltaKind, ImageFixture, Node, Tree, copy_tree, diff, expect_tree, image_tar,
    keys, materialize, tree, xz,
};
use crate::support::InodeFlag;

/// Every path below `dir` (but `skip`) with its type, mode, owner, content digest or
/// link target, and link count: two listings are equal when the trees are the same
/// byte for byte (times aside).
fn listing(dir: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if skip.contains(&path.as_str()) {
                continue;
            }
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let owner = format!("{:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
            let ft = m.file_type();
            let desc = if ft.is_symlink() {
                format!(
                    "link -> {}",
                    std::fs::read_link(e.path()).unwrap().display()
                )
            } else if ft.is_dir() {
                stack.push((e.path(), path.clone()));
                format!("dir {owner}")
            } else if ft.is_file() {
                format!(
                    "file {owner} {} nlink {}",
                    Sha256::of(&std::fs::read(e.path()).unwrap()),
                    m.nlink()
                )
            } else if ft.is_char_device() || ft.is_block_device() {
                format!("dev {owner} {:x}", m.rdev())
            } else {
                format!("other {owner}")
            };
            out.insert(path, desc);
        }
    }
    out
}

/// The device tree without the tool's own state (its cache and keyrings change).
fn device(f: &ImageFixture) -> BTreeMap<String, String> {
    listing(&f.root, &["var/lib/release-upgrader"])
}

fn assert_same(want: &BTreeMap<String, String>, got: &BTreeMap<String, String>, what: &str) {
    if want == got {
        return;
    }
    let diffs: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: was {v}, now {:?}", got.get(k)))
        .chain(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("{k}: new")),
        )
        .collect();
    panic!("{what}: the tree changed:\n{}", diffs.join("\n"));
}

fn build_number(root: &Path) -> String {
    std::fs::read_to_string(root.join("etc/system-image/channel.ini")).unwrap()
}

fn state(f: &ImageFixture) -> PathBuf {
    f.root.join("var/lib/release-upgrader/image")
}

fn recover_finds_nothing(f: &ImageFixture) {
    f.run(&["image", "recover"])
        .expect(0)
        .mentions(&["nothing to recover"]);
}

/// A full image of `t` named `pool/<name>`, made by GNU tar as the fixture's is.
fn publish_full(f: &ImageFixture, name: &str, t: &Tree) {
    let stage = f.dir.path().join(format!("stage-{name}"));
    let _ = std::fs::remove_dir_all(&stage);
    materialize(t, &stage.join("system"));
    let status = Command::new("tar")
        .args(["--numeric-owner", "--sort=name", "-cJf"])
        .arg(f.srv.join("pool").join(name))
        .arg("-C")
        .arg(&stage)
        .arg("system")
        .status()
        .unwrap();
    assert!(status.success());
    f.sign_file(&format!("pool/{name}"), &keys().signing);
}

/// index.json offering only the full image `pool/<name>` of build 2.
fn offer_only_full_2(f: &ImageFixture, name: &str) {
    let index = json!({
        "global": {"generated_at": ru_format::date::now().to_string()},
        "images": [
            {"type": "full", "version": 2, "description": "Full 2",
             "files": [f.entry(&format!("pool/{name}"), 1), f.entry("pool/version-2.tar.xz", 2)]}
        ]
    });
    f.put(
        &format!("{CHANNEL}/{DEVICE}/index.json"),
        index.to_string().as_bytes(),
        &keys().signing,
    );
}

fn write(path: &Path, data: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Finding 2: a full image without `var/lib` keeps the device's state there (the
/// client's and everyone else's: a full image replaces the system, not its data),
/// keeps `/userdata` and `/home`, removes the rest of the old system, and says what it
/// kept.
#[test]
fn a_full_image_without_var_lib_keeps_the_devices_state_and_replaces_the_system() {
    let f = ImageFixture::new(DeltaKind::Delta);
    let mut t2 = tree(2, f.port);
    t2.retain(|p, _| p != "var" && !p.starts_with("var/"));
    publish_full(&f, "full-2-novar.tar.xz", &t2);
    offer_only_full_2(&f, "full-2-novar.tar.xz");
    write(&f.root.join("var/lib/dpkg/status"), "Package: old\n");
    write(
        &f.root.join("var/lib/demo-data/notes.txt"),
        "rows the user cares about",
    );
    write(&f.root.join("home/phablet/Pictures/cat.jpg"), "a cat");
    write(&f.root.join("var/cache/junk"), "junk");
    write(&f.root.join("usr/share/old-only"), "the old system's");
    write(
        &f.root.join("var/lib/release-upgrader/mine"),
        "the client's own",
    );
    write(&f.root.join("userdata/photo.jpg"), "user data");
    let run = f.run(&["--json", "image", "apply"]);
    run.expect(0);
    let applied = run
        .json_lines()
        .into_iter()
        .find(|l| l["event"] == "applied")
        .expect("an applied event");
    assert_eq!(
        applied["state_kept"],
        serde_json::json!(["home/phablet", "var/lib/demo-data", "var/lib/dpkg"])
    );
    for (path, data) in [
        ("var/lib/release-upgrader/mine", "the client's own"),
        ("userdata/photo.jpg", "user data"),
        ("var/lib/dpkg/status", "Package: old\n"),
        ("var/lib/demo-data/notes.txt", "rows the user cares about"),
        ("home/phablet/Pictures/cat.jpg", "a cat"),
    ] {
        assert_eq!(
            std::fs::read_to_string(f.root.join(path)).unwrap(),
            data,
            "{path}"
        );
    }
    // The old system's files the image does not have are gone, and the rest of the
    // tree is build 2's.
    assert!(!f.root.join("var/cache/junk").exists());
    assert!(!f.root.join("usr/share/old-only").exists());
    let outside_state = |p: &String| {
        !["var", "var/lib", "home", "userdata"].contains(&p.as_str())
            && !p.starts_with("var/lib/")
            && !p.starts_with("home/")
            && !p.starts_with("userdata/")
    };
    let mut got = device(&f);
    got.retain(|p, _| outside_state(p));
    let built = tempfile::tempdir().unwrap();
    materialize(&t2, built.path());
    let want = listing(built.path(), &[]);
    assert_same(&want, &got, "build 2 outside the state");
    assert!(build_number(&f.root).contains("build_number: 2"));
    assert!(!state(&f).join("staging").exists());
    recover_finds_nothing(&f);
    // In text, the user reads what was kept.
    let f2 = ImageFixture::new(DeltaKind::Delta);
    publish_full(&f2, "full-2-novar.tar.xz", &t2);
    offer_only_full_2(&f2, "full-2-novar.tar.xz");
    write(&f2.root.join("var/lib/demo-data/notes.txt"), "rows");
    f2.run(&["image", "apply"]).expect(0).mentions(&[
        "Applied build 2",
        "kept /var/lib/demo-data",
        "never removes",
    ]);
}

/// The same kind of image that would replace `var/lib` (which holds the state) with a
/// file is refused before anything changes.
#[test]
fn a_full_image_replacing_an_ancestor_of_a_preserved_path_by_a_file_is_refused() {
    let f = ImageFixture::new(DeltaKind::Delta);
    let mut t2 = tree(2, f.port);
    t2.retain(|p, _| !p.starts_with("var/"));
    t2.insert(
        "var/lib".into(),
        Node::File(b"not a directory".to_vec(), 0o644),
    );
    publish_full(&f, "full-2-varlib.tar.xz", &t2);
    offer_only_full_2(&f, "full-2-varlib.tar.xz");
    write(&f.root.join("var/lib/dpkg/status"), "Package: old\n");
    let before = device(&f);
    let run = f.run(&["image", "apply"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    assert!(run.stderr().contains("var/lib"), "{}", run.stderr());
    assert_same(&before, &device(&f), "refused full image");
    recover_finds_nothing(&f);
}

/// A journal of the pre-RelPath format (absolute `dest` and `staging`).
fn legacy_journal(f: &ImageFixture, dest: &Path, staging: &Path, overlay: Value) {
    let dir = state(f).join("journal");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(staging.join("objects")).unwrap();
    let journal = json!({"phase": "committing", "target_build": 3,
                         "dest": dest, "staging": staging});
    std::fs::write(dir.join("state.json"), journal.to_string()).unwrap();
    std::fs::write(dir.join("overlay.json"), overlay.to_string()).unwrap();
}

/// Finding 4: a journal written for another root (here a temporary "host" directory,
/// as a journal written inside a chroot names `/`) is refused with exit 2 by `recover`
/// and by `apply`, and the host is not touched.
#[test]
fn a_journal_naming_another_root_is_refused_and_the_host_is_untouched() {
    let f = ImageFixture::new(DeltaKind::Delta);
    let host = f.dir.path().join("host");
    write(&host.join("var/lib/dpkg/status"), "host's dpkg");
    legacy_journal(
        &f,
        &host,
        &host.join("var/lib/release-upgrader/image/staging"),
        json!({
            "var/lib/dpkg": {"state": "absent"},
            "planted": {"state": "dir", "meta": {"mode": 493, "uid": 0, "gid": 0, "mtime": 0}}
        }),
    );
    let before = listing(&host, &[]);
    for args in [&["image", "recover"][..], &["image", "apply"][..]] {
        let run = f.run(args);
        assert_eq!(run.code(), 2, "{args:?}: {}", run.stderr());
        assert!(
            run.stderr().contains("journal/state.json"),
            "{args:?}: {}",
            run.stderr()
        );
        assert_same(&before, &listing(&host, &[]), "the host");
    }
    expect_tree(&f.root, 1, f.port);
}

/// Finding 4: overlay.json keys are paths inside the root: `../victim` is refused (exit
/// 2) and the file next to the root stays.
#[test]
fn overlay_json_keys_leaving_the_root_are_refused() {
    let f = ImageFixture::new(DeltaKind::Delta);
    let victim = f.dir.path().join("victim");
    write(&victim, "next to the root");
    legacy_journal(
        &f,
        &f.root,
        &state(&f).join("staging"),
        json!({"../victim": {"state": "absent"}}),
    );
    let run = f.run(&["image", "recover"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(run.stderr().contains("overlay.json"), "{}", run.stderr());
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "next to the root"
    );
    expect_tree(&f.root, 1, f.port);
}

/// Finding 6: `--slot-b` naming a directory outside the root (through `..`) is refused
/// before anything is copied or removed.
#[test]
fn a_slot_outside_the_root_is_refused() {
    let f = ImageFixture::new(DeltaKind::Zdelta);
    let host = f.dir.path().join("host");
    write(&host.join("precious"), "host data");
    let a = f.root.join("slots/a");
    materialize(&tree(1, f.port), &a);
    let active = f.dir.path().join("active");
    std::os::unix::fs::symlink(&a, &active).unwrap();
    let outside = format!("{}/../host", f.root.display());
    let run = f.run(&[
        "image",
        "apply",
        "--slot-a",
        a.to_str().unwrap(),
        "--slot-b",
        &outside,
        "--active",
        active.to_str().unwrap(),
    ]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert_eq!(
        std::fs::read_to_string(host.join("precious")).unwrap(),
        "host data"
    );
    expect_tree(&a, 1, f.port);
}

/// Finding 6 (opt-out): `--writable-flag` leaving the root is refused, and so is a
/// pending opt-in whose journal names a file outside it.
#[test]
fn opt_out_paths_leaving_the_root_are_refused() {
    let f = ImageFixture::new(DeltaKind::Delta);
    let run = f.run(&[
        "image",
        "opt-out",
        "--mirror",
        "http://127.0.0.1:9/debian",
        "--writable-flag",
        "/userdata/../../flag",
    ]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(!f.dir.path().join("flag").exists());
    assert!(!state(&f).join("opt-out.json").exists());

    let victim = f.dir.path().join("victim");
    write(&victim, "next to the root");
    let pending = json!({"op": "opt-in", "build": 1, "channel": CHANNEL, "device": DEVICE,
                         "writable_flag": "/../victim",
                         "sources": "/etc/apt/sources.list.d/release-upgrader-image.list",
                         "codename": "bookworm", "mirror": "http://127.0.0.1:9/debian"});
    write(&state(&f).join("opt-journal.json"), &pending.to_string());
    let run = f.run(&["image", "recover"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("opt-journal.json"),
        "{}",
        run.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "next to the root"
    );
}

/// Replaces the fixture's delta 2 → 3 with one made from `changed`/`removed`.
fn republish_delta(f: &ImageFixture, removed: &[String], changed: &Tree) {
    f.put(
        "pool/delta-3.tar.xz",
        &xz(&image_tar(changed, Some(removed), None)),
        &keys().signing,
    );
    f.publish_index_keeping_files();
}

/// Finding 7: a member name of 300 bytes stops the apply before the commit: the tree is
/// still build 1 byte for byte, channel.ini too, and there is nothing to recover.
#[test]
fn a_name_too_long_for_the_filesystem_fails_before_anything_changes() {
    let f = ImageFixture::new(DeltaKind::Delta);
    let (t2, t3) = (tree(2, f.port), tree(3, f.port));
    let (removed, mut changed) = diff(&t2, &t3);
    changed.insert(
        format!("usr/share/{}", "n".repeat(300)),
        Node::File(b"long".to_vec(), 0o644),
    );
    republish_delta(&f, &removed, &changed);
    f.run(&["image", "download"]).expect(0);
    let before = device(&f);
    let run = f.run(&["image", "apply"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    assert!(run.stderr().contains("255"), "{}", run.stderr());
    assert_same(&before, &device(&f), "long name");
    assert!(build_number(&f.root).contains("build_number: 1"));
    recover_finds_nothing(&f);
}

/// Finding 7: an immutable or append-only file the update replaces or removes, or an
/// immutable directory it writes into, stops the apply before anything changes (the
/// real flags, set as `chattr` does; the temporary directory must be on a file system
/// that has them, as ext4 and tmpfs do).
#[test]
fn an_immutable_file_the_update_replaces_stops_the_apply_before_anything_changes() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (CAP_LINUX_IMMUTABLE) to set inode flags");
        return;
    }
    use rustix::fs::IFlags;
    let f = ImageFixture::new(DeltaKind::Zdelta);
    f.run(&["image", "download"]).expect(0);
    for (path, flag) in [
        ("usr/bin/tool", IFlags::IMMUTABLE),
        ("usr/share/doc/pkg/changelog.gz", IFlags::APPEND),
        ("usr/share/doc", IFlags::IMMUTABLE),
        // Inside a directory the update replaces by a symlink.
        ("usr/lib/kind/x", IFlags::IMMUTABLE),
        // A file the update removes.
        ("usr/share/doc/odd", IFlags::IMMUTABLE),
    ] {
        let Some(guard) = InodeFlag::set(&f.root.join(path), flag) else {
            eprintln!("skipped: the temporary directory has no inode flags");
            return;
        };
        let before = device(&f);
        let run = f.run(&["image", "apply"]);
        assert_eq!(run.code(), 2, "{path}: {}", run.stderr());
        assert!(run.stderr().contains(path), "{path}: {}", run.stderr());
        assert_same(&before, &device(&f), path);
        assert!(build_number(&f.root).contains("build_number: 1"));
        recover_finds_nothing(&f);
        drop(guard);
    }
    f.run(&["image", "apply"]).expect(0);
    expect_tree(&f.root, 3, f.port);
}

/// How many operations the commit of the fixture's update has (from a run on a copy).
fn commit_operations(f: &ImageFixture, pristine: &Path) -> u64 {
    let run = f.run(&["--json", "image", "apply"]);
    run.expect(0);
    let applied = run
        .json_lines()
        .into_iter()
        .find(|l| l["event"] == "applied")
        .unwrap();
    copy_tree(pristine, &f.root);
    applied["operations"].as_u64().unwrap()
}

/// Finding 7: an I/O error injected at any operation of the commit rolls everything
/// back: exit 5, the tree exactly build 1, nothing left to recover.
#[test]
fn a_failure_in_the_middle_of_the_commit_rolls_back_to_the_old_build() {
    let f = ImageFixture::new(DeltaKind::Zdelta);
    f.run(&["image", "download"]).expect(0);
    let pristine = f.dir.path().join("pristine");
    copy_tree(&f.root, &pristine);
    let before = device(&f);
    let total = commit_operations(&f, &pristine);
    assert!(total > 20, "{total}");
    for k in [1, 2, total / 3, total / 2, total - 1, total] {
        let at = format!("image-commit:{k}");
        let run = f.run_env(&["image", "apply"], &[("RELEASE_UPGRADER_FAIL_AT", &at)]);
        assert_eq!(run.code(), 5, "{at}: {}", run.stderr());
        assert!(
            run.stderr().contains("rolled back"),
            "{at}: {}",
            run.stderr()
        );
        assert_same(&before, &device(&f), &at);
        recover_finds_nothing(&f);
        assert!(!state(&f).join("staging").exists(), "{at}");
    }
    f.run(&["image", "apply"]).expect(0);
    expect_tree(&f.root, 3, f.port);
}

/// Finding 7: SIGKILL during the commit, then `recover`: the commit is finished (build
/// 3 exactly); SIGKILL during a roll back: the roll back is finished (build 1 exactly);
/// a recovery whose roll forward fails rolls back.
#[test]
fn sigkill_during_the_commit_or_its_roll_back_ends_at_one_build_exactly() {
    let f = ImageFixture::new(DeltaKind::Zdelta);
    f.run(&["image", "download"]).expect(0);
    let pristine = f.dir.path().join("pristine");
    copy_tree(&f.root, &pristine);
    let before = device(&f);
    let total = commit_operations(&f, &pristine);
    let killed = |env: &[(&str, &str)]| {
        let run = f.run_env(&["image", "apply"], env);
        assert_eq!(run.0.status.signal(), Some(9), "{env:?}: {}", run.stderr());
    };
    for k in [1, total / 4, total / 2, total - 1, total] {
        copy_tree(&pristine, &f.root);
        let at = format!("image-commit:{k}");
        killed(&[("RELEASE_UPGRADER_CRASH_AT", &at)]);
        f.run(&["image", "recover"])
            .expect(0)
            .mentions(&["finished: build 3"]);
        expect_tree(&f.root, 3, f.port);
        recover_finds_nothing(&f);
    }
    for (fail, crash) in [(total / 2, 1), (total / 2, total / 4), (total, total - 1)] {
        copy_tree(&pristine, &f.root);
        let (fail, crash) = (
            format!("image-commit:{fail}"),
            format!("image-rollback:{crash}"),
        );
        killed(&[
            ("RELEASE_UPGRADER_FAIL_AT", &fail),
            ("RELEASE_UPGRADER_CRASH_AT", &crash),
        ]);
        f.run(&["image", "recover"]).expect(0).mentions(&["undone"]);
        assert_same(&before, &device(&f), &format!("{fail} {crash}"));
        recover_finds_nothing(&f);
    }
    // Killed in the commit; the recovery's roll forward fails: it rolls back instead.
    copy_tree(&pristine, &f.root);
    killed(&[(
        "RELEASE_UPGRADER_CRASH_AT",
        &format!("image-commit:{}", total / 2),
    )]);
    let run = f.run_env(
        &["image", "recover"],
        &[(
            "RELEASE_UPGRADER_FAIL_AT",
            &format!("image-commit:{}", total / 2 + 3),
        )],
    );
    run.expect(0).mentions(&["undone"]);
    assert_same(&before, &device(&f), "roll forward failed");
    recover_finds_nothing(&f);
}

/// A mount point in the tree holds another file system (a device's tmpfs `/tmp`, user
/// data bind-mounted over a system path): the apply leaves it alone, as it does a
/// preserved path, says so, and nothing inside it is touched; the rest of the tree
/// becomes the new build. Run in a private mount namespace (`unshare -m`), so nothing
/// mounted is seen outside it.
#[test]
fn mount_points_are_left_alone_and_never_crossed() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount");
        return;
    }
    let apply_with_mount = |f: &ImageFixture, at: &str| -> String {
        std::fs::create_dir_all(f.root.join(at)).unwrap();
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                r#"mount -t tmpfs tmpfs "$1/$3" || exit 99
                echo inside > "$1/$3/inside"
                "$2" --root "$1" image apply 2>&1
                echo "exit $?"
                test -f "$1/$3/inside" && echo "mount kept"
                umount "$1/$3""#,
            )
            .arg("sh")
            .arg(&f.root)
            .arg(crate::support::BIN)
            .arg(at)
            .current_dir(f.dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The full image of the path would remove usr/share/doc/mnt (it is not in the
    // image): as a mount point, it stays, with what is inside it.
    let f = ImageFixture::new(DeltaKind::Delta);
    f.run(&["image", "download"]).expect(0);
    std::fs::create_dir_all(f.root.join("usr/share/doc/mnt")).unwrap();
    let out = apply_with_mount(&f, "usr/share/doc/mnt");
    assert!(
        out.contains("exit 0") && out.contains("left /usr/share/doc/mnt alone"),
        "{out}"
    );
    assert!(out.contains("mount kept"), "{out}");
    std::fs::remove_dir(f.root.join("usr/share/doc/mnt")).unwrap();
    expect_tree(&f.root, 3, f.port);
    recover_finds_nothing(&f);
    let f = ImageFixture::new(DeltaKind::Delta);
    f.run(&["image", "download"]).expect(0);
    // /proc is preserved: the apply goes through and leaves it mounted and whole.
    let out = apply_with_mount(&f, "proc");
    assert!(
        out.contains("exit 0") && out.contains("mount kept"),
        "{out}"
    );
    std::fs::remove_dir(f.root.join("proc")).unwrap();
    expect_tree(&f.root, 3, f.port);
}
