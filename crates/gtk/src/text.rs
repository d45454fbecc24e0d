//! Every string the window shows, translated through gettext (textdomain
//! `release-upgrader`). They live in this one file so that `xgettext --language=C` can read
//! them (it has no Rust parser; this file keeps to what a C lexer reads right: no
//! lifetimes, no raw strings) and `po/POTFILES.in` names one file; the crate's tests
//! regenerate `po/release-upgrader-gtk.pot` and compare, and refuse a `gettext(` call
//! anywhere else.
//!
//! Placeholders are `{name}`, filled by [`fill`], so that a translation may reorder them.

use gettextrs::{gettext, ngettext};

/// Replaces each `{name}` in `template` by its value.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// The human name of a phase of the upgrade (the service's phase ids, docs/protocol.md §4).
pub fn phase(id: &str) -> String {
    match id {
        "preflight" => gettext("Checking your system"),
        "bootstrap" => gettext("Preparing the upgrade tools"),
        "sources" => gettext("Switching the software sources"),
        "update" => gettext("Reading the new package lists"),
        "plan" => gettext("Working out the changes"),
        "download" => gettext("Downloading the new packages"),
        "install" => gettext("Installing the new packages"),
        "cleanup" => gettext("Cleaning up"),
        other => fill(&gettext("Step “{id}”"), &[("id", other)]),
    }
}

pub fn window_title() -> String {
    gettext("Release Upgrade")
}
pub fn start_heading() -> String {
    gettext("Upgrade to a new release")
}
pub fn running(current: &str) -> String {
    fill(
        &gettext("This computer runs {current}."),
        &[("current", current)],
    )
}
pub fn checking() -> String {
    gettext("Looking for a new release…")
}
pub fn available(version: &str, codename: &str) -> String {
    fill(
        &gettext("Version {version} ({codename}) is available."),
        &[("version", version), ("codename", codename)],
    )
}
pub fn available_explained() -> String {
    gettext(
        "The upgrade downloads the new release and installs it over this one. Your files and settings are kept. It takes a while; you can go on using the computer meanwhile, and restart at the end.",
    )
}
pub fn none_available(reason: &str) -> String {
    if reason.is_empty() {
        gettext("No new release is available for this computer.")
    } else {
        fill(
            &gettext("No new release is available for this computer: {reason}"),
            &[("reason", reason)],
        )
    }
}
pub fn service_unreachable(error: &str) -> String {
    fill(
        &gettext("The upgrade service cannot be reached: {error}"),
        &[("error", error)],
    )
}
pub fn upgrade_refused(error: &str) -> String {
    fill(
        &gettext("The upgrade could not start: {error}"),
        &[("error", error)],
    )
}
pub fn release_notes() -> String {
    gettext("Release notes")
}
pub fn no_release_notes() -> String {
    gettext("This release has no release notes.")
}
pub fn button_upgrade() -> String {
    gettext("_Upgrade")
}
pub fn button_close() -> String {
    gettext("_Close")
}
pub fn button_cancel() -> String {
    gettext("_Cancel")
}
pub fn details() -> String {
    gettext("_Details")
}
pub fn starting() -> String {
    gettext("Starting the upgrade…")
}
pub fn cancelling() -> String {
    gettext("Cancelling: putting everything back as it was…")
}
pub fn too_late() -> String {
    gettext("The upgrade is installing packages and can no longer be cancelled.")
}
pub fn cancel_failed(error: &str) -> String {
    fill(
        &gettext("The upgrade could not be cancelled: {error}"),
        &[("error", error)],
    )
}
pub fn phase_started(name: &str) -> String {
    fill(&gettext("{phase}…"), &[("phase", name)])
}
pub fn phase_done(name: &str) -> String {
    fill(&gettext("{phase}: done"), &[("phase", name)])
}
pub fn phase_failed(name: &str) -> String {
    fill(&gettext("{phase}: failed"), &[("phase", name)])
}
pub fn conffile_title() -> String {
    gettext("A configuration file was changed")
}
pub fn conffile_heading(path: &str) -> String {
    fill(&gettext("Keep your version of {path}?"), &[("path", path)])
}
pub fn conffile_explained(package: &str) -> String {
    if package.is_empty() {
        gettext(
            "This file was changed on this computer, and the new release brings a new version of it.",
        )
    } else {
        fill(
            &gettext(
                "This file was changed on this computer, and the new release of {package} brings a new version of it.",
            ),
            &[("package", package)],
        )
    }
}
pub fn show_differences() -> String {
    gettext("_Show the differences")
}
pub fn keep_yours() -> String {
    gettext("_Keep your version")
}
pub fn install_theirs() -> String {
    gettext("_Install the package maintainer's version")
}
pub fn question_title() -> String {
    gettext("A question from the upgrade")
}
pub fn choices(choices: &str) -> String {
    fill(&gettext("Answers: {choices}"), &[("choices", choices)])
}
pub fn button_ok() -> String {
    gettext("_OK")
}
pub fn answer_refused(error: &str) -> String {
    fill(
        &gettext("The answer was not taken: {error}"),
        &[("error", error)],
    )
}
pub fn upgraded(version: &str, codename: &str) -> String {
    if version.is_empty() && codename.is_empty() {
        gettext("Your system is upgraded.")
    } else {
        fill(
            &gettext("Your system is upgraded to version {version} ({codename})."),
            &[("version", version), ("codename", codename)],
        )
    }
}
pub fn restart_needed() -> String {
    gettext("Restart the computer to finish: it then runs the new release.")
}
pub fn no_restart_needed() -> String {
    gettext("No restart is needed.")
}
pub fn button_restart() -> String {
    gettext("_Restart Now")
}
pub fn button_later() -> String {
    gettext("_Later")
}
pub fn restarting() -> String {
    gettext("Restarting…")
}
pub fn restart_failed(error: &str) -> String {
    fill(
        &gettext("The computer could not be restarted: {error}"),
        &[("error", error)],
    )
}
pub fn plan_heading(version: &str, codename: &str) -> String {
    fill(
        &gettext("Ready to upgrade to version {version} ({codename})"),
        &[("version", version), ("codename", codename)],
    )
}
pub fn plan_waiting() -> String {
    gettext("Working out the changes…")
}
pub fn plan_upgrades(n: u32) -> String {
    fill(
        &ngettext(
            "{n} package will be upgraded",
            "{n} packages will be upgraded",
            n,
        ),
        &[("n", &n.to_string())],
    )
}
pub fn plan_installs(n: u32) -> String {
    fill(
        &ngettext(
            "{n} new package will be installed",
            "{n} new packages will be installed",
            n,
        ),
        &[("n", &n.to_string())],
    )
}
pub fn plan_removals(n: u32) -> String {
    fill(
        &ngettext(
            "{n} package will be removed",
            "{n} packages will be removed",
            n,
        ),
        &[("n", &n.to_string())],
    )
}
pub fn plan_download(size: &str) -> String {
    fill(&gettext("{size} will be downloaded"), &[("size", size)])
}
pub fn plan_kept_back(names: &str) -> String {
    fill(
        &gettext("Not upgraded this time: {names}"),
        &[("names", names)],
    )
}
pub fn plan_explained() -> String {
    gettext(
        "Nothing has been changed yet. Removed packages keep their settings. Once the new packages start to install, the upgrade can no longer be cancelled.",
    )
}
pub fn plan_removed() -> String {
    gettext("Packages to be _removed")
}
pub fn button_start() -> String {
    gettext("_Start the Upgrade")
}
pub fn button_yes() -> String {
    gettext("_Yes")
}
pub fn button_no() -> String {
    gettext("_No")
}
pub fn cancelled() -> String {
    gettext("The upgrade was cancelled")
}
pub fn cancelled_explained() -> String {
    gettext("Everything was put back as it was before: this computer still runs its release.")
}
pub fn failed() -> String {
    gettext("The upgrade did not finish")
}
pub fn failed_code(code: &str) -> String {
    fill(
        &gettext("It stopped with exit code {code}. What it said:"),
        &[("code", code)],
    )
}
pub fn failed_hint() -> String {
    gettext(
        "Try again later. If it fails again, run “sudo release-upgrader upgrade” in a terminal to see each step, and report the message above.",
    )
}
