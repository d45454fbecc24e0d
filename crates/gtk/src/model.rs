//! What the window shows, as a value: the service's signals and the answers to our calls
//! come in as [`Event`]s, [`Model::apply`] folds them in, and the view draws the model
//! (`ui.rs`). Kept free of GTK so that each rule (which page, a bar that never goes back,
//! when a question is open, what an exit code means) is unit-tested without a display.

/// The pages of the window, named as the test hooks report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Start,
    Progress,
    /// The plan, asking whether to start (the service's `start` question).
    Plan,
    End,
}

impl Page {
    pub fn name(self) -> &'static str {
        match self {
            Page::Start => "start",
            Page::Progress => "progress",
            Page::Plan => "plan",
            Page::End => "end",
        }
    }
}

/// What `CheckRelease` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Checking,
    Available { version: String, codename: String },
    None { reason: String },
    Unreachable(String),
}

/// A question dpkg or a package asks, as the `Question` signal carries it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Question {
    pub id: u32,
    pub kind: String,
    pub package: String,
    pub path: String,
    pub text: String,
    pub choices: Vec<String>,
    pub default: String,
    pub details: String,
}

/// What the upgrade will do (`PlanReady`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub upgrades: u32,
    pub installs: u32,
    pub removals: u32,
    pub download_bytes: u64,
    pub removed: Vec<String>,
    pub kept_back: Vec<String>,
}

impl Question {
    /// Whether to start the upgrade, once planned: the plan page answers it.
    pub fn is_start(&self) -> bool {
        self.kind == "start"
    }

    /// A question that Yes (`Y`) and No (`N`) answer, and nothing else.
    pub fn is_yes_no(&self) -> bool {
        self.choices.len() == 2
            && ["Y", "N"]
                .iter()
                .all(|c| self.choices.iter().any(|x| x.eq_ignore_ascii_case(c)))
    }

    /// A conffile question the two buttons can answer: keep (`N`) or install (`Y`).
    pub fn is_conffile(&self) -> bool {
        self.kind == "conffile"
            && ["Y", "N"]
                .iter()
                .all(|c| self.choices.iter().any(|x| x.eq_ignore_ascii_case(c)))
    }
}

/// How the upgrade ended (`Finished`'s exit code, docs/protocol.md §7).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Upgraded { reboot_required: bool },
    Cancelled,
    Failed { code: i32, message: String },
}

impl Outcome {
    pub fn of(code: i32, message: &str, reboot_required: bool) -> Self {
        match code {
            0 => Outcome::Upgraded { reboot_required },
            130 => Outcome::Cancelled,
            code => Outcome::Failed {
                code,
                message: message.to_owned(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Checked {
        available: bool,
        version: String,
        codename: String,
        reason: String,
    },
    Notes(String),
    /// The release the system runs now (the service's `CurrentRelease`).
    Current(String),
    Unreachable(String),
    UpgradeAsked,
    UpgradeRefused(String),
    Phase {
        phase: String,
        state: String,
        ok: bool,
    },
    Progress {
        percent: f64,
        label: String,
        item: String,
    },
    Message(String),
    Planned(Plan),
    Question(Question),
    /// An answer was sent.
    Answering,
    Answered(u32),
    AnswerRefused(String),
    CancelAsked,
    /// `…Error.TooLate`: dpkg runs.
    CancelTooLate,
    CancelRefused(String),
    Finished {
        code: i32,
        message: String,
        reboot_required: bool,
    },
    RestartAsked,
    RestartRefused(String),
}

/// One line of the details log.
#[derive(Debug, Clone, PartialEq)]
pub enum LogLine {
    PhaseStarted(String),
    PhaseDone(String),
    PhaseFailed(String),
    Message(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub page: Page,
    pub check: Check,
    /// The release the system runs now; empty until the service said.
    pub current: String,
    pub notes: String,
    /// The start page's inline error (a refused `Upgrade`).
    pub start_error: Option<String>,
    pub upgrading: bool,
    pub phase: Option<String>,
    pub percent: f64,
    pub label: String,
    pub item: String,
    pub log: Vec<LogLine>,
    /// The progress page's inline notice (a refused cancel).
    pub notice: Option<String>,
    pub cancelling: bool,
    pub question: Option<Question>,
    pub question_error: Option<String>,
    /// The plan, once the service sent it.
    pub plan: Option<Plan>,
    /// An answer was sent and not yet taken.
    pub answering: bool,
    pub outcome: Option<Outcome>,
    pub restarting: bool,
    pub restart_error: Option<String>,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            page: Page::Start,
            check: Check::Checking,
            current: String::new(),
            notes: String::new(),
            start_error: None,
            upgrading: false,
            phase: None,
            percent: 0.0,
            label: String::new(),
            item: String::new(),
            log: Vec::new(),
            notice: None,
            cancelling: false,
            question: None,
            question_error: None,
            plan: None,
            answering: false,
            outcome: None,
            restarting: false,
            restart_error: None,
        }
    }
}

impl Model {
    /// The upgrade may start: a release is available and nothing runs.
    pub fn can_upgrade(&self) -> bool {
        matches!(self.check, Check::Available { .. }) && !self.upgrading && self.page == Page::Start
    }

    /// A cancel may be asked: an upgrade runs, no cancel is under way, dpkg has not started.
    pub fn can_cancel(&self) -> bool {
        self.upgrading && !self.cancelling && self.notice.is_none()
    }

    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Checked {
                available,
                version,
                codename,
                reason,
            } => {
                self.check = if available {
                    Check::Available { version, codename }
                } else {
                    Check::None { reason }
                };
            }
            Event::Notes(notes) => self.notes = notes,
            Event::Current(current) => self.current = current,
            Event::Unreachable(e) => self.check = Check::Unreachable(e),
            Event::UpgradeAsked => {
                self.start_error = None;
                self.upgrading = true;
                self.page = Page::Progress;
                self.percent = 0.0;
                self.phase = None;
                self.label.clear();
                self.item.clear();
                self.notice = None;
                self.cancelling = false;
                self.outcome = None;
                self.plan = None;
            }
            Event::UpgradeRefused(e) => {
                self.upgrading = false;
                self.page = Page::Start;
                self.start_error = Some(e);
            }
            Event::Phase { phase, state, ok } => {
                let line = match (state.as_str(), ok) {
                    ("start", _) => LogLine::PhaseStarted(phase.clone()),
                    (_, true) => LogLine::PhaseDone(phase.clone()),
                    (_, false) => LogLine::PhaseFailed(phase.clone()),
                };
                self.log.push(line);
                if state == "start" {
                    self.phase = Some(phase);
                }
            }
            Event::Progress {
                percent,
                label,
                item,
            } => {
                // The service never goes back; a late or reordered signal must not either.
                if percent.is_finite() {
                    self.percent = self.percent.max(percent.clamp(0.0, 100.0));
                }
                self.label = label;
                self.item = item;
            }
            Event::Message(text) => self.log.push(LogLine::Message(text)),
            Event::Planned(plan) => self.plan = Some(plan),
            Event::Question(q) => {
                self.question_error = None;
                self.answering = false;
                if q.is_start() && self.upgrading {
                    self.page = Page::Plan;
                }
                self.question = Some(q);
            }
            Event::Answering => self.answering = true,
            Event::Answered(id) => {
                if self.question.as_ref().is_some_and(|q| q.id == id) {
                    self.question = None;
                    self.question_error = None;
                    self.answering = false;
                    if self.page == Page::Plan {
                        self.page = Page::Progress;
                    }
                }
            }
            Event::AnswerRefused(e) => {
                self.answering = false;
                self.question_error = Some(e);
            }
            Event::CancelAsked => self.cancelling = true,
            Event::CancelTooLate => {
                self.cancelling = false;
                self.notice = Some(crate::text::too_late());
            }
            Event::CancelRefused(e) => {
                self.cancelling = false;
                self.notice = Some(crate::text::cancel_failed(&e));
            }
            Event::Finished {
                code,
                message,
                reboot_required,
            } => {
                self.upgrading = false;
                self.cancelling = false;
                self.question = None;
                self.question_error = None;
                self.answering = false;
                if code == 0 {
                    self.percent = 100.0;
                }
                self.outcome = Some(Outcome::of(code, &message, reboot_required));
                self.page = Page::End;
            }
            Event::RestartAsked => {
                self.restarting = true;
                self.restart_error = None;
            }
            Event::RestartRefused(e) => {
                self.restarting = false;
                self.restart_error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conffile() -> Question {
        Question {
            id: 1,
            kind: "conffile".into(),
            path: "/etc/demo.conf".into(),
            choices: ["Y", "I", "N", "O"].map(String::from).to_vec(),
            default: "N".into(),
            ..Question::default()
        }
    }

    fn upgrading() -> Model {
        let mut m = Model::default();
        m.apply(Event::Checked {
            available: true,
            version: "2".into(),
            codename: "beta".into(),
            reason: String::new(),
        });
        m.apply(Event::UpgradeAsked);
        m
    }

    fn start_question() -> Question {
        Question {
            id: 1,
            kind: "start".into(),
            text: "Do you want to start the upgrade?".into(),
            choices: ["Y", "N"].map(String::from).to_vec(),
            default: "N".into(),
            ..Question::default()
        }
    }

    #[test]
    fn the_start_question_shows_the_plan_page_until_it_is_answered() {
        let mut m = upgrading();
        let plan = Plan {
            upgrades: 3,
            removals: 1,
            removed: vec!["old".into()],
            ..Plan::default()
        };
        // The signals come on separate streams: the question may come first.
        m.apply(Event::Question(start_question()));
        assert_eq!(m.page, Page::Plan);
        assert_eq!(m.plan, None);
        m.apply(Event::Planned(plan.clone()));
        assert_eq!(m.plan, Some(plan));
        assert!(m.can_cancel(), "before dpkg a cancel puts everything back");
        m.apply(Event::Answering);
        assert!(m.answering);
        m.apply(Event::Answered(1));
        assert_eq!(m.page, Page::Progress);
        assert!(!m.answering);
        assert_eq!(m.question, None);
    }

    #[test]
    fn a_refused_start_answer_stays_on_the_plan_page_to_be_given_again() {
        let mut m = upgrading();
        m.apply(Event::Question(start_question()));
        m.apply(Event::Answering);
        m.apply(Event::AnswerRefused("no".into()));
        assert_eq!(m.page, Page::Plan);
        assert!(!m.answering);
        assert_eq!(m.question_error.as_deref(), Some("no"));
        // Declined: the service puts everything back and says 130.
        m.apply(Event::Finished {
            code: 130,
            message: String::new(),
            reboot_required: false,
        });
        assert_eq!(m.page, Page::End);
        assert_eq!(m.outcome, Some(Outcome::Cancelled));
    }

    #[test]
    fn yes_no_questions_are_those_answered_by_y_and_n_only() {
        assert!(start_question().is_yes_no());
        assert!(!conffile().is_yes_no(), "a conffile also offers I and O");
        let free = Question {
            kind: "debconf".into(),
            ..Question::default()
        };
        assert!(!free.is_yes_no());
    }

    #[test]
    fn the_upgrade_button_waits_for_an_available_release() {
        let mut m = Model::default();
        assert!(!m.can_upgrade(), "still checking");
        m.apply(Event::Checked {
            available: false,
            version: String::new(),
            codename: String::new(),
            reason: "no newer release".into(),
        });
        assert!(!m.can_upgrade());
        assert_eq!(
            m.check,
            Check::None {
                reason: "no newer release".into()
            }
        );
        m.apply(Event::Unreachable("no bus".into()));
        assert!(!m.can_upgrade());
        let m = upgrading();
        assert_eq!(m.page, Page::Progress);
        assert!(!m.can_upgrade(), "one upgrade at a time");
    }

    #[test]
    fn a_refused_upgrade_goes_back_to_the_start_page_and_says_why() {
        let mut m = upgrading();
        m.apply(Event::UpgradeRefused("Busy".into()));
        assert_eq!(m.page, Page::Start);
        assert_eq!(m.start_error.as_deref(), Some("Busy"));
        assert!(m.can_upgrade());
    }

    #[test]
    fn the_bar_never_goes_back_and_ignores_nonsense() {
        let mut m = upgrading();
        for p in [10.0, 30.0, 20.0, f64::NAN, -5.0, 250.0] {
            m.apply(Event::Progress {
                percent: p,
                label: "l".into(),
                item: "i".into(),
            });
        }
        assert_eq!(m.percent, 100.0);
        let mut m = upgrading();
        m.apply(Event::Progress {
            percent: 40.0,
            label: String::new(),
            item: String::new(),
        });
        m.apply(Event::Progress {
            percent: f64::INFINITY,
            label: String::new(),
            item: String::new(),
        });
        assert_eq!(m.percent, 40.0);
    }

    #[test]
    fn phases_become_the_heading_and_log_lines() {
        let mut m = upgrading();
        for (state, ok) in [("start", true), ("end", true)] {
            m.apply(Event::Phase {
                phase: "download".into(),
                state: state.into(),
                ok,
            });
        }
        m.apply(Event::Phase {
            phase: "install".into(),
            state: "start".into(),
            ok: true,
        });
        m.apply(Event::Phase {
            phase: "install".into(),
            state: "end".into(),
            ok: false,
        });
        m.apply(Event::Message("hello".into()));
        assert_eq!(m.phase.as_deref(), Some("install"));
        assert_eq!(
            m.log,
            [
                LogLine::PhaseStarted("download".into()),
                LogLine::PhaseDone("download".into()),
                LogLine::PhaseStarted("install".into()),
                LogLine::PhaseFailed("install".into()),
                LogLine::Message("hello".into()),
            ]
        );
    }

    #[test]
    fn a_question_stays_open_until_its_own_answer_is_taken() {
        let mut m = upgrading();
        m.apply(Event::Question(conffile()));
        m.apply(Event::AnswerRefused("InvalidAnswer".into()));
        assert!(m.question.is_some());
        assert_eq!(m.question_error.as_deref(), Some("InvalidAnswer"));
        m.apply(Event::Answered(2));
        assert!(m.question.is_some(), "another question's answer");
        m.apply(Event::Answered(1));
        assert_eq!(m.question, None);
        assert_eq!(m.question_error, None);
    }

    #[test]
    fn the_end_closes_an_open_question() {
        let mut m = upgrading();
        m.apply(Event::Question(conffile()));
        m.apply(Event::Finished {
            code: 0,
            message: "done".into(),
            reboot_required: true,
        });
        assert_eq!(m.question, None);
        assert_eq!(m.page, Page::End);
        assert_eq!(
            m.outcome,
            Some(Outcome::Upgraded {
                reboot_required: true
            })
        );
        assert_eq!(m.percent, 100.0);
    }

    #[test]
    fn exit_codes_are_upgraded_cancelled_or_failed_with_the_message() {
        assert_eq!(
            Outcome::of(0, "x", false),
            Outcome::Upgraded {
                reboot_required: false
            }
        );
        assert_eq!(Outcome::of(130, "x", true), Outcome::Cancelled);
        assert_eq!(
            Outcome::of(3, "the pocket's signature is bad", true),
            Outcome::Failed {
                code: 3,
                message: "the pocket's signature is bad".into()
            }
        );
        assert!(matches!(Outcome::of(-1, "", false), Outcome::Failed { .. }));
    }

    #[test]
    fn too_late_disables_cancel_and_says_so() {
        let mut m = upgrading();
        assert!(m.can_cancel());
        m.apply(Event::CancelAsked);
        assert!(!m.can_cancel(), "one cancel at a time");
        m.apply(Event::CancelTooLate);
        assert!(!m.can_cancel());
        assert_eq!(m.notice, Some(crate::text::too_late()));
    }

    #[test]
    fn only_a_conffile_question_with_keep_and_install_gets_the_two_buttons() {
        assert!(conffile().is_conffile());
        let lower = Question {
            choices: ["y", "n"].map(String::from).to_vec(),
            ..conffile()
        };
        assert!(lower.is_conffile());
        let no_choices = Question {
            choices: vec![],
            ..conffile()
        };
        assert!(!no_choices.is_conffile());
        let debconf = Question {
            kind: "debconf".into(),
            ..conffile()
        };
        assert!(!debconf.is_conffile());
    }
}
