//! The custom binary end to end: it serves `provider: ollama` entries (a
//! provider no crate under `crates/` knows) against an Ollama-shaped server
//! on 127.0.0.1, with everything the stock server has: OpenAI answers and
//! streams, the client-facing model name, the ledger, the drain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../ollama-provider/tests/support/mod.rs"]
mod ollama;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

const KEY: &str = "sk-custom-server";

/// Ollama's lines for a streamed "The sky is blue." and its counts.
fn stream_lines() -> Vec<String> {
    let line = |content: &str, done: bool| {
        let mut line = json!({"model": "llama3.2", "created_at": "2024-07-22T20:33:28Z",
            "message": {"role": "assistant", "content": content}, "done": done});
        if done {
            line["done_reason"] = json!("stop");
            line["prompt_eval_count"] = json!(26);
            line["eval_count"] = json!(5);
        }
        line.to_string() + "\n"
    };
    vec![
        line("The", false),
        line(" sky", false),
        line(" is blue.", false),
        line("", true),
    ]
}

struct Server {
    child: Child,
    base: String,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A folder of this test's own, removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "custom-server-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn config(answer: &ollama::MockOllama, stream: &ollama::MockOllama, dir: &tempdir::Dir) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\nlimits:\n  database: {}/router.db\n  flush_interval: 20ms\n\
         models:\n\
         \x20 - name: llama\n    provider: ollama\n    provider_model_name: llama3.2\n    base_url: http://{}\n    enabled: true\n    visible: true\n\
         \x20 - name: llama-stream\n    provider: ollama\n    provider_model_name: llama3.2\n    base_url: http://{}\n    enabled: true\n    visible: true\n\
         api_keys:\n  - id: 1\n    key: {KEY}\n    name: client\n    is_active: true\n",
        dir.0.display(),
        answer.addr,
        stream.addr
    )
}

fn start(config: &str, dir: tempdir::Dir) -> Server {
    let path = dir.0.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_custom-server"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, address) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = found.send(rest.trim().to_owned());
            }
        }
    });
    let base = address
        .recv_timeout(Duration::from_secs(30))
        .expect("custom-server did not start");
    Server {
        child,
        base,
        _dir: dir,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(method: &str, url: &str, body: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn chat(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_custom_binary_serves_an_ollama_model_like_any_other() {
    let answer = ollama::start(ollama::Script {
        status: 200,
        pieces: vec![
            json!({"model": "llama3.2", "created_at": "2024-07-22T20:33:28Z",
            "message": {"role": "assistant", "content": "Rayleigh scattering."},
            "done": true, "done_reason": "stop", "prompt_eval_count": 26, "eval_count": 4})
            .to_string(),
        ],
        cut: false,
    })
    .await;
    let stream = ollama::start(ollama::Script {
        status: 200,
        pieces: stream_lines(),
        cut: false,
    })
    .await;
    let dir = tempdir::Dir::new();
    let mut server = start(&config(&answer, &stream, &dir), dir);
    let url = format!("{}/v1/chat/completions", server.base);

    let (status, body) = send("POST", &url, &chat("llama", false)).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["model"], "llama");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Rayleigh scattering."
    );
    assert_eq!(body["usage"]["prompt_tokens"], 26);
    assert_eq!(answer.requests.lock().unwrap()[0].0, "/api/chat");

    let (status, body) = send("POST", &url, &chat("llama-stream", true)).await;
    assert_eq!(status, 200, "{body}");
    let events: Vec<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|event| serde_json::from_str(event).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta/content")?.as_str())
        .collect();
    assert_eq!(text, "The sky is blue.");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|chunk| chunk["model"] == "llama-stream"));
    assert!(chunks
        .iter()
        .any(|chunk| chunk.pointer("/choices/0/finish_reason") == Some(&json!("stop"))));

    // Both requests are in the books with Ollama's counts.
    let mut report = Value::Null;
    for _ in 0..100 {
        let (status, body) = send("GET", &format!("{}/v1/usage", server.base), "").await;
        assert_eq!(status, 200, "{body}");
        report = serde_json::from_str(&body).unwrap();
        if report["today"]["requests"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(report["today"]["requests"], 2, "{report}");
    assert_eq!(report["today"]["prompt_tokens"], 52, "{report}");
    assert_eq!(report["today"]["completion_tokens"], 9, "{report}");

    // The stock drain: SIGTERM, then exit 0.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..500 {
        if let Some(status) = server.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(exited.and_then(|status| status.code()), Some(0));
}

#[test]
fn check_config_knows_the_added_provider() {
    let dir = tempdir::Dir::new();
    let path = dir.0.join("config.yaml");
    std::fs::write(
        &path,
        "models:\n  - name: llama\n    provider: ollama\n    base_url: http://127.0.0.1:11434\n    enabled: true\n\
         \x20 - name: other\n    provider: nonesuch\n    enabled: true\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_custom-server"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    // Only the unknown one is a problem; the list of known names has ollama.
    assert!(stderr.contains("models[1].provider"), "{stderr}");
    assert!(!stderr.contains("models[0].provider"), "{stderr}");
    assert!(stderr.contains("ollama"), "{stderr}");
}
