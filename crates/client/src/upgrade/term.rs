//! Running apt with its output kept: everything it (and dpkg, and the maintainer scripts)
//! prints goes to `apt-term.log`; its machine-readable status (`APT::Status-Fd`, or
//! dpkg's `--status-fd`, on fd 3) drives our progress. When the user answers questions,
//! apt runs on a pty of ours and its questions reach the user's terminal ([`pty`]).
//!
//! The status pipe is created close-on-exec and only its write end is handed to apt, as
//! fd 3: apt never holds the read end, so once the tool is gone its writes fail instead
//! of blocking forever (issue #11, finding 8). [`run`] guards the command (it ends with
//! the tool, see [`children`](super::children)) and waits for it on the calling thread.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};

use crate::error::Error;
use crate::upgrade::pty;

/// A line apt writes to its status descriptor.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Downloading: percent of all downloads, and what.
    Download { percent: f64, what: String },
    /// Installing (dpkg): package, percent of the whole run, and what.
    Install {
        package: String,
        percent: f64,
        what: String,
    },
    /// dpkg reported an error for a package.
    Error { package: String, message: String },
    /// A conffile question (answered by dpkg's --force-conf* options or the user).
    Conffile { path: String },
    /// dpkg's own status descriptor (`dpkg --status-fd`, used when dpkg runs without
    /// apt): a package reached a state (`unpacked`, `half-configured`, `installed`…).
    Dpkg { package: String, state: String },
}

impl Status {
    /// Parses apt's `dlstatus:…`, `pmstatus:…`, `pmerror:…`, `pmconffile:…` lines and
    /// dpkg's `status: …` lines.
    pub fn parse(line: &str) -> Option<Status> {
        if let Some(rest) = line.strip_prefix("status: ") {
            return Self::parse_dpkg(rest.trim_end());
        }
        let mut parts = line.splitn(4, ':');
        let kind = parts.next()?;
        let a = parts.next()?.to_owned();
        let b = parts.next()?.to_owned();
        let c = parts.next().unwrap_or("").trim_end().to_owned();
        Some(match kind {
            "dlstatus" => Status::Download {
                percent: b.parse().ok()?,
                what: c,
            },
            "pmstatus" => Status::Install {
                package: a,
                percent: b.parse().ok()?,
                what: c,
            },
            "pmerror" => Status::Error {
                package: a,
                message: c,
            },
            "pmconffile" => Status::Conffile { path: a },
            _ => return None,
        })
    }

    /// dpkg's `status: PACKAGE: STATE`, `status: PACKAGE : error : MESSAGE` and
    /// `status: CONFFILE : conffile-prompt : 'OLD' 'NEW' USEREDITED DISTEDITED` (dpkg(1),
    /// `--status-fd`); a file name may hold colons, so the last two are found by their
    /// keyword.
    fn parse_dpkg(rest: &str) -> Option<Status> {
        if let Some((path, _)) = rest.split_once(" : conffile-prompt : ") {
            return Some(Status::Conffile {
                path: path.to_owned(),
            });
        }
        if let Some((package, message)) = rest.split_once(" : error : ") {
            return Some(Status::Error {
                package: package.to_owned(),
                message: message.to_owned(),
            });
        }
        let (package, state) = rest.split_once(": ")?;
        if package.is_empty() || state.is_empty() || state.contains(' ') {
            return None;
        }
        Some(Status::Dpkg {
            package: package.to_owned(),
            state: state.to_owned(),
        })
    }
}

/// How a run went.
#[derive(Debug)]
pub struct Finished {
    pub success: bool,
    pub code: Option<i32>,
    /// The last lines it printed, for error messages.
    pub tail: Vec<String>,
    /// dpkg's per-package errors.
    pub errors: Vec<(String, String)>,
    /// Configuration file questions dpkg answered by itself (nobody was asked).
    pub defaulted: Vec<Defaulted>,
    /// Status lines that name a package dpkg worked on (`pmstatus` other than apt's own
    /// `dpkg-exec`, `pmerror`, `pmconffile`): none means dpkg never reached a package.
    pub package_lines: usize,
}

impl Status {
    /// Whether the line says dpkg reached a package (to unpack, configure, remove it, or
    /// an error or question about one), as opposed to download progress or apt's own
    /// "Running dpkg".
    pub fn names_a_package(&self) -> bool {
        match self {
            Status::Download { .. } => false,
            Status::Install { package, .. } => package != "dpkg-exec",
            Status::Error { .. } | Status::Conffile { .. } | Status::Dpkg { .. } => true,
        }
    }
}

/// A configuration file question dpkg answered itself, told by its messages
/// (`--force-confdef`/`--force-confold`/`--force-confnew`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaulted {
    /// The file as dpkg names it first (the path on the upgraded system).
    pub path: String,
    /// The user's file was kept (`N`), else the maintainer's was installed (`Y`).
    pub kept: bool,
}

/// Where a run's output goes besides the log.
#[derive(Clone, Copy)]
pub enum Output<'a> {
    /// Only to the log; nobody answers (stdin is `/dev/null`) and the progress is what
    /// the user sees.
    Logged,
    /// Also to our stderr as it comes (`-v`); nobody answers.
    Shown,
    /// On a pty of its own, questions shown on the user's terminal and answered there
    /// ([`pty`]); `screen` puts the progress away while one is open.
    Terminal(&'a dyn Screen),
    /// On a pty of its own, questions reported through `screen` only (our stdout is a
    /// program's) and answered by the lines that program writes to our stdin.
    Program(&'a dyn Screen),
}

/// What the text frontend does when a question opens and closes.
pub trait Screen: Sync {
    /// `Some`: a question is about to be shown (hide the progress); `None`: it was
    /// answered (draw the progress again).
    fn asking(&self, asked: Option<&pty::Asked>);
}

/// Runs `cmd` with `-o APT::Status-Fd=3` (or dpkg's `--status-fd 3`) already in its
/// arguments (see [`status_option`]). Output is appended to `log` and goes where `output`
/// says; status lines are handed to `on_status`.
pub fn run(
    cmd: Command,
    log: File,
    output: Output<'_>,
    on_status: &mut dyn FnMut(&Status),
) -> Result<Finished, Error> {
    let mut cmd = super::children::guard(cmd);
    let program = super::children::program_of(&cmd)
        .to_string_lossy()
        .into_owned();
    let io_error = |e: std::io::Error| Error::io(&program, e);
    // Both ends close-on-exec: the child gets the write end as fd 3 (the mapping clears
    // the flag on that copy only) and no other child gets either end.
    let (status_read, status_write) = std::io::pipe().map_err(io_error)?;
    cmd.fd_mappings(vec![FdMapping {
        parent_fd: OwnedFd::from(status_write),
        child_fd: 3,
    }])
    .map_err(|e| io_error(std::io::Error::other(e.to_string())))?;
    let log = Mutex::new(log);
    let tail = Tail::default();
    let mut errors = Vec::new();
    let mut package_lines = 0;
    let mut read_status = |on_line: &mut dyn FnMut(&Status)| {
        for line in BufReader::new(&status_read).lines().map_while(Result::ok) {
            if let Some(status) = Status::parse(&line) {
                if let Status::Error { package, message } = &status {
                    errors.push((package.clone(), message.clone()));
                }
                if status.names_a_package() {
                    package_lines += 1;
                }
                on_line(&status);
                on_status(&status);
            }
        }
    };
    let status = match output {
        Output::Logged | Output::Shown => {
            let echo = matches!(output, Output::Shown);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().map_err(io_error)?;
            // The parent's copy of the write end went into the command; drop ours so
            // reading ends when apt exits.
            drop(cmd);
            let out = child.stdout.take().expect("piped");
            let err = child.stderr.take().expect("piped");
            std::thread::scope(|scope| {
                let (log, tail) = (&log, &tail);
                scope.spawn(move || forward(out, log, tail, echo));
                scope.spawn(move || forward(err, log, tail, echo));
                read_status(&mut |_| {});
                child.wait().map_err(io_error)
            })?
        }
        Output::Terminal(screen) | Output::Program(screen) => {
            let on_terminal = matches!(output, Output::Terminal(_));
            let pty = if on_terminal {
                pty::open(Some(std::io::stderr()))
            } else {
                pty::open(None::<std::io::Stderr>)
            }
            .map_err(io_error)?;
            let slave = |pty: &pty::Pty| pty.slave.try_clone().map(Stdio::from);
            cmd.stdin(slave(&pty).map_err(io_error)?)
                .stdout(slave(&pty).map_err(io_error)?)
                .stderr(slave(&pty).map_err(io_error)?)
                .env(super::children::SESSION_ENV, "1");
            let mut child = cmd.spawn().map_err(io_error)?;
            drop(cmd);
            // Only the program holds the slave now: reading the master ends when it and
            // whatever it started are gone.
            let pty::Pty { master, slave } = pty;
            drop(slave);
            let relay = Relay::new(screen, master, on_terminal);
            std::thread::scope(|scope| {
                let (relay, log, tail) = (&relay, &log, &tail);
                scope.spawn(move || relay.pump(log, tail));
                scope.spawn(move || relay.keys());
                read_status(&mut |status| relay.status(status));
                let status = child.wait().map_err(io_error);
                relay.ended();
                status
            })?
        }
    };
    let Tail { lines, defaulted } = tail;
    Ok(Finished {
        success: status.success(),
        code: status.code(),
        tail: lines.into_inner().expect("tail"),
        defaulted: defaulted.into_inner().expect("defaulted"),
        errors,
        package_lines,
    })
}

/// The pty between the program and the user's terminal ([`pty`] says why).
struct Relay<'a> {
    screen: &'a dyn Screen,
    master: OwnedFd,
    /// What is decided and what it did to the terminal, under one lock: the decision and
    /// its effect happen in the order the threads took them, so the terminal always ends
    /// as the last decision left it.
    state: Mutex<(pty::Watch, pty::RawInput)>,
    /// A question is open: keys go to the pty.
    asking: AtomicBool,
    /// The program ended: drain what is left, then stop.
    over: AtomicBool,
    /// Questions are shown on our terminal (else a program answers them on stdin).
    on_terminal: bool,
}

/// How long the pty stays silent before an open line is taken for a prompt.
const PROMPT_QUIET: Duration = Duration::from_millis(800);
/// How often the relay threads look at their flags.
const TICK: Duration = Duration::from_millis(100);

impl<'a> Relay<'a> {
    fn new(screen: &'a dyn Screen, master: OwnedFd, on_terminal: bool) -> Self {
        Relay {
            screen,
            master,
            state: Mutex::default(),
            asking: AtomicBool::new(false),
            over: AtomicBool::new(false),
            on_terminal,
        }
    }

    /// Lets the [`pty::Watch`] decide from what happened (`decide`), then does it.
    fn act(&self, decide: impl FnOnce(&mut pty::Watch) -> Vec<pty::Step>) {
        let mut state = self.state.lock().expect("relay state");
        let (watch, raw) = &mut *state;
        for step in decide(watch) {
            match step {
                pty::Step::Ask(asked) if !self.on_terminal => {
                    self.screen.asking(Some(&asked));
                    self.asking.store(true, Ordering::SeqCst);
                }
                pty::Step::Ask(asked) => {
                    // The terminal may have been resized since the pty was made.
                    if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stderr()) {
                        let _ = rustix::termios::tcsetwinsize(&self.master, size);
                    }
                    self.screen.asking(Some(&asked));
                    raw.enable(std::io::stdin());
                    self.asking.store(true, Ordering::SeqCst);
                }
                // The program reads the question from its event, not our screen.
                pty::Step::Show(_) if !self.on_terminal => {}
                pty::Step::Show(bytes) => {
                    let mut stderr = std::io::stderr().lock();
                    let _ = stderr.write_all(&bytes);
                    let _ = stderr.flush();
                }
                pty::Step::Answered => {
                    self.asking.store(false, Ordering::SeqCst);
                    if self.on_terminal {
                        raw.restore(std::io::stdin());
                    }
                    self.screen.asking(None);
                }
            }
        }
    }

    fn status(&self, status: &Status) {
        self.act(|watch| watch.status(status));
    }

    fn ended(&self) {
        self.over.store(true, Ordering::SeqCst);
    }

    /// Reads the pty: everything to the log and the tail, and to the screen while a
    /// question is open.
    fn pump(&self, log: &Mutex<File>, tail: &Tail) {
        let mut lines = Lines::default();
        let mut buf = [0u8; 8192];
        let mut quiet_since = Instant::now();
        let mut looked = true;
        loop {
            if !readable(&self.master, TICK) {
                if self.over.load(Ordering::SeqCst) {
                    break;
                }
                if !looked && quiet_since.elapsed() >= PROMPT_QUIET {
                    looked = true;
                    self.act(pty::Watch::idle);
                }
                continue;
            }
            // EIO: every holder of the slave side is gone.
            let n = match rustix::io::read(&self.master, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if let Ok(mut log) = log.lock() {
                let _ = log.write_all(chunk);
            }
            lines.push(chunk, tail);
            self.act(|watch| watch.output(chunk));
            quiet_since = Instant::now();
            looked = false;
        }
        lines.finish(tail);
        self.act(pty::Watch::end);
    }

    /// Passes the user's keys to the pty while a question is open.
    fn keys(&self) {
        let stdin = std::io::stdin();
        let mut buf = [0u8; 1024];
        while !self.over.load(Ordering::SeqCst) {
            if !self.asking.load(Ordering::SeqCst) {
                std::thread::sleep(TICK / 2);
                continue;
            }
            if !readable(&stdin, TICK) {
                continue;
            }
            match rustix::io::read(&stdin, &mut buf) {
                // The program that answers went away: nobody will, so each question
                // from here on takes its default (an empty line), as unattended.
                Ok(0) | Err(_) if !self.on_terminal => return self.defaults(),
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut rest = &buf[..n];
                    while !rest.is_empty() {
                        match rustix::io::write(&self.master, rest) {
                            Ok(written) => rest = &rest[written..],
                            Err(_) => return,
                        }
                    }
                }
            }
        }
    }
}

impl Relay<'_> {
    /// Answers every question still to come with an empty line (its default).
    fn defaults(&self) {
        while !self.over.load(Ordering::SeqCst) {
            if self.asking.swap(false, Ordering::SeqCst) {
                let _ = rustix::io::write(&self.master, b"\n");
            }
            std::thread::sleep(TICK / 2);
        }
    }
}

/// One line from `fd`, read a byte at a time so that nothing after it is taken from the
/// descriptor (a later reader, e.g. the relay answering dpkg, gets the rest); without its
/// newline. Empty at the end of the input or on an error.
pub fn read_line_unbuffered(fd: impl AsFd) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(&fd, &mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            Err(rustix::io::Errno::INTR) => continue,
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Whether `fd` has something to read (or hung up) within `timeout`.
fn readable(fd: impl AsFd, timeout: Duration) -> bool {
    let timeout = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

/// The option that sends apt's status to the descriptor [`run`] reads.
pub fn status_option() -> [&'static str; 2] {
    ["-o", "APT::Status-Fd=3"]
}

/// Copies a stream to the log (and stderr) as it comes, keeping the last lines.
fn forward(mut source: impl Read, log: &Mutex<File>, tail: &Tail, echo: bool) {
    let mut lines = Lines::default();
    let mut buf = [0u8; 8192];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if let Ok(mut log) = log.lock() {
            let _ = log.write_all(chunk);
        }
        if echo {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(chunk);
            let _ = stderr.flush();
        }
        lines.push(chunk, tail);
    }
    lines.finish(tail);
}

/// What a run's output tells after it: its last lines (for error messages) and the
/// configuration file questions dpkg answered itself.
#[derive(Default)]
struct Tail {
    lines: Mutex<Vec<String>>,
    defaulted: Mutex<Vec<Defaulted>>,
}

/// Splits one stream into lines (a terminal's `\r` taken out) for [`Tail`].
#[derive(Default)]
struct Lines {
    partial: String,
    /// The configuration file dpkg last named.
    conffile: Option<String>,
}

/// How many lines an error message quotes.
const TAIL_LINES: usize = 20;

impl Lines {
    fn push(&mut self, chunk: &[u8], tail: &Tail) {
        self.partial.push_str(&String::from_utf8_lossy(chunk));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.keep(line.trim_end().replace('\r', ""), tail);
        }
    }

    fn finish(&mut self, tail: &Tail) {
        if !self.partial.trim().is_empty() {
            let line = self.partial.trim_end().replace('\r', "");
            self.keep(line, tail);
        }
        self.partial.clear();
    }

    fn keep(&mut self, line: String, tail: &Tail) {
        if let Some(defaulted) = conffile_answer(&mut self.conffile, &line) {
            tail.defaulted.lock().expect("defaulted").push(defaulted);
        }
        let mut lines = tail.lines.lock().expect("tail");
        lines.push(line);
        if lines.len() > TAIL_LINES {
            lines.remove(0);
        }
    }
}

/// Reads dpkg's (C locale) messages about a configuration file: `Configuration file
/// 'PATH'` names it, and one of four lines says what dpkg did without asking
/// (dpkg's `src/main/configure.c`, `promptconfaction`).
fn conffile_answer(named: &mut Option<String>, line: &str) -> Option<Defaulted> {
    if let Some(rest) = line.strip_prefix("Configuration file '") {
        *named = rest.split_once('\'').map(|(path, _)| path.to_owned());
        return None;
    }
    let kept = match line.trim() {
        "==> Keeping old config file as default."
        | "==> Using current old file as you requested." => true,
        "==> Using new config file as default." | "==> Using new file as you requested." => false,
        _ => return None,
    };
    named.take().map(|path| Defaulted { path, kept })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_read_unbuffered_leaves_the_rest_on_the_descriptor() {
        let (read, mut write) = std::io::pipe().unwrap();
        write.write_all(b"y\nN\n").unwrap();
        drop(write);
        assert_eq!(read_line_unbuffered(&read), "y");
        assert_eq!(read_line_unbuffered(&read), "N");
        // At the end: empty, which callers take for the default.
        assert_eq!(read_line_unbuffered(&read), "");
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            Status::parse("pmstatus:libc6:12.5:Unpacking libc6 (amd64)"),
            Some(Status::Install {
                package: "libc6".into(),
                percent: 12.5,
                what: "Unpacking libc6 (amd64)".into()
            })
        );
        assert_eq!(
            Status::parse("dlstatus:3:40.1:Retrieving file 3 of 7"),
            Some(Status::Download {
                percent: 40.1,
                what: "Retrieving file 3 of 7".into()
            })
        );
        assert!(matches!(
            Status::parse("pmerror:/var/cache/x.deb:50:subprocess failed"),
            Some(Status::Error { .. })
        ));
        assert_eq!(Status::parse("media-change:x:y"), None);
    }

    #[test]
    fn dpkgs_answers_without_asking_are_read_from_its_messages() {
        let mut named = None;
        let lines = [
            "Setting up demo-conf (2.0-1) ...",
            "Configuration file '/etc/demo.conf' (actually '/r/etc/demo.conf')",
            " ==> Modified (by you or by a script) since installation.",
            " ==> Package distributor has shipped an updated version.",
            " ==> Keeping old config file as default.",
            "Configuration file '/etc/b.conf'",
            " ==> Using new file as you requested.",
            // A decision line with no file named before it is nobody's.
            " ==> Using new config file as default.",
        ];
        let found: Vec<Defaulted> = lines
            .iter()
            .filter_map(|l| conffile_answer(&mut named, l))
            .collect();
        assert_eq!(
            found,
            [
                Defaulted {
                    path: "/etc/demo.conf".into(),
                    kept: true
                },
                Defaulted {
                    path: "/etc/b.conf".into(),
                    kept: false
                }
            ]
        );
    }

    #[test]
    fn dpkgs_own_status_lines_parse() {
        assert_eq!(
            Status::parse(
                "status: /etc/demo.conf : conffile-prompt : '/etc/demo.conf' '/etc/demo.conf.dpkg-new' 1 1"
            ),
            Some(Status::Conffile {
                path: "/etc/demo.conf".into()
            })
        );
        assert_eq!(
            Status::parse("status: demo-conf:amd64: half-configured"),
            Some(Status::Dpkg {
                package: "demo-conf:amd64".into(),
                state: "half-configured".into()
            })
        );
        assert_eq!(
            Status::parse("status: demo-conf : error : subprocess returned 1"),
            Some(Status::Error {
                package: "demo-conf".into(),
                message: "subprocess returned 1".into()
            })
        );
        for odd in ["status: ", "status: x", "status: : y", "status: a: b c"] {
            assert_eq!(Status::parse(odd), None, "{odd}");
        }
    }

    #[test]
    fn output_is_logged_and_status_comes_through_fd_3() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("term.log");
        let log = File::create(&log_path).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; echo 'pmstatus:p:50:Half' >&3; echo 'pmerror:p:60:boom' >&3; exit 3"]);
        let mut seen = Vec::new();
        let finished = run(cmd, log, Output::Logged, &mut |s| seen.push(s.clone())).unwrap();
        assert!(!finished.success);
        assert_eq!(finished.code, Some(3));
        assert_eq!(finished.errors, [("p".to_owned(), "boom".to_owned())]);
        assert_eq!(seen.len(), 2);
        let text = std::fs::read_to_string(&log_path).unwrap();
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
        assert!(finished.tail.contains(&"out".to_owned()));
        assert_eq!(finished.package_lines, 2);
    }

    #[test]
    fn the_child_holds_only_the_write_end_of_its_status_pipe() {
        // Every descriptor of the child that is the status pipe: fd 3 and nothing else
        // (an inherited read end would keep apt writing into a pipe nobody drains).
        let script = r#"pipe=$(readlink /proc/$$/fd/3); n=0
for f in /proc/$$/fd/*; do [ "$(readlink "$f")" = "$pipe" ] && n=$((n+1)); done
echo "pmstatus:p:1:$n" >&3"#;
        let dir = tempfile::tempdir().unwrap();
        let log = File::create(dir.path().join("term.log")).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        let mut seen = Vec::new();
        let finished = run(cmd, log, Output::Logged, &mut |s| seen.push(s.clone())).unwrap();
        assert!(finished.success, "{:?}", finished.tail);
        assert_eq!(
            seen,
            [Status::Install {
                package: "p".into(),
                percent: 1.0,
                what: "1".into()
            }],
            "descriptors of the status pipe in the child"
        );
    }

    #[test]
    fn only_lines_about_packages_count_as_dpkg_work() {
        let lines = [
            ("dlstatus:1:50:Retrieving file 1 of 2", false),
            ("pmstatus:dpkg-exec:0:Running dpkg", false),
            ("pmstatus:libc6:10:Preparing to unpack libc6", true),
            ("pmerror:/var/cache/apt/archives/x.deb:20:boom", true),
            ("pmconffile:/etc/x:'/etc/x' '/etc/x.dpkg-new' 1 1", true),
        ];
        for (line, names) in lines {
            assert_eq!(
                Status::parse(line).unwrap().names_a_package(),
                names,
                "{line}"
            );
        }
    }
}
