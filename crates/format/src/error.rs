//! What users read when something fails, and the exit code each failure maps to.
//!
//! Every failure a user can act on is a variant here, carrying the value that was wrong
//! (a URI, a file, a package) and, through [`Error::hint`], what to do about it. Callers
//! add breadcrumbs with `anyhow::Context`; the binaries find the `Error` in the chain to
//! choose the exit code of docs/protocol.md §7, so a wrapped failure never loses its code.

use std::fmt;
use std::path::PathBuf;

/// Process exit codes (docs/protocol.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Success; for `check`, an upgrade is available.
    Success,
    /// No upgrade is available.
    NoUpgrade,
    /// Usage or configuration error.
    Usage,
    /// A signature, hash, size or policy check failed.
    Verification,
    /// The network failed after retries.
    Network,
    /// The upgrade failed and was rolled back.
    RolledBack,
    /// The upgrade failed part way; the system needs `dpkg --configure -a`.
    PartlyUpgraded,
    /// Cancelled by the user; cleanup done.
    Cancelled,
}

impl ExitCode {
    pub fn code(self) -> u8 {
        match self {
            ExitCode::Success => 0,
            ExitCode::NoUpgrade => 1,
            ExitCode::Usage => 2,
            ExitCode::Verification => 3,
            ExitCode::Network => 4,
            ExitCode::RolledBack => 5,
            ExitCode::PartlyUpgraded => 6,
            ExitCode::Cancelled => 130,
        }
    }
}

/// A failure a user can understand and act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- usage and configuration (exit 2) ---
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error("cannot read keyring {path}: {reason}")]
    Keyring { path: PathBuf, reason: String },

    #[error("no trusted keys: {searched}")]
    NoTrustedKeys { searched: String },

    #[error("no meta-release URI is configured")]
    NoMetaReleaseUri { config: PathBuf },

    #[error("{uri}: release {dist} has no UpgradeToolBaseURI, so there is no helper pocket for it")]
    NoHelperPocket { uri: String, dist: String },

    #[error("invalid location {location:?}: {reason}")]
    BadLocation { location: String, reason: String },

    #[error("not enough free space in {path}: {needed} bytes needed, {available} available")]
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },

    #[error("the package system is in use: {holder} (waited {waited} s)")]
    Locked {
        path: PathBuf,
        holder: String,
        waited: u64,
    },

    /// An operation that would leave the tree it works in (a symlink or mount point on
    /// the way, a path with `..`), refused before anything was done through it.
    #[error("refusing to act on {path}: {reason}")]
    Refused { path: PathBuf, reason: String },

    /// A state file of ours that names something it must not (outside the root, a
    /// different root than this run's), or is otherwise not what this version wrote.
    #[error("{file}: {reason}")]
    BadState { file: PathBuf, reason: String },

    /// A program the tool ran and waited for failed: its command line, how it ended and
    /// the end of what it wrote to stderr.
    #[error("`{command}` failed ({status}){}", stderr_suffix(.stderr_tail))]
    Program {
        program: String,
        command: String,
        status: std::process::ExitStatus,
        stderr_tail: String,
    },

    /// An I/O failure on `path`. Shown as `path: what failed: why`, the path once even
    /// when the source (an `fs_err` error) names it too.
    #[error("{}: {}", path.display(), io_reason(path, source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // --- nothing to do (exit 1) ---
    #[error("release upgrades are disabled: Prompt=never in {path}")]
    UpgradesDisabled { path: PathBuf },

    #[error("the running release {codename:?} is not listed in {uri}")]
    ReleaseNotListed { codename: String, uri: String },

    #[error("no newer release than {codename} is available from {uri}")]
    NoNewerRelease { codename: String, uri: String },

    #[error("the upgrade to {dist} is currently blocked by the distribution: {reason}")]
    UpgradeBroken { dist: String, reason: String },

    // --- verification (exit 3) ---
    #[error("{what} is not signed")]
    Unsigned { what: String },

    #[error("no good signature on {what} from a trusted key: {reason}")]
    BadSignature { what: String, reason: String },

    #[error("{what}: SHA256 mismatch (expected {expected}, got {actual})")]
    HashMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("{what}: size mismatch (expected {expected} bytes, got {actual})")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error("{what}: the server sent more than the {limit} bytes allowed")]
    TooLarge { what: String, limit: u64 },

    #[error("{what} is for release {found:?}, expected {expected:?}")]
    WrongCodename {
        what: String,
        expected: String,
        found: String,
    },

    #[error("{what} is for architectures {found:?}, not {expected}")]
    WrongArchitecture {
        what: String,
        expected: String,
        found: String,
    },

    #[error("{what} expired on {valid_until}")]
    Expired { what: String, valid_until: String },

    #[error("{what} is dated {date}, which is in the future")]
    NotYetValid { what: String, date: String },

    #[error("{what} is dated {date}, older than the {last_seen} seen before (rollback)")]
    Rollback {
        what: String,
        date: String,
        last_seen: String,
    },

    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },

    #[error("{deb}: {reason}")]
    BadPackage { deb: String, reason: String },

    #[error("{package} (required by {required_by}) is not a release-upgrader-* helper")]
    NotAHelper {
        package: String,
        required_by: String,
    },

    #[error("{package} (required by {required_by}) is not in the helper pocket {pocket}")]
    MissingPackage {
        package: String,
        required_by: String,
        pocket: String,
    },

    #[error("{required_by} needs {package} ({constraint}), but the helper pocket has {available}")]
    UnsatisfiableVersion {
        package: String,
        constraint: String,
        available: String,
        required_by: String,
    },

    // --- network (exit 4) ---
    #[error("{uri}: {reason}")]
    Network { uri: String, reason: String },

    #[error("{uri}: not found")]
    NotFound { uri: String },

    #[error("{uri}: the server answered {status}")]
    HttpStatus { uri: String, status: u16 },

    // --- cancelled (exit 130) ---
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// The exit code this failure ends the process with.
    pub fn exit_code(&self) -> ExitCode {
        use Error::*;
        match self {
            Config { .. }
            | Keyring { .. }
            | NoTrustedKeys { .. }
            | NoMetaReleaseUri { .. }
            | NoHelperPocket { .. }
            | BadLocation { .. }
            | NoSpace { .. }
            | Locked { .. }
            | Refused { .. }
            | BadState { .. }
            | Program { .. }
            | Io { .. } => ExitCode::Usage,
            UpgradesDisabled { .. }
            | ReleaseNotListed { .. }
            | NoNewerRelease { .. }
            | UpgradeBroken { .. } => ExitCode::NoUpgrade,
            Unsigned { .. }
            | BadSignature { .. }
            | HashMismatch { .. }
            | SizeMismatch { .. }
            | TooLarge { .. }
            | WrongCodename { .. }
            | WrongArchitecture { .. }
            | Expired { .. }
            | NotYetValid { .. }
            | Rollback { .. }
            | Malformed { .. }
            | BadPackage { .. }
            | NotAHelper { .. }
            | MissingPackage { .. }
            | UnsatisfiableVersion { .. } => ExitCode::Verification,
            Network { .. } | NotFound { .. } | HttpStatus { .. } => ExitCode::Network,
            Cancelled => ExitCode::Cancelled,
        }
    }

    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        use Error::*;
        Some(match self {
            NoTrustedKeys { .. } => "pass a keyring with --keyring FILE, or install one under \
                 /etc/release-upgrader/trusted.gpg.d/"
                .into(),
            NoMetaReleaseUri { config } => format!(
                "set URI= in the [METARELEASE] section of {}, or pass --meta-release-uri URI",
                config.display()
            ),
            NoHelperPocket { .. } => "the distribution does not publish release-upgrader \
                 helpers for this release; use the distribution's own upgrade instructions"
                .into(),
            UpgradesDisabled { .. } => {
                "set Prompt=normal (or lts) to allow release upgrades".into()
            }
            ReleaseNotListed { .. } => "check VERSION_CODENAME in /etc/os-release and the \
                 meta-release URI (--meta-release-uri)"
                .into(),
            Unsigned { .. } => "the file has neither a clearsigned block nor a detached .gpg \
                 signature; pass --allow-unsigned-meta-release only if you trust its transport"
                .into(),
            BadSignature { .. } => "make sure the distribution's archive key is in a keyring \
                 passed with --keyring or installed under /etc/release-upgrader/trusted.gpg.d/; \
                 if it is, the file was altered or signed by someone else"
                .into(),
            HashMismatch { .. } | SizeMismatch { .. } | TooLarge { .. } => {
                "the file was altered in transit or the mirror is out of sync; try again later \
                 or use another mirror"
                    .into()
            }
            WrongCodename { .. } | WrongArchitecture { .. } => "the server offers a pocket for \
                 another release or architecture; check the meta-release URI"
                .into(),
            Expired { .. } => "the mirror is not being updated; try again later or use another \
                 mirror, and check the system clock"
                .into(),
            NotYetValid { .. } => "check the system clock".into(),
            Refused { .. } => "the tree holds a symlink or a mount point where release-upgrader \
                 expects a plain directory; look at it, and move or unmount it if it is not meant \
                 to be there"
                .into(),
            BadState { file, .. } => format!(
                "the file was written for another root or altered; check what it names, then \
                 remove {} to start afresh",
                file.display()
            ),
            Locked { .. } => "wait for that program to finish (or close it), then try again".into(),
            NoSpace { path, .. } => format!(
                "free some space on the filesystem of {} (apt-get clean, journalctl --vacuum-size) \
                 and try again",
                path.display()
            ),
            Rollback { .. } => "someone is serving an older copy of the helper pocket; use \
                 another mirror. If this is expected, remove the pocket's entry from \
                 /var/lib/release-upgrader/release-dates.json"
                .into(),
            BadPackage { .. } => "the package breaks the rules for release-upgrader helpers \
                 (docs/protocol.md §3); report this to the distribution"
                .into(),
            NotAHelper { .. } | MissingPackage { .. } | UnsatisfiableVersion { .. } => {
                "the helper pocket is inconsistent; report this to the distribution".into()
            }
            Network { .. } => "check the network connection and proxy settings \
                 (http_proxy, https_proxy, no_proxy), then try again"
                .into(),
            NotFound { .. } | HttpStatus { .. } => {
                "check the URI; the server may be updating, so try again later".into()
            }
            _ => return None,
        })
    }

    /// An I/O error that names its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The reason of an I/O error without its path: `fs_err` writes
/// "failed to open file `PATH`: No such file or directory"; [`Error::Io`] prints the path
/// in front already.
fn io_reason(path: &std::path::Path, source: &std::io::Error) -> String {
    let text = source.to_string();
    let quoted = format!(" `{}`", path.display());
    if text.contains(&quoted) {
        text.replacen(&quoted, "", 1)
    } else {
        text
    }
}

fn stderr_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", tail.trim())
    }
}

/// Finds the first [`Error`] in an `anyhow` chain.
pub fn find(err: &anyhow::Error) -> Option<&Error> {
    err.chain().find_map(|cause| cause.downcast_ref::<Error>())
}

/// The exit code for any error: the one of the first [`Error`] in the chain, or the
/// usage/configuration code for failures the tool did not classify.
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    find(err).map_or(ExitCode::Usage, Error::exit_code)
}

/// Renders an error chain for a terminal: the outermost message, each cause on its own
/// line, and the hint of the first [`Error`] in the chain.
pub struct Report<'a>(pub &'a anyhow::Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chain = self.0.chain();
        // An `Error::Io` has already said its source's reason, without the path again.
        let mut after_io = false;
        if let Some(top) = chain.next() {
            write!(f, "error: {top}")?;
            after_io = matches!(top.downcast_ref::<Error>(), Some(Error::Io { .. }));
        }
        let mut previous = self.0.to_string();
        for cause in chain {
            let text = cause.to_string();
            // Wrapped library errors often repeat their cause in their own message.
            if !previous.contains(&text) && !after_io {
                write!(f, "\n  caused by: {text}")?;
            }
            after_io = matches!(cause.downcast_ref::<Error>(), Some(Error::Io { .. }));
            previous = text;
        }
        if let Some(hint) = find(self.0).and_then(Error::hint) {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_code_survives_context_wrapping() {
        let err = Err::<(), _>(Error::HashMismatch {
            what: "Packages.xz".into(),
            expected: "aa".into(),
            actual: "bb".into(),
        })
        .context("reading the helper pocket")
        .unwrap_err();
        assert_eq!(exit_code_of(&err), ExitCode::Verification);
        let text = Report(&err).to_string();
        assert!(
            text.starts_with("error: reading the helper pocket"),
            "{text}"
        );
        assert!(
            text.contains("caused by: Packages.xz: SHA256 mismatch"),
            "{text}"
        );
        assert!(text.contains("hint: "), "{text}");
    }

    #[test]
    fn an_io_error_prints_its_path_once() {
        let path = std::path::Path::new("/nonexistent-release-upgrader-test/keyring.gpg");
        let source = fs_err::read(path).unwrap_err();
        assert!(
            source
                .to_string()
                .contains("/nonexistent-release-upgrader-test")
        );
        let err = anyhow::Error::new(Error::io(path, source)).context("loading the keyrings");
        let text = Report(&err).to_string();
        assert_eq!(
            text.matches("/nonexistent-release-upgrader-test").count(),
            1,
            "{text}"
        );
        assert!(text.contains("failed to open file"), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
        // A plain std::io::Error (no path of its own) reads the same way.
        let plain = std::fs::read(path).unwrap_err();
        let err = anyhow::Error::new(Error::io(path, plain));
        let text = Report(&err).to_string();
        assert_eq!(
            text.matches("/nonexistent-release-upgrader-test").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn unclassified_errors_are_usage_errors() {
        let err = anyhow::anyhow!("something odd");
        assert_eq!(exit_code_of(&err), ExitCode::Usage);
    }
}
