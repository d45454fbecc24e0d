//! `release-upgrader image opt-out` / `opt-in` against a fixture mirror served from
//! 127.0.0.1: suites whose signed `InRelease` lists several components (with and without
//! `-updates`, `-security` in an archive of its own or in the mirror), the written
//! sources checked by a real `apt-get update`; every hostile mirror (unreachable, signed
//! by an unknown key, tampered, serving another release) refused with nothing written;
//! and an opt-out on a read-only bind-mounted root, staged, then finished after the
//! "reboot".

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ru_format::digest::Sha256;
use ru_publish::SigningKey;
use ru_testing::serve::Server;
use serde_json::{Value, json};

use crate::debian_root::{TestDir, mounted_below};
use crate::image_client::{as_root, materialize, snapshot, tree};
use crate::support::{BIN, Run, other_key, test_key};

const KEYRING: &str = "usr/share/keyrings/debian-archive-keyring.gpg";
const SOURCES: &str = "etc/apt/sources.list.d/release-upgrader-image.list";
const FLAG: &str = "userdata/.writable_image";
const STATE: &str = "var/lib/release-upgrader/image";

/// The architecture apt on this machine reads indices for (the fixture's suites carry it).
fn arch() -> String {
    ru_client::root::host_architecture()
}

/// A suite to publish: `dists/<dist>/` of an archive.
struct Suite<'a> {
    dist: &'a str,
    codename: &'a str,
    suite: &'a str,
    /// Listed in `Components`, each with a `Packages` index for [`arch`].
    components: &'a [&'a str],
    key: &'a SigningKey,
}

impl<'a> Suite<'a> {
    fn new(dist: &'a str, components: &'a [&'a str]) -> Self {
        Suite {
            dist,
            codename: dist,
            suite: dist,
            components,
            key: test_key(),
        }
    }
}

/// A device (image build 1 of bookworm, its archive keyring installed) and a mirror.
struct Device {
    dir: TestDir,
    root: PathBuf,
    srv: PathBuf,
    server: Server,
}

impl Device {
    /// The device, and a Debian-like mirror: `debian` with bookworm (main, contrib,
    /// non-free and the installer's main/debian-installer) and bookworm-updates (main,
    /// contrib), `debian-security` beside it with bookworm-security (main, contrib).
    fn new() -> Self {
        let d = Device::bare();
        d.publish(
            "debian",
            &Suite::new(
                "bookworm",
                &["main", "contrib", "non-free", "main/debian-installer"],
            ),
        );
        d.publish(
            "debian",
            &Suite::new("bookworm-updates", &["main", "contrib"]),
        );
        d.publish(
            "debian-security",
            &Suite::new("bookworm-security", &["main", "contrib"]),
        );
        d
    }

    /// The device and an empty mirror.
    fn bare() -> Self {
        let dir = TestDir::new();
        let root = dir.path().join("root");
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        materialize(&tree(1, 9), &root);
        for d in ["userdata", "var/lib/release-upgrader", "usr/share/keyrings"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join(KEYRING), test_key().public_keyring()).unwrap();
        let server = Server::start(&srv).unwrap();
        Device {
            dir,
            root,
            srv,
            server,
        }
    }

    fn uri(&self, archive: &str) -> String {
        format!("http://127.0.0.1:{}/{archive}", self.server.addr().port())
    }

    /// Publishes `suite` in `archive`: a `Packages` index per component and an
    /// `InRelease` listing them, clearsigned by the suite's key.
    fn publish(&self, archive: &str, suite: &Suite<'_>) {
        let arch = arch();
        let dists = self.srv.join(archive).join("dists").join(suite.dist);
        let mut sums = String::new();
        for component in suite.components {
            let name = format!("{component}/binary-{arch}/Packages");
            let packages = format!(
                "Package: hello-{}\nVersion: 1.0\nArchitecture: {arch}\n\
                 Filename: pool/h/hello_1.0_{arch}.deb\nSize: 1\nSHA256: {}\n\
                 Description: a package of {} {component}\n",
                component.replace('/', "-"),
                "0".repeat(64),
                suite.dist
            );
            std::fs::create_dir_all(dists.join(&name).parent().unwrap()).unwrap();
            std::fs::write(dists.join(&name), &packages).unwrap();
            sums.push_str(&format!(
                " {} {} {name}\n",
                Sha256::of(packages.as_bytes()).to_hex(),
                packages.len()
            ));
        }
        let release = format!(
            "Origin: Debian\nLabel: Debian\nSuite: {}\nCodename: {}\nDate: {}\n\
             Architectures: {arch}\nComponents: {}\nDescription: test archive\nSHA256:\n{sums}",
            suite.suite,
            suite.codename,
            ru_format::date::format(ru_format::date::now() - 3600),
            suite.components.join(" "),
        );
        std::fs::write(
            dists.join("InRelease"),
            suite.key.clearsign(release.as_bytes()).unwrap(),
        )
        .unwrap();
    }

    /// The client on this device, in the test's directory, with no proxy.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env("RELEASE_UPGRADER_RETRY_DELAY_MS", "10")
            .env_remove("RELEASE_UPGRADER_MIRROR")
            .env_remove("RELEASE_UPGRADER_SECURITY_MIRROR");
        for v in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
            cmd.env_remove(v);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        Run(self.command(args).output().unwrap())
    }

    fn opt_out(&self, extra: &[&str]) -> Run {
        let mirror = self.uri("debian");
        let mut args = vec!["image", "opt-out", "--mirror", mirror.as_str()];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn mode(&self) -> String {
        let run = self.run(&["--json", "image", "info"]);
        run.expect(0);
        run.json_lines()[0]["mode"].as_str().unwrap().to_owned()
    }

    /// The sources lines written (comments left out).
    fn sources(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join(SOURCES))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    fn line(&self, archive: &str, suite: &str, components: &str) -> String {
        format!(
            "deb [signed-by=/{KEYRING}] {} {suite} {components}",
            self.uri(archive)
        )
    }
}

/// Runs `apt-get update` with the device's own configuration (`Dir` is the root: the
/// host's apt configuration and sources are not read) and the device's keyrings where
/// `signed-by` names them: in a mount namespace of its own, the root's
/// `/usr/share/keyrings` is bind-mounted over the host's. Returns apt's output and the
/// index files it stored.
fn apt_update(root: &Path) -> (bool, String, Vec<String>) {
    for d in [
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
        "var/log/apt",
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/trusted.gpg.d",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let conf = root.parent().unwrap().join("apt.conf");
    let arch = arch();
    std::fs::write(
        &conf,
        format!(
            "Dir \"{root}/\";\nDir::State::status \"{root}/var/lib/dpkg/status\";\n\
             APT::Sandbox::User \"root\";\nAPT::Architecture \"{arch}\";\n\
             APT::Architectures {{ \"{arch}\"; }};\nAcquire::Languages \"none\";\n\
             Acquire::http::Proxy \"DIRECT\";\n",
            root = root.display()
        ),
    )
    .unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-euc"])
        .arg(r#"mount --bind "$1/usr/share/keyrings" /usr/share/keyrings; exec apt-get -q update"#)
        .arg("sh")
        .arg(root)
        .env("APT_CONFIG", &conf)
        .env("LC_ALL", "C")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lists: Vec<String> = std::fs::read_dir(root.join("var/lib/apt/lists"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_Packages") || n.ends_with("_InRelease"))
        .collect();
    lists.sort();
    let clean = out.status.success()
        && !text
            .lines()
            .any(|l| l.starts_with("W:") || l.starts_with("E:"));
    (clean, text, lists)
}

/// Asserts that apt read every (archive, suite, component) of `want`, from InRelease.
#[track_caller]
fn assert_apt_reads(root: &Path, want: &[(&str, &str, &[&str])]) {
    let (clean, text, lists) = apt_update(root);
    assert!(clean, "apt-get update:\n{text}");
    let arch = arch();
    for (archive, suite, components) in want {
        let release = format!("_{archive}_dists_{suite}_InRelease");
        assert!(
            lists.iter().any(|l| l.ends_with(&release)),
            "{release} not in {lists:?}\n{text}"
        );
        for c in *components {
            let index = format!("_{archive}_dists_{suite}_{c}_binary-{arch}_Packages");
            assert!(
                lists.iter().any(|l| l.ends_with(&index)),
                "{index} not in {lists:?}\n{text}"
            );
        }
    }
    assert_eq!(
        lists.len(),
        want.iter().map(|(_, _, c)| c.len() + 1).sum::<usize>(),
        "{lists:?}"
    );
}

/// The sources hold each suite the mirrors have, with every component the release lists
/// for this architecture but the installer's, signed-by the device's archive keyring,
/// and apt updates from them cleanly. (Before: `deb M bookworm main` and
/// `bookworm-updates main`, no security, no signed-by.)
#[test]
fn opt_out_writes_verified_sources_apt_updates_from() {
    let d = Device::new();
    assert_eq!(d.mode(), "image");
    let run = d.opt_out(&[]);
    run.expect(0).mentions(&[
        "Opted out of image updates at build 1",
        "bookworm-security (main contrib) from",
        "/userdata/.writable_image is set",
    ]);
    assert_eq!(
        d.sources(),
        [
            d.line("debian", "bookworm", "main contrib non-free"),
            d.line("debian", "bookworm-updates", "main contrib"),
            d.line("debian-security", "bookworm-security", "main contrib"),
        ]
    );
    assert!(d.root.join(FLAG).exists());
    assert!(!d.root.join(STATE).join("opt-journal.json").exists());
    assert_eq!(d.mode(), "apt");
    let record: Value =
        serde_json::from_slice(&std::fs::read(d.root.join(STATE).join("opt-out.json")).unwrap())
            .unwrap();
    assert_eq!(record["keyring"], json!(format!("/{KEYRING}")));
    assert_eq!(record["suites"].as_array().unwrap().len(), 3);
    assert_apt_reads(
        &d.root,
        &[
            ("debian", "bookworm", &["main", "contrib", "non-free"]),
            ("debian", "bookworm-updates", &["main", "contrib"]),
            ("debian-security", "bookworm-security", &["main", "contrib"]),
        ],
    );
    // apt checks with the keyring signed-by names, the device's: another key there, and
    // the same sources fail.
    std::fs::write(d.root.join(KEYRING), other_key().public_keyring()).unwrap();
    let (clean, text, _) = apt_update(&d.root);
    assert!(!clean && text.contains("NO_PUBKEY"), "{text}");
    std::fs::write(d.root.join(KEYRING), test_key().public_keyring()).unwrap();
    // Idempotent: a second opt-out changes nothing and asks the mirror nothing.
    let before = snapshot(&d.root);
    let asked = d.server.requests().len();
    d.opt_out(&[]).expect(0).mentions(&["Already opted out"]);
    assert_eq!(snapshot(&d.root), before);
    assert_eq!(d.server.requests().len(), asked);
}

/// A mirror without `-updates` gets no `-updates` line (apt would fail on it); one that
/// carries `-security` itself (Ubuntu's layout) gets it from there; `--security-mirror`
/// names another archive; `--json` reports what was left out.
#[test]
fn suites_the_mirror_lacks_are_left_out_and_security_comes_from_where_it_is() {
    let d = Device::bare();
    d.publish("ubuntu", &Suite::new("bookworm", &["main", "universe"]));
    d.publish("ubuntu", &Suite::new("bookworm-security", &["main"]));
    let mirror = d.uri("ubuntu");
    let run = d.run(&["--json", "image", "opt-out", "--mirror", &mirror]);
    run.expect(0);
    let events = run.json_lines();
    for event in &events {
        assert_eq!(crate::events::violation(event), None, "{event}");
    }
    let event = &events[0];
    assert_eq!(event["event"], "opt-out");
    assert_eq!(event["waits_for_reboot"], false);
    assert_eq!(event["absent"][0]["suite"], "bookworm-updates");
    assert_eq!(
        d.sources(),
        [
            d.line("ubuntu", "bookworm", "main universe"),
            d.line("ubuntu", "bookworm-security", "main"),
        ]
    );
    assert_apt_reads(
        &d.root,
        &[
            ("ubuntu", "bookworm", &["main", "universe"]),
            ("ubuntu", "bookworm-security", &["main"]),
        ],
    );
    let run = d.run(&["--json", "image", "opt-in"]);
    run.expect(0);
    for event in run.json_lines() {
        assert_eq!(crate::events::violation(&event), None, "{event}");
    }
    assert_eq!(run.json_lines()[0]["op"], "opt-in");

    // No security suite anywhere: said, not silently dropped.
    let d = Device::bare();
    d.publish("debian", &Suite::new("bookworm", &["main"]));
    d.opt_out(&[]).expect(0).mentions(&[
        "has no bookworm-updates suite",
        "no bookworm-security suite at",
        "--security-mirror",
    ]);
    assert_eq!(d.sources(), [d.line("debian", "bookworm", "main")]);
    d.run(&["image", "opt-in"]).expect(0);
    // Given explicitly, it is taken from there (and must be there).
    d.publish("sec", &Suite::new("bookworm-security", &["main"]));
    let sec = d.uri("sec");
    d.opt_out(&["--security-mirror", &sec]).expect(0);
    assert_eq!(
        d.sources(),
        [
            d.line("debian", "bookworm", "main"),
            d.line("sec", "bookworm-security", "main"),
        ]
    );
    assert_apt_reads(
        &d.root,
        &[
            ("debian", "bookworm", &["main"]),
            ("sec", "bookworm-security", &["main"]),
        ],
    );
}

/// Asserts that `run` failed with `code` and that the device is as it was.
#[track_caller]
fn refused(d: &Device, before: &std::collections::BTreeMap<String, String>, run: &Run, code: i32) {
    run.expect(code);
    assert_eq!(
        &snapshot(&d.root),
        before,
        "a refused opt-out wrote something"
    );
    assert!(!d.root.join(FLAG).exists());
    assert_eq!(d.mode(), "image");
}

/// A mirror that cannot be reached, or has no such release, is exit 4; one that does not
/// verify (unknown key, altered, another release's files, a suite that is there but
/// badly signed) is exit 3; a device without its archive keyring is exit 2. Each writes
/// nothing: not the flag, not the journal.
#[test]
fn a_mirror_that_cannot_be_reached_or_verified_is_refused_and_nothing_is_written() {
    let d = Device::new();
    let before = snapshot(&d.root);
    let run = d.run(&["image", "opt-out", "--mirror", "http://127.0.0.1:9/debian"]);
    refused(&d, &before, &run, 4);
    let nowhere = d.uri("nowhere");
    let run = d.run(&["image", "opt-out", "--mirror", &nowhere]);
    refused(&d, &before, &run, 4);
    run.mentions(&["not found"]);
    // --security-mirror names an archive without the suite.
    let run = d.opt_out(&["--security-mirror", &nowhere]);
    refused(&d, &before, &run, 4);

    let inrelease = d.srv.join("debian/dists/bookworm/InRelease");
    let good = std::fs::read(&inrelease).unwrap();
    let resign = |suite: &Suite<'_>| d.publish("debian", suite);

    // Signed by a key the device does not have.
    resign(&Suite {
        key: other_key(),
        ..Suite::new("bookworm", &["main"])
    });
    let run = d.opt_out(&[]);
    refused(&d, &before, &run, 3);
    run.mentions(&["no good signature"]);
    // Altered after signing.
    let altered = String::from_utf8(good.clone())
        .unwrap()
        .replace("Components: main contrib", "Components: main contrib-x");
    std::fs::write(&inrelease, altered).unwrap();
    refused(&d, &before, &d.opt_out(&[]), 3);
    // Another release's signed files served as bookworm.
    resign(&Suite {
        codename: "trixie",
        suite: "testing",
        ..Suite::new("bookworm", &["main"])
    });
    let run = d.opt_out(&[]);
    refused(&d, &before, &run, 3);
    run.mentions(&["\"trixie\"", "dists/bookworm"]);
    std::fs::write(&inrelease, &good).unwrap();
    // A suite that is there must verify: not left out as if missing.
    d.publish(
        "debian",
        &Suite {
            key: other_key(),
            ..Suite::new("bookworm-updates", &["main"])
        },
    );
    refused(&d, &before, &d.opt_out(&[]), 3);
    d.publish("debian", &Suite::new("bookworm-updates", &["main"]));

    // No archive keyring on the device: nothing to check the mirror with.
    std::fs::rename(d.root.join(KEYRING), d.dir.path().join("kept.gpg")).unwrap();
    let run = d.opt_out(&[]);
    run.expect(2).mentions(&["--archive-keyring"]);
    std::fs::rename(d.dir.path().join("kept.gpg"), d.root.join(KEYRING)).unwrap();
    // A keyring given on the host is not what apt on the device will use.
    let host = d.dir.path().join("host.gpg");
    std::fs::write(&host, test_key().public_keyring()).unwrap();
    let run = d.opt_out(&["--keyring", host.to_str().unwrap()]);
    refused(&d, &before, &run, 2);
    // Now it goes through.
    d.opt_out(&[]).expect(0);
}

/// An opt-out interrupted at any step is finished by the next run from its journal,
/// without the network; an interrupted opt-in likewise.
#[test]
fn an_interrupted_opt_out_or_opt_in_is_finished_by_the_next_run() {
    let d = Device::new();
    for at in 1..=4 {
        let crash = format!("image-opt:{at}");
        let mirror = d.uri("debian");
        let out = d
            .command(&["image", "opt-out", "--mirror", &mirror])
            .env("RELEASE_UPGRADER_CRASH_AT", &crash)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{crash}");
        let asked = d.server.requests().len();
        let run = d.run(&["--json", "image", "recover"]);
        run.expect(0);
        let recovered = &run.json_lines()[0];
        assert_eq!(crate::events::violation(recovered), None, "{recovered}");
        assert_eq!(
            (
                &recovered["opt"]["op"],
                &recovered["opt"]["waits_for_reboot"]
            ),
            (&json!("opt-out"), &json!(false)),
            "{crash}: {recovered}"
        );
        assert_eq!(
            d.server.requests().len(),
            asked,
            "{crash}: recovery fetched"
        );
        assert_eq!(d.mode(), "apt", "{crash}");
        assert_eq!(d.sources().len(), 3, "{crash}");
        d.run(&["image", "recover"])
            .expect(0)
            .mentions(&["nothing to recover"]);
        let out = d
            .command(&["image", "opt-in"])
            .env("RELEASE_UPGRADER_CRASH_AT", &crash)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{crash}");
        d.run(&["image", "opt-in"])
            .expect(0)
            .mentions(&["nothing to do"]);
        assert_eq!(d.mode(), "image", "{crash}");
        assert!(!d.root.join(FLAG).exists() && !d.root.join(SOURCES).exists());
    }
}

/// Runs `script` with `$R` the device root mounted read-only (a bind mount remounted
/// `ro`), its `/userdata` and `/var/lib/release-upgrader` writable mounts of their own
/// as on a device, `$BIN` the client and `$M` the mirror; in a private mount namespace,
/// so the mounts end with it. Returns the script's output.
fn on_read_only_root(d: &Device, script: &str) -> String {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-uc"])
        .arg(format!(
            r#"set -e
            mount --bind "$R" "$R"
            mount --bind "$R/userdata" "$R/userdata"
            mount --bind "$R/var/lib/release-upgrader" "$R/var/lib/release-upgrader"
            mount -o remount,bind,ro "$R"
            if touch "$R/probe" 2>/dev/null; then echo "root is writable"; exit 1; fi
            set +e
            {script}"#
        ))
        .current_dir(d.dir.path())
        .env("R", &d.root)
        .env("BIN", BIN)
        .env("M", d.uri("debian"))
        .env("RELEASE_UPGRADER_RETRY_DELAY_MS", "10")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        mounted_below(d.dir.path()),
        Vec::<PathBuf>::new(),
        "mounts outlived their namespace"
    );
    text
}

/// On a read-only root the opt-out verifies the mirror, sets the flag on the writable
/// user data, keeps the sources in the writable state directory and says to reboot;
/// the device stays on images, image work is refused meanwhile, and an opt-in cancels
/// it. After the "reboot" (the root writable) `image recover` finishes it, and apt
/// updates from the sources. (Before: it failed after writing the flag, and opt-in and
/// recover failed too.)
#[test]
fn opt_out_on_a_read_only_root_is_staged_and_finished_after_the_reboot() {
    if !as_root() {
        eprintln!("skipped: needs root to mount");
        return;
    }
    let d = Device::new();
    // Staged, then cancelled by an opt-in, all before a reboot.
    let out = on_read_only_root(
        &d,
        r#"
        "$BIN" --root "$R" image opt-out --mirror "$M"; echo "opt-out exit $?"
        "$BIN" --root "$R" image opt-in; echo "opt-in exit $?"
        test -e "$R/userdata/.writable_image" && echo "flag left"
        "$BIN" --root "$R" image opt-in; echo "opt-in again exit $?"
        "#,
    );
    assert!(
        out.contains("opt-out exit 0") && out.contains("staged for the next boot"),
        "{out}"
    );
    assert!(
        out.contains("opt-in exit 0") && out.contains("Cancelled the opt-out"),
        "{out}"
    );
    assert!(!out.contains("flag left"), "{out}");
    assert!(
        out.contains("opt-in again exit 0") && out.contains("nothing to do"),
        "{out}"
    );
    assert!(!d.root.join(FLAG).exists());
    assert!(!d.root.join(STATE).join("opt-journal.json").exists());
    d.run(&["image", "recover"])
        .expect(0)
        .mentions(&["nothing to recover"]);

    // Staged; kept across further runs; image work refused; then the reboot.
    let out = on_read_only_root(
        &d,
        r#"
        "$BIN" --root "$R" image opt-out --mirror "$M"; echo "opt-out exit $?"
        "$BIN" --root "$R" image opt-out --mirror http://127.0.0.1:9/; echo "again exit $?"
        "$BIN" --root "$R" --json image info
        "$BIN" --root "$R" image apply; echo "apply exit $?"
        "#,
    );
    for said in [
        "opt-out exit 0",
        "The root is read-only, so the switch to apt is staged for the next boot",
        "Reboot now",
        "again exit 0",
        "already staged",
        "apply exit 2",
        "reboot to finish it",
    ] {
        assert!(out.contains(said), "{said:?} not in:\n{out}");
    }
    let info: Value = out
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    assert_eq!(info["mode"], "image", "{info}");
    assert_eq!(info["facts"]["read_only"], true, "{info}");
    assert_eq!(info["opt_pending"]["op"], "opt-out", "{info}");
    assert!(d.root.join(FLAG).exists());
    assert!(!d.root.join(SOURCES).exists());
    assert!(!d.root.join(STATE).join("opt-out.json").exists());
    let journal: Value = serde_json::from_slice(
        &std::fs::read(d.root.join(STATE).join("opt-journal.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(journal["suites"].as_array().unwrap().len(), 3, "{journal}");

    // The reboot: the flag made the root writable. The next run finishes the opt-out
    // from the journal, offline, and says so.
    let asked = d.server.requests().len();
    let run = d.run(&["image", "recover"]);
    run.expect(0)
        .mentions(&["opt-out staged or interrupted earlier was finished"]);
    assert!(
        !run.stdout().contains("nothing to recover"),
        "{}",
        run.stdout()
    );
    assert_eq!(d.server.requests().len(), asked);
    assert_eq!(d.mode(), "apt");
    assert_eq!(d.sources().len(), 3);
    assert!(!d.root.join(STATE).join("opt-journal.json").exists());
    assert_apt_reads(
        &d.root,
        &[
            ("debian", "bookworm", &["main", "contrib", "non-free"]),
            ("debian", "bookworm-updates", &["main", "contrib"]),
            ("debian-security", "bookworm-security", &["main", "contrib"]),
        ],
    );
    d.run(&["image", "recover"])
        .expect(0)
        .mentions(&["nothing to recover"]);
    d.run(&["image", "opt-in"])
        .expect(0)
        .mentions(&["Opted back in", "read-only again"]);
    assert_eq!(d.mode(), "image");
}

/// `upgrade` on a device whose opt-out waits for this boot finishes it first, so the
/// upgrade is decided with apt, not images.
#[test]
fn upgrade_finishes_a_staged_opt_out_before_choosing_images_or_apt() {
    let d = Device::new();
    d.opt_out(&[]).expect(0);
    // As a staged opt-out leaves the device: flag and journal, no sources, no mark.
    let record = std::fs::read(d.root.join(STATE).join("opt-out.json")).unwrap();
    let record: Value = serde_json::from_slice(&record).unwrap();
    let mut journal = record.clone();
    journal["op"] = json!("opt-out");
    std::fs::remove_file(d.root.join(STATE).join("opt-out.json")).unwrap();
    std::fs::remove_file(d.root.join(SOURCES)).unwrap();
    std::fs::write(
        d.root.join(STATE).join("opt-journal.json"),
        journal.to_string(),
    )
    .unwrap();
    assert_eq!(d.mode(), "image");
    let run = d.run(&["upgrade", "--dry-run"]);
    run.mentions(&["an opt-out is under way"]);
    assert!(!d.root.join(SOURCES).exists(), "a dry run wrote");
    // The apt upgrade starts (and stops at the fixture's missing dpkg database), not
    // an image update.
    let run = d.run(&["upgrade", "-y"]);
    run.mentions(&[
        "opt-out staged or interrupted earlier was finished",
        "Checking the system",
    ]);
    assert!(
        !run.stderr().contains("updates with images"),
        "{}",
        run.stderr()
    );
    assert_eq!(d.mode(), "apt");
    assert_eq!(d.sources().len(), 3);
}
