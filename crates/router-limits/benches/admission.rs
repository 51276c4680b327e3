//! What admission costs on the request path.
//!
//! Each benchmark admits and settles one request against four limits
//! (client key rpm + tpm, model rpm + tpm), reserving 1000 tokens and
//! settling with 600 (the refund path). Baselines, so results read as
//! ratios:
//! - `baseline_mutex`: one uncontended `Mutex` lock/unlock pair (an
//!   admission takes two, one per set, and one more to settle each scope);
//! - `baseline_clock`: one read of the monotonic clock (an admission reads
//!   it once, each settlement once).
//!
//! Variants: `single_thread`; `two_threads_two_keys` (two threads, each its
//! own client key and provider key: no lock shared, so the ratio to
//! `single_thread` shows what contention the design leaves); and
//! `two_threads_one_key` (both threads on the same key and provider key:
//! they serialise on its locks, the worst case). `with_day_limits` adds
//! `rpd` and `tpd` (calendar counters, a UTC clock read and sink reports).
//!
//! Run with `cargo bench -p router-limits --bench admission`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use divan::{black_box, Bencher};
use router_core::config::{self, Config};
use router_core::limits::{Demand, Settlement};
use router_limits::{Clock, MemoryLimiter, NoPersistence, SystemClock};

fn main() {
    divan::main();
}

/// Limits high enough never to refuse: the benchmark measures admission,
/// not waiting.
const LIMITS: &str = "
models:
  - name: m
    provider: mock
    rpm: 1000000000000
    tpm: 1000000000000000
    provider_api_key: [pk-one, pk-two]
api_keys:
  - key: sk-one
    rpm: 1000000000000
    tpm: 1000000000000000
  - key: sk-two
    rpm: 1000000000000
    tpm: 1000000000000000
";

const DAY_LIMITS: &str = "
models:
  - name: m
    provider: mock
    rpm: 1000000000000
    tpm: 1000000000000000
    rpd: 1000000000000
    tpd: 1000000000000000
api_keys:
  - key: sk-one
    rpm: 1000000000000
    tpm: 1000000000000000
    rpd: 1000000000000
    tpd: 1000000000000000
";

struct Bench {
    config: Config,
    limiter: MemoryLimiter,
}

impl Bench {
    fn new(yaml: &str) -> Self {
        let config = config::parse(Path::new("bench.yaml"), yaml, &|_| None).unwrap();
        let limiter = MemoryLimiter::new(
            &config,
            SystemClock::new(),
            Vec::new(),
            Arc::new(NoPersistence),
        );
        Self { config, limiter }
    }

    /// Admits and settles one request as client key `slot` on provider
    /// key `slot`.
    fn admit_and_settle(&self, slot: usize) {
        let demand = Demand {
            key: Some(&self.config.api_keys[slot]),
            entry: &self.config.models[0],
            provider_key: Some(slot),
            tokens: 1000,
            cost_usd: 0.0,
        };
        let permit = self.limiter.try_admit(black_box(&demand)).unwrap();
        permit.settle(Settlement {
            tokens: 600,
            cost_usd: 0.0,
        });
    }
}

static FOUR_LIMITS: LazyLock<Bench> = LazyLock::new(|| Bench::new(LIMITS));
static WITH_DAY_LIMITS: LazyLock<Bench> = LazyLock::new(|| Bench::new(DAY_LIMITS));

#[divan::bench]
fn baseline_mutex(bencher: Bencher) {
    let counter = Mutex::new(0u64);
    bencher.bench(|| {
        *black_box(&counter).lock().unwrap() += 1;
    });
}

#[divan::bench]
fn baseline_clock(bencher: Bencher) {
    let clock = SystemClock::new();
    bencher.bench(|| black_box(&clock).monotonic_nanos());
}

#[divan::bench]
fn single_thread(bencher: Bencher) {
    let bench = &*FOUR_LIMITS;
    bencher.bench(|| bench.admit_and_settle(0));
}

#[divan::bench]
fn with_day_limits(bencher: Bencher) {
    let bench = &*WITH_DAY_LIMITS;
    bencher.bench(|| bench.admit_and_settle(0));
}

/// Hands each benchmark thread its own key the first time it asks.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % 2;
}

#[divan::bench(threads = 2)]
fn two_threads_two_keys(bencher: Bencher) {
    let bench = &*FOUR_LIMITS;
    bencher.bench(|| bench.admit_and_settle(SLOT.with(|slot| *slot)));
}

#[divan::bench(threads = 2)]
fn two_threads_one_key(bencher: Bencher) {
    let bench = &*FOUR_LIMITS;
    bencher.bench(|| bench.admit_and_settle(0));
}
