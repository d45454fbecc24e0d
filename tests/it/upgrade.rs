//! The whole upgrade on a throwaway root: two tiny releases built with dpkg-deb, the old
//! one installed with dpkg, a signed meta-release, archive and helper pocket served from
//! 127.0.0.1, and `release-upgrader --root ROOT upgrade`.

use std::path::{Path, PathBuf};
use std::process::Command;

use release_upgrader::date;
use release_upgrader::demo::tiny;
use release_upgrader::publish::archive::{self, ArchiveRelease};
use release_upgrader::publish::metarelease::{self, Stanza};
use release_upgrader::publish::pocket::{self, PocketEntry};
use release_upgrader::serve::{Fault, Server};

use crate::support::{BIN, Item, Run, TestHelper, build_deb, test_key};

/// Test helpers whose entry points run *this machine's* apt and dpkg: enough to drive
/// the upgrade flow on a tiny root. (The demo and the real Debian test use helpers
/// relocated by the publisher.)
fn host_wrapper_helpers() -> Vec<TestHelper> {
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
    pub keyring: PathBuf,
    pub server: Server,
}

impl World {
    /// Publishes alpha and beta, installs alpha into the root.
    pub fn new() -> Self {
        Self::with_beta(|_| {})
    }

    pub fn with_beta(adjust: impl FnOnce(&mut Vec<tiny::TinyPackage>)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        let server = Server::start(&srv).unwrap();
        let key = test_key();
        let keyring = dir.path().join("keyring.gpg");
        std::fs::write(&keyring, key.public_keyring()).unwrap();
        let archive_uri = format!("{}archive", server.url());
        let work = dir.path().join("work");
        let now = date::now();
        let debs_of =
            |codename: &str, version: &str, adjust: &mut dyn FnMut(&mut Vec<tiny::TinyPackage>)| {
                let mut packages =
                    tiny::release(codename, version, &archive_uri, &key.public_keyring()).unwrap();
                adjust(&mut packages);
                let debs: Vec<PathBuf> = packages
                    .iter()
                    .map(|p| tiny::build(p, &work, &work.join(codename)).unwrap())
                    .collect();
                archive::write(
                    &srv.join("archive"),
                    &ArchiveRelease {
                        spec: archive::spec("Demo", codename, "amd64", now - 3600, 7),
                        version: Some(version.into()),
                        component: "main".into(),
                        debs: debs.clone(),
                    },
                    key,
                )
                .unwrap();
                debs
            };
        let alpha = debs_of(tiny::OLD.0, tiny::OLD.1, &mut |_| {});
        let mut adjust = Some(adjust);
        debs_of(tiny::NEW.0, tiny::NEW.1, &mut |p| {
            (adjust.take().unwrap())(p)
        });
        tiny::install_root(&root, &alpha).unwrap();

        // The helper pocket and the meta-release.
        let entries: Vec<PocketEntry> = host_wrapper_helpers()
            .iter()
            .map(|h| {
                let file = build_deb(&work, h);
                let control = release_upgrader::deb::read_control(&file).unwrap();
                PocketEntry {
                    fields: control.fields,
                    file,
                }
            })
            .collect();
        let base = format!("{}dists/beta/main/", server.url());
        let mut spec = crate::support::Fixture::default_spec();
        spec.codename = "beta".into();
        spec.suite = "beta".into();
        pocket::write(
            &srv.join("dists/beta/main/dist-upgrader-amd64/current"),
            &spec,
            &entries,
            key,
        )
        .unwrap();
        let stanzas = [
            Stanza::default()
                .field("Dist", "alpha")
                .field("Version", "1")
                .field("Date", "Mon, 01 Jan 2024 00:00:00 UTC")
                .field("Supported", "1"),
            Stanza::default()
                .field("Dist", "beta")
                .field("Version", "2")
                .field("Date", "Wed, 01 Jan 2025 00:00:00 UTC")
                .field("Supported", "1")
                .field("UpgradeToolBaseURI", base),
        ];
        metarelease::write(
            &srv.join("meta-release"),
            &metarelease::render(&stanzas),
            key,
        )
        .unwrap();
        World {
            _dir: dir,
            root,
            srv,
            keyring,
            server,
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--keyring")
            .arg(&self.keyring)
            .arg("--meta-release-uri")
            .arg(format!("{}meta-release", self.server.url()))
            .arg("--arch")
            .arg("amd64")
            .args(args)
            .env("RELEASE_UPGRADER_RETRY_DELAY_MS", "10")
            .env_remove("http_proxy");
        Run(cmd.output().unwrap())
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
}

fn audit_clean(root: &Path) {
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
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(0);
    assert!(
        w.read("/etc/os-release").contains("VERSION_CODENAME=beta"),
        "{}",
        run.stderr()
    );
    let installed = w.installed();
    assert!(installed.contains("demo-hello 2.0-1 ii"), "{installed}");
    assert!(installed.contains("demo-newtool 1.0 ii"), "{installed}");
    assert!(
        !installed.contains("demo-legacy 1.0 ii"),
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
    assert!(
        w.read("/var/log/dist-upgrade/main.log")
            .contains("upgrade to beta (2) complete")
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
    let before = w.sources();
    w.server_fault_on_hello();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive", "--retries", "0"]);
    run.expect(5).mentions(&["put back as it was"]);
    assert_eq!(w.sources(), before, "sources not restored byte for byte");
    assert!(
        !w.root
            .join("etc/apt/sources.list.d/demo.sources.distUpgrade")
            .exists()
    );
    assert!(
        !w.root.join("usr/lib/release-upgrader").exists(),
        "helpers left behind"
    );
    assert!(w.installed().contains("demo-hello 1.0-1 ii"));
    assert!(
        !w.root
            .join("var/lib/release-upgrader/upgrade.json")
            .exists()
    );
}

impl World {
    fn server_fault_on_hello(&self) {
        // Remove the new demo-hello from the pool: the index still promises it.
        for entry in walk(&self.srv.join("archive/pool")) {
            if entry.to_string_lossy().contains("demo-hello_2.0") {
                std::fs::remove_file(entry).unwrap();
            }
        }
        let _ = Fault::None;
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
    let w = World::with_beta(|packages| {
        let hello = packages
            .iter_mut()
            .find(|p| p.name == "demo-hello")
            .unwrap();
        // Fails while /etc/demo-fail exists, like a script tripping over local state.
        hello.postinst = Some(
            "#!/bin/sh\nif [ -e /etc/demo-fail ]; then echo 'failing on purpose' >&2; exit 1; fi\n"
                .into(),
        );
    });
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
