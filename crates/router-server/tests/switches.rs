//! The feature switches end to end: `limits.ledger: false` (no SQLite file,
//! limits counted in memory only) and `server.metrics: false` (no `/metrics`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;

use std::path::PathBuf;
use std::time::Duration;

use process::{call, fresh_database, RouterProcess};
use serde_json::{json, Value};

/// rpm 2.
const MINUTE_KEY: &str = "sk-switches-minute";
/// rpd 1: a calendar counter, the kind the ledger would persist.
const DAY_KEY: &str = "sk-switches-day";

/// A database path whose folder does not exist yet.
fn database() -> PathBuf {
    fresh_database("switches")
}

fn config(server_extra: &str, limits_extra: &str, database: &std::path::Path) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n{server_extra}\
         limits:\n  database: {}\n  flush_interval: 20ms\n{limits_extra}\
         models:\n  - name: mock\n    provider: mock\n    enabled: true\n    visible: true\n\
         api_keys:\n  - id: 1\n    key: {MINUTE_KEY}\n    is_active: true\n    rpm: 2\n\
         \x20 - id: 2\n    key: {DAY_KEY}\n    is_active: true\n    rpd: 1\n",
        database.display()
    )
}

fn chat() -> String {
    json!({"model": "mock", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

async fn ask(router: &RouterProcess, key: &str) -> (u16, Value) {
    let answer = call(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(key),
        &chat(),
    )
    .await;
    (answer.status.as_u16(), answer.json())
}

fn stop(mut router: RouterProcess) {
    router.terminate();
    let status = router
        .wait(Duration::from_secs(20))
        .expect("router-server did not exit");
    assert!(status.success(), "{status:?}\n{}", router.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_ledger_no_file_is_opened_and_limits_still_hold() {
    let db = database();
    let folder = db.parent().unwrap().to_path_buf();
    let router = RouterProcess::start(&config("", "  ledger: false\n", &db));
    assert!(
        router.logs().contains("limits.ledger is false"),
        "{}",
        router.logs()
    );

    // Chat works.
    let (status, body) = ask(&router, MINUTE_KEY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "This is a mock response to: hi"
    );

    // rpm: 2 admits one more, then refuses.
    let (status, body) = ask(&router, MINUTE_KEY).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = ask(&router, MINUTE_KEY).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key rpm"),
        "{body}"
    );

    // rpd: 1, a day counter kept in memory, is enforced too.
    let (status, body) = ask(&router, DAY_KEY).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = ask(&router, DAY_KEY).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key rpd"),
        "{body}"
    );

    // `/v1/usage` still authenticates, then says there is no ledger.
    let usage = call("GET", &router.url("/v1/usage"), None, "").await;
    assert_eq!(usage.status, 401, "{}", usage.text());
    assert_eq!(usage.json()["error"]["code"], "missing_api_key");
    let usage = call("GET", &router.url("/v1/usage"), Some(DAY_KEY), "").await;
    assert_eq!(usage.status, 404, "{}", usage.text());
    let error = &usage.json()["error"];
    assert_eq!(error["code"], "ledger_disabled");
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], Value::Null);
    assert!(error["message"].is_string(), "{error}");

    // The metrics, the only usage sink left, still see every request.
    let metrics = call("GET", &router.url("/metrics"), None, "").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains("router_requests_total{model=\"mock\",outcome=\"ok\"} 3"),
        "{text}"
    );

    // Nothing was created, not even the folder, and shutdown has nothing to
    // flush: a clean exit.
    stop(router);
    assert!(!folder.exists(), "{} was created", folder.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_ledger_counters_start_from_zero_after_a_restart() {
    let db = database();
    let text = config("", "  ledger: false\n", &db);
    let router = RouterProcess::start(&text);
    assert_eq!(ask(&router, DAY_KEY).await.0, 200);
    assert_eq!(ask(&router, DAY_KEY).await.0, 429);
    stop(router);

    // With no file to restore from, the day starts over (as documented).
    let router = RouterProcess::start(&text);
    assert_eq!(ask(&router, DAY_KEY).await.0, 200);
    assert_eq!(ask(&router, DAY_KEY).await.0, 429);
    stop(router);
    assert!(!db.parent().unwrap().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_ledger_the_day_counter_survives_a_restart() {
    // The contrast to the test above: the same config with the default
    // `ledger: true` creates the file and restores the counter from it.
    let db = database();
    let text = config("", "", &db);
    let router = RouterProcess::start(&text);
    assert_eq!(ask(&router, DAY_KEY).await.0, 200);
    stop(router);
    assert!(db.exists());

    let router = RouterProcess::start(&text);
    assert_eq!(ask(&router, DAY_KEY).await.0, 429);
    stop(router);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_metrics_the_metrics_path_is_an_unknown_url() {
    let db = database();
    let router = RouterProcess::start(&config("  metrics: false\n", "", &db));

    let metrics = call("GET", &router.url("/metrics"), None, "").await;
    let unknown = call("GET", &router.url("/nothing-here"), None, "").await;
    assert_eq!(metrics.status, 404, "{}", metrics.text());
    assert_eq!(unknown.status, 404);
    assert_eq!(
        metrics.headers.get("content-type"),
        unknown.headers.get("content-type")
    );
    assert_eq!(
        metrics.json(),
        json!({"error": {
            "message": "Unknown request URL: GET /metrics",
            "type": "invalid_request_error",
            "param": null,
            "code": "unknown_url",
        }})
    );
    let mut expected = unknown.json();
    expected["error"]["message"] = json!("Unknown request URL: GET /metrics");
    assert_eq!(metrics.json(), expected);

    // Chat and the ledger work as before: the ledger is the only usage sink.
    let (status, body) = ask(&router, MINUTE_KEY).await;
    assert_eq!(status, 200, "{body}");
    // Rows are written every `flush_interval`: ask until this one is in.
    let mut requests = Value::Null;
    for _ in 0..200 {
        let usage = call("GET", &router.url("/v1/usage"), Some(MINUTE_KEY), "").await;
        assert_eq!(usage.status, 200, "{}", usage.text());
        requests = usage.json()["today"]["requests"].clone();
        if requests == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(requests, 1);
    stop(router);
    assert!(db.exists());
}
