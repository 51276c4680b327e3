//! Rolling windows (second, minute, hour) as GCRA arithmetic.
//!
//! A limit of `L` per window `W` emits one unit every `T = W / L` and admits
//! a burst of `L`. The state is the theoretical arrival time `tat`: admitting
//! `n` units at `now` moves it to `max(tat, now) + n·T`, and is allowed while
//! that stays within `W` of `now`. From empty this admits exactly `L` at once.
//!
//! `T` is rarely a whole number of nanoseconds (60 s / 7), so all times here
//! are *scaled*: nanoseconds multiplied by `L`. Then `T` is the integer `W`
//! (in nanoseconds), the window is `W·L`, and nothing is ever rounded; `u128`
//! holds the products for centuries of uptime and any `u64` limit.
//!
//! governor implements the same algorithm, but it cannot check several limits
//! before committing any of them, nor give units back; both are needed for an
//! all-or-nothing admission settled with the real usage, hence this module.

use std::time::Duration;

use super::Denial;

/// How many low-water entries a limit keeps (see [`GcraState::low_water`]).
const LOW_WATER_ENTRIES: usize = 16;

/// One rolling-window limit: what it allows, fixed at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    limit: u64,
    window_nanos: u64,
    /// Whether reservations may be refunded (tokens), which costs keeping
    /// low-water marks; request limits are never refunded.
    refundable: bool,
}

/// What a rolling-window limit remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GcraState {
    /// The theoretical arrival time, scaled.
    tat: u128,
    /// The number of the last operation (admission, charge, refund) of a
    /// refundable limit; a reservation keeps the number of its admission.
    operation: u64,
    /// For refunds: the queue's depth just before each operation, as a stack
    /// in which operation numbers and depths both increase. The first entry
    /// after a reservation's operation is then the least the queue held at
    /// any time since it (depth only falls between operations, and it is
    /// read just before each and again at the refund).
    ///
    /// That least depth is what makes a refund exact. Had a reservation
    /// asked `d` units fewer, every later `tat` would be `d·T` earlier, up
    /// to the first moment the queue would have run empty; so giving back
    /// `min(d·T, least depth since)` leaves the limit exactly as if the
    /// reservation had been what was used. Moving `tat` back by `d·T`
    /// alone would also hand back capacity that other requests have used
    /// since the queue last ran empty (a long stream settling minutes later).
    ///
    /// The stack is kept to [`LOW_WATER_ENTRIES`] by merging its top two
    /// entries into one with the later operation and the lesser depth, which
    /// can only make a refund smaller, never larger than exact.
    low_water: Vec<LowWater>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LowWater {
    operation: u64,
    depth: u128,
}

/// Where one reservation sits in a limit's history, for its refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GcraMark {
    operation: u64,
}

impl Gcra {
    pub fn new(limit: u64, window: Duration, refundable: bool) -> Self {
        // Windows are one second, minute or hour: their nanoseconds fit in u64.
        let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Self {
            limit,
            window_nanos,
            refundable,
        }
    }

    /// The window's length in nanoseconds.
    pub fn window_nanos(&self) -> u64 {
        self.window_nanos
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn scaled(&self, nanos: u64) -> u128 {
        u128::from(nanos) * u128::from(self.limit)
    }

    /// The whole window, scaled: `W·L`.
    fn capacity(&self) -> u128 {
        u128::from(self.window_nanos) * u128::from(self.limit)
    }

    /// The scaled time `amount` units take: `amount·T·L = amount·W`.
    fn cost(&self, amount: u64) -> u128 {
        u128::from(amount) * u128::from(self.window_nanos)
    }

    /// Scaled time still queued ahead of `now` (the units in use).
    fn depth(&self, state: &GcraState, now: u64) -> u128 {
        state.tat.saturating_sub(self.scaled(now))
    }

    /// Whether `amount` units fit now. Changes nothing.
    pub fn check(&self, state: &GcraState, amount: u64, now: u64) -> Result<(), Denial> {
        let depth = self.depth(state, now);
        let capacity = self.capacity();
        let wanted = self.cost(amount);
        if depth.saturating_add(wanted) <= capacity {
            return Ok(());
        }
        let never_fits = amount > self.limit;
        let retry_after = if never_fits {
            // Waiting never helps; any non-zero value will do, and the
            // window is the most truthful.
            Duration::from_nanos(self.window_nanos)
        } else {
            // It fits once `depth + wanted <= capacity`, i.e. after the
            // queue has drained by the excess: `excess / L` nanoseconds,
            // rounded up so that the answer is never early. The excess is
            // positive here, so this is never zero.
            let excess = depth.saturating_add(wanted) - capacity;
            nanos_to_duration(excess.div_ceil(u128::from(self.limit)))
        };
        Err(Denial {
            remaining: self.remaining(state, now),
            retry_after,
            never_fits,
        })
    }

    /// Takes `amount` units (after a successful [`check`](Self::check)).
    pub fn commit(&self, state: &mut GcraState, amount: u64, now: u64) -> GcraMark {
        self.charge(state, amount, now);
        GcraMark {
            operation: state.operation,
        }
    }

    /// Takes `amount` units without asking: usage that already happened
    /// (a request that used more than it reserved). The window may go over
    /// its limit; it then refuses until the excess has drained.
    pub fn charge(&self, state: &mut GcraState, amount: u64, now: u64) {
        self.note_depth(state, now);
        state.tat = state
            .tat
            .max(self.scaled(now))
            .saturating_add(self.cost(amount));
    }

    /// Gives back up to `amount` units of the reservation marked `mark`: as
    /// many as leave the limit as if the reservation had been that much
    /// smaller (see [`GcraState::low_water`]).
    pub fn refund(&self, state: &mut GcraState, mark: GcraMark, amount: u64, now: u64) {
        if !self.refundable {
            return;
        }
        let current = self.depth(state, now);
        let after = state
            .low_water
            .partition_point(|entry| entry.operation <= mark.operation);
        let least_since = state
            .low_water
            .get(after)
            .map_or(current, |entry| entry.depth.min(current));
        let back = self.cost(amount).min(least_since);
        if back == 0 {
            return;
        }
        state.tat -= back;
        // Every depth since the reservation is `back` less, as if it had
        // been smaller; none goes below zero, as `back` is at most the
        // least of them.
        for entry in &mut state.low_water[after..] {
            entry.depth -= back;
        }
        // Earlier entries deeper than the first lowered one no longer mark
        // a low point for the reservations before them.
        let mut after = after;
        while after > 0
            && after < state.low_water.len()
            && state.low_water[after - 1].depth > state.low_water[after].depth
        {
            state.low_water.remove(after - 1);
            after -= 1;
        }
        // The refund itself is a low point for reservations made before it.
        self.note_depth(state, now);
    }

    /// Starts an operation: numbers it and notes the depth just before it.
    fn note_depth(&self, state: &mut GcraState, now: u64) {
        if !self.refundable {
            return;
        }
        state.operation += 1;
        let depth = self.depth(state, now);
        let low_water = &mut state.low_water;
        while low_water.last().is_some_and(|top| top.depth >= depth) {
            low_water.pop();
        }
        if low_water.len() >= LOW_WATER_ENTRIES {
            // Merge the top two: the later operation with the lesser depth.
            if let Some(top) = low_water.pop() {
                if let Some(below) = low_water.last_mut() {
                    below.operation = top.operation;
                }
            }
        }
        low_water.push(LowWater {
            operation: state.operation,
            depth,
        });
    }

    /// Units that would be admitted now.
    pub fn remaining(&self, state: &GcraState, now: u64) -> u64 {
        let free = self.capacity().saturating_sub(self.depth(state, now));
        let units = free / u128::from(self.window_nanos);
        u64::try_from(units).unwrap_or(u64::MAX)
    }

    /// Until the window is empty (the whole limit available).
    pub fn reset(&self, state: &GcraState, now: u64) -> Duration {
        nanos_to_duration(self.depth(state, now).div_ceil(u128::from(self.limit)))
    }

    /// The share of the window in use, for picking the tightest limit
    /// (approximate: only compared, never reported).
    pub fn used_share(&self, state: &GcraState, now: u64) -> f64 {
        self.depth(state, now) as f64 / self.capacity() as f64
    }
}

fn nanos_to_duration(nanos: u128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const MINUTE: u64 = 60 * SECOND;

    fn per_minute(limit: u64) -> Gcra {
        Gcra::new(limit, Duration::from_secs(60), true)
    }

    /// Admits `amount` if it fits, as the limiter does.
    fn take(gcra: &Gcra, state: &mut GcraState, amount: u64, now: u64) -> Option<GcraMark> {
        gcra.check(state, amount, now).ok()?;
        Some(gcra.commit(state, amount, now))
    }

    fn burst(gcra: &Gcra, state: &mut GcraState, now: u64) -> u64 {
        let mut admitted = 0;
        while take(gcra, state, 1, now).is_some() {
            admitted += 1;
        }
        admitted
    }

    #[test]
    fn a_burst_of_exactly_the_limit_from_empty() {
        for limit in [1, 2, 7, 50, 1000] {
            let gcra = per_minute(limit);
            let mut state = GcraState::default();
            assert_eq!(burst(&gcra, &mut state, 5 * SECOND), limit, "limit {limit}");
        }
    }

    #[test]
    fn capacity_comes_back_at_the_emission_rate() {
        // 7 per minute: one unit every 60/7 s, which is no whole number of
        // nanoseconds; the scaled arithmetic keeps it exact.
        let gcra = per_minute(7);
        let mut state = GcraState::default();
        assert_eq!(burst(&gcra, &mut state, 0), 7);
        let denial = gcra.check(&state, 1, 0).unwrap_err();
        // 60/7 s = 8_571_428_571.43 ns, rounded up.
        assert_eq!(denial.retry_after, Duration::from_nanos(8_571_428_572));
        assert_eq!(denial.remaining, 0);
        assert!(!denial.never_fits);
        assert!(gcra.check(&state, 1, 8_571_428_571).is_err());
        assert_eq!(burst(&gcra, &mut state, 8_571_428_572), 1);
        // That unit is queued until 68.57 s; then the whole limit is back.
        assert_eq!(gcra.remaining(&state, MINUTE + 8_571_428_571), 6);
        assert_eq!(burst(&gcra, &mut state, MINUTE + 8_571_428_572), 7);
    }

    #[test]
    fn retry_after_is_when_the_demand_fits() {
        let gcra = per_minute(100);
        let mut state = GcraState::default();
        take(&gcra, &mut state, 90, 0).unwrap();
        // 30 more need 20 to drain: 20 × 0.6 s.
        let denial = gcra.check(&state, 30, 0).unwrap_err();
        assert_eq!(denial.retry_after, Duration::from_secs(12));
        assert_eq!(denial.remaining, 10);
        assert!(gcra.check(&state, 30, 12 * SECOND - 1).is_err());
        assert!(gcra.check(&state, 30, 12 * SECOND).is_ok());
    }

    #[test]
    fn a_demand_above_the_limit_never_fits() {
        let gcra = per_minute(100);
        let state = GcraState::default();
        let denial = gcra.check(&state, 101, 0).unwrap_err();
        assert!(denial.never_fits);
        assert_eq!(denial.remaining, 100);
        assert!(!denial.retry_after.is_zero());
        assert!(gcra.check(&state, 100, 0).is_ok());
    }

    #[test]
    fn refunds_give_back_what_was_not_used() {
        let gcra = per_minute(100);
        let mut state = GcraState::default();
        let mark = take(&gcra, &mut state, 100, 0).unwrap();
        // Used 40 of 100 right away: 60 come back.
        gcra.refund(&mut state, mark, 60, 0);
        assert_eq!(gcra.remaining(&state, 0), 60);
    }

    #[test]
    fn refunds_never_return_capacity_used_since_the_queue_ran_empty() {
        let gcra = per_minute(100);
        // A long stream: 100 reserved at 0, settled at 70 s having used
        // nothing. The queue ran empty at 60 s, and the 100 taken at 70 s
        // are someone else's: nothing may come back.
        let mut state = GcraState::default();
        let stream = take(&gcra, &mut state, 100, 0).unwrap();
        take(&gcra, &mut state, 100, 70 * SECOND).unwrap();
        gcra.refund(&mut state, stream, 100, 70 * SECOND);
        assert_eq!(gcra.remaining(&state, 70 * SECOND), 0);

        // Half drained when the next came: had the first asked for
        // nothing, the queue would have been empty at 3 s, and the 90 taken
        // then would be all that is in use.
        let mut state = GcraState::default();
        let first = take(&gcra, &mut state, 10, 0).unwrap();
        take(&gcra, &mut state, 90, 3 * SECOND).unwrap();
        assert_eq!(gcra.remaining(&state, 3 * SECOND), 5);
        gcra.refund(&mut state, first, 10, 3 * SECOND);
        assert_eq!(gcra.remaining(&state, 3 * SECOND), 10);
    }

    #[test]
    fn refunds_leave_the_limit_as_if_the_reservations_had_been_smaller() {
        let gcra = per_minute(100);
        let mut state = GcraState::default();
        let first = take(&gcra, &mut state, 10, 0).unwrap();
        let second = take(&gcra, &mut state, 10, 0).unwrap();
        let third = take(&gcra, &mut state, 10, 0).unwrap();
        gcra.refund(&mut state, first, 10, 0);
        // As if only the second and third were taken, 5 units drained.
        assert_eq!(gcra.remaining(&state, 3 * SECOND), 85);
        gcra.refund(&mut state, second, 10, 3 * SECOND);
        // As if only the third: half of it drained.
        assert_eq!(gcra.remaining(&state, 3 * SECOND), 95);
        gcra.refund(&mut state, third, 10, 3 * SECOND);
        assert_eq!(gcra.remaining(&state, 3 * SECOND), 100);
    }

    /// A small deterministic generator (xorshift), so that the comparison
    /// below covers many histories without a dependency.
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    /// Depth at `now` of a history replayed with the amounts finally used:
    /// what an exact refund must leave.
    fn replay(gcra: &Gcra, charges: &[(u64, u64)], now: u64) -> u128 {
        let mut tat = 0u128;
        for &(at, amount) in charges {
            tat = tat.max(gcra.scaled(at)) + gcra.cost(amount);
        }
        tat.saturating_sub(gcra.scaled(now))
    }

    #[test]
    fn refunds_match_a_replay_of_the_history_with_what_was_used() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        for history in 0..2000 {
            let gcra = Gcra::new(1 + random.below(200), Duration::from_secs(60), true);
            let mut state = GcraState::default();
            // (time, amount used) per admission, and its mark.
            let mut charges: Vec<(u64, u64)> = Vec::new();
            let mut marks: Vec<Option<GcraMark>> = Vec::new();
            let mut now = 0;
            // Few enough operations that low-water entries are never merged:
            // then refunds are exact, not merely never too generous.
            let operations = if history % 2 == 0 { 12 } else { 60 };
            let mut performed = 0;
            while performed < operations {
                now += random.below(20) * SECOND / 2;
                let outstanding: Vec<usize> =
                    (0..marks.len()).filter(|&i| marks[i].is_some()).collect();
                if !outstanding.is_empty() && random.below(2) == 0 {
                    let index = outstanding[random.below(outstanding.len() as u64) as usize];
                    let Some(mark) = marks[index].take() else {
                        continue;
                    };
                    let unused = random.below(charges[index].1 + 1);
                    gcra.refund(&mut state, mark, unused, now);
                    charges[index].1 -= unused;
                } else {
                    let amount = 1 + random.below(gcra.limit());
                    let Some(mark) = take(&gcra, &mut state, amount, now) else {
                        continue;
                    };
                    charges.push((now, amount));
                    marks.push(Some(mark));
                }
                performed += 1;
                let exact = replay(&gcra, &charges, now);
                let depth = gcra.depth(&state, now);
                if operations <= LOW_WATER_ENTRIES {
                    assert_eq!(depth, exact, "history {history}");
                } else {
                    assert!(depth >= exact, "history {history}: too generous");
                }
            }
        }
    }

    #[test]
    fn charges_go_over_the_limit_and_drain() {
        let gcra = per_minute(100);
        let mut state = GcraState::default();
        take(&gcra, &mut state, 100, 0).unwrap();
        gcra.charge(&mut state, 50, 0);
        assert_eq!(gcra.remaining(&state, 0), 0);
        assert_eq!(gcra.reset(&state, 0), Duration::from_secs(90));
        // 51 units must drain before one fits: 30.6 s.
        let denial = gcra.check(&state, 1, 0).unwrap_err();
        assert_eq!(denial.retry_after, Duration::from_millis(30_600));
        assert_eq!(gcra.remaining(&state, 31 * SECOND), 1);
    }

    #[test]
    fn reset_and_share_follow_the_queue() {
        let gcra = Gcra::new(10, Duration::from_secs(1), true);
        let mut state = GcraState::default();
        assert_eq!(gcra.reset(&state, 0), Duration::ZERO);
        take(&gcra, &mut state, 5, 0).unwrap();
        assert_eq!(gcra.reset(&state, 0), Duration::from_millis(500));
        assert!((gcra.used_share(&state, 0) - 0.5).abs() < 1e-12);
        assert_eq!(gcra.remaining(&state, 0), 5);
        assert_eq!(gcra.remaining(&state, 250_000_000), 7);
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let gcra = Gcra::new(u64::MAX, Duration::from_secs(3600), true);
        let mut state = GcraState::default();
        let late = 100 * 365 * 24 * 3600 * SECOND;
        take(&gcra, &mut state, u64::MAX / 2, late).unwrap();
        assert_eq!(gcra.remaining(&state, late), u64::MAX - u64::MAX / 2);
    }
}
