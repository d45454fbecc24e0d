//! The interactive upgrade on a real terminal: `release-upgrader upgrade` runs on a pty
//! this test drives as a user would (reads the screen, types answers), over a throwaway
//! root whose `/etc/demo.conf` the user edited, so dpkg asks about it.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::pty::OpenptFlags;
use rustix::termios;

use crate::upgrade::{World, audit_clean, kill_everything_touching};

/// The user's edit of the configuration file.
pub(crate) const MINE: &str = "colour = red # mine\n";
/// What beta ships (`ru_demo::tiny`).
pub(crate) const SHIPPED: &str = "# demo.conf as shipped in beta\ncolour = green\n";
/// dpkg's conffile prompt.
const PROMPT: &str = "(Y/I/N/O/D/Z)";

/// A program on a terminal of this test: the screen as text, keys typed.
pub(crate) struct Terminal {
    master: Arc<OwnedFd>,
    screen: Arc<Mutex<Vec<u8>>>,
    child: Child,
    /// How much of the screen earlier expectations consumed.
    seen: usize,
}

impl Terminal {
    /// Starts `cmd` as the leader of a new session whose controlling terminal is a new
    /// 40×120 pty (util-linux `setsid --ctty`), as a login shell would.
    pub(crate) fn start(cmd: &Command) -> Terminal {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = rustix::pty::openpt(flags).unwrap();
        rustix::pty::grantpt(&master).unwrap();
        rustix::pty::unlockpt(&master).unwrap();
        let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags).unwrap();
        termios::tcsetwinsize(
            &slave,
            termios::Winsize {
                ws_row: 40,
                ws_col: 120,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .unwrap();
        let mut wrapped = Command::new("setsid");
        wrapped
            .args(["--ctty", "--wait"])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env("TERM", "xterm")
            // dpkg's "D" shows the difference through $PAGER; cat needs no keys to end.
            .env("PAGER", "cat")
            .env("RELEASE_UPGRADER_RETRY_DELAY_MS", "10")
            .env_remove("http_proxy")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let child = wrapped.spawn().unwrap();
        drop(wrapped);
        let master = Arc::new(master);
        let screen: Arc<Mutex<Vec<u8>>> = Arc::default();
        {
            let (master, screen) = (master.clone(), screen.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // Ends with EIO once every holder of the slave side is gone.
                while let Ok(n) = rustix::io::read(&*master, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        Terminal {
            master,
            screen,
            child,
            seen: 0,
        }
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until `needle` appears on the screen after what was already seen.
    #[track_caller]
    pub(crate) fn expect(&mut self, needle: &str, within: Duration) {
        let started = Instant::now();
        loop {
            let text = self.text();
            if let Some(at) = text.get(self.seen..).and_then(|t| t.find(needle)) {
                self.seen += at + needle.len();
                return;
            }
            assert!(
                started.elapsed() < within,
                "{needle:?} did not appear within {within:?}; the screen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `keys` (a user's Enter is `\r`).
    pub(crate) fn type_keys(&self, keys: &str) {
        let mut rest = keys.as_bytes();
        while !rest.is_empty() {
            let n = rustix::io::write(&*self.master, rest).unwrap();
            rest = &rest[n..];
        }
    }

    /// Waits for the program to end; its exit code.
    #[track_caller]
    pub(crate) fn wait(&mut self, within: Duration) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // What was still in flight on the pty.
                std::thread::sleep(Duration::from_millis(200));
                return status.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < within,
                "still running after {within:?}; the screen:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(crate) fn edited_world() -> World {
    let w = World::new();
    std::fs::write(w.root.join("etc/demo.conf"), MINE).unwrap();
    w
}

/// Starts an interactive upgrade and says yes to its own questions (alpha's demo-legacy
/// is gone from beta: remove it; start the upgrade).
fn upgrade_accepted(w: &World) -> Terminal {
    let mut term = Terminal::start(&w.command(&["upgrade"]));
    term.expect("Remove them with the upgrade", Duration::from_secs(60));
    term.type_keys("y\r");
    term.expect("Do you want to start the upgrade?", Duration::from_secs(60));
    term.type_keys("y\r");
    term
}

/// [`upgrade_accepted`], up to dpkg's question about the user's configuration file.
fn upgrade_until_the_question(w: &World) -> Terminal {
    let mut term = upgrade_accepted(w);
    term.expect(
        "Configuration file '/etc/demo.conf'",
        Duration::from_secs(120),
    );
    term.expect(PROMPT, Duration::from_secs(30));
    term
}

fn term_log(root: &Path) -> String {
    std::fs::read_to_string(root.join("var/log/dist-upgrade/apt-term.log")).unwrap_or_default()
}

#[test]
fn the_conffile_question_is_on_screen_d_shows_the_difference_and_n_keeps_the_users_file() {
    let w = edited_world();
    let mut term = upgrade_until_the_question(&w);
    // "D": the difference between the user's file and the maintainer's, then the
    // question again.
    term.type_keys("D\r");
    term.expect("-colour = red # mine", Duration::from_secs(30));
    term.expect("+colour = green", Duration::from_secs(5));
    term.expect(PROMPT, Duration::from_secs(30));
    term.type_keys("N\r");
    let code = term.wait(Duration::from_secs(180));
    assert_eq!(code, 0, "the screen:\n{}", term.text());
    assert!(
        term.text().contains("The system is now 2 (beta)"),
        "{}",
        term.text()
    );
    assert_eq!(
        w.read("/etc/demo.conf"),
        MINE,
        "the user's file was replaced"
    );
    assert_eq!(w.read("/etc/demo.conf.dpkg-dist"), SHIPPED);
    w.assert_all_on_beta("after answering N");
    // The log has the question and the answers, as the screen had them.
    let log = term_log(&w.root);
    assert!(
        log.contains(PROMPT) && log.contains("-colour = red # mine"),
        "{log}"
    );
    let main = std::fs::read_to_string(w.root.join("var/log/dist-upgrade/main.log")).unwrap();
    assert!(
        main.contains("question on the terminal: what to do with the changed /etc/demo.conf"),
        "{main}"
    );
}

#[test]
fn answering_y_installs_the_maintainers_configuration_file() {
    let w = edited_world();
    let mut term = upgrade_until_the_question(&w);
    term.type_keys("Y\r");
    let code = term.wait(Duration::from_secs(180));
    assert_eq!(code, 0, "the screen:\n{}", term.text());
    assert_eq!(w.read("/etc/demo.conf"), SHIPPED);
    assert_eq!(w.read("/etc/demo.conf.dpkg-old"), MINE);
    w.assert_all_on_beta("after answering Y");
}

/// A question a maintainer script asks on its own (as debconf's readline frontend does):
/// a line left waiting for input is taken for a prompt and put on the screen.
#[test]
fn a_maintainer_scripts_own_question_is_shown_and_answered_on_the_terminal() {
    let w = World::with_hello_postinst(
        "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n\
         printf 'Which colour should hello greet in? [blue]: '\n\
         read answer\necho \"$answer\" > /etc/demo-colour\nfi\n",
    );
    let mut term = upgrade_accepted(&w);
    term.expect(
        "Which colour should hello greet in? [blue]: ",
        Duration::from_secs(120),
    );
    term.type_keys("purple\r");
    let code = term.wait(Duration::from_secs(180));
    assert_eq!(code, 0, "the screen:\n{}", term.text());
    assert_eq!(w.read("/etc/demo-colour"), "purple\n");
    w.assert_all_on_beta("after the script's question");
    let main = std::fs::read_to_string(w.root.join("var/log/dist-upgrade/main.log")).unwrap();
    assert!(
        main.contains("question on the terminal: \"Which colour should hello greet in? [blue]:\""),
        "{main}"
    );
}

/// Killed at the question (the power goes, or the user closes the terminal): the
/// upgrade's state is dpkg's half-configured package behind the prompt.
fn killed_at_the_question() -> World {
    let w = edited_world();
    let mut term = upgrade_until_the_question(&w);
    // The whole session: the client, its guard and apt (dpkg has a session of apt's).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(term.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    kill_everything_touching(&w.root);
    term.wait(Duration::from_secs(30));
    assert!(
        w.root
            .join("var/lib/release-upgrader/upgrade.json")
            .exists(),
        "the journal is gone"
    );
    let journal =
        std::fs::read_to_string(w.root.join("var/lib/release-upgrader/upgrade.json")).unwrap();
    assert!(journal.contains(r#""answers": "terminal""#), "{journal}");
    w
}

#[test]
fn killed_at_the_question_an_unattended_resume_keeps_the_users_file_and_finishes() {
    let w = killed_at_the_question();
    let run = w.run(&["upgrade", "-y", "-f", "noninteractive"]);
    run.expect(0)
        .mentions(&["interrupted while packages were being installed; resuming"]);
    assert_eq!(w.read("/etc/demo.conf"), MINE);
    w.assert_all_on_beta("after the unattended resume");
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
    audit_clean(&w.root);
}

#[test]
fn killed_at_the_question_an_interactive_resume_asks_again_on_screen_and_finishes() {
    let w = killed_at_the_question();
    let mut term = Terminal::start(&w.command(&["upgrade"]));
    term.expect("resuming it", Duration::from_secs(60));
    term.expect(PROMPT, Duration::from_secs(120));
    term.type_keys("Y\r");
    let code = term.wait(Duration::from_secs(180));
    assert_eq!(code, 0, "the screen:\n{}", term.text());
    assert_eq!(w.read("/etc/demo.conf"), SHIPPED);
    w.assert_all_on_beta("after the interactive resume");
    audit_clean(&w.root);
}

#[test]
fn with_yes_on_a_terminal_nothing_is_asked_and_the_users_file_is_kept() {
    let w = edited_world();
    let mut term = Terminal::start(&w.command(&["upgrade", "-y"]));
    let code = term.wait(Duration::from_secs(180));
    assert_eq!(code, 0, "the screen:\n{}", term.text());
    assert!(!term.text().contains(PROMPT), "{}", term.text());
    // Nobody was asked, and the user is told what dpkg decided.
    assert!(
        term.text().contains(
            "Kept your version of /etc/demo.conf; the package's new one is /etc/demo.conf.dpkg-dist"
        ),
        "{}",
        term.text()
    );
    assert_eq!(w.read("/etc/demo.conf"), MINE);
    w.assert_all_on_beta("after -y");
}

#[test]
fn a_frontend_this_tool_lacks_says_it_falls_back_to_text() {
    let w = World::new();
    w.run(&["upgrade", "--dry-run", "-f", "DistUpgradeViewGtk3"])
        .expect(0)
        .mentions(&[
            "no frontend \"DistUpgradeViewGtk3\"",
            "using the text frontend instead",
        ]);
    // An empty name is a mistake, not a frontend.
    w.run(&["upgrade", "--dry-run", "-f", ""])
        .expect(2)
        .mentions(&["an empty frontend name"]);
}

/// `-f json`: the program driving the run (the DBus service) reads dpkg's question as a
/// `question` event and answers it with a line on stdin; no terminal anywhere.
#[test]
fn with_f_json_the_conffile_question_is_an_event_answered_on_stdin() {
    use std::io::{BufRead, BufReader, Write};
    let w = edited_world();
    let mut cmd = w.command(&["--json", "upgrade", "-f", "json", "-y"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut events = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "question" {
            assert_eq!(event["kind"], "conffile", "{event}");
            assert_eq!(event["path"], "/etc/demo.conf", "{event}");
            // No pager, no shell for a program.
            assert_eq!(event["choices"], serde_json::json!(["Y", "I", "N", "O"]));
            assert!(event["answer"].is_null(), "{event}");
            // "D" is not offered, but typed anyway it shows the difference (into the log:
            // no pager waits for keys) and dpkg asks again, which "Y" answers.
            stdin.write_all(b"D\n").unwrap();
            std::thread::sleep(Duration::from_secs(3));
            stdin.write_all(b"Y\n").unwrap();
        }
        events.push(event);
    }
    let status = child.wait().unwrap();
    let questions = events.iter().filter(|e| e["event"] == "question").count();
    assert_eq!(questions, 1, "{events:#?}");
    assert_eq!(status.code(), Some(0), "{events:#?}");
    assert_eq!(w.read("/etc/demo.conf"), SHIPPED);
    assert_eq!(w.read("/etc/demo.conf.dpkg-old"), MINE);
    w.assert_all_on_beta("after answering Y on stdin");
    let main = std::fs::read_to_string(w.root.join("var/log/dist-upgrade/main.log")).unwrap();
    assert!(
        main.contains(
            "question for the program driving the run: what to do with the changed /etc/demo.conf"
        ),
        "{main}"
    );
    let log = term_log(&w.root);
    assert!(log.contains("-colour = red # mine"), "{log}");
}

/// `-f json` without `-y`: the program confirms. The demo's obsolete package comes as a
/// `confirm` question; then the `upgrade-plan` event carries the numbers, and the `start`
/// question waits for a line on stdin; `Y` starts.
#[test]
fn with_f_json_and_no_y_the_plan_comes_first_and_y_on_stdin_starts_the_upgrade() {
    use std::io::{BufRead, BufReader, Write};
    let w = World::new();
    let mut child = w
        .command(&["--json", "upgrade", "-f", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut events: Vec<serde_json::Value> = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "question" && event["kind"] == "confirm" {
            assert!(
                event["text"].as_str().unwrap().contains("demo-legacy"),
                "{event}"
            );
            assert_eq!(event["choices"], serde_json::json!(["Y", "N"]));
            stdin.write_all(b"Y\n").unwrap();
        } else if event["event"] == "question" {
            assert_eq!(event["kind"], "start", "{event}");
            assert_eq!(event["choices"], serde_json::json!(["Y", "N"]));
            assert_eq!(event["default"], "N");
            let plan = events
                .iter()
                .find(|e| e["event"] == "upgrade-plan")
                .unwrap_or_else(|| panic!("no plan before the question: {events:#?}"));
            assert!(plan["upgrades"].as_u64().unwrap() > 0, "{plan}");
            // The obsolete package leaves with the upgrade, as confirmed.
            assert_eq!(
                plan["removed"],
                serde_json::json!(["demo-legacy"]),
                "{plan}"
            );
            assert_eq!(plan["removals"], 1, "{plan}");
            // Nothing downloaded or installed yet.
            assert!(
                !events
                    .iter()
                    .any(|e| e["event"] == "phase" && e["id"] == "download"),
                "{events:#?}"
            );
            stdin.write_all(b"y\n").unwrap();
        }
        events.push(event);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{events:#?}");
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "question")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["confirm", "start"], "{events:#?}");
    w.assert_all_on_beta("after confirming the plan on stdin");
}

/// Nobody confirms (stdin ends): the default, N, is taken and everything is put back.
#[test]
fn with_f_json_and_no_y_an_unconfirmed_plan_puts_everything_back() {
    let w = World::new();
    let before = w.before();
    let out = w
        .command(&["--json", "upgrade", "-f", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(r#""event":"question""#) && l.contains(r#""kind":"start""#)),
        "{stdout}"
    );
    w.assert_put_back(&before);
    assert!(!w.root.join("usr/lib/release-upgrader").exists());
    audit_clean(&w.root);
}

#[test]
fn f_json_without_json_is_a_usage_error() {
    let w = World::new();
    let out = w
        .command(&["upgrade", "-f", "json", "-y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("add --json"), "{err}");
}

/// The program answering went away (its end of stdin closed): the question still comes
/// as an event, and dpkg takes its default (the user's file kept), instead of waiting
/// for an answer that never comes.
#[test]
fn with_f_json_and_nobody_left_to_answer_the_question_takes_its_default() {
    let w = edited_world();
    let out = w
        .command(&["--json", "upgrade", "-f", "json", "-y"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(r#""event":"question""#) && l.contains("/etc/demo.conf")),
        "{stdout}"
    );
    assert_eq!(w.read("/etc/demo.conf"), MINE);
    assert_eq!(w.read("/etc/demo.conf.dpkg-dist"), SHIPPED);
    w.assert_all_on_beta("after a default answer");
}
