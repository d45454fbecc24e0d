//! Who may change state through the service.
//!
//! Read-only methods are open to every caller; the others ask the [`Authority`], which
//! decides as systemd's services do. A caller running as uid 0 (asked of the bus,
//! `GetConnectionUnixUser`, never of the message) may do anything, and polkit is not
//! asked. Anyone else is polkit's to judge when polkit is on the bus: the question names
//! the caller's bus connection and the action's id (the actions are
//! `dist/polkit-1/actions/org.releaseupgrader.policy`), and allows user interaction, so
//! that an agent in the caller's session may ask for a password (`auth_admin_keep`).
//! Without polkit on the bus, only uid 0 may change state. polkit is never started for
//! the question (no auto-start): a system without it keeps the uid-0 rule.
//!
//! Fail closed: an error reply, a reply of another shape, or none in time refuses the
//! call, saying why. [`decide`] is the whole decision, from the caller's uid and what
//! polkit said; [`Authority::check`] only gathers those on the bus.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures_lite::FutureExt;
use zbus::fdo;
use zbus::message::Header;
use zbus::names::UniqueName;
use zbus::proxy::{CacheProperties, MethodFlags};
use zbus::zvariant::Value;

/// polkit's name, object and interface on the system bus.
pub const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";
pub const POLKIT_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
pub const POLKIT_INTERFACE: &str = "org.freedesktop.PolicyKit1.Authority";

/// `CheckAuthorization`'s flag: an authentication agent may be asked.
const ALLOW_USER_INTERACTION: u32 = 1;

/// How long an answer of polkit may take: a person may be typing a password (libdbus's
/// 25 s default is too short for that).
pub const POLKIT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a caller asks to do: the polkit action, and the refusal's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Check for a new release or image, download or cancel an image update; change a
    /// setting or the channel.
    Check,
    /// Apply a downloaded image update, reboot.
    Apply,
    /// Wipe the user data (factory or production reset).
    Reset,
    /// Upgrade to the new release, or cancel the upgrade under way.
    Upgrade,
}

impl Action {
    /// Every action, in the order of the shipped policy file.
    pub const ALL: [Action; 4] = [Action::Check, Action::Apply, Action::Reset, Action::Upgrade];

    /// The polkit action id (`dist/polkit-1/actions/org.releaseupgrader.policy`).
    pub fn polkit_id(self) -> &'static str {
        match self {
            Action::Check => "org.releaseupgrader.check",
            Action::Apply => "org.releaseupgrader.apply",
            Action::Reset => "org.releaseupgrader.reset",
            Action::Upgrade => "org.releaseupgrader.upgrade",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Action::Check => "check for, download or configure updates",
            Action::Apply => "apply updates or reboot",
            Action::Reset => "reset the device",
            Action::Upgrade => "upgrade the release or cancel the upgrade",
        }
    }
}

/// polkit's `AuthorizationResult`: `(bba{ss})`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authorization {
    pub is_authorized: bool,
    /// Whether the caller would have been authorized had it authenticated.
    pub is_challenge: bool,
    pub details: HashMap<String, String>,
}

/// What polkit said about a caller, or why it said nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Polkit {
    /// Not asked (the caller is root: see [`asks_polkit`]).
    NotAsked,
    /// No polkit on the bus.
    Absent,
    Answered(Authorization),
    /// Asking failed: an error reply, a reply of another shape, no reply in time.
    Failed(String),
}

/// Whether polkit is to be asked about a caller running as `uid`: root is not (as
/// systemd does), so root's calls do not depend on polkit.
pub fn asks_polkit(uid: u32) -> bool {
    uid != 0
}

/// Whether a caller running as `uid` may do `action`, polkit having said `polkit`:
/// `Err(AccessDenied)` naming the action and why when not.
pub fn decide(uid: u32, polkit: &Polkit, action: Action) -> fdo::Result<()> {
    if !asks_polkit(uid) {
        return Ok(());
    }
    let (id, what) = (action.polkit_id(), action.what());
    let why = match polkit {
        Polkit::Answered(a) if a.is_authorized => return Ok(()),
        Polkit::Answered(a)
            if a.details
                .get("polkit.dismissed")
                .is_some_and(|d| d == "true") =>
        {
            format!("polkit refuses {id}: the authentication dialog was dismissed")
        }
        Polkit::Answered(a) if a.is_challenge => {
            format!("polkit refuses {id}: authentication is required and was not obtained")
        }
        Polkit::Answered(_) => format!("polkit refuses {id}: not authorized"),
        Polkit::Absent => {
            format!("only root may ({id}): polkit is not on the bus to authorize others")
        }
        Polkit::NotAsked => format!("polkit was not asked about {id}"),
        Polkit::Failed(e) => format!("polkit could not be asked about {id} ({e})"),
    };
    Err(fdo::Error::AccessDenied(format!(
        "uid {uid} may not {what}: {why}"
    )))
}

/// Decides whether a caller may change state; see the module.
#[derive(Clone, Copy, Debug)]
pub struct Authority {
    /// The bound on polkit's answer.
    polkit_timeout: Duration,
}

impl Default for Authority {
    fn default() -> Self {
        Authority {
            polkit_timeout: POLKIT_TIMEOUT,
        }
    }
}

impl Authority {
    /// Whether the caller of `header` may do `action`: `Err(AccessDenied)` when not.
    pub async fn check(
        &self,
        connection: &zbus::Connection,
        header: &Header<'_>,
        action: Action,
    ) -> fdo::Result<()> {
        let sender = header
            .sender()
            .ok_or_else(|| fdo::Error::AccessDenied("a call without a sender".into()))?;
        let bus = fdo::DBusProxy::new(connection).await?;
        let uid = bus.get_connection_unix_user(sender.clone().into()).await?;
        let polkit = if asks_polkit(uid) {
            self.ask_polkit(connection, &bus, sender, action).await
        } else {
            Polkit::NotAsked
        };
        let decided = decide(uid, &polkit, action);
        if let Err(e) = &decided {
            log::info!("refused {sender}: {e}");
        }
        decided
    }

    /// polkit's answer about `sender` doing `action`, when polkit is on the bus.
    async fn ask_polkit(
        &self,
        connection: &zbus::Connection,
        bus: &fdo::DBusProxy<'_>,
        sender: &UniqueName<'_>,
        action: Action,
    ) -> Polkit {
        let name = zbus::names::BusName::from_static_str(POLKIT_NAME).expect("a valid name");
        match bus.name_has_owner(name).await {
            Ok(true) => {}
            Ok(false) => return Polkit::Absent,
            Err(e) => return Polkit::Failed(format!("whether polkit is on the bus: {e}")),
        }
        let asked = check_authorization(connection, sender, action);
        match within(self.polkit_timeout, asked).await {
            Ok(a) => Polkit::Answered(a),
            Err(e) => Polkit::Failed(e),
        }
    }
}

/// polkit's reply: one struct `(bba{ss})`. Any other shape fails to read (zbus reads the
/// same three as separate arguments, `bba{ss}`, alike).
type AuthorizationResult = (bool, bool, HashMap<String, String>);

/// `fut`'s output, or an error when it has none after `timeout`.
async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    fut.or(async move {
        async_io::Timer::after(timeout).await;
        Err(format!("no answer in {} s", timeout.as_secs_f32()))
    })
    .await
}

/// polkit's `CheckAuthorization` for the bus connection `sender`; not auto-starting
/// polkit should it have gone since it was seen.
async fn check_authorization(
    connection: &zbus::Connection,
    sender: &UniqueName<'_>,
    action: Action,
) -> Result<Authorization, String> {
    let proxy: zbus::Proxy<'_> = zbus::proxy::Builder::new(connection)
        .destination(POLKIT_NAME)
        .and_then(|b| b.path(POLKIT_PATH))
        .and_then(|b| b.interface(POLKIT_INTERFACE))
        .map(|b| b.cache_properties(CacheProperties::No))
        .map_err(|e| e.to_string())?
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let subject_details = HashMap::from([("name", Value::from(sender.as_str()))]);
    let subject = ("system-bus-name", subject_details);
    let details: HashMap<&str, &str> = HashMap::new();
    let body = (
        subject,
        action.polkit_id(),
        details,
        ALLOW_USER_INTERACTION,
        "",
    );
    let reply: Option<(AuthorizationResult,)> = proxy
        .call_with_flags(
            "CheckAuthorization",
            MethodFlags::NoAutoStart | MethodFlags::AllowInteractiveAuth,
            &body,
        )
        .await
        .map_err(|e| e.to_string())?;
    let ((is_authorized, is_challenge, details),) = reply.ok_or_else(|| "no reply".to_owned())?;
    Ok(Authorization {
        is_authorized,
        is_challenge,
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(is_authorized: bool, is_challenge: bool, details: &[(&str, &str)]) -> Polkit {
        Polkit::Answered(Authorization {
            is_authorized,
            is_challenge,
            details: details
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    fn refusal(r: fdo::Result<()>) -> String {
        match r {
            Err(fdo::Error::AccessDenied(m)) => m,
            other => panic!("not AccessDenied: {other:?}"),
        }
    }

    #[test]
    fn root_may_do_anything_whatever_polkit_says_and_is_not_asked() {
        assert!(!asks_polkit(0));
        for polkit in [
            Polkit::NotAsked,
            Polkit::Absent,
            answered(false, false, &[]),
            answered(false, true, &[]),
            Polkit::Failed("broken".into()),
        ] {
            for action in Action::ALL {
                assert!(decide(0, &polkit, action).is_ok(), "{polkit:?} {action:?}");
            }
        }
    }

    #[test]
    fn without_polkit_on_the_bus_only_root_may_change_state() {
        for uid in [1, 1000, 65534, u32::MAX] {
            assert!(asks_polkit(uid));
            let m = refusal(decide(uid, &Polkit::Absent, Action::Check));
            assert!(m.contains(&format!("uid {uid}")), "{m}");
            assert!(m.contains("only root may"), "{m}");
            assert!(m.contains("polkit is not on the bus"), "{m}");
        }
    }

    #[test]
    fn others_may_do_what_polkit_authorizes_and_nothing_else() {
        for action in Action::ALL {
            assert!(decide(1000, &answered(true, false, &[]), action).is_ok());
            let m = refusal(decide(1000, &answered(false, false, &[]), action));
            assert!(m.contains(action.polkit_id()), "{m}");
            assert!(m.contains("not authorized"), "{m}");
        }
    }

    #[test]
    fn a_refusal_says_whether_polkit_asked_for_authentication() {
        let m = refusal(decide(1000, &answered(false, true, &[]), Action::Upgrade));
        assert!(m.contains("org.releaseupgrader.upgrade"), "{m}");
        assert!(m.contains("authentication is required"), "{m}");
        let dismissed = answered(false, true, &[("polkit.dismissed", "true")]);
        let m = refusal(decide(1000, &dismissed, Action::Apply));
        assert!(m.contains("org.releaseupgrader.apply"), "{m}");
        assert!(m.contains("dialog was dismissed"), "{m}");
    }

    /// Fail closed: no answer is never a yes, nor is a missing question.
    #[test]
    fn a_failure_to_ask_polkit_refuses_and_says_why() {
        let m = refusal(decide(
            1000,
            &Polkit::Failed("org.freedesktop.DBus.Error.NoReply: gone".into()),
            Action::Reset,
        ));
        assert!(m.contains("org.releaseupgrader.reset"), "{m}");
        assert!(m.contains("NoReply: gone"), "{m}");
        let m = refusal(decide(1000, &Polkit::NotAsked, Action::Check));
        assert!(m.contains("not asked"), "{m}");
    }

    #[test]
    fn action_ids_are_distinct_and_in_the_project_namespace() {
        let ids: std::collections::BTreeSet<&str> =
            Action::ALL.iter().map(|a| a.polkit_id()).collect();
        assert_eq!(ids.len(), Action::ALL.len());
        assert!(ids.iter().all(|id| id.starts_with("org.releaseupgrader.")));
    }

    /// The bound on polkit's answer holds against a question never answered.
    #[test]
    fn an_answer_that_never_comes_times_out() {
        let never = std::future::pending::<Result<(), String>>();
        let bounded = within(Duration::from_millis(20), never);
        assert_eq!(
            zbus::block_on(bounded),
            Err("no answer in 0.02 s".to_owned())
        );
        let now = within(Duration::from_secs(60), async { Ok::<_, String>(7) });
        assert_eq!(zbus::block_on(now), Ok(7));
    }
}
