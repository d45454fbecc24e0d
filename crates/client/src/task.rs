//! One way to run a program and wait for it (after bootc's `Task`).
//!
//! Every program the tool and the publisher run — dpkg, cp, apt for a query, dpkg-deb
//! in the demo — is built as a [`Task`]: the command line is logged at debug level
//! before it runs, and a program that fails becomes [`Error::Program`], carrying the
//! command line, how it ended and the tail of what it wrote to stderr, so the user reads
//! why, not only that, it failed.
//!
//! [`Task::new`] starts the program through the guard of [`crate::upgrade::children`]
//! (it ends with the tool and carries the run's marker); [`Task::plain`] starts it
//! directly, for the publisher and the demo, which run on a build machine. Programs that
//! talk to the terminal through a pseudo-terminal (apt, dpkg in `term::run`) are built
//! with [`crate::upgrade::children::command`], this type's constructor, and keep their
//! own handling; a program that replaces this process (`exec`) is not waited for.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};

use crate::error::Error;
use crate::upgrade::children;

/// How much of a failed program's stderr an error carries (its end: the reason is
/// usually the last thing a program says).
const STDERR_TAIL_LINES: usize = 20;
const STDERR_TAIL_BYTES: usize = 4096;

/// A program to run and wait for.
#[derive(Debug)]
pub struct Task {
    cmd: Command,
}

impl Task {
    /// `program`, started through the guard with this run's marker.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Task {
            cmd: children::command(program),
        }
    }

    /// `program`, started directly (no guard, no marker): for the publisher and the demo.
    pub fn plain(program: impl AsRef<OsStr>) -> Self {
        Task {
            cmd: Command::new(program),
        }
    }

    /// A command built elsewhere (e.g. `Apt::command`), made a guarded one.
    pub fn from_command(cmd: Command) -> Self {
        Task {
            cmd: children::guard(cmd),
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cmd.current_dir(dir);
        self
    }

    /// What the program reads (default: nothing, except for [`Task::status`] and
    /// [`Task::run_attached`], which give it this process's stdin).
    pub fn stdin(&mut self, stdin: Stdio) -> &mut Self {
        self.cmd.stdin(stdin);
        self
    }

    /// The program (not the guard in front of it), for messages.
    pub fn program(&self) -> String {
        children::program_of(&self.cmd)
            .to_string_lossy()
            .into_owned()
    }

    /// The command line as one would type it, for logs.
    pub fn command_line(&self) -> String {
        children::command_line(&self.cmd)
    }

    /// Runs it with its stdout captured; fails unless it succeeds. Returns its stdout.
    pub fn output(&mut self) -> Result<Vec<u8>, Error> {
        let out = self.output_unchecked()?;
        self.check(out.status, &out.stderr)?;
        Ok(out.stdout)
    }

    /// Runs it with stdout and stderr captured, whatever its exit status (for callers
    /// that read a failure's output themselves).
    pub fn output_unchecked(&mut self) -> Result<Output, Error> {
        self.log();
        self.cmd.output().map_err(|e| Error::io(self.program(), e))
    }

    /// Runs it with stdout left to this process's and stderr captured; fails unless it
    /// succeeds.
    pub fn run(&mut self) -> Result<(), Error> {
        self.log();
        let out = self
            .cmd
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::io(self.program(), e))?;
        self.check(out.status, &out.stderr)
    }

    /// Runs it attached to this process's terminal (stdin, stdout and stderr are ours)
    /// and returns how it ended: for programs whose output the user watches.
    pub fn status(&mut self) -> Result<ExitStatus, Error> {
        self.log();
        self.cmd.status().map_err(|e| Error::io(self.program(), e))
    }

    /// Like [`Task::status`], failing unless it succeeds (the error has no stderr: the
    /// user saw it).
    pub fn run_attached(&mut self) -> Result<(), Error> {
        let status = self.status()?;
        self.check(status, &[])
    }

    fn log(&self) {
        log::debug!("running {}", self.command_line());
    }

    fn check(&self, status: ExitStatus, stderr: &[u8]) -> Result<(), Error> {
        if status.success() {
            return Ok(());
        }
        Err(Error::Program {
            program: self.program(),
            command: self.command_line(),
            status,
            stderr_tail: tail(stderr),
        })
    }
}

/// The last lines of `stderr`, at most [`STDERR_TAIL_LINES`] and about
/// [`STDERR_TAIL_BYTES`].
fn tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    let text = String::from_utf8_lossy(&stderr[start..]);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let keep = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[keep..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_returns_stdout_of_a_program_that_succeeds() {
        let out = Task::plain("sh")
            .args(["-c", "echo hello"])
            .output()
            .unwrap();
        assert_eq!(out, b"hello\n");
    }

    #[test]
    fn a_failure_carries_the_command_line_status_and_stderr_tail() {
        let script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3";
        let err = Task::plain("sh").args(["-c", script]).output().unwrap_err();
        let Error::Program {
            program,
            command,
            status,
            stderr_tail,
        } = &err
        else {
            panic!("not a program failure: {err:?}");
        };
        assert_eq!(program, "sh");
        assert!(command.starts_with("sh -c 'for i"), "{command}");
        assert_eq!(status.code(), Some(3));
        assert!(stderr_tail.ends_with("line30"), "{stderr_tail}");
        assert!(stderr_tail.starts_with("line11\n"), "{stderr_tail}");
        let text = err.to_string();
        assert!(
            text.contains("exit status: 3") && text.contains("line30"),
            "{text}"
        );
    }

    #[test]
    fn run_captures_stderr_into_the_error() {
        let err = Task::plain("sh")
            .args(["-c", "echo the reason >&2; exit 1"])
            .run()
            .unwrap_err();
        assert!(err.to_string().ends_with(": the reason"), "{err}");
    }

    #[test]
    fn a_program_that_cannot_start_is_an_io_error_naming_it() {
        let err = Task::plain("/nonexistent/program").output().unwrap_err();
        assert!(
            matches!(err, Error::Format(ru_format::Error::Io { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("/nonexistent/program"), "{err}");
    }

    #[test]
    fn output_unchecked_hands_back_a_failure_and_status_reports_it() {
        let out = Task::plain("sh")
            .args(["-c", "echo out; exit 4"])
            .output_unchecked()
            .unwrap();
        assert_eq!(
            (out.status.code(), &out.stdout[..]),
            (Some(4), &b"out\n"[..])
        );
        let status = Task::plain("sh").args(["-c", "exit 5"]).status().unwrap();
        assert_eq!(status.code(), Some(5));
        assert!(Task::plain("true").run_attached().is_ok());
        assert!(Task::plain("false").run_attached().is_err());
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\n"), "a\nb");
        assert_eq!(tail(b""), "");
        let many: String = (1..=25).map(|i| format!("{i}\n")).collect();
        assert_eq!(tail(many.as_bytes()).lines().next(), Some("6"));
    }
}
