//! The shared ledger's statements: the batched insert, the totals for
//! `/v1/usage`, and the series and recent errors of the dashboard.
//!
//! Values are stored in the SQLite ledger's forms (the same `codec`), so
//! both stores hold and answer the same numbers.

use std::borrow::Cow;

use router_core::usage::{
    Bucket, ErrorQuery, GroupBy, SeriesPoint, Tokens, UsageQuery, UsageRecord, UsageTotals,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::super::{codec, query as store_query, writer, StoreError};

/// One statement for a whole batch: each column travels as one array and
/// `UNNEST` turns them back into rows, so a batch is one round trip and one
/// prepared statement whatever its size (a `VALUES` list would need a
/// statement per size and stops at 65,535 parameters). A row already there
/// (a replay after a crash between the PostgreSQL commit and the spill's
/// delete) is skipped.
pub(super) const INSERT: &str = "INSERT INTO usage (time, day, request_id, key_id, key_name, \
     model, entry_index, entry_id, provider_key_index, prompt_tokens, completion_tokens, \
     cached_tokens, reasoning_tokens, cost_usd, outcome, error, latency_ms, upstream_latency_ms, \
     refused_by, source, stream) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], \
     $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], \
     $13::int8[], $14::float8[], $15::text[], $16::text[], $17::float8[], $18::float8[], \
     $19::text[], $20::text[], $21::bool[]) \
     ON CONFLICT (request_id, time) DO NOTHING";

/// A batch of records as the insert's column arrays.
struct Columns<'a> {
    time: Vec<String>,
    day: Vec<String>,
    request_id: Vec<Cow<'a, str>>,
    key_id: Vec<i64>,
    key_name: Vec<Cow<'a, str>>,
    model: Vec<Cow<'a, str>>,
    entry_index: Vec<Option<i64>>,
    entry_id: Vec<Option<i64>>,
    provider_key_index: Vec<Option<i64>>,
    prompt_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
    cached_tokens: Vec<i64>,
    reasoning_tokens: Vec<i64>,
    cost_usd: Vec<f64>,
    outcome: Vec<&'static str>,
    error: Vec<Option<Cow<'a, str>>>,
    latency_ms: Vec<f64>,
    upstream_latency_ms: Vec<Option<f64>>,
    refused_by: Vec<Option<String>>,
    source: Vec<&'static str>,
    stream: Vec<bool>,
}

impl<'a> Columns<'a> {
    fn new(records: &'a [UsageRecord]) -> Self {
        let rows = records.len();
        let mut columns = Self {
            time: Vec::with_capacity(rows),
            day: Vec::with_capacity(rows),
            request_id: Vec::with_capacity(rows),
            key_id: Vec::with_capacity(rows),
            key_name: Vec::with_capacity(rows),
            model: Vec::with_capacity(rows),
            entry_index: Vec::with_capacity(rows),
            entry_id: Vec::with_capacity(rows),
            provider_key_index: Vec::with_capacity(rows),
            prompt_tokens: Vec::with_capacity(rows),
            completion_tokens: Vec::with_capacity(rows),
            cached_tokens: Vec::with_capacity(rows),
            reasoning_tokens: Vec::with_capacity(rows),
            cost_usd: Vec::with_capacity(rows),
            outcome: Vec::with_capacity(rows),
            error: Vec::with_capacity(rows),
            latency_ms: Vec::with_capacity(rows),
            upstream_latency_ms: Vec::with_capacity(rows),
            refused_by: Vec::with_capacity(rows),
            source: Vec::with_capacity(rows),
            stream: Vec::with_capacity(rows),
        };
        for record in records {
            let time = codec::time_text(record.time);
            columns.day.push(codec::day_of_time_text(&time).to_owned());
            columns.time.push(time);
            columns.request_id.push(text(&record.request_id));
            columns.key_id.push(codec::id_to_sql(record.key_id));
            columns.key_name.push(text(&record.key_name));
            columns.model.push(text(&record.model));
            columns
                .entry_index
                .push(codec::index_to_sql(record.entry_index));
            columns.entry_id.push(record.entry_id.map(codec::id_to_sql));
            columns
                .provider_key_index
                .push(codec::index_to_sql(record.provider_key_index));
            columns
                .prompt_tokens
                .push(codec::count_to_sql(record.tokens.prompt));
            columns
                .completion_tokens
                .push(codec::count_to_sql(record.tokens.completion));
            columns
                .cached_tokens
                .push(codec::count_to_sql(record.tokens.cached));
            columns
                .reasoning_tokens
                .push(codec::count_to_sql(record.tokens.reasoning));
            columns.cost_usd.push(writer::cost_to_sql(record));
            columns.outcome.push(codec::outcome_text(record.outcome));
            columns.error.push(record.error.as_deref().map(text));
            columns.latency_ms.push(codec::millis(record.latency));
            columns
                .upstream_latency_ms
                .push(record.upstream_latency.map(codec::millis));
            columns
                .refused_by
                .push(record.refused_by.map(codec::limit_text));
            columns.source.push(codec::source_text(record.source));
            columns.stream.push(record.stream);
        }
        columns
    }

    fn parameters(&self) -> [&(dyn ToSql + Sync); 21] {
        [
            &self.time,
            &self.day,
            &self.request_id,
            &self.key_id,
            &self.key_name,
            &self.model,
            &self.entry_index,
            &self.entry_id,
            &self.provider_key_index,
            &self.prompt_tokens,
            &self.completion_tokens,
            &self.cached_tokens,
            &self.reasoning_tokens,
            &self.cost_usd,
            &self.outcome,
            &self.error,
            &self.latency_ms,
            &self.upstream_latency_ms,
            &self.refused_by,
            &self.source,
            &self.stream,
        ]
    }
}

/// PostgreSQL text cannot hold a NUL character, which SQLite and Rust
/// strings can: one would fail its whole batch on every retry. It becomes
/// U+FFFD (an upstream's error message is the only plausible source).
fn text(value: &str) -> Cow<'_, str> {
    if value.contains('\0') {
        Cow::Owned(value.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// Inserts the records in one statement (so one implicit transaction: all
/// or none). Returns how many were new; the rest were already there.
pub(super) async fn insert(
    client: &deadpool_postgres::Client,
    records: &[UsageRecord],
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(INSERT).await?;
    let columns = Columns::new(records);
    client.execute(&statement, &columns.parameters()).await
}

/// What the totals query can meet besides a failed statement.
#[derive(Debug)]
pub(super) enum ReadError {
    Postgres(tokio_postgres::Error),
    /// A value this router cannot read (a negative count).
    Corrupt(String),
}

impl From<tokio_postgres::Error> for ReadError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Postgres(error)
    }
}

/// [`crate::store::SqliteStore::totals_blocking`]'s answer, from PostgreSQL:
/// the same filters, the same sums (`requests` counts every record), the
/// same order of groups, one all-zero row when ungrouped and empty.
pub(super) async fn totals(
    client: &Client,
    query: &UsageQuery,
) -> Result<Vec<UsageTotals>, ReadError> {
    Ok(aggregate(client, query, None)
        .await?
        .into_iter()
        .map(|point| point.totals)
        .collect())
}

/// [`totals`] within each time bucket, as the SQLite store answers it.
pub(super) async fn series(
    client: &Client,
    query: &UsageQuery,
    bucket: Bucket,
) -> Result<Vec<SeriesPoint>, ReadError> {
    aggregate(client, query, Some(bucket)).await
}

async fn aggregate(
    client: &Client,
    query: &UsageQuery,
    bucket: Option<Bucket>,
) -> Result<Vec<SeriesPoint>, ReadError> {
    // The same expressions as SQLite's: `substr` of the `C`-collated time
    // text compares bytewise, so buckets sort as they do there.
    let group_column = store_query::group_expression(query.group_by);
    let bucket_column = bucket.map(store_query::bucket_expression);
    // SUM of a BIGINT is a NUMERIC in PostgreSQL: cast back to read it as
    // an i64 (a ledger's sums stay far below 2^63).
    let mut sql = String::from(
        "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0)::int8, \
         COALESCE(SUM(completion_tokens), 0)::int8, COALESCE(SUM(cached_tokens), 0)::int8, \
         COALESCE(SUM(reasoning_tokens), 0)::int8, COALESCE(SUM(cost_usd), 0)::float8",
    );
    let keys: Vec<&str> = bucket_column.into_iter().chain(group_column).collect();
    for column in &keys {
        sql.push_str(", ");
        sql.push_str(column);
    }
    sql.push_str(" FROM usage WHERE time >= $1 AND time < $2");
    let since = codec::time_text(query.since);
    let until = codec::time_text(query.until);
    let key_id = query.key_id.map(codec::id_to_sql);
    let mut parameters: Vec<&(dyn ToSql + Sync)> = vec![&since, &until];
    if let Some(key_id) = &key_id {
        parameters.push(key_id);
        sql.push_str(&format!(" AND key_id = ${}", parameters.len()));
    }
    if let Some(model) = &query.model {
        parameters.push(model);
        sql.push_str(&format!(" AND model = ${}", parameters.len()));
    }
    if !keys.is_empty() {
        let keys = keys.join(", ");
        sql.push_str(&format!(" GROUP BY {keys} ORDER BY {keys}"));
    }
    let rows = client.query(&sql, &parameters).await?;
    let group_index = if bucket.is_some() { 7 } else { 6 };
    let mut answer = Vec::with_capacity(rows.len());
    for row in &rows {
        let group = match query.group_by {
            GroupBy::Nothing => None,
            GroupBy::Key => {
                Some(codec::id_from_sql(row.try_get::<_, i64>(group_index)?).to_string())
            }
            GroupBy::Model | GroupBy::Day | GroupBy::Hour | GroupBy::Minute => {
                Some(row.try_get::<_, String>(group_index)?)
            }
        };
        let bucket = match bucket {
            Some(_) => row.try_get::<_, String>(6)?,
            None => String::new(),
        };
        answer.push(SeriesPoint {
            bucket,
            totals: UsageTotals {
                group,
                requests: count(row, 0, "requests")?,
                tokens: Tokens {
                    prompt: count(row, 1, "prompt_tokens")?,
                    completion: count(row, 2, "completion_tokens")?,
                    cached: count(row, 3, "cached_tokens")?,
                    reasoning: count(row, 4, "reasoning_tokens")?,
                },
                cost_usd: row.try_get(5)?,
            },
        });
    }
    if query.group_by == GroupBy::Key {
        // PostgreSQL orders the stored i64s; ids above i64::MAX would come
        // first. Sorted as SQLite's answer is (stable: buckets stay in order).
        answer.sort_by(|a, b| {
            let id = |point: &SeriesPoint| {
                point
                    .totals
                    .group
                    .as_deref()
                    .and_then(|id| id.parse::<u64>().ok())
            };
            a.bucket.cmp(&b.bucket).then(id(a).cmp(&id(b)))
        });
    }
    Ok(answer)
}

/// The most recent records in the range whose outcome is not `ok`, newest
/// first, as the SQLite store answers it.
pub(super) async fn recent_errors(
    client: &Client,
    query: &ErrorQuery,
) -> Result<Vec<UsageRecord>, ReadError> {
    let sql = format!(
        "SELECT {} FROM usage WHERE time >= $1 AND outcome <> 'ok' \
         ORDER BY time DESC, id DESC LIMIT $2",
        store_query::RECORD_COLUMNS
    );
    let since = codec::time_text(query.since);
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let rows = client.query(&sql, &[&since, &limit]).await?;
    rows.iter().map(record).collect()
}

/// Reads a record from a row of [`store_query::RECORD_COLUMNS`], with the
/// SQLite reader's conversions.
fn record(row: &Row) -> Result<UsageRecord, ReadError> {
    let corrupt = |error: StoreError| ReadError::Corrupt(error.to_string());
    let index = |column: &'static str, position: usize| -> Result<Option<usize>, ReadError> {
        codec::index_from_sql(column, row.try_get(position)?).map_err(corrupt)
    };
    Ok(UsageRecord {
        time: codec::parse_time(&row.try_get::<_, String>(0)?).map_err(corrupt)?,
        request_id: row.try_get(1)?,
        key_id: codec::id_from_sql(row.try_get(2)?),
        key_name: row.try_get(3)?,
        model: row.try_get(4)?,
        entry_index: index("entry_index", 5)?,
        entry_id: row.try_get::<_, Option<i64>>(6)?.map(codec::id_from_sql),
        provider_key_index: index("provider_key_index", 7)?,
        tokens: Tokens {
            prompt: count(row, 8, "prompt_tokens")?,
            completion: count(row, 9, "completion_tokens")?,
            cached: count(row, 10, "cached_tokens")?,
            reasoning: count(row, 11, "reasoning_tokens")?,
        },
        cost_usd: row.try_get(12)?,
        outcome: codec::parse_outcome(&row.try_get::<_, String>(13)?).map_err(corrupt)?,
        error: row.try_get(14)?,
        latency: codec::duration_from_millis("latency_ms", row.try_get(15)?).map_err(corrupt)?,
        upstream_latency: row
            .try_get::<_, Option<f64>>(16)?
            .map(|milliseconds| codec::duration_from_millis("upstream_latency_ms", milliseconds))
            .transpose()
            .map_err(corrupt)?,
        refused_by: row
            .try_get::<_, Option<String>>(17)?
            .map(|text| codec::parse_limit(&text))
            .transpose()
            .map_err(corrupt)?,
        source: codec::parse_source(&row.try_get::<_, String>(18)?).map_err(corrupt)?,
        stream: row.try_get(19)?,
    })
}

fn count(row: &Row, index: usize, column: &'static str) -> Result<u64, ReadError> {
    let value: i64 = row.try_get(index)?;
    codec::count_from_sql(column, value).map_err(|error| ReadError::Corrupt(error.to_string()))
}
