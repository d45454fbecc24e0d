//! The plan decided from a real Debian 12 → 13 upgrade's apt output (recorded by
//! `tests/fixtures/apt/bookworm-trixie/record.sh`: minbase with exa, postgresql-client-15,
//! sudo and nano held), and from that output made hostile.

use std::path::Path;

use super::*;

const STATUS: &str = include_str!("../../../../../tests/fixtures/apt/bookworm-trixie/status");
const HELD: &str = include_str!("../../../../../tests/fixtures/apt/bookworm-trixie/held.txt");
const POLICY_BOOKWORM: &str =
    include_str!("../../../../../tests/fixtures/apt/bookworm-trixie/policy-bookworm.txt");
const POLICY_TRIXIE: &str =
    include_str!("../../../../../tests/fixtures/apt/bookworm-trixie/policy-trixie.txt");
const CONFIG_DUMP: &str =
    include_str!("../../../../../tests/fixtures/apt/bookworm-trixie/apt-config-dump.txt");
/// `--print-uris` with the obsolete packages the decision lets go passed as `name-`.
const PRINT_URIS: &str =
    include_str!("../../../../../tests/fixtures/apt/bookworm-trixie/print-uris-obsolete.txt");
/// The same without them.
const PRINT_URIS_PLAIN: &str =
    include_str!("../../../../../tests/fixtures/apt/bookworm-trixie/print-uris.txt");
const SIMULATE: &str =
    include_str!("../../../../../tests/fixtures/apt/bookworm-trixie/simulate.txt");

fn status() -> Status {
    Status::parse(STATUS).expect("the recorded status parses")
}

fn system() -> System {
    System::parse(STATUS).expect("the recorded status parses")
}

/// The installed packages the running release offered (what the first stage records).
fn from_distribution() -> Vec<String> {
    apt::origins(POLICY_BOOKWORM)
        .into_iter()
        .filter(|(_, sources)| !sources.is_empty())
        .map(|(name, _)| name)
        .collect()
}

fn decision(denylist: &[String], config_dump: Option<&str>) -> Decision {
    let policy = apt::policy(POLICY_TRIXIE);
    obsolete(&ObsoleteFacts {
        system: &system(),
        from_distribution: &from_distribution(),
        policy: &policy,
        config_dump,
        denylist,
    })
}

/// The plan of `output` with the recorded system, the built-in denylist plus `site`,
/// and every obsolete package the rules let go agreed to.
fn plan_of(output: &str, apt_ok: bool, site: Option<&str>) -> Plan {
    let denylist = removal_denylist(site, None);
    let decision = decision(&denylist, Some(CONFIG_DUMP));
    plan(&Facts {
        apt_ok,
        apt_output: output,
        status: &status(),
        denylist: &denylist,
        obsolete: &decision,
        obsolete_removed: &decision.remove,
    })
}

/// `output` with `line` added to the list under `header`.
fn with_line(output: &str, header: &str, line: &str) -> String {
    let at = output
        .find(header)
        .expect("the header is in the transcript")
        + header.len();
    format!("{}\n{line}{}", &output[..at], &output[at..])
}

fn names(actions: &[apt::PlannedAction]) -> Vec<&str> {
    actions.iter().map(|a| a.package.as_str()).collect()
}

const MB: u64 = 1_000_000;

fn filesystem(device: u64, path: &str, available: u64) -> Filesystem {
    Filesystem {
        device,
        path: PathBuf::from(path),
        available,
    }
}

// ------------------------------------------------------------------- what apt planned

#[test]
fn the_recorded_upgrade_is_planned_as_apt_printed_it_and_goes_ahead() {
    let plan = plan_of(PRINT_URIS, true, None);
    assert_eq!(plan.simulation.upgraded.len(), 97);
    assert_eq!(plan.simulation.installed.len(), 23);
    assert_eq!(plan.simulation.removed.len(), 19);
    assert_eq!(plan.simulation.kept_back, ["nano"]);
    assert_eq!(plan.simulation.autoremovable, ["libhttp-parser2.9"]);
    let libc = &plan.simulation.upgraded[names(&plan.simulation.upgraded)
        .iter()
        .position(|n| *n == "libc6")
        .expect("libc6 is upgraded")];
    assert_eq!(libc.from.as_deref(), Some("2.36-9+deb12u14"));
    assert_eq!(libc.to.as_deref(), Some("2.41-12+deb13u5"));
    assert_eq!(
        plan.sizes,
        Sizes {
            download: 49_400_000,
            growth: 11_700_000
        }
    );
    // Every archive apt named is fetched beside it; none is left to apt.
    assert_eq!(plan.archives.len(), 120);
    assert!(!plan.archives_left_to_apt);
    assert!(
        plan.archives
            .iter()
            .all(|a| a.uri.starts_with("http://deb.debian.example/debian/pool/"))
    );
    assert!(plan.refused_removals.is_empty());
    assert_eq!(plan.refusal(), None);
}

#[test]
fn the_simulation_and_print_uris_transcripts_plan_the_same_upgrade() {
    let simulated = Simulation::parse(SIMULATE);
    let printed = Simulation::parse(PRINT_URIS);
    assert_eq!(simulated, printed);
}

#[test]
fn the_summary_names_the_removals_the_kept_back_and_what_nothing_needs() {
    let summary = plan_of(PRINT_URIS, true, None).summary();
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(
        lines[0],
        "97 packages will be upgraded, 23 newly installed, 19 removed; 49.4 MB to download."
    );
    assert!(lines[1].starts_with("To be removed: exa libapt-pkg6.0 libdb5.3 "));
    assert_eq!(lines[2], "Kept back (not upgraded): nano");
    assert!(lines[3].ends_with(": libhttp-parser2.9"), "{}", lines[3]);
    assert_eq!(lines.len(), 4);
}

// ------------------------------------------------------------------ refused removals

#[test]
fn a_site_denylist_pattern_refuses_a_removal_the_real_upgrade_plans() {
    // The real upgrade removes libssl3 (libssl3t64 replaces it).
    let plan = plan_of(PRINT_URIS, true, Some("# keep TLS as it is\n\nlibssl*\n"));
    let refused = vec![RefusedRemoval {
        package: "libssl3".into(),
        because: RefusedBecause::Denylisted("libssl*".into()),
    }];
    assert_eq!(plan.refused_removals, refused);
    assert_eq!(plan.refusal(), Some(Refusal::Removals(refused)));
}

#[test]
fn removing_a_package_on_the_builtin_denylist_is_refused() {
    let output = with_line(
        PRINT_URIS,
        "The following packages will be REMOVED:",
        "   sudo (1.9.13p3-1+deb12u4)",
    );
    let plan = plan_of(&output, true, None);
    assert_eq!(
        plan.refused_removals,
        [RefusedRemoval {
            package: "sudo".into(),
            because: RefusedBecause::Denylisted("sudo".into()),
        }]
    );
}

#[test]
fn removing_an_essential_package_is_refused_even_when_apt_also_failed() {
    // bash and dpkg are Essential in the recorded status; dpkg is on the denylist too.
    let output = with_line(
        PRINT_URIS,
        "The following packages will be REMOVED:",
        "   bash (5.2.15-2+b13)\n   dpkg (1.21.23)",
    );
    let plan = plan_of(&output, false, None);
    let refused = vec![
        RefusedRemoval {
            package: "bash".into(),
            because: RefusedBecause::Essential,
        },
        RefusedRemoval {
            package: "dpkg".into(),
            because: RefusedBecause::Essential,
        },
    ];
    assert_eq!(plan.refusal(), Some(Refusal::Removals(refused)));
    assert!(plan.apt_failure.is_some());
}

#[test]
fn the_running_kernels_image_joins_the_denylist() {
    let list = removal_denylist(Some("foo-*\n  # comment\n"), Some("6.1.0-37-amd64\n"));
    assert_eq!(&list[..8], BUILTIN_REMOVAL_DENYLIST.map(String::from));
    assert_eq!(&list[8..], ["foo-*", "linux-image-6.1.0-37-amd64"]);
    assert_eq!(removal_denylist(None, None).len(), 8);
}

// --------------------------------------------------------------------- held packages

#[test]
fn the_held_package_is_reported_and_kept_back() {
    let held: Vec<String> = HELD.lines().map(str::to_owned).collect();
    assert_eq!(held_packages(&status()), held);
    assert_eq!(
        plan_of(PRINT_URIS, true, None).held,
        [Held {
            package: "nano".into(),
            kept_back: true,
            removed: false,
        }]
    );
}

#[test]
fn a_held_package_apt_removes_anyway_is_reported_as_removed() {
    let output = with_line(
        PRINT_URIS,
        "The following packages will be REMOVED:",
        "   nano (7.2-1+deb12u1)",
    )
    .replace(
        "The following packages have been kept back:\n   nano (7.2-1+deb12u1 => 8.4-1+deb13u1)\n",
        "",
    );
    let plan = plan_of(&output, true, None);
    assert_eq!(
        plan.held,
        [Held {
            package: "nano".into(),
            kept_back: false,
            removed: true,
        }]
    );
}

// ----------------------------------------------------------------- obsolete packages

#[test]
fn obsoletes_leave_except_the_database_client_and_what_it_needs() {
    let decision = decision(&removal_denylist(None, None), Some(CONFIG_DUMP));
    // Debian 13 has none of these; nothing staying needs them.
    for gone in [
        "exa",
        "libapt-pkg6.0",
        "libdb5.3",
        "libgnutls30",
        "perl-modules-5.36",
    ] {
        assert!(decision.remove.iter().any(|r| r == gone), "{gone}");
    }
    assert_eq!(decision.remove.len(), 18);
    assert_eq!(
        decision.keep,
        [
            (
                "libreadline8".to_owned(),
                obsolete::Keep::NeededBy("postgresql-client-15".into())
            ),
            (
                "libssl3".to_owned(),
                obsolete::Keep::NeededBy("postgresql-client-15".into())
            ),
            (
                "postgresql-client-15".to_owned(),
                obsolete::Keep::DataServer(obsolete::DataServer::PostgreSql {
                    version: "15".into()
                })
            ),
        ]
    );
    let plan = plan_of(PRINT_URIS, true, None);
    assert_eq!(plan.obsolete_removed, decision.remove);
    assert_eq!(plan.obsolete_kept, decision.keep);
    assert!(plan.obsolete_declined.is_empty());
}

#[test]
fn the_recorded_run_removes_every_obsolete_package_passed_to_apt() {
    let decision = decision(&removal_denylist(None, None), Some(CONFIG_DUMP));
    let args = removal_args(&decision.remove, &status());
    assert_eq!(args.len(), decision.remove.len());
    assert!(args.iter().all(|a| a.ends_with('-')));
    let removed = Simulation::parse(PRINT_URIS).removed;
    for name in &decision.remove {
        assert!(names(&removed).contains(&name.as_str()), "{name}");
    }
    // Without them, apt removes only what the new release replaces; exa stays.
    let plain = Simulation::parse(PRINT_URIS_PLAIN);
    assert!(!names(&plain.removed).contains(&"exa"));
    for name in names(&plain.removed) {
        assert!(names(&removed).contains(&name), "{name}");
    }
    assert_eq!(plain.removed.len(), 7);
}

#[test]
fn obsolete_packages_the_user_keeps_are_reported_as_declined() {
    let denylist = removal_denylist(None, None);
    let decision = decision(&denylist, Some(CONFIG_DUMP));
    let plan = plan(&Facts {
        apt_ok: true,
        apt_output: PRINT_URIS_PLAIN,
        status: &status(),
        denylist: &denylist,
        obsolete: &decision,
        obsolete_removed: &[],
    });
    assert_eq!(plan.obsolete_declined, decision.remove);
    assert!(plan.obsolete_removed.is_empty());
}

#[test]
fn a_site_denylist_pattern_keeps_an_obsolete_package() {
    let decision = decision(&removal_denylist(Some("exa\n"), None), Some(CONFIG_DUMP));
    assert!(!decision.remove.iter().any(|r| r == "exa"));
    assert!(
        decision
            .keep
            .contains(&("exa".into(), obsolete::Keep::Denylisted("exa".into())))
    );
}

#[test]
fn an_apt_never_auto_remove_guard_keeps_an_obsolete_package() {
    let dump = format!("{CONFIG_DUMP}APT::NeverAutoRemove:: \"^libgnutls.*\";\n");
    let decision = decision(&removal_denylist(None, None), Some(&dump));
    assert!(decision.keep.contains(&(
        "libgnutls30".into(),
        obsolete::Keep::Guarded("^libgnutls.*".into())
    )));
}

#[test]
fn without_apts_configuration_no_obsolete_package_leaves() {
    assert_eq!(
        decision(&removal_denylist(None, None), None),
        Decision::default()
    );
}

#[test]
fn lists_that_offer_no_installed_package_are_missing_lists() {
    let system = system();
    let from = from_distribution();
    let candidates = obsolete_candidates(&system, &from);
    assert_eq!(candidates.len(), from.len());
    let policy = apt::policy(POLICY_TRIXIE);
    assert_eq!(lists_missing("trixie", &candidates, &policy), None);
    let mut without_lists = policy.clone();
    for entry in without_lists.values_mut() {
        entry.sources.clear();
    }
    let reason = lists_missing("trixie", &candidates, &without_lists).expect("refused");
    assert!(reason.starts_with("the package lists of trixie offer none of the 119 installed"));
}

// ---------------------------------------------------------------------------- space

#[test]
fn the_recorded_plan_needs_the_downloads_and_usr_but_not_boot() {
    assert_eq!(
        plan_of(PRINT_URIS, true, None).space_places(),
        [Place::Archives, Place::Usr]
    );
}

#[test]
fn downloads_and_usr_on_one_full_filesystem_are_refused() {
    let plan = plan_of(PRINT_URIS, true, None);
    // 49.4 MB + 11.7 MB, and 5%: 64,155,000 bytes.
    let measured = |available| {
        [
            (
                Place::Archives,
                filesystem(1, "/var/cache/apt/archives", available),
            ),
            (Place::Usr, filesystem(1, "/usr", available)),
        ]
    };
    assert_eq!(
        plan.check_space(&measured(64 * MB), 0),
        Err(Refusal::NoSpace {
            path: "/var/cache/apt/archives".into(),
            needed: 64_155_000,
            available: 64 * MB,
        })
    );
    let uses = plan
        .check_space(&measured(65 * MB), 0)
        .expect("room enough");
    assert_eq!(uses.len(), 1);
    assert_eq!(uses[0].what, ["the downloads", "the new release"]);
}

#[test]
fn each_filesystem_is_judged_on_what_it_holds() {
    let plan = plan_of(PRINT_URIS, true, None);
    let measured = [
        (Place::Archives, filesystem(1, "/var", 52 * MB)),
        (Place::Usr, filesystem(2, "/usr", 12_285_000)),
    ];
    let uses = plan.check_space(&measured, 0).expect("each has room");
    assert_eq!(uses[0].needed, 51_870_000);
    assert_eq!(uses[1].needed, 12_285_000);
    let short = [
        (Place::Archives, filesystem(1, "/var", 52 * MB)),
        (Place::Usr, filesystem(2, "/usr", 12_285_000 - 1)),
    ];
    assert!(matches!(
        plan.check_space(&short, 0),
        Err(Refusal::NoSpace { path, .. }) if path == Path::new("/usr")
    ));
}

#[test]
fn a_new_kernel_needs_room_in_boot() {
    let output = with_line(
        PRINT_URIS,
        "The following NEW packages will be installed:",
        "   linux-image-6.12.48+deb13-amd64 (6.12.48-1)",
    );
    let plan = plan_of(&output, true, None);
    assert_eq!(
        plan.space_places(),
        [Place::Archives, Place::Usr, Place::Boot]
    );
    let measured = [
        (Place::Archives, filesystem(1, "/", 100 * MB)),
        (Place::Usr, filesystem(1, "/", 100 * MB)),
        (Place::Boot, filesystem(2, "/boot", 90 * MB)),
    ];
    assert!(plan.check_space(&measured, 80 * MB).is_ok());
    assert_eq!(
        plan.check_space(&measured, 90 * MB),
        Err(Refusal::NoSpace {
            path: "/boot".into(),
            needed: 94_500_000,
            available: 90 * MB
        })
    );
}

// ------------------------------------------------------------------ hostile output

#[test]
fn a_failed_apt_run_is_refused_with_its_last_lines() {
    let output = "Reading package lists...\nBuilding dependency tree...\n\
                  E: Unable to correct problems, you have held broken packages.\n\
                  E: The following information from --solver 3.0 may provide additional context:\n"
        .repeat(5);
    let plan = plan_of(&output, false, None);
    let Some(Refusal::AptFailed(tail)) = plan.refusal() else {
        panic!("not refused as apt's failure: {:?}", plan.refusal());
    };
    assert_eq!(tail.lines().count(), 12);
    assert!(tail.ends_with("may provide additional context:"));
}

#[test]
fn a_hostile_transcript_plans_only_what_it_can_read_and_fetches_nothing_outside() {
    let hostile = "\
The following packages will be REMOVED:
   
   (
   ()
   :(:) (=> (
   \u{0}\u{fffd} (1 => )
The following NEW packages will be installed:
   a:b:c*** (
Need to get 99999999999999999999999 TB of archives.
After this operation, -5 kB disk space will be freed.
'http://deb.debian.example/debian/pool/x.deb' ../../etc/passwd.deb 10 SHA256:00
'file:/etc/shadow' shadow.deb 10 SHA256:0000000000000000000000000000000000000000000000000000000000000000
'http://deb.debian.example/a.deb' a.deb notanumber SHA256:00
'http://deb.debian.example/b.deb' .hidden.deb 1 SHA256:0000000000000000000000000000000000000000000000000000000000000000
'unterminated
";
    let plan = plan_of(hostile, true, None);
    // Whatever was read is names, never a refusal nobody can explain.
    assert!(plan.refused_removals.is_empty());
    assert!(plan.archives.is_empty());
    assert!(plan.archives_left_to_apt);
    assert_eq!(plan.sizes.download, u64::MAX);
    // The plan is still judged for space, and refused: it cannot fit anywhere.
    let measured = [(Place::Archives, filesystem(1, "/", u64::MAX - 1))];
    assert!(matches!(
        plan.check_space(&measured, 0),
        Err(Refusal::NoSpace { .. })
    ));
    assert_eq!(plan_of("", true, None).refusal(), None);
}

// ------------------------------------------------------------------ desktop mode

#[test]
fn desktop_mode_refuses_a_plan_that_removes_a_desktop_task() {
    let output = with_line(
        PRINT_URIS,
        "The following packages will be REMOVED:",
        "   task-gnome-desktop (3.73)",
    );
    let patterns = DESKTOP_METAPACKAGES.join("\n");
    let plan = plan_of(&output, true, Some(&patterns));
    assert_eq!(
        plan.refusal(),
        Some(Refusal::Removals(vec![RefusedRemoval {
            package: "task-gnome-desktop".into(),
            because: RefusedBecause::Denylisted("task-*-desktop".into()),
        }]))
    );
    // Without desktop mode the same plan goes ahead.
    assert_eq!(plan_of(&output, true, None).refusal(), None);
}

#[test]
fn the_desktop_metapackages_are_told_from_other_desktop_packages() {
    let mut text = String::new();
    for name in [
        "task-gnome-desktop",
        "task-desktop",
        "kubuntu-desktop",
        "ubuntu-desktop-minimal",
        "ubuntu-mate-desktop",
        "desktop-base",
        "task-english",
        "gnome-desktop3-data",
    ] {
        text.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n"
        ));
    }
    let status = Status::parse(&text).unwrap();
    assert_eq!(
        desktop_metapackages(&status),
        [
            "kubuntu-desktop",
            "task-desktop",
            "task-gnome-desktop",
            "ubuntu-desktop-minimal",
            "ubuntu-mate-desktop"
        ]
    );
}
