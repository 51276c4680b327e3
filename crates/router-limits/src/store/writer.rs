//! The one thread that writes the ledger: it drains the channel and commits
//! in batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use router_core::usage::UsageRecord;
use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use super::codec;
use super::StoreError;
use crate::CounterRow;

/// A batch is written when it holds this many rows, even before the flush
/// interval. The writer shares the CPU with the requests, and a request that
/// arrives while it commits waits: 64 rows take a fraction of a millisecond
/// (512 took several, and doubled the p99 of requests at one connection),
/// while a transaction's fixed cost still adds under 1 % per row.
pub const BATCH_ROWS: usize = 64;

/// What `record()`, `update()` and the store's control calls send the writer.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "most messages are records: boxing them would add an allocation per request \
              to save a few bytes per queued counter update"
)]
pub(crate) enum Message {
    Record(UsageRecord),
    Counter(CounterRow),
    /// Write everything received so far, then answer.
    Flush(Reply),
    /// Write everything received so far, answer, and stop.
    Close(Reply),
}

/// Where a flush's result goes: a blocked thread or an awaiting task.
#[derive(Debug)]
pub(crate) enum Reply {
    Blocking(mpsc::SyncSender<Result<(), StoreError>>),
    Async(oneshot::Sender<Result<(), StoreError>>),
}

impl Reply {
    pub(crate) fn send(self, result: Result<(), StoreError>) {
        // The asker may have given up waiting (a cancelled future); the
        // rows are written either way, so there is nobody to tell.
        match self {
            Self::Blocking(sender) => {
                let _ = sender.send(result);
            }
            Self::Async(sender) => {
                let _ = sender.send(result);
            }
        }
    }
}

/// The columns of a usage row, in the order [`insert_record`] binds them:
/// the `usage` table and the shared ledger's `ledger_spill` share them.
macro_rules! usage_columns {
    () => {
        "time, day, request_id, key_id, key_name, model, entry_index, entry_id, \
         provider_key_index, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, \
         cost_usd, outcome, error, latency_ms, upstream_latency_ms, refused_by, source, stream"
    };
}

const INSERT_USAGE: &str = concat!(
    "INSERT INTO usage (",
    usage_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
     ?18, ?19, ?20, ?21)"
);

/// [`INSERT_USAGE`] into the shared ledger's spill (see `store::spill`).
pub(crate) const INSERT_SPILL: &str = concat!(
    "INSERT INTO ledger_spill (",
    usage_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
     ?18, ?19, ?20, ?21)"
);

/// Runs an insert of [`usage_columns`] (`INSERT_USAGE` or `INSERT_SPILL`)
/// for one record.
pub(crate) fn insert_record(
    insert: &mut rusqlite::CachedStatement<'_>,
    record: &UsageRecord,
) -> Result<(), rusqlite::Error> {
    let time = codec::time_text(record.time);
    insert.execute(params![
        time,
        codec::day_of_time_text(&time),
        record.request_id,
        codec::id_to_sql(record.key_id),
        record.key_name,
        record.model,
        codec::index_to_sql(record.entry_index),
        record.entry_id.map(codec::id_to_sql),
        codec::index_to_sql(record.provider_key_index),
        codec::count_to_sql(record.tokens.prompt),
        codec::count_to_sql(record.tokens.completion),
        codec::count_to_sql(record.tokens.cached),
        codec::count_to_sql(record.tokens.reasoning),
        cost_to_sql(record),
        codec::outcome_text(record.outcome),
        record.error,
        codec::millis(record.latency),
        record.upstream_latency.map(codec::millis),
        record.refused_by.map(codec::limit_text),
        codec::source_text(record.source),
        record.stream,
    ])?;
    Ok(())
}

const UPSERT_COUNTER: &str = "INSERT INTO counters (\"limit\", period, value) VALUES (?1, ?2, ?3) \
     ON CONFLICT (\"limit\", period) DO UPDATE SET value = excluded.value";

/// Rows received and not yet committed, with the connection that commits
/// them. Owned by the writer thread while it runs, by the store after.
#[derive(Debug)]
pub(crate) struct Batch {
    connection: Connection,
    records: Vec<UsageRecord>,
    /// The latest value of each (limit, period): the limiter sends a
    /// counter's running total, so older values in the same batch are moot.
    counters: HashMap<(Arc<str>, Arc<str>), u64>,
    /// Messages behind `records` and `counters` (counter updates before
    /// coalescing), subtracted from `queued` once committed.
    messages: usize,
    /// The store's queue depth: incremented by senders, decremented here
    /// on commit, so it counts what is not yet on disk.
    queued: Arc<AtomicUsize>,
}

impl Batch {
    pub(crate) fn new(connection: Connection, queued: Arc<AtomicUsize>) -> Self {
        Self {
            connection,
            records: Vec::new(),
            counters: HashMap::new(),
            messages: 0,
            queued,
        }
    }

    /// Rows the next commit would write.
    fn rows(&self) -> usize {
        self.records.len() + self.counters.len()
    }

    pub(crate) fn push_record(&mut self, record: UsageRecord) {
        self.records.push(record);
        self.messages += 1;
    }

    pub(crate) fn push_counter(&mut self, row: CounterRow) {
        self.counters.insert((row.limit, row.period), row.value);
        self.messages += 1;
    }

    /// Writes every pending row in one transaction. On failure nothing is
    /// committed and every row stays pending for the next attempt.
    pub(crate) fn write(&mut self) -> Result<(), StoreError> {
        if self.messages == 0 {
            return Ok(());
        }
        self.write_transaction()
            .map_err(|source| StoreError::Write { source })?;
        self.records.clear();
        self.counters.clear();
        self.queued.fetch_sub(self.messages, Ordering::AcqRel);
        self.messages = 0;
        Ok(())
    }

    /// [`Batch::write`], logging a failure instead of returning it (for
    /// writes nobody waits on). Returns whether everything is written.
    pub(crate) fn write_logged(&mut self) -> bool {
        match self.write() {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(
                    %error,
                    pending_records = self.records.len(),
                    pending_counters = self.counters.len(),
                    "cannot write the usage ledger; keeping the rows to retry"
                );
                false
            }
        }
    }

    fn write_transaction(&mut self) -> Result<(), rusqlite::Error> {
        let transaction = self.connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(INSERT_USAGE)?;
            for record in &self.records {
                insert_record(&mut insert, record)?;
            }
            let mut upsert = transaction.prepare_cached(UPSERT_COUNTER)?;
            for ((limit, period), value) in &self.counters {
                upsert.execute(params![&**limit, &**period, codec::count_to_sql(*value)])?;
            }
        }
        transaction.commit()
    }
}

/// SQLite stores NaN as NULL, which the NOT NULL column would refuse, failing
/// the whole batch on every retry. A NaN cost is a pricing bug, not a
/// spend: it is written as 0 and said loudly.
pub(crate) fn cost_to_sql(record: &UsageRecord) -> f64 {
    if record.cost_usd.is_nan() {
        tracing::warn!(
            request_id = %record.request_id,
            "usage record with a NaN cost; written as 0"
        );
        return 0.0;
    }
    record.cost_usd
}

/// What a stopped writer hands back: its connection and unwritten rows, and
/// the channel's receiving end, kept alive so that nothing sent late is
/// dropped with it.
#[derive(Debug)]
pub(crate) struct StoppedWriter {
    pub(crate) batch: Batch,
    pub(crate) receiver: mpsc::Receiver<Message>,
}

/// The writer thread's state.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) batch: Batch,
    pub(crate) receiver: mpsc::Receiver<Message>,
    pub(crate) flush_interval: Duration,
    /// The last write failed: full batches wait for the next tick instead
    /// of retrying on every message against a disk that just refused them.
    retrying: bool,
}

impl Writer {
    pub(crate) fn new(
        batch: Batch,
        receiver: mpsc::Receiver<Message>,
        flush_interval: Duration,
    ) -> Self {
        Self {
            batch,
            receiver,
            flush_interval,
            retrying: false,
        }
    }

    /// Runs until `Close` (or until every sender is gone) and hands back the
    /// batch and the receiver, so that the store can still write what
    /// arrives after (see `SqliteStore::close`).
    ///
    /// The writer shares its core with the requests, so it must not wake
    /// for every row: a wake-up is a context switch on the request path.
    /// Idle, it sleeps in `recv` and the first row wakes it. From then on
    /// it sleeps in `park_timeout` until the batch is due: rows sent
    /// meanwhile wait in the channel without waking it. The store unparks
    /// it early for a flush, a close, and each [`BATCH_ROWS`]-th queued row.
    pub(crate) fn run(mut self) -> StoppedWriter {
        // When the oldest unwritten row must be written by; `None` while
        // nothing waits.
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_none() {
                match self.receiver.recv() {
                    Ok(message) => {
                        if let Some(stop) = self.take(message, &mut deadline) {
                            return self.close(stop);
                        }
                    }
                    Err(mpsc::RecvError) => break,
                }
            }
            loop {
                match self.receiver.try_recv() {
                    Ok(message) => {
                        if let Some(stop) = self.take(message, &mut deadline) {
                            return self.close(stop);
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.batch.write_logged();
                        return self.stopped();
                    }
                }
            }
            let due = deadline.is_some_and(|at| at <= Instant::now());
            // A full batch goes now, unless the last attempt failed (then
            // it waits for the next tick).
            let full = self.batch.rows() >= BATCH_ROWS && !self.retrying;
            if due || full {
                self.retrying = !self.batch.write_logged();
                deadline = self.next_deadline();
            }
            if let Some(at) = deadline {
                // May return early (an unpark, or spuriously): the loop
                // just looks again.
                thread::park_timeout(at.saturating_duration_since(Instant::now()));
            }
        }
        self.batch.write_logged();
        self.stopped()
    }

    /// Adds a row to the batch or answers a flush. Returns the reply of a
    /// `Close`, which ends the loop.
    fn take(&mut self, message: Message, deadline: &mut Option<Instant>) -> Option<Reply> {
        match message {
            Message::Record(record) => self.batch.push_record(record),
            Message::Counter(row) => self.batch.push_counter(row),
            Message::Flush(reply) => {
                let result = self.batch.write();
                self.retrying = result.is_err();
                reply.send(result);
                *deadline = self.next_deadline();
                return None;
            }
            Message::Close(reply) => return Some(reply),
        }
        if deadline.is_none() {
            *deadline = Some(Instant::now() + self.flush_interval);
        }
        None
    }

    /// Writes everything received, answers the `Close` and stops.
    fn close(mut self, reply: Reply) -> StoppedWriter {
        reply.send(self.batch.write());
        self.stopped()
    }

    fn stopped(self) -> StoppedWriter {
        StoppedWriter {
            batch: self.batch,
            receiver: self.receiver,
        }
    }

    /// After a write attempt: no deadline when everything is written, one
    /// interval from now when rows are left (the retry).
    fn next_deadline(&self) -> Option<Instant> {
        (self.batch.messages > 0).then(|| Instant::now() + self.flush_interval)
    }
}
