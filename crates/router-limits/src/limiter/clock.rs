//! The limiter's time source: one clock for both kinds of window.
//!
//! Rolling windows (second, minute, hour) need a monotonic clock; calendar
//! windows (UTC day and month) need the wall-clock date. governor's
//! [`governor::clock::Clock`] only gives the first, so the limiter asks this
//! small trait for both, and [`ManualClock`] derives both from one fake
//! counter: a test that advances it moves rolling windows and the calendar
//! together, and never sleeps. Both implementations are built on governor's
//! clocks (its monotonic clock and its fake relative clock).

use std::fmt;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, FakeRelativeClock, MonotonicClock};
use time::OffsetDateTime;

/// Where the limiter reads the time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Nanoseconds on a monotonic clock, from an origin of the clock's
    /// choosing (never before the limiter was built).
    fn monotonic_nanos(&self) -> u64;

    /// The current UTC date and time, for calendar days and months.
    fn utc_now(&self) -> OffsetDateTime;
}

/// The real clocks: the monotonic clock for rolling windows, the system's
/// wall clock for calendar windows.
///
/// The two are read separately, so a step of the wall clock (NTP, a manual
/// change) moves calendar periods and nothing else; the limiter never lets
/// a calendar period go backwards.
#[derive(Debug, Clone)]
pub struct SystemClock {
    monotonic: MonotonicClock,
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        let monotonic = MonotonicClock;
        let origin = monotonic.now();
        Self { monotonic, origin }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic_nanos(&self) -> u64 {
        let elapsed = self.monotonic.now().duration_since(self.origin);
        // u64 nanoseconds last 584 years of uptime.
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    fn utc_now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to, for tests. Clones share the time.
///
/// The UTC time is the start time plus the monotonic time, so advancing it
/// past midnight starts a new calendar day for the limiter.
#[derive(Debug, Clone)]
pub struct ManualClock {
    elapsed: FakeRelativeClock,
    utc_start: OffsetDateTime,
}

impl ManualClock {
    /// A clock whose UTC time is `utc_start` (converted to UTC) and whose
    /// monotonic time is zero.
    pub fn new(utc_start: OffsetDateTime) -> Self {
        Self {
            elapsed: FakeRelativeClock::default(),
            utc_start: utc_start.to_offset(time::UtcOffset::UTC),
        }
    }

    /// Moves both times forward.
    pub fn advance(&self, by: Duration) {
        self.elapsed.advance(by);
    }
}

impl Clock for ManualClock {
    fn monotonic_nanos(&self) -> u64 {
        self.elapsed.now().as_u64()
    }

    fn utc_now(&self) -> OffsetDateTime {
        self.utc_start + Duration::from_nanos(self.monotonic_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn manual_clock_moves_both_times_and_clones_share_them() {
        let clock = ManualClock::new(datetime!(2025-03-31 23:59:59 UTC));
        let shared = clock.clone();
        assert_eq!(clock.monotonic_nanos(), 0);
        shared.advance(Duration::from_millis(1500));
        assert_eq!(clock.monotonic_nanos(), 1_500_000_000);
        assert_eq!(clock.utc_now(), datetime!(2025-04-01 00:00:00.5 UTC));
    }

    #[test]
    fn manual_clock_keeps_utc_whatever_the_offset_given() {
        let clock = ManualClock::new(datetime!(2025-01-01 01:00 +02:00));
        assert_eq!(clock.utc_now(), datetime!(2024-12-31 23:00 UTC));
    }

    #[test]
    fn system_clock_starts_near_zero_and_never_goes_back() {
        let clock = SystemClock::new();
        let first = clock.monotonic_nanos();
        let second = clock.monotonic_nanos();
        assert!(second >= first);
        assert!(first < 60_000_000_000);
    }
}
