//! The usage port: one record per request, and the questions `/v1/usage` asks.
//!
//! The engine writes a [`UsageRecord`] for every authenticated chat request,
//! whatever its outcome, exactly once. Implementations (router-limits' SQLite
//! ledger) must not block the caller: `record` hands the record over and
//! returns.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::ModelEntry;
use crate::limits::LimitName;

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    /// Prompt tokens served from the provider's cache (part of `prompt`).
    pub cached: u64,
    /// Completion tokens spent reasoning (part of `completion`).
    pub reasoning: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }

    /// Reads an OpenAI `usage` object. `None` when it is not one.
    pub fn from_usage(usage: &Value) -> Option<Self> {
        // `get` chains, not `Value::pointer`: a pointer allocates per segment.
        let number = |path: &[&str]| {
            path.iter()
                .try_fold(usage, |value, key| value.get(key))
                .and_then(Value::as_u64)
        };
        Some(Self {
            prompt: number(&["prompt_tokens"])?,
            completion: number(&["completion_tokens"]).unwrap_or(0),
            cached: number(&["prompt_tokens_details", "cached_tokens"]).unwrap_or(0),
            reasoning: number(&["completion_tokens_details", "reasoning_tokens"]).unwrap_or(0),
        })
    }

    /// The cost in USD at the entry's prices. Cached prompt tokens are priced
    /// at `cached_input_price_per_token`.
    pub fn cost(&self, entry: &ModelEntry) -> f64 {
        let cached = self.cached.min(self.prompt);
        let uncached = self.prompt - cached;
        uncached as f64 * entry.input_price_per_token
            + cached as f64 * entry.cached_input_price_per_token
            + self.completion as f64 * entry.output_price_per_token
    }
}

/// Where the token counts of a record come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// The upstream reported `usage`.
    Upstream,
    /// No usage arrived (client disconnect, cut stream): the router counted
    /// the prompt and what it relayed.
    Estimated,
    /// The request never reached an upstream.
    None,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Estimated => "estimated",
            Self::None => "none",
        }
    }
}

/// How a request ended, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete answer, or a stream that ended with `[DONE]`.
    Ok,
    /// The client's request was refused before any upstream call
    /// (invalid body, unknown model).
    Invalid,
    /// A limit refused it.
    Refused,
    /// Every attempt failed, or the upstream refused the request.
    UpstreamFailed,
    /// The stream broke after it had started.
    StreamFailed,
    /// The client went away before the answer ended.
    ClientGone,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
            Self::Refused => "refused",
            Self::UpstreamFailed => "upstream_failed",
            Self::StreamFailed => "stream_failed",
            Self::ClientGone => "client_gone",
        }
    }
}

/// One request, as the ledger keeps it. Never holds a secret: keys appear
/// by id, name and fingerprint only.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub time: OffsetDateTime,
    pub request_id: String,
    pub key_id: u64,
    pub key_name: String,
    /// The model name the client asked for.
    pub model: String,
    /// The entry that answered (or was tried last): its position in `models:`.
    pub entry_index: Option<usize>,
    pub entry_id: Option<u64>,
    /// The index of the provider key used, in the entry's `provider_api_key`.
    pub provider_key_index: Option<usize>,
    pub tokens: Tokens,
    pub cost_usd: f64,
    pub outcome: Outcome,
    /// The error's message, when the outcome is not `Ok`.
    pub error: Option<String>,
    /// From the request's arrival to the end of the answer.
    pub latency: Duration,
    /// From the successful upstream call's start to its response head (or
    /// first chunk); `None` when no upstream answered.
    pub upstream_latency: Option<Duration>,
    /// The limit that refused the request, when `outcome` is `Refused`.
    pub refused_by: Option<LimitName>,
    pub source: UsageSource,
    pub stream: bool,
}

impl UsageRecord {
    /// The router's own share of the request's time: the latency of a
    /// complete answer minus its upstream call, or for a stream the time
    /// to its first chunk minus the upstream's (the rest of a stream's
    /// time is the upstream writing). Failed attempts before the one that
    /// answered count as overhead. `None` when no upstream answered, or for
    /// a stream whose time to first chunk is not known.
    pub fn router_overhead(&self, time_to_first_chunk: Option<Duration>) -> Option<Duration> {
        let upstream = self.upstream_latency?;
        let until = if self.stream {
            time_to_first_chunk?
        } else {
            self.latency
        };
        Some(until.saturating_sub(upstream))
    }
}

/// Takes usage records. Must not block.
pub trait UsageSink: Send + Sync + fmt::Debug {
    fn record(&self, record: UsageRecord);

    /// Whether the sink keeps the record it is given. A sink that only reads
    /// it (the metrics) answers `false` and overrides [`UsageSink::record_ref`],
    /// so a [`FanOut`] hands it a reference instead of a copy.
    fn keeps_records(&self) -> bool {
        true
    }

    /// Takes a record by reference; by default a copy goes to `record`.
    fn record_ref(&self, record: &UsageRecord) {
        self.record(record.clone());
    }
}

/// Hands each record to several sinks (the ledger and the metrics).
#[derive(Debug, Default)]
pub struct FanOut(pub Vec<std::sync::Arc<dyn UsageSink>>);

impl UsageSink for FanOut {
    fn record(&self, record: UsageRecord) {
        // The last sink that keeps records gets the record itself; the
        // others a reference (copied only by sinks that keep it).
        let owner = self
            .0
            .iter()
            .rposition(|sink| sink.keeps_records())
            .or(self.0.len().checked_sub(1));
        for (index, sink) in self.0.iter().enumerate() {
            if Some(index) != owner {
                sink.record_ref(&record);
            }
        }
        if let Some(owner) = owner {
            self.0[owner].record(record);
        }
    }
}

/// How one request ended, as its books close: the record the ledger gets
/// and what the engine knows beyond it.
#[derive(Debug, Clone, Copy)]
pub struct RequestEnd<'a> {
    pub record: &'a UsageRecord,
    /// Upstream attempts made (admitted candidates tried), failed ones included.
    pub attempts: u32,
    /// From the request's arrival to the first chunk of a stream (the one
    /// the engine peeks before answering); `None` for complete answers and
    /// requests that failed.
    pub time_to_first_chunk: Option<Duration>,
}

/// Told once, when a request's books close (at the true end: a stream at
/// its end or when it is dropped), before the record reaches the usage
/// sink. The edge that serves a request hands one in with it
/// (`Router::serve_with`) to write its one log line. Must not block.
pub trait RequestObserver: Send + Sync + fmt::Debug {
    fn ended(&self, end: &RequestEnd<'_>);
}

/// A sink that forgets everything (a router without a ledger).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLedger;

impl UsageSink for NoLedger {
    fn record(&self, _record: UsageRecord) {}
}

/// How `/v1/usage` groups its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Nothing,
    Key,
    Model,
    Day,
    /// The UTC hour, `YYYY-MM-DDTHH`.
    Hour,
    /// The UTC minute, `YYYY-MM-DDTHH:MM`.
    Minute,
}

/// The time buckets of a series: each is a prefix of the records' RFC 3339
/// UTC time, which both ledgers store as text, so a bucket is a substring
/// and needs no date functions of either database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// `YYYY-MM-DDTHH:MM`
    Minute,
    /// `YYYY-MM-DDTHH`
    Hour,
    /// `YYYY-MM-DD`
    Day,
}

impl Bucket {
    /// How many leading characters of the stored time name the bucket.
    pub fn prefix_len(self) -> usize {
        match self {
            Self::Minute => 16,
            Self::Hour => 13,
            Self::Day => 10,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// One point of a series: the totals of one group (as the query's
/// `group_by` says: the key, the model, or everything) in one time bucket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesPoint {
    /// The bucket's time prefix (see [`Bucket`]).
    pub bucket: String,
    pub totals: UsageTotals,
}

/// The most recent records that did not end `ok`, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorQuery {
    /// Only records at or after this time.
    pub since: OffsetDateTime,
    /// At most this many.
    pub limit: usize,
}

/// A question to the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// Only this key (by id); `None` for every key (admin).
    pub key_id: Option<u64>,
    pub model: Option<String>,
    /// From (inclusive) and until (exclusive).
    pub since: OffsetDateTime,
    pub until: OffsetDateTime,
    pub group_by: GroupBy,
}

/// One row of an answer: totals over the records of one group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageTotals {
    /// The group's value (key id, model name or `YYYY-MM-DD`), `None` when ungrouped.
    pub group: Option<String>,
    pub requests: u64,
    pub tokens: Tokens,
    pub cost_usd: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("the usage ledger cannot answer: {detail}")]
pub struct LedgerError {
    pub detail: String,
}

/// Answers questions about recorded usage.
#[async_trait]
pub trait UsageStore: Send + Sync + fmt::Debug {
    async fn totals(&self, query: UsageQuery) -> Result<Vec<UsageTotals>, LedgerError>;

    /// Totals per time bucket and per group (`query.group_by` is the
    /// split within each bucket: usually `Nothing`, `Key` or `Model`), in
    /// bucket order then group order. Only buckets
    /// with records appear. The default answers that this store has no
    /// series, so a store written before they existed still builds.
    async fn series(
        &self,
        _query: UsageQuery,
        _bucket: Bucket,
    ) -> Result<Vec<SeriesPoint>, LedgerError> {
        Err(LedgerError {
            detail: "this usage store has no time series".to_owned(),
        })
    }

    /// The most recent records whose outcome is not `ok`, newest first.
    /// Their `error` was scrubbed before it was recorded.
    async fn recent_errors(&self, _query: ErrorQuery) -> Result<Vec<UsageRecord>, LedgerError> {
        Err(LedgerError {
            detail: "this usage store cannot list recent errors".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_openai_usage() {
        let usage = json!({"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
            "prompt_tokens_details": {"cached_tokens": 30, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 12}});
        assert_eq!(
            Tokens::from_usage(&usage),
            Some(Tokens {
                prompt: 100,
                completion: 40,
                cached: 30,
                reasoning: 12
            })
        );
        assert_eq!(Tokens::from_usage(&json!({"total_tokens": 3})), None);
        assert_eq!(Tokens::from_usage(&json!(null)), None);
    }

    #[test]
    fn router_overhead_is_what_the_upstream_did_not_take() {
        let ms = Duration::from_millis;
        let record = |stream: bool, latency: u64, upstream: Option<u64>| UsageRecord {
            time: OffsetDateTime::UNIX_EPOCH,
            request_id: "r".into(),
            key_id: 1,
            key_name: "k".into(),
            model: "m".into(),
            entry_index: Some(0),
            entry_id: Some(1),
            provider_key_index: None,
            tokens: Tokens::default(),
            cost_usd: 0.0,
            outcome: Outcome::Ok,
            error: None,
            latency: ms(latency),
            upstream_latency: upstream.map(ms),
            refused_by: None,
            source: UsageSource::Upstream,
            stream,
        };
        // A complete answer: its latency less the upstream's.
        assert_eq!(
            record(false, 120, Some(100)).router_overhead(None),
            Some(ms(20))
        );
        // A stream: its time to first chunk less the upstream's, not its
        // whole latency (the upstream writing).
        assert_eq!(
            record(true, 5000, Some(100)).router_overhead(Some(ms(103))),
            Some(ms(3))
        );
        assert_eq!(record(true, 5000, Some(100)).router_overhead(None), None);
        // No upstream answered.
        assert_eq!(record(false, 7, None).router_overhead(None), None);
    }

    #[test]
    fn prices_cached_tokens_apart() {
        let entry = ModelEntry {
            input_price_per_token: 0.000002,
            cached_input_price_per_token: 0.0000005,
            output_price_per_token: 0.000008,
            ..ModelEntry::new("m", "mock")
        };
        let tokens = Tokens {
            prompt: 1000,
            completion: 100,
            cached: 400,
            reasoning: 0,
        };
        let cost = tokens.cost(&entry);
        assert!((cost - (600.0 * 0.000002 + 400.0 * 0.0000005 + 100.0 * 0.000008)).abs() < 1e-12);
    }
}
