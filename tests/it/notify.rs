//! `release-upgrader notify` (issue 17) the way a desktop session runs it: the system
//! service on a private system bus, activated for the demo's tiny releases (alpha
//! installed, beta available), and a private session bus where a stand-in for the
//! desktop's notification server (`tests/fixtures/dbus/fake_notifications.py`) records
//! what it is asked and clicks the buttons. And the login notice's update-motd.d script.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ru_testing::dbus::PrivateBus;
use serde_json::{Value, json};

use crate::cli_docs::{NOTICE, check_motd, fixture_root, text};
use crate::service::PYTHON;
use crate::service_upgrade::Desktop;
use crate::support::BIN;
use crate::upgrade::World;

const FAKE_NOTIFICATIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dbus/fake_notifications.py"
);
const FAKE_POLKIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dbus/fake_polkit.py"
);
const SPOOF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dbus/spoof_signal.py"
);
const MOTD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dist/update-motd.d/91-release-upgrader"
);
const NOBODY: u32 = 65534;

/// A python3-dbus fixture on a bus: started once it prints `ready`; the JSON lines it
/// prints after that, one per call it received.
pub(crate) struct Fake {
    pub(crate) child: Child,
    calls: Arc<Mutex<Vec<Value>>>,
}

impl Fake {
    fn start(script: &str, mode: &str, env: (&str, &str)) -> Fake {
        Fake::start_with(script, &[mode], env)
    }

    /// Starts the python fake `script` with `args` and `env`, once it says `ready`; what
    /// it prints after, a JSON line per call received, is recorded.
    pub(crate) fn start_with(script: &str, args: &[&str], env: (&str, &str)) -> Fake {
        let mut child = Command::new(PYTHON)
            .arg(script)
            .args(args)
            .env(env.0, env.1)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with python3-dbus and python3-gi (scripts/setup)");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        assert_eq!(ready, "ready\n", "{script} did not start");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        std::thread::spawn(move || record(stdout, &recorded));
        Fake { child, calls }
    }

    /// Every call received, as the fake printed it.
    pub(crate) fn all_calls(&self) -> Vec<Value> {
        self.calls.lock().unwrap().clone()
    }

    fn calls(&self, method: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c["method"] == method)
            .map(|c| c["args"].clone())
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn record(stdout: BufReader<ChildStdout>, calls: &Mutex<Vec<Value>>) {
    for line in stdout.lines().map_while(Result::ok) {
        let call = serde_json::from_str(&line).unwrap_or_else(|e| json!({"bad": e.to_string()}));
        calls.lock().unwrap().push(call);
    }
}

/// The desktop user's side: a session bus with the fake notification server, a state
/// directory and a PATH directory for the fake `release-upgrader-gtk`.
struct Session {
    bus: PrivateBus,
    server: Fake,
    dir: tempfile::TempDir,
}

impl Session {
    fn new(mode: &str) -> Session {
        let dir = tempfile::tempdir().unwrap();
        // Reachable by nobody (the unprivileged run): the socket, the state, the PATH.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bus_dir = dir.path().join("bus");
        let state = dir.path().join("state");
        let bin = dir.path().join("bin");
        for d in [&bus_dir, &state, &bin] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        // The desktop's upgrader: says it ran, and with what.
        let gtk = bin.join("release-upgrader-gtk");
        std::fs::write(
            &gtk,
            format!(
                "#!/bin/sh\nprintf 'ran with %s arguments\\n' \"$#\" > {}/gtk-ran\n",
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&gtk, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bus = PrivateBus::start(&bus_dir, &[]).expect("dbus-daemon (scripts/setup)");
        let server = Fake::start(
            FAKE_NOTIFICATIONS,
            mode,
            ("DBUS_SESSION_BUS_ADDRESS", bus.address()),
        );
        Session { bus, server, dir }
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join("state/release-upgrader/notify.json")
    }

    fn gtk_ran(&self) -> PathBuf {
        self.dir.path().join("gtk-ran")
    }

    /// `release-upgrader --json --root ROOT notify ARGS` in this session, with
    /// `system` (a bus address) for the system bus, as `uid` when given.
    fn notify(&self, root: &Path, system: &str, uid: Option<u32>, args: &[&str]) -> Run {
        self.notify_on(root, system, self.bus.address(), uid, args)
    }

    /// [`Session::notify`] with `session` for the session bus.
    fn notify_on(
        &self,
        root: &Path,
        system: &str,
        session: &str,
        uid: Option<u32>,
        args: &[&str],
    ) -> Run {
        let mut cmd = match uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    BIN,
                ]);
                c
            }
            None => Command::new(BIN),
        };
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = cmd
            .args(["--json", "--root"])
            .arg(root)
            .arg("notify")
            .args(["--check-timeout", "240"])
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", system)
            .env("DBUS_SESSION_BUS_ADDRESS", session)
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("HOME", "/nonexistent")
            .env("PATH", path)
            .env_remove("RELEASE_UPGRADER_GTK")
            .current_dir("/")
            .output()
            .unwrap();
        Run::new(out)
    }
}

/// A finished `notify`: its exit code and JSON events.
struct Run {
    out: Output,
    events: Vec<Value>,
}

impl Run {
    fn new(out: Output) -> Run {
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect::<Vec<Value>>();
        for event in &events {
            if let Some(wrong) = crate::events::violation(event) {
                panic!("{event} does not fit docs/events.schema.json: {wrong}");
            }
        }
        Run { out, events }
    }

    #[track_caller]
    fn exits(&self, code: i32) -> &Run {
        assert_eq!(self.out.status.code(), Some(code), "{}", self.said());
        assert_eq!(
            self.events.last().map(|e| e["event"].clone()),
            Some(json!("result")),
            "{}",
            self.said()
        );
        self
    }

    fn event(&self, name: &str) -> &Value {
        self.events
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event: {}", self.said()))
    }

    fn said(&self) -> String {
        format!("{:#?}\n{}", self.events, text(&self.out))
    }
}

fn set_prompt(root: &Path, prompt: &str) {
    let dir = root.join("etc/update-manager");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("release-upgrades"),
        format!("[DEFAULT]\nPrompt={prompt}\n"),
    )
    .unwrap();
}

fn wait_for(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_new_release_is_announced_once_and_not_again_after_not_now() {
    let d = Desktop::new(World::new());
    let s = Session::new("dismiss");
    // Outside a desktop session: the release is found, but there is nobody to tell.
    let nowhere = format!("unix:path={}/no-session-bus", s.dir.path().display());
    let lost = s.notify_on(
        &d.w.root,
        d.bus.address(),
        &nowhere,
        None,
        &["--wait", "60"],
    );
    lost.exits(4);
    let error = lost.event("error");
    assert!(
        error["hint"].as_str().unwrap().contains("desktop session"),
        "{error}"
    );
    assert!(!s.state_file().exists());

    let first = s.notify(&d.w.root, d.bus.address(), None, &["--wait", "60"]);
    first.exits(0);
    assert_eq!(
        first.event("notify"),
        &json!({"event": "notify", "announced": true, "reason": null,
                "codename": "beta", "version": "2"})
    );
    assert_eq!(first.event("notification")["outcome"], "dismiss");
    let posted = s.server.calls("Notify");
    assert_eq!(posted.len(), 1, "{posted:#?}");
    let [app, replaces, icon, summary, body, actions, hints, _timeout] =
        posted[0].as_array().unwrap().as_slice()
    else {
        panic!("Notify of another shape: {posted:#?}");
    };
    assert_eq!(app, "release-upgrader");
    assert_eq!(replaces, 0);
    assert_eq!(icon, "system-software-update");
    assert_eq!(summary, "A new release is available");
    assert!(
        body.as_str().unwrap().contains("Version 2 (beta)"),
        "{body}"
    );
    assert_eq!(
        actions,
        &json!(["upgrade", "Upgrade…", "dismiss", "Not now"])
    );
    assert_eq!(hints, &json!({"urgency": 1}));
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(s.state_file()).unwrap()).unwrap();
    assert_eq!(state, json!({"dismissed": ["beta"]}));
    assert!(!s.gtk_ran().exists(), "Not now started the upgrader");

    // The next run asks again, and says nothing about beta.
    let second = s.notify(&d.w.root, d.bus.address(), None, &["--wait", "60"]);
    second.exits(1);
    let quiet = second.event("notify");
    assert_eq!(quiet["announced"], false);
    assert_eq!(quiet["codename"], "beta");
    assert!(
        quiet["reason"].as_str().unwrap().contains("dismissed"),
        "{quiet}"
    );
    assert_eq!(s.server.calls("Notify").len(), 1);
}

#[test]
fn upgrade_starts_the_desktop_upgrader_from_path_and_remembers_nothing() {
    let d = Desktop::new(World::new());
    // The other notification's click comes first, and is not ours.
    let s = Session::new("other");
    s.notify(&d.w.root, d.bus.address(), None, &["--wait", "60"])
        .exits(0);
    assert!(
        !s.gtk_ran().exists(),
        "another notification's action ran it"
    );
    assert!(
        s.state_file().exists(),
        "the dismissal of ours was not kept"
    );

    let s = Session::new("upgrade");
    let run = s.notify(&d.w.root, d.bus.address(), None, &["--wait", "60"]);
    run.exits(0);
    assert_eq!(run.event("notification")["outcome"], "upgrade");
    assert_eq!(wait_for(&s.gtk_ran()), "ran with 0 arguments\n");
    assert!(!s.state_file().exists(), "{}", run.said());
}

#[test]
fn prompt_never_posts_nothing_and_asks_no_service() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    set_prompt(&root, "never");
    let s = Session::new("upgrade");
    // No system bus at all: asking it would fail with exit 4.
    let nowhere = format!("unix:path={}/no-bus", dir.path().display());
    let run = s.notify(&root, &nowhere, None, &[]);
    run.exits(1);
    assert!(
        run.event("notify")["reason"]
            .as_str()
            .unwrap()
            .contains("Prompt=never"),
        "{}",
        run.said()
    );
    assert!(s.server.calls("Notify").is_empty());
    assert!(!s.state_file().exists());
}

#[test]
fn prompt_lts_does_not_announce_a_release_that_is_not_lts() {
    let d = Desktop::new(World::new());
    set_prompt(&d.w.root, "lts");
    let s = Session::new("upgrade");
    let run = s.notify(&d.w.root, d.bus.address(), None, &["--wait", "60"]);
    run.exits(1);
    let quiet = run.event("notify");
    assert_eq!(quiet["codename"], "beta", "{}", run.said());
    assert!(
        quiet["reason"].as_str().unwrap().contains("long-term"),
        "{quiet}"
    );
    assert!(s.server.calls("Notify").is_empty());
}

#[test]
fn without_the_service_on_the_system_bus_notify_fails_with_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let bus_dir = dir.path().join("bus");
    std::fs::create_dir(&bus_dir).unwrap();
    let system = PrivateBus::start(&bus_dir, &[]).expect("dbus-daemon (scripts/setup)");
    let s = Session::new("upgrade");
    let nowhere = format!("unix:path={}/no-bus", dir.path().display());
    for address in [system.address(), nowhere.as_str()] {
        let run = s.notify(&root, address, None, &[]);
        run.exits(4);
        let error = run.event("error");
        assert_eq!(error["exit_code"], 4);
        let said = format!("{} {}", error["message"], error["causes"]);
        assert!(
            said.contains("asking the system service") && said.contains("system bus"),
            "{said}"
        );
        assert!(error["hint"].as_str().is_some(), "{error}");
    }
    assert!(s.server.calls("Notify").is_empty());
}

#[test]
fn nobody_in_the_desktop_session_may_check_through_polkit_and_an_unanswered_notification_is_withdrawn()
 {
    let d = Desktop::new(World::new());
    // notify reads the root's Prompt as nobody.
    std::fs::set_permissions(d.w._dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Session::new("none");
    // Without polkit on the bus only root may check: refused, and said so.
    let refused = s.notify(&d.w.root, d.bus.address(), Some(NOBODY), &["--wait", "2"]);
    refused.exits(2);
    let error = refused.event("error");
    let said = format!("{} {}", error["causes"], error["hint"]);
    assert!(
        said.contains("AccessDenied") || said.contains("refused"),
        "{said}"
    );
    assert!(said.contains("polkit"), "{said}");
    assert!(s.server.calls("Notify").is_empty());
    // Polkit's answer for a user of the active local session (the policy's default).
    let _polkit = Fake::start(
        FAKE_POLKIT,
        "yes",
        ("DBUS_SYSTEM_BUS_ADDRESS", d.bus.address()),
    );
    let run = s.notify(&d.w.root, d.bus.address(), Some(NOBODY), &["--wait", "2"]);
    run.exits(0);
    assert_eq!(run.event("notify")["announced"], true);
    assert_eq!(run.event("notification")["outcome"], "timed-out");
    let posted = s.server.calls("Notify");
    assert_eq!(posted.len(), 1);
    // The same notification is withdrawn: its id is the one Notify returned (1).
    assert_eq!(s.server.calls("CloseNotification"), [json!([1])]);
    assert!(!s.state_file().exists());
}

/// The notice `check --motd` keeps, as the package's update-motd.d script prints it.
fn motd(root: &Path) -> String {
    let out = Command::new("sh").arg(MOTD).arg(root).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_login_notice_names_the_release_and_the_command_and_goes_with_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let root = fixture_root(dir.path(), "bookworm");
    assert_eq!(motd(&root), "", "a notice before any check");
    let out = check_motd(&root);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        motd(&root),
        format!(
            "\nNew release '13' (trixie) available.\nRun 'release-upgrader --root {} upgrade' \
             to upgrade to it.\n",
            root.display()
        )
    );
    // An empty notice prints nothing (not even the blank line).
    let notice = root.join(NOTICE);
    let kept = std::fs::read(&notice).unwrap();
    std::fs::write(&notice, "").unwrap();
    assert_eq!(motd(&root), "");
    std::fs::write(&notice, kept).unwrap();
    // The same root, now on trixie: nothing is newer, and the login is quiet again.
    let trixie = fixture_root(dir.path(), "trixie");
    let out = check_motd(&trixie);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!notice.exists());
    assert_eq!(motd(&trixie), "");
}

/// The desktop user's timer, service and autostart entry run `notify` as the package
/// installs them, and the user's systemd accepts the units (their copies with the binary
/// under test; the man page their Documentation names is checked in the package test).
#[test]
fn the_user_units_and_the_autostart_entry_run_notify_and_verify() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    let read = |rel: &str| std::fs::read_to_string(dist.join(rel)).unwrap();
    let service = read("systemd/user/release-upgrader-notify.service");
    let timer = read("systemd/user/release-upgrader-notify.timer");
    let desktop = read("xdg/autostart/release-upgrader-notify.desktop");
    let command = "/usr/bin/release-upgrader --quiet notify";
    assert!(service.contains(&format!("\nExecStart={command}\n")));
    assert!(service.contains("\nSuccessExitStatus=1\n"));
    assert!(
        service.contains("\nKillMode=process\n"),
        "the upgrader would die with notify"
    );
    assert!(timer.contains("\nOnUnitActiveSec=1d\n") && timer.contains("\nOnActiveSec="));
    assert!(timer.contains("\nWantedBy=graphical-session.target\n"));
    assert!(desktop.starts_with("[Desktop Entry]\n"));
    assert!(desktop.contains(&format!("\nExec={command}\n")));
    assert!(desktop.contains("\nX-GNOME-Autostart-Delay="));
    let install = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/release-upgrader.install"),
    )
    .unwrap();
    for line in [
        "dist/systemd/user/release-upgrader-notify.service usr/lib/systemd/user\n",
        "dist/systemd/user/release-upgrader-notify.timer usr/lib/systemd/user\n",
        "dist/xdg/autostart/release-upgrader-notify.desktop etc/xdg/autostart\n",
    ] {
        assert!(install.contains(line), "{line}");
    }
    // The command line parses.
    let help = Command::new(BIN)
        .args(["--quiet", "notify", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "{}", text(&help));

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped systemd-analyze: not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    let local = |unit: &str| {
        unit.replace("/usr/bin/release-upgrader", BIN)
            .lines()
            .filter(|l| !l.starts_with("Documentation="))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    for (name, unit) in [
        ("release-upgrader-notify.service", &service),
        ("release-upgrader-notify.timer", &timer),
    ] {
        std::fs::write(units.join(name), local(unit)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(units.join("release-upgrader-notify.service"))
        .arg(units.join("release-upgrader-notify.timer"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    assert!(
        !text(&out).contains("release-upgrader-notify"),
        "systemd-analyze --user verify: {}",
        text(&out)
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// Anyone on the buses may send signals named as the service's and the notification
/// server's: a `ReleaseChecked` for a release that does not exist, an `ActionInvoked`
/// "upgrade" for the notification's id. Only those of the name that answered the call
/// count.
#[test]
fn signals_from_anyone_but_the_service_and_the_notification_server_are_ignored() {
    let d = Desktop::new(World::new());
    let _fake_release = Fake::start_with(
        SPOOF,
        &[
            "system",
            "/org/releaseupgrader/ReleaseUpgrader1",
            "org.releaseupgrader.ReleaseUpgrader1",
            "ReleaseChecked",
            "bsssbs",
            r#"[true, "evil", "99 LTS", "", true, ""]"#,
        ],
        ("DBUS_SYSTEM_BUS_ADDRESS", d.bus.address()),
    );
    let s = Session::new("dismiss");
    let _fake_click = Fake::start_with(
        SPOOF,
        &[
            "session",
            "/org/freedesktop/Notifications",
            "org.freedesktop.Notifications",
            "ActionInvoked",
            "us",
            r#"[1, "upgrade"]"#,
        ],
        ("DBUS_SESSION_BUS_ADDRESS", s.bus.address()),
    );
    let run = s.notify(&d.w.root, d.bus.address(), None, &["--wait", "60"]);
    run.exits(0);
    assert_eq!(run.event("notify")["codename"], "beta", "{}", run.said());
    assert_eq!(run.event("notification")["outcome"], "dismiss");
    assert!(
        !s.gtk_ran().exists(),
        "a stranger's click started the upgrader"
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(s.state_file()).unwrap()).unwrap();
    assert_eq!(state, json!({"dismissed": ["beta"]}));
}
