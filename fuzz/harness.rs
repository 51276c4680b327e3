//! The fuzzing harness shared by the `fuzz_*` tests of several crates
//! (each includes this file with `#[path]`): corpus replay, byte-level
//! mutations, a time- and case-bounded run, shrinking, and saving failures
//! under `target/fuzz-failures/<target>/`.

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
    let budget = Duration::from_secs(env_number("ROUTER_FUZZ_SECONDS").unwrap_or(DEFAULT_SECONDS));
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
