//! The window's only way to the system: the service `org.releaseupgrader.ReleaseUpgrader1`
//! (docs/protocol.md §5) and logind's `Reboot`, both on the system bus.
//!
//! zbus 5 rather than gio's DBus: the service and its tests already speak zbus, the
//! `#[zbus::proxy]` traits below mirror the interface XML with typed arguments (no
//! hand-built GVariants), and zbus's futures run on any executor — its own thread does
//! the socket I/O — so they are awaited on the GLib main context
//! (`glib::spawn_future_local`) and every GTK call stays on the main thread.

use std::collections::HashMap;

use futures_lite::StreamExt;

use crate::model::{self, Event};

#[zbus::proxy(
    interface = "org.releaseupgrader.ReleaseUpgrader1",
    default_service = "org.releaseupgrader.ReleaseUpgrader",
    default_path = "/org/releaseupgrader/ReleaseUpgrader1"
)]
pub trait ReleaseUpgrader {
    fn check_release(&self) -> zbus::Result<()>;
    fn upgrade(&self, options: HashMap<&str, zbus::zvariant::Value<'_>>) -> zbus::Result<()>;
    fn answer(&self, id: u32, answer: &str) -> zbus::Result<()>;
    fn cancel(&self) -> zbus::Result<()>;

    #[zbus(signal)]
    fn release_checked(
        &self,
        available: bool,
        codename: String,
        version: String,
        release_notes_uri: String,
        pocket_reachable: bool,
        reason: String,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn phase_changed(&self, phase: String, state: String, ok: bool) -> zbus::Result<()>;
    #[zbus(signal)]
    fn progress_changed(&self, percent: f64, label: String, item: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn message(&self, text: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn plan_ready(
        &self,
        upgrades: u32,
        installs: u32,
        removals: u32,
        download_bytes: u64,
        removed: Vec<String>,
        kept_back: Vec<String>,
    ) -> zbus::Result<()>;
    #[allow(clippy::too_many_arguments)]
    #[zbus(signal)]
    fn question(
        &self,
        id: u32,
        kind: String,
        package: String,
        path: String,
        text: String,
        choices: Vec<String>,
        default: String,
        details: String,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn finished(&self, exit_code: i32, message: String) -> zbus::Result<()>;

    #[zbus(property)]
    fn current_release(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn release_notes(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn reboot_required(&self) -> zbus::Result<bool>;
}

/// logind's Manager, as far as restarting goes.
#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
pub trait Login {
    fn reboot(&self, interactive: bool) -> zbus::Result<()>;
}

/// What a failed call says to a person: the service's message, else the error's name.
pub fn describe(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(text), _) if !text.is_empty() => text.clone(),
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        other => other.to_string(),
    }
}

/// The error's DBus name, when the call was answered with one.
pub fn error_name(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

pub async fn connect() -> zbus::Result<ReleaseUpgraderProxy<'static>> {
    let connection = zbus::Connection::system().await?;
    ReleaseUpgraderProxy::builder(&connection)
        // The properties are read right after the signals they follow; a cache could
        // still hold the value from before.
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// Subscribes to every signal (before any call, so none is missed) and hands each on as
/// an [`Event`] to `sink`, on the main context.
pub async fn follow(
    proxy: &ReleaseUpgraderProxy<'static>,
    sink: impl Fn(Event) + Clone + 'static,
) -> zbus::Result<()> {
    let mut checked = proxy.receive_release_checked().await?;
    let mut phases = proxy.receive_phase_changed().await?;
    let mut progress = proxy.receive_progress_changed().await?;
    let mut messages = proxy.receive_message().await?;
    let mut questions = proxy.receive_question().await?;
    let mut plans = proxy.receive_plan_ready().await?;
    let mut finished = proxy.receive_finished().await?;

    let (p, s) = (proxy.clone(), sink.clone());
    gtk::glib::spawn_future_local(async move {
        while let Some(signal) = checked.next().await {
            let Ok(a) = signal.args() else { continue };
            s(Event::Checked {
                available: a.available,
                version: a.version.clone(),
                codename: a.codename.clone(),
                reason: a.reason.clone(),
            });
            if a.available {
                s(Event::Notes(p.release_notes().await.unwrap_or_default()));
            }
        }
    });
    let s = sink.clone();
    gtk::glib::spawn_future_local(async move {
        while let Some(signal) = phases.next().await {
            let Ok(a) = signal.args() else { continue };
            s(Event::Phase {
                phase: a.phase,
                state: a.state,
                ok: a.ok,
            });
        }
    });
    let s = sink.clone();
    gtk::glib::spawn_future_local(async move {
        while let Some(signal) = progress.next().await {
            let Ok(a) = signal.args() else { continue };
            s(Event::Progress {
                percent: a.percent,
                label: a.label,
                item: a.item,
            });
        }
    });
    let s = sink.clone();
    gtk::glib::spawn_future_local(async move {
        while let Some(signal) = messages.next().await {
            let Ok(a) = signal.args() else { continue };
            s(Event::Message(a.text));
        }
    });
    let s = sink.clone();
    gtk::glib::spawn_future_local(async move {
        while let Some(signal) = plans.next().await {
            let Ok(a) = signal.args() else { continue };
            s(Event::Planned(model::Plan {
                upgrades: a.upgrades,
                installs: a.installs,
                removals: a.removals,
                download_bytes: a.download_bytes,
                removed: a.removed,
                kept_back: a.kept_back,
            }));
        }
    });
    let s = sink.clone();
    gtk::glib::spawn_future_local(async move {
        while let Some(signal) = questions.next().await {
            let Ok(a) = signal.args() else { continue };
            s(Event::Question(model::Question {
                id: a.id,
                kind: a.kind,
                package: a.package,
                path: a.path,
                text: a.text,
                choices: a.choices,
                default: a.default,
                details: a.details,
            }));
        }
    });
    let (p, s) = (proxy.clone(), sink);
    gtk::glib::spawn_future_local(async move {
        while let Some(signal) = finished.next().await {
            let Ok(a) = signal.args() else { continue };
            let reboot_required = p.reboot_required().await.unwrap_or(false);
            s(Event::Finished {
                code: a.exit_code,
                message: a.message,
                reboot_required,
            });
        }
    });
    Ok(())
}

/// Asks logind to restart, letting its polkit ask the person (`interactive`).
pub async fn reboot() -> zbus::Result<()> {
    let connection = zbus::Connection::system().await?;
    LoginProxy::new(&connection).await?.reboot(true).await
}
