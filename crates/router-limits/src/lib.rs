//! router-limits: request and token limiters, day quotas, budgets, the
//! usage ledger and the token counter.
//!
//! It implements the ports router-core defines (`Limiter`, `UsageSink`,
//! `UsageStore`, `TokenCounter`). It is the only crate that names `governor`
//! (its clocks), `rusqlite` and `tokio-postgres`. It knows nothing of HTTP.

pub mod limiter;
pub mod store;
pub mod tokens;

pub use limiter::{
    Clock, ManualClock, MemoryLimiter, RedisHealthBoard, RedisLimiter, RedisLimiterError,
    SystemClock,
};
pub use store::{
    PostgresOptions, PostgresStore, PostgresStoreError, PostgresStoreStats, SqliteStore, StoreError,
};
pub use tokens::TiktokenCounter;

use std::fmt;
use std::sync::Arc;

/// The value of one calendar-window counter (a day quota or a budget), as
/// the limiter persists it so that a restart never hands out a fresh day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    /// A stable id of the limit: it names the limit and whom it applies to
    /// by fingerprints and ids, never by a secret (e.g. `key:1a2b3c4d5e6f7a8b:rpd`).
    /// Shared with the limiter, which sends a row on every change: a row
    /// costs no allocation.
    pub limit: Arc<str>,
    /// The calendar period: `YYYY-MM-DD` for days, `YYYY-MM` for months.
    pub period: Arc<str>,
    /// Requests, tokens or micro-USD used in that period.
    pub value: u64,
}

/// Takes counter updates; must not block (the store writes them in batches,
/// keeping only the latest value of each limit and period).
pub trait CounterSink: Send + Sync + fmt::Debug {
    fn update(&self, row: CounterRow);
}

/// A sink that keeps nothing (limits without persistence, and tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPersistence;

impl CounterSink for NoPersistence {
    fn update(&self, _row: CounterRow) {}
}
