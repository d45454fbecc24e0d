//! The target release's notes (`ReleaseNotes` of the meta-release, docs/protocol.md §1),
//! shown by `check --notes` and by a desktop-mode upgrade before it asks to start.
//!
//! The notes are a web page or plain text from anywhere the meta-release points: they are
//! fetched through the session's fetcher (its proxy, retries, timeouts and a size cap)
//! and only ever shown, never interpreted, so a page is reduced to its text here rather
//! than handed to a browser or a pager that renders it.

use crate::error::Error;
use crate::fetch::{Fetcher, Location};
use crate::metarelease::ReleaseEntry;

/// The most of a notes document that is read (a page is a few hundred kB at most).
pub const CAP: u64 = 2 * 1024 * 1024;

/// Release notes as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseNotes {
    pub uri: String,
    pub text: String,
}

/// Where the target's notes are: `ReleaseNotes`, else `ReleaseNotesHtml`.
pub fn uri(entry: &ReleaseEntry) -> Option<&str> {
    entry
        .release_notes
        .as_deref()
        .or(entry.release_notes_html.as_deref())
        .filter(|u| !u.trim().is_empty())
}

/// Fetches the notes at `uri` and turns them into text.
pub fn fetch(fetcher: &Fetcher, uri: &str) -> Result<ReleaseNotes, Error> {
    let location = Location::parse(uri)?;
    let bytes = fetcher.fetch_bytes(&location, CAP)?;
    Ok(ReleaseNotes {
        uri: uri.to_owned(),
        text: to_text(&String::from_utf8_lossy(&bytes)),
    })
}

/// Plain text as it is (trimmed), a page reduced to its text: no tags, no scripts or
/// styles, entities decoded, blocks on lines of their own, at most one blank line in a
/// row. Escape sequences are dropped either way, so the notes cannot drive the terminal.
pub fn to_text(document: &str) -> String {
    let text = if looks_like_html(document) {
        strip_html(document)
    } else {
        document.to_owned()
    };
    let mut out = String::new();
    let mut blank = 0;
    for line in text.lines() {
        let line: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

fn looks_like_html(document: &str) -> bool {
    let head: String = document
        .trim_start()
        .chars()
        .take(512)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.starts_with("<html") || head.contains("<body")
}

/// Tags that start and end a line.
const BLOCKS: &[&str] = &[
    "br", "div", "tr", "dt", "dd", "section", "article", "header", "footer",
];

/// Tags whose end leaves a blank line.
const PARAGRAPHS: &[&str] = &[
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "ul", "ol", "title",
];

fn strip_html(document: &str) -> String {
    let mut out = String::new();
    let mut rest = document;
    while let Some(open) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..open]));
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = after[..close].trim();
        rest = &after[close + 1..];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        // The contents of scripts and styles are not text.
        if !tag.starts_with('/') && (name == "script" || name == "style") {
            let end = format!("</{name}");
            match rest.to_ascii_lowercase().find(&end) {
                Some(at) => {
                    rest = &rest[at..];
                    if let Some(gt) = rest.find('>') {
                        rest = &rest[gt + 1..];
                    }
                }
                None => rest = "",
            }
            continue;
        }
        let closing = tag.starts_with('/');
        if name == "li" {
            if !closing {
                out.push_str("\n  * ");
            }
        } else if closing && PARAGRAPHS.contains(&name.as_str()) {
            out.push_str("\n\n");
        } else if BLOCKS.contains(&name.as_str()) || PARAGRAPHS.contains(&name.as_str()) {
            out.push('\n');
        }
    }
    out.push_str(&decode_entities(rest));
    // Whitespace inside a line collapses as a browser collapses it.
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|l| {
            if l.starts_with("* ") {
                format!("  {l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_entities(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after.find(';').filter(|e| *e <= 10);
        let decoded = end.and_then(|e| {
            let name = &after[..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_stays_as_it_is_without_escape_sequences() {
        assert_eq!(
            to_text("Trixie\n\n\n\nis out.\x1b[2J\r\n  indented  \n"),
            "Trixie\n\nis out.[2J\n  indented"
        );
    }

    #[test]
    fn a_page_becomes_its_text() {
        let page = "<!DOCTYPE html><html><head><title>Notes</title>\
            <style>p { color: red }</style><script>alert('x<y')</script></head>\
            <body><h1>Debian&nbsp;13</h1><p>Read   this &amp; that &lt;first&gt;.</p>\
            <ul><li>one</li><li>two &#8211; &#x41;</li></ul>Tail &bogus; &amp</body></html>";
        assert_eq!(
            to_text(page),
            "Notes\n\nDebian 13\n\nRead this & that <first>.\n\n  * one\n  * two – A\n\nTail &bogus; &amp"
        );
    }

    #[test]
    fn an_unclosed_tag_or_script_ends_the_text_instead_of_looping() {
        assert_eq!(to_text("<html><body>a <b"), "a");
        assert_eq!(to_text("<html><body>a<script>never closed"), "a");
    }

    #[test]
    fn the_text_notes_are_preferred_to_the_html_ones() {
        let text = "Dist: trixie\nVersion: 13\nDate: Sat, 09 Aug 2025 07:00:00 UTC\nSupported: 1\n";
        let mut entry = crate::metarelease::MetaRelease::parse(text)
            .unwrap()
            .releases[0]
            .clone();
        assert_eq!(uri(&entry), None);
        entry.release_notes_html = Some("https://h".into());
        assert_eq!(uri(&entry), Some("https://h"));
        entry.release_notes = Some("https://t".into());
        assert_eq!(uri(&entry), Some("https://t"));
        entry.release_notes = Some(" ".into());
        entry.release_notes_html = None;
        assert_eq!(uri(&entry), None);
    }
}
