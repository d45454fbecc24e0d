//! JSON state files: the one load and save of every JSON file the tool keeps between
//! runs (journals, manifests, opt-out records, release dates, the publisher's indexes).
//!
//! One rule for all of them, so none drifts: a missing file is "nothing recorded"
//! (`None`); a file that cannot be read is an I/O error naming it; one that does not
//! parse as what this version writes is refused as [`Error::BadState`], which names the
//! file and, in its hint, what to do; never silently treated as empty. Saving goes through [`fsutil::write_atomic`]; the client's
//! files below a system root are read and written through its confined `Tree`, which
//! uses [`encode`] and [`decode`] from here.
//!
//! The on-disk form is `serde_json`'s pretty printing (two-space indent, no trailing
//! newline), what every earlier version wrote; [`encode_compact`] is for the one file
//! written compactly (the image commit plan).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::fsutil;

/// The on-disk form of a state file.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("state serialises (string keys only)")
}

/// The compact on-disk form (no whitespace).
pub fn encode_compact<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("state serialises (string keys only)")
}

/// Parses the content of the state file `file`, a `what` (e.g. "transaction journal").
pub fn decode<T: DeserializeOwned>(file: &Path, what: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| unreadable(file, what, e))
}

/// The error for the state file `file`, a `what`, that is not what this version writes.
pub fn unreadable(file: &Path, what: &str, reason: impl std::fmt::Display) -> Error {
    Error::BadState {
        file: file.to_owned(),
        reason: unreadable_reason(what, reason),
    }
}

/// The reason of [`unreadable`], for parsers that check more than the JSON shape and
/// name the file themselves.
pub fn unreadable_reason(what: &str, reason: impl std::fmt::Display) -> String {
    format!("not a {what} this version can read ({reason})")
}

/// The raw content of the state file `path` (`None`: it does not exist).
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs_err::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Reads the state file `path`, a `what` (`None`: it does not exist).
pub fn load<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>, Error> {
    read(path)?
        .map(|bytes| decode(path, what, &bytes))
        .transpose()
}

/// Replaces the state file `path` with `value`, atomically and durably.
pub fn save<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), Error> {
    fsutil::write_atomic(path, &encode(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_missing_file_is_nothing_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let loaded: Option<BTreeMap<String, u32>> =
            load(&dir.path().join("absent.json"), "record").unwrap();
        assert_eq!(loaded, None);
    }

    #[test]
    fn saved_state_loads_back_in_the_pretty_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/dates.json");
        let value = BTreeMap::from([("a".to_owned(), 1u32)]);
        save(&path, &value).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\n  \"a\": 1\n}");
        assert_eq!(load(&path, "record").unwrap(), Some(value));
    }

    #[test]
    fn a_malformed_file_is_refused_naming_it_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dates.json");
        std::fs::write(&path, b"{\"a\": ").unwrap();
        let err = load::<BTreeMap<String, u32>>(&path, "release-date record").unwrap_err();
        assert!(matches!(err, Error::BadState { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("dates.json"), "{text}");
        assert!(text.contains("release-date record"), "{text}");
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("remove") && hint.contains("dates.json"),
            "{hint}"
        );
    }

    #[test]
    fn a_file_of_another_shape_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dates.json");
        std::fs::write(&path, b"[1, 2]").unwrap();
        assert!(load::<BTreeMap<String, u32>>(&path, "record").is_err());
    }

    #[test]
    fn an_unreadable_file_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading it fails, and not as "missing".
        let path = dir.path().join("dates.json");
        std::fs::create_dir(&path).unwrap();
        let err = load::<BTreeMap<String, u32>>(&path, "record").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("dates.json"), "{err}");
    }

    #[test]
    fn the_compact_form_has_no_whitespace() {
        let value = BTreeMap::from([("a".to_owned(), vec![1u32, 2])]);
        assert_eq!(encode_compact(&value), b"{\"a\":[1,2]}");
    }
}
