//! The fault suite: the real binary between clients and a fault-injecting
//! upstream on 127.0.0.1. Every case asserts the outcome a client sees, what
//! reached the upstream, and that no secret reached the router's logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;
#[path = "../../router-providers/tests/support/mod.rs"]
mod upstream;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use process::{call, next_frame, read_rest, run, send, write_config, Answer, RouterProcess};
use serde_json::{json, Value};
use upstream::{End, Recorded, Reply, Upstream};

const CLIENT_KEY: &str = "sk-fault-client-4c1d";
const KEY_A: &str = "pk-fault-alpha-9f2e";
const KEY_B: &str = "pk-fault-bravo-7a3b";
const SECRETS: [&str; 3] = [CLIENT_KEY, KEY_A, KEY_B];

/// One router in front of one upstream.
struct Case {
    upstream: Upstream,
    router: RouterProcess,
}

impl Case {
    /// `handler` scripts the upstream; `extra` is appended to the model entry
    /// `m` (two provider keys); `server` to the server section.
    async fn start(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        server: &str,
        extra: &str,
    ) -> Self {
        let upstream = Upstream::start(handler).await;
        let config = format!(
            "server:\n  host: 127.0.0.1\n  port: 0\n  max_body_bytes: 262144\n{server}\
             models:\n  - name: m\n    base_url: {}\n    is_openai_compatibility: true\n    \
             provider_api_key: [\"{KEY_A}\", \"{KEY_B}\"]\n    enabled: true\n{extra}\
             api_keys:\n  - id: 1\n    key: {CLIENT_KEY}\n    name: fault\n    is_active: true\n",
            upstream.url("/v1")
        );
        let router = RouterProcess::start(&config);
        Self { upstream, router }
    }

    async fn simple(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        Self::start(handler, "", "").await
    }

    fn url(&self) -> String {
        self.router.url("/v1/chat/completions")
    }

    async fn post(&self, body: &str) -> Answer {
        call("POST", &self.url(), Some(CLIENT_KEY), body).await
    }

    fn keys_seen(&self) -> Vec<String> {
        self.upstream
            .requests()
            .iter()
            .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
            .collect()
    }

    /// Every case ends here: nothing secret in the logs.
    fn finish(self) {
        let logs = self.router.logs();
        for secret in SECRETS {
            assert!(!logs.contains(secret), "a secret reached the logs:\n{logs}");
        }
    }
}

fn chat(stream: bool) -> String {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

fn completion() -> String {
    json!({"id": "c", "object": "chat.completion", "created": 1, "model": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
    .to_string()
}

fn event(content: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "s", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]})
    )
}

fn stream_body(parts: &[&str]) -> String {
    let mut out: String = parts.iter().map(|p| event(p)).collect();
    out.push_str("data: [DONE]\n\n");
    out
}

/// The upstream answers `first` to the first request and `then` to every
/// later one.
fn first_then(
    first: impl Fn() -> Reply + Send + Sync + 'static,
    then: impl Fn() -> Reply + Send + Sync + 'static,
) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    move |_| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            first()
        } else {
            then()
        }
    }
}

/// The first attempt fails with `status`; the second answers.
fn fail_once(
    status: u16,
    body: &'static str,
) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    first_then(
        move || Reply::json(status, body),
        || Reply::json(200, completion()),
    )
}

fn assert_error(answer: &Answer, status: u16, code: &str) -> Value {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.text());
    let body = answer.json();
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        error.get("type").is_some() && error.get("param").is_some(),
        "{body}"
    );
    body
}

fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------- upstream errors

async fn fails_over_on(status: u16) {
    let case = Case::simple(fail_once(status, "{\"error\":{\"message\":\"transient\"}}")).await;
    let answer = case.post(&chat(false)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "fine");
    assert_eq!(
        case.keys_seen(),
        [format!("Bearer {KEY_A}"), format!("Bearer {KEY_B}")]
    );
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f01_upstream_500_fails_over_to_the_next_key() {
    fails_over_on(500).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f02_upstream_502_fails_over() {
    fails_over_on(502).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f03_upstream_503_fails_over() {
    fails_over_on(503).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f04_upstream_429_fails_over() {
    fails_over_on(429).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f05_upstream_401_fails_over_to_a_key_that_works() {
    fails_over_on(401).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f06_upstream_403_fails_over_to_a_key_that_works() {
    fails_over_on(403).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f07_upstream_400_is_the_clients_and_never_retried_nor_echoed() {
    let case = Case::simple(|_| {
        Reply::json(
            400,
            "{\"error\":{\"message\":\"bad tools\"},\"org\":\"org-secret-7781\"}",
        )
    })
    .await;
    let answer = case.post(&chat(false)).await;
    assert_error(&answer, 400, "upstream_client_error");
    assert!(!answer.text().contains("org-secret-7781"));
    assert_eq!(case.upstream.requests().len(), 1);
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f08_every_key_failing_is_503_with_the_count() {
    let case = Case::simple(|_| Reply::json(500, "{}")).await;
    let body = assert_error(&case.post(&chat(false)).await, 503, "all_providers_failed");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("All providers failed"));
    assert_eq!(case.upstream.requests().len(), 2);
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f09_rejected_keys_everywhere_are_a_gateway_error_not_the_clients_401() {
    let case =
        Case::simple(|_| Reply::json(401, "{\"error\":{\"message\":\"invalid key\"}}")).await;
    let answer = case.post(&chat(false)).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(answer.headers.get("www-authenticate").is_none());
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f10_malformed_json_from_the_upstream_is_failed_over() {
    let case = Case::simple(first_then(
        || Reply::json(200, "{\"id\": \"c\", \"choices\": ["),
        || Reply::json(200, completion()),
    ))
    .await;
    let answer = case.post(&chat(false)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(case.upstream.requests().len(), 2);
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f11_a_200_that_is_not_a_completion_is_a_bad_gateway() {
    let case = Case::simple(|_| Reply::json(200, "{\"hello\": \"world\"}")).await;
    assert_error(&case.post(&chat(false)).await, 503, "all_providers_failed");
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f12_an_unreachable_upstream_is_502() {
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let config = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\nmodels:\n  - name: m\n    base_url: http://127.0.0.1:1/v1\n    \
         is_openai_compatibility: true\n    provider_api_key: [\"{KEY_A}\"]\n    enabled: true\n\
         api_keys:\n  - key: {CLIENT_KEY}\n    is_active: true\n"
    );
    let router = RouterProcess::start(&config);
    let answer = call(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(CLIENT_KEY),
        &chat(false),
    )
    .await;
    assert_error(&answer, 502, "upstream_unreachable");
    let logs = router.logs();
    for secret in SECRETS {
        assert!(!logs.contains(secret), "a secret reached the logs:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn f13_a_body_cut_before_it_ends_is_failed_over() {
    let case = Case::simple(first_then(
        || Reply::json(200, completion()).in_pieces(10, Duration::from_millis(5), End::Abort),
        || Reply::json(200, completion()),
    ))
    .await;
    let answer = case.post(&chat(false)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(case.upstream.requests().len(), 2);
    case.finish();
}

// ---------------------------------------------------------------- streams

#[tokio::test(flavor = "multi_thread")]
async fn f14_a_stream_cut_midway_ends_with_one_error_event_and_no_done() {
    let body = event("partial") + ": padding\n\n";
    let piece = event("partial").len();
    let case = Case::simple(move |_| {
        Reply::sse(body.clone()).in_pieces(piece, Duration::from_millis(50), End::Abort)
    })
    .await;
    let answer = case.post(&chat(true)).await;
    assert_eq!(answer.status, 200);
    let events = sse_events(&answer.text());
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[1].starts_with("data: {\"error\""));
    assert!(!answer.text().contains("data: [DONE]"));
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f15_a_stream_without_done_is_reported_as_broken() {
    let case = Case::simple(|_| Reply::sse(event("all"))).await;
    let text = case.post(&chat(true)).await.text();
    assert!(text.contains("data: {\"error\""), "{text}");
    assert!(!text.contains("data: [DONE]"));
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f16_non_json_data_mid_stream_is_an_error_event() {
    let body = event("ok") + "data: {not json\n\n" + "data: [DONE]\n\n";
    let case = Case::simple(move |_| Reply::sse(body.clone())).await;
    let text = case.post(&chat(true)).await.text();
    let events = sse_events(&text);
    assert!(events[0].contains("\"ok\""));
    assert!(events[1].starts_with("data: {\"error\""), "{text}");
    assert!(!text.contains("data: [DONE]"));
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f17_a_stream_broken_at_its_first_event_fails_over_before_any_byte() {
    let case = Case::simple(first_then(
        || Reply::sse("data: {broken\n\n"),
        || Reply::sse(stream_body(&["second"])),
    ))
    .await;
    let answer = case.post(&chat(true)).await;
    assert_eq!(answer.status, 200);
    let text = answer.text();
    assert!(text.contains("second") && !text.contains("error"), "{text}");
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f18_a_one_mebibyte_event_passes_whole() {
    let big = "x".repeat(1 << 20);
    let body = stream_body(&[&big]);
    let case = Case::simple(move |_| {
        Reply::sse(body.clone()).in_pieces(4096, Duration::ZERO, End::Finish)
    })
    .await;
    let text = case.post(&chat(true)).await.text();
    let events = sse_events(&text);
    assert_eq!(events.len(), 2);
    let value: Value = serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        value["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap()
            .len(),
        1 << 20
    );
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f19_an_event_over_the_cap_is_refused_not_buffered_forever() {
    let big = "x".repeat(64 * 1024);
    let body = event("first") + &event(&big) + "data: [DONE]\n\n";
    let case = Case::start(
        move |_| Reply::sse(body.clone()),
        "  max_sse_event_bytes: 16384\n",
        "",
    )
    .await;
    let text = case.post(&chat(true)).await.text();
    let events = sse_events(&text);
    assert!(events[0].contains("first"));
    assert!(
        events.last().unwrap().starts_with("data: {\"error\""),
        "{text}"
    );
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f20_crlf_and_spaceless_data_lines_are_parsed() {
    let body = "data:{\"id\":\"s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\r\n\r\n\
                data: {\"id\":\"s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\r\n\r\n\
                data: [DONE]\r\n\r\n";
    let case =
        Case::simple(move |_| Reply::sse(body).in_pieces(7, Duration::ZERO, End::Finish)).await;
    let text = case.post(&chat(true)).await.text();
    let events = sse_events(&text);
    assert_eq!(events.len(), 3, "{text}");
    assert!(events[0].contains("\"a\"") && events[1].contains("\"b\""));
    assert_eq!(events[2], "data: [DONE]");
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f21_a_stream_rate_limited_before_its_first_byte_fails_over() {
    let case = Case::simple(first_then(
        || Reply::json(429, "{}").with_header("retry-after", "1"),
        || Reply::sse(stream_body(&["after"])),
    ))
    .await;
    let answer = case.post(&chat(true)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.text().contains("after"));
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f22_a_client_that_leaves_cancels_the_upstream_within_a_second() {
    let case = Case::simple(|_| {
        Reply::sse(event("first")).in_pieces(1 << 20, Duration::ZERO, End::KeepOpen)
    })
    .await;
    let response = send("POST", &case.url(), Some(CLIENT_KEY), &chat(true)).await;
    let mut body = response.into_body();
    next_frame(&mut body, Duration::from_secs(5)).await.unwrap();
    drop(body);
    assert!(
        case.upstream
            .body_abandoned_within(Duration::from_secs(1))
            .await
    );
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f23_a_silent_upstream_gets_heartbeats_until_it_speaks() {
    let body = stream_body(&["late"]);
    let piece = body.find("data: [DONE]").unwrap();
    let case = Case::start(
        move |_| {
            Reply::sse(body.clone())
                .in_pieces(piece, Duration::from_millis(300), End::Finish)
                .after(Duration::ZERO)
        },
        "  sse_keepalive: 50ms\n",
        "",
    )
    .await;
    let text = case.post(&chat(true)).await.text();
    assert!(text.contains(": keepalive"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    case.finish();
}

// ---------------------------------------------------------------- timeouts

#[tokio::test(flavor = "multi_thread")]
async fn f24_headers_later_than_the_first_byte_timeout_are_a_504() {
    let case = Case::start(
        |_| Reply::json(200, completion()).after(Duration::from_millis(800)),
        "",
        "    first_byte_timeout: 100ms\n",
    )
    .await;
    let started = Instant::now();
    let answer = case.post(&chat(false)).await;
    // Both keys time out: several attempts, so 503, each a timeout.
    assert!(
        matches!(answer.status.as_u16(), 503 | 504),
        "{}",
        answer.text()
    );
    assert!(
        answer.text().contains("did not answer"),
        "{}",
        answer.text()
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f25_a_stream_stalled_past_the_idle_timeout_ends_with_an_error_event() {
    // The first event, then two seconds of silence: no byte, not even a comment.
    let first = event("before");
    let body = first.clone() + &stream_body(&["after"]);
    let piece = first.len();
    let case = Case::start(
        move |_| Reply::sse(body.clone()).in_pieces(piece, Duration::from_secs(2), End::Finish),
        "",
        "    idle_timeout: 150ms\n",
    )
    .await;
    let started = Instant::now();
    let text = case.post(&chat(true)).await.text();
    let events = sse_events(&text);
    assert!(events[0].contains("before"));
    assert!(
        events.last().unwrap().contains("\"upstream_timeout\""),
        "{text}"
    );
    assert!(!text.contains("after"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        case.upstream
            .body_abandoned_within(Duration::from_secs(1))
            .await
    );
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f26_a_request_past_its_total_timeout_is_cut() {
    let body = stream_body(&["a", "b", "c", "d", "e", "f"]);
    let case = Case::start(
        move |_| Reply::sse(body.clone()).in_pieces(40, Duration::from_millis(100), End::Finish),
        "",
        "    request_timeout: 250ms\n",
    )
    .await;
    let text = case.post(&chat(true)).await.text();
    assert!(text.contains("\"upstream_timeout\""), "{text}");
    assert!(!text.contains("data: [DONE]"));
    case.finish();
}

// ---------------------------------------------------------------- cooldown and circuits

#[tokio::test(flavor = "multi_thread")]
async fn f27_a_rate_limited_key_rests_for_its_retry_after() {
    let case = Case::simple(|request| {
        if request.headers["authorization"] == format!("Bearer {KEY_A}").as_str() {
            Reply::json(429, "{}").with_header("retry-after", "30")
        } else {
            Reply::json(200, completion())
        }
    })
    .await;
    for _ in 0..4 {
        assert_eq!(case.post(&chat(false)).await.status, 200);
    }
    let seen = case.keys_seen();
    let alpha = seen.iter().filter(|k| k.contains(KEY_A)).count();
    assert_eq!(alpha, 1, "key A should rest after its 429: {seen:?}");
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f28_a_rejected_key_is_taken_out_and_logged_without_the_key() {
    let case = Case::simple(|request| {
        if request.headers["authorization"] == format!("Bearer {KEY_A}").as_str() {
            Reply::json(401, "{}")
        } else {
            Reply::json(200, completion())
        }
    })
    .await;
    for _ in 0..4 {
        assert_eq!(case.post(&chat(false)).await.status, 200);
    }
    let alpha = case
        .keys_seen()
        .iter()
        .filter(|k| k.contains(KEY_A))
        .count();
    assert_eq!(alpha, 1);
    let logs = case.router.logs();
    assert!(
        logs.contains("provider key") || logs.contains("key"),
        "{logs}"
    );
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f29_every_key_resting_after_429s_is_a_429_with_the_earliest_recovery() {
    let case = Case::simple(|_| Reply::json(429, "{}").with_header("retry-after", "20")).await;
    let first = case.post(&chat(false)).await;
    assert!(
        matches!(first.status.as_u16(), 429 | 503),
        "{}",
        first.text()
    );
    let again = case.post(&chat(false)).await;
    assert_eq!(again.status, 429, "{}", again.text());
    let retry: u64 = again.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    // The second request never reached the upstream: both keys were resting.
    assert_eq!(case.upstream.requests().len(), 2);
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f30_a_run_of_failures_opens_the_circuit() {
    let case = Case::start(|_| Reply::json(500, "{}"), "", "").await;
    let config_failures = 5;
    for _ in 0..config_failures {
        case.post(&chat(false)).await;
    }
    let before = case.upstream.requests().len();
    let answer = case.post(&chat(false)).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(answer.headers.contains_key("retry-after"));
    assert_eq!(
        case.upstream.requests().len(),
        before,
        "an open circuit sends nothing"
    );
    case.finish();
}

// ---------------------------------------------------------------- bad input

async fn refused_without_upstream(
    body: &[u8],
    content_type: Option<&str>,
    status: u16,
    code: &str,
) {
    let case = Case::simple(|_| Reply::json(200, completion())).await;
    let mut request = http::Request::builder()
        .method("POST")
        .uri(case.url())
        .header("authorization", format!("Bearer {CLIENT_KEY}"));
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .unwrap();
    let response = process::client().request(request).await.unwrap();
    let status_got = response.status();
    let headers = response.headers().clone();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_error(
        &Answer {
            status: status_got,
            headers,
            body: bytes,
        },
        status,
        code,
    );
    assert!(
        case.upstream.requests().is_empty(),
        "bad input reached the upstream"
    );
    case.finish();
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test(flavor = "multi_thread")]
async fn f31_malformed_json_is_400() {
    refused_without_upstream(b"{\"model\": \"m\",, }", JSON, 400, "invalid_json").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f32_truncated_json_is_400() {
    refused_without_upstream(
        b"{\"model\": \"m\", \"messages\": [",
        JSON,
        400,
        "invalid_json",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f33_wrong_types_name_the_field() {
    let case = Case::simple(|_| Reply::json(200, completion())).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"});
    let answer = case.post(&body.to_string()).await;
    let body = assert_error(&answer, 400, "invalid_value");
    assert_eq!(body["error"]["param"], "temperature");
    assert!(case.upstream.requests().is_empty());
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f34_deeply_nested_json_is_400_not_a_stack_overflow() {
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    refused_without_upstream(body.as_bytes(), JSON, 400, "invalid_json").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f35_invalid_utf8_is_400() {
    refused_without_upstream(
        b"{\"model\": \"m\xff\xfe\", \"messages\": []}",
        JSON,
        400,
        "invalid_json",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f36_an_empty_body_is_400() {
    refused_without_upstream(b"", JSON, 400, "invalid_json").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f37_a_body_that_is_not_json_by_its_content_type_is_415() {
    refused_without_upstream(
        chat(false).as_bytes(),
        Some("text/plain"),
        415,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f38_an_oversized_body_is_413_with_or_without_content_length() {
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(300_000)}]})
        .to_string();
    refused_without_upstream(big.as_bytes(), JSON, 413, "request_too_large").await;
    // Chunked: no Content-Length to refuse it by.
    let case = Case::simple(|_| Reply::json(200, completion())).await;
    let chunks = vec![Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
        bytes::Bytes::from(big),
    ))];
    let request = http::Request::builder()
        .method("POST")
        .uri(case.url())
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(
            chunks,
        )))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 413);
    assert!(case.upstream.requests().is_empty());
    case.finish();
}

/// Writes a raw request and reads the status line.
fn raw_status(router: &RouterProcess, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(router.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut buffer = [0; 256];
    let read = stream.read(&mut buffer).unwrap_or(0);
    String::from_utf8_lossy(&buffer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn f39_too_many_headers_are_refused() {
    let case = Case::simple(|_| Reply::json(200, completion())).await;
    let mut request = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..500 {
        request.push_str(&format!("X-Filler-{i}: y\r\n"));
    }
    request.push_str("\r\n");
    let status = raw_status(&case.router, request.as_bytes());
    assert!(status.contains("431"), "{status:?}");
    // The router is still serving.
    assert_eq!(
        call("GET", &case.router.url("/health"), None, "")
            .await
            .status,
        200
    );
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f40_a_huge_header_is_refused() {
    let case = Case::simple(|_| Reply::json(200, completion())).await;
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "y".repeat(200_000)
    );
    let status = raw_status(&case.router, request.as_bytes());
    assert!(status.contains("431"), "{status:?}");
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f41_missing_or_empty_messages_are_400() {
    let case = Case::simple(|_| Reply::json(200, completion())).await;
    for body in [json!({"model": "m"}), json!({"model": "m", "messages": []})] {
        let answer = case.post(&body.to_string()).await;
        let body = assert_error(&answer, 400, "invalid_value");
        assert_eq!(body["error"]["param"], "messages");
    }
    assert!(case.upstream.requests().is_empty());
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f42_negative_or_absurd_counts_are_400() {
    let case = Case::simple(|_| Reply::json(200, completion())).await;
    for (field, value) in [
        ("n", json!(-1)),
        ("n", json!(1_000_000)),
        ("max_tokens", json!(-5)),
        ("max_tokens", json!(1u64 << 40)),
        ("max_completion_tokens", json!(1.5)),
    ] {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        body[field] = value.clone();
        let answer = case.post(&body.to_string()).await;
        let body = assert_error(&answer, 400, "invalid_value");
        assert_eq!(body["error"]["param"], field, "{value}");
    }
    assert!(case.upstream.requests().is_empty());
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f43_a_100_kb_model_name_is_refused_without_being_echoed_whole() {
    let case = Case::simple(|_| Reply::json(200, completion())).await;
    let model = "m".repeat(100_000);
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let answer = case.post(&body.to_string()).await;
    assert!(
        matches!(answer.status.as_u16(), 400 | 404),
        "{}",
        answer.status
    );
    assert!(
        answer.body.len() < 4096,
        "the error echoed {} bytes",
        answer.body.len()
    );
    assert!(case.upstream.requests().is_empty());
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f44_unknown_fields_in_odd_places_pass_through_untouched() {
    let case = Case::simple(|_| Reply::json(200, completion())).await;
    let body = json!({"model": "m", "x_vendor": {"deep": [1, {"k": null}]},
        "messages": [{"role": "user", "content": "hi", "x_note": "kept"}]});
    assert_eq!(case.post(&body.to_string()).await.status, 200);
    let sent: Value = serde_json::from_slice(&case.upstream.requests()[0].body).unwrap();
    assert_eq!(sent["x_vendor"], json!({"deep": [1, {"k": null}]}));
    assert_eq!(sent["messages"][0]["x_note"], "kept");
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f45_missing_or_wrong_keys_are_401_and_never_logged() {
    let case = Case::simple(|_| Reply::json(200, completion())).await;
    let wrong = call(
        "POST",
        &case.url(),
        Some("sk-wrong-but-secret-5511"),
        &chat(false),
    )
    .await;
    assert_error(&wrong, 401, "invalid_api_key");
    let missing = call("POST", &case.url(), None, &chat(false)).await;
    assert_error(&missing, 401, "missing_api_key");
    assert!(!case.router.logs().contains("sk-wrong-but-secret-5511"));
    assert!(case.upstream.requests().is_empty());
    case.finish();
}

// ---------------------------------------------------------------- config

fn check_config(text: &str) -> (i32, String) {
    let path = write_config(text);
    let (code, _, stderr) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    (code, stderr)
}

#[test]
fn f46_config_faults_are_refused_with_their_path_and_never_a_panic() {
    for (text, needle) in [
        ("models: []\nmodels: []\n", "duplicate"),
        ("server:\n  prot: 1\n", "server.prot"),
        ("server:\n  port: [1]\n", "server.port"),
        ("api_keys:\n  - key: k\n    rpm: -3\n", "api_keys[0].rpm"),
        ("api_keys:\n  - key: ${ROUTER_FAULT_SUITE_UNSET}\n", "ROUTER_FAULT_SUITE_UNSET"),
        (
            "a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
             c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
             e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
            "",
        ),
    ] {
        let (code, stderr) = check_config(text);
        assert_eq!(code, 2, "{text}\n{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

// ---------------------------------------------------------------- shutdown

#[tokio::test(flavor = "multi_thread")]
async fn f47_health_turns_503_while_draining() {
    let case = Case::start(
        |_| Reply::json(200, completion()),
        "  shutdown_timeout: 5s\n",
        "",
    )
    .await;
    // A request half sent when the shutdown begins: the server keeps that
    // connection to finish it, and answers it as a draining server.
    let mut stream = TcpStream::connect(case.router.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: te")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    case.router.terminate();
    // Once new connections are refused, the drain has begun.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(case.router.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream.write_all(b"st\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"status\":\"draining\""), "{answer}");
    case.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn f48_a_stream_open_at_the_shutdown_timeout_gets_an_error_event_and_the_server_exits_0() {
    let mut case = Case::start(
        |_| Reply::sse(event("slow")).in_pieces(1 << 20, Duration::ZERO, End::KeepOpen),
        "  shutdown_timeout: 300ms\n",
        "",
    )
    .await;
    let response = send("POST", &case.url(), Some(CLIENT_KEY), &chat(true)).await;
    let mut body = response.into_body();
    let mut text =
        String::from_utf8_lossy(&next_frame(&mut body, Duration::from_secs(5)).await.unwrap())
            .into_owned();
    case.router.terminate();
    text.push_str(&read_rest(&mut body, Duration::from_secs(5)).await);
    let events = sse_events(&text);
    assert!(
        events.last().unwrap().contains("\"server_shutdown\""),
        "{text}"
    );
    assert!(!text.contains("data: [DONE]"));
    let status = case
        .router
        .wait(Duration::from_secs(10))
        .expect("did not exit");
    assert_eq!(status.code(), Some(0), "{}", case.router.logs());
    assert!(
        case.upstream
            .body_abandoned_within(Duration::from_secs(1))
            .await
    );
    case.finish();
}
