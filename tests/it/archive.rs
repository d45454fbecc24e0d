//! The archive client through the real binary: `check`, `bootstrap --dry-run` and
//! `verify` against a signed meta-release and pocket served from 127.0.0.1, and a
//! tampered twin for every check.

use ru_publish::metarelease::Stanza;
use ru_testing::serve::Fault;

use crate::support::{DAY, Fixture, other_key};

#[test]
fn check_finds_the_next_release_and_verifies_its_pocket() {
    let f = Fixture::new();
    let run = f.run(&["check"]);
    run.expect(0);
    assert_eq!(run.stdout(), "New release '13' (trixie) available.\n");
    // The pocket was read: InRelease and Packages.xz were fetched.
    let paths: Vec<String> = f.server.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.iter().any(|p| p.ends_with("current/InRelease")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.ends_with("current/Packages.xz")),
        "{paths:?}"
    );
}

#[test]
fn user_agent_names_the_tool_the_system_and_the_architecture() {
    let f = Fixture::new();
    f.run(&["check"]).expect(0);
    let version = env!("CARGO_PKG_VERSION");
    let expected = format!("release-upgrader/{version} (debian bookworm; amd64)");
    crate::support::every_request_introduces_itself_as(&f.server, &expected);
}

#[test]
fn check_json_reports_target_signer_and_helpers() {
    let f = Fixture::new();
    let run = f.run(&["--json", "check"]);
    run.expect(0);
    let lines = run.json_lines();
    // The check event, then the result.
    assert_eq!(lines.last().unwrap()["event"], "result");
    let last = &lines[lines.len() - 2];
    assert_eq!(last["event"], "check");
    assert_eq!(last["available"], true);
    assert_eq!(last["target"]["dist"], "trixie");
    assert_eq!(last["current"]["dist"], "bookworm");
    assert_eq!(last["meta_release"]["signed_by"][0], f.key.fingerprint());
    let helpers: Vec<&str> = last["pocket"]["helpers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        helpers,
        [
            "release-upgrader-apt",
            "release-upgrader-dpkg",
            "release-upgrader-runtime"
        ]
    );
}

#[test]
fn check_without_a_newer_release_exits_1() {
    let f = Fixture::new();
    let stanzas: Vec<Stanza> = f.default_stanzas().into_iter().take(1).collect();
    f.publish_meta_release(&stanzas);
    let run = f.run(&["check"]);
    run.expect(1);
    assert_eq!(run.stdout(), "No new release found.\n");
}

#[test]
fn unsupported_releases_need_devel() {
    let f = Fixture::new();
    let mut stanzas = f.default_stanzas();
    stanzas.remove(1); // no trixie: only the unsupported forky is newer
    f.publish_meta_release(&stanzas);
    f.run(&["check"]).expect(1);
    // -d reads <uri>-development.
    let text = ru_publish::metarelease::render(&stanzas);
    ru_publish::metarelease::write(&f.srv.join("meta-release-development"), &text, &f.key).unwrap();
    let run = f.run(&["-d", "check"]);
    run.expect(0);
    assert!(run.stdout().contains("(forky)"), "{}", run.stdout());
    assert!(
        run.stderr().contains("no UpgradeToolBaseURI"),
        "{}",
        run.stderr()
    );
}

#[test]
fn upgrade_broken_blocks_the_upgrade_with_the_servers_text() {
    let f = Fixture::new();
    let mut stanzas = f.default_stanzas();
    stanzas[1] = stanzas[1]
        .clone()
        .field("UpgradeBroken", "a grub bug eats /boot");
    f.publish_meta_release(&stanzas);
    f.run(&["check"])
        .expect(1)
        .mentions(&["a grub bug eats /boot"]);
    f.run(&["bootstrap", "--dry-run"])
        .expect(1)
        .mentions(&["a grub bug eats /boot"]);
}

#[test]
fn prompt_never_disables_the_check() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.root.join("etc/update-manager")).unwrap();
    std::fs::write(
        f.root.join("etc/update-manager/release-upgrades"),
        "[DEFAULT]\nPrompt=never\n",
    )
    .unwrap();
    // The command-line URI overrides the configuration, as documented, so drop it here.
    let run = std::process::Command::new(crate::support::BIN)
        .args([
            "--root",
            f.root.to_str().unwrap(),
            "--keyring",
            f.keyring.to_str().unwrap(),
            "check",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("Prompt=never"));
}

#[test]
fn configured_meta_release_uri_is_used() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.root.join("etc/update-manager")).unwrap();
    std::fs::write(
        f.root.join("etc/update-manager/meta-release"),
        format!("[METARELEASE]\nURI = {}\n", f.meta_release_uri()),
    )
    .unwrap();
    let run = std::process::Command::new(crate::support::BIN)
        .args([
            "--root",
            f.root.to_str().unwrap(),
            "--keyring",
            f.keyring.to_str().unwrap(),
            "--arch",
            "amd64",
            "check",
        ])
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn no_meta_release_uri_is_a_configuration_error() {
    let f = Fixture::new();
    let run = std::process::Command::new(crate::support::BIN)
        .args([
            "--root",
            f.root.to_str().unwrap(),
            "--keyring",
            f.keyring.to_str().unwrap(),
            "check",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("--meta-release-uri"), "{stderr}");
}

#[test]
fn bootstrap_dry_run_lists_the_helper_set_and_changes_nothing() {
    let f = Fixture::new();
    let before = snapshot(&f.root);
    let run = f.run(&["bootstrap", "--dry-run"]);
    run.expect(0);
    let out = run.stdout();
    for (name, version, _) in &f.packages {
        let line = out
            .lines()
            .find(|l| l.contains(name.as_str()))
            .unwrap_or_else(|| panic!("{name}\n{out}"));
        assert!(line.contains(version.as_str()), "{line}");
        assert!(line.contains("kB"), "{line}");
    }
    assert!(out.contains("3 packages"), "{out}");
    assert_eq!(snapshot(&f.root), before, "--dry-run changed the root");
    // A rollback floor is not recorded by a dry run either: an older pocket still passes.
    f.publish_pocket(|s| s.date -= DAY);
    f.run(&["bootstrap", "--dry-run"]).expect(0);
}

fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
                out.push((p.display().to_string(), Vec::new()));
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

// --- tampered twins: each must be refused with exit 3 and a message naming it ---

#[test]
fn tampered_inrelease_is_refused() {
    let f = Fixture::new();
    let inrelease = f.pocket_dir().join("InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    let at = text.find("Codename: trixie").unwrap() + "Codename: t".len();
    f.tamper(&inrelease, Some(at));
    f.run(&["check"])
        .expect(3)
        .mentions(&["InRelease", "no good signature"]);
}

#[test]
fn tampered_release_gpg_is_refused_when_there_is_no_inrelease() {
    let f = Fixture::new();
    // Without InRelease the client falls back to Release + Release.gpg, which passes.
    std::fs::remove_file(f.pocket_dir().join("InRelease")).unwrap();
    f.run(&["check"]).expect(0);
    let f = Fixture::new();
    std::fs::remove_file(f.pocket_dir().join("InRelease")).unwrap();
    let sig = f.pocket_dir().join("Release.gpg");
    let text = std::fs::read_to_string(&sig).unwrap();
    // A byte inside the base64 body of the signature.
    let at = text.find("\n\n").unwrap() + 10;
    f.tamper(&sig, Some(at));
    f.run(&["check"]).expect(3).mentions(&["Release"]);
    // And a changed Release under a good Release.gpg.
    let f = Fixture::new();
    std::fs::remove_file(f.pocket_dir().join("InRelease")).unwrap();
    f.tamper(&f.pocket_dir().join("Release"), None);
    f.run(&["check"])
        .expect(3)
        .mentions(&["Release", "no good signature"]);
}

#[test]
fn release_without_any_signature_is_refused() {
    let f = Fixture::new();
    std::fs::remove_file(f.pocket_dir().join("InRelease")).unwrap();
    std::fs::remove_file(f.pocket_dir().join("Release.gpg")).unwrap();
    f.run(&["check"]).expect(3).mentions(&["not signed"]);
}

#[test]
fn tampered_packages_index_is_refused() {
    let f = Fixture::new();
    f.tamper(&f.pocket_dir().join("Packages.xz"), None);
    f.run(&["bootstrap", "--dry-run"])
        .expect(3)
        .mentions(&["Packages.xz", "SHA256 mismatch"]);
}

#[test]
fn tampered_meta_release_is_refused() {
    let f = Fixture::new();
    let path = f.srv.join("meta-release");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("Version: 13").unwrap() + "Version: 1".len();
    f.tamper(&path, Some(at));
    f.run(&["check"])
        .expect(3)
        .mentions(&["meta-release", "no good signature"]);
}

#[test]
fn text_around_a_clearsigned_meta_release_is_ignored() {
    let f = Fixture::new();
    let path = f.srv.join("meta-release");
    let signed = std::fs::read_to_string(&path).unwrap();
    // An attacker appends a newer release outside the signed block.
    let evil = format!(
        "Dist: evil\nVersion: 99\nDate: Sat, 09 Aug 2025 08:00:00 UTC\nSupported: 1\n\n{signed}\n\
         Dist: evil2\nVersion: 98\nDate: Sat, 09 Aug 2025 07:30:00 UTC\nSupported: 1\n"
    );
    std::fs::write(&path, evil).unwrap();
    let run = f.run(&["check"]);
    run.expect(0);
    assert!(run.stdout().contains("(trixie)"), "{}", run.stdout());
}

#[test]
fn a_signed_meta_release_listing_a_release_twice_is_refused() {
    let f = Fixture::new();
    // Two `Dist: trixie` stanzas, the second pointing at another server. Ubuntu's
    // MetaRelease.py would take the first newer one in file order; we refuse to guess.
    let mut stanzas = f.default_stanzas();
    let mut twin = stanzas[1].clone();
    for (name, value) in &mut twin.fields {
        if name == "UpgradeToolBaseURI" {
            *value = "http://127.0.0.1:9/elsewhere/".into();
        }
    }
    stanzas.insert(2, twin);
    f.publish_meta_release(&stanzas);
    for args in [&["check"][..], &["bootstrap", "--dry-run"][..]] {
        f.run(args)
            .expect(3)
            .mentions(&["meta-release", "trixie", "listed 2 times"]);
    }
    // Nothing was fetched from the pocket of either stanza.
    assert!(
        !f.server
            .requests()
            .iter()
            .any(|r| r.path.contains("dist-upgrader")),
        "a pocket was read"
    );
}

#[test]
fn a_packages_index_promised_bigger_than_the_cap_is_not_fetched() {
    let f = Fixture::new();
    // A signed Release promising a petabyte of Packages.xz: the promise is the cap the
    // download is held to, so it must be refused before anything is fetched on it.
    let release = std::fs::read_to_string(f.pocket_dir().join("Release")).unwrap();
    let promised: String = release
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [hash, _, "Packages.xz"] => format!(" {hash} 1000000000000000 Packages.xz\n"),
                _ => format!("{line}\n"),
            }
        })
        .collect();
    assert_ne!(promised, release);
    let signed = f.key.clearsign(promised.as_bytes()).unwrap();
    std::fs::write(f.pocket_dir().join("InRelease"), signed).unwrap();
    f.run(&["bootstrap", "--dry-run"]).expect(3).mentions(&[
        "Packages.xz",
        "1000000000000000 bytes",
        "more than the",
    ]);
    assert!(
        !f.server
            .requests()
            .iter()
            .any(|r| r.path.ends_with("Packages.xz")),
        "the index was fetched"
    );
}

#[test]
fn unsigned_meta_release_needs_an_explicit_flag() {
    let f = Fixture::new();
    let text = ru_publish::metarelease::render(&f.default_stanzas());
    std::fs::write(f.srv.join("meta-release"), text).unwrap();
    std::fs::remove_file(f.srv.join("meta-release.gpg")).unwrap();
    f.run(&["check"])
        .expect(3)
        .mentions(&["not signed", "--allow-unsigned-meta-release"]);
    f.run(&["--allow-unsigned-meta-release", "check"]).expect(0);
}

#[test]
fn detached_meta_release_signature_is_checked() {
    let f = Fixture::new();
    // A plain meta-release with a detached .gpg over it.
    let text = ru_publish::metarelease::render(&f.default_stanzas());
    std::fs::write(f.srv.join("meta-release"), &text).unwrap();
    std::fs::write(
        f.srv.join("meta-release.gpg"),
        f.key.detached_signature(text.as_bytes()).unwrap(),
    )
    .unwrap();
    f.run(&["check"]).expect(0);
    std::fs::write(
        f.srv.join("meta-release.gpg"),
        other_key().detached_signature(text.as_bytes()).unwrap(),
    )
    .unwrap();
    f.run(&["check"])
        .expect(3)
        .mentions(&["not in the trusted keyrings"]);
}

#[test]
fn wrong_codename_is_refused() {
    let f = Fixture::new();
    f.publish_pocket(|s| s.codename = "forky".into());
    f.run(&["check"])
        .expect(3)
        .mentions(&["\"forky\"", "expected \"trixie\""]);
}

#[test]
fn wrong_architecture_is_refused() {
    let f = Fixture::new();
    f.publish_pocket(|s| s.architectures = vec!["arm64".into()]);
    f.run(&["check"])
        .expect(3)
        .mentions(&["arm64", "not amd64"]);
}

#[test]
fn expired_valid_until_is_refused() {
    let f = Fixture::new();
    f.publish_pocket(|s| {
        s.date -= 10 * DAY;
        s.valid_until = Some(s.date + DAY);
    });
    f.run(&["check"]).expect(3).mentions(&["expired"]);
}

#[test]
fn missing_valid_until_is_refused_for_network_pockets() {
    let f = Fixture::new();
    f.publish_pocket(|s| s.valid_until = None);
    f.run(&["check"]).expect(3).mentions(&["Valid-Until"]);
}

#[test]
fn date_in_the_future_is_refused() {
    let f = Fixture::new();
    f.publish_pocket(|s| s.date += DAY);
    f.run(&["check"]).expect(3).mentions(&["in the future"]);
}

#[test]
fn older_date_than_seen_before_is_a_rollback() {
    let f = Fixture::new();
    f.run(&["check"]).expect(0);
    assert!(
        f.root
            .join("var/lib/release-upgrader/release-dates.json")
            .exists()
    );
    // Same Date again is fine; an older, validly signed copy is not.
    f.run(&["check"]).expect(0);
    f.publish_pocket(|s| s.date -= DAY);
    f.run(&["check"])
        .expect(3)
        .mentions(&["rollback", "older than"]);
    // A newer one moves the floor forward.
    f.publish_pocket(|s| s.date += 60);
    f.run(&["check"]).expect(0);
}

#[test]
fn oversize_body_is_refused() {
    let f = Fixture::new();
    f.fault("Packages.xz", Fault::Oversize(4096), usize::MAX);
    f.run(&["check"])
        .expect(3)
        .mentions(&["Packages.xz", "more than"]);
    f.clear_faults();
    f.fault(
        "Packages.xz",
        Fault::OversizeWithoutLength(4096),
        usize::MAX,
    );
    f.run(&["check"])
        .expect(3)
        .mentions(&["Packages.xz", "more than"]);
    f.clear_faults();
    // Metadata without a promised size hits the fixed cap.
    f.fault(
        "InRelease",
        Fault::OversizeWithoutLength(17 * 1024 * 1024),
        usize::MAX,
    );
    f.run(&["check"])
        .expect(3)
        .mentions(&["InRelease", "more than"]);
}

#[test]
fn wrong_bytes_are_refused() {
    let f = Fixture::new();
    f.fault("Packages.xz", Fault::Corrupt, usize::MAX);
    f.run(&["check"]).expect(3).mentions(&["SHA256 mismatch"]);
}

#[test]
fn untrusted_key_is_refused() {
    let f = Fixture::new();
    f.publish_pocket_with(|_| {}, &f.packages, other_key());
    f.run(&["check"]).expect(3).mentions(&[
        &other_key().cert().keyid().to_hex(),
        "not in the trusted keyrings",
    ]);
}

#[test]
fn sha1_only_signature_is_refused() {
    let f = Fixture::new();
    let release = std::fs::read(f.pocket_dir().join("Release")).unwrap();
    let signed = crate::openpgp::clearsign_with(
        &f.key,
        &release,
        sequoia_openpgp::types::HashAlgorithm::SHA1,
    );
    std::fs::write(f.pocket_dir().join("InRelease"), signed).unwrap();
    f.run(&["check"]).expect(3).mentions(&["SHA1"]);
}

#[test]
fn dependency_outside_the_helpers_is_refused_by_name() {
    let mut f = Fixture::new();
    f.packages[0].2 = "release-upgrader-runtime (= 2.41-12), libc6 (>= 2.36)".into();
    f.publish_pocket(|_| {});
    f.run(&["check"]).expect(3).mentions(&[
        "libc6",
        "release-upgrader-apt",
        "not a release-upgrader-* helper",
    ]);
}

#[test]
fn missing_dependency_is_refused_by_name() {
    let mut f = Fixture::new();
    f.packages.pop(); // no release-upgrader-runtime
    f.publish_pocket(|_| {});
    f.run(&["bootstrap", "--dry-run"])
        .expect(3)
        .mentions(&["release-upgrader-runtime", "not in the helper pocket"]);
}

#[test]
fn upgrade_tool_packages_come_from_the_meta_release() {
    let mut f = Fixture::new();
    f.packages.push((
        "release-upgrader-core".into(),
        "0.2.0".into(),
        String::new(),
    ));
    f.publish_pocket(|_| {});
    let mut stanzas = f.default_stanzas();
    stanzas[1] = stanzas[1]
        .clone()
        .field("UpgradeToolPackages", "release-upgrader-core");
    f.publish_meta_release(&stanzas);
    let run = f.run(&["bootstrap", "--dry-run"]);
    run.expect(0);
    assert!(run.stdout().contains("release-upgrader-core"));
    assert!(
        !run.stdout().contains("release-upgrader-apt"),
        "{}",
        run.stdout()
    );
}

// --- network behaviour through the binary ---

#[test]
fn server_errors_are_retried_then_succeed() {
    let f = Fixture::new();
    f.fault("InRelease", Fault::Status(503), 2);
    f.run(&["check"]).expect(0);
    let hits = f
        .server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("InRelease"))
        .count();
    assert_eq!(hits, 3);
}

#[test]
fn persistent_server_errors_exit_4_after_bounded_retries() {
    let f = Fixture::new();
    f.fault("InRelease", Fault::Status(500), usize::MAX);
    f.run(&["--retries", "2", "check"])
        .expect(4)
        .mentions(&["InRelease", "500"]);
    let hits = f
        .server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("InRelease"))
        .count();
    assert_eq!(hits, 3);
}

#[test]
fn unreachable_server_exits_4_naming_the_uri() {
    let f = Fixture::new();
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let uri = format!("http://127.0.0.1:{port}/meta-release");
    let run = f.run(&["--retries", "1", "--meta-release-uri", &uri, "check"]);
    run.expect(4).mentions(&[&uri, "cannot connect"]);
}

#[test]
fn missing_meta_release_exits_4_with_not_found() {
    let f = Fixture::new();
    let uri = format!("{}nothing-here", f.server.url());
    f.run(&["--meta-release-uri", &uri, "check"])
        .expect(4)
        .mentions(&["nothing-here", "not found"]);
}

#[test]
fn meta_release_is_revalidated_with_if_modified_since() {
    let f = Fixture::new();
    f.run(&["check"]).expect(0);
    f.run(&["check"]).expect(0);
    let meta: Vec<_> = f
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path == "meta-release")
        .collect();
    assert_eq!(meta.len(), 2);
    assert!(meta[0].header("If-Modified-Since").is_none());
    assert!(
        meta[1].header("If-Modified-Since").is_some(),
        "second fetch was unconditional"
    );
    // A tampered cache is never trusted: it is verified again on use.
    let cache = f.root.join("var/lib/release-upgrader/cache");
    let body = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "body"))
        .unwrap();
    let text = std::fs::read_to_string(&body).unwrap();
    std::fs::write(&body, text.replace("Version: 13", "Version: 31")).unwrap();
    f.run(&["check"]).expect(3).mentions(&["meta-release"]);
}

#[test]
fn proxy_variables_are_honoured() {
    let f = Fixture::new();
    // The fixture server answers absolute-form requests, so it can play the proxy for a
    // host that does not exist.
    let uri = "http://meta.release-upgrader.invalid/meta-release";
    let proxy = f.server.url();
    let run = f.run_with(
        &["--retries", "0", "--meta-release-uri", uri, "check"],
        &[("http_proxy", &proxy)],
    );
    run.expect(0);
    assert!(f.server.requests().iter().any(|r| r.path == "meta-release"));
    // no_proxy sends it direct, where the host cannot be resolved.
    let run = f.run_with(
        &["--retries", "0", "--meta-release-uri", uri, "check"],
        &[
            ("http_proxy", &proxy),
            ("no_proxy", "release-upgrader.invalid"),
        ],
    );
    run.expect(4);
}

#[test]
fn file_uris_and_paths_work_like_http() {
    let f = Fixture::new();
    // Point the meta-release at the pocket on disk.
    let mut stanzas = f.default_stanzas();
    stanzas[1] = Stanza::default()
        .field("Dist", "trixie")
        .field("Version", "13")
        .field("Date", "Sat, 09 Aug 2025 07:00:00 UTC")
        .field("Supported", "1")
        .field(
            "UpgradeToolBaseURI",
            format!("file://{}/dists/trixie/main", f.srv.display()),
        );
    f.publish_meta_release(&stanzas);
    let path = f.srv.join("meta-release");
    f.run(&[
        "--meta-release-uri",
        path.to_str().unwrap(),
        "bootstrap",
        "--dry-run",
    ])
    .expect(0);
    let uri = format!("file://{}", path.display());
    f.run(&["--meta-release-uri", &uri, "check"]).expect(0);
    assert!(
        f.server.requests().is_empty(),
        "nothing should go over HTTP"
    );
}

// --- verify ---

#[test]
fn verify_prints_the_signer_and_refuses_tampering() {
    let f = Fixture::new();
    let inrelease = f.pocket_dir().join("InRelease");
    let run = f.run(&["verify", inrelease.to_str().unwrap()]);
    run.expect(0);
    assert!(
        run.stdout().contains(&f.key.fingerprint()),
        "{}",
        run.stdout()
    );
    let release = f.pocket_dir().join("Release");
    let sig = f.pocket_dir().join("Release.gpg");
    f.run(&["verify", release.to_str().unwrap(), sig.to_str().unwrap()])
        .expect(0);
    let run = f.run(&[
        "--json",
        "verify",
        release.to_str().unwrap(),
        sig.to_str().unwrap(),
    ]);
    assert_eq!(
        run.json_lines()[0]["signers"][0]["fingerprint"],
        f.key.fingerprint()
    );
    f.tamper(&release, None);
    f.run(&["verify", release.to_str().unwrap(), sig.to_str().unwrap()])
        .expect(3);
    f.tamper(&inrelease, Some(60));
    f.run(&["verify", inrelease.to_str().unwrap()]).expect(3);
    // Not signed at all.
    let plain = f.dir.path().join("plain");
    std::fs::write(&plain, "hello\n").unwrap();
    f.run(&["verify", plain.to_str().unwrap()])
        .expect(3)
        .mentions(&["plain"]);
}

#[test]
fn verify_reports_unreadable_keyrings_by_name() {
    let f = Fixture::new();
    let garbage = f.dir.path().join("garbage.gpg");
    std::fs::write(&garbage, "this is not a keyring").unwrap();
    let inrelease = f.pocket_dir().join("InRelease");
    let run = std::process::Command::new(crate::support::BIN)
        .args([
            "--keyring",
            garbage.to_str().unwrap(),
            "verify",
            inrelease.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("garbage.gpg"));
    let missing = f.dir.path().join("missing.gpg");
    let run = std::process::Command::new(crate::support::BIN)
        .args([
            "--keyring",
            missing.to_str().unwrap(),
            "verify",
            inrelease.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("missing.gpg"));
}

#[test]
fn json_errors_carry_the_exit_code_and_hint() {
    let f = Fixture::new();
    f.tamper(&f.pocket_dir().join("Packages.xz"), None);
    let run = f.run(&["--json", "check"]);
    run.expect(3);
    let error = run
        .json_lines()
        .into_iter()
        .find(|l| l["event"] == "error")
        .unwrap();
    assert_eq!(error["exit_code"], 3);
    assert!(error["hint"].as_str().unwrap().contains("mirror"));
}

#[test]
fn a_system_without_ca_certificates_still_fetches_over_http_and_explains_https() {
    let f = Fixture::new();
    let empty = f.dir.path().join("no-certs");
    std::fs::create_dir_all(&empty).unwrap();
    let no_certs = [
        ("SSL_CERT_FILE", empty.join("none.pem")),
        ("SSL_CERT_DIR", empty.clone()),
    ];
    let env: Vec<(&str, &str)> = no_certs
        .iter()
        .map(|(k, v)| (*k, v.to_str().unwrap()))
        .collect();
    f.run_with(&["check"], &env)
        .expect(0)
        .mentions(&["New release '13' (trixie) available."]);
    let https = f.meta_release_uri().replacen("http://", "https://", 1);
    f.run_with(&["--meta-release-uri", &https, "check"], &env)
        .expect(4)
        .mentions(&["no CA certificates", "ca-certificates"]);
}
