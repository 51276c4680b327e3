//! The embedded ledger: usage records and calendar counters in one SQLite
//! file.
//!
//! Writes never happen on the request path. [`SqliteStore::record`] and
//! [`SqliteStore::update`] put the row on a channel and return; one writer
//! thread (rusqlite is blocking) commits what arrived every
//! `flush_interval`, or once [`BATCH_ROWS`] rows wait, in one
//! transaction. Counter updates coalesce: a batch keeps only the latest
//! value of each (limit, period).
//!
//! The channel is unbounded on purpose. A bounded one, when full, must
//! either block the request that sends (the latency this design removes) or
//! drop the row (a request missing from the books). Memory is the price:
//! while the disk refuses writes, rows accumulate (and are retried) instead
//! of vanishing; [`SqliteStore::queue_depth`] shows how many wait.
//!
//! Reads (`/v1/usage`, counters at start) use their own connections, which
//! WAL lets run beside the writer. They see what is committed: the ledger
//! lags the requests by at most `flush_interval`.
//!
//! # Schema (version 2, in `PRAGMA user_version`)
//!
//! - `usage`: one row per request: `id INTEGER PRIMARY KEY`, `time` (RFC 3339
//!   UTC, nine fraction digits, so text order is time order), `day`
//!   (`YYYY-MM-DD`, UTC), `request_id`, `key_id`, `key_name`, `model`,
//!   `entry_index`, `entry_id`, `provider_key_index`, `prompt_tokens`,
//!   `completion_tokens`, `cached_tokens`, `reasoning_tokens`, `cost_usd`
//!   REAL, `outcome`, `error`, `latency_ms` REAL, `upstream_latency_ms` REAL,
//!   `refused_by` (`scope:measure:window`), `source`, `stream` (0/1).
//!   Indexed on `(key_id, time)` and `(time)`. Key and entry ids are stored
//!   as the `i64` with the same bits. No column holds a secret.
//! - `counters`: `("limit", period)` primary key, `value`: the persisted day
//!   and month counters (see [`CounterRow`]).
//!
//! Version 2 adds `ledger_spill`: the `usage` columns plus an `AUTOINCREMENT`
//! id, where the shared ledger ([`postgres`]) keeps rows during a PostgreSQL
//! outage until they are replayed. Empty unless `limits.ledger_url` is set.

mod codec;
pub mod postgres;
mod query;
mod schema;
mod spill;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use async_trait::async_trait;
use router_core::config::LimitsConfig;
use router_core::usage::{
    Bucket, ErrorQuery, LedgerError, SeriesPoint, UsageQuery, UsageRecord, UsageSink, UsageStore,
    UsageTotals,
};
use rusqlite::Connection;
use time::OffsetDateTime;
use tokio::sync::oneshot;

pub use codec::{day_period, month_period};
pub use postgres::{PostgresOptions, PostgresStore, PostgresStoreError, PostgresStoreStats};
pub use schema::SCHEMA_VERSION;
pub use writer::BATCH_ROWS;

use crate::{CounterRow, CounterSink};
use writer::{Batch, Message, Reply, StoppedWriter, Writer};

/// What can go wrong with the ledger's file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the folder {path} for the usage database: {source}")]
    CreateFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the usage database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot bring the usage database {path} to schema version {SCHEMA_VERSION}: {source}")]
    Migrate {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the usage database {path} has schema version {found}, newer than this router's \
         {known}; run a newer router or point `limits.database` at another file"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot start the usage ledger's writer thread: {source}")]
    SpawnWriter { source: std::io::Error },
    #[error("cannot write to the usage database (the rows are kept and retried): {source}")]
    Write { source: rusqlite::Error },
    /// A write another caller's flush attempted failed.
    #[error("{detail}")]
    WriteFailed { detail: String },
    #[error("cannot read the usage database: {source}")]
    Read { source: rusqlite::Error },
    #[error(
        "the usage database holds {value:?} in column {column}, which this router cannot read"
    )]
    Corrupt { column: &'static str, value: String },
    #[error("the usage ledger's writer thread is gone")]
    WriterGone,
}

/// The SQLite ledger: a [`UsageSink`] and [`CounterSink`] that never block,
/// and a [`UsageStore`] that answers from the file.
pub struct SqliteStore {
    path: PathBuf,
    /// The writer thread's inbox. `mpsc::Sender` is `Sync`, so every request
    /// sends through this one handle without a lock.
    sender: mpsc::Sender<Message>,
    /// Rows sent and not yet committed (see [`SqliteStore::queue_depth`]).
    queued: Arc<AtomicUsize>,
    /// Set by `close` before it stops the writer: later rows are written
    /// by the sender itself (see `write_after_close`).
    closed: AtomicBool,
    /// The running writer; taken by `close` to join it.
    writer_thread: Mutex<Option<thread::JoinHandle<StoppedWriter>>>,
    /// The writer, to unpark it: it sleeps until its batch is due and
    /// rows do not wake it (see `Writer::run`).
    writer: thread::Thread,
    /// What the writer hands back when it stops: its connection, any rows it
    /// could not write, and the receiver, which stays alive so that a row
    /// sent while `close` runs lands in it rather than vanishing.
    stopped_writer: Mutex<Option<StoppedWriter>>,
    /// Idle read connections, reused across queries.
    readers: Arc<Readers>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("queue_depth", &self.queue_depth())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the ledger at `config.database` (creating it and its folder),
    /// writing every `config.flush_interval`.
    pub fn from_config(config: &LimitsConfig) -> Result<Self, StoreError> {
        Self::open(&config.database, config.flush_interval)
    }

    /// Opens (creating) the database file and its folder, brings its schema
    /// up to date and starts the writer thread.
    pub fn open(path: impl AsRef<Path>, flush_interval: Duration) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        if let Some(folder) = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
        {
            std::fs::create_dir_all(folder).map_err(|source| StoreError::CreateFolder {
                path: folder.to_owned(),
                source,
            })?;
        }
        let connection = schema::open_writer(&path)?;
        let queued = Arc::new(AtomicUsize::new(0));
        let (sender, receiver) = mpsc::channel();
        let writer = Writer::new(
            Batch::new(connection, Arc::clone(&queued)),
            receiver,
            flush_interval,
        );
        let writer_thread = thread::Builder::new()
            .name("usage-ledger".into())
            .spawn(move || {
                yield_to_requests();
                writer.run()
            })
            .map_err(|source| StoreError::SpawnWriter { source })?;
        Ok(Self {
            writer: writer_thread.thread().clone(),
            readers: Arc::new(Readers {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
            path,
            sender,
            queued,
            closed: AtomicBool::new(false),
            writer_thread: Mutex::new(Some(writer_thread)),
            stopped_writer: Mutex::new(None),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records and counter updates handed over and not yet committed
    /// (counter updates before coalescing). Near zero when healthy; growing
    /// means the disk is slow or refusing writes.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Writes everything sent before this call and waits until it is
    /// committed. Blocks the calling thread: from async code use
    /// [`SqliteStore::flush`].
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return self.write_after_close(None);
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Message::Flush(Reply::Blocking(reply)))?;
        answer.recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Writes everything sent before this call and resolves once it is
    /// committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return self.write_after_close(None);
        }
        let (reply, answer) = oneshot::channel();
        self.send(Message::Flush(Reply::Async(reply)))?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// For shutdown: writes everything sent so far and stops the writer
    /// thread. Rows that still arrive afterwards (a request finishing late)
    /// are written synchronously by their sender, so none is lost. Calling it
    /// again only retries rows a failed write left behind. Blocks until the
    /// final write is done.
    pub fn close(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::Release);
        let Some(writer_thread) = lock(&self.writer_thread).take() else {
            return self.write_after_close(None);
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let final_write = match self.send(Message::Close(Reply::Blocking(reply))) {
            Ok(()) => answer.recv().unwrap_or(Err(StoreError::WriterGone)),
            Err(error) => Err(error),
        };
        match writer_thread.join() {
            Ok(stopped) => *lock(&self.stopped_writer) = Some(stopped),
            Err(_) => tracing::error!("the usage ledger's writer thread panicked"),
        }
        // Rows sent between the writer's last read and its stop are in the
        // channel still: drain and write them now.
        self.write_after_close(None).and(final_write)
    }

    /// The counters of the current UTC day (`YYYY-MM-DD`) and month
    /// (`YYYY-MM`), to restore the limiter at start. Reads what is on disk;
    /// blocks (call it before serving, or on a blocking thread).
    pub fn load_counters(&self, now: OffsetDateTime) -> Result<Vec<CounterRow>, StoreError> {
        self.readers
            .with(|connection| query::current_counters(connection, now))
    }

    /// Every record committed with a time in `[since, until)`, in the order
    /// written. Blocks.
    pub fn read_records(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        self.readers
            .with(|connection| query::records(connection, since, until))
    }

    /// Rows in the `usage` table (committed records). Blocks.
    pub fn usage_row_count(&self) -> Result<u64, StoreError> {
        self.readers.with(query::usage_rows)
    }

    /// Totals as [`UsageStore::totals`] computes them, on the calling
    /// thread. Blocks.
    pub fn totals_blocking(&self, query: &UsageQuery) -> Result<Vec<UsageTotals>, StoreError> {
        self.readers
            .with(|connection| query::totals(connection, query))
    }

    /// Sends a control message and wakes the writer for it.
    fn send(&self, message: Message) -> Result<(), StoreError> {
        self.sender
            .send(message)
            .map_err(|_| StoreError::WriterGone)?;
        self.writer.unpark();
        Ok(())
    }

    /// Hands a row to the writer: the request path. Two atomic operations and
    /// a channel push, which wakes nobody: the writer looks when its batch is
    /// due, or when this row fills one. Never waits for the disk.
    fn enqueue(&self, message: Message) {
        // Counted before the send, so that the writer's decrement after the
        // commit can never run first.
        let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if self.closed.load(Ordering::Acquire) {
            self.log_failure(self.write_after_close(Some(message)));
            return;
        }
        if let Err(mpsc::SendError(message)) = self.sender.send(message) {
            // Only if the writer thread died: write it here instead.
            self.log_failure(self.write_after_close(Some(message)));
            return;
        }
        if queued % BATCH_ROWS == 0 {
            self.writer.unpark();
        }
    }

    /// Writes on the caller's thread once the writer has stopped: drains
    /// what the channel still holds, adds `message`, commits. While `close`
    /// is still stopping the writer, `message` goes to the channel instead,
    /// where `close` will find it.
    fn write_after_close(&self, message: Option<Message>) -> Result<(), StoreError> {
        let mut stopped = lock(&self.stopped_writer);
        let mut message = message;
        if stopped.is_none() {
            let Some(unsent) = message.take() else {
                return Ok(());
            };
            // Sent under the lock: `close` stores the stopped writer under
            // it too, and drains the channel after, so this row is seen.
            let mpsc::SendError(unsent) = match self.sender.send(unsent) {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            // The writer thread died (a bug) and took the receiver with it:
            // a fresh connection takes over, on the callers' threads.
            let (_, dead_receiver) = mpsc::channel();
            let connection = schema::open_writer(&self.path)?;
            *stopped = Some(StoppedWriter {
                batch: Batch::new(connection, Arc::clone(&self.queued)),
                receiver: dead_receiver,
            });
            message = Some(unsent);
        }
        let Some(StoppedWriter { batch, receiver }) = stopped.as_mut() else {
            return Ok(());
        };
        let mut replies = Vec::new();
        for pending in receiver.try_iter().chain(message) {
            match pending {
                Message::Record(record) => batch.push_record(record),
                Message::Counter(row) => batch.push_counter(row),
                Message::Flush(reply) | Message::Close(reply) => replies.push(reply),
            }
        }
        let result = batch.write();
        for reply in replies {
            // Flushes that raced with `close` wait on this same write.
            reply.send(match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(StoreError::WriteFailed {
                    detail: error.to_string(),
                }),
            });
        }
        result
    }

    fn log_failure(&self, result: Result<(), StoreError>) {
        if let Err(error) = result {
            tracing::error!(%error, path = %self.path.display(), "cannot write the usage ledger after close");
        }
    }
}

impl UsageSink for SqliteStore {
    fn record(&self, record: UsageRecord) {
        self.enqueue(Message::Record(record));
    }
}

impl CounterSink for SqliteStore {
    fn update(&self, row: CounterRow) {
        self.enqueue(Message::Counter(row));
    }
}

#[async_trait]
impl UsageStore for SqliteStore {
    /// Runs the aggregate on a blocking thread with its own read connection.
    /// See the module docs for what `requests` counts.
    async fn totals(&self, query: UsageQuery) -> Result<Vec<UsageTotals>, LedgerError> {
        self.read(move |connection| query::totals(connection, &query))
            .await
    }

    async fn series(
        &self,
        query: UsageQuery,
        bucket: Bucket,
    ) -> Result<Vec<SeriesPoint>, LedgerError> {
        self.read(move |connection| query::series(connection, &query, bucket))
            .await
    }

    async fn recent_errors(&self, query: ErrorQuery) -> Result<Vec<UsageRecord>, LedgerError> {
        self.read(move |connection| query::recent_errors(connection, &query))
            .await
    }
}

impl SqliteStore {
    /// Runs a read on a blocking thread with a pooled read connection: the
    /// async callers (`/v1/usage`, the dashboard) never block a worker.
    async fn read<T, F>(&self, read: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(read))
            .await
            .map_err(|error| LedgerError {
                detail: format!("the query did not finish: {error}"),
            })?
            .map_err(|error| LedgerError {
                detail: error.to_string(),
            })
    }

    /// [`UsageStore::series`] on the calling thread. Blocks.
    pub fn series_blocking(
        &self,
        query: &UsageQuery,
        bucket: Bucket,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        self.readers
            .with(|connection| query::series(connection, query, bucket))
    }

    /// [`UsageStore::recent_errors`] on the calling thread. Blocks.
    pub fn recent_errors_blocking(
        &self,
        query: &ErrorQuery,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        self.readers
            .with(|connection| query::recent_errors(connection, query))
    }
}

impl Drop for SqliteStore {
    /// Writes what is pending, like `close`: a store dropped without closing
    /// loses nothing it was handed.
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, path = %self.path.display(), "usage rows left unwritten at drop");
        }
    }
}

/// A small pool of read connections. Opening one costs a file open and a
/// schema read; a query reuses an idle one instead.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// More idle connections than this are closed: concurrent `/v1/usage`
/// queries are rare, and each connection holds a page cache.
const MAX_IDLE_READERS: usize = 4;

impl Readers {
    fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = lock(&self.idle).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => schema::open_reader(&self.path)?,
        };
        let result = read(&connection);
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        result
    }
}

/// The writer thread's nice value. A request that wakes while the writer
/// commits then preempts it at once; at the default priority a commit of a
/// batch delayed the requests arriving meanwhile (router on one shared
/// core, one connection: p99 0.50 ms, 0.27-0.32 ms at nice 10). The writer
/// still gets about a tenth of a contended core, which kept up at
/// saturation: 490,935 requests in 20 s at 128 connections, every row
/// written by the end of the run.
pub const WRITER_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`WRITER_NICE`] (never raises
/// it). Linux only: there `setpriority` on a thread id affects that thread
/// alone, where elsewhere it would renice the whole process.
#[cfg(target_os = "linux")]
fn yield_to_requests() {
    let thread = rustix::thread::gettid();
    let current = rustix::process::getpriority_process(Some(thread)).unwrap_or(0);
    if current >= WRITER_NICE {
        return;
    }
    if let Err(error) = rustix::process::setpriority_process(Some(thread), WRITER_NICE) {
        tracing::debug!(%error, "cannot lower the usage ledger writer's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn yield_to_requests() {}

/// The store's mutexes guard plain data that stays consistent if a holder
/// panicked, so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
