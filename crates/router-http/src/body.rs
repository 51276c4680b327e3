//! Response bodies: a whole JSON document, nothing, or a live SSE stream.
//!
//! One concrete body type for every response keeps the service's future and
//! body unboxed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use router_core::{Chunk, ChunkStream};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;
use crate::metrics::InFlight;
use crate::request_log::RequestLog;
use crate::shutdown::{CutOff, Shutdown};

const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";
const KEEPALIVE_COMMENT: &[u8] = b": keepalive\n\n";

/// The body of every response the router sends.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    /// Counts the request as in flight until the body has sent its last
    /// frame or is dropped (client gone, connection cut off).
    in_flight: Option<InFlight>,
    /// The request's log line, let go at the same moment: the request has
    /// ended then.
    log: RequestLog,
}

#[derive(Debug)]
enum Kind {
    /// A whole body, taken out when it is sent.
    Full(Option<Bytes>),
    Sse(SseBody),
}

impl ResponseBody {
    fn of(kind: Kind) -> Self {
        Self {
            kind,
            in_flight: None,
            log: RequestLog::default(),
        }
    }

    pub fn full(bytes: Bytes) -> Self {
        Self::of(Kind::Full(Some(bytes).filter(|bytes| !bytes.is_empty())))
    }

    pub fn empty() -> Self {
        Self::of(Kind::Full(None))
    }

    /// Relays `chunks` as server-sent events (see [`SseBody`]).
    pub fn sse(chunks: ChunkStream, keepalive_every: Duration) -> Self {
        Self::of(Kind::Sse(SseBody::new(chunks, keepalive_every, None)))
    }

    /// Like [`Self::sse`], but ends the stream with the `server_shutdown`
    /// error event when `shutdown` cuts open requests off.
    pub(crate) fn sse_until_cut_off(
        chunks: ChunkStream,
        keepalive_every: Duration,
        shutdown: &Shutdown,
    ) -> Self {
        let cut_off = (shutdown.when_cut_off(), shutdown.clone());
        Self::of(Kind::Sse(SseBody::new(
            chunks,
            keepalive_every,
            Some(cut_off),
        )))
    }

    /// Keeps `in_flight` until the body ends or is dropped.
    pub(crate) fn hold(&mut self, in_flight: InFlight) {
        if !self.is_end_stream() {
            self.in_flight = Some(in_flight);
        }
    }

    /// Keeps the request's log line until the body ends or is dropped; a
    /// body with nothing to send lets it go at once.
    pub(crate) fn hold_log(&mut self, log: RequestLog) {
        if !self.is_end_stream() {
            self.log = log;
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let frame = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::Sse(sse) => Pin::new(sse).poll_frame(cx, &this.log),
        };
        // The last frame is on its way: the request is no longer in flight,
        // even if hyper keeps the body a while longer.
        if this.is_end_stream() {
            this.in_flight = None;
            this.log = RequestLog::default();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Sse(sse) => sse.chunks.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            // An exact hint lets hyper send Content-Length instead of chunking.
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Sse(_) => SizeHint::default(),
        }
    }
}

/// A chunk stream written as SSE: one `data: <json>\n\n` frame per chunk the
/// moment it arrives, `data: [DONE]\n\n` after a normal end, one error event
/// (and no `[DONE]`) after an error, and a `: keepalive` comment whenever the
/// upstream has been silent for `keepalive_every`. When the server cuts
/// open streams off at the end of its shutdown timeout, the stream ends with
/// one `server_shutdown` error event instead (and no `[DONE]`).
///
/// It owns the chunk stream and spawns nothing: when the client goes away,
/// hyper drops this body, which drops the stream and so cancels the upstream.
struct SseBody {
    /// `None` once the stream has ended, so the upstream is released at once.
    chunks: Option<ChunkStream>,
    keepalive_every: Duration,
    /// Fires after `keepalive_every` of silence; pushed back on every frame.
    /// One timer per stream, reset in place rather than re-created.
    keepalive: Pin<Box<Sleep>>,
    /// Resolves when the server cuts open streams off; the `Shutdown` counts
    /// the stream as ended by it. `None`: nothing can cut this stream off.
    cut_off: Option<(CutOff, Shutdown)>,
}

impl std::fmt::Debug for SseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseBody")
            .field("ended", &self.chunks.is_none())
            .field("keepalive_every", &self.keepalive_every)
            .field("can_be_cut_off", &self.cut_off.is_some())
            .finish()
    }
}

impl SseBody {
    fn new(
        chunks: ChunkStream,
        keepalive_every: Duration,
        cut_off: Option<(CutOff, Shutdown)>,
    ) -> Self {
        Self {
            chunks: Some(chunks),
            keepalive_every,
            keepalive: Box::pin(tokio::time::sleep(keepalive_every)),
            cut_off,
        }
    }

    fn push_back_keepalive(&mut self) {
        self.keepalive
            .as_mut()
            .reset(Instant::now() + self.keepalive_every);
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
        log: &RequestLog,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some(chunks) = self.chunks.as_mut() else {
            return Poll::Ready(None);
        };
        // Checked first: once the server cuts off, a busy upstream must not
        // keep the stream going.
        if let Some((cut_off, shutdown)) = self.cut_off.as_mut() {
            if cut_off.as_mut().poll(cx).is_ready() {
                shutdown.count_ended();
                self.cut_off = None;
                let event = self.end_with(
                    ApiError::server_shutdown(),
                    &"shutdown timeout expired",
                    log,
                );
                return Poll::Ready(Some(Ok(Frame::data(event))));
            }
        }
        let event = match chunks.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match encode_chunk(&chunk) {
                Ok(event) => event,
                Err(error) => self.end_with(ApiError::encoding_failed(&error), &error, log),
            },
            Poll::Ready(Some(Err(error))) => {
                self.end_with(ApiError::from_provider(&error), &error, log)
            }
            Poll::Ready(None) => {
                self.chunks = None;
                Bytes::from_static(DONE_EVENT)
            }
            Poll::Pending => {
                ready!(self.keepalive.as_mut().poll(cx));
                Bytes::from_static(KEEPALIVE_COMMENT)
            }
        };
        if self.chunks.is_some() {
            self.push_back_keepalive();
        }
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    /// Ends the stream with one error event. The status line is long gone, so
    /// the event is how the client learns the answer is incomplete; there is
    /// no `[DONE]` after it, so it cannot be mistaken for a complete answer.
    /// Dropping the chunk stream here releases the upstream and settles the
    /// request's usage record. The cause goes into the request's one line.
    fn end_with(
        &mut self,
        error: ApiError,
        cause: &dyn std::fmt::Display,
        log: &RequestLog,
    ) -> Bytes {
        self.chunks = None;
        log.error(cause);
        error.to_sse_event()
    }
}

fn encode_chunk(chunk: &Chunk) -> Result<Bytes, serde_json::Error> {
    // Most chunks are a small delta; this usually avoids regrowing.
    let mut event = Vec::with_capacity(256);
    event.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut event, &chunk.0)?;
    event.extend_from_slice(b"\n\n");
    Ok(Bytes::from(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{stream, StreamExt};
    use http_body_util::BodyExt;
    use router_core::ProviderError;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn chunk(value: serde_json::Value) -> Chunk {
        let serde_json::Value::Object(object) = value else {
            panic!("not an object")
        };
        Chunk(object)
    }

    fn content(text: &str) -> Chunk {
        chunk(json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}]}))
    }

    /// Every frame of the body, as text, in order.
    async fn frames(mut body: ResponseBody) -> Vec<String> {
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            frames.push(String::from_utf8(data.to_vec()).unwrap());
        }
        assert!(body.is_end_stream());
        frames
    }

    fn sse(items: Vec<Result<Chunk, ProviderError>>) -> ResponseBody {
        ResponseBody::sse(Box::pin(stream::iter(items)), Duration::from_secs(10))
    }

    #[tokio::test]
    async fn each_chunk_is_its_own_frame_then_done() {
        let body = sse(vec![
            Ok(content("Hel")),
            Ok(content("lo")),
            Ok(chunk(json!({"usage": {"total_tokens": 3}}))),
        ]);
        assert_eq!(
            frames(body).await,
            [
                "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
                "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
                "data: {\"usage\":{\"total_tokens\":3}}\n\n",
                "data: [DONE]\n\n",
            ]
        );
    }

    #[tokio::test]
    async fn an_empty_stream_is_just_done() {
        assert_eq!(frames(sse(vec![])).await, ["data: [DONE]\n\n"]);
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_with_one_event_and_no_done() {
        let body = sse(vec![
            Ok(content("Hel")),
            Err(ProviderError::Truncated {
                detail: "connection reset".into(),
            }),
            Ok(content("never sent")),
        ]);
        let frames = frames(body).await;
        assert_eq!(frames.len(), 2);
        assert_eq!(
            frames[1],
            "data: {\"error\":{\"message\":\"the upstream stream ended early: connection reset\",\
             \"type\":\"server_error\",\"param\":null,\"code\":\"upstream_error\"}}\n\n"
        );
    }

    #[tokio::test]
    async fn field_order_and_unknown_fields_survive() {
        let body = sse(vec![Ok(chunk(
            json!({"z": 1, "a": {"nested": [true, null]}, "provider_specific": "x"}),
        ))]);
        assert_eq!(
            frames(body).await[0],
            "data: {\"z\":1,\"a\":{\"nested\":[true,null]},\"provider_specific\":\"x\"}\n\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_comments_fill_silences_and_reset_on_every_chunk() {
        // Chunks after 25s, then 5s, then 12s of silence; keepalive every 10s.
        let delays = [25, 5, 12];
        let chunks = stream::iter(delays).then(|seconds| async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            Ok(content(&seconds.to_string()))
        });
        let mut body = ResponseBody::sse(Box::pin(chunks), Duration::from_secs(10));
        let started = Instant::now();
        let mut transcript = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            let text = String::from_utf8(data.to_vec()).unwrap();
            let label = if text.starts_with(':') {
                "keepalive".to_owned()
            } else if text == "data: [DONE]\n\n" {
                "done".to_owned()
            } else {
                "chunk".to_owned()
            };
            transcript.push((started.elapsed().as_secs(), label));
        }
        let expected: Vec<(u64, String)> = [
            (10, "keepalive"),
            (20, "keepalive"),
            (25, "chunk"),
            (30, "chunk"),
            (40, "keepalive"),
            (42, "chunk"),
            (42, "done"),
        ]
        .into_iter()
        .map(|(at, label)| (at, label.to_owned()))
        .collect();
        assert_eq!(transcript, expected);
    }

    #[tokio::test]
    async fn dropping_the_body_drops_the_upstream_stream() {
        struct DropFlag(Arc<AtomicBool>);
        impl Drop for DropFlag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = DropFlag(dropped.clone());
        let chunks = stream::iter([Ok(content("a"))])
            .chain(stream::pending())
            .map(move |item| {
                let _keep = &guard;
                item
            });
        let mut body = ResponseBody::sse(Box::pin(chunks), Duration::from_secs(10));
        assert!(body.frame().await.is_some());
        assert!(!dropped.load(Ordering::SeqCst));
        drop(body);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_cut_off_ends_the_stream_with_the_shutdown_event_and_drops_the_upstream() {
        let shutdown = Shutdown::default();
        let chunks = stream::iter([Ok(content("a"))]).chain(stream::pending());
        let mut body =
            ResponseBody::sse_until_cut_off(Box::pin(chunks), Duration::from_secs(10), &shutdown);
        assert!(body.frame().await.is_some());
        shutdown.cut_off();
        let rest = frames(body).await;
        assert_eq!(
            rest,
            [
                "data: {\"error\":{\"message\":\"the server is shutting down\",\
              \"type\":\"server_error\",\"param\":null,\"code\":\"server_shutdown\"}}\n\n"
            ]
        );
        assert_eq!(shutdown.ended(), 1);
    }

    #[tokio::test]
    async fn a_stream_that_ended_before_the_cut_off_is_untouched() {
        let shutdown = Shutdown::default();
        let body = ResponseBody::sse_until_cut_off(
            Box::pin(stream::iter([Ok(content("a"))])),
            Duration::from_secs(10),
            &shutdown,
        );
        let frames = frames(body).await;
        shutdown.cut_off();
        assert_eq!(frames.last().unwrap(), "data: [DONE]\n\n");
        assert_eq!(shutdown.ended(), 0);
    }

    #[tokio::test]
    async fn full_bodies_report_their_length() {
        let body = ResponseBody::full(Bytes::from_static(b"{}"));
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(frames(body).await, ["{}"]);
        let empty = ResponseBody::empty();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }
}
