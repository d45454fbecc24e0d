//! Writing a signed flat pocket (PROTOCOL.md §2): the `.deb` files, `Packages`,
//! `Packages.xz`, `Release`, `InRelease` and `Release.gpg`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::date::{self, Timestamp};
use crate::digest::Sha256;
use crate::error::Error;
use crate::fsutil;
use crate::publish::SigningKey;

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
