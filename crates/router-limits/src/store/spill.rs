//! The shared ledger's spill: usage rows PostgreSQL could not take, kept in
//! the local SQLite file (table `ledger_spill`, schema version 2) until they
//! are replayed.
//!
//! It lives here, beside the SQLite ledger, because it is that file and
//! those columns: a spilled row is written and read back with the same code
//! as a `usage` row, so it replays bit for bit (which is what lets
//! PostgreSQL recognise a row it already has). Every call blocks on the
//! disk: the shared ledger calls it from a blocking thread.

use std::path::Path;

use router_core::usage::UsageRecord;
use rusqlite::{params, Connection};

use super::{query, schema, writer, StoreError};

/// The spill file, open for writing.
#[derive(Debug)]
pub(crate) struct Spill {
    connection: Connection,
}

impl Spill {
    /// Opens (creating) the file and its folder and brings its schema up to
    /// date, like [`super::SqliteStore::open`]; the two may share the file.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(folder) = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
        {
            std::fs::create_dir_all(folder).map_err(|source| StoreError::CreateFolder {
                path: folder.to_owned(),
                source,
            })?;
        }
        Ok(Self {
            connection: schema::open_writer(path)?,
        })
    }

    /// Appends the records in one transaction: all of them or none.
    pub(crate) fn push(&mut self, records: &[UsageRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let write = |connection: &mut Connection| -> Result<(), rusqlite::Error> {
            let transaction = connection.transaction()?;
            {
                let mut insert = transaction.prepare_cached(writer::INSERT_SPILL)?;
                for record in records {
                    writer::insert_record(&mut insert, record)?;
                }
            }
            transaction.commit()
        };
        write(&mut self.connection).map_err(|source| StoreError::Write { source })
    }

    /// Rows waiting in the spill.
    pub(crate) fn len(&self) -> Result<u64, StoreError> {
        let rows: i64 = self
            .connection
            .query_row("SELECT COUNT(*) FROM ledger_spill", [], |row| row.get(0))
            .map_err(|source| StoreError::Read { source })?;
        Ok(u64::try_from(rows).unwrap_or(0))
    }

    /// The `limit` oldest rows with their ids, oldest first.
    pub(crate) fn oldest(&self, limit: usize) -> Result<Vec<(i64, UsageRecord)>, StoreError> {
        let read_error = |source| StoreError::Read { source };
        let mut statement = self
            .connection
            .prepare_cached(&format!(
                "SELECT {}, id FROM ledger_spill ORDER BY id LIMIT ?1",
                query::RECORD_COLUMNS
            ))
            .map_err(read_error)?;
        let mut rows = statement
            .query(params![i64::try_from(limit).unwrap_or(i64::MAX)])
            .map_err(read_error)?;
        let mut answer = Vec::new();
        while let Some(row) = rows.next().map_err(read_error)? {
            let record = query::record(row)?;
            let id: i64 = row.get(20).map_err(read_error)?;
            answer.push((id, record));
        }
        Ok(answer)
    }

    /// Deletes every row up to and including `last_id`: called once those
    /// rows are committed in PostgreSQL, never before.
    pub(crate) fn remove_through(&mut self, last_id: i64) -> Result<(), StoreError> {
        self.connection
            .execute("DELETE FROM ledger_spill WHERE id <= ?1", params![last_id])
            .map_err(|source| StoreError::Write { source })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use router_core::usage::{Outcome, Tokens, UsageSource};
    use time::macros::datetime;

    use super::*;

    fn record(request_id: &str) -> UsageRecord {
        UsageRecord {
            time: datetime!(2025-06-01 08:00:00.123456789 UTC),
            request_id: request_id.to_owned(),
            key_id: u64::MAX,
            key_name: "team".to_owned(),
            model: "m".to_owned(),
            entry_index: None,
            entry_id: Some(3),
            provider_key_index: Some(1),
            tokens: Tokens {
                prompt: 1,
                completion: 2,
                cached: 0,
                reasoning: 0,
            },
            cost_usd: 0.1,
            outcome: Outcome::UpstreamFailed,
            error: Some("upstream said no".to_owned()),
            latency: Duration::from_nanos(987_654_321),
            upstream_latency: None,
            refused_by: None,
            source: UsageSource::None,
            stream: false,
        }
    }

    #[test]
    fn rows_come_back_bit_for_bit_and_leave_only_through_an_id() {
        let path = std::env::temp_dir().join(format!(
            "router-spill-{}-{}.db",
            std::process::id(),
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        ));
        let result = std::panic::catch_unwind(|| {
            let mut spill = Spill::open(&path).map_err(|error| error.to_string())?;
            let records = [record("a"), record("b"), record("c")];
            spill.push(&records).map_err(|error| error.to_string())?;
            assert_eq!(spill.len().ok(), Some(3));
            let oldest = spill.oldest(2).map_err(|error| error.to_string())?;
            let read: Vec<&UsageRecord> = oldest.iter().map(|(_, record)| record).collect();
            assert_eq!(read, [&records[0], &records[1]]);
            let last_id = oldest.last().map(|(id, _)| *id).unwrap_or_default();
            spill
                .remove_through(last_id)
                .map_err(|error| error.to_string())?;
            let rest = spill.oldest(10).map_err(|error| error.to_string())?;
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].1, records[2]);
            Ok::<_, String>(())
        });
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        assert_eq!(result.ok(), Some(Ok(())));
    }
}
