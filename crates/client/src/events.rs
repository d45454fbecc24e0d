//! The lifecycle events of `--json`: one JSON object a line on stdout, `{"event": NAME, …}`.
//!
//! A program (a GUI, a fleet tool) drives an upgrade from these lines, so their names and
//! fields are a contract: this enum is the one place they are spelled, the schema
//! `docs/events.schema.json` describes them (with the commands' data events: `check`,
//! `plan`, `bootstrap`, …), docs/protocol.md §9 explains them, and a test validates real
//! output against the schema. Free text goes only into `message` and `error` events; what
//! a program acts on (which phase, how far, the exit code) has its own field.

use serde::{Deserialize, Serialize};

/// The phases of an upgrade, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseId {
    /// The system's checks, the target release and its helper pocket.
    Preflight,
    /// The helpers installed (the running release checked beside them).
    Bootstrap,
    /// The package sources pointed at the new release.
    Sources,
    /// The new release's package lists.
    Update,
    /// apt's resolution, the checks of the plan, the confirmation.
    Plan,
    /// The packages fetched.
    Download,
    /// dpkg's part.
    Install,
    /// What removed packages left behind, the helpers removed, the journal cleared.
    Cleanup,
}

impl PhaseId {
    pub const ALL: [PhaseId; 8] = [
        PhaseId::Preflight,
        PhaseId::Bootstrap,
        PhaseId::Sources,
        PhaseId::Update,
        PhaseId::Plan,
        PhaseId::Download,
        PhaseId::Install,
        PhaseId::Cleanup,
    ];

    /// Its place in the run, from 1.
    pub fn number(self) -> usize {
        Self::ALL.iter().position(|p| *p == self).expect("listed") + 1
    }

    /// Its id in the `phase` event and in main.log.
    pub fn name(self) -> &'static str {
        match self {
            PhaseId::Preflight => "preflight",
            PhaseId::Bootstrap => "bootstrap",
            PhaseId::Sources => "sources",
            PhaseId::Update => "update",
            PhaseId::Plan => "plan",
            PhaseId::Download => "download",
            PhaseId::Install => "install",
            PhaseId::Cleanup => "cleanup",
        }
    }

    /// What the text front end calls it.
    pub fn title(self) -> &'static str {
        match self {
            PhaseId::Preflight => "Checking the system",
            PhaseId::Bootstrap => "Installing the new release's apt and dpkg",
            PhaseId::Sources => "Pointing the package sources at the new release",
            PhaseId::Update => "Reading the new release's package lists",
            PhaseId::Plan => "Planning the upgrade",
            PhaseId::Download => "Downloading the packages",
            PhaseId::Install => "Installing the new release",
            PhaseId::Cleanup => "Cleaning up",
        }
    }
}

/// A phase starts, or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseState {
    Start,
    End,
}

/// What a question is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuestionKind {
    /// dpkg asks what to do with a configuration file the user changed.
    Conffile,
    /// A package's debconf question.
    Debconf,
    /// Whether to start the upgrade, asked once the plan (the `upgrade-plan` event) is
    /// known and before anything is downloaded or installed. Choices `Y` and `N`.
    Start,
    /// Another yes/no question of the upgrade itself (e.g. whether obsolete packages leave
    /// with it). Choices `Y` and `N`.
    Confirm,
}

/// A question apt, dpkg or a package asks during the install; it is answered on the
/// terminal (or by the defaults when nobody watches), and reported so a program driving
/// the run can show what it waits on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    pub kind: QuestionKind,
    /// The package asking, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// For a conffile: the configuration file, as a path on the upgraded system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The question as the user reads it.
    pub text: String,
    /// The answers offered (e.g. `["Y", "I", "N", "O", "D", "Z"]` for dpkg's conffile prompt).
    #[serde(default)]
    pub choices: Vec<String>,
    /// What is taken when nobody answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The answer taken by default when nobody was asked (reported after the run);
    /// `None` for a question asked on the terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// The numbers of the `upgrade-plan` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Installed packages upgraded to the new release's version.
    pub upgrades: u64,
    /// Packages newly installed.
    pub installs: u64,
    /// Packages removed (never purged).
    pub removals: u64,
    pub downgrades: u64,
    /// What is still to download, in bytes.
    pub download_bytes: u64,
    /// The names of the packages removed.
    pub removed: Vec<String>,
    /// The names of the packages kept back (not upgraded).
    pub kept_back: Vec<String>,
}

/// The lifecycle events (the commands' own data events are described by the schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A phase of the upgrade starts or ends; an end says whether it succeeded.
    Phase {
        id: PhaseId,
        state: PhaseState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<bool>,
    },
    /// How far a task is: `done` of `total` (`null`: not known) in `unit`, and the
    /// percent (from the counts, or as apt reports it).
    Progress {
        id: u64,
        label: String,
        unit: String,
        done: u64,
        total: Option<u64>,
        percent: Option<f64>,
        /// The item being worked on (a package), when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<String>,
        /// Set on the task's last event, with `ok`.
        #[serde(default)]
        finished: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<bool>,
    },
    /// Something for the user to read (a warning, a decision, a follow-up).
    Message { text: String },
    /// A question is on the terminal.
    Question(Question),
    /// What the upgrade will do, once apt planned it and before it is confirmed (a
    /// `start` question follows unless `-y`): counts of packages and bytes, and the names
    /// of those removed or kept back.
    UpgradePlan(PlanSummary),
    /// The target release's notes (`upgrade -m desktop`; `check --notes` puts them in
    /// its `check` event).
    ReleaseNotes { uri: String, text: String },
    /// A restart finishes the upgrade.
    Reboot { required: bool },
    /// A failure: the message, its causes and a hint; `exit_code` is the `result`'s.
    Error {
        exit_code: u8,
        message: String,
        causes: Vec<String>,
        hint: Option<String>,
    },
    /// Always the last line: the exit code the process returns.
    Result { exit_code: u8 },
}

impl Event {
    /// The event as one JSON line (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("events serialise")
    }
}

/// A percent from counts, when the total is known and not zero.
pub fn percent(done: u64, total: Option<u64>) -> Option<f64> {
    match total {
        Some(total) if total > 0 => {
            Some(((done.min(total) as f64) * 1000.0 / total as f64).round() / 10.0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_name_in_the_event_field() {
        let line = Event::Phase {
            id: PhaseId::Download,
            state: PhaseState::Start,
            ok: None,
        }
        .to_line();
        assert_eq!(line, r#"{"event":"phase","id":"download","state":"start"}"#);
        assert_eq!(
            Event::Result { exit_code: 5 }.to_line(),
            r#"{"event":"result","exit_code":5}"#
        );
        let notes = Event::ReleaseNotes {
            uri: "u".into(),
            text: "t".into(),
        };
        assert!(notes.to_line().starts_with(r#"{"event":"release-notes""#));
    }

    #[test]
    fn the_plan_is_flat_beside_its_event_name_and_start_is_a_question_kind() {
        let plan = Event::UpgradePlan(PlanSummary {
            upgrades: 3,
            installs: 1,
            removals: 1,
            downgrades: 0,
            download_bytes: 2048,
            removed: vec!["old".into()],
            kept_back: Vec::new(),
        });
        let value: serde_json::Value = serde_json::from_str(&plan.to_line()).unwrap();
        assert_eq!(value["event"], "upgrade-plan");
        assert_eq!(value["upgrades"], 3);
        assert_eq!(value["removed"][0], "old");
        assert_eq!(serde_json::from_value::<Event>(value).unwrap(), plan);
        assert_eq!(
            serde_json::to_value(QuestionKind::Start).unwrap(),
            serde_json::json!("start")
        );
    }

    #[test]
    fn a_question_is_flat_beside_its_event_name() {
        let q = Event::Question(Question {
            kind: QuestionKind::Conffile,
            package: Some("demo-conf".into()),
            path: Some("/etc/demo.conf".into()),
            text: "Configuration file '/etc/demo.conf' was modified".into(),
            choices: vec!["Y".into(), "N".into()],
            default: Some("N".into()),
            answer: None,
        });
        let value: serde_json::Value = serde_json::from_str(&q.to_line()).unwrap();
        assert_eq!(value["event"], "question");
        assert_eq!(value["kind"], "conffile");
        assert_eq!(value["path"], "/etc/demo.conf");
        let back: Event = serde_json::from_value(value).unwrap();
        assert_eq!(back, q);
    }

    #[test]
    fn an_unknown_event_name_does_not_parse() {
        assert!(serde_json::from_str::<Event>(r#"{"event":"reslut","exit_code":0}"#).is_err());
        assert!(serde_json::from_str::<Event>(r#"{"event":"result"}"#).is_err());
    }

    #[test]
    fn a_phases_name_is_its_event_id() {
        for id in PhaseId::ALL {
            assert_eq!(serde_json::to_value(id).unwrap(), id.name());
        }
    }

    #[test]
    fn phases_are_numbered_in_run_order() {
        assert_eq!(PhaseId::Preflight.number(), 1);
        assert_eq!(PhaseId::Cleanup.number(), 8);
    }

    #[test]
    fn percent_is_of_the_known_total_and_clamped() {
        assert_eq!(percent(1, Some(3)), Some(33.3));
        assert_eq!(percent(5, Some(4)), Some(100.0));
        assert_eq!(percent(5, Some(0)), None);
        assert_eq!(percent(5, None), None);
    }
}
