//! Dates as Debian and Ubuntu write them in Release and meta-release files.
//!
//! Written by hand because the real files are looser than RFC 2822 and strict parsers
//! (chrono's included) reject them: Ubuntu's meta-release has `Thu, 01 Jun 2006 9:00:00 UTC`
//! (one-digit hour) and `Thu, 21 April 2016 16:04:00 UTC` (full month name). The rules
//! follow Python's `email.utils.parsedate_tz`, which Ubuntu's client uses, except that
//! the zone is honoured instead of ignored.

use chrono::{DateTime, NaiveDate, Utc};

/// Seconds since the Unix epoch, UTC.
pub type Timestamp = i64;

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const MONTHS_LONG: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn month_number(word: &str) -> Option<u32> {
    let w = word.to_ascii_lowercase();
    MONTHS
        .iter()
        .chain(MONTHS_LONG.iter())
        .position(|m| *m == w)
        .map(|i| (i % 12) as u32 + 1)
}

/// Offset in seconds east of UTC for a zone name or `+hhmm`/`-hhmm`.
fn zone_offset(zone: &str) -> Option<i64> {
    if zone.is_empty() {
        return Some(0);
    }
    let named = match zone.to_ascii_uppercase().as_str() {
        "UT" | "UTC" | "GMT" | "Z" => Some(0),
        "AST" => Some(-4),
        "ADT" => Some(-3),
        "EST" => Some(-5),
        "EDT" => Some(-4),
        "CST" => Some(-6),
        "CDT" => Some(-5),
        "MST" => Some(-7),
        "MDT" => Some(-6),
        "PST" => Some(-8),
        "PDT" => Some(-7),
        _ => None,
    };
    if let Some(hours) = named {
        return Some(hours * 3600);
    }
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = digits.parse().ok()?;
    Some(sign * ((value / 100) * 3600 + (value % 100) * 60))
}

/// Parses an RFC 2822 date as found in Release and meta-release files.
pub fn parse(text: &str) -> Option<Timestamp> {
    let mut words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    if words.is_empty() {
        return None;
    }
    // An optional day name, with or without its comma.
    let first = words[0].to_ascii_lowercase();
    if first.ends_with(',') || DAYS.iter().any(|d| first.starts_with(d)) {
        if let Some(i) = words[0].rfind(',') {
            let rest = words[0][i + 1..].to_owned();
            if rest.is_empty() {
                words.remove(0);
            } else {
                words[0] = rest;
            }
        } else {
            words.remove(0);
        }
    }
    // "10 Jun 2023 08:54:12+0000": split a zone glued to the time.
    if words.len() == 4 {
        let time = words[3].clone();
        if let Some(i) = time.rfind(['+', '-']).filter(|&i| i > 0) {
            words[3] = time[..i].to_owned();
            words.push(time[i..].to_owned());
        } else {
            words.push(String::new());
        }
    }
    if words.len() < 5 {
        return None;
    }
    let (mut day, mut month) = (words[0].as_str(), words[1].as_str());
    if month_number(month).is_none() {
        std::mem::swap(&mut day, &mut month);
    }
    let month = month_number(month)?;
    let day: u32 = day.trim_end_matches(',').parse().ok()?;
    let mut year: i32 = words[2].trim_end_matches(',').parse().ok()?;
    if words[2].len() <= 2 {
        // Two-digit years, as RFC 2822 §4.3 reads them.
        year += if year < 50 { 2000 } else { 1900 };
    }
    let mut clock = words[3].split(':');
    let hour: u32 = clock.next()?.parse().ok()?;
    let minute: u32 = clock.next()?.parse().ok()?;
    let second: u32 = match clock.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    if clock.next().is_some() {
        return None;
    }
    let offset = zone_offset(&words[4])?;
    let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second)?;
    Some(naive.and_utc().timestamp() - offset)
}

/// Formats a timestamp the way Debian's archive writes `Date:` and `Valid-Until:`.
pub fn format(ts: Timestamp) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map(|d| d.format("%a, %d %b %Y %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("@{ts}"))
}

/// The current time.
pub fn now() -> Timestamp {
    Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_release_dates_parse() {
        assert_eq!(parse("Sat, 10 Jun 2023 08:54:12 UTC"), Some(1686387252));
        assert_eq!(parse("Sat, 10 Jun 2023 08:54:12 +0000"), Some(1686387252));
        assert_eq!(parse("Sat, 10 Jun 2023 10:54:12 +0200"), Some(1686387252));
        assert_eq!(parse("10 Jun 2023 08:54:12 GMT"), Some(1686387252));
    }

    #[test]
    fn ubuntu_meta_release_oddities_parse() {
        // One-digit hour (dapper) and a full month name (xenial).
        assert_eq!(
            parse("Thu, 01 Jun 2006 9:00:00 UTC"),
            parse("Thu, 01 Jun 2006 09:00:00 UTC")
        );
        assert_eq!(
            parse("Thu, 21 April 2016 16:04:00 UTC"),
            parse("Thu, 21 Apr 2016 16:04:00 UTC")
        );
        assert!(
            parse("Thu, 19 Apr 2007 13:00:00 +0200").unwrap()
                < parse("Thu, 19 Apr 2007 13:00:00 UTC").unwrap()
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "yesterday",
            "Thu, 32 Jun 2006 09:00:00 UTC",
            "Thu, 01 Foo 2006 09:00:00 UTC",
            "Thu, 01 Jun 2006 25:00:00 UTC",
            "Thu, 01 Jun 2006 09:00:00 +02",
            "Thu, 01 Jun 2006 09:00:00:00 UTC",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        let ts = 1686387252;
        assert_eq!(format(ts), "Sat, 10 Jun 2023 08:54:12 UTC");
        assert_eq!(parse(&format(ts)), Some(ts));
    }
}
