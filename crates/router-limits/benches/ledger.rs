//! The ledger's cost on the request path and its writer's throughput.
//!
//! Each group carries its own baseline, so results read as ratios:
//! - `record`: `SqliteStore::record` against a plain `mpsc` send of the same
//!   record (the floor of any hand-off) and against `NoLedger` (dropping
//!   the record where it stands).
//! - `write_batch`: one batch (`BATCH_ROWS`, 64) of records through the
//!   store and a flush (channel, writer thread, one transaction) against
//!   the same rows inserted with rusqlite directly in one transaction (the
//!   floor SQLite sets).
//!
//! Run with `cargo bench -p router-limits --bench ledger`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use divan::counter::ItemsCount;
use divan::Bencher;
use router_core::usage::{NoLedger, Outcome, Tokens, UsageRecord, UsageSink, UsageSource};
use router_limits::store::BATCH_ROWS;
use router_limits::SqliteStore;
use rusqlite::{params, Connection};
use time::OffsetDateTime;

fn main() {
    divan::main();
}

fn sample_record() -> UsageRecord {
    UsageRecord {
        time: OffsetDateTime::now_utc(),
        request_id: "chatcmpl-8f14e45fceea167a5a36dedd4bea2543".to_owned(),
        key_id: 7,
        key_name: "team-a".to_owned(),
        model: "gpt-4o-mini".to_owned(),
        entry_index: Some(2),
        entry_id: Some(11),
        provider_key_index: Some(1),
        tokens: Tokens {
            prompt: 1_200,
            completion: 350,
            cached: 1_024,
            reasoning: 0,
        },
        cost_usd: 0.000_405,
        outcome: Outcome::Ok,
        error: None,
        latency: Duration::from_millis(812),
        upstream_latency: Some(Duration::from_millis(240)),
        refused_by: None,
        source: UsageSource::Upstream,
        stream: true,
    }
}

/// A database file of its own, removed with its WAL files on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let folder = std::env::temp_dir().join(format!(
            "router-limits-bench-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&folder).unwrap();
        Self(folder)
    }

    fn path(&self) -> PathBuf {
        self.0.join("ledger.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

mod record {
    use super::*;

    /// The request path: hand one record to the store.
    #[divan::bench(sample_count = 100, sample_size = 200)]
    fn sqlite_store(bencher: Bencher) {
        let db = TempDb::new("record");
        let store = SqliteStore::open(db.path(), Duration::from_secs(1)).unwrap();
        let record = sample_record();
        bencher
            .with_inputs(|| record.clone())
            .bench_local_values(|record| store.record(record));
        store.close().unwrap();
    }

    /// Baseline: the same record sent on a plain unbounded channel, drained
    /// (and dropped) by another thread, as the store's writer does.
    #[divan::bench(sample_count = 100, sample_size = 200)]
    fn plain_channel_send(bencher: Bencher) {
        let (sender, receiver) = mpsc::channel::<UsageRecord>();
        let drain = thread::spawn(move || receiver.into_iter().count());
        let record = sample_record();
        bencher
            .with_inputs(|| record.clone())
            .bench_local_values(|record| sender.send(record).unwrap());
        drop(sender);
        drain.join().unwrap();
    }

    /// Baseline: no ledger; the record is dropped where it stands.
    #[divan::bench(sample_count = 100, sample_size = 200)]
    fn no_ledger(bencher: Bencher) {
        let record = sample_record();
        bencher
            .with_inputs(|| record.clone())
            .bench_local_values(|record| NoLedger.record(record));
    }
}

mod write_batch {
    use super::*;

    /// One batch of records through the store, then a flush: what the
    /// writer thread sustains, per row.
    #[divan::bench(sample_count = 30, sample_size = 1)]
    fn sqlite_store(bencher: Bencher) {
        let db = TempDb::new("write");
        let store = SqliteStore::open(db.path(), Duration::from_secs(3600)).unwrap();
        let record = sample_record();
        bencher
            .counter(ItemsCount::new(BATCH_ROWS))
            .with_inputs(|| vec![record.clone(); BATCH_ROWS])
            .bench_local_values(|records| {
                for record in records {
                    store.record(record);
                }
                store.flush_blocking().unwrap();
            });
        store.close().unwrap();
    }

    /// Baseline: the same rows inserted directly, one transaction, one
    /// cached statement, in the store's schema and pragmas.
    #[divan::bench(sample_count = 30, sample_size = 1)]
    fn raw_rusqlite(bencher: Bencher) {
        let db = TempDb::new("raw");
        // Opening a store creates the schema and sets WAL (which persists).
        SqliteStore::open(db.path(), Duration::from_secs(3600))
            .unwrap()
            .close()
            .unwrap();
        let mut connection = Connection::open(db.path()).unwrap();
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .unwrap();
        let record = sample_record();
        let time = "2025-06-01T12:00:00.000000000Z";
        bencher
            .counter(ItemsCount::new(BATCH_ROWS))
            .bench_local(|| {
                let transaction = connection.transaction().unwrap();
                {
                    let mut insert = transaction
                        .prepare_cached(
                            "INSERT INTO usage (time, day, request_id, key_id, key_name, model, \
                             entry_index, entry_id, provider_key_index, prompt_tokens, \
                             completion_tokens, cached_tokens, reasoning_tokens, cost_usd, \
                             outcome, error, latency_ms, upstream_latency_ms, refused_by, \
                             source, stream) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
                             ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
                        )
                        .unwrap();
                    for _ in 0..BATCH_ROWS {
                        insert
                            .execute(params![
                                time,
                                "2025-06-01",
                                record.request_id,
                                7_i64,
                                record.key_name,
                                record.model,
                                2_i64,
                                11_i64,
                                1_i64,
                                1_200_i64,
                                350_i64,
                                1_024_i64,
                                0_i64,
                                record.cost_usd,
                                "ok",
                                None::<String>,
                                812.0_f64,
                                Some(240.0_f64),
                                None::<String>,
                                "upstream",
                                true,
                            ])
                            .unwrap();
                    }
                }
                transaction.commit().unwrap();
            });
    }
}
