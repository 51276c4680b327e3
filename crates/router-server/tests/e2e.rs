//! End to end: the real `router-server` binary, started on a config file,
//! proxying to an in-process OpenAI-compatible upstream on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;
#[path = "../../router-providers/tests/support/mod.rs"]
mod upstream;

use std::time::Duration;

use process::{call, next_frame, read_rest, run, send, write_config, RouterProcess};
use serde_json::{json, Value};
use upstream::{End, Recorded, Reply, Upstream};

const KEY: &str = "sk-e2e-client";

fn body_json(recorded: &Recorded) -> Value {
    serde_json::from_slice(&recorded.body).unwrap()
}

fn header<'a>(recorded: &'a Recorded, name: &str) -> Option<&'a str> {
    recorded.headers.get(name).map(|v| v.to_str().unwrap())
}

fn completion(content: &str) -> String {
    json!({"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "upstream-name",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
    .to_string()
}

/// An SSE body of `events` (JSON values), optionally closed by `[DONE]`.
fn sse(events: &[Value], done: bool) -> String {
    let mut out = String::new();
    for event in events {
        out.push_str(&format!("data: {event}\n\n"));
    }
    if done {
        out.push_str("data: [DONE]\n\n");
    }
    out
}

fn chunk(content: &str) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "upstream-name",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
}

fn usage_chunk() -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "upstream-name",
        "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
}

fn config(server_extra: &str, models: &str) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n{server_extra}\nmodels:\n{models}\napi_keys:\n  - id: 1\n    key: {KEY}\n    name: e2e\n    is_active: true\n"
    )
}

fn entry(name: &str, base_url: &str, keys: &[&str], extra: &str) -> String {
    let keys = keys
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "  - name: {name}\n    provider_model_name: upstream-name\n    base_url: {base_url}\n    is_openai_compatibility: true\n    provider_api_key: [{keys}]\n    enabled: true\n    visible: true\n{extra}"
    )
}

fn chat(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// Reads a whole SSE answer as text.
async fn read_stream(router: &RouterProcess, body: &str) -> (u16, String) {
    let answer = call("POST", &router.url("/v1/chat/completions"), Some(KEY), body).await;
    (answer.status.as_u16(), answer.text())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_config_loads_unchanged_and_proxies_to_an_openai_compatible_upstream() {
    let upstream = Upstream::start(|request| {
        let body = body_json(request);
        if body["stream"] == true {
            Reply::sse(sse(&[chunk("Hel"), chunk("lo"), usage_chunk()], true))
        } else {
            Reply::json(
                200,
                json!({"id": "x", "object": "chat.completion", "model": body["model"], "provider": "google",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "<thought>hmm</thought>Hi",
                        "extra_content": {"google": {"thought": true}}}, "finish_reason": "stop"}]})
                .to_string(),
            )
        }
    })
    .await;
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../router-core/tests/fixtures/config/seed-config.yaml"
    ))
    .unwrap();
    // Only where it listens and where the upstream is change.
    let config = seed.replace("port: \"8316\"", "port: \"0\"").replace(
        "https://generativelanguage.googleapis.com/v1beta/openai",
        &upstream.url("/v1beta/openai"),
    );
    assert_ne!(config, seed);
    let router = RouterProcess::start(&config);
    let seed_key = "sk-or-v1-...";

    let body = json!({"model": "gemini-2.5-pro", "reasoning_effort": "high",
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let answer = call(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(seed_key),
        &body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = answer.json();
    assert_eq!(answer["model"], "gemini-2.5-pro");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hi");
    assert_eq!(answer["choices"][0]["message"]["reasoning_content"], "hmm");
    assert!(answer.get("provider").is_none());

    let seen = upstream.requests();
    assert_eq!(seen[0].path_and_query, "/v1beta/openai/chat/completions");
    assert_eq!(
        header(&seen[0], "authorization"),
        Some("Bearer AIzaSy...S6cBqxM4")
    );
    let sent = body_json(&seen[0]);
    assert_eq!(sent["model"], "gemini-2.5-pro");
    assert_eq!(
        sent["extra_body"],
        json!({"google": {"thinking_config": {"thinking_budget": 24576, "include_thoughts": true}}})
    );
    assert!(sent.get("reasoning_effort").is_none());

    // The README's own example name resolves, and the next key is used.
    let body = chat("gemini-2.5-pro:free", false);
    let answer = call(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(seed_key),
        &body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["model"], "gemini-2.5-pro:free");
    assert_eq!(
        header(&upstream.requests()[1], "authorization"),
        Some("Bearer AIzaSy...J7amzb2w")
    );

    // Streamed: events renamed, usage requested and relayed, [DONE] last.
    let answer = call(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(seed_key),
        &chat("gemini-2.0-flash", true),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.headers["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let text = answer.text();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .collect();
    assert_eq!(events.len(), 4, "{text}");
    assert_eq!(events[3], "data: [DONE]");
    for event in &events[..3] {
        let value: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(value["model"], "gemini-2.0-flash");
    }
    assert!(events[2].contains("\"total_tokens\":8"));
    let sent = body_json(&upstream.requests()[2]);
    assert_eq!(sent["model"], "gemini-2.0-flash");
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        header(&upstream.requests()[2], "accept"),
        Some("text/event-stream")
    );

    // The listing is the seed's: visible and enabled only.
    let models = call("GET", &router.url("/v1/models"), None, "")
        .await
        .json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "gemini-2.5-flash-lite",
            "gemini-2.5-pro",
            "gemini-2.5-flash"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_entry_is_failed_over_and_leaves_no_trace_in_the_answer() {
    let upstream = Upstream::start(|_| Reply::json(200, completion("from the second"))).await;
    // Port 1 on loopback: nothing listens, the connection is refused.
    let models = entry("m", "http://127.0.0.1:1/v1", &["dead-key"], "")
        + &entry("m", &upstream.url("/v1"), &["live-key"], "");
    let router = RouterProcess::start(&config("", &models));
    let answer = call(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(KEY),
        &chat("m", false),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let value = answer.json();
    assert_eq!(value["choices"][0]["message"]["content"], "from the second");
    assert_eq!(value["model"], "m");
    assert_eq!(
        header(&upstream.requests()[0], "authorization"),
        Some("Bearer live-key")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_client_error_is_returned_with_its_status_and_never_raw() {
    let upstream = Upstream::start(|_| {
        Reply::json(
            400,
            json!({"error": {"message": "max_tokens is too large", "type": "invalid_request_error"},
                "account": "acct-secret-42"})
            .to_string(),
        )
    })
    .await;
    let models = entry("m", &upstream.url("/v1"), &["pk-alpha"], "")
        + &entry("m", &upstream.url("/v1"), &["pk-beta"], "");
    let router = RouterProcess::start(&config("", &models));
    let answer = call(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(KEY),
        &chat("m", false),
    )
    .await;
    assert_eq!(answer.status, 400);
    let text = answer.text();
    assert!(!text.contains("acct-secret-42"), "{text}");
    let error = &answer.json()["error"];
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens is too large"),
        "{error}"
    );
    assert_eq!(error["code"], "upstream_client_error");
    // The client's own mistake is not retried on the other entry.
    assert_eq!(upstream.requests().len(), 1);
    // Neither key ever reaches the logs.
    let logs = router.logs();
    for secret in ["pk-alpha", "pk-beta", KEY] {
        assert!(!logs.contains(secret), "{secret} in logs:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_get_their_own_status() {
    let upstream = Upstream::start(|request| {
        let model = body_json(request)["model"].as_str().unwrap().to_owned();
        match model.as_str() {
            "limited" => Reply::json(429, "{}").with_header("retry-after", "7"),
            _ => Reply::json(500, "{\"error\":{\"message\":\"internal\"}}"),
        }
    })
    .await;
    let limited = format!(
        "  - name: limited\n    base_url: {}\n    is_openai_compatibility: true\n    enabled: true\n",
        upstream.url("/v1")
    );
    let models = entry("one", &upstream.url("/v1"), &[], "")
        + &entry("two", &upstream.url("/v1"), &["a", "b"], "")
        + &entry("two", &upstream.url("/v1"), &[], "")
        + &limited;
    let router = RouterProcess::start(&config("", &models));
    let url = router.url("/v1/chat/completions");

    let answer = call("POST", &url, Some(KEY), &chat("one", false)).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "upstream_error");

    let answer = call("POST", &url, Some(KEY), &chat("two", false)).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    let error = answer.json()["error"].clone();
    assert_eq!(error["code"], "all_providers_failed");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("All providers failed"));

    let answer = call("POST", &url, Some(KEY), &chat("limited", false)).await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert_eq!(answer.headers["retry-after"], "7");
    // 1 + 3 + 1 attempts in all.
    assert_eq!(upstream.requests().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_breaks_midway_ends_with_an_error_event_and_no_done() {
    // The event goes out whole; the connection is cut 100 ms later, while the
    // padding comment after it is being written.
    let event = sse(&[chunk("partial ")], false);
    let piece = event.len();
    let body = event + ": padding\n\n";
    let upstream = Upstream::start(move |_| {
        Reply::sse(body.clone()).in_pieces(piece, Duration::from_millis(100), End::Abort)
    })
    .await;
    let router = RouterProcess::start(&config("", &entry("m", &upstream.url("/v1"), &[], "")));
    let (status, text) = read_stream(&router, &chat("m", true)).await;
    assert_eq!(status, 200);
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(events[0].contains("partial "));
    let error: Value = serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
    assert!(error["error"]["message"].is_string(), "{error}");
    assert!(!text.contains("data: [DONE]"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_without_done_is_not_a_success() {
    let upstream = Upstream::start(|_| Reply::sse(sse(&[chunk("all of it")], false))).await;
    let router = RouterProcess::start(&config("", &entry("m", &upstream.url("/v1"), &[], "")));
    let (status, text) = read_stream(&router, &chat("m", true)).await;
    assert_eq!(status, 200);
    assert!(text.contains("all of it"));
    assert!(text.contains("data: {\"error\""), "{text}");
    assert!(!text.contains("data: [DONE]"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_cancels_the_upstream_request() {
    let upstream = Upstream::start(|_| {
        Reply::sse(sse(&[chunk("first")], false)).in_pieces(1 << 20, Duration::ZERO, End::KeepOpen)
    })
    .await;
    let router = RouterProcess::start(&config("", &entry("m", &upstream.url("/v1"), &[], "")));
    let response = send(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(KEY),
        &chat("m", true),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = next_frame(&mut body, Duration::from_secs(5)).await.unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    drop(body);
    assert!(
        upstream.body_abandoned_within(Duration::from_secs(2)).await,
        "the upstream kept streaming after the client left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_upstream_gets_keepalive_comments() {
    let events = sse(&[chunk("a"), chunk("b")], true);
    let upstream = Upstream::start(move |_| {
        Reply::sse(events.clone()).in_pieces(
            events.find("data: {").map(|_| 40).unwrap(),
            Duration::from_millis(250),
            End::Finish,
        )
    })
    .await;
    let router = RouterProcess::start(&config(
        "  sse_keepalive: 50ms",
        &entry("m", &upstream.url("/v1"), &[], ""),
    ));
    let (status, text) = read_stream(&router, &chat("m", true)).await;
    assert_eq!(status, 200);
    assert!(text.contains(": keepalive\n\n"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_only_entries_answer_plain_requests_with_tool_calls() {
    let upstream = Upstream::start(|_| {
        Reply::sse(sse(
            &[
                json!({"id": "s", "created": 3, "model": "upstream-name", "choices": [{"index": 0, "delta": {"role": "assistant",
                    "tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":"}}]}}]}),
                json!({"id": "s", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"x\"}"}}]},
                    "finish_reason": "tool_calls"}]}),
                usage_chunk(),
            ],
            true,
        ))
    })
    .await;
    let router = RouterProcess::start(&config(
        "",
        &entry("m", &upstream.url("/v1"), &[], "    stream_only: true\n"),
    ));
    let answer = call(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(KEY),
        &chat("m", false),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let value = answer.json();
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(value["model"], "m");
    assert_eq!(
        value["choices"][0]["message"]["tool_calls"],
        json!([{"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}])
    );
    assert_eq!(value["usage"]["total_tokens"], 8);
    assert_eq!(body_json(&upstream.requests()[0])["stream"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_requests_all_succeed_and_spread_over_the_keys() {
    let upstream = Upstream::start(|request| {
        if body_json(request)["stream"] == true {
            Reply::sse(sse(&[chunk("ok"), usage_chunk()], true))
        } else {
            Reply::json(200, completion("ok"))
        }
    })
    .await;
    let router = RouterProcess::start(&config(
        "",
        &entry("m", &upstream.url("/v1"), &["k1", "k2"], ""),
    ));
    let url = router.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                call("POST", &url, Some(KEY), &chat("m", i % 2 == 0))
                    .await
                    .status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200, "{}", router.logs());
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 200);
    let k1 = seen
        .iter()
        .filter(|r| header(r, "authorization") == Some("Bearer k1"))
        .count();
    assert_eq!(k1, 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_an_open_stream_finish_then_exits_zero() {
    let events = sse(
        &[chunk("one"), chunk("two"), chunk("three"), chunk("four")],
        true,
    );
    let upstream = Upstream::start(move |_| {
        Reply::sse(events.clone()).in_pieces(64, Duration::from_millis(100), End::Finish)
    })
    .await;
    let mut router = RouterProcess::start(&config(
        "  shutdown_timeout: 10s",
        &entry("m", &upstream.url("/v1"), &[], ""),
    ));
    let response = send(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(KEY),
        &chat("m", true),
    )
    .await;
    let mut body = response.into_body();
    let mut text =
        String::from_utf8_lossy(&next_frame(&mut body, Duration::from_secs(5)).await.unwrap())
            .into_owned();
    router.terminate();
    text.push_str(&read_rest(&mut body, Duration::from_secs(5)).await);
    assert!(text.contains("four"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let status = router.wait(Duration::from_secs(10)).expect("did not exit");
    assert_eq!(status.code(), Some(0), "{}", router.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_what_outlives_the_timeout_with_an_error_event_and_exits_zero() {
    let upstream = Upstream::start(|_| {
        Reply::sse(sse(&[chunk("endless")], false)).in_pieces(
            1 << 20,
            Duration::ZERO,
            End::KeepOpen,
        )
    })
    .await;
    let mut router = RouterProcess::start(&config(
        "  shutdown_timeout: 300ms",
        &entry("m", &upstream.url("/v1"), &[], ""),
    ));
    let response = send(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(KEY),
        &chat("m", true),
    )
    .await;
    let mut body = response.into_body();
    let mut text =
        String::from_utf8_lossy(&next_frame(&mut body, Duration::from_secs(5)).await.unwrap())
            .into_owned();
    router.terminate();
    // The stream ends with one shutdown event, never [DONE], and closes.
    text.push_str(&read_rest(&mut body, Duration::from_secs(5)).await);
    assert!(
        text.ends_with(
            "data: {\"error\":{\"message\":\"the server is shutting down\",\
             \"type\":\"server_error\",\"param\":null,\"code\":\"server_shutdown\"}}\n\n"
        ),
        "{text}"
    );
    assert!(!text.contains("[DONE]"), "{text}");
    let status = router.wait(Duration::from_secs(10)).expect("did not exit");
    assert_eq!(status.code(), Some(0), "{}", router.logs());
}

#[test]
fn check_config_accepts_the_shipped_configs() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let (code, stdout, stderr) = run(
        &[
            "check-config",
            "--config",
            &format!("{root}/config/config.yaml"),
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");
    let (code, _, stderr) = run(
        &[
            "check-config",
            "--config",
            &format!("{root}/config/examples/gemini.yaml"),
        ],
        &[
            ("GEMINI_API_KEY", "test-value"),
            ("GEMINI_API_KEY_2", "test-value-2"),
            ("ROUTER_CLIENT_KEY", "sk-test-client"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn check_config_lists_every_problem_with_path_and_line() {
    let path = write_config(
        "server:\n  prot: 80\nmodels:\n  - name: m\n    base_url: not a url\n    is_openai_compatibility: true\n    enabled: true\n  - name: n\n    provider: nonesuch\n    enabled: true\napi_keys:\n  - key: ${ROUTER_E2E_UNSET_VARIABLE}\n",
    );
    let (code, _, stderr) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    let file = path.display().to_string();
    for needle in [
        format!("{file}:2: server.prot"),
        "did you mean `port`".to_owned(),
        format!("{file}:5: models[0].base_url"),
        "ROUTER_E2E_UNSET_VARIABLE".to_owned(),
        "api_keys[0].key".to_owned(),
    ] {
        assert!(
            stderr.contains(&needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
}

#[test]
fn unknown_providers_and_missing_files_are_config_errors() {
    let path = write_config(
        "models:\n  - name: n\n    provider: nonesuch\n    enabled: true\napi_keys: []\n",
    );
    let (code, _, stderr) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("models[0].provider: unknown provider `nonesuch` (known: "),
        "{stderr}"
    );

    let (code, _, stderr) = run(&["--config", "/nonexistent/router.yaml"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/router.yaml"), "{stderr}");
}

#[test]
fn the_config_path_can_come_from_the_environment() {
    let path = write_config("models: []\napi_keys: []\n");
    let (code, stdout, stderr) = run(
        &["check-config"],
        &[("ROUTER_CONFIG", path.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(path.to_str().unwrap()), "{stdout}");
}

/// With one thread (one CPU, or `TOKIO_WORKER_THREADS=1`) the router runs on
/// tokio's current-thread scheduler: chat, streams and a graceful shutdown
/// with a stream still open must work there just as on the multi-thread one.
#[tokio::test(flavor = "multi_thread")]
async fn one_worker_thread_serves_on_the_current_thread_scheduler() {
    let events = sse(&[chunk("one"), chunk("two"), usage_chunk()], true);
    let upstream = Upstream::start(move |request| {
        if body_json(request)["stream"] == true {
            Reply::sse(events.clone()).in_pieces(32, Duration::from_millis(20), End::Finish)
        } else {
            Reply::json(200, completion("ok"))
        }
    })
    .await;
    let mut router = RouterProcess::start_with_env(
        &config(
            "  shutdown_timeout: 10s",
            &entry("m", &upstream.url("/v1"), &[], ""),
        ),
        &[("TOKIO_WORKER_THREADS", "1"), ("RUST_LOG", "info")],
    );
    let url = router.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let answer = call("POST", &url, Some(KEY), &chat("m", i % 2 == 0)).await;
                (answer.status, answer.text())
            })
        })
        .collect();
    for (index, task) in tasks.into_iter().enumerate() {
        let (status, text) = task.await.unwrap();
        assert_eq!(status, 200, "{text}");
        if index % 2 == 0 {
            assert!(
                text.contains("\"one\"") && text.contains("\"two\""),
                "{text}"
            );
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            assert!(text.contains("\"ok\""), "{text}");
        }
    }
    let logs = router.logs();
    assert!(logs.contains("current-thread"), "{logs}");

    // A stream still open at shutdown ends whole, then the process exits 0.
    let response = send("POST", &url, Some(KEY), &chat("m", true)).await;
    let mut body = response.into_body();
    let mut text =
        String::from_utf8_lossy(&next_frame(&mut body, Duration::from_secs(5)).await.unwrap())
            .into_owned();
    router.terminate();
    text.push_str(&read_rest(&mut body, Duration::from_secs(10)).await);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let status = router.wait(Duration::from_secs(10)).expect("router exited");
    assert!(status.success(), "{status:?}\n{}", router.logs());
}

fn text_chunk(text: &str) -> Value {
    json!({"id": "cmpl-up", "object": "text_completion", "created": 1, "model": "upstream-name",
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": null}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_and_completions_fail_over_keep_limits_and_leave_their_books() {
    let upstream = Upstream::start(|request| {
        let body = body_json(request);
        match request.path_and_query.as_str() {
            "/v1/embeddings" => Reply::json(
                200,
                json!({"object": "list", "model": body["model"],
                    "data": [{"object": "embedding", "index": 0, "embedding": "AACAPw=="}],
                    "usage": {"prompt_tokens": 3, "total_tokens": 3}})
                .to_string(),
            ),
            "/v1/completions" if body["stream"] == true => {
                let usage = json!({"id": "cmpl-up", "object": "text_completion", "created": 1,
                    "model": "upstream-name", "choices": [],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
                Reply::sse(sse(&[text_chunk("Hel"), text_chunk("lo"), usage], true))
            }
            "/v1/completions" => Reply::json(
                200,
                json!({"id": "cmpl-up", "object": "text_completion", "created": 1,
                    "model": body["model"],
                    "choices": [{"index": 0, "text": "Hello", "logprobs": null, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
                .to_string(),
            ),
            _ => Reply::json(404, r#"{"error":{"message":"no such path"}}"#),
        }
    })
    .await;
    let flags = "    supports_embedding: true\n    supports_completion: true\n";
    // The first entry is unreachable: every request it is tried on fails over.
    let models = entry("m", "http://127.0.0.1:1/v1", &["dead-key"], flags)
        + &entry("m", &upstream.url("/v1"), &["live-key"], flags)
        + &entry("chat-only", &upstream.url("/v1"), &[], "");
    // 200 tokens a minute: room for small prompts, never for a 500-token answer.
    let config = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\nlimits:\n  flush_interval: 50ms\nmodels:\n{models}\napi_keys:\n  - id: 1\n    key: {KEY}\n    name: e2e\n    is_active: true\n    tpm: 200\n"
    );
    let router = RouterProcess::start(&config);
    let post = |path: &str, body: Value| {
        let url = router.url(path);
        async move { call("POST", &url, Some(KEY), &body.to_string()).await }
    };

    // Embeddings: the client's name back, encoding_format passed through.
    let body = json!({"model": "m", "input": ["hello", "world"], "encoding_format": "base64",
        "max_tokens": 500});
    for _ in 0..2 {
        let answer = post("/v1/embeddings", body.clone()).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let value = answer.json();
        assert_eq!(value["model"], "m");
        assert_eq!(value["data"][0]["embedding"], "AACAPw==");
        assert!(answer.headers.contains_key("x-ratelimit-remaining-tokens"));
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    let mut expected = body.clone();
    expected["model"] = json!("upstream-name");
    assert_eq!(body_json(&seen[0]), expected);
    assert_eq!(header(&seen[0], "authorization"), Some("Bearer live-key"));

    // Completions, whole and streamed.
    let answer = post(
        "/v1/completions",
        json!({"model": "m", "prompt": "Say", "max_tokens": 16}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["text"], "Hello");
    assert_eq!(answer.json()["model"], "m");
    let answer = post(
        "/v1/completions",
        json!({"model": "m", "prompt": "Say", "max_tokens": 16, "stream": true}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.text();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|event| !event.is_empty() && !event.starts_with(':'))
        .collect();
    assert_eq!(events.len(), 4, "{text}");
    assert_eq!(events[3], "data: [DONE]");
    for event in &events[..3] {
        let value: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(value["model"], "m");
    }
    let sent = body_json(upstream.requests().last().unwrap());
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));

    // A completion reserves its answer: 500 tokens never fit in 200.
    let answer = post(
        "/v1/completions",
        json!({"model": "m", "prompt": "Say", "max_tokens": 500}),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "request_too_large");
    // A model without the flag.
    let answer = post(
        "/v1/embeddings",
        json!({"model": "chat-only", "input": "x"}),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "model_not_supported");
    assert_eq!(upstream.requests().len(), 4);

    // The books: one ledger row per request, the upstream's usage to the token.
    let mut usage = Value::Null;
    for _ in 0..100 {
        usage = call("GET", &router.url("/v1/usage"), Some(KEY), "")
            .await
            .json();
        if usage["today"]["prompt_tokens"] == 3 + 3 + 5 + 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(usage["today"]["prompt_tokens"], 16, "{usage}");
    assert_eq!(usage["today"]["completion_tokens"], 5, "{usage}");
    let metrics = call("GET", &router.url("/metrics"), None, "").await.text();
    for line in [
        "router_requests_total{model=\"m\",outcome=\"ok\"} 4",
        "router_requests_total{model=\"m\",outcome=\"refused\"} 1",
        "router_requests_total{model=\"chat-only\",outcome=\"invalid\"} 1",
        "router_http_requests_total{route=\"embeddings\",status=\"200\"} 2",
        "router_http_requests_total{route=\"completions\",status=\"200\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}
