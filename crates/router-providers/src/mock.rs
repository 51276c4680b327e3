//! The built-in `mock` provider: OpenAI-shaped answers computed from the
//! request, with no network. The default config runs on it, and tests of the
//! engine and the HTTP layer use it as a predictable upstream.
//!
//! The answer to a request whose last user message is `<text>` is
//! `This is a mock response to: <text>`. Text content parts of an array
//! `content` are joined with a space.
//!
//! - `complete`: a `chat.completion` with id `chatcmpl-mock-<n>` (`n` counts
//!   this instance's answers from 1), `created` fixed at [`MOCK_CREATED`],
//!   `model` echoed from the request, one choice with finish reason `stop`
//!   and `usage`.
//! - `stream`: `chat.completion.chunk`s with the same id: a first chunk with
//!   `delta.role`, one chunk per word of the answer, a chunk with an empty
//!   delta and `finish_reason: "stop"`, then, when the request asks for
//!   `stream_options.include_usage`, a usage chunk with `choices: []`.
//!
//! Token counts are whitespace-separated words: `prompt_tokens` over the text
//! of every message, `completion_tokens` over the answer (thought included).
//!
//! Text completions (`/v1/completions`) answer each prompt the same way:
//! `prompt` (a string, strings, token ids or arrays of them; ids are written
//! as numbers separated by spaces) gives one `text_completion` choice per
//! prompt, `text` `This is a mock response to: <prompt>`, id
//! `cmpl-mock-<n>`. Streamed: one chunk per word of each answer, a chunk with
//! `finish_reason: "stop"` per prompt, then the usage chunk when asked for.
//!
//! Embeddings (`/v1/embeddings`): one vector per `input`, of `dimensions`
//! (default [`MOCK_DIMENSIONS`], at most [`MAX_MOCK_DIMENSIONS`]) numbers in
//! [-1, 1) computed from the input's text alone, so equal inputs get equal
//! vectors. `encoding_format: "base64"` sends each vector as OpenAI does:
//! base64 of its little-endian `f32`s. `usage` counts the inputs' words.
//!
//! Knobs, when the last user message (or the first prompt or input) is exactly:
//! - `mock:error:<status>` (e.g. `mock:error:429`): both calls fail with
//!   `ProviderError::Status` of that status (100..=599), message
//!   `mock error <status>`, and `retry_after` of 1 s for 429;
//! - `mock:thinking`: the answer starts with `<thought>…</thought>` and
//!   carries `extra_content.google.thought: true`, like Gemini's OpenAI
//!   endpoint (seed §6). Streamed, the thought is its own chunk flagged
//!   `thought: true` and the first answer chunk starts with `</thought>`;
//! - `mock:truncate`: the stream yields the role chunk and one word, then
//!   `Err(Truncated)` (an upstream cut mid-answer); `complete` fails with
//!   `Truncated`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use router_core::provider::{ChunkStream, JsonObject};
use router_core::{Chunk, Completion, Provider, ProviderError, ProviderRequest};
use serde_json::{json, Value};

/// The `created` of every mock answer: fixed, so transcripts are stable.
pub const MOCK_CREATED: u64 = 1_700_000_000;

/// The length of a mock embedding when the request does not set `dimensions`.
pub const MOCK_DIMENSIONS: usize = 8;

/// The longest mock embedding: `dimensions` is capped here, so a request
/// cannot make the mock build a huge answer.
pub const MAX_MOCK_DIMENSIONS: usize = 4096;

const ANSWER_PREFIX: &str = "This is a mock response to: ";

/// The mock adapter of one entry.
#[derive(Debug, Default)]
pub struct MockProvider {
    /// Numbers the answers of this instance, so ids are distinct and
    /// predictable without any global state.
    answers: AtomicU64,
}

/// What the request asked the mock to do.
#[derive(Debug, PartialEq)]
enum Behaviour {
    Answer,
    Error(u16),
    Thinking,
    Truncate,
}

/// The answer computed once per request, shared by both call shapes.
struct Answer {
    id: String,
    model: Value,
    thought: Option<String>,
    content: String,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl MockProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next answer's number (from 1).
    fn number(&self) -> u64 {
        self.answers.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The text completion of every prompt, or the knob's error.
    fn text_answer(&self, body: &JsonObject) -> Result<(TextAnswer, Behaviour), ProviderError> {
        let prompts = texts(body.get("prompt"));
        let behaviour = behaviour(prompts.first().map_or("", String::as_str));
        if let Behaviour::Error(status) = behaviour {
            return Err(status_error(status));
        }
        let answers: Vec<String> = prompts
            .iter()
            .map(|prompt| format!("{ANSWER_PREFIX}{prompt}"))
            .collect();
        let answer = TextAnswer {
            id: format!("cmpl-mock-{}", self.number()),
            model: echoed_model(body),
            prompt_tokens: prompts.iter().map(|prompt| words(prompt)).sum(),
            completion_tokens: answers.iter().map(|answer| words(answer)).sum(),
            answers,
        };
        Ok((answer, behaviour))
    }

    fn answer(&self, body: &JsonObject) -> Result<(Answer, Behaviour), ProviderError> {
        let question = last_user_text(body);
        let behaviour = behaviour(&question);
        if let Behaviour::Error(status) = behaviour {
            return Err(status_error(status));
        }
        let number = self.number();
        let thought =
            (behaviour == Behaviour::Thinking).then(|| format!("Thinking about: {question}"));
        let content = format!("{ANSWER_PREFIX}{question}");
        let completion_tokens = words(&content) + thought.as_deref().map_or(0, words);
        let answer = Answer {
            id: format!("chatcmpl-mock-{number}"),
            model: echoed_model(body),
            thought,
            content,
            prompt_tokens: prompt_words(body),
            completion_tokens,
        };
        Ok((answer, behaviour))
    }
}

#[async_trait]
impl Provider for MockProvider {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let (answer, behaviour) = self.answer(&request.body)?;
        if behaviour == Behaviour::Truncate {
            return Err(truncated());
        }
        let mut message = json!({ "role": "assistant" });
        match &answer.thought {
            Some(thought) => {
                message["content"] =
                    Value::from(format!("<thought>{thought}</thought>{}", answer.content));
                message["extra_content"] = json!({ "google": { "thought": true } });
            }
            None => message["content"] = Value::from(answer.content.as_str()),
        }
        let completion = json!({
            "id": answer.id,
            "object": "chat.completion",
            "created": MOCK_CREATED,
            "model": answer.model,
            "choices": [{ "index": 0, "message": message, "finish_reason": "stop" }],
            "usage": usage(&answer),
        });
        Ok(Completion::from(into_object(completion)))
    }

    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        let (answer, behaviour) = self.answer(&request.body)?;
        let include_usage = include_usage(&request.body);

        let chunk = |delta: Value, finish_reason: Value| -> Result<Chunk, ProviderError> {
            Ok(Chunk(into_object(json!({
                "id": answer.id,
                "object": "chat.completion.chunk",
                "created": MOCK_CREATED,
                "model": answer.model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
            }))))
        };

        let mut items = vec![chunk(
            json!({ "role": "assistant", "content": "" }),
            Value::Null,
        )];
        if let Some(thought) = &answer.thought {
            items.push(chunk(
                json!({
                    "content": format!("<thought>{thought}"),
                    "extra_content": { "google": { "thought": true } },
                }),
                Value::Null,
            ));
        }
        for (index, word) in answer.content.split_inclusive(' ').enumerate() {
            let text = if index == 0 && answer.thought.is_some() {
                format!("</thought>{word}")
            } else {
                word.to_owned()
            };
            items.push(chunk(json!({ "content": text }), Value::Null));
            if behaviour == Behaviour::Truncate {
                items.push(Err(truncated()));
                return Ok(Box::pin(futures_util::stream::iter(items)));
            }
        }
        items.push(chunk(json!({}), Value::from("stop")));
        if include_usage {
            items.push(Ok(Chunk(into_object(json!({
                "id": answer.id,
                "object": "chat.completion.chunk",
                "created": MOCK_CREATED,
                "model": answer.model,
                "choices": [],
                "usage": usage(&answer),
            })))));
        }
        Ok(Box::pin(futures_util::stream::iter(items)))
    }

    async fn complete_text(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let (answer, behaviour) = self.text_answer(&request.body)?;
        if behaviour == Behaviour::Truncate {
            return Err(truncated());
        }
        let choices: Vec<Value> = answer
            .answers
            .iter()
            .enumerate()
            .map(|(index, text)| text_choice(index, text, Value::from("stop")))
            .collect();
        Ok(Completion::from(into_object(json!({
            "id": answer.id,
            "object": "text_completion",
            "created": MOCK_CREATED,
            "model": answer.model,
            "choices": choices,
            "usage": text_usage(&answer),
        }))))
    }

    async fn stream_text(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        let (answer, behaviour) = self.text_answer(&request.body)?;
        let chunk = |choices: Value| -> Result<Chunk, ProviderError> {
            Ok(Chunk(into_object(json!({
                "id": answer.id,
                "object": "text_completion",
                "created": MOCK_CREATED,
                "model": answer.model,
                "choices": choices,
            }))))
        };
        let mut items = Vec::new();
        for (index, text) in answer.answers.iter().enumerate() {
            for word in text.split_inclusive(' ') {
                items.push(chunk(json!([text_choice(index, word, Value::Null)])));
                if behaviour == Behaviour::Truncate {
                    items.push(Err(truncated()));
                    return Ok(Box::pin(futures_util::stream::iter(items)));
                }
            }
            items.push(chunk(json!([text_choice(index, "", Value::from("stop"))])));
        }
        if include_usage(&request.body) {
            let last = json!({
                "id": answer.id,
                "object": "text_completion",
                "created": MOCK_CREATED,
                "model": answer.model,
                "choices": [],
                "usage": text_usage(&answer),
            });
            items.push(Ok(Chunk(into_object(last))));
        }
        Ok(Box::pin(futures_util::stream::iter(items)))
    }

    async fn embed(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let body = &request.body;
        let inputs = texts(body.get("input"));
        if let Behaviour::Error(status) = behaviour(inputs.first().map_or("", String::as_str)) {
            return Err(status_error(status));
        }
        self.number();
        let dimensions =
            body.get("dimensions")
                .and_then(Value::as_u64)
                .map_or(MOCK_DIMENSIONS, |asked| {
                    usize::try_from(asked).map_or(MAX_MOCK_DIMENSIONS, |asked| {
                        asked.clamp(1, MAX_MOCK_DIMENSIONS)
                    })
                });
        let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, input)| {
                let vector = embedding(input, dimensions);
                let embedding = if base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Value::from(base64_encode(&bytes))
                } else {
                    Value::from(vector)
                };
                json!({ "object": "embedding", "index": index, "embedding": embedding })
            })
            .collect();
        let prompt_tokens: u64 = inputs.iter().map(|input| words(input)).sum();
        Ok(Completion::from(into_object(json!({
            "object": "list",
            "data": data,
            "model": echoed_model(body),
            "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
        }))))
    }
}

/// The text completions of one request, one per prompt.
struct TextAnswer {
    id: String,
    model: Value,
    answers: Vec<String>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

fn text_choice(index: usize, text: &str, finish_reason: Value) -> Value {
    json!({ "text": text, "index": index, "logprobs": null, "finish_reason": finish_reason })
}

fn text_usage(answer: &TextAnswer) -> Value {
    json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    })
}

fn include_usage(body: &JsonObject) -> bool {
    body.get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn echoed_model(body: &JsonObject) -> Value {
    body.get("model")
        .cloned()
        .unwrap_or_else(|| Value::from("mock"))
}

fn status_error(status: u16) -> ProviderError {
    ProviderError::Status {
        status,
        message: format!("mock error {status}"),
        retry_after: (status == 429).then_some(Duration::from_secs(1)),
    }
}

/// The texts of a `prompt` or `input`: a string, strings, token ids (one
/// text, the ids separated by spaces) or arrays of token ids (one text each).
fn texts(value: Option<&Value>) -> Vec<String> {
    let ids = |ids: &[Value]| {
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    match value {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => vec![ids(items)],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.clone(),
                Value::Array(inner) => ids(inner),
                other => other.to_string(),
            })
            .collect(),
        _ => vec![String::new()],
    }
}

/// A vector of `dimensions` numbers in [-1, 1) that depends on `text` alone:
/// FNV-1a over the text seeds a xorshift generator.
fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // 24 random bits: exactly representable in an f32.
            ((state >> 40) as f32 / (1u32 << 23) as f32) - 1.0
        })
        .collect()
}

/// Standard base64 with padding, as OpenAI encodes embeddings.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for position in 0..4 {
            if position <= group.len() {
                out.push(char::from(
                    ALPHABET[(n >> (18 - 6 * position)) as usize & 63],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn truncated() -> ProviderError {
    ProviderError::Truncated {
        detail: "the mock stream was cut on request".to_owned(),
    }
}

fn usage(answer: &Answer) -> Value {
    json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    })
}

fn into_object(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        // Every caller passes a `json!({...})` literal.
        _ => JsonObject::new(),
    }
}

fn behaviour(question: &str) -> Behaviour {
    if question == "mock:thinking" {
        return Behaviour::Thinking;
    }
    if question == "mock:truncate" {
        return Behaviour::Truncate;
    }
    match question.strip_prefix("mock:error:").map(str::parse::<u16>) {
        Some(Ok(status)) if (100..600).contains(&status) => Behaviour::Error(status),
        _ => Behaviour::Answer,
    }
}

/// The text of the last `user` message, or "" when there is none.
fn last_user_text(body: &JsonObject) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|message| message.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// A message `content`: a string, or the text parts of an array joined by a space.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn prompt_words(body: &JsonObject) -> u64 {
    body.get("messages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .filter_map(|message| message.get("content"))
                .map(|content| words(&content_text(content)))
                .sum()
        })
        .unwrap_or(0)
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn request(body: Value) -> ProviderRequest {
        ProviderRequest {
            body: into_object(body),
            api_key: None,
        }
    }

    fn chat(text: &str) -> Value {
        json!({
            "model": "up-model",
            "messages": [
                { "role": "system", "content": "be brief" },
                { "role": "user", "content": text },
            ],
        })
    }

    async fn collect(stream: ChunkStream) -> Vec<Result<Value, String>> {
        stream
            .map(|item| {
                item.map(|chunk| Value::Object(chunk.0))
                    .map_err(|error| error.to_string())
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn complete_answers_the_last_user_message() {
        let mock = MockProvider::new();
        let answer = mock
            .complete(request(chat("hello there")))
            .await
            .unwrap()
            .into_object()
            .unwrap();
        assert_eq!(
            Value::Object(answer),
            json!({
                "id": "chatcmpl-mock-1",
                "object": "chat.completion",
                "created": MOCK_CREATED,
                "model": "up-model",
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": "This is a mock response to: hello there" },
                    "finish_reason": "stop",
                }],
                // "be brief" + "hello there" = 4 words; the answer has 8.
                "usage": { "prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12 },
            })
        );
        let second = mock
            .complete(request(chat("x")))
            .await
            .unwrap()
            .into_object()
            .unwrap();
        assert_eq!(second["id"], "chatcmpl-mock-2");
    }

    #[tokio::test]
    async fn content_parts_and_missing_user() {
        let mock = MockProvider::new();
        let body = json!({
            "model": "m",
            "messages": [{ "role": "user", "content": [
                { "type": "text", "text": "look at" },
                { "type": "image_url", "image_url": { "url": "data:," } },
                { "type": "text", "text": "this" },
            ]}],
        });
        let answer = mock
            .complete(request(body))
            .await
            .unwrap()
            .into_object()
            .unwrap();
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            "This is a mock response to: look at this"
        );
        let answer = mock
            .complete(request(json!({ "model": "m", "messages": [] })))
            .await
            .unwrap()
            .into_object()
            .unwrap();
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            "This is a mock response to: "
        );
    }

    #[tokio::test]
    async fn stream_chunks_and_usage() {
        let mock = MockProvider::new();
        let mut body = chat("hi");
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
        let items = collect(mock.stream(request(body)).await.unwrap()).await;
        let chunks: Vec<Value> = items.into_iter().map(Result::unwrap).collect();
        let deltas: Vec<&Value> = chunks
            .iter()
            .filter_map(|chunk| chunk["choices"].get(0).map(|choice| &choice["delta"]))
            .collect();
        assert_eq!(deltas[0], &json!({ "role": "assistant", "content": "" }));
        let text: String = deltas
            .iter()
            .filter_map(|delta| delta["content"].as_str())
            .collect();
        assert_eq!(text, "This is a mock response to: hi");
        assert_eq!(deltas.len(), 1 + 7 + 1, "role, one per word, finish");
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        let last = &chunks[chunks.len() - 1];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({ "prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10 })
        );
        assert!(chunks
            .iter()
            .all(|chunk| chunk["object"] == "chat.completion.chunk"));
        assert!(chunks.iter().all(|chunk| chunk["id"] == "chatcmpl-mock-1"));
    }

    #[tokio::test]
    async fn stream_without_usage_request_has_no_usage_chunk() {
        let items = collect(
            MockProvider::new()
                .stream(request(chat("hi")))
                .await
                .unwrap(),
        )
        .await;
        let last = items.last().unwrap().as_ref().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert!(last.get("usage").is_none());
    }

    #[tokio::test]
    async fn error_knob() {
        let mock = MockProvider::new();
        let error = mock
            .complete(request(chat("mock:error:429")))
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            ProviderError::Status {
                status: 429,
                retry_after: Some(_),
                ..
            }
        ));
        let Err(error) = mock.stream(request(chat("mock:error:503"))).await else {
            panic!("expected an error");
        };
        assert_eq!(
            error.to_string(),
            "the upstream answered 503: mock error 503"
        );
        // Not a knob: answered like any text.
        assert!(mock
            .complete(request(chat("mock:error:99999")))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn thinking_knob() {
        let mock = MockProvider::new();
        let answer = mock
            .complete(request(chat("mock:thinking")))
            .await
            .unwrap()
            .into_object()
            .unwrap();
        let message = &answer["choices"][0]["message"];
        assert_eq!(
            message["content"],
            "<thought>Thinking about: mock:thinking</thought>This is a mock response to: mock:thinking"
        );
        assert_eq!(
            message["extra_content"],
            json!({ "google": { "thought": true } })
        );

        let items = collect(mock.stream(request(chat("mock:thinking"))).await.unwrap()).await;
        let deltas: Vec<Value> = items
            .into_iter()
            .map(|item| item.unwrap()["choices"][0]["delta"].clone())
            .collect();
        assert_eq!(
            deltas[1]["content"],
            "<thought>Thinking about: mock:thinking"
        );
        assert_eq!(deltas[1]["extra_content"]["google"]["thought"], true);
        assert_eq!(deltas[2]["content"], "</thought>This ");
        assert!(deltas[2].get("extra_content").is_none());
    }

    #[tokio::test]
    async fn text_completions_answer_each_prompt() {
        let mock = MockProvider::new();
        let body = json!({"model": "up", "prompt": ["say hi", [1, 2]]});
        let answer = mock
            .complete_text(request(body))
            .await
            .unwrap()
            .into_object()
            .unwrap();
        assert_eq!(
            Value::Object(answer),
            json!({
                "id": "cmpl-mock-1",
                "object": "text_completion",
                "created": MOCK_CREATED,
                "model": "up",
                "choices": [
                    {"text": "This is a mock response to: say hi", "index": 0, "logprobs": null, "finish_reason": "stop"},
                    {"text": "This is a mock response to: 1 2", "index": 1, "logprobs": null, "finish_reason": "stop"},
                ],
                "usage": {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20},
            })
        );
        let error = mock
            .complete_text(request(json!({"model": "up", "prompt": "mock:error:503"})))
            .await
            .unwrap_err();
        assert!(matches!(error, ProviderError::Status { status: 503, .. }));
    }

    #[tokio::test]
    async fn text_completion_streams_word_by_word_with_usage() {
        let body = json!({"model": "up", "prompt": "hi", "stream": true,
            "stream_options": {"include_usage": true}});
        let items = collect(
            MockProvider::new()
                .stream_text(request(body))
                .await
                .unwrap(),
        )
        .await;
        let chunks: Vec<Value> = items.into_iter().map(Result::unwrap).collect();
        let text: String = chunks
            .iter()
            .filter_map(|chunk| chunk["choices"].get(0))
            .filter_map(|choice| choice["text"].as_str())
            .collect();
        assert_eq!(text, "This is a mock response to: hi");
        assert!(chunks
            .iter()
            .all(|chunk| chunk["object"] == "text_completion"));
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "stop"
        );
        let last = &chunks[chunks.len() - 1];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["total_tokens"], 1 + 7);

        let body = json!({"model": "up", "prompt": "mock:truncate", "stream": true});
        let items = collect(
            MockProvider::new()
                .stream_text(request(body))
                .await
                .unwrap(),
        )
        .await;
        assert!(items.last().unwrap().is_err());
    }

    #[tokio::test]
    async fn embeddings_are_deterministic_and_base64_on_request() {
        let mock = MockProvider::new();
        let body = json!({"model": "up", "input": ["one two", "three"], "dimensions": 4});
        let first = mock
            .embed(request(body.clone()))
            .await
            .unwrap()
            .into_object()
            .unwrap();
        let again = mock
            .embed(request(body))
            .await
            .unwrap()
            .into_object()
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(first["object"], "list");
        assert_eq!(first["model"], "up");
        assert_eq!(
            first["usage"],
            json!({"prompt_tokens": 3, "total_tokens": 3})
        );
        let data = first["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data[1]["index"], 1);
        assert_eq!(data[1]["object"], "embedding");
        let vector = data[0]["embedding"].as_array().unwrap();
        assert_eq!(vector.len(), 4);
        assert!(vector
            .iter()
            .all(|x| (-1.0..1.0).contains(&x.as_f64().unwrap())));
        assert_ne!(data[0]["embedding"], data[1]["embedding"]);

        let body = json!({"model": "up", "input": "one two", "dimensions": 4, "encoding_format": "base64"});
        let encoded = mock
            .embed(request(body))
            .await
            .unwrap()
            .into_object()
            .unwrap();
        let text = encoded["data"][0]["embedding"].as_str().unwrap();
        // 4 floats = 16 bytes = 24 base64 characters, the same numbers.
        assert_eq!(text.len(), 24);
        let bytes: Vec<u8> = vector
            .iter()
            .flat_map(|x| (x.as_f64().unwrap() as f32).to_le_bytes())
            .collect();
        assert_eq!(text, base64_encode(&bytes));
    }

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(&1.0f32.to_le_bytes()), "AACAPw==");
    }

    #[tokio::test]
    async fn truncate_knob() {
        let mock = MockProvider::new();
        let items = collect(mock.stream(request(chat("mock:truncate"))).await.unwrap()).await;
        assert_eq!(items.len(), 3);
        assert!(items[..2].iter().all(Result::is_ok));
        assert!(items[2].as_ref().unwrap_err().contains("ended early"));
        assert!(matches!(
            mock.complete(request(chat("mock:truncate"))).await,
            Err(ProviderError::Truncated { .. })
        ));
    }
}
