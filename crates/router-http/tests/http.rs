//! The HTTP layer end to end: `serve` on 127.0.0.1:0 in front of a real
//! engine whose providers are scripted in this file, driven by plain hyper
//! clients (and raw TCP where the test needs to control the bytes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use router_core::config::{Capabilities, ClientKeyConfig, LimitsConfig, ModelEntry, ServerConfig};
use router_core::provider::ChunkStream;
use router_core::{
    Chunk, Completion, Config, JsonObject, Provider, ProviderError, ProviderRequest, Router, Secret,
};
use router_http::{serve, HttpConfig, ServeOutcome};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const KEY: &str = "sk-test";
/// Bound on anything a test waits for, so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// A scripted provider. What it does depends on the entry's name.

/// What every provider of one server shares with the test.
#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<JsonObject>>,
    /// How many streams handed out have been dropped (ended or cancelled),
    /// and how many never-answering calls have been cancelled.
    streams_dropped: AtomicUsize,
}

#[derive(Debug)]
struct TestProvider {
    behaviour: String,
    shared: Arc<Shared>,
}

/// Counts a stream as dropped when the engine or the HTTP layer lets go of it.
struct DropCounter(Arc<Shared>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.streams_dropped.fetch_add(1, Ordering::SeqCst);
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
        "model": "upstream-name",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }))))
}

impl TestProvider {
    fn refusal(&self) -> Option<ProviderError> {
        match self.behaviour.as_str() {
            "rejecting" => Some(ProviderError::Status {
                status: 422,
                message: "messages[0].role is not supported".into(),
                retry_after: None,
            }),
            "limited" => Some(ProviderError::Status {
                status: 429,
                message: "quota exceeded".into(),
                retry_after: Some(Duration::from_secs(7)),
            }),
            _ => None,
        }
    }
}

#[async_trait]
impl Provider for TestProvider {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .push(request.body.clone());
        if let Some(error) = self.refusal() {
            return Err(error);
        }
        if self.behaviour == "hanging" {
            // An upstream that never answers; only cancellation ends the call.
            let _counted = DropCounter(Arc::clone(&self.shared));
            std::future::pending::<()>().await;
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

    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .push(request.body.clone());
        if let Some(error) = self.refusal() {
            return Err(error);
        }
        let chunks: ChunkStream = match self.behaviour.as_str() {
            // Four chunks 100 ms apart.
            "slow" => Box::pin(stream::iter(0..4).then(|index| async move {
                if index > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                delta(&index.to_string())
            })),
            // One chunk, then silence until cancelled.
            "endless" => Box::pin(stream::iter([delta("first")]).chain(stream::pending())),
            // Silent long enough for a keepalive between two chunks.
            "quiet" => Box::pin(stream::iter(["before", "after"]).then(|text| async move {
                if text == "after" {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                delta(text)
            })),
            "broken" => Box::pin(stream::iter([
                delta("partial"),
                Err(ProviderError::Truncated {
                    detail: "connection reset by peer".into(),
                }),
            ])),
            _ => Box::pin(stream::iter([delta("Hel"), delta("lo")])),
        };
        let counter = DropCounter(Arc::clone(&self.shared));
        Ok(Box::pin(chunks.map(move |item| {
            let _counted = &counter;
            item
        })))
    }

    async fn complete_text(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .push(request.body.clone());
        Ok(Completion::from(object(json!({
            "id": "cmpl-1", "object": "text_completion", "model": request.body["model"],
            "choices": [{"index": 0, "text": "Hello", "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }))))
    }

    async fn stream_text(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .push(request.body.clone());
        let chunk = |text: &str| {
            Ok(Chunk(object(json!({
                "id": "cmpl-1", "object": "text_completion", "model": "upstream-name",
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": null}],
            }))))
        };
        Ok(Box::pin(stream::iter([chunk("Hel"), chunk("lo")])))
    }

    async fn embed(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .push(request.body.clone());
        Ok(Completion::from(object(json!({
            "object": "list", "model": request.body["model"],
            "data": [{"object": "embedding", "index": 0, "embedding": "AACAPw=="}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }))))
    }
}

// ---------------------------------------------------------------------------
// Config and server.

fn entry(index: usize, name: &str) -> ModelEntry {
    ModelEntry {
        // `echo` serves every endpoint; the others chat only.
        capabilities: Capabilities {
            completion: name == "echo",
            embedding: name == "echo",
            ..Capabilities::default()
        },
        index,
        id: index as u64 + 1,
        provider_model_name: format!("{name}-upstream"),
        display_name: name.into(),
        provider_api_keys: vec![Secret::new("sk-upstream")],
        is_openai_compatibility: true,
        ..ModelEntry::new(name, "test")
    }
}

fn client_key(index: usize, key: &str, is_active: bool, expired: bool) -> ClientKeyConfig {
    ClientKeyConfig {
        index,
        id: index as u64 + 1,
        name: key.into(),
        is_active,
        expires_at: expired.then_some(OffsetDateTime::UNIX_EPOCH),
        ..ClientKeyConfig::new(Secret::new(key))
    }
}

fn config() -> Config {
    let names = [
        "echo",
        "slow",
        "endless",
        "quiet",
        "broken",
        "rejecting",
        "limited",
        "hanging",
    ];
    Config {
        source: PathBuf::from("http-test.yaml"),
        server: ServerConfig::default(),
        limits: LimitsConfig::default(),
        retry: Default::default(),
        cooldown: Default::default(),
        models: names
            .iter()
            .enumerate()
            .map(|(i, name)| entry(i, name))
            .collect(),
        api_keys: vec![
            client_key(0, KEY, true, false),
            client_key(1, "sk-inactive", false, false),
            client_key(2, "sk-expired", true, true),
        ],
    }
}

struct TestServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    served: JoinHandle<ServeOutcome>,
}

fn http_config() -> HttpConfig {
    HttpConfig {
        max_body_bytes: 1024,
        sse_keepalive: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(10),
        metrics: None,
        reload: None,
    }
}

async fn start(http: HttpConfig, shutdown_timeout: Duration) -> TestServer {
    let shared = Arc::new(Shared::default());
    let provider_shared = Arc::clone(&shared);
    let router = Router::new(&config(), &|entry: &ModelEntry| {
        Ok(Arc::new(TestProvider {
            behaviour: entry.name.clone(),
            shared: Arc::clone(&provider_shared),
        }) as Arc<dyn Provider>)
    })
    .unwrap();
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
        shutdown_timeout,
    ));
    TestServer {
        address,
        shared,
        shutdown: Some(shutdown),
        served,
    }
}

async fn start_default() -> TestServer {
    start(http_config(), Duration::from_secs(5)).await
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Signals shutdown and waits for `serve` to return.
    async fn stop(mut self) -> ServeOutcome {
        self.begin_shutdown();
        tokio::time::timeout(PATIENCE, self.served)
            .await
            .expect("serve did not return")
            .unwrap()
    }

    fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// Clients.

fn http1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn request(method: Method, url: &str, key: Option<&str>, body: &str) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn chat_body(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// Every response the router sends carries the seed's CORS headers.
fn assert_cors(headers: &HeaderMap) {
    let expected = [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-credentials", "true"),
        (
            "access-control-allow-headers",
            "Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization, accept, \
             origin, Cache-Control, X-Requested-With",
        ),
        (
            "access-control-allow-methods",
            "POST, OPTIONS, GET, PUT, DELETE",
        ),
    ];
    for (name, value) in expected {
        assert_eq!(headers.get(name).unwrap(), value, "{name}");
    }
}

struct Answer {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// Checks the shape every error has, and returns its `error` object.
    fn error(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/json"));
        let json = self.json();
        let error = json["error"].clone();
        assert!(error["message"].is_string(), "{json}");
        assert!(error["type"].is_string(), "{json}");
        assert!(
            error["param"].is_string() || error["param"].is_null(),
            "{json}"
        );
        assert!(
            error["code"].is_string() || error["code"].is_null(),
            "{json}"
        );
        assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
        error
    }
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Answer {
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("no response")
        .unwrap();
    collect(response).await
}

async fn collect(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    assert_cors(&parts.headers);
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("body did not end")
        .unwrap()
        .to_bytes();
    // Never an error body under a success status.
    assert!(!parts.status.is_success() || !body.starts_with(b"{\"error\""));
    Answer {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// Sends raw bytes on a fresh connection and reads one response (headers and
/// a Content-Length body) without closing our side first.
async fn raw_exchange(address: SocketAddr, parts: &[&[u8]]) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    for part in parts {
        stream.write_all(part).await.unwrap();
    }
    read_response(&mut stream).await
}

/// Reads one response (headers and a Content-Length body) from `stream`:
/// status, lowercased head, JSON body.
async fn read_response(stream: &mut TcpStream) -> (u16, String, Value) {
    let mut received = Vec::new();
    let read = async {
        loop {
            let mut buffer = [0u8; 4096];
            let read = stream.read(&mut buffer).await.unwrap();
            received.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().unwrap())
                    })
                    .expect("no content-length");
                if received.len() >= end + 4 + length {
                    return (
                        text[..end].to_owned(),
                        received[end + 4..end + 4 + length].to_vec(),
                    );
                }
            }
            assert!(read > 0, "connection closed mid-response: {text}");
        }
    };
    let (head, body) = tokio::time::timeout(PATIENCE, read)
        .await
        .expect("no response");
    let status = head[9..12].parse().unwrap();
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_slice(&body).unwrap(),
    )
}

/// The SSE transcript of a streamed answer.
fn events(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert_eq!(answer.header("cache-control"), Some("no-cache"));
    assert_eq!(answer.header("x-accel-buffering"), Some("no"));
    assert_eq!(answer.header("connection"), None);
    let text = answer.text();
    assert!(text.ends_with("\n\n"), "{text:?}");
    text.split_terminator("\n\n").map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn health_answers_ok_with_the_time() {
    let server = start_default().await;
    let answer = send(
        &http1_client(),
        request(Method::GET, &server.url("/health"), None, ""),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let json = answer.json();
    assert_eq!(json["status"], "ok");
    let time = json["time"].as_str().unwrap();
    OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(time.ends_with("+00:00"), "{time}");
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn models_are_listed_without_auth_and_looked_up_by_id() {
    let server = start_default().await;
    let client = http1_client();
    let list = send(
        &client,
        request(Method::GET, &server.url("/v1/models"), None, ""),
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.header("content-type"), Some("application/json"));
    let json = list.json();
    assert_eq!(json["object"], "list");
    assert_eq!(json["data"][0]["id"], "echo");

    let one = send(
        &client,
        request(Method::GET, &server.url("/v1/models/echo"), None, ""),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["id"], "echo");

    let missing = send(
        &client,
        request(Method::GET, &server.url("/v1/models/nope"), None, ""),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let error = missing.error();
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["message"], "Model nope not found or not available.");
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn options_is_204_on_any_path_before_auth() {
    let server = start_default().await;
    let client = http1_client();
    for path in ["/v1/chat/completions", "/anything/at/all", "/health"] {
        let answer = send(
            &client,
            request(Method::OPTIONS, &server.url(path), None, ""),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{path}");
        assert!(answer.body.is_empty(), "{path}");
    }
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = start_default().await;
    let client = http1_client();
    let unknown = send(
        &client,
        request(Method::GET, &server.url("/foo?key=secret"), None, ""),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let error = unknown.error();
    assert_eq!(error["code"], "unknown_url");
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["message"], "Unknown request URL: GET /foo");

    let wrong = send(
        &client,
        request(Method::DELETE, &server.url("/health"), None, ""),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(wrong.error()["code"], "method_not_allowed");

    let get_chat = send(
        &client,
        request(
            Method::GET,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            "",
        ),
    )
    .await;
    assert_eq!(get_chat.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get_chat.header("allow"), Some("POST, OPTIONS"));
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn without_metrics_the_metrics_path_is_unknown() {
    // `metrics: None`, as the server leaves it with `server.metrics: false`.
    let server = start_default().await;
    let client = http1_client();
    for method in [Method::GET, Method::HEAD, Method::POST] {
        let answer = send(
            &client,
            request(method.clone(), &server.url("/metrics"), None, ""),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(answer.header("allow"), None, "{method}");
        if method == Method::HEAD {
            continue;
        }
        let error = answer.error();
        assert_eq!(error["code"], "unknown_url");
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], Value::Null);
        assert_eq!(
            error["message"],
            format!("Unknown request URL: {method} /metrics")
        );
    }
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn auth_failures_are_401_with_a_challenge() {
    let server = start_default().await;
    let client = http1_client();
    let url = server.url("/v1/chat/completions");
    let cases = [
        (None, "Missing API key", "missing_api_key"),
        (Some("sk-wrong"), "Invalid API key", "invalid_api_key"),
        (Some("sk-inactive"), "Invalid API key", "invalid_api_key"),
        (Some("sk-expired"), "API key has expired", "expired_api_key"),
    ];
    for (key, message, code) in cases {
        let answer = send(
            &client,
            request(Method::POST, &url, key, &chat_body("echo", false)),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        let error = answer.error();
        assert_eq!(error["message"], message);
        assert_eq!(error["code"], code);
        assert_eq!(error["type"], "invalid_request_error");
        assert!(
            !answer.text().contains("sk-"),
            "a key was echoed: {}",
            answer.text()
        );
    }
    assert!(server.shared.requests.lock().unwrap().is_empty());
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn malformed_json_and_unknown_models_are_openai_errors() {
    let server = start_default().await;
    let client = http1_client();
    let url = server.url("/v1/chat/completions");
    let malformed = send(&client, request(Method::POST, &url, Some(KEY), "{not json")).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let error = malformed.error();
    assert_eq!(error["code"], "invalid_json");
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], Value::Null);

    let no_model = send(
        &client,
        request(Method::POST, &url, Some(KEY), r#"{"messages":[]}"#),
    )
    .await;
    assert_eq!(no_model.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_model.error()["code"], "invalid_value");
    assert_eq!(no_model.error()["param"], "model");

    let unknown = send(
        &client,
        request(Method::POST, &url, Some(KEY), &chat_body("gpt-9", false)),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.error()["message"],
        "Model gpt-9 not found or not available."
    );
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn a_complete_answer_is_json_with_the_client_facing_model() {
    let server = start_default().await;
    let answer = send(
        &http1_client(),
        request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("echo", false),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.header("content-length"),
        Some(answer.body.len().to_string().as_str())
    );
    let json = answer.json();
    assert_eq!(json["model"], "echo");
    assert_eq!(json["choices"][0]["message"]["content"], "Hello");
    let requests = server.shared.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["model"], "echo-upstream");
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn embeddings_and_text_completions_are_served_like_chat() {
    let server = start_default().await;
    let client = http1_client();
    let post = |path: &str, body: Value| {
        request(
            Method::POST,
            &server.url(path),
            Some(KEY),
            &body.to_string(),
        )
    };

    let body = json!({"model": "echo", "input": ["a", "b"], "encoding_format": "base64"});
    let answer = send(&client, post("/v1/embeddings", body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert!(answer.header("x-request-id").is_some());
    let json = answer.json();
    assert_eq!(json["model"], "echo");
    assert_eq!(json["data"][0]["embedding"], "AACAPw==");
    let sent = server.shared.requests.lock().unwrap().clone();
    assert_eq!(
        Value::Object(sent[0].clone()),
        json!({"model": "echo-upstream", "input": ["a", "b"], "encoding_format": "base64"})
    );

    let body = json!({"model": "echo", "prompt": "Say"});
    let answer = send(&client, post("/v1/completions", body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let json = answer.json();
    assert_eq!(json["model"], "echo");
    assert_eq!(json["choices"][0]["text"], "Hello");

    let body = json!({"model": "echo", "prompt": "Say", "stream": true});
    let answer = send(&client, post("/v1/completions", body)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let events = events(&answer);
    assert_eq!(events.len(), 3, "{events:?}");
    for (event, text) in events.iter().zip(["Hel", "lo"]) {
        let json: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(json["model"], "echo");
        assert_eq!(json["choices"][0]["text"], text);
    }
    assert_eq!(events[2], "data: [DONE]");
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn endpoint_errors_are_openai_errors() {
    let server = start_default().await;
    let client = http1_client();
    let post = |path: &str, key: Option<&str>, body: Value| {
        request(Method::POST, &server.url(path), key, &body.to_string())
    };

    // A model none of whose entries declares the endpoint.
    let answer = send(
        &client,
        post(
            "/v1/embeddings",
            Some(KEY),
            json!({"model": "slow", "input": "x"}),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.error(),
        json!({"message": "Model slow does not support /v1/embeddings.",
            "type": "invalid_request_error", "param": "model", "code": "model_not_supported"})
    );
    let answer = send(
        &client,
        post(
            "/v1/completions",
            Some(KEY),
            json!({"model": "slow", "prompt": "x"}),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error()["message"]
        .as_str()
        .unwrap()
        .contains("/v1/completions"));

    // A bad `input` names the field.
    let answer = send(
        &client,
        post(
            "/v1/embeddings",
            Some(KEY),
            json!({"model": "echo", "input": [1, "a"]}),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error()["param"], "input[1]");

    // Authentication first, and only POST.
    let answer = send(
        &client,
        post(
            "/v1/embeddings",
            None,
            json!({"model": "echo", "input": "x"}),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    for path in ["/v1/embeddings", "/v1/completions"] {
        let answer = send(
            &client,
            request(Method::GET, &server.url(path), Some(KEY), ""),
        )
        .await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.header("allow"), Some("POST, OPTIONS"));
    }
    assert!(server.shared.requests.lock().unwrap().is_empty());
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn upstream_refusals_keep_their_meaning() {
    let server = start_default().await;
    let client = http1_client();
    let url = server.url("/v1/chat/completions");

    let rejected = send(
        &client,
        request(
            Method::POST,
            &url,
            Some(KEY),
            &chat_body("rejecting", false),
        ),
    )
    .await;
    assert_eq!(rejected.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = rejected.error();
    assert_eq!(error["code"], "upstream_client_error");
    assert_eq!(
        error["message"],
        "upstream rejected the request: messages[0].role is not supported"
    );

    let limited = send(
        &client,
        request(Method::POST, &url, Some(KEY), &chat_body("limited", true)),
    )
    .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(limited.error()["code"], "rate_limit_exceeded");
    assert!(!limited.text().contains("sk-upstream"));
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn a_declared_content_length_over_the_cap_is_413_without_reading() {
    let server = start_default().await;
    // Headers only: the body is never sent, so only the declared length can trigger this.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: 1000000\r\n\r\n"
    );
    let (status, headers, json) = raw_exchange(server.address, &[head.as_bytes()]).await;
    assert_eq!(status, 413);
    assert!(
        headers.contains("access-control-allow-origin: *"),
        "{headers}"
    );
    assert_eq!(json["error"]["code"], "request_too_large");
    assert!(json["error"]["message"].as_str().unwrap().contains("1024"));
    assert!(server.shared.requests.lock().unwrap().is_empty());
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn a_chunked_body_over_the_cap_is_413() {
    let server = start_default().await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    // One 2000-byte chunk, and the body left open: the cap, not the end, must stop the read.
    let chunk = format!("7d0\r\n{}\r\n", "x".repeat(2000));
    let (status, _, json) =
        raw_exchange(server.address, &[head.as_bytes(), chunk.as_bytes()]).await;
    assert_eq!(status, 413);
    assert_eq!(json["error"]["code"], "request_too_large");
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert!(server.shared.requests.lock().unwrap().is_empty());
    assert!(server.stop().await.drained);
}

/// A chat POST with exactly these headers (besides auth) and body.
fn raw_chat(headers: &[(&str, &str)], body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).unwrap()
}

fn with_url(mut request: Request<Full<Bytes>>, server: &TestServer) -> Request<Full<Bytes>> {
    *request.uri_mut() = server.url(request.uri().path()).parse().unwrap();
    request
}

#[tokio::test]
async fn a_body_declared_as_something_other_than_json_is_415() {
    let server = start_default().await;
    let client = http1_client();
    let body = chat_body("echo", false);
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
    ] {
        let answer = send(
            &client,
            with_url(
                raw_chat(&[("content-type", content_type)], body.clone()),
                &server,
            ),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        let error = answer.error();
        assert_eq!(error["code"], "unsupported_media_type");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(
            error["message"].as_str().unwrap().contains(content_type),
            "{error}"
        );
    }
    assert!(server.shared.requests.lock().unwrap().is_empty());

    // JSON in any spelling, and no Content-Type at all, are accepted.
    for headers in [
        &[("content-type", "Application/JSON; charset=UTF-8")][..],
        &[("content-type", "application/vnd.api+json")][..],
        &[][..],
    ] {
        let answer = send(&client, with_url(raw_chat(headers, body.clone()), &server)).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{headers:?}: {}",
            answer.text()
        );
    }
    assert_eq!(server.shared.requests.lock().unwrap().len(), 3);
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn invalid_utf8_and_empty_bodies_are_400_without_an_upstream_call() {
    let server = start_default().await;
    let client = http1_client();
    let json = [("content-type", "application/json")];
    let invalid_utf8 = Bytes::from_static(
        b"{\"model\":\"echo\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}",
    );
    let answer = send(&client, with_url(raw_chat(&json, invalid_utf8), &server)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    let error = answer.error();
    assert_eq!(error["code"], "invalid_json");
    assert_eq!(error["type"], "invalid_request_error");

    for headers in [&json[..], &[][..]] {
        let answer = send(&client, with_url(raw_chat(headers, Bytes::new()), &server)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert_eq!(answer.error()["code"], "invalid_json");
    }
    assert!(server.shared.requests.lock().unwrap().is_empty());
    assert!(server.stop().await.drained);
}

/// Sends `head` on a fresh connection and reads until the server closes it;
/// returns the status line.
async fn status_line_before_close(address: SocketAddr, head: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    // The server may answer and close before reading it all; a failed
    // write is then expected, the answer is what counts.
    let _ = stream.write_all(head).await;
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await
    .expect("the server neither answered nor closed");
    let text = String::from_utf8_lossy(&received).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431() {
    let server = start_default().await;
    let mut many = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {KEY}\r\n"
    );
    for index in 0..100 {
        many.push_str(&format!("x-filler-{index}: {index}\r\n"));
    }
    many.push_str("content-length: 0\r\n\r\n");
    let huge = format!(
        "GET /health HTTP/1.1\r\nhost: test\r\nx-huge: {}\r\n\r\n",
        "a".repeat(65 * 1024)
    );
    for head in [many, huge] {
        let status = status_line_before_close(server.address, head.as_bytes()).await;
        assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    }
    // Just under the limits is fine.
    let mut enough = "GET /health HTTP/1.1\r\nhost: test\r\nconnection: close\r\n".to_owned();
    for index in 0..90 {
        enough.push_str(&format!("x-filler-{index}: {}\r\n", "b".repeat(500)));
    }
    enough.push_str("\r\n");
    let status = status_line_before_close(server.address, enough.as_bytes()).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(server.shared.requests.lock().unwrap().is_empty());
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn a_stream_is_relayed_event_by_event_and_ends_with_done() {
    let server = start_default().await;
    let answer = send(
        &http1_client(),
        request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("echo", true),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let events = events(&answer);
    assert_eq!(events.len(), 3, "{events:?}");
    for (event, text) in events.iter().zip(["Hel", "lo"]) {
        let json: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(json["model"], "echo");
        assert_eq!(json["choices"][0]["delta"]["content"], text);
    }
    assert_eq!(events[2], "data: [DONE]");
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn a_broken_stream_ends_with_an_error_event_and_no_done() {
    let server = start_default().await;
    let answer = send(
        &http1_client(),
        request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("broken", true),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let events = events(&answer);
    assert_eq!(events.len(), 2, "{events:?}");
    let error: Value = serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "upstream_error");
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(error["error"]["param"], Value::Null);
    assert!(!answer.text().contains("[DONE]"));
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn silences_in_a_stream_get_keepalive_comments() {
    let http = HttpConfig {
        sse_keepalive: Duration::from_millis(100),
        ..http_config()
    };
    let server = start(http, Duration::from_secs(5)).await;
    let answer = send(
        &http1_client(),
        request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("quiet", true),
        ),
    )
    .await;
    let events = events(&answer);
    assert!(events[0].starts_with("data: {"), "{events:?}");
    assert!(
        events[1..events.len() - 2]
            .iter()
            .all(|event| event == ": keepalive"),
        "{events:?}"
    );
    assert!(
        events.len() >= 4,
        "no keepalive during 300 ms of silence: {events:?}"
    );
    assert!(
        events[events.len() - 2].starts_with("data: {"),
        "{events:?}"
    );
    assert_eq!(events[events.len() - 1], "data: [DONE]");
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn http1_connections_are_kept_alive_across_requests() {
    let server = start_default().await;
    let stream = TcpStream::connect(server.address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let url = server.url("/v1/chat/completions");
    for stream in [false, true, false] {
        sender.ready().await.unwrap();
        let mut request = request(Method::POST, &url, Some(KEY), &chat_body("echo", stream));
        *request.uri_mut() = "/v1/chat/completions".parse().unwrap();
        request
            .headers_mut()
            .insert("host", "test".parse().unwrap());
        let answer = collect(sender.send_request(request).await.unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert!(
        !connection.is_finished(),
        "the connection was closed between requests"
    );
    drop(sender);
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn h2c_with_prior_knowledge_serves_json_and_streams() {
    let server = start_default().await;
    let client = h2c_client();
    let health = send(
        &client,
        request(Method::GET, &server.url("/health"), None, ""),
    )
    .await;
    assert_eq!(health.version, Version::HTTP_2);
    assert_eq!(health.status, StatusCode::OK);

    let streamed = send(
        &client,
        request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("echo", true),
        ),
    )
    .await;
    assert_eq!(streamed.version, Version::HTTP_2);
    let events = events(&streamed);
    assert_eq!(events.last().unwrap(), "data: [DONE]");

    let unauthorized = send(
        &client,
        request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            None,
            "{}",
        ),
    )
    .await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unauthorized.header("www-authenticate"), Some("Bearer"));
    drop(client);
    assert!(server.stop().await.drained);
}

/// Reads frames of a streamed response until one contains `needle`.
async fn read_until(body: &mut Incoming, transcript: &mut String, needle: &str) {
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
async fn shutdown_waits_for_an_in_flight_stream() {
    let mut server = start_default().await;
    let client = http1_client();
    let response = client
        .request(request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("slow", true),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut transcript = String::new();
    read_until(&mut body, &mut transcript, "data: {").await;

    server.begin_shutdown();
    // New connections are refused once serve stops accepting.
    tokio::time::timeout(PATIENCE, async {
        while TcpStream::connect(server.address).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("still accepting after shutdown");
    assert!(
        !server.served.is_finished(),
        "serve returned before the stream ended"
    );

    read_until(&mut body, &mut transcript, "data: [DONE]\n\n").await;
    assert_eq!(transcript.matches("data: {").count(), 4, "{transcript}");
    assert!(!transcript.contains("server_shutdown"), "{transcript}");
    let outcome = tokio::time::timeout(PATIENCE, server.served)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        outcome,
        ServeOutcome {
            drained: true,
            ended_by_shutdown: 0,
            aborted: 0
        }
    );
}

/// Waits until `count` streams handed out by the providers have been dropped.
async fn streams_dropped(shared: &Shared, count: usize) {
    tokio::time::timeout(PATIENCE, async {
        while shared.streams_dropped.load(Ordering::SeqCst) < count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("an upstream stream outlived its response");
}

const SHUTDOWN_EVENT: &str = "data: {\"error\":{\"message\":\"the server is shutting down\",\
     \"type\":\"server_error\",\"param\":null,\"code\":\"server_shutdown\"}}\n\n";

async fn check_ended_at_shutdown(client: Client<HttpConnector, Full<Bytes>>) {
    let mut server = start(http_config(), Duration::from_millis(200)).await;
    let response = client
        .request(request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("endless", true),
        ))
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut transcript = String::new();
    read_until(&mut body, &mut transcript, "data: {").await;
    assert_eq!(server.shared.streams_dropped.load(Ordering::SeqCst), 0);

    server.begin_shutdown();
    // The stream ends with one shutdown event, then closes: no [DONE].
    let rest = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the stream outlived the shutdown")
        .expect("the stream was cut mid-air")
        .to_bytes();
    transcript.push_str(std::str::from_utf8(&rest).unwrap());
    assert!(transcript.ends_with(SHUTDOWN_EVENT), "{transcript}");
    assert_eq!(transcript.matches("\"error\"").count(), 1, "{transcript}");
    assert!(!transcript.contains("[DONE]"), "{transcript}");
    let outcome = tokio::time::timeout(PATIENCE, server.served)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        outcome,
        ServeOutcome {
            drained: false,
            ended_by_shutdown: 1,
            aborted: 0
        }
    );
    // The ended stream is dropped, so its upstream call is cancelled (and
    // its usage settled).
    streams_dropped(&server.shared, 1).await;
}

#[tokio::test]
async fn shutdown_ends_a_stream_that_outlasts_the_timeout_with_an_error_event() {
    check_ended_at_shutdown(http1_client()).await;
}

#[tokio::test]
async fn shutdown_ends_an_h2_stream_that_outlasts_the_timeout_with_an_error_event() {
    check_ended_at_shutdown(h2c_client()).await;
}

#[tokio::test]
async fn a_request_still_waiting_for_its_upstream_at_the_timeout_gets_503() {
    let mut server = start(http_config(), Duration::from_millis(200)).await;
    let client = http1_client();
    let pending = client.request(request(
        Method::POST,
        &server.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("hanging", false),
    ));
    let pending = tokio::spawn(pending);
    tokio::time::timeout(PATIENCE, async {
        while server.shared.requests.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the request never reached the provider");

    server.begin_shutdown();
    let response = tokio::time::timeout(PATIENCE, pending)
        .await
        .expect("no answer after the timeout")
        .unwrap()
        .unwrap();
    let answer = collect(response).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let error = answer.error();
    assert_eq!(error["code"], "server_shutdown");
    assert_eq!(error["type"], "server_error");
    assert_eq!(error["message"], "the server is shutting down");
    assert_eq!(answer.header("connection"), Some("close"));
    let outcome = tokio::time::timeout(PATIENCE, server.served)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.ended_by_shutdown, 1);
    assert_eq!(outcome.aborted, 0);
    // The upstream call was cancelled.
    streams_dropped(&server.shared, 1).await;
}

#[tokio::test]
async fn health_turns_503_while_draining_and_closes_the_connection() {
    let mut server = start_default().await;
    // A keep-alive connection with a request half sent when shutdown begins:
    // hyper keeps it open to finish that request.
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: te")
        .await
        .unwrap();
    // Let the server read the first half.
    tokio::time::sleep(Duration::from_millis(50)).await;

    server.begin_shutdown();
    tokio::time::timeout(PATIENCE, async {
        while TcpStream::connect(server.address).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("still accepting after shutdown");
    stream.write_all(b"st\r\n\r\n").await.unwrap();
    let (status, head, json) = read_response(&mut stream).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(json["status"], "draining");
    OffsetDateTime::parse(
        json["time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    closed_by_server(&mut stream).await;
    let outcome = tokio::time::timeout(PATIENCE, server.served)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.drained);
}

/// The client stops reading a stream (HTTP/1.1: closes the connection;
/// h2: resets the stream, the connection stays).
async fn check_client_going_away(client: Client<HttpConnector, Full<Bytes>>) {
    let server = start_default().await;
    let response = client
        .request(request(
            Method::POST,
            &server.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("endless", true),
        ))
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut transcript = String::new();
    read_until(&mut body, &mut transcript, "data: {").await;
    assert_eq!(server.shared.streams_dropped.load(Ordering::SeqCst), 0);

    drop(body);
    streams_dropped(&server.shared, 1).await;
    drop(client);
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_stream() {
    check_client_going_away(http1_client()).await;
}

#[tokio::test]
async fn an_h2_stream_reset_cancels_the_upstream_stream() {
    check_client_going_away(h2c_client()).await;
}

/// Waits until the server closes (or resets) the connection.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server kept a slow connection open");
}

#[tokio::test]
async fn slow_or_silent_clients_are_disconnected_after_the_header_read_timeout() {
    let http = HttpConfig {
        header_read_timeout: Duration::from_millis(200),
        ..http_config()
    };
    let server = start(http, Duration::from_secs(5)).await;
    let cases: [&[u8]; 4] = [
        b"",
        // Part of the h2 preface: hyper's own detection would wait forever.
        b"PRI * HTTP/2",
        b"GET /health HTTP/1.1\r\nhost: te",
        // A whole request, then an idle keep-alive connection.
        b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n",
    ];
    for sent in cases {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream.write_all(sent).await.unwrap();
        closed_by_server(&mut stream).await;
    }
    assert!(server.stop().await.drained);
}

#[tokio::test]
async fn connections_that_never_spoke_do_not_hold_up_shutdown() {
    let server = start_default().await;
    let _silent = TcpStream::connect(server.address).await.unwrap();
    let _partial_preface = {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream.write_all(b"PRI * HTTP").await.unwrap();
        stream
    };
    // Give the accept loop time to take both, so they sit in the protocol
    // detection wait (bounded by a 10 s header timeout) when shutdown begins.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    assert!(server.stop().await.drained);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
