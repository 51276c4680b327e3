//! The Anthropic adapter (`provider: anthropic`): clients keep speaking
//! OpenAI Chat Completions; upstream this adapter speaks Anthropic's Messages
//! API, `POST {base_url}/v1/messages`, where `base_url` is the API root
//! without `/v1` (`https://api.anthropic.com`).
//!
//! Both directions are explicit translations through wire types private to
//! this module; nothing of the client's body goes upstream untranslated, and
//! nothing of Anthropic's answer reaches the engine except as an OpenAI
//! chunk or completion built here.
//!
//! **Request.** `system` and `developer` messages join (blank line between)
//! into `system`; user, assistant and tool turns become content blocks, and
//! consecutive turns of one role (tool results count as user) merge into one
//! turn, as Anthropic requires of tool results. Images: a `data:` URL
//! becomes a base64 source, an `http(s)` URL a url source. Tools, tool
//! choice (`auto`, `none`, `required` → `any`, a named function → `tool`;
//! `parallel_tool_calls: false` → `disable_parallel_tool_use`), `stop` →
//! `stop_sequences`, `temperature`, `top_p`, `top_k`, `user` →
//! `metadata.user_id`. Other OpenAI parameters have no Anthropic meaning
//! and are not sent. Something that cannot be translated (an audio part, a
//! tool call whose arguments are not JSON) is refused before anything is
//! sent, as a 400 naming the problem.
//!
//! `max_tokens` is required upstream: the request's `max_completion_tokens`
//! or `max_tokens`, else the entry's `max_tokens`, else
//! [`DEFAULT_MAX_TOKENS`]; never more than the entry's `max_tokens`.
//!
//! `reasoning_effort` turns on extended thinking with a budget (the numbers
//! of the Gemini mapping, so one effort means about the same everywhere):
//! `minimal` and `low` 1024, `medium` 8192, `high` 24576 tokens. Anthropic
//! counts thinking inside `max_tokens` and wants the budget below it: when
//! the request sets no maximum, the default maximum grows by the budget; the
//! budget is then cut to leave [`MIN_ANSWER_TOKENS`] for the answer, and
//! thinking stays off if less than Anthropic's minimum budget (1024) is left.
//!
//! Headers: `x-api-key` (the entry's provider key, never the client's) and
//! `anthropic-version: 2023-06-01`; no `Authorization`.
//!
//! **Answer.** Text blocks → `content`, `tool_use` → `tool_calls` (the
//! upstream id, the input as a JSON string), thinking → `reasoning_content`,
//! `stop_reason` → `finish_reason`. Usage: OpenAI's `prompt_tokens` counts
//! cached tokens, so it is `input_tokens + cache_read_input_tokens +
//! cache_creation_input_tokens`; cache reads are
//! `prompt_tokens_details.cached_tokens` (priced at the entry's
//! `cached_input_price_per_token`) and cache writes
//! `prompt_tokens_details.cache_creation_tokens` (priced as input).
//!
//! **Stream.** Translated event by event into the chunks an OpenAI model
//! sends: the first carries `role: assistant`, tool calls keep their own
//! `index` counted among tool calls only, the last choice chunk carries
//! `finish_reason`, then a usage chunk (`choices: []`), then the end. The
//! first chunk waits for the first content block, so an `error` event right
//! after `message_start` still comes before any chunk and the engine may fail
//! over. `ping` produces no chunk: its bytes keep the upstream's idle timer
//! alive, and while no chunk flows router-http sends the client its own
//! keepalive comment. An `error` event becomes the stream's one error
//! (`overloaded_error` a 529, `rate_limit_error` a 429, ...), classified
//! like the same status before the stream.
//!
//! **Errors** before the stream are the HTTP status with the upstream's
//! `error.message` (Anthropic: 529 `overloaded_error` and 429
//! `rate_limit_error` with `retry-after` are retryable; 401
//! `authentication_error` and 403 `permission_error` take the key out), read
//! and truncated as the OpenAI adapter does, never the raw body.
//!
//! Time: the entry's timeouts, enforced exactly as by the OpenAI adapter.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, Request, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use router_core::config::{ModelEntry, Timeouts};
use router_core::provider::{ChunkStream, JsonObject};
use router_core::{Chunk, Completion, Provider, ProviderError, ProviderRequest};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;
use url::Url;

use crate::client::{ClientError, HttpClient};
use crate::event_stream::{EventDecoder, EventStream, Flow};
use crate::exchange::{self, KeyHeader};
use crate::openai::{truncate_at_word, MAX_MESSAGE_CHARS};
use crate::sse::SseEvent;

/// The API version every request names (`anthropic-version`).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `max_tokens` when neither the request nor the entry sets one. Anthropic
/// has no default; this is enough for a chat answer, and an entry that
/// wants more sets `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// What a thinking budget leaves at least for the answer itself.
pub const MIN_ANSWER_TOKENS: u64 = 1024;

/// Anthropic refuses smaller thinking budgets.
const MIN_THINKING_BUDGET: u64 = 1024;

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static ANTHROPIC_VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");

/// Why an entry cannot be served by this adapter.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the anthropic provider needs a base_url such as `https://api.anthropic.com`")]
    MissingBaseUrl,
    #[error("base_url must use http or https, not {scheme}")]
    UnsupportedScheme { scheme: String },
    #[error("base_url cannot be used as a request uri: {detail}")]
    InvalidUri { detail: String },
    #[error("could not build an http client for the entry's connect_timeout")]
    Client {
        #[source]
        source: ClientError,
    },
}

/// The adapter for one model entry.
pub struct AnthropicProvider {
    /// Connects within `timeouts.connect`.
    client: HttpClient,
    /// Computed once: the messages endpoint of the entry.
    url: Uri,
    timeouts: Timeouts,
    /// The entry's `max_tokens`: the default and the cap of every request.
    max_tokens: Option<NonZeroU64>,
}

impl std::fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the host: a base_url may carry a key in its query string.
        f.debug_struct("AnthropicProvider")
            .field("host", &self.url.host().unwrap_or_default())
            .finish_non_exhaustive()
    }
}

impl AnthropicProvider {
    /// The adapter for `entry`; `client` is shared as by
    /// [`crate::OpenAiProvider::new`].
    pub fn new(client: HttpClient, entry: &ModelEntry) -> Result<Self, BuildError> {
        let base = entry.base_url.as_ref().ok_or(BuildError::MissingBaseUrl)?;
        let url = messages_url(base, entry.base_url_direct)?;
        let client = client
            .with_connect_timeout(entry.timeouts.connect)
            .map_err(|source| BuildError::Client { source })?;
        Ok(Self {
            client,
            url,
            timeouts: entry.timeouts,
            max_tokens: entry.max_tokens,
        })
    }

    /// Where requests go.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    fn request(
        &self,
        request: ProviderRequest,
        stream: bool,
    ) -> Result<Request<Full<Bytes>>, ProviderError> {
        let translated = translate_request(&request.body, self.max_tokens, stream)?;
        exchange::post_json(
            &self.url,
            &translated,
            stream,
            request.api_key.as_ref(),
            KeyHeader::Named(&X_API_KEY),
            &[(&ANTHROPIC_VERSION_HEADER, ANTHROPIC_VERSION)],
        )
    }

    async fn complete_within_deadline(
        &self,
        request: ProviderRequest,
    ) -> Result<Completion, ProviderError> {
        let request = self.request(request, false)?;
        let (_, body) = exchange::send(&self.client, request, self.timeouts.first_byte).await?;
        let bytes = exchange::read_answer(body).await?;
        let message: MessageResponse =
            serde_json::from_slice(&bytes).map_err(|_| ProviderError::InvalidResponse {
                detail: "the answer is not an Anthropic message".to_owned(),
            })?;
        Ok(Completion::from(translate_message(message, unix_now())))
    }

    async fn open_stream(&self, request: ProviderRequest) -> Result<Incoming, ProviderError> {
        let request = self.request(request, true)?;
        let (head, body) = exchange::send(&self.client, request, self.timeouts.first_byte).await?;
        exchange::event_stream(&head, body)
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let after = self.timeouts.total;
        tokio::time::timeout(after, self.complete_within_deadline(request))
            .await
            .unwrap_or(Err(ProviderError::Timeout { after }))
    }

    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        let total = self.timeouts.total;
        // One deadline for the whole attempt: the head here, the chunks later.
        let deadline = Instant::now() + total;
        let body = tokio::time::timeout_at(deadline, self.open_stream(request))
            .await
            .unwrap_or(Err(ProviderError::Timeout { after: total }))?;
        Ok(Box::pin(EventStream::new(
            body,
            self.client.settings().max_sse_event_bytes,
            deadline,
            total,
            self.timeouts.idle,
            StreamTranslator::new(unix_now()),
        )))
    }
}

/// `base_url + "/v1/messages"` (one slash, whatever `base_url` ends with; a
/// query string stays at the end), or `base_url` itself when direct.
pub fn messages_url(base: &Url, direct: bool) -> Result<Uri, BuildError> {
    match base.scheme() {
        "http" | "https" => {}
        other => {
            return Err(BuildError::UnsupportedScheme {
                scheme: other.to_owned(),
            })
        }
    }
    let mut url = base.clone();
    url.set_fragment(None);
    if !direct {
        let path = format!("{}/v1/messages", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    url.as_str()
        .parse::<Uri>()
        .map_err(|error| BuildError::InvalidUri {
            detail: error.to_string(),
        })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

// ---------------------------------------------------------------------------
// Anthropic's wire types. Private: the rest of the router sees OpenAI shapes.
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct MessagesRequest {
    model: String,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Turn>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Thinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
struct Turn {
    role: Role,
    content: Vec<Block>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Serialize)]
struct Tool {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: Value,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ToolChoice {
    Auto {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

#[derive(Debug, Serialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: &'static str,
    budget_tokens: u64,
}

#[derive(Debug, Serialize)]
struct Metadata {
    user_id: String,
}

/// A non-streamed answer.
#[derive(Debug, Deserialize)]
struct MessageResponse {
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<ResponseBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Usage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseBlock {
    Text {
        text: String,
    },
    Thinking {
        thinking: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// `redacted_thinking`, server tool blocks and whatever comes next:
    /// nothing an OpenAI client could read.
    #[serde(other)]
    Other,
}

/// Anthropic's usage; every field optional, because `message_delta` carries
/// only what changed.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl Usage {
    /// The later report wins, field by field.
    fn update(&mut self, later: &Usage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
    }

    /// OpenAI's `usage`, whose `prompt_tokens` includes the cached tokens.
    fn to_openai(self) -> Value {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let creation = self.cache_creation_input_tokens.unwrap_or(0);
        let prompt = self.input_tokens.unwrap_or(0) + read + creation;
        let completion = self.output_tokens.unwrap_or(0);
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {
                "cached_tokens": read,
                "cache_creation_tokens": creation,
            },
        })
    }
}

/// One event of a stream (its `data`; the `event:` line repeats the type).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: StartedBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Usage,
    },
    MessageStop {},
    Ping {},
    Error {
        error: ErrorBody,
    },
    /// Anthropic may add event types; they are skipped.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct StartedMessage {
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Usage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartedBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    /// `signature_delta`, `citations_delta`: nothing for an OpenAI client.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

// ---------------------------------------------------------------------------
// OpenAI request → Anthropic request.
// ---------------------------------------------------------------------------

/// A request that cannot be expressed for Anthropic: the client's to fix, so
/// a 400 that is not retried (another entry of the same name would refuse
/// it alike). Nothing was sent.
fn untranslatable(detail: impl std::fmt::Display) -> ProviderError {
    ProviderError::Status {
        status: 400,
        message: format!("the request cannot be sent to Anthropic: {detail}"),
        retry_after: None,
    }
}

fn translate_request(
    body: &JsonObject,
    entry_max_tokens: Option<NonZeroU64>,
    stream: bool,
) -> Result<MessagesRequest, ProviderError> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| untranslatable("`messages` must be an array"))?;

    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = plain_text(message.get("content"), index)?;
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            "user" => (Role::User, content_blocks(message.get("content"), index)?),
            "assistant" => (Role::Assistant, assistant_blocks(message, index)?),
            "tool" => (Role::User, vec![tool_result(message, index)?]),
            other => {
                return Err(untranslatable(format_args!(
                    "messages[{index}]: role `{}` is not supported",
                    truncate_at_word(other, 40)
                )))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            // Tool results must sit in one user turn; any same-role
            // neighbours merge, which Anthropic would do anyway.
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(Turn {
                role,
                content: blocks,
            }),
        }
    }

    let tools = match body.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(index, tool)| translate_tool(tool, index))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(untranslatable("`tools` must be an array")),
    };
    let disable_parallel =
        (body.get("parallel_tool_calls") == Some(&Value::Bool(false))).then_some(true);
    let tool_choice = if tools.is_empty() {
        // Anthropic refuses a tool choice without tools.
        None
    } else {
        translate_tool_choice(body.get("tool_choice"), disable_parallel)?
    };

    let stop_sequences = match body.get("stop") {
        Some(Value::String(stop)) => vec![stop.clone()],
        Some(Value::Array(stops)) => stops
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };

    let asked = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|key| body.get(*key).and_then(Value::as_u64));
    let effort_budget = body
        .get("reasoning_effort")
        .and_then(Value::as_str)
        .and_then(thinking_budget);
    let cap = entry_max_tokens.map(NonZeroU64::get);
    let mut max_tokens = asked
        .or(cap)
        .unwrap_or(DEFAULT_MAX_TOKENS + effort_budget.unwrap_or(0));
    if let Some(cap) = cap {
        max_tokens = max_tokens.min(cap);
    }
    // Anthropic refuses 0; the engine's own validation lets it through.
    let max_tokens = max_tokens.max(1);
    let thinking = effort_budget
        .map(|budget| budget.min(max_tokens.saturating_sub(MIN_ANSWER_TOKENS)))
        .filter(|budget| *budget >= MIN_THINKING_BUDGET)
        .map(|budget_tokens| Thinking {
            kind: "enabled",
            budget_tokens,
        });

    let number = |key: &str| body.get(key).and_then(Value::as_f64);
    Ok(MessagesRequest {
        model,
        max_tokens,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages: turns,
        tools,
        tool_choice,
        stop_sequences,
        temperature: number("temperature"),
        top_p: number("top_p"),
        top_k: body.get("top_k").and_then(Value::as_u64),
        thinking,
        metadata: body
            .get("user")
            .and_then(Value::as_str)
            .filter(|user| !user.is_empty())
            .map(|user| Metadata {
                user_id: user.to_owned(),
            }),
        stream,
    })
}

/// The thinking budget of a `reasoning_effort`, `None` for no thinking.
fn thinking_budget(effort: &str) -> Option<u64> {
    match effort {
        "minimal" | "low" => Some(1024),
        "medium" => Some(8192),
        "high" => Some(24576),
        _ => None,
    }
}

/// The text of a system message: a string, or its text parts joined.
fn plain_text(content: Option<&Value>, index: usize) -> Result<String, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(part_text(part, index)?),
                    _ => {
                        return Err(untranslatable(format_args!(
                            "messages[{index}]: a system message may hold text parts only"
                        )))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(untranslatable(format_args!(
            "messages[{index}].content must be a string or an array of parts"
        ))),
    }
}

fn part_text(part: &Value, index: usize) -> Result<String, ProviderError> {
    part.get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| untranslatable(format_args!("messages[{index}]: a text part has no text")))
}

/// A user message's content as blocks. Empty text is dropped: Anthropic
/// refuses empty text blocks.
fn content_blocks(content: Option<&Value>, index: usize) -> Result<Vec<Block>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![Block::Text { text: text.clone() }]),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = part_text(part, index)?;
                        if !text.is_empty() {
                            blocks.push(Block::Text { text });
                        }
                    }
                    Some("image_url") => blocks.push(image_block(part, index)?),
                    other => {
                        return Err(untranslatable(format_args!(
                            "messages[{index}]: content parts of type `{}` are not supported",
                            truncate_at_word(other.unwrap_or("(none)"), 40)
                        )))
                    }
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(untranslatable(format_args!(
            "messages[{index}].content must be a string or an array of parts"
        ))),
    }
}

/// `{"type":"image_url","image_url":{"url":...}}` (or the URL as a string):
/// a `data:` URL becomes a base64 source, an http(s) URL a url source.
fn image_block(part: &Value, index: usize) -> Result<Block, ProviderError> {
    let image = part.get("image_url");
    let url = image
        .and_then(|image| image.get("url"))
        .or(image)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            untranslatable(format_args!("messages[{index}]: an image part has no url"))
        })?;
    if let Some(data_url) = url.strip_prefix("data:") {
        let (media_type, data) = data_url
            .split_once(";base64,")
            .filter(|(media_type, _)| !media_type.is_empty())
            .ok_or_else(|| {
                untranslatable(format_args!(
                    "messages[{index}]: an image data URL must be `data:<media type>;base64,<data>`"
                ))
            })?;
        return Ok(Block::Image {
            source: ImageSource::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            },
        });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Block::Image {
            source: ImageSource::Url {
                url: url.to_owned(),
            },
        });
    }
    Err(untranslatable(format_args!(
        "messages[{index}]: an image url must be an https or data URL"
    )))
}

/// An assistant turn: its text, then its tool calls as `tool_use` blocks.
/// `reasoning_content` is not sent back: Anthropic accepts earlier thinking
/// only with the signature it issued, which OpenAI clients do not keep.
fn assistant_blocks(message: &Value, index: usize) -> Result<Vec<Block>, ProviderError> {
    let mut blocks = content_blocks(message.get("content"), index)?;
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => {
            return Err(untranslatable(format_args!(
                "messages[{index}].tool_calls must be an array"
            )))
        }
    };
    for (call_index, call) in calls.iter().enumerate() {
        let at = || format!("messages[{index}].tool_calls[{call_index}]");
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| untranslatable(format_args!("{} has no id", at())))?;
        let function = call.get("function");
        let name = function
            .and_then(|function| function.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| untranslatable(format_args!("{} has no function name", at())))?;
        let arguments = function
            .and_then(|function| function.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let input = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(arguments)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    untranslatable(format_args!(
                        "{}.function.arguments must be a JSON object",
                        at()
                    ))
                })?
        };
        blocks.push(Block::ToolUse {
            id: id.to_owned(),
            name: name.to_owned(),
            input,
        });
    }
    Ok(blocks)
}

fn tool_result(message: &Value, index: usize) -> Result<Block, ProviderError> {
    let tool_use_id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            untranslatable(format_args!(
                "messages[{index}]: a tool message needs tool_call_id"
            ))
        })?
        .to_owned();
    let content = match message.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(Value::String(text)) => Some(ToolResultContent::Text(text.clone())),
        content => {
            let blocks = content_blocks(content, index)?;
            (!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks))
        }
    };
    Ok(Block::ToolResult {
        tool_use_id,
        content,
    })
}

fn translate_tool(tool: &Value, index: usize) -> Result<Tool, ProviderError> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(untranslatable(format_args!(
            "tools[{index}]: only function tools are supported"
        )));
    }
    let function = tool.get("function");
    let name = function
        .and_then(|function| function.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| untranslatable(format_args!("tools[{index}] has no function name")))?;
    Ok(Tool {
        name: name.to_owned(),
        description: function
            .and_then(|function| function.get("description"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        // Anthropic requires a schema; OpenAI allows none for a function
        // without parameters.
        input_schema: function
            .and_then(|function| function.get("parameters"))
            .filter(|parameters| parameters.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    })
}

fn translate_tool_choice(
    choice: Option<&Value>,
    disable_parallel_tool_use: Option<bool>,
) -> Result<Option<ToolChoice>, ProviderError> {
    let choice = match choice {
        None | Some(Value::Null) => match disable_parallel_tool_use {
            Some(_) => ToolChoice::Auto {
                disable_parallel_tool_use,
            },
            None => return Ok(None),
        },
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => ToolChoice::Auto {
                disable_parallel_tool_use,
            },
            "required" => ToolChoice::Any {
                disable_parallel_tool_use,
            },
            "none" => ToolChoice::None,
            _ => {
                return Err(untranslatable(
                    "`tool_choice` must be auto, none, required or a named function",
                ))
            }
        },
        Some(object) => {
            let name = object
                .get("function")
                .and_then(|function| function.get("name"))
                .and_then(Value::as_str)
                .filter(|_| object.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    untranslatable("`tool_choice` must be auto, none, required or a named function")
                })?;
            ToolChoice::Tool {
                name: name.to_owned(),
                disable_parallel_tool_use,
            }
        }
    };
    Ok(Some(choice))
}

// ---------------------------------------------------------------------------
// Anthropic answer → OpenAI completion and chunks.
// ---------------------------------------------------------------------------

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and none at all.
        _ => "stop",
    }
}

fn translate_message(message: MessageResponse, created: u64) -> JsonObject {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            ResponseBlock::Text { text: part } => text.push_str(&part),
            ResponseBlock::Thinking { thinking } => reasoning.push_str(&thinking),
            ResponseBlock::ToolUse { id, name, input } => tool_calls.push(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            })),
            ResponseBlock::Other => {}
        }
    }
    let mut reply = JsonObject::new();
    reply.insert("role".to_owned(), json!("assistant"));
    // As OpenAI does: no text beside tool calls is `null`, not "".
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    reply.insert("content".to_owned(), content);
    if !reasoning.is_empty() {
        reply.insert("reasoning_content".to_owned(), Value::String(reasoning));
    }
    if !tool_calls.is_empty() {
        reply.insert("tool_calls".to_owned(), Value::Array(tool_calls));
    }
    reply.insert("refusal".to_owned(), Value::Null);
    let completion = json!({
        "id": message.id,
        "object": "chat.completion",
        "created": created,
        "model": message.model,
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": null,
            "finish_reason": finish_reason(message.stop_reason.as_deref()),
        }],
        "usage": message.usage.to_openai(),
    });
    into_object(completion)
}

fn into_object(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        // Every caller passes a `json!({...})` literal.
        _ => JsonObject::new(),
    }
}

/// The status an Anthropic error type stands for, so an `error` event is
/// classified like the same error answered before the stream.
fn error_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        // api_error and anything new: the upstream's fault.
        _ => 500,
    }
}

/// Translates one stream's events into OpenAI chunks.
#[derive(Debug)]
struct StreamTranslator {
    /// From `message_start`; every chunk carries them.
    id: String,
    model: String,
    /// Anthropic's stream has no timestamp: the time the stream opened.
    created: u64,
    /// Whether the first chunk (`role: assistant`) went out.
    started: bool,
    /// Content block index → tool call index, for `tool_use` blocks: OpenAI
    /// numbers tool calls among themselves, Anthropic numbers all blocks.
    tool_indices: HashMap<u64, u64>,
    usage: Usage,
    /// Whether the finish and usage chunks went out.
    finished: bool,
}

impl StreamTranslator {
    fn new(created: u64) -> Self {
        Self {
            id: String::new(),
            model: String::new(),
            created,
            started: false,
            tool_indices: HashMap::new(),
            usage: Usage::default(),
            finished: false,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Value) -> Chunk {
        Chunk(into_object(json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        })))
    }

    /// A content chunk; the first chunk of the stream also says the role.
    fn delta(&mut self, mut delta: JsonObject, out: &mut VecDeque<Chunk>) {
        if !self.started {
            self.started = true;
            let mut first = JsonObject::new();
            first.insert("role".to_owned(), json!("assistant"));
            if delta.contains_key("tool_calls") {
                // As OpenAI starts a tool call answer: one chunk with the
                // role, no content and the first call.
                first.insert("content".to_owned(), Value::Null);
                first.append(&mut delta);
                out.push_back(self.chunk(Value::Object(first), Value::Null));
                return;
            }
            first.insert("content".to_owned(), json!(""));
            out.push_back(self.chunk(Value::Object(first), Value::Null));
        }
        if !delta.is_empty() {
            out.push_back(self.chunk(Value::Object(delta), Value::Null));
        }
    }

    fn text(key: &str, text: String) -> JsonObject {
        let mut delta = JsonObject::new();
        delta.insert(key.to_owned(), Value::String(text));
        delta
    }

    fn tool_call(call: Value) -> JsonObject {
        let mut delta = JsonObject::new();
        delta.insert("tool_calls".to_owned(), json!([call]));
        delta
    }

    fn translate(
        &mut self,
        event: StreamEvent,
        out: &mut VecDeque<Chunk>,
    ) -> Result<Flow, ProviderError> {
        match event {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                self.usage.update(&message.usage);
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                StartedBlock::Text { text } | StartedBlock::Thinking { thinking: text }
                    if text.is_empty() =>
                {
                    self.delta(JsonObject::new(), out);
                }
                StartedBlock::Text { text } => self.delta(Self::text("content", text), out),
                StartedBlock::Thinking { thinking } => {
                    self.delta(Self::text("reasoning_content", thinking), out);
                }
                StartedBlock::ToolUse { id, name } => {
                    let call_index = self.tool_indices.len() as u64;
                    self.tool_indices.insert(index, call_index);
                    let call = json!({
                        "index": call_index,
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    });
                    self.delta(Self::tool_call(call), out);
                }
                StartedBlock::Other => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    self.delta(Self::text("content", text), out);
                }
                BlockDelta::ThinkingDelta { thinking } if !thinking.is_empty() => {
                    self.delta(Self::text("reasoning_content", thinking), out);
                }
                BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    let Some(call_index) = self.tool_indices.get(&index).copied() else {
                        return Err(ProviderError::InvalidResponse {
                            detail: "tool input arrived for a block that is not a tool call"
                                .to_owned(),
                        });
                    };
                    let call = json!({
                        "index": call_index,
                        "function": {"arguments": partial_json},
                    });
                    self.delta(Self::tool_call(call), out);
                }
                _ => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                self.usage.update(&usage);
                if !self.finished {
                    self.finished = true;
                    // An answer without any content block still starts with
                    // the role.
                    self.delta(JsonObject::new(), out);
                    let reason = finish_reason(delta.stop_reason.as_deref());
                    out.push_back(self.chunk(json!({}), json!(reason)));
                    // Sent at once rather than at `message_stop`: should the
                    // stream break now, the books still have Anthropic's count.
                    let mut usage = self.chunk(json!({}), Value::Null);
                    usage.0.insert("choices".to_owned(), json!([]));
                    usage.0.insert("usage".to_owned(), self.usage.to_openai());
                    out.push_back(usage);
                }
            }
            StreamEvent::MessageStop {} => {
                if !self.finished {
                    return Err(ProviderError::InvalidResponse {
                        detail: "the stream stopped without a stop reason".to_owned(),
                    });
                }
                return Ok(Flow::Done);
            }
            StreamEvent::Error { error } => {
                let status = error_status(&error.kind);
                let message = error.message.trim();
                return Err(ProviderError::Status {
                    status,
                    message: if message.is_empty() {
                        format!("upstream reported status {status} mid-stream")
                    } else {
                        truncate_at_word(message, MAX_MESSAGE_CHARS)
                    },
                    retry_after: None,
                });
            }
            StreamEvent::ContentBlockStop {} | StreamEvent::Ping {} | StreamEvent::Other => {}
        }
        Ok(Flow::Continue)
    }
}

impl EventDecoder for StreamTranslator {
    fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut VecDeque<Chunk>,
    ) -> Result<Flow, ProviderError> {
        let data = event.data.trim_ascii();
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        let event: StreamEvent =
            serde_json::from_slice(data).map_err(|_| ProviderError::InvalidResponse {
                detail: "a stream event is not an Anthropic event".to_owned(),
            })?;
        self.translate(event, out)
    }

    fn early_end(&self) -> &'static str {
        "the upstream closed the stream without message_stop"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_url(base: &str, direct: bool, expected: &str) {
        let base = Url::parse(base).unwrap();
        assert_eq!(messages_url(&base, direct).unwrap().to_string(), expected);
    }

    #[test]
    fn url_joining() {
        check_url(
            "https://api.anthropic.com",
            false,
            "https://api.anthropic.com/v1/messages",
        );
        check_url(
            "https://api.anthropic.com/",
            false,
            "https://api.anthropic.com/v1/messages",
        );
        check_url(
            "https://proxy.example.com/anthropic?x=1",
            false,
            "https://proxy.example.com/anthropic/v1/messages?x=1",
        );
        check_url(
            "https://proxy.example.com/custom",
            true,
            "https://proxy.example.com/custom",
        );
    }

    fn object(value: Value) -> JsonObject {
        into_object(value)
    }

    #[track_caller]
    fn check_request(body: Value, entry_max: Option<u64>, expected: Value) {
        let translated =
            translate_request(&object(body), entry_max.and_then(NonZeroU64::new), false).unwrap();
        assert_eq!(serde_json::to_value(&translated).unwrap(), expected);
    }

    #[track_caller]
    fn check_refused(body: Value, expected: &str) {
        let error = translate_request(&object(body), None, false).unwrap_err();
        assert_eq!(error.kind(), router_core::provider::ErrorKind::ClientError);
        assert_eq!(
            error.to_string(),
            format!(
                "the upstream answered 400: the request cannot be sent to Anthropic: {expected}"
            )
        );
    }

    #[test]
    fn max_tokens_and_thinking_budgets() {
        let user = json!([{"role": "user", "content": "hi"}]);
        let max = |body: Value, entry: Option<u64>| {
            let translated =
                translate_request(&object(body), entry.and_then(NonZeroU64::new), false).unwrap();
            (
                translated.max_tokens,
                translated.thinking.map(|thinking| thinking.budget_tokens),
            )
        };
        let m = &user;
        assert_eq!(
            max(json!({"messages": m}), None),
            (DEFAULT_MAX_TOKENS, None)
        );
        assert_eq!(max(json!({"messages": m}), Some(2000)), (2000, None));
        assert_eq!(
            max(json!({"messages": m, "max_tokens": 300}), Some(2000)),
            (300, None)
        );
        assert_eq!(
            max(
                json!({"messages": m, "max_tokens": 300, "max_completion_tokens": 500}),
                None
            ),
            (500, None)
        );
        // Capped by the entry.
        assert_eq!(
            max(json!({"messages": m, "max_tokens": 9000}), Some(2000)),
            (2000, None)
        );
        // Thinking: the default grows by the budget.
        assert_eq!(
            max(json!({"messages": m, "reasoning_effort": "high"}), None),
            (DEFAULT_MAX_TOKENS + 24576, Some(24576))
        );
        assert_eq!(
            max(json!({"messages": m, "reasoning_effort": "low"}), None),
            (DEFAULT_MAX_TOKENS + 1024, Some(1024))
        );
        // A small maximum shrinks the budget, or leaves no room for thinking.
        assert_eq!(
            max(
                json!({"messages": m, "reasoning_effort": "high", "max_tokens": 8000}),
                None
            ),
            (8000, Some(8000 - MIN_ANSWER_TOKENS))
        );
        assert_eq!(
            max(
                json!({"messages": m, "reasoning_effort": "medium", "max_tokens": 1500}),
                None
            ),
            (1500, None)
        );
        assert_eq!(
            max(json!({"messages": m, "reasoning_effort": "none"}), None),
            (DEFAULT_MAX_TOKENS, None)
        );
    }

    #[test]
    fn images_tool_choice_and_parameters() {
        check_request(
            json!({
                "model": "claude",
                "messages": [
                    {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is in these?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
                    ]},
                ],
                "tools": [{"type": "function", "function": {"name": "now"}}],
                "tool_choice": {"type": "function", "function": {"name": "now"}},
                "parallel_tool_calls": false,
                "stop": "END",
                "top_p": 0.9,
                "top_k": 5,
                "user": "user-42",
                "frequency_penalty": 1,
            }),
            None,
            json!({
                "model": "claude",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "system": "Be brief.",
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ]}],
                "tools": [{"name": "now", "input_schema": {"type": "object", "properties": {}}}],
                "tool_choice": {"type": "tool", "name": "now", "disable_parallel_tool_use": true},
                "stop_sequences": ["END"],
                "top_p": 0.9,
                "top_k": 5,
                "metadata": {"user_id": "user-42"},
            }),
        );
        for (choice, expected) in [
            (json!("auto"), json!({"type": "auto"})),
            (json!("required"), json!({"type": "any"})),
            (json!("none"), json!({"type": "none"})),
        ] {
            let body = json!({"messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": choice});
            let translated = translate_request(&object(body), None, true).unwrap();
            let value = serde_json::to_value(&translated).unwrap();
            assert_eq!(value["tool_choice"], expected);
            assert_eq!(value["stream"], true);
        }
        // No tools, no tool choice: Anthropic would refuse one.
        let body = json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none"});
        let translated = translate_request(&object(body), None, false).unwrap();
        assert!(translated.tool_choice.is_none());
    }

    #[test]
    fn untranslatable_requests_are_refused_before_sending() {
        check_refused(
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "messages[0]: content parts of type `input_audio` are not supported",
        );
        check_refused(
            json!({"messages": [{"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "messages[0].tool_calls[0].function.arguments must be a JSON object",
        );
        check_refused(
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
            "messages[0]: an image url must be an https or data URL",
        );
        check_refused(
            json!({"messages": [{"role": "function", "content": "x"}]}),
            "messages[0]: role `function` is not supported",
        );
        check_refused(
            json!({"messages": [], "tools": [{"type": "retrieval"}]}),
            "tools[0]: only function tools are supported",
        );
    }

    #[test]
    fn stop_reasons() {
        for (stop, finish) in [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("tool_use"), "tool_calls"),
            (Some("refusal"), "content_filter"),
            (Some("pause_turn"), "stop"),
            (None, "stop"),
        ] {
            assert_eq!(finish_reason(stop), finish, "{stop:?}");
        }
    }

    #[test]
    fn error_event_statuses_classify_like_http_ones() {
        use router_core::provider::ErrorKind;
        let kind = |anthropic: &str| {
            ProviderError::Status {
                status: error_status(anthropic),
                message: String::new(),
                retry_after: None,
            }
            .kind()
        };
        assert_eq!(kind("overloaded_error"), ErrorKind::ServerError);
        assert_eq!(kind("api_error"), ErrorKind::ServerError);
        assert_eq!(kind("rate_limit_error"), ErrorKind::RateLimited);
        assert_eq!(kind("authentication_error"), ErrorKind::KeyRejected);
        assert_eq!(kind("permission_error"), ErrorKind::KeyRejected);
        assert_eq!(kind("invalid_request_error"), ErrorKind::ClientError);
        assert_eq!(kind("something_new"), ErrorKind::ServerError);
    }

    #[test]
    fn usage_counts_cache_reads_and_writes_as_prompt() {
        let usage = Usage {
            input_tokens: Some(10),
            cache_creation_input_tokens: Some(200),
            cache_read_input_tokens: Some(1000),
            output_tokens: Some(7),
        };
        assert_eq!(
            usage.to_openai(),
            json!({"prompt_tokens": 1210, "completion_tokens": 7, "total_tokens": 1217,
                "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 200}})
        );
        let tokens = router_core::usage::Tokens::from_usage(&usage.to_openai()).unwrap();
        assert_eq!((tokens.prompt, tokens.cached), (1210, 1000));
    }
}
