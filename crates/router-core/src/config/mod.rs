//! Configuration: the validated [`Config`] the rest of the router runs on.
//!
//! Loading has two phases. `raw` holds serde structs that mirror the YAML file
//! (the seed's format, unchanged, plus our additions); `validate` turns them
//! into the types below, whose invariants hold: no `Option` that "must be set
//! by now", parsed URLs, `Duration`s, non-zero limits. Every problem found is
//! reported at once, each naming the file, the field path and the line when known.
//!
//! Only this module (and its children) touch YAML.

use std::net::IpAddr;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;
use url::Url;

use crate::secret::Secret;

mod diff;
mod env;
mod error;
mod raw;
mod scalar;
mod validate;
mod yaml;

pub use diff::{diff, Changes, ConfigChanges};
pub use error::{ConfigError, ConfigErrors};
pub use validate::{load_file, parse};

/// The name of the built-in OpenAI-compatible adapter, and the default adapter
/// of an entry with `is_openai_compatibility: true`.
pub const OPENAI_PROVIDER: &str = "openai";
/// The name of the built-in Anthropic Messages adapter.
pub const ANTHROPIC_PROVIDER: &str = "anthropic";
/// The name of the built-in deterministic adapter used by the default config.
pub const MOCK_PROVIDER: &str = "mock";

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (used in messages only).
    pub source: PathBuf,
    pub server: ServerConfig,
    /// Every entry of `models:` in file order, disabled ones included.
    pub models: Vec<ModelEntry>,
    /// Every entry of `api_keys:` in file order.
    pub api_keys: Vec<ClientKeyConfig>,
    pub limits: LimitsConfig,
    /// `retry:`: how failed attempts are retried.
    pub retry: RetryPolicy,
    /// `cooldown:`: how failing provider keys are rested.
    pub cooldown: CooldownPolicy,
}

/// `retry:`. Retries happen only before the first byte reaches the client:
/// the next provider key of the entry, then the next entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// `retry.max_attempts`: attempts per request, the first included. Default 5.
    pub max_attempts: NonZeroU64,
    /// `retry.max_retry_time`: no retry starts once this much time has passed
    /// since the request arrived. Default 30s.
    pub max_retry_time: Duration,
    /// `retry.backoff_base`: the wait before the first retry; doubled at each
    /// retry, with full jitter. Default 50ms.
    pub backoff_base: Duration,
    /// `retry.backoff_max`: the longest wait between two attempts. Default 2s.
    pub backoff_max: Duration,
    /// `retry.budget_ratio`: retries may add at most this share of the
    /// request rate (over ten seconds), so an outage does not multiply load.
    /// Default 0.2.
    pub budget_ratio: f64,
    /// `retry.budget_min_per_second`: retries always allowed per second,
    /// whatever the ratio, so a quiet router can still retry. Default 10.
    pub budget_min_per_second: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: NonZeroU64::MIN.saturating_add(4),
            max_retry_time: Duration::from_secs(30),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            budget_ratio: 0.2,
            budget_min_per_second: 10,
        }
    }
}

/// `cooldown:`: resting provider keys that fail.
#[derive(Debug, Clone, PartialEq)]
pub struct CooldownPolicy {
    /// `cooldown.rate_limited`: how long a key that got a 429 without
    /// `Retry-After` rests. Default 30s.
    pub rate_limited: Duration,
    /// `cooldown.failures_to_open`: consecutive failures (connect errors,
    /// timeouts, 5xx) that open the circuit of a key. Default 5.
    pub failures_to_open: NonZeroU64,
    /// `cooldown.open_for`: how long an open circuit stays open before one
    /// probe request is let through (half-open). Default 30s.
    pub open_for: Duration,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        Self {
            rate_limited: Duration::from_secs(30),
            failures_to_open: NonZeroU64::MIN.saturating_add(4),
            open_for: Duration::from_secs(30),
        }
    }
}

/// Upstream timeouts of one entry: its own where it sets them, else the
/// server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP and TLS connect.
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// The longest silence between two chunks of a stream.
    pub idle: Duration,
    /// The whole attempt, streams included.
    pub total: Duration,
}

/// `limits:`: how limits are reserved and where what must survive a restart
/// is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// `limits.default_output_tokens`: tokens reserved for the answer of a
    /// request that sets neither `max_completion_tokens` nor `max_tokens`
    /// (capped by the model's `max_tokens`). Default 1024.
    pub default_output_tokens: NonZeroU64,
    /// `limits.database`: the SQLite file for day counters, budgets and the
    /// usage ledger. Default `data/router.db`; its folder is created.
    pub database: PathBuf,
    /// `limits.flush_interval`: how often pending ledger rows and counters are
    /// written. Default 1s.
    pub flush_interval: Duration,
    /// `limits.ledger`: keep the usage ledger and the calendar counters in
    /// `database`. Default true. When false no file is opened or created: no
    /// usage rows are written, day quotas and budgets are counted in memory
    /// only (still enforced, but back to zero at every restart), and
    /// `/v1/usage` has no ledger to answer from.
    pub ledger: bool,
    /// `limits.backend`: where the counters of every limit live. Default
    /// [`LimitsBackend::Memory`].
    pub backend: LimitsBackend,
    /// `limits.ledger_url`: a PostgreSQL URL (`postgres://user:pass@host/db`)
    /// for the usage ledger shared by several replicas; `None` keeps it in
    /// `database`. A secret: it may carry a password.
    pub ledger_url: Option<Secret>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            default_output_tokens: NonZeroU64::MIN.saturating_add(1023),
            database: PathBuf::from("data/router.db"),
            flush_interval: Duration::from_secs(1),
            ledger: true,
            backend: LimitsBackend::Memory,
            ledger_url: None,
        }
    }
}

/// `limits.backend`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum LimitsBackend {
    /// In this process (the embedded default): exact for one replica.
    #[default]
    Memory,
    /// In one Redis shared by every replica (`limits.redis`).
    Redis(RedisConfig),
}

/// `limits.redis`: the Redis (or Valkey) that replicas share.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS), with an optional password. A secret.
    pub url: Secret,
    /// Prepended to every key, so several routers can share one Redis.
    /// Default `router:`.
    pub key_prefix: String,
    /// Default 200 ms.
    pub connect_timeout: Duration,
    /// The longest any admission waits for Redis. Default 50 ms.
    pub command_timeout: Duration,
    pub on_unavailable: OnUnavailable,
    /// `limits.redis.replicas`: how many replicas share the limits. While
    /// Redis is unreachable under `fail_open`, each replica enforces this
    /// share of every limit in memory. Default 1.
    pub replicas: NonZeroU64,
}

impl RedisConfig {
    pub fn new(url: Secret) -> Self {
        Self {
            url,
            key_prefix: "router:".to_owned(),
            connect_timeout: Duration::from_millis(200),
            command_timeout: Duration::from_millis(50),
            on_unavailable: OnUnavailable::FailOpen,
            replicas: NonZeroU64::MIN,
        }
    }
}

/// `limits.redis.on_unavailable`: what admission does while Redis cannot
/// answer within `command_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUnavailable {
    /// Enforce each replica's share of the limits in memory.
    #[default]
    FailOpen,
    /// Refuse with 503 `limits_unavailable`.
    FailClosed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `server.host`, default `0.0.0.0` like the seed.
    pub host: IpAddr,
    /// `server.port` (string or integer), default 8316; `0` picks a free port.
    pub port: u16,
    /// `server.shutdown_timeout`, default 10s.
    pub shutdown_timeout: Duration,
    /// `server.max_body_bytes`, default 16 MiB.
    pub max_body_bytes: usize,
    /// `server.sse_keepalive`: comment heartbeat while the upstream is silent, default 10s.
    pub sse_keepalive: Duration,
    /// `server.max_sse_event_bytes`: cap on one upstream SSE event, default 8 MiB.
    pub max_sse_event_bytes: usize,
    /// `server.connect_timeout`: TCP+TLS connect to an upstream, default 10s.
    pub connect_timeout: Duration,
    /// `server.request_timeout`: whole upstream attempt, default 30m (the seed's).
    pub request_timeout: Duration,
    /// `server.first_byte_timeout`: from sending a request upstream to its
    /// response head, default 10m (a non-streamed answer's head usually comes
    /// only when the whole answer is ready, and reasoning models take minutes).
    pub first_byte_timeout: Duration,
    /// `server.idle_timeout`: the longest silence between two pieces of an
    /// upstream stream, default 5m.
    pub idle_timeout: Duration,
    /// `server.metrics`: serve `GET /metrics` and feed it, default true.
    /// When false the route answers 404 like any unknown path and no
    /// per-request metrics work is done.
    pub metrics: bool,
}

impl ServerConfig {
    /// The server-wide timeouts, which entries may override.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.connect_timeout,
            first_byte: self.first_byte_timeout,
            idle: self.idle_timeout,
            total: self.request_timeout,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 8316,
            shutdown_timeout: Duration::from_secs(10),
            max_body_bytes: 16 * 1024 * 1024,
            sse_keepalive: Duration::from_secs(10),
            max_sse_event_bytes: 8 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30 * 60),
            first_byte_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            metrics: true,
        }
    }
}

/// Limits of a model entry, enforced per provider key. `None` = no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelLimits {
    pub rpm: Option<NonZeroU64>,
    pub rph: Option<NonZeroU64>,
    pub rpd: Option<NonZeroU64>,
    pub tpm: Option<NonZeroU64>,
    pub tph: Option<NonZeroU64>,
    pub tpd: Option<NonZeroU64>,
}

/// Limits of a client key. `None` = no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub rps: Option<NonZeroU64>,
    pub rpm: Option<NonZeroU64>,
    pub rph: Option<NonZeroU64>,
    pub rpd: Option<NonZeroU64>,
    pub tps: Option<NonZeroU64>,
    pub tpm: Option<NonZeroU64>,
    pub tph: Option<NonZeroU64>,
    pub tpd: Option<NonZeroU64>,
}

/// Capability flags, shown by `/v1/models` (the seed enforces none of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub chat: bool,
    pub completion: bool,
    pub embedding: bool,
    pub image_gen: bool,
    pub image_edit: bool,
    pub image_var: bool,
    pub input_image: bool,
    pub audio_trans: bool,
    pub audio_trans2: bool,
}

/// One entry of `models:`: a deployment of a client-facing model name.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Position in the file (0-based), for messages.
    pub index: usize,
    /// `id`, default 0.
    pub id: u64,
    /// `name`: the client-facing model name; may repeat across entries.
    pub name: String,
    /// `provider_model_name`, defaulting to `name`.
    pub provider_model_name: String,
    pub display_name: String,
    pub description: String,
    pub capabilities: Capabilities,
    pub support_google_thinking: bool,
    /// Serve non-stream requests by aggregating an upstream stream.
    pub stream_only: bool,
    pub limits: ModelLimits,
    /// USD per input token.
    pub input_price_per_token: f64,
    /// USD per output token.
    pub output_price_per_token: f64,
    /// `cached_input_price_per_token`: USD per prompt token served from the
    /// provider's cache; defaults to `input_price_per_token`.
    pub cached_input_price_per_token: f64,
    /// `max_tokens`: the most the model generates in one answer.
    pub max_tokens: Option<NonZeroU64>,
    pub context_length: Option<NonZeroU64>,
    /// `None` when absent in the file (the seed lists it as `null`).
    pub supported_parameters: Option<Vec<String>>,
    /// The adapter's registered name (`openai`, `mock`, ...).
    pub provider: String,
    /// `provider_api_key`, used round robin. May be empty (no upstream `Authorization`).
    pub provider_api_keys: Vec<Secret>,
    /// `base_url`; required by the `openai` adapter (the API root with its
    /// version, `https://api.openai.com/v1`) and the `anthropic` adapter
    /// (the root without `/v1`, `https://api.anthropic.com`).
    pub base_url: Option<Url>,
    /// POST exactly `base_url` instead of `base_url + "/chat/completions"`.
    pub base_url_direct: bool,
    pub is_openai_compatibility: bool,
    pub enabled: bool,
    pub visible: bool,
    /// `connect_timeout`, `first_byte_timeout`, `idle_timeout`,
    /// `request_timeout` on the entry, each defaulting to the server's.
    pub timeouts: Timeouts,
}

impl ModelEntry {
    /// An enabled, visible entry named `name` and served by `provider`, with
    /// every other field at its default (no keys, no limits, no base URL).
    /// For services and tests that build a [`Config`] in code; set the rest
    /// with struct update syntax.
    pub fn new(name: impl Into<String>, provider: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            index: 0,
            id: 0,
            provider_model_name: name.clone(),
            name,
            display_name: String::new(),
            description: String::new(),
            capabilities: Capabilities::default(),
            support_google_thinking: false,
            stream_only: false,
            limits: ModelLimits::default(),
            input_price_per_token: 0.0,
            output_price_per_token: 0.0,
            cached_input_price_per_token: 0.0,
            max_tokens: None,
            context_length: None,
            supported_parameters: None,
            provider: provider.into(),
            provider_api_keys: Vec::new(),
            base_url: None,
            base_url_direct: false,
            is_openai_compatibility: false,
            enabled: true,
            visible: true,
            timeouts: ServerConfig::default().timeouts(),
        }
    }
}

/// One entry of `api_keys:`: a key clients present to the router.
#[derive(Debug, Clone)]
pub struct ClientKeyConfig {
    /// Position in the file (0-based), for messages.
    pub index: usize,
    pub id: u64,
    pub key: Secret,
    pub name: String,
    pub is_active: bool,
    pub user_id: Option<u64>,
    pub expires_at: Option<OffsetDateTime>,
    pub limits: KeyLimits,
    /// `max_budget_usd` with `budget_period`: spend allowed per period.
    pub budget: Option<Budget>,
    /// `admin: true`: may read every key's usage.
    pub admin: bool,
}

/// A spend limit of a client key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// `max_budget_usd`, greater than zero.
    pub max_usd: f64,
    /// `budget_period`, default `month`.
    pub period: BudgetPeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    /// A UTC calendar day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl ClientKeyConfig {
    /// An active key with no expiry and no limits, for services and tests
    /// that build a [`Config`] in code.
    pub fn new(key: Secret) -> Self {
        Self {
            index: 0,
            id: 0,
            key,
            name: String::new(),
            is_active: true,
            user_id: None,
            expires_at: None,
            limits: KeyLimits::default(),
            budget: None,
            admin: false,
        }
    }
}
