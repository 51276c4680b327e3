//! `soak --router URL --key KEY --admin-key KEY --minutes N --concurrency C`: mixed
//! traffic against a router on a loopback address, then a JSON summary on stdout.
//!
//! Each worker loops until the deadline (or the request cap), picking a kind of request
//! at random: plain and streamed answers, faults injected through the mock upstream's
//! message words, streams the client drops half way, requests it gives up on before the
//! head, a rate-limited model, and bad requests (wrong key, broken JSON, unknown model).
//! The summary counts requests by kind, statuses, stream endings and disconnects, and
//! how many requests authenticated: each of those must leave one ledger row.

// The summary on stdout is this binary's output; errors go to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use loadkit::{is_loopback_http_url, Fault, Rng};
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "soak",
    about = "Mixed traffic against a router on a loopback address"
)]
struct Args {
    /// The router's base URL, e.g. http://127.0.0.1:8316 (loopback only).
    #[arg(long)]
    router: String,
    /// A client key.
    #[arg(long)]
    key: String,
    /// An admin key, to read the ledger's count before the run.
    #[arg(long)]
    admin_key: String,
    /// How long to drive traffic, in minutes.
    #[arg(long, default_value_t = 1)]
    minutes: u64,
    /// How long to drive traffic, in seconds (instead of --minutes).
    #[arg(long)]
    seconds: Option<u64>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Stop after this many requests even if time remains.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// The model name with unlimited entries behind it.
    #[arg(long, default_value = "soak")]
    model: String,
    /// A model with a tight rpm limit, so some requests are refused with 429.
    #[arg(long, default_value = "soak-limited")]
    limited_model: String,
    /// Seed of the traffic mix (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// The longest the driver waits for one whole answer.
    #[arg(long, default_value_t = 30)]
    request_timeout_seconds: u64,
}

/// Longest run allowed, whatever the flags say: the driver must stop by itself.
const MAX_RUN: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Plain,
    Stream,
    FaultPlain,
    FaultStream,
    /// A stream the client drops after a few frames.
    DisconnectStream,
    /// A request the client gives up on before the response head.
    DisconnectWaiting,
    Limited,
    BadKey,
    BadJson,
    UnknownModel,
}

/// Kinds with their weights out of 100.
const MIX: [(Kind, u64); 10] = [
    (Kind::Plain, 20),
    (Kind::Stream, 20),
    (Kind::FaultPlain, 12),
    (Kind::FaultStream, 12),
    (Kind::DisconnectStream, 8),
    (Kind::DisconnectWaiting, 4),
    (Kind::Limited, 10),
    (Kind::BadKey, 4),
    (Kind::BadJson, 5),
    (Kind::UnknownModel, 5),
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Stream => "stream",
            Kind::FaultPlain => "fault_plain",
            Kind::FaultStream => "fault_stream",
            Kind::DisconnectStream => "disconnect_stream",
            Kind::DisconnectWaiting => "disconnect_waiting",
            Kind::Limited => "limited",
            Kind::BadKey => "bad_key",
            Kind::BadJson => "bad_json",
            Kind::UnknownModel => "unknown_model",
        }
    }

    fn pick(rng: &mut Rng) -> Self {
        let mut roll = rng.below(MIX.iter().map(|(_, weight)| weight).sum());
        for (kind, weight) in MIX {
            if roll < weight {
                return kind;
            }
            roll -= weight;
        }
        Kind::Plain
    }
}

/// What one worker saw; merged at the end, so workers share nothing but the cap.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    /// Sent with a valid key and a JSON content type: each leaves one ledger row.
    authenticated: u64,
    by_kind: BTreeMap<&'static str, u64>,
    by_fault: BTreeMap<&'static str, u64>,
    statuses: BTreeMap<String, u64>,
    stream_endings: BTreeMap<&'static str, u64>,
    disconnects: u64,
    /// Authenticated requests that failed in transport before a response head: the
    /// router may or may not have seen them.
    unanswered: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.authenticated += other.authenticated;
        self.disconnects += other.disconnects;
        self.unanswered += other.unanswered;
        for (key, count) in other.by_kind {
            *self.by_kind.entry(key).or_default() += count;
        }
        for (key, count) in other.by_fault {
            *self.by_fault.entry(key).or_default() += count;
        }
        for (key, count) in other.statuses {
            *self.statuses.entry(key).or_default() += count;
        }
        for (key, count) in other.stream_endings {
            *self.stream_endings.entry(key).or_default() += count;
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Driver {
    client: HttpClient,
    chat_uri: Uri,
    key: String,
    model: String,
    limited_model: String,
    deadline: Instant,
    max_requests: u64,
    started_requests: AtomicU64,
    request_timeout: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !is_loopback_http_url(&args.router) {
        eprintln!(
            "soak: --router must be an http:// URL on a loopback address (127.0.0.1, ::1, localhost), not `{}`",
            args.router
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("soak: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("soak: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<String, String> {
    let base = args.router.trim_end_matches('/');
    let chat_uri: Uri = format!("{base}/v1/chat/completions")
        .parse()
        .map_err(|error| format!("bad --router: {error}"))?;
    let usage_uri: Uri = format!("{base}/v1/usage?all=true")
        .parse()
        .map_err(|error| format!("bad --router: {error}"))?;
    let duration = args
        .seconds
        .map_or(
            Duration::from_secs(args.minutes.saturating_mul(60)),
            Duration::from_secs,
        )
        .min(MAX_RUN);
    let concurrency = args.concurrency.clamp(1, 4096);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(5))
        .build(connector);

    let ledger_before = today_requests(&client, &usage_uri, &args.admin_key).await?;

    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64)
    });
    let started = Instant::now();
    let driver = Arc::new(Driver {
        client: client.clone(),
        chat_uri,
        key: args.key.clone(),
        model: args.model.clone(),
        limited_model: args.limited_model.clone(),
        deadline: started + duration,
        max_requests: args.max_requests,
        started_requests: AtomicU64::new(0),
        request_timeout: Duration::from_secs(args.request_timeout_seconds.max(1)),
    });
    let workers: Vec<_> = (0..concurrency)
        .map(|index| {
            let driver = Arc::clone(&driver);
            let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F));
            tokio::spawn(async move { driver.work(&mut rng).await })
        })
        .collect();
    let mut tally = Tally::default();
    for worker in workers {
        match worker.await {
            Ok(worker_tally) => tally.merge(worker_tally),
            Err(error) => return Err(format!("a worker failed: {error}")),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "seed": seed,
        "seconds": elapsed,
        "concurrency": concurrency,
        "sent": tally.sent,
        "requests_per_second": tally.sent as f64 / elapsed.max(1e-9),
        "authenticated": tally.authenticated,
        "unanswered": tally.unanswered,
        "disconnects": tally.disconnects,
        "ledger_before": ledger_before,
        "by_kind": tally.by_kind,
        "by_fault": tally.by_fault,
        "statuses": tally.statuses,
        "stream_endings": tally.stream_endings,
    })
    .to_string())
}

/// `today.requests` of `/v1/usage?all=true`, read with the admin key.
async fn today_requests(client: &HttpClient, uri: &Uri, admin_key: &str) -> Result<u64, String> {
    let request = Request::get(uri.clone())
        .header(AUTHORIZATION, format!("Bearer {admin_key}"))
        .body(Full::new(Bytes::new()))
        .map_err(|error| error.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "GET /v1/usage timed out".to_owned())?
        .map_err(|error| format!("GET /v1/usage: {error}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("GET /v1/usage body: {error}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "GET /v1/usage with the admin key answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|error| format!("GET /v1/usage: {error}"))?;
    value
        .pointer("/today/requests")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("GET /v1/usage has no today.requests: {value}"))
}

/// One request as the worker builds it.
struct Planned {
    kind: Kind,
    body: Bytes,
    key: bool,
    stream: bool,
    /// Frames to read before dropping the stream.
    drop_after_frames: Option<u32>,
    /// Give up before the head after this long.
    give_up_after: Option<Duration>,
    fault: Option<Fault>,
}

impl Driver {
    async fn work(&self, rng: &mut Rng) -> Tally {
        let mut tally = Tally::default();
        while Instant::now() < self.deadline
            && self.started_requests.fetch_add(1, Ordering::Relaxed) < self.max_requests
        {
            let planned = self.plan(rng);
            self.send(planned, &mut tally).await;
        }
        tally
    }

    fn plan(&self, rng: &mut Rng) -> Planned {
        let kind = Kind::pick(rng);
        let mut stream = rng.below(2) == 0;
        let mut model = self.model.as_str();
        let mut words = format!("chunks:{}", 1 + rng.below(16));
        let mut fault = None;
        let mut drop_after_frames = None;
        let mut give_up_after = None;
        let mut key = true;
        match kind {
            Kind::Plain => stream = false,
            Kind::Stream => {
                stream = true;
                words = format!("chunks:{} gap:{}", 1 + rng.below(32), rng.below(4));
            }
            Kind::FaultPlain | Kind::FaultStream => {
                stream = kind == Kind::FaultStream;
                let chosen = Fault::ALL[rng.below(Fault::ALL.len() as u64) as usize];
                fault = Some(chosen);
                // An upstream 429 rests the provider key for its Retry-After: sent to
                // the main model, a few of them would keep every key resting and turn
                // the rest of the traffic into refusals.
                if chosen == Fault::Status429 {
                    model = self.limited_model.as_str();
                }
                words = format!(
                    "fault:{} chunks:{} stall:1500",
                    chosen.name(),
                    2 + rng.below(10)
                );
            }
            Kind::DisconnectStream => {
                stream = true;
                words = "chunks:40 gap:20".to_owned();
                drop_after_frames = Some(1 + rng.below(4) as u32);
            }
            Kind::DisconnectWaiting => {
                words = "delay:400 chunks:4".to_owned();
                give_up_after = Some(Duration::from_millis(50 + rng.below(150)));
            }
            Kind::Limited => model = self.limited_model.as_str(),
            Kind::BadKey => key = false,
            Kind::UnknownModel => model = "no-such-model",
            Kind::BadJson => {}
        }
        let body = if kind == Kind::BadJson {
            Bytes::from_static(br#"{"model": "soak", "messages": [ {"role": "user""#)
        } else {
            let text = format!("soak traffic {words}");
            Bytes::from(
                serde_json::json!({
                    "model": model,
                    "stream": stream,
                    "messages": [{"role": "user", "content": text}],
                })
                .to_string(),
            )
        };
        Planned {
            kind,
            body,
            key,
            stream,
            drop_after_frames,
            give_up_after,
            fault,
        }
    }

    async fn send(&self, planned: Planned, tally: &mut Tally) {
        tally.sent += 1;
        *tally.by_kind.entry(planned.kind.name()).or_default() += 1;
        if let Some(fault) = planned.fault {
            *tally.by_fault.entry(fault.name()).or_default() += 1;
        }
        if planned.key {
            tally.authenticated += 1;
        }
        let key = if planned.key {
            format!("Bearer {}", self.key)
        } else {
            "Bearer sk-soak-wrong-key".to_owned()
        };
        let request = match Request::builder()
            .method(Method::POST)
            .uri(self.chat_uri.clone())
            .header(AUTHORIZATION, key)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(planned.body))
        {
            Ok(request) => request,
            Err(_) => {
                *tally.statuses.entry("unbuildable".to_owned()).or_default() += 1;
                return;
            }
        };
        let head_timeout = planned.give_up_after.unwrap_or(self.request_timeout);
        let response = match tokio::time::timeout(head_timeout, self.client.request(request)).await
        {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => {
                *tally
                    .statuses
                    .entry("transport_error".to_owned())
                    .or_default() += 1;
                if planned.key {
                    tally.unanswered += 1;
                }
                return;
            }
            Err(_) => {
                if planned.give_up_after.is_some() {
                    tally.disconnects += 1;
                    *tally
                        .statuses
                        .entry("gave_up_waiting".to_owned())
                        .or_default() += 1;
                } else {
                    *tally.statuses.entry("timeout".to_owned()).or_default() += 1;
                }
                return;
            }
        };
        *tally
            .statuses
            .entry(response.status().as_u16().to_string())
            .or_default() += 1;
        let is_stream = planned.stream && response.status().is_success();
        let mut body = response.into_body();
        let mut frames = 0;
        let mut tail: Vec<u8> = Vec::new();
        let read = tokio::time::timeout(self.request_timeout, async {
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        frames += 1;
                        if let Some(data) = frame.data_ref() {
                            // Only the end matters: `[DONE]` or an error event.
                            tail.extend_from_slice(&data[data.len().saturating_sub(256)..]);
                            let excess = tail.len().saturating_sub(256);
                            tail.drain(..excess);
                        }
                        if planned
                            .drop_after_frames
                            .is_some_and(|limit| frames >= limit)
                        {
                            return "dropped";
                        }
                    }
                    Some(Err(_)) => return "cut",
                    None => return "ended",
                }
            }
        })
        .await;
        let ending = match read {
            Ok("dropped") => {
                tally.disconnects += 1;
                "client_dropped"
            }
            Ok("cut") => "cut",
            Ok(_) if !is_stream => return,
            Ok(_) => {
                let tail = String::from_utf8_lossy(&tail);
                if tail.contains("data: [DONE]") {
                    "done"
                } else if tail.contains("\"error\"") {
                    "error_event"
                } else {
                    "ended_without_done"
                }
            }
            Err(_) => "timeout",
        };
        *tally.stream_endings.entry(ending).or_default() += 1;
    }
}
