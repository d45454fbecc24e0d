//! Talking to an image server: the keyring chain, `channels.json`, the device's
//! `index.json`, the winning path, and downloads. Every document is verified before it
//! is parsed, every file before it is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::fetch::{Fetcher, Location, METADATA_CAP};
use crate::image::Layout;
use crate::image::config::Config;
use crate::image::index::{self, Channels, Image, Index};
use crate::image::keyring::{Checks, Role, VerifiedKeyring};
use crate::image::plan;
use crate::openpgp::{self, Keyring};
use crate::root::SystemRoot;

/// Choices that override the configuration.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Server base URL for everything (instead of `[service] base` and the ports).
    pub server: Option<String>,
    pub channel: Option<String>,
    pub device: Option<String>,
    pub build: Option<u64>,
    /// Refuse an `index.json` generated longer ago than this (zero: no limit); default
    /// the device's `[service] max_age`, else no limit.
    pub max_age: Option<Duration>,
    /// Ignore our zstd binary deltas.
    pub no_zdelta: bool,
    /// Use this phase percentage instead of the device's own.
    pub phased_percentage: Option<i64>,
}

/// The verified keyrings of one session.
#[derive(Clone, Debug)]
pub struct Keyrings {
    pub archive_master: VerifiedKeyring,
    pub image_master: VerifiedKeyring,
    pub blacklist: Option<VerifiedKeyring>,
    pub image_signing: VerifiedKeyring,
    pub device_signing: Option<VerifiedKeyring>,
}

impl Keyrings {
    /// The keys index.json and image files may be signed with.
    pub fn for_files(&self) -> Keyring {
        match &self.device_signing {
            Some(d) => self.image_signing.union(d),
            None => self.image_signing.keyring().clone(),
        }
    }
}

/// What `check` found.
#[derive(Debug)]
pub struct Checked {
    pub keyrings: Keyrings,
    pub channels: Channels,
    /// The channel used (after redirects).
    pub channel: String,
    pub device: String,
    pub build: u64,
    pub index: Index,
    /// Indexes into `index.images` of the winning path (empty: no update).
    pub winner: Vec<usize>,
    /// The part of the winner applied now (up to the first `bootme`).
    pub this_round: Vec<usize>,
    pub candidates: usize,
    pub device_percentage: i64,
}

impl Checked {
    pub fn image(&self, i: usize) -> &Image {
        &self.index.images[i]
    }

    pub fn target(&self) -> Option<u64> {
        self.this_round
            .last()
            .map(|&i| self.index.images[i].version)
    }
}

/// A downloaded, verified file of the winning path.
#[derive(Clone, Debug)]
pub struct Downloaded {
    pub image: usize,
    pub path: PathBuf,
    pub signature: PathBuf,
    pub size: u64,
    pub sha256: crate::digest::Sha256,
    pub server_path: String,
}

pub struct Client {
    pub root: SystemRoot,
    pub layout: Layout,
    pub config: Config,
    /// The given fetcher, introducing this device to the server ([`image_user_agent`]).
    pub fetcher: Fetcher,
    pub options: Options,
}

/// The user agent of image requests: `release-upgrader/<version> (<device>; <channel>;
/// build <N>)`, what an image server's logs need to tell devices and rollouts apart.
pub fn image_user_agent(device: &str, channel: &str, build: u64) -> String {
    format!(
        "release-upgrader/{} ({device}; {channel}; build {build})",
        env!("CARGO_PKG_VERSION")
    )
}

impl Client {
    pub fn new(root: &SystemRoot, fetcher: &Fetcher, options: Options) -> Result<Self, Error> {
        let mut client = Client {
            root: root.clone(),
            layout: Layout::new(root),
            config: Config::load(root)?,
            // Named below, once the device, channel and build are known (no connection is
            // made before).
            fetcher: fetcher.identified_as(fetcher.config().user_agent.clone()),
            options,
        };
        let device = client.device().unwrap_or_else(|_| "unknown device".into());
        client.fetcher =
            fetcher.identified_as(image_user_agent(&device, &client.channel(), client.build()));
        Ok(client)
    }

    pub fn device(&self) -> Result<String, Error> {
        self.options
            .device
            .clone()
            .or_else(|| self.config.device.clone())
            .ok_or_else(|| Error::Config {
                path: self.root.path(crate::image::config::CONFIG_D),
                reason: "no device name: set `device` in [service] or pass --device".into(),
            })
    }

    pub fn build(&self) -> u64 {
        self.options.build.unwrap_or(self.config.build_number)
    }

    pub fn channel(&self) -> String {
        self.options
            .channel
            .clone()
            .unwrap_or_else(|| self.config.channel.clone())
    }

    fn metadata_url(&self, rel: &str) -> Result<Location, Error> {
        let base = match &self.options.server {
            Some(s) => s.clone(),
            None => self.config.metadata_base()?,
        };
        join(&base, rel)
    }

    fn files_url(&self, rel: &str) -> Result<Location, Error> {
        let base = match &self.options.server {
            Some(s) => s.clone(),
            None => self.config.files_base()?,
        };
        join(&base, rel)
    }

    fn checks<'d>(&self, device: &'d str) -> Checks<'d> {
        Checks {
            now: crate::date::now(),
            device: Some(device),
        }
    }

    fn fetch_pair(&self, rel: &str) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let data = self
            .fetcher
            .fetch_bytes(&self.metadata_url(rel)?, METADATA_CAP)?;
        let sig = self
            .fetcher
            .fetch_bytes(&self.metadata_url(&format!("{rel}.asc"))?, METADATA_CAP)?;
        Ok((data, sig))
    }

    /// Keeps a verified keyring's files for `--recovery` (the recovery loads them).
    fn keep(&self, name: &str, data: &[u8], sig: &[u8]) -> Result<(), Error> {
        let dir = self.layout.keyrings();
        crate::fsutil::write_atomic(&dir.join(name), data)?;
        Ok(crate::fsutil::write_atomic(
            &dir.join(format!("{name}.asc")),
            sig,
        )?)
    }

    /// The keyring chain, from the pre-installed archive master down.
    pub fn keyrings(&self, device: &str) -> Result<Keyrings, Error> {
        let checks = self.checks(device);
        let anchor_path = self.config.archive_master_path(&self.root)?;
        let anchor = fs_err::read(&anchor_path).map_err(|e| Error::Config {
            path: anchor_path.clone(),
            reason: format!("the archive master keyring is not installed ({e})"),
        })?;
        let archive_master =
            VerifiedKeyring::anchor(&anchor, &checks, &anchor_path.display().to_string())?;
        let (data, sig) = self.fetch_pair("gpg/image-master.tar.xz")?;
        let image_master = VerifiedKeyring::verify(
            Role::ImageMaster,
            &data,
            &sig,
            &archive_master,
            None,
            &checks,
            "image-master keyring",
        )?;
        self.keep("image-master.tar.xz", &data, &sig)?;
        // No blacklist is normal; a blacklist without its signature is not.
        let blacklist_data = match self
            .fetcher
            .fetch_bytes(&self.metadata_url("gpg/blacklist.tar.xz")?, METADATA_CAP)
        {
            Ok(data) => Some(data),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let blacklist = match blacklist_data {
            Some(data) => {
                let sig = self.fetcher.fetch_bytes(
                    &self.metadata_url("gpg/blacklist.tar.xz.asc")?,
                    METADATA_CAP,
                )?;
                Some(VerifiedKeyring::verify(
                    Role::Blacklist,
                    &data,
                    &sig,
                    &image_master,
                    None,
                    &checks,
                    "blacklist keyring",
                )?)
            }
            None => None,
        };
        // The image master itself may not carry a blacklisted key.
        let image_master = match &blacklist {
            Some(b) => VerifiedKeyring::verify(
                Role::ImageMaster,
                &data,
                &sig,
                &archive_master,
                Some(b),
                &checks,
                "image-master keyring",
            )?,
            None => image_master,
        };
        let (data, sig) = self.fetch_pair("gpg/image-signing.tar.xz")?;
        let image_signing = VerifiedKeyring::verify(
            Role::ImageSigning,
            &data,
            &sig,
            &image_master,
            blacklist.as_ref(),
            &checks,
            "image-signing keyring",
        )?;
        self.keep("image-signing.tar.xz", &data, &sig)?;
        Ok(Keyrings {
            archive_master,
            image_master,
            blacklist,
            image_signing,
            device_signing: None,
        })
    }

    /// `channels.json`, verified with the image-signing keyring.
    pub fn channels(&self, keyrings: &Keyrings) -> Result<Channels, Error> {
        let (data, sig) = self.fetch_pair("channels.json")?;
        let verified = openpgp::verify_detached(
            keyrings.image_signing.keyring(),
            data,
            &sig,
            "channels.json",
        )?;
        index::parse_channels(verified.value(), "channels.json")
    }

    /// Everything up to the winning path.
    pub fn check(&self) -> Result<Checked, Error> {
        let device = self.device()?;
        let build = self.build();
        let mut keyrings = self.keyrings(&device)?;
        let channels = self.channels(&keyrings)?;
        let (channel, entry) = index::resolve_channel(&channels, &self.channel())?;
        let dev = entry.devices.get(&device).ok_or_else(|| Error::Config {
            path: "channels.json".into(),
            reason: format!("channel {channel:?} has no device {device:?}"),
        })?;
        if let Some(k) = &dev.keyring {
            let data = self
                .fetcher
                .fetch_bytes(&self.metadata_url(&k.path)?, METADATA_CAP)?;
            let sig = self
                .fetcher
                .fetch_bytes(&self.metadata_url(&k.signature)?, METADATA_CAP)?;
            keyrings.device_signing = Some(VerifiedKeyring::verify(
                Role::DeviceSigning,
                &data,
                &sig,
                &keyrings.image_signing,
                keyrings.blacklist.as_ref(),
                &self.checks(&device),
                "device-signing keyring",
            )?);
            self.keep("device-signing.tar.xz", &data, &sig)?;
        }
        let index_rel = dev.index.clone();
        let data = self
            .fetcher
            .fetch_bytes(&self.metadata_url(&index_rel)?, METADATA_CAP)?;
        let sig = self.fetcher.fetch_bytes(
            &self.metadata_url(&format!("{index_rel}.asc"))?,
            METADATA_CAP,
        )?;
        let verified = openpgp::verify_detached(&keyrings.for_files(), data, &sig, &index_rel)?;
        let index = Index::parse(verified.value(), &index_rel)?;
        check_fresh(
            &index,
            &index_rel,
            self.options.max_age.or(self.config.max_age),
        )?;
        let types = plan::Types {
            zdelta: !self.options.no_zdelta,
        };
        let paths = plan::candidates(&index, build, types);
        let device_percentage = self.options.phased_percentage.unwrap_or_else(|| {
            plan::phased_percentage(
                &self.machine_id(&device),
                &channel,
                plan::max_target(&paths).unwrap_or(0),
            )
        });
        let position = |img: &Image| {
            index
                .images
                .iter()
                .position(|i| std::ptr::eq(i, img))
                .expect("from this index")
        };
        let (winner, this_round) = match plan::choose(&paths, device_percentage) {
            Some(path) => (
                path.iter().map(|i| position(i)).collect(),
                plan::this_round(&path)
                    .iter()
                    .map(|i| position(i))
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let candidates = paths.len();
        Ok(Checked {
            keyrings,
            channels,
            channel,
            device,
            build,
            winner,
            this_round,
            candidates,
            device_percentage,
            index,
        })
    }

    /// The machine id (`/etc/machine-id`), or the device name when there is none.
    fn machine_id(&self, device: &str) -> String {
        ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .iter()
            .find_map(|p| std::fs::read_to_string(self.root.path(p)).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| device.to_owned())
    }

    /// Downloads (or finds in the cache) and verifies every file of this round.
    pub fn download(&self, checked: &Checked) -> Result<Vec<Downloaded>, Error> {
        let keyring = checked.keyrings.for_files();
        let cache = self.layout.cache();
        fs_err::create_dir_all(&cache).map_err(|e| Error::io(&cache, e))?;
        let mut out = Vec::new();
        for &i in &checked.this_round {
            let image = checked.image(i);
            for file in image.ordered_files() {
                let name = crate::image::file_name(&file.path, "index.json")?;
                let sha256: crate::digest::Sha256 =
                    file.checksum.parse().map_err(|_| Error::Malformed {
                        what: "index.json".into(),
                        reason: format!("{}: bad checksum {:?}", file.path, file.checksum),
                    })?;
                let dest = cache.join(&name);
                let sig_dest = cache.join(format!("{name}.asc"));
                let sig = self
                    .fetcher
                    .fetch_bytes(&self.files_url(&file.signature)?, METADATA_CAP)?;
                crate::fsutil::write_atomic(&sig_dest, &sig)?;
                if !cached(&dest, file.size, sha256) {
                    let _ = std::fs::remove_file(&dest);
                    self.fetcher.fetch_file(
                        &self.files_url(&file.path)?,
                        &dest,
                        file.size,
                        sha256,
                        &name,
                    )?;
                }
                if let Err(e) = openpgp::verify_detached_file(&keyring, &dest, &sig, &file.path) {
                    let _ = std::fs::remove_file(&dest);
                    return Err(e.into());
                }
                out.push(Downloaded {
                    image: i,
                    path: dest,
                    signature: sig_dest,
                    size: file.size,
                    sha256,
                    server_path: file.path.clone(),
                });
            }
        }
        Ok(out)
    }
}

fn join(base: &str, rel: &str) -> Result<Location, Error> {
    let rel = rel.trim_start_matches('/');
    crate::fetch::check_relative(rel).map_err(|reason| Error::Malformed {
        what: format!("server path {rel:?}"),
        reason,
    })?;
    Ok(Location::parse(&format!(
        "{}/{rel}",
        base.trim_end_matches('/')
    ))?)
}

/// Whether `path` already holds the promised file.
fn cached(path: &Path, size: u64, sha256: crate::digest::Sha256) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if meta.len() != size {
        return false;
    }
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    crate::digest::Sha256::of_reader(&mut f).is_ok_and(|(d, _)| d == sha256)
}

/// Refuses an index from the future (beyond a day of skew), and one older than
/// `max_age` when there is a limit (`None` or zero: none). Real servers rewrite
/// `index.json` only when its content changes, so no age is assumed.
pub fn check_fresh(index: &Index, what: &str, max_age: Option<Duration>) -> Result<(), Error> {
    let generated = index.generated_at().ok_or_else(|| Error::Malformed {
        what: what.to_owned(),
        reason: format!("unreadable generated_at {:?}", index.global.generated_at),
    })?;
    let now = crate::date::now();
    if generated > now + 86_400 {
        return Err(Error::NotYetValid {
            what: what.to_owned(),
            date: crate::date::format(generated),
        });
    }
    let Some(max_age) = max_age.filter(|age| !age.is_zero()) else {
        return Ok(());
    };
    if now - generated > max_age.as_secs() as i64 {
        return Err(Error::Expired {
            what: format!(
                "{what} (generated {}, older than the allowed {} days)",
                crate::date::format(generated),
                max_age.as_secs() / 86_400
            ),
            valid_until: crate::date::format(generated + max_age.as_secs() as i64),
        });
    }
    Ok(())
}
