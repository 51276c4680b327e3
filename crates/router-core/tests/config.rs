//! Loading config files: the seed's files unchanged, the shipped configs, and
//! every class of error with its file, line, path and message.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use router_core::config::{
    self, Budget, BudgetPeriod, Config, ConfigErrors, CooldownPolicy, LimitsConfig, RetryPolicy,
    ServerConfig, Timeouts, MOCK_PROVIDER, OPENAI_PROVIDER,
};
use time::macros::datetime;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

fn repo_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(name: &str) -> Config {
    match config::load_file(&fixture(name), &no_env) {
        Ok(config) => config,
        Err(errors) => panic!("{name} should load:\n{errors}"),
    }
}

fn load_errors(name: &str, env: &dyn Fn(&str) -> Option<String>) -> ConfigErrors {
    match config::load_file(&fixture(name), env) {
        Ok(_) => panic!("{name} should not load"),
        Err(errors) => errors,
    }
}

/// The errors as `line: path: message` lines, file name left out.
fn summary(errors: &ConfigErrors) -> Vec<String> {
    errors
        .iter()
        .map(|error| {
            let line = error
                .line
                .map_or_else(|| "-".to_owned(), |line| line.to_string());
            format!("{line}: {}: {}", error.path, error.message)
        })
        .collect()
}

fn check_errors(name: &str, env: &dyn Fn(&str) -> Option<String>, expected: &[&str]) {
    let errors = load_errors(name, env);
    for error in &errors {
        assert_eq!(error.file, fixture(name));
    }
    assert_eq!(summary(&errors), expected, "{name}");
}

#[test]
fn seed_config_loads_unchanged() {
    let config = load("seed-config.yaml");
    assert_eq!(config.source, fixture("seed-config.yaml"));
    assert_eq!(config.server.port, 8316);
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(config.server.host, std::net::IpAddr::from([0, 0, 0, 0]));

    let names: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gemini-2.0-flash",
            "gemini-2.0-flash-lite",
            "gemini-2.5-flash-lite",
            "gemini-2.5-pro",
            "gemini-2.5-flash"
        ]
    );
    let ids: Vec<u64> = config.models.iter().map(|m| m.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let visible: Vec<bool> = config.models.iter().map(|m| m.visible).collect();
    assert_eq!(visible, [false, false, true, true, true]);
    let thinking: Vec<bool> = config
        .models
        .iter()
        .map(|m| m.support_google_thinking)
        .collect();
    assert_eq!(thinking, [false, false, true, true, true]);

    let lite = &config.models[2];
    assert_eq!(lite.index, 2);
    assert_eq!(
        lite.provider_model_name,
        "gemini-2.5-flash-lite-preview-06-17"
    );
    assert_eq!(lite.display_name, "Gemini 2.5 Flash Lite");
    assert_eq!(lite.description, "Google's Gemini 2.5 Flash Lite");
    assert!(
        lite.capabilities.chat && lite.capabilities.completion && lite.capabilities.input_image
    );
    assert!(!lite.capabilities.embedding);
    assert_eq!(lite.limits.rpm, NonZeroU64::new(15));
    assert_eq!(lite.limits.tpm, NonZeroU64::new(250_000));
    assert_eq!(lite.limits.rpd, NonZeroU64::new(1000));
    assert_eq!(lite.limits.rph, None);
    assert_eq!(lite.input_price_per_token, 0.0);
    assert_eq!(lite.max_tokens, NonZeroU64::new(64_000));
    assert_eq!(lite.context_length, NonZeroU64::new(1_000_000));
    assert_eq!(lite.supported_parameters.as_ref().map(Vec::len), Some(11));
    assert_eq!(lite.provider, OPENAI_PROVIDER);
    assert!(
        lite.is_openai_compatibility && lite.enabled && !lite.base_url_direct && !lite.stream_only
    );
    let keys: Vec<&str> = lite.provider_api_keys.iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["AIzaSy...S6cBqxM4", "AIzaSy...J7amzb2w"]);
    assert_eq!(
        lite.base_url.as_ref().map(|u| u.as_str()),
        Some("https://generativelanguage.googleapis.com/v1beta/openai")
    );

    assert_eq!(config.api_keys.len(), 1);
    let key = &config.api_keys[0];
    assert_eq!((key.index, key.id), (0, 1));
    assert_eq!(key.key.expose(), "sk-or-v1-...");
    assert_eq!(key.name, "Default");
    assert!(key.is_active);
    assert_eq!(key.user_id, None);
    assert_eq!(key.expires_at, None);

    // Fields the seed did not have take their defaults.
    assert_eq!(config.limits, LimitsConfig::default());
    assert!(config
        .models
        .iter()
        .all(|m| m.cached_input_price_per_token == m.input_price_per_token));
    assert_eq!(key.budget, None);
    assert!(!key.admin);
}

#[test]
fn budgets_cached_prices_and_limits_load() {
    let config = load("budgets-and-limits.yaml");
    let prices: Vec<(f64, f64, f64)> = config
        .models
        .iter()
        .map(|m| {
            (
                m.input_price_per_token,
                m.cached_input_price_per_token,
                m.output_price_per_token,
            )
        })
        .collect();
    assert_eq!(prices, [(3e-6, 3e-7, 1.5e-5), (2e-6, 2e-6, 0.0)]);

    let budgets: Vec<Option<Budget>> = config.api_keys.iter().map(|k| k.budget).collect();
    assert_eq!(
        budgets,
        [
            Some(Budget {
                max_usd: 50.0,
                period: BudgetPeriod::Month
            }),
            Some(Budget {
                max_usd: 1.5,
                period: BudgetPeriod::Day
            }),
            None,
        ]
    );
    let admins: Vec<bool> = config.api_keys.iter().map(|k| k.admin).collect();
    assert_eq!(admins, [false, false, true]);

    assert_eq!(
        config.limits,
        LimitsConfig {
            default_output_tokens: NonZeroU64::new(2048).unwrap(),
            database: PathBuf::from("state/usage.db"),
            flush_interval: Duration::from_millis(500),
            ledger: true,
            ..LimitsConfig::default()
        }
    );
}

#[test]
fn readme_examples_load_unchanged() {
    let server = load("readme-server.yaml");
    assert_eq!(server.server.port, 8316);
    assert!(server.models.is_empty() && server.api_keys.is_empty());

    let models = load("readme-models.yaml");
    assert_eq!(models.models.len(), 1);
    assert_eq!(models.models[0].id, 4);
    assert_eq!(models.models[0].context_length, NonZeroU64::new(1_048_576));

    let keys = load("readme-api-keys.yaml");
    let key = &keys.api_keys[0];
    assert_eq!(key.user_id, Some(1));
    assert_eq!(key.limits.rpm, None, "0 means no limit");
}

#[test]
fn undocumented_seed_fields_and_yaml_v3_forms_load() {
    let config = load("seed-extras.yaml");
    assert_eq!(config.server.port, 8080);
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(90));

    let model = &config.models[0];
    assert!(model.base_url_direct && model.stream_only && model.is_openai_compatibility);
    assert!(model.enabled && !model.visible);
    assert!(model.capabilities.image_gen && model.capabilities.audio_trans2);
    assert_eq!(model.limits.rph, NonZeroU64::new(100));
    assert_eq!(model.limits.tph, NonZeroU64::new(1_000_000));
    assert_eq!(model.limits.tpd, NonZeroU64::new(10_000_000));

    let limits = &config.api_keys[0].limits;
    let all: Vec<Option<u64>> = [
        limits.rps, limits.rpm, limits.rph, limits.rpd, limits.tps, limits.tpm, limits.tph,
        limits.tpd,
    ]
    .iter()
    .map(|limit| limit.map(NonZeroU64::get))
    .collect();
    assert_eq!(all, (1..=8).map(Some).collect::<Vec<_>>());
    assert_eq!(
        config.api_keys[0].expires_at,
        Some(datetime!(2030-01-01 0:00 UTC))
    );
    assert_eq!(
        config.api_keys[1].expires_at,
        Some(datetime!(2024-12-31 0:00 UTC))
    );
}

fn secrets_env(name: &str) -> Option<String> {
    let value = match name {
        "UPSTREAM_HOST" => "llm.example.com",
        "UPSTREAM_KEY_1" => "sk-upstream-one",
        "UPSTREAM_KEY_2" => "sk-upstream-two",
        "CLIENT_KEY" => "sk-client",
        _ => return None,
    };
    Some(value.to_owned())
}

#[test]
fn env_references_are_expanded() {
    let config = config::load_file(&fixture("env-secrets.yaml"), &secrets_env).unwrap();
    let model = &config.models[0];
    assert_eq!(
        model.base_url.as_ref().map(|u| u.as_str()),
        Some("https://llm.example.com/v1")
    );
    let keys: Vec<&str> = model.provider_api_keys.iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["sk-upstream-one", "sk-upstream-two"]);
    assert_eq!(model.description, "costs $$5, templated as ${price}");
    assert_eq!(config.api_keys[0].key.expose(), "sk-client");
    // Debug output of the whole config masks every secret.
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("sk-upstream") && !debug.contains("sk-client"),
        "{debug}"
    );
}

#[test]
fn missing_env_variables_name_the_variable_and_path() {
    let only_host = |name: &str| (name == "UPSTREAM_HOST").then(|| "llm.example.com".to_owned());
    check_errors(
        "env-secrets.yaml",
        &only_host,
        &[
            "8: models[0].provider_api_key[0]: environment variable `UPSTREAM_KEY_1` is not set",
            "9: models[0].provider_api_key[1]: environment variable `UPSTREAM_KEY_2` is not set",
            "12: api_keys[0].key: environment variable `CLIENT_KEY` is not set",
        ],
    );
}

#[test]
fn typos_are_reported_with_a_suggestion() {
    let errors = load_errors("typos.yaml", &no_env);
    assert_eq!(
        summary(&errors),
        [
            "2: server.prot: unknown field, did you mean `port`?",
            "16: models[2].bse_url: unknown field, did you mean `base_url`?",
            "17: models[2].enabeld: unknown field, did you mean `enabled`?",
            "18: api_key: unknown field, did you mean `api_keys`?",
            "21: limits.flush-interval: unknown field, did you mean `flush_interval`?",
            "22: limits.databse: unknown field, did you mean `database`?",
        ]
    );
    let file = fixture("typos.yaml");
    assert_eq!(
        errors.0[1].to_string(),
        format!(
            "{}:16: models[2].bse_url: unknown field, did you mean `base_url`?",
            file.display()
        )
    );
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let errors = load_errors("many-errors.yaml", &no_env);
    assert_eq!(
        summary(&errors),
        [
            "3: server.port: expected a port number from 0 to 65535, found 70000",
            "4: server.host: expected an IP address such as `127.0.0.1`, `0.0.0.0` or `::`, found `localhost`",
            "5: server.shutdown_timeout: expected a duration such as `10s`, `1m30s` or `500ms` (units: ns, \
             us, ms, s, m, h), found the bare number 10 (add a unit, e.g. `10s`)",
            "6: server.sse_keepalive: must be greater than zero",
            "9: models[0].name: must not be empty: it is the model name clients ask for",
            "12: models[1].id: duplicate id 1: already used by models[0]",
            "14: models[1].rpm: must not be negative (0 or leaving it out means no limit), found -5",
            "15: models[1].input_price_per_token: must not be negative, found -1",
            "16: models[1].base_url: must be an http or https URL such as `https://api.openai.com/v1`",
            "19: models[2].provider: missing: this enabled model has no way to reach an upstream; set \
             `provider` (`openai` with a `base_url`, or `mock`) or `is_openai_compatibility: true`",
            "22: models[3].base_url: missing: the `openai` provider needs a base URL such as \
             `https://api.openai.com/v1`",
            "26: models[3].provider_api_key: expected a list, found a string",
            "27: models[3].supports_chat: expected `true` or `false`, found a string",
            "33: api_keys[1].key: duplicate key: api_keys[0].key has the same value",
            "36: api_keys[2].key: must not be empty",
            "38: api_keys[3].key: environment variable `NOT_SET` is not set",
            "39: api_keys[3].expires_at: expected a timestamp such as `2025-12-31T23:59:59Z`, \
             `2025-12-31 23:59:59` or `2025-12-31`, found `next year`",
            "42: api_keys[4].budget_period: has no effect without `max_budget_usd`: set \
             `max_budget_usd` (USD per period) or remove `budget_period`",
            "45: api_keys[5].max_budget_usd: must not be negative (0 or leaving it out means no \
             budget), found -10",
            "46: api_keys[5].budget_period: expected `day` or `month`, found a string",
            "48: limits.default_output_tokens: must be at least 1, found 0",
            "49: limits.database: must not be empty: name the SQLite file, e.g. `data/router.db`",
            "50: limits.flush_interval: must be greater than zero",
        ]
    );
    // Secrets appear nowhere in the report.
    let report = errors.to_string();
    assert!(!report.contains("sk-router-secret-1"), "{report}");
}

#[test]
fn duplicate_yaml_keys_are_refused_with_both_lines() {
    check_errors(
        "duplicate-key.yaml",
        &no_env,
        &["6: models[0].base_url: duplicate key (first defined at line 4)"],
    );
}

#[test]
fn alias_bombs_are_refused() {
    check_errors(
        "alias-bomb.yaml",
        &no_env,
        &["-: : too many alias expansions (repetition limit exceeded); aliases may not multiply the document"],
    );
}

#[test]
fn empty_and_non_mapping_files_are_refused() {
    check_errors(
        "empty.yaml",
        &no_env,
        &["-: : the file is empty; expected a mapping with `server`, `models`, `api_keys` and `limits`"],
    );
    check_errors(
        "not-a-mapping.yaml",
        &no_env,
        &["-: : expected a mapping with `server`, `models`, `api_keys` and `limits` at the top level, found a list"],
    );
}

#[test]
fn unreadable_files_are_refused() {
    let errors = load_errors("no-such-file.yaml", &no_env);
    assert_eq!(errors.0.len(), 1);
    assert!(
        errors.0[0].message.starts_with("cannot read the file: "),
        "{errors}"
    );
}

#[test]
fn secrets_never_reach_error_messages() {
    let env = |name: &str| (name == "KEY").then(|| "sk-env-secret-value".to_owned());
    let text = "\
api_keys:
  - key: ${KEY}
  - key: sk-env-secret-value
  - key: [sk-inline-secret]
models:
  - name: m
    provider_api_key: sk-provider-secret
    base_url: \"sk-url-secret:${KEY}\"
";
    let errors = config::parse(Path::new("inline.yaml"), text, &env).unwrap_err();
    assert_eq!(
        summary(&errors),
        [
            "3: api_keys[1].key: duplicate key: api_keys[0].key has the same value",
            "4: api_keys[2].key: expected a string, found a list",
            "7: models[0].provider_api_key: expected a list, found a string",
            "8: models[0].base_url: must be an http or https URL such as `https://api.openai.com/v1`",
        ]
    );
    let report = errors.to_string();
    assert!(!report.contains("secret"), "{report}");
}

/// Every variable the shipped examples may reference.
fn example_env(name: &str) -> Option<String> {
    match name {
        "ROUTER_PORT" => Some("8401".to_owned()),
        "ROUTER_REDIS_URL" => Some("redis://127.0.0.1:6379/0".to_owned()),
        "ROUTER_LEDGER_URL" => Some("postgres://router@127.0.0.1:5432/router".to_owned()),
        _ => [
            "ANTHROPIC_API_KEY",
            "GEMINI_API_KEY",
            "GEMINI_API_KEY_2",
            "OPENAI_API_KEY",
            "ROUTER_CLIENT_KEY",
            "ROUTER_ADMIN_KEY",
        ]
        .contains(&name)
        .then(|| format!("fake-{name}")),
    }
}

#[test]
fn shipped_configs_load() {
    let mut files = vec![repo_config_dir().join("config.yaml")];
    let examples = std::fs::read_dir(repo_config_dir().join("examples")).unwrap();
    let mut examples: Vec<PathBuf> = examples.map(|entry| entry.unwrap().path()).collect();
    examples.sort();
    files.extend(examples);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "config.yaml",
            "anthropic.yaml",
            "gemini.yaml",
            "ollama.yaml",
            "openai.yaml",
            "replicas.yaml",
            "vllm.yaml"
        ]
    );

    for file in &files {
        let config = match config::load_file(file, &example_env) {
            Ok(config) => config,
            Err(errors) => panic!("{} should load:\n{errors}", file.display()),
        };
        assert!(
            config.models.iter().any(|m| m.enabled),
            "{}",
            file.display()
        );
        assert!(
            config.api_keys.iter().any(|k| k.is_active),
            "{}",
            file.display()
        );
    }
}

#[test]
fn default_config_runs_without_any_key() {
    let config = config::load_file(&repo_config_dir().join("config.yaml"), &no_env).unwrap();
    assert_eq!(config.server.host, std::net::IpAddr::from([127, 0, 0, 1]));
    assert_eq!(config.server.port, 8316);
    let mocks: Vec<&str> = config
        .models
        .iter()
        .filter(|m| m.enabled && m.provider == MOCK_PROVIDER && m.base_url.is_none())
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(mocks, ["mock-gpt", "mock-thinking"]);
    assert!(config
        .models
        .iter()
        .all(|m| m.provider == MOCK_PROVIDER && m.provider_api_keys.is_empty()));
    let key = &config.api_keys[0];
    assert_eq!(key.key.expose(), "sk-router-dev-key");
    assert!(key.is_active);
    // The budget and admin lines are shown commented out.
    assert_eq!(key.budget, None);
    assert!(!key.admin);
    assert_eq!(config.limits, LimitsConfig::default());
    // The reference writes out the defaults of the newer sections.
    assert_eq!(config.retry, RetryPolicy::default());
    assert_eq!(config.cooldown, CooldownPolicy::default());
    assert_eq!(config.server.timeouts(), ServerConfig::default().timeouts());
    assert!(config
        .models
        .iter()
        .all(|m| m.timeouts == ServerConfig::default().timeouts()));
}

#[test]
fn reference_config_commented_entry_timeouts_are_valid() {
    // The per-entry timeouts are shown commented out; uncommented, they must
    // load and mean the defaults they claim.
    let path = repo_config_dir().join("config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut uncommented = 0;
    let text: String = text
        .lines()
        .map(|line| {
            for key in [
                "connect_timeout",
                "first_byte_timeout",
                "idle_timeout",
                "request_timeout",
            ] {
                if let Some(rest) = line.strip_prefix(&format!("    # {key}:")) {
                    uncommented += 1;
                    return format!("    {key}:{rest}\n");
                }
            }
            format!("{line}\n")
        })
        .collect();
    assert_eq!(uncommented, 4);
    let config = match config::parse(&path, &text, &no_env) {
        Ok(config) => config,
        Err(errors) => panic!("uncommented timeouts should load:\n{errors}"),
    };
    assert_eq!(
        config.models[0].timeouts,
        ServerConfig::default().timeouts()
    );
}

#[test]
fn timeouts_retry_and_cooldown_load() {
    let config = load("timeouts-retry-cooldown.yaml");
    let server = Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(60),
        idle: Duration::from_secs(30),
        total: Duration::from_secs(3600),
    };
    assert_eq!(config.server.timeouts(), server);
    // `server:` comes after `models:` in the file; entries still inherit it.
    assert_eq!(config.models[0].timeouts, server);
    assert_eq!(
        config.models[1].timeouts,
        Timeouts {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_secs(20),
            idle: Duration::from_secs(45),
            total: Duration::from_secs(600),
        }
    );
    assert_eq!(
        config.retry,
        RetryPolicy {
            max_attempts: NonZeroU64::new(3).unwrap(),
            max_retry_time: Duration::from_secs(15),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            budget_ratio: 0.1,
            budget_min_per_second: 2,
        }
    );
    assert_eq!(
        config.cooldown,
        CooldownPolicy {
            rate_limited: Duration::from_secs(60),
            failures_to_open: NonZeroU64::new(3).unwrap(),
            open_for: Duration::from_secs(10),
        }
    );
}

#[test]
fn timeout_retry_and_cooldown_errors_are_reported_together() {
    check_errors(
        "timeouts-retry-cooldown-errors.yaml",
        &no_env,
        &[
            "2: server.first_byte_timeout: must be greater than zero",
            "3: server.idle_timout: unknown field, did you mean `idle_timeout`?",
            "7: models[0].connect_timeout: must be greater than zero",
            "8: models[0].request_timeout: expected a duration such as `10s`, `1m30s` or `500ms` \
             (units: ns, us, ms, s, m, h), found the bare number 10 (add a unit, e.g. `10s`)",
            "10: models[0].first_byte_timout: unknown field, did you mean `first_byte_timeout`?",
            "12: retry.max_attempts: must be at least 1, found 0",
            "14: retry.backoff_max: must not be shorter than `retry.backoff_base` (3s), found 1s: \
             raise `backoff_max` or lower `backoff_base`",
            "15: retry.budget_ratio: must be from 0 (no retries beyond `budget_min_per_second`) to \
             10, found 20",
            "16: retry.budget_min_per_second: must not be negative, found -5",
            "18: cooldown.rate_limited: must be greater than zero",
            "19: cooldown.failures_to_open: must be at least 1, found 0",
            "20: cooldown.open_for: expected a duration such as `10s`, `1m30s` or `500ms` (units: \
             ns, us, ms, s, m, h), found `soon`",
            "21: cooldown.open_fr: unknown field, did you mean `open_for`?",
        ],
    );
}

#[test]
fn gemini_example_uses_merge_keys_and_env_keys() {
    let config = config::load_file(
        &repo_config_dir().join("examples/gemini.yaml"),
        &example_env,
    )
    .unwrap();
    for model in &config.models {
        assert_eq!(model.provider, OPENAI_PROVIDER);
        let keys: Vec<&str> = model.provider_api_keys.iter().map(|k| k.expose()).collect();
        assert_eq!(keys, ["fake-GEMINI_API_KEY", "fake-GEMINI_API_KEY_2"]);
        assert!(model.enabled && model.visible);
    }
    // Without the keys in the environment, each reference is an error.
    let errors =
        config::load_file(&repo_config_dir().join("examples/gemini.yaml"), &no_env).unwrap_err();
    let missing: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        missing.contains(&"environment variable `GEMINI_API_KEY` is not set"),
        "{errors}"
    );
    assert!(
        missing.contains(&"environment variable `ROUTER_CLIENT_KEY` is not set"),
        "{errors}"
    );
}
