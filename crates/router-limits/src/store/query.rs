//! What the ledger answers: aggregates for `/v1/usage`, the raw rows, the
//! counters to restore. Every function takes a read connection.

use router_core::usage::{
    Bucket, ErrorQuery, GroupBy, SeriesPoint, Tokens, UsageQuery, UsageRecord, UsageTotals,
};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, Row};
use time::OffsetDateTime;

use super::codec;
use super::StoreError;
use crate::CounterRow;

fn read_error(source: rusqlite::Error) -> StoreError {
    StoreError::Read { source }
}

/// The SQL expression a grouping groups by. The time groupings take a
/// prefix of `time` (RFC 3339 UTC text), or the stored `day`.
pub(crate) fn group_expression(group_by: GroupBy) -> Option<&'static str> {
    match group_by {
        GroupBy::Nothing => None,
        GroupBy::Key => Some("key_id"),
        GroupBy::Model => Some("model"),
        GroupBy::Day => Some("day"),
        GroupBy::Hour => Some("substr(time, 1, 13)"),
        GroupBy::Minute => Some("substr(time, 1, 16)"),
    }
}

/// The SQL expression of a series' bucket: a prefix of `time`, as
/// [`Bucket::prefix_len`] says (the day is stored apart already).
pub(crate) fn bucket_expression(bucket: Bucket) -> &'static str {
    match bucket {
        Bucket::Minute => "substr(time, 1, 16)",
        Bucket::Hour => "substr(time, 1, 13)",
        Bucket::Day => "day",
    }
}

/// Sums over the records in `[since, until)`, filtered and grouped as asked.
///
/// `requests` counts every record, whatever its outcome (refused, invalid
/// and failed requests included): it is "requests made", and the outcome is
/// in the rows for whoever wants to tell them apart. Tokens and cost are
/// plain sums, which are zero for requests that never reached an upstream.
///
/// Ungrouped, the answer is always one row (all zeros over an empty range);
/// grouped, one row per group present, in the group's natural order (key id,
/// model name, day, hour, minute).
pub(crate) fn totals(
    connection: &Connection,
    query: &UsageQuery,
) -> Result<Vec<UsageTotals>, StoreError> {
    Ok(aggregate(connection, query, None)?
        .into_iter()
        .map(|point| point.totals)
        .collect())
}

/// [`totals`] within each time bucket: one point per bucket and group
/// present, in bucket order, then group order.
pub(crate) fn series(
    connection: &Connection,
    query: &UsageQuery,
    bucket: Bucket,
) -> Result<Vec<SeriesPoint>, StoreError> {
    aggregate(connection, query, Some(bucket))
}

fn aggregate(
    connection: &Connection,
    query: &UsageQuery,
    bucket: Option<Bucket>,
) -> Result<Vec<SeriesPoint>, StoreError> {
    let group_column = group_expression(query.group_by);
    let bucket_column = bucket.map(bucket_expression);
    let mut sql = String::from(
        "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), \
         COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(reasoning_tokens), 0), \
         COALESCE(SUM(cost_usd), 0.0)",
    );
    let keys: Vec<&str> = bucket_column.into_iter().chain(group_column).collect();
    for column in &keys {
        sql.push_str(", ");
        sql.push_str(column);
    }
    sql.push_str(" FROM usage WHERE time >= ?1 AND time < ?2");
    let mut arguments = vec![
        Value::Text(codec::time_text(query.since)),
        Value::Text(codec::time_text(query.until)),
    ];
    if let Some(key_id) = query.key_id {
        arguments.push(Value::Integer(codec::id_to_sql(key_id)));
        sql.push_str(&format!(" AND key_id = ?{}", arguments.len()));
    }
    if let Some(model) = &query.model {
        arguments.push(Value::Text(model.clone()));
        sql.push_str(&format!(" AND model = ?{}", arguments.len()));
    }
    if !keys.is_empty() {
        let keys = keys.join(", ");
        sql.push_str(&format!(" GROUP BY {keys} ORDER BY {keys}"));
    }
    let mut statement = connection.prepare(&sql).map_err(read_error)?;
    let mut rows = statement
        .query(params_from_iter(arguments))
        .map_err(read_error)?;
    let mut answer = Vec::new();
    let group_index = if bucket.is_some() { 7 } else { 6 };
    while let Some(row) = rows.next().map_err(read_error)? {
        let group = match query.group_by {
            GroupBy::Nothing => None,
            GroupBy::Key => {
                let key_id: i64 = row.get(group_index).map_err(read_error)?;
                Some(codec::id_from_sql(key_id).to_string())
            }
            GroupBy::Model | GroupBy::Day | GroupBy::Hour | GroupBy::Minute => {
                Some(row.get::<_, String>(group_index).map_err(read_error)?)
            }
        };
        let bucket = match bucket {
            Some(_) => row.get::<_, String>(6).map_err(read_error)?,
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
                cost_usd: row.get(5).map_err(read_error)?,
            },
        });
    }
    if query.group_by == GroupBy::Key {
        // SQLite orders the stored i64s; ids above i64::MAX would come first.
        // A stable sort keeps the buckets in order.
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
/// first (by time, then by row for records of the same nanosecond).
pub(crate) fn recent_errors(
    connection: &Connection,
    query: &ErrorQuery,
) -> Result<Vec<UsageRecord>, StoreError> {
    let mut statement = connection
        .prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM usage WHERE time >= ?1 AND outcome <> 'ok' \
             ORDER BY time DESC, id DESC LIMIT ?2"
        ))
        .map_err(read_error)?;
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let mut rows = statement
        .query(params![codec::time_text(query.since), limit])
        .map_err(read_error)?;
    let mut answer = Vec::new();
    while let Some(row) = rows.next().map_err(read_error)? {
        answer.push(record(row)?);
    }
    Ok(answer)
}

fn count(row: &Row<'_>, index: usize, column: &'static str) -> Result<u64, StoreError> {
    codec::count_from_sql(column, row.get(index).map_err(read_error)?)
}

/// The records in `[since, until)`, in the order they were written.
pub(crate) fn records(
    connection: &Connection,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<UsageRecord>, StoreError> {
    let mut statement = connection
        .prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM usage WHERE time >= ?1 AND time < ?2 ORDER BY id"
        ))
        .map_err(read_error)?;
    let mut rows = statement
        .query(params![codec::time_text(since), codec::time_text(until)])
        .map_err(read_error)?;
    let mut answer = Vec::new();
    while let Some(row) = rows.next().map_err(read_error)? {
        answer.push(record(row)?);
    }
    Ok(answer)
}

/// The columns [`record`] reads, in its order (in `usage` and in the shared
/// ledger's `ledger_spill`).
pub(crate) const RECORD_COLUMNS: &str = "time, request_id, key_id, key_name, model, \
     entry_index, entry_id, provider_key_index, prompt_tokens, completion_tokens, cached_tokens, \
     reasoning_tokens, cost_usd, outcome, error, latency_ms, upstream_latency_ms, refused_by, \
     source, stream";

/// Reads a record from a row that starts with [`RECORD_COLUMNS`].
pub(crate) fn record(row: &Row<'_>) -> Result<UsageRecord, StoreError> {
    let text = |index: usize| row.get::<_, String>(index).map_err(read_error);
    let optional_text = |index: usize| row.get::<_, Option<String>>(index).map_err(read_error);
    let integer = |index: usize| row.get::<_, i64>(index).map_err(read_error);
    let optional_integer = |index: usize| row.get::<_, Option<i64>>(index).map_err(read_error);
    Ok(UsageRecord {
        time: codec::parse_time(&text(0)?)?,
        request_id: text(1)?,
        key_id: codec::id_from_sql(integer(2)?),
        key_name: text(3)?,
        model: text(4)?,
        entry_index: codec::index_from_sql("entry_index", optional_integer(5)?)?,
        entry_id: optional_integer(6)?.map(codec::id_from_sql),
        provider_key_index: codec::index_from_sql("provider_key_index", optional_integer(7)?)?,
        tokens: Tokens {
            prompt: codec::count_from_sql("prompt_tokens", integer(8)?)?,
            completion: codec::count_from_sql("completion_tokens", integer(9)?)?,
            cached: codec::count_from_sql("cached_tokens", integer(10)?)?,
            reasoning: codec::count_from_sql("reasoning_tokens", integer(11)?)?,
        },
        cost_usd: row.get(12).map_err(read_error)?,
        outcome: codec::parse_outcome(&text(13)?)?,
        error: optional_text(14)?,
        latency: codec::duration_from_millis("latency_ms", row.get(15).map_err(read_error)?)?,
        upstream_latency: row
            .get::<_, Option<f64>>(16)
            .map_err(read_error)?
            .map(|milliseconds| codec::duration_from_millis("upstream_latency_ms", milliseconds))
            .transpose()?,
        refused_by: optional_text(17)?
            .map(|text| codec::parse_limit(&text))
            .transpose()?,
        source: codec::parse_source(&text(18)?)?,
        stream: row.get(19).map_err(read_error)?,
    })
}

/// The counters of the UTC day and month `now` falls in.
pub(crate) fn current_counters(
    connection: &Connection,
    now: OffsetDateTime,
) -> Result<Vec<CounterRow>, StoreError> {
    let mut statement = connection
        .prepare(
            "SELECT \"limit\", period, value FROM counters WHERE period IN (?1, ?2) \
             ORDER BY \"limit\", period",
        )
        .map_err(read_error)?;
    let mut rows = statement
        .query(params![codec::day_period(now), codec::month_period(now)])
        .map_err(read_error)?;
    let mut answer = Vec::new();
    while let Some(row) = rows.next().map_err(read_error)? {
        answer.push(CounterRow {
            limit: row.get::<_, String>(0).map_err(read_error)?.into(),
            period: row.get::<_, String>(1).map_err(read_error)?.into(),
            value: count(row, 2, "value")?,
        });
    }
    Ok(answer)
}

/// Rows in the `usage` table.
pub(crate) fn usage_rows(connection: &Connection) -> Result<u64, StoreError> {
    let rows: i64 = connection
        .query_row("SELECT COUNT(*) FROM usage", [], |row| row.get(0))
        .map_err(read_error)?;
    codec::count_from_sql("COUNT(*)", rows)
}
