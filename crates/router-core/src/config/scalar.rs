//! Scalars whose text format the seed inherited from Go: durations
//! (`time.ParseDuration`) and YAML timestamps (what yaml.v3 accepts for a
//! `time.Time`). serde_yaml resolves neither, so both arrive as strings.

use std::time::Duration;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// What a duration must look like, for error messages.
pub(super) const DURATION_FORMAT: &str =
    "a duration such as `10s`, `1m30s` or `500ms` (units: ns, us, ms, s, m, h)";

/// What a timestamp must look like, for error messages.
pub(super) const TIMESTAMP_FORMAT: &str =
    "a timestamp such as `2025-12-31T23:59:59Z`, `2025-12-31 23:59:59` or `2025-12-31`";

/// Why a duration was refused; the caller adds the path and the expected format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum DurationError {
    #[error("expected {DURATION_FORMAT}")]
    Syntax,
    #[error("must not be negative")]
    Negative,
    #[error("is too long (at most about 292 years)")]
    TooLong,
}

/// Parses a Go duration string (`1h30m`, `1.5s`, `500ms`, `0`).
///
/// Go's grammar is kept exactly so that every seed file still loads, except
/// that negative durations are refused: no timeout of ours means anything
/// below zero.
pub(super) fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    // Go accepts a bare `0` (and only zero) without a unit.
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Syntax);
    }
    // Go caps durations at i64::MAX nanoseconds; so do we, for the same files
    // to mean the same thing.
    const MAX_NANOS: u128 = i64::MAX as u128;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(DurationError::Syntax);
        }
        let unit_len = rest
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit_nanos: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DurationError::Syntax),
        };
        rest = &rest[unit_len..];
        let whole = digits_value(int_digits).ok_or(DurationError::TooLong)?;
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or(DurationError::TooLong)?;
        // Like Go, fractional digits beyond the unit's precision are dropped;
        // capping their count keeps the arithmetic in range.
        let frac_digits = &frac_digits[..frac_digits.len().min(18)];
        if !frac_digits.is_empty() {
            let scale = 10u128.pow(u32::try_from(frac_digits.len()).unwrap_or(18));
            let frac = digits_value(frac_digits).ok_or(DurationError::TooLong)?;
            nanos += frac * unit_nanos / scale;
        }
        total = total.checked_add(nanos).ok_or(DurationError::TooLong)?;
        if total > MAX_NANOS {
            return Err(DurationError::TooLong);
        }
    }
    if negative && total > 0 {
        return Err(DurationError::Negative);
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::TooLong)?;
    let subsec = u32::try_from(total % 1_000_000_000).map_err(|_| DurationError::TooLong)?;
    Ok(Duration::new(secs, subsec))
}

/// The value of a run of ASCII digits; `None` on overflow. Empty is zero.
fn digits_value(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |acc, digit| {
        acc.checked_mul(10)?.checked_add(u128::from(digit - b'0'))
    })
}

/// Parses a YAML 1.1 timestamp, the forms yaml.v3 turned into a `time.Time`
/// for the seed: `2025-12-31`, `2025-12-31T23:59:59Z`, `2025-12-31 23:59:59.5`,
/// `2025-12-31t23:59:59+02:00`, `2001-12-14 21:59:43.10 -5`. Without a zone
/// the time is UTC, as in yaml.v3.
pub(super) fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    let mut cursor = Cursor(text.trim());
    let year = cursor.number(4, 4)?;
    cursor.expect('-')?;
    let month = cursor.number(1, 2)?;
    cursor.expect('-')?;
    let day = cursor.number(1, 2)?;
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    if cursor.0.is_empty() {
        return Some(date.midnight().assume_utc());
    }

    if !(cursor.eat('T') || cursor.eat('t') || cursor.spaces()) {
        return None;
    }
    let hour = cursor.number(1, 2)?;
    cursor.expect(':')?;
    let minute = cursor.number(2, 2)?;
    cursor.expect(':')?;
    let second = cursor.number(2, 2)?;
    let mut nanos = 0u32;
    if cursor.eat('.') {
        let digits = cursor.digits();
        if digits.is_empty() {
            return None;
        }
        // Pad or cut to nanoseconds: `.1` is 100ms, digits past the ninth are dropped.
        for position in 0..9 {
            let digit = digits.as_bytes().get(position).map_or(0, |d| d - b'0');
            nanos = nanos * 10 + u32::from(digit);
        }
    }
    let time = Time::from_hms_nano(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    let local = PrimitiveDateTime::new(date, time);

    cursor.spaces();
    if cursor.0.is_empty() || cursor.eat('Z') || cursor.eat('z') {
        return cursor.0.is_empty().then(|| local.assume_utc());
    }
    let sign: i8 = if cursor.eat('+') {
        1
    } else if cursor.eat('-') {
        -1
    } else {
        return None;
    };
    let offset_hours = cursor.number(1, 2)?;
    let offset_minutes = if cursor.eat(':') {
        cursor.number(2, 2)?
    } else if cursor.0.is_empty() {
        0
    } else {
        cursor.number(2, 2)?
    };
    if !cursor.0.is_empty() {
        return None;
    }
    let offset = UtcOffset::from_hms(
        sign * i8::try_from(offset_hours).ok()?,
        sign * i8::try_from(offset_minutes).ok()?,
        0,
    )
    .ok()?;
    Some(local.assume_offset(offset))
}

/// A tiny left-to-right reader over the timestamp text.
struct Cursor<'a>(&'a str);

impl Cursor<'_> {
    fn eat(&mut self, expected: char) -> bool {
        match self.0.strip_prefix(expected) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, expected: char) -> Option<()> {
        self.eat(expected).then_some(())
    }

    /// Skips spaces and tabs; true if there was at least one.
    fn spaces(&mut self) -> bool {
        let rest = self.0.trim_start_matches([' ', '\t']);
        let skipped = rest.len() < self.0.len();
        self.0 = rest;
        skipped
    }

    fn digits(&mut self) -> &str {
        let len = self.0.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, rest) = self.0.split_at(len);
        self.0 = rest;
        digits
    }

    /// At least `min` and at most `max` ASCII digits as a number; the caller
    /// checks what follows, so `+0530` reads as hours `05` then minutes `30`.
    fn number(&mut self, min: usize, max: usize) -> Option<u32> {
        let len = self
            .0
            .bytes()
            .take(max)
            .take_while(u8::is_ascii_digit)
            .count();
        if len < min {
            return None;
        }
        let (digits, rest) = self.0.split_at(len);
        self.0 = rest;
        digits.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn check_duration(input: &str, expected: Result<Duration, DurationError>) {
        assert_eq!(parse_go_duration(input), expected, "input: {input:?}");
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        check_duration("10s", Ok(secs(10)));
        check_duration("1m", Ok(secs(60)));
        check_duration("1m30s", Ok(secs(90)));
        check_duration("1h2m3s", Ok(secs(3723)));
        check_duration("500ms", Ok(ms(500)));
        check_duration("1.5s", Ok(ms(1500)));
        check_duration(".5s", Ok(ms(500)));
        check_duration("1.s", Ok(secs(1)));
        check_duration("2h", Ok(secs(7200)));
        check_duration("30m", Ok(secs(1800)));
        check_duration("7ns", Ok(Duration::from_nanos(7)));
        check_duration("3us", Ok(Duration::from_micros(3)));
        check_duration("3\u{b5}s", Ok(Duration::from_micros(3)));
        check_duration("3\u{3bc}s", Ok(Duration::from_micros(3)));
        check_duration("0", Ok(Duration::ZERO));
        check_duration("+5s", Ok(secs(5)));
        check_duration("-0s", Ok(Duration::ZERO));
        check_duration("1.0000000001s", Ok(secs(1)));
        check_duration("2562047h", Ok(secs(2_562_047 * 3600)));
    }

    #[test]
    fn go_duration_errors() {
        check_duration("", Err(DurationError::Syntax));
        check_duration("10", Err(DurationError::Syntax));
        check_duration("s", Err(DurationError::Syntax));
        check_duration(".s", Err(DurationError::Syntax));
        check_duration("10 s", Err(DurationError::Syntax));
        check_duration("10sec", Err(DurationError::Syntax));
        check_duration("1d", Err(DurationError::Syntax));
        check_duration("10S", Err(DurationError::Syntax));
        check_duration("-", Err(DurationError::Syntax));
        check_duration("-5s", Err(DurationError::Negative));
        check_duration("2562048h", Err(DurationError::TooLong));
        check_duration(
            "99999999999999999999999999999999999999999h",
            Err(DurationError::TooLong),
        );
    }

    fn check_timestamp(input: &str, expected: Option<OffsetDateTime>) {
        assert_eq!(parse_timestamp(input), expected, "input: {input:?}");
    }

    #[test]
    fn yaml_timestamps() {
        check_timestamp("2025-12-31", Some(datetime!(2025-12-31 0:00 UTC)));
        check_timestamp("2025-1-2", Some(datetime!(2025-01-02 0:00 UTC)));
        check_timestamp(
            "2025-12-31T23:59:59Z",
            Some(datetime!(2025-12-31 23:59:59 UTC)),
        );
        check_timestamp(
            "2025-12-31t23:59:59z",
            Some(datetime!(2025-12-31 23:59:59 UTC)),
        );
        check_timestamp(
            "2025-12-31 23:59:59",
            Some(datetime!(2025-12-31 23:59:59 UTC)),
        );
        check_timestamp(
            "2025-12-31T23:59:59.5+02:00",
            Some(datetime!(2025-12-31 23:59:59.5 +2)),
        );
        check_timestamp(
            "2001-12-14 21:59:43.10 -5",
            Some(datetime!(2001-12-14 21:59:43.1 -5)),
        );
        check_timestamp(
            "2001-12-14T21:59:43.123456789123-05:30",
            Some(datetime!(2001-12-14 21:59:43.123456789 -5:30)),
        );
        check_timestamp(
            "2001-12-14T21:59:43+0530",
            Some(datetime!(2001-12-14 21:59:43 +5:30)),
        );
    }

    #[test]
    fn yaml_timestamp_errors() {
        for input in [
            "",
            "tomorrow",
            "2025-13-01",
            "2025-02-30",
            "25-12-31",
            "2025-12-31T",
            "2025-12-31T24:00:00Z",
            "2025-12-31T23:59Z",
            "2025-12-31T23:59:59.Z",
            "2025-12-31T23:59:59Q",
            "2025-12-31T23:59:59+",
            "2025-12-31T23:59:59Z extra",
            "2025-12-31x",
        ] {
            check_timestamp(input, None);
        }
    }
}
