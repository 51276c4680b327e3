//! Errors a client can cause or meet on the way through the engine.
//!
//! Lower layers classify; only router-http turns these into HTTP statuses and
//! OpenAI-shaped bodies.

use crate::provider::ProviderError;

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing API key")]
    Missing,
    #[error("Invalid API key")]
    Invalid,
    #[error("API key has expired")]
    Expired,
}

/// Why a chat completion failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The body is not a JSON object.
    #[error("Invalid request body: {detail}")]
    InvalidBody { detail: String },
    /// A field has the wrong type or value. `param` is its path (`messages[1].role`).
    #[error("Invalid request: {message}")]
    InvalidField {
        message: String,
        param: Option<String>,
    },
    #[error("Model {model} not found or not available.")]
    ModelNotFound { model: String },
    /// One attempt was made and it failed, or the upstream refused the
    /// client's own request (4xx other than 429), which is never retried.
    #[error("{source}")]
    Upstream {
        #[source]
        source: ProviderError,
    },
    /// Several attempts were made (keys or entries) and all failed.
    #[error("All providers failed after {attempts} attempts: {last}")]
    AllFailed {
        attempts: usize,
        #[source]
        last: ProviderError,
    },
}
