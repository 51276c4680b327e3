//! The shared ledger against a real PostgreSQL: exact row counts, several
//! stores (replicas) on one database, concurrent migrations, an outage that
//! spills to SQLite and is replayed without duplicates, a spill left by a
//! closed store, totals equal to the SQLite ledger's, and no password in
//! any error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod engines;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engines::{PostgresServer, TempDir};
use router_core::secret::Secret;
use router_core::usage::{
    Bucket, ErrorQuery, GroupBy, Outcome, Tokens, UsageQuery, UsageRecord, UsageSink, UsageSource,
    UsageStore,
};
use router_limits::store::postgres::POSTGRES_SCHEMA_VERSION;
use router_limits::{PostgresOptions, PostgresStore, PostgresStoreError, SqliteStore};
use time::macros::datetime;
use time::OffsetDateTime;

/// Long enough that only a flush, a full batch or close writes.
const NEVER: Duration = Duration::from_secs(3600);

/// How long a test waits for something the writer does by itself.
const PATIENCE: Duration = Duration::from_secs(30);

fn options(flush_interval: Duration) -> PostgresOptions {
    PostgresOptions {
        flush_interval,
        connect_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
        ..PostgresOptions::default()
    }
}

async fn store(url: &str, spill: &Path, options: PostgresOptions) -> PostgresStore {
    PostgresStore::connect_with(&Secret::new(url), spill, options)
        .await
        .unwrap()
}

fn record(replica: &str, index: usize) -> UsageRecord {
    UsageRecord {
        time: OffsetDateTime::now_utc(),
        request_id: format!("req_{replica}-{index}"),
        key_id: (index % 3) as u64 + 1,
        key_name: "team".to_owned(),
        model: ["gpt-4o", "claude", "gemini"][index % 3].to_owned(),
        entry_index: Some(index % 2),
        entry_id: Some(11),
        provider_key_index: Some(0),
        tokens: Tokens {
            prompt: 100,
            completion: 40,
            cached: 30,
            reasoning: 12,
        },
        cost_usd: 0.25,
        outcome: Outcome::Ok,
        error: None,
        latency: Duration::from_nanos(1_234_567_891),
        upstream_latency: Some(Duration::from_micros(456_789)),
        refused_by: None,
        source: UsageSource::Upstream,
        stream: index % 2 == 0,
    }
}

/// `(rows, distinct request ids)` in the database's `usage` table.
fn rows(pg: &PostgresServer, database: &str) -> (u64, u64) {
    let answer = pg.psql(
        database,
        "SELECT COUNT(*) || ' ' || COUNT(DISTINCT request_id) FROM usage",
    );
    let (rows, distinct) = answer.split_once(' ').unwrap();
    (rows.parse().unwrap(), distinct.parse().unwrap())
}

fn spill_rows(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM ledger_spill", [], |row| row.get(0))
        .unwrap()
}

fn spill_file(dir: &TempDir) -> PathBuf {
    dir.path().join("data").join("router.db")
}

fn everything() -> UsageQuery {
    UsageQuery {
        key_id: None,
        model: None,
        since: datetime!(2000-01-01 00:00 UTC),
        until: datetime!(2100-01-01 00:00 UTC),
        group_by: GroupBy::Nothing,
    }
}

/// Waits until `done` holds, or fails after [`PATIENCE`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_records_make_exactly_n_rows() {
    let pg = PostgresServer::start();
    let dir = TempDir::new("pgl");
    let store = store(&pg.url(), &spill_file(&dir), options(NEVER)).await;
    const N: usize = 20_000;
    let started = Instant::now();
    for index in 0..N {
        store.record(record("a", index));
    }
    let recorded = started.elapsed();
    store.flush().await.unwrap();
    let durable = started.elapsed();
    eprintln!(
        "{N} records: handed over in {recorded:?} ({:.0} ns each), durable in PostgreSQL \
         after {durable:?} ({:.0} rows/s)",
        recorded.as_nanos() as f64 / N as f64,
        N as f64 / durable.as_secs_f64()
    );
    assert_eq!(rows(&pg, "router"), (N as u64, N as u64));
    let stats = store.stats();
    assert_eq!(stats.written, N as u64);
    assert_eq!((stats.buffered, stats.spilled, stats.duplicates), (0, 0, 0));
    assert!(stats.available);
    assert_eq!(store.queue_depth(), 0);

    let totals = store.totals(everything()).await.unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].requests, N as u64);
    assert_eq!(totals[0].tokens.prompt, 100 * N as u64);
    assert_eq!(totals[0].cost_usd, 0.25 * N as f64);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_writes_without_a_flush() {
    let pg = PostgresServer::start();
    let dir = TempDir::new("pgl");
    let store = store(
        &pg.url(),
        &spill_file(&dir),
        options(Duration::from_millis(50)),
    )
    .await;
    for index in 0..10 {
        store.record(record("a", index));
    }
    eventually("the interval wrote the rows", || {
        store.stats().written == 10
    })
    .await;
    assert_eq!(rows(&pg, "router"), (10, 10));
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_postgresql_would_refuse_do_not_block_a_batch() {
    let pg = PostgresServer::start();
    let dir = TempDir::new("pgl");
    let store = store(&pg.url(), &spill_file(&dir), options(NEVER)).await;
    // PostgreSQL text holds no NUL and a NaN cost would poison every sum:
    // either would fail the whole batch on every retry if sent as is.
    store.record(UsageRecord {
        error: Some("upstream\0said no".to_owned()),
        cost_usd: f64::NAN,
        ..record("odd", 0)
    });
    store.record(UsageRecord {
        key_id: u64::MAX,
        tokens: Tokens {
            prompt: u64::MAX,
            ..Tokens::default()
        },
        ..record("odd", 1)
    });
    store.flush().await.unwrap();
    assert_eq!(rows(&pg, "router"), (2, 2));
    assert_eq!(
        pg.psql(
            "router",
            "SELECT error || ' ' || cost_usd FROM usage WHERE request_id = 'req_odd-0'"
        ),
        "upstream\u{fffd}said no 0"
    );
    let by_key = store
        .totals(UsageQuery {
            group_by: GroupBy::Key,
            ..everything()
        })
        .await
        .unwrap();
    let keys: Vec<_> = by_key.iter().map(|totals| totals.group.clone()).collect();
    assert_eq!(keys, [Some("1".to_owned()), Some(u64::MAX.to_string())]);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_write_concurrently_and_agree() {
    let pg = PostgresServer::start();
    let (dir_a, dir_b) = (TempDir::new("pgl"), TempDir::new("pgl"));
    let interval = Duration::from_millis(20);
    let url = pg.url();
    let (spill_a, spill_b) = (spill_file(&dir_a), spill_file(&dir_b));
    let (a, b) = tokio::join!(
        store(&url, &spill_a, options(interval)),
        store(&url, &spill_b, options(interval)),
    );
    let (a, b) = (Arc::new(a), Arc::new(b));
    const PER_THREAD: usize = 1_500;
    let mut threads = Vec::new();
    for (replica, store) in [("a", &a), ("b", &b)] {
        for thread in 0..2 {
            let store = Arc::clone(store);
            threads.push(std::thread::spawn(move || {
                for index in 0..PER_THREAD {
                    store.record(record(&format!("{replica}{thread}"), index));
                    if index % 100 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }));
        }
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let (flushed_a, flushed_b) = tokio::join!(a.flush(), b.flush());
    flushed_a.unwrap();
    flushed_b.unwrap();
    let total = 4 * PER_THREAD as u64;
    assert_eq!(rows(&pg, "router"), (total, total));
    assert_eq!(a.stats().written + b.stats().written, total);
    for group_by in [GroupBy::Nothing, GroupBy::Key, GroupBy::Model, GroupBy::Day] {
        let query = UsageQuery {
            group_by,
            ..everything()
        };
        let from_a = a.totals(query.clone()).await.unwrap();
        let from_b = b.totals(query).await.unwrap();
        assert_eq!(from_a, from_b);
        assert_eq!(
            from_a.iter().map(|totals| totals.requests).sum::<u64>(),
            total
        );
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_concurrently_and_twice() {
    let pg = PostgresServer::start();
    let url = pg.create_database("fresh");
    let dirs: Vec<TempDir> = (0..4).map(|_| TempDir::new("pgl")).collect();
    let mut starting = Vec::new();
    for dir in &dirs {
        let url = url.clone();
        let spill = spill_file(dir);
        starting.push(tokio::spawn(async move {
            store(&url, &spill, options(NEVER)).await
        }));
    }
    let mut stores = Vec::new();
    for start in starting {
        stores.push(start.await.unwrap());
    }
    // Once more, on a database that is up to date.
    stores.push(store(&url, &spill_file(&dirs[0]), options(NEVER)).await);
    assert_eq!(
        pg.psql(
            "fresh",
            "SELECT string_agg(version::text, ',') FROM router_ledger_schema"
        ),
        POSTGRES_SCHEMA_VERSION.to_string()
    );
    assert_eq!(
        pg.psql(
            "fresh",
            "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes \
             WHERE tablename = 'usage'"
        ),
        "usage_key_time,usage_pkey,usage_request,usage_time"
    );
    for (index, store) in stores.iter().enumerate() {
        store.record(record("m", index));
    }
    for store in &stores {
        store.close().await.unwrap();
    }
    assert_eq!(rows(&pg, "fresh"), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_spills_past_the_bound_and_replays_exactly_once() {
    let mut pg = PostgresServer::start();
    let dir = TempDir::new("pgl");
    let spill = spill_file(&dir);
    const MEMORY_ROWS: usize = 150;
    let store = store(
        &pg.url(),
        &spill,
        PostgresOptions {
            memory_rows: MEMORY_ROWS,
            ..options(Duration::from_millis(20))
        },
    )
    .await;
    let mut recorded = 0;
    for _ in 0..200 {
        store.record(record("a", recorded));
        recorded += 1;
    }
    store.flush().await.unwrap();
    assert_eq!(rows(&pg, "router"), (200, 200));

    tokio::task::block_in_place(|| pg.stop());
    // Rows keep arriving during the outage, more than memory may hold.
    for _ in 0..20 {
        for _ in 0..50 {
            store.record(record("a", recorded));
            recorded += 1;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    eventually("rows were spilled", || store.stats().spilled > 0).await;
    // Once the writer has looked at what arrived, memory holds less than
    // the bound: the rest is in the spill file.
    eventually("memory holds less than the bound", || {
        store.stats().buffered < MEMORY_ROWS
    })
    .await;
    let stats = store.stats();
    assert!(!stats.available, "{stats:?}");
    assert_eq!(stats.outages, 1, "one outage, however many failed writes");
    assert_eq!(
        stats.buffered as u64 + stats.spill_depth,
        recorded as u64 - 200,
        "every row is in memory or in the spill: {stats:?}"
    );
    assert_eq!(spill_rows(&spill) as u64, stats.spill_depth);

    tokio::task::block_in_place(|| pg.start_again());
    store.flush().await.unwrap();
    let stats = store.stats();
    assert_eq!(rows(&pg, "router"), (recorded as u64, recorded as u64));
    assert!(stats.available, "{stats:?}");
    assert_eq!(stats.spill_depth, 0, "{stats:?}");
    assert_eq!(stats.replayed, stats.spilled, "{stats:?}");
    assert_eq!(stats.written, recorded as u64, "{stats:?}");
    assert_eq!(stats.duplicates, 0, "{stats:?}");
    assert_eq!(spill_rows(&spill), 0);
    assert_eq!(stats.outages, 1);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spill_left_by_a_closed_store_is_replayed_by_the_next() {
    let mut pg = PostgresServer::start();
    let dir = TempDir::new("pgl");
    let spill = spill_file(&dir);
    let first = store(&pg.url(), &spill, options(NEVER)).await;
    tokio::task::block_in_place(|| pg.stop());
    for index in 0..500 {
        first.record(record("a", index));
    }
    // PostgreSQL is down: close puts every row in the spill file.
    first.close().await.unwrap();
    assert_eq!(first.stats().spilled, 500);
    // A request that finishes after close: spilled by its sender.
    first.record(record("a", 500));
    assert_eq!(first.stats().spill_depth, 501);
    drop(first);
    assert_eq!(spill_rows(&spill), 501);

    tokio::task::block_in_place(|| pg.start_again());
    // A store also replays a duplicate harmlessly: one row of the spill is
    // already in PostgreSQL (as after a crash between commit and delete).
    let mut already_there = record("a", 0);
    rusqlite::Connection::open(&spill)
        .unwrap()
        .query_row(
            "SELECT time FROM ledger_spill WHERE request_id = 'req_a-0'",
            [],
            |row| row.get::<_, String>(0),
        )
        .map(|time| {
            already_there.time =
                OffsetDateTime::parse(&time, &time::format_description::well_known::Rfc3339)
                    .unwrap();
        })
        .unwrap();
    let other = TempDir::new("pgl");
    let helper = store(&pg.url(), &spill_file(&other), options(NEVER)).await;
    helper.record(already_there);
    helper.close().await.unwrap();
    assert_eq!(rows(&pg, "router"), (1, 1));

    let second = store(&pg.url(), &spill, options(Duration::from_millis(20))).await;
    eventually("the spill was replayed", || second.stats().spill_depth == 0).await;
    let stats = second.stats();
    assert_eq!(stats.replayed, 501, "{stats:?}");
    assert_eq!((stats.written, stats.duplicates), (500, 1), "{stats:?}");
    assert_eq!(rows(&pg, "router"), (501, 501));
    assert_eq!(spill_rows(&spill), 0);
    second.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_match_the_sqlite_ledger() {
    let pg = PostgresServer::start();
    let dir = TempDir::new("pgl");
    let postgres = store(&pg.url(), &spill_file(&dir), options(NEVER)).await;
    let sqlite = SqliteStore::open(dir.path().join("ledger.db"), NEVER).unwrap();
    let big_key = u64::MAX - 5;
    let base = datetime!(2025-06-01 08:00 UTC);
    let mut records = Vec::new();
    // Costs are multiples of 1/64 so that both engines' float sums are
    // exact whatever order they add in.
    let spread: [(u64, &str, OffsetDateTime, u64, f64, Outcome); 12] = [
        (1, "gpt-4o", base, 100, 0.25, Outcome::Ok),
        (1, "Claude", base, 200, 0.5, Outcome::Ok),
        (
            2,
            "gpt-4o",
            base + time::Duration::days(1),
            300,
            1.0,
            Outcome::Ok,
        ),
        (
            2,
            "gpt-4o",
            base + time::Duration::days(1),
            0,
            0.0,
            Outcome::Refused,
        ),
        (
            big_key,
            "ß-model",
            base + time::Duration::days(1),
            7,
            0.015625,
            Outcome::Ok,
        ),
        (
            1,
            "gpt-4o",
            base + time::Duration::days(2),
            400,
            2.0,
            Outcome::ClientGone,
        ),
        (
            3,
            "a",
            base + time::Duration::nanoseconds(1),
            5,
            0.125,
            Outcome::Ok,
        ),
        (
            3,
            "a",
            base - time::Duration::nanoseconds(1),
            6,
            0.125,
            Outcome::Ok,
        ),
        (
            3,
            "Zeta",
            base + time::Duration::nanoseconds(999),
            8,
            0.0,
            Outcome::Ok,
        ),
        (
            1,
            "gpt-4o",
            datetime!(2025-06-04 00:00 UTC),
            1_000,
            8.0,
            Outcome::Ok,
        ),
        (
            0,
            "gpt-4o",
            datetime!(2025-06-03 23:59:59.999999999 UTC),
            9,
            0.0,
            Outcome::Ok,
        ),
        (
            i64::MAX as u64 + 1,
            "claude",
            base,
            3,
            0.75,
            Outcome::StreamFailed,
        ),
    ];
    for (index, (key_id, model, time, prompt, cost, outcome)) in spread.into_iter().enumerate() {
        records.push(UsageRecord {
            key_id,
            model: model.to_owned(),
            time,
            tokens: Tokens {
                prompt,
                completion: 10 + index as u64,
                cached: 1,
                reasoning: 2,
            },
            cost_usd: cost,
            outcome,
            error: (outcome != Outcome::Ok).then(|| format!("attempt {index} failed")),
            ..record("t", index)
        });
    }
    for each in &records {
        postgres.record(each.clone());
        sqlite.record(each.clone());
    }
    postgres.flush().await.unwrap();
    sqlite.flush().await.unwrap();

    let ranges = [
        (
            datetime!(2000-01-01 00:00 UTC),
            datetime!(2100-01-01 00:00 UTC),
        ),
        (base, datetime!(2025-06-04 00:00 UTC)),
        (
            base + time::Duration::nanoseconds(1),
            base + time::Duration::days(1),
        ),
        (base, base + time::Duration::nanoseconds(999)),
        (
            datetime!(2030-01-01 00:00 UTC),
            datetime!(2031-01-01 00:00 UTC),
        ),
    ];
    let mut compared = 0;
    for (since, until) in ranges {
        for group_by in [
            GroupBy::Nothing,
            GroupBy::Key,
            GroupBy::Model,
            GroupBy::Day,
            GroupBy::Hour,
            GroupBy::Minute,
        ] {
            for key_id in [None, Some(1), Some(3), Some(big_key), Some(42)] {
                for model in [None, Some("gpt-4o"), Some("ß-model"), Some("GPT-4O")] {
                    let query = UsageQuery {
                        key_id,
                        model: model.map(str::to_owned),
                        since,
                        until,
                        group_by,
                    };
                    let expected = sqlite.totals_blocking(&query).unwrap();
                    let answer = postgres.totals(query.clone()).await.unwrap();
                    assert_eq!(answer, expected, "{query:?}");
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 5 * 6 * 5 * 4);
    // The dashboard's series: every bucket and split, the same points.
    let mut points = 0;
    for (since, until) in ranges {
        for bucket in [Bucket::Minute, Bucket::Hour, Bucket::Day] {
            for group_by in [GroupBy::Nothing, GroupBy::Key, GroupBy::Model] {
                for key_id in [None, Some(1), Some(big_key)] {
                    let query = UsageQuery {
                        key_id,
                        model: None,
                        since,
                        until,
                        group_by,
                    };
                    let expected = sqlite.series_blocking(&query, bucket).unwrap();
                    let answer = postgres.series(query.clone(), bucket).await.unwrap();
                    assert_eq!(answer, expected, "{query:?} {bucket:?}");
                    points += answer.len();
                }
            }
        }
    }
    assert!(points > 50, "only {points} points compared");
    // And the recent errors: the same records, newest first.
    for (since, limit) in [
        (ranges[0].0, 100),
        (base, 2),
        (base + time::Duration::days(2), 5),
    ] {
        let query = ErrorQuery { since, limit };
        let expected = sqlite.recent_errors_blocking(&query).unwrap();
        let answer = postgres.recent_errors(query.clone()).await.unwrap();
        assert_eq!(answer, expected, "{query:?}");
        assert!(answer.len() <= limit);
    }
    let all_errors = postgres
        .recent_errors(ErrorQuery {
            since: ranges[0].0,
            limit: 100,
        })
        .await
        .unwrap();
    let outcomes: Vec<_> = all_errors.iter().map(|record| record.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::ClientGone, Outcome::Refused, Outcome::StreamFailed]
    );
    assert_eq!(all_errors[0].error.as_deref(), Some("attempt 5 failed"));
    // The grouped answers are not trivially empty.
    let by_model = postgres
        .totals(UsageQuery {
            group_by: GroupBy::Model,
            ..everything()
        })
        .await
        .unwrap();
    let models: Vec<_> = by_model
        .iter()
        .map(|totals| totals.group.clone().unwrap())
        .collect();
    assert_eq!(
        models,
        ["Claude", "Zeta", "a", "claude", "gpt-4o", "ß-model"]
    );
    postgres.close().await.unwrap();
    sqlite.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_shows() {
    const PASSWORD: &str = "hunter2-very-secret";
    let mut pg = PostgresServer::start();
    let dir = TempDir::new("pgl");
    let spill = spill_file(&dir);
    let shown = |error: &PostgresStoreError| format!("{error} {error:?}");

    // A URL the driver cannot parse.
    let bad = Secret::new(format!(
        "postgresql://router:{PASSWORD}@127.0.0.1:{}/router?port=abc",
        pg.port()
    ));
    let error = PostgresStore::connect_with(&bad, &spill, options(NEVER))
        .await
        .unwrap_err();
    assert!(matches!(error, PostgresStoreError::Url { .. }), "{error:?}");
    assert!(!shown(&error).contains(PASSWORD), "{}", shown(&error));

    // A database that does not exist: refused, and reported at once.
    let missing = Secret::new(format!(
        "postgresql://router:{PASSWORD}@127.0.0.1:{}/missing",
        pg.port()
    ));
    let error = PostgresStore::connect_with(&missing, &spill, options(NEVER))
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert!(shown(&error).contains("missing"), "{}", shown(&error));
    assert!(!shown(&error).contains(PASSWORD), "{}", shown(&error));

    // The server accepts any password (trust): a working store, then an
    // outage, and the read error it gives.
    let url = Secret::new(format!(
        "postgresql://router:{PASSWORD}@127.0.0.1:{}/router",
        pg.port()
    ));
    let store = PostgresStore::connect_with(&url, &spill, options(NEVER))
        .await
        .unwrap();
    assert!(!format!("{store:?}").contains(PASSWORD));
    tokio::task::block_in_place(|| pg.stop());
    let error = store.read_totals(&everything()).await.unwrap_err();
    assert!(!shown(&error).contains(PASSWORD), "{}", shown(&error));
    let ledger_error = store.totals(everything()).await.unwrap_err();
    assert!(!format!("{ledger_error} {ledger_error:?}").contains(PASSWORD));
    store.close().await.unwrap();

    // Unreachable at start: the store starts anyway, in an outage.
    let late = PostgresStore::connect_with(&url, &spill, options(NEVER))
        .await
        .unwrap();
    let stats = late.stats();
    assert!(!stats.available && stats.outages == 1, "{stats:?}");
    late.close().await.unwrap();
}
