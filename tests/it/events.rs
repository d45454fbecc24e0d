//! The `--json` events against their schema (docs/events.schema.json) on real runs of the
//! binary: every line fits, a `result` ends every run exactly once with the process's exit
//! code; and the behaviour that comes with them: the modes, `check`'s next step and notes,
//! a dry run that writes nothing and waits for no lock, and root-only commands refused to
//! a user who cannot write the root.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{BIN, Fixture, Run, bookworm_and_trixie, snapshot};
use crate::upgrade::World;

const SCHEMA: &str = include_str!("../../docs/events.schema.json");

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema is a valid JSON schema")
    })
}

/// Why `event` does not fit the schema, if it does not.
fn violation(event: &Value) -> Option<String> {
    let errors: Vec<String> = validator()
        .iter_errors(event)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// Every stdout line is an event that fits the schema; exactly one `result`, the last
/// line, carries the process's exit code, and so does every `error`. Returns the events.
#[track_caller]
pub(crate) fn assert_events(run: &Run) -> Vec<Value> {
    let events = run.json_lines();
    let context = || format!("--- stdout\n{}\n--- stderr\n{}", run.stdout(), run.stderr());
    for event in &events {
        if let Some(why) = violation(event) {
            panic!("{event} does not fit the schema: {why}\n{}", context());
        }
    }
    let results: Vec<&Value> = events.iter().filter(|e| e["event"] == "result").collect();
    assert_eq!(results.len(), 1, "one result event\n{}", context());
    assert_eq!(
        events.last().map(|e| &e["event"]),
        Some(&json!("result")),
        "the result is last\n{}",
        context()
    );
    assert_eq!(
        results[0]["exit_code"],
        json!(run.code()),
        "result = exit code\n{}",
        context()
    );
    for error in events.iter().filter(|e| e["event"] == "error") {
        assert_eq!(
            error["exit_code"],
            json!(run.code()),
            "error = exit code\n{}",
            context()
        );
    }
    events
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// The phases as `id:state` in the order they came.
fn phases(events: &[Value]) -> Vec<String> {
    named(events, "phase")
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["id"].as_str().unwrap(),
                e["state"].as_str().unwrap()
            )
        })
        .collect()
}

// ------------------------------------------------------------------ the schema itself

#[test]
fn the_schema_refuses_an_unknown_event_a_missing_field_and_a_stray_one() {
    for good in [
        json!({"event": "result", "exit_code": 0}),
        json!({"event": "phase", "id": "install", "state": "end", "ok": true}),
        json!({"event": "progress", "id": 3, "label": "Installing", "unit": "packages",
               "done": 2, "total": null, "percent": 41.5, "item": "demo-hello",
               "finished": false}),
        json!({"event": "question", "kind": "conffile", "package": "demo-conf",
               "path": "/etc/demo.conf", "text": "?", "choices": ["Y", "N"], "default": "N"}),
        json!({"event": "check", "available": false, "reason": "none", "hint": null}),
    ] {
        assert_eq!(violation(&good), None, "{good}");
    }
    for bad in [
        json!({"event": "reslut", "exit_code": 0}),
        json!({"event": "result"}),
        json!({"event": "result", "exit_code": 7}),
        json!({"event": "result", "exit_code": "0"}),
        json!({"exit_code": 0}),
        json!({"event": "phase", "id": "install"}),
        json!({"event": "phase", "id": "reboot", "state": "start"}),
        json!({"event": "phase", "id": "install", "state": "start", "extra": 1}),
        json!({"event": "progress", "id": 1, "label": "x", "done": 0, "total": 1,
               "percent": 0.0, "finished": false}),
        json!({"event": "progress", "id": 1, "label": "x", "unit": "bytes", "done": 0,
               "total": 1, "percent": 120.0, "finished": false}),
        json!({"event": "error", "exit_code": 2, "message": "m"}),
        json!({"event": "check"}),
        json!({"event": "message"}),
    ] {
        assert!(violation(&bad).is_some(), "accepted: {bad}");
    }
}

// ------------------------------------------------------------------ check

#[test]
fn check_ends_in_one_result_with_the_next_step_and_shows_the_notes_when_asked() {
    let f = Fixture::new();
    std::fs::write(
        f.srv.join("notes.html"),
        "<!DOCTYPE html><html><body><h1>Trixie</h1><p>Read &amp; enjoy.</p>\
         <script>x()</script></body></html>",
    )
    .unwrap();
    let notes_uri = format!("{}notes.html", f.server.url());
    f.publish_meta_release(&bookworm_and_trixie(&f.base_uri(), Some(&notes_uri)));

    let text = f.run(&["check"]);
    text.expect(0)
        .mentions(&["Run 'release-upgrader --root", "upgrade' to upgrade to it."]);
    assert_eq!(text.stdout(), "New release '13' (trixie) available.\n");

    let run = f.run(&["--json", "check"]);
    run.expect(0);
    let events = assert_events(&run);
    let check = named(&events, "check")[0];
    assert_eq!(check["available"], true);
    assert!(
        check["next_step"].as_str().unwrap().ends_with(" upgrade"),
        "{check}"
    );
    assert_eq!(check["release_notes"], Value::Null);

    let run = f.run(&["--json", "check", "--notes"]);
    run.expect(0);
    let events = assert_events(&run);
    let notes = &named(&events, "check")[0]["release_notes"];
    assert_eq!(notes["uri"], json!(notes_uri));
    assert_eq!(notes["text"], "Trixie\n\nRead & enjoy.");

    let text = f.run(&["check", "--notes"]);
    text.expect(0)
        .mentions(&["Release notes (", "Read & enjoy."]);
    assert!(!text.stdout().contains("<h1>"), "{}", text.stdout());
}

#[test]
fn failing_checks_end_in_a_result_with_their_own_exit_code() {
    let f = Fixture::new();
    // No newer release: exit 1, and a `check` event saying so.
    f.publish_meta_release(&bookworm_and_trixie(&f.base_uri(), None)[..1]);
    let run = f.run(&["--json", "check"]);
    run.expect(1);
    let events = assert_events(&run);
    assert_eq!(named(&events, "check")[0]["available"], false);

    // A tampered meta-release: exit 3 with an error event of 3 (a new fixture: the old
    // one's meta-release is cached, and may still look unchanged within the second).
    let f = Fixture::new();
    f.tamper(&f.srv.join("meta-release"), None);
    let run = f.run(&["--json", "check"]);
    run.expect(3);
    assert_eq!(named(&assert_events(&run), "error").len(), 1);

    // The command line refused: exit 2, still with the events.
    let run = f.run(&["--json", "chekc"]);
    run.expect(2);
    assert_eq!(named(&assert_events(&run), "error").len(), 1);

    // A dry run of the helpers' install fits the schema too.
    let f = Fixture::new();
    let run = f.run(&["--json", "bootstrap", "--dry-run"]);
    run.expect(0);
    assert_eq!(named(&assert_events(&run), "plan").len(), 1);
}

// ------------------------------------------------------------------ upgrade

/// `World::run` with environment variables set (and the ssh/multiplexer ones cleared).
fn run_world(w: &World, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = w.command(args);
    for var in ["SSH_CONNECTION", "SSH_TTY", "STY", "TMUX"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run(cmd.output().unwrap())
}

/// The World's meta-release again, with release notes for beta served beside it.
fn publish_notes(w: &World) -> String {
    std::fs::write(w.srv.join("beta-notes.txt"), "Beta is out.\n\nEnjoy it.\n").unwrap();
    let notes = format!("{}beta-notes.txt", w.url);
    w.publish_meta_release(&[("ReleaseNotes", &notes)]);
    notes
}

/// The confirmation nobody can give (`--json`, no terminal, no `-y`) is a usage error,
/// said before anything changes: exit 2, and the error event and the result say 2 (they
/// said 2 while the process exited 5, after a rollback).
#[test]
fn an_upgrade_nobody_can_confirm_stops_at_once_with_exit_2_everywhere() {
    let w = World::new();
    let before = snapshot(&w.root);
    let run = run_world(&w, &["--json", "upgrade"], &[]);
    run.expect(2).mentions(&["pass -y"]);
    let events = assert_events(&run);
    assert_eq!(named(&events, "error").len(), 1);
    assert_eq!(snapshot(&w.root), before, "the root changed");
    // Without --json (and without a terminal) the same.
    run_world(&w, &["upgrade"], &[]).expect(2);
    assert_eq!(snapshot(&w.root), before, "the root changed");
}

#[test]
fn a_real_upgrade_reports_every_phase_in_order_and_one_result() {
    let w = World::new();
    let notes = publish_notes(&w);
    // The user's edit: dpkg keeps it without asking, and the run says so.
    std::fs::write(w.root.join("etc/demo.conf"), "colour = red # mine\n").unwrap();
    let run = run_world(
        &w,
        &[
            "--json",
            "upgrade",
            "-y",
            "-f",
            "noninteractive",
            "-m",
            "desktop",
        ],
        &[],
    );
    run.expect(0);
    let events = assert_events(&run);
    let mut expected = Vec::new();
    for id in [
        "preflight",
        "bootstrap",
        "sources",
        "update",
        "plan",
        "download",
        "install",
        "cleanup",
    ] {
        expected.push(format!("{id}:start"));
        expected.push(format!("{id}:end"));
    }
    assert_eq!(phases(&events), expected);
    assert!(
        named(&events, "phase")
            .iter()
            .filter(|e| e["state"] == "end")
            .all(|e| e["ok"] == true)
    );
    // dpkg's part counts packages, with apt's percent; nothing counts apt's work in bytes.
    let install: Vec<&Value> = named(&events, "progress")
        .into_iter()
        .filter(|e| e["label"] == "Installing")
        .collect();
    assert!(!install.is_empty(), "no install progress");
    assert!(install.iter().all(|e| e["unit"] == "packages"));
    let last = install.last().unwrap();
    assert_eq!(last["finished"], true);
    assert_eq!(last["ok"], true);
    // 4 upgraded, 1 new, 1 removed: all reached.
    assert_eq!(
        (&last["done"], &last["total"]),
        (&json!(6), &json!(6)),
        "{last}"
    );
    // Desktop mode: the notes before the upgrade, a restart at the end.
    let shown = named(&events, "release-notes");
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["uri"], json!(notes));
    assert_eq!(shown[0]["text"], "Beta is out.\n\nEnjoy it.");
    assert_eq!(
        named(&events, "reboot"),
        [&json!({"event": "reboot", "required": true})]
    );
    assert!(w.read("/etc/os-release").contains("beta"));
    let questions = named(&events, "question");
    assert_eq!(questions.len(), 1, "{questions:?}");
    assert_eq!(
        (
            &questions[0]["kind"],
            &questions[0]["path"],
            &questions[0]["answer"]
        ),
        (&json!("conffile"), &json!("/etc/demo.conf"), &json!("N"))
    );
    assert_eq!(w.read("/etc/demo.conf"), "colour = red # mine\n");
    // The root lacks apt's preferences.d: apt was told so, and did not warn about it.
    let apt_log = w.read("/var/log/dist-upgrade/apt.log");
    assert!(!apt_log.contains("preferences.d"), "{apt_log}");
}

#[test]
fn a_failing_upgrade_ends_with_the_rollback_code_in_its_error_and_result() {
    let w = World::new();
    w.fail("dists/beta/InRelease", 500);
    let run = run_world(
        &w,
        &[
            "--json",
            "upgrade",
            "-y",
            "-f",
            "noninteractive",
            "--retries",
            "0",
        ],
        &[],
    );
    run.expect(5);
    let events = assert_events(&run);
    let failed: Vec<&Value> = named(&events, "phase")
        .into_iter()
        .filter(|e| e["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0]["id"], "update");
}

// ------------------------------------------------------------------ dry run and modes

/// A dry run while another package manager holds dpkg's lock: it says who, returns at once
/// (no wait for the lock), and leaves the root's tree exactly as it was (no logs, no state
/// directory, no apt configuration, no refreshed lists).
#[test]
fn a_dry_run_takes_no_lock_and_writes_nothing() {
    let w = World::new();
    let mut holder = crate::support::hold_frontend_lock(&w.root, None);
    let before = snapshot(&w.root);
    let started = Instant::now();
    let run = run_world(&w, &["upgrade", "--dry-run", "--lock-timeout", "300"], &[]);
    let took = started.elapsed();
    let json = run_world(&w, &["--json", "upgrade", "--dry-run"], &[]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    run.expect(0)
        .mentions(&["package system is in use", "python3", "Nothing was changed"]);
    assert!(took < Duration::from_secs(60), "waited {took:?}");
    json.expect(0);
    let events = assert_events(&json);
    assert_eq!(phases(&events), ["preflight:start", "preflight:end"]);
    assert_eq!(snapshot(&w.root), before, "the dry run changed the root");
    for path in ["var/log/dist-upgrade", "var/lib/release-upgrader"] {
        assert!(!w.root.join(path).exists(), "{path} created");
    }
}

#[test]
fn the_dry_run_says_what_each_mode_changes() {
    let w = World::new();
    publish_notes(&w);
    let ssh = [("SSH_CONNECTION", "192.0.2.1 50000 192.0.2.2 22")];
    let plain = run_world(&w, &["upgrade", "--dry-run"], &ssh);
    let desktop = run_world(&w, &["upgrade", "--dry-run", "-m", "desktop"], &ssh);
    let server = run_world(&w, &["upgrade", "--dry-run", "-m", "server"], &ssh);
    let screened = run_world(
        &w,
        &["upgrade", "--dry-run", "-m", "server"],
        &[ssh[0], ("STY", "1234.pts-0.host")],
    );
    for run in [&plain, &desktop, &server, &screened] {
        run.expect(0);
    }
    desktop.mentions(&[
        "Desktop mode: desktop metapackages are never removed (none installed)",
        "beta-notes.txt",
    ]);
    server.mentions(&[
        "warning: This upgrade runs over ssh",
        "offers to continue inside screen",
    ]);
    screened.mentions(&["inside screen or tmux; a dropped connection"]);
    assert!(
        !screened
            .stderr()
            .contains("warning: This upgrade runs over ssh")
    );
    let outputs = [&plain, &desktop, &server, &screened].map(|r| r.stderr());
    for (i, a) in outputs.iter().enumerate() {
        for b in &outputs[i + 1..] {
            assert_ne!(a, b, "two modes gave the same dry run");
        }
    }
    assert!(!plain.stderr().contains("mode:"), "{}", plain.stderr());
}

// ------------------------------------------------------------------ root only

/// Runs the client as `nobody` (setpriv drops to its uid, gid and no groups).
fn run_as_nobody(root: &Path, args: &[&str]) -> Run {
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN])
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    Run(out)
}

/// Commands that change the system, run by a user who may not write the root, say so and
/// exit 2 before they touch anything; commands that only read still run; a root the user
/// owns needs no root.
#[test]
fn commands_that_change_the_system_need_a_root_the_user_may_write() {
    let w = World::new();
    let before = snapshot(&w.root);
    let commands: &[&[&str]] = &[
        &["upgrade", "-y"],
        &["--json", "upgrade", "-y"],
        &["bootstrap"],
        &["cleanup"],
        &["image", "apply"],
        &["image", "opt-out", "--mirror", "http://192.0.2.1/debian"],
        &["image", "opt-in"],
        &["image", "recover"],
    ];
    for args in commands {
        let run = run_as_nobody(&w.root, args);
        run.expect(2).mentions(&["needs root: run it with sudo"]);
        if args[0] == "--json" {
            assert_events(&run);
        }
    }
    assert_eq!(
        snapshot(&w.root),
        before,
        "a refused command changed the root"
    );
    // Reading is for everyone: the dry run is refused nothing for being nobody (it may
    // fail for what nobody cannot read, but not with the root check).
    let dry = run_as_nobody(&w.root, &["upgrade", "--dry-run"]);
    assert!(!dry.stderr().contains("needs root"), "{}", dry.stderr());

    // A root of nobody's own: cleanup runs.
    let own = tempfile::Builder::new()
        .prefix("nobody-root")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(own.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = own.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
    run_as_nobody(&root, &["cleanup"])
        .expect(0)
        .mentions(&["No helpers were installed."]);
}

// ------------------------------------------------------------------ the text front end

/// `script` gives the client a terminal; what it drew, with escape sequences removed.
fn run_on_terminal(w: &World, args: &[&str]) -> (i32, String) {
    let mut line = vec![
        BIN.to_owned(),
        "--root".into(),
        w.root.display().to_string(),
        "--keyring".into(),
        w.keyring.display().to_string(),
        "--meta-release-uri".into(),
        format!("{}meta-release", w.url),
        "--arch".into(),
        "amd64".into(),
    ];
    line.extend(args.iter().map(|a| a.to_string()));
    let quoted: Vec<String> = line.iter().map(|a| format!("'{a}'")).collect();
    let shell = format!("stty cols 120 rows 40; {}", quoted.join(" "));
    let out = Command::new("script")
        .args(["-qfec", &shell, "/dev/null"])
        .env("TERM", "xterm")
        .env("COLUMNS", "100")
        .env("RELEASE_UPGRADER_RETRY_DELAY_MS", "10")
        .env_remove("http_proxy")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), strip_escapes(&raw))
}

fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_text_front_end_draws_phases_and_percent_and_says_the_plan_once() {
    let w = World::new();
    let (code, screen) = run_on_terminal(&w, &["upgrade", "-y", "-f", "noninteractive"]);
    assert_eq!(code, 0, "{screen}");
    for heading in [
        "[1/8] Checking the system",
        "[7/8] Installing the new release",
    ] {
        assert!(screen.contains(heading), "no {heading:?}\n{screen}");
    }
    assert_eq!(
        screen.matches("packages will be upgraded").count(),
        1,
        "the plan is not said once\n{screen}"
    );
    assert!(!screen.contains("preferences.d"), "{screen}");
    // Bars carry whole names and counts that read right; apt's work is a percent, not
    // its counters drawn as bytes.
    assert!(screen.contains("release-upgrader-apt 2.6.1"), "{screen}");
    // A download bar is drawn and its count reads right ("1 package", "4 packages"; which
    // of the two downloads draws first depends on timing: a short one may end before its
    // first draw).
    let counts: Vec<(u32, &str)> = screen
        .split("Downloading ")
        .skip(1)
        .filter_map(|rest| {
            let mut words = rest.split(' ');
            Some((words.next()?.parse().ok()?, words.next()?))
        })
        .collect();
    assert!(!counts.is_empty(), "no download bar\n{screen}");
    for (n, noun) in counts {
        assert_eq!(
            noun,
            if n == 1 { "package" } else { "packages" },
            "{screen}"
        );
    }
    for wrong in ["0 packages", "1 packages", "B/1000 B", "B/1.00 KiB"] {
        assert!(!screen.contains(wrong), "{wrong:?} drawn\n{screen}");
    }
    assert!(screen.contains("%  Installing: demo-"), "{screen}");
}
