//! `cargo xtask soak [--minutes N | --seconds S] [--release] [--concurrency C]`: a
//! bounded soak of router-server against the fault-injecting mock upstream.
//!
//! It builds router-server and `loadkit`, writes a config of its own under
//! `target/soak/run/` (router on 127.0.0.1:0, two entries × two provider keys on the
//! mock, one rpm-limited model, a fresh SQLite ledger flushed every 100 ms), starts
//! `mock-upstream` and the router, samples the router's RSS and open fds while
//! `soak` drives mixed traffic, and then checks what a long-running gateway must keep:
//! one ledger row per authenticated request, no panic in the log, no fd growth. RSS
//! growth per minute is reported (a linear fit after warm-up) rather than judged: a
//! short run cannot tell a leak from an allocator settling. The table goes to stdout
//! and `target/soak/summary.md`. Every child is killed when this returns, failed or
//! not; on Ctrl-C the terminal signals the whole process group, and the mock upstream
//! also exits when its stdin (a pipe from us) closes.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::metadata::Metadata;
use crate::process;

const DEFAULT_SECONDS: u64 = 60;
/// A soak is bounded: a typo must not start a week-long run.
const MAX_SECONDS: u64 = 24 * 60 * 60;
const DEFAULT_CONCURRENCY: usize = 8;
const CLIENT_KEY: &str = "sk-soak-client";
const ADMIN_KEY: &str = "sk-soak-admin";
/// Open fds the router may hold at the end beyond what it held before the traffic
/// (the ledger's WAL files, a pooled upstream connection or two).
const FD_SLACK: i64 = 16;
/// How long the ledger gets to flush after the traffic stopped.
const FLUSH_WAIT: Duration = Duration::from_secs(15);
/// How long a child gets to print its address.
const START_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq, Eq)]
struct Options {
    seconds: u64,
    release: bool,
    concurrency: usize,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options {
        seconds: DEFAULT_SECONDS,
        release: false,
        concurrency: DEFAULT_CONCURRENCY,
    };
    let mut rest = args.iter();
    let number = |flag: &str, value: Option<&String>| -> Result<u64> {
        let value = value.with_context(|| format!("{flag} needs a value"))?;
        value
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{flag} takes a whole number above 0, not `{value}`"))
    };
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--minutes" => options.seconds = number(flag, rest.next())?.saturating_mul(60),
            "--seconds" => options.seconds = number(flag, rest.next())?,
            "--concurrency" => options.concurrency = number(flag, rest.next())?.min(1024) as usize,
            "--release" => options.release = true,
            other => bail!(
                "unknown argument `{other}`\nusage: cargo xtask soak [--minutes N | --seconds S] [--concurrency C] [--release]"
            ),
        }
    }
    if options.seconds > MAX_SECONDS {
        bail!("a soak runs at most {MAX_SECONDS} s");
    }
    Ok(options)
}

/// A child process that is killed and reaped when dropped, so no exit path (an error,
/// a failed check, a panic) leaves it running.
pub(crate) struct Guarded {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
}

impl Guarded {
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    rss_kib: u64,
    fds: u64,
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse_options(args)?;
    let metadata = Metadata::load(root)?;
    let soak_dir = metadata.target_directory.join("soak");
    let run_dir = soak_dir.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;

    let binaries = build(root, &metadata.target_directory, &soak_dir, options.release)?;

    let mock_log = run_dir.join("mock-upstream.log");
    let mut mock = spawn_logged(
        "mock-upstream",
        Command::new(binaries.join("mock-upstream"))
            .args(["--listen", "127.0.0.1:0", "--exit-on-stdin-eof"])
            .stdin(Stdio::piped()),
        &mock_log,
    )?;
    let mock_addr = wait_for_address(&mut mock, &mock_log)?;

    let database = run_dir.join("ledger.db");
    let config = run_dir.join("config.yaml");
    std::fs::write(&config, config_text(&mock_addr, &database))
        .with_context(|| format!("writing {}", config.display()))?;
    let router_log = run_dir.join("router.log");
    let mut router = spawn_logged(
        "router-server",
        Command::new(binaries.join("router-server"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null()),
        &router_log,
    )?;
    let router_addr = wait_for_address(&mut router, &router_log)?;
    println!(
        "soak: mock upstream on {mock_addr}, router on {router_addr} (pid {})",
        router.id()
    );

    let pid = router.id();
    let before = sample(pid, 0.0).context("reading the router's /proc entries")?;
    let samples = Arc::new(Mutex::new(vec![before]));
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_secs(if options.seconds <= 120 { 1 } else { 5 });
    let sampler = {
        let samples = Arc::clone(&samples);
        let stop = Arc::clone(&stop);
        let started = Instant::now();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                if let Some(next) = sample(pid, started.elapsed().as_secs_f64()) {
                    if let Ok(mut samples) = samples.lock() {
                        samples.push(next);
                    }
                }
            }
        })
    };

    println!(
        "soak: driving traffic for {} s with {} clients",
        options.seconds, options.concurrency
    );
    let summary = drive(&binaries, &router_addr, &options);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let summary = summary?;

    // Let the router notice the driver's closed connections before counting fds.
    std::thread::sleep(Duration::from_secs(2));
    let after = sample(pid, f64::NAN).context("the router exited during the soak")?;

    let authenticated = json_u64(&summary, "authenticated")?;
    let unanswered = json_u64(&summary, "unanswered")?;
    let ledger_before = json_u64(&summary, "ledger_before")?;
    let expected_low = ledger_before + authenticated - unanswered;
    let expected_high = ledger_before + authenticated;
    let rows = wait_for_rows(&database, &router_addr, expected_low, expected_high)?;
    let usage_today = usage_today(&router_addr).ok();
    let in_flight = metric(&router_addr, "router_in_flight_requests")
        .ok()
        .flatten();
    let mock_stats = http_get(&mock_addr, "/stats", None).ok();

    let router_alive = matches!(router.child.try_wait(), Ok(None));
    drop(router);
    drop(mock);
    let log = std::fs::read_to_string(&router_log).unwrap_or_default();
    let panics = log.lines().filter(|line| line.contains("panicked")).count();

    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let warmup = (options.seconds as f64 * 0.2)
        .max(5.0)
        .min(options.seconds as f64 / 2.0);
    let growth = rss_growth_per_minute(&samples, warmup);
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);

    let mut checks: Vec<(String, bool)> = Vec::new();
    let rows_ok = rows.is_some_and(|rows| (expected_low..=expected_high).contains(&rows));
    checks.push((
        format!(
            "ledger rows {} = authenticated requests {}{}",
            rows.map_or("unknown".to_owned(), |rows| (rows
                - ledger_before.min(rows))
            .to_string()),
            authenticated,
            if unanswered > 0 {
                format!(" (minus up to {unanswered} lost in transport)")
            } else {
                String::new()
            },
        ) + &gave_up_note(&summary),
        rows_ok,
    ));
    checks.push((
        format!("`panicked` lines in the router log: {panics}"),
        panics == 0,
    ));
    let fd_growth = after.fds as i64 - before.fds as i64;
    checks.push((
        format!(
            "open fds {} before, {} after (slack {FD_SLACK})",
            before.fds, after.fds
        ),
        fd_growth <= FD_SLACK,
    ));
    checks.push(("router still running at the end".to_owned(), router_alive));
    if let Some(in_flight) = in_flight {
        checks.push((
            format!("router_in_flight_requests after the run: {in_flight}"),
            in_flight == 0.0,
        ));
    }

    let table = summary_table(
        &options,
        &summary,
        &SummaryNumbers {
            before,
            after,
            peak,
            growth,
            warmup,
            rows,
            ledger_before,
            usage_today,
            mock_stats,
        },
        &checks,
    );
    println!("\n{table}");
    let summary_path = soak_dir.join("summary.md");
    std::fs::write(&summary_path, &table)
        .with_context(|| format!("writing {}", summary_path.display()))?;
    println!("soak: summary written to {}", summary_path.display());

    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(what, _)| what.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "soak checks failed: {}\n(router log: {})",
            failed.join("; "),
            router_log.display()
        );
    }
    Ok(())
}

/// Builds the two packages separately (so router-server's build is the one
/// `conformance` uses too) and copies the binaries out of the shared target directory,
/// where other builds may replace them during the run.
fn build(root: &Path, target: &Path, soak_dir: &Path, release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    for package in ["router-server", "loadkit"] {
        let mut command = process::cargo();
        command.args(["build", "--package", package]);
        if release {
            command.arg("--release");
        }
        process::run(root, &mut command)?;
    }
    let bin_dir = soak_dir.join("bin");
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    for binary in ["router-server", "mock-upstream", "soak"] {
        let built = target.join(profile).join(binary);
        let copy = bin_dir.join(binary);
        std::fs::copy(&built, &copy)
            .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
    }
    Ok(bin_dir)
}

pub(crate) fn spawn_logged(
    name: &'static str,
    command: &mut Command,
    log: &Path,
) -> Result<Guarded> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = command
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Guarded { name, child })
}

/// The `host:port` from the child's `listening on http://ADDR` line.
pub(crate) fn wait_for_address(child: &mut Guarded, log: &Path) -> Result<String> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(address) = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("listening on http://"))
        {
            return Ok(address.trim().to_owned());
        }
        if let Ok(Some(status)) = child.child.try_wait() {
            bail!("{} exited ({status}) before listening:\n{text}", child.name);
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not print its address within {START_WAIT:?}:\n{text}",
                child.name
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config_text(mock_addr: &str, database: &Path) -> String {
    let base_url = format!("http://{mock_addr}/v1");
    let entry = |id: u32, name: &str, extra: &str| {
        format!(
            "  - id: {id}\n    name: {name}\n    provider_model_name: mock-{id}\n    base_url: {base_url}\n    is_openai_compatibility: true\n    provider_api_key: [\"pk-{id}-a\", \"pk-{id}-b\"]\n    enabled: true\n    visible: true\n    max_tokens: 4096\n    input_price_per_token: 0.000001\n    output_price_per_token: 0.000002\n{extra}"
        )
    };
    format!(
        "# Written by `cargo xtask soak`.\n\
         server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 2s\n  sse_keepalive: 500ms\n  first_byte_timeout: 5s\n  idle_timeout: 1s\n  request_timeout: 30s\n\
         models:\n{}{}{}\
         api_keys:\n  - id: 1\n    key: {CLIENT_KEY}\n    name: soak\n    is_active: true\n  - id: 2\n    key: {ADMIN_KEY}\n    name: soak-admin\n    is_active: true\n    admin: true\n\
         limits:\n  database: \"{}\"\n  flush_interval: 100ms\n\
         retry:\n  max_attempts: 3\n  backoff_base: 10ms\n  backoff_max: 100ms\n\
         cooldown:\n  rate_limited: 1s\n  failures_to_open: 5\n  open_for: 1s\n",
        entry(1, "soak", ""),
        entry(2, "soak", ""),
        entry(3, "soak-limited", "    rpm: 30\n"),
        database.display()
    )
}

/// Runs the driver, bounded by the soak's length plus a grace period, and returns its
/// JSON summary.
fn drive(binaries: &Path, router_addr: &str, options: &Options) -> Result<serde_json::Value> {
    let mut command = Command::new(binaries.join("soak"));
    command
        .arg("--router")
        .arg(format!("http://{router_addr}"))
        .args(["--key", CLIENT_KEY, "--admin-key", ADMIN_KEY])
        .args(["--seconds", &options.seconds.to_string()])
        .args(["--concurrency", &options.concurrency.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let child = command.spawn().context("starting soak")?;
    let mut driver = Guarded {
        name: "soak",
        child,
    };
    let mut stdout = driver.child.stdout.take().context("soak's stdout")?;
    // Read on a thread, so the wait below can time out.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(options.seconds + 90);
    let status = loop {
        if let Some(status) = driver.child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            bail!("soak did not stop within {} s of its end", 90);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("soak failed ({status}): {text}");
    }
    serde_json::from_str(text.trim())
        .with_context(|| format!("soak printed no JSON summary: {text}"))
}

/// Requests the driver gave up on before the response head: when rows are missing,
/// this is the first suspect, so the check names it.
fn gave_up_note(summary: &serde_json::Value) -> String {
    match summary
        .pointer("/statuses/gave_up_waiting")
        .and_then(serde_json::Value::as_u64)
    {
        Some(count) if count > 0 => {
            format!(", of which {count} were dropped by the client before the response head")
        }
        _ => String::new(),
    }
}

fn json_u64(value: &serde_json::Value, field: &str) -> Result<u64> {
    value
        .get(field)
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("the soak summary has no `{field}`: {value}"))
}

/// VmRSS and the fd count of `pid`, or `None` once it is gone.
fn sample(pid: u32, at: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample { at, rss_kib, fds })
}

/// The least-squares slope of RSS over time after `warmup` seconds, in KiB per minute.
fn rss_growth_per_minute(samples: &[Sample], warmup: f64) -> Option<f64> {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|sample| sample.at.is_finite() && sample.at >= warmup)
        .map(|sample| (sample.at, sample.rss_kib as f64))
        .collect();
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|(t, _)| t).sum::<f64>() / n;
    let mean_r = points.iter().map(|(_, r)| r).sum::<f64>() / n;
    let covariance: f64 = points
        .iter()
        .map(|(t, r)| (t - mean_t) * (r - mean_r))
        .sum();
    let variance: f64 = points.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    (variance > 0.0).then(|| covariance / variance * 60.0)
}

/// Ledger rows: the `usage` table through the `sqlite3` CLI when it is installed, else
/// `today.requests` from `/v1/usage?all=true`. Polled until it reaches the expected
/// range or the flush wait is over.
fn wait_for_rows(database: &Path, router_addr: &str, low: u64, high: u64) -> Result<Option<u64>> {
    let have_sqlite = process::succeeds(Command::new("sqlite3").arg("-version"));
    let deadline = Instant::now() + FLUSH_WAIT;
    let mut last = None;
    loop {
        let count = if have_sqlite {
            Command::new("sqlite3")
                .arg("-readonly")
                .arg(database)
                .arg("SELECT COUNT(*) FROM usage;")
                .stderr(Stdio::null())
                .output()
                .ok()
                .and_then(|output| String::from_utf8(output.stdout).ok())
                .and_then(|text| text.trim().parse::<u64>().ok())
        } else {
            usage_today(router_addr).ok()
        };
        if count.is_some() {
            last = count;
        }
        if last.is_some_and(|rows| (low..=high).contains(&rows)) || Instant::now() > deadline {
            return Ok(last);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn usage_today(router_addr: &str) -> Result<u64> {
    let body = http_get(router_addr, "/v1/usage?all=true", Some(ADMIN_KEY))?;
    let value: serde_json::Value = serde_json::from_str(&body).context("/v1/usage is not JSON")?;
    value
        .pointer("/today/requests")
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("/v1/usage has no today.requests: {value}"))
}

/// The value of an unlabelled metric from `/metrics`.
fn metric(router_addr: &str, name: &str) -> Result<Option<f64>> {
    let body = http_get(router_addr, "/metrics", None)?;
    Ok(body.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    }))
}

/// A GET over HTTP/1.0, so the answer is neither chunked nor kept alive: enough for
/// the few reads the soak makes, without an HTTP client in xtask.
pub(crate) fn http_get(addr: &str, path: &str, key: Option<&str>) -> Result<String> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = key.map_or(String::new(), |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no HTTP head"))?;
    let ok = head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200");
    if !ok {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

struct SummaryNumbers {
    before: Sample,
    after: Sample,
    peak: u64,
    growth: Option<f64>,
    warmup: f64,
    rows: Option<u64>,
    ledger_before: u64,
    usage_today: Option<u64>,
    mock_stats: Option<String>,
}

fn summary_table(
    options: &Options,
    summary: &serde_json::Value,
    numbers: &SummaryNumbers,
    checks: &[(String, bool)],
) -> String {
    let mut table = String::new();
    let field = |name: &str| {
        summary
            .get(name)
            .map_or("?".to_owned(), ToString::to_string)
    };
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let _ = writeln!(
        table,
        "# soak: {} s, {} clients, {} build\n",
        options.seconds,
        options.concurrency,
        if options.release { "release" } else { "debug" }
    );
    let _ = writeln!(table, "| measure | value |\n|---|---|");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(table, "| {name} | {value} |");
    };
    row("requests sent", field("sent"));
    row(
        "requests per second",
        format!(
            "{:.1}",
            summary
                .get("requests_per_second")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
        ),
    );
    row(
        "authenticated (each must leave a ledger row)",
        field("authenticated"),
    );
    row("unanswered in transport", field("unanswered"));
    row("client disconnects", field("disconnects"));
    row(
        "ledger rows (this run)",
        numbers.rows.map_or("unknown".to_owned(), |rows| {
            (rows - numbers.ledger_before.min(rows)).to_string()
        }),
    );
    row(
        "`/v1/usage` today.requests",
        numbers
            .usage_today
            .map_or("unknown".to_owned(), |n| n.to_string()),
    );
    row("by kind", field("by_kind"));
    row("faults injected", field("by_fault"));
    row("statuses", field("statuses"));
    row("stream endings", field("stream_endings"));
    row(
        "mock upstream /stats",
        numbers
            .mock_stats
            .clone()
            .unwrap_or_else(|| "unknown".to_owned()),
    );
    row("RSS before traffic", mib(numbers.before.rss_kib));
    row("RSS peak", mib(numbers.peak));
    row("RSS after", mib(numbers.after.rss_kib));
    row(
        &format!(
            "RSS growth per minute (linear fit after {:.0} s warm-up)",
            numbers.warmup
        ),
        numbers.growth.map_or("too few samples".to_owned(), |kib| {
            format!("{:+.1} KiB/min", kib)
        }),
    );
    row(
        "open fds before / after",
        format!("{} / {}", numbers.before.fds, numbers.after.fds),
    );
    let _ = writeln!(table, "\n| check | result |\n|---|---|");
    for (what, ok) in checks {
        let _ = writeln!(table, "| {what} | {} |", if *ok { "ok" } else { "FAILED" });
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn options() {
        let check = |list: &[&str], seconds: u64, release: bool| {
            let options = parse_options(&args(list)).unwrap();
            assert_eq!((options.seconds, options.release), (seconds, release));
        };
        check(&[], 60, false);
        check(&["--minutes", "3"], 180, false);
        check(&["--seconds", "20", "--release"], 20, true);
        assert!(parse_options(&args(&["--seconds", "0"])).is_err());
        assert!(parse_options(&args(&["--minutes"])).is_err());
        assert!(parse_options(&args(&["--hours", "1"])).is_err());
        assert!(parse_options(&args(&["--minutes", "100000"])).is_err());
    }

    #[test]
    fn growth_is_a_least_squares_slope() {
        let samples: Vec<Sample> = (0..10)
            .map(|i| Sample {
                at: f64::from(i),
                rss_kib: 1000 + 2 * i as u64,
                fds: 10,
            })
            .collect();
        let growth = rss_growth_per_minute(&samples, 2.0).unwrap();
        assert!((growth - 120.0).abs() < 1e-9, "{growth}");
        assert_eq!(
            rss_growth_per_minute(&samples[..3], 0.0).map(f64::round),
            Some(120.0)
        );
        assert_eq!(rss_growth_per_minute(&samples, 100.0), None);
    }
}
