//! An in-process mock upstream: an HTTP/1.1 server on 127.0.0.1, port 0, that
//! records each request and answers what the test's handler says. It can
//! delay, split a body into small writes, cut it, or keep it open forever,
//! and it tells the test when a connection or a streamed body went away.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How a body is sent.
#[derive(Debug, Clone)]
pub enum Body {
    Whole(Bytes),
    /// Written in pieces of at most `piece` bytes, `pause` apart, then `end`.
    Pieces {
        bytes: Bytes,
        piece: usize,
        pause: Duration,
        end: End,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The body ends normally.
    Finish,
    /// The body fails: the server drops the connection mid-body.
    Abort,
    /// The body never ends; an SSE comment is written every 20 ms so a
    /// vanished client is noticed by a failing write.
    KeepOpen,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// Wait this long before sending the head.
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: Body::Whole(body.into()),
            delay: Duration::ZERO,
        }
    }

    pub fn sse(body: impl Into<Bytes>) -> Self {
        Self {
            status: 200,
            headers: vec![(
                "content-type",
                "text/event-stream; charset=utf-8".to_owned(),
            )],
            body: Body::Whole(body.into()),
            delay: Duration::ZERO,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn in_pieces(mut self, piece: usize, pause: Duration, end: End) -> Self {
        let bytes = match self.body {
            Body::Whole(bytes) | Body::Pieces { bytes, .. } => bytes,
        };
        self.body = Body::Pieces {
            bytes,
            piece,
            pause,
            end,
        };
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A running mock upstream. It stops when the test's runtime shuts down.
pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    connections: Arc<AtomicUsize>,
    /// Streamed bodies that were dropped before they finished (the client
    /// went away), and a signal for each.
    abandoned: Arc<AtomicUsize>,
    abandoned_signal: Arc<Notify>,
}

impl Upstream {
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Self {
            addr,
            requests: Arc::default(),
            connections: Arc::default(),
            abandoned: Arc::default(),
            abandoned_signal: Arc::default(),
        };
        let requests = upstream.requests.clone();
        let connections = upstream.connections.clone();
        let abandoned = upstream.abandoned.clone();
        let signal = upstream.abandoned_signal.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let requests = requests.clone();
                let abandoned = abandoned.clone();
                let signal = signal.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let handler = handler.clone();
                        let requests = requests.clone();
                        let abandoned = abandoned.clone();
                        let signal = signal.clone();
                        async move {
                            let (head, body) = request.into_parts();
                            let recorded = Recorded {
                                method: head.method.to_string(),
                                path_and_query: head
                                    .uri
                                    .path_and_query()
                                    .map(ToString::to_string)
                                    .unwrap_or_default(),
                                headers: head.headers,
                                body: body.collect().await.unwrap().to_bytes(),
                            };
                            requests.lock().unwrap().push(recorded.clone());
                            let reply = handler(&recorded);
                            tokio::time::sleep(reply.delay).await;
                            Ok::<_, Infallible>(respond(reply, abandoned, signal))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        upstream
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until a streamed body was dropped unfinished; false on timeout.
    pub async fn body_abandoned_within(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                let notified = self.abandoned_signal.notified();
                if self.abandoned.load(Ordering::SeqCst) > 0 {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }
}

/// Counts a streamed body that is dropped before it finished.
struct AbandonGuard {
    finished: bool,
    abandoned: Arc<AtomicUsize>,
    signal: Arc<Notify>,
}

impl AbandonGuard {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.abandoned.fetch_add(1, Ordering::SeqCst);
            self.signal.notify_waiters();
        }
    }
}

fn respond(
    reply: Reply,
    abandoned: Arc<AtomicUsize>,
    signal: Arc<Notify>,
) -> Response<BoxBody<Bytes, io::Error>> {
    let body = match reply.body {
        Body::Whole(bytes) => Full::new(bytes).map_err(|never| match never {}).boxed(),
        Body::Pieces {
            bytes,
            piece,
            pause,
            end,
        } => {
            let guard = AbandonGuard {
                finished: false,
                abandoned,
                signal,
            };
            // The pause goes between pieces: the first leaves at once.
            let state = (bytes, guard, true);
            let stream = futures_util::stream::unfold(
                state,
                move |(mut bytes, mut guard, first)| async move {
                    if !bytes.is_empty() {
                        if !first && !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                        let next = bytes.split_to(piece.min(bytes.len()));
                        return Some((Ok(Frame::data(next)), (bytes, guard, false)));
                    }
                    match end {
                        End::Finish => {
                            // The end is paced like a piece, so it can arrive
                            // after the last event rather than with it.
                            if !pause.is_zero() {
                                tokio::time::sleep(pause).await;
                            }
                            guard.finish();
                            None
                        }
                        End::Abort => {
                            guard.finish();
                            let error =
                                io::Error::new(io::ErrorKind::ConnectionAborted, "cut on purpose");
                            Some((Err(error), (bytes, guard, false)))
                        }
                        End::KeepOpen => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Some((
                                Ok(Frame::data(Bytes::from_static(b": ping\n\n"))),
                                (bytes, guard, false),
                            ))
                        }
                    }
                },
            );
            BodyExt::boxed(StreamBody::new(stream))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (name, value) in reply.headers {
        response.headers_mut().append(name, value.parse().unwrap());
    }
    response
}

/// A recorded OpenAI fixture, by file name.
pub fn fixture(name: &str) -> Bytes {
    vendor_fixture("openai", name)
}

/// A recorded fixture of `vendor` (`tests/fixtures/<vendor>/`), by file name.
pub fn vendor_fixture(vendor: &str, name: &str) -> Bytes {
    // Through this file's own path, not the calling crate's manifest, so
    // router-server's tests (which include this module by path) find it.
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../router-providers"))
        .join("tests/fixtures")
        .join(vendor)
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display())))
}
