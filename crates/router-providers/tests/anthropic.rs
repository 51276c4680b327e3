//! The Anthropic adapter against an in-process upstream replaying recorded
//! Anthropic bodies: what goes up (path, headers, the translated body) and,
//! golden, exactly which OpenAI chunks each recorded stream becomes.
//!
//! Each `tests/fixtures/anthropic/<name>.sse` has a `<name>.expected.json`
//! beside it: the stream's items in order, chunks as OpenAI JSON (`created`
//! set to 0, since Anthropic streams carry no timestamp and the adapter uses
//! the clock) and an error as `{"error": <message>, "kind": <ErrorKind>}`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use router_core::config::{ModelEntry, Timeouts};
use router_core::provider::{ChunkStream, ErrorKind, JsonObject};
use router_core::usage::Tokens;
use router_core::{Provider, ProviderError, ProviderRequest, Secret};
use router_providers::{AnthropicProvider, HttpClient, Registry, UpstreamSettings};
use serde_json::{json, Value};
use support::{vendor_fixture, End, Reply, Upstream};

const SETTINGS: UpstreamSettings = UpstreamSettings {
    connect_timeout: Duration::from_secs(2),
    max_sse_event_bytes: 8 * 1024 * 1024,
};

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    first_byte: Duration::from_secs(10),
    idle: Duration::from_secs(10),
    total: Duration::from_secs(10),
};

fn fixture(name: &str) -> bytes::Bytes {
    vendor_fixture("anthropic", name)
}

fn entry(base_url: &str) -> ModelEntry {
    ModelEntry {
        provider_model_name: "claude-sonnet-4-20250514".to_owned(),
        base_url: Some(url::Url::parse(base_url).unwrap()),
        timeouts: TIMEOUTS,
        ..ModelEntry::new("claude", "anthropic")
    }
}

fn provider(upstream: &Upstream) -> AnthropicProvider {
    let client = HttpClient::with_settings(SETTINGS).unwrap();
    AnthropicProvider::new(client, &entry(&upstream.url(""))).unwrap()
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        other => panic!("not an object: {other}"),
    }
}

/// A tool-calling conversation as the engine hands it over for a stream.
fn conversation(stream: bool) -> JsonObject {
    let mut body = json!({
        "model": "claude-sonnet-4-20250514",
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_A", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                {"id": "toolu_B", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Tokyo\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_A", "content": "18°C"},
            {"role": "tool", "tool_call_id": "toolu_B", "content": [{"type": "text", "text": "24°C"}]},
            {"role": "user", "content": "Thanks! Which is warmer?"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "The weather of a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
        }}],
        "tool_choice": "auto",
        "temperature": 0.5,
        "stop": ["\n\nHuman:"],
        "max_completion_tokens": 300,
        "logit_bias": {"42": 1},
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    object(body)
}

fn request(body: JsonObject, key: Option<&str>) -> ProviderRequest {
    ProviderRequest {
        body,
        api_key: key.map(Secret::new),
    }
}

/// The stream's items as the `.expected.json` files write them.
async fn drain(stream: ChunkStream) -> Vec<Value> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    stream
        .map(|item| match item {
            Ok(chunk) => {
                let mut chunk = Value::Object(chunk.0);
                let created = chunk["created"].as_u64().unwrap();
                assert!(created.abs_diff(now) < 60, "created {created}, now {now}");
                chunk["created"] = json!(0);
                chunk
            }
            Err(error) => {
                json!({"error": error.to_string(), "kind": format!("{:?}", error.kind())})
            }
        })
        .collect()
        .await
}

/// The golden check: `<name>.sse`, served in small pieces so events straddle
/// reads, becomes exactly `<name>.expected.json`.
async fn check_transcript(name: &str) {
    let sse = fixture(&format!("{name}.sse"));
    let upstream = Upstream::start(move |_| {
        Reply::sse(sse.clone()).in_pieces(97, Duration::ZERO, End::Finish)
    })
    .await;
    let items = match provider(&upstream)
        .stream(request(conversation(true), Some("sk-ant-test")))
        .await
    {
        Ok(stream) => drain(stream).await,
        Err(error) => panic!("{name}: the stream did not open: {error}"),
    };
    let expected: Vec<Value> =
        serde_json::from_slice(&fixture(&format!("{name}.expected.json"))).unwrap();
    for (index, (got, want)) in items.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "{name}: item {index} differs");
    }
    assert_eq!(
        items.len(),
        expected.len(),
        "{name}: {} items, expected {}: {items:#?}",
        items.len(),
        expected.len()
    );
}

#[tokio::test]
async fn plain_text_transcript() {
    check_transcript("text").await;
}

#[tokio::test]
async fn parallel_tool_calls_keep_their_own_index() {
    check_transcript("parallel_tool_calls").await;
}

#[tokio::test]
async fn tool_calls_alone_start_like_openais() {
    // The first chunk carries the role and the first call, no content.
    check_transcript("tool_calls_only").await;
}

#[tokio::test]
async fn thinking_then_a_tool_call() {
    check_transcript("thinking_tool_call").await;
}

#[tokio::test]
async fn pings_between_deltas_give_no_chunk() {
    check_transcript("ping").await;
}

#[tokio::test]
async fn an_error_event_mid_stream_is_the_streams_one_error() {
    check_transcript("error_mid_stream").await;
}

#[tokio::test]
async fn an_error_event_before_any_content_comes_before_any_chunk() {
    // Nothing was relayed, so the engine may still fail over.
    check_transcript("error_first").await;
}

#[tokio::test]
async fn usage_chunks_settle_like_openai_ones() {
    // What the books read from the translated usage chunk.
    let usage = |name: &str| {
        let expected: Vec<Value> =
            serde_json::from_slice(&fixture(&format!("{name}.expected.json"))).unwrap();
        Tokens::from_usage(&expected.last().unwrap()["usage"]).unwrap()
    };
    assert_eq!(
        usage("text"),
        Tokens {
            prompt: 2060,
            completion: 12,
            cached: 2048,
            reasoning: 0
        }
    );
    // Cache writes count as prompt tokens, priced as input.
    assert_eq!(
        usage("parallel_tool_calls"),
        Tokens {
            prompt: 772,
            completion: 89,
            cached: 0,
            reasoning: 0
        }
    );
}

#[tokio::test]
async fn a_cut_stream_is_truncated() {
    let sse = fixture("text.sse");
    let cut = sse.slice(..sse.len() / 2);
    let upstream = Upstream::start(move |_| Reply::sse(cut.clone())).await;
    let items = drain(
        provider(&upstream)
            .stream(request(conversation(true), None))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        items.last().unwrap(),
        &json!({"error": "the upstream stream ended early: the upstream closed the stream without message_stop",
            "kind": "Truncated"})
    );
}

#[tokio::test]
async fn the_request_is_translated_with_anthropic_headers_only() {
    let upstream = Upstream::start(|_| Reply::sse(fixture("parallel_tool_calls.sse"))).await;
    let stream = provider(&upstream)
        .stream(request(conversation(true), Some("sk-ant-api03-key")))
        .await
        .unwrap();
    drain(stream).await;

    let sent = &upstream.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path_and_query, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], "sk-ant-api03-key");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.headers["accept"], "text/event-stream");
    let mut names: Vec<&str> = sent.headers.keys().map(|name| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "anthropic-version",
            "content-length",
            "content-type",
            "host",
            "user-agent",
            "x-api-key"
        ]
    );
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 300,
            "system": "You are a weather bot.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Tokyo?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "toolu_B", "name": "get_weather", "input": {"location": "Tokyo"}},
                ]},
                // Both results and the next question in one user turn.
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_A", "content": "18°C"},
                    {"type": "tool_result", "tool_use_id": "toolu_B", "content": [{"type": "text", "text": "24°C"}]},
                    {"type": "text", "text": "Thanks! Which is warmer?"},
                ]},
            ],
            "tools": [{"name": "get_weather", "description": "The weather of a city",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}],
            "tool_choice": {"type": "auto"},
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 0.5,
            "stream": true,
        })
    );
}

#[tokio::test]
async fn no_key_means_no_x_api_key() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("message_text.json"))).await;
    provider(&upstream)
        .complete(request(conversation(false), None))
        .await
        .unwrap();
    let sent = &upstream.requests()[0];
    assert!(sent.headers.get("x-api-key").is_none());
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(sent.headers["accept"], "application/json");
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert!(body.get("stream").is_none(), "{body}");
}

#[tokio::test]
async fn a_message_with_thinking_and_a_tool_call_becomes_a_completion() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("message_tool_use.json"))).await;
    let answer = provider(&upstream)
        .complete(request(conversation(false), Some("k")))
        .await
        .unwrap()
        .into_object()
        .unwrap();
    let mut answer = Value::Object(answer);
    assert!(answer["created"].as_u64().unwrap() > 1_700_000_000);
    answer["created"] = json!(0);
    assert_eq!(
        answer,
        json!({
            "id": "msg_01Aq9w938a90dw8q",
            "object": "chat.completion",
            "created": 0,
            "model": "claude-sonnet-4-20250514",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "I'll look that up.",
                    "reasoning_content": "I need the weather tool for this.",
                    "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"}}],
                    "refusal": null,
                },
                "logprobs": null,
                "finish_reason": "tool_calls",
            }],
            "usage": {"prompt_tokens": 4050, "completion_tokens": 75, "total_tokens": 4125,
                "prompt_tokens_details": {"cached_tokens": 3000, "cache_creation_tokens": 1000}},
        })
    );
}

#[tokio::test]
async fn max_tokens_stops_with_length_and_null_cache_counts_are_zero() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("message_text.json"))).await;
    let answer = provider(&upstream)
        .complete(request(conversation(false), Some("k")))
        .await
        .unwrap()
        .into_object()
        .unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Hi! My name is Claude."
    );
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598,
            "prompt_tokens_details": {"cached_tokens": 0, "cache_creation_tokens": 0}})
    );
}

#[tokio::test]
async fn error_statuses_are_classified_with_a_safe_message() {
    let upstream = Upstream::start(|sent| {
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        match body["messages"][0]["content"][0]["text"].as_str().unwrap() {
            "400" => Reply::json(400, fixture("error_400.json")),
            "401" => Reply::json(401, fixture("error_401.json")),
            "403" => Reply::json(
                403,
                r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#,
            ),
            "429" => Reply::json(429, fixture("error_429.json")).with_header("retry-after", "17"),
            "529" => Reply::json(529, fixture("error_529.json")),
            _ => Reply::json(500, "<html>oops</html>"),
        }
    })
    .await;
    let provider = provider(&upstream);
    let ask = |status: &str| {
        object(json!({"model": "m", "messages": [{"role": "user", "content": status}]}))
    };
    let mut outcomes = Vec::new();
    for status in ["400", "401", "403", "429", "529", "500"] {
        let complete = provider
            .complete(request(ask(status), Some("k")))
            .await
            .unwrap_err();
        let stream = match provider.stream(request(ask(status), Some("k"))).await {
            Err(error) => error,
            Ok(_) => panic!("{status}: a stream opened"),
        };
        assert_eq!(complete.to_string(), stream.to_string());
        outcomes.push(complete);
    }
    let kinds: Vec<ErrorKind> = outcomes.iter().map(ProviderError::kind).collect();
    assert_eq!(
        kinds,
        [
            ErrorKind::ClientError,
            ErrorKind::KeyRejected,
            ErrorKind::KeyRejected,
            ErrorKind::RateLimited,
            ErrorKind::ServerError,
            ErrorKind::ServerError,
        ]
    );
    assert!(!outcomes[0].is_retryable());
    assert!(outcomes[3..].iter().all(ProviderError::is_retryable));
    assert_eq!(
        outcomes[0].to_string(),
        "the upstream answered 400: messages.0.content.0.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
    );
    assert_eq!(
        outcomes[1].to_string(),
        "the upstream answered 401: invalid x-api-key"
    );
    match &outcomes[3] {
        ProviderError::Status { retry_after, .. } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(17)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        outcomes[4].to_string(),
        "the upstream answered 529: Overloaded"
    );
    // Not JSON: the status alone, never the body.
    assert_eq!(
        outcomes[5].to_string(),
        "the upstream answered 500: upstream returned status 500"
    );
}

#[tokio::test]
async fn an_untranslatable_request_is_refused_before_anything_is_sent() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("message_text.json"))).await;
    let body = object(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}));
    let error = provider(&upstream)
        .complete(request(body, Some("k")))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ClientError);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn the_registry_builds_anthropic_entries() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("message_text.json"))).await;
    let registry = Registry::builtin(HttpClient::with_settings(SETTINGS).unwrap());
    let provider = registry.build(&entry(&upstream.url("/"))).unwrap();
    provider
        .complete(request(conversation(false), Some("k")))
        .await
        .unwrap();
    assert_eq!(upstream.requests()[0].path_and_query, "/v1/messages");
}
