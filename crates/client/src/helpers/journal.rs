//! The on-disk journal of a helper transaction, `<state>/journal.json`.
//!
//! A `Drop` does not run after `kill -9` or a power cut, so every transaction writes
//! down where it is before each step that changes the system, and every later run starts
//! by reading it back: an interrupted install is rolled back if the new tree never
//! replaced the prefix, and finished if it did; an interrupted removal is finished.
//!
//! The journal holds no paths. Where the staging tree and the manifests are follows from
//! the root of the run that reads it ([`Store`]), so a journal copied along with its root
//! (`cp -a`, a backup restored elsewhere) makes the copy recover itself, and an altered
//! journal cannot point a recovery anywhere. Journals of earlier versions named those
//! places by absolute path: one is accepted only when its paths are exactly this root's,
//! and refused ([`Error::BadState`]) otherwise, before anything is touched.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::helpers::{Store, name};
use crate::json_state;

/// What the transaction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Install,
    Remove,
}

/// How far it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The new tree is being built in the staging directory; nothing outside it changed.
    Staging,
    /// The new tree is complete and synced, its manifests are in `helpers.new`; the swap
    /// may or may not have happened (compare the prefix with `new_inode`).
    Staged,
    /// The prefix is the new tree; what is left is bookkeeping.
    Swapped,
    /// Installed files are being removed, as listed by the manifests of `packages`.
    Removing,
}

/// One transaction in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub operation: Operation,
    pub phase: Phase,
    /// Packages the transaction installs or removes.
    pub packages: Vec<String>,
    /// Inode of the new tree, set once it is complete: after a crash, the prefix having
    /// this inode (on `new_device`) means the swap happened.
    pub new_inode: Option<u64>,
    /// Device of the new tree (absent in journals of earlier versions).
    #[serde(default)]
    pub new_device: Option<u64>,
    /// Process that wrote it, for messages.
    pub pid: u32,
}

/// What the journal is, in errors.
const WHAT: &str = "transaction journal";

/// Path of the journal in a state dir.
pub fn path(state: &Path) -> PathBuf {
    state.join("journal.json")
}

/// The paths journals of earlier versions held, and where this root has them.
fn legacy_paths(store: &Store) -> [(&'static str, PathBuf); 3] {
    [
        ("staging", store.staging()),
        ("new_manifests", store.new_manifests_dir()),
        ("old_manifests", store.old_manifests_dir()),
    ]
}

impl Journal {
    /// Reads the journal of `store`'s root, if a transaction was interrupted. A journal
    /// naming a path this root does not derive, or not one this version can read, is
    /// refused.
    pub fn load(store: &Store) -> Result<Option<Journal>, Error> {
        let path = path(&store.state);
        let Some(bytes) = json_state::read(&path)? else {
            return Ok(None);
        };
        Journal::parse(store, &bytes)
            .map(Some)
            .map_err(|reason| Error::BadState { file: path, reason })
    }

    fn parse(store: &Store, bytes: &[u8]) -> Result<Journal, String> {
        let unreadable = |e: serde_json::Error| json_state::unreadable_reason(WHAT, e);
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(unreadable)?;
        let Some(fields) = value.as_object_mut() else {
            return Err(json_state::unreadable_reason(WHAT, "not a JSON object"));
        };
        for (key, derived) in legacy_paths(store) {
            let Some(stored) = fields.remove(key) else {
                continue;
            };
            let stored = stored
                .as_str()
                .ok_or_else(|| format!("its {key} is not a path"))?;
            if Path::new(stored) != derived {
                return Err(format!(
                    "names {stored} as its {key}, but this root's is {}: the journal was \
                     written for another root (a copy of this one?) or altered, so it is not \
                     acted on",
                    derived.display()
                ));
            }
        }
        serde_json::from_value(value).map_err(unreadable)
    }

    /// Writes the journal durably (temp file, fsync, rename, fsync dir).
    pub fn save(&self, store: &Store) -> Result<(), Error> {
        store
            .state_tree()?
            .save_json(&super::name("journal.json"), self)
    }

    /// Ends the transaction.
    pub fn clear(store: &Store) -> Result<(), Error> {
        let state = store.state_tree()?;
        if state.remove_file(&name("journal.json"))? {
            state.sync()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::SystemRoot;

    fn store() -> Store {
        Store::new(&SystemRoot::new("/r"))
    }

    fn journal() -> Journal {
        Journal {
            operation: Operation::Install,
            phase: Phase::Staged,
            packages: vec!["release-upgrader-apt".into()],
            new_inode: Some(42),
            new_device: Some(7),
            pid: 1,
        }
    }

    /// A journal as version 0.1 wrote it, with its three absolute paths.
    fn legacy(staging: &str, new: &str, old: &str) -> Vec<u8> {
        serde_json::json!({
            "operation": "install", "phase": "staged", "packages": ["release-upgrader-apt"],
            "staging": staging, "new_manifests": new, "old_manifests": old,
            "new_inode": 42, "pid": 1,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn journals_hold_no_paths_and_round_trip() {
        let json = serde_json::to_string(&journal()).unwrap();
        assert!(!json.contains('/'), "{json}");
        assert_eq!(
            Journal::parse(&store(), json.as_bytes()).unwrap(),
            journal()
        );
    }

    #[test]
    fn a_legacy_journal_of_this_root_is_accepted() {
        let bytes = legacy(
            "/r/usr/lib/.release-upgrader.staging",
            "/r/var/lib/release-upgrader/helpers.new",
            "/r/var/lib/release-upgrader/helpers.old/",
        );
        let loaded = Journal::parse(&store(), &bytes).unwrap();
        assert_eq!(loaded.new_inode, Some(42));
        assert_eq!(loaded.new_device, None);
        assert_eq!(loaded.phase, Phase::Staged);
    }

    #[test]
    fn a_legacy_journal_naming_anything_else_is_refused() {
        let ours = [
            "/r/usr/lib/.release-upgrader.staging",
            "/r/var/lib/release-upgrader/helpers.new",
            "/r/var/lib/release-upgrader/helpers.old",
        ];
        let foreign = [
            "/var",
            "/usr/lib/.release-upgrader.staging",
            "/other/usr/lib/.release-upgrader.staging",
            "/r/usr/lib/../../var",
            "/r/var/lib/release-upgrader/helpers",
            "relative/helpers.new",
        ];
        for slot in 0..3 {
            for bad in foreign {
                let mut paths = ours;
                paths[slot] = bad;
                let err =
                    Journal::parse(&store(), &legacy(paths[0], paths[1], paths[2])).unwrap_err();
                assert!(err.contains(bad), "{err}");
                assert!(err.contains("another root"), "{err}");
            }
        }
        let not_a_path = br#"{"operation":"install","phase":"staging","packages":[],
            "staging":7,"new_inode":null,"pid":1}"#;
        assert!(Journal::parse(&store(), not_a_path).is_err());
    }

    #[test]
    fn a_bad_journal_is_a_bad_state_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(&SystemRoot::new(dir.path()));
        std::fs::create_dir_all(&store.state).unwrap();
        std::fs::write(
            path(&store.state),
            legacy("/var", "/var/lib", "/var/lib/old"),
        )
        .unwrap();
        let err = Journal::load(&store).unwrap_err();
        assert!(err.is_bad_state(), "{err:?}");
        assert_eq!(err.exit_code(), crate::error::ExitCode::Usage);
        assert!(err.to_string().contains("journal.json"), "{err}");
        std::fs::write(path(&store.state), b"{not json").unwrap();
        let err = Journal::load(&store).unwrap_err();
        assert!(err.is_bad_state(), "{err:?}");
        std::fs::remove_file(path(&store.state)).unwrap();
        assert_eq!(Journal::load(&store).unwrap(), None);
    }
}
