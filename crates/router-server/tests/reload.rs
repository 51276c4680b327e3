//! Hot reload end to end: the real binary, its config file edited while
//! streams are open, SIGHUP, `POST /admin/reload`, and what carries over
//! (limits, key health) or waits for a restart (the listen port).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;
#[path = "../../router-providers/tests/support/mod.rs"]
mod upstream;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process::{call, fresh_database, read_rest, send, upstream_model, RouterProcess};
use serde_json::json;
use upstream::{End, Reply, Upstream};

const KEY: &str = "sk-reload-client";
const OTHER: &str = "sk-reload-other";
const ADMIN: &str = "sk-reload-admin";

/// The config: `models` and three keys (the client, another one, an admin);
/// `client_extra` adds lines to the client key. Every config of one test
/// names the same database, so that only what a test changes differs.
fn config(models: &str, client_extra: &str, other_key: bool) -> String {
    thread_local! {
        static DATABASE: String = fresh_database("reload").display().to_string();
    }
    let database = DATABASE.with(Clone::clone);
    let other = if other_key {
        format!("  - id: 2\n    key: {OTHER}\n    name: other\n    is_active: true\n")
    } else {
        String::new()
    };
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\nlimits:\n  database: {database}\n  flush_interval: 20ms\nmodels:\n{models}api_keys:\n  - id: 1\n    key: {KEY}\n    name: client\n    is_active: true\n{client_extra}{other}  - id: 3\n    key: {ADMIN}\n    name: admin\n    is_active: true\n    admin: true\n"
    )
}

fn mock_model(name: &str) -> String {
    format!("  - name: {name}\n    provider: mock\n    enabled: true\n    visible: true\n")
}

fn chat(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// An SSE answer of ten chunks sent 40 ms apart: streams stay open about
/// half a second, long enough for a reload to happen under them.
fn slow_stream() -> Reply {
    let mut body = String::new();
    for word in 0..10 {
        let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "x",
            "choices": [{"index": 0, "delta": {"content": format!("w{word} ")}, "finish_reason": null}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let last = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "x",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}});
    body.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
    let piece = body.len() / 12 + 1;
    Reply::sse(body).in_pieces(piece, Duration::from_millis(40), End::Finish)
}

/// Rewrites the config file the way an editor does (a new file renamed
/// over the old one).
fn edit(router: &RouterProcess, text: &str) {
    let path = &router.config_path;
    let temporary = path.with_extension("yaml.new");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// `router_config_reloads_total{result="…"}` from `/metrics`.
async fn reloads(router: &RouterProcess, result: &str) -> u64 {
    let page = call("GET", &router.url("/metrics"), None, "").await.text();
    let prefix = format!("router_config_reloads_total{{result=\"{result}\"}} ");
    page.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0)
}

async fn wait_for_reloads(router: &RouterProcess, result: &str, count: u64) {
    let started = Instant::now();
    while reloads(router, result).await < count {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {result} reload #{count}; log:\n{}",
            router.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_the_config_under_streaming_load_fails_no_request_and_cuts_no_stream() {
    let upstream = Upstream::start(|_| slow_stream()).await;
    let models = upstream_model(&upstream.url("/v1"), &[], "");
    let router = RouterProcess::start(&config(&models, "", true));
    let url = router.url("/v1/chat/completions");

    // Eight clients stream one request after another for three seconds.
    let deadline = Instant::now() + Duration::from_secs(3);
    let completed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            let completed = Arc::clone(&completed);
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while Instant::now() < deadline {
                    let response = send("POST", &url, Some(KEY), &chat("up", true)).await;
                    let status = response.status();
                    let mut body = response.into_body();
                    let text = read_rest(&mut body, Duration::from_secs(5)).await;
                    let words = text.matches("\"content\":\"w").count();
                    if status != 200 || !text.ends_with("data: [DONE]\n\n") || words != 10 {
                        failures.push(format!("{status}: {text}"));
                    } else {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                failures
            })
        })
        .collect();

    // Under load: a new model, a key removed, a limit changed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let edited = format!("{models}{}", mock_model("fresh"));
    edit(&router, &config(&edited, "    rpm: 100000\n", false));
    wait_for_reloads(&router, "ok", 1).await;
    // Routable at once; the removed key is refused at once.
    let fresh = call("POST", &url, Some(KEY), &chat("fresh", false)).await;
    assert_eq!(fresh.status, 200, "{}", fresh.text());
    let removed = call("POST", &url, Some(OTHER), &chat("up", false)).await;
    assert_eq!(removed.status, 401, "{}", removed.text());

    // An invalid edit changes nothing and says what is wrong, where.
    edit(
        &router,
        &config(&edited, "    rpm: 100000\n", false).replace("provider: mock", "provder: mock"),
    );
    wait_for_reloads(&router, "invalid", 1).await;
    let logs = router.logs();
    assert!(logs.contains("provder"), "{logs}");
    assert!(logs.contains("did you mean `provider`"), "{logs}");
    let still = call("POST", &url, Some(KEY), &chat("fresh", false)).await;
    assert_eq!(still.status, 200, "{}", still.text());

    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(
        completed.load(Ordering::Relaxed) >= 16,
        "too few streams ran"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn post_admin_reload_reports_what_changed_or_every_problem() {
    let router = RouterProcess::start(&config(&mock_model("m"), "", true));
    let url = router.url("/admin/reload");
    // Only admin keys.
    let refused = call("POST", &url, Some(KEY), "").await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "admin_required");
    assert_eq!(call("POST", &url, None, "").await.status, 401);

    let unchanged = call("POST", &url, Some(ADMIN), "").await;
    assert_eq!(unchanged.status, 200, "{}", unchanged.text());
    assert_eq!(unchanged.json()["changed"], false);

    // A model added, a key removed, a limit changed, the port changed.
    let text = config(
        &format!("{}{}", mock_model("m"), mock_model("n")),
        "    rpm: 5\n",
        false,
    )
    .replace("port: 0", "port: 1");
    std::fs::write(&router.config_path, &text).unwrap();
    let answer = call("POST", &url, Some(ADMIN), "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let report = answer.json();
    assert_eq!(
        report["models"]["added"],
        json!(["n (models[1])"]),
        "{report}"
    );
    assert_eq!(
        report["keys"]["removed"],
        json!(["other (id 2)"]),
        "{report}"
    );
    assert_eq!(
        report["keys"]["changed"],
        json!(["client (id 1)"]),
        "{report}"
    );
    assert_eq!(report["needs_restart"], json!(["server.port"]), "{report}");
    for secret in [KEY, OTHER, ADMIN] {
        assert!(!answer.text().contains(secret));
    }
    // The port is kept: this very server still answers where it was.
    let models = call("GET", &router.url("/v1/models"), Some(KEY), "").await;
    assert_eq!(models.status, 200);
    assert!(models.text().contains("\"n\""), "{}", models.text());

    // Every problem, with file, line and path; nothing applied.
    std::fs::write(
        &router.config_path,
        text.replacen("visible: true", "visible: true\n    max_tokens: -3", 1)
            .replace("rpm: 5", "rpm: -5"),
    )
    .unwrap();
    let answer = call("POST", &url, Some(ADMIN), "").await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    let error = answer.json()["error"].clone();
    assert_eq!(error["code"], "invalid_config");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("2 problems"), "{message}");
    assert!(message.contains("models[0].max_tokens"), "{message}");
    assert!(message.contains("api_keys[0].rpm"), "{message}");
    let file = router.config_path.display().to_string();
    assert!(message.contains(&format!("{file}:")), "{message}");
    let chat_answer = call(
        "POST",
        &router.url("/v1/chat/completions"),
        Some(KEY),
        &chat("n", false),
    )
    .await;
    assert_eq!(chat_answer.status, 200, "{}", chat_answer.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_limits_and_key_health_carry_over() {
    // pk-a is rate-limited for 30 s; pk-b answers.
    let upstream = Upstream::start(|request| {
        if request.headers["authorization"] == "Bearer pk-a" {
            Reply::json(429, json!({"error": {"message": "slow down"}}).to_string())
                .with_header("retry-after", "30")
        } else {
            Reply::json(
                200,
                json!({"id": "c", "object": "chat.completion", "created": 1, "model": "x",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
                .to_string(),
            )
        }
    })
    .await;
    let models = upstream_model(&upstream.url("/v1"), &["pk-a", "pk-b"], "");
    let router = RouterProcess::start(&config(&models, "    rpm: 3\n", true));
    let url = router.url("/v1/chat/completions");
    for _ in 0..3 {
        let answer = call("POST", &url, Some(KEY), &chat("up", false)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let sent_with_a = |upstream: &Upstream| {
        upstream
            .requests()
            .iter()
            .filter(|request| request.headers["authorization"] == "Bearer pk-a")
            .count()
    };
    assert_eq!(sent_with_a(&upstream), 1);

    // An unchanged file: the watch sees nothing; SIGHUP reloads it.
    router.hang_up();
    wait_for_reloads(&router, "ok", 1).await;
    // The key's three requests of this minute are still spent...
    let refused = call("POST", &url, Some(KEY), &chat("up", false)).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    // ...and pk-a still rests: another key's requests skip it.
    for _ in 0..3 {
        let answer = call("POST", &url, Some(OTHER), &chat("up", false)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(sent_with_a(&upstream), 1);

    // A limit raised applies from the next admission.
    edit(&router, &config(&models, "    rpm: 4\n", true));
    wait_for_reloads(&router, "ok", 2).await;
    let admitted = call("POST", &url, Some(KEY), &chat("up", false)).await;
    assert_eq!(admitted.status, 200, "{}", admitted.text());
    assert_eq!(
        call("POST", &url, Some(KEY), &chat("up", false))
            .await
            .status,
        429
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watch_follows_the_file_through_writes_in_place_and_renames() {
    let router = RouterProcess::start(&config(&mock_model("m"), "", true));
    let models = |names: &[&str]| {
        let entries: String = names.iter().map(|name| mock_model(name)).collect();
        config(&entries, "", true)
    };
    // Written in place: the watched file itself changes.
    std::fs::write(&router.config_path, models(&["m", "n"])).unwrap();
    wait_for_reloads(&router, "ok", 1).await;
    // Renamed over, twice: each new file is watched in turn.
    edit(&router, &models(&["m", "n", "o"]));
    wait_for_reloads(&router, "ok", 2).await;
    edit(&router, &models(&["m", "n", "o", "p"]));
    wait_for_reloads(&router, "ok", 3).await;
    // And in place again, on the file the last rename brought.
    std::fs::write(&router.config_path, models(&["m", "q"])).unwrap();
    wait_for_reloads(&router, "ok", 4).await;
    let listed = call("GET", &router.url("/v1/models"), Some(KEY), "")
        .await
        .text();
    assert!(
        listed.contains("\"q\"") && !listed.contains("\"p\""),
        "{listed}"
    );
    // Files written beside the config do not reload it.
    let beside = router.config_path.with_file_name("beside.db");
    for round in 0..5 {
        std::fs::write(&beside, format!("round {round}")).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(reloads(&router, "ok").await, 4, "{}", router.logs());
}
