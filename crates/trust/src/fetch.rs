//! Downloads that trust nothing: every byte is counted against a cap and hashed as it
//! streams, and nothing is handed over (or renamed into place) before size and digest
//! match what a verified document promised.
//!
//! One engine serves `http://`, `https://` (system certificate store), `file://` and
//! plain paths. Network transfers get connect, stall and low-speed timeouts, bounded
//! retries with exponential backoff on connection errors and 5xx, and resume into a
//! `.partial` file with `Range`. Proxies come from `http_proxy`/`https_proxy`/`no_proxy`.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::header;

use crate::Error;
use crate::digest::{Sha256, Sha256Hasher};
use crate::fsutil;
use crate::progress::{self, Progress, Silent};

/// The cap for metadata whose size nobody promised (meta-release, InRelease, signatures).
pub const METADATA_CAP: u64 = 16 * 1024 * 1024;

/// Where something is fetched from: a URL, or a file on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Url(reqwest::Url),
    Path(PathBuf),
}

impl Location {
    /// Parses `http://`, `https://`, `file://` URIs and plain paths.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadLocation {
            location: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(bad("empty"));
        }
        let has_scheme = text.split_once("://").is_some_and(|(s, _)| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        if !has_scheme {
            return Ok(Location::Path(PathBuf::from(text)));
        }
        let url = reqwest::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "http" | "https" => Ok(Location::Url(url)),
            "file" => url
                .to_file_path()
                .map(Location::Path)
                .map_err(|()| bad("not a local file URL")),
            other => Err(bad(&format!(
                "unsupported scheme {other:?} (use http, https, file or a path)"
            ))),
        }
    }

    /// The location of `relative` inside this directory-like location. `relative` must
    /// stay inside: no `..`, no absolute path.
    pub fn join(&self, relative: &str) -> Result<Location, Error> {
        check_relative(relative).map_err(|reason| Error::BadLocation {
            location: relative.to_owned(),
            reason,
        })?;
        let relative = relative.trim_start_matches("./");
        match self {
            Location::Url(url) => {
                let mut base = url.clone();
                if !base.path().ends_with('/') {
                    base.set_path(&format!("{}/", base.path()));
                }
                let joined = base.join(relative).map_err(|e| Error::BadLocation {
                    location: relative.to_owned(),
                    reason: e.to_string(),
                })?;
                // The URL parser reads a scheme (`file:`, `https:host/`) or percent-encoded
                // dot segments (`%2e%2e/`) into a name `check_relative` lets through.
                if joined.origin() != base.origin() || !joined.path().starts_with(base.path()) {
                    return Err(Error::BadLocation {
                        location: relative.to_owned(),
                        reason: format!("leaves {base} (as a URL: {joined})"),
                    });
                }
                Ok(Location::Url(joined))
            }
            Location::Path(dir) => Ok(Location::Path(dir.join(relative))),
        }
    }

    /// This location with `suffix` appended to its last component (`-development`, `.gpg`).
    pub fn with_suffix(&self, suffix: &str) -> Location {
        match self {
            Location::Url(url) => {
                let mut url = url.clone();
                url.set_path(&format!("{}{suffix}", url.path()));
                Location::Url(url)
            }
            Location::Path(path) => {
                let mut s = path.clone().into_os_string();
                s.push(suffix);
                Location::Path(PathBuf::from(s))
            }
        }
    }

    pub fn is_network(&self) -> bool {
        matches!(self, Location::Url(_))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Url(url) => write!(f, "{url}"),
            Location::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Checks that a repository-relative name cannot leave its directory.
pub fn check_relative(relative: &str) -> Result<(), String> {
    if relative.is_empty() {
        return Err("empty file name".into());
    }
    if relative.contains('\\') || relative.contains('\0') || relative.contains("//") {
        return Err("contains a backslash, NUL or empty component".into());
    }
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute".into()),
        }
    }
    Ok(())
}

/// Timeouts, retries and identity of the fetcher.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    pub user_agent: String,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed without receiving a single byte (also bounds waiting for headers).
    pub stall_timeout: Duration,
    /// A transfer slower than this many bytes per second over `low_speed_time` is
    /// abandoned and retried.
    pub low_speed_limit: u64,
    pub low_speed_time: Duration,
    /// Further attempts after the first, on connection errors, timeouts and 5xx.
    pub retries: u32,
    /// Delay before the first retry; doubled before each next one (at most 30 s).
    pub retry_delay: Duration,
    /// Use no network: http and https locations fail at once with [`Error::Offline`],
    /// without a connection or a retry; files and paths are read as ever
    /// (`--without-network`, upgrade media).
    pub offline: bool,
}

impl FetchConfig {
    pub fn new(user_agent: impl Into<String>) -> Self {
        FetchConfig {
            user_agent: user_agent.into(),
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            low_speed_limit: 1024,
            low_speed_time: Duration::from_secs(60),
            retries: 3,
            retry_delay: Duration::from_secs(1),
            offline: false,
        }
    }
}

/// What the caller knows about the file before it arrives.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Unsized metadata: refuse more than this many bytes.
    AtMost(u64),
    /// Exactly this size and digest, as a verified document promised.
    Exact { size: u64, sha256: Sha256 },
}

impl Expect {
    fn cap(self) -> u64 {
        match self {
            Expect::AtMost(cap) => cap,
            Expect::Exact { size, .. } => size,
        }
    }
}

/// A downloaded file whose size and digest matched; only the fetcher builds one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedFile {
    path: PathBuf,
    size: u64,
    sha256: Sha256,
}

impl FetchedFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn sha256(&self) -> Sha256 {
        self.sha256
    }
}

/// The result of a conditional fetch.
#[derive(Debug)]
pub enum Conditional {
    Modified {
        body: Vec<u8>,
        last_modified: Option<String>,
    },
    NotModified,
}

/// Downloads with caps, digests, timeouts, retries and resume.
pub struct Fetcher {
    config: FetchConfig,
    /// The client, and whether it was built without the system's CA certificates
    /// (a minimal system without ca-certificates: http and file still work).
    client: OnceLock<Result<(Client, bool), String>>,
    /// The client for plain http: it trusts no certificate, so building it does not read
    /// the system's CA store (hundreds of files, tens of milliseconds of every run that
    /// never speaks TLS). A redirect to https stops it; the full client takes over.
    plain: OnceLock<Result<Client, String>>,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("config", &self.config)
            .finish()
    }
}

/// Why one attempt failed, and whether another may succeed.
enum Failure {
    /// Try again (connection trouble, timeout, 5xx, short body); keep what arrived.
    Retry(Error),
    /// Try again from byte zero: the partial data cannot be trusted or continued.
    Restart(Error),
    /// Give up.
    Fatal(Error),
}

/// Where the bytes of a transfer go, hashed as they pass.
trait Sink {
    fn len(&self) -> u64;
    fn write(&mut self, data: &[u8]) -> std::io::Result<()>;
    fn truncate(&mut self) -> std::io::Result<()>;
    fn digest(&self) -> Sha256;
}

struct MemorySink {
    data: Vec<u8>,
    hasher: Sha256Hasher,
}

impl Sink for MemorySink {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.hasher.update(data);
        self.data.extend_from_slice(data);
        Ok(())
    }
    fn truncate(&mut self) -> std::io::Result<()> {
        self.data.clear();
        self.hasher = Sha256Hasher::new();
        Ok(())
    }
    fn digest(&self) -> Sha256 {
        self.hasher.clone().finish()
    }
}

struct FileSink {
    file: File,
    len: u64,
    hasher: Sha256Hasher,
}

impl FileSink {
    /// Opens (or creates) a `.partial` file and hashes what it already holds, up to `cap`.
    fn open(path: &Path, cap: u64) -> std::io::Result<Self> {
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // Never written through a symlink planted at the partial name.
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)?
            .into_parts()
            .0;
        let existing = file.metadata()?.len();
        let mut sink = FileSink {
            file,
            len: 0,
            hasher: Sha256Hasher::new(),
        };
        if existing > cap {
            sink.truncate()?;
            return Ok(sink);
        }
        let (digest_input, n) = {
            let mut hasher = Sha256Hasher::new();
            sink.file.seek(SeekFrom::Start(0))?;
            let n = std::io::copy(&mut (&sink.file).take(existing), &mut hasher)?;
            (hasher, n)
        };
        sink.hasher = digest_input;
        sink.len = n;
        sink.file.seek(SeekFrom::Start(n))?;
        Ok(sink)
    }
}

impl Sink for FileSink {
    fn len(&self) -> u64 {
        self.len
    }
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data)?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }
    fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.len = 0;
        self.hasher = Sha256Hasher::new();
        Ok(())
    }
    fn digest(&self) -> Sha256 {
        self.hasher.clone().finish()
    }
}

impl Fetcher {
    pub fn new(config: FetchConfig) -> Self {
        Fetcher {
            config,
            client: OnceLock::new(),
            plain: OnceLock::new(),
            progress: Arc::new(Silent),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Stops transfers with [`Error::Cancelled`] once `cancel` is set (Ctrl-C).
    pub fn with_cancel(mut self, cancel: Arc<AtomicBool>) -> Self {
        self.cancel = cancel;
        self
    }

    /// Whether the user cancelled (the flag of [`Fetcher::with_cancel`] is set).
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    fn check_cancelled(&self) -> Result<(), Error> {
        if self.cancel.load(Ordering::SeqCst) {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Reports transfers of files (not of small metadata) to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// This fetcher (configuration, progress, cancellation) introducing itself as
    /// `user_agent`: its connections are made anew, with that header.
    pub fn identified_as(&self, user_agent: impl Into<String>) -> Fetcher {
        let user_agent = user_agent.into();
        self.adjusted(|config| config.user_agent = user_agent)
    }

    /// This fetcher (progress, cancellation) with its configuration changed by `adjust`
    /// (no network, one attempt): its connections are made anew.
    pub fn adjusted(&self, adjust: impl FnOnce(&mut FetchConfig)) -> Fetcher {
        let mut config = self.config.clone();
        adjust(&mut config);
        Fetcher {
            config,
            client: OnceLock::new(),
            plain: OnceLock::new(),
            progress: self.progress.clone(),
            cancel: self.cancel.clone(),
        }
    }

    /// This fetcher (configuration, connections, cancellation) reporting to `progress`.
    pub fn reporting_to(&self, progress: Arc<dyn Progress>) -> Fetcher {
        Fetcher {
            config: self.config.clone(),
            client: self.client.clone(),
            plain: self.plain.clone(),
            progress,
            cancel: self.cancel.clone(),
        }
    }

    /// Where this fetcher reports progress.
    pub fn progress(&self) -> Arc<dyn Progress> {
        self.progress.clone()
    }

    /// A client builder with this fetcher's settings; `plain` ones stop at a redirect
    /// to https (see [`Fetcher::plain`]).
    fn builder(&self, plain: bool) -> reqwest::blocking::ClientBuilder {
        // reqwest is built without a default rustls provider: ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client::builder()
            .user_agent(self.config.user_agent.clone())
            .connect_timeout(self.config.connect_timeout)
            .timeout(self.config.stall_timeout)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let downgrade = attempt.url().scheme() == "http"
                    && attempt.previous().iter().any(|u| u.scheme() == "https");
                if downgrade {
                    attempt.error("refusing a redirect from https to http")
                } else if plain && attempt.url().scheme() == "https" {
                    attempt.stop()
                } else if attempt.previous().len() >= 10 {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
    }

    fn client(&self) -> Result<(&Client, bool), Error> {
        let built = self.client.get_or_init(|| {
            match self.builder(false).build() {
                Ok(client) => Ok((client, false)),
                // The platform verifier refuses to start without a single CA certificate
                // (a minbase system has no ca-certificates). Plain http and file:// must
                // still work there: everything fetched is verified by signature anyway.
                Err(first) => self
                    .builder(false)
                    .tls_certs_only(Vec::<reqwest::Certificate>::new())
                    .build()
                    .map(|client| {
                        log::debug!("no system CA certificates ({first}); https disabled");
                        (client, true)
                    })
                    .map_err(|e| format!("cannot set up the HTTP client: {first}; {e}")),
            }
        });
        built
            .as_ref()
            .map(|(client, without_roots)| (client, *without_roots))
            .map_err(|reason| Error::Network {
                uri: "(client)".into(),
                reason: reason.clone(),
            })
    }

    fn plain(&self) -> Result<&Client, Error> {
        self.plain
            .get_or_init(|| {
                self.builder(true)
                    .tls_certs_only(Vec::<reqwest::Certificate>::new())
                    .build()
                    .map_err(|e| format!("cannot set up the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(|reason| Error::Network {
                uri: "(client)".into(),
                reason: reason.clone(),
            })
    }

    /// Fetches small metadata into memory, refusing more than `cap` bytes.
    pub fn fetch_bytes(&self, location: &Location, cap: u64) -> Result<Vec<u8>, Error> {
        let mut sink = MemorySink {
            data: Vec::new(),
            hasher: Sha256Hasher::new(),
        };
        self.transfer(location, &mut sink, Expect::AtMost(cap), None, None)?;
        Ok(sink.data)
    }

    /// Fetches a file of known size and digest into memory.
    pub fn fetch_checked_bytes(
        &self,
        location: &Location,
        size: u64,
        sha256: Sha256,
    ) -> Result<Vec<u8>, Error> {
        let mut sink = MemorySink {
            data: Vec::new(),
            hasher: Sha256Hasher::new(),
        };
        self.transfer(
            location,
            &mut sink,
            Expect::Exact { size, sha256 },
            None,
            None,
        )?;
        Ok(sink.data)
    }

    /// Fetches metadata only if it changed since `last_modified` (If-Modified-Since).
    pub fn fetch_if_modified(
        &self,
        location: &Location,
        cap: u64,
        last_modified: Option<&str>,
    ) -> Result<Conditional, Error> {
        let mut sink = MemorySink {
            data: Vec::new(),
            hasher: Sha256Hasher::new(),
        };
        let mut stamp = None;
        let outcome = self.transfer(
            location,
            &mut sink,
            Expect::AtMost(cap),
            None,
            Some((last_modified, &mut stamp)),
        )?;
        Ok(match outcome {
            Outcome::NotModified => Conditional::NotModified,
            Outcome::Complete => Conditional::Modified {
                body: sink.data,
                last_modified: stamp,
            },
        })
    }

    /// Fetches a file of known size and digest to `dest`, through `dest.partial` (kept
    /// between runs, so an interrupted download resumes). `dest` appears only once size
    /// and digest match, synced to disk.
    pub fn fetch_file(
        &self,
        location: &Location,
        dest: &Path,
        size: u64,
        sha256: Sha256,
        label: &str,
    ) -> Result<FetchedFile, Error> {
        self.fetch_file_with(location, dest, size, sha256, label, true)
    }

    /// Like [`Fetcher::fetch_file`], but `dest` is not synced: for a file that is used
    /// right away and thrown away, and whose digest is checked again before it is reused
    /// after a crash (the helper debs: the install extracts them at once, and a crash
    /// rolls back and removes them). Syncing them only delayed their extraction.
    pub fn fetch_file_unsynced(
        &self,
        location: &Location,
        dest: &Path,
        size: u64,
        sha256: Sha256,
        label: &str,
    ) -> Result<FetchedFile, Error> {
        self.fetch_file_with(location, dest, size, sha256, label, false)
    }

    fn fetch_file_with(
        &self,
        location: &Location,
        dest: &Path,
        size: u64,
        sha256: Sha256,
        label: &str,
        durable: bool,
    ) -> Result<FetchedFile, Error> {
        let partial = partial_path(dest);
        if let Some(dir) = dest.parent() {
            fs_err::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut sink = FileSink::open(&partial, size).map_err(|e| Error::io(&partial, e))?;
        let id = progress::next_task_id();
        self.progress.begin(id, label, Some(size));
        if sink.len() > 0 {
            self.progress.reset(id, sink.len());
        }
        let result = self.transfer(
            location,
            &mut sink,
            Expect::Exact { size, sha256 },
            Some(id),
            None,
        );
        self.progress.finish(id, result.is_ok());
        match result {
            Ok(_) => {
                let promote = || -> std::io::Result<()> {
                    if durable {
                        sink.file.sync_all()?;
                    }
                    fs_err::rename(&partial, dest)?;
                    if let Some(dir) = dest.parent().filter(|_| durable) {
                        fsutil::sync_dir(dir)?;
                    }
                    Ok(())
                };
                promote().map_err(|e| Error::io(dest, e))?;
                Ok(FetchedFile {
                    path: dest.to_owned(),
                    size,
                    sha256,
                })
            }
            Err(err) => {
                // Keep a partial file only if it may be resumed: a transfer that was
                // refused for its content is gone for good.
                if err.exit_code() != ru_format::ExitCode::Network {
                    let _ = std::fs::remove_file(&partial);
                }
                Err(err)
            }
        }
    }

    /// The retry loop around single attempts.
    fn transfer(
        &self,
        location: &Location,
        sink: &mut dyn Sink,
        expect: Expect,
        task: Option<u64>,
        mut conditional: Option<(Option<&str>, &mut Option<String>)>,
    ) -> Result<Outcome, Error> {
        let path = match location {
            Location::Path(path) => return read_local(path, sink, expect, task, &*self.progress),
            Location::Url(url) if self.config.offline => {
                return Err(Error::Offline {
                    uri: url.to_string(),
                });
            }
            Location::Url(url) => url,
        };
        let mut attempt = 0u32;
        loop {
            self.check_cancelled()?;
            let ims = conditional.as_ref().and_then(|(since, _)| *since);
            let result = self.attempt(path, sink, expect, task, ims);
            let failure = match result {
                Ok((outcome, stamp)) => {
                    if let Some((_, out)) = conditional.as_mut() {
                        **out = stamp;
                    }
                    return Ok(outcome);
                }
                Err(failure) => failure,
            };
            let (error, restart) = match failure {
                Failure::Fatal(error) => return Err(error),
                Failure::Retry(error) => (error, false),
                Failure::Restart(error) => (error, true),
            };
            if attempt >= self.config.retries {
                return Err(error);
            }
            attempt += 1;
            if restart {
                sink.truncate()
                    .map_err(|e| Error::io(location.to_string(), e))?;
                if let Some(id) = task {
                    self.progress.reset(id, 0);
                }
            }
            let delay = self
                .config
                .retry_delay
                .saturating_mul(1 << (attempt - 1).min(5))
                .min(Duration::from_secs(30));
            log::warn!(
                "{error}; retrying in {:.1}s (attempt {} of {})",
                delay.as_secs_f64(),
                attempt + 1,
                self.config.retries + 1
            );
            // Sleep in small steps so Ctrl-C is noticed.
            let until = Instant::now() + delay;
            while Instant::now() < until {
                self.check_cancelled()?;
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
            }
        }
    }

    /// One HTTP request, resuming from what `sink` already holds.
    fn attempt(
        &self,
        url: &reqwest::Url,
        sink: &mut dyn Sink,
        expect: Expect,
        task: Option<u64>,
        if_modified_since: Option<&str>,
    ) -> Result<(Outcome, Option<String>), Failure> {
        let uri = url.to_string();
        let offset = sink.len();
        let resumed = offset > 0;
        // A digest mismatch after resuming may come from a stale partial file: one more
        // try from scratch settles it.
        let settle = |result: Result<(), Failure>| match result {
            Err(Failure::Fatal(e @ Error::HashMismatch { .. })) if resumed => {
                Err(Failure::Restart(e))
            }
            other => other,
        };
        if let Expect::Exact { size, .. } = expect
            && offset == size
        {
            // A complete partial file from an earlier run: check it as it is.
            return settle(finish(&uri, sink, expect)).map(|()| (Outcome::Complete, None));
        }
        let send = |client: &Client| {
            let mut request = client.get(url.clone());
            if offset > 0 {
                request = request.header(header::RANGE, format!("bytes={offset}-"));
            }
            if let Some(since) = if_modified_since {
                request = request.header(header::IF_MODIFIED_SINCE, since);
            }
            request
                .send()
                .map_err(|e| Failure::Retry(network(&uri, &e)))
        };
        let tls = || -> Result<&Client, Failure> {
            let (client, without_roots) = self.client().map_err(Failure::Fatal)?;
            if without_roots {
                return Err(Failure::Fatal(Error::Network {
                    uri: uri.clone(),
                    reason: "this system has no CA certificates, so https cannot be verified \
                             (install ca-certificates, or use an http:// or file:// location: \
                             what is fetched is checked by its signature either way)"
                        .into(),
                }));
            }
            Ok(client)
        };
        let response = if url.scheme() == "https" {
            send(tls()?)?
        } else {
            let response = send(self.plain().map_err(Failure::Fatal)?)?;
            // The plain client stops only at a redirect to https (304 is no redirect).
            if response.status().is_redirection() && response.status().as_u16() != 304 {
                send(tls()?)?
            } else {
                response
            }
        };
        let status = response.status();
        let stamp = response
            .headers()
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match status.as_u16() {
            304 if if_modified_since.is_some() => return Ok((Outcome::NotModified, None)),
            200 => {
                if offset > 0 {
                    // The server ignored Range: start over from the full body.
                    log::debug!("{uri}: server ignored Range, restarting from byte 0");
                    sink.truncate()
                        .map_err(|e| Failure::Fatal(Error::io(&uri, e)))?;
                    if let Some(id) = task {
                        self.progress.reset(id, 0);
                    }
                }
            }
            206 if offset > 0 => {
                let start = content_range_start(&response);
                if start != Some(offset) {
                    return Err(Failure::Restart(Error::Network {
                        uri,
                        reason: format!("server resumed at {start:?} instead of byte {offset}"),
                    }));
                }
            }
            416 if offset > 0 => {
                return Err(Failure::Restart(Error::Network {
                    uri,
                    reason: "server refused to resume the download".into(),
                }));
            }
            404 | 410 => return Err(Failure::Fatal(Error::NotFound { uri })),
            408 | 429 | 500..=599 => {
                return Err(Failure::Retry(Error::HttpStatus {
                    uri,
                    status: status.as_u16(),
                }));
            }
            code => return Err(Failure::Fatal(Error::HttpStatus { uri, status: code })),
        }
        let cap = expect.cap();
        if let Some(length) = response.content_length()
            && sink.len().saturating_add(length) > cap
        {
            return Err(Failure::Fatal(Error::TooLarge {
                what: uri,
                limit: cap,
            }));
        }
        self.stream_body(&uri, response, sink, cap, task)?;
        if let Expect::Exact { size, .. } = expect
            && sink.len() < size
        {
            return Err(Failure::Retry(Error::Network {
                uri,
                reason: format!("connection closed after {} of {size} bytes", sink.len()),
            }));
        }
        settle(finish(&uri, sink, expect)).map(|()| (Outcome::Complete, stamp))
    }

    /// Copies the body into the sink, enforcing the cap and the low-speed limit.
    fn stream_body(
        &self,
        uri: &str,
        mut response: Response,
        sink: &mut dyn Sink,
        cap: u64,
        task: Option<u64>,
    ) -> Result<(), Failure> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut window_start = Instant::now();
        let mut window_bytes = 0u64;
        let required = self
            .config
            .low_speed_limit
            .saturating_mul(self.config.low_speed_time.as_secs().max(1));
        loop {
            self.check_cancelled().map_err(Failure::Fatal)?;
            let n = match response.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Failure::Retry(Error::Network {
                        uri: uri.to_owned(),
                        reason: format!(
                            "connection closed after {} bytes ({})",
                            sink.len(),
                            describe_io(&e)
                        ),
                    }));
                }
            };
            let allowed = cap - sink.len();
            if n as u64 > allowed {
                return Err(Failure::Fatal(Error::TooLarge {
                    what: uri.to_owned(),
                    limit: cap,
                }));
            }
            sink.write(&buf[..n])
                .map_err(|e| Failure::Fatal(Error::io(uri, e)))?;
            if let Some(id) = task {
                self.progress.advance(id, n as u64);
            }
            window_bytes += n as u64;
            if window_start.elapsed() >= self.config.low_speed_time {
                if window_bytes < required {
                    return Err(Failure::Retry(Error::Network {
                        uri: uri.to_owned(),
                        reason: format!(
                            "transfer too slow ({window_bytes} bytes in {:.0}s)",
                            window_start.elapsed().as_secs_f64()
                        ),
                    }));
                }
                window_start = Instant::now();
                window_bytes = 0;
            }
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Complete,
    NotModified,
}

/// Checks the final size and digest.
fn finish(uri: &str, sink: &dyn Sink, expect: Expect) -> Result<(), Failure> {
    if let Expect::Exact { size, sha256 } = expect {
        if sink.len() != size {
            return Err(Failure::Fatal(Error::SizeMismatch {
                what: uri.to_owned(),
                expected: size,
                actual: sink.len(),
            }));
        }
        let actual = sink.digest();
        if actual != sha256 {
            return Err(Failure::Fatal(Error::HashMismatch {
                what: uri.to_owned(),
                expected: sha256.to_hex(),
                actual: actual.to_hex(),
            }));
        }
    }
    Ok(())
}

/// Reads a local file through the same caps and checks as a download.
fn read_local(
    path: &Path,
    sink: &mut dyn Sink,
    expect: Expect,
    task: Option<u64>,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    let what = path.display().to_string();
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound { uri: what });
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    if file.metadata().map_err(|e| Error::io(path, e))?.is_dir() {
        return Err(Error::io(path, std::io::Error::other("is a directory")));
    }
    sink.truncate().map_err(|e| Error::io(path, e))?;
    if let Some(id) = task {
        progress.reset(id, 0);
    }
    let cap = expect.cap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        if n as u64 > cap - sink.len() {
            return Err(Error::TooLarge { what, limit: cap });
        }
        sink.write(&buf[..n]).map_err(|e| Error::io(path, e))?;
        if let Some(id) = task {
            progress.advance(id, n as u64);
        }
    }
    finish(&what, sink, expect).map_err(|f| match f {
        Failure::Fatal(e) | Failure::Retry(e) | Failure::Restart(e) => e,
    })?;
    Ok(Outcome::Complete)
}

/// The `.partial` sibling a download streams into.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

fn content_range_start(response: &Response) -> Option<u64> {
    let value = response
        .headers()
        .get(header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn network(uri: &str, err: &reqwest::Error) -> Error {
    let mut reason = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Network {
        uri: uri.to_owned(),
        reason,
    }
}

fn describe_io(err: &std::io::Error) -> String {
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = cause.source();
    }
    if err.kind() == std::io::ErrorKind::TimedOut || reason.contains("timed out") {
        format!("no data received in time ({reason})")
    } else {
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--without-network`: a URL is refused before any connection (192.0.2.1, reserved
    /// for documentation, would otherwise take the connect timeout and three retries),
    /// and local files are read as ever.
    #[test]
    fn a_fetcher_without_network_refuses_urls_at_once_and_reads_files() {
        let fetcher = Fetcher::new(FetchConfig::new("test")).adjusted(|c| c.offline = true);
        let started = Instant::now();
        let err = fetcher
            .fetch_bytes(&Location::parse("http://192.0.2.1/InRelease").unwrap(), 100)
            .unwrap_err();
        assert!(matches!(err, Error::Offline { .. }), "{err}");
        assert!(err.is_unreachable());
        assert_eq!(err.exit_code(), ru_format::ExitCode::Network);
        assert!(started.elapsed() < Duration::from_secs(1));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Release"), "local").unwrap();
        let local = Location::Path(dir.path().join("Release"));
        assert_eq!(fetcher.fetch_bytes(&local, 100).unwrap(), b"local");
        // A server's answer, even an error, is no unreachable network.
        assert!(!Error::NotFound { uri: "u".into() }.is_unreachable());
    }

    #[test]
    fn locations_parse_and_join() {
        let url = Location::parse("http://example.org/base").unwrap();
        assert_eq!(
            url.join("dist-upgrader-amd64/current/")
                .unwrap()
                .to_string(),
            "http://example.org/base/dist-upgrader-amd64/current/"
        );
        assert_eq!(
            url.with_suffix("-development").to_string(),
            "http://example.org/base-development"
        );
        assert_eq!(
            Location::parse("file:///srv/pocket").unwrap(),
            Location::Path(PathBuf::from("/srv/pocket"))
        );
        assert_eq!(
            Location::parse("rel/dir").unwrap(),
            Location::Path(PathBuf::from("rel/dir"))
        );
        assert!(Location::parse("ftp://example.org/x").is_err());
        let dir = Location::parse("/srv/pocket").unwrap();
        assert_eq!(
            dir.join("./pool/a.deb").unwrap(),
            Location::Path(PathBuf::from("/srv/pocket/pool/a.deb"))
        );
    }

    #[test]
    fn names_escaping_their_directory_are_refused() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "a//b", "a\\b"] {
            assert!(check_relative(bad).is_err(), "{bad}");
            assert!(Location::parse("/srv").unwrap().join(bad).is_err(), "{bad}");
        }
        assert!(check_relative("./pool/main/a.deb").is_ok());
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/packages.rs`): a `Filename` that the URL
    /// parser reads as a scheme (`file:`, `https:host/`) or as dot segments (`%2e%2e`)
    /// passed `check_relative` and joined to a URL outside the pocket: another scheme,
    /// another host, or the pocket's parent. Such names are refused; names with a `%`,
    /// `:` or `?` that stay inside are not.
    #[test]
    fn names_the_url_parser_would_take_out_of_their_directory_are_refused() {
        let pocket = Location::parse("http://127.0.0.1:8080/dists/trixie/pocket/").unwrap();
        for bad in [
            "file:./pool/main/r/release-upgrader-apt_3.0.3_amd64.deb",
            "https:evil.example/x.deb",
            "http:/x.deb",
            "%2e%2e/%2e%2e/x.deb",
            "pool/%2e%2E/.%2e/x.deb",
        ] {
            assert!(pocket.join(bad).is_err(), "{bad}: {:?}", pocket.join(bad));
        }
        for good in [
            "pool/a%2Bb_1:2.deb",
            "pool/%2e%2e/x.deb",
            "x.deb?v=1",
            "http:x.deb",
        ] {
            let joined = pocket.join(good).unwrap().to_string();
            assert!(
                joined.starts_with("http://127.0.0.1:8080/dists/trixie/pocket/"),
                "{good}: {joined}"
            );
        }
    }

    #[test]
    fn local_files_are_capped_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let fetcher = Fetcher::new(FetchConfig::new("test"));
        let loc = Location::Path(path.clone());
        assert_eq!(fetcher.fetch_bytes(&loc, 5).unwrap(), b"hello");
        assert!(matches!(
            fetcher.fetch_bytes(&loc, 4),
            Err(Error::TooLarge { limit: 4, .. })
        ));
        let good = Sha256::of(b"hello");
        assert_eq!(
            fetcher.fetch_checked_bytes(&loc, 5, good).unwrap(),
            b"hello"
        );
        assert!(matches!(
            fetcher.fetch_checked_bytes(&loc, 5, Sha256::of(b"world")),
            Err(Error::HashMismatch { .. })
        ));
        assert!(matches!(
            fetcher.fetch_checked_bytes(&loc, 6, good),
            Err(Error::SizeMismatch { .. })
        ));
        assert!(matches!(
            fetcher.fetch_bytes(&Location::Path(dir.path().join("missing")), 5),
            Err(Error::NotFound { .. })
        ));
        let dest = dir.path().join("out/f");
        let fetched = fetcher.fetch_file(&loc, &dest, 5, good, "f").unwrap();
        assert_eq!(std::fs::read(fetched.path()).unwrap(), b"hello");
        assert!(!partial_path(&dest).exists());
    }
}
