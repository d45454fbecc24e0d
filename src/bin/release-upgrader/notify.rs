//! `release-upgrader notify` (docs/protocol.md §8): the desktop user's announcement of a
//! new release. Thin: the policy and the bus live in `ru_client::notify`. It runs as the
//! user, so it is not among the commands that need a writable root.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::args::{GlobalArgs, NotifyArgs};
use ru_client::error::ExitCode;
use ru_client::metarelease::{Prompt, read_prompt};
use ru_client::notify::bus::{self, Checked};
use ru_client::notify::{Decision, Found, Outcome, Quiet, UserState, decide, notification};
use ru_client::root::SystemRoot;
use ru_client::ui::Ui;

pub fn run(args: &NotifyArgs, global: &GlobalArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let prompt = read_prompt(&SystemRoot::new(&global.root))?;
    // Prompt=never: not even the service is asked.
    if prompt == Prompt::Never {
        return Ok(quiet(ui, &Quiet::PromptNever, None));
    }
    let state = UserState::locate(|name| std::env::var_os(name))?;
    let Some(_lock) = state.lock()? else {
        let reason = "another release-upgrader notify of this user is running";
        ui.data(
            &format!("Nothing to announce: {reason}."),
            json!({"event": "notify", "announced": false, "reason": reason,
                   "codename": null, "version": null}),
        );
        return Ok(ExitCode::NoUpgrade);
    };
    let mut dismissed = state.load()?;
    let deadline = Instant::now() + Duration::from_secs(args.check_timeout.max(1));
    let found = match bus::check_release(deadline)
        .context("asking the system service for a new release")?
    {
        Checked::Upgrading => return Ok(quiet(ui, &Quiet::Busy, None)),
        Checked::Found(found) => found,
    };
    if let Decision::Quiet(why) = decide(prompt, &dismissed, &found) {
        return Ok(quiet(ui, &why, Some(&found)));
    }
    ui.data(
        &format!(
            "Announced the new release {} ({}).",
            found.version, found.codename
        ),
        json!({"event": "notify", "announced": true, "reason": null,
               "codename": found.codename, "version": found.version}),
    );
    let deadline = Instant::now() + Duration::from_secs(args.wait.max(1));
    let outcome = bus::notify_and_wait(&notification(&found), deadline)
        .context("posting the desktop notification")?;
    let (said, launched) = match &outcome {
        Outcome::Action(key) if key == "upgrade" => {
            launch(&args.launcher)?;
            ("upgrade".to_owned(), Some(args.launcher.to_string_lossy()))
        }
        Outcome::Action(key) if key == "dismiss" => {
            dismissed.insert(&found.codename);
            state
                .save(&dismissed)
                .context("remembering the dismissed release")?;
            ui.note(&format!(
                "{} will not be announced again; a later release will.",
                found.codename
            ));
            ("dismiss".to_owned(), None)
        }
        Outcome::Action(key) => (format!("action:{key}"), None),
        Outcome::Closed(_) => ("closed".to_owned(), None),
        Outcome::TimedOut => ("timed-out".to_owned(), None),
    };
    ui.data(
        &format!("The notification ended: {said}."),
        json!({"event": "notification", "outcome": said, "launched": launched,
               "closed_reason": match outcome { Outcome::Closed(r) => Some(r), _ => None }}),
    );
    Ok(ExitCode::Success)
}

/// Nothing to announce: said, and exit 1 as `check` without a release.
fn quiet(ui: &Ui, why: &Quiet, found: Option<&Found>) -> ExitCode {
    let reason = why.reason();
    ui.data(
        &format!("Nothing to announce: {reason}."),
        json!({"event": "notify", "announced": false, "reason": reason,
               "codename": found.map(|f| &f.codename), "version": found.map(|f| &f.version)}),
    );
    ExitCode::NoUpgrade
}

/// Starts the upgrader detached: its own process group, no terminal, nothing inherited on
/// stdin or stdout; it outlives this process (whose end reaps nothing: init adopts it).
fn launch(program: &std::ffi::OsStr) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};
    let child = Command::new(program)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| ru_client::error::Error::Config {
            path: program.into(),
            reason: format!("cannot start the upgrader: {e} (is release-upgrader-gtk installed?)"),
        })?;
    log::info!("started {} (pid {})", program.to_string_lossy(), child.id());
    // Not waited for: the desktop's upgrader runs on after this process ends.
    std::mem::forget(child);
    Ok(())
}
