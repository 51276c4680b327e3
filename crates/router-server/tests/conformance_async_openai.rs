//! Conformance of router-server with the `async-openai` crate.
//!
//! async-openai deserializes strictly into typed structs, so a missing field, a wrong
//! type (a numeric `code`, a string `created`) or a wrong event shape fails here even
//! when lenient clients would not notice. Each test starts its own router-server on
//! port 0 with a config it writes itself and reads the bound address from the
//! `listening on http://HOST:PORT` line the binary prints on stderr.
//!
//! `cargo xtask conformance` runs this beside the Python SDK checks in
//! `tests/conformance/`; it also runs with every `cargo test`.

// clippy's allow-expect-in-tests covers #[test] functions but not the harness helpers
// beside them, and a harness that cannot start the server must fail the test loudly.
#![allow(clippy::expect_used)]

#[path = "../../router-providers/tests/support/mod.rs"]
mod upstream;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestUserMessageArgs,
    ChatCompletionStreamOptions, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
    FinishReason,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use async_openai::types::embeddings::{CreateEmbeddingRequestArgs, EncodingFormat};
use async_openai::Client;
use futures_util::StreamExt;

const CONFIG: &str = "\
server:
  host: 127.0.0.1
  port: 0
models:
  - id: 1
    name: mock-gpt
    provider: mock
    enabled: true
    visible: true
    supports_chat: true
    supports_completion: true
    supports_embedding: true
api_keys:
  - id: 1
    key: sk-router-dev-key
    name: dev
    is_active: true
";
const CLIENT_KEY: &str = "sk-router-dev-key";
const MODEL: &str = "mock-gpt";
const PROMPT: &str = "Say hello to the conformance suite";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A router-server child process, killed when dropped.
struct RouterServer {
    child: Child,
    address: String,
    config_dir: PathBuf,
    /// Everything the server printed, for failure messages. Shared with the threads
    /// that drain its stdout and stderr, which must keep reading so that a full pipe
    /// never blocks the server.
    output: Arc<Mutex<String>>,
}

impl RouterServer {
    fn start() -> Self {
        Self::start_with(CONFIG)
    }

    fn start_with(config: &str) -> Self {
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        let config_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "conformance-async-openai-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&config_dir).expect("create the config directory");
        let config_path = config_dir.join("config.yaml");
        std::fs::write(&config_path, config).expect("write the config");

        // ROUTER_SERVER_BIN lets the same test run against another build (release, say).
        let binary = std::env::var_os("ROUTER_SERVER_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_router-server")),
            PathBuf::from,
        );
        let mut child = Command::new(&binary)
            .arg("--config")
            .arg(&config_path)
            .current_dir(&config_dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));

        let output = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        drain(stderr, Arc::clone(&output), Some(address_tx));
        drain(stdout, Arc::clone(&output), None);

        match address_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(address) => Self {
                child,
                address,
                config_dir,
                output,
            },
            Err(error) => {
                let _ = child.kill();
                let status = child.wait();
                let _ = std::fs::remove_dir_all(&config_dir);
                panic!(
                    "router-server printed no `listening on http://` line on stderr ({error}; exit: {status:?}); its output:\n{}",
                    output.lock().map(|text| text.clone()).unwrap_or_default()
                );
            }
        }
    }

    fn client(&self, key: &str) -> Client<OpenAIConfig> {
        Client::with_config(
            OpenAIConfig::new()
                .with_api_base(format!("http://{}/v1", self.address))
                .with_api_key(key),
        )
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .map(|text| text.clone())
            .unwrap_or_default()
    }
}

impl Drop for RouterServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.config_dir);
    }
}

/// Reads `stream` line by line until it closes, keeping every line in `output`; the
/// first `listening on http://ADDRESS` line sends ADDRESS on `address_tx`.
fn drain(
    stream: impl std::io::Read + Send + 'static,
    output: Arc<Mutex<String>>,
    mut address_tx: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(address) = address_tx.as_ref().and_then(|_| listening_address(&line)) {
                if let Some(tx) = address_tx.take() {
                    let _ = tx.send(address);
                }
            }
            if let Ok(mut output) = output.lock() {
                output.push_str(&line);
                output.push('\n');
            }
        }
    });
}

fn listening_address(line: &str) -> Option<String> {
    const MARKER: &str = "listening on http://";
    let start = line.find(MARKER)? + MARKER.len();
    let address: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '[' | ']'))
        .collect();
    (!address.is_empty()).then_some(address)
}

fn user_message(content: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestUserMessageArgs::default()
        .content(content)
        .build()
        .expect("a user message")
        .into()
}

fn chat_request(content: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(MODEL)
        .messages(vec![user_message(content)])
        .build()
        .expect("a chat request")
}

fn expected_content() -> String {
    format!("This is a mock response to: {PROMPT}")
}

#[test]
fn listening_line_gives_the_address() {
    let check = |line: &str, expected: Option<&str>| {
        assert_eq!(listening_address(line).as_deref(), expected, "{line}");
    };
    check("listening on http://127.0.0.1:4000", Some("127.0.0.1:4000"));
    check(
        "2026-01-01T00:00:00Z INFO router_server: listening on http://127.0.0.1:39211 (h1+h2c)",
        Some("127.0.0.1:39211"),
    );
    check("listening on http://[::1]:80\u{1b}[0m", Some("[::1]:80"));
    check("listening on https://127.0.0.1:4000", None);
    check("starting", None);
}

#[tokio::test]
async fn models_list_and_retrieve_parse_strictly() {
    let server = RouterServer::start();
    let client = server.client(CLIENT_KEY);

    let list = client
        .models()
        .list()
        .await
        .unwrap_or_else(|error| panic!("models list: {error}\n{}", server.output()));
    assert_eq!(list.object, "list");
    assert!(
        list.data.iter().any(|model| model.id == MODEL),
        "{MODEL} not listed: {list:?}"
    );
    assert!(
        list.data.iter().all(|model| model.object == "model"),
        "{list:?}"
    );

    let model = client
        .models()
        .retrieve(MODEL)
        .await
        .unwrap_or_else(|error| panic!("models retrieve: {error}\n{}", server.output()));
    assert_eq!(model.id, MODEL);
    assert_eq!(model.object, "model");
}

#[tokio::test]
async fn chat_completion_parses_strictly() {
    let server = RouterServer::start();
    let client = server.client(CLIENT_KEY);

    let response = client
        .chat()
        .create(chat_request(PROMPT))
        .await
        .unwrap_or_else(|error| panic!("chat create: {error}\n{}", server.output()));
    assert_eq!(response.object, "chat.completion");
    assert_eq!(response.model, MODEL, "the client-facing model name");
    assert_eq!(response.choices.len(), 1, "{response:?}");
    let choice = &response.choices[0];
    assert_eq!(
        choice.message.content.as_deref(),
        Some(expected_content().as_str())
    );
    assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
    let usage = response.usage.expect("usage in a non-streamed answer");
    assert!(
        usage.prompt_tokens > 0 && usage.completion_tokens > 0,
        "{usage:?}"
    );
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
}

#[tokio::test]
async fn streamed_chat_completion_parses_strictly() {
    let server = RouterServer::start();
    let client = server.client(CLIENT_KEY);

    let mut request = chat_request(PROMPT);
    request.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: Some(true),
        ..ChatCompletionStreamOptions::default()
    });
    let mut stream = client
        .chat()
        .create_stream(request)
        .await
        .unwrap_or_else(|error| panic!("chat create_stream: {error}\n{}", server.output()));

    let mut content = String::new();
    let mut content_chunks = 0;
    let mut finish_reasons = Vec::new();
    let mut usages = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.unwrap_or_else(|error| panic!("stream chunk: {error}\n{}", server.output()));
        assert_eq!(chunk.object, "chat.completion.chunk");
        assert_eq!(chunk.model, MODEL);
        for choice in &chunk.choices {
            if let Some(delta) = choice
                .delta
                .content
                .as_deref()
                .filter(|delta| !delta.is_empty())
            {
                content.push_str(delta);
                content_chunks += 1;
            }
            finish_reasons.extend(choice.finish_reason);
        }
        if let Some(usage) = chunk.usage {
            assert!(chunk.choices.is_empty(), "the usage chunk has choices");
            usages.push(usage);
        }
    }
    assert_eq!(content, expected_content());
    assert!(
        content_chunks > 1,
        "the answer came in {content_chunks} chunk(s)"
    );
    assert_eq!(finish_reasons, [FinishReason::Stop]);
    assert_eq!(usages.len(), 1, "exactly one usage chunk: {usages:?}");
    assert!(usages[0].completion_tokens > 0, "{:?}", usages[0]);
}

#[tokio::test]
async fn wrong_key_is_an_api_error() {
    let server = RouterServer::start();
    let client = server.client("sk-not-a-router-key");

    match client.chat().create(chat_request(PROMPT)).await {
        Err(OpenAIError::ApiError(error)) => {
            assert_eq!(error.status_code.as_u16(), 401, "{error}");
            assert_eq!(error.api_error.message, "Invalid API key");
        }
        other => panic!(
            "expected a 401 ApiError, got {other:?}\n{}",
            server.output()
        ),
    }
}

#[tokio::test]
async fn unknown_model_is_an_api_error() {
    let server = RouterServer::start();
    let client = server.client(CLIENT_KEY);

    let mut request = chat_request(PROMPT);
    request.model = "no-such-model".to_owned();
    match client.chat().create(request).await {
        Err(OpenAIError::ApiError(error)) => {
            assert_eq!(error.status_code.as_u16(), 404, "{error}");
            assert!(!error.api_error.message.is_empty());
        }
        other => panic!(
            "expected a 404 ApiError, got {other:?}\n{}",
            server.output()
        ),
    }
}

#[tokio::test]
async fn embeddings_parse_strictly_as_floats_and_as_base64() {
    let server = RouterServer::start();
    let client = server.client(CLIENT_KEY);
    let request = CreateEmbeddingRequestArgs::default()
        .model(MODEL)
        .input(vec!["first text", "second text"])
        .build()
        .expect("an embeddings request");
    let response = client
        .embeddings()
        .create(request)
        .await
        .unwrap_or_else(|error| panic!("{error}; server output:\n{}", server.output()));
    assert_eq!(response.model, MODEL);
    assert_eq!(response.object, "list");
    assert_eq!(response.data.len(), 2);
    assert_eq!(response.data[1].index, 1);
    assert_eq!(response.data[0].embedding.len(), 8);
    assert!(response.usage.prompt_tokens > 0);
    assert_eq!(response.usage.total_tokens, response.usage.prompt_tokens);

    let request = CreateEmbeddingRequestArgs::default()
        .model(MODEL)
        .input("first text")
        .encoding_format(EncodingFormat::Base64)
        .build()
        .expect("an embeddings request");
    let response = client
        .embeddings()
        .create_base64(request)
        .await
        .unwrap_or_else(|error| panic!("{error}; server output:\n{}", server.output()));
    assert_eq!(response.data.len(), 1);
    // 8 little-endian f32s: 32 bytes, 44 base64 characters.
    assert_eq!(response.data[0].embedding.0.len(), 44);
}

#[tokio::test]
async fn text_completions_parse_strictly_whole_and_streamed() {
    let server = RouterServer::start();
    let client = server.client(CLIENT_KEY);
    let request = CreateCompletionRequestArgs::default()
        .model(MODEL)
        .prompt(PROMPT)
        .build()
        .expect("a completion request");
    let response = client
        .completions()
        .create(request)
        .await
        .unwrap_or_else(|error| panic!("{error}; server output:\n{}", server.output()));
    assert_eq!(response.model, MODEL);
    assert_eq!(response.object, "text_completion");
    assert_eq!(response.choices.len(), 1);
    assert_eq!(response.choices[0].text, expected_content());
    let usage = response.usage.expect("usage");
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    let request = CreateCompletionRequestArgs::default()
        .model(MODEL)
        .prompt(PROMPT)
        .stream(true)
        .build()
        .expect("a completion request");
    let mut stream = client
        .completions()
        .create_stream(request)
        .await
        .unwrap_or_else(|error| panic!("{error}; server output:\n{}", server.output()));
    let mut text = String::new();
    let mut chunks = 0;
    let mut usage_chunks = 0;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.unwrap_or_else(|error| panic!("{error}; server output:\n{}", server.output()));
        assert_eq!(chunk.model, MODEL);
        chunks += 1;
        usage_chunks += usize::from(chunk.usage.is_some());
        for choice in &chunk.choices {
            text.push_str(&choice.text);
        }
    }
    assert_eq!(text, expected_content());
    assert!(chunks > 2, "{chunks} chunks: not streamed");
    assert_eq!(usage_chunks, 1);
}

#[tokio::test]
async fn embeddings_of_an_unknown_model_are_an_api_error() {
    let server = RouterServer::start();
    let request = CreateEmbeddingRequestArgs::default()
        .model("no-such-model")
        .input("x")
        .build()
        .expect("an embeddings request");
    match server.client(CLIENT_KEY).embeddings().create(request).await {
        Err(OpenAIError::ApiError(error)) => {
            assert_eq!(error.status_code.as_u16(), 404, "{error}");
            assert_eq!(
                error.api_error.code.as_deref(),
                Some("model_not_found"),
                "{error}"
            );
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A tool-calling conversation streamed through an `anthropic` entry parses
/// strictly and gives exactly what a native OpenAI model gives for the same
/// answer. Both upstreams are in this process: one replays Anthropic's
/// recorded stream, the other OpenAI's recorded stream of the same answer
/// (same call ids, arguments and token counts).
#[tokio::test]
async fn a_streamed_tool_call_through_anthropic_matches_a_native_openai_stream() {
    let upstream = upstream::Upstream::start(|request| {
        if request.path_and_query == "/v1/messages" {
            upstream::Reply::sse(upstream::vendor_fixture("anthropic", "tool_calls_only.sse"))
        } else {
            upstream::Reply::sse(upstream::vendor_fixture(
                "openai",
                "chat_stream_tool_calls.sse",
            ))
        }
    })
    .await;
    let config = [
        "server:\n  host: 127.0.0.1\n  port: 0\nlimits:\n  ledger: false\nmodels:\n".to_owned(),
        format!(
            "  - name: claude-tools\n    provider: anthropic\n    base_url: {}\n    provider_api_key: [\"ak-conformance\"]\n    enabled: true\n    visible: true\n",
            upstream.url("")
        ),
        format!(
            "  - name: gpt-tools\n    provider: openai\n    base_url: {}\n    provider_api_key: [\"sk-conformance\"]\n    enabled: true\n    visible: true\n",
            upstream.url("/v1")
        ),
        format!("api_keys:\n  - id: 1\n    key: {CLIENT_KEY}\n    name: dev\n    is_active: true\n"),
    ]
    .concat();
    let server = RouterServer::start_with(&config);
    let client = server.client(CLIENT_KEY);

    let native = tool_call_chunks(&client, &server, "gpt-tools").await;
    let translated = tool_call_chunks(&client, &server, "claude-tools").await;
    assert_eq!(translated, native);
    // And the answer is the tool calls, in two parallel calls.
    assert_eq!(native.len(), 6, "{native:#?}");
    assert_eq!(native[4]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(native[5]["usage"]["total_tokens"], 135);
}

/// The chunks of one streamed answer as async-openai parsed them, without
/// what differs by nature between two upstreams (ids, times, the model's
/// name, the fingerprint) and with usage reduced to the token counts.
async fn tool_call_chunks(
    client: &Client<OpenAIConfig>,
    server: &RouterServer,
    model: &str,
) -> Vec<serde_json::Value> {
    let request: CreateChatCompletionRequest = serde_json::from_value(serde_json::json!({
        "model": model,
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Weather in Paris and Tokyo?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
    }))
    .expect("a tool-calling request");
    let mut stream = client
        .chat()
        .create_stream(request)
        .await
        .unwrap_or_else(|error| panic!("{model}: create_stream: {error}\n{}", server.output()));
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .unwrap_or_else(|error| panic!("{model}: stream chunk: {error}\n{}", server.output()));
        assert_eq!(chunk.model, model);
        let mut value = serde_json::to_value(&chunk).expect("a chunk serialises");
        let object = value.as_object_mut().expect("a chunk is an object");
        for field in [
            "id",
            "created",
            "model",
            "system_fingerprint",
            "service_tier",
        ] {
            object.remove(field);
        }
        if let Some(usage) = chunk.usage {
            object.insert(
                "usage".to_owned(),
                serde_json::json!({
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens,
                }),
            );
        }
        chunks.push(value);
    }
    chunks
}
