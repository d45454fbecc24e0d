//! `release-upgrader-gtk`: the desktop's window onto the release upgrade. It does nothing
//! by itself: the system service `release-upgrader service release-upgrade` checks,
//! upgrades and asks (docs/protocol.md §5, "The release upgrade for desktops"); this app
//! shows what it says over the system bus and sends the person's answers back. So it runs
//! as the person at the desktop, and polkit decides what they may do.
//!
//! Modules: `model` (what is shown, pure), `bus` (the service and logind), `ui` (the
//! widgets), `text` (the translated strings), `hooks` (the test hooks, off unless
//! `RELEASE_UPGRADER_GTK_TEST_DIR` is set).

mod bus;
mod hooks;
mod model;
mod text;
mod ui;

use gtk::prelude::*;
use gtk::{gio, glib};

/// The gettext domain, shared with the rest of release-upgrader.
const DOMAIN: &str = "release-upgrader";
/// Also the name of its .desktop file and icon (dist/): the shell matches the window to them.
const APP_ID: &str = "org.releaseupgrader.Gtk";
/// Where the catalogues are (`<dir>/<lang>/LC_MESSAGES/release-upgrader.mo`), unless
/// `RELEASE_UPGRADER_LOCALEDIR` says otherwise (the tests' freshly compiled ones).
const LOCALEDIR: &str = "/usr/share/locale";

fn usage() -> String {
    format!(
        "release-upgrader-gtk {}\n\
         The desktop's window onto the release upgrade: talks to the system service\n\
         org.releaseupgrader.ReleaseUpgrader on the system bus.\n\n\
         Usage: release-upgrader-gtk [--help] [--version]\n\n\
         Environment:\n  \
         DBUS_SYSTEM_BUS_ADDRESS         the system bus (default: the system's)\n  \
         RELEASE_UPGRADER_LOCALEDIR      the translations' directory (default: {LOCALEDIR})\n  \
         RELEASE_UPGRADER_GTK_TEST_DIR   turn on the test hooks (state.jsonl, screenshots, commands)\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn main() -> glib::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("-h" | "--help") => {
            print!("{}", usage());
            return glib::ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("release-upgrader-gtk {}", env!("CARGO_PKG_VERSION"));
            return glib::ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "release-upgrader-gtk: unexpected argument {other:?}\n\n{}",
                usage()
            );
            return glib::ExitCode::from(2);
        }
    }

    // Translations: the system's locale, glibc's gettext. Without a catalogue the
    // strings stay English; nothing to fail on.
    let _ = gettextrs::setlocale(gettextrs::LocaleCategory::LcAll, "");
    let localedir = std::env::var_os("RELEASE_UPGRADER_LOCALEDIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| LOCALEDIR.into());
    let _ = gettextrs::bindtextdomain(DOMAIN, localedir);
    let _ = gettextrs::bind_textdomain_codeset(DOMAIN, "UTF-8");
    let _ = gettextrs::textdomain(DOMAIN);

    let hooks = hooks::Hooks::from_env();
    // Under test, several may run at once and there is no session bus to be unique on.
    let flags = if hooks.is_some() {
        gio::ApplicationFlags::NON_UNIQUE
    } else {
        gio::ApplicationFlags::empty()
    };
    let application = gtk::Application::builder()
        .application_id(APP_ID)
        .flags(flags)
        .build();
    let hooks = std::cell::Cell::new(hooks);
    application.connect_activate(move |application| {
        if let Some(w) = application.active_window() {
            return w.present();
        }
        // The icon the window shows where the shell does not take it from the .desktop file.
        gtk::Window::set_default_icon_name(APP_ID);
        let app = ui::App::new(application, hooks.take());
        hooks::Hooks::listen(&app);
        // The window holds the app (everything else holds it weakly) until it goes.
        let keep = app.clone();
        app.ui.window.connect_destroy(move |_| {
            let _ = &keep;
        });
        app.ui.window.present();
        app.start();
    });
    // The arguments are ours, checked above; GApplication gets none.
    application.run_with_args::<&str>(&[])
}
