//! The engine scrubs every upstream error at one point: what the client gets
//! (an error, or an error inside a stream) and what the usage record keeps
//! carry no account details and no configured key, whatever the provider
//! put in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::StreamExt;
use router_core::config::{ClientKeyConfig, LimitsConfig, ModelEntry, ServerConfig};
use router_core::provider::ChunkStream;
use router_core::usage::{UsageRecord, UsageSink};
use router_core::{
    ChatResponse, Chunk, Completion, Config, Provider, ProviderError, ProviderRequest, Router,
    Secret, Services,
};
use serde_json::json;

const PROVIDER_KEY: &str = "pk-engine-Wq4Lz8Nm";
const CLIENT_KEY: &str = "client-engine-Jt6Vb3";
const ORG: &str = "org-Q8mZt2LpX4vN6rB1sK3jH7dW";

/// What the upstream says, by the client's last message, with the key it was
/// called with and the operator's organization in every message.
#[derive(Debug)]
struct Leaky;

fn leak(request: &ProviderRequest) -> String {
    let key = request.api_key.as_ref().map(Secret::expose).unwrap_or("");
    format!("over quota in organization {ORG} for key {key} (user {CLIENT_KEY}); limit 30000 TPM")
}

#[async_trait]
impl Provider for Leaky {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        Err(ProviderError::Status {
            status: 400,
            message: leak(&request),
            retry_after: None,
        })
    }

    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        let chunk = json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}]});
        let serde_json::Value::Object(chunk) = chunk else {
            unreachable!()
        };
        let items = vec![
            Ok(Chunk(chunk)),
            Err(ProviderError::InvalidResponse {
                detail: leak(&request),
            }),
        ];
        Ok(Box::pin(futures_util::stream::iter(items)))
    }
}

#[derive(Debug, Default)]
struct Ledger(Mutex<Vec<UsageRecord>>);

impl UsageSink for Ledger {
    fn record(&self, record: UsageRecord) {
        self.0.lock().unwrap().push(record);
    }
}

#[track_caller]
fn assert_clean(text: &str) {
    for secret in [PROVIDER_KEY, CLIENT_KEY, ORG] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(
        text.contains("limit 30000 TPM"),
        "the useful part went: {text}"
    );
}

#[tokio::test]
async fn errors_and_usage_records_are_scrubbed() {
    let config = Config {
        source: PathBuf::from("test.yaml"),
        server: ServerConfig::default(),
        limits: LimitsConfig::default(),
        retry: Default::default(),
        cooldown: Default::default(),
        models: vec![ModelEntry {
            provider_api_keys: vec![Secret::new(PROVIDER_KEY)],
            ..ModelEntry::new("m", "leaky")
        }],
        api_keys: vec![ClientKeyConfig {
            id: 1,
            ..ClientKeyConfig::new(Secret::new(CLIENT_KEY))
        }],
    };
    let ledger = Arc::new(Ledger::default());
    let router = Router::with_services(
        &config,
        &|_| Ok(Arc::new(Leaky) as Arc<dyn Provider>),
        Services {
            usage: ledger.clone(),
            ..Services::default()
        },
    )
    .unwrap();
    let key = router
        .authenticate(Some(format!("Bearer {CLIENT_KEY}").as_bytes()))
        .unwrap();
    let body = |stream: bool| {
        serde_json::to_vec(&json!({"model": "m", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap()
    };

    let error = router.chat(&key, &body(false)).await.result.unwrap_err();
    assert_clean(&error.to_string());

    let Ok(ChatResponse::Stream(mut stream)) = router.chat(&key, &body(true)).await.result else {
        panic!("expected a stream")
    };
    assert!(stream.next().await.unwrap().is_ok());
    let error = stream.next().await.unwrap().unwrap_err();
    assert_clean(&error.to_string());
    assert!(stream.next().await.is_none());
    drop(stream);

    let records = std::mem::take(&mut *ledger.0.lock().unwrap());
    assert_eq!(records.len(), 2);
    for record in records {
        assert_clean(record.error.as_deref().unwrap());
    }
}
