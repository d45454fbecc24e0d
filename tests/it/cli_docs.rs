//! What the package installs besides the binaries, generated from the clap definitions:
//! completion scripts (`completions SHELL`) and man pages (`manpages --out DIR`, which
//! debian/rules runs); and the login notice `check --motd` keeps.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{BIN, PUBLISH_BIN};

pub(crate) const FIXTURE: &str = "tests/fixtures/check";

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin).args(args).output().unwrap()
}

pub(crate) fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What bash offers after `words` (the last one being completed), from the script
/// `completions bash` prints: sourced into a bash of its own, its function called as
/// bash's programmable completion calls it.
fn bash_completes(bin: &str, name: &str, words: &[&str]) -> Vec<String> {
    let script = run(bin, &["completions", "bash"]);
    assert!(script.status.success(), "{}", text(&script));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("completion.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let line = words.join(" ");
    let driver = format!(
        r#"source "$1"
function=$(complete -p {name} | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE="{line}"
COMP_POINT=${{#COMP_LINE}}
"$function" {name} "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        words = words.join(" "),
        cword = words.len() - 1,
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &driver, "bash"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_the_subcommands_and_flags_of_both_binaries() {
    assert_eq!(
        bash_completes(BIN, "release-upgrader", &["release-upgrader", "up"]),
        ["upgrade"]
    );
    let flags = bash_completes(
        BIN,
        "release-upgrader",
        &["release-upgrader", "check", "--mo"],
    );
    assert_eq!(flags, ["--motd"]);
    assert_eq!(
        bash_completes(
            PUBLISH_BIN,
            "release-upgrader-publish",
            &["release-upgrader-publish", "meta"]
        ),
        ["meta-release"]
    );
    let all = bash_completes(BIN, "release-upgrader", &["release-upgrader", ""]);
    for command in ["check", "upgrade", "completions", "manpages"] {
        assert!(all.iter().any(|w| w == command), "{command}: {all:?}");
    }
    // The value of a subcommand's argument: the shells.
    let shells = bash_completes(
        BIN,
        "release-upgrader",
        &["release-upgrader", "completions", "f"],
    );
    assert_eq!(shells, ["fish"]);
}

#[test]
fn zsh_and_fish_scripts_are_for_the_binary_and_an_unknown_shell_is_a_usage_error() {
    let zsh = run(BIN, &["completions", "zsh"]);
    assert!(
        String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef release-upgrader\n"),
        "{}",
        text(&zsh)
    );
    let fish = run(BIN, &["completions", "fish"]);
    let fish = String::from_utf8_lossy(&fish.stdout);
    assert!(
        fish.contains("complete -c release-upgrader ") && fish.contains("-a \"upgrade\""),
        "{fish}"
    );
    let bad = run(BIN, &["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("possible values"), "{}", text(&bad));
}

#[test]
fn a_reader_that_stops_early_ends_the_completions_quietly() {
    let mut child = Command::new(BIN)
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // stdout is closed here: the rest of the script meets a broken pipe.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

/// Renders a man page with man-db's `man`, returning its text and groff's warnings.
fn render(page: &Path) -> (String, String) {
    let out = Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-P", "cat", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("man runs (scripts/setup installs man-db)");
    assert!(out.status.success(), "{}", text(&out));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn man_pages_cover_every_visible_command_render_cleanly_and_say_what_help_says() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(BIN, &["manpages", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "release-upgrader.1",
        "release-upgrader-check.1",
        "release-upgrader-upgrade.1",
        "release-upgrader-completions.1",
        "release-upgrader-cdrom-detect.1",
        "release-upgrader-image-apply.1",
        "release-upgrader-manpages.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} missing: {pages:?}");
    }
    assert!(text(&out).contains(&format!("{} man pages written", pages.len())));
    for page in &pages {
        let (_, warnings) = render(&dir.path().join(page));
        assert!(warnings.is_empty(), "{page}: {warnings}");
    }
    // The page says what --help says: the first line of `upgrade --help`, and a flag.
    let help = run(BIN, &["upgrade", "--help"]);
    let first = String::from_utf8_lossy(&help.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let (page, _) = render(&dir.path().join("release-upgrader-upgrade.1"));
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat(&page).contains(&flat(&first)),
        "{first:?} not in the page:\n{page}"
    );
    assert!(page.contains("--dry-run"), "{page}");

    let publish = tempfile::tempdir().unwrap();
    let out = run(
        PUBLISH_BIN,
        &["manpages", "--out", publish.path().to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        publish
            .path()
            .join("release-upgrader-publish-pocket-build.1")
            .exists()
    );
}

/// A copy of the fixture's bookworm root, with `codename` as its release.
pub(crate) fn fixture_root(dir: &Path, codename: &str) -> std::path::PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let os_release = std::fs::read_to_string(Path::new(FIXTURE).join("root/etc/os-release"))
        .unwrap()
        .replace(
            "VERSION_CODENAME=bookworm",
            &format!("VERSION_CODENAME={codename}"),
        );
    std::fs::write(root.join("etc/os-release"), os_release).unwrap();
    root
}

pub(crate) fn check_motd(root: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["--root", root.to_str().unwrap()])
        .args(["--keyring", &format!("{FIXTURE}/keyring.gpg")])
        .args(["--meta-release-uri", &format!("{FIXTURE}/meta-release")])
        .args(["--arch", "amd64", "check", "--motd"])
        .output()
        .unwrap()
}

pub(crate) const NOTICE: &str = "var/lib/release-upgrader/release-upgrade-available";

#[test]
fn check_motd_writes_the_login_notice_and_removes_it_when_no_release_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let root = fixture_root(dir.path(), "bookworm");
    let out = check_motd(&root);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(root.join(NOTICE)).unwrap(),
        format!(
            "New release '13' (trixie) available.\nRun 'release-upgrader --root {} upgrade' \
             to upgrade to it.\n",
            root.display()
        )
    );
    // Without --motd, check leaves the notice alone.
    let plain = Command::new(BIN)
        .args(["--root", root.to_str().unwrap(), "--keyring"])
        .arg(format!("{FIXTURE}/keyring.gpg"))
        .args(["--meta-release-uri", "/nonexistent/meta-release", "check"])
        .output()
        .unwrap();
    assert_ne!(plain.status.code(), Some(0));
    assert!(
        root.join(NOTICE).exists(),
        "a failed check keeps the notice"
    );

    // The same root, now on trixie: nothing newer, and the notice goes.
    let trixie = fixture_root(dir.path(), "trixie");
    let out = check_motd(&trixie);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!trixie.join(NOTICE).exists(), "{}", text(&out));
}

#[test]
fn check_motd_refuses_a_state_directory_that_is_a_symlink_out_of_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = fixture_root(dir.path(), "bookworm");
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("var/lib/release-upgrader")).unwrap();
    let out = check_motd(&root);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("login notice"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}
