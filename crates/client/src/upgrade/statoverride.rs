//! dpkg's ownership overrides (`var/lib/dpkg/statoverride`) against the users and groups
//! of the machine the upgrade runs on.
//!
//! Run with `--root`, dpkg resolves the owner and group names of the root's overrides
//! with *this machine's* user and group databases, not the root's: a name the machine
//! lacks stops dpkg at once ("unknown system group 'crontab' in statoverride file"),
//! and a name the machine numbers differently would give the root's files a wrong owner.
//! Issue #11, finding 9: a Debian 11 root upgraded from a host without group `crontab`.
//! The preflight refuses such a root before anything changes.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::root::SystemRoot;

/// One line of the overrides file: `user group mode path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub user: String,
    pub group: String,
    pub path: String,
}

/// Parses the overrides file; lines that are not four fields are left to dpkg.
pub fn parse(text: &str) -> Vec<Override> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [user, group, _mode, path] = fields.as_slice() else {
                return None;
            };
            Some(Override {
                user: (*user).to_owned(),
                group: (*group).to_owned(),
                path: (*path).to_owned(),
            })
        })
        .collect()
}

/// Whether a name is a user or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::User => "user",
            Kind::Group => "group",
        })
    }
}

/// A name of the overrides that dpkg, run from this machine, would get wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// This machine has no such user or group: dpkg stops at once.
    Missing {
        kind: Kind,
        name: String,
        path: String,
    },
    /// This machine numbers it differently from the root: the file would get the
    /// machine's number.
    Differs {
        kind: Kind,
        name: String,
        path: String,
        host: u32,
        root: u32,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing { kind, name, path } => {
                write!(
                    f,
                    "{kind} '{name}' (owner of {path}) does not exist on this machine"
                )
            }
            Problem::Differs {
                kind,
                name,
                path,
                host,
                root,
            } => write!(
                f,
                "{kind} '{name}' (owner of {path}) is {host} on this machine but {root} in the root"
            ),
        }
    }
}

/// The ids of the names in a root's `etc/passwd` or `etc/group` (`name:x:id:…`).
pub fn ids(text: &str) -> BTreeMap<String, u32> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            Some((name.to_owned(), id))
        })
        .collect()
}

/// What the overrides need that this machine (`host(kind, name)`: its id, if it has the
/// name) does not give as the root (`root_users`, `root_groups`) does. Numeric owners
/// (`#1000`) need no lookup.
pub fn problems(
    overrides: &[Override],
    host: &dyn Fn(Kind, &str) -> Option<u32>,
    root_users: &BTreeMap<String, u32>,
    root_groups: &BTreeMap<String, u32>,
) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    for o in overrides {
        for (kind, name, root) in [
            (Kind::User, &o.user, root_users),
            (Kind::Group, &o.group, root_groups),
        ] {
            if name.starts_with('#') {
                continue;
            }
            let seen = out.iter().any(|p| match p {
                Problem::Missing {
                    kind: k, name: n, ..
                }
                | Problem::Differs {
                    kind: k, name: n, ..
                } => *k == kind && n == name,
            });
            if seen {
                continue;
            }
            match (host(kind, name), root.get(name.as_str())) {
                (None, _) => out.push(Problem::Missing {
                    kind,
                    name: name.clone(),
                    path: o.path.clone(),
                }),
                (Some(host), Some(&root)) if host != root => out.push(Problem::Differs {
                    kind,
                    name: name.clone(),
                    path: o.path.clone(),
                    host,
                    root,
                }),
                _ => {}
            }
        }
    }
    out
}

/// This machine's id for a user or group name (`getpwnam`/`getgrnam`).
fn host_id(kind: Kind, name: &str) -> Option<u32> {
    match kind {
        Kind::User => nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw()),
        Kind::Group => nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw()),
    }
}

/// Refuses a root (not `/`) whose overrides dpkg cannot apply from this machine.
pub fn check(root: &SystemRoot) -> Result<(), Error> {
    if root.is_host() {
        return Ok(());
    }
    let path = root.path("/var/lib/dpkg/statoverride");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let read_ids = |file: &str| ids(&std::fs::read_to_string(root.path(file)).unwrap_or_default());
    let problems = problems(
        &parse(&text),
        &host_id,
        &read_ids("/etc/passwd"),
        &read_ids("/etc/group"),
    );
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(Problem::to_string).collect();
    Err(Error::Config {
        path,
        reason: format!(
            "dpkg, run with --root, looks these owners up among this machine's users and groups: {}. \
             Nothing was changed. Upgrade from inside the system instead (chroot {} release-upgrader upgrade), \
             where dpkg sees the system's own users and groups",
            list.join("; "),
            root.dir().display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERRIDES: &str = "root crontab 2755 /usr/bin/crontab\n\
        Debian-exim Debian-exim 750 /var/log/exim4\n\
        #0 #42 0755 /usr/bin/numeric\n\
        root crontab 2755 /usr/bin/crontab-again\n\
        garbage line\n";

    #[test]
    fn overrides_parse_and_malformed_lines_are_left_to_dpkg() {
        let parsed = parse(OVERRIDES);
        assert_eq!(parsed.len(), 4);
        assert_eq!(
            parsed[0],
            Override {
                user: "root".into(),
                group: "crontab".into(),
                path: "/usr/bin/crontab".into()
            }
        );
        assert_eq!(
            ids("root:x:0:0:root:/root:/bin/bash\ncrontab:x:101:\nbad\nnum:x:z:\n"),
            BTreeMap::from([("root".into(), 0), ("crontab".into(), 101)])
        );
    }

    #[test]
    fn names_missing_here_or_numbered_differently_are_problems() {
        let host = |kind: Kind, name: &str| match (kind, name) {
            (Kind::User, "root") => Some(0),
            (Kind::Group, "root") => Some(0),
            (Kind::User, "Debian-exim") => Some(104),
            (Kind::Group, "Debian-exim") => Some(120),
            _ => None,
        };
        let users = ids("root:x:0:0::/root:/bin/sh\nDebian-exim:x:104:109::/:/bin/false\n");
        let groups = ids("root:x:0:\ncrontab:x:101:\nDebian-exim:x:109:\n");
        let found = problems(&parse(OVERRIDES), &host, &users, &groups);
        assert_eq!(
            found,
            [
                Problem::Missing {
                    kind: Kind::Group,
                    name: "crontab".into(),
                    path: "/usr/bin/crontab".into()
                },
                Problem::Differs {
                    kind: Kind::Group,
                    name: "Debian-exim".into(),
                    path: "/var/log/exim4".into(),
                    host: 120,
                    root: 109
                },
            ]
        );
        assert_eq!(
            found[0].to_string(),
            "group 'crontab' (owner of /usr/bin/crontab) does not exist on this machine"
        );
        // The same machine as the root: nothing to refuse.
        let same = |kind: Kind, name: &str| {
            match kind {
                Kind::User => &users,
                Kind::Group => &groups,
            }
            .get(name)
            .copied()
        };
        assert_eq!(problems(&parse(OVERRIDES), &same, &users, &groups), []);
    }

    #[test]
    fn the_running_system_and_a_root_without_overrides_pass() {
        check(&SystemRoot::new("/")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::new(dir.path());
        check(&root).unwrap();
        std::fs::create_dir_all(root.path("/var/lib/dpkg")).unwrap();
        std::fs::write(
            root.path("/var/lib/dpkg/statoverride"),
            "root root 0755 /usr/bin/x\n",
        )
        .unwrap();
        check(&root).unwrap();
        std::fs::write(
            root.path("/var/lib/dpkg/statoverride"),
            "root ru-test-no-such-group 0755 /usr/bin/x\n",
        )
        .unwrap();
        let err = check(&root).unwrap_err().to_string();
        assert!(
            err.contains("group 'ru-test-no-such-group'") && err.contains("chroot"),
            "{err}"
        );
    }
}
