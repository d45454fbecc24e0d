//! do-release-upgrade's modes (`-m desktop|server|cloud`) and what each changes
//! (docs/protocol.md §4, "Modes"). Without a mode only the common behaviour applies.
//!
//! The differences are small and each is a decision taken here from facts, so the dry run
//! can say what a real run would do in this mode:
//! - desktop: desktop tasks and metapackages are never removed
//!   ([`crate::upgrade::plan::DESKTOP_METAPACKAGES`]), the release notes are shown before
//!   the upgrade starts, and a restart is offered at the end;
//! - server: an upgrade over ssh outside screen or tmux is warned about (a dropped
//!   connection would stop it half way), and the front end offers to continue in screen;
//! - cloud: nobody is asked anything (`-f noninteractive` unless a front end is given).

use serde::Serialize;

/// The mode of an upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Desktop,
    Server,
    Cloud,
}

/// Where the user sits, for the server mode's warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Seat {
    /// Not over ssh.
    Local,
    /// Over ssh, inside screen or tmux: a dropped connection leaves the upgrade running.
    Multiplexed,
    /// Over ssh with nothing to keep the upgrade alive when the connection drops.
    BareSsh,
}

/// The seat, from the environment: `SSH_CONNECTION`/`SSH_TTY` say ssh, `STY` (screen) or
/// `TMUX` say a multiplexer.
pub fn seat(var: &dyn Fn(&str) -> Option<String>) -> Seat {
    let set = |name: &str| var(name).is_some_and(|v| !v.is_empty());
    if !set("SSH_CONNECTION") && !set("SSH_TTY") {
        Seat::Local
    } else if set("STY") || set("TMUX") {
        Seat::Multiplexed
    } else {
        Seat::BareSsh
    }
}

/// The seat of this process.
pub fn this_seat() -> Seat {
    seat(&|name| std::env::var(name).ok())
}

/// The server mode's warning, when the seat calls for one.
pub fn ssh_warning(seat: Seat) -> Option<&'static str> {
    (seat == Seat::BareSsh).then_some(
        "This upgrade runs over ssh and not inside screen or tmux: if the connection drops, \
         the upgrade stops part way. Run it inside `screen` or `tmux`.",
    )
}

/// What a mode changes, in words, for the dry run: `desktop_packages` are the installed
/// desktop metapackages, `notes` the release notes' address, `seat` where the user sits.
pub fn describe(
    mode: Option<Mode>,
    desktop_packages: &[String],
    notes: Option<&str>,
    seat: Seat,
) -> Option<String> {
    Some(match mode? {
        Mode::Desktop => format!(
            "Desktop mode: desktop metapackages are never removed ({}); the release notes are \
             shown before the upgrade starts ({}); a restart is offered at the end.",
            if desktop_packages.is_empty() {
                "none installed".to_owned()
            } else {
                format!("installed: {}", desktop_packages.join(", "))
            },
            notes.unwrap_or("the meta-release gives none")
        ),
        Mode::Server => match seat {
            Seat::BareSsh => "Server mode: running over ssh outside screen or tmux; a real run \
                 warns and offers to continue inside screen."
                .to_owned(),
            Seat::Multiplexed => "Server mode: running over ssh inside screen or tmux; a \
                 dropped connection leaves the upgrade running."
                .to_owned(),
            Seat::Local => "Server mode: not over ssh; nothing to warn about.".to_owned(),
        },
        Mode::Cloud => "Cloud mode: nobody is asked anything (noninteractive); the old \
             configuration files are kept."
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn ssh_outside_a_multiplexer_is_a_bare_seat() {
        assert_eq!(seat(&env(&[])), Seat::Local);
        assert_eq!(seat(&env(&[("SSH_TTY", "/dev/pts/1")])), Seat::BareSsh);
        assert_eq!(
            seat(&env(&[("SSH_CONNECTION", "10.0.0.1 5 10.0.0.2 22")])),
            Seat::BareSsh
        );
        assert_eq!(
            seat(&env(&[("SSH_TTY", "/dev/pts/1"), ("STY", "123.pts-1")])),
            Seat::Multiplexed
        );
        assert_eq!(
            seat(&env(&[
                ("SSH_CONNECTION", "x"),
                ("TMUX", "/tmp/tmux-0/default")
            ])),
            Seat::Multiplexed
        );
        // Set but empty counts as unset (`SSH_TTY= sudo …`).
        assert_eq!(seat(&env(&[("SSH_TTY", ""), ("STY", "")])), Seat::Local);
        assert!(ssh_warning(Seat::BareSsh).is_some());
        assert!(ssh_warning(Seat::Multiplexed).is_none());
    }

    #[test]
    fn each_mode_describes_a_different_behaviour() {
        let desktop = describe(
            Some(Mode::Desktop),
            &["task-gnome-desktop".into()],
            Some("https://n"),
            Seat::Local,
        )
        .unwrap();
        assert!(
            desktop.contains("installed: task-gnome-desktop"),
            "{desktop}"
        );
        assert!(desktop.contains("https://n"), "{desktop}");
        let server = describe(Some(Mode::Server), &[], None, Seat::BareSsh).unwrap();
        assert!(
            server.contains("offers to continue inside screen"),
            "{server}"
        );
        assert_ne!(
            server,
            describe(Some(Mode::Server), &[], None, Seat::Local).unwrap()
        );
        assert!(describe(None, &[], None, Seat::BareSsh).is_none());
    }
}
