//! Turning packages installed on this machine back into .deb files, so the demo can
//! build its helpers with the publisher's own pipeline (`helper build` against an apt
//! archive) without a network: the archive it points at is made of this machine's apt,
//! dpkg and the libraries they depend on.

use ru_client::task::Task;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::upgrade::dpkg_status::Status;

/// Installed packages in the `Depends`/`Pre-Depends` closure of `roots` (alternatives
/// resolved to the first installed one; virtual packages to an installed provider).
pub fn closure(roots: &[&str]) -> Result<Vec<String>, Error> {
    let status_text = fs_err::read_to_string("/var/lib/dpkg/status")
        .map_err(|e| Error::io("/var/lib/dpkg/status", e))?;
    let stanzas: Vec<deb822_fast::Paragraph> = status_text
        .parse::<deb822_fast::Deb822>()
        .map_err(|e| Error::Config {
            path: "/var/lib/dpkg/status".into(),
            reason: e.to_string(),
        })?
        .into_iter()
        .filter(|p| p.get("Status").is_some_and(|s| s.ends_with(" installed")))
        .collect();
    let mut by_name: BTreeMap<String, &deb822_fast::Paragraph> = BTreeMap::new();
    let mut providers: BTreeMap<String, String> = BTreeMap::new();
    for stanza in &stanzas {
        let name = stanza.get("Package").unwrap_or("").to_owned();
        for provided in stanza.get("Provides").unwrap_or("").split(',') {
            let provided = provided
                .split(['(', ' '])
                .find(|w| !w.is_empty())
                .unwrap_or("");
            if !provided.is_empty() {
                providers
                    .entry(provided.to_owned())
                    .or_insert_with(|| name.clone());
            }
        }
        by_name.insert(name, stanza);
    }
    let installed = |name: &str| -> Option<String> {
        let name = name.split(':').next().unwrap_or(name);
        if by_name.contains_key(name) {
            Some(name.to_owned())
        } else {
            providers.get(name).cloned()
        }
    };
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for root in roots {
        let name = installed(root).ok_or_else(|| Error::Config {
            path: "/var/lib/dpkg/status".into(),
            reason: format!("{root} is not installed on this machine"),
        })?;
        queue.push_back(name);
    }
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let stanza = by_name[&name];
        for field in ["Pre-Depends", "Depends"] {
            for group in stanza.get(field).unwrap_or("").split(',') {
                let chosen = group.split('|').find_map(|alternative| {
                    let word = alternative.split(['(', ' ', '[']).find(|w| !w.is_empty())?;
                    installed(word)
                });
                if let Some(dep) = chosen {
                    queue.push_back(dep);
                }
            }
        }
    }
    Ok(seen.into_iter().collect())
}

/// Rebuilds the installed package `name` as `out/<name>_<version>_<arch>.deb` (files as
/// dpkg lists them, control as dpkg's status records it), uncompressed for speed.
pub fn repack(name: &str, work: &Path, out: &Path) -> Result<PathBuf, Error> {
    let status = Status::read(&crate::root::SystemRoot::new("/"))?;
    let installed = status
        .installed()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::Config {
            path: "/var/lib/dpkg/status".into(),
            reason: format!("{name} is not installed on this machine"),
        })?
        .clone();
    let tree = work.join(format!("repack-{name}"));
    let _ = std::fs::remove_dir_all(&tree);
    let debian = tree.join("DEBIAN");
    fs_err::create_dir_all(&debian).map_err(|e| Error::io(&debian, e))?;
    let list = super::tiny::run(Task::plain("dpkg-query").args(["-L", name]))?;
    let paths: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/') && *l != "/.")
        .collect();
    // A path other listed paths live under is a directory of the package, even where this
    // machine made it a symlink (merged /usr: /lib → usr/lib).
    let parents: BTreeSet<&str> = paths
        .iter()
        .filter_map(|p| p.rsplit_once('/').map(|(parent, _)| parent))
        .collect();
    for path in paths {
        let source = Path::new(path);
        let Ok(meta) = std::fs::symlink_metadata(source) else {
            continue; // listed but gone (e.g. excluded by dpkg path-exclude)
        };
        let dest = tree.join(path.trim_start_matches('/'));
        if meta.is_dir() || parents.contains(path) {
            fs_err::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
            continue;
        }
        if let Some(dir) = dest.parent() {
            fs_err::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if meta.file_type().is_symlink() {
            let target = fs_err::read_link(source).map_err(|e| Error::io(source, e))?;
            std::os::unix::fs::symlink(&target, &dest).map_err(|e| Error::io(&dest, e))?;
        } else if meta.is_file() {
            fs_err::copy(source, &dest).map_err(|e| Error::io(source, e))?;
            fs_err::set_permissions(&dest, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| Error::io(&dest, e))?;
        }
    }
    const FIELDS: [&str; 9] = [
        "Package",
        "Version",
        "Architecture",
        "Multi-Arch",
        "Maintainer",
        "Installed-Size",
        "Pre-Depends",
        "Depends",
        "Provides",
    ];
    let format: String = FIELDS
        .iter()
        .map(|f| format!("${{{f}}}\\t"))
        .collect::<String>()
        + "${binary:Summary}";
    let values = super::tiny::run(Task::plain("dpkg-query").args(["-W", "-f", &format, name]))?;
    let values: Vec<&str> = values.split('\t').collect();
    let mut control = String::new();
    for (field, value) in FIELDS.iter().zip(&values) {
        if !value.trim().is_empty() {
            control.push_str(&format!("{field}: {}\n", value.trim()));
        }
    }
    control.push_str(&format!(
        "Description: {}\n",
        values
            .last()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .unwrap_or(name)
    ));
    fs_err::write(debian.join("control"), control).map_err(|e| Error::io(&debian, e))?;
    fs_err::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let version = installed
        .version
        .split_once(':')
        .map_or(installed.version.as_str(), |(_, v)| v);
    let deb = out.join(format!("{name}_{version}_{}.deb", installed.architecture));
    Task::plain("dpkg-deb")
        .args(["--root-owner-group", "-Znone", "--build"])
        .arg(&tree)
        .arg(&deb)
        .output()?;
    let _ = std::fs::remove_dir_all(&tree);
    Ok(deb)
}
