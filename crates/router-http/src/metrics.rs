//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
//!
//! Two sources feed one [`Metrics`]:
//!
//! - the engine's usage records (it is a [`UsageSink`]: the server hands it
//!   to the engine next to the ledger with [`router_core::usage::FanOut`]),
//!   one per request (chat, text completion or embeddings), which carry the model, outcome, tokens, cost,
//!   latencies and the limit that refused;
//! - the HTTP layer itself: responses by route and status, and the requests
//!   in flight.
//!
//! Labels hold model names (only configured ones: see [`Metrics::new`]),
//! outcomes, limit names, routes and statuses. Never a key, a key name or
//! anything else a client typed in freely: a client must not be able to mint
//! series (each costs memory for the life of the process) or smuggle text
//! into the operator's dashboards.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use router_core::limits::Limiter;
use router_core::usage::{Outcome, UsageRecord, UsageSink, UsageSource};

/// The model label of a record whose model is not a configured name.
const OTHER_MODEL: &str = "(other)";

/// Upstream calls take from tens of milliseconds (a cached short answer) to
/// minutes (long reasoning); the buckets span both.
const UPSTREAM_BUCKETS: [f64; 14] = [
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0,
];

/// The router's own time should be well under a millisecond; the upper
/// buckets catch failover (failed attempts count as overhead) and stalls.
const OVERHEAD_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    model: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    model: String,
    /// Streams report the time to their first chunk, complete answers the
    /// time to the whole answer: two distributions, kept apart.
    stream: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    /// `key rpm`, `model tpd`, `key budget per month`, ...
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    /// `ok` or `invalid`.
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn upstream_histogram() -> Histogram {
    Histogram::new(UPSTREAM_BUCKETS)
}

/// Reads a shared limiter's stats at each scrape.
#[derive(Debug)]
struct SharedLimitsCollector(Arc<dyn Limiter>);

impl Collector for SharedLimitsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(stats) = self.0.shared_stats() else {
            return Ok(());
        };
        let available = ConstGauge::new(i64::from(stats.available));
        available.encode(encoder.encode_descriptor(
            "shared_limits_available",
            "1 while admissions are checked against the shared store (Redis), 0 while it \
             is unavailable",
            None,
            available.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "shared_limits_outages",
                "Times the shared store was found unavailable, once per outage",
                stats.outages,
            ),
            (
                "shared_limits_fallback_admissions",
                "Admissions decided by this replica's share of the limits while the shared \
                 store was unavailable (on_unavailable: fail_open)",
                stats.fallback_admissions,
            ),
            (
                "shared_limits_unavailable_refusals",
                "Requests refused with limits_unavailable while the shared store was \
                 unavailable (on_unavailable: fail_closed)",
                stats.unavailable_refusals,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// The router's metrics. Create one, share it as `Arc<Metrics>` with the
/// engine (as a usage sink) and with [`crate::serve`] (through
/// [`crate::HttpConfig::with_metrics`]), which serves it on `GET /metrics`.
pub struct Metrics {
    registry: Registry,
    /// The configured model names, the only values the `model` label takes,
    /// each with its series.
    models: RwLock<HashMap<String, Arc<ModelSeries>>>,
    /// The series of `(other)`.
    other: Arc<ModelSeries>,
    requests: Family<OutcomeLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost_usd: Family<ModelLabels, Counter<f64, AtomicU64>>,
    upstream_latency: HistogramFamily<LatencyLabels>,
    router_overhead: Histogram,
    limiter_refusals: Family<LimitLabels, Counter>,
    usage_records: Counter,
    usage_records_estimated: Counter,
    http_requests: Family<HttpLabels, Counter>,
    in_flight: Gauge,
    config_reloads: Family<ReloadLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("in_flight", &self.in_flight.get())
            .field("usage_records", &self.usage_records.get())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics for a router serving `models` (the configured `name`s). A
    /// record for any other model name (an unknown model, or an arbitrary
    /// `name:variant`) is counted under the model `(other)`; a known
    /// `name:variant` is counted under `name`, the entry that served it.
    pub fn new<I, S>(models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut registry = Registry::with_prefix("router");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests (chat, completions, embeddings) by client-facing model and outcome (ok, invalid, refused, \
             upstream_failed, stream_failed, client_gone)",
            Family::clone(&requests),
        );
        let tokens = Family::default();
        registry.register(
            "tokens",
            "Tokens by model and kind (prompt, completion, cached, reasoning); cached is part \
             of prompt and reasoning part of completion",
            Family::clone(&tokens),
        );
        let cost_usd = Family::default();
        registry.register(
            "cost_usd",
            "Cost in USD at the configured prices, by model",
            Family::clone(&cost_usd),
        );
        let upstream_latency: HistogramFamily<LatencyLabels> =
            Family::new_with_constructor(upstream_histogram);
        registry.register_with_unit(
            "upstream_latency",
            "From the start of the successful upstream call to its whole answer (stream=false) \
             or its first chunk (stream=true)",
            Unit::Seconds,
            Family::clone(&upstream_latency),
        );
        let router_overhead = Histogram::new(OVERHEAD_BUCKETS);
        registry.register_with_unit(
            "router_overhead",
            "Time a complete (non-stream) answer spent in the router rather than in the \
             upstream call that answered, failed attempts included",
            Unit::Seconds,
            router_overhead.clone(),
        );
        let limiter_refusals = Family::default();
        registry.register(
            "limiter_refusals",
            "Requests refused by a limit, by the limit that refused",
            Family::clone(&limiter_refusals),
        );
        let usage_records = Counter::default();
        registry.register(
            "usage_records",
            "Usage records written (one per authenticated request)",
            usage_records.clone(),
        );
        let usage_records_estimated = Counter::default();
        registry.register(
            "usage_records_estimated",
            "Usage records whose tokens were counted by the router because the upstream \
             reported none (client gone, stream cut)",
            usage_records_estimated.clone(),
        );
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP responses by route and status",
            Family::clone(&http_requests),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests being served, streams until their last byte (scrapes of /metrics \
             not included)",
            in_flight.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP, the file watch, POST /admin/reload) by result: ok \
             (applied) or invalid (refused; the running config stays)",
            Family::clone(&config_reloads),
        );
        Self {
            registry,
            models: RwLock::new(series_by_name(models, &HashMap::new())),
            other: Arc::new(ModelSeries::new(OTHER_MODEL.to_owned())),
            requests,
            tokens,
            cost_usd,
            upstream_latency,
            router_overhead,
            limiter_refusals,
            usage_records,
            usage_records_estimated,
            http_requests,
            in_flight,
            config_reloads,
        }
    }

    /// Also exposes how a shared limiter is doing, read at each scrape:
    /// `router_shared_limits_available` (1 while admissions go to the
    /// shared store), `router_shared_limits_outages_total`,
    /// `router_shared_limits_fallback_admissions_total` and
    /// `router_shared_limits_unavailable_refusals_total`. A limiter that
    /// keeps its counters in this process adds nothing.
    pub fn watch_limiter(mut self, limiter: Arc<dyn Limiter>) -> Self {
        if limiter.shared_stats().is_some() {
            self.registry
                .register_collector(Box::new(SharedLimitsCollector(limiter)));
        }
        self
    }

    /// Counts one config reload: `ok` (applied) or `invalid` (refused).
    pub fn count_reload(&self, applied: bool) {
        let result = if applied { "ok" } else { "invalid" };
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// Replaces the configured model names (after a config reload). Series
    /// already recorded for old names stay, as Prometheus expects.
    pub fn set_models<I, S>(&self, models: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut current = self.models.write().unwrap_or_else(PoisonError::into_inner);
        // A panic elsewhere while holding the lock cannot leave a half-built
        // map (the swap is one move), so a poisoned lock is still good.
        *current = series_by_name(models, &current);
    }

    /// The requests being served right now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// The OpenMetrics text exposition, `# EOF` included.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(8 * 1024);
        encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn start_request(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub(crate) fn count_response(&self, route: &'static str, status: StatusCode) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route,
                status: status.as_u16(),
            })
            .inc();
    }

    /// The series of the model label `model` is counted under.
    fn series(&self, model: &str) -> Arc<ModelSeries> {
        let models = self.models.read().unwrap_or_else(PoisonError::into_inner);
        let found = models.get(model).or_else(|| {
            model
                .rsplit_once(':')
                .and_then(|(base, _variant)| models.get(base))
        });
        Arc::clone(found.unwrap_or(&self.other))
    }
}

/// Handles on one model label's series, each taken from its family on first
/// use: a record then costs one map lookup and no label allocation or
/// hashing per series. A handle shares its value with the family's series.
#[derive(Debug)]
struct ModelSeries {
    model: String,
    /// By [`outcome_index`].
    requests: [OnceLock<Counter>; OUTCOMES],
    /// Prompt, completion, cached, reasoning.
    tokens: [OnceLock<Counter>; 4],
    cost_usd: OnceLock<Counter<f64, AtomicU64>>,
    /// Complete answers, then streams.
    upstream_latency: [OnceLock<Histogram>; 2],
}

impl ModelSeries {
    fn new(model: String) -> Self {
        Self {
            model,
            requests: Default::default(),
            tokens: Default::default(),
            cost_usd: OnceLock::new(),
            upstream_latency: Default::default(),
        }
    }
}

const OUTCOMES: usize = 6;

fn outcome_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Ok => 0,
        Outcome::Invalid => 1,
        Outcome::Refused => 2,
        Outcome::UpstreamFailed => 3,
        Outcome::StreamFailed => 4,
        Outcome::ClientGone => 5,
    }
}

/// The series of each name in `models`, reusing those `current` holds.
fn series_by_name<I, S>(
    models: I,
    current: &HashMap<String, Arc<ModelSeries>>,
) -> HashMap<String, Arc<ModelSeries>>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    models
        .into_iter()
        .map(|name| {
            let name: String = name.into();
            let series = current
                .get(&name)
                .map_or_else(|| Arc::new(ModelSeries::new(name.clone())), Arc::clone);
            (name, series)
        })
        .collect()
}

impl UsageSink for Metrics {
    fn record(&self, record: UsageRecord) {
        self.record_ref(&record);
    }

    fn keeps_records(&self) -> bool {
        false
    }

    fn record_ref(&self, record: &UsageRecord) {
        let series = self.series(&record.model);
        let model = &series.model;
        self.usage_records.inc();
        if record.source == UsageSource::Estimated {
            self.usage_records_estimated.inc();
        }
        series.requests[outcome_index(record.outcome)]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&OutcomeLabels {
                        model: model.clone(),
                        outcome: record.outcome.as_str(),
                    })
                    .clone()
            })
            .inc();
        let kinds = [
            ("prompt", record.tokens.prompt),
            ("completion", record.tokens.completion),
            ("cached", record.tokens.cached),
            ("reasoning", record.tokens.reasoning),
        ];
        for ((kind, count), slot) in kinds.into_iter().zip(&series.tokens) {
            // A zero would still create the series; absent reads the same
            // in PromQL and keeps refused requests from minting four each.
            if count > 0 {
                slot.get_or_init(|| {
                    self.tokens
                        .get_or_create(&TokenLabels {
                            model: model.clone(),
                            kind,
                        })
                        .clone()
                })
                .inc_by(count);
            }
        }
        if record.cost_usd > 0.0 && record.cost_usd.is_finite() {
            series
                .cost_usd
                .get_or_init(|| {
                    self.cost_usd
                        .get_or_create(&ModelLabels {
                            model: model.clone(),
                        })
                        .clone()
                })
                .inc_by(record.cost_usd);
        }
        if let Some(upstream) = record.upstream_latency {
            series.upstream_latency[usize::from(record.stream)]
                .get_or_init(|| {
                    self.upstream_latency
                        .get_or_create(&LatencyLabels {
                            model: model.clone(),
                            stream: record.stream,
                        })
                        .clone()
                })
                .observe(upstream.as_secs_f64());
            // A stream's latency runs to its last chunk, most of it spent
            // waiting on the upstream, and the record does not know its
            // first chunk: complete answers only.
            if let Some(overhead) = record.router_overhead(None) {
                self.router_overhead.observe(overhead.as_secs_f64());
            }
        }
        if let Some(limit) = record.refused_by {
            self.limiter_refusals
                .get_or_create(&LimitLabels {
                    limit: limit.to_string(),
                })
                .inc();
        }
    }
}

/// One request in flight: decrements the gauge when dropped. It travels in
/// the response body, so a stream counts until it ends or the client goes
/// away (either way hyper drops the body), and a request whose handler is
/// dropped mid-way (client gone before the answer) is released with it.
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InFlight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use router_core::limits::{LimitName, Measure, Scope, Window};
    use router_core::usage::{Outcome, Tokens};
    use std::time::Duration;
    use time::OffsetDateTime;

    fn record(model: &str, outcome: Outcome) -> UsageRecord {
        UsageRecord {
            time: OffsetDateTime::UNIX_EPOCH,
            request_id: "req-1".into(),
            key_id: 7,
            key_name: "team-secret-name".into(),
            model: model.into(),
            entry_index: Some(0),
            entry_id: Some(1),
            provider_key_index: Some(0),
            tokens: Tokens::default(),
            cost_usd: 0.0,
            outcome,
            error: None,
            latency: Duration::from_millis(1200),
            upstream_latency: None,
            refused_by: None,
            source: UsageSource::None,
            stream: false,
        }
    }

    fn lines(metrics: &Metrics) -> Vec<String> {
        metrics
            .encode()
            .unwrap()
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    fn has(lines: &[String], expected: &str) {
        assert!(
            lines.iter().any(|line| line == expected),
            "no `{expected}` in:\n{}",
            lines.join("\n")
        );
    }

    #[test]
    fn a_record_becomes_series_by_model() {
        let metrics = Metrics::new(["gpt-4o", "gemini-2.5-pro:free"]);
        metrics.record(UsageRecord {
            tokens: Tokens {
                prompt: 100,
                completion: 40,
                cached: 30,
                reasoning: 0,
            },
            cost_usd: 0.25,
            upstream_latency: Some(Duration::from_millis(1000)),
            source: UsageSource::Upstream,
            ..record("gpt-4o", Outcome::Ok)
        });
        metrics.record(UsageRecord {
            tokens: Tokens {
                prompt: 10,
                completion: 3,
                cached: 0,
                reasoning: 0,
            },
            upstream_latency: Some(Duration::from_millis(300)),
            source: UsageSource::Estimated,
            stream: true,
            outcome: Outcome::ClientGone,
            ..record("gpt-4o:high", Outcome::Ok)
        });
        metrics.record(UsageRecord {
            refused_by: Some(LimitName {
                scope: Scope::Key,
                measure: Measure::Requests,
                window: Window::Minute,
            }),
            ..record("gemini-2.5-pro:free", Outcome::Refused)
        });
        metrics.record(record("sk-live-123:x", Outcome::Invalid));

        let lines = lines(&metrics);
        has(
            &lines,
            r#"router_requests_total{model="gpt-4o",outcome="ok"} 1"#,
        );
        has(
            &lines,
            r#"router_requests_total{model="gpt-4o",outcome="client_gone"} 1"#,
        );
        has(
            &lines,
            r#"router_requests_total{model="gemini-2.5-pro:free",outcome="refused"} 1"#,
        );
        has(
            &lines,
            r#"router_requests_total{model="(other)",outcome="invalid"} 1"#,
        );
        has(
            &lines,
            r#"router_tokens_total{model="gpt-4o",kind="prompt"} 110"#,
        );
        has(
            &lines,
            r#"router_tokens_total{model="gpt-4o",kind="cached"} 30"#,
        );
        has(&lines, r#"router_cost_usd_total{model="gpt-4o"} 0.25"#);
        has(
            &lines,
            r#"router_upstream_latency_seconds_count{model="gpt-4o",stream="false"} 1"#,
        );
        has(
            &lines,
            r#"router_upstream_latency_seconds_count{model="gpt-4o",stream="true"} 1"#,
        );
        // Only the complete answer measures the router: 1.2 s - 1 s.
        has(&lines, "router_router_overhead_seconds_count 1");
        has(
            &lines,
            r#"router_router_overhead_seconds_bucket{le="0.25"} 1"#,
        );
        has(
            &lines,
            r#"router_router_overhead_seconds_bucket{le="0.1"} 0"#,
        );
        has(
            &lines,
            r#"router_limiter_refusals_total{limit="key rpm"} 1"#,
        );
        has(&lines, "router_usage_records_total 4");
        has(&lines, "router_usage_records_estimated_total 1");
        let text = lines.join("\n");
        assert!(!text.contains("sk-live"), "{text}");
        assert!(!text.contains("team-secret-name"), "{text}");
        assert!(!text.contains("reasoning"), "zero counts mint no series");
    }

    #[test]
    fn in_flight_counts_guards_and_http_responses_by_route() {
        let metrics = Metrics::new(Vec::<String>::new());
        let first = metrics.start_request();
        let second = metrics.start_request();
        assert_eq!(metrics.in_flight(), 2);
        drop(first);
        assert_eq!(metrics.in_flight(), 1);
        drop(second);
        assert_eq!(metrics.in_flight(), 0);
        metrics.count_response("chat_completions", StatusCode::TOO_MANY_REQUESTS);
        metrics.count_response("chat_completions", StatusCode::TOO_MANY_REQUESTS);
        let lines = lines(&metrics);
        has(
            &lines,
            r#"router_http_requests_total{route="chat_completions",status="429"} 2"#,
        );
        has(&lines, "router_in_flight_requests 0");
    }

    #[test]
    fn reloaded_models_change_the_labels() {
        let metrics = Metrics::new(["a"]);
        metrics.record(record("b", Outcome::Ok));
        metrics.set_models(["b"]);
        metrics.record(record("b", Outcome::Ok));
        let lines = lines(&metrics);
        has(
            &lines,
            r#"router_requests_total{model="(other)",outcome="ok"} 1"#,
        );
        has(&lines, r#"router_requests_total{model="b",outcome="ok"} 1"#);
    }

    #[test]
    fn the_exposition_is_openmetrics() {
        let text = Metrics::new(["m"]).encode().unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Families appear with their first series; plain metrics at once.
        for expected in [
            "# TYPE router_router_overhead_seconds histogram",
            "# UNIT router_router_overhead_seconds seconds",
            "# TYPE router_usage_records counter",
            "router_usage_records_total 0",
            "# TYPE router_in_flight_requests gauge",
        ] {
            assert!(text.contains(expected), "no `{expected}` in:\n{text}");
        }
        assert!(!text.contains("router_requests_total"), "{text}");
    }
}
