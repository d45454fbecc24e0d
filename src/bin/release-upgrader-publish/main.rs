//! `release-upgrader-publish`: the commands a distribution runs. Parses, calls the
//! publisher library and renders.

mod args;
#[path = "../../clidocs.rs"]
mod clidocs;
mod deb;
mod helper;
mod image;
mod media;
mod pocket;

use std::time::Duration;

use clap::Parser;
use serde_json::json;

use crate::args::{KeyCommand, PublishCli, PublishCommand};
use ru_client::error::{Error, ExitCode};
use ru_client::ui::{self, Ui};
use ru_publish::SigningKey;

/// Entry point of the `release-upgrader-publish` binary.
pub fn main() -> std::process::ExitCode {
    let cli = PublishCli::parse();
    let ui = Ui::new(false, cli.quiet, cli.verbose);
    ui.install_logger();
    let code = match run(&cli, &ui) {
        Ok(code) => code,
        Err(err) => ui.fail(&err),
    };
    ui::exit(code)
}

fn run(cli: &PublishCli, ui: &Ui) -> anyhow::Result<ExitCode> {
    match &cli.command {
        PublishCommand::Deb(command) => crate::deb::run(command, ui),
        PublishCommand::Pocket(command) => crate::pocket::run_pocket(command, ui),
        PublishCommand::MetaRelease(command) => crate::pocket::run_meta_release(command, ui),
        PublishCommand::Helper(command) => crate::helper::run(command, ui),
        PublishCommand::Media(command) => crate::media::run(command, ui),
        PublishCommand::Image(command) => crate::image::run(command, ui),
        PublishCommand::Docs(command) => {
            if let Some(said) = command.run::<PublishCli>()? {
                ui.note(&said);
            }
            Ok(ExitCode::Success)
        }
        PublishCommand::Key(KeyCommand::Generate {
            out,
            uid,
            valid_days,
            force,
        }) => {
            let secret = out.join("secret.asc");
            if secret.exists() && !force {
                return Err(Error::Config {
                    path: secret,
                    reason: "a key is already there (pass --force to replace it)".into(),
                }
                .into());
            }
            let valid_for = valid_days.map(|d| Duration::from_secs(d * 86_400));
            let key = SigningKey::generate(uid, valid_for)?;
            if *force {
                key.replace_in(out)?;
            } else {
                key.write_to(out)?;
            }
            ui.data(
                &format!(
                    "{}\nsecret key: {}\npublic keyring: {}",
                    key.fingerprint(),
                    secret.display(),
                    out.join("keyring.gpg").display()
                ),
                json!({"fingerprint": key.fingerprint()}),
            );
            Ok(ExitCode::Success)
        }
    }
}
