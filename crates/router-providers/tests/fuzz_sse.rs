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

/// The fuzzing harness. The same module is in each `fuzz_*.rs` test (they
/// live in different crates and a test cannot share a module across them);
/// keep the copies identical.
mod harness {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    /// Generated cases per target in a plain `cargo test`.
    const DEFAULT_CASES: u64 = 256;
    /// Upper bound on a plain `cargo test` run of one target.
    const DEFAULT_SECONDS: u64 = 60;
    /// Shrinking a failure stops after this many steps.
    const SHRINK_STEPS: usize = 4096;

    fn env_number(name: &str) -> Option<u64> {
        let value = std::env::var(name).ok()?;
        match value.trim().parse() {
            Ok(number) => Some(number),
            Err(_) => panic!("{name}={value:?} is not a whole number"),
        }
    }

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// `target/` of this build: the test binary is `target/<profile>/deps/<name>`.
    fn target_dir() -> PathBuf {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
            .unwrap_or_else(|| workspace_root().join("target"))
    }

    /// Every file of `fuzz/corpus/<target>/`, by name.
    pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = workspace_root().join("fuzz/corpus").join(target);
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file())
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .filter(|(name, _)| !name.starts_with('.'))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} holds no inputs", dir.display());
        files
    }

    /// An input for a message: escaped, cut after `max` bytes.
    pub fn escaped(input: &[u8], max: usize) -> String {
        let shown = input.get(..max).unwrap_or(input).escape_ascii().to_string();
        if input.len() > max {
            format!("{shown}... ({} bytes in all)", input.len())
        } else {
            shown
        }
    }

    /// Runs `check`, turning a panic into a failure.
    fn outcome(check: &impl Fn(&[u8]) -> Result<(), String>, input: &[u8]) -> Result<(), String> {
        match catch_unwind(AssertUnwindSafe(|| check(input))) {
            Ok(result) => result,
            Err(panic) => Err(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
        }
    }

    /// Saves a failing input where it can be copied into the corpus.
    fn save_failure(target: &str, input: &[u8]) -> PathBuf {
        let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        let dir = target_dir().join("fuzz-failures").join(target);
        let path = dir.join(format!("{hash:016x}"));
        let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
        if let Err(error) = saved {
            eprintln!("could not save {}: {error}", path.display());
        }
        path
    }

    fn failure_report(target: &str, input: &[u8], message: &str) -> String {
        let path = save_failure(target, input);
        format!(
            "fuzz target `{target}` failed: {message}\n  input ({} bytes): \"{}\"\n  saved to {} \
             (copy it into fuzz/corpus/{target}/ once fixed)",
            input.len(),
            escaped(input, 4096),
            path.display()
        )
    }

    /// Checks every corpus file; reports all failures at once.
    pub fn replay_corpus(target: &str, check: impl Fn(&[u8]) -> Result<(), String>) {
        let failures: Vec<String> = corpus(target)
            .iter()
            .filter_map(|(name, input)| {
                outcome(&check, input)
                    .err()
                    .map(|message| format!("{name}: {}", failure_report(target, input, &message)))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    /// One edit of a corpus input. Positions are `Index`es so they shrink
    /// towards the start and fit any length.
    #[derive(Debug, Clone)]
    enum Mutation {
        FlipBit(Index, u8),
        SetByte(Index, u8),
        Insert(Index, Vec<u8>),
        InsertToken(Index, Index),
        Delete(Index, usize),
        Duplicate(Index, usize),
        /// Replaces the tail from a point with the tail of another input.
        Splice(Index, Index, Index),
        Truncate(Index),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let at = any::<Index>();
        prop_oneof![
            (at.clone(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
            (at.clone(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte(at, byte)),
            (at.clone(), proptest::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
            (at.clone(), any::<Index>()).prop_map(|(at, token)| Mutation::InsertToken(at, token)),
            (at.clone(), 1usize..64).prop_map(|(at, len)| Mutation::Delete(at, len)),
            (at.clone(), 1usize..256).prop_map(|(at, len)| Mutation::Duplicate(at, len)),
            (at.clone(), any::<Index>(), any::<Index>())
                .prop_map(|(at, other, from)| Mutation::Splice(at, other, from)),
            at.prop_map(Mutation::Truncate),
        ]
    }

    fn apply(input: &mut Vec<u8>, mutation: &Mutation, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
        let len = input.len();
        match mutation {
            Mutation::FlipBit(at, bit) if len > 0 => input[at.index(len)] ^= 1 << bit,
            Mutation::SetByte(at, byte) if len > 0 => input[at.index(len)] = *byte,
            Mutation::Insert(at, bytes) => {
                let at = at.index(len + 1);
                input.splice(at..at, bytes.iter().copied());
            }
            Mutation::InsertToken(at, token) if !dictionary.is_empty() => {
                let at = at.index(len + 1);
                let token = dictionary[token.index(dictionary.len())];
                input.splice(at..at, token.iter().copied());
            }
            Mutation::Delete(at, count) if len > 0 => {
                let at = at.index(len);
                input.drain(at..(at + count).min(len));
            }
            Mutation::Duplicate(at, count) if len > 0 => {
                let at = at.index(len);
                let copy = input[at..(at + count).min(len)].to_vec();
                input.splice(at..at, copy);
            }
            Mutation::Splice(at, other, from) if !corpus.is_empty() => {
                let other = &corpus[other.index(corpus.len())];
                let from = from.index(other.len() + 1);
                input.truncate(at.index(len + 1));
                input.extend_from_slice(&other[from..]);
            }
            Mutation::Truncate(at) => input.truncate(at.index(len + 1)),
            _ => {}
        }
    }

    /// A corpus input with up to eight mutations applied; shrinks towards
    /// the unmodified input.
    pub fn mutated(
        corpus: Vec<(String, Vec<u8>)>,
        dictionary: &'static [&'static [u8]],
    ) -> impl Strategy<Value = Vec<u8>> {
        let corpus: Vec<Vec<u8>> = corpus.into_iter().map(|(_, input)| input).collect();
        (any::<Index>(), proptest::collection::vec(mutation(), 0..8)).prop_map(
            move |(pick, mutations)| {
                let mut input = corpus[pick.index(corpus.len())].clone();
                for mutation in &mutations {
                    apply(&mut input, mutation, &corpus, dictionary);
                }
                input
            },
        )
    }

    /// Generates inputs until `ROUTER_FUZZ_CASES` were checked or
    /// `ROUTER_FUZZ_SECONDS` have passed. A failure is shrunk, printed and
    /// saved. With `ROUTER_FUZZ_REPORT_DIR` set, writes `<target>.txt` there:
    /// `<cases> <seconds>`.
    pub fn fuzz<S>(target: &str, strategy: S, check: impl Fn(&[u8]) -> Result<(), String>)
    where
        S: Strategy<Value = Vec<u8>>,
    {
        let cases = env_number("ROUTER_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
        let budget =
            Duration::from_secs(env_number("ROUTER_FUZZ_SECONDS").unwrap_or(DEFAULT_SECONDS));
        let seed = env_number("ROUTER_FUZZ_SEED").unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64)
        });
        let seed_bytes: Vec<u8> = seed.to_le_bytes().repeat(4);
        let config = Config {
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(
            config,
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
        );

        let started = Instant::now();
        let mut run = 0u64;
        let mut slowest = (Duration::ZERO, 0usize);
        while run < cases && started.elapsed() < budget {
            let mut tree = strategy
                .new_tree(&mut runner)
                .unwrap_or_else(|reason| panic!("generating an input: {reason}"));
            let input = tree.current();
            run += 1;
            let case_started = Instant::now();
            let result = outcome(&check, &input);
            let took = case_started.elapsed();
            if took > slowest.0 {
                slowest = (took, input.len());
            }
            if let Err(message) = result {
                let (input, message) = shrink(&mut tree, &check, input, message);
                panic!(
                    "{}\n  seed: ROUTER_FUZZ_SEED={seed} (after {run} cases)",
                    failure_report(target, &input, &message)
                );
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "fuzz {target}: {run} generated cases in {seconds:.1} s ({:.0}/s), seed {seed}, \
             slowest case {:.1} ms ({} bytes)",
            run as f64 / seconds.max(1e-9),
            slowest.0.as_secs_f64() * 1e3,
            slowest.1
        );
        if let Ok(dir) = std::env::var("ROUTER_FUZZ_REPORT_DIR") {
            let path = Path::new(&dir).join(format!("{target}.txt"));
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, format!("{run} {seconds:.3}\n")))
                .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        }
    }

    /// proptest's shrinking loop: simplify while the input still fails,
    /// complicate back when it stops failing.
    fn shrink<T: ValueTree<Value = Vec<u8>>>(
        tree: &mut T,
        check: &impl Fn(&[u8]) -> Result<(), String>,
        mut input: Vec<u8>,
        mut message: String,
    ) -> (Vec<u8>, String) {
        let mut failing = true;
        for _ in 0..SHRINK_STEPS {
            let moved = if failing {
                tree.simplify()
            } else {
                tree.complicate()
            };
            if !moved {
                break;
            }
            let candidate = tree.current();
            match outcome(check, &candidate) {
                Err(candidate_message) => {
                    input = candidate;
                    message = candidate_message;
                    failing = true;
                }
                Ok(()) => failing = false,
            }
        }
        (input, message)
    }
}
