//! Whether the running release's package indices are already what the archive serves.
//!
//! The pending-updates check needs current indices of the running release. Refreshing
//! them with `apt-get update` costs seconds (new InRelease files, then apt rebuilds its
//! cache) even when nothing changed, which is the usual case right after the user ran
//! `apt update && apt upgrade`. So first ask the archive for each source's InRelease: when
//! every one is byte-for-byte the copy apt verified and stored, the indices it lists are
//! current, and apt's refresh would change nothing.

use crate::fetch::{Fetcher, Location};
use crate::root::SystemRoot;
use crate::upgrade::sources::{self, SourceEntry};

/// An InRelease file larger than this is not one.
const INRELEASE_CAP: u64 = 16 << 20;

/// Every `(uri, suite)` of the `deb` entries, as apt would fetch them; `None` when some
/// entry has a form this check does not follow (flat repositories, non-HTTP sources).
pub fn release_files(entries: &[SourceEntry]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| e.types.iter().any(|t| t == "deb"))
    {
        for uri in &entry.uris {
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                return None;
            }
            for suite in &entry.suites {
                if suite.ends_with('/') || suite.contains("..") {
                    return None;
                }
                let base = format!("{}/dists/{suite}/", uri.trim_end_matches('/'));
                if !out.iter().any(|(b, _)| *b == base) {
                    out.push((base, suite.clone()));
                }
            }
        }
    }
    Some(out)
}

/// True when every InRelease the root's `deb` sources name is stored in its apt lists and
/// equal to what the archive serves now. Any doubt (no stored copy, a network error, a
/// source we do not follow) says false, and apt refreshes as usual.
pub fn indices_are_current(root: &SystemRoot, fetcher: &Fetcher) -> bool {
    let Ok(entries) = sources::entries(root) else {
        return false;
    };
    let Some(files) = release_files(&entries) else {
        return false;
    };
    if files.is_empty() {
        return false;
    }
    let lists = root.path("/var/lib/apt/lists");
    std::thread::scope(|scope| {
        let checks: Vec<_> = files
            .iter()
            .map(|(base, _)| {
                let lists = &lists;
                scope.spawn(move || {
                    let stored = lists.join(format!("{}InRelease", sources::apt_list_name(base)));
                    let Ok(stored) = std::fs::read(stored) else {
                        return false;
                    };
                    let Ok(location) = Location::parse(&format!("{base}InRelease")) else {
                        return false;
                    };
                    fetcher
                        .fetch_bytes(&location, INRELEASE_CAP)
                        .is_ok_and(|served| served == stored)
                })
            })
            .collect();
        checks.into_iter().all(|c| c.join().unwrap_or(false))
    })
}

/// Time allowed to reach the archive when a dead network would only cost time (upgrade
/// media stand in for it).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The first `InRelease` the root's `deb` sources fetch over http(s), if any.
pub fn first_network_release(entries: &[SourceEntry]) -> Option<String> {
    entries
        .iter()
        .filter(|e| e.types.iter().any(|t| t == "deb"))
        .flat_map(|e| {
            e.uris
                .iter()
                .flat_map(move |uri| e.suites.iter().map(move |s| (uri, s)))
        })
        .find(|(uri, suite)| {
            (uri.starts_with("http://") || uri.starts_with("https://"))
                && !suite.ends_with('/')
                && !suite.contains("..")
        })
        .map(|(uri, suite)| format!("{}/dists/{suite}/InRelease", uri.trim_end_matches('/')))
}

/// Why the network is down, when one attempt (no retry, at most [`PROBE_TIMEOUT`]) to
/// fetch the first `InRelease` the root's sources name fails without any answer from a
/// server; `None` when it answers (even with an error) or no source is on the network.
pub fn network_down(root: &SystemRoot, fetcher: &Fetcher) -> Option<String> {
    let entries = sources::entries(root).ok()?;
    let uri = first_network_release(&entries)?;
    let location = Location::parse(&uri).ok()?;
    let once = fetcher.adjusted(|c| {
        c.retries = 0;
        c.connect_timeout = c.connect_timeout.min(PROBE_TIMEOUT);
        c.stall_timeout = c.stall_timeout.min(PROBE_TIMEOUT);
    });
    match once.fetch_bytes(&location, INRELEASE_CAP) {
        Err(e) if e.is_unreachable() => Some(e.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(types: &[&str], uris: &[&str], suites: &[&str]) -> SourceEntry {
        SourceEntry {
            types: types.iter().map(|s| s.to_string()).collect(),
            uris: uris.iter().map(|s| s.to_string()).collect(),
            suites: suites.iter().map(|s| s.to_string()).collect(),
            signed_by: None,
        }
    }

    #[test]
    fn every_binary_suite_of_every_uri_is_checked_once() {
        let files = release_files(&[
            entry(
                &["deb", "deb-src"],
                &["http://m/debian/"],
                &["bookworm", "bookworm-updates"],
            ),
            entry(&["deb"], &["http://m/debian"], &["bookworm"]),
            entry(&["deb-src"], &["http://src/debian"], &["bookworm"]),
            entry(
                &["deb"],
                &["https://s/debian-security"],
                &["bookworm-security"],
            ),
        ])
        .unwrap();
        let bases: Vec<&str> = files.iter().map(|(b, _)| b.as_str()).collect();
        assert_eq!(
            bases,
            [
                "http://m/debian/dists/bookworm/",
                "http://m/debian/dists/bookworm-updates/",
                "https://s/debian-security/dists/bookworm-security/",
            ]
        );
    }

    #[test]
    fn the_network_is_probed_at_the_first_http_source() {
        let entries = [
            entry(&["deb"], &["cdrom:[Debian]/"], &["bookworm"]),
            entry(&["deb-src"], &["http://src/debian"], &["bookworm"]),
            entry(&["deb"], &["file:/srv/mirror"], &["bookworm"]),
            entry(&["deb"], &["http://m/repo"], &["./"]),
            entry(
                &["deb"],
                &["https://m/debian/"],
                &["bookworm", "bookworm-updates"],
            ),
        ];
        assert_eq!(
            first_network_release(&entries).as_deref(),
            Some("https://m/debian/dists/bookworm/InRelease")
        );
        assert_eq!(first_network_release(&entries[..4]), None);
    }

    #[test]
    fn sources_this_check_does_not_follow_leave_it_to_apt() {
        for odd in [
            entry(&["deb"], &["http://m/repo"], &["./"]),
            entry(&["deb"], &["file:/srv/mirror"], &["bookworm"]),
            entry(&["deb"], &["cdrom:[Debian]/"], &["bookworm"]),
            entry(&["deb"], &["http://m/debian"], &["../../etc"]),
        ] {
            assert_eq!(release_files(std::slice::from_ref(&odd)), None, "{odd:?}");
        }
    }
}
