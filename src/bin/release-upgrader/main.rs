//! `release-upgrader`: the commands run on the system being upgraded. This binary only
//! parses, calls the client library and renders; it links neither the publisher nor the
//! test fixtures (the demo is its own binary, `release-upgrader-demo`, run from here).

mod args;
#[path = "../../clidocs.rs"]
mod clidocs;
mod image;
mod notify;
mod service;

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;

use crate::args::{
    CdromCommand, ClientCli, ClientCommand, FrontendArg, GlobalArgs, ModeArg, UpgradeArgs,
};
use ru_client::error::{Error, ExitCode};
use ru_client::helpers::{self, InstallOutcome, Store, env as helper_env};
use ru_client::metarelease::{Authenticity, Channel};
use ru_client::root::SystemRoot;
use ru_client::session::{HelperPlan, Session, SessionOptions, UpgradeTarget};
use ru_client::ui::{self, Ui};
use ru_trust::fetch::{FetchConfig, Fetcher};
use ru_trust::openpgp;
use ru_trust::progress::human_size;

/// Entry point of the `release-upgrader` binary.
pub fn main() -> std::process::ExitCode {
    // Started as the guard of one of our own children: nothing else to do.
    if let Some(code) = ru_client::upgrade::children::guard_entry() {
        return code;
    }
    let cli = match ClientCli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let ui = Ui::new(cli.global.json, cli.global.quiet, cli.global.verbose);
    ui.install_logger();
    // Every way out of a command ends in one `result` event with the exit code (a panic,
    // a bug, included: it has printed where it happened, and ends as exit 2).
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&cli, &ui))) {
        Ok(Ok(code)) => code,
        Ok(Err(err)) => ui.fail(&err),
        Err(_) => ui.fail_with(
            &anyhow::anyhow!("internal error: release-upgrader panicked (a bug; see above)"),
            ExitCode::Usage,
        ),
    };
    ui.result(code);
    ui::exit(code)
}

/// A command line clap refuses: its message and exit 2, and with `--json` (anywhere
/// before `--`) also the `error` and `result` events. `--help` and `--version` print
/// their text.
fn usage_error(err: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if !json
        || matches!(
            err.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
        )
    {
        err.exit();
    }
    let _ = err.print();
    let rendered = err.render().to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned();
    let ui = Ui::new(true, 0, 0);
    ui.event(&ru_client::events::Event::Error {
        exit_code: ExitCode::Usage.code(),
        message,
        causes: Vec::new(),
        hint: Some("see release-upgrader --help".into()),
    });
    ui.result(ExitCode::Usage);
    ui::exit(ExitCode::Usage)
}

/// The name of the command when it changes the system (docs/protocol.md §8, "Root"):
/// those run only by a user who may write the root.
fn writes_root(command: &ClientCommand) -> Option<&'static str> {
    match command {
        ClientCommand::Bootstrap { dry_run: false, .. } => Some("bootstrap"),
        ClientCommand::Upgrade(args) if !args.dry_run && !args.check_only => Some("upgrade"),
        ClientCommand::Cleanup { .. } => Some("cleanup"),
        ClientCommand::Check { motd: true, .. } => Some("check --motd"),
        ClientCommand::Image(command) => command.writes(),
        ClientCommand::Service(command) => Some(command.name()),
        _ => None,
    }
}

/// Refuses, before anything is touched, a command that changes the system when this user
/// may not write its root: root itself for `/`, and for `--root DIR` whoever may write
/// DIR (so a chroot of one's own needs no sudo). A root that does not exist, or is
/// read-only (an image device), is left for the command to judge.
fn require_writable_root(root: &std::path::Path, command: &str) -> Result<(), Error> {
    use nix::unistd::AccessFlags;
    match nix::unistd::faccessat(
        nix::fcntl::AT_FDCWD,
        root,
        AccessFlags::W_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    ) {
        Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => Err(Error::NeedsRoot {
            command: command.to_owned(),
            root: root.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn run(cli: &ClientCli, ui: &Ui) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    if let Some(command) = writes_root(&cli.command) {
        require_writable_root(&global.root, command)?;
    }
    match &cli.command {
        ClientCommand::Check { notes, motd } => {
            check(&session(global, ui, None)?, ui, global, *notes, *motd)
        }
        ClientCommand::Verify { file, sigfile } => verify(global, ui, file, sigfile.as_deref()),
        ClientCommand::Bootstrap {
            dry_run: true,
            cdrom,
            ..
        } => bootstrap_dry_run(&session(global, ui, None)?, ui, cdrom.as_deref()),
        ClientCommand::Bootstrap {
            dry_run: false,
            no_reexec,
            cdrom,
        } => {
            let cancel = cancel_on_signals();
            let session = session(global, ui, Some(cancel.clone()))?;
            bootstrap(&session, ui, global, *no_reexec, cdrom.as_deref(), &cancel)
        }
        ClientCommand::Helpers => helpers(&SystemRoot::new(&global.root), ui),
        ClientCommand::Upgrade(args) if args.check_only => {
            check(&session(global, ui, None)?, ui, global, false, false)
        }
        ClientCommand::Upgrade(args) => upgrade(global, args, ui),
        ClientCommand::Cdrom(CdromCommand::Detect { paths }) => cdrom_detect(global, paths, ui),
        ClientCommand::Image(command) => {
            crate::image::run(command, global, &image_fetcher(global, ui), ui)
        }
        ClientCommand::Notify(args) => crate::notify::run(args, global, ui),
        ClientCommand::Service(command) => {
            crate::service::run(command, global, Fetcher::new(fetch_config(global)), ui)
        }
        ClientCommand::Demo { args } => demo(global, args),
        ClientCommand::Docs(command) => {
            if let Some(said) = command.run::<ClientCli>()? {
                ui.note(&said);
            }
            Ok(ExitCode::Success)
        }
        ClientCommand::Cleanup { purge_state } => {
            cleanup(&SystemRoot::new(&global.root), ui, *purge_state)
        }
    }
}

/// Ctrl-C and SIGTERM set the returned flag, which long operations poll to roll back and
/// exit with 130; a second signal ends the process at once (the journal recovers).
fn cancel_on_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone());
        let _ = signal_hook::flag::register(signal, flag.clone());
    }
    flag
}

/// Fetch settings from the global flags. `RELEASE_UPGRADER_RETRY_DELAY_MS` shortens the
/// first retry delay (tests use it; it doubles on each further retry).
fn fetch_config(global: &GlobalArgs) -> FetchConfig {
    let mut config = FetchConfig::new("release-upgrader");
    config.retries = global.retries;
    config.connect_timeout = Duration::from_secs(global.timeout.max(1));
    config.stall_timeout = Duration::from_secs(global.timeout.max(1));
    config.low_speed_time = Duration::from_secs(global.timeout.max(1));
    config.offline = global.without_network;
    if let Some(ms) = std::env::var("RELEASE_UPGRADER_RETRY_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.retry_delay = Duration::from_millis(ms);
    }
    config
}

fn session(
    global: &GlobalArgs,
    ui: &Ui,
    cancel: Option<Arc<AtomicBool>>,
) -> anyhow::Result<Session> {
    let options = SessionOptions {
        keyrings: global.keyring.clone(),
        meta_release_uri: global.meta_release_uri.clone(),
        channel: Channel {
            devel: global.devel,
            proposed: global.proposed,
        },
        allow_unsigned_meta_release: global.allow_unsigned_meta_release,
        arch: global.arch.clone(),
    };
    let root = SystemRoot::new(&global.root);
    let session = Session::new(root, options, fetch_config(global))
        .with_context(|| format!("reading the system at {}", global.root.display()))?;
    let mut fetcher = Fetcher::new(session.fetcher.config().clone()).with_progress(ui.progress());
    if let Some(cancel) = cancel {
        fetcher = fetcher.with_cancel(cancel);
    }
    Ok(session.with_fetcher(fetcher))
}

fn release_json(entry: &ru_client::metarelease::ReleaseEntry) -> serde_json::Value {
    serde_json::to_value(entry).expect("release entries serialise")
}

fn signed_by(target: &UpgradeTarget) -> Vec<String> {
    match &target.meta_release.authenticity {
        Authenticity::Signed(signers) => signers.iter().map(|s| s.fingerprint.clone()).collect(),
        Authenticity::UnsignedAllowed => Vec::new(),
    }
}

/// Prints why there is no upgrade, for the exit-1 failures.
fn no_upgrade(ui: &Ui, err: &Error) -> ExitCode {
    ui.data(
        "No new release found.",
        json!({"event": "check", "available": false, "reason": err.to_string(), "hint": err.hint()}),
    );
    ui.note(&format!("note: {err}"));
    if let Some(hint) = err.hint() {
        ui.detail(&format!("hint: {hint}"));
    }
    ExitCode::NoUpgrade
}

/// Keeps the login notice of `check --motd`: the text when a release is available, none
/// when not. A check that failed keeps what the last one left.
fn keep_release_notice(global: &GlobalArgs, notice: Option<&str>) -> anyhow::Result<()> {
    ru_client::state::StateDir::new(&SystemRoot::new(&global.root))
        .set_release_notice(notice)
        .context("keeping the login notice (--motd)")
}

fn check(
    session: &Session,
    ui: &Ui,
    global: &GlobalArgs,
    notes: bool,
    motd: bool,
) -> anyhow::Result<ExitCode> {
    let target = match session.find_target(true) {
        Ok(target) => target,
        Err(err) if err.exit_code() == ExitCode::NoUpgrade => {
            if motd {
                keep_release_notice(global, None)?;
            }
            return Ok(no_upgrade(ui, &err));
        }
        Err(err) if err.exit_code() == ExitCode::Network => {
            return check_media(session, ui, global, notes, motd, err);
        }
        Err(err) => return Err(err).context("looking for a new release"),
    };
    let (dist, version) = (&target.target.dist, &target.target.version);
    if let Some(reason) = &target.target.upgrade_broken {
        if motd {
            keep_release_notice(global, None)?;
        }
        return Ok(no_upgrade(
            ui,
            &Error::UpgradeBroken {
                dist: dist.clone(),
                reason: reason.clone(),
            },
        ));
    }
    ui.detail(&format!(
        "Running {} ({}); meta-release {} {}",
        target.current.dist,
        target.current.version,
        target.meta_release.uri,
        match signed_by(&target).first() {
            Some(fpr) => format!("signed by {fpr}"),
            None => "unsigned (allowed)".into(),
        }
    ));
    // The helper pocket is checked too: "available" means the helpers can be had.
    let plan = match session.network_pocket(&target) {
        Ok(request) => Some(session.helpers_for(&target, &request, true)?),
        Err(err @ Error::NoHelperPocket { .. }) => {
            ui.note(&format!("note: {err}"));
            None
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(plan) = &plan {
        ui.detail(&format!(
            "Helper pocket {}: {} helpers, {} to download",
            plan.pocket.location,
            plan.packages.len(),
            human_size(plan.download_size())
        ));
    }
    // The notes are for reading: notes that cannot be had are said, and `check` still
    // answers what it was asked.
    let release_notes = if notes {
        match ru_client::release_notes::uri(&target.target) {
            Some(uri) => match ru_client::release_notes::fetch(&session.fetcher, uri) {
                Ok(notes) => Some(notes),
                Err(err) => {
                    log::warn!("the release notes could not be read from {uri}: {err}");
                    None
                }
            },
            None => {
                log::warn!("the meta-release gives no release notes for {dist}");
                None
            }
        }
    } else {
        None
    };
    let next_step = next_step(global, "");
    let mut text = format!("New release '{version}' ({dist}) available.");
    if motd {
        keep_release_notice(
            global,
            Some(&format!("{text}\nRun '{next_step}' to upgrade to it.\n")),
        )?;
    }
    if let Some(notes) = &release_notes {
        text.push_str(&format!(
            "\n\nRelease notes ({}):\n\n{}\n",
            notes.uri, notes.text
        ));
    }
    ui.data(
        &text,
        json!({
            "event": "check",
            "available": true,
            "current": release_json(&target.current),
            "target": release_json(&target.target),
            "meta_release": {"uri": target.meta_release.uri, "signed_by": signed_by(&target)},
            "pocket": plan.as_ref().map(plan_json),
            "next_step": next_step,
            "release_notes": release_notes.as_ref().map(|n| json!({"uri": n.uri, "text": n.text})),
        }),
    );
    ui.note(&format!("Run '{next_step}' to upgrade to it."));
    Ok(ExitCode::Success)
}

/// The command that upgrades (with `extra` flags after `upgrade`).
fn next_step(global: &GlobalArgs, extra: &str) -> String {
    format!(
        "release-upgrader{} upgrade{extra}",
        if global.root == std::path::Path::new("/") {
            String::new()
        } else {
            format!(" --root {}", global.root.display())
        }
    )
}

/// `check` when no release list can be read (`unreachable`): mounted upgrade media that
/// carry a newer release, verified, and their helpers resolved, are the answer, with the
/// `--cdrom` command that upgrades from them; with none, the network's error.
fn check_media(
    session: &Session,
    ui: &Ui,
    global: &GlobalArgs,
    notes: bool,
    motd: bool,
    unreachable: Error,
) -> anyhow::Result<ExitCode> {
    let Some(offer) = session.media_offers().into_iter().next() else {
        return Err(anyhow::Error::new(unreachable).context("looking for a new release"));
    };
    ui.note(&format!(
        "note: the release list cannot be read: {unreachable}"
    ));
    let target = &offer.target;
    let plan = session.helpers_for(target, &offer.request, true)?;
    let path = &offer.media.path;
    let (dist, version) = (&target.target.dist, &target.target.version);
    ui.detail(&format!(
        "Running {}; upgrade media at {} ({}), Release signed by {}",
        target.current.dist,
        path.display(),
        offer.media.info,
        signed_by(target).first().map_or("?", String::as_str)
    ));
    if notes {
        log::warn!("upgrade media give no release notes");
    }
    let next_step = next_step(global, &format!(" --cdrom {}", path.display()));
    let text = format!(
        "New release '{version}' ({dist}) available on the upgrade media at {}.",
        path.display()
    );
    if motd {
        keep_release_notice(
            global,
            Some(&format!("{text}\nRun '{next_step}' to upgrade to it.\n")),
        )?;
    }
    ui.data(
        &text,
        json!({
            "event": "check",
            "available": true,
            "source": "media",
            "reason": unreachable.to_string(),
            "media": offer.media,
            "current": release_json(&target.current),
            "target": release_json(&target.target),
            "meta_release": {"uri": target.meta_release.uri, "signed_by": signed_by(target)},
            "pocket": plan_json(&plan),
            "next_step": next_step,
            "release_notes": null,
        }),
    );
    ui.note(&format!("Run '{next_step}' to upgrade to it."));
    Ok(ExitCode::Success)
}

fn plan_json(plan: &HelperPlan) -> serde_json::Value {
    json!({
        "uri": plan.pocket.location.to_string(),
        "codename": plan.pocket.release.codename,
        "date": plan.pocket.release.date_text,
        "helpers": plan.packages,
        "download_size": plan.download_size(),
    })
}

fn bootstrap_dry_run(
    session: &Session,
    ui: &Ui,
    cdrom: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let (target, plan) = session.target_and_helpers(cdrom, false)?;
    let dist = &target.target.dist;
    let mut text = format!(
        "Helpers for the upgrade to {} ({dist}) from {}:\n",
        target.target.version, plan.pocket.location
    );
    let width = plan
        .packages
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0);
    for p in &plan.packages {
        text.push_str(&format!(
            "  {:width$}  {:<16} {:<6} {:>9}\n",
            p.name,
            p.version.to_string(),
            p.architecture,
            human_size(p.size)
        ));
    }
    text.push_str(&format!(
        "{} packages, {} to download; nothing was changed (--dry-run).",
        plan.packages.len(),
        human_size(plan.download_size())
    ));
    ui.data(
        &text,
        json!({"event": "plan", "dry_run": true, "target": release_json(&target.target), "pocket": plan_json(&plan)}),
    );
    Ok(ExitCode::Success)
}

fn verify(
    global: &GlobalArgs,
    ui: &Ui,
    file: &std::path::Path,
    sigfile: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    // `verify` needs no running release: only the root's keyrings.
    let root = SystemRoot::new(&global.root);
    let keyring = ru_client::session::trusted_keyring(&root, &global.keyring)?;
    let data = fs_err::read(file).map_err(|e| Error::io(file, e))?;
    let what = file.display().to_string();
    let verified = match sigfile {
        Some(sigfile) => {
            let signature = fs_err::read(sigfile).map_err(|e| Error::io(sigfile, e))?;
            openpgp::verify_detached(&keyring, data, &signature, &what)?
        }
        None => openpgp::verify_clearsigned(&keyring, &data, &what)?,
    };
    let lines: Vec<String> = verified
        .signers()
        .iter()
        .map(|s| format!("Good signature from {s}"))
        .collect();
    ui.data(
        &lines.join("\n"),
        json!({"event": "verify", "file": what, "good": true, "signers": verified.signers()}),
    );
    Ok(ExitCode::Success)
}

fn bootstrap(
    session: &Session,
    ui: &Ui,
    global: &GlobalArgs,
    no_reexec: bool,
    cdrom: Option<&std::path::Path>,
    cancel: &Arc<AtomicBool>,
) -> anyhow::Result<ExitCode> {
    let (target, plan) = session.target_and_helpers(cdrom, true)?;
    let dist = &target.target.dist;
    let store = Store::new(&session.root);
    let progress = session.fetcher.progress();
    let outcome = helpers::install(
        &store,
        &session.fetcher,
        &plan,
        &session.arch,
        &*progress,
        cancel,
    );
    let outcome = match outcome {
        Err(e) if e.is_cancelled() => {
            ui.note("Cancelled; the helper prefix was left as it was.");
            return Ok(ExitCode::Cancelled);
        }
        other => other.with_context(|| format!("installing the helpers for {dist}"))?,
    };
    let (manifests, text) = match outcome {
        InstallOutcome::AlreadyInstalled(manifests) => {
            let text = format!(
                "The helpers for {} ({dist}) are already installed in {}.",
                target.target.version,
                store.prefix.display()
            );
            (manifests, text)
        }
        InstallOutcome::Installed {
            manifests,
            replaced,
        } => {
            let mut text = format!(
                "Installed {} helpers for {} ({dist}) into {} ({} downloaded).",
                manifests.len(),
                target.target.version,
                store.prefix.display(),
                human_size(plan.download_size())
            );
            if !replaced.is_empty() {
                text.push_str(&format!(" Replaced {} older helpers.", replaced.len()));
            }
            (manifests, text)
        }
    };
    ui.data(
        &text,
        json!({"event": "bootstrap", "target": release_json(&target.target),
               "prefix": store.prefix, "helpers": manifests_json(&manifests)}),
    );
    if no_reexec || helper_env::reexecuted().is_some() {
        return Ok(ExitCode::Success);
    }
    // Continue in the helper environment: `helpers` shows what the new apt and dpkg report.
    let program = helper_env::reexec_target(helper_env::core_takeover(&store, &manifests).as_ref());
    let mut args: Vec<OsString> = global.to_args();
    args.push("helpers".into());
    let Err(err) = helper_env::reexec(&store, &program, &args);
    Err(anyhow::Error::new(err).context("re-executing with the helpers"))
}

fn manifests_json(manifests: &[helpers::Manifest]) -> serde_json::Value {
    manifests
        .iter()
        .map(|m| {
            json!({"name": m.package, "version": m.version,
                   "architecture": m.architecture, "files": m.file_count()})
        })
        .collect()
}

/// The first line a helper program prints for `--version`, if it runs.
fn helper_version(store: &Store, program: &str) -> Option<String> {
    let path = store.prefix.join(ru_format::layout::BIN).join(program);
    let out = ru_client::task::Task::new(&path)
        .arg("--version")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out);
    let first = text.lines().next()?.trim().to_owned();
    (!first.is_empty()).then_some(first)
}

fn helpers(root: &SystemRoot, ui: &Ui) -> anyhow::Result<ExitCode> {
    let store = Store::new(root);
    if store.interrupted()? {
        log::warn!(
            "an interrupted helper transaction is pending; `release-upgrader bootstrap` or \
             `cleanup` will recover it"
        );
    }
    let installed = store.installed()?;
    let apt = helper_version(&store, "apt-get");
    let dpkg = helper_version(&store, "dpkg");
    let reexecuted = helper_env::reexecuted();
    let mut text = if installed.is_empty() {
        "No helpers are installed.".to_owned()
    } else {
        let width = installed.iter().map(|m| m.package.len()).max().unwrap_or(0);
        let mut text = format!("Helpers in {}:\n", store.prefix.display());
        for m in &installed {
            text.push_str(&format!(
                "  {:width$}  {:<16} {:>6} files\n",
                m.package,
                m.version,
                m.file_count()
            ));
        }
        text.push_str(&format!(
            "apt-get --version: {}\ndpkg --version: {}",
            apt.as_deref().unwrap_or("(does not run)"),
            dpkg.as_deref().unwrap_or("(does not run)")
        ));
        text
    };
    if let Some(prefix) = &reexecuted {
        text.push_str(&format!(
            "\nRunning with the helpers of {} (re-executed; PATH starts with {}).",
            prefix.display(),
            prefix.join(ru_format::layout::BIN).display()
        ));
    }
    ui.data(
        &text,
        json!({"event": "helpers", "prefix": store.prefix, "helpers": manifests_json(&installed),
               "apt_get_version": apt, "dpkg_version": dpkg,
               "reexecuted": reexecuted.is_some()}),
    );
    Ok(ExitCode::Success)
}

fn cleanup(root: &SystemRoot, ui: &Ui, purge_state: bool) -> anyhow::Result<ExitCode> {
    let store = Store::new(root);
    let report = helpers::remove_all(&store, purge_state).context("removing the helpers")?;
    let mut text = if report.removed.is_empty() {
        "No helpers were installed.".to_owned()
    } else {
        format!(
            "Removed {} helpers ({} paths) from {}.",
            report.removed.len(),
            report.paths,
            store.prefix.display()
        )
    };
    for change in &report.changed {
        text.push_str(&format!(
            "\n  changed since install: {} ({})",
            change.path, change.what
        ));
    }
    if !report.foreign.is_empty() {
        text.push_str(&format!(
            "\nLeft {} paths that no helper installed in {}:",
            report.foreign.len(),
            store.prefix.display()
        ));
        for path in report.foreign.iter().take(20) {
            text.push_str(&format!("\n  {path}"));
        }
    }
    ui.data(&text, json!({"event": "cleanup", "report": report}));
    Ok(ExitCode::Success)
}

/// The upgrade's questions and messages on this terminal (or as JSON lines).
struct CliInteraction<'a> {
    ui: &'a Ui,
    progress: Arc<dyn ru_trust::progress::Progress>,
    /// `-f json`: the program driving the run answers, one line on stdin per `question`.
    program_answers: bool,
}

impl ru_client::upgrade::run::Interaction for CliInteraction<'_> {
    fn ask(&self, kind: ru_client::events::QuestionKind, question: &str) -> Option<bool> {
        if self.program_answers {
            return Some(ask_program(self.ui, kind, question));
        }
        if !self.can_ask() {
            return None;
        }
        // The bars step aside while the question waits.
        self.progress.hold(true);
        let answer = ask_terminal(question, false);
        self.progress.hold(false);
        answer
    }

    fn say(&self, text: &str) {
        self.ui.message(text);
    }

    /// The bars show apt's progress; its own lines (in `apt-term.log`) come with `-v`.
    fn shows_apt_output(&self) -> bool {
        self.watching() && self.ui.verbosity >= 1
    }

    fn can_ask(&self) -> bool {
        use std::io::IsTerminal;
        self.program_answers || (!self.ui.json && std::io::stdin().is_terminal())
    }

    fn notify(&self, event: &ru_client::events::Event) {
        self.ui.show(event);
    }

    fn watching(&self) -> bool {
        use std::io::IsTerminal;
        !self.ui.json && self.ui.verbosity >= 0 && std::io::stderr().is_terminal()
    }

    fn progress(&self) -> Arc<dyn ru_trust::progress::Progress> {
        self.progress.clone()
    }
}

/// Asks the program driving the run (`-f json`): a `question` event with the choices Y
/// and N, answered by one line on stdin. Read a byte at a time, unbuffered: dpkg's
/// questions later in the run are answered from the same descriptor. The default, N, is
/// taken for an empty line and when stdin ends (the program went away): an upgrade nobody
/// confirms does not start.
fn ask_program(ui: &Ui, kind: ru_client::events::QuestionKind, question: &str) -> bool {
    use ru_client::events::{Event, Question};
    ui.show(&Event::Question(Question {
        kind,
        package: None,
        path: None,
        text: question.to_owned(),
        choices: vec!["Y".into(), "N".into()],
        default: Some("N".into()),
        answer: None,
    }));
    let line = ru_client::upgrade::term::read_line_unbuffered(std::io::stdin());
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Asks `question` on the terminal; `default` is taken for an empty answer.
fn ask_terminal(question: &str, default: bool) -> Option<bool> {
    use std::io::{BufRead, Write};
    eprint!("{question} {} ", if default { "[Y/n]" } else { "[y/N]" });
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).ok()?;
    Some(match answer.trim().to_ascii_lowercase().as_str() {
        "" => default,
        "y" | "yes" => true,
        _ => false,
    })
}

/// `-m server` over ssh outside screen or tmux: offers to continue inside `screen`, as
/// Ubuntu's upgrader does, so that a dropped connection leaves the upgrade running. With
/// no terminal, no `screen`, `--json`, or a "no", the upgrade goes on here (the library
/// warns). `RELEASE_UPGRADER_NO_SCREEN` (set for the run inside screen) stops a second offer.
fn offer_screen(args: &UpgradeArgs, ui: &Ui) -> anyhow::Result<()> {
    use ru_client::upgrade::mode::{Seat, this_seat};
    use std::io::IsTerminal;
    if args.mode != Some(ModeArg::Server)
        || args.dry_run
        || helper_env::reexecuted().is_some()
        || std::env::var_os("RELEASE_UPGRADER_NO_SCREEN").is_some()
        || this_seat() != Seat::BareSsh
        || ui.json
        || !std::io::stdin().is_terminal()
        || !std::io::stderr().is_terminal()
    {
        return Ok(());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let Some(screen) = std::env::split_paths(&path)
        .map(|dir| dir.join("screen"))
        .find(|p| p.is_file())
    else {
        ui.note("screen is not installed, so the upgrade cannot move into it.");
        return Ok(());
    };
    let question = "This upgrade runs over ssh and not inside screen or tmux; a dropped \
                    connection would stop it part way. Continue inside screen?";
    if ask_terminal(question, true) != Some(true) {
        return Ok(());
    }
    let me = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    use std::os::unix::process::CommandExt as _;
    // `-e ^@^@`-like: no command key, so the upgrade's own keys all reach it.
    let err = std::process::Command::new(&screen)
        .args(["-e", "\\0\\0", "-S", "release-upgrader"])
        .arg(&me)
        .args(std::env::args_os().skip(1))
        .env("RELEASE_UPGRADER_NO_SCREEN", "1")
        .exec();
    Err(anyhow::Error::new(Error::io(&screen, err)).context("continuing inside screen"))
}

fn image_fetcher(global: &GlobalArgs, ui: &Ui) -> Fetcher {
    Fetcher::new(fetch_config(global)).with_progress(ui.progress())
}

fn upgrade(global: &GlobalArgs, args: &UpgradeArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    if args.frontend == Some(FrontendArg::Json) && !global.json {
        anyhow::bail!(
            "-f json asks its questions as --json events: add --json (or use -f text or \
             -f noninteractive)"
        );
    }
    // docs/protocol.md §6: an opt-out staged for this boot (or interrupted) decides the
    // mode, so it is finished first (a dry run only says so).
    let root = SystemRoot::new(&global.root);
    crate::image::settle_opt(&root, args.dry_run, ui)?;
    // docs/protocol.md §5: read-only or system-image devices upgrade with images, not apt.
    let mode =
        ru_client::image::mode::choose(&root).context("deciding between image updates and apt")?;
    if mode == ru_client::image::mode::Mode::Image {
        return crate::image::upgrade(
            global,
            args.dry_run,
            args.yes,
            &image_fetcher(global, ui),
            ui,
        );
    }
    use ru_client::upgrade::mode::Mode;
    use ru_client::upgrade::run::{Frontend, Interaction as _, Prepared, UpgradeOptions, Upgrader};
    offer_screen(args, ui)?;
    if let Some(FrontendArg::Unavailable(name)) = &args.frontend {
        log::warn!(
            "this release-upgrader has no frontend {name:?} (the graphical ones are not \
             available yet); using the text frontend instead (-f text)"
        );
    }
    let frontend = match (&args.frontend, args.mode) {
        (Some(FrontendArg::Noninteractive), _) | (None, Some(ModeArg::Cloud)) => {
            Frontend::Noninteractive
        }
        (Some(FrontendArg::Json), _) => Frontend::Json,
        _ => Frontend::Text,
    };
    let options = UpgradeOptions {
        frontend,
        assume_yes: args.yes,
        allow_third_party: args.allow_third_party,
        dry_run: args.dry_run,
        cdrom: args.cdrom.clone(),
        without_network: global.without_network,
        keep_helpers: args.keep_helpers,
        allow_pending: args.allow_pending,
        lock_timeout: Duration::from_secs(args.lock_timeout),
        mode: args.mode.map(|mode| match mode {
            ModeArg::Desktop => Mode::Desktop,
            ModeArg::Server => Mode::Server,
            ModeArg::Cloud => Mode::Cloud,
        }),
    };
    let cancel = cancel_on_signals();
    let session = session(global, ui, Some(cancel))?;
    let io = CliInteraction {
        ui,
        progress: session.fetcher.progress(),
        program_answers: frontend == Frontend::Json,
    };
    let upgrader = Upgrader::new(&session, &options, &io);
    let result = if helper_env::reexecuted().is_some() {
        upgrader.continue_with_helpers()
    } else {
        match upgrader.prepare() {
            Ok(Prepared::DryRun) => Ok(ExitCode::Success),
            Ok(Prepared::ReExecute) => {
                let store = Store::new(&session.root);
                let installed = store.installed()?;
                // The target release's own upgrader takes over (docs/protocol.md §4).
                let core = helper_env::core_takeover(&store, &installed);
                if let Some(core) = &core {
                    io.say(&helper_env::announce_takeover(&store, core));
                }
                let program = helper_env::reexec_target(core.as_ref());
                let mut argv: Vec<OsString> = global.to_args();
                argv.extend(args.to_args());
                let Err(err) = helper_env::reexec(&store, &program, &argv);
                return Err(anyhow::Error::new(err).context("re-executing with the helpers"));
            }
            Err(failure) => Err(failure),
        }
    };
    match result {
        Ok(code) => Ok(code),
        // The error event carries the code the process exits with (a rolled-back run
        // is 5 whatever stopped it).
        Err(failure) => Ok(ui.fail_with(&failure.error, failure.code)),
    }
}

fn cdrom_detect(
    global: &GlobalArgs,
    paths: &[std::path::PathBuf],
    ui: &Ui,
) -> anyhow::Result<ExitCode> {
    let arch = global
        .arch
        .clone()
        .unwrap_or_else(ru_client::root::host_architecture);
    let found = ru_client::cdrom::detect(paths, &arch);
    if found.is_empty() {
        ui.data(
            "No upgrade media found.",
            json!({"event": "cdrom", "media": []}),
        );
        return Ok(ExitCode::NoUpgrade);
    }
    let mut text = String::new();
    for media in &found {
        text.push_str(&format!(
            "{}: {}\n  release: {}\n  helpers for {arch}: {}\n  package archive: {}\n",
            media.path.display(),
            media.info,
            media.codename.as_deref().unwrap_or("(unknown)"),
            match &media.helper_pocket {
                Some(pocket) => format!(
                    "yes ({})",
                    pocket.strip_prefix(&media.path).unwrap_or(pocket).display()
                ),
                None => "no".into(),
            },
            if media.has_archive { "yes" } else { "no" },
        ));
    }
    ui.data(text.trim_end(), json!({"event": "cdrom", "media": found}));
    Ok(ExitCode::Success)
}

/// `release-upgrader demo`: the demo publishes releases and serves them, which the client
/// must not carry, so it is its own binary installed beside this one; run it with the
/// global flags that mean something to it and the demo's own arguments as given.
fn demo(global: &GlobalArgs, args: &[OsString]) -> anyhow::Result<ExitCode> {
    let me = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let demo = me.with_file_name("release-upgrader-demo");
    let mut command = std::process::Command::new(&demo);
    if global.json {
        command.arg("--json");
    }
    for _ in 0..global.quiet {
        command.arg("-q");
    }
    for _ in 0..global.verbose {
        command.arg("-v");
    }
    if let Some(arch) = &global.arch {
        command.arg("--arch").arg(arch);
    }
    command.args(args);
    use std::os::unix::process::CommandExt as _;
    let err = command.exec();
    Err(Error::Config {
        path: demo,
        reason: format!(
            "cannot run the demo ({err}); it is the release-upgrader-demo binary, installed \
             beside release-upgrader by the release-upgrader-publish package or by `cargo build`"
        ),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn command(argv: &[&str]) -> ClientCommand {
        ClientCli::try_parse_from(std::iter::once("release-upgrader").chain(argv.iter().copied()))
            .unwrap()
            .command
    }

    /// docs/protocol.md §8: what changes the system needs a root the user may write;
    /// what only reads (dry runs included) does not.
    #[test]
    fn only_commands_that_change_the_system_need_a_writable_root() {
        for argv in [
            &["upgrade"][..],
            &["upgrade", "-y", "-m", "server"],
            &["bootstrap"],
            &["bootstrap", "--no-reexec"],
            &["bootstrap", "--cdrom", "/media/cdrom"],
            &["--without-network", "upgrade", "--cdrom", "/media/cdrom"],
            &["cleanup"],
            &["check", "--motd"],
            &["image", "download"],
            &["image", "apply"],
            &["image", "recover"],
            &["image", "opt-out", "--mirror", "http://192.0.2.1/"],
            &["image", "opt-in"],
            &["image", "settings", "set", "min_battery=5"],
            &["image", "settings", "del", "min_battery"],
            &["service", "system-image"],
        ] {
            assert!(writes_root(&command(argv)).is_some(), "{argv:?}");
        }
        for argv in [
            &["check"][..],
            &["check", "--notes"],
            &["upgrade", "--dry-run"],
            &["upgrade", "-c"],
            &["bootstrap", "--dry-run"],
            &["bootstrap", "--dry-run", "--cdrom", "/media/cdrom"],
            &["--without-network", "check"],
            &["helpers"],
            &["verify", "f"],
            &["cdrom", "detect"],
            &["image", "info"],
            &["image", "check"],
            &["image", "channels"],
            &["image", "settings", "get", "auto_download"],
            &["image", "settings", "show"],
            &["completions", "bash"],
            &["manpages", "--out", "d"],
        ] {
            assert_eq!(writes_root(&command(argv)), None, "{argv:?}");
        }
    }

    #[test]
    fn a_root_this_user_cannot_write_needs_root_and_one_it_can_does_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(require_writable_root(dir.path(), "cleanup").is_ok());
        // A root that does not exist is left to the command.
        assert!(require_writable_root(&dir.path().join("none"), "cleanup").is_ok());
        if nix::unistd::geteuid().is_root() {
            // root may write anywhere the file system allows: nothing more to see here.
            return;
        }
        let err = require_writable_root(std::path::Path::new("/"), "upgrade").unwrap_err();
        assert!(
            err.to_string().starts_with("needs root: run it with sudo"),
            "{err}"
        );
    }
}
