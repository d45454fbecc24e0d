//! `release-upgrader-publish image …`: build full images, keyrings and deltas, and publish
//! a signed system-image server tree (docs/protocol.md §5, §8).

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use ru_client::error::{Error, ExitCode};
use ru_client::ui::Ui;
use ru_publish::SigningKey;
use ru_publish::image::build::{self, ChannelIni, Input};
use ru_publish::image::delta::{self, DeltaKind, DeltaOptions};
use ru_publish::image::keyring::{self, KeyringType};
use ru_publish::image::server::{self, PublishSpec};

/// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// A full image tarball (.tar.xz, every path under system/) from a root directory
    /// or a rootfs tarball, and optionally the version-N.tar.xz of a build
    Build {
        /// Root directory to pack (symlinks are recorded, never followed)
        #[arg(
            long,
            value_name = "DIR",
            conflicts_with = "tarball",
            required_unless_present = "tarball"
        )]
        root: Option<PathBuf>,
        /// Rootfs tarball to repack (xz, zstd, gzip or plain; any order)
        #[arg(long, value_name = "FILE")]
        tarball: Option<PathBuf>,
        /// Output directory
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Name of the image file (DIR/NAME.tar.xz)
        #[arg(long, default_value = "rootfs")]
        name: String,
        /// Build number: also write DIR/version-N.tar.xz (needs --channel and --device)
        #[arg(long, value_name = "N", requires_all = ["channel", "device"])]
        version: Option<u64>,
        /// Channel recorded in channel.ini
        #[arg(long)]
        channel: Option<String>,
        /// Device recorded in channel.ini
        #[arg(long)]
        device: Option<String>,
        /// Server host recorded in channel.ini (`base:`)
        #[arg(long, default_value = "system-image.invalid")]
        server: String,
        #[arg(long, default_value = "80")]
        http_port: String,
        #[arg(long, default_value = "443")]
        https_port: String,
        /// xz preset
        #[arg(long, default_value_t = 9)]
        xz_level: u32,
    },

    /// A keyring tarball (keyring.gpg + keyring.json) and its detached .asc
    Keyring {
        /// Keyring type
        #[arg(long = "type", value_enum)]
        kind: KeyringType,
        /// Key file(s) to include (public or secret, armored or binary; only public
        /// parts are written)
        #[arg(long = "key", alias = "keyring", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
        /// Secret key of the keyring above in the chain (archive-master signs itself)
        #[arg(long, value_name = "SECRET")]
        signed_by: PathBuf,
        /// Expiry: unix seconds or YYYY-MM-DD
        #[arg(long, value_name = "DATE", value_parser = keyring::parse_expiry)]
        expiry: Option<i64>,
        /// Device model the keyring is restricted to
        #[arg(long, value_name = "M")]
        model: Option<String>,
        /// Output keyring tarball (FILE.tar.xz; FILE.tar.xz.asc is written beside it)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },

    /// A delta from BASE to TARGET (full image tarballs or root directories)
    Delta {
        base: PathBuf,
        target: PathBuf,
        /// Output file
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write the zdelta type (.tar.zst, changed files as zstd --patch-from frames)
        #[arg(long)]
        zdelta: bool,
        /// In a zdelta, ship changed .gz files whole instead of patching their content or
        /// deflate tokens (which the device then compresses again: smaller, more CPU)
        #[arg(long, requires = "zdelta")]
        no_regzip: bool,
        #[arg(long, default_value_t = 9)]
        xz_level: u32,
        #[arg(long, default_value_t = 19)]
        zstd_level: i32,
    },

    /// The plain delta tar a zdelta stands for, its patches resolved (and checked)
    /// against the base tree DIR (holding system/): for checking zdeltas, and for
    /// applying one with tar
    Expand {
        zdelta: PathBuf,
        /// Base tree the zdelta applies to; only read, and it must not change while
        /// this runs (a patch's base may be a path the zdelta removes or replaces)
        #[arg(long, value_name = "DIR")]
        base: PathBuf,
        /// Output tar (uncompressed); `-` for stdout
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },

    /// Add a build to a signed server tree: pool files, deltas, index.json, channels.json
    Publish {
        /// Full image of the build (from `image build`)
        image: PathBuf,
        /// Server tree
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// image-signing secret key: signs every file
        #[arg(long, value_name = "SECRET")]
        key: PathBuf,
        /// device-signing secret key for index.json (default: --key)
        #[arg(long, value_name = "SECRET")]
        index_key: Option<PathBuf>,
        #[arg(long)]
        channel: String,
        #[arg(long)]
        device: String,
        /// Build number
        #[arg(long, value_name = "N")]
        version: u64,
        /// Pool name of the image file
        #[arg(long, default_value = "rootfs")]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Extra version_detail entries (`ubuntu=20240101,...`); `version=N` is added
        #[arg(long)]
        version_detail: Option<String>,
        /// The build needs a reboot to apply
        #[arg(long)]
        bootme: bool,
        /// Oldest build that may take the full image
        #[arg(long, value_name = "N")]
        minversion: Option<u64>,
        #[arg(long, value_name = "P", value_parser = clap::value_parser!(u8).range(0..=100))]
        phased_percentage: Option<u8>,
        /// Write a delta from build N (repeatable; default: the newest published build)
        #[arg(long = "delta-from", value_name = "N")]
        delta_from: Vec<u64>,
        /// Write no delta
        #[arg(long, conflicts_with = "delta_from")]
        no_delta: bool,
        /// Also write a zdelta beside every delta (published only when smaller than it)
        #[arg(long)]
        zdelta: bool,
        /// In zdeltas, ship changed .gz files whole instead of patching their content or
        /// deflate tokens
        #[arg(long, requires = "zdelta")]
        no_regzip: bool,
        /// Full builds to keep (older ones and their deltas are expired)
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Server host recorded in channel.ini
        #[arg(long, default_value = "system-image.invalid")]
        server: String,
        #[arg(long, default_value = "80")]
        http_port: String,
        #[arg(long, default_value = "443")]
        https_port: String,
        /// Directory holding {archive-master,image-master,image-signing,blacklist}.tar.xz
        /// and their .asc, copied into gpg/
        #[arg(long, value_name = "DIR")]
        keyrings: Option<PathBuf>,
        /// device-signing keyring tarball (its .asc beside it) for this channel/device
        #[arg(long, value_name = "FILE")]
        device_keyring: Option<PathBuf>,
        /// Mark the channel hidden
        #[arg(long)]
        hidden: bool,
        /// The channel is an alias of this one
        #[arg(long)]
        alias: Option<String>,
        #[arg(long, default_value_t = 9)]
        xz_level: u32,
        #[arg(long, default_value_t = 19)]
        zstd_level: i32,
    },
}

pub fn run(command: &ImageCommand, ui: &Ui) -> anyhow::Result<ExitCode> {
    match command {
        ImageCommand::Build {
            root,
            tarball,
            out,
            name,
            version,
            channel,
            device,
            server,
            http_port,
            https_port,
            xz_level,
        } => {
            let input = match (root, tarball) {
                (Some(root), _) => Input::Root(root.clone()),
                (None, Some(tarball)) => Input::Tarball(tarball.clone()),
                (None, None) => unreachable!("clap requires one"),
            };
            let image = out.join(format!("{name}.tar.xz"));
            let built = build::write_image(&input, &image, *xz_level)?;
            let mut value = json!({
                "image": built.path, "entries": built.entries, "size": built.size,
            });
            let mut text = format!(
                "{}: {} entries, {} bytes",
                built.path.display(),
                built.entries,
                built.size
            );
            if let (Some(version), Some(channel), Some(device)) = (version, channel, device) {
                let path = out.join(format!("version-{version}.tar.xz"));
                build::write_version_tarball(
                    &ChannelIni {
                        base: server.clone(),
                        http_port: http_port.clone(),
                        https_port: https_port.clone(),
                        channel: channel.clone(),
                        device: device.clone(),
                        build_number: *version,
                        version_detail: Some(format!("version={version}")),
                    },
                    &path,
                )?;
                text.push_str(&format!("\n{}", path.display()));
                value["version_tarball"] = json!(path);
            }
            ui.data(&text, value);
            Ok(ExitCode::Success)
        }
        ImageCommand::Keyring {
            kind,
            keys,
            signed_by,
            expiry,
            model,
            out,
        } => {
            let signer = SigningKey::load(signed_by)?;
            let public = keyring::public_keys(keys)?;
            keyring::write_keyring(*kind, &public, *expiry, model.as_deref(), &signer, out)?;
            ui.data(
                &format!(
                    "{} ({}), signed by {}",
                    out.display(),
                    kind.as_str(),
                    signer.fingerprint()
                ),
                json!({"keyring": out, "type": kind.as_str(), "signed_by": signer.fingerprint()}),
            );
            Ok(ExitCode::Success)
        }
        ImageCommand::Delta {
            base,
            target,
            out,
            zdelta,
            no_regzip,
            xz_level,
            zstd_level,
        } => {
            let mut opts = DeltaOptions::new(if *zdelta {
                DeltaKind::Zdelta
            } else {
                DeltaKind::Delta
            });
            opts.xz_level = *xz_level;
            opts.zstd_level = *zstd_level;
            opts.regzip = !*no_regzip;
            let stats = delta::write_delta(base, target, out, &opts)?;
            ui.data(
                &format!(
                    "{}: {} removed, {} entries ({} files, {} patched, {} against another \
                     path, {} gzip files in their content, {} in their tokens, {} x86-64 \
                     files in their code conversion; {} new x86-64 files converted alone), \
                     {} bytes",
                    out.display(),
                    stats.removed,
                    stats.entries,
                    stats.files,
                    stats.patched,
                    stats.patched_elsewhere,
                    stats.regzipped,
                    stats.gzip_tokens,
                    stats.branches,
                    stats.alone,
                    stats.size
                ),
                json!({
                    "delta": out, "removed": stats.removed, "entries": stats.entries,
                    "files": stats.files, "patched": stats.patched,
                    "patched_elsewhere": stats.patched_elsewhere,
                    "regzipped": stats.regzipped, "gzip_tokens": stats.gzip_tokens,
                    "branches": stats.branches, "alone": stats.alone, "size": stats.size,
                }),
            );
            Ok(ExitCode::Success)
        }
        ImageCommand::Expand { zdelta, base, out } => {
            let stats = if out.as_os_str() == "-" {
                let stdout = std::io::stdout();
                let mut lock = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
                let stats = ru_publish::image::zdelta::expand(zdelta, base, &mut lock)?;
                std::io::Write::flush(&mut lock).map_err(|e| Error::io(out, e))?;
                stats
            } else {
                let file = ru_publish::image::output::AtomicFile::create(out)?;
                let mut file = file;
                let stats = ru_publish::image::zdelta::expand(zdelta, base, &mut file)?;
                file.commit()?;
                stats
            };
            if out.as_os_str() != "-" {
                ui.data(
                    &format!(
                        "{}: {} entries, {} patches applied",
                        out.display(),
                        stats.entries,
                        stats.patched
                    ),
                    json!({"out": out, "entries": stats.entries, "patched": stats.patched}),
                );
            }
            Ok(ExitCode::Success)
        }
        ImageCommand::Publish {
            image,
            out,
            key,
            index_key,
            channel,
            device,
            version,
            name,
            description,
            version_detail,
            bootme,
            minversion,
            phased_percentage,
            delta_from,
            no_delta,
            zdelta,
            no_regzip,
            keep,
            server,
            http_port,
            https_port,
            keyrings,
            device_keyring,
            hidden,
            alias,
            xz_level,
            zstd_level,
        } => {
            for (what, value) in [
                ("--channel", channel),
                ("--device", device),
                ("--name", name),
            ] {
                if value.is_empty() || value.contains('/') || value.starts_with('.') {
                    return Err(Error::Config {
                        path: PathBuf::from(what),
                        reason: format!("{value:?} is not a plain name"),
                    }
                    .into());
                }
            }
            let signing = SigningKey::load(key)?;
            let index_signing = index_key.as_deref().map(SigningKey::load).transpose()?;
            let mut delta_options = DeltaOptions::new(DeltaKind::Delta);
            delta_options.xz_level = *xz_level;
            delta_options.zstd_level = *zstd_level;
            delta_options.regzip = !*no_regzip;
            let spec = PublishSpec {
                out: out.clone(),
                channel: channel.clone(),
                device: device.clone(),
                version: *version,
                image: image.clone(),
                name: name.clone(),
                description: description.clone(),
                version_detail: version_detail.clone(),
                bootme: *bootme,
                minversion: *minversion,
                phased_percentage: *phased_percentage,
                delta_from: if *no_delta {
                    Some(Vec::new())
                } else if delta_from.is_empty() {
                    None
                } else {
                    Some(delta_from.clone())
                },
                zdelta: *zdelta,
                keep: *keep,
                server_base: server.clone(),
                http_port: http_port.clone(),
                https_port: https_port.clone(),
                keyrings: keyrings.clone(),
                device_keyring: device_keyring.clone(),
                hidden: *hidden,
                alias: alias.clone(),
                delta_options,
            };
            let done = server::publish(&spec, &signing, index_signing.as_ref())?;
            let describe = |(kind, base, version): &(String, Option<u64>, u64)| match base {
                Some(base) => format!("{kind} {base} -> {version}"),
                None => format!("{kind} {version}"),
            };
            let added: Vec<String> = done.added.iter().map(describe).collect();
            let expired: Vec<String> = done.expired.iter().map(describe).collect();
            let mut text = format!("{}: added {}", done.index.display(), added.join(", "));
            if !expired.is_empty() {
                text.push_str(&format!("; expired {}", expired.join(", ")));
            }
            for skipped in &done.skipped {
                text.push_str(&format!("; skipped {skipped}"));
            }
            ui.data(
                &text,
                json!({
                    "index": done.index, "added": added, "expired": expired,
                    "removed_files": done.removed_files, "skipped": done.skipped,
                }),
            );
            Ok(ExitCode::Success)
        }
    }
}
