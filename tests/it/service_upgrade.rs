//! `release-upgrader service release-upgrade` on a private system bus: started by bus
//! activation, driven by an independent client (python3-dbus) the way a desktop would
//! drive it, over a throwaway root of the demo's tiny releases whose `/etc/demo.conf` the
//! user edited, so dpkg asks about it and the answer comes back over the bus.

use std::path::{Path, PathBuf};

use ru_testing::dbus::PrivateBus;
use serde_json::{Value, json};

use crate::interactive::{MINE, SHIPPED, edited_world};
use crate::service::run_client;
use crate::support::BIN;
use crate::upgrade::{World, audit_clean};

const DIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/dbus-1");
const NAME: &str = "org.releaseupgrader.ReleaseUpgrader";
const PATH: &str = "/org/releaseupgrader/ReleaseUpgrader1";
const IFACE: &str = "org.releaseupgrader.ReleaseUpgrader1";

/// A desktop: the world's root, and a private system bus that activates the service for it
/// (also the window's test, tests/it/gtk.rs).
pub(crate) struct Desktop {
    pub(crate) w: World,
    pub(crate) bus: PrivateBus,
    _dir: tempfile::TempDir,
}

impl Desktop {
    pub(crate) fn new(w: World) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Reachable by the unprivileged caller of the authorization test.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let services = dir.path().join("services");
        std::fs::create_dir_all(&services).unwrap();
        // As dist/dbus-1/system-services/org.releaseupgrader.ReleaseUpgrader.service, with
        // the binary under test and the world's root, keyring and meta-release.
        std::fs::write(
            services.join(format!("{NAME}.service")),
            format!(
                "[D-BUS Service]\nName={NAME}\n\
                 Exec=/usr/bin/env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY \
                 RELEASE_UPGRADER_RETRY_DELAY_MS=10 {BIN} --root {} --keyring {} \
                 --meta-release-uri {}meta-release --arch amd64 service release-upgrade \
                 --idle-timeout 60\n",
                w.root.display(),
                w.keyring.display(),
                w.url
            ),
        )
        .unwrap();
        let bus = PrivateBus::start(dir.path(), &[&services]).expect("dbus-daemon (scripts/setup)");
        Desktop { w, bus, _dir: dir }
    }

    fn client(&self, steps: &[&str]) -> Vec<Value> {
        self.client_as(None, steps)
    }

    /// Runs the python client for this interface with `steps` (as `uid` when given).
    fn client_as(&self, uid: Option<u32>, steps: &[&str]) -> Vec<Value> {
        let env = [
            ("CLIENT_NAME", NAME),
            ("CLIENT_PATH", PATH),
            ("CLIENT_IFACE", IFACE),
            ("CLIENT_WAIT", "240"),
        ];
        run_client(&self.bus, uid, &env, steps)
    }
}

fn signals<'a>(events: &'a [Value], name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events
        .iter()
        .filter(move |e| e["signal"] == name)
        .map(|e| &e["args"])
}

fn signal<'a>(events: &'a [Value], name: &'a str) -> &'a Value {
    signals(events, name)
        .next()
        .unwrap_or_else(|| panic!("no {name} in {events:#?}"))
}

fn prop<'a>(events: &'a [Value], name: &str) -> &'a Value {
    &events
        .iter()
        .rfind(|e| e["prop"] == name)
        .unwrap_or_else(|| panic!("no property {name} in {events:#?}"))["value"]
}

/// The call's error name (`None`: it succeeded).
fn error<'a>(events: &'a [Value], method: &str, nth: usize) -> Option<&'a str> {
    events
        .iter()
        .filter(|e| e["call"] == method)
        .nth(nth)
        .unwrap_or_else(|| panic!("no call {method} #{nth} in {events:#?}"))["error"]
        .as_str()
}

#[test]
fn a_desktop_checks_upgrades_and_answers_the_conffile_question_over_the_bus() {
    let d = Desktop::new(edited_world());
    let events = d.client(&[
        "call:CheckRelease",
        "wait:ReleaseChecked",
        "prop:TargetRelease",
        // Bad input first: refused with a named error, nothing started.
        r#"call:Upgrade:json:{"purge": true}"#,
        "prop:State",
        "call:Upgrade:json:{}",
        // One upgrade at a time.
        "call:Upgrade:json:{}",
        "wait:Question",
        "prop:State",
        // Not a choice: dpkg never sees it.
        "answer:Z",
        "answer:Y",
        "wait:Finished",
        "prop:State",
        "prop:Progress",
        "prop:RebootRequired",
    ]);
    let checked = signal(&events, "ReleaseChecked");
    assert_eq!(checked[0], true, "{checked}");
    assert_eq!(checked[1], "beta");
    assert_eq!(checked[2], "2");
    assert_eq!(
        checked[4], true,
        "the helper pocket is reachable: {checked}"
    );
    assert_eq!(prop(&events, "TargetRelease"), "beta");
    assert_eq!(
        error(&events, "Upgrade", 0),
        Some("org.releaseupgrader.ReleaseUpgrader1.Error.InvalidOption")
    );
    assert_eq!(error(&events, "Upgrade", 1), None);
    assert_eq!(
        error(&events, "Upgrade", 2),
        Some("org.releaseupgrader.ReleaseUpgrader1.Error.Busy")
    );
    // The question as the desktop shows it: the file, the choices, the difference.
    let q = signal(&events, "Question");
    assert_eq!(q[1], "conffile", "{q}");
    assert_eq!(q[3], "/etc/demo.conf", "{q}");
    assert_eq!(q[5], json!(["Y", "I", "N", "O"]), "{q}");
    assert_eq!(q[6], "N", "{q}");
    let diff = q[7].as_str().unwrap();
    assert!(
        diff.contains("-colour = red # mine") && diff.contains("+colour = green"),
        "{diff}"
    );
    let states: Vec<&Value> = events
        .iter()
        .filter(|e| e["prop"] == "State")
        .map(|e| &e["value"])
        .collect();
    assert_eq!(states, [&json!("idle"), &json!("question"), &json!("idle")]);
    assert_eq!(
        error(&events, "Answer", 0),
        Some("org.releaseupgrader.ReleaseUpgrader1.Error.InvalidAnswer")
    );
    assert_eq!(error(&events, "Answer", 1), None);
    // The phases in order, each ended well, and a bar that only moves forward.
    let phases: Vec<String> = signals(&events, "PhaseChanged")
        .filter(|a| a[1] == "end")
        .map(|a| {
            assert_eq!(a[2], true, "{a}");
            a[0].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        phases,
        [
            "preflight",
            "bootstrap",
            "sources",
            "update",
            "plan",
            "download",
            "install",
            "cleanup"
        ]
    );
    let percents: Vec<f64> = signals(&events, "ProgressChanged")
        .map(|a| a[0].as_f64().unwrap())
        .collect();
    assert!(!percents.is_empty());
    assert!(percents.windows(2).all(|p| p[0] <= p[1]), "{percents:?}");
    let finished = signal(&events, "Finished");
    assert_eq!(finished[0], 0, "{finished}");
    assert_eq!(prop(&events, "Progress"), 100.0);
    // A desktop upgrade asks for the restart; the service never restarts by itself.
    assert_eq!(prop(&events, "RebootRequired"), true);
    assert_eq!(d.w.read("/etc/demo.conf"), SHIPPED);
    assert_eq!(d.w.read("/etc/demo.conf.dpkg-old"), MINE);
    d.w.assert_all_on_beta("after the upgrade over the bus");
    assert!(!d.w.root.join("usr/lib/release-upgrader").exists());
    audit_clean(&d.w.root);
}

#[test]
fn cancel_before_dpkg_puts_everything_back_and_is_refused_once_dpkg_runs() {
    let d = Desktop::new(World::new());
    let sources = d.w.sources();
    let events = d.client(&[
        // Nothing to cancel or answer yet.
        "call:Cancel",
        "call:Answer:u:1:Y",
        "call:Upgrade:json:{}",
        // After the re-exec: the helpers are in, the sources are rewritten.
        "wait:PhaseChanged=update",
        "call:Cancel",
        "wait:Finished",
        "prop:State",
    ]);
    assert_eq!(
        error(&events, "Cancel", 0),
        Some("org.releaseupgrader.ReleaseUpgrader1.Error.NotRunning")
    );
    assert_eq!(
        error(&events, "Answer", 0),
        Some("org.releaseupgrader.ReleaseUpgrader1.Error.NotRunning")
    );
    assert_eq!(error(&events, "Cancel", 1), None);
    let finished = signal(&events, "Finished");
    assert_eq!(finished[0], 130, "{events:#?}");
    assert_eq!(prop(&events, "State"), "idle");
    assert!(
        signals(&events, "PhaseChanged").all(|a| a[0] != "install"),
        "{events:#?}"
    );
    assert_eq!(d.w.sources(), sources, "the sources were not put back");
    assert!(!d.w.root.join("usr/lib/release-upgrader").exists());
    assert!(d.w.installed().contains("demo-hello 1.0-1 ii"));
    audit_clean(&d.w.root);

    // Once dpkg runs, a cancel is refused and the upgrade goes on to its end.
    let events = d.client(&[
        "call:Upgrade:json:{}",
        "wait:PhaseChanged=install",
        "call:Cancel",
        "wait:Finished",
    ]);
    assert_eq!(
        error(&events, "Cancel", 0),
        Some("org.releaseupgrader.ReleaseUpgrader1.Error.TooLate")
    );
    assert_eq!(signal(&events, "Finished")[0], 0, "{events:#?}");
    d.w.assert_all_on_beta("after a refused cancel");
}

/// With `confirm`, the desktop sees the plan (`PlanReady`) and is asked to start; `N`
/// puts everything back before anything is downloaded.
#[test]
fn with_confirm_the_plan_is_signalled_and_declining_it_puts_everything_back() {
    let d = Desktop::new(World::new());
    let before = d.w.before();
    let events = d.client(&[
        r#"call:Upgrade:json:{"confirm": true}"#,
        // The demo's obsolete package first: kept.
        "wait:Question",
        "answer:N",
        "wait:Question",
        "prop:State",
        "answer:N",
        "wait:Finished",
    ]);
    let plan = signal(&events, "PlanReady");
    assert!(plan[0].as_u64().unwrap() > 0, "upgrades: {plan}");
    assert!(plan[4].is_array() && plan[5].is_array(), "{plan}");
    let kinds: Vec<&Value> = signals(&events, "Question").map(|q| &q[1]).collect();
    assert_eq!(kinds, [&json!("confirm"), &json!("start")], "{events:#?}");
    let question = signals(&events, "Question").nth(1).unwrap();
    assert_eq!(question[5], json!(["Y", "N"]), "{question}");
    // The obsolete package was kept: nothing is removed.
    assert_eq!(plan[2], 0, "{plan}");
    assert_eq!(prop(&events, "State"), "question");
    assert_eq!(signal(&events, "Finished")[0], 130, "{events:#?}");
    assert!(
        signals(&events, "PhaseChanged").all(|a| a[0] != "download" && a[0] != "install"),
        "{events:#?}"
    );
    d.w.assert_put_back(&before);
    assert!(!d.w.root.join("usr/lib/release-upgrader").exists());
}

#[test]
fn callers_other_than_root_may_not_upgrade_without_polkit() {
    let d = Desktop::new(World::new());
    let events = d.client_as(
        Some(65534),
        &["prop:State", "call:Upgrade:json:{}", "call:Cancel"],
    );
    assert_eq!(prop(&events, "State"), "idle");
    for (method, nth) in [("Upgrade", 0), ("Cancel", 0)] {
        assert_eq!(
            error(&events, method, nth),
            Some("org.freedesktop.DBus.Error.AccessDenied"),
            "{events:#?}"
        );
    }
    assert!(d.w.installed().contains("demo-hello 1.0-1 ii"));
}

#[test]
fn the_introspection_is_the_shipped_interface_and_the_shipped_files_name_the_service() {
    let d = Desktop::new(World::new());
    let xml = format!("{DIST}/interfaces/{IFACE}.xml");
    let events = d.client(&[&format!("introspect:{xml}")]);
    let i = &events[0]["introspection"];
    assert_eq!(i["live"], i["shipped"]);
    assert_eq!(i["equal"], true);
    let dist = Path::new(DIST);
    let service =
        std::fs::read_to_string(dist.join(format!("system-services/{NAME}.service"))).unwrap();
    assert!(service.contains(&format!("Name={NAME}\n")));
    assert!(service.contains("Exec=/usr/bin/release-upgrader service release-upgrade\n"));
    assert!(service.contains("User=root\n"));
    let policy: PathBuf = dist.join(format!("system.d/{NAME}.conf"));
    let policy = std::fs::read_to_string(policy).unwrap();
    assert!(policy.contains(&format!(r#"<allow own="{NAME}"/>"#)));
    let install = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/release-upgrader.install"),
    )
    .unwrap();
    for file in [
        format!("dist/dbus-1/system.d/{NAME}.conf"),
        format!("dist/dbus-1/system-services/{NAME}.service"),
        format!("dist/dbus-1/interfaces/{IFACE}.xml"),
    ] {
        assert!(install.contains(&file), "{file}");
    }
}

/// The bus goes away (its daemon stops) while dpkg asks: nobody can answer any more, so
/// the question takes its default (the user's file is kept), the upgrade finishes, and
/// the service and the upgrade end rather than wait forever.
#[test]
fn a_bus_that_goes_away_mid_question_leaves_the_upgrade_to_finish_with_the_defaults() {
    let d = Desktop::new(edited_world());
    let events = d.client(&["call:Upgrade:json:{}", "wait:Question"]);
    assert_eq!(signal(&events, "Question")[3], "/etc/demo.conf");
    let Desktop { w, bus, _dir } = d;
    drop(bus);
    // Nothing of the service or the upgrade may be left running for this root.
    let needle = w.root.display().to_string();
    let running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .any(|e| {
                String::from_utf8_lossy(
                    &std::fs::read(e.path().join("cmdline")).unwrap_or_default(),
                )
                .contains(&needle)
            })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let left = running();
    if left {
        crate::upgrade::kill_everything_touching(&w.root);
    }
    assert!(
        !left,
        "the service or the upgrade still runs after the bus went away"
    );
    assert_eq!(
        w.read("/etc/demo.conf"),
        MINE,
        "the default keeps the user's file"
    );
    w.assert_all_on_beta("after the bus went away");
}
