//! The project's build system, run as `cargo xtask <command>`.
//!
//! It owns the checks that CI runs (`ci`), the architecture invariants (`tidy`), the
//! OpenAI SDK conformance run (`conformance`), the time-bounded fuzzing run (`fuzz`) and
//! the soak run (`soak`) and the performance harness (`bench`).
//! It shells out to cargo, rustfmt and Python rather than linking them, so it stays a
//! small program with two dependencies.

// xtask is a command-line tool whose whole interface is what it prints: the workspace
// lints that keep library crates quiet do not apply to it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod ci;
mod conformance;
mod fuzz;
mod metadata;
mod process;
mod soak;
mod tidy;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci           fmt check, clippy, tidy, tests, doc tests, conformance (stops at the first failure)
  tidy         check the workspace's architecture invariants
  conformance  run the OpenAI SDK conformance checks (Python openai + Rust async-openai)
  fuzz [--seconds N]
               run each fuzz target (sse, request, config) for N seconds (default 30):
               proptest mutations of fuzz/corpus/<target>/ on stable Rust; failing
               inputs go to target/fuzz-failures/<target>/ (not part of `ci`)
  soak [--minutes N | --seconds S] [--concurrency C] [--release]
               router-server under mixed traffic and faults from loadkit's mock upstream
               for N minutes (default 1): checks ledger rows = requests, no panics, no fd
               growth; reports RSS growth per minute; table in target/soak/summary.md
  bench [--quick] [--reps N] [--peer litellm]
               release router-server (core 0) vs loadkit's mock upstream directly (wrk,
               bench-client and mock on core 1): overhead at 1 connection, throughput at
               32/128/512 connections with peak RSS, open-loop tail at 50 %, streaming time
               to first chunk, slow streams held open, features on vs off; each point N
               times (default 3), median (min-max); table in target/bench/summary.md
               (--quick: 1 s runs, under 2 minutes)
               --peer litellm: also LiteLLM proxy (litellm[proxy]==1.77.7 from PyPI in
               target/bench/litellm-venv, 1 worker, router's core, same mock): scenarios
               1 and 2 (32 connections) for direct, router and LiteLLM; ratio and peak RSS
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&root),
        Some("tidy") => tidy::run(&root),
        Some("conformance") => conformance::run(&root),
        Some("fuzz") => fuzz::run(&root, &args[1..]),
        Some("soak") => soak::run(&root, &args[1..]),
        Some("bench") => bench::run(&root, &args[1..]),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("no command given\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask always lives one level below it, so this does not depend
/// on the directory the command was started from.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), PathBuf::from)
}
