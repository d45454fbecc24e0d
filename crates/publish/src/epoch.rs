//! `SOURCE_DATE_EPOCH`: the one reading of the reproducible-builds time stamp for every
//! artifact the publisher writes (helper debs, images, keyrings, deltas, indexes). A value
//! that is set but not a number is refused, never ignored: a silently ignored value gives
//! an output that differs from build to build while the caller believes it reproducible.

use crate::error::Error;

/// The environment variable (<https://reproducible-builds.org/specs/source-date-epoch/>).
pub const VAR: &str = "SOURCE_DATE_EPOCH";

/// Parses a `SOURCE_DATE_EPOCH` value: blank means unset, else a whole number of
/// seconds since the epoch.
pub fn parse(text: &str) -> Result<Option<i64>, Error> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    trimmed.parse::<i64>().map(Some).map_err(|_| Error::Config {
        path: VAR.into(),
        reason: format!(
            "{text:?} is not a number of seconds since 1970-01-01 UTC; set it to one \
             (e.g. `git log -1 --format=%ct`) or unset it"
        ),
    })
}

/// `SOURCE_DATE_EPOCH` from the environment (`None`: unset or blank).
pub fn from_env() -> Result<Option<i64>, Error> {
    match std::env::var(VAR) {
        Ok(text) => parse(&text),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(raw)) => Err(Error::Config {
            path: VAR.into(),
            reason: format!("{raw:?} is not a number of seconds; set it to one or unset it"),
        }),
    }
}

/// The time stamp of members the publisher generates: `SOURCE_DATE_EPOCH`, else now.
pub fn generated_mtime() -> Result<i64, Error> {
    Ok(from_env()?.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_of_seconds_is_read() {
        assert_eq!(parse("1700000000").unwrap(), Some(1_700_000_000));
        assert_eq!(parse(" 42\n").unwrap(), Some(42));
    }

    #[test]
    fn a_blank_value_means_unset() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("  ").unwrap(), None);
    }

    #[test]
    fn a_value_that_is_not_a_number_is_refused_with_a_hint() {
        for bad in ["yesterday", "1.5", "17e8", "0x10"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("SOURCE_DATE_EPOCH"), "{err}");
            assert!(err.contains("not a number of seconds"), "{err}");
            assert!(err.contains("unset it"), "{err}");
        }
    }
}
