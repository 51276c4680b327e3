//! `cargo xtask bench [--quick] [--reps N]`: the performance harness.
//!
//! It builds router-server, `loadkit` and router-limits' `admission-latency` example in
//! release mode, starts loadkit's
//! `mock-upstream` and two routers in front of it (one with every feature that costs
//! something per request configured — key and model limits, a budget, prices, the
//! usage ledger, the metrics — and one with none of them but authentication), and measures each point against the router and against the
//! mock directly in the same run, interleaved, so both see the same machine state.
//! Scenarios 1, 2 (at 32 connections), 3 and 4 also measure loadkit's `null-proxy` on
//! the router's core: a bare forwarding proxy, so the table can tell what the core
//! split and an extra hop cost from what the router itself adds.
//!
//! With two cores or more the router runs on core 0 and the load generator and the
//! mock on core 1 (`taskset`), so the router's numbers are not its own load's. The
//! load generator is `wrk` (closed loop, one thread) with a Lua script for the POST
//! body; its `done` hook prints the percentiles as one JSON line.
//!
//! Scenarios: 1. overhead (one connection: added p50/p99 over direct); 2. throughput
//! at 32, 128 and 512 connections (requests/s, error rate, the router's peak RSS);
//! 3. tail latency in open loop at 50 % of the router's maximum; 4. streaming with 10
//! and 200 chunks, with and without gaps (added time to first chunk, coalescing,
//! errors); 5. many slow streams held open on a fresh router (RSS per thousand
//! streams, upstream connections opened); 6. features on versus off (the ratio); 8.
//! shared limits: admission latency through Redis versus memory (router-limits'
//! `admission-latency` example against a throwaway redis-server, which the bench
//! needs installed), and the features-on router with `limits.backend: redis` versus
//! memory limits. Scenarios 3 to 5 use loadkit's `bench-client`. Every point is repeated (3 times
//! by default) and reported as median (min–max). The table, with the machine, the
//! versions and the core split, goes to stdout and `target/bench/summary.md`. Every
//! child is killed when this returns. The bench fails (after writing the table) when
//! any run of ours had errors or missing chunks, or a child exited.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::metadata::Metadata;
use crate::process;
use crate::soak::{http_get, spawn_logged, wait_for_address, Guarded};

const CLIENT_KEY: &str = "sk-bench-client";
/// wrk's hook prints this before its JSON line.
const RESULT_PREFIX: &str = "BENCH ";
/// A point passes when fewer than this share of its requests failed.
const MAX_ERROR_SHARE: f64 = 0.001;
const THROUGHPUT_CONNECTIONS: [u32; 3] = [32, 128, 512];
/// Connections for the features-on/off comparison: enough to saturate the router.
const FEATURES_CONNECTIONS: u32 = 128;
/// The request every scenario sends: a plain answer of four words.
const CHAT_BODY: &str =
    r#"{"model":"bench","messages":[{"role":"user","content":"Hello there chunks:4"}]}"#;

mod litellm;
mod shared_limits;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    quick: bool,
    reps: usize,
    /// `--peer litellm`: scenarios 1 and 2 (32 connections) against LiteLLM proxy too.
    litellm: bool,
}

impl Options {
    /// Seconds of one wrk run in `scenario`.
    fn seconds(&self, scenario: Scenario) -> u64 {
        match (self.quick, scenario) {
            (true, _) => 1,
            (false, Scenario::Overhead) => 15,
            (false, Scenario::Throughput | Scenario::Features | Scenario::Tail) => 10,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Overhead,
    Throughput,
    Tail,
    Features,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options {
        quick: false,
        reps: 3,
        litellm: false,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--quick" => options.quick = true,
            "--reps" => {
                let value = rest.next().context("--reps needs a value")?;
                options.reps = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| (1..=20).contains(&n))
                    .with_context(|| format!("--reps takes 1 to 20, not `{value}`"))?;
            }
            "--peer" => match rest.next().map(String::as_str) {
                Some("litellm") => options.litellm = true,
                other => bail!("--peer takes `litellm`, not {other:?}"),
            },
            other => {
                bail!("unknown argument `{other}`\nusage: cargo xtask bench [--quick] [--reps N] [--peer litellm]")
            }
        }
    }
    Ok(options)
}

/// Which cores the router and the load side run on, or none when the machine has a
/// single core or no `taskset`.
#[derive(Debug, Clone)]
struct Pinning {
    router: Option<&'static str>,
    load: Option<&'static str>,
}

impl Pinning {
    fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let taskset = process::succeeds(Command::new("taskset").arg("--version"));
        if cores >= 2 && taskset {
            Self {
                router: Some("0"),
                load: Some("1"),
            }
        } else {
            Self {
                router: None,
                load: None,
            }
        }
    }

    fn describe(&self) -> String {
        match (self.router, self.load) {
            (Some(router), Some(load)) => format!(
                "router-server on core {router}; wrk and mock-upstream (1 thread each) on core {load}"
            ),
            _ => "not pinned (fewer than 2 cores or no taskset): numbers mix router and load"
                .to_owned(),
        }
    }

    /// `program` started under `taskset -c CORE` when pinning, else directly. The pid
    /// is the program's own: taskset execs it.
    fn command(core: Option<&str>, program: &Path) -> Command {
        match core {
            Some(core) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(core).arg(program);
                command
            }
            None => Command::new(program),
        }
    }
}

/// One wrk run's result.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    requests: u64,
    errors: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn error_share(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Scenario 1, one repetition: the mock directly, the null proxy, the router.
struct Overhead {
    direct: Run,
    null: Run,
    router: Run,
}

/// Scenario 2 at one connection count: the runs against the mock and the router,
/// the router's peak RSS (MiB) during each router run, and the null proxy's runs at
/// [`NULL_CONNECTIONS`] only.
struct ThroughputPoint {
    connections: u32,
    direct: Vec<Run>,
    null: Vec<Run>,
    router: Vec<Run>,
    peaks: Vec<f64>,
}

/// The connection count of scenario 2 at which the null proxy is measured too.
const NULL_CONNECTIONS: u32 = 32;

/// Scenario 7, `--peer litellm`: runs as [direct, router, LiteLLM], interleaved.
struct PeerRuns {
    /// Scenario 1's shape: one connection.
    overhead: Vec<[Run; 3]>,
    /// Scenario 2's shape at [`PEER_CONNECTIONS`].
    throughput: Vec<[Run; 3]>,
    router_peaks: Vec<f64>,
    litellm_peaks: Vec<f64>,
    litellm_idle_rss: u64,
}

/// Connections for the throughput comparison with LiteLLM.
const PEER_CONNECTIONS: u32 = 32;
/// The issue's target: the router's throughput at least this many times LiteLLM's.
const PEER_TARGET_RATIO: f64 = 40.0;

/// Scenario 4 at one shape: (direct, router) and (null proxy, router) summaries of
/// `bench-client ttfb`, one of each per repetition.
struct StreamPoint {
    chunks: u32,
    gap: u32,
    requests: u32,
    runs: Vec<(serde_json::Value, serde_json::Value)>,
    null_runs: Vec<(serde_json::Value, serde_json::Value)>,
}

/// Scenario 5, one round of held streams through the router.
struct HoldRound {
    streams: u32,
    result: serde_json::Value,
    rss_before: u64,
    peak: u64,
    upstream_connections: f64,
}

/// Connections the mock accepted so far (NaN when `/stats` cannot be read).
fn mock_connections(mock_addr: &str) -> f64 {
    http_get(mock_addr, "/stats", None)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .map_or(f64::NAN, |value| field(&value, "/connections"))
}

/// The router's best median rate among connection counts with under 0.1 % errors.
fn best_rate(points: &[ThroughputPoint]) -> Option<(u32, f64)> {
    let mut best: Option<(u32, f64)> = None;
    for point in points {
        let rate = Spread::of(&point.router.iter().map(Run::rate).collect::<Vec<_>>()).median;
        if point
            .router
            .iter()
            .all(|run| run.error_share() < MAX_ERROR_SHARE)
            && best.is_none_or(|(_, best)| rate > best)
        {
            best = Some((point.connections, rate));
        }
    }
    best
}

/// Median, min and max of repeated measurements.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return Self {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }

    /// `median (min–max)` with `decimals` digits and `unit`.
    fn show(&self, decimals: usize, unit: &str) -> String {
        format!(
            "{:.decimals$}{unit} ({:.decimals$}–{:.decimals$})",
            self.median, self.min, self.max
        )
    }
}

/// Samples a process's VmRSS every 20 ms and keeps the highest value since the last
/// `take_peak`.
struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pid: u32,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let peak_kib = Arc::clone(&peak_kib);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_kib(pid) {
                        peak_kib.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            peak_kib,
            stop,
            thread: Some(thread),
            pid,
        }
    }

    /// The peak since the last call; the next window starts at the current RSS.
    fn take_peak(&self) -> u64 {
        let now = rss_kib(self.pid).unwrap_or(0);
        self.peak_kib.swap(now, Ordering::Relaxed).max(now)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// VmRSS of `pid` in KiB, or `None` once it is gone.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Where the load goes.
#[derive(Debug, Clone)]
struct Target {
    label: &'static str,
    url: String,
    auth: bool,
}

struct Bench {
    bin_dir: PathBuf,
    pinning: Pinning,
    run_dir: PathBuf,
    /// Every wrk run, for the raw log.
    log: Vec<String>,
    /// Runs that went wrong (errors where none are expected, missing chunks): the bench
    /// writes its summary, then fails with this list.
    failures: Vec<String>,
}

impl Bench {
    /// Records a failure unless `target` is a peer whose errors are only reported.
    fn expect_clean(&mut self, target: &Target, what: &str, problem: Option<String>) {
        if let Some(problem) = problem.filter(|_| target.label != "litellm") {
            let line = format!("{} {what}: {problem}", target.label);
            println!("bench:   FAILURE {line}");
            self.failures.push(line);
        }
    }
}

impl Bench {
    /// One wrk run of `seconds` with `connections` against `target`.
    fn wrk(&mut self, target: &Target, connections: u32, seconds: u64) -> Result<Run> {
        let script = self.run_dir.join(format!("{}.lua", target.label));
        std::fs::write(&script, lua_script(target.auth))
            .with_context(|| format!("writing {}", script.display()))?;
        let mut command = Pinning::command(self.pinning.load, Path::new("wrk"));
        command
            .args(["-t1", "-c", &connections.to_string()])
            .args(["-d", &format!("{seconds}s"), "--timeout", "10s", "-s"])
            .arg(&script)
            .arg(&target.url)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        let output = command.output().context("starting wrk")?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!("wrk failed ({}): {text}", output.status);
        }
        let run = parse_wrk(&text)
            .with_context(|| format!("wrk printed no {RESULT_PREFIX}line:\n{text}"))?;
        let line = format!(
            "{} c={connections} {seconds}s: {:.0} req/s, {} errors / {}, p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
            target.label,
            run.rate(),
            run.errors,
            run.requests,
            run.p50_us,
            run.p99_us,
            run.p999_us
        );
        println!("bench:   {line}");
        self.log.push(line);
        let problem = if run.requests == 0 {
            Some("no request completed".to_owned())
        } else if run.errors > 0 {
            Some(format!(
                "{} errors of {} requests",
                run.errors, run.requests
            ))
        } else {
            None
        };
        self.expect_clean(target, &format!("wrk c={connections}"), problem);
        Ok(run)
    }
}

impl Bench {
    /// One `bench-client` run against `target`; its JSON summary.
    fn client(&mut self, target: &Target, mode: &[String]) -> Result<serde_json::Value> {
        let mut command = Pinning::command(self.pinning.load, &self.bin_dir.join("bench-client"));
        command.arg("--url").arg(&target.url);
        if target.auth {
            command.args(["--key", CLIENT_KEY]);
        }
        command
            .args(mode)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        let output = command.output().context("starting bench-client")?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!("bench-client failed ({}): {text}", output.status);
        }
        let value: serde_json::Value = serde_json::from_str(text.trim())
            .with_context(|| format!("bench-client printed no JSON: {text}"))?;
        let line = format!("{} {}: {value}", target.label, mode.join(" "));
        println!("bench:   {line}");
        self.log.push(line);
        let problem = client_problem(&value);
        self.expect_clean(target, &mode.join(" "), problem);
        Ok(value)
    }
}

/// What is wrong with a bench-client summary: errors, missing chunks, streams that
/// were never all open at once.
fn client_problem(value: &serde_json::Value) -> Option<String> {
    let count = |pointer: &str| value.pointer(pointer).and_then(serde_json::Value::as_u64);
    let mut problems = Vec::new();
    match count("/errors") {
        Some(0) => {}
        Some(errors) => problems.push(format!("{errors} errors")),
        None => problems.push("no error count in the summary".to_owned()),
    }
    if let Some(missing @ 1..) = count("/missing_chunks") {
        problems.push(format!("{missing} missing chunks"));
    }
    if value.get("all_opened") == Some(&serde_json::Value::Bool(false)) {
        problems.push("the streams were not all open at once".to_owned());
    }
    (!problems.is_empty()).then(|| problems.join(", "))
}

/// A number inside a bench-client summary (a JSON pointer), NaN when absent.
fn field(value: &serde_json::Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|item| (*item).to_owned()).collect()
}

/// The wrk script: a POST of `CHAT_BODY`, and a `done` hook that prints the summary
/// as one JSON line (latencies in microseconds, wrk's unit).
fn lua_script(auth: bool) -> String {
    let auth = if auth {
        format!("wrk.headers[\"Authorization\"] = \"Bearer {CLIENT_KEY}\"\n")
    } else {
        String::new()
    };
    format!(
        "-- Written by `cargo xtask bench`.\n\
         wrk.method = \"POST\"\n\
         wrk.body = '{CHAT_BODY}'\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         {auth}\
         done = function(summary, latency, requests)\n\
         \x20 local e = summary.errors\n\
         \x20 io.write(string.format('{RESULT_PREFIX}{{\"requests\":%d,\"duration_us\":%d,\"errors\":%d,\"p50\":%d,\"p99\":%d,\"p999\":%d}}\\n',\n\
         \x20   summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,\n\
         \x20   latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))\n\
         end\n"
    )
}

fn parse_wrk(text: &str) -> Option<Run> {
    let line = text
        .lines()
        .find_map(|line| line.trim().strip_prefix(RESULT_PREFIX))?;
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let number = |field: &str| value.get(field).and_then(serde_json::Value::as_f64);
    Some(Run {
        requests: number("requests")? as u64,
        errors: number("errors")? as u64,
        seconds: number("duration_us")? / 1e6,
        p50_us: number("p50")?,
        p99_us: number("p99")?,
        p999_us: number("p999")?,
    })
}

/// The router config: one model on the mock, one client key. `features` adds what
/// costs something per request and can be switched off in the config: key limits
/// (rps, rpm, tpm, tpd), model limits (rpm, tpm), a budget and prices (cost
/// accounting), the usage ledger and the metrics (`limits.ledger` and
/// `server.metrics`, on unless set to false). Every limit is far above what a bench
/// can reach, so none refuses. Authentication has no off switch: both sides have it.
/// `redis` (a URL) moves the limits to that Redis (`limits.backend: redis`).
fn config_text(mock_addr: &str, database: &Path, features: bool, redis: Option<&str>) -> String {
    let (model_extra, key_extra, server_extra, limits_extra) = if features {
        (
            "    rpm: 1000000000\n    tpm: 1000000000000\n    input_price_per_token: 0.000001\n    output_price_per_token: 0.000002\n",
            "    rps: 1000000000\n    rpm: 1000000000\n    tpm: 1000000000000\n    tpd: 1000000000000\n    max_budget_usd: 1000000000\n    budget_period: month\n",
            "",
            "",
        )
    } else {
        ("", "", "  metrics: false\n", "  ledger: false\n")
    };
    format!(
        "# Written by `cargo xtask bench`.\n\
         server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 2s\n{server_extra}\
         models:\n  - id: 1\n    name: bench\n    provider_model_name: mock-bench\n    base_url: http://{mock_addr}/v1\n    is_openai_compatibility: true\n    provider_api_key: [\"pk-bench\"]\n    enabled: true\n    visible: true\n    max_tokens: 4096\n{model_extra}\
         api_keys:\n  - id: 1\n    key: {CLIENT_KEY}\n    name: bench\n    is_active: true\n{key_extra}\
         limits:\n  database: \"{}\"\n  flush_interval: 1s\n{limits_extra}{}",
        database.display(),
        redis.map_or(String::new(), shared_limits::limits_block),
    )
}

/// Builds the packages in release mode and copies each build's binaries out of the
/// shared target directory as soon as it is done, since other builds may replace them
/// during the run.
fn build(root: &Path, target: &Path, bench_dir: &Path) -> Result<PathBuf> {
    let bin_dir = bench_dir.join("bin");
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    let steps: [(&[&str], &[&str]); 3] = [
        (&["--package", "router-server"], &["router-server"]),
        (
            &["--package", "loadkit"],
            &["mock-upstream", "bench-client", "null-proxy"],
        ),
        // A build of its own: with the router's, cargo would unify the example's
        // dev-dependency features into the router binary that every scenario measures.
        (
            &[
                "--package",
                "router-limits",
                "--example",
                "admission-latency",
            ],
            &["examples/admission-latency"],
        ),
    ];
    for (args, binaries) in steps {
        process::run(
            root,
            process::cargo().args(["build", "--release"]).args(args),
        )?;
        for binary in binaries {
            let built = target.join("release").join(binary);
            let copy = bin_dir.join(Path::new(binary).file_name().unwrap_or_default());
            std::fs::copy(&built, &copy)
                .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
        }
    }
    Ok(bin_dir)
}

fn start_router(
    bin_dir: &Path,
    run_dir: &Path,
    pinning: &Pinning,
    mock_addr: &str,
    name: &'static str,
    features: bool,
    redis: Option<&str>,
) -> Result<(Guarded, String)> {
    let config = run_dir.join(format!("{name}.yaml"));
    let database = run_dir.join(format!("{name}.db"));
    std::fs::write(&config, config_text(mock_addr, &database, features, redis))
        .with_context(|| format!("writing {}", config.display()))?;
    let log = run_dir.join(format!("{name}.log"));
    let mut command = Pinning::command(pinning.router, &bin_dir.join("router-server"));
    command
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    let mut router = spawn_logged("router-server", &mut command, &log)?;
    let addr = wait_for_address(&mut router, &log)?;
    Ok((router, addr))
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse_options(args)?;
    let started = Instant::now();
    if !have_wrk() {
        bail!("`wrk` is not installed (Debian: `apt-get install -y wrk`)");
    }
    let redis_program = shared_limits::redis_program()?;
    let metadata = Metadata::load(root)?;
    let bench_dir = metadata.target_directory.join("bench");
    let run_dir = bench_dir.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    // Installed before the build, so a failed install stops the bench at once.
    let litellm_program = if options.litellm {
        Some(litellm::install(&bench_dir)?)
    } else {
        None
    };
    let build_started = Instant::now();
    let bin_dir = build(root, &metadata.target_directory, &bench_dir)?;
    let build_time = build_started.elapsed();

    let pinning = Pinning::detect();
    println!("bench: core split: {}", pinning.describe());

    let mock_log = run_dir.join("mock-upstream.log");
    let mut mock_command = Pinning::command(pinning.load, &bin_dir.join("mock-upstream"));
    mock_command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--exit-on-stdin-eof",
        ])
        .stdin(Stdio::piped());
    let mut mock = spawn_logged("mock-upstream", &mut mock_command, &mock_log)?;
    let mock_addr = wait_for_address(&mut mock, &mock_log)?;

    // The baseline: a proxy that only forwards, on the router's core.
    let null_log = run_dir.join("null-proxy.log");
    let mut null_command = Pinning::command(pinning.router, &bin_dir.join("null-proxy"));
    null_command
        .arg("--upstream")
        .arg(format!("http://{mock_addr}"))
        .args(["--listen", "127.0.0.1:0", "--exit-on-stdin-eof"])
        .stdin(Stdio::piped());
    let mut null_proxy = spawn_logged("null-proxy", &mut null_command, &null_log)?;
    let null_addr = wait_for_address(&mut null_proxy, &null_log)?;

    let (mut router, router_addr) = start_router(
        &bin_dir,
        &run_dir,
        &pinning,
        &mock_addr,
        "router-features",
        true,
        None,
    )?;
    let (mut plain_router, plain_addr) = start_router(
        &bin_dir,
        &run_dir,
        &pinning,
        &mock_addr,
        "router-plain",
        false,
        None,
    )?;
    println!(
        "bench: mock upstream on {mock_addr}; router (features on) on {router_addr} (pid {}); router (features off) on {plain_addr} (pid {})",
        router.id(),
        plain_router.id()
    );
    let idle_rss = rss_kib(router.id()).unwrap_or(0);
    let sampler = RssSampler::start(router.id());

    let direct = Target {
        label: "direct",
        url: format!("http://{mock_addr}/v1/chat/completions"),
        auth: false,
    };
    let null = Target {
        label: "null-proxy",
        url: format!("http://{null_addr}/v1/chat/completions"),
        auth: false,
    };
    let routed = Target {
        label: "router",
        url: format!("http://{router_addr}/v1/chat/completions"),
        auth: true,
    };
    let plain = Target {
        label: "router-plain",
        url: format!("http://{plain_addr}/v1/chat/completions"),
        auth: true,
    };
    let mut bench = Bench {
        bin_dir: bin_dir.clone(),
        pinning: pinning.clone(),
        run_dir: run_dir.clone(),
        log: Vec::new(),
        failures: Vec::new(),
    };

    // Warm-up: connection pools, allocator, page cache.
    println!("bench: warm-up");
    for target in [&direct, &null, &routed, &plain] {
        bench.wrk(target, 32, 1)?;
    }

    let reps = options.reps;
    println!("bench: 1. overhead, 1 connection");
    let seconds = options.seconds(Scenario::Overhead);
    let mut overhead: Vec<Overhead> = Vec::new();
    for _ in 0..reps {
        overhead.push(Overhead {
            direct: bench.wrk(&direct, 1, seconds)?,
            null: bench.wrk(&null, 1, seconds)?,
            router: bench.wrk(&routed, 1, seconds)?,
        });
    }

    println!("bench: 2. throughput");
    let seconds = options.seconds(Scenario::Throughput);
    let mut throughput: Vec<ThroughputPoint> = Vec::new();
    for connections in THROUGHPUT_CONNECTIONS {
        let (mut direct_runs, mut router_runs, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
        let mut null_runs = Vec::new();
        for _ in 0..reps {
            direct_runs.push(bench.wrk(&direct, connections, seconds)?);
            if connections == NULL_CONNECTIONS {
                null_runs.push(bench.wrk(&null, connections, seconds)?);
            }
            sampler.take_peak();
            router_runs.push(bench.wrk(&routed, connections, seconds)?);
            peaks.push(sampler.take_peak() as f64 / 1024.0);
        }
        throughput.push(ThroughputPoint {
            connections,
            direct: direct_runs,
            null: null_runs,
            router: router_runs,
            peaks,
        });
    }

    println!("bench: 6. features on versus off, {FEATURES_CONNECTIONS} connections");
    let seconds = options.seconds(Scenario::Features);
    let mut features: Vec<(Run, Run)> = Vec::new();
    for _ in 0..reps {
        let off = bench.wrk(&plain, FEATURES_CONNECTIONS, seconds)?;
        let on = bench.wrk(&routed, FEATURES_CONNECTIONS, seconds)?;
        features.push((on, off));
    }

    let peer = match &litellm_program {
        Some(program) => Some(peer_scenario(
            &mut bench,
            &options,
            program,
            &mock_addr,
            [&direct, &routed],
            &sampler,
        )?),
        None => None,
    };

    let max_rate = best_rate(&throughput).map_or(1000.0, |(_, rate)| rate);
    let tail_rps = ((max_rate * 0.5) as u32).max(1);
    println!("bench: 3. tail at a fixed rate: {tail_rps} req/s (50 % of the router's maximum)");
    let seconds = options.seconds(Scenario::Tail).to_string();
    let mode = strings(&[
        "rate",
        "--rps",
        &tail_rps.to_string(),
        "--seconds",
        &seconds,
    ]);
    let mut tail: Vec<(serde_json::Value, serde_json::Value)> = Vec::new();
    let mut tail_null: Vec<serde_json::Value> = Vec::new();
    for _ in 0..reps {
        let direct_run = bench.client(&direct, &mode)?;
        tail_null.push(bench.client(&null, &mode)?);
        let router_run = bench.client(&routed, &mode)?;
        tail.push((direct_run, router_run));
    }

    println!("bench: 4. streaming");
    let gap = if options.quick { 2 } else { 5 };
    let mut streaming: Vec<StreamPoint> = Vec::new();
    for (chunks, gap) in [(10, 0), (10, gap), (200, 0), (200, gap)] {
        let requests: u32 = match (options.quick, gap) {
            (true, 0) => 20,
            (true, _) => 3,
            (false, 0) => 100,
            (false, _) => 10,
        };
        let mode = strings(&[
            "ttfb",
            "--requests",
            &requests.to_string(),
            "--chunks",
            &chunks.to_string(),
            "--gap",
            &gap.to_string(),
        ]);
        let (mut runs, mut null_runs) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let direct_run = bench.client(&direct, &mode)?;
            let null_run = bench.client(&null, &mode)?;
            let router_run = bench.client(&routed, &mode)?;
            null_runs.push((null_run, router_run.clone()));
            runs.push((direct_run, router_run));
        }
        streaming.push(StreamPoint {
            chunks,
            gap,
            requests,
            runs,
            null_runs,
        });
    }

    let streams = if options.quick { 1000 } else { 2000 };
    let chunks = if options.quick { 10 } else { 25 };
    println!("bench: 5. {streams} slow streams, {chunks} chunks 200 ms apart");
    let mode = strings(&[
        "hold",
        "--streams",
        &streams.to_string(),
        "--chunks",
        &chunks.to_string(),
        "--gap",
        "200",
    ]);
    // A fresh router (same config as `router`), so its RSS and upstream pool start
    // from nothing: round 1 measures the memory of open streams, later rounds reuse.
    let (fresh, fresh_addr) = start_router(
        &bin_dir,
        &run_dir,
        &pinning,
        &mock_addr,
        "router-streams",
        true,
        None,
    )?;
    let fresh_target = Target {
        label: "router-fresh",
        url: format!("http://{fresh_addr}/v1/chat/completions"),
        auth: true,
    };
    let fresh_sampler = RssSampler::start(fresh.id());
    let mut holds: Vec<HoldRound> = Vec::new();
    for _ in 0..reps {
        let connections_before = mock_connections(&mock_addr);
        let rss_before = rss_kib(fresh.id()).unwrap_or(0);
        fresh_sampler.take_peak();
        let result = bench.client(&fresh_target, &mode)?;
        let peak = fresh_sampler.take_peak();
        holds.push(HoldRound {
            streams,
            result,
            rss_before,
            peak,
            // Minus one: the `/stats` read that ends the count is a connection too.
            upstream_connections: mock_connections(&mock_addr) - connections_before - 1.0,
        });
    }

    drop(fresh_sampler);
    let mut fresh = fresh;
    let fresh_alive = fresh.child_alive();
    drop(fresh);

    let shared = shared_limits::run(
        &mut bench,
        &options,
        &redis_program,
        &mock_addr,
        (&routed, router.id()),
    )?;

    let mock_stats = http_get(&mock_addr, "/stats", None).unwrap_or_else(|_| "unknown".into());
    let final_rss = rss_kib(router.id()).unwrap_or(0);
    let routers_alive = matches!(
        (
            router.child_alive(),
            plain_router.child_alive(),
            fresh_alive
        ),
        (true, true, true)
    );
    if !mock.child_alive() {
        bench
            .failures
            .push("mock-upstream exited during the bench".to_owned());
    }
    if !null_proxy.child_alive() {
        bench
            .failures
            .push("null-proxy exited during the bench".to_owned());
    }
    drop(sampler);
    drop(router);
    drop(plain_router);
    drop(null_proxy);
    drop(mock);

    let table = summary_table(&Summary {
        options: &options,
        pinning: &pinning,
        machine: machine(root),
        overhead: &overhead,
        throughput: &throughput,
        features: &features,
        peer: peer.as_ref(),
        tail: &tail,
        tail_null: &tail_null,
        tail_rps,
        streaming: &streaming,
        holds: &holds,
        shared: &shared,
        idle_rss,
        final_rss,
        mock_stats,
        elapsed: started.elapsed(),
        build_time,
        failures: &bench.failures,
    });
    println!("\n{table}");
    let summary_path = bench_dir.join("summary.md");
    std::fs::write(&summary_path, &table)
        .with_context(|| format!("writing {}", summary_path.display()))?;
    let runs_path = bench_dir.join("runs.txt");
    std::fs::write(&runs_path, bench.log.join("\n") + "\n")
        .with_context(|| format!("writing {}", runs_path.display()))?;
    println!(
        "bench: summary written to {} (every run in {})",
        summary_path.display(),
        runs_path.display()
    );
    if !routers_alive {
        bail!(
            "a router exited during the bench (logs in {})",
            run_dir.display()
        );
    }
    if !bench.failures.is_empty() {
        bail!(
            "{} bench run(s) went wrong (logs in {}):\n  {}",
            bench.failures.len(),
            run_dir.display(),
            bench.failures.join("\n  ")
        );
    }
    Ok(())
}

/// Scenario 7: scenarios 1 and 2 (at [`PEER_CONNECTIONS`]) against the mock, the
/// router and LiteLLM, started here on the router's core and stopped (its whole
/// process group) before this returns.
fn peer_scenario(
    bench: &mut Bench,
    options: &Options,
    program: &Path,
    mock_addr: &str,
    [direct, routed]: [&Target; 2],
    router_sampler: &RssSampler,
) -> Result<PeerRuns> {
    println!("bench: 7. versus LiteLLM {}", litellm::VERSION);
    let mut proxy = litellm::start(
        program,
        &bench.run_dir.clone(),
        bench.pinning.router,
        mock_addr,
    )?;
    let target = Target {
        label: "litellm",
        url: format!("http://{}/v1/chat/completions", proxy.addr),
        auth: true,
    };
    let litellm_idle_rss = rss_kib(proxy.pid()).unwrap_or(0);
    let sampler = RssSampler::start(proxy.pid());
    bench.wrk(&target, PEER_CONNECTIONS, 1)?;
    let mut runs = PeerRuns {
        overhead: Vec::new(),
        throughput: Vec::new(),
        router_peaks: Vec::new(),
        litellm_peaks: Vec::new(),
        litellm_idle_rss,
    };
    let seconds = options.seconds(Scenario::Overhead);
    for _ in 0..options.reps {
        runs.overhead.push([
            bench.wrk(direct, 1, seconds)?,
            bench.wrk(routed, 1, seconds)?,
            bench.wrk(&target, 1, seconds)?,
        ]);
    }
    let seconds = options.seconds(Scenario::Throughput);
    for _ in 0..options.reps {
        let direct_run = bench.wrk(direct, PEER_CONNECTIONS, seconds)?;
        router_sampler.take_peak();
        let router_run = bench.wrk(routed, PEER_CONNECTIONS, seconds)?;
        runs.router_peaks
            .push(router_sampler.take_peak() as f64 / 1024.0);
        sampler.take_peak();
        let litellm_run = bench.wrk(&target, PEER_CONNECTIONS, seconds)?;
        runs.litellm_peaks.push(sampler.take_peak() as f64 / 1024.0);
        runs.throughput.push([direct_run, router_run, litellm_run]);
    }
    let alive = proxy.alive();
    drop(sampler);
    drop(proxy);
    if !alive {
        bail!(
            "LiteLLM exited during the bench (log in {})",
            bench.run_dir.join("litellm.log").display()
        );
    }
    Ok(runs)
}

/// Scenario 7's section of the table.
fn peer_section(out: &mut String, options: &Options, peer: &PeerRuns) {
    let _ = writeln!(
        out,
        "\n## 7. Versus LiteLLM proxy {}: 1 connection {} s and {PEER_CONNECTIONS} connections {} s per run\n",
        litellm::VERSION,
        options.seconds(Scenario::Overhead),
        options.seconds(Scenario::Throughput)
    );
    let _ = writeln!(
        out,
        "`litellm[proxy]=={}` from PyPI in `target/bench/litellm-venv`, one uvicorn worker \
         (`--num_workers 1`) on the router's core, the same mock and body, a master key (the \
         router authenticates too), no database; `LITELLM_LOG=ERROR`, telemetry off, \
         `set_verbose: false`, local cost map, uvicorn access log off. The router is the one \
         of scenarios 1 and 2 (features on). Direct, router and LiteLLM runs alternate.\n",
        litellm::VERSION
    );
    let _ = writeln!(
        out,
        "| measure | direct (mock) | router | LiteLLM | router / LiteLLM |\n|---|---|---|---|---|"
    );
    let spread = |rows: &[[Run; 3]], pick: &dyn Fn(&[Run; 3]) -> f64| {
        Spread::of(&rows.iter().map(pick).collect::<Vec<_>>())
    };
    let rate_row = |name: &str, rows: &[[Run; 3]]| {
        format!(
            "| {name} | {} | {} | {} | {} |",
            spread(rows, &|r| r[0].rate()).show(0, ""),
            spread(rows, &|r| r[1].rate()).show(0, ""),
            spread(rows, &|r| r[2].rate()).show(0, ""),
            spread(rows, &|r| r[1].rate() / r[2].rate()).show(1, "×"),
        )
    };
    let _ = writeln!(
        out,
        "{}",
        rate_row(
            &format!("requests/s, {PEER_CONNECTIONS} connections"),
            &peer.throughput
        )
    );
    let _ = writeln!(
        out,
        "{}",
        rate_row("requests/s, 1 connection", &peer.overhead)
    );
    for (percentile, connections, rows, pick) in [
        (
            "p50",
            1,
            &peer.overhead,
            (|run: &Run| ms(run.p50_us)) as fn(&Run) -> f64,
        ),
        ("p99", 1, &peer.overhead, |run: &Run| ms(run.p99_us)),
        ("p50", PEER_CONNECTIONS, &peer.throughput, |run: &Run| {
            ms(run.p50_us)
        }),
        ("p99", PEER_CONNECTIONS, &peer.throughput, |run: &Run| {
            ms(run.p99_us)
        }),
    ] {
        let name = format!(
            "{percentile}, {connections} connection{}",
            if connections == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | |",
            spread(rows, &|r| pick(&r[0])).show(3, " ms"),
            spread(rows, &|r| pick(&r[1])).show(3, " ms"),
            spread(rows, &|r| pick(&r[2])).show(3, " ms"),
        );
        let _ = writeln!(
            out,
            "| {name}, added over direct | | {} | {} | |",
            spread(rows, &|r| pick(&r[1]) - pick(&r[0])).show(3, " ms"),
            spread(rows, &|r| pick(&r[2]) - pick(&r[0])).show(3, " ms"),
        );
    }
    let errors = |index: usize| -> (u64, u64) {
        peer.overhead
            .iter()
            .chain(&peer.throughput)
            .fold((0, 0), |(errors, requests), runs| {
                (errors + runs[index].errors, requests + runs[index].requests)
            })
    };
    let ((router_errors, router_requests), (litellm_errors, litellm_requests)) =
        (errors(1), errors(2));
    let _ = writeln!(
        out,
        "| errors | | {router_errors} of {router_requests} | {litellm_errors} of {litellm_requests} | |"
    );
    let _ = writeln!(
        out,
        "| peak RSS, {PEER_CONNECTIONS} connections | | {} | {} | |",
        Spread::of(&peer.router_peaks).show(1, " MiB"),
        Spread::of(&peer.litellm_peaks).show(1, " MiB"),
    );
    let ratio = spread(&peer.throughput, &|r| r[1].rate() / r[2].rate()).median;
    let _ = writeln!(
        out,
        "\nLiteLLM RSS after start {:.1} MiB. Target: router throughput at least {PEER_TARGET_RATIO:.0}× \
         LiteLLM's on the same core: {} (median ratio {ratio:.1}×).",
        peer.litellm_idle_rss as f64 / 1024.0,
        if ratio >= PEER_TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        },
    );
}

/// wrk 4 prints its usage and exits 1 on `--version`; its first line names it.
fn have_wrk() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).starts_with("wrk "))
}

impl Guarded {
    fn child_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// What the table's header says about the machine and the versions.
fn machine(root: &Path) -> Vec<(&'static str, String)> {
    let first_line = |command: &mut Command| {
        command
            .current_dir(root)
            .output()
            .ok()
            .map(|output| {
                let text = if output.stdout.is_empty() {
                    output.stderr
                } else {
                    output.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("unknown".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(root)
        .output()
        .is_ok_and(|output| !output.stdout.is_empty());
    vec![
        ("CPU", format!("{cpu}, {cores} cores, {memory}")),
        ("kernel", first_line(Command::new("uname").args(["-sr"]))),
        (
            "router commit",
            first_line(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
                + if dirty { " (with local changes)" } else { "" },
        ),
        ("rustc", first_line(Command::new("rustc").arg("-V"))),
        ("wrk", first_line(Command::new("wrk").arg("--version"))),
    ]
}

struct Summary<'a> {
    options: &'a Options,
    pinning: &'a Pinning,
    machine: Vec<(&'static str, String)>,
    overhead: &'a [Overhead],
    throughput: &'a [ThroughputPoint],
    features: &'a [(Run, Run)],
    peer: Option<&'a PeerRuns>,
    tail: &'a [(serde_json::Value, serde_json::Value)],
    /// The null proxy on the same schedule as `tail`.
    tail_null: &'a [serde_json::Value],
    tail_rps: u32,
    streaming: &'a [StreamPoint],
    holds: &'a [HoldRound],
    /// Scenario 8.
    shared: &'a shared_limits::SharedLimitsRuns,
    idle_rss: u64,
    final_rss: u64,
    mock_stats: String,
    elapsed: Duration,
    /// The part of `elapsed` spent building (and waiting for the target dir's lock).
    build_time: Duration,
    failures: &'a [String],
}

/// Microseconds to milliseconds.
fn ms(us: f64) -> f64 {
    us / 1000.0
}

fn summary_table(summary: &Summary<'_>) -> String {
    let options = summary.options;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# bench: {}, {} repetitions per point, release build\n",
        if options.quick {
            "quick (1 s runs)"
        } else {
            "full"
        },
        options.reps
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    for (name, value) in &summary.machine {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    let _ = writeln!(out, "| core split | {} |", summary.pinning.describe());
    let _ = writeln!(
        out,
        "| load generator | wrk, 1 thread, closed loop; body `{CHAT_BODY}` (a plain 4-word answer) |"
    );
    let _ = writeln!(
        out,
        "| run time | {:.0} s, of which {:.0} s building |",
        summary.elapsed.as_secs_f64(),
        summary.build_time.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "\nEvery cell is median (min–max) over the repetitions; direct, null proxy and router \
         runs alternate.\n"
    );
    let _ = writeln!(
        out,
        "**The null proxy** (loadkit's `null-proxy`) is the least a forwarding proxy can do: \
         a hyper 1 server (HTTP/1.1 keep-alive) and one pooled hyper-util client on the tokio \
         scheduler the router picks (current-thread on one core), that sends each request on to the mock and \
         streams the answer back unchanged: no JSON parsing, no authentication, no limits, \
         no accounting. It runs on the router's core. Direct runs have wrk and the mock on \
         one core, while wrk → proxy → mock crosses cores four times per request (each \
         cross-core wake-up costs tens of µs on a small VM), so \"added by the router\" \
         mixes the topology with the router's work. \"Added by the null proxy\" is the \
         topology and a bare forwarding hop; \"router over null proxy\" is what the router \
         itself adds on the same path.\n"
    );

    targets_section(&mut out, summary);

    let _ = writeln!(
        out,
        "## 1. Overhead: 1 connection, {} s per run\n",
        options.seconds(Scenario::Overhead)
    );
    let _ = writeln!(
        out,
        "| measure | direct (mock) | null proxy | router | added by the null proxy | added by the router | router over null proxy |\n|---|---|---|---|---|---|---|"
    );
    let spread = |value: &dyn Fn(&Overhead) -> f64| {
        Spread::of(&summary.overhead.iter().map(value).collect::<Vec<_>>())
    };
    for (name, pick) in [
        (
            "p50 latency",
            (|run: &Run| ms(run.p50_us)) as fn(&Run) -> f64,
        ),
        ("p99 latency", |run: &Run| ms(run.p99_us)),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            spread(&|o| pick(&o.direct)).show(3, " ms"),
            spread(&|o| pick(&o.null)).show(3, " ms"),
            spread(&|o| pick(&o.router)).show(3, " ms"),
            spread(&|o| pick(&o.null) - pick(&o.direct)).show(3, " ms"),
            spread(&|o| pick(&o.router) - pick(&o.direct)).show(3, " ms"),
            spread(&|o| pick(&o.router) - pick(&o.null)).show(3, " ms"),
        );
    }
    let _ = writeln!(
        out,
        "| requests/s | {} | {} | {} | | | |",
        spread(&|o| o.direct.rate()).show(0, ""),
        spread(&|o| o.null.rate()).show(0, ""),
        spread(&|o| o.router.rate()).show(0, ""),
    );

    let _ = writeln!(
        out,
        "\n## 2. Throughput: {} s per run\n",
        options.seconds(Scenario::Throughput)
    );
    let _ = writeln!(
        out,
        "| connections | direct req/s | null proxy req/s | router req/s | router / null proxy req/s | router errors | null proxy p99 | router p99 | router p50 over null proxy | router peak RSS |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let best = best_rate(summary.throughput);
    for ThroughputPoint {
        connections,
        direct,
        null,
        router,
        peaks,
    } in summary.throughput
    {
        let rates = |runs: &[Run]| Spread::of(&runs.iter().map(Run::rate).collect::<Vec<_>>());
        let errors: u64 = router.iter().map(|run| run.errors).sum();
        let requests: u64 = router.iter().map(|run| run.requests).sum();
        let share = if requests == 0 {
            1.0
        } else {
            errors as f64 / requests as f64
        };
        let router_rate = rates(router);
        // The null proxy ran only at NULL_CONNECTIONS, interleaved with the router.
        let versus_null = |value: &dyn Fn(&Run, &Run) -> f64, decimals: usize, unit: &str| {
            if null.is_empty() {
                "–".to_owned()
            } else {
                Spread::of(
                    &null
                        .iter()
                        .zip(router)
                        .map(|(null, router)| value(null, router))
                        .collect::<Vec<_>>(),
                )
                .show(decimals, unit)
            }
        };
        let _ = writeln!(
            out,
            "| {connections} | {} | {} | {} | {} | {errors} of {requests} ({:.3} %) | {} | {} | {} | {} |",
            rates(direct).show(0, ""),
            versus_null(&|null, _| null.rate(), 0, ""),
            router_rate.show(0, ""),
            versus_null(&|null, router| router.rate() / null.rate(), 3, ""),
            share * 100.0,
            versus_null(&|null, _| ms(null.p99_us), 2, " ms"),
            Spread::of(&router.iter().map(|run| ms(run.p99_us)).collect::<Vec<_>>()).show(2, " ms"),
            versus_null(&|null, router| ms(router.p50_us - null.p50_us), 3, " ms"),
            Spread::of(peaks).show(1, " MiB"),
        );
    }
    let _ = writeln!(
        out,
        "\nRouter maximum with under {} % errors: {}. Router RSS idle {:.1} MiB, after the run {:.1} MiB.",
        MAX_ERROR_SHARE * 100.0,
        best.map_or("none".to_owned(), |(connections, rate)| format!(
            "{rate:.0} req/s at {connections} connections"
        )),
        summary.idle_rss as f64 / 1024.0,
        summary.final_rss as f64 / 1024.0,
    );

    let _ = writeln!(
        out,
        "\n## 6. Features on versus off: {FEATURES_CONNECTIONS} connections, {} s per run\n",
        options.seconds(Scenario::Features)
    );
    let _ = writeln!(
        out,
        "On: key rps/rpm/tpm/tpd limits, model rpm/tpm limits, a monthly budget and prices (cost \
         accounting), the SQLite usage ledger and the metrics. Off: the same config without the \
         limits, budget and prices, with `limits.ledger: false` (no ledger rows, no SQLite \
         file) and `server.metrics: false`. Authentication has no off switch in router-server's \
         config, so both sides have it.\n"
    );
    let _ = writeln!(
        out,
        "| measure | features off | features on | on / off |\n|---|---|---|---|"
    );
    let side = |pick: fn(&Run) -> f64, on: bool| {
        Spread::of(
            &summary
                .features
                .iter()
                .map(|(with, without)| pick(if on { with } else { without }))
                .collect::<Vec<_>>(),
        )
    };
    let ratio = |pick: fn(&Run) -> f64| {
        Spread::of(
            &summary
                .features
                .iter()
                .map(|(with, without)| pick(with) / pick(without))
                .collect::<Vec<_>>(),
        )
    };
    for (name, pick, decimals) in [
        ("requests/s", Run::rate as fn(&Run) -> f64, 0),
        ("p50 latency (ms)", |run: &Run| ms(run.p50_us), 2),
        ("p99 latency (ms)", |run: &Run| ms(run.p99_us), 2),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            side(pick, false).show(decimals, ""),
            side(pick, true).show(decimals, ""),
            ratio(pick).show(3, ""),
        );
    }
    let errors: u64 = summary
        .features
        .iter()
        .map(|(with, without)| with.errors + without.errors)
        .sum();
    let _ = writeln!(out, "\nErrors in scenario 6: {errors}.");
    if let Some(peer) = summary.peer {
        peer_section(&mut out, options, peer);
    }

    more_sections(&mut out, summary);
    shared_limits::section(&mut out, options, summary.shared);
    let _ = writeln!(
        out,
        "Mock upstream `/stats` at the end: `{}`",
        summary.mock_stats
    );
    if summary.failures.is_empty() {
        let _ = writeln!(out, "\nNo run had errors or missing chunks.");
    } else {
        let _ = writeln!(out, "\n**Runs that went wrong** (the bench fails):\n");
        for failure in summary.failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out
}

// The efficiency targets the summary's first table holds the router to.
const TARGET_ROUTER_OVER_NULL_RATE: f64 = 0.75;
const TARGET_ROUTER_OVER_NULL_P50_US: f64 = 20.0;
const TARGET_FEATURES_ON_OVER_OFF: f64 = 0.85;
const TARGET_STREAM_MIB_PER_THOUSAND: f64 = 25.0;

/// What a request costs the router, against its targets: one row each, every
/// figure a ratio or a difference within one run (`router / null proxy`,
/// `on / off`, `router − null proxy`), so a noisy machine moves both sides.
fn targets_section(out: &mut String, summary: &Summary<'_>) {
    let _ = writeln!(
        out,
        "## Efficiency targets\n\n\
         Each row is median (min–max) over the repetitions; a target is met when the median \
         is. Details in the sections named; what a request costs the router, part by part \
         (instructions per request under callgrind), is in the README's \
         \"Where a request's time goes\".\n"
    );
    let _ = writeln!(out, "| measure | measured | target | |\n|---|---|---|---|");
    let verdict = |met: bool| if met { "met" } else { "**not met**" };
    let rate = summary
        .throughput
        .iter()
        .find(|point| point.connections == NULL_CONNECTIONS)
        .map(|point| {
            Spread::of(
                &point
                    .null
                    .iter()
                    .zip(&point.router)
                    .map(|(null, router)| router.rate() / null.rate())
                    .collect::<Vec<_>>(),
            )
        });
    if let Some(rate) = rate {
        let _ = writeln!(
            out,
            "| router / null proxy throughput, {NULL_CONNECTIONS} connections (2) | {} | ≥ {TARGET_ROUTER_OVER_NULL_RATE} | {} |",
            rate.show(3, ""),
            verdict(rate.median >= TARGET_ROUTER_OVER_NULL_RATE),
        );
    }
    let p50 = Spread::of(
        &summary
            .overhead
            .iter()
            .map(|run| run.router.p50_us - run.null.p50_us)
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(
        out,
        "| router over null proxy, p50 at 1 connection (1) | {} | ≤ {TARGET_ROUTER_OVER_NULL_P50_US} µs | {} |",
        p50.show(1, " µs"),
        verdict(p50.median <= TARGET_ROUTER_OVER_NULL_P50_US),
    );
    let features = Spread::of(
        &summary
            .features
            .iter()
            .map(|(on, off)| on.rate() / off.rate())
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(
        out,
        "| features on / off throughput, {FEATURES_CONNECTIONS} connections (6) | {} | ≥ {TARGET_FEATURES_ON_OVER_OFF} | {} |",
        features.show(3, ""),
        verdict(features.median >= TARGET_FEATURES_ON_OVER_OFF),
    );
    if let Some(first) = summary.holds.first() {
        let per_thousand = hold_per_thousand(first);
        let _ = writeln!(
            out,
            "| RSS per 1,000 slow streams, first round from idle (5) | {per_thousand:.1} MiB ({} streams) | ≤ {TARGET_STREAM_MIB_PER_THOUSAND} MiB | {} |",
            first.streams,
            verdict(per_thousand <= TARGET_STREAM_MIB_PER_THOUSAND),
        );
    }
    let _ = writeln!(out);
}

/// (Peak RSS while the streams are open − RSS before the round) per 1,000 streams, MiB.
fn hold_per_thousand(round: &HoldRound) -> f64 {
    (round.peak as f64 - round.rss_before as f64) / 1024.0 / f64::from(round.streams) * 1000.0
}

type Pairs = [(serde_json::Value, serde_json::Value)];

/// Median (min–max) over repetitions of `pick(direct, router)`.
fn pair_spread(
    pairs: &Pairs,
    pick: &dyn Fn(&serde_json::Value, &serde_json::Value) -> f64,
) -> Spread {
    Spread::of(
        &pairs
            .iter()
            .map(|(direct, router)| pick(direct, router))
            .collect::<Vec<_>>(),
    )
}

/// Scenarios 3, 4 and 5, from bench-client's summaries.
fn more_sections(out: &mut String, summary: &Summary<'_>) {
    let options = summary.options;
    let _ = writeln!(
        out,
        "\n## 3. Tail at a fixed rate: {} req/s (50 % of the router's maximum), open loop, {} s per run\n",
        summary.tail_rps,
        options.seconds(Scenario::Tail)
    );
    let _ = writeln!(
        out,
        "Latency counts from each request's scheduled start (bench-client `rate`: a pacing \
         thread releases each request on its schedule, one new task per request, pooled \
         connections, at most 256 requests in flight; a request due while 256 are in flight \
         waits, and the wait counts). The null proxy runs the same schedule on the router's \
         core: what this topology does to the tail at this rate without any router work.\n"
    );
    let null = |pointer: &str, scale: f64| {
        Spread::of(
            &summary
                .tail_null
                .iter()
                .map(|run| field(run, pointer) / scale)
                .collect::<Vec<_>>(),
        )
    };
    let _ = writeln!(
        out,
        "| measure | direct (mock) | null proxy | router |\n|---|---|---|---|"
    );
    for (name, pointer) in [
        ("p50 (ms)", "/latency_us/p50"),
        ("p99 (ms)", "/latency_us/p99"),
        ("p99.9 (ms)", "/latency_us/p999"),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            pair_spread(summary.tail, &|direct, _| field(direct, pointer) / 1000.0).show(3, ""),
            null(pointer, 1000.0).show(3, ""),
            pair_spread(summary.tail, &|_, router| field(router, pointer) / 1000.0).show(3, ""),
        );
    }
    for (name, pointer) in [("achieved req/s", "/achieved_rps"), ("errors", "/errors")] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            pair_spread(summary.tail, &|direct, _| field(direct, pointer)).show(0, ""),
            null(pointer, 1.0).show(0, ""),
            pair_spread(summary.tail, &|_, router| field(router, pointer)).show(0, ""),
        );
    }

    let _ = writeln!(
        out,
        "\n## 4. Streaming: sequential streams (bench-client `ttfb`)\n\n\
         First chunk = the first content event (the role event before it is not counted). \
         Most per read = the most content events that arrived in one body frame at the \
         router's client (1 = no coalescing; without a gap the kernel may coalesce).\n"
    );
    let _ = writeln!(
        out,
        "| chunks | gap | requests per run | direct first chunk p50 | null proxy first chunk p50 | router first chunk p50 | added p50 | added p99 | router over null proxy p50 | router over null proxy p99 | router errors / missing chunks | router most per read |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for point in summary.streaming {
        let errors: f64 = point
            .runs
            .iter()
            .map(|(_, router)| field(router, "/errors"))
            .sum();
        let missing: f64 = point
            .runs
            .iter()
            .map(|(_, router)| field(router, "/missing_chunks"))
            .sum();
        let most = point
            .runs
            .iter()
            .map(|(_, router)| field(router, "/max_content_per_read"))
            .fold(0.0, f64::max);
        let added = |pairs: &Pairs, pointer: &str| {
            pair_spread(pairs, &|base, router| {
                (field(router, pointer) - field(base, pointer)) / 1000.0
            })
            .show(3, " ms")
        };
        let _ = writeln!(
            out,
            "| {} | {} ms | {} | {} | {} | {} | {} | {} | {} | {} | {errors} / {missing} | {most} |",
            point.chunks,
            point.gap,
            point.requests,
            pair_spread(&point.runs, &|direct, _| field(
                direct,
                "/first_chunk_us/p50"
            ) / 1000.0)
            .show(3, " ms"),
            pair_spread(&point.null_runs, &|null, _| field(
                null,
                "/first_chunk_us/p50"
            ) / 1000.0)
            .show(3, " ms"),
            pair_spread(&point.runs, &|_, router| field(
                router,
                "/first_chunk_us/p50"
            ) / 1000.0)
            .show(3, " ms"),
            added(&point.runs, "/first_chunk_us/p50"),
            added(&point.runs, "/first_chunk_us/p99"),
            added(&point.null_runs, "/first_chunk_us/p50"),
            added(&point.null_runs, "/first_chunk_us/p99"),
        );
    }

    let _ = writeln!(
        out,
        "\n## 5. Many slow streams through the router (bench-client `hold`, 200 ms between chunks)\n\n\
         A router started just for this scenario (same config). RSS per thousand = (peak RSS \
         while the streams are open − RSS before the round) / streams × 1000: round 1 starts \
         from an idle router; later rounds run on memory the allocator kept. Upstream \
         connections = connections the mock accepted during the round: later rounds \
         opening (almost) none means the router reused its pooled upstream connections.\n"
    );
    let _ = writeln!(
        out,
        "| round | streams | all open at once | errors | RSS before | peak RSS | RSS per 1000 streams | upstream connections opened | router first chunk p99 |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (index, round) in summary.holds.iter().enumerate() {
        let per_thousand = hold_per_thousand(round);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} MiB | {:.1} MiB | {per_thousand:.1} MiB | {} | {:.1} ms |",
            index + 1,
            round.streams,
            round
                .result
                .get("all_opened")
                .map_or("?".to_owned(), ToString::to_string),
            field(&round.result, "/errors"),
            round.rss_before as f64 / 1024.0,
            round.peak as f64 / 1024.0,
            round.upstream_connections,
            field(&round.result, "/first_chunk_us/p99") / 1000.0,
        );
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn options() {
        assert_eq!(
            parse_options(&args(&[])).unwrap(),
            Options {
                quick: false,
                reps: 3,
                litellm: false
            }
        );
        assert_eq!(
            parse_options(&args(&["--quick", "--reps", "5", "--peer", "litellm"])).unwrap(),
            Options {
                quick: true,
                reps: 5,
                litellm: true
            }
        );
        assert!(parse_options(&args(&["--peer", "vllm"])).is_err());
        assert!(parse_options(&args(&["--peer"])).is_err());
        assert!(parse_options(&args(&["--reps", "0"])).is_err());
        assert!(parse_options(&args(&["--slow"])).is_err());
    }

    #[test]
    fn spread_is_median_min_max() {
        let spread = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((spread.median, spread.min, spread.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(Spread::of(&[]).median.is_nan());
    }

    #[test]
    fn client_summaries_with_errors_are_failures() {
        let value = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(
            client_problem(&value(r#"{"errors":0,"missing_chunks":0}"#)),
            None
        );
        assert_eq!(
            client_problem(&value(r#"{"errors":1,"missing_chunks":2}"#)).as_deref(),
            Some("1 errors, 2 missing chunks")
        );
        assert!(client_problem(&value(r#"{"errors":0,"all_opened":false}"#)).is_some());
        assert!(client_problem(&value(r#"{"streams":3}"#)).is_some());
    }

    #[test]
    fn wrk_line_is_parsed() {
        let text = "Running 1s test\nBENCH {\"requests\":100,\"duration_us\":2000000,\"errors\":1,\"p50\":120,\"p99\":900,\"p999\":1500}\n";
        let run = parse_wrk(text).unwrap();
        assert_eq!((run.requests, run.errors), (100, 1));
        assert!((run.rate() - 50.0).abs() < 1e-9);
        assert_eq!(run.p999_us, 1500.0);
        assert!(parse_wrk("no line").is_none());
    }
}
