//! Debian package versions, ordered exactly as dpkg orders them.
//!
//! Parsing and validation are debversion's. The ordering is dpkg's own `verrevcmp`,
//! written here because debversion 0.5 orders an empty digit run below `0` where dpkg
//! treats both as zero: dpkg says `1.0.` = `1.0.0`, debversion says `<`. The corpus test
//! against `dpkg --compare-versions` (tests/it/real_data.rs) found it and guards it.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A Debian version (`[epoch:]upstream[-revision]`).
#[derive(Clone, Debug)]
pub struct Version(debversion::Version);

impl Version {
    pub fn epoch(&self) -> u32 {
        self.0.epoch.unwrap_or(0)
    }

    pub fn upstream(&self) -> &str {
        &self.0.upstream_version
    }

    /// The Debian revision, `""` when there is none (as dpkg reads it).
    pub fn revision(&self) -> &str {
        self.0.debian_revision.as_deref().unwrap_or("")
    }
}

impl FromStr for Version {
    type Err = debversion::ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(Version)
    }
}

impl From<debversion::Version> for Version {
    fn from(v: debversion::Version) -> Self {
        Version(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch()
            .cmp(&other.epoch())
            .then_with(|| verrevcmp(self.upstream(), other.upstream()))
            .then_with(|| verrevcmp(self.revision(), other.revision()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// dpkg's weight of a non-digit character: `~` before everything, even the end of the
/// string; letters before other characters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's `verrevcmp`: alternating non-digit and digit runs; digit runs compare as
/// numbers, with an empty run equal to zero.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &str, b: &str) -> Ordering {
        a.parse::<Version>().unwrap().cmp(&b.parse().unwrap())
    }

    #[test]
    fn dpkg_order() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0", "1.0+b1", Less),
            ("1.0", "1.0-0", Equal),
            ("1.0.", "1.0.0", Equal),
            ("1.0a", "1.0a0", Equal),
            ("1:0.1", "9.9", Greater),
            ("1.10", "1.9", Greater),
            ("1.0-1", "1.0-1.1", Less),
            ("2.41-12", "2.41~", Greater),
            (
                "99999999999999999999999",
                "99999999999999999999998",
                Greater,
            ),
            ("1.0a", "1.0+", Less),
        ] {
            assert_eq!(cmp(a, b), want, "{a} vs {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
