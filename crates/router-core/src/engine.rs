//! The routing engine: authenticate, parse, resolve, dispatch with failover,
//! rewrite the answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use time::OffsetDateTime;

use crate::aggregate::Aggregator;
use crate::auth::KeyStore;
use crate::catalog::{self, ModelList, ModelObject};
use crate::config::{ClientKeyConfig, Config, ModelEntry};
use crate::error::{AuthError, ChatError};
use crate::provider::{
    BuildResult, Chunk, ChunkStream, Completion, JsonObject, Provider, ProviderError,
    ProviderRequest,
};
use crate::request::{self, ChatRequest};
use crate::secret::Secret;
use crate::thinking::{self, StreamThinking};

/// An authenticated client key.
pub type ClientKey = Arc<ClientKeyConfig>;

/// The answer to a chat completion.
pub enum ChatResponse {
    /// A complete answer, `model` already the client-facing name.
    Complete(Completion),
    /// A stream whose first chunk has already arrived (so failover was still
    /// possible until then). Chunks carry the client-facing `model`.
    Stream(ChunkStream),
}

impl std::fmt::Debug for ChatResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete(c) => f.debug_tuple("Complete").field(c).finish(),
            Self::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// Why the engine could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("models[{index}] ({name}): cannot build provider `{provider}`: {message}")]
    Provider {
        index: usize,
        name: String,
        provider: String,
        message: String,
    },
    #[error("cannot serialize the model list: {0}")]
    Catalog(#[from] serde_json::Error),
}

/// One enabled model entry with its adapter.
#[derive(Debug)]
struct Deployment {
    entry: ModelEntry,
    provider: Arc<dyn Provider>,
    /// Round robin over the entry's provider keys. Shared by all requests;
    /// an atomic so concurrent requests spread over the keys without a lock.
    next_key: AtomicUsize,
}

/// The enabled entries that share one client-facing name.
#[derive(Debug)]
struct Group {
    /// Indices into `Router::deployments`, in config order.
    deployments: Vec<usize>,
    /// Round robin over the entries: request k starts at entry k mod n.
    next: AtomicUsize,
}

/// The engine. Cheap to share (`Arc<Router>`); all state on the hot path is
/// atomics, so no request waits for another.
#[derive(Debug)]
pub struct Router {
    keys: KeyStore,
    deployments: Vec<Deployment>,
    groups: HashMap<String, Group>,
    models_json: Bytes,
    model_json: HashMap<String, Bytes>,
}

impl Router {
    /// Builds the engine from a validated config. `provider_for` builds the
    /// adapter of each enabled entry.
    pub fn new(
        config: &Config,
        provider_for: &dyn Fn(&ModelEntry) -> BuildResult,
    ) -> Result<Self, BuildError> {
        let mut deployments = Vec::new();
        let mut groups: HashMap<String, Group> = HashMap::new();
        for entry in config.models.iter().filter(|entry| entry.enabled) {
            let provider = provider_for(entry).map_err(|message| BuildError::Provider {
                index: entry.index,
                name: entry.name.clone(),
                provider: entry.provider.clone(),
                message,
            })?;
            groups
                .entry(entry.name.clone())
                .or_insert_with(|| Group {
                    deployments: Vec::new(),
                    next: AtomicUsize::new(0),
                })
                .deployments
                .push(deployments.len());
            deployments.push(Deployment {
                entry: entry.clone(),
                provider,
                next_key: AtomicUsize::new(0),
            });
        }

        let created = OffsetDateTime::now_utc().unix_timestamp();
        let listed = catalog::listed(&config.models);
        let objects: Vec<ModelObject<'_>> = listed
            .iter()
            .map(|entry| ModelObject::new(entry, created))
            .collect();
        let mut model_json = HashMap::new();
        for (entry, object) in listed.iter().zip(&objects) {
            model_json.insert(entry.name.clone(), Bytes::from(serde_json::to_vec(object)?));
        }
        let models_json = Bytes::from(serde_json::to_vec(&ModelList {
            data: objects,
            object: "list",
        })?);

        Ok(Self {
            keys: KeyStore::new(&config.api_keys),
            deployments,
            groups,
            models_json,
            model_json,
        })
    }

    /// Checks an `Authorization` header value (seed rules: `Bearer <key>` with
    /// any case of `bearer`, else the whole value is the key).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<ClientKey, AuthError> {
        self.keys
            .authenticate(authorization, OffsetDateTime::now_utc())
    }

    /// `GET /v1/models` body, serialized once at construction.
    pub fn models_json(&self) -> Bytes {
        self.models_json.clone()
    }

    /// `GET /v1/models/{id}` body, if that model is listed.
    pub fn model_json(&self, id: &str) -> Option<Bytes> {
        self.model_json.get(id).cloned()
    }

    /// Exact enabled name first; else `name:variant` falls back to `name`.
    fn resolve(&self, model: &str) -> Option<&Group> {
        self.groups.get(model).or_else(|| {
            let (base, _variant) = model.rsplit_once(':')?;
            self.groups.get(base)
        })
    }

    /// `POST /v1/chat/completions` with a raw body.
    pub async fn chat(&self, _client: &ClientKey, body: &[u8]) -> Result<ChatResponse, ChatError> {
        let mut request = request::parse(body)?;
        // The seed's OpenRouter-style `provider` preference: removed when it is
        // a string, an object or an array; like the seed, it filters nothing.
        if matches!(
            request.body.get("provider"),
            Some(Value::String(_) | Value::Object(_) | Value::Array(_))
        ) {
            request.body.shift_remove("provider");
        }
        let group = self
            .resolve(&request.model)
            .ok_or_else(|| ChatError::ModelNotFound {
                model: request.model.clone(),
            })?;

        let entries = group.deployments.len();
        let start = group.next.fetch_add(1, Ordering::Relaxed);
        let mut attempts = 0;
        let mut last_error = None;
        for offset in 0..entries {
            let deployment = &self.deployments[group.deployments[(start + offset) % entries]];
            let keys = &deployment.entry.provider_api_keys;
            let key_start = deployment.next_key.fetch_add(1, Ordering::Relaxed);
            for key_offset in 0..keys.len().max(1) {
                let api_key =
                    (!keys.is_empty()).then(|| keys[(key_start + key_offset) % keys.len()].clone());
                attempts += 1;
                match self.attempt(deployment, &request, api_key).await {
                    Ok(response) => return Ok(response),
                    Err(error) if !error.is_retryable() => {
                        return Err(ChatError::Upstream { source: error })
                    }
                    Err(error) => {
                        tracing::warn!(
                            model = %request.model,
                            entry = deployment.entry.index,
                            attempt = attempts,
                            %error,
                            "upstream attempt failed"
                        );
                        last_error = Some(error);
                    }
                }
            }
        }
        match last_error {
            Some(source) if attempts == 1 => Err(ChatError::Upstream { source }),
            Some(last) => Err(ChatError::AllFailed { attempts, last }),
            // Groups are never empty, so at least one attempt was made.
            None => Err(ChatError::ModelNotFound {
                model: request.model,
            }),
        }
    }

    /// One try against one entry and one provider key. An `Err` means nothing
    /// has been sent to the client yet.
    async fn attempt(
        &self,
        deployment: &Deployment,
        request: &ChatRequest,
        api_key: Option<Secret>,
    ) -> Result<ChatResponse, ProviderError> {
        let entry = &deployment.entry;
        let upstream_streams = request.stream || entry.stream_only;
        let body = upstream_body(entry, &request.body, upstream_streams);
        let provider_request = ProviderRequest { body, api_key };
        let mut rewriter = Rewriter::new(&request.model, entry.support_google_thinking);

        if request.stream {
            let mut stream = deployment.provider.stream(provider_request).await?;
            // Peek the first chunk before the client sees a 200: a stream that
            // fails at once can still fail over.
            let mut first = match stream.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(ProviderError::InvalidResponse {
                        detail: "the stream ended before its first chunk".to_owned(),
                    })
                }
            };
            rewriter.chunk(&mut first.0);
            let rest = stream.map(move |item| {
                item.map(|mut chunk| {
                    rewriter.chunk(&mut chunk.0);
                    chunk
                })
            });
            let stream = futures_util::stream::once(std::future::ready(Ok(first))).chain(rest);
            return Ok(ChatResponse::Stream(Box::pin(stream)));
        }

        let mut completion = if entry.stream_only {
            let mut stream = deployment.provider.stream(provider_request).await?;
            let mut aggregator = Aggregator::default();
            while let Some(item) = stream.next().await {
                let mut chunk: Chunk = item?;
                if let Some(thinking) = rewriter.thinking.as_mut() {
                    thinking.map_chunk(&mut chunk.0);
                }
                aggregator.push(&chunk);
            }
            if aggregator.is_empty() {
                return Err(ProviderError::InvalidResponse {
                    detail: "the stream carried no chunk".to_owned(),
                });
            }
            rewriter.thinking = None;
            aggregator.finish()
        } else {
            deployment.provider.complete(provider_request).await?
        };
        rewriter.completion(&mut completion.0);
        Ok(ChatResponse::Complete(completion))
    }
}

/// The body sent upstream for one attempt. Each attempt starts from the
/// client's body (the seed edited one buffer across attempts, so an earlier
/// entry's rewrite leaked into the next).
fn upstream_body(entry: &ModelEntry, client_body: &JsonObject, stream: bool) -> JsonObject {
    let mut body = client_body.clone();
    if entry.support_google_thinking {
        thinking::map_request(&mut body);
    }
    body.insert(
        "model".to_owned(),
        Value::String(entry.provider_model_name.clone()),
    );
    if stream {
        body.insert("stream".to_owned(), Value::Bool(true));
        // Always ask for the usage chunk: accounting needs it, and clients
        // get it as the seed gave it.
        let options = body
            .entry("stream_options".to_owned())
            .or_insert(Value::Null);
        if !options.is_object() {
            *options = Value::Object(JsonObject::new());
        }
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".to_owned(), Value::Bool(true));
        }
    } else {
        body.shift_remove("stream_options");
    }
    body
}

/// Rewrites what comes back for the client: the client-facing `model`, no
/// top-level `provider`, and thinking post-processing.
struct Rewriter {
    model: Value,
    thinking: Option<StreamThinking>,
    map_thoughts: bool,
}

impl Rewriter {
    fn new(model: &str, google_thinking: bool) -> Self {
        Self {
            model: Value::String(model.to_owned()),
            thinking: google_thinking.then(StreamThinking::default),
            map_thoughts: google_thinking,
        }
    }

    fn common(&self, object: &mut JsonObject) {
        object.shift_remove("provider");
        object.insert("model".to_owned(), self.model.clone());
    }

    fn chunk(&mut self, chunk: &mut JsonObject) {
        self.common(chunk);
        if let Some(thinking) = self.thinking.as_mut() {
            thinking.map_chunk(chunk);
        }
    }

    fn completion(&self, completion: &mut JsonObject) {
        self.common(completion);
        if self.map_thoughts {
            thinking::map_completion(completion);
        }
    }
}
