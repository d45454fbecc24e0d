//! `release-upgrader-publish pocket build` and `meta-release build`: what a distribution
//! runs to publish helpers. Every helper deb passes the client's own checks before it is
//! signed, so a pocket this writes is one the client accepts.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::json;

use crate::args::{MetaReleaseCommand, PocketCommand};
use ru_client::error::{Error, ExitCode};
use ru_client::ui::Ui;
use ru_format::date;
use ru_format::deb::{self, PathOwners, Policy};
use ru_publish::SigningKey;
use ru_publish::definition::{self, MetaReleaseDefinition, PocketDefinition};
use ru_publish::metarelease;
use ru_publish::pocket::{self, PocketEntry};

pub fn run_pocket(command: &PocketCommand, ui: &Ui) -> anyhow::Result<ExitCode> {
    let PocketCommand::Build {
        inputs,
        out,
        key,
        codename,
        arch,
        valid_days,
        origin,
        label,
        suite,
        keep,
    } = command;
    let (mut def, origin_of, mut debs) = definition_and_debs(inputs)?;
    let set = |slot: &mut Option<String>, value: &Option<String>| {
        if value.is_some() {
            slot.clone_from(value);
        }
    };
    set(&mut def.codename, codename);
    set(&mut def.arch, arch);
    set(&mut def.origin, origin);
    set(&mut def.label, label);
    set(&mut def.suite, suite);
    if valid_days.is_some() {
        def.valid_days = *valid_days;
    }
    let from_definition = std::mem::take(&mut def.debs);
    let mut all_debs = from_definition;
    all_debs.extend(debs.drain(..).cloned());
    let settings = def.settle(&origin_of, date::now())?;
    let debs = definition::expand_debs(&all_debs)?;
    if debs.is_empty() {
        return Err(Error::Config {
            path: PathBuf::from(origin_of),
            reason: "no helper debs: give .deb paths or set `debs` in the definition".into(),
        }
        .into());
    }
    // Loaded before the debs are checked, so a bad key fails fast.
    let key = SigningKey::load(key).with_context(|| "loading the signing key".to_owned())?;

    if settings.spec.valid_until.is_none() {
        ui.note(
            "note: valid-days 0: the pocket carries no Valid-Until, which suits media only \
             (clients refuse a network pocket without it; see `media build`)",
        );
    }
    let entries = check_helpers(&debs, &settings.arch)?;
    let written = pocket::publish(out, &settings.arch, &settings.spec, &entries, &key, *keep)
        .context("writing the pocket")?;
    let current = pocket::arch_dir(out, &settings.arch).join("current");
    for entry in &entries {
        let name = entry.file_name()?;
        ui.detail(&format!("  {name}"));
    }
    ui.data(
        &format!(
            "published {} helpers for {} {} in {} (signed by {})",
            entries.len(),
            settings.spec.codename,
            settings.arch,
            current.display(),
            key.fingerprint()
        ),
        json!({
            "pocket": current,
            "version_dir": written,
            "codename": settings.spec.codename,
            "arch": settings.arch,
            "packages": entries.iter().map(|e| e.file_name().unwrap_or_default()).collect::<Vec<_>>(),
            "valid_until": settings.spec.valid_until.map(date::format),
            "signer": key.fingerprint(),
        }),
    );
    Ok(ExitCode::Success)
}

/// A definition is a TOML file; anything else is taken for a deb (or a directory of
/// them) and checked as one.
pub(crate) fn is_definition(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "toml")
}

/// Extracts every helper into one scratch tree with the client's rules, so a deb the
/// client would refuse (wrong name or architecture, a path outside the prefix, two
/// helpers shipping one path…) is refused here, naming it.
/// The helpers as `pocket build` and `media build` take them: at most one pocket
/// definition (else the defaults) and debs. Returns the definition, what to name as its
/// origin in messages, and the debs.
pub(crate) fn definition_and_debs(
    inputs: &[PathBuf],
) -> anyhow::Result<(PocketDefinition, String, Vec<&PathBuf>)> {
    let (definitions, debs): (Vec<&PathBuf>, Vec<&PathBuf>) =
        inputs.iter().partition(|path| is_definition(path));
    if definitions.len() > 1 {
        return Err(Error::Config {
            path: definitions[1].clone(),
            reason: "only one pocket definition can be given".into(),
        }
        .into());
    }
    let def = match definitions.first() {
        Some(path) => PocketDefinition::load(path)?,
        None => PocketDefinition::default(),
    };
    let origin = definitions
        .first()
        .map_or("the command line".to_owned(), |p| p.display().to_string());
    Ok((def, origin, debs))
}

/// The archive keyring for `--keyring` files (Debian's when none is given), every file
/// required to exist.
pub(crate) fn archive_keyring(files: &[PathBuf]) -> anyhow::Result<ru_trust::openpgp::Keyring> {
    const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let files = if files.is_empty() {
        vec![PathBuf::from(DEFAULT_KEYRING)]
    } else {
        files.to_vec()
    };
    if let Some(missing) = files.iter().find(|p| !p.exists()) {
        return Err(Error::Keyring {
            path: missing.clone(),
            reason: "no such file".into(),
        }
        .into());
    }
    Ok(ru_trust::openpgp::Keyring::load(&files)?)
}

pub(crate) fn check_helpers(debs: &[PathBuf], arch: &str) -> anyhow::Result<Vec<PocketEntry>> {
    let policy = Policy::helper(arch);
    let scratch = tempfile::Builder::new()
        .prefix("release-upgrader-pocket.")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut owners = PathOwners::new();
    let mut entries: Vec<PocketEntry> = Vec::new();
    for deb in debs {
        let control =
            deb::read_control(deb).with_context(|| format!("checking {}", deb.display()))?;
        if let Some(other) = entries.iter().find(|e| {
            e.fields
                .iter()
                .any(|(k, v)| k == "Package" && *v == control.package)
        }) {
            return Err(Error::BadPackage {
                deb: deb.display().to_string(),
                reason: format!(
                    "{} is given twice (also {}); a pocket carries one version of each helper",
                    control.package,
                    other.file.display()
                ),
            }
            .into());
        }
        let extracted = deb::extract_into(deb, scratch.path(), &policy, &mut owners)
            .with_context(|| format!("checking {}", deb.display()))?;
        entries.push(PocketEntry {
            fields: extracted.control.fields,
            file: deb.clone(),
        });
    }
    Ok(entries)
}

pub fn run_meta_release(command: &MetaReleaseCommand, ui: &Ui) -> anyhow::Result<ExitCode> {
    let MetaReleaseCommand::Build {
        definition,
        out,
        key,
        base_uri,
    } = command;
    let def = MetaReleaseDefinition::load(definition)?;
    let stanzas = def.stanzas(definition, base_uri.as_deref())?;
    let key = SigningKey::load(key).context("loading the signing key")?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let text = metarelease::render(&stanzas);
    metarelease::write(out, &text, &key).context("writing the meta-release")?;
    let dists: Vec<&str> = def.releases.iter().map(|r| r.dist.as_str()).collect();
    ui.data(
        &format!(
            "wrote {} ({} releases: {}) and {}.gpg, signed by {}",
            out.display(),
            dists.len(),
            dists.join(", "),
            out.display(),
            key.fingerprint()
        ),
        json!({
            "meta_release": out,
            "releases": dists,
            "signer": key.fingerprint(),
        }),
    );
    Ok(ExitCode::Success)
}
