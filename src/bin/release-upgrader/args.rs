//! The command line of the client (docs/protocol.md §8). The doc comments here are the
//! `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Upgrade this Debian or Ubuntu system to the next release with that release's own apt
/// and dpkg, fetched as signed helper packages into /usr/lib/release-upgrader.
#[derive(Debug, Parser)]
#[command(
    name = "release-upgrader",
    version,
    max_term_width = 100,
    args_override_self = true
)]
pub struct ClientCli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: ClientCommand,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Operate on the system rooted at DIR: its os-release, apt state, dpkg database,
    /// helper prefix and logs
    #[arg(long, value_name = "DIR", default_value = "/", global = true)]
    pub root: PathBuf,

    /// Trusted OpenPGP keyring (binary or armored file, or a directory of them);
    /// repeatable. Default: /etc/release-upgrader/trusted.gpg.d/* and
    /// /usr/share/keyrings/*-archive-keyring.gpg of the root
    #[arg(long, value_name = "FILE", global = true)]
    pub keyring: Vec<PathBuf>,

    /// Read the meta-release from URI (http, https, file:// or a path) instead of the
    /// one in /etc/update-manager/meta-release
    #[arg(long, value_name = "URI", global = true)]
    pub meta_release_uri: Option<String>,

    /// Upgrade to the development release (reads <uri>-development; unsupported
    /// releases qualify)
    #[arg(short = 'd', long, global = true, conflicts_with = "proposed")]
    pub devel: bool,

    /// Use the proposed release list (reads <uri>-proposed)
    #[arg(short = 'p', long, global = true)]
    pub proposed: bool,

    /// Accept a meta-release without a signature (only over a transport you trust)
    #[arg(long, global = true)]
    pub allow_unsigned_meta_release: bool,

    /// Print machine-readable JSON lines on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only errors
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// Print more detail (twice for debugging output)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Debian architecture of the system being upgraded [default: dpkg --print-architecture]
    #[arg(long, value_name = "ARCH", global = true)]
    pub arch: Option<String>,

    /// Further attempts after a failed download (connection errors, timeouts, 5xx)
    #[arg(long, value_name = "N", default_value_t = 3, global = true)]
    pub retries: u32,

    /// Seconds to wait for a connection, or for data on one, before retrying
    #[arg(long, value_name = "SECONDS", default_value_t = 60, global = true)]
    pub timeout: u64,

    /// Use no network: fetch nothing over http or https (such a fetch fails at once,
    /// exit 4), do not refresh the running release's package lists, and let apt read
    /// only the upgrade media (--cdrom). An upgrade from media whose network is down
    /// does this by itself after one failed attempt
    #[arg(long, global = true)]
    pub without_network: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Look for a newer release; exit 0 if one is available, 1 if not
    Check {
        /// Also show the new release's notes (the meta-release's ReleaseNotes)
        #[arg(long)]
        notes: bool,
        /// Also keep the login notice: write /var/lib/release-upgrader/release-upgrade-available
        /// when a new release is available, remove it when none is (the update-motd.d
        /// script prints it; release-upgrader-check.timer runs this daily)
        #[arg(long)]
        motd: bool,
    },

    /// Verify a clearsigned FILE, or FILE against a detached SIGFILE, with the trusted
    /// keyrings; exit 0 if good, 3 if not
    Verify {
        /// The signed file
        file: PathBuf,
        /// A detached signature over FILE
        sigfile: Option<PathBuf>,
    },

    /// Fetch, verify and install the helpers for the next release into
    /// /usr/lib/release-upgrader, then re-execute with them and show what they report
    Bootstrap {
        /// Print the resolved helper set (name, version, size) and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Install only; do not re-execute with the helpers afterwards
        #[arg(long)]
        no_reexec: bool,
        /// Take the release and its helpers from upgrade media at PATH (no meta-release,
        /// no network)
        #[arg(long, value_name = "PATH")]
        cdrom: Option<PathBuf>,
    },

    /// List the installed helpers and the versions their apt-get and dpkg report
    Helpers,

    /// Upgrade the system to the next release: check it, install the helpers, point the
    /// sources at the new release, and upgrade with the new release's apt and dpkg
    Upgrade(UpgradeArgs),

    /// Find upgrade media (mounted, or at the given paths)
    #[command(subcommand)]
    Cdrom(CdromCommand),

    /// Image-delta mode for read-only devices (system-image compatible)
    #[command(subcommand)]
    Image(crate::image::ImageCommand),

    /// Tell the desktop user that a new release is available: ask the system service to
    /// check and post a desktop notification with "Upgrade…" and "Not now"; run as the
    /// user in the desktop session (the user's timer and autostart entry do); exit 0 when
    /// a release was announced, 1 when there was nothing to announce
    Notify(NotifyArgs),

    /// Run a system-bus service (DBus activation starts it, as root)
    #[command(subcommand)]
    Service(crate::service::ServiceCommand),

    /// Remove every installed helper (exactly what their manifests list)
    Cleanup {
        /// Also forget the pocket dates seen and the meta-release cache
        #[arg(long)]
        purge_state: bool,
    },

    #[command(flatten)]
    Docs(crate::clidocs::DocsCommand),

    /// The embedded demo: offline, in a temporary directory, publish two tiny releases
    /// and helpers relocated from this machine's own apt and dpkg, install the old release
    /// into a throwaway root with dpkg, and upgrade it with the real flow. Needs root
    /// (dpkg installs into the throwaway root); touches nothing outside the directory
    #[command(disable_help_flag = true)]
    Demo {
        /// The demo's own flags (`release-upgrader demo --help` lists them)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
}

/// `notify`'s options (docs/protocol.md §8).
#[derive(Debug, Clone, clap::Args)]
pub struct NotifyArgs {
    /// Seconds to wait for the system service's answer (its check reads the release list
    /// and the helper pocket over the network)
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub check_timeout: u64,
    /// Seconds the notification waits for an answer before it is withdrawn
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub wait: u64,
    /// The program "Upgrade…" starts (looked up on PATH)
    #[arg(
        long,
        value_name = "PROGRAM",
        env = "RELEASE_UPGRADER_GTK",
        default_value = ru_client::notify::LAUNCHER
    )]
    pub launcher: std::ffi::OsString,
}

#[derive(Debug, Subcommand)]
pub enum CdromCommand {
    /// Print what the upgrade media offer; exit 0 if any were found, 1 if not
    Detect {
        /// Where to look (default: mounted filesystems, /media, /run/media)
        paths: Vec<PathBuf>,
    },
}

/// How questions are asked during the upgrade (`-f`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendArg {
    /// Ask on the terminal (also do-release-upgrade's DistUpgradeViewText).
    Text,
    /// Ask nothing; keep the old configuration files (also DistUpgradeViewNonInteractive).
    Noninteractive,
    /// A program asks (with `--json`): dpkg's and debconf's questions are `question`
    /// events, each answered by one line on stdin (what the DBus service uses).
    Json,
    /// A frontend this release-upgrader does not have: a graphical one
    /// (DistUpgradeViewGtk3, …KDE) or an unknown name. As do-release-upgrade does with a
    /// view it cannot load, the text frontend runs instead, and says so.
    Unavailable(String),
}

impl FrontendArg {
    /// Reads a `-f` value (names as do-release-upgrade's, case aside).
    pub fn parse(name: &str) -> Result<Self, String> {
        let is = |a: &str| name.eq_ignore_ascii_case(a);
        Ok(if is("text") || is("DistUpgradeViewText") {
            FrontendArg::Text
        } else if is("noninteractive") || is("DistUpgradeViewNonInteractive") {
            FrontendArg::Noninteractive
        } else if is("json") {
            FrontendArg::Json
        } else if name.trim().is_empty() {
            return Err("an empty frontend name: use text, noninteractive or json".into());
        } else {
            FrontendArg::Unavailable(name.to_owned())
        })
    }

    /// The name as `-f` takes it.
    pub fn name(&self) -> &str {
        match self {
            FrontendArg::Text => "text",
            FrontendArg::Noninteractive => "noninteractive",
            FrontendArg::Json => "json",
            FrontendArg::Unavailable(name) => name,
        }
    }
}

/// do-release-upgrade's modes (docs/protocol.md §4, "Modes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Desktop metapackages are never removed, the release notes are shown first, a
    /// restart is offered at the end
    Desktop,
    /// Over ssh outside screen or tmux: warn, and offer to continue inside screen
    Server,
    /// Unattended: implies `-f noninteractive` unless a frontend is given
    Cloud,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UpgradeArgs {
    /// How to ask questions: text (default), noninteractive, or json (with --json:
    /// question events answered by lines on stdin); do-release-upgrade's DistUpgradeView…
    /// names too (a graphical one runs the text frontend, saying so)
    #[arg(short = 'f', long = "frontend", value_name = "FRONTEND", value_parser = FrontendArg::parse)]
    pub frontend: Option<FrontendArg>,
    /// Answer yes to the upgrade's own questions (start it, remove obsolete packages); dpkg
    /// and debconf then ask nothing (unless -f json): your configuration files are kept
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Keep third-party sources that use the old release's codename (moved to the new one)
    #[arg(long)]
    pub allow_third_party: bool,
    /// Check, and show what would be done, without changing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Upgrade from media at PATH (helpers and, if present, packages; works offline)
    #[arg(long, value_name = "PATH")]
    pub cdrom: Option<PathBuf>,
    /// Leave the helpers installed afterwards
    #[arg(long)]
    pub keep_helpers: bool,
    /// Only check whether a new release is available (do-release-upgrade -c)
    #[arg(short = 'c', long = "check-dist-upgrade-only")]
    pub check_only: bool,
    /// do-release-upgrade's mode: desktop, server or cloud
    #[arg(short = 'm', long = "mode", value_enum, value_name = "MODE")]
    pub mode: Option<ModeArg>,
    /// Upgrade even though updates of the running release are not installed
    #[arg(long)]
    pub allow_pending: bool,
    /// Seconds to wait for another package manager to finish
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub lock_timeout: u64,
}

impl UpgradeArgs {
    /// The flags as given, for re-executing with the same settings.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["upgrade".into()];
        if let Some(frontend) = &self.frontend {
            args.push("--frontend".into());
            args.push(frontend.name().into());
        }
        if let Some(mode) = self.mode {
            args.push("--mode".into());
            args.push(match mode {
                ModeArg::Desktop => "desktop".into(),
                ModeArg::Server => "server".into(),
                ModeArg::Cloud => "cloud".into(),
            });
        }
        for (on, flag) in [
            (self.yes, "--yes"),
            (self.allow_third_party, "--allow-third-party"),
            (self.dry_run, "--dry-run"),
            (self.keep_helpers, "--keep-helpers"),
            (self.allow_pending, "--allow-pending"),
            (self.check_only, "--check-dist-upgrade-only"),
        ] {
            if on {
                args.push(flag.into());
            }
        }
        if let Some(cdrom) = &self.cdrom {
            args.push("--cdrom".into());
            args.push(cdrom.clone().into());
        }
        args.push("--lock-timeout".into());
        args.push(self.lock_timeout.to_string().into());
        args
    }
}

impl GlobalArgs {
    /// The flags as given, for re-executing with the same settings.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["--root".into(), self.root.clone().into()];
        for keyring in &self.keyring {
            args.push("--keyring".into());
            args.push(keyring.clone().into());
        }
        if let Some(uri) = &self.meta_release_uri {
            args.push("--meta-release-uri".into());
            args.push(uri.into());
        }
        if let Some(arch) = &self.arch {
            args.push("--arch".into());
            args.push(arch.into());
        }
        for (on, flag) in [
            (self.devel, "--devel"),
            (self.proposed, "--proposed"),
            (
                self.allow_unsigned_meta_release,
                "--allow-unsigned-meta-release",
            ),
            (self.json, "--json"),
            (self.without_network, "--without-network"),
        ] {
            if on {
                args.push(flag.into());
            }
        }
        for _ in 0..self.quiet {
            args.push("-q".into());
        }
        for _ in 0..self.verbose {
            args.push("-v".into());
        }
        args.push("--retries".into());
        args.push(self.retries.to_string().into());
        args.push("--timeout".into());
        args.push(self.timeout.to_string().into());
        args
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The re-exec runs the helpers' upgrader with `to_args()`; whatever the user gave must
    /// come back the same, flag for flag.
    #[test]
    fn the_reexec_arguments_parse_back_to_what_the_user_gave() {
        let cases: &[&[&str]] = &[
            &["upgrade"],
            &[
                "--root",
                "/srv/chroot",
                "--keyring",
                "/a.gpg",
                "--keyring",
                "/b gpg",
                "--meta-release-uri",
                "file:///m",
                "-d",
                "--allow-unsigned-meta-release",
                "--json",
                "-qq",
                "--arch",
                "arm64",
                "--retries",
                "0",
                "--timeout",
                "7",
                "--without-network",
                "upgrade",
                "-f",
                "noninteractive",
                "-y",
                "--allow-third-party",
                "--dry-run",
                "--cdrom",
                "/media/cd",
                "--keep-helpers",
                "-m",
                "server",
                "--allow-pending",
                "--lock-timeout",
                "9",
            ],
            &[
                "-p",
                "-vv",
                "upgrade",
                "--frontend",
                "DistUpgradeViewText",
                "--mode",
                "cloud",
            ],
            &["upgrade", "-m", "desktop"],
        ];
        for argv in cases {
            survives_the_round_trip(argv);
        }
    }

    #[test]
    fn frontend_names_are_do_release_upgrades_and_a_missing_one_falls_back_to_text() {
        for (name, expected) in [
            ("text", FrontendArg::Text),
            ("DistUpgradeViewText", FrontendArg::Text),
            ("NONINTERACTIVE", FrontendArg::Noninteractive),
            ("DistUpgradeViewNonInteractive", FrontendArg::Noninteractive),
            (
                "DistUpgradeViewGtk3",
                FrontendArg::Unavailable("DistUpgradeViewGtk3".into()),
            ),
            ("curses", FrontendArg::Unavailable("curses".into())),
        ] {
            assert_eq!(FrontendArg::parse(name), Ok(expected.clone()), "{name}");
            assert_eq!(FrontendArg::parse(expected.name()), Ok(expected));
        }
        assert!(FrontendArg::parse(" ").is_err());
    }

    /// `release-upgrader ARGV` (an upgrade) parses to the same settings once written out
    /// again for the re-exec.
    #[track_caller]
    fn survives_the_round_trip(argv: &[&str]) {
        let given = ClientCli::try_parse_from(
            std::iter::once("release-upgrader").chain(argv.iter().copied()),
        )
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let ClientCommand::Upgrade(upgrade) = &given.command else {
            panic!("not an upgrade: {argv:?}");
        };
        let mut again: Vec<std::ffi::OsString> = vec!["release-upgrader".into()];
        again.extend(given.global.to_args());
        again.extend(upgrade.to_args());
        let back = ClientCli::try_parse_from(&again).unwrap();
        assert_eq!(
            format!("{given:?}"),
            format!("{back:?}"),
            "{argv:?} → {again:?}"
        );
    }

    /// Command lines that together set every flag of `upgrade` and every global flag,
    /// each to a value other than its default, read from the parser itself: a flag added
    /// later is in them without anyone adding it here. Flags that conflict go to
    /// separate command lines.
    fn command_lines_setting_every_flag() -> Vec<Vec<String>> {
        use clap::{Arg, ArgAction, CommandFactory};
        let mut cli = ClientCli::command();
        cli.build();
        let upgrade = cli
            .find_subcommand("upgrade")
            .expect("an upgrade command")
            .clone();
        let words = |arg: &Arg| -> Vec<String> {
            let name = match (arg.get_long(), arg.get_short()) {
                (Some(long), _) => format!("--{long}"),
                (None, Some(short)) => format!("-{short}"),
                (None, None) => panic!("{}: a positional argument of upgrade", arg.get_id()),
            };
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let value = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_owned())
                .rfind(|v| !default.contains(v))
                .unwrap_or_else(|| "7".to_owned());
            assert!(
                !default.contains(&value),
                "{}: {value} is its default",
                arg.get_id()
            );
            match arg.get_action() {
                ArgAction::SetTrue => vec![name],
                ArgAction::Count => vec![name.clone(), name],
                ArgAction::Set => vec![name, value],
                ArgAction::Append => vec![name.clone(), value.clone(), name, format!("{value} b")],
                other => panic!(
                    "{}: action {other:?}; teach this test to set such a flag",
                    arg.get_id()
                ),
            }
        };
        let conflict = |a: &Arg, b: &Arg| {
            upgrade
                .get_arg_conflicts_with(a)
                .iter()
                .chain(upgrade.get_arg_conflicts_with(b).iter())
                .any(|c| c.get_id() == a.get_id() || c.get_id() == b.get_id())
        };
        let mut lines: Vec<Vec<&Arg>> = vec![Vec::new()];
        for arg in upgrade.get_arguments().filter(|arg| {
            !matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
        }) {
            match lines
                .iter()
                .position(|line| line.iter().all(|other| !conflict(arg, other)))
            {
                Some(i) => lines[i].push(arg),
                None => lines.push(vec![arg]),
            }
        }
        lines
            .iter()
            .map(|line| {
                let (global, own): (Vec<&&Arg>, Vec<&&Arg>) =
                    line.iter().partition(|arg| arg.is_global_set());
                let mut argv: Vec<String> = global.iter().flat_map(|arg| words(arg)).collect();
                argv.push("upgrade".into());
                argv.extend(own.iter().flat_map(|arg| words(arg)));
                argv
            })
            .collect()
    }

    /// Every flag the user can give `upgrade` (its own and the global ones) reaches the
    /// re-executed upgrader, the core helper's included: parse → `to_args` → parse gives
    /// the same settings. Fails when `to_args` drops a flag, also one added later.
    #[test]
    fn every_upgrade_and_global_flag_survives_the_reexec_round_trip() {
        let lines = command_lines_setting_every_flag();
        assert!(lines.len() >= 2, "-d and -p conflict: {lines:?}");
        let all = lines.concat();
        for flag in [
            "--root",
            "--keyring",
            "--lock-timeout",
            "--keep-helpers",
            "--quiet",
        ] {
            assert!(all.iter().any(|w| w == flag), "{flag} not set: {lines:?}");
        }
        for line in &lines {
            let argv: Vec<&str> = line.iter().map(String::as_str).collect();
            survives_the_round_trip(&argv);
        }
    }
}
