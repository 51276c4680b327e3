//! The one place errors become HTTP statuses and OpenAI-shaped error bodies.
//!
//! Lower layers only classify their errors (`ProviderError::kind`); every
//! status code the router sends for an error is chosen in this file, so the
//! mapping can be read (and tested) as one table.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Response, StatusCode};
use router_core::limits::{Measure, Refusal};
use router_core::provider::ErrorKind;
use router_core::{AdminError, AuthError, ChatError, ProviderError, UsageError};
use serde::Serialize;

use crate::body::ResponseBody;
use crate::ratelimit::go_duration;

pub(crate) const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

const INVALID_REQUEST: &str = "invalid_request_error";
const SERVER_ERROR: &str = "server_error";
const RATE_LIMIT: &str = "rate_limit_error";
/// OpenAI's type (and code) for "you are out of quota": a day quota or a
/// budget, which no retry loop outlasts.
const INSUFFICIENT_QUOTA: &str = "insufficient_quota";

/// OpenAI's SDKs obey this over their own retry rules: `false` stops them
/// retrying a 429 that will not clear for hours.
const X_SHOULD_RETRY: &str = "x-should-retry";

/// An error as the client will see it: status, OpenAI error fields and the
/// headers that go with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    error_type: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
    /// Sent as `Retry-After` in whole seconds (at least 1).
    retry_after: Option<Duration>,
    /// Sent as `Allow` with a 405.
    allow: Option<&'static str>,
    /// Sent as `x-should-retry: false` when retrying cannot help soon.
    no_retry: bool,
    /// Whether the client's own credentials were refused (adds
    /// `WWW-Authenticate: Bearer`); an upstream refusing *our* key is not that.
    challenge: bool,
}

/// The wire shape: `{"error":{"message","type","param","code"}}`.
#[derive(Serialize)]
struct Envelope<'a> {
    error: Fields<'a>,
}

#[derive(Serialize)]
struct Fields<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    error_type: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        error_type: &'static str,
        code: &'static str,
        message: String,
    ) -> Self {
        Self {
            status,
            message,
            error_type,
            param: None,
            code: Some(code),
            retry_after: None,
            allow: None,
            no_retry: false,
            challenge: false,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn from_auth(error: AuthError) -> Self {
        let code = match error {
            AuthError::Missing => "missing_api_key",
            AuthError::Invalid => "invalid_api_key",
            AuthError::Expired => "expired_api_key",
        };
        Self {
            challenge: true,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                INVALID_REQUEST,
                code,
                error.to_string(),
            )
        }
    }

    pub fn from_chat(error: &ChatError) -> Self {
        match error {
            ChatError::InvalidBody { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "invalid_json",
                error.to_string(),
            ),
            ChatError::InvalidField { param, .. } => Self {
                param: param.clone(),
                ..Self::new(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    "invalid_value",
                    error.to_string(),
                )
            },
            ChatError::ModelNotFound { .. } => Self::new(
                StatusCode::NOT_FOUND,
                INVALID_REQUEST,
                "model_not_found",
                error.to_string(),
            ),
            // The model exists: what the client asked of it is the problem,
            // and no retry changes that.
            ChatError::ModelNotSupported { .. } => Self {
                param: Some("model".to_owned()),
                ..Self::new(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    "model_not_supported",
                    error.to_string(),
                )
            },
            ChatError::Refused { refusal } => Self::from_refusal(refusal),
            ChatError::Upstream { source } => Self::from_provider(source),
            ChatError::AllFailed { last, .. } => Self {
                retry_after: retry_after_of(last),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVER_ERROR,
                    "all_providers_failed",
                    format!("All providers failed: {last}"),
                )
            },
            // Nothing was tried: every provider key is resting. When they all
            // rest after an upstream 429 the client is told it is rate
            // limited; otherwise the upstreams are unavailable.
            ChatError::Unavailable {
                retry_after,
                rate_limited,
            } => {
                let (status, error_type, code) = if *rate_limited {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        RATE_LIMIT,
                        "rate_limit_exceeded",
                    )
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        SERVER_ERROR,
                        "upstream_unavailable",
                    )
                };
                Self {
                    retry_after: Some(*retry_after),
                    ..Self::new(status, error_type, code, error.to_string())
                }
            }
            ChatError::LimitsUnavailable { retry_after } => Self {
                retry_after: Some(*retry_after),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SERVER_ERROR,
                    "limits_unavailable",
                    error.to_string(),
                )
            },
        }
    }

    /// A limit said no. Three cases a client must tell apart:
    ///
    /// - the request can never fit (it alone exceeds the whole limit): 400
    ///   `request_too_large`, since waiting will not help;
    /// - a day quota or a budget: 429 `insufficient_quota` with
    ///   `x-should-retry: false` (it clears at midnight or next month, far
    ///   beyond any client's retry loop);
    /// - a smooth second/minute/hour limit: 429 `rate_limit_exceeded`.
    ///
    /// The message names the limit as the config does (`key rpm`) and is
    /// written here rather than taken from `ChatError`'s Display so it can
    /// show budgets in dollars and the wait in the format of the headers.
    fn from_refusal(refusal: &Refusal) -> Self {
        let limit = amount(refusal.name.measure, refusal.limit);
        if refusal.never_fits {
            return Self {
                no_retry: true,
                ..Self::new(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    "request_too_large",
                    format!(
                        "This request needs more than the whole {} limit ({limit}); \
                         reduce max_tokens or the prompt.",
                        refusal.name
                    ),
                )
            };
        }
        let retry_after = retry_after_seconds(refusal.retry_after);
        let wait = go_duration(Duration::from_secs(retry_after));
        if refusal.is_quota() {
            let what = if refusal.name.measure == Measure::Cost {
                "Budget exhausted"
            } else {
                "Quota exceeded"
            };
            return Self {
                retry_after: Some(refusal.retry_after),
                no_retry: true,
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    INSUFFICIENT_QUOTA,
                    INSUFFICIENT_QUOTA,
                    format!(
                        "{what} for {} (limit: {limit}); it resets in {wait}.",
                        refusal.name
                    ),
                )
            };
        }
        Self {
            retry_after: Some(refusal.retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMIT,
                "rate_limit_exceeded",
                format!(
                    "Rate limit reached for {} (limit: {limit}, remaining: {}). \
                     Please try again in {wait}.",
                    refusal.name, refusal.remaining,
                ),
            )
        }
    }

    /// `/v1/usage` could not answer. A ledger failure is ours, not the
    /// client's: its detail (file paths, driver errors) goes to the log only.
    pub fn from_usage(error: &UsageError) -> Self {
        match error {
            // OpenAI answers permission problems with 403 and its generic
            // `invalid_request_error` type (it has no `permission_error`),
            // so clients need no new case.
            UsageError::Forbidden => Self::new(
                StatusCode::FORBIDDEN,
                INVALID_REQUEST,
                "forbidden",
                "This key may only read its own usage; ask with an admin key.".to_owned(),
            ),
            // Not a passing fault: retrying would never help.
            UsageError::NoLedger => Self::new(
                StatusCode::NOT_FOUND,
                INVALID_REQUEST,
                "ledger_disabled",
                "This router keeps no usage ledger (`limits.ledger` is false), so it has no \
                 usage to report."
                    .to_owned(),
            ),
            UsageError::Ledger(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVER_ERROR,
                "ledger_unavailable",
                "The usage ledger is unavailable; try again later.".to_owned(),
            ),
        }
    }

    /// An admin view (`/admin/*`) could not be given. Like
    /// [`ApiError::from_usage`], a ledger failure's detail goes to the log only.
    pub fn from_admin(error: &AdminError) -> Self {
        match error {
            AdminError::AdminRequired => Self::new(
                StatusCode::FORBIDDEN,
                INVALID_REQUEST,
                "admin_required",
                "This endpoint is for admin keys only (`admin: true` in `api_keys`).".to_owned(),
            ),
            AdminError::NoLedger => Self::from_usage(&UsageError::NoLedger),
            AdminError::Ledger(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVER_ERROR,
                "ledger_unavailable",
                "The usage ledger is unavailable; try again later.".to_owned(),
            ),
        }
    }

    /// A query parameter has a value the endpoint cannot use.
    pub fn invalid_param(param: &str, message: String) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "invalid_value",
                message,
            )
        }
    }

    /// A query parameter the endpoint does not know (most likely a typo,
    /// which silently ignored would answer a different question).
    pub fn unknown_param(param: &str, known: &str) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "unknown_parameter",
                format!("Unknown query parameter `{param}`; known: {known}"),
            )
        }
    }

    /// Also the shape of the error event that ends a broken stream.
    pub fn from_provider(error: &ProviderError) -> Self {
        let (status, error_type, code) = match error.kind() {
            ErrorKind::ClientError => {
                if let ProviderError::Status {
                    status, message, ..
                } = error
                {
                    // The upstream refused the client's own request: its status
                    // (400, 404, 422...) tells the client what to fix.
                    let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
                    return Self::new(
                        status,
                        INVALID_REQUEST,
                        "upstream_client_error",
                        format!("upstream rejected the request: {message}"),
                    );
                }
                (
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    "upstream_client_error",
                )
            }
            ErrorKind::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMIT,
                "rate_limit_exceeded",
            ),
            ErrorKind::ServerError | ErrorKind::InvalidResponse | ErrorKind::Truncated => {
                (StatusCode::BAD_GATEWAY, SERVER_ERROR, "upstream_error")
            }
            // Our provider key was refused: a gateway problem, not the
            // client's key (a 401 would tell the client its own key is bad).
            ErrorKind::KeyRejected => {
                (StatusCode::BAD_GATEWAY, SERVER_ERROR, "upstream_auth_error")
            }
            ErrorKind::Connect => (
                StatusCode::BAD_GATEWAY,
                SERVER_ERROR,
                "upstream_unreachable",
            ),
            ErrorKind::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                SERVER_ERROR,
                "upstream_timeout",
            ),
            // An entry declares an endpoint its provider does not serve:
            // to the client, the model does not support it.
            ErrorKind::Unsupported => (
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "model_not_supported",
            ),
        };
        Self {
            retry_after: if status == StatusCode::TOO_MANY_REQUESTS {
                retry_after_of(error)
            } else {
                None
            },
            ..Self::new(status, error_type, code, error.to_string())
        }
    }

    /// An admin endpoint asked with a key that is not an admin key.
    pub fn admin_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            INVALID_REQUEST,
            "admin_required",
            "This endpoint is for admin keys only (`admin: true` in `api_keys`).".to_owned(),
        )
    }

    /// A reloaded config with problems: each one, as `check-config` says
    /// it (file, line, field path; never a value).
    pub fn invalid_config(errors: &router_core::config::ConfigErrors) -> Self {
        let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "invalid_config",
            format!(
                "The config was not reloaded; the running one stays. {} problem{}: {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                problems.join("; ")
            ),
        )
    }

    pub fn unknown_url(method: &Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            "unknown_url",
            format!("Unknown request URL: {method} {path}"),
        )
    }

    pub fn method_not_allowed(method: &Method, path: &str, allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                INVALID_REQUEST,
                "method_not_allowed",
                format!("Method {method} is not allowed on {path}; allowed: {allow}"),
            )
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            "model_not_found",
            format!("Model {model} not found or not available."),
        )
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            "request_too_large",
            format!("Request body is larger than the limit of {limit} bytes"),
        )
    }

    /// The body could not be read (the client went away mid-body, or sent
    /// broken chunked framing).
    pub fn unreadable_body(detail: &dyn fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "invalid_body",
            format!("Could not read the request body: {detail}"),
        )
    }

    /// A POST body declared as something other than JSON. A missing
    /// `Content-Type` is not this: many clients omit it.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_REQUEST,
            "unsupported_media_type",
            format!(
                "Unsupported Content-Type `{content_type}`; the request body must be \
                 application/json"
            ),
        )
    }

    /// The server cut the request off at the end of its shutdown timeout: as
    /// the last event of a stream, or as a 503 to a request still waiting for
    /// its upstream. Retrying (against another instance) is the right move.
    pub fn server_shutdown() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            "server_shutdown",
            "the server is shutting down".to_owned(),
        )
    }

    /// A chunk or report the engine handed us could not be encoded: our
    /// bug, not the client's or the upstream's.
    pub(crate) fn encoding_failed(detail: &dyn fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            SERVER_ERROR,
            "internal_error",
            format!("could not encode the response: {detail}"),
        )
    }

    /// `{"error":{...}}` as bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.message.len());
        self.write_json(&mut out);
        out
    }

    /// The SSE event that reports this error inside a stream.
    pub fn to_sse_event(&self) -> Bytes {
        let mut out = Vec::with_capacity(104 + self.message.len());
        out.extend_from_slice(b"data: ");
        self.write_json(&mut out);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        let envelope = Envelope {
            error: Fields {
                message: &self.message,
                error_type: self.error_type,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        // Serializing strings and options into a Vec cannot fail; should it
        // ever, the client still gets the status and headers.
        if let Err(error) = serde_json::to_writer(&mut *out, &envelope) {
            tracing::error!(%error, "could not serialize an error body");
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::full(Bytes::from(self.to_json())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, APPLICATION_JSON);
        if self.challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(after) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds(after)));
        }
        if self.no_retry {
            headers.insert(X_SHOULD_RETRY, HeaderValue::from_static("false"));
        }
        response
    }
}

fn retry_after_of(error: &ProviderError) -> Option<Duration> {
    match error {
        ProviderError::Status { retry_after, .. } => *retry_after,
        _ => None,
    }
}

/// A limit's figure with its unit: budgets are kept in micro-USD and shown
/// in dollars (cents when whole, else as many digits as it takes).
fn amount(measure: Measure, value: u64) -> String {
    match measure {
        Measure::Requests => format!("{value} requests"),
        Measure::Tokens => format!("{value} tokens"),
        Measure::Cost => {
            let dollars = value / 1_000_000;
            let micros = value % 1_000_000;
            if micros % 10_000 == 0 {
                format!("${dollars}.{:02}", micros / 10_000)
            } else {
                let digits = format!("{micros:06}");
                format!("${dollars}.{}", digits.trim_end_matches('0'))
            }
        }
    }
}

/// `Retry-After` is whole seconds; round up and never say 0, which clients
/// read as "retry immediately".
fn retry_after_seconds(after: Duration) -> u64 {
    let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use router_core::limits::{LimitName, Scope, Window};
    use router_core::provider::Endpoint;
    use serde_json::{json, Value};

    fn check(error: ApiError, status: u16, body: Value, headers: &[(&str, &str)]) {
        let json: Value = serde_json::from_slice(&error.to_json()).unwrap();
        assert_eq!(json, body, "body of {error:?}");
        let response = error.into_response();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        for (name, value) in headers {
            assert_eq!(
                response.headers().get(*name).map(|v| v.to_str().unwrap()),
                Some(*value),
                "header {name}"
            );
        }
        for name in [
            WWW_AUTHENTICATE.as_str(),
            ALLOW.as_str(),
            RETRY_AFTER.as_str(),
            X_SHOULD_RETRY,
        ] {
            if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                assert!(response.headers().get(name).is_none(), "unexpected {name}");
            }
        }
    }

    fn body(message: &str, error_type: &str, param: Value, code: &str) -> Value {
        json!({"error": {"message": message, "type": error_type, "param": param, "code": code}})
    }

    fn status(status: u16, message: &str, retry_after: Option<Duration>) -> ProviderError {
        ProviderError::Status {
            status,
            message: message.into(),
            retry_after,
        }
    }

    #[test]
    fn auth_errors_are_401_with_a_bearer_challenge() {
        let challenge = [("www-authenticate", "Bearer")];
        check(
            ApiError::from_auth(AuthError::Missing),
            401,
            body(
                "Missing API key",
                INVALID_REQUEST,
                Value::Null,
                "missing_api_key",
            ),
            &challenge,
        );
        check(
            ApiError::from_auth(AuthError::Invalid),
            401,
            body(
                "Invalid API key",
                INVALID_REQUEST,
                Value::Null,
                "invalid_api_key",
            ),
            &challenge,
        );
        check(
            ApiError::from_auth(AuthError::Expired),
            401,
            body(
                "API key has expired",
                INVALID_REQUEST,
                Value::Null,
                "expired_api_key",
            ),
            &challenge,
        );
    }

    #[test]
    fn request_errors_are_4xx() {
        check(
            ApiError::from_chat(&ChatError::InvalidBody {
                detail: "expected value at line 1 column 1".into(),
            }),
            400,
            body(
                "Invalid request body: expected value at line 1 column 1",
                INVALID_REQUEST,
                Value::Null,
                "invalid_json",
            ),
            &[],
        );
        check(
            ApiError::from_chat(&ChatError::InvalidField {
                message: "Field `model` must be a string".into(),
                param: Some("model".into()),
            }),
            400,
            body(
                "Invalid request: Field `model` must be a string",
                INVALID_REQUEST,
                json!("model"),
                "invalid_value",
            ),
            &[],
        );
        check(
            ApiError::from_chat(&ChatError::InvalidField {
                message: "model is required".into(),
                param: None,
            }),
            400,
            body(
                "Invalid request: model is required",
                INVALID_REQUEST,
                Value::Null,
                "invalid_value",
            ),
            &[],
        );
        check(
            ApiError::from_chat(&ChatError::ModelNotFound {
                model: "gpt-9".into(),
            }),
            404,
            body(
                "Model gpt-9 not found or not available.",
                INVALID_REQUEST,
                Value::Null,
                "model_not_found",
            ),
            &[],
        );
        check(
            ApiError::from_chat(&ChatError::ModelNotSupported {
                model: "gpt-4o".into(),
                endpoint: Endpoint::Embeddings,
            }),
            400,
            body(
                "Model gpt-4o does not support /v1/embeddings.",
                INVALID_REQUEST,
                json!("model"),
                "model_not_supported",
            ),
            &[],
        );
        check(
            ApiError::model_not_found("nope"),
            404,
            body(
                "Model nope not found or not available.",
                INVALID_REQUEST,
                Value::Null,
                "model_not_found",
            ),
            &[],
        );
        check(
            ApiError::body_too_large(1024),
            413,
            body(
                "Request body is larger than the limit of 1024 bytes",
                INVALID_REQUEST,
                Value::Null,
                "request_too_large",
            ),
            &[],
        );
        check(
            ApiError::unknown_url(&Method::GET, "/foo"),
            404,
            body(
                "Unknown request URL: GET /foo",
                INVALID_REQUEST,
                Value::Null,
                "unknown_url",
            ),
            &[],
        );
        check(
            ApiError::method_not_allowed(&Method::DELETE, "/health", "GET, HEAD, OPTIONS"),
            405,
            body(
                "Method DELETE is not allowed on /health; allowed: GET, HEAD, OPTIONS",
                INVALID_REQUEST,
                Value::Null,
                "method_not_allowed",
            ),
            &[("allow", "GET, HEAD, OPTIONS")],
        );
    }

    #[test]
    fn upstream_errors_map_by_kind() {
        let upstream = |source| ApiError::from_chat(&ChatError::Upstream { source });
        for code in [401, 403] {
            check(
                upstream(status(code, "key revoked", None)),
                502,
                body(
                    &format!("the upstream answered {code}: key revoked"),
                    SERVER_ERROR,
                    Value::Null,
                    "upstream_auth_error",
                ),
                &[],
            );
        }
        for code in [400, 404, 422] {
            check(
                upstream(status(code, "bad tools", None)),
                code,
                body(
                    "upstream rejected the request: bad tools",
                    INVALID_REQUEST,
                    Value::Null,
                    "upstream_client_error",
                ),
                &[],
            );
        }
        check(
            upstream(status(429, "slow down", Some(Duration::from_millis(1500)))),
            429,
            body(
                "the upstream answered 429: slow down",
                RATE_LIMIT,
                Value::Null,
                "rate_limit_exceeded",
            ),
            &[("retry-after", "2")],
        );
        check(
            upstream(status(429, "slow down", Some(Duration::ZERO))),
            429,
            body(
                "the upstream answered 429: slow down",
                RATE_LIMIT,
                Value::Null,
                "rate_limit_exceeded",
            ),
            &[("retry-after", "1")],
        );
        check(
            upstream(status(429, "slow down", None)),
            429,
            body(
                "the upstream answered 429: slow down",
                RATE_LIMIT,
                Value::Null,
                "rate_limit_exceeded",
            ),
            &[],
        );
        check(
            upstream(status(500, "boom", Some(Duration::from_secs(3)))),
            502,
            body(
                "the upstream answered 500: boom",
                SERVER_ERROR,
                Value::Null,
                "upstream_error",
            ),
            &[],
        );
        check(
            upstream(ProviderError::InvalidResponse {
                detail: "no choices".into(),
            }),
            502,
            body(
                "the upstream sent an invalid response: no choices",
                SERVER_ERROR,
                Value::Null,
                "upstream_error",
            ),
            &[],
        );
        check(
            upstream(ProviderError::Truncated {
                detail: "eof".into(),
            }),
            502,
            body(
                "the upstream stream ended early: eof",
                SERVER_ERROR,
                Value::Null,
                "upstream_error",
            ),
            &[],
        );
        check(
            upstream(ProviderError::Connect {
                detail: "connection refused".into(),
            }),
            502,
            body(
                "could not connect to the upstream: connection refused",
                SERVER_ERROR,
                Value::Null,
                "upstream_unreachable",
            ),
            &[],
        );
        check(
            upstream(ProviderError::Unsupported {
                endpoint: Endpoint::Completions,
            }),
            400,
            body(
                "this provider does not serve /v1/completions",
                INVALID_REQUEST,
                Value::Null,
                "model_not_supported",
            ),
            &[],
        );
        check(
            upstream(ProviderError::Timeout {
                after: Duration::from_secs(30),
            }),
            504,
            body(
                "the upstream did not answer within 30s",
                SERVER_ERROR,
                Value::Null,
                "upstream_timeout",
            ),
            &[],
        );
    }

    #[test]
    fn all_failed_is_503_and_keeps_the_last_retry_after() {
        check(
            ApiError::from_chat(&ChatError::AllFailed {
                attempts: 3,
                last: status(429, "quota", Some(Duration::from_secs(20))),
            }),
            503,
            body(
                "All providers failed: the upstream answered 429: quota",
                SERVER_ERROR,
                Value::Null,
                "all_providers_failed",
            ),
            &[("retry-after", "20")],
        );
        check(
            ApiError::from_chat(&ChatError::AllFailed {
                attempts: 2,
                last: ProviderError::Connect {
                    detail: "refused".into(),
                },
            }),
            503,
            body(
                "All providers failed: could not connect to the upstream: refused",
                SERVER_ERROR,
                Value::Null,
                "all_providers_failed",
            ),
            &[],
        );
    }

    #[test]
    fn unavailable_is_429_when_rate_limited_else_503_with_the_earliest_recovery() {
        check(
            ApiError::from_chat(&ChatError::Unavailable {
                retry_after: Duration::from_millis(2_500),
                rate_limited: true,
            }),
            429,
            body(
                "Every upstream provider key is rate limited; retry after 3 s",
                RATE_LIMIT,
                Value::Null,
                "rate_limit_exceeded",
            ),
            &[("retry-after", "3")],
        );
        check(
            ApiError::from_chat(&ChatError::Unavailable {
                retry_after: Duration::ZERO,
                rate_limited: false,
            }),
            503,
            body(
                "No upstream provider is available right now; retry after 1 s",
                SERVER_ERROR,
                Value::Null,
                "upstream_unavailable",
            ),
            &[("retry-after", "1")],
        );
    }

    #[test]
    fn limits_unavailable_is_503_with_retry_after() {
        check(
            ApiError::from_chat(&ChatError::LimitsUnavailable {
                retry_after: Duration::from_millis(1_200),
            }),
            503,
            body(
                "The router cannot check its rate limits right now; retry after 2 s",
                SERVER_ERROR,
                Value::Null,
                "limits_unavailable",
            ),
            &[("retry-after", "2")],
        );
    }

    fn refused(
        measure: Measure,
        window: Window,
        limit: u64,
        retry_after: Duration,
        never_fits: bool,
    ) -> ApiError {
        ApiError::from_chat(&ChatError::Refused {
            refusal: Refusal {
                name: LimitName {
                    scope: Scope::Key,
                    measure,
                    window,
                },
                limit,
                remaining: 0,
                retry_after,
                never_fits,
            },
        })
    }

    #[test]
    fn refusals_say_which_limit_and_whether_to_retry() {
        check(
            refused(
                Measure::Requests,
                Window::Minute,
                60,
                Duration::from_millis(1200),
                false,
            ),
            429,
            body(
                "Rate limit reached for key rpm (limit: 60 requests, remaining: 0). \
                 Please try again in 2s.",
                RATE_LIMIT,
                Value::Null,
                "rate_limit_exceeded",
            ),
            &[("retry-after", "2")],
        );
        check(
            refused(
                Measure::Tokens,
                Window::Second,
                100,
                Duration::from_millis(10),
                false,
            ),
            429,
            body(
                "Rate limit reached for key tps (limit: 100 tokens, remaining: 0). \
                 Please try again in 1s.",
                RATE_LIMIT,
                Value::Null,
                "rate_limit_exceeded",
            ),
            &[("retry-after", "1")],
        );
        check(
            refused(
                Measure::Requests,
                Window::Day,
                1000,
                Duration::from_secs(5 * 3600 + 3 * 60),
                false,
            ),
            429,
            body(
                "Quota exceeded for key rpd (limit: 1000 requests); it resets in 5h3m0s.",
                INSUFFICIENT_QUOTA,
                Value::Null,
                "insufficient_quota",
            ),
            &[("retry-after", "18180"), ("x-should-retry", "false")],
        );
        check(
            refused(
                Measure::Cost,
                Window::Month,
                5_000_000,
                Duration::from_secs(3600),
                false,
            ),
            429,
            body(
                "Budget exhausted for key budget per month (limit: $5.00); it resets in 1h0m0s.",
                INSUFFICIENT_QUOTA,
                Value::Null,
                "insufficient_quota",
            ),
            &[("retry-after", "3600"), ("x-should-retry", "false")],
        );
        check(
            refused(
                Measure::Tokens,
                Window::Minute,
                1000,
                Duration::from_secs(60),
                true,
            ),
            400,
            body(
                "This request needs more than the whole key tpm limit (1000 tokens); \
                 reduce max_tokens or the prompt.",
                INVALID_REQUEST,
                Value::Null,
                "request_too_large",
            ),
            &[("x-should-retry", "false")],
        );
    }

    #[test]
    fn budgets_are_shown_in_dollars() {
        fn check(micros: u64, expected: &str) {
            assert_eq!(amount(Measure::Cost, micros), expected, "{micros}");
        }
        check(0, "$0.00");
        check(5_000_000, "$5.00");
        check(12_340_000, "$12.34");
        check(1_500, "$0.0015");
        check(2_000_001, "$2.000001");
    }

    #[test]
    fn usage_errors_and_bad_params() {
        check(
            ApiError::from_usage(&UsageError::Forbidden),
            403,
            body(
                "This key may only read its own usage; ask with an admin key.",
                INVALID_REQUEST,
                Value::Null,
                "forbidden",
            ),
            &[],
        );
        check(
            ApiError::from_usage(&UsageError::NoLedger),
            404,
            body(
                "This router keeps no usage ledger (`limits.ledger` is false), so it has no \
                 usage to report.",
                INVALID_REQUEST,
                Value::Null,
                "ledger_disabled",
            ),
            &[],
        );
        let ledger = ApiError::from_usage(&UsageError::Ledger(router_core::usage::LedgerError {
            detail: "database is locked at /var/lib/router/usage.db".into(),
        }));
        assert!(!ledger.message().contains("/var/lib"));
        check(
            ledger,
            503,
            body(
                "The usage ledger is unavailable; try again later.",
                SERVER_ERROR,
                Value::Null,
                "ledger_unavailable",
            ),
            &[],
        );
        check(
            ApiError::invalid_param("since", "bad date".into()),
            400,
            body("bad date", INVALID_REQUEST, json!("since"), "invalid_value"),
            &[],
        );
        check(
            ApiError::unknown_param("group", "model, group_by"),
            400,
            body(
                "Unknown query parameter `group`; known: model, group_by",
                INVALID_REQUEST,
                json!("group"),
                "unknown_parameter",
            ),
            &[],
        );
    }

    #[test]
    fn admin_errors() {
        check(
            ApiError::from_admin(&AdminError::AdminRequired),
            403,
            body(
                "This endpoint is for admin keys only (`admin: true` in `api_keys`).",
                INVALID_REQUEST,
                Value::Null,
                "admin_required",
            ),
            &[],
        );
        assert_eq!(
            ApiError::from_admin(&AdminError::NoLedger),
            ApiError::from_usage(&UsageError::NoLedger)
        );
        let ledger = ApiError::from_admin(&AdminError::Ledger(router_core::usage::LedgerError {
            detail: "connection refused by 10.0.0.5".into(),
        }));
        assert_eq!(ledger.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!ledger.message().contains("10.0.0.5"));
    }

    #[test]
    fn media_type_and_shutdown_errors() {
        check(
            ApiError::unsupported_media_type("text/plain"),
            415,
            body(
                "Unsupported Content-Type `text/plain`; the request body must be application/json",
                INVALID_REQUEST,
                Value::Null,
                "unsupported_media_type",
            ),
            &[],
        );
        check(
            ApiError::server_shutdown(),
            503,
            body(
                "the server is shutting down",
                SERVER_ERROR,
                Value::Null,
                "server_shutdown",
            ),
            &[],
        );
        assert_eq!(
            ApiError::server_shutdown().to_sse_event(),
            Bytes::from_static(
                b"data: {\"error\":{\"message\":\"the server is shutting down\",\
                  \"type\":\"server_error\",\"param\":null,\"code\":\"server_shutdown\"}}\n\n"
            )
        );
    }

    #[test]
    fn sse_event_is_one_data_line() {
        let event = ApiError::from_provider(&ProviderError::Truncated {
            detail: "eof".into(),
        })
        .to_sse_event();
        let text = std::str::from_utf8(&event).unwrap();
        assert!(text.starts_with("data: {\"error\":{"));
        assert!(text.ends_with("}}\n\n"));
        assert_eq!(text.matches('\n').count(), 2);
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(60)), 60);
    }
}
