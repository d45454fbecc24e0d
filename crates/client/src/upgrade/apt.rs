//! Running apt for the upgrade: the target release's apt (from the helpers) or the
//! system's, on `/` or on a tree given with `--root`, and reading what it says.
//!
//! All configuration goes through an `APT_CONFIG` file written for the run. apt reads that
//! file before its configuration directory, so setting `Dir` there makes apt read the
//! *root's* `apt.conf.d` and skip the host's; the root's dpkg database and log are passed
//! to dpkg (`--root`, `--admindir`, `--log`), which also chroots maintainer scripts into
//! the root. The helper options point apt at the helper dpkg, methods and gpgv.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::error::Error;
use crate::helpers::env as helper_env;
use crate::layout;
use crate::root::SystemRoot;

/// Which apt to run, on which system.
#[derive(Clone, Debug)]
pub struct Apt {
    pub root: SystemRoot,
    /// The helper prefix; `None` runs the system's own apt.
    pub helpers: Option<PathBuf>,
    /// The `APT_CONFIG` file written for this run.
    pub config_file: PathBuf,
    /// Extra environment (e.g. `DEBIAN_FRONTEND`).
    pub env: Vec<(String, String)>,
}

impl Apt {
    /// apt for the system at `root`, configured through the file `config_name` in its
    /// state directory.
    pub fn new(root: &SystemRoot, helpers: Option<PathBuf>, config_name: &str) -> Self {
        Apt {
            root: root.clone(),
            helpers,
            config_file: root.state_dir().join(config_name),
            env: Vec::new(),
        }
    }

    /// The configuration this run of apt needs (pure).
    pub fn render_config(&self) -> String {
        let mut out = String::from("// Written by release-upgrader for one upgrade run.\n");
        let quote = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        if !self.root.is_host() {
            let root = self.root.dir().display().to_string();
            let root = root.trim_end_matches('/');
            out.push_str(&format!("Dir \"{}/\";\n", quote(root)));
            out.push_str(&format!(
                "Dir::State::status \"{}/var/lib/dpkg/status\";\n",
                quote(root)
            ));
            out.push_str("DPkg::Options {\n");
            for option in [
                format!("--root={root}"),
                format!("--admindir={root}/var/lib/dpkg"),
                format!("--log={root}/var/log/dpkg.log"),
            ] {
                out.push_str(&format!("  \"{}\";\n", quote(&option)));
            }
            out.push_str("};\n");
        }
        // apt warns about every configuration directory it cannot read ("Unable to read
        // …/preferences.d/"), and a root without apt installed (a minimal chroot, the
        // demo's) has none: with nothing to read there, apt is told to read nothing.
        for (key, dir) in absent_parts(|dir| self.root.path(dir).is_dir()) {
            out.push_str(&format!("{key} \"/dev/null\"; // no {dir} in the root\n"));
        }
        if let Some(prefix) = &self.helpers {
            for (key, value) in helper_env::apt_options(prefix) {
                out.push_str(&format!("{key} \"{}\";\n", quote(&value)));
            }
        }
        out
    }

    /// Writes the configuration file.
    pub fn write_config(&self) -> Result<(), Error> {
        let name = self.config_file.file_name().expect("a file name");
        self.root.create_dir(crate::root::STATE_DIR)?.write_atomic(
            &crate::confine::RelPath::new(name.to_string_lossy()).expect("our own names"),
            self.render_config().as_bytes(),
        )
    }

    /// A command for `program` (`apt-get`, `apt-cache`, `apt-mark`).
    pub fn command(&self, program: &str) -> Command {
        let path = match &self.helpers {
            Some(prefix) => prefix.join(layout::BIN).join(program),
            None => Path::new("/usr/bin").join(program),
        };
        let mut cmd = crate::upgrade::children::command(path);
        cmd.env("APT_CONFIG", &self.config_file)
            .env("LC_ALL", "C.UTF-8")
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("LD_PRELOAD");
        if let Some(prefix) = &self.helpers {
            let bin = prefix.join(layout::BIN);
            let path =
                std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
            cmd.env("PATH", format!("{}:{path}", bin.display()));
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// The configuration directories apt reads under the root (`Dir::Etc::Parts`,
/// `Dir::Etc::PreferencesParts`) that `is_dir` says the root lacks, with their keys.
fn absent_parts(is_dir: impl Fn(&str) -> bool) -> Vec<(&'static str, &'static str)> {
    [
        ("Dir::Etc::Parts", "/etc/apt/apt.conf.d"),
        ("Dir::Etc::PreferencesParts", "/etc/apt/preferences.d"),
    ]
    .into_iter()
    .filter(|(_, dir)| !is_dir(dir))
    .collect()
}

/// One action of a simulated apt run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedAction {
    pub package: String,
    pub architecture: Option<String>,
    /// The installed version, when there is one.
    pub from: Option<String>,
    /// The version to install (not for removals).
    pub to: Option<String>,
}

/// What an apt run would do, as apt lists it before it asks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Simulation {
    pub upgraded: Vec<PlannedAction>,
    pub installed: Vec<PlannedAction>,
    pub removed: Vec<PlannedAction>,
    /// Packages downgraded (a new version lower than the installed one).
    pub downgraded: Vec<PlannedAction>,
    /// Packages apt keeps at their version ("have been kept back").
    pub kept_back: Vec<String>,
    /// Packages nothing needs any more, which apt leaves installed ("automatically
    /// installed and are no longer required"): what `apt autoremove` would remove.
    pub autoremovable: Vec<String>,
}

/// Which list of apt's plan a line belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Upgraded,
    Installed,
    Removed,
    Downgraded,
    KeptBack,
    Autoremovable,
    Other,
}

impl Section {
    /// apt 2's "The following … will be …:" and apt 3's "Upgrading:" headers.
    fn of_header(line: &str) -> Section {
        let line = line.trim_end();
        if line.starts_with("The following packages will be REMOVED") || line == "REMOVING:" {
            Section::Removed
        } else if line.starts_with("The following NEW packages will be installed")
            || line == "Installing:"
            || line == "Installing dependencies:"
        {
            Section::Installed
        } else if line.starts_with("The following packages will be upgraded")
            || line == "Upgrading:"
        {
            Section::Upgraded
        } else if line.starts_with("The following packages will be DOWNGRADED")
            || line == "DOWNGRADING:"
        {
            Section::Downgraded
        } else if line.starts_with("The following packages have been kept back")
            || line.starts_with("Not upgrading")
        {
            Section::KeptBack
        } else if line.starts_with("The following package") && line.contains("no longer required") {
            Section::Autoremovable
        } else {
            Section::Other
        }
    }
}

impl Simulation {
    /// Parses the plan apt prints before its question (`apt-get --print-uris -y`,
    /// `--assume-no`), run with `LC_ALL=C.UTF-8`: apt 2's and apt 3's wording, names
    /// only or with `-V` versions (`name (old => new)`, `name (version)`).
    pub fn parse(output: &str) -> Self {
        let mut sim = Simulation::default();
        let mut section = Section::Other;
        for line in output.lines() {
            if !line.starts_with(' ') {
                section = Section::of_header(line);
                continue;
            }
            if section == Section::Other {
                continue;
            }
            for action in items(line) {
                match section {
                    Section::Upgraded => sim.upgraded.push(action),
                    Section::Installed => sim.installed.push(action),
                    Section::Removed => sim.removed.push(PlannedAction {
                        from: action.to,
                        to: None,
                        ..action
                    }),
                    Section::Downgraded => sim.downgraded.push(action),
                    Section::KeptBack => sim.kept_back.push(action.package),
                    Section::Autoremovable => sim.autoremovable.push(action.package),
                    Section::Other => {}
                }
            }
        }
        sim
    }
}

/// The packages of one indented line of a plan list.
fn items(line: &str) -> Vec<PlannedAction> {
    let line = line.trim();
    let action = |word: &str, from: Option<&str>, to: Option<&str>| {
        // "name*" marks a purge; "name:arch" a foreign architecture.
        let word = word.trim().trim_end_matches('*');
        let (package, architecture) = match word.split_once(':') {
            Some((name, arch)) => (name, Some(arch.to_owned())),
            None => (word, None),
        };
        PlannedAction {
            package: package.to_owned(),
            architecture,
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    };
    match line.split_once(" (") {
        // -V: one package per line with its versions.
        Some((name, versions)) => {
            let versions = versions.trim_end_matches(')');
            match versions.split_once(" => ") {
                Some((from, to)) => vec![action(name, Some(from), Some(to))],
                None => vec![action(name, None, Some(versions))],
            }
        }
        None => line
            .split_whitespace()
            .map(|word| action(word, None, None))
            .collect(),
    }
}

/// What `apt-cache policy` says of one package.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The installed version (`None` for "(none)").
    pub installed: Option<String>,
    /// The version apt would install (`None` for "(none)").
    pub candidate: Option<String>,
    /// The sources (URI, suite) that offer any version; the dpkg status file is not one.
    pub sources: Vec<(String, String)>,
}

/// Parses `apt-cache policy PKG…`, run with `LC_ALL=C.UTF-8`, by package name.
pub fn policy(text: &str) -> BTreeMap<String, Policy> {
    let mut out: BTreeMap<String, Policy> = BTreeMap::new();
    let mut current: Option<String> = None;
    let version = |v: &str| {
        let v = v.trim();
        (!v.is_empty() && v != "(none)").then(|| v.to_owned())
    };
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            let name = line.trim_end_matches(':').to_owned();
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some(name) = &current else { continue };
        let entry = out.entry(name.clone()).or_default();
        let trimmed = line.trim_start();
        if let Some(v) = trimmed.strip_prefix("Installed:") {
            entry.installed = version(v);
            continue;
        }
        if let Some(v) = trimmed.strip_prefix("Candidate:") {
            entry.candidate = version(v);
            continue;
        }
        // Version table lines: "500 http://mirror/debian trixie/main amd64 Packages".
        let mut words = line.split_whitespace();
        let (Some(priority), Some(uri), Some(dist)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if priority.parse::<i32>().is_err() || uri == "/var/lib/dpkg/status" {
            continue;
        }
        let suite = dist.split('/').next().unwrap_or(dist).to_owned();
        if !entry.sources.iter().any(|(u, s)| u == uri && *s == suite) {
            entry.sources.push((uri.to_owned(), suite));
        }
    }
    out
}

/// Parses `apt-cache policy PKG…` into, for each package, the sources (URI, suite) that
/// offer any version of it; the dpkg status file does not count as a source.
pub fn origins(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    policy(text)
        .into_iter()
        .map(|(name, p)| (name, p.sources))
        .collect()
}

/// The values of a list in `apt-config dump`'s output (`APT::NeverAutoRemove:: "^re$";`),
/// as apt holds them: the dump prints each value between quotes, unescaped.
pub fn config_list(dump: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}:: \"");
    dump.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| rest.strip_suffix("\";"))
        .map(str::to_owned)
        .collect()
}

/// What apt says about sizes before it asks (`--print-uris`, `--assume-no`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// "Need to get X of archives."
    pub download: u64,
    /// "After this operation, X of additional disk space will be used" (negative when
    /// space is freed).
    pub growth: i64,
}

impl Sizes {
    /// Reads apt 2's "Need to get …" / "After this operation, …" and apt 3's summary
    /// ("Download size: …", "Space needed: … / … available", "Freed space: …").
    pub fn parse(output: &str) -> Self {
        let mut sizes = Sizes::default();
        for line in output.lines() {
            let line = line.trim_start();
            if let Some(rest) = line
                .strip_prefix("Need to get ")
                .map(|r| r.split(" of archives").next().unwrap_or(""))
                .or_else(|| line.strip_prefix("Download size: "))
            {
                // "1,234 kB/36.0 MB" and "0 B / 36.0 MB": already downloaded / total.
                let amount = rest.rsplit('/').next().unwrap_or(rest);
                sizes.download = parse_size(amount).unwrap_or(0);
            } else if let Some(rest) = line.strip_prefix("After this operation, ") {
                // "52.3 MB of additional disk space will be used." / "1,024 kB disk space will be freed."
                let amount: String = rest
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                let bytes = parse_size(&amount).unwrap_or(0) as i64;
                sizes.growth = if rest.contains("freed") {
                    -bytes
                } else {
                    bytes
                };
            } else if let Some(rest) = line.strip_prefix("Space needed: ") {
                let amount = rest.split('/').next().unwrap_or(rest);
                sizes.growth = parse_size(amount).unwrap_or(0) as i64;
            } else if let Some(rest) = line.strip_prefix("Freed space: ") {
                sizes.growth = -(parse_size(rest).unwrap_or(0) as i64);
            }
        }
        sizes
    }
}

/// "36.0 MB", "1,234 kB", "512 B" → bytes (apt's units are powers of 1000).
fn parse_size(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    let number: f64 = words.next()?.replace(',', "").parse().ok()?;
    let unit = match words.next()? {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    Some((number * unit) as u64)
}

/// The lines of `apt-get update`'s messages that say an index was not fetched (apt goes
/// on without it, exiting 0 unless told `APT::Update::Error-Mode=any`).
pub fn update_failures(messages: &str) -> Vec<&str> {
    messages
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            (line.starts_with("W: ") || line.starts_with("E: "))
                && (line.contains("Failed to fetch")
                    || line.contains("failed to download")
                    || line.contains("Unable to fetch"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn configuration_directories_the_root_lacks_are_read_as_nothing() {
        assert_eq!(
            super::absent_parts(|d| d == "/etc/apt/apt.conf.d"),
            [("Dir::Etc::PreferencesParts", "/etc/apt/preferences.d")]
        );
        assert!(super::absent_parts(|_| true).is_empty());
        assert_eq!(super::absent_parts(|_| false).len(), 2);
    }

    use super::*;

    #[test]
    fn update_warnings_about_unfetched_indices_are_failures() {
        let messages = "\
W: Failed to fetch http://127.0.0.1:8080/archive/dists/beta/InRelease  500  Internal Server Error [IP: 127.0.0.1 8080]
W: Some index files failed to download. They have been ignored, or old ones used instead.
";
        assert_eq!(update_failures(messages).len(), 2);
        let fine = "W: http://x/dists/beta/InRelease: Key is stored in legacy trusted.gpg keyring\n\
                    N: Skipping acquire of configured file 'main/binary-i386/Packages'\n";
        assert!(update_failures(fine).is_empty());
        assert_eq!(
            update_failures("E: Failed to fetch http://x/y  404  Not Found\n").len(),
            1
        );
    }

    #[test]
    fn root_mode_points_apt_and_dpkg_at_the_root() {
        let apt = Apt::new(
            &SystemRoot::new("/srv/chroot"),
            Some(PathBuf::from("/srv/chroot/usr/lib/release-upgrader")),
            "apt.conf",
        );
        let conf = apt.render_config();
        assert!(conf.contains("Dir \"/srv/chroot/\";"), "{conf}");
        assert!(conf.contains("Dir::State::status \"/srv/chroot/var/lib/dpkg/status\";"));
        assert!(conf.contains("\"--root=/srv/chroot\";"));
        assert!(conf.contains("\"--admindir=/srv/chroot/var/lib/dpkg\";"));
        assert!(conf.contains("\"--log=/srv/chroot/var/log/dpkg.log\";"));
        assert!(conf.contains("Dir::Bin::dpkg \"/srv/chroot/usr/lib/release-upgrader/bin/dpkg\";"));
        let host = Apt::new(&SystemRoot::new("/"), None, "apt.conf");
        assert!(!host.render_config().contains("Dir \""));
        let cmd = apt.command("apt-get");
        assert_eq!(
            cmd.get_program(),
            "/srv/chroot/usr/lib/release-upgrader/bin/apt-get"
        );
        assert!(
            cmd.get_envs()
                .any(|(k, v)| k == "LD_LIBRARY_PATH" && v.is_none())
        );
    }

    #[test]
    fn apt2_plan_with_versions_is_read() {
        let out = "Reading package lists...\n\
            Calculating upgrade...\n\
            The following packages will be REMOVED:\n   libdb5.3 (5.3.28+dfsg2-1)\n   gone* (0.1)\n\
            The following NEW packages will be installed:\n   libdb5.3t64 (5.3.28+dfsg2-9)\n   libfoo:i386 (1.0)\n\
            The following packages will be upgraded:\n   libc6 (2.36-9+deb12u10 => 2.41-12)\n\
            The following packages will be DOWNGRADED:\n   older (2.0 => 1.0)\n\
            The following packages have been kept back:\n   held1 (1.0 => 2.0)\n\
            1 upgraded, 2 newly installed, 1 downgraded, 2 to remove and 1 not upgraded.\n\
            Need to get 36.4 MB of archives.\n";
        let sim = Simulation::parse(out);
        assert_eq!(sim.upgraded.len(), 1);
        assert_eq!(sim.upgraded[0].package, "libc6");
        assert_eq!(sim.upgraded[0].from.as_deref(), Some("2.36-9+deb12u10"));
        assert_eq!(sim.upgraded[0].to.as_deref(), Some("2.41-12"));
        assert_eq!(sim.installed[1].package, "libfoo");
        assert_eq!(sim.installed[1].architecture.as_deref(), Some("i386"));
        assert_eq!(sim.installed[1].to.as_deref(), Some("1.0"));
        assert_eq!(sim.kept_back, ["held1"]);
        assert_eq!(sim.downgraded[0].package, "older");
        let removed: Vec<_> = sim.removed.iter().map(|a| a.package.as_str()).collect();
        assert_eq!(removed, ["libdb5.3", "gone"]);
        assert_eq!(sim.removed[0].from.as_deref(), Some("5.3.28+dfsg2-1"));
        assert_eq!(sim.removed[0].to, None);
    }

    #[test]
    fn apt2_plan_without_versions_and_apt3_plan_are_read() {
        let apt2 = "The following packages will be REMOVED:\n  libdb5.3 libext2fs2\n\
            The following additional packages will be installed:\n  libbsd0\n\
            The following NEW packages will be installed:\n  libbsd0 libdb5.3t64\n\
            The following packages will be upgraded:\n  adduser base-passwd bash\n  dpkg\n\
            4 upgraded, 2 newly installed, 0 to remove and 0 not upgraded.\n\
            Do you want to continue? [Y/n] N\nAbort.\n";
        let apt3 = "Upgrading:\n  adduser  base-passwd  bash\n  dpkg\n\n\
            Installing:\n  libbsd0\n\n\
            Installing dependencies:\n  libdb5.3t64\n\n\
            REMOVING:\n  libdb5.3  libext2fs2\n\n\
            Suggested packages:\n  apt-doc\n\n\
            Summary:\n  Upgrading: 4, Installing: 2, Removing: 2, Not Upgrading: 0\n  Download size: 36.4 MB\n";
        for out in [apt2, apt3] {
            let sim = Simulation::parse(out);
            let names =
                |list: &[PlannedAction]| list.iter().map(|a| a.package.clone()).collect::<Vec<_>>();
            assert_eq!(
                names(&sim.upgraded),
                ["adduser", "base-passwd", "bash", "dpkg"],
                "{out}"
            );
            assert_eq!(names(&sim.installed), ["libbsd0", "libdb5.3t64"], "{out}");
            assert_eq!(names(&sim.removed), ["libdb5.3", "libext2fs2"], "{out}");
            assert!(sim.kept_back.is_empty() && sim.downgraded.is_empty());
        }
    }

    #[test]
    fn packages_nothing_needs_are_read_from_the_plan() {
        let apt2 = "The following packages were automatically installed and are no longer required:\n  \
                    libicu72 libllvm14\nUse 'apt autoremove' to remove them.\n\
                    The following packages will be upgraded:\n  bash\n";
        let sim = Simulation::parse(apt2);
        assert_eq!(sim.autoremovable, ["libicu72", "libllvm14"]);
        assert_eq!(sim.upgraded[0].package, "bash");
        let one = "The following package was automatically installed and is no longer required:\n  \
                   libldap-2.5-0 (2.5.13+dfsg-5)\nUse 'sudo apt autoremove' to remove it.\n";
        assert_eq!(Simulation::parse(one).autoremovable, ["libldap-2.5-0"]);
        assert!(Simulation::parse(one).removed.is_empty());
    }

    #[test]
    fn policy_reads_installed_and_candidate_versions() {
        let out = "postgresql-15:\n  Installed: 15.14-0+deb12u1\n  Candidate: 15.14-0+deb12u1\n  Version table:\n \
                   *** 15.14-0+deb12u1 100\n        100 /var/lib/dpkg/status\n\
                   postgresql:\n  Installed: 15+248+deb12u1\n  Candidate: 17+278\n  Version table:\n     17+278 500\n        \
                   500 http://m/debian trixie/main amd64 Packages\n\
                   ghost:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n";
        let map = policy(out);
        let pg15 = &map["postgresql-15"];
        assert_eq!(pg15.installed.as_deref(), Some("15.14-0+deb12u1"));
        assert_eq!(pg15.candidate, pg15.installed);
        assert!(pg15.sources.is_empty());
        assert_eq!(map["postgresql"].candidate.as_deref(), Some("17+278"));
        assert_eq!(map["postgresql"].sources.len(), 1);
        assert_eq!(map["ghost"], Policy::default());
    }

    #[test]
    fn never_auto_remove_is_read_from_apt_configs_dump() {
        let dump = "APT \"\";\nAPT::NeverAutoRemove \"\";\n\
                    APT::NeverAutoRemove:: \"^firmware-linux.*\";\n\
                    APT::NeverAutoRemove:: \"^postgresql.*-15\";\n\
                    APT::NeverAutoRemove:: \"a%22b\\\\.c\";\n\
                    APT::NeverAutoRemoveX:: \"no\";\n\
                    APT::VersionedKernelPackages:: \"linux-.*\";\n";
        assert_eq!(
            config_list(dump, "APT::NeverAutoRemove"),
            ["^firmware-linux.*", "^postgresql.*-15", "a%22b\\\\.c"]
        );
        assert!(config_list("", "APT::NeverAutoRemove").is_empty());
    }

    #[test]
    fn policy_lists_the_sources_of_each_package() {
        let out = "bash:\n  Installed: 5.2.15-2+b7\n  Candidate: 5.2.37-2\n  Version table:\n     5.2.37-2 500\n        500 http://m/debian trixie/main amd64 Packages\n \
                   *** 5.2.15-2+b7 100\n        100 /var/lib/dpkg/status\n\
                   localpkg:\n  Installed: 1.0\n  Candidate: 1.0\n  Version table:\n *** 1.0 100\n        100 /var/lib/dpkg/status\n";
        let map = origins(out);
        assert_eq!(
            map["bash"],
            [("http://m/debian".to_owned(), "trixie".to_owned())]
        );
        assert!(map["localpkg"].is_empty());
    }

    #[test]
    fn sizes_are_read_from_apts_summary() {
        let out = "0 upgraded, 3 newly installed, 0 to remove and 0 not upgraded.\n\
                   Need to get 1,234 kB/36.0 MB of archives.\n\
                   After this operation, 52.3 MB of additional disk space will be used.\nAbort.\n";
        assert_eq!(
            Sizes::parse(out),
            Sizes {
                download: 36_000_000,
                growth: 52_300_000
            }
        );
        let apt3 = "Summary:\n  Upgrading: 73, Installing: 7, Removing: 2, Not Upgrading: 0\n  \
                    Download size: 1,234 kB / 36.0 MB\n  Space needed: 52.3 MB / 40.0 GB available\n";
        assert_eq!(
            Sizes::parse(apt3),
            Sizes {
                download: 36_000_000,
                growth: 52_300_000
            }
        );
        assert_eq!(
            Sizes::parse("Summary:\n  Download size: 0 B\n  Freed space: 1,024 kB\n"),
            Sizes {
                download: 0,
                growth: -1_024_000
            }
        );
        let freed = "Need to get 512 B of archives.\nAfter this operation, 1,024 kB disk space will be freed.\n";
        assert_eq!(
            Sizes::parse(freed),
            Sizes {
                download: 512,
                growth: -1_024_000
            }
        );
    }
}
