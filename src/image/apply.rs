//! Applying the downloaded files of a path: into the system tree itself through a
//! staged overlay, or into the inactive slot of an A/B pair; or, for devices whose
//! recovery applies updates, writing system-image's `ubuntu_command` instead.
//!
//! The journal (`<root>/var/lib/release-upgrader/image/journal/`) says how far a run
//! got. Recovery, run first by every apply: while staging, throw the staging away (the
//! system was not touched); once committing, finish the commit (the staged result was
//! complete and verified before the journal said so); once switching slots, point the
//! `active` link at the new slot. So after a crash at any point the next run finds the
//! old system intact or the new one complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crashpoint;
use crate::digest::Sha256;
use crate::error::Error;
use crate::image::Layout;
use crate::image::extract::Compression;
use crate::image::index::{Image, Kind};
use crate::image::overlay::{self, Overlay};

/// One file to apply, in order.
#[derive(Clone, Debug)]
pub struct Step<'a> {
    pub image: &'a Image,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: Sha256,
    pub name: String,
}

/// Where the result goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// The system tree at this directory, through a staged overlay.
    Tree(PathBuf),
    /// An A/B pair: `active` is a symlink naming the running slot.
    Slots {
        a: PathBuf,
        b: PathBuf,
        active: PathBuf,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    Staging,
    Committing,
    Switching,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    phase: Phase,
    target_build: u64,
    /// Where the overlay is committed.
    dest: PathBuf,
    staging: PathBuf,
    /// A/B: the slot to make active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    switch_to: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_link: Option<PathBuf>,
}

/// What recovery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovered {
    Nothing,
    /// An interrupted apply was discarded; the old system is intact.
    RolledBack,
    /// An interrupted apply was finished; the new system is complete.
    RolledForward(u64),
}

fn write_journal(layout: &Layout, journal: &Journal) -> Result<(), Error> {
    let data = serde_json::to_vec_pretty(journal).expect("journal serialises");
    crate::fsutil::write_atomic(&layout.journal().join("state.json"), &data)
}

fn clear_journal(layout: &Layout) -> Result<(), Error> {
    let dir = layout.journal();
    for name in ["state.json", "overlay.json"] {
        let p = dir.join(name);
        if p.exists() {
            fs_err::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    if dir.exists() {
        crate::fsutil::sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    Ok(())
}

/// Finishes or discards an interrupted apply.
pub fn recover(layout: &Layout) -> Result<Recovered, Error> {
    let state = layout.journal().join("state.json");
    let journal: Journal = match fs_err::read(&state) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
            what: state.display().to_string(),
            reason: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recovered::Nothing),
        Err(e) => return Err(Error::io(&state, e)),
    };
    let outcome = match journal.phase {
        Phase::Staging => Recovered::RolledBack,
        Phase::Committing => {
            let overlay = layout.journal().join("overlay.json");
            let bytes = fs_err::read(&overlay).map_err(|e| Error::io(&overlay, e))?;
            let paths = serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
                what: overlay.display().to_string(),
                reason: e.to_string(),
            })?;
            overlay::commit(&journal.dest, &journal.staging, &paths)?;
            if let (Some(to), Some(link)) = (&journal.switch_to, &journal.active_link) {
                switch_link(link, to)?;
            }
            Recovered::RolledForward(journal.target_build)
        }
        Phase::Switching => {
            if let (Some(to), Some(link)) = (&journal.switch_to, &journal.active_link) {
                switch_link(link, to)?;
            }
            Recovered::RolledForward(journal.target_build)
        }
    };
    if journal.staging.exists() {
        fs_err::remove_dir_all(&journal.staging).map_err(|e| Error::io(&journal.staging, e))?;
    }
    clear_journal(layout)?;
    Ok(outcome)
}

/// Re-checks a downloaded file's size and digest now, just before it is used.
fn recheck(step: &Step<'_>) -> Result<(), Error> {
    let mut file = fs_err::File::open(&step.path).map_err(|e| Error::io(&step.path, e))?;
    let (actual, size) = Sha256::of_reader(&mut file).map_err(|e| Error::io(&step.path, e))?;
    if size != step.size {
        return Err(Error::SizeMismatch {
            what: step.name.clone(),
            expected: step.size,
            actual: size,
        });
    }
    if actual != step.sha256 {
        return Err(Error::HashMismatch {
            what: step.name.clone(),
            expected: step.sha256.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(())
}

/// Applies `steps` (all files of the path's images, in order) to `target`, ending at
/// `target_build`. Returns the partitions members skipped.
pub fn apply(
    layout: &Layout,
    target: &Target,
    steps: &[Step<'_>],
    target_build: u64,
) -> Result<Vec<String>, Error> {
    recover(layout)?;
    let (base, staging, switch) = match target {
        Target::Tree(dir) => (dir.clone(), layout.staging(), None),
        Target::Slots { a, b, active } => {
            let current = fs_err::read_link(active).map_err(|e| Error::io(active, e))?;
            let current = if current.is_relative() {
                active.parent().unwrap_or(Path::new("/")).join(current)
            } else {
                current
            };
            let same = |x: &Path, y: &Path| {
                x.canonicalize()
                    .ok()
                    .is_some_and(|x| y.canonicalize().ok() == Some(x))
            };
            let inactive = if same(&current, a) {
                b.clone()
            } else if same(&current, b) {
                a.clone()
            } else {
                return Err(Error::Config {
                    path: active.clone(),
                    reason: format!("points at {}, neither slot", current.display()),
                });
            };
            let name = inactive
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let staging = inactive.with_file_name(format!(".{name}.staging"));
            (
                inactive.clone(),
                staging,
                Some((current, inactive, active.clone())),
            )
        }
    };
    let mut journal = Journal {
        phase: Phase::Staging,
        target_build,
        dest: base.clone(),
        staging: staging.clone(),
        switch_to: switch.as_ref().map(|s| s.1.clone()),
        active_link: switch.as_ref().map(|s| s.2.clone()),
    };
    write_journal(layout, &journal)?;
    crashpoint::reached("image-apply");
    if let Some((current, inactive, _)) = &switch {
        copy_tree(current, inactive)?;
        crashpoint::reached("image-apply");
    }
    let mut overlay = Overlay::new(&base, &staging)?;
    let mut partitions = Vec::new();
    let mut last_image: Option<*const Image> = None;
    for step in steps {
        recheck(step)?;
        let new_image = last_image != Some(step.image as *const Image);
        if new_image && step.image.kind() == Some(Kind::Full) {
            overlay.reset_for_full_image()?;
        }
        last_image = Some(step.image as *const Image);
        let compression = Compression::of(&step.name).ok_or_else(|| Error::Malformed {
            what: step.name.clone(),
            reason: "not a .tar.xz or .tar.zst image file".into(),
        })?;
        overlay.apply_tarball(&step.path, compression, &step.name, &mut partitions)?;
        crashpoint::reached("image-apply");
    }
    overlay.verify(target_build, &format!("build {target_build}"))?;
    overlay.sync()?;
    let data = serde_json::to_vec(&overlay.paths).expect("overlay serialises");
    crate::fsutil::write_atomic(&layout.journal().join("overlay.json"), &data)?;
    crashpoint::reached("image-apply");
    journal.phase = Phase::Committing;
    write_journal(layout, &journal)?;
    crashpoint::reached("image-apply");
    overlay::commit(&base, &staging, &overlay.paths)?;
    if let Some((_, inactive, link)) = &switch {
        journal.phase = Phase::Switching;
        write_journal(layout, &journal)?;
        crashpoint::reached("image-apply");
        switch_link(link, inactive)?;
        crashpoint::reached("image-apply");
    }
    fs_err::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    clear_journal(layout)?;
    Ok(partitions)
}

/// Points the symlink `link` at `to`, atomically (new link, rename over, fsync dir).
pub fn switch_link(link: &Path, to: &Path) -> Result<(), Error> {
    if fs_err::read_link(link).is_ok_and(|t| t == to) {
        return Ok(());
    }
    let tmp = crate::fsutil::temp_name(link);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(to, &tmp).map_err(|e| Error::io(&tmp, e))?;
    fs_err::rename(&tmp, link).map_err(|e| Error::io(link, e))?;
    let dir = link.parent().unwrap_or(Path::new("/"));
    crate::fsutil::sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Makes `to` an exact copy of `from` (`cp -a`, which keeps hard links, devices,
/// owners and times).
fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    if to.exists() {
        fs_err::remove_dir_all(to).map_err(|e| Error::io(to, e))?;
    }
    fs_err::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .map_err(|e| Error::io(to, e))?;
    if !status.success() {
        return Err(Error::io(
            to,
            std::io::Error::other(format!("cp -a failed: {status}")),
        ));
    }
    Ok(())
}

/// Writes system-image's `ubuntu_command` for a recovery that applies the update, with
/// the files and keyrings it names, into `dir` (`<root>/cache/recovery`).
pub fn write_recovery(
    dir: &Path,
    keyrings: &Path,
    images: &[&Image],
    files: &[(PathBuf, PathBuf)],
) -> Result<PathBuf, Error> {
    fs_err::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut command = String::new();
    for name in [
        "image-master.tar.xz",
        "image-signing.tar.xz",
        "device-signing.tar.xz",
    ] {
        let src = keyrings.join(name);
        if !src.exists() {
            continue;
        }
        copy_file(&src, &dir.join(name))?;
        copy_file(
            &keyrings.join(format!("{name}.asc")),
            &dir.join(format!("{name}.asc")),
        )?;
        command.push_str(&format!("load_keyring {name} {name}.asc\n"));
    }
    if images.iter().any(|i| i.kind() == Some(Kind::Full)) {
        command.push_str("format system\n");
    }
    command.push_str("mount system\n");
    for (file, sig) in files {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let sig_name = sig
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        copy_file(file, &dir.join(&name))?;
        copy_file(sig, &dir.join(&sig_name))?;
        command.push_str(&format!("update {name} {sig_name}\n"));
    }
    command.push_str("unmount system\n");
    let path = dir.join("ubuntu_command");
    crate::fsutil::write_atomic(&path, command.as_bytes())?;
    Ok(path)
}

fn copy_file(from: &Path, to: &Path) -> Result<(), Error> {
    let tmp = crate::fsutil::temp_name(to);
    fs_err::copy(from, &tmp).map_err(|e| Error::io(from, e))?;
    fs_err::rename(&tmp, to).map_err(|e| Error::io(to, e))
}
