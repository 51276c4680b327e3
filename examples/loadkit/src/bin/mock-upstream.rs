//! `mock-upstream --listen 127.0.0.1:0`: a fast OpenAI-compatible upstream with faults
//! on request.
//!
//! `POST /v1/chat/completions` (and `/chat/completions`) answers JSON, or SSE when the
//! body says `"stream": true`. What it does is chosen by words in the last user message
//! or the `x-mock` header (see `loadkit::Directives`): `fault:500`, `fault:429`,
//! `fault:400`, `fault:cut`, `fault:stall`, `fault:malformed-json`,
//! `fault:malformed-sse`, `fault:huge`, `fault:crlf`, `delay:<ms>`, `chunks:<n>`,
//! `gap:<ms>`, `stall:<ms>`. Every answer carries `usage` with deterministic counts.
//! `GET /stats` returns the request and connection counters as JSON.

// The binary's interface is what it prints: the address it listens on, and errors.
#![allow(clippy::print_stderr)]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use loadkit::{Directives, Fault};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(
    name = "mock-upstream",
    about = "A fast OpenAI-compatible mock upstream with injectable faults"
)]
struct Args {
    /// Address to listen on; port 0 lets the OS pick one (printed on stderr).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Exit when stdin reaches end of file, so the process cannot outlive a parent
    /// that holds the other end of a pipe.
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

/// The counters behind `GET /stats`. Atomics, because every connection task updates
/// them and none may wait for another.
#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    streaming: AtomicU64,
    faults: AtomicU64,
    completed: AtomicU64,
    /// Answers whose client went away before the body was fully sent.
    aborted: AtomicU64,
    in_flight: AtomicU64,
    /// Connections accepted: how many upstream connections a client opened.
    connections: AtomicU64,
}

impl Stats {
    fn json(&self) -> Bytes {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Bytes::from(
            serde_json::json!({
                "requests": load(&self.requests),
                "streaming": load(&self.streaming),
                "faults": load(&self.faults),
                "completed": load(&self.completed),
                "aborted": load(&self.aborted),
                "in_flight": load(&self.in_flight),
                "connections": load(&self.connections),
            })
            .to_string(),
        )
    }
}

/// One chat request in flight. Dropped without `finish` (the service future or the
/// body producer was dropped because the client left), it counts as aborted.
struct InFlight {
    stats: Arc<Stats>,
    finished: bool,
}

impl InFlight {
    fn new(stats: &Arc<Stats>) -> Self {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            stats: Arc::clone(stats),
            finished: false,
        }
    }

    fn finish(mut self) {
        self.finished = true;
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            self.stats.aborted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A whole body (with its length, so the connection stays keep-alive) or one fed by a
/// producer task through a small channel, so a slow client slows the producer and a
/// vanished one stops it.
enum MockBody {
    Whole(Option<Bytes>),
    Channel(mpsc::Receiver<Result<Bytes, io::Error>>),
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            MockBody::Whole(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            MockBody::Channel(receiver) => receiver
                .poll_recv(cx)
                .map(|item| item.map(|piece| piece.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
            MockBody::Channel(_) => SizeHint::default(),
        }
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const HUGE_BYTES: usize = 1 << 20;
const CUT_PAUSE: Duration = Duration::from_millis(10);

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mock-upstream: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mock-upstream: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    if args.exit_on_stdin_eof {
        loadkit::exit_when_stdin_closes();
    }
    let stats = Arc::new(Stats::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of fds or a connection reset before accept: keep serving the others.
            Err(error) => {
                eprintln!("mock-upstream: accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let stats = Arc::clone(&stats);
                async move { Ok::<_, Infallible>(route(request, stats).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(request: Request<Incoming>, stats: Arc<Stats>) -> Response<MockBody> {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => chat(request, stats).await,
        (&Method::GET, "/stats") => whole(StatusCode::OK, JSON, stats.json()),
        (&Method::GET, "/health") => whole(StatusCode::OK, JSON, Bytes::from_static(b"{}")),
        _ => error(StatusCode::NOT_FOUND, "no such path"),
    }
}

/// What the mock read from a chat request.
struct Asked {
    stream: bool,
    /// The `model` field, already a JSON string literal.
    model: String,
    directives: Directives,
    prompt_tokens: u64,
}

fn read_request(header: Option<&HeaderValue>, body: &[u8]) -> Option<Asked> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let stream = value.get("stream").and_then(serde_json::Value::as_bool) == Some(true);
    let model = serde_json::to_string(value.get("model")?.as_str()?).ok()?;
    let messages = value.get("messages")?.as_array()?;
    let mut prompt_bytes = 0;
    let mut last_user = "";
    for message in messages {
        let text = message_text(message);
        prompt_bytes += text.map_or(0, str::len);
        if message.get("role").and_then(serde_json::Value::as_str) == Some("user") {
            last_user = text.unwrap_or_default();
        }
    }
    let mut directives = Directives::parse(last_user);
    if let Some(header) = header.and_then(|value| value.to_str().ok()) {
        directives.apply(header);
    }
    Some(Asked {
        stream,
        model,
        directives,
        // Deterministic: one token per four bytes, plus OpenAI's framing.
        prompt_tokens: prompt_bytes as u64 / 4 + 3 * messages.len() as u64 + 3,
    })
}

/// The text of a message: a string, or the first text part of a list of parts.
fn message_text(message: &serde_json::Value) -> Option<&str> {
    let content = message.get("content")?;
    content.as_str().or_else(|| {
        content
            .as_array()?
            .iter()
            .find_map(|part| part.get("text")?.as_str())
    })
}

async fn chat(request: Request<Incoming>, stats: Arc<Stats>) -> Response<MockBody> {
    let in_flight = InFlight::new(&stats);
    let header = request.headers().get("x-mock").cloned();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    let Some(asked) = read_request(header.as_ref(), &body) else {
        in_flight.finish();
        return error(StatusCode::BAD_REQUEST, "not a chat completion request");
    };
    if asked.stream {
        stats.streaming.fetch_add(1, Ordering::Relaxed);
    }
    let directives = asked.directives;
    if directives.fault.is_some() {
        stats.faults.fetch_add(1, Ordering::Relaxed);
    }
    if !directives.delay.is_zero() {
        tokio::time::sleep(directives.delay).await;
    }
    match directives.fault {
        Some(Fault::Status500) => {
            in_flight.finish();
            return error(StatusCode::INTERNAL_SERVER_ERROR, "mock internal error");
        }
        Some(Fault::Status429) => {
            in_flight.finish();
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "mock rate limit");
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Some(Fault::Status400) => {
            in_flight.finish();
            return error(StatusCode::BAD_REQUEST, "mock bad request");
        }
        _ => {}
    }
    if asked.stream {
        stream_answer(asked, in_flight)
    } else {
        plain_answer(asked, in_flight).await
    }
}

fn usage(prompt_tokens: u64, completion_tokens: u64) -> String {
    format!(
        r#"{{"prompt_tokens":{prompt_tokens},"completion_tokens":{completion_tokens},"total_tokens":{}}}"#,
        prompt_tokens + completion_tokens
    )
}

/// Completion tokens: one per chunk, and one per four bytes of a huge answer.
fn completion_tokens(directives: &Directives) -> u64 {
    let huge = if directives.fault == Some(Fault::Huge) {
        HUGE_BYTES as u64 / 4
    } else {
        0
    };
    u64::from(directives.chunks) + huge
}

async fn plain_answer(asked: Asked, in_flight: InFlight) -> Response<MockBody> {
    let directives = asked.directives;
    if directives.fault == Some(Fault::Stall) {
        tokio::time::sleep(directives.stall).await;
    }
    let mut content = String::with_capacity(directives.chunks as usize * 4);
    for index in 0..directives.chunks {
        content.push_str(&format!("w{index} "));
    }
    if directives.fault == Some(Fault::Huge) {
        content.push_str(&"x".repeat(HUGE_BYTES));
    }
    let json = format!(
        r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":{},"choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop"}}],"usage":{}}}"#,
        asked.model,
        usage(asked.prompt_tokens, completion_tokens(&directives)),
    );
    match directives.fault {
        Some(Fault::Cut) => {
            let (sender, receiver) = mpsc::channel(2);
            let json = Bytes::from(json);
            let half = json.slice(..json.len() / 2);
            tokio::spawn(async move {
                if sender.send(Ok(half)).await.is_ok() {
                    // Our own cut, not the client leaving.
                    in_flight.finish();
                    tokio::time::sleep(CUT_PAUSE).await;
                    let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "cut on purpose");
                    let _ = sender.send(Err(cut)).await;
                }
            });
            channel_response(JSON, receiver)
        }
        Some(Fault::MalformedJson) => {
            in_flight.finish();
            whole(
                StatusCode::OK,
                JSON,
                Bytes::from_static(br#"{"id":"chatcmpl-mock","choices":[{"message":"#),
            )
        }
        Some(Fault::MalformedSse) => {
            in_flight.finish();
            whole(
                StatusCode::OK,
                EVENT_STREAM,
                Bytes::from_static(b"data: {\"not\": \"json expected\"}\n\n"),
            )
        }
        Some(Fault::Crlf) => {
            in_flight.finish();
            whole(StatusCode::OK, JSON, Bytes::from(format!("\r\n{json}\r\n")))
        }
        _ => {
            in_flight.finish();
            whole(StatusCode::OK, JSON, Bytes::from(json))
        }
    }
}

fn stream_answer(asked: Asked, in_flight: InFlight) -> Response<MockBody> {
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(produce_stream(asked, in_flight, sender));
    channel_response(EVENT_STREAM, receiver)
}

/// Writes the stream's events into `sender`; returns early when the client is gone.
async fn produce_stream(
    asked: Asked,
    in_flight: InFlight,
    sender: mpsc::Sender<Result<Bytes, io::Error>>,
) {
    let directives = asked.directives;
    let end = if directives.fault == Some(Fault::Crlf) {
        "\r\n\r\n"
    } else {
        "\n\n"
    };
    let model = &asked.model;
    let chunk = |delta: &str, finish: &str| {
        Bytes::from(format!(
            r#"data: {{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":{model},"choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}{end}"#
        ))
    };
    // A send fails only when the body was dropped: the client left. Dropping
    // `in_flight` unfinished then counts the abort.
    macro_rules! send {
        ($bytes:expr) => {
            if sender.send(Ok($bytes)).await.is_err() {
                return;
            }
        };
    }
    send!(chunk(r#"{"role":"assistant","content":""}"#, "null"));
    let half = directives.chunks / 2;
    for index in 0..directives.chunks {
        if index == half {
            match directives.fault {
                Some(Fault::Cut) => {
                    in_flight.finish();
                    // Give hyper a moment to flush what was sent, so the cut comes
                    // after data reached the client rather than instead of it.
                    tokio::time::sleep(CUT_PAUSE).await;
                    let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "cut on purpose");
                    let _ = sender.send(Err(cut)).await;
                    return;
                }
                Some(Fault::Stall) => tokio::time::sleep(directives.stall).await,
                Some(Fault::MalformedJson) => {
                    in_flight.finish();
                    let _ = sender
                        .send(Ok(Bytes::from(format!(
                            r#"data: {{"id":"chatcmpl-mock","choices":[{{"delta":{{"content":"oops"{end}"#
                        ))))
                        .await;
                    return;
                }
                Some(Fault::MalformedSse) => {
                    in_flight.finish();
                    let _ = sender
                        .send(Ok(Bytes::from_static(
                            b"data: {\"id\":\xff\xfe garbage without end",
                        )))
                        .await;
                    return;
                }
                Some(Fault::Huge) => {
                    let content = "x".repeat(HUGE_BYTES);
                    send!(chunk(&format!(r#"{{"content":"{content}"}}"#), "null"));
                }
                _ => {}
            }
        }
        if index > 0 && !directives.gap.is_zero() {
            tokio::time::sleep(directives.gap).await;
        }
        send!(chunk(&format!(r#"{{"content":"w{index} "}}"#), "null"));
    }
    send!(chunk("{}", r#""stop""#));
    send!(Bytes::from(format!(
        r#"data: {{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":{model},"choices":[],"usage":{}}}{end}data: [DONE]{end}"#,
        usage(asked.prompt_tokens, completion_tokens(&directives))
    )));
    in_flight.finish();
}

fn channel_response(
    content_type: HeaderValue,
    receiver: mpsc::Receiver<Result<Bytes, io::Error>>,
) -> Response<MockBody> {
    let mut response = Response::new(MockBody::Channel(receiver));
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

fn whole(status: StatusCode, content_type: HeaderValue, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::Whole(Some(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": null}
    });
    whole(status, JSON, Bytes::from(body.to_string()))
}
