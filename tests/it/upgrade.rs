//! The whole upgrade on a throwaway root: two tiny releases built with dpkg-deb, the old
//! one installed with dpkg, a signed meta-release, archive and helper pocket served from
//! 127.0.0.1, and `release-upgrader --root ROOT upgrade`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ru_demo::tiny;
use ru_format::date;
use ru_publish::archive::{self, ArchiveRelease};
use ru_publish::metarelease::{self, Stanza};
use ru_publish::pocket::{self, PocketEntry};
use ru_testing::serve::Server;

use crate::support::{BIN, InodeFlag, Item, Run, TestHelper, build_deb, test_key};

/// Test helpers whose entry points run *this machine's* apt and dpkg: enough to drive
/// the upgrade flow on a tiny root. (The demo and the real Debian test use helpers
/// relocated by the publisher.)
pub fn host_wrapper_helpers() -> Vec<TestHelper> {
    let wrap = |target: &str| format!("#!/bin/sh\nexec {target} \"$@\"\n");
    let mut apt = Vec::new();
    for program in ["apt-get", "apt-cache", "apt-config", "apt-mark", "apt"] {
        apt.push(Item::File(
            format!("bin/{program}"),
            wrap(&format!("/usr/bin/{program}")),
            0o755,
        ));
    }
    apt.push(Item::File("bin/gpgv".into(), wrap("/usr/bin/gpgv"), 0o755));
    for method in std::fs::read_dir("/usr/lib/apt/methods").unwrap().flatten() {
        let name = method.file_name().to_string_lossy().into_owned();
        // The http method reads http/https from argv[0]: keep the entry point's name.
        apt.push(Item::File(
            format!("methods/{name}"),
            format!("#!/bin/bash\nexec -a \"$0\" /usr/lib/apt/methods/{name} \"$@\"\n"),
            0o755,
        ));
    }
    let mut dpkg = Vec::new();
    for program in [
        "dpkg",
        "dpkg-query",
        "dpkg-deb",
        "dpkg-split",
        "dpkg-divert",
        "dpkg-trigger",
    ] {
        dpkg.push(Item::File(
            format!("bin/{program}"),
            wrap(&format!("/usr/bin/{program}")),
            0o755,
        ));
    }
    for program in ["dpkg-deb", "dpkg-split", "tar"] {
        dpkg.push(Item::File(
            format!("dpkg-path/{program}"),
            wrap(&format!("/usr/bin/{program}")),
            0o755,
        ));
    }
    vec![
        TestHelper {
            name: "release-upgrader-apt".into(),
            version: "2.6.1".into(),
            depends: String::new(),
            items: apt,
            index_fields: Vec::new(),
        },
        TestHelper {
            name: "release-upgrader-dpkg".into(),
            version: "1.21.22".into(),
            depends: String::new(),
            items: dpkg,
            index_fields: Vec::new(),
        },
    ]
}

pub struct World {
    /// Owns the temporary tree.
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub srv: PathBuf,
    pub work: PathBuf,
    pub keyring: PathBuf,
    pub server: Option<Server>,
    pub url: String,
    /// Requests whose path contains the first string are answered with the status; 302
    /// redirects to the same path with a new query every time, forever.
    pub failing: std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>,
}

impl World {
    /// Publishes alpha and beta, installs alpha into the root.
    pub fn new() -> Self {
        Self::with_beta(|_| {})
    }

    /// [`World::new`], with beta's demo-hello configured by `script`.
    pub fn with_hello_postinst(script: &str) -> Self {
        Self::with_beta(|packages| package(packages, "demo-hello").postinst = Some(script.into()))
    }

    pub fn with_beta(adjust: impl FnOnce(&mut Vec<tiny::TinyPackage>)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let srv = dir.path().join("srv");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&srv).unwrap();
        let failing: std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>> = Default::default();
        let rules = failing.clone();
        let server = Server::start_with(&srv, move |request| {
            let rules = rules.lock().unwrap();
            match rules
                .iter()
                .find(|(part, _)| request.path.contains(part.as_str()))
            {
                Some((_, 302)) => ru_testing::serve::Fault::Redirect(format!(
                    "/{}?loop={}",
                    request.path, request.count
                )),
                Some((_, status)) => ru_testing::serve::Fault::Status(*status),
                None => ru_testing::serve::Fault::None,
            }
        })
        .unwrap();
        let url = server.url();
        let keyring = dir.path().join("keyring.gpg");
        std::fs::write(&keyring, test_key().public_keyring()).unwrap();
        let mut w = World {
            _dir: dir,
            root,
            srv,
            work,
            keyring,
            server: Some(server),
            url,
            failing,
        };
        let alpha = w.publish(tiny::OLD.0, tiny::OLD.1, |_| {});
        w.publish(tiny::NEW.0, tiny::NEW.1, adjust);
        tiny::install_root(&w.root, &alpha).unwrap();
        w.publish_helpers(
            &w.srv.join("dists/beta/main/dist-upgrader-amd64/current"),
            true,
        );
        w.publish_meta_release(&[]);
        w
    }

    /// Signs and serves the meta-release listing alpha and beta, beta with `extra`
    /// fields (e.g. `ReleaseNotes`).
    pub fn publish_meta_release(&self, extra: &[(&str, &str)]) {
        let mut beta = Stanza::default()
            .field("Dist", "beta")
            .field("Version", "2")
            .field("Date", "Wed, 01 Jan 2025 00:00:00 UTC")
            .field("Supported", "1");
        for (name, value) in extra {
            beta = beta.field(name, *value);
        }
        let stanzas = [
            Stanza::default()
                .field("Dist", "alpha")
                .field("Version", "1")
                .field("Date", "Mon, 01 Jan 2024 00:00:00 UTC")
                .field("Supported", "1"),
            beta.field(
                "UpgradeToolBaseURI",
                format!("{}dists/beta/main/", self.url),
            ),
        ];
        metarelease::write(
            &self.srv.join("meta-release"),
            &metarelease::render(&stanzas),
            test_key(),
        )
        .unwrap();
    }

    pub fn archive_uri(&self) -> String {
        format!("{}archive", self.url)
    }

    /// Builds a release's packages (after `adjust`) and publishes them in the archive.
    pub fn publish(
        &mut self,
        codename: &str,
        version: &str,
        adjust: impl FnOnce(&mut Vec<tiny::TinyPackage>),
    ) -> Vec<PathBuf> {
        let mut packages = tiny::release(
            codename,
            version,
            &self.archive_uri(),
            &test_key().public_keyring(),
        )
        .unwrap();
        adjust(&mut packages);
        self.publish_packages(&self.srv.join("archive"), codename, version, &packages)
    }

    fn publish_packages(
        &self,
        archive_root: &Path,
        codename: &str,
        version: &str,
        packages: &[tiny::TinyPackage],
    ) -> Vec<PathBuf> {
        let out = self.work.join(format!("debs-{codename}"));
        let debs: Vec<PathBuf> = packages
            .iter()
            .map(|p| tiny::build(p, &self.work, &out).unwrap())
            .collect();
        archive::write(
            archive_root,
            &ArchiveRelease {
                spec: archive::spec("Demo", codename, "amd64", date::now() - 3600, 7),
                version: Some(version.into()),
                component: "main".into(),
                debs: debs.clone(),
            },
            test_key(),
        )
        .unwrap();
        debs
    }

    /// The helper debs (wrappers of this machine's apt and dpkg), built into the work
    /// directory: what a distribution hands `pocket build` or `media build`.
    pub fn helper_debs(&self) -> Vec<PathBuf> {
        host_wrapper_helpers()
            .iter()
            .map(|h| build_deb(&self.work, h))
            .collect()
    }

    /// Publishes the helper pocket into `dir`.
    fn publish_helpers(&self, dir: &Path, valid_until: bool) {
        self.publish_helper_list(dir, valid_until, &host_wrapper_helpers());
    }

    /// Publishes the network helper pocket again, with `adjust`ed helpers.
    pub fn republish_helpers(&self, adjust: impl FnOnce(&mut Vec<TestHelper>)) {
        let mut helpers = host_wrapper_helpers();
        adjust(&mut helpers);
        self.publish_helper_list(
            &self.srv.join("dists/beta/main/dist-upgrader-amd64/current"),
            true,
            &helpers,
        );
    }

    /// From now on, requests whose path ends with `suffix` are answered `status` (302:
    /// redirected to a new address every time).
    pub fn fail(&self, suffix: &str, status: u16) {
        self.failing.lock().unwrap().push((suffix.into(), status));
    }

    /// Publishes the helper pocket again with the helpers' `bin/dpkg` replaced by
    /// `script` (a wrapper that misbehaves, then hands over to the real dpkg).
    pub fn republish_with_dpkg(&self, script: &str) {
        self.republish_helpers(|helpers| {
            let dpkg = helpers
                .iter_mut()
                .find(|h| h.name == "release-upgrader-dpkg")
                .unwrap();
            for item in &mut dpkg.items {
                if let Item::File(path, content, _) = item
                    && path == "bin/dpkg"
                {
                    *content = script.to_owned();
                }
            }
        });
    }

    /// Every demo package installed at its beta version, and dpkg's audit clean.
    pub fn assert_all_on_beta(&self, what: &str) {
        let installed = self.installed();
        let mut lines: Vec<&str> = installed.lines().map(str::trim_end).collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "demo-base 2 ii",
                "demo-conf 2.0-1 ii",
                "demo-hello 2.0-1 ii",
                "demo-newtool 1.0 ii",
                "demo-sh 2 ii",
            ],
            "{what}: not all on beta"
        );
        audit_clean(&self.root);
    }

    fn publish_helper_list(&self, dir: &Path, valid_until: bool, helpers: &[TestHelper]) {
        let entries: Vec<PocketEntry> = helpers
            .iter()
            .map(|h| {
                let file = build_deb(&self.work, h);
                let control = ru_format::deb::read_control(&file).unwrap();
                PocketEntry {
                    fields: control.fields,
                    file,
                }
            })
            .collect();
        let mut spec = crate::support::Fixture::default_spec();
        spec.codename = "beta".into();
        spec.suite = "beta".into();
        if !valid_until {
            spec.valid_until = None;
        }
        pocket::write(dir, &spec, &entries, test_key()).unwrap();
    }

    /// Stops the server: from now on nothing answers on its port.
    pub fn go_offline(&mut self) {
        self.server = None;
    }

    /// The client on this world's root, meta-release and keyring, with `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--keyring")
            .arg(&self.keyring)
            .arg("--meta-release-uri")
            .arg(format!("{}meta-release", self.url))
            .arg("--arch")
            .arg("amd64")
            .args(args)
            .env("RELEASE_UPGRADER_RETRY_DELAY_MS", "10")
            .env_remove("http_proxy");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run(self.command(args).output().unwrap())
    }

    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root.join(path.trim_start_matches('/'))).unwrap_or_default()
    }

    pub fn installed(&self) -> String {
        let out = Command::new("dpkg-query")
            .arg(format!("--admindir={}/var/lib/dpkg", self.root.display()))
            .args(["-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn sources(&self) -> Vec<u8> {
        std::fs::read(self.root.join("etc/apt/sources.list.d/demo.sources")).unwrap()
    }

    /// What an upgrade that stops must leave exactly as it found: the sources and dpkg's
    /// status.
    pub fn before(&self) -> Before {
        Before {
            sources: self.sources(),
            status: std::fs::read(self.root.join("var/lib/dpkg/status")).unwrap(),
        }
    }

    /// The upgrade stopped and put everything back: the sources byte for byte, no backup
    /// of them, no helpers, no upgrade journal, dpkg's status as it was.
    pub fn assert_put_back(&self, before: &Before) {
        assert_eq!(
            self.sources(),
            before.sources,
            "sources not restored byte for byte"
        );
        let gone = [
            "etc/apt/sources.list.d/demo.sources.distUpgrade",
            "usr/lib/release-upgrader",
            "var/lib/release-upgrader/upgrade.json",
        ];
        for path in gone {
            assert!(!self.root.join(path).exists(), "{path} left behind");
        }
        let status = std::fs::read(self.root.join("var/lib/dpkg/status")).unwrap();
        assert!(status == before.status, "dpkg's status changed");
    }
}

/// A postinst that, the first time through, announces itself (`/tmp/reached`) and blocks
/// until `/tmp/wait` (a fifo the test makes) is written or the run killed.
pub const BLOCK_ONCE: &str =
    "#!/bin/sh\nif [ ! -e /tmp/reached ]; then : > /tmp/reached; read x < /tmp/wait; fi\n";

/// The package called `name` among a release's.
pub fn package<'a>(packages: &'a mut [tiny::TinyPackage], name: &str) -> &'a mut tiny::TinyPackage {
    packages
        .iter_mut()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no {name} in the release"))
}

/// See [`World::before`].
pub struct Before {
    sources: Vec<u8>,
    status: Vec<u8>,
}

pub fn audit_clean(root: &Path) {
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("--audit")
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "dpkg --audit: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn upgrade_takes_a_root_from_alpha_to_beta() {
    let w = World::new();
    // The user edited a configuration file: it must survive (--force-confold).
    std::fs::write(w.root.join("etc/demo.conf"), "colour = red # mine\n").unwrap();
    // The login notice of `check --motd` names the release this upgrade reaches.
    let notice = w
        .root
        .join("var/lib/release-upgrader/release-upgrade-available");
    std::fs::create_dir_all(notice.parent().unwrap()).unwrap();
    std::fs::write(&notice, "New release '2' (beta) available.\n").unwrap();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(0);
    assert!(!notice.exists(), "the login notice outlived the upgrade");
    assert!(
        w.read("/etc/os-release").contains("VERSION_CODENAME=beta"),
        "{}",
        run.stderr()
    );
    let installed = w.installed();
    assert!(installed.contains("demo-hello 2.0-1 ii"), "{installed}");
    assert!(installed.contains("demo-newtool 1.0 ii"), "{installed}");
    // The obsolete package left with the upgrade's apt run, and its configuration after.
    assert!(
        !installed.contains("demo-legacy"),
        "obsolete package kept: {installed}"
    );
    assert_eq!(w.read("/etc/demo.conf"), "colour = red # mine\n");
    assert!(String::from_utf8_lossy(&w.sources()).contains("Suites: beta"));
    // Helpers gone, logs kept, journal cleared.
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
    for log in ["main.log", "apt.log", "apt-term.log"] {
        assert!(
            w.root.join("var/log/dist-upgrade").join(log).exists(),
            "{log} missing"
        );
    }
    let main_log = w.read("/var/log/dist-upgrade/main.log");
    assert!(main_log.contains("upgrade to beta (2) complete"));
    // Every phase's time, for benches/upgrade.sh's breakdown.
    for phase in ru_client::events::PhaseId::ALL.map(|p| p.name()) {
        assert!(
            main_log.contains(&format!("phase {phase}: ok in ")),
            "no time for {phase}: {main_log}"
        );
    }
    assert!(
        main_log.contains("obsolete packages leave with the upgrade: demo-legacy"),
        "{main_log}"
    );
    let after_install = main_log.split("packages installed").nth(1).unwrap_or("");
    assert!(
        !after_install.contains("apt-get"),
        "apt ran again after the upgrade: {main_log}"
    );
    // The archives came in parallel before apt ran, the upgrades of installed packages
    // beside apt's resolution; apt fetched none itself.
    assert!(
        main_log.contains("offered upgrades fetched beside the plan"),
        "{main_log}"
    );
    assert!(main_log.contains("archives in place"), "{main_log}");
    let term = w.read("/var/log/dist-upgrade/apt-term.log");
    assert!(
        !term.contains("Get:"),
        "apt downloaded archives itself:\n{term}"
    );
    assert!(
        !w.root
            .join("var/lib/release-upgrader/upgrade.json")
            .exists()
    );
    audit_clean(&w.root);
    // The original sources were kept next to the new ones.
    assert!(
        w.root
            .join("etc/apt/sources.list.d/demo.sources.distUpgrade")
            .exists()
    );
}

#[test]
fn a_package_that_fails_to_download_rolls_everything_back() {
    let w = World::new();
    let before = w.before();
    w.server_fault_on_hello();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive", "--retries", "0"]);
    run.expect(5).mentions(&["put back as it was"]);
    w.assert_put_back(&before);
    assert!(w.installed().contains("demo-hello 1.0-1 ii"));
}

impl World {
    fn server_fault_on_hello(&self) {
        // Remove the new demo-hello from the pool: the index still promises it.
        for entry in walk(&self.srv.join("archive/pool")) {
            if entry.to_string_lossy().contains("demo-hello_2.0") {
                std::fs::remove_file(entry).unwrap();
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_failing_maintainer_script_exits_6_and_the_printed_recovery_works() {
    // Fails while /etc/demo-fail exists, like a script tripping over local state.
    let w = World::with_hello_postinst(
        "#!/bin/sh\nif [ -e /etc/demo-fail ]; then echo 'failing on purpose' >&2; exit 1; fi\n",
    );
    std::fs::write(w.root.join("etc/demo-fail"), "").unwrap();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(6);
    let stderr = run.stderr();
    let command = stderr
        .split("to finish it, run: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no recovery command in:\n{stderr}"))
        .to_owned();
    assert!(command.starts_with("release-upgrader --root "), "{command}");
    // Fix the cause and run exactly what was printed.
    std::fs::remove_file(w.root.join("etc/demo-fail")).unwrap();
    // Exactly the printed command: resuming needs neither the meta-release nor the keyring.
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let run = Run(Command::new(BIN).args(&args).output().unwrap());
    run.expect(0);
    assert!(
        w.installed().contains("demo-hello 2.0-1 ii"),
        "{}",
        w.installed()
    );
    assert!(w.read("/etc/os-release").contains("VERSION_CODENAME=beta"));
    audit_clean(&w.root);
}

#[test]
fn current_indices_of_the_running_release_are_not_fetched_again() {
    let mut w = World::new();
    let refreshed = "-o Acquire::Languages=none update";
    let kept = "not refreshing them";
    // Runs that stop after the running release's check, beside which the helpers fail to
    // download (a dry run refreshes nothing: it writes nothing under the root).
    w.fail("release-upgrader-apt_", 500);
    let stopped = |w: &World| {
        w.run(&["upgrade", "-y", "--retries", "0"])
            .expect(4)
            .mentions(&["release-upgrader-apt"]);
    };
    // The first run brings the root's lists up to date.
    stopped(&w);
    // Nothing changed in the archive since: apt's refresh is skipped.
    stopped(&w);
    let log = w.read("/var/log/dist-upgrade/main.log");
    assert!(log.contains(kept), "{log}");
    assert!(!log.contains(refreshed), "{log}");
    // A republished release (a new InRelease) is refreshed again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    w.publish(tiny::OLD.0, tiny::OLD.1, |_| {});
    stopped(&w);
    let log = w.read("/var/log/dist-upgrade/main.log");
    assert!(!log.contains(kept), "{log}");
    assert!(log.contains(refreshed), "{log}");
}

#[test]
fn dry_run_changes_nothing() {
    let w = World::new();
    let before = w.sources();
    let run = w.run(&["upgrade", "--dry-run"]);
    run.expect(0)
        .mentions(&["Would upgrade alpha to 2 (beta)", "Nothing was changed"]);
    assert_eq!(w.sources(), before);
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
    assert!(w.installed().contains("demo-hello 1.0-1 ii"));
}

#[test]
fn pending_updates_of_the_running_release_are_refused_unless_allowed() {
    let mut w = World::new();
    // An update of alpha that was never installed.
    w.publish(tiny::OLD.0, tiny::OLD.1, |packages| {
        package(packages, "demo-hello").version = "1.0-2".into();
    });
    let before = w.sources();
    w.run(&["upgrade", "-y", "-f", "noninteractive"])
        .expect(2)
        .mentions(&[
            "updates of the running release are not installed",
            "demo-hello",
            "--allow-pending",
        ]);
    // Read from the stored indices, without asking apt.
    let log = w.read("/var/log/dist-upgrade/main.log");
    assert!(log.contains("1 pending updates and"), "{log}");
    assert!(!log.contains("running apt-get --print-uris"), "{log}");
    assert_eq!(w.sources(), before);
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
    w.run(&["upgrade", "-y", "-f", "noninteractive", "--allow-pending"])
        .expect(0);
    assert!(w.read("/etc/os-release").contains("beta"));
}

#[test]
fn third_party_sources_are_disabled_with_a_comment() {
    let w = World::new();
    // A vendor repository for alpha, signed by another key the system also trusts.
    let vendor = crate::support::other_key();
    let vendor_deb = tiny::build(
        &tiny::TinyPackage {
            name: "vendor-tool".into(),
            version: "1.0".into(),
            depends: String::new(),
            files: vec![(
                "/usr/bin/vendor-tool".into(),
                b"#!/bin/sh\n".to_vec(),
                0o755,
            )],
            conffiles: Vec::new(),
            postinst: None,
            description: "from a vendor".into(),
            fields: Vec::new(),
        },
        &w.work,
        &w.work.join("vendor"),
    )
    .unwrap();
    archive::write(
        &w.srv.join("vendor"),
        &ArchiveRelease {
            spec: archive::spec("Vendor", "alpha", "amd64", date::now() - 3600, 7),
            version: None,
            component: "main".into(),
            debs: vec![vendor_deb],
        },
        vendor,
    )
    .unwrap();
    std::fs::write(
        w.root.join("etc/apt/trusted.gpg.d/vendor.gpg"),
        vendor.public_keyring(),
    )
    .unwrap();
    let list = w.root.join("etc/apt/sources.list.d/vendor.list");
    std::fs::write(&list, format!("deb {}vendor alpha main\n", w.url)).unwrap();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(0)
        .mentions(&["Disabling the third-party source", "--allow-third-party"]);
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        format!(
            "# deb {}vendor alpha main # disabled on upgrade to beta\n",
            w.url
        )
    );
    assert!(String::from_utf8_lossy(&w.sources()).contains("Suites: beta"));
}

#[test]
fn removing_a_denylisted_package_is_refused_and_rolled_back() {
    let w = World::with_beta(|packages| {
        // The new base system conflicts with demo-hello: apt removes it to upgrade.
        let base = packages.iter_mut().find(|p| p.name == "demo-base").unwrap();
        base.fields.push(("Essential".into(), "yes".into()));
        base.fields.push(("Conflicts".into(), "demo-hello".into()));
    });
    std::fs::create_dir_all(w.root.join("etc/release-upgrader")).unwrap();
    std::fs::write(
        w.root.join("etc/release-upgrader/removal-denylist"),
        "# keep greeting\ndemo-hel*\n",
    )
    .unwrap();
    let before = w.sources();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(5)
        .mentions(&["would remove demo-hello", "put back as it was"]);
    assert_eq!(w.sources(), before);
    assert!(w.installed().contains("demo-hello 1.0-1 ii"));
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
}

#[test]
fn an_upgrade_killed_during_dpkg_is_resumed_by_the_next_run() {
    resume_after_kill(false);
}

/// The kill leaves demo-conf unpacked but not configured, with the user's edit of its
/// configuration file: the resume's `dpkg --configure -a` meets the conffile question
/// with nobody to answer it, and keeps the user's version as the upgrade's own run does.
#[test]
fn a_resume_keeps_the_users_configuration_file_without_asking() {
    resume_after_kill(true);
}

fn resume_after_kill(edited_conffile: bool) {
    let w = World::with_beta(|packages| {
        // The first time through, announce ourselves and block until killed.
        package(packages, "demo-hello").postinst = Some(BLOCK_ONCE.into());
        // Configured after demo-hello: still unconfigured when the kill comes.
        let conf = package(packages, "demo-conf");
        conf.depends = "demo-hello".into();
    });
    if edited_conffile {
        std::fs::write(w.root.join("etc/demo.conf"), "colour = red # mine\n").unwrap();
    }
    nix::unistd::mkfifo(
        &w.root.join("tmp/wait"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let mut cmd = w.command(&["upgrade", "-y", "-f", "noninteractive"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    while !w.root.join("tmp/reached").exists() {
        assert!(
            started.elapsed().as_secs() < 60,
            "the maintainer script never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Power cut: release-upgrader, apt, and dpkg (which apt runs in a session of its own)
    // with its maintainer script.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    kill_everything_touching(&w.root);
    assert!(
        w.root
            .join("var/lib/release-upgrader/upgrade.json")
            .exists()
    );
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(0)
        .mentions(&["interrupted while packages were being installed; resuming"]);
    assert!(
        w.installed().contains("demo-hello 2.0-1 ii"),
        "{}",
        w.installed()
    );
    assert!(w.read("/etc/os-release").contains("beta"));
    audit_clean(&w.root);
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
    if edited_conffile {
        assert_eq!(w.read("/etc/demo.conf"), "colour = red # mine\n");
        assert!(
            w.installed().contains("demo-conf 2.0-1 ii"),
            "{}",
            w.installed()
        );
    }
}

#[test]
fn upgrade_from_media_works_offline() {
    let mut w = World::new();
    // The system knew its sources once (lists present), then lost the network.
    w.run(&["upgrade", "--dry-run"]).expect(0);
    let media = w.work.join("media");
    std::fs::create_dir_all(media.join(".disk")).unwrap();
    std::fs::write(
        media.join(".disk/info"),
        "Demo Linux 2 \"beta\" - amd64 (20261122)\n",
    )
    .unwrap();
    let packages = tiny::release(
        tiny::NEW.0,
        tiny::NEW.1,
        &w.archive_uri(),
        &test_key().public_keyring(),
    )
    .unwrap();
    w.publish_packages(&media, "beta", "2", &packages);
    std::os::unix::fs::symlink("beta", media.join("dists/stable")).unwrap();
    w.publish_helpers(
        &media.join("dists/beta/main/dist-upgrader/binary-amd64"),
        false,
    );
    w.go_offline();
    let detect = Run(Command::new(BIN)
        .args(["--arch", "amd64", "cdrom", "detect"])
        .arg(&media)
        .output()
        .unwrap());
    detect.expect(0).mentions(&[
        "Demo Linux 2",
        "release: beta",
        "helpers for amd64: yes",
        "package archive: yes",
    ]);
    let run = w.run(&[
        "upgrade",
        "-y",
        "-f",
        "noninteractive",
        "--cdrom",
        media.to_str().unwrap(),
        "--retries",
        "0",
    ]);
    run.expect(0);
    assert!(
        w.read("/etc/os-release").contains("VERSION_CODENAME=beta"),
        "{}",
        run.stderr()
    );
    assert!(w.installed().contains("demo-hello 2.0-1 ii"));
    // The media's source was only for the upgrade.
    assert!(
        !w.root
            .join("etc/apt/sources.list.d/release-upgrader-media.list")
            .exists()
    );
    audit_clean(&w.root);
}

/// SIGKILLs every process whose command line, root or working directory involves `root`.
pub fn kill_everything_touching(root: &Path) {
    let needle = root.display().to_string();
    for _ in 0..50 {
        let mut found = false;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let involved = String::from_utf8_lossy(&cmdline).contains(&needle)
                || ["root", "cwd"].iter().any(|l| {
                    std::fs::read_link(entry.path().join(l)).is_ok_and(|t| t.starts_with(root))
                });
            if involved {
                found = true;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("processes in {needle} would not die");
}

#[test]
fn an_upgrade_killed_before_dpkg_is_undone_and_started_over() {
    // Killed (1) with the journal saying the sources are being rewritten, (2) after the
    // first sources file was rewritten, (3) after everything was downloaded.
    for point in ["upgrade phase:1", "sources rewritten:1", "upgrade phase:3"] {
        let w = World::new();
        let before = w.sources();
        let run = w
            .command(&["upgrade", "-y", "-f", "noninteractive"])
            .env("RELEASE_UPGRADER_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&run.status),
            Some(9),
            "{point}: not killed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            w.installed().contains("demo-hello 1.0-1 ii"),
            "{point}: packages changed"
        );
        let killed = w.sources();
        let run = w.run(&["upgrade", "--dry-run"]);
        // The dry run sees the interrupted upgrade and says what a real run would do
        // about it, changing nothing.
        run.expect(0)
            .mentions(&["interrupted before any package changed", "would undo it"]);
        assert_eq!(
            w.sources(),
            killed,
            "{point}: the dry run changed the sources"
        );
        // The real run puts the sources back first, then upgrades.
        w.run(&["upgrade", "-y", "-f", "noninteractive"])
            .expect(0)
            .mentions(&["undoing it and starting over"]);
        assert_ne!(w.sources(), before, "{point}: sources not rewritten");
        assert!(w.read("/etc/os-release").contains("beta"), "{point}");
        audit_clean(&w.root);
    }
}

#[test]
fn a_held_lock_is_waited_for_then_named() {
    let w = World::new();
    let mut holder = crate::support::hold_frontend_lock(&w.root, None);
    let run = w.run(&["upgrade", "-y", "--lock-timeout", "1"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    run.expect(2)
        .mentions(&["the package system is in use", "python3", "lock-frontend"]);
}

#[test]
fn keep_helpers_leaves_them_and_json_reports_phases() {
    let w = World::new();
    let run = w.run(&[
        "--json",
        "upgrade",
        "-y",
        "-f",
        "noninteractive",
        "--keep-helpers",
    ]);
    run.expect(0);
    let lines = run.json_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "phase" && l["id"] == "install" && l["state"] == "start")
    );
    assert!(lines.iter().any(|l| l["event"] == "progress"));
    assert!(w.root.join("usr/lib/release-upgrader/bin/apt-get").exists());
    // The kept helpers are still listed and removable.
    w.run(&["cleanup"]).expect(0);
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
}

/// The new release's `InRelease` cannot be fetched (the server answers 500 every time):
/// `apt-get update` only warns and keeps going, with no package list of the new release.
/// Judged from no lists, every installed package would look obsolete; the upgrade must
/// stop instead, and put everything back.
#[test]
fn an_unreachable_new_release_stops_the_upgrade_and_removes_nothing() {
    let w = World::new();
    let before = w.sources();
    let installed = w.installed();
    w.fail("dists/beta/InRelease", 500);
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive", "--retries", "0"]);
    run.expect(5).mentions(&["put back as it was"]);
    assert_eq!(w.installed(), installed, "packages changed");
    assert_eq!(w.sources(), before, "sources not restored byte for byte");
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
    assert!(w.read("/etc/os-release").contains("alpha"));
}

/// The running release's `InRelease` cannot be fetched: the distribution's own source
/// cannot be told from a third-party one, so nothing is judged and nothing changes.
#[test]
fn an_unreachable_running_release_stops_before_anything_changes() {
    let w = World::new();
    // The lists of an earlier update are gone, as on a fresh system.
    let lists = w.root.join("var/lib/apt/lists");
    if lists.exists() {
        std::fs::remove_dir_all(&lists).unwrap();
        std::fs::create_dir_all(lists.join("partial")).unwrap();
    }
    let before = w.sources();
    let installed = w.installed();
    w.fail("dists/alpha/InRelease", 500);
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive", "--retries", "0"]);
    assert!(
        matches!(run.code(), 4 | 5),
        "exit {} instead of 4 or 5:\n{}{}",
        run.code(),
        run.stdout(),
        run.stderr()
    );
    assert_eq!(w.installed(), installed, "packages changed");
    assert_eq!(w.sources(), before, "sources changed");
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
}

/// A package's mirror redirects to a new address every time, forever: the upgrade stops
/// after a bounded number of redirects and puts everything back, instead of handing the
/// download to apt, which would follow them for ever.
#[test]
fn endless_redirects_of_a_package_stop_the_upgrade_and_put_everything_back() {
    let w = World::new();
    let before = w.sources();
    let installed = w.installed();
    w.fail("demo-hello_2.0-1", 302);
    let started = std::time::Instant::now();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive", "--retries", "0"]);
    run.expect(5)
        .mentions(&["too many redirects", "put back as it was"]);
    assert!(started.elapsed().as_secs() < 120, "{:?}", started.elapsed());
    assert_eq!(w.installed(), installed, "packages changed");
    assert_eq!(w.sources(), before, "sources not restored byte for byte");
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
}

/// dpkg fails on a file it cannot change (immutable: the real EPERM) while apt unpacks
/// the new `demo-sh`, and goes on unpacking the rest: `demo-base` 2 is left unpacked, its
/// `Depends: demo-sh (>= 2)` unmet, and `demo-sh` either still at 1 (the unpack undone)
/// or half-installed and reinst-required (its old `md5sums` could not go). Once the flag
/// is lifted, `dpkg --configure -a` alone still fails on that dependency; the resume must
/// repair with `apt-get -f install` (which reinstalls `demo-sh` from the archive cache)
/// and finish the upgrade. (Found by benches/faults.sh: `immutable` and `eperm` trials
/// whose resume exited 6 again.)
#[test]
fn a_resume_after_a_lifted_dpkg_failure_reinstalls_what_dpkg_left_broken_and_finishes() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (CAP_LINUX_IMMUTABLE) to set inode flags");
        return;
    }
    for (immutable, left, cache_cleaned) in [
        // dpkg cannot remove the old info file: demo-sh half-installed, reinst-required.
        ("var/lib/dpkg/info/demo-sh.md5sums", "demo-sh 1 iHR", false),
        // dpkg cannot back up the old /bin/sh: the unpack is undone, demo-sh still 1. The
        // archives are gone from apt's cache (`apt-get clean`): apt fetches demo-sh again.
        ("bin/sh", "demo-sh 1 ii", true),
    ] {
        let w = World::new();
        std::fs::write(w.root.join("etc/demo.conf"), "colour = red # mine\n").unwrap();
        let path = w.root.join(immutable);
        let path = match std::fs::read_link(&path) {
            Ok(target) => path.parent().unwrap().join(target),
            Err(_) => path,
        };
        let Some(guard) = InodeFlag::set(&path, rustix::fs::IFlags::IMMUTABLE) else {
            eprintln!("skipped: the temporary directory has no inode flags");
            return;
        };
        let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
        run.expect(6).mentions(&["Operation not permitted"]);
        let installed = w.installed();
        assert!(installed.contains(left), "{immutable}: {installed}");
        assert!(
            installed.contains("demo-base 2 iU"),
            "{immutable}: {installed}"
        );
        // Resumed with the fault still there: the repair fails too, and says why (both
        // failures) and what to run once the cause is gone.
        let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
        run.expect(6).mentions(&[
            "dpkg --configure -a failed",
            "demo-base depends on demo-sh (>= 2)",
            "apt-get -f install failed",
            "Operation not permitted",
            "to finish it, run: release-upgrader --root",
        ]);
        drop(guard);
        if cache_cleaned {
            let debs: Vec<PathBuf> = walk(&w.root.join("var/cache/apt/archives"))
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "deb"))
                .collect();
            assert!(!debs.is_empty(), "no archives in apt's cache");
            for deb in debs {
                std::fs::remove_file(deb).unwrap();
            }
        }
        let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
        run.expect(0)
            .mentions(&["interrupted while packages were being installed; resuming"]);
        w.assert_all_on_beta(immutable);
        assert!(w.read("/etc/os-release").contains("VERSION_CODENAME=beta"));
        assert_eq!(w.read("/etc/demo.conf"), "colour = red # mine\n");
        assert!(
            !w.root
                .join("var/lib/release-upgrader/upgrade.json")
                .exists()
        );
        assert!(!w.root.join("usr/lib/release-upgrader").exists());
    }
}

/// dpkg fails after it unpacked the new `demo-conf` (removing its backup files: an EPERM
/// injected into the second `rmdir` of `/etc.dpkg-tmp`, as benches/faults.sh did), which
/// leaves it unpacked at the new version and reinst-required: `dpkg --configure -a`
/// refuses to configure it and a plain `apt-get -f install` only tries to configure it
/// again. The resume must unpack it again (`--reinstall`) and finish the upgrade.
#[test]
fn a_resume_unpacks_again_what_dpkg_left_reinst_required_and_finishes() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: no strace");
        return;
    }
    let w = World::new();
    std::fs::write(w.root.join("etc/demo.conf"), "colour = red # mine\n").unwrap();
    std::fs::create_dir_all(&w.work).unwrap();
    let fault = w.work.join("inject-eperm");
    std::fs::write(&fault, "").unwrap();
    let wrapper = format!(
        "#!/bin/sh\nif [ -e {fault} ]; then exec strace -qq -f -o /dev/null -P {tmp} \
         -e trace=rmdir -e inject=rmdir:error=EPERM:when=2 /usr/bin/dpkg \"$@\"; fi\n\
         exec /usr/bin/dpkg \"$@\"\n",
        fault = fault.display(),
        tmp = w.root.join("etc.dpkg-tmp").display()
    );
    w.republish_with_dpkg(&wrapper);
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(6).mentions(&["Operation not permitted"]);
    let installed = w.installed();
    assert!(installed.contains("demo-conf 2.0-1 iUR"), "{installed}");
    std::fs::remove_file(&fault).unwrap();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(0)
        .mentions(&["interrupted while packages were being installed; resuming"]);
    w.assert_all_on_beta("after the resume");
    assert_eq!(w.read("/etc/demo.conf"), "colour = red # mine\n");
    assert!(w.read("/etc/os-release").contains("VERSION_CODENAME=beta"));
}
