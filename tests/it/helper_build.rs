//! `release-upgrader-publish helper build` through the real binary: helpers built from a
//! local archive of this machine's repacked packages (offline, fast) and from the real
//! trixie archive (the mirror comes from the host's apt sources), checked with stock
//! dpkg-deb, run from a prefix in a temporary root, and used for a real `apt-get
//! update`; reproducibility; and refusals of tampered or incomplete inputs. With `--core`,
//! the client binary itself becomes `release-upgrader-core`, run by the same bundled
//! loader (tests/it/core_helper.rs upgrades with it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ru_format::date;
use ru_publish::archive::{self, ArchiveRelease};

use crate::debian_root;
use crate::support::{BIN, PUBLISH_BIN, Run, other_key, test_key};

const RECIPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/helpers/debian.toml");
const PREFIX: &str = "usr/lib/release-upgrader";

pub fn host_arch() -> String {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn host_version(package: &str) -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// A signed archive (`dists/bookworm/`, `pool/`) of this machine's apt, dpkg, gpgv, tar
/// and everything they depend on, repacked; made once per test process.
struct LocalArchive {
    root: PathBuf,
    keyring: PathBuf,
    other_keyring: PathBuf,
}

fn local_archive() -> &'static LocalArchive {
    static ARCHIVE: OnceLock<LocalArchive> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let names = ru_demo::repack::closure(&["apt", "dpkg", "gpgv", "tar", "libc6"]).unwrap();
        let work = dir.join("work");
        let debs: Vec<PathBuf> = names
            .iter()
            .map(|name| ru_demo::repack::repack(name, &work, &dir.join("debs")).unwrap())
            .collect();
        let root = dir.join("archive");
        let spec = archive::spec("Local", "bookworm", &host_arch(), date::now(), 30);
        archive::write(
            &root,
            &ArchiveRelease {
                spec,
                version: Some("12".into()),
                component: "main".into(),
                debs,
            },
            test_key(),
        )
        .unwrap();
        let keyring = dir.join("keyring.gpg");
        std::fs::write(&keyring, test_key().public_keyring()).unwrap();
        let other_keyring = dir.join("other.gpg");
        std::fs::write(&other_keyring, other_key().public_keyring()).unwrap();
        let _ = std::fs::remove_dir_all(&work);
        LocalArchive {
            root,
            keyring,
            other_keyring,
        }
    })
}

/// Runs `release-upgrader-publish helper build` with `extra` environment.
fn helper_build(
    recipe: &Path,
    release: &str,
    archive: &str,
    keyring: &Path,
    out: &Path,
    cache: &Path,
    env: &[(&str, &str)],
) -> Run {
    helper_build_with(recipe, release, archive, keyring, out, cache, env, &[])
}

/// [`helper_build`] with more arguments (`--core …`, `--compression …`).
#[allow(clippy::too_many_arguments)]
fn helper_build_with(
    recipe: &Path,
    release: &str,
    archive: &str,
    keyring: &Path,
    out: &Path,
    cache: &Path,
    env: &[(&str, &str)],
    args: &[&std::ffi::OsStr],
) -> Run {
    let mut command = Command::new(PUBLISH_BIN);
    command
        .args(["helper", "build"])
        .arg(recipe)
        .args([
            "--release",
            release,
            "--archive",
            archive,
            "--arch",
            &host_arch(),
        ])
        .arg("--out")
        .arg(out)
        .arg("--keyring")
        .arg(keyring)
        .arg("--cache")
        .arg(cache)
        .arg("--json")
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        command.env(k, v);
    }
    Run(command.output().unwrap())
}

/// The version of the core helper [`core_build`] makes: newer than the client under test.
pub fn newer_core_version() -> String {
    format!("{}+core1", env!("CARGO_PKG_VERSION"))
}

/// The helpers of the Debian recipe built from the local archive with `--core` (the client
/// under test, as a core newer than itself), fast compression; made once per test process.
/// Returns the debs by package name.
pub fn core_build() -> &'static [(String, PathBuf)] {
    static BUILT: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let local = local_archive();
        let dir = tempfile::tempdir().unwrap().keep();
        let version = newer_core_version();
        let run = helper_build_with(
            Path::new(RECIPE),
            "bookworm",
            &uri(&local.root),
            &local.keyring,
            &dir.join("out"),
            &dir.join("cache"),
            &[],
            &[
                "--core".as_ref(),
                BIN.as_ref(),
                "--core-version".as_ref(),
                version.as_ref(),
                "--compression".as_ref(),
                "zstd".as_ref(),
                "--level".as_ref(),
                "1".as_ref(),
            ],
        );
        run.expect(0);
        built(&run)
    })
}

/// The debs a successful build printed, by package name.
fn built(run: &Run) -> Vec<(String, PathBuf)> {
    run.json_lines()
        .iter()
        .filter(|l| l["event"] == "deb")
        .map(|l| {
            (
                l["deb"]["package"].as_str().unwrap().to_owned(),
                PathBuf::from(l["deb"]["path"].as_str().unwrap()),
            )
        })
        .collect()
}

/// Stock dpkg-deb accepts each deb, and extracts nothing outside the prefix; our own
/// client reader accepts each under the helper policy.
fn check_debs(debs: &[(String, PathBuf)]) {
    let names: Vec<&str> = debs.iter().map(|(n, _)| n.as_str()).collect();
    let recipe = [
        "release-upgrader-runtime",
        "release-upgrader-dpkg",
        "release-upgrader-apt",
    ];
    if names.len() == 4 {
        assert_eq!(names[..3], recipe);
        assert_eq!(names[3], "release-upgrader-core");
    } else {
        assert_eq!(names, recipe);
    }
    for (name, deb) in debs {
        let info = Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(
            info.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&info.stderr)
        );
        assert!(text.contains(&format!("Package: {name}")), "{text}");
        assert!(text.contains("Installed-Size: "), "{text}");
        assert!(text.contains("X-Release-Upgrader-Upstream: "), "{text}");
        if name != "release-upgrader-runtime" {
            assert!(
                text.contains("Depends: release-upgrader-runtime (= "),
                "{text}"
            );
        }
        if name == "release-upgrader-apt" {
            assert!(text.contains("release-upgrader-dpkg (= "), "{text}");
        }
        let contents = Command::new("dpkg-deb")
            .arg("--contents")
            .arg(deb)
            .output()
            .unwrap();
        assert!(contents.status.success());
        for line in String::from_utf8_lossy(&contents.stdout).lines() {
            assert!(line.contains(" root/root "), "{line}");
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        for entry in walk(dir.path()) {
            let rel = entry
                .strip_prefix(dir.path())
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                rel.starts_with(PREFIX) || PREFIX.starts_with(&rel),
                "{name} puts {rel} outside the prefix"
            );
        }
    }
    let paths: Vec<&PathBuf> = debs.iter().map(|(_, p)| p).collect();
    let check = Command::new(PUBLISH_BIN)
        .args(["deb", "check", "--arch", &host_arch()])
        .args(&paths)
        .output()
        .unwrap();
    Run(check).expect(0);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

/// Extracts every deb into a fresh temporary root; returns it and the prefix in it.
fn install(debs: &[(String, PathBuf)]) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    for (_, deb) in debs {
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(root.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let prefix = root.path().join(PREFIX);
    (root, prefix)
}

fn run_ok(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The loader and library path an entry point runs its program with, read from it.
fn loader_of(entry: &Path, root: &Path) -> (PathBuf, String) {
    let script = std::fs::read_to_string(entry).unwrap();
    let line = script.lines().find(|l| l.starts_with("exec ")).unwrap();
    let quoted: Vec<&str> = line.split('\'').skip(1).step_by(2).collect();
    // exec "$root"/'LOADER' --library-path "$root"/'DIR':… --argv0 "$0" "$root"/'PROGRAM'
    let loader = root.join(quoted[0]);
    let dirs: Vec<String> = quoted[1..quoted.len() - 1]
        .iter()
        .map(|d| root.join(d).display().to_string())
        .collect();
    (loader, dirs.join(":"))
}

/// `ld.so --list` of `program` shows every library, and the loader, inside `prefix`.
fn assert_resolved_inside(prefix: &Path, entry: &str, program: &str) {
    let root = prefix.join("root");
    let (loader, library_path) = loader_of(&prefix.join(entry), &root);
    let out = Command::new(&loader)
        .args(["--library-path", &library_path, "--list"])
        .arg(root.join(program))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut libraries = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("linux-vdso") {
            continue;
        }
        // The interpreter's line names PT_INTERP (`/lib64/ld-linux-x86-64.so.2 (0x…)`):
        // the loader that runs is the bundled one this command started.
        let Some((_, rest)) = line.split_once("=> ") else {
            continue;
        };
        let path = rest.split(" (").next().unwrap();
        let canonical =
            std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{path}: {e}\n{text}"));
        assert!(
            canonical.starts_with(std::fs::canonicalize(prefix).unwrap()),
            "{program}: {line} resolves outside the prefix\n{text}"
        );
        libraries += 1;
    }
    assert!(libraries >= 2, "{text}");
}

/// An isolated apt configuration that uses the helpers in `prefix` (as the client's
/// apt.conf does) and the one source `source`.
fn apt_update(prefix: &Path, source: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in [
        "lists/partial",
        "cache/archives/partial",
        "parts",
        "sourceparts",
        "trusted",
        "log",
    ] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("sources.list"), format!("{source}\n")).unwrap();
    std::fs::write(d.join("status"), "").unwrap();
    let p = |rel: &str| prefix.join(rel).display().to_string();
    let conf = format!(
        "Dir::Etc::SourceList \"{d}/sources.list\";\n\
         Dir::Etc::SourceParts \"{d}/sourceparts\";\n\
         Dir::Etc::Parts \"{d}/parts\";\n\
         Dir::Etc::TrustedParts \"{d}/trusted\";\n\
         Dir::Etc::Trusted \"{d}/trusted.gpg\";\n\
         Dir::Etc::Preferences \"{d}/preferences\";\n\
         Dir::Etc::PreferencesParts \"{d}/preferences.d\";\n\
         Dir::State::Lists \"{d}/lists\";\n\
         Dir::State::status \"{d}/status\";\n\
         Dir::Cache \"{d}/cache\";\n\
         Dir::Log \"{d}/log\";\n\
         APT::Sandbox::User \"root\";\n\
         Dir::Bin::dpkg \"{dpkg}\";\n\
         Dir::Bin::Methods \"{methods}\";\n\
         APT::Key::GPGVCommand \"{gpgv}\";\n\
         Debug::Acquire::gpgv \"true\";\n",
        d = d.display(),
        dpkg = p("bin/dpkg"),
        methods = p("methods"),
        gpgv = p("bin/gpgv"),
    );
    std::fs::write(d.join("apt.conf"), conf).unwrap();
    let out = Command::new(prefix.join("bin/apt-get"))
        .arg("update")
        .env("APT_CONFIG", d.join("apt.conf"))
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lists: Vec<String> = std::fs::read_dir(d.join("lists"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let ok = out.status.success()
        && !text.contains("W: ")
        && !text.contains("E: ")
        && lists.iter().any(|l| l.ends_with("_Packages"));
    (ok, format!("{text}\nlists: {lists:?}"))
}

/// `apt-get update` with the helper apt against the local archive succeeds, through the
/// helper gpgv; against a tampered copy it fails. apt 3 runs `APT::Key::GPGVCommand`
/// itself (and says so with `Debug::Acquire::gpgv`); apt 2.6 goes through apt-key, which
/// runs the same command.
fn assert_apt_update_works(prefix: &Path, runs_gpgv_itself: bool) {
    let local = local_archive();
    let source = format!(
        "deb [signed-by={}] file:{} bookworm main",
        local.keyring.display(),
        local.root.display()
    );
    let (ok, text) = apt_update(prefix, &source);
    assert!(ok, "{text}");
    if runs_gpgv_itself {
        let gpgv = prefix.join("bin/gpgv").display().to_string();
        assert!(
            text.contains(&format!("Preparing to exec:  {gpgv}"))
                || text.contains(&format!("Preparing to exec: {gpgv}")),
            "gpgv of the helpers not used:\n{text}"
        );
    }
    let tampered = tampered_copy(&local.root, "dists/bookworm/InRelease", |text| {
        String::from_utf8(text.to_vec())
            .unwrap()
            .replacen("Label: Local", "Label: Lokal", 1)
            .into_bytes()
    });
    let source = format!(
        "deb [signed-by={}] file:{} bookworm main",
        local.keyring.display(),
        tampered.path().join("archive").display()
    );
    let (ok, text) = apt_update(prefix, &source);
    assert!(!ok, "a tampered InRelease was accepted:\n{text}");
}

/// A copy of the archive at `root` (hard links) with the file `rel` replaced by
/// `change(content)`.
fn tampered_copy(root: &Path, rel: &str, change: impl Fn(&[u8]) -> Vec<u8>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("archive");
    let status = Command::new("cp")
        .arg("-al")
        .arg(root)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let target = copy.join(rel);
    let changed = change(&std::fs::read(&target).unwrap());
    std::fs::remove_file(&target).unwrap();
    std::fs::write(&target, changed).unwrap();
    dir
}

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
#[ignore = "heavy: builds helper sets (a minute or more each); CI runs it with --ignored"]
fn helpers_from_a_local_archive_of_this_machines_packages_run_from_the_prefix() {
    let local = local_archive();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = helper_build(
        Path::new(RECIPE),
        "bookworm",
        &uri(&local.root),
        &local.keyring,
        &out,
        &dir.path().join("cache"),
        &[],
    );
    run.expect(0);
    let debs = built(&run);
    check_debs(&debs);
    let (_root, prefix) = install(&debs);
    let apt = run_ok(&prefix.join("bin/apt-get"), &["--version"]);
    assert!(
        apt.starts_with(&format!("apt {} ", host_version("apt"))),
        "{apt}"
    );
    let dpkg = run_ok(&prefix.join("bin/dpkg"), &["--version"]);
    assert!(
        dpkg.contains(&format!("version {} ", host_version("dpkg"))),
        "{dpkg}"
    );
    for entry in [
        "dpkg-path/dpkg-deb",
        "dpkg-path/tar",
        "bin/gpgv",
        "methods/http",
        "methods/https",
        "methods/file",
        "methods/gpgv",
        "methods/store",
    ] {
        assert!(prefix.join(entry).is_file(), "{entry} missing");
    }
    run_ok(&prefix.join("dpkg-path/tar"), &["--version"]);
    // Found through PATH, and through a symlink from elsewhere, the entry point still
    // finds its prefix.
    let out = Command::new("apt-get")
        .arg("--version")
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", prefix.join("bin").display()),
        )
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("apt "),
        "{out:?}"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(prefix.join("bin/dpkg"), elsewhere.path().join("dpkg")).unwrap();
    let dpkg_link = run_ok(&elsewhere.path().join("dpkg"), &["--version"]);
    assert_eq!(dpkg_link, dpkg);
    assert_resolved_inside(&prefix, "bin/apt-get", "usr/bin/apt-get");
    assert_apt_update_works(&prefix, false);
}

#[test]
#[ignore = "heavy: builds helper sets (a minute or more each); CI runs it with --ignored"]
fn two_builds_with_the_same_source_date_epoch_are_identical() {
    let local = local_archive();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut results = Vec::new();
    for out in ["one", "two"] {
        let run = helper_build(
            Path::new(RECIPE),
            "bookworm",
            &uri(&local.root),
            &local.keyring,
            &dir.path().join(out),
            &cache,
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        );
        run.expect(0);
        results.push(built(&run));
    }
    assert_eq!(results[0].len(), 3);
    for ((name, one), (_, two)) in results[0].iter().zip(&results[1]) {
        assert_ne!(one, two);
        assert!(
            std::fs::read(one).unwrap() == std::fs::read(two).unwrap(),
            "{name} differs"
        );
    }
    // SOURCE_DATE_EPOCH bounds every mtime.
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&results[0][0].1)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&contents.stdout);
    assert!(
        text.lines()
            .all(|l| !l.contains(" 2024-") && !l.contains(" 2025-") && !l.contains(" 2026-")),
        "{text}"
    );
}

#[test]
fn a_recipe_naming_a_package_the_archive_lacks_fails_naming_it() {
    let local = local_archive();
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("recipe.toml");
    let text = std::fs::read_to_string(RECIPE).unwrap().replace(
        "upstream = [\"dpkg\", \"tar\"]",
        "upstream = [\"dpkg\", \"tar\", \"no-such-package\"]",
    );
    std::fs::write(&recipe, text).unwrap();
    let run = helper_build(
        &recipe,
        "bookworm",
        &uri(&local.root),
        &local.keyring,
        &dir.path().join("out"),
        &dir.path().join("cache"),
        &[],
    );
    run.expect(2).mentions(&["no-such-package"]);
}

#[test]
fn a_tampered_inrelease_or_another_key_is_refused() {
    let local = local_archive();
    let dir = tempfile::tempdir().unwrap();
    let tampered = tampered_copy(&local.root, "dists/bookworm/InRelease", |text| {
        String::from_utf8(text.to_vec())
            .unwrap()
            .replacen("Label: Local", "Label: Lokal", 1)
            .into_bytes()
    });
    let run = helper_build(
        Path::new(RECIPE),
        "bookworm",
        &uri(&tampered.path().join("archive")),
        &local.keyring,
        &dir.path().join("out"),
        &dir.path().join("cache"),
        &[],
    );
    run.expect(3).mentions(&["InRelease"]);
    let run = helper_build(
        Path::new(RECIPE),
        "bookworm",
        &uri(&local.root),
        &local.other_keyring,
        &dir.path().join("out"),
        &dir.path().join("cache"),
        &[],
    );
    run.expect(3).mentions(&["signature"]);
    let run = helper_build(
        Path::new(RECIPE),
        "bookworm",
        &uri(&local.root),
        &dir.path().join("missing.gpg"),
        &dir.path().join("out"),
        &dir.path().join("cache"),
        &[],
    );
    run.expect(2).mentions(&["missing.gpg"]);
    // Nothing was written, and the build's scratch directory is gone.
    let left: Vec<PathBuf> = std::fs::read_dir(dir.path().join("out"))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_packages_index_or_deb_that_does_not_match_its_hash_is_refused() {
    let local = local_archive();
    let dir = tempfile::tempdir().unwrap();
    let flip = |bytes: &[u8]| {
        let mut bytes = bytes.to_vec();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x55;
        bytes
    };
    let arch = host_arch();
    let tampered = tampered_copy(
        &local.root,
        &format!("dists/bookworm/main/binary-{arch}/Packages.xz"),
        flip,
    );
    let run = helper_build(
        Path::new(RECIPE),
        "bookworm",
        &uri(&tampered.path().join("archive")),
        &local.keyring,
        &dir.path().join("out"),
        &dir.path().join("cache"),
        &[],
    );
    run.expect(3).mentions(&["Packages.xz", "SHA256"]);
    // A deb in the pool.
    let packages = std::fs::read_to_string(
        local
            .root
            .join(format!("dists/bookworm/main/binary-{arch}/Packages")),
    )
    .unwrap();
    let apt_deb = packages
        .split("\n\n")
        .find(|s| s.starts_with("Package: apt\n"))
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Filename: ")))
        .unwrap()
        .to_owned();
    let tampered = tampered_copy(&local.root, &apt_deb, flip);
    let run = helper_build(
        Path::new(RECIPE),
        "bookworm",
        &uri(&tampered.path().join("archive")),
        &local.keyring,
        &dir.path().join("out"),
        &dir.path().join("fresh-cache"),
        &[],
    );
    run.expect(3).mentions(&["SHA256"]);
}

#[test]
#[ignore = "heavy: builds helper sets (a minute or more each); CI runs it with --ignored"]
fn helpers_built_from_real_trixie_run_on_this_machine() {
    let mirror = debian_root::mirror().expect(
        "no Debian mirror: set RELEASE_UPGRADER_DEBIAN_MIRROR or add one to the apt sources",
    );
    let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
    let dir = tempfile::tempdir().unwrap();
    let cache = debian_root::cache_dir().join("helper-debs");
    let run = helper_build(
        Path::new(RECIPE),
        "trixie",
        &mirror,
        keyring,
        &dir.path().join("out"),
        &cache,
        &[],
    );
    assert!(
        run.code() != 4,
        "the Debian archive is unreachable (CI reaches it):\n{}",
        run.stderr()
    );
    run.expect(0);
    let debs = built(&run);
    check_debs(&debs);
    let (_root, prefix) = install(&debs);
    let apt = run_ok(&prefix.join("bin/apt-get"), &["--version"]);
    assert!(apt.starts_with("apt 3."), "{apt}");
    let dpkg = run_ok(&prefix.join("bin/dpkg"), &["--version"]);
    assert!(dpkg.contains("version 1.22."), "{dpkg}");
    run_ok(&prefix.join("dpkg-path/dpkg-deb"), &["--version"]);
    run_ok(&prefix.join("dpkg-path/tar"), &["--version"]);
    run_ok(&prefix.join("bin/gpgv"), &["--version"]);
    // trixie's dpkg-query reads this machine's dpkg database.
    let version = run_ok(
        &prefix.join("bin/dpkg-query"),
        &["-W", "-f", "${Version}", "dpkg"],
    );
    assert_eq!(version, host_version("dpkg"));
    // trixie's dpkg-deb unpacks with the tar it finds first on PATH: the helpers' own.
    let unpacked = tempfile::tempdir().unwrap();
    let out = Command::new(prefix.join("dpkg-path/dpkg-deb"))
        .arg("-x")
        .arg(&debs[0].1)
        .arg(unpacked.path())
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", prefix.join("dpkg-path").display()),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(unpacked.path().join(PREFIX).join("root").is_dir());
    for (entry, program) in [
        ("bin/apt-get", "usr/bin/apt-get"),
        ("bin/dpkg", "usr/bin/dpkg"),
        ("bin/gpgv", "usr/bin/gpgv"),
        ("methods/http", "usr/lib/apt/methods/http"),
    ] {
        assert_resolved_inside(&prefix, entry, program);
    }
    assert_apt_update_works(&prefix, true);
}

/// `dpkg-deb --field DEB FIELD`.
fn field(deb: &Path, name: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_client_packaged_as_the_core_helper_passes_the_helper_checks_and_runs_from_the_prefix() {
    let debs = core_build();
    check_debs(debs);
    let (name, core) = &debs[3];
    assert_eq!(name, "release-upgrader-core");
    assert_eq!(field(core, "Version"), newer_core_version());
    let runtime_version = field(&debs[0].1, "Version");
    assert_eq!(
        field(core, "Depends"),
        format!("release-upgrader-runtime (= {runtime_version})")
    );
    assert_eq!(
        field(core, "X-Release-Upgrader-Upstream"),
        format!("release-upgrader {}", newer_core_version())
    );
    // Only the program and its entry point: the loader and the C library are the runtime's.
    let contents = Command::new("dpkg-deb")
        .args(["--fsys-tarfile"])
        .arg(core)
        .output()
        .unwrap();
    let listing = Command::new("tar")
        .args(["-t", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut tar| {
            use std::io::Write as _;
            tar.stdin.take().unwrap().write_all(&contents.stdout)?;
            tar.wait_with_output()
        })
        .unwrap();
    let files: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        files,
        [
            "./usr/lib/release-upgrader/bin/release-upgrader",
            "./usr/lib/release-upgrader/root/usr/bin/release-upgrader"
        ]
    );
    let (_root, prefix) = install(debs);
    let version = run_ok(&prefix.join("bin/release-upgrader"), &["--version"]);
    assert_eq!(
        version.trim(),
        format!("release-upgrader {}", env!("CARGO_PKG_VERSION"))
    );
    assert_resolved_inside(&prefix, "bin/release-upgrader", "usr/bin/release-upgrader");
}

#[test]
fn the_core_helper_takes_its_version_from_the_binary_and_is_reproducible() {
    let local = local_archive();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut cores = Vec::new();
    for out in ["one", "two"] {
        let run = helper_build_with(
            Path::new(RECIPE),
            "bookworm",
            &uri(&local.root),
            &local.keyring,
            &dir.path().join(out),
            &cache,
            &[("SOURCE_DATE_EPOCH", "1700000000")],
            &[
                "--core".as_ref(),
                BIN.as_ref(),
                "--compression".as_ref(),
                "zstd".as_ref(),
                "--level".as_ref(),
                "1".as_ref(),
            ],
        );
        run.expect(0);
        let debs = built(&run);
        let core = debs
            .into_iter()
            .find(|(name, _)| name == "release-upgrader-core")
            .unwrap()
            .1;
        cores.push(core);
    }
    assert_eq!(field(&cores[0], "Version"), env!("CARGO_PKG_VERSION"));
    assert!(
        std::fs::read(&cores[0]).unwrap() == std::fs::read(&cores[1]).unwrap(),
        "the core helper differs between two builds"
    );
}

#[test]
fn a_core_that_is_not_the_client_or_has_no_valid_version_is_refused() {
    let local = local_archive();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("release-upgrader");
    std::fs::write(&text, "#!/bin/sh\necho release-upgrader 9.9\n").unwrap();
    let cases: [(&[&std::ffi::OsStr], &[&str]); 3] = [
        (
            &["--core".as_ref(), text.as_os_str()],
            &["not an ELF program"],
        ),
        // Another program: asked its version, it does not answer as the client does.
        (
            &["--core".as_ref(), "/usr/bin/true".as_ref()],
            &["/usr/bin/true", "is it release-upgrader?"],
        ),
        (
            &[
                "--core".as_ref(),
                BIN.as_ref(),
                "--core-version".as_ref(),
                "not a version".as_ref(),
            ],
            &["release-upgrader-core", "not a version"],
        ),
    ];
    for (args, needles) in cases {
        let out = dir.path().join("out");
        let run = helper_build_with(
            Path::new(RECIPE),
            "bookworm",
            &uri(&local.root),
            &local.keyring,
            &out,
            &dir.path().join("cache"),
            &[],
            args,
        );
        run.expect(2).mentions(needles);
        let written: Vec<_> = std::fs::read_dir(&out)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "deb"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(written.is_empty(), "{args:?}: debs written: {written:?}");
    }
}
