//! Scenario 8, shared limits: what `limits.backend: redis` costs against the
//! in-process limiter, measured in the same run.
//!
//! A throwaway redis-server (no persistence, a free loopback port, on the load core
//! when pinning: the router's core stays the router's) is started for the scenario and
//! stopped by its pid at the end. Two measures:
//!
//! - admission latency: router-limits' `admission-latency` example, on the router's
//!   core, runs sequential admissions (admit + settle against client key rpm + tpm and
//!   model rpm + tpm) through `RedisLimiter` and `MemoryLimiter` alternately, and
//!   prints their percentiles, with a bare `PING` round trip as the floor; once more
//!   with [`IN_FLIGHT`] admissions at a time;
//! - throughput: a router with the features-on config plus the `limits.backend: redis`
//!   block, alternating with the features-on router (memory limits) at
//!   [`CONNECTIONS`] connections, with the CPU the routers and redis-server used
//!   (so the table tells whether the router's core or Redis' was the limit).
//!
//! A run that fell back to memory (Redis not answering within `command_timeout`) is a
//! failure, not a figure: the example exits non-zero, and the router's
//! `router_shared_limits_fallback_admissions_total` must read 0 afterwards. The bench
//! sets `command_timeout: 250ms` (the default is 50 ms): it measures what Redis
//! answers in, and a timeout only decides when an admission stops waiting, so a
//! generous one keeps a noisy machine's slowest answers in the figures instead of
//! failing the run.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{start_router, Bench, Options, Pinning, Run, Scenario, Spread, Target, CLIENT_KEY};
use crate::soak::{http_get, spawn_logged, Guarded};

/// Connections of the throughput comparison (as the issue asks).
const CONNECTIONS: u32 = 32;
/// Admissions in flight at once in the second latency measure.
const IN_FLIGHT: u32 = 8;
/// The issue's targets.
const TARGET_P99_US: f64 = 1000.0;
const TARGET_RATIO: f64 = 0.5;
/// The counters that must stay 0 for the router's figures to be Redis's.
const FALLBACK_METRICS: [&str; 2] = [
    "router_shared_limits_fallback_admissions_total",
    "router_shared_limits_unavailable_refusals_total",
];
/// How long redis-server gets to answer PING.
const START_WAIT: Duration = Duration::from_secs(10);
/// How many fresh ports `start_redis` tries when the one it picked was taken.
const PORT_ATTEMPTS: usize = 3;

/// redis-server, or a clear error naming the package: the scenario is part of every
/// bench run, never skipped.
pub(super) fn redis_program() -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
        .context(
            "`redis-server` is not installed; the bench measures the shared limits against \
             it (Debian: `apt-get install -y redis-server`)",
        )
}

/// The `limits:` lines that put a router's limits in the Redis at `url`.
pub(super) fn limits_block(url: &str) -> String {
    format!(
        "  backend: redis\n  redis:\n    url: {url}\n    key_prefix: \"bench:\"\n    command_timeout: 250ms\n"
    )
}

/// A running redis-server, killed by its pid when dropped.
struct RedisServer {
    server: Guarded,
    port: u16,
}

impl RedisServer {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

fn start_redis(program: &Path, run_dir: &Path, core: Option<&str>) -> Result<RedisServer> {
    let dir = run_dir.join("redis");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free port")?
            .port();
        let log = run_dir.join("redis-server.log");
        let mut command = Pinning::command(core, program);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null());
        let mut server = spawn_logged(
            "redis-server",
            &mut command,
            &run_dir.join("redis-server.stderr"),
        )?;
        let started = Instant::now();
        loop {
            if answers_ping(port) {
                return Ok(RedisServer { server, port });
            }
            if !server.child_alive() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if attempt < PORT_ATTEMPTS && text.contains("Address already in use") {
                    break;
                }
                bail!("redis-server exited before answering PING:\n{text}");
            }
            if started.elapsed() > START_WAIT {
                bail!(
                    "redis-server did not answer PING within {START_WAIT:?} (log in {})",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An inline `PING` answered by `+PONG`.
fn answers_ping(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

/// Percentiles of one limiter in one `admission-latency` run, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Percentiles {
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) p999: f64,
}

/// One `admission-latency` run: memory and Redis side by side, and a bare round trip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Latency {
    pub(super) memory: Percentiles,
    pub(super) redis: Percentiles,
    pub(super) ping: Percentiles,
}

/// `admission-latency`'s JSON line; `None` unless it has both sides and no fallback.
fn parse_latency(text: &str) -> Option<Latency> {
    let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    let number = |pointer: &str| value.pointer(pointer).and_then(serde_json::Value::as_f64);
    let side = |name: &str| {
        Some(Percentiles {
            p50: number(&format!("/{name}/p50_us"))?,
            p99: number(&format!("/{name}/p99_us"))?,
            p999: number(&format!("/{name}/p999_us"))?,
        })
    };
    if number("/fallback_admissions")? != 0.0 || number("/errors")? != 0.0 {
        return None;
    }
    Some(Latency {
        memory: side("memory")?,
        redis: side("redis")?,
        ping: side("ping")?,
    })
}

/// CPU time (user + system) `pid` has used, in seconds, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields 14 and 15 (utime, stime) of a `/proc/PID/stat` line, in clock ticks of
/// 1/100 s (USER_HZ on Linux). The command name may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// Busy and total clock ticks of `core` so far, from its `cpuN` line in `/proc/stat`.
fn core_ticks(core: &str) -> Option<(u64, u64)> {
    parse_core_ticks(&std::fs::read_to_string("/proc/stat").ok()?, core)
}

/// Idle and iowait are the ticks in which the core had nothing to run.
fn parse_core_ticks(stat: &str, core: &str) -> Option<(u64, u64)> {
    let line = stat
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cpu{core} ")))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// What `work` returned; the share of one core each of `pids` used while it ran,
/// followed by the share of `core` that was busy (NaN when not pinned or unreadable).
fn busy<T>(
    pids: &[u32],
    core: Option<&str>,
    work: impl FnOnce() -> Result<T>,
) -> Result<(T, Vec<f64>)> {
    let before: Vec<Option<f64>> = pids.iter().map(|&pid| cpu_seconds(pid)).collect();
    let core_before = core.and_then(core_ticks);
    let started = Instant::now();
    let value = work()?;
    let wall = started.elapsed().as_secs_f64();
    let mut shares: Vec<f64> = pids
        .iter()
        .zip(before)
        .map(|(&pid, before)| match (before, cpu_seconds(pid)) {
            (Some(before), Some(after)) if wall > 0.0 => (after - before) / wall,
            _ => f64::NAN,
        })
        .collect();
    shares.push(match (core_before, core.and_then(core_ticks)) {
        (Some((busy, total)), Some((busy_after, total_after))) if total_after > total => {
            (busy_after - busy) as f64 / (total_after - total) as f64
        }
        _ => f64::NAN,
    });
    Ok((value, shares))
}

/// The value of an unlabelled metric in OpenMetrics text.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (metric, value) = line.trim().split_once(' ')?;
        if metric == name {
            value.split_whitespace().next()?.parse().ok()
        } else {
            None
        }
    })
}

/// What scenario 8 measured.
pub(super) struct SharedLimitsRuns {
    /// One admission at a time, per repetition.
    pub(super) sequential: Vec<Latency>,
    /// [`IN_FLIGHT`] admissions at a time, per repetition.
    pub(super) in_flight: Vec<Latency>,
    pub(super) admissions: u32,
    /// (memory, redis) per repetition, at [`CONNECTIONS`].
    pub(super) throughput: Vec<(Run, Run)>,
    /// Per repetition, shares of a core: during the memory run, its router and the
    /// load core; during the redis run, its router, redis-server and the load core.
    pub(super) cpu: Vec<[f64; 5]>,
    /// The router's fallback counters after the runs (name, value).
    pub(super) fallbacks: Vec<(&'static str, f64)>,
}

/// Scenario 8. `memory` is the features-on router (memory limits); a router with the
/// same config and Redis limits is started here and stopped before this returns, and
/// so is redis-server.
pub(super) fn run(
    bench: &mut Bench,
    options: &Options,
    redis_program: &Path,
    mock_addr: &str,
    (memory, memory_pid): (&Target, u32),
) -> Result<SharedLimitsRuns> {
    println!("bench: 8. shared limits: Redis versus memory");
    let redis = start_redis(redis_program, &bench.run_dir, bench.pinning.load)?;
    println!(
        "bench:   redis-server on 127.0.0.1:{} (pid {})",
        redis.port,
        redis.server.id()
    );
    let admissions: u32 = if options.quick { 5_000 } else { 50_000 };
    let mut runs = SharedLimitsRuns {
        sequential: Vec::new(),
        in_flight: Vec::new(),
        admissions,
        throughput: Vec::new(),
        cpu: Vec::new(),
        fallbacks: Vec::new(),
    };
    // A run that failed (one admission fell back, say) is recorded and the others go
    // on, so the summary is still written before the bench fails.
    for _ in 0..options.reps {
        for (tasks, into) in [(1, &mut runs.sequential), (IN_FLIGHT, &mut runs.in_flight)] {
            match admission_latency(bench, &redis.url(), admissions, tasks) {
                Ok(latency) => into.push(latency),
                Err(error) => {
                    let line = format!("admission-latency, {tasks} in flight: {error:#}");
                    println!("bench:   FAILURE {line}");
                    bench.failures.push(line);
                }
            }
        }
    }

    let (mut router, addr) = start_router(
        &bench.bin_dir,
        &bench.run_dir,
        &bench.pinning,
        mock_addr,
        "router-redis",
        true,
        Some(&redis.url()),
    )?;
    let target = Target {
        label: "router-redis",
        url: format!("http://{addr}/v1/chat/completions"),
        auth: true,
    };
    println!(
        "bench:   router (features on, redis limits) on {addr} (pid {})",
        router.id()
    );
    bench.wrk(&target, CONNECTIONS, 1)?;
    let seconds = options.seconds(Scenario::Throughput);
    let (router_pid, redis_pid) = (router.id(), redis.server.id());
    for _ in 0..options.reps {
        let load_core = bench.pinning.load;
        let (memory_run, memory_cpu) = busy(&[memory_pid], load_core, || {
            bench.wrk(memory, CONNECTIONS, seconds)
        })?;
        let (redis_run, redis_cpu) = busy(&[router_pid, redis_pid], load_core, || {
            bench.wrk(&target, CONNECTIONS, seconds)
        })?;
        runs.throughput.push((memory_run, redis_run));
        runs.cpu.push([
            memory_cpu[0],
            memory_cpu[1],
            redis_cpu[0],
            redis_cpu[1],
            redis_cpu[2],
        ]);
    }
    let metrics = http_get(&addr, "/metrics", Some(CLIENT_KEY))
        .context("reading /metrics of the router with redis limits")?;
    for name in FALLBACK_METRICS {
        match metric_value(&metrics, name) {
            Some(0.0) => runs.fallbacks.push((name, 0.0)),
            Some(value) => {
                runs.fallbacks.push((name, value));
                let line =
                    format!("router-redis: {name} is {value}: admissions did not all go to Redis");
                println!("bench:   FAILURE {line}");
                bench.failures.push(line);
            }
            None => bail!("the router's /metrics has no {name}:\n{metrics}"),
        }
    }
    if !router.child_alive() {
        bench
            .failures
            .push("router-redis exited during the bench".to_owned());
    }
    drop(router);
    drop(redis);
    Ok(runs)
}

/// One `admission-latency` run on the router's core.
fn admission_latency(bench: &mut Bench, url: &str, admissions: u32, tasks: u32) -> Result<Latency> {
    let mut command = Pinning::command(
        bench.pinning.router,
        &bench.bin_dir.join("admission-latency"),
    );
    command
        .args(["--redis-url", url])
        .args(["--admissions", &admissions.to_string()])
        .args(["--tasks", &tasks.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let output = command.output().context("starting admission-latency")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "admission-latency failed ({}), so these are no Redis figures: {text}",
            output.status
        );
    }
    let latency = parse_latency(&text)
        .with_context(|| format!("admission-latency printed no usable summary: {text}"))?;
    let line = format!(
        "admission-latency {admissions} admissions, {tasks} in flight: {}",
        text.trim()
    );
    println!("bench:   {line}");
    bench.log.push(line);
    Ok(latency)
}

/// Scenario 8's section of the table.
pub(super) fn section(out: &mut String, options: &Options, runs: &SharedLimitsRuns) {
    let _ = writeln!(
        out,
        "## 8. Shared limits: `limits.backend: redis` versus memory\n"
    );
    let _ = writeln!(
        out,
        "A redis-server on loopback (no persistence) on the load core: idle but for the \
         bench during the admission runs, beside wrk and the mock (competing with them for \
         that core) during the throughput runs. **Admission**: router-limits' \
         `admission-latency` on the router's core, {} admissions per run and limiter, \
         each an admit and a settle (reserve 1000 tokens, settle 600) against client key \
         rpm + tpm and model rpm + tpm, through `RedisLimiter` (one EVALSHA; the \
         settlement is one more on the same connection, sent from its own task as in the \
         router, so it overlaps the next admission) and `MemoryLimiter` alternately, on \
         one current-thread runtime; \"in flight\" runs that many admitting tasks at once. \
         A `PING` through the same kind of connection (redis-rs `ConnectionManager`), \
         in the same rounds, is the floor of any Redis round trip on this machine. The \
         redis / memory column is the ratio within each run. **Throughput**: the \
         features-on router (memory limits) and the same config with `backend: redis` \
         (every limit of scenario 6 in Redis: key rps/rpm/tpm/tpd, model rpm/tpm, the \
         monthly budget), {CONNECTIONS} connections, {} s per run, alternating; CPU is \
         user + system time from `/proc` over each run's wall time: a router well under \
         100 % of its core was held back by something else (Redis, or the load core \
         that Redis shares with wrk and the mock, whose busy share from `/proc/stat` \
         is the last row). A run that fell back to memory fails \
         the bench.\n",
        runs.admissions,
        options.seconds(Scenario::Throughput)
    );
    let _ = writeln!(
        out,
        "| measure | memory | redis | redis / memory | target |\n|---|---|---|---|---|"
    );
    let spread = |values: Vec<f64>| Spread::of(&values);
    let latency_row = |name: &str, runs: &[Latency], target: &str| {
        let pick = |side: fn(&Latency) -> Percentiles, which: fn(&Percentiles) -> f64| {
            spread(runs.iter().map(|run| which(&side(run))).collect())
        };
        let ratio = |which: fn(&Percentiles) -> f64| {
            spread(
                runs.iter()
                    .map(|run| which(&run.redis) / which(&run.memory))
                    .collect(),
            )
        };
        let p50 = |p: &Percentiles| p.p50;
        let p99 = |p: &Percentiles| p.p99;
        format!(
            "| {name} | {} / {} | {} / {} | {} / {} | {target} |",
            pick(|run| run.memory, p50).show(2, ""),
            pick(|run| run.memory, p99).show(2, ""),
            pick(|run| run.redis, p50).show(1, ""),
            pick(|run| run.redis, p99).show(1, ""),
            ratio(p50).show(0, "×"),
            ratio(p99).show(0, "×"),
        )
    };
    let p99 = spread(runs.sequential.iter().map(|run| run.redis.p99).collect()).median;
    let _ = writeln!(
        out,
        "{}",
        latency_row(
            "admission p50/p99 with Redis (µs), memory baseline",
            &runs.sequential,
            &format!(
                "p99 < 1 ms: {}",
                if p99 < TARGET_P99_US {
                    "met"
                } else {
                    "NOT met"
                }
            ),
        )
    );
    let _ = writeln!(
        out,
        "| admission p99.9 (µs) | {} | {} | {} | |",
        spread(runs.sequential.iter().map(|run| run.memory.p999).collect()).show(2, ""),
        spread(runs.sequential.iter().map(|run| run.redis.p999).collect()).show(1, ""),
        spread(
            runs.sequential
                .iter()
                .map(|run| run.redis.p999 / run.memory.p999)
                .collect()
        )
        .show(0, "×"),
    );
    let _ = writeln!(
        out,
        "{}",
        latency_row(
            &format!("admission p50/p99, {IN_FLIGHT} in flight (µs)"),
            &runs.in_flight,
            ""
        )
    );
    let _ = writeln!(
        out,
        "| Redis round trip floor: PING p50/p99 (µs); last column admission / PING | | {} / {} | {} / {} | |",
        spread(runs.sequential.iter().map(|run| run.ping.p50).collect()).show(1, ""),
        spread(runs.sequential.iter().map(|run| run.ping.p99).collect()).show(1, ""),
        spread(runs.sequential.iter().map(|run| run.redis.p50 / run.ping.p50).collect()).show(1, "×"),
        spread(runs.sequential.iter().map(|run| run.redis.p99 / run.ping.p99).collect()).show(1, "×"),
    );
    let rates = |pick: fn(&(Run, Run)) -> f64| spread(runs.throughput.iter().map(pick).collect());
    let ratio = rates(|(memory, redis)| redis.rate() / memory.rate());
    let _ = writeln!(
        out,
        "| throughput redis / memory, {CONNECTIONS} connections (req/s) | {} | {} | {} | ≥ 0.5: {} |",
        rates(|(memory, _)| memory.rate()).show(0, ""),
        rates(|(_, redis)| redis.rate()).show(0, ""),
        ratio.show(3, ""),
        if ratio.median >= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        },
    );
    let _ = writeln!(
        out,
        "| p99 latency, {CONNECTIONS} connections (ms) | {} | {} | {} | |",
        rates(|(memory, _)| memory.p99_us / 1000.0).show(2, ""),
        rates(|(_, redis)| redis.p99_us / 1000.0).show(2, ""),
        rates(|(memory, redis)| redis.p99_us / memory.p99_us).show(2, ""),
    );
    let cpu = |index: usize| {
        spread(
            runs.cpu
                .iter()
                .map(|shares| shares[index] * 100.0)
                .collect(),
        )
    };
    let _ = writeln!(
        out,
        "| router CPU during the runs (% of its core) | {} | {} | {} | |",
        cpu(0).show(0, " %"),
        cpu(2).show(0, " %"),
        spread(
            runs.cpu
                .iter()
                .map(|shares| shares[2] / shares[0])
                .collect()
        )
        .show(2, ""),
    );
    let _ = writeln!(
        out,
        "| router CPU per request (µs) | {} | {} | {} | |",
        spread(
            runs.cpu
                .iter()
                .zip(&runs.throughput)
                .map(|(shares, (memory, _))| shares[0] / memory.rate() * 1e6)
                .collect()
        )
        .show(1, ""),
        spread(
            runs.cpu
                .iter()
                .zip(&runs.throughput)
                .map(|(shares, (_, redis))| shares[2] / redis.rate() * 1e6)
                .collect()
        )
        .show(1, ""),
        spread(
            runs.cpu
                .iter()
                .zip(&runs.throughput)
                .map(|(shares, (memory, redis))| {
                    (shares[2] / redis.rate()) / (shares[0] / memory.rate())
                })
                .collect()
        )
        .show(2, ""),
    );
    let _ = writeln!(
        out,
        "| redis-server CPU (% of a core) | | {} | | |",
        cpu(3).show(0, " %"),
    );
    let _ = writeln!(
        out,
        "| load core busy (wrk, the mock; and redis-server in the redis runs) | {} | {} | | |",
        cpu(1).show(0, " %"),
        cpu(4).show(0, " %"),
    );
    let errors: u64 = runs
        .throughput
        .iter()
        .map(|(memory, redis)| memory.errors + redis.errors)
        .sum();
    let fallbacks = runs
        .fallbacks
        .iter()
        .map(|(name, value)| format!("`{name}` {value}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "\nErrors in scenario 8: {errors}. After the runs, the router with Redis limits: {fallbacks}.\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_line_is_parsed() {
        let line = r#"{"admissions":10,"tasks":1,"memory":{"p50_us":0.66,"p99_us":0.95,"p999_us":6.38,"max_us":24.04},"redis":{"p50_us":109.94,"p99_us":764.05,"p999_us":4086.99,"max_us":8011.16},"ping":{"p50_us":23.5,"p99_us":40.1,"p999_us":90.2,"max_us":200.0},"fallback_admissions":0,"outages":0,"errors":0}"#;
        let latency = parse_latency(&format!("{line}\n")).unwrap();
        assert_eq!(latency.memory.p50, 0.66);
        assert_eq!(latency.redis.p99, 764.05);
        assert_eq!(latency.redis.p999, 4086.99);
        assert_eq!(latency.ping.p50, 23.5);
        // A run that fell back is no figure.
        assert!(parse_latency(
            &line.replace("\"fallback_admissions\":0", "\"fallback_admissions\":3")
        )
        .is_none());
        assert!(parse_latency(&line.replace("\"redis\"", "\"other\"")).is_none());
        assert!(parse_latency("not json").is_none());
    }

    #[test]
    fn cpu_time_is_utime_plus_stime() {
        // A command name with a space and a parenthesis; utime 250, stime 50 ticks.
        let stat = "4242 (router (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("4242 (short) S 1 2"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn core_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  10 0 10 100 5 0 0 0 0 0\n\
                    cpu0 4 0 6 50 2 0 0 0 0 0\n\
                    cpu1 6 1 4 50 3 1 1 0 0 0\n\
                    intr 1 2 3\n";
        assert_eq!(parse_core_ticks(stat, "0"), Some((10, 62)));
        assert_eq!(parse_core_ticks(stat, "1"), Some((13, 66)));
        assert_eq!(parse_core_ticks(stat, "2"), None);
        assert!(core_ticks("0").is_some());
    }

    #[test]
    fn metric_values_are_read_by_exact_name() {
        let text = "# TYPE router_shared_limits_fallback_admissions counter\n\
                    router_shared_limits_fallback_admissions_total 0\n\
                    router_shared_limits_unavailable_refusals_total 12\n\
                    router_shared_limits_outages_total_other 5\n# EOF\n";
        let check = |name: &str, expected: Option<f64>| {
            assert_eq!(metric_value(text, name), expected, "{name}");
        };
        check("router_shared_limits_fallback_admissions_total", Some(0.0));
        check(
            "router_shared_limits_unavailable_refusals_total",
            Some(12.0),
        );
        check("router_shared_limits_outages_total", None);
        check("router_shared_limits_fallback_admissions", None);
    }

    #[test]
    fn redis_block_sits_under_limits() {
        let text = super::super::config_text(
            "127.0.0.1:9",
            Path::new("/tmp/bench.db"),
            true,
            Some("redis://127.0.0.1:6390/0"),
        );
        let limits = text.split_once("\nlimits:\n").unwrap().1;
        assert!(limits.contains(
            "  backend: redis\n  redis:\n    url: redis://127.0.0.1:6390/0\n    key_prefix: \"bench:\"\n    command_timeout: 250ms\n"
        ));
        assert_eq!(text.matches("limits:").count(), 1);
        assert!(
            !super::super::config_text("127.0.0.1:9", Path::new("/tmp/bench.db"), true, None)
                .contains("redis")
        );
    }
}
