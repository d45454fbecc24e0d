//! Writing a signed flat pocket (docs/protocol.md §2): the `.deb` files, `Packages`,
//! `Packages.xz`, `Release`, `InRelease` and `Release.gpg`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::SigningKey;
use crate::date::{self, Timestamp};
use crate::digest::Sha256;
use crate::error::Error;
use crate::fsutil;

/// The `Release` fields of a pocket.
#[derive(Clone, Debug)]
pub struct PocketSpec {
    pub origin: String,
    pub label: String,
    pub suite: String,
    pub codename: String,
    pub architectures: Vec<String>,
    pub description: Option<String>,
    pub date: Timestamp,
    pub valid_until: Option<Timestamp>,
}

/// A package to publish: its control fields (at least `Package`, `Version`,
/// `Architecture`) and the `.deb` file.
#[derive(Clone, Debug)]
pub struct PocketEntry {
    pub fields: Vec<(String, String)>,
    pub file: PathBuf,
}

impl PocketEntry {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The flat file name: `name_version_arch.deb`, epoch dropped as dpkg-name does.
    pub fn file_name(&self) -> Result<String, Error> {
        let get = |name: &str| {
            self.field(name).ok_or_else(|| Error::Malformed {
                what: self.file.display().to_string(),
                reason: format!("control has no {name} field"),
            })
        };
        let version = get("Version")?;
        let version = version.split_once(':').map_or(version, |(_, v)| v);
        Ok(format!(
            "{}_{}_{}.deb",
            get("Package")?,
            version,
            get("Architecture")?
        ))
    }
}

/// Renders a `Release` file listing `indices` (name, content).
pub fn render_release(spec: &PocketSpec, indices: &[(&str, &[u8])]) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k}: {v}\n"));
    line("Origin", &spec.origin);
    line("Label", &spec.label);
    line("Suite", &spec.suite);
    line("Codename", &spec.codename);
    line("Architectures", &spec.architectures.join(" "));
    if let Some(description) = &spec.description {
        line("Description", description);
    }
    line("Date", &date::format(spec.date));
    if let Some(valid_until) = spec.valid_until {
        line("Valid-Until", &date::format(valid_until));
    }
    out.push_str("SHA256:\n");
    for (name, content) in indices {
        out.push_str(&format!(
            " {} {:>8} {name}\n",
            Sha256::of(content),
            content.len()
        ));
    }
    out
}

/// Renders the `Packages` index for entries already placed at their file names.
fn render_packages(entries: &[(&PocketEntry, String, u64, Sha256)]) -> String {
    let mut out = String::new();
    for (entry, filename, size, sha256) in entries {
        for (k, v) in &entry.fields {
            if ["Filename", "Size", "SHA256", "MD5sum", "SHA1", "SHA512"]
                .iter()
                .any(|f| f.eq_ignore_ascii_case(k))
            {
                continue;
            }
            out.push_str(&format!("{k}: {v}\n"));
        }
        out.push_str(&format!(
            "Filename: {filename}\nSize: {size}\nSHA256: {sha256}\n\n"
        ));
    }
    out
}

/// xz-compresses an index the way archives do (preset 6, CRC64).
pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 6);
    encoder.write_all(data).expect("compressing in memory");
    encoder.finish().expect("compressing in memory")
}

/// Writes a complete signed pocket into `out` and returns the paths it wrote.
pub fn write(
    out: &Path,
    spec: &PocketSpec,
    entries: &[PocketEntry],
    key: &SigningKey,
) -> Result<Vec<PathBuf>, Error> {
    fs_err::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut written = Vec::new();
    let mut placed = Vec::new();
    for entry in entries {
        let name = entry.file_name()?;
        let dest = out.join(&name);
        let same_file = fs_err::canonicalize(&entry.file).ok() == fs_err::canonicalize(&dest).ok();
        if !same_file {
            let bytes = fs_err::read(&entry.file).map_err(|e| Error::io(&entry.file, e))?;
            fsutil::write_atomic(&dest, &bytes)?;
        }
        let mut file = fs_err::File::open(&dest).map_err(|e| Error::io(&dest, e))?;
        let (sha256, size) = Sha256::of_reader(&mut file).map_err(|e| Error::io(&dest, e))?;
        placed.push((entry, name, size, sha256));
        written.push(dest);
    }
    placed.sort_by(|a, b| a.1.cmp(&b.1));
    let packages = render_packages(&placed);
    let packages_xz = xz(packages.as_bytes());
    let release = render_release(
        spec,
        &[
            ("Packages", packages.as_bytes()),
            ("Packages.xz", &packages_xz),
        ],
    );
    let files: [(&str, Vec<u8>); 5] = [
        ("Packages", packages.clone().into_bytes()),
        ("Packages.xz", packages_xz),
        ("Release", release.clone().into_bytes()),
        ("Release.gpg", key.detached_signature(release.as_bytes())?),
        ("InRelease", key.clearsign(release.as_bytes())?),
    ];
    for (name, content) in files {
        let path = out.join(name);
        fsutil::write_atomic(&path, &content)?;
        written.push(path);
    }
    Ok(written)
}

/// The directory of the pockets for `arch` under a base directory (what
/// `UpgradeToolBaseURI` points at).
pub fn arch_dir(base: &Path, arch: &str) -> PathBuf {
    base.join(format!("dist-upgrader-{arch}"))
}

/// Whether `name` is a version directory this module wrote (`20250809T070000Z`, maybe
/// with a `.N` suffix): the only directories [`publish`] ever removes.
fn is_version_dir_name(name: &str) -> bool {
    let stamp = name.split_once('.').map_or(name, |(stamp, n)| {
        if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() {
            stamp
        } else {
            ""
        }
    });
    let bytes = stamp.as_bytes();
    bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[9..15].iter().all(u8::is_ascii_digit)
}

/// Publishes a pocket as `base/dist-upgrader-<arch>/current/`: written complete into a
/// new version directory named by its `Date`, then `current` (a symbolic link) is
/// switched to it with one rename, so a client reading the pocket meanwhile sees the old
/// one or the new one, never a mix. Keeps the newest `keep` versions (at least the new
/// one) and removes older version directories it wrote. Returns the new directory.
pub fn publish(
    base: &Path,
    arch: &str,
    spec: &PocketSpec,
    entries: &[PocketEntry],
    key: &SigningKey,
    keep: usize,
) -> Result<PathBuf, Error> {
    let dir = arch_dir(base, arch);
    fs_err::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let current = dir.join("current");
    let is_real_dir =
        std::fs::symlink_metadata(&current).is_ok_and(|m| !m.file_type().is_symlink());
    if is_real_dir {
        return Err(Error::Config {
            path: current,
            reason: "is a directory, not the link this tool switches; move it aside \
                     (e.g. to a dated name) and publish again"
                .into(),
        });
    }
    let stamp = chrono::DateTime::from_timestamp(spec.date, 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut name = stamp.clone();
    let mut n = 1;
    while fs_err::symlink_metadata(dir.join(&name)).is_ok() {
        name = format!("{stamp}.{n}");
        n += 1;
    }
    let version_dir = dir.join(&name);
    if let Err(err) = write(&version_dir, spec, entries, key) {
        let _ = std::fs::remove_dir_all(&version_dir);
        return Err(err);
    }
    fsutil::sync_dir(&version_dir).map_err(|e| Error::io(&version_dir, e))?;
    let link = dir.join(".current.new");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&name, &link).map_err(|e| Error::io(&link, e))?;
    fs_err::rename(&link, &current).map_err(|e| Error::io(&current, e))?;
    fsutil::sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;

    let mut versions: Vec<String> = fs_err::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| is_version_dir_name(name))
        .collect();
    versions.sort_by(|a, b| b.cmp(a));
    for old in versions.iter().skip(keep.max(1)) {
        if *old != name {
            let path = dir.join(old);
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(version_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_version_directories_are_recognised() {
        assert!(is_version_dir_name("20250809T070000Z"));
        assert!(is_version_dir_name("20250809T070000Z.2"));
        assert!(!is_version_dir_name("current"));
        assert!(!is_version_dir_name("20250809T070000Z.x"));
        assert!(!is_version_dir_name("2025080XT070000Z"));
        assert!(!is_version_dir_name("my-notes"));
    }
}
