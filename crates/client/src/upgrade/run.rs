//! The upgrade, step by step (docs/protocol.md §1–4, issue: "The upgrade").
//!
//! Two processes share the work. The first checks the system (preflight), finds the
//! target, installs the target release's helpers and records the journal; then it
//! re-executes itself with the helpers. The second rewrites the sources, runs the target
//! release's apt (`update`, a simulated plan, confirmation, download, install, obsolete
//! packages removed but never purged), lists what removed packages left behind and
//! removes the helpers. Until dpkg changes a package, every failure is undone exactly
//! (exit 5), even when dpkg already ran and stopped at once; after, the way out is
//! forward and the message says how (exit 6).
//!
//! The code follows the run: `run/preflight.rs` checks the system and gathers what the plan
//! needs, [`crate::upgrade::plan`] decides (pure, tested on recorded apt output),
//! `run/packages.rs` runs apt up to the download with those decisions and `run/execute.rs` runs
//! dpkg's part and the end. This file holds the two stages' outline and the apt runners.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::confine::RelPath;
use crate::error::{Error, ExitCode};
use crate::events::{Event, PhaseId, PhaseState, Question, QuestionKind};
use crate::helpers::{self, Store};
use crate::progress::{self, Progress};
use crate::session::{HelperPlan, Session, UpgradeTarget};
use crate::upgrade::apt::{self, Apt};
use crate::upgrade::journal::{Phase, UpgradeJournal};
use crate::upgrade::logs::{self, Logs};
use crate::upgrade::mode::{self, Mode};
use crate::upgrade::plan;
use crate::upgrade::sources::{self, DistributionCheck, Rules};

mod execute;
mod packages;
mod preflight;

pub use crate::upgrade::plan::BUILTIN_REMOVAL_DENYLIST;

/// How questions are answered and apt's output shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Frontend {
    /// Questions on the terminal; dpkg may ask about configuration files.
    Text,
    /// No questions: the defaults (keep the old configuration files).
    Noninteractive,
    /// A program asks (`-f json`, the DBus service): dpkg's and debconf's questions are
    /// `question` events on stdout, each answered by one line on stdin.
    Json,
}

/// The options of `upgrade`.
#[derive(Clone, Debug)]
pub struct UpgradeOptions {
    pub frontend: Frontend,
    pub assume_yes: bool,
    pub allow_third_party: bool,
    pub dry_run: bool,
    pub cdrom: Option<PathBuf>,
    /// Use no network (`--without-network`): nothing is fetched but from the media, the
    /// running release's lists are not refreshed, apt reads only the media.
    pub without_network: bool,
    pub keep_helpers: bool,
    pub allow_pending: bool,
    pub lock_timeout: Duration,
    /// do-release-upgrade's mode, if one was given ([`crate::upgrade::mode`]).
    pub mode: Option<Mode>,
}

/// What the front end provides: answers, messages, progress.
pub trait Interaction: Sync {
    /// Asks a yes/no question (`kind`: [`QuestionKind::Start`] for whether to start, else
    /// [`QuestionKind::Confirm`]); `None` when nobody can answer.
    fn ask(&self, kind: QuestionKind, question: &str) -> Option<bool>;
    /// A message for the user (a step, a warning, a plan).
    fn say(&self, text: &str);
    /// Whether someone watches the terminal (apt's output is shown as it comes).
    fn watching(&self) -> bool;
    fn progress(&self) -> Arc<dyn Progress>;
    /// Whether apt's and dpkg's own output is shown as it comes (it always goes to
    /// `apt-term.log`). By default whenever someone watches; a front end drawing its own
    /// progress shows it only on request, so that apt's lines do not run through the bars
    /// (nor repeat the plan already shown).
    fn shows_apt_output(&self) -> bool {
        self.watching()
    }
    /// Whether anyone can answer [`Interaction::ask`] (a terminal, no `--json`): an upgrade
    /// that needs a confirmation nobody can give is refused before it changes anything.
    fn can_ask(&self) -> bool {
        true
    }
    /// A lifecycle event for the front end (phases, release notes, restart, questions):
    /// JSON lines with `--json`, headings on a terminal. Ignored by default.
    fn notify(&self, _event: &Event) {}
    /// dpkg or debconf asks `question` on the terminal. Reported (a `question` event), and
    /// the progress bars step aside until [`Interaction::answered`].
    fn question(&self, question: &Question) {
        self.progress().hold(true);
        self.notify(&Event::Question(question.clone()));
    }
    /// The question reported by [`Interaction::question`] was answered: bars come back.
    fn answered(&self) {
        self.progress().hold(false);
    }
}

/// How the first stage ended.
#[derive(Debug)]
pub enum Prepared {
    /// Ready for the helpers: re-execute.
    ReExecute,
    /// `--dry-run`: the report was shown; nothing changed.
    DryRun,
}

/// A failure of the upgrade, with the exit code it calls for.
#[derive(Debug)]
pub struct UpgradeFailure {
    pub code: ExitCode,
    pub error: anyhow::Error,
}

/// Where to find the running state of one upgrade.
pub struct Upgrader<'a> {
    pub session: &'a Session,
    pub options: &'a UpgradeOptions,
    pub io: &'a dyn Interaction,
    pub store: Store,
    /// The packages the plan acts on (upgraded, installed, removed, downgraded), for the
    /// install's progress; 0 until planned (a resumed run does not know).
    planned_packages: std::sync::atomic::AtomicU64,
    /// The session's fetcher without the network, made when first needed.
    offline_fetcher: std::sync::OnceLock<crate::fetch::Fetcher>,
}

impl<'a> Upgrader<'a> {
    pub fn new(session: &'a Session, options: &'a UpgradeOptions, io: &'a dyn Interaction) -> Self {
        Upgrader {
            session,
            options,
            io,
            store: Store::new(&session.root),
            planned_packages: Default::default(),
            offline_fetcher: Default::default(),
        }
    }

    /// The fetcher of this run: without the network when the user said so or the first
    /// stage found it down (the journal says), so nothing waits on a dead network.
    fn fetcher(&self, journal: &UpgradeJournal) -> &crate::fetch::Fetcher {
        if self.options.without_network || journal.without_network {
            self.offline_fetcher
                .get_or_init(|| self.session.fetcher.adjusted(|c| c.offline = true))
        } else {
            &self.session.fetcher
        }
    }

    fn state(&self) -> &Path {
        &self.store.state
    }

    fn root_args(&self) -> String {
        if self.session.root.is_host() {
            String::new()
        } else {
            format!(" --root {}", self.session.root.dir().display())
        }
    }

    /// Runs `work` as phase `id`: a `phase` start, then an end saying whether it worked.
    /// `main.log` gets both, with the phase's time (benches/upgrade.sh reads them).
    fn phase<T, E>(
        &self,
        id: PhaseId,
        logs: &Logs,
        work: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.io.notify(&Event::Phase {
            id,
            state: PhaseState::Start,
            ok: None,
        });
        let name = id.name();
        logs.main(&format!("phase {name}: start"));
        let started = std::time::Instant::now();
        let result = work();
        logs.main(&format!(
            "phase {name}: {} in {:.1} s",
            if result.is_ok() { "ok" } else { "failed" },
            started.elapsed().as_secs_f64()
        ));
        self.io.notify(&Event::Phase {
            id,
            state: PhaseState::End,
            ok: Some(result.is_ok()),
        });
        result
    }

    /// Whether the upgrade asks before it starts (no `-y`, no noninteractive front end).
    fn asks_to_start(&self) -> bool {
        !(self.options.assume_yes || self.options.frontend == Frontend::Noninteractive)
    }

    fn confirm(&self, question: &str) -> Result<bool, Error> {
        if !self.asks_to_start() {
            return Ok(true);
        }
        self.io
            .ask(QuestionKind::Start, question)
            .ok_or_else(|| Error::Config {
                path: "(terminal)".into(),
                reason: format!("{question} — nobody to ask (no terminal); pass -y to answer yes"),
            })
    }

    // ---------------------------------------------------------------- first stage

    /// Preflight, target, helpers, journal. The caller re-executes on `ReExecute`.
    pub fn prepare(&self) -> Result<Prepared, UpgradeFailure> {
        let plain = |e: Error| UpgradeFailure {
            code: e.exit_code(),
            error: e.into(),
        };
        // The state files first: one naming what it must not is refused (exit 2) before
        // anything runs, even a dry run.
        self.store.interrupted().map_err(plain)?;
        let journal = UpgradeJournal::load(&self.session.root).map_err(plain)?;
        // The confirmation is asked only after the helpers, the sources and apt's update:
        // with nobody to give it, say so now, before anything changes (a usage error,
        // exit 2; a resumed install asks nothing).
        let resuming = journal
            .as_ref()
            .is_some_and(|j| j.phase >= Phase::Installing);
        if !self.options.dry_run && !resuming && self.asks_to_start() && !self.io.can_ask() {
            return Err(plain(Error::Config {
                path: "(terminal)".into(),
                reason: "the upgrade asks for a confirmation before it starts, and nobody can \
                         answer (no terminal, or --json); pass -y to answer yes, or \
                         -f noninteractive"
                    .into(),
            }));
        }
        if let Some(journal) = journal {
            if journal.phase >= Phase::Installing && self.options.dry_run {
                self.io.say(&format!(
                    "An upgrade to {} was interrupted while packages were being installed; a real \
                     run would resume it. Nothing was changed (--dry-run).",
                    journal.to
                ));
                return Ok(Prepared::DryRun);
            }
            if journal.phase >= Phase::Installing {
                self.io.say(&format!(
                    "An upgrade to {} was interrupted while packages were being installed; resuming it.",
                    journal.to
                ));
                if self.store.installed().map_err(plain)?.is_empty() {
                    return Err(UpgradeFailure {
                        code: ExitCode::PartlyUpgraded,
                        error: anyhow::anyhow!(
                            "the interrupted upgrade to {} needs its helpers, which are gone; \
                             finish by hand: dpkg --configure -a && apt-get -f install && apt-get dist-upgrade",
                            journal.to
                        ),
                    });
                }
                return Ok(Prepared::ReExecute);
            }
            if self.options.dry_run {
                self.io.say(&self.undo_report(&journal));
                return Ok(Prepared::DryRun);
            }
            self.io.say(&format!(
                "An earlier upgrade to {} was interrupted before any package changed; undoing it and starting over.",
                journal.to
            ));
            self.undo(&journal).map_err(plain)?;
        }
        // A dry run writes nothing, not even its logs.
        let logs = if self.options.dry_run {
            Logs::discard()
        } else {
            Logs::open(&self.session.root, false).map_err(plain)?
        };
        logs.main(&format!(
            "release-upgrader {} upgrade of {} ({}), root {}",
            env!("CARGO_PKG_VERSION"),
            self.session.codename,
            self.session.arch,
            self.session.root.dir().display()
        ));
        let (target, plan, media) = self
            .phase(PhaseId::Preflight, &logs, || {
                self.preflight(&logs)?;
                let found = self.target_and_helpers()?;
                if self.options.dry_run {
                    self.check_running_release_read_only(&logs, found.2.as_deref())?;
                }
                Ok(found)
            })
            .map_err(|e| plain_any(e, &logs))?;
        if let Some(warning) = self
            .mode_is(Mode::Server)
            .then(mode::this_seat)
            .and_then(mode::ssh_warning)
        {
            self.io.say(&format!("warning: {warning}"));
        }
        logs.main(&format!(
            "target {} ({}), {} helpers from {}",
            target.target.dist,
            target.target.version,
            plan.packages.len(),
            plan.pocket.location
        ));
        let check = preflight::RunningCheck {
            root: &self.session.root,
            fetcher: &self.session.fetcher,
            codename: &self.session.codename,
            arch: &self.session.arch,
            os_id: &self.session.os.id,
            allow_pending: self.options.allow_pending,
            media: media.as_deref(),
            without_network: self.options.without_network,
        };
        let running = |logs: &Logs| preflight::check_running_release(&check, logs);
        if self.options.dry_run {
            self.dry_run_report(&target, &plan, media.as_deref())
                .map_err(|e| plain_any(e, &logs))?;
            return Ok(Prepared::DryRun);
        }
        if self.mode_is(Mode::Desktop) {
            self.show_release_notes(&target, &logs);
        }
        self.phase(PhaseId::Bootstrap, &logs, || {
            self.bootstrap(&target, &plan, media.as_deref(), &running, &logs)
        })
    }

    /// Installs the helpers (checking the running release beside them) and records the
    /// journal: ready for the re-exec.
    fn bootstrap(
        &self,
        target: &UpgradeTarget,
        plan: &HelperPlan,
        media: Option<&Path>,
        running: &(dyn Fn(&Logs) -> anyhow::Result<preflight::RunningRelease> + Sync),
        logs: &Logs,
    ) -> Result<Prepared, UpgradeFailure> {
        let plain = |e: Error| UpgradeFailure {
            code: e.exit_code(),
            error: e.into(),
        };
        self.io.say(&format!(
            "Installing the helpers of {} ({}) and checking {} for pending updates",
            target.target.version, target.target.dist, self.session.codename
        ));
        let progress = self.io.progress();
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Both wait mostly on the network: the running release's indices beside the
        // helpers' download and unpacking.
        let (release, installed) = std::thread::scope(|scope| {
            let release = scope.spawn(|| running(logs));
            let installed = helpers::install(
                &self.store,
                &self.session.fetcher,
                plan,
                &self.session.arch,
                &*progress,
                &cancel,
            );
            let release = release
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("checking the running release panicked")));
            (release, installed)
        });
        if let Err(e) = installed {
            return Err(plain_any(
                anyhow::Error::new(e).context("installing the helpers"),
                logs,
            ));
        }
        let release = match release {
            Ok(release) => release,
            Err(e) => {
                // Nothing else changed yet: take the helpers away again.
                if let Err(remove) = helpers::remove_all(&self.store, false) {
                    logs.main(&format!("removing the helpers: {remove}"));
                }
                return Err(plain_any(e, logs));
            }
        };
        self.say_offline(&release);
        let without_network = release.without_network.is_some();
        let from_distribution = release.from_distribution;
        let journal = UpgradeJournal {
            from: self.session.codename.clone(),
            to: target.target.dist.clone(),
            to_version: target.target.version.clone(),
            phase: Phase::Prepared,
            sources: Vec::new(),
            media_source: None,
            cdrom: media.map(Path::to_owned),
            without_network,
            from_distribution,
            obsolete: Vec::new(),
            answers: None,
            started: chrono::Utc::now().to_rfc3339(),
        };
        journal.save(&self.session.root).map_err(plain)?;
        logs.main("helpers installed; re-executing with them");
        Ok(Prepared::ReExecute)
    }

    fn dry_run_report(
        &self,
        target: &UpgradeTarget,
        plan: &HelperPlan,
        media: Option<&Path>,
    ) -> anyhow::Result<()> {
        let rules_check = self.distribution_check(media)?;
        let is_distribution =
            |e: &sources::SourceEntry| rules_check.as_ref().is_none_or(|c| c.is_distribution(e));
        let rules = Rules {
            from: &self.session.codename,
            to: &target.target.dist,
            allow_third_party: self.options.allow_third_party,
            is_distribution: &is_distribution,
        };
        let plans = sources::plan(&self.session.root, &rules)?;
        let mut text = format!(
            "Would upgrade {} to {} ({}) with {} helpers ({} to download) from {}.\n",
            self.session.codename,
            target.target.version,
            target.target.dist,
            plan.packages.len(),
            progress::human_size(plan.download_size()),
            plan.pocket.location
        );
        for file in &plans {
            for change in &file.changes {
                text.push_str(&format!(
                    "  {}:{}: {} {} {}\n",
                    file.path.display(),
                    change.line,
                    match change.action {
                        sources::Action::Upgrade => "move to the target:",
                        sources::Action::Disable => "disable (third party):",
                        sources::Action::Keep => "keep:",
                    },
                    change.uris.join(" "),
                    change.suites.join(" ")
                ));
            }
        }
        let desktop = match self.options.mode {
            Some(Mode::Desktop) => plan::desktop_metapackages(
                &crate::upgrade::dpkg_status::Status::read(&self.session.root)?,
            ),
            _ => Vec::new(),
        };
        let notes = crate::release_notes::uri(&target.target);
        if let Some(line) = mode::describe(self.options.mode, &desktop, notes, mode::this_seat()) {
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str("Nothing was changed (--dry-run).");
        self.io.say(&text);
        Ok(())
    }

    /// The total of an apt run's progress, in packages, when the plan is known.
    fn planned_packages(&self) -> Option<u64> {
        match self
            .planned_packages
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            n => Some(n),
        }
    }

    fn mode_is(&self, mode: Mode) -> bool {
        self.options.mode == Some(mode)
    }

    /// Desktop mode: the target's release notes, before anything changes. Notes that
    /// cannot be had are said and the upgrade goes on (they are for reading, not needed).
    fn show_release_notes(&self, target: &UpgradeTarget, logs: &Logs) {
        let Some(uri) = crate::release_notes::uri(&target.target) else {
            self.io.say(&format!(
                "The meta-release gives no release notes for {}.",
                target.target.dist
            ));
            return;
        };
        match crate::release_notes::fetch(&self.session.fetcher, uri) {
            Ok(notes) => {
                logs.main(&format!("release notes shown from {uri}"));
                self.io.notify(&Event::ReleaseNotes {
                    uri: notes.uri,
                    text: notes.text,
                });
            }
            Err(e) => {
                logs.main(&format!("release notes from {uri}: {e}"));
                self.io.say(&format!(
                    "warning: the release notes could not be read ({e}); read them at {uri}"
                ));
            }
        }
    }

    /// Desktop mode, at the end: a restart finishes the upgrade, offered when someone can
    /// answer and the upgraded system is the running one (never for `--root`).
    fn offer_restart(&self) {
        self.io.notify(&Event::Reboot { required: true });
        if !self.session.root.is_host() {
            self.io.say(&format!(
                "Start the system at {} again to finish the upgrade (not restarted: --root).",
                self.session.root.dir().display()
            ));
            return;
        }
        // A program driving the run (`-f json`) has the `reboot` event and restarts itself
        // when its user says so.
        if self.options.assume_yes || !self.io.can_ask() || self.options.frontend == Frontend::Json
        {
            self.io.say("Restart the system to finish the upgrade.");
            return;
        }
        if self.io.ask(
            QuestionKind::Confirm,
            "Restart the system now to finish the upgrade?",
        ) == Some(true)
        {
            if let Err(e) = crate::reboot::reboot(crate::reboot::Into::System) {
                self.io.say(&format!("warning: {e}; restart by hand"));
            }
        } else {
            self.io.say("Restart the system to finish the upgrade.");
        }
    }

    /// How the distribution's sources are told from others (`None`: all are moved,
    /// `--allow-third-party`), with the upgrade `media` vouching for sources apt stored
    /// no lists for when the distribution's archive key signed them.
    fn distribution_check(
        &self,
        media: Option<&Path>,
    ) -> anyhow::Result<Option<DistributionCheck>> {
        if self.options.allow_third_party {
            return Ok(None);
        }
        Ok(Some(
            DistributionCheck::new(&self.session.root, &self.session.os.id)?.with_media(media),
        ))
    }

    /// Undoes an upgrade that never reached dpkg: sources back, media source gone,
    /// the running release's indices refreshed, journal cleared (helpers stay).
    fn undo(&self, journal: &UpgradeJournal) -> Result<(), Error> {
        sources::restore(&self.session.root, &journal.sources)?;
        if let Some(media) = &journal.media_source {
            sources::remove_added(&self.session.root, media)?;
        }
        UpgradeJournal::clear(&self.session.root)
    }

    /// What [`Self::undo`] would do, for `--dry-run`.
    fn undo_report(&self, journal: &UpgradeJournal) -> String {
        let mut steps = Vec::new();
        if !journal.sources.is_empty() {
            let files: Vec<&str> = journal.sources.iter().map(|f| f.as_str()).collect();
            steps.push(format!(
                "put back {} from {}",
                files.join(", "),
                if files.len() == 1 {
                    "its backup"
                } else {
                    "their backups"
                }
            ));
        }
        if let Some(media) = &journal.media_source {
            steps.push(format!("remove {media}"));
        }
        steps.push("forget the interrupted upgrade".into());
        format!(
            "An earlier upgrade to {} was interrupted before any package changed; a real run \
             would undo it first ({}) and start over. Nothing was changed (--dry-run).",
            journal.to,
            steps.join(", ")
        )
    }

    // --------------------------------------------------------------- second stage

    /// Everything after the re-exec. Returns the exit code of success.
    pub fn continue_with_helpers(&self) -> Result<ExitCode, UpgradeFailure> {
        let plain = |e: Error| UpgradeFailure {
            code: e.exit_code(),
            error: e.into(),
        };
        let Some(mut journal) = UpgradeJournal::load(&self.session.root).map_err(plain)? else {
            return Err(plain(Error::Config {
                path: crate::upgrade::journal::path(self.state()),
                reason: "no upgrade in progress; run `release-upgrader upgrade`".into(),
            }));
        };
        let logs = Logs::open(&self.session.root, true).map_err(plain)?;
        if let Some(banner) = crate::helpers::env::core_banner(&self.store) {
            logs.main(&banner);
        }
        let apt = self.helper_apt(self.answers(&journal)).map_err(plain)?;
        if journal.phase < Phase::Installing
            && let Err(error) = self.prepare_packages(&mut journal, &apt, &logs)
        {
            return Err(self.roll_back(&journal, error, &logs));
        }
        if journal.phase < Phase::Installed {
            self.phase(PhaseId::Install, &logs, || {
                self.install(&mut journal, &apt, &logs)
            })?;
        }
        self.phase(PhaseId::Cleanup, &logs, || self.finish(&mut journal, &logs))?;
        if self.mode_is(Mode::Desktop) {
            self.offer_restart();
        }
        Ok(ExitCode::Success)
    }

    /// The target release's apt from the helpers; debconf asks nothing unless the user
    /// answers on the terminal.
    fn helper_apt(&self, answers: crate::upgrade::journal::Answers) -> Result<Apt, Error> {
        let mut apt = Apt::new(
            &self.session.root,
            Some(self.store.prefix.clone()),
            "upgrade-apt.conf",
        );
        if let Some(frontend) = answers.debian_frontend() {
            apt.env.push(("DEBIAN_FRONTEND".into(), frontend.into()));
        }
        apt.env
            .push(("APT_LISTCHANGES_FRONTEND".into(), "none".into()));
        apt.write_config()?;
        Ok(apt)
    }

    /// Adds upgrade media as a package source for the upgrade.
    fn media_source(&self, media: &Path, codename: &str) -> Result<RelPath, Error> {
        let file = RelPath::new(crate::upgrade::journal::MEDIA_LIST).expect("a relative path");
        let keyrings: Vec<String> = self
            .session
            .keyring()?
            .sources()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        // Media do not expire (docs/protocol.md §2): apt is told so too.
        let line = format!(
            "# Added by release-upgrader for the upgrade from media; removed afterwards.\n\
             deb [signed-by={} check-valid-until=no] file:{} {codename} main\n",
            keyrings.join(","),
            media.display()
        );
        self.session
            .root
            .write_file(Path::new("/").join(file.as_path()), line.as_bytes())?;
        Ok(file)
    }
}

/// Runs apt quietly, logging to `apt.log`; returns success and its output.
fn apt_quiet(
    apt: &Apt,
    program: &str,
    args: &[&str],
    logs: &Logs,
) -> anyhow::Result<(bool, String)> {
    let (ok, out, err) = apt_captured(apt, program, args, logs)?;
    Ok((ok, if ok { out } else { format!("{out}{err}") }))
}

/// `apt-get update`, failed unless every index was fetched: apt only warns about an
/// index it could not fetch (a 500, a dropped connection) and goes on with what it had,
/// or with nothing, and judged from no package list of the new release every installed
/// package would look obsolete. Returns success and what apt printed.
fn apt_update(apt: &Apt, extra: &[&str], logs: &Logs) -> anyhow::Result<(bool, String)> {
    // apt ≥ 2.1.16 fails on its own with this; older ones ignore it, and their warnings
    // are read instead.
    let mut args = vec!["-o", "APT::Update::Error-Mode=any"];
    args.extend_from_slice(extra);
    args.push("update");
    let (ok, out, err) = apt_captured(apt, "apt-get", &args, logs)?;
    let failures = apt::update_failures(&err);
    Ok((ok && failures.is_empty(), format!("{out}{err}")))
}

/// Runs apt quietly, logging to `apt.log`; returns success, stdout and stderr.
fn apt_captured(
    apt: &Apt,
    program: &str,
    args: &[&str],
    logs: &Logs,
) -> anyhow::Result<(bool, String, String)> {
    let mut task = crate::task::Task::from_command(apt.command(program));
    task.args(args);
    logs.main(&format!(
        "running {program} {}",
        args.iter().take(6).copied().collect::<Vec<_>>().join(" ")
    ));
    let started = std::time::Instant::now();
    let out = task.output_unchecked()?;
    logs.main(&format!(
        "{program} {} finished in {:.1} s",
        if out.status.success() { "ok" } else { "failed" },
        started.elapsed().as_secs_f64()
    ));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Ok(mut log) = logs.append(logs::APT) {
        use std::io::Write;
        let _ = writeln!(log, "$ {program} {}\n{err}", args.join(" "));
    }
    Ok((out.status.success(), text, err))
}

fn plain_any(error: anyhow::Error, logs: &Logs) -> UpgradeFailure {
    logs.main(&format!("stopped: {error:#}"));
    UpgradeFailure {
        code: crate::error::exit_code_of(&error),
        error,
    }
}

/// dpkg's options to act on `root`.
fn dpkg_root_args(root: &crate::root::SystemRoot) -> Vec<String> {
    if root.is_host() {
        Vec::new()
    } else {
        let dir = root.dir().display().to_string();
        vec![
            format!("--root={dir}"),
            format!("--admindir={dir}/var/lib/dpkg"),
            format!("--log={dir}/var/log/dpkg.log"),
        ]
    }
}

fn dpkg_root_option(root: &crate::root::SystemRoot) -> String {
    dpkg_root_args(root)
        .first()
        .map(|a| format!(" {a}"))
        .unwrap_or_default()
}
