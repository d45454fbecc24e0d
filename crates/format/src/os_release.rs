//! The running release, from `os-release(5)`.
//!
//! The codename decides which meta-release stanza is "us", so it must come from the system
//! being upgraded (`<root>/etc/os-release`), not from the machine the tool runs on.

use std::collections::BTreeMap;

/// The fields of os-release this tool uses; `fields` keeps the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, e.g. `debian` or `ubuntu`.
    pub id: String,
    /// `VERSION_CODENAME` (or `UBUNTU_CODENAME`), e.g. `bookworm`.
    pub codename: Option<String>,
    /// `VERSION_ID`, e.g. `12`.
    pub version_id: Option<String>,
    /// `VERSION`, e.g. `24.04.1 LTS (Noble Numbat)`.
    pub version: Option<String>,
    /// `PRETTY_NAME`.
    pub pretty_name: Option<String>,
    pub fields: BTreeMap<String, String>,
}

impl OsRelease {
    /// Parses the shell-like `KEY=value` syntax of os-release(5).
    pub fn parse(text: &str) -> Self {
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            fields.insert(key.trim().to_owned(), unquote(value.trim()));
        }
        let get = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
        OsRelease {
            id: get("ID").unwrap_or_else(|| "linux".into()),
            codename: get("VERSION_CODENAME").or_else(|| get("UBUNTU_CODENAME")),
            version_id: get("VERSION_ID"),
            version: get("VERSION"),
            pretty_name: get("PRETTY_NAME"),
            fields,
        }
    }

    /// Whether the running release calls itself a long-term release (Ubuntu's `LTS`).
    pub fn is_lts(&self) -> bool {
        self.version
            .as_deref()
            .is_some_and(|v| v.split_whitespace().any(|w| w == "LTS"))
    }
}

/// Removes one level of shell quoting, as os-release(5) allows.
fn unquote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => out.push(c),
            (_, '\\') => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            (_, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_bookworm() {
        let os = OsRelease::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n",
        );
        assert_eq!(os.id, "debian");
        assert_eq!(os.codename.as_deref(), Some("bookworm"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert!(!os.is_lts());
    }

    #[test]
    fn ubuntu_lts_and_quoting() {
        let os = OsRelease::parse(
            "VERSION='24.04.1 LTS (Noble Numbat)'\nID=ubuntu\nUBUNTU_CODENAME=noble\n\
             NAME=\"A \\\"quoted\\\" name\"\n",
        );
        assert_eq!(os.codename.as_deref(), Some("noble"));
        assert!(os.is_lts());
        assert_eq!(os.fields["NAME"], "A \"quoted\" name");
    }
}
