//! Limits and accounting end to end: the real binary, its SQLite file, and
//! an in-process upstream on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;
#[path = "../../router-providers/tests/support/mod.rs"]
mod upstream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use process::{burst, call, fresh_database, next_frame, send, upstream_model, RouterProcess};
use router_core::usage::{Outcome, UsageSource};
use router_limits::store::SqliteStore;
use serde_json::{json, Value};
use time::OffsetDateTime;
use upstream::{End, Reply, Upstream};

const KEY: &str = "sk-limits-client";
const ADMIN: &str = "sk-limits-admin";

/// A fresh database path in the temp dir.
fn database() -> PathBuf {
    fresh_database("limits")
}

fn config(database: &Path, key_limits: &str, models: &str) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\nlimits:\n  database: {}\n  flush_interval: 20ms\nmodels:\n{models}api_keys:\n  - id: 1\n    key: {KEY}\n    name: client\n    is_active: true\n{key_limits}  - id: 2\n    key: {ADMIN}\n    name: admin\n    is_active: true\n    admin: true\n",
        database.display()
    )
}

fn mock_model(extra: &str) -> String {
    format!("  - name: mock\n    provider: mock\n    enabled: true\n    visible: true\n{extra}")
}

fn chat(model: &str, stream: bool, max_tokens: u64) -> String {
    json!({"model": model, "stream": stream, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

fn completion(prompt: u64, completion: u64) -> String {
    json!({"id": "c", "object": "chat.completion", "created": 1, "model": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
    .to_string()
}

/// The rows the ledger holds, read from the file once the server wrote them.
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
async fn rpm_50_admits_exactly_50_of_200_concurrent_requests() {
    let db = database();
    let router = RouterProcess::start(&config(&db, "    rpm: 50\n", &mock_model("")));
    let answers = burst(
        &[router.url("/v1/chat/completions")],
        KEY,
        200,
        &chat("mock", false, 16),
    )
    .await;
    let ok = answers.iter().filter(|(status, ..)| *status == 200).count();
    assert_eq!(ok, 50);
    for (status, body, headers) in answers.iter().filter(|(status, ..)| *status != 200) {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("key rpm"),
            "{body}"
        );
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    // Every request, refused or not, is one ledger row.
    let rows = ledger_rows(&db, 200).await;
    assert_eq!(rows.len(), 200);
    assert_eq!(
        rows.iter()
            .filter(|r| r.outcome == Outcome::Refused)
            .count(),
        150
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tpm_admits_exactly_the_requests_whose_reservations_fit() {
    // The upstream holds every answer long enough that all 40 requests are
    // admitted or refused before any settles.
    let upstream =
        Upstream::start(|_| Reply::json(200, completion(8, 92)).after(Duration::from_millis(400)))
            .await;
    let db = database();
    let router = RouterProcess::start(&config(
        &db,
        "    tpm: 1000\n",
        &upstream_model(&upstream.url("/v1"), &[], ""),
    ));
    // "user" and "hi": a token each, + 6 of framing, + 92 reserved for output = 100.
    let answers = burst(
        &[router.url("/v1/chat/completions")],
        KEY,
        40,
        &chat("up", false, 92),
    )
    .await;
    assert_eq!(answers.iter().filter(|(s, ..)| *s == 200).count(), 10);
    assert_eq!(upstream.requests().len(), 10);
    let refused = answers.iter().find(|(s, ..)| *s == 429).unwrap();
    assert!(refused.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("key tpm"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_can_never_fit_is_a_400_not_a_429() {
    let db = database();
    let router = RouterProcess::start(&config(&db, "    tpm: 100\n", &mock_model("")));
    let answer = call(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(KEY),
        &chat("mock", false, 500),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "request_too_large");
    assert!(answer.headers.get("retry-after").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_day_stays_exhausted_across_a_restart() {
    let db = database();
    let text = config(&db, "    rpd: 3\n", &mock_model(""));
    let mut router = RouterProcess::start(&text);
    let url = router.url("/v1/chat/completions");
    for _ in 0..3 {
        let answer = call("POST", &url, Some(KEY), &chat("mock", false, 16)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let check_refused = |answer: &process::Answer| {
        assert_eq!(answer.status, 429, "{}", answer.text());
        assert_eq!(answer.json()["error"]["code"], "insufficient_quota");
        assert_eq!(answer.headers["x-should-retry"], "false");
        let retry: i64 = answer.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let midnight = (now.date() + time::Duration::days(1))
            .midnight()
            .assume_utc();
        let until_midnight = (midnight - now).whole_seconds();
        assert!(
            (until_midnight - 5..=until_midnight + 5).contains(&retry),
            "{retry} vs {until_midnight}"
        );
    };
    check_refused(&call("POST", &url, Some(KEY), &chat("mock", false, 16)).await);

    router.terminate();
    assert_eq!(
        router.wait(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    let router = RouterProcess::start(&text);
    check_refused(
        &call(
            "POST",
            &router.url("/v1/chat/completions"),
            Some(KEY),
            &chat("mock", false, 16),
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn model_limits_hold_per_provider_key_and_route_around_a_full_one() {
    let upstream = Upstream::start(|_| Reply::json(200, completion(3, 4))).await;
    let db = database();
    let router = RouterProcess::start(&config(
        &db,
        "",
        &upstream_model(&upstream.url("/v1"), &["pk-a", "pk-b"], "    rpm: 1\n"),
    ));
    let url = router.url("/v1/chat/completions");
    for _ in 0..2 {
        let answer = call("POST", &url, Some(KEY), &chat("up", false, 16)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let keys: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["Bearer pk-a", "Bearer pk-b"]);
    let answer = call("POST", &url, Some(KEY), &chat("up", false, 16)).await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert!(answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("model rpm"));
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_and_usage_endpoint_agree_with_the_upstream_to_the_token() {
    let upstream = Upstream::start(|_| Reply::json(200, completion(123, 45))).await;
    let db = database();
    let router = RouterProcess::start(&config(
        &db,
        "    rpm: 100\n    tpm: 100000\n",
        &upstream_model(&upstream.url("/v1"), &[], ""),
    ));
    let url = router.url("/v1/chat/completions");
    for _ in 0..2 {
        let answer = call("POST", &url, Some(KEY), &chat("up", false, 16)).await;
        assert_eq!(answer.status, 200);
        let cost = answer.json()["usage"]["cost"].as_f64().unwrap();
        assert!(
            (cost - (123.0 * 0.001 + 45.0 * 0.002)).abs() < 1e-9,
            "{cost}"
        );
        assert!(answer
            .headers
            .contains_key("x-ratelimit-remaining-requests"));
        assert!(answer.headers.contains_key("x-ratelimit-remaining-tokens"));
        assert!(answer.headers.contains_key("x-request-id"));
    }
    let rows = ledger_rows(&db, 2).await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!((row.tokens.prompt, row.tokens.completion), (123, 45));
        assert_eq!(row.source, UsageSource::Upstream);
        assert_eq!(row.key_id, 1);
    }
    let usage = call("GET", &router.url("/v1/usage"), Some(KEY), "").await;
    assert_eq!(usage.status, 200, "{}", usage.text());
    let usage = usage.json();
    assert_eq!(usage["today"]["requests"], 2);
    assert_eq!(usage["today"]["prompt_tokens"], 246);
    assert_eq!(usage["today"]["completion_tokens"], 90);
    assert_eq!(usage["month"]["total_tokens"], 336);
    let limits: Vec<&str> = usage["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["limit"].as_str().unwrap())
        .collect();
    assert!(
        limits.contains(&"key rpm") && limits.contains(&"key tpm"),
        "{limits:?}"
    );

    // A key may name itself; another key's usage is the admin's to read.
    let own = call("GET", &router.url("/v1/usage?key_id=1"), Some(KEY), "").await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(own.json()["today"]["requests"], 2);
    let forbidden = call("GET", &router.url("/v1/usage?key_id=2"), Some(KEY), "").await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.text());
    let by_key = call(
        "GET",
        &router.url("/v1/usage?all=true&group_by=key"),
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(by_key.status, 200, "{}", by_key.text());
    assert_eq!(by_key.json()["data"][0]["requests"], 2);

    // The same figures reach the metrics, and no key ever does.
    let metrics = call("GET", &router.url("/metrics"), None, "").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains("router_requests_total{model=\"up\",outcome=\"ok\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("router_tokens_total{model=\"up\",kind=\"prompt\"} 246"),
        "{text}"
    );
    assert!(!text.contains(KEY) && !text.contains(ADMIN));
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_finished_and_abandoned_each_leave_one_exact_row() {
    let finished = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        json!({"id": "s", "choices": [{"index": 0, "delta": {"content": "hello there"}}]}),
        json!({"id": "s", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}),
    );
    let endless = format!(
        "data: {}\n\n",
        json!({"id": "s", "choices": [{"index": 0, "delta": {"content": "abcdefgh"}}]})
    );
    let upstream = Upstream::start(move |request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        if body["messages"][0]["content"] == "forever" {
            Reply::sse(endless.clone()).in_pieces(1 << 20, Duration::ZERO, End::KeepOpen)
        } else {
            Reply::sse(finished.clone())
        }
    })
    .await;
    let db = database();
    let router = RouterProcess::start(&config(
        &db,
        "",
        &upstream_model(&upstream.url("/v1"), &[], ""),
    ));
    let url = router.url("/v1/chat/completions");

    let answer = call("POST", &url, Some(KEY), &chat("up", true, 16)).await;
    assert!(answer.text().ends_with("data: [DONE]\n\n"));
    let body = json!({"model": "up", "stream": true, "messages": [{"role": "user", "content": "forever"}]});
    let response = send("POST", &url, Some(KEY), &body.to_string()).await;
    let mut stream = response.into_body();
    next_frame(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    drop(stream);

    let rows = ledger_rows(&db, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let done = rows.iter().find(|r| r.outcome == Outcome::Ok).unwrap();
    assert_eq!((done.tokens.prompt, done.tokens.completion), (11, 2));
    assert_eq!(done.source, UsageSource::Upstream);
    let gone = rows
        .iter()
        .find(|r| r.outcome == Outcome::ClientGone)
        .unwrap();
    assert_eq!(gone.source, UsageSource::Estimated);
    // "abcdefgh" relayed: 2 tokens; "user" 1 and "forever" 2, + 6 of framing.
    assert_eq!((gone.tokens.prompt, gone.tokens.completion), (9, 2));
    // A little later, still exactly two rows: nothing is recorded twice.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ledger_rows(&db, 2).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_budget_refuses_with_insufficient_quota() {
    // Each answer really costs 8 × 0.001 + 92 × 0.002 = $0.192, more than the
    // $0.028 reserved for it: the budget is charged what was spent.
    let upstream = Upstream::start(|_| Reply::json(200, completion(8, 92))).await;
    let db = database();
    let router = RouterProcess::start(&config(
        &db,
        "    max_budget_usd: 0.1\n    budget_period: day\n",
        &upstream_model(&upstream.url("/v1"), &[], ""),
    ));
    let url = router.url("/v1/chat/completions");
    let first = call("POST", &url, Some(KEY), &chat("up", false, 10)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = call("POST", &url, Some(KEY), &chat("up", false, 10)).await;
    assert_eq!(second.status, 429, "{}", second.text());
    let error = second.json()["error"].clone();
    assert_eq!(error["code"], "insufficient_quota");
    assert!(
        error["message"].as_str().unwrap().contains("budget"),
        "{error}"
    );
    assert_eq!(second.headers["x-should-retry"], "false");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_by_shutdown_is_still_recorded_once() {
    let endless = format!(
        "data: {}\n\n",
        json!({"id": "s", "choices": [{"index": 0, "delta": {"content": "abcdefgh"}}]})
    );
    let upstream = Upstream::start(move |_| {
        Reply::sse(endless.clone()).in_pieces(1 << 20, Duration::ZERO, End::KeepOpen)
    })
    .await;
    let db = database();
    let text = config(&db, "", &upstream_model(&upstream.url("/v1"), &[], ""))
        .replace("  port: 0\n", "  port: 0\n  shutdown_timeout: 200ms\n");
    let mut router = RouterProcess::start(&text);
    let response = send(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(KEY),
        &chat("up", true, 16),
    )
    .await;
    let mut stream = response.into_body();
    next_frame(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    router.terminate();
    // Ended with the shutdown event after the timeout: still a clean exit,
    // and the row is on disk already.
    assert_eq!(
        router.wait(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    let store = SqliteStore::open(&db, Duration::from_millis(20)).unwrap();
    let rows = store
        .read_records(
            OffsetDateTime::UNIX_EPOCH,
            OffsetDateTime::now_utc() + time::Duration::days(1),
        )
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].outcome, Outcome::ClientGone);
    assert_eq!(rows[0].tokens.completion, 2);
}
