//! The `control` file of a binary package: one deb822 paragraph, read as dpkg reads it.
//!
//! Parsed here rather than with `deb822-fast` because that parser drops the leading
//! space of continuation lines (a Description's ` .` lines) and keeps duplicate fields,
//! which dpkg refuses.

use crate::version::Version;

/// What a package's control member says.
#[derive(Clone, Debug)]
pub struct Control {
    pub package: String,
    pub version: Version,
    pub architecture: String,
    /// Every field, in order, as `(name, value)`. A multi-line value keeps its
    /// continuation lines as written (leading space included), joined with `\n`.
    pub fields: Vec<(String, String)>,
    /// The maintainer scripts the control member carries (`preinst`, `postinst`,
    /// `prerm`, `postrm`, `config`), in archive order. Never run by this crate.
    pub maintainer_scripts: Vec<String>,
    /// `X-Release-Upgrader-Reversible: yes`: the package declares its maintainer
    /// scripts fully reversible.
    pub reversible: bool,
    /// `Installed-Size`, in KiB.
    pub installed_size_kib: Option<u64>,
}

/// The control-member files that dpkg runs.
pub const MAINTAINER_SCRIPTS: [&str; 5] = ["preinst", "postinst", "prerm", "postrm", "config"];

impl Control {
    /// A field's value; names compare case-insensitively, as in deb822.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses a control file; `maintainer_scripts` come from the member's file list.
    pub fn parse(text: &str, maintainer_scripts: Vec<String>) -> Result<Control, String> {
        let fields = parse_paragraph(text)?;
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let single = |name: &str| -> Result<&str, String> {
            let value = get(name).ok_or_else(|| format!("control has no {name} field"))?;
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(format!(
                    "control field {name}: {value:?} is not a single word"
                ));
            }
            Ok(value)
        };
        let package = single("Package")?;
        if !valid_package_name(package) {
            return Err(format!(
                "control field Package: {package:?} is not a package name"
            ));
        }
        let version_text = single("Version")?;
        let version: Version = version_text
            .parse()
            .map_err(|e| format!("control field Version: {version_text:?}: {e}"))?;
        let architecture = single("Architecture")?;
        if !architecture
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "control field Architecture: {architecture:?} is not an architecture"
            ));
        }
        let installed_size_kib = get("Installed-Size")
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("control field Installed-Size: {v:?} is not a number"))
            })
            .transpose()?;
        let reversible = get("X-Release-Upgrader-Reversible") == Some("yes");
        Ok(Control {
            package: package.to_owned(),
            version,
            architecture: architecture.to_owned(),
            installed_size_kib,
            reversible,
            maintainer_scripts,
            fields,
        })
    }
}

/// dpkg's rule: at least two characters, lower-case letters, digits and `+-.`, starting
/// with a letter or digit.
fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// One deb822 paragraph: `Name: value` lines, continuation lines starting with a space
/// or tab, blank lines only at the end.
fn parse_paragraph(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut ended = false;
    for (number, line) in text.lines().enumerate() {
        let at = |why: &str| format!("control line {}: {why}", number + 1);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            ended = !fields.is_empty();
            continue;
        }
        if ended {
            return Err(at("more than one paragraph"));
        }
        if line.starts_with([' ', '\t']) {
            let (_, value) = fields
                .last_mut()
                .ok_or_else(|| at("continuation line before any field"))?;
            value.push('\n');
            value.push_str(line.trim_end());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| at("not a `Field: value` line"))?;
        if name.is_empty()
            || name.starts_with(['-', '#'])
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(at(&format!("bad field name {name:?}")));
        }
        if fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(at(&format!("duplicate field {name}")));
        }
        fields.push((name.to_owned(), value.trim().to_owned()));
    }
    if fields.is_empty() {
        return Err("control is empty".into());
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROL: &str = "Package: release-upgrader-apt\nVersion: 1:3.0.3-1\n\
        Architecture: amd64\nInstalled-Size: 4321\nDepends: release-upgrader-runtime (>= 2.41)\n\
        Description: apt for the upgrade\n first line\n .\n second\n";

    #[test]
    fn fields_are_kept_in_order_with_continuation_lines() {
        let c = Control::parse(CONTROL, vec![]).unwrap();
        assert_eq!(c.package, "release-upgrader-apt");
        assert_eq!(c.version.to_string(), "1:3.0.3-1");
        assert_eq!(c.architecture, "amd64");
        assert_eq!(c.installed_size_kib, Some(4321));
        assert!(!c.reversible);
        let names: Vec<&str> = c.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Package",
                "Version",
                "Architecture",
                "Installed-Size",
                "Depends",
                "Description"
            ]
        );
        assert_eq!(
            c.field("description"),
            Some("apt for the upgrade\n first line\n .\n second")
        );
    }

    #[test]
    fn reversible_needs_exactly_yes() {
        let yes = format!("{CONTROL}X-Release-Upgrader-Reversible: yes\n");
        assert!(Control::parse(&yes, vec![]).unwrap().reversible);
        let no = format!("{CONTROL}X-Release-Upgrader-Reversible: true\n");
        assert!(!Control::parse(&no, vec![]).unwrap().reversible);
    }

    #[test]
    fn malformed_control_files_are_refused() {
        for (text, why) in [
            ("", "empty"),
            ("Version: 1\nArchitecture: all\n", "no Package"),
            (
                "Package: x y\nVersion: 1\nArchitecture: all\n",
                "single word",
            ),
            (
                "Package: Foo\nVersion: 1\nArchitecture: all\n",
                "package name",
            ),
            ("Package: foo\nVersion: 1_0\nArchitecture: all\n", "Version"),
            (
                "Package: foo\nVersion: 1\nArchitecture: AMD64\n",
                "architecture",
            ),
            (
                "Package: foo\nVersion: 1\nArchitecture: all\nInstalled-Size: lots\n",
                "Installed-Size",
            ),
            ("Package: foo\npackage: bar\n", "duplicate"),
            (" x\nPackage: foo\n", "continuation"),
            ("Package: foo\nVersion 1\n", "Field: value"),
            ("Package: foo\n\nPackage: bar\n", "more than one paragraph"),
            ("Package: foo\nBad Name: 1\n", "bad field name"),
        ] {
            let err = Control::parse(text, vec![]).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn package_names_follow_dpkg() {
        for good in ["release-upgrader-apt", "libc6", "g++", "a0", "0ad"] {
            assert!(valid_package_name(good), "{good}");
        }
        for bad in ["a", "-a", "A", "a_b", "a b", ".a", "é"] {
            assert!(!valid_package_name(bad), "{bad}");
        }
    }
}
