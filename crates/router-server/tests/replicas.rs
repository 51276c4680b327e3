//! Several replicas of the real binary sharing one real redis-server and one
//! real PostgreSQL: one limit, not one per replica, one view of each
//! provider key's health, and one ledger. Both engines are started by the
//! engines harness (never mocked); a missing one fails the test with the
//! package to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../router-limits/tests/engines/mod.rs"]
mod engines;
#[path = "support/process.rs"]
mod process;
#[path = "../../router-providers/tests/support/mod.rs"]
mod upstream;

use std::time::{Duration, Instant};

use engines::{PostgresServer, RedisServer};
use process::{call, fresh_database, upstream_model, RouterProcess};
use serde_json::{json, Value};
use upstream::{Reply, Upstream};

const KEY: &str = "sk-replicas-client";

/// Where each replica's own SQLite file goes in a config (see [`replica`]).
const DATABASE: &str = "@DATABASE@";

/// The replicas' config: the shared Redis; [`replica`] gives each its own
/// SQLite file.
fn config(redis: &RedisServer, redis_extra: &str, key_limits: &str, models: &str) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\nlimits:\n  database: {DATABASE}\n  flush_interval: 20ms\n  backend: redis\n  redis:\n    url: {}\n    key_prefix: \"test:\"\n    command_timeout: 200ms\n{redis_extra}models:\n{models}api_keys:\n  - id: 1\n    key: {KEY}\n    name: client\n    is_active: true\n{key_limits}",
        redis.url(),
    )
}

/// One replica's config: `text` with a SQLite file of its own.
fn replica(text: &str) -> String {
    text.replace(DATABASE, &fresh_database("replicas").display().to_string())
}

fn mock_model() -> String {
    "  - name: mock\n    provider: mock\n    enabled: true\n    visible: true\n".to_owned()
}

fn chat(model: &str, max_tokens: u64) -> String {
    json!({"model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

/// An answer whose usage is exactly what the router reserves for
/// `chat("up", 92)`: "user" and "hi" are a token each, plus 6 of framing,
/// plus 92 for the output. Settling it changes nothing, so the counts below
/// do not depend on when settlements reach Redis.
fn exact_completion() -> String {
    json!({"id": "c", "object": "chat.completion", "created": 1, "model": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 92, "total_tokens": 100}})
    .to_string()
}

fn replicas(count: usize, text: &str) -> Vec<RouterProcess> {
    (0..count)
        .map(|_| RouterProcess::start(&replica(text)))
        .collect()
}

/// Fires `count` requests at once, spread round robin over `replicas`.
async fn burst(
    replicas: &[RouterProcess],
    count: usize,
    body: &str,
) -> Vec<(u16, Value, http::HeaderMap)> {
    let urls: Vec<String> = replicas
        .iter()
        .map(|router| router.url("/v1/chat/completions"))
        .collect();
    process::burst(&urls, KEY, count, body).await
}

/// An `rpm` limit of `limit` admits the whole limit at once, then one more
/// each `60 s / limit`: of a burst that lasted `elapsed`, at least `limit`
/// and at most one more per interval that passed. A burst as fast as a
/// test's normally is (under 1.2 s for 50) must admit exactly `limit`.
fn assert_within_allowance(admitted: usize, limit: u64, elapsed: Duration) {
    let interval = 60_000 / limit;
    let refills = u64::try_from(elapsed.as_millis()).unwrap() / interval;
    let (least, most) = (limit as usize, (limit + refills) as usize);
    assert!(
        (least..=most).contains(&admitted),
        "{admitted} admitted by rpm {limit} in {elapsed:?}: expected {least}..={most}"
    );
}

fn admitted(answers: &[(u16, Value, http::HeaderMap)]) -> usize {
    answers.iter().filter(|(status, ..)| *status == 200).count()
}

/// Every answer that is not a 200 is a 429 refusal by `limit` with the
/// headers a client needs to back off.
fn assert_refusals(answers: &[(u16, Value, http::HeaderMap)], limit: &str, code: &str) {
    for (status, body, headers) in answers.iter().filter(|(status, ..)| *status != 200) {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(limit),
            "{body}"
        );
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry >= 1, "{retry}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_hold_one_rpm_limit() {
    let redis = RedisServer::start();
    let routers = replicas(3, &config(&redis, "", "    rpm: 50\n", &mock_model()));
    let started = Instant::now();
    let answers = burst(&routers, 300, &chat("mock", 16)).await;
    // 50 at once; exactly 50 when the burst takes less than the 1.2 s after
    // which GCRA hands out the next request (a loaded machine may take
    // longer, and then each 1.2 s allows exactly one more).
    assert_within_allowance(admitted(&answers), 50, started.elapsed());
    assert_eq!(answers.len(), 300);
    assert_refusals(&answers, "key rpm", "rate_limit_exceeded");
    let refused = answers.iter().find(|(status, ..)| *status == 429).unwrap();
    assert_eq!(refused.2["x-ratelimit-limit-requests"], "50");
    assert_eq!(refused.2["x-ratelimit-remaining-requests"], "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_hold_one_tpm_limit() {
    let upstream = Upstream::start(|_| Reply::json(200, exact_completion())).await;
    let redis = RedisServer::start();
    let routers = replicas(
        3,
        &config(
            &redis,
            "",
            "    tpm: 1000\n",
            &upstream_model(&upstream.url("/v1"), &[], ""),
        ),
    );
    // 100 tokens each: ten fit in 1000.
    let answers = burst(&routers, 60, &chat("up", 92)).await;
    assert_eq!(admitted(&answers), 10);
    assert_eq!(upstream.requests().len(), 10);
    assert_refusals(&answers, "key tpm", "rate_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entrys_per_provider_key_rpm_holds_across_replicas() {
    let upstream = Upstream::start(|_| Reply::json(200, exact_completion())).await;
    let redis = RedisServer::start();
    let routers = replicas(
        3,
        &config(
            &redis,
            "",
            "",
            &upstream_model(&upstream.url("/v1"), &["pk-a", "pk-b"], "    rpm: 5\n"),
        ),
    );
    let answers = burst(&routers, 45, &chat("up", 92)).await;
    // Five per provider key, whichever replica sent them.
    assert_eq!(admitted(&answers), 10);
    assert_refusals(&answers, "model rpm", "rate_limit_exceeded");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 10);
    for key in ["Bearer pk-a", "Bearer pk-b"] {
        let sent = requests
            .iter()
            .filter(|request| request.headers["authorization"] == key)
            .count();
        assert_eq!(sent, 5, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_day_quota_holds_across_replicas_and_a_restart_of_every_replica() {
    let redis = RedisServer::start();
    let text = config(&redis, "", "    rpd: 5\n", &mock_model());
    let routers = replicas(3, &text);
    let answers = burst(&routers, 12, &chat("mock", 16)).await;
    assert_eq!(admitted(&answers), 5);
    assert_refusals(&answers, "key rpd", "insufficient_quota");
    for mut router in routers {
        router.terminate();
        assert_eq!(
            router.wait(Duration::from_secs(10)).unwrap().code(),
            Some(0)
        );
    }
    // New processes, the same Redis: the day is still spent.
    let routers = replicas(3, &text);
    let answers = burst(&routers, 6, &chat("mock", 16)).await;
    assert_eq!(admitted(&answers), 0);
    assert_refusals(&answers, "key rpd", "insufficient_quota");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_holds_across_replicas() {
    let upstream = Upstream::start(|_| Reply::json(200, exact_completion())).await;
    let redis = RedisServer::start();
    let routers = replicas(
        3,
        &config(
            &redis,
            "",
            "    max_budget_usd: 1.0\n    budget_period: day\n",
            &upstream_model(&upstream.url("/v1"), &[], ""),
        ),
    );
    // $0.192 each (8 × 0.001 + 92 × 0.002): five fit in $1.
    let answers = burst(&routers, 30, &chat("up", 92)).await;
    assert_eq!(admitted(&answers), 5);
    assert_eq!(upstream.requests().len(), 5);
    assert_refusals(&answers, "budget", "insufficient_quota");
}

/// An upstream where `pk-a` answers `status` (with `Retry-After: 30`) and
/// every other key a completion.
async fn one_bad_key(status: u16) -> Upstream {
    Upstream::start(move |request| {
        if request.headers["authorization"] == "Bearer pk-a" {
            let body = json!({"error": {"message": "no", "type": "error"}}).to_string();
            Reply::json(status, body).with_header("retry-after", "30")
        } else {
            Reply::json(200, exact_completion())
        }
    })
    .await
}

fn sent_with(upstream: &Upstream, key: &str) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|request| request.headers["authorization"] == key)
        .count()
}

/// Sends `count` requests one after another to `router`; all must succeed.
async fn succeed(router: &RouterProcess, count: usize) {
    for _ in 0..count {
        let answer = call(
            "POST",
            &router.url("/v1/chat/completions"),
            Some(KEY),
            &chat("up", 92),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rate_limited_on_one_replica_rests_on_the_others() {
    let upstream = one_bad_key(429).await;
    let redis = RedisServer::start();
    let text = config(
        &redis,
        "",
        "",
        &upstream_model(&upstream.url("/v1"), &["pk-a", "pk-b"], ""),
    );
    let routers = replicas(3, &text);
    // Replica A tries pk-a first, is told to wait 30 s, and fails over.
    succeed(&routers[0], 1).await;
    assert_eq!(sent_with(&upstream, "Bearer pk-a"), 1);
    // B and C would start their round robin at pk-a too: they skip it.
    succeed(&routers[1], 4).await;
    succeed(&routers[2], 4).await;
    assert_eq!(sent_with(&upstream, "Bearer pk-a"), 1);
    assert_eq!(sent_with(&upstream, "Bearer pk-b"), 9);
    // A replica started later reads the rest from Redis.
    let late = RouterProcess::start(&replica(&text));
    succeed(&late, 2).await;
    assert_eq!(sent_with(&upstream, "Bearer pk-a"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_refused_on_one_replica_is_out_on_the_others() {
    let upstream = one_bad_key(401).await;
    let redis = RedisServer::start();
    let routers = replicas(
        2,
        &config(
            &redis,
            "",
            "",
            &upstream_model(&upstream.url("/v1"), &["pk-a", "pk-b"], ""),
        ),
    );
    succeed(&routers[0], 1).await;
    succeed(&routers[1], 4).await;
    assert_eq!(sent_with(&upstream, "Bearer pk-a"), 1);
    assert_eq!(sent_with(&upstream, "Bearer pk-b"), 5);
}

/// The value of a sample in a `/metrics` page.
async fn metric(router: &RouterProcess, name: &str) -> Option<f64> {
    let page = call("GET", &router.url("/metrics"), None, "").await.text();
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until every replica uses Redis (again).
async fn wait_until_shared(routers: &[RouterProcess]) {
    let started = Instant::now();
    for router in routers {
        while metric(router, "router_shared_limits_available").await != Some(1.0) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "a replica did not use redis again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends `count` requests to each replica one after another, asserting that
/// none takes longer than `limit`; returns how many were admitted.
async fn timed(routers: &[RouterProcess], count: usize, limit: Duration) -> usize {
    let mut admitted = 0;
    for router in routers {
        for _ in 0..count {
            let started = Instant::now();
            let answer = call(
                "POST",
                &router.url("/v1/chat/completions"),
                Some(KEY),
                &chat("mock", 16),
            )
            .await;
            assert!(
                started.elapsed() < limit,
                "a request took {:?} while redis was down",
                started.elapsed()
            );
            match answer.status.as_u16() {
                200 => admitted += 1,
                429 | 503 => {}
                other => panic!("unexpected {other}: {}", answer.text()),
            }
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_under_fail_open_each_replica_enforces_its_share_then_exact_again() {
    let mut redis = RedisServer::start();
    let routers = replicas(
        2,
        &config(
            &redis,
            "    on_unavailable: fail_open\n    replicas: 2\n",
            "    rpm: 20\n",
            &mock_model(),
        ),
    );
    wait_until_shared(&routers).await;
    redis.stop();
    // Each replica alone holds half of the limit, and no request waits for
    // the missing Redis longer than its command timeout (plus slack).
    assert_eq!(timed(&routers, 15, Duration::from_secs(1)).await, 20);
    for router in &routers {
        let warnings = router.logs().matches("redis is unavailable").count();
        assert_eq!(warnings, 1, "{}", router.logs());
        assert_eq!(
            metric(router, "router_shared_limits_available").await,
            Some(0.0)
        );
        assert!(
            metric(router, "router_shared_limits_fallback_admissions_total").await >= Some(15.0)
        );
    }
    redis.start_again();
    wait_until_shared(&routers).await;
    // A fresh Redis: one limit of 20 over both replicas again.
    let started = Instant::now();
    let answers = burst(&routers, 60, &chat("mock", 16)).await;
    assert_within_allowance(admitted(&answers), 20, started.elapsed());
    assert_refusals(&answers, "key rpm", "rate_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_under_fail_closed_refuses_with_503_at_once() {
    let mut redis = RedisServer::start();
    let routers = replicas(
        1,
        &config(
            &redis,
            "    on_unavailable: fail_closed\n",
            "    rpm: 20\n",
            &mock_model(),
        ),
    );
    wait_until_shared(&routers).await;
    redis.stop();
    assert_eq!(timed(&routers, 5, Duration::from_secs(1)).await, 0);
    let answer = call(
        "POST",
        &routers[0].url("/v1/chat/completions"),
        Some(KEY),
        &chat("mock", 16),
    )
    .await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "limits_unavailable");
    assert!(answer.headers.contains_key("retry-after"));
    redis.start_again();
    wait_until_shared(&routers).await;
    assert_eq!(timed(&routers, 1, Duration::from_secs(1)).await, 1);
}

/// A replica's config with the shared ledger too.
fn ledger_config(redis: &RedisServer, postgres: &PostgresServer, key_limits: &str) -> String {
    let mut text = config(redis, "", key_limits, &mock_model());
    text = text.replace(
        "  backend: redis\n",
        &format!("  backend: redis\n  ledger_url: {}\n", postgres.url()),
    );
    text
}

/// `(rows, distinct request ids)` in the shared ledger.
fn ledger_rows(postgres: &PostgresServer) -> (u64, u64) {
    let answer = postgres.psql(
        "router",
        "SELECT COUNT(*) || ' ' || COUNT(DISTINCT request_id) FROM usage",
    );
    let (rows, distinct) = answer.split_once(' ').unwrap();
    (rows.parse().unwrap(), distinct.parse().unwrap())
}

/// Waits until the shared ledger holds `expected` rows (it lags the
/// requests by a flush interval), then checks that it stays there.
async fn wait_for_rows(postgres: &PostgresServer, expected: u64) {
    let started = Instant::now();
    loop {
        let (rows, distinct) = ledger_rows(postgres);
        assert!(
            rows <= expected,
            "{rows} rows, more than the {expected} requests"
        );
        assert_eq!(rows, distinct, "a request was recorded twice");
        if rows == expected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the ledger holds {rows} of {expected} rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ledger_rows(postgres), (expected, expected));
}

/// `/v1/usage` as one replica answers it, without the fields that depend on
/// the moment of asking.
async fn usage(router: &RouterProcess) -> Value {
    let answer = call("GET", &router.url("/v1/usage"), Some(KEY), "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let mut report = answer.json();
    let object = report.as_object_mut().unwrap();
    object.remove("until");
    for limit in object["limits"].as_array_mut().unwrap() {
        limit.as_object_mut().unwrap().remove("reset_seconds");
    }
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_write_one_ledger_and_report_the_same_usage() {
    let redis = RedisServer::start();
    let postgres = PostgresServer::start();
    // A day quota: what remains of it does not change while replicas answer.
    let routers = replicas(3, &ledger_config(&redis, &postgres, "    rpd: 40\n"));
    let answers = burst(&routers, 90, &chat("mock", 16)).await;
    assert_eq!(admitted(&answers), 40);
    // Refused requests are in the books too.
    wait_for_rows(&postgres, 90).await;
    let first = usage(&routers[0]).await;
    assert_eq!(first["today"]["requests"], 90, "{first}");
    for router in &routers[1..] {
        assert_eq!(usage(router).await, first);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_mid_run_loses_no_row_and_records_none_twice() {
    let redis = RedisServer::start();
    let mut postgres = PostgresServer::start();
    let text = ledger_config(&redis, &postgres, "");
    let mut routers = replicas(2, &text);
    let stopped_text = replica(&text);
    routers.push(RouterProcess::start(&stopped_text));
    assert_eq!(admitted(&burst(&routers, 30, &chat("mock", 16)).await), 30);
    wait_for_rows(&postgres, 30).await;

    postgres.stop();
    // Requests go on while the ledger is away; their rows wait.
    let started = Instant::now();
    assert_eq!(admitted(&burst(&routers, 30, &chat("mock", 16)).await), 30);
    assert!(started.elapsed() < Duration::from_secs(10));
    // A replica stopped meanwhile spills what it holds to its SQLite file...
    let mut stopped = routers.pop().unwrap();
    stopped.terminate();
    assert_eq!(
        stopped.wait(Duration::from_secs(30)).unwrap().code(),
        Some(0),
        "{}",
        stopped.logs()
    );

    postgres.start_again();
    // ...which a replica started on the same file replays.
    routers.push(RouterProcess::start(&stopped_text));
    assert_eq!(admitted(&burst(&routers, 30, &chat("mock", 16)).await), 30);
    wait_for_rows(&postgres, 90).await;
}
