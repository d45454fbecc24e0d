//! `image opt-out` / `image opt-in` (PROTOCOL §6): moving a device from image updates
//! to apt and back.
//!
//! Opt-out records the build and channel, creates the `.writable_image` flag that
//! Ubuntu Touch's initramfs reads to mount the root read-write, writes an apt sources
//! list for the image's release, and last writes `opt-out.json`, the mark that mode
//! choice reads. Opt-in removes the mark first, then the sources list and the flag.
//! Each step is idempotent; a journal naming the operation is written before the
//! first and removed after the last, and a run that finds it finishes that operation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crashpoint;
use crate::error::Error;
use crate::image::Layout;
use crate::root::SystemRoot;

/// Where Ubuntu Touch's initramfs looks for the flag (on the user data partition).
pub const WRITABLE_FLAG: &str = "/userdata/.writable_image";
/// The sources list opt-out writes.
pub const SOURCES: &str = "/etc/apt/sources.list.d/release-upgrader-image.list";

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

pub fn is_opted_out(root: &SystemRoot) -> bool {
    Layout::new(root).opt_out().exists()
}

pub fn record(root: &SystemRoot) -> Result<Option<OptOut>, Error> {
    let path = Layout::new(root).opt_out();
    match fs_err::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Malformed {
                what: path.display().to_string(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

fn journal(layout: &Layout) -> PathBuf {
    layout.dir().join("opt-journal.json")
}

/// Finishes an opt-out or opt-in that was interrupted. Returns what was finished.
pub fn recover(root: &SystemRoot) -> Result<Option<&'static str>, Error> {
    let layout = Layout::new(root);
    let path = journal(&layout);
    let pending: Pending = match fs_err::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    Ok(Some(match pending {
        Pending::OptOut(record) => {
            opt_out_steps(root, &layout, &record)?;
            "opt-out"
        }
        Pending::OptIn(record) => {
            opt_in_steps(root, &layout, &record)?;
            "opt-in"
        }
    }))
}

fn remove_if_present(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                crate::fsutil::sync_dir(dir).map_err(|e| Error::io(dir, e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The sources list for the image's release.
pub fn sources_list(mirror: &str, codename: &str) -> String {
    format!(
        "# Written by release-upgrader image opt-out: this device now upgrades with apt.\n\
         deb {mirror} {codename} main\n\
         deb {mirror} {codename}-updates main\n"
    )
}

fn opt_out_steps(root: &SystemRoot, layout: &Layout, record: &OptOut) -> Result<(), Error> {
    crate::fsutil::write_atomic(&root.path(&record.writable_flag), b"")?;
    crashpoint::reached("image-opt");
    crate::fsutil::write_atomic(
        &root.path(&record.sources),
        sources_list(&record.mirror, &record.codename).as_bytes(),
    )?;
    crashpoint::reached("image-opt");
    let data = serde_json::to_vec_pretty(record).expect("record serialises");
    crate::fsutil::write_atomic(&layout.opt_out(), &data)?;
    crashpoint::reached("image-opt");
    remove_if_present(&journal(layout))
}

fn opt_in_steps(root: &SystemRoot, layout: &Layout, record: &OptOut) -> Result<(), Error> {
    remove_if_present(&layout.opt_out())?;
    crashpoint::reached("image-opt");
    remove_if_present(&root.path(&record.sources))?;
    crashpoint::reached("image-opt");
    remove_if_present(&root.path(&record.writable_flag))?;
    crashpoint::reached("image-opt");
    remove_if_present(&journal(layout))
}

/// Switches the device to apt. Idempotent: opting out again changes nothing.
pub fn opt_out(root: &SystemRoot, record: OptOut) -> Result<OptOut, Error> {
    recover(root)?;
    if let Some(existing) = self::record(root)? {
        return Ok(existing);
    }
    let layout = Layout::new(root);
    let data = serde_json::to_vec_pretty(&Pending::OptOut(record.clone())).expect("serialises");
    crate::fsutil::write_atomic(&journal(&layout), &data)?;
    crashpoint::reached("image-opt");
    opt_out_steps(root, &layout, &record)?;
    Ok(record)
}

/// Switches the device back to images. Idempotent: without an opt-out, nothing to do.
pub fn opt_in(root: &SystemRoot) -> Result<Option<OptOut>, Error> {
    recover(root)?;
    let Some(record) = self::record(root)? else {
        return Ok(None);
    };
    let layout = Layout::new(root);
    let data = serde_json::to_vec_pretty(&Pending::OptIn(record.clone())).expect("serialises");
    crate::fsutil::write_atomic(&journal(&layout), &data)?;
    crashpoint::reached("image-opt");
    opt_in_steps(root, &layout, &record)?;
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
        let layout = Layout::new(&root);
        let data = serde_json::to_vec(&Pending::OptOut(record())).unwrap();
        crate::fsutil::write_atomic(&journal(&layout), &data).unwrap();
        assert_eq!(recover(&root).unwrap(), Some("opt-out"));
        assert!(is_opted_out(&root) && root.path(WRITABLE_FLAG).exists());
        assert_eq!(recover(&root).unwrap(), None);
    }
}
