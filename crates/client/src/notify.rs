//! `release-upgrader notify`: the desktop user's announcement of a new release (issue 17).
//!
//! It runs as the user, not as root, so it neither reads the release list nor verifies
//! anything itself: it asks the system service (`CheckRelease`, authorized by polkit for
//! the active local session), whose `check` does all of that as root, and only turns the
//! `ReleaseChecked` answer into a desktop notification on the session bus. The user's
//! "Not now" is remembered per release in the user's own state
//! (`$XDG_STATE_HOME/release-upgrader/notify.json`), so that release is not announced
//! again while a later one is.
//!
//! Split as the rest of the client: [`decide`] (pure: the policy of `Prompt`, the dismissed
//! releases and the answer) and [`notification`] (pure: what is shown) are unit-tested;
//! [`bus`] does the DBus talking, [`UserState`] the file.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::metarelease::{Prompt, version_is_lts};

/// The program the "Upgrade…" action starts, found on `PATH`.
pub const LAUNCHER: &str = "release-upgrader-gtk";
/// The notification's actions: key and label, in order.
pub const ACTIONS: [(&str, &str); 2] = [("upgrade", "Upgrade…"), ("dismiss", "Not now")];
/// The icon name of the notification (freedesktop's icon naming specification).
pub const ICON: &str = "system-software-update";
/// The largest `notify.json` read; a few codenames are a few dozen bytes.
const MAX_STATE: u64 = 64 * 1024;

/// What the system service answered (`ReleaseChecked`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Found {
    pub available: bool,
    pub codename: String,
    pub version: String,
    pub release_notes_uri: String,
    pub reason: String,
}

/// Why nothing is announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quiet {
    /// `Prompt=never`: release upgrades are not offered at all.
    PromptNever,
    /// The service found no release to upgrade to (its reason).
    NoneAvailable(String),
    /// `Prompt=lts` and the new release is not a long-term one.
    NotLts { codename: String, version: String },
    /// The user said "Not now" to this release.
    Dismissed { codename: String },
    /// The service is upgrading already.
    Busy,
}

impl Quiet {
    /// The reason, for people and for the `notify` event.
    pub fn reason(&self) -> String {
        match self {
            Quiet::PromptNever => "release upgrades are disabled (Prompt=never)".into(),
            Quiet::NoneAvailable(why) if why.is_empty() => "no new release is available".into(),
            Quiet::NoneAvailable(why) => format!("no new release is available: {why}"),
            Quiet::NotLts { codename, version } => format!(
                "{codename} ({version}) is not a long-term release, and Prompt=lts offers only those"
            ),
            Quiet::Dismissed { codename } => {
                format!("{codename} was dismissed (\"Not now\") before")
            }
            Quiet::Busy => "the system service is upgrading already".into(),
        }
    }
}

/// Whether to announce the release the service found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Announce,
    Quiet(Quiet),
}

/// The policy: `Prompt=never` announces nothing, `Prompt=lts` only releases whose version
/// says LTS; a release the user dismissed is not announced again, a later one is.
pub fn decide(prompt: Prompt, dismissed: &Dismissed, found: &Found) -> Decision {
    if prompt == Prompt::Never {
        return Decision::Quiet(Quiet::PromptNever);
    }
    if !found.available || found.codename.is_empty() {
        return Decision::Quiet(Quiet::NoneAvailable(found.reason.clone()));
    }
    if prompt == Prompt::Lts && !version_is_lts(&found.version) {
        return Decision::Quiet(Quiet::NotLts {
            codename: found.codename.clone(),
            version: found.version.clone(),
        });
    }
    if dismissed.contains(&found.codename) {
        return Decision::Quiet(Quiet::Dismissed {
            codename: found.codename.clone(),
        });
    }
    Decision::Announce
}

/// What the notification shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub summary: String,
    /// Escaped for the servers that read the body as markup (the specification's
    /// `body-markup`): a codename of `<b>` shows as typed.
    pub body: String,
}

/// The notification for a release found.
pub fn notification(found: &Found) -> Notification {
    Notification {
        summary: "A new release is available".into(),
        body: markup_escape(&format!(
            "Version {} ({}) can be installed. Your files are kept; the upgrade takes a while \
             and needs a restart.",
            found.version, found.codename
        )),
    }
}

/// Escapes the characters the notification specification's markup gives meaning to.
fn markup_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// The releases the user said "Not now" to, by codename.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dismissed {
    dismissed: BTreeSet<String>,
}

impl Dismissed {
    pub fn contains(&self, codename: &str) -> bool {
        self.dismissed.contains(codename)
    }

    pub fn insert(&mut self, codename: &str) {
        self.dismissed.insert(codename.to_owned());
    }

    pub fn codenames(&self) -> impl Iterator<Item = &str> {
        self.dismissed.iter().map(String::as_str)
    }
}

/// The user's state directory of `notify`: `$XDG_STATE_HOME/release-upgrader`, or
/// `~/.local/state/release-upgrader` (the XDG base directory specification; a relative
/// `XDG_STATE_HOME` is ignored, as it says).
#[derive(Clone, Debug)]
pub struct UserState {
    dir: PathBuf,
}

impl UserState {
    /// From the environment `var` reads (`std::env::var_os` outside the tests).
    pub fn locate(var: impl Fn(&str) -> Option<OsString>) -> Result<UserState, Error> {
        let absolute = |name: &str| var(name).map(PathBuf::from).filter(|p| p.is_absolute());
        let base = match absolute("XDG_STATE_HOME") {
            Some(dir) => dir,
            None => absolute("HOME")
                .ok_or_else(|| Error::Config {
                    path: PathBuf::from("$HOME"),
                    reason: "neither XDG_STATE_HOME nor HOME names an absolute directory, so \
                             there is nowhere to remember dismissed releases"
                        .into(),
                })?
                .join(".local/state"),
        };
        Ok(UserState {
            dir: base.join("release-upgrader"),
        })
    }

    pub fn at(dir: &Path) -> UserState {
        UserState {
            dir: dir.to_owned(),
        }
    }

    /// `notify.json`.
    pub fn file(&self) -> PathBuf {
        self.dir.join("notify.json")
    }

    /// The dismissed releases; none when the file is not there. A file that is not what
    /// this version writes (or is implausibly large) is refused, naming it.
    pub fn load(&self) -> Result<Dismissed, Error> {
        use std::io::Read as _;
        let path = self.file();
        let file = match fs_err::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Dismissed::default()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut text = Vec::new();
        file.take(MAX_STATE + 1)
            .read_to_end(&mut text)
            .map_err(|e| Error::io(&path, e))?;
        if text.len() as u64 > MAX_STATE {
            return Err(Error::BadState {
                file: path,
                reason: format!("larger than {MAX_STATE} bytes"),
            });
        }
        serde_json::from_slice(&text).map_err(|e| Error::BadState {
            file: path,
            reason: format!("not the dismissed releases this version writes: {e}"),
        })
    }

    /// Replaces the file atomically (a temporary file renamed over it; a symlink in its
    /// place is replaced, never followed).
    pub fn save(&self, dismissed: &Dismissed) -> Result<(), Error> {
        let mut text = serde_json::to_vec_pretty(dismissed).expect("serialises");
        text.push(b'\n');
        ru_format::fsutil::write_atomic(&self.file(), &text).map_err(Error::Format)
    }

    /// Takes `notify.lock` (an exclusive `flock`, not waiting): `None` while another
    /// `notify` of this user runs (the timer's and the autostart's at one login).
    pub fn lock(&self) -> Result<Option<nix::fcntl::Flock<std::fs::File>>, Error> {
        let path = self.dir.join("notify.lock");
        fs_err::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(Error::io(&path, errno.into())),
        }
    }
}

/// How the notification ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The user chose an action (its key).
    Action(String),
    /// The notification was closed without an action (the specification's reason: 1
    /// expired, 2 dismissed by the user, 3 closed by a call, 4 other).
    Closed(u32),
    /// Nobody answered in time; the notification was withdrawn.
    TimedOut,
}

pub mod bus {
    //! The DBus side: the system service's `CheckRelease` and the session's
    //! `org.freedesktop.Notifications`, each bounded by a deadline (zbus has no per-call
    //! timeout: every wait races a timer).

    use std::collections::HashMap;
    use std::future::Future;
    use std::time::Instant;

    use futures_lite::StreamExt as _;
    use zbus::message::Type;
    use zbus::{Connection, MatchRule, Message, MessageStream};

    use super::{ACTIONS, Found, ICON, Notification, Outcome};
    use crate::error::Error;
    use crate::service::release_upgrade::{NAME, PATH};

    const IFACE: &str = "org.releaseupgrader.ReleaseUpgrader1";
    const NOTIFICATIONS: &str = "org.freedesktop.Notifications";
    const NOTIFICATIONS_PATH: &str = "/org/freedesktop/Notifications";

    /// The answer of the system service.
    #[derive(Debug)]
    pub enum Checked {
        Found(Found),
        /// An upgrade (not a check) is under way: there is nothing to announce.
        Upgrading,
    }

    fn unreachable(service: &str, reason: impl std::fmt::Display) -> Error {
        Error::Unreachable {
            service: service.to_owned(),
            reason: reason.to_string(),
        }
    }

    fn no_notifications(reason: impl std::fmt::Display) -> Error {
        Error::NoNotificationServer {
            reason: reason.to_string(),
        }
    }

    /// `what` before `deadline`, else `None`.
    async fn before<T>(deadline: Instant, what: impl Future<Output = T>) -> Option<T> {
        futures_lite::future::or(async { Some(what.await) }, async {
            async_io::Timer::at(deadline).await;
            None
        })
        .await
    }

    async fn signals(
        connection: &Connection,
        iface: &str,
        path: &str,
    ) -> zbus::Result<MessageStream> {
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .interface(iface.to_owned())?
            .path(path.to_owned())?
            .build();
        MessageStream::for_match_rule(rule, connection, Some(64)).await
    }

    /// Asks the system service to check (starting it by bus activation) and waits for
    /// `ReleaseChecked` until `deadline`.
    pub fn check_release(deadline: Instant) -> Result<Checked, Error> {
        zbus::block_on(async {
            let system = before(deadline, Connection::system())
                .await
                .ok_or_else(|| unreachable("the system bus", "no connection in time"))?
                .map_err(|e| unreachable("the system bus", e))?;
            // Subscribed before the call, so an answer that comes at once is not missed.
            let mut answers = signals(&system, IFACE, PATH)
                .await
                .map_err(|e| unreachable(NAME, e))?;
            let called = before(
                deadline,
                system.call_method(Some(NAME), PATH, Some(IFACE), "CheckRelease", &()),
            )
            .await
            .ok_or_else(|| unreachable(NAME, "no answer to CheckRelease in time"))?;
            // Only the service's own signals count: anyone on the bus may send a signal
            // named ReleaseChecked, but only the name's owner answers the call.
            let owner = match called {
                Ok(reply) => sender(&reply),
                Err(err) => match method_error(&err) {
                    Some(("org.freedesktop.DBus.Error.AccessDenied", message)) => {
                        return Err(Error::Denied {
                            service: NAME.into(),
                            reason: message.into(),
                        });
                    }
                    // A check under way answers for this one too; an upgrade does not.
                    Some((name, _)) if name.ends_with(".Error.Busy") => {
                        match state(&system).await {
                            Some((state, owner)) if state == "checking" => {
                                log::info!(
                                    "{NAME} is checking already: waiting for that check's answer"
                                );
                                owner
                            }
                            _ => return Ok(Checked::Upgrading),
                        }
                    }
                    Some((
                        "org.freedesktop.DBus.Error.ServiceUnknown"
                        | "org.freedesktop.DBus.Error.NameHasNoOwner",
                        message,
                    )) => {
                        return Err(unreachable(
                            NAME,
                            format!(
                                "not on the system bus, and the bus cannot start it: {message}"
                            ),
                        ));
                    }
                    _ => return Err(unreachable(NAME, err)),
                },
            };
            let owner = owner.ok_or_else(|| unreachable(NAME, "an answer from no sender"))?;
            loop {
                let message = before(deadline, answers.next())
                    .await
                    .ok_or_else(|| unreachable(NAME, "no ReleaseChecked in time"))?
                    .ok_or_else(|| unreachable(NAME, "the system bus went away"))?
                    .map_err(|e| unreachable(NAME, e))?;
                if member(&message).as_deref() != Some("ReleaseChecked")
                    || sender(&message).as_deref() != Some(owner.as_str())
                {
                    continue;
                }
                let (available, codename, version, release_notes_uri, _pocket, reason): (
                    bool,
                    String,
                    String,
                    String,
                    bool,
                    String,
                ) = message.body().deserialize().map_err(|e| {
                    unreachable(NAME, format!("ReleaseChecked of another shape: {e}"))
                })?;
                return Ok(Checked::Found(Found {
                    available,
                    codename,
                    version,
                    release_notes_uri,
                    reason,
                }));
            }
        })
    }

    /// The service's `State` property, and the unique name that answered.
    async fn state(connection: &Connection) -> Option<(String, Option<String>)> {
        let reply = connection
            .call_method(
                Some(NAME),
                PATH,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(IFACE, "State"),
            )
            .await
            .ok()?;
        let value: zbus::zvariant::OwnedValue = reply.body().deserialize().ok()?;
        Some((String::try_from(value).ok()?, sender(&reply)))
    }

    fn sender(message: &Message) -> Option<String> {
        message.header().sender().map(|s| s.to_string())
    }

    fn member(message: &Message) -> Option<String> {
        message.header().member().map(|m| m.to_string())
    }

    fn method_error(err: &zbus::Error) -> Option<(&str, &str)> {
        match err {
            zbus::Error::MethodError(name, message, _) => {
                Some((name.as_str(), message.as_deref().unwrap_or("")))
            }
            _ => None,
        }
    }

    /// Posts `notification` on the session bus and waits until `deadline` for the user's
    /// action or its closing; at the deadline it is withdrawn (`CloseNotification`).
    pub fn notify_and_wait(
        notification: &Notification,
        deadline: Instant,
    ) -> Result<Outcome, Error> {
        zbus::block_on(async {
            let session = before(deadline, Connection::session())
                .await
                .ok_or_else(|| no_notifications("no connection to the session bus in time"))?
                .map_err(|e| no_notifications(format!("the session bus: {e}")))?;
            let mut events = signals(&session, NOTIFICATIONS, NOTIFICATIONS_PATH)
                .await
                .map_err(no_notifications)?;
            let actions: Vec<&str> = ACTIONS.iter().flat_map(|(k, l)| [*k, *l]).collect();
            let mut hints: HashMap<&str, zbus::zvariant::Value<'_>> = HashMap::new();
            hints.insert("urgency", 1u8.into());
            let reply = before(
                deadline,
                session.call_method(
                    Some(NOTIFICATIONS),
                    NOTIFICATIONS_PATH,
                    Some(NOTIFICATIONS),
                    "Notify",
                    &(
                        "release-upgrader",
                        0u32,
                        ICON,
                        notification.summary.as_str(),
                        notification.body.as_str(),
                        actions,
                        hints,
                        0i32,
                    ),
                ),
            )
            .await
            .ok_or_else(|| no_notifications("no answer to Notify in time"))?
            .map_err(no_notifications)?;
            // As on the system bus: only the server's own signals count.
            let server =
                sender(&reply).ok_or_else(|| no_notifications("an answer from no sender"))?;
            let id: u32 = reply
                .body()
                .deserialize()
                .map_err(|e| no_notifications(format!("Notify answered {e}")))?;
            loop {
                let Some(next) = before(deadline, events.next()).await else {
                    // Withdrawn, so that no button is left that nothing answers.
                    let _ = before(
                        Instant::now() + std::time::Duration::from_secs(5),
                        session.call_method(
                            Some(NOTIFICATIONS),
                            NOTIFICATIONS_PATH,
                            Some(NOTIFICATIONS),
                            "CloseNotification",
                            &(id,),
                        ),
                    )
                    .await;
                    return Ok(Outcome::TimedOut);
                };
                let message = next
                    .ok_or_else(|| no_notifications("the session bus went away"))?
                    .map_err(no_notifications)?;
                if sender(&message).as_deref() != Some(server.as_str()) {
                    continue;
                }
                match member(&message).as_deref() {
                    Some("ActionInvoked") => {
                        if let Ok((of, key)) = message.body().deserialize::<(u32, String)>()
                            && of == id
                        {
                            return Ok(Outcome::Action(key));
                        }
                    }
                    Some("NotificationClosed") => {
                        if let Ok((of, reason)) = message.body().deserialize::<(u32, u32)>()
                            && of == id
                        {
                            return Ok(Outcome::Closed(reason));
                        }
                    }
                    _ => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(codename: &str, version: &str) -> Found {
        Found {
            available: true,
            codename: codename.into(),
            version: version.into(),
            release_notes_uri: String::new(),
            reason: String::new(),
        }
    }

    fn dismissed(codenames: &[&str]) -> Dismissed {
        let mut d = Dismissed::default();
        for c in codenames {
            d.insert(c);
        }
        d
    }

    #[test]
    fn a_new_release_is_announced_once_and_a_later_one_after_it_was_dismissed() {
        let none = Dismissed::default();
        let noble = found("noble", "24.04 LTS");
        assert_eq!(decide(Prompt::Normal, &none, &noble), Decision::Announce);
        let after_not_now = dismissed(&["noble"]);
        assert_eq!(
            decide(Prompt::Normal, &after_not_now, &noble),
            Decision::Quiet(Quiet::Dismissed {
                codename: "noble".into()
            })
        );
        assert_eq!(
            decide(Prompt::Normal, &after_not_now, &found("oracular", "24.10")),
            Decision::Announce
        );
    }

    #[test]
    fn prompt_never_announces_nothing_and_lts_only_long_term_releases() {
        let none = Dismissed::default();
        for f in [found("noble", "24.04 LTS"), found("oracular", "24.10")] {
            assert_eq!(
                decide(Prompt::Never, &none, &f),
                Decision::Quiet(Quiet::PromptNever)
            );
        }
        assert_eq!(
            decide(Prompt::Lts, &none, &found("noble", "24.04 LTS")),
            Decision::Announce
        );
        // "LTS" must be a word of the version, not a part of one.
        for version in ["24.10", "24.10 LTSX", "SLTS 1", "lts"] {
            assert!(
                matches!(
                    decide(Prompt::Lts, &none, &found("x", version)),
                    Decision::Quiet(Quiet::NotLts { .. })
                ),
                "{version}"
            );
        }
    }

    #[test]
    fn nothing_available_is_quiet_with_the_services_reason_even_if_it_names_a_codename() {
        let mut f = found("beta", "2");
        f.available = false;
        f.reason = "upgrades are broken".into();
        let Decision::Quiet(quiet) = decide(Prompt::Normal, &Dismissed::default(), &f) else {
            panic!("announced a release that is not available");
        };
        assert!(quiet.reason().contains("upgrades are broken"));
        // Available, but without a codename to remember a dismissal by: not announced.
        let nameless = found("", "2");
        assert!(matches!(
            decide(Prompt::Normal, &Dismissed::default(), &nameless),
            Decision::Quiet(Quiet::NoneAvailable(_))
        ));
    }

    #[test]
    fn the_body_names_the_version_and_codename_and_escapes_markup() {
        let n = notification(&found("beta", "2"));
        assert_eq!(n.summary, "A new release is available");
        assert!(n.body.contains("Version 2 (beta)"), "{}", n.body);
        let hostile = notification(&found("<a href='x'>b&</a>", "1\u{7}"));
        assert!(!hostile.body.contains('<') && !hostile.body.contains('\u{7}'));
        assert!(
            hostile
                .body
                .contains("&lt;a href=&apos;x&apos;&gt;b&amp;&lt;/a&gt;"),
            "{}",
            hostile.body
        );
    }

    #[test]
    fn the_state_directory_follows_xdg_and_ignores_a_relative_xdg_state_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let s = UserState::locate(env(&[("XDG_STATE_HOME", "/x/state"), ("HOME", "/h")])).unwrap();
        assert_eq!(s.file(), Path::new("/x/state/release-upgrader/notify.json"));
        let s = UserState::locate(env(&[("XDG_STATE_HOME", "rel"), ("HOME", "/h")])).unwrap();
        assert_eq!(
            s.file(),
            Path::new("/h/.local/state/release-upgrader/notify.json")
        );
        let err = UserState::locate(env(&[("HOME", "h")])).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::ExitCode::Usage);
    }

    #[test]
    fn dismissed_releases_survive_a_save_and_a_bad_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = UserState::at(&dir.path().join("release-upgrader"));
        assert_eq!(state.load().unwrap(), Dismissed::default());
        state.save(&dismissed(&["beta"])).unwrap();
        assert!(state.load().unwrap().contains("beta"));
        // A symlink in the file's place is replaced, not written through.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "mine").unwrap();
        std::fs::remove_file(state.file()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, state.file()).unwrap();
        state.save(&dismissed(&["beta", "gamma"])).unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "mine");
        assert!(!state.file().is_symlink());
        for bad in [
            "not json".to_owned(),
            r#"{"dismissed": "beta"}"#.to_owned(),
            r#"{"dismissed": [], "also": 1}"#.to_owned(),
            format!(r#"{{"dismissed": ["{}"]}}"#, "x".repeat(70_000)),
        ] {
            std::fs::write(state.file(), &bad).unwrap();
            let err = state.load().unwrap_err();
            assert!(err.is_bad_state(), "{err}");
            assert!(err.to_string().contains("notify.json"), "{err}");
        }
    }

    #[test]
    fn a_second_notify_of_the_user_finds_the_lock_taken() {
        let dir = tempfile::tempdir().unwrap();
        let state = UserState::at(dir.path());
        let held = state.lock().unwrap();
        assert!(held.is_some());
        assert!(state.lock().unwrap().is_none());
        drop(held);
        assert!(state.lock().unwrap().is_some());
    }
}
