//! The first stage's checks of the system, before anything changes: apt's and dpkg's
//! locks, an interrupted dpkg, broken packages, a pending reboot, held packages, the
//! target and its helpers, and the running release's pending updates. What they find
//! feeds the plan ([`crate::upgrade::plan`]); what they refuse stops the run (exit 2).

use std::path::PathBuf;

use crate::error::{Error, ExitCode};
use crate::session::{HelperPlan, UpgradeTarget};
use crate::upgrade::apt::{self, Apt, Simulation};
use crate::upgrade::dpkg_status::{self, Status};
use crate::upgrade::logs::Logs;
use crate::upgrade::plan;
use crate::upgrade::sources::{self, DistributionCheck};
use crate::upgrade::{freshness, locks, pending, statoverride};

use super::{Upgrader, apt_quiet, apt_update, dpkg_root_args, dpkg_root_option};

impl Upgrader<'_> {
    pub(super) fn preflight(&self, logs: &Logs) -> anyhow::Result<()> {
        let root = &self.session.root;
        if self.options.dry_run {
            // A dry run takes no lock and waits for none: it says who holds one.
            if let Some(holder) = locks::first_holder(root) {
                self.io.say(&format!(
                    "The package system is in use: {holder}; a real run would wait for it \
                     (--lock-timeout {} s).",
                    self.options.lock_timeout.as_secs()
                ));
            }
        } else {
            self.wait_for_locks(logs)?;
        }
        // Before anything runs dpkg on the root from here.
        statoverride::check(root)?;
        if dpkg_status::dpkg_interrupted(root) && self.options.dry_run {
            self.io.say(&format!(
                "dpkg was interrupted; a real run would offer `dpkg{} --configure -a` first.",
                dpkg_root_option(root)
            ));
        } else if dpkg_status::dpkg_interrupted(root) {
            let fix = format!("dpkg{} --configure -a", dpkg_root_option(root));
            let run = self.options.assume_yes
                || self
                    .io
                    .ask(
                        crate::events::QuestionKind::Confirm,
                        &format!("dpkg was interrupted. Run `{fix}` now?"),
                    )
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
        let names = plan::held_packages(&status);
        if !names.is_empty() {
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
    pub(super) fn wait_for_locks(&self, logs: &Logs) -> Result<(), Error> {
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

    /// The target release, its helper plan and the media serving the upgrade (if any):
    /// from the media given (`--cdrom`), or from the meta-release. When no release list
    /// can be read (the network is down, or not to be used) and media are mounted that
    /// carry a newer release, they are offered: a dry run shows what they would do, a
    /// run that asks before it starts asks on the terminal (`-y` and `-f noninteractive`
    /// choose no source), any other run stops with the network's error and the `--cdrom`
    /// command that would use them.
    pub(super) fn target_and_helpers(
        &self,
    ) -> anyhow::Result<(UpgradeTarget, HelperPlan, Option<PathBuf>)> {
        use anyhow::Context as _;
        let remember = !self.options.dry_run;
        if let Some(media) = &self.options.cdrom {
            let (target, plan) = self.session.target_and_helpers(Some(media), remember)?;
            return Ok((target, plan, Some(media.clone())));
        }
        let unreachable = if self.options.without_network {
            anyhow::Error::new(Error::Config {
                path: "--without-network".into(),
                reason: "an upgrade without the network needs upgrade media; pass --cdrom PATH"
                    .into(),
            })
        } else {
            match self.session.find_target(remember) {
                Ok(target) => {
                    let request = self.session.network_pocket(&target)?;
                    let plan = self.session.helpers_for(&target, &request, remember)?;
                    return Ok((target, plan, None));
                }
                Err(err) if err.exit_code() == ExitCode::Network => {
                    anyhow::Error::new(err).context("looking for a new release")
                }
                Err(err) => return Err(err).context("looking for a new release"),
            }
        };
        let Some(offer) = self.session.media_offers().into_iter().next() else {
            return Err(unreachable);
        };
        let path = offer.media.path.clone();
        let (dist, version) = (&offer.target.target.dist, &offer.target.target.version);
        let command = format!(
            "release-upgrader{} upgrade --cdrom {}",
            self.root_args(),
            path.display()
        );
        let found = format!(
            "Upgrade media at {} carry {version} ({dist}): {}",
            path.display(),
            offer.media.info
        );
        let chosen = if self.options.dry_run {
            self.io.say(&format!(
                "{found}. The release list cannot be read ({unreachable:#}); showing the \
                 upgrade from the media (a real run asks first, or pass --cdrom)."
            ));
            true
        } else {
            self.io.say(&format!("{found}."));
            let question = format!(
                "The release list cannot be read ({unreachable:#}). Upgrade to {version} \
                 ({dist}) from the media at {} instead?",
                path.display()
            );
            self.asks_to_start()
                && self.io.can_ask()
                && self.io.ask(crate::events::QuestionKind::Confirm, &question) == Some(true)
        };
        if !chosen {
            return Err(
                unreachable.context(format!("{found}; to upgrade from them, run `{command}`"))
            );
        }
        let plan = self
            .session
            .helpers_for(&offer.target, &offer.request, remember)?;
        Ok((offer.target, plan, Some(path)))
    }

    /// The dry run's look at the running release: pending updates from the package lists
    /// apt stored, neither refreshed nor asked of apt (both write under the root).
    pub(super) fn check_running_release_read_only(
        &self,
        logs: &Logs,
        media: Option<&std::path::Path>,
    ) -> anyhow::Result<()> {
        let root = &self.session.root;
        let status = Status::read(root)?;
        let distribution = DistributionCheck::new(root, &self.session.os.id)
            .ok()
            .map(|check| check.with_media(media));
        let is_distribution =
            |e: &sources::SourceEntry| distribution.as_ref().is_none_or(|c| c.is_distribution(e));
        let Some(scan) = pending::scan(
            root,
            &self.session.codename,
            &self.session.arch,
            &status,
            &is_distribution,
        ) else {
            self.io.say(
                "The stored package lists cannot tell the pending updates of the running release; \
                 a real run refreshes them and asks apt.",
            );
            return Ok(());
        };
        logs.main(&format!(
            "{} pending updates in the stored indices",
            scan.pending.len()
        ));
        let pending: Vec<String> = scan.pending.into_keys().collect();
        if !self.options.allow_pending && !pending.is_empty() {
            anyhow::bail!(pending_error(root, &pending));
        }
        Ok(())
    }

    pub(super) fn say_offline(&self, release: &RunningRelease) {
        match &release.without_network {
            Some(WithoutNetwork::Asked) => self.io.say(
                "Not using the network (--without-network): the current release's package \
                 lists are not refreshed, and the upgrade reads only the media.",
            ),
            Some(WithoutNetwork::Down(reason)) => self.io.say(&format!(
                "The network cannot be reached ({reason}); continuing without it, from the \
                 media (as with --without-network)."
            )),
            None if release.offline => self.io.say(
                "Cannot refresh the current release's package lists (offline?); continuing with the media.",
            ),
            None => {}
        }
    }
}

/// Why an upgrade from media goes on without the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum WithoutNetwork {
    /// `--without-network`.
    Asked,
    /// The first attempt to reach the running release's archive failed (why): not one
    /// more is made, nor a retry.
    Down(String),
}

/// What the running release's indices say, before anything changes.
pub(super) struct RunningRelease {
    /// Installed packages that some distribution source offers (the only ones that may
    /// be removed as obsolete later).
    pub(super) from_distribution: Vec<String>,
    /// Set when the indices could not be refreshed and the media stand in for them.
    pub(super) offline: bool,
    /// Set when the upgrade goes on without the network, and why.
    pub(super) without_network: Option<WithoutNetwork>,
}

/// What checking the running release needs: a few fields of the session and options,
/// so that it can run on a thread of its own beside the helper install.
pub(super) struct RunningCheck<'a> {
    pub(super) root: &'a crate::root::SystemRoot,
    pub(super) fetcher: &'a crate::fetch::Fetcher,
    pub(super) codename: &'a str,
    pub(super) arch: &'a str,
    pub(super) os_id: &'a str,
    pub(super) allow_pending: bool,
    /// Upgrade media, which stand in for the archive when it cannot be reached.
    pub(super) media: Option<&'a std::path::Path>,
    /// `--without-network`.
    pub(super) without_network: bool,
}

/// Brings the running release's indices up to date with the system's own apt, refuses
/// pending updates (unless allowed), and lists the installed packages that come from
/// the distribution. Runs beside the helper download, so it takes only what it needs.
pub(super) fn check_running_release(
    check: &RunningCheck<'_>,
    logs: &Logs,
) -> anyhow::Result<RunningRelease> {
    let RunningCheck {
        root,
        fetcher,
        codename,
        arch,
        os_id,
        allow_pending,
        media,
        without_network,
    } = *check;
    let apt = Apt::new(root, None, "system-apt.conf");
    apt.write_config()?;
    let mut offline = false;
    // With media, one attempt tells whether the network is there at all: a dead one is
    // not waited on (retries, apt's own) a second time.
    let without_network = if without_network {
        Some(WithoutNetwork::Asked)
    } else if media.is_some() {
        freshness::network_down(root, fetcher).map(WithoutNetwork::Down)
    } else {
        None
    };
    if let Some(why) = &without_network {
        logs.main(&format!(
            "not refreshing the running release's indices: no network ({why:?}); the media stand in"
        ));
        offline = true;
    } else if freshness::indices_are_current(root, fetcher) {
        logs.main("the running release's indices are what the archive serves; not refreshing them");
    } else {
        // Only the package indices matter here: no description translations (megabytes,
        // and the new release's update replaces them anyway).
        let update = apt_update(&apt, &["-o", "Acquire::Languages=none"], logs)?;
        offline = !update.0;
        if offline && media.is_none() {
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
    let distribution = DistributionCheck::new(root, os_id)
        .ok()
        .map(|check| check.with_media(media));
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
        anyhow::bail!(pending_error(root, &pending));
    }
    Ok(RunningRelease {
        from_distribution,
        offline,
        without_network,
    })
}

/// The refusal of pending updates of the running release.
fn pending_error(root: &crate::root::SystemRoot, pending: &[String]) -> Error {
    let names: Vec<&str> = pending.iter().map(String::as_str).take(10).collect();
    let count = pending.len();
    Error::Config {
        path: root.path("/etc/apt/sources.list"),
        reason: format!(
            "{count} updates of the running release are not installed ({}{}); install them first \
             (apt-get upgrade) or pass --allow-pending",
            names.join(", "),
            if count > 10 { ", …" } else { "" }
        ),
    }
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
