//! router-http: the thin HTTP layer in front of [`router_core::Router`].
//!
//! It owns HTTP and nothing else: accepting connections (HTTP/1.1 keep-alive
//! and h2c with prior knowledge), graceful shutdown (`/health` turns 503
//! while draining; streams still open at the timeout end with a
//! `server_shutdown` event), the routes, extracting the `Authorization`
//! header, refusing non-JSON bodies and capping their size, writing JSON and
//! SSE responses, and CORS. It is the one place where errors become HTTP statuses
//! and OpenAI-shaped error bodies (`{"error":{"message","type","param","code"}}`).
//! It gives every request its `x-request-id` (the client's when sane, else
//! the engine's) and its one log line, written when the request has ended.
//!
//! It also serves `GET /metrics` from a [`Metrics`] the server creates and
//! shares with the engine (as a usage sink) and with [`serve`] (through
//! [`HttpConfig::with_metrics`]), the operator's read-only JSON views on
//! `/admin/*` (admin keys only; the engine builds them) and the dashboard on
//! `/ui`, whose page, script and style are compiled into the binary.
//!
//! It deliberately does not own providers, limiter implementations, routing
//! decisions or request validation: those live in `router-core` (the engine
//! and its ports) and in the crates that implement them. This crate depends on
//! `router-core` alone, never on `router-providers` or `router-limits`.

use std::sync::Arc;
use std::time::Duration;

mod admin;
mod body;
mod error;
mod handler;
mod metrics;
mod query;
mod ratelimit;
mod request_log;
mod server;
mod shutdown;

pub use body::ResponseBody;
pub use error::ApiError;
pub use handler::Handler;
pub use metrics::Metrics;
pub use server::{serve, ServeOutcome};

/// What the HTTP layer needs to know, taken from the server config, and the
/// metrics it reports to.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted; larger ones get a 413.
    pub max_body_bytes: usize,
    /// Interval of the `: keepalive` SSE comment while an upstream is silent,
    /// so proxies and clients with idle timeouts keep the stream open.
    pub sse_keepalive: Duration,
    /// How long a client may take to send a request's headers (and, on a new
    /// connection, its first byte): bounds slowloris-style connection hoarding.
    /// It also closes HTTP/1.1 keep-alive connections idle for that long.
    pub header_read_timeout: Duration,
    /// Served on `GET /metrics` and fed with HTTP-level figures (responses
    /// by route and status, requests in flight). `None` (what
    /// [`HttpConfig::from_server_config`] gives; the server keeps it so with
    /// `server.metrics: false`): `/metrics` is an unknown path (404
    /// `unknown_url`) and no per-request metrics work is done. The engine's
    /// usage records reach the same `Metrics` through its usage sink, which
    /// the server wires.
    pub metrics: Option<Arc<Metrics>>,
    /// Answers `POST /admin/reload` for admin keys; `None`: the route does
    /// not exist (404 `unknown_url`).
    pub reload: Option<Arc<dyn router_core::live::Reload>>,
}

impl HttpConfig {
    /// Used when the config file has no say (it has no field for it yet).
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

    pub fn from_server_config(server: &router_core::config::ServerConfig) -> Self {
        Self {
            max_body_bytes: server.max_body_bytes,
            sse_keepalive: server.sse_keepalive,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            metrics: None,
            reload: None,
        }
    }

    /// The same config, serving and feeding `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics: Some(metrics),
            ..self
        }
    }

    /// Serves `POST /admin/reload` (admin keys only) with `reload`.
    pub fn with_reload(self, reload: Arc<dyn router_core::live::Reload>) -> Self {
        Self {
            reload: Some(reload),
            ..self
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self::from_server_config(&router_core::config::ServerConfig::default())
    }
}
