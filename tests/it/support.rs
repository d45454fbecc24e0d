//! Test fixture: a bookworm root, a signed meta-release and a signed trixie helper
//! pocket, published at test time with a freshly generated key and served from
//! 127.0.0.1 by a server that misbehaves on request.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use ru_format::date;
use ru_publish::SigningKey;
use ru_publish::metarelease::{self, Stanza};
use ru_publish::pocket::{self, PocketEntry, PocketSpec};
use ru_testing::serve::{Fault, RequestInfo, Server};

pub const BIN: &str = env!("CARGO_BIN_EXE_release-upgrader");
pub const PUBLISH_BIN: &str = env!("CARGO_BIN_EXE_release-upgrader-publish");

/// A fault applied to requests whose path ends with `suffix`, `remaining` more times
/// (`usize::MAX` for always).
struct Rule {
    suffix: String,
    fault: Fault,
    remaining: usize,
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub srv: PathBuf,
    pub key: SigningKey,
    pub keyring: PathBuf,
    pub server: Server,
    rules: Arc<Mutex<Vec<Rule>>>,
    pub packages: Vec<(String, String, String)>,
}

/// One day, in seconds.
pub const DAY: i64 = 86_400;

impl Fixture {
    /// A bookworm root, and a published trixie upgrade with the default helpers.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(
            root.join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n",
        )
        .unwrap();
        std::fs::create_dir_all(&srv).unwrap();
        let key = test_key().clone();
        let keyring = dir.path().join("keyring.gpg");
        std::fs::write(&keyring, key.public_keyring()).unwrap();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let hook_rules = rules.clone();
        let server = Server::start_with(&srv, move |req: &RequestInfo| {
            let mut rules = hook_rules.lock().unwrap();
            for rule in rules.iter_mut() {
                if req.path.ends_with(&rule.suffix) && rule.remaining > 0 {
                    if rule.remaining != usize::MAX {
                        rule.remaining -= 1;
                    }
                    return rule.fault.clone();
                }
            }
            Fault::None
        })
        .unwrap();
        let fixture = Fixture {
            dir,
            root,
            srv,
            key,
            keyring,
            server,
            rules,
            packages: default_packages(),
        };
        fixture.publish_meta_release(&fixture.default_stanzas());
        fixture.publish_pocket(|_| {});
        fixture
    }

    pub fn base_uri(&self) -> String {
        format!("{}dists/trixie/main/", self.server.url())
    }

    pub fn meta_release_uri(&self) -> String {
        format!("{}meta-release", self.server.url())
    }

    pub fn pocket_dir(&self) -> PathBuf {
        self.srv
            .join("dists/trixie/main/dist-upgrader-amd64/current")
    }

    pub fn pocket_uri(&self) -> String {
        format!("{}dist-upgrader-amd64/current/", self.base_uri())
    }

    pub fn default_stanzas(&self) -> Vec<Stanza> {
        let mut stanzas = bookworm_and_trixie(
            &self.base_uri(),
            Some("https://www.debian.org/releases/trixie/releasenotes"),
        );
        stanzas.push(
            Stanza::default()
                .field("Dist", "forky")
                .field("Name", "Forky")
                .field("Version", "14")
                .field("Date", "Sat, 01 May 2027 07:00:00 UTC")
                .field("Supported", "0"),
        );
        stanzas
    }

    /// Publishes `stanzas` as the signed meta-release.
    pub fn publish_meta_release(&self, stanzas: &[Stanza]) {
        let text = metarelease::render(stanzas);
        metarelease::write(&self.srv.join("meta-release"), &text, &self.key).unwrap();
    }

    /// The pocket's default `Release` fields: trixie, amd64, dated an hour ago, valid a week.
    pub fn default_spec() -> PocketSpec {
        let now = date::now();
        PocketSpec {
            origin: "Test".into(),
            label: "Test helpers".into(),
            suite: "trixie".into(),
            codename: "trixie".into(),
            architectures: vec!["amd64".into()],
            description: None,
            date: now - 3600,
            valid_until: Some(now + 7 * DAY),
        }
    }

    /// (Re)publishes the pocket from `self.packages`, after `adjust` edits the spec.
    pub fn publish_pocket(&self, adjust: impl FnOnce(&mut PocketSpec)) {
        self.publish_pocket_with(adjust, &self.packages, &self.key);
    }

    pub fn publish_pocket_with(
        &self,
        adjust: impl FnOnce(&mut PocketSpec),
        packages: &[(String, String, String)],
        key: &SigningKey,
    ) {
        let mut spec = Self::default_spec();
        adjust(&mut spec);
        let dir = self.pocket_dir();
        let _ = std::fs::remove_dir_all(&dir);
        let debs = self.dir.path().join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        let entries: Vec<PocketEntry> = packages
            .iter()
            .map(|(name, version, depends)| {
                let file = debs.join(format!("{name}.deb"));
                // Stand-in content: the archive client never opens the debs.
                std::fs::write(&file, format!("!<arch>\n{name} {version}\n").repeat(100)).unwrap();
                let mut fields = vec![
                    ("Package".to_owned(), name.clone()),
                    ("Version".to_owned(), version.clone()),
                    ("Architecture".to_owned(), "amd64".to_owned()),
                    ("Installed-Size".to_owned(), "100".to_owned()),
                ];
                if !depends.is_empty() {
                    fields.push(("Depends".to_owned(), depends.clone()));
                }
                fields.push(("Description".to_owned(), format!("{name} helper")));
                PocketEntry { fields, file }
            })
            .collect();
        pocket::write(&dir, &spec, &entries, key).unwrap();
    }

    /// Applies `fault` to the next `times` requests whose path ends with `suffix`.
    pub fn fault(&self, suffix: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            suffix: suffix.to_owned(),
            fault,
            remaining: times,
        });
    }

    pub fn clear_faults(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// Runs the client against this fixture (root, keyring, meta-release, amd64).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.run_at(&self.root, args, env)
    }

    /// Changes one byte of a served file (at `offset` from the start, or the middle).
    pub fn tamper(&self, path: &Path, offset: Option<usize>) {
        let mut bytes = std::fs::read(path).unwrap();
        let at = offset.unwrap_or(bytes.len() / 2);
        bytes[at] ^= 0x01;
        std::fs::write(path, bytes).unwrap();
    }
}

pub fn default_packages() -> Vec<(String, String, String)> {
    [
        (
            "release-upgrader-apt",
            "3.0.3",
            "release-upgrader-runtime (= 2.41-12)",
        ),
        (
            "release-upgrader-dpkg",
            "1.22.21",
            "release-upgrader-runtime (>= 2.41~)",
        ),
        ("release-upgrader-runtime", "2.41-12", ""),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect()
}

/// One signing key per test process (generation is cheap, but stable keys read better
/// in failure output).
pub fn test_key() -> &'static SigningKey {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        SigningKey::generate("release-upgrader test key <test@invalid>", None).unwrap()
    })
}

/// A second, untrusted key.
pub fn other_key() -> &'static SigningKey {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate("someone else <evil@invalid>", None).unwrap())
}

/// A finished run of the client.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    /// Asserts that stderr mentions every one of `needles`.
    #[track_caller]
    pub fn mentions(&self, needles: &[&str]) -> &Self {
        let all = format!("{}{}", self.stdout(), self.stderr());
        for needle in needles {
            assert!(all.contains(needle), "output lacks {needle:?}\n{all}");
        }
        self
    }
    /// Every stdout line as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// A file of a test helper package, relative to the helper prefix.
pub enum Item {
    File(String, String, u32),
    Link(String, String),
}

fn file(path: &str, content: impl Into<String>, mode: u32) -> Item {
    Item::File(path.into(), content.into(), mode)
}

fn link(path: &str, target: &str) -> Item {
    Item::Link(path.into(), target.into())
}

/// A test helper package: name, version, Depends, contents.
pub struct TestHelper {
    pub name: String,
    pub version: String,
    pub depends: String,
    pub items: Vec<Item>,
    /// Extra control fields (e.g. a lying `Installed-Size` in the index).
    pub index_fields: Vec<(String, String)>,
}

/// Shell scripts standing in for the helpers' programs: `--version` prints what the real
/// ones print; anything else prints the arguments and the helper-relevant environment.
pub fn program(version_line: &str) -> String {
    format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo \"{version_line}\"; exit 0; fi\n\
         echo \"ran $0 $*\"; echo \"PATH=$PATH\"; echo \"LD_LIBRARY_PATH=${{LD_LIBRARY_PATH-unset}}\"\n"
    )
}

/// The default test helper set: runtime (libraries, a symlink), apt (apt-get, methods,
/// gpgv) and dpkg (dpkg, dpkg-deb, tar), each with a few more files so transactions have
/// many steps.
pub fn test_helpers(apt_version: &str) -> Vec<TestHelper> {
    let mut runtime = vec![
        file(
            "root/usr/lib/x86_64-linux-gnu/libfake.so.1",
            "a stand-in library\n",
            0o644,
        ),
        link("root/usr/lib/x86_64-linux-gnu/libfake.so", "libfake.so.1"),
        link("root/lib64", "usr/lib64"),
        file(
            "root/usr/lib64/ld-linux-x86-64.so.2",
            "loader stand-in\n",
            0o755,
        ),
    ];
    for i in 0..12 {
        let data = format!("runtime data {i}\n").repeat(50);
        runtime.push(file(&format!("root/usr/share/runtime/r{i}"), data, 0o644));
    }
    let apt_line = format!("apt {apt_version} (amd64)");
    let mut apt = vec![
        file("bin/apt-get", program(&apt_line), 0o755),
        file("bin/apt-cache", program(&apt_line), 0o755),
        file("bin/gpgv", program("gpgv (GnuPG) 2.4.7"), 0o755),
        file("methods/http", program("http method"), 0o755),
        link("methods/https", "http"),
        file(
            "root/usr/share/doc/apt/version",
            format!("{apt_version}\n"),
            0o644,
        ),
    ];
    if apt_version == "3.0.3" {
        apt.push(file("root/usr/share/apt/only-in-3.0.3", "old\n", 0o644));
    } else {
        apt.push(file("root/usr/share/apt/only-in-newer", "new\n", 0o644));
    }
    let dpkg_line = "Debian 'dpkg' package management program version 1.22.21 (amd64).";
    let dpkg = vec![
        file("bin/dpkg", program(dpkg_line), 0o755),
        file(
            "dpkg-path/dpkg-deb",
            program("Debian 'dpkg-deb' 1.22.21"),
            0o755,
        ),
        file(
            "dpkg-path/dpkg-split",
            program("Debian 'dpkg-split' 1.22.21"),
            0o755,
        ),
        file("dpkg-path/tar", program("tar (GNU tar) 1.35"), 0o755),
    ];
    vec![
        TestHelper {
            name: "release-upgrader-apt".into(),
            version: apt_version.into(),
            depends: "release-upgrader-runtime (= 2.41-12)".into(),
            items: apt,
            index_fields: Vec::new(),
        },
        TestHelper {
            name: "release-upgrader-dpkg".into(),
            version: "1.22.21".into(),
            depends: "release-upgrader-runtime (>= 2.41~)".into(),
            items: dpkg,
            index_fields: Vec::new(),
        },
        TestHelper {
            name: "release-upgrader-runtime".into(),
            version: "2.41-12".into(),
            depends: String::new(),
            items: runtime,
            index_fields: Vec::new(),
        },
    ]
}

/// Builds a real .deb with `dpkg-deb --build` (root:root, xz) and returns its path.
pub fn build_deb(work: &Path, helper: &TestHelper) -> PathBuf {
    let tree = work.join(format!("tree-{}-{}", helper.name, helper.version));
    let _ = std::fs::remove_dir_all(&tree);
    let prefix = tree.join("usr/lib/release-upgrader");
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    for item in &helper.items {
        match item {
            Item::File(path, content, mode) => {
                let p = prefix.join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, content).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
            }
            Item::Link(path, target) => {
                let p = prefix.join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(target, &p).unwrap();
            }
        }
    }
    // Installed-Size as dpkg-gencontrol counts it: each file rounded up to a KiB, one
    // KiB a link (the client bounds what a helper writes by it).
    let installed_kib: u64 = helper
        .items
        .iter()
        .map(|item| match item {
            Item::File(_, content, _) => (content.len() as u64).div_ceil(1024),
            Item::Link(..) => 1,
        })
        .sum();
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: amd64\nMaintainer: Test <test@invalid>\n\
         Installed-Size: {installed_kib}\n",
        helper.name, helper.version
    );
    if !helper.depends.is_empty() {
        control.push_str(&format!("Depends: {}\n", helper.depends));
    }
    control.push_str(&format!("Description: {} test helper\n", helper.name));
    std::fs::write(tree.join("DEBIAN/control"), control).unwrap();
    let deb = work.join(format!("{}_{}_amd64.deb", helper.name, helper.version));
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .expect("dpkg-deb runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

impl Fixture {
    /// Publishes real (dpkg-deb built) test helpers as the pocket.
    pub fn publish_test_helpers(&self, helpers: &[TestHelper]) {
        self.publish_test_helpers_with(helpers, |_| {});
    }

    pub fn publish_test_helpers_with(
        &self,
        helpers: &[TestHelper],
        adjust: impl FnOnce(&mut PocketSpec),
    ) {
        let work = self.dir.path().join("build");
        std::fs::create_dir_all(&work).unwrap();
        let entries: Vec<PocketEntry> = helpers
            .iter()
            .map(|h| {
                let file = build_deb(&work, h);
                // The index carries the deb's own control fields, as dpkg-scanpackages
                // writes them; `index_fields` override them (to make an index lie).
                let control = ru_format::deb::read_control(&file).unwrap();
                let mut fields = control.fields.clone();
                for (k, v) in &h.index_fields {
                    match fields.iter_mut().find(|(name, _)| name == k) {
                        Some(field) => field.1 = v.clone(),
                        None => fields.push((k.clone(), v.clone())),
                    }
                }
                PocketEntry { fields, file }
            })
            .collect();
        let mut spec = Self::default_spec();
        adjust(&mut spec);
        let dir = self.pocket_dir();
        let _ = std::fs::remove_dir_all(&dir);
        pocket::write(&dir, &spec, &entries, &self.key).unwrap();
    }

    pub fn prefix(&self) -> PathBuf {
        self.root.join("usr/lib/release-upgrader")
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("var/lib/release-upgrader")
    }
}

impl Fixture {
    /// Runs the client like [`Fixture::run_with`], but on another root (a copy of this one).
    pub fn run_at(&self, root: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.arg("--root")
            .arg(root)
            .arg("--keyring")
            .arg(&self.keyring)
            .arg("--meta-release-uri")
            .arg(self.meta_release_uri())
            .arg("--arch")
            .arg("amd64")
            .args(args)
            .env("RELEASE_UPGRADER_RETRY_DELAY_MS", "10")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run(cmd.output().unwrap())
    }
}

/// Everything under `dir` (not following symlinks): each path, relative, with its type,
/// mode and content (files) or target (symlinks), so two snapshots are equal exactly when
/// nothing under `dir` was created, removed, renamed or changed.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.is_dir() {
                stack.push(p);
                format!("dir {mode:o}")
            } else if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                let digest = ru_format::digest::Sha256::of(&std::fs::read(&p).unwrap());
                format!("file {mode:o} {digest}")
            };
            out.insert(rel, what);
        }
    }
    out
}

/// A stand-in for the host's files: a few directories and files outside every root.
pub fn fake_host(dir: &Path) -> PathBuf {
    let host = dir.join("host");
    for (path, content) in [
        ("var/lib/dpkg/status", "Package: precious\n"),
        ("var/lib/postgresql/15/main/PG_VERSION", "15\n"),
        ("var/log/syslog", "host log\n"),
        ("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
        (
            "etc/apt/sources.list",
            "deb http://host/debian bookworm main\n",
        ),
        ("etc/apt/sources.list.distUpgrade", "host backup\n"),
    ] {
        let p = host.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    host
}

/// `cp -a from to`: a copy of a root as an operator would make one.
pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a failed");
}

/// An inode flag set as `chattr` sets it, cleared again when dropped (before the
/// temporary directory is, which could not delete an immutable file).
pub struct InodeFlag {
    path: PathBuf,
    flag: rustix::fs::IFlags,
}

impl InodeFlag {
    fn open(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
        use rustix::fs::{Mode, OFlags};
        Ok(rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )?)
    }

    /// `None` when the file system of `path` has no such flags.
    pub fn set(path: &Path, flag: rustix::fs::IFlags) -> Option<InodeFlag> {
        let fd = Self::open(path).unwrap();
        let flags = match rustix::fs::ioctl_getflags(&fd) {
            Ok(flags) => flags,
            Err(e) => {
                eprintln!("{}: no inode flags here ({e})", path.display());
                return None;
            }
        };
        if let Err(e) = rustix::fs::ioctl_setflags(&fd, flags | flag) {
            eprintln!("{}: cannot set inode flags ({e})", path.display());
            return None;
        }
        Some(InodeFlag {
            path: path.to_owned(),
            flag,
        })
    }
}

impl Drop for InodeFlag {
    fn drop(&mut self) {
        let fd = Self::open(&self.path).unwrap();
        let flags = rustix::fs::ioctl_getflags(&fd).unwrap();
        rustix::fs::ioctl_setflags(&fd, flags - self.flag).unwrap();
    }
}

/// The meta-release stanzas of Debian 12 and 13, the target's helper pocket under `base`.
pub fn bookworm_and_trixie(base: &str, release_notes: Option<&str>) -> Vec<Stanza> {
    let mut trixie = Stanza::default()
        .field("Dist", "trixie")
        .field("Name", "Trixie")
        .field("Version", "13")
        .field("Date", "Sat, 09 Aug 2025 07:00:00 UTC")
        .field("Supported", "1");
    if let Some(notes) = release_notes {
        trixie = trixie.field("ReleaseNotes", notes);
    }
    vec![
        Stanza::default()
            .field("Dist", "bookworm")
            .field("Name", "Bookworm")
            .field("Version", "12")
            .field("Date", "Sat, 10 Jun 2023 07:00:00 UTC")
            .field("Supported", "1"),
        trixie.field("UpgradeToolBaseURI", base),
    ]
}

/// The variable naming the run of the tool a process descends from
/// (`ru_client::upgrade::children::RUN_ENV`, spelled out as the tests pin it).
pub const RUN_ENV: &str = "RELEASE_UPGRADER_RUN";

/// Holds dpkg's `lock-frontend` of `root` (two minutes at most, or until killed) from a
/// process marked, when `run` is given, as a child of that run of the tool
/// ([`RUN_ENV`]); returns once the lock is held.
pub fn hold_frontend_lock(root: &Path, run: Option<&str>) -> std::process::Child {
    let lock = root.join("var/lib/dpkg/lock-frontend");
    std::fs::write(&lock, "").unwrap();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('ok', flush=True); time.sleep(120)"])
        .arg(&lock)
        .stdout(std::process::Stdio::piped());
    if let Some(run) = run {
        cmd.env(RUN_ENV, run);
    }
    let mut holder = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ok", "the lock holder did not take the lock");
    holder
}

/// Asserts that every request `server` received carried `User-Agent: expected`.
pub fn every_request_introduces_itself_as(server: &ru_testing::serve::Server, expected: &str) {
    let requests = server.requests();
    assert!(!requests.is_empty(), "no request reached the server");
    for request in requests {
        assert_eq!(
            request.header("User-Agent"),
            Some(expected),
            "{}",
            request.path
        );
    }
}
