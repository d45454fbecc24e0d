//! What the tool remembers between runs under `<root>/var/lib/release-upgrader/`:
//! the newest `Date` seen per helper pocket (rollback protection) and the cached
//! meta-release (If-Modified-Since), and the login notice of a new release that
//! `check --motd` keeps for `/etc/update-motd.d/91-release-upgrader`. Every write is atomic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::confine::RelPath;
use crate::date::{self, Timestamp};
use crate::digest::Sha256;
use crate::error::Error;
use crate::json_state;
use crate::root::{STATE_DIR, SystemRoot};

const RELEASE_DATES: &str = "release-dates.json";
/// The login notice of a new release, below the state directory: the name and the
/// contents Ubuntu's `/var/lib/ubuntu-release-upgrader/release-upgrade-available` has.
pub const RELEASE_NOTICE: &str = "release-upgrade-available";
/// Cached metadata, below the state directory.
const CACHE: &str = "cache";

/// The state directory of one system.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: SystemRoot,
    dir: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ReleaseDates {
    /// Pocket URI → newest `Date` accepted from it.
    pockets: BTreeMap<String, SeenDate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeenDate {
    timestamp: Timestamp,
    date: String,
}

/// Cached copy of a metadata file and the `Last-Modified` the server gave it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    pub uri: String,
    pub last_modified: Option<String>,
}

impl StateDir {
    /// The state directory of the system at `root`.
    pub fn new(root: &SystemRoot) -> Self {
        StateDir {
            root: root.clone(),
            dir: root.state_dir(),
        }
    }

    /// Writes `data` as `name` (one level below the state directory at most, e.g.
    /// `cache/…`), through the directory opened from the root: never through a symlink
    /// that could lead out of another root.
    fn write(&self, dir: Option<&str>, name: &str, data: &[u8]) -> Result<(), Error> {
        let rel = match dir {
            None => name.to_owned(),
            Some(dir) => format!("{dir}/{name}"),
        };
        self.root
            .create_dir(STATE_DIR)?
            .write_atomic(&RelPath::new(rel).expect("our own names"), data)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_dates(&self) -> Result<ReleaseDates, Error> {
        let path = self.dir.join(RELEASE_DATES);
        Ok(json_state::load(&path, "record of release dates")?.unwrap_or_default())
    }

    /// The newest `Date` accepted from `pocket` so far.
    pub fn last_release_date(&self, pocket: &str) -> Result<Option<(Timestamp, String)>, Error> {
        Ok(self
            .read_dates()?
            .pockets
            .get(pocket)
            .map(|s| (s.timestamp, s.date.clone())))
    }

    /// Remembers `timestamp` as the newest `Date` of `pocket` (never moves backwards).
    pub fn record_release_date(&self, pocket: &str, timestamp: Timestamp) -> Result<(), Error> {
        let mut dates = self.read_dates()?;
        let entry = dates.pockets.entry(pocket.to_owned()).or_insert(SeenDate {
            timestamp,
            date: date::format(timestamp),
        });
        if timestamp < entry.timestamp {
            return Ok(());
        }
        *entry = SeenDate {
            timestamp,
            date: date::format(timestamp),
        };
        self.write(None, RELEASE_DATES, &json_state::encode(&dates))
    }

    /// Keeps the login notice of a new release: `Some(text)` writes it, `None` removes
    /// it (no new release). Read by the `update-motd.d` script at every login.
    pub fn set_release_notice(&self, text: Option<&str>) -> Result<(), Error> {
        let name = RelPath::new(RELEASE_NOTICE).expect("our own name");
        match text {
            Some(text) => self.write(None, RELEASE_NOTICE, text.as_bytes()),
            None => match self.root.open_dir(STATE_DIR)? {
                Some(dir) => dir.remove_file(&name).map(drop),
                None => Ok(()),
            },
        }
    }

    /// The login notice, if one is kept.
    pub fn release_notice(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(RELEASE_NOTICE)).ok()
    }

    /// The cache files of `uri` in `cache/`: its body and its entry.
    fn cache_names(uri: &str) -> (String, String) {
        let key = Sha256::of(uri.as_bytes()).to_hex();
        (
            format!("{}.body", &key[..16]),
            format!("{}.json", &key[..16]),
        )
    }

    /// The cached body of `uri` and its cache entry, if both are present.
    pub fn cached(&self, uri: &str) -> Option<(Vec<u8>, CacheEntry)> {
        let (body, meta) = Self::cache_names(uri);
        let cache = self.dir.join(CACHE);
        let entry: CacheEntry =
            serde_json::from_slice(&std::fs::read(cache.join(meta)).ok()?).ok()?;
        if entry.uri != uri {
            return None;
        }
        Some((std::fs::read(cache.join(body)).ok()?, entry))
    }

    /// Stores `body` as the cached copy of `uri`.
    pub fn store_cached(
        &self,
        uri: &str,
        body: &[u8],
        last_modified: Option<String>,
    ) -> Result<(), Error> {
        let (body_name, meta_name) = Self::cache_names(uri);
        self.write(Some(CACHE), &body_name, body)?;
        let entry = CacheEntry {
            uri: uri.to_owned(),
            last_modified,
        };
        self.write(Some(CACHE), &meta_name, &json_state::encode(&entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(&SystemRoot::new(dir.path()));
        assert_eq!(state.last_release_date("p").unwrap(), None);
        state.record_release_date("p", 200).unwrap();
        state.record_release_date("p", 100).unwrap();
        assert_eq!(state.last_release_date("p").unwrap().unwrap().0, 200);
        state.record_release_date("p", 300).unwrap();
        assert_eq!(state.last_release_date("p").unwrap().unwrap().0, 300);
        assert_eq!(state.last_release_date("other").unwrap(), None);
    }

    #[test]
    fn corrupt_state_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = SystemRoot::new(dir.path()).state_dir();
        std::fs::create_dir_all(&state_dir).unwrap();
        std::fs::write(state_dir.join(RELEASE_DATES), b"{not json").unwrap();
        let err = StateDir::new(&SystemRoot::new(dir.path()))
            .last_release_date("p")
            .unwrap_err();
        assert!(err.to_string().contains(RELEASE_DATES), "{err}");
    }

    #[test]
    fn cache_round_trips_per_uri() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(&SystemRoot::new(dir.path()));
        state
            .store_cached("http://a/m", b"body", Some("Mon".into()))
            .unwrap();
        let (body, entry) = state.cached("http://a/m").unwrap();
        assert_eq!(body, b"body");
        assert_eq!(entry.last_modified.as_deref(), Some("Mon"));
        assert!(state.cached("http://b/m").is_none());
    }

    #[test]
    fn the_release_notice_is_written_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(&SystemRoot::new(dir.path()));
        // Removing what was never written is not an error (no state directory yet).
        state.set_release_notice(None).unwrap();
        state
            .set_release_notice(Some("New release '13'\n"))
            .unwrap();
        state
            .set_release_notice(Some("New release '14'\n"))
            .unwrap();
        assert_eq!(state.release_notice().unwrap(), "New release '14'\n");
        state.set_release_notice(None).unwrap();
        assert_eq!(state.release_notice(), None);
        assert!(state.dir().is_dir(), "the state directory stays");
    }

    #[test]
    fn the_release_notice_is_never_written_through_a_symlinked_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("var/lib")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("var/lib/release-upgrader")).unwrap();
        let state = StateDir::new(&SystemRoot::new(&root));
        assert!(state.set_release_notice(Some("x\n")).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
