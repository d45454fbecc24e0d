//! The programs the tool starts (apt, dpkg, …) end with it, and what an earlier run
//! left behind is recognised as ours.
//!
//! Killed on its own (`kill -9`, the OOM killer), the tool used to leave its `apt-get`
//! running: apt finished dpkg's work, then blocked forever writing its status pipe and
//! held dpkg's `lock-frontend`, so the next run waited out its lock timeout and gave up
//! (issue #11, finding 8). Three things prevent that now:
//!
//! - Every descriptor the tool creates is close-on-exec (std does that for files and
//!   pipes; `term` hands apt its status pipe as fd 3 only), so a child never holds the
//!   read end of its own output and sees EPIPE once the tool is gone.
//! - Every child is started through a *guard*: this very binary (`/proc/self/exe`, the
//!   file we run even if the upgrade replaced it on disk) started as [`GUARD_ARG0`],
//!   which runs the program as its own child and stops it when the tool dies ([`guard_main`]).
//!   The guard learns of that death from `PR_SET_PDEATHSIG(SIGTERM)`, which it sets on
//!   itself. Setting that on apt directly does not hold: apt-get switches its effective
//!   uid to `_apt` and back (to check what its download methods may read), and the kernel
//!   clears the parent-death signal on every such change (seen with strace on apt 2.6).
//!   The guard never changes its credentials, needs no `unsafe` code between fork and
//!   exec, and checks `getppid` after `prctl`, so a tool that died before that is
//!   noticed. It stops the program with SIGTERM, then SIGKILL after [`CHILD_GRACE`].
//!   For dpkg this is safe: apt runs dpkg in a session of its own, so dpkg either
//!   finishes its run or dies when its output goes nowhere, and a dpkg stopped at any
//!   point is what the resume path (`dpkg --configure -a`, `apt-get -f install`, the
//!   upgrade again) is built and tested for.
//! - Every child carries [`RUN_ENV`], naming this run (pid namespace, pid, start time).
//!   apt passes it to dpkg, dpkg to the maintainer scripts. A later run that finds
//!   dpkg's lock held by a process carrying the name of a run that is over knows it for
//!   our own leftover and stops it ([`orphan`], [`terminate`]); any other holder is
//!   waited for, never signalled.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that started the guard ends, not the
//! process. Every child of the tool is started and waited for on the same thread
//! (`term::run`, `Command::output`, `Command::status`): a thread that started a child
//! outlives it.
//!
//! The core helper (`release-upgrader-core`, the target release's upgrader run through
//! its loader wrapper) is started by a script, which cannot pass `argv[0]` on, and its
//! `/proc/self/exe` is the bundled loader: it starts its guards through its entry point
//! and marks them with [`GUARD_ENV`] (the parent's pid, as the first argument says) instead.
//!
//! Only the `release-upgrader` binary can be a guard: it calls [`guard_entry`] first
//! thing and so declares itself one. Elsewhere (the library's unit tests, the publisher)
//! children start directly, with the marker but without the guard.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use crate::error::Error;

/// The environment variable naming the run of release-upgrader a process descends from.
pub const RUN_ENV: &str = "RELEASE_UPGRADER_RUN";

/// One run of the tool: its process, told apart from a later process with the same pid
/// by its start time, in a pid namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunId {
    /// The inode of the pid namespace the pid is valid in.
    pub pid_ns: u64,
    pub pid: i32,
    /// Start time in clock ticks after boot (`/proc/PID/stat`, field 22).
    pub start: u64,
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.pid_ns, self.pid, self.start)
    }
}

impl std::str::FromStr for RunId {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let mut parts = text.split(':');
        let run = RunId {
            pid_ns: parts.next().ok_or(())?.parse().map_err(drop)?,
            pid: parts.next().ok_or(())?.parse().map_err(drop)?,
            start: parts.next().ok_or(())?.parse().map_err(drop)?,
        };
        if parts.next().is_some() || run.pid <= 0 {
            return Err(());
        }
        Ok(run)
    }
}

impl RunId {
    /// This process, or `None` when `/proc` cannot tell (then children are not marked,
    /// and no leftover is recognised as ours).
    pub fn current() -> Option<RunId> {
        static CURRENT: OnceLock<Option<RunId>> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id() as i32;
            Some(RunId {
                pid_ns: pid_namespace()?,
                pid,
                start: stat(pid)?.start,
            })
        })
    }
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid` reads `pid:[N]`).
fn pid_namespace() -> Option<u64> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_str()?;
    text.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// What the tool needs from `/proc/PID/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (exited, not yet reaped), …
    pub state: char,
    pub ppid: i32,
    pub start: u64,
}

impl ProcStat {
    /// Whether the process still runs: it exists and is not a zombie. A zombie has
    /// closed its files and released its locks.
    pub fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses and may
    /// hold spaces and parentheses itself: the fields that follow start after the last `)`.
    pub fn parse(text: &str) -> Option<ProcStat> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
        Some(ProcStat {
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
        })
    }
}

/// `/proc/PID/stat` of a process, if it exists.
pub fn stat(pid: i32) -> Option<ProcStat> {
    ProcStat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The value of [`RUN_ENV`] in a process environment (`/proc/PID/environ`: NUL-separated
/// `KEY=value` entries).
pub fn run_in_environ(environ: &[u8]) -> Option<RunId> {
    let prefix = format!("{RUN_ENV}=");
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
}

/// Whether a process descending from `run` is a leftover of ours, as seen by the run
/// `ours`: it is when `run` is another run, in our pid namespace, whose process is gone
/// (no process with its pid and start time, or only its zombie). `None` means it is
/// not ours to stop: no marker, our own run, a live run, or one we cannot see.
pub fn leftover_of(
    run: Option<RunId>,
    ours: RunId,
    stat_of: impl Fn(i32) -> Option<ProcStat>,
) -> Option<RunId> {
    let run = run?;
    if run == ours || run.pid_ns != ours.pid_ns {
        return None;
    }
    let alive = stat_of(run.pid).is_some_and(|s| s.start == run.start && s.running());
    (!alive).then_some(run)
}

/// A process left over from an earlier run of the tool, whose run is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub pid: i32,
    /// Its start time, to make sure a signal reaches this process and no later one.
    pub start: u64,
    /// The run it descends from.
    pub run: RunId,
}

/// Whether process `pid` is a leftover of an earlier run of ours (see [`leftover_of`]).
/// A process whose environment cannot be read (another user's, or gone) is not.
pub fn orphan(pid: i32) -> Option<Orphan> {
    let ours = RunId::current()?;
    let before = stat(pid)?;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let run = leftover_of(run_in_environ(&environ), ours, stat)?;
    // The environment read belongs to the process whose start time was read before it.
    let after = stat(pid)?;
    (after.start == before.start && after.running()).then_some(Orphan {
        pid,
        start: before.start,
        run,
    })
}

/// How a leftover ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It was gone by the time it was to be stopped.
    AlreadyGone,
    /// It stopped on SIGTERM.
    Terminated,
    /// It ignored SIGTERM for `grace` and was killed.
    Killed,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ended::AlreadyGone => "it had already ended",
            Ended::Terminated => "stopped it (SIGTERM)",
            Ended::Killed => "killed it (SIGKILL after SIGTERM was ignored)",
        })
    }
}

/// Stops a leftover: SIGTERM, up to `grace` for it to end, then SIGKILL. Before each
/// signal its start time is checked again, so a new process that took its pid is never
/// signalled. (A pidfd would close the remaining microseconds, but `pidfd_open` needs
/// Linux 5.3 and the systems being upgraded may run older kernels.)
pub fn terminate(orphan: &Orphan, grace: Duration) -> Result<Ended, Error> {
    let same = || stat(orphan.pid).is_some_and(|s| s.start == orphan.start && s.running());
    let pid = nix::unistd::Pid::from_raw(orphan.pid);
    let wait_gone = |limit: Duration| {
        let started = Instant::now();
        while same() {
            if started.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    let signal = |sig: Signal| {
        if !same() {
            return Ok(false);
        }
        match nix::sys::signal::kill(pid, sig) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::ESRCH) => Ok(false),
            Err(e) => Err(Error::io(
                format!("/proc/{}", orphan.pid),
                std::io::Error::from(e),
            )),
        }
    };
    if !signal(Signal::SIGTERM)? {
        return Ok(Ended::AlreadyGone);
    }
    if wait_gone(grace) {
        return Ok(Ended::Terminated);
    }
    if signal(Signal::SIGKILL)? && !wait_gone(Duration::from_secs(10)) {
        return Err(Error::io(
            format!("/proc/{}", orphan.pid),
            std::io::Error::other("still running 10 s after SIGKILL"),
        ));
    }
    Ok(Ended::Killed)
}

/// Set on a guarded command whose stdin is a pty of the tool's ([`super::pty`]): the
/// guard starts a session of its own with that pty as its controlling terminal, so that
/// what runs there has a terminal as a terminal program expects (Ctrl-C at a dpkg
/// prompt interrupts dpkg, a pager opens `/dev/tty`). Not passed on to the program.
pub const SESSION_ENV: &str = "RELEASE_UPGRADER_GUARD_SESSION";

/// `argv[0]` of this binary started as a guard: `GUARD_ARG0 PARENT_PID PROGRAM ARGS…`.
pub const GUARD_ARG0: &str = "release-upgrader-guard";

/// How long a child gets to stop on SIGTERM once the tool is gone, before SIGKILL.
pub const CHILD_GRACE: Duration = Duration::from_secs(5);

/// Where the guard is: this process's own executable, once [`guard_entry`] declared it one.
const GUARD_EXE: &str = "/proc/self/exe";

/// Set on every guard to the pid of the tool that started it (its first argument too):
/// how the core helper, started through a script, recognises that it is a guard.
pub const GUARD_ENV: &str = "RELEASE_UPGRADER_GUARD";

/// What starts this binary as a guard: [`GUARD_EXE`], or the core helper's entry point
/// when this process is the core (its `/proc/self/exe` is the bundled loader).
fn guard_program() -> &'static OsStr {
    static PROGRAM: OnceLock<OsString> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        crate::helpers::env::running_core()
            .map_or_else(|| OsString::from(GUARD_EXE), |entry| entry.into())
    })
}

/// Whether this process was started as a guard: by `argv[0]`, or by [`GUARD_ENV`] naming
/// the same parent as the first argument.
fn started_as_guard(arg0: Option<&OsStr>, first: Option<&OsStr>, env: Option<&OsStr>) -> bool {
    arg0 == Some(OsStr::new(GUARD_ARG0)) || env.is_some_and(|env| Some(env) == first)
}

static GUARD_AVAILABLE: AtomicBool = AtomicBool::new(false);

/// First thing in `main` of the `release-upgrader` binary: runs the guard when started
/// as one (returns its exit code), otherwise records that this binary can be one.
pub fn guard_entry() -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os();
    let arg0 = args.next();
    let rest: Vec<OsString> = args.collect();
    let env = std::env::var_os(GUARD_ENV);
    if !started_as_guard(
        arg0.as_deref(),
        rest.first().map(OsString::as_os_str),
        env.as_deref(),
    ) {
        GUARD_AVAILABLE.store(true, Ordering::Relaxed);
        return None;
    }
    Some(guard_main(rest))
}

/// A command for `program` that ends with the tool and carries the name of this run.
/// Set stdio and the like after this (they are not carried over by [`guard`]).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = if GUARD_AVAILABLE.load(Ordering::Relaxed) {
        let pid = std::process::id().to_string();
        let mut cmd = Command::new(guard_program());
        cmd.arg0(GUARD_ARG0)
            .env(GUARD_ENV, &pid)
            .arg(pid)
            .arg(program);
        cmd
    } else {
        Command::new(program)
    };
    if let Some(run) = RunId::current() {
        cmd.env(RUN_ENV, run.to_string());
    }
    cmd
}

/// The program `cmd` runs, through its guard if it has one: for messages.
pub fn program_of(cmd: &Command) -> OsString {
    if cmd.get_program() == guard_program() {
        // GUARD_ARG0 PARENT_PID PROGRAM …: arguments 0 and 1 are the pid and the program.
        if let Some(program) = cmd.get_args().nth(1) {
            return program.to_owned();
        }
    }
    cmd.get_program().to_owned()
}

/// What `cmd` runs, as one would type it (the guard in front left out), for logs.
pub fn command_line(cmd: &Command) -> String {
    let mut words: Vec<&OsStr> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .collect();
    if cmd.get_program() == guard_program() && words.len() > 2 {
        words.drain(..2); // the guard and the pid of its parent
    }
    let quoted = |word: &OsStr| {
        let word = word.to_string_lossy();
        let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
        if !word.is_empty() && word.chars().all(plain) {
            word.into_owned()
        } else {
            format!("'{}'", word.replace('\'', "'\\''"))
        }
    };
    words.into_iter().map(quoted).collect::<Vec<_>>().join(" ")
}

/// `cmd` made a guarded one (see [`command`]): the same program, arguments, environment
/// changes and working directory. A guarded command is returned as it is.
pub fn guard(cmd: Command) -> Command {
    let marked = RunId::current().is_none_or(|run| {
        cmd.get_envs()
            .any(|(k, v)| k == RUN_ENV && v == Some(OsStr::new(&run.to_string())))
    });
    let guarded = !GUARD_AVAILABLE.load(Ordering::Relaxed) || cmd.get_program() == guard_program();
    if marked && guarded {
        return cmd;
    }
    let mut new = command(cmd.get_program());
    new.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => new.env(key, value),
            None => new.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        new.current_dir(dir);
    }
    new
}

/// Exit codes of the guard itself.
const GUARD_USAGE: u8 = 2;
const GUARD_PARENT_GONE: u8 = 125;
const GUARD_CANNOT_RUN: u8 = 126;
const GUARD_NOT_FOUND: u8 = 127;

/// The guard: `PARENT_PID PROGRAM ARGS…`. Runs PROGRAM as its child (stdin, stdout,
/// stderr, fd 3 and the environment passed on as they came) and ends as it ends; stops
/// it when the tool that started the guard (PARENT_PID) dies.
///
/// SIGINT, SIGQUIT and SIGHUP are held back, not acted on: from a terminal they reach the
/// program too (same process group), which decides; the tool decides what to do with a
/// program that stopped. SIGTERM (the parent-death signal, or anyone's) stops the program.
pub fn guard_main(args: Vec<OsString>) -> std::process::ExitCode {
    use std::process::ExitCode;
    let [parent, program, rest @ ..] = args.as_slice() else {
        eprintln!("{GUARD_ARG0}: usage: {GUARD_ARG0} PARENT_PID PROGRAM [ARGS…]");
        return ExitCode::from(GUARD_USAGE);
    };
    let Some(parent) = parent.to_str().and_then(|p| p.parse::<i32>().ok()) else {
        eprintln!(
            "{GUARD_ARG0}: not a process id: {}",
            parent.to_string_lossy()
        );
        return ExitCode::from(GUARD_USAGE);
    };
    let mut waited = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
    ] {
        waited.add(signal);
    }
    // Blocked before anything can send them (one thread: the mask is the process's);
    // std resets the mask in the program it starts.
    if let Err(e) = waited.thread_block() {
        eprintln!("{GUARD_ARG0}: blocking signals: {e}");
        return ExitCode::from(GUARD_CANNOT_RUN);
    }
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
        eprintln!("{GUARD_ARG0}: PR_SET_PDEATHSIG: {e}");
        return ExitCode::from(GUARD_CANNOT_RUN);
    }
    // The tool may have died before prctl: then no signal comes, and the program must
    // not start on its own.
    if nix::unistd::getppid().as_raw() != parent {
        return ExitCode::from(GUARD_PARENT_GONE);
    }
    let mut command = Command::new(program);
    command.args(rest).env_remove(GUARD_ENV);
    if std::env::var_os(SESSION_ENV).is_some() {
        command.env_remove(SESSION_ENV);
        take_terminal();
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "{GUARD_ARG0}: cannot run {}: {e}",
                program.to_string_lossy()
            );
            return ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                GUARD_NOT_FOUND
            } else {
                GUARD_CANNOT_RUN
            });
        }
    };
    loop {
        // A SIGCHLD that came before the first wait is pending, not lost.
        match child.try_wait() {
            Ok(Some(status)) => return mirror(status, &waited),
            Ok(None) => {}
            Err(e) => {
                eprintln!(
                    "{GUARD_ARG0}: waiting for {}: {e}",
                    program.to_string_lossy()
                );
                return ExitCode::from(GUARD_CANNOT_RUN);
            }
        }
        match waited.wait() {
            Ok(Signal::SIGTERM) => {
                stop(&mut child, CHILD_GRACE);
                return ExitCode::from(128 + Signal::SIGTERM as u8);
            }
            // SIGCHLD: look again; the terminal's signals: the program has them too.
            Ok(_) => {}
            Err(e) => {
                eprintln!("{GUARD_ARG0}: waiting for signals: {e}");
                stop(&mut child, CHILD_GRACE);
                return ExitCode::from(GUARD_CANNOT_RUN);
            }
        }
    }
}

/// Makes the terminal on stdin the controlling terminal of a new session led by the
/// guard. Opening a terminal without `O_NOCTTY` (std never passes it) in a session that
/// has none makes it the session's. Best effort: a program without one still runs.
fn take_terminal() {
    if nix::unistd::setsid().is_ok() {
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/self/fd/0");
    }
}

/// SIGTERM, up to `grace` for the child to end, then SIGKILL; reaps it.
fn stop(child: &mut Child, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    let started = Instant::now();
    while started.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Ends the guard as the program ended: with its exit code, or by the same signal.
fn mirror(status: ExitStatus, blocked: &SigSet) -> std::process::ExitCode {
    if let Some(code) = status.code() {
        return std::process::ExitCode::from(code as u8);
    }
    let number = status.signal().unwrap_or(nix::libc::SIGKILL);
    if let Ok(signal) = Signal::try_from(number) {
        // Default action for every signal but SIGPIPE (which the Rust runtime ignores):
        // unblocked and raised, it ends the guard the same way.
        let _ = blocked.thread_unblock();
        let _ = nix::sys::signal::raise(signal);
    }
    std::process::ExitCode::from(128u8.wrapping_add(number as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_is_logged_without_the_guard_in_front() {
        let mut plain = Command::new("/usr/lib/release-upgrader/bin/apt-get");
        plain.args(["-o", "APT::Status-Fd=3", "install", "a b", "it's"]);
        let expected =
            "/usr/lib/release-upgrader/bin/apt-get -o APT::Status-Fd=3 install 'a b' 'it'\\''s'";
        assert_eq!(command_line(&plain), expected);
        let mut guarded = Command::new(GUARD_EXE);
        guarded
            .arg0(GUARD_ARG0)
            .arg("42")
            .arg("/usr/lib/release-upgrader/bin/apt-get")
            .args(["-o", "APT::Status-Fd=3", "install", "a b", "it's"]);
        assert_eq!(command_line(&guarded), expected);
    }

    #[test]
    fn a_guard_is_recognised_by_its_argv0_or_by_the_marker_naming_its_parent() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert!(started_as_guard(os(GUARD_ARG0), os("42"), None));
        // The core's guard, started through a script that sets argv[0] itself.
        assert!(started_as_guard(
            os("/usr/lib/release-upgrader/bin/release-upgrader"),
            os("42"),
            os("42")
        ));
        assert!(!started_as_guard(
            os("release-upgrader"),
            os("upgrade"),
            None
        ));
        // A marker left in the environment does not make a user's command a guard.
        assert!(!started_as_guard(
            os("release-upgrader"),
            os("upgrade"),
            os("42")
        ));
        assert!(!started_as_guard(os("release-upgrader"), None, os("42")));
    }

    const OURS: RunId = RunId {
        pid_ns: 4026531836,
        pid: 100,
        start: 5000,
    };

    fn stat_with(pid: i32, state: char, start: u64) -> impl Fn(i32) -> Option<ProcStat> {
        move |p| {
            (p == pid).then_some(ProcStat {
                state,
                ppid: 1,
                start,
            })
        }
    }

    #[test]
    fn run_ids_round_trip_and_bad_ones_are_refused() {
        let text = OURS.to_string();
        assert_eq!(text, "4026531836:100:5000");
        assert_eq!(text.parse::<RunId>(), Ok(OURS));
        for bad in ["", "1:2", "1:2:3:4", "a:2:3", "1:0:3", "1:-5:3", "1:2:x"] {
            assert!(bad.parse::<RunId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                state: 'S',
                ppid: 17,
                start: 987654
            })
        );
        assert_eq!(ProcStat::parse("12 (x) Z 1"), None);
        let own = stat(std::process::id() as i32).unwrap();
        assert!(own.running());
        assert_eq!(own.ppid, nix::unistd::getppid().as_raw());
    }

    #[test]
    fn the_marker_is_found_in_an_environment() {
        let env = b"PATH=/bin\0RELEASE_UPGRADER_RUN=1:2:3\0HOME=/\0";
        assert_eq!(
            run_in_environ(env),
            Some(RunId {
                pid_ns: 1,
                pid: 2,
                start: 3
            })
        );
        assert_eq!(run_in_environ(b"XRELEASE_UPGRADER_RUN=1:2:3\0"), None);
        assert_eq!(run_in_environ(b"RELEASE_UPGRADER_RUN=garbage\0"), None);
        assert_eq!(run_in_environ(b""), None);
    }

    #[test]
    fn only_a_descendant_of_a_finished_run_of_ours_is_a_leftover() {
        let earlier = RunId {
            pid: 77,
            start: 4000,
            ..OURS
        };
        // No marker: someone else's apt.
        assert_eq!(leftover_of(None, OURS, |_| None), None);
        // Our own run's child.
        assert_eq!(leftover_of(Some(OURS), OURS, |_| None), None);
        // The earlier run's process is gone.
        assert_eq!(leftover_of(Some(earlier), OURS, |_| None), Some(earlier));
        // ... or only its zombie is left.
        assert_eq!(
            leftover_of(Some(earlier), OURS, stat_with(77, 'Z', 4000)),
            Some(earlier)
        );
        // ... or its pid now belongs to another process.
        assert_eq!(
            leftover_of(Some(earlier), OURS, stat_with(77, 'S', 4100)),
            Some(earlier)
        );
        // The earlier run still runs: its apt is not ours to stop.
        assert_eq!(
            leftover_of(Some(earlier), OURS, stat_with(77, 'S', 4000)),
            None
        );
        // A run in another pid namespace cannot be looked up from here.
        let elsewhere = RunId {
            pid_ns: 1,
            ..earlier
        };
        assert_eq!(leftover_of(Some(elsewhere), OURS, |_| None), None);
    }

    #[test]
    fn children_carry_the_name_of_the_run_and_a_rebuilt_command_keeps_its_settings() {
        let ours = RunId::current().expect("/proc");
        let out = command("sh")
            .args(["-c", "echo \"$RELEASE_UPGRADER_RUN\""])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{ours}\n"));
        let dir = tempfile::tempdir().unwrap();
        let mut plain = Command::new("sh");
        plain
            .args(["-c", "echo \"$A:${B-unset}:$RELEASE_UPGRADER_RUN:$(pwd)\""])
            .env("A", "a")
            .env_remove("B")
            .current_dir(dir.path());
        let out = guard(plain).env("B", "x").env_remove("B").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("a:unset:{ours}:{}\n", dir.path().display())
        );
    }

    #[test]
    fn the_guard_refuses_bad_invocations() {
        let code = |args: &[&str]| guard_main(args.iter().map(OsString::from).collect());
        assert_eq!(code(&[]), std::process::ExitCode::from(GUARD_USAGE));
        assert_eq!(
            code(&["x", "true"]),
            std::process::ExitCode::from(GUARD_USAGE)
        );
    }

    #[test]
    fn a_leftover_is_stopped_and_a_new_process_on_its_pid_is_not_touched() {
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let pid = child.id() as i32;
        let start = stat(pid).unwrap().start;
        let run = RunId {
            pid: 1,
            start: 1,
            ..OURS
        };
        // A different start time: not the process that was judged; left alone.
        let other = Orphan {
            pid,
            start: start + 1,
            run,
        };
        assert_eq!(
            terminate(&other, Duration::from_secs(1)).unwrap(),
            Ended::AlreadyGone
        );
        assert!(child.try_wait().unwrap().is_none());
        let orphan = Orphan { pid, start, run };
        // Stopped on SIGTERM; as our child it stays a zombie until reaped, which counts
        // as gone.
        assert_eq!(
            terminate(&orphan, Duration::from_secs(5)).unwrap(),
            Ended::Terminated
        );
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(nix::libc::SIGTERM)
        );
    }

    #[test]
    fn a_leftover_that_ignores_sigterm_is_killed() {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "trap '' TERM; echo ready; while :; do sleep 0.05; done",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let pid = child.id() as i32;
        let orphan = Orphan {
            pid,
            start: stat(pid).unwrap().start,
            run: OURS,
        };
        assert_eq!(
            terminate(&orphan, Duration::from_millis(300)).unwrap(),
            Ended::Killed
        );
        child.wait().unwrap();
    }
}
