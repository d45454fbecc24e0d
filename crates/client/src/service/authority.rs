//! Who may change state through the service.
//!
//! Read-only methods are open to every caller; the others ask the [`Authority`]. polkit
//! is not consulted yet, so the rule is the one the service keeps without polkit: only
//! callers running as uid 0 (asked of the bus, `GetConnectionUnixUser`, never of the
//! message) may change state. A polkit check, when it comes, plugs in here; nothing
//! else decides.

use zbus::fdo;
use zbus::message::Header;

/// What a caller asks to do, for the refusal message (and the polkit action later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Decides whether a caller may change state.
#[derive(Clone, Copy, Debug, Default)]
pub enum Authority {
    /// Only uid 0.
    #[default]
    RootOnly,
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
        match self {
            Authority::RootOnly => decide_root_only(uid, action),
        }
    }
}

/// The rule without polkit: uid 0 may do anything, nobody else anything that changes
/// state.
pub fn decide_root_only(uid: u32, action: Action) -> fdo::Result<()> {
    if uid == 0 {
        return Ok(());
    }
    let what = match action {
        Action::Check => "check for, download or configure updates",
        Action::Apply => "apply updates or reboot",
        Action::Reset => "reset the device",
        Action::Upgrade => "upgrade the release or cancel the upgrade",
    };
    Err(fdo::Error::AccessDenied(format!(
        "uid {uid} may not {what}: only root may (polkit is not consulted)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uid_0_may_change_state() {
        assert!(decide_root_only(0, Action::Apply).is_ok());
        assert!(decide_root_only(0, Action::Check).is_ok());
        for uid in [1, 1000, 65534, u32::MAX] {
            let err = decide_root_only(uid, Action::Check).unwrap_err();
            assert!(matches!(err, fdo::Error::AccessDenied(_)), "{err:?}");
            assert!(err.to_string().contains(&format!("uid {uid}")), "{err}");
        }
    }
}
