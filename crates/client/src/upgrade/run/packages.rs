//! The second stage up to dpkg, all of it undoable: the sources moved to the target,
//! the new release's lists, the obsolete packages, apt's plan and the space it needs,
//! the confirmation and the download. The facts are gathered here; what they mean is
//! decided by the pure functions of [`crate::upgrade::plan`].

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::events::PhaseId;
use crate::upgrade::apt::{self, Apt};
use crate::upgrade::dpkg_status::Status;
use crate::upgrade::journal::{Phase, UpgradeJournal};
use crate::upgrade::logs::Logs;
use crate::upgrade::obsolete;
use crate::upgrade::plan::{self, Plan, tail};
use crate::upgrade::sources::{self, DistributionCheck, Rules};
use crate::upgrade::{pending, prefetch, term};

use super::{Frontend, Upgrader, apt_quiet, apt_update};

impl Upgrader<'_> {
    /// Sources, update, plan, confirmation, download: all undoable.
    pub(super) fn prepare_packages(
        &self,
        journal: &mut UpgradeJournal,
        apt: &Apt,
        logs: &Logs,
    ) -> anyhow::Result<()> {
        if journal.phase < Phase::SourcesRewritten {
            self.phase(PhaseId::Sources, logs, || self.point_sources(journal, logs))?;
        }
        self.phase(PhaseId::Update, logs, || self.update(journal, apt, logs))?;
        let plan = self.phase(PhaseId::Plan, logs, || self.plan(journal, apt, logs))?;
        self.phase(PhaseId::Download, logs, || {
            self.download(journal, apt, &plan, logs)
        })
    }

    /// The sources moved to the target (their backups first), recorded in the journal.
    fn point_sources(&self, journal: &mut UpgradeJournal, logs: &Logs) -> anyhow::Result<()> {
        {
            let check = self.distribution_check(journal.cdrom.as_deref())?;
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
                    if change.action == sources::Action::Upgrade
                        && check.as_ref().is_some_and(|c| c.media_vouches())
                    {
                        logs.main(&format!(
                            "{} {}: moved to {} (the media, signed by the distribution's \
                             archive key, vouch for sources apt stored no lists for)",
                            change.uris.join(" "),
                            change.suites.join(" "),
                            journal.to
                        ));
                    }
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
        Ok(())
    }

    /// The new release's package lists (only media may stand in for missing ones).
    /// Without the network apt reads the media's list alone, so that nothing waits on a
    /// dead network (its retries included), and the stored lists of the other sources
    /// are kept.
    fn update(&self, journal: &UpgradeJournal, apt: &Apt, logs: &Logs) -> anyhow::Result<()> {
        let without_network = self.options.without_network || journal.without_network;
        let media_only = match &journal.media_source {
            Some(list) if without_network => media_only_options(list),
            _ => Vec::new(),
        };
        let extra: Vec<&str> = media_only.iter().map(String::as_str).collect();
        let (ok, out) = apt_update(apt, &extra, logs)?;
        if !ok {
            if journal.cdrom.is_none() || without_network {
                anyhow::bail!(Error::Network {
                    uri: "apt-get update".into(),
                    reason: format!(
                        "the new release's package lists could not be {}:\n{}",
                        if without_network {
                            "read from the media"
                        } else {
                            "downloaded"
                        },
                        tail(&out, 8)
                    ),
                });
            }
            self.io.say(
                "Some package lists could not be downloaded (offline?); continuing with the media.",
            );
        }
        Ok(())
    }

    /// apt's resolution with the obsolete packages decided, checked (refused removals,
    /// space), shown and confirmed.
    fn plan(&self, journal: &mut UpgradeJournal, apt: &Apt, logs: &Logs) -> anyhow::Result<Plan> {
        // A run resumed after the plan was confirmed keeps what it decided then.
        let decision = if journal.phase < Phase::Planned {
            self.fold_obsolete(journal, apt, logs)?
        } else {
            obsolete::Decision::default()
        };
        // One resolution gives the plan, the sizes and every archive with its SHA-256
        // (--print-uris changes nothing; apt's simulated ordering, -s, costs seconds).
        let resolve = |extra: &[String]| {
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
            self.offered_upgrades(&journal.to, journal.cdrom.as_deref())
        } else {
            Vec::new()
        };
        let archives_dir = self.session.root.path("/var/cache/apt/archives");
        let fetcher = self.fetcher(journal);
        let args = self.upgrade_args(journal);
        let (planned, early_fetch) = std::thread::scope(|scope| {
            let early_fetch = scope.spawn(|| {
                let started = std::time::Instant::now();
                let fetched = prefetch::fetch_all(fetcher, &early, &archives_dir);
                (fetched, started.elapsed())
            });
            (resolve(&args), early_fetch.join())
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
            (ok, out) = resolve(&self.upgrade_args(journal))?;
        }
        let status = Status::read(&self.session.root)?;
        let denylist = self.removal_denylist();
        let plan = plan::plan(&plan::Facts {
            apt_ok: ok,
            apt_output: &out,
            status: &status,
            denylist: &denylist,
            obsolete: &decision,
            obsolete_removed: &journal.obsolete,
        });
        if let Some(refusal) = plan.refusal() {
            anyhow::bail!(self.refusal_error(refusal));
        }
        self.check_space(&plan)?;
        self.show_plan(&plan, logs);
        let simulation = &plan.simulation;
        let acted_on = simulation.upgraded.len()
            + simulation.installed.len()
            + simulation.removed.len()
            + simulation.downgraded.len();
        self.planned_packages
            .store(acted_on as u64, std::sync::atomic::Ordering::Relaxed);
        if journal.phase < Phase::Planned {
            if !self.confirm("Do you want to start the upgrade?")? {
                anyhow::bail!(Error::Cancelled);
            }
            // Records what the install run takes too, for a resumed run.
            journal.advance(&self.session.root, Phase::Planned)?;
        }
        Ok(plan)
    }

    /// The plan's archives into apt's cache (apt fetches what is left).
    fn download(
        &self,
        journal: &mut UpgradeJournal,
        apt: &Apt,
        plan: &Plan,
        logs: &Logs,
    ) -> anyhow::Result<()> {
        let archives = &plan.archives;
        let started = std::time::Instant::now();
        let fetched = prefetch::fetch_all(
            self.fetcher(journal),
            archives,
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
            Err(e) if e.is_cancelled() => anyhow::bail!(Error::Cancelled),
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
        let missing = fetched.is_err() || plan.archives_left_to_apt;
        if missing {
            let mut cmd = apt.command("apt-get");
            cmd.args(term::status_option())
                .args(["-y", "--download-only", "dist-upgrade"])
                .args(self.upgrade_args(journal));
            // Downloads ask nothing.
            let finished = self.run_apt(
                cmd,
                logs,
                "Downloading",
                crate::upgrade::journal::Answers::Defaults,
            )?;
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

    /// The error a refusal of the plan stops the run with.
    pub(super) fn refusal_error(&self, refusal: plan::Refusal) -> Error {
        let root = &self.session.root;
        match refusal {
            plan::Refusal::Removals(refused) => {
                let names: Vec<&str> = refused.iter().map(|r| r.package.as_str()).collect();
                Error::Config {
                    path: root.path(plan::SITE_DENYLIST),
                    reason: format!(
                        "the upgrade would remove {} — essential or protected packages; refusing",
                        names.join(", ")
                    ),
                }
            }
            plan::Refusal::AptFailed(tail) => Error::Config {
                path: root.path("/etc/apt/sources.list"),
                reason: format!("apt cannot compute the upgrade:\n{tail}"),
            },
            plan::Refusal::NoSpace {
                path,
                needed,
                available,
            } => Error::NoSpace {
                path,
                needed,
                available,
            },
        }
    }

    /// The removal denylist: built in, the site's file, the running kernel's image.
    pub(super) fn removal_denylist(&self) -> Vec<String> {
        let root = &self.session.root;
        let site = std::fs::read_to_string(root.path(plan::SITE_DENYLIST)).ok();
        let running_kernel = if root.is_host() {
            std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()
        } else {
            None
        };
        let mut list = plan::removal_denylist(site.as_deref(), running_kernel.as_deref());
        if self.options.mode == Some(crate::upgrade::mode::Mode::Desktop) {
            list.extend(plan::DESKTOP_METAPACKAGES.map(str::to_owned));
        }
        list
    }

    /// Measures the filesystems of the places the plan needs space at (one `statvfs`
    /// per filesystem) and refuses when one lacks the room.
    pub(super) fn check_space(&self, plan: &Plan) -> anyhow::Result<()> {
        let root = &self.session.root;
        let places = plan.space_places();
        let mut located: Vec<(plan::Place, u64, PathBuf)> = Vec::new();
        for place in &places {
            let path = root.path(place.path());
            let existing = path
                .ancestors()
                .find(|p| p.exists())
                .unwrap_or(Path::new("/"))
                .to_owned();
            let device = std::os::unix::fs::MetadataExt::dev(
                &std::fs::metadata(&existing).map_err(|e| Error::io(&existing, e))?,
            );
            located.push((*place, device, existing));
        }
        let mut available: Vec<(u64, u64)> = Vec::new();
        for (_, device, path) in &located {
            if available.iter().any(|(d, _)| d == device) {
                continue;
            }
            let stat = nix::sys::statvfs::statvfs(path).map_err(|e| Error::io(path, e.into()))?;
            available.push((
                *device,
                stat.blocks_available() as u64 * stat.fragment_size() as u64,
            ));
        }
        let measured: Vec<(plan::Place, plan::Filesystem)> = located
            .into_iter()
            .map(|(place, device, path)| {
                let available = available
                    .iter()
                    .find(|(d, _)| *d == device)
                    .map_or(0, |(_, a)| *a);
                (
                    place,
                    plan::Filesystem {
                        device,
                        path,
                        available,
                    },
                )
            })
            .collect();
        let kernel = if places.contains(&plan::Place::Boot) {
            boot_need(&root.path("/boot"))
        } else {
            0
        };
        for space in plan.space_uses(&measured, kernel) {
            if let Some(refusal) = space.refusal() {
                anyhow::bail!(self.refusal_error(refusal));
            }
            log::info!(
                "{}: {} needed for {}, {} free",
                space.path.display(),
                space.needed,
                space.what.join(" and "),
                space.available
            );
        }
        Ok(())
    }

    pub(super) fn show_plan(&self, plan: &Plan, logs: &Logs) {
        let text = plan.summary();
        logs.main(&text.replace('\n', " | "));
        self.io.say(&text);
        self.io
            .notify(&crate::events::Event::UpgradePlan(plan.numbers()));
    }

    /// The archives of the newer versions the suites of release `to` offer for the
    /// installed packages, read from the indices apt just stored (empty if unreadable).
    pub(super) fn offered_upgrades(
        &self,
        to: &str,
        media: Option<&Path>,
    ) -> Vec<prefetch::Archive> {
        let root = &self.session.root;
        let Ok(status) = Status::read(root) else {
            return Vec::new();
        };
        let check = DistributionCheck::new(root, &self.session.os.id)
            .ok()
            .map(|check| check.with_media(media));
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
    pub(super) fn fold_obsolete(
        &self,
        journal: &mut UpgradeJournal,
        apt: &Apt,
        logs: &Logs,
    ) -> anyhow::Result<obsolete::Decision> {
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
        let obsolete = decision.remove.clone();
        if !obsolete.is_empty() {
            let question = format!(
                "Packages of the old release that the new one no longer has: {}. Remove them \
                 with the upgrade (their configuration files stay)?",
                obsolete.join(" ")
            );
            let remove = self.options.assume_yes
                || (matches!(self.options.frontend, Frontend::Text | Frontend::Json)
                    && self
                        .io
                        .ask(crate::events::QuestionKind::Confirm, &question)
                        .unwrap_or(false));
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
        Ok(decision)
    }

    /// Where the follow-ups for kept database servers wait for the end of the upgrade
    /// (a resumed run prints them too).
    pub(super) fn follow_up_file(&self) -> PathBuf {
        self.state().join("follow-up.txt")
    }

    /// Writes what the user is to do about the kept database servers after the upgrade
    /// (`pg_upgradecluster`), from the clusters found now; removes an older file.
    pub(super) fn record_follow_ups(&self, decision: &obsolete::Decision, logs: &Logs) {
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
            crate::fsutil::write_atomic(&file, text.as_bytes()).map_err(Error::from)
        };
        if let Err(e) = written {
            logs.main(&format!("recording the follow-ups: {e}"));
        }
    }

    /// What the upgrade's apt runs take after `dist-upgrade`: `name-` for each obsolete
    /// package still there (a resumed run may find some gone).
    pub(super) fn upgrade_args(&self, journal: &UpgradeJournal) -> Vec<String> {
        if journal.obsolete.is_empty() {
            return Vec::new();
        }
        let status = Status::read(&self.session.root).unwrap_or_default();
        plan::removal_args(&journal.obsolete, &status)
    }

    /// The obsolete packages: which leave with the upgrade and which stay (see
    /// [`obsolete::decide`]), from the root's dpkg status, the new release's indices and
    /// the target apt's `APT::NeverAutoRemove`.
    pub(super) fn obsolete(
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
        let candidates = plan::obsolete_candidates(&system, &journal.from_distribution);
        if candidates.is_empty() {
            return Ok(obsolete::Decision::default());
        }
        let mut args = vec!["policy"];
        args.extend(candidates.iter().copied());
        let (_, policy) = apt_quiet(apt, "apt-cache", &args, logs)?;
        let policy = apt::policy(&policy);
        if let Some(reason) = plan::lists_missing(&journal.to, &candidates, &policy) {
            anyhow::bail!(Error::Network {
                uri: "apt-get update".into(),
                reason,
            });
        }
        // The guards as the target apt reads them: the root's apt.conf.d (01autoremove,
        // postgresql-common's 02autoremove-postgresql, …).
        let (dumped, dump) = apt_quiet(apt, "apt-config", &["dump"], logs)?;
        if !dumped {
            logs.main(&format!("apt-config dump failed: {}", tail(&dump, 4)));
            self.io
                .say("apt's APT::NeverAutoRemove cannot be read; no package leaves as obsolete.");
        }
        let denylist = self.removal_denylist();
        Ok(plan::obsolete(&plan::ObsoleteFacts {
            system: &system,
            from_distribution: &journal.from_distribution,
            policy: &policy,
            config_dump: dumped.then_some(dump.as_str()),
            denylist: &denylist,
        }))
    }
}

/// apt options that make `apt-get update` read the media's list (`list`, relative to the
/// root) and no other source, and keep the lists it does not read.
fn media_only_options(list: &crate::confine::RelPath) -> Vec<String> {
    // Relative to the root's /etc/apt (`Dir::Etc`), as apt resolves them under --root too.
    let name = list
        .as_str()
        .strip_prefix("etc/apt/")
        .unwrap_or(list.as_str())
        .to_owned();
    vec![
        "-o".into(),
        format!("Dir::Etc::SourceList={name}"),
        "-o".into(),
        "Dir::Etc::SourceParts=release-upgrader-no-parts.d".into(),
        "-o".into(),
        "APT::Get::List-Cleanup=false".into(),
        "-o".into(),
        "Acquire::Retries=0".into(),
    ]
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
