//! Property tests of the in-memory limiter: arbitrary interleavings of
//! admissions, settlements (over and under the reservation, by scope) and
//! clock advances, over several client keys, model entries and provider keys.
//!
//! - Request limits match a reference GCRA written here, decision for
//!   decision, and no limit of `L` per window `W` ever admits more than
//!   `L + L·d/W` requests in any stretch of `d` (so exactly `L` at once).
//! - Admission is all or nothing: a refused demand changes no client key's
//!   counters, an admitted one takes exactly its amount from each of them, a
//!   refusal names a limit that really lacked room.
//!
//! proptest's default 256 cases take a second or two; `PROPTEST_CASES` raises it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use router_core::config::{self, Config};
use router_core::limits::{Demand, Headroom, Measure, Permit, Scope, Settlement, Window};
use router_limits::{ManualClock, MemoryLimiter, NoPersistence};
use time::macros::datetime;

/// Model entries: `a` has two provider keys (two sets of limits), `b` none.
const ENTRIES: usize = 2;
const KEYS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Admit {
        key: Option<usize>,
        entry: usize,
        /// Out of range picks no provider key.
        provider_key: usize,
        tokens: u64,
        micro_usd: u64,
    },
    /// Settles the permit at this index (modulo the live permits).
    Settle {
        permit: usize,
        model_only: bool,
        tokens: u64,
        micro_usd: u64,
    },
    Drop {
        permit: usize,
    },
    Advance(Duration),
}

fn op(max_tokens: u64) -> impl Strategy<Value = Op> {
    let advance = prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_millis(1)),
        Just(Duration::from_millis(350)),
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(7)),
        Just(Duration::from_secs(59)),
        Just(Duration::from_secs(61)),
        Just(Duration::from_secs(3600)),
        Just(Duration::from_secs(86_400)),
        (0u64..120_000_000_000).prop_map(Duration::from_nanos),
    ];
    prop_oneof![
        6 => (
            proptest::option::weighted(0.8, 0..KEYS),
            0..ENTRIES,
            0usize..3,
            0..=max_tokens,
            0u64..400_000,
        )
            .prop_map(|(key, entry, provider_key, tokens, micro_usd)| Op::Admit {
                key,
                entry,
                provider_key,
                tokens,
                micro_usd,
            }),
        2 => (any::<usize>(), any::<bool>(), 0..=max_tokens * 2, 0u64..800_000).prop_map(
            |(permit, model_only, tokens, micro_usd)| Op::Settle {
                permit,
                model_only,
                tokens,
                micro_usd,
            }
        ),
        1 => any::<usize>().prop_map(|permit| Op::Drop { permit }),
        3 => advance.prop_map(Op::Advance),
    ]
}

/// `rps: 3`-style lines for the limits that are set.
fn limit_lines(names: &[&str], values: &[Option<u64>]) -> String {
    names
        .iter()
        .zip(values)
        .filter_map(|(name, value)| value.map(|value| format!("    {name}: {value}\n")))
        .collect()
}

fn config_text(key_limits: &[String; KEYS], entry_limits: &[String; ENTRIES]) -> String {
    format!(
        "models:\n  - id: 1\n    name: a\n    provider: mock\n    provider_api_key: [\"pk-1\", \"pk-2\"]\n{}\
         \x20 - id: 2\n    name: b\n    provider: mock\n{}\
         api_keys:\n  - key: sk-a\n{}  - key: sk-b\n{}",
        entry_limits[0], entry_limits[1], key_limits[0], key_limits[1]
    )
}

struct Fixture {
    config: Config,
    clock: ManualClock,
    limiter: MemoryLimiter,
}

fn fixture(text: &str) -> Fixture {
    let config = config::parse(Path::new("props.yaml"), text, &|_| None)
        .unwrap_or_else(|errors| panic!("{text}\n{errors}"));
    let clock = ManualClock::new(datetime!(2025-06-30 23:58 UTC));
    let limiter = MemoryLimiter::new(&config, clock.clone(), Vec::new(), Arc::new(NoPersistence));
    Fixture {
        config,
        clock,
        limiter,
    }
}

impl Fixture {
    /// The provider key index a demand uses: entry `a` has keys 0 and 1,
    /// entry `b` none; anything else means "no provider key".
    fn provider_key(entry: usize, pick: usize) -> Option<usize> {
        (entry == 0 && pick < 2).then_some(pick)
    }

    fn demand(
        &self,
        key: Option<usize>,
        entry: usize,
        pick: usize,
        tokens: u64,
        micro_usd: u64,
    ) -> Demand<'_> {
        Demand {
            key: key.map(|index| &self.config.api_keys[index]),
            entry: &self.config.models[entry],
            provider_key: Self::provider_key(entry, pick),
            tokens,
            cost_usd: micro_usd as f64 / 1e6,
        }
    }

    fn headrooms(&self) -> Vec<Vec<Headroom>> {
        self.config
            .api_keys
            .iter()
            .map(|key| self.limiter.headroom(key))
            .collect()
    }
}

fn settle(permits: &mut Vec<Permit>, index: usize, model_only: bool, tokens: u64, micro_usd: u64) {
    if permits.is_empty() {
        return;
    }
    let index = index % permits.len();
    let used = Settlement {
        tokens,
        cost_usd: micro_usd as f64 / 1e6,
    };
    if model_only {
        // The failover path: the entry's scope now, the key's later.
        permits[index].settle_model(used);
    } else {
        permits.swap_remove(index).settle(used);
    }
}

/// One rolling request limit, as GCRA in whole nanoseconds scaled by the
/// limit (so one request costs exactly the window): the reference the
/// limiter must agree with.
#[derive(Debug, Clone)]
struct ReferenceLimit {
    limit: u64,
    window_nanos: u128,
    /// Theoretical arrival time, scaled.
    tat: u128,
    admitted_at: Vec<u64>,
}

impl ReferenceLimit {
    fn new(limit: u64, window: Duration) -> Self {
        Self {
            limit,
            window_nanos: window.as_nanos(),
            tat: 0,
            admitted_at: Vec::new(),
        }
    }

    fn now(&self, nanos: u64) -> u128 {
        u128::from(nanos) * u128::from(self.limit)
    }

    fn fits(&self, nanos: u64) -> bool {
        let depth = self.tat.saturating_sub(self.now(nanos));
        depth + self.window_nanos <= self.window_nanos * u128::from(self.limit)
    }

    fn admit(&mut self, nanos: u64) {
        self.tat = self.tat.max(self.now(nanos)) + self.window_nanos;
        self.admitted_at.push(nanos);
    }

    /// No stretch from one admission to a later one holds more than
    /// `L + L·d/W` admissions, whatever the reference says.
    fn check_windows(&self) -> Result<(), TestCaseError> {
        let times = &self.admitted_at;
        for first in 0..times.len() {
            for last in first..times.len() {
                let count = (last - first + 1) as u128;
                let stretch = u128::from(times[last] - times[first]);
                let allowed =
                    u128::from(self.limit) + u128::from(self.limit) * stretch / self.window_nanos;
                prop_assert!(
                    count <= allowed,
                    "{count} admissions in {stretch} ns under {} per {} ns",
                    self.limit,
                    self.window_nanos
                );
            }
        }
        Ok(())
    }
}

/// Whether a limit may refuse `amount`. A settlement that used more than
/// it reserved can push a limit past full; it then shows nothing remaining
/// and refuses even an empty demand until the excess has drained.
fn lacks_room(room: &Headroom, amount: u64) -> bool {
    room.remaining < amount || room.remaining == 0
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const SECOND: Duration = Duration::from_secs(1);

fn small_limit() -> impl Strategy<Value = Option<u64>> {
    proptest::option::weighted(0.7, 1u64..6)
}

proptest! {
    #[test]
    fn request_limits_match_the_reference_under_any_interleaving(
        keys in proptest::collection::vec((small_limit(), small_limit(), small_limit()), KEYS),
        entries in proptest::collection::vec((small_limit(), small_limit()), ENTRIES),
        ops in proptest::collection::vec(op(50), 0..80),
    ) {
        let key_lines: [String; KEYS] = std::array::from_fn(|index| {
            let (rps, rpm, rph) = keys[index];
            limit_lines(&["rps", "rpm", "rph"], &[rps, rpm, rph])
        });
        let entry_lines: [String; ENTRIES] = std::array::from_fn(|index| {
            let (rpm, rph) = entries[index];
            limit_lines(&["rpm", "rph"], &[rpm, rph])
        });
        let f = fixture(&config_text(&key_lines, &entry_lines));

        // The reference: per client key, and per entry and provider key.
        let mut key_refs: Vec<Vec<ReferenceLimit>> = keys
            .iter()
            .map(|(rps, rpm, rph)| {
                [(rps, SECOND), (rpm, MINUTE), (rph, HOUR)]
                    .into_iter()
                    .filter_map(|(limit, window)| limit.map(|limit| ReferenceLimit::new(limit, window)))
                    .collect()
            })
            .collect();
        let mut model_refs: Vec<Vec<Vec<ReferenceLimit>>> = entries
            .iter()
            .enumerate()
            .map(|(entry, (rpm, rph))| {
                let sets = if entry == 0 { 2 } else { 1 };
                let limits: Vec<ReferenceLimit> = [(rpm, MINUTE), (rph, HOUR)]
                    .into_iter()
                    .filter_map(|(limit, window)| limit.map(|limit| ReferenceLimit::new(limit, window)))
                    .collect();
                vec![limits; sets]
            })
            .collect();

        let mut now = 0u64;
        let mut permits = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Admit { key, entry, provider_key, tokens, micro_usd } => {
                    let result = f.limiter.try_admit(&f.demand(key, entry, provider_key, tokens, micro_usd));
                    let set = Fixture::provider_key(entry, provider_key).unwrap_or(0);
                    let key_limits = key.map_or(&[][..], |key| &key_refs[key][..]);
                    let expected = key_limits
                        .iter()
                        .chain(&model_refs[entry][set])
                        .all(|limit| limit.fits(now));
                    prop_assert_eq!(
                        result.is_ok(),
                        expected,
                        "step {}: {:?} at {} ns gave {:?}",
                        step,
                        op,
                        now,
                        result.as_ref().err()
                    );
                    if let Ok(permit) = result {
                        for limit in key.map_or(&mut [][..], |key| &mut key_refs[key][..]) {
                            limit.admit(now);
                        }
                        for limit in &mut model_refs[entry][set] {
                            limit.admit(now);
                        }
                        permits.push(permit);
                    }
                }
                Op::Settle { permit, model_only, tokens, micro_usd } => {
                    settle(&mut permits, permit, model_only, tokens, micro_usd);
                }
                Op::Drop { permit } => {
                    if !permits.is_empty() {
                        let index = permit % permits.len();
                        drop(permits.swap_remove(index));
                    }
                }
                Op::Advance(by) => {
                    f.clock.advance(by);
                    now += u64::try_from(by.as_nanos()).unwrap();
                }
            }
        }
        for limit in key_refs.iter().flatten().chain(model_refs.iter().flatten().flatten()) {
            limit.check_windows()?;
        }
    }

    #[test]
    fn admission_is_all_or_nothing_and_exact_for_every_key_limit(
        key_limits in proptest::collection::vec(
            (small_limit(), proptest::option::weighted(0.8, 20u64..200), proptest::option::weighted(0.5, 50u64..600), small_limit(), proptest::option::weighted(0.5, 1u64..3)),
            KEYS,
        ),
        entry_limits in proptest::collection::vec(
            (small_limit(), proptest::option::weighted(0.7, 20u64..200), proptest::option::weighted(0.4, 50u64..600)),
            ENTRIES,
        ),
        ops in proptest::collection::vec(op(120), 0..80),
    ) {
        let key_lines: [String; KEYS] = std::array::from_fn(|index| {
            let (rpm, tpm, tpd, rpd, budget) = key_limits[index];
            let mut lines = limit_lines(&["rpm", "tpm", "tpd", "rpd"], &[rpm, tpm, tpd, rpd]);
            if let Some(dollars) = budget {
                lines.push_str(&format!("    max_budget_usd: {dollars}\n    budget_period: day\n"));
            }
            lines
        });
        let entry_lines: [String; ENTRIES] = std::array::from_fn(|index| {
            let (rpm, tpm, tpd) = entry_limits[index];
            limit_lines(&["rpm", "tpm", "tpd"], &[rpm, tpm, tpd])
        });
        let f = fixture(&config_text(&key_lines, &entry_lines));

        let mut permits = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Admit { key, entry, provider_key, tokens, micro_usd } => {
                    let before = f.headrooms();
                    let result = f.limiter.try_admit(&f.demand(key, entry, provider_key, tokens, micro_usd));
                    let after = f.headrooms();
                    let amount = |measure: Measure| match measure {
                        Measure::Requests => 1,
                        Measure::Tokens => tokens,
                        Measure::Cost => micro_usd,
                    };
                    for (index, (rooms_before, rooms_after)) in before.iter().zip(&after).enumerate() {
                        for (room_before, room_after) in rooms_before.iter().zip(rooms_after) {
                            prop_assert!(room_after.remaining <= room_after.limit);
                            let charged = result.is_ok() && key == Some(index);
                            let expected = if charged {
                                room_before.remaining.checked_sub(amount(room_before.name.measure))
                            } else {
                                Some(room_before.remaining)
                            };
                            prop_assert_eq!(
                                Some(room_after.remaining),
                                expected,
                                "step {}: {:?} moved key {} {} from {} ({})",
                                step,
                                op,
                                index,
                                room_before.name,
                                room_before.remaining,
                                if result.is_ok() { "admitted" } else { "refused" }
                            );
                        }
                    }
                    match result {
                        Ok(permit) => permits.push(permit),
                        Err(refusal) => {
                            // A refusal in the key's scope names a key limit
                            // that lacked room; with room in all of them the
                            // model must be what refused. (When both lack
                            // room, either may be named: the longer wait.)
                            let rooms = key.map_or(&[][..], |key| &before[key][..]);
                            let short = rooms
                                .iter()
                                .any(|room| lacks_room(room, amount(room.name.measure)));
                            if refusal.name.scope == Scope::Key {
                                let room = rooms.iter().find(|room| room.name == refusal.name);
                                prop_assert!(
                                    room.is_some_and(|room| lacks_room(room, amount(room.name.measure))),
                                    "step {}: refused by {} which had room: {:?}",
                                    step,
                                    refusal.name,
                                    room
                                );
                            }
                            prop_assert!(
                                short || refusal.name.scope == Scope::Model,
                                "step {}: no key limit was short, yet {}",
                                step,
                                refusal
                            );
                            prop_assert!(refusal.retry_after > Duration::ZERO);
                            if refusal.name.window == Window::Second {
                                prop_assert!(refusal.retry_after <= SECOND);
                            }
                        }
                    }
                }
                Op::Settle { permit, model_only, tokens, micro_usd } => {
                    settle(&mut permits, permit, model_only, tokens, micro_usd);
                    for room in f.headrooms().iter().flatten() {
                        prop_assert!(room.remaining <= room.limit);
                    }
                }
                Op::Drop { permit } => {
                    if !permits.is_empty() {
                        let index = permit % permits.len();
                        drop(permits.swap_remove(index));
                    }
                }
                Op::Advance(by) => f.clock.advance(by),
            }
        }
    }
}
