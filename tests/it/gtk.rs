//! `release-upgrader-gtk`, the desktop's window, driven through its own test hooks
//! (crates/gtk/src/hooks.rs) under Xvfb against the real service on a private system bus
//! (bus activation, the demo's tiny releases with the user's edited `/etc/demo.conf`) and
//! a fake logind: the start page offers beta, the upgrade runs, dpkg's conffile question
//! comes up as a dialog with the difference, a cancel is refused as too late, the person
//! keeps their file, and "Restart now" reaches logind. The assertions read the app's state lines (what the widgets
//! show); the screenshots land in `target/gtk-screenshots/` for a person to look at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::interactive::{MINE, edited_world};
use crate::reboot::{Calls, FakeLogind};
use crate::service_upgrade::Desktop;
use crate::support::BIN;

/// The app under Xvfb, in a process group of its own that is killed at the end (the app,
/// xvfb-run and the X server with it).
pub(crate) struct Window {
    child: Child,
    dir: PathBuf,
    commands: std::fs::File,
    seen: usize,
}

impl Drop for Window {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Window {
    /// `env` (the bus, the language) is set last: it may override the defaults here.
    pub fn start(app: &Path, dir: &Path, env: &[(&str, &str)]) -> Window {
        let fifo = dir.join("commands");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let log = std::fs::File::create(dir.join("app.log")).unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new("xvfb-run")
            .args(["-a", "-s", "-screen 0 1280x800x24"])
            .arg(app)
            .env("RELEASE_UPGRADER_GTK_TEST_DIR", dir)
            // No session bus to be unique on or to autolaunch; no accessibility bus.
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", dir.join("no-session-bus").display()),
            )
            .env("GTK_A11Y", "none")
            .env("NO_AT_BRIDGE", "1")
            .env("GSK_RENDERER", "cairo")
            .env("LANG", "C.UTF-8")
            .env("LANGUAGE", "")
            .env_remove("LC_ALL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("xvfb-run (xvfb and xauth, scripts/setup)");
        // Read-write, so the open never waits for the app to open its end.
        let commands = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        Window {
            child,
            dir: dir.to_owned(),
            commands,
            seen: 0,
        }
    }

    pub fn send(&mut self, command: &str) {
        writeln!(self.commands, "{command}").unwrap();
    }

    /// The state lines the app finished writing (a line being written has no newline yet).
    pub fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.join("state.jsonl")).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The first state line after the last one waited for that `pred` accepts.
    pub fn wait(&mut self, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let lines = self.lines();
            // A command the app could not perform fails the test at once.
            if let Some(bad) = lines
                .iter()
                .find(|l| l.get("command").is_some() && !l["error"].is_null())
            {
                panic!("{bad}\n{}", self.report());
            }
            if let Some(i) = lines.iter().skip(self.seen).position(&pred) {
                self.seen += i + 1;
                return lines[self.seen - 1].clone();
            }
            if Instant::now() > deadline {
                panic!("no state {what} within {within:?}\n{}", self.report());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the app ended ({status}) before {what}\n{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn report(&self) -> String {
        let lines = self.lines();
        let tail: Vec<String> = lines
            .iter()
            .rev()
            .take(6)
            .rev()
            .map(Value::to_string)
            .collect();
        format!(
            "last states:\n{}\napp log:\n{}",
            tail.join("\n"),
            std::fs::read_to_string(self.dir.join("app.log")).unwrap_or_default()
        )
    }
}

fn labels(state: &Value) -> Vec<&str> {
    state["labels"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub(crate) fn has_label(state: &Value, text: &str) -> bool {
    labels(state).iter().any(|l| l.contains(text))
}

pub(crate) fn button<'a>(state: &'a Value, name: &str) -> Option<&'a Value> {
    state["buttons"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
}

fn text<'a>(state: &'a Value, name: &str) -> &'a str {
    state["texts"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == name))
        .and_then(|t| t["text"].as_str())
        .unwrap_or("")
}

/// The button is shown, can be pressed, and lies inside the window.
pub(crate) fn usable(state: &Value, name: &str) -> bool {
    let Some(b) = button(state, name) else {
        return false;
    };
    let r = &b["bounds"];
    let (x, w) = (
        r["x"].as_f64().unwrap_or(-1.0),
        r["width"].as_f64().unwrap_or(0.0),
    );
    let width = state["width"].as_f64().unwrap_or(0.0);
    b["sensitive"] == true && x >= 0.0 && w > 0.0 && x + w <= width
}

#[test]
fn the_window_upgrades_refuses_a_late_cancel_keeps_the_users_conffile_and_restarts_through_logind()
{
    let app = Path::new(BIN).with_file_name("release-upgrader-gtk");
    assert!(
        app.exists(),
        "{} is missing: build it: cargo build -p release-upgrader-gtk",
        app.display()
    );
    let d = Desktop::new(edited_world());
    let calls = Calls::default();
    let _logind = FakeLogind::serve(d.bus.address(), &calls, false);

    // target/gtk-screenshots, emptied: the screenshots of this run only.
    let dir = Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("gtk-screenshots");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    let mut win = Window::start(&app, &dir, &d.bus.env());
    let minute = Duration::from_secs(60);

    // The start page: the running release, and the service's check found beta.
    let start = win.wait("start page with alpha and beta", minute, |s| {
        s["page"] == "start"
            && has_label(s, "This computer runs Demo Linux 1 (alpha).")
            && has_label(s, "Version 2 (beta) is available.")
    });
    assert_eq!(
        button(&start, "upgrade").unwrap()["sensitive"],
        true,
        "{start:#}"
    );
    assert!(button(&start, "close").is_some(), "{start:#}");
    assert!(start["dialog"].is_null());

    // At a phone's width the upgrade button is still there and inside the window.
    win.send("resize 360");
    let narrow = win.wait("the window at 360 px", minute, |s| {
        s["after"] == "resize-360"
    });
    assert!(
        narrow["width"].as_i64().unwrap() <= 380,
        "the window did not shrink: {narrow:#}"
    );
    assert!(usable(&narrow, "upgrade"), "{narrow:#}");
    win.send("resize 640");
    win.wait("the window at 640 px", minute, |s| {
        s["after"] == "resize-640"
    });

    win.send("click upgrade");
    let progress = win.wait("progress page", minute, |s| s["page"] == "progress");
    assert!(button(&progress, "cancel").is_some(), "{progress:#}");

    // The demo's obsolete package: a yes/no dialog (No, the safe answer, is the default).
    win.wait(
        "the obsolete packages' dialog",
        Duration::from_secs(240),
        |s| s["dialog"]["name"] == "question",
    );
    win.send("state");
    let obsolete = win.wait("the dialog laid out", minute, |s| s["after"] == "state");
    let dialog = &obsolete["dialog"];
    assert!(has_label(dialog, "demo-legacy"), "{dialog:#}");
    assert!(usable(dialog, "yes") && usable(dialog, "no"), "{dialog:#}");
    win.send("answer Y");

    // Once planned, and before anything is downloaded, the plan asks to start.
    win.wait("the plan page", Duration::from_secs(240), |s| {
        s["page"] == "plan" && has_label(s, "will be downloaded")
    });
    win.send("state");
    let plan = win.wait("the plan laid out", minute, |s| s["after"] == "state");
    assert!(usable(&plan, "start"), "{plan:#}");
    assert!(
        has_label(&plan, "Ready to upgrade to version 2 (beta)"),
        "{plan:#}"
    );
    assert!(
        labels(&plan)
            .iter()
            .any(|l| l.ends_with("will be upgraded") && !l.starts_with('0')),
        "{plan:#}"
    );
    assert!(has_label(&plan, "will be downloaded"), "{plan:#}");
    assert!(has_label(&plan, "1 package will be removed"), "{plan:#}");
    assert_eq!(text(&plan, "removed"), "demo-legacy", "{plan:#}");
    assert!(usable(&plan, "plan-cancel"), "{plan:#}");
    win.send("resize 360");
    let narrow = win.wait("the plan at 360 px", minute, |s| s["after"] == "resize-360");
    assert!(
        usable(&narrow, "start") && usable(&narrow, "plan-cancel"),
        "{narrow:#}"
    );
    win.send("resize 640");
    win.wait("the plan at 640 px", minute, |s| s["after"] == "resize-640");
    win.send("click start");
    win.wait("progress page again", minute, |s| s["page"] == "progress");

    // dpkg asks about the edited file: the dialog names it and carries the difference.
    let asked = win.wait("the conffile dialog", Duration::from_secs(240), |s| {
        s["dialog"]["name"] == "question"
    });
    let dialog = &asked["dialog"];
    assert!(has_label(dialog, "/etc/demo.conf"), "{dialog:#}");
    let diff = text(dialog, "diff");
    assert!(
        diff.contains("-colour = red # mine") && diff.contains("+colour = green"),
        "{dialog:#}"
    );
    assert!(
        has_label(&asked, "Installing the new packages"),
        "the phase as the heading: {asked:#}"
    );
    assert!(
        text(&asked, "log").contains("Checking your system: done"),
        "{asked:#}"
    );
    // dpkg runs (it is asking): a cancel is refused with TooLate, said inline, and the
    // button goes insensitive. (The hook presses the window's button under the modal
    // dialog: the refusal is the same whenever it comes once dpkg has started.)
    win.send("click cancel");
    let refused = win.wait("the cancel refused", minute, |s| {
        has_label(s, "can no longer be cancelled")
    });
    assert!(
        has_label(
            &refused,
            "The upgrade is installing packages and can no longer be cancelled."
        ),
        "{refused:#}"
    );
    assert_eq!(
        button(&refused, "cancel").unwrap()["sensitive"],
        false,
        "{refused:#}"
    );
    assert_eq!(
        refused["dialog"]["name"], "question",
        "the question is still open"
    );
    // Opened for the screenshot: the difference as the person reads it.
    win.send("activate differences");
    let shown = win.wait("the differences shown", minute, |s| {
        s["after"] == "activate-differences"
    });
    let dialog = &shown["dialog"];
    assert!(
        usable(dialog, "keep") && usable(dialog, "install"),
        "{dialog:#}"
    );
    assert!(
        dialog["texts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "diff" && t["shown"] == true),
        "{dialog:#}"
    );

    // On a phone's width both answers are still there, one above the other.
    win.send("resize 360");
    let narrow = win.wait("the dialog at 360 px", minute, |s| {
        s["after"] == "resize-360"
    });
    let dialog = &narrow["dialog"];
    assert!(
        dialog["width"].as_i64().unwrap() <= 380,
        "the dialog did not shrink: {dialog:#}"
    );
    assert!(
        usable(dialog, "keep") && usable(dialog, "install"),
        "{dialog:#}"
    );
    win.send("resize 640");
    win.wait("the window at 640 px again", minute, |s| {
        s["after"] == "resize-640"
    });

    win.send("answer N");
    let end = win.wait("the end page", Duration::from_secs(240), |s| {
        s["page"] == "end" && s["dialog"].is_null()
    });
    assert!(
        has_label(&end, "Your system is upgraded to version 2 (beta)."),
        "{end:#}"
    );
    win.send("state");
    let end = win.wait("the end page laid out", minute, |s| s["after"] == "state");
    assert!(usable(&end, "restart") && usable(&end, "later"), "{end:#}");

    win.send("click restart");
    win.wait("restarting", minute, |s| has_label(s, "Restarting…"));
    let deadline = Instant::now() + minute;
    while calls.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(*calls.lock().unwrap(), ["Reboot(true)"]);

    // Every page and the dialog were drawn (a screenshot waits for the page's first frame,
    // which a busy machine may draw late).
    let screenshots = || -> Vec<Value> {
        win.lines()
            .into_iter()
            .filter(|l| l.get("screenshot").is_some())
            .collect()
    };
    let deadline = Instant::now() + minute;
    while Instant::now() < deadline
        && !screenshots().iter().any(|l| {
            l["screenshot"]
                .as_str()
                .is_some_and(|s| s.ends_with("-end.png"))
        })
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let shots = screenshots();
    for l in &shots {
        assert!(l["error"].is_null(), "{l}");
        let png = std::fs::read(l["screenshot"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 1000, "{l}");
    }
    for page in ["start", "plan", "progress-question", "end"] {
        assert!(
            shots.iter().any(|l| l["screenshot"]
                .as_str()
                .unwrap()
                .ends_with(&format!("-{page}.png"))),
            "no screenshot of {page}: {shots:#?}"
        );
    }
    drop(win);

    assert_eq!(d.w.read("/etc/demo.conf"), MINE, "the user's file was kept");
    d.w.assert_all_on_beta("after the upgrade from the window");
}

/// Declining the plan puts everything back: the end page says so and the system still
/// runs alpha, without helpers.
#[test]
fn the_window_shows_the_plan_and_declining_it_puts_everything_back() {
    let app = Path::new(BIN).with_file_name("release-upgrader-gtk");
    let d = Desktop::new(crate::upgrade::World::new());
    let before = d.w.before();
    let dir = tempfile::tempdir().unwrap();
    let mut win = Window::start(&app, dir.path(), &d.bus.env());
    let minute = Duration::from_secs(60);
    win.wait("the start page with beta", minute, |s| {
        s["page"] == "start" && button(s, "upgrade").is_some_and(|b| b["sensitive"] == true)
    });
    win.send("click upgrade");
    win.wait(
        "the obsolete packages' dialog",
        Duration::from_secs(240),
        |s| s["dialog"]["name"] == "question",
    );
    win.send("answer N");
    let plan = win.wait("the plan page", Duration::from_secs(240), |s| {
        s["page"] == "plan" && has_label(s, "will be downloaded")
    });
    assert!(has_label(&plan, "0 packages will be removed"), "{plan:#}");
    win.send("click plan-cancel");
    let end = win.wait("the end page", Duration::from_secs(120), |s| {
        s["page"] == "end"
    });
    assert!(has_label(&end, "The upgrade was cancelled"), "{end:#}");
    assert!(
        usable(&end, "close") || button(&end, "close").is_some(),
        "{end:#}"
    );
    drop(win);
    d.w.assert_put_back(&before);
    assert!(!d.w.root.join("usr/lib/release-upgrader").exists());
}
