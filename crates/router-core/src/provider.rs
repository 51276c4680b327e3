//! The port every upstream adapter implements, and the types that cross it.
//!
//! A provider receives a request body that the engine has already rewritten
//! for the chosen entry (`model` is the upstream name, thinking mapping done,
//! unknown fields untouched) and returns either one complete answer or a
//! stream of chunks. The engine, not the provider, renames `model` back and
//! post-processes what comes out.
//!
//! Chat completions are every provider's business. Text completions and
//! embeddings ([`Endpoint`]) are methods with default bodies that answer
//! [`ProviderError::Unsupported`], so an adapter that does not serve them
//! needs no code for them and keeps compiling as the trait grows.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_core::Stream;
use serde_json::{Map, Value};

pub use crate::completion::Completion;
use crate::config::ModelEntry;
use crate::secret::Secret;

/// A JSON object as it travels between the engine and the adapters. Field
/// order is preserved, so what we do not touch goes out as it came in.
pub type JsonObject = Map<String, Value>;

/// One call to an upstream.
#[derive(Debug)]
pub struct ProviderRequest {
    /// The body to send, already rewritten for the entry.
    pub body: JsonObject,
    /// The provider key picked for this attempt, if the entry has any.
    pub api_key: Option<Secret>,
}

/// The OpenAI endpoints the engine serves, each a path of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`: every provider serves it.
    ChatCompletions,
    /// `POST /v1/completions`: text in, text out (streamed or not).
    Completions,
    /// `POST /v1/embeddings`: never streamed.
    Embeddings,
}

impl Endpoint {
    /// The path clients call, as OpenAI's API names it.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// One parsed event of an upstream stream (the JSON after `data:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk(pub JsonObject);

/// The stream a provider returns. It ends (`None`) after the upstream's
/// `[DONE]`; an upstream that stops without `[DONE]` yields an `Err` first.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

/// An upstream adapter. One instance serves one model entry.
///
/// Contract: an `Err` returned by [`Provider::complete`] or
/// [`Provider::stream`] means nothing reached the client, so the engine may
/// fail over. An `Err` inside a [`ChunkStream`] is reported to the client
/// and never retried.
///
/// The text-completion and embedding methods have default bodies that
/// answer [`ProviderError::Unsupported`]: an adapter overrides those it can
/// serve. A wrapper around another provider (like `scrub::guard`) must
/// forward every method, or the wrapped adapter's own would never be called.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// A chat completion (`/v1/chat/completions`), answered whole.
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError>;

    /// A chat completion as a stream of `chat.completion.chunk`s.
    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError>;

    /// A text completion (`/v1/completions`), answered whole.
    async fn complete_text(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        drop(request);
        Err(ProviderError::Unsupported {
            endpoint: Endpoint::Completions,
        })
    }

    /// A text completion as a stream of `text_completion` chunks, with the
    /// same contract as [`Provider::stream`].
    async fn stream_text(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        drop(request);
        Err(ProviderError::Unsupported {
            endpoint: Endpoint::Completions,
        })
    }

    /// Embeddings (`/v1/embeddings`): the upstream's `list` object, whole.
    async fn embed(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        drop(request);
        Err(ProviderError::Unsupported {
            endpoint: Endpoint::Embeddings,
        })
    }
}

/// What building a provider gives: the adapter, or why it cannot be built.
pub type BuildResult = Result<Arc<dyn Provider>, String>;

/// Builds the provider of one model entry. Registered by name in the binary,
/// so a provider in its own crate plugs in without touching this one.
pub trait ProviderFactory: Send + Sync {
    fn build(&self, entry: &ModelEntry) -> BuildResult;
}

/// What can go wrong talking to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// DNS, TCP, TLS: the request never reached the upstream.
    #[error("could not connect to the upstream: {detail}")]
    Connect { detail: String },
    /// No answer (or no next chunk) within the allowed time.
    #[error("the upstream did not answer within {after:?}")]
    Timeout { after: Duration },
    /// The upstream answered with a non-success status. `message` is our
    /// safe summary of its body, never the raw body.
    #[error("the upstream answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The upstream's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The upstream sent something that is not a valid answer.
    #[error("the upstream sent an invalid response: {detail}")]
    InvalidResponse { detail: String },
    /// The stream broke off or ended without `[DONE]`.
    #[error("the upstream stream ended early: {detail}")]
    Truncated { detail: String },
    /// The adapter does not serve this endpoint; nothing was sent.
    #[error("this provider does not serve {endpoint}")]
    Unsupported { endpoint: Endpoint },
}

/// How the engine should treat a [`ProviderError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Timeout,
    /// Upstream 429.
    RateLimited,
    /// Upstream 5xx.
    ServerError,
    /// Upstream 401 or 403: the upstream refused our provider key, not the
    /// client. Another key may work; the client is not to blame.
    KeyRejected,
    /// Upstream 4xx other than 401, 403 and 429: the client's own bad request.
    ClientError,
    InvalidResponse,
    Truncated,
    /// The adapter does not serve the endpoint: a configuration matter
    /// (the entry's `supports_*` flag promises what its provider lacks),
    /// not a fault of the key or of the upstream. Another entry may serve it.
    Unsupported,
}

impl ProviderError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } => ErrorKind::Connect,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Status { status: 429, .. } => ErrorKind::RateLimited,
            Self::Status {
                status: 401 | 403, ..
            } => ErrorKind::KeyRejected,
            Self::Status { status, .. } if (400..500).contains(status) => ErrorKind::ClientError,
            Self::Status { .. } => ErrorKind::ServerError,
            Self::InvalidResponse { .. } => ErrorKind::InvalidResponse,
            Self::Truncated { .. } => ErrorKind::Truncated,
            Self::Unsupported { .. } => ErrorKind::Unsupported,
        }
    }

    /// Whether another key or entry may be tried (only ever before the first
    /// byte reached the client).
    pub fn is_retryable(&self) -> bool {
        !matches!(self.kind(), ErrorKind::ClientError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let status = |status| ProviderError::Status {
            status,
            message: String::new(),
            retry_after: None,
        };
        assert_eq!(status(429).kind(), ErrorKind::RateLimited);
        assert_eq!(status(400).kind(), ErrorKind::ClientError);
        assert_eq!(status(401).kind(), ErrorKind::KeyRejected);
        assert_eq!(status(403).kind(), ErrorKind::KeyRejected);
        assert!(status(401).is_retryable());
        assert_eq!(status(404).kind(), ErrorKind::ClientError);
        assert_eq!(status(500).kind(), ErrorKind::ServerError);
        assert_eq!(status(503).kind(), ErrorKind::ServerError);
        assert!(status(429).is_retryable());
        assert!(status(502).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(ProviderError::Connect {
            detail: String::new()
        }
        .is_retryable());
    }
}
