//! What the engine adds to a chat request, without HTTP.
//!
//! The router is built from a YAML config with one model entry whose
//! in-process provider answers a fixed completion at once, no limiter and no
//! ledger (`Services::default`), so what is measured is the engine itself:
//! - `chat`: `Router::authenticate` of the `Authorization` value and one
//!   `Router::chat` of a small request (218 bytes: two messages,
//!   `temperature`, `max_tokens`): parse and validate the body, resolve the
//!   model, pick the entry and key, estimate the prompt, rewrite a copy of the
//!   body for the upstream, call the provider, rewrite the answer for the
//!   client and close the books (one usage record to the no-op sink);
//! - `chat_and_write`: the same plus `serde_json::to_vec` of the answer, as
//!   router-http writes it (what the baseline does, parse a body and write
//!   an answer, and more);
//! - `parse`: `router_core::request::parse` of the same body alone.
//!
//! Baselines, so results read as ratios:
//! - `baseline_parse_write`: `serde_json::from_slice::<Value>` of the same
//!   body plus `serde_json::to_vec` of the same answer: the floor of any
//!   proxy that reads JSON (parse once, write once);
//! - `baseline_parse`: the `from_slice` alone (the floor of `parse`);
//! - `baseline_block_on`: `block_on(async {})` on the current-thread tokio
//!   runtime that every `chat` iteration goes through.
//!
//! Run with `cargo bench -p router-core --bench engine`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use divan::{black_box, Bencher};
use router_core::config;
use router_core::provider::ChunkStream;
use router_core::request;
use router_core::{ChatResponse, Completion, Provider, ProviderError, ProviderRequest, Router};
use serde_json::Value;
use tokio::runtime::Runtime;

fn main() {
    divan::main();
}

const CONFIG: &str = "
models:
  - name: gpt-4o-mini
    provider_model_name: gpt-4o-mini-2024-07-18
    provider: fixed
    enabled: true
    provider_api_key: [pk-one]
api_keys:
  - key: sk-bench
    name: bench
    is_active: true
";

const AUTHORIZATION: &[u8] = b"Bearer sk-bench";

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in French, then in Spanish, in one short sentence."}],"temperature":0.7,"max_tokens":64}"#;

/// The upstream's answer, as an OpenAI-compatible upstream sends it.
const ANSWER_JSON: &[u8] = r#"{"id":"chatcmpl-AbC123dEf456GhI789jKl","object":"chat.completion","created":1732540000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Bonjour ! ¡Hola!","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":7,"total_tokens":38},"system_fingerprint":"fp_0123456789"}"#.as_bytes();

/// [`ANSWER_JSON`] read as the OpenAI adapter reads an upstream's answer.
static ANSWER: LazyLock<Completion> =
    LazyLock::new(|| Completion::from_json_slice(ANSWER_JSON).unwrap());

/// Answers every call with [`ANSWER`] at once.
#[derive(Debug)]
struct Fixed;

#[async_trait]
impl Provider for Fixed {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        black_box(&request);
        Ok(ANSWER.clone())
    }

    async fn stream(&self, _request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        unreachable!("the benchmark sends no streams")
    }
}

struct Bench {
    router: Router,
    runtime: Runtime,
}

static BENCH: LazyLock<Bench> = LazyLock::new(|| {
    let config = config::parse(Path::new("bench.yaml"), CONFIG, &|_| None).unwrap();
    let provider: Arc<dyn Provider> = Arc::new(Fixed);
    let router = Router::new(&config, &|_| Ok(Arc::clone(&provider))).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let bench = Bench { router, runtime };
    // The request must succeed, or the benchmark measures an error path.
    let answer = bench.chat();
    assert_eq!(answer.get("model").unwrap().as_ref(), "gpt-4o-mini");
    bench
});

impl Bench {
    fn chat(&self) -> Completion {
        self.runtime.block_on(async {
            let client = self
                .router
                .authenticate(Some(black_box(AUTHORIZATION)))
                .unwrap();
            let outcome = self.router.chat(&client, black_box(BODY)).await;
            match outcome.result.unwrap() {
                ChatResponse::Complete(answer) => answer,
                ChatResponse::Stream(_) => unreachable!("not a stream"),
            }
        })
    }
}

#[divan::bench]
fn chat(bencher: Bencher) {
    let bench = &*BENCH;
    bencher.bench(|| bench.chat());
}

#[divan::bench]
fn chat_and_write(bencher: Bencher) {
    let bench = &*BENCH;
    bencher.bench(|| serde_json::to_vec(&bench.chat()).unwrap());
}

#[divan::bench]
fn parse(bencher: Bencher) {
    bencher.bench(|| request::parse(black_box(BODY)).unwrap());
}

#[divan::bench]
fn baseline_parse_write(bencher: Bencher) {
    let answer: Value = serde_json::from_slice(ANSWER_JSON).unwrap();
    bencher.bench(|| {
        let body: Value = serde_json::from_slice(black_box(BODY)).unwrap();
        (body, serde_json::to_vec(black_box(&answer)).unwrap())
    });
}

#[divan::bench]
fn baseline_parse(bencher: Bencher) {
    bencher.bench(|| serde_json::from_slice::<Value>(black_box(BODY)).unwrap());
}

#[divan::bench]
fn baseline_block_on(bencher: Bencher) {
    let bench = &*BENCH;
    bencher.bench(|| bench.runtime.block_on(async {}));
}
