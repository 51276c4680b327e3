//! The shared ledger: usage records of every replica in one PostgreSQL
//! database, so that `/v1/usage` answers the same numbers on any of them.
//!
//! # Off the request path, like the SQLite ledger
//!
//! [`PostgresStore::record`](UsageSink::record) puts the record on an
//! unbounded channel and returns: no lock, no await, no I/O. One writer
//! task drains it and inserts what arrived every `flush_interval`, or once
//! [`BATCH_ROWS`] rows wait, in one statement (`INSERT … SELECT FROM
//! UNNEST(arrays)`: one round trip whatever the batch size). As in the
//! SQLite writer, a row does not wake the writer: it sleeps until the batch
//! is due and is woken early only by a flush, a close or a full batch.
//! [`PostgresStore::flush`] waits until everything recorded before it is
//! durable; [`PostgresStore::close`] flushes and stops the writer at
//! shutdown.
//!
//! # When PostgreSQL does not answer
//!
//! Every connect and statement is bounded ([`PostgresOptions`]). A failed
//! write keeps its rows in memory and is retried at the next tick; the
//! first failure logs one warning for the whole outage (and one line when
//! it ends), never the URL. Past [`PostgresOptions::memory_rows`] rows in
//! memory (default [`MEMORY_ROWS`]), or when a flush or close asks for
//! durability, the rows go to the spill: table `ledger_spill` of the local
//! SQLite file (normally `limits.database`, beside the counters; schema
//! version 2 of that file). Nothing is lost if the process then stops.
//! Once PostgreSQL answers again, the spill is replayed oldest first, in
//! batches, and a batch is deleted from the spill only after PostgreSQL has
//! committed it. A crash between the two replays it again; the table's
//! unique `(request_id, time)` turns the second copy into a no-op
//! (`ON CONFLICT DO NOTHING`), so a row is never counted twice. A store
//! opened on a spill that an earlier run left replays it at once.
//!
//! Memory is bounded only past the writer: rows that arrive while a write
//! is in flight (at most `statement_timeout`) wait in the channel, for the
//! same reason the SQLite ledger's channel is unbounded (a bounded one
//! would block requests or drop rows).
//!
//! # Several replicas, one database
//!
//! The schema is created at start by whichever replica gets there first:
//! the migrations run in one transaction under an advisory lock (see
//! `migrate`), so simultaneous starts are safe and a second run is a no-op.
//! Inserts of different replicas never conflict (different rows).
//!
//! # Reads
//!
//! [`UsageStore::totals`] asks PostgreSQL, with exactly the semantics of
//! [`SqliteStore::totals_blocking`](super::SqliteStore::totals_blocking):
//! same filters, same sums, same order of groups. Rows still in memory or
//! in a replica's spill are not there yet: the shared ledger lags the
//! requests by `flush_interval`, and by the length of an outage.
//!
//! # Secrets and TLS
//!
//! `limits.ledger_url` may carry a password: it never reaches a log line or
//! an error (error texts are scrubbed of it, and of the URL, before they
//! are kept). There is no TLS: the connection is plain TCP, fine on a
//! private network or loopback; a URL with `sslmode=require` is refused
//! at start rather than failing on every connect.
//!
//! # Runtime
//!
//! [`PostgresStore::connect`] must be called inside a tokio runtime (with
//! the `time` and `net` drivers): the writer and the pool's connections
//! are tasks on it.

mod migrate;
mod sql;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use router_core::config::LimitsConfig;
use router_core::secret::Secret;
use router_core::usage::{
    Bucket, ErrorQuery, LedgerError, SeriesPoint, UsageQuery, UsageRecord, UsageSink, UsageStore,
    UsageTotals,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

pub use migrate::POSTGRES_SCHEMA_VERSION;

use super::spill::Spill;
use super::StoreError;
use writer::{Message, Writer};

/// A batch is written as soon as this many rows wait, before the flush
/// interval. Larger than SQLite's 64: each batch is a network round trip,
/// and the insert is one statement whatever its size.
pub const BATCH_ROWS: usize = 512;

/// The default bound on rows kept in memory during an outage before they
/// are spilled: about 10 MB of records, a few seconds of a busy replica.
pub const MEMORY_ROWS: usize = 10_000;

/// What can go wrong with the shared ledger. No variant carries the URL,
/// and every text from the driver is scrubbed of the password first.
#[derive(Debug, thiserror::Error)]
pub enum PostgresStoreError {
    #[error("`limits.ledger_url` cannot be used: {detail}")]
    Url { detail: String },
    /// PostgreSQL answered and said no: a wrong password, a missing
    /// database or role, a missing privilege. Retrying will not help.
    #[error("the shared ledger's PostgreSQL refused this router: {detail}")]
    Refused { detail: String },
    #[error("cannot reach the shared ledger's PostgreSQL: {detail}")]
    Unreachable { detail: String },
    #[error("the shared ledger's PostgreSQL did not answer within {after:?} ({what})")]
    Timeout { what: &'static str, after: Duration },
    #[error("cannot bring the shared ledger to schema version {known}: {detail}")]
    Migrate { known: i32, detail: String },
    #[error(
        "the shared ledger has schema version {found}, newer than this router's {known}; \
         run a newer router"
    )]
    NewerSchema { found: i32, known: i32 },
    #[error("cannot write the shared ledger: {detail}")]
    Write { detail: String },
    #[error("cannot read the shared ledger: {detail}")]
    Read { detail: String },
    #[error("the shared ledger's spill file failed: {source}")]
    Spill { source: StoreError },
    #[error("the shared ledger's writer task is gone")]
    WriterGone,
}

impl PostgresStoreError {
    /// Whether retrying cannot help (the server refused us, or its schema
    /// is newer): [`PostgresStore::connect`] fails on these, and starts
    /// anyway (spilling) on the others.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Url { .. } | Self::Refused { .. } | Self::NewerSchema { .. }
        )
    }
}

/// How the shared ledger is bounded and paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// How often rows are written (`limits.flush_interval`); also how often
    /// PostgreSQL is tried again during an outage.
    pub flush_interval: Duration,
    /// Rows kept in memory while PostgreSQL is unreachable; past this they
    /// are spilled to SQLite.
    pub memory_rows: usize,
    /// Bound on opening a connection (TCP and authentication).
    pub connect_timeout: Duration,
    /// Bound on one statement (a batch insert, a totals query, the
    /// migrations), waiting for a pooled connection included.
    pub statement_timeout: Duration,
    /// Connections in the pool: the writer uses one, `/v1/usage` the rest.
    pub pool_size: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(1),
            memory_rows: MEMORY_ROWS,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            pool_size: 4,
        }
    }
}

/// How the shared ledger is doing, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostgresStoreStats {
    /// Whether the last attempt to reach PostgreSQL succeeded.
    pub available: bool,
    /// Rows handed over and not yet durable anywhere (in the channel or in
    /// memory): [`PostgresStore::queue_depth`].
    pub buffered: usize,
    /// Rows waiting in the spill file now.
    pub spill_depth: u64,
    /// Rows committed to PostgreSQL by this store (new rows only).
    pub written: u64,
    /// Rows PostgreSQL already had (replayed twice), skipped.
    pub duplicates: u64,
    /// Rows this store wrote to the spill file.
    pub spilled: u64,
    /// Rows this store moved from the spill file to PostgreSQL.
    pub replayed: u64,
    /// Outages seen (each counts once, however long).
    pub outages: u64,
}

/// The shared ledger: a [`UsageSink`] that never blocks and a
/// [`UsageStore`] that answers from PostgreSQL.
pub struct PostgresStore {
    /// The writer task's inbox: one handle for every request, no lock.
    sender: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
    /// The writer task; taken by `close` to wait for its end.
    writer_task: Mutex<Option<JoinHandle<()>>>,
}

/// What the store, its writer task and blocking spill calls share.
struct Shared {
    pool: Pool,
    /// The spill file. A std mutex: it is locked only on blocking threads
    /// (and, after close, by a late row's sender), never across an await.
    spill: Mutex<Spill>,
    spill_path: PathBuf,
    scrubber: Scrubber,
    connect_timeout: Duration,
    statement_timeout: Duration,
    /// Whether this store has brought the schema up to date (at start, or
    /// at the first write after an outage that began before it could).
    migrated: AtomicBool,
    /// Wakes the writer early: a flush, a close, a full batch.
    wake: Notify,
    available: AtomicBool,
    /// Rows handed over and not yet durable; incremented before the send,
    /// so the writer's decrement can never run first.
    queued: AtomicUsize,
    spill_depth: AtomicU64,
    written: AtomicU64,
    duplicates: AtomicU64,
    spilled: AtomicU64,
    replayed: AtomicU64,
    outages: AtomicU64,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("spill", &self.shared.spill_path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Opens the shared ledger of `config.ledger_url`, spilling into
    /// `config.database`; `None` when no `ledger_url` is set. See
    /// [`PostgresStore::connect`].
    pub async fn from_config(config: &LimitsConfig) -> Result<Option<Self>, PostgresStoreError> {
        let Some(url) = &config.ledger_url else {
            return Ok(None);
        };
        let options = PostgresOptions {
            flush_interval: config.flush_interval,
            ..PostgresOptions::default()
        };
        Self::connect_with(url, &config.database, options)
            .await
            .map(Some)
    }

    /// [`PostgresStore::connect_with`] with the default bounds and this
    /// flush interval.
    pub async fn connect(
        url: &Secret,
        spill_path: impl AsRef<Path>,
        flush_interval: Duration,
    ) -> Result<Self, PostgresStoreError> {
        let options = PostgresOptions {
            flush_interval,
            ..PostgresOptions::default()
        };
        Self::connect_with(url, spill_path, options).await
    }

    /// Opens the spill file (creating it), connects to PostgreSQL, brings
    /// its schema up to date and starts the writer task, which first
    /// replays what an earlier run spilled. Must run inside a tokio runtime.
    ///
    /// Fails when the URL cannot be used, the spill file cannot be opened,
    /// or PostgreSQL answers with a refusal or a newer schema. When it does
    /// not answer at all, the store starts anyway in an outage: rows are
    /// kept, then spilled, and the schema is brought up to date at the
    /// first write that gets through.
    pub async fn connect_with(
        url: &Secret,
        spill_path: impl AsRef<Path>,
        options: PostgresOptions,
    ) -> Result<Self, PostgresStoreError> {
        let spill_path = spill_path.as_ref().to_owned();
        let (pool, scrubber) = pool(url, &options)?;
        let spill = {
            let path = spill_path.clone();
            tokio::task::spawn_blocking(move || {
                let spill = Spill::open(&path)?;
                let depth = spill.len()?;
                Ok::<_, StoreError>((spill, depth))
            })
            .await
            .map_err(|_| PostgresStoreError::WriterGone)?
            .map_err(|source| PostgresStoreError::Spill { source })?
        };
        let (spill, spill_depth) = spill;
        let shared = Arc::new(Shared {
            pool,
            spill: Mutex::new(spill),
            spill_path,
            scrubber,
            connect_timeout: options.connect_timeout,
            statement_timeout: options.statement_timeout,
            migrated: AtomicBool::new(false),
            wake: Notify::new(),
            available: AtomicBool::new(true),
            queued: AtomicUsize::new(0),
            spill_depth: AtomicU64::new(spill_depth),
            written: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            outages: AtomicU64::new(0),
        });
        match shared.client().await {
            Ok(_client) => {}
            Err(error) if error.is_permanent() => return Err(error),
            Err(error) => shared.mark_down(&error),
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = Writer::new(Arc::clone(&shared), receiver, &options);
        let writer_task = tokio::spawn(writer.run());
        Ok(Self {
            sender,
            shared,
            writer_task: Mutex::new(Some(writer_task)),
        })
    }

    /// The SQLite file rows are spilled to.
    pub fn spill_path(&self) -> &Path {
        &self.shared.spill_path
    }

    /// Rows handed over and not yet durable (neither in PostgreSQL nor in
    /// the spill). Near zero when healthy; up to about `memory_rows` during
    /// an outage.
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> PostgresStoreStats {
        let shared = &self.shared;
        PostgresStoreStats {
            available: shared.available.load(Ordering::Acquire),
            buffered: self.queue_depth(),
            spill_depth: shared.spill_depth.load(Ordering::Acquire),
            written: shared.written.load(Ordering::Acquire),
            duplicates: shared.duplicates.load(Ordering::Acquire),
            spilled: shared.spilled.load(Ordering::Acquire),
            replayed: shared.replayed.load(Ordering::Acquire),
            outages: shared.outages.load(Ordering::Acquire),
        }
    }

    /// Resolves once every row recorded before the call is durable: in
    /// PostgreSQL, or (PostgreSQL unreachable) in the spill file. Also
    /// replays the spill when PostgreSQL answers. Fails only when a row
    /// could be put in neither.
    pub async fn flush(&self) -> Result<(), PostgresStoreError> {
        let (reply, answer) = oneshot::channel();
        if self.sender.send(Message::Flush(reply)).is_err() {
            // Closed: rows recorded since were spilled by their senders.
            return Ok(());
        }
        self.shared.wake.notify_one();
        answer.await.unwrap_or(Err(PostgresStoreError::WriterGone))
    }

    /// For shutdown: writes (or spills) everything recorded so far, stops
    /// the writer task and closes the pool. Rows that still arrive
    /// afterwards (a request finishing late) are spilled by their sender,
    /// and replayed by the next store opened on the same spill file.
    pub async fn close(&self) -> Result<(), PostgresStoreError> {
        let (reply, answer) = oneshot::channel();
        let result = match self.sender.send(Message::Close(reply)) {
            Ok(()) => {
                self.shared.wake.notify_one();
                answer.await.unwrap_or(Err(PostgresStoreError::WriterGone))
            }
            Err(_) => Ok(()),
        };
        let writer_task = lock(&self.writer_task).take();
        if let Some(writer_task) = writer_task {
            if writer_task.await.is_err() {
                tracing::error!("the shared ledger's writer task panicked");
            }
        }
        self.shared.pool.close();
        result
    }

    /// [`UsageStore::totals`] with this store's own error.
    pub async fn read_totals(
        &self,
        query: &UsageQuery,
    ) -> Result<Vec<UsageTotals>, PostgresStoreError> {
        let shared = &self.shared;
        let client = shared.client().await?;
        let result =
            tokio::time::timeout(shared.statement_timeout, sql::totals(&client, query)).await;
        shared.answer(client, "usage totals", result)
    }

    /// [`UsageStore::series`] with this store's own error.
    pub async fn read_series(
        &self,
        query: &UsageQuery,
        bucket: Bucket,
    ) -> Result<Vec<SeriesPoint>, PostgresStoreError> {
        let shared = &self.shared;
        let client = shared.client().await?;
        let result = tokio::time::timeout(
            shared.statement_timeout,
            sql::series(&client, query, bucket),
        )
        .await;
        shared.answer(client, "usage series", result)
    }

    /// [`UsageStore::recent_errors`] with this store's own error.
    pub async fn read_recent_errors(
        &self,
        query: &ErrorQuery,
    ) -> Result<Vec<UsageRecord>, PostgresStoreError> {
        let shared = &self.shared;
        let client = shared.client().await?;
        let result =
            tokio::time::timeout(shared.statement_timeout, sql::recent_errors(&client, query))
                .await;
        shared.answer(client, "recent errors", result)
    }

    /// After close (the writer is gone): the row goes straight to the spill
    /// file, on the caller's thread. Rare, and the only way not to lose it.
    fn spill_late_row(&self, record: UsageRecord) {
        let shared = &self.shared;
        match lock(&shared.spill).push(std::slice::from_ref(&record)) {
            Ok(()) => {
                shared.spilled.fetch_add(1, Ordering::AcqRel);
                shared.spill_depth.fetch_add(1, Ordering::AcqRel);
            }
            Err(error) => tracing::error!(
                %error,
                request_id = %record.request_id,
                "a usage row that arrived after the shared ledger closed is lost"
            ),
        }
        shared.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

impl UsageSink for PostgresStore {
    /// A counter increment and a channel push: never waits for the network
    /// or the disk, and wakes nobody except for every [`BATCH_ROWS`]-th row.
    fn record(&self, record: UsageRecord) {
        let queued = self.shared.queued.fetch_add(1, Ordering::AcqRel) + 1;
        match self.sender.send(Message::Record(record)) {
            Ok(()) => {
                if queued % BATCH_ROWS == 0 {
                    self.shared.wake.notify_one();
                }
            }
            Err(mpsc::error::SendError(message)) => {
                if let Message::Record(record) = message {
                    self.spill_late_row(record);
                }
            }
        }
    }
}

fn ledger_error(error: PostgresStoreError) -> LedgerError {
    LedgerError {
        detail: error.to_string(),
    }
}

#[async_trait]
impl UsageStore for PostgresStore {
    async fn totals(&self, query: UsageQuery) -> Result<Vec<UsageTotals>, LedgerError> {
        self.read_totals(&query).await.map_err(ledger_error)
    }

    async fn series(
        &self,
        query: UsageQuery,
        bucket: Bucket,
    ) -> Result<Vec<SeriesPoint>, LedgerError> {
        self.read_series(&query, bucket).await.map_err(ledger_error)
    }

    async fn recent_errors(&self, query: ErrorQuery) -> Result<Vec<UsageRecord>, LedgerError> {
        self.read_recent_errors(&query).await.map_err(ledger_error)
    }
}

impl Shared {
    /// A read's answer: a connection that failed or timed out is dropped
    /// from the pool rather than handed to the next read.
    fn answer<T>(
        &self,
        client: deadpool_postgres::Client,
        what: &'static str,
        result: Result<Result<T, sql::ReadError>, tokio::time::error::Elapsed>,
    ) -> Result<T, PostgresStoreError> {
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(sql::ReadError::Corrupt(detail))) => Err(PostgresStoreError::Read { detail }),
            Ok(Err(sql::ReadError::Postgres(error))) => {
                let detail = self.describe(&error);
                discard(client);
                Err(PostgresStoreError::Read { detail })
            }
            Err(_) => {
                discard(client);
                Err(PostgresStoreError::Timeout {
                    what,
                    after: self.statement_timeout,
                })
            }
        }
    }

    /// A pooled connection, the schema brought up to date on first use.
    async fn client(&self) -> Result<deadpool_postgres::Client, PostgresStoreError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|error| self.pool_error(error))?;
        if !self.migrated.load(Ordering::Acquire) {
            let migration = migrate::migrate(&mut client, |error| self.describe(error));
            match tokio::time::timeout(self.statement_timeout, migration).await {
                Ok(Ok(())) => self.migrated.store(true, Ordering::Release),
                Ok(Err(error)) => {
                    discard(client);
                    return Err(error);
                }
                Err(_) => {
                    discard(client);
                    return Err(PostgresStoreError::Timeout {
                        what: "schema migration",
                        after: self.statement_timeout,
                    });
                }
            }
        }
        Ok(client)
    }

    fn pool_error(&self, error: deadpool_postgres::PoolError) -> PostgresStoreError {
        use deadpool_postgres::{PoolError, TimeoutType};
        match error {
            PoolError::Backend(error) => self.connect_error(&error),
            PoolError::Timeout(TimeoutType::Wait) => PostgresStoreError::Timeout {
                what: "a free pooled connection",
                after: self.statement_timeout,
            },
            PoolError::Timeout(_) => PostgresStoreError::Timeout {
                what: "connect",
                after: self.connect_timeout,
            },
            other => PostgresStoreError::Unreachable {
                detail: self.scrubber.scrub(other.to_string()),
            },
        }
    }

    /// A failed connect: refused (permanent) or unreachable (transient).
    fn connect_error(&self, error: &tokio_postgres::Error) -> PostgresStoreError {
        let detail = self.describe(error);
        let refused = error.as_db_error().is_some_and(|db| {
            let code = db.code().code();
            // 28: invalid authorization; 3D: no such database; 42: no
            // privilege (or a statement this router got wrong).
            code.starts_with("28") || code.starts_with("3D") || code.starts_with("42")
        });
        if refused {
            PostgresStoreError::Refused { detail }
        } else {
            PostgresStoreError::Unreachable { detail }
        }
    }

    /// The driver's message with its cause, scrubbed of the password.
    fn describe(&self, error: &tokio_postgres::Error) -> String {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        self.scrubber.scrub(text)
    }

    /// The first failure of an outage logs it; later ones are silent.
    fn mark_down(&self, error: &PostgresStoreError) {
        if self.available.swap(false, Ordering::AcqRel) {
            self.outages.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(
                %error,
                spill = %self.spill_path.display(),
                "the shared ledger (PostgreSQL) is unreachable; usage rows wait in memory, then \
                 in the spill file, until it answers"
            );
        }
    }

    fn mark_up(&self) {
        if !self.available.swap(true, Ordering::AcqRel) {
            tracing::info!(
                spilled_rows = self.spill_depth.load(Ordering::Acquire),
                "the shared ledger (PostgreSQL) answers again; replaying spilled rows"
            );
        }
    }
}

/// The pool for `url`, and the scrubber that keeps its password out of
/// messages. Builds only: nothing connects yet.
fn pool(url: &Secret, options: &PostgresOptions) -> Result<(Pool, Scrubber), PostgresStoreError> {
    let text = url.expose();
    let mut scrubber = Scrubber {
        secrets: vec![text.to_owned()],
    };
    let mut config: tokio_postgres::Config =
        text.parse().map_err(|error| PostgresStoreError::Url {
            detail: scrubber.scrub(format!("{error}")),
        })?;
    if let Some(password) = config.get_password() {
        let password = String::from_utf8_lossy(password).into_owned();
        scrubber.secrets.push(password);
        // Longest first: the URL contains the password.
        scrubber
            .secrets
            .sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    }
    if config.get_ssl_mode() == SslMode::Require {
        return Err(PostgresStoreError::Url {
            detail: "`sslmode=require` needs TLS, which the shared ledger does not support; \
                     reach PostgreSQL over a private network or loopback"
                .to_owned(),
        });
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_tcp_user_timeout().is_none() {
        // A write to a peer that vanished fails after this instead of the
        // kernel's many minutes of retransmissions.
        config.tcp_user_timeout(options.statement_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("router-ledger");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A closed connection (a restarted server) is noticed and
            // replaced without a query per checkout.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.statement_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|error| PostgresStoreError::Url {
            detail: format!("cannot build the connection pool: {error}"),
        })?;
    Ok((pool, scrubber))
}

/// Takes a connection out of the pool for good: after a failed or timed
/// out statement its state is unknown (it may still be waiting on a dead
/// peer), so it is closed rather than handed to the next caller.
fn discard(client: deadpool_postgres::Client) {
    drop(deadpool_postgres::Object::take(client));
}

/// Removes secrets (the URL, its password) from a message before it is
/// kept in an error or a log line.
struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    fn scrub(&self, mut text: String) -> String {
        for secret in &self.secrets {
            if !secret.is_empty() && text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

/// The store's mutexes guard plain data that stays consistent if a holder
/// panicked, so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_removes_the_url_and_the_password() {
        let scrubber = Scrubber {
            secrets: vec!["postgres://u:hunter2@db/x".to_owned(), "hunter2".to_owned()],
        };
        assert_eq!(
            scrubber.scrub("cannot use postgres://u:hunter2@db/x".to_owned()),
            "cannot use ***"
        );
        assert_eq!(
            scrubber.scrub("password hunter2 rejected".to_owned()),
            "password *** rejected"
        );
    }

    #[tokio::test]
    async fn a_url_that_wants_tls_is_refused_without_showing_it() {
        let url = Secret::new("postgres://u:hunter2@127.0.0.1:1/x?sslmode=require".to_owned());
        let error = pool(&url, &PostgresOptions::default())
            .err()
            .map(|error| format!("{error} {error:?}"))
            .unwrap_or_default();
        assert!(error.contains("sslmode=require"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
