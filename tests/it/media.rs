//! Upgrade media end to end: `release-upgrader-publish media build` makes a medium (and
//! its ISO image) from the tiny releases' archive and the helpers; the client finds it,
//! verifies it and upgrades from it with the network dead, the clock two months on,
//! read-only (the ISO mounted in a private mount namespace), and with no apt lists stored.
//! Beside each check its hostile twin: a medium signed by an unknown key, a tampered
//! pocket, an older medium after a newer one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::{BIN, PUBLISH_BIN, Run, other_key, test_key};
use crate::upgrade::{World, audit_clean};

/// Where the dead network listens: the archive's old address, which now accepts
/// connections and drops them at once, counting them. Any attempt to reach the network
/// shows; a retry loop shows as several.
struct DeadNetwork {
    attempts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeadNetwork {
    /// Stops `w`'s server and listens on its address instead.
    fn replace(w: &mut World) -> DeadNetwork {
        let addr = w.server.as_ref().expect("the world is online").addr();
        w.go_offline();
        let listener = (0..50)
            .find_map(|_| {
                TcpListener::bind(addr).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    None
                })
            })
            .expect("the archive's port is free again");
        let attempts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (attempts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                if stream.is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        DeadNetwork {
            attempts,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Drop for DeadNetwork {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The distribution's secret key (the test key, which also signs the archive).
fn secret_key(w: &World, key: &ru_publish::SigningKey, name: &str) -> PathBuf {
    let dir = w.work.join(name);
    if !dir.join("secret.asc").exists() {
        key.write_to(&dir).unwrap();
    }
    dir.join("secret.asc")
}

/// `release-upgrader-publish media build` of beta from `w`'s archive into `out`, signed
/// by `key`, with `extra` flags.
fn media_build(w: &World, key: &ru_publish::SigningKey, out: &Path, extra: &[&str]) -> Run {
    let secret = secret_key(
        w,
        key,
        if std::ptr::eq(key, test_key()) {
            "key"
        } else {
            "other-key"
        },
    );
    let mut cmd = Command::new(PUBLISH_BIN);
    cmd.args(["media", "build"])
        .args(w.helper_debs())
        .args(["--release", "beta", "--arch", "amd64", "--archive"])
        .arg(w.srv.join("archive"))
        .arg("--keyring")
        .arg(&w.keyring)
        .arg("--key")
        .arg(secret)
        .arg("--cache")
        .arg(w.work.join("cache"))
        .arg("--out")
        .arg(out)
        .args(extra);
    Run(cmd.output().unwrap())
}

/// The medium's tree: everything `media build` promises, and nothing that expires.
fn assert_medium_layout(media: &Path) {
    let info = std::fs::read_to_string(media.join(".disk/info")).unwrap();
    assert_eq!(info.lines().count(), 1, "{info}");
    assert!(
        info.contains("\"beta\"") && info.contains("amd64"),
        "{info}"
    );
    assert_eq!(
        std::fs::read_link(media.join("dists/stable")).unwrap(),
        Path::new("beta")
    );
    let pocket = media.join("dists/beta/main/dist-upgrader/binary-amd64");
    for release in [media.join("dists/beta/Release"), pocket.join("Release")] {
        let text = std::fs::read_to_string(&release).unwrap();
        assert!(text.contains("Codename: beta\n"), "{text}");
        assert!(text.contains("Date: "), "{text}");
        assert!(
            !text.contains("Valid-Until"),
            "{}: {text}",
            release.display()
        );
    }
    assert!(pocket.join("InRelease").is_file());
    assert!(
        std::fs::read_to_string(media.join("dists/beta/main/binary-amd64/Packages"))
            .unwrap()
            .contains("Package: demo-newtool\n")
    );
}

/// A command run in a private mount namespace of its own, where `medium` is mounted
/// read-only at `mount_point` for the command's lifetime: an ISO image with the kernel's
/// iso9660 where it has one, else with fuseiso (unmounted again afterwards, so its
/// daemon ends); a directory with a read-only bind. Nothing is ever mounted in this
/// process's namespace.
fn mounted(medium: &Path, mount_point: &Path, command: &Command) -> Command {
    const SCRIPT: &str = r#"
medium=$1 mnt=$2
shift 2
mkdir -p "$mnt"
fuse=
if [ -d "$medium" ]; then
  mount --bind "$medium" "$mnt"
  mount -o remount,bind,ro "$mnt"
elif ! mount -t iso9660 -o loop,ro "$medium" "$mnt" 2>/dev/null; then
  # In the foreground, as this shell's child: waited for after the unmount.
  fuseiso -n "$medium" "$mnt" -f -o ro &
  fuse=$!
  tries=0
  until mountpoint -q "$mnt"; do
    tries=$((tries + 1))
    if [ $tries -gt 100 ] || ! kill -0 $fuse 2>/dev/null; then
      echo "cannot mount $medium" >&2; exit 97
    fi
    sleep 0.05
  done
fi
if touch "$mnt/.written" 2>/dev/null; then echo "$mnt is writable" >&2; exit 98; fi
set +e
"$@"
rc=$?
if [ -n "$fuse" ]; then fusermount -u "$mnt" || rc=99; wait $fuse; fi
exit $rc
"#;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        SCRIPT,
        "sh",
    ])
    .arg(medium)
    .arg(mount_point)
    .arg(command.get_program())
    .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
    cmd
}

/// `command` with the clock `offset` ahead (libfaketime; the test binaries are
/// dynamically linked, so its LD_PRELOAD takes).
fn faked(offset: &str, command: &Command) -> Command {
    let mut cmd = Command::new("faketime");
    cmd.arg("-f")
        .arg(offset)
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
    cmd
}

/// No process left from a mount below `dir` (a fuseiso daemon outliving its namespace
/// would keep the image open).
fn assert_nothing_mounted_from(dir: &Path) {
    let needle = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !(cmdline.contains("fuseiso") && cmdline.contains(&needle)),
            "left running: {cmdline}"
        );
    }
    assert!(crate::debian_root::mounted_below(dir).is_empty());
}

fn can_mount() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && Command::new("unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: needs root and unshare --mount");
    }
    ok
}

#[test]
fn media_build_writes_a_medium_that_never_expires_and_refuses_an_unverified_archive() {
    let w = World::new();
    let media = w.work.join("media");
    media_build(
        &w,
        test_key(),
        &media,
        &["--packages", "demo-base,demo-hello"],
    )
    .expect(0)
    .mentions(&["upgrade media for beta amd64", "2 helpers"]);
    assert_medium_layout(&media);
    // The packages asked for and what they depend on (demo-sh, demo-newtool), no more.
    let packages =
        std::fs::read_to_string(media.join("dists/beta/main/binary-amd64/Packages")).unwrap();
    let mut names: Vec<&str> = packages
        .lines()
        .filter_map(|l| l.strip_prefix("Package: "))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["demo-base", "demo-hello", "demo-newtool", "demo-sh"]
    );
    Run(Command::new(BIN)
        .args(["--arch", "amd64", "cdrom", "detect"])
        .arg(&media)
        .output()
        .unwrap())
    .expect(0)
    .mentions(&[
        "release: beta",
        "helpers for amd64: yes",
        "package archive: yes",
    ]);
    // The seed's place for the pocket, and Ubuntu's binary-all, serve as well.
    for (name, place) in [
        ("seed", "dists/beta/dist-upgrader/binary-amd64"),
        ("all", "dists/beta/main/dist-upgrader/binary-all"),
    ] {
        let copy = w.work.join(name);
        crate::support::copy_tree(&media, &copy);
        std::fs::create_dir_all(copy.join(place).parent().unwrap()).unwrap();
        std::fs::rename(
            copy.join("dists/beta/main/dist-upgrader/binary-amd64"),
            copy.join(place),
        )
        .unwrap();
        w.run(&["bootstrap", "--dry-run", "--cdrom", copy.to_str().unwrap()])
            .expect(0)
            .mentions(&["release-upgrader-apt", "release-upgrader-dpkg"]);
        Run(Command::new(BIN)
            .args(["--arch", "amd64", "cdrom", "detect"])
            .arg(&copy)
            .output()
            .unwrap())
        .expect(0)
        .mentions(&[&format!("helpers for amd64: yes ({place})").replace("beta", "stable")]);
    }
    // A medium goes into a new or empty directory only.
    media_build(&w, test_key(), &media, &[])
        .expect(2)
        .mentions(&["not empty"]);
    // The archive must verify with the keyring given: another key's is refused, and
    // nothing is written.
    let unverified = w.work.join("unverified");
    let other_keyring = w.work.join("other.gpg");
    std::fs::write(&other_keyring, other_key().public_keyring()).unwrap();
    let mut cmd = Command::new(PUBLISH_BIN);
    cmd.args(["media", "build"])
        .args(w.helper_debs())
        .args(["--release", "beta", "--arch", "amd64", "--archive"])
        .arg(w.srv.join("archive"))
        .arg("--keyring")
        .arg(&other_keyring)
        .arg("--key")
        .arg(secret_key(&w, test_key(), "key"))
        .arg("--out")
        .arg(&unverified);
    Run(cmd.output().unwrap()).expect(3);
    assert!(!unverified.exists());
}

/// The whole point of media: the ISO image `media build --iso` wrote, mounted read-only,
/// upgrades a root that never stored an apt list, with the network dead and the clock
/// sixty days on. The network is tried once (then the media stand in: no retry loop),
/// the root's own source is the distribution's (the media's Release carries its archive
/// key) and moves to beta instead of being disabled.
#[test]
fn an_iso_built_by_media_build_upgrades_offline_sixty_days_later() {
    if !can_mount() {
        return;
    }
    let mut w = World::new();
    assert!(
        std::fs::read_dir(w.root.join("var/lib/apt/lists"))
            .unwrap()
            .flatten()
            .all(|e| e.file_type().unwrap().is_dir()),
        "the root must have no stored lists"
    );
    let tree = w.work.join("media");
    let iso = w.work.join("demo-2-amd64.iso");
    media_build(&w, test_key(), &tree, &["--iso", iso.to_str().unwrap()])
        .expect(0)
        .mentions(&["DEMO_2_AMD64"]);
    let dead = DeadNetwork::replace(&mut w);
    let mnt = w.work.join("cdrom");
    let upgrade = w.command(&["upgrade", "-y", "-f", "noninteractive", "--cdrom"]);
    let mut upgrade = faked("+60d", &upgrade);
    upgrade.arg(&mnt);
    let started = std::time::Instant::now();
    let run = Run(mounted(&iso, &mnt, &upgrade).output().unwrap());
    let took = started.elapsed();
    assert_nothing_mounted_from(&w.work);
    run.expect(0).mentions(&[
        "The network cannot be reached",
        "continuing without it, from the media",
    ]);
    assert!(
        w.read("/etc/os-release").contains("VERSION_CODENAME=beta"),
        "{}",
        run.stderr()
    );
    // Every package at its beta version; demo-legacy, which beta no longer has, stays:
    // with no lists stored, nothing is known to have come from the distribution, and
    // only that is ever removed as obsolete.
    let installed = w.installed();
    for line in [
        "demo-base 2 ii",
        "demo-conf 2.0-1 ii",
        "demo-hello 2.0-1 ii",
        "demo-newtool 1.0 ii",
        "demo-sh 2 ii",
        "demo-legacy 1.0 ii",
    ] {
        assert!(installed.contains(line), "{line}: {installed}");
    }
    audit_clean(&w.root);
    eprintln!("{}", run.stderr());
    assert_eq!(
        dead.attempts(),
        1,
        "one attempt tells the network is down; none after it"
    );
    let sources = String::from_utf8(w.sources()).unwrap();
    assert!(sources.contains("Suites: beta"), "{sources}");
    assert!(!sources.contains("Enabled: no"), "{sources}");
    assert!(
        !run.stderr().contains("Disabling the third-party source"),
        "{}",
        run.stderr()
    );
    assert!(!run.stderr().contains("retrying"), "{}", run.stderr());
    assert!(
        !w.root
            .join("etc/apt/sources.list.d/release-upgrader-media.list")
            .exists()
    );
    eprintln!("upgrade from the ISO took {took:?}");
}

/// `--without-network`: not one connection, and apt reads only the media. Then the
/// media's pocket is tampered with, or signed by a key nobody trusts: refused (exit 3)
/// before anything changes.
#[test]
fn without_network_nothing_is_fetched_and_tampered_or_foreign_media_are_refused() {
    let mut w = World::new();
    let media = w.work.join("media");
    media_build(&w, test_key(), &media, &[]).expect(0);
    let foreign = w.work.join("foreign");
    media_build(&w, other_key(), &foreign, &[]).expect(0);
    let tampered = w.work.join("tampered");
    crate::support::copy_tree(&media, &tampered);
    let packages = tampered.join("dists/beta/main/dist-upgrader/binary-amd64/Packages.xz");
    let mut bytes = std::fs::read(&packages).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&packages, bytes).unwrap();
    // A system that reached its mirror once: apt stored the lists of alpha.
    let update = Command::new("apt-get")
        .arg("-o")
        .arg(format!("Dir={}", w.root.display()))
        .arg("-o")
        .arg(format!(
            "Dir::State::status={}/var/lib/dpkg/status",
            w.root.display()
        ))
        .args(["-o", "APT::Sandbox::User=root", "-qq", "update"])
        .output()
        .unwrap();
    assert!(
        update.status.success(),
        "{}",
        String::from_utf8_lossy(&update.stderr)
    );
    let dead = DeadNetwork::replace(&mut w);
    let before = w.before();
    for medium in [&foreign, &tampered] {
        w.run(&[
            "--without-network",
            "upgrade",
            "-y",
            "--cdrom",
            medium.to_str().unwrap(),
        ])
        .expect(3);
        w.assert_put_back(&before);
    }
    let run = w.run(&[
        "--without-network",
        "upgrade",
        "-y",
        "-f",
        "noninteractive",
        "--cdrom",
        media.to_str().unwrap(),
    ]);
    run.expect(0).mentions(&["--without-network"]);
    // The stored lists told what came from the distribution: demo-legacy, which beta
    // no longer has, left as obsolete.
    w.assert_all_on_beta("without network");
    assert_eq!(dead.attempts(), 0, "{}", run.stderr());
    // apt read beta from the media only, and kept alpha's lists.
    let lists: Vec<String> = std::fs::read_dir(w.root.join("var/lib/apt/lists"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let beta: Vec<&String> = lists.iter().filter(|n| n.contains("dists_beta_")).collect();
    assert!(
        !beta.is_empty() && beta.iter().all(|n| n.contains("media")),
        "{lists:?}"
    );
    assert!(
        lists.iter().any(|n| n.contains("dists_alpha_")),
        "{lists:?}"
    );
    // Without media an upgrade without the network has nothing to upgrade from.
    w.run(&["--without-network", "upgrade", "-y", "--dry-run"])
        .expect(2)
        .mentions(&["needs upgrade media"]);
}

/// Media do not expire: a pocket whose Valid-Until passed long ago (made by `pocket
/// build --valid-days 1` for the network) is read from a medium sixty days on, while
/// the same pocket on the network is refused as expired, which also shows the clock
/// did move. `bootstrap --cdrom` takes the helpers from the medium; an older medium
/// after a newer one is a rollback (exit 3).
#[test]
fn media_pockets_do_not_expire_bootstrap_takes_them_and_older_media_roll_back() {
    let mut w = World::new();
    let older = w.work.join("older");
    media_build(&w, test_key(), &older, &[]).expect(0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let media = w.work.join("media");
    media_build(&w, test_key(), &media, &[]).expect(0);
    // The network's pocket, with a Valid-Until a day away, replaces the medium's.
    let base = w.work.join("pocket-build");
    let mut cmd = Command::new(PUBLISH_BIN);
    cmd.args(["pocket", "build"])
        .args(w.helper_debs())
        .args(["--codename", "beta", "--arch", "amd64", "--valid-days", "1"])
        .arg("--out")
        .arg(&base)
        .arg("--key")
        .arg(secret_key(&w, test_key(), "key"));
    Run(cmd.output().unwrap()).expect(0);
    let built = std::fs::canonicalize(base.join("dist-upgrader-amd64/current")).unwrap();
    let pocket = media.join("dists/beta/main/dist-upgrader/binary-amd64");
    std::fs::remove_dir_all(&pocket).unwrap();
    crate::support::copy_tree(&built, &pocket);
    assert!(
        std::fs::read_to_string(pocket.join("Release"))
            .unwrap()
            .contains("Valid-Until")
    );
    let network = w.srv.join("dists/beta/main/dist-upgrader-amd64/current");
    std::fs::remove_dir_all(&network).unwrap();
    crate::support::copy_tree(&built, &network);
    let run = Run(faked("+60d", &w.command(&["check"])).output().unwrap());
    run.expect(3).mentions(&["expired on"]);
    w.go_offline();
    let run = Run(faked(
        "+60d",
        &w.command(&[
            "bootstrap",
            "--no-reexec",
            "--cdrom",
            media.to_str().unwrap(),
        ]),
    )
    .output()
    .unwrap());
    run.expect(0).mentions(&["Installed 2 helpers"]);
    assert!(w.root.join("usr/lib/release-upgrader/bin/apt-get").exists());
    // The floor is the newer medium's Date now.
    let run = w.run(&["bootstrap", "--dry-run", "--cdrom", older.to_str().unwrap()]);
    run.expect(3).mentions(&["older"]);
}

/// With no release list to read (the network is down), `check` finds the mounted media
/// `cdrom detect` finds and says what they carry and how to upgrade from them; `upgrade`
/// without a terminal does not take them on its own, and names the `--cdrom` command.
/// Media signed by a key nobody trusts are not offered.
#[test]
fn check_and_upgrade_offer_mounted_media_when_the_release_list_cannot_be_read() {
    if !can_mount() {
        return;
    }
    let mut w = World::new();
    let media = w.work.join("media");
    media_build(&w, test_key(), &media, &[]).expect(0);
    let foreign = w.work.join("foreign");
    media_build(&w, other_key(), &foreign, &[]).expect(0);
    w.go_offline();
    let mnt = w.work.join("mnt");
    let check = Run(mounted(&media, &mnt, &w.command(&["--json", "check"]))
        .output()
        .unwrap());
    check.expect(0);
    let event = crate::events::assert_events(&check)
        .into_iter()
        .find(|e| e["event"] == "check")
        .unwrap();
    assert_eq!(event["available"], true);
    assert_eq!(event["source"], "media");
    assert_eq!(event["media"]["path"], mnt.to_str().unwrap());
    assert_eq!(event["target"]["dist"], "beta");
    assert!(
        event["next_step"]
            .as_str()
            .unwrap()
            .ends_with(&format!("upgrade --cdrom {}", mnt.display())),
        "{event}"
    );
    Run(mounted(&media, &mnt, &w.command(&["check"]))
        .output()
        .unwrap())
    .expect(0)
    .mentions(&["available on the upgrade media at", "--cdrom"]);
    let before = w.before();
    let upgrade = Run(mounted(&media, &mnt, &w.command(&["upgrade", "-y"]))
        .output()
        .unwrap());
    upgrade
        .expect(4)
        .mentions(&[&format!("upgrade --cdrom {}", mnt.display())]);
    w.assert_put_back(&before);
    Run(mounted(&foreign, &mnt, &w.command(&["check"]))
        .output()
        .unwrap())
    .expect(4);
    assert_nothing_mounted_from(&w.work);
}

/// On a terminal, the upgrade that finds no release list asks before it takes the mounted
/// media, and upgrades from them when the user says yes.
#[test]
fn on_a_terminal_the_upgrade_asks_before_it_takes_mounted_media() {
    use std::time::Duration;
    if !can_mount() {
        return;
    }
    let mut w = World::new();
    let media = w.work.join("media");
    media_build(&w, test_key(), &media, &[]).expect(0);
    let dead = DeadNetwork::replace(&mut w);
    let mnt = w.work.join("mnt");
    let mut term =
        crate::interactive::Terminal::start(&mounted(&media, &mnt, &w.command(&["upgrade"])));
    term.expect(
        &format!("from the media at {} instead?", mnt.display()),
        Duration::from_secs(60),
    );
    term.type_keys("y\r");
    term.expect("Do you want to start the upgrade?", Duration::from_secs(60));
    term.type_keys("y\r");
    let code = term.wait(Duration::from_secs(120));
    assert_eq!(code, 0, "{}", term.text());
    assert!(w.read("/etc/os-release").contains("VERSION_CODENAME=beta"));
    assert!(
        term.text()
            .contains("continuing without it, from the media"),
        "{}",
        term.text()
    );
    // The release list (meta-release) was tried, then the archive once: no retry loop.
    // (the meta-release: the first attempt and --retries 3)
    assert_eq!(dead.attempts(), 4 + 1, "{}", term.text());
    assert_nothing_mounted_from(&w.work);
}
