//! The dashboard in a real browser: the router binary under traffic,
//! headless Chromium driven through chromedriver (WebDriver), the page
//! logged in with an admin key, and every number it shows checked against
//! `/v1/usage` and `/admin/models`. A non-admin key is refused by the page.
//! The screenshot goes to `<workspace>/target/ui/dashboard.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them); without them the test fails and names the packages. Paths may be
//! overridden with `ROUTER_CHROMIUM` and `ROUTER_CHROMEDRIVER`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

#[path = "support/process.rs"]
mod process;
#[path = "../../router-providers/tests/support/mod.rs"]
mod upstream;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use process::{call, fresh_database, RouterProcess};
use serde_json::{json, Value};
use upstream::{Reply, Upstream};

const CLIENT: &str = "sk-ui-client";
const OTHER: &str = "sk-ui-other";
const ADMIN: &str = "sk-ui-admin";
/// The upstream refuses this provider key (401): the router disables it.
const REVOKED: &str = "pk-ui-revoked";
const GOOD: &str = "pk-ui-good";

fn completion() -> String {
    json!({"id": "c", "object": "chat.completion", "created": 1, "model": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}})
    .to_string()
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn config(database: &std::path::Path, upstream: &Upstream) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\nlimits:\n  database: {db}\n  flush_interval: 20ms\n\
         models:\n\
         \x20 - name: mock-gpt\n    provider: mock\n    enabled: true\n    visible: true\n    input_price_per_token: 0.001\n    output_price_per_token: 0.002\n\
         \x20 - name: up\n    base_url: {up}\n    is_openai_compatibility: true\n    provider_api_key: [\"{REVOKED}\", \"{GOOD}\"]\n    enabled: true\n    input_price_per_token: 0.001\n    output_price_per_token: 0.002\n\
         \x20 - name: broken\n    base_url: {broken}\n    is_openai_compatibility: true\n    provider_api_key: [\"pk-ui-broken\"]\n    enabled: true\n\
         api_keys:\n\
         \x20 - id: 1\n    key: {CLIENT}\n    name: team-a\n    is_active: true\n    rpm: 4\n    tpd: 100000\n\
         \x20 - id: 2\n    key: {OTHER}\n    name: team-b\n    is_active: true\n\
         \x20 - id: 3\n    key: {ADMIN}\n    name: operator\n    is_active: true\n    admin: true\n",
        db = database.display(),
        up = upstream.url("/v1"),
        broken = upstream.url("/broken"),
    )
}

/// A program the test needs, or a failure naming the Debian package.
fn program(variable: &str, candidates: &[&str], package: &str) -> PathBuf {
    if let Ok(path) = std::env::var(variable) {
        return PathBuf::from(path);
    }
    for candidate in candidates {
        let path = PathBuf::from(candidate);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "the dashboard test needs {} (Debian package `{package}`; `apt-get install chromium \
         chromium-driver`, as .ci/run does), or its path in {variable}",
        candidates[0]
    );
}

/// chromedriver on a free loopback port, stopped by its PID when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start(path: &Path) -> Self {
        // A free port: bound by the OS, released, then handed to chromedriver,
        // which has no port 0 of its own.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", path.display()));
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Until it listens, a request would fail to connect (which the
            // test client treats as a bug); once it does, `/status` says
            // whether it is ready.
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                let answer = call("GET", &format!("{}/status", driver.url), None, "").await;
                if answer.status == 200 && answer.json()["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {}",
                driver.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session with a profile of its own.
async fn browser(driver: &ChromeDriver, chromium: &Path, profile: &Path) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,2300", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|error| panic!("cannot open a Chromium session: {error}"))
}

/// Waits until `script` (returning a boolean) is true in the page.
async fn wait_until(page: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if page.execute(script, vec![]).await.unwrap() == json!(true) {
            return;
        }
        if Instant::now() > deadline {
            let state = page
                .execute(
                    "return document.body.dataset.state + ' ' + document.getElementById('status').textContent + ' ' + document.getElementById('login-error').textContent",
                    vec![],
                )
                .await
                .unwrap();
            panic!("timed out waiting for {what}; page: {state}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything the page shows, read from its `data-*` attributes.
const READ_PAGE: &str = r#"
const value = (id) => document.getElementById(id).dataset.value;
const rows = (id, attribute) => Array.from(document.querySelectorAll('#' + id + ' tr')).filter((row) => row.dataset[attribute] !== undefined).map((row) => {
  const cells = {};
  for (const cell of row.querySelectorAll('[data-field]')) cells[cell.dataset.field] = cell.dataset.value ?? cell.textContent;
  return Object.assign({ group: row.dataset[attribute] }, cells);
});
return {
  requests: value('today-requests'),
  tokens: value('today-tokens'),
  cost: value('today-cost'),
  in_flight: value('in-flight'),
  by_model: rows('usage-by-model', 'model'),
  by_key: rows('usage-by-key', 'keyId'),
  health: Array.from(document.querySelectorAll('#models tr[data-entry]')).map((row) =>
    [row.dataset.entry, row.dataset.providerKey, row.dataset.state]),
  limits: Array.from(document.querySelectorAll('#keys tr[data-client-key] li[data-limit]')).map((item) =>
    [item.closest('tr').dataset.clientKey, item.dataset.limit, item.dataset.remaining, item.dataset.max]),
  errors: Array.from(document.querySelectorAll('#errors tr[data-request-id]')).map((row) => row.dataset.requestId),
  error_text: document.getElementById('errors').textContent,
  hour_total: document.getElementById('chart-hour').dataset.total,
  days_total: document.getElementById('chart-days').dataset.total,
  bars: document.querySelectorAll('#chart-hour rect').length,
};
"#;

fn number(value: &Value) -> f64 {
    match value {
        Value::String(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {text:?}")),
        Value::Number(number) => number.as_f64().unwrap(),
        other => panic!("not a number: {other}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_what_the_api_reports() {
    let chromium = program(
        "ROUTER_CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        "chromium",
    );
    let chromedriver = program(
        "ROUTER_CHROMEDRIVER",
        &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        "chromium-driver",
    );

    let upstream = Upstream::start(|request| {
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if request.path_and_query.starts_with("/broken") {
            Reply::json(
                500,
                json!({"error": {"message": "the model is overloaded", "type": "server_error"}})
                    .to_string(),
            )
        } else if authorization.ends_with(REVOKED) {
            Reply::json(
                401,
                json!({"error": {"message": "invalid api key", "type": "invalid_request_error"}})
                    .to_string(),
            )
        } else {
            Reply::json(200, completion())
        }
    })
    .await;
    let database = fresh_database("ui");
    let router = RouterProcess::start(&config(&database, &upstream));
    let url = |path: &str| router.url(path);

    // Traffic: 6 to the mock under rpm 4 (4 answers, 2 refusals), 2 to `up`
    // (its first key is refused by the upstream and disabled, the second
    // answers), 1 to `broken` (an upstream error).
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let answer = call(
            "POST",
            &url("/v1/chat/completions"),
            Some(CLIENT),
            &chat("mock-gpt"),
        )
        .await;
        statuses.push(answer.status.as_u16());
    }
    for _ in 0..2 {
        let answer = call(
            "POST",
            &url("/v1/chat/completions"),
            Some(OTHER),
            &chat("up"),
        )
        .await;
        statuses.push(answer.status.as_u16());
    }
    let broken = call(
        "POST",
        &url("/v1/chat/completions"),
        Some(OTHER),
        &chat("broken"),
    )
    .await;
    statuses.push(broken.status.as_u16());
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429, 200, 200, 502],
        "{}",
        router.logs()
    );

    // The ledger has every row (it writes every 20 ms).
    let usage = |query: &'static str| {
        let url = url(&format!("/v1/usage?{query}"));
        async move {
            let answer = call("GET", &url, Some(ADMIN), "").await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            answer.json()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while usage("all=true").await["today"]["requests"] != 9 {
        assert!(Instant::now() < deadline, "the ledger never had 9 rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The admin API: 401 without a key, 403 for a client key.
    let refused = call("GET", &url("/admin/models"), None, "").await;
    assert_eq!(refused.status, 401);
    let refused = call("GET", &url("/admin/usage"), Some(CLIENT), "").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"]["code"], "admin_required");

    let driver = ChromeDriver::start(&chromedriver).await;
    let profile = std::env::temp_dir().join(format!("router-ui-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let page = browser(&driver, &chromium, &profile).await;

    // A client key is refused by the page, which says why and shows nothing.
    page.goto(&url("/ui")).await.unwrap();
    page.find(Locator::Id("key"))
        .await
        .unwrap()
        .send_keys(CLIENT)
        .await
        .unwrap();
    page.find(Locator::Id("login-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &page,
        "the refusal",
        "return document.body.dataset.state === 'refused'",
    )
    .await;
    let refusal = page
        .find(Locator::Id("login-error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(refusal.contains("admin_required"), "{refusal}");
    let hidden = page
        .execute(
            "return document.getElementById('dashboard').hidden && sessionStorage.length === 0",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(hidden, json!(true));

    // The admin key opens it; it refreshes by itself.
    page.find(Locator::Id("key"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    page.find(Locator::Id("login-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &page,
        "two refreshes",
        "return Number(document.body.dataset.refreshes || 0) >= 2",
    )
    .await;
    let shown = page.execute(READ_PAGE, vec![]).await.unwrap();

    // Today's totals, as /v1/usage reports them for every key.
    let today = usage("all=true").await["today"].clone();
    assert_eq!(number(&shown["requests"]), number(&today["requests"]));
    assert_eq!(number(&shown["tokens"]), number(&today["total_tokens"]));
    assert!(close(number(&shown["cost"]), number(&today["cost_usd"])));
    assert_eq!(number(&shown["requests"]), 9.0);
    assert!(number(&today["cost_usd"]) > 0.0);
    // Nothing but the page is running: no request in flight.
    assert_eq!(number(&shown["in_flight"]), 0.0);
    // The charts hold all of today's traffic (it is all from this minute).
    assert_eq!(number(&shown["hour_total"]), 9.0);
    assert_eq!(number(&shown["days_total"]), 9.0);
    assert!(shown["bars"].as_u64().unwrap() >= 3, "{shown}");

    // By model and by key, as /v1/usage groups them since midnight.
    let midnight = time::OffsetDateTime::now_utc().date().to_string();
    for (group_by, rows) in [("model", "by_model"), ("key", "by_key")] {
        let query = format!("all=true&group_by={group_by}&since={midnight}");
        let answer = call("GET", &url(&format!("/v1/usage?{query}")), Some(ADMIN), "")
            .await
            .json();
        let expected = answer["data"].as_array().unwrap();
        let rows = shown[rows].as_array().unwrap();
        assert_eq!(rows.len(), expected.len(), "{group_by}: {shown}");
        for (row, expected) in rows.iter().zip(expected) {
            assert_eq!(row["group"], expected["group"]);
            assert_eq!(number(&row["requests"]), number(&expected["requests"]));
            assert_eq!(
                number(&row["total_tokens"]),
                number(&expected["total_tokens"])
            );
            assert!(close(
                number(&row["cost_usd"]),
                number(&expected["cost_usd"])
            ));
        }
    }

    // Health, as /admin/models reports it: `up`'s first key is disabled.
    let models = call("GET", &url("/admin/models"), Some(ADMIN), "")
        .await
        .json();
    let mut expected_health = Vec::new();
    for model in models["models"].as_array().unwrap() {
        for entry in model["entries"].as_array().unwrap() {
            for key in entry["keys"].as_array().unwrap() {
                // An entry without provider keys has one health, of index null.
                let key_index = key["index"]
                    .as_u64()
                    .map(|index| index.to_string())
                    .unwrap_or_default();
                expected_health.push(json!([entry["index"].to_string(), key_index, key["state"]]));
            }
        }
    }
    assert_eq!(shown["health"], Value::Array(expected_health));
    assert!(shown["health"]
        .as_array()
        .unwrap()
        .contains(&json!(["1", "0", "disabled"])));

    // Each client key's limits, as /admin/keys reports them: team-a used 4
    // of its 4 requests a minute.
    let keys = call("GET", &url("/admin/keys"), Some(ADMIN), "")
        .await
        .json();
    let mut expected_limits = Vec::new();
    for key in keys["keys"].as_array().unwrap() {
        for limit in key["limits"].as_array().unwrap() {
            expected_limits.push(json!([
                key["id"].to_string(),
                limit["limit"],
                limit["remaining"].to_string(),
                limit["max"].to_string()
            ]));
        }
    }
    assert_eq!(shown["limits"], Value::Array(expected_limits));
    assert!(shown["limits"]
        .as_array()
        .unwrap()
        .contains(&json!(["1", "key rpm", "0", "4"])));

    // The errors, newest first, as /admin/errors lists them: two refusals
    // and the upstream failure, with its request id and message.
    let errors = call("GET", &url("/admin/errors?limit=20"), Some(ADMIN), "")
        .await
        .json();
    let ids: Vec<Value> = errors["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["request_id"].clone())
        .collect();
    assert_eq!(ids.len(), 3, "{errors}");
    assert_eq!(shown["errors"], Value::Array(ids));
    let broken_id = broken.headers["x-request-id"].to_str().unwrap();
    assert_eq!(shown["errors"][0], broken_id);
    let error_text = shown["error_text"].as_str().unwrap();
    assert!(
        error_text.contains("the model is overloaded"),
        "{error_text}"
    );
    assert!(error_text.contains("key rpm"), "{error_text}");

    // The screenshot, for people to look at.
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui");
    std::fs::create_dir_all(&folder).unwrap();
    let png = page.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = folder.join("dashboard.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());

    page.close().await.unwrap();
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
}
