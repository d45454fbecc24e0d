//! The client's session: one system root, its keyrings, a fetcher and its state, and the
//! steps every command shares: find the target release, open its helper pocket, and
//! resolve the helper set. Commands in the binary only parse arguments and render.

use std::path::PathBuf;

use crate::date;
use crate::error::Error;
use crate::fetch::{FetchConfig, Fetcher, Location};
use crate::metarelease::{self, Channel, FetchedMetaRelease, Prompt, ReleaseEntry, Selection};
use crate::openpgp::{self, Keyring};
use crate::os_release::OsRelease;
use crate::pocket::{self, PackageEntry, Pocket, PocketRequest, PocketSource};
use crate::resolve;
use crate::root::SystemRoot;
use crate::state::StateDir;

/// Options that shape a session (the global command-line flags).
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Keyrings given with `--keyring`; empty means the defaults.
    pub keyrings: Vec<PathBuf>,
    pub meta_release_uri: Option<String>,
    pub channel: Channel,
    pub allow_unsigned_meta_release: bool,
    /// Architecture override; `None` means this machine's.
    pub arch: Option<String>,
}

/// One run of the client against one system.
#[derive(Debug)]
pub struct Session {
    pub root: SystemRoot,
    pub os: OsRelease,
    pub codename: String,
    pub arch: String,
    pub fetcher: Fetcher,
    pub state: StateDir,
    options: SessionOptions,
    keyring: std::sync::OnceLock<Keyring>,
}

/// The user agent: `release-upgrader/<version> (<os id> <codename>; <arch>)`.
pub fn user_agent(os: &OsRelease, arch: &str) -> String {
    format!(
        "release-upgrader/{} ({} {}; {arch})",
        env!("CARGO_PKG_VERSION"),
        os.id,
        os.codename.as_deref().unwrap_or("unknown")
    )
}

/// The release to upgrade to and how we learnt about it.
#[derive(Clone, Debug)]
pub struct UpgradeTarget {
    pub meta_release: FetchedMetaRelease,
    pub current: ReleaseEntry,
    pub target: ReleaseEntry,
}

/// Upgrade media found mounted on this machine that carry a newer release: verified (their
/// `Release` signed by a trusted key, naming another release than the running one), so
/// that they can be offered when no release list can be read.
#[derive(Clone, Debug)]
pub struct MediaOffer {
    pub media: crate::cdrom::Media,
    pub target: UpgradeTarget,
    pub request: PocketRequest,
}

/// The helpers to install for an upgrade, from a verified pocket.
#[derive(Clone, Debug)]
pub struct HelperPlan {
    pub pocket: Pocket,
    pub packages: Vec<PackageEntry>,
}

impl HelperPlan {
    pub fn download_size(&self) -> u64 {
        self.packages.iter().map(|p| p.size).sum()
    }
}

impl Session {
    /// Opens a session on `root`, configuring the fetcher from `config` (whose user agent
    /// is replaced by the one describing this system).
    pub fn new(
        root: SystemRoot,
        options: SessionOptions,
        mut config: FetchConfig,
    ) -> Result<Self, Error> {
        let (os, codename) = root.codename()?;
        let arch = options
            .arch
            .clone()
            .unwrap_or_else(crate::root::host_architecture);
        config.user_agent = user_agent(&os, &arch);
        let state = StateDir::new(&root);
        Ok(Session {
            root,
            os,
            codename,
            arch,
            fetcher: Fetcher::new(config),
            state,
            options,
            keyring: std::sync::OnceLock::new(),
        })
    }

    /// Replaces the fetcher (to attach progress reporting).
    pub fn with_fetcher(mut self, fetcher: Fetcher) -> Self {
        self.fetcher = fetcher;
        self
    }

    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// The trusted keyring: `--keyring` files, or the defaults of this root.
    pub fn keyring(&self) -> Result<&Keyring, Error> {
        if let Some(keyring) = self.keyring.get() {
            return Ok(keyring);
        }
        let keyring = self.load_keyring()?;
        Ok(self.keyring.get_or_init(|| keyring))
    }

    fn load_keyring(&self) -> Result<Keyring, Error> {
        trusted_keyring(&self.root, &self.options.keyrings)
    }

    /// The meta-release URI this session reads, or `None` when `Prompt=never`.
    pub fn meta_release_location(&self) -> Result<Option<Location>, Error> {
        let prompt = metarelease::read_prompt(&self.root)?;
        let uris = metarelease::read_uris(&self.root)?;
        let uri = metarelease::choose_uri(
            &uris,
            prompt,
            self.os.is_lts(),
            self.options.channel,
            self.options.meta_release_uri.as_deref(),
        )?;
        if prompt == Prompt::Lts && !self.os.is_lts() {
            log::info!("Prompt=lts on a release that is not LTS: looking for any new release");
        }
        uri.map(|u| Location::parse(&u))
            .transpose()
            .map_err(Error::from)
    }

    /// Finds the release to upgrade to. Errors with exit code 1 when there is none.
    /// A target the distribution marked `UpgradeBroken` is returned; callers decide.
    pub fn find_target(&self, remember: bool) -> Result<UpgradeTarget, Error> {
        let location = self
            .meta_release_location()?
            .ok_or_else(|| Error::UpgradesDisabled {
                path: self.root.path(metarelease::RELEASE_UPGRADES),
            })?;
        let state = remember.then_some(&self.state);
        let meta_release = metarelease::fetch(
            &self.fetcher,
            self.keyring()?,
            &location,
            state,
            self.options.allow_unsigned_meta_release,
        )?;
        let uri = meta_release.uri.clone();
        let (current, target) = match meta_release
            .document
            .select(&self.codename, self.options.channel.devel)
        {
            Selection::NotListed => {
                return Err(Error::ReleaseNotListed {
                    codename: self.codename.clone(),
                    uri,
                });
            }
            Selection::UpToDate { .. } => {
                return Err(Error::NoNewerRelease {
                    codename: self.codename.clone(),
                    uri,
                });
            }
            Selection::Available { current, target } => (current.clone(), target.clone()),
        };
        if !current.supported {
            log::warn!(
                "the running release {} is no longer supported",
                current.dist
            );
        }
        Ok(UpgradeTarget {
            meta_release,
            current,
            target,
        })
    }

    /// Where the helper pocket of `target` lives on the network.
    pub fn network_pocket(&self, target: &UpgradeTarget) -> Result<PocketRequest, Error> {
        let base = target
            .target
            .upgrade_tool_base_uri
            .as_deref()
            .ok_or_else(|| Error::NoHelperPocket {
                uri: target.meta_release.uri.clone(),
                dist: target.target.dist.clone(),
            })?;
        let location =
            Location::parse(base)?.join(&format!("dist-upgrader-{}/current/", self.arch))?;
        Ok(PocketRequest {
            location,
            codename: target.target.dist.clone(),
            arch: self.arch.clone(),
            source: PocketSource::Network,
            now: date::now(),
        })
    }

    /// The release on upgrade media at `path` and its helper pocket. The media's own
    /// `Release` (signed) names the release; no meta-release or network is needed. Media
    /// do not expire (no `Valid-Until` is read, docs/protocol.md §2), but their `Date` is
    /// judged as a pocket's: not in the future, not older than the newest seen from media
    /// of the release (rollback); with `remember` it becomes the new floor.
    pub fn media_target(
        &self,
        path: &std::path::Path,
        remember: bool,
    ) -> Result<(UpgradeTarget, PocketRequest), Error> {
        let not_media = |reason: &str| Error::Config {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let media = crate::cdrom::inspect(path, &self.arch)
            .ok_or_else(|| not_media("not upgrade media (no .disk/info)"))?;
        let pocket_dir = media.helper_pocket.clone().ok_or_else(|| {
            not_media(&format!(
                "the media carry no helpers for {} (none of {})",
                self.arch,
                crate::cdrom::Media::pocket_dirs(&self.arch)
            ))
        })?;
        let archive = Location::Path(path.join("dists/stable"));
        let release = crate::pocket::verified_release(&self.fetcher, self.keyring()?, &archive)?;
        let archive_request = PocketRequest {
            location: archive,
            codename: release.codename.clone(),
            arch: self.arch.clone(),
            source: PocketSource::Media,
            now: date::now(),
        };
        let rollback_key = pocket::media_rollback_key(&release.codename, &self.arch, "archive");
        let last_seen = self.state.last_release_date(&rollback_key)?;
        pocket::check_release(&release, &archive_request, last_seen)?;
        if remember && let Err(e) = self.state.record_release_date(&rollback_key, release.date) {
            log::warn!("cannot remember the media's Date: {e}");
        }
        let signers = release.signers().to_vec();
        let codename = release.codename.clone();
        if codename == self.codename {
            return Err(Error::NoNewerRelease {
                codename: self.codename.clone(),
                uri: path.display().to_string(),
            });
        }
        let entry = |dist: &str, version: String, date: String, timestamp| ReleaseEntry {
            dist: dist.to_owned(),
            name: None,
            version,
            date,
            timestamp,
            supported: true,
            description: Some(media.info.clone()),
            release_file: None,
            release_notes: None,
            release_notes_html: None,
            upgrade_tool: None,
            upgrade_tool_signature: None,
            upgrade_broken: None,
            upgrade_tool_base_uri: None,
            upgrade_tool_packages: metarelease::DEFAULT_UPGRADE_TOOL_PACKAGES
                .map(str::to_owned)
                .to_vec(),
        };
        let current = entry(
            &self.codename,
            self.os.version_id.clone().unwrap_or_default(),
            String::new(),
            0,
        );
        let target = entry(
            &codename,
            release.version.clone().unwrap_or_else(|| codename.clone()),
            release.date_text.clone(),
            release.date,
        );
        let meta_release = FetchedMetaRelease {
            uri: path.display().to_string(),
            document: metarelease::MetaRelease {
                releases: vec![current.clone(), target.clone()],
                skipped: Vec::new(),
            },
            authenticity: metarelease::Authenticity::Signed(signers),
        };
        let request = PocketRequest {
            location: Location::Path(pocket_dir),
            codename,
            arch: self.arch.clone(),
            // Media are old by nature: Valid-Until does not apply.
            source: PocketSource::Media,
            now: date::now(),
        };
        Ok((
            UpgradeTarget {
                meta_release,
                current,
                target,
            },
            request,
        ))
    }

    /// Mounted upgrade media (what `cdrom detect` finds) carrying a newer release whose
    /// `Release` verifies, in the order found; media that do not verify, carry no helpers
    /// or the running release are left out (and logged). Nothing is remembered.
    pub fn media_offers(&self) -> Vec<MediaOffer> {
        crate::cdrom::detect(&[], &self.arch)
            .into_iter()
            .filter(|media| media.helper_pocket.is_some())
            .filter_map(|media| match self.media_target(&media.path, false) {
                Ok((target, request)) => Some(MediaOffer {
                    media,
                    target,
                    request,
                }),
                Err(e) => {
                    log::info!("upgrade media at {} not offered: {e}", media.path.display());
                    None
                }
            })
            .collect()
    }

    /// Opens and verifies a pocket; with `remember`, its `Date` becomes the new floor.
    pub fn open_pocket(&self, request: &PocketRequest, remember: bool) -> Result<Pocket, Error> {
        let pocket = pocket::open(&self.fetcher, self.keyring()?, Some(&self.state), request)?;
        if remember && let Err(e) = pocket.record_date(&self.state) {
            // Rollback protection needs a writable state directory; say so once.
            log::warn!("cannot remember the pocket's Date: {e}");
        }
        Ok(pocket)
    }

    /// Resolves the helper set of `target` inside `pocket` (pure).
    pub fn plan_helpers(
        &self,
        target: &UpgradeTarget,
        pocket: Pocket,
    ) -> Result<HelperPlan, Error> {
        let roots = resolve::requested(
            &target.target.upgrade_tool_packages,
            &pocket.packages,
            &self.arch,
        );
        let packages = resolve::resolve(
            &pocket.packages,
            &roots,
            &self.arch,
            &pocket.location.to_string(),
        )?
        .into_iter()
        .cloned()
        .collect();
        Ok(HelperPlan { pocket, packages })
    }

    /// The helpers for `target` from the pocket `request` names: a target the
    /// distribution marked `UpgradeBroken` is refused first, then the pocket is opened
    /// (with `remember`, its `Date` becomes the floor) and the helper set resolved.
    pub fn helpers_for(
        &self,
        target: &UpgradeTarget,
        request: &PocketRequest,
        remember: bool,
    ) -> anyhow::Result<HelperPlan> {
        use anyhow::Context as _;
        let dist = &target.target.dist;
        if let Some(reason) = &target.target.upgrade_broken {
            return Err(Error::UpgradeBroken {
                dist: dist.clone(),
                reason: reason.clone(),
            }
            .into());
        }
        let pocket = self
            .open_pocket(request, remember)
            .with_context(|| format!("reading the helper pocket for {dist}"))?;
        self.plan_helpers(target, pocket)
            .with_context(|| format!("resolving the helpers for {dist}"))
    }

    /// What every command that needs helpers starts with: the target release (from the
    /// meta-release, or from upgrade media at `cdrom`) and its helper set.
    pub fn target_and_helpers(
        &self,
        cdrom: Option<&std::path::Path>,
        remember: bool,
    ) -> anyhow::Result<(UpgradeTarget, HelperPlan)> {
        use anyhow::Context as _;
        let (target, request) = match cdrom {
            Some(path) => self.media_target(path, remember)?,
            None => {
                let target = self
                    .find_target(remember)
                    .context("looking for a new release")?;
                let request = self.network_pocket(&target)?;
                (target, request)
            }
        };
        let plan = self.helpers_for(&target, &request, remember)?;
        Ok((target, plan))
    }
}

/// The trusted keyring of `root`: the `explicit` files (`--keyring`; each must exist), or
/// when none are given, the tool's own `trusted.gpg.d/` and the distributions' archive
/// keyrings. No key at all is an error: nothing could be verified.
pub fn trusted_keyring(root: &SystemRoot, explicit: &[PathBuf]) -> Result<Keyring, Error> {
    let paths = if explicit.is_empty() {
        openpgp::default_keyring_paths(&root.config_dir(), &root.path("/usr/share/keyrings"))
    } else {
        if let Some(missing) = explicit.iter().find(|p| !p.exists()) {
            return Err(Error::Keyring {
                path: missing.clone(),
                reason: "no such file or directory".into(),
            });
        }
        explicit.to_vec()
    };
    let keyring = Keyring::load(&paths)?;
    if keyring.is_empty() {
        let searched = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::NoTrustedKeys { searched });
    }
    log::debug!(
        "trusting {} certificates from {:?}",
        keyring.certs().len(),
        keyring.sources()
    );
    Ok(keyring)
}
