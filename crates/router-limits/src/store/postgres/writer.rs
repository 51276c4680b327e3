//! The one task that writes the shared ledger: it drains the channel,
//! inserts in batches, keeps rows through an outage, spills past the bound,
//! and replays the spill when PostgreSQL answers again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use router_core::usage::UsageRecord;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{discard, lock, sql, PostgresOptions, PostgresStoreError, Shared, BATCH_ROWS};
use crate::store::StoreError;

/// Rows per insert statement: a batch bigger than this (a backlog after an
/// outage) goes in several statements, each well within the statement
/// timeout.
const INSERT_ROWS: usize = 5_000;

/// Spilled rows read back per replay step (one insert, then one delete).
const REPLAY_ROWS: usize = 5_000;

/// What `record()` and the store's control calls send the writer.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is a record: boxing it would add an allocation per request \
              to save bytes on the rare control message"
)]
pub(super) enum Message {
    Record(UsageRecord),
    /// Make everything received so far durable, then answer.
    Flush(oneshot::Sender<Result<(), PostgresStoreError>>),
    /// The same, then stop.
    Close(oneshot::Sender<Result<(), PostgresStoreError>>),
}

/// The writer task's state.
pub(super) struct Writer {
    shared: Arc<Shared>,
    receiver: mpsc::UnboundedReceiver<Message>,
    /// Rows received and neither in PostgreSQL nor in the spill.
    pending: Vec<UsageRecord>,
    flush_interval: Duration,
    memory_rows: usize,
    /// The last write failed: full batches wait for the next tick instead
    /// of retrying on every message against a server that just failed.
    retrying: bool,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        receiver: mpsc::UnboundedReceiver<Message>,
        options: &PostgresOptions,
    ) -> Self {
        Self {
            shared,
            receiver,
            pending: Vec::new(),
            flush_interval: options.flush_interval,
            memory_rows: options.memory_rows.max(1),
            retrying: false,
        }
    }

    /// Runs until `Close`, or until the store is dropped. Idle (nothing in
    /// memory or in the spill), it sleeps in `recv` and the first row wakes
    /// it; from then on it sleeps until the batch is due, so rows sent
    /// meanwhile do not wake it (see `SqliteStore`'s writer, whose pacing
    /// this copies).
    pub(super) async fn run(mut self) {
        // A spill left by an earlier run is replayed at once.
        let mut deadline = (self.spill_depth() > 0).then(Instant::now);
        loop {
            if deadline.is_none() {
                match self.receiver.recv().await {
                    Some(message) => {
                        if let Some(stop) = self.take(message, &mut deadline).await {
                            return self.close(stop).await;
                        }
                    }
                    None => break,
                }
            }
            loop {
                match self.receiver.try_recv() {
                    Ok(message) => {
                        if let Some(stop) = self.take(message, &mut deadline).await {
                            return self.close(stop).await;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.finish().await;
                        return;
                    }
                }
            }
            if !self.shared.available.load(Ordering::Acquire)
                && self.pending.len() >= self.memory_rows
            {
                // The bound holds between ticks too: an outage at a high
                // rate fills memory faster than the interval.
                let _ = self.spill_pending().await;
            }
            let due = deadline.is_some_and(|at| at <= Instant::now());
            let full = self.pending.len() >= BATCH_ROWS && !self.retrying;
            if due || full {
                let _ = self.write(false).await;
                deadline = self.next_deadline();
            }
            if let Some(at) = deadline {
                // Woken early by a flush, a close or a full batch (a
                // permit stored by `notify_one` counts); either way the
                // loop just looks again.
                let _ = tokio::time::timeout_at(at, self.shared.wake.notified()).await;
            }
        }
        self.finish().await;
    }

    /// Adds a row to the batch or answers a flush. Returns the reply of a
    /// `Close`, which ends the loop.
    async fn take(
        &mut self,
        message: Message,
        deadline: &mut Option<Instant>,
    ) -> Option<oneshot::Sender<Result<(), PostgresStoreError>>> {
        match message {
            Message::Record(record) => self.pending.push(record),
            Message::Flush(reply) => {
                let result = self.write(true).await;
                let _ = reply.send(result);
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

    async fn close(mut self, reply: oneshot::Sender<Result<(), PostgresStoreError>>) {
        let result = self.write(true).await;
        let _ = reply.send(result);
        // Dropping `self` closes the channel and spills what raced in.
    }

    /// The store was dropped without `close`: make everything durable.
    async fn finish(&mut self) {
        if let Err(error) = self.write(true).await {
            tracing::error!(%error, "the shared ledger's last write failed");
        }
    }

    /// One write cycle: pending rows to PostgreSQL, then the spill replayed.
    /// When PostgreSQL fails, the rows stay in memory, unless there are too
    /// many or `durable` asks for them to be safe now: then they go to the
    /// spill. Answers whether every pending row is durable.
    async fn write(&mut self, durable: bool) -> Result<(), PostgresStoreError> {
        let mut failure = None;
        if !self.pending.is_empty() {
            match self.write_pending().await {
                Ok(()) => self.shared.mark_up(),
                Err(error) => {
                    self.shared.mark_down(&error);
                    failure = Some(error);
                }
            }
        }
        if failure.is_none() && self.spill_depth() > 0 {
            match self.replay().await {
                Ok(()) => self.shared.mark_up(),
                Err(PostgresStoreError::Spill { source }) => {
                    tracing::error!(error = %source, "cannot replay the shared ledger's spill file");
                }
                Err(error) => self.shared.mark_down(&error),
            }
        }
        self.retrying = failure.is_some();
        let Some(failure) = failure else {
            return Ok(());
        };
        if durable || self.pending.len() >= self.memory_rows {
            return self.spill_pending().await;
        }
        Err(failure)
    }

    /// Inserts the pending rows, a statement per [`INSERT_ROWS`]; each
    /// committed statement leaves memory at once, so a failure midway
    /// keeps only what is left.
    async fn write_pending(&mut self) -> Result<(), PostgresStoreError> {
        while !self.pending.is_empty() {
            let rows = self.pending.len().min(INSERT_ROWS);
            let inserted = insert(&self.shared, &self.pending[..rows]).await?;
            self.pending.drain(..rows);
            self.count_written(rows, inserted);
            self.shared.queued.fetch_sub(rows, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Moves the spill into PostgreSQL, oldest first; a batch leaves the
    /// spill only once PostgreSQL has committed it.
    async fn replay(&mut self) -> Result<(), PostgresStoreError> {
        loop {
            let oldest = self.with_spill(|spill| spill.oldest(REPLAY_ROWS)).await?;
            let Some(&(last_id, _)) = oldest.last() else {
                self.shared.spill_depth.store(0, Ordering::Release);
                return Ok(());
            };
            let records: Vec<UsageRecord> = oldest.into_iter().map(|(_, record)| record).collect();
            let inserted = insert(&self.shared, &records).await?;
            self.count_written(records.len(), inserted);
            self.shared
                .replayed
                .fetch_add(records.len() as u64, Ordering::AcqRel);
            let depth = self
                .with_spill(move |spill| {
                    spill.remove_through(last_id)?;
                    spill.len()
                })
                .await?;
            self.shared.spill_depth.store(depth, Ordering::Release);
        }
    }

    /// Moves every pending row to the spill file in one transaction. On
    /// failure they stay in memory (and the error is logged).
    async fn spill_pending(&mut self) -> Result<(), PostgresStoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        let shared = Arc::clone(&self.shared);
        let outcome = tokio::task::spawn_blocking(move || {
            let result = lock(&shared.spill).push(&records);
            (records, result)
        })
        .await;
        match outcome {
            Ok((records, Ok(()))) => {
                let rows = records.len();
                let shared = &self.shared;
                shared.queued.fetch_sub(rows, Ordering::AcqRel);
                shared.spilled.fetch_add(rows as u64, Ordering::AcqRel);
                shared.spill_depth.fetch_add(rows as u64, Ordering::AcqRel);
                Ok(())
            }
            Ok((records, Err(source))) => {
                tracing::error!(
                    error = %source,
                    rows = records.len(),
                    "cannot spill usage rows to the local file; keeping them in memory"
                );
                self.pending = records;
                Err(PostgresStoreError::Spill { source })
            }
            Err(_) => {
                tracing::error!("the spill of the shared ledger panicked; its rows are lost");
                Err(PostgresStoreError::WriterGone)
            }
        }
    }

    /// Runs a call on the spill file on a blocking thread.
    async fn with_spill<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut crate::store::spill::Spill) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PostgresStoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || call(&mut lock(&shared.spill)))
            .await
            .map_err(|_| PostgresStoreError::WriterGone)?
            .map_err(|source| PostgresStoreError::Spill { source })
    }

    fn count_written(&self, rows: usize, inserted: u64) {
        self.shared.written.fetch_add(inserted, Ordering::AcqRel);
        self.shared
            .duplicates
            .fetch_add((rows as u64).saturating_sub(inserted), Ordering::AcqRel);
    }

    fn spill_depth(&self) -> u64 {
        self.shared.spill_depth.load(Ordering::Acquire)
    }

    /// After a write attempt: no deadline when nothing is left to do, one
    /// interval from now when rows wait in memory or in the spill (the
    /// retry).
    fn next_deadline(&self) -> Option<Instant> {
        (!self.pending.is_empty() || self.spill_depth() > 0)
            .then(|| Instant::now() + self.flush_interval)
    }
}

impl Drop for Writer {
    /// Whatever ends the task (a close, the store dropped, the runtime shut
    /// down under it), rows it holds or that wait in the channel go to the
    /// spill file, synchronously: a blocking write here beats losing them.
    fn drop(&mut self) {
        // Closed first: a row sent from now on fails to send and its
        // sender spills it itself.
        self.receiver.close();
        let mut rows = std::mem::take(&mut self.pending);
        let mut replies = Vec::new();
        while let Ok(message) = self.receiver.try_recv() {
            match message {
                Message::Record(record) => rows.push(record),
                Message::Flush(reply) | Message::Close(reply) => replies.push(reply),
            }
        }
        let result = if rows.is_empty() {
            Ok(())
        } else {
            let shared = &self.shared;
            let result = lock(&shared.spill).push(&rows);
            shared.queued.fetch_sub(rows.len(), Ordering::AcqRel);
            match &result {
                Ok(()) => {
                    shared
                        .spilled
                        .fetch_add(rows.len() as u64, Ordering::AcqRel);
                    shared
                        .spill_depth
                        .fetch_add(rows.len() as u64, Ordering::AcqRel);
                }
                Err(error) => tracing::error!(
                    %error,
                    rows = rows.len(),
                    "usage rows of the shared ledger are lost: they could not be spilled"
                ),
            }
            result
        };
        for reply in replies {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(PostgresStoreError::Write {
                    detail: error.to_string(),
                }),
            });
        }
    }
}

/// Inserts rows in one statement, bounded by the statement timeout. A
/// connection whose statement failed or timed out leaves the pool.
async fn insert(shared: &Shared, records: &[UsageRecord]) -> Result<u64, PostgresStoreError> {
    let client = shared.client().await?;
    match tokio::time::timeout(shared.statement_timeout, sql::insert(&client, records)).await {
        Ok(Ok(inserted)) => Ok(inserted),
        Ok(Err(error)) => {
            let detail = shared.describe(&error);
            discard(client);
            Err(PostgresStoreError::Write { detail })
        }
        Err(_) => {
            discard(client);
            Err(PostgresStoreError::Timeout {
                what: "usage insert",
                after: shared.statement_timeout,
            })
        }
    }
}
