//! The OpenAI-compatible adapter against an in-process upstream replaying
//! recorded OpenAI bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use router_core::config::{ModelEntry, Timeouts};
use router_core::provider::{ChunkStream, ErrorKind, JsonObject};
use router_core::{Provider, ProviderError, ProviderRequest, Secret};
use router_providers::{HttpClient, OpenAiProvider, Registry, UpstreamSettings};
use serde_json::{json, Value};
use support::{fixture, End, Reply, Upstream};

const SETTINGS: UpstreamSettings = UpstreamSettings {
    connect_timeout: Duration::from_secs(2),
    max_sse_event_bytes: 8 * 1024 * 1024,
};

/// Generous timeouts, for the tests that are not about time.
const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    first_byte: Duration::from_secs(10),
    idle: Duration::from_secs(10),
    total: Duration::from_secs(10),
};

fn entry(base_url: &str, direct: bool) -> ModelEntry {
    ModelEntry {
        provider_model_name: "gpt-4o".to_owned(),
        base_url: Some(url::Url::parse(base_url).unwrap()),
        base_url_direct: direct,
        is_openai_compatibility: true,
        timeouts: TIMEOUTS,
        ..ModelEntry::new("gpt", "openai")
    }
}

/// A provider for `upstream` whose entry has `timeouts`.
fn provider_timed(upstream: &Upstream, timeouts: Timeouts) -> OpenAiProvider {
    let client = HttpClient::with_settings(SETTINGS).unwrap();
    let entry = ModelEntry {
        timeouts,
        ..entry(&upstream.url("/v1"), false)
    };
    OpenAiProvider::new(client, &entry).unwrap()
}

fn provider_with(
    upstream: &Upstream,
    path: &str,
    direct: bool,
    settings: UpstreamSettings,
) -> OpenAiProvider {
    let client = HttpClient::with_settings(settings).unwrap();
    OpenAiProvider::new(client, &entry(&upstream.url(path), direct)).unwrap()
}

fn provider(upstream: &Upstream) -> OpenAiProvider {
    provider_with(upstream, "/v1", false, SETTINGS)
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        other => panic!("not an object: {other}"),
    }
}

fn chat_body(stream: bool) -> JsonObject {
    let mut body = json!({
        "model": "gpt-4o",
        "messages": [{ "role": "user", "content": "Hello!" }],
        "temperature": 0.2,
        "some_unknown_field": { "kept": [1, 2, 3] },
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
    }
    object(body)
}

fn request(stream: bool, key: Option<&str>) -> ProviderRequest {
    ProviderRequest {
        body: chat_body(stream),
        api_key: key.map(Secret::new),
    }
}

/// Every item of a stream: chunks as JSON, errors as themselves.
async fn drain(stream: ChunkStream) -> Vec<Result<Value, ProviderError>> {
    stream
        .map(|item| item.map(|chunk| Value::Object(chunk.0)))
        .collect()
        .await
}

/// The chunks a recorded SSE fixture should produce, read independently of
/// the parser under test: every `data:` line except `[DONE]`.
fn expected_chunks(sse: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(sse).unwrap();
    text.split(['\r', '\n'])
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test]
async fn complete_posts_the_body_and_returns_the_answer() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_completion.json"))).await;
    let answer = provider(&upstream)
        .complete(request(false, Some("sk-test-123")))
        .await
        .unwrap()
        .into_object()
        .unwrap();
    let expected: Value = serde_json::from_slice(&fixture("chat_completion.json")).unwrap();
    assert_eq!(Value::Object(answer), expected);

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path_and_query, "/v1/chat/completions");
    assert_eq!(sent.headers["content-type"], "application/json");
    assert_eq!(sent.headers["authorization"], "Bearer sk-test-123");
    assert_eq!(sent.headers["accept"], "application/json");
    // The body goes out as the engine made it, unknown fields and order kept.
    let sent_body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent_body, Value::Object(chat_body(false)));
    assert!(sent.body.starts_with(br#"{"model":"gpt-4o","messages""#));
    // Only our own headers: nothing from a client, no compression we would not undo.
    let mut names: Vec<&str> = sent.headers.keys().map(|name| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "authorization",
            "content-length",
            "content-type",
            "host",
            "user-agent"
        ]
    );
}

#[tokio::test]
async fn no_key_means_no_authorization() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_completion.json"))).await;
    let provider = provider(&upstream);
    provider.complete(request(false, None)).await.unwrap();
    provider.complete(request(false, Some(""))).await.unwrap();
    for sent in upstream.requests() {
        assert!(sent.headers.get("authorization").is_none());
    }
}

#[tokio::test]
async fn url_joining_trailing_slash_and_direct() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_completion.json"))).await;
    let cases = [
        ("/v1/", false, "/v1/chat/completions"),
        ("/v1", false, "/v1/chat/completions"),
        ("", false, "/chat/completions"),
        (
            "/openai/v1beta/?api-version=1",
            false,
            "/openai/v1beta/chat/completions?api-version=1",
        ),
        ("/custom/endpoint", true, "/custom/endpoint"),
    ];
    for (path, direct, _) in cases {
        let provider = provider_with(&upstream, path, direct, SETTINGS);
        provider.complete(request(false, None)).await.unwrap();
    }
    let seen: Vec<String> = upstream
        .requests()
        .into_iter()
        .map(|sent| sent.path_and_query)
        .collect();
    let expected: Vec<&str> = cases.iter().map(|(_, _, expected)| *expected).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn error_statuses_carry_a_safe_message_and_retry_after() {
    let upstream = Upstream::start(|sent| {
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        match body["messages"][0]["content"].as_str().unwrap() {
            "400" => Reply::json(400, fixture("error_400.json")),
            "429" => Reply::json(429, fixture("error_429.json")).with_header("retry-after", "20"),
            "429ms" => {
                Reply::json(429, fixture("error_429.json")).with_header("retry-after-ms", "1500")
            }
            "500" => {
                Reply::json(500, fixture("error_500.html")).with_header("content-type", "text/html")
            }
            _ => Reply::json(503, Bytes::new()),
        }
    })
    .await;
    let provider = provider(&upstream);
    let ask = |text: &str| {
        let mut body = chat_body(false);
        body["messages"] = json!([{ "role": "user", "content": text }]);
        ProviderRequest {
            body,
            api_key: None,
        }
    };

    let cases = [
        (
            "400",
            400,
            "Invalid value for 'temperature': expected a number between 0 and 2.",
            None,
        ),
        (
            "429",
            429,
            "Rate limit reached for requests. Please try again in 20s.",
            Some(Duration::from_secs(20)),
        ),
        (
            "429ms",
            429,
            "Rate limit reached for requests. Please try again in 20s.",
            Some(Duration::from_millis(1500)),
        ),
        ("500", 500, "upstream returned status 500", None),
        ("503", 503, "upstream returned status 503", None),
    ];
    for (text, status, message, retry_after) in cases {
        let error = provider.complete(ask(text)).await.unwrap_err();
        let ProviderError::Status {
            status: got_status,
            message: got_message,
            retry_after: got_retry,
        } = &error
        else {
            panic!("{text}: expected a status error, got {error:?}");
        };
        assert_eq!(
            (*got_status, got_message.as_str(), *got_retry),
            (status, message, retry_after),
            "{text}"
        );
        // Nothing from the rest of the body: it carries account details.
        let everything = format!("{error} {error:?}");
        for secret in [
            "SECRET",
            "sk-proj",
            "sk-internal",
            "acct-",
            "gpu-17",
            "balance",
        ] {
            assert!(
                !everything.contains(secret),
                "{text}: leaked {secret}: {everything}"
            );
        }
    }
    assert_eq!(
        provider.complete(ask("400")).await.unwrap_err().kind(),
        ErrorKind::ClientError
    );
    assert_eq!(
        provider.complete(ask("429")).await.unwrap_err().kind(),
        ErrorKind::RateLimited
    );
    assert_eq!(
        provider.complete(ask("500")).await.unwrap_err().kind(),
        ErrorKind::ServerError
    );
}

#[tokio::test]
async fn complete_refuses_bodies_that_are_not_completions() {
    let upstream = Upstream::start(|sent| {
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        match body["messages"][0]["content"].as_str().unwrap() {
            "html" => Reply::json(200, "<html>captive portal</html>"),
            "shape" => Reply::json(200, r#"{"choices":[]}"#),
            _ => Reply::json(
                200,
                r#"{"error":{"message":"quota exceeded"},"account":"acct-SECRET"}"#,
            ),
        }
    })
    .await;
    let provider = provider(&upstream);
    for (text, expected) in [
        ("html", "the answer is not a JSON object"),
        ("shape", "the answer has neither `id` nor `object`"),
        (
            "error",
            "the upstream answered with an error: quota exceeded",
        ),
    ] {
        let mut body = chat_body(false);
        body["messages"] = json!([{ "role": "user", "content": text }]);
        match provider
            .complete(ProviderRequest {
                body,
                api_key: None,
            })
            .await
        {
            Err(ProviderError::InvalidResponse { detail }) => assert_eq!(detail, expected),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn stream_replays_the_recorded_fixture() {
    let sse = fixture("chat_stream.sse");
    let upstream = Upstream::start({
        let sse = sse.clone();
        move |_| Reply::sse(sse.clone())
    })
    .await;
    let stream = provider(&upstream)
        .stream(request(true, Some("sk-x")))
        .await
        .unwrap();
    let items = drain(stream).await;
    let chunks: Vec<Value> = items.into_iter().map(Result::unwrap).collect();
    assert_eq!(chunks, expected_chunks(&sse));
    assert_eq!(chunks.len(), 12);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["total_tokens"], 29);

    let sent = &upstream.requests()[0];
    assert_eq!(sent.headers["accept"], "text/event-stream");
    let sent_body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent_body["stream"], true);
    assert_eq!(sent_body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn crlf_fixture_in_tiny_pieces_gives_the_same_chunks() {
    let upstream = Upstream::start(|_| {
        Reply::sse(fixture("chat_stream_crlf.sse")).in_pieces(7, Duration::ZERO, End::Finish)
    })
    .await;
    let items = drain(
        provider(&upstream)
            .stream(request(true, None))
            .await
            .unwrap(),
    )
    .await;
    let chunks: Vec<Value> = items.into_iter().map(Result::unwrap).collect();
    assert_eq!(chunks, expected_chunks(&fixture("chat_stream.sse")));
}

#[tokio::test]
async fn stream_without_done_ends_with_truncated() {
    let sse = fixture("chat_stream_truncated.sse");
    let upstream = Upstream::start(|_| Reply::sse(fixture("chat_stream_truncated.sse"))).await;
    let mut items = drain(
        provider(&upstream)
            .stream(request(true, None))
            .await
            .unwrap(),
    )
    .await;
    let last = items.pop().unwrap();
    assert!(
        matches!(last, Err(ProviderError::Truncated { .. })),
        "{last:?}"
    );
    let chunks: Vec<Value> = items.into_iter().map(Result::unwrap).collect();
    assert_eq!(chunks, expected_chunks(&sse));
}

#[tokio::test]
async fn stream_cut_by_the_upstream_ends_with_truncated() {
    let upstream = Upstream::start(|_| {
        // Paced, so the head and the first events are on the wire before the cut.
        Reply::sse(fixture("chat_stream_truncated.sse")).in_pieces(
            400,
            Duration::from_millis(20),
            End::Abort,
        )
    })
    .await;
    let items = drain(
        provider(&upstream)
            .stream(request(true, None))
            .await
            .unwrap(),
    )
    .await;
    assert!(items.len() >= 2);
    let (last, chunks) = items.split_last().unwrap();
    assert!(chunks.iter().all(Result::is_ok));
    assert!(
        matches!(last, Err(ProviderError::Truncated { .. })),
        "{last:?}"
    );
}

#[tokio::test]
async fn done_ends_the_stream_even_if_the_upstream_keeps_talking() {
    let upstream = Upstream::start(|_| {
        Reply::sse("data: {\"id\":\"1\"}\n\ndata: [DONE]\n\ndata: not json\n\n").in_pieces(
            1024,
            Duration::ZERO,
            End::KeepOpen,
        )
    })
    .await;
    let stream = provider(&upstream)
        .stream(request(true, None))
        .await
        .unwrap();
    let items = tokio::time::timeout(Duration::from_secs(5), drain(stream))
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap(), &json!({ "id": "1" }));
}

#[tokio::test]
async fn stream_errors_before_the_first_chunk() {
    let upstream = Upstream::start(|sent| {
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        match body["messages"][0]["content"].as_str().unwrap() {
            "429" => Reply::json(429, fixture("error_429.json")).with_header("retry-after", "3"),
            _ => Reply::json(200, fixture("chat_completion.json")),
        }
    })
    .await;
    let provider = provider(&upstream);
    let mut body = chat_body(true);
    body["messages"] = json!([{ "role": "user", "content": "429" }]);
    match provider
        .stream(ProviderRequest {
            body,
            api_key: None,
        })
        .await
    {
        Err(ProviderError::Status {
            status: 429,
            retry_after,
            message,
        }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
            assert!(!message.contains("SECRET"));
        }
        Err(other) => panic!("unexpected {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
    // 200 but JSON: the upstream ignored `stream: true`.
    match provider.stream(request(true, None)).await {
        Err(ProviderError::InvalidResponse { detail }) => {
            assert_eq!(
                detail,
                "expected text/event-stream, the upstream sent content-type application/json"
            );
        }
        Err(other) => panic!("unexpected {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[tokio::test]
async fn bad_events_end_the_stream_with_an_error() {
    let upstream = Upstream::start(|sent| {
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        let events = match body["messages"][0]["content"].as_str().unwrap() {
            "not-json" => "data: {\"id\":\"1\"}\n\ndata: oops\n\ndata: [DONE]\n\n",
            "array" => "data: [1,2]\n\n",
            "error-status" => {
                "data: {\"id\":\"1\"}\n\ndata: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"org\":\"org-SECRET\"}}\n\n"
            }
            _ => "data: {\"error\":{\"type\":\"server_error\",\"message\":\"model crashed\"}}\n\n",
        };
        Reply::sse(events)
    })
    .await;
    let provider = provider(&upstream);
    let run = |text: &'static str| {
        let provider = &provider;
        async move {
            let mut body = chat_body(true);
            body["messages"] = json!([{ "role": "user", "content": text }]);
            drain(
                provider
                    .stream(ProviderRequest {
                        body,
                        api_key: None,
                    })
                    .await
                    .unwrap(),
            )
            .await
        }
    };

    let items = run("not-json").await;
    assert_eq!(items.len(), 2, "the error ends the stream: {items:?}");
    assert!(matches!(
        items[1],
        Err(ProviderError::InvalidResponse { .. })
    ));

    let items = run("array").await;
    assert!(matches!(
        items[..],
        [Err(ProviderError::InvalidResponse { .. })]
    ));

    let items = run("error-status").await;
    match &items[..] {
        [Ok(_), Err(ProviderError::Status {
            status: 503,
            message,
            ..
        })] => {
            assert_eq!(message, "overloaded");
        }
        other => panic!("unexpected {other:?}"),
    }

    let items = run("error-type").await;
    match &items[..] {
        [Err(ProviderError::InvalidResponse { detail })] => {
            assert_eq!(
                detail,
                "the upstream reported an error mid-stream: model crashed"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_64_kib_event_passes_whole() {
    let content = "x".repeat(64 * 1024);
    let event =
        json!({ "id": "big", "choices": [{ "index": 0, "delta": { "content": content } }] });
    let sse = format!("data: {event}\n\ndata: [DONE]\n\n");
    let upstream = Upstream::start(move |_| {
        Reply::sse(sse.clone()).in_pieces(1000, Duration::ZERO, End::Finish)
    })
    .await;
    let items = drain(
        provider(&upstream)
            .stream(request(true, None))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].as_ref().unwrap()["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap()
            .len(),
        64 * 1024
    );
}

#[tokio::test]
async fn an_event_over_the_cap_is_refused() {
    let settings = UpstreamSettings {
        max_sse_event_bytes: 1024,
        ..SETTINGS
    };
    let sse = format!(
        "data: {{\"id\":\"ok\"}}\n\ndata: {{\"pad\":\"{}\"}}\n\n",
        "y".repeat(2000)
    );
    let upstream = Upstream::start(move |_| Reply::sse(sse.clone())).await;
    let provider = provider_with(&upstream, "/v1", false, settings);
    let items = drain(provider.stream(request(true, None)).await.unwrap()).await;
    match &items[..] {
        [Ok(_), Err(ProviderError::InvalidResponse { detail })] => {
            assert_eq!(detail, "a stream event is larger than 1024 bytes");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_request() {
    let upstream = Upstream::start(|_| {
        Reply::sse("data: {\"id\":\"1\"}\n\n").in_pieces(1024, Duration::ZERO, End::KeepOpen)
    })
    .await;
    let mut stream = provider(&upstream)
        .stream(request(true, None))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.0["id"], "1");
    drop(stream);
    assert!(
        upstream.body_abandoned_within(Duration::from_secs(1)).await,
        "the upstream kept streaming after the client went away"
    );
}

#[tokio::test]
async fn connections_are_reused() {
    let upstream = Upstream::start(|sent| {
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        if body["stream"] == true {
            // The body's end comes 10 ms after [DONE], as a separate write.
            Reply::sse(fixture("chat_stream.sse")).in_pieces(
                512,
                Duration::from_millis(10),
                End::Finish,
            )
        } else {
            Reply::json(200, fixture("chat_completion.json"))
        }
    })
    .await;
    let provider = provider(&upstream);
    provider.complete(request(false, None)).await.unwrap();
    provider.complete(request(false, None)).await.unwrap();
    for _ in 0..3 {
        let items = drain(provider.stream(request(true, None)).await.unwrap()).await;
        assert!(items.iter().all(Result::is_ok));
        // The body's end is read in the background after [DONE]; give it a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(upstream.requests().len(), 5);
    assert_eq!(
        upstream.connections(),
        1,
        "every call should reuse the pooled connection"
    );
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = HttpClient::with_settings(SETTINGS).unwrap();
    let provider =
        OpenAiProvider::new(client, &entry(&format!("http://{addr}/v1"), false)).unwrap();
    let error = provider.complete(request(false, None)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
    let Err(error) = provider.stream(request(true, None)).await else {
        panic!("expected an error");
    };
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
}

#[tokio::test]
async fn a_silent_upstream_times_out() {
    let timeouts = Timeouts {
        total: Duration::from_millis(300),
        ..TIMEOUTS
    };
    let upstream = Upstream::start(|sent| {
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        if body["stream"] == true {
            // The head comes at once, then the stream stalls after one chunk.
            Reply::sse("data: {\"id\":\"1\"}\n\ndata: {\"id\":\"2\"}\n\n").in_pieces(
                18,
                Duration::from_secs(30),
                End::Finish,
            )
        } else {
            Reply::json(200, fixture("chat_completion.json")).after(Duration::from_secs(30))
        }
    })
    .await;
    let provider = provider_timed(&upstream, timeouts);
    let started = tokio::time::Instant::now();
    let error = provider.complete(request(false, None)).await.unwrap_err();
    assert!(matches!(error, ProviderError::Timeout { after } if after == timeouts.total));
    assert!(started.elapsed() < Duration::from_secs(5));

    let started = tokio::time::Instant::now();
    let items = drain(provider.stream(request(true, None)).await.unwrap()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(items.last(), Some(Err(ProviderError::Timeout { .. }))),
        "{items:?}"
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out() {
    // A listener that never accepts still completes the TCP handshake (the
    // kernel does it), so this checks the head wait, not the TCP connect;
    // what it shows is that nothing waits beyond the total timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = HttpClient::with_settings(SETTINGS).unwrap();
    let entry = ModelEntry {
        timeouts: Timeouts {
            total: Duration::from_millis(300),
            ..TIMEOUTS
        },
        ..entry(&format!("http://{addr}/v1"), false)
    };
    let provider = OpenAiProvider::new(client, &entry).unwrap();
    let error = provider.complete(request(false, None)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error:?}");
    drop(listener);
}

/// Asserts `item` is a timeout after `expected`.
#[track_caller]
fn assert_timeout<T: std::fmt::Debug>(item: &Result<T, ProviderError>, expected: Duration) {
    match item {
        Err(ProviderError::Timeout { after }) => assert_eq!(*after, expected),
        other => panic!("expected a timeout after {expected:?}, got {other:?}"),
    }
}

const SHORT: Duration = Duration::from_millis(50);

#[tokio::test]
async fn a_late_head_is_a_first_byte_timeout() {
    let upstream = Upstream::start(|sent| {
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        if body["stream"] == true {
            Reply::sse("data: {\"id\":\"1\"}\n\ndata: [DONE]\n\n").after(Duration::from_secs(5))
        } else {
            Reply::json(200, fixture("chat_completion.json")).after(Duration::from_secs(5))
        }
    })
    .await;
    let provider = provider_timed(
        &upstream,
        Timeouts {
            first_byte: SHORT,
            ..TIMEOUTS
        },
    );
    // Both are errors of the call itself, so the engine can still fail over.
    let started = tokio::time::Instant::now();
    assert_timeout(&provider.complete(request(false, None)).await, SHORT);
    assert_timeout(&provider.stream(request(true, None)).await.map(drop), SHORT);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn first_byte_does_not_bound_the_body() {
    // The head at once, then events 30 ms apart: longer in all than the
    // first-byte timeout, never silent for longer than the idle one.
    let events: String = (0..6)
        .map(|i| format!("data: {{\"id\":\"{i}\"}}\n\n"))
        .chain(["data: [DONE]\n\n".to_owned()])
        .collect();
    let upstream = Upstream::start(move |_| {
        Reply::sse(events.clone()).in_pieces(18, Duration::from_millis(30), End::Finish)
    })
    .await;
    let provider = provider_timed(
        &upstream,
        Timeouts {
            first_byte: SHORT,
            idle: Duration::from_millis(500),
            ..TIMEOUTS
        },
    );
    let started = tokio::time::Instant::now();
    let items = drain(provider.stream(request(true, None)).await.unwrap()).await;
    assert!(started.elapsed() > SHORT);
    let ids: Vec<Value> = items
        .into_iter()
        .map(|item| item.unwrap()["id"].clone())
        .collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4", "5"]);
}

#[tokio::test]
async fn a_stalled_stream_is_an_idle_timeout_and_closes_the_upstream_request() {
    // One event, then nothing for 5 s.
    let upstream =
        Upstream::start(|_| {
            Reply::sse("data: {\"id\":\"1\"}\n\ndata: {\"id\":\"2\"}\n\ndata: [DONE]\n\n")
                .in_pieces(18, Duration::from_secs(5), End::Finish)
        })
        .await;
    let provider = provider_timed(
        &upstream,
        Timeouts {
            idle: SHORT,
            ..TIMEOUTS
        },
    );
    let started = tokio::time::Instant::now();
    let mut stream = provider.stream(request(true, None)).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.0["id"], "1");
    // The timeout comes once, as the last item; the stream is not dropped yet.
    assert_timeout(&stream.next().await.unwrap(), SHORT);
    assert!(stream.next().await.is_none());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        upstream.body_abandoned_within(Duration::from_secs(1)).await,
        "the upstream request stayed open after the idle timeout"
    );
    drop(stream);
}

#[tokio::test]
async fn silence_before_the_first_event_is_an_idle_timeout_too() {
    // The head and a comment at once, then silence: the stream's first item
    // is the timeout, which the engine's peek treats as a failed attempt.
    let upstream = Upstream::start(|_| {
        Reply::sse(": opened\n\ndata: {\"id\":\"1\"}\n\n").in_pieces(
            10,
            Duration::from_secs(5),
            End::Finish,
        )
    })
    .await;
    let provider = provider_timed(
        &upstream,
        Timeouts {
            idle: SHORT,
            ..TIMEOUTS
        },
    );
    let items = tokio::time::timeout(
        Duration::from_secs(1),
        drain(provider.stream(request(true, None)).await.unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_timeout(&items[0], SHORT);
}

#[tokio::test]
async fn keep_alive_comments_hold_off_the_idle_timeout_but_not_the_total() {
    // One event, then an SSE comment every 20 ms forever.
    let upstream = Upstream::start(|_| {
        Reply::sse("data: {\"id\":\"1\"}\n\n").in_pieces(1024, Duration::ZERO, End::KeepOpen)
    })
    .await;
    let total = Duration::from_millis(300);
    let provider = provider_timed(
        &upstream,
        Timeouts {
            idle: SHORT,
            total,
            ..TIMEOUTS
        },
    );
    let started = tokio::time::Instant::now();
    let items = drain(provider.stream(request(true, None)).await.unwrap()).await;
    assert!(started.elapsed() >= total);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap()["id"], "1");
    assert_timeout(&items[1], total);
}

#[tokio::test]
async fn a_slow_but_steady_stream_hits_the_total_timeout() {
    // An event every 20 ms for 2 s: never idle, but longer than allowed.
    let events: String = (0..100)
        .map(|i| format!("data: {{\"id\":\"{i:02}\"}}\n\n"))
        .collect();
    let upstream = Upstream::start(move |_| {
        Reply::sse(events.clone()).in_pieces(19, Duration::from_millis(20), End::Finish)
    })
    .await;
    let total = Duration::from_millis(200);
    let provider = provider_timed(
        &upstream,
        Timeouts {
            idle: Duration::from_millis(150),
            total,
            ..TIMEOUTS
        },
    );
    let started = tokio::time::Instant::now();
    let mut items = drain(provider.stream(request(true, None)).await.unwrap()).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_timeout(&items.pop().unwrap(), total);
    assert!(items.len() >= 3, "{items:?}");
    assert!(items.len() < 100, "{items:?}");
    assert!(items.iter().all(Result::is_ok));
    assert!(
        upstream.body_abandoned_within(Duration::from_secs(1)).await,
        "the upstream request stayed open after the total timeout"
    );
}

#[tokio::test]
async fn an_entrys_timeouts_beat_the_servers() {
    // The head comes after 500 ms: within the server's first-byte timeout,
    // beyond the entry's override.
    let upstream = Upstream::start(|_| {
        Reply::json(200, fixture("chat_completion.json")).after(Duration::from_millis(500))
    })
    .await;
    let base_url = upstream.url("/v1");
    let yaml = format!(
        "server:\n  first_byte_timeout: 10s\n  idle_timeout: 10s\n\
         models:\n  - name: quick\n    provider: openai\n    base_url: {base_url}\n    \
         first_byte_timeout: 50ms\n    enabled: true\n  \
         - name: patient\n    provider: openai\n    base_url: {base_url}\n    enabled: true\n"
    );
    let config =
        router_core::config::parse(std::path::Path::new("test.yaml"), &yaml, &|_| None).unwrap();
    let registry = Registry::builtin(HttpClient::new(&config.server).unwrap());
    let quick = registry.build(&config.models[0]).unwrap();
    let patient = registry.build(&config.models[1]).unwrap();

    let started = tokio::time::Instant::now();
    assert_timeout(&quick.complete(request(false, None)).await, SHORT);
    assert!(started.elapsed() < Duration::from_millis(400));
    // The other entry keeps the server's 10 s and gets its answer.
    assert!(patient.complete(request(false, None)).await.is_ok());
}

fn body_of(value: Value) -> ProviderRequest {
    ProviderRequest {
        body: object(value),
        api_key: Some(Secret::new("sk-test-123")),
    }
}

#[tokio::test]
async fn embeddings_and_text_completions_go_to_their_own_paths() {
    let upstream = Upstream::start(|sent| match sent.path_and_query.as_str() {
        "/v1/embeddings" => Reply::json(200, fixture("embeddings.json")),
        _ if sent.headers["accept"] == "text/event-stream" => {
            Reply::sse(fixture("text_completion_stream.sse"))
        }
        _ => Reply::json(200, fixture("text_completion.json")),
    })
    .await;
    let provider = provider(&upstream);

    let embed = json!({"model": "text-embedding-3-small", "input": ["a", "b"],
        "encoding_format": "base64", "unknown": {"kept": true}});
    let answer = provider
        .embed(body_of(embed.clone()))
        .await
        .unwrap()
        .into_object()
        .unwrap();
    let expected: Value = serde_json::from_slice(&fixture("embeddings.json")).unwrap();
    assert_eq!(Value::Object(answer), expected);

    let prompt = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"});
    let answer = provider
        .complete_text(body_of(prompt.clone()))
        .await
        .unwrap()
        .into_object()
        .unwrap();
    let expected: Value = serde_json::from_slice(&fixture("text_completion.json")).unwrap();
    assert_eq!(Value::Object(answer), expected);

    let chunks = drain(provider.stream_text(body_of(prompt.clone())).await.unwrap()).await;
    let chunks: Vec<Value> = chunks.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        chunks,
        expected_chunks(&fixture("text_completion_stream.sse"))
    );

    let requests = upstream.requests();
    let paths: Vec<&str> = requests
        .iter()
        .map(|sent| sent.path_and_query.as_str())
        .collect();
    assert_eq!(
        paths,
        ["/v1/embeddings", "/v1/completions", "/v1/completions"]
    );
    // The bodies go up as the engine made them: `encoding_format` and the
    // unknown field untouched.
    let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(sent, embed);
    assert_eq!(requests[0].headers["authorization"], "Bearer sk-test-123");
    assert_eq!(requests[2].headers["accept"], "text/event-stream");
}

#[tokio::test]
async fn a_direct_base_url_serves_chat_only() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_completion.json"))).await;
    let provider = provider_with(&upstream, "/custom/endpoint", true, SETTINGS);
    let body = || body_of(json!({"model": "m", "input": "x", "prompt": "x"}));
    for error in [
        provider.embed(body()).await.unwrap_err(),
        provider.complete_text(body()).await.unwrap_err(),
    ] {
        assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    }
    assert!(matches!(
        provider.stream_text(body()).await,
        Err(ProviderError::Unsupported { .. })
    ));
    assert!(upstream.requests().is_empty());
}
