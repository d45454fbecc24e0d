//! `com.canonical.SystemImage` at `/Service`: system-image 3.x's DBus API, which the
//! phone's settings panel drives, over this client's image flow.
//!
//! Wire-compatible with UBports system-image 3.x (`systemimage/dbus.py`): the same
//! names, signatures and argument names (the shipped introspection XML,
//! `dist/dbus-1/interfaces/com.canonical.SystemImage.xml`, is checked against it), and
//! the same semantics: the long calls (`CheckForUpdate`, `DownloadUpdate`,
//! `ApplyUpdate`) return at once and answer with signals from a worker thread; a check
//! in progress answers a second `CheckForUpdate` with the last status; a failure holds
//! until the next check, each `DownloadUpdate` meanwhile answering `UpdateFailed` with
//! the count raised; `auto_download` 1 or 2 downloads right after a check that found an
//! update (system-image cannot tell wifi either, so 1 acts as 2); a cancelled download
//! fails with "Canceled"; invalid settings are ignored; firmware methods answer as
//! system-image does without `afirmflasher`.
//!
//! Where this differs, on purpose: `ApplyUpdate` applies in place (journaled, as `image
//! apply`) and then reboots through logind, sending `Applied` then `Rebooting`;
//! `PauseDownload` holds the transfer (resumed by `DownloadUpdate`, from where it was),
//! and sends `UpdatePaused`; state-changing calls need the [`Authority`]'s consent
//! (`org.freedesktop.DBus.Error.AccessDenied` otherwise); a method that cannot do its
//! work answers with a named DBus error instead of ending the service.
//!
//! The decisions are in [`State`] (pure, unit-tested); the interface only authorizes,
//! calls it, and does the I/O it says.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use zbus::fdo;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use crate::error::Error;
use crate::fetch::Fetcher;
use crate::image::Layout;
use crate::image::apply::{self, Step, Target};
use crate::image::client::{Checked, Client, Downloaded, Options};
use crate::image::config::Config;
use crate::image::optout;
use crate::progress::Progress;
use crate::reboot;
use crate::root::SystemRoot;
use crate::service::authority::{Action, Authority};
use crate::service::settings::{self, Settings};
use crate::service::{Served as _, Wake};

/// The bus name, object path and interface.
pub const NAME: &str = "com.canonical.SystemImage";
pub const PATH: &str = "/Service";
pub const INTERFACE: &str = "com.canonical.SystemImage";

/// The command file the recovery reads, in the configured `[updater] cache_partition`
/// (this client's `image apply --recovery` writes it there too).
pub const RECOVERY_COMMAND: &str = "ubuntu_command";
/// Where system-image reads the date of the last update from, when it exists.
pub const LAST_UPDATE_FILE: &str = "/userdata/.last_update";

/// What `FactoryReset` writes for the recovery (system-image's `factory_reset`).
pub const FACTORY_RESET: &str = "format data\n";
/// What `ProductionReset` writes (system-image's `production_reset`).
pub const PRODUCTION_RESET: &str = "format data\nenable factory_wipe\n";

/// What a check found, as `UpdateAvailableStatus` and `Information` tell it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub is_available: bool,
    /// The target build, as a string ("" without an update).
    pub version: String,
    /// The bytes of every file of the winning path.
    pub size: u64,
    pub version_detail: String,
    /// Why the check failed ("" when it did not).
    pub error: String,
}

impl Update {
    pub fn of(checked: &Checked) -> Update {
        let last = checked.winner.last().map(|&i| checked.image(i));
        Update {
            is_available: last.is_some(),
            version: last.map(|i| i.version.to_string()).unwrap_or_default(),
            size: checked
                .winner
                .iter()
                .map(|&i| checked.image(i).size())
                .fold(0, u64::saturating_add),
            version_detail: last
                .and_then(|i| i.version_detail.clone())
                .unwrap_or_default(),
            error: String::new(),
        }
    }

    pub fn failed(reason: String) -> Update {
        Update {
            error: reason,
            ..Update::default()
        }
    }

    /// The size as the signal carries it (`i`).
    pub fn size_i32(&self) -> i32 {
        i32::try_from(self.size).unwrap_or(i32::MAX)
    }
}

/// One channel of the last check's `channels.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRow {
    pub name: String,
    pub hidden: bool,
    pub alias: bool,
    pub redirect: bool,
}

/// What `DownloadUpdate` does now.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin<P> {
    /// A paused download goes on.
    Resume,
    /// Nothing: no update, not checked, or a download under way.
    Nothing,
    /// The failure state holds until the next check: `UpdateFailed(count, reason)`.
    Fail(i32, String),
    /// Download these.
    Start(P),
}

/// What `ApplyUpdate` does now.
#[derive(Debug, PartialEq, Eq)]
pub enum ApplyStart<P> {
    /// A download or an apply is under way: `Applied(false)`, nothing else.
    Busy,
    /// Nothing downloaded to apply (unless the recovery has a command waiting).
    NotApplicable,
    Go(P),
}

/// The service's state between calls. `P` is what a check prepared for the download and
/// the apply (the client and its verified documents; `()` in the tests).
#[derive(Debug)]
pub struct State<P> {
    pub checking: bool,
    pub downloading: bool,
    pub paused: bool,
    pub applying: bool,
    pub applicable: bool,
    pub failure_count: i32,
    pub last_error: String,
    pub update: Option<Update>,
    pub channels: Option<Vec<ChannelRow>>,
    /// `SetChannel`/`SetBuild`: for this run of the service only, as system-image.
    pub channel: Option<String>,
    pub build: Option<u64>,
    pub percentage: i32,
    pub cancel: Arc<AtomicBool>,
    pub prepared: Option<P>,
}

impl<P> Default for State<P> {
    fn default() -> Self {
        State {
            checking: false,
            downloading: false,
            paused: false,
            applying: false,
            applicable: false,
            failure_count: 0,
            last_error: String::new(),
            update: None,
            channels: None,
            channel: None,
            build: None,
            percentage: 0,
            cancel: Arc::new(AtomicBool::new(false)),
            prepared: None,
        }
    }
}

impl<P> State<P> {
    /// `CheckForUpdate`: `Ok(())` to start a check (the failure state is reset), or
    /// `Err(status)` while one runs: the last status to send again, if any.
    pub fn begin_check(&mut self) -> Result<(), Option<Update>> {
        if self.checking {
            return Err(self.update.clone());
        }
        self.checking = true;
        self.failure_count = 0;
        self.last_error.clear();
        self.cancel = Arc::new(AtomicBool::new(false));
        Ok(())
    }

    /// The check ended; returns whether to download now (`auto_download` 1 or 2).
    pub fn check_finished(
        &mut self,
        update: Update,
        prepared: Option<P>,
        channels: Option<Vec<ChannelRow>>,
        auto_download: &str,
    ) -> bool {
        self.checking = false;
        let download = update.is_available && matches!(auto_download.trim(), "1" | "2");
        self.update = Some(update);
        self.channels = channels;
        if !self.downloading {
            self.prepared = prepared;
            self.applicable = false;
        }
        download && !self.downloading
    }

    /// `DownloadUpdate`.
    pub fn begin_download(&mut self) -> Begin<P> {
        if self.downloading && self.paused {
            self.paused = false;
            return Begin::Resume;
        }
        if self.downloading || !self.update.as_ref().is_some_and(|u| u.is_available) {
            return Begin::Nothing;
        }
        if self.failure_count > 0 {
            self.failure_count += 1;
            return Begin::Fail(self.failure_count, self.last_error.clone());
        }
        let Some(prepared) = self.prepared.take() else {
            return Begin::Nothing;
        };
        self.downloading = true;
        self.paused = false;
        self.percentage = 0;
        self.cancel = Arc::new(AtomicBool::new(false));
        Begin::Start(prepared)
    }

    /// The download ended: `Ok(())` → `UpdateDownloaded`, else `UpdateFailed(count,
    /// reason)`, returned.
    pub fn download_finished(
        &mut self,
        prepared: P,
        outcome: Result<(), String>,
    ) -> Option<(i32, String)> {
        self.downloading = false;
        self.paused = false;
        self.prepared = Some(prepared);
        match outcome {
            Ok(()) => {
                self.failure_count = 0;
                self.last_error.clear();
                self.applicable = true;
                None
            }
            Err(reason) => {
                self.failure_count += 1;
                self.last_error = reason.clone();
                self.applicable = false;
                Some((self.failure_count, reason))
            }
        }
    }

    /// `PauseDownload`'s answer: "" when a download was paused.
    pub fn pause(&mut self) -> &'static str {
        if self.downloading {
            self.paused = true;
            ""
        } else {
            "not downloading"
        }
    }

    /// `CancelUpdate`: stops a check or download under way (it then fails with
    /// "Canceled"); always answers "".
    pub fn cancel(&mut self) -> &'static str {
        self.cancel.store(true, Ordering::SeqCst);
        self.paused = false;
        ""
    }

    /// `ApplyUpdate`.
    pub fn begin_apply(&mut self) -> ApplyStart<P> {
        if self.applying || self.downloading {
            return ApplyStart::Busy;
        }
        if !self.applicable {
            return ApplyStart::NotApplicable;
        }
        match self.prepared.take() {
            Some(p) => {
                self.applying = true;
                ApplyStart::Go(p)
            }
            None => ApplyStart::NotApplicable,
        }
    }

    /// The apply ended (the download is used up either way).
    pub fn apply_finished(&mut self) {
        self.applying = false;
        self.applicable = false;
    }

    /// Whether work is under way (the service does not time out meanwhile).
    pub fn busy(&self) -> bool {
        self.checking || self.downloading || self.applying
    }

    /// `GetChannels`: the visible channels of the last check, sorted.
    pub fn visible_channels(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .channels
            .iter()
            .flatten()
            .filter(|c| !c.hidden && !c.alias && !c.redirect)
            .map(|c| c.name.clone())
            .collect();
        names.sort();
        names
    }

    /// `SetChannel`: whether the last check's channels have it (then it is used).
    pub fn set_channel(&mut self, channel: &str) -> bool {
        let known = self.channels.iter().flatten().any(|c| c.name == channel);
        if known {
            self.channel = Some(channel.to_owned());
        }
        known
    }
}

/// The device facts `Information` reports besides the state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub build: u64,
    pub device: String,
    pub channel: String,
    pub version_detail: String,
    pub last_update_date: String,
    pub last_check_date: String,
}

/// `Information()`'s mapping, as system-image 3.x builds it.
pub fn information(facts: &Facts, update: Option<&Update>) -> HashMap<String, String> {
    let current = facts.build.to_string();
    let (target, target_detail) = match update {
        None => ("-1".to_owned(), String::new()),
        Some(u) if !u.is_available => (current.clone(), facts.version_detail.clone()),
        Some(u) => (u.version.clone(), u.version_detail.clone()),
    };
    HashMap::from([
        ("current_build_number".to_owned(), current),
        ("device_name".to_owned(), facts.device.clone()),
        ("channel_name".to_owned(), facts.channel.clone()),
        (
            "last_update_date".to_owned(),
            facts.last_update_date.clone(),
        ),
        ("version_detail".to_owned(), facts.version_detail.clone()),
        ("last_check_date".to_owned(), facts.last_check_date.clone()),
        ("target_build_number".to_owned(), target),
        ("target_version_detail".to_owned(), target_detail),
    ])
}

/// A local date as system-image writes it (`str(datetime)` to the second).
pub fn format_date(time: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Local>::from(time)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// system-image's `last_update_date()`: the time of `/userdata/.last_update`, else of the
/// newest configuration file, else "Unknown".
pub fn last_update_date(root: &SystemRoot, config_files: &[std::path::PathBuf]) -> String {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    mtime(&root.path(LAST_UPDATE_FILE))
        .or_else(|| config_files.iter().filter_map(|p| mtime(p)).max())
        .map(format_date)
        .unwrap_or_else(|| "Unknown".to_owned())
}

/// What a check prepared: its client and verified documents, and the files downloaded.
pub struct Prepared {
    client: Client,
    checked: Checked,
    files: Vec<Downloaded>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("target", &self.checked.target())
            .field("files", &self.files.len())
            .finish()
    }
}

/// Everything the interface and its workers share.
pub struct Shared {
    root: SystemRoot,
    fetcher: Fetcher,
    authority: Authority,
    wake: super::Waker,
    state: Mutex<State<Prepared>>,
    /// Signalled when a pause ends (or a cancel wakes a paused download).
    resumed: Condvar,
}

impl Shared {
    pub fn new(
        root: SystemRoot,
        fetcher: Fetcher,
        authority: Authority,
        wake: Sender<Wake>,
    ) -> Self {
        Shared {
            root,
            fetcher,
            authority,
            wake: super::Waker::new(wake),
            state: Mutex::new(State::default()),
            resumed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<Prepared>> {
        // A worker that panicked left the state as it was; go on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether work is under way.
    pub fn busy(&self) -> bool {
        self.state().busy()
    }

    /// Whether an apply is under way (`Exit()` waits for it).
    pub fn applying(&self) -> bool {
        self.state().applying
    }

    fn exit(&self) {
        self.wake.exit();
    }

    fn config(&self) -> fdo::Result<Config> {
        Config::load(&self.root).map_err(|e| fdo::Error::Failed(reason(&e)))
    }

    fn settings(&self) -> fdo::Result<Settings> {
        Settings::load(&self.root).map_err(|e| fdo::Error::Failed(reason(&e)))
    }

    /// Reboots into `into` through logind on the service's bus; `systemctl` only when
    /// the root is this machine's.
    fn reboot(&self, connection: &zbus::Connection, into: reboot::Into) -> bool {
        let blocking = zbus::blocking::Connection::from(connection.clone());
        match reboot::reboot_on(&blocking, into, self.root.is_host()) {
            Ok(_) => true,
            Err(e) => {
                log::error!("rebooting: {e}");
                false
            }
        }
    }
}

/// An error and its causes on one line: the reason a signal carries.
pub fn reason(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

type Signals = super::Signals<Shared>;

impl super::Served for Shared {
    const PATH: &'static str = PATH;

    fn keepalive(&self) {
        self.wake.keepalive();
    }
}

impl Signals {
    fn update_available_status(&self, update: &Update, downloading: bool, error: &str) {
        // For Information()'s last_check_date, as system-image records it.
        let now = format_date(std::time::SystemTime::now());
        if let Err(e) = settings::update(&self.shared.root, |s| s.record("last_check_date", &now)) {
            log::warn!("recording last_check_date: {e}");
        }
        let last_update = match Config::load(&self.shared.root) {
            Ok(c) => last_update_date(&self.shared.root, &c.sources),
            Err(_) => last_update_date(&self.shared.root, &[]),
        };
        self.send("UpdateAvailableStatus", |e| async move {
            SystemImage::update_available_status(
                &e,
                update.is_available,
                downloading,
                &update.version,
                update.size_i32(),
                &last_update,
                error,
            )
            .await
        });
    }
}

/// Download progress → `UpdateProgress` (on each whole percent), and where a pause
/// holds the transfer.
struct Reporter {
    signals: Arc<Signals>,
    total: u64,
    done: Mutex<HashMap<u64, u64>>,
}

impl Reporter {
    fn moved(&self, id: u64, position: impl FnOnce(u64) -> u64) {
        let sum: u64 = {
            let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            let at = done.entry(id).or_insert(0);
            *at = position(*at);
            done.values().sum()
        };
        let percentage = sum
            .min(self.total)
            .saturating_mul(100)
            .checked_div(self.total)
            .map_or(0, |p| p as i32);
        let shared = &self.signals.shared;
        let changed = {
            let mut state = shared.state();
            let changed = state.percentage != percentage;
            state.percentage = percentage;
            changed
        };
        if changed {
            self.signals.send("UpdateProgress", |e| async move {
                SystemImage::update_progress(&e, percentage, 0.0).await
            });
        }
        // A pause holds the transfer here until DownloadUpdate or CancelUpdate.
        let mut state = shared.state();
        if state.paused {
            let at = state.percentage;
            drop(state);
            self.signals.send("UpdatePaused", |e| async move {
                SystemImage::update_paused(&e, at).await
            });
            state = shared.state();
            while state.paused && !state.cancel.load(Ordering::SeqCst) {
                state = shared
                    .resumed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

impl Progress for Reporter {
    fn begin(&self, id: u64, _label: &str, _total: Option<u64>) {
        self.moved(id, |_| 0);
    }
    fn advance(&self, id: u64, bytes: u64) {
        self.moved(id, |at| at.saturating_add(bytes));
    }
    fn reset(&self, id: u64, position: u64) {
        self.moved(id, |_| position);
    }
}

/// The interface object.
pub struct SystemImage {
    shared: Arc<Shared>,
}

impl SystemImage {
    pub fn new(shared: Arc<Shared>) -> Self {
        SystemImage { shared }
    }

    async fn authorize(
        &self,
        connection: &zbus::Connection,
        header: &Header<'_>,
        action: Action,
    ) -> fdo::Result<()> {
        self.shared.keepalive();
        self.shared
            .authority
            .check(connection, header, action)
            .await
    }

    fn signals(&self, connection: &zbus::Connection) -> Arc<Signals> {
        Signals::new(connection, self.shared.clone())
    }

    /// Writes the recovery's command file, then reboots into the recovery (a thread:
    /// `Rebooting` may or may not get out before the reboot).
    fn reset(&self, connection: &zbus::Connection, command: &str) -> fdo::Result<()> {
        let root = &self.shared.root;
        // The configured `[updater] cache_partition`, as system-image writes it: a
        // partition of its own on a device, entered as `image apply --recovery` does;
        // symlinks on the way are refused.
        self.shared
            .config()?
            .cache_partition_dir(root)
            .and_then(|dir| dir.write_atomic(&recovery_command(), command.as_bytes()))
            .map_err(|e| fdo::Error::Failed(reason(&e)))?;
        self.reboot_in_thread(connection, reboot::Into::Recovery);
        Ok(())
    }

    fn reboot_in_thread(&self, connection: &zbus::Connection, into: reboot::Into) {
        let signals = self.signals(connection);
        std::thread::spawn(move || {
            let ok = signals.shared.reboot(&signals.connection, into);
            signals.send("Rebooting", |e| async move {
                SystemImage::rebooting(&e, ok).await
            });
        });
    }
}

#[zbus::interface(name = "com.canonical.SystemImage")]
impl SystemImage {
    /// Checks for an update; answered by `UpdateAvailableStatus`.
    async fn check_for_update(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<()> {
        self.authorize(connection, &header, Action::Check).await?;
        let signals = self.signals(connection);
        let begun = self.shared.state().begin_check();
        match begun {
            Ok(()) => {
                std::thread::spawn(move || check(signals));
            }
            Err(Some(update)) => {
                let downloading = self.shared.state().downloading;
                std::thread::spawn(move || {
                    signals.update_available_status(&update, downloading, "")
                });
            }
            Err(None) => {}
        }
        Ok(())
    }

    /// Downloads the update found (or resumes a paused download).
    async fn download_update(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<()> {
        self.authorize(connection, &header, Action::Check).await?;
        let signals = self.signals(connection);
        std::thread::spawn(move || download(signals));
        Ok(())
    }

    /// Pauses the download: "" or why not.
    async fn pause_download(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<String> {
        self.authorize(connection, &header, Action::Check).await?;
        Ok(self.shared.state().pause().to_owned())
    }

    /// Cancels a check or download under way: "".
    async fn cancel_update(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<String> {
        self.authorize(connection, &header, Action::Check).await?;
        let answer = self.shared.state().cancel();
        self.shared.resumed.notify_all();
        Ok(answer.to_owned())
    }

    /// Applies the downloaded update, then reboots; answered by `Applied` (and
    /// `Rebooting`).
    async fn apply_update(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<()> {
        self.authorize(connection, &header, Action::Apply).await?;
        let signals = self.signals(connection);
        std::thread::spawn(move || apply_update(signals));
        Ok(())
    }

    /// Lets a download proceed over GSM: downloads here never wait for a network type.
    #[zbus(name = "ForceAllowGSMDownload")]
    async fn force_allow_gsm_download(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<()> {
        self.authorize(connection, &header, Action::Check).await
    }

    /// The device's build, channel and update facts.
    fn information(&self) -> fdo::Result<HashMap<String, String>> {
        self.shared.keepalive();
        let config = self.shared.config()?;
        let settings = self.shared.settings()?;
        let state = self.shared.state();
        let facts = Facts {
            build: state.build.unwrap_or(config.build_number),
            device: config.device.clone().unwrap_or_default(),
            channel: state.channel.clone().unwrap_or(config.channel.clone()),
            version_detail: config
                .ini
                .get("service", "version_detail")
                .unwrap_or("")
                .to_owned(),
            last_update_date: last_update_date(&self.shared.root, &config.sources),
            last_check_date: settings.get("last_check_date"),
        };
        Ok(information(&facts, state.update.as_ref()))
    }

    /// Sets a setting; an invalid value for `min_battery` or `auto_download` is ignored.
    async fn set_setting(
        &self,
        key: String,
        value: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> fdo::Result<()> {
        self.authorize(connection, &header, Action::Check).await?;
        let changed = settings::update(&self.shared.root, |s| s.set(&key, &value))
            .map_err(|e| fdo::Error::Failed(reason(&e)))?;
        match changed {
            Ok(true) => Self::setting_changed(&emitter, &key, &value).await?,
            Ok(false) => {}
            Err(invalid) => log::info!("SetSetting ignored: {invalid}"),
        }
        Ok(())
    }

    /// A setting, or its default ("" for most).
    fn get_setting(&self, key: String) -> fdo::Result<String> {
        self.shared.keepalive();
        Ok(self.shared.settings()?.get(&key))
    }

    /// Wipes the user data in the recovery: writes its command, reboots into it.
    async fn factory_reset(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<()> {
        self.authorize(connection, &header, Action::Reset).await?;
        self.reset(connection, FACTORY_RESET)
    }

    /// As `FactoryReset`, and sets the factory-wipe flag.
    async fn production_reset(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<()> {
        self.authorize(connection, &header, Action::Reset).await?;
        self.reset(connection, PRODUCTION_RESET)
    }

    /// Ends the service now (bus activation starts it again).
    async fn exit(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<()> {
        self.authorize(connection, &header, Action::Check).await?;
        self.shared.exit();
        Ok(())
    }

    /// The visible channels of the last check (empty before one).
    fn get_channels(&self) -> Vec<String> {
        self.shared.keepalive();
        self.shared.state().visible_channels()
    }

    /// Follows `channel` (one of the last check's) for this run of the service.
    async fn set_channel(
        &self,
        channel: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<bool> {
        self.authorize(connection, &header, Action::Check).await?;
        Ok(self.shared.state().set_channel(&channel))
    }

    /// Takes `build` as the current build for this run of the service.
    async fn set_build(
        &self,
        build: i32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<()> {
        self.authorize(connection, &header, Action::Check).await?;
        let build = u64::try_from(build)
            .map_err(|_| fdo::Error::InvalidArgs(format!("build {build} is negative")))?;
        self.shared.state().build = Some(build);
        Ok(())
    }

    fn get_channel(&self) -> fdo::Result<String> {
        self.shared.keepalive();
        let channel = self.shared.state().channel.clone();
        match channel {
            Some(c) => Ok(c),
            None => Ok(self.shared.config()?.channel),
        }
    }

    fn get_build(&self) -> fdo::Result<i32> {
        self.shared.keepalive();
        let build = self.shared.state().build;
        let build = match build {
            Some(b) => b,
            None => self.shared.config()?.build_number,
        };
        Ok(i32::try_from(build).unwrap_or(i32::MAX))
    }

    /// No firmware flasher here: false, as system-image without `afirmflasher`.
    fn supports_firmware_update(&self) -> bool {
        self.shared.keepalive();
        false
    }

    /// "ERR", as system-image answers on a device without firmware updates.
    fn check_for_firmware_update(&self) -> String {
        self.shared.keepalive();
        "ERR".to_owned()
    }

    /// "ERR", as system-image answers on a device without firmware updates.
    async fn update_firmware(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<String> {
        self.authorize(connection, &header, Action::Apply).await?;
        Ok("ERR".to_owned())
    }

    /// Reboots the device.
    async fn reboot(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> fdo::Result<()> {
        self.authorize(connection, &header, Action::Apply).await?;
        self.reboot_in_thread(connection, reboot::Into::System);
        Ok(())
    }

    #[zbus(signal)]
    pub async fn update_available_status(
        emitter: &SignalEmitter<'_>,
        is_available: bool,
        downloading: bool,
        available_version: &str,
        update_size: i32,
        last_update_date: &str,
        error_reason: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn download_started(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn update_progress(
        emitter: &SignalEmitter<'_>,
        percentage: i32,
        eta: f64,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn update_downloaded(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn update_failed(
        emitter: &SignalEmitter<'_>,
        consecutive_failure_count: i32,
        last_reason: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn update_paused(emitter: &SignalEmitter<'_>, percentage: i32) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn setting_changed(
        emitter: &SignalEmitter<'_>,
        key: &str,
        new_value: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn applied(emitter: &SignalEmitter<'_>, status: bool) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn rebooting(emitter: &SignalEmitter<'_>, status: bool) -> zbus::Result<()>;
}

/// Why no image may be applied to the system at `root` now, as `image download` and
/// `image apply` refuse: it opted out to apt, or an opt-out or opt-in is under way.
pub fn image_work_blocked(root: &SystemRoot) -> Option<String> {
    match (optout::record(root), optout::pending(root)) {
        (Ok(Some(record)), _) => Some(format!(
            "this device opted out of image updates at build {} (apt sources in {}); \
             `release-upgrader image opt-in` switches it back",
            record.build, record.sources
        )),
        (_, Ok(Some(_))) => Some(
            "an opt-out or opt-in is under way; `release-upgrader image recover` finishes it \
             (after a reboot when the root is read-only)"
                .into(),
        ),
        (Err(e), _) | (_, Err(e)) => Some(reason(&e)),
        (Ok(None), Ok(None)) => None,
    }
}

/// The check worker: runs the check, sends `UpdateAvailableStatus`, then downloads when
/// `auto_download` says so.
fn check(signals: Arc<Signals>) {
    let shared = &signals.shared;
    let (options, cancel) = {
        let state = shared.state();
        (
            Options {
                channel: state.channel.clone(),
                build: state.build,
                ..Options::default()
            },
            state.cancel.clone(),
        )
    };
    let fetcher = shared
        .fetcher
        .identified_as(shared.fetcher.config().user_agent.clone())
        .with_cancel(cancel.clone());
    let result = match image_work_blocked(&shared.root) {
        Some(why) => Err(why),
        None => Client::new(&shared.root, &fetcher, options)
            .and_then(|client| {
                let checked = client.check()?;
                Ok((client, checked))
            })
            .map_err(|e| {
                if cancel.load(Ordering::SeqCst) && e.is_cancelled() {
                    "Canceled".to_owned()
                } else {
                    log::warn!("check for update: {e}");
                    reason(&e)
                }
            }),
    };
    let (update, prepared, channels) = match result {
        Ok((client, checked)) => {
            let rows = checked
                .channels
                .iter()
                .map(|(name, c)| ChannelRow {
                    name: name.clone(),
                    hidden: c.hidden,
                    alias: c.alias.is_some(),
                    redirect: c.redirect.is_some(),
                })
                .collect();
            (
                Update::of(&checked),
                Some(Prepared {
                    client,
                    checked,
                    files: Vec::new(),
                }),
                Some(rows),
            )
        }
        Err(why) => (Update::failed(why), None, None),
    };
    let auto = Settings::load(&shared.root)
        .map(|s| s.get("auto_download"))
        .unwrap_or_else(|e| {
            log::warn!("{e}");
            settings::AUTO_DOWNLOAD_DEFAULT.to_owned()
        });
    let download_now = shared
        .state()
        .check_finished(update.clone(), prepared, channels, &auto);
    signals.update_available_status(&update, download_now, &update.error);
    if download_now {
        download(signals);
    }
}

/// The download worker.
fn download(signals: Arc<Signals>) {
    let shared = &signals.shared;
    let begun = shared.state().begin_download();
    let mut prepared = match begun {
        Begin::Resume => {
            shared.resumed.notify_all();
            return;
        }
        Begin::Nothing => return,
        Begin::Fail(count, reason) => {
            signals.send("UpdateFailed", |e| async move {
                SystemImage::update_failed(&e, count, &reason).await
            });
            return;
        }
        Begin::Start(p) => p,
    };
    signals.send("DownloadStarted", |e| async move {
        SystemImage::download_started(&e).await
    });
    signals.send("UpdateProgress", |e| async move {
        SystemImage::update_progress(&e, 0, 0.0).await
    });
    let cancel = shared.state().cancel.clone();
    let total = prepared
        .checked
        .this_round
        .iter()
        .map(|&i| prepared.checked.image(i).size())
        .fold(0, u64::saturating_add);
    let reporter = Arc::new(Reporter {
        signals: signals.clone(),
        total,
        done: Mutex::default(),
    });
    let fetcher = prepared
        .client
        .fetcher
        .reporting_to(reporter)
        .with_cancel(cancel.clone());
    let previous = std::mem::replace(&mut prepared.client.fetcher, fetcher);
    let result = prepared.client.download(&prepared.checked);
    prepared.client.fetcher = previous;
    let outcome = match result {
        Ok(files) => {
            prepared.files = files;
            Ok(())
        }
        Err(e) if cancel.load(Ordering::SeqCst) && e.is_cancelled() => Err("Canceled".into()),
        Err(e) => {
            log::warn!("download: {e}");
            Err(reason(&e))
        }
    };
    let failed = shared.state().download_finished(prepared, outcome);
    match failed {
        None => signals.send("UpdateDownloaded", |e| async move {
            SystemImage::update_downloaded(&e).await
        }),
        Some((count, reason)) => signals.send("UpdateFailed", |e| async move {
            SystemImage::update_failed(&e, count, &reason).await
        }),
    }
}

fn recovery_command() -> crate::confine::RelPath {
    crate::confine::RelPath::new(RECOVERY_COMMAND).expect("a plain name")
}

/// Whether the recovery has a command waiting in the configured cache partition (a
/// configuration that cannot say where: no).
fn recovery_command_waiting(root: &SystemRoot) -> bool {
    let found = Config::load(root)
        .and_then(|c| c.cache_partition_existing(root))
        .and_then(|dir| match dir {
            Some(dir) => dir.kind(&recovery_command()),
            None => Ok(None),
        });
    match found {
        Ok(kind) => kind == Some(crate::confine::Kind::File),
        Err(e) => {
            log::warn!("looking for the recovery's command: {}", reason(&e));
            false
        }
    }
}

/// The apply worker: applies what was downloaded (or, with nothing downloaded, reboots
/// into a recovery that has a command waiting, as system-image), sends `Applied`, and
/// after a successful apply reboots, sending `Rebooting`.
fn apply_update(signals: Arc<Signals>) {
    let shared = &signals.shared;
    let begun = shared.state().begin_apply();
    let (applied, into) = match begun {
        ApplyStart::Busy => (false, reboot::Into::System),
        ApplyStart::NotApplicable => {
            let waiting = recovery_command_waiting(&shared.root);
            (waiting, reboot::Into::Recovery)
        }
        ApplyStart::Go(prepared) => {
            let result = match image_work_blocked(&shared.root) {
                Some(why) => Err(why.into()),
                None => apply_prepared(&shared.root, &prepared),
            };
            shared.state().apply_finished();
            match result {
                Ok(build) => {
                    log::info!("applied build {build}");
                    (true, reboot::Into::System)
                }
                Err(e) => {
                    log::error!("applying the update: {}", reason(&*e));
                    (false, reboot::Into::System)
                }
            }
        }
    };
    signals.send("Applied", |e| async move {
        SystemImage::applied(&e, applied).await
    });
    if applied {
        let ok = shared.reboot(&signals.connection, into);
        signals.send("Rebooting", |e| async move {
            SystemImage::rebooting(&e, ok).await
        });
    }
}

fn apply_prepared(
    root: &SystemRoot,
    prepared: &Prepared,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let checked = &prepared.checked;
    let target = checked.target().ok_or("no update to apply")?;
    let steps: Vec<Step<'_>> = prepared
        .files
        .iter()
        .map(|f| {
            Ok(Step {
                image: checked.image(f.image),
                path: f.path.clone(),
                size: f.size,
                sha256: f.sha256,
                name: crate::image::file_name(&f.server_path, "index.json")?,
            })
        })
        .collect::<Result<_, Error>>()?;
    apply::apply(&Layout::new(root), &Target::Root, &steps, target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn available(version: &str) -> Update {
        Update {
            is_available: true,
            version: version.into(),
            size: 10,
            version_detail: "ubuntu=3".into(),
            error: String::new(),
        }
    }

    #[test]
    fn a_second_check_while_one_runs_resends_the_last_status() {
        let mut s = State::<()>::default();
        assert_eq!(s.begin_check(), Ok(()));
        assert_eq!(s.begin_check(), Err(None));
        assert!(!s.check_finished(available("3"), Some(()), None, "0"));
        assert_eq!(s.begin_check(), Ok(()));
        assert_eq!(s.begin_check(), Err(Some(available("3"))));
    }

    #[test]
    fn auto_download_1_and_2_download_after_a_check_that_found_an_update() {
        for (auto, update, download) in [
            ("0", available("3"), false),
            ("1", available("3"), true),
            ("2", available("3"), true),
            ("2", Update::default(), false),
            ("2", Update::failed("boom".into()), false),
        ] {
            let mut s = State::<()>::default();
            s.begin_check().unwrap();
            assert_eq!(
                s.check_finished(update.clone(), Some(()), None, auto),
                download,
                "{auto} {update:?}"
            );
        }
    }

    #[test]
    fn download_needs_a_check_that_found_an_update() {
        let mut s = State::<()>::default();
        assert_eq!(s.begin_download(), Begin::Nothing);
        s.begin_check().unwrap();
        s.check_finished(Update::default(), Some(()), None, "0");
        assert_eq!(s.begin_download(), Begin::Nothing);
        s.begin_check().unwrap();
        s.check_finished(available("3"), Some(()), None, "0");
        assert_eq!(s.begin_download(), Begin::Start(()));
        // Under way: a second DownloadUpdate does nothing; after a pause it resumes.
        assert_eq!(s.begin_download(), Begin::Nothing);
        assert_eq!(s.pause(), "");
        assert_eq!(s.begin_download(), Begin::Resume);
        assert!(!s.paused);
        assert_eq!(s.download_finished((), Ok(())), None);
        assert!(s.applicable);
        assert_eq!(s.pause(), "not downloading");
    }

    #[test]
    fn a_failure_holds_and_counts_until_the_next_check() {
        let mut s = State::<()>::default();
        s.begin_check().unwrap();
        s.check_finished(available("3"), Some(()), None, "0");
        assert_eq!(s.begin_download(), Begin::Start(()));
        assert_eq!(
            s.download_finished((), Err("bad signature".into())),
            Some((1, "bad signature".into()))
        );
        assert_eq!(s.begin_download(), Begin::Fail(2, "bad signature".into()));
        assert_eq!(s.begin_download(), Begin::Fail(3, "bad signature".into()));
        assert_eq!(s.begin_apply(), ApplyStart::NotApplicable);
        s.begin_check().unwrap();
        assert_eq!(s.failure_count, 0);
        s.check_finished(available("3"), Some(()), None, "0");
        assert_eq!(s.begin_download(), Begin::Start(()));
    }

    #[test]
    fn cancel_sets_the_flag_of_the_work_under_way_and_answers_empty() {
        let mut s = State::<()>::default();
        s.begin_check().unwrap();
        s.check_finished(available("3"), Some(()), None, "0");
        assert_eq!(s.begin_download(), Begin::Start(()));
        let flag = s.cancel.clone();
        s.pause();
        assert_eq!(s.cancel(), "");
        assert!(flag.load(Ordering::SeqCst));
        assert!(!s.paused, "a cancel wakes a paused download");
        // Nothing under way: still "".
        let mut idle = State::<()>::default();
        assert_eq!(idle.cancel(), "");
    }

    #[test]
    fn apply_needs_a_finished_download_and_uses_it_up() {
        let mut s = State::<()>::default();
        assert_eq!(s.begin_apply(), ApplyStart::NotApplicable);
        s.begin_check().unwrap();
        s.check_finished(available("3"), Some(()), None, "0");
        assert_eq!(s.begin_apply(), ApplyStart::NotApplicable);
        assert_eq!(s.begin_download(), Begin::Start(()));
        assert_eq!(s.begin_apply(), ApplyStart::Busy, "still downloading");
        s.download_finished((), Ok(()));
        assert_eq!(s.begin_apply(), ApplyStart::Go(()));
        assert!(s.busy());
        assert_eq!(s.begin_apply(), ApplyStart::Busy, "one apply at a time");
        s.apply_finished();
        assert_eq!(s.begin_apply(), ApplyStart::NotApplicable);
    }

    #[test]
    fn channels_listed_are_the_visible_ones_and_only_known_ones_are_taken() {
        let row = |name: &str, hidden, alias, redirect| ChannelRow {
            name: name.into(),
            hidden,
            alias,
            redirect,
        };
        let mut s = State::<()>::default();
        assert!(s.visible_channels().is_empty());
        assert!(!s.set_channel("stable"));
        s.channels = Some(vec![
            row("stable", false, false, false),
            row("devel", false, false, false),
            row("secret", true, false, false),
            row("old", false, false, true),
            row("current", false, true, false),
        ]);
        assert_eq!(s.visible_channels(), ["devel", "stable"]);
        assert!(s.set_channel("secret"));
        assert_eq!(s.channel.as_deref(), Some("secret"));
        assert!(!s.set_channel("nope"));
        assert_eq!(s.channel.as_deref(), Some("secret"));
    }

    #[test]
    fn information_reports_the_target_as_system_image_does() {
        let facts = Facts {
            build: 1,
            device: "mako".into(),
            channel: "stable".into(),
            version_detail: "ubuntu=1".into(),
            last_update_date: "2026-01-01 00:00:00".into(),
            last_check_date: String::new(),
        };
        let info = information(&facts, None);
        let keys: std::collections::BTreeSet<&str> = info.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "channel_name",
                "current_build_number",
                "device_name",
                "last_check_date",
                "last_update_date",
                "target_build_number",
                "target_version_detail",
                "version_detail"
            ]
            .into()
        );
        assert_eq!(info["target_build_number"], "-1");
        assert_eq!(info["target_version_detail"], "");
        let info = information(&facts, Some(&Update::default()));
        assert_eq!(info["target_build_number"], "1");
        assert_eq!(info["target_version_detail"], "ubuntu=1");
        let info = information(&facts, Some(&available("3")));
        assert_eq!(info["target_build_number"], "3");
        assert_eq!(info["target_version_detail"], "ubuntu=3");
    }

    #[test]
    fn the_update_size_saturates_in_the_signal() {
        let mut u = available("3");
        u.size = 5_000_000_000;
        assert_eq!(u.size_i32(), i32::MAX);
    }

    #[test]
    fn last_update_date_falls_back_to_the_config_files_then_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        assert_eq!(last_update_date(&root, &[]), "Unknown");
        let ini = dir.path().join("a.ini");
        std::fs::write(&ini, "").unwrap();
        let date = last_update_date(&root, std::slice::from_ref(&ini));
        assert_eq!(date.len(), "YYYY-MM-DD HH:MM:SS".len(), "{date}");
        std::fs::create_dir_all(dir.path().join("userdata")).unwrap();
        std::fs::write(dir.path().join("userdata/.last_update"), "").unwrap();
        assert_ne!(last_update_date(&root, &[]), "Unknown");
    }
}
