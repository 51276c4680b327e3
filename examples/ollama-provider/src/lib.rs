//! A provider for an API the router does not ship: Ollama's native
//! `/api/chat` (not its OpenAI-compatible endpoint), with NDJSON streaming.
//!
//! It is a crate of its own that depends on `router-core` alone among the
//! router's crates: it implements [`Provider`] and [`ProviderFactory`], and a
//! binary registers the factory by name (`examples/custom-server`):
//!
//! ```yaml
//! models:
//!   - name: llama
//!     provider: ollama
//!     provider_model_name: llama3.2
//!     base_url: http://127.0.0.1:11434
//!     enabled: true
//! ```
//!
//! The router hands the adapter an OpenAI Chat Completions body (with `model`
//! already the entry's `provider_model_name`) and expects OpenAI-shaped
//! answers back; everything Ollama-shaped stays inside this crate:
//!
//! - **Request.** `messages` keep their roles (`developer` becomes
//!   `system`); text parts of a content array are joined, `data:` image URLs
//!   become Ollama's base64 `images`; assistant `tool_calls` carry their
//!   arguments as JSON objects, as Ollama wants them. `tools` pass as they
//!   are (Ollama reads OpenAI's shape). `temperature`, `top_p`, `seed`,
//!   `stop`, `presence_penalty`, `frequency_penalty` and
//!   `max_completion_tokens`/`max_tokens` (as `num_predict`) go to
//!   `options`; `response_format` JSON modes to `format`.
//! - **Answer.** `message.content` and `message.tool_calls` (given ids
//!   `call_0`, `call_1`… and string arguments), `done_reason` to
//!   `finish_reason` (`tool_calls` when the model called tools), and
//!   `prompt_eval_count`/`eval_count` as `usage`.
//! - **Stream.** One JSON object per line. The first chunk carries
//!   `role: assistant`, each line's text its `content` delta, the `done`
//!   line the `finish_reason`, followed by a usage chunk when the body asked
//!   for `stream_options.include_usage`. A body that ends before `done` is
//!   [`ProviderError::Truncated`]; an `{"error": …}` line mid-stream is an
//!   error inside the stream.
//! - **Errors.** A non-2xx status becomes [`ProviderError::Status`] with
//!   Ollama's `error` text (bounded) and `Retry-After`, so the engine treats
//!   404 (model not pulled) as the client's error and 5xx as a reason to
//!   fail over.
//! - **Timeouts.** The entry's: connect, first byte, the silence between
//!   two lines of a stream, and the whole attempt.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use router_core::config::{ModelEntry, Timeouts};
use router_core::provider::{BuildResult, ChunkStream, ProviderFactory};
use router_core::{Chunk, Completion, JsonObject, Provider, ProviderError, ProviderRequest};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

/// The name a binary registers the factory under, as in `provider: ollama`.
pub const PROVIDER_NAME: &str = "ollama";

/// The longest NDJSON line accepted: a line is one token or one tool call,
/// so anything near this is not Ollama talking.
const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// How much of an error body is read to find Ollama's message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// How much of Ollama's error message is passed on, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Builds an [`OllamaProvider`] for each `provider: ollama` entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct OllamaFactory;

impl ProviderFactory for OllamaFactory {
    fn build(&self, entry: &ModelEntry) -> BuildResult {
        Ok(Arc::new(OllamaProvider::new(entry)?))
    }
}

/// Talks to one Ollama server for one model entry.
#[derive(Debug)]
pub struct OllamaProvider {
    client: Client<HttpConnector, Full<Bytes>>,
    chat_url: Uri,
    timeouts: Timeouts,
    /// Numbers the answers' ids.
    next_id: AtomicU64,
}

impl OllamaProvider {
    /// The entry's `base_url` is Ollama's root (`http://127.0.0.1:11434`);
    /// requests go to `{base_url}/api/chat`.
    pub fn new(entry: &ModelEntry) -> Result<Self, String> {
        let base = entry.base_url.as_ref().ok_or_else(|| {
            "an `ollama` entry needs `base_url`, Ollama's root such as `http://127.0.0.1:11434`"
                .to_owned()
        })?;
        if base.scheme() != "http" {
            return Err(format!(
                "the `ollama` provider speaks plain HTTP; `base_url` has scheme `{}`",
                base.scheme()
            ));
        }
        let chat_url = format!("{}/api/chat", base.as_str().trim_end_matches('/'))
            .parse::<Uri>()
            .map_err(|error| format!("`base_url` does not make a request URL: {error}"))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(entry.timeouts.connect));
        connector.set_nodelay(true);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            chat_url,
            timeouts: entry.timeouts,
            next_id: AtomicU64::new(1),
        })
    }

    fn id(&self) -> String {
        format!(
            "chatcmpl-ollama-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Sends the translated body and waits for a 2xx response head.
    async fn send(&self, body: &JsonObject, stream: bool) -> Result<Incoming, ProviderError> {
        let payload = serde_json::to_vec(&ollama_request(body, stream)?).map_err(|error| {
            ProviderError::InvalidResponse {
                detail: format!("cannot encode the request: {error}"),
            }
        })?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.chat_url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|error| ProviderError::Connect {
                detail: format!("cannot build the request: {error}"),
            })?;
        let response = tokio::time::timeout(self.timeouts.first_byte, self.client.request(request))
            .await
            .map_err(|_| ProviderError::Timeout {
                after: self.timeouts.first_byte,
            })?
            .map_err(|error| ProviderError::Connect {
                detail: error.to_string(),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.into_body());
        }
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_limited(response.into_body(), MAX_ERROR_BODY_BYTES).await;
        Err(ProviderError::Status {
            status: status.as_u16(),
            message: error_message(&body)
                .unwrap_or_else(|| format!("ollama answered status {}", status.as_u16())),
            retry_after,
        })
    }
}

#[async_trait]
impl Provider for OllamaProvider {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let deadline = Instant::now() + self.timeouts.total;
        let model = model_of(&request.body);
        let body = self.send(&request.body, false).await?;
        let bytes = tokio::time::timeout_at(deadline, body.collect())
            .await
            .map_err(|_| ProviderError::Timeout {
                after: self.timeouts.total,
            })?
            .map_err(|error| ProviderError::Truncated {
                detail: error.to_string(),
            })?
            .to_bytes();
        let answer: Value =
            serde_json::from_slice(&bytes).map_err(|_| ProviderError::InvalidResponse {
                detail: "ollama's answer is not JSON".to_owned(),
            })?;
        if let Some(message) = answer.get("error") {
            return Err(ProviderError::InvalidResponse {
                detail: format!("ollama reported an error: {}", bounded(message)),
            });
        }
        Ok(Completion::from(completion(&answer, &model, &self.id())))
    }

    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        let deadline = Instant::now() + self.timeouts.total;
        let include_usage = request
            .body
            .get("stream_options")
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let body = self.send(&request.body, true).await?;
        let state = StreamState {
            body,
            lines: LineSplitter::default(),
            pending: VecDeque::new(),
            translator: Translator {
                id: self.id(),
                model: model_of(&request.body),
                created: unix_now(),
                include_usage,
                first: true,
                tool_calls: 0,
            },
            idle: self.timeouts.idle,
            total: self.timeouts.total,
            deadline,
            finished: false,
        };
        Ok(Box::pin(stream::unfold(state, StreamState::next)) as Pin<Box<_>>)
    }
}

/// The request Ollama's `/api/chat` takes, from an OpenAI chat body.
fn ollama_request(body: &JsonObject, stream: bool) -> Result<Value, ProviderError> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| messages.iter().map(ollama_message).collect())
        .transpose()?
        .unwrap_or_default();
    let mut request = Map::new();
    request.insert("model".to_owned(), json!(model_of(body)));
    request.insert("messages".to_owned(), Value::Array(messages));
    request.insert("stream".to_owned(), Value::Bool(stream));
    if let Some(tools) = body.get("tools") {
        request.insert("tools".to_owned(), tools.clone());
    }
    let mut options = Map::new();
    for (ours, theirs) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
        ("max_tokens", "num_predict"),
        // The newer name wins over the older one.
        ("max_completion_tokens", "num_predict"),
    ] {
        if let Some(value) = body.get(ours).filter(|value| !value.is_null()) {
            options.insert(theirs.to_owned(), value.clone());
        }
    }
    match body.get("stop") {
        Some(Value::String(stop)) => {
            options.insert("stop".to_owned(), json!([stop]));
        }
        Some(stops @ Value::Array(_)) => {
            options.insert("stop".to_owned(), stops.clone());
        }
        _ => {}
    }
    if !options.is_empty() {
        request.insert("options".to_owned(), Value::Object(options));
    }
    if let Some(format) = body.get("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                request.insert("format".to_owned(), json!("json"));
            }
            Some("json_schema") => {
                if let Some(schema) = format.pointer("/json_schema/schema") {
                    request.insert("format".to_owned(), schema.clone());
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(request))
}

/// One OpenAI message as Ollama takes it.
fn ollama_message(message: &Value) -> Result<Value, ProviderError> {
    let role = match message.get("role").and_then(Value::as_str) {
        Some("developer") => "system",
        Some(role) => role,
        None => return Err(client_error("every message needs a `role`")),
    };
    let mut text = String::new();
    let mut images = Vec::new();
    match message.get("content") {
        Some(Value::String(content)) => text.push_str(content),
        Some(Value::Array(parts)) => {
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    Some("image_url") => {
                        let url = part
                            .pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        // Ollama takes the image itself, never a link.
                        let data = url
                            .strip_prefix("data:")
                            .and_then(|rest| rest.split_once(";base64,"))
                            .map(|(_, data)| data)
                            .ok_or_else(|| {
                                client_error(
                                    "images must be `data:` URLs for an ollama model; \
                                     it cannot fetch a link",
                                )
                            })?;
                        images.push(json!(data));
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    let mut out = Map::new();
    out.insert("role".to_owned(), json!(role));
    out.insert("content".to_owned(), json!(text));
    if !images.is_empty() {
        out.insert("images".to_owned(), Value::Array(images));
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        let calls: Vec<Value> = calls
            .iter()
            .map(|call| {
                let function = call.get("function").cloned().unwrap_or(Value::Null);
                // OpenAI sends arguments as a JSON string, Ollama wants the object.
                let arguments = function
                    .get("arguments")
                    .and_then(Value::as_str)
                    .and_then(|text| serde_json::from_str::<Value>(text).ok())
                    .unwrap_or_else(|| json!({}));
                json!({"function": {"name": function.get("name"), "arguments": arguments}})
            })
            .collect();
        out.insert("tool_calls".to_owned(), Value::Array(calls));
    }
    Ok(Value::Object(out))
}

/// An OpenAI `chat.completion` from Ollama's complete answer.
fn completion(answer: &Value, model: &str, id: &str) -> JsonObject {
    let content = answer
        .pointer("/message/content")
        .and_then(Value::as_str)
        .unwrap_or("");
    let calls = tool_calls(answer.pointer("/message/tool_calls"), 0, false);
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls.clone());
    }
    let mut completion = json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(answer, !calls.is_empty()),
        }],
    });
    if let Some(usage) = usage(answer) {
        completion["usage"] = usage;
    }
    object(completion)
}

/// Ollama's tool calls as OpenAI's, numbered from `first`; `indexed` adds
/// the `index` a stream's deltas carry.
fn tool_calls(calls: Option<&Value>, first: usize, indexed: bool) -> Vec<Value> {
    let Some(calls) = calls.and_then(Value::as_array) else {
        return Vec::new();
    };
    calls
        .iter()
        .enumerate()
        .map(|(offset, call)| {
            let number = first + offset;
            let arguments = match call.pointer("/function/arguments") {
                Some(Value::String(text)) => text.clone(),
                Some(arguments) => arguments.to_string(),
                None => "{}".to_owned(),
            };
            let mut out = json!({
                "id": format!("call_{number}"),
                "type": "function",
                "function": {"name": call.pointer("/function/name"), "arguments": arguments},
            });
            if indexed {
                out["index"] = json!(number);
            }
            out
        })
        .collect()
}

fn finish_reason(answer: &Value, called_tools: bool) -> &'static str {
    if called_tools {
        return "tool_calls";
    }
    match answer.get("done_reason").and_then(Value::as_str) {
        Some("length") => "length",
        _ => "stop",
    }
}

fn usage(answer: &Value) -> Option<Value> {
    let prompt = answer.get("prompt_eval_count").and_then(Value::as_u64);
    let completion = answer.get("eval_count").and_then(Value::as_u64);
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    let (prompt, completion) = (prompt.unwrap_or(0), completion.unwrap_or(0));
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }))
}

/// Turns Ollama's stream lines into OpenAI chunks.
#[derive(Debug)]
struct Translator {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// No chunk sent yet: the next carries `role: assistant`.
    first: bool,
    /// Tool calls sent so far, so each keeps its own `index`.
    tool_calls: usize,
}

impl Translator {
    fn chunk(&self, choices: Value) -> Chunk {
        Chunk(object(json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })))
    }

    /// The chunks of one line, and whether it was the last.
    fn line(&mut self, line: &Value, out: &mut VecDeque<Chunk>) -> Result<bool, ProviderError> {
        if let Some(message) = line.get("error") {
            return Err(ProviderError::InvalidResponse {
                detail: format!("ollama reported an error mid-stream: {}", bounded(message)),
            });
        }
        let mut delta = Map::new();
        if self.first {
            self.first = false;
            delta.insert("role".to_owned(), json!("assistant"));
        }
        let content = line
            .pointer("/message/content")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !content.is_empty() || delta.contains_key("role") {
            delta.insert("content".to_owned(), json!(content));
        }
        let calls = tool_calls(line.pointer("/message/tool_calls"), self.tool_calls, true);
        self.tool_calls += calls.len();
        if !calls.is_empty() {
            delta.insert("tool_calls".to_owned(), Value::Array(calls));
        }
        if !delta.is_empty() {
            out.push_back(self.chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}])));
        }
        if line.get("done").and_then(Value::as_bool) != Some(true) {
            return Ok(false);
        }
        let finish = finish_reason(line, self.tool_calls > 0);
        out.push_back(self.chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}])));
        if self.include_usage {
            if let Some(usage) = usage(line) {
                let mut chunk = self.chunk(json!([]));
                chunk.0.insert("usage".to_owned(), usage);
                out.push_back(chunk);
            }
        }
        Ok(true)
    }
}

/// Splits a byte stream into lines, bounded in length.
#[derive(Debug, Default)]
struct LineSplitter {
    buffer: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes; returns the complete lines they finish.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, ProviderError> {
        self.buffer.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            lines.push(line);
        }
        if self.buffer.len() > MAX_LINE_BYTES {
            return Err(ProviderError::InvalidResponse {
                detail: format!("a stream line is longer than {MAX_LINE_BYTES} bytes"),
            });
        }
        Ok(lines)
    }

    /// What is left when the body ends: a last line without its newline.
    fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.buffer.is_empty()).then(|| std::mem::take(&mut self.buffer))
    }
}

struct StreamState {
    body: Incoming,
    lines: LineSplitter,
    pending: VecDeque<Chunk>,
    translator: Translator,
    idle: Duration,
    total: Duration,
    deadline: Instant,
    /// The `done` line was read, or an error was yielded: nothing follows
    /// what is pending.
    finished: bool,
}

impl StreamState {
    async fn next(mut self) -> Option<(Result<Chunk, ProviderError>, Self)> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some((Ok(chunk), self));
            }
            if self.finished {
                return None;
            }
            let result = self.read().await;
            if let Err(error) = result {
                self.finished = true;
                return Some((Err(error), self));
            }
        }
    }

    /// Reads one frame of the body and translates the lines it completes.
    async fn read(&mut self) -> Result<(), ProviderError> {
        let wait = self
            .idle
            .min(self.deadline.saturating_duration_since(Instant::now()));
        let frame = tokio::time::timeout(wait, self.body.frame())
            .await
            .map_err(|_| ProviderError::Timeout {
                after: if wait < self.idle {
                    self.total
                } else {
                    self.idle
                },
            })?;
        let lines = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => self.lines.push(&data)?,
                // Trailers carry nothing for us.
                Err(_) => Vec::new(),
            },
            Some(Err(error)) => {
                return Err(ProviderError::Truncated {
                    detail: error.to_string(),
                })
            }
            None => {
                let last = self.lines.finish().into_iter().collect::<Vec<_>>();
                self.translate(&last)?;
                if self.finished {
                    return Ok(());
                }
                return Err(ProviderError::Truncated {
                    detail: "ollama's stream ended before its `done` line".to_owned(),
                });
            }
        };
        self.translate(&lines)
    }

    fn translate(&mut self, lines: &[Vec<u8>]) -> Result<(), ProviderError> {
        for line in lines {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value: Value =
                serde_json::from_slice(line).map_err(|_| ProviderError::InvalidResponse {
                    detail: "a stream line is not JSON".to_owned(),
                })?;
            if self.translator.line(&value, &mut self.pending)? {
                // Whatever follows `done` is not part of the answer.
                self.finished = true;
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Reads at most `limit` bytes of a body (an error body: what is past the
/// limit is not needed to find the message).
async fn read_limited(mut body: Incoming, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data[..data.len().min(limit - out.len())]);
                }
            }
            _ => break,
        }
    }
    out
}

/// Ollama's `{"error": "…"}`, bounded.
fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let message = value.get("error")?;
    let text = bounded(message);
    (!text.trim().is_empty()).then_some(text)
}

fn bounded(message: &Value) -> String {
    let text = match message {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut out: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push_str(" …");
    }
    out
}

fn client_error(message: &str) -> ProviderError {
    ProviderError::Status {
        status: 400,
        message: message.to_owned(),
        retry_after: None,
    }
}

fn model_of(body: &JsonObject) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> JsonObject {
        object(value)
    }

    #[test]
    fn requests_keep_roles_options_images_and_tool_calls() {
        let request = ollama_request(
            &body(json!({
                "model": "llama3.2",
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "what is "},
                        {"type": "text", "text": "this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_0", "type": "function",
                         "function": {"name": "look", "arguments": "{\"at\":\"it\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_0", "content": "a cat"}
                ],
                "max_tokens": 50,
                "max_completion_tokens": 40,
                "temperature": 0.2,
                "stop": "\n\n",
                "response_format": {"type": "json_object"},
                "tools": [{"type": "function", "function": {"name": "look"}}]
            })),
            true,
        )
        .unwrap();
        assert_eq!(
            request,
            json!({
                "model": "llama3.2",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "what is this?", "images": ["iVBOR"]},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"function": {"name": "look", "arguments": {"at": "it"}}}
                    ]},
                    {"role": "tool", "content": "a cat"}
                ],
                "stream": true,
                "tools": [{"type": "function", "function": {"name": "look"}}],
                "options": {"temperature": 0.2, "num_predict": 40, "stop": ["\n\n"]},
                "format": "json"
            })
        );
    }

    #[test]
    fn an_image_link_is_the_clients_error() {
        let error = ollama_request(
            &body(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
            ]}]})),
            false,
        )
        .unwrap_err();
        assert!(matches!(error, ProviderError::Status { status: 400, .. }));
    }

    #[test]
    fn answers_map_tool_calls_reasons_and_usage() {
        let answer = json!({
            "model": "llama3.2", "created_at": "2024-07-22T20:33:28.123648Z",
            "message": {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            ]},
            "done_reason": "stop", "done": true,
            "prompt_eval_count": 26, "eval_count": 12
        });
        let completion = Value::Object(completion(&answer, "llama3.2", "id-1"));
        assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            completion["choices"][0]["message"]["tool_calls"],
            json!([{"id": "call_0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
        assert_eq!(
            completion["usage"],
            json!({"prompt_tokens": 26, "completion_tokens": 12, "total_tokens": 38})
        );
        let cut = json!({"message": {"role": "assistant", "content": "so"},
            "done": true, "done_reason": "length"});
        assert_eq!(
            Value::Object(super::completion(&cut, "m", "id-2"))["choices"][0]["finish_reason"],
            "length"
        );
    }

    #[test]
    fn lines_are_split_across_frames_and_bounded() {
        let mut lines = LineSplitter::default();
        assert!(lines.push(b"{\"a\":").unwrap().is_empty());
        assert_eq!(
            lines.push(b"1}\n{\"b\":2}\n{\"c\"").unwrap(),
            [b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        assert_eq!(lines.finish(), Some(b"{\"c\"".to_vec()));
        let mut long = LineSplitter::default();
        assert!(long.push(&vec![b'x'; MAX_LINE_BYTES + 1]).is_err());
    }

    #[test]
    fn error_messages_are_ollamas_own_and_bounded() {
        assert_eq!(
            error_message(br#"{"error":"model \"x\" not found, try pulling it first"}"#),
            Some("model \"x\" not found, try pulling it first".to_owned())
        );
        assert_eq!(error_message(b"<html>"), None);
        let long = format!(r#"{{"error":"{}"}}"#, "a".repeat(1000));
        assert_eq!(
            error_message(long.as_bytes()).unwrap().chars().count(),
            MAX_MESSAGE_CHARS + 2
        );
    }
}
