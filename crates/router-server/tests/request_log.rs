//! One JSON log line per request, and `x-request-id`: the real binary with
//! `--log-format json`, an in-process upstream, and the SQLite ledger.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;
#[path = "../../router-providers/tests/support/mod.rs"]
mod upstream;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use process::{client, fresh_database, next_frame, Answer, RouterProcess};
use router_limits::store::SqliteStore;
use serde_json::{json, Value};
use time::OffsetDateTime;
use upstream::{End, Recorded, Reply, Upstream};

const PROVIDER_KEY: &str = "pk-requestlog-Q7wE3rT9";
const KEY: &str = "client-requestlog-Zx8Cv2";
/// A key allowed one request a minute.
const LIMITED_KEY: &str = "client-requestlog-limited-Bn4Mk6";
/// Text of prompts and answers: it must never reach a log line.
const PROMPT: &str = "PROMPT-TEXT-never-logged";
const ANSWER: &str = "ANSWER-TEXT-never-logged";

/// The fields every request line carries, whatever became of the request.
const ALWAYS: &[&str] = &["request_id", "method", "path", "latency_ms", "outcome"];

/// The fields a line carries once the engine's books closed on the request.
const ENGINE: &[&str] = &[
    "key_id",
    "key_name",
    "model",
    "attempts",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
];

fn config(upstream: &Upstream, database: &Path) -> String {
    let mut config = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\nlimits:\n  database: {}\n  flush_interval: 20ms\nmodels:\n",
        database.display()
    );
    for name in ["ok", "fails", "streams", "stalls", "slow"] {
        config.push_str(&format!(
            "  - name: {name}\n    base_url: {}\n    is_openai_compatibility: true\n    \
             provider_api_key: [\"{PROVIDER_KEY}\"]\n    enabled: true\n    \
             input_price_per_token: 0.001\n    output_price_per_token: 0.002\n",
            upstream.url(&format!("/{name}/v1"))
        ));
    }
    config.push_str(&format!(
        "api_keys:\n  - id: 7\n    key: {KEY}\n    name: logged\n    is_active: true\n  \
         - id: 8\n    key: {LIMITED_KEY}\n    name: limited\n    is_active: true\n    rpm: 1\n"
    ));
    config
}

/// The `<name>` of a request to `/<name>/v1/chat/completions`.
fn entry_of(request: &Recorded) -> String {
    request
        .path_and_query
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn sse_chunk(content: &str) -> String {
    let chunk = json!({"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "x",
        "choices": [{"index": 0, "delta": {"content": content}}]});
    format!("data: {chunk}\n\n")
}

fn upstream_reply(request: &Recorded) -> Reply {
    match entry_of(request).as_str() {
        "ok" => Reply::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "x",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}})
            .to_string(),
        ),
        "fails" => Reply::json(
            500,
            json!({"error": {"message": "the upstream broke", "type": "server_error"}}).to_string(),
        ),
        "streams" => {
            let usage = json!({"id": "s", "object": "chat.completion.chunk", "created": 1,
                "model": "x", "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}});
            Reply::sse(format!(
                "{}{}data: {usage}\n\ndata: [DONE]\n\n",
                sse_chunk(ANSWER),
                sse_chunk(" and more")
            ))
        }
        // An answer that takes longer than the client waits.
        "slow" => Reply::json(200, "{}").after(Duration::from_secs(3)),
        // The first chunk, then silence: the client gives up.
        _ => Reply::sse(sse_chunk(ANSWER)).in_pieces(1 << 20, Duration::ZERO, End::KeepOpen),
    }
}

fn chat(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]})
        .to_string()
}

/// Sends a request with an optional `x-request-id` (any bytes a header may
/// hold) and returns the response head with its streaming body.
async fn send(
    method: &str,
    url: &str,
    key: Option<&str>,
    request_id: Option<&[u8]>,
    body: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let Some(id) = request_id {
        request = request.header("x-request-id", HeaderValue::from_bytes(id).unwrap());
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    client().request(request).await.unwrap()
}

async fn call(
    method: &str,
    url: &str,
    key: Option<&str>,
    request_id: Option<&[u8]>,
    body: &str,
) -> Answer {
    let response = send(method, url, key, request_id, body).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

fn request_id_of(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .expect("every response carries x-request-id")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Every line of the log but the binary's `listening on` word, each parsed
/// as JSON (a line that is not JSON fails the test).
fn json_lines(router: &RouterProcess) -> Vec<Value> {
    router
        .logs()
        .lines()
        .filter(|line| !line.starts_with("listening on http://"))
        .map(|line| match serde_json::from_str(line) {
            Ok(object @ Value::Object(_)) => object,
            _ => panic!("not a JSON object: {line}"),
        })
        .collect()
}

/// The request lines (message `request`) with this request id, once the
/// first has appeared and a moment has passed for any second one.
async fn lines_of(router: &RouterProcess, request_id: &str) -> Vec<Value> {
    let find = || -> Vec<Value> {
        json_lines(router)
            .into_iter()
            .filter(|line| line["message"] == "request" && line["request_id"] == request_id)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while find().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    find()
}

/// The one line of `request_id`, checked for the fields every line has.
#[track_caller]
fn one_line(lines: Vec<Value>, request_id: &str) -> Value {
    assert_eq!(lines.len(), 1, "{request_id}: {lines:#?}");
    let line = lines.into_iter().next().unwrap();
    assert_eq!(line["level"], "INFO", "{line}");
    for field in ALWAYS {
        assert!(has(&line, field), "{request_id}: no {field} in {line}");
    }
    line
}

#[track_caller]
fn has_engine_fields(line: &Value) {
    for field in ENGINE {
        assert!(has(line, field), "no {field} in {line}");
    }
}

fn has(line: &Value, field: &str) -> bool {
    line.get(field).is_some()
}

/// The ledger's rows, read from the file once the server wrote `expected`.
async fn ledger_rows(database: &Path, expected: usize) -> Vec<router_core::usage::UsageRecord> {
    let store = SqliteStore::open(database, Duration::from_millis(20)).unwrap();
    let since = OffsetDateTime::UNIX_EPOCH;
    let until = OffsetDateTime::now_utc() + time::Duration::days(1);
    for _ in 0..200 {
        let rows = store.read_records(since, until).unwrap();
        if rows.len() >= expected {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    store.read_records(since, until).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_leaves_one_json_line_with_its_fields() {
    let upstream = Upstream::start(upstream_reply).await;
    let database = fresh_database("request-log");
    let router = RouterProcess::start_with_args(
        &config(&upstream, &database),
        &["--log-format", "json"],
        &[],
    );
    let chat_url = router.url("/v1/chat/completions");

    // A complete answer, under the client's own id.
    let answer = call(
        "POST",
        &chat_url,
        Some(KEY),
        Some(b"client-ok-1"),
        &chat("ok", false),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(request_id_of(&answer.headers), "client-ok-1");
    let line = one_line(lines_of(&router, "client-ok-1").await, "client-ok-1");
    has_engine_fields(&line);
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/v1/chat/completions");
    assert_eq!(line["status"], 200);
    assert_eq!(line["key_id"], 7);
    assert_eq!(line["key_name"], "logged");
    assert_eq!(line["model"], "ok");
    assert_eq!(line["entry"], 0);
    assert_eq!(line["provider_key"], 0);
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["stream"], false);
    assert_eq!(line["prompt_tokens"], 11);
    assert_eq!(line["completion_tokens"], 5);
    assert!(
        (line["cost_usd"].as_f64().unwrap() - 0.021).abs() < 1e-9,
        "{line}"
    );
    assert_eq!(line["outcome"], "ok");
    assert!(line["upstream_ms"].as_f64().unwrap() > 0.0, "{line}");
    let overhead = line["overhead_ms"].as_f64().unwrap();
    assert!(overhead >= 0.0 && overhead <= line["latency_ms"].as_f64().unwrap());
    assert!(!has(&line, "first_chunk_ms"), "{line}");
    assert!(!has(&line, "error"), "{line}");

    // Refused by the client key's limit: the second of a minute.
    let first = call(
        "POST",
        &chat_url,
        Some(LIMITED_KEY),
        Some(b"limited-1"),
        &chat("ok", false),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let refused = call(
        "POST",
        &chat_url,
        Some(LIMITED_KEY),
        Some(b"limited-2"),
        &chat("ok", false),
    )
    .await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(request_id_of(&refused.headers), "limited-2");
    let line = one_line(lines_of(&router, "limited-2").await, "limited-2");
    has_engine_fields(&line);
    assert_eq!(line["status"], 429);
    assert_eq!(line["outcome"], "refused");
    assert_eq!(line["limit"], "key rpm");
    assert_eq!(line["key_name"], "limited");
    assert_eq!(line["attempts"], 0);
    assert!(
        line["error"].as_str().unwrap().contains("key rpm"),
        "{line}"
    );

    // The upstream fails.
    let failed = call(
        "POST",
        &chat_url,
        Some(KEY),
        Some(b"fails-1"),
        &chat("fails", false),
    )
    .await;
    assert_eq!(failed.status, 502, "{}", failed.text());
    assert_eq!(request_id_of(&failed.headers), "fails-1");
    let line = one_line(lines_of(&router, "fails-1").await, "fails-1");
    has_engine_fields(&line);
    assert_eq!(line["status"], 502);
    assert_eq!(line["outcome"], "upstream_failed");
    assert_eq!(line["attempts"], 1);
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("the upstream broke"),
        "{line}"
    );

    // A stream read to its end: its line comes at the end, with the time
    // to its first chunk.
    let streamed = call(
        "POST",
        &chat_url,
        Some(KEY),
        Some(b"streams-1"),
        &chat("streams", true),
    )
    .await;
    assert_eq!(streamed.status, 200);
    assert!(
        streamed.text().contains("data: [DONE]"),
        "{}",
        streamed.text()
    );
    assert_eq!(request_id_of(&streamed.headers), "streams-1");
    let line = one_line(lines_of(&router, "streams-1").await, "streams-1");
    has_engine_fields(&line);
    assert_eq!(line["status"], 200);
    assert_eq!(line["stream"], true);
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["prompt_tokens"], 9);
    assert_eq!(line["completion_tokens"], 3);
    let first_chunk = line["first_chunk_ms"].as_f64().unwrap();
    let upstream_ms = line["upstream_ms"].as_f64().unwrap();
    assert!(first_chunk >= upstream_ms, "{line}");
    assert!(line["overhead_ms"].as_f64().unwrap() >= 0.0, "{line}");

    // A stream the client abandons after its first chunk: no line while it
    // is open, one when the router notices the client left.
    let response = send(
        "POST",
        &chat_url,
        Some(KEY),
        Some(b"stalls-1"),
        &chat("stalls", true),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(request_id_of(response.headers()), "stalls-1");
    let mut body = response.into_body();
    let first = next_frame(&mut body, Duration::from_secs(5)).await.unwrap();
    assert!(String::from_utf8_lossy(&first).contains(ANSWER));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        json_lines(&router)
            .iter()
            .all(|line| line["request_id"] != "stalls-1"),
        "a line before the stream ended"
    );
    drop(body);
    let line = one_line(lines_of(&router, "stalls-1").await, "stalls-1");
    has_engine_fields(&line);
    assert_eq!(line["status"], 200);
    assert_eq!(line["stream"], true);
    assert_eq!(line["outcome"], "client_gone");
    assert!(has(&line, "first_chunk_ms"), "{line}");

    // Requests the engine never sees: a wrong key, an unknown path, a
    // wrong method, a body that is not JSON.
    // (method, path, key, request id, body, status, outcome); the bad JSON
    // is authenticated and parsed by the engine, whose books close on it.
    let cases = [
        (
            "POST",
            "/v1/chat/completions",
            "client-wrong-Pq1",
            "edge-401",
            "{}",
            401,
            "unauthorized",
        ),
        ("GET", "/v1/nowhere", KEY, "edge-404", "", 404, "invalid"),
        (
            "GET",
            "/v1/chat/completions",
            KEY,
            "edge-405",
            "",
            405,
            "invalid",
        ),
        (
            "POST",
            "/v1/chat/completions",
            KEY,
            "edge-400",
            "{not json",
            400,
            "invalid",
        ),
    ];
    for (method, path, key, id, body, status, outcome) in cases {
        let answer = call(
            method,
            &router.url(path),
            Some(key),
            Some(id.as_bytes()),
            body,
        )
        .await;
        assert_eq!(answer.status.as_u16(), status, "{id}: {}", answer.text());
        assert_eq!(request_id_of(&answer.headers), id);
        let line = one_line(lines_of(&router, id).await, id);
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["path"], path, "{line}");
        assert!(has(&line, "error"), "{line}");
        assert_eq!(line["outcome"], outcome, "{line}");
        if id == "edge-400" {
            has_engine_fields(&line);
            assert_eq!(line["key_name"], "logged");
        }
    }

    // Every request left one line, and every line of the log is JSON.
    let requests: Vec<_> = json_lines(&router)
        .into_iter()
        .filter(|line| line["message"] == "request")
        .collect();
    assert_eq!(requests.len(), 10, "{requests:#?}");
    for line in &requests {
        assert_eq!(line["target"], "router_http::request_log", "{line}");
    }

    // The ledger rows go by the same ids.
    let rows = ledger_rows(&database, 7).await;
    let mut ids: Vec<&str> = rows.iter().map(|row| row.request_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "client-ok-1",
            "edge-400",
            "fails-1",
            "limited-1",
            "limited-2",
            "stalls-1",
            "streams-1"
        ]
    );

    // No key, no prompt, no answer in any line.
    let logs = router.logs();
    for secret in [
        PROVIDER_KEY,
        KEY,
        LIMITED_KEY,
        "client-wrong-Pq1",
        PROMPT,
        ANSWER,
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn x_request_id_is_the_clients_when_sane_else_the_routers() {
    let upstream = Upstream::start(upstream_reply).await;
    let database = fresh_database("request-id");
    let router = RouterProcess::start_with_args(
        &config(&upstream, &database),
        &["--log-format", "json"],
        &[],
    );
    let chat_url = router.url("/v1/chat/completions");

    let longest = "i".repeat(128);
    let sane: [&[u8]; 3] = [b"a", longest.as_bytes(), b"trace-1f3~!@#$%^&*()[]{}<>?/=+"];
    for id in sane {
        let answer = call("POST", &chat_url, Some(KEY), Some(id), &chat("ok", false)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(request_id_of(&answer.headers).as_bytes(), id);
    }

    let too_long = "l".repeat(129);
    let insane: [&[u8]; 5] = [
        too_long.as_bytes(),
        b"tab\there",
        b"with space",
        b"\xc3\xa9t\xc3\xa9",
        b"",
    ];
    let mut replaced = Vec::new();
    for id in insane {
        let answer = call("POST", &chat_url, Some(KEY), Some(id), &chat("ok", false)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let given = request_id_of(&answer.headers);
        assert!(given.starts_with("req_"), "{given}");
        assert_ne!(given.as_bytes(), id);
        one_line(lines_of(&router, &given).await, &given);
        replaced.push(given);
    }
    // Without one, the router makes one, on errors and on streams too.
    let streamed = call("POST", &chat_url, Some(KEY), None, &chat("streams", true)).await;
    assert_eq!(streamed.status, 200);
    replaced.push(request_id_of(&streamed.headers));
    let unauthorized = call("POST", &chat_url, None, None, &chat("ok", false)).await;
    assert_eq!(unauthorized.status, 401);
    let unauthorized_id = request_id_of(&unauthorized.headers);
    assert!(unauthorized_id.starts_with("req_"), "{unauthorized_id}");
    one_line(lines_of(&router, &unauthorized_id).await, &unauthorized_id);
    let health = call("GET", &router.url("/health"), None, None, "").await;
    assert!(request_id_of(&health.headers).starts_with("req_"));
    let failed = call("POST", &chat_url, Some(KEY), None, &chat("fails", false)).await;
    assert_eq!(failed.status, 502);
    replaced.push(request_id_of(&failed.headers));

    // Generated ids are unique, and each one is its ledger row's.
    let mut unique = replaced.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), replaced.len(), "{replaced:?}");
    let rows = ledger_rows(&database, sane.len() + replaced.len()).await;
    assert_eq!(rows.len(), sane.len() + replaced.len());
    for id in replaced.iter().map(String::as_str).chain([
        "a",
        longest.as_str(),
        "trace-1f3~!@#$%^&*()[]{}<>?/=+",
    ]) {
        assert_eq!(
            rows.iter().filter(|row| row.request_id == id).count(),
            1,
            "{id} in {rows:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_gone_before_the_answer_still_leaves_its_line() {
    let upstream = Upstream::start(upstream_reply).await;
    let database = fresh_database("request-gone");
    let router = RouterProcess::start_with_args(
        &config(&upstream, &database),
        &["--log-format", "json"],
        &[],
    );
    let waited = tokio::time::timeout(
        Duration::from_millis(300),
        call(
            "POST",
            &router.url("/v1/chat/completions"),
            Some(KEY),
            Some(b"gone-1"),
            &chat("slow", false),
        ),
    )
    .await;
    assert!(waited.is_err(), "the answer came before the client left");
    let line = one_line(lines_of(&router, "gone-1").await, "gone-1");
    has_engine_fields(&line);
    assert_eq!(line["outcome"], "client_gone", "{line}");
    assert!(!has(&line, "status"), "no response went out: {line}");
    assert_eq!(line["attempts"], 1, "{line}");
    let rows = ledger_rows(&database, 1).await;
    assert_eq!(rows[0].request_id, "gone-1");
}
