//! `release-upgrader-publish media build`: upgrade media (docs/protocol.md §2 and §8), a
//! tree and optionally its ISO image, from the release's archive and the helpers.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;

use ru_client::error::{Error, ExitCode};
use ru_client::ui::Ui;
use ru_format::date;
use ru_publish::SigningKey;
use ru_publish::definition;
use ru_publish::media::{self, ArchiveSource, Medium};
use ru_trust::fetch::{FetchConfig, Fetcher, Location};

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Build upgrade media into DIR: the release's packages from the apt archive at
    /// --archive (verified with --keyring; the --packages asked for and what they depend
    /// on, or all of them), the helper pocket at
    /// dists/<release>/main/dist-upgrader/binary-<arch>/ (helpers checked with the
    /// client's rules, as `pocket build` does), .disk/info and the dists/stable link, all
    /// signed with --key (the distribution's archive key, which clients trust). Nothing
    /// on a medium expires (no Valid-Until): clients use it months later. With --iso, also
    /// an ISO 9660 image of it (xorriso). Clients use it with `upgrade --cdrom PATH`
    Build {
        /// A pocket definition (pockets/*.toml; its valid-days is not used) and/or helper
        /// .deb files (or directories of them)
        #[arg(value_name = "DEFINITION|DEB", required = true)]
        helpers: Vec<PathBuf>,
        /// The release the medium upgrades to (dists/CODENAME/ of the archive)
        #[arg(long, value_name = "CODENAME")]
        release: String,
        /// The release's apt archive, holding dists/ and pool/ (http, https, file:// or a
        /// directory)
        #[arg(long, value_name = "URI")]
        archive: String,
        /// Debian architecture of the medium [default: the definition's]
        #[arg(long, value_name = "ARCH")]
        arch: Option<String>,
        /// Where the medium's tree is written (created; must be new or empty)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Secret signing key (from `key generate`): the distribution's archive key
        #[arg(long, value_name = "SECRET")]
        key: PathBuf,
        /// The keyring the archive's InRelease must be signed with (binary or armored;
        /// repeatable) [default: /usr/share/keyrings/debian-archive-keyring.gpg]
        #[arg(long, value_name = "FILE")]
        keyring: Vec<PathBuf>,
        /// Components of the archive to take packages from (repeatable); on the medium
        /// they are all in `main`
        #[arg(long, value_name = "NAME", default_values_t = ["main".to_owned()])]
        component: Vec<String>,
        /// Packages to put on the medium, with everything they depend on (repeatable, or
        /// comma-separated) [default: every package of the release]
        #[arg(long, value_name = "NAME", value_delimiter = ',')]
        packages: Vec<String>,
        /// `.disk/info`, the one line naming the medium
        /// [default: '<Origin> <Version> "<release>" - upgrade media <arch> (<date>)']
        #[arg(long, value_name = "TEXT")]
        info: Option<String>,
        /// The release's `Version` [default: the archive's]
        #[arg(long, value_name = "VERSION")]
        version: Option<String>,
        /// Also write an ISO 9660 image of the medium (needs xorriso)
        #[arg(long, value_name = "FILE")]
        iso: Option<PathBuf>,
        /// The image's volume identifier [default: from origin, version and arch]
        #[arg(long, value_name = "ID", requires = "iso")]
        volume_id: Option<String>,
        /// Where downloaded debs are kept between builds
        /// [default: $XDG_CACHE_HOME/release-upgrader/debs]
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
    },
}

pub fn run(command: &MediaCommand, ui: &Ui) -> anyhow::Result<ExitCode> {
    let MediaCommand::Build {
        helpers,
        release,
        archive,
        arch,
        out,
        key,
        keyring,
        component,
        packages,
        info,
        version,
        iso,
        volume_id,
        cache,
    } = command;
    // The helpers as `pocket build` takes them: one definition and/or debs.
    let (mut def, origin_of, debs) = crate::pocket::definition_and_debs(helpers)?;
    if let Some(codename) = def.codename.as_ref().filter(|c| *c != release) {
        return Err(Error::Config {
            path: PathBuf::from(&origin_of),
            reason: format!("is for {codename}, not --release {release}"),
        }
        .into());
    }
    def.codename = Some(release.clone());
    if arch.is_some() {
        def.arch.clone_from(arch);
    }
    // Media do not expire, whatever the definition says for the network.
    def.valid_days = Some(0);
    let mut all_debs = std::mem::take(&mut def.debs);
    all_debs.extend(debs.into_iter().cloned());
    let now = date::now();
    let settings = def.settle(&origin_of, now)?;
    let helper_debs = definition::expand_debs(&all_debs)?;
    if helper_debs.is_empty() {
        return Err(Error::Config {
            path: PathBuf::from(origin_of),
            reason: "no helper debs: give .deb paths or set `debs` in the definition".into(),
        }
        .into());
    }
    let key = SigningKey::load(key).context("loading the signing key")?;
    let entries = crate::pocket::check_helpers(&helper_debs, &settings.arch)?;

    let archive_keyring = crate::pocket::archive_keyring(keyring)?;
    let location = Location::parse(archive)?;
    let cache = cache
        .clone()
        .unwrap_or_else(ru_publish::helper::default_cache);
    let fetcher = Fetcher::new(FetchConfig::new(concat!(
        "release-upgrader-publish/",
        env!("CARGO_PKG_VERSION")
    )))
    .with_progress(ui.progress());
    let (source_release, archive_debs) = media::archive_debs(
        &fetcher,
        &archive_keyring,
        &ArchiveSource {
            location: &location,
            release,
            components: component,
            arch: &settings.arch,
            packages,
            cache: &cache,
        },
    )
    .with_context(|| format!("taking the packages of {release} from {location}"))?;
    let version = version.clone().or_else(|| source_release.version.clone());
    let archive_spec = media::archive_spec(Some(&source_release), release, &settings.arch, now);
    let info = info.clone().unwrap_or_else(|| {
        media::default_info(
            &archive_spec.origin,
            version.as_deref(),
            release,
            &settings.arch,
            now,
        )
    });
    let medium = Medium {
        codename: release.clone(),
        arch: settings.arch.clone(),
        version: version.clone(),
        info: info.clone(),
        archive: archive_spec.clone(),
        debs: archive_debs.clone(),
        pocket: settings.spec.clone(),
        helpers: entries.clone(),
    };
    media::write(out, &medium, &key).context("writing the medium")?;
    let volume = volume_id.clone().unwrap_or_else(|| {
        media::volume_id(&[
            &archive_spec.origin,
            version.as_deref().unwrap_or(release),
            &settings.arch,
        ])
    });
    if let Some(iso) = iso {
        media::write_iso(out, iso, &volume).context("writing the ISO image")?;
    }
    let helper_names: Vec<String> = entries
        .iter()
        .map(|e| e.file_name().unwrap_or_default())
        .collect();
    ui.data(
        &format!(
            "wrote upgrade media for {release} {} to {}{}: {} packages, {} helpers, signed by {}\n\
             {info}",
            settings.arch,
            out.display(),
            iso.as_ref()
                .map(|i| format!(" and {} (volume {volume})", i.display()))
                .unwrap_or_default(),
            archive_debs.len(),
            helper_names.len(),
            key.fingerprint()
        ),
        json!({
            "media": out,
            "iso": iso,
            "volume_id": iso.as_ref().map(|_| &volume),
            "codename": release,
            "arch": settings.arch,
            "version": version,
            "info": info,
            "packages": archive_debs.len(),
            "helpers": helper_names,
            "pocket": media::pocket_dir(release, &settings.arch),
            "signer": key.fingerprint(),
        }),
    );
    Ok(ExitCode::Success)
}
