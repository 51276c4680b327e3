//! How the ledger's values look in SQLite, both ways.
//!
//! The stored forms are the ledger's own and must stay stable across
//! releases (old files are read by new routers), so they are spelled out
//! here rather than borrowed from a `Display` impl elsewhere.

use std::time::Duration;

use router_core::limits::{LimitName, Measure, Scope, Window};
use router_core::usage::{Outcome, UsageSource};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::StoreError;

/// The `time` column: RFC 3339 in UTC with exactly nine fraction digits,
/// `[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z`. A
/// fixed width makes the text order the time order, so range filters and
/// indexes work on the text column (RFC 3339 with trimmed fractions would
/// sort `…00.5Z` before `…00Z`). Parsed without its `Z`, which is constant.
const TIME_FORMAT_WITHOUT_ZONE: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]");
const DAY_FORMAT: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");
const MONTH_FORMAT: &[FormatItem<'static>] = format_description!("[year]-[month]");

/// The `time` column's text for an instant. Written by hand rather than with
/// a format description (or `format!`): the writer formats every row, and
/// this is several times faster than either.
pub(crate) fn time_text(time: OffsetDateTime) -> String {
    let utc = time.to_offset(UtcOffset::UTC);
    let (year, month, day) = utc.to_calendar_date();
    let (hour, minute, second, nanosecond) = utc.to_hms_nano();
    if let Ok(year) = u32::try_from(year) {
        if year <= 9999 {
            let mut text = String::with_capacity(30);
            push_digits(&mut text, year, 4);
            text.push('-');
            push_digits(&mut text, u32::from(u8::from(month)), 2);
            text.push('-');
            push_digits(&mut text, u32::from(day), 2);
            text.push('T');
            push_digits(&mut text, u32::from(hour), 2);
            text.push(':');
            push_digits(&mut text, u32::from(minute), 2);
            text.push(':');
            push_digits(&mut text, u32::from(second), 2);
            text.push('.');
            push_digits(&mut text, nanosecond, 9);
            text.push('Z');
            return text;
        }
    }
    // Years outside 0..=9999 (the `time` crate's wider range): the rare path.
    format!(
        "{year:04}-{:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanosecond:09}Z",
        u8::from(month)
    )
}

/// The last `width` decimal digits of `value`, zero-padded.
fn push_digits(text: &mut String, value: u32, width: u32) {
    let mut divisor = 10u32.pow(width - 1);
    while divisor > 0 {
        text.push(char::from(b'0' + (value / divisor % 10) as u8));
        divisor /= 10;
    }
}

/// The `day` column: the date part of a [`time_text`].
pub(crate) fn day_of_time_text(time_text: &str) -> &str {
    time_text.get(..10).unwrap_or(time_text)
}

pub(crate) fn parse_time(text: &str) -> Result<OffsetDateTime, StoreError> {
    let without_zone = text.strip_suffix('Z').unwrap_or(text);
    PrimitiveDateTime::parse(without_zone, TIME_FORMAT_WITHOUT_ZONE)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| corrupt("time", text))
}

/// The UTC calendar day of an instant, `YYYY-MM-DD`.
pub fn day_period(time: OffsetDateTime) -> String {
    let utc = time.to_offset(UtcOffset::UTC);
    utc.format(DAY_FORMAT)
        .unwrap_or_else(|_| utc.date().to_string())
}

/// The UTC calendar month of an instant, `YYYY-MM`.
pub fn month_period(time: OffsetDateTime) -> String {
    let utc = time.to_offset(UtcOffset::UTC);
    utc.format(MONTH_FORMAT)
        .unwrap_or_else(|_| format!("{}-{:02}", utc.year(), u8::from(utc.month())))
}

/// Ids are `u64` and SQLite integers are `i64`: ids are stored as the `i64`
/// with the same bits, so every id (hash-derived ones included) round-trips.
pub(crate) fn id_to_sql(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

pub(crate) fn id_from_sql(id: i64) -> u64 {
    u64::from_ne_bytes(id.to_ne_bytes())
}

/// Counts above `i64::MAX` cannot happen in practice; saturating keeps a
/// row writable instead of failing its whole batch.
pub(crate) fn count_to_sql(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(crate) fn count_from_sql(column: &'static str, count: i64) -> Result<u64, StoreError> {
    u64::try_from(count).map_err(|_| corrupt(column, &count.to_string()))
}

pub(crate) fn index_to_sql(index: Option<usize>) -> Option<i64> {
    index.map(|index| i64::try_from(index).unwrap_or(i64::MAX))
}

pub(crate) fn index_from_sql(
    column: &'static str,
    index: Option<i64>,
) -> Result<Option<usize>, StoreError> {
    index
        .map(|index| usize::try_from(index).map_err(|_| corrupt(column, &index.to_string())))
        .transpose()
}

/// Durations are stored in milliseconds (what people query), as REAL.
pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The inverse of [`millis`], exact to the nanosecond for any latency below
/// about thirteen days: the product lands within a rounding error of the
/// original nanosecond count.
pub(crate) fn duration_from_millis(
    column: &'static str,
    milliseconds: f64,
) -> Result<Duration, StoreError> {
    let nanos = (milliseconds * 1_000_000.0).round();
    if !(0.0..=u64::MAX as f64).contains(&nanos) {
        return Err(corrupt(column, &milliseconds.to_string()));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

pub(crate) fn outcome_text(outcome: Outcome) -> &'static str {
    outcome.as_str()
}

pub(crate) fn parse_outcome(text: &str) -> Result<Outcome, StoreError> {
    [
        Outcome::Ok,
        Outcome::Invalid,
        Outcome::Refused,
        Outcome::UpstreamFailed,
        Outcome::StreamFailed,
        Outcome::ClientGone,
    ]
    .into_iter()
    .find(|outcome| outcome.as_str() == text)
    .ok_or_else(|| corrupt("outcome", text))
}

pub(crate) fn source_text(source: UsageSource) -> &'static str {
    source.as_str()
}

pub(crate) fn parse_source(text: &str) -> Result<UsageSource, StoreError> {
    [
        UsageSource::Upstream,
        UsageSource::Estimated,
        UsageSource::None,
    ]
    .into_iter()
    .find(|source| source.as_str() == text)
    .ok_or_else(|| corrupt("source", text))
}

/// A limit as `scope:measure:window`, e.g. `key:requests:minute`: readable
/// in ad-hoc SQL and unambiguous to parse back.
pub(crate) fn limit_text(name: LimitName) -> String {
    let scope = match name.scope {
        Scope::Key => "key",
        Scope::Model => "model",
    };
    let measure = match name.measure {
        Measure::Requests => "requests",
        Measure::Tokens => "tokens",
        Measure::Cost => "cost",
    };
    let window = match name.window {
        Window::Second => "second",
        Window::Minute => "minute",
        Window::Hour => "hour",
        Window::Day => "day",
        Window::Month => "month",
    };
    format!("{scope}:{measure}:{window}")
}

pub(crate) fn parse_limit(text: &str) -> Result<LimitName, StoreError> {
    let mut parts = text.split(':');
    let (Some(scope), Some(measure), Some(window), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt("refused_by", text));
    };
    let scope = match scope {
        "key" => Scope::Key,
        "model" => Scope::Model,
        _ => return Err(corrupt("refused_by", text)),
    };
    let measure = match measure {
        "requests" => Measure::Requests,
        "tokens" => Measure::Tokens,
        "cost" => Measure::Cost,
        _ => return Err(corrupt("refused_by", text)),
    };
    let window = match window {
        "second" => Window::Second,
        "minute" => Window::Minute,
        "hour" => Window::Hour,
        "day" => Window::Day,
        "month" => Window::Month,
        _ => return Err(corrupt("refused_by", text)),
    };
    Ok(LimitName {
        scope,
        measure,
        window,
    })
}

fn corrupt(column: &'static str, value: &str) -> StoreError {
    StoreError::Corrupt {
        column,
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn time_text_sorts_like_time_and_round_trips() {
        let earlier = datetime!(2025-03-01 23:59:59 UTC);
        let later = datetime!(2025-03-01 23:59:59.5 UTC);
        assert_eq!(time_text(earlier), "2025-03-01T23:59:59.000000000Z");
        assert_eq!(day_of_time_text(&time_text(earlier)), "2025-03-01");
        assert_eq!(
            time_text(datetime!(0987-01-02 03:04:05.000000006 UTC)),
            "0987-01-02T03:04:05.000000006Z"
        );
        assert!(time_text(earlier) < time_text(later));
        let shifted = datetime!(2025-03-02 01:00:00.123456789 +02:00);
        assert_eq!(time_text(shifted), "2025-03-01T23:00:00.123456789Z");
        assert_eq!(parse_time(&time_text(shifted)).ok(), Some(shifted));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn periods_are_utc() {
        let time = datetime!(2025-03-01 01:00 +03:00);
        assert_eq!(day_period(time), "2025-02-28");
        assert_eq!(month_period(time), "2025-02");
    }

    #[test]
    fn ids_keep_every_bit() {
        for id in [0, 1, i64::MAX as u64, u64::MAX, 1 << 63] {
            assert_eq!(id_from_sql(id_to_sql(id)), id);
        }
    }

    #[test]
    fn durations_round_trip_to_the_nanosecond() {
        for nanos in [
            0,
            1,
            999,
            1_234_567,
            86_400_000_000_123,
            1_000_000_000_000_001,
        ] {
            let duration = Duration::from_nanos(nanos);
            assert_eq!(
                duration_from_millis("latency_ms", millis(duration)).ok(),
                Some(duration)
            );
        }
        assert!(duration_from_millis("latency_ms", -1.0).is_err());
        assert!(duration_from_millis("latency_ms", f64::NAN).is_err());
    }

    #[test]
    fn limits_round_trip() {
        let scopes = [Scope::Key, Scope::Model];
        let measures = [Measure::Requests, Measure::Tokens, Measure::Cost];
        let windows = [
            Window::Second,
            Window::Minute,
            Window::Hour,
            Window::Day,
            Window::Month,
        ];
        for scope in scopes {
            for measure in measures {
                for window in windows {
                    let name = LimitName {
                        scope,
                        measure,
                        window,
                    };
                    assert_eq!(parse_limit(&limit_text(name)).ok(), Some(name));
                }
            }
        }
        assert!(parse_limit("key rpm").is_err());
        assert!(parse_limit("key:requests:minute:extra").is_err());
    }

    #[test]
    fn closed_sets_round_trip() {
        for outcome in [
            Outcome::Ok,
            Outcome::Invalid,
            Outcome::Refused,
            Outcome::UpstreamFailed,
            Outcome::StreamFailed,
            Outcome::ClientGone,
        ] {
            assert_eq!(parse_outcome(outcome_text(outcome)).ok(), Some(outcome));
        }
        for source in [
            UsageSource::Upstream,
            UsageSource::Estimated,
            UsageSource::None,
        ] {
            assert_eq!(parse_source(source_text(source)).ok(), Some(source));
        }
        assert!(parse_outcome("fine").is_err());
    }
}
