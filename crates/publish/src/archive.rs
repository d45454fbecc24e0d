//! Writing a small signed apt archive in the standard layout (`dists/<codename>/`,
//! `pool/`), as a distribution mirror has it: what the demo's two tiny releases and the
//! end-to-end tests upgrade between, and what upgrade media carry.

use std::path::{Path, PathBuf};

use crate::SigningKey;
use crate::date::Timestamp;
use crate::digest::Sha256;
use crate::error::Error;
use crate::fsutil;
use crate::pocket::{PocketSpec, render_release, xz};

/// A release of the archive: its `Release` fields and packages.
#[derive(Clone, Debug)]
pub struct ArchiveRelease {
    pub spec: PocketSpec,
    pub version: Option<String>,
    pub component: String,
    /// `.deb` files; their control is read to write the index.
    pub debs: Vec<PathBuf>,
}

/// Writes `release` into the archive at `root` (creating `dists/<codename>/` and copying
/// the debs under `pool/`), signed by `key`.
pub fn write(root: &Path, release: &ArchiveRelease, key: &SigningKey) -> Result<(), Error> {
    let spec = &release.spec;
    let component = &release.component;
    let mut stanzas = Vec::new();
    for deb in &release.debs {
        let control = crate::deb::read_control(deb)?;
        let first = control.package.chars().next().unwrap_or('_');
        let version = control.version.to_string();
        let version = version.split_once(':').map_or(version.as_str(), |(_, v)| v);
        let filename = format!(
            "pool/{component}/{first}/{}/{}_{}_{}.deb",
            control.package, control.package, version, control.architecture
        );
        let dest = root.join(&filename);
        let bytes = fs_err::read(deb).map_err(|e| Error::io(deb, e))?;
        fsutil::write_atomic(&dest, &bytes)?;
        let mut stanza = String::new();
        for (k, v) in &control.fields {
            stanza.push_str(&format!("{k}: {v}\n"));
        }
        stanza.push_str(&format!(
            "Filename: {filename}\nSize: {}\nSHA256: {}\n",
            bytes.len(),
            Sha256::of(&bytes)
        ));
        stanzas.push((control.package.clone(), stanza));
    }
    stanzas.sort();
    let packages: String = stanzas
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join("\n");
    let dists = root.join("dists").join(&spec.codename);
    let arch = spec.architectures.first().cloned().unwrap_or_default();
    let index_dir = format!("{component}/binary-{arch}");
    let packages_xz = xz(packages.as_bytes());
    let plain_name = format!("{index_dir}/Packages");
    let xz_name = format!("{index_dir}/Packages.xz");
    fsutil::write_atomic(&dists.join(&plain_name), packages.as_bytes())?;
    fsutil::write_atomic(&dists.join(&xz_name), &packages_xz)?;
    let mut text = render_release(
        spec,
        &[(&plain_name, packages.as_bytes()), (&xz_name, &packages_xz)],
    );
    // The archive-only fields, before the checksums.
    let at = text.find("SHA256:").unwrap_or(text.len());
    let mut extra = format!("Components: {component}\n");
    if let Some(version) = &release.version {
        extra.push_str(&format!("Version: {version}\n"));
    }
    text.insert_str(at, &extra);
    fsutil::write_atomic(&dists.join("Release"), text.as_bytes())?;
    fsutil::write_atomic(
        &dists.join("Release.gpg"),
        &key.detached_signature(text.as_bytes())?,
    )?;
    fsutil::write_atomic(&dists.join("InRelease"), &key.clearsign(text.as_bytes())?)?;
    Ok(())
}

/// A `PocketSpec` for an archive release dated `date`, valid `days`.
pub fn spec(origin: &str, codename: &str, arch: &str, date: Timestamp, days: i64) -> PocketSpec {
    PocketSpec {
        origin: origin.to_owned(),
        label: origin.to_owned(),
        suite: codename.to_owned(),
        codename: codename.to_owned(),
        architectures: vec![arch.to_owned()],
        description: None,
        date,
        valid_until: Some(date + days * 86_400),
    }
}
