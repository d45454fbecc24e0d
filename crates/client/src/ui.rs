//! How the binaries talk: data on stdout (text, or JSON lines with `--json`), messages
//! and progress on stderr, bars only on a terminal, and nothing but errors with `-q`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::error::{self, ExitCode};
use crate::progress::Progress;

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

    /// Prints an informational line on stderr (not with `-q` or `--json`).
    pub fn note(&self, text: &str) {
        if self.verbosity >= 0 && !self.json {
            eprintln!("{text}");
        }
    }

    /// Prints detail shown only with `-v`.
    pub fn detail(&self, text: &str) {
        if self.verbosity >= 1 && !self.json {
            eprintln!("{text}");
        }
    }

    /// Reports a failure: the error chain and hint on stderr, and with `--json` also an
    /// `error` event on stdout. Returns the exit code for it.
    pub fn fail(&self, err: &anyhow::Error) -> ExitCode {
        let code = error::exit_code_of(err);
        eprintln!("{}", error::Report(err));
        if self.json {
            let typed = error::find(err);
            let causes: Vec<String> = err.chain().skip(1).map(|c| c.to_string()).collect();
            self.data(
                "",
                json!({
                    "event": "error",
                    "exit_code": code.code(),
                    "message": err.to_string(),
                    "causes": causes,
                    "hint": typed.and_then(|e| e.hint()),
                }),
            );
        }
        code
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

    /// The progress reporter for this output mode.
    pub fn progress(&self) -> std::sync::Arc<dyn Progress> {
        if self.json {
            std::sync::Arc::new(JsonProgress::default())
        } else if self.verbosity >= 0 && std::io::stderr().is_terminal() {
            std::sync::Arc::new(BarProgress::default())
        } else {
            std::sync::Arc::new(crate::progress::Silent)
        }
    }
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

/// Progress bars on a terminal.
#[derive(Default)]
struct BarProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<u64, ProgressBar>>,
}

impl Progress for BarProgress {
    fn begin(&self, id: u64, label: &str, total: Option<u64>) {
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{msg:30!} [{bar:30}] {bytes:>9}/{total_bytes:9} {bytes_per_sec:>11}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let bar = self.multi.add(bar);
        bar.set_message(label.to_owned());
        self.bars.lock().expect("bars").insert(id, bar);
    }

    fn advance(&self, id: u64, bytes: u64) {
        if let Some(bar) = self.bars.lock().expect("bars").get(&id) {
            bar.inc(bytes);
        }
    }

    fn reset(&self, id: u64, position: u64) {
        if let Some(bar) = self.bars.lock().expect("bars").get(&id) {
            bar.set_position(position);
        }
    }

    fn finish(&self, id: u64, ok: bool) {
        if let Some(bar) = self.bars.lock().expect("bars").remove(&id) {
            if ok {
                bar.finish();
            } else {
                bar.abandon();
            }
        }
    }

    fn step(&self, text: &str) {
        let _ = self.multi.println(text);
    }

    fn hold(&self, held: bool) {
        if held {
            let _ = self.multi.clear();
            self.multi.set_draw_target(ProgressDrawTarget::hidden());
        } else {
            self.multi.set_draw_target(ProgressDrawTarget::stderr());
        }
    }
}

/// Progress as JSON lines on stdout, at most every 200 ms per task.
#[derive(Default)]
struct JsonProgress {
    tasks: Mutex<HashMap<u64, JsonTask>>,
}

struct JsonTask {
    label: String,
    total: Option<u64>,
    done: u64,
    last: Instant,
}

impl JsonProgress {
    fn emit(value: serde_json::Value) {
        let _ = writeln!(std::io::stdout().lock(), "{value}");
    }
}

impl Progress for JsonProgress {
    fn begin(&self, id: u64, label: &str, total: Option<u64>) {
        let task = JsonTask {
            label: label.to_owned(),
            total,
            done: 0,
            last: Instant::now(),
        };
        self.tasks.lock().expect("tasks").insert(id, task);
        Self::emit(
            json!({"event": "progress", "id": id, "label": label, "done": 0, "total": total}),
        );
    }

    fn advance(&self, id: u64, bytes: u64) {
        let mut tasks = self.tasks.lock().expect("tasks");
        if let Some(task) = tasks.get_mut(&id) {
            task.done += bytes;
            if task.last.elapsed() >= Duration::from_millis(200) {
                task.last = Instant::now();
                Self::emit(json!({"event": "progress", "id": id, "label": task.label,
                    "done": task.done, "total": task.total}));
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
            Self::emit(json!({"event": "progress", "id": id, "label": task.label,
                "done": task.done, "total": task.total, "finished": true, "ok": ok}));
        }
    }

    fn step(&self, text: &str) {
        Self::emit(json!({"event": "step", "text": text}));
    }
}

/// Converts an exit code for `main`.
pub fn exit(code: ExitCode) -> std::process::ExitCode {
    std::process::ExitCode::from(code.code())
}
