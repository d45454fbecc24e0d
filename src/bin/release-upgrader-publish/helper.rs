//! `release-upgrader-publish helper build`: relocatable helper debs from the target
//! release's real packages (docs/protocol.md §3 and §8).

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use ru_client::error::ExitCode;
use ru_client::ui::Ui;
use ru_publish::helper::{self, BuildRequest, DebCompression, recipe::Recipe};
use ru_trust::fetch::{FetchConfig, Fetcher, Location};

#[derive(Debug, Subcommand)]
pub enum HelperCommand {
    /// Build the helper debs of RECIPE (helpers/*.toml) from the packages of release
    /// CODENAME in the apt archive at URI: verify its InRelease with the keyring, resolve
    /// and download the packages (SHA256-checked, cached), compute the library closure
    /// from the ELF files, lay out usr/lib/release-upgrader/ with loader wrappers, and
    /// write reproducible debs into DIR (SOURCE_DATE_EPOCH is honoured). With --core, also
    /// packages that release-upgrader binary (built for the target release) as
    /// release-upgrader-core, run by the same loader wrapper, so that clients upgrading to
    /// the release run its upgrader. Prints each deb written; exit 3 when a signature or
    /// hash does not verify
    Build {
        /// The recipe (TOML)
        recipe: PathBuf,
        /// The target release (dists/CODENAME/ of the archive)
        #[arg(long, value_name = "CODENAME")]
        release: String,
        /// The archive root holding dists/ and pool/ (http, https, file:// or a path)
        #[arg(long, value_name = "URI")]
        archive: String,
        /// Debian architecture of the helpers
        #[arg(long, value_name = "ARCH")]
        arch: String,
        /// Where the debs are written
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The keyring the archive's InRelease must be signed with (binary or armored;
        /// repeatable) [default: /usr/share/keyrings/debian-archive-keyring.gpg]
        #[arg(long, value_name = "FILE")]
        keyring: Vec<PathBuf>,
        /// Where upstream debs are kept between builds
        /// [default: $XDG_CACHE_HOME/release-upgrader/debs]
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Compression of the debs' members: zstd (decodes several times faster than xz,
        /// which every client does on every upgrade; dpkg reads it since Debian 12 and
        /// Ubuntu 21.10), xz (smallest, what Debian's own packages use), gzip, none
        #[arg(long, value_name = "NAME", default_value = "zstd", value_parser = ["zstd", "xz", "gzip", "none"])]
        compression: String,
        /// Compression level [default: zstd 19, xz 6, gzip 9]
        #[arg(long, value_name = "N")]
        level: Option<i32>,
        /// Also build release-upgrader-core from this release-upgrader binary (built for
        /// the target release); it depends on the recipe's runtime helper for its loader
        /// and C library
        #[arg(long, value_name = "FILE")]
        core: Option<PathBuf>,
        /// The core helper's package version [default: what the binary prints for
        /// --version, run through the target's loader]; clients use the core only when
        /// it is newer than themselves
        #[arg(long, value_name = "VERSION", requires = "core")]
        core_version: Option<String>,
        /// Machine-readable JSON lines on stdout
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: &HelperCommand, ui: &Ui) -> anyhow::Result<ExitCode> {
    match command {
        HelperCommand::Build {
            recipe,
            release,
            archive,
            arch,
            out,
            keyring,
            cache,
            compression,
            level,
            core,
            core_version,
            json,
        } => {
            let compression = DebCompression::parse(compression, *level)?;
            let ui = Ui { json: *json, ..*ui };
            let recipe_text = Recipe::load(recipe)?;
            let keyring = crate::pocket::archive_keyring(keyring)?;
            let source_date_epoch = ru_publish::epoch::from_env()?;
            let location = Location::parse(archive)?;
            let cache = cache.clone().unwrap_or_else(helper::default_cache);
            let fetcher = Fetcher::new(FetchConfig::new(concat!(
                "release-upgrader-publish/",
                env!("CARGO_PKG_VERSION")
            )))
            .with_progress(ui.progress());
            let started = std::time::Instant::now();
            let built = helper::build(
                &fetcher,
                &BuildRequest {
                    recipe: &recipe_text,
                    release,
                    archive: &location,
                    arch,
                    out,
                    keyring: &keyring,
                    cache: &cache,
                    source_date_epoch,
                    compression,
                    core: core.as_deref().map(|binary| helper::CoreRequest {
                        binary,
                        version: core_version.as_deref(),
                    }),
                },
            )?;
            for deb in &built {
                ui.data(
                    &format!(
                        "{} {} {} ({} bytes, {} files)",
                        deb.package,
                        deb.version,
                        deb.path.display(),
                        deb.size,
                        deb.entries
                    ),
                    json!({"event": "deb", "deb": deb}),
                );
            }
            ui.note(&format!(
                "{} helpers built in {:.1} s",
                built.len(),
                started.elapsed().as_secs_f64()
            ));
            Ok(ExitCode::Success)
        }
    }
}
