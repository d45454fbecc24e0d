//! `release-upgrader service system-image` on a private system bus: started by bus
//! activation from a generated `.service` file, driven by independent clients (python3-dbus
//! as the settings panel's generation of clients, busctl, gdbus) through system-image
//! 3.x's API against the signed image server of `image_client`, with a fake logind that
//! records the reboot.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ru_testing::dbus::PrivateBus;
use ru_testing::serve::Fault;
use serde_json::{Value, json};

use crate::image_client::{DeltaKind, ImageFixture, expect_tree};
use crate::reboot::{Calls, FakeLogind};
use crate::support::BIN;

const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dbus/system_image_client.py"
);
const SHIPPED_XML: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dist/dbus-1/interfaces/com.canonical.SystemImage.xml"
);
pub(crate) const PYTHON: &str = "/usr/bin/python3";

/// A private system bus that activates the service for the fixture's root, and a fake
/// logind on it.
pub(crate) struct Device {
    pub(crate) f: ImageFixture,
    s: Service,
}

impl Device {
    pub(crate) fn new(kind: DeltaKind, idle_timeout: u64) -> Self {
        let f = ImageFixture::new(kind);
        let s = Service::start(&f.root, idle_timeout);
        Device { f, s }
    }
}

impl std::ops::Deref for Device {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.s
    }
}

/// A private system bus that activates the service for the device root `root` (its
/// configuration names the server), and a fake logind on it.
pub(crate) struct Service {
    pub(crate) bus: PrivateBus,
    calls: Calls,
    _logind: zbus::blocking::Connection,
    _dir: tempfile::TempDir,
}

impl Service {
    pub(crate) fn start(root: &Path, idle_timeout: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Reachable by the unprivileged caller of the authorization test.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let services = dir.path().join("services");
        std::fs::create_dir_all(&services).unwrap();
        // As dist/dbus-1/system-services/com.canonical.SystemImage.service, with the
        // binary under test, the device's root and no proxy between it and the server.
        std::fs::write(
            services.join("com.canonical.SystemImage.service"),
            format!(
                "[D-BUS Service]\nName=com.canonical.SystemImage\n\
                 Exec=/usr/bin/env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY \
                 RELEASE_UPGRADER_RETRY_DELAY_MS=10 {BIN} --root {} service system-image \
                 --idle-timeout {idle_timeout}\n",
                root.display()
            ),
        )
        .unwrap();
        let bus = PrivateBus::start(dir.path(), &[&services]).expect("dbus-daemon (scripts/setup)");
        let calls = Calls::default();
        let logind = FakeLogind::serve(bus.address(), &calls, false);
        Service {
            bus,
            calls,
            _logind: logind,
            _dir: dir,
        }
    }

    /// Runs the python client with `steps`; its events.
    pub(crate) fn client(&self, steps: &[&str]) -> Vec<Value> {
        self.client_as(None, steps)
    }

    /// … as `uid` (through setpriv) when given.
    pub(crate) fn client_as(&self, uid: Option<u32>, steps: &[&str]) -> Vec<Value> {
        run_client(&self.bus, uid, &[], steps)
    }

    pub(crate) fn logind_calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

/// What the bus and the services it started said.
pub(crate) fn bus_log(bus: &PrivateBus) -> String {
    std::fs::read_to_string(bus.dir().join("bus.log")).unwrap_or_default()
}

/// Runs the python client on `bus` with `steps` (as `uid` through setpriv when given,
/// with `env` added); its events. A failing client fails the test, with the bus's log.
pub(crate) fn run_client(
    bus: &PrivateBus,
    uid: Option<u32>,
    env: &[(&str, &str)],
    steps: &[&str],
) -> Vec<Value> {
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                PYTHON,
            ]);
            c
        }
        None => Command::new(PYTHON),
    };
    let out = cmd
        .arg(CLIENT)
        .args(steps)
        .envs(bus.env())
        .envs(env.iter().copied())
        .current_dir("/")
        .output()
        .expect("python3 with python3-dbus and python3-gi (scripts/setup)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        out.status.success(),
        "client {steps:?} failed: {events:#?}\n{}\nservice:\n{}",
        String::from_utf8_lossy(&out.stderr),
        bus_log(bus)
    );
    events
}

/// The signals among `events`, as (name, args).
pub(crate) fn signals(events: &[Value]) -> Vec<(String, Value)> {
    events
        .iter()
        .filter_map(|e| Some((e["signal"].as_str()?.to_owned(), e["args"].clone())))
        .collect()
}

pub(crate) fn names(events: &[Value]) -> Vec<String> {
    signals(events).into_iter().map(|(n, _)| n).collect()
}

pub(crate) fn signal(events: &[Value], name: &str) -> Value {
    signals(events)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {events:#?}"))
        .1
}

pub(crate) fn reply(events: &[Value], method: &str) -> Value {
    let e = events
        .iter()
        .find(|e| e["call"] == method)
        .unwrap_or_else(|| panic!("no call {method} in {events:#?}"));
    assert!(e.get("error").is_none(), "{method}: {e}");
    e["reply"].clone()
}

pub(crate) fn error(events: &[Value], method: &str) -> String {
    events
        .iter()
        .find(|e| e["call"] == method)
        .and_then(|e| e["error"].as_str())
        .unwrap_or_else(|| panic!("no error from {method} in {events:#?}"))
        .to_owned()
}

#[test]
fn the_settings_panel_flow_checks_downloads_applies_and_reboots_into_build_3() {
    let d = Device::new(DeltaKind::Delta, 30);
    let events = d.client(&[
        "call:SetSetting:auto_download:0",
        "call:Information",
        "call:CheckForUpdate",
        "wait:UpdateAvailableStatus",
        "call:GetChannels",
        "call:DownloadUpdate",
        "wait:UpdateDownloaded|UpdateFailed",
        "call:Information",
        "call:ApplyUpdate",
        "wait:Rebooting",
    ]);
    let status = signal(&events, "UpdateAvailableStatus");
    assert_eq!(status[0], true, "{status}");
    assert_eq!(status[1], false, "auto_download 0: {status}");
    assert_eq!(status[2], "3", "{status}");
    assert!(status[3].as_i64().unwrap() > 0, "{status}");
    assert_eq!(status[5], "", "{status}");
    assert_eq!(reply(&events, "GetChannels"), json!(["stable"]));
    // The order of system-image's signals.
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
        ]
    );
    let progress: Vec<i64> = signals(&events)
        .into_iter()
        .filter(|(n, _)| n == "UpdateProgress")
        .map(|(_, a)| a[0].as_i64().unwrap())
        .collect();
    assert_eq!(progress.first(), Some(&0), "{progress:?}");
    assert_eq!(progress.last(), Some(&100), "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(signal(&events, "Applied"), json!([true]));
    assert_eq!(signal(&events, "Rebooting"), json!([true]));
    assert_eq!(d.logind_calls(), ["Reboot(false)"]);
    expect_tree(&d.f.root, 3, d.f.port);
    // Information before any check, and after one that found build 3.
    let infos: Vec<&Value> = events
        .iter()
        .filter(|e| e["call"] == "Information")
        .map(|e| &e["reply"])
        .collect();
    assert_eq!(infos[0]["current_build_number"], "1", "{}", infos[0]);
    assert_eq!(infos[0]["target_build_number"], "-1", "{}", infos[0]);
    assert_eq!(infos[0]["channel_name"], "stable", "{}", infos[0]);
    assert_eq!(infos[1]["target_build_number"], "3", "{}", infos[1]);
    assert_ne!(infos[1]["last_check_date"], "", "{}", infos[1]);
    // The same settings from the command line.
    let out =
        d.f.run(&["image", "settings", "get", "auto_download", "min_battery"]);
    out.expect(0);
    assert_eq!(out.stdout(), "0\n\n");
}

#[test]
fn auto_download_2_downloads_right_after_the_check() {
    let d = Device::new(DeltaKind::Delta, 30);
    d.f.run(&["image", "settings", "set", "auto_download=2"])
        .expect(0);
    let events = d.client(&[
        "call:CheckForUpdate",
        "wait:UpdateDownloaded|UpdateFailed",
        "call:ApplyUpdate",
        "wait:Applied",
    ]);
    let status = signal(&events, "UpdateAvailableStatus");
    assert_eq!((&status[0], &status[1]), (&json!(true), &json!(true)));
    assert!(names(&events).contains(&"UpdateDownloaded".to_owned()));
    assert_eq!(signal(&events, "Applied"), json!([true]));
}

#[test]
fn a_tampered_image_fails_the_download_and_the_failure_holds_until_the_next_check() {
    let d = Device::new(DeltaKind::Delta, 30);
    d.f.tamper("pool/delta-3.tar.xz");
    let events = d.client(&[
        "call:SetSetting:auto_download:0",
        "call:CheckForUpdate",
        "wait:UpdateAvailableStatus",
        "call:DownloadUpdate",
        "wait:UpdateFailed|UpdateDownloaded",
        "call:DownloadUpdate",
        "wait:UpdateFailed",
        "call:ApplyUpdate",
        "wait:Applied",
    ]);
    let failed: Vec<Value> = signals(&events)
        .into_iter()
        .filter(|(n, _)| n == "UpdateFailed")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(failed.len(), 2, "{events:#?}");
    assert_eq!(failed[0][0], 1);
    assert_eq!(failed[1][0], 2);
    let reason = failed[0][1].as_str().unwrap();
    assert!(reason.contains("delta-3.tar.xz"), "{reason}");
    assert_eq!(failed[1][1], failed[0][1]);
    assert_eq!(signal(&events, "Applied"), json!([false]));
    assert!(!names(&events).contains(&"Rebooting".to_owned()));
    assert!(d.logind_calls().is_empty());
    expect_tree(&d.f.root, 1, d.f.port);
}

#[test]
fn a_tampered_index_answers_the_check_with_its_reason_and_nothing_to_download() {
    let d = Device::new(DeltaKind::Delta, 30);
    d.f.tamper("stable/testdev/index.json");
    let events = d.client(&[
        "call:SetSetting:auto_download:2",
        "call:CheckForUpdate",
        "wait:UpdateAvailableStatus",
        "call:DownloadUpdate",
        "sleep:0.5",
        "call:Information",
    ]);
    let status = signal(&events, "UpdateAvailableStatus");
    assert_eq!((&status[0], &status[1]), (&json!(false), &json!(false)));
    let reason = status[5].as_str().unwrap();
    assert!(reason.contains("index.json"), "{reason}");
    assert_eq!(
        names(&events),
        ["SettingChanged", "UpdateAvailableStatus"],
        "nothing is downloaded"
    );
    assert_eq!(reply(&events, "Information")["target_build_number"], "1");
}

#[test]
fn cancel_and_pause_during_a_slow_download() {
    let d = Device::new(DeltaKind::Delta, 30);
    // The delta (some 20 kB) in about two seconds.
    let trickle = || Fault::Trickle {
        chunk: 256,
        delay: Duration::from_millis(20),
    };
    d.f.faults
        .lock()
        .unwrap()
        .push(("delta-3.tar.xz".into(), trickle()));
    let events = d.client(&[
        "call:SetSetting:auto_download:0",
        "call:PauseDownload",
        "call:CheckForUpdate",
        "wait:UpdateAvailableStatus",
        "call:DownloadUpdate",
        "wait:DownloadStarted",
        "call:CancelUpdate",
        "wait:UpdateFailed",
        "call:PauseDownload",
    ]);
    assert_eq!(events[1]["reply"], "not downloading", "{events:#?}");
    assert_eq!(reply(&events, "CancelUpdate"), "");
    assert_eq!(signal(&events, "UpdateFailed"), json!([1, "Canceled"]));
    assert!(!names(&events).contains(&"UpdateDownloaded".to_owned()));

    // Pause, stay paused, resume with DownloadUpdate; a new check clears the failure.
    d.f.faults
        .lock()
        .unwrap()
        .push(("delta-3.tar.xz".into(), trickle()));
    let events = d.client(&[
        "call:CheckForUpdate",
        "wait:UpdateAvailableStatus",
        "call:DownloadUpdate",
        "wait:DownloadStarted",
        "call:PauseDownload",
        "wait:UpdatePaused",
        "sleep:1",
        "call:DownloadUpdate",
        "wait:UpdateDownloaded|UpdateFailed",
    ]);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["call"] == "PauseDownload")
            .map(|e| e["reply"].clone())
            .collect::<Vec<_>>(),
        [json!("")]
    );
    let after_pause: Vec<String> = names(&events)
        .into_iter()
        .skip_while(|n| n != "UpdatePaused")
        .collect();
    assert_eq!(
        after_pause.last().unwrap(),
        "UpdateDownloaded",
        "{events:#?}"
    );
    assert!(!names(&events).contains(&"UpdateFailed".to_owned()));
}

#[test]
fn settings_are_validated_as_system_image_does_and_changes_are_signalled() {
    let d = Device::new(DeltaKind::Delta, 30);
    let events = d.client(&[
        "call:GetSetting:auto_download",
        "call:SetSetting:min_battery:200",
        "call:SetSetting:min_battery:half",
        "call:SetSetting:auto_download:3",
        "call:SetSetting:min_battery:40",
        "call:SetSetting:min_battery:40",
        "call:SetSetting:failures_before_warning:3",
        "call:GetSetting:min_battery",
        "call:GetSetting:auto_download",
        "call:GetSetting:no_such_key",
        "call:SupportsFirmwareUpdate",
        "call:CheckForFirmwareUpdate",
        "call:UpdateFirmware",
        "call:GetBuild",
        "call:GetChannel",
        "call:SetChannel:nope",
        "call:SetBuild:i:-5",
        "call:ApplyUpdate",
        "wait:Applied",
        "sleep:0.2",
    ]);
    let replies: Vec<Value> = events
        .iter()
        .filter(|e| e["call"] == "GetSetting")
        .map(|e| e["reply"].clone())
        .collect();
    assert_eq!(replies, [json!("1"), json!("40"), json!("1"), json!("")]);
    assert_eq!(
        signals(&events)
            .into_iter()
            .filter(|(n, _)| n == "SettingChanged")
            .map(|(_, a)| a)
            .collect::<Vec<_>>(),
        [
            json!(["min_battery", "40"]),
            json!(["failures_before_warning", "3"])
        ]
    );
    assert_eq!(reply(&events, "SupportsFirmwareUpdate"), false);
    assert_eq!(reply(&events, "CheckForFirmwareUpdate"), "ERR");
    assert_eq!(reply(&events, "UpdateFirmware"), "ERR");
    assert_eq!(reply(&events, "GetBuild"), 1);
    assert_eq!(reply(&events, "GetChannel"), "stable");
    assert_eq!(reply(&events, "SetChannel"), false);
    assert_eq!(
        error(&events, "SetBuild"),
        "org.freedesktop.DBus.Error.InvalidArgs"
    );
    // Nothing downloaded: Applied(false), no reboot.
    assert_eq!(signal(&events, "Applied"), json!([false]));
    assert!(d.logind_calls().is_empty());

    // The command line sees the same values and refuses what the service ignores.
    let out = d.f.run(&["image", "settings", "show"]);
    out.expect(0);
    assert!(
        out.stdout().contains("min_battery=40\n"),
        "{}",
        out.stdout()
    );
    let run =
        d.f.run(&["--json", "image", "settings", "get", "min_battery"]);
    let events = crate::events::assert_events(&run);
    assert_eq!(
        events[0],
        json!({"event": "setting", "key": "min_battery", "value": "40"})
    );
    d.f.run(&["image", "settings", "set", "min_battery=101"])
        .expect(2)
        .mentions(&["min_battery"]);
    d.f.run(&["image", "settings", "set", "auto_download"])
        .expect(2)
        .mentions(&["KEY=VALUE"]);
    d.f.run(&["image", "settings", "del", "min_battery"])
        .expect(0);
    // A settings file that does not parse is a named error, and the service goes on.
    let file =
        d.f.root
            .join("var/lib/release-upgrader/image/settings.json");
    let kept = std::fs::read(&file).unwrap();
    std::fs::write(&file, "{\"min_battery\": [").unwrap();
    let events = d.client(&["call:GetSetting:min_battery", "call:GetBuild"]);
    assert_eq!(
        error(&events, "GetSetting"),
        "org.freedesktop.DBus.Error.Failed"
    );
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .contains("settings.json"),
        "{events:?}"
    );
    assert_eq!(reply(&events, "GetBuild"), 1);
    std::fs::write(&file, kept).unwrap();
    // busctl, another independent client, reads it back.
    let out = Command::new("busctl")
        .args([
            "call",
            "com.canonical.SystemImage",
            "/Service",
            "com.canonical.SystemImage",
            "GetSetting",
            "s",
            "min_battery",
        ])
        .envs(d.bus.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s \"\"\n");
}

#[test]
fn callers_other_than_root_read_but_may_not_change_state() {
    let d = Device::new(DeltaKind::Delta, 30);
    let events = d.client_as(
        Some(65534),
        &[
            "call:GetSetting:auto_download",
            "call:Information",
            "call:CheckForUpdate",
            "call:SetSetting:auto_download:0",
            "call:ApplyUpdate",
            "call:FactoryReset",
            "call:Exit",
            "sleep:0.3",
        ],
    );
    assert_eq!(reply(&events, "GetSetting"), "1");
    assert_eq!(reply(&events, "Information")["current_build_number"], "1");
    for (method, id) in [
        ("CheckForUpdate", "org.releaseupgrader.check"),
        ("SetSetting", "org.releaseupgrader.check"),
        ("ApplyUpdate", "org.releaseupgrader.apply"),
        ("FactoryReset", "org.releaseupgrader.reset"),
        ("Exit", "org.releaseupgrader.check"),
    ] {
        assert_eq!(
            error(&events, method),
            "org.freedesktop.DBus.Error.AccessDenied",
            "{method}"
        );
        // No polkit on this bus: the uid-0 rule, said so.
        let message = events
            .iter()
            .find(|e| e["call"] == method)
            .and_then(|e| e["message"].as_str())
            .unwrap();
        assert!(
            message.contains(&format!("only root may ({id}): polkit is not on the bus")),
            "{method}: {message}"
        );
    }
    assert!(signals(&events).is_empty(), "{events:#?}");
    assert!(!d.f.root.join("cache/recovery/ubuntu_command").exists());
    assert!(d.logind_calls().is_empty());
}

#[test]
fn factory_and_production_reset_write_the_recovery_command_and_reboot_into_it() {
    let d = Device::new(DeltaKind::Delta, 30);
    let command = d.f.root.join("cache/recovery/ubuntu_command");
    let events = d.client(&["call:FactoryReset", "wait:Rebooting"]);
    assert_eq!(signal(&events, "Rebooting"), json!([true]));
    assert_eq!(std::fs::read_to_string(&command).unwrap(), "format data\n");
    let events = d.client(&["call:ProductionReset", "wait:Rebooting"]);
    assert_eq!(signal(&events, "Rebooting"), json!([true]));
    assert_eq!(
        std::fs::read_to_string(&command).unwrap(),
        "format data\nenable factory_wipe\n"
    );
    assert_eq!(
        d.logind_calls(),
        [
            "SetRebootParameter(recovery)",
            "Reboot(false)",
            "SetRebootParameter(recovery)",
            "Reboot(false)"
        ]
    );
}

/// Names `value` as the device's `[updater] cache_partition`, in a config.d file of its
/// own (as a device's image carries it).
fn configure_cache_partition(root: &Path, value: &str) {
    std::fs::write(
        root.join("etc/system-image/config.d/50_updater.ini"),
        format!("[updater]\ncache_partition: {value}\n"),
    )
    .unwrap();
}

#[test]
fn a_configured_cache_partition_gets_the_recovery_files_and_command() {
    let d = Device::new(DeltaKind::Delta, 30);
    configure_cache_partition(&d.f.root, "/android/cache/recovery");
    let cache = d.f.root.join("android/cache/recovery");
    d.f.run(&["image", "apply", "--recovery"]).expect(0);
    let command = std::fs::read_to_string(cache.join("ubuntu_command")).unwrap();
    let named: Vec<&str> = command
        .lines()
        .filter_map(|l| {
            l.strip_prefix("update ")
                .or_else(|| l.strip_prefix("load_keyring "))
        })
        .flat_map(|l| l.split(' '))
        .collect();
    assert_eq!(named.len(), 12, "{command}");
    for name in named {
        assert!(
            cache.join(name).is_file(),
            "{name} not in {}",
            cache.display()
        );
    }
    assert!(
        !d.f.root.join("cache").exists(),
        "the default was written to"
    );
    // The service finds the command waiting there and reboots into the recovery.
    let events = d.client(&["call:ApplyUpdate", "wait:Rebooting"]);
    assert_eq!(signal(&events, "Applied"), json!([true]));
    assert_eq!(signal(&events, "Rebooting"), json!([true]));
    // Its resets write there too.
    let events = d.client(&["call:FactoryReset", "wait:Rebooting"]);
    assert_eq!(signal(&events, "Rebooting"), json!([true]));
    assert_eq!(
        std::fs::read_to_string(cache.join("ubuntu_command")).unwrap(),
        "format data\n"
    );
    assert!(
        !d.f.root.join("cache").exists(),
        "the default was written to"
    );
    assert_eq!(
        d.logind_calls(),
        [
            "SetRebootParameter(recovery)",
            "Reboot(false)",
            "SetRebootParameter(recovery)",
            "Reboot(false)"
        ]
    );
}

#[test]
fn a_cache_partition_leaving_the_root_is_refused_and_nothing_written_there() {
    let d = Device::new(DeltaKind::Delta, 30);
    let outside = d.f.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, d.f.root.join("evil")).unwrap();
    for value in ["/../outside", "/evil/recovery", "/evil", "relative/cache"] {
        configure_cache_partition(&d.f.root, value);
        let out = d.f.run(&["image", "apply", "--recovery"]);
        out.expect(2);
        assert!(
            out.stderr().contains("cache_partition") || out.stderr().contains("evil"),
            "{value}: {}",
            out.stderr()
        );
        let events = d.client(&["call:FactoryReset", "sleep:0.3"]);
        assert_eq!(
            error(&events, "FactoryReset"),
            "org.freedesktop.DBus.Error.Failed",
            "{value}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{value}");
        assert!(!d.f.root.join("cache").exists(), "{value}");
    }
    assert!(d.logind_calls().is_empty());
}

#[test]
fn one_instance_exits_when_idle_or_told_and_activation_starts_it_again() {
    let d = Device::new(DeltaKind::Delta, 2);
    let events = d.client(&["call:GetBuild", "owner"]);
    assert_eq!(events[1]["owner"], true);
    // A second instance on the same bus refuses to start.
    let out = Command::new(BIN)
        .arg("--root")
        .arg(&d.f.root)
        .args(["service", "system-image"])
        .envs(d.bus.env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another instance"),
        "{out:?}"
    );
    // Idle for longer than --idle-timeout: gone.
    let events = d.client(&["sleep:3", "owner"]);
    assert_eq!(events[0]["owner"], false, "{events:?}");
    // Activated again by a call, and Exit() ends it at once.
    let events = d.client(&["call:GetBuild", "call:Exit", "sleep:0.5", "owner"]);
    assert_eq!(reply(&events, "GetBuild"), 1);
    assert_eq!(events.last().unwrap()["owner"], false, "{events:?}");
}

#[test]
fn the_introspection_of_service_is_the_shipped_system_image_interface() {
    let d = Device::new(DeltaKind::Delta, 30);
    let events = d.client(&[&format!("introspect:{SHIPPED_XML}")]);
    let i = &events[0]["introspection"];
    assert_eq!(i["live"], i["shipped"]);
    assert_eq!(i["equal"], true);
    // gdbus, a third client, sees the same interface members.
    let out = Command::new("gdbus")
        .args([
            "introspect",
            "--system",
            "--dest",
            "com.canonical.SystemImage",
            "--object-path",
            "/Service",
        ])
        .envs(d.bus.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let shipped = std::fs::read_to_string(SHIPPED_XML).unwrap();
    for member in shipped
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<method name=\""))
        .chain(
            shipped
                .lines()
                .filter_map(|l| l.trim().strip_prefix("<signal name=\"")),
        )
    {
        let name = member.split('"').next().unwrap();
        assert!(text.contains(&format!(" {name}(")), "{name} in\n{text}");
    }
}

/// The generated activation file follows the shipped one: the same name and user.
#[test]
fn the_shipped_activation_file_and_bus_policy_name_the_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/dbus-1");
    let service =
        std::fs::read_to_string(root.join("system-services/com.canonical.SystemImage.service"))
            .unwrap();
    assert!(service.contains("Name=com.canonical.SystemImage\n"));
    assert!(service.contains("Exec=/usr/bin/release-upgrader service system-image\n"));
    assert!(service.contains("User=root\n"));
    let policy: PathBuf = root.join("system.d/com.canonical.SystemImage.conf");
    let policy = std::fs::read_to_string(policy).unwrap();
    assert!(policy.contains(r#"<allow own="com.canonical.SystemImage"/>"#));
    let install = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/release-upgrader.install"),
    )
    .unwrap();
    for file in [
        "dist/dbus-1/system.d/com.canonical.SystemImage.conf",
        "dist/dbus-1/system-services/com.canonical.SystemImage.service",
        "dist/dbus-1/interfaces/com.canonical.SystemImage.xml",
    ] {
        assert!(install.contains(file), "{file}");
    }
}

#[test]
fn concurrent_settings_changes_from_the_cli_and_the_service_lose_no_key() {
    let d = Device::new(DeltaKind::Delta, 30);
    // Started before the race (bus activation), so its calls overlap the CLI's.
    d.client(&["call:GetSetting:auto_download"]);
    let cli: Vec<std::process::Child> = (0..24)
        .map(|n| {
            Command::new(BIN)
                .arg("--root")
                .arg(&d.f.root)
                .args(["image", "settings", "set", &format!("cli{n}=v{n}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::scope(|scope| {
        for c in 0..4 {
            let d = &d;
            scope.spawn(move || {
                let steps: Vec<String> = (0..6)
                    .map(|n| format!("call:SetSetting:bus{c}_{n}:v{n}"))
                    .collect();
                let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
                let events = d.client(&steps);
                assert!(
                    events.iter().all(|e| e.get("error").is_none()),
                    "{events:#?}"
                );
            });
        }
    });
    for child in cli {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = d.f.run(&["image", "settings", "show"]);
    out.expect(0);
    let stdout = out.stdout();
    let shown: Vec<&str> = stdout.lines().collect();
    let mut want: Vec<String> = (0..24).map(|n| format!("cli{n}=v{n}")).collect();
    want.extend((0..4).flat_map(|c| (0..6).map(move |n| format!("bus{c}_{n}=v{n}"))));
    for line in &want {
        assert!(shown.contains(&line.as_str()), "{line} missing: {shown:?}");
    }
    assert_eq!(shown.len(), want.len(), "{shown:?}");
}

#[test]
fn a_settings_lock_file_that_is_a_symlink_or_a_directory_is_refused_and_nothing_written() {
    let d = Device::new(DeltaKind::Delta, 30);
    let state = d.f.root.join("var/lib/release-upgrader/image");
    let lock = state.join("settings.lock");
    let outside = d.f.dir.path().join("outside");
    for what in ["symlink", "directory"] {
        let _ = std::fs::remove_file(&lock);
        let _ = std::fs::remove_dir(&lock);
        std::fs::create_dir_all(&state).unwrap();
        match what {
            "symlink" => std::os::unix::fs::symlink(&outside, &lock).unwrap(),
            _ => std::fs::create_dir(&lock).unwrap(),
        }
        let out = d.f.run(&["image", "settings", "set", "min_battery=20"]);
        out.expect(2);
        assert!(
            out.stderr().contains("settings.lock"),
            "{what}: {}",
            out.stderr()
        );
        let events = d.client(&[
            "call:SetSetting:min_battery:30",
            "call:GetSetting:min_battery",
        ]);
        let refused = error(&events, "SetSetting");
        assert_eq!(refused, "org.freedesktop.DBus.Error.Failed", "{what}");
        let message = events
            .iter()
            .find(|e| e["call"] == "SetSetting")
            .and_then(|e| e["message"].as_str())
            .unwrap();
        assert!(message.contains("settings.lock"), "{what}: {message}");
        assert_eq!(reply(&events, "GetSetting"), "", "{what}");
        assert!(
            !names(&events).contains(&"SettingChanged".to_owned()),
            "{what}"
        );
        assert!(!state.join("settings.json").exists(), "{what}");
        assert!(!outside.exists(), "{what}");
    }
}

/// The fields of the `Package: name` paragraph of debian/control: continuation lines
/// joined, comment lines dropped.
fn control_fields(name: &str) -> std::collections::BTreeMap<String, String> {
    let control =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/control"))
            .unwrap();
    let paragraph = control
        .split("\n\n")
        .find(|p| p.lines().any(|l| l == format!("Package: {name}")))
        .unwrap_or_else(|| panic!("no package {name} in debian/control"));
    let mut fields = std::collections::BTreeMap::new();
    let mut last = String::new();
    for line in paragraph.lines().filter(|l| !l.starts_with('#')) {
        if let Some(more) = line.strip_prefix(' ') {
            let v: &mut String = fields.get_mut(&last).unwrap();
            v.push(' ');
            v.push_str(more.trim());
        } else if let Some((k, v)) = line.split_once(':') {
            last = k.to_owned();
            fields.insert(last.clone(), v.trim().to_owned());
        }
    }
    fields
}

#[test]
fn the_package_conflicts_with_and_replaces_system_image_dbus_whose_activation_file_it_ships() {
    let fields = control_fields("release-upgrader");
    let names = |field: &str| -> Vec<String> {
        fields
            .get(field)
            .map(|v| {
                v.split(',')
                    .map(|d| d.trim().to_owned())
                    .filter(|d| !d.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        names("Conflicts").contains(&"system-image-dbus".into()),
        "{fields:?}"
    );
    assert!(
        names("Replaces").contains(&"system-image-dbus".into()),
        "{fields:?}"
    );
    // Not a drop-in for its executable and Python modules.
    assert!(
        !names("Provides")
            .iter()
            .any(|p| p.starts_with("system-image")),
        "{fields:?}"
    );
    // The publisher ships no DBus files: it conflicts with nothing of system-image.
    let publish = control_fields("release-upgrader-publish");
    assert!(!publish.contains_key("Conflicts"), "{publish:?}");
}

#[test]
fn a_device_that_opted_out_to_apt_is_offered_no_image() {
    let d = Device::new(DeltaKind::Delta, 30);
    let state = d.f.root.join("var/lib/release-upgrader/image");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("opt-out.json"),
        json!({"build": 1, "channel": "stable", "device": "testdev",
               "writable_flag": "/userdata/.writable_image",
               "sources": "/etc/apt/sources.list.d/release-upgrader-image.list",
               "codename": "bookworm", "mirror": "http://192.0.2.1/debian"})
        .to_string(),
    )
    .unwrap();
    let events = d.client(&[
        "call:SetSetting:auto_download:2",
        "call:CheckForUpdate",
        "wait:UpdateAvailableStatus",
        "call:DownloadUpdate",
        "call:ApplyUpdate",
        "wait:Applied",
    ]);
    let status = signal(&events, "UpdateAvailableStatus");
    assert_eq!((&status[0], &status[1]), (&json!(false), &json!(false)));
    assert!(
        status[5]
            .as_str()
            .unwrap()
            .contains("opted out of image updates"),
        "{status}"
    );
    assert_eq!(signal(&events, "Applied"), json!([false]));
    assert!(d.logind_calls().is_empty());
    expect_tree(&d.f.root, 1, d.f.port);
}
