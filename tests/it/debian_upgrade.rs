//! The real thing: a debootstrapped Debian 12 root upgraded to Debian 13 against Debian's
//! archive, with trixie's own apt and dpkg relocated into helpers by
//! `release-upgrader-publish helper build`, signed into a pocket and announced by a signed
//! meta-release served from 127.0.0.1. Once with `--root` (the host runs the helpers on the
//! root) and once inside the chroot.
//!
//! Heavy (a debootstrap the first time, then about a minute and ~40 MB of downloads per
//! upgrade), so ignored by the default `cargo test`; CI runs them with `--ignored`. The
//! mirror comes from this machine's apt sources (or `RELEASE_UPGRADER_DEBIAN_MIRROR`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ru_testing::serve::Server;

use crate::debian_root::{
    Mount, MountKind, TestDir, cache_dir, chroot_mounts, in_root, minbase_tarball, mirror, unpack,
    with_chroot_mounts, with_mounts,
};
use crate::support::{BIN, PUBLISH_BIN};

/// Publisher output shared by the tests of one run: the key, the trixie helpers.
pub(crate) struct Published {
    _dir: tempfile::TempDir,
    secret: PathBuf,
    pub(crate) keyring: PathBuf,
    helpers: PathBuf,
}

pub(crate) fn the_mirror() -> String {
    mirror().expect(
        "no Debian mirror: the real upgrade test needs one in /etc/apt/sources.list(.d) \
         or in RELEASE_UPGRADER_DEBIAN_MIRROR",
    )
}

fn publish(args: &[&str]) {
    let out = Command::new(PUBLISH_BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "release-upgrader-publish {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the trixie helpers once (upstream debs cached between runs).
pub(crate) fn published() -> &'static Published {
    static PUBLISHED: OnceLock<Published> = OnceLock::new();
    PUBLISHED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        publish(&["key", "generate", "--out", key.to_str().unwrap()]);
        let helpers = dir.path().join("helpers");
        let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/debian.toml");
        let cache = cache_dir().join("upstream-debs");
        publish(&[
            "helper",
            "build",
            recipe.to_str().unwrap(),
            "--release",
            "trixie",
            "--archive",
            &the_mirror(),
            "--arch",
            "amd64",
            "--keyring",
            "/usr/share/keyrings/debian-archive-keyring.gpg",
            "--cache",
            cache.to_str().unwrap(),
            "--out",
            helpers.to_str().unwrap(),
        ]);
        Published {
            secret: key.join("secret.asc"),
            keyring: key.join("keyring.gpg"),
            helpers,
            _dir: dir,
        }
    })
}

/// A served upgrade: the pocket and meta-release in `srv`.
pub(crate) struct Upgrade {
    _server: Server,
    pub(crate) url: String,
}

pub(crate) fn serve(srv: &Path) -> Upgrade {
    let p = published();
    let base = srv.join("debian/dists/trixie");
    publish(&[
        "pocket",
        "build",
        "--codename",
        "trixie",
        "--arch",
        "amd64",
        "--valid-days",
        "2",
        "--out",
        base.to_str().unwrap(),
        "--key",
        p.secret.to_str().unwrap(),
        p.helpers.to_str().unwrap(),
    ]);
    let server = Server::start(srv).unwrap();
    let url = server.url();
    let definition = Path::new(env!("CARGO_MANIFEST_DIR")).join("pockets/debian-meta-release.toml");
    publish(&[
        "meta-release",
        "build",
        definition.to_str().unwrap(),
        "--out",
        srv.join("debian/meta-release").to_str().unwrap(),
        "--key",
        p.secret.to_str().unwrap(),
        "--base-uri",
        &format!("{url}debian/dists/{{dist}}/"),
    ]);
    Upgrade {
        url: format!("{url}debian/meta-release"),
        _server: server,
    }
}

pub(crate) fn fresh_root(dir: &Path) -> PathBuf {
    let tarball = minbase_tarball("bookworm", &the_mirror());
    let root = dir.join("root");
    unpack(&tarball, &root);
    // debootstrap leaves no package lists; the upgrade's first `apt-get update` makes them.
    root
}

/// What a finished Debian 13 root must look like.
pub(crate) fn assert_upgraded(root: &Path, transcript: &str) {
    let version = std::fs::read_to_string(root.join("etc/debian_version")).unwrap();
    assert!(
        version.starts_with("13."),
        "debian_version is {version:?}\n{transcript}"
    );
    let (ok, audit) = in_root(root, &["dpkg", "--audit"]);
    assert!(ok && audit.trim().is_empty(), "dpkg --audit: {audit}");
    let (ok, check) = in_root(root, &["apt-get", "check"]);
    assert!(ok, "apt-get check: {check}");
    let (ok, apt) = in_root(root, &["apt-get", "--version"]);
    assert!(ok && apt.starts_with("apt 3."), "the root's apt: {apt}");
    let prefix = root.join("usr/lib/release-upgrader");
    assert!(
        !prefix.exists() || std::fs::read_dir(&prefix).unwrap().next().is_none(),
        "helpers left in {}",
        prefix.display()
    );
    for log in ["main.log", "apt.log", "apt-term.log"] {
        let path = root.join("var/log/dist-upgrade").join(log);
        assert!(
            path.metadata().is_ok_and(|m| m.len() > 0),
            "{} missing or empty",
            path.display()
        );
    }
}

pub(crate) fn transcript(out: &std::process::Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[ignore = "heavy: a real Debian 12 → 13 upgrade from the mirror; CI runs it with --ignored"]
fn debian_12_root_upgrades_to_13_with_the_root_flag() {
    let dir = TestDir::new();
    let root = fresh_root(dir.path());
    let upgrade = serve(&dir.path().join("srv"));
    // /proc, /sys and /dev in the root while dpkg runs maintainer scripts there.
    let out = with_chroot_mounts(&root, BIN)
        .arg("--root")
        .arg(&root)
        .arg("--keyring")
        .arg(&published().keyring)
        .arg("--meta-release-uri")
        .arg(&upgrade.url)
        .args(["upgrade", "-y", "-f", "noninteractive"])
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    let text = transcript(&out);
    assert!(out.status.success(), "upgrade failed:\n{text}");
    assert!(text.contains("trixie"), "{text}");
    assert_upgraded(&root, &text);
}

#[test]
#[ignore = "heavy: a real Debian 12 → 13 upgrade from the mirror; CI runs it with --ignored"]
fn debian_12_upgrades_to_13_from_inside_the_chroot() {
    let dir = TestDir::new();
    let root = fresh_root(dir.path());
    let upgrade = serve(&dir.path().join("srv"));
    std::fs::copy(BIN, root.join("usr/local/bin/release-upgrader")).unwrap();
    let trusted = root.join("etc/release-upgrader/trusted.gpg.d");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::copy(&published().keyring, trusted.join("test-publisher.gpg")).unwrap();
    let out = upgrade_in_chroot(&root, "/usr/local/bin/release-upgrader", &upgrade.url);
    let text = transcript(&out);
    assert!(
        out.status.success(),
        "upgrade in the chroot failed:\n{text}"
    );
    assert_upgraded(&root, &text);
}

/// Runs `upgrade -y -f noninteractive` inside the chroot with the `client` binary there,
/// against the meta-release at `url`.
pub(crate) fn upgrade_in_chroot(root: &Path, client: &str, url: &str) -> std::process::Output {
    with_chroot_mounts(root, "chroot")
        .arg(root)
        .args([client, "--meta-release-uri", url])
        .args(["upgrade", "-y", "-f", "noninteractive"])
        .env("LC_ALL", "C.UTF-8")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .unwrap()
}

/// Issue 3's promise with the real helpers: on a bookworm root, `bootstrap` installs
/// trixie's relocated apt and dpkg, `helpers` reports what they say of themselves, and
/// `cleanup` leaves nothing.
#[test]
#[ignore = "heavy: builds the trixie helpers from the mirror; CI runs it with --ignored"]
fn real_trixie_helpers_bootstrap_and_report_apt_3_and_dpkg_1_22() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
    )
    .unwrap();
    let upgrade = serve(&dir.path().join("srv"));
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("--root")
            .arg(&root)
            .arg("--keyring")
            .arg(&published().keyring)
            .arg("--meta-release-uri")
            .arg(&upgrade.url)
            .arg("--arch")
            .arg("amd64")
            .args(args)
            .output()
            .unwrap();
        let text = transcript(&out);
        assert!(out.status.success(), "{args:?} failed:\n{text}");
        text
    };
    run(&["bootstrap", "--no-reexec"]);
    let helpers = run(&["helpers"]);
    assert!(helpers.contains("apt 3."), "{helpers}");
    assert!(
        helpers.contains("version 1.22."),
        "the helper dpkg is 1.22.x:\n{helpers}"
    );
    run(&["cleanup", "--purge-state"]);
    let prefix = root.join("usr/lib/release-upgrader");
    assert!(!prefix.exists(), "cleanup left {}", prefix.display());
}

// ------------------------------------------------------------ a standard Debian 12 server

/// Runs `script` with `sh -eu` in a private mount namespace with the root `$R` given the
/// chroot's mounts ([`with_mounts`]) and a /dev/shm of its own, and `in_root` to run a
/// command inside it: nothing mounted here is seen outside, and it all goes when the last
/// process of the namespace exits.
fn in_private_mounts(root: &Path, script: &str, args: &[&str]) -> std::process::Output {
    // PostgreSQL wants a /dev/shm of its own.
    let mut mounts = chroot_mounts();
    mounts.push(Mount {
        kind: MountKind::Fs("tmpfs"),
        source: "tmpfs".into(),
        target: "dev/shm".into(),
    });
    let prelude = r#"R="$1"; shift
in_root() { chroot "$R" env -i LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
"#;
    with_mounts(root, &mounts, "sh")
        .arg("-euc")
        .arg(format!("{prelude}{script}"))
        .arg("sh")
        .arg(root)
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("unshare runs")
}

/// Starts the root's PostgreSQL 15 cluster (Unix socket only), runs `sql` as postgres,
/// stops the cluster again.
const WITH_CLUSTER: &str = r#"in_root pg_ctlcluster 15 main start
trap 'in_root pg_ctlcluster 15 main stop' EXIT
in_root su postgres -c "psql -v ON_ERROR_STOP=1 -At -c \"$1\""
"#;

/// The rows the server's database holds: their count and the sum of their ids.
const ROWS: &str = "1000|500500";

/// A tarball of a Debian 12 server made once from the minbase root: openssh-server, nginx
/// and postgresql (with their recommendations), and a PostgreSQL 15 cluster holding rows.
fn server_tarball(mirror: &str) -> PathBuf {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tarball = cache_dir().join("debootstrap-bookworm-server-pg15.tar");
    if tarball.exists() {
        return tarball;
    }
    let minbase = minbase_tarball("bookworm", mirror);
    let work = tempfile::tempdir_in(cache_dir()).unwrap();
    let root = work.path().join("root");
    unpack(&minbase, &root);
    let install = r#"export DEBIAN_FRONTEND=noninteractive
in_root apt-get update -q
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server nginx postgresql
printf "listen_addresses = ''\n" > "$R/etc/postgresql/15/main/conf.d/unix-socket-only.conf"
in_root apt-get clean
"#;
    let out = in_private_mounts(&root, install, &[]);
    assert!(
        out.status.success(),
        "installing the server:\n{}",
        transcript(&out)
    );
    let create = "CREATE TABLE kept (id int PRIMARY KEY, word text); \
                  INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 1000) g;";
    let out = in_private_mounts(&root, WITH_CLUSTER, &[create]);
    assert!(
        out.status.success(),
        "filling the cluster:\n{}",
        transcript(&out)
    );
    // Only the policy file of this harness is ours; the tarball is the server as installed.
    std::fs::remove_file(root.join("usr/sbin/policy-rc.d")).unwrap();
    crate::debian_root::pack(&root, &tarball);
    tarball
}

fn package_status(root: &Path, name: &str) -> String {
    let (_, out) = in_root(root, &["dpkg-query", "-W", "-f=${Status}", name]);
    out.trim().to_owned()
}

/// Issue 11, finding 1: `upgrade -y` of a standard Debian 12 server keeps the PostgreSQL 15
/// server and its cluster, as stock `apt full-upgrade` does: postgresql-15 stays installed
/// (never purged), the cluster starts with its rows, postgresql-common's guard still names
/// 15, an edited configuration file stays, and the tool says how to move the cluster on.
///
/// The root's system groups are numbered unlike this machine's (`ssl-cert`, `messagebus`),
/// which dpkg run with `--root` would apply to the root's files: with `--root` the upgrade
/// is refused before anything changes (finding 9), and it runs from inside the root, as the
/// refusal says.
#[test]
#[ignore = "heavy: a real Debian 12 → 13 upgrade from the mirror; CI runs it with --ignored"]
fn debian_12_server_upgrade_keeps_the_postgresql_15_cluster_and_its_rows() {
    let started = std::time::Instant::now();
    let dir = TestDir::new();
    let root = dir.path().join("root");
    unpack(&server_tarball(&the_mirror()), &root);
    let nginx_conf = root.join("etc/nginx/nginx.conf");
    let mut edited = std::fs::read_to_string(&nginx_conf).unwrap();
    edited.push_str("# edited by the operator: kept across the upgrade\n");
    std::fs::write(&nginx_conf, &edited).unwrap();
    let guard = root.join("etc/apt/apt.conf.d/02autoremove-postgresql");
    assert!(std::fs::read_to_string(&guard).unwrap().contains("-15\""));
    let upgrade = serve(&dir.path().join("srv"));
    let ready = started.elapsed();

    let keyring = published().keyring.to_str().unwrap().to_owned();
    let sources = std::fs::read(root.join("etc/apt/sources.list")).unwrap();
    let out = Command::new(BIN)
        .arg("--root")
        .arg(&root)
        .args(["--keyring", &keyring, "--meta-release-uri", &upgrade.url])
        .args(["upgrade", "-y"])
        .output()
        .unwrap();
    let refused = transcript(&out);
    assert_eq!(out.status.code(), Some(2), "{refused}");
    assert!(refused.contains("statoverride"), "{refused}");
    assert_eq!(
        std::fs::read(root.join("etc/apt/sources.list")).unwrap(),
        sources
    );
    assert!(!root.join("usr/lib/release-upgrader").exists(), "{refused}");

    std::fs::copy(BIN, root.join("usr/local/bin/release-upgrader")).unwrap();
    let trusted = root.join("etc/release-upgrader/trusted.gpg.d");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::copy(&published().keyring, trusted.join("test-publisher.gpg")).unwrap();
    let out = in_private_mounts(
        &root,
        r#"in_root "$@""#,
        &[
            "/usr/local/bin/release-upgrader",
            "--meta-release-uri",
            &upgrade.url,
            "upgrade",
            "-y",
        ],
    );
    let text = transcript(&out);
    assert!(out.status.success(), "upgrade failed:\n{text}");
    assert_upgraded(&root, &text);

    assert_eq!(
        package_status(&root, "postgresql-15"),
        "install ok installed",
        "postgresql-15 must stay installed:\n{text}"
    );
    assert!(
        root.join("var/lib/postgresql/15/main/PG_VERSION").exists(),
        "the cluster's data is gone:\n{text}"
    );
    assert!(
        std::fs::read_to_string(&guard)
            .unwrap_or_default()
            .contains("\"^postgresql.*-15\""),
        "02autoremove-postgresql no longer names 15:\n{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&nginx_conf).unwrap(),
        edited,
        "the edited nginx.conf was replaced"
    );
    // Removed, never purged; and nothing autoremoved beside the upgrade.
    let main_log = std::fs::read_to_string(root.join("var/log/dist-upgrade/main.log")).unwrap();
    assert!(!main_log.contains("--autoremove"), "{main_log}");
    let dpkg_log = std::fs::read_to_string(root.join("var/log/dpkg.log")).unwrap();
    assert!(
        !dpkg_log.contains(" purge "),
        "the upgrade purged packages:\n{dpkg_log}"
    );
    assert!(
        text.contains("pg_upgradecluster 15 main"),
        "the tool does not say how to move the cluster to the new PostgreSQL:\n{text}"
    );
    let out = in_private_mounts(&root, WITH_CLUSTER, &["SELECT count(*), sum(id) FROM kept"]);
    let rows = transcript(&out);
    assert!(
        out.status.success(),
        "the 15 cluster does not start:\n{rows}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ROWS, "{rows}");
    eprintln!("{text}");
    eprintln!(
        "server upgrade test: {:.0} s in all, {:.0} s for the root and the helpers",
        started.elapsed().as_secs_f64(),
        ready.as_secs_f64()
    );
}
