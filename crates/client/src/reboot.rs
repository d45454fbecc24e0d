//! Rebooting into what was just applied.
//!
//! A device runs a new image only after a reboot: an A/B slot becomes active at boot, the
//! files of an in-place apply replace those of running processes, and an update queued
//! for the recovery is applied by the recovery. system-image reboots after every apply;
//! so does `image apply`, unless told not to.
//!
//! The reboot goes through logind on the system bus (`org.freedesktop.login1.Manager`:
//! `SetRebootParameter("recovery")` first for the recovery, then `Reboot(false)`), as
//! desktops and system-image 3.x do, so that inhibitors and shutdown ordering hold.
//! Where no logind answers (no system bus, or the name has no owner), `systemctl reboot
//! [recovery]` is run instead. Any other refusal (polkit, an inhibitor) is reported, not
//! worked around.

use std::process::Command;

use thiserror::Error;

const LOGIND: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";
const LOGIND_MANAGER: &str = "org.freedesktop.login1.Manager";

/// What to boot into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Into {
    /// The system (a new slot or the updated root).
    System,
    /// The recovery, which applies the queued update (`/cache/recovery/ubuntu_command`).
    Recovery,
}

/// How the reboot was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Logind,
    Systemctl,
}

#[derive(Debug, Error)]
pub enum RebootError {
    #[error("logind refused to reboot: {0}")]
    Refused(String),
    #[error("no logind on the system bus ({logind}), and `systemctl reboot` failed: {systemctl}")]
    NoWay { logind: String, systemctl: String },
}

/// Asks the system to reboot into `into`. Returns once the request was accepted (the
/// reboot itself follows).
pub fn reboot(into: Into) -> Result<Via, RebootError> {
    let connection = zbus::blocking::Connection::system();
    let asked = match &connection {
        Ok(connection) => logind(connection, into),
        Err(e) => Err(LogindError::Absent(format!("no system bus: {e}"))),
    };
    settle(into, asked, true)
}

/// [`reboot`] through the logind on `connection` (the bus a service runs on). Only with
/// `fallback` does a missing logind lead to `systemctl reboot`: a service pointed at
/// another root on another bus never reboots the machine it runs on.
pub fn reboot_on(
    connection: &zbus::blocking::Connection,
    into: Into,
    fallback: bool,
) -> Result<Via, RebootError> {
    settle(into, logind(connection, into), fallback)
}

fn settle(into: Into, asked: Result<(), LogindError>, fallback: bool) -> Result<Via, RebootError> {
    match asked {
        Ok(()) => Ok(Via::Logind),
        Err(LogindError::Absent(why)) if !fallback => Err(RebootError::NoWay {
            logind: why,
            systemctl: "not tried: this bus is not this machine's".into(),
        }),
        Err(LogindError::Absent(why)) => {
            log::info!("no logind to reboot through ({why}); running systemctl reboot");
            systemctl(into).map_err(|systemctl| RebootError::NoWay {
                logind: why,
                systemctl,
            })?;
            Ok(Via::Systemctl)
        }
        Err(LogindError::Refused(why)) => Err(RebootError::Refused(why)),
    }
}

enum LogindError {
    /// Nobody to ask: no bus, or no owner of the name.
    Absent(String),
    /// logind answered with an error.
    Refused(String),
}

fn logind(connection: &zbus::blocking::Connection, into: Into) -> Result<(), LogindError> {
    if into == Into::Recovery {
        call(connection, "SetRebootParameter", &("recovery",))?;
    }
    // interactive = false: no polkit prompt; this runs as root.
    call(connection, "Reboot", &(false,))
}

fn call<B>(
    connection: &zbus::blocking::Connection,
    method: &str,
    body: &B,
) -> Result<(), LogindError>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    connection
        .call_method(
            Some(LOGIND),
            LOGIND_PATH,
            Some(LOGIND_MANAGER),
            method,
            body,
        )
        .map(drop)
        .map_err(|e| classify(method, e))
}

fn classify(method: &str, e: zbus::Error) -> LogindError {
    if let zbus::Error::MethodError(name, _, _) = &e {
        let name = name.as_str();
        if name == "org.freedesktop.DBus.Error.ServiceUnknown"
            || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
        {
            return LogindError::Absent(format!("{LOGIND} is not on the bus"));
        }
    }
    LogindError::Refused(format!("{method}: {e}"))
}

fn systemctl(into: Into) -> Result<(), String> {
    let mut command = Command::new("systemctl");
    command.arg("reboot");
    if into == Into::Recovery {
        command.arg("recovery");
    }
    let out = command
        .output()
        .map_err(|e| format!("running systemctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
