//! The desktop's release upgrade on the system bus (issue 16):
//! `org.releaseupgrader.ReleaseUpgrader1` at `/org/releaseupgrader/ReleaseUpgrader1`, owned
//! as `org.releaseupgrader.ReleaseUpgrader`.
//!
//! The service does not upgrade in a thread of its own. The upgrade re-executes itself with
//! the helpers' programs (the target release's own upgrader takes over), which only a
//! process can do, and a desktop user must get exactly the upgrade a terminal user gets.
//! So `Upgrade` runs the command line, `upgrade --json -f json -y -m desktop`:
//! - its events become signals and properties ([`Tracker`], pure and unit-tested);
//! - the questions dpkg and debconf ask are `Question` signals, answered through `Answer`
//!   (a line on the command's stdin);
//! - `Cancel` is the terminal's Ctrl-C (SIGINT): rolled back before dpkg starts, refused
//!   once it has;
//! - `-y` stands for the consent the authorized `Upgrade` call gave; `-m desktop` keeps the
//!   desktop's metapackages and never restarts on its own (`RebootRequired` says a restart
//!   is due; the desktop offers it).
//!
//! `CheckRelease` runs `check --notes --json` the same way. Should the service go away
//! during an upgrade, the upgrade goes on; the questions it asks then take their defaults
//! (the command's stdin is closed), as they do when nobody watches.

// The `Question` signal carries what a dialog shows, one argument each (as system-image's
// signals do); zbus generates its emitter outside the impl, where no narrower allow reaches.
#![allow(clippy::too_many_arguments)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use zbus::fdo;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedValue;

use super::authority::{Action, Authority};
use super::{Served as _, Wake};
use crate::root::SystemRoot;

/// The bus name.
pub const NAME: &str = "org.releaseupgrader.ReleaseUpgrader";
/// The object path.
pub const PATH: &str = "/org/releaseupgrader/ReleaseUpgrader1";

/// The command line the service runs: this program and the global flags the service was
/// started with (root, keyrings, meta-release URI…), which the upgrade must see as the
/// service does. `--json` is among them.
#[derive(Clone, Debug)]
pub struct Cli {
    pub program: PathBuf,
    pub globals: Vec<OsString>,
}

/// The interface's own errors (`org.releaseupgrader.ReleaseUpgrader1.Error.*`), and the
/// authority's refusals as the authority words them
/// (`org.freedesktop.DBus.Error.AccessDenied`). Written out rather than derived: zbus's
/// derive would rename the authority's errors into our namespace.
#[derive(Debug)]
pub enum CallError {
    /// The authority refused, or asking it failed.
    Denied(fdo::Error),
    ZBus(zbus::Error),
    /// A check or an upgrade is under way.
    Busy(String),
    /// Nothing to answer or cancel.
    NotRunning(String),
    /// `Cancel` once dpkg has started.
    TooLate(String),
    /// An option `Upgrade` does not take, or of the wrong type.
    InvalidOption(String),
    /// An answer that is not among the question's choices, or for another question.
    InvalidAnswer(String),
    /// The command line could not be started.
    Failed(String),
}

impl zbus::DBusError for CallError {
    fn name(&self) -> zbus::names::ErrorName<'_> {
        use zbus::names::ErrorName;
        let ours = |name: &'static str| ErrorName::from_static_str_unchecked(name);
        match self {
            CallError::Denied(e) => e.name(),
            CallError::ZBus(_) => ours("org.freedesktop.zbus.Error"),
            CallError::Busy(_) => ours("org.releaseupgrader.ReleaseUpgrader1.Error.Busy"),
            CallError::NotRunning(_) => {
                ours("org.releaseupgrader.ReleaseUpgrader1.Error.NotRunning")
            }
            CallError::TooLate(_) => ours("org.releaseupgrader.ReleaseUpgrader1.Error.TooLate"),
            CallError::InvalidOption(_) => {
                ours("org.releaseupgrader.ReleaseUpgrader1.Error.InvalidOption")
            }
            CallError::InvalidAnswer(_) => {
                ours("org.releaseupgrader.ReleaseUpgrader1.Error.InvalidAnswer")
            }
            CallError::Failed(_) => ours("org.releaseupgrader.ReleaseUpgrader1.Error.Failed"),
        }
    }

    fn description(&self) -> Option<&str> {
        match self {
            CallError::Denied(e) => e.description(),
            CallError::ZBus(_) => None,
            CallError::Busy(d)
            | CallError::NotRunning(d)
            | CallError::TooLate(d)
            | CallError::InvalidOption(d)
            | CallError::InvalidAnswer(d)
            | CallError::Failed(d) => Some(d),
        }
    }

    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::message::Message> {
        match self {
            CallError::Denied(e) => e.create_reply(call),
            CallError::ZBus(e) => {
                zbus::message::Message::error(call, self.name())?.build(&(e.to_string(),))
            }
            _ => zbus::message::Message::error(call, self.name())?
                .build(&(self.description().unwrap_or_default(),)),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use zbus::DBusError as _;
        match self {
            CallError::ZBus(e) => write!(f, "{}: {e}", self.name()),
            _ => write!(
                f,
                "{}: {}",
                self.name(),
                self.description().unwrap_or_default()
            ),
        }
    }
}

impl std::error::Error for CallError {}

impl From<zbus::Error> for CallError {
    fn from(e: zbus::Error) -> Self {
        CallError::ZBus(e)
    }
}

impl From<fdo::Error> for CallError {
    fn from(e: fdo::Error) -> Self {
        CallError::Denied(e)
    }
}

/// The flags of `upgrade` for the options of `Upgrade(a{sv})`: `allow-third-party`,
/// `keep-helpers`, `allow-pending` (b), `cdrom` (s, an absolute path), `mode` (s: desktop,
/// the default, server or cloud), `confirm` (b: the caller confirms the plan, so no `-y`:
/// the upgrade's own yes/no questions, `start` first, come as `Question`s). Anything else
/// is refused, not ignored: a caller asking for something this service does not do must
/// learn it before the upgrade starts.
pub fn upgrade_args(options: &HashMap<String, OwnedValue>) -> Result<Vec<OsString>, String> {
    let mut args: Vec<OsString> = ["upgrade", "-f", "json"].map(Into::into).to_vec();
    let mut yes = true;
    let mut mode = "desktop".to_owned();
    let mut keys: Vec<&String> = options.keys().collect();
    keys.sort();
    for key in keys {
        let value = &options[key];
        let flag = || {
            value.downcast_ref::<bool>().map_err(|_| {
                format!(
                    "option {key}: a boolean (b) is expected, not {}",
                    value.value_signature()
                )
            })
        };
        let text = || {
            value
                .downcast_ref::<&str>()
                .map(str::to_owned)
                .map_err(|_| {
                    format!(
                        "option {key}: a string (s) is expected, not {}",
                        value.value_signature()
                    )
                })
        };
        match key.as_str() {
            "allow-third-party" | "keep-helpers" | "allow-pending" => {
                if flag()? {
                    args.push(format!("--{key}").into());
                }
            }
            "confirm" => yes = !flag()?,
            "cdrom" => {
                let path = text()?;
                if !path.starts_with('/') || path.contains('\0') {
                    return Err(format!(
                        "option cdrom: {path:?} is not an absolute path (where the media are mounted)"
                    ));
                }
                args.push("--cdrom".into());
                args.push(path.into());
            }
            "mode" => {
                let value = text()?;
                if !["desktop", "server", "cloud"].contains(&value.as_str()) {
                    return Err(format!(
                        "option mode: {value:?} is not desktop, server or cloud"
                    ));
                }
                mode = value;
            }
            other => {
                return Err(format!(
                    "unknown option {other:?}: Upgrade takes allow-third-party, keep-helpers, \
                     allow-pending, confirm (b), cdrom and mode (s)"
                ));
            }
        }
    }
    if yes {
        args.insert(3, "-y".into());
    }
    args.push("-m".into());
    args.push(mode.into());
    Ok(args)
}

/// A question the command asked and nobody answered yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Open {
    pub id: u32,
    pub choices: Vec<String>,
}

impl Open {
    /// The line to write for `answer`: one of the choices (in the case offered), or any
    /// single line when the question offers none (a debconf or script prompt).
    pub fn line_for(&self, id: u32, answer: &str) -> Result<String, String> {
        if id != self.id {
            return Err(format!(
                "question {id} is not open: question {} is",
                self.id
            ));
        }
        if answer.contains(['\n', '\r', '\0']) {
            return Err("an answer is one line".into());
        }
        if self.choices.is_empty() {
            return Ok(format!("{answer}\n"));
        }
        match self
            .choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(answer.trim()))
        {
            Some(choice) => Ok(format!("{choice}\n")),
            None => Err(format!(
                "{answer:?} is not an answer to question {id}: one of {}",
                self.choices.join(", ")
            )),
        }
    }
}

/// What becomes of one event of the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    Phase {
        id: String,
        state: String,
        ok: bool,
    },
    Progress {
        percent: f64,
        label: String,
        item: String,
    },
    Question {
        id: u32,
        kind: String,
        package: String,
        path: String,
        text: String,
        choices: Vec<String>,
        default: String,
    },
    Message(String),
    /// The plan, before the `start` question (`upgrade-plan`).
    Plan(crate::events::PlanSummary),
}

/// The phases in order, each with its share of the whole run's percent: what takes long
/// (downloading, installing) moves the bar most.
const PHASES: [(&str, f64); 8] = [
    ("preflight", 2.0),
    ("bootstrap", 10.0),
    ("sources", 2.0),
    ("update", 10.0),
    ("plan", 6.0),
    ("download", 25.0),
    ("install", 40.0),
    ("cleanup", 5.0),
];

/// The command line's events, followed: the run's percent, whether dpkg started, the open
/// question, how it ended.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The phase under way and the percent of its current task.
    phase: Option<(String, f64)>,
    ended: Vec<String>,
    /// The whole run, 0–100, never going back.
    pub percent: f64,
    /// dpkg has started: from here on a cancel would leave a half-upgraded system.
    pub installing: bool,
    pub question: Option<Open>,
    next_question: u32,
    pub exit_code: Option<i32>,
    /// The failure, with its hint.
    pub error: Option<String>,
    pub last_message: Option<String>,
    pub reboot_required: bool,
}

impl Tracker {
    fn overall(&self) -> f64 {
        let done: f64 = PHASES
            .iter()
            .filter(|(id, _)| self.ended.iter().any(|e| e == id))
            .map(|(_, share)| share)
            .sum();
        let current = self.phase.as_ref().map_or(0.0, |(id, task)| {
            PHASES
                .iter()
                .find(|(p, _)| p == id)
                .map_or(0.0, |(_, share)| share * task.clamp(0.0, 100.0) / 100.0)
        });
        (done + current).min(100.0)
    }

    /// Follows one line of `--json` output; what to signal.
    pub fn line(&mut self, line: &str) -> Vec<Out> {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            return Vec::new();
        };
        let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
        let mut out = Vec::new();
        match event["event"].as_str().unwrap_or_default() {
            "phase" => {
                let (id, state) = (text("id"), text("state"));
                if state == "start" {
                    if id == "install" {
                        self.installing = true;
                    }
                    self.phase = Some((id.clone(), 0.0));
                } else {
                    self.ended.push(id.clone());
                    self.phase = None;
                }
                out.push(Out::Phase {
                    id,
                    state,
                    ok: event["ok"].as_bool().unwrap_or(true),
                });
            }
            "progress" => {
                let percent = event["percent"].as_f64().or_else(|| {
                    let (done, total) = (event["done"].as_f64()?, event["total"].as_f64()?);
                    (total > 0.0).then(|| 100.0 * done / total)
                });
                if let (Some(percent), Some((_, task))) = (percent, self.phase.as_mut()) {
                    *task = percent;
                }
                // A phase may run several tasks, each from 0 %: the signal, like the
                // property, never goes back.
                self.percent = self.percent.max(self.overall());
                out.push(Out::Progress {
                    percent: self.percent,
                    label: text("label"),
                    item: text("item"),
                });
            }
            // A question reported with the answer dpkg took (nobody was asked) is news,
            // not a question.
            "question" if !event["answer"].is_string() => {
                self.next_question += 1;
                let choices: Vec<String> = event["choices"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                self.question = Some(Open {
                    id: self.next_question,
                    choices: choices.clone(),
                });
                out.push(Out::Question {
                    id: self.next_question,
                    kind: text("kind"),
                    package: text("package"),
                    path: text("path"),
                    text: text("text"),
                    choices,
                    default: text("default"),
                });
            }
            "question" => out.push(Out::Message(format!(
                "{}: answered {} without asking",
                text("path"),
                text("answer")
            ))),
            "upgrade-plan" => {
                if let Ok(crate::events::Event::UpgradePlan(plan)) =
                    serde_json::from_value(event.clone())
                {
                    out.push(Out::Plan(plan));
                }
            }
            "message" => {
                self.last_message = Some(text("text"));
                out.push(Out::Message(text("text")));
            }
            "error" => {
                let mut said = text("message");
                if let Some(hint) = event["hint"].as_str() {
                    said.push_str("\nhint: ");
                    said.push_str(hint);
                }
                self.error = Some(said);
            }
            "reboot" => self.reboot_required = event["required"].as_bool().unwrap_or(true),
            "result" => self.exit_code = event["exit_code"].as_i64().map(|c| c as i32),
            _ => {}
        }
        self.percent = self.percent.max(self.overall());
        out
    }

    /// The `Finished` signal's message: the failure, else the last word of the run.
    pub fn finished_message(&self, code: i32) -> String {
        match (&self.error, &self.last_message) {
            (Some(error), _) if code != 0 => error.clone(),
            (_, Some(message)) if code == 0 => message.clone(),
            _ if code == 0 => "The upgrade finished.".into(),
            _ => format!("The upgrade failed (exit code {code}); see /var/log/dist-upgrade/."),
        }
    }
}

/// How the running release is named to the user: os-release's `PRETTY_NAME`, else its
/// id, version and codename.
pub fn current_release(os: &ru_format::os_release::OsRelease) -> String {
    if let Some(pretty) = os.pretty_name.as_deref().filter(|p| !p.trim().is_empty()) {
        return pretty.to_owned();
    }
    match (&os.version_id, &os.codename) {
        (Some(version), Some(codename)) => format!("{} {version} ({codename})", os.id),
        (Some(part), None) | (None, Some(part)) => format!("{} {part}", os.id),
        (None, None) => os.id.clone(),
    }
}

/// What the command line found (`check --json`'s `check` event), for `ReleaseChecked`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Found {
    pub available: bool,
    pub codename: String,
    pub version: String,
    pub notes_uri: String,
    pub notes: String,
    pub pocket_reachable: bool,
    pub reason: String,
}

impl Found {
    /// Reads the `check` event among `output`'s lines; `None` when there is none.
    pub fn of(output: &str) -> Option<Found> {
        let event = output
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["event"] == "check")?;
        let target = &event["target"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Some(Found {
            available: event["available"].as_bool().unwrap_or(false),
            codename: text(&target["dist"]),
            version: text(&target["version"]),
            notes_uri: event["release_notes"]["uri"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| text(&target["release_notes"])),
            notes: text(&event["release_notes"]["text"]),
            pocket_reachable: !event["pocket"].is_null(),
            reason: text(&event["reason"]),
        })
    }
}

/// The diff between the user's configuration file and the package's new one, for the
/// `Question` of a conffile (`diff -u`, at most 64 KiB): read confined to the root, no
/// symbolic link followed. Empty when either cannot be read.
pub fn conffile_difference(root: &SystemRoot, path: &str) -> String {
    const MAX: usize = 64 * 1024;
    let read = |path: &str| -> Option<Vec<u8>> {
        let rel = root.relative(path).ok()?;
        root.tree().ok()?.read(&rel).ok().flatten()
    };
    let (Some(current), Some(new)) = (read(path), read(&format!("{path}.dpkg-new"))) else {
        return String::new();
    };
    let Ok(dir) = tempfile::tempdir() else {
        return String::new();
    };
    let (a, b) = (dir.path().join("current"), dir.path().join("new"));
    if std::fs::write(&a, current).is_err() || std::fs::write(&b, new).is_err() {
        return String::new();
    }
    let Ok(out) = Command::new("diff")
        .arg("-u")
        .arg(format!("--label={path}"))
        .arg(format!("--label={path}.dpkg-new"))
        .arg(&a)
        .arg(&b)
        .output()
    else {
        return String::new();
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n[…]\n");
    }
    text
}

/// What the service is doing.
#[derive(Debug, Default)]
enum Work {
    #[default]
    Idle,
    Checking {
        pid: u32,
    },
    Upgrading {
        pid: u32,
        stdin: Option<ChildStdin>,
        tracker: Tracker,
        cancelling: bool,
    },
}

/// Everything the interface and its workers share.
pub struct Shared {
    root: SystemRoot,
    cli: Cli,
    authority: Authority,
    wake: super::Waker,
    work: Mutex<Work>,
    found: Mutex<Option<Found>>,
    reboot_required: Mutex<bool>,
    /// Where the last upgrade's bar stopped.
    last_percent: Mutex<f64>,
}

impl Shared {
    pub fn new(root: SystemRoot, cli: Cli, authority: Authority, wake: Sender<Wake>) -> Self {
        Shared {
            root,
            cli,
            authority,
            wake: super::Waker::new(wake),
            work: Mutex::default(),
            found: Mutex::default(),
            reboot_required: Mutex::new(false),
            last_percent: Mutex::new(0.0),
        }
    }

    fn work(&self) -> MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a check or an upgrade is under way (the service does not end then).
    pub fn busy(&self) -> bool {
        !matches!(*self.work(), Work::Idle)
    }

    /// Nobody will answer any more: the upgrade's stdin is closed, so the questions it asks
    /// take their defaults.
    pub fn abandon(&self) {
        if let Work::Upgrading { stdin, .. } = &mut *self.work() {
            drop(stdin.take());
        }
    }

    fn command(&self, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.cli.program);
        cmd.args(&self.cli.globals).args(args);
        cmd
    }

    fn state_name(&self) -> &'static str {
        match &*self.work() {
            Work::Idle => "idle",
            Work::Checking { .. } => "checking",
            Work::Upgrading {
                cancelling: true, ..
            } => "cancelling",
            Work::Upgrading { tracker, .. } if tracker.question.is_some() => "question",
            Work::Upgrading { .. } => "upgrading",
        }
    }
}

type Signals = super::Signals<Shared>;

impl super::Served for Shared {
    const PATH: &'static str = PATH;

    fn keepalive(&self) {
        self.wake.keepalive();
    }
}

impl Signals {
    /// `PropertiesChanged` for the properties a worker changed.
    fn changed(&self, state: bool, progress: bool, target: bool, reboot: bool) {
        let result = zbus::block_on(async {
            let iface = self
                .connection
                .object_server()
                .interface::<_, ReleaseUpgrader>(PATH)
                .await?;
            let emitter = iface.signal_emitter();
            let this = iface.get().await;
            if state {
                this.state_changed(emitter).await?;
            }
            if progress {
                this.progress_changed(emitter).await?;
            }
            if target {
                this.target_release_changed(emitter).await?;
                this.release_notes_changed(emitter).await?;
            }
            if reboot {
                this.reboot_required_changed(emitter).await?;
            }
            zbus::Result::Ok(())
        });
        if let Err(e) = result {
            log::warn!("sending PropertiesChanged: {e}");
        }
    }
}

/// Logs what the command says on stderr, as the service's own log lines.
fn log_stderr(stderr: std::process::ChildStderr, what: &'static str) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log::info!("{what}: {line}");
        }
    });
}

/// Runs `check --notes --json`, then says what it found.
fn check(signals: Arc<Signals>, mut child: std::process::Child) {
    let mut output = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut output);
    }
    let status = child.wait();
    let found = Found::of(&output).unwrap_or_else(|| Found {
        reason: format!(
            "the check ended without an answer ({})",
            match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            }
        ),
        ..Found::default()
    });
    *signals
        .shared
        .found
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(found.clone());
    *signals.shared.work() = Work::Idle;
    signals.send("ReleaseChecked", |e| async move {
        ReleaseUpgrader::release_checked(
            &e,
            found.available,
            &found.codename,
            &found.version,
            &found.notes_uri,
            found.pocket_reachable,
            &found.reason,
        )
        .await
    });
    signals.changed(true, false, true, false);
}

/// Follows the upgrade's events until it ends, then sends `Finished`.
fn follow(signals: Arc<Signals>, mut child: std::process::Child) {
    let shared = signals.shared.clone();
    let stdout = child.stdout.take().expect("piped");
    let mut shown_percent = -1.0;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let (outs, reboot) = {
            let mut work = shared.work();
            let Work::Upgrading { tracker, .. } = &mut *work else {
                break;
            };
            (tracker.line(&line), tracker.reboot_required)
        };
        if reboot {
            *shared
                .reboot_required
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = true;
        }
        for out in outs {
            match out {
                Out::Phase { id, state, ok } => {
                    signals.send("PhaseChanged", |e| async move {
                        ReleaseUpgrader::phase_changed(&e, &id, &state, ok).await
                    });
                    signals.changed(true, false, false, reboot);
                }
                Out::Progress {
                    percent,
                    label,
                    item,
                } => {
                    // The property moves by whole percents; the signal carries each step.
                    let whole = percent.floor();
                    signals.send("ProgressChanged", |e| async move {
                        ReleaseUpgrader::progress_changed_signal(&e, percent, &label, &item).await
                    });
                    if whole != shown_percent {
                        shown_percent = whole;
                        signals.changed(false, true, false, false);
                    }
                }
                Out::Question {
                    id,
                    kind,
                    package,
                    path,
                    text,
                    choices,
                    default,
                } => {
                    let details = if kind == "conffile" {
                        conffile_difference(&shared.root, &path)
                    } else {
                        String::new()
                    };
                    signals.send("Question", |e| async move {
                        ReleaseUpgrader::question(
                            &e, id, &kind, &package, &path, &text, choices, &default, &details,
                        )
                        .await
                    });
                    signals.changed(true, false, false, false);
                }
                Out::Message(text) => {
                    signals.send("Message", |e| async move {
                        ReleaseUpgrader::message(&e, &text).await
                    });
                }
                Out::Plan(plan) => {
                    signals.send("PlanReady", |e| async move {
                        ReleaseUpgrader::plan_ready(
                            &e,
                            plan.upgrades as u32,
                            plan.installs as u32,
                            plan.removals as u32,
                            plan.download_bytes,
                            plan.removed,
                            plan.kept_back,
                        )
                        .await
                    });
                }
            }
        }
    }
    let status = child.wait();
    let (code, message) = {
        let mut work = shared.work();
        let (code, message) = match &*work {
            Work::Upgrading { tracker, .. } => {
                *shared
                    .last_percent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = tracker.percent;
                let code = tracker
                    .exit_code
                    .or_else(|| status.as_ref().ok().and_then(|s| s.code()))
                    .unwrap_or(1);
                (code, tracker.finished_message(code))
            }
            _ => (1, "the upgrade ended".into()),
        };
        *work = Work::Idle;
        (code, message)
    };
    log::info!("the upgrade ended with exit code {code}: {message}");
    signals.send("Finished", |e| async move {
        ReleaseUpgrader::finished(&e, code, &message).await
    });
    signals.changed(true, true, false, true);
}

/// `org.releaseupgrader.ReleaseUpgrader1`.
pub struct ReleaseUpgrader {
    shared: Arc<Shared>,
}

impl ReleaseUpgrader {
    pub fn new(shared: Arc<Shared>) -> Self {
        ReleaseUpgrader { shared }
    }

    async fn authorize(
        &self,
        connection: &zbus::Connection,
        header: &Header<'_>,
        action: Action,
    ) -> Result<(), CallError> {
        self.shared.keepalive();
        Ok(self
            .shared
            .authority
            .check(connection, header, action)
            .await?)
    }

    fn signals(&self, connection: &zbus::Connection) -> Arc<Signals> {
        Signals::new(connection, self.shared.clone())
    }

    fn busy_error(work: &Work) -> Option<CallError> {
        match work {
            Work::Idle => None,
            Work::Checking { .. } => Some(CallError::Busy(
                "a check for a new release is under way; try again when ReleaseChecked comes"
                    .into(),
            )),
            Work::Upgrading { .. } => Some(CallError::Busy(
                "an upgrade is under way (one at a time); wait for Finished".into(),
            )),
        }
    }

    fn spawn(&self, args: &[OsString], stdin: Stdio) -> Result<std::process::Child, CallError> {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = self.shared.command(args);
        // A process group of its own, as a terminal gives a command: `Cancel` interrupts
        // it and what it runs (apt) the way Ctrl-C does.
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            CallError::Failed(format!(
                "cannot run {}: {e}",
                self.shared.cli.program.display()
            ))
        })?;
        log_stderr(child.stderr.take().expect("piped"), "release-upgrader");
        Ok(child)
    }
}

#[zbus::interface(name = "org.releaseupgrader.ReleaseUpgrader1")]
impl ReleaseUpgrader {
    /// Looks for a new release; answered by `ReleaseChecked`.
    async fn check_release(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(), CallError> {
        self.authorize(connection, &header, Action::Check).await?;
        let mut work = self.shared.work();
        if let Some(busy) = Self::busy_error(&work) {
            return Err(busy);
        }
        let args: Vec<OsString> = ["check", "--notes"].map(Into::into).to_vec();
        let child = self.spawn(&args, Stdio::null())?;
        *work = Work::Checking { pid: child.id() };
        drop(work);
        let signals = self.signals(connection);
        std::thread::spawn(move || check(signals, child));
        Ok(())
    }

    /// Upgrades to the new release, as `release-upgrader upgrade` does; followed by
    /// `PhaseChanged`, `ProgressChanged`, `Question`, `Message` and at last `Finished`.
    async fn upgrade(
        &self,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(), CallError> {
        let args = upgrade_args(&options).map_err(CallError::InvalidOption)?;
        self.authorize(connection, &header, Action::Upgrade).await?;
        let mut work = self.shared.work();
        if let Some(busy) = Self::busy_error(&work) {
            return Err(busy);
        }
        let mut child = self.spawn(&args, Stdio::piped())?;
        log::info!(
            "upgrade started for {} (pid {})",
            header.sender().map(|s| s.to_string()).unwrap_or_default(),
            child.id()
        );
        *work = Work::Upgrading {
            pid: child.id(),
            stdin: child.stdin.take(),
            tracker: Tracker::default(),
            cancelling: false,
        };
        drop(work);
        *self
            .shared
            .reboot_required
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = false;
        let signals = self.signals(connection);
        std::thread::spawn(move || follow(signals, child));
        Ok(())
    }

    /// Answers the open question `id` with one of its choices (any line for a question
    /// that offers none).
    async fn answer(
        &self,
        id: u32,
        answer: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), CallError> {
        self.authorize(connection, &header, Action::Upgrade).await?;
        {
            let mut work = self.shared.work();
            let Work::Upgrading { stdin, tracker, .. } = &mut *work else {
                return Err(CallError::NotRunning("no upgrade is under way".into()));
            };
            let open = tracker.question.as_ref().ok_or_else(|| {
                CallError::NotRunning("the upgrade asks nothing at the moment".into())
            })?;
            let line = open
                .line_for(id, &answer)
                .map_err(CallError::InvalidAnswer)?;
            let stdin = stdin
                .as_mut()
                .ok_or_else(|| CallError::Failed("the upgrade's input is closed".into()))?;
            stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
                .map_err(|e| CallError::Failed(format!("answering the upgrade: {e}")))?;
            tracker.question = None;
        }
        self.state_changed(&emitter).await?;
        Ok(())
    }

    /// Cancels the check or the upgrade under way, as Ctrl-C does on a terminal: before
    /// dpkg starts everything is put back (`Finished` with exit code 130); once it has,
    /// the upgrade can only be finished and `TooLate` says so.
    async fn cancel(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), CallError> {
        self.authorize(connection, &header, Action::Upgrade).await?;
        let pid = {
            let mut work = self.shared.work();
            match &mut *work {
                Work::Idle => {
                    return Err(CallError::NotRunning("nothing is under way".into()));
                }
                Work::Checking { pid } => *pid,
                Work::Upgrading {
                    cancelling: true, ..
                } => return Ok(()),
                Work::Upgrading { tracker, .. } if tracker.installing => {
                    return Err(CallError::TooLate(
                        "dpkg is installing the new release: stopping it now would leave the \
                         system half upgraded, so the upgrade goes on to its end"
                            .into(),
                    ));
                }
                Work::Upgrading {
                    pid, cancelling, ..
                } => {
                    *cancelling = true;
                    *pid
                }
            }
        };
        let group = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).map_err(|e| {
            CallError::Failed(format!("cancelling (SIGINT to process group {group}): {e}"))
        })?;
        self.state_changed(&emitter).await?;
        Ok(())
    }

    /// `idle`, `checking`, `upgrading`, `question` (one waits for `Answer`) or
    /// `cancelling`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.shared.state_name().into()
    }

    /// How far the upgrade is (or the last one got), 0–100.
    #[zbus(property)]
    fn progress(&self) -> f64 {
        match &*self.shared.work() {
            Work::Upgrading { tracker, .. } => tracker.percent,
            _ => *self
                .shared
                .last_percent
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// The release the system runs now, as its os-release names it (empty when it cannot
    /// be read).
    #[zbus(property)]
    fn current_release(&self) -> String {
        self.shared
            .root
            .os_release()
            .map(|os| current_release(&os))
            .unwrap_or_default()
    }

    /// The codename of the new release the last check found (empty: none found).
    #[zbus(property)]
    fn target_release(&self) -> String {
        let found = self.shared.found.lock().unwrap_or_else(|e| e.into_inner());
        found
            .as_ref()
            .filter(|f| f.available)
            .map(|f| f.codename.clone())
            .unwrap_or_default()
    }

    /// The new release's notes as text, as the last check read them.
    #[zbus(property)]
    fn release_notes(&self) -> String {
        let found = self.shared.found.lock().unwrap_or_else(|e| e.into_inner());
        found.as_ref().map(|f| f.notes.clone()).unwrap_or_default()
    }

    /// The last upgrade needs a restart to finish (the desktop offers it).
    #[zbus(property)]
    fn reboot_required(&self) -> bool {
        *self
            .shared
            .reboot_required
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// What the last check found: whether a new release is available, its codename,
    /// version and release notes' address, whether its helper pocket could be read, and
    /// why none is available.
    #[zbus(signal)]
    pub async fn release_checked(
        emitter: &SignalEmitter<'_>,
        available: bool,
        codename: &str,
        version: &str,
        release_notes_uri: &str,
        pocket_reachable: bool,
        reason: &str,
    ) -> zbus::Result<()>;

    /// A phase starts or ends (`preflight`, `bootstrap`, `sources`, `update`, `plan`,
    /// `download`, `install`, `cleanup`); `ok` says how an end went.
    #[zbus(signal)]
    pub async fn phase_changed(
        emitter: &SignalEmitter<'_>,
        phase: &str,
        state: &str,
        ok: bool,
    ) -> zbus::Result<()>;

    /// The upgrade moved: the whole run's percent, the task and its item (a package).
    #[zbus(signal, name = "ProgressChanged")]
    pub async fn progress_changed_signal(
        emitter: &SignalEmitter<'_>,
        percent: f64,
        label: &str,
        item: &str,
    ) -> zbus::Result<()>;

    /// dpkg or a package asks: `kind` conffile or debconf; for a conffile its `path` and,
    /// in `details`, the difference between the user's file and the package's. Answered
    /// through `Answer(id, one of choices)`.
    #[zbus(signal)]
    pub async fn question(
        emitter: &SignalEmitter<'_>,
        id: u32,
        kind: &str,
        package: &str,
        path: &str,
        text: &str,
        choices: Vec<String>,
        default: &str,
        details: &str,
    ) -> zbus::Result<()>;

    /// What the upgrade will do, before it asks to start (with the option `confirm`):
    /// packages upgraded, newly installed, removed (never purged), the bytes to download,
    /// and the names of those removed and kept back.
    #[zbus(signal)]
    pub async fn plan_ready(
        emitter: &SignalEmitter<'_>,
        upgrades: u32,
        installs: u32,
        removals: u32,
        download_bytes: u64,
        removed: Vec<String>,
        kept_back: Vec<String>,
    ) -> zbus::Result<()>;

    /// Something for the user to read.
    #[zbus(signal)]
    pub async fn message(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;

    /// The upgrade ended with `exit_code` (docs/protocol.md §7: 0 upgraded, 130
    /// cancelled and put back, …) and what to tell the user.
    #[zbus(signal)]
    pub async fn finished(
        emitter: &SignalEmitter<'_>,
        exit_code: i32,
        message: &str,
    ) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Value as V;

    fn options(pairs: &[(&str, V<'static>)]) -> HashMap<String, OwnedValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.try_to_owned().unwrap()))
            .collect()
    }

    fn strings(args: &[OsString]) -> Vec<&str> {
        args.iter().map(|a| a.to_str().unwrap()).collect()
    }

    #[test]
    fn no_options_upgrade_as_a_desktop_with_questions_asked_over_the_bus() {
        let args = upgrade_args(&HashMap::new()).unwrap();
        assert_eq!(
            strings(&args),
            ["upgrade", "-f", "json", "-y", "-m", "desktop"]
        );
    }

    #[test]
    fn options_become_the_command_lines_flags() {
        let args = upgrade_args(&options(&[
            ("allow-third-party", V::from(true)),
            ("keep-helpers", V::from(false)),
            ("cdrom", V::from("/media/cdrom")),
            ("mode", V::from("server")),
        ]))
        .unwrap();
        assert_eq!(
            strings(&args),
            [
                "upgrade",
                "-f",
                "json",
                "-y",
                "--allow-third-party",
                "--cdrom",
                "/media/cdrom",
                "-m",
                "server"
            ]
        );
    }

    #[test]
    fn a_second_task_of_a_phase_never_moves_the_signalled_percent_back() {
        let mut t = Tracker::default();
        let mut percents = Vec::new();
        for line in [
            r#"{"event":"phase","id":"preflight","state":"start"}"#,
            r#"{"event":"phase","id":"preflight","state":"end","ok":true}"#,
            r#"{"event":"phase","id":"bootstrap","state":"start"}"#,
            r#"{"event":"progress","id":1,"label":"Downloading","unit":"bytes","done":10,"total":10,"percent":null,"finished":true,"ok":true}"#,
            r#"{"event":"progress","id":2,"label":"Unpacking","unit":"bytes","done":0,"total":10,"percent":null,"finished":false}"#,
            r#"{"event":"progress","id":2,"label":"Unpacking","unit":"bytes","done":5,"total":10,"percent":null,"finished":false}"#,
        ] {
            for out in t.line(line) {
                if let Out::Progress { percent, .. } = out {
                    percents.push(percent);
                }
            }
        }
        assert_eq!(
            percents,
            [12.0, 12.0, 12.0],
            "bootstrap's share is 10 after 2"
        );
    }

    #[test]
    fn confirm_leaves_the_yes_to_the_caller() {
        let args = upgrade_args(&options(&[("confirm", V::from(true))])).unwrap();
        assert_eq!(strings(&args), ["upgrade", "-f", "json", "-m", "desktop"]);
        let args = upgrade_args(&options(&[("confirm", V::from(false))])).unwrap();
        assert!(strings(&args).contains(&"-y"));
    }

    #[test]
    fn the_plan_becomes_plan_ready_and_the_start_question_is_a_question() {
        let mut t = Tracker::default();
        let plan = t.line(
            r#"{"event":"upgrade-plan","upgrades":2,"installs":1,"removals":1,"downgrades":0,"download_bytes":4096,"removed":["old"],"kept_back":[]}"#,
        );
        assert!(matches!(&plan[..], [Out::Plan(p)] if p.upgrades == 2 && p.removed == ["old"]));
        // A malformed plan is not signalled with made-up numbers.
        assert!(
            t.line(r#"{"event":"upgrade-plan","upgrades":"two"}"#)
                .is_empty()
        );
        let asked = t.line(
            r#"{"event":"question","kind":"start","text":"Do you want to start the upgrade?","choices":["Y","N"],"default":"N"}"#,
        );
        assert!(matches!(&asked[0], Out::Question { kind, .. } if kind == "start"));
        assert_eq!(
            t.question.as_ref().unwrap().line_for(1, "y").unwrap(),
            "Y\n"
        );
        assert!(!t.installing);
    }

    #[test]
    fn unknown_options_wrong_types_and_bad_values_are_refused() {
        for (pairs, said) in [
            (vec![("purge", V::from(true))], "unknown option \"purge\""),
            (vec![("keep-helpers", V::from("yes"))], "a boolean (b)"),
            (vec![("cdrom", V::from(true))], "a string (s)"),
            (vec![("cdrom", V::from("media"))], "not an absolute path"),
            (
                vec![("mode", V::from("kde"))],
                "not desktop, server or cloud",
            ),
        ] {
            let err = upgrade_args(&options(&pairs)).unwrap_err();
            assert!(err.contains(said), "{err}");
        }
    }

    #[test]
    fn answers_are_one_of_the_choices_of_the_open_question() {
        let open = Open {
            id: 2,
            choices: ["Y", "I", "N", "O"].map(String::from).to_vec(),
        };
        assert_eq!(open.line_for(2, "y").unwrap(), "Y\n");
        assert_eq!(open.line_for(2, " N ").unwrap(), "N\n");
        assert!(
            open.line_for(2, "D")
                .unwrap_err()
                .contains("one of Y, I, N, O")
        );
        assert!(open.line_for(1, "Y").unwrap_err().contains("question 2 is"));
        assert!(open.line_for(2, "Y\nY").unwrap_err().contains("one line"));
        let free = Open {
            id: 3,
            choices: Vec::new(),
        };
        assert_eq!(free.line_for(3, "purple").unwrap(), "purple\n");
        assert!(free.line_for(3, "a\rb").is_err());
    }

    #[test]
    fn the_tracker_follows_phases_progress_questions_and_the_result() {
        let mut t = Tracker::default();
        let mut signalled = Vec::new();
        for line in [
            r#"{"event":"phase","id":"preflight","state":"start"}"#,
            r#"{"event":"phase","id":"preflight","state":"end","ok":true}"#,
            r#"{"event":"phase","id":"download","state":"start"}"#,
            r#"{"event":"progress","id":1,"label":"Downloading","unit":"bytes","done":50,"total":100,"percent":null,"finished":false}"#,
            "not json",
        ] {
            signalled.extend(t.line(line));
        }
        assert!(!t.installing);
        // preflight (2) and half of download (25).
        assert_eq!(t.percent, 2.0 + 12.5);
        assert_eq!(
            signalled[3],
            Out::Progress {
                percent: 14.5,
                label: "Downloading".into(),
                item: String::new()
            }
        );
        t.line(r#"{"event":"phase","id":"download","state":"end","ok":true}"#);
        t.line(r#"{"event":"phase","id":"install","state":"start"}"#);
        assert!(t.installing);
        let asked = t.line(
            r#"{"event":"question","kind":"conffile","path":"/etc/demo.conf","text":"…","choices":["Y","I","N","O"],"default":"N"}"#,
        );
        assert!(matches!(&asked[0], Out::Question { id: 1, path, .. } if path == "/etc/demo.conf"));
        assert_eq!(t.question.as_ref().unwrap().id, 1);
        // Reported afterwards with the answer dpkg took: not a question.
        let told = t.line(
            r#"{"event":"question","kind":"conffile","path":"/etc/x","text":"…","choices":[],"answer":"N"}"#,
        );
        assert!(matches!(&told[0], Out::Message(m) if m.contains("answered N")));
        assert_eq!(t.question.as_ref().unwrap().id, 1);
        // A late progress of an earlier task never moves the bar back.
        let before = t.percent;
        t.line(r#"{"event":"progress","id":2,"label":"x","unit":"packages","done":0,"total":10,"percent":0,"finished":false}"#);
        assert!(t.percent >= before);
        t.line(r#"{"event":"reboot","required":true}"#);
        t.line(r#"{"event":"message","text":"The system is now 2 (beta)."}"#);
        t.line(r#"{"event":"result","exit_code":0}"#);
        assert!(t.reboot_required);
        assert_eq!(t.exit_code, Some(0));
        assert_eq!(t.finished_message(0), "The system is now 2 (beta).");
    }

    #[test]
    fn a_failure_finishes_with_its_message_and_hint() {
        let mut t = Tracker::default();
        t.line(r#"{"event":"error","exit_code":3,"message":"bad signature","causes":[],"hint":"check the keyring"}"#);
        t.line(r#"{"event":"result","exit_code":3}"#);
        assert_eq!(
            t.finished_message(3),
            "bad signature\nhint: check the keyring"
        );
        assert!(
            Tracker::default()
                .finished_message(4)
                .contains("exit code 4")
        );
    }

    #[test]
    fn the_current_release_is_os_releases_pretty_name_else_its_parts() {
        use ru_format::os_release::OsRelease;
        let os = OsRelease::parse(
            "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        );
        assert_eq!(current_release(&os), "Debian GNU/Linux 12 (bookworm)");
        let os = OsRelease::parse("ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n");
        assert_eq!(current_release(&os), "debian 12 (bookworm)");
        let os = OsRelease::parse("ID=debian\nVERSION_CODENAME=trixie\n");
        assert_eq!(current_release(&os), "debian trixie");
    }

    #[test]
    fn the_check_event_gives_the_release_found() {
        let found = Found::of(concat!(
            r#"{"event":"message","text":"x"}"#,
            "\n",
            r#"{"event":"check","available":true,"target":{"dist":"beta","version":"2","release_notes":"http://h/notes"},"pocket":{"uri":"u"},"release_notes":null}"#,
            "\n"
        ))
        .unwrap();
        assert_eq!(
            found,
            Found {
                available: true,
                codename: "beta".into(),
                version: "2".into(),
                notes_uri: "http://h/notes".into(),
                notes: String::new(),
                pocket_reachable: true,
                reason: String::new(),
            }
        );
        let none = Found::of(r#"{"event":"check","available":false,"reason":"no newer release"}"#)
            .unwrap();
        assert!(!none.available && !none.pocket_reachable);
        assert_eq!(none.reason, "no newer release");
        assert_eq!(Found::of("garbage"), None);
    }
}
