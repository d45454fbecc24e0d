//! The system-bus service (issue 16): system-image's `com.canonical.SystemImage` API for
//! image devices ([`system_image`]), so the phone's settings panel drives this client
//! as it drove system-image.
//!
//! One instance per bus: the name is requested without queueing, and a second instance
//! exits saying who holds it. Started by bus activation (as root, the activation file
//! says so) and gone after an idle time with no call and no work under way, as
//! system-image's `[dbus] lifetime`; activation starts it again on the next call.
//! [`settings`] are the values both the service and `image settings` read and write;
//! [`authority`] decides who may change state.

pub mod authority;
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
    fn bus(source: zbus::Error) -> Self {
        ServiceError::Bus {
            name: system_image::NAME.into(),
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
    let connection = builder()
        .and_then(|b| {
            b.serve_at(
                system_image::PATH,
                system_image::SystemImage::new(shared.clone()),
            )
        })
        .and_then(|b| b.build())
        .map_err(ServiceError::bus)?;
    match connection
        .request_name_with_flags(system_image::NAME, RequestNameFlags::DoNotQueue.into())
    {
        Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => {}
        Ok(_) | Err(zbus::Error::NameTaken) => {
            return Err(ServiceError::AlreadyRunning {
                name: system_image::NAME.into(),
            });
        }
        Err(e) => return Err(ServiceError::bus(e)),
    }
    log::info!("serving {} at {}", system_image::NAME, system_image::PATH);
    let ended = loop {
        match woken.recv_timeout(idle) {
            Ok(Wake::Keepalive) => continue,
            Ok(Wake::Exit) => break Ended::Exit,
            Err(RecvTimeoutError::Timeout) if shared.busy() => continue,
            Err(RecvTimeoutError::Timeout) => break Ended::Idle,
            Err(RecvTimeoutError::Disconnected) => break Ended::Exit,
        }
    };
    // An apply is journaled and survives being cut short, but is not cut short here.
    while shared.applying() {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give the reply to Exit() its way out before the connection goes.
    let _ = connection.release_name(system_image::NAME);
    std::thread::sleep(Duration::from_millis(50));
    Ok(ended)
}
