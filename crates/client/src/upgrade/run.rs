//! The upgrade, step by step (PROTOCOL.md §1–4, issue: "The upgrade").
//!
//! Two processes share the work. The first checks the system (preflight), finds the
//! target, installs the target release's helpers and records the journal; then it
//! re-executes itself with the helpers. The second rewrites the sources, runs the target
//! release's apt (`update`, a simulated plan, confirmation, download, install, obsolete
//! packages removed but never purged), lists what removed packages left behind and
//! removes the helpers. Until dpkg changes a package, every failure is undone exactly
//! (exit 5), even when dpkg already ran and stopped at once; after, the way out is
//! forward and the message says how (exit 6).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::confine::RelPath;
use crate::error::{Error, ExitCode};
use crate::helpers::{self, Store};
use crate::progress::{self, Progress};
use crate::session::{HelperPlan, Session, UpgradeTarget};
use crate::upgrade::apt::{self, Apt, Simulation};
use crate::upgrade::dpkg_status::{self, Status};
use crate::upgrade::journal::{Phase, UpgradeJournal};
use crate::upgrade::logs::{self, Logs};
use crate::upgrade::obsolete::{self, glob_match};
use crate::upgrade::sources::{self, DistributionCheck, Rules};
use crate::upgrade::{children, locks, statoverride, term};
use crate::upgrade::{freshness, pending, prefetch};

/// How questions are answered and apt's output shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Frontend {
    /// Questions on the terminal; dpkg may ask about configuration files.
    Text,
    /// No questions: the defaults (keep the old configuration files).
    Noninteractive,
}

/// The options of `upgrade`.
#[derive(Clone, Debug)]
pub struct UpgradeOptions {
    pub frontend: Frontend,
    pub assume_yes: bool,
    pub allow_third_party: bool,
    pub dry_run: bool,
    pub cdrom: Option<PathBuf>,
    pub keep_helpers: bool,
    pub allow_pending: bool,
    pub lock_timeout: Duration,
}

/// What the front end provides: answers, messages, progress.
pub trait Interaction {
    /// Asks a yes/no question; `None` when nobody can answer.
    fn ask(&self, question: &str) -> Option<bool>;
    /// A message for the user (a step, a warning, a plan).
    fn say(&self, text: &str);
    /// Whether someone watches the terminal (apt's output is shown as it comes).
    fn watching(&self) -> bool;
    fn progress(&self) -> Arc<dyn Progress>;
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

/// Packages that must never be removed by an upgrade, beyond `Essential`/`Protected`.
pub const BUILTIN_REMOVAL_DENYLIST: [&str; 8] = [
    "apt",
    "dpkg",
    "libc6",
    "base-files",
    "init",
    "systemd-sysv",
    "openssh-server",
    "sudo",
];

/// Where to find the running state of one upgrade.
pub struct Upgrader<'a> {
    pub session: &'a Session,
    pub options: &'a UpgradeOptions,
    pub io: &'a dyn Interaction,
    pub store: Store,
}

impl<'a> Upgrader<'a> {
    pub fn new(session: &'a Session, options: &'a UpgradeOptions, io: &'a dyn Interaction) -> Self {
        Upgrader {
            session,
            options,
            io,
            store: Store::new(&session.root),
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

    fn confirm(&self, question: &str) -> Result<bool, Error> {
        if self.options.assume_yes || self.options.frontend == Frontend::Noninteractive {
            return Ok(true);
        }
        self.io.ask(question).ok_or_else(|| Error::Config {
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
        if let Some(journal) = UpgradeJournal::load(&self.session.root).map_err(plain)? {
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
        let logs = Logs::open(&self.session.root, false).map_err(plain)?;
        logs.main(&format!(
            "release-upgrader {} upgrade of {} ({}), root {}",
            env!("CARGO_PKG_VERSION"),
            self.session.codename,
            self.session.arch,
            self.session.root.dir().display()
        ));
        self.preflight(&logs).map_err(|e| plain_any(e, &logs))?;
        let (target, plan) = self.target_and_helpers().map_err(|e| plain_any(e, &logs))?;
        logs.main(&format!(
            "target {} ({}), {} helpers from {}",
            target.target.dist,
            target.target.version,
            plan.packages.len(),
            plan.pocket.location
        ));
        let check = RunningCheck {
            root: &self.session.root,
            fetcher: &self.session.fetcher,
            codename: &self.session.codename,
            arch: &self.session.arch,
            os_id: &self.session.os.id,
            allow_pending: self.options.allow_pending,
            media: self.options.cdrom.is_some(),
        };
        let running = |logs: &Logs| check_running_release(&check, logs);
        if self.options.dry_run {
            let release = running(&logs).map_err(|e| plain_any(e, &logs))?;
            self.say_offline(&release);
            self.dry_run_report(&target, &plan)
                .map_err(|e| plain_any(e, &logs))?;
            return Ok(Prepared::DryRun);
        }
        self.io.say(&format!(
            "Installing the helpers of {} ({}) and checking {} for pending updates",
            target.target.version, target.target.dist, self.session.codename
        ));
        let progress = self.io.progress();
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Both wait mostly on the network: the running release's indices beside the
        // helpers' download and unpacking.
        let (release, installed) = std::thread::scope(|scope| {
            let release = scope.spawn(|| running(&logs));
            let installed = helpers::install(
                &self.store,
                &self.session.fetcher,
                &plan,
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
                &logs,
            ));
        }
        let release = match release {
            Ok(release) => release,
            Err(e) => {
                // Nothing else changed yet: take the helpers away again.
                if let Err(remove) = helpers::remove_all(&self.store, false) {
                    logs.main(&format!("removing the helpers: {remove}"));
                }
                return Err(plain_any(e, &logs));
            }
        };
        self.say_offline(&release);
        let from_distribution = release.from_distribution;
        let journal = UpgradeJournal {
            from: self.session.codename.clone(),
            to: target.target.dist.clone(),
            to_version: target.target.version.clone(),
            phase: Phase::Prepared,
            sources: Vec::new(),
            media_source: None,
            cdrom: self.options.cdrom.clone(),
            from_distribution,
            obsolete: Vec::new(),
            started: chrono::Utc::now().to_rfc3339(),
        };
        journal.save(&self.session.root).map_err(plain)?;
        logs.main("helpers installed; re-executing with them");
        Ok(Prepared::ReExecute)
    }

    fn preflight(&self, logs: &Logs) -> anyhow::Result<()> {
        let root = &self.session.root;
        self.wait_for_locks(logs)?;
        // Before anything runs dpkg on the root from here.
        statoverride::check(root)?;
        if dpkg_status::dpkg_interrupted(root) {
            let fix = format!("dpkg{} --configure -a", dpkg_root_option(root));
            let run = self.options.assume_yes
                || self
                    .io
                    .ask(&format!("dpkg was interrupted. Run `{fix}` now?"))
                    .unwrap_or(false);
            if !run {
                anyhow::bail!(Error::Config {
                    path: root.path("/var/lib/dpkg/updates"),
                    reason: format!("dpkg was interrupted; run `{fix}` first"),
                });
            }
            logs.main(&format!("running {fix}"));
            let status = crate::task::Task::new("dpkg")
                .args(dpkg_root_args(root))
                .args(["--configure", "-a"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()?;
            if !status.success() {
                anyhow::bail!("`{fix}` failed; fix what it reports, then try again");
            }
        }
        let status = Status::read(root)?;
        let broken = status.broken();
        if !broken.is_empty() {
            let names: Vec<&str> = broken.iter().map(|p| p.name.as_str()).collect();
            anyhow::bail!(Error::Config {
                path: root.path("/var/lib/dpkg/status"),
                reason: format!(
                    "packages are half-installed or half-configured ({}); run `apt-get -f install` first",
                    names.join(", ")
                ),
            });
        }
        for file in ["/run/reboot-required.pkgs", "/var/run/reboot-required.pkgs"] {
            if let Ok(text) = std::fs::read_to_string(root.path(file)) {
                let critical: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|p| {
                        *p == "libc6" || p.starts_with("linux-image") || p.starts_with("linux-base")
                    })
                    .collect();
                if !critical.is_empty() {
                    anyhow::bail!(Error::Config {
                        path: root.path(file),
                        reason: format!(
                            "a reboot is pending after updates of {}; reboot, then upgrade",
                            critical.join(", ")
                        ),
                    });
                }
                break;
            }
        }
        let held = status.held();
        if !held.is_empty() {
            let names: Vec<&str> = held.iter().map(|p| p.name.as_str()).collect();
            self.io.say(&format!(
                "Held packages (they stay at their version; apt may have to remove them): {}",
                names.join(", ")
            ));
            logs.main(&format!("held: {}", names.join(", ")));
        }
        Ok(())
    }

    /// Waits for apt's and dpkg's locks, stopping what an earlier run of ours left
    /// holding them (said and logged); anyone else's hold is waited for.
    fn wait_for_locks(&self, logs: &Logs) -> Result<(), Error> {
        locks::wait_until_free(
            &self.session.root,
            self.options.lock_timeout,
            |event| match event {
                locks::LockEvent::Waiting(holder) => {
                    self.io
                        .say(&format!("Waiting for the package system: {holder}"));
                }
                locks::LockEvent::Cleared(holder, ended) => {
                    let text = format!(
                        "{holder}, left over from an earlier run of release-upgrader (pid {}) that is gone; {ended}",
                        holder.leftover.as_ref().map_or(0, |o| o.run.pid)
                    );
                    logs.main(&text);
                    self.io.say(&text);
                }
            },
        )
    }

    /// The target release and its helper plan, from the meta-release or the media.
    fn target_and_helpers(&self) -> anyhow::Result<(UpgradeTarget, HelperPlan)> {
        let session = self.session;
        let (target, request) = match &self.options.cdrom {
            Some(path) => session.media_target(path)?,
            None => {
                let target = session.find_target(true)?;
                let request = session.network_pocket(&target)?;
                (target, request)
            }
        };
        if let Some(reason) = &target.target.upgrade_broken {
            anyhow::bail!(Error::UpgradeBroken {
                dist: target.target.dist.clone(),
                reason: reason.clone(),
            });
        }
        let pocket = session.open_pocket(&request, !self.options.dry_run)?;
        let plan = session.plan_helpers(&target, pocket)?;
        Ok((target, plan))
    }

    fn say_offline(&self, release: &RunningRelease) {
        if release.offline {
            self.io.say(
                "Cannot refresh the current release's package lists (offline?); continuing with the media.",
            );
        }
    }

    fn dry_run_report(&self, target: &UpgradeTarget, plan: &HelperPlan) -> anyhow::Result<()> {
        let rules_check = self.distribution_check()?;
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
        text.push_str("Nothing was changed (--dry-run).");
        self.io.say(&text);
        Ok(())
    }

    fn distribution_check(&self) -> anyhow::Result<Option<DistributionCheck>> {
        if self.options.allow_third_party {
            return Ok(None);
        }
        Ok(Some(DistributionCheck::new(
            &self.session.root,
            &self.session.os.id,
        )?))
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
        let apt = self.helper_apt().map_err(plain)?;
        if journal.phase < Phase::Installing
            && let Err(error) = self.prepare_packages(&mut journal, &apt, &logs)
        {
            return Err(self.roll_back(&journal, error, &logs));
        }
        if journal.phase < Phase::Installed {
            self.install(&mut journal, &apt, &logs)?;
        }
        self.finish(&mut journal, &logs)?;
        Ok(ExitCode::Success)
    }

    fn helper_apt(&self) -> Result<Apt, Error> {
        let mut apt = Apt::new(
            &self.session.root,
            Some(self.store.prefix.clone()),
            "upgrade-apt.conf",
        );
        if self.options.frontend == Frontend::Noninteractive || !self.io.watching() {
            apt.env
                .push(("DEBIAN_FRONTEND".into(), "noninteractive".into()));
        }
        apt.env
            .push(("APT_LISTCHANGES_FRONTEND".into(), "none".into()));
        apt.write_config()?;
        Ok(apt)
    }

    /// Sources, update, plan, confirmation, download: all undoable.
    fn prepare_packages(
        &self,
        journal: &mut UpgradeJournal,
        apt: &Apt,
        logs: &Logs,
    ) -> anyhow::Result<()> {
        if journal.phase < Phase::SourcesRewritten {
            self.io
                .say(&format!("Pointing the package sources at {}", journal.to));
            let check = self.distribution_check()?;
            let is_distribution =
                |e: &sources::SourceEntry| check.as_ref().is_none_or(|c| c.is_distribution(e));
            let rules = Rules {
                from: &journal.from,
                to: &journal.to,
                allow_third_party: self.options.allow_third_party,
                is_distribution: &is_distribution,
            };
            let plans = sources::plan(&self.session.root, &rules)?;
            journal.sources = plans.iter().map(|p| p.file.clone()).collect();
            if let Some(media) = &journal.cdrom {
                journal.media_source = Some(self.media_source(media, &journal.to)?);
            }
            journal.advance(&self.session.root, Phase::SourcesRewritten)?;
            for plan in &plans {
                for change in &plan.changes {
                    logs.main(&format!(
                        "{}:{}: {:?} {} {}",
                        plan.path.display(),
                        change.line,
                        change.action,
                        change.uris.join(" "),
                        change.suites.join(" ")
                    ));
                    if change.action == sources::Action::Disable {
                        self.io.say(&format!(
                            "Disabling the third-party source {} {} ({}:{}); pass --allow-third-party to keep it",
                            change.uris.join(" "),
                            change.suites.join(" "),
                            plan.path.display(),
                            change.line
                        ));
                    }
                }
            }
            sources::apply(&self.session.root, &plans)?;
        }
        self.io.say("Reading the package lists of the new release");
        let (ok, out) = apt_update(apt, &[], logs)?;
        if !ok {
            let media_only = journal.cdrom.is_some();
            if !media_only {
                anyhow::bail!(Error::Network {
                    uri: "apt-get update".into(),
                    reason: format!(
                        "the new release's package lists could not be downloaded:\n{}",
                        tail(&out, 8)
                    ),
                });
            }
            self.io.say(
                "Some package lists could not be downloaded (offline?); continuing with the media.",
            );
        }
        if journal.phase < Phase::Planned {
            self.fold_obsolete(journal, apt, logs)?;
        }
        // One resolution gives the plan, the sizes and every archive with its SHA-256
        // (--print-uris changes nothing; apt's simulated ordering, -s, costs seconds).
        let plan = |extra: &[String]| {
            let mut args = vec![
                "--print-uris",
                "-y",
                "-V",
                "-o",
                "Debug::NoLocking=1",
                "-o",
                "Acquire::ForceHash=SHA256",
                "dist-upgrade",
            ];
            args.extend(extra.iter().map(String::as_str));
            apt_quiet(apt, "apt-get", &args, logs)
        };
        // With -y nobody is asked, so the upgrades the new indices offer for installed
        // packages start downloading now, beside apt's resolution; what the plan adds
        // (new packages) follows it.
        let early = if self.options.assume_yes && journal.phase < Phase::Downloaded {
            self.offered_upgrades(&journal.to)
        } else {
            Vec::new()
        };
        let archives_dir = self.session.root.path("/var/cache/apt/archives");
        let fetcher = &self.session.fetcher;
        let args = self.upgrade_args(journal);
        let (planned, early_fetch) = std::thread::scope(|scope| {
            let early_fetch = scope.spawn(|| {
                let started = std::time::Instant::now();
                let fetched = prefetch::fetch_all(fetcher, &early, &archives_dir);
                (fetched, started.elapsed())
            });
            (plan(&args), early_fetch.join())
        });
        match early_fetch {
            Ok((Ok(bytes), took)) if !early.is_empty() => logs.main(&format!(
                "{} offered upgrades fetched beside the plan ({bytes} bytes) in {:.1} s",
                early.len(),
                took.as_secs_f64()
            )),
            Ok((Err(e), _)) => {
                logs.main(&format!("fetching the offered upgrades early failed: {e}"))
            }
            _ => {}
        }
        let (mut ok, mut out) = planned?;
        if !ok && !journal.obsolete.is_empty() {
            logs.main(&format!(
                "apt cannot remove the obsolete packages with the upgrade:\n{}",
                tail(&out, 8)
            ));
            self.io.say(&format!(
                "The obsolete packages cannot be removed with the upgrade; they stay: {}",
                journal.obsolete.join(" ")
            ));
            journal.obsolete.clear();
            (ok, out) = plan(&self.upgrade_args(journal))?;
        }
        let simulation = Simulation::parse(&out);
        self.check_removals(&simulation)?;
        if !ok {
            anyhow::bail!(Error::Config {
                path: self.session.root.path("/etc/apt/sources.list"),
                reason: format!("apt cannot compute the upgrade:\n{}", tail(&out, 12)),
            });
        }
        let sizes = apt::Sizes::parse(&out);
        self.check_space(&sizes, &simulation)?;
        self.show_plan(&simulation, &sizes, logs);
        if journal.phase < Phase::Planned {
            if !self.confirm("Do you want to start the upgrade?")? {
                anyhow::bail!(Error::Cancelled);
            }
            // Records what the install run takes too, for a resumed run.
            journal.advance(&self.session.root, Phase::Planned)?;
        }
        self.io.say("Downloading the packages");
        let archives = prefetch::parse(&out);
        let started = std::time::Instant::now();
        let fetched = prefetch::fetch_all(
            &self.session.fetcher,
            &archives,
            &self.session.root.path("/var/cache/apt/archives"),
        );
        match &fetched {
            Ok(bytes) => logs.main(&format!(
                "{} archives in place ({bytes} bytes fetched) in {:.1} s",
                archives.len(),
                started.elapsed().as_secs_f64()
            )),
            Err(e) => logs.main(&format!(
                "fetching the archives directly failed ({e}); apt downloads them"
            )),
        }
        match fetched {
            Err(Error::Cancelled) => anyhow::bail!(Error::Cancelled),
            // The mirror answered, and wrongly (errors, bad bytes, endless redirects):
            // apt would get the same answers, and some of them (redirects to ever new
            // URLs) keep it going forever.
            Err(e) if !prefetch::apt_may_reach(&e) => anyhow::bail!(Error::Network {
                uri: "the new release's packages".into(),
                reason: format!("downloading them failed: {e}"),
            }),
            _ => {}
        }
        // apt fetches whatever is still missing (all of it after a failure above, or the
        // archives only apt's own methods, proxies or credentials can reach).
        let missing = fetched.is_err()
            || out.lines().filter(|l| l.starts_with('\'')).count() > archives.len();
        if missing {
            let mut cmd = apt.command("apt-get");
            cmd.args(term::status_option())
                .args(["-y", "--download-only", "dist-upgrade"])
                .args(self.upgrade_args(journal));
            let finished = self.run_apt(cmd, logs, "Downloading")?;
            if !finished.success {
                anyhow::bail!(Error::Network {
                    uri: "apt-get --download-only dist-upgrade".into(),
                    reason: format!(
                        "downloading the packages failed:\n{}",
                        finished.tail.join("\n")
                    ),
                });
            }
        }
        journal.advance(&self.session.root, Phase::Downloaded)?;
        Ok(())
    }

    fn check_removals(&self, simulation: &Simulation) -> anyhow::Result<()> {
        let status = Status::read(&self.session.root)?;
        let denylist = self.removal_denylist();
        let refused: Vec<String> = simulation
            .removed
            .iter()
            .filter(|a| {
                status.is_essential(&a.package)
                    || denylist.iter().any(|d| glob_match(d, &a.package))
            })
            .map(|a| a.package.clone())
            .collect();
        if !refused.is_empty() {
            anyhow::bail!(Error::Config {
                path: self
                    .session
                    .root
                    .path("/etc/release-upgrader/removal-denylist"),
                reason: format!(
                    "the upgrade would remove {} — essential or protected packages; refusing",
                    refused.join(", ")
                ),
            });
        }
        Ok(())
    }

    fn removal_denylist(&self) -> Vec<String> {
        let mut list: Vec<String> = BUILTIN_REMOVAL_DENYLIST
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Ok(text) = std::fs::read_to_string(
            self.session
                .root
                .path("/etc/release-upgrader/removal-denylist"),
        ) {
            list.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        if self.session.root.is_host()
            && let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        {
            list.push(format!("linux-image-{}", release.trim()));
        }
        list
    }

    /// Free space per mount point: downloads, `/usr` growth, `/boot` for a new kernel.
    fn check_space(&self, sizes: &apt::Sizes, simulation: &Simulation) -> anyhow::Result<()> {
        let root = &self.session.root;
        let mut needs: Vec<(PathBuf, u64, &str)> = vec![
            (
                root.path("/var/cache/apt/archives"),
                sizes.download,
                "the downloads",
            ),
            (
                root.path("/usr"),
                sizes.growth.max(0) as u64,
                "the new release",
            ),
        ];
        let kernel = simulation
            .installed
            .iter()
            .chain(&simulation.upgraded)
            .any(|a| a.package.starts_with("linux-image-"));
        if kernel {
            needs.push((
                root.path("/boot"),
                boot_need(&root.path("/boot")),
                "a new kernel",
            ));
        }
        // Sum per filesystem.
        let mut per_fs: Vec<(u64, PathBuf, u64, Vec<&str>)> = Vec::new();
        for (path, bytes, what) in needs {
            let existing = path
                .ancestors()
                .find(|p| p.exists())
                .unwrap_or(Path::new("/"))
                .to_owned();
            let dev = std::os::unix::fs::MetadataExt::dev(
                &std::fs::metadata(&existing).map_err(|e| Error::io(&existing, e))?,
            );
            match per_fs.iter_mut().find(|(d, ..)| *d == dev) {
                Some(entry) => {
                    entry.2 += bytes;
                    entry.3.push(what);
                }
                None => per_fs.push((dev, existing, bytes, vec![what])),
            }
        }
        for (_, path, needed, whats) in per_fs {
            let stat = nix::sys::statvfs::statvfs(&path).map_err(|e| Error::io(&path, e.into()))?;
            let available = stat.blocks_available() as u64 * stat.fragment_size() as u64;
            let needed = needed + needed / 20;
            if needed > available {
                anyhow::bail!(Error::NoSpace {
                    path: path.clone(),
                    needed,
                    available,
                });
            }
            log::info!(
                "{}: {} needed for {}, {} free",
                path.display(),
                needed,
                whats.join(" and "),
                available
            );
        }
        Ok(())
    }

    fn show_plan(&self, simulation: &Simulation, sizes: &apt::Sizes, logs: &Logs) {
        let mut text = format!(
            "{} packages will be upgraded, {} newly installed, {} removed; {} to download.",
            simulation.upgraded.len(),
            simulation.installed.len(),
            simulation.removed.len(),
            progress::human_size(sizes.download)
        );
        if !simulation.removed.is_empty() {
            let names: Vec<&str> = simulation
                .removed
                .iter()
                .map(|a| a.package.as_str())
                .collect();
            text.push_str(&format!("\nTo be removed: {}", names.join(" ")));
        }
        if !simulation.kept_back.is_empty() {
            text.push_str(&format!(
                "\nKept back (not upgraded): {}",
                simulation.kept_back.join(" ")
            ));
        }
        if !simulation.autoremovable.is_empty() {
            text.push_str(&format!(
                "\nNo longer needed, left installed (`apt autoremove` removes them; it keeps what \
                 APT::NeverAutoRemove guards): {}",
                simulation.autoremovable.join(" ")
            ));
        }
        if !simulation.downgraded.is_empty() {
            let names: Vec<&str> = simulation
                .downgraded
                .iter()
                .map(|a| a.package.as_str())
                .collect();
            text.push_str(&format!("\nTo be downgraded: {}", names.join(" ")));
        }
        logs.main(&text.replace('\n', " | "));
        self.io.say(&text);
    }

    /// Undoes everything before dpkg ran, and reports why (exit 5).
    fn roll_back(
        &self,
        journal: &UpgradeJournal,
        error: anyhow::Error,
        logs: &Logs,
    ) -> UpgradeFailure {
        let cancelled = crate::error::find(&error).is_some_and(|e| matches!(e, Error::Cancelled));
        logs.main(&format!("rolling back: {error:#}"));
        let mut problems = Vec::new();
        if let Err(e) = sources::restore(&self.session.root, &journal.sources) {
            problems.push(format!("restoring the sources: {e}"));
        }
        if let Some(media) = &journal.media_source {
            let _ = sources::remove_added(&self.session.root, media);
        }
        // The new release's lists replaced the old ones; get the old ones back.
        let system = Apt::new(&self.session.root, None, "system-apt.conf");
        if system.write_config().is_ok()
            && let Ok((false, _)) = apt_quiet(&system, "apt-get", &["update"], logs)
        {
            problems.push("refreshing the package lists failed; run apt-get update".into());
        }
        if let Err(e) = helpers::remove_all(&self.store, false) {
            problems.push(format!("removing the helpers: {e}"));
        }
        let _ = UpgradeJournal::clear(&self.session.root);
        logs.main("rolled back");
        let mut error = error.context(format!(
            "the upgrade to {} was {} and everything was put back as it was",
            journal.to,
            if cancelled { "cancelled" } else { "stopped" }
        ));
        for problem in problems {
            error = error.context(problem);
        }
        UpgradeFailure {
            code: if cancelled {
                ExitCode::Cancelled
            } else {
                ExitCode::RolledBack
            },
            error,
        }
    }

    /// dpkg's part: from here on, failures leave a partly upgraded system (exit 6).
    fn install(
        &self,
        journal: &mut UpgradeJournal,
        apt: &Apt,
        logs: &Logs,
    ) -> Result<(), UpgradeFailure> {
        let resuming = journal.phase == Phase::Installing;
        let recovery = format!("release-upgrader{} upgrade -y", self.root_args());
        let to = journal.to.clone();
        let partly = |error: anyhow::Error| {
            UpgradeFailure {
            code: ExitCode::PartlyUpgraded,
            error: error.context(format!(
                "the upgrade to {to} stopped after packages started changing; to finish it, run: {recovery}"
            )),
        }
        };
        journal
            .advance(&self.session.root, Phase::Installing)
            .map_err(|e| partly(e.into()))?;
        if resuming {
            self.io.say("Finishing the interrupted installation");
            self.wait_for_locks(logs).map_err(|e| partly(e.into()))?;
            self.repair(apt, logs).map_err(partly)?;
        }
        self.io.say("Installing the new release");
        let mut cmd = apt.command("apt-get");
        cmd.args(term::status_option())
            .args(["-y", "dist-upgrade"])
            .args(self.upgrade_args(journal));
        self.dpkg_options(&mut cmd);
        // What dpkg's database was before its first run: if that run fails having
        // changed nothing, the upgrade is rolled back (exit 5), not left half-done.
        let before = (!resuming)
            .then(|| dpkg_status::DbSnapshot::take(&self.session.root).ok())
            .flatten();
        let finished = self.run_apt(cmd, logs, "Installing");
        let failure = match &finished {
            Ok(f) if f.success => None,
            Ok(f) => {
                let mut detail = f.tail.join("\n");
                for (package, message) in &f.errors {
                    detail.push_str(&format!("\n{package}: {message}"));
                }
                Some((
                    anyhow::anyhow!("apt-get dist-upgrade failed:\n{detail}"),
                    f.package_lines,
                ))
            }
            Err(e) => Some((anyhow::anyhow!("running apt-get dist-upgrade: {e}"), 0)),
        };
        if let Some((error, package_lines)) = failure {
            logs.main(&format!("installation failed: {error:#}"));
            let after = dpkg_status::DbSnapshot::take(&self.session.root).ok();
            let untouched = before
                .as_ref()
                .zip(after.as_ref())
                .is_some_and(|(b, a)| dpkg_status::untouched(b, a, package_lines));
            if !untouched {
                return Err(partly(error));
            }
            logs.main("dpkg changed no package: rolling back");
            // Back to "downloaded" first: killed during the rollback, the next run
            // undoes the rest instead of resuming an install that never began.
            journal.phase = Phase::Downloaded;
            journal
                .save(&self.session.root)
                .map_err(|e| partly(e.into()))?;
            return Err(self.roll_back(
                journal,
                error.context("dpkg stopped before it changed any package"),
                logs,
            ));
        }
        // apt may have kept back what it could not upgrade; the release must have changed.
        let (_, codename) = self.session.root.codename().map_err(|e| partly(e.into()))?;
        if codename != journal.to {
            let (_, out) = apt_quiet(
                apt,
                "apt-get",
                &[
                    "--print-uris",
                    "-y",
                    "-o",
                    "Debug::NoLocking=1",
                    "dist-upgrade",
                ],
                logs,
            )
            .map_err(partly)?;
            let kept = Simulation::parse(&out).kept_back;
            logs.main(&format!(
                "still {codename} after dist-upgrade; kept back: {}",
                kept.join(" ")
            ));
            return Err(partly(anyhow::anyhow!(
                "apt finished, but the system still says it is {codename}: packages were kept back ({}); \
                 see {}",
                kept.join(" "),
                logs.path(logs::APT_TERM).display()
            )));
        }
        journal
            .advance(&self.session.root, Phase::Installed)
            .map_err(|e| partly(e.into()))?;
        logs.main("packages installed");
        Ok(())
    }

    /// Finishes what an interrupted or failed dpkg run left: `dpkg --configure -a`
    /// configures what was unpacked; `apt-get -f install` brings in what the unpacked
    /// packages depend on (a failed unpack is undone, leaving its dependants
    /// unconfigurable) and, told to (`--reinstall`), unpacks again what dpkg marked
    /// reinst-required (which apt alone only tries to configure, and dpkg refuses), from
    /// the archive cache or the new release's mirror. A failing `dpkg --configure -a`
    /// does not stop the repair, since what it trips over is what apt mends; it runs
    /// again once apt has.
    fn repair(&self, apt: &Apt, logs: &Logs) -> anyhow::Result<()> {
        let configured = self.configure_pending(logs)?;
        if !configured.success {
            logs.main(&format!(
                "dpkg --configure -a failed; repairing with apt-get -f install:\n{}",
                configured.tail.join("\n")
            ));
        }
        let reinstall = Status::read(&self.session.root)?.reinstall_required();
        let mut fix = apt.command("apt-get");
        fix.args(term::status_option())
            .args(["-y", "-f", "install"]);
        if !reinstall.is_empty() {
            // apt keeps their automatic/manual marks: --reinstall never marks manual.
            fix.arg("--reinstall").args(&reinstall);
        }
        self.dpkg_options(&mut fix);
        let repaired = self.run_apt(fix, logs, "Repairing")?;
        if !repaired.success {
            let mut detail = String::new();
            if !configured.success {
                detail.push_str(&format!(
                    "dpkg --configure -a failed:\n{}\n",
                    configured.tail.join("\n")
                ));
            }
            detail.push_str(&format!(
                "apt-get -f install failed:\n{}",
                repaired.tail.join("\n")
            ));
            for (package, message) in &repaired.errors {
                detail.push_str(&format!("\n{package}: {message}"));
            }
            anyhow::bail!("{detail}");
        }
        if !configured.success {
            let again = self.configure_pending(logs)?;
            if !again.success {
                anyhow::bail!(
                    "dpkg --configure -a failed, again after apt-get -f install:\n{}",
                    again.tail.join("\n")
                );
            }
        }
        logs.main("interrupted installation repaired");
        Ok(())
    }

    /// `dpkg --configure -a`, answered as the upgrade's own apt run answers: a resumed
    /// run stops at no conffile prompt with nobody to answer it.
    fn configure_pending(&self, logs: &Logs) -> Result<term::Finished, Error> {
        let dpkg = self.store.prefix.join(crate::layout::BIN).join("dpkg");
        let mut cmd = children::command(&dpkg);
        cmd.args(dpkg_root_args(&self.session.root))
            .args(self.dpkg_answers())
            .args(["--configure", "-a"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.store.prefix.join(crate::layout::DPKG_PATH).display()
                ),
            );
        logs.main(&format!(
            "Configuring: running {}",
            crate::upgrade::children::command_line(&cmd)
        ));
        let log = logs.append(logs::APT_TERM)?;
        // Without answers given, someone is there to answer: dpkg gets the terminal.
        let interactive = self.dpkg_answers().is_empty();
        term::run(
            cmd,
            log,
            self.io.watching() && !interactive,
            interactive,
            &mut |_| {},
        )
    }

    /// dpkg's answers to its configuration file questions when nobody answers them: keep
    /// the user's version (the default where dpkg has one, else the old one).
    fn dpkg_answers(&self) -> &'static [&'static str] {
        if self.options.frontend == Frontend::Noninteractive
            || self.options.assume_yes
            || !self.io.watching()
        {
            &["--force-confdef", "--force-confold"]
        } else {
            &[]
        }
    }

    fn dpkg_options(&self, cmd: &mut Command) {
        for option in self.dpkg_answers() {
            cmd.arg("-o").arg(format!("Dpkg::Options::={option}"));
        }
    }

    fn run_apt(&self, cmd: Command, logs: &Logs, label: &str) -> Result<term::Finished, Error> {
        let log = logs.append(logs::APT_TERM)?;
        let started = std::time::Instant::now();
        logs.main(&format!(
            "{label}: running {}",
            crate::upgrade::children::command_line(&cmd)
        ));
        let progress = self.io.progress();
        let id = progress::next_task_id();
        progress.begin(id, label, Some(1000));
        let mut done = 0u64;
        let interactive = self.io.watching()
            && self.options.frontend == Frontend::Text
            && !self.options.assume_yes;
        let finished = term::run(
            cmd,
            log,
            self.io.watching() && !interactive,
            interactive,
            &mut |status| {
                let percent = match status {
                    term::Status::Download { percent, .. }
                    | term::Status::Install { percent, .. } => *percent,
                    _ => return,
                };
                let now = (percent * 10.0).clamp(0.0, 1000.0) as u64;
                if now > done {
                    progress.advance(id, now - done);
                    done = now;
                }
            },
        );
        progress.finish(id, finished.as_ref().is_ok_and(|f| f.success));
        logs.main(&format!(
            "{label}: apt {} in {:.1} s",
            if finished.as_ref().is_ok_and(|f| f.success) {
                "finished"
            } else {
                "failed"
            },
            started.elapsed().as_secs_f64()
        ));
        finished
    }

    /// Obsolete packages, helpers, journal.
    fn finish(&self, journal: &mut UpgradeJournal, logs: &Logs) -> Result<(), UpgradeFailure> {
        let partly = |error: anyhow::Error| UpgradeFailure {
            code: ExitCode::PartlyUpgraded,
            error,
        };
        self.list_leftovers(journal, logs);
        for file in &journal.sources {
            let file = self.session.root.dir().join(file.as_path());
            logs.main(&format!(
                "kept the original of {} as {}",
                file.display(),
                sources::backup_path(&file).display()
            ));
        }
        if !self.options.keep_helpers {
            self.io.say("Removing the helpers");
            helpers::remove_all(&self.store, false).map_err(|e| partly(e.into()))?;
        }
        if let Some(media) = &journal.media_source {
            let _ = sources::remove_added(&self.session.root, media);
        }
        let follow_ups = std::fs::read_to_string(self.follow_up_file()).unwrap_or_default();
        for name in ["upgrade-apt.conf", "system-apt.conf", "follow-up.txt"] {
            let _ = helpers::remove_tree(&self.state().join(name));
        }
        UpgradeJournal::clear(&self.session.root).map_err(|e| partly(e.into()))?;
        logs.main(&format!(
            "upgrade to {} ({}) complete",
            journal.to, journal.to_version
        ));
        let reboot = self.session.root.path("/run/reboot-required").exists()
            || self.session.root.path("/var/run/reboot-required").exists();
        self.io.say(&format!(
            "The system is now {} ({}).{}",
            journal.to_version,
            journal.to,
            if reboot {
                " Restart it to finish the upgrade."
            } else {
                ""
            }
        ));
        if !follow_ups.is_empty() {
            self.io.say(&follow_ups);
        }
        Ok(())
    }

    /// The archives of the newer versions the suites of release `to` offer for the
    /// installed packages, read from the indices apt just stored (empty if unreadable).
    fn offered_upgrades(&self, to: &str) -> Vec<prefetch::Archive> {
        let root = &self.session.root;
        let Ok(status) = Status::read(root) else {
            return Vec::new();
        };
        let check = DistributionCheck::new(root, &self.session.os.id).ok();
        let is_distribution =
            |e: &sources::SourceEntry| check.as_ref().is_none_or(|c| c.is_distribution(e));
        pending::scan(root, to, &self.session.arch, &status, &is_distribution)
            .map(|scan| {
                scan.pending
                    .into_values()
                    .filter_map(|offer| offer.archive)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Obsolete packages (the distribution's, downloadable from nowhere in the new
    /// release) that nothing staying needs and no guard keeps leave with the upgrade's own
    /// apt run: removed, never purged ([`obsolete`]). Nothing else leaves that apt does not
    /// need to remove: no `--autoremove` (stock `apt full-upgrade` does not either; what
    /// nothing needs any more is listed in the plan, for `apt autoremove` afterwards).
    fn fold_obsolete(
        &self,
        journal: &mut UpgradeJournal,
        apt: &Apt,
        logs: &Logs,
    ) -> anyhow::Result<()> {
        journal.obsolete.clear();
        // Journals of earlier versions may say true; it is not read any more.
        let decision = self.obsolete(journal, apt, logs)?;
        self.record_follow_ups(&decision, logs);
        if !decision.keep.is_empty() {
            let reasons: Vec<String> = decision
                .keep
                .iter()
                .map(|(name, why)| format!("{name} ({why})"))
                .collect();
            logs.main(&format!(
                "obsolete packages that stay: {}",
                reasons.join(", ")
            ));
            let named: Vec<String> = decision
                .keep
                .iter()
                .filter(|(_, why)| !matches!(why, obsolete::Keep::NeededBy(_)))
                .map(|(name, why)| format!("{name} ({why})"))
                .collect();
            self.io.say(&format!(
                "Keeping {} packages the new release no longer has: {}{}",
                decision.keep.len(),
                named.join(", "),
                if named.len() < decision.keep.len() {
                    " and what they need"
                } else {
                    ""
                }
            ));
        }
        let obsolete = decision.remove;
        if !obsolete.is_empty() {
            let question = format!(
                "{} packages of the old release are no longer available ({}). Remove them with the upgrade (their configuration files stay)?",
                obsolete.len(),
                obsolete.join(" ")
            );
            let remove = self.options.assume_yes
                || (self.options.frontend == Frontend::Text
                    && self.io.ask(&question).unwrap_or(false));
            if remove {
                logs.main(&format!(
                    "obsolete packages leave with the upgrade: {}",
                    obsolete.join(" ")
                ));
                journal.obsolete = obsolete;
            } else {
                self.io.say(&format!(
                    "Keeping obsolete packages: {}",
                    obsolete.join(" ")
                ));
            }
        }
        Ok(())
    }

    /// Where the follow-ups for kept database servers wait for the end of the upgrade
    /// (a resumed run prints them too).
    fn follow_up_file(&self) -> PathBuf {
        self.state().join("follow-up.txt")
    }

    /// Writes what the user is to do about the kept database servers after the upgrade
    /// (`pg_upgradecluster`), from the clusters found now; removes an older file.
    fn record_follow_ups(&self, decision: &obsolete::Decision, logs: &Logs) {
        let mut clusters: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        if let Ok(versions) = std::fs::read_dir(self.session.root.path("/etc/postgresql")) {
            for version in versions.flatten() {
                let Ok(names) = std::fs::read_dir(version.path()) else {
                    continue;
                };
                let mut list: Vec<String> = names
                    .flatten()
                    .filter(|n| n.path().join("postgresql.conf").is_file())
                    .map(|n| n.file_name().to_string_lossy().into_owned())
                    .collect();
                list.sort();
                clusters.insert(version.file_name().to_string_lossy().into_owned(), list);
            }
        }
        let text = decision.follow_ups(&clusters).join("\n");
        let file = self.follow_up_file();
        let written = if text.is_empty() {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&file, e)),
                _ => Ok(()),
            }
        } else {
            logs.main(&format!("after the upgrade: {}", text.replace('\n', " | ")));
            crate::fsutil::write_atomic(&file, text.as_bytes())
        };
        if let Err(e) = written {
            logs.main(&format!("recording the follow-ups: {e}"));
        }
    }

    /// What the upgrade's apt runs take after `dist-upgrade`: `name-` for each obsolete
    /// package still there (a resumed run may find some gone).
    fn upgrade_args(&self, journal: &UpgradeJournal) -> Vec<String> {
        let mut args = Vec::new();
        if journal.obsolete.is_empty() {
            return args;
        }
        let status = Status::read(&self.session.root).unwrap_or_default();
        args.extend(
            journal
                .obsolete
                .iter()
                .filter(|name| {
                    status
                        .packages
                        .values()
                        .any(|p| p.name == **name && p.is_present())
                })
                .map(|name| format!("{name}-")),
        );
        args
    }

    /// Lists what the packages the upgrade removed left behind (their configuration
    /// files), and the command that purges those holding nothing of the user's. The
    /// upgrade itself never purges: purging `postgresql-15` drops its clusters.
    fn list_leftovers(&self, journal: &UpgradeJournal, logs: &Logs) {
        let path = self.session.root.path("/var/lib/dpkg/status");
        let system = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| obsolete::System::parse(&text))
        {
            Ok(system) => system,
            Err(e) => {
                logs.main(&format!("reading {}: {e}", path.display()));
                return;
            }
        };
        let files = RootFiles(&self.session.root);
        let removed = journal
            .from_distribution
            .iter()
            .chain(&journal.obsolete)
            .map(String::as_str);
        let listing = obsolete::leftovers(&system, removed, &files);
        let dpkg = format!("dpkg{}", dpkg_root_option(&self.session.root));
        if let Some(text) = listing.message(&dpkg) {
            logs.main(&text.replace('\n', " | "));
            self.io.say(&text);
        }
    }

    /// The obsolete packages: which leave with the upgrade and which stay (see
    /// [`obsolete::decide`]), from the root's dpkg status, the new release's indices and
    /// the target apt's `APT::NeverAutoRemove`.
    fn obsolete(
        &self,
        journal: &UpgradeJournal,
        apt: &Apt,
        logs: &Logs,
    ) -> anyhow::Result<obsolete::Decision> {
        if journal.from_distribution.is_empty() {
            return Ok(obsolete::Decision::default());
        }
        let path = self.session.root.path("/var/lib/dpkg/status");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let system = obsolete::System::parse(&text).map_err(|reason| Error::Config {
            path: path.clone(),
            reason,
        })?;
        let candidates: Vec<&str> = journal
            .from_distribution
            .iter()
            .map(String::as_str)
            .filter(|p| {
                system
                    .packages
                    .get(*p)
                    .is_some_and(|p| p.status == "installed")
            })
            .collect();
        if candidates.is_empty() {
            return Ok(obsolete::Decision::default());
        }
        let mut args = vec!["policy"];
        args.extend(candidates.iter().copied());
        let (_, policy) = apt_quiet(apt, "apt-cache", &args, logs)?;
        let policy = apt::policy(&policy);
        // No installed package of the distribution offered by any source: the new
        // release's lists are not there (whatever apt said), and judged from nothing,
        // everything would be obsolete.
        if candidates
            .iter()
            .all(|p| policy.get(*p).is_none_or(|o| o.sources.is_empty()))
        {
            anyhow::bail!(Error::Network {
                uri: "apt-get update".into(),
                reason: format!(
                    "the package lists of {} offer none of the {} installed packages of the \
                     distribution: they were not downloaded, so no package is judged obsolete",
                    journal.to,
                    candidates.len()
                ),
            });
        }
        // The guards as the target apt reads them: the root's apt.conf.d (01autoremove,
        // postgresql-common's 02autoremove-postgresql, …).
        let (dumped, dump) = apt_quiet(apt, "apt-config", &["dump"], logs)?;
        if !dumped {
            logs.main(&format!("apt-config dump failed: {}", tail(&dump, 4)));
            self.io
                .say("apt's APT::NeverAutoRemove cannot be read; no package leaves as obsolete.");
            return Ok(obsolete::Decision::default());
        }
        let guards = apt::config_list(&dump, "APT::NeverAutoRemove");
        let denylist = self.removal_denylist();
        Ok(obsolete::decide(&obsolete::Inputs {
            system: &system,
            from_distribution: &journal.from_distribution,
            policy: &policy,
            never_auto_remove: &guards,
            denylist: &denylist,
        }))
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
        let line = format!(
            "# Added by release-upgrader for the upgrade from media; removed afterwards.\n\
             deb [signed-by={}] file:{} {codename} main\n",
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
/// What the running release's indices say, before anything changes.
struct RunningRelease {
    /// Installed packages that some distribution source offers (the only ones that may
    /// be removed as obsolete later).
    from_distribution: Vec<String>,
    /// Set when the indices could not be refreshed and the media stand in for them.
    offline: bool,
}

/// Brings the running release's indices up to date with the system's own apt, refuses
/// pending updates (unless allowed), and lists the installed packages that come from
/// the distribution. Runs beside the helper download, so it takes only what it needs.
/// What checking the running release needs: a few fields of the session and options,
/// so that it can run on a thread of its own beside the helper install.
struct RunningCheck<'a> {
    root: &'a crate::root::SystemRoot,
    fetcher: &'a crate::fetch::Fetcher,
    codename: &'a str,
    arch: &'a str,
    os_id: &'a str,
    allow_pending: bool,
    /// Upgrade media stand in for the archive when it cannot be reached.
    media: bool,
}

fn check_running_release(check: &RunningCheck<'_>, logs: &Logs) -> anyhow::Result<RunningRelease> {
    let RunningCheck {
        root,
        fetcher,
        codename,
        arch,
        os_id,
        allow_pending,
        media,
    } = *check;
    let apt = Apt::new(root, None, "system-apt.conf");
    apt.write_config()?;
    let mut offline = false;
    if freshness::indices_are_current(root, fetcher) {
        logs.main("the running release's indices are what the archive serves; not refreshing them");
    } else {
        // Only the package indices matter here: no description translations (megabytes,
        // and the new release's update replaces them anyway).
        let update = apt_update(&apt, &["-o", "Acquire::Languages=none"], logs)?;
        offline = !update.0;
        if offline && !media {
            anyhow::bail!(Error::Network {
                uri: "apt-get update".into(),
                reason: format!(
                    "the current release's package lists could not be refreshed:\n{}",
                    update.1
                ),
            });
        }
    }
    let status = Status::read(root)?;
    let distribution = DistributionCheck::new(root, os_id).ok();
    let is_distribution =
        |e: &sources::SourceEntry| distribution.as_ref().is_none_or(|c| c.is_distribution(e));
    // The stored indices answer in a fraction of a second; apt, which first builds its
    // cache from them, in seconds. apt answers what the scan cannot read.
    let (pending, from_distribution) = match pending::scan(
        root,
        codename,
        arch,
        &status,
        &is_distribution,
    ) {
        Some(scan) => {
            logs.main(&format!(
                    "{} pending updates and {} installed packages of the distribution in the stored indices",
                    scan.pending.len(),
                    scan.from_distribution.len()
                ));
            (
                scan.pending.into_keys().collect(),
                scan.from_distribution.into_iter().collect(),
            )
        }
        None => ask_apt(&apt, &status, &is_distribution, allow_pending, logs)?,
    };
    if !allow_pending && !pending.is_empty() {
        let names: Vec<&str> = pending.iter().map(String::as_str).take(10).collect();
        let count = pending.len();
        anyhow::bail!(Error::Config {
            path: root.path("/etc/apt/sources.list"),
            reason: format!(
                "{count} updates of the running release are not installed ({}{}); install them first \
                 (apt-get upgrade) or pass --allow-pending",
                names.join(", "),
                if count > 10 { ", …" } else { "" }
            ),
        });
    }
    Ok(RunningRelease {
        from_distribution,
        offline,
    })
}

/// The pending updates (unless allowed) and the installed packages the distribution
/// offers, as apt sees them: what [`pending::scan`] answers when it can.
fn ask_apt(
    apt: &Apt,
    status: &Status,
    is_distribution: &dyn Fn(&sources::SourceEntry) -> bool,
    allow_pending: bool,
    logs: &Logs,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut pending = Vec::new();
    if !allow_pending {
        // --print-uris lists the plan without apt's slow simulated ordering and changes
        // nothing.
        let (ok, out) = apt_quiet(
            apt,
            "apt-get",
            &["--print-uris", "-y", "-o", "Debug::NoLocking=1", "upgrade"],
            logs,
        )?;
        let plan = Simulation::parse(&out);
        if ok {
            pending = plan
                .upgraded
                .iter()
                .chain(&plan.installed)
                .map(|a| a.package.clone())
                .collect();
        }
    }
    let installed: Vec<String> = status.installed().map(|p| p.name.clone()).collect();
    if installed.is_empty() {
        return Ok((pending, Vec::new()));
    }
    let mut args = vec!["policy"];
    args.extend(installed.iter().map(String::as_str));
    let (_, policy) = apt_quiet(apt, "apt-cache", &args, logs)?;
    let origins = apt::origins(&policy);
    let from_distribution = installed
        .into_iter()
        .filter(|name| {
            origins.get(name).is_some_and(|list| {
                list.iter().any(|(uri, suite)| {
                    is_distribution(&sources::SourceEntry {
                        types: vec!["deb".into()],
                        uris: vec![uri.clone()],
                        suites: vec![suite.clone()],
                        signed_by: None,
                    })
                })
            })
        })
        .collect();
    Ok((pending, from_distribution))
}

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

/// Space a new kernel and its initramfs take: the largest pair already in `/boot`.
fn boot_need(boot: &Path) -> u64 {
    let size_of = |prefix: &str| {
        std::fs::read_dir(boot)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    size_of("vmlinuz-") + size_of("initrd.img-") + size_of("System.map-")
}

/// The root's files, for the listing of what removed packages left behind: read only,
/// symbolic links not followed (a conffile that is a link counts as unreadable).
struct RootFiles<'a>(&'a crate::root::SystemRoot);

impl obsolete::Files for RootFiles<'_> {
    fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(self.0.path(path)).is_ok()
    }

    fn md5(&self, path: &str) -> Option<String> {
        use md5::Digest;
        let path = self.0.path(path);
        if !std::fs::symlink_metadata(&path).ok()?.is_file() {
            return None;
        }
        let mut file = std::fs::File::open(&path).ok()?;
        let mut hasher = md5::Md5::new();
        std::io::copy(&mut file, &mut hasher).ok()?;
        Some(
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
