//! dpkg's and debconf's questions on the user's terminal, while the log keeps everything.
//!
//! An interactive upgrade must let dpkg ask "keep your version of /etc/…?" (with `D`
//! showing the difference in a pager) and debconf ask its questions, on the terminal the
//! user watches. Everything apt, dpkg and the maintainer scripts print must also reach
//! `apt-term.log`, and while nothing is asked the screen belongs to our progress, not to
//! apt's chatter. Passing our own terminal to apt gives the first and loses the other
//! two; piping apt's output (what the tool did before) hid the question: the user saw a
//! progress bar that never moved while dpkg waited for an answer typed blind.
//!
//! So apt runs on a pseudo-terminal of our own ([`open`]): to apt it is a terminal (it
//! runs dpkg on a pty of its own behind it, as always), and we read all it prints. The
//! output is logged as it comes and held back ([`Watch`]) until it turns out to be a
//! question: dpkg's conffile prompt (apt reports it on its status descriptor,
//! `pmconffile`, dpkg on its own as `conffile-prompt`), a full-screen frontend (the
//! alternate screen is switched on), or a line left waiting for input that reads like a
//! prompt. Then the progress is put away, the held-back text and everything after it is
//! shown, and the user's keystrokes go to the pty with our terminal in raw mode (the pty
//! echoes, as a terminal does); the next progress line from apt or dpkg means the
//! question was answered, and the terminal and the progress come back.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::{self, OptionalActions, QueueSelector, Termios};

use crate::upgrade::term::Status;

/// A pseudo-terminal: the side we read and write, and the side the program gets.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a pty with the settings and size of the terminal `like` (the user's), so that
/// what runs on it wraps lines and erases characters as the user's terminal does.
pub fn open(like: Option<impl AsFd>) -> io::Result<Pty> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
        Ok(slave) => slave,
        // Before Linux 4.13: by name.
        Err(_) => {
            let name = rustix::pty::ptsname(&master, Vec::new())?;
            rustix::fs::open(
                name.as_c_str(),
                OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )?
        }
    };
    if let Some(like) = like {
        if let Ok(settings) = termios::tcgetattr(&like) {
            let _ = termios::tcsetattr(&slave, OptionalActions::Now, &settings);
        }
        if let Ok(size) = termios::tcgetwinsize(&like) {
            let _ = termios::tcsetwinsize(&slave, size);
        }
    } else {
        // No terminal to take after (a program answers): the classic size, so that
        // debconf and dpkg wrap their questions as on one.
        let size = termios::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = termios::tcsetwinsize(&slave, size);
    }
    Ok(Pty { master, slave })
}

/// The user's terminal switched to raw input while a question is open: every key goes to
/// the pty as typed (the pty echoes it and its own line discipline edits the line), and
/// the settings it had come back afterwards, also when the relay ends early.
#[derive(Default)]
pub struct RawInput {
    saved: Option<Termios>,
}

impl RawInput {
    /// Raw input on `terminal`, output processing left as it was (so our own lines still
    /// end where they should). Keys typed before the question are thrown away: a key
    /// pressed while the progress ran must not answer a question nobody has read yet.
    pub fn enable(&mut self, terminal: impl AsFd) {
        if self.saved.is_some() {
            return;
        }
        let Ok(saved) = termios::tcgetattr(&terminal) else {
            return;
        };
        let mut raw = saved.clone();
        raw.make_raw();
        raw.output_modes = saved.output_modes;
        let _ = termios::tcflush(&terminal, QueueSelector::IFlush);
        if termios::tcsetattr(&terminal, OptionalActions::Now, &raw).is_ok() {
            self.saved = Some(saved);
        }
    }

    /// The terminal's own settings back.
    pub fn restore(&mut self, terminal: impl AsFd) {
        if let Some(saved) = self.saved.take() {
            let _ = termios::tcsetattr(&terminal, OptionalActions::Now, &saved);
        }
    }
}

/// What is being asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Asked {
    /// dpkg asks what to do with a configuration file the user changed.
    Conffile { path: String },
    /// A program switched to the full screen (debconf's dialog frontend, a pager).
    FullScreen,
    /// A line that waits for input (debconf's readline frontend, a script's `read`).
    Prompt { text: String },
}

impl Asked {
    /// One line for the log and the `question` event.
    pub fn describe(&self) -> String {
        match self {
            Asked::Conffile { path } => format!("what to do with the changed {path}"),
            Asked::FullScreen => "a full-screen question".into(),
            Asked::Prompt { text } => format!("\"{text}\""),
        }
    }
}

/// What the relay does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Put the progress away, switch the terminal to raw input and pass keys on.
    Ask(Asked),
    /// Copy these bytes to the user's terminal.
    Show(Vec<u8>),
    /// The question was answered: the terminal and the progress come back.
    Answered,
}

/// How much held-back output is kept for a question: the prompt and what explains it.
const HELD_MAX: usize = 16 * 1024;

/// Decides, from what apt prints and reports, when a question is open (pure: the relay
/// around it does the reading and writing).
#[derive(Debug, Default)]
pub struct Watch {
    asking: Option<Asked>,
    /// Output since the last progress line, not shown yet.
    held: Vec<u8>,
}

impl Watch {
    pub fn asking(&self) -> Option<&Asked> {
        self.asking.as_ref()
    }

    /// Output from the pty.
    pub fn output(&mut self, chunk: &[u8]) -> Vec<Step> {
        if self.asking.is_some() {
            return vec![Step::Show(chunk.to_vec())];
        }
        self.held.extend_from_slice(chunk);
        if self.held.len() > HELD_MAX {
            let cut = self.held.len() - HELD_MAX;
            self.held.drain(..cut);
        }
        if switches_to_full_screen(&self.held) {
            return self.ask(Asked::FullScreen);
        }
        Vec::new()
    }

    /// A status line from apt (or dpkg).
    pub fn status(&mut self, status: &Status) -> Vec<Step> {
        match status {
            Status::Conffile { path } if self.asking.is_none() => {
                self.ask(Asked::Conffile { path: path.clone() })
            }
            Status::Conffile { .. } | Status::Error { .. } => Vec::new(),
            Status::Download { .. } | Status::Install { .. } | Status::Dpkg { .. } => {
                self.held.clear();
                if self.asking.take().is_some() {
                    vec![Step::Answered]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Nothing came from the pty for a while: a line left open that reads like a prompt
    /// is a question.
    pub fn idle(&mut self) -> Vec<Step> {
        if self.asking.is_some() {
            return Vec::new();
        }
        match waiting_prompt(&self.held) {
            Some(text) => self.ask(Asked::Prompt { text }),
            None => Vec::new(),
        }
    }

    /// The run ended: a question still open is over.
    pub fn end(&mut self) -> Vec<Step> {
        self.held.clear();
        if self.asking.take().is_some() {
            vec![Step::Answered]
        } else {
            Vec::new()
        }
    }

    fn ask(&mut self, asked: Asked) -> Vec<Step> {
        self.asking = Some(asked.clone());
        let mut steps = vec![Step::Ask(asked)];
        let held = std::mem::take(&mut self.held);
        if !held.is_empty() {
            steps.push(Step::Show(held));
        }
        steps
    }
}

/// Whether the output switches to the alternate screen (xterm's `?1049h`, `?1047h`,
/// `?47h`), as dialog, whiptail and pagers do.
fn switches_to_full_screen(bytes: &[u8]) -> bool {
    [&b"\x1b[?1049h"[..], b"\x1b[?1047h", b"\x1b[?47h"]
        .iter()
        .any(|seq| bytes.windows(seq.len()).any(|w| w == *seq))
}

/// The last line of `bytes` when it is left open (no newline after it) and ends like a
/// prompt: `?`, `:`, `]` or `>`, maybe followed by spaces. dpkg's "(Reading database …
/// 45%" and progress meters end otherwise.
fn waiting_prompt(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    if text.ends_with('\n') {
        return None;
    }
    let line = text.rsplit(['\n', '\r']).next()?.trim_end();
    let plain = strip_escapes(line);
    let last = plain.trim_end().chars().last()?;
    matches!(last, '?' | ':' | ']' | '>').then(|| plain.trim().to_owned())
}

/// The text of a line without terminal escape sequences (CSI `ESC [ … final`).
fn strip_escapes(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(percent: f64) -> Status {
        Status::Install {
            package: "demo-conf".into(),
            percent,
            what: "Configuring demo-conf".into(),
        }
    }

    #[test]
    fn output_is_held_back_until_a_conffile_question_then_shown_with_it() {
        let mut watch = Watch::default();
        assert_eq!(watch.output(b"Setting up demo-conf (2.0-1) ...\r\n"), []);
        assert_eq!(
            watch.output(b"Configuration file '/etc/demo.conf'\r\n ==> Modified\r\n"),
            []
        );
        let steps = watch.status(&Status::Conffile {
            path: "/etc/demo.conf".into(),
        });
        assert_eq!(
            steps,
            [
                Step::Ask(Asked::Conffile {
                    path: "/etc/demo.conf".into()
                }),
                Step::Show(
                    b"Setting up demo-conf (2.0-1) ...\r\nConfiguration file '/etc/demo.conf'\r\n ==> Modified\r\n"
                        .to_vec()
                )
            ]
        );
        // The prompt that follows goes straight to the screen, and so does the echo.
        let prompt = b" *** demo.conf (Y/I/N/O/D/Z) [default=N] ? ";
        assert_eq!(watch.output(prompt), [Step::Show(prompt.to_vec())]);
        assert_eq!(watch.output(b"N\r\n"), [Step::Show(b"N\r\n".to_vec())]);
        // Progress again: answered, and the output is held back again.
        assert_eq!(watch.status(&progress(90.0)), [Step::Answered]);
        assert_eq!(watch.output(b"more\r\n"), []);
        assert_eq!(watch.asking(), None);
    }

    #[test]
    fn progress_lines_drop_what_was_held_back() {
        let mut watch = Watch::default();
        watch.output(b"Unpacking demo-hello ...\r\n");
        assert_eq!(watch.status(&progress(10.0)), []);
        let steps = watch.status(&Status::Conffile {
            path: "/etc/x".into(),
        });
        assert_eq!(
            steps,
            [Step::Ask(Asked::Conffile {
                path: "/etc/x".into()
            })]
        );
    }

    #[test]
    fn a_line_left_waiting_that_reads_like_a_prompt_is_a_question() {
        let mut watch = Watch::default();
        watch.output(b"Configuring demo-debconf\r\n-----\r\n\r\nPick a colour:\r\n  1. red  2. blue\r\n\r\nColour: ");
        let steps = watch.idle();
        assert!(
            matches!(&steps[0], Step::Ask(Asked::Prompt { text }) if text == "Colour:"),
            "{steps:?}"
        );
        assert!(matches!(&steps[1], Step::Show(b) if b.starts_with(b"Configuring")));
        // Asked once, not again while open.
        assert_eq!(watch.idle(), []);
    }

    #[test]
    fn progress_meters_and_finished_lines_are_not_prompts() {
        for text in [
            &b"(Reading database ... 45%"[..],
            b"Setting up demo-hello (2.0-1) ...\r\n",
            b"Preparing to unpack .../demo-sh_2_all.deb ...",
            b"",
        ] {
            let mut watch = Watch::default();
            watch.output(text);
            assert_eq!(watch.idle(), [], "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn the_alternate_screen_is_a_question_at_once() {
        let mut watch = Watch::default();
        let steps = watch.output(b"\x1b[?1049h\x1b[1;24r dialog");
        assert_eq!(steps[0], Step::Ask(Asked::FullScreen));
    }

    #[test]
    fn held_back_output_is_bounded() {
        let mut watch = Watch::default();
        for _ in 0..100 {
            watch.output(&[b'x'; 1000]);
        }
        assert!(watch.held.len() <= HELD_MAX);
    }

    #[test]
    fn a_question_open_when_the_run_ends_is_closed() {
        let mut watch = Watch::default();
        watch.status(&Status::Conffile { path: "/e".into() });
        assert_eq!(watch.end(), [Step::Answered]);
        assert_eq!(watch.end(), []);
    }

    #[test]
    fn prompts_are_read_without_escape_sequences() {
        assert_eq!(
            waiting_prompt(b"\x1b[1mContinue?\x1b[0m "),
            Some("Continue?".into())
        );
        assert_eq!(strip_escapes("a\x1b[31mb\x1b[0mc"), "abc");
    }

    #[test]
    fn a_pty_takes_the_size_of_the_terminal_it_is_made_like() {
        let like = open(None::<OwnedFd>).unwrap();
        let size = termios::Winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        termios::tcsetwinsize(&like.slave, size).unwrap();
        let pty = open(Some(&like.slave)).unwrap();
        let got = termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((got.ws_row, got.ws_col), (33, 101));
        assert!(termios::isatty(&pty.slave));
    }
}
