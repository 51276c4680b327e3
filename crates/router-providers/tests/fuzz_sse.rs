//! Fuzz target `sse`: the SSE parser against the checked-in corpus
//! (`fuzz/corpus/sse/`) and against inputs mutated from it.
//!
//! Properties: the parser never panics; whatever the chunking, it yields the
//! same events, the same final `id`/`retry` and the same error; no event is
//! larger than the cap.
//!
//! `cargo test` runs a few hundred cases; `cargo xtask fuzz` runs it for a
//! bounded time (`ROUTER_FUZZ_SECONDS`, `ROUTER_FUZZ_CASES`, `ROUTER_FUZZ_SEED`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use proptest::prelude::*;
use router_providers::sse::{SseError, SseEvent, SseParser};

const TARGET: &str = "sse";
/// Large enough for every corpus event, so the corpus exercises framing.
const LARGE_CAP: usize = 1 << 20;
/// Small enough that mutated inputs often hit the cap.
const SMALL_CAP: usize = 200;

#[test]
fn corpus_replays_cleanly() {
    harness::replay_corpus(TARGET, check);
}

#[test]
fn mutated_corpus_inputs_parse_the_same_under_any_chunking() {
    let corpus = harness::corpus(TARGET);
    let strategy = prop_oneof![
        3 => harness::mutated(corpus, DICTIONARY),
        1 => generated_stream(),
    ];
    harness::fuzz(TARGET, strategy, check);
}

/// Tokens that matter to the parser, for mutations to insert.
const DICTIONARY: &[&[u8]] = &[
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\r\r",
    b"\r\n\r\n",
    b":",
    b": ",
    b"data:",
    b"data: ",
    b"event:",
    b"id:",
    b"id: \0",
    b"retry:",
    b"retry: 18446744073709551616",
    b"\xEF\xBB\xBF",
    b"\xEF\xBB",
    b"[DONE]",
    b"{\"choices\":[]}",
    b"\xff",
];

/// What a parse produced, compared across chunkings.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    events: Vec<SseEvent>,
    error: Option<SseError>,
    last_event_id: Option<String>,
    retry_ms: Option<u64>,
}

fn parse_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, cap: usize) -> Parsed {
    let mut parser = SseParser::new(cap);
    let mut events = Vec::new();
    let mut error = None;
    'feed: for chunk in chunks {
        parser.feed(chunk);
        loop {
            match parser.next_event() {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(failure) => {
                    error = Some(failure);
                    break 'feed;
                }
            }
        }
    }
    Parsed {
        events,
        error,
        last_event_id: parser.last_event_id().map(str::to_owned),
        retry_ms: parser.retry_ms(),
    }
}

/// Cut points derived from the input itself (so a saved input replays with
/// the same cuts): a splitmix sequence seeded with the input's hash.
fn pseudo_random_cuts(input: &[u8]) -> Vec<usize> {
    let mut state = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let count = (next() % 24) as usize;
    let mut cuts: Vec<usize> = (0..count)
        .map(|_| (next() % (input.len() as u64 + 1)) as usize)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn split_at<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts {
        chunks.push(&input[start..cut]);
        start = cut;
    }
    chunks.push(&input[start..]);
    chunks
}

fn check(input: &[u8]) -> Result<(), String> {
    for cap in [LARGE_CAP, SMALL_CAP] {
        let whole = parse_chunks([input], cap);
        if let Some(event) = whole.events.iter().find(|event| event.data.len() > cap) {
            return Err(format!(
                "cap {cap}: an event of {} bytes passed",
                event.data.len()
            ));
        }
        let mut splits: Vec<(String, Vec<&[u8]>)> = vec![(
            "pseudo-random cuts".to_owned(),
            split_at(input, &pseudo_random_cuts(input)),
        )];
        // Byte by byte is the harshest split; on big inputs sizes up to 7
        // cover every alignment of CR/LF pairs and the BOM just as well.
        if input.len() <= 16 * 1024 {
            splits.push(("byte by byte".to_owned(), input.chunks(1).collect()));
        }
        for size in [2, 3, 7, 64, 4096] {
            splits.push((format!("chunks of {size}"), input.chunks(size).collect()));
        }
        // A chunk that ends right after each CR: every CRLF straddles two.
        splits.push((
            "cut after every CR".to_owned(),
            input.split_inclusive(|&byte| byte == b'\r').collect(),
        ));
        for (name, chunks) in splits {
            let split = parse_chunks(chunks, cap);
            if split != whole {
                return Err(format!(
                    "cap {cap}: {name} parsed differently\n  whole: {}\n  split: {}",
                    summary(&whole),
                    summary(&split)
                ));
            }
        }
    }
    Ok(())
}

fn summary(parsed: &Parsed) -> String {
    let events: Vec<String> = parsed
        .events
        .iter()
        .map(|event| {
            format!(
                "{}|{}",
                event.event.as_deref().unwrap_or("-"),
                harness::escaped(&event.data, 80)
            )
        })
        .collect();
    format!(
        "{} events {events:?}, error {:?}, id {:?}, retry {:?}",
        parsed.events.len(),
        parsed.error,
        parsed.last_event_id,
        parsed.retry_ms
    )
}

/// A well-formed stream of events with arbitrary line ends, comments and
/// fields, so the fuzzer also explores valid framing deeply.
fn generated_stream() -> impl Strategy<Value = Vec<u8>> {
    let value = proptest::collection::vec(
        prop_oneof![
            8 => proptest::char::range('a', 'z'),
            1 => Just(':'),
            1 => Just(' '),
            1 => Just('é'),
            1 => Just('\u{feff}'),
            1 => Just('\0'),
        ],
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect::<String>());
    let line = (
        prop_oneof![
            Just(""),
            Just("data"),
            Just("event"),
            Just("id"),
            Just("retry"),
            Just(""),
            Just("x")
        ],
        prop_oneof![Just(""), Just(":"), Just(": ")],
        value,
        prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
    )
        .prop_map(|(field, colon, value, end)| format!("{field}{colon}{value}{end}"));
    (any::<bool>(), proptest::collection::vec(line, 0..40)).prop_map(|(bom, lines)| {
        let mut out = if bom {
            "\u{feff}".to_owned()
        } else {
            String::new()
        };
        out.extend(lines);
        out.into_bytes()
    })
}

#[path = "../../../fuzz/harness.rs"]
mod harness;
