//! The in-memory limiter against configs as users write them, on a manual
//! clock: exact counts under concurrency, all-or-nothing admission, refunds
//! and charges, calendar days and months, persistence. Nothing sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use router_core::config::{self, Config};
use router_core::limits::{
    Demand, Headroom, LimitName, Measure, Permit, Refusal, Scope, Settlement, Window,
};
use router_limits::{CounterRow, CounterSink, ManualClock, MemoryLimiter};
use sha2::{Digest, Sha256};
use time::macros::datetime;
use time::OffsetDateTime;

/// Every row the limiter reports, in order.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<CounterRow>>);

impl CounterSink for Recorder {
    fn update(&self, row: CounterRow) {
        self.0.lock().unwrap().push(row);
    }
}

impl Recorder {
    fn take(&self) -> Vec<(String, String, u64)> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_iter()
            .map(|row| (row.limit.to_string(), row.period.to_string(), row.value))
            .collect()
    }
}

struct Fixture {
    config: Config,
    clock: ManualClock,
    sink: Arc<Recorder>,
    limiter: MemoryLimiter,
}

const NOON: OffsetDateTime = datetime!(2025-06-30 12:00 UTC);

fn fixture(yaml: &str) -> Fixture {
    fixture_at(yaml, NOON, Vec::new())
}

fn fixture_at(yaml: &str, start: OffsetDateTime, restored: Vec<CounterRow>) -> Fixture {
    let config = config::parse(Path::new("limits.yaml"), yaml, &|_| None).unwrap();
    let clock = ManualClock::new(start);
    let sink = Arc::new(Recorder::default());
    let limiter = MemoryLimiter::new(&config, clock.clone(), restored, sink.clone());
    Fixture {
        config,
        clock,
        sink,
        limiter,
    }
}

impl Fixture {
    /// A demand of client key `key` (if any) on entry `entry`, provider key
    /// `provider_key`.
    fn demand(
        &self,
        key: Option<usize>,
        entry: usize,
        provider_key: Option<usize>,
        tokens: u64,
        cost_usd: f64,
    ) -> Demand<'_> {
        Demand {
            key: key.map(|index| &self.config.api_keys[index]),
            entry: &self.config.models[entry],
            provider_key,
            tokens,
            cost_usd,
        }
    }

    /// Client key 0 on entry 0 (no provider key).
    fn admit(&self, tokens: u64) -> Result<Permit, Refusal> {
        self.limiter
            .try_admit(&self.demand(Some(0), 0, None, tokens, 0.0))
    }

    fn admit_model(&self, provider_key: Option<usize>, tokens: u64) -> Result<Permit, Refusal> {
        self.limiter
            .try_admit(&self.demand(None, 0, provider_key, tokens, 0.0))
    }

    fn headroom(&self, key: usize, measure: Measure, window: Window) -> Headroom {
        self.limiter
            .headroom(&self.config.api_keys[key])
            .into_iter()
            .find(|room| room.name.measure == measure && room.name.window == window)
            .unwrap()
    }

    fn remaining(&self, measure: Measure, window: Window) -> u64 {
        self.headroom(0, measure, window).remaining
    }
}

fn name(scope: Scope, measure: Measure, window: Window) -> LimitName {
    LimitName {
        scope,
        measure,
        window,
    }
}

fn used(tokens: u64) -> Settlement {
    Settlement {
        tokens,
        cost_usd: 0.0,
    }
}

fn fingerprint(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// One model without limits, one client key with the given limit lines.
fn key_config(limits: &str) -> String {
    format!(
        "models:\n  - name: m\n    provider: mock\napi_keys:\n  - key: sk-a\n{}",
        indent(limits)
    )
}

/// One model with the given limit lines and provider keys, one client key
/// without limits.
fn model_config(limits: &str, provider_keys: &[&str]) -> String {
    let keys = if provider_keys.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = provider_keys
            .iter()
            .map(|key| format!("\"{key}\""))
            .collect();
        format!("    provider_api_key: [{}]\n", list.join(", "))
    };
    format!(
        "models:\n  - id: 7\n    name: m\n    provider: mock\n{keys}{}api_keys:\n  - key: sk-a\n",
        indent(limits)
    )
}

fn indent(lines: &str) -> String {
    lines.lines().map(|line| format!("    {line}\n")).collect()
}

/// Runs `admit` on `threads` threads released at once; the results.
fn race<T: Send>(threads: usize, admit: impl Fn() -> T + Sync) -> Vec<T> {
    let start = Barrier::new(threads);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    admit()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    })
}

#[test]
fn two_hundred_threads_against_rpm_50_admit_exactly_50() {
    let f = fixture(&key_config("rpm: 50"));
    let results = race(200, || f.admit(10));
    let admitted = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(admitted, 50);
    for refusal in results.iter().filter_map(|result| result.as_ref().err()) {
        assert_eq!(
            refusal.name,
            name(Scope::Key, Measure::Requests, Window::Minute)
        );
        assert_eq!((refusal.limit, refusal.remaining), (50, 0));
        assert!(!refusal.never_fits);
        // One request returns every 1.2 s.
        assert_eq!(refusal.retry_after, Duration::from_millis(1200));
    }
}

#[test]
fn token_limits_admit_exactly_what_fits_under_concurrency() {
    let f = fixture(&key_config("tpm: 1000"));
    let results = race(200, || f.admit(7));
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1000 / 7);
    assert_eq!(f.remaining(Measure::Tokens, Window::Minute), 1000 % 7);

    let f = fixture(&model_config("tpm: 1000\ntpd: 500", &[]));
    let results = race(200, || f.admit_model(None, 9));
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 500 / 9);
}

#[test]
fn a_model_refusal_under_concurrency_consumes_nothing_of_the_key() {
    let yaml = "models:\n  - name: m\n    provider: mock\n    rpm: 25\n\
                api_keys:\n  - key: sk-a\n    rpm: 40\n    tpm: 100000\n    rpd: 1000\n";
    let f = fixture(yaml);
    let results = race(200, || f.admit(10));
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 25);
    assert_eq!(f.remaining(Measure::Requests, Window::Minute), 15);
    assert_eq!(f.remaining(Measure::Tokens, Window::Minute), 100_000 - 250);
    assert_eq!(f.remaining(Measure::Requests, Window::Day), 975);
    for refusal in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refusal.name.scope, Scope::Model);
    }
}

#[test]
fn refunds_under_concurrency_keep_the_books_exact() {
    let f = fixture(&key_config("tpm: 1000\ntpd: 100000"));
    let results = race(200, || {
        let permit = f.admit(10)?;
        permit.settle(used(4));
        Ok::<(), Refusal>(())
    });
    let admitted = results.iter().filter(|r| r.is_ok()).count() as u64;
    // Each admission leaves 4 tokens in use once settled; whatever the
    // interleaving, the limit shows exactly that.
    assert!(admitted >= 100, "refunds only ever add capacity");
    assert_eq!(
        f.remaining(Measure::Tokens, Window::Minute),
        1000 - 4 * admitted
    );
    assert_eq!(
        f.remaining(Measure::Tokens, Window::Day),
        100_000 - 4 * admitted
    );
}

#[test]
fn a_model_refusal_consumes_nothing_of_the_key() {
    let yaml = "models:\n  - name: m\n    provider: mock\n    rpm: 1\n\
                api_keys:\n  - key: sk-a\n    rpm: 10\n    tpm: 1000\n    rpd: 10\n";
    let f = fixture(yaml);
    f.admit(100).unwrap();
    f.sink.take();
    let refusal = f.admit(100).unwrap_err();
    assert_eq!(
        refusal.name,
        name(Scope::Model, Measure::Requests, Window::Minute)
    );
    assert_eq!(f.remaining(Measure::Requests, Window::Minute), 9);
    assert_eq!(f.remaining(Measure::Tokens, Window::Minute), 900);
    assert_eq!(f.remaining(Measure::Requests, Window::Day), 9);
    assert_eq!(f.sink.take(), [], "a refusal changes no day counter");
}

#[test]
fn a_key_refusal_consumes_nothing_of_the_model() {
    let f = fixture(&{
        let mut yaml = model_config("rpm: 5\ntpm: 1000", &[]);
        yaml.push_str("    rpm: 1\n");
        yaml
    });
    f.admit(100).unwrap();
    let refusal = f.admit(100).unwrap_err();
    assert_eq!(
        refusal.name,
        name(Scope::Key, Measure::Requests, Window::Minute)
    );
    // The model counted one request and 100 tokens, no more.
    for _ in 0..4 {
        f.admit_model(None, 200).unwrap();
    }
    let refusal = f.admit_model(None, 1).unwrap_err();
    assert_eq!(
        refusal.name,
        name(Scope::Model, Measure::Requests, Window::Minute)
    );
    let refusal = f.admit_model(None, 100).unwrap_err();
    assert_eq!(refusal.remaining, 0);
}

#[test]
fn refunds_restore_capacity() {
    let f = fixture(&key_config("tpm: 1000\ntpd: 5000"));
    let permit = f.admit(800).unwrap();
    assert!(f.admit(800).is_err());
    permit.settle(used(200));
    assert_eq!(f.remaining(Measure::Tokens, Window::Minute), 800);
    assert_eq!(f.remaining(Measure::Tokens, Window::Day), 4800);
    f.admit(800).unwrap();
}

#[test]
fn a_late_settlement_hands_back_nothing_others_have_used_since() {
    let f = fixture(&key_config("tpm: 1000"));
    // A long stream reserves the whole minute and ends 70 s later having
    // used 100; meanwhile the window emptied and another request took it.
    let stream = f.admit(1000).unwrap();
    f.clock.advance(Duration::from_secs(70));
    f.admit(1000).unwrap();
    stream.settle(used(100));
    assert_eq!(f.remaining(Measure::Tokens, Window::Minute), 0);
}

#[test]
fn settling_above_the_reservation_charges_the_excess() {
    let f = fixture(&key_config("tpm: 1000\ntpd: 5000"));
    f.admit(100).unwrap().settle(used(1300));
    assert_eq!(f.remaining(Measure::Tokens, Window::Minute), 0);
    assert_eq!(f.remaining(Measure::Tokens, Window::Day), 3700);
    // 1300 in use: 301 tokens (60 ms each) must drain before one fits.
    let refusal = f.admit(1).unwrap_err();
    assert_eq!(refusal.retry_after, Duration::from_millis(301 * 60));
    let full = f.headroom(0, Measure::Tokens, Window::Minute);
    assert_eq!(full.reset, Duration::from_secs(78));
    f.clock.advance(Duration::from_millis(301 * 60));
    f.admit(1).unwrap();
}

#[test]
fn a_dropped_permit_keeps_its_reservation() {
    let f = fixture(&key_config("tpm: 1000"));
    drop(f.admit(600).unwrap());
    assert_eq!(f.remaining(Measure::Tokens, Window::Minute), 400);
}

#[test]
fn scopes_settle_apart() {
    let yaml = "models:\n  - name: m\n    provider: mock\n    tpm: 1000\n\
                api_keys:\n  - key: sk-a\n    tpm: 1000\n";
    let f = fixture(yaml);
    let mut permit = f.admit(500).unwrap();
    // The attempt failed before the upstream counted anything.
    permit.settle_model(used(0));
    f.admit_model(None, 1000).unwrap();
    assert_eq!(f.remaining(Measure::Tokens, Window::Minute), 500);
    // The answer from another attempt used 50.
    permit.settle(used(50));
    assert_eq!(f.remaining(Measure::Tokens, Window::Minute), 950);
}

#[test]
fn day_counters_restart_at_utc_midnight() {
    let f = fixture_at(
        &key_config("rpd: 3"),
        datetime!(2025-06-30 23:59 UTC),
        Vec::new(),
    );
    for _ in 0..3 {
        f.admit(1).unwrap();
    }
    let refusal = f.admit(1).unwrap_err();
    assert_eq!(
        refusal.name,
        name(Scope::Key, Measure::Requests, Window::Day)
    );
    assert_eq!(refusal.retry_after, Duration::from_secs(60));
    assert!(refusal.is_quota() && !refusal.never_fits);
    f.clock
        .advance(Duration::from_secs(60) - Duration::from_nanos(1));
    assert_eq!(f.admit(1).unwrap_err().retry_after, Duration::from_nanos(1));
    f.clock.advance(Duration::from_nanos(1));
    f.admit(1).unwrap();
    assert_eq!(f.remaining(Measure::Requests, Window::Day), 2);

    let id = format!("key:{}:rpd", fingerprint("sk-a"));
    let row = |period: &str, value| (id.clone(), period.to_owned(), value);
    assert_eq!(
        f.sink.take(),
        [
            row("2025-06-30", 1),
            row("2025-06-30", 2),
            row("2025-06-30", 3),
            row("2025-07-01", 1),
        ]
    );
}

#[test]
fn restored_rows_of_the_current_period_are_honoured() {
    let key = fingerprint("sk-a");
    let rows = vec![
        CounterRow {
            limit: format!("key:{key}:rpd").into(),
            period: "2025-06-30".into(),
            value: 2,
        },
        CounterRow {
            limit: format!("key:{key}:tpd").into(),
            period: "2025-06-29".into(),
            value: 999,
        },
        CounterRow {
            limit: format!("key:{key}:budget-month").into(),
            period: "2025-06".into(),
            value: 900_000,
        },
    ];
    let yaml = format!("{}    max_budget_usd: 1\n", key_config("rpd: 3\ntpd: 1000"));
    let f = fixture_at(&yaml, NOON, rows);
    assert_eq!(f.remaining(Measure::Requests, Window::Day), 1);
    assert_eq!(
        f.remaining(Measure::Tokens, Window::Day),
        1000,
        "yesterday's row is ignored"
    );
    assert_eq!(f.remaining(Measure::Cost, Window::Month), 100_000);
    let demand = f.demand(Some(0), 0, None, 10, 0.2);
    let refusal = f.limiter.try_admit(&demand).unwrap_err();
    assert_eq!(refusal.name, name(Scope::Key, Measure::Cost, Window::Month));
    f.admit(10).unwrap();
    let refusal = f.admit(10).unwrap_err();
    assert_eq!(
        refusal.name,
        name(Scope::Key, Measure::Requests, Window::Day)
    );
}

#[test]
fn model_limits_are_per_provider_key() {
    let f = fixture(&model_config("rpm: 2\nrpd: 10", &["pk-one", "pk-two"]));
    f.admit_model(Some(0), 1).unwrap();
    f.admit_model(Some(0), 1).unwrap();
    let refusal = f.admit_model(Some(0), 1).unwrap_err();
    assert_eq!(
        refusal.name,
        name(Scope::Model, Measure::Requests, Window::Minute)
    );
    f.admit_model(Some(1), 1).unwrap();
    f.admit_model(Some(1), 1).unwrap();
    assert!(f.admit_model(Some(1), 1).is_err());

    let rows = f.sink.take();
    let id = |key: &str| format!("model:7:{}:rpd", fingerprint(key));
    assert_eq!(rows[1], (id("pk-one"), "2025-06-30".to_owned(), 2));
    assert_eq!(rows[3], (id("pk-two"), "2025-06-30".to_owned(), 2));

    // An entry without keys has one set of limits, named by entry.
    let yaml = "models:\n  - name: m\n    provider: mock\n    rpd: 1\napi_keys: []\n";
    let f = fixture(yaml);
    f.admit_model(None, 1).unwrap();
    assert!(f.admit_model(None, 1).is_err());
    assert_eq!(
        f.sink.take(),
        [("model:m#0:nokey:rpd".to_owned(), "2025-06-30".to_owned(), 1)]
    );
}

#[test]
fn a_demand_beyond_the_whole_limit_never_fits() {
    let f = fixture(&format!(
        "{}    max_budget_usd: 1\n",
        key_config("tpm: 1000")
    ));
    let refusal = f.admit(1001).unwrap_err();
    assert_eq!(
        refusal.name,
        name(Scope::Key, Measure::Tokens, Window::Minute)
    );
    assert!(refusal.never_fits && refusal.is_quota());
    assert_eq!((refusal.limit, refusal.remaining), (1000, 1000));
    assert!(!refusal.retry_after.is_zero());

    let refusal = f
        .limiter
        .try_admit(&f.demand(Some(0), 0, None, 1, 1.5))
        .unwrap_err();
    assert_eq!(refusal.name, name(Scope::Key, Measure::Cost, Window::Month));
    assert!(refusal.never_fits);
    assert_eq!(refusal.limit, 1_000_000);

    // A demand that never fits outranks one that merely has to wait.
    f.admit(1000).unwrap();
    assert!(f.admit(1001).unwrap_err().never_fits);
    assert!(!f.admit(1).unwrap_err().never_fits);
}

#[test]
fn retry_after_is_exact_for_rolling_windows() {
    // 7 per minute: one every 60/7 s = 8_571_428_571.4 ns.
    let f = fixture(&key_config("rpm: 7"));
    for _ in 0..7 {
        f.admit(1).unwrap();
    }
    let wait = f.admit(1).unwrap_err().retry_after;
    assert_eq!(wait, Duration::from_nanos(8_571_428_572));
    f.clock.advance(wait - Duration::from_nanos(1));
    assert_eq!(f.admit(1).unwrap_err().retry_after, Duration::from_nanos(1));
    f.clock.advance(Duration::from_nanos(1));
    f.admit(1).unwrap();
}

#[test]
fn the_longest_wait_is_reported() {
    let yaml = "models:\n  - name: m\n    provider: mock\n    rpd: 1\n\
                api_keys:\n  - key: sk-a\n    rps: 1\n";
    let f = fixture(yaml);
    f.admit(1).unwrap();
    let refusal = f.admit(1).unwrap_err();
    assert_eq!(
        refusal.name,
        name(Scope::Model, Measure::Requests, Window::Day)
    );
    assert_eq!(refusal.retry_after, Duration::from_secs(12 * 3600));
}

#[test]
fn the_sink_receives_absolute_values() {
    let yaml = format!(
        "{}    max_budget_usd: 2\n    budget_period: day\n",
        key_config("tpd: 1000")
    );
    let f = fixture(&yaml);
    let key = fingerprint("sk-a");
    let first = f
        .limiter
        .try_admit(&f.demand(Some(0), 0, None, 100, 0.25))
        .unwrap();
    let second = f
        .limiter
        .try_admit(&f.demand(Some(0), 0, None, 50, 0.5))
        .unwrap();
    first.settle(Settlement {
        tokens: 30,
        cost_usd: 0.125,
    });
    // Used as reserved: nothing changes, nothing is reported.
    second.settle(Settlement {
        tokens: 50,
        cost_usd: 0.5,
    });
    let tpd = format!("key:{key}:tpd");
    let budget = format!("key:{key}:budget-day");
    let day = "2025-06-30".to_owned();
    assert_eq!(
        f.sink.take(),
        [
            (tpd.clone(), day.clone(), 100),
            (budget.clone(), day.clone(), 250_000),
            (tpd.clone(), day.clone(), 150),
            (budget.clone(), day.clone(), 750_000),
            (tpd, day.clone(), 80),
            (budget, day, 625_000),
        ]
    );
}

#[test]
fn budgets_count_micro_usd_and_restart_with_the_month() {
    let f = fixture_at(
        &format!("{}    max_budget_usd: 1\n", key_config("")),
        datetime!(2025-06-30 23:00 UTC),
        Vec::new(),
    );
    let spend = |usd| f.limiter.try_admit(&f.demand(Some(0), 0, None, 1, usd));
    let first = spend(0.4).unwrap();
    spend(0.4).unwrap();
    let refusal = spend(0.4).unwrap_err();
    assert_eq!(refusal.name, name(Scope::Key, Measure::Cost, Window::Month));
    assert_eq!((refusal.limit, refusal.remaining), (1_000_000, 200_000));
    assert_eq!(refusal.retry_after, Duration::from_secs(3600));
    assert!(refusal.is_quota());
    // The first cost a quarter of its worst case.
    first.settle(Settlement {
        tokens: 1,
        cost_usd: 0.1,
    });
    spend(0.4).unwrap();
    assert!(spend(0.4).is_err());
    f.clock.advance(Duration::from_secs(3600));
    spend(0.4).unwrap();
    assert_eq!(f.remaining(Measure::Cost, Window::Month), 600_000);
}

#[test]
fn rate_info_names_the_tightest_limits() {
    let yaml = "models:\n  - name: m\n    provider: mock\n    rpm: 5\n    tpm: 200\n\
                api_keys:\n  - key: sk-a\n    rpm: 10\n    rph: 100\n    tpm: 1000\n";
    let f = fixture(yaml);
    let permit = f.admit(100).unwrap();
    let rate = permit.rate();
    assert_eq!(
        rate.requests,
        Some(Headroom {
            name: name(Scope::Model, Measure::Requests, Window::Minute),
            limit: 5,
            remaining: 4,
            reset: Duration::from_secs(12),
        })
    );
    assert_eq!(
        rate.tokens,
        Some(Headroom {
            name: name(Scope::Model, Measure::Tokens, Window::Minute),
            limit: 200,
            remaining: 100,
            reset: Duration::from_secs(30),
        })
    );
}

#[test]
fn key_headroom_lists_every_limit_of_the_key() {
    let yaml = format!(
        "{}    max_budget_usd: 3\n    budget_period: day\n",
        key_config("rps: 2\nrpm: 60\nrpd: 100\ntpm: 6000\ntpd: 50000")
    );
    let f = fixture_at(&yaml, datetime!(2025-06-30 18:00 UTC), Vec::new());
    f.limiter
        .try_admit(&f.demand(Some(0), 0, None, 600, 1.0))
        .unwrap();
    let rows: Vec<(String, u64, u64, Duration)> = f
        .limiter
        .headroom(&f.config.api_keys[0])
        .into_iter()
        .map(|room| {
            (
                room.name.to_string(),
                room.limit,
                room.remaining,
                room.reset,
            )
        })
        .collect();
    let six_hours = Duration::from_secs(6 * 3600);
    assert_eq!(
        rows,
        [
            ("key rps".to_owned(), 2, 1, Duration::from_millis(500)),
            ("key rpm".to_owned(), 60, 59, Duration::from_secs(1)),
            ("key rpd".to_owned(), 100, 99, six_hours),
            ("key tpm".to_owned(), 6000, 5400, Duration::from_secs(6)),
            ("key tpd".to_owned(), 50000, 49400, six_hours),
            (
                "key budget per day".to_owned(),
                3_000_000,
                2_000_000,
                six_hours
            ),
        ]
    );
    // After midnight the day limits read whole again, before any admission.
    f.clock.advance(six_hours);
    let day = f.headroom(0, Measure::Requests, Window::Day);
    assert_eq!((day.remaining, day.reset), (100, Duration::ZERO));
}

#[test]
fn keys_and_entries_without_limits_are_unlimited() {
    let f = fixture(&key_config(""));
    let permit = f.admit(1_000_000).unwrap();
    assert_eq!(permit.rate(), Default::default());
    assert!(f.limiter.headroom(&f.config.api_keys[0]).is_empty());
}

#[test]
fn different_keys_have_different_counters() {
    let yaml = "models:\n  - name: m\n    provider: mock\n\
                api_keys:\n  - key: sk-a\n    rpm: 1\n  - key: sk-b\n    rpm: 1\n";
    let f = fixture(yaml);
    f.admit(1).unwrap();
    assert!(f.admit(1).is_err());
    f.limiter
        .try_admit(&f.demand(Some(1), 0, None, 1, 0.0))
        .unwrap();
    assert_eq!(
        f.headroom(1, Measure::Requests, Window::Minute).remaining,
        0
    );
}

#[test]
fn limits_come_back_as_time_passes() {
    let f = fixture(&key_config("rpm: 60\ntpm: 600"));
    for _ in 0..6 {
        f.admit(100).unwrap();
    }
    assert!(f.admit(100).is_err());
    // 100 tokens return every 10 s; the requests were never the bound.
    f.clock.advance(Duration::from_secs(10));
    f.admit(100).unwrap();
    assert!(f.admit(1).is_err());
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(f.remaining(Measure::Tokens, Window::Minute), 600);
    assert_eq!(f.remaining(Measure::Requests, Window::Minute), 60);
}

/// Reloads `fixture` with `yaml`: the limiter carries its state over.
fn reload(fixture: Fixture, yaml: &str) -> Fixture {
    let config = config::parse(Path::new("limits.yaml"), yaml, &|_| None).unwrap();
    let limiter = fixture.limiter.reconfigured(&config);
    Fixture {
        config,
        limiter,
        ..fixture
    }
}

#[test]
fn a_reload_keeps_the_state_of_every_limit_that_still_exists() {
    let fixture = fixture(&key_config("rpm: 2\nrpd: 5\n"));
    fixture.admit(1).unwrap();
    fixture.admit(1).unwrap();
    assert!(fixture.admit(1).is_err());
    // The same limits: the very same counters, nothing handed out again.
    let fixture = reload(fixture, &key_config("rpm: 2\nrpd: 5\n"));
    assert!(fixture.admit(1).is_err());
    // A limit raised takes its new value from the next admission, counted
    // from what was used; the day keeps its count.
    let fixture = reload(fixture, &key_config("rpm: 3\nrpd: 5\n"));
    fixture.admit(1).unwrap();
    assert!(fixture.admit(1).is_err());
    assert_eq!(fixture.remaining(Measure::Requests, Window::Day), 2);
    // A limit lowered below what was used refuses at once.
    let fixture = reload(fixture, &key_config("rpm: 100\nrpd: 3\n"));
    let refusal = fixture.admit(1).unwrap_err();
    assert_eq!(
        refusal.name,
        name(Scope::Key, Measure::Requests, Window::Day)
    );
}

#[test]
fn a_reload_starts_new_keys_empty_and_follows_keys_by_secret_not_position() {
    let two_keys = "models:\n  - name: m\n    provider: mock\napi_keys:\n  - key: sk-a\n    rpm: 1\n  - key: sk-b\n    rpm: 1\n";
    let fixture = fixture(two_keys);
    fixture.admit(1).unwrap();
    // sk-a moves to the second position and a new key takes the first.
    let moved = "models:\n  - name: m\n    provider: mock\napi_keys:\n  - key: sk-new\n    rpm: 1\n  - key: sk-a\n    rpm: 1\n";
    let fixture = reload(fixture, moved);
    assert!(fixture
        .limiter
        .try_admit(&fixture.demand(Some(1), 0, None, 1, 0.0))
        .is_err());
    fixture.admit(1).unwrap();
}

#[test]
fn permits_taken_before_a_reload_settle_against_their_own_limits() {
    let fixture = fixture(&key_config("tpm: 1000\n"));
    let permit = fixture.admit(600).unwrap();
    let fixture = reload(fixture, &key_config("tpm: 1000\n"));
    // The set is shared, so the refund reaches the new limiter.
    permit.settle(used(100));
    assert_eq!(fixture.remaining(Measure::Tokens, Window::Minute), 900);
}
