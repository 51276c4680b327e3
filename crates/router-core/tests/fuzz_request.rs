//! Fuzz target `request`: the chat completion body parser against the
//! checked-in corpus (`fuzz/corpus/request/`), against inputs mutated from it
//! and against generated JSON.
//!
//! Properties: `request::parse` never panics; it returns a request whose
//! `model` and `stream` agree with the body, or an `InvalidBody` /
//! `InvalidField` error with a non-empty, short message (a huge value is
//! never echoed whole).
//!
//! `cargo test` runs a few hundred cases; `cargo xtask fuzz` runs it for a
//! bounded time (`ROUTER_FUZZ_SECONDS`, `ROUTER_FUZZ_CASES`, `ROUTER_FUZZ_SEED`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use proptest::prelude::*;
use router_core::request;
use router_core::ChatError;
use serde_json::{Map, Value};

const TARGET: &str = "request";
/// The longest error message that is still "short": our messages name a
/// field and a type, serde_json's name a line and column.
const MAX_MESSAGE_BYTES: usize = 1024;

#[test]
fn corpus_replays_cleanly() {
    harness::replay_corpus(TARGET, check);
}

#[test]
fn mutated_and_generated_bodies_parse_or_fail_cleanly() {
    let corpus = harness::corpus(TARGET);
    let strategy = prop_oneof![
        3 => harness::mutated(corpus, DICTIONARY),
        2 => generated_body(),
        1 => deeply_nested(),
    ];
    harness::fuzz(TARGET, strategy, check);
}

/// JSON fragments and the field names the validator knows.
const DICTIONARY: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"-0",
    b"1e999",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\"model\":",
    b"\"messages\":",
    b"\"role\":",
    b"\"content\":",
    b"\"stream\":true,",
    b"\"n\":0,",
    b"\"stop\":[],",
    b"\"response_format\":{\"type\":\"text\"},",
    b"\"reasoning_effort\":",
    b"\"logit_bias\":{},",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
];

fn check(input: &[u8]) -> Result<(), String> {
    match request::parse(input) {
        Ok(parsed) => {
            let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(input) else {
                return Err("accepted a body that is not a JSON object".to_owned());
            };
            if parsed.model.is_empty() {
                return Err("accepted an empty model".to_owned());
            }
            if body.get("model") != Some(&Value::String(parsed.model.clone())) {
                return Err(format!("model {:?} is not the body's", parsed.model));
            }
            if parsed.stream != (body.get("stream") == Some(&Value::Bool(true))) {
                return Err(format!("stream {} is not the body's", parsed.stream));
            }
            if !body.get("messages").is_some_and(Value::is_array) {
                return Err("accepted a body without a messages array".to_owned());
            }
            if parsed.body.len() != body.len() {
                return Err("fields were lost or invented".to_owned());
            }
            Ok(())
        }
        Err(ChatError::InvalidBody { detail }) => short_message("InvalidBody detail", &detail),
        Err(ChatError::InvalidField { message, param }) => {
            if param.as_deref().is_none_or(str::is_empty) {
                return Err(format!("InvalidField without a param: {message:?}"));
            }
            short_message("InvalidField message", &message)
        }
        Err(other) => Err(format!("unexpected error kind: {other:?}")),
    }
}

fn short_message(what: &str, message: &str) -> Result<(), String> {
    if message.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "{what} is {} bytes long: {}",
            message.len(),
            harness::escaped(message.as_bytes(), 200)
        ));
    }
    Ok(())
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("system"),
            Just("tool"),
            Just("text"),
            Just("json_object"),
            Just("high"),
            Just(""),
        ]
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        (1usize..2000).prop_map(|len| Value::String("x".repeat(len))),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Mostly the fields the validator knows, sometimes anything.
fn field_name() -> impl Strategy<Value = String> {
    const KNOWN: &[&str] = &[
        "model",
        "messages",
        "role",
        "content",
        "type",
        "stream",
        "seed",
        "stop",
        "top_k",
        "temperature",
        "n",
        "best_of",
        "max_tokens",
        "logit_bias",
        "stop_token_ids",
        "reasoning_effort",
        "response_format",
        "stream_options",
        "tools",
        "metadata",
    ];
    prop_oneof![
        4 => proptest::sample::select(KNOWN).prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ]
}

/// A body shaped like a request: an object with (usually) a model and
/// messages, and known fields holding any values.
fn generated_body() -> impl Strategy<Value = Vec<u8>> {
    let message = proptest::collection::vec((field_name(), json_value()), 0..4)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()));
    (
        proptest::option::weighted(0.9, json_value()),
        proptest::option::weighted(0.9, proptest::collection::vec(message, 0..4)),
        proptest::collection::vec((field_name(), json_value()), 0..6),
        any::<bool>(),
    )
        .prop_map(|(model, messages, fields, pretty)| {
            let mut body = Map::new();
            if let Some(model) = model {
                body.insert("model".to_owned(), model);
            }
            if let Some(messages) = messages {
                body.insert("messages".to_owned(), Value::Array(messages));
            }
            body.extend(fields);
            let body = Value::Object(body);
            if pretty {
                serde_json::to_vec_pretty(&body).unwrap()
            } else {
                serde_json::to_vec(&body).unwrap()
            }
        })
}

/// Nesting around and past serde_json's recursion limit, inside a field or
/// at the top, closed or not.
fn deeply_nested() -> impl Strategy<Value = Vec<u8>> {
    (1usize..400, any::<bool>(), any::<bool>()).prop_map(|(depth, in_field, closed)| {
        let mut out = Vec::new();
        if in_field {
            out.extend_from_slice(br#"{"model":"m","messages":[],"metadata":"#);
        }
        for level in 0..depth {
            out.extend_from_slice(if level % 2 == 0 { b"[" } else { b"{\"a\":" });
        }
        out.extend_from_slice(b"1");
        if closed {
            for level in (0..depth).rev() {
                out.push(if level % 2 == 0 { b']' } else { b'}' });
            }
            if in_field {
                out.push(b'}');
            }
        }
        out
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
