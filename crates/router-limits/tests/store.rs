//! The SQLite ledger on real temporary files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use router_core::limits::{LimitName, Measure, Scope, Window};
use router_core::usage::{
    Bucket, ErrorQuery, GroupBy, Outcome, SeriesPoint, Tokens, UsageQuery, UsageRecord, UsageSink,
    UsageSource, UsageStore, UsageTotals,
};
use router_limits::store::{SqliteStore, StoreError, SCHEMA_VERSION};
use router_limits::{CounterRow, CounterSink};
use rusqlite::Connection;
use time::macros::datetime;
use time::OffsetDateTime;

/// Long enough that only an explicit flush (or a full batch) writes.
const NEVER: Duration = Duration::from_secs(3600);

/// A folder of its own under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "router-limits-{test}-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn db(&self) -> PathBuf {
        self.0.join("router.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn record(request_id: &str, time: OffsetDateTime) -> UsageRecord {
    UsageRecord {
        time,
        request_id: request_id.to_owned(),
        key_id: 7,
        key_name: "team-a".to_owned(),
        model: "gpt-4o".to_owned(),
        entry_index: Some(2),
        entry_id: Some(11),
        provider_key_index: Some(1),
        tokens: Tokens {
            prompt: 100,
            completion: 40,
            cached: 30,
            reasoning: 12,
        },
        cost_usd: 0.000_123_456_789,
        outcome: Outcome::Ok,
        error: None,
        latency: Duration::from_nanos(1_234_567_891),
        upstream_latency: Some(Duration::from_micros(456_789)),
        refused_by: None,
        source: UsageSource::Upstream,
        stream: true,
    }
}

/// Rows in `usage`, read by a connection of its own (what another process
/// would see).
fn rows_on_disk(path: &Path) -> i64 {
    let connection = Connection::open(path).unwrap();
    connection
        .query_row("SELECT COUNT(*) FROM usage", [], |row| row.get(0))
        .unwrap()
}

fn all_time() -> (OffsetDateTime, OffsetDateTime) {
    (
        datetime!(2000-01-01 00:00 UTC),
        datetime!(2100-01-01 00:00 UTC),
    )
}

#[test]
fn creates_the_folder_the_schema_and_wal() {
    let dir = TempDir::new("schema");
    let path = dir.0.join("nested").join("deeper").join("ledger.db");
    let store = SqliteStore::open(&path, NEVER).unwrap();
    assert!(path.exists());
    let connection = Connection::open(&path).unwrap();
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let journal: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let mut tables: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .filter(|name: &String| !name.starts_with("sqlite_"))
        .collect();
    tables.sort();
    assert_eq!(
        tables,
        [
            "counters",
            "ledger_spill",
            "usage",
            "usage_key_time",
            "usage_time"
        ]
    );
    let columns: Vec<String> = connection
        .prepare("SELECT name FROM pragma_table_info('usage') ORDER BY cid")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        columns,
        [
            "id",
            "time",
            "day",
            "request_id",
            "key_id",
            "key_name",
            "model",
            "entry_index",
            "entry_id",
            "provider_key_index",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "cost_usd",
            "outcome",
            "error",
            "latency_ms",
            "upstream_latency_ms",
            "refused_by",
            "source",
            "stream"
        ]
    );
    drop(store);
}

#[test]
fn refuses_a_file_from_a_newer_router() {
    let dir = TempDir::new("newer");
    let path = dir.db();
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let error = SqliteStore::open(&path, NEVER).unwrap_err();
    assert!(
        matches!(error, StoreError::NewerSchema { found, known, .. }
            if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{error}"
    );
    assert!(
        error.to_string().contains("newer than this router's"),
        "{error}"
    );
}

#[test]
fn records_read_back_exactly() {
    let dir = TempDir::new("exact");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    let full = record("req-full", datetime!(2025-06-01 12:34:56.123456789 +02:00));
    let refused = UsageRecord {
        key_id: u64::MAX,
        key_name: "ключ «β»".to_owned(),
        model: "claude:thinking".to_owned(),
        entry_index: None,
        entry_id: Some(u64::MAX - 3),
        provider_key_index: None,
        tokens: Tokens::default(),
        cost_usd: 0.0,
        outcome: Outcome::Refused,
        error: Some("key rpm exceeded\nretry later".to_owned()),
        latency: Duration::from_nanos(17),
        upstream_latency: None,
        refused_by: Some(LimitName {
            scope: Scope::Key,
            measure: Measure::Requests,
            window: Window::Minute,
        }),
        source: UsageSource::None,
        stream: false,
        ..record("req-refused", datetime!(2025-06-01 00:00 UTC))
    };
    let estimated = UsageRecord {
        outcome: Outcome::ClientGone,
        source: UsageSource::Estimated,
        refused_by: Some(LimitName {
            scope: Scope::Model,
            measure: Measure::Cost,
            window: Window::Month,
        }),
        cost_usd: 12_345.678_9,
        ..record(
            "req-estimated",
            datetime!(2025-06-01 23:59:59.999999999 UTC),
        )
    };
    for each in [&full, &refused, &estimated] {
        store.record(each.clone());
    }
    store.flush_blocking().unwrap();
    let (since, until) = all_time();
    let back = store.read_records(since, until).unwrap();
    assert_eq!(back, [full.clone(), refused, estimated]);
    // The time comes back in UTC, the same instant.
    assert_eq!(back[0].time.offset(), time::UtcOffset::UTC);
    // `day` is the UTC date.
    let connection = Connection::open(dir.db()).unwrap();
    let day: String = connection
        .query_row(
            "SELECT day FROM usage WHERE request_id = 'req-full'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(day, "2025-06-01");
}

#[test]
fn flush_waits_until_another_connection_sees_the_rows() {
    let dir = TempDir::new("flush");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    for index in 0..10 {
        store.record(record(&format!("req-{index}"), OffsetDateTime::now_utc()));
    }
    // Fewer rows than a batch and a one-hour interval: nothing is written yet.
    assert_eq!(rows_on_disk(&dir.db()), 0);
    assert_eq!(store.queue_depth(), 10);
    store.flush_blocking().unwrap();
    assert_eq!(rows_on_disk(&dir.db()), 10);
    assert_eq!(store.queue_depth(), 0);
    assert_eq!(store.usage_row_count().unwrap(), 10);
}

#[tokio::test]
async fn async_flush_waits_too() {
    let dir = TempDir::new("async-flush");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    store.record(record("req-1", OffsetDateTime::now_utc()));
    store.flush().await.unwrap();
    assert_eq!(rows_on_disk(&dir.db()), 1);
}

#[test]
fn the_interval_writes_without_a_flush() {
    let dir = TempDir::new("interval");
    let store = SqliteStore::open(dir.db(), Duration::from_millis(20)).unwrap();
    store.record(record("req-1", OffsetDateTime::now_utc()));
    // Polls the disk rather than sleeping a fixed time: done as soon as the
    // writer's tick has run, bounded at ten seconds for a slow machine.
    for _ in 0..1000 {
        if rows_on_disk(&dir.db()) == 1 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(rows_on_disk(&dir.db()), 1);
    assert_eq!(store.queue_depth(), 0);
}

#[test]
fn a_full_batch_is_written_without_a_flush() {
    let dir = TempDir::new("batch");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    let rows = router_limits::store::BATCH_ROWS;
    for index in 0..rows {
        store.record(record(&format!("req-{index}"), OffsetDateTime::now_utc()));
    }
    for _ in 0..1000 {
        if rows_on_disk(&dir.db()) == rows as i64 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(rows_on_disk(&dir.db()), rows as i64);
}

#[test]
fn close_flushes_and_later_rows_still_land() {
    let dir = TempDir::new("close");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    store.record(record("req-before", OffsetDateTime::now_utc()));
    store.close().unwrap();
    assert_eq!(rows_on_disk(&dir.db()), 1);
    // A request that finishes after shutdown began is still booked.
    store.record(record("req-after", OffsetDateTime::now_utc()));
    store.update(CounterRow {
        limit: "key:7:rpd".into(),
        period: "2025-06-01".into(),
        value: 3,
    });
    assert_eq!(rows_on_disk(&dir.db()), 2);
    assert_eq!(store.queue_depth(), 0);
    store.close().unwrap();
    store.flush_blocking().unwrap();
}

#[test]
fn drop_flushes() {
    let dir = TempDir::new("drop");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    store.record(record("req-1", OffsetDateTime::now_utc()));
    store.record(record("req-2", OffsetDateTime::now_utc()));
    drop(store);
    assert_eq!(rows_on_disk(&dir.db()), 2);
}

#[test]
fn counters_coalesce_and_only_today_and_this_month_load() {
    let dir = TempDir::new("counters");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    let now = datetime!(2025-06-15 10:00 UTC);
    let update = |limit: &str, period: &str, value: u64| {
        store.update(CounterRow {
            limit: limit.into(),
            period: period.into(),
            value,
        });
    };
    for value in 1..=100 {
        update("key:7:rpd", "2025-06-15", value);
    }
    update("key:7:tpd", "2025-06-15", 5_000);
    update("key:7:rpd", "2025-06-14", 999);
    update("key:7:budget", "2025-06", 1_500_000);
    update("key:7:budget", "2025-05", 7);
    update("model:3:0:tpd", "2025-06-15", 42);
    assert_eq!(store.queue_depth(), 105);
    store.flush_blocking().unwrap();
    assert_eq!(store.queue_depth(), 0);
    // A later value replaces the stored one (UPSERT), in a later batch too.
    update("key:7:tpd", "2025-06-15", 6_000);
    store.flush_blocking().unwrap();

    let row = |limit: &str, period: &str, value: u64| CounterRow {
        limit: limit.into(),
        period: period.into(),
        value,
    };
    assert_eq!(
        store.load_counters(now).unwrap(),
        [
            row("key:7:budget", "2025-06", 1_500_000),
            row("key:7:rpd", "2025-06-15", 100),
            row("key:7:tpd", "2025-06-15", 6_000),
            row("model:3:0:tpd", "2025-06-15", 42),
        ]
    );
    // The day is the UTC day: 01:00 at +03:00 is still the 14th in UTC.
    assert_eq!(
        store
            .load_counters(datetime!(2025-06-15 01:00 +03:00))
            .unwrap(),
        [
            row("key:7:budget", "2025-06", 1_500_000),
            row("key:7:rpd", "2025-06-14", 999),
        ]
    );
    let stored: i64 = Connection::open(dir.db())
        .unwrap()
        .query_row("SELECT COUNT(*) FROM counters", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored, 6);
}

#[test]
fn reopening_the_file_keeps_everything() {
    let dir = TempDir::new("restart");
    let now = datetime!(2025-06-15 10:00 UTC);
    let written = vec![
        record("req-1", datetime!(2025-06-15 09:00 UTC)),
        UsageRecord {
            key_id: 8,
            ..record("req-2", datetime!(2025-06-15 09:30 UTC))
        },
    ];
    let counter = CounterRow {
        limit: "key:7:rpd".into(),
        period: "2025-06-15".into(),
        value: 2,
    };
    {
        let store = SqliteStore::open(dir.db(), NEVER).unwrap();
        for each in &written {
            store.record(each.clone());
        }
        store.update(counter.clone());
        store.close().unwrap();
    }
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    let (since, until) = all_time();
    assert_eq!(store.read_records(since, until).unwrap(), written);
    assert_eq!(store.load_counters(now).unwrap(), [counter]);
    // New rows append after the old ones.
    store.record(record("req-3", datetime!(2025-06-15 09:45 UTC)));
    store.flush_blocking().unwrap();
    assert_eq!(store.usage_row_count().unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn totals_group_filter_and_respect_the_range() {
    let dir = TempDir::new("totals");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    let with =
        |key_id: u64, model: &str, time: OffsetDateTime, prompt: u64, cost: f64| UsageRecord {
            key_id,
            model: model.to_owned(),
            tokens: Tokens {
                prompt,
                completion: 10,
                cached: 1,
                reasoning: 2,
            },
            cost_usd: cost,
            ..record("req", time)
        };
    let day1 = datetime!(2025-06-01 08:00 UTC);
    let day2 = datetime!(2025-06-02 08:00 UTC);
    let day3 = datetime!(2025-06-03 08:00 UTC);
    for each in [
        with(1, "gpt-4o", day1, 100, 0.25),
        with(1, "claude", day1, 200, 0.5),
        with(2, "gpt-4o", day2, 300, 1.0),
        // Refused: counts as a request, with no tokens and no cost.
        UsageRecord {
            outcome: Outcome::Refused,
            tokens: Tokens::default(),
            cost_usd: 0.0,
            ..with(2, "gpt-4o", day2, 0, 0.0)
        },
        with(1, "gpt-4o", day3, 400, 2.0),
        // Exactly at `until`: excluded.
        with(1, "gpt-4o", datetime!(2025-06-04 00:00 UTC), 1_000, 8.0),
    ] {
        store.record(each);
    }
    store.flush_blocking().unwrap();

    let query = |key_id: Option<u64>, model: Option<&str>, group_by: GroupBy| UsageQuery {
        key_id,
        model: model.map(str::to_owned),
        // From the first record (inclusive) to midnight of day 4 (exclusive).
        since: datetime!(2025-06-01 08:00 UTC),
        until: datetime!(2025-06-04 00:00 UTC),
        group_by,
    };

    let check = |query: UsageQuery, want: Vec<(Option<&'static str>, u64, u64, u64, f64)>| {
        let store = &store;
        async move {
            let got = store.totals(query.clone()).await.unwrap();
            let got: Vec<_> = got
                .into_iter()
                .map(|row| {
                    (
                        row.group,
                        row.requests,
                        row.tokens.prompt,
                        row.tokens.completion,
                        row.tokens.cached,
                        row.tokens.reasoning,
                        row.cost_usd,
                    )
                })
                .collect();
            let want: Vec<_> = want
                .into_iter()
                .map(|(group, requests, prompt, answered, cost)| {
                    (
                        group.map(str::to_owned),
                        requests,
                        prompt,
                        10 * answered,
                        answered,
                        2 * answered,
                        cost,
                    )
                })
                .collect();
            assert_eq!(got, want, "{query:?}");
        }
    };
    // (group, requests, prompt tokens, answered requests, cost)
    check(
        query(None, None, GroupBy::Nothing),
        vec![(None, 5, 1_000, 4, 3.75)],
    )
    .await;
    check(
        query(None, None, GroupBy::Key),
        vec![(Some("1"), 3, 700, 3, 2.75), (Some("2"), 2, 300, 1, 1.0)],
    )
    .await;
    check(
        query(None, None, GroupBy::Model),
        vec![
            (Some("claude"), 1, 200, 1, 0.5),
            (Some("gpt-4o"), 4, 800, 3, 3.25),
        ],
    )
    .await;
    check(
        query(None, None, GroupBy::Day),
        vec![
            (Some("2025-06-01"), 2, 300, 2, 0.75),
            (Some("2025-06-02"), 2, 300, 1, 1.0),
            (Some("2025-06-03"), 1, 400, 1, 2.0),
        ],
    )
    .await;
    check(
        query(Some(1), Some("gpt-4o"), GroupBy::Day),
        vec![
            (Some("2025-06-01"), 1, 100, 1, 0.25),
            (Some("2025-06-03"), 1, 400, 1, 2.0),
        ],
    )
    .await;
    check(
        query(Some(2), None, GroupBy::Nothing),
        vec![(None, 2, 300, 1, 1.0)],
    )
    .await;
    // Nothing matches: ungrouped is one zero row, grouped is no row.
    check(
        query(Some(99), None, GroupBy::Nothing),
        vec![(None, 0, 0, 0, 0.0)],
    )
    .await;
    check(query(Some(99), None, GroupBy::Key), vec![]).await;
    // A range that starts a nanosecond after day 1's records leaves them out.
    let mut later = query(Some(1), None, GroupBy::Nothing);
    later.since = day1 + Duration::from_nanos(1);
    check(later, vec![(None, 1, 400, 1, 2.0)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn series_bucket_by_time_prefix_and_split_by_key_or_model() {
    let dir = TempDir::new("series");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    let at = |key_id: u64, model: &str, time: OffsetDateTime| UsageRecord {
        key_id,
        model: model.to_owned(),
        tokens: Tokens {
            prompt: 10,
            completion: 5,
            cached: 0,
            reasoning: 0,
        },
        cost_usd: 0.5,
        ..record("req", time)
    };
    for each in [
        at(1, "gpt-4o", datetime!(2025-06-01 10:07:00 UTC)),
        at(2, "gpt-4o", datetime!(2025-06-01 10:07:59.999999999 UTC)),
        at(1, "claude", datetime!(2025-06-01 10:08:00 UTC)),
        at(1, "gpt-4o", datetime!(2025-06-01 11:00:00 UTC)),
        at(u64::MAX, "gpt-4o", datetime!(2025-06-01 11:00:30 UTC)),
        at(1, "gpt-4o", datetime!(2025-06-02 00:00:00 UTC)),
    ] {
        store.record(each);
    }
    store.flush_blocking().unwrap();
    let query = |group_by| UsageQuery {
        key_id: None,
        model: None,
        since: datetime!(2025-06-01 00:00 UTC),
        until: datetime!(2025-06-02 00:00 UTC),
        group_by,
    };
    let point = |bucket: &str, group: Option<&str>, requests: u64| SeriesPoint {
        bucket: bucket.to_owned(),
        totals: UsageTotals {
            group: group.map(str::to_owned),
            requests,
            tokens: Tokens {
                prompt: 10 * requests,
                completion: 5 * requests,
                cached: 0,
                reasoning: 0,
            },
            cost_usd: 0.5 * requests as f64,
        },
    };
    let check = |group_by, bucket, expected: Vec<SeriesPoint>| {
        assert_eq!(
            store.series_blocking(&query(group_by), bucket).unwrap(),
            expected,
            "{group_by:?} {bucket:?}"
        );
    };
    check(
        GroupBy::Nothing,
        Bucket::Minute,
        vec![
            point("2025-06-01T10:07", None, 2),
            point("2025-06-01T10:08", None, 1),
            point("2025-06-01T11:00", None, 2),
        ],
    );
    check(
        GroupBy::Model,
        Bucket::Hour,
        vec![
            point("2025-06-01T10", Some("claude"), 1),
            point("2025-06-01T10", Some("gpt-4o"), 2),
            point("2025-06-01T11", Some("gpt-4o"), 2),
        ],
    );
    // Key ids sort as numbers within each bucket, u64::MAX last.
    let max = u64::MAX.to_string();
    check(
        GroupBy::Key,
        Bucket::Hour,
        vec![
            point("2025-06-01T10", Some("1"), 2),
            point("2025-06-01T10", Some("2"), 1),
            point("2025-06-01T11", Some("1"), 1),
            point("2025-06-01T11", Some(&max), 1),
        ],
    );
    // The record at midnight belongs to the next day, outside the range.
    check(
        GroupBy::Nothing,
        Bucket::Day,
        vec![point("2025-06-01", None, 5)],
    );
    // The async port answers the same, and /v1/usage can group by hour or minute.
    assert_eq!(
        store
            .series(query(GroupBy::Model), Bucket::Minute)
            .await
            .unwrap(),
        store
            .series_blocking(&query(GroupBy::Model), Bucket::Minute)
            .unwrap()
    );
    let hours: Vec<_> = store
        .totals(query(GroupBy::Hour))
        .await
        .unwrap()
        .into_iter()
        .map(|totals| (totals.group.unwrap(), totals.requests))
        .collect();
    assert_eq!(
        hours,
        [
            ("2025-06-01T10".to_owned(), 3),
            ("2025-06-01T11".to_owned(), 2)
        ]
    );
    let minutes = store.totals_blocking(&query(GroupBy::Minute)).unwrap();
    assert_eq!(minutes.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn recent_errors_are_the_failed_records_newest_first() {
    let dir = TempDir::new("errors");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    let base = datetime!(2025-06-01 10:00 UTC);
    let failed = |id: &str, seconds: i64, outcome: Outcome| UsageRecord {
        outcome,
        error: Some(format!("{id} went wrong")),
        ..record(id, base + time::Duration::seconds(seconds))
    };
    for each in [
        record("ok-1", base),
        failed("old", -3600, Outcome::UpstreamFailed),
        failed("a", 1, Outcome::Refused),
        record("ok-2", base + time::Duration::seconds(2)),
        failed("b", 3, Outcome::UpstreamFailed),
        // Same time as `b`, written later: shown first.
        failed("c", 3, Outcome::StreamFailed),
        failed("d", 4, Outcome::ClientGone),
    ] {
        store.record(each);
    }
    store.flush_blocking().unwrap();
    let ids = |since: OffsetDateTime, limit: usize| -> Vec<String> {
        store
            .recent_errors_blocking(&ErrorQuery { since, limit })
            .unwrap()
            .into_iter()
            .map(|record| record.request_id)
            .collect()
    };
    assert_eq!(ids(base, 10), ["d", "c", "b", "a"]);
    assert_eq!(ids(base, 2), ["d", "c"]);
    assert_eq!(
        ids(base - time::Duration::hours(2), 10),
        ["d", "c", "b", "a", "old"]
    );
    assert!(ids(base + time::Duration::seconds(5), 10).is_empty());
    let newest = store
        .recent_errors(ErrorQuery {
            since: base,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].outcome, Outcome::ClientGone);
    assert_eq!(newest[0].error.as_deref(), Some("d went wrong"));
    assert_eq!(newest[0], failed("d", 4, Outcome::ClientGone));
}

#[test]
fn key_ids_above_i64_max_group_and_filter() {
    let dir = TempDir::new("big-ids");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    let now = datetime!(2025-06-01 08:00 UTC);
    for key_id in [u64::MAX, 5, 1 << 63] {
        store.record(UsageRecord {
            key_id,
            ..record("req", now)
        });
    }
    store.flush_blocking().unwrap();
    let (since, until) = all_time();
    let query = |key_id, group_by| UsageQuery {
        key_id,
        model: None,
        since,
        until,
        group_by,
    };
    let groups: Vec<_> = store
        .totals_blocking(&query(None, GroupBy::Key))
        .unwrap()
        .into_iter()
        .map(|row| row.group.unwrap())
        .collect();
    assert_eq!(
        groups,
        ["5", &(1u64 << 63).to_string(), &u64::MAX.to_string()]
    );
    let one = store
        .totals_blocking(&query(Some(u64::MAX), GroupBy::Nothing))
        .unwrap();
    assert_eq!(one[0].requests, 1);
}

#[test]
fn ten_thousand_records_from_eight_threads_all_land() {
    let dir = TempDir::new("threads");
    let store = Arc::new(SqliteStore::open(dir.db(), Duration::from_millis(5)).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|thread_index| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for index in 0..1250 {
                    store.record(record(
                        &format!("req-{thread_index}-{index}"),
                        OffsetDateTime::now_utc(),
                    ));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    store.flush_blocking().unwrap();
    assert_eq!(store.usage_row_count().unwrap(), 10_000);
    assert_eq!(store.queue_depth(), 0);
    let distinct: i64 = Connection::open(dir.db())
        .unwrap()
        .query_row("SELECT COUNT(DISTINCT request_id) FROM usage", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(distinct, 10_000);
}

#[test]
fn record_returns_while_the_writer_is_stuck() {
    let dir = TempDir::new("busy");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    // Another connection holds the write lock: the writer's next commit
    // waits for it (busy timeout) or fails and keeps its rows.
    let blocker = Connection::open(dir.db()).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let total = router_limits::store::BATCH_ROWS + 10_000;
    // The first full batch sends the writer to the locked file; everything
    // after is sent while it waits there.
    for index in 0..total {
        store.record(record(&format!("req-{index}"), OffsetDateTime::now_utc()));
    }
    // Every call returned, and nothing could be committed: all of them are
    // queued, none was dropped.
    assert_eq!(store.queue_depth(), total);
    assert_eq!(store.usage_row_count().unwrap(), 0);
    blocker.execute_batch("COMMIT").unwrap();
    store.flush_blocking().unwrap();
    assert_eq!(store.usage_row_count().unwrap(), total as u64);
    assert_eq!(store.queue_depth(), 0);
}

/// The nice value of each live thread of this process named `name`, read
/// from `/proc/self/task/*/stat` (field 19).
#[cfg(target_os = "linux")]
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim_end() != name {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // After the `(comm)` field: state is field 3, nice field 19.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let nice = rest.split(' ').nth(16).unwrap().parse().unwrap();
        found.push(nice);
    }
    found
}

#[cfg(target_os = "linux")]
#[test]
fn the_writer_thread_runs_at_a_lower_priority_than_the_requests() {
    let dir = TempDir::new("nice");
    let store = SqliteStore::open(dir.db(), NEVER).unwrap();
    let expected = i64::from(router_limits::store::WRITER_NICE);
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen = nice_of_threads("usage-ledger");
        if !seen.is_empty() && seen.iter().all(|&nice| nice >= expected) {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(!seen.is_empty(), "no usage-ledger thread found");
    assert!(seen.iter().all(|&nice| nice >= expected), "{seen:?}");
    // The thread that opened the store (a request's, in the router) keeps
    // its own priority.
    let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let own_nice: i64 = own[own.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    assert!(own_nice < expected, "{own_nice}");
    // And it still writes.
    store.record(record("req-nice", OffsetDateTime::now_utc()));
    store.flush_blocking().unwrap();
    assert_eq!(rows_on_disk(&dir.db()), 1);
}
