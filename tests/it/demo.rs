//! `release-upgrader demo`, the README's first command, run as a user runs it.

use std::process::Command;

use crate::support::{BIN, Run};

#[test]
fn demo_upgrades_a_throwaway_root_with_relocated_helpers_and_leaves_it_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let run = Run(Command::new(BIN)
        .args(["--json", "demo", "--dir"])
        .arg(&dir)
        .output()
        .unwrap());
    run.expect(0);
    let lines = run.json_lines();
    let steps = lines.iter().filter(|l| l["event"] == "step").count();
    assert_eq!(steps, 8, "every step is announced: {lines:?}");
    let done = lines
        .iter()
        .find(|l| l["event"] == "done")
        .expect("a done event");
    assert_eq!(done["before"], "Demo Linux 1 (alpha)");
    assert_eq!(done["after"], "Demo Linux 2 (beta)");
    assert_eq!(done["helpers_left"], false);

    let root = dir.join("root");
    let status = Command::new("dpkg-query")
        .arg(format!("--admindir={}/var/lib/dpkg", root.display()))
        .args(["-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("demo-hello 2.0-1 ii"), "{status}");
    assert!(status.contains("demo-newtool 1.0 ii"), "{status}");
    assert!(
        !status.contains("demo-legacy 1.0 ii"),
        "obsolete package purged: {status}"
    );
    let conf = std::fs::read_to_string(root.join("etc/demo.conf")).unwrap();
    assert!(
        conf.contains("the user's choice"),
        "the edit is kept: {conf}"
    );
    // Demo Linux 2's own upgrader (the client beside the demo, published as a newer
    // release-upgrader-core) took over from the running one.
    let core = ru_demo::run::core_version();
    assert!(
        run.stderr().contains(&format!(
            "Running release-upgrader {core} from the beta pocket"
        )),
        "no takeover: {}",
        run.stderr()
    );
    let main_log = std::fs::read_to_string(root.join("var/log/dist-upgrade/main.log")).unwrap();
    assert!(
        main_log.contains(&format!("release-upgrader-core {core} runs this upgrade")),
        "{main_log}"
    );
    for log in ["main.log", "apt.log", "apt-term.log"] {
        assert!(
            root.join("var/log/dist-upgrade").join(log).is_file(),
            "{log}"
        );
    }
    // The helpers were built by the publisher from this machine's own packages.
    let helpers: Vec<String> = std::fs::read_dir(dir.join("helpers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        helpers
            .iter()
            .any(|h| h.starts_with("release-upgrader-apt_")),
        "{helpers:?}"
    );
    // Nothing outside the directory: the throwaway root's prefix is gone and the host's
    // was never touched.
    assert!(!root.join("usr/lib/release-upgrader").exists());
}

#[test]
fn demo_refuses_a_directory_that_is_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("precious"), "keep me").unwrap();
    Run(Command::new(BIN)
        .args(["demo", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap())
    .expect(2)
    .mentions(&["must be empty"]);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("precious")).unwrap(),
        "keep me"
    );
}
