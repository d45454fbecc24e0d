//! The system-image client configuration: `<root>/etc/system-image/config.d/*.ini`
//! merged in name order, then `<root>/etc/system-image/channel.ini` (what the version
//! tarball of each image writes), as system-image reads them.
//!
//! Only what this client uses is interpreted; every other key is kept so `image info`
//! can show it. Values that system-image itself refuses (a negative port, both ports
//! disabled) are refused here too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::ini::Ini;
use crate::root::SystemRoot;

/// The config directory, relative to the root.
pub const CONFIG_D: &str = "/etc/system-image/config.d";
/// Written by each image's version tarball; overrides `[service]` keys of config.d.
pub const CHANNEL_INI: &str = "/etc/system-image/channel.ini";
/// Where system-image looks for the pre-installed archive master keyring.
pub const ARCHIVE_MASTER: &str = "/usr/share/system-image/archive-master.tar.xz";
/// `[updater] cache_partition` when unset: the directory of the recovery's
/// `ubuntu_command` and of the files it names. system-image's own default is
/// `/android/cache/recovery` (its Android-container layout); the devices this client
/// targets mount their cache partition at `/cache`, which is where their recoveries read
/// it, and a device that differs says so in its configuration.
pub const CACHE_PARTITION: &str = "/cache/recovery";

/// A port of the image server: a number, or `disabled` (also `disable`, as system-image
/// reads it, and `0`, which the real server writes into the version tarball's
/// `channel.ini` when it publishes no such port: no connection can be made to port 0, so
/// the other scheme serves, as with `disabled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Number(u32),
    Disabled,
}

/// The merged configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub ini: Ini,
    /// The files read, in order.
    pub sources: Vec<PathBuf>,
    pub base: String,
    pub http_port: Port,
    pub https_port: Port,
    pub channel: String,
    pub device: Option<String>,
    pub build_number: u64,
    pub timeout: Duration,
    /// `[gpg] archive_master`, as configured (a path on the device).
    pub archive_master: String,
    /// `[service] max_age` (ours; system-image keeps the key unread): refuse an
    /// `index.json` generated longer ago, for a server that rewrites it at least as often.
    pub max_age: Option<Duration>,
    /// `[updater] cache_partition`: where the recovery's command and files go, a path on
    /// the device as configured (checked when used: [`Self::cache_partition_dir`]). `[updater]
    /// data_partition` (system-image's keyrings and downloads in progress) is not used:
    /// this client keeps those in its own state directory, beside its journals.
    pub cache_partition: String,
}

impl Config {
    /// Reads the configuration of the system at `root`.
    pub fn load(root: &SystemRoot) -> Result<Config, Error> {
        let dir = root.path(CONFIG_D);
        let mut files: Vec<PathBuf> = match fs_err::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "ini"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        files.sort();
        let channel_ini = root.path(CHANNEL_INI);
        if channel_ini.is_file() {
            files.push(channel_ini);
        }
        if files.is_empty() {
            return Err(Error::Config {
                path: dir,
                reason: "no system-image configuration (*.ini) found".into(),
            });
        }
        let mut texts = Vec::new();
        for file in &files {
            let Some(target) = config_file_target(root, file)? else {
                continue;
            };
            let text = fs_err::read_to_string(&target).map_err(|e| Error::io(&target, e))?;
            texts.push((file.clone(), text));
        }
        if texts.is_empty() {
            return Err(Error::Config {
                path: dir,
                reason: "no system-image configuration (*.ini) found".into(),
            });
        }
        Config::from_texts(&texts)
    }

    /// Merges INI texts (path, content) in order and interprets them.
    pub fn from_texts(texts: &[(PathBuf, String)]) -> Result<Config, Error> {
        let mut ini = Ini::default();
        let last = texts
            .last()
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| PathBuf::from(CONFIG_D));
        for (path, text) in texts {
            let parsed = Ini::parse(text).map_err(|e| Error::Config {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            ini.merge(parsed);
        }
        let bad = |reason: String| Error::Config {
            path: last.clone(),
            reason,
        };
        let port = |key: &str, default: u32| -> Result<Port, Error> {
            match ini.get("service", key) {
                None => Ok(Port::Number(default)),
                Some(v)
                    if v.eq_ignore_ascii_case("disabled") || v.eq_ignore_ascii_case("disable") =>
                {
                    Ok(Port::Disabled)
                }
                Some(v) => match v.parse::<u32>() {
                    Ok(0) => Ok(Port::Disabled),
                    Ok(n) => Ok(Port::Number(n)),
                    Err(_) => Err(bad(format!("[service] {key}: not a port number: {v:?}"))),
                },
            }
        };
        let http_port = port("http_port", 80)?;
        let https_port = port("https_port", 443)?;
        if http_port == Port::Disabled && https_port == Port::Disabled {
            return Err(bad(
                "[service] http_port and https_port are both disabled".into()
            ));
        }
        let build_number = match ini.get("service", "build_number") {
            None | Some("") => 0,
            Some(v) => v
                .parse()
                .map_err(|_| bad(format!("[service] build_number: not a number: {v:?}")))?,
        };
        let timeout = match ini.get("system", "timeout") {
            Some(v) => parse_duration(v).ok_or_else(|| bad(format!("[system] timeout: {v:?}")))?,
            None => Duration::from_secs(60),
        };
        let cache_partition = match ini.get("updater", "cache_partition") {
            None | Some("") => CACHE_PARTITION.to_owned(),
            Some(v) => v.to_owned(),
        };
        let max_age = match ini.get("service", "max_age") {
            None | Some("") => None,
            Some(v) => {
                Some(parse_duration(v).ok_or_else(|| bad(format!("[service] max_age: {v:?}")))?)
            }
        };
        Ok(Config {
            max_age,
            cache_partition,
            base: ini.get("service", "base").unwrap_or("localhost").to_owned(),
            http_port,
            https_port,
            channel: ini
                .get("service", "channel")
                .or_else(|| ini.get("system", "channel"))
                .unwrap_or("daily")
                .to_owned(),
            // `[service] device` names the device; system-image's `[hooks] device` is a
            // Python class that asks Android, which has no meaning here.
            device: ini.get("service", "device").map(str::to_owned),
            build_number,
            timeout,
            archive_master: ini
                .get("gpg", "archive_master")
                .unwrap_or(ARCHIVE_MASTER)
                .to_owned(),
            sources: texts.iter().map(|(p, _)| p.clone()).collect(),
            ini,
        })
    }

    /// The server's base URL for signed metadata: HTTPS unless disabled, as
    /// system-image fetches JSON and keyrings.
    pub fn metadata_base(&self) -> Result<String, Error> {
        match self.https_port {
            Port::Number(p) => self.url("https", p, 443),
            Port::Disabled => self.files_base(),
        }
    }

    /// The server's base URL for image files: HTTP unless disabled (files are signed).
    pub fn files_base(&self) -> Result<String, Error> {
        match (self.http_port, self.https_port) {
            (Port::Number(p), _) => self.url("http", p, 80),
            (Port::Disabled, Port::Number(p)) => self.url("https", p, 443),
            (Port::Disabled, Port::Disabled) => unreachable!("refused at load"),
        }
    }

    fn url(&self, scheme: &str, port: u32, default: u32) -> Result<String, Error> {
        if port == 0 || port > 65535 {
            return Err(Error::Config {
                path: self.sources.last().cloned().unwrap_or_default(),
                reason: format!("[service] port {port} is out of range"),
            });
        }
        Ok(if port == default {
            format!("{scheme}://{}", self.base)
        } else {
            format!("{scheme}://{}:{port}", self.base)
        })
    }

    /// The recovery's directory (`[updater] cache_partition`) on the system at `root`,
    /// created when missing: confined to the root (a symlink on the way is refused; its
    /// mount points are entered, the cache being a partition of its own on a device).
    pub fn cache_partition_dir(&self, root: &SystemRoot) -> Result<crate::confine::Tree, Error> {
        root.create_dir(self.checked_cache_partition(root)?)
    }

    /// [`Self::cache_partition_dir`] without creating it: `None` when missing.
    pub fn cache_partition_existing(
        &self,
        root: &SystemRoot,
    ) -> Result<Option<crate::confine::Tree>, Error> {
        root.open_dir(self.checked_cache_partition(root)?)
    }

    /// The configured cache partition, checked: absolute, without `.` or `..`, naming a
    /// directory below `/`.
    fn checked_cache_partition(&self, root: &SystemRoot) -> Result<&str, Error> {
        check_device_dir(&self.cache_partition).map_err(|why| Error::Config {
            path: root.path(CONFIG_D),
            reason: format!(
                "[updater] cache_partition {:?}: {why}",
                self.cache_partition
            ),
        })?;
        Ok(self.cache_partition.trim_end_matches('/'))
    }

    /// The archive master keyring on the system at `root` (`[gpg] archive_master` is a
    /// path on the device: resolved under the root, `..` refused).
    pub fn archive_master_path(&self, root: &SystemRoot) -> Result<PathBuf, Error> {
        root.resolve(Path::new(&self.archive_master))
            .map_err(|e| Error::Config {
                path: root.path(CONFIG_D),
                reason: format!(
                    "[gpg] archive_master {:?}: {}",
                    self.archive_master,
                    match e {
                        Error::Refused { reason, .. } => reason,
                        other => other.to_string(),
                    }
                ),
            })
    }
}

/// Why `value` cannot name a directory of the device for this client to write in: it
/// must be absolute, without `.` or `..` and not the root itself.
fn check_device_dir(value: &str) -> Result<(), &'static str> {
    let Some(below) = value.strip_prefix('/') else {
        return Err("not an absolute path");
    };
    // Read as written (Path::components would drop a `.`).
    let parts: Vec<&str> = below.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err("`.` and `..` are not allowed");
    }
    if parts.is_empty() || value.contains('\0') {
        return Err("it names no directory below the root");
    }
    Ok(())
}

/// The file to read for the configuration file `file` (a path under `root`): itself, or
/// where its symlink points — resolved inside the root, as the device would see it (the
/// version tarball links `config.d/01_channel.ini -> ../channel.ini`; an absolute target
/// is the device's path). `None` for a link to nothing: the real server's
/// `00_default.ini -> ../client.ini` on a device without a `client.ini`. A link that
/// leaves the root, or leads to another link, is refused.
fn config_file_target(root: &SystemRoot, file: &Path) -> Result<Option<PathBuf>, Error> {
    let meta = fs_err::symlink_metadata(file).map_err(|e| Error::io(file, e))?;
    if !meta.file_type().is_symlink() {
        return Ok(Some(file.to_owned()));
    }
    let refused = |reason: &str| Error::Refused {
        path: file.to_owned(),
        reason: reason.to_owned(),
    };
    let link = fs_err::read_link(file).map_err(|e| Error::io(file, e))?;
    // The link's own directory, as a path on the device.
    let parent = file
        .parent()
        .and_then(|p| p.strip_prefix(root.dir()).ok())
        .ok_or_else(|| refused("it is not below the root"))?;
    let mut on_device: Vec<std::ffi::OsString> = if link.is_absolute() {
        Vec::new()
    } else {
        parent.iter().map(ToOwned::to_owned).collect()
    };
    for part in link.components() {
        match part {
            std::path::Component::Normal(name) => on_device.push(name.to_owned()),
            std::path::Component::ParentDir => {
                on_device
                    .pop()
                    .ok_or_else(|| refused("its symlink leads out of the root"))?;
            }
            _ => {}
        }
    }
    let target = root.dir().join(on_device.iter().collect::<PathBuf>());
    match fs_err::symlink_metadata(&target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::debug!("{} links to nothing ({})", file.display(), link.display());
            Ok(None)
        }
        Err(e) => Err(Error::io(&target, e)),
        Ok(meta) if meta.file_type().is_symlink() => {
            Err(refused("its symlink leads to another symlink"))
        }
        Ok(_) => Ok(Some(target)),
    }
}

/// `10s`, `2m`, `1h`, `1d`, `1w` or plain seconds, as system-image's `as_timedelta`.
/// A duration that does not fit 64 bits of seconds is unreadable, not wrapped.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !number.is_empty() {
        total = total.checked_add(number.parse::<u64>().ok()?)?;
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<PathBuf> {
        let base = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("tests/conformance/system-image");
        let mut files = Vec::new();
        for dir in ["client-testdata", "client-samples"] {
            for entry in std::fs::read_dir(base.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap();
                if name.ends_with(".ini") || name.ends_with(".ini.in") {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
    }

    fn load(path: &Path) -> Result<Config, Error> {
        Config::from_texts(&[(path.to_owned(), std::fs::read_to_string(path).unwrap())])
    }

    /// Every sample loads, except the two system-image's own tests expect to fail:
    /// a negative port (config_08) and both ports disabled (config_07).
    #[test]
    fn every_sample_loads_as_system_image_would() {
        let files = samples();
        assert!(files.len() >= 25, "{files:?}");
        for path in &files {
            let name = path.file_name().unwrap().to_str().unwrap();
            let result = load(path);
            match name {
                "config.config_07.ini" | "config.config_08.ini" => {
                    assert!(result.is_err(), "{name} should be refused")
                }
                _ => {
                    let config = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert!(!config.channel.is_empty(), "{name}");
                }
            }
        }
    }

    /// The version tarball's links, as the real server writes them, on a device with and
    /// without `client.ini`; links out of the root, absolute or relative, are refused.
    #[test]
    fn config_d_links_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        let etc = dir.path().join("etc/system-image");
        std::fs::create_dir_all(etc.join("config.d")).unwrap();
        std::fs::write(
            etc.join("channel.ini"),
            "[service]\nbase: h\nchannel: stable\nbuild_number: 7\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("../client.ini", etc.join("config.d/00_default.ini")).unwrap();
        std::os::unix::fs::symlink("../channel.ini", etc.join("config.d/01_channel.ini")).unwrap();
        let c = Config::load(&root).unwrap();
        assert_eq!((c.build_number, c.channel.as_str()), (7, "stable"));
        // With client.ini, its values are the defaults channel.ini overrides.
        std::fs::write(
            etc.join("client.ini"),
            "[service]\nbase: h\nhttp_port: 8080\nbuild_number: 1\n",
        )
        .unwrap();
        let c = Config::load(&root).unwrap();
        assert_eq!((c.build_number, c.http_port), (7, Port::Number(8080)));
        // An absolute link is the device's path, under the root.
        std::fs::remove_file(etc.join("config.d/00_default.ini")).unwrap();
        std::os::unix::fs::symlink(
            "/etc/system-image/client.ini",
            etc.join("config.d/00_default.ini"),
        )
        .unwrap();
        assert_eq!(Config::load(&root).unwrap().http_port, Port::Number(8080));
        // Out of the root: refused, whichever way.
        std::fs::remove_file(etc.join("config.d/00_default.ini")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../../../../../etc/passwd",
            etc.join("config.d/00_default.ini"),
        )
        .unwrap();
        let err = Config::load(&root).unwrap_err();
        assert!(err.to_string().contains("out of the root"), "{err}");
    }

    #[test]
    fn port_0_as_the_real_server_writes_it_means_the_other_scheme_serves() {
        let ini =
            |text: &str| Config::from_texts(&[(PathBuf::from("channel.ini"), text.to_owned())]);
        let c = ini("[service]\nbase: images.example.net\nhttp_port: 80\nhttps_port: 0\n").unwrap();
        assert_eq!(c.https_port, Port::Disabled);
        assert_eq!(c.metadata_base().unwrap(), "http://images.example.net");
        assert_eq!(c.files_base().unwrap(), "http://images.example.net");
        let c = ini("[service]\nbase: h\nhttp_port: disable\nhttps_port: 8443\n").unwrap();
        assert_eq!(c.files_base().unwrap(), "https://h:8443");
        // Both off is refused, whichever way each is said.
        let err = ini("[service]\nbase: h\nhttp_port: 0\nhttps_port: disabled\n").unwrap_err();
        assert!(err.to_string().contains("both disabled"), "{err}");
        assert!(ini("[service]\nbase: h\nhttps_port: -1\n").is_err());
    }

    #[test]
    fn sample_values() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("tests/conformance/system-image/client-testdata");
        let c = load(&dir.join("config.config_01.ini")).unwrap();
        assert_eq!(c.base, "phablet.example.com");
        assert_eq!(c.channel, "stable");
        assert_eq!(c.build_number, 0);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.metadata_base().unwrap(), "https://phablet.example.com");
        assert_eq!(c.files_base().unwrap(), "http://phablet.example.com");
        assert_eq!(c.archive_master, "/usr/share/phablet/archive-master.tar.xz");
        let c = load(&dir.join("config.config_09.ini")).unwrap();
        assert_eq!(c.build_number, 833);
        assert_eq!(c.channel, "proposed");
        assert_eq!(
            c.metadata_base().unwrap(),
            "https://systum-imaje.ubuntu.com:89"
        );
        let c = load(&dir.join("config.config_06.ini")).unwrap();
        assert_eq!(c.metadata_base().unwrap(), "http://phablet.example.com");
        // 80443 loads (system-image accepts it) but is no usable port.
        let c = load(&dir.join("config.config_03.ini")).unwrap();
        assert!(c.metadata_base().is_err());
        assert_eq!(c.files_base().unwrap(), "http://phablet.example.com:8080");
        let c = load(&dir.join("config.config_11.ini")).unwrap();
        assert_eq!(c.device.as_deref(), Some("nexus8"));
    }

    #[test]
    fn later_files_and_channel_ini_override() {
        let c = Config::from_texts(&[
            (
                "00.ini".into(),
                "[service]\nbase: a\nchannel: stable\nbuild_number: 1\n".into(),
            ),
            (
                "channel.ini".into(),
                "[service]\nbuild_number: 7\ndevice: x\n".into(),
            ),
        ])
        .unwrap();
        assert_eq!(
            (c.base.as_str(), c.build_number, c.device.as_deref()),
            ("a", 7, Some("x"))
        );
    }

    #[test]
    fn the_archive_master_path_stays_inside_the_root() {
        let with = |path: &str| {
            Config::from_texts(&[(
                "00.ini".into(),
                format!("[service]\nbase: a\nchannel: s\nbuild_number: 1\n[gpg]\narchive_master: {path}\n"),
            )])
            .unwrap()
        };
        let root = SystemRoot::new("/r");
        assert_eq!(
            with("/usr/share/system-image/archive-master.tar.xz")
                .archive_master_path(&root)
                .unwrap(),
            Path::new("/r/usr/share/system-image/archive-master.tar.xz")
        );
        let err = with("/usr/../../etc/keyring.tar.xz")
            .archive_master_path(&root)
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        assert!(err.to_string().contains("archive_master"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("x"), None);
        // Beyond 64 bits of seconds: unreadable, not wrapped (nor a panic).
        assert_eq!(parse_duration("5124095576030432h"), None);
        assert_eq!(parse_duration("18446744073709551615s1s"), None);
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/ini.rs`): a timeout whose seconds do not fit
    /// in 64 bits overflowed (a panic, or a wrapped timeout in release builds). It is a
    /// bad value now, as any other unreadable timeout.
    #[test]
    fn a_timeout_beyond_64_bits_of_seconds_is_refused() {
        assert_eq!(parse_duration("307445734561825861m"), None);
        assert_eq!(parse_duration("18446744073709551615s1"), None);
        assert_eq!(
            parse_duration("18446744073709551615"),
            Some(Duration::from_secs(u64::MAX))
        );
        let channel_ini = "[service]\nbase: a\n[system]\ntimeout: 307445734561825861m\n";
        let err = Config::from_texts(&[("channel.ini".into(), channel_ini.into())]).unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
    }

    fn with_updater(updater: &str) -> Config {
        let text = format!("[service]\nbase: h\ndevice: d\n\n[updater]\n{updater}");
        Config::from_texts(&[(PathBuf::from("/c/00.ini"), text)]).unwrap()
    }

    #[test]
    fn cache_partition_defaults_to_cache_recovery_and_a_configured_one_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        assert_eq!(with_updater("").cache_partition, "/cache/recovery");
        // system-image's empty value is its default, here ours.
        assert_eq!(
            with_updater("cache_partition:\n").cache_partition,
            "/cache/recovery"
        );
        let config = with_updater(
            "cache_partition: /android/cache/recovery/\ndata_partition: /var/lib/system-image\n",
        );
        assert!(config.cache_partition_existing(&root).unwrap().is_none());
        let made = config.cache_partition_dir(&root).unwrap();
        assert_eq!(made.path(), dir.path().join("android/cache/recovery"));
        assert!(dir.path().join("android/cache/recovery").is_dir());
        assert!(config.cache_partition_existing(&root).unwrap().is_some());
        // data_partition is read and left alone: nothing made there.
        assert!(!dir.path().join("var/lib/system-image").exists());
    }

    #[test]
    fn a_cache_partition_leaving_the_root_or_naming_none_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path().join("root"));
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink("../outside", dir.path().join("root/evil")).unwrap();
        for (value, why) in [
            ("/../outside", "`..`"),
            ("/cache/../../outside", "`..`"),
            ("cache/recovery", "absolute"),
            ("{tmpdir}/android/cache", "absolute"),
            ("/", "no directory"),
            ("/./cache", "`.`"),
        ] {
            let config = with_updater(&format!("cache_partition: {value}\n"));
            for err in [
                config.cache_partition_dir(&root).unwrap_err(),
                config.cache_partition_existing(&root).unwrap_err(),
            ] {
                assert!(matches!(err, Error::Config { .. }), "{value}: {err:?}");
                let text = err.to_string();
                assert!(
                    text.contains("cache_partition") && text.contains(why),
                    "{value}: {text}"
                );
            }
        }
        // A symlink on the way is refused, never followed out of the root.
        let config = with_updater("cache_partition: /evil/recovery\n");
        let err = config.cache_partition_dir(&root).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        assert!(!dir.path().join("outside/recovery").exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("outside"))
                .unwrap()
                .count(),
            0
        );
    }
}
