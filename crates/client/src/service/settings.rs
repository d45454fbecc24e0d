//! The settings of system-image's DBus API (`SetSetting`/`GetSetting`, and `image
//! settings` on the command line): string keys to string values, kept in one JSON file
//! under the image state directory so the service and the CLI see the same values.
//!
//! Same keys, defaults and validation as system-image 3.x (its `settings.py` and the
//! `SetSetting` of `dbus.py`): any key may be stored; `min_battery` must be an integer
//! from 0 to 100 and `auto_download` one of 0, 1, 2 (an invalid value is not stored);
//! `auto_download` reads as `1` when unset, every other unset key as the empty string;
//! keys starting with `_` are kept but not listed.
//!
//! The service's `SetSetting` and `image settings set|del` may run at once: each
//! read-modify-write holds an exclusive `flock` on [`LOCK`] beside the file, so no update
//! is lost; readers need no lock (the file is replaced atomically).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use crate::confine::{RelPath, Tree};
use crate::error::Error;
use crate::root::SystemRoot;

/// The directory of the settings file, on the device.
pub const DIR: &str = "/var/lib/release-upgrader/image";
/// The settings file's name in [`DIR`].
pub const FILE: &str = "settings.json";
/// The lock file of a read-modify-write of [`FILE`], beside it.
pub const LOCK: &str = "settings.lock";
/// How long a change waits for another one to end (each holds the lock for one read and
/// one write).
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// What `auto_download` reads as when unset (system-image 3.x: download automatically,
/// "on wifi" — which no client can tell, so always).
pub const AUTO_DOWNLOAD_DEFAULT: &str = "1";

/// A value system-image would not store for its key.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{value:?} is not a valid {key}: {expected}")]
pub struct Invalid {
    pub key: String,
    pub value: String,
    pub expected: &'static str,
}

/// Checks `value` for `key` as system-image's `SetSetting` does (Python's `int()`:
/// surrounding blanks and a sign are allowed).
pub fn check(key: &str, value: &str) -> Result<(), Invalid> {
    let in_range = |range: std::ops::RangeInclusive<i64>, expected: &'static str| match value
        .trim()
        .parse::<i64>()
    {
        Ok(n) if range.contains(&n) => Ok(()),
        _ => Err(Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            expected,
        }),
    };
    match key {
        "min_battery" => in_range(0..=100, "an integer from 0 to 100"),
        "auto_download" => in_range(0..=2, "0 (never), 1 (on wifi) or 2 (always)"),
        _ => Ok(()),
    }
}

/// What `key` reads as when it was never set.
pub fn default(key: &str) -> &'static str {
    match key {
        "auto_download" => AUTO_DOWNLOAD_DEFAULT,
        _ => "",
    }
}

/// The stored settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    /// The settings of the system at `root` (none stored: empty).
    pub fn load(root: &SystemRoot) -> Result<Settings, Error> {
        match root.open_dir(DIR)? {
            Some(dir) => Settings::load_from(&dir),
            None => Ok(Settings::default()),
        }
    }

    fn load_from(dir: &Tree) -> Result<Settings, Error> {
        let values = dir
            .load_json::<BTreeMap<String, String>>(&file(), "settings file")?
            .unwrap_or_default();
        Ok(Settings { values })
    }

    /// The value of `key`, or its default.
    pub fn get(&self, key: &str) -> String {
        self.values
            .get(key)
            .cloned()
            .unwrap_or_else(|| default(key).to_owned())
    }

    /// Stores `value` after [`check`]; returns whether what `key` reads as changed
    /// (system-image's condition for `SettingChanged`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, Invalid> {
        check(key, value)?;
        let old = self.get(key);
        self.values.insert(key.to_owned(), value.to_owned());
        Ok(old != value)
    }

    /// Stores `value` unchecked: the service's own bookkeeping (`last_check_date`).
    pub fn record(&mut self, key: &str, value: &str) {
        self.values.insert(key.to_owned(), value.to_owned());
    }

    /// Forgets `key`; whether it was stored.
    pub fn delete(&mut self, key: &str) -> bool {
        self.values.remove(key).is_some()
    }

    /// The stored settings in key order, without the reserved `_` keys.
    pub fn visible(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn file() -> RelPath {
    RelPath::new(FILE).expect("a plain name")
}

/// Reads, changes with `change` and saves the settings of `root`, holding the lock
/// ([`lock`]): one load and one atomic save, so a concurrent reader sees the old file or
/// the new one, and a concurrent writer waits for this one to end.
pub fn update<T>(root: &SystemRoot, change: impl FnOnce(&mut Settings) -> T) -> Result<T, Error> {
    let dir = root.create_dir(DIR)?;
    let _lock = lock(&dir, LOCK_WAIT)?;
    let mut settings = Settings::load_from(&dir)?;
    let out = change(&mut settings);
    dir.save_json(&file(), &settings.values)?;
    Ok(out)
}

/// Takes the exclusive `flock` on [`LOCK`] in `dir` (the settings' directory), waiting
/// up to `wait` for another holder; released when dropped. A lock file that is a
/// symlink, a directory or anything but a regular file is refused.
pub fn lock(dir: &Tree, wait: Duration) -> Result<Flock<std::fs::File>, Error> {
    let mut file = dir.open_lock_file(LOCK)?;
    let start = Instant::now();
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => return Ok(held),
            Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) if start.elapsed() < wait => {
                file = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(Error::Config {
                    path: dir.path().join(LOCK),
                    reason: format!(
                        "another change of the settings held the lock for {} s",
                        wait.as_secs()
                    ),
                });
            }
            Err((_, errno)) => {
                return Err(Error::io(
                    dir.path().join(LOCK),
                    std::io::Error::from(errno),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_battery_and_auto_download_are_checked_as_system_image_does() {
        for (key, value) in [
            ("min_battery", "0"),
            ("min_battery", "100"),
            ("min_battery", " 42 "),
            ("min_battery", "+7"),
            ("auto_download", "0"),
            ("auto_download", "2"),
            ("failures_before_warning", "anything"),
            ("_private", ""),
        ] {
            assert_eq!(check(key, value), Ok(()), "{key}={value:?}");
        }
        for (key, value) in [
            ("min_battery", "-1"),
            ("min_battery", "101"),
            ("min_battery", "half"),
            ("min_battery", ""),
            ("min_battery", "4.5"),
            ("auto_download", "3"),
            ("auto_download", "-1"),
            ("auto_download", "yes"),
            ("auto_download", "99999999999999999999999"),
        ] {
            let err = check(key, value).unwrap_err();
            assert_eq!((err.key.as_str(), err.value.as_str()), (key, value));
        }
    }

    #[test]
    fn unset_keys_read_as_system_image_defaults() {
        let s = Settings::default();
        assert_eq!(s.get("auto_download"), "1");
        assert_eq!(s.get("min_battery"), "");
        assert_eq!(s.get("no such key"), "");
    }

    #[test]
    fn set_reports_a_change_only_when_the_value_read_changes() {
        let mut s = Settings::default();
        // Setting the default is no change (system-image compares with get()).
        assert_eq!(s.set("auto_download", "1"), Ok(false));
        assert_eq!(s.set("auto_download", "2"), Ok(true));
        assert_eq!(s.set("auto_download", "2"), Ok(false));
        assert!(s.set("auto_download", "5").is_err());
        assert_eq!(s.get("auto_download"), "2");
        assert!(s.delete("auto_download"));
        assert!(!s.delete("auto_download"));
        assert_eq!(s.get("auto_download"), "1");
    }

    #[test]
    fn reserved_keys_are_kept_but_not_listed() {
        let mut s = Settings::default();
        s.set("_secret", "x").unwrap();
        s.set("min_battery", "20").unwrap();
        assert_eq!(s.visible().collect::<Vec<_>>(), [("min_battery", "20")]);
        assert_eq!(s.get("_secret"), "x");
    }

    #[test]
    fn settings_persist_under_the_root_and_a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        assert_eq!(Settings::load(&root).unwrap(), Settings::default());
        let changed = update(&root, |s| s.set("min_battery", "30")).unwrap();
        assert_eq!(changed, Ok(true));
        assert_eq!(Settings::load(&root).unwrap().get("min_battery"), "30");
        let path = dir
            .path()
            .join("var/lib/release-upgrader/image/settings.json");
        assert!(path.is_file());
        std::fs::write(&path, "[1, 2").unwrap();
        let err = Settings::load(&root).unwrap_err();
        assert!(err.to_string().contains("settings.json"), "{err}");
    }

    #[test]
    fn concurrent_updates_lose_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        std::thread::scope(|scope| {
            for n in 0..16 {
                let root = &root;
                scope.spawn(move || {
                    for round in 0..4 {
                        update(root, |s| s.set(&format!("k{n}_{round}"), &format!("v{n}")))
                            .unwrap()
                            .unwrap();
                    }
                });
            }
        });
        let stored = Settings::load(&root).unwrap();
        assert_eq!(stored.visible().count(), 64);
        for n in 0..16 {
            for round in 0..4 {
                assert_eq!(stored.get(&format!("k{n}_{round}")), format!("v{n}"));
            }
        }
    }

    #[test]
    fn a_change_waits_for_the_lock_and_gives_up_after_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        let tree = root.create_dir(DIR).unwrap();
        let held = lock(&tree, Duration::ZERO).unwrap();
        let err = lock(&tree, Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("settings.lock"), "{err}");
        assert_eq!(err.exit_code(), crate::error::ExitCode::Usage);
        // Released on drop: a change waiting meanwhile goes through.
        let waiter = std::thread::spawn({
            let root = root.clone();
            move || update(&root, |s| s.set("min_battery", "5"))
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.join().unwrap().unwrap(), Ok(true));
        assert_eq!(Settings::load(&root).unwrap().get("min_battery"), "5");
    }

    #[test]
    fn a_lock_file_that_is_a_symlink_a_directory_or_a_fifo_is_refused_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path().join("root"));
        let state = dir.path().join("root/var/lib/release-upgrader/image");
        let outside = dir.path().join("outside");
        type Make<'a> = &'a dyn Fn(&std::path::Path);
        let hostile: [(&str, Make<'_>); 4] = [
            ("symlink", &|p| {
                std::os::unix::fs::symlink(&outside, p).unwrap()
            }),
            ("symlink to a file", &|p| {
                std::fs::write(&outside, "mine").unwrap();
                std::os::unix::fs::symlink(&outside, p).unwrap()
            }),
            ("directory", &|p| std::fs::create_dir(p).unwrap()),
            ("fifo", &|p| {
                nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }),
        ];
        for (what, make) in hostile {
            let _ = std::fs::remove_dir_all(dir.path().join("root"));
            let _ = std::fs::remove_file(&outside);
            std::fs::create_dir_all(&state).unwrap();
            make(&state.join(LOCK));
            let err = update(&root, |s| s.set("min_battery", "5")).unwrap_err();
            assert!(
                matches!(err, Error::Refused { .. }) && err.to_string().contains("settings.lock"),
                "{what}: {err}"
            );
            assert_eq!(err.exit_code(), crate::error::ExitCode::Usage, "{what}");
            assert!(!state.join(FILE).exists(), "{what}");
            let mine = std::fs::read_to_string(&outside).ok();
            assert!(mine.is_none() || mine.as_deref() == Some("mine"), "{what}");
        }
    }
}
