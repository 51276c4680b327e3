//! The in-memory limiter: every limit of the config, checked and reserved all
//! or nothing, exact under concurrency.
//!
//! # Layout
//!
//! The config is immutable, so every limit is created once, at construction,
//! and found by index: a [`LimitSet`] per client key (by its position in
//! `api_keys`) and one per provider key of each model entry (by entry
//! position and key position; an entry without keys has one). A set holds
//! the limits of its owner and one lock over their counters.
//!
//! # Locking
//!
//! An admission locks at most two sets, always the client key's before the
//! model's. Nothing else is locked, so requests of different client keys and
//! different provider keys touch disjoint locks, and since every admission
//! takes the locks in the same order, none can wait on another in a cycle.
//! With both locks held it reads the clock, checks every limit, and only if
//! all accept, commits every one: a refusal consumes nothing anywhere.
//!
//! One lock per set rather than per limit: an admission touches all the
//! limits of a set together, so finer locks would cost up to nine lock
//! operations instead of one, and would never let two admissions proceed
//! in parallel that one lock serialises.
//!
//! # Windows
//!
//! Second, minute and hour windows are GCRA ([`gcra`]), which can give back
//! what a request reserved and did not use. Day and month windows count per
//! UTC calendar period ([`calendar`]); every change of such a counter goes to
//! the [`CounterSink`] with its new value, and the counters of the current
//! period are restored from the rows the store loaded at start.

mod calendar;
mod clock;
mod gcra;
pub mod redis;

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use router_core::config::{BudgetPeriod, ClientKeyConfig, Config, ModelEntry};
use router_core::limits::{
    Admission, Demand, Headroom, LimitName, Limiter, Measure, Permit, RateInfo, Refusal,
    Reservation, Scope, Settlement, Window,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{CounterRow, CounterSink};
use calendar::{Calendar, CalendarLimit, CalendarNow, PeriodCount};
pub use clock::{Clock, ManualClock, SystemClock};
use gcra::{Gcra, GcraMark, GcraState};
pub use redis::{RedisHealthBoard, RedisLimiter, RedisLimiterError};

/// The most limits one set holds: a client key's `rps rpm rph rpd tps tpm
/// tph tpd` and its budget.
const MAX_LIMITS_PER_SET: usize = 9;
/// The most limits of one set a settlement adjusts: tokens (four windows)
/// and the budget. They come first in a set, so their positions index the
/// reservation's marks.
const MAX_SETTLED_PER_SET: usize = 5;

/// The [`Limiter`] of one router process: limits held in memory, day and
/// month counters persisted through a [`CounterSink`].
pub struct MemoryLimiter {
    /// By `ClientKeyConfig::index`; `None` for a key without limits.
    key_sets: Box<[Option<Arc<LimitSet>>]>,
    /// By `ModelEntry::index`.
    model_sets: Box<[EntrySets]>,
    /// Kept for [`MemoryLimiter::reconfigured`], which builds sets with them.
    clock: Arc<dyn Clock>,
    sink: Arc<dyn CounterSink>,
}

/// The sets of one model entry by provider key index (one set for an entry
/// without keys); `None` where there are no limits.
type EntrySets = Box<[Option<Arc<LimitSet>>]>;

impl MemoryLimiter {
    /// Builds every limit of `config`.
    ///
    /// `restored` are the counter rows the store loaded: those of the current
    /// day or month set the counters' starting values (older periods are
    /// ignored). `sink` receives every change of a day or month counter; it
    /// must not block, as it is called while the counter's set is locked (so
    /// that it receives a limit's values in the order they were reached).
    ///
    /// The config must be the one the demands come from: keys and entries
    /// are found by their `index`, which validation sets to their position.
    pub fn new(
        config: &Config,
        clock: impl Clock,
        restored: Vec<CounterRow>,
        sink: Arc<dyn CounterSink>,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let utc = clock.utc_now();
        let restored: HashMap<(&str, &str), u64> = restored
            .iter()
            .map(|row| ((&*row.limit, &*row.period), row.value))
            .collect();
        let (set_clock, set_sink) = (Arc::clone(&clock), Arc::clone(&sink));
        Self::build(config, clock, sink, |owner, specs| {
            LimitSet::build(owner, specs, None, &set_clock, &set_sink, utc, &restored).map(Arc::new)
        })
    }

    fn build(
        config: &Config,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn CounterSink>,
        mut set_for: impl FnMut(String, Vec<LimitSpec>) -> Option<Arc<LimitSet>>,
    ) -> Self {
        let key_sets = config
            .api_keys
            .iter()
            .map(|key| set_for(key_set_owner(key), key_specs(key)))
            .collect();
        let model_sets = config
            .models
            .iter()
            .map(|entry| {
                provider_key_ids(entry)
                    .into_iter()
                    .map(|provider_key| {
                        set_for(
                            model_set_owner(entry, &provider_key),
                            model_specs(entry, &provider_key),
                        )
                    })
                    .collect()
            })
            .collect();
        Self {
            key_sets,
            model_sets,
            clock,
            sink,
        }
    }

    /// The limiter of `config` (a reloaded config), carrying this one's
    /// state over to every limit that still exists: a client key (found by
    /// its secret's fingerprint) or a provider key of an entry (by the
    /// entry's `id`, else its name and position, and the key's fingerprint)
    /// whose limits are all unchanged keeps its very set, in-flight
    /// reservations included; one whose limits changed gets a new set in
    /// which each limit that kept its name (`key rpm`, `model tpd`) keeps
    /// its counter and takes its new value from the next admission. New
    /// keys and entries start empty; removed ones are forgotten. Permits
    /// of this limiter settle against the sets they were taken from.
    pub fn reconfigured(&self, config: &Config) -> Self {
        let previous: HashMap<&str, &Arc<LimitSet>> = self
            .key_sets
            .iter()
            .chain(self.model_sets.iter().flat_map(|sets| sets.iter()))
            .flatten()
            .map(|set| (&*set.owner, set))
            .collect();
        let utc = self.clock.utc_now();
        let restored = HashMap::new();
        let (clock, sink) = (Arc::clone(&self.clock), Arc::clone(&self.sink));
        Self::build(
            config,
            Arc::clone(&clock),
            Arc::clone(&sink),
            |owner, specs| {
                let before = previous.get(owner.as_str()).copied();
                match before {
                    Some(set) if set.has_specs(&specs) => Some(Arc::clone(set)),
                    _ => LimitSet::build(
                        owner,
                        specs,
                        before.map(|set| &**set),
                        &clock,
                        &sink,
                        utc,
                        &restored,
                    )
                    .map(Arc::new),
                }
            },
        )
    }

    fn key_set(&self, key: &ClientKeyConfig) -> Option<&Arc<LimitSet>> {
        self.key_sets.get(key.index)?.as_ref()
    }
}

impl fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limited_keys = self.key_sets.iter().flatten().count();
        let limited_provider_keys = self.model_sets.iter().flatten().flatten().count();
        f.debug_struct("MemoryLimiter")
            .field("limited_keys", &limited_keys)
            .field("limited_provider_keys", &limited_provider_keys)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    fn admit(&self, demand: &Demand<'_>) -> Admission<'_> {
        self.try_admit(demand).into()
    }

    async fn key_headroom(&self, key: &ClientKeyConfig) -> Vec<Headroom> {
        self.headroom(key)
    }

    fn reconfigured(&self, config: &Config) -> Option<Arc<dyn Limiter>> {
        Some(Arc::new(MemoryLimiter::reconfigured(self, config)))
    }
}

impl MemoryLimiter {
    /// Admits the demand, reserving it in every limit that applies, or
    /// refuses it having consumed nothing. Never waits.
    pub fn try_admit(&self, demand: &Demand<'_>) -> Result<Permit, Refusal> {
        self.try_admit_at(&DemandAt::of(demand))
    }

    /// [`MemoryLimiter::try_admit`] for a demand whose key and entry are
    /// named by index (a shared limiter's fallback decides after the
    /// demand's borrows have ended).
    pub(crate) fn try_admit_at(&self, demand: &DemandAt) -> Result<Permit, Refusal> {
        let key_set = demand
            .key
            .and_then(|index| self.key_sets.get(index)?.as_ref());
        let model_set = self
            .model_sets
            .get(demand.entry)
            .and_then(|sets| sets.get(demand.provider_key.unwrap_or(0))?.as_ref());
        if key_set.is_none() && model_set.is_none() {
            return Ok(Permit::unlimited());
        }
        let amounts = demand.amounts;
        // The canonical order: the client key's set, then the model's.
        let mut key_guard = key_set.map(|set| set.lock());
        let mut model_guard = model_set.map(|set| set.lock());
        // Read under the locks: each set then sees times that never go
        // backwards, which keeps GCRA refunds exact.
        let now = Now::read(key_set.into_iter().chain(model_set));
        let mut key = key_set.zip(key_guard.as_deref_mut().map(|counters| &mut **counters));
        let mut model = model_set.zip(model_guard.as_deref_mut().map(|counters| &mut **counters));

        let mut refusal: Option<Refusal> = None;
        for (set, counters) in [&mut key, &mut model].into_iter().flatten() {
            set.roll(counters, &now);
            if let Err(denial) = set.check(counters, amounts, &now) {
                refusal = Some(worst(refusal, denial));
            }
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }

        let hold = |locked: &mut Option<(&Arc<LimitSet>, &mut [PaddedCounter])>| {
            let (set, counters) = locked.as_mut()?;
            let marks = set.commit(counters, amounts, &now);
            set.report(counters);
            Some(SetReservation {
                set: Arc::clone(set),
                marks,
            })
        };
        let reservation = MemoryReservation {
            key: hold(&mut key),
            model: hold(&mut model),
            amounts,
        };
        let mut tightest = Tightest::default();
        for (set, counters) in [&key, &model].into_iter().flatten() {
            tightest.consider(set, counters, &now);
        }
        let rate = tightest.finish(&now);
        drop(model_guard);
        drop(key_guard);
        Ok(Permit::new(rate, Box::new(reservation)))
    }

    /// Every limit of a client key with what is left of it.
    pub fn headroom(&self, key: &ClientKeyConfig) -> Vec<Headroom> {
        let Some(set) = self.key_set(key) else {
            return Vec::new();
        };
        let counters = set.lock();
        let now = Now::read([set]);
        let mut headroom: Vec<Headroom> = set
            .specs
            .iter()
            .zip(counters.iter())
            .map(|(spec, counter)| spec.headroom(&counter.0, &now))
            .collect();
        drop(counters);
        headroom.sort_by_key(|room| presentation_order(room.name));
        headroom
    }
}

/// Which of two refusals to report: one that can never fit (it must not be
/// retried), else the one that lasts longer (the demand fits only once
/// every limit lets it).
fn worst(first: Option<Refusal>, second: Refusal) -> Refusal {
    match first {
        Some(first)
            if first.never_fits && !second.never_fits
                || first.never_fits == second.never_fits
                    && first.retry_after >= second.retry_after =>
        {
            first
        }
        _ => second,
    }
}

/// Requests, then tokens, then budgets; shorter windows first.
fn presentation_order(name: LimitName) -> (u8, Window) {
    let measure = match name.measure {
        Measure::Requests => 0,
        Measure::Tokens => 1,
        Measure::Cost => 2,
    };
    (measure, name.window)
}

/// A [`Demand`] by indices, owning nothing borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DemandAt {
    /// `ClientKeyConfig::index`, when the key's limits take part.
    key: Option<usize>,
    /// `ModelEntry::index`.
    entry: usize,
    provider_key: Option<usize>,
    amounts: Amounts,
}

impl DemandAt {
    pub(crate) fn of(demand: &Demand<'_>) -> Self {
        Self {
            key: demand.key.map(|key| key.index),
            entry: demand.entry.index,
            provider_key: demand.provider_key,
            amounts: Amounts {
                tokens: demand.tokens,
                micro_usd: micro_usd(demand.cost_usd),
            },
        }
    }
}

/// What one demand counts in each measure (a request always counts one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Amounts {
    tokens: u64,
    micro_usd: u64,
}

impl Amounts {
    fn of(self, measure: Measure) -> u64 {
        match measure {
            Measure::Requests => 1,
            Measure::Tokens => self.tokens,
            Measure::Cost => self.micro_usd,
        }
    }
}

/// USD as whole micro-USD, rounded up so that spend is never undercounted,
/// but without turning float noise (`3e-6 × 1e6 = 3.0000000000000004`) into
/// an extra micro-USD. Negative and non-finite amounts count as zero.
fn micro_usd(usd: f64) -> u64 {
    let micros = usd * 1e6;
    if !micros.is_finite() || micros <= 0.0 {
        return 0;
    }
    let nearest = micros.round();
    let whole = if (micros - nearest).abs() <= 1e-9 * nearest.max(1.0) {
        nearest
    } else {
        micros.ceil()
    };
    // Saturates at u64::MAX for absurd amounts.
    whole as u64
}

/// The time of one admission or settlement.
struct Now {
    /// The clock's monotonic nanoseconds.
    nanos: u64,
    /// Read only when a calendar limit is involved (it costs a second clock
    /// read).
    utc: Option<CalendarNow>,
}

impl Now {
    /// Reads the clock of the sets (they share one).
    fn read<'a>(sets: impl IntoIterator<Item = &'a Arc<LimitSet>>) -> Self {
        let mut clock = None;
        let mut needs_utc = false;
        for set in sets {
            clock = Some(&set.clock);
            needs_utc |= set.has_calendar;
        }
        match clock {
            Some(clock) => Self {
                nanos: clock.monotonic_nanos(),
                utc: needs_utc.then(|| CalendarNow::new(clock.utc_now())),
            },
            None => Self {
                nanos: 0,
                utc: None,
            },
        }
    }

    fn utc(&self) -> CalendarNow {
        // Sets with calendar limits always ask for it; the epoch is never
        // used in practice and errs towards keeping counters.
        self.utc
            .unwrap_or_else(|| CalendarNow::new(OffsetDateTime::UNIX_EPOCH))
    }
}

/// One limit: its name and how it counts. Fixed at construction.
#[derive(Debug)]
struct LimitSpec {
    name: LimitName,
    rule: Rule,
}

#[derive(Debug)]
enum Rule {
    Rolling(Gcra),
    Calendar {
        limit: CalendarLimit,
        /// The stable id its counter rows carry.
        id: Arc<str>,
    },
}

/// The changing part of one limit.
#[derive(Debug, Clone)]
enum Counter {
    Rolling(GcraState),
    Calendar(PeriodCount),
}

/// A counter on its own cache line: sets are locked by different threads,
/// and counters of two sets sharing a line would make those threads contend
/// for it although they share no lock.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct PaddedCounter(Counter);

/// Where a reservation left its units in one limit, for its settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// A limit the reservation did not touch, or a request limit.
    Unused,
    Rolling(GcraMark),
    /// The calendar period the units were counted in.
    Calendar(i64),
}

/// Why one limit refused (a [`Refusal`] without the limit's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Denial {
    remaining: u64,
    retry_after: Duration,
    never_fits: bool,
}

impl LimitSpec {
    fn limit(&self) -> u64 {
        match &self.rule {
            Rule::Rolling(gcra) => gcra.limit(),
            Rule::Calendar { limit, .. } => limit.limit,
        }
    }

    fn initial_counter(
        &self,
        utc: OffsetDateTime,
        restored: &HashMap<(&str, &str), u64>,
    ) -> Counter {
        match &self.rule {
            Rule::Rolling(_) => Counter::Rolling(GcraState::default()),
            Rule::Calendar { limit, id } => {
                let mut count = PeriodCount::new(limit.calendar, limit.calendar.period(utc), 0);
                count.value = restored.get(&(&**id, &*count.label)).copied().unwrap_or(0);
                Counter::Calendar(count)
            }
        }
    }

    fn check(&self, counter: &Counter, amount: u64, now: &Now) -> Result<(), Denial> {
        match (&self.rule, counter) {
            (Rule::Rolling(gcra), Counter::Rolling(state)) => gcra.check(state, amount, now.nanos),
            (Rule::Calendar { limit, .. }, Counter::Calendar(count)) => {
                limit.check(count, amount, &now.utc())
            }
            // A spec and its counter are built together and always match.
            _ => Ok(()),
        }
    }

    fn commit(&self, counter: &mut Counter, amount: u64, now: &Now) -> Mark {
        match (&self.rule, counter) {
            (Rule::Rolling(gcra), Counter::Rolling(state)) => {
                Mark::Rolling(gcra.commit(state, amount, now.nanos))
            }
            (Rule::Calendar { .. }, Counter::Calendar(count)) => {
                count.value = count.value.saturating_add(amount);
                Mark::Calendar(count.period)
            }
            _ => Mark::Unused,
        }
    }

    /// Replaces `reserved` with `used`. Returns whether a calendar counter
    /// changed (and must be reported).
    fn settle(
        &self,
        counter: &mut Counter,
        mark: Mark,
        reserved: u64,
        used: u64,
        now: &Now,
    ) -> bool {
        match (&self.rule, counter, mark) {
            (Rule::Rolling(gcra), Counter::Rolling(state), Mark::Rolling(mark)) => {
                if used < reserved {
                    gcra.refund(state, mark, reserved - used, now.nanos);
                } else if used > reserved {
                    gcra.charge(state, used - reserved, now.nanos);
                }
                false
            }
            (Rule::Calendar { limit, .. }, Counter::Calendar(count), Mark::Calendar(period)) => {
                count.roll(limit.calendar, &now.utc());
                let before = count.value;
                if used < reserved {
                    // A reservation of a past period is no longer counted:
                    // nothing to give back.
                    if count.period == period {
                        count.value = count.value.saturating_sub(reserved - used);
                    }
                } else {
                    // Usage beyond the reservation happened now: it counts
                    // in the current period.
                    count.value = count.value.saturating_add(used - reserved);
                }
                count.value != before
            }
            _ => false,
        }
    }

    /// The share of the limit in use (approximate; only compared).
    fn used_share(&self, counter: &Counter, now: &Now) -> f64 {
        match (&self.rule, counter) {
            (Rule::Rolling(gcra), Counter::Rolling(state)) => gcra.used_share(state, now.nanos),
            (Rule::Calendar { limit, .. }, Counter::Calendar(count)) => limit.used_share(count),
            _ => 0.0,
        }
    }

    /// What is left of the limit. Changes nothing: a calendar counter of a
    /// past period reads as a fresh one.
    fn headroom(&self, counter: &Counter, now: &Now) -> Headroom {
        let (remaining, reset) = match (&self.rule, counter) {
            (Rule::Rolling(gcra), Counter::Rolling(state)) => (
                gcra.remaining(state, now.nanos),
                gcra.reset(state, now.nanos),
            ),
            (Rule::Calendar { limit, .. }, Counter::Calendar(count)) => {
                limit.headroom(count, &now.utc())
            }
            _ => (self.limit(), Duration::ZERO),
        };
        Headroom {
            name: self.name,
            limit: self.limit(),
            remaining,
            reset,
        }
    }
}

/// The limits of one client key or one provider key, and their counters.
///
/// Aligned to 128 bytes so that no other set's lock or counters share its
/// cache lines (adjacent-line prefetching pairs 64-byte lines).
#[repr(align(128))]
struct LimitSet {
    /// Who the limits belong to, stable across config reloads:
    /// `key:{fingerprint}` or `model:{entry}:{provider key}`.
    owner: Box<str>,
    /// Settled limits (tokens, budget) first, then requests.
    specs: Box<[LimitSpec]>,
    /// The counters of `specs`, position for position, behind the one lock
    /// of this set: admissions and settlements of the same client key (or
    /// provider key) serialise here, and only here.
    counters: Mutex<Box<[PaddedCounter]>>,
    /// Whether the UTC clock must be read for this set.
    has_calendar: bool,
    /// Every set holds the limiter's clock, so that a reservation settling
    /// later reaches it through its sets alone.
    clock: Arc<dyn Clock>,
    /// The same sink in every set, for the same reason as `clock`.
    sink: Arc<dyn CounterSink>,
}

impl LimitSet {
    /// The set of `specs`; each limit's counter is taken over from
    /// `previous` (the same owner's set before a reload) when it has a
    /// limit of that name, else starts from `restored` or empty.
    fn build(
        owner: String,
        mut specs: Vec<LimitSpec>,
        previous: Option<&LimitSet>,
        clock: &Arc<dyn Clock>,
        sink: &Arc<dyn CounterSink>,
        utc: OffsetDateTime,
        restored: &HashMap<(&str, &str), u64>,
    ) -> Option<Self> {
        if specs.is_empty() {
            return None;
        }
        debug_assert!(specs.len() <= MAX_LIMITS_PER_SET);
        // Stable: within a measure, the config's order stays.
        specs.sort_by_key(|spec| spec.name.measure == Measure::Requests);
        let kept = previous.map(|set| (set, set.lock().clone()));
        let counters = specs
            .iter()
            .map(|spec| {
                let carried = kept.as_ref().and_then(|(set, counters)| {
                    let position = set.specs.iter().position(|old| old.name == spec.name)?;
                    Some(counters[position].0.clone())
                });
                PaddedCounter(carried.unwrap_or_else(|| spec.initial_counter(utc, restored)))
            })
            .collect();
        Some(Self {
            owner: owner.into_boxed_str(),
            has_calendar: specs
                .iter()
                .any(|spec| matches!(spec.rule, Rule::Calendar { .. })),
            specs: specs.into_boxed_slice(),
            counters: Mutex::new(counters),
            clock: Arc::clone(clock),
            sink: Arc::clone(sink),
        })
    }

    /// Whether the set holds exactly these limits (as built: sorted).
    fn has_specs(&self, specs: &[LimitSpec]) -> bool {
        let mut wanted: Vec<(LimitName, u64)> =
            specs.iter().map(|spec| (spec.name, spec.limit())).collect();
        wanted.sort_by_key(|(name, _)| name.measure == Measure::Requests);
        self.specs.len() == wanted.len()
            && self
                .specs
                .iter()
                .zip(&wanted)
                .all(|(spec, (name, limit))| spec.name == *name && spec.limit() == *limit)
    }

    fn lock(&self) -> MutexGuard<'_, Box<[PaddedCounter]>> {
        // A panic under this lock can only come from the sink, after the
        // counters were updated consistently: they are safe to keep using.
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts calendar counters over when their period has ended.
    fn roll(&self, counters: &mut [PaddedCounter], now: &Now) {
        if !self.has_calendar {
            return;
        }
        for (spec, counter) in self.specs.iter().zip(counters.iter_mut()) {
            if let (Rule::Calendar { limit, .. }, Counter::Calendar(count)) =
                (&spec.rule, &mut counter.0)
            {
                count.roll(limit.calendar, &now.utc());
            }
        }
    }

    /// Checks every limit; the refusal that matters most when some refuse.
    fn check(
        &self,
        counters: &[PaddedCounter],
        amounts: Amounts,
        now: &Now,
    ) -> Result<(), Refusal> {
        let mut refusal: Option<Refusal> = None;
        for (spec, counter) in self.specs.iter().zip(counters) {
            let Err(denial) = spec.check(&counter.0, amounts.of(spec.name.measure), now) else {
                continue;
            };
            let denial = Refusal {
                name: spec.name,
                limit: spec.limit(),
                remaining: denial.remaining,
                retry_after: denial.retry_after,
                never_fits: denial.never_fits,
            };
            refusal = Some(worst(refusal, denial));
        }
        refusal.map_or(Ok(()), Err)
    }

    fn commit(
        &self,
        counters: &mut [PaddedCounter],
        amounts: Amounts,
        now: &Now,
    ) -> [Mark; MAX_SETTLED_PER_SET] {
        let mut marks = [Mark::Unused; MAX_SETTLED_PER_SET];
        for (position, (spec, counter)) in self.specs.iter().zip(counters.iter_mut()).enumerate() {
            let mark = spec.commit(&mut counter.0, amounts.of(spec.name.measure), now);
            if spec.name.measure != Measure::Requests {
                if let Some(slot) = marks.get_mut(position) {
                    *slot = mark;
                }
            }
        }
        marks
    }

    /// Sends every calendar counter's value to the sink.
    fn report(&self, counters: &[PaddedCounter]) {
        if !self.has_calendar {
            return;
        }
        for (spec, counter) in self.specs.iter().zip(counters) {
            self.report_one(spec, &counter.0);
        }
    }

    fn report_one(&self, spec: &LimitSpec, counter: &Counter) {
        if let (Rule::Calendar { id, .. }, Counter::Calendar(count)) = (&spec.rule, counter) {
            self.sink.update(CounterRow {
                limit: Arc::clone(id),
                period: Arc::clone(&count.label),
                value: count.value,
            });
        }
    }

    fn settle(
        &self,
        counters: &mut [PaddedCounter],
        marks: &[Mark; MAX_SETTLED_PER_SET],
        reserved: Amounts,
        used: Amounts,
        now: &Now,
    ) {
        for ((spec, counter), mark) in self.specs.iter().zip(counters.iter_mut()).zip(marks) {
            let measure = spec.name.measure;
            let changed = spec.settle(
                &mut counter.0,
                *mark,
                reserved.of(measure),
                used.of(measure),
                now,
            );
            if changed {
                self.report_one(spec, &counter.0);
            }
        }
    }
}

/// Picks the tightest request and token limit of an admission: the one
/// with the largest share in use.
#[derive(Default)]
struct Tightest<'a> {
    requests: Option<(f64, &'a LimitSpec, &'a Counter)>,
    tokens: Option<(f64, &'a LimitSpec, &'a Counter)>,
}

impl<'a> Tightest<'a> {
    fn consider(&mut self, set: &'a LimitSet, counters: &'a [PaddedCounter], now: &Now) {
        for (spec, counter) in set.specs.iter().zip(counters) {
            let slot = match spec.name.measure {
                Measure::Requests => &mut self.requests,
                Measure::Tokens => &mut self.tokens,
                Measure::Cost => continue,
            };
            let share = spec.used_share(&counter.0, now);
            if slot.is_none_or(|(tightest, ..)| share > tightest) {
                *slot = Some((share, spec, &counter.0));
            }
        }
    }

    fn finish(self, now: &Now) -> RateInfo {
        let headroom = |slot: Option<(f64, &LimitSpec, &Counter)>| {
            slot.map(|(_, spec, counter)| spec.headroom(counter, now))
        };
        RateInfo {
            requests: headroom(self.requests),
            tokens: headroom(self.tokens),
        }
    }
}

/// A reservation's hold on one set.
struct SetReservation {
    set: Arc<LimitSet>,
    marks: [Mark; MAX_SETTLED_PER_SET],
}

/// What an admitted demand holds, until settled. Each scope is settled on
/// its own (the engine settles the model's after a failed attempt and the
/// key's when the answer ends), locking only its own set. Dropped
/// unsettled, a scope keeps everything it reserved (the safe side: nothing
/// that may have been used is handed back).
struct MemoryReservation {
    key: Option<SetReservation>,
    model: Option<SetReservation>,
    amounts: Amounts,
}

impl Reservation for MemoryReservation {
    fn settle(&mut self, scope: Scope, used: Settlement) {
        let held = match scope {
            Scope::Key => self.key.take(),
            Scope::Model => self.model.take(),
        };
        let Some(held) = held else {
            return;
        };
        let used = Amounts {
            tokens: used.tokens,
            micro_usd: micro_usd(used.cost_usd),
        };
        if used == self.amounts {
            return;
        }
        let mut counters = held.set.lock();
        let now = Now::read([&held.set]);
        held.set
            .settle(&mut counters, &held.marks, self.amounts, used, &now);
    }
}

/// First 8 bytes of the SHA-256 of a secret, in hex: names the secret in
/// persisted ids without revealing it.
fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(16);
    for byte in &digest[..8] {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn rolling(
    scope: Scope,
    measure: Measure,
    window: Window,
    limit: Option<NonZeroU64>,
) -> Option<LimitSpec> {
    let limit = limit?;
    Some(LimitSpec {
        name: LimitName {
            scope,
            measure,
            window,
        },
        rule: Rule::Rolling(Gcra::new(
            limit.get(),
            window.rolling()?,
            measure != Measure::Requests,
        )),
    })
}

fn calendar(
    scope: Scope,
    measure: Measure,
    calendar: Calendar,
    limit: u64,
    id: String,
) -> LimitSpec {
    let window = match calendar {
        Calendar::Day => Window::Day,
        Calendar::Month => Window::Month,
    };
    LimitSpec {
        name: LimitName {
            scope,
            measure,
            window,
        },
        rule: Rule::Calendar {
            limit: CalendarLimit { limit, calendar },
            id: id.into(),
        },
    }
}

/// The owner of a client key's set (see `LimitSet::owner`).
fn key_set_owner(key: &ClientKeyConfig) -> String {
    format!("key:{}", fingerprint(key.key.expose()))
}

/// The owner of a provider key's set (see `LimitSet::owner`).
fn model_set_owner(entry: &ModelEntry, provider_key: &str) -> String {
    format!("model:{}:{provider_key}", redis::entry_owner(entry))
}

fn key_specs(key: &ClientKeyConfig) -> Vec<LimitSpec> {
    use Measure::{Requests, Tokens};
    use Window::{Hour, Minute, Second};
    let limits = &key.limits;
    let prefix = format!("key:{}", fingerprint(key.key.expose()));
    let mut specs: Vec<LimitSpec> = [
        rolling(Scope::Key, Requests, Second, limits.rps),
        rolling(Scope::Key, Requests, Minute, limits.rpm),
        rolling(Scope::Key, Requests, Hour, limits.rph),
        rolling(Scope::Key, Tokens, Second, limits.tps),
        rolling(Scope::Key, Tokens, Minute, limits.tpm),
        rolling(Scope::Key, Tokens, Hour, limits.tph),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(rpd) = limits.rpd {
        specs.push(calendar(
            Scope::Key,
            Requests,
            Calendar::Day,
            rpd.get(),
            format!("{prefix}:rpd"),
        ));
    }
    if let Some(tpd) = limits.tpd {
        specs.push(calendar(
            Scope::Key,
            Tokens,
            Calendar::Day,
            tpd.get(),
            format!("{prefix}:tpd"),
        ));
    }
    if let Some(budget) = key.budget {
        let (period, name) = match budget.period {
            BudgetPeriod::Day => (Calendar::Day, "budget-day"),
            BudgetPeriod::Month => (Calendar::Month, "budget-month"),
        };
        let limit = micro_usd(budget.max_usd);
        // A budget below one micro-USD is no budget at all; validation
        // refuses it, this only keeps a code-built config from dividing by 0.
        if limit > 0 {
            specs.push(calendar(
                Scope::Key,
                Measure::Cost,
                period,
                limit,
                format!("{prefix}:{name}"),
            ));
        }
    }
    specs
}

/// The id of each provider key of an entry (`nokey` for an entry without
/// keys), unique within the entry even if a key is listed twice.
fn provider_key_ids(entry: &ModelEntry) -> Vec<String> {
    if entry.provider_api_keys.is_empty() {
        return vec!["nokey".to_owned()];
    }
    let mut seen = HashSet::new();
    entry
        .provider_api_keys
        .iter()
        .enumerate()
        .map(|(position, key)| {
            let id = fingerprint(key.expose());
            if seen.insert(id.clone()) {
                id
            } else {
                format!("{id}#{position}")
            }
        })
        .collect()
}

fn model_specs(entry: &ModelEntry, provider_key: &str) -> Vec<LimitSpec> {
    use Measure::{Requests, Tokens};
    use Window::{Hour, Minute};
    let limits = &entry.limits;
    let owner = if entry.id != 0 {
        entry.id.to_string()
    } else {
        format!("{}#{}", entry.name, entry.index)
    };
    let prefix = format!("model:{owner}:{provider_key}");
    let mut specs: Vec<LimitSpec> = [
        rolling(Scope::Model, Requests, Minute, limits.rpm),
        rolling(Scope::Model, Requests, Hour, limits.rph),
        rolling(Scope::Model, Tokens, Minute, limits.tpm),
        rolling(Scope::Model, Tokens, Hour, limits.tph),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(rpd) = limits.rpd {
        specs.push(calendar(
            Scope::Model,
            Requests,
            Calendar::Day,
            rpd.get(),
            format!("{prefix}:rpd"),
        ));
    }
    if let Some(tpd) = limits.tpd {
        specs.push(calendar(
            Scope::Model,
            Tokens,
            Calendar::Day,
            tpd.get(),
            format!("{prefix}:tpd"),
        ));
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_usd_rounds_up_but_ignores_float_noise() {
        let check = |usd: f64, micros: u64| assert_eq!(micro_usd(usd), micros, "{usd}");
        check(0.0, 0);
        check(-1.0, 0);
        check(f64::NAN, 0);
        check(f64::INFINITY, 0);
        check(3e-6, 3);
        check(0.1 + 0.2, 300_000);
        check(2.5e-7, 1);
        check(1.000_000_4e-6, 2);
        check(12.5, 12_500_000);
        check(1e30, u64::MAX);
    }

    #[test]
    fn fingerprints_are_eight_bytes_of_sha256() {
        // SHA-256("abc") = ba7816bf8f01cfea...
        assert_eq!(fingerprint("abc"), "ba7816bf8f01cfea");
    }

    #[test]
    fn sets_hold_at_most_their_capacity() {
        let mut key = ClientKeyConfig::new(router_core::secret::Secret::new("k"));
        let some = NonZeroU64::new(5);
        key.limits = router_core::config::KeyLimits {
            rps: some,
            rpm: some,
            rph: some,
            rpd: some,
            tps: some,
            tpm: some,
            tph: some,
            tpd: some,
        };
        key.budget = Some(router_core::config::Budget {
            max_usd: 1.0,
            period: BudgetPeriod::Month,
        });
        let specs = key_specs(&key);
        assert_eq!(specs.len(), MAX_LIMITS_PER_SET);
        let settled = specs
            .iter()
            .filter(|spec| spec.name.measure != Measure::Requests)
            .count();
        assert_eq!(settled, MAX_SETTLED_PER_SET);
    }
}
