//! The second stage from dpkg on: the install run (and the repair of an interrupted
//! one), the rollback while dpkg has changed nothing, and the end (what removed packages
//! left behind, helpers, journal). After dpkg changed a package, a failure leaves a
//! partly upgraded system (exit 6) and the message says how to finish.

use std::process::Command;

use crate::error::{Error, ExitCode};
use crate::events::{Question, QuestionKind};
use crate::helpers;
use crate::progress;
use crate::upgrade::apt::{Apt, Simulation};
use crate::upgrade::dpkg_status::{self, Status};
use crate::upgrade::journal::{Answers, Phase, UpgradeJournal};
use crate::upgrade::logs::{self, Logs};
use crate::upgrade::obsolete;
use crate::upgrade::pty::Asked;
use crate::upgrade::{children, sources, term};

use super::{Frontend, UpgradeFailure, Upgrader, apt_quiet, dpkg_root_args, dpkg_root_option};

impl Upgrader<'_> {
    /// Undoes everything before dpkg ran, and reports why (exit 5).
    pub(super) fn roll_back(
        &self,
        journal: &UpgradeJournal,
        error: anyhow::Error,
        logs: &Logs,
    ) -> UpgradeFailure {
        logs.main(&format!("rolling back: {error:#}"));
        // Ctrl-C reaches apt too, which then fails in its own words (a download "failed"):
        // the user cancelled, and is told so, not sent to check the network.
        let error = if self.session.fetcher.cancelled() {
            anyhow::Error::new(crate::error::Error::Cancelled)
        } else {
            error
        };
        let cancelled = crate::error::exit_code_of(&error) == ExitCode::Cancelled;
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
    pub(super) fn install(
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
        // The answers of the run that starts dpkg are recorded with the phase: a resume
        // answers as it did (see `Answers::resumed`).
        if journal.answers.is_none() {
            journal.answers = Some(self.answers_now());
        }
        let answers = self.answers(journal);
        logs.main(&format!(
            "questions: {}",
            match answers {
                Answers::Terminal => "asked on the terminal",
                Answers::Program => "asked of the program driving the run (-f json)",
                Answers::Defaults => "answered with the defaults (configuration files kept)",
            }
        ));
        journal
            .advance(&self.session.root, Phase::Installing)
            .map_err(|e| partly(e.into()))?;
        if resuming {
            self.io.say("Finishing the interrupted installation");
            self.wait_for_locks(logs).map_err(|e| partly(e.into()))?;
            self.repair(apt, logs, answers).map_err(partly)?;
        }
        let mut cmd = apt.command("apt-get");
        cmd.args(term::status_option())
            .args(["-y", "dist-upgrade"])
            .args(self.upgrade_args(journal));
        dpkg_options(&mut cmd, answers);
        // What dpkg's database was before its first run: if that run fails having
        // changed nothing, the upgrade is rolled back (exit 5), not left half-done.
        let before = (!resuming)
            .then(|| dpkg_status::DbSnapshot::take(&self.session.root).ok())
            .flatten();
        let finished = self.run_apt(cmd, logs, "Installing", answers);
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
    pub(super) fn repair(&self, apt: &Apt, logs: &Logs, answers: Answers) -> anyhow::Result<()> {
        let configured = self.configure_pending(logs, answers)?;
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
        dpkg_options(&mut fix, answers);
        let repaired = self.run_apt(fix, logs, "Repairing", answers)?;
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
            let again = self.configure_pending(logs, answers)?;
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

    /// `dpkg --configure -a`, answered as the upgrade's own apt run answers: with the
    /// defaults, or on the terminal (dpkg's own status descriptor tells of its
    /// questions, as apt's does in the apt runs).
    pub(super) fn configure_pending(
        &self,
        logs: &Logs,
        answers: Answers,
    ) -> Result<term::Finished, Error> {
        let dpkg = self.store.prefix.join(crate::layout::BIN).join("dpkg");
        let mut cmd = children::command(&dpkg);
        cmd.args(dpkg_root_args(&self.session.root))
            .args(dpkg_answers(answers))
            .args(["--status-fd", "3", "--configure", "-a"])
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.store.prefix.join(crate::layout::DPKG_PATH).display()
                ),
            );
        if let Some(frontend) = answers.debian_frontend() {
            cmd.env("DEBIAN_FRONTEND", frontend);
        }
        self.run_apt(cmd, logs, "Configuring", answers)
    }

    /// How this run can answer questions: by the program driving it with `-f json`; on
    /// the terminal when the text frontend runs there without `-y` (someone watches
    /// stderr and types on stdin); else with the defaults.
    pub(super) fn answers_now(&self) -> Answers {
        use std::io::IsTerminal;
        if self.options.frontend == Frontend::Json {
            return Answers::Program;
        }
        let asks = self.options.frontend == Frontend::Text
            && !self.options.assume_yes
            && self.io.watching()
            && std::io::stdin().is_terminal();
        if asks {
            Answers::Terminal
        } else {
            Answers::Defaults
        }
    }

    /// How this run answers, continuing the one the journal recorded.
    pub(super) fn answers(&self, journal: &UpgradeJournal) -> Answers {
        Answers::resumed(journal.answers, self.answers_now())
    }

    /// Runs apt (or dpkg) with its status on fd 3 into the progress and `apt-term.log`;
    /// on a pty of its own with questions shown when the user answers them.
    pub(super) fn run_apt(
        &self,
        mut cmd: Command,
        logs: &Logs,
        label: &str,
        answers: Answers,
    ) -> Result<term::Finished, Error> {
        if answers == Answers::Program {
            // Nobody reads a pager: a "D" typed anyway shows the difference and asks again.
            cmd.env("PAGER", "cat");
        }
        let log = logs.append(logs::APT_TERM)?;
        let started = std::time::Instant::now();
        let program = std::path::PathBuf::from(children::program_of(&cmd));
        let program = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        logs.main(&format!(
            "{label}: running {}",
            crate::upgrade::children::command_line(&cmd)
        ));
        let progress = self.io.progress();
        let id = progress::next_task_id();
        progress.begin_in(id, label, self.planned_packages(), progress::Unit::Packages);
        let mut packages = std::collections::BTreeSet::new();
        let screen = QuestionScreen {
            io: self.io,
            logs,
            answers,
        };
        let output = match answers {
            Answers::Terminal => term::Output::Terminal(&screen),
            Answers::Program => term::Output::Program(&screen),
            Answers::Defaults if self.io.shows_apt_output() => term::Output::Shown,
            Answers::Defaults => term::Output::Logged,
        };
        let finished = term::run(cmd, log, output, &mut |status| {
            let (percent, item) = match status {
                term::Status::Download { percent, what } => (*percent, what.as_str()),
                term::Status::Install {
                    percent, package, ..
                } if status.names_a_package() => {
                    packages.insert(package.clone());
                    (*percent, package.as_str())
                }
                _ => return,
            };
            progress.at(id, packages.len() as u64, percent, item);
        });
        progress.finish(id, finished.as_ref().is_ok_and(|f| f.success));
        // The questions nobody was asked: reported with the answer dpkg took.
        for defaulted in finished.iter().flat_map(|f| &f.defaulted) {
            let answer = if defaulted.kept { "N" } else { "Y" };
            logs.main(&format!(
                "configuration file {}: {} (answered {answer} by default)",
                defaulted.path,
                if defaulted.kept {
                    "the user's version kept"
                } else {
                    "the maintainer's version installed"
                }
            ));
            self.io
                .notify(&crate::events::Event::Question(conffile_question(
                    &defaulted.path,
                    Some(answer),
                )));
        }
        logs.main(&format!(
            "{label}: {} {} in {:.1} s",
            program,
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
    pub(super) fn finish(
        &self,
        journal: &mut UpgradeJournal,
        logs: &Logs,
    ) -> Result<(), UpgradeFailure> {
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
        // The login notice named the release just reached; the next `check --motd`
        // would say whether there is a newer one.
        if let Err(e) = crate::state::StateDir::new(&self.session.root).set_release_notice(None) {
            logs.main(&format!("the login notice could not be removed: {e}"));
        }
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

    /// Lists what the packages the upgrade removed left behind (their configuration
    /// files), and the command that purges those holding nothing of the user's. The
    /// upgrade itself never purges: purging `postgresql-15` drops its clusters.
    pub(super) fn list_leftovers(&self, journal: &UpgradeJournal, logs: &Logs) {
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
}

/// dpkg's answers to its configuration file questions when nobody answers them: keep
/// the user's version (the default where dpkg has one, else the old one).
fn dpkg_answers(answers: Answers) -> &'static [&'static str] {
    match answers {
        Answers::Defaults => &["--force-confdef", "--force-confold"],
        Answers::Terminal | Answers::Program => &[],
    }
}

/// [`dpkg_answers`] as apt options.
fn dpkg_options(cmd: &mut Command, answers: Answers) {
    for option in dpkg_answers(answers) {
        cmd.arg("-o").arg(format!("Dpkg::Options::={option}"));
    }
}

/// The front end's side of a question on the terminal: reported (the `question` event,
/// the progress put away while it is open) and named in the log.
struct QuestionScreen<'a> {
    io: &'a dyn super::Interaction,
    logs: &'a Logs,
    answers: Answers,
}

impl term::Screen for QuestionScreen<'_> {
    fn asking(&self, asked: Option<&Asked>) {
        match asked {
            Some(asked) => {
                let to = match self.answers {
                    Answers::Program => "for the program driving the run",
                    _ => "on the terminal",
                };
                self.logs
                    .main(&format!("question {to}: {}", asked.describe()));
                let mut question = question_event(asked);
                if self.answers == Answers::Program {
                    // No pager or shell for a program: what it shows of the difference
                    // it makes itself.
                    question.choices.retain(|c| c != "D" && c != "Z");
                }
                self.io.question(&question);
            }
            None => {
                self.logs.main("question answered");
                self.io.answered();
            }
        }
    }
}

/// The `question` event for what the terminal shows.
fn question_event(asked: &Asked) -> Question {
    let other = |text: String| Question {
        kind: QuestionKind::Debconf,
        package: None,
        path: None,
        text,
        choices: Vec::new(),
        default: None,
        answer: None,
    };
    match asked {
        Asked::Conffile { path } => conffile_question(path, None),
        Asked::FullScreen => {
            other("a full-screen question (debconf's dialog frontend or a pager)".into())
        }
        Asked::Prompt { text } => other(text.clone()),
    }
}

/// dpkg's configuration file question about `path`; `answer` when dpkg took it itself.
fn conffile_question(path: &str, answer: Option<&str>) -> Question {
    Question {
        kind: QuestionKind::Conffile,
        package: None,
        path: Some(path.to_owned()),
        text: format!(
            "Configuration file {path} was changed since installation and the package \
             ships a new version: install the maintainer's version (Y, I), keep yours \
             (N, O), show the differences (D) or examine it in a shell (Z)?"
        ),
        choices: ["Y", "I", "N", "O", "D", "Z"].map(String::from).to_vec(),
        default: Some("N".into()),
        answer: answer.map(String::from),
    }
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
