//! The OpenAI-compatible adapter: `POST {base_url}/chat/completions` on any
//! upstream that speaks the Chat Completions API (OpenAI, Gemini's OpenAI
//! endpoint, OpenRouter, vLLM, Ollama, ...), and beside it
//! `{base_url}/completions` (text completions, streamed or not) and
//! `{base_url}/embeddings`. An entry with `base_url_direct` names one URL,
//! its chat endpoint, so it serves chat only: the others answer
//! `ProviderError::Unsupported`.
//!
//! The engine has already rewritten the body for the entry (`model`,
//! thinking mapping, `stream`, `stream_options`), so this adapter sends it as
//! it is, with only our own headers: `Content-Type`, `Accept`,
//! `User-Agent` and, when the entry has keys, `Authorization`. No client
//! header is forwarded.
//!
//! What comes back is judged, never echoed: an upstream error body can carry
//! account details, so errors carry a safe summary (the upstream's
//! `error.message`, truncated) and never the raw body.
//!
//! Time: the entry's [`Timeouts`], each reported as `ProviderError::Timeout`
//! naming the one that expired:
//! - `connect` bounds TCP and TLS set-up; it lives in the client's connector
//!   (see [`HttpClient::with_connect_timeout`]), so the adapter holds a
//!   client built for the entry's value;
//! - `first_byte` bounds the wait for the response head (connecting and
//!   sending included);
//! - `idle` bounds the silence between two body frames of a stream, from the
//!   head on; any bytes count, SSE comments included, since an upstream that
//!   sends keep-alives is alive (`total` still bounds it). It is not applied
//!   to a non-streamed body: that arrives at once after the head;
//! - `total` bounds the whole attempt, the last chunk of a stream included.
//!
//! Before the stream exists a timeout is the `Err` of `complete`/`stream`,
//! so the engine may fail over; once it exists it is the stream's last item,
//! and the stream drops the body, which closes the upstream request.

use std::collections::VecDeque;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use router_core::config::{ModelEntry, Timeouts};
use router_core::provider::{ChunkStream, Endpoint, JsonObject};
use router_core::{Chunk, Completion, Provider, ProviderError, ProviderRequest};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use crate::client::{read_body, retry_after, ClientError, HttpClient};
use crate::event_stream::{EventDecoder, EventStream, Flow};
use crate::exchange::{self, KeyHeader};
use crate::sse::SseEvent;

/// The largest non-streamed answer we read. Chat answers are far smaller;
/// this only stops a broken upstream from filling our memory.
pub(crate) const MAX_COMPLETION_BYTES: usize = 64 * 1024 * 1024;

/// How much of an error body we read to find its message.
pub(crate) const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// How much of the upstream's error message we pass on, in characters.
pub(crate) const MAX_MESSAGE_CHARS: usize = 500;

pub(crate) static USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("router/", env!("CARGO_PKG_VERSION")));

/// Why an entry cannot be served by this adapter.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the openai provider needs a base_url")]
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
pub struct OpenAiProvider {
    /// Connects within `timeouts.connect`.
    client: HttpClient,
    /// Computed once: the chat completions endpoint of the entry.
    url: Uri,
    /// `{base_url}/completions`; `None` for a direct `base_url`.
    completions_url: Option<Uri>,
    /// `{base_url}/embeddings`; `None` for a direct `base_url`.
    embeddings_url: Option<Uri>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the host: a base_url may carry a key in its query string.
        f.debug_struct("OpenAiProvider")
            .field("host", &self.url.host().unwrap_or_default())
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// The adapter for `entry`, enforcing `entry.timeouts`. `client` is used
    /// as it is when its connect timeout is the entry's; otherwise the
    /// adapter gets a client of its own (and so a pool of its own) with the
    /// entry's. Pass a matching client to share connections, as
    /// [`crate::OpenAiFactory`] does.
    pub fn new(client: HttpClient, entry: &ModelEntry) -> Result<Self, BuildError> {
        let base = entry.base_url.as_ref().ok_or(BuildError::MissingBaseUrl)?;
        let url = chat_completions_url(base, entry.base_url_direct)?;
        let (completions_url, embeddings_url) = if entry.base_url_direct {
            (None, None)
        } else {
            (
                Some(endpoint_url(base, "completions")?),
                Some(endpoint_url(base, "embeddings")?),
            )
        };
        let client = client
            .with_connect_timeout(entry.timeouts.connect)
            .map_err(|source| BuildError::Client { source })?;
        Ok(Self {
            client,
            url,
            completions_url,
            embeddings_url,
            timeouts: entry.timeouts,
        })
    }

    /// The timeouts this adapter enforces.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Where requests go.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    fn request(
        &self,
        url: &Uri,
        request: ProviderRequest,
        stream: bool,
    ) -> Result<Request<Full<Bytes>>, ProviderError> {
        exchange::post_json(
            url,
            &request.body,
            stream,
            request.api_key.as_ref(),
            KeyHeader::Bearer,
            &[],
        )
    }

    async fn complete_within_deadline(
        &self,
        url: &Uri,
        request: ProviderRequest,
    ) -> Result<Completion, ProviderError> {
        let request = self.request(url, request, false)?;
        let (_, body) = exchange::send(&self.client, request, self.timeouts.first_byte).await?;
        parse_completion(&exchange::read_answer(body).await?)
    }

    async fn open_stream(
        &self,
        url: &Uri,
        request: ProviderRequest,
    ) -> Result<Incoming, ProviderError> {
        let request = self.request(url, request, true)?;
        let (head, body) = exchange::send(&self.client, request, self.timeouts.first_byte).await?;
        exchange::event_stream(&head, body)
    }

    /// One whole answer from `url`, within the `total` timeout.
    async fn complete_at(
        &self,
        url: &Uri,
        request: ProviderRequest,
    ) -> Result<Completion, ProviderError> {
        let after = self.timeouts.total;
        tokio::time::timeout(after, self.complete_within_deadline(url, request))
            .await
            .unwrap_or(Err(ProviderError::Timeout { after }))
    }

    /// A stream of chunks from `url`; the `total` timeout covers its end.
    async fn stream_at(
        &self,
        url: &Uri,
        request: ProviderRequest,
    ) -> Result<ChunkStream, ProviderError> {
        let total = self.timeouts.total;
        // One deadline for the whole attempt: the head here, the chunks later.
        let deadline = Instant::now() + total;
        let body = tokio::time::timeout_at(deadline, self.open_stream(url, request))
            .await
            .unwrap_or(Err(ProviderError::Timeout { after: total }))?;
        let idle_timeout = self.timeouts.idle;
        Ok(Box::pin(EventStream::new(
            body,
            self.client.settings().max_sse_event_bytes,
            deadline,
            total,
            idle_timeout,
            OpenAiEvents,
        )))
    }
}

/// `Unsupported` for an endpoint this entry has no URL for.
fn endpoint_of(url: Option<&Uri>, endpoint: Endpoint) -> Result<&Uri, ProviderError> {
    url.ok_or(ProviderError::Unsupported { endpoint })
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        self.complete_at(&self.url, request).await
    }

    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        self.stream_at(&self.url, request).await
    }

    async fn complete_text(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let url = endpoint_of(self.completions_url.as_ref(), Endpoint::Completions)?;
        self.complete_at(url, request).await
    }

    async fn stream_text(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        let url = endpoint_of(self.completions_url.as_ref(), Endpoint::Completions)?;
        self.stream_at(url, request).await
    }

    async fn embed(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let url = endpoint_of(self.embeddings_url.as_ref(), Endpoint::Embeddings)?;
        self.complete_at(url, request).await
    }
}

/// `base_url + "/chat/completions"` (one slash, whatever `base_url` ends
/// with; a query string stays at the end), or `base_url` itself when direct.
pub fn chat_completions_url(base: &Url, direct: bool) -> Result<Uri, BuildError> {
    if direct {
        return join(base, None);
    }
    endpoint_url(base, "chat/completions")
}

/// `base_url + "/" + path`, with one slash whatever `base_url` ends with; a
/// query string stays at the end.
pub fn endpoint_url(base: &Url, path: &str) -> Result<Uri, BuildError> {
    join(base, Some(path))
}

fn join(base: &Url, path: Option<&str>) -> Result<Uri, BuildError> {
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
    if let Some(path) = path {
        let path = format!("{}/{path}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    url.as_str()
        .parse::<Uri>()
        .map_err(|error| BuildError::InvalidUri {
            detail: error.to_string(),
        })
}

/// Turns a non-success answer into `Status`, reading at most a small part of
/// the body to find the upstream's own message.
pub(crate) async fn status_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: Incoming,
) -> ProviderError {
    let message = match read_body(body, MAX_ERROR_BODY_BYTES).await {
        Ok(bytes) => upstream_error_message(&bytes),
        Err(_) => None,
    };
    ProviderError::Status {
        status: status.as_u16(),
        message: message.unwrap_or_else(|| format!("upstream returned status {}", status.as_u16())),
        retry_after: retry_after(headers, SystemTime::now()),
    }
}

/// The upstream's own error message from a JSON error body, truncated, or
/// `None` when the body is not shaped like one. Accepted shapes:
/// `{"error":{"message":"..."}}` (OpenAI, Azure, Anthropic's
/// `{"type":"error","error":{...}}`), `{"error":"..."}` (Ollama), the first
/// inside a one-element array (Gemini's OpenAI endpoint), and
/// `{"object":"error","message":"..."}` (vLLM).
///
/// The message still carries whatever the upstream put in it, account
/// details included: the engine scrubs every `ProviderError` before anyone
/// sees it (`router_core::scrub`).
pub(crate) fn upstream_error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    match &value {
        Value::Array(items) => error_message(items.first()?.as_object()?),
        Value::Object(object) => error_message(object),
        _ => None,
    }
}

fn error_message(object: &JsonObject) -> Option<String> {
    let text = match object.get("error") {
        Some(Value::String(text)) => text,
        Some(Value::Object(error)) => error.get("message")?.as_str()?,
        // vLLM (and other servers built on FastAPI's OpenAI shim).
        None if object.get("object").and_then(Value::as_str) == Some("error") => {
            object.get("message")?.as_str()?
        }
        _ => return None,
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(truncate_at_word(text, MAX_MESSAGE_CHARS))
}

/// At most `max` characters of `text`, cut at a space when there is one, so
/// that no word is cut in two: half a key would no longer be recognised as
/// one by the scrubber. The cut is marked with a separate ` …`.
pub(crate) fn truncate_at_word(text: &str, max: usize) -> String {
    let Some((cut, _)) = text.char_indices().nth(max) else {
        return text.to_owned();
    };
    let kept = &text[..cut];
    match kept.rfind(char::is_whitespace) {
        Some(space) => format!("{} …", kept[..space].trim_end()),
        // One word longer than the limit: not a sentence anyone needs.
        None => "…".to_owned(),
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// A 2xx body is a completion only if it is a JSON object with `id` or
/// `object` (the seed's test, which catches proxies answering 200 with HTML).
/// Its top-level fields are kept as the upstream's text, parsed only where
/// the engine edits them (`model`, `usage`); the rest reaches the client as
/// it came.
fn parse_completion(bytes: &[u8]) -> Result<Completion, ProviderError> {
    let completion =
        Completion::from_json_slice(bytes).map_err(|_| ProviderError::InvalidResponse {
            detail: "the answer is not a JSON object".to_owned(),
        })?;
    if completion.contains_key("id") || completion.contains_key("object") {
        return Ok(completion);
    }
    let detail = match upstream_error_message(bytes) {
        Some(message) => format!("the upstream answered with an error: {message}"),
        None => "the answer has neither `id` nor `object`".to_owned(),
    };
    Err(ProviderError::InvalidResponse { detail })
}

pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The content type for an error message: a header, so not secret, but
/// bounded and printable all the same.
pub(crate) fn content_type_for_message(headers: &HeaderMap) -> String {
    match headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    {
        Some(text) => truncate_chars(text, 100),
        None => "(none)".to_owned(),
    }
}

/// What one SSE event means to the stream.
#[derive(Debug)]
enum Decoded {
    Chunk(Chunk),
    Done,
    /// Nothing to pass on (an empty `data:`).
    Skip,
    Failed(ProviderError),
}

fn decode_event(event: &SseEvent) -> Decoded {
    let data = event.data.trim_ascii();
    if data.is_empty() {
        return Decoded::Skip;
    }
    if data == b"[DONE]" {
        return Decoded::Done;
    }
    let Ok(object) = serde_json::from_slice::<JsonObject>(data) else {
        return Decoded::Failed(ProviderError::InvalidResponse {
            detail: "a stream event is not a JSON object".to_owned(),
        });
    };
    match object.get("error") {
        None | Some(Value::Null) => Decoded::Chunk(Chunk(object)),
        Some(_) => Decoded::Failed(stream_error(&object)),
    }
}

/// An upstream that fails after its 200 sends `{"error": {...}}` as an
/// event. With an HTTP-like `code` it becomes `Status`, so it is classified
/// like the same error before the stream; otherwise `InvalidResponse`.
fn stream_error(object: &JsonObject) -> ProviderError {
    let message = error_message(object);
    let status = object
        .get("error")
        .and_then(Value::as_object)
        .and_then(|error| error.get("code").or_else(|| error.get("status")))
        .and_then(|code| match code {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.parse().ok(),
            _ => None,
        })
        .and_then(|code| u16::try_from(code).ok())
        .filter(|code| (400..600).contains(code));
    match status {
        Some(status) => ProviderError::Status {
            status,
            message: message
                .unwrap_or_else(|| format!("upstream reported status {status} mid-stream")),
            retry_after: None,
        },
        None => ProviderError::InvalidResponse {
            detail: match message {
                Some(message) => format!("the upstream reported an error mid-stream: {message}"),
                None => "the upstream reported an error mid-stream".to_owned(),
            },
        },
    }
}

/// Reads OpenAI events: each is a chunk, `[DONE]` ends the stream.
#[derive(Debug, Default)]
struct OpenAiEvents;

impl EventDecoder for OpenAiEvents {
    fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut VecDeque<Chunk>,
    ) -> Result<Flow, ProviderError> {
        match decode_event(event) {
            Decoded::Chunk(chunk) => {
                out.push_back(chunk);
                Ok(Flow::Continue)
            }
            Decoded::Skip => Ok(Flow::Continue),
            Decoded::Done => Ok(Flow::Done),
            Decoded::Failed(error) => Err(error),
        }
    }

    fn early_end(&self) -> &'static str {
        "the upstream closed the stream without [DONE]"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_url(base: &str, direct: bool, expected: &str) {
        let base = Url::parse(base).unwrap();
        assert_eq!(
            chat_completions_url(&base, direct).unwrap().to_string(),
            expected
        );
    }

    #[test]
    fn url_joining() {
        check_url(
            "https://api.example.com/v1",
            false,
            "https://api.example.com/v1/chat/completions",
        );
        check_url(
            "https://api.example.com/v1/",
            false,
            "https://api.example.com/v1/chat/completions",
        );
        check_url(
            "https://api.example.com",
            false,
            "https://api.example.com/chat/completions",
        );
        check_url(
            "http://127.0.0.1:11434/v1",
            false,
            "http://127.0.0.1:11434/v1/chat/completions",
        );
        check_url(
            "https://x.example.com/openai/deployments/d?api-version=2024-06-01",
            false,
            "https://x.example.com/openai/deployments/d/chat/completions?api-version=2024-06-01",
        );
        check_url(
            "https://api.example.com/custom/path",
            true,
            "https://api.example.com/custom/path",
        );
        check_url(
            "https://api.example.com/custom/path/",
            true,
            "https://api.example.com/custom/path/",
        );
    }

    #[test]
    fn endpoint_urls_join_like_chat() {
        let check = |base: &str, path: &str, expected: &str| {
            let base = Url::parse(base).unwrap();
            assert_eq!(endpoint_url(&base, path).unwrap().to_string(), expected);
        };
        check(
            "https://api.example.com/v1/",
            "embeddings",
            "https://api.example.com/v1/embeddings",
        );
        check(
            "https://x.example.com/openai/deployments/d?api-version=2024-06-01",
            "completions",
            "https://x.example.com/openai/deployments/d/completions?api-version=2024-06-01",
        );
    }

    #[test]
    fn url_scheme_must_be_http() {
        let base = Url::parse("ftp://example.com/v1").unwrap();
        assert!(matches!(
            chat_completions_url(&base, false),
            Err(BuildError::UnsupportedScheme { .. })
        ));
    }

    #[track_caller]
    fn check_message(body: &str, expected: Option<&str>) {
        assert_eq!(
            upstream_error_message(body.as_bytes()).as_deref(),
            expected,
            "{body}"
        );
    }

    #[test]
    fn safe_error_messages() {
        check_message(
            r#"{"error":{"message":"bad model","type":"invalid_request_error"}}"#,
            Some("bad model"),
        );
        check_message(r#"{"error":"model not found"}"#, Some("model not found"));
        check_message(
            r#"[{"error":{"code":400,"message":"API key not valid"}}]"#,
            Some("API key not valid"),
        );
        check_message(r#"{"error":{"message":"  "}}"#, None);
        check_message(r#"{"error":{"code":500}}"#, None);
        check_message(r#"{"detail":"account 123 is over quota"}"#, None);
        check_message("<html>bad gateway</html>", None);
        check_message("", None);
        check_message(
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: 9999 > 8192"}}"#,
            Some("max_tokens: 9999 > 8192"),
        );
        check_message(
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens.","type":"BadRequestError","param":null,"code":400}"#,
            Some("This model's maximum context length is 4096 tokens."),
        );
        check_message(r#"{"object":"list","message":"not an error"}"#, None);
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "élan ".repeat(160));
        let message = upstream_error_message(long.as_bytes()).unwrap();
        assert!(
            message.chars().count() <= MAX_MESSAGE_CHARS + 2,
            "{message}"
        );
        assert!(message.ends_with("élan …"), "{message}");
        // A word is never cut in two: a key at the limit goes whole or not at all.
        let key = "sk-0123456789abcdef";
        let straddling = format!("{} {key} tail", "x".repeat(MAX_MESSAGE_CHARS - 10));
        let message = truncate_at_word(&straddling, MAX_MESSAGE_CHARS);
        assert!(!message.contains("sk-"), "{message}");
        assert_eq!(truncate_at_word(&"y".repeat(800), MAX_MESSAGE_CHARS), "…");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use router_core::scrub::{Scrubber, MARKER};

        proptest! {
            /// A configured key placed anywhere in an upstream error body's
            /// message, of any length, never comes out of extraction,
            /// truncation and the engine's scrubber: truncation never cuts
            /// it into a piece the scrubber would not know.
            #[test]
            fn a_configured_key_in_an_error_body_never_comes_out(
                key in "[A-Za-z0-9_-]{8,64}",
                before in "[a-z .,:'`(){}é\n-]{0,700}",
                after in any::<String>(),
                shape in 0usize..4,
            ) {
                prop_assume!(!MARKER.contains(key.as_str()));
                let message = format!("{before}{key}{after}");
                let body = match shape {
                    0 => json_body(&serde_json::json!({"error": {"message": message}})),
                    1 => json_body(&serde_json::json!([{"error": {"code": 400, "message": message}}])),
                    2 => json_body(&serde_json::json!({"error": message})),
                    _ => json_body(&serde_json::json!({"object": "error", "message": message})),
                };
                let scrubber = Scrubber::new([key.as_str()]);
                if let Some(extracted) = upstream_error_message(&body) {
                    let scrubbed = scrubber.scrub(&extracted);
                    prop_assert!(!scrubbed.contains(key.as_str()), "{scrubbed:?}");
                    // Not even a piece long enough to matter.
                    for piece in scrubbed.split(|ch: char| !ch.is_ascii_alphanumeric()) {
                        prop_assert!(
                            piece.len() < router_core::scrub::MIN_FRAGMENT_CHARS
                                || !key.contains(piece),
                            "{piece:?} of the key in {scrubbed:?}"
                        );
                    }
                }
            }
        }

        fn json_body(value: &serde_json::Value) -> Vec<u8> {
            serde_json::to_vec(value).unwrap()
        }
    }

    #[test]
    fn completion_shape() {
        assert!(parse_completion(br#"{"id":"x","choices":[]}"#).is_ok());
        assert!(parse_completion(br#"{"object":"chat.completion"}"#).is_ok());
        let error = parse_completion(br#"{"choices":[]}"#).unwrap_err();
        assert!(matches!(error, ProviderError::InvalidResponse { .. }));
        let error = parse_completion(br#"{"error":{"message":"quota"}}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the upstream sent an invalid response: the upstream answered with an error: quota"
        );
        let error = parse_completion(b"[1,2]").unwrap_err();
        assert!(matches!(error, ProviderError::InvalidResponse { .. }));
    }

    fn decode(data: &str) -> Decoded {
        decode_event(&SseEvent {
            event: None,
            data: Bytes::copy_from_slice(data.as_bytes()),
        })
    }

    #[test]
    fn event_decoding() {
        assert!(matches!(decode("[DONE]"), Decoded::Done));
        assert!(matches!(decode(" [DONE] "), Decoded::Done));
        assert!(matches!(decode(""), Decoded::Skip));
        assert!(matches!(
            decode(r#"{"id":"1","error":null}"#),
            Decoded::Chunk(_)
        ));
        assert!(matches!(
            decode("not json"),
            Decoded::Failed(ProviderError::InvalidResponse { .. })
        ));
        assert!(matches!(
            decode("[1]"),
            Decoded::Failed(ProviderError::InvalidResponse { .. })
        ));
        match decode(r#"{"error":{"code":429,"message":"slow down"}}"#) {
            Decoded::Failed(ProviderError::Status {
                status, message, ..
            }) => {
                assert_eq!((status, message.as_str()), (429, "slow down"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match decode(r#"{"error":{"type":"server_error","message":"overloaded"}}"#) {
            Decoded::Failed(ProviderError::InvalidResponse { detail }) => {
                assert_eq!(
                    detail,
                    "the upstream reported an error mid-stream: overloaded"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn event_stream_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_event_stream(&headers));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Text/Event-Stream; charset=utf-8"),
        );
        assert!(is_event_stream(&headers));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_event_stream(&headers));
    }
}
