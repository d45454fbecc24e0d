//! `release-upgrader image …`: image-delta mode on the command line (docs/protocol.md §5, §6,
//! §8). Thin: arguments in, library calls, results out as text or JSON lines.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::args::GlobalArgs;
use ru_client::error::{Error, ExitCode};
use ru_client::image::apply::{self, Recovered, Step, Target};
use ru_client::image::client::{Checked, Client, Options};
use ru_client::image::{Layout, archive, mode, optout};
use ru_client::reboot;
use ru_client::root::SystemRoot;
use ru_client::ui::Ui;
use ru_trust::fetch::Fetcher;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Show the device's image configuration, build, channel and update mode
    Info,
    /// List the server's channels (hidden ones with --all)
    Channels {
        #[command(flatten)]
        server: ServerArgs,
        /// Also list hidden channels
        #[arg(long)]
        all: bool,
    },
    /// Look for a newer image; exit 0 if there is one, 1 if not
    Check {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Download and verify the files of the chosen update path
    Download {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Check, download, verify and apply the update, then switch to it atomically
    Apply {
        #[command(flatten)]
        server: ServerArgs,
        /// One slot of an A/B pair (with --slot-b): apply into the inactive one. Slots
        /// and the link are paths on the device, under --root
        #[arg(long, value_name = "DIR", requires = "slot_b")]
        slot_a: Option<PathBuf>,
        /// The other slot of an A/B pair
        #[arg(long, value_name = "DIR", requires = "slot_a")]
        slot_b: Option<PathBuf>,
        /// The symlink naming the active slot [default: /var/lib/release-upgrader/image/active]
        #[arg(long, value_name = "PATH")]
        active: Option<PathBuf>,
        /// Write system-image's ubuntu_command, with the files it names, into the
        /// configured [updater] cache_partition (default <root>/cache/recovery) for the
        /// recovery to apply, instead of applying
        #[arg(long)]
        recovery: bool,
        #[command(flatten)]
        reboot: RebootArgs,
    },
    /// Finish or undo an interrupted apply, opt-out or opt-in (one staged for the next
    /// boot once the root is writable), and say which
    Recover,
    /// Switch this device from image updates to apt: sources for its release, verified
    /// on the mirror before anything is written, and the flag for a writable root. On a
    /// read-only root the switch is staged and finished after the next boot
    OptOut {
        /// The release's archive [default: RELEASE_UPGRADER_MIRROR]
        #[arg(long, value_name = "URI", env = "RELEASE_UPGRADER_MIRROR")]
        mirror: String,
        /// The archive holding <codename>-security [default: the mirror if it has it,
        /// else the mirror's path with -security appended (…/debian-security beside
        /// …/debian)]
        #[arg(long, value_name = "URI", env = "RELEASE_UPGRADER_SECURITY_MIRROR")]
        security_mirror: Option<String>,
        /// The archive keyring on the device (under --root) that the mirror's Release
        /// files are checked with and the sources name in signed-by [default:
        /// /usr/share/keyrings/<ID>-archive-keyring.gpg, ID from os-release]
        #[arg(long, value_name = "PATH")]
        archive_keyring: Option<String>,
        /// The flag file the initramfs reads to mount the root read-write
        #[arg(long, value_name = "PATH", default_value = optout::WRITABLE_FLAG)]
        writable_flag: String,
    },
    /// Switch this device back to image updates (undo opt-out, or cancel one staged for
    /// the next boot)
    OptIn,
    /// The settings of the system-image DBus API (min_battery, auto_download, …), kept in
    /// /var/lib/release-upgrader/image/settings.json
    #[command(subcommand)]
    Settings(SettingsCommand),
}

/// `image settings`: system-image-cli's --get, --set, --del and --show-settings.
#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Print the value of each KEY (its default when unset: auto_download 1, else empty)
    Get {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Set KEY=VALUE pairs; min_battery must be 0-100 and auto_download 0, 1 or 2, as
    /// the DBus API requires (a bad value is refused and nothing is written)
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Forget each KEY (it reads as its default again)
    Del {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Print every stored setting as key=value (keys starting with _ are not shown)
    Show,
}

/// What happens after a successful apply: the device runs the new build only after a
/// reboot (into the recovery for `--recovery`).
#[derive(Debug, Clone, Default, Args)]
pub struct RebootArgs {
    /// Stay up after applying; the new build starts at the next boot
    #[arg(long, conflicts_with = "reboot")]
    pub no_reboot: bool,
    /// Reboot this machine even though --root is not / (the root applied to is the one
    /// it boots)
    #[arg(long)]
    pub reboot: bool,
    /// Reboot without asking
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Image server base URL (default: from [service] of the system-image config)
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Channel to follow instead of the configured one
    #[arg(long)]
    pub channel: Option<String>,
    /// Device name instead of the configured one
    #[arg(long)]
    pub device: Option<String>,
    /// Current build number instead of the configured one
    #[arg(long, value_name = "N")]
    pub build: Option<u64>,
    /// Refuse an index.json generated more than DAYS ago; 0: no limit. Default: the
    /// device's [service] max_age, else no limit (real servers rewrite index.json only
    /// when it changes, so its age alone says nothing)
    #[arg(long, value_name = "DAYS")]
    pub max_age: Option<u64>,
    /// Ignore zdelta (zstd binary delta) images
    #[arg(long)]
    pub no_zdelta: bool,
    /// Use this phased-update percentage instead of the device's own (0-100)
    #[arg(long, value_name = "N")]
    pub phased_percentage: Option<i64>,
}

impl ImageCommand {
    /// The command's name when it changes the system (the image cache, the tree, the
    /// opt-out state), for the root check of docs/protocol.md §8; `None` when it only
    /// reads.
    pub fn writes(&self) -> Option<&'static str> {
        match self {
            ImageCommand::Info | ImageCommand::Channels { .. } | ImageCommand::Check { .. } => None,
            ImageCommand::Download { .. } => Some("image download"),
            ImageCommand::Apply { .. } => Some("image apply"),
            ImageCommand::Recover => Some("image recover"),
            ImageCommand::OptOut { .. } => Some("image opt-out"),
            ImageCommand::OptIn => Some("image opt-in"),
            ImageCommand::Settings(SettingsCommand::Set { .. }) => Some("image settings set"),
            ImageCommand::Settings(SettingsCommand::Del { .. }) => Some("image settings del"),
            ImageCommand::Settings(_) => None,
        }
    }
}

impl ServerArgs {
    fn options(&self) -> Options {
        Options {
            server: self.server.clone(),
            channel: self.channel.clone(),
            device: self.device.clone(),
            build: self.build,
            max_age: self.max_age.map(|days| Duration::from_secs(days * 86_400)),
            no_zdelta: self.no_zdelta,
            phased_percentage: self.phased_percentage,
        }
    }
}

/// Runs an `image` command.
pub fn run(
    command: &ImageCommand,
    global: &GlobalArgs,
    fetcher: &Fetcher,
    ui: &Ui,
) -> anyhow::Result<ExitCode> {
    let root = SystemRoot::new(&global.root);
    if matches!(
        command,
        ImageCommand::Download { .. } | ImageCommand::Apply { .. }
    ) {
        settle_opt(&root, false, ui)?;
    }
    match command {
        ImageCommand::Info => info(&root, ui),
        ImageCommand::Channels { server, all } => channels(&root, fetcher, server, *all, ui),
        ImageCommand::Check { server } => {
            let client = Client::new(&root, fetcher, server.options())?;
            let checked = client.check()?;
            Ok(report_check(&checked, ui))
        }
        ImageCommand::Download { server } => {
            let client = Client::new(&root, fetcher, server.options())?;
            let checked = client.check()?;
            if report_check(&checked, ui) != ExitCode::Success {
                return Ok(ExitCode::NoUpgrade);
            }
            let files = client.download(&checked)?;
            for f in &files {
                ui.data(
                    &format!("{} ({} bytes, verified)", f.path.display(), f.size),
                    json!({"event": "downloaded", "path": f.path, "size": f.size,
                           "sha256": f.sha256.to_hex()}),
                );
            }
            Ok(ExitCode::Success)
        }
        ImageCommand::Apply {
            server,
            slot_a,
            slot_b,
            active,
            recovery,
            reboot,
        } => {
            // Slots and the link are paths on the device, resolved under the root.
            let target = match (slot_a, slot_b) {
                (Some(a), Some(b)) => {
                    Target::Slots(apply::Slots::new(&root, a, b, active.as_deref())?)
                }
                _ => Target::Root,
            };
            apply_command(&root, fetcher, server, target, *recovery, reboot, ui)
        }
        ImageCommand::Recover => {
            // The opt-out first: it does not depend on the apply's state, and one staged
            // for this boot is finished even when the apply's recovery fails.
            let opt = optout::recover(&root)?;
            let layout = Layout::new(&root);
            let outcome = match apply::recover(&layout) {
                Ok(outcome) => outcome,
                Err(failed) => {
                    if let Some(progress) = &opt {
                        ui.note(&describe_recovered(progress));
                    }
                    return Ok(failed_with_code(failed, "recovering", ui));
                }
            };
            let mut said = Vec::new();
            match outcome {
                Recovered::Nothing => {}
                Recovered::RolledBack => {
                    said.push("an interrupted apply was undone; the old system is intact".into())
                }
                Recovered::RolledForward(b) => {
                    said.push(format!("an interrupted apply was finished: build {b}"))
                }
            }
            if let Some(progress) = &opt {
                said.push(describe_recovered(progress));
            }
            let text = if said.is_empty() {
                "nothing to recover".to_owned()
            } else {
                said.join("\n")
            };
            ui.data(
                &text,
                json!({"event": "recover", "apply": format!("{outcome:?}"), "opt": opt}),
            );
            Ok(ExitCode::Success)
        }
        ImageCommand::OptOut {
            mirror,
            security_mirror,
            archive_keyring,
            writable_flag,
        } => opt_out(
            &root,
            global,
            fetcher,
            &OptOutArgs {
                mirror,
                security_mirror: security_mirror.as_deref(),
                archive_keyring: archive_keyring.as_deref(),
                writable_flag,
            },
            ui,
        ),
        ImageCommand::Settings(command) => settings(&root, command, ui),
        ImageCommand::OptIn => {
            let done = optout::opt_in(&root)?;
            let text = match &done {
                None => "not opted out; nothing to do".to_owned(),
                Some(progress) => describe_opt_in(progress),
            };
            ui.data(
                &text,
                json!({"event": "opt-in", "was": done.as_ref().map(|p| &p.record),
                       "op": done.as_ref().map(|p| p.op),
                       "waits_for_reboot": done.as_ref().is_some_and(|p| p.waits_for_reboot)}),
            );
            Ok(ExitCode::Success)
        }
    }
}

/// `image settings …`.
fn settings(root: &SystemRoot, command: &SettingsCommand, ui: &Ui) -> anyhow::Result<ExitCode> {
    use ru_client::service::settings::{self, Settings};
    match command {
        SettingsCommand::Get { keys } => {
            let stored = Settings::load(root)?;
            for key in keys {
                let value = stored.get(key);
                ui.data(
                    &value,
                    json!({"event": "setting", "key": key, "value": value}),
                );
            }
        }
        SettingsCommand::Show => {
            for (key, value) in Settings::load(root)?.visible() {
                ui.data(
                    &format!("{key}={value}"),
                    json!({"event": "setting", "key": key, "value": value}),
                );
            }
        }
        SettingsCommand::Set { pairs } => {
            // All checked before anything is written.
            let mut parsed = Vec::new();
            for pair in pairs {
                let (key, value) = pair.split_once('=').ok_or_else(|| Error::Config {
                    path: "image settings set".into(),
                    reason: format!("{pair:?} is not KEY=VALUE"),
                })?;
                settings::check(key, value).map_err(|e| Error::Config {
                    path: "image settings set".into(),
                    reason: e.to_string(),
                })?;
                parsed.push((key, value));
            }
            settings::update(root, |s| {
                for (key, value) in &parsed {
                    let _ = s.set(key, value);
                }
            })?;
        }
        SettingsCommand::Del { keys } => {
            settings::update(root, |s| {
                for key in keys {
                    s.delete(key);
                }
            })?;
        }
    }
    Ok(ExitCode::Success)
}

/// `image opt-out`'s arguments.
struct OptOutArgs<'a> {
    mirror: &'a str,
    security_mirror: Option<&'a str>,
    archive_keyring: Option<&'a str>,
    writable_flag: &'a str,
}

/// `image opt-out`: the arguments and the device checked, what is under way finished,
/// then the mirror's suites verified, and only then the switch (docs/protocol.md §6).
fn opt_out(
    root: &SystemRoot,
    global: &GlobalArgs,
    fetcher: &Fetcher,
    args: &OptOutArgs<'_>,
    ui: &Ui,
) -> anyhow::Result<ExitCode> {
    if !global.keyring.is_empty() {
        return Err(Error::Config {
            path: "--keyring".into(),
            reason: "image opt-out checks the mirror with a keyring on the device, the one \
                     its apt sources name in signed-by; pass --archive-keyring PATH instead"
                .into(),
        }
        .into());
    }
    archive::check_uri(args.mirror, "--mirror")?;
    if let Some(security) = args.security_mirror {
        archive::check_uri(security, "--security-mirror")?;
    }
    // Paths on the device: resolved under the root, `..` refused.
    let writable_flag = optout::device_path(root, args.writable_flag, "--writable-flag")?;
    let os = root.os_release()?;
    let os_release = root.path("/etc/os-release");
    let codename = os.codename.clone().ok_or_else(|| Error::Config {
        path: os_release.clone(),
        reason: "no VERSION_CODENAME, so the apt sources cannot name the release".into(),
    })?;
    archive::check_codename(&codename).map_err(|reason| Error::Config {
        path: os_release.clone(),
        reason,
    })?;
    let keyring_path = match args.archive_keyring {
        Some(path) => optout::device_path(root, path, "--archive-keyring")?,
        None => archive::default_keyring(&os.id).ok_or_else(|| Error::Config {
            path: os_release.clone(),
            reason: format!(
                "ID {:?} names no archive keyring; pass --archive-keyring PATH",
                os.id
            ),
        })?,
    };

    if let Some(progress) = optout::recover(root)? {
        if progress.op == optout::Op::OptOut && progress.waits_for_reboot {
            ui.data(
                &format!(
                    "An opt-out is already staged for the next boot (from {}): reboot to \
                     finish it, or run `release-upgrader image opt-in` to cancel it.",
                    progress.record.mirror,
                ),
                json!({"event": "opt-out", "record": progress.record, "already": true,
                       "waits_for_reboot": true}),
            );
            return Ok(ExitCode::Success);
        }
        ui.note(&describe_recovered(&progress));
    }
    if let Some(existing) = optout::record(root)? {
        ui.data(
            &format!(
                "Already opted out of image updates at build {} (apt sources in {}); \
                 nothing to do.",
                existing.build, existing.sources
            ),
            json!({"event": "opt-out", "record": existing, "already": true,
                   "waits_for_reboot": false}),
        );
        return Ok(ExitCode::Success);
    }

    let keyring = archive::load_keyring(root, &keyring_path)?;
    let request = archive::Request {
        mirror: args.mirror.to_owned(),
        security: args.security_mirror.map(str::to_owned),
        codename: codename.clone(),
        arch: global
            .arch
            .clone()
            .unwrap_or_else(ru_client::root::host_architecture),
        now: ru_format::date::now(),
    };
    let plan = archive::plan(fetcher, &keyring, &request)
        .with_context(|| format!("checking the release {codename} on {}", args.mirror))?;
    for absent in &plan.absent {
        let tried = absent.tried.join(" or ");
        if absent.suite.ends_with("-security") {
            log::warn!(
                "no {} suite at {tried}: these sources bring no security updates; pass \
                 --security-mirror URI for the archive that has it",
                absent.suite
            );
        } else {
            ui.note(&format!(
                "note: {tried} has no {} suite; it is left out",
                absent.suite
            ));
        }
    }
    let config = ru_client::image::config::Config::load(root).ok();
    let record = optout::OptOut {
        build: config.as_ref().map_or(0, |c| c.build_number),
        channel: config
            .as_ref()
            .map(|c| c.channel.clone())
            .unwrap_or_default(),
        device: config.as_ref().and_then(|c| c.device.clone()),
        writable_flag,
        sources: optout::SOURCES.into(),
        codename,
        mirror: args.mirror.to_owned(),
        keyring: Some(keyring_path),
        suites: plan.suites,
    };
    let progress = optout::opt_out(root, record)?;
    ui.data(
        &describe_opt_out(&progress),
        json!({"event": "opt-out", "record": progress.record, "already": false,
               "waits_for_reboot": progress.waits_for_reboot, "absent": plan.absent}),
    );
    Ok(ExitCode::Success)
}

/// The suites of a record, as `bookworm (main contrib) from URI`.
fn suites_of(record: &optout::OptOut) -> String {
    record
        .suites
        .iter()
        .map(|s| format!("{} ({}) from {}", s.suite, s.components.join(" "), s.uri))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an opt-out did, and what the next boot does.
fn describe_opt_out(progress: &optout::Progress) -> String {
    let r = &progress.record;
    let keyring = r.keyring.as_deref().unwrap_or("(none)");
    if progress.waits_for_reboot {
        format!(
            "The root is read-only, so the switch to apt is staged for the next boot: {flag} \
             is set (the initramfs then mounts the root read-write), and the verified apt \
             sources, {suites}, signed-by {keyring}, wait in {journal}.\n\
             Reboot now. At boot, release-upgrader-image-recover.service (or `release-upgrader \
             image recover`) writes them to {sources} and finishes the opt-out. Until then \
             this device stays on image updates; `release-upgrader image opt-in` cancels.",
            flag = r.writable_flag,
            suites = suites_of(r),
            journal = format_args!("/{}/opt-journal.json", ru_client::image::STATE_DIR),
            sources = r.sources,
        )
    } else {
        format!(
            "Opted out of image updates at build {build} (channel {channel}): apt sources \
             written to {sources}: {suites}, signed-by {keyring}.\n\
             {flag} is set, so the initramfs mounts the root read-write at every boot; \
             `release-upgrader upgrade` now uses apt. Run `apt-get update` to read the new \
             sources.",
            build = r.build,
            channel = r.channel,
            sources = r.sources,
            suites = suites_of(r),
            flag = r.writable_flag,
        )
    }
}

/// What an opt-in did, and what the next boot does.
fn describe_opt_in(progress: &optout::Progress) -> String {
    let r = &progress.record;
    match (progress.op, progress.waits_for_reboot) {
        (_, true) => format!(
            "Opting back in waits for the next boot: the root is read-only, so {sources} \
             cannot be removed yet, and {flag} stays so that the root is writable then. Reboot \
             now; at boot, release-upgrader-image-recover.service (or `release-upgrader image \
             recover`) removes both, and the boot after that is read-only, on image updates.",
            sources = r.sources,
            flag = r.writable_flag,
        ),
        (optout::Op::CancelOptOut, false) => format!(
            "Cancelled the opt-out staged for the next boot: removed {flag}; its apt sources \
             had not been written. This device stays on image updates.",
            flag = r.writable_flag,
        ),
        _ => format!(
            "Opted back in to image updates: removed {sources} and {flag}. At the next boot \
             the root is mounted read-only again, and `release-upgrader upgrade` applies images.",
            sources = r.sources,
            flag = r.writable_flag,
        ),
    }
}

/// What a recovery of an opt-out or opt-in came to.
fn describe_recovered(progress: &optout::Progress) -> String {
    let r = &progress.record;
    match (progress.op, progress.waits_for_reboot) {
        (optout::Op::OptOut, false) => format!(
            "an opt-out staged or interrupted earlier was finished: apt sources written to \
             {}; this device now upgrades with apt",
            r.sources
        ),
        (optout::Op::OptOut, true) => format!(
            "an opt-out is staged for the next boot: the root is still read-only; reboot to \
             finish it ({} is set), or run `release-upgrader image opt-in` to cancel it",
            r.writable_flag
        ),
        (optout::Op::UndoUnverifiedOptOut, false) => {
            "an opt-out interrupted under an earlier version was undone (its sources were \
             never verified); run `release-upgrader image opt-out` again to switch to apt"
                .into()
        }
        (_, false) => "an interrupted opt-in was finished: this device is on image updates \
             again"
            .into(),
        (_, true) => format!(
            "an opt-in waits for the next boot to remove {}: the root is still read-only; \
             reboot to finish it",
            r.sources
        ),
    }
}

/// Before image work (download, apply, `upgrade`): finishes an opt-out or opt-in that
/// was interrupted or staged for this boot, and refuses while one still waits for a
/// writable root, so that no image is applied over a switch half made. A dry run
/// changes nothing: it only says what is under way.
pub fn settle_opt(root: &SystemRoot, dry_run: bool, ui: &Ui) -> anyhow::Result<()> {
    if dry_run {
        if let Some((op, _)) = optout::pending(root)? {
            let what = match op {
                optout::Op::OptIn => "an opt-in",
                _ => "an opt-out",
            };
            ui.note(&format!(
                "note: {what} is under way; `release-upgrader image recover` finishes it \
                 (after a reboot when the root is read-only)"
            ));
        }
        return Ok(());
    }
    let Some(progress) = optout::recover(root)? else {
        return Ok(());
    };
    if progress.waits_for_reboot {
        return Err(Error::Config {
            path: Layout::new(root).dir().join("opt-journal.json"),
            reason: format!(
                "{}; no image work until then",
                describe_recovered(&progress)
            ),
        }
        .into());
    }
    ui.note(&describe_recovered(&progress));
    Ok(())
}

fn info(root: &SystemRoot, ui: &Ui) -> anyhow::Result<ExitCode> {
    let facts = mode::facts(root)?;
    let chosen = mode::decide(&facts);
    let config = ru_client::image::config::Config::load(root);
    let opted = optout::record(root)?;
    let pending = optout::pending(root)?;
    let pending_text = match &pending {
        Some((optout::Op::OptOut, _)) => {
            "\nan opt-out is under way (staged for the next boot if the root is read-only; \
             `image recover` finishes it)"
        }
        Some(_) => "\nan opt-in is under way (`image recover` finishes it)",
        None => "",
    };
    let pending_json = pending
        .as_ref()
        .map(|(op, record)| json!({"op": op, "record": record}));
    match &config {
        Ok(c) => ui.data(
            &format!(
                "build {}\nchannel {}\ndevice {}\nserver {}\nmode {:?} (read-only root: {}, system-image config: {}, opted out: {}){pending_text}",
                c.build_number,
                c.channel,
                c.device.as_deref().unwrap_or("(unset)"),
                c.metadata_base().unwrap_or_else(|e| e.to_string()),
                chosen,
                facts.read_only,
                facts.system_image_config,
                facts.opted_out
            ),
            json!({"event": "info", "build": c.build_number, "channel": c.channel,
                   "device": c.device, "mode": chosen, "facts": facts, "opt_out": opted,
                   "opt_pending": pending_json, "config_files": c.sources}),
        ),
        Err(e) => ui.data(
            &format!("no system-image configuration ({e})\nmode {chosen:?}{pending_text}"),
            json!({"event": "info", "mode": chosen, "facts": facts, "opt_out": opted,
                   "opt_pending": pending_json, "config_error": e.to_string()}),
        ),
    }
    Ok(ExitCode::Success)
}

fn channels(
    root: &SystemRoot,
    fetcher: &Fetcher,
    server: &ServerArgs,
    all: bool,
    ui: &Ui,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(root, fetcher, server.options())?;
    let device = client.device()?;
    let keyrings = client.keyrings(&device)?;
    let channels = client.channels(&keyrings)?;
    for (name, channel) in &channels {
        if channel.hidden && !all {
            continue;
        }
        let mut text = name.clone();
        if let Some(alias) = &channel.alias {
            text.push_str(&format!(" (alias of {alias})"));
        }
        if let Some(to) = &channel.redirect {
            text.push_str(&format!(" -> {to}"));
        }
        if channel.hidden {
            text.push_str(" [hidden]");
        }
        let devices: Vec<&String> = channel.devices.keys().collect();
        ui.data(
            &text,
            json!({"event": "channel", "name": name, "alias": channel.alias,
                   "redirect": channel.redirect, "hidden": channel.hidden,
                   "devices": devices}),
        );
    }
    Ok(ExitCode::Success)
}

fn report_check(checked: &Checked, ui: &Ui) -> ExitCode {
    let Some(target) = checked.target() else {
        ui.data(
            &format!(
                "No update: build {} is current on {} ({} candidate paths)",
                checked.build, checked.channel, checked.candidates
            ),
            json!({"event": "check", "available": false, "build": checked.build,
                   "channel": checked.channel, "candidates": checked.candidates}),
        );
        return ExitCode::NoUpgrade;
    };
    let path: Vec<serde_json::Value> = checked
        .winner
        .iter()
        .map(|&i| {
            let img = checked.image(i);
            json!({"type": img.kind, "version": img.version, "base": img.base,
                   "bootme": img.bootme, "size": img.size(),
                   "description": img.description()})
        })
        .collect();
    let steps: Vec<String> = checked
        .winner
        .iter()
        .map(|&i| {
            let img = checked.image(i);
            format!("{} {}", img.kind, img.version)
        })
        .collect();
    let size: u64 = checked
        .this_round
        .iter()
        .map(|&i| checked.image(i).size())
        .sum();
    ui.data(
        &format!(
            "Update available: build {} -> {target} on {} via {} ({} bytes)",
            checked.build,
            checked.channel,
            steps.join(", "),
            size
        ),
        json!({"event": "check", "available": true, "build": checked.build, "target": target,
               "channel": checked.channel, "device": checked.device, "path": path,
               "download_size": size, "device_percentage": checked.device_percentage}),
    );
    ExitCode::Success
}

fn apply_command(
    root: &SystemRoot,
    fetcher: &Fetcher,
    server: &ServerArgs,
    target: Target,
    recovery: bool,
    reboot: &RebootArgs,
    ui: &Ui,
) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(root);
    match apply::recover(&layout) {
        Ok(Recovered::Nothing) => {}
        Ok(Recovered::RolledBack) => ui.note("An interrupted apply was undone; starting again."),
        Ok(Recovered::RolledForward(b)) => {
            ui.note(&format!("An interrupted apply to build {b} was finished."))
        }
        Err(failed) => return Ok(failed_with_code(failed, "recovering", ui)),
    }
    // In an A/B pair the build and config are those of the active slot.
    let config_root = match &target {
        Target::Slots(slots) => {
            let (current, _) = slots.current(root, &root.tree()?)?;
            SystemRoot::new(root.dir().join(current.as_path()))
        }
        Target::Root => root.clone(),
    };
    let mut options = server.options();
    // The recovery unpacks what it is given with xzcat: a zdelta (.tar.zst) it cannot read.
    options.no_zdelta |= recovery;
    let mut client = Client::new(&config_root, fetcher, options)?;
    client.layout = layout.clone();
    let checked = client.check()?;
    if report_check(&checked, ui) != ExitCode::Success {
        return Ok(ExitCode::NoUpgrade);
    }
    let files = client
        .download(&checked)
        .context("downloading the update")?;
    let target_build = checked.target().expect("an update");
    if recovery {
        let images: Vec<_> = checked
            .this_round
            .iter()
            .map(|&i| checked.image(i))
            .collect();
        let pairs: Vec<_> = files
            .iter()
            .map(|f| (f.path.clone(), f.signature.clone()))
            .collect();
        // `[updater] cache_partition` (of the device's configuration, as system-image),
        // made confined first: a symlink on the way is refused, not written through. The
        // cache is a partition of its own on a device, so mount points are entered.
        let cache = client.config.cache_partition_dir(root)?;
        let written = apply::write_recovery(cache.path(), &layout.keyrings(), &images, &pairs)?;
        ui.data(
            &format!(
                "wrote {} for the recovery to apply build {target_build}",
                written.display()
            ),
            json!({"event": "recovery", "command_file": written, "target": target_build}),
        );
        return Ok(after_apply(
            root,
            reboot::Into::Recovery,
            &format!("the recovery to apply build {target_build}"),
            reboot,
            ui,
        ));
    }
    let steps: Vec<Step<'_>> = files
        .iter()
        .map(|f| Step {
            image: checked.image(f.image),
            path: f.path.clone(),
            size: f.size,
            sha256: f.sha256,
            name: ru_client::image::file_name(&f.server_path, "index.json").unwrap_or_default(),
        })
        .collect();
    let applied = match apply::apply(&layout, &target, &steps, target_build) {
        Ok(applied) => applied,
        Err(failed) => {
            return Ok(failed_with_code(
                failed,
                &format!("applying build {target_build}"),
                ui,
            ));
        }
    };
    for p in &applied.partitions {
        ui.note(&format!(
            "note: skipped partition image {p} (not flashed by this client)"
        ));
    }
    for m in &applied.mounts_left_alone {
        ui.note(&format!(
            "note: left /{m} alone: it is a mount point, not part of the image"
        ));
    }
    if !applied.state_kept.is_empty() {
        const SHOWN: usize = 5;
        let mut shown: Vec<String> = applied
            .state_kept
            .iter()
            .take(SHOWN)
            .map(|p| format!("/{p}"))
            .collect();
        if applied.state_kept.len() > SHOWN {
            shown.push(format!("and {} more", applied.state_kept.len() - SHOWN));
        }
        ui.note(&format!(
            "note: kept {}: the full image does not have it, and a full image never \
             removes the device's state or its users' files",
            shown.join(", ")
        ));
    }
    ui.data(
        &format!("Applied build {target_build}."),
        json!({"event": "applied", "build": target_build,
               "skipped_partitions": applied.partitions,
               "mounts_left_alone": applied.mounts_left_alone,
               "state_kept": applied.state_kept,
               "operations": applied.operations}),
    );
    Ok(after_apply(
        root,
        reboot::Into::System,
        &format!("build {target_build}"),
        reboot,
        ui,
    ))
}

/// Reboots into what was applied (`what`: "build N", or the recovery that applies it):
/// at once with `-y`, after asking on a terminal, never with `--no-reboot`. A root other
/// than `/` is not the running system, so this machine reboots for it only with
/// `--reboot`. Where nothing reboots, says what to do.
fn after_apply(
    root: &SystemRoot,
    into: reboot::Into,
    what: &str,
    args: &RebootArgs,
    ui: &Ui,
) -> ExitCode {
    use std::io::IsTerminal;
    let stay = |reason: &str, text: String| {
        ui.data(
            &text,
            json!({"event": "reboot", "requested": false, "reason": reason, "into": what}),
        );
        ExitCode::Success
    };
    if args.no_reboot {
        return stay("no-reboot", format!("Reboot to start {what}."));
    }
    if !root.is_host() && !args.reboot {
        return stay(
            "root",
            format!(
                "{} starts {what} at its next boot (this machine reboots for it only with \
                 --reboot).",
                root.dir().display()
            ),
        );
    }
    if !args.yes {
        if ui.json || !std::io::stdin().is_terminal() {
            return stay(
                "not-asked",
                format!("Reboot to start {what} (with -y, image apply reboots by itself)."),
            );
        }
        if crate::ask_terminal(&format!("Reboot now to start {what}?"), true) != Some(true) {
            return stay("declined", format!("Reboot to start {what}."));
        }
    }
    match reboot::reboot(into) {
        Ok(via) => {
            ui.data(
                &format!("Rebooting to start {what}."),
                json!({"event": "reboot", "requested": true, "via": via, "into": what}),
            );
            ExitCode::Success
        }
        Err(source) => ui.fail(&anyhow::Error::new(Error::Reboot {
            what: what.to_owned(),
            source,
        })),
    }
}

/// Reports a failed apply or recovery with its own exit code (5: rolled back, 6: left
/// for `image recover`, else the error's).
fn failed_with_code(failed: apply::Failed, doing: &str, ui: &Ui) -> ExitCode {
    let code = failed.exit_code();
    let err = match failed {
        apply::Failed::Error(e) => anyhow::Error::new(e),
        other => anyhow::Error::new(other),
    };
    ui.fail(&err.context(doing.to_owned()));
    code
}

/// `release-upgrader upgrade` on an image device: apply the next image (with
/// `--dry-run`, only say which).
pub fn upgrade(
    global: &GlobalArgs,
    dry_run: bool,
    yes: bool,
    fetcher: &Fetcher,
    ui: &Ui,
) -> anyhow::Result<ExitCode> {
    let root = SystemRoot::new(&global.root);
    ui.note("This system updates with images (system-image); applying the next image.");
    let server = ServerArgs {
        server: std::env::var("RELEASE_UPGRADER_IMAGE_SERVER").ok(),
        channel: None,
        device: None,
        build: None,
        max_age: None,
        no_zdelta: false,
        phased_percentage: None,
    };
    if dry_run {
        let client = Client::new(&root, fetcher, server.options())?;
        return Ok(report_check(&client.check()?, ui));
    }
    let reboot = RebootArgs {
        yes,
        ..RebootArgs::default()
    };
    apply_command(&root, fetcher, &server, Target::Root, false, &reboot, ui)
}
