//! Raw structs to a validated [`Config`].
//!
//! The entry points read the text, walk it into `raw` structs and check what
//! a single field cannot: ranges, defaults, cross-field rules (a model must be
//! reachable) and cross-item rules (ids and client keys are unique). Every
//! problem is collected; the caller gets either a whole `Config` or all of
//! them, each with file, field path and line.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::error::Problem;
use super::raw::{
    closest, Ctx, Field, RawApiKey, RawConfig, RawCooldown, RawLimits, RawModel, RawRedis,
    RawRetry, RawServer,
};
use super::yaml::{self, LineIndex};
use super::{
    Budget, BudgetPeriod, Capabilities, ClientKeyConfig, Config, ConfigError, ConfigErrors,
    CooldownPolicy, KeyLimits, LimitsBackend, LimitsConfig, ModelEntry, ModelLimits, OnUnavailable,
    RedisConfig, RetryPolicy, ServerConfig, Timeouts, ANTHROPIC_PROVIDER, OPENAI_PROVIDER,
};
use crate::secret::Secret;

/// Reads and validates a config file. `env` looks up `${VAR}` references.
pub fn load_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text, env),
        Err(error) => Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            path: String::new(),
            line: None,
            message: format!("cannot read the file: {error}"),
        }])),
    }
}

/// Validates config text. `file` is used in messages only.
///
/// String values may use `${VAR}`, looked up with `env`; `$${` writes a
/// literal `${`.
pub fn parse(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let lines = LineIndex::scan(text);
    let mut cx = Ctx::new(env);
    let config = match yaml::parse_document(text, &lines) {
        Ok(document) => {
            let raw = RawConfig::decode(&document, &mut cx);
            Some(validate(file, raw, &mut cx))
        }
        Err(problem) => {
            cx.problems.push(problem);
            None
        }
    };
    match config {
        Some(config) if cx.problems.is_empty() => Ok(config),
        _ => Err(to_errors(file, cx.problems, &lines)),
    }
}

/// Ties problems to the file and its lines, in line order (those without a
/// line last) so the report reads like the file.
fn to_errors(file: &Path, problems: Vec<Problem>, lines: &LineIndex) -> ConfigErrors {
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|problem| ConfigError {
            file: file.to_path_buf(),
            line: problem.line.or_else(|| lines.line_of(&problem.path)),
            path: problem.path,
            message: problem.message,
        })
        .collect();
    errors.sort_by_key(|error| error.line.unwrap_or(usize::MAX));
    ConfigErrors(errors)
}

fn validate(file: &Path, raw: RawConfig, cx: &mut Ctx<'_>) -> Config {
    let server = match raw.server {
        Field::Set(server) => validate_server(server, cx),
        Field::Absent | Field::Invalid => ServerConfig::default(),
    };
    let limits = match raw.limits {
        Field::Set(limits) => validate_limits(limits, cx),
        Field::Absent | Field::Invalid => LimitsConfig::default(),
    };
    let retry = match raw.retry {
        Field::Set(retry) => validate_retry(retry, cx),
        Field::Absent | Field::Invalid => RetryPolicy::default(),
    };
    let cooldown = match raw.cooldown {
        Field::Set(cooldown) => validate_cooldown(cooldown, cx),
        Field::Absent | Field::Invalid => CooldownPolicy::default(),
    };
    // Entries inherit the server's timeouts, so `server:` is read first
    // wherever it sits in the file.
    let server_timeouts = server.timeouts();
    let models: Vec<ModelEntry> = raw
        .models
        .set()
        .map(|entries| entries.0)
        .unwrap_or_default()
        .into_iter()
        .map(|(index, model)| validate_model(index, model, server_timeouts, cx))
        .collect();
    let api_keys: Vec<ClientKeyConfig> = raw
        .api_keys
        .set()
        .map(|entries| entries.0)
        .unwrap_or_default()
        .into_iter()
        .map(|(index, key)| validate_client_key(index, key, cx))
        .collect();

    // The seed keys its provider-key round robin by `id`, with 0 (or no id)
    // shared on purpose; two entries that name the same non-zero id are a
    // copy-paste slip, not a wish to share.
    unique_ids(
        "models",
        models.iter().map(|model| (model.index, model.id)),
        cx,
    );
    unique_ids(
        "api_keys",
        api_keys.iter().map(|key| (key.index, key.id)),
        cx,
    );
    unique_client_keys(&api_keys, cx);

    Config {
        source: file.to_path_buf(),
        server,
        models,
        api_keys,
        limits,
        retry,
        cooldown,
    }
}

fn validate_server(raw: RawServer, cx: &mut Ctx<'_>) -> ServerConfig {
    let defaults = ServerConfig::default();
    ServerConfig {
        host: raw.host.set().unwrap_or(defaults.host),
        port: raw.port.set().map_or(defaults.port, |port| port.0),
        // Zero is allowed: the seed then shuts down at once unless idle.
        shutdown_timeout: raw
            .shutdown_timeout
            .set()
            .unwrap_or(defaults.shutdown_timeout),
        max_body_bytes: byte_size(
            raw.max_body_bytes,
            "server.max_body_bytes",
            defaults.max_body_bytes,
            cx,
        ),
        sse_keepalive: positive_duration(
            raw.sse_keepalive,
            "server.sse_keepalive",
            defaults.sse_keepalive,
            cx,
        ),
        max_sse_event_bytes: byte_size(
            raw.max_sse_event_bytes,
            "server.max_sse_event_bytes",
            defaults.max_sse_event_bytes,
            cx,
        ),
        connect_timeout: positive_duration(
            raw.connect_timeout,
            "server.connect_timeout",
            defaults.connect_timeout,
            cx,
        ),
        request_timeout: positive_duration(
            raw.request_timeout,
            "server.request_timeout",
            defaults.request_timeout,
            cx,
        ),
        first_byte_timeout: positive_duration(
            raw.first_byte_timeout,
            "server.first_byte_timeout",
            defaults.first_byte_timeout,
            cx,
        ),
        idle_timeout: positive_duration(
            raw.idle_timeout,
            "server.idle_timeout",
            defaults.idle_timeout,
            cx,
        ),
        metrics: raw.metrics.set().unwrap_or(defaults.metrics),
    }
}

fn validate_retry(raw: RawRetry, cx: &mut Ctx<'_>) -> RetryPolicy {
    let defaults = RetryPolicy::default();
    let backoff_base_set = matches!(raw.backoff_base, Field::Set(_));
    let backoff_max_set = matches!(raw.backoff_max, Field::Set(_));
    // Zero is allowed for both: no wait at all between attempts.
    let backoff_base = raw.backoff_base.set().unwrap_or(defaults.backoff_base);
    let backoff_max = raw.backoff_max.set().unwrap_or(defaults.backoff_max);
    let (backoff_base, backoff_max) = if backoff_max < backoff_base {
        // Blame the field the user wrote; when both are written, the cap.
        if backoff_max_set || !backoff_base_set {
            cx.error(
                "retry.backoff_max",
                format!(
                    "must not be shorter than `retry.backoff_base` ({backoff_base:?}), found \
                     {backoff_max:?}: raise `backoff_max` or lower `backoff_base`"
                ),
            );
        } else {
            cx.error(
                "retry.backoff_base",
                format!(
                    "must not be longer than `retry.backoff_max` ({backoff_max:?}, the default), \
                     found {backoff_base:?}: lower `backoff_base` or set a larger `backoff_max`"
                ),
            );
        }
        (defaults.backoff_base, defaults.backoff_max)
    } else {
        (backoff_base, backoff_max)
    };
    let budget_ratio = match raw.budget_ratio.set() {
        Some(ratio) if (0.0..=10.0).contains(&ratio) => ratio,
        Some(ratio) if ratio.is_nan() => {
            cx.error("retry.budget_ratio", "must be a number from 0 to 10");
            defaults.budget_ratio
        }
        Some(ratio) => {
            cx.error(
                "retry.budget_ratio",
                format!(
                    "must be from 0 (no retries beyond `budget_min_per_second`) to 10, found {ratio}"
                ),
            );
            defaults.budget_ratio
        }
        None => defaults.budget_ratio,
    };
    RetryPolicy {
        max_attempts: at_least_one(
            raw.max_attempts,
            "retry.max_attempts",
            defaults.max_attempts,
            cx,
        ),
        // Zero is allowed: no retry at all, whatever `max_attempts` says.
        max_retry_time: raw.max_retry_time.set().unwrap_or(defaults.max_retry_time),
        backoff_base,
        backoff_max,
        budget_ratio,
        budget_min_per_second: count(raw.budget_min_per_second, "retry.budget_min_per_second", cx)
            .unwrap_or(defaults.budget_min_per_second),
    }
}

fn validate_cooldown(raw: RawCooldown, cx: &mut Ctx<'_>) -> CooldownPolicy {
    let defaults = CooldownPolicy::default();
    CooldownPolicy {
        rate_limited: positive_duration(
            raw.rate_limited,
            "cooldown.rate_limited",
            defaults.rate_limited,
            cx,
        ),
        failures_to_open: at_least_one(
            raw.failures_to_open,
            "cooldown.failures_to_open",
            defaults.failures_to_open,
            cx,
        ),
        open_for: positive_duration(raw.open_for, "cooldown.open_for", defaults.open_for, cx),
    }
}

fn validate_limits(raw: RawLimits, cx: &mut Ctx<'_>) -> LimitsConfig {
    let defaults = LimitsConfig::default();
    let database = match raw.database {
        // Kept as written: a relative path is relative to the working
        // directory of the process, like `--config`.
        Field::Set(database) => {
            let path = "limits.database";
            if database.trim().is_empty() {
                cx.error(
                    path,
                    "must not be empty: name the SQLite file, e.g. `data/router.db`",
                );
                defaults.database
            } else if database.ends_with(std::path::is_separator)
                || Path::new(&database).file_name().is_none()
            {
                cx.error(
                    path,
                    "must name a file such as `data/router.db`, not a folder",
                );
                defaults.database
            } else {
                PathBuf::from(database)
            }
        }
        Field::Absent | Field::Invalid => defaults.database,
    };
    let ledger = raw.ledger.set().unwrap_or(defaults.ledger);
    LimitsConfig {
        default_output_tokens: at_least_one(
            raw.default_output_tokens,
            "limits.default_output_tokens",
            defaults.default_output_tokens,
            cx,
        ),
        database,
        flush_interval: positive_duration(
            raw.flush_interval,
            "limits.flush_interval",
            defaults.flush_interval,
            cx,
        ),
        // Unlike the seed's booleans, an absent switch keeps its feature on.
        ledger,
        backend: validate_backend(raw.backend, raw.redis, cx),
        ledger_url: match raw.ledger_url {
            Field::Set(_) if !ledger => {
                cx.error(
                    "limits.ledger_url",
                    "cannot be used with `limits.ledger: false`, which records no usage: \
                     remove one of the two",
                );
                None
            }
            Field::Set(url) => service_url(
                url,
                "limits.ledger_url",
                &["postgres", "postgresql"],
                "`postgres://user:password@127.0.0.1:5432/router`",
                cx,
            ),
            Field::Absent | Field::Invalid => None,
        },
    }
}

/// `limits.backend` with `limits.redis`.
fn validate_backend(
    backend: Field<String>,
    redis: Field<RawRedis>,
    cx: &mut Ctx<'_>,
) -> LimitsBackend {
    const BACKENDS: &[&str] = &["memory", "redis"];
    let wants_redis = match backend {
        Field::Set(text) => match text.trim() {
            "memory" => false,
            "redis" => true,
            other => {
                let hint = closest(&other.to_ascii_lowercase(), BACKENDS)
                    .map(|name| format!(" (did you mean `{name}`?)"))
                    .unwrap_or_default();
                cx.error(
                    "limits.backend",
                    format!("must be `memory` or `redis`{hint}"),
                );
                return LimitsBackend::Memory;
            }
        },
        Field::Absent => false,
        Field::Invalid => return LimitsBackend::Memory,
    };
    match (wants_redis, redis) {
        (true, Field::Set(redis)) => validate_redis(redis, cx)
            .map(LimitsBackend::Redis)
            .unwrap_or_default(),
        (true, Field::Absent) => {
            cx.error(
                "limits.backend",
                "is `redis` but there is no `limits.redis` section; add one with \
                 `url: redis://127.0.0.1:6379/0`",
            );
            LimitsBackend::Memory
        }
        (false, Field::Set(_)) => {
            cx.error(
                "limits.redis",
                "is set but `limits.backend` is `memory`, so it would be ignored; set \
                 `backend: redis` or remove the section",
            );
            LimitsBackend::Memory
        }
        (_, _) => LimitsBackend::Memory,
    }
}

fn validate_redis(raw: RawRedis, cx: &mut Ctx<'_>) -> Option<RedisConfig> {
    let url = match raw.url {
        Field::Set(url) => service_url(
            url,
            "limits.redis.url",
            &["redis", "rediss"],
            "`redis://127.0.0.1:6379/0`",
            cx,
        ),
        Field::Absent => {
            cx.error(
                "limits.redis.url",
                "is required: the Redis to share limits through, e.g. `redis://127.0.0.1:6379/0`",
            );
            None
        }
        Field::Invalid => None,
    };
    let defaults = RedisConfig::new(Secret::new(""));
    let key_prefix = match raw.key_prefix {
        Field::Set(prefix) if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            cx.error(
                "limits.redis.key_prefix",
                "must not contain spaces or control characters",
            );
            defaults.key_prefix.clone()
        }
        Field::Set(prefix) => prefix,
        Field::Absent | Field::Invalid => defaults.key_prefix.clone(),
    };
    let on_unavailable = match raw.on_unavailable {
        Field::Set(text) => match text.trim() {
            "fail_open" => OnUnavailable::FailOpen,
            "fail_closed" => OnUnavailable::FailClosed,
            other => {
                let hint = closest(
                    &other.to_ascii_lowercase().replace('-', "_"),
                    &["fail_open", "fail_closed"],
                )
                .map(|name| format!(" (did you mean `{name}`?)"))
                .unwrap_or_default();
                cx.error(
                    "limits.redis.on_unavailable",
                    format!("must be `fail_open` or `fail_closed`{hint}"),
                );
                defaults.on_unavailable
            }
        },
        Field::Absent | Field::Invalid => defaults.on_unavailable,
    };
    // Every field is checked before a missing URL ends the section.
    let connect_timeout = positive_duration(
        raw.connect_timeout,
        "limits.redis.connect_timeout",
        defaults.connect_timeout,
        cx,
    );
    let command_timeout = positive_duration(
        raw.command_timeout,
        "limits.redis.command_timeout",
        defaults.command_timeout,
        cx,
    );
    let replicas = at_least_one(raw.replicas, "limits.redis.replicas", defaults.replicas, cx);
    Some(RedisConfig {
        url: url?,
        key_prefix,
        connect_timeout,
        command_timeout,
        on_unavailable,
        replicas,
    })
}

/// The URL of a service the router connects to (Redis, PostgreSQL). It is
/// kept as a secret and never echoed, not even in part: it may carry a
/// password.
fn service_url(
    url: Secret,
    path: &str,
    schemes: &[&str],
    example: &str,
    cx: &mut Ctx<'_>,
) -> Option<Secret> {
    let text = url.expose().trim();
    let expected = schemes
        .iter()
        .map(|scheme| format!("`{scheme}://`"))
        .collect::<Vec<_>>()
        .join(" or ");
    match Url::parse(text) {
        Ok(parsed) if schemes.contains(&parsed.scheme()) && parsed.has_host() => {
            Some(Secret::new(text))
        }
        Ok(_) => {
            cx.error(
                path,
                format!("must be a {expected} URL with a host, such as {example}"),
            );
            None
        }
        Err(error) => {
            cx.error(
                path,
                format!("not a valid URL ({error}); expected one such as {example}"),
            );
            None
        }
    }
}

fn validate_model(
    index: usize,
    raw: RawModel,
    server_timeouts: Timeouts,
    cx: &mut Ctx<'_>,
) -> ModelEntry {
    let at = |field: &str| format!("models[{index}].{field}");

    let name = match raw.name {
        Field::Set(name) => {
            if name.trim().is_empty() {
                cx.error(
                    &at("name"),
                    "must not be empty: it is the model name clients ask for",
                );
            }
            name
        }
        Field::Absent => {
            cx.error(
                &at("name"),
                "missing: every model needs the `name` clients ask for",
            );
            String::new()
        }
        Field::Invalid => String::new(),
    };
    // The seed would send an empty model upstream; the name is what was meant.
    let provider_model_name = raw
        .provider_model_name
        .set()
        .filter(|upstream| !upstream.is_empty())
        .unwrap_or_else(|| name.clone());

    let enabled = flag(raw.enabled);
    let is_openai_compatibility = flag(raw.is_openai_compatibility);
    let base_url = parse_base_url(raw.base_url, &at("base_url"), cx);
    let base_url_direct = flag(raw.base_url_direct);

    let provider = match raw.provider {
        Field::Set(provider) if provider.trim().is_empty() => {
            cx.error(
                &at("provider"),
                "must not be empty: name an adapter such as `openai` or `mock`",
            );
            None
        }
        Field::Set(provider) => Some(provider),
        Field::Absent if is_openai_compatibility => Some(OPENAI_PROVIDER.to_owned()),
        Field::Absent => {
            if enabled {
                cx.error(
                    &at("provider"),
                    "missing: this enabled model has no way to reach an upstream; set `provider` \
                     (`openai` with a `base_url`, or `mock`) or `is_openai_compatibility: true`",
                );
            }
            None
        }
        Field::Invalid => None,
    };
    if enabled && provider.as_deref() == Some(OPENAI_PROVIDER) && matches!(base_url, Ok(None)) {
        cx.error(
            &at("base_url"),
            "missing: the `openai` provider needs a base URL such as `https://api.openai.com/v1`",
        );
    }
    if enabled && provider.as_deref() == Some(ANTHROPIC_PROVIDER) {
        match &base_url {
            Ok(None) => cx.error(
                &at("base_url"),
                "missing: the `anthropic` provider needs the API root such as \
                 `https://api.anthropic.com`",
            ),
            // The adapter adds `/v1/messages`; a root that already ends in
            // `/v1` would post to `/v1/v1/messages` and fail every request.
            Ok(Some(url))
                if !base_url_direct && url.path().trim_end_matches('/').ends_with("/v1") =>
            {
                cx.error(
                    &at("base_url"),
                    "must be the API root without `/v1` (the `anthropic` provider adds \
                     `/v1/messages`), such as `https://api.anthropic.com`",
                )
            }
            _ => {}
        }
    }

    let provider_api_keys = raw.provider_api_key.set().unwrap_or_default();
    for (key_index, key) in provider_api_keys.iter().enumerate() {
        // Reading the value only to see that there is one; it is not shown.
        let value = key.expose();
        if value.trim().is_empty() {
            cx.error(
                &format!("models[{index}].provider_api_key[{key_index}]"),
                "must not be empty (leave the list empty to send no `Authorization`)",
            );
        } else if !value.bytes().all(|byte| byte.is_ascii_graphic()) {
            // It goes into an `Authorization` header, which cannot carry
            // spaces, control characters or non-ASCII bytes; refuse it here
            // rather than fail every request at run time.
            cx.error(
                &format!("models[{index}].provider_api_key[{key_index}]"),
                "must be printable ASCII without spaces (check for a stray newline or quote)",
            );
        }
    }

    let input_price_per_token = price(raw.input_price_per_token, &at("input_price_per_token"), cx);
    let cached_input_price_per_token = match raw.cached_input_price_per_token {
        Field::Absent => input_price_per_token,
        field => price(field, &at("cached_input_price_per_token"), cx),
    };
    let timeouts = Timeouts {
        connect: positive_duration(
            raw.connect_timeout,
            &at("connect_timeout"),
            server_timeouts.connect,
            cx,
        ),
        first_byte: positive_duration(
            raw.first_byte_timeout,
            &at("first_byte_timeout"),
            server_timeouts.first_byte,
            cx,
        ),
        idle: positive_duration(
            raw.idle_timeout,
            &at("idle_timeout"),
            server_timeouts.idle,
            cx,
        ),
        total: positive_duration(
            raw.request_timeout,
            &at("request_timeout"),
            server_timeouts.total,
            cx,
        ),
    };
    ModelEntry {
        timeouts,
        index,
        id: count(raw.id, &at("id"), cx).unwrap_or(0),
        name,
        provider_model_name,
        display_name: raw.display_name.set().unwrap_or_default(),
        description: raw.description.set().unwrap_or_default(),
        capabilities: Capabilities {
            chat: flag(raw.supports_chat),
            completion: flag(raw.supports_completion),
            embedding: flag(raw.supports_embedding),
            image_gen: flag(raw.supports_image_gen),
            image_edit: flag(raw.supports_image_edit),
            image_var: flag(raw.supports_image_var),
            input_image: flag(raw.supports_input_image),
            audio_trans: flag(raw.supports_audio_trans),
            audio_trans2: flag(raw.supports_audio_trans2),
        },
        support_google_thinking: flag(raw.support_google_thinking),
        stream_only: flag(raw.stream_only),
        limits: ModelLimits {
            rpm: limit(raw.rpm, &at("rpm"), cx),
            rph: limit(raw.rph, &at("rph"), cx),
            rpd: limit(raw.rpd, &at("rpd"), cx),
            tpm: limit(raw.tpm, &at("tpm"), cx),
            tph: limit(raw.tph, &at("tph"), cx),
            tpd: limit(raw.tpd, &at("tpd"), cx),
        },
        input_price_per_token,
        cached_input_price_per_token,
        output_price_per_token: price(
            raw.output_price_per_token,
            &at("output_price_per_token"),
            cx,
        ),
        max_tokens: limit(raw.max_tokens, &at("max_tokens"), cx),
        context_length: limit(raw.context_length, &at("context_length"), cx),
        supported_parameters: raw.supported_parameters.set(),
        // An entry that is neither enabled nor reachable is never dispatched;
        // it gets the default adapter's name so that it still names one.
        provider: provider.unwrap_or_else(|| OPENAI_PROVIDER.to_owned()),
        provider_api_keys,
        base_url: base_url.unwrap_or(None),
        base_url_direct,
        is_openai_compatibility,
        enabled,
        visible: flag(raw.visible),
    }
}

fn validate_client_key(index: usize, raw: RawApiKey, cx: &mut Ctx<'_>) -> ClientKeyConfig {
    let at = |field: &str| format!("api_keys[{index}].{field}");
    let key = match raw.key {
        Field::Set(key) => {
            // Reading the value only to see that there is one; it is not shown.
            if key.expose().trim().is_empty() {
                cx.error(&at("key"), "must not be empty");
            }
            key
        }
        Field::Absent => {
            cx.error(&at("key"), "missing: every client key needs a `key` value");
            Secret::new("")
        }
        Field::Invalid => Secret::new(""),
    };
    ClientKeyConfig {
        index,
        id: count(raw.id, &at("id"), cx).unwrap_or(0),
        key,
        name: raw.name.set().unwrap_or_default(),
        is_active: flag(raw.is_active),
        user_id: count(raw.user_id, &at("user_id"), cx),
        expires_at: raw.expires_at.set(),
        limits: KeyLimits {
            rps: limit(raw.rps, &at("rps"), cx),
            rpm: limit(raw.rpm, &at("rpm"), cx),
            rph: limit(raw.rph, &at("rph"), cx),
            rpd: limit(raw.rpd, &at("rpd"), cx),
            tps: limit(raw.tps, &at("tps"), cx),
            tpm: limit(raw.tpm, &at("tpm"), cx),
            tph: limit(raw.tph, &at("tph"), cx),
            tpd: limit(raw.tpd, &at("tpd"), cx),
        },
        budget: budget(index, raw.max_budget_usd, raw.budget_period, cx),
        admin: flag(raw.admin),
    }
}

/// `max_budget_usd` with `budget_period`: `None` when there is no budget (the
/// amount absent or 0) or a problem was recorded.
fn budget(
    index: usize,
    max_usd: Field<f64>,
    period: Field<BudgetPeriod>,
    cx: &mut Ctx<'_>,
) -> Option<Budget> {
    let max_path = format!("api_keys[{index}].max_budget_usd");
    let period_path = format!("api_keys[{index}].budget_period");
    // A period without an amount looks like a budget but limits nothing. An
    // explicit `max_budget_usd: 0` switches the budget off on purpose, so its
    // period may stay.
    if matches!(max_usd, Field::Absent) && matches!(period, Field::Set(_)) {
        cx.error(
            &period_path,
            "has no effect without `max_budget_usd`: set `max_budget_usd` (USD per period) \
             or remove `budget_period`",
        );
    }
    let max_usd = max_usd.set()?;
    if max_usd == 0.0 {
        return None;
    }
    if max_usd < 0.0 {
        cx.error(
            &max_path,
            format!("must not be negative (0 or leaving it out means no budget), found {max_usd}"),
        );
        return None;
    }
    if !max_usd.is_finite() {
        cx.error(&max_path, "must be a finite number");
        return None;
    }
    Some(Budget {
        max_usd,
        period: match period {
            Field::Set(period) => period,
            Field::Absent | Field::Invalid => BudgetPeriod::Month,
        },
    })
}

/// Reports each non-zero id that an earlier item of `section` already uses.
fn unique_ids(section: &str, ids: impl Iterator<Item = (usize, u64)>, cx: &mut Ctx<'_>) {
    let mut first_use: HashMap<u64, usize> = HashMap::new();
    for (index, id) in ids {
        if id == 0 {
            continue;
        }
        match first_use.get(&id) {
            Some(first) => cx.error(
                &format!("{section}[{index}].id"),
                format!("duplicate id {id}: already used by {section}[{first}]"),
            ),
            None => {
                first_use.insert(id, index);
            }
        }
    }
}

/// Reports each client key whose value an earlier key already has, naming
/// both places and never the value.
fn unique_client_keys(keys: &[ClientKeyConfig], cx: &mut Ctx<'_>) {
    let mut first_use: HashMap<&str, usize> = HashMap::new();
    for key in keys {
        // Reading the value only to compare it; it is not shown.
        let value = key.key.expose();
        if value.trim().is_empty() {
            continue;
        }
        match first_use.get(value) {
            Some(first) => cx.error(
                &format!("api_keys[{}].key", key.index),
                format!("duplicate key: api_keys[{first}].key has the same value"),
            ),
            None => {
                first_use.insert(value, key.index);
            }
        }
    }
}

/// A boolean; absent means false, the seed's zero value.
fn flag(field: Field<bool>) -> bool {
    field.set().unwrap_or(false)
}

/// A non-negative integer.
fn count(field: Field<i128>, path: &str, cx: &mut Ctx<'_>) -> Option<u64> {
    let value = field.set()?;
    match u64::try_from(value) {
        Ok(value) => Some(value),
        Err(_) if value < 0 => {
            cx.error(path, format!("must not be negative, found {value}"));
            None
        }
        Err(_) => {
            cx.error(path, format!("is too large, found {value}"));
            None
        }
    }
}

/// A limit: 0 or absent means none.
fn limit(field: Field<i128>, path: &str, cx: &mut Ctx<'_>) -> Option<NonZeroU64> {
    if let Field::Set(value) = field {
        if value < 0 {
            cx.error(
                path,
                format!("must not be negative (0 or leaving it out means no limit), found {value}"),
            );
            return None;
        }
    }
    count(field, path, cx).and_then(NonZeroU64::new)
}

/// A count that must be at least 1 (absent: `default`).
fn at_least_one(
    field: Field<i128>,
    path: &str,
    default: NonZeroU64,
    cx: &mut Ctx<'_>,
) -> NonZeroU64 {
    match field {
        Field::Set(value) if value < 1 => {
            cx.error(path, format!("must be at least 1, found {value}"));
            default
        }
        field => count(field, path, cx)
            .and_then(NonZeroU64::new)
            .unwrap_or(default),
    }
}

/// A size in bytes that must allow at least one byte.
fn byte_size(field: Field<i128>, path: &str, default: usize, cx: &mut Ctx<'_>) -> usize {
    match count(field, path, cx) {
        None => default,
        Some(0) => {
            cx.error(path, "must be greater than zero");
            default
        }
        Some(bytes) => usize::try_from(bytes).unwrap_or_else(|_| {
            cx.error(
                path,
                format!("is too large for this machine, found {bytes}"),
            );
            default
        }),
    }
}

/// A duration that must be longer than zero (a zero interval or timeout
/// would spin or fail every request).
fn positive_duration(
    field: Field<Duration>,
    path: &str,
    default: Duration,
    cx: &mut Ctx<'_>,
) -> Duration {
    match field.set() {
        Some(duration) if duration.is_zero() => {
            cx.error(path, "must be greater than zero");
            default
        }
        Some(duration) => duration,
        None => default,
    }
}

/// A price per token in USD: finite and not negative.
fn price(field: Field<f64>, path: &str, cx: &mut Ctx<'_>) -> f64 {
    match field.set() {
        Some(price) if price.is_finite() && price >= 0.0 => price,
        Some(price) if price < 0.0 => {
            cx.error(path, format!("must not be negative, found {price}"));
            0.0
        }
        Some(_) => {
            cx.error(path, "must be a finite number");
            0.0
        }
        None => 0.0,
    }
}

/// `base_url`: `Ok(None)` when absent or empty (the seed's zero value),
/// `Err` when a problem was recorded. The value is never echoed: it may
/// carry credentials.
fn parse_base_url(field: Field<String>, path: &str, cx: &mut Ctx<'_>) -> Result<Option<Url>, ()> {
    const EXAMPLE: &str = "`https://api.openai.com/v1`";
    let text = match field {
        Field::Set(text) => text,
        Field::Absent => return Ok(None),
        Field::Invalid => return Err(()),
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(Some(url)),
        Ok(_) => {
            cx.error(
                path,
                format!("must be an http or https URL such as {EXAMPLE}"),
            );
            Err(())
        }
        Err(error) => {
            cx.error(
                path,
                format!("not a valid URL ({error}); expected one such as {EXAMPLE}"),
            );
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-from-env".to_owned()),
            _ => None,
        }
    }

    /// Parses `yaml` as `test.yaml` and returns the errors as `line: path: message`.
    fn errors_of(yaml: &str) -> Vec<String> {
        match parse(Path::new("test.yaml"), yaml, &env) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .iter()
                .map(|e| {
                    let line = e
                        .line
                        .map_or_else(|| "-".to_owned(), |line| line.to_string());
                    format!("{line}: {}: {}", e.path, e.message)
                })
                .collect(),
        }
    }

    fn check(yaml: &str, expected: &[&str]) {
        assert_eq!(errors_of(yaml), expected, "yaml:\n{yaml}");
    }

    fn load(yaml: &str) -> Config {
        parse(Path::new("test.yaml"), yaml, &env).unwrap()
    }

    const MOCK: &str = "models:\n  - name: m\n    provider: mock\n    enabled: true\n";

    #[test]
    fn minimal_files_take_the_defaults() {
        let config = load("server: {}\n");
        assert_eq!(config.server, ServerConfig::default());
        assert!(config.models.is_empty());
        assert!(config.api_keys.is_empty());
        assert_eq!(config.source, PathBuf::from("test.yaml"));
        assert_eq!(config.limits, LimitsConfig::default());
        assert_eq!(
            config.limits,
            LimitsConfig {
                default_output_tokens: NonZeroU64::new(1024).unwrap(),
                database: PathBuf::from("data/router.db"),
                flush_interval: Duration::from_secs(1),
                ledger: true,
                backend: LimitsBackend::Memory,
                ledger_url: None,
            }
        );
        assert!(config.server.metrics);
        assert_eq!(load("limits: {}\n").limits, LimitsConfig::default());
        assert_eq!(load("limits:\n").limits, LimitsConfig::default());

        let config = load(MOCK);
        let model = &config.models[0];
        assert_eq!(model.name, "m");
        assert_eq!(model.provider_model_name, "m");
        assert_eq!(model.provider, "mock");
        assert_eq!(model.id, 0);
        assert_eq!(model.limits, ModelLimits::default());
        assert_eq!(model.capabilities, Capabilities::default());
        assert_eq!(model.base_url, None);
        assert_eq!(model.supported_parameters, None);
        assert!(model.enabled && !model.visible && !model.stream_only);
        assert_eq!(model.input_price_per_token, 0.0);
        assert_eq!(model.cached_input_price_per_token, 0.0);
        assert_eq!(model.timeouts, ServerConfig::default().timeouts());
        assert_eq!(config.retry, RetryPolicy::default());
        assert_eq!(config.cooldown, CooldownPolicy::default());

        let key = load("api_keys:\n  - key: k\n").api_keys.remove(0);
        assert_eq!(key.budget, None);
        assert!(!key.admin);
    }

    #[test]
    fn server_fields() {
        let server = load(
            "server:\n  host: 127.0.0.1\n  port: 9000\n  shutdown_timeout: 0s\n  max_body_bytes: 1024\n  \
             sse_keepalive: 15s\n  max_sse_event_bytes: 2048\n  connect_timeout: 3s\n  request_timeout: 1h\n  \
             first_byte_timeout: 45s\n  idle_timeout: 1m30s\n",
        )
        .server;
        assert_eq!(
            server,
            ServerConfig {
                host: [127, 0, 0, 1].into(),
                port: 9000,
                shutdown_timeout: Duration::ZERO,
                max_body_bytes: 1024,
                sse_keepalive: Duration::from_secs(15),
                max_sse_event_bytes: 2048,
                connect_timeout: Duration::from_secs(3),
                request_timeout: Duration::from_secs(3600),
                first_byte_timeout: Duration::from_secs(45),
                idle_timeout: Duration::from_secs(90),
                metrics: true,
            }
        );
        assert_eq!(
            server.timeouts(),
            Timeouts {
                connect: Duration::from_secs(3),
                first_byte: Duration::from_secs(45),
                idle: Duration::from_secs(90),
                total: Duration::from_secs(3600),
            }
        );
    }

    #[test]
    fn server_errors() {
        check(
            "server:\n  port: 8316\n  shutdown_timeout: 10\n  max_body_bytes: 0\n  sse_keepalive: 0s\n  \
             max_sse_event_bytes: -1\n  connect_timeout: 0ms\n  request_timeout: 1 hour\n",
            &[
                "3: server.shutdown_timeout: expected a duration such as `10s`, `1m30s` or `500ms` \
                 (units: ns, us, ms, s, m, h), found the bare number 10 (add a unit, e.g. `10s`)",
                "4: server.max_body_bytes: must be greater than zero",
                "5: server.sse_keepalive: must be greater than zero",
                "6: server.max_sse_event_bytes: must not be negative, found -1",
                "7: server.connect_timeout: must be greater than zero",
                "8: server.request_timeout: expected a duration such as `10s`, `1m30s` or `500ms` \
                 (units: ns, us, ms, s, m, h), found `1 hour`",
            ],
        );
        check(
            "server:\n  first_byte_timeout: 0s\n  idle_timeout: 5\n  idle_timout: 5s\n  \
             first_byte: 1s\n",
            &[
                "2: server.first_byte_timeout: must be greater than zero",
                "3: server.idle_timeout: expected a duration such as `10s`, `1m30s` or `500ms` \
                 (units: ns, us, ms, s, m, h), found the bare number 5 (add a unit, e.g. `5s`)",
                "4: server.idle_timout: unknown field, did you mean `idle_timeout`?",
                "5: server.first_byte: unknown field",
            ],
        );
    }

    #[test]
    fn model_timeouts_default_to_the_servers() {
        // `server:` after `models:` still gives the entries their defaults.
        let config = load(
            "models:\n  - name: a\n  - name: b\n    connect_timeout: 1s\n    first_byte_timeout: 2s\n    \
             idle_timeout: 3s\n    request_timeout: 4s\n  - name: c\n    idle_timeout: 250ms\n\
             server:\n  connect_timeout: 5s\n  first_byte_timeout: 6s\n  idle_timeout: 7s\n  \
             request_timeout: 8s\n",
        );
        let server = Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(6),
            idle: Duration::from_secs(7),
            total: Duration::from_secs(8),
        };
        assert_eq!(config.server.timeouts(), server);
        let timeouts: Vec<Timeouts> = config.models.iter().map(|model| model.timeouts).collect();
        assert_eq!(
            timeouts,
            [
                server,
                Timeouts {
                    connect: Duration::from_secs(1),
                    first_byte: Duration::from_secs(2),
                    idle: Duration::from_secs(3),
                    total: Duration::from_secs(4),
                },
                Timeouts {
                    idle: Duration::from_millis(250),
                    ..server
                },
            ]
        );
        // Without `server:`, the built-in defaults.
        assert_eq!(
            load(MOCK).models[0].timeouts,
            ServerConfig::default().timeouts()
        );
        // An entry may also set a timeout longer than the server's.
        assert_eq!(
            load("models:\n  - name: m\n    request_timeout: 2h\n").models[0]
                .timeouts
                .total,
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn model_timeout_errors() {
        check(
            "models:\n  - name: m\n    connect_timeout: 0s\n    first_byte_timeout: 30\n    \
             idle_timeout: -1s\n    request_timeout: soon\n    idle_timout: 1s\n    \
             first_byte_timout: 1s\n",
            &[
                "3: models[0].connect_timeout: must be greater than zero",
                "4: models[0].first_byte_timeout: expected a duration such as `10s`, `1m30s` or \
                 `500ms` (units: ns, us, ms, s, m, h), found the bare number 30 (add a unit, e.g. `30s`)",
                "5: models[0].idle_timeout: must not be negative",
                "6: models[0].request_timeout: expected a duration such as `10s`, `1m30s` or \
                 `500ms` (units: ns, us, ms, s, m, h), found `soon`",
                "7: models[0].idle_timout: unknown field, did you mean `idle_timeout`?",
                "8: models[0].first_byte_timout: unknown field, did you mean `first_byte_timeout`?",
            ],
        );
        // A bad server timeout is reported once, and the entries fall back
        // to the default rather than repeating the error.
        check(
            "server:\n  idle_timeout: 0s\nmodels:\n  - name: m\n",
            &["2: server.idle_timeout: must be greater than zero"],
        );
    }

    #[test]
    fn retry_fields() {
        let retry = load(
            "retry:\n  max_attempts: 3\n  max_retry_time: 10s\n  backoff_base: 100ms\n  \
             backoff_max: 1s\n  budget_ratio: 0.5\n  budget_min_per_second: 0\n",
        )
        .retry;
        assert_eq!(
            retry,
            RetryPolicy {
                max_attempts: NonZeroU64::new(3).unwrap(),
                max_retry_time: Duration::from_secs(10),
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                budget_ratio: 0.5,
                budget_min_per_second: 0,
            }
        );
        assert_eq!(
            RetryPolicy::default(),
            RetryPolicy {
                max_attempts: NonZeroU64::new(5).unwrap(),
                max_retry_time: Duration::from_secs(30),
                backoff_base: Duration::from_millis(50),
                backoff_max: Duration::from_secs(2),
                budget_ratio: 0.2,
                budget_min_per_second: 10,
            }
        );
        assert_eq!(load("retry: {}\n").retry, RetryPolicy::default());
        assert_eq!(load("retry:\n").retry, RetryPolicy::default());
        // The edges: one attempt (no retry), no wait, equal base and cap,
        // the whole ratio range, and an integer ratio.
        let retry = load(
            "retry:\n  max_attempts: 1\n  max_retry_time: 0s\n  backoff_base: 0s\n  backoff_max: 0s\n  \
             budget_ratio: 10\n",
        )
        .retry;
        assert_eq!(retry.max_attempts, NonZeroU64::MIN);
        assert_eq!(retry.max_retry_time, Duration::ZERO);
        assert_eq!(
            (retry.backoff_base, retry.backoff_max),
            (Duration::ZERO, Duration::ZERO)
        );
        assert_eq!(retry.budget_ratio, 10.0);
        assert_eq!(load("retry:\n  budget_ratio: 0\n").retry.budget_ratio, 0.0);
        // Only the base given, below the default cap; only the cap, above
        // the default base.
        let retry = load("retry:\n  backoff_base: 1s\n").retry;
        assert_eq!(
            (retry.backoff_base, retry.backoff_max),
            (Duration::from_secs(1), Duration::from_secs(2))
        );
        let retry = load("retry:\n  backoff_max: 60ms\n").retry;
        assert_eq!(
            (retry.backoff_base, retry.backoff_max),
            (Duration::from_millis(50), Duration::from_millis(60))
        );
    }

    #[test]
    fn retry_errors() {
        check(
            "retry:\n  max_attempts: 0\n  max_retry_time: 30\n  backoff_base: 1s\n  backoff_max: 500ms\n  \
             budget_ratio: 11\n  budget_min_per_second: -1\n  max_atempts: 2\n",
            &[
                "2: retry.max_attempts: must be at least 1, found 0",
                "3: retry.max_retry_time: expected a duration such as `10s`, `1m30s` or `500ms` \
                 (units: ns, us, ms, s, m, h), found the bare number 30 (add a unit, e.g. `30s`)",
                "5: retry.backoff_max: must not be shorter than `retry.backoff_base` (1s), found \
                 500ms: raise `backoff_max` or lower `backoff_base`",
                "6: retry.budget_ratio: must be from 0 (no retries beyond `budget_min_per_second`) \
                 to 10, found 11",
                "7: retry.budget_min_per_second: must not be negative, found -1",
                "8: retry.max_atempts: unknown field, did you mean `max_attempts`?",
            ],
        );
        // Only the base written, above the default cap: the base is blamed.
        check(
            "retry:\n  backoff_base: 5s\n",
            &[
                "2: retry.backoff_base: must not be longer than `retry.backoff_max` (2s, the \
               default), found 5s: lower `backoff_base` or set a larger `backoff_max`",
            ],
        );
        // Only the cap written, below the default base: the cap is blamed.
        check(
            "retry:\n  backoff_max: 10ms\n",
            &["2: retry.backoff_max: must not be shorter than `retry.backoff_base` (50ms), found \
               10ms: raise `backoff_max` or lower `backoff_base`"],
        );
        check(
            "retry:\n  budget_ratio: -0.1\n  max_attempts: 1.5\n  backoff_max: -1s\n\
             retyr: {}\n",
            &[
                "2: retry.budget_ratio: must be from 0 (no retries beyond `budget_min_per_second`) \
                 to 10, found -0.1",
                "3: retry.max_attempts: expected an integer, found the number 1.5",
                "4: retry.backoff_max: must not be negative",
                "5: retyr: unknown field, did you mean `retry`?",
            ],
        );
        check(
            "retry:\n  budget_ratio: .nan\n  budget_min_per_second: \"5\"\n",
            &[
                "2: retry.budget_ratio: must be a number from 0 to 10",
                "3: retry.budget_min_per_second: expected an integer, found a string (write it \
                 without quotes)",
            ],
        );
        check(
            "retry: 3\n",
            &["1: retry: expected a mapping of `key: value` fields, found the number 3"],
        );
    }

    #[test]
    fn cooldown_fields() {
        let cooldown =
            load("cooldown:\n  rate_limited: 1m\n  failures_to_open: 3\n  open_for: 15s\n")
                .cooldown;
        assert_eq!(
            cooldown,
            CooldownPolicy {
                rate_limited: Duration::from_secs(60),
                failures_to_open: NonZeroU64::new(3).unwrap(),
                open_for: Duration::from_secs(15),
            }
        );
        assert_eq!(
            CooldownPolicy::default(),
            CooldownPolicy {
                rate_limited: Duration::from_secs(30),
                failures_to_open: NonZeroU64::new(5).unwrap(),
                open_for: Duration::from_secs(30),
            }
        );
        assert_eq!(load("cooldown: {}\n").cooldown, CooldownPolicy::default());
        assert_eq!(
            load("cooldown:\n  failures_to_open: 1\n").cooldown,
            CooldownPolicy {
                failures_to_open: NonZeroU64::MIN,
                ..CooldownPolicy::default()
            }
        );
    }

    #[test]
    fn cooldown_errors() {
        check(
            "cooldown:\n  rate_limited: 0s\n  failures_to_open: 0\n  open_for: 30\n  open_fro: 1s\n\
             cooldwn: {}\n",
            &[
                "2: cooldown.rate_limited: must be greater than zero",
                "3: cooldown.failures_to_open: must be at least 1, found 0",
                "4: cooldown.open_for: expected a duration such as `10s`, `1m30s` or `500ms` \
                 (units: ns, us, ms, s, m, h), found the bare number 30 (add a unit, e.g. `30s`)",
                "5: cooldown.open_fro: unknown field, did you mean `open_for`?",
                "6: cooldwn: unknown field, did you mean `cooldown`?",
            ],
        );
        check(
            "cooldown:\n  failures_to_open: -2\n  open_for: 0ms\n  rate_limited: [1s]\n",
            &[
                "2: cooldown.failures_to_open: must be at least 1, found -2",
                "3: cooldown.open_for: must be greater than zero",
                "4: cooldown.rate_limited: expected a duration such as `10s`, `1m30s` or `500ms` \
                 (units: ns, us, ms, s, m, h), found a list",
            ],
        );
    }

    #[test]
    fn model_numbers() {
        let model = load(
            "models:\n  - name: m\n    id: 7\n    rpm: 5\n    rph: 0\n    tpd: 1_000_000\n    \
             input_price_per_token: 0.000001\n    output_price_per_token: 2\n    max_tokens: 0\n    \
             context_length: 128000\n",
        )
        .models
        .remove(0);
        assert_eq!(model.id, 7);
        assert_eq!(model.limits.rpm, NonZeroU64::new(5));
        assert_eq!(model.limits.rph, None);
        assert_eq!(model.limits.tpd, NonZeroU64::new(1_000_000));
        assert_eq!(model.input_price_per_token, 0.000_001);
        assert_eq!(model.output_price_per_token, 2.0);
        assert_eq!(model.max_tokens, None);
        assert_eq!(model.context_length, NonZeroU64::new(128_000));
    }

    #[test]
    fn cached_input_prices() {
        let prices = |yaml: &str| {
            let model = load(&format!("models:\n  - name: m\n{yaml}"))
                .models
                .remove(0);
            (
                model.input_price_per_token,
                model.cached_input_price_per_token,
            )
        };
        // Left out (or null), the cache costs what any input token costs.
        assert_eq!(
            prices("    input_price_per_token: 0.000003\n"),
            (3e-6, 3e-6)
        );
        assert_eq!(
            prices("    input_price_per_token: 0.000003\n    cached_input_price_per_token: ~\n"),
            (3e-6, 3e-6)
        );
        assert_eq!(
            prices("    input_price_per_token: 0.000003\n    cached_input_price_per_token: 0.0000003\n"),
            (3e-6, 3e-7)
        );
        assert_eq!(
            prices("    input_price_per_token: 0.000003\n    cached_input_price_per_token: 0\n"),
            (3e-6, 0.0)
        );
        // Order in the entry does not matter.
        assert_eq!(
            prices("    cached_input_price_per_token: 1\n    input_price_per_token: 2\n"),
            (2.0, 1.0)
        );

        check(
            "models:\n  - name: a\n    cached_input_price_per_token: -0.1\n  - name: b\n    \
             cached_input_price_per_token: .inf\n  - name: c\n    cached_input_price_per_token: \"0.1\"\n  \
             - name: d\n    cached_input_price_per_token: .nan\n  - name: e\n    \
             cache_input_price_per_token: 0.1\n",
            &[
                "3: models[0].cached_input_price_per_token: must not be negative, found -0.1",
                "5: models[1].cached_input_price_per_token: must be a finite number",
                "7: models[2].cached_input_price_per_token: expected a number, found a string \
                 (write it without quotes)",
                "9: models[3].cached_input_price_per_token: must be a finite number",
                "11: models[4].cache_input_price_per_token: unknown field, did you mean \
                 `cached_input_price_per_token`?",
            ],
        );
    }

    #[test]
    fn integers_beyond_u64_are_refused_by_the_parser() {
        check(
            "models:\n  - name: m\n    rpm: 99999999999999999999\n",
            &["3: models[0].rpm: invalid type: integer `99999999999999999999` as u128, expected any \
               YAML value"],
        );
    }

    #[test]
    fn model_number_errors() {
        check(
            "models:\n  - name: m\n    id: -1\n    rpm: -5\n    input_price_per_token: -0.5\n    \
             output_price_per_token: .nan\n    max_tokens: 1.5\n",
            &[
                "3: models[0].id: must not be negative, found -1",
                "4: models[0].rpm: must not be negative (0 or leaving it out means no limit), found -5",
                "5: models[0].input_price_per_token: must not be negative, found -0.5",
                "6: models[0].output_price_per_token: must be a finite number",
                "7: models[0].max_tokens: expected an integer, found the number 1.5",
            ],
        );
    }

    #[test]
    fn reachability() {
        // `is_openai_compatibility` alone means the `openai` adapter.
        let model = load(
            "models:\n  - name: m\n    is_openai_compatibility: true\n    base_url: http://h:1/v1\n    enabled: true\n",
        )
        .models
        .remove(0);
        assert_eq!(model.provider, OPENAI_PROVIDER);
        assert_eq!(
            model.base_url.map(String::from),
            Some("http://h:1/v1".to_owned())
        );
        // Other adapter names are the binary's business.
        assert_eq!(
            load("models:\n  - name: m\n    provider: bedrock\n    enabled: true\n").models[0]
                .provider,
            "bedrock"
        );
        let model = load(
            "models:\n  - name: m\n    provider: anthropic\n    base_url: https://api.anthropic.com\n    enabled: true\n",
        )
        .models
        .remove(0);
        assert_eq!(model.provider, ANTHROPIC_PROVIDER);
        // `direct` posts to the URL as written, so `/v1` may be part of it.
        load("models:\n  - name: m\n    provider: anthropic\n    base_url: https://h/v1/messages\n    base_url_direct: true\n    enabled: true\n");
        // Disabled entries need not be reachable.
        assert_eq!(
            load("models:\n  - name: m\n").models[0].provider,
            OPENAI_PROVIDER
        );

        check(
            "models:\n  - name: a\n    enabled: true\n  - name: b\n    is_openai_compatibility: true\n    enabled: true\n  \
             - name: c\n    provider: openai\n    base_url: \"\"\n    enabled: true\n  - name: d\n    provider: \"\"\n",
            &[
                "2: models[0].provider: missing: this enabled model has no way to reach an upstream; set \
                 `provider` (`openai` with a `base_url`, or `mock`) or `is_openai_compatibility: true`",
                "4: models[1].base_url: missing: the `openai` provider needs a base URL such as \
                 `https://api.openai.com/v1`",
                "9: models[2].base_url: missing: the `openai` provider needs a base URL such as \
                 `https://api.openai.com/v1`",
                "12: models[3].provider: must not be empty: name an adapter such as `openai` or `mock`",
            ],
        );
        check(
            "models:\n  - name: a\n    provider: anthropic\n    enabled: true\n  - name: b\n    provider: anthropic\n    \
             base_url: https://api.anthropic.com/v1/\n    enabled: true\n  - name: c\n    provider: anthropic\n",
            &[
                "2: models[0].base_url: missing: the `anthropic` provider needs the API root such as \
                 `https://api.anthropic.com`",
                "7: models[1].base_url: must be the API root without `/v1` (the `anthropic` provider adds \
                 `/v1/messages`), such as `https://api.anthropic.com`",
            ],
        );
    }

    #[test]
    fn base_url_errors_never_echo_the_value() {
        check(
            "models:\n  - name: a\n    base_url: ftp://user:secret@host/\n  - name: b\n    base_url: \"not a url\"\n  \
             - name: c\n    base_url: \"https://\"\n",
            &[
                "3: models[0].base_url: must be an http or https URL such as `https://api.openai.com/v1`",
                "5: models[1].base_url: not a valid URL (relative URL without a base); expected one such as \
                 `https://api.openai.com/v1`",
                "7: models[2].base_url: not a valid URL (empty host); expected one such as \
                 `https://api.openai.com/v1`",
            ],
        );
    }

    #[test]
    fn names() {
        check(
            "models:\n  - id: 1\n  - name: \"\"\n  - name: [a]\n",
            &[
                "2: models[0].name: missing: every model needs the `name` clients ask for",
                "3: models[1].name: must not be empty: it is the model name clients ask for",
                "4: models[2].name: expected a string, found a list",
            ],
        );
        let model = load("models:\n  - name: m\n    provider_model_name: \"\"\n")
            .models
            .remove(0);
        assert_eq!(model.provider_model_name, "m");
    }

    #[test]
    fn duplicates() {
        check(
            "models:\n  - {id: 1, name: a}\n  - {id: 0, name: b}\n  - {name: c}\n  - {id: 1, name: d}\n\
             api_keys:\n  - id: 1\n    key: k1\n  - id: 1\n    key: k1\n  - key: ${KEY}\n  - key: sk-from-env\n",
            &[
                "5: models[3].id: duplicate id 1: already used by models[0]",
                "9: api_keys[1].id: duplicate id 1: already used by api_keys[0]",
                "10: api_keys[1].key: duplicate key: api_keys[0].key has the same value",
                "12: api_keys[3].key: duplicate key: api_keys[2].key has the same value",
            ],
        );
    }

    #[test]
    fn client_keys() {
        let key = load(
            "api_keys:\n  - id: 3\n    key: ${KEY}\n    name: ci\n    is_active: true\n    user_id: 9\n    \
             expires_at: 2030-01-02T03:04:05Z\n    rps: 1\n    tpd: 0\n",
        )
        .api_keys
        .remove(0);
        assert_eq!(key.id, 3);
        assert_eq!(key.key.expose(), "sk-from-env");
        assert_eq!(key.name, "ci");
        assert!(key.is_active);
        assert_eq!(key.user_id, Some(9));
        assert_eq!(
            key.expires_at,
            Some(time::macros::datetime!(2030-01-02 03:04:05 UTC))
        );
        assert_eq!(
            key.limits,
            KeyLimits {
                rps: NonZeroU64::new(1),
                ..KeyLimits::default()
            }
        );

        check(
            "api_keys:\n  - name: no key\n  - key: \"\"\n  - key: ${MISSING}\n  - key: k\n    user_id: -2\n",
            &[
                "2: api_keys[0].key: missing: every client key needs a `key` value",
                "3: api_keys[1].key: must not be empty",
                "4: api_keys[2].key: environment variable `MISSING` is not set",
                "6: api_keys[3].user_id: must not be negative, found -2",
            ],
        );
    }

    #[test]
    fn client_key_budgets_and_admin() {
        let keys = load(
            "api_keys:\n  - key: a\n    max_budget_usd: 25\n  - key: b\n    max_budget_usd: 0.5\n    \
             budget_period: day\n  - key: c\n    max_budget_usd: 100\n    budget_period: month\n    \
             admin: true\n  - key: d\n    max_budget_usd: 0\n  - key: e\n    max_budget_usd: 0\n    \
             budget_period: day\n    admin: false\n  - key: f\n    max_budget_usd: ~\n    admin: ~\n",
        )
        .api_keys;
        let budgets: Vec<Option<Budget>> = keys.iter().map(|key| key.budget).collect();
        assert_eq!(
            budgets,
            [
                // The period defaults to a month.
                Some(Budget {
                    max_usd: 25.0,
                    period: BudgetPeriod::Month
                }),
                Some(Budget {
                    max_usd: 0.5,
                    period: BudgetPeriod::Day
                }),
                Some(Budget {
                    max_usd: 100.0,
                    period: BudgetPeriod::Month
                }),
                // 0 means no budget; an explicit 0 may keep its period.
                None,
                None,
                None,
            ]
        );
        let admins: Vec<bool> = keys.iter().map(|key| key.admin).collect();
        assert_eq!(admins, [false, false, true, false, false, false]);
    }

    #[test]
    fn client_key_budget_errors() {
        check(
            "api_keys:\n  - key: a\n    budget_period: day\n  - key: b\n    max_budget_usd: -5\n    \
             budget_period: day\n  - key: c\n    max_budget_usd: .inf\n  - key: d\n    \
             max_budget_usd: \"10\"\n    budget_period: day\n  - key: e\n    max_budget_usd: 10\n    \
             budget_period: week\n  - key: f\n    admin: maybe\n  - key: g\n    max_budget: 10\n    \
             budget_period: month\n",
            &[
                "3: api_keys[0].budget_period: has no effect without `max_budget_usd`: set \
                 `max_budget_usd` (USD per period) or remove `budget_period`",
                "5: api_keys[1].max_budget_usd: must not be negative (0 or leaving it out means no \
                 budget), found -5",
                "8: api_keys[2].max_budget_usd: must be a finite number",
                // A wrong amount is not also reported as missing.
                "10: api_keys[3].max_budget_usd: expected a number, found a string (write it \
                 without quotes)",
                "14: api_keys[4].budget_period: expected `day` or `month`, found a string",
                "16: api_keys[5].admin: expected `true` or `false`, found a string",
                "18: api_keys[6].max_budget: unknown field",
                "19: api_keys[6].budget_period: has no effect without `max_budget_usd`: set \
                 `max_budget_usd` (USD per period) or remove `budget_period`",
            ],
        );
    }

    #[test]
    fn budget_errors_never_echo_the_key() {
        // A key pasted on the wrong lines: no message shows the value.
        check(
            "api_keys:\n  - key: sk-secret-value\n    budget_period: sk-secret-value\n    \
             max_budget_usd: sk-secret-value\n  - key: sk-other-secret\n    max_budget_usd: \"12.5\"\n",
            &[
                "3: api_keys[0].budget_period: expected `day` or `month`, found a string",
                "4: api_keys[0].max_budget_usd: expected a number, found a string",
                "6: api_keys[1].max_budget_usd: expected a number, found a string (write it \
                 without quotes)",
            ],
        );
    }

    #[test]
    fn limits_fields() {
        let limits = load(
            "limits:\n  default_output_tokens: 256\n  database: /var/lib/router/usage.sqlite\n  \
             flush_interval: 250ms\n",
        )
        .limits;
        assert_eq!(
            limits,
            LimitsConfig {
                default_output_tokens: NonZeroU64::new(256).unwrap(),
                database: PathBuf::from("/var/lib/router/usage.sqlite"),
                flush_interval: Duration::from_millis(250),
                ledger: true,
                backend: LimitsBackend::Memory,
                ledger_url: None,
            }
        );
        // Relative paths are kept as written (relative to the working directory).
        let limits = load("limits:\n  database: ./state/r.db\n  default_output_tokens: 1\n").limits;
        assert_eq!(limits.database, PathBuf::from("./state/r.db"));
        assert_eq!(limits.default_output_tokens, NonZeroU64::MIN);
        assert_eq!(limits.flush_interval, Duration::from_secs(1));
        // Like every string, the path may come from the environment.
        assert_eq!(
            load("limits:\n  database: \"/data/${KEY}.db\"\n")
                .limits
                .database,
            PathBuf::from("/data/sk-from-env.db")
        );
    }

    #[test]
    fn shared_backends() {
        let limits = load(
            "limits:\n  backend: redis\n  redis:\n    url: redis://:${KEY}@127.0.0.1:6379/0\n    \
             key_prefix: \"r1:\"\n    connect_timeout: 1s\n    command_timeout: 20ms\n    \
             on_unavailable: fail_closed\n    replicas: 3\n  \
             ledger_url: postgres://router:${KEY}@db:5432/router\n",
        )
        .limits;
        assert_eq!(
            limits.backend,
            LimitsBackend::Redis(RedisConfig {
                url: Secret::new("redis://:sk-from-env@127.0.0.1:6379/0"),
                key_prefix: "r1:".to_owned(),
                connect_timeout: Duration::from_secs(1),
                command_timeout: Duration::from_millis(20),
                on_unavailable: OnUnavailable::FailClosed,
                replicas: NonZeroU64::new(3).unwrap(),
            })
        );
        assert_eq!(
            limits.ledger_url,
            Some(Secret::new("postgres://router:sk-from-env@db:5432/router"))
        );
        // The defaults of the example.
        let limits =
            load("limits:\n  backend: redis\n  redis:\n    url: rediss://cache:6380\n").limits;
        assert_eq!(
            limits.backend,
            LimitsBackend::Redis(RedisConfig::new(Secret::new("rediss://cache:6380")))
        );
        assert_eq!(
            load("limits:\n  backend: memory\n").limits.backend,
            LimitsBackend::Memory
        );
    }

    #[test]
    fn shared_backend_errors_name_the_field_and_never_the_url() {
        check(
            "limits:\n  backend: reddis\n",
            &["2: limits.backend: must be `memory` or `redis` (did you mean `redis`?)"],
        );
        check(
            "limits:\n  backend: redis\n",
            &[
                "2: limits.backend: is `redis` but there is no `limits.redis` section; add one \
               with `url: redis://127.0.0.1:6379/0`",
            ],
        );
        check(
            "limits:\n  redis:\n    url: redis://h\n",
            &[
                "2: limits.redis: is set but `limits.backend` is `memory`, so it would be \
               ignored; set `backend: redis` or remove the section",
            ],
        );
        check(
            "limits:\n  backend: redis\n  redis:\n    url: http://user:hunter2@h\n    \
             on_unavailable: fail-close\n    replicas: 0\n    command_timeout: 0s\n  \
             ledger_url: mysql://user:hunter2@h/db\n",
            &[
                "4: limits.redis.url: must be a `redis://` or `rediss://` URL with a host, \
                 such as `redis://127.0.0.1:6379/0`",
                "5: limits.redis.on_unavailable: must be `fail_open` or `fail_closed` \
                 (did you mean `fail_closed`?)",
                "6: limits.redis.replicas: must be at least 1, found 0",
                "7: limits.redis.command_timeout: must be greater than zero",
                "8: limits.ledger_url: must be a `postgres://` or `postgresql://` URL with \
                 a host, such as `postgres://user:password@127.0.0.1:5432/router`",
            ],
        );
        check(
            "limits:\n  ledger: false\n  ledger_url: postgres://u:hunter2@h/db\n",
            &[
                "3: limits.ledger_url: cannot be used with `limits.ledger: false`, which \
               records no usage: remove one of the two",
            ],
        );
        check(
            "limits:\n  backend: redis\n  redis:\n    key_prefix: a b\n",
            &[
                "3: limits.redis.url: is required: the Redis to share limits through, e.g. \
                 `redis://127.0.0.1:6379/0`",
                "4: limits.redis.key_prefix: must not contain spaces or control characters",
            ],
        );
        for error in errors_of("limits:\n  ledger_url: \"postgres://u:hunter2@[::1\"\n") {
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn switches_default_to_on_and_turn_off() {
        // Absent or null: on, unlike the seed's booleans.
        for yaml in [
            "server: {}\n",
            "server:\n  metrics:\nlimits:\n  ledger: ~\n",
        ] {
            let config = load(yaml);
            assert!(config.server.metrics, "{yaml}");
            assert!(config.limits.ledger, "{yaml}");
        }
        let config = load("server:\n  metrics: false\nlimits:\n  ledger: false\n");
        assert!(!config.server.metrics);
        assert!(!config.limits.ledger);
        assert_eq!(
            config.server,
            ServerConfig {
                metrics: false,
                ..ServerConfig::default()
            }
        );
        assert_eq!(
            config.limits,
            LimitsConfig {
                ledger: false,
                ..LimitsConfig::default()
            }
        );
        // YAML 1.1 spellings, as for every boolean of the file.
        let config = load("server:\n  metrics: off\nlimits:\n  ledger: no\n");
        assert!(!config.server.metrics && !config.limits.ledger);
        let config = load("server:\n  metrics: true\nlimits:\n  ledger: yes\n");
        assert!(config.server.metrics && config.limits.ledger);
        // Without the ledger, `database` is still checked (and then unused).
        let config = load("limits:\n  ledger: false\n  database: /nowhere/r.db\n");
        assert!(!config.limits.ledger);
        assert_eq!(config.limits.database, PathBuf::from("/nowhere/r.db"));
    }

    #[test]
    fn switch_errors() {
        check(
            "server:\n  port: 0\n  metrics: 0\nlimits:\n  ledger: \"disabled\"\n",
            &[
                "3: server.metrics: expected `true` or `false`, found the number 0",
                "5: limits.ledger: expected `true` or `false`, found a string",
            ],
        );
        check(
            "server:\n  metric: false\nlimits:\n  ledgr: false\n  ledger: [false]\n",
            &[
                "2: server.metric: unknown field, did you mean `metrics`?",
                "4: limits.ledgr: unknown field, did you mean `ledger`?",
                "5: limits.ledger: expected `true` or `false`, found a list",
            ],
        );
        // As printed by `check-config`: file, line, field path, problem.
        let errors = parse(Path::new("router.yaml"), "limits:\n  ledger: {}\n", &env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            errors,
            "router.yaml:2: limits.ledger: expected `true` or `false`, found a mapping"
        );
    }

    #[test]
    fn limits_errors() {
        check(
            "limits:\n  default_output_tokens: 0\n  database: \"\"\n  flush_interval: 0s\n",
            &[
                "2: limits.default_output_tokens: must be at least 1, found 0",
                "3: limits.database: must not be empty: name the SQLite file, e.g. `data/router.db`",
                "4: limits.flush_interval: must be greater than zero",
            ],
        );
        check(
            "limits:\n  default_output_tokens: -3\n  database: data/\n  flush_interval: 1\n  \
             flush_intreval: 1s\n  max_budget_usd: 5\n",
            &[
                "2: limits.default_output_tokens: must be at least 1, found -3",
                "3: limits.database: must name a file such as `data/router.db`, not a folder",
                "4: limits.flush_interval: expected a duration such as `10s`, `1m30s` or `500ms` \
                 (units: ns, us, ms, s, m, h), found the bare number 1 (add a unit, e.g. `1s`)",
                "5: limits.flush_intreval: unknown field, did you mean `flush_interval`?",
                "6: limits.max_budget_usd: unknown field",
            ],
        );
        check(
            "limits:\n  default_output_tokens: \"512\"\n  database: [a.db]\n  flush_interval: ${NOPE}\n",
            &[
                "2: limits.default_output_tokens: expected an integer, found a string (write it \
                 without quotes)",
                "3: limits.database: expected a string, found a list",
                "4: limits.flush_interval: environment variable `NOPE` is not set",
            ],
        );
        check(
            "limits:\n  database: \"..\"\n",
            &["2: limits.database: must name a file such as `data/router.db`, not a folder"],
        );
        check(
            "limits: []\nlimit: {}\n",
            &[
                "1: limits: expected a mapping of `key: value` fields, found a list",
                "2: limit: unknown field, did you mean `limits`?",
            ],
        );
    }

    #[test]
    fn empty_provider_keys() {
        check(
            "models:\n  - name: m\n    provider_api_key:\n      - a\n      - \"\"\n",
            &["5: models[0].provider_api_key[1]: must not be empty (leave the list empty to send no \
               `Authorization`)"],
        );
    }

    #[test]
    fn provider_keys_must_fit_in_a_header() {
        check(
            "models:\n  - name: m\n    provider_api_key:\n      - \"sk-ok\"\n      - \"sk-with\\nnewline\"\n      - \"sk with space\"\n",
            &[
                "5: models[0].provider_api_key[1]: must be printable ASCII without spaces \
                 (check for a stray newline or quote)",
                "6: models[0].provider_api_key[2]: must be printable ASCII without spaces \
                 (check for a stray newline or quote)",
            ],
        );
    }

    #[test]
    fn whole_file_errors() {
        check(
            "",
            &["-: : the file is empty; expected a mapping with `server`, `models`, `api_keys` and `limits`"],
        );
        check(
            "# only a comment\n",
            &["-: : the file is empty; expected a mapping with `server`, `models`, `api_keys` and `limits`"],
        );
        check(
            "- a\n- b\n",
            &["-: : expected a mapping with `server`, `models`, `api_keys` and `limits` at the top level, found a list"],
        );
        check(
            "model: []\nx-defaults: {a: 1}\nsevrer: {}\n",
            &[
                "1: model: unknown field, did you mean `models`?",
                "3: sevrer: unknown field, did you mean `server`?",
            ],
        );
        check(
            "server: []\n",
            &["1: server: expected a mapping of `key: value` fields, found a list"],
        );
        check(
            "models: {}\n",
            &["1: models: expected a list, found a mapping"],
        );
    }

    #[test]
    fn every_problem_is_reported_in_line_order() {
        check(
            "api_keys:\n  - key: \"\"\nmodels:\n  - name: m\n    bse_url: x\n    rpm: -1\n    enabled: maybe\n\
             server:\n  port: http\n",
            &[
                "2: api_keys[0].key: must not be empty",
                "5: models[0].bse_url: unknown field, did you mean `base_url`?",
                "6: models[0].rpm: must not be negative (0 or leaving it out means no limit), found -1",
                "7: models[0].enabled: expected `true` or `false`, found a string",
                "9: server.port: expected a port number from 0 to 65535, found `http`",
            ],
        );
    }

    #[test]
    fn load_file_reports_unreadable_files() {
        let missing = Path::new("/nonexistent/router/config.yaml");
        let errors = load_file(missing, &env).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].file, missing);
        assert_eq!(errors.0[0].line, None);
        assert!(
            errors.0[0].message.starts_with("cannot read the file: "),
            "{}",
            errors.0[0].message
        );
    }
}
