//! What the incremental SSE parser costs per byte of an upstream stream.
//!
//! The input is a realistic OpenAI chat stream: 200 `data: {...}\n\n` events
//! of 210 bytes (`chat.completion.chunk`s carrying one word each; 41 KiB) and
//! `data: [DONE]\n\n`. `SseParser` (8 MiB cap, the default) takes it:
//! - `stream_whole`: in one `feed`, then every event drained;
//! - `stream_tcp_1460`: in 1460-byte pieces (one TCP segment), draining
//!   after each, so lines and events straddle the pieces;
//! - `stream_per_event`: one event per `feed`, as a chatty upstream that
//!   flushes each event sends them;
//! - `large_event_whole` / `large_event_tcp_1460`: one event with 64 KiB of
//!   data (a long tool-call argument or a whole answer in one event).
//!
//! Every benchmark reports bytes/s, so results read as ratios to the
//! baselines over the same bytes:
//! - `baseline_memchr_*`: `memchr2(b'\n', b'\r')` over the bytes, counting
//!   line ends (the floor of any line scanner: the parser makes this very
//!   scan, once per byte);
//! - `baseline_json_chunk`: `serde_json::from_slice` of one chunk into a
//!   JSON object, what the adapter does with each event's data afterwards.
//!
//! Run with `cargo bench -p router-providers --bench sse`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;

use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use router_core::JsonObject;
use router_providers::sse::SseParser;

fn main() {
    divan::main();
}

/// The default `server.max_sse_event_bytes`.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;
const EVENTS: usize = 200;
const TCP_SEGMENT: usize = 1460;
const LARGE_DATA: usize = 64 * 1024;

/// The JSON of chunk `i`: 202 bytes, as OpenAI sends them (no logprobs).
fn chunk_json(i: usize) -> String {
    format!(
        r#"{{"id":"chatcmpl-AbC123dEf456GhI789jKl","object":"chat.completion.chunk","created":1732540000,"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"delta":{{"content":" word{i:03}"}},"finish_reason":null}}]}}"#
    )
}

/// The stream, one `Vec` per event (the last is `[DONE]`).
static EVENTS_BYTES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let mut events: Vec<Vec<u8>> = (0..EVENTS)
        .map(|i| format!("data: {}\n\n", chunk_json(i)).into_bytes())
        .collect();
    events.push(b"data: [DONE]\n\n".to_vec());
    events
});

/// The whole stream in one buffer.
static STREAM: LazyLock<Vec<u8>> = LazyLock::new(|| EVENTS_BYTES.concat());

/// One event with 64 KiB of data (a JSON string, no line ends inside).
static LARGE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let filler = "x".repeat(LARGE_DATA - 2);
    format!("data: \"{filler}\"\n\n").into_bytes()
});

fn bytes(input: &[u8]) -> BytesCount {
    BytesCount::new(input.len())
}

/// Drains every complete event, returning how many there were.
fn drain(parser: &mut SseParser) -> usize {
    let mut events = 0;
    while let Some(event) = parser.next_event().unwrap() {
        black_box(&event);
        events += 1;
    }
    events
}

fn parse_in_pieces(input: &[u8], piece: usize) -> usize {
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let mut events = 0;
    for part in input.chunks(piece) {
        parser.feed(black_box(part));
        events += drain(&mut parser);
    }
    events
}

#[divan::bench]
fn stream_whole(bencher: Bencher) {
    let input = STREAM.as_slice();
    assert_eq!(parse_in_pieces(input, input.len()), EVENTS + 1);
    bencher
        .counter(bytes(input))
        .bench(|| parse_in_pieces(input, input.len()));
}

#[divan::bench]
fn stream_tcp_1460(bencher: Bencher) {
    let input = STREAM.as_slice();
    assert_eq!(parse_in_pieces(input, TCP_SEGMENT), EVENTS + 1);
    bencher
        .counter(bytes(input))
        .bench(|| parse_in_pieces(input, TCP_SEGMENT));
}

#[divan::bench]
fn stream_per_event(bencher: Bencher) {
    let events = EVENTS_BYTES.as_slice();
    let parse = || {
        let mut parser = SseParser::new(MAX_EVENT_BYTES);
        let mut count = 0;
        for event in events {
            parser.feed(black_box(event));
            count += drain(&mut parser);
        }
        count
    };
    assert_eq!(parse(), EVENTS + 1);
    bencher.counter(bytes(&STREAM)).bench(parse);
}

#[divan::bench]
fn large_event_whole(bencher: Bencher) {
    let input = LARGE.as_slice();
    assert_eq!(parse_in_pieces(input, input.len()), 1);
    bencher
        .counter(bytes(input))
        .bench(|| parse_in_pieces(input, input.len()));
}

#[divan::bench]
fn large_event_tcp_1460(bencher: Bencher) {
    let input = LARGE.as_slice();
    assert_eq!(parse_in_pieces(input, TCP_SEGMENT), 1);
    bencher
        .counter(bytes(input))
        .bench(|| parse_in_pieces(input, TCP_SEGMENT));
}

fn line_ends(input: &[u8]) -> usize {
    memchr::memchr2_iter(b'\n', b'\r', black_box(input)).count()
}

#[divan::bench]
fn baseline_memchr_stream(bencher: Bencher) {
    let input = STREAM.as_slice();
    assert_eq!(line_ends(input), 2 * (EVENTS + 1));
    bencher.counter(bytes(input)).bench(|| line_ends(input));
}

#[divan::bench]
fn baseline_memchr_large(bencher: Bencher) {
    let input = LARGE.as_slice();
    assert_eq!(line_ends(input), 2);
    bencher.counter(bytes(input)).bench(|| line_ends(input));
}

#[divan::bench]
fn baseline_json_chunk(bencher: Bencher) {
    let chunk = chunk_json(0).into_bytes();
    bencher
        .counter(bytes(&chunk))
        .bench(|| serde_json::from_slice::<JsonObject>(black_box(&chunk)).unwrap());
}
