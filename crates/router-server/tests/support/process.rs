//! Starting the real `router-server` binary on a config file, and talking to
//! it over HTTP/1.1.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

static CONFIG_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Writes `text` to a fresh file in the temp dir and returns its path.
pub fn write_config(text: &str) -> PathBuf {
    let n = CONFIG_COUNTER.fetch_add(1, Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!("router-e2e-{}-{n}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

static DATABASE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh database path `router.db` in a folder of the temp dir that does not
/// exist yet (any left from an earlier run is removed).
pub fn fresh_database(label: &str) -> PathBuf {
    let n = DATABASE_COUNTER.fetch_add(1, Ordering::SeqCst);
    let folder =
        std::env::temp_dir().join(format!("router-{label}-e2e-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    folder.join("router.db")
}

/// Runs the binary with `args` to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_router-server"))
        .args(args)
        .env_remove("ROUTER_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running `router-server`; killed when dropped.
pub struct RouterProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The config file it runs on (tests of hot reload edit it).
    pub config_path: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl RouterProcess {
    /// Starts the binary on `config` (which should use `port: 0`) and waits
    /// for its `listening on http://…` line.
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(config, &[], env)
    }

    /// Starts the binary with `args` after `--config PATH` (such as
    /// `--log-format json`). Without `--log-format` its stderr, a pipe,
    /// gets JSON lines.
    pub fn start_with_args(config: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let path = write_config(config);
        // Its own working directory, so the default `data/router.db` of a
        // config without `limits.database` is this process's alone.
        let workdir = path.with_extension("d");
        std::fs::create_dir_all(&workdir).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_router-server"))
            .current_dir(&workdir)
            .arg("--config")
            .arg(&path)
            .args(args)
            .env_remove("ROUTER_LOG_FORMAT")
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (found, address) = mpsc::channel();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = found.send(rest.trim().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match address.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "router-server did not start; stderr:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        };
        Self {
            child,
            addr,
            config_path: path,
            stderr: lines,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Sends SIGHUP (reload the config).
    pub fn hang_up(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A complete HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain HTTP/1.1 client for the tests.
pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and returns the response head with its streaming body.
pub async fn send(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: &str,
) -> hyper::Response<Incoming> {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    client().request(request).await.unwrap()
}

/// Sends a request and reads the whole answer.
pub async fn call(method: &str, url: &str, key: Option<&str>, body: &str) -> Answer {
    let response = send(method, url, key, body).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// Reads what is left of a streaming body, as text, until it ends.
pub async fn read_rest(body: &mut Incoming, limit_per_frame: Duration) -> String {
    let mut text = String::new();
    while let Some(frame) = next_frame(body, limit_per_frame).await {
        text.push_str(&String::from_utf8_lossy(&frame));
    }
    text
}

/// Reads the next data frame of a streaming body, at most `limit` to wait.
pub async fn next_frame(body: &mut Incoming, limit: Duration) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(limit, body.frame())
            .await
            .expect("no frame in time")?
            .unwrap();
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

/// A model `up` on an OpenAI-compatible upstream at `base_url` with these
/// provider keys, priced 0.001 per prompt token and 0.002 per completion
/// token; `extra` adds fields (limits) to the entry.
pub fn upstream_model(base_url: &str, keys: &[&str], extra: &str) -> String {
    let keys = keys
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "  - name: up\n    base_url: {base_url}\n    is_openai_compatibility: true\n    provider_api_key: [{keys}]\n    enabled: true\n    input_price_per_token: 0.001\n    output_price_per_token: 0.002\n{extra}"
    )
}

/// Fires `count` chat requests with `key` at once, spread round robin over
/// the routers at `urls`; returns each one's status, JSON body (`Null` when
/// it is not JSON) and headers, in the order they were sent.
pub async fn burst(
    urls: &[String],
    key: &str,
    count: usize,
    body: &str,
) -> Vec<(u16, serde_json::Value, HeaderMap)> {
    let tasks: Vec<_> = (0..count)
        .map(|index| {
            let url = urls[index % urls.len()].clone();
            let key = key.to_owned();
            let body = body.to_owned();
            tokio::spawn(async move {
                let answer = call("POST", &url, Some(&key), &body).await;
                let value = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
                (answer.status.as_u16(), value, answer.headers)
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}
