//! What users read when the client (or the publisher) fails, and how the binaries choose
//! the exit code and the hint for any failure.
//!
//! Every failure a user can act on is a variant of one crate's enum, carrying the value
//! that was wrong (a URI, a file, a package) and, through [`UserError::hint`], what to do
//! about it: the formats' in [`ru_format::Error`], trust's in [`ru_trust::Error`], the rest
//! here. Callers add breadcrumbs with `anyhow::Context`; [`find`] picks the first error of
//! any of the three types in the chain to choose the exit code of docs/protocol.md §7, so
//! a wrapped failure never loses its code.

use std::fmt;
use std::path::PathBuf;

use ru_format::error::{ALTERED_IN_TRANSIT, BAD_PACKAGE, bad_state_hint};
pub use ru_format::{ExitCode, UserError};

/// A failure of the client (and the publisher): every failure a user can act on that is
/// not the formats' or trust's, which pass through as [`Error::Format`] and [`Error::Trust`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- usage and configuration (exit 2) ---
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },

    /// A command that changes the system, run by a user who cannot write its root.
    #[error(
        "needs root: run it with sudo ({command} changes {root}, which this user cannot write)"
    )]
    NeedsRoot { command: String, root: PathBuf },

    #[error("cannot read keyring {path}: {reason}")]
    Keyring { path: PathBuf, reason: String },

    #[error("no trusted keys: {searched}")]
    NoTrustedKeys { searched: String },

    #[error("no meta-release URI is configured")]
    NoMetaReleaseUri { config: PathBuf },

    #[error("{uri}: release {dist} has no UpgradeToolBaseURI, so there is no helper pocket for it")]
    NoHelperPocket { uri: String, dist: String },

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

    /// An image was applied, but the reboot into it could not be asked for.
    #[error("{what} is applied, but the reboot into it failed")]
    Reboot {
        what: String,
        #[source]
        source: crate::reboot::RebootError,
    },

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

    #[error("{what} is for release {found:?}, expected {expected:?}")]
    WrongCodename {
        what: String,
        expected: String,
        found: String,
    },

    /// A mirror's suite whose signed `Release` names another suite (`Codename` and
    /// `Suite` both differ from the directory it was fetched from).
    #[error("{what} is for {found}, not {expected:?}")]
    WrongSuite {
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

    /// The system service `notify` asks is not on the system bus, could not be started,
    /// or did not answer in time.
    #[error("{service}: {reason}")]
    Unreachable { service: String, reason: String },

    /// The desktop's notification server (`org.freedesktop.Notifications` on the session
    /// bus) is not there or did not answer in time.
    #[error("no desktop notification server (org.freedesktop.Notifications): {reason}")]
    NoNotificationServer { reason: String },

    /// A DBus service refused this user (polkit said no).
    #[error("{service} refused: {reason}")]
    Denied { service: String, reason: String },

    // --- cancelled (exit 130) ---
    #[error("cancelled")]
    Cancelled,

    /// A failure of the formats (an I/O error on a file, a malformed package).
    #[error(transparent)]
    Format(ru_format::Error),

    /// A failure of trust (a download, a location, a signature).
    #[error(transparent)]
    Trust(#[from] ru_trust::Error),
}

impl Error {
    /// The exit code this failure ends the process with.
    pub fn exit_code(&self) -> ExitCode {
        use Error::*;
        match self {
            Config { .. }
            | NeedsRoot { .. }
            | Keyring { .. }
            | NoTrustedKeys { .. }
            | NoMetaReleaseUri { .. }
            | NoHelperPocket { .. }
            | NoSpace { .. }
            | Locked { .. }
            | Refused { .. }
            | Reboot { .. }
            | BadState { .. }
            | Denied { .. }
            | Program { .. } => ExitCode::Usage,
            UpgradesDisabled { .. }
            | ReleaseNotListed { .. }
            | NoNewerRelease { .. }
            | UpgradeBroken { .. } => ExitCode::NoUpgrade,
            Unsigned { .. }
            | BadSignature { .. }
            | HashMismatch { .. }
            | SizeMismatch { .. }
            | WrongCodename { .. }
            | WrongSuite { .. }
            | WrongArchitecture { .. }
            | Expired { .. }
            | NotYetValid { .. }
            | Rollback { .. }
            | Malformed { .. }
            | BadPackage { .. }
            | NotAHelper { .. }
            | MissingPackage { .. }
            | UnsatisfiableVersion { .. } => ExitCode::Verification,
            Network { .. } | Unreachable { .. } | NoNotificationServer { .. } => ExitCode::Network,
            Cancelled => ExitCode::Cancelled,
            Format(e) => e.exit_code(),
            Trust(e) => e.exit_code(),
        }
    }

    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        use Error::*;
        Some(match self {
            NeedsRoot { root, .. } => format!(
                "run `sudo release-upgrader …`, or with --root a directory this user may write \
                 (not {})",
                root.display()
            ),
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
            BadSignature { .. } => ru_trust::error::BAD_SIGNATURE.into(),
            HashMismatch { .. } | SizeMismatch { .. } => ALTERED_IN_TRANSIT.into(),
            WrongCodename { .. } | WrongArchitecture { .. } => "the server offers a pocket for \
                 another release or architecture; check the meta-release URI"
                .into(),
            WrongSuite { expected, .. } => format!(
                "the mirror serves another release under dists/{expected}/ (an old or \
                 misconfigured mirror, or someone replaying another suite's signed files); \
                 use another mirror"
            ),
            Expired { .. } => "the mirror is not being updated; try again later or use another \
                 mirror, and check the system clock"
                .into(),
            NotYetValid { .. } => "check the system clock".into(),
            Refused { .. } => "the tree holds a symlink, a mount point or another kind of file \
                 where release-upgrader expects a plain directory or file; look at it, and move or \
                 unmount it if it is not meant to be there"
                .into(),
            BadState { file, .. } => bad_state_hint(file),
            Reboot { what, .. } => {
                format!("reboot by hand to start {what}; it stays applied until then")
            }
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
            BadPackage { .. } => BAD_PACKAGE.into(),
            NotAHelper { .. } | MissingPackage { .. } | UnsatisfiableVersion { .. } => {
                "the helper pocket is inconsistent; report this to the distribution".into()
            }
            Network { .. } => "check the network connection and proxy settings \
                 (http_proxy, https_proxy, no_proxy), then try again"
                .into(),
            NoNotificationServer { .. } => {
                "run it in the desktop session (DBUS_SESSION_BUS_ADDRESS \
                 or $XDG_RUNTIME_DIR/bus names its session bus, and the desktop shows \
                 notifications)"
                    .into()
            }
            Unreachable { .. } => "check that the release-upgrader package is installed (it \
                 ships the service's bus activation file) and that the system bus runs; \
                 `journalctl -b` says why the service did not start"
                .into(),
            Denied { .. } => "polkit allows org.releaseupgrader.check to users of an active \
                 local session: run it in the desktop session, or ask the administrator"
                .into(),
            Format(e) => return e.hint(),
            Trust(e) => return e.hint(),
            _ => return None,
        })
    }

    /// An I/O error that names its path (a [`ru_format::Error::Io`]).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Format(ru_format::Error::io(path, source))
    }

    /// Whether the user cancelled (Ctrl-C) the work that failed, here or in trust.
    pub fn is_cancelled(&self) -> bool {
        match self {
            Error::Cancelled => true,
            Error::Trust(e) => e.is_cancelled(),
            _ => false,
        }
    }

    /// Whether a state file of ours was refused (ours, or one the formats read).
    pub fn is_bad_state(&self) -> bool {
        matches!(
            self,
            Error::BadState { .. } | Error::Format(ru_format::Error::BadState { .. })
        )
    }

    /// Whether a file or URI was not there (HTTP 404/410, or no such file).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Trust(e) if e.is_not_found())
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
            Error::Trust(e) => e.says_its_source(),
            _ => false,
        }
    }
}

impl From<ru_format::Error> for Error {
    /// A hook of ours that failed inside the formats comes back as itself.
    fn from(e: ru_format::Error) -> Self {
        match e {
            ru_format::Error::Hook(inner) if (&*inner as &dyn std::error::Error).is::<Error>() => {
                let inner: Box<dyn std::error::Error + Send + Sync> = inner;
                *inner.downcast::<Error>().expect("checked above")
            }
            other => Error::Format(other),
        }
    }
}

impl From<Error> for ru_format::Error {
    /// For hooks the formats call: a formats' error goes back as it was, ours as a hook's.
    fn from(e: Error) -> Self {
        match e {
            Error::Format(inner) => inner,
            other => ru_format::Error::Hook(Box::new(other)),
        }
    }
}

fn stderr_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", tail.trim())
    }
}

/// One cause of a chain as an error of one of the crates, if it is one.
fn as_user_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a dyn UserError> {
    if let Some(e) = cause.downcast_ref::<Error>() {
        return Some(e);
    }
    if let Some(e) = cause.downcast_ref::<ru_trust::Error>() {
        return Some(e);
    }
    cause
        .downcast_ref::<ru_format::Error>()
        .map(|e| e as &dyn UserError)
}

/// Finds the first error of any of the crates (client, trust, formats) in an `anyhow`
/// chain.
pub fn find(err: &anyhow::Error) -> Option<&dyn UserError> {
    err.chain().find_map(as_user_error)
}

/// The exit code for any error: the one of the first typed error in the chain, or the
/// usage/configuration code for failures the tool did not classify.
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    find(err).map_or(ExitCode::Usage, |e| e.exit_code())
}

/// Renders an error chain for a terminal: the outermost message, each cause on its own
/// line, and the hint of the first typed error in the chain.
pub struct Report<'a>(pub &'a anyhow::Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let says_its_source = |cause: &(dyn std::error::Error + 'static)| {
            as_user_error(cause).is_some_and(|e| e.says_its_source())
        };
        let mut chain = self.0.chain();
        // An I/O error has already said its source's reason, without the path again.
        let mut after_io = false;
        if let Some(top) = chain.next() {
            write!(f, "error: {top}")?;
            after_io = says_its_source(top);
        }
        let mut previous = self.0.to_string();
        for cause in chain {
            let text = cause.to_string();
            // Wrapped library errors often repeat their cause in their own message.
            if !previous.contains(&text) && !after_io {
                write!(f, "\n  caused by: {text}")?;
            }
            after_io = says_its_source(cause);
            previous = text;
        }
        if let Some(hint) = find(self.0).and_then(|e| e.hint()) {
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
        let err = Err::<(), _>(ru_trust::Error::HashMismatch {
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

    #[test]
    fn the_first_error_of_any_crate_chooses_exit_code_and_hint() {
        let from_format = anyhow::Error::new(Error::from(ru_format::Error::BadPackage {
            deb: "x.deb".into(),
            reason: "no control member".into(),
        }))
        .context("installing the helpers");
        assert_eq!(exit_code_of(&from_format), ExitCode::Verification);
        assert!(find(&from_format).and_then(|e| e.hint()).is_some());
        let from_trust = anyhow::Error::new(ru_trust::Error::NotFound {
            uri: "http://deb.debian.example/meta-release".into(),
        });
        assert_eq!(exit_code_of(&from_trust), ExitCode::Network);
        let nested = anyhow::Error::new(Error::from(ru_trust::Error::from(
            ru_format::Error::Malformed {
                what: "Packages".into(),
                reason: "truncated".into(),
            },
        )));
        assert_eq!(exit_code_of(&nested), ExitCode::Verification);
        assert_eq!(nested.to_string(), "Packages: truncated");
    }

    #[test]
    fn cancelled_is_recognised_whichever_crate_says_it() {
        assert!(Error::Cancelled.is_cancelled());
        assert!(Error::from(ru_trust::Error::Cancelled).is_cancelled());
        assert!(!Error::from(ru_trust::Error::NotFound { uri: "u".into() }).is_cancelled());
    }
}
