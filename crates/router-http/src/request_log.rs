//! The one log line of each request.
//!
//! Every request, whatever becomes of it (answered, refused at the edge,
//! refused by a limit, failed upstream, a stream that ends, breaks or is
//! abandoned, a client gone before the answer), leaves exactly one line at
//! info, written when the request has really ended: when the response body
//! has sent its last frame or was dropped, *and* the engine's books are
//! closed. Both hold the line (the books as their
//! [`RequestObserver`]); the last one to let go writes it.
//!
//! The line carries ids, names, counts and times, never a key and never
//! prompt or answer text. Values a client controls (the path, the model
//! name, messages quoting them) are cut by [`bounded`] and recorded as plain
//! string fields, which both formatters escape.
//!
//! When the line's level is off nothing is allocated or formatted: the
//! request gets an empty [`RequestLog`].

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Method, StatusCode};
use router_core::escape::bounded;
use router_core::limits::LimitName;
use router_core::usage::{Outcome, RequestEnd, RequestObserver, Tokens};
use router_core::{ledger_key_id, ClientKey};

/// The most characters of a client's `x-request-id` taken as the request's id.
const MAX_CLIENT_REQUEST_ID: usize = 128;

/// Whether a client's `x-request-id` may be the request's id (and so a
/// ledger row's and a log line's): 1 to 128 visible ASCII characters, no
/// space, no control character.
pub(crate) fn is_sane_request_id(id: &[u8]) -> bool {
    (1..=MAX_CLIENT_REQUEST_ID).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

/// A request's line while the request lasts; empty when the line's level
/// is off. Cheap to clone (one `Arc`).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestLog(Option<Arc<Line>>);

impl RequestLog {
    /// Starts the line of a request, or an empty one when nobody would
    /// read it. `path` is only called in the first case.
    pub(crate) fn start(
        method: &Method,
        path: impl FnOnce() -> Cow<'static, str>,
        request_id: &HeaderValue,
    ) -> Self {
        if !tracing::enabled!(tracing::Level::INFO) {
            return Self(None);
        }
        Self(Some(Arc::new(Line {
            started: Instant::now(),
            method: method.clone(),
            path: path(),
            request_id: request_id.clone(),
            status: AtomicU16::new(0),
            client: OnceLock::new(),
            error: OnceLock::new(),
            engine: OnceLock::new(),
        })))
    }

    /// The status the response went out with.
    pub(crate) fn status(&self, status: StatusCode) {
        if let Some(line) = &self.0 {
            line.status.store(status.as_u16(), Ordering::Relaxed);
        }
    }

    /// The client key the request was authenticated with.
    pub(crate) fn client(&self, client: &ClientKey) {
        if let Some(line) = &self.0 {
            let _ = line.client.set(Arc::clone(client));
        }
    }

    /// Why the edge refused or ended the request (the first reason given).
    /// Not needed for the engine's errors: its books carry them.
    pub(crate) fn error(&self, cause: &dyn fmt::Display) {
        if let Some(line) = &self.0 {
            if line.error.get().is_none() {
                let _ = line.error.set(cause.to_string());
            }
        }
    }

    /// The engine's part: its books fill the line in when they close.
    pub(crate) fn observer(&self) -> Option<Arc<dyn RequestObserver>> {
        self.0
            .as_ref()
            .map(|line| Arc::clone(line) as Arc<dyn RequestObserver>)
    }
}

/// What the line says, gathered while the request runs; written when the
/// last holder drops it.
struct Line {
    /// When the router had the request's head.
    started: Instant,
    method: Method,
    /// The route's own path, or the path as the client sent it (a model id,
    /// an unknown path): then it is the client's text.
    path: Cow<'static, str>,
    request_id: HeaderValue,
    /// 0 until a response is built: a client gone before that has none.
    status: AtomicU16,
    client: OnceLock<ClientKey>,
    error: OnceLock<String>,
    engine: OnceLock<Engine>,
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Line")
            .field("method", &self.method)
            .field("request_id", &self.request_id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The engine's part of the line: the usage record's fields (all but the
/// ones the edge has already) and what the books knew beyond it.
struct Engine {
    key_id: u64,
    /// As the client asked for it (bounded by the engine).
    model: String,
    entry: Option<usize>,
    provider_key: Option<usize>,
    attempts: u32,
    stream: bool,
    tokens: Tokens,
    cost_usd: f64,
    upstream_latency: Option<Duration>,
    time_to_first_chunk: Option<Duration>,
    router_overhead: Option<Duration>,
    outcome: Outcome,
    refused_by: Option<LimitName>,
    /// Scrubbed upstream messages, or the engine's own (which may quote the client).
    error: Option<String>,
}

impl RequestObserver for Line {
    fn ended(&self, end: &RequestEnd<'_>) {
        let record = end.record;
        let _ = self.engine.set(Engine {
            key_id: record.key_id,
            model: record.model.clone(),
            entry: record.entry_index,
            provider_key: record.provider_key_index,
            attempts: end.attempts,
            stream: record.stream,
            tokens: record.tokens,
            cost_usd: record.cost_usd,
            upstream_latency: record.upstream_latency,
            time_to_first_chunk: end.time_to_first_chunk,
            router_overhead: record.router_overhead(end.time_to_first_chunk),
            outcome: record.outcome,
            refused_by: record.refused_by,
            error: record.error.clone(),
        });
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let latency = self.started.elapsed();
        let status = match *self.status.get_mut() {
            0 => None,
            status => Some(status),
        };
        let engine = self.engine.get();
        let client = self.client.get();
        let key_id = engine
            .map(|engine| engine.key_id)
            .or_else(|| client.map(|client| ledger_key_id(client)));
        let outcome = match engine {
            Some(engine) => engine.outcome.as_str(),
            None => edge_outcome(status),
        };
        // The edge's reason first: it ended the request (a shutdown cut-off,
        // an encoding failure) whatever the books say.
        let error = self
            .error
            .get()
            .map(String::as_str)
            .or_else(|| engine.and_then(|engine| engine.error.as_deref()));
        let limit = engine
            .and_then(|engine| engine.refused_by)
            .map(tracing::field::display);
        tracing::info!(
            request_id = self.request_id.to_str().unwrap_or_default(),
            method = self.method.as_str(),
            path = bounded(&self.path),
            status,
            key_id,
            key_name = client.map(|client| client.name.as_str()),
            model = engine.map(|engine| bounded(&engine.model)),
            entry = engine.and_then(|engine| engine.entry),
            provider_key = engine.and_then(|engine| engine.provider_key),
            attempts = engine.map(|engine| engine.attempts),
            stream = engine.map(|engine| engine.stream),
            prompt_tokens = engine.map(|engine| engine.tokens.prompt),
            completion_tokens = engine.map(|engine| engine.tokens.completion),
            cost_usd = engine.map(|engine| engine.cost_usd),
            latency_ms = millis(latency),
            upstream_ms = engine
                .and_then(|engine| engine.upstream_latency)
                .map(millis),
            first_chunk_ms = engine
                .and_then(|engine| engine.time_to_first_chunk)
                .map(millis),
            overhead_ms = engine.and_then(|engine| engine.router_overhead).map(millis),
            outcome,
            limit,
            error = error.map(bounded),
            "request"
        );
    }
}

/// How a request the engine never saw ended, in the ledger's words where
/// they fit.
fn edge_outcome(status: Option<u16>) -> &'static str {
    match status {
        None => Outcome::ClientGone.as_str(),
        Some(status) if status < 400 => Outcome::Ok.as_str(),
        Some(401) => "unauthorized",
        Some(status) if status < 500 => Outcome::Invalid.as_str(),
        Some(_) => "failed",
    }
}

/// Milliseconds with microsecond precision.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_request_ids() {
        fn check(id: &[u8], expected: bool) {
            assert_eq!(
                is_sane_request_id(id),
                expected,
                "{}",
                String::from_utf8_lossy(id)
            );
        }
        check(b"abc-123", true);
        check(b"req_0123456789abcdef-42", true);
        check(b"~!@#$%^&*()_+{}|:<>?", true);
        check(&[b'a'; 128], true);
        check(&[b'a'; 129], false);
        check(b"", false);
        check(b"with space", false);
        check(b"tab\there", false);
        check(b"new\nline", false);
        check(b"\x7f", false);
        check("ünï".as_bytes(), false);
    }

    #[test]
    fn outcomes_at_the_edge() {
        fn check(status: Option<u16>, expected: &str) {
            assert_eq!(edge_outcome(status), expected, "{status:?}");
        }
        check(None, "client_gone");
        check(Some(200), "ok");
        check(Some(204), "ok");
        check(Some(401), "unauthorized");
        check(Some(404), "invalid");
        check(Some(413), "invalid");
        check(Some(503), "failed");
    }

    #[test]
    fn milliseconds_keep_microseconds() {
        assert_eq!(millis(Duration::from_micros(1_234_567)), 1234.567);
        assert_eq!(millis(Duration::ZERO), 0.0);
    }
}
