//! The shared ledger's schema in PostgreSQL, and bringing a database up to
//! it.
//!
//! Several replicas start at once against one database, so every migration
//! runs inside one transaction that first takes a transaction-scoped
//! advisory lock: the first replica creates the tables, the others wait for
//! its commit, then read the version it wrote and find nothing left to do.
//! The version table (`router_ledger_schema`) is created with `IF NOT
//! EXISTS` under that lock, so even the very first start is safe.

use super::PostgresStoreError;

/// The key of the advisory lock the migrations hold ("routledg" in ASCII),
/// chosen to stay clear of any lock an application sharing the database
/// might take.
const MIGRATION_LOCK: i64 = 0x726f_7574_6c65_6467;

/// One migration per version: `MIGRATIONS[n]` takes the database from
/// version n to n + 1. Append, never edit: databases in the field have run
/// the earlier ones.
const MIGRATIONS: &[&str] = &[
    // Version 1: the SQLite `usage` table's columns (see `store`), in
    // PostgreSQL types. `time`, `day` and `model` compare bytewise (`C`),
    // as SQLite does: range filters on the fixed-width time text and the
    // order of grouped answers are then the same in both stores. `time`
    // stays text rather than `timestamptz` for the same reason: it keeps
    // nanoseconds, where a PostgreSQL timestamp keeps microseconds, so a
    // `since`/`until` bound selects exactly the rows SQLite would.
    //
    // A row is unique by (request_id, time): a replayed row is the same
    // record bit for bit, so `ON CONFLICT DO NOTHING` drops the second
    // copy; two different requests that happen to share a request id
    // (replicas started in the same millisecond) still both count.
    r#"
    CREATE TABLE usage (
        id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time                TEXT COLLATE "C" NOT NULL,
        day                 TEXT COLLATE "C" NOT NULL,
        request_id          TEXT             NOT NULL,
        key_id              BIGINT           NOT NULL,
        key_name            TEXT             NOT NULL,
        model               TEXT COLLATE "C" NOT NULL,
        entry_index         BIGINT,
        entry_id            BIGINT,
        provider_key_index  BIGINT,
        prompt_tokens       BIGINT           NOT NULL,
        completion_tokens   BIGINT           NOT NULL,
        cached_tokens       BIGINT           NOT NULL,
        reasoning_tokens    BIGINT           NOT NULL,
        cost_usd            DOUBLE PRECISION NOT NULL,
        outcome             TEXT             NOT NULL,
        error               TEXT,
        latency_ms          DOUBLE PRECISION NOT NULL,
        upstream_latency_ms DOUBLE PRECISION,
        refused_by          TEXT,
        source              TEXT             NOT NULL,
        stream              BOOLEAN          NOT NULL,
        CONSTRAINT usage_request UNIQUE (request_id, time)
    );
    CREATE INDEX usage_key_time ON usage (key_id, time);
    CREATE INDEX usage_time ON usage (time);
    "#,
];

/// The schema version of the shared ledger this build writes.
pub const POSTGRES_SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database up to [`POSTGRES_SCHEMA_VERSION`], in one
/// transaction under the advisory lock. Idempotent.
pub(super) async fn migrate(
    client: &mut tokio_postgres::Client,
    describe: impl Fn(&tokio_postgres::Error) -> String,
) -> Result<(), PostgresStoreError> {
    let error = |source: tokio_postgres::Error| PostgresStoreError::Migrate {
        known: POSTGRES_SCHEMA_VERSION,
        detail: describe(&source),
    };
    let transaction = client.transaction().await.map_err(error)?;
    transaction
        .batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({MIGRATION_LOCK}); \
             CREATE TABLE IF NOT EXISTS router_ledger_schema (version INTEGER NOT NULL)"
        ))
        .await
        .map_err(error)?;
    let found: i32 = transaction
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM router_ledger_schema",
            &[],
        )
        .await
        .map_err(error)?
        .try_get(0)
        .map_err(error)?;
    if found > POSTGRES_SCHEMA_VERSION {
        return Err(PostgresStoreError::NewerSchema {
            found,
            known: POSTGRES_SCHEMA_VERSION,
        });
    }
    for (version, migration) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        transaction.batch_execute(migration).await.map_err(error)?;
        transaction
            .execute(
                "INSERT INTO router_ledger_schema (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(error)?;
    }
    // The lock goes with the commit: the next replica sees the new version.
    transaction.commit().await.map_err(error)
}
