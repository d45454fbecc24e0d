//! Shell completions and man pages of a binary, generated from its clap definition: the
//! same source as `--help`, so the three cannot drift apart. `completions SHELL` prints a
//! script and `manpages --out DIR` writes the man pages, for users who install by hand;
//! the Debian package's build runs both to install them (debian/rules).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory;

/// The two commands, flattened into each binary's command list.
#[derive(Debug, clap::Subcommand)]
pub enum DocsCommand {
    /// Print the completion script for SHELL on stdout, e.g. `completions bash >
    /// ~/.local/share/bash-completion/completions/<binary>` (the Debian package installs
    /// them for bash, zsh and fish)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Write the man pages, one per command, into DIR (created when missing), e.g.
    /// ~/.local/share/man/man1 (the Debian package installs them)
    Manpages {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

impl DocsCommand {
    /// Runs the command for the binary `Cli`; returns what to tell the user, if anything.
    pub fn run<Cli: CommandFactory>(&self) -> anyhow::Result<Option<String>> {
        match self {
            DocsCommand::Completions { shell } => print_completions::<Cli>(*shell).map(|()| None),
            DocsCommand::Manpages { out } => {
                let count = write_man_pages::<Cli>(out)?;
                Ok(Some(format!(
                    "{count} man pages written to {}",
                    out.display()
                )))
            }
        }
    }
}

/// Prints the completion script of `Cli`'s command for `shell` on stdout. A reader that
/// stops early (`| head`) is not an error.
fn print_completions<Cli: CommandFactory>(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    // Rendered first: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name.clone(), &mut script);
    if shell == clap_complete::Shell::Bash {
        script = fix_bash_hyphenated_name(&String::from_utf8_lossy(&script), &name).into_bytes();
    }
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the completion script to stdout")
        }
        _ => Ok(()),
    }
}

/// clap_complete's bash script (4.6.12, clap#6421) spells the state of a binary whose
/// name has a hyphen two ways: the loop over the words arrives at `release__upgrader__subcmd__check`,
/// the `case` arms expect `release__subcmd__upgrader__subcmd__check`, so nothing after the
/// subcommand ever completes. The arms are respelled the way the loop spells them.
fn fix_bash_hyphenated_name(script: &str, name: &str) -> String {
    script.replace(&name.replace('-', "__subcmd__"), &name.replace('-', "__"))
}

/// Writes one man page per command and subcommand (`NAME.1`, `NAME-SUBCOMMAND.1`, …) of
/// `Cli` into `out`, created when missing; returns how many.
fn write_man_pages<Cli: CommandFactory>(out: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let before = man_pages_in(out)?;
    clap_mangen::generate_to(Cli::command(), out)
        .with_context(|| format!("writing man pages into {}", out.display()))?;
    Ok(man_pages_in(out)? - before)
}

fn man_pages_in(dir: &Path) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
        .count())
}
