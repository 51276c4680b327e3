//! What clients and operators see of limits and accounting: refusals and
//! `x-ratelimit-*` headers, `GET /v1/usage`, `GET /metrics`.
//!
//! `serve` runs on 127.0.0.1:0 in front of a real engine whose services are
//! fakes defined here: a limiter that refuses or admits by model name, a
//! ledger with canned totals that records what it was asked, and a sink that
//! records every usage record. Nothing from router-limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use router_core::config::{ClientKeyConfig, LimitsConfig, ModelEntry, ServerConfig};
use router_core::estimate::ByteCounter;
use router_core::limits::{
    Admission, Demand, Headroom, LimitName, Limiter, Measure, Permit, RateInfo, Refusal,
    Reservation, Scope, Settlement, Window,
};
use router_core::provider::ChunkStream;
use router_core::usage::{
    FanOut, GroupBy, LedgerError, Outcome, Tokens, UsageQuery, UsageRecord, UsageSink, UsageSource,
    UsageStore, UsageTotals,
};
use router_core::{
    Chunk, Completion, Config, JsonObject, Provider, ProviderError, ProviderRequest, Router,
    Secret, Services,
};
use router_http::{serve, HttpConfig, Metrics, ServeOutcome};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const KEY: &str = "sk-client-secret";
const KEY_ID: u64 = 1;
const ADMIN: &str = "sk-admin-secret";
const ADMIN_ID: u64 = 2;
/// Bound on anything a test waits for, so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Fakes.

fn limit(scope: Scope, measure: Measure, window: Window) -> LimitName {
    LimitName {
        scope,
        measure,
        window,
    }
}

/// What an admitted request is told about its limits.
fn admitted_rate() -> RateInfo {
    RateInfo {
        requests: Some(Headroom {
            name: limit(Scope::Key, Measure::Requests, Window::Minute),
            limit: 60,
            remaining: 59,
            reset: Duration::from_secs(1),
        }),
        tokens: Some(Headroom {
            name: limit(Scope::Model, Measure::Tokens, Window::Minute),
            limit: 10_000,
            remaining: 9_000,
            reset: Duration::from_secs(360),
        }),
    }
}

/// Refuses by model name, admits everything else with [`admitted_rate`].
#[derive(Debug)]
struct ScriptedLimiter;

#[derive(Debug)]
struct NoReservation;

impl Reservation for NoReservation {
    fn settle(&mut self, _scope: Scope, _used: Settlement) {}
}

#[async_trait::async_trait]
impl Limiter for ScriptedLimiter {
    fn admit(&self, demand: &Demand<'_>) -> Admission<'_> {
        self.decide(demand).into()
    }

    async fn key_headroom(&self, key: &ClientKeyConfig) -> Vec<Headroom> {
        self.headroom(key)
    }
}

impl ScriptedLimiter {
    fn decide(&self, demand: &Demand<'_>) -> Result<Permit, Refusal> {
        let refuse = |name, limit, remaining, retry_after: Duration, never_fits| {
            Err(Refusal {
                name,
                limit,
                remaining,
                retry_after,
                never_fits,
            })
        };
        match demand.entry.name.as_str() {
            "rate-limited" => refuse(
                limit(Scope::Key, Measure::Requests, Window::Minute),
                60,
                0,
                Duration::from_millis(1200),
                false,
            ),
            "day-quota" => refuse(
                limit(Scope::Key, Measure::Requests, Window::Day),
                1000,
                0,
                Duration::from_secs(5 * 3600),
                false,
            ),
            "budget" => refuse(
                limit(Scope::Key, Measure::Cost, Window::Month),
                5_000_000,
                0,
                Duration::from_secs(3 * 86_400),
                false,
            ),
            "tiny" => refuse(
                limit(Scope::Model, Measure::Tokens, Window::Minute),
                100,
                100,
                Duration::from_secs(60),
                true,
            ),
            _ => Ok(Permit::new(admitted_rate(), Box::new(NoReservation))),
        }
    }

    fn headroom(&self, _key: &ClientKeyConfig) -> Vec<Headroom> {
        vec![Headroom {
            name: limit(Scope::Key, Measure::Requests, Window::Minute),
            limit: 60,
            remaining: 42,
            reset: Duration::from_millis(1500),
        }]
    }
}

/// Canned totals; remembers every question. `down` fails every question.
#[derive(Debug, Default)]
struct FakeLedger {
    down: bool,
    asked: Mutex<Vec<UsageQuery>>,
}

fn totals(group: Option<&str>, requests: u64) -> UsageTotals {
    UsageTotals {
        group: group.map(str::to_owned),
        requests,
        tokens: Tokens {
            prompt: 100 * requests,
            completion: 10 * requests,
            cached: 0,
            reasoning: 0,
        },
        cost_usd: 0.5 * requests as f64,
    }
}

#[async_trait]
impl UsageStore for FakeLedger {
    async fn totals(&self, query: UsageQuery) -> Result<Vec<UsageTotals>, LedgerError> {
        let group_by = query.group_by;
        self.asked.lock().unwrap().push(query);
        if self.down {
            return Err(LedgerError {
                detail: "disk I/O error at /var/lib/router/usage.db".into(),
            });
        }
        Ok(match group_by {
            GroupBy::Nothing => vec![totals(None, 3)],
            GroupBy::Key => vec![totals(Some("1"), 3), totals(Some("2"), 1)],
            GroupBy::Model => vec![totals(Some("echo"), 4)],
            GroupBy::Day => vec![totals(Some("2024-05-01"), 4)],
            GroupBy::Hour => vec![totals(Some("2024-05-01T10"), 4)],
            GroupBy::Minute => vec![totals(Some("2024-05-01T10:07"), 4)],
        })
    }
}

#[derive(Debug, Default)]
struct RecordingSink(Mutex<Vec<UsageRecord>>);

impl UsageSink for RecordingSink {
    fn record(&self, record: UsageRecord) {
        self.0.lock().unwrap().push(record);
    }
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        other => panic!("not an object: {other}"),
    }
}

fn delta(text: &str) -> Result<Chunk, ProviderError> {
    Ok(Chunk(object(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }))))
}

/// `endless` streams one chunk and then nothing until cancelled; `failing`
/// answers 500; everything else answers at once, with usage.
#[derive(Debug)]
struct TestProvider {
    behaviour: String,
}

#[async_trait]
impl Provider for TestProvider {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        if self.behaviour == "failing" {
            return Err(ProviderError::Status {
                status: 500,
                message: "boom".into(),
                retry_after: None,
            });
        }
        Ok(Completion::from(object(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": request.body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }))))
    }

    async fn stream(&self, _request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        Ok(match self.behaviour.as_str() {
            "endless" => Box::pin(stream::iter([delta("first")]).chain(stream::pending())),
            _ => Box::pin(stream::iter([
                delta("Hel"),
                delta("lo"),
                Ok(Chunk(object(json!({
                    "id": "chatcmpl-1",
                    "choices": [],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                })))),
            ])),
        })
    }
}

// ---------------------------------------------------------------------------
// Server.

const MODELS: [&str; 7] = [
    "echo",
    "endless",
    "failing",
    "rate-limited",
    "day-quota",
    "budget",
    "tiny",
];

fn config() -> Config {
    let entry = |index: usize, name: &str| ModelEntry {
        index,
        id: index as u64 + 1,
        provider_model_name: format!("{name}-upstream"),
        is_openai_compatibility: true,
        ..ModelEntry::new(name, "test")
    };
    let key = |index: usize, key: &str, name: &str, admin: bool| ClientKeyConfig {
        index,
        id: index as u64 + 1,
        name: name.into(),
        admin,
        ..ClientKeyConfig::new(Secret::new(key))
    };
    Config {
        source: PathBuf::from("accounting-test.yaml"),
        server: ServerConfig::default(),
        limits: LimitsConfig::default(),
        retry: Default::default(),
        cooldown: Default::default(),
        models: MODELS
            .iter()
            .enumerate()
            .map(|(index, name)| entry(index, name))
            .collect(),
        api_keys: vec![
            key(0, KEY, "team-alpha", false),
            key(1, ADMIN, "ops-admin", true),
        ],
    }
}

struct TestServer {
    address: SocketAddr,
    metrics: Option<Arc<Metrics>>,
    ledger: Arc<FakeLedger>,
    records: Arc<RecordingSink>,
    shutdown: Option<oneshot::Sender<()>>,
    served: JoinHandle<ServeOutcome>,
}

struct Options {
    metrics: bool,
    ledger_down: bool,
}

const DEFAULT: Options = Options {
    metrics: true,
    ledger_down: false,
};

async fn start(options: Options) -> TestServer {
    let config = config();
    let metrics = options
        .metrics
        .then(|| Arc::new(Metrics::new(config.models.iter().map(|m| m.name.clone()))));
    let ledger = Arc::new(FakeLedger {
        down: options.ledger_down,
        ..FakeLedger::default()
    });
    let records = Arc::new(RecordingSink::default());
    // As the server wires it: the ledger's sink and the metrics side by side.
    let mut sinks: Vec<Arc<dyn UsageSink>> = vec![records.clone()];
    if let Some(metrics) = &metrics {
        sinks.push(metrics.clone());
    }
    let services = Services {
        limiter: Arc::new(ScriptedLimiter),
        usage: Arc::new(FanOut(sinks)),
        store: Some(ledger.clone()),
        counter: Arc::new(ByteCounter),
        ..Services::default()
    };
    let router = Router::with_services(
        &config,
        &|entry: &ModelEntry| {
            Ok(Arc::new(TestProvider {
                behaviour: entry.name.clone(),
            }) as Arc<dyn Provider>)
        },
        services,
    )
    .unwrap();
    let mut http = HttpConfig {
        max_body_bytes: 4096,
        sse_keepalive: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(10),
        metrics: None,
        reload: None,
    };
    if let Some(metrics) = &metrics {
        http = http.with_metrics(metrics.clone());
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, signal) = oneshot::channel::<()>();
    let served = tokio::spawn(serve(
        listener,
        Arc::new(router_core::LiveRouter::new(router)),
        http,
        async move {
            let _ = signal.await;
        },
        Duration::from_secs(5),
    ));
    TestServer {
        address,
        metrics,
        ledger,
        records,
        shutdown: Some(shutdown),
        served,
    }
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let outcome = tokio::time::timeout(PATIENCE, self.served)
            .await
            .expect("serve did not return")
            .unwrap();
        assert!(outcome.drained);
    }

    fn asked(&self) -> Vec<UsageQuery> {
        self.ledger.asked.lock().unwrap().clone()
    }

    fn metrics(&self) -> &Metrics {
        self.metrics.as_deref().unwrap()
    }

    /// Waits until the engine has written `count` usage records (a stream's
    /// is written when its body is dropped, after the client has moved on).
    async fn records(&self, count: usize) -> Vec<UsageRecord> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let records = self.records.0.lock().unwrap().clone();
                if records.len() >= count {
                    return records;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("usage records missing")
    }

    /// Waits until no request is in flight.
    async fn idle(&self) {
        tokio::time::timeout(PATIENCE, async {
            while self.metrics().in_flight() != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a request stayed in flight");
    }
}

// ---------------------------------------------------------------------------
// Client.

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(method: Method, url: &str, key: Option<&str>, body: String) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    builder.body(Full::new(Bytes::from(body))).unwrap()
}

fn chat_body(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text()))
    }

    /// The `error` object, after checking the OpenAI envelope.
    fn error(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/json"));
        let json = self.json();
        assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
        let error = json["error"].clone();
        assert!(error["message"].is_string(), "{json}");
        assert!(error["type"].is_string(), "{json}");
        error
    }

    /// The `x-ratelimit-*` headers, in a fixed order, `None` where absent.
    fn rate_headers(&self) -> [Option<&str>; 6] {
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ]
        .map(|name| self.header(name))
    }
}

async fn send(request: Request<Full<Bytes>>) -> Answer {
    let response = tokio::time::timeout(PATIENCE, client().request(request))
        .await
        .expect("no response")
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("body did not end")
        .unwrap()
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn chat(server: &TestServer, model: &str, stream: bool) -> Answer {
    send(request(
        Method::POST,
        &server.url("/v1/chat/completions"),
        Some(KEY),
        chat_body(model, stream),
    ))
    .await
}

async fn get(server: &TestServer, path: &str, key: Option<&str>) -> Answer {
    send(request(Method::GET, &server.url(path), key, String::new())).await
}

const ADMITTED_HEADERS: [Option<&str>; 6] = [
    Some("60"),
    Some("59"),
    Some("1s"),
    Some("10000"),
    Some("9000"),
    Some("6m0s"),
];

// ---------------------------------------------------------------------------
// Refusals and rate headers.

#[tokio::test]
async fn a_rate_limit_is_a_429_that_says_when_to_retry() {
    let server = start(DEFAULT).await;
    for stream in [false, true] {
        let answer = chat(&server, "rate-limited", stream).await;
        assert_eq!(
            answer.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            answer.text()
        );
        // 1.2 s, rounded up to whole seconds.
        assert_eq!(answer.header("retry-after"), Some("2"));
        assert_eq!(answer.header("x-should-retry"), None);
        assert!(answer.header("x-request-id").is_some());
        let error = answer.error();
        assert_eq!(error["type"], "rate_limit_error");
        assert_eq!(error["code"], "rate_limit_exceeded");
        assert_eq!(error["param"], Value::Null);
        assert_eq!(
            error["message"],
            "Rate limit reached for key rpm (limit: 60 requests, remaining: 0). \
             Please try again in 2s."
        );
        // The refusing limit speaks for requests; the tokens triple is
        // unknown (nothing was admitted).
        assert_eq!(
            answer.rate_headers(),
            [Some("60"), Some("0"), Some("1.2s"), None, None, None]
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn day_quotas_and_budgets_tell_clients_not_to_retry() {
    let server = start(DEFAULT).await;
    let quota = chat(&server, "day-quota", false).await;
    assert_eq!(quota.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(quota.header("retry-after"), Some("18000"));
    assert_eq!(quota.header("x-should-retry"), Some("false"));
    let error = quota.error();
    assert_eq!(error["type"], "insufficient_quota");
    assert_eq!(error["code"], "insufficient_quota");
    assert_eq!(
        error["message"],
        "Quota exceeded for key rpd (limit: 1000 requests); it resets in 5h0m0s."
    );
    assert_eq!(
        quota.rate_headers()[..3],
        [Some("1000"), Some("0"), Some("5h0m0s")]
    );

    let budget = chat(&server, "budget", true).await;
    assert_eq!(budget.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(budget.header("retry-after"), Some("259200"));
    assert_eq!(budget.header("x-should-retry"), Some("false"));
    let error = budget.error();
    assert_eq!(error["code"], "insufficient_quota");
    assert_eq!(
        error["message"],
        "Budget exhausted for key budget per month (limit: $5.00); it resets in 72h0m0s."
    );
    // A budget has no OpenAI header of its own.
    assert_eq!(budget.rate_headers(), [None; 6]);
    server.stop().await;
}

#[tokio::test]
async fn a_request_that_can_never_fit_is_a_400_without_retry_after() {
    let server = start(DEFAULT).await;
    let answer = chat(&server, "tiny", false).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.header("retry-after"), None);
    let error = answer.error();
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "request_too_large");
    assert_eq!(error["param"], Value::Null);
    assert_eq!(
        error["message"],
        "This request needs more than the whole model tpm limit (100 tokens); \
         reduce max_tokens or the prompt."
    );
    server.stop().await;
}

#[tokio::test]
async fn every_admitted_answer_carries_the_rate_headers() {
    let server = start(DEFAULT).await;
    let complete = chat(&server, "echo", false).await;
    assert_eq!(complete.status, StatusCode::OK);
    assert_eq!(complete.rate_headers(), ADMITTED_HEADERS);

    let streamed = chat(&server, "echo", true).await;
    assert_eq!(streamed.status, StatusCode::OK);
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    assert!(streamed.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(streamed.rate_headers(), ADMITTED_HEADERS);

    // Admitted, then the upstream failed: the limits were still consumed.
    let failed = chat(&server, "failing", false).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.rate_headers(), ADMITTED_HEADERS);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// /v1/usage.

#[tokio::test]
async fn a_key_reads_its_own_usage_and_limits() {
    let server = start(DEFAULT).await;
    let answer = get(&server, "/v1/usage", Some(KEY)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("*"),
        "CORS as everywhere"
    );
    let report = answer.json();
    assert_eq!(report["object"], "usage");
    assert_eq!(report["key"], json!({"id": KEY_ID, "name": "team-alpha"}));
    for period in ["today", "month"] {
        assert_eq!(report[period]["requests"], 3, "{report}");
        assert_eq!(report[period]["total_tokens"], 330, "{report}");
        assert_eq!(report[period]["cost_usd"], 1.5, "{report}");
    }
    assert_eq!(
        report["limits"],
        json!([{"limit": "key rpm", "max": 60, "remaining": 42, "reset_seconds": 1.5}])
    );
    assert_eq!(report["group_by"], "none");
    assert!(!answer.text().contains("sk-"), "{}", answer.text());
    let asked = server.asked();
    assert!(!asked.is_empty());
    assert!(
        asked.iter().all(|query| query.key_id == Some(KEY_ID)),
        "{asked:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn only_admin_keys_read_other_keys() {
    let server = start(DEFAULT).await;
    for query in [format!("key_id={ADMIN_ID}"), "all=true".to_owned()] {
        let answer = get(&server, &format!("/v1/usage?{query}"), Some(KEY)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{query}");
        let error = answer.error();
        assert_eq!(error["code"], "forbidden");
        assert_eq!(error["type"], "invalid_request_error");
    }
    assert!(server.asked().is_empty(), "the ledger was asked anyway");

    let all = get(&server, "/v1/usage?all=true&group_by=key", Some(ADMIN)).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text());
    let report = all.json();
    assert_eq!(report["key"], Value::Null);
    assert_eq!(report["group_by"], "key");
    assert_eq!(report["data"][0]["group"], "1");
    assert_eq!(report["data"][1]["group"], "2");
    assert_eq!(report["data"][1]["requests"], 1);
    assert!(server.asked().iter().all(|query| query.key_id.is_none()));

    let other = get(
        &server,
        &format!(
            "/v1/usage?key_id={KEY_ID}&group_by=day&model=echo\
             &since=2024-05-01&until=2024-05-31T00:00:00%2B02:00"
        ),
        Some(ADMIN),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text());
    let report = other.json();
    assert_eq!(report["key"]["name"], "team-alpha");
    assert_eq!(report["group_by"], "day");
    assert_eq!(report["since"], "2024-05-01T00:00:00Z");
    assert_eq!(report["until"], "2024-05-30T22:00:00Z");
    let grouped = server
        .asked()
        .into_iter()
        .find(|query| query.group_by == GroupBy::Day)
        .unwrap();
    assert_eq!(grouped.key_id, Some(KEY_ID));
    assert_eq!(grouped.model.as_deref(), Some("echo"));
    server.stop().await;
}

#[tokio::test]
async fn bad_usage_requests_are_refused_before_the_ledger() {
    let server = start(DEFAULT).await;
    for (query, param) in [
        ("group_by=week", "group_by"),
        ("key_id=me", "key_id"),
        ("since=last-tuesday", "since"),
        ("until=2024-02-30", "until"),
        ("groupby=key", "groupby"),
        ("all=1", "all"),
    ] {
        let answer = get(&server, &format!("/v1/usage?{query}"), Some(ADMIN)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        let error = answer.error();
        assert_eq!(error["param"], param, "{query}");
        assert_eq!(error["type"], "invalid_request_error");
    }

    let anonymous = get(&server, "/v1/usage?group_by=week", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));

    let post = send(request(
        Method::POST,
        &server.url("/v1/usage"),
        Some(KEY),
        String::new(),
    ))
    .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET, HEAD, OPTIONS"));

    let preflight = send(request(
        Method::OPTIONS,
        &server.url("/v1/usage"),
        None,
        String::new(),
    ))
    .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert!(server.asked().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_ledger_that_cannot_answer_is_a_503_without_its_details() {
    let server = start(Options {
        ledger_down: true,
        ..DEFAULT
    })
    .await;
    let answer = get(&server, "/v1/usage", Some(KEY)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let error = answer.error();
    assert_eq!(error["code"], "ledger_unavailable");
    assert_eq!(error["type"], "server_error");
    assert!(!answer.text().contains("/var/lib"), "{}", answer.text());
    server.stop().await;
}

// ---------------------------------------------------------------------------
// /admin/* and /ui.

#[tokio::test]
async fn admin_views_are_for_admin_keys_only_and_never_show_a_key() {
    let server = start(DEFAULT).await;
    for path in [
        "/admin/models",
        "/admin/keys",
        "/admin/usage",
        "/admin/errors",
    ] {
        let answer = get(&server, path, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(answer.error()["code"], "missing_api_key");
        let answer = get(&server, path, Some(KEY)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        let error = answer.error();
        assert_eq!(error["code"], "admin_required");
        assert_eq!(error["type"], "invalid_request_error");
    }
    let models = get(&server, "/admin/models", Some(ADMIN)).await;
    assert_eq!(models.status, StatusCode::OK);
    assert_eq!(models.header("cache-control"), Some("no-store"));
    let body = models.json();
    assert_eq!(body["object"], "admin.models");
    // The dashboard's own request is not counted as load.
    assert_eq!(body["in_flight"], 0);
    assert_eq!(body["models"][0]["entries"][0]["keys"][0]["state"], "ok");
    let keys = get(&server, "/admin/keys", Some(ADMIN)).await;
    assert_eq!(keys.status, StatusCode::OK);
    let body = keys.json();
    let names: Vec<&str> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-alpha", "ops-admin"]);
    for answer in [&models, &keys] {
        for secret in [KEY, ADMIN] {
            assert!(!answer.text().contains(secret), "{}", answer.text());
        }
    }
    // This test's ledger has no series: an error of ours, without its detail.
    let usage = get(&server, "/admin/usage", Some(ADMIN)).await;
    assert_eq!(usage.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(usage.error()["code"], "ledger_unavailable");
    let bad = get(&server, "/admin/errors?limit=0", Some(ADMIN)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error()["param"], "limit");
    let bad = get(&server, "/admin/models?all=true", Some(ADMIN)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn the_dashboard_is_served_without_a_key_and_locked_to_this_origin() {
    let server = start(DEFAULT).await;
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/ui.js", "text/javascript; charset=utf-8"),
        ("/ui/ui.css", "text/css; charset=utf-8"),
    ] {
        let answer = get(&server, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.header("content-type"), Some(content_type));
        let policy = answer.header("content-security-policy").unwrap();
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    }
    let page = get(&server, "/ui", None).await;
    assert!(page.text().contains("<script src=\"/ui/ui.js\""));
    let answer = get(&server, "/ui/missing.js", None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// /metrics.

/// The sample lines of a scrape (no `#` lines).
async fn scrape(server: &TestServer) -> Vec<String> {
    let answer = get(server, "/metrics", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = answer.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for secret in [KEY, ADMIN, "team-alpha", "ops-admin", "sk-"] {
        assert!(!text.contains(secret), "`{secret}` in the metrics:\n{text}");
    }
    text.lines()
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

/// Reads a stream's frames until one contains `needle`.
async fn read_until(body: &mut Incoming, needle: &str) {
    let mut transcript = String::new();
    tokio::time::timeout(PATIENCE, async {
        while !transcript.contains(needle) {
            let frame = body.frame().await.expect("stream ended").unwrap();
            if let Ok(data) = frame.into_data() {
                transcript.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    })
    .await
    .expect("timed out reading the stream");
}

#[tokio::test]
async fn metrics_count_requests_refusals_tokens_and_estimates() {
    let server = start(DEFAULT).await;
    assert_eq!(chat(&server, "echo", false).await.status, StatusCode::OK);
    assert_eq!(chat(&server, "echo", true).await.status, StatusCode::OK);
    let refused = chat(&server, "rate-limited", false).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // A model the config does not know, sent by the client: no series of its own.
    let unknown = chat(&server, "sk-pasted-by-mistake", false).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // A stream the client abandons: its usage is estimated.
    let response = client()
        .request(request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            chat_body("endless", true),
        ))
        .await
        .unwrap();
    let mut body = response.into_body();
    read_until(&mut body, "data: {").await;
    drop(body);
    let records = server.records(5).await;
    let abandoned = records.iter().find(|r| r.model == "endless").unwrap();
    assert_eq!(abandoned.outcome, Outcome::ClientGone);
    assert_eq!(abandoned.source, UsageSource::Estimated);

    let lines = scrape(&server).await;
    has(
        &lines,
        r#"router_requests_total{model="echo",outcome="ok"} 2"#,
    );
    has(
        &lines,
        r#"router_requests_total{model="rate-limited",outcome="refused"} 1"#,
    );
    has(
        &lines,
        r#"router_requests_total{model="(other)",outcome="invalid"} 1"#,
    );
    has(
        &lines,
        r#"router_requests_total{model="endless",outcome="client_gone"} 1"#,
    );
    has(
        &lines,
        r#"router_limiter_refusals_total{limit="key rpm"} 1"#,
    );
    has(&lines, "router_usage_records_total 5");
    has(&lines, "router_usage_records_estimated_total 1");
    has(
        &lines,
        r#"router_tokens_total{model="echo",kind="completion"} 3"#,
    );
    has(
        &lines,
        r#"router_upstream_latency_seconds_count{model="echo",stream="false"} 1"#,
    );
    has(
        &lines,
        r#"router_upstream_latency_seconds_count{model="echo",stream="true"} 1"#,
    );
    has(&lines, "router_router_overhead_seconds_count 1");
    has(
        &lines,
        r#"router_http_requests_total{route="chat_completions",status="200"} 3"#,
    );
    has(
        &lines,
        r#"router_http_requests_total{route="chat_completions",status="429"} 1"#,
    );
    has(
        &lines,
        r#"router_http_requests_total{route="chat_completions",status="404"} 1"#,
    );
    server.idle().await;
    has(&scrape(&server).await, "router_in_flight_requests 0");
    server.stop().await;
}

#[tokio::test]
async fn a_stream_is_in_flight_until_it_ends_or_its_client_leaves() {
    let server = start(DEFAULT).await;
    assert_eq!(server.metrics().in_flight(), 0);

    // Finished stream: released once the last frame is sent.
    let finished = chat(&server, "echo", true).await;
    assert!(finished.text().ends_with("data: [DONE]\n\n"));
    server.idle().await;

    // Open stream: in flight while the client reads; a scrape is not counted.
    let response = client()
        .request(request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            chat_body("endless", true),
        ))
        .await
        .unwrap();
    let mut body = response.into_body();
    read_until(&mut body, "data: {").await;
    assert_eq!(server.metrics().in_flight(), 1);
    has(&scrape(&server).await, "router_in_flight_requests 1");

    // The client goes away mid-stream.
    drop(body);
    server.idle().await;
    has(&scrape(&server).await, "router_in_flight_requests 0");
    server.stop().await;
}

#[tokio::test]
async fn without_metrics_there_is_no_metrics_route() {
    let server = start(Options {
        metrics: false,
        ..DEFAULT
    })
    .await;
    let answer = get(&server, "/metrics", None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error()["code"], "unknown_url");
    // Everything else works as before.
    let chat = chat(&server, "echo", false).await;
    assert_eq!(chat.status, StatusCode::OK);
    assert_eq!(chat.rate_headers(), ADMITTED_HEADERS);
    server.stop().await;
}
