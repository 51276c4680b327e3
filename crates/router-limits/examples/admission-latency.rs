//! `admission-latency`: what one admission costs, as percentiles, through
//! [`RedisLimiter`] against a real Redis and through [`MemoryLimiter`] (the
//! baseline) in the same run. `cargo xtask bench` runs it against a
//! throwaway redis-server on loopback; the divan bench `admission` gives
//! means only, and the target is a p99.
//!
//! Each admission admits a demand against four limits (client key rpm +
//! tpm, model rpm + tpm, as `benches/admission.rs`), reserving 1000 tokens,
//! and settles it with 600 (the refund path): the time from the call to
//! `admit` to `settle` returning. Redis settles from a task of its own,
//! off the request path, as in the router, so its round trip overlaps the
//! next admission's. A third subject, a `PING` through a connection like the
//! limiter's (redis-rs `ConnectionManager`), is the floor any Redis round
//! trip pays: the difference is the script and the limiter. The three
//! alternate in rounds so that all see the same machine state. One
//! current-thread runtime, as the router has on one core; `--tasks`
//! admissions are in flight at once (each task admits one after another).
//!
//! Usage: `admission-latency --redis-url redis://127.0.0.1:PORT/0
//! [--admissions N] [--tasks T] [--rounds R]`. Prints one JSON line:
//! `{"admissions":N,"tasks":T,"memory":{"p50_us":..,"p99_us":..,
//! "p999_us":..,"max_us":..},"redis":{..},"ping":{..},"fallback_admissions":0,
//! "outages":0,"errors":0}`. Exits 1 when Redis was never reached or an
//! admission failed, fell back or was refused.

// The binary's interface is what it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use router_core::config::{self, Config, LimitsBackend};
use router_core::limits::{Demand, Limiter, Settlement};
use router_limits::{MemoryLimiter, NoPersistence, RedisLimiter, SystemClock};

/// Limits high enough never to refuse: this measures admission, not
/// waiting. `{url}` is replaced by `--redis-url`.
const CONFIG: &str = "
models:
  - name: m
    provider: mock
    rpm: 1000000000000
    tpm: 1000000000000000
    provider_api_key: [pk-one]
api_keys:
  - key: sk-one
    rpm: 1000000000000
    tpm: 1000000000000000
limits:
  backend: redis
  redis:
    url: {url}
    key_prefix: \"bench:\"
    command_timeout: 250ms
";

#[derive(Debug)]
struct Args {
    redis_url: String,
    admissions: usize,
    tasks: usize,
    rounds: usize,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        redis_url: String::new(),
        admissions: 10_000,
        tasks: 1,
        rounds: 10,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let count = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|&count| count > 0)
                .ok_or_else(|| format!("{flag} takes a positive number, not `{value}`"))
        };
        match flag.as_str() {
            "--redis-url" => parsed.redis_url.clone_from(value),
            "--admissions" => parsed.admissions = count()?,
            "--tasks" => parsed.tasks = count()?,
            "--rounds" => parsed.rounds = count()?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if parsed.redis_url.is_empty() {
        return Err("--redis-url is required".to_owned());
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!(
                "admission-latency: {error}\nusage: admission-latency --redis-url URL \
                 [--admissions N] [--tasks T] [--rounds R]"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("admission-latency: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("admission-latency: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<String, String> {
    let yaml = CONFIG.replace("{url}", &args.redis_url);
    let config = config::parse(Path::new("admission-latency.yaml"), &yaml, &|_| None)
        .map_err(|errors| errors.to_string())?;
    let LimitsBackend::Redis(redis_config) = &config.limits.backend else {
        return Err("the config has no redis backend".to_owned());
    };
    let redis =
        Arc::new(RedisLimiter::new(&config, redis_config).map_err(|error| error.to_string())?);
    if !redis.connect(Duration::from_secs(5)).await {
        return Err(format!(
            "redis at {} did not answer within 5 s",
            args.redis_url
        ));
    }
    let memory = MemoryLimiter::new(
        &config,
        SystemClock::new(),
        Vec::new(),
        Arc::new(NoPersistence),
    );
    let ping = ping_connection(&args.redis_url).await?;
    let config = Rc::new(config);
    let memory = Rc::new(Subject::Limiter(Arc::new(memory)));
    let shared = Rc::new(Subject::Limiter(redis.clone()));
    let ping = Rc::new(Subject::Ping(ping));

    // Warm-up: the script is loaded, the connection and allocator are warm.
    for subject in [&memory, &shared, &ping] {
        measure(subject, &config, 200, args.tasks).await?;
    }
    let per_round = args.admissions.div_ceil(args.rounds);
    let (mut memory_times, mut redis_times, mut ping_times) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        memory_times.extend(measure(&memory, &config, per_round, args.tasks).await?);
        redis_times.extend(measure(&shared, &config, per_round, args.tasks).await?);
        ping_times.extend(measure(&ping, &config, per_round, args.tasks).await?);
    }
    // Lets the last settlements reach Redis before the counters are read.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = redis.stats();
    if stats.fallback_admissions > 0 || stats.outages > 0 || !stats.available {
        return Err(format!(
            "redis was not used for every admission: {stats:?} (the figures would be \
             the fallback's)"
        ));
    }
    Ok(format!(
        "{{\"admissions\":{},\"tasks\":{},\"memory\":{},\"redis\":{},\"ping\":{},\"fallback_admissions\":{},\"outages\":{},\"errors\":0}}",
        memory_times.len(),
        args.tasks,
        percentiles(&mut memory_times),
        percentiles(&mut redis_times),
        percentiles(&mut ping_times),
        stats.fallback_admissions,
        stats.outages,
    ))
}

/// What is timed: an admission through a limiter, or a bare round trip.
enum Subject {
    Limiter(Arc<dyn Limiter>),
    Ping(ConnectionManager),
}

impl Subject {
    async fn once(&self, config: &Config) -> Result<Duration, String> {
        match self {
            Self::Limiter(limiter) => admit_and_settle(&**limiter, config).await,
            Self::Ping(connection) => {
                // A clone shares the one multiplexed connection, as the
                // limiter's calls do.
                let mut connection = connection.clone();
                let started = Instant::now();
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .map_err(|error| format!("PING failed: {error}"))?;
                Ok(started.elapsed())
            }
        }
    }
}

/// A connection set up as the limiter sets up its own.
async fn ping_connection(url: &str) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|error| error.to_string())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_millis(50)))
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|error| format!("cannot connect to redis for PING: {error}"))
}

/// `count` admissions (or pings) spread over `tasks` tasks; each one's
/// duration.
async fn measure(
    subject: &Rc<Subject>,
    config: &Rc<Config>,
    count: usize,
    tasks: usize,
) -> Result<Vec<Duration>, String> {
    let per_task = count.div_ceil(tasks);
    let mut handles = Vec::with_capacity(tasks);
    let local = tokio::task::LocalSet::new();
    for _ in 0..tasks {
        let subject = Rc::clone(subject);
        let config = Rc::clone(config);
        handles.push(local.spawn_local(async move {
            let mut times = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                times.push(subject.once(&config).await?);
            }
            Ok::<_, String>(times)
        }));
    }
    local
        .run_until(async move {
            let mut times = Vec::with_capacity(per_task * tasks);
            for handle in handles {
                times.extend(handle.await.map_err(|error| error.to_string())??);
            }
            Ok(times)
        })
        .await
}

async fn admit_and_settle(limiter: &dyn Limiter, config: &Config) -> Result<Duration, String> {
    let demand = Demand {
        key: Some(&config.api_keys[0]),
        entry: &config.models[0],
        provider_key: Some(0),
        tokens: 1000,
        cost_usd: 0.0,
    };
    let started = Instant::now();
    let permit = limiter
        .admit(&demand)
        .await
        .map_err(|error| format!("an admission failed: {error:?}"))?;
    permit.settle(Settlement {
        tokens: 600,
        cost_usd: 0.0,
    });
    Ok(started.elapsed())
}

/// `{"p50_us":..,"p99_us":..,"p999_us":..,"max_us":..}` (nearest rank).
fn percentiles(times: &mut [Duration]) -> String {
    times.sort_unstable();
    let at = |quantile: f64| {
        let rank = ((quantile * times.len() as f64).ceil() as usize).clamp(1, times.len().max(1));
        times
            .get(rank - 1)
            .map_or(f64::NAN, |time| time.as_secs_f64() * 1e6)
    };
    format!(
        "{{\"p50_us\":{:.2},\"p99_us\":{:.2},\"p999_us\":{:.2},\"max_us\":{:.2}}}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}
