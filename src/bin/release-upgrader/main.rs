//! `release-upgrader`: the commands run on the system being upgraded. This binary only
//! parses, calls the client library and renders; it links neither the publisher nor the
//! test fixtures (the demo is its own binary, `release-upgrader-demo`, run from here).

mod args;
mod image;

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
    let cli = ClientCli::parse();
    let ui = Ui::new(cli.global.json, cli.global.quiet, cli.global.verbose);
    ui.install_logger();
    let code = match run(&cli, &ui) {
        Ok(code) => code,
        Err(err) => ui.fail(&err),
    };
    ui::exit(code)
}

fn run(cli: &ClientCli, ui: &Ui) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    match &cli.command {
        ClientCommand::Check => check(&session(global, ui, None)?, ui),
        ClientCommand::Verify { file, sigfile } => verify(global, ui, file, sigfile.as_deref()),
        ClientCommand::Bootstrap { dry_run: true, .. } => {
            bootstrap_dry_run(&session(global, ui, None)?, ui)
        }
        ClientCommand::Bootstrap {
            dry_run: false,
            no_reexec,
        } => {
            let cancel = cancel_on_signals();
            let session = session(global, ui, Some(cancel.clone()))?;
            bootstrap(&session, ui, global, *no_reexec, &cancel)
        }
        ClientCommand::Helpers => helpers(&SystemRoot::new(&global.root), ui),
        ClientCommand::Upgrade(args) if args.check_only => check(&session(global, ui, None)?, ui),
        ClientCommand::Upgrade(args) => upgrade(global, args, ui),
        ClientCommand::Cdrom(CdromCommand::Detect { paths }) => cdrom_detect(global, paths, ui),
        ClientCommand::Image(command) => {
            crate::image::run(command, global, &image_fetcher(global, ui), ui)
        }
        ClientCommand::Demo { args } => demo(global, args),
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

fn check(session: &Session, ui: &Ui) -> anyhow::Result<ExitCode> {
    let target = match session.find_target(true) {
        Ok(target) => target,
        Err(err) if err.exit_code() == ExitCode::NoUpgrade => return Ok(no_upgrade(ui, &err)),
        Err(err) => return Err(err).context("looking for a new release"),
    };
    let (dist, version) = (&target.target.dist, &target.target.version);
    if let Some(reason) = &target.target.upgrade_broken {
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
    ui.data(
        &format!("New release '{version}' ({dist}) available."),
        json!({
            "event": "check",
            "available": true,
            "current": release_json(&target.current),
            "target": release_json(&target.target),
            "meta_release": {"uri": target.meta_release.uri, "signed_by": signed_by(&target)},
            "pocket": plan.as_ref().map(plan_json),
        }),
    );
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

fn bootstrap_dry_run(session: &Session, ui: &Ui) -> anyhow::Result<ExitCode> {
    let (target, plan) = session.target_and_helpers(None, false)?;
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
    cancel: &Arc<AtomicBool>,
) -> anyhow::Result<ExitCode> {
    let (target, plan) = session.target_and_helpers(None, true)?;
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
    let program = helper_env::reexec_target(&store, &manifests);
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
}

impl ru_client::upgrade::run::Interaction for CliInteraction<'_> {
    fn ask(&self, question: &str) -> Option<bool> {
        use std::io::{BufRead, IsTerminal, Write};
        if self.ui.json || !std::io::stdin().is_terminal() {
            return None;
        }
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok()?;
        Some(matches!(
            answer.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    }

    fn say(&self, text: &str) {
        if self.ui.json {
            self.ui.data("", json!({"event": "step", "text": text}));
        } else {
            self.ui.note(text);
        }
    }

    fn watching(&self) -> bool {
        use std::io::IsTerminal;
        !self.ui.json && self.ui.verbosity >= 0 && std::io::stderr().is_terminal()
    }

    fn progress(&self) -> Arc<dyn ru_trust::progress::Progress> {
        self.progress.clone()
    }
}

fn image_fetcher(global: &GlobalArgs, ui: &Ui) -> Fetcher {
    Fetcher::new(fetch_config(global)).with_progress(ui.progress())
}

fn upgrade(global: &GlobalArgs, args: &UpgradeArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    // docs/protocol.md §5: read-only or system-image devices upgrade with images, not apt.
    let mode = ru_client::image::mode::choose(&SystemRoot::new(&global.root))
        .context("deciding between image updates and apt")?;
    if mode == ru_client::image::mode::Mode::Image {
        return crate::image::upgrade(global, args.dry_run, &image_fetcher(global, ui), ui);
    }
    use ru_client::upgrade::run::{Frontend, Interaction as _, Prepared, UpgradeOptions, Upgrader};
    let frontend = match (args.frontend, args.mode) {
        (Some(FrontendArg::Noninteractive), _) | (None, Some(ModeArg::Cloud)) => {
            Frontend::Noninteractive
        }
        _ => Frontend::Text,
    };
    let options = UpgradeOptions {
        frontend,
        assume_yes: args.yes,
        allow_third_party: args.allow_third_party,
        dry_run: args.dry_run,
        cdrom: args.cdrom.clone(),
        keep_helpers: args.keep_helpers,
        allow_pending: args.allow_pending,
        lock_timeout: Duration::from_secs(args.lock_timeout),
    };
    let cancel = cancel_on_signals();
    let session = session(global, ui, Some(cancel))?;
    let io = CliInteraction {
        ui,
        progress: session.fetcher.progress(),
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
                let program = helper_env::reexec_target(&store, &installed);
                // The target release's own upgrader takes over (docs/protocol.md §4).
                if let Some(core) = helper_env::core_takeover(&store, &installed) {
                    io.say(&helper_env::announce_takeover(&store, &core));
                }
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
        Err(failure) => {
            ui.fail(&failure.error);
            Ok(failure.code)
        }
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
            if media.helper_pocket.is_some() {
                "yes"
            } else {
                "no"
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
            "cannot run the demo ({err}); it is the release-upgrader-demo binary, built with \
             `cargo build` and installed beside release-upgrader"
        ),
    }
    .into())
}
