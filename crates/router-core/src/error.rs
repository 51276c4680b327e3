//! Errors a client can cause or meet on the way through the engine.
//!
//! Lower layers classify; only router-http turns these into HTTP statuses and
//! OpenAI-shaped bodies.

use crate::limits::Refusal;
use crate::provider::{Endpoint, ProviderError};

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

/// Why a request failed, whichever endpoint it came to (chat completions,
/// text completions, embeddings).
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
    #[error("Model {} not found or not available.", shorten(model))]
    ModelNotFound { model: String },
    /// The model exists, but none of its entries declares the endpoint
    /// (`supports_completion`, `supports_embedding`).
    #[error("Model {} does not support {endpoint}.", shorten(model))]
    ModelNotSupported { model: String, endpoint: Endpoint },
    /// A limit refused the request (the client's, or every entry's). When
    /// `refusal.never_fits`, the request can never be served as it is.
    #[error("{}", refusal_message(refusal))]
    Refused { refusal: Refusal },
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
    /// No candidate could be tried: every provider key of every entry was
    /// resting, disabled or behind an open circuit. `retry_after` is the
    /// earliest recovery; `rate_limited` when every one of them rests after
    /// an upstream 429.
    #[error("{}", unavailable_message(*retry_after, *rate_limited))]
    Unavailable {
        retry_after: std::time::Duration,
        rate_limited: bool,
    },
    /// The shared limits could not be checked, and the router is configured
    /// to refuse rather than serve unchecked (`on_unavailable: fail_closed`).
    #[error(
        "The router cannot check its rate limits right now; retry after {} s",
        retry_after.as_secs_f64().ceil().max(1.0)
    )]
    LimitsUnavailable { retry_after: std::time::Duration },
}

fn unavailable_message(retry_after: std::time::Duration, rate_limited: bool) -> String {
    let seconds = retry_after.as_secs_f64().ceil().max(1.0);
    if rate_limited {
        format!("Every upstream provider key is rate limited; retry after {seconds} s")
    } else {
        format!("No upstream provider is available right now; retry after {seconds} s")
    }
}

fn refusal_message(refusal: &Refusal) -> String {
    // Budgets are kept in micro-USD; people read dollars.
    let limit = if refusal.name.measure == crate::limits::Measure::Cost {
        format!("${:.2}", refusal.limit as f64 / 1_000_000.0)
    } else {
        refusal.limit.to_string()
    };
    if refusal.never_fits {
        format!(
            "This request needs more than the whole {} limit of {limit}; reduce max_tokens or the prompt",
            refusal.name
        )
    } else {
        format!(
            "Rate limit reached: {} limit of {limit}; retry after {} s",
            refusal.name,
            refusal.retry_after.as_secs_f64().ceil().max(1.0)
        )
    }
}

/// Why `/v1/usage` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// A key that is not `admin` asked about another key.
    #[error("this key may only read its own usage (admin keys may read any)")]
    Forbidden,
    /// This router keeps no usage ledger (`limits.ledger: false`, or an
    /// embedding that gave `Services` no store).
    #[error("this router keeps no usage ledger")]
    NoLedger,
    #[error("{0}")]
    Ledger(#[from] crate::usage::LedgerError),
}

/// A client-supplied name as it may appear in a message: whole when short,
/// else its first 256 characters and an ellipsis, so a 100 KB model name is
/// not echoed back (or written to a log) whole.
pub(crate) fn shorten(text: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 256;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
        None => text.into(),
    }
}
