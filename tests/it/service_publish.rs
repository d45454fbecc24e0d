//! The settings panel's flow over `com.canonical.SystemImage` against a server tree made
//! only by the publisher's command line, as a distribution makes one: keys (`key
//! generate`), the keyring chain (`image keyring`), full images (`image build`) and
//! `image publish` with its `--keyrings` chain check and its deltas — the pairing of
//! what `image publish` writes with what the service reads, which `service.rs` (served
//! from a tree the tests sign themselves) does not cover.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ru_testing::serve::Server;
use serde_json::{Value, json};

use crate::image_client::{CHANNEL, DEVICE, Node, Rng, Tree, materialize, snapshot, tree};
use crate::service::{Service, names, signal, signals};
use crate::support::{PUBLISH_BIN, Run};

fn publish(args: &[&str]) -> Run {
    let run = Run(Command::new(PUBLISH_BIN).args(args).output().unwrap());
    run.expect(0);
    run
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// A server tree of builds 1, 2 and 3 published by the command line, served on
/// 127.0.0.1.
struct Published {
    dir: tempfile::TempDir,
    www: PathBuf,
    server: Server,
    archive_master: Vec<u8>,
    /// `image delta`'s own 2 → 3 delta, beside the server tree.
    delta_2_3: PathBuf,
}

impl Published {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let www = d.join("www");
        std::fs::create_dir_all(&www).unwrap();
        let server = Server::start(&www).unwrap();
        let port = server.addr().port();
        let (secret, gpg) = crate::image_client::cli_keyrings(&d);
        let archive_master = std::fs::read(gpg.join("archive-master.tar.xz")).unwrap();
        let mut published = Published {
            dir,
            www,
            server,
            archive_master,
            delta_2_3: PathBuf::new(),
        };
        let mut images = Vec::new();
        for build in 1..=3u64 {
            let root = d.join(format!("tree-{build}"));
            materialize(&published.tree(build), &root);
            // Same times in every build, so unchanged files stay out of the deltas.
            let status = Command::new("find")
                .arg(&root)
                .args(["-exec", "touch", "-h", "-d", "@1700000000", "{}", "+"])
                .status()
                .unwrap();
            assert!(status.success());
            let out = d.join(format!("build-{build}"));
            publish(&["image", "build", "--root", &p(&root), "--out", &p(&out)]);
            let image = out.join("rootfs.tar.xz");
            let (v, port_s) = (build.to_string(), port.to_string());
            publish(&[
                "image",
                "publish",
                &p(&image),
                "--out",
                &p(&published.www),
                "--key",
                &secret("image-signing"),
                "--channel",
                CHANNEL,
                "--device",
                DEVICE,
                "--version",
                &v,
                "--keyrings",
                &p(&gpg),
                "--server",
                "127.0.0.1",
                "--http-port",
                &port_s,
                "--https-port",
                "disabled",
            ]);
            images.push(image);
        }
        published.delta_2_3 = d.join("delta-2-3.tar.xz");
        publish(&[
            "image",
            "delta",
            &p(&images[1]),
            &p(&images[2]),
            "--out",
            &p(&published.delta_2_3),
        ]);
        published
    }

    /// The system tree of `build`, trusting the published archive master, with an
    /// incompressible file no build changes (so the deltas win over full images).
    fn tree(&self, build: u64) -> Tree {
        let mut t = tree(build, self.server.addr().port());
        let mut rng = Rng(0x5eed);
        let noise: Vec<u8> = (0..3 << 20).map(|_| rng.next() as u8).collect();
        t.insert("usr/share/noise".into(), Node::File(noise, 0o644));
        t.insert(
            "usr/share/system-image/archive-master.tar.xz".into(),
            Node::File(self.archive_master.clone(), 0o644),
        );
        t
    }

    /// A device root at `build`.
    fn device(&self, name: &str, build: u64) -> PathBuf {
        let root = self.dir.path().join(name);
        materialize(&self.tree(build), &root);
        root
    }

    fn index(&self) -> Value {
        let path = self.www.join(format!("{CHANNEL}/{DEVICE}/index.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The server path of the first file of the `kind` image of `base` → `version`.
    fn file_of(&self, kind: &str, base: Option<u64>, version: u64) -> String {
        let index = self.index();
        let image = index["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == kind && i["version"] == version && i["base"].as_u64() == base)
            .unwrap_or_else(|| panic!("no {kind} {base:?} -> {version} in {index:#}"));
        let file = image["files"]
            .as_array()
            .unwrap()
            .iter()
            .min_by_key(|f| f["order"].as_u64())
            .unwrap();
        file["path"].as_str().unwrap().to_owned()
    }
}

/// The members of a tar.xz, in order.
fn members(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tJf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A snapshot less the files each build's version tarball writes (they name the server
/// here, the build there).
fn comparable(mut s: BTreeMap<String, String>) -> BTreeMap<String, String> {
    s.remove("etc/system-image/channel.ini");
    s.remove("etc/ubuntu-build");
    s
}

#[test]
fn the_settings_panel_flow_applies_a_tree_published_by_the_command_line() {
    let server = Published::new();
    // The delta `image delta` writes is the one `image publish` put in the pool.
    let pooled = server.file_of("delta", Some(2), 3);
    assert_eq!(
        members(&server.www.join(pooled.trim_start_matches('/'))),
        members(&server.delta_2_3)
    );
    let root = server.device("device", 1);
    let s = Service::start(&root, 30);
    let events = s.client(&[
        "call:SetSetting:auto_download:0",
        "call:CheckForUpdate",
        "wait:UpdateAvailableStatus",
        "call:DownloadUpdate",
        "wait:UpdateDownloaded|UpdateFailed",
        "call:Information",
        "call:ApplyUpdate",
        "wait:Rebooting",
    ]);
    let status = signal(&events, "UpdateAvailableStatus");
    assert_eq!(status[0], true, "{status}");
    assert_eq!(status[2], "3", "{status}");
    assert_eq!(status[5], "", "{status}");
    // The delta chain 1 → 2 → 3, not a full image: the bytes of both deltas with their
    // version tarballs.
    let index = server.index();
    let size_of = |kind: &str, base: u64, version: u64| -> u64 {
        index["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == kind && i["version"] == version && i["base"] == base)
            .unwrap()["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["size"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        status[3].as_u64().unwrap(),
        size_of("delta", 1, 2) + size_of("delta", 2, 3),
        "{status}"
    );
    let order: Vec<String> = names(&events)
        .into_iter()
        .filter(|n| n != "UpdateProgress" && n != "SettingChanged")
        .collect();
    assert_eq!(
        order,
        [
            "UpdateAvailableStatus",
            "DownloadStarted",
            "UpdateDownloaded",
            "Applied",
            "Rebooting"
        ],
        "{events:#?}"
    );
    let progress: Vec<i64> = signals(&events)
        .into_iter()
        .filter(|(n, _)| n == "UpdateProgress")
        .map(|(_, a)| a[0].as_i64().unwrap())
        .collect();
    assert_eq!(progress.last(), Some(&100), "{progress:?}");
    assert_eq!(signal(&events, "Applied"), json!([true]));
    assert_eq!(s.logind_calls(), ["Reboot(false)"]);
    let info = events
        .iter()
        .find(|e| e["call"] == "Information")
        .map(|e| &e["reply"])
        .unwrap();
    assert_eq!(info["target_build_number"], "3", "{info}");
    let want = server.dir.path().join("want");
    materialize(&server.tree(3), &want);
    assert_eq!(comparable(snapshot(&root)), comparable(snapshot(&want)));
    let ini = std::fs::read_to_string(root.join("etc/system-image/channel.ini")).unwrap();
    assert!(ini.contains("build_number: 3"), "{ini}");
}

#[test]
fn a_tampered_file_of_a_tree_published_by_the_command_line_fails_the_download() {
    let server = Published::new();
    let delta = server.file_of("delta", Some(2), 3);
    let local = server.www.join(delta.trim_start_matches('/'));
    let mut bytes = std::fs::read(&local).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&local, bytes).unwrap();
    let root = server.device("device", 1);
    let before = snapshot(&root);
    let s = Service::start(&root, 30);
    let events = s.client(&[
        "call:SetSetting:auto_download:0",
        "call:CheckForUpdate",
        "wait:UpdateAvailableStatus",
        "call:DownloadUpdate",
        "wait:UpdateFailed|UpdateDownloaded",
        "call:ApplyUpdate",
        "wait:Applied",
    ]);
    assert_eq!(signal(&events, "UpdateAvailableStatus")[0], true);
    let failed = signal(&events, "UpdateFailed");
    assert_eq!(failed[0], 1, "{failed}");
    let name = Path::new(&delta).file_name().unwrap().to_str().unwrap();
    let reason = failed[1].as_str().unwrap();
    assert!(reason.contains(name), "{reason}");
    assert!(!names(&events).contains(&"UpdateDownloaded".to_owned()));
    assert_eq!(signal(&events, "Applied"), json!([false]));
    assert!(s.logind_calls().is_empty());
    assert_eq!(snapshot(&root), before);
}
