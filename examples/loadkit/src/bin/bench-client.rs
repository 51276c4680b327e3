//! `bench-client`: the measurements of `cargo xtask bench` that wrk cannot make.
//!
//! * `ttfb`: streaming requests one after another; per request the time to the first
//!   content chunk and to the end, the events received, and the most content chunks
//!   that arrived in one read (1 means no coalescing).
//! * `hold`: opens `--streams` streams at once and reads them to the end; prints
//!   `all open` on stderr once every stream has its first chunk, so the caller can
//!   sample memory while they are open.
//! * `rate`: open loop at a fixed request rate (non-streamed); latency counted from
//!   each request's scheduled start, so a stall is not hidden by fewer requests.
//!
//! Each prints one JSON summary on stdout. Only loopback URLs are accepted.

// The binary's interface is what it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use loadkit::is_loopback_http_url;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "bench-client",
    about = "Streaming and open-loop measurements for cargo xtask bench"
)]
struct Args {
    /// `http://127.0.0.1:PORT/v1/chat/completions` (loopback only).
    #[arg(long)]
    url: String,
    /// Client key sent as `Authorization: Bearer`.
    #[arg(long)]
    key: Option<String>,
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Sequential streams: time to first chunk, coalescing.
    Ttfb {
        #[arg(long)]
        requests: u32,
        #[arg(long)]
        chunks: u32,
        #[arg(long, default_value_t = 0)]
        gap: u64,
    },
    /// Many concurrent streams held open.
    Hold {
        #[arg(long)]
        streams: u32,
        #[arg(long)]
        chunks: u32,
        #[arg(long)]
        gap: u64,
    },
    /// Open loop at a fixed rate.
    Rate {
        #[arg(long)]
        rps: u32,
        #[arg(long)]
        seconds: u64,
        /// At most this many requests in flight (so at most this many
        /// connections): a request due while all are busy waits its turn,
        /// and the wait counts as latency. Without a cap, a stall makes the
        /// client open a connection per waiting request until the server
        /// runs out of file descriptors.
        #[arg(long, default_value_t = 256)]
        max_in_flight: usize,
    },
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn main() -> ExitCode {
    let args = Args::parse();
    if !is_loopback_http_url(&args.url) {
        eprintln!("bench-client: only http:// loopback URLs are accepted");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench-client: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench-client: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let uri: Uri = args
        .url
        .parse()
        .map_err(|error| format!("bad --url: {error}"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector);
    let target = Target {
        client,
        uri,
        key: args.key,
    };
    match args.command {
        Mode::Ttfb {
            requests,
            chunks,
            gap,
        } => Ok(ttfb(&target, requests, chunks, gap).await),
        Mode::Hold {
            streams,
            chunks,
            gap,
        } => Ok(hold(Arc::new(target), streams, chunks, gap).await),
        Mode::Rate {
            rps,
            seconds,
            max_in_flight,
        } => Ok(rate(Arc::new(target), rps, seconds, max_in_flight).await),
    }
}

struct Target {
    client: HttpClient,
    uri: Uri,
    key: Option<String>,
}

/// What one stream looked like from the client.
#[derive(Debug, Default)]
struct StreamSeen {
    ok: bool,
    first_chunk: Option<Duration>,
    total: Duration,
    events: u64,
    content_events: u64,
    /// The most content events that arrived in one body frame.
    max_content_per_read: u64,
    /// Events whose bytes came in more than one body frame.
    split_events: u64,
}

/// Cuts a body into SSE events (`\n\n` or `\r\n\r\n` ends one) whatever the frames'
/// boundaries: an event is judged only once all of it has arrived.
#[derive(Debug, Default)]
struct EventSplitter {
    pending: Vec<u8>,
}

/// What the events completed by one frame contained.
#[derive(Debug, Default, PartialEq, Eq)]
struct FrameEvents {
    events: u64,
    content: u64,
    done: bool,
    /// Completed events that had begun in an earlier frame.
    split: u64,
}

impl EventSplitter {
    fn push(&mut self, data: &[u8]) -> FrameEvents {
        let mut seen = FrameEvents::default();
        let carried = self.pending.len();
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some((end, next)) = event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + end];
            if start < carried {
                seen.split += 1;
            }
            judge(event, &mut seen);
            start += next;
        }
        self.pending.drain(..start);
        seen
    }
}

/// The length of the first complete event in `bytes` and where the next one starts.
fn event_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = bytes.windows(2).position(|pair| pair == b"\n\n");
    let crlf = bytes.windows(4).position(|quad| quad == b"\r\n\r\n");
    match (lf, crlf) {
        (Some(lf), Some(crlf)) if crlf < lf => Some((crlf, crlf + 4)),
        (Some(lf), _) => Some((lf, lf + 2)),
        (None, Some(crlf)) => Some((crlf, crlf + 4)),
        (None, None) => None,
    }
}

/// Counts one complete event: comments (heartbeats) are not events.
fn judge(event: &[u8], seen: &mut FrameEvents) {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if data.is_empty() {
        return;
    }
    seen.events += 1;
    if data == ["[DONE]"] {
        seen.done = true;
    } else if data.iter().any(|line| line.contains("\"content\":\"w")) {
        seen.content += 1;
    }
}

impl Target {
    fn request(&self, stream: bool, words: &str) -> Request<Full<Bytes>> {
        let body = serde_json::json!({
            "model": "bench",
            "stream": stream,
            "messages": [{"role": "user", "content": format!("Hello {words}")}],
        });
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(key) = &self.key {
            builder = builder.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        builder
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
    }

    /// One streamed request read to its end. `on_first` runs at the first content chunk.
    async fn stream(&self, words: &str, on_first: impl FnOnce()) -> StreamSeen {
        let started = Instant::now();
        let mut seen = StreamSeen::default();
        let Ok(response) = self.client.request(self.request(true, words)).await else {
            return seen;
        };
        let status_ok = response.status().is_success();
        let mut body = response.into_body();
        let mut on_first = Some(on_first);
        let mut done = false;
        let mut splitter = EventSplitter::default();
        let mut broken = false;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                broken = true;
                break;
            };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            let events = splitter.push(data);
            seen.events += events.events;
            seen.content_events += events.content;
            seen.split_events += events.split;
            seen.max_content_per_read = seen.max_content_per_read.max(events.content);
            if events.content > 0 && seen.first_chunk.is_none() {
                seen.first_chunk = Some(started.elapsed());
                if let Some(on_first) = on_first.take() {
                    on_first();
                }
            }
            done |= events.done;
        }
        seen.total = started.elapsed();
        // Bytes after the last complete event mean the stream was cut mid-event.
        seen.ok = status_ok && done && !broken && splitter.pending.is_empty();
        seen
    }
}

fn micros(duration: Duration) -> u64 {
    duration.as_micros() as u64
}

async fn ttfb(target: &Target, requests: u32, chunks: u32, gap: u64) -> serde_json::Value {
    let words = format!("chunks:{chunks} gap:{gap}");
    let mut first = Vec::new();
    let mut total = Vec::new();
    let mut errors = 0;
    let mut max_per_read = 0;
    let mut missing_chunks = 0;
    let mut split_events = 0;
    for _ in 0..requests {
        let seen = target.stream(&words, || ()).await;
        if !seen.ok || seen.content_events != u64::from(chunks) {
            errors += 1;
        }
        missing_chunks += u64::from(chunks).saturating_sub(seen.content_events);
        max_per_read = max_per_read.max(seen.max_content_per_read);
        split_events += seen.split_events;
        if let Some(at) = seen.first_chunk {
            first.push(micros(at));
        }
        total.push(micros(seen.total));
    }
    serde_json::json!({
        "requests": requests,
        "errors": errors,
        "missing_chunks": missing_chunks,
        "max_content_per_read": max_per_read,
        "split_events": split_events,
        "first_chunk_us": percentiles(&mut first),
        "total_us": percentiles(&mut total),
    })
}

async fn hold(target: Arc<Target>, streams: u32, chunks: u32, gap: u64) -> serde_json::Value {
    let words = format!("chunks:{chunks} gap:{gap}");
    let open = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let target = Arc::clone(&target);
        let open = Arc::clone(&open);
        let words = words.clone();
        tasks.push(tokio::spawn(async move {
            target
                .stream(&words, || {
                    if open.fetch_add(1, Ordering::Relaxed) + 1 == u64::from(streams) {
                        eprintln!("all open");
                    }
                })
                .await
        }));
    }
    let mut errors = 0;
    let mut first = Vec::new();
    for task in tasks {
        match task.await {
            Ok(seen) => {
                if !seen.ok || seen.content_events != u64::from(chunks) {
                    errors += 1;
                }
                if let Some(at) = seen.first_chunk {
                    first.push(micros(at));
                }
            }
            Err(_) => errors += 1,
        }
    }
    serde_json::json!({
        "streams": streams,
        "errors": errors,
        "all_opened": open.load(Ordering::Relaxed) == u64::from(streams),
        "seconds": started.elapsed().as_secs_f64(),
        "first_chunk_us": percentiles(&mut first),
    })
}

async fn rate(
    target: Arc<Target>,
    rps: u32,
    seconds: u64,
    max_in_flight: usize,
) -> serde_json::Value {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let interval = Duration::from_secs_f64(1.0 / f64::from(rps.max(1)));
    let count = u64::from(rps) * seconds;
    let started = Instant::now();
    // Pacing runs on its own thread: tokio's timer has a 1 ms resolution,
    // so `sleep_until` would release requests in bursts once per
    // millisecond and charge the wait (up to 1 ms) to the server. A thread
    // sleep wakes within tens of microseconds of the schedule.
    let runtime = tokio::runtime::Handle::current();
    let pacer = std::thread::spawn(move || {
        let mut tasks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for index in 0..count {
            let scheduled = started + interval.mul_f64(index as f64);
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            }
            let target = Arc::clone(&target);
            let in_flight = Arc::clone(&in_flight);
            tasks.push(runtime.spawn(async move {
                let Ok(_turn) = in_flight.acquire_owned().await else {
                    return (false, micros(scheduled.elapsed()));
                };
                let ok = match target
                    .client
                    .request(target.request(false, "chunks:4"))
                    .await
                {
                    Ok(response) => {
                        let status_ok = response.status().is_success();
                        status_ok && response.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                // From the scheduled start: a late send counts as latency.
                (ok, micros(scheduled.elapsed()))
            }));
        }
        tasks
    });
    let Ok(tasks) = tokio::task::spawn_blocking(move || pacer.join())
        .await
        .unwrap_or_else(|_| Ok(Vec::new()))
    else {
        return serde_json::json!({ "error": "the pacing thread panicked" });
    };
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok((ok, latency)) => {
                if !ok {
                    errors += 1;
                }
                latencies.push(latency);
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    serde_json::json!({
        "requests": count,
        "errors": errors,
        "achieved_rps": count as f64 / elapsed,
        "latency_us": percentiles(&mut latencies),
    })
}

/// p50, p99, p99.9 and max (nearest rank).
fn percentiles(values: &mut [u64]) -> serde_json::Value {
    values.sort_unstable();
    let at = |share: f64| -> u64 {
        if values.is_empty() {
            return 0;
        }
        let rank = ((share * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    };
    serde_json::json!({
        "p50": at(0.5),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": values.last().copied().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"w1 \"}}]}\n\n";

    #[test]
    fn an_event_split_anywhere_is_counted_once_when_complete() {
        let body = [CONTENT, CONTENT, b": keepalive\n\n", b"data: [DONE]\n\n"].concat();
        for cut in 0..=body.len() {
            let mut splitter = EventSplitter::default();
            let first = splitter.push(&body[..cut]);
            let second = splitter.push(&body[cut..]);
            assert_eq!(first.content + second.content, 2, "cut at {cut}");
            assert_eq!(first.events + second.events, 3, "cut at {cut}");
            assert!(first.done || second.done, "cut at {cut}");
            assert!(splitter.pending.is_empty());
        }
        let mut splitter = EventSplitter::default();
        let head = splitter.push(&CONTENT[..20]);
        assert_eq!((head.events, head.content), (0, 0));
        let tail = splitter.push(&CONTENT[20..]);
        assert_eq!((tail.content, tail.split), (1, 1));
    }

    #[test]
    fn crlf_events_and_a_cut_tail() {
        let mut splitter = EventSplitter::default();
        let seen = splitter.push(b"data: {\"content\":\"w0\"}\r\n\r\ndata: [DONE]\r\n\r\ndata: {");
        assert_eq!((seen.events, seen.content, seen.done), (2, 1, true));
        assert!(!splitter.pending.is_empty());
    }
}
