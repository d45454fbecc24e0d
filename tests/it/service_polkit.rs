//! The service's authorization with polkit (issue 16), on `service`'s private bus: a real
//! polkitd that reads only the shipped policy file and the test's rules, and a hostile
//! stand-in for polkit (`tests/fixtures/dbus/fake_polkit.py`).
//!
//! polkitd runs in a mount namespace of its own (`unshare --mount --propagation
//! private`) where a temporary directory holding the policy is bound over
//! /usr/share/polkit-1/actions and one holding the rules over /etc/polkit-1/rules.d: the
//! host's polkit files are neither read nor written, and the binds die with polkitd.
//! Callers other than root run as nobody, outside any login session: to polkit's defaults
//! not active, so refused unless a rule says otherwise.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use ru_client::service::authority::{Action, POLKIT_NAME};
use ru_testing::dbus::PrivateBus;
use serde_json::{Value, json};

use crate::debian_root::{can_mount, mount_points};
use crate::image_client::DeltaKind;
use crate::service::{Device, PYTHON, error, reply, signal, signals};

const POLKITD: &str = "/usr/lib/polkit-1/polkitd";
const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dist/polkit-1/actions/org.releaseupgrader.policy"
);
const FAKE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dbus/fake_polkit.py"
);
const ACTIONS_DIR: &str = "/usr/share/polkit-1/actions";
const RULES_DIR: &str = "/etc/polkit-1/rules.d";
const NOBODY: u32 = 65534;

/// Binds the policy and rules directories over polkit's, then becomes polkitd; run by
/// `sh -eu` in a mount namespace of its own, so a failed bind ends it before polkitd.
const BIND_THEN_POLKITD: &str = r#"
mount --bind "$1" /usr/share/polkit-1/actions
mount --bind "$2" /etc/polkit-1/rules.d
exec "$3" --no-debug
"#;

/// A polkitd on a private bus, in a mount namespace of its own; killed (its process
/// group) by [`Polkitd::stop`], or on drop.
struct Polkitd {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Polkitd {
    /// Starts polkitd on `bus` with the shipped policy and `rules` (a JavaScript rules
    /// file, none when empty), once it owns its name; `None` (said on stderr) where
    /// polkitd or mounts are not to be had.
    fn start(bus: &PrivateBus, rules: &str) -> Option<Polkitd> {
        if !Path::new(POLKITD).exists()
            || !Path::new(ACTIONS_DIR).is_dir()
            || !Path::new(RULES_DIR).is_dir()
        {
            eprintln!("skipped: no polkitd (scripts/setup installs it)");
            return None;
        }
        if !can_mount() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // polkitd reads them as its own user, polkitd.
        let readable = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        readable(dir.path(), 0o755);
        let actions = dir.path().join("actions");
        let rules_dir = dir.path().join("rules");
        for d in [&actions, &rules_dir] {
            std::fs::create_dir(d).unwrap();
            readable(d, 0o755);
        }
        let policy = actions.join("org.releaseupgrader.policy");
        std::fs::copy(POLICY, &policy).unwrap();
        readable(&policy, 0o644);
        if !rules.is_empty() {
            let file = rules_dir.join("10-test.rules");
            std::fs::write(&file, rules).unwrap();
            readable(&file, 0o644);
        }
        let log = File::create(dir.path().join("polkitd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-euc"])
            .arg(BIND_THEN_POLKITD)
            .arg("sh")
            .arg(&actions)
            .arg(&rules_dir)
            .arg(POLKITD)
            .envs(bus.env())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("unshare (util-linux)");
        let mut polkitd = Polkitd {
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !has_owner(bus, POLKIT_NAME) {
            let exited = polkitd.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "polkitd did not take its name ({exited:?}):\n{}",
                polkitd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The binds are polkitd's alone.
        polkitd.assert_nothing_mounted_here();
        Some(polkitd)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("polkitd.log")).unwrap_or_default()
    }

    /// Neither polkit's directories nor the test's carry a mount in this namespace.
    fn assert_nothing_mounted_here(&self) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.dir.path().canonicalize().unwrap();
        let leaked: Vec<PathBuf> = mount_points(&mountinfo)
            .into_iter()
            .filter(|p| {
                p.starts_with(&dir) || p == Path::new(ACTIONS_DIR) || p == Path::new(RULES_DIR)
            })
            .collect();
        assert!(leaked.is_empty(), "mounted outside polkitd: {leaked:?}");
    }

    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = killpg(group, Signal::SIGKILL);
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills polkitd and checks nothing it mounted is left.
    fn stop(mut self) {
        self.kill();
        self.assert_nothing_mounted_here();
    }
}

impl Drop for Polkitd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn has_owner(bus: &PrivateBus, name: &str) -> bool {
    let connection = zbus::blocking::connection::Builder::address(bus.address())
        .unwrap()
        .build()
        .unwrap();
    zbus::blocking::fdo::DBusProxy::new(&connection)
        .unwrap()
        .name_has_owner(name.try_into().unwrap())
        .unwrap()
}

/// The hostile polkit on the bus, answering as `mode` says (see the script); the calls
/// it received.
struct FakePolkit(crate::notify::Fake);

impl FakePolkit {
    fn start(bus: &PrivateBus, mode: &str) -> FakePolkit {
        FakePolkit(crate::notify::Fake::start_with(FAKE, &[mode], bus.env()[0]))
    }

    fn calls(&self) -> Vec<Value> {
        self.0.all_calls()
    }

    /// Stops it, and waits until its name is gone from the bus.
    fn stop(mut self, bus: &PrivateBus) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while has_owner(bus, POLKIT_NAME) {
            assert!(Instant::now() < deadline, "the fake's name outlived it");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The AccessDenied message `method` got.
fn refusal(events: &[Value], method: &str) -> String {
    assert_eq!(
        error(events, method),
        "org.freedesktop.DBus.Error.AccessDenied",
        "{method}: {events:#?}"
    );
    events
        .iter()
        .find(|e| e["call"] == method)
        .and_then(|e| e["message"].as_str())
        .unwrap()
        .to_owned()
}

#[test]
fn polkit_refuses_a_caller_outside_an_active_session_naming_the_action() {
    let d = Device::new(DeltaKind::Delta, 30);
    let Some(polkitd) = Polkitd::start(&d.bus, "") else {
        return;
    };
    let events = d.client_as(
        Some(NOBODY),
        &[
            "call:GetSetting:auto_download",
            "call:CheckForUpdate",
            "call:SetSetting:auto_download:0",
            "call:ApplyUpdate",
            "call:FactoryReset",
        ],
    );
    assert_eq!(reply(&events, "GetSetting"), "1");
    for (method, id) in [
        ("CheckForUpdate", "org.releaseupgrader.check"),
        ("SetSetting", "org.releaseupgrader.check"),
        ("ApplyUpdate", "org.releaseupgrader.apply"),
        ("FactoryReset", "org.releaseupgrader.reset"),
    ] {
        let m = refusal(&events, method);
        assert!(m.contains(&format!("polkit refuses {id}")), "{method}: {m}");
        assert!(m.contains("uid 65534"), "{method}: {m}");
    }
    assert!(signals(&events).is_empty(), "{events:#?}");
    assert!(!d.f.root.join("cache/recovery/ubuntu_command").exists());
    assert!(d.logind_calls().is_empty());
    polkitd.stop();
}

/// polkit is really asked: a rule of its gives nobody the check, and only the check.
#[test]
fn a_polkit_rule_lets_nobody_check_for_updates_but_not_apply_them() {
    let d = Device::new(DeltaKind::Delta, 30);
    let rule = r#"polkit.addRule(function(action, subject) {
    if (action.id == "org.releaseupgrader.check" && subject.user == "nobody")
        return polkit.Result.YES;
});
"#;
    let Some(polkitd) = Polkitd::start(&d.bus, rule) else {
        return;
    };
    let events = d.client_as(
        Some(NOBODY),
        &[
            "call:SetSetting:auto_download:0",
            "call:CheckForUpdate",
            "wait:UpdateAvailableStatus",
            "call:ApplyUpdate",
            "call:FactoryReset",
        ],
    );
    reply(&events, "SetSetting");
    reply(&events, "CheckForUpdate");
    let status = signal(&events, "UpdateAvailableStatus");
    assert_eq!((&status[0], &status[2]), (&json!(true), &json!("3")));
    let m = refusal(&events, "ApplyUpdate");
    assert!(
        m.contains("polkit refuses org.releaseupgrader.apply"),
        "{m}"
    );
    let m = refusal(&events, "FactoryReset");
    assert!(
        m.contains("polkit refuses org.releaseupgrader.reset"),
        "{m}"
    );
    assert!(d.logind_calls().is_empty());
    polkitd.stop();
}

#[test]
fn root_is_let_through_without_polkit_even_where_a_rule_refuses_everything() {
    let d = Device::new(DeltaKind::Delta, 30);
    let rule = "polkit.addRule(function(action, subject) { return polkit.Result.NO; });\n";
    let Some(polkitd) = Polkitd::start(&d.bus, rule) else {
        return;
    };
    let events = d.client(&[
        "call:SetSetting:auto_download:0",
        "call:CheckForUpdate",
        "wait:UpdateAvailableStatus",
        "call:FactoryReset",
        "wait:Rebooting",
    ]);
    reply(&events, "SetSetting");
    assert_eq!(signal(&events, "UpdateAvailableStatus")[0], true);
    assert_eq!(signal(&events, "Rebooting"), json!([true]));
    assert_eq!(
        d.logind_calls(),
        ["SetRebootParameter(recovery)", "Reboot(false)"]
    );
    polkitd.stop();
}

/// The policy polkitd reads is the shipped file, and holds exactly the code's actions
/// with the defaults docs/protocol.md gives.
#[test]
fn polkitd_registers_exactly_the_actions_of_the_code_from_the_shipped_policy() {
    let d = Device::new(DeltaKind::Delta, 30);
    let Some(polkitd) = Polkitd::start(&d.bus, "") else {
        return;
    };
    let pkaction = |args: &[&str]| {
        let out = Command::new("pkaction")
            .args(args)
            .envs(d.bus.env())
            .output()
            .expect("pkaction (polkitd)");
        assert!(out.status.success(), "pkaction {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let mut registered: Vec<String> = pkaction(&[]).lines().map(str::to_owned).collect();
    registered.sort();
    let mut ours: Vec<String> = Action::ALL
        .iter()
        .map(|a| a.polkit_id().to_owned())
        .collect();
    ours.sort();
    assert_eq!(registered, ours);
    for action in Action::ALL {
        let text = pkaction(&["--verbose", "--action-id", action.polkit_id()]);
        let active = match action {
            Action::Check => "yes",
            _ => "auth_admin_keep",
        };
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        for line in [
            "vendor: release-upgrader".to_owned(),
            "implicit any: no".to_owned(),
            "implicit inactive: no".to_owned(),
            format!("implicit active: {active}"),
        ] {
            assert!(text.lines().any(|l| words(l) == line), "{line} in\n{text}");
        }
        let described = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("description:"))
            .unwrap_or_default();
        assert!(!described.trim().is_empty(), "{text}");
    }
    polkitd.stop();
}

/// The same without polkitd: the shipped file parses as XML (Python's parser) and names
/// exactly the code's actions, and the package installs it.
#[test]
fn the_shipped_policy_parses_and_names_exactly_the_actions_of_the_code() {
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import json, sys, xml.etree.ElementTree as ET\n\
             root = ET.parse(sys.argv[1]).getroot()\n\
             assert root.tag == 'policyconfig', root.tag\n\
             print(json.dumps({a.get('id'): [a.findtext('defaults/' + k) for k in \
             ('allow_any', 'allow_inactive', 'allow_active')] + \
             [bool(a.findtext('description')), bool(a.findtext('message'))] \
             for a in root.iter('action')}))",
            POLICY,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected: serde_json::Map<String, Value> = Action::ALL
        .iter()
        .map(|a| {
            let active = if *a == Action::Check {
                "yes"
            } else {
                "auth_admin_keep"
            };
            (
                a.polkit_id().to_owned(),
                json!(["no", "no", active, true, true]),
            )
        })
        .collect();
    assert_eq!(parsed, Value::Object(expected));
    let install = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/release-upgrader.install"),
    )
    .unwrap();
    assert!(
        install
            .lines()
            .any(|l| l
                == "dist/polkit-1/actions/org.releaseupgrader.policy usr/share/polkit-1/actions"),
        "{install}"
    );
}

/// Whatever owns polkit's name is asked, and anything but polkit's yes in polkit's shape
/// refuses; root's calls never ask it.
#[test]
fn a_hostile_polkit_never_authorizes_and_root_never_asks_it() {
    let d = Device::new(DeltaKind::Delta, 30);
    // The control: the fake's yes is taken, so its other answers are read, not missed.
    let fake = FakePolkit::start(&d.bus, "yes");
    let events = d.client_as(Some(NOBODY), &["call:SetSetting:auto_download:0"]);
    reply(&events, "SetSetting");
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["action"], "org.releaseupgrader.check");
    assert_eq!(calls[0]["subject"][0], "system-bus-name");
    let name = calls[0]["subject"][1]["name"].as_str().unwrap();
    assert!(name.starts_with(":1."), "{name}");
    assert_eq!(calls[0]["flags"], 1, "AllowUserInteraction");
    assert_eq!(calls[0]["details"], json!({}));
    assert_eq!(calls[0]["cancellation_id"], "");
    fake.stop(&d.bus);

    // (zbus reads the body's signature as parsed, where three arguments `bba{ss}` are
    // one struct `(bba{ss})`: a yes sent as three arguments is a yes.)
    for mode in ["error", "extra", "lone", "string", "short", "empty"] {
        let fake = FakePolkit::start(&d.bus, mode);
        let events = d.client_as(
            Some(NOBODY),
            &["call:SetSetting:auto_download:2", "call:ApplyUpdate"],
        );
        for (method, id) in [
            ("SetSetting", "org.releaseupgrader.check"),
            ("ApplyUpdate", "org.releaseupgrader.apply"),
        ] {
            let m = refusal(&events, method);
            assert!(
                m.contains(&format!("polkit could not be asked about {id}")),
                "{mode} {method}: {m}"
            );
        }
        assert_eq!(fake.calls().len(), 2, "{mode}: {:#?}", fake.calls());
        assert!(signals(&events).is_empty(), "{mode}: {events:#?}");
        fake.stop(&d.bus);
    }
    let out = d.f.run(&["image", "settings", "get", "auto_download"]);
    out.expect(0);
    assert_eq!(out.stdout(), "0\n", "only the control's setting was stored");

    // Root: polkit (here the fake, which would refuse) is not asked.
    let fake = FakePolkit::start(&d.bus, "error");
    let events = d.client(&[
        "call:SetSetting:auto_download:1",
        "call:GetSetting:auto_download",
    ]);
    assert_eq!(reply(&events, "GetSetting"), "1");
    std::thread::sleep(Duration::from_millis(200));
    assert!(fake.calls().is_empty(), "{:#?}", fake.calls());
    assert!(d.logind_calls().is_empty());
}
