//! `release-upgrader service …`: the system-bus services (docs/protocol.md §8, §9).
//! Thin: the service lives in `ru_client::service`.

use std::time::Duration;

use clap::Subcommand;

use crate::args::GlobalArgs;
use ru_client::error::ExitCode;
use ru_client::root::SystemRoot;
use ru_client::service::{self, Ended};
use ru_client::ui::Ui;
use ru_trust::fetch::Fetcher;

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// com.canonical.SystemImage at /Service: system-image 3.x's DBus API for image
    /// devices (what com.canonical.SystemImage.service activates)
    SystemImage {
        /// Exit after this many seconds without a call or work under way (system-image's
        /// [dbus] lifetime)
        #[arg(long, value_name = "SECONDS", default_value_t = service::DEFAULT_IDLE_TIMEOUT.as_secs())]
        idle_timeout: u64,
    },
    /// org.releaseupgrader.ReleaseUpgrader1 at /org/releaseupgrader/ReleaseUpgrader1: the
    /// release upgrade for desktops (what org.releaseupgrader.ReleaseUpgrader.service
    /// activates); it runs this program's `check` and `upgrade` with the global flags it
    /// was given
    ReleaseUpgrade {
        /// Exit after this many seconds without a call or work under way
        #[arg(long, value_name = "SECONDS", default_value_t = service::DEFAULT_IDLE_TIMEOUT.as_secs())]
        idle_timeout: u64,
    },
}

impl ServiceCommand {
    /// The name for the root check of docs/protocol.md §8 (a service changes the system).
    pub fn name(&self) -> &'static str {
        match self {
            ServiceCommand::SystemImage { .. } => "service system-image",
            ServiceCommand::ReleaseUpgrade { .. } => "service release-upgrade",
        }
    }
}

pub fn run(
    command: &ServiceCommand,
    global: &GlobalArgs,
    fetcher: Fetcher,
    ui: &Ui,
) -> anyhow::Result<ExitCode> {
    let root = SystemRoot::new(&global.root);
    match command {
        ServiceCommand::SystemImage { idle_timeout } => {
            let idle = Duration::from_secs((*idle_timeout).max(1));
            let ended = service::run_system_image(&root, fetcher, idle)?;
            ui.note(match ended {
                Ended::Idle => "com.canonical.SystemImage: idle, exiting",
                Ended::Exit => "com.canonical.SystemImage: Exit() called, exiting",
            });
            Ok(ExitCode::Success)
        }
        ServiceCommand::ReleaseUpgrade { idle_timeout } => {
            let idle = Duration::from_secs((*idle_timeout).max(1));
            let program = std::env::current_exe()
                .map_err(|e| ru_client::error::Error::io("/proc/self/exe", e))?;
            // The upgrade sees the root, keyrings and meta-release the service was given;
            // its events are read, never shown.
            let mut globals = global.to_args();
            globals.retain(|a| a != "--json" && a != "-q" && a != "-v");
            globals.push("--json".into());
            let cli = service::release_upgrade::Cli { program, globals };
            let ended = service::run_release_upgrade(&root, cli, idle)?;
            ui.note(match ended {
                Ended::Idle => "org.releaseupgrader.ReleaseUpgrader: idle, exiting",
                Ended::Exit => "org.releaseupgrader.ReleaseUpgrader: exiting",
            });
            Ok(ExitCode::Success)
        }
    }
}
