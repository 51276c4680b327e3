//! The routing engine: authenticate, parse, resolve, dispatch with failover,
//! rewrite the answer.
//!
//! Chat completions, text completions and embeddings are three entry points
//! ([`Router::chat`], [`Router::completions`], [`Router::embeddings`]) into
//! one path, [`Router::serve`]: the same books, resolution, round robin,
//! admission, failover and health. What differs per [`Endpoint`] is small
//! and named where it happens: how the body is validated, which entries may
//! serve it (the `supports_*` flags), how its prompt is estimated (and
//! whether an answer is reserved), how the upstream body is prepared, and
//! which provider method is called.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use time::OffsetDateTime;

use sha2::Digest;

use crate::accounting::Books;
use crate::admin::{
    self, AdminError, ClientKeyView, EntryView, ErrorsView, KeyHealthView, KeysView, ModelView,
    ModelsView, UsageView,
};
use crate::aggregate::Aggregator;
use crate::auth::KeyStore;
use crate::catalog::{self, ModelList, ModelObject};
use crate::config::{ClientKeyConfig, Config, CooldownPolicy, ModelEntry, RetryPolicy};
use crate::error::{AuthError, ChatError, UsageError};
use crate::escape::Escaped;
use crate::estimate::{self, ByteCounter, TokenCounter};
use crate::health::{self, Clock, Jitter, KeyHealth, Resting, RetryBudget};
use crate::health_board::{HealthBoard, HealthChange, HealthListener, HealthNotice, LocalHealth};
use crate::limits::{AdmitError, Demand, Limiter, NoLimits, RateInfo, Refusal, Scope};
use crate::provider::{
    BuildResult, Chunk, ChunkStream, Completion, Endpoint, JsonObject, Provider, ProviderError,
    ProviderRequest,
};
use crate::report::{self, LimitView, UsageReport, UsageRequest};
use crate::request::{self, ChatRequest};
use crate::scrub::{self, Scrubber};
use crate::secret::Secret;
use crate::thinking::{self, StreamThinking};
use crate::usage::{NoLedger, Outcome, RequestObserver, Tokens, UsageSink, UsageStore};

/// An authenticated client key.
pub type ClientKey = Arc<ClientKeyConfig>;

/// The answer to a request: a chat or text completion, or embeddings (which
/// are always `Complete`).
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
    /// Shared with the books of streams still open, which price their usage.
    entry: Arc<ModelEntry>,
    provider: Arc<dyn Provider>,
    /// Round robin over the entry's provider keys. Shared by all requests;
    /// an atomic so concurrent requests spread over the keys without a lock.
    /// Behind an `Arc` so that the router of a reloaded config goes on
    /// where this one is (see [`Router::reloaded`]).
    next_key: Arc<AtomicUsize>,
    /// One per provider key, in config order (one for the entry itself when
    /// it has no key): whether that key may be tried now. Shared, like
    /// `next_key`, with the router of a reloaded config that keeps the key.
    health: Vec<Arc<KeyHealth>>,
}

/// The enabled entries that share one client-facing name.
#[derive(Debug)]
struct Group {
    /// Indices into `Router::deployments`, in config order.
    deployments: Vec<usize>,
    /// Round robin over the entries: request k starts at entry k mod n.
    /// Shared with the router of a reloaded config, like `next_key`.
    next: Arc<AtomicUsize>,
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
    services: Services,
    default_output_tokens: u64,
    /// Makes request ids unique across restarts and replicas: the start
    /// time and a random salt, in hex. Replicas that share one ledger key
    /// its rows by request id.
    request_id_prefix: String,
    /// Numbers the requests of this process (shared across reloads, so no
    /// two requests ever get the same id).
    next_request: Arc<AtomicU64>,
    retry: RetryPolicy,
    cooldown: CooldownPolicy,
    /// The time base of key health and the retry budget.
    clock: Clock,
    /// Shared by all requests, so an outage does not multiply the load
    /// (and by the router of a reloaded config with the same policy).
    retry_budget: Arc<RetryBudget>,
    /// Spreads the backoff of concurrent retries apart.
    jitter: Jitter,
}

/// What the engine uses besides providers: limits, the ledger, token
/// counting. [`Services::default`] is a router without limits or ledger.
#[derive(Debug, Clone)]
pub struct Services {
    pub limiter: Arc<dyn Limiter>,
    pub usage: Arc<dyn UsageSink>,
    /// Answers `/v1/usage`; `None` when there is no ledger.
    pub store: Option<Arc<dyn UsageStore>>,
    pub counter: Arc<dyn TokenCounter>,
    /// Where the router tells other replicas what it learnt about a
    /// provider key ([`LocalHealth`]: nobody to tell).
    pub health: Arc<dyn HealthBoard>,
}

impl Default for Services {
    fn default() -> Self {
        Self {
            limiter: Arc::new(NoLimits),
            usage: Arc::new(NoLedger),
            store: None,
            counter: Arc::new(ByteCounter),
            health: Arc::new(LocalHealth),
        }
    }
}

/// What the edge that received a request tells the engine about it.
#[derive(Debug, Default, Clone)]
pub struct RequestContext<'a> {
    /// The id the request goes by, in the ledger too, already checked by
    /// the edge (a client's own `x-request-id`, or one from
    /// [`Router::new_request_id`]); `None`: the engine makes one.
    pub request_id: Option<&'a str>,
    /// Told once how the request ended, when its books close.
    pub observer: Option<Arc<dyn RequestObserver>>,
}

/// The end of a request (any endpoint), as router-http needs it.
#[derive(Debug)]
pub struct ChatOutcome {
    /// The request's id: the one its context gave, else a fresh one;
    /// also the usage record's.
    pub request_id: String,
    /// The tightest request and token limits after admission (empty when no
    /// limit applies or the request was refused before admission).
    pub rate: RateInfo,
    pub result: Result<ChatResponse, ChatError>,
}

impl Router {
    /// Builds the engine from a validated config. `provider_for` builds the
    /// adapter of each enabled entry.
    pub fn new(
        config: &Config,
        provider_for: &dyn Fn(&ModelEntry) -> BuildResult,
    ) -> Result<Self, BuildError> {
        Self::with_services(config, provider_for, Services::default())
    }

    /// Builds the engine with limits, a ledger and a token counter.
    pub fn with_services(
        config: &Config,
        provider_for: &dyn Fn(&ModelEntry) -> BuildResult,
        services: Services,
    ) -> Result<Self, BuildError> {
        Self::build(config, provider_for, services, None)
    }

    /// The router of a reloaded `config`, to serve new requests in place of
    /// this one (requests under way finish on this one). What the running
    /// router learnt carries over to what still exists: the health of each
    /// provider key (rests, keys taken out, circuits) and the round-robin
    /// cursors of each entry that keeps its identity (its `id`, else its
    /// name and position) and of each model name, the request numbering,
    /// the clock and, with an unchanged retry policy, the retry budget.
    /// Limits carry over through `services.limiter` (see
    /// [`Limiter::reconfigured`]). Providers are built anew.
    pub fn reloaded(
        &self,
        config: &Config,
        provider_for: &dyn Fn(&ModelEntry) -> BuildResult,
        services: Services,
    ) -> Result<Self, BuildError> {
        Self::build(config, provider_for, services, Some(self))
    }

    fn build(
        config: &Config,
        provider_for: &dyn Fn(&ModelEntry) -> BuildResult,
        services: Services,
        previous: Option<&Router>,
    ) -> Result<Self, BuildError> {
        let mut deployments = Vec::new();
        let mut groups: HashMap<String, Group> = HashMap::new();
        // Every upstream error passes here on its way to a client, a log
        // line or a usage record: scrubbed once, for all of them.
        let scrubber = Arc::new(Scrubber::from_config(config));
        for entry in config.models.iter().filter(|entry| entry.enabled) {
            let provider = provider_for(entry).map_err(|message| BuildError::Provider {
                index: entry.index,
                name: entry.name.clone(),
                provider: entry.provider.clone(),
                message,
            })?;
            let provider = scrub::guard(provider, &scrubber);
            groups
                .entry(entry.name.clone())
                .or_insert_with(|| Group {
                    deployments: Vec::new(),
                    next: previous
                        .and_then(|router| router.groups.get(&entry.name))
                        .map_or_else(Default::default, |group| Arc::clone(&group.next)),
                })
                .deployments
                .push(deployments.len());
            let before = previous.and_then(|router| router.deployment_like(entry));
            deployments.push(Deployment {
                entry: Arc::new(entry.clone()),
                provider,
                next_key: before.map_or_else(Default::default, |old| Arc::clone(&old.next_key)),
                health: key_health(entry, before),
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

        let started = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Ok(Self {
            keys: KeyStore::new(&config.api_keys),
            deployments,
            groups,
            models_json,
            model_json,
            services,
            default_output_tokens: config.limits.default_output_tokens.get(),
            request_id_prefix: previous.map_or_else(
                || format!("req_{:x}{:08x}", started / 1_000_000, replica_salt()),
                |router| router.request_id_prefix.clone(),
            ),
            next_request: previous
                .map_or_else(Default::default, |router| Arc::clone(&router.next_request)),
            retry: config.retry.clone(),
            cooldown: config.cooldown.clone(),
            clock: previous.map_or_else(Clock::new, |router| router.clock),
            retry_budget: match previous {
                Some(router) if router.retry == config.retry => Arc::clone(&router.retry_budget),
                _ => Arc::new(RetryBudget::new(&config.retry)),
            },
            // Truncating the nanoseconds keeps their fast-moving low bits.
            jitter: Jitter::new(started as u64),
        })
    }

    /// The deployment of this router that is the same entry as `entry` of a
    /// reloaded config: the same `id`, or without ids the same name and
    /// position.
    fn deployment_like(&self, entry: &ModelEntry) -> Option<&Deployment> {
        self.deployments.iter().find(|deployment| {
            let old = &deployment.entry;
            if entry.id != 0 || old.id != 0 {
                old.id == entry.id
            } else {
                old.name == entry.name && old.index == entry.index
            }
        })
    }

    /// A fresh request id, unique across restarts and replicas: this
    /// router's prefix (its start time and a random salt) and a counter.
    pub fn new_request_id(&self) -> String {
        let number = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("{}-{number}", self.request_id_prefix)
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

    /// `POST /v1/chat/completions` with a raw body. Whatever happens, the
    /// request leaves exactly one usage record and settles every permit.
    pub async fn chat(&self, client: &ClientKey, body: &[u8]) -> ChatOutcome {
        self.serve(Endpoint::ChatCompletions, client, body).await
    }

    /// `POST /v1/completions` with a raw body: served by the entries of the
    /// model with `supports_completion`, streamed like chat when asked.
    pub async fn completions(&self, client: &ClientKey, body: &[u8]) -> ChatOutcome {
        self.serve(Endpoint::Completions, client, body).await
    }

    /// `POST /v1/embeddings` with a raw body: served by the entries of the
    /// model with `supports_embedding`; no answer tokens are reserved.
    pub async fn embeddings(&self, client: &ClientKey, body: &[u8]) -> ChatOutcome {
        self.serve(Endpoint::Embeddings, client, body).await
    }

    /// A request to `endpoint` with a raw body, with the books, limits and
    /// failover every endpoint shares. Whatever happens, the request leaves
    /// exactly one usage record and settles every permit.
    pub async fn serve(&self, endpoint: Endpoint, client: &ClientKey, body: &[u8]) -> ChatOutcome {
        self.serve_with(endpoint, client, body, RequestContext::default())
            .await
    }

    /// [`Router::serve`] with what the edge knows of the request: the id it
    /// goes by (the ledger row's too) and who is told when it ends.
    pub async fn serve_with(
        &self,
        endpoint: Endpoint,
        client: &ClientKey,
        body: &[u8],
        context: RequestContext<'_>,
    ) -> ChatOutcome {
        let started = Instant::now();
        let request_id = match context.request_id {
            Some(id) => id.to_owned(),
            None => self.new_request_id(),
        };
        let mut books = Books::new(
            Arc::clone(&self.services.usage),
            Arc::clone(&self.services.counter),
            ledger_key_id(client),
            &client.name,
            &request_id,
            started,
        );
        books.observe(context.observer);
        let result = self.dispatch(endpoint, client, body, &mut books).await;
        let rate = books.rate();
        let result = match result {
            Ok(Answer::Complete(mut completion)) => {
                books.close_completion(&mut completion);
                Ok(ChatResponse::Complete(completion))
            }
            Ok(Answer::Stream(stream)) => Ok(ChatResponse::Stream(books.account_stream(stream))),
            Err(error) => {
                let (outcome, refused_by) = match &error {
                    ChatError::InvalidBody { .. }
                    | ChatError::InvalidField { .. }
                    | ChatError::ModelNotFound { .. }
                    | ChatError::ModelNotSupported { .. } => (Outcome::Invalid, None),
                    ChatError::Refused { refusal } => (Outcome::Refused, Some(refusal.name)),
                    ChatError::LimitsUnavailable { .. } => (Outcome::Refused, None),
                    ChatError::Upstream { .. }
                    | ChatError::AllFailed { .. }
                    | ChatError::Unavailable { .. } => (Outcome::UpstreamFailed, None),
                };
                books.close_failure(outcome, &error, refused_by);
                Err(error)
            }
        };
        ChatOutcome {
            request_id,
            rate,
            result,
        }
    }

    async fn dispatch(
        &self,
        endpoint: Endpoint,
        client: &ClientKey,
        body: &[u8],
        books: &mut Books,
    ) -> Result<Answer, ChatError> {
        let mut request = request::parse_for(endpoint, body)?;
        books.set_request(&request.model, request.stream);
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
        if !group
            .deployments
            .iter()
            .any(|&index| serves(&self.deployments[index].entry, endpoint))
        {
            return Err(ChatError::ModelNotSupported {
                model: request.model,
                endpoint,
            });
        }

        let entries = group.deployments.len();
        let start = group.next.fetch_add(1, Ordering::Relaxed);
        let arrived = tokio::time::Instant::now();
        let mut attempts = 0;
        let mut last_error = None;
        // The refusal to report if no candidate has room: the one that
        // clears soonest, preferring one that can clear at all.
        let mut refused: Option<Refusal> = None;
        // The candidates skipped because their key is resting, disabled or
        // behind an open circuit.
        let mut resting = Resting::default();
        'entries: for offset in 0..entries {
            let deployment = &self.deployments[group.deployments[(start + offset) % entries]];
            let entry = &deployment.entry;
            if !serves(entry, endpoint) {
                continue;
            }
            let keys = &entry.provider_api_keys;
            let key_start = deployment.next_key.fetch_add(1, Ordering::Relaxed);
            let (prompt, output) = self.estimate(endpoint, entry, &request.body);
            let worst_cost = Tokens {
                prompt,
                completion: output,
                cached: 0,
                reasoning: 0,
            }
            .cost(entry);
            for key_offset in 0..keys.len().max(1) {
                let key_index = (!keys.is_empty()).then(|| (key_start + key_offset) % keys.len());
                // Round robin skips keys that are known not to work now.
                let pass = match deployment.health[key_index.unwrap_or(0)].admit(self.clock.now()) {
                    Ok(pass) => pass,
                    Err(skip) => {
                        resting.add(skip);
                        continue;
                    }
                };
                if attempts > 0 && !self.may_retry(attempts, arrived).await {
                    break 'entries;
                }
                let demand = Demand {
                    // The client is charged once per request, on its first admission.
                    key: (!books.has_key_permit()).then_some(&**client),
                    entry,
                    provider_key: key_index,
                    tokens: prompt + output,
                    cost_usd: worst_cost,
                };
                let permit = match self.services.limiter.admit(&demand).await {
                    Ok(permit) => permit,
                    Err(AdmitError::Unavailable { retry_after }) => {
                        return Err(ChatError::LimitsUnavailable { retry_after })
                    }
                    // The client's own limit: no other entry changes that.
                    Err(AdmitError::Refused(refusal)) if refusal.name.scope == Scope::Key => {
                        return Err(ChatError::Refused { refusal })
                    }
                    // This entry or key is out of quota: try the next one.
                    Err(AdmitError::Refused(refusal)) => {
                        refused = Some(match refused {
                            Some(previous) if sooner(&previous, &refusal) => previous,
                            _ => refusal,
                        });
                        continue;
                    }
                };
                if attempts == 0 {
                    self.retry_budget.deposit(self.clock.now());
                }
                books.begin_attempt(entry, key_index, permit, prompt);
                let api_key = key_index.map(|index| keys[index].clone());
                attempts += 1;
                // The last candidate, or the last attempt allowed: no retry
                // can follow, so the client's body moves into the upstream
                // body instead of being copied.
                let last = (offset + 1 == entries && key_offset + 1 == keys.len().max(1))
                    || attempts as u64 >= self.retry.max_attempts.get();
                let client_body = if last {
                    Cow::Owned(std::mem::take(&mut request.body))
                } else {
                    Cow::Borrowed(&request.body)
                };
                let result = self
                    .attempt(endpoint, deployment, &request, client_body, api_key)
                    .await;
                let change = pass.record(result.as_ref().err(), self.clock.now(), &self.cooldown);
                if let Some(change) = change {
                    log_change(change, entry, key_index);
                    // Before anything else happens: the other replicas see
                    // the change before this request's answer is out.
                    self.services
                        .health
                        .publish(HealthNotice {
                            entry_index: entry.index,
                            provider_key: key_index,
                            change,
                        })
                        .await;
                }
                match result {
                    Ok(answer) => {
                        books.upstream_answered(matches!(answer, Answer::Stream(_)));
                        return Ok(answer);
                    }
                    Err(error) => {
                        books.fail_attempt();
                        if !error.is_retryable() {
                            return Err(ChatError::Upstream { source: error });
                        }
                        // The request's one line counts the attempts and
                        // carries the last error; each one is a detail.
                        tracing::debug!(
                            model = %Escaped(&request.model),
                            entry = entry.index,
                            attempt = attempts,
                            error = %Escaped(&error),
                            "upstream attempt failed"
                        );
                        last_error = Some(error);
                    }
                }
            }
        }
        match (last_error, refused) {
            (Some(source), _) if attempts == 1 => Err(ChatError::Upstream { source }),
            (Some(last), _) => Err(ChatError::AllFailed { attempts, last }),
            (None, refused) if resting.skipped > 0 => {
                let retry_after = resting.retry_after(self.clock.now(), self.cooldown.open_for);
                match refused {
                    // A quota that clears before any key recovers is the
                    // better answer.
                    Some(refusal) if !refusal.never_fits && refusal.retry_after < retry_after => {
                        Err(ChatError::Refused { refusal })
                    }
                    _ => Err(ChatError::Unavailable {
                        retry_after,
                        rate_limited: resting.all_rate_limited,
                    }),
                }
            }
            (None, Some(refusal)) => Err(ChatError::Refused { refusal }),
            // Groups are never empty, so a candidate was tried, refused or skipped.
            (None, None) => Err(ChatError::ModelNotFound {
                model: request.model,
            }),
        }
    }

    /// The prompt estimate and the answer reservation of a request to
    /// `endpoint` on `entry`: chat counts its messages with their framing,
    /// text completions their prompt; embeddings generate no answer tokens,
    /// so nothing is reserved for one.
    fn estimate(&self, endpoint: Endpoint, entry: &ModelEntry, body: &JsonObject) -> (u64, u64) {
        let counter = &*self.services.counter;
        match endpoint {
            Endpoint::ChatCompletions => (
                estimate::prompt_tokens(counter, entry, body),
                estimate::output_reservation(body, entry, self.default_output_tokens),
            ),
            Endpoint::Completions => (
                estimate::text_input_tokens(counter, entry, body, "prompt"),
                estimate::output_reservation(body, entry, self.default_output_tokens),
            ),
            Endpoint::Embeddings => (
                estimate::text_input_tokens(counter, entry, body, "input"),
                0,
            ),
        }
    }

    /// Whether attempt number `attempts + 1` may start, after its backoff.
    ///
    /// Every retry waits, even on another key or entry: the candidates left
    /// are not known to be troubled (troubled ones were skipped), but a
    /// failure often has a shared cause (the network, an overloaded
    /// provider), and full jitter keeps the expected wait at half the
    /// ceiling, 25 ms for the first retry by default.
    async fn may_retry(&self, attempts: usize, arrived: tokio::time::Instant) -> bool {
        if attempts as u64 >= self.retry.max_attempts.get() {
            tracing::debug!(attempts, "no retry: max_attempts reached");
            return false;
        }
        let retry = u32::try_from(attempts - 1).unwrap_or(u32::MAX);
        let wait = health::backoff(&self.retry, retry, self.jitter.next());
        if arrived.elapsed() + wait >= self.retry.max_retry_time {
            tracing::debug!(attempts, "no retry: max_retry_time reached");
            return false;
        }
        if !self.retry_budget.try_withdraw(self.clock.now()) {
            tracing::warn!(attempts, "no retry: the retry budget is spent");
            return false;
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        true
    }

    /// `GET /v1/usage`: the asking key's usage today and this month, its
    /// limits with what remains, and the rows the request asked for. Admin
    /// keys may ask about any key, or all of them.
    pub async fn usage(
        &self,
        asker: &ClientKey,
        request: UsageRequest,
    ) -> Result<UsageReport, UsageError> {
        report::usage(self, asker, request).await
    }

    /// `GET /admin/models` (admin keys only): every enabled entry by name
    /// with the health of each provider key (by index, never the key).
    /// `in_flight` is left `None`: the engine does not count requests.
    pub fn admin_models(&self, asker: &ClientKey) -> Result<ModelsView, AdminError> {
        admin::require_admin(asker)?;
        let clock_now = self.clock.now();
        let wall_now = OffsetDateTime::now_utc();
        let mut models: Vec<ModelView> = Vec::new();
        for deployment in &self.deployments {
            let entry = &deployment.entry;
            let keyed = !entry.provider_api_keys.is_empty();
            let view = EntryView {
                index: entry.index,
                id: entry.id,
                provider: entry.provider.clone(),
                provider_model_name: entry.provider_model_name.clone(),
                keys: deployment
                    .health
                    .iter()
                    .enumerate()
                    .map(|(index, health)| {
                        KeyHealthView::new(
                            keyed.then_some(index),
                            health.snapshot(clock_now),
                            clock_now,
                            wall_now,
                        )
                    })
                    .collect(),
            };
            match models.iter_mut().find(|model| model.name == entry.name) {
                Some(model) => model.entries.push(view),
                None => models.push(ModelView {
                    name: entry.name.clone(),
                    entries: vec![view],
                }),
            }
        }
        Ok(ModelsView {
            object: "admin.models",
            time: wall_now,
            in_flight: None,
            models,
        })
    }

    /// `GET /admin/keys` (admin keys only): every client key by id and
    /// name, in config order, with each limit and what remains of it.
    pub async fn admin_keys(&self, asker: &ClientKey) -> Result<KeysView, AdminError> {
        admin::require_admin(asker)?;
        let mut configured: Vec<&ClientKeyConfig> = self.keys.iter().collect();
        configured.sort_by_key(|key| key.index);
        let mut keys = Vec::with_capacity(configured.len());
        for key in configured {
            let limits = self
                .services
                .limiter
                .key_headroom(key)
                .await
                .into_iter()
                .map(LimitView::from)
                .collect();
            keys.push(ClientKeyView::new(key, limits));
        }
        Ok(KeysView {
            object: "admin.keys",
            keys,
        })
    }

    /// `GET /admin/usage` (admin keys only): today's totals of every key,
    /// and the last hour by minute and the last days by hour, each by model
    /// and by key, from the ledger.
    pub async fn admin_usage(&self, asker: &ClientKey) -> Result<UsageView, AdminError> {
        admin::require_admin(asker)?;
        let store = self.services.store.as_ref().ok_or(AdminError::NoLedger)?;
        admin::usage(store.as_ref()).await
    }

    /// `GET /admin/errors` (admin keys only): the latest `limit` requests
    /// (at most [`admin::MAX_ERRORS`]) that did not end `ok`, newest first,
    /// from the ledger, so every replica sharing it shows the same.
    pub async fn admin_errors(
        &self,
        asker: &ClientKey,
        limit: usize,
    ) -> Result<ErrorsView, AdminError> {
        admin::require_admin(asker)?;
        let store = self.services.store.as_ref().ok_or(AdminError::NoLedger)?;
        admin::errors(store.as_ref(), limit).await
    }

    pub(crate) fn services(&self) -> &Services {
        &self.services
    }

    pub(crate) fn key_by_ledger_id(&self, id: u64) -> Option<&ClientKeyConfig> {
        self.keys.iter().find(|key| ledger_key_id(key) == id)
    }

    /// One try against one entry and one provider key. An `Err` means nothing
    /// has been sent to the client yet.
    async fn attempt(
        &self,
        endpoint: Endpoint,
        deployment: &Deployment,
        request: &ChatRequest,
        client_body: Cow<'_, JsonObject>,
        api_key: Option<Secret>,
    ) -> Result<Answer, ProviderError> {
        match endpoint {
            Endpoint::ChatCompletions => {
                self.attempt_chat(deployment, request, client_body, api_key)
                    .await
            }
            Endpoint::Completions => {
                let provider = &deployment.provider;
                // No thinking mapping: Gemini's thinking is a chat feature.
                let body = upstream_body(&deployment.entry, client_body, request.stream, false);
                let provider_request = ProviderRequest { body, api_key };
                let rewriter = Rewriter::new(&request.model, false);
                if request.stream {
                    let stream = provider.stream_text(provider_request).await?;
                    return relay(stream, rewriter).await;
                }
                let mut completion = provider.complete_text(provider_request).await?;
                rewriter.completion(&mut completion);
                Ok(Answer::Complete(completion))
            }
            Endpoint::Embeddings => {
                // Only `model` changes: `encoding_format`, `dimensions` and
                // every other field go up as the client sent them.
                let mut body = client_body.into_owned();
                set(
                    &mut body,
                    "model",
                    Value::String(deployment.entry.provider_model_name.clone()),
                );
                let provider_request = ProviderRequest { body, api_key };
                let mut completion = deployment.provider.embed(provider_request).await?;
                Rewriter::new(&request.model, false).completion(&mut completion);
                Ok(Answer::Complete(completion))
            }
        }
    }

    async fn attempt_chat(
        &self,
        deployment: &Deployment,
        request: &ChatRequest,
        client_body: Cow<'_, JsonObject>,
        api_key: Option<Secret>,
    ) -> Result<Answer, ProviderError> {
        let entry = &deployment.entry;
        let upstream_streams = request.stream || entry.stream_only;
        let body = upstream_body(
            entry,
            client_body,
            upstream_streams,
            entry.support_google_thinking,
        );
        let provider_request = ProviderRequest { body, api_key };
        let mut rewriter = Rewriter::new(&request.model, entry.support_google_thinking);

        if request.stream {
            let stream = deployment.provider.stream(provider_request).await?;
            return relay(stream, rewriter).await;
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
        rewriter.completion(&mut completion);
        Ok(Answer::Complete(completion))
    }
}

/// A stream that reaches the client rewritten. Its first chunk is awaited
/// here, before the client sees a 200: a stream that fails at once can still
/// fail over.
async fn relay(mut stream: ChunkStream, mut rewriter: Rewriter) -> Result<Answer, ProviderError> {
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
    Ok(Answer::Stream(Box::pin(stream)))
}

/// Whether `entry` may serve `endpoint`. Chat is not gated (the seed never
/// read `supports_chat`, and configs in use leave it out); text completions
/// and embeddings need the entry's `supports_completion` or
/// `supports_embedding`, since most models serve neither.
fn serves(entry: &ModelEntry, endpoint: Endpoint) -> bool {
    match endpoint {
        Endpoint::ChatCompletions => true,
        Endpoint::Completions => entry.capabilities.completion,
        Endpoint::Embeddings => entry.capabilities.embedding,
    }
}

/// What a successful attempt produced, before the books are attached.
enum Answer {
    Complete(Completion),
    Stream(ChunkStream),
}

impl HealthListener for Router {
    /// What another replica learnt about a key: applied to this router's
    /// own health of that key. An entry that is not enabled here, or a key
    /// it does not have, is ignored.
    fn apply(&self, notice: HealthNotice) {
        let Some(deployment) = self
            .deployments
            .iter()
            .find(|deployment| deployment.entry.index == notice.entry_index)
        else {
            return;
        };
        if let Some(health) = deployment.health.get(notice.provider_key.unwrap_or(0)) {
            health.apply(notice.change, self.clock.now());
        }
    }
}

/// The health of each provider key of `entry`: shared with the same key (by
/// its secret) of the entry's deployment in the running router, if any, so
/// that a rest, a key taken out or an open circuit outlives a reload.
fn key_health(entry: &ModelEntry, before: Option<&Deployment>) -> Vec<Arc<KeyHealth>> {
    let keys = &entry.provider_api_keys;
    if keys.is_empty() {
        let kept = before
            .filter(|old| old.entry.provider_api_keys.is_empty())
            .and_then(|old| old.health.first());
        return vec![kept.map_or_else(Default::default, Arc::clone)];
    }
    keys.iter()
        .map(|key| {
            before
                .and_then(|old| {
                    let position = old
                        .entry
                        .provider_api_keys
                        .iter()
                        .position(|old_key| old_key.expose() == key.expose())?;
                    old.health.get(position)
                })
                .map_or_else(Default::default, Arc::clone)
        })
        .collect()
}

/// 32 random bits, so that replicas started in the same millisecond still
/// number their requests apart. std's `RandomState` is seeded from the
/// operating system's randomness, which is all this needs.
fn replica_salt() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}

/// Logs what an attempt changed in the health of its key. The key itself is
/// a secret: only its index is named.
fn log_change(change: HealthChange, entry: &ModelEntry, key_index: Option<usize>) {
    match change {
        // Logged as the attempt's failure already.
        HealthChange::Rest(_) => {}
        HealthChange::Disabled => tracing::error!(
            entry = entry.index,
            name = %entry.name,
            provider_key = key_index,
            "the upstream refused this provider key (401/403); it is not used again until the router restarts"
        ),
        HealthChange::Open(_) => tracing::warn!(
            entry = entry.index,
            name = %entry.name,
            provider_key = key_index,
            "circuit opened after consecutive upstream failures"
        ),
        HealthChange::Closed => tracing::info!(
            entry = entry.index,
            name = %entry.name,
            provider_key = key_index,
            "circuit closed: the upstream answers again"
        ),
    }
}

/// Whether `a` should be reported rather than `b`: a refusal that can clear
/// beats one that never will, then the one that clears sooner.
fn sooner(a: &Refusal, b: &Refusal) -> bool {
    match (a.never_fits, b.never_fits) {
        (false, true) => true,
        (true, false) => false,
        _ => a.retry_after <= b.retry_after,
    }
}

/// The id a client key is recorded under: its configured `id`, or, for keys
/// without one, a stable id derived from the key's digest (with the top bit
/// set, so it never meets a configured id).
pub fn ledger_key_id(key: &ClientKeyConfig) -> u64 {
    if key.id != 0 {
        return key.id;
    }
    let digest = sha2::Sha256::digest(key.key.expose().as_bytes());
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes) | (1 << 63)
}

/// The body sent upstream for one attempt. Each attempt starts from the
/// client's body (the seed edited one buffer across attempts, so an earlier
/// entry's rewrite leaked into the next).
fn upstream_body(
    entry: &ModelEntry,
    client_body: Cow<'_, JsonObject>,
    stream: bool,
    map_thinking: bool,
) -> JsonObject {
    let mut body = client_body.into_owned();
    if map_thinking {
        thinking::map_request(&mut body);
    }
    set(
        &mut body,
        "model",
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

/// `object[key] = value`, in place when the key is there (as `model` nearly
/// always is), so no key is allocated only to be dropped.
fn set(object: &mut JsonObject, key: &str, value: Value) {
    match object.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            object.insert(key.to_owned(), value);
        }
    }
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

    fn chunk(&mut self, chunk: &mut JsonObject) {
        chunk.shift_remove("provider");
        set(chunk, "model", self.model.clone());
        if let Some(thinking) = self.thinking.as_mut() {
            thinking.map_chunk(chunk);
        }
    }

    fn completion(&self, completion: &mut Completion) {
        completion.remove("provider");
        completion.set("model", self.model.clone());
        if self.map_thoughts {
            thinking::map_completion(completion);
        }
    }
}
