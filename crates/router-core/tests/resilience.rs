//! Upstream resilience against scripted providers, on a paused tokio clock:
//! provider-key cooldown after 429, disabling after 401/403, the circuit
//! breaker and its half-open probe, `Unavailable` when every key rests, and
//! the retry caps, backoff and budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use router_core::config::{
    ClientKeyConfig, CooldownPolicy, LimitsConfig, ModelEntry, RetryPolicy, ServerConfig,
};
use router_core::provider::{ChunkStream, ErrorKind};
use router_core::usage::{Outcome, UsageRecord, UsageSink};
use router_core::{
    ChatError, ChatResponse, Completion, Config, JsonObject, Provider, ProviderError,
    ProviderRequest, Router, Secret, Services,
};
use serde_json::{json, Value};
use tokio::time::{advance, Instant};

/// What a provider key does on one call.
#[derive(Debug, Clone)]
enum Step {
    Answer,
    Status(u16, Option<Duration>),
    Connect,
    /// Takes this long, then does the step.
    Slow(Duration, Box<Step>),
}

/// Steps per provider key: scripted ones first, then the key's `always`
/// step, else an answer. Every call is logged by key.
#[derive(Debug, Default)]
struct Script {
    steps: Mutex<HashMap<String, VecDeque<Step>>>,
    always: Mutex<HashMap<String, Step>>,
    calls: Mutex<Vec<String>>,
}

impl Script {
    fn then(&self, key: &str, steps: impl IntoIterator<Item = Step>) {
        self.steps
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .extend(steps);
    }

    fn always(&self, key: &str, step: Step) {
        self.always.lock().unwrap().insert(key.to_owned(), step);
    }

    fn next(&self, key: &str) -> Step {
        self.calls.lock().unwrap().push(key.to_owned());
        let scripted = self
            .steps
            .lock()
            .unwrap()
            .get_mut(key)
            .and_then(VecDeque::pop_front);
        scripted
            .or_else(|| self.always.lock().unwrap().get(key).cloned())
            .unwrap_or(Step::Answer)
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[derive(Debug)]
struct Keyed(Arc<Script>);

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

async fn run(step: Step) -> Result<(), ProviderError> {
    let mut step = step;
    loop {
        return match step {
            Step::Answer => Ok(()),
            Step::Status(status, retry_after) => Err(ProviderError::Status {
                status,
                message: format!("scripted {status}"),
                retry_after,
            }),
            Step::Connect => Err(ProviderError::Connect {
                detail: "refused".into(),
            }),
            Step::Slow(after, then) => {
                tokio::time::sleep(after).await;
                step = *then;
                continue;
            }
        };
    }
}

#[async_trait]
impl Provider for Keyed {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let key = request.api_key.as_ref().unwrap().expose().to_owned();
        run(self.0.next(&key)).await?;
        Ok(Completion::from(object(json!({
            "id": "c", "object": "chat.completion", "model": "x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": key},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))))
    }

    async fn stream(&self, _: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        Err(ProviderError::InvalidResponse {
            detail: "not scripted".into(),
        })
    }
}

#[derive(Debug, Default)]
struct Outcomes(Mutex<Vec<Outcome>>);

impl UsageSink for Outcomes {
    fn record(&self, record: UsageRecord) {
        self.0.lock().unwrap().push(record.outcome);
    }
}

fn entry(index: usize, keys: &[&str]) -> ModelEntry {
    ModelEntry {
        index,
        id: index as u64 + 1,
        provider_model_name: "up".into(),
        provider_api_keys: keys.iter().map(|k| Secret::new(*k)).collect(),
        is_openai_compatibility: true,
        ..ModelEntry::new("m", "scripted")
    }
}

struct Harness {
    router: Router,
    script: Arc<Script>,
    outcomes: Arc<Outcomes>,
    key: router_core::ClientKey,
}

/// A circuit that never opens, so tests of other things are not disturbed.
fn never_open() -> CooldownPolicy {
    CooldownPolicy {
        failures_to_open: NonZeroU64::MAX,
        ..CooldownPolicy::default()
    }
}

fn harness(models: Vec<ModelEntry>, retry: RetryPolicy, cooldown: CooldownPolicy) -> Harness {
    let script = Arc::new(Script::default());
    let outcomes = Arc::new(Outcomes::default());
    let config = Config {
        source: PathBuf::from("test.yaml"),
        server: ServerConfig::default(),
        limits: LimitsConfig::default(),
        retry,
        cooldown,
        models,
        api_keys: vec![ClientKeyConfig {
            id: 1,
            name: "test".into(),
            ..ClientKeyConfig::new(Secret::new("sk-test"))
        }],
    };
    let router = Router::with_services(
        &config,
        &|_| Ok(Arc::new(Keyed(Arc::clone(&script))) as Arc<dyn Provider>),
        Services {
            usage: outcomes.clone(),
            ..Services::default()
        },
    )
    .unwrap();
    let key = router.authenticate(Some(b"Bearer sk-test")).unwrap();
    Harness {
        router,
        script,
        outcomes,
        key,
    }
}

impl Harness {
    async fn chat(&self) -> Result<String, ChatError> {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        match self
            .router
            .chat(&self.key, &serde_json::to_vec(&body).unwrap())
            .await
            .result?
        {
            ChatResponse::Complete(c) => Ok(c.get("choices").unwrap()[0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()),
            ChatResponse::Stream(_) => panic!("expected a complete answer"),
        }
    }

    /// Makes `n` requests, all of which must be answered; returns the keys
    /// that were called.
    async fn serve(&self, n: usize) -> Vec<String> {
        for _ in 0..n {
            self.chat().await.unwrap();
        }
        self.script.calls()
    }
}

fn unavailable(result: Result<String, ChatError>) -> (Duration, bool) {
    match result {
        Err(ChatError::Unavailable {
            retry_after,
            rate_limited,
        }) => (retry_after, rate_limited),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_key_rests_for_its_retry_after_then_serves_again() {
    let h = harness(
        vec![entry(0, &["k1", "k2"])],
        RetryPolicy::default(),
        never_open(),
    );
    h.script.then("k1", [Step::Status(429, Some(secs(10)))]);
    assert_eq!(h.chat().await.unwrap(), "k2");
    assert_eq!(h.script.calls(), ["k1", "k2"]);
    // Round robin skips the resting key...
    assert_eq!(h.serve(4).await, ["k2"; 4]);
    advance(secs(9)).await;
    assert_eq!(h.serve(4).await, ["k2"; 4]);
    // ...until its Retry-After has passed.
    advance(secs(1)).await;
    let mut keys = h.serve(4).await;
    keys.sort();
    assert_eq!(keys, ["k1", "k1", "k2", "k2"]);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_rests_for_the_default() {
    let cooldown = CooldownPolicy {
        rate_limited: secs(30),
        ..never_open()
    };
    let h = harness(
        vec![entry(0, &["k1", "k2"])],
        RetryPolicy::default(),
        cooldown,
    );
    h.script.then("k1", [Step::Status(429, None)]);
    assert_eq!(h.chat().await.unwrap(), "k2");
    h.script.calls();
    advance(secs(29)).await;
    assert_eq!(h.serve(3).await, ["k2"; 3]);
    advance(secs(1)).await;
    assert!(h.serve(2).await.contains(&"k1".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_rejected_key_is_disabled_for_good_and_the_next_key_serves() {
    let h = harness(
        vec![entry(0, &["k1", "k2"])],
        RetryPolicy::default(),
        never_open(),
    );
    h.script.always("k1", Step::Status(401, None));
    assert_eq!(h.chat().await.unwrap(), "k2");
    assert_eq!(h.script.calls(), ["k1", "k2"]);
    advance(secs(24 * 3600)).await;
    assert_eq!(h.serve(6).await, ["k2"; 6]);
}

#[tokio::test(start_paused = true)]
async fn an_entry_whose_only_key_is_rejected_is_unavailable() {
    let cooldown = CooldownPolicy {
        open_for: secs(15),
        ..never_open()
    };
    let h = harness(vec![entry(0, &["k1"])], RetryPolicy::default(), cooldown);
    h.script.then("k1", [Step::Status(403, None)]);
    match h.chat().await {
        Err(ChatError::Upstream { source }) => assert_eq!(source.kind(), ErrorKind::KeyRejected),
        other => panic!("unexpected {other:?}"),
    }
    // No recovery is known: the hint is the circuit's open time.
    assert_eq!(unavailable(h.chat().await), (secs(15), false));
    assert_eq!(h.script.calls(), ["k1"]);
    assert_eq!(
        *h.outcomes.0.lock().unwrap(),
        [Outcome::UpstreamFailed, Outcome::UpstreamFailed]
    );
}

#[tokio::test(start_paused = true)]
async fn failures_open_the_circuit_and_one_probe_closes_it() {
    let cooldown = CooldownPolicy {
        failures_to_open: NonZeroU64::new(3).unwrap(),
        open_for: secs(10),
        ..CooldownPolicy::default()
    };
    let h = harness(vec![entry(0, &["k1"])], RetryPolicy::default(), cooldown);
    h.script
        .then("k1", [Step::Connect, Step::Status(502, None)]);
    h.script.then("k1", [Step::Connect]);
    for _ in 0..3 {
        assert!(matches!(h.chat().await, Err(ChatError::Upstream { .. })));
    }
    assert_eq!(h.script.calls().len(), 3);
    // Open: nothing reaches the upstream.
    let (retry_after, rate_limited) = unavailable(h.chat().await);
    assert_eq!((retry_after, rate_limited), (secs(10), false));
    advance(secs(9)).await;
    assert_eq!(unavailable(h.chat().await), (secs(1), false));
    assert!(h.script.calls().is_empty());

    // Half-open: of five concurrent requests exactly one probes.
    advance(secs(1)).await;
    h.script
        .then("k1", [Step::Slow(secs(1), Box::new(Step::Answer))]);
    let results = futures_util::future::join_all((0..5).map(|_| h.chat())).await;
    assert_eq!(h.script.calls(), ["k1"]);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for result in results.into_iter().filter(Result::is_err) {
        assert_eq!(unavailable(result), (Duration::ZERO, false));
    }
    // The probe succeeded: closed, and failures count from zero again.
    assert_eq!(h.serve(3).await, ["k1"; 3]);
    h.script.then("k1", [Step::Connect, Step::Connect]);
    assert!(h.chat().await.is_err());
    assert!(h.chat().await.is_err());
    assert_eq!(h.chat().await.unwrap(), "k1");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_circuit_again() {
    let cooldown = CooldownPolicy {
        failures_to_open: NonZeroU64::new(2).unwrap(),
        open_for: secs(10),
        ..CooldownPolicy::default()
    };
    let h = harness(vec![entry(0, &["k1"])], RetryPolicy::default(), cooldown);
    h.script
        .then("k1", [Step::Connect, Step::Connect, Step::Connect]);
    assert!(h.chat().await.is_err());
    assert!(h.chat().await.is_err());
    advance(secs(10)).await;
    // The probe fails: a single failure is enough to reopen.
    assert!(matches!(h.chat().await, Err(ChatError::Upstream { .. })));
    assert_eq!(unavailable(h.chat().await), (secs(10), false));
    advance(secs(10)).await;
    assert_eq!(h.chat().await.unwrap(), "k1");
    assert_eq!(h.script.calls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn all_keys_rate_limited_is_a_429_style_unavailable_with_the_earliest_recovery() {
    let h = harness(
        vec![entry(0, &["a1", "a2"]), entry(1, &["b1"])],
        RetryPolicy::default(),
        never_open(),
    );
    h.script.then("a1", [Step::Status(429, Some(secs(20)))]);
    h.script.then("a2", [Step::Status(429, Some(secs(5)))]);
    h.script.then("b1", [Step::Status(429, None)]);
    let started = Instant::now();
    match h.chat().await {
        Err(ChatError::AllFailed { attempts: 3, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.script.calls(), ["a1", "a2", "b1"]);
    // a2 was told to rest 5 s after its attempt; the backoff before b1 ran
    // since then.
    let (retry_after, rate_limited) = unavailable(h.chat().await);
    assert!(rate_limited);
    assert!(retry_after <= secs(5), "{retry_after:?}");
    assert!(
        retry_after + started.elapsed() >= secs(5),
        "{retry_after:?}"
    );
    assert!(h.script.calls().is_empty());
    advance(retry_after).await;
    assert_eq!(h.serve(1).await, ["a2"]);
}

#[tokio::test(start_paused = true)]
async fn keys_resting_for_other_reasons_make_a_503_style_unavailable() {
    let cooldown = CooldownPolicy {
        failures_to_open: NonZeroU64::MIN,
        open_for: secs(2),
        ..CooldownPolicy::default()
    };
    let retry = RetryPolicy {
        backoff_base: Duration::ZERO,
        ..RetryPolicy::default()
    };
    let h = harness(vec![entry(0, &["a1"]), entry(1, &["b1"])], retry, cooldown);
    h.script.then("a1", [Step::Status(429, Some(secs(5)))]);
    h.script.then("b1", [Step::Connect]);
    assert!(matches!(
        h.chat().await,
        Err(ChatError::AllFailed { attempts: 2, .. })
    ));
    // b1's circuit reopens first, and it is not a rate limit.
    assert_eq!(unavailable(h.chat().await), (secs(2), false));
}

#[tokio::test(start_paused = true)]
async fn max_attempts_caps_the_attempts() {
    let retry = RetryPolicy {
        max_attempts: NonZeroU64::new(2).unwrap(),
        ..RetryPolicy::default()
    };
    let keys = ["k1", "k2", "k3", "k4", "k5"];
    let h = harness(vec![entry(0, &keys)], retry, never_open());
    for key in keys {
        h.script.always(key, Step::Status(500, None));
    }
    assert!(matches!(
        h.chat().await,
        Err(ChatError::AllFailed { attempts: 2, .. })
    ));
    assert_eq!(h.script.calls(), ["k1", "k2"]);
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_after_max_retry_time() {
    let retry = RetryPolicy {
        max_retry_time: secs(3),
        backoff_base: Duration::ZERO,
        ..RetryPolicy::default()
    };
    let keys = ["k1", "k2", "k3", "k4", "k5"];
    let h = harness(vec![entry(0, &keys)], retry, never_open());
    for key in keys {
        h.script
            .always(key, Step::Slow(secs(2), Box::new(Step::Status(500, None))));
    }
    let started = Instant::now();
    // 0 s: k1 fails at 2 s; k2 starts (2 s < 3 s) and fails at 4 s; no more.
    assert!(matches!(
        h.chat().await,
        Err(ChatError::AllFailed { attempts: 2, .. })
    ));
    assert_eq!(started.elapsed(), secs(4));
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_with_full_jitter() {
    let retry = RetryPolicy {
        max_attempts: NonZeroU64::new(3).unwrap(),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(150),
        budget_min_per_second: 1_000,
        ..RetryPolicy::default()
    };
    let keys = ["k1", "k2", "k3"];
    let h = harness(vec![entry(0, &keys)], retry, never_open());
    for key in keys {
        h.script.always(key, Step::Status(500, None));
    }
    let mut waits = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        assert!(matches!(
            h.chat().await,
            Err(ChatError::AllFailed { attempts: 3, .. })
        ));
        waits.push(started.elapsed());
    }
    // Two waits: at most 100 ms, then at most min(150, 200) ms (the timer
    // rounds each up to the millisecond).
    let ceiling = Duration::from_millis(252);
    assert!(waits.iter().all(|w| *w <= ceiling), "{waits:?}");
    // The second ceiling is above the base: some request waits more than
    // 100 ms in all (each does with probability 2/3).
    assert!(
        waits.iter().any(|w| *w > Duration::from_millis(100)),
        "{waits:?}"
    );
    // Jitter: the waits differ.
    let mut distinct = waits.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 25, "{waits:?}");
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_stops_retries_in_an_outage_but_not_first_attempts() {
    let retry = RetryPolicy {
        budget_ratio: 0.25,
        budget_min_per_second: 0,
        backoff_base: Duration::ZERO,
        ..RetryPolicy::default()
    };
    let h = harness(vec![entry(0, &["k1", "k2"])], retry, never_open());
    h.script.always("k1", Step::Status(500, None));
    h.script.always("k2", Step::Status(500, None));
    let mut attempts = Vec::new();
    for _ in 0..8 {
        assert!(h.chat().await.is_err());
        attempts.push(h.script.calls().len());
    }
    // Every request reaches an upstream once; every fourth earns a retry.
    assert_eq!(attempts, [1, 1, 1, 2, 1, 1, 1, 2]);
}
