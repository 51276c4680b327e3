//! Opening the database file: pragmas and the schema's migrations.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::StoreError;

/// How long a connection waits for another's lock before giving up. Readers
/// never wait for the writer under WAL; this covers checkpoints and a second
/// process (a backup tool, an operator's `sqlite3` shell) holding the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one migration per version: `MIGRATIONS[n]` takes the file
/// from `user_version` n to n + 1. Append, never edit: files in the field
/// have run the earlier ones.
const MIGRATIONS: &[&str] = &[
    // Version 1. One row per request. `time` is RFC 3339 UTC with nine
    // fraction digits, so text order is time order; `day` is its UTC date,
    // stored to group by without string functions. Ids are the i64 with the
    // same bits as the u64 id.
    r#"
    CREATE TABLE usage (
        id                  INTEGER PRIMARY KEY,
        time                TEXT    NOT NULL,
        day                 TEXT    NOT NULL,
        request_id          TEXT    NOT NULL,
        key_id              INTEGER NOT NULL,
        key_name            TEXT    NOT NULL,
        model               TEXT    NOT NULL,
        entry_index         INTEGER,
        entry_id            INTEGER,
        provider_key_index  INTEGER,
        prompt_tokens       INTEGER NOT NULL,
        completion_tokens   INTEGER NOT NULL,
        cached_tokens       INTEGER NOT NULL,
        reasoning_tokens    INTEGER NOT NULL,
        cost_usd            REAL    NOT NULL,
        outcome             TEXT    NOT NULL,
        error               TEXT,
        latency_ms          REAL    NOT NULL,
        upstream_latency_ms REAL,
        refused_by          TEXT,
        source              TEXT    NOT NULL,
        stream              INTEGER NOT NULL
    );
    CREATE INDEX usage_key_time ON usage (key_id, time);
    CREATE INDEX usage_time ON usage (time);
    CREATE TABLE counters (
        "limit" TEXT    NOT NULL,
        period  TEXT    NOT NULL,
        value   INTEGER NOT NULL,
        PRIMARY KEY ("limit", period)
    ) WITHOUT ROWID;
    "#,
    // Version 2. Rows the shared ledger (PostgreSQL) could not take during
    // an outage, in the `usage` columns, until they are replayed. A queue:
    // AUTOINCREMENT so that an id is never reused while a replay that read
    // it may still delete it.
    r#"
    CREATE TABLE IF NOT EXISTS ledger_spill (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        time                TEXT    NOT NULL,
        day                 TEXT    NOT NULL,
        request_id          TEXT    NOT NULL,
        key_id              INTEGER NOT NULL,
        key_name            TEXT    NOT NULL,
        model               TEXT    NOT NULL,
        entry_index         INTEGER,
        entry_id            INTEGER,
        provider_key_index  INTEGER,
        prompt_tokens       INTEGER NOT NULL,
        completion_tokens   INTEGER NOT NULL,
        cached_tokens       INTEGER NOT NULL,
        reasoning_tokens    INTEGER NOT NULL,
        cost_usd            REAL    NOT NULL,
        outcome             TEXT    NOT NULL,
        error               TEXT,
        latency_ms          REAL    NOT NULL,
        upstream_latency_ms REAL,
        refused_by          TEXT,
        source              TEXT    NOT NULL,
        stream              INTEGER NOT NULL
    );
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens (creating) the file for the writer: WAL journal, `synchronous =
/// NORMAL`, schema brought up to date.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let open_error = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let mut connection = Connection::open(path).map_err(open_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // WAL lets the `/v1/usage` readers run while the writer commits, and
    // turns each commit into an append.
    let journal_mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_error)?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        // Some file systems (network mounts) refuse WAL. The ledger still
        // works, with readers and the writer taking turns.
        tracing::warn!(
            path = %path.display(),
            journal_mode,
            "the usage database cannot use WAL; readers will wait for the writer"
        );
    }
    // NORMAL under WAL: a commit survives a crash of the process; only a
    // power loss can take back the last commits. FULL would add an fsync
    // per batch for that case.
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_error)?;
    migrate(&mut connection, path)?;
    Ok(connection)
}

/// Opens a read connection to a file the writer has already set up.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let open_error = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // Read-write open (a read-only one cannot create the WAL index when it
    // is missing), but this connection never writes.
    connection
        .pragma_update(None, "query_only", true)
        .map_err(open_error)?;
    Ok(connection)
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let migrate_error = |source| StoreError::Migrate {
        path: path.to_owned(),
        source,
    };
    // Two connections may open one file at once (the ledger's writer and
    // the shared ledger's spill): each step takes the write lock first
    // (IMMEDIATE) and reads the version under it, so the second one waits
    // and then finds the step done instead of running it twice.
    loop {
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(migrate_error)?;
        let found: i64 = transaction
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(migrate_error)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        let Some(migration) = usize::try_from(found)
            .ok()
            .and_then(|found| MIGRATIONS.get(found))
        else {
            return Ok(());
        };
        // Each step commits with its version number, so a crash between
        // steps resumes at the right one.
        transaction
            .execute_batch(migration)
            .map_err(migrate_error)?;
        transaction
            .pragma_update(None, "user_version", found + 1)
            .map_err(migrate_error)?;
        transaction.commit().map_err(migrate_error)?;
    }
}
