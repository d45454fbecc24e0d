//! After an apply the device reboots into the new build (or into the recovery that applies
//! it), through logind on the system bus — here a private `dbus-daemon` with a fake
//! logind that records the calls — or `systemctl reboot` where no logind answers (a fake
//! `systemctl` first in `PATH` records it). The fixture's root is never this machine, so
//! every run here passes `--reboot`; without it nothing may reboot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ru_testing::dbus::PrivateBus;

use crate::image_client::{DeltaKind, ImageFixture, expect_tree};

pub(crate) type Calls = Arc<Mutex<Vec<String>>>;

/// logind's Manager, as far as rebooting goes.
pub(crate) struct FakeLogind {
    pub(crate) calls: Calls,
    pub(crate) refuse: bool,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl FakeLogind {
    fn reboot(&self, interactive: bool) -> zbus::fdo::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("Reboot({interactive})"));
        if self.refuse {
            return Err(zbus::fdo::Error::AccessDenied(
                "Operation inhibited by \"test\"".into(),
            ));
        }
        Ok(())
    }

    fn set_reboot_parameter(&self, parameter: String) -> zbus::fdo::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("SetRebootParameter({parameter})"));
        Ok(())
    }
}

impl FakeLogind {
    /// Serves a fake logind (refusing reboots when `refuse`) on the bus at `address`,
    /// recording the calls in `calls`; it serves as long as the connection lives.
    pub(crate) fn serve(address: &str, calls: &Calls, refuse: bool) -> zbus::blocking::Connection {
        zbus::blocking::connection::Builder::address(address)
            .unwrap()
            .serve_at(
                "/org/freedesktop/login1",
                FakeLogind {
                    calls: calls.clone(),
                    refuse,
                },
            )
            .unwrap()
            .name("org.freedesktop.login1")
            .unwrap()
            .build()
            .unwrap()
    }
}

/// A private system bus, optionally with the fake logind on it, and a fake `systemctl`.
struct Machine {
    bus: PrivateBus,
    _logind: Option<zbus::blocking::Connection>,
    calls: Calls,
    bin: PathBuf,
    systemctl_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Machine {
    fn new(logind: Option<bool>, systemctl_exit: i32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bus = PrivateBus::start(dir.path(), &[]).expect("dbus-daemon (scripts/setup)");
        let calls = Calls::default();
        let logind = logind.map(|refuse| FakeLogind::serve(bus.address(), &calls, refuse));
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let systemctl_log = dir.path().join("systemctl.log");
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\necho 'systemctl: refused' >&2\nexit {systemctl_exit}\n",
            systemctl_log.display()
        );
        let systemctl = bin.join("systemctl");
        std::fs::write(&systemctl, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        Machine {
            bus,
            _logind: logind,
            calls,
            bin,
            systemctl_log,
            _dir: dir,
        }
    }

    fn apply(&self, f: &ImageFixture, args: &[&str]) -> crate::support::Run {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env: Vec<(&str, &str)> = self.bus.env().to_vec();
        env.push(("PATH", &path));
        let mut all = vec!["image", "apply"];
        all.extend_from_slice(args);
        f.run_env(&all, &env)
    }

    fn logind_calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn systemctl_calls(&self) -> Vec<String> {
        read_lines(&self.systemctl_log)
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[test]
fn apply_reboots_through_logind_and_the_recovery_gets_its_parameter() {
    let m = Machine::new(Some(false), 0);
    let f = ImageFixture::new(DeltaKind::Delta);
    let run = m.apply(&f, &["--reboot", "-y", "--json"]);
    run.expect(0);
    expect_tree(&f.root, 3, f.port);
    assert_eq!(m.logind_calls(), ["Reboot(false)"]);
    assert!(m.systemctl_calls().is_empty());
    let event = crate::events::assert_events(&run)
        .into_iter()
        .find(|e| e["event"] == "reboot")
        .expect("a reboot event");
    assert_eq!(event["requested"], true, "{event}");
    assert_eq!(event["via"], "logind", "{event}");

    let m = Machine::new(Some(false), 0);
    let f = ImageFixture::new(DeltaKind::Delta);
    m.apply(&f, &["--recovery", "--reboot", "-y"])
        .expect(0)
        .mentions(&["Rebooting to start the recovery to apply build 3"]);
    assert_eq!(
        m.logind_calls(),
        ["SetRebootParameter(recovery)", "Reboot(false)"]
    );
}

#[test]
fn nothing_reboots_without_being_asked_to() {
    let m = Machine::new(Some(false), 0);
    // A root that is not this machine: applied, and this machine stays up.
    let f = ImageFixture::new(DeltaKind::Delta);
    m.apply(&f, &["-y"])
        .expect(0)
        .mentions(&["starts build 3 at its next boot", "--reboot"]);
    expect_tree(&f.root, 3, f.port);
    // --no-reboot.
    let f = ImageFixture::new(DeltaKind::Delta);
    m.apply(&f, &["--no-reboot", "-y"])
        .expect(0)
        .mentions(&["Reboot to start build 3."]);
    let f = ImageFixture::new(DeltaKind::Delta);
    let run = m.apply(&f, &["--json", "-y"]);
    let events = crate::events::assert_events(&run);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "reboot" && e["requested"] == false && e["reason"] == "root"),
        "{events:?}"
    );
    // No terminal to ask on and no -y.
    let f = ImageFixture::new(DeltaKind::Delta);
    m.apply(&f, &["--reboot"])
        .expect(0)
        .mentions(&["with -y, image apply reboots by itself"]);
    expect_tree(&f.root, 3, f.port);
    // Both at once is a usage error, found before anything is done.
    let f = ImageFixture::new(DeltaKind::Delta);
    m.apply(&f, &["--reboot", "--no-reboot"])
        .expect(2)
        .mentions(&["cannot be used with"]);
    expect_tree(&f.root, 1, f.port);
    assert!(m.logind_calls().is_empty());
    assert!(m.systemctl_calls().is_empty());
}

#[test]
fn without_logind_systemctl_reboots_and_a_refusal_is_reported_with_the_build_applied() {
    // No logind on the bus: systemctl.
    let m = Machine::new(None, 0);
    let f = ImageFixture::new(DeltaKind::Delta);
    m.apply(&f, &["--recovery", "--reboot", "-y"]).expect(0);
    assert_eq!(m.systemctl_calls(), ["reboot recovery"]);

    // No logind and systemctl fails: exit 2, the build stays applied, the hint says what
    // to do.
    let m = Machine::new(None, 1);
    let f = ImageFixture::new(DeltaKind::Delta);
    m.apply(&f, &["--reboot", "-y"]).expect(2).mentions(&[
        "build 3 is applied, but the reboot into it failed",
        "systemctl: refused",
        "hint: reboot by hand to start build 3",
    ]);
    expect_tree(&f.root, 3, f.port);

    // logind refuses (an inhibitor): reported as it is, never worked around.
    let m = Machine::new(Some(true), 0);
    let f = ImageFixture::new(DeltaKind::Delta);
    m.apply(&f, &["--reboot", "-y"])
        .expect(2)
        .mentions(&["logind refused to reboot", "Operation inhibited"]);
    assert_eq!(m.logind_calls(), ["Reboot(false)"]);
    assert!(m.systemctl_calls().is_empty());
}
