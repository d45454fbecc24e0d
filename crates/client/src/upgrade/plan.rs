//! The upgrade's plan, decided from what apt and the system reported (issue 12).
//!
//! The upgrade runs in three parts: preflight gathers facts (dpkg's status, the removal
//! denylist, apt's `--print-uris` plan, `apt-cache policy`, `apt-config dump`, free space),
//! this module decides, and the run executes what was decided. Nothing here starts a
//! process or touches a disk, so every decision — which removal is refused and why, which
//! obsolete package leaves or stays, which held package stays behind, whether the space
//! suffices — is unit-tested on apt output recorded from a real Debian 12 → 13 upgrade
//! (`tests/fixtures/apt/bookworm-trixie/`).
//!
//! The decisions come in the order the run meets them: the obsolete packages first (what
//! leaves with the upgrade is passed to apt as `name-`), then apt's plan with them folded
//! in ([`plan`]), then the space on the filesystems that plan needs ([`Plan::check_space`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::progress;
use crate::upgrade::apt::{self, Policy, Simulation, Sizes};
use crate::upgrade::dpkg_status::Status;
use crate::upgrade::obsolete::{self, Decision, System, glob_match};
use crate::upgrade::prefetch;

#[cfg(test)]
mod tests;

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

/// Where an administrator adds patterns to the removal denylist (`*` wildcards, `#`
/// comments), inside the upgraded root.
pub const SITE_DENYLIST: &str = "/etc/release-upgrader/removal-denylist";

/// The removal denylist: the built-in names, the site's patterns (the text of
/// [`SITE_DENYLIST`], when there is one) and the image of the running kernel (only
/// when upgrading the running system).
pub fn removal_denylist(site: Option<&str>, running_kernel: Option<&str>) -> Vec<String> {
    let mut list: Vec<String> = BUILTIN_REMOVAL_DENYLIST
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(text) = site {
        list.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if let Some(release) = running_kernel {
        list.push(format!("linux-image-{}", release.trim()));
    }
    list
}

/// Desktop tasks and metapackages (Debian's `task-*-desktop`, Ubuntu's and its flavours'
/// `*-desktop`, `*-desktop-minimal`): an upgrade in desktop mode never removes one, as
/// Ubuntu's upgrader keeps its metapackages, since without it the desktop's pieces become
/// "no longer needed" and the next `apt autoremove` takes the desktop away.
pub const DESKTOP_METAPACKAGES: [&str; 6] = [
    "task-desktop",
    "task-*-desktop",
    "*ubuntu-desktop",
    "*ubuntu-desktop-minimal",
    "ubuntu*-desktop",
    "ubuntu*-desktop-minimal",
];

/// The installed desktop tasks and metapackages (what desktop mode keeps).
pub fn desktop_metapackages(status: &Status) -> Vec<String> {
    let mut names: Vec<String> = status
        .installed()
        .filter(|p| DESKTOP_METAPACKAGES.iter().any(|d| glob_match(d, &p.name)))
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The held packages (`apt-mark hold`), present on the system: they stay at their
/// version, and apt may have to remove them.
pub fn held_packages(status: &Status) -> Vec<String> {
    status.held().iter().map(|p| p.name.clone()).collect()
}

// ------------------------------------------------------------------ obsolete packages

/// The installed packages of the distribution: the only ones that may be obsolete, and
/// the ones whose `apt-cache policy` the decision needs.
pub fn obsolete_candidates<'a>(system: &System, from_distribution: &'a [String]) -> Vec<&'a str> {
    from_distribution
        .iter()
        .map(String::as_str)
        .filter(|p| {
            system
                .packages
                .get(*p)
                .is_some_and(|p| p.status == "installed")
        })
        .collect()
}

/// When no installed package of the distribution is offered by any source, the new
/// release's lists are not there (whatever apt said), and judged from nothing every
/// package would look obsolete: the reason to stop, for the error.
pub fn lists_missing(
    to: &str,
    candidates: &[&str],
    policy: &BTreeMap<String, Policy>,
) -> Option<String> {
    candidates
        .iter()
        .all(|p| policy.get(*p).is_none_or(|o| o.sources.is_empty()))
        .then(|| {
            format!(
                "the package lists of {to} offer none of the {} installed packages of the \
                 distribution: they were not downloaded, so no package is judged obsolete",
                candidates.len()
            )
        })
}

/// What the obsolete-package decision reads, as the run recorded it.
pub struct ObsoleteFacts<'a> {
    pub system: &'a System,
    pub from_distribution: &'a [String],
    /// `apt-cache policy` of the candidates, with the new release's indices.
    pub policy: &'a BTreeMap<String, Policy>,
    /// `apt-config dump` of the target apt; `None` when it failed.
    pub config_dump: Option<&'a str>,
    pub denylist: &'a [String],
}

/// Which obsolete packages leave with the upgrade and which stay ([`obsolete::decide`]),
/// with the guards of `APT::NeverAutoRemove` as the target apt reads them. Without them
/// (the dump failed) nothing leaves.
pub fn obsolete(facts: &ObsoleteFacts<'_>) -> Decision {
    let Some(dump) = facts.config_dump else {
        return Decision::default();
    };
    let guards = apt::config_list(dump, "APT::NeverAutoRemove");
    obsolete::decide(&obsolete::Inputs {
        system: facts.system,
        from_distribution: facts.from_distribution,
        policy: facts.policy,
        never_auto_remove: &guards,
        denylist: facts.denylist,
    })
}

/// What the upgrade's apt runs take after `dist-upgrade`: `name-` for each obsolete
/// package to remove that is still there (a resumed run may find some gone).
pub fn removal_args(obsolete: &[String], status: &Status) -> Vec<String> {
    if obsolete.is_empty() {
        return Vec::new();
    }
    obsolete
        .iter()
        .filter(|name| {
            status
                .packages
                .values()
                .any(|p| p.name == **name && p.is_present())
        })
        .map(|name| format!("{name}-"))
        .collect()
}

// ----------------------------------------------------------------------- the plan

/// What the plan is decided from.
pub struct Facts<'a> {
    /// Whether `apt-get --print-uris -y -V dist-upgrade` succeeded.
    pub apt_ok: bool,
    /// What it printed (stdout, and stderr when it failed).
    pub apt_output: &'a str,
    /// dpkg's status of the root, read after apt's run.
    pub status: &'a Status,
    pub denylist: &'a [String],
    /// The obsolete-package decision made before apt's run.
    pub obsolete: &'a Decision,
    /// The obsolete packages the user let go, passed to apt as `name-`.
    pub obsolete_removed: &'a [String],
}

/// Why a removal apt planned is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusedBecause {
    /// `Essential: yes` or `Protected: yes`.
    Essential,
    /// This pattern of the removal denylist matches it.
    Denylisted(String),
}

/// A removal apt planned that the upgrade refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedRemoval {
    pub package: String,
    pub because: RefusedBecause,
}

/// A held package and what the plan does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub package: String,
    /// apt keeps it back (stays at its version).
    pub kept_back: bool,
    /// apt removes it anyway (it is then among the removals).
    pub removed: bool,
}

/// Where the upgrade needs space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// apt's archive directory, `/var/cache/apt/archives`: the downloads.
    Archives,
    /// `/usr`: the new release.
    Usr,
    /// `/boot`: a new kernel.
    Boot,
}

impl Place {
    /// The path inside the upgraded root.
    pub fn path(self) -> &'static str {
        match self {
            Place::Archives => "/var/cache/apt/archives",
            Place::Usr => "/usr",
            Place::Boot => "/boot",
        }
    }

    /// What needs the space there, for the log.
    pub fn what(self) -> &'static str {
        match self {
            Place::Archives => "the downloads",
            Place::Usr => "the new release",
            Place::Boot => "a new kernel",
        }
    }
}

/// What the system reported of one filesystem the plan needs space on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filesystem {
    /// The device number (`st_dev`): places on the same filesystem add up.
    pub device: u64,
    /// The first existing directory of the place it was measured at.
    pub path: PathBuf,
    /// Bytes available to an unprivileged writer.
    pub available: u64,
}

/// One filesystem's need and room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceUse {
    pub path: PathBuf,
    /// With a 5% margin.
    pub needed: u64,
    pub available: u64,
    pub what: Vec<&'static str>,
}

impl SpaceUse {
    /// The refusal when the room does not suffice.
    pub fn refusal(&self) -> Option<Refusal> {
        (self.needed > self.available).then(|| Refusal::NoSpace {
            path: self.path.clone(),
            needed: self.needed,
            available: self.available,
        })
    }
}

/// Why the plan cannot go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// apt would remove essential, protected or denylisted packages.
    Removals(Vec<RefusedRemoval>),
    /// apt could not compute the upgrade: the last lines it printed.
    AptFailed(String),
    /// Not enough space on the filesystem of `path`.
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
}

/// What the upgrade will do, and whether it may.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Upgraded, newly installed, removed, downgraded, kept back, no longer needed.
    pub simulation: Simulation,
    pub sizes: Sizes,
    /// The archives apt names with their SHA-256 (fetched beside apt).
    pub archives: Vec<prefetch::Archive>,
    /// apt lists more archives than [`Self::archives`] holds: apt downloads the rest.
    pub archives_left_to_apt: bool,
    /// Removals refused, in apt's order.
    pub refused_removals: Vec<RefusedRemoval>,
    /// Set when apt failed to compute the upgrade: the last lines it printed.
    pub apt_failure: Option<String>,
    pub held: Vec<Held>,
    /// Obsolete packages that leave with the upgrade (removed, never purged).
    pub obsolete_removed: Vec<String>,
    /// Obsolete packages that stay, and why.
    pub obsolete_kept: Vec<(String, obsolete::Keep)>,
    /// Obsolete packages the rules let go but the user chose to keep.
    pub obsolete_declined: Vec<String>,
}

/// Decides the plan from what apt and the system reported.
pub fn plan(facts: &Facts<'_>) -> Plan {
    let simulation = Simulation::parse(facts.apt_output);
    let refused_removals = simulation
        .removed
        .iter()
        .filter_map(|action| {
            let because = if facts.status.is_essential(&action.package) {
                RefusedBecause::Essential
            } else {
                let pattern = facts
                    .denylist
                    .iter()
                    .find(|d| glob_match(d, &action.package))?;
                RefusedBecause::Denylisted(pattern.clone())
            };
            Some(RefusedRemoval {
                package: action.package.clone(),
                because,
            })
        })
        .collect();
    let held = held_packages(facts.status)
        .into_iter()
        .map(|package| Held {
            kept_back: simulation.kept_back.contains(&package),
            removed: simulation.removed.iter().any(|a| a.package == package),
            package,
        })
        .collect();
    let archives = prefetch::parse(facts.apt_output);
    let listed = facts
        .apt_output
        .lines()
        .filter(|l| l.starts_with('\''))
        .count();
    Plan {
        sizes: Sizes::parse(facts.apt_output),
        archives_left_to_apt: listed > archives.len(),
        archives,
        refused_removals,
        apt_failure: (!facts.apt_ok).then(|| tail(facts.apt_output, 12)),
        held,
        obsolete_removed: facts.obsolete_removed.to_vec(),
        obsolete_kept: facts.obsolete.keep.clone(),
        obsolete_declined: facts
            .obsolete
            .remove
            .iter()
            .filter(|p| !facts.obsolete_removed.contains(p))
            .cloned()
            .collect(),
        simulation,
    }
}

impl Plan {
    /// Why apt's plan cannot go ahead, before space is looked at: a refused removal
    /// first (even when apt failed too), then apt's failure.
    pub fn refusal(&self) -> Option<Refusal> {
        if !self.refused_removals.is_empty() {
            return Some(Refusal::Removals(self.refused_removals.clone()));
        }
        self.apt_failure.clone().map(Refusal::AptFailed)
    }

    /// The places the upgrade needs space at: the downloads and `/usr` always, `/boot`
    /// when a kernel image is installed or upgraded.
    pub fn space_places(&self) -> Vec<Place> {
        let kernel = self
            .simulation
            .installed
            .iter()
            .chain(&self.simulation.upgraded)
            .any(|a| a.package.starts_with("linux-image-"));
        let mut places = vec![Place::Archives, Place::Usr];
        if kernel {
            places.push(Place::Boot);
        }
        places
    }

    /// What each filesystem must hold for the plan (with a 5% margin) and has room for,
    /// in the order of the places: `measured` gives, for each place of
    /// [`Self::space_places`], its filesystem; `kernel` is the room a new kernel and its
    /// initramfs take in `/boot`. Places on one filesystem add up.
    pub fn space_uses(&self, measured: &[(Place, Filesystem)], kernel: u64) -> Vec<SpaceUse> {
        let need = |place: Place| match place {
            Place::Archives => self.sizes.download,
            Place::Usr => self.sizes.growth.max(0) as u64,
            Place::Boot => kernel,
        };
        let mut per_fs: Vec<(u64, SpaceUse)> = Vec::new();
        for (place, fs) in measured {
            match per_fs.iter_mut().find(|(device, _)| *device == fs.device) {
                Some((_, entry)) => {
                    entry.needed = entry.needed.saturating_add(need(*place));
                    entry.what.push(place.what());
                }
                None => per_fs.push((
                    fs.device,
                    SpaceUse {
                        path: fs.path.clone(),
                        needed: need(*place),
                        available: fs.available,
                        what: vec![place.what()],
                    },
                )),
            }
        }
        per_fs
            .into_iter()
            .map(|(_, mut entry)| {
                entry.needed = entry.needed.saturating_add(entry.needed / 20);
                entry
            })
            .collect()
    }

    /// [`Self::space_uses`], refused at the first filesystem without the room.
    pub fn check_space(
        &self,
        measured: &[(Place, Filesystem)],
        kernel: u64,
    ) -> Result<Vec<SpaceUse>, Refusal> {
        let uses = self.space_uses(measured, kernel);
        match uses.iter().find_map(SpaceUse::refusal) {
            Some(refusal) => Err(refusal),
            None => Ok(uses),
        }
    }

    /// The plan's numbers for a program (the `upgrade-plan` event).
    pub fn numbers(&self) -> crate::events::PlanSummary {
        let simulation = &self.simulation;
        let names =
            |actions: &[apt::PlannedAction]| actions.iter().map(|a| a.package.clone()).collect();
        crate::events::PlanSummary {
            upgrades: simulation.upgraded.len() as u64,
            installs: simulation.installed.len() as u64,
            removals: simulation.removed.len() as u64,
            downgrades: simulation.downgraded.len() as u64,
            download_bytes: self.sizes.download,
            removed: names(&simulation.removed),
            kept_back: simulation.kept_back.clone(),
        }
    }

    /// What the user is shown before the question (and the log gets on one line).
    pub fn summary(&self) -> String {
        let simulation = &self.simulation;
        let mut text = format!(
            "{} packages will be upgraded, {} newly installed, {} removed; {} to download.",
            simulation.upgraded.len(),
            simulation.installed.len(),
            simulation.removed.len(),
            progress::human_size(self.sizes.download)
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
        text
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
