//! Upstream resilience state: the health of each (model entry, provider key)
//! and the router-wide retry budget.
//!
//! Every request reads this state before each attempt, so it is all atomics:
//! no request waits on another to learn whether a key may be used. Times are
//! nanoseconds since the router's [`Clock`] epoch, read from
//! `tokio::time::Instant` so tests drive them with a paused clock. A value of
//! 0 in an `*_until` field means "not set".
//!
//! A key is unusable for one of three reasons:
//! - it is **resting** after an upstream 429, for the upstream's `Retry-After`
//!   or the configured default;
//! - it is **disabled** after a 401/403, until the config is reloaded (a new
//!   router is built, with fresh health);
//! - its **circuit is open** after a run of consecutive failures (connect
//!   errors, timeouts, 5xx, invalid or truncated answers). Once `open_for`
//!   has passed the circuit is half-open: exactly one request (the probe) may
//!   try the key; its success closes the circuit, its failure opens it again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{CooldownPolicy, RetryPolicy};
use crate::health_board::HealthChange;
use crate::provider::{ErrorKind, ProviderError};

/// The router's time base: nanoseconds since it was built. A router built
/// by a config reload takes its predecessor's, so the times its carried-over
/// key health holds keep their meaning.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch (saturating: 584 years fit in a u64).
    pub(crate) fn now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The health of one provider key of one entry (an entry without keys has
/// one, for the entry itself).
#[derive(Debug, Default)]
pub(crate) struct KeyHealth {
    /// Resting after a 429 until then (0: not resting).
    rest_until: AtomicU64,
    /// Refused by the upstream (401/403): never used again by this router.
    disabled: AtomicBool,
    /// Failures since the last success, towards opening the circuit.
    consecutive_failures: AtomicU64,
    /// The circuit is open until then; once that has passed and it is still
    /// set, the circuit is half-open (0: closed).
    open_until: AtomicU64,
    /// A half-open probe is in flight: the one request allowed through. Set
    /// by compare-exchange so concurrent requests cannot all probe; cleared
    /// when the probe's [`Pass`] drops, even if its request was abandoned.
    probing: AtomicBool,
}

/// Why a key was skipped, and when it may be used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skip {
    /// When the key recovers, in clock nanoseconds; `None` for a disabled
    /// key, which does not recover until the config is reloaded.
    pub(crate) recovery: Option<u64>,
    /// The key rests because the upstream rate-limited it.
    pub(crate) rate_limited: bool,
}

/// Leave to use a key for one attempt. Record the attempt's result with
/// [`Pass::record`]; a dropped probe pass lets the next request probe.
#[derive(Debug)]
pub(crate) struct Pass<'a> {
    health: &'a KeyHealth,
    probe: bool,
}

impl KeyHealth {
    /// Whether the key may be tried at `now`.
    pub(crate) fn admit(&self, now: u64) -> Result<Pass<'_>, Skip> {
        if self.disabled.load(Ordering::Acquire) {
            return Err(Skip {
                recovery: None,
                rate_limited: false,
            });
        }
        let rest_until = self.rest_until.load(Ordering::Acquire);
        let open_until = self.open_until.load(Ordering::Acquire);
        if rest_until > now || open_until > now {
            // Both may hold; the later one is what the key waits for.
            return Err(if rest_until >= open_until {
                Skip {
                    recovery: Some(rest_until),
                    rate_limited: true,
                }
            } else {
                Skip {
                    recovery: Some(open_until),
                    rate_limited: false,
                }
            });
        }
        if open_until != 0 {
            // Half-open: one probe at a time.
            return match self.probing.compare_exchange(
                false,
                true,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Ok(Pass {
                    health: self,
                    probe: true,
                }),
                // Its answer is due any moment: recovery is "now".
                Err(_) => Err(Skip {
                    recovery: Some(now),
                    rate_limited: false,
                }),
            };
        }
        Ok(Pass {
            health: self,
            probe: false,
        })
    }
}

/// What the dashboard shows of one key's health at one moment: plain
/// values read from the atomics, never the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HealthSnapshot {
    /// Resting after a 429 until then (clock nanoseconds), if it still is.
    pub(crate) resting_until: Option<u64>,
    pub(crate) disabled: bool,
    /// When an open circuit turns half-open (clock nanoseconds), if it is
    /// open now.
    pub(crate) open_until: Option<u64>,
    /// The circuit is past `open_for` but not closed yet: one probe may go.
    pub(crate) half_open: bool,
    /// The half-open probe is in flight.
    pub(crate) probing: bool,
    pub(crate) consecutive_failures: u64,
}

impl KeyHealth {
    /// Reads the key's state at `now`. Each field is read on its own, so a
    /// change racing the read may show half-applied; the next read shows it
    /// whole, which is all a dashboard needs.
    pub(crate) fn snapshot(&self, now: u64) -> HealthSnapshot {
        let rest_until = self.rest_until.load(Ordering::Acquire);
        let open_until = self.open_until.load(Ordering::Acquire);
        HealthSnapshot {
            resting_until: (rest_until > now).then_some(rest_until),
            disabled: self.disabled.load(Ordering::Acquire),
            open_until: (open_until > now).then_some(open_until),
            half_open: open_until != 0 && open_until <= now,
            probing: self.probing.load(Ordering::Acquire),
            consecutive_failures: self.consecutive_failures.load(Ordering::Acquire),
        }
    }
}

impl KeyHealth {
    /// Takes in what another replica saw of this key at `now` (clock
    /// nanoseconds). A rest or an open circuit only ever lengthens, so a
    /// notice that arrives twice or late changes nothing.
    pub(crate) fn apply(&self, change: HealthChange, now: u64) {
        let until = |for_: Duration| now.saturating_add(nanos(for_)).max(1);
        match change {
            HealthChange::Rest(for_) => {
                self.rest_until.fetch_max(until(for_), Ordering::AcqRel);
            }
            HealthChange::Disabled => self.disabled.store(true, Ordering::Release),
            HealthChange::Open(for_) => {
                self.consecutive_failures.store(0, Ordering::Release);
                self.open_until.fetch_max(until(for_), Ordering::AcqRel);
            }
            HealthChange::Closed => {
                self.consecutive_failures.store(0, Ordering::Release);
                self.open_until.store(0, Ordering::Release);
            }
        }
    }
}

impl Pass<'_> {
    /// Records how the attempt ended (`error`: `None` when it answered), and
    /// answers what that changed, for the engine to log and to tell the
    /// other replicas.
    pub(crate) fn record(
        self,
        error: Option<&ProviderError>,
        now: u64,
        policy: &CooldownPolicy,
    ) -> Option<HealthChange> {
        let health = self.health;
        let kind = error.map(ProviderError::kind);
        match kind {
            // The upstream answered, if only to refuse the client's own
            // request: the key and the upstream work.
            None | Some(ErrorKind::ClientError) => {
                health.consecutive_failures.store(0, Ordering::Release);
                (health.open_until.swap(0, Ordering::AcqRel) != 0).then_some(HealthChange::Closed)
            }
            Some(ErrorKind::RateLimited) => {
                let after = match error {
                    Some(ProviderError::Status {
                        retry_after: Some(after),
                        ..
                    }) => *after,
                    _ => policy.rate_limited,
                };
                health
                    .rest_until
                    .fetch_max(now.saturating_add(nanos(after)), Ordering::AcqRel);
                Some(HealthChange::Rest(after))
            }
            // Nothing was sent: the key and the upstream are as they were.
            Some(ErrorKind::Unsupported) => None,
            Some(ErrorKind::KeyRejected) => {
                (!health.disabled.swap(true, Ordering::AcqRel)).then_some(HealthChange::Disabled)
            }
            Some(
                ErrorKind::Connect
                | ErrorKind::Timeout
                | ErrorKind::ServerError
                | ErrorKind::InvalidResponse
                | ErrorKind::Truncated,
            ) => {
                let failures = health
                    .consecutive_failures
                    .fetch_add(1, Ordering::AcqRel)
                    .saturating_add(1);
                if self.probe || failures >= policy.failures_to_open.get() {
                    health.consecutive_failures.store(0, Ordering::Release);
                    // `max(1)`: 0 would read as "closed".
                    let until = now.saturating_add(nanos(policy.open_for)).max(1);
                    health.open_until.store(until, Ordering::Release);
                    Some(HealthChange::Open(policy.open_for))
                } else {
                    None
                }
            }
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.health.probing.store(false, Ordering::Release);
        }
    }
}

/// What the skipped candidates of one request add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Resting {
    /// How many candidates were skipped.
    pub(crate) skipped: usize,
    /// The earliest recovery among them, if any recovers at all.
    pub(crate) earliest: Option<u64>,
    /// Every skipped key rests after a 429.
    pub(crate) all_rate_limited: bool,
}

impl Resting {
    pub(crate) fn add(&mut self, skip: Skip) {
        self.all_rate_limited = skip.rate_limited && (self.skipped == 0 || self.all_rate_limited);
        self.skipped += 1;
        self.earliest = match (self.earliest, skip.recovery) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// How long until the first skipped key recovers; `fallback` when none
    /// does (all disabled), so the client still gets a finite hint.
    pub(crate) fn retry_after(&self, now: u64, fallback: Duration) -> Duration {
        match self.earliest {
            Some(at) => Duration::from_nanos(at.saturating_sub(now)),
            None => fallback,
        }
    }
}

/// Full-jitter exponential backoff: a uniform wait in
/// `[0, min(backoff_max, backoff_base * 2^retry)]`, `retry` counting from 0.
pub(crate) fn backoff(policy: &RetryPolicy, retry: u32, random: u64) -> Duration {
    let ceiling = policy
        .backoff_base
        .saturating_mul(1u32 << retry.min(31))
        .min(policy.backoff_max);
    let ceiling = u128::from(nanos(ceiling));
    // `random / 2^64` in [0, 1), times the ceiling, plus one so the ceiling
    // itself can be drawn.
    let wait = (u128::from(random) * (ceiling + 1)) >> 64;
    Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
}

/// A lock-free source of jitter (SplitMix64 over an atomic counter). Not
/// cryptographic; it only has to spread retries apart.
#[derive(Debug)]
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    pub(crate) fn next(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// How long a deposit in the retry budget lasts: balances decay with this
/// time constant, so at a steady request rate the balance settles at
/// `budget_ratio` times the requests of the last ten seconds.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// The router-wide retry budget, so an outage does not multiply the load on
/// the upstreams. Each request's first attempt deposits `budget_ratio` of a
/// retry; each retry withdraws one. Besides, `budget_min_per_second` retries
/// per second are always allowed, so a quiet router can still retry.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    /// The balance and when it was last updated, packed so that one
    /// compare-exchange updates both: the high 32 bits are milliseconds
    /// since the clock's epoch (wrapping, read as differences only), the low
    /// 32 bits the balance in thousandths of a retry.
    balance: AtomicU64,
    /// The retries of the current second taken from the always-allowed
    /// floor: the high 32 bits are the second since the epoch, the low 32
    /// bits the count.
    floor: AtomicU64,
    /// `budget_ratio` in thousandths of a retry per request.
    deposit: u64,
    min_per_second: u64,
}

const MILLI: u64 = 1000;

impl RetryBudget {
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        let deposit = (policy.budget_ratio.max(0.0) * MILLI as f64).round();
        Self {
            balance: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            deposit: if deposit >= u32::MAX as f64 {
                u64::from(u32::MAX)
            } else {
                deposit as u64
            },
            min_per_second: policy.budget_min_per_second,
        }
    }

    /// A request made its first attempt.
    pub(crate) fn deposit(&self, now: u64) {
        self.update_balance(now, |balance| {
            Some(
                balance
                    .saturating_add(self.deposit)
                    .min(u64::from(u32::MAX)),
            )
        });
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub(crate) fn try_withdraw(&self, now: u64) -> bool {
        self.take_from_floor(now) || self.update_balance(now, |balance| balance.checked_sub(MILLI))
    }

    fn take_from_floor(&self, now: u64) -> bool {
        if self.min_per_second == 0 {
            return false;
        }
        let second = (now / 1_000_000_000) & u64::from(u32::MAX);
        let mut current = self.floor.load(Ordering::Acquire);
        loop {
            let (at, count) = (current >> 32, current & u64::from(u32::MAX));
            let count = if at == second { count } else { 0 };
            if count >= self.min_per_second {
                return false;
            }
            let next = (second << 32) | (count + 1);
            match self.floor.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Decays the balance to `now`, then applies `change`; `false` (and no
    /// update) when `change` refuses.
    fn update_balance(&self, now: u64, change: impl Fn(u64) -> Option<u64>) -> bool {
        let now_ms = (now / 1_000_000) & u64::from(u32::MAX);
        let mut current = self.balance.load(Ordering::Acquire);
        loop {
            let (at, balance) = (current >> 32, current & u64::from(u32::MAX));
            let elapsed_ms = now_ms.wrapping_sub(at) & u64::from(u32::MAX);
            let balance = if elapsed_ms == 0 || balance == 0 {
                balance
            } else {
                let window_ms = BUDGET_WINDOW.as_millis() as f64;
                (balance as f64 * (-(elapsed_ms as f64) / window_ms).exp()) as u64
            };
            let Some(balance) = change(balance) else {
                return false;
            };
            let next = (now_ms << 32) | balance;
            match self.balance.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn cooldown() -> CooldownPolicy {
        CooldownPolicy {
            rate_limited: Duration::from_secs(30),
            failures_to_open: std::num::NonZeroU64::MIN.saturating_add(1),
            open_for: Duration::from_secs(10),
        }
    }

    fn status(status: u16, retry_after: Option<Duration>) -> ProviderError {
        ProviderError::Status {
            status,
            message: String::new(),
            retry_after,
        }
    }

    #[test]
    fn snapshots_show_rest_circuit_and_disabled_keys() {
        let healthy = HealthSnapshot {
            resting_until: None,
            disabled: false,
            open_until: None,
            half_open: false,
            probing: false,
            consecutive_failures: 0,
        };
        let health = KeyHealth::default();
        assert_eq!(health.snapshot(SECOND), healthy);

        let pass = health.admit(SECOND).unwrap();
        pass.record(
            Some(&status(429, Some(Duration::from_secs(3)))),
            SECOND,
            &cooldown(),
        );
        assert_eq!(health.snapshot(2 * SECOND).resting_until, Some(4 * SECOND));
        assert_eq!(health.snapshot(4 * SECOND), healthy);

        // Two failures open the circuit for 10 s; then it is half-open.
        for _ in 0..2 {
            let pass = health.admit(5 * SECOND).unwrap();
            pass.record(Some(&status(500, None)), 5 * SECOND, &cooldown());
        }
        let open = health.snapshot(6 * SECOND);
        assert_eq!(open.open_until, Some(15 * SECOND));
        assert!(!open.half_open);
        let probe = health.admit(15 * SECOND).unwrap();
        let half_open = health.snapshot(15 * SECOND);
        assert_eq!(
            (half_open.open_until, half_open.half_open, half_open.probing),
            (None, true, true)
        );
        probe.record(None, 15 * SECOND, &cooldown());
        assert_eq!(health.snapshot(16 * SECOND), healthy);

        let pass = health.admit(16 * SECOND).unwrap();
        pass.record(Some(&status(401, None)), 16 * SECOND, &cooldown());
        assert!(health.snapshot(17 * SECOND).disabled);
    }

    #[test]
    fn a_rate_limited_key_rests_for_its_retry_after_or_the_default() {
        let health = KeyHealth::default();
        let pass = health.admit(SECOND).unwrap();
        let error = status(429, Some(Duration::from_secs(3)));
        assert_eq!(
            pass.record(Some(&error), SECOND, &cooldown()),
            Some(HealthChange::Rest(Duration::from_secs(3)))
        );
        assert_eq!(
            health.admit(2 * SECOND).unwrap_err(),
            Skip {
                recovery: Some(4 * SECOND),
                rate_limited: true
            }
        );
        let pass = health.admit(4 * SECOND).unwrap();
        pass.record(Some(&status(429, None)), 4 * SECOND, &cooldown());
        assert_eq!(
            health.admit(5 * SECOND).unwrap_err().recovery,
            Some(34 * SECOND)
        );
    }

    #[test]
    fn a_rejected_key_is_disabled_once_and_for_good() {
        let health = KeyHealth::default();
        let first = health.admit(0).unwrap();
        let second = health.admit(0).unwrap();
        assert_eq!(
            first.record(Some(&status(401, None)), 0, &cooldown()),
            Some(HealthChange::Disabled)
        );
        assert_eq!(
            second.record(Some(&status(403, None)), 0, &cooldown()),
            None
        );
        assert_eq!(
            health.admit(1000 * SECOND).unwrap_err(),
            Skip {
                recovery: None,
                rate_limited: false
            }
        );
    }

    #[test]
    fn the_circuit_opens_half_opens_for_one_probe_and_closes() {
        let health = KeyHealth::default();
        let failure = ProviderError::Timeout {
            after: Duration::from_secs(1),
        };
        let policy = cooldown();
        assert_eq!(
            health.admit(0).unwrap().record(Some(&failure), 0, &policy),
            None
        );
        assert_eq!(
            health.admit(0).unwrap().record(Some(&failure), 0, &policy),
            Some(HealthChange::Open(policy.open_for))
        );
        assert_eq!(
            health.admit(SECOND).unwrap_err().recovery,
            Some(10 * SECOND)
        );
        let probe = health.admit(10 * SECOND).unwrap();
        assert_eq!(
            health.admit(10 * SECOND).unwrap_err().recovery,
            Some(10 * SECOND)
        );
        // A failed probe opens the circuit again at once.
        assert_eq!(
            probe.record(Some(&failure), 10 * SECOND, &policy),
            Some(HealthChange::Open(policy.open_for))
        );
        assert!(health.admit(15 * SECOND).is_err());
        // An abandoned probe lets the next request probe.
        drop(health.admit(20 * SECOND).unwrap());
        let probe = health.admit(20 * SECOND).unwrap();
        assert_eq!(
            probe.record(None, 20 * SECOND, &policy),
            Some(HealthChange::Closed)
        );
        assert!(health.admit(20 * SECOND).is_ok());
        assert!(health.admit(20 * SECOND).is_ok());
    }

    #[test]
    fn another_replicas_notices_only_lengthen_rests_and_open_circuits() {
        let health = KeyHealth::default();
        health.apply(HealthChange::Rest(Duration::from_secs(30)), SECOND);
        // A late, shorter notice does not shorten the rest.
        health.apply(HealthChange::Rest(Duration::from_secs(2)), 2 * SECOND);
        assert_eq!(
            health.admit(5 * SECOND).unwrap_err(),
            Skip {
                recovery: Some(31 * SECOND),
                rate_limited: true
            }
        );
        health.apply(HealthChange::Open(Duration::from_secs(60)), SECOND);
        assert_eq!(
            health.admit(40 * SECOND).unwrap_err().recovery,
            Some(61 * SECOND)
        );
        health.apply(HealthChange::Closed, 41 * SECOND);
        assert!(health.admit(41 * SECOND).is_ok());
        health.apply(HealthChange::Disabled, 41 * SECOND);
        assert_eq!(health.admit(41 * SECOND).unwrap_err().recovery, None);
    }

    #[test]
    fn resting_keeps_the_earliest_recovery_and_whether_all_were_rate_limited() {
        let mut resting = Resting::default();
        resting.add(Skip {
            recovery: Some(9),
            rate_limited: true,
        });
        resting.add(Skip {
            recovery: Some(4),
            rate_limited: true,
        });
        assert!(resting.all_rate_limited);
        assert_eq!(resting.earliest, Some(4));
        resting.add(Skip {
            recovery: None,
            rate_limited: false,
        });
        assert!(!resting.all_rate_limited);
        assert_eq!(resting.earliest, Some(4));
        assert_eq!(
            resting.retry_after(1, Duration::ZERO),
            Duration::from_nanos(3)
        );
        let disabled = Resting {
            skipped: 1,
            earliest: None,
            all_rate_limited: false,
        };
        assert_eq!(
            disabled.retry_after(1, Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let policy = RetryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            ..RetryPolicy::default()
        };
        let check = |retry, random, expected_ms: u64| {
            let wait = backoff(&policy, retry, random);
            assert!(
                wait.as_millis().abs_diff(u128::from(expected_ms)) <= 1,
                "retry {retry}, random {random:#x}: {wait:?}"
            );
        };
        check(0, 0, 0);
        check(0, u64::MAX, 100);
        check(0, u64::MAX / 2, 50);
        check(1, u64::MAX, 200);
        check(2, u64::MAX, 300);
        check(40, u64::MAX, 300);
        check(40, u64::MAX / 4, 75);
    }

    #[test]
    fn jitter_spreads() {
        let jitter = Jitter::new(7);
        let draws: Vec<u64> = (0..64).map(|_| jitter.next()).collect();
        let high = draws.iter().filter(|d| **d > u64::MAX / 2).count();
        assert!((16..=48).contains(&high), "{high} of 64 in the upper half");
    }

    #[test]
    fn the_budget_allows_the_floor_then_the_ratio() {
        let budget = RetryBudget::new(&RetryPolicy {
            budget_ratio: 0.5,
            budget_min_per_second: 2,
            ..RetryPolicy::default()
        });
        // The floor: two per second, whatever the traffic.
        assert!(budget.try_withdraw(0));
        assert!(budget.try_withdraw(SECOND / 2));
        assert!(!budget.try_withdraw(SECOND / 2));
        assert!(budget.try_withdraw(SECOND));
        assert!(budget.try_withdraw(SECOND));
        assert!(!budget.try_withdraw(SECOND));
        // Four first attempts earn two retries.
        for _ in 0..4 {
            budget.deposit(SECOND);
        }
        assert!(budget.try_withdraw(SECOND));
        assert!(budget.try_withdraw(SECOND));
        assert!(!budget.try_withdraw(SECOND));
        // Deposits fade: after a minute, ten earn nothing usable (only the
        // floor is left).
        for _ in 0..10 {
            budget.deposit(2 * SECOND);
        }
        assert!(budget.try_withdraw(62 * SECOND));
        assert!(budget.try_withdraw(62 * SECOND));
        assert!(!budget.try_withdraw(62 * SECOND));
    }
}
