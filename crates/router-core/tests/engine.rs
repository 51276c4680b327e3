//! The engine against scripted in-process providers: routing, round robin,
//! failover, rewriting, streaming and stream_only aggregation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use router_core::config::{Capabilities, ClientKeyConfig, LimitsConfig, ModelEntry, ServerConfig};
use router_core::provider::{ChunkStream, Endpoint, ErrorKind};
use router_core::{
    ChatError, ChatResponse, Chunk, Completion, Config, JsonObject, Provider, ProviderError,
    ProviderRequest, Router, Secret,
};
use serde_json::{json, Value};

/// What a scripted provider does on its next call.
#[derive(Debug, Clone)]
enum Step {
    Answer,
    Fail(u16),
    Connect,
    /// Stream: these chunk bodies, then the end.
    Chunks(Vec<Value>),
    /// Stream that fails before its first chunk.
    FailFirstChunk,
}

/// Records every call (entry label, body, key) in a shared log.
#[derive(Debug)]
struct Scripted {
    label: String,
    steps: Mutex<VecDeque<Step>>,
    log: Arc<Mutex<Vec<Call>>>,
}

#[derive(Debug, Clone)]
struct Call {
    label: String,
    body: JsonObject,
    key: Option<String>,
    stream: bool,
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

impl Scripted {
    fn next(&self, request: &ProviderRequest, stream: bool) -> Step {
        self.log.lock().unwrap().push(Call {
            label: self.label.clone(),
            body: request.body.clone(),
            key: request.api_key.as_ref().map(|k| k.expose().to_owned()),
            stream,
        });
        self.steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Answer)
    }
}

fn status(status: u16) -> ProviderError {
    ProviderError::Status {
        status,
        message: format!("scripted {status}"),
        retry_after: None,
    }
}

#[async_trait]
impl Provider for Scripted {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        match self.next(&request, false) {
            Step::Fail(code) => Err(status(code)),
            Step::Connect => Err(ProviderError::Connect {
                detail: "refused".into(),
            }),
            _ => Ok(Completion::from(object(json!({
                "id": "cmpl-1", "object": "chat.completion", "model": request.body["model"],
                "provider": "internal",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {}", self.label)},
                    "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})))),
        }
    }

    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        let chunks = match self.next(&request, true) {
            Step::Fail(code) => return Err(status(code)),
            Step::Connect => {
                return Err(ProviderError::Connect {
                    detail: "refused".into(),
                })
            }
            Step::FailFirstChunk => {
                let item: Result<Chunk, ProviderError> = Err(ProviderError::Truncated {
                    detail: "cut".into(),
                });
                return Ok(Box::pin(futures_util::stream::iter(vec![item])));
            }
            Step::Chunks(chunks) => chunks,
            Step::Answer => vec![
                json!({"id": "c", "object": "chat.completion.chunk", "model": "x", "provider": "p",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": format!("from {}", self.label)}}]}),
                json!({"id": "c", "object": "chat.completion.chunk", "model": "x",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            ],
        };
        let items: Vec<Result<Chunk, ProviderError>> =
            chunks.into_iter().map(|c| Ok(Chunk(object(c)))).collect();
        Ok(Box::pin(futures_util::stream::iter(items)))
    }

    async fn complete_text(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        match self.next(&request, false) {
            Step::Fail(code) => Err(status(code)),
            _ => Ok(Completion::from(object(json!({
                "id": "cmpl-1", "object": "text_completion", "model": request.body["model"],
                "provider": "internal",
                "choices": [{"index": 0, "text": format!("from {}", self.label), "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})))),
        }
    }

    async fn stream_text(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        match self.next(&request, true) {
            Step::Fail(code) => Err(status(code)),
            Step::FailFirstChunk => Ok(Box::pin(futures_util::stream::iter(vec![Err(
                ProviderError::Truncated {
                    detail: "cut".into(),
                },
            )]))),
            _ => {
                let chunk = |text: &str| {
                    Ok(Chunk(object(
                        json!({"id": "c", "object": "text_completion",
                        "model": "x", "choices": [{"index": 0, "text": text}]}),
                    )))
                };
                let items = vec![chunk(&format!("from {}", self.label)), chunk(" end")];
                Ok(Box::pin(futures_util::stream::iter(items)))
            }
        }
    }

    async fn embed(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        match self.next(&request, false) {
            Step::Fail(code) => Err(status(code)),
            _ => Ok(Completion::from(object(json!({
                "object": "list", "model": request.body["model"],
                "data": [{"object": "embedding", "index": 0, "embedding": self.label}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}})))),
        }
    }
}

/// A provider that implements chat only: the other endpoints are the
/// trait's defaults.
#[derive(Debug)]
struct ChatOnly;

#[async_trait]
impl Provider for ChatOnly {
    async fn complete(&self, _: ProviderRequest) -> Result<Completion, ProviderError> {
        Err(status(500))
    }

    async fn stream(&self, _: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        Err(status(500))
    }
}

fn entry(index: usize, name: &str, upstream: &str, keys: &[&str]) -> ModelEntry {
    ModelEntry {
        index,
        id: index as u64 + 1,
        provider_model_name: upstream.into(),
        display_name: name.into(),
        provider_api_keys: keys.iter().map(|k| Secret::new(*k)).collect(),
        is_openai_compatibility: true,
        ..ModelEntry::new(name, "scripted")
    }
}

fn client_key() -> ClientKeyConfig {
    ClientKeyConfig {
        id: 1,
        name: "test".into(),
        ..ClientKeyConfig::new(Secret::new("sk-test"))
    }
}

fn config(models: Vec<ModelEntry>) -> Config {
    Config {
        source: PathBuf::from("test.yaml"),
        server: ServerConfig::default(),
        limits: LimitsConfig::default(),
        retry: Default::default(),
        cooldown: Default::default(),
        models,
        api_keys: vec![client_key()],
    }
}

struct Harness {
    router: Router,
    log: Arc<Mutex<Vec<Call>>>,
    key: router_core::ClientKey,
}

/// Builds a router whose entry `i` runs `scripts[i]`.
fn harness(models: Vec<ModelEntry>, scripts: Vec<Vec<Step>>) -> Harness {
    let log = Arc::new(Mutex::new(Vec::new()));
    let scripts = Mutex::new(scripts.into_iter().map(VecDeque::from).collect::<Vec<_>>());
    let router = Router::new(&config(models), &|entry: &ModelEntry| {
        let steps = std::mem::take(&mut scripts.lock().unwrap()[entry.index]);
        Ok(Arc::new(Scripted {
            label: format!("{}#{}", entry.name, entry.index),
            steps: Mutex::new(steps),
            log: Arc::clone(&log),
        }) as Arc<dyn Provider>)
    })
    .unwrap();
    let key = router.authenticate(Some(b"Bearer sk-test")).unwrap();
    Harness { router, log, key }
}

impl Harness {
    async fn serve(&self, endpoint: Endpoint, body: Value) -> Result<ChatResponse, ChatError> {
        self.router
            .serve(endpoint, &self.key, &serde_json::to_vec(&body).unwrap())
            .await
            .result
    }

    async fn whole(&self, endpoint: Endpoint, body: Value) -> Value {
        match self.serve(endpoint, body).await.unwrap() {
            ChatResponse::Complete(c) => Value::Object(c.into_object().unwrap()),
            other => panic!("expected a complete answer, got {other:?}"),
        }
    }

    async fn chat(&self, body: Value) -> Result<ChatResponse, ChatError> {
        self.router
            .chat(&self.key, &serde_json::to_vec(&body).unwrap())
            .await
            .result
    }

    async fn complete(&self, body: Value) -> Value {
        match self.chat(body).await.unwrap() {
            ChatResponse::Complete(c) => Value::Object(c.into_object().unwrap()),
            other => panic!("expected a complete answer, got {other:?}"),
        }
    }

    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn labels(&self) -> Vec<(String, Option<String>)> {
        self.calls().into_iter().map(|c| (c.label, c.key)).collect()
    }
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn content(answer: &Value) -> &str {
    answer["choices"][0]["message"]["content"].as_str().unwrap()
}

async fn collect(stream: ChunkStream) -> Vec<Result<Value, ErrorKind>> {
    stream
        .map(|item| item.map(|c| Value::Object(c.0)).map_err(|e| e.kind()))
        .collect()
        .await
}

#[tokio::test]
async fn entries_sharing_a_name_are_round_robin() {
    let h = harness(
        vec![
            entry(0, "m", "up-a", &[]),
            entry(1, "other", "up-x", &[]),
            entry(2, "m", "up-b", &[]),
            entry(3, "m", "up-c", &[]),
        ],
        vec![vec![]; 4],
    );
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(content(&h.complete(hello("m")).await).to_owned());
    }
    assert_eq!(
        answers,
        ["from m#0", "from m#2", "from m#3", "from m#0", "from m#2", "from m#3"]
    );
}

#[tokio::test]
async fn provider_keys_are_round_robin_per_entry() {
    let h = harness(vec![entry(0, "m", "up", &["k1", "k2", "k3"])], vec![vec![]]);
    for _ in 0..4 {
        h.complete(hello("m")).await;
    }
    let keys: Vec<_> = h.labels().into_iter().map(|(_, k)| k.unwrap()).collect();
    assert_eq!(keys, ["k1", "k2", "k3", "k1"]);
}

#[tokio::test]
async fn failover_tries_the_next_key_then_the_next_entry_each_once() {
    let h = harness(
        vec![
            entry(0, "m", "up-a", &["a1", "a2"]),
            entry(1, "m", "up-b", &["b1"]),
        ],
        vec![vec![Step::Fail(500), Step::Fail(429)], vec![Step::Answer]],
    );
    let answer = h.complete(hello("m")).await;
    assert_eq!(content(&answer), "from m#1");
    assert_eq!(
        h.labels(),
        [
            ("m#0".to_owned(), Some("a1".to_owned())),
            ("m#0".to_owned(), Some("a2".to_owned())),
            ("m#1".to_owned(), Some("b1".to_owned())),
        ]
    );
}

#[tokio::test]
async fn all_attempts_failing_reports_the_count_and_the_last_error() {
    let h = harness(
        vec![entry(0, "m", "a", &["k1", "k2"]), entry(1, "m", "b", &[])],
        vec![vec![Step::Connect, Step::Fail(503)], vec![Step::Fail(502)]],
    );
    match h.chat(hello("m")).await {
        Err(ChatError::AllFailed { attempts, last }) => {
            assert_eq!(attempts, 3);
            assert_eq!(last.kind(), ErrorKind::ServerError);
            assert!(last.to_string().contains("502"), "{last}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_single_failed_attempt_is_reported_as_itself() {
    let h = harness(vec![entry(0, "m", "a", &[])], vec![vec![Step::Connect]]);
    match h.chat(hello("m")).await {
        Err(ChatError::Upstream { source }) => assert_eq!(source.kind(), ErrorKind::Connect),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn client_errors_from_the_upstream_are_not_retried() {
    let h = harness(
        vec![entry(0, "m", "a", &["k1", "k2"]), entry(1, "m", "b", &[])],
        vec![vec![Step::Fail(400)], vec![]],
    );
    match h.chat(hello("m")).await {
        Err(ChatError::Upstream { source }) => assert_eq!(source.kind(), ErrorKind::ClientError),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.calls().len(), 1);
}

#[tokio::test]
async fn resolution_rules() {
    let mut disabled = entry(1, "off", "x", &[]);
    disabled.enabled = false;
    let mut hidden = entry(2, "hidden", "x", &[]);
    hidden.visible = false;
    let h = harness(
        vec![
            entry(0, "gemini-2.5-pro", "g", &[]),
            disabled,
            hidden,
            entry(3, "gemini-2.5-pro:free", "g-free", &[]),
        ],
        vec![vec![]; 4],
    );
    // The exact name wins over the variant fallback.
    let answer = h.complete(hello("gemini-2.5-pro:free")).await;
    assert_eq!(content(&answer), "from gemini-2.5-pro:free#3");
    assert_eq!(answer["model"], "gemini-2.5-pro:free");
    // An unknown variant falls back to the base name; the client sees what it asked for.
    let answer = h.complete(hello("gemini-2.5-pro:beta")).await;
    assert_eq!(content(&answer), "from gemini-2.5-pro#0");
    assert_eq!(answer["model"], "gemini-2.5-pro:beta");
    // Invisible but enabled is routable; disabled is not.
    assert_eq!(content(&h.complete(hello("hidden")).await), "from hidden#2");
    match h.chat(hello("off")).await {
        Err(ChatError::ModelNotFound { model }) => assert_eq!(model, "off"),
        other => panic!("unexpected {other:?}"),
    }
    let message = h.chat(hello("nope")).await.unwrap_err().to_string();
    assert_eq!(message, "Model nope not found or not available.");
}

#[tokio::test]
async fn the_upstream_sees_its_own_model_name_and_every_unknown_field() {
    let h = harness(vec![entry(0, "m", "upstream-model", &["k"])], vec![vec![]]);
    let answer = h
        .complete(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "provider": {"order": ["x"]}, "vendor_knob": {"deep": [1, 2]}, "temperature": 0.5,
            "stream_options": {"include_usage": true}}),
        )
        .await;
    let call = h.calls().remove(0);
    assert!(!call.stream);
    assert_eq!(
        Value::Object(call.body),
        json!({"model": "upstream-model", "messages": [{"role": "user", "content": "hi"}],
            "vendor_knob": {"deep": [1, 2]}, "temperature": 0.5})
    );
    // The answer names the client-facing model and loses the upstream's `provider`.
    assert_eq!(answer["model"], "m");
    assert!(answer.get("provider").is_none());
    assert_eq!(answer["usage"]["total_tokens"], 3);
}

#[tokio::test]
async fn a_non_object_provider_field_is_forwarded_like_the_seed() {
    let h = harness(vec![entry(0, "m", "up", &[])], vec![vec![]]);
    let mut body = hello("m");
    body["provider"] = json!(7);
    h.complete(body).await;
    assert_eq!(h.calls()[0].body["provider"], 7);
}

#[tokio::test]
async fn streams_ask_for_usage_and_rename_every_chunk() {
    let h = harness(vec![entry(0, "m", "up", &[])], vec![vec![]]);
    let mut body = hello("m");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"other": 1});
    let ChatResponse::Stream(stream) = h.chat(body).await.unwrap() else {
        panic!("expected a stream")
    };
    let chunks = collect(stream).await;
    assert_eq!(chunks.len(), 2);
    for chunk in &chunks {
        let chunk = chunk.as_ref().unwrap();
        assert_eq!(chunk["model"], "m");
        assert!(chunk.get("provider").is_none());
    }
    let call = h.calls().remove(0);
    assert!(call.stream);
    assert_eq!(call.body["stream"], true);
    assert_eq!(
        call.body["stream_options"],
        json!({"other": 1, "include_usage": true})
    );
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_chunk_fails_over() {
    let h = harness(
        vec![entry(0, "m", "a", &[]), entry(1, "m", "b", &[])],
        vec![vec![Step::FailFirstChunk], vec![]],
    );
    let mut body = hello("m");
    body["stream"] = json!(true);
    let ChatResponse::Stream(stream) = h.chat(body).await.unwrap() else {
        panic!("expected a stream")
    };
    let chunks = collect(stream).await;
    assert_eq!(
        chunks[0].as_ref().unwrap()["choices"][0]["delta"]["content"],
        "from m#1"
    );
}

#[tokio::test]
async fn an_error_after_the_first_chunk_reaches_the_client_in_the_stream() {
    // Scripted streams end cleanly; this one breaks after its first chunk.
    #[derive(Debug)]
    struct Breaks;
    #[async_trait]
    impl Provider for Breaks {
        async fn complete(&self, _: ProviderRequest) -> Result<Completion, ProviderError> {
            Err(status(500))
        }
        async fn stream(&self, _: ProviderRequest) -> Result<ChunkStream, ProviderError> {
            let items: Vec<Result<Chunk, ProviderError>> = vec![
                Ok(Chunk(object(
                    json!({"choices": [{"delta": {"content": "a"}}]}),
                ))),
                Err(ProviderError::Truncated {
                    detail: "connection reset".into(),
                }),
            ];
            Ok(Box::pin(futures_util::stream::iter(items)))
        }
    }
    let router = Router::new(
        &config(vec![entry(0, "m", "a", &[]), entry(1, "m", "b", &[])]),
        &|_| Ok(Arc::new(Breaks) as Arc<dyn Provider>),
    )
    .unwrap();
    let key = Arc::new(client_key());
    let mut body = hello("m");
    body["stream"] = json!(true);
    let ChatResponse::Stream(stream) = router
        .chat(&key, &serde_json::to_vec(&body).unwrap())
        .await
        .result
        .unwrap()
    else {
        panic!("expected a stream")
    };
    let chunks = collect(stream).await;
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].as_ref().unwrap()["model"], "m");
    assert_eq!(chunks[1], Err(ErrorKind::Truncated));
}

#[tokio::test]
async fn stream_only_entries_aggregate_tool_calls_for_plain_requests() {
    let mut only = entry(0, "m", "up", &[]);
    only.stream_only = true;
    let h = harness(
        vec![only],
        vec![vec![Step::Chunks(vec![
            json!({"id": "s1", "created": 5, "model": "up", "choices": [{"index": 0, "delta": {"role": "assistant",
                "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}}]}),
            json!({"id": "s1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
                "finish_reason": "tool_calls"}]}),
            json!({"id": "s1", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}}),
        ])]],
    );
    let answer = h.complete(hello("m")).await;
    assert_eq!(
        answer,
        json!({"id": "s1", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10, "cost": 0.0}})
    );
    let call = h.calls().remove(0);
    assert!(call.stream);
    assert_eq!(call.body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn stream_only_with_thinking_moves_thoughts_to_reasoning_content() {
    let mut only = entry(0, "m", "up", &[]);
    only.stream_only = true;
    only.support_google_thinking = true;
    let h = harness(
        vec![only],
        vec![vec![Step::Chunks(vec![
            json!({"id": "s", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "<thought>plan",
                "extra_content": {"google": {"thought": true}}}}]}),
            json!({"id": "s", "choices": [{"index": 0, "delta": {"content": "</thought>Answer"}, "finish_reason": "stop"}]}),
        ])]],
    );
    let answer = h.complete(hello("m")).await;
    assert_eq!(
        answer["choices"][0]["message"],
        json!({"role": "assistant", "content": "Answer", "reasoning_content": "plan"})
    );
}

#[tokio::test]
async fn thinking_is_mapped_per_entry_and_never_leaks_into_the_next_attempt() {
    let mut thinking = entry(0, "m", "a", &[]);
    thinking.support_google_thinking = true;
    let h = harness(
        vec![thinking, entry(1, "m", "b", &[])],
        vec![vec![Step::Fail(500)], vec![]],
    );
    let mut body = hello("m");
    body["reasoning_effort"] = json!("medium");
    h.complete(body).await;
    let calls = h.calls();
    assert_eq!(
        calls[0].body["extra_body"],
        json!({"google": {"thinking_config": {"thinking_budget": 8192, "include_thoughts": true}}})
    );
    assert!(calls[0].body.get("reasoning_effort").is_none());
    // The second entry has no thinking support: it gets the client's field as sent.
    assert_eq!(calls[1].body["reasoning_effort"], "medium");
    assert!(calls[1].body.get("extra_body").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_spread_exactly_and_never_crash() {
    let h = Arc::new(harness(
        vec![
            entry(0, "m", "a", &["k1", "k2"]),
            entry(1, "m", "b", &["k3"]),
        ],
        vec![vec![], vec![]],
    ));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                for _ in 0..25 {
                    h.complete(hello("m")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap();
    }
    let calls = h.calls();
    assert_eq!(calls.len(), 800);
    let count = |label: &str, key: &str| {
        calls
            .iter()
            .filter(|c| c.label == label && c.key.as_deref() == Some(key))
            .count()
    };
    assert_eq!(count("m#0", "k1"), 200);
    assert_eq!(count("m#0", "k2"), 200);
    assert_eq!(count("m#1", "k3"), 400);
}

#[tokio::test]
async fn a_rejected_provider_key_fails_over_to_the_next_key() {
    let h = harness(
        vec![entry(0, "m", "a", &["revoked", "good"])],
        vec![vec![Step::Fail(401)]],
    );
    assert_eq!(content(&h.complete(hello("m")).await), "from m#0");
    let keys: Vec<_> = h.labels().into_iter().map(|(_, k)| k.unwrap()).collect();
    assert_eq!(keys, ["revoked", "good"]);
}

/// `entry` with `supports_completion` and `supports_embedding` as given.
fn capable(entry: ModelEntry, completion: bool, embedding: bool) -> ModelEntry {
    ModelEntry {
        capabilities: Capabilities {
            completion,
            embedding,
            ..Capabilities::default()
        },
        ..entry
    }
}

#[tokio::test]
async fn embeddings_go_to_the_entries_that_support_them_with_the_body_untouched() {
    let h = harness(
        vec![
            entry(0, "m", "up-chat", &[]),
            capable(entry(1, "m", "up-embed", &[]), false, true),
        ],
        vec![vec![], vec![]],
    );
    let body = json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64",
        "dimensions": 8, "stream": true, "unknown": {"kept": [1]}});
    for _ in 0..2 {
        let answer = h.whole(Endpoint::Embeddings, body.clone()).await;
        // The client's name back, `provider` gone, the rest as it came.
        assert_eq!(answer["model"], "m");
        assert_eq!(answer["data"][0]["embedding"], "m#1");
        assert!(answer.get("provider").is_none());
    }
    let calls = h.calls();
    assert_eq!(calls.len(), 2);
    for call in calls {
        assert_eq!(call.label, "m#1");
        assert!(!call.stream);
        let mut expected = body.clone();
        expected["model"] = json!("up-embed");
        assert_eq!(Value::Object(call.body), expected);
    }
}

#[tokio::test]
async fn a_model_without_the_flag_is_not_supported_and_nothing_is_called() {
    let h = harness(
        vec![capable(entry(0, "m", "up", &[]), true, false)],
        vec![vec![]],
    );
    let error = h
        .serve(Endpoint::Embeddings, json!({"model": "m", "input": "x"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ChatError::ModelNotSupported { model, endpoint: Endpoint::Embeddings } if model == "m"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "Model m does not support /v1/embeddings."
    );
    // Resolution comes first: `name:variant` falls back, unknown names are 404s.
    let error = h
        .serve(
            Endpoint::Embeddings,
            json!({"model": "m:free", "input": "x"}),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ChatError::ModelNotSupported { .. }));
    let error = h
        .serve(
            Endpoint::Completions,
            json!({"model": "nope", "prompt": "x"}),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ChatError::ModelNotFound { .. }));
    assert!(h.calls().is_empty());
    // Chat is not gated.
    assert!(h.chat(hello("m")).await.is_ok());
}

#[tokio::test]
async fn bad_inputs_and_prompts_name_the_field() {
    let h = harness(
        vec![capable(entry(0, "m", "up", &[]), true, true)],
        vec![vec![]],
    );
    let check = |endpoint, body: Value, param: &str| {
        let h = &h;
        let param = param.to_owned();
        async move {
            match h.serve(endpoint, body.clone()).await {
                Err(ChatError::InvalidField { param: got, .. }) => {
                    assert_eq!(got.as_deref(), Some(param.as_str()), "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    };
    check(Endpoint::Embeddings, json!({"model": "m"}), "input").await;
    check(
        Endpoint::Embeddings,
        json!({"model": "m", "input": 3}),
        "input",
    )
    .await;
    check(
        Endpoint::Embeddings,
        json!({"model": "m", "input": []}),
        "input",
    )
    .await;
    check(
        Endpoint::Embeddings,
        json!({"model": "m", "input": ["a", 1]}),
        "input[1]",
    )
    .await;
    check(
        Endpoint::Embeddings,
        json!({"model": "m", "input": [[1], []]}),
        "input[1]",
    )
    .await;
    check(
        Endpoint::Embeddings,
        json!({"model": "m", "input": [1, -2]}),
        "input[1]",
    )
    .await;
    check(
        Endpoint::Embeddings,
        json!({"model": "m", "input": "x", "dimensions": 0}),
        "dimensions",
    )
    .await;
    check(Endpoint::Completions, json!({"model": "m"}), "prompt").await;
    check(
        Endpoint::Completions,
        json!({"model": "m", "prompt": {"text": "x"}}),
        "prompt",
    )
    .await;
    check(
        Endpoint::Completions,
        json!({"model": "m", "prompt": "x", "logprobs": true}),
        "logprobs",
    )
    .await;
    // Every accepted form.
    for prompt in [
        json!("x"),
        json!(["x", "y"]),
        json!([1, 2]),
        json!([[1], [2, 3]]),
    ] {
        let body = json!({"model": "m", "prompt": prompt, "logprobs": 2});
        assert!(h.serve(Endpoint::Completions, body).await.is_ok());
    }
    assert_eq!(h.calls().len(), 4);
}

#[tokio::test]
async fn text_completions_fail_over_and_stream_like_chat() {
    let h = harness(
        vec![
            capable(entry(0, "m", "up-a", &[]), true, false),
            capable(entry(1, "m", "up-b", &[]), true, false),
        ],
        vec![vec![Step::Fail(503), Step::FailFirstChunk], vec![]],
    );
    let answer = h
        .whole(Endpoint::Completions, json!({"model": "m", "prompt": "hi"}))
        .await;
    assert_eq!(answer["choices"][0]["text"], "from m#1");
    assert_eq!(answer["model"], "m");
    assert!(answer.get("provider").is_none());
    let calls = h.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].body["model"], "up-a");
    assert_eq!(calls[1].body["model"], "up-b");
    // Not streamed: no stream_options asked of the upstream.
    assert!(calls[1].body.get("stream_options").is_none());

    // Round robin starts this one at entry 1; entry 0's stream fails before
    // its first chunk later, and the next request still gets its answer.
    let body = json!({"model": "m", "prompt": "hi", "stream": true});
    for expected in ["from m#1", "from m#1"] {
        let Ok(ChatResponse::Stream(stream)) = h.serve(Endpoint::Completions, body.clone()).await
        else {
            panic!("expected a stream")
        };
        let chunks = collect(stream).await;
        let chunks: Vec<Value> = chunks.into_iter().map(Result::unwrap).collect();
        assert_eq!(chunks[0]["choices"][0]["text"], expected);
        assert!(chunks.iter().all(|chunk| chunk["model"] == "m"));
    }
    let calls = h.calls();
    assert!(calls.iter().all(|call| call.stream));
    assert!(calls
        .iter()
        .all(|call| call.body["stream_options"] == json!({"include_usage": true})));
    let labels: Vec<&str> = calls.iter().map(|call| call.label.as_str()).collect();
    assert_eq!(labels, ["m#1", "m#0", "m#1"]);
}

#[tokio::test]
async fn a_provider_without_the_endpoint_answers_unsupported_and_the_next_entry_serves() {
    let config_with = config;
    let config = config_with(vec![
        capable(entry(0, "m", "up-a", &[]), false, true),
        capable(entry(1, "m", "up-b", &[]), false, true),
    ]);
    let log = Arc::new(Mutex::new(Vec::new()));
    let router = Router::new(&config, &|entry: &ModelEntry| {
        if entry.index == 0 {
            return Ok(Arc::new(ChatOnly) as Arc<dyn Provider>);
        }
        Ok(Arc::new(Scripted {
            label: "b".into(),
            steps: Mutex::new(VecDeque::new()),
            log: Arc::clone(&log),
        }) as Arc<dyn Provider>)
    })
    .unwrap();
    let key = router.authenticate(Some(b"Bearer sk-test")).unwrap();
    let body = serde_json::to_vec(&json!({"model": "m", "input": "x"})).unwrap();
    // Whichever entry round robin starts at, entry 1 answers: the guard
    // forwards `embed` to its own method, and entry 0's default answer
    // (unsupported) fails over without touching its health.
    for _ in 0..3 {
        let Ok(ChatResponse::Complete(answer)) = router.embeddings(&key, &body).await.result else {
            panic!("expected an answer")
        };
        assert_eq!(answer.get("data").unwrap()[0]["embedding"], "b");
    }
    assert_eq!(log.lock().unwrap().len(), 3);

    // Alone, the chat-only provider's answer reaches the client as such.
    let config = config_with(vec![capable(entry(0, "m", "up-a", &[]), false, true)]);
    let router = Router::new(&config, &|_: &ModelEntry| {
        Ok(Arc::new(ChatOnly) as Arc<dyn Provider>)
    })
    .unwrap();
    let error = router.embeddings(&key, &body).await.result.unwrap_err();
    let ChatError::Upstream { source } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(source.kind(), ErrorKind::Unsupported);
}
