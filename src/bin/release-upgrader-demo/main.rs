//! `release-upgrader-demo` (also run as `release-upgrader demo`): runs [`ru_demo::run`]
//! and narrates it.

use std::path::PathBuf;

use clap::{Args, Parser};
use serde_json::json;

use ru_client::error::{Error, ExitCode};
use ru_client::ui::Ui;
use ru_demo::run::{DemoOptions, Steps};

/// The embedded demo: offline, in a temporary directory, publish two tiny releases and
/// helpers relocated from this machine's own apt and dpkg, install the old release into a
/// throwaway root with dpkg, and upgrade it with the real flow. Needs root (dpkg installs
/// into the throwaway root); touches nothing outside the directory.
#[derive(Debug, Parser)]
#[command(name = "release-upgrader-demo", version, max_term_width = 100)]
struct DemoCli {
    #[command(flatten)]
    demo: DemoArgs,
    /// Machine-readable JSON lines on stdout instead of text
    #[arg(long)]
    json: bool,
    /// Print only errors
    #[arg(short, long, action = clap::ArgAction::Count)]
    quiet: u8,
    /// Print more detail (twice for debugging output)
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// The architecture to publish helpers for (default: this machine's)
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Work in DIR (must be empty or missing) and keep it afterwards; default: a new
    /// temporary directory, removed at the end
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the temporary directory (root, published tree, logs) to look at afterwards
    #[arg(long)]
    keep: bool,
    /// Let the upgrade ask before it starts, as a user would see it
    #[arg(long)]
    interactive: bool,
}

fn main() -> std::process::ExitCode {
    let cli = DemoCli::parse();
    let ui = Ui::new(cli.json, cli.quiet, cli.verbose);
    ui.install_logger();
    let code = match run(&cli, &ui) {
        Ok(code) => code,
        Err(err) => ui.fail(&err),
    };
    ru_client::ui::exit(code)
}

struct Narrator<'a> {
    ui: &'a Ui,
    /// When the current step started.
    started: Option<std::time::Instant>,
}

impl Narrator<'_> {
    fn finish_step(&mut self) {
        if let Some(started) = self.started.take() {
            self.ui
                .note(&format!("    ({:.1} s)", started.elapsed().as_secs_f64()));
        }
    }
}

impl Steps for Narrator<'_> {
    fn step(&mut self, number: usize, total: usize, what: &str) {
        self.finish_step();
        self.started = Some(std::time::Instant::now());
        self.ui.note(&format!("\n==> [{number}/{total}] {what}"));
        if self.ui.json {
            self.ui.data(
                "",
                json!({"event": "step", "step": number, "of": total, "what": what}),
            );
        }
    }

    fn detail(&mut self, text: &str) {
        self.ui.note(&format!("    {text}"));
    }
}

fn run(args: &DemoCli, ui: &Ui) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Config {
            path: PathBuf::from("release-upgrader demo"),
            reason: "the demo installs a throwaway root with dpkg, which needs root; run it \
                     with sudo (it writes only inside its temporary directory)"
                .into(),
        }
        .into());
    }
    // A directory the user named is theirs to keep; a temporary one goes unless --keep
    // or the upgrade failed (then it is what there is to look at).
    let temp = match &args.demo.dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("release-upgrader-demo.")
                .tempdir()
                .map_err(|e| Error::io(std::env::temp_dir(), e))?,
        ),
    };
    let dir = match (&args.demo.dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temp)) => temp.path().to_owned(),
        (None, None) => unreachable!("a temporary directory was made"),
    };
    // The client the demo upgrades with is the one installed beside this binary.
    let client = std::env::current_exe()
        .map_err(|e| Error::io("/proc/self/exe", e))?
        .with_file_name("release-upgrader");
    let options = DemoOptions {
        dir: dir.clone(),
        client,
        noninteractive: !args.demo.interactive,
        arch: args
            .arch
            .clone()
            .unwrap_or_else(ru_client::root::host_architecture),
    };
    ui.note(&format!(
        "release-upgrader demo: everything happens in {} (offline; servers on 127.0.0.1 only)",
        dir.display()
    ));
    let mut narrator = Narrator { ui, started: None };
    let result = ru_demo::run::run(&options, &mut narrator);
    narrator.finish_step();
    let keep = args.demo.keep || !matches!(&result, Ok(o) if o.upgrade_code == 0);
    let kept = |temp: Option<tempfile::TempDir>| {
        if let Some(temp) = temp
            && keep
        {
            let _ = temp.keep();
        }
        if keep || args.demo.dir.is_some() {
            ui.note(&format!(
                "kept: {} (root/, srv/, helpers/; the upgrade's logs in root/var/log/dist-upgrade/)",
                dir.display()
            ));
        }
    };
    let code = match result {
        Ok(outcome) => {
            let ok = outcome.upgrade_code == 0 && !outcome.helpers_left;
            ui.data(
                &format!(
                    "\n{} → {}: {} in {:.1} s; helpers {}",
                    outcome.before,
                    outcome.after,
                    if ok { "upgraded" } else { "upgrade FAILED" },
                    outcome.seconds,
                    if outcome.helpers_left {
                        "left in the root"
                    } else {
                        "removed"
                    },
                ),
                json!({
                    "event": "done",
                    "before": outcome.before,
                    "after": outcome.after,
                    "upgrade_exit_code": outcome.upgrade_code,
                    "helpers_left": outcome.helpers_left,
                    "seconds": outcome.seconds,
                    "root": outcome.root,
                }),
            );
            if ok {
                ExitCode::Success
            } else if outcome.upgrade_code == 6 {
                ExitCode::PartlyUpgraded
            } else {
                ExitCode::RolledBack
            }
        }
        Err(err) => {
            kept(temp);
            return Err(err.into());
        }
    };
    kept(temp);
    Ok(code)
}
