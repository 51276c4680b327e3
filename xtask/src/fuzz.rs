//! `cargo xtask fuzz [--seconds N]`: each fuzz target for a bounded time.
//!
//! Only stable Rust is assumed, so the targets are not `cargo fuzz` (libFuzzer
//! needs nightly) but integration tests driven by proptest: each replays its
//! checked-in corpus (`fuzz/corpus/<target>/`) and then mutates it. A plain
//! `cargo test` runs them with a few hundred cases; here they run until the
//! time is up, one target after another. A failing input is printed and saved
//! under `target/fuzz-failures/<target>/`.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::metadata::Metadata;
use crate::process;

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 30;
/// Enough cases that the time bound is what stops a target.
const CASES: &str = "1000000000";

struct Target {
    name: &'static str,
    package: &'static str,
    test: &'static str,
}

const TARGETS: &[Target] = &[
    Target {
        name: "sse",
        package: "router-providers",
        test: "fuzz_sse",
    },
    Target {
        name: "request",
        package: "router-core",
        test: "fuzz_request",
    },
    Target {
        name: "config",
        package: "router-core",
        test: "fuzz_config",
    },
];

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let seconds = parse_seconds(args)?;
    let metadata = Metadata::load(root)?;
    let report_dir = metadata.target_directory.join("fuzz-report");
    // A stale report must not pass for this run's.
    if report_dir.exists() {
        std::fs::remove_dir_all(&report_dir)
            .with_context(|| format!("removing {}", report_dir.display()))?;
    }

    let mut summary = Vec::new();
    let mut failed = Vec::new();
    for target in TARGETS {
        println!("\n==> fuzz: {} ({seconds} s)", target.name);
        let started = Instant::now();
        let result = process::run(
            root,
            process::cargo()
                .args(["test", "--package", target.package, "--test", target.test])
                .args(["--", "--nocapture"])
                .env("ROUTER_FUZZ_SECONDS", seconds.to_string())
                .env("ROUTER_FUZZ_CASES", CASES)
                .env("ROUTER_FUZZ_REPORT_DIR", &report_dir),
        );
        let elapsed = started.elapsed().as_secs_f64();
        let cases = read_report(&report_dir, target.name);
        let line = match (&result, cases) {
            (Ok(()), Some((cases, fuzz_seconds))) => format!(
                "ok      {cases:>9} cases in {fuzz_seconds:>5.1} s ({:>6.0}/s), {elapsed:.1} s with the build",
                cases as f64 / fuzz_seconds.max(1e-9)
            ),
            (Ok(()), None) => "ok      (no report written)".to_owned(),
            (Err(_), _) => {
                failed.push(target.name);
                format!("FAILED  after {elapsed:.1} s")
            }
        };
        summary.push((target.name, line));
    }

    println!("\n==> fuzz summary");
    for (name, line) in &summary {
        println!("  {name:<8} {line}");
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (failing inputs are under {})",
            failed.join(", "),
            metadata.target_directory.join("fuzz-failures").display()
        );
    }
    Ok(())
}

fn parse_seconds(args: &[String]) -> Result<u64> {
    match args {
        [] => Ok(DEFAULT_SECONDS),
        [flag, value] if flag == "--seconds" => value
            .parse()
            .ok()
            .filter(|&seconds| seconds > 0)
            .with_context(|| format!("--seconds takes a whole number above 0, not `{value}`")),
        _ => bail!("usage: cargo xtask fuzz [--seconds N]"),
    }
}

/// `<cases> <seconds>` as the harness writes it, if it did.
fn read_report(dir: &Path, target: &str) -> Option<(u64, f64)> {
    let text = std::fs::read_to_string(dir.join(format!("{target}.txt"))).ok()?;
    let mut fields = text.split_whitespace();
    let cases = fields.next()?.parse().ok()?;
    let seconds = fields.next()?.parse().ok()?;
    Some((cases, seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn seconds_default_and_flag() {
        assert_eq!(parse_seconds(&args(&[])).unwrap(), DEFAULT_SECONDS);
        assert_eq!(parse_seconds(&args(&["--seconds", "5"])).unwrap(), 5);
        assert!(parse_seconds(&args(&["--seconds", "0"])).is_err());
        assert!(parse_seconds(&args(&["--seconds", "x"])).is_err());
        assert!(parse_seconds(&args(&["--seconds"])).is_err());
        assert!(parse_seconds(&args(&["--minutes", "5"])).is_err());
    }
}
