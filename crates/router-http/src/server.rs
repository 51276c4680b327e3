//! Accepting connections, serving them, and shutting down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use router_core::escape::Escaped;
use router_core::LiveRouter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::handler::Handler;
use crate::shutdown::Shutdown;
use crate::HttpConfig;

/// After a failed `accept` (typically out of file descriptors), wait this long
/// before the next one instead of spinning on the same error.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// What an h2c client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often to look again at a connection that has sent only part of the h2 preface.
const PARTIAL_PREFACE_POLL: Duration = Duration::from_millis(10);

/// After the shutdown timeout, how long streams have to write their
/// `server_shutdown` event and connections to close before they are aborted.
const CUT_OFF_GRACE: Duration = Duration::from_millis(100);

/// Most header fields an HTTP/1 request may carry (hyper's default, stated
/// here so it is a decision); more get hyper's own 431 response.
const MAX_HEADERS: usize = 100;

/// Largest HTTP/1 request head (request line and headers) accepted, and the
/// largest HTTP/1 read buffer; a larger head gets hyper's own 431 response.
/// Set as hyper's `max_header_size` too: the buffer's size alone is checked
/// only when a read leaves the head unfinished, and a read may take more
/// than was asked for. Also the most h2 header-list bytes accepted, so both
/// protocols agree.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct ServeOutcome {
    /// Whether every connection finished its in-flight requests (and streams)
    /// on its own within the shutdown timeout.
    pub drained: bool,
    /// Requests still open when the timeout expired and ended with the
    /// `server_shutdown` error: SSE streams by a last error event (no
    /// `[DONE]`), requests still waiting for their upstream by a 503. Zero
    /// when `drained`.
    pub ended_by_shutdown: usize,
    /// Connections still open after the grace that followed the timeout
    /// (a client not reading, a request still arriving), aborted mid-air.
    /// Their bodies, and so their upstream calls, were dropped all the same.
    pub aborted: usize,
}

/// Serves HTTP/1.1 (keep-alive) and h2c (prior knowledge) on `listener` until
/// `shutdown` completes; then stops accepting, answers `/health` with 503,
/// and lets in-flight requests and streams finish for up to
/// `shutdown_timeout`. Whatever is still open then is ended with the
/// `server_shutdown` error (an SSE error event, or a 503) and given a short
/// grace to send it; connections open after that are aborted.
///
/// Every connection task is owned by this future: when it returns (or is
/// dropped) no connection, and so no upstream call, outlives it.
pub async fn serve(
    listener: TcpListener,
    routers: Arc<LiveRouter>,
    config: HttpConfig,
    shutdown: impl Future<Output = ()>,
    shutdown_timeout: Duration,
) -> ServeOutcome {
    let builders = Arc::new(Builders::new(&config));
    let header_read_timeout = config.header_read_timeout;
    let draining = Shutdown::default();
    let handler = Handler::with_shutdown(routers, config, draining.clone());
    let graceful = GracefulShutdown::new();
    // Connections still waiting for their first byte are not hyper connections
    // yet, so `graceful` cannot reach them; this tells them to give up.
    let (stop_waiting, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Reap finished connections so the set only holds live ones.
                    while connections.try_join_next().is_some() {}
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        handler.clone(),
                        Arc::clone(&builders),
                        graceful.watcher(),
                        stopped.clone(),
                        header_read_timeout,
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }

    // Closing the listener makes the OS refuse new connections at once.
    drop(listener);
    // Before hyper hears of it: a request answered from now on already
    // sees the draining state.
    draining.start_draining();
    let open = graceful.count();
    tracing::info!(
        open,
        ?shutdown_timeout,
        "shutting down: draining connections"
    );
    // Nobody may be subscribed any more; that is fine.
    let _ = stop_waiting.send(true);
    let closed = graceful.shutdown();
    let mut closed = std::pin::pin!(closed);
    let drained = tokio::time::timeout(shutdown_timeout, &mut closed)
        .await
        .is_ok();
    let mut aborted = 0;
    if !drained {
        tracing::warn!(
            remaining = connections.len(),
            "shutdown timeout: ending open requests with a server_shutdown error"
        );
        draining.cut_off();
        // Connections whose requests have ended close on their own (hyper
        // has disabled keep-alive and sent GOAWAY); this waits for them.
        if tokio::time::timeout(CUT_OFF_GRACE, &mut closed)
            .await
            .is_err()
        {
            while connections.try_join_next().is_some() {}
            aborted = connections.len();
            tracing::warn!(aborted, "connections still open after the grace: aborting");
        }
    }
    // Abort what is left: their bodies, and so their upstream calls, are
    // dropped with them.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    ServeOutcome {
        drained,
        ended_by_shutdown: draining.ended(),
        aborted,
    }
}

/// The protocol of a connection, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    /// h2c with prior knowledge.
    H2,
}

/// The connection builders, one per protocol: [`detect_protocol`] has
/// already peeked at the first bytes, so the connection is handed to the
/// right one at once. hyper-util's `auto` builder would detect the protocol
/// again by reading up to 24 bytes and replaying them as the first read of
/// the HTTP/1 connection; the rest of the head then no longer fits the 8 KiB
/// hyper reserves for a read, and the connection's read buffer grows to
/// 16 KiB for as long as the connection lives. Given the whole head in its
/// first read, hyper keeps 8 KiB. On `cargo xtask bench`'s slow streams
/// (1,000 held open on a fresh router, opened in ten batches of 100) this
/// took the router's RSS per 1,000 streams from 43.0 to 39.7 MiB.
struct Builders {
    http1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(config: &HttpConfig) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_headers(MAX_HEADERS)
            .max_header_size(MAX_HEAD_BYTES)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        // The timer drives h2 keep-alive pings should they be configured.
        h2.timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32);
        Self { http1, h2 }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Handler,
    builders: Arc<Builders>,
    watcher: Watcher,
    mut stopped: watch::Receiver<bool>,
    header_read_timeout: Duration,
) {
    // Small SSE frames must leave now, not when Nagle's algorithm says so.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
    }
    // hyper's header timeout starts only once hyper has the connection, and
    // telling the protocol has no timeout of its own: bound it here.
    let protocol = tokio::select! {
        biased;
        _ = stopped.wait_for(|stopped| *stopped) => return,
        detected = tokio::time::timeout(header_read_timeout, detect_protocol(&stream)) => match detected {
            Ok(Ok(Some(protocol))) => protocol,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "connection failed before its first request");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no request within the header read timeout");
                return;
            }
        },
    };

    // Each request's future gets a box of its own, freed when the response
    // head is ready. hyper keeps the service future's memory for as long as
    // the connection lives (HTTP/1 allocates it once per connection; an h2
    // stream's task holds it until the stream ends), so unboxed, the 4 KiB of
    // the engine's state while it waits for the upstream would stay for the
    // whole of an SSE stream. On 1,000 slow streams (opened in batches of
    // 100), boxing took the router's RSS per 1,000 streams from 39.7 to
    // 36.3 MiB.
    let service = service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        let handled = Box::pin(async move { handler.handle(request).await });
        async move { Ok::<_, Infallible>(handled.await) }
    });
    let io = TokioIo::new(stream);
    // The h2 connection is boxed: its state is 860 bytes larger than an
    // HTTP/1 connection's, and inline it would size every connection's task
    // (this future: 1,992 bytes with it inline, 1,128 with it boxed).
    let served = match protocol {
        Protocol::Http1 => {
            watcher
                .watch(builders.http1.serve_connection(io, service))
                .await
        }
        Protocol::H2 => Box::pin(watcher.watch(builders.h2.serve_connection(io, service))).await,
    };
    if let Err(error) = served {
        // Clients resetting connections and timing out are routine.
        tracing::debug!(%peer, error = %Escaped(&error), "connection ended with an error");
    }
}

/// Waits until the client has sent enough to tell HTTP/1 from h2 (a byte that
/// departs from the h2 preface, or the whole preface), without consuming it.
/// `None` when the client closed the connection first.
async fn detect_protocol(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut peeked = [0u8; H2_PREFACE.len()];
    loop {
        let len = stream.peek(&mut peeked).await?;
        if len == 0 {
            return Ok(None);
        }
        if peeked[..len] != H2_PREFACE[..len] {
            return Ok(Some(Protocol::Http1));
        }
        if len == H2_PREFACE.len() {
            return Ok(Some(Protocol::H2));
        }
        // A strict prefix of the preface. Peeking again at once would spin on
        // the same bytes; real h2 clients send the preface in one write, so
        // only slow or hostile clients ever wait here.
        tokio::time::sleep(PARTIAL_PREFACE_POLL).await;
    }
}
