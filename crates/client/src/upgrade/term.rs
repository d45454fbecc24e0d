//! Running apt with its output kept: everything it (and dpkg, and the maintainer scripts)
//! prints goes to `apt-term.log` and, when someone is watching, to the terminal as it
//! comes; its machine-readable status (`APT::Status-Fd`, on fd 3) drives our progress.
//!
//! The status pipe is created close-on-exec and only its write end is handed to apt, as
//! fd 3: apt never holds the read end, so once the tool is gone its writes fail instead
//! of blocking forever (issue #11, finding 8). [`run`] guards the command (it ends with
//! the tool, see [`children`](super::children)) and waits for it on the calling thread.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use command_fds::{CommandFdExt, FdMapping};

use crate::error::Error;

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
}

impl Status {
    /// Parses `dlstatus:…`, `pmstatus:…`, `pmerror:…`, `pmconffile:…` lines.
    pub fn parse(line: &str) -> Option<Status> {
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
            Status::Error { .. } | Status::Conffile { .. } => true,
        }
    }
}

/// Runs `cmd` with `-o APT::Status-Fd=3` already in its arguments (see [`status_option`]).
/// Output is appended to `log`, echoed to our stderr when `echo`, status lines are handed
/// to `on_status`. `interactive` keeps our stdin for dpkg's questions.
pub fn run(
    cmd: Command,
    log: File,
    echo: bool,
    interactive: bool,
    on_status: &mut dyn FnMut(&Status),
) -> Result<Finished, Error> {
    let mut cmd = super::children::guard(cmd);
    let program = super::children::program_of(&cmd)
        .to_string_lossy()
        .into_owned();
    // Both ends close-on-exec: the child gets the write end as fd 3 (the mapping clears
    // the flag on that copy only) and no other child gets either end.
    let (status_read, status_write) = std::io::pipe().map_err(|e| Error::io(&program, e))?;
    cmd.fd_mappings(vec![FdMapping {
        parent_fd: OwnedFd::from(status_write),
        child_fd: 3,
    }])
    .map_err(|e| Error::io(&program, std::io::Error::other(e.to_string())))?;
    cmd.stdin(if interactive {
        Stdio::inherit()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::io(&program, e))?;
    // The parent's copy of the write end went into the command; drop ours so reading
    // ends when apt exits.
    drop(cmd);
    let log = Arc::new(Mutex::new(log));
    let tail: Arc<Mutex<Vec<String>>> = Arc::default();
    let pump = |source: Box<dyn Read + Send>| {
        let log = log.clone();
        let tail = tail.clone();
        std::thread::spawn(move || forward(source, &log, &tail, echo))
    };
    let out = pump(Box::new(child.stdout.take().expect("piped")));
    let err = pump(Box::new(child.stderr.take().expect("piped")));
    let mut errors = Vec::new();
    let mut package_lines = 0;
    for line in BufReader::new(status_read).lines().map_while(Result::ok) {
        if let Some(status) = Status::parse(&line) {
            if let Status::Error { package, message } = &status {
                errors.push((package.clone(), message.clone()));
            }
            if status.names_a_package() {
                package_lines += 1;
            }
            on_status(&status);
        }
    }
    let _ = out.join();
    let _ = err.join();
    let status = child.wait().map_err(|e| Error::io(&program, e))?;
    let tail = tail.lock().expect("tail").clone();
    Ok(Finished {
        success: status.success(),
        code: status.code(),
        tail,
        errors,
        package_lines,
    })
}

/// The option that sends apt's status to the descriptor [`run`] reads.
pub fn status_option() -> [&'static str; 2] {
    ["-o", "APT::Status-Fd=3"]
}

/// Copies a stream to the log (and stderr) as it comes, keeping the last lines.
fn forward(
    mut source: Box<dyn Read + Send>,
    log: &Mutex<File>,
    tail: &Mutex<Vec<String>>,
    echo: bool,
) {
    let mut buf = [0u8; 8192];
    let mut partial = String::new();
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
        partial.push_str(&String::from_utf8_lossy(chunk));
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            let mut tail = tail.lock().expect("tail");
            tail.push(line.trim_end().to_owned());
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    if !partial.trim().is_empty() {
        tail.lock()
            .expect("tail")
            .push(partial.trim_end().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn output_is_logged_and_status_comes_through_fd_3() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("term.log");
        let log = File::create(&log_path).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; echo 'pmstatus:p:50:Half' >&3; echo 'pmerror:p:60:boom' >&3; exit 3"]);
        let mut seen = Vec::new();
        let finished = run(cmd, log, false, false, &mut |s| seen.push(s.clone())).unwrap();
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
        let finished = run(cmd, log, false, false, &mut |s| seen.push(s.clone())).unwrap();
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
