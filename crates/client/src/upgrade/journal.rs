//! The journal of an upgrade, `<state>/upgrade.json`: how far the upgrade got, so that
//! a killed or powered-off upgrade is recognised by the next run and resumed (once
//! packages started changing) or undone (before that).
//!
//! The files it names are relative to the root of the run that reads it, and only the
//! ones the upgrade itself changes are accepted: sources files apt reads, and the media's
//! list. A journal naming anything else (outside the root, or any other file in it) is
//! refused ([`Error::BadState`]) before anything is restored or removed. Journals of
//! earlier versions named the files by absolute path; those are accepted when the path
//! lies below this root.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::confine::RelPath;
use crate::error::Error;
use crate::root::{STATE_DIR, SystemRoot};
use crate::upgrade::sources;

/// The sources file added for an upgrade from media, relative to the root.
pub const MEDIA_LIST: &str = "etc/apt/sources.list.d/release-upgrader-media.list";

/// Steps of an upgrade, in order. Everything before `Installing` can be undone exactly
/// (sources restored from their backups, helpers removed); from `Installing` on, dpkg
/// may have unpacked packages and the way out is forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Helpers installed; the system is otherwise untouched.
    Prepared,
    /// Sources are being or have been rewritten (backups exist for `sources`).
    SourcesRewritten,
    /// The target's indices are downloaded and the plan accepted.
    Planned,
    /// Every package is downloaded.
    Downloaded,
    /// dpkg is changing the system.
    Installing,
    /// Packages are upgraded; obsolete packages and helpers are being removed.
    Installed,
}

/// An upgrade in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeJournal {
    pub from: String,
    pub to: String,
    pub to_version: String,
    pub phase: Phase,
    /// Sources files rewritten, relative to the root (each has a `.distUpgrade` backup
    /// until the upgrade ends); only files [`sources::is_sources_file`] accepts.
    pub sources: Vec<RelPath>,
    /// The sources file added for upgrade media ([`MEDIA_LIST`]), removed on rollback.
    pub media_source: Option<RelPath>,
    /// Upgrade media in use: a directory as this program sees it (not below the root),
    /// only read, and named in the media's sources line.
    pub cdrom: Option<PathBuf>,
    /// The upgrade uses no network (`--without-network`, or media with the network found
    /// down by the first stage): the second stage fetches nothing from it and apt reads
    /// only the media.
    #[serde(default)]
    pub without_network: bool,
    /// Installed packages that came from the distribution before the upgrade: the ones
    /// that may be removed as obsolete afterwards.
    pub from_distribution: Vec<String>,
    /// Obsolete packages that leave with the upgrade's own apt run (removed, never
    /// purged); kept so that a resumed run does the same.
    #[serde(default)]
    pub obsolete: Vec<String>,
    /// How the run that started dpkg answered its questions; a resume answers the same
    /// way, or with the defaults when nobody is there to answer. Journals written before
    /// this was recorded answer as the resuming run can.
    #[serde(default)]
    pub answers: Option<Answers>,
    pub started: String,
}

/// How dpkg's configuration file questions and debconf's questions are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answers {
    /// Nobody answers: dpkg keeps the user's configuration files
    /// (`--force-confdef --force-confold`), debconf takes its defaults (noninteractive).
    Defaults,
    /// The user answers them on the terminal.
    Terminal,
    /// A program driving the run answers them (`-f json`: each question is a `question`
    /// event on stdout, answered by one line on stdin); debconf asks line by line
    /// (`readline`), so that every question can be answered that way.
    Program,
}

impl Answers {
    /// How a run answers that can (`Terminal`) or cannot ask, continuing a run that
    /// answered as `recorded` (`None`: no run started dpkg yet). A run recorded as
    /// unattended stays so: the user chose not to be asked.
    pub fn resumed(recorded: Option<Answers>, now: Answers) -> Answers {
        match recorded {
            Some(Answers::Defaults) => Answers::Defaults,
            Some(Answers::Terminal | Answers::Program) | None => now,
        }
    }

    /// The debconf frontend the packages' questions go through: none set (the system's
    /// own) when the user answers on the terminal.
    pub fn debian_frontend(self) -> Option<&'static str> {
        match self {
            Answers::Defaults => Some("noninteractive"),
            Answers::Terminal => None,
            Answers::Program => Some("readline"),
        }
    }
}

/// The journal's name in the state directory.
const FILE: &str = "upgrade.json";

pub fn path(state: &Path) -> PathBuf {
    state.join(FILE)
}

impl UpgradeJournal {
    /// Reads the journal of an upgrade of `root`, if one is in progress. A journal naming
    /// a file the upgrade does not change, or one outside the root, is refused.
    pub fn load(root: &SystemRoot) -> Result<Option<Self>, Error> {
        let path = path(&root.state_dir());
        let Some(bytes) = crate::json_state::read(&path)? else {
            return Ok(None);
        };
        Self::parse(root, &bytes)
            .map(Some)
            .map_err(|reason| Error::BadState { file: path, reason })
    }

    fn parse(root: &SystemRoot, bytes: &[u8]) -> Result<Self, String> {
        let unreadable =
            |e: serde_json::Error| crate::json_state::unreadable_reason("upgrade journal", e);
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(unreadable)?;
        // Earlier versions: absolute paths, accepted below this root only.
        let below_root = |v: &mut serde_json::Value| -> Result<(), String> {
            if let Some(text) = v.as_str()
                && text.starts_with('/')
            {
                let relative = RelPath::below(root.dir(), Path::new(text)).map_err(|_| {
                    format!(
                        "names {text}, which is not below {}: the journal was written for \
                         another root or altered, so it is not acted on",
                        root.dir().display()
                    )
                })?;
                *v = relative.as_str().into();
            }
            Ok(())
        };
        if let Some(files) = value.get_mut("sources").and_then(|v| v.as_array_mut()) {
            files.iter_mut().try_for_each(below_root)?;
        }
        if let Some(media) = value.get_mut("media_source") {
            below_root(media)?;
        }
        let journal: Self = serde_json::from_value(value).map_err(unreadable)?;
        journal.check()?;
        Ok(journal)
    }

    /// Refuses what the upgrade never writes into its journal.
    fn check(&self) -> Result<(), String> {
        if let Some(file) = self.sources.iter().find(|f| !sources::is_sources_file(f)) {
            return Err(format!(
                "names {file} among the sources files it rewrote, but the upgrade only \
                 rewrites etc/apt/sources.list and etc/apt/sources.list.d/*.list or *.sources; \
                 it is not acted on"
            ));
        }
        if let Some(media) = self
            .media_source
            .as_ref()
            .filter(|m| m.as_str() != MEDIA_LIST)
        {
            return Err(format!(
                "names {media} as the media's sources file, which is {MEDIA_LIST}; it is not \
                 acted on"
            ));
        }
        if let Some(cdrom) = &self.cdrom {
            let text = cdrom.to_str().unwrap_or("\n");
            let plain = cdrom.is_absolute()
                && !text.chars().any(char::is_control)
                && !cdrom
                    .components()
                    .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
            if !plain {
                return Err(format!(
                    "names {cdrom:?} as the upgrade media, which is not an absolute path of \
                     printable characters without `..`; it is not acted on"
                ));
            }
        }
        Ok(())
    }

    /// Writes the journal durably into `root`'s state directory (never through a
    /// symlink that could lead out of the root).
    pub fn save(&self, root: &SystemRoot) -> Result<(), Error> {
        root.create_dir(STATE_DIR)?
            .save_json(&RelPath::new(FILE).expect("a plain name"), self)
    }

    /// Moves to `phase` and records it durably.
    pub fn advance(&mut self, root: &SystemRoot, phase: Phase) -> Result<(), Error> {
        self.phase = phase;
        self.save(root)?;
        crate::crashpoint::reached("upgrade phase");
        Ok(())
    }

    pub fn clear(root: &SystemRoot) -> Result<(), Error> {
        if let Some(state) = root.open_dir(STATE_DIR)?
            && state.remove_file(&RelPath::new(FILE).expect("a plain name"))?
        {
            state.sync()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> SystemRoot {
        SystemRoot::new("/r")
    }

    fn journal(sources: serde_json::Value, media: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "from": "bookworm", "to": "trixie", "to_version": "13", "phase": "planned",
            "sources": sources, "media_source": media, "cdrom": "/media/cdrom",
            "from_distribution": [], "started": "2026-01-01T00:00:00+00:00",
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn files_are_stored_relative_to_the_root_and_read_back() {
        let loaded = UpgradeJournal::parse(
            &root(),
            &journal(
                serde_json::json!(["etc/apt/sources.list", "etc/apt/sources.list.d/a.sources"]),
                MEDIA_LIST.into(),
            ),
        )
        .unwrap();
        assert_eq!(
            loaded.sources[1].as_str(),
            "etc/apt/sources.list.d/a.sources"
        );
        let saved = serde_json::to_string(&loaded).unwrap();
        assert!(saved.contains("\"etc/apt/sources.list\""), "{saved}");
        assert!(!saved.contains("\"/r/"), "{saved}");
        assert_eq!(
            UpgradeJournal::parse(&root(), saved.as_bytes()).unwrap(),
            loaded
        );
    }

    #[test]
    fn a_journal_of_an_earlier_version_is_read_below_this_root() {
        let loaded = UpgradeJournal::parse(
            &root(),
            &journal(
                serde_json::json!(["/r/etc/apt/sources.list"]),
                format!("/r/{MEDIA_LIST}").into(),
            ),
        )
        .unwrap();
        assert_eq!(loaded.sources[0].as_str(), "etc/apt/sources.list");
        assert_eq!(loaded.media_source.unwrap().as_str(), MEDIA_LIST);
    }

    #[test]
    fn files_the_upgrade_does_not_change_are_refused() {
        let media = serde_json::Value::Null;
        for bad in [
            "/var/lib",
            "/etc/apt/sources.list",
            "/r/../etc/apt/sources.list",
            "../etc/apt/sources.list",
            "etc/apt/sources.list.d/../../../var/lib",
            "var/lib/dpkg/status",
            "etc/apt/sources.list.d",
            "etc/apt/sources.list.d/x.conf",
            "etc/apt/sources.list.d/sub/x.list",
            "etc/apt/trusted.gpg.d/key.list",
            "etc/apt/sources.list.d/a b.list",
        ] {
            let err =
                UpgradeJournal::parse(&root(), &journal(serde_json::json!([bad]), media.clone()))
                    .unwrap_err();
            assert!(
                err.contains("not acted on") || err.contains("not a path"),
                "{bad}: {err}"
            );
        }
        for bad in [
            "/var/lib",
            "/r/var/lib",
            "etc/apt/sources.list",
            "/r/etc/apt/sources.list",
        ] {
            assert!(
                UpgradeJournal::parse(&root(), &journal(serde_json::json!([]), bad.into()))
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn upgrade_media_must_be_a_plain_absolute_path() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&journal(serde_json::json!([]), serde_json::Value::Null))
                .unwrap();
        for bad in [
            "media",
            "/media/../etc",
            "/media/cd\ndeb [trusted=yes] http://x y z",
        ] {
            value["cdrom"] = bad.into();
            let bytes = serde_json::to_vec(&value).unwrap();
            assert!(UpgradeJournal::parse(&root(), &bytes).is_err(), "{bad:?}");
        }
        value["cdrom"] = "/media/user/Debian 13 amd64".into();
        let bytes = serde_json::to_vec(&value).unwrap();
        assert!(UpgradeJournal::parse(&root(), &bytes).is_ok());
    }

    #[test]
    fn a_bad_journal_is_a_bad_state_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        std::fs::create_dir_all(root.state_dir()).unwrap();
        assert_eq!(UpgradeJournal::load(&root).unwrap(), None);
        std::fs::write(
            path(&root.state_dir()),
            journal(serde_json::json!([]), "/var/lib".into()),
        )
        .unwrap();
        let err = UpgradeJournal::load(&root).unwrap_err();
        assert!(err.is_bad_state(), "{err:?}");
        assert!(err.to_string().contains("upgrade.json"), "{err}");
    }
}
