//! The one pooled HTTP client that every HTTP adapter instance shares, and the
//! helpers they all need to turn its results into [`ProviderError`]s.
//!
//! One client for the whole process, so connections (and their TLS sessions
//! and HTTP/2 multiplexing) are reused across entries that point at the same
//! host. TLS is rustls with the `ring` provider and the webpki root store:
//! no OpenSSL, no aws-lc, no dependency on the host's certificate store.
//! ALPN offers `h2` and `http/1.1`, so HTTP/2 is used wherever the upstream
//! offers it. Plain `http://` is allowed too, for a local Ollama or vLLM and
//! for the tests' loopback upstreams.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use router_core::config::ServerConfig;
use router_core::ProviderError;

/// How long an idle pooled connection is kept. Most providers close idle
/// connections after a minute or two; a stale one costs a retry, not an error,
/// because hyper retries requests that were never written.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TCP keep-alive probes, so a silently dead upstream (a NAT that forgot us)
/// is noticed during a long stream. The seed used 30 s.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// The settings of one [`HttpClient`], taken from `server:`. The other
/// upstream timeouts (first byte, idle, total) belong to each model entry
/// and are enforced by its adapter; only the connect timeout has to live in
/// the client, because connections are made by the pool, not by a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// The largest SSE event accepted from an upstream.
    pub max_sse_event_bytes: usize,
}

impl From<&ServerConfig> for UpstreamSettings {
    fn from(config: &ServerConfig) -> Self {
        Self {
            connect_timeout: config.connect_timeout,
            max_sse_event_bytes: config.max_sse_event_bytes,
        }
    }
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not configure tls")]
    Tls {
        #[source]
        source: rustls::Error,
    },
}

/// The shared, pooled HTTP(S) client. Cloning is cheap and clones share the
/// pool: build it once at startup and hand clones to the factories.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<TimeoutConnector, Full<Bytes>>,
    settings: UpstreamSettings,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds the client from the `server:` section. It opens no connection
    /// and needs no runtime yet; requests need a Tokio runtime.
    pub fn new(config: &ServerConfig) -> Result<Self, ClientError> {
        Self::with_settings(UpstreamSettings::from(config))
    }

    pub fn with_settings(settings: UpstreamSettings) -> Result<Self, ClientError> {
        let mut tcp = HttpConnector::new();
        // The HTTPS connector wraps this one and decides the scheme itself.
        tcp.enforce_http(false);
        // Small SSE events must leave as soon as they are written.
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        // Bounds each TCP attempt (split across the addresses DNS returned);
        // the wrapper below bounds TCP and TLS together.
        tcp.set_connect_timeout(Some(settings.connect_timeout));

        // An explicit provider rather than the process default: nothing else
        // has to install one, and no other crypto backend can sneak in.
        let provider = rustls::crypto::ring::default_provider();
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|source| ClientError::Tls { source })?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);
        let connector = TimeoutConnector {
            inner: https,
            timeout: settings.connect_timeout,
        };

        let inner = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Self { inner, settings })
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// A client whose connections are bounded by `connect_timeout`: this one
    /// (a cheap clone sharing the pool) when it already is, else a new client
    /// with its own pool and the same other settings.
    ///
    /// A separate client rather than a per-request timeout: hyper-util's
    /// pool makes connections on its own behalf (its connector sees only the
    /// URI, and a connect it started may end up serving another request), so
    /// a connect timeout can only belong to the pool that connects. Build one
    /// per distinct timeout, not per entry, so entries that agree share
    /// connections; [`crate::OpenAiFactory`] does.
    pub fn with_connect_timeout(&self, connect_timeout: Duration) -> Result<Self, ClientError> {
        if connect_timeout == self.settings.connect_timeout {
            return Ok(self.clone());
        }
        Self::with_settings(UpstreamSettings {
            connect_timeout,
            ..self.settings
        })
    }

    /// Sends a request. The future resolves when the response head arrived;
    /// the caller bounds it in time.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ProviderError> {
        self.inner.request(request).await.map_err(transport_error)
    }
}

/// Bounds connection set-up (TCP and TLS) by `connect_timeout`. hyper-util's
/// own timeout only covers TCP, and a TLS handshake that stalls would
/// otherwise hold the attempt until the much longer request timeout.
#[derive(Clone)]
struct TimeoutConnector {
    inner: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

type BoxError = Box<dyn StdError + Send + Sync>;
type Connection = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Connection set-up took longer than `connect_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("connecting took longer than {after:?}")]
struct ConnectTimeout {
    after: Duration,
}

impl tower_service::Service<Uri> for TimeoutConnector {
    type Response = Connection;
    type Error = BoxError;
    // Boxed once per new connection, not per request.
    type Future = Pin<Box<dyn Future<Output = Result<Connection, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let after = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(after, connecting).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(ConnectTimeout { after }) as BoxError),
            }
        })
    }
}

/// Classifies a failure to get a response head. Connection set-up failures
/// are `Connect`. Anything else (the connection broke while sending, or the
/// upstream closed it without answering) also happened before any answer,
/// so it is reported as `Connect` too: the engine may try elsewhere.
fn transport_error(error: hyper_util::client::legacy::Error) -> ProviderError {
    let detail = error_chain(&error);
    if error.is_connect() {
        ProviderError::Connect { detail }
    } else {
        ProviderError::Connect {
            detail: format!("the connection failed before a response arrived: {detail}"),
        }
    }
}

/// `outer: inner: innermost`, the way `main` prints errors. hyper-util's
/// outer message (`client error (Connect)`) says little, so it is skipped
/// when there is a cause.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current = error.source();
    while let Some(cause) = current {
        parts.push(cause.to_string());
        current = cause.source();
    }
    if parts.is_empty() {
        return error.to_string();
    }
    parts.join(": ")
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// Reads a whole body, refusing more than `limit` bytes. A body that arrives
/// in one frame (the common case for small JSON answers) is not copied.
pub(crate) async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let so_far = first.as_ref().map_or(joined.len(), Bytes::len);
        if so_far + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(previous) => {
                joined.reserve(previous.len() + data.len());
                joined.extend_from_slice(&previous);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// When the upstream asks us to come back: `retry-after-ms` (OpenAI, more
/// precise) first, then `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let millis = headers
        .get("retry-after-ms")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok());
    if millis.is_some() {
        return millis;
    }
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(text).ok()?;
    // A date in the past means "now".
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[track_caller]
    fn check(pairs: &[(&'static str, &'static str)], expected: Option<Duration>) {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(retry_after(&headers(pairs), now), expected, "{pairs:?}");
    }

    #[test]
    fn retry_after_forms() {
        check(&[], None);
        check(&[("retry-after", "7")], Some(Duration::from_secs(7)));
        check(
            &[("retry-after", " 1.5 ")],
            Some(Duration::from_millis(1500)),
        );
        check(
            &[("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")],
            Some(Duration::from_secs(30)),
        );
        check(
            &[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")],
            Some(Duration::ZERO),
        );
        check(&[("retry-after", "soon")], None);
        check(&[("retry-after", "-3")], None);
        check(
            &[("retry-after-ms", "250")],
            Some(Duration::from_millis(250)),
        );
        check(
            &[("retry-after-ms", "250"), ("retry-after", "9")],
            Some(Duration::from_millis(250)),
        );
        check(
            &[("retry-after-ms", "x"), ("retry-after", "9")],
            Some(Duration::from_secs(9)),
        );
    }

    #[test]
    fn client_builds_without_a_runtime() {
        let client = HttpClient::new(&ServerConfig::default()).unwrap();
        assert_eq!(client.settings().max_sse_event_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn another_connect_timeout_keeps_the_other_settings() {
        let client = HttpClient::new(&ServerConfig::default()).unwrap();
        let same = client
            .with_connect_timeout(client.settings().connect_timeout)
            .unwrap();
        assert_eq!(same.settings(), client.settings());
        let other = client
            .with_connect_timeout(Duration::from_millis(250))
            .unwrap();
        assert_eq!(
            *other.settings(),
            UpstreamSettings {
                connect_timeout: Duration::from_millis(250),
                ..*client.settings()
            }
        );
    }
}
