//! The system-bus services (issue 16): system-image's `com.canonical.SystemImage` API for
//! image devices ([`system_image`]), so the phone's settings panel drives this client
//! as it drove system-image; and the release upgrade for desktops ([`release_upgrade`],
//! `org.releaseupgrader.ReleaseUpgrader1`), so a desktop upgrades without a terminal.
//!
//! One instance per bus: the name is requested without queueing, and a second instance
//! exits saying who holds it. Started by bus activation (as root, the activation file
//! says so) and gone after an idle time with no call and no work under way, as
//! system-image's `[dbus] lifetime`; activation starts it again on the next call.
//! [`settings`] are the values both the service and `image settings` read and write;
//! [`authority`] decides who may change state.

pub mod authority;
pub mod release_upgrade;
pub mod settings;
pub mod system_image;

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use thiserror::Error;
use zbus::fdo::{RequestNameFlags, RequestNameReply};

use crate::fetch::Fetcher;
use crate::root::SystemRoot;

/// system-image's default `[dbus] lifetime`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// What wakes the service's main thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A call or a signal: the idle time starts again.
    Keepalive,
    /// `Exit()`.
    Exit,
}

/// The workers' line to the service's main thread (any thread may use it).
#[derive(Debug)]
pub struct Waker(std::sync::Mutex<mpsc::Sender<Wake>>);

impl Waker {
    pub fn new(wake: mpsc::Sender<Wake>) -> Self {
        Waker(std::sync::Mutex::new(wake))
    }

    fn send(&self, wake: Wake) {
        let _ = self.0.lock().unwrap_or_else(|e| e.into_inner()).send(wake);
    }

    /// Something happened: the idle time starts again.
    pub fn keepalive(&self) {
        self.send(Wake::Keepalive);
    }

    /// `Exit()`: the service ends.
    pub fn exit(&self) {
        self.send(Wake::Exit);
    }
}

/// What a service's workers share: the object's path, and the idle time each signal
/// starts again.
trait Served {
    const PATH: &'static str;
    fn keepalive(&self);
}

/// The signals a worker sends, from its own thread (outside the bus's executor, so it
/// may wait for the send).
struct Signals<S> {
    connection: zbus::Connection,
    shared: Arc<S>,
}

impl<S: Served> Signals<S> {
    fn new(connection: &zbus::Connection, shared: Arc<S>) -> Arc<Self> {
        Arc::new(Signals {
            connection: connection.clone(),
            shared,
        })
    }

    /// Sends the signal `name` (made by `send`); a failure is logged, the work goes on.
    fn send<F: std::future::Future<Output = zbus::Result<()>>>(
        &self,
        name: &str,
        send: impl FnOnce(zbus::object_server::SignalEmitter<'static>) -> F,
    ) {
        self.shared.keepalive();
        let result = zbus::object_server::SignalEmitter::new(&self.connection, S::PATH)
            .map(|e| e.into_owned())
            .and_then(|emitter| zbus::block_on(send(emitter)));
        if let Err(e) = result {
            log::warn!("sending {name}: {e}");
        }
    }
}

/// Why the service ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Idle,
    Exit,
}

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("{name} is already owned on this bus: another instance of the service is running")]
    AlreadyRunning { name: String },
    #[error("cannot serve {name} on the system bus: {source}")]
    Bus {
        name: String,
        #[source]
        source: Box<zbus::Error>,
    },
}

impl ServiceError {
    fn bus(name: &str, source: zbus::Error) -> Self {
        ServiceError::Bus {
            name: name.into(),
            source: Box::new(source),
        }
    }
}

/// The bus to serve on: the one that activated us (`DBUS_STARTER_ADDRESS`, when it is a
/// system bus), else the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or its usual socket).
fn builder() -> zbus::Result<zbus::blocking::connection::Builder<'static>> {
    let starter = std::env::var("DBUS_STARTER_ADDRESS").ok();
    let system = std::env::var("DBUS_STARTER_BUS_TYPE").is_ok_and(|t| t == "system");
    match starter {
        Some(address) if system => zbus::blocking::connection::Builder::address(address.as_str()),
        _ => zbus::blocking::connection::Builder::system(),
    }
}

/// Serves `com.canonical.SystemImage` for the system at `root` until `idle` passes with
/// nothing to do, or `Exit()` is called.
pub fn run_system_image(
    root: &SystemRoot,
    fetcher: Fetcher,
    idle: Duration,
) -> Result<Ended, ServiceError> {
    let (wake, woken) = mpsc::channel();
    let shared = Arc::new(system_image::Shared::new(
        root.clone(),
        fetcher,
        authority::Authority::default(),
        wake,
    ));
    let iface = system_image::SystemImage::new(shared.clone());
    let connection = serve(system_image::NAME, system_image::PATH, iface)?;
    let ended = wait_until_idle(&woken, idle, &|| shared.busy());
    // An apply is journaled and survives being cut short, but is not cut short here.
    while shared.applying() {
        std::thread::sleep(Duration::from_millis(100));
    }
    release(&connection, system_image::NAME);
    Ok(ended)
}

/// Serves `org.releaseupgrader.ReleaseUpgrader1` for the system at `root`, running `cli`
/// for checks and upgrades, until `idle` passes with nothing under way.
pub fn run_release_upgrade(
    root: &SystemRoot,
    cli: release_upgrade::Cli,
    idle: Duration,
) -> Result<Ended, ServiceError> {
    let (wake, woken) = mpsc::channel();
    let wake_on_disconnect = wake.clone();
    let shared = Arc::new(release_upgrade::Shared::new(
        root.clone(),
        cli,
        authority::Authority::default(),
        wake,
    ));
    let iface = release_upgrade::ReleaseUpgrader::new(shared.clone());
    let connection = serve(release_upgrade::NAME, release_upgrade::PATH, iface)?;
    exit_when_disconnected(&connection, wake_on_disconnect);
    let ended = wait_until_idle(&woken, idle, &|| shared.busy());
    if ended == Ended::Exit {
        // The bus went away (its daemon stopped or restarted): nobody can answer the
        // upgrade's questions any more, so they take their defaults, and the upgrade is
        // left to finish before the service goes.
        shared.abandon();
        while shared.busy() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    release(&connection, release_upgrade::NAME);
    Ok(ended)
}

/// Sends `Wake::Exit` through `wake` once the bus connection is closed.
fn exit_when_disconnected(connection: &zbus::blocking::Connection, wake: mpsc::Sender<Wake>) {
    let messages = zbus::blocking::MessageIterator::from(connection);
    std::thread::spawn(move || {
        // Every message passes here too (zbus hands each stream its own copy); the
        // iteration ends, or fails reading the socket, only when the connection is gone.
        for message in messages {
            if let Err(zbus::Error::InputOutput(_)) = message {
                break;
            }
        }
        log::warn!("the bus connection is closed");
        let _ = wake.send(Wake::Exit);
    });
}

/// Serves `iface` at `path` and owns `name`, refusing to queue behind another owner.
fn serve<I: zbus::object_server::Interface>(
    name: &str,
    path: &str,
    iface: I,
) -> Result<zbus::blocking::Connection, ServiceError> {
    let connection = builder()
        .and_then(|b| b.serve_at(path, iface))
        .and_then(|b| b.build())
        .map_err(|e| ServiceError::bus(name, e))?;
    match connection.request_name_with_flags(name, RequestNameFlags::DoNotQueue.into()) {
        Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => {}
        Ok(_) | Err(zbus::Error::NameTaken) => {
            return Err(ServiceError::AlreadyRunning { name: name.into() });
        }
        Err(e) => return Err(ServiceError::bus(name, e)),
    }
    log::info!("serving {name} at {path}");
    Ok(connection)
}

/// Waits for `Exit()`, or for `idle` to pass without a call while nothing is `busy`.
fn wait_until_idle(woken: &mpsc::Receiver<Wake>, idle: Duration, busy: &dyn Fn() -> bool) -> Ended {
    loop {
        match woken.recv_timeout(idle) {
            Ok(Wake::Keepalive) => continue,
            Ok(Wake::Exit) => break Ended::Exit,
            Err(RecvTimeoutError::Timeout) if busy() => continue,
            Err(RecvTimeoutError::Timeout) => break Ended::Idle,
            Err(RecvTimeoutError::Disconnected) => break Ended::Exit,
        }
    }
}

/// Gives up `name`, leaving the last reply its way out before the connection goes.
fn release(connection: &zbus::blocking::Connection, name: &str) {
    let _ = connection.release_name(name);
    std::thread::sleep(Duration::from_millis(50));
}
