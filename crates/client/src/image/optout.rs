//! `image opt-out` / `image opt-in` (docs/protocol.md §6): moving a device from image updates
//! to apt and back.
//!
//! Opt-out records the build and channel, creates the `.writable_image` flag that
//! Ubuntu Touch's initramfs reads to mount the root read-write, writes the apt sources
//! list made of the suites [`archive::plan`] verified on the mirror (each line
//! `signed-by` the keyring they were verified with), and last writes `opt-out.json`, the
//! mark that mode choice reads. Opt-in removes the mark first, then the sources list and
//! the flag. Each step is idempotent; a journal naming the operation — for an opt-out
//! with the verified suites and keyring, everything the sources list is made of, so that
//! finishing it needs no network — is written before the first step and removed after
//! the last, and a run that finds it finishes that operation.
//!
//! A device's root stays read-only until the initramfs has seen the flag, so there the
//! opt-out stops after the flag (on the user data partition): the sources list cannot be
//! written before the next boot. That is not a failure. The journal, in the writable
//! state directory, keeps the staged sources; the next run on a writable root finishes it
//! (`image recover`, which `release-upgrader-image-recover.service` runs at boot, or any
//! image command that writes, or `upgrade`). Until then the device has no mark and stays
//! on images; an opt-in cancels the staged opt-out. An opt-in that cannot remove the
//! sources list waits the same way, keeping the flag so that the next boot is writable.
//! A journal of an earlier version's opt-out holds no verified suites: it is undone, not
//! finished with sources nobody checked.
//!
//! The record keeps the flag and the sources list as paths on the device (as earlier
//! versions wrote them); every use resolves them under the root and refuses one that
//! would leave it (`..`), or a sources list outside `/etc/apt/sources.list.d/`, with
//! exit 2; the words of the sources list are checked again too. Files are written and
//! removed through the directory holding them, opened under the root as a
//! [`crate::confine::Tree`] ([`SystemRoot::open_dir`]): no symlink is followed on the way
//! or at the file. Mount points on the way are entered, since on a device the user data
//! partition and the state directory are mounts of their own.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::confine::{RelPath, Tree};
use crate::crashpoint;
use crate::error::Error;
use crate::image::archive;
use crate::image::{Layout, STATE_DIR};
use crate::root::SystemRoot;

/// Where Ubuntu Touch's initramfs looks for the flag (on the user data partition).
pub const WRITABLE_FLAG: &str = "/userdata/.writable_image";
/// The sources list opt-out writes.
pub const SOURCES: &str = "/etc/apt/sources.list.d/release-upgrader-image.list";
/// Where a recorded sources list may be.
const SOURCES_DIR: &str = "etc/apt/sources.list.d";
/// The mark of an opted-out device, in the image state directory.
const MARK: &str = "opt-out.json";
/// The journal of an opt-out or opt-in under way, in the image state directory.
const JOURNAL: &str = "opt-journal.json";

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
    /// The archive keyring the suites were verified with and the sources list names in
    /// `signed-by` (absolute path on the device); absent in earlier versions' records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<String>,
    /// The suites verified on the mirror, one sources line each; empty in earlier
    /// versions' records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suites: Vec<archive::Suite>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Pending {
    OptOut(OptOut),
    OptIn(OptOut),
}

/// What an opt-out, opt-in or recovery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    OptOut,
    OptIn,
    /// An opt-out staged for the next boot, cancelled by an opt-in before it finished.
    CancelOptOut,
    /// An opt-out journaled by an earlier version, whose sources were never verified:
    /// undone instead of finished.
    UndoUnverifiedOptOut,
}

/// How far an operation got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub op: Op,
    pub record: OptOut,
    /// The root is read-only: the rest waits in the journal for the next boot, when the
    /// flag makes it writable.
    pub waits_for_reboot: bool,
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

/// The sources list of `record` (read from `file`): its verified suites, `signed-by`
/// its keyring.
fn sources_of(record: &OptOut, file: &Path) -> Result<String, Error> {
    let bad = |reason: String| Error::BadState {
        file: file.to_owned(),
        reason: format!("its sources: {reason}"),
    };
    let keyring = record
        .keyring
        .as_deref()
        .ok_or_else(|| bad("no keyring".into()))?;
    archive::render(&record.suites, keyring).map_err(bad)
}

pub fn is_opted_out(root: &SystemRoot) -> bool {
    Layout::new(root).opt_out().exists()
}

fn state_dir() -> String {
    format!("/{STATE_DIR}")
}

fn name(name: &str) -> RelPath {
    RelPath::new(name).expect("a plain name")
}

/// Reads the JSON state file `file` of the image state directory (`None`: absent).
fn read_state<T: serde::de::DeserializeOwned>(
    root: &SystemRoot,
    file: &str,
) -> Result<Option<T>, Error> {
    match root.open_dir(state_dir())? {
        Some(dir) => dir.load_json(&name(file), "opt-out record"),
        None => Ok(None),
    }
}

fn write_state<T: Serialize>(root: &SystemRoot, file: &str, value: &T) -> Result<(), Error> {
    root.create_dir(state_dir())?.save_json(&name(file), value)
}

fn remove_state(root: &SystemRoot, file: &str) -> Result<(), Error> {
    match root.open_dir(state_dir())? {
        Some(dir) => remove_in(&dir, &name(file)),
        None => Ok(()),
    }
}

/// The directory holding `rel` (opened as [`SystemRoot::open_dir`] does, created when
/// `create`) and `rel`'s last name.
fn parent_of(
    root: &SystemRoot,
    rel: &RelPath,
    create: bool,
) -> Result<Option<(Tree, RelPath)>, Error> {
    let (dir, last) = rel.split_last();
    let dir = format!("/{}", dir.unwrap_or(""));
    let tree = if create {
        Some(root.create_dir(&dir)?)
    } else {
        root.open_dir(&dir)?
    };
    Ok(tree.map(|tree| (tree, name(last))))
}

fn write_device_file(root: &SystemRoot, rel: &RelPath, data: &[u8]) -> Result<(), Error> {
    let (dir, file) = parent_of(root, rel, true)?.expect("created");
    dir.write_atomic(&file, data)
}

fn remove_device_file(root: &SystemRoot, rel: &RelPath) -> Result<(), Error> {
    match parent_of(root, rel, false)? {
        Some((dir, file)) => remove_in(&dir, &file),
        None => Ok(()),
    }
}

/// Removes the file `file` of `dir` if present (never a directory, never through a
/// symlink) and syncs the directory.
fn remove_in(dir: &Tree, file: &RelPath) -> Result<(), Error> {
    if dir.remove_file(file)? {
        dir.sync()?;
    }
    Ok(())
}

/// Whether `err` is a write refused because the file system is mounted read-only.
fn is_read_only(err: &Error) -> bool {
    match err {
        Error::Format(ru_format::Error::Io { source, .. }) => {
            source.kind() == std::io::ErrorKind::ReadOnlyFilesystem
                || source.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error())
        }
        _ => false,
    }
}

/// The opt-out record, its paths checked against this root.
pub fn record(root: &SystemRoot) -> Result<Option<OptOut>, Error> {
    let Some(record) = read_state::<OptOut>(root, MARK)? else {
        return Ok(None);
    };
    paths_of(root, &record, Layout::new(root).opt_out())?;
    Ok(Some(record))
}

/// The operation under way (journaled, not finished), for showing: `None` when none is.
pub fn pending(root: &SystemRoot) -> Result<Option<(Op, OptOut)>, Error> {
    Ok(
        read_state::<Pending>(root, JOURNAL)?.map(|pending| match pending {
            Pending::OptOut(record) => (Op::OptOut, record),
            Pending::OptIn(record) => (Op::OptIn, record),
        }),
    )
}

/// Finishes an opt-out or opt-in that was interrupted or left for the next boot, as far
/// as the root lets it. Returns what it came to (`None`: nothing was under way).
pub fn recover(root: &SystemRoot) -> Result<Option<Progress>, Error> {
    let Some(pending) = read_state::<Pending>(root, JOURNAL)? else {
        return Ok(None);
    };
    let journal = Layout::new(root).dir().join(JOURNAL);
    let (op, record) = match pending {
        Pending::OptOut(record) if record.suites.is_empty() => (Op::UndoUnverifiedOptOut, record),
        Pending::OptOut(record) => (Op::OptOut, record),
        Pending::OptIn(record) => (Op::OptIn, record),
    };
    paths_of(root, &record, journal)?;
    let waits_for_reboot = match op {
        Op::OptOut => opt_out_steps(root, &record)?,
        _ => opt_in_steps(root, &record)?,
    };
    Ok(Some(Progress {
        op,
        record,
        waits_for_reboot,
    }))
}

/// The steps of an opt-out; `true` when the sources list waits for a writable root.
fn opt_out_steps(root: &SystemRoot, record: &OptOut) -> Result<bool, Error> {
    let journal = Layout::new(root).dir().join(JOURNAL);
    let (flag, sources) = paths_of(root, record, journal.clone())?;
    let text = sources_of(record, &journal)?;
    write_device_file(root, &flag, b"")?;
    crashpoint::reached("image-opt");
    match write_device_file(root, &sources, text.as_bytes()) {
        Err(e) if is_read_only(&e) => {
            log::debug!("the sources list waits for a writable root: {e}");
            return Ok(true);
        }
        other => other?,
    }
    crashpoint::reached("image-opt");
    write_state(root, MARK, record)?;
    crashpoint::reached("image-opt");
    remove_state(root, JOURNAL)?;
    Ok(false)
}

/// The steps of an opt-in; `true` when the sources list waits for a writable root to be
/// removed (the flag stays until then, so that the next boot is writable).
fn opt_in_steps(root: &SystemRoot, record: &OptOut) -> Result<bool, Error> {
    let journal = Layout::new(root).dir().join(JOURNAL);
    let (flag, sources) = paths_of(root, record, journal)?;
    remove_state(root, MARK)?;
    crashpoint::reached("image-opt");
    match remove_device_file(root, &sources) {
        Err(e) if is_read_only(&e) => {
            log::debug!("removing the sources list waits for a writable root: {e}");
            return Ok(true);
        }
        other => other?,
    }
    crashpoint::reached("image-opt");
    remove_device_file(root, &flag)?;
    crashpoint::reached("image-opt");
    remove_state(root, JOURNAL)?;
    Ok(false)
}

fn write_journal(root: &SystemRoot, pending: &Pending) -> Result<(), Error> {
    write_state(root, JOURNAL, pending)
}

/// Switches the device to apt with `record`, whose suites the caller verified
/// ([`archive::plan`]). Idempotent: an opt-out done or staged already is returned as
/// it was, and `record` is dropped.
pub fn opt_out(root: &SystemRoot, record: OptOut) -> Result<Progress, Error> {
    if let Some(progress) = recover(root)?
        && progress.op == Op::OptOut
        && progress.waits_for_reboot
    {
        return Ok(progress);
    }
    if let Some(existing) = self::record(root)? {
        return Ok(Progress {
            op: Op::OptOut,
            record: existing,
            waits_for_reboot: false,
        });
    }
    let from = PathBuf::from("the command line");
    paths_of(root, &record, from.clone())?;
    sources_of(&record, &from)?;
    write_journal(root, &Pending::OptOut(record.clone()))?;
    crashpoint::reached("image-opt");
    let waits_for_reboot = opt_out_steps(root, &record)?;
    Ok(Progress {
        op: Op::OptOut,
        record,
        waits_for_reboot,
    })
}

/// Switches the device back to images, or cancels an opt-out staged for the next boot.
/// Idempotent: without an opt-out, nothing to do (`None`).
pub fn opt_in(root: &SystemRoot) -> Result<Option<Progress>, Error> {
    let (op, record) = match recover(root)? {
        Some(progress) if progress.waits_for_reboot => match progress.op {
            Op::OptOut => (Op::CancelOptOut, progress.record),
            // Already on its way back to images.
            _ => return Ok(Some(progress)),
        },
        _ => match self::record(root)? {
            Some(record) => (Op::OptIn, record),
            None => return Ok(None),
        },
    };
    write_journal(root, &Pending::OptIn(record.clone()))?;
    crashpoint::reached("image-opt");
    let waits_for_reboot = opt_in_steps(root, &record)?;
    Ok(Some(Progress {
        op,
        record,
        waits_for_reboot,
    }))
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
            keyring: Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
            suites: vec![archive::Suite {
                uri: "http://127.0.0.1/debian".into(),
                suite: "bookworm".into(),
                components: vec!["main".into(), "contrib".into()],
            }],
        }
    }

    fn state_file(root: &SystemRoot, file: &str) -> PathBuf {
        Layout::new(root).dir().join(file)
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
            write_state(&root, MARK, &bad).unwrap();
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

    /// A journal whose sources would not be the lines they were verified as (a word
    /// with a newline, a keyring option smuggled in) is refused before any step.
    #[test]
    fn a_journal_whose_sources_would_say_something_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        let mut bad = record();
        bad.suites[0].uri = "http://127.0.0.1/debian\ndeb [trusted=yes] http://x/ y".into();
        write_journal(&root, &Pending::OptOut(bad)).unwrap();
        let err = recover(&root).unwrap_err();
        assert!(err.is_bad_state(), "{err:?}");
        assert!(!root.path(WRITABLE_FLAG).exists());
        let mut bad = record();
        bad.keyring = Some("/k.gpg] [trusted=yes".into());
        assert!(opt_out(&root, bad).unwrap_err().is_bad_state());
    }

    #[test]
    fn round_trip_is_idempotent_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        let done = opt_out(&root, record()).unwrap();
        assert!(!done.waits_for_reboot);
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
            sources.contains(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                 http://127.0.0.1/debian bookworm main contrib\n"
            ),
            "{sources}"
        );
        assert!(is_opted_out(&root));
        assert_eq!(opt_in(&root).unwrap().unwrap().op, Op::OptIn);
        assert!(opt_in(&root).unwrap().is_none());
        assert!(!is_opted_out(&root));
        assert!(!root.path(WRITABLE_FLAG).exists());
        assert!(!root.path(SOURCES).exists());
        // An opt-out interrupted after its journal: the next run finishes it.
        write_journal(&root, &Pending::OptOut(record())).unwrap();
        let finished = recover(&root).unwrap().unwrap();
        assert_eq!(
            (finished.op, finished.waits_for_reboot),
            (Op::OptOut, false)
        );
        assert!(is_opted_out(&root) && root.path(WRITABLE_FLAG).exists());
        assert_eq!(recover(&root).unwrap(), None);
        assert!(!state_file(&root, JOURNAL).exists());
    }

    #[test]
    fn only_a_read_only_file_system_makes_a_step_wait_for_the_reboot() {
        let rofs = std::io::Error::from_raw_os_error(rustix::io::Errno::ROFS.raw_os_error());
        assert!(is_read_only(&Error::io("/etc/apt", rofs)));
        // Wrapped with a message, as fs_err does (the host root's directories are made
        // with it): the kind still tells.
        let wrapped = std::io::Error::new(
            std::io::ErrorKind::ReadOnlyFilesystem,
            "read-only file system when creating /etc/apt",
        );
        assert!(is_read_only(&Error::io("/etc/apt", wrapped)));
        for other in [
            std::io::ErrorKind::PermissionDenied,
            std::io::ErrorKind::NotFound,
        ] {
            assert!(!is_read_only(&Error::io("/etc/apt", other.into())));
        }
        assert!(!is_read_only(&Error::Config {
            path: "/etc/apt".into(),
            reason: "read-only".into()
        }));
    }

    /// An earlier version's interrupted opt-out has no verified suites: finishing it
    /// would write sources nobody checked, so it is undone.
    #[test]
    fn an_earlier_versions_unverified_opt_out_is_undone_not_finished() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        let old = OptOut {
            keyring: None,
            suites: Vec::new(),
            ..record()
        };
        std::fs::create_dir_all(root.path("/userdata")).unwrap();
        std::fs::write(root.path(WRITABLE_FLAG), "").unwrap();
        std::fs::create_dir_all(root.path("/etc/apt/sources.list.d")).unwrap();
        std::fs::write(
            root.path(SOURCES),
            "deb http://127.0.0.1/debian bookworm main\n",
        )
        .unwrap();
        // As an earlier version wrote it: no keyring, no suites.
        let journal = serde_json::json!({"op": "opt-out", "build": 7, "channel": "stable",
            "device": "d", "writable_flag": WRITABLE_FLAG, "sources": SOURCES,
            "codename": "bookworm", "mirror": "http://127.0.0.1/debian"});
        std::fs::create_dir_all(Layout::new(&root).dir()).unwrap();
        std::fs::write(state_file(&root, JOURNAL), journal.to_string()).unwrap();
        let undone = recover(&root).unwrap().unwrap();
        assert_eq!(undone.op, Op::UndoUnverifiedOptOut);
        assert_eq!(undone.record, old);
        assert!(!root.path(WRITABLE_FLAG).exists() && !root.path(SOURCES).exists());
        assert!(!is_opted_out(&root) && recover(&root).unwrap().is_none());
    }
}
