//! The engine's books: admission through the limiter, settlement, and the
//! one usage record of every request, against a scripted limiter and
//! provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use router_core::config::{Capabilities, ClientKeyConfig, LimitsConfig, ModelEntry, ServerConfig};
use router_core::estimate::ByteCounter;
use router_core::limits::{
    Admission, Demand, Headroom, LimitName, Limiter, Measure, Permit, RateInfo, Refusal,
    Reservation, Scope, Settlement, Window,
};
use router_core::provider::ChunkStream;
use router_core::usage::{
    Outcome, RequestEnd, RequestObserver, Tokens, UsageRecord, UsageSink, UsageSource,
};
use router_core::{
    ChatError, ChatResponse, Chunk, Completion, Config, Endpoint, JsonObject, Provider,
    ProviderError, ProviderRequest, RequestContext, Router, Secret, Services,
};
use serde_json::{json, Value};

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// What the fake limiter saw: admissions and settlements.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Admit {
        key: bool,
        entry: usize,
        provider_key: Option<usize>,
        tokens: u64,
    },
    Settle {
        entry: usize,
        scope: Scope,
        tokens: u64,
    },
}

/// Refuses the demands its script says to refuse, in order; admits the rest.
#[derive(Debug, Default)]
struct FakeLimiter {
    refusals: Mutex<VecDeque<Option<Refusal>>>,
    events: Arc<Mutex<Vec<Event>>>,
}

struct FakeReservation {
    entry: usize,
    key: bool,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Reservation for FakeReservation {
    fn settle(&mut self, scope: Scope, used: Settlement) {
        if scope == Scope::Key && !self.key {
            return;
        }
        self.events.lock().unwrap().push(Event::Settle {
            entry: self.entry,
            scope,
            tokens: used.tokens,
        });
    }
}

fn headroom(measure: Measure, remaining: u64) -> Headroom {
    Headroom {
        name: LimitName {
            scope: Scope::Key,
            measure,
            window: Window::Minute,
        },
        limit: 100,
        remaining,
        reset: Duration::from_secs(2),
    }
}

#[async_trait::async_trait]
impl Limiter for FakeLimiter {
    fn admit(&self, demand: &Demand<'_>) -> Admission<'_> {
        self.decide(demand).into()
    }

    async fn key_headroom(&self, key: &ClientKeyConfig) -> Vec<Headroom> {
        self.headroom(key)
    }
}

impl FakeLimiter {
    fn decide(&self, demand: &Demand<'_>) -> Result<Permit, Refusal> {
        if let Some(Some(refusal)) = self.refusals.lock().unwrap().pop_front() {
            return Err(refusal);
        }
        self.events.lock().unwrap().push(Event::Admit {
            key: demand.key.is_some(),
            entry: demand.entry.index,
            provider_key: demand.provider_key,
            tokens: demand.tokens,
        });
        Ok(Permit::new(
            RateInfo {
                requests: Some(headroom(Measure::Requests, 99)),
                tokens: Some(headroom(Measure::Tokens, 50)),
            },
            Box::new(FakeReservation {
                entry: demand.entry.index,
                key: demand.key.is_some(),
                events: Arc::clone(&self.events),
            }),
        ))
    }

    fn headroom(&self, _key: &ClientKeyConfig) -> Vec<Headroom> {
        Vec::new()
    }
}

#[derive(Debug, Default)]
struct Ledger(Mutex<Vec<UsageRecord>>);

impl UsageSink for Ledger {
    fn record(&self, record: UsageRecord) {
        self.0.lock().unwrap().push(record);
    }
}

/// Answers by the last user message: `fail` → 500, `stream-cut` → a chunk then
/// a broken stream, `no-usage` → an answer without usage; else a normal
/// answer with usage 10 + 5.
#[derive(Debug)]
struct Upstream;

fn last_message(request: &ProviderRequest) -> String {
    request.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[async_trait]
impl Provider for Upstream {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let mut answer = json!({"id": "c", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "abcdefgh"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
        match last_message(&request).as_str() {
            "fail" => {
                return Err(ProviderError::Status {
                    status: 500,
                    message: "down".into(),
                    retry_after: None,
                })
            }
            "no-usage" => {
                answer.as_object_mut().unwrap().shift_remove("usage");
            }
            _ => {}
        }
        Ok(Completion::from(object(answer)))
    }

    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        let content =
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "abcdefgh"}}]});
        let usage = json!({"id": "c", "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
        let items: Vec<Result<Chunk, ProviderError>> = match last_message(&request).as_str() {
            "stream-cut" => vec![
                Ok(Chunk(object(content))),
                Err(ProviderError::Truncated {
                    detail: "cut".into(),
                }),
            ],
            _ => vec![Ok(Chunk(object(content))), Ok(Chunk(object(usage)))],
        };
        Ok(Box::pin(futures_util::stream::iter(items)))
    }

    /// Usage 4 + 0, whatever the input.
    async fn embed(&self, _request: ProviderRequest) -> Result<Completion, ProviderError> {
        Ok(Completion::from(object(json!({"object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4}}))))
    }

    /// `text` "abcdefgh" and usage 10 + 5, or no usage for the prompt `no-usage`.
    async fn complete_text(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let mut answer = json!({"id": "t", "object": "text_completion",
            "choices": [{"index": 0, "text": "abcdefgh", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
        if request.body["prompt"] == "no-usage" {
            answer.as_object_mut().unwrap().shift_remove("usage");
        }
        Ok(Completion::from(object(answer)))
    }

    async fn stream_text(&self, _request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        let text = json!({"id": "t", "object": "text_completion",
            "choices": [{"index": 0, "text": "abcdefgh"}]});
        let usage = json!({"id": "t", "object": "text_completion", "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
        let items = vec![Ok(Chunk(object(text))), Ok(Chunk(object(usage)))];
        Ok(Box::pin(futures_util::stream::iter(items)))
    }
}

struct Harness {
    router: Router,
    limiter: Arc<FakeLimiter>,
    ledger: Arc<Ledger>,
    key: router_core::ClientKey,
}

fn harness(entries: usize, refusals: Vec<Option<Refusal>>) -> Harness {
    let models = (0..entries)
        .map(|index| ModelEntry {
            index,
            id: index as u64 + 1,
            input_price_per_token: 0.001,
            output_price_per_token: 0.002,
            cached_input_price_per_token: 0.001,
            provider_api_keys: vec![Secret::new(format!("pk{index}"))],
            capabilities: Capabilities {
                completion: true,
                embedding: true,
                ..Capabilities::default()
            },
            ..ModelEntry::new("m", "fake")
        })
        .collect();
    let config = Config {
        source: PathBuf::from("test.yaml"),
        server: ServerConfig::default(),
        limits: LimitsConfig::default(),
        retry: Default::default(),
        cooldown: Default::default(),
        models,
        api_keys: vec![ClientKeyConfig {
            id: 7,
            name: "seven".into(),
            ..ClientKeyConfig::new(Secret::new("sk-seven"))
        }],
    };
    let limiter = Arc::new(FakeLimiter {
        refusals: Mutex::new(refusals.into()),
        ..FakeLimiter::default()
    });
    let ledger = Arc::new(Ledger::default());
    let router = Router::with_services(
        &config,
        &|_| Ok(Arc::new(Upstream) as Arc<dyn Provider>),
        Services {
            limiter: limiter.clone(),
            usage: ledger.clone(),
            store: None,
            counter: Arc::new(ByteCounter),
            ..Services::default()
        },
    )
    .unwrap();
    let key = router.authenticate(Some(b"Bearer sk-seven")).unwrap();
    Harness {
        router,
        limiter,
        ledger,
        key,
    }
}

impl Harness {
    async fn chat(&self, message: &str, stream: bool) -> router_core::ChatOutcome {
        let body = json!({"model": "m", "stream": stream, "max_tokens": 20,
            "messages": [{"role": "user", "content": message}]});
        self.router
            .chat(&self.key, &serde_json::to_vec(&body).unwrap())
            .await
    }

    async fn embeddings(&self, input: Value) -> router_core::ChatOutcome {
        let body = json!({"model": "m", "input": input, "max_tokens": 20});
        self.router
            .embeddings(&self.key, &serde_json::to_vec(&body).unwrap())
            .await
    }

    async fn completions(&self, prompt: &str, stream: bool) -> router_core::ChatOutcome {
        let body = json!({"model": "m", "prompt": prompt, "stream": stream, "max_tokens": 20});
        self.router
            .completions(&self.key, &serde_json::to_vec(&body).unwrap())
            .await
    }

    fn events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.limiter.events.lock().unwrap())
    }

    fn records(&self) -> Vec<UsageRecord> {
        std::mem::take(&mut *self.ledger.0.lock().unwrap())
    }
}

fn refusal(scope: Scope, retry_secs: u64, never_fits: bool) -> Refusal {
    Refusal {
        name: LimitName {
            scope,
            measure: Measure::Requests,
            window: Window::Minute,
        },
        limit: 5,
        remaining: 0,
        retry_after: Duration::from_secs(retry_secs),
        never_fits,
    }
}

/// "user" and "hi" are a token each, + 3 for the message + 3 for the reply,
/// + the 20 reserved for output.
const RESERVED_FOR_HI: u64 = 2 + 3 + 3 + 20;

#[tokio::test]
async fn a_complete_answer_settles_with_its_usage_and_shows_its_cost() {
    let h = harness(1, vec![]);
    let outcome = h.chat("hi", false).await;
    let Ok(ChatResponse::Complete(answer)) = outcome.result else {
        panic!("expected an answer")
    };
    // 10 prompt tokens at 0.001 and 5 completion tokens at 0.002.
    let cost = answer.get("usage").unwrap()["cost"].as_f64().unwrap();
    assert!((cost - 0.02).abs() < 1e-12, "{cost}");
    assert_eq!(outcome.rate.tokens.unwrap().remaining, 50);
    assert_eq!(
        h.events(),
        [
            Event::Admit {
                key: true,
                entry: 0,
                provider_key: Some(0),
                tokens: RESERVED_FOR_HI
            },
            Event::Settle {
                entry: 0,
                scope: Scope::Key,
                tokens: 15
            },
            Event::Settle {
                entry: 0,
                scope: Scope::Model,
                tokens: 15
            },
        ]
    );
    let records = h.records();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.key_id, 7);
    assert_eq!(record.key_name, "seven");
    assert_eq!(record.model, "m");
    assert_eq!(record.entry_index, Some(0));
    assert_eq!(record.provider_key_index, Some(0));
    assert_eq!(record.outcome, Outcome::Ok);
    assert_eq!(record.source, UsageSource::Upstream);
    assert_eq!(
        record.tokens,
        Tokens {
            prompt: 10,
            completion: 5,
            cached: 0,
            reasoning: 0
        }
    );
    assert!((record.cost_usd - 0.02).abs() < 1e-12);
    assert!(record.upstream_latency.is_some());
    assert!(record.request_id.starts_with("req_"));
    assert_eq!(record.request_id, outcome.request_id);
}

#[tokio::test]
async fn an_answer_without_usage_is_estimated() {
    let h = harness(1, vec![]);
    h.chat("no-usage", false).await.result.unwrap();
    let record = h.records().remove(0);
    assert_eq!(record.source, UsageSource::Estimated);
    // "user" 1 token and "no-usage" 2, + 6 of framing; "abcdefgh": 2.
    assert_eq!(record.tokens.prompt, 9);
    assert_eq!(record.tokens.completion, 2);
}

#[tokio::test]
async fn a_key_refusal_ends_the_request_without_calling_anyone() {
    let h = harness(2, vec![Some(refusal(Scope::Key, 3, false))]);
    let outcome = h.chat("hi", false).await;
    match outcome.result {
        Err(ChatError::Refused { refusal }) => assert_eq!(refusal.name.scope, Scope::Key),
        other => panic!("unexpected {other:?}"),
    }
    assert!(h.events().is_empty());
    let record = h.records().remove(0);
    assert_eq!(record.outcome, Outcome::Refused);
    assert_eq!(
        record.refused_by.map(|n| n.to_string()).as_deref(),
        Some("key rpm")
    );
    assert_eq!(record.tokens, Tokens::default());
}

#[tokio::test]
async fn an_entry_out_of_quota_is_skipped_for_the_next_one() {
    let h = harness(2, vec![Some(refusal(Scope::Model, 3, false))]);
    h.chat("hi", false).await.result.unwrap();
    let events = h.events();
    assert_eq!(
        events[0],
        Event::Admit {
            key: true,
            entry: 1,
            provider_key: Some(0),
            tokens: RESERVED_FOR_HI
        }
    );
    assert_eq!(h.records().remove(0).entry_index, Some(1));
}

#[tokio::test]
async fn when_no_entry_has_room_the_soonest_refusal_is_reported() {
    let h = harness(
        3,
        vec![
            Some(refusal(Scope::Model, 30, false)),
            Some(refusal(Scope::Model, 500, true)),
            Some(refusal(Scope::Model, 7, false)),
        ],
    );
    match h.chat("hi", false).await.result {
        Err(ChatError::Refused { refusal }) => {
            assert_eq!(refusal.retry_after, Duration::from_secs(7));
            assert!(!refusal.never_fits);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.records().remove(0).outcome, Outcome::Refused);
}

#[tokio::test]
async fn failover_hands_back_the_failed_entry_and_charges_the_key_once() {
    // Entry 0 cannot be reached; entry 1 answers.
    #[derive(Debug)]
    struct FailsFirst(usize);
    #[async_trait]
    impl Provider for FailsFirst {
        async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
            if self.0 == 0 {
                return Err(ProviderError::Connect {
                    detail: "refused".into(),
                });
            }
            Upstream.complete(request).await
        }
        async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
            Upstream.stream(request).await
        }
    }
    let base = harness(2, vec![]);
    let config = Config {
        source: PathBuf::new(),
        server: ServerConfig::default(),
        limits: LimitsConfig::default(),
        retry: Default::default(),
        cooldown: Default::default(),
        models: (0..2)
            .map(|index| ModelEntry {
                index,
                ..ModelEntry::new("m", "fake")
            })
            .collect(),
        api_keys: vec![],
    };
    let router = Router::with_services(
        &config,
        &|entry| Ok(Arc::new(FailsFirst(entry.index)) as Arc<dyn Provider>),
        Services {
            limiter: base.limiter.clone(),
            usage: base.ledger.clone(),
            store: None,
            counter: Arc::new(ByteCounter),
            ..Services::default()
        },
    )
    .unwrap();
    let body =
        json!({"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    router
        .chat(&base.key, &serde_json::to_vec(&body).unwrap())
        .await
        .result
        .unwrap();
    assert_eq!(
        base.events(),
        [
            Event::Admit {
                key: true,
                entry: 0,
                provider_key: None,
                tokens: RESERVED_FOR_HI
            },
            // The failed entry gets its tokens back at once...
            Event::Settle {
                entry: 0,
                scope: Scope::Model,
                tokens: 0
            },
            // ...and the next attempt asks for the entry's limits only.
            Event::Admit {
                key: false,
                entry: 1,
                provider_key: None,
                tokens: RESERVED_FOR_HI
            },
            Event::Settle {
                entry: 1,
                scope: Scope::Model,
                tokens: 15
            },
            Event::Settle {
                entry: 0,
                scope: Scope::Key,
                tokens: 15
            },
        ]
    );
    let records = base.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].entry_index, Some(1));
}

#[tokio::test]
async fn requests_refused_before_any_upstream_are_recorded() {
    let h = harness(1, vec![]);
    let body = br#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#;
    assert!(h.router.chat(&h.key, body).await.result.is_err());
    assert!(h.router.chat(&h.key, b"{").await.result.is_err());
    let records = h.records();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.outcome == Outcome::Invalid));
    assert_eq!(records[0].model, "nope");
    assert!(records[0].error.as_deref().unwrap().contains("not found"));
    assert!(h.events().is_empty());
}

async fn stream_of(h: &Harness, message: &str) -> ChunkStream {
    match h.chat(message, true).await.result {
        Ok(ChatResponse::Stream(stream)) => stream,
        other => panic!("expected a stream, got {other:?}"),
    }
}

#[tokio::test]
async fn a_finished_stream_is_recorded_once_with_its_usage_and_cost() {
    let h = harness(1, vec![]);
    let chunks: Vec<_> = stream_of(&h, "hi").await.collect().await;
    let usage = &chunks[1].as_ref().unwrap().0["usage"];
    assert!((usage["cost"].as_f64().unwrap() - 0.02).abs() < 1e-12);
    // Nothing is recorded twice, however often the stream is polled after its end.
    let records = h.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::Ok);
    assert_eq!(records[0].tokens.total(), 15);
    assert!(records[0].stream);
}

#[tokio::test]
async fn a_broken_stream_is_recorded_with_what_was_relayed() {
    let h = harness(1, vec![]);
    let chunks: Vec<_> = stream_of(&h, "stream-cut").await.collect().await;
    assert!(chunks[1].is_err());
    let record = h.records().remove(0);
    assert_eq!(record.outcome, Outcome::StreamFailed);
    assert_eq!(record.source, UsageSource::Estimated);
    // "abcdefgh" was relayed: 2 tokens.
    assert_eq!(record.tokens.completion, 2);
    assert!(record.error.unwrap().contains("cut"));
}

#[tokio::test]
async fn a_stream_dropped_by_the_client_is_recorded_once() {
    let h = harness(1, vec![]);
    let mut stream = stream_of(&h, "hi").await;
    stream.next().await.unwrap().unwrap();
    assert!(
        h.records().is_empty(),
        "nothing is recorded while the stream is open"
    );
    drop(stream);
    let record = h.records().remove(0);
    assert_eq!(record.outcome, Outcome::ClientGone);
    assert_eq!(record.source, UsageSource::Estimated);
    assert_eq!(record.tokens.completion, 2);
    // The permit was settled with what was relayed: prompt estimate + 2.
    let settled: Vec<_> = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Settle { .. }))
        .collect();
    assert_eq!(settled.len(), 2);
    assert!(settled
        .iter()
        .all(|e| matches!(e, Event::Settle { tokens, .. } if *tokens == 8 + 2)));
}

#[tokio::test]
async fn an_upstream_failure_is_recorded_and_the_reservation_returned() {
    let h = harness(1, vec![]);
    assert!(h.chat("fail", false).await.result.is_err());
    let record = h.records().remove(0);
    assert_eq!(record.outcome, Outcome::UpstreamFailed);
    assert_eq!(record.tokens, Tokens::default());
    let settled: Vec<_> = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Settle { .. }))
        .collect();
    assert_eq!(
        settled,
        [
            Event::Settle {
                entry: 0,
                scope: Scope::Model,
                tokens: 0
            },
            Event::Settle {
                entry: 0,
                scope: Scope::Key,
                tokens: 0
            },
        ]
    );
}

#[tokio::test]
async fn a_request_dropped_while_waiting_for_its_upstream_is_recorded_once() {
    #[derive(Debug)]
    struct Never;
    #[async_trait]
    impl Provider for Never {
        async fn complete(&self, _: ProviderRequest) -> Result<Completion, ProviderError> {
            std::future::pending().await
        }
        async fn stream(&self, _: ProviderRequest) -> Result<ChunkStream, ProviderError> {
            std::future::pending().await
        }
    }
    let base = harness(1, vec![]);
    let config = Config {
        source: PathBuf::new(),
        server: ServerConfig::default(),
        limits: LimitsConfig::default(),
        retry: Default::default(),
        cooldown: Default::default(),
        models: vec![ModelEntry::new("m", "never")],
        api_keys: vec![],
    };
    let router = Router::with_services(
        &config,
        &|_| Ok(Arc::new(Never) as Arc<dyn Provider>),
        Services {
            limiter: base.limiter.clone(),
            usage: base.ledger.clone(),
            store: None,
            counter: Arc::new(ByteCounter),
            ..Services::default()
        },
    )
    .unwrap();
    let body =
        json!({"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let bytes = serde_json::to_vec(&body).unwrap();
    // The client gives up: the request's future is dropped mid-call.
    let gave_up =
        tokio::time::timeout(Duration::from_millis(20), router.chat(&base.key, &bytes)).await;
    assert!(gave_up.is_err());
    let records = base.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::ClientGone);
    assert_eq!(records[0].source, UsageSource::Estimated);
    // The upstream saw the prompt: 8 tokens, and the permit settles with them.
    assert_eq!(records[0].tokens.prompt, 8);
    let settled: Vec<_> = base
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Settle { .. }))
        .collect();
    assert_eq!(settled.len(), 2);
    assert!(settled
        .iter()
        .all(|e| matches!(e, Event::Settle { tokens: 8, .. })));
}

fn admitted(tokens: u64) -> Event {
    Event::Admit {
        key: true,
        entry: 0,
        provider_key: Some(0),
        tokens,
    }
}

fn settled(tokens: u64) -> [Event; 2] {
    [
        Event::Settle {
            entry: 0,
            scope: Scope::Key,
            tokens,
        },
        Event::Settle {
            entry: 0,
            scope: Scope::Model,
            tokens,
        },
    ]
}

#[tokio::test]
async fn embeddings_reserve_their_input_only_and_settle_with_the_upstream_usage() {
    let h = harness(1, vec![]);
    // Two strings of 8 bytes, 2 tokens each, and no answer reserved
    // whatever `max_tokens` says.
    let outcome = h.embeddings(json!(["abcdefgh", "ijklmnop"])).await;
    let Ok(ChatResponse::Complete(answer)) = outcome.result else {
        panic!("expected an answer")
    };
    // 4 prompt tokens at 0.001.
    let cost = answer.get("usage").unwrap()["cost"].as_f64().unwrap();
    assert!((cost - 0.004).abs() < 1e-12, "{cost}");
    let mut expected = vec![admitted(4)];
    expected.extend(settled(4));
    assert_eq!(h.events(), expected);
    let records = h.records();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.model, "m");
    assert_eq!(record.outcome, Outcome::Ok);
    assert_eq!(record.source, UsageSource::Upstream);
    assert!(!record.stream);
    assert_eq!(
        record.tokens,
        Tokens {
            prompt: 4,
            ..Tokens::default()
        }
    );

    // Token arrays count by their length.
    assert!(h.embeddings(json!([[1, 2, 3], [4]])).await.result.is_ok());
    assert_eq!(h.events()[0], admitted(4));
}

#[tokio::test]
async fn text_completions_reserve_prompt_and_answer_like_chat() {
    let h = harness(1, vec![]);
    // "abcd" is one token, plus the 20 of max_tokens.
    let outcome = h.completions("abcd", false).await;
    assert!(matches!(outcome.result, Ok(ChatResponse::Complete(_))));
    let mut expected = vec![admitted(21)];
    expected.extend(settled(15));
    assert_eq!(h.events(), expected);
    assert_eq!(h.records()[0].tokens.total(), 15);

    // Without usage, the answer's `text` is counted: 2 tokens of 8 bytes,
    // and the prompt estimate (2 tokens for "no-usage").
    let outcome = h.completions("no-usage", false).await;
    assert!(outcome.result.is_ok());
    let record = &h.records()[0];
    assert_eq!(record.source, UsageSource::Estimated);
    assert_eq!((record.tokens.prompt, record.tokens.completion), (2, 2));

    let outcome = h.completions("abcd", true).await;
    let Ok(ChatResponse::Stream(stream)) = outcome.result else {
        panic!("expected a stream")
    };
    let chunks: Vec<_> = stream.collect().await;
    assert_eq!(chunks.len(), 2);
    let record = &h.records()[0];
    assert!(record.stream);
    assert_eq!(record.outcome, Outcome::Ok);
    assert_eq!(record.tokens.total(), 15);
}

/// What an observer was told: (request id, attempts, time to first chunk,
/// outcome, whether the ledger had the record yet).
type Told = (String, u32, Option<Duration>, Outcome, bool);

#[derive(Debug)]
struct Observer {
    ledger: Arc<Ledger>,
    told: Mutex<Vec<Told>>,
}

impl RequestObserver for Observer {
    fn ended(&self, end: &RequestEnd<'_>) {
        let recorded = self
            .ledger
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|record| record.request_id == end.record.request_id);
        self.told.lock().unwrap().push((
            end.record.request_id.clone(),
            end.attempts,
            end.time_to_first_chunk,
            end.record.outcome,
            recorded,
        ));
    }
}

impl Harness {
    async fn observed(
        &self,
        observer: &Arc<Observer>,
        id: Option<&str>,
        message: &str,
        stream: bool,
    ) -> router_core::ChatOutcome {
        let body = json!({"model": "m", "stream": stream, "max_tokens": 20,
            "messages": [{"role": "user", "content": message}]});
        let context = RequestContext {
            request_id: id,
            observer: Some(observer.clone()),
        };
        self.router
            .serve_with(
                Endpoint::ChatCompletions,
                &self.key,
                &serde_json::to_vec(&body).unwrap(),
                context,
            )
            .await
    }
}

#[tokio::test]
async fn the_observer_is_told_once_at_the_end_before_the_ledger_under_the_given_id() {
    let h = harness(
        2,
        vec![None, None, None, None, Some(refusal(Scope::Key, 3, false))],
    );
    let observer = Arc::new(Observer {
        ledger: h.ledger.clone(),
        told: Mutex::new(Vec::new()),
    });
    let told = || std::mem::take(&mut *observer.told.lock().unwrap());

    // A complete answer: one attempt, no first chunk, the client's id.
    let outcome = h.observed(&observer, Some("client-1"), "hi", false).await;
    assert!(outcome.result.is_ok());
    assert_eq!(outcome.request_id, "client-1");
    assert_eq!(
        told(),
        [("client-1".to_owned(), 1, None, Outcome::Ok, false)]
    );
    assert_eq!(h.records()[0].request_id, "client-1");

    // A stream: told at its end, with its time to first chunk.
    let Ok(ChatResponse::Stream(stream)) = h.observed(&observer, None, "hi", true).await.result
    else {
        panic!("expected a stream");
    };
    assert!(told().is_empty(), "told before the stream ended");
    let _: Vec<_> = stream.collect().await;
    let ends = told();
    assert_eq!(ends.len(), 1);
    let (id, attempts, first_chunk, outcome, recorded) = &ends[0];
    assert!(id.starts_with("req_"), "{id}");
    assert_eq!((*attempts, *outcome, *recorded), (1, Outcome::Ok, false));
    let record = h.records().remove(0);
    assert_eq!(&record.request_id, id);
    assert!(first_chunk.unwrap() >= record.upstream_latency.unwrap());
    assert!(record.router_overhead(*first_chunk).is_some());

    // Both entries fail: two attempts.
    let outcome = h.observed(&observer, Some("fails"), "fail", false).await;
    assert!(outcome.result.is_err());
    assert_eq!(
        told(),
        [("fails".to_owned(), 2, None, Outcome::UpstreamFailed, false)]
    );

    // Refused by the key's limit: no attempt.
    let outcome = h.observed(&observer, Some("refused"), "hi", false).await;
    assert!(matches!(outcome.result, Err(ChatError::Refused { .. })));
    assert_eq!(
        told(),
        [("refused".to_owned(), 0, None, Outcome::Refused, false)]
    );
}
