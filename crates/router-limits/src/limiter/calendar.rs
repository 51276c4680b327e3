//! Calendar windows (UTC day, UTC month): a counter per period that starts
//! again at zero when the period changes.

use std::sync::Arc;
use std::time::Duration;

use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

use super::Denial;

const SECONDS_PER_DAY: i64 = 86_400;

/// The calendar a limit counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Calendar {
    Day,
    Month,
}

/// One calendar-window limit: what it allows, fixed at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CalendarLimit {
    pub limit: u64,
    pub calendar: Calendar,
}

/// A limit's count in one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeriodCount {
    /// Days since 1970-01-01, or months since January of year 0.
    pub period: i64,
    /// The period as the store names it (`YYYY-MM-DD` or `YYYY-MM`), kept
    /// so that reporting a change does not format a date each time.
    pub label: Arc<str>,
    pub value: u64,
}

/// The current time as calendar windows need it, the periods worked out
/// once per admission rather than once per limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CalendarNow {
    pub utc: OffsetDateTime,
    day: i64,
    month: i64,
}

impl CalendarNow {
    pub fn new(utc: OffsetDateTime) -> Self {
        Self {
            utc,
            day: Calendar::Day.period(utc),
            month: Calendar::Month.period(utc),
        }
    }

    pub fn period(&self, calendar: Calendar) -> i64 {
        match calendar {
            Calendar::Day => self.day,
            Calendar::Month => self.month,
        }
    }
}

impl Calendar {
    /// The period `utc` falls in.
    pub fn period(self, utc: OffsetDateTime) -> i64 {
        let utc = utc.to_offset(UtcOffset::UTC);
        match self {
            Self::Day => utc.unix_timestamp().div_euclid(SECONDS_PER_DAY),
            Self::Month => i64::from(utc.year()) * 12 + i64::from(u8::from(utc.month())) - 1,
        }
    }

    /// How the store names `period`.
    pub fn label(self, period: i64) -> String {
        let start = self.start(period);
        match self {
            Self::Day => format!(
                "{:04}-{:02}-{:02}",
                start.year(),
                u8::from(start.month()),
                start.day()
            ),
            Self::Month => format!("{:04}-{:02}", start.year(), u8::from(start.month())),
        }
    }

    /// When `period` begins (midnight UTC). Periods outside the calendar
    /// the `time` crate knows (beyond ±9999 years) clamp to its ends.
    pub fn start(self, period: i64) -> OffsetDateTime {
        match self {
            Self::Day => {
                OffsetDateTime::from_unix_timestamp(period.saturating_mul(SECONDS_PER_DAY))
                    .unwrap_or(if period < 0 {
                        OffsetDateTime::UNIX_EPOCH.replace_date(Date::MIN)
                    } else {
                        OffsetDateTime::UNIX_EPOCH.replace_date(Date::MAX)
                    })
            }
            Self::Month => {
                let year = i32::try_from(period.div_euclid(12)).unwrap_or(i32::MAX);
                let month = u8::try_from(period.rem_euclid(12) + 1)
                    .ok()
                    .and_then(|month| Month::try_from(month).ok())
                    .unwrap_or(Month::January);
                let date = Date::from_calendar_date(year, month, 1).unwrap_or(if year < 0 {
                    Date::MIN
                } else {
                    Date::MAX
                });
                date.with_time(Time::MIDNIGHT).assume_utc()
            }
        }
    }

    /// From `utc` until the period after `period` begins. Never zero while
    /// `utc` lies in `period` or before it.
    pub fn until_next(self, period: i64, utc: OffsetDateTime) -> Duration {
        let next = self.start(period.saturating_add(1));
        Duration::try_from(next - utc).unwrap_or(Duration::ZERO)
    }
}

impl PeriodCount {
    pub fn new(calendar: Calendar, period: i64, value: u64) -> Self {
        Self {
            period,
            label: calendar.label(period).into(),
            value,
        }
    }

    /// Moves the count into the period `utc` falls in, starting at zero when
    /// that is a new one. Calendar periods only move forward: a wall clock
    /// stepped back over midnight must not give out yesterday again.
    pub fn roll(&mut self, calendar: Calendar, now: &CalendarNow) {
        let period = now.period(calendar);
        if period > self.period {
            *self = Self::new(calendar, period, 0);
        }
    }
}

impl CalendarLimit {
    /// Whether `amount` fits in the current count. Changes nothing.
    pub fn check(&self, count: &PeriodCount, amount: u64, now: &CalendarNow) -> Result<(), Denial> {
        if count.value.saturating_add(amount) <= self.limit {
            return Ok(());
        }
        Err(Denial {
            remaining: self.remaining(count),
            // Even when it never fits, the next period is the truest answer
            // (and is never zero).
            retry_after: self.calendar.until_next(count.period, now.utc),
            never_fits: amount > self.limit,
        })
    }

    pub fn remaining(&self, count: &PeriodCount) -> u64 {
        self.limit.saturating_sub(count.value)
    }

    /// Until the whole limit is available: now when nothing is used, else
    /// when the next period begins.
    pub fn reset(&self, count: &PeriodCount, now: &CalendarNow) -> Duration {
        if count.value == 0 {
            Duration::ZERO
        } else {
            self.calendar.until_next(count.period, now.utc)
        }
    }

    /// What is left and until when, without moving the count: a count of a
    /// past period reads as a fresh one.
    pub fn headroom(&self, count: &PeriodCount, now: &CalendarNow) -> (u64, Duration) {
        if now.period(self.calendar) > count.period {
            return (self.limit, Duration::ZERO);
        }
        (self.remaining(count), self.reset(count, now))
    }

    pub fn used_share(&self, count: &PeriodCount) -> f64 {
        count.value as f64 / self.limit as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn periods_and_labels() {
        let check = |calendar: Calendar, utc: OffsetDateTime, label: &str| {
            let period = calendar.period(utc);
            assert_eq!(calendar.label(period), label, "{utc}");
        };
        check(Calendar::Day, datetime!(1970-01-01 00:00 UTC), "1970-01-01");
        check(
            Calendar::Day,
            datetime!(2025-06-30 23:59:59.999 UTC),
            "2025-06-30",
        );
        check(
            Calendar::Day,
            datetime!(2025-07-01 01:30 +02:00),
            "2025-06-30",
        );
        check(Calendar::Day, datetime!(1969-12-31 12:00 UTC), "1969-12-31");
        check(Calendar::Month, datetime!(2024-02-29 23:00 UTC), "2024-02");
        check(
            Calendar::Month,
            datetime!(2024-12-31 23:59:59 UTC),
            "2024-12",
        );
        check(Calendar::Month, datetime!(2025-01-01 00:00 UTC), "2025-01");
    }

    #[test]
    fn until_the_next_period_is_exact() {
        let utc = datetime!(2025-06-30 23:59:58.25 UTC);
        let day = Calendar::Day.period(utc);
        assert_eq!(
            Calendar::Day.until_next(day, utc),
            Duration::from_millis(1750)
        );
        let month = Calendar::Month.period(utc);
        assert_eq!(
            Calendar::Month.until_next(month, utc),
            Duration::from_millis(1750)
        );
        let utc = datetime!(2024-12-15 00:00 UTC);
        assert_eq!(
            Calendar::Month.until_next(Calendar::Month.period(utc), utc),
            Duration::from_secs(17 * 86_400)
        );
    }

    #[test]
    fn counts_roll_forward_only() {
        let calendar = Calendar::Day;
        let mut count = PeriodCount::new(
            calendar,
            calendar.period(datetime!(2025-01-02 10:00 UTC)),
            7,
        );
        count.roll(calendar, &CalendarNow::new(datetime!(2025-01-02 23:59 UTC)));
        assert_eq!(count.value, 7);
        count.roll(calendar, &CalendarNow::new(datetime!(2025-01-01 23:59 UTC)));
        assert_eq!((&*count.label, count.value), ("2025-01-02", 7));
        count.roll(calendar, &CalendarNow::new(datetime!(2025-01-03 00:00 UTC)));
        assert_eq!((&*count.label, count.value), ("2025-01-03", 0));
    }

    #[test]
    fn refusals_point_at_the_next_period() {
        let limit = CalendarLimit {
            limit: 10,
            calendar: Calendar::Day,
        };
        let now = CalendarNow::new(datetime!(2025-01-02 18:00 UTC));
        let count = PeriodCount::new(Calendar::Day, now.period(Calendar::Day), 8);
        assert!(limit.check(&count, 2, &now).is_ok());
        let denial = limit.check(&count, 3, &now).unwrap_err();
        assert_eq!(
            denial,
            Denial {
                remaining: 2,
                retry_after: Duration::from_secs(6 * 3600),
                never_fits: false
            }
        );
        assert!(limit.check(&count, 11, &now).unwrap_err().never_fits);
        assert_eq!(limit.reset(&count, &now), Duration::from_secs(6 * 3600));
        // The next day, before any admission rolls the count: whole again.
        let tomorrow = CalendarNow::new(datetime!(2025-01-03 00:00 UTC));
        assert_eq!(limit.headroom(&count, &tomorrow), (10, Duration::ZERO));
    }
}
