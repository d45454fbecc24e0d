//! Subprocess faults of the upgrade (issue #11, findings 8 and 9): the tool killed on
//! its own during the install, a lock held by what an earlier run left behind, and a
//! dpkg that stops before it changes anything.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use std::os::unix::process::{CommandExt, ExitStatusExt};

use crate::support::BIN;
use crate::support::hold_frontend_lock;
use crate::upgrade::{BLOCK_ONCE, World, audit_clean, kill_everything_touching};

/// The interface these tests pin (`ru_client::upgrade::children`), spelled out
/// so that the tests also build against a tree without it and show what it lacked
/// (also `support::RUN_ENV`).
const GUARD_ARG0: &str = "release-upgrader-guard";

/// State, parent and start time of a process, from `/proc/PID/stat`.
#[derive(Clone, Copy, Debug)]
struct Stat {
    state: char,
    ppid: i32,
    start: u64,
}

impl Stat {
    fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Whether the process that was `pid` with start time `start` still runs.
fn still_running(pid: i32, start: u64) -> bool {
    stat(pid).is_some_and(|s| s.start == start && s.running())
}

/// The name of a run of the tool, as its children carry it in `RELEASE_UPGRADER_RUN`: pid
/// namespace, pid and start time of the tool.
fn run_name(pid: i32, start: u64) -> String {
    let ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let ns = ns.to_str().unwrap();
    let ns = &ns["pid:[".len()..ns.len() - 1];
    format!("{ns}:{pid}:{start}")
}

/// Kills, when the test ends however it ends, what it left running in the root and
/// the processes it names.
struct Reaper {
    root: PathBuf,
    pids: Vec<(i32, u64)>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for &(pid, start) in &self.pids {
            if stat(pid).is_some_and(|s| s.start == start) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        kill_everything_touching(&self.root);
    }
}

/// The processes below `ancestor` (children, their children, …) named `comm`.
fn descendants_named(ancestor: i32, comm: &str) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = stat(pid)?;
            stat.running().then_some((pid, stat.ppid))
        })
        .collect();
    let mut below = vec![ancestor];
    let mut i = 0;
    while i < below.len() {
        let parent = below[i];
        below.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    below
        .into_iter()
        .skip(1)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// The descriptors of `pid` that are the pipe its fd 3 is.
fn descriptors_of_fd3_pipe(pid: i32) -> Vec<String> {
    let fd = PathBuf::from(format!("/proc/{pid}/fd"));
    let pipe = std::fs::read_link(fd.join("3")).unwrap();
    assert!(pipe.to_string_lossy().starts_with("pipe:"), "{pipe:?}");
    std::fs::read_dir(&fd)
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == pipe))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn upgrade_command(w: &World) -> Command {
    w.command(&["upgrade", "-y", "-f", "noninteractive"])
}

#[test]
fn killing_the_tool_alone_takes_its_apt_along_and_the_next_run_finishes() {
    let w = World::with_hello_postinst(BLOCK_ONCE);
    nix::unistd::mkfifo(
        &w.root.join("tmp/wait"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let mut reaper = Reaper {
        root: w.root.clone(),
        pids: Vec::new(),
    };
    let mut child = upgrade_command(&w)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tool = child.id() as i32;
    wait_for(
        "the maintainer script runs",
        Duration::from_secs(120),
        || w.root.join("tmp/reached").exists(),
    );
    let mut apt = Vec::new();
    wait_for(
        "apt-get runs below the tool",
        Duration::from_secs(10),
        || {
            apt = descendants_named(tool, "apt-get");
            !apt.is_empty()
        },
    );
    let apt = apt[0];
    let apt_start = stat(apt).unwrap().start;
    reaper.pids.push((apt, apt_start));
    // apt holds its status pipe's write end as fd 3, and not the read end: with it, an
    // orphaned apt fills the pipe and blocks forever.
    assert_eq!(
        descriptors_of_fd3_pipe(apt),
        ["3"],
        "apt-get's descriptors of its status pipe"
    );
    // The tool alone is killed (not its process group).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tool),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    wait_for(
        "apt-get ends with the tool",
        Duration::from_secs(10),
        || !still_running(apt, apt_start),
    );
    // The next run resumes at once: whatever dpkg the dead run left holding its lock
    // is recognised as ours and stopped, not waited for until the timeout.
    let started = Instant::now();
    let run = w.run(&[
        "upgrade",
        "-y",
        "-f",
        "noninteractive",
        "--lock-timeout",
        "120",
    ]);
    run.expect(0)
        .mentions(&["interrupted while packages were being installed; resuming"]);
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the next run took {:?}",
        started.elapsed()
    );
    assert!(
        w.installed().contains("demo-hello 2.0-1 ii"),
        "{}",
        w.installed()
    );
    assert!(w.read("/etc/os-release").contains("VERSION_CODENAME=beta"));
    audit_clean(&w.root);
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
}

#[test]
fn a_lock_held_by_a_leftover_of_a_dead_run_is_cleared_and_the_upgrade_goes_on() {
    let w = World::new();
    // A run of ours that is over: a process that has exited.
    let mut done = Command::new("true").spawn().unwrap();
    let pid = done.id() as i32;
    let start = stat(pid).unwrap().start;
    done.wait().unwrap();
    let mut holder = hold_frontend_lock(&w.root, Some(&run_name(pid, start)));
    let run = w.run(&[
        "upgrade",
        "-y",
        "-f",
        "noninteractive",
        "--lock-timeout",
        "20",
    ]);
    let ended = holder.try_wait().unwrap();
    if ended.is_none() {
        holder.kill().unwrap();
        holder.wait().unwrap();
    }
    run.expect(0).mentions(&[
        "left over from an earlier run of release-upgrader",
        "lock-frontend",
        "stopped it (SIGTERM)",
    ]);
    assert_eq!(
        ended.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        Some(nix::libc::SIGTERM)
    );
    assert!(
        w.read("/var/log/dist-upgrade/main.log")
            .contains("left over from an earlier run")
    );
    assert!(w.read("/etc/os-release").contains("VERSION_CODENAME=beta"));
}

#[test]
fn a_dpkg_that_stops_before_changing_anything_rolls_the_upgrade_back() {
    let w = World::new();
    // The helpers' dpkg refuses every package operation at once, as bookworm's does on
    // a statoverride group this machine lacks; everything else reaches the real dpkg.
    w.republish_with_dpkg(
        "#!/bin/sh\nfor a in \"$@\"; do case $a in \
         --unpack|--install|--configure|--remove|--purge|--triggers-only)\n\
         echo \"dpkg: unrecoverable fatal error, aborting: refusing on purpose\" >&2; exit 2;;\n\
         esac; done\nexec /usr/bin/dpkg \"$@\"\n",
    );
    let before = w.before();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(5).mentions(&[
        "dpkg stopped before it changed any package",
        "put back as it was",
        "refusing on purpose",
    ]);
    w.assert_put_back(&before);
    assert!(w.installed().contains("demo-hello 1.0-1 ii"));
    audit_clean(&w.root);
}

#[test]
fn statoverride_owners_this_machine_lacks_are_refused_before_anything_changes() {
    let w = World::new();
    let group = "ru-test-no-such-group";
    assert!(
        nix::unistd::Group::from_name(group).unwrap().is_none(),
        "this machine has group {group}"
    );
    std::fs::write(
        w.root.join("var/lib/dpkg/statoverride"),
        format!("root {group} 2755 /usr/bin/demo-hello\n"),
    )
    .unwrap();
    let before = w.before();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(2).mentions(&[
        &format!("group '{group}' (owner of /usr/bin/demo-hello) does not exist on this machine"),
        "chroot",
        "Nothing was changed",
    ]);
    w.assert_put_back(&before);
}

/// This test binary's copy of the guard, started by the thread that calls this.
fn guard(parent: i32, program: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg0(GUARD_ARG0).arg(parent.to_string()).args(program);
    cmd
}

#[test]
fn the_guard_stops_its_program_when_the_thread_that_started_it_ends() {
    // The parent-death signal follows the thread that started the guard: let that thread
    // end without waiting (what the tool never does), once the program runs.
    let (mut guard, sleeper) = std::thread::spawn(|| {
        let guard = guard(std::process::id() as i32, &["sleep", "60"])
            .spawn()
            .unwrap();
        let mut sleeper = Vec::new();
        wait_for("the guard starts sleep", Duration::from_secs(10), || {
            sleeper = descendants_named(guard.id() as i32, "sleep");
            !sleeper.is_empty()
        });
        (guard, sleeper[0])
    })
    .join()
    .unwrap();
    let start = stat(sleeper).unwrap().start;
    let _reaper = Reaper {
        root: PathBuf::from("/nonexistent-release-upgrader-test"),
        pids: vec![(sleeper, start)],
    };
    let status = guard.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    assert!(!still_running(sleeper, start), "sleep outlived its guard");
}

#[test]
fn the_guard_passes_descriptors_and_environment_on_and_ends_as_its_program_ends() {
    let me = std::process::id() as i32;
    let out = guard(
        me,
        &["sh", "-c", "echo \"out:$GUARD_TEST\"; echo err >&2; exit 7"],
    )
    .env("GUARD_TEST", "passed")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out:passed\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // Killed by a signal: so is the guard.
    let out = guard(me, &["sh", "-c", "kill -USR1 $$"]).output().unwrap();
    assert_eq!(out.status.signal(), Some(nix::libc::SIGUSR1), "{out:?}");
    // A program that does not exist.
    let out = guard(me, &["/nonexistent/program"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /nonexistent/program"));
}

#[test]
fn a_guard_whose_tool_is_already_gone_does_not_start_its_program() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    // The tool it names is not its parent: as if the tool died before the guard ran.
    let out = guard(1, &["touch", marker.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(!marker.exists());
}
