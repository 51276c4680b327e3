//! One HTTP exchange with an upstream, as every HTTP adapter makes it: a
//! JSON POST carrying the provider key in a sensitive header, its response
//! head within `first_byte`, a non-success status turned into
//! `ProviderError::Status` (the upstream's own message, never its body),
//! and then either a bounded complete answer or an event stream's body.
//!
//! The adapters differ in their wire formats and in how they name the key
//! (`Authorization: Bearer` or `x-api-key`), not in any of this, so it is
//! written once here and every adapter fails the same way for the same
//! reason.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use router_core::secret::Secret;
use router_core::ProviderError;
use serde::Serialize;

use crate::client::{read_body, BodyError, HttpClient};
use crate::openai::{
    content_type_for_message, is_event_stream, status_error, MAX_COMPLETION_BYTES, USER_AGENT_VALUE,
};

/// Where an upstream wants the provider key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyHeader {
    /// `Authorization: Bearer <key>` (OpenAI and its kin).
    Bearer,
    /// The key alone in a header of its own (Anthropic's `x-api-key`).
    Named(&'static HeaderName),
}

/// A POST of `body` as JSON to `url`, asking for an event stream or a JSON
/// answer, with the provider key (when there is one) and `extra` headers.
/// Nothing has been sent when this fails, which the message says.
pub(crate) fn post_json(
    url: &Uri,
    body: &impl Serialize,
    stream: bool,
    key: Option<&Secret>,
    key_header: KeyHeader,
    extra: &[(&'static HeaderName, &'static str)],
) -> Result<Request<Full<Bytes>>, ProviderError> {
    let body = serde_json::to_vec(body).map_err(|error| ProviderError::Connect {
        detail: format!("the request body could not be serialised, so nothing was sent: {error}"),
    })?;
    let accept = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut builder = Request::post(url.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(ACCEPT, HeaderValue::from_static(accept))
        .header(USER_AGENT, USER_AGENT_VALUE.clone());
    for (name, value) in extra {
        builder = builder.header(*name, HeaderValue::from_static(value));
    }
    if let Some(key) = key.filter(|key| !key.is_empty()) {
        let (name, value) = match key_header {
            KeyHeader::Bearer => (
                &AUTHORIZATION,
                HeaderValue::try_from(format!("Bearer {}", key.expose())),
            ),
            KeyHeader::Named(name) => (name, HeaderValue::try_from(key.expose())),
        };
        // Never name the key in the message: it is the secret.
        let mut value = value.map_err(|_| ProviderError::Connect {
            detail: "the provider key is not a valid header value, so nothing was sent".to_owned(),
        })?;
        // Sensitive: hyper's HPACK never indexes it, and it is never logged.
        value.set_sensitive(true);
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|error| ProviderError::Connect {
            detail: format!("the request could not be built, so nothing was sent: {error}"),
        })
}

/// Sends `request` and waits for a success response head within
/// `first_byte`; a non-success status becomes `ProviderError::Status`.
pub(crate) async fn send(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
    first_byte: Duration,
) -> Result<(http::response::Parts, Incoming), ProviderError> {
    let response = tokio::time::timeout(first_byte, client.send(request))
        .await
        .unwrap_or(Err(ProviderError::Timeout { after: first_byte }))?;
    let (head, body) = response.into_parts();
    if !head.status.is_success() {
        return Err(status_error(head.status, &head.headers, body).await);
    }
    Ok((head, body))
}

/// The whole body of a complete answer, at most [`MAX_COMPLETION_BYTES`].
pub(crate) async fn read_answer(body: Incoming) -> Result<Bytes, ProviderError> {
    read_body(body, MAX_COMPLETION_BYTES)
        .await
        .map_err(|error| match error {
            BodyError::TooLarge => ProviderError::InvalidResponse {
                detail: format!("the answer is larger than {MAX_COMPLETION_BYTES} bytes"),
            },
            BodyError::Read(error) => ProviderError::Truncated {
                detail: format!("the answer broke off: {error}"),
            },
        })
}

/// The body of a stream, once its head says it is one.
pub(crate) fn event_stream(
    head: &http::response::Parts,
    body: Incoming,
) -> Result<Incoming, ProviderError> {
    if !is_event_stream(&head.headers) {
        // Dropping the body here closes the connection: we will not read it.
        return Err(ProviderError::InvalidResponse {
            detail: format!(
                "expected text/event-stream, the upstream sent content-type {}",
                content_type_for_message(&head.headers)
            ),
        });
    }
    Ok(body)
}
