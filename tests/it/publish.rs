//! `release-upgrader-publish pocket build` and `meta-release build`, checked by clients
//! that are not ours (stock apt, gpgv) and by our own client.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Fixture, PUBLISH_BIN, Run, build_deb, test_helpers};

fn publish(args: &[&str]) -> Run {
    Run(Command::new(PUBLISH_BIN).args(args).output().unwrap())
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A key made with `key generate`: (secret, public keyring).
fn generate_key(dir: &Path) -> (PathBuf, PathBuf) {
    let out = dir.join("key");
    publish(&["key", "generate", "--out", s(&out)]).expect(0);
    (out.join("secret.asc"), out.join("keyring.gpg"))
}

/// The default test helpers as real debs in `dir/debs`.
fn helper_debs(dir: &Path) -> Vec<PathBuf> {
    let work = dir.join("helper-debs");
    std::fs::create_dir_all(&work).unwrap();
    test_helpers("3.0.3")
        .iter()
        .map(|h| build_deb(&work, h))
        .collect()
}

fn command_line_pocket(dir: &Path, secret: &Path, debs: &[PathBuf]) -> PathBuf {
    let out = dir.join("srv");
    let mut args = vec![
        "pocket",
        "build",
        "--codename",
        "trixie",
        "--arch",
        "amd64",
        "--valid-days",
        "7",
        "--out",
        s(&out),
        "--key",
        s(secret),
    ];
    args.extend(debs.iter().map(|d| s(d)));
    publish(&args).expect(0).mentions(&["3 helpers", "trixie"]);
    out.join("dist-upgrader-amd64/current")
}

fn gpgv(keyring: &Path, args: &[&Path]) -> bool {
    Command::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}

/// apt-get in a configuration of its own: nothing of the host's sources, lists or cache.
fn isolated_apt(dir: &Path, source_line: &str, args: &[&str]) -> std::process::Output {
    let etc = dir.join("apt/etc");
    for sub in [
        "apt/etc/apt.conf.d",
        "apt/lists/partial",
        "apt/cache/archives/partial",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(etc.join("sources.list"), format!("{source_line}\n")).unwrap();
    std::fs::write(etc.join("apt.conf"), b"").unwrap();
    let opt = |k: &str, v: &Path| format!("-o{k}={}", v.display());
    Command::new("apt-get")
        .env("APT_CONFIG", etc.join("apt.conf"))
        .arg(opt("Dir::Etc::SourceList", &etc.join("sources.list")))
        .arg(opt("Dir::Etc::SourceParts", &etc.join("none.d")))
        .arg(opt("Dir::Etc::Parts", &etc.join("apt.conf.d")))
        .arg(opt("Dir::Etc::Preferences", &etc.join("preferences")))
        .arg(opt(
            "Dir::Etc::PreferencesParts",
            &etc.join("preferences.d"),
        ))
        .arg(opt("Dir::State::Lists", &dir.join("apt/lists")))
        .arg(opt("Dir::State::status", &dir.join("apt/status")))
        .arg(opt("Dir::Cache", &dir.join("apt/cache")))
        .arg("-oAPT::Architecture=amd64")
        .arg("-oDebug::NoLocking=1")
        .arg("-oAPT::Sandbox::User=root")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn pocket_built_on_the_command_line_is_accepted_by_stock_apt_and_gpgv() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (secret, keyring) = generate_key(dir);
    let debs = helper_debs(dir);
    let pocket = command_line_pocket(dir, &secret, &debs);

    assert!(gpgv(&keyring, &[&pocket.join("InRelease")]));
    assert!(gpgv(
        &keyring,
        &[&pocket.join("Release.gpg"), &pocket.join("Release")]
    ));
    let release = std::fs::read_to_string(pocket.join("Release")).unwrap();
    for field in [
        "Origin:",
        "Label:",
        "Suite: trixie",
        "Codename: trixie",
        "Architectures: amd64",
        "Date:",
        "Valid-Until:",
        "SHA256:",
    ] {
        assert!(release.contains(field), "Release lacks {field}:\n{release}");
    }

    std::fs::create_dir_all(dir.join("apt")).unwrap();
    std::fs::write(dir.join("apt/status"), "").unwrap();
    let source = format!(
        "deb [signed-by={}] file:{}/ ./",
        keyring.display(),
        pocket.display()
    );
    let update = isolated_apt(dir, &source, &["update"]);
    let stderr = String::from_utf8_lossy(&update.stderr);
    assert!(
        update.status.success() && !stderr.contains("W:") && !stderr.contains("E:"),
        "apt-get update: {stderr}{}",
        String::from_utf8_lossy(&update.stdout)
    );
    let download = isolated_apt(dir, &source, &["download", "release-upgrader-apt"]);
    assert!(
        download.status.success(),
        "apt-get download: {}",
        String::from_utf8_lossy(&download.stderr)
    );
    assert!(dir.join("release-upgrader-apt_3.0.3_amd64.deb").is_file());
    for deb in &debs {
        let info = Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .output()
            .unwrap();
        assert!(info.status.success());
    }
}

#[test]
fn tampered_inrelease_is_refused_by_stock_apt_and_gpgv() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (secret, keyring) = generate_key(dir);
    let debs = helper_debs(dir);
    let pocket = command_line_pocket(dir, &secret, &debs);
    let inrelease = pocket.join("InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(
        &inrelease,
        text.replacen("Suite: trixie", "Suite: trixiE", 1),
    )
    .unwrap();

    assert!(!gpgv(&keyring, &[&inrelease]));
    std::fs::create_dir_all(dir.join("apt")).unwrap();
    std::fs::write(dir.join("apt/status"), "").unwrap();
    let source = format!(
        "deb [signed-by={}] file:{}/ ./",
        keyring.display(),
        pocket.display()
    );
    let update = isolated_apt(dir, &source, &["update"]);
    let stderr = String::from_utf8_lossy(&update.stderr);
    assert!(
        stderr.contains("signature") || stderr.contains("not signed") || !update.status.success(),
        "apt accepted a tampered InRelease: {stderr}"
    );
    let download = isolated_apt(dir, &source, &["download", "release-upgrader-apt"]);
    assert!(
        !download.status.success(),
        "apt downloaded from a pocket whose InRelease was tampered with"
    );
    assert!(!dir.join("release-upgrader-apt_3.0.3_amd64.deb").exists());
}

#[test]
fn definitions_publish_a_pocket_and_meta_release_the_client_bootstraps_from() {
    let f = Fixture::new();
    let dir = f.dir.path();
    let secret = dir.join("secret.asc");
    std::fs::write(&secret, f.key.secret_armored()).unwrap();
    helper_debs(dir);
    std::fs::write(
        dir.join("pocket.toml"),
        "origin = \"Test\"\ncodename = \"trixie\"\narch = \"amd64\"\nvalid-days = 3\n\
         debs = [\"helper-debs\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("meta-release.toml"),
        r#"
[[release]]
dist = "bookworm"
name = "Bookworm"
version = "12"
date = "Sat, 10 Jun 2023 07:00:00 UTC"
supported = true

[[release]]
dist = "trixie"
name = "Trixie"
version = "13"
date = "Sat, 09 Aug 2025 07:00:00 UTC"
supported = true
"#,
    )
    .unwrap();
    let base = f.srv.join("dists/trixie/main");
    // The fixture published a plain `current` directory: pocket build will not replace
    // what it did not write.
    publish(&[
        "pocket",
        "build",
        s(&dir.join("pocket.toml")),
        "--out",
        s(&base),
        "--key",
        s(&secret),
    ])
    .expect(2)
    .mentions(&["current", "move it aside"]);
    std::fs::remove_dir_all(f.pocket_dir()).unwrap();
    publish(&[
        "pocket",
        "build",
        s(&dir.join("pocket.toml")),
        "--out",
        s(&base),
        "--key",
        s(&secret),
    ])
    .expect(0);
    let uri = f.base_uri();
    publish(&[
        "meta-release",
        "build",
        s(&dir.join("meta-release.toml")),
        "--out",
        s(&f.srv.join("meta-release")),
        "--key",
        s(&secret),
        "--base-uri",
        &uri,
    ])
    .expect(0)
    .mentions(&["bookworm, trixie"]);
    assert!(f.srv.join("meta-release.gpg").is_file());

    f.run(&["check"])
        .expect(0)
        .mentions(&["New release '13' (trixie) available."]);
    f.run(&["bootstrap", "--no-reexec"]).expect(0);
    f.run(&["helpers"])
        .expect(0)
        .mentions(&["release-upgrader-apt", "3.0.3", "1.22.21"]);
}

#[test]
fn republishing_switches_current_and_keeps_the_newest_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (secret, _) = generate_key(dir);
    let debs = helper_debs(dir);
    let arch_dir = dir.join("srv/dist-upgrader-amd64");
    let mut targets = Vec::new();
    for _ in 0..3 {
        command_line_pocket(dir, &secret, &debs);
        targets.push(std::fs::read_link(arch_dir.join("current")).unwrap());
    }
    std::fs::write(arch_dir.join("NOTES"), "kept").unwrap();
    publish(&[
        "pocket",
        "build",
        "--codename",
        "trixie",
        "--arch",
        "amd64",
        "--keep",
        "2",
        "--out",
        s(&dir.join("srv")),
        "--key",
        s(&secret),
        s(&debs[0]),
    ])
    .expect(0);
    let newest = std::fs::read_link(arch_dir.join("current")).unwrap();
    assert!(!targets.contains(&newest), "current moved to a new version");
    let mut left: Vec<String> = std::fs::read_dir(&arch_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left.len(), 4, "2 versions, current and NOTES: {left:?}");
    assert!(left.contains(&"NOTES".to_owned()));
    assert!(
        arch_dir.join(&targets[2]).is_dir(),
        "the previous version is kept"
    );
    assert!(!arch_dir.join(&targets[0]).exists());
    let packages = std::fs::read_to_string(arch_dir.join("current/Packages")).unwrap();
    assert_eq!(packages.matches("Package:").count(), 1);
}

#[test]
fn a_deb_the_client_would_refuse_is_not_published() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (secret, _) = generate_key(dir);
    let mut debs = helper_debs(dir);
    // A package outside the release-upgrader-* namespace.
    let mut foreign = test_helpers("3.0.3").remove(0);
    foreign.name = "apt".into();
    debs.push(build_deb(&dir.join("helper-debs"), &foreign));
    let mut args = vec![
        "pocket",
        "build",
        "--codename",
        "trixie",
        "--arch",
        "amd64",
        "--out",
    ];
    let out = dir.join("srv");
    args.push(s(&out));
    args.extend(["--key", s(&secret)]);
    args.extend(debs.iter().map(|d| s(d)));
    publish(&args).expect(3).mentions(&["apt_3.0.3_amd64.deb"]);
    assert!(!out.join("dist-upgrader-amd64/current").exists());

    let build = |arch: &str, debs: &[&PathBuf]| {
        let mut args = vec!["pocket", "build", "--codename", "trixie", "--arch", arch];
        args.extend(["--out", s(&out), "--key", s(&secret)]);
        args.extend(debs.iter().map(|d| s(d)));
        publish(&args)
    };
    build("amd64", &[&debs[0], &debs[0]])
        .expect(3)
        .mentions(&["given twice"]);
    build("arm64", &[&debs[0]]).expect(3).mentions(&["amd64"]);
    assert!(!out.join("dist-upgrader-amd64").exists());
    assert!(!out.join("dist-upgrader-arm64/current").exists());
}

#[test]
fn missing_inputs_and_unreadable_keys_fail_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (secret, _) = generate_key(dir);
    let debs = helper_debs(dir);
    let out = dir.join("srv");
    let missing = dir.join("helper-debs/release-upgrader-gone_1_amd64.deb");
    publish(&[
        "pocket",
        "build",
        "--codename",
        "trixie",
        "--arch",
        "amd64",
        "--out",
        s(&out),
        "--key",
        s(&secret),
        s(&missing),
    ])
    .expect(2)
    .mentions(&["release-upgrader-gone_1_amd64.deb"]);
    let no_key = dir.join("nowhere/secret.asc");
    publish(&[
        "pocket",
        "build",
        "--codename",
        "trixie",
        "--arch",
        "amd64",
        "--out",
        s(&out),
        "--key",
        s(&no_key),
        s(&debs[0]),
    ])
    .expect(2)
    .mentions(&["nowhere/secret.asc"]);
    let public_only = dir.join("key/keyring.gpg");
    publish(&[
        "pocket",
        "build",
        "--codename",
        "trixie",
        "--arch",
        "amd64",
        "--out",
        s(&out),
        "--key",
        s(&public_only),
        s(&debs[0]),
    ])
    .expect(2)
    .mentions(&["keyring.gpg"]);
    publish(&[
        "pocket",
        "build",
        "--arch",
        "amd64",
        "--out",
        s(&out),
        "--key",
        s(&secret),
        s(&debs[0]),
    ])
    .expect(2)
    .mentions(&["--codename"]);
    assert!(!out.exists(), "nothing was written");

    std::fs::write(
        dir.join("typo.toml"),
        "[[release]]\ndist = \"trixie\"\nversoin = \"13\"\n",
    )
    .unwrap();
    publish(&[
        "meta-release",
        "build",
        s(&dir.join("typo.toml")),
        "--out",
        s(&dir.join("meta-release")),
        "--key",
        s(&secret),
    ])
    .expect(2)
    .mentions(&["typo.toml", "versoin"]);
    assert!(!dir.join("meta-release").exists());
}

#[test]
fn committed_debian_definitions_are_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (secret, keyring) = generate_key(dir);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("meta-release");
    publish(&[
        "meta-release",
        "build",
        s(&repo.join("pockets/debian-meta-release.toml")),
        "--out",
        s(&out),
        "--key",
        s(&secret),
    ])
    .expect(0);
    assert!(gpgv(&keyring, &[&out]));
    let mut gpg = out.clone().into_os_string();
    gpg.push(".gpg");
    assert!(gpgv(&keyring, &[Path::new(&gpg), &out]));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("Dist: trixie") && text.contains("UpgradeToolBaseURI:"));
    let definition =
        std::fs::read_to_string(repo.join("pockets/debian-trixie-amd64.toml")).unwrap();
    let parsed: toml::Value = toml::from_str(&definition).unwrap();
    assert_eq!(parsed["codename"].as_str(), Some("trixie"));
    assert_eq!(parsed["arch"].as_str(), Some("amd64"));
}

/// The lines of an strace log (`-f -o`) that create a file whose name contains `name`.
fn creations<'a>(trace: &'a str, name: &str) -> Vec<&'a str> {
    trace
        .lines()
        .filter(|l| l.contains(name) && (l.contains("O_CREAT") || l.contains("creat(")))
        .collect()
}

#[test]
fn key_generate_creates_the_secret_0600_from_the_start_even_under_umask_0() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("key");
    let trace = tmp.path().join("trace");
    // strace shows the mode each file is created with: a file created 0644 or 0666 and
    // narrowed afterwards can be opened by anyone in between, and read once written.
    let traced = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=execve,open,openat,creat", "-o"])
        .arg(&trace)
        .args(["sh", "-c", "umask 0; exec \"$0\" \"$@\"", PUBLISH_BIN])
        .args(["key", "generate", "--out"])
        .arg(&out)
        .output();
    let log = std::fs::read_to_string(&trace).unwrap_or_default();
    let output = match traced {
        // Traced: strace logged the program starting.
        Ok(output) if log.contains("execve(") => output,
        other => {
            eprintln!("skipped: strace cannot trace here: {other:?}");
            return;
        }
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created = creations(&log, "secret.asc");
    assert!(
        !created.is_empty(),
        "no creation of the secret traced:\n{log}"
    );
    for line in created {
        assert!(
            line.contains(", 0600)"),
            "the secret is created wider: {line}"
        );
    }
    let mode = std::fs::metadata(out.join("secret.asc"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
}

#[test]
fn an_existing_secret_key_is_never_overwritten_unless_asked() {
    use ru_publish::SigningKey;
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (secret, _) = generate_key(tmp.path());
    let dir = secret.parent().unwrap();
    let first = std::fs::read(&secret).unwrap();
    publish(&["key", "generate", "--out", s(dir)])
        .expect(2)
        .mentions(&["secret.asc", "--force"]);
    assert_eq!(std::fs::read(&secret).unwrap(), first);
    // The library refuses too (a key that appears after the command's own check is
    // not replaced by the rename that puts the new one in place).
    let other = SigningKey::generate("other <other@invalid>", None).unwrap();
    let err = other.write_to(dir).unwrap_err();
    assert!(err.to_string().contains("secret.asc"), "{err}");
    assert_eq!(std::fs::read(&secret).unwrap(), first);
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "secret.asc" && n != "keyring.gpg")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Asked to, it replaces the key in one rename: the new secret, still 0600.
    publish(&["key", "generate", "--out", s(dir), "--force"]).expect(0);
    let replaced = std::fs::read(&secret).unwrap();
    assert_ne!(replaced, first);
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);
}

/// `image build` used to ignore a `SOURCE_DATE_EPOCH` that is not a number and build an
/// image stamped with the current time; every publisher command now refuses it.
#[test]
fn a_source_date_epoch_that_is_not_a_number_is_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "device\n").unwrap();
    let out = dir.path().join("out");
    let build = |epoch: &str| {
        Run(Command::new(PUBLISH_BIN)
            .args(["image", "build", "--root", s(&root), "--out", s(&out)])
            .args(["--name", "image"])
            .env("SOURCE_DATE_EPOCH", epoch)
            .output()
            .unwrap())
    };
    build("yesterday")
        .expect(2)
        .mentions(&["SOURCE_DATE_EPOCH", "yesterday"]);
    assert!(!out.join("image.tar.xz").exists());
    build("1700000000").expect(0);
    assert!(out.join("image.tar.xz").exists());
}
