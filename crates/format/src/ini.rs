//! INI files as Python's `configparser` reads them, which is how update-manager's
//! `/etc/update-manager/*` and system-image's `config.d/*.ini` are written and read.
//!
//! Written here because the files mix `key = value` and `key: value`, lower-case keys
//! as configparser does, and carry `#`/`;` comments; the INI crates we looked at each
//! miss one of these. Later sections and keys override earlier ones, as in configparser.

use std::collections::BTreeMap;

/// A parsed INI document: section name → (lower-cased key → value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ini {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

/// A line that is neither a section, a key, a comment nor blank.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct IniError {
    pub line: usize,
    pub reason: String,
}

impl Ini {
    pub fn parse(text: &str) -> Result<Self, IniError> {
        let mut ini = Ini::default();
        let mut current: Option<String> = None;
        let mut last_key: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_end();
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            // Continuation lines (indented) extend the previous value.
            if line.starts_with([' ', '\t'])
                && let (Some(section), Some(key)) = (&current, &last_key)
            {
                let value = ini
                    .sections
                    .get_mut(section)
                    .and_then(|s| s.get_mut(key))
                    .expect("last key exists");
                value.push('\n');
                value.push_str(trimmed);
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or_else(|| IniError {
                    line: n + 1,
                    reason: format!("unterminated section header {trimmed:?}"),
                })?;
                let name = name.trim().to_owned();
                ini.sections.entry(name.clone()).or_default();
                current = Some(name);
                last_key = None;
                continue;
            }
            let Some(at) = trimmed.find(['=', ':']) else {
                return Err(IniError {
                    line: n + 1,
                    reason: format!("expected `key = value`, found {trimmed:?}"),
                });
            };
            let Some(section) = &current else {
                return Err(IniError {
                    line: n + 1,
                    reason: "key outside of any [section]".into(),
                });
            };
            let key = trimmed[..at].trim().to_ascii_lowercase();
            let value = trimmed[at + 1..].trim().to_owned();
            ini.sections
                .get_mut(section)
                .expect("section exists")
                .insert(key.clone(), value);
            last_key = Some(key);
        }
        Ok(ini)
    }

    /// The value of `key` (case-insensitive) in `section` (case-sensitive).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .get(section)?
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn has_section(&self, section: &str) -> bool {
        self.sections.contains_key(section)
    }

    pub fn section(&self, section: &str) -> Option<&BTreeMap<String, String>> {
        self.sections.get(section)
    }

    /// Merges `other` over `self`, key by key, as configparser does when it reads
    /// several files in turn.
    pub fn merge(&mut self, other: Ini) {
        for (name, keys) in other.sections {
            self.sections.entry(name).or_default().extend(keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_delimiters_comments_and_case() {
        let ini = Ini::parse(
            "# comment\n[METARELEASE]\nURI = https://a/meta-release\n; other\n\
             URI_LTS=https://a/lts\n[service]\nbase: host\nchannel:stable\n",
        )
        .unwrap();
        assert_eq!(
            ini.get("METARELEASE", "uri"),
            Some("https://a/meta-release")
        );
        assert_eq!(ini.get("METARELEASE", "URI_LTS"), Some("https://a/lts"));
        assert_eq!(ini.get("service", "base"), Some("host"));
        assert_eq!(ini.get("service", "channel"), Some("stable"));
        assert_eq!(ini.get("service", "missing"), None);
    }

    #[test]
    fn later_values_and_files_override() {
        let mut a = Ini::parse("[s]\nk = 1\nk = 2\nj = x\n").unwrap();
        assert_eq!(a.get("s", "k"), Some("2"));
        a.merge(Ini::parse("[s]\nk = 3\n").unwrap());
        assert_eq!(a.get("s", "k"), Some("3"));
        assert_eq!(a.get("s", "j"), Some("x"));
    }

    #[test]
    fn malformed_lines_name_their_number() {
        let err = Ini::parse("[s]\nk = 1\nnonsense\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(Ini::parse("k = 1\n").is_err());
        assert!(Ini::parse("[s\n").is_err());
    }
}
