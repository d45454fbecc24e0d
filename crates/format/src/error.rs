//! The exit codes of docs/protocol.md §7, the [`UserError`] trait every crate's error
//! enum implements, and the formats' own [`Error`].
//!
//! Each crate constructs only its own enum (formats here, trust in `ru_trust`, the rest in
//! `ru_client`), so a test can tell causes apart by type; the binaries find the first of
//! any of them in an `anyhow` chain to choose the exit code and the hint.

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

/// What every crate's error enum answers, so that the binaries can choose an exit code
/// and a hint for whichever of them is in an `anyhow` chain.
pub trait UserError: std::error::Error + Send + Sync + 'static {
    /// The exit code this failure ends the process with.
    fn exit_code(&self) -> ExitCode;
    /// What the user can do about it, when there is something to say.
    fn hint(&self) -> Option<String>;
    /// Whether the message already said its source's reason (an I/O error shown as
    /// `path: what failed: why`), so a report must not print that source again.
    fn says_its_source(&self) -> bool {
        false
    }
}

/// A failure of the formats: reading, writing or checking files, packages and state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- usage and configuration (exit 2) ---
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },

    /// A state file of ours that names something it must not (outside the root, a
    /// different root than this run's), or is otherwise not what this version wrote.
    #[error("{file}: {reason}")]
    BadState { file: PathBuf, reason: String },

    /// An I/O failure on `path`. Shown as `path: what failed: why`, the path once even
    /// when the source (an `fs_err` error) names it too.
    #[error("{}: {}", path.display(), io_reason(path, source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // --- verification (exit 3) ---
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

    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },

    #[error("{deb}: {reason}")]
    BadPackage { deb: String, reason: String },

    /// A failure of a step the caller supplied (an extraction hook, a rebuild's finish),
    /// passed through with the caller's own type, exit code and hint.
    #[error("{0}")]
    Hook(Box<dyn UserError>),
}

/// The hint for a file whose hash or size is not the one announced.
pub const ALTERED_IN_TRANSIT: &str = "the file was altered in transit or the mirror is out of \
     sync; try again later or use another mirror";

/// The hint for a state file that does not read as this version wrote it.
pub fn bad_state_hint(file: &std::path::Path) -> String {
    format!(
        "the file was written for another root or altered; check what it names, then \
         remove {} to start afresh",
        file.display()
    )
}

/// The hint for a package that breaks the helper rules.
pub const BAD_PACKAGE: &str = "the package breaks the rules for release-upgrader helpers \
     (docs/protocol.md §3); report this to the distribution";

impl Error {
    /// The exit code this failure ends the process with.
    pub fn exit_code(&self) -> ExitCode {
        use Error::*;
        match self {
            Config { .. } | BadState { .. } | Io { .. } => ExitCode::Usage,
            HashMismatch { .. } | SizeMismatch { .. } | Malformed { .. } | BadPackage { .. } => {
                ExitCode::Verification
            }
            Hook(e) => e.exit_code(),
        }
    }

    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        use Error::*;
        match self {
            HashMismatch { .. } | SizeMismatch { .. } => Some(ALTERED_IN_TRANSIT.into()),
            BadState { file, .. } => Some(bad_state_hint(file)),
            BadPackage { .. } => Some(BAD_PACKAGE.into()),
            Hook(e) => e.hint(),
            Config { .. } | Io { .. } | Malformed { .. } => None,
        }
    }

    /// An I/O error that names its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl UserError for Error {
    fn exit_code(&self) -> ExitCode {
        Error::exit_code(self)
    }
    fn hint(&self) -> Option<String> {
        Error::hint(self)
    }
    fn says_its_source(&self) -> bool {
        match self {
            Error::Io { .. } => true,
            Error::Hook(e) => e.says_its_source(),
            _ => false,
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
