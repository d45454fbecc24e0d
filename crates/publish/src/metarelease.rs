//! Writing a signed meta-release (docs/protocol.md §1): `FILE` clearsigned, `FILE.gpg` a
//! detached signature over `FILE` as published.

use std::path::Path;

use crate::SigningKey;
use crate::error::Error;
use crate::fsutil;

/// One release stanza, fields in the order they are written.
#[derive(Clone, Debug, Default)]
pub struct Stanza {
    pub fields: Vec<(String, String)>,
}

impl Stanza {
    pub fn field(mut self, name: &str, value: impl Into<String>) -> Self {
        self.fields.push((name.to_owned(), value.into()));
        self
    }
}

/// Renders stanzas as deb822.
pub fn render(stanzas: &[Stanza]) -> String {
    stanzas
        .iter()
        .map(|s| {
            s.fields
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `out` (clearsigned `text`) and `out.gpg` (detached signature over `out`).
pub fn write(out: &Path, text: &str, key: &SigningKey) -> Result<(), Error> {
    let signed = key.clearsign(text.as_bytes())?;
    let detached = key.detached_signature(&signed)?;
    fsutil::write_atomic(out, &signed)?;
    let mut gpg = out.as_os_str().to_owned();
    gpg.push(".gpg");
    fsutil::write_atomic(Path::new(&gpg), &detached).map_err(Error::from)
}
