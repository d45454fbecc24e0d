//! How the binaries talk: data on stdout (text, or JSON lines with `--json`: the
//! commands' data events and the lifecycle events of [`crate::events`], ending with one
//! `result`), messages and progress on stderr, bars only on a terminal, and nothing but
//! errors with `-q`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{self, ExitCode};
use crate::events::{self, Event, PhaseId, PhaseState};
use crate::progress::{Progress, Unit};

/// Output settings from the global flags.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    pub json: bool,
    /// -1 quiet, 0 normal, 1 verbose, 2+ debug.
    pub verbosity: i8,
}

impl Ui {
    pub fn new(json: bool, quiet: u8, verbose: u8) -> Self {
        Ui {
            json,
            verbosity: (verbose.min(3) as i8) - (quiet.min(1) as i8),
        }
    }

    /// Prints a line of data: `text` normally, `value` as one JSON line with `--json`.
    pub fn data(&self, text: &str, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        if self.json {
            let _ = writeln!(out, "{value}");
        } else {
            let _ = writeln!(out, "{text}");
        }
    }

    /// Writes a lifecycle event with `--json`; nothing otherwise.
    pub fn event(&self, event: &Event) {
        if self.json {
            let _ = writeln!(std::io::stdout().lock(), "{}", event.to_line());
        }
    }

    /// Shows a lifecycle event: the JSON line with `--json`; on a terminal, a heading for a
    /// phase's start, the release notes (paged), messages as notes.
    pub fn show(&self, event: &Event) {
        if self.json {
            return self.event(event);
        }
        match event {
            Event::Phase {
                id,
                state: PhaseState::Start,
                ..
            } => self.note(&format!(
                "[{}/{}] {}",
                id.number(),
                PhaseId::ALL.len(),
                id.title()
            )),
            Event::Message { text } => self.note(text),
            Event::ReleaseNotes { uri, text } => page_notes(uri, text),
            Event::Question(crate::events::Question {
                answer: Some(answer),
                path: Some(path),
                ..
            }) => self.note(&if answer == "N" {
                format!("Kept your version of {path}; the package's new one is {path}.dpkg-dist")
            } else {
                format!("Installed the package's new version of {path}")
            }),
            _ => {}
        }
    }

    /// A message for the user: a `message` event with `--json`, else a note.
    pub fn message(&self, text: &str) {
        if self.json {
            self.event(&Event::Message {
                text: text.to_owned(),
            });
        } else {
            self.note(text);
        }
    }

    /// Prints an informational line on stderr (not with `-q` or `--json`), above the
    /// progress bars when they are drawn.
    pub fn note(&self, text: &str) {
        if self.verbosity >= 0 && !self.json {
            print_above_bars(text);
        }
    }

    /// Prints detail shown only with `-v`.
    pub fn detail(&self, text: &str) {
        if self.verbosity >= 1 && !self.json {
            print_above_bars(text);
        }
    }

    /// Reports a failure with the exit code the error chain calls for (docs/protocol.md
    /// §7); see [`Ui::fail_with`].
    pub fn fail(&self, err: &anyhow::Error) -> ExitCode {
        self.fail_with(err, error::exit_code_of(err))
    }

    /// Reports a failure that ends the process with `code`: the error chain and hint on
    /// stderr, and with `--json` also an `error` event on stdout carrying that same code
    /// (an upgrade rolled back after a usage error exits 5, and says 5). Returns `code`.
    pub fn fail_with(&self, err: &anyhow::Error, code: ExitCode) -> ExitCode {
        print_above_bars(&error::Report(err).to_string());
        if self.json {
            let typed = error::find(err);
            self.event(&Event::Error {
                exit_code: code.code(),
                message: err.to_string(),
                causes: err.chain().skip(1).map(|c| c.to_string()).collect(),
                hint: typed.and_then(|e| e.hint()),
            });
        }
        code
    }

    /// The last line of every `--json` run: the exit code the process returns.
    pub fn result(&self, code: ExitCode) {
        self.event(&Event::Result {
            exit_code: code.code(),
        });
    }

    /// Installs the stderr logger at this verbosity.
    pub fn install_logger(&self) {
        let level = match self.verbosity {
            i8::MIN..=-1 => log::LevelFilter::Error,
            0 => log::LevelFilter::Warn,
            1 => log::LevelFilter::Info,
            _ => log::LevelFilter::Debug,
        };
        // Only the first logger of a process counts; later calls are harmless.
        if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
            log::set_max_level(level);
        }
    }

    /// The progress reporter for this output mode (on a terminal, one set of bars for
    /// the whole process, so that notes are printed above them and none is left behind).
    pub fn progress(&self) -> Arc<dyn Progress> {
        if self.json {
            Arc::new(JsonProgress::default())
        } else if self.verbosity >= 0 && std::io::stderr().is_terminal() {
            BARS.get_or_init(|| Arc::new(BarProgress::default()))
                .clone()
        } else {
            Arc::new(crate::progress::Silent)
        }
    }
}

/// The bars of this process, once a terminal asked for them.
static BARS: OnceLock<Arc<BarProgress>> = OnceLock::new();

/// A line on stderr, above the bars when they are drawn (never through them).
fn print_above_bars(text: &str) {
    match BARS.get() {
        Some(bars) if !bars.bars.lock().expect("bars").is_empty() => {
            let _ = bars.multi.println(text);
        }
        _ => eprintln!("{text}"),
    }
}

/// The release notes: through a pager when both ends are a terminal (bars hidden
/// meanwhile), else printed on stdout.
fn page_notes(uri: &str, text: &str) {
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if terminal && let Some(bars) = BARS.get() {
        bars.hold(true);
    }
    let paged = terminal && run_pager(&format!("Release notes ({uri})\n\n{text}\n"));
    if !paged {
        let _ = writeln!(
            std::io::stdout().lock(),
            "Release notes ({uri}):\n\n{text}\n"
        );
    }
    if terminal && let Some(bars) = BARS.get() {
        bars.hold(false);
    }
}

/// `$PAGER` (through the shell, as it may carry options), else `pager`, else `less`.
fn run_pager(text: &str) -> bool {
    let pager = std::env::var("PAGER").ok().filter(|p| !p.trim().is_empty());
    let candidates: Vec<std::process::Command> = match pager {
        Some(p) => {
            let mut c = std::process::Command::new("/bin/sh");
            c.arg("-c").arg(p);
            vec![c]
        }
        None => ["pager", "less"]
            .iter()
            .map(std::process::Command::new)
            .collect(),
    };
    for mut command in candidates {
        let Ok(mut child) = command.stdin(std::process::Stdio::piped()).spawn() else {
            continue;
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A pager quit early closes the pipe: that is fine.
            let _ = stdin.write_all(text.as_bytes());
        }
        return child.wait().is_ok_and(|s| s.success());
    }
    false
}

struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // Our crates' messages only (`ru_client::…`, the binaries' `release_upgrader…`), not
        // those of the libraries beneath them.
        let target = metadata.target();
        metadata.level() <= self.level
            && (target.starts_with("ru_") || target.starts_with("release_upgrader"))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "note",
            log::Level::Debug | log::Level::Trace => "debug",
        };
        eprintln!("{prefix}: {}", record.args());
    }

    fn flush(&self) {}
}

/// Progress bars on a terminal: bytes for transfers, apt's percent for apt's work; a
/// finished bar is cleared (what it did is said in words), so none is left behind.
#[derive(Default)]
struct BarProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<u64, (ProgressBar, String)>>,
}

impl Progress for BarProgress {
    fn begin(&self, id: u64, label: &str, total: Option<u64>) {
        self.begin_in(id, label, total, Unit::Bytes);
    }

    fn begin_in(&self, id: u64, label: &str, total: Option<u64>, unit: Unit) {
        let style = |template: &str| {
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> ")
        };
        let bar = match (unit, total) {
            (Unit::Bytes, Some(total)) => ProgressBar::new(total).with_style(style(
                "[{bar:30}] {percent:>3}% {bytes:>9}/{total_bytes:9} {bytes_per_sec:>11}  {wide_msg}",
            )),
            (Unit::Bytes, None) => {
                ProgressBar::new_spinner().with_style(style("{spinner} {bytes:>9}  {wide_msg}"))
            }
            // apt reports a percent of its whole run: the bar counts tenths of a percent.
            (Unit::Packages, _) => {
                ProgressBar::new(1000).with_style(style("[{bar:30}] {percent:>3}%  {wide_msg}"))
            }
        };
        let bar = self.multi.add(bar);
        bar.set_message(label.to_owned());
        self.bars
            .lock()
            .expect("bars")
            .insert(id, (bar, label.to_owned()));
    }

    fn advance(&self, id: u64, bytes: u64) {
        if let Some((bar, _)) = self.bars.lock().expect("bars").get(&id) {
            bar.inc(bytes);
        }
    }

    fn at(&self, id: u64, _done: u64, percent: f64, item: &str) {
        if let Some((bar, label)) = self.bars.lock().expect("bars").get(&id) {
            bar.set_position((percent * 10.0).clamp(0.0, 1000.0) as u64);
            bar.set_message(if item.is_empty() {
                label.clone()
            } else {
                format!("{label}: {item}")
            });
        }
    }

    fn reset(&self, id: u64, position: u64) {
        if let Some((bar, _)) = self.bars.lock().expect("bars").get(&id) {
            bar.set_position(position);
        }
    }

    fn finish(&self, id: u64, _ok: bool) {
        if let Some((bar, _)) = self.bars.lock().expect("bars").remove(&id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    fn step(&self, text: &str) {
        print_above_bars(text);
    }

    fn hold(&self, held: bool) {
        // Cleared first: a hidden target leaves the last frame on the screen.
        if held {
            let _ = self.multi.clear();
            self.multi.set_draw_target(ProgressDrawTarget::hidden());
        } else {
            self.multi.set_draw_target(ProgressDrawTarget::stderr());
        }
    }
}

/// Progress as `progress` events on stdout, at most every 200 ms per task (and always
/// its first and last).
#[derive(Default)]
struct JsonProgress {
    tasks: Mutex<HashMap<u64, JsonTask>>,
}

struct JsonTask {
    label: String,
    unit: Unit,
    total: Option<u64>,
    done: u64,
    /// As the worker reports it (apt), else from the counts.
    percent: Option<f64>,
    item: Option<String>,
    last: Instant,
}

impl JsonTask {
    fn event(&self, id: u64, finished: Option<bool>) -> Event {
        Event::Progress {
            id,
            label: self.label.clone(),
            unit: self.unit.name().to_owned(),
            done: self.done,
            total: self.total,
            percent: self
                .percent
                .or_else(|| events::percent(self.done, self.total)),
            item: self.item.clone(),
            finished: finished.is_some(),
            ok: finished,
        }
    }

    /// The event, when the last was long enough ago.
    fn due(&mut self, id: u64) -> Option<Event> {
        (self.last.elapsed() >= Duration::from_millis(200)).then(|| {
            self.last = Instant::now();
            self.event(id, None)
        })
    }
}

fn emit(event: &Event) {
    let _ = writeln!(std::io::stdout().lock(), "{}", event.to_line());
}

impl Progress for JsonProgress {
    fn begin(&self, id: u64, label: &str, total: Option<u64>) {
        self.begin_in(id, label, total, Unit::Bytes);
    }

    fn begin_in(&self, id: u64, label: &str, total: Option<u64>, unit: Unit) {
        let task = JsonTask {
            label: label.to_owned(),
            unit,
            total,
            done: 0,
            percent: None,
            item: None,
            last: Instant::now(),
        };
        emit(&task.event(id, None));
        self.tasks.lock().expect("tasks").insert(id, task);
    }

    fn advance(&self, id: u64, bytes: u64) {
        let mut tasks = self.tasks.lock().expect("tasks");
        if let Some(task) = tasks.get_mut(&id) {
            task.done += bytes;
            if let Some(event) = task.due(id) {
                emit(&event);
            }
        }
    }

    fn at(&self, id: u64, done: u64, percent: f64, item: &str) {
        let mut tasks = self.tasks.lock().expect("tasks");
        if let Some(task) = tasks.get_mut(&id) {
            task.done = done;
            task.percent = Some(percent.clamp(0.0, 100.0));
            task.item = (!item.is_empty()).then(|| item.to_owned());
            if let Some(event) = task.due(id) {
                emit(&event);
            }
        }
    }

    fn reset(&self, id: u64, position: u64) {
        if let Some(task) = self.tasks.lock().expect("tasks").get_mut(&id) {
            task.done = position;
        }
    }

    fn finish(&self, id: u64, ok: bool) {
        if let Some(task) = self.tasks.lock().expect("tasks").remove(&id) {
            emit(&task.event(id, Some(ok)));
        }
    }

    fn step(&self, text: &str) {
        emit(&Event::Message {
            text: text.to_owned(),
        });
    }
}

/// Converts an exit code for `main`.
pub fn exit(code: ExitCode) -> std::process::ExitCode {
    std::process::ExitCode::from(code.code())
}
