//! Helper recipes (`helpers/*.toml`): which upstream packages make which
//! `release-upgrader-*` helper, which of their programs get entry points, and what is
//! left out. Declarative so that one recipe serves a real archive and a local one.

use std::path::Path;

use serde::Deserialize;

use crate::error::Error;

/// A whole recipe file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Recipe {
    /// The archive component the packages come from.
    #[serde(default = "main_component")]
    pub component: String,
    /// `Maintainer` of the helpers.
    pub maintainer: String,
    /// Appended to the upstream version a helper takes its version from.
    #[serde(default)]
    pub version_suffix: String,
    /// Packages the dependency closure does not enter.
    #[serde(default)]
    pub not_needed: Vec<String>,
    /// Path prefixes (relative to the upstream root) never shipped.
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(rename = "helper")]
    pub helpers: Vec<HelperRecipe>,
}

fn main_component() -> String {
    "main".into()
}

/// What a helper ships of its upstream packages.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Ship {
    /// Every file (less the recipe's `drop` list).
    #[default]
    All,
    /// Only the shared libraries other shipped programs need.
    Libraries,
}

/// One helper package.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HelperRecipe {
    /// `release-upgrader-…`.
    pub name: String,
    /// The upstream package whose version (plus the recipe's suffix) the helper takes.
    pub version_from: String,
    /// The upstream packages it bundles.
    pub upstream: Vec<String>,
    #[serde(default)]
    pub ship: Ship,
    /// This helper owns the dynamic loader and every library more than one helper needs.
    #[serde(default)]
    pub shared_libraries: bool,
    /// Programs that get an entry point in `bin/` (found in `usr/bin`, `usr/sbin`,
    /// `bin`, `sbin` of its upstream files).
    #[serde(default)]
    pub bin: Vec<String>,
    /// Programs (among `bin`) that also get an entry point in `dpkg-path/`.
    #[serde(default)]
    pub dpkg_path: Vec<String>,
    /// A directory (relative to the upstream root) of apt acquire methods: each gets an
    /// entry point of the same name in `methods/`.
    #[serde(default)]
    pub methods: Option<String>,
    /// Other helpers of the recipe this one needs (exact version).
    #[serde(default)]
    pub depends: Vec<String>,
    /// One line.
    pub description: String,
    /// A version given outright instead of `version-from`'s plus the recipe's suffix:
    /// only the core helper has one (`helper build --core`), never a recipe file.
    #[serde(skip)]
    pub version: Option<String>,
}

impl Recipe {
    pub fn load(path: &Path) -> Result<Recipe, Error> {
        let text = fs_err::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Recipe::parse(&text).map_err(|reason| Error::Config {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses and checks a recipe.
    pub fn parse(text: &str) -> Result<Recipe, String> {
        let recipe: Recipe = toml::from_str(text).map_err(|e| e.to_string())?;
        recipe.check()?;
        Ok(recipe)
    }

    fn check(&self) -> Result<(), String> {
        if self.helpers.is_empty() {
            return Err("no [[helper]]".into());
        }
        let names: Vec<&str> = self.helpers.iter().map(|h| h.name.as_str()).collect();
        if self.helpers.iter().filter(|h| h.shared_libraries).count() > 1 {
            return Err("more than one helper has shared-libraries = true".into());
        }
        for (i, helper) in self.helpers.iter().enumerate() {
            let name = &helper.name;
            if !ru_format::layout::is_helper_name(name) {
                return Err(format!("helper {name:?} is not named release-upgrader-*"));
            }
            if names[..i].contains(&name.as_str()) {
                return Err(format!("helper {name} is defined twice"));
            }
            if helper.upstream.is_empty() {
                return Err(format!("helper {name} bundles no upstream package"));
            }
            for program in &helper.dpkg_path {
                if !crate::layout::DPKG_PATH_PROGRAMS.contains(&program.as_str()) {
                    return Err(format!(
                        "helper {name}: dpkg-path may only hold {} (not {program})",
                        crate::layout::DPKG_PATH_PROGRAMS.join(", ")
                    ));
                }
                if !helper.bin.contains(program) {
                    return Err(format!(
                        "helper {name}: dpkg-path program {program} is not in its bin list"
                    ));
                }
            }
            for dep in &helper.depends {
                if !names.contains(&dep.as_str()) || dep == name {
                    return Err(format!(
                        "helper {name} depends on {dep}, which is not another helper of the recipe"
                    ));
                }
            }
            for program in helper.bin.iter().chain(&helper.dpkg_path) {
                if program.is_empty() || program.contains('/') || program.starts_with('.') {
                    return Err(format!("helper {name}: bad program name {program:?}"));
                }
            }
        }
        for prefix in &self.drop {
            crate::fetch::check_relative(prefix)
                .map_err(|reason| format!("drop entry {prefix:?} {reason}"))?;
        }
        Ok(())
    }

    /// Whether `path` (relative to the upstream root) is dropped.
    pub fn drops(&self, path: &str) -> bool {
        self.drop.iter().any(|prefix| {
            let prefix = prefix.trim_end_matches('/');
            path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debian_recipe_parses() {
        let recipe = Recipe::load(
            &Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("helpers/debian.toml"),
        )
        .unwrap();
        assert_eq!(recipe.helpers.len(), 3);
        assert!(recipe.drops("usr/share/doc/apt/changelog.gz"));
        assert!(recipe.drops("usr/share/doc"));
        assert!(!recipe.drops("usr/share/docs"));
        let apt = recipe
            .helpers
            .iter()
            .find(|h| h.name == "release-upgrader-apt")
            .unwrap();
        assert_eq!(apt.methods.as_deref(), Some("usr/lib/apt/methods"));
    }

    #[test]
    fn bad_recipes_are_refused() {
        let base = "maintainer = \"m\"\n";
        let helper = |extra: &str| {
            format!(
                "{base}[[helper]]\nname = \"release-upgrader-x\"\nversion-from = \"x\"\nupstream = [\"x\"]\ndescription = \"d\"\n{extra}"
            )
        };
        assert!(Recipe::parse(&helper("")).is_ok());
        assert!(
            Recipe::parse(&helper("dpkg-path = [\"tar\"]\n"))
                .unwrap_err()
                .contains("tar is not in its bin list")
        );
        assert!(
            Recipe::parse(&helper("bin = [\"dpkg\"]\ndpkg-path = [\"dpkg\"]\n"))
                .unwrap_err()
                .contains("dpkg-path may only hold")
        );
        assert!(
            Recipe::parse(&helper("depends = [\"release-upgrader-y\"]\n"))
                .unwrap_err()
                .contains("release-upgrader-y")
        );
        assert!(Recipe::parse(&helper("bin = [\"../x\"]\n")).is_err());
        assert!(Recipe::parse(&helper("surprise = 1\n")).is_err());
        assert!(Recipe::parse(&helper("").replace("release-upgrader-x", "apt")).is_err());
        assert!(Recipe::parse(base).is_err());
    }
}
