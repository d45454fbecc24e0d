//! The command line of `release-upgrader-publish` (docs/protocol.md §8). The doc comments
//! here are the `--help` text.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Build signing keys, helper pockets, meta-release files and upgrade media for
/// release-upgrader clients.
#[derive(Debug, Parser)]
#[command(
    name = "release-upgrader-publish",
    version,
    max_term_width = 100,
    args_override_self = true
)]
pub struct PublishCli {
    /// Print only errors
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// Print more detail (twice for debugging output)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: PublishCommand,
}

#[derive(Debug, Subcommand)]
pub enum PublishCommand {
    /// Manage signing keys
    #[command(subcommand)]
    Key(KeyCommand),

    /// Check and extract .deb packages with the client's hostile-input checks
    #[command(subcommand)]
    Deb(DebCommand),

    /// Publish signed helper pockets (flat apt repositories, docs/protocol.md §2)
    #[command(subcommand)]
    Pocket(PocketCommand),

    /// Publish signed meta-release files (docs/protocol.md §1)
    #[command(subcommand, name = "meta-release")]
    MetaRelease(MetaReleaseCommand),

    /// Build relocatable release-upgrader-* helper packages from a release's packages
    #[command(subcommand)]
    Helper(crate::helper::HelperCommand),

    /// Build upgrade media (a tree and an ISO image) that upgrade offline
    /// (docs/protocol.md §2)
    #[command(subcommand)]
    Media(crate::media::MediaCommand),

    /// Build, diff, sign and publish system-image compatible images (docs/protocol.md §5)
    #[command(subcommand)]
    Image(Box<crate::image::ImageCommand>),

    #[command(flatten)]
    Docs(crate::clidocs::DocsCommand),
}

#[derive(Debug, Subcommand)]
pub enum PocketCommand {
    /// Build a signed pocket OUT/dist-upgrader-<arch>/current/ from helper debs: each deb
    /// is checked with the client's helper rules first, the pocket is written into a new
    /// dated directory and `current` is switched to it in one step. Takes a definition
    /// (pockets/*.toml), or everything on the command line: --codename, --arch,
    /// --valid-days and the .deb paths; flags override the definition
    Build {
        /// A pocket definition (.toml) and/or helper .deb files (or directories of them)
        #[arg(value_name = "DEFINITION|DEB", required = true)]
        inputs: Vec<PathBuf>,
        /// Base directory the pocket goes under (what UpgradeToolBaseURI points at)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Secret signing key (from `key generate`)
        #[arg(long, value_name = "SECRET")]
        key: PathBuf,
        /// The target release the helpers are for (Release `Codename`)
        #[arg(long, value_name = "CODENAME")]
        codename: Option<String>,
        /// Debian architecture of the pocket
        #[arg(long, value_name = "ARCH")]
        arch: Option<String>,
        /// Days until `Valid-Until` (default 14); 0 writes none, for a pocket on media
        /// only (clients refuse a network pocket without it)
        #[arg(long, value_name = "DAYS")]
        valid_days: Option<u64>,
        /// Release `Origin`
        #[arg(long)]
        origin: Option<String>,
        /// Release `Label`
        #[arg(long)]
        label: Option<String>,
        /// Release `Suite` (default: the codename)
        #[arg(long)]
        suite: Option<String>,
        /// How many published versions to keep, the new one included
        #[arg(long, value_name = "N", default_value_t = 3)]
        keep: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum MetaReleaseCommand {
    /// Build a meta-release from a definition: FILE clearsigned and FILE.gpg, a detached
    /// signature over FILE
    Build {
        /// The definition (.toml, see pockets/)
        #[arg(value_name = "DEFINITION")]
        definition: PathBuf,
        /// Where to write the meta-release
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Secret signing key (from `key generate`)
        #[arg(long, value_name = "SECRET")]
        key: PathBuf,
        /// UpgradeToolBaseURI for every release the definition gives none ("{dist}" is
        /// replaced by the codename); overrides the definition's default
        #[arg(long, value_name = "URI")]
        base_uri: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate an OpenPGP signing key: DIR/secret.asc and its public DIR/keyring.gpg
    Generate {
        /// Directory to write the key to
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// User ID of the key
        #[arg(
            long,
            value_name = "TEXT",
            default_value = "release-upgrader archive signing key"
        )]
        uid: String,
        /// Days until the key expires (default: never)
        #[arg(long, value_name = "DAYS")]
        valid_days: Option<u64>,
        /// Replace an existing key in DIR
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DebCommand {
    /// Check helper packages against the helper rules (docs/protocol.md §3) by extracting
    /// each into a temporary directory: prints `ok <name> <version>` or the error for
    /// each; exit 0 if all pass, 3 if one does not
    Check {
        /// Debian architecture the helpers are for (`all` is accepted too)
        #[arg(long, value_name = "ARCH")]
        arch: String,
        /// The packages to check
        #[arg(value_name = "DEB", required = true)]
        debs: Vec<PathBuf>,
    },

    /// Extract DEB into DIR like `dpkg-deb -x`, refusing hostile packages (absolute or
    /// `..` names, devices, writing through symlinks). DIR is created if missing and
    /// must be empty; on failure it is emptied again
    Extract {
        /// Apply the helper rules: only usr/lib/release-upgrader/, which lands in DIR;
        /// no setuid bits, no links leaving it, no maintainer scripts
        #[arg(long, requires = "arch")]
        helper: bool,
        /// Debian architecture of the helper (with --helper)
        #[arg(long, value_name = "ARCH", requires = "helper")]
        arch: Option<String>,
        /// The package
        deb: PathBuf,
        /// The directory to extract into
        dir: PathBuf,
    },
}
