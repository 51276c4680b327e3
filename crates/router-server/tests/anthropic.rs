//! The Anthropic adapter end to end: the real binary, an `anthropic` entry,
//! and an in-process upstream that speaks Anthropic's Messages API (replaying
//! the recorded bodies of `router-providers/tests/fixtures/anthropic/`).
//! Clients speak OpenAI throughout; failover, keys taken out, limits and the
//! ledger work on Anthropic's answers as on OpenAI's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;
#[path = "../../router-providers/tests/support/mod.rs"]
mod upstream;

use std::path::Path;
use std::time::Duration;

use process::{call, fresh_database, RouterProcess};
use router_core::usage::{Outcome, UsageRecord, UsageSource};
use router_limits::store::SqliteStore;
use serde_json::{json, Value};
use time::OffsetDateTime;
use upstream::{vendor_fixture, Recorded, Reply, Upstream};

const KEY: &str = "sk-anthropic-e2e-client";

const INPUT_PRICE: f64 = 0.000003;
const CACHED_PRICE: f64 = 0.0000003;
const OUTPUT_PRICE: f64 = 0.000015;

fn fixture(name: &str) -> bytes::Bytes {
    vendor_fixture("anthropic", name)
}

fn header<'a>(recorded: &'a Recorded, name: &str) -> Option<&'a str> {
    recorded.headers.get(name).map(|v| v.to_str().unwrap())
}

fn config(database: &Path, models: &str) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\nlimits:\n  database: {}\n  flush_interval: 20ms\nretry:\n  backoff_base: 1ms\n  backoff_max: 2ms\nmodels:\n{models}api_keys:\n  - id: 1\n    key: {KEY}\n    name: client\n    is_active: true\n    rpm: 1000\n    tpm: 1000000\n",
        database.display()
    )
}

fn claude(name: &str, base_url: &str, keys: &[&str]) -> String {
    let keys = keys
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "  - name: {name}\n    provider: anthropic\n    provider_model_name: claude-sonnet-4-20250514\n    base_url: {base_url}\n    provider_api_key: [{keys}]\n    enabled: true\n    visible: true\n    max_tokens: 8192\n    tpm: 1000000\n    input_price_per_token: {INPUT_PRICE}\n    cached_input_price_per_token: {CACHED_PRICE}\n    output_price_per_token: {OUTPUT_PRICE}\n"
    )
}

fn weather_question(model: &str, stream: bool) -> String {
    json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Weather in Paris and Tokyo?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
    })
    .to_string()
}

/// The `data:` events of an SSE answer, `[DONE]` as a string.
fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| json!(data)))
        .collect()
}

async fn ledger_rows(database: &Path, expected: usize) -> Vec<UsageRecord> {
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

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_calling_conversation_streams_and_settles_on_anthropic_usage() {
    let upstream = Upstream::start(|request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        if body["stream"] == true {
            Reply::sse(fixture("parallel_tool_calls.sse"))
        } else {
            Reply::json(200, fixture("message_tool_use.json"))
        }
    })
    .await;
    let db = fresh_database("anthropic");
    let router = RouterProcess::start(&config(
        &db,
        &claude("claude", &upstream.url(""), &["ak-live"]),
    ));
    let url = router.url("/v1/chat/completions");

    // Streamed.
    let answer = call("POST", &url, Some(KEY), &weather_question("claude", true)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let events = events(&answer.text());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = &events[..events.len() - 1];
    assert!(chunks
        .iter()
        .all(|chunk| chunk["model"] == "claude" && chunk["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let calls: Vec<(u64, String)> = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["tool_calls"].get(0))
        .map(|call| {
            (
                call["index"].as_u64().unwrap(),
                call["function"]["arguments"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let arguments = |index| {
        calls
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, piece)| piece.as_str())
            .collect::<String>()
    };
    assert_eq!(arguments(0), "{\"location\": \"Paris\"}");
    assert_eq!(arguments(1), "{\"location\": \"Tokyo\"}");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 772);
    assert_eq!(usage["usage"]["completion_tokens"], 89);
    let streamed_cost = 772.0 * INPUT_PRICE + 89.0 * OUTPUT_PRICE;
    assert!(close(
        usage["usage"]["cost"].as_f64().unwrap(),
        streamed_cost
    ));

    // Not streamed.
    let answer = call("POST", &url, Some(KEY), &weather_question("claude", false)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = answer.json();
    assert_eq!(answer["model"], "claude");
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["tool_calls"][0]["id"],
        "toolu_01A09q90qw90lq917835lq9"
    );
    assert_eq!(
        choice["message"]["reasoning_content"],
        "I need the weather tool for this."
    );
    assert_eq!(
        answer["usage"]["prompt_tokens_details"]["cached_tokens"],
        3000
    );
    // Cache reads at the cached price, cache writes and the rest at the input price.
    let complete_cost = 1050.0 * INPUT_PRICE + 3000.0 * CACHED_PRICE + 75.0 * OUTPUT_PRICE;
    assert!(close(
        answer["usage"]["cost"].as_f64().unwrap(),
        complete_cost
    ));

    // Upstream: Anthropic's endpoint and headers, the provider key only.
    for sent in upstream.requests() {
        assert_eq!(sent.path_and_query, "/v1/messages");
        assert_eq!(header(&sent, "x-api-key"), Some("ak-live"));
        assert_eq!(header(&sent, "anthropic-version"), Some("2023-06-01"));
        assert_eq!(header(&sent, "authorization"), None);
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(body["model"], "claude-sonnet-4-20250514");
        assert!(body.get("stream_options").is_none(), "{body}");
    }

    // The ledger and /v1/usage hold Anthropic's counts.
    let rows = ledger_rows(&db, 2).await;
    assert_eq!(rows.len(), 2);
    let mut tokens: Vec<(u64, u64, u64)> = rows
        .iter()
        .map(|row| (row.tokens.prompt, row.tokens.completion, row.tokens.cached))
        .collect();
    tokens.sort_unstable();
    assert_eq!(tokens, [(772, 89, 0), (4050, 75, 3000)]);
    for row in &rows {
        assert_eq!(row.source, UsageSource::Upstream);
        assert_eq!(row.outcome, Outcome::Ok);
    }
    let total_cost: f64 = rows.iter().map(|row| row.cost_usd).sum();
    assert!(close(total_cost, streamed_cost + complete_cost));
    let usage = call("GET", &router.url("/v1/usage"), Some(KEY), "").await;
    assert_eq!(usage.status, 200, "{}", usage.text());
    let usage = usage.json();
    assert_eq!(usage["today"]["prompt_tokens"], 772 + 4050);
    assert_eq!(usage["today"]["completion_tokens"], 89 + 75);
}

#[tokio::test(flavor = "multi_thread")]
async fn overloaded_and_rate_limited_entries_fail_over() {
    // One upstream, told apart by key: what each "deployment" answers.
    let upstream = Upstream::start(|request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let stream = body["stream"] == true;
        match header(request, "x-api-key").unwrap() {
            "ak-429" => {
                Reply::json(429, fixture("error_429.json")).with_header("retry-after", "30")
            }
            "ak-529" => Reply::json(529, fixture("error_529.json")),
            "ak-error-event" => Reply::sse(fixture("error_first.sse")),
            _ if stream => Reply::sse(fixture("text.sse")),
            _ => Reply::json(200, fixture("message_text.json")),
        }
    })
    .await;
    let base = upstream.url("");
    let models = [
        claude("c429", &base, &["ak-429"]),
        claude("c429", &base, &["ak-ok"]),
        claude("c529", &base, &["ak-529"]),
        claude("c529", &base, &["ak-ok"]),
        claude("cevent", &base, &["ak-error-event"]),
        claude("cevent", &base, &["ak-ok"]),
    ]
    .concat();
    let router = RouterProcess::start(&config(&fresh_database("anthropic"), &models));
    let url = router.url("/v1/chat/completions");
    let question = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
    };
    for (model, stream) in [("c429", false), ("c529", true), ("cevent", true)] {
        let answer = call("POST", &url, Some(KEY), &question(model, stream)).await;
        assert_eq!(answer.status, 200, "{model}: {}", answer.text());
        let text = answer.text();
        if stream {
            assert!(
                text.contains("How can I help you today?"),
                "{model}: {text}"
            );
            assert!(text.ends_with("data: [DONE]\n\n"), "{model}: {text}");
            assert!(!text.contains("Overloaded"), "{model}: {text}");
        } else {
            assert_eq!(
                answer.json()["choices"][0]["message"]["content"],
                "Hi! My name is Claude."
            );
        }
    }
    let keys: Vec<String> = upstream
        .requests()
        .iter()
        .map(|sent| header(sent, "x-api-key").unwrap().to_owned())
        .collect();
    assert_eq!(
        keys,
        [
            "ak-429",
            "ak-ok",
            "ak-529",
            "ak-ok",
            "ak-error-event",
            "ak-ok"
        ]
    );

    // The rate-limited key rests for its Retry-After: the next request of
    // that name goes straight to the other entry.
    let answer = call("POST", &url, Some(KEY), &question("c429", false)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        header(upstream.requests().last().unwrap(), "x-api-key"),
        Some("ak-ok")
    );
    assert_eq!(upstream.requests().len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_key_is_taken_out_and_errors_stay_openai_shaped() {
    let upstream = Upstream::start(|request| match header(request, "x-api-key").unwrap() {
        "ak-revoked" => Reply::json(401, fixture("error_401.json")),
        _ => {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            if body["messages"][0]["content"][0]["text"] == "bad image" {
                Reply::json(400, fixture("error_400.json"))
            } else {
                Reply::json(200, fixture("message_text.json"))
            }
        }
    })
    .await;
    let router = RouterProcess::start(&config(
        &fresh_database("anthropic"),
        &claude("claude", &upstream.url(""), &["ak-revoked", "ak-good"]),
    ));
    let url = router.url("/v1/chat/completions");
    let question = |text: &str| {
        json!({"model": "claude", "messages": [{"role": "user", "content": text}]}).to_string()
    };
    for _ in 0..3 {
        let answer = call("POST", &url, Some(KEY), &question("hi")).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let keys: Vec<&str> = upstream
        .requests()
        .iter()
        .map(|sent| header(sent, "x-api-key").unwrap())
        .map(|key| {
            if key == "ak-revoked" {
                "revoked"
            } else {
                "good"
            }
        })
        .collect();
    assert_eq!(keys, ["revoked", "good", "good", "good"]);
    assert!(router.logs().contains("refused this provider key"));

    // The client's own mistake: a 400 in OpenAI's shape with Anthropic's
    // message, not retried.
    let answer = call("POST", &url, Some(KEY), &question("bad image")).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    let error = &answer.json()["error"];
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("media_type: Input should be"));
    assert!(error.get("type").is_some() && error.get("code").is_some());
    assert_eq!(upstream.requests().len(), 5);
}
