//! The stream of chunks read from an upstream's `text/event-stream` body,
//! shared by the adapters: the body, the SSE parser and the attempt's time
//! limits live here, and an [`EventDecoder`] of each adapter says what one
//! event means (OpenAI's are chunks as they are; Anthropic's are translated,
//! one event giving zero, one or several chunks).
//!
//! Holding the body is holding the upstream request: dropping the stream (the
//! client went away) drops the body, which closes the HTTP/1.1 connection or
//! resets the HTTP/2 stream, so the upstream stops generating.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use router_core::{Chunk, ProviderError};
use tokio::time::{Instant, Sleep};

use crate::sse::{SseError, SseEvent, SseParser};

/// After the end marker, how long and how much we keep reading to see the
/// body's end (which lets an HTTP/1.1 connection go back to the pool instead
/// of being closed). Upstreams end the body right after it, so this is
/// generous.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
const DRAIN_MAX_BYTES: usize = 64 * 1024;

/// What the stream does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// The upstream's end marker: the chunks already produced go out, then
    /// the stream ends.
    Done,
}

/// Turns one vendor's events into chunks.
pub(crate) trait EventDecoder: Send + Unpin + 'static {
    /// Decodes `event`, pushing the chunks it produces onto `out`. An `Err`
    /// ends the stream after the chunks already pushed.
    fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut VecDeque<Chunk>,
    ) -> Result<Flow, ProviderError>;

    /// The `Truncated` detail when the body ends before the end marker.
    fn early_end(&self) -> &'static str;
}

/// How the stream ends once its pending chunks are out.
#[derive(Debug)]
enum Ending {
    Done,
    Failed(ProviderError),
}

/// The chunks of one upstream stream, decoded as the body frames arrive.
pub(crate) struct EventStream<D> {
    /// `None` once the stream ended, by its end marker, an error or the deadline.
    body: Option<Incoming>,
    parser: SseParser,
    decoder: D,
    /// Chunks decoded but not yet handed out: one event may give several.
    pending: VecDeque<Chunk>,
    /// Set by the decoder; acted on once `pending` is empty.
    ending: Option<Ending>,
    /// The end of the attempt's `total` timeout. Boxed because `Sleep` is
    /// not `Unpin`; one allocation per stream.
    deadline: Pin<Box<Sleep>>,
    total_timeout: Duration,
    /// When the silence since the last body frame becomes too long; moved
    /// forward on every frame (any bytes count, SSE comments and vendor
    /// pings included: an upstream that sends them is alive). Boxed like
    /// `deadline`.
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
}

impl<D: EventDecoder> EventStream<D> {
    pub(crate) fn new(
        body: Incoming,
        max_event_bytes: usize,
        deadline: Instant,
        total_timeout: Duration,
        idle_timeout: Duration,
        decoder: D,
    ) -> Self {
        Self {
            body: Some(body),
            parser: SseParser::new(max_event_bytes),
            decoder,
            pending: VecDeque::new(),
            ending: None,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            total_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
        }
    }

    /// Ends the stream with an error: yields it once, then `None`.
    fn fail(&mut self, error: ProviderError) -> Poll<Option<Result<Chunk, ProviderError>>> {
        self.body = None;
        Poll::Ready(Some(Err(error)))
    }

    /// After the end marker the body should end at once. Reading that end
    /// lets an HTTP/1.1 connection go back to the pool; dropping the body
    /// unread would close it. So if the end is not already there, a small
    /// task waits for it, bounded in time and bytes.
    fn finish_after_done(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                let mut seen = 0usize;
                while let Some(Ok(frame)) = body.frame().await {
                    seen += frame.data_ref().map_or(0, Bytes::len);
                    if seen > DRAIN_MAX_BYTES {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
        });
    }
}

impl<D: EventDecoder> Stream for EventStream<D> {
    type Item = Result<Chunk, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            match this.ending.take() {
                Some(Ending::Done) => {
                    this.finish_after_done();
                    return Poll::Ready(None);
                }
                Some(Ending::Failed(error)) => return this.fail(error),
                None => {}
            }
            if this.body.is_none() {
                return Poll::Ready(None);
            }
            // Events already received go out before we wait for more bytes.
            match this.parser.next_event() {
                Ok(Some(event)) => {
                    match this.decoder.decode(&event, &mut this.pending) {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Done) => this.ending = Some(Ending::Done),
                        Err(error) => this.ending = Some(Ending::Failed(error)),
                    }
                    continue;
                }
                Ok(None) => {}
                Err(SseError::EventTooLarge { limit }) => {
                    return this.fail(ProviderError::InvalidResponse {
                        detail: format!("a stream event is larger than {limit} bytes"),
                    })
                }
            }
            if this.deadline.as_mut().poll(cx).is_ready() {
                let after = this.total_timeout;
                return this.fail(ProviderError::Timeout { after });
            }
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    // Only checked when nothing is waiting: a frame already
                    // received is not silence, however late it is read.
                    if this.idle.as_mut().poll(cx).is_ready() {
                        let after = this.idle_timeout;
                        return this.fail(ProviderError::Timeout { after });
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let next_idle = Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(next_idle);
                    // Trailers carry nothing we use.
                    if let Some(data) = frame.data_ref() {
                        this.parser.feed(data);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    return this.fail(ProviderError::Truncated {
                        detail: format!("reading the stream failed: {error}"),
                    })
                }
                Poll::Ready(None) => {
                    let detail = this.decoder.early_end().to_owned();
                    return this.fail(ProviderError::Truncated { detail });
                }
            }
        }
    }
}

/// The stream's parts may be inspected, never the body.
impl<D> std::fmt::Debug for EventStream<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("pending", &self.pending.len())
            .field("ended", &self.body.is_none())
            .finish_non_exhaustive()
    }
}
