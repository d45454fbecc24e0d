//! Which packages of the old release leave with the upgrade, and which stay: the data
//! rule of docs/protocol.md §4 (issue 11, finding 1).
//!
//! An upgrade that removed `postgresql-15` because Debian 13 no longer ships it, and then
//! purged it, dropped the user's database cluster. Stock `apt full-upgrade` keeps such a
//! package: nothing in the new release replaces it, and postgresql-common guards it with
//! `APT::NeverAutoRemove`. So the upgrade removes a package as obsolete (the old release
//! had it, the new one offers no version of it) only when:
//! - it is not essential or protected, not in the removal denylist, and no
//!   `APT::NeverAutoRemove` pattern (as apt reads them, `apt-config dump`) matches it;
//! - it is not a version-named database server (`postgresql-N` and its modules,
//!   `mariadb-server-X`, `mysql-server-X`, …), whose data the new release's server does not
//!   use until the user moves it (`pg_upgradecluster`);
//! - nothing that stays at its installed version (a kept package, a package no source
//!   offers, a held one) depends on it with no other installed way to satisfy that
//!   dependency. The new release's versions do not count: the archive is consistent, so
//!   they never need a package it lacks.
//!
//! Nothing here purges. What the removed packages leave behind (configuration files) is
//! listed afterwards with the command to purge the packages that hold no data; the user
//! runs it, or not. The inputs are recorded text (dpkg's status file, `apt-cache policy`,
//! `apt-config dump`) and, for the listing, a small file seam; everything else is pure.

use std::collections::{BTreeMap, BTreeSet};

use crate::upgrade::apt::Policy;

/// A configuration file dpkg knows for a package, with the MD5 it was shipped with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conffile {
    pub path: String,
    pub md5: String,
}

/// An installed (or removed, configuration kept) package, as dpkg's status file has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The first word of `Status:` (`install`, `hold`, `deinstall`, `purge`).
    pub want: String,
    /// The last word of `Status:` (`installed`, `config-files`, …).
    pub status: String,
    /// `Essential: yes` or `Protected: yes`.
    pub essential: bool,
    /// `Pre-Depends` and `Depends`: each clause the names of its alternatives (versions and
    /// architecture qualifiers dropped).
    pub depends: Vec<Vec<String>>,
    pub provides: Vec<String>,
    pub conffiles: Vec<Conffile>,
}

impl Package {
    /// On the system (installed, or half-way in or out), not just its configuration.
    pub fn is_present(&self) -> bool {
        self.status != "not-installed" && self.status != "config-files"
    }
}

/// dpkg's view of the system, by package name (the instances of a `Multi-Arch: same`
/// package are merged: their dependencies add up).
#[derive(Clone, Debug, Default)]
pub struct System {
    pub packages: BTreeMap<String, Package>,
}

impl System {
    /// Parses the text of `var/lib/dpkg/status`.
    pub fn parse(status: &str) -> Result<Self, String> {
        let mut packages: BTreeMap<String, Package> = BTreeMap::new();
        for paragraph in deb822_fast::Deb822::iter_paragraphs_from_reader(status.as_bytes()) {
            let paragraph = paragraph.map_err(|e| format!("unreadable: {e}"))?;
            let get = |k: &str| paragraph.get(k).map(str::trim).unwrap_or("");
            let name = get("Package");
            if name.is_empty() {
                continue;
            }
            let words: Vec<&str> = get("Status").split_whitespace().collect();
            let [want, _flag, state] = words.as_slice() else {
                return Err(format!("package {name} has a malformed Status line"));
            };
            let mut depends = relation_names(get("Pre-Depends"));
            depends.extend(relation_names(get("Depends")));
            let provides = relation_names(get("Provides"))
                .into_iter()
                .flatten()
                .collect();
            let conffiles = get("Conffiles")
                .lines()
                .filter_map(|line| {
                    let mut words = line.split_whitespace();
                    Some(Conffile {
                        path: words.next()?.to_owned(),
                        md5: words.next()?.to_owned(),
                    })
                })
                .collect();
            let package = Package {
                name: name.to_owned(),
                version: get("Version").to_owned(),
                want: (*want).to_owned(),
                status: (*state).to_owned(),
                essential: get("Essential") == "yes" || get("Protected") == "yes",
                depends,
                provides,
                conffiles,
            };
            match packages.get_mut(name) {
                // Another architecture of the same package.
                Some(known) if known.is_present() || !package.is_present() => {
                    known.depends.extend(package.depends);
                    known.provides.extend(package.provides);
                    known.essential |= package.essential;
                }
                _ => {
                    packages.insert(name.to_owned(), package);
                }
            }
        }
        Ok(System { packages })
    }

    fn present(&self) -> impl Iterator<Item = &Package> {
        self.packages.values().filter(|p| p.is_present())
    }

    /// For each name (package or virtual), the present packages that satisfy it.
    fn providers(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for package in self.present() {
            map.entry(&package.name).or_default().push(&package.name);
            for virtual_name in &package.provides {
                let list = map.entry(virtual_name).or_default();
                if !list.contains(&package.name.as_str()) {
                    list.push(&package.name);
                }
            }
        }
        map
    }
}

/// `a (>= 1) | b:any, c [amd64]` → `[[a, b], [c]]`.
fn relation_names(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|clause| {
            clause
                .split('|')
                .filter_map(|alternative| {
                    let name = alternative
                        .trim()
                        .split(|c: char| c.is_whitespace() || c == '(' || c == '[' || c == '<')
                        .next()?;
                    let name = name.split(':').next().unwrap_or(name);
                    (!name.is_empty()).then(|| name.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .filter(|clause| !clause.is_empty())
        .collect()
}

/// A version-named database server package: the new release's server does not use its
/// data until the user moves it, so removing it orphans the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataServer {
    /// `postgresql-N` and the packages of that version (`postgresql-N-postgis-3`,
    /// `postgresql-plpython3-N`, `postgresql-client-N`): the clusters of version N need them.
    PostgreSql { version: String },
    /// `mariadb-server-X`, `mysql-server-X`, their `-core-X`, `percona-server-server-X`:
    /// the databases in `/var/lib/mysql`.
    MySql,
}

/// Whether `name` is a version-named database server package, and which.
pub fn data_server(name: &str) -> Option<DataServer> {
    let is_version = |word: &str| {
        word.starts_with(|c: char| c.is_ascii_digit())
            && word.chars().all(|c| c.is_ascii_digit() || c == '.')
    };
    if let Some(rest) = name.strip_prefix("postgresql-") {
        // The version is one of the dash-separated words: postgresql-15,
        // postgresql-15-postgis-3, postgresql-plperl-15 (postgresql-common guards
        // "^postgresql.*-15" for the same reason).
        let version = rest.split('-').find(|w| is_version(w))?;
        return Some(DataServer::PostgreSql {
            version: version.to_owned(),
        });
    }
    for prefix in [
        "mariadb-server-core-",
        "mariadb-server-",
        "mysql-server-core-",
        "mysql-server-",
        "percona-server-server-",
    ] {
        if let Some(rest) = name.strip_prefix(prefix)
            && is_version(rest)
        {
            return Some(DataServer::MySql);
        }
    }
    None
}

/// The packages of release-upgrader itself: they never leave as obsolete during the
/// upgrade they run (the running tool, its desktop app). A distribution release that does
/// not carry them would otherwise remove the upgrader in the middle of its own run.
pub const UPGRADER_PACKAGES: [&str; 2] = ["release-upgrader", "release-upgrader-gtk"];

/// Why an obsolete package stays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keep {
    /// `Essential: yes` or `Protected: yes`.
    Essential,
    /// A package of release-upgrader itself ([`UPGRADER_PACKAGES`]).
    Upgrader,
    /// A version-named database server (or a package of that version).
    DataServer(DataServer),
    /// A pattern of the removal denylist matches it.
    Denylisted(String),
    /// An `APT::NeverAutoRemove` pattern matches it (e.g. postgresql-common's guard).
    Guarded(String),
    /// This package, which stays, depends on it.
    NeededBy(String),
    /// An `APT::NeverAutoRemove` pattern could not be read: what it guards is unknown, so
    /// nothing leaves as obsolete.
    UnreadableGuard(String),
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keep::Essential => write!(f, "essential"),
            Keep::Upgrader => write!(f, "the upgrader itself; remove it afterwards if unwanted"),
            Keep::DataServer(DataServer::PostgreSql { version }) => {
                write!(f, "PostgreSQL {version}, whose clusters hold data")
            }
            Keep::DataServer(DataServer::MySql) => write!(f, "database server holding data"),
            Keep::Denylisted(pattern) => write!(f, "removal denylist: {pattern}"),
            Keep::Guarded(pattern) => write!(f, "APT::NeverAutoRemove {pattern}"),
            Keep::NeededBy(name) => write!(f, "needed by {name}"),
            Keep::UnreadableGuard(pattern) => {
                write!(f, "APT::NeverAutoRemove {pattern} cannot be read")
            }
        }
    }
}

/// What the decision reads.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub system: &'a System,
    /// Installed packages that a distribution source offered before the upgrade: the only
    /// ones that can be obsolete.
    pub from_distribution: &'a [String],
    /// `apt-cache policy` of those packages, with the new release's indices.
    pub policy: &'a BTreeMap<String, Policy>,
    /// `APT::NeverAutoRemove`, as `apt-config dump` of the target apt prints it.
    pub never_auto_remove: &'a [String],
    /// Patterns (`*` wildcards) of packages never to remove.
    pub denylist: &'a [String],
}

/// The obsolete packages: those that leave with the upgrade, and those that stay and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub remove: Vec<String>,
    pub keep: Vec<(String, Keep)>,
}

impl Decision {
    /// What the user is told after the upgrade about the kept database servers:
    /// `clusters` holds, by PostgreSQL version, the names of the clusters found
    /// (`/etc/postgresql/<version>/<name>`).
    pub fn follow_ups(&self, clusters: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        let mut out = Vec::new();
        let mut versions = BTreeSet::new();
        for (name, _) in &self.keep {
            match data_server(name) {
                Some(DataServer::PostgreSql { version })
                    if *name == format!("postgresql-{version}") =>
                {
                    versions.insert(version);
                }
                Some(DataServer::MySql)
                    if name.contains("-server-") && !name.contains("-core-") =>
                {
                    out.push(format!(
                        "{name} stays: the new release has no such package, and its databases in \
                         /var/lib/mysql are kept. Install the new release's server \
                         (mariadb-server or default-mysql-server) to upgrade them."
                    ));
                }
                _ => {}
            }
        }
        for version in versions {
            match clusters.get(&version).filter(|list| !list.is_empty()) {
                Some(list) => {
                    let commands: Vec<String> = list
                        .iter()
                        .map(|cluster| format!("pg_upgradecluster {version} {cluster}"))
                        .collect();
                    out.push(format!(
                        "PostgreSQL {version} stays (postgresql-{version}) with its clusters ({}): \
                         the new release's PostgreSQL does not use them yet. Move them when the \
                         new release runs: {} (if the new PostgreSQL made an empty cluster of the \
                         same name, drop it first with pg_dropcluster --stop). Once they are \
                         checked, pg_dropcluster {version} <name> and remove postgresql-{version}.",
                        list.iter()
                            .map(|c| format!("{version}/{c}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        commands.join("; ")
                    ));
                }
                None => out.push(format!(
                    "postgresql-{version} stays; no cluster of PostgreSQL {version} was found, so \
                     it can be removed once you have checked."
                )),
            }
        }
        out
    }
}

/// Decides which packages of the old release leave with the upgrade (see the module doc).
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let Inputs {
        system,
        from_distribution,
        policy,
        never_auto_remove,
        denylist,
    } = *inputs;
    let from_distribution: BTreeSet<&str> = from_distribution.iter().map(String::as_str).collect();
    let obsolete: Vec<&Package> = system
        .present()
        .filter(|p| p.status == "installed" && from_distribution.contains(p.name.as_str()))
        .filter(|p| policy.get(&p.name).is_none_or(|o| o.sources.is_empty()))
        .collect();
    let mut decision = Decision::default();
    // apt reads each pattern as a case-insensitive POSIX extended regular expression and
    // searches the package name for it; the regex crate's syntax covers what these files use.
    let mut guards = Vec::new();
    for pattern in never_auto_remove {
        match regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .build()
        {
            Ok(regex) => guards.push((pattern, regex)),
            Err(_) => {
                decision.keep = obsolete
                    .iter()
                    .map(|p| (p.name.clone(), Keep::UnreadableGuard(pattern.clone())))
                    .collect();
                return decision;
            }
        }
    }
    let mut remove: BTreeSet<&str> = BTreeSet::new();
    for package in &obsolete {
        let name = package.name.as_str();
        let keep = if package.essential {
            Some(Keep::Essential)
        } else if UPGRADER_PACKAGES.contains(&name) {
            Some(Keep::Upgrader)
        } else if let Some(server) = data_server(name) {
            Some(Keep::DataServer(server))
        } else if let Some(pattern) = denylist.iter().find(|d| glob_match(d, name)) {
            Some(Keep::Denylisted(pattern.clone()))
        } else {
            guards
                .iter()
                .find(|(_, regex)| regex.is_match(name))
                .map(|(pattern, _)| Keep::Guarded((*pattern).clone()))
        };
        match keep {
            Some(why) => decision.keep.push((name.to_owned(), why)),
            None => {
                remove.insert(name);
            }
        }
    }
    // What stays at its installed version keeps what it depends on, to a fixed point: a
    // package kept for this reason stays at its version too.
    let providers = system.providers();
    let stays_as_installed = |p: &Package| {
        p.want == "hold"
            || !from_distribution.contains(p.name.as_str())
            || policy
                .get(&p.name)
                .is_none_or(|o| o.candidate.is_none() || o.candidate.as_deref() == Some(&p.version))
    };
    loop {
        let mut needed: Vec<(&str, &str)> = Vec::new();
        for package in system.present() {
            if remove.contains(package.name.as_str()) || !stays_as_installed(package) {
                continue;
            }
            for clause in &package.depends {
                let satisfying: Vec<&str> = clause
                    .iter()
                    .flat_map(|alternative| providers.get(alternative.as_str()))
                    .flatten()
                    .copied()
                    .collect();
                if satisfying.iter().any(|p| !remove.contains(p)) {
                    continue;
                }
                for p in satisfying {
                    if !needed.iter().any(|(n, _)| *n == p) {
                        needed.push((p, &package.name));
                    }
                }
            }
        }
        if needed.is_empty() {
            break;
        }
        for (name, by) in needed {
            remove.remove(name);
            decision
                .keep
                .push((name.to_owned(), Keep::NeededBy(by.to_owned())));
        }
    }
    decision.remove = remove.into_iter().map(str::to_owned).collect();
    decision.keep.sort_by(|a, b| a.0.cmp(&b.0));
    decision
}

/// `*` wildcards, as in the removal denylist.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(after) = name.strip_prefix(head) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            (0..=after.len()).any(|i| after.is_char_boundary(i) && glob_match(rest, &after[i..]))
        }
    }
}

// ------------------------------------------------------------------ after the upgrade

/// What the listing of removed packages asks of the root's files.
pub trait Files {
    /// Whether a file or directory exists at this absolute path of the system.
    fn exists(&self, path: &str) -> bool;
    /// The MD5 (lowercase hex) of the file at this path; `None` when it cannot be read.
    fn md5(&self, path: &str) -> Option<String>;
}

/// Packages the upgrade removed whose configuration files are still there (dpkg's
/// `config-files` state): those purging would cost nothing, and those that hold data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Nothing of the user's: their configuration files are as shipped.
    pub purgeable: Vec<String>,
    /// Each with what purging it would delete of the user's.
    pub holding_data: Vec<(String, Vec<String>)>,
}

/// Where a package's data would live, besides its configuration files.
fn data_places(name: &str) -> Vec<String> {
    let mut places = vec![format!("/var/lib/{name}")];
    match data_server(name) {
        Some(DataServer::PostgreSql { version }) => {
            places.push(format!("/var/lib/postgresql/{version}"));
            places.push(format!("/etc/postgresql/{version}"));
        }
        Some(DataServer::MySql) => places.push("/var/lib/mysql".into()),
        None => {}
    }
    places
}

/// Sorts the packages in `removed` that dpkg lists with their configuration files only
/// into those that hold nothing of the user's and those that do: a database server, data
/// under `/var/lib`, a configuration file edited since it was installed.
pub fn leftovers<'a>(
    system: &System,
    removed: impl IntoIterator<Item = &'a str>,
    files: &dyn Files,
) -> Leftovers {
    let mut out = Leftovers::default();
    let removed: BTreeSet<&str> = removed.into_iter().collect();
    for name in removed {
        let Some(package) = system.packages.get(name) else {
            continue;
        };
        if package.status != "config-files" {
            continue;
        }
        let mut data: Vec<String> = data_places(name)
            .into_iter()
            .filter(|p| files.exists(p))
            .collect();
        if data_server(name).is_some() && data.is_empty() {
            data.push("a database server's configuration".into());
        }
        for conffile in &package.conffiles {
            // "newconffile" and "obsolete" markers are not checksums: count them as edited.
            if let Some(md5) = files.md5(&conffile.path)
                && md5 != conffile.md5
            {
                data.push(format!("{} (edited)", conffile.path));
            }
        }
        if data.is_empty() {
            out.purgeable.push(name.to_owned());
        } else {
            out.holding_data.push((name.to_owned(), data));
        }
    }
    out
}

impl Leftovers {
    /// The listing for the user, or `None` when nothing is left. `dpkg` is the command as
    /// the user runs it on this system (e.g. with `--root`).
    pub fn message(&self, dpkg: &str) -> Option<String> {
        if self.purgeable.is_empty() && self.holding_data.is_empty() {
            return None;
        }
        let mut text = String::from(
            "The upgrade removed these packages but did not purge them (it never does); their \
             configuration files are still there.",
        );
        if !self.purgeable.is_empty() {
            text.push_str(&format!(
                "\nNothing of yours in them; to purge them: {dpkg} --purge {}",
                self.purgeable.join(" ")
            ));
        }
        for (name, data) in &self.holding_data {
            text.push_str(&format!(
                "\nKeep {name} unless you mean to delete: {}",
                data.join(", ")
            ));
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::apt;

    /// Recorded from a Debian 12 server (openssh-server, nginx, postgresql): the status
    /// stanzas that matter, descriptions left out.
    const BOOKWORM_SERVER: &str = "\
Package: postgresql
Status: install ok installed
Architecture: all
Version: 15+248+deb12u1
Depends: postgresql-15

Package: postgresql-15
Status: install ok installed
Architecture: amd64
Version: 15.18-0+deb12u1
Provides: postgresql-15-jit-llvm (= 14), postgresql-contrib-15
Depends: locales | locales-all, postgresql-client-15, postgresql-common (>= 241~), ssl-cert, tzdata, debconf (>= 0.5) | debconf-2.0, libc6 (>= 2.34), libgcc-s1 (>= 3.0), libgssapi-krb5-2 (>= 1.14+dfsg), libicu72 (>= 72.1~rc-1~), libldap-2.5-0 (>= 2.5.4), libllvm14, liblz4-1 (>= 0.0~r130), libpam0g (>= 0.99.7.1), libpq5 (>= 14~beta2), libselinux1 (>= 3.1~), libssl3 (>= 3.0.0), libstdc++6 (>= 5.2), libsystemd0, libuuid1 (>= 2.16), libxml2 (>= 2.7.4), libxslt1.1 (>= 1.1.25), libzstd1 (>= 1.5.2), zlib1g (>= 1:1.1.4)

Package: postgresql-client-15
Status: install ok installed
Multi-Arch: foreign
Architecture: amd64
Version: 15.18-0+deb12u1
Provides: postgresql-client
Depends: libpq5 (>= 15.18), postgresql-client-common (>= 182~), sensible-utils, libc6 (>= 2.34), liblz4-1 (>= 0.0~r127), libreadline8 (>= 6.0), libssl3 (>= 3.0.0), libzstd1 (>= 1.5.2), zlib1g (>= 1:1.1.4)

Package: postgresql-common
Status: install ok installed
Architecture: all
Version: 248+deb12u1
Depends: adduser, debconf (>= 0.5.00) | debconf-2.0, libjson-perl, lsb-base (>= 3.0-3), postgresql-client-common (= 248+deb12u1), ssl-cert (>= 1.0.11), ucf, perl:any
Pre-Depends: init-system-helpers (>= 1.54~)
Conffiles:
 /etc/init.d/postgresql 1b9da643d7a403248d70e1776fb98458
 /etc/logrotate.d/postgresql-common 101326ef5d138998692ece35109ef1a2

Package: libpq5
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 15.18-0+deb12u1
Depends: libc6 (>= 2.33), libgssapi-krb5-2 (>= 1.17), libldap-2.5-0 (>= 2.5.4), libssl3 (>= 3.0.0)

Package: libicu72
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 72.1-3+deb12u1
Depends: libc6 (>= 2.34), libgcc-s1 (>= 3.0), libstdc++6 (>= 12)

Package: libllvm14
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 1:14.0.6-12
Depends: libc6 (>= 2.36), libedit2 (>= 2.11-20080614-0), libffi8 (>= 3.4), libgcc-s1 (>= 3.3), libstdc++6 (>= 12), libtinfo6 (>= 6), libxml2 (>= 2.7.4), libz3-4 (>= 4.8.12), zlib1g (>= 1:1.2.0)

Package: libldap-2.5-0
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 2.5.13+dfsg-5
Depends: libc6 (>= 2.34), libgnutls30 (>= 3.7.5), libsasl2-2 (>= 2.1.28+dfsg)

Package: libgnutls30
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 3.7.9-2+deb12u5
Depends: libc6 (>= 2.34), libgmp10 (>= 2:6.2.1+dfsg1), libhogweed6 (>= 3.6), libnettle8 (>= 3.7~)

Package: libhogweed6
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 3.8.1-2
Depends: libc6 (>= 2.14), libgmp10 (>= 2:6.2.1+dfsg1), libnettle8

Package: libnettle8
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 3.8.1-2
Depends: libc6 (>= 2.17)

Package: libssl3
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 3.0.20-1~deb12u2
Depends: libc6 (>= 2.34)

Package: libreadline8
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 8.2-1.3
Depends: readline-common, libc6 (>= 2.33), libtinfo6 (>= 6)

Package: iproute2
Status: install ok installed
Multi-Arch: foreign
Architecture: amd64
Version: 6.1.0-3
Provides: arpd
Depends: debconf (>= 0.5) | debconf-2.0, libbpf1 (>= 1:0.6.0), libbsd0 (>= 0.0), libc6 (>= 2.34), libcap2 (>= 1:2.10), libdb5.3, libelf1 (>= 0.131), libmnl0 (>= 1.0.3-4~), libselinux1 (>= 3.1~), libtirpc3 (>= 1.0.2), libxtables12 (>= 1.6.0+snapshot20161117), libcap2-bin

Package: libatm1
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 1:2.5.1-4+b2
Depends: libc6 (>= 2.34)

Package: libdb5.3
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 5.3.28+dfsg2-1
Depends: libc6 (>= 2.34)

Package: libapt-pkg6.0
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Version: 2.6.1
Depends: libbz2-1.0, libc6 (>= 2.34), libgcrypt20 (>= 1.10.0), liblz4-1 (>= 0.0~r127), liblzma5 (>= 5.1.1alpha+20120614), libssl3 (>= 3.0.0), libstdc++6 (>= 11), libsystemd0 (>= 221), libudev1 (>= 183), libxxhash0 (>= 0.7.1), libzstd1 (>= 1.5.2), zlib1g (>= 1:1.2.2.3)
";

    /// `apt-cache policy` with Debian 13's indices (recorded with `--root`: the status
    /// file is the root's), for the packages above.
    fn trixie_policy(system: &System) -> String {
        let offered: BTreeMap<&str, &str> = [
            ("postgresql", "17+278+deb13u1"),
            ("postgresql-common", "278+deb13u1"),
            ("libpq5", "17.12-0+deb13u1"),
            ("iproute2", "6.15.0-1"),
        ]
        .into_iter()
        .collect();
        let mut text = String::new();
        for p in system.packages.values() {
            text.push_str(&format!("{}:\n  Installed: {}\n", p.name, p.version));
            match offered.get(p.name.as_str()) {
                Some(new) => text.push_str(&format!(
                    "  Candidate: {new}\n  Version table:\n     {new} 500\n        500 http://deb.debian.example/debian trixie/main amd64 Packages\n"
                )),
                None => text.push_str(&format!("  Candidate: {}\n  Version table:\n", p.version)),
            }
            text.push_str(&format!(
                " *** {} 100\n        100 /srv/root/var/lib/dpkg/status\n",
                p.version
            ));
        }
        text
    }

    /// `apt-config dump` of a Debian 12 server with PostgreSQL 15 (01autoremove and
    /// postgresql-common's 02autoremove-postgresql).
    const DUMP: &str = "APT \"\";\nAPT::Architecture \"amd64\";\nAPT::NeverAutoRemove \"\";\n\
        APT::NeverAutoRemove:: \"^firmware-linux.*\";\n\
        APT::NeverAutoRemove:: \"^linux-firmware$\";\n\
        APT::NeverAutoRemove:: \"^linux-image-[a-z0-9]*$\";\n\
        APT::NeverAutoRemove:: \"^linux-image-[a-z0-9]*-[a-z0-9]*$\";\n\
        APT::NeverAutoRemove:: \"^postgresql.*-15\";\n\
        APT::VersionedKernelPackages:: \"linux-.*\";\n";

    fn everything(system: &System) -> Vec<String> {
        system.packages.keys().cloned().collect()
    }

    fn names(list: &[(String, Keep)]) -> Vec<&str> {
        list.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn why<'a>(decision: &'a Decision, name: &str) -> &'a Keep {
        &decision
            .keep
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not kept: {decision:?}"))
            .1
    }

    #[test]
    fn postgresql_15_its_client_and_the_libraries_it_needs_stay() {
        let system = System::parse(BOOKWORM_SERVER).unwrap();
        let policy = apt::policy(&trixie_policy(&system));
        let guards = apt::config_list(DUMP, "APT::NeverAutoRemove");
        let from = everything(&system);
        let decision = decide(&Inputs {
            system: &system,
            from_distribution: &from,
            policy: &policy,
            never_auto_remove: &guards,
            denylist: &[],
        });
        assert_eq!(
            why(&decision, "postgresql-15"),
            &Keep::DataServer(DataServer::PostgreSql {
                version: "15".into()
            })
        );
        assert!(matches!(
            why(&decision, "postgresql-client-15"),
            Keep::DataServer(_) | Keep::Guarded(_) | Keep::NeededBy(_)
        ));
        for library in ["libicu72", "libllvm14", "libldap-2.5-0", "libssl3"] {
            assert_eq!(
                why(&decision, library),
                &Keep::NeededBy("postgresql-15".into()),
                "{library}"
            );
        }
        assert_eq!(
            why(&decision, "libreadline8"),
            &Keep::NeededBy("postgresql-client-15".into())
        );
        // Through libldap-2.5-0, which stays: its own libraries stay too.
        for library in ["libgnutls30", "libhogweed6", "libnettle8"] {
            assert!(
                matches!(why(&decision, library), Keep::NeededBy(_)),
                "{library}"
            );
        }
        // Needed only by old versions of packages the new release upgrades.
        assert_eq!(decision.remove, ["libapt-pkg6.0", "libatm1", "libdb5.3"]);
    }

    #[test]
    fn the_guard_of_postgresql_common_keeps_what_it_names_even_without_the_server_rule() {
        // postgresql-client-15 alone, with nothing depending on it: the guard keeps it.
        let status = "Package: postgresql-client-15\nStatus: install ok installed\n\
            Architecture: amd64\nVersion: 15.18-0+deb12u1\n\n\
            Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n";
        let system = System::parse(status).unwrap();
        let policy = apt::policy(&trixie_policy(&system));
        let from = everything(&system);
        let guards = apt::config_list(DUMP, "APT::NeverAutoRemove");
        let inputs = Inputs {
            system: &system,
            from_distribution: &from,
            policy: &policy,
            never_auto_remove: &guards,
            denylist: &[],
        };
        let decision = decide(&inputs);
        assert_eq!(decision.remove, ["libfoo1"]);
        assert!(matches!(
            why(&decision, "postgresql-client-15"),
            Keep::DataServer(_)
        ));
        // A guard as apt reads it: case-insensitive, searched anywhere in the name.
        let guards = vec!["FOO".to_owned()];
        let decision = decide(&Inputs {
            never_auto_remove: &guards,
            ..inputs
        });
        assert_eq!(why(&decision, "libfoo1"), &Keep::Guarded("FOO".into()));
    }

    #[test]
    fn an_unreadable_guard_keeps_every_obsolete_package() {
        let system = System::parse(BOOKWORM_SERVER).unwrap();
        let policy = apt::policy(&trixie_policy(&system));
        let from = everything(&system);
        let guards = vec!["^ok$".to_owned(), "^broken(".to_owned()];
        let decision = decide(&Inputs {
            system: &system,
            from_distribution: &from,
            policy: &policy,
            never_auto_remove: &guards,
            denylist: &[],
        });
        assert!(decision.remove.is_empty(), "{decision:?}");
        assert_eq!(
            why(&decision, "libatm1"),
            &Keep::UnreadableGuard("^broken(".into())
        );
    }

    #[test]
    fn the_denylist_keeps_a_package_and_with_it_what_it_needs() {
        // The failure: postgresql-* denylisted, yet its libraries were obsolete and
        // their removal dragged it along. Without the server rule (a package not named like
        // one), the denylist and the dependency closure must do it.
        let status = BOOKWORM_SERVER.replace("postgresql-15", "pgserver");
        let system = System::parse(&status).unwrap();
        let policy = apt::policy(&trixie_policy(&system));
        let from = everything(&system);
        let denylist = vec!["pgserv*".to_owned()];
        let decision = decide(&Inputs {
            system: &system,
            from_distribution: &from,
            policy: &policy,
            never_auto_remove: &[],
            denylist: &denylist,
        });
        assert_eq!(
            why(&decision, "pgserver"),
            &Keep::Denylisted("pgserv*".into())
        );
        assert_eq!(
            why(&decision, "libicu72"),
            &Keep::NeededBy("pgserver".into())
        );
        assert!(!decision.remove.iter().any(|p| p.starts_with("libicu")));
    }

    #[test]
    fn the_upgrader_is_never_removed_as_obsolete_by_its_own_upgrade() {
        // The server's libatm1 (obsolete in trixie) renamed.
        let decide_as = |name: &str| {
            let status = BOOKWORM_SERVER.replace("Package: libatm1", &format!("Package: {name}"));
            let system = System::parse(&status).unwrap();
            decide(&Inputs {
                system: &system,
                from_distribution: &everything(&system),
                policy: &apt::policy(&trixie_policy(&system)),
                never_auto_remove: &[],
                denylist: &[],
            })
        };
        let decision = decide_as("release-upgrader");
        assert_eq!(why(&decision, "release-upgrader"), &Keep::Upgrader);
        assert!(!decision.remove.iter().any(|p| p == "release-upgrader"));
        // The rule is the package's name, not a pattern: a lookalike still leaves.
        let decision = decide_as("release-upgrader-x");
        assert!(decision.remove.iter().any(|p| p == "release-upgrader-x"));
    }

    #[test]
    fn mariadb_server_10_stays_with_its_core_and_says_how_to_upgrade_the_data() {
        // Debian 11 → 12: mariadb-server-10.5 is gone from bookworm (mariadb-server is
        // 10.11 there). If the new server is not installed, removing it orphans the data.
        let status = "Package: mariadb-server-10.5\nStatus: install ok installed\n\
            Architecture: amd64\nVersion: 1:10.5.26-0+deb11u2\n\
            Depends: mariadb-server-core-10.5 (>= 1:10.5.26-0+deb11u2), libpcre2-8-0, galera-4 | galera-3\n\n\
            Package: mariadb-server-core-10.5\nStatus: install ok installed\nArchitecture: amd64\n\
            Version: 1:10.5.26-0+deb11u2\nDepends: libssl1.1 (>= 1.1.1)\n\n\
            Package: galera-4\nStatus: install ok installed\nArchitecture: amd64\nVersion: 26.4.11-0+deb11u1\n\n\
            Package: libssl1.1\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.1.1w-0+deb11u1\n\n\
            Package: libpcre2-8-0\nStatus: install ok installed\nArchitecture: amd64\nVersion: 10.36-2\n\n\
            Package: libwrap0\nStatus: install ok installed\nArchitecture: amd64\nVersion: 7.6.q-31\n";
        let system = System::parse(status).unwrap();
        let policy = apt::policy(
            "galera-4:\n  Installed: 26.4.11-0+deb11u1\n  Candidate: 26.4.20-0+deb12u1\n  Version table:\n     \
             26.4.20-0+deb12u1 500\n        500 http://m/debian bookworm/main amd64 Packages\n\
             libpcre2-8-0:\n  Installed: 10.36-2\n  Candidate: 10.42-1\n  Version table:\n     \
             10.42-1 500\n        500 http://m/debian bookworm/main amd64 Packages\n\
             mariadb-server-10.5:\n  Installed: 1:10.5.26-0+deb11u2\n  Candidate: 1:10.5.26-0+deb11u2\n\
             mariadb-server-core-10.5:\n  Installed: 1:10.5.26-0+deb11u2\n  Candidate: 1:10.5.26-0+deb11u2\n\
             libssl1.1:\n  Installed: 1.1.1w-0+deb11u1\n  Candidate: 1.1.1w-0+deb11u1\n\
             libwrap0:\n  Installed: 7.6.q-31\n  Candidate: 7.6.q-31\n",
        );
        let from = everything(&system);
        let decision = decide(&Inputs {
            system: &system,
            from_distribution: &from,
            policy: &policy,
            never_auto_remove: &[],
            denylist: &[],
        });
        assert_eq!(
            why(&decision, "mariadb-server-10.5"),
            &Keep::DataServer(DataServer::MySql)
        );
        assert_eq!(
            why(&decision, "mariadb-server-core-10.5"),
            &Keep::DataServer(DataServer::MySql)
        );
        assert_eq!(
            why(&decision, "libssl1.1"),
            &Keep::NeededBy("mariadb-server-core-10.5".into())
        );
        assert_eq!(decision.remove, ["libwrap0"]);
        let follow = decision.follow_ups(&BTreeMap::new());
        assert_eq!(follow.len(), 1, "{follow:?}");
        assert!(
            follow[0].starts_with("mariadb-server-10.5 stays"),
            "{follow:?}"
        );
        assert!(follow[0].contains("/var/lib/mysql"), "{follow:?}");
    }

    #[test]
    fn the_follow_up_names_pg_upgradecluster_for_each_cluster() {
        let decision = Decision {
            remove: vec![],
            keep: vec![
                (
                    "postgresql-15".into(),
                    Keep::DataServer(DataServer::PostgreSql {
                        version: "15".into(),
                    }),
                ),
                (
                    "postgresql-client-15".into(),
                    Keep::NeededBy("postgresql-15".into()),
                ),
                (
                    "postgresql-13".into(),
                    Keep::Guarded("^postgresql.*-13".into()),
                ),
            ],
        };
        let clusters: BTreeMap<String, Vec<String>> = [(
            "15".to_owned(),
            vec!["main".to_owned(), "reports".to_owned()],
        )]
        .into_iter()
        .collect();
        let follow = decision.follow_ups(&clusters);
        assert_eq!(follow.len(), 2, "{follow:?}");
        assert!(
            follow[0].contains("postgresql-13 stays; no cluster"),
            "{follow:?}"
        );
        assert!(follow[1].contains("pg_upgradecluster 15 main; pg_upgradecluster 15 reports"));
        assert!(follow[1].contains("15/main, 15/reports"), "{follow:?}");
    }

    #[test]
    fn version_named_servers_are_recognised() {
        let pg = |v: &str| {
            Some(DataServer::PostgreSql {
                version: v.to_owned(),
            })
        };
        assert_eq!(data_server("postgresql-15"), pg("15"));
        assert_eq!(data_server("postgresql-9.6"), pg("9.6"));
        assert_eq!(data_server("postgresql-15-postgis-3"), pg("15"));
        assert_eq!(data_server("postgresql-plpython3-15"), pg("15"));
        assert_eq!(data_server("postgresql-client-15"), pg("15"));
        assert_eq!(data_server("postgresql-common"), None);
        assert_eq!(data_server("postgresql"), None);
        assert_eq!(data_server("mariadb-server-10.11"), Some(DataServer::MySql));
        assert_eq!(
            data_server("mysql-server-core-8.0"),
            Some(DataServer::MySql)
        );
        assert_eq!(data_server("mariadb-server"), None);
        assert_eq!(data_server("mariadb-server-core"), None);
        assert_eq!(data_server("nginx"), None);
    }

    #[test]
    fn dependencies_read_alternatives_virtuals_and_qualifiers() {
        assert_eq!(
            relation_names("a (>= 1) | b:any, c [amd64], d:native (<< 2)"),
            vec![vec!["a", "b"], vec!["c"], vec!["d"]]
        );
        assert!(relation_names("").is_empty());
        // A clause another staying package satisfies keeps nothing.
        let status = "Package: local-tool\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\
            Depends: old-mta | mail-transport-agent, old-lib\n\n\
            Package: old-mta\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\
            Provides: mail-transport-agent\n\n\
            Package: exim4\nStatus: install ok installed\nArchitecture: amd64\nVersion: 4\n\
            Provides: mail-transport-agent\n\n\
            Package: old-lib\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n";
        let system = System::parse(status).unwrap();
        let policy = apt::policy(
            "exim4:\n  Installed: 4\n  Candidate: 5\n  Version table:\n     5 500\n        \
             500 http://m/debian trixie/main amd64 Packages\n",
        );
        // local-tool comes from no distribution source: it stays as installed.
        let from = vec![
            "old-mta".to_owned(),
            "old-lib".to_owned(),
            "exim4".to_owned(),
        ];
        let decision = decide(&Inputs {
            system: &system,
            from_distribution: &from,
            policy: &policy,
            never_auto_remove: &[],
            denylist: &[],
        });
        assert_eq!(decision.remove, ["old-mta"]);
        assert_eq!(names(&decision.keep), ["old-lib"]);
    }

    #[test]
    fn held_and_essential_packages_are_never_obsolete_removals() {
        let status = "Package: old-essential\nStatus: install ok installed\nEssential: yes\n\
            Architecture: amd64\nVersion: 1\n\n\
            Package: held\nStatus: hold ok installed\nArchitecture: amd64\nVersion: 1\n\
            Depends: old-lib\n\n\
            Package: old-lib\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\n\
            Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n";
        let system = System::parse(status).unwrap();
        let policy = apt::policy(
            "held:\n  Installed: 1\n  Candidate: 2\n  Version table:\n     2 500\n        \
             500 http://m/debian trixie/main amd64 Packages\n",
        );
        let from = everything(&system);
        let decision = decide(&Inputs {
            system: &system,
            from_distribution: &from,
            policy: &policy,
            never_auto_remove: &[],
            denylist: &[],
        });
        assert!(decision.remove.is_empty(), "{decision:?}");
        assert_eq!(why(&decision, "old-essential"), &Keep::Essential);
        assert_eq!(why(&decision, "old-lib"), &Keep::NeededBy("held".into()));
        assert_eq!(names(&decision.keep), ["old-essential", "old-lib"]);
    }

    struct FakeFiles(BTreeMap<&'static str, &'static str>);

    impl Files for FakeFiles {
        fn exists(&self, path: &str) -> bool {
            self.0.contains_key(path)
        }
        fn md5(&self, path: &str) -> Option<String> {
            self.0.get(path).map(|s| s.to_string())
        }
    }

    #[test]
    fn leftovers_holding_data_are_not_offered_for_purging() {
        let status = "Package: postgresql-15\nStatus: deinstall ok config-files\nArchitecture: amd64\n\
            Version: 15.18\n\n\
            Package: tool\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\
            Conffiles:\n /etc/tool.conf 0123456789abcdef0123456789abcdef\n\n\
            Package: edited\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\
            Conffiles:\n /etc/edited.conf 0123456789abcdef0123456789abcdef\n /etc/gone.conf 11111111111111111111111111111111\n\n\
            Package: cache\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n\
            Package: still-here\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\n\
            Package: mariadb-server-10.5\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n";
        let system = System::parse(status).unwrap();
        assert_eq!(system.packages["edited"].conffiles.len(), 2);
        let files = FakeFiles(
            [
                ("/var/lib/postgresql/15", "dir"),
                ("/etc/tool.conf", "0123456789abcdef0123456789abcdef"),
                ("/etc/edited.conf", "ffffffffffffffffffffffffffffffff"),
                ("/var/lib/cache", "dir"),
            ]
            .into_iter()
            .collect(),
        );
        let removed = [
            "postgresql-15",
            "tool",
            "edited",
            "cache",
            "still-here",
            "mariadb-server-10.5",
            "unknown",
        ];
        let listing = leftovers(&system, removed, &files);
        assert_eq!(listing.purgeable, ["tool"]);
        let holding: BTreeMap<&str, &Vec<String>> = listing
            .holding_data
            .iter()
            .map(|(n, d)| (n.as_str(), d))
            .collect();
        assert_eq!(
            holding["postgresql-15"],
            &vec!["/var/lib/postgresql/15".to_owned()]
        );
        assert_eq!(
            holding["edited"],
            &vec!["/etc/edited.conf (edited)".to_owned()]
        );
        assert_eq!(holding["cache"], &vec!["/var/lib/cache".to_owned()]);
        assert!(holding.contains_key("mariadb-server-10.5"));
        assert_eq!(holding.len(), 4);
        let text = listing.message("dpkg --root=/srv").unwrap();
        assert!(text.contains("dpkg --root=/srv --purge tool\n"), "{text}");
        assert!(!text.contains("--purge tool postgresql"), "{text}");
        assert!(text.contains("Keep postgresql-15 unless"), "{text}");
        assert_eq!(Leftovers::default().message("dpkg"), None);
    }

    #[test]
    fn a_malformed_status_file_is_refused_and_a_runaway_guard_keeps_everything() {
        assert!(System::parse("Package: x\nStatus: install\n").is_err());
        assert!(System::parse("Package: x\nStatus: install ok installed\n\n\u{0}garbage").is_err());
        let system = System::parse(BOOKWORM_SERVER).unwrap();
        let policy = apt::policy(&trixie_policy(&system));
        let from = everything(&system);
        // Far beyond the regex crate's size limit: refused, so nothing is removed.
        let guards = vec!["(a{1000}){1000}".to_owned()];
        let decision = decide(&Inputs {
            system: &system,
            from_distribution: &from,
            policy: &policy,
            never_auto_remove: &guards,
            denylist: &[],
        });
        assert!(decision.remove.is_empty(), "{decision:?}");
        assert!(matches!(
            why(&decision, "libatm1"),
            Keep::UnreadableGuard(_)
        ));
    }

    #[test]
    fn denylist_globs() {
        assert!(glob_match("linux-image-*", "linux-image-6.1.0-28-amd64"));
        assert!(glob_match("apt", "apt"));
        assert!(!glob_match("apt", "aptitude"));
        assert!(glob_match("*-dev", "libc6-dev"));
        assert!(glob_match("lib*6", "libc6"));
        assert!(!glob_match("lib*7", "libc6"));
    }
}
