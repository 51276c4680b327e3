//! Routes and the per-request handler.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, AUTHORIZATION, CACHE_CONTROL,
    CONNECTION, CONTENT_TYPE,
};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use router_core::live::Reload;
use router_core::provider::Endpoint;
use router_core::{
    ChatError, ChatResponse, ChunkStream, ClientKey, LiveRouter, RequestContext, Router,
};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::admin::{self, AdminView, Asset};
use crate::body::ResponseBody;
use crate::error::{ApiError, APPLICATION_JSON};
use crate::metrics::Metrics;
use crate::request_log::{is_sane_request_id, RequestLog};
use crate::shutdown::Shutdown;
use crate::{query, ratelimit, HttpConfig};

const MODELS_PATH: &str = "/v1/models";
const USAGE_PATH: &str = "/v1/usage";
const RELOAD_PATH: &str = "/admin/reload";
const METRICS_PATH: &str = "/metrics";

// The seed's CORS headers, sent on every response, verbatim.
const ALLOW_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const ALLOW_CREDENTIALS: HeaderValue = HeaderValue::from_static("true");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization, accept, origin, \
     Cache-Control, X-Requested-With",
);
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("POST, OPTIONS, GET, PUT, DELETE");

const TEXT_EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
/// What Prometheus asks for first; the exposition is OpenMetrics 1.0 text.
const OPENMETRICS_TEXT: HeaderValue =
    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const CLOSE: HeaderValue = HeaderValue::from_static("close");
/// The request's id, as the usage ledger and the log line record it: the
/// client's own when it sent a sane one, else one the router made.
const X_REQUEST_ID: &str = "x-request-id";
/// Should the router ever make an id a header cannot carry (it does not:
/// its ids are ASCII letters, digits, `_` and `-`).
const UNNAMED_REQUEST: HeaderValue = HeaderValue::from_static("req_unnamed");
/// Tells nginx-style proxies not to buffer the stream.
const X_ACCEL_BUFFERING: &str = "x-accel-buffering";

/// The seed's `/health` time format: RFC 3339 with a numeric offset, whole seconds.
const HEALTH_TIME: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
);

/// The known routes. Anything else is a 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Models,
    /// `/v1/models/{id}`; the id may itself contain `/` (`org/model`).
    Model(&'a str),
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: the
    /// engine's endpoints, served alike.
    Engine(Endpoint),
    Usage,
    Metrics,
    /// `POST /admin/reload`.
    Reload,
    /// `/admin/*`: the operator's read-only views (admin keys only).
    Admin(AdminView),
    /// `/ui` and its script and style: the dashboard.
    Ui(Asset),
}

impl<'a> Route<'a> {
    fn find(path: &'a str) -> Option<Self> {
        match path {
            "/health" => Some(Self::Health),
            MODELS_PATH => Some(Self::Models),
            "/v1/chat/completions" => Some(Self::Engine(Endpoint::ChatCompletions)),
            "/v1/completions" => Some(Self::Engine(Endpoint::Completions)),
            "/v1/embeddings" => Some(Self::Engine(Endpoint::Embeddings)),
            USAGE_PATH => Some(Self::Usage),
            METRICS_PATH => Some(Self::Metrics),
            RELOAD_PATH => Some(Self::Reload),
            _ => path
                .strip_prefix("/v1/models/")
                .filter(|id| !id.is_empty())
                .map(Self::Model)
                .or_else(|| AdminView::find(path).map(Self::Admin))
                .or_else(|| Asset::find(path).map(Self::Ui)),
        }
    }

    /// The `Allow` header of a 405 on this route.
    fn allow(self) -> &'static str {
        match self {
            Self::Engine(_) | Self::Reload => "POST, OPTIONS",
            Self::Health
            | Self::Models
            | Self::Model(_)
            | Self::Usage
            | Self::Metrics
            | Self::Admin(_)
            | Self::Ui(_) => "GET, HEAD, OPTIONS",
        }
    }

    /// The path a log line shows: the route's own, or the client's text
    /// for a model id or an unknown path.
    fn logged_path(route: Option<Self>, path: &str) -> Cow<'static, str> {
        match route {
            Some(Self::Health) => Cow::Borrowed("/health"),
            Some(Self::Models) => Cow::Borrowed(MODELS_PATH),
            Some(Self::Engine(endpoint)) => Cow::Borrowed(endpoint.path()),
            Some(Self::Usage) => Cow::Borrowed(USAGE_PATH),
            Some(Self::Metrics) => Cow::Borrowed(METRICS_PATH),
            Some(Self::Reload) => Cow::Borrowed(RELOAD_PATH),
            Some(Self::Admin(view)) => Cow::Borrowed(view.path()),
            Some(Self::Model(_) | Self::Ui(_)) | None => Cow::Owned(path.to_owned()),
        }
    }

    /// The `route` label of `http_requests_total`: one value per route,
    /// never the path itself (model ids and unknown paths are the client's).
    fn label(route: Option<Self>) -> &'static str {
        match route {
            Some(Self::Health) => "health",
            Some(Self::Models) => "models",
            Some(Self::Model(_)) => "model",
            Some(Self::Engine(Endpoint::ChatCompletions)) => "chat_completions",
            Some(Self::Engine(Endpoint::Completions)) => "completions",
            Some(Self::Engine(Endpoint::Embeddings)) => "embeddings",
            Some(Self::Usage) => "usage",
            Some(Self::Metrics) => "metrics",
            Some(Self::Reload) => "admin_reload",
            Some(Self::Admin(view)) => view.label(),
            Some(Self::Ui(_)) => "ui",
            None => "unknown",
        }
    }

    /// Whether a request on this route is load: scrapes, the dashboard
    /// and its polling are the operator watching, and would otherwise
    /// count themselves in the in-flight gauge they display.
    fn is_load(route: Option<Self>) -> bool {
        !matches!(route, Some(Self::Metrics | Self::Admin(_) | Self::Ui(_)))
    }
}

/// Serves one request. Cheap to clone (one `Arc`), so each connection and
/// each h2 stream gets its own.
#[derive(Debug, Clone)]
pub struct Handler {
    /// The router in use: each request loads it once and keeps it, so a
    /// config reload never changes a request under way.
    routers: Arc<LiveRouter>,
    config: HttpConfig,
    /// Set by `serve` when it shuts down: turns `/health` to 503, closes
    /// HTTP/1 connections after their response, and cuts open streams off.
    shutdown: Shutdown,
}

impl Handler {
    /// A handler no shutdown ever reaches (for tests and benches that call
    /// it without [`serve`](crate::serve)).
    pub fn new(routers: Arc<LiveRouter>, config: HttpConfig) -> Self {
        Self::with_shutdown(routers, config, Shutdown::default())
    }

    pub(crate) fn with_shutdown(
        routers: Arc<LiveRouter>,
        config: HttpConfig,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            routers,
            config,
            shutdown,
        }
    }

    /// Answers one request. Never fails: every error becomes a response.
    /// Generic over the request body so tests and benches can call it without
    /// a socket.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let route = Route::find(request.uri().path());
        let metrics = self.config.metrics.as_deref();
        // Held across the await: a client that leaves before the answer
        // drops this future, and the guard with it. A scrape is not load.
        let in_flight = metrics
            .filter(|_| Route::is_load(route))
            .map(Metrics::start_request);
        let label = Route::label(route);
        let version = request.version();
        // The router in use when the request arrives serves it to its end,
        // whatever a config reload swaps in meanwhile.
        let router = self.routers.load();
        let request_id = request_id(&router, request.headers());
        let log = RequestLog::start(
            request.method(),
            || Route::logged_path(route, request.uri().path()),
            &request_id,
        );
        let mut response = self.route(&router, request, &request_id, &log).await;
        add_cors(response.headers_mut());
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        // hyper adds this itself once its graceful shutdown reaches the
        // connection; saying it here too covers a request that was already
        // past that point. h2 has GOAWAY instead, and forbids the header.
        if version < Version::HTTP_2 && self.shutdown.is_draining() {
            response.headers_mut().insert(CONNECTION, CLOSE);
        }
        if let Some(metrics) = metrics {
            metrics.count_response(label, response.status());
        }
        if let Some(in_flight) = in_flight {
            response.body_mut().hold(in_flight);
        }
        log.status(response.status());
        response.body_mut().hold_log(log);
        response
    }

    async fn route<B>(
        &self,
        router: &Router,
        request: Request<B>,
        request_id: &HeaderValue,
        log: &RequestLog,
    ) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let method = request.method();
        // Preflight requests carry no credentials: answer them before auth, on any path.
        if method == Method::OPTIONS {
            return status_only(StatusCode::NO_CONTENT);
        }
        let path = request.uri().path();
        let Some(route) = Route::find(path) else {
            return refuse(ApiError::unknown_url(method, path), log);
        };
        let readable = method == Method::GET || method == Method::HEAD;
        match route {
            Route::Health if readable => health(self.shutdown.is_draining()),
            Route::Models if readable => json(StatusCode::OK, router.models_json()),
            Route::Model(id) if readable => {
                let id = percent_decode(id);
                match router.model_json(&id) {
                    Some(model) => json(StatusCode::OK, model),
                    None => refuse(ApiError::model_not_found(&id), log),
                }
            }
            Route::Engine(endpoint) if method == Method::POST => {
                self.engine(router, endpoint, request, request_id, log)
                    .await
            }
            Route::Usage if readable => self.usage(router, &request, log).await,
            Route::Admin(view) if readable => self.admin(router, view, &request, log).await,
            Route::Ui(asset) if readable => asset.respond(),
            Route::Reload => match &self.config.reload {
                None => refuse(ApiError::unknown_url(method, path), log),
                Some(reload) if method == Method::POST => {
                    reload_config(router, reload, &request, log).await
                }
                Some(_) => refuse(
                    ApiError::method_not_allowed(method, path, route.allow()),
                    log,
                ),
            },
            Route::Metrics => match self.config.metrics.as_deref() {
                // Without metrics the route does not exist.
                None => refuse(ApiError::unknown_url(method, path), log),
                Some(metrics) if readable => metrics_text(metrics, log),
                Some(_) => refuse(
                    ApiError::method_not_allowed(method, path, route.allow()),
                    log,
                ),
            },
            _ => refuse(
                ApiError::method_not_allowed(method, path, route.allow()),
                log,
            ),
        }
    }

    /// A request for the engine: chat completions, text completions or
    /// embeddings, each checked, read and answered the same way.
    async fn engine<B>(
        &self,
        router: &Router,
        endpoint: Endpoint,
        request: Request<B>,
        request_id: &HeaderValue,
        log: &RequestLog,
    ) -> Response<ResponseBody>
    where
        B: Body,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let fail = |error: ApiError, cause: &dyn std::fmt::Display| {
            log.error(cause);
            error.into_response()
        };
        let client = match authenticate(router, request.headers(), log) {
            Ok(client) => client,
            Err(refusal) => return refusal.into_response(),
        };

        // Checked before the body is read: a form or a file upload is not a
        // request for the engine, however it parses.
        if let Some(content_type) = request.headers().get(CONTENT_TYPE) {
            if !is_json(content_type) {
                let shown = String::from_utf8_lossy(content_type.as_bytes());
                return refuse(ApiError::unsupported_media_type(&shown), log);
            }
        }

        let limit = self.config.max_body_bytes;
        // A declared Content-Length over the cap is refused before reading a byte.
        if request.body().size_hint().lower() > limit as u64 {
            return refuse(ApiError::body_too_large(limit), log);
        }
        // Copied out of hyper's buffer: a body that came with the head is a
        // slice of the connection's 8 KiB read buffer, and holding it would
        // keep that buffer alive while the engine waits for the upstream
        // (hyper has taken a fresh one for its next read by then). One copy
        // of a body the engine parses as JSON next.
        let body = match Limited::new(request.into_body(), limit).collect().await {
            Ok(collected) => Bytes::copy_from_slice(&collected.to_bytes()),
            Err(error) if error.is::<LengthLimitError>() => {
                return fail(ApiError::body_too_large(limit), &error)
            }
            Err(error) => return fail(ApiError::unreadable_body(&error), &error),
        };

        // The id was checked (a sane client token) or made by the router:
        // it is always text.
        let context = RequestContext {
            request_id: request_id.to_str().ok(),
            observer: log.observer(),
        };
        // A request still waiting for its upstream when the server cuts off
        // gets a 503 rather than a vanished connection; dropping the engine's
        // future cancels the upstream call and settles its usage.
        let outcome = tokio::select! {
            outcome = router.serve_with(endpoint, &client, &body, context) => outcome,
            () = self.shutdown.when_cut_off() => {
                self.shutdown.count_ended();
                return fail(ApiError::server_shutdown(), &"shutdown timeout expired");
            }
        };
        let refusal = match &outcome.result {
            Err(ChatError::Refused { refusal }) => Some(refusal),
            _ => None,
        };
        let rate = ratelimit::reported(outcome.rate, refusal);
        let mut response = match outcome.result {
            Ok(ChatResponse::Complete(completion)) => match serde_json::to_vec(&completion) {
                Ok(bytes) => json(StatusCode::OK, Bytes::from(bytes)),
                Err(error) => fail(ApiError::encoding_failed(&error), &error),
            },
            Ok(ChatResponse::Stream(chunks)) => self.event_stream(chunks),
            // The books carry the error to the line.
            Err(error) => ApiError::from_chat(&error).into_response(),
        };
        ratelimit::insert_headers(response.headers_mut(), rate);
        response
    }

    /// `GET /v1/usage`: authenticated like a chat request; the engine
    /// decides what the key may see.
    async fn usage<B>(
        &self,
        router: &Router,
        request: &Request<B>,
        log: &RequestLog,
    ) -> Response<ResponseBody> {
        let fail = |error: ApiError, cause: &dyn std::fmt::Display| {
            log.error(cause);
            error.into_response()
        };
        let client = match authenticate(router, request.headers(), log) {
            Ok(client) => client,
            Err(refusal) => return refusal.into_response(),
        };
        // Checked after authentication: strangers learn nothing, not even
        // which parameters exist.
        let question = match query::usage_request(request.uri().query()) {
            Ok(question) => question,
            Err(error) => return refuse(error, log),
        };
        match router.usage(&client, question).await {
            Ok(report) => match serde_json::to_vec(&report) {
                Ok(bytes) => json(StatusCode::OK, Bytes::from(bytes)),
                Err(error) => fail(ApiError::encoding_failed(&error), &error),
            },
            Err(error) => fail(ApiError::from_usage(&error), &error),
        }
    }

    /// `GET /admin/*`: authenticated like any request; the engine refuses
    /// keys that are not admin keys (403 `admin_required`).
    async fn admin<B>(
        &self,
        router: &Router,
        view: AdminView,
        request: &Request<B>,
        log: &RequestLog,
    ) -> Response<ResponseBody> {
        let fail = |error: ApiError, cause: &dyn std::fmt::Display| {
            log.error(cause);
            error.into_response()
        };
        let client = match authenticate(router, request.headers(), log) {
            Ok(client) => client,
            Err(refusal) => return refusal.into_response(),
        };
        // Checked after authentication, as for `/v1/usage`.
        let limit = match admin::limit(view, request.uri().query()) {
            Ok(limit) => limit,
            Err(error) => return refuse(error, log),
        };
        let body = match view {
            AdminView::Models => router.admin_models(&client).map(|mut models| {
                models.in_flight = self
                    .config
                    .metrics
                    .as_deref()
                    .map(|metrics| u64::try_from(metrics.in_flight()).unwrap_or(0));
                serde_json::to_vec(&models)
            }),
            AdminView::Keys => router
                .admin_keys(&client)
                .await
                .map(|keys| serde_json::to_vec(&keys)),
            AdminView::Usage => router
                .admin_usage(&client)
                .await
                .map(|usage| serde_json::to_vec(&usage)),
            AdminView::Errors => router
                .admin_errors(&client, limit)
                .await
                .map(|errors| serde_json::to_vec(&errors)),
        };
        match body {
            Ok(Ok(bytes)) => admin::json(bytes),
            Ok(Err(error)) => fail(ApiError::encoding_failed(&error), &error),
            Err(error) => fail(ApiError::from_admin(&error), &error),
        }
    }

    fn event_stream(&self, chunks: ChunkStream) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::sse_until_cut_off(
            chunks,
            self.config.sse_keepalive,
            &self.shutdown,
        ));
        *response.headers_mut() = HeaderMap::with_capacity(CHAT_HEADERS + 2);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, TEXT_EVENT_STREAM);
        headers.insert(CACHE_CONTROL, NO_CACHE);
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
        // No `Connection: keep-alive` (the seed's): it is illegal in HTTP/2 and
        // the HTTP/1.1 default anyway.
        response
    }
}

/// Answers with an error the handler produced itself; its message (which
/// says it all) goes into the request's line.
/// The request's client key, named in its log line; or why it is refused,
/// the cause in the log line. The engine parses the scheme and
/// compares in constant time; this only hands it the raw bytes (and never
/// logs them).
fn authenticate(
    router: &Router,
    headers: &HeaderMap,
    log: &RequestLog,
) -> Result<ClientKey, ApiError> {
    let authorization = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    match router.authenticate(authorization) {
        Ok(client) => {
            log.client(&client);
            Ok(client)
        }
        Err(error) => {
            log.error(&error);
            Err(ApiError::from_auth(error))
        }
    }
}

/// The client's `x-request-id` when it is a sane token, else a fresh id.
/// The client's is copied: the id lasts as long as the response, and the
/// header is a slice of the connection's read buffer (see `engine`).
fn request_id(router: &Router, headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID) {
        Some(id) if is_sane_request_id(id.as_bytes()) => {
            HeaderValue::from_bytes(id.as_bytes()).unwrap_or(UNNAMED_REQUEST)
        }
        _ => HeaderValue::try_from(router.new_request_id()).unwrap_or(UNNAMED_REQUEST),
    }
}

fn refuse(error: ApiError, log: &RequestLog) -> Response<ResponseBody> {
    log.error(&error.message());
    error.into_response()
}

fn add_cors(headers: &mut HeaderMap) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW_ORIGIN);
    headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, ALLOW_CREDENTIALS);
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
}

fn status_only(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    response
}

/// Headers a chat answer carries: its content type, the request id, six
/// rate-limit headers and four CORS headers. A map sized for them is
/// allocated once instead of growing (and rehashing) on the way.
const CHAT_HEADERS: usize = 12;

fn json(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    *response.headers_mut() = HeaderMap::with_capacity(CHAT_HEADERS);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// `GET /health`: 200 `ok`, or 503 `draining` once shutdown has begun, so
/// load balancers stop sending before the connections close.
fn health(draining: bool) -> Response<ResponseBody> {
    // Formatting a UTC time with this fixed description cannot fail; the
    // fallback only keeps the endpoint answering should it ever.
    let now = OffsetDateTime::now_utc()
        .format(HEALTH_TIME)
        .unwrap_or_default();
    let (status, word) = if draining {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "ok")
    };
    json(
        status,
        Bytes::from(format!(r#"{{"status":"{word}","time":"{now}"}}"#)),
    )
}

/// Whether a `Content-Type` declares JSON: `application/json` or
/// `application/<anything>+json`, with any parameters, in any case.
fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(value) = content_type.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.as_bytes();
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case(b"json")
            || (subtype.len() > b"+json".len()
                && subtype[subtype.len() - b"+json".len()..].eq_ignore_ascii_case(b"+json")))
}

/// `GET /metrics`. No authentication: like every Prometheus target it is
/// meant for the operator's network, and it holds no secret (see
/// [`Metrics`]). Always OpenMetrics text, which Prometheus asks for first.
fn metrics_text(metrics: &Metrics, log: &RequestLog) -> Response<ResponseBody> {
    match metrics.encode() {
        Ok(text) => {
            let mut response = Response::new(ResponseBody::full(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, OPENMETRICS_TEXT);
            response
        }
        Err(error) => refuse(ApiError::encoding_failed(&error), log),
    }
}

/// Decodes `%XX` escapes in a model id or a query parameter (clients may
/// escape `/`, `:` or `+`). An invalid escape leaves the text as sent, which
/// then simply matches nothing.
pub(crate) fn percent_decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    match String::from_utf8(decoded) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(raw),
    }
}

/// `POST /admin/reload`: reloads the config for an admin key; 200 with what
/// changed, or 400 with every problem (the running config stays).
async fn reload_config<B>(
    router: &Router,
    reload: &Arc<dyn Reload>,
    request: &Request<B>,
    log: &RequestLog,
) -> Response<ResponseBody> {
    let client = match authenticate(router, request.headers(), log) {
        Ok(client) => client,
        Err(refusal) => return refusal.into_response(),
    };
    if !client.admin {
        return refuse(ApiError::admin_required(), log);
    }
    // Reading the file and building providers is blocking work.
    let reload = Arc::clone(reload);
    let outcome = match tokio::task::spawn_blocking(move || reload.reload()).await {
        Ok(outcome) => outcome,
        Err(error) => return refuse(ApiError::encoding_failed(&error), log),
    };
    match outcome {
        Ok(changes) => {
            let body = serde_json::json!({
                "object": "config.reload",
                "changed": !changes.is_empty(),
                "models": changes.models,
                "keys": changes.keys,
                "needs_restart": changes.needs_restart,
            });
            json(StatusCode::OK, Bytes::from(body.to_string()))
        }
        Err(errors) => refuse(ApiError::invalid_config(&errors), log),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        fn check(path: &str, expected: Option<Route<'_>>) {
            assert_eq!(Route::find(path), expected, "{path}");
        }
        check("/health", Some(Route::Health));
        check("/v1/models", Some(Route::Models));
        check("/v1/models/gpt-4o", Some(Route::Model("gpt-4o")));
        check(
            "/v1/models/openai/gpt-4o",
            Some(Route::Model("openai/gpt-4o")),
        );
        check(
            "/v1/chat/completions",
            Some(Route::Engine(Endpoint::ChatCompletions)),
        );
        check(
            "/v1/completions",
            Some(Route::Engine(Endpoint::Completions)),
        );
        check("/v1/embeddings", Some(Route::Engine(Endpoint::Embeddings)));
        check("/v1/usage", Some(Route::Usage));
        check("/metrics", Some(Route::Metrics));
        check("/v1/usage/", None);
        check("/metrics/", None);
        check("/v1/models/", None);
        check("/v1/chat/completions/", None);
        check("/health/", None);
        check("/", None);
        check("/v1/completions/", None);
        check("/v1/embeddings/", None);
        check("/admin/models", Some(Route::Admin(AdminView::Models)));
        check("/admin/usage", Some(Route::Admin(AdminView::Usage)));
        check("/ui", Some(Route::Ui(Asset::Page)));
        check("/ui/ui.js", Some(Route::Ui(Asset::Script)));
        check("/admin", None);
        check("/admin/nothing", None);
    }

    #[test]
    fn model_ids_are_percent_decoded() {
        fn check(raw: &str, expected: &str) {
            assert_eq!(percent_decode(raw), expected, "{raw}");
        }
        check("gpt-4o", "gpt-4o");
        check("openai%2Fgpt-4o", "openai/gpt-4o");
        check("gemini-2.5-pro%3afree", "gemini-2.5-pro:free");
        check("bad%zzescape", "bad%zzescape");
        check("trailing%2", "trailing%2");
        check("%FF", "%FF");
    }

    #[test]
    fn json_content_types() {
        fn check(content_type: &[u8], expected: bool) {
            let value = HeaderValue::from_bytes(content_type).unwrap();
            assert_eq!(is_json(&value), expected, "{content_type:?}");
        }
        check(b"application/json", true);
        check(b"application/json; charset=utf-8", true);
        check(b"Application/JSON;charset=UTF-8", true);
        check(b" application/json ", true);
        check(b"application/vnd.api+json", true);
        check(b"application/merge-patch+JSON; q=1", true);
        check(b"application/+json", false);
        check(b"text/json", false);
        check(b"text/plain", false);
        check(b"application/x-www-form-urlencoded", false);
        check(b"multipart/form-data; boundary=x", false);
        check(b"application/jsonp", false);
        check(b"json", false);
        check(b"", false);
        check(b"application/json\xff", false);
    }

    #[test]
    fn health_time_is_rfc3339_with_an_offset() {
        let time = OffsetDateTime::UNIX_EPOCH.format(HEALTH_TIME).unwrap();
        assert_eq!(time, "1970-01-01T00:00:00+00:00");
    }
}
