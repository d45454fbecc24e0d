//! `image opt-out` / `image opt-in` (docs/protocol.md §6): moving a device from image updates
//! to apt and back.
//!
//! Opt-out records the build and channel, creates the `.writable_image` flag that
//! Ubuntu Touch's initramfs reads to mount the root read-write, writes an apt sources
//! list for the image's release, and last writes `opt-out.json`, the mark that mode
//! choice reads. Opt-in removes the mark first, then the sources list and the flag.
//! Each step is idempotent; a journal naming the operation is written before the
//! first and removed after the last, and a run that finds it finishes that operation.
//!
//! The record keeps the flag and the sources list as paths on the device (as earlier
//! versions wrote them); every use resolves them under the root and refuses one that
//! would leave it (`..`), or a sources list outside `/etc/apt/sources.list.d/`, with
//! exit 2. Files are written and removed through the root opened as a
//! [`crate::confine::Tree`]: no symlink followed, no mount crossed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::confine::{RelPath, Tree};
use crate::crashpoint;
use crate::error::Error;
use crate::image::Layout;
use crate::root::SystemRoot;

/// Where Ubuntu Touch's initramfs looks for the flag (on the user data partition).
pub const WRITABLE_FLAG: &str = "/userdata/.writable_image";
/// The sources list opt-out writes.
pub const SOURCES: &str = "/etc/apt/sources.list.d/release-upgrader-image.list";
/// Where a recorded sources list may be.
const SOURCES_DIR: &str = "etc/apt/sources.list.d";

/// The record of an opt-out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    pub build: u64,
    pub channel: String,
    pub device: Option<String>,
    /// The flag file created (absolute path on the device).
    pub writable_flag: String,
    /// The sources list written (absolute path on the device).
    pub sources: String,
    pub codename: String,
    pub mirror: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Pending {
    OptOut(OptOut),
    OptIn(OptOut),
}

/// `path` (a path on the device from a flag) checked to stay inside the root, as the
/// record stores it: `/` and the path relative to the root.
pub fn device_path(root: &SystemRoot, path: &str, flag: &str) -> Result<String, Error> {
    let rel = root.relative(path).map_err(|e| Error::Config {
        path: PathBuf::from(path),
        reason: match e {
            Error::Refused { reason, .. } => format!("{flag}: {reason}"),
            other => format!("{flag}: {other}"),
        },
    })?;
    Ok(format!("/{rel}"))
}

/// The flag and the sources list of `record` (read from `file`), relative to the root.
fn paths_of(
    root: &SystemRoot,
    record: &OptOut,
    file: PathBuf,
) -> Result<(RelPath, RelPath), Error> {
    let bad = |reason: String| Error::BadState {
        file: file.clone(),
        reason,
    };
    let checked = |what: &str, path: &str| {
        root.relative(path).map_err(|e| match e {
            Error::Refused { reason, .. } => bad(format!("its {what} {path:?}: {reason}")),
            other => other,
        })
    };
    let flag = checked("writable_flag", &record.writable_flag)?;
    let sources = checked("sources", &record.sources)?;
    if sources.split_last().0 != Some(SOURCES_DIR) {
        return Err(bad(format!(
            "its sources list {:?} is not in /{SOURCES_DIR}",
            record.sources
        )));
    }
    Ok((flag, sources))
}

pub fn is_opted_out(root: &SystemRoot) -> bool {
    Layout::new(root).opt_out().exists()
}

fn state_rel(layout: &Layout, name: &str) -> RelPath {
    layout.rel().join(name).expect("a plain name")
}

/// Reads the JSON state file `name` of the image state directory (`None`: absent).
fn read_state<T: serde::de::DeserializeOwned>(
    root: &SystemRoot,
    name: &str,
) -> Result<Option<T>, Error> {
    let layout = Layout::new(root);
    let Some(tree) = Tree::open_existing(root.dir())? else {
        return Ok(None);
    };
    tree.load_json(&state_rel(&layout, name), "opt-out record")
}

/// The opt-out record, its paths checked against this root.
pub fn record(root: &SystemRoot) -> Result<Option<OptOut>, Error> {
    let Some(record) = read_state::<OptOut>(root, "opt-out.json")? else {
        return Ok(None);
    };
    paths_of(root, &record, Layout::new(root).opt_out())?;
    Ok(Some(record))
}

const JOURNAL: &str = "opt-journal.json";

/// Finishes an opt-out or opt-in that was interrupted. Returns what was finished.
pub fn recover(root: &SystemRoot) -> Result<Option<&'static str>, Error> {
    let Some(pending) = read_state::<Pending>(root, JOURNAL)? else {
        return Ok(None);
    };
    let journal = Layout::new(root).dir().join(JOURNAL);
    Ok(Some(match pending {
        Pending::OptOut(record) => {
            paths_of(root, &record, journal)?;
            opt_out_steps(root, &record)?;
            "opt-out"
        }
        Pending::OptIn(record) => {
            paths_of(root, &record, journal)?;
            opt_in_steps(root, &record)?;
            "opt-in"
        }
    }))
}

/// Removes the file `rel` if present (never a directory, never through a symlink) and
/// syncs its directory.
fn remove_if_present(tree: &Tree, rel: &RelPath) -> Result<(), Error> {
    if tree.remove_file(rel)? {
        let dir = match rel.split_last().0 {
            Some(d) => tree.open_dir(&RelPath::new(d).expect("a parent of a RelPath"))?,
            None => None,
        };
        match dir {
            Some(dir) => dir.sync()?,
            None => tree.sync()?,
        }
    }
    Ok(())
}

/// The sources list for the image's release.
pub fn sources_list(mirror: &str, codename: &str) -> String {
    format!(
        "# Written by release-upgrader image opt-out: this device now upgrades with apt.\n\
         deb {mirror} {codename} main\n\
         deb {mirror} {codename}-updates main\n"
    )
}

fn opt_out_steps(root: &SystemRoot, record: &OptOut) -> Result<(), Error> {
    let layout = Layout::new(root);
    let (flag, sources) = paths_of(root, record, layout.dir().join(JOURNAL))?;
    let tree = root.tree()?;
    tree.write_atomic(&flag, b"")?;
    crashpoint::reached("image-opt");
    tree.write_atomic(
        &sources,
        sources_list(&record.mirror, &record.codename).as_bytes(),
    )?;
    crashpoint::reached("image-opt");
    tree.save_json(&state_rel(&layout, "opt-out.json"), record)?;
    crashpoint::reached("image-opt");
    remove_if_present(&tree, &state_rel(&layout, JOURNAL))
}

fn opt_in_steps(root: &SystemRoot, record: &OptOut) -> Result<(), Error> {
    let layout = Layout::new(root);
    let (flag, sources) = paths_of(root, record, layout.dir().join(JOURNAL))?;
    let tree = root.tree()?;
    remove_if_present(&tree, &state_rel(&layout, "opt-out.json"))?;
    crashpoint::reached("image-opt");
    remove_if_present(&tree, &sources)?;
    crashpoint::reached("image-opt");
    remove_if_present(&tree, &flag)?;
    crashpoint::reached("image-opt");
    remove_if_present(&tree, &state_rel(&layout, JOURNAL))
}

fn write_journal(root: &SystemRoot, pending: &Pending) -> Result<(), Error> {
    root.tree()?
        .save_json(&state_rel(&Layout::new(root), JOURNAL), pending)
}

/// Switches the device to apt. Idempotent: opting out again changes nothing.
pub fn opt_out(root: &SystemRoot, record: OptOut) -> Result<OptOut, Error> {
    recover(root)?;
    if let Some(existing) = self::record(root)? {
        return Ok(existing);
    }
    paths_of(root, &record, PathBuf::from("the command line"))?;
    write_journal(root, &Pending::OptOut(record.clone()))?;
    crashpoint::reached("image-opt");
    opt_out_steps(root, &record)?;
    Ok(record)
}

/// Switches the device back to images. Idempotent: without an opt-out, nothing to do.
pub fn opt_in(root: &SystemRoot) -> Result<Option<OptOut>, Error> {
    recover(root)?;
    let Some(record) = self::record(root)? else {
        return Ok(None);
    };
    write_journal(root, &Pending::OptIn(record.clone()))?;
    crashpoint::reached("image-opt");
    opt_in_steps(root, &record)?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OptOut {
        OptOut {
            build: 7,
            channel: "stable".into(),
            device: Some("d".into()),
            writable_flag: WRITABLE_FLAG.into(),
            sources: SOURCES.into(),
            codename: "bookworm".into(),
            mirror: "http://127.0.0.1/debian".into(),
        }
    }

    #[test]
    fn records_naming_paths_outside_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path().join("root"));
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "x").unwrap();
        for (flag, sources) in [
            ("/../victim", SOURCES),
            ("/userdata/.writable_image", "/../victim"),
            ("/userdata/.writable_image", "/etc/passwd"),
        ] {
            let bad = OptOut {
                writable_flag: flag.into(),
                sources: sources.into(),
                ..record()
            };
            std::fs::create_dir_all(root.dir()).unwrap();
            let err = opt_out(&root, bad.clone()).unwrap_err();
            assert!(err.is_bad_state(), "{err:?}");
            // Recorded (by hand or by an older version): refused on read, not acted on.
            let data = serde_json::to_vec(&bad).unwrap();
            let store = root.tree().unwrap();
            store
                .write_atomic(&state_rel(&Layout::new(&root), "opt-out.json"), &data)
                .unwrap();
            let err = opt_in(&root).unwrap_err();
            assert!(err.to_string().contains("opt-out.json"), "{err}");
            write_journal(&root, &Pending::OptIn(bad)).unwrap();
            let err = recover(&root).unwrap_err();
            assert!(err.to_string().contains("opt-journal.json"), "{err}");
            assert!(victim.exists());
            std::fs::remove_dir_all(root.dir()).unwrap();
        }
        assert!(device_path(&root, "/userdata/../../x", "--writable-flag").is_err());
        assert!(device_path(&root, "/userdata//flag", "--writable-flag").is_err());
        assert_eq!(
            device_path(&root, "/userdata/flag", "--writable-flag").unwrap(),
            "/userdata/flag"
        );
    }

    #[test]
    fn round_trip_is_idempotent_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        opt_out(&root, record()).unwrap();
        opt_out(
            &root,
            OptOut {
                build: 9,
                ..record()
            },
        )
        .unwrap();
        assert_eq!(super::record(&root).unwrap().unwrap().build, 7);
        assert!(root.path(WRITABLE_FLAG).exists());
        let sources = std::fs::read_to_string(root.path(SOURCES)).unwrap();
        assert!(
            sources.contains("deb http://127.0.0.1/debian bookworm main"),
            "{sources}"
        );
        assert!(is_opted_out(&root));
        opt_in(&root).unwrap();
        assert!(opt_in(&root).unwrap().is_none());
        assert!(!is_opted_out(&root));
        assert!(!root.path(WRITABLE_FLAG).exists());
        assert!(!root.path(SOURCES).exists());
        // An opt-out interrupted after its journal: the next run finishes it.
        write_journal(&root, &Pending::OptOut(record())).unwrap();
        assert_eq!(recover(&root).unwrap(), Some("opt-out"));
        assert!(is_opted_out(&root) && root.path(WRITABLE_FLAG).exists());
        assert_eq!(recover(&root).unwrap(), None);
    }
}
