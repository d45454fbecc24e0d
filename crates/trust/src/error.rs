//! What trust reports when a download, a location or a signature is not what it must be.
//!
//! Only trust constructs these, so a caller (and a test) can tell a cancelled transfer, a
//! missing file or a bad signature apart by type; failures of the formats it reads with
//! pass through unchanged as [`Error::Format`].

use ru_format::{ExitCode, UserError};
use std::path::PathBuf;

/// A failure of a download, a location or an OpenPGP check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- usage and configuration (exit 2) ---
    #[error("cannot read keyring {path}: {reason}")]
    Keyring { path: PathBuf, reason: String },

    #[error("invalid location {location:?}: {reason}")]
    BadLocation { location: String, reason: String },

    // --- verification (exit 3) ---
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

    // --- network (exit 4) ---
    #[error("{uri}: {reason}")]
    Network { uri: String, reason: String },

    #[error("{uri}: not found")]
    NotFound { uri: String },

    #[error("{uri}: the server answered {status}")]
    HttpStatus { uri: String, status: u16 },

    /// A network location in a run that uses no network (`--without-network`, or upgrade
    /// media with the network down): refused before any connection is tried.
    #[error("{uri}: not fetched: this run does not use the network")]
    Offline { uri: String },

    // --- cancelled (exit 130) ---
    #[error("cancelled")]
    Cancelled,

    /// A failure of the formats (an I/O error on a file, a malformed file).
    #[error(transparent)]
    Format(#[from] ru_format::Error),
}

/// The hint for a signature that does not check out.
pub const BAD_SIGNATURE: &str = "make sure the distribution's archive key is in a keyring \
     passed with --keyring or installed under /etc/release-upgrader/trusted.gpg.d/; if it \
     is, the file was altered or signed by someone else";

impl Error {
    /// The exit code this failure ends the process with.
    pub fn exit_code(&self) -> ExitCode {
        use Error::*;
        match self {
            Keyring { .. } | BadLocation { .. } => ExitCode::Usage,
            BadSignature { .. } | HashMismatch { .. } | SizeMismatch { .. } | TooLarge { .. } => {
                ExitCode::Verification
            }
            Network { .. } | NotFound { .. } | HttpStatus { .. } | Offline { .. } => {
                ExitCode::Network
            }
            Cancelled => ExitCode::Cancelled,
            Format(e) => e.exit_code(),
        }
    }

    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        use Error::*;
        Some(match self {
            BadSignature { .. } => BAD_SIGNATURE.into(),
            HashMismatch { .. } | SizeMismatch { .. } | TooLarge { .. } => {
                ru_format::error::ALTERED_IN_TRANSIT.into()
            }
            Network { .. } => "check the network connection and proxy settings \
                 (http_proxy, https_proxy, no_proxy), then try again"
                .into(),
            NotFound { .. } | HttpStatus { .. } => {
                "check the URI; the server may be updating, so try again later".into()
            }
            Offline { .. } => "without the network, upgrade from media (--cdrom PATH); or \
                 leave out --without-network"
                .into(),
            Format(e) => return e.hint(),
            Keyring { .. } | BadLocation { .. } | Cancelled => return None,
        })
    }

    /// An I/O error that names its path (a [`ru_format::Error::Io`]).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Format(ru_format::Error::io(path, source))
    }

    /// Whether a file or URI was not there (HTTP 404/410, or no such file).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether the network could not be reached at all (no connection, a timeout, a
    /// dropped transfer, or none allowed): what an answer from a server, even an error,
    /// is not.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Network { .. } | Error::Offline { .. })
    }

    /// Whether the user cancelled (Ctrl-C) the work that failed.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
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
            Error::Format(e) => e.says_its_source(),
            _ => false,
        }
    }
}
