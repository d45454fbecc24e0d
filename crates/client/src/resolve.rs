//! Which helper debs to install: the packages an upgrade asks for (`UpgradeToolPackages`)
//! and everything they depend on, all from the one pocket (docs/protocol.md §3).
//!
//! Pure: it sees only the verified `Packages` index. Every name on the way must be a
//! `release-upgrader-*` helper of the pocket; anything else is an error naming it, because
//! the helper prefix must never need a package of the running system.

use std::collections::BTreeMap;

use debian_control::lossy::{Relation, Relations};
use debian_control::relations::VersionConstraint;

use crate::error::Error;
use crate::layout::{CORE_PACKAGE, is_helper_name};
use crate::pocket::PackageEntry;
use crate::version::Version;

/// The packages an upgrade asks for: the meta-release's `UpgradeToolPackages`, and the
/// core helper (the target release's upgrader) whenever the pocket carries one for
/// `arch`, listed or not: whether it runs is the client's decision, by version
/// (docs/protocol.md §4), but it is verified and installed like every helper.
pub fn requested(
    upgrade_tool_packages: &[String],
    packages: &[PackageEntry],
    arch: &str,
) -> Vec<String> {
    let mut roots = upgrade_tool_packages.to_vec();
    let carried = packages
        .iter()
        .any(|p| p.name == CORE_PACKAGE && (p.architecture == arch || p.architecture == "all"));
    if carried && !roots.iter().any(|r| r == CORE_PACKAGE) {
        roots.push(CORE_PACKAGE.to_owned());
    }
    roots
}

/// Resolves `roots` and their `Depends`/`Pre-Depends` inside `packages`. Returns the
/// chosen packages sorted by name. `pocket` names the pocket in errors.
pub fn resolve<'a>(
    packages: &'a [PackageEntry],
    roots: &[String],
    arch: &str,
    pocket: &str,
) -> Result<Vec<&'a PackageEntry>, Error> {
    let mut resolver = Resolver {
        packages,
        arch,
        pocket,
        chosen: BTreeMap::new(),
    };
    let mut queue: Vec<&'a PackageEntry> = Vec::new();
    for root in roots {
        let relation = Relation {
            name: root.clone(),
            ..Relation::default()
        };
        if let Some(chosen) =
            resolver.satisfy(&[&relation], "the meta-release (UpgradeToolPackages)")?
        {
            queue.push(chosen);
        }
    }
    while let Some(package) = queue.pop() {
        for (field, text) in [
            ("Pre-Depends", &package.pre_depends),
            ("Depends", &package.depends),
        ] {
            let relations: Relations = text.parse().map_err(|e| Error::Malformed {
                what: format!("{} in {pocket}", package.name),
                reason: format!("unreadable {field} {text:?}: {e}"),
            })?;
            let required_by = format!("{} {}", package.name, package.version);
            for group in relations.iter() {
                if let Some(chosen) = resolver.satisfy(&group, &required_by)? {
                    queue.push(chosen);
                }
            }
        }
    }
    Ok(resolver.chosen.into_values().collect())
}

struct Resolver<'a, 'p> {
    packages: &'a [PackageEntry],
    arch: &'p str,
    pocket: &'p str,
    chosen: BTreeMap<String, &'a PackageEntry>,
}

impl<'a> Resolver<'a, '_> {
    /// Satisfies one relation group (alternatives). Returns a newly chosen package whose
    /// own dependencies still need resolving, or `None` if the group was already met.
    fn satisfy(
        &mut self,
        group: &[&Relation],
        required_by: &str,
    ) -> Result<Option<&'a PackageEntry>, Error> {
        let applicable: Vec<&Relation> = group
            .iter()
            .copied()
            .filter(|r| applies_to(r, self.arch))
            .collect();
        if applicable.is_empty() {
            return Ok(None);
        }
        for relation in &applicable {
            if !is_helper_name(&relation.name) {
                return Err(Error::NotAHelper {
                    package: relation.name.clone(),
                    required_by: required_by.to_owned(),
                });
            }
        }
        // An alternative already chosen that fits settles the group.
        if applicable
            .iter()
            .any(|r| self.chosen.get(&r.name).is_some_and(|p| self.fits(p, r)))
        {
            return Ok(None);
        }
        for relation in &applicable {
            if self.chosen.contains_key(&relation.name) {
                continue;
            }
            let best = self
                .candidates(&relation.name)
                .filter(|p| self.fits(p, relation))
                .max_by(|a, b| a.version.cmp(&b.version));
            if let Some(best) = best {
                self.chosen.insert(best.name.clone(), best);
                return Ok(Some(best));
            }
        }
        // Nothing fits: explain with the first alternative.
        let first = applicable[0];
        let available: Vec<String> = match self.chosen.get(&first.name) {
            Some(p) => vec![p.version.to_string()],
            None => self
                .candidates(&first.name)
                .map(|p| p.version.to_string())
                .collect(),
        };
        if available.is_empty() {
            return Err(Error::MissingPackage {
                package: display_name(first),
                required_by: required_by.to_owned(),
                pocket: self.pocket.to_owned(),
            });
        }
        Err(Error::UnsatisfiableVersion {
            package: first.name.clone(),
            constraint: first
                .version
                .as_ref()
                .map(|(c, v)| format!("{c} {v}"))
                .unwrap_or_else(|| format!("architecture {}", self.arch)),
            available: available.join(", "),
            required_by: required_by.to_owned(),
        })
    }

    fn candidates<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a PackageEntry> + 's {
        self.packages.iter().filter(move |p| {
            p.name == name && (p.architecture == self.arch || p.architecture == "all")
        })
    }

    fn fits(&self, package: &PackageEntry, relation: &Relation) -> bool {
        let arch_ok = match relation.archqual.as_deref() {
            None | Some("any") | Some("native") => true,
            Some(qualifier) => qualifier == self.arch && package.architecture == self.arch,
        };
        arch_ok
            && relation
                .version
                .as_ref()
                .is_none_or(|(constraint, wanted)| {
                    satisfies(&package.version, constraint, &Version::from(wanted.clone()))
                })
    }
}

/// Whether an architecture restriction (`[amd64 !i386]`) includes `arch`.
fn applies_to(relation: &Relation, arch: &str) -> bool {
    let Some(archs) = &relation.architectures else {
        return true;
    };
    let (negated, positive): (Vec<&String>, Vec<&String>) =
        archs.iter().partition(|a| a.starts_with('!'));
    if !positive.is_empty() {
        positive.iter().any(|a| a.as_str() == arch)
    } else {
        !negated.iter().any(|a| &a[1..] == arch)
    }
}

fn display_name(relation: &Relation) -> String {
    match &relation.archqual {
        Some(q) => format!("{}:{q}", relation.name),
        None => relation.name.clone(),
    }
}

/// Debian's version relations (`<<`, `<=`, `=`, `>=`, `>>`).
pub fn satisfies(have: &Version, constraint: &VersionConstraint, wanted: &Version) -> bool {
    use std::cmp::Ordering::*;
    let order = have.cmp(wanted);
    match constraint {
        VersionConstraint::LessThan => order == Less,
        VersionConstraint::LessThanEqual => order != Greater,
        VersionConstraint::Equal => order == Equal,
        VersionConstraint::GreaterThanEqual => order != Less,
        VersionConstraint::GreaterThan => order == Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256;

    fn pkg(name: &str, version: &str, arch: &str, depends: &str) -> PackageEntry {
        PackageEntry {
            name: name.into(),
            version: version.parse().unwrap(),
            architecture: arch.into(),
            filename: format!("{name}_{version}_{arch}.deb"),
            size: 1,
            sha256: Sha256::of(name.as_bytes()),
            installed_size_kib: None,
            depends: depends.into(),
            pre_depends: String::new(),
        }
    }

    fn names(set: &[&PackageEntry]) -> Vec<String> {
        set.iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect()
    }

    fn roots(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_core_helper_in_the_pocket_is_asked_for_even_when_the_meta_release_omits_it() {
        let tools = roots(&["release-upgrader-apt"]);
        let core = pkg(
            CORE_PACKAGE,
            "1.0",
            "amd64",
            "release-upgrader-runtime (= 2)",
        );
        let apt = pkg("release-upgrader-apt", "1.0", "amd64", "");
        let asked = requested(&tools, &[apt.clone(), core.clone()], "amd64");
        assert_eq!(asked, roots(&["release-upgrader-apt", CORE_PACKAGE]));
        // Listed already: once.
        let listed = roots(&["release-upgrader-apt", CORE_PACKAGE]);
        assert_eq!(
            requested(&listed, &[apt.clone(), core.clone()], "amd64"),
            listed
        );
        // Another architecture's core, or none: nothing added.
        assert_eq!(requested(&tools, &[apt.clone(), core], "arm64"), tools);
        assert_eq!(requested(&tools, &[apt], "amd64"), tools);
    }

    #[test]
    fn closure_with_versions_alternatives_and_any() {
        let packages = vec![
            pkg(
                "release-upgrader-apt",
                "3.0.3",
                "amd64",
                "release-upgrader-runtime:any (= 2.41-12), release-upgrader-gpgv | release-upgrader-sqv",
            ),
            pkg(
                "release-upgrader-dpkg",
                "1.22.21",
                "amd64",
                "release-upgrader-runtime (>= 2.41~)",
            ),
            pkg("release-upgrader-runtime", "2.41-12", "amd64", ""),
            pkg("release-upgrader-runtime", "2.40-1", "amd64", ""),
            pkg("release-upgrader-sqv", "1.3.0", "amd64", ""),
            pkg(
                "release-upgrader-apt",
                "3.0.3",
                "arm64",
                "nonsense-for-another-arch",
            ),
        ];
        let set = resolve(
            &packages,
            &roots(&["release-upgrader-apt", "release-upgrader-dpkg"]),
            "amd64",
            "p",
        )
        .unwrap();
        assert_eq!(
            names(&set),
            [
                "release-upgrader-apt=3.0.3",
                "release-upgrader-dpkg=1.22.21",
                "release-upgrader-runtime=2.41-12",
                "release-upgrader-sqv=1.3.0"
            ]
        );
    }

    #[test]
    fn highest_version_wins_and_tilde_sorts_low() {
        let packages = vec![
            pkg("release-upgrader-apt", "3.0.3~rc1", "amd64", ""),
            pkg("release-upgrader-apt", "3.0.3", "amd64", ""),
            pkg("release-upgrader-apt", "1:2.0", "all", ""),
        ];
        let set = resolve(&packages, &roots(&["release-upgrader-apt"]), "amd64", "p").unwrap();
        assert_eq!(names(&set), ["release-upgrader-apt=1:2.0"]);
        let packages = &packages[..2];
        let set = resolve(packages, &roots(&["release-upgrader-apt"]), "amd64", "p").unwrap();
        assert_eq!(names(&set), ["release-upgrader-apt=3.0.3"]);
    }

    #[test]
    fn a_system_package_dependency_is_refused_by_name() {
        let packages = vec![pkg(
            "release-upgrader-apt",
            "3.0.3",
            "amd64",
            "libc6 (>= 2.36)",
        )];
        let err = resolve(&packages, &roots(&["release-upgrader-apt"]), "amd64", "p").unwrap_err();
        match err {
            Error::NotAHelper {
                package,
                required_by,
            } => {
                assert_eq!(package, "libc6");
                assert!(required_by.contains("release-upgrader-apt"));
            }
            other => panic!("{other}"),
        }
        // Even as an alternative.
        let packages = vec![pkg(
            "release-upgrader-apt",
            "3.0.3",
            "amd64",
            "release-upgrader-x | gpgv",
        )];
        assert!(matches!(
            resolve(&packages, &roots(&["release-upgrader-apt"]), "amd64", "p"),
            Err(Error::NotAHelper { .. })
        ));
        // And as a root.
        assert!(matches!(
            resolve(&packages, &roots(&["apt"]), "amd64", "p"),
            Err(Error::NotAHelper { .. })
        ));
    }

    #[test]
    fn missing_and_unsatisfiable_dependencies_name_the_package() {
        let packages = vec![pkg(
            "release-upgrader-apt",
            "3.0.3",
            "amd64",
            "release-upgrader-runtime",
        )];
        match resolve(
            &packages,
            &roots(&["release-upgrader-apt"]),
            "amd64",
            "pocket-x",
        )
        .unwrap_err()
        {
            Error::MissingPackage {
                package, pocket, ..
            } => {
                assert_eq!(package, "release-upgrader-runtime");
                assert_eq!(pocket, "pocket-x");
            }
            other => panic!("{other}"),
        }
        let packages = vec![
            pkg(
                "release-upgrader-apt",
                "3.0.3",
                "amd64",
                "release-upgrader-runtime (>> 3)",
            ),
            pkg("release-upgrader-runtime", "2.41", "amd64", ""),
        ];
        match resolve(&packages, &roots(&["release-upgrader-apt"]), "amd64", "p").unwrap_err() {
            Error::UnsatisfiableVersion {
                package,
                constraint,
                available,
                ..
            } => {
                assert_eq!(package, "release-upgrader-runtime");
                assert_eq!(constraint, ">> 3");
                assert_eq!(available, "2.41");
            }
            other => panic!("{other}"),
        }
        // A package of another architecture does not count.
        let packages = vec![pkg("release-upgrader-apt", "3.0.3", "arm64", "")];
        assert!(matches!(
            resolve(&packages, &roots(&["release-upgrader-apt"]), "amd64", "p"),
            Err(Error::MissingPackage { .. })
        ));
    }

    #[test]
    fn conflicting_requirements_on_one_package_are_reported() {
        let packages = vec![
            pkg(
                "release-upgrader-apt",
                "3",
                "amd64",
                "release-upgrader-runtime (= 2)",
            ),
            pkg(
                "release-upgrader-dpkg",
                "1",
                "amd64",
                "release-upgrader-runtime (= 1)",
            ),
            pkg("release-upgrader-runtime", "1", "amd64", ""),
            pkg("release-upgrader-runtime", "2", "amd64", ""),
        ];
        let err = resolve(
            &packages,
            &roots(&["release-upgrader-apt", "release-upgrader-dpkg"]),
            "amd64",
            "p",
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnsatisfiableVersion { .. }), "{err}");
    }

    #[test]
    fn version_relations_follow_debian_rules() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(satisfies(
            &v("1.0~rc1"),
            &VersionConstraint::LessThan,
            &v("1.0")
        ));
        assert!(satisfies(
            &v("1:0.1"),
            &VersionConstraint::GreaterThan,
            &v("9.9")
        ));
        assert!(satisfies(
            &v("1.0-1"),
            &VersionConstraint::Equal,
            &v("1.0-1")
        ));
        assert!(!satisfies(
            &v("1.0-1"),
            &VersionConstraint::Equal,
            &v("1.0-2")
        ));
        assert!(satisfies(
            &v("2.41-12"),
            &VersionConstraint::GreaterThanEqual,
            &v("2.41~")
        ));
    }
}
