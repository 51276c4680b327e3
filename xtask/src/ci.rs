//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{bench, conformance, process, soak, tidy};

type Step = fn(&Path) -> Result<()>;

const STEPS: &[(&str, Step)] = &[
    ("fmt", fmt),
    ("clippy", clippy),
    ("tidy", tidy::run),
    ("tests", tests),
    ("doc tests", doc_tests),
    ("conformance", conformance::run),
    ("soak", soak),
    ("bench", bench),
];

pub fn run(root: &Path) -> Result<()> {
    let started = Instant::now();
    let mut outcomes: Vec<(&str, Outcome)> = Vec::new();
    let mut failure = None;
    for (name, step) in STEPS {
        if failure.is_some() {
            outcomes.push((name, Outcome::NotRun));
            continue;
        }
        println!("\n==> ci: {name}");
        let step_started = Instant::now();
        let result = step(root);
        let elapsed = step_started.elapsed();
        match result {
            Ok(()) => outcomes.push((name, Outcome::Passed(elapsed))),
            Err(error) => {
                println!("==> ci: {name} FAILED: {error:#}");
                outcomes.push((name, Outcome::Failed(elapsed)));
                failure = Some(name);
            }
        }
    }

    println!("\n==> ci summary");
    for (name, outcome) in &outcomes {
        println!("  {name:<12} {outcome}");
    }
    println!("  {:<12} {}", "total", seconds(started.elapsed()));
    match failure {
        Some(name) => bail!("ci failed at step `{name}`"),
        None => {
            println!("ci: all steps passed");
            Ok(())
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Passed(Duration),
    Failed(Duration),
    NotRun,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passed(elapsed) => write!(f, "ok      {}", seconds(*elapsed)),
            Self::Failed(elapsed) => write!(f, "FAILED  {}", seconds(*elapsed)),
            Self::NotRun => write!(f, "not run"),
        }
    }
}

fn seconds(elapsed: Duration) -> String {
    format!("{:>7.1}s", elapsed.as_secs_f64())
}

fn fmt(root: &Path) -> Result<()> {
    process::run(
        root,
        process::cargo().args(["fmt", "--all", "--", "--check"]),
    )
}

fn clippy(root: &Path) -> Result<()> {
    process::run(
        root,
        process::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )
}

/// nextest when it is installed (parallel, one process per test, clear report); plain
/// `cargo test` otherwise. Doc tests are a separate step because nextest does not run
/// them.
fn tests(root: &Path) -> Result<()> {
    if process::succeeds(process::cargo().args(["nextest", "--version"])) {
        process::run(
            root,
            process::cargo().args(["nextest", "run", "--workspace"]),
        )
    } else {
        println!("cargo-nextest is not installed: using cargo test");
        process::run(root, process::cargo().args(["test", "--workspace"]))
    }
}

fn doc_tests(root: &Path) -> Result<()> {
    process::run(
        root,
        process::cargo().args(["test", "--workspace", "--doc"]),
    )
}

/// A short soak: long enough to see a leaked fd or a missing ledger row, short enough
/// for every CI run.
fn soak(root: &Path) -> Result<()> {
    soak::run(root, &["--seconds".to_owned(), "20".to_owned()])
}

/// The bench's smoke run (`--quick`, under two minutes): no timing is asserted, but it
/// fails when a run had errors, a child crashed or a binary is missing.
fn bench(root: &Path) -> Result<()> {
    bench::run(root, &["--quick".to_owned()])
}
