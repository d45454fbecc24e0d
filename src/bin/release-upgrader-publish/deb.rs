//! `release-upgrader-publish deb`: the client's .deb checks, for the people who build
//! helpers (`check`) and a safe `dpkg-deb -x` for the publisher's own use (`extract`).

use std::path::Path;

use anyhow::Context as _;
use serde_json::json;

use crate::args::DebCommand;
use ru_client::error::{Error, ExitCode};
use ru_client::ui::Ui;
use ru_format::deb::{self, Extracted, Policy};

pub fn run(command: &DebCommand, ui: &Ui) -> anyhow::Result<ExitCode> {
    match command {
        DebCommand::Check { arch, debs } => {
            let policy = Policy::helper(arch);
            let mut code = ExitCode::Success;
            for deb in debs {
                match check(deb, &policy) {
                    Ok(extracted) => {
                        let control = &extracted.control;
                        let mut text = format!("ok {} {}", control.package, control.version);
                        if !control.maintainer_scripts.is_empty() {
                            text.push_str(&format!(
                                " (maintainer scripts declared reversible, never run: {})",
                                control.maintainer_scripts.join(", ")
                            ));
                        }
                        ui.data(
                            &text,
                            json!({
                                "deb": deb,
                                "ok": true,
                                "package": control.package,
                                "version": control.version,
                                "maintainer_scripts": control.maintainer_scripts,
                                "entries": extracted.entries.len(),
                            }),
                        );
                    }
                    Err(err) => {
                        let failed = ui.fail(&err);
                        if code == ExitCode::Success {
                            code = failed;
                        }
                    }
                }
            }
            Ok(code)
        }
        DebCommand::Extract {
            helper,
            arch,
            deb,
            dir,
        } => {
            let policy = match (helper, arch) {
                (true, Some(arch)) => Policy::helper(arch),
                _ => Policy::upstream(),
            };
            let created = match fs_err::create_dir(dir) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(Error::io(dir, e).into()),
            };
            // Refuse a directory with something in it before anything else, so that
            // the cleanup below only ever removes what the extraction wrote.
            if !created && fs_err::read_dir(dir)?.next().is_some() {
                return Err(Error::io(
                    dir,
                    std::io::Error::new(
                        std::io::ErrorKind::DirectoryNotEmpty,
                        "the destination of an extraction must be an empty directory",
                    ),
                )
                .into());
            }
            match deb::extract(deb, dir, &policy, &mut ()) {
                Ok(extracted) => {
                    if *helper {
                        report_scripts(ui, &extracted);
                    }
                    ui.detail(&format!(
                        "{} {}: {} entries extracted into {}",
                        extracted.control.package,
                        extracted.control.version,
                        extracted.entries.len(),
                        dir.display()
                    ));
                    Ok(ExitCode::Success)
                }
                Err(err) => {
                    // The extraction wrote only inside `dir`; take back what it wrote.
                    let cleanup = if created {
                        std::fs::remove_dir_all(dir)
                    } else {
                        empty(dir)
                    };
                    if let Err(e) = cleanup {
                        ui.note(&format!("warning: cannot clean up {}: {e}", dir.display()));
                    }
                    Err(err).with_context(|| format!("extracting {}", deb.display()))
                }
            }
        }
    }
}

/// Extracts `deb` into a temporary directory under the helper policy.
fn check(deb: &Path, policy: &Policy) -> anyhow::Result<Extracted> {
    let temp = tempfile::Builder::new()
        .prefix("release-upgrader-deb-check.")
        .tempdir()
        .context("creating a temporary directory")?;
    let extracted = deb::extract(deb, temp.path(), policy, &mut ())?;
    Ok(extracted)
}

fn report_scripts(ui: &Ui, extracted: &Extracted) {
    let control = &extracted.control;
    if !control.maintainer_scripts.is_empty() {
        ui.note(&format!(
            "{}: maintainer scripts not run: {}",
            control.package,
            control.maintainer_scripts.join(", ")
        ));
    }
}

/// Removes everything inside `dir`, which was empty before the extraction.
fn empty(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
