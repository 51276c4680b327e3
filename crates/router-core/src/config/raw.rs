//! Raw structs mirroring the YAML file, and the walk that fills them.
//!
//! Each struct lists the seed's keys (plus ours) with the loosest type that
//! still means something (`i128` for integers so that `-1` reaches
//! validation as "negative", not as a type error). They are filled by walking
//! the `serde_yaml::Value` tree rather than by `#[derive(Deserialize)]`:
//! derived code stops at the first error, and we want every unknown key, bad
//! type and missing variable of the file in one run. The walk also expands
//! `${VAR}` in every string (see `env`).
//!
//! Nothing here echoes a string value from the file in a message, except for
//! fields that can never hold a secret (durations, hosts, ports, timestamps).

use std::net::IpAddr;
use std::time::Duration;

use serde_yaml::{Mapping, Value};
use time::OffsetDateTime;

use super::env;
use super::error::Problem;
use super::scalar::{self, DurationError, DURATION_FORMAT, TIMESTAMP_FORMAT};
use super::yaml::join_path;
use super::BudgetPeriod;
use crate::secret::Secret;

/// What the walk carries along: the variable lookup and the problems so far.
pub(super) struct Ctx<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) problems: Vec<Problem>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            env,
            problems: Vec::new(),
        }
    }

    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn type_error(&mut self, path: &str, expected: &str, found: &Value) {
        self.error(
            path,
            format!("expected {expected}, found {}", describe(found)),
        );
    }

    /// Expands `${VAR}` references; `None` once the problems are recorded.
    fn expand(&mut self, text: &str, path: &str) -> Option<String> {
        match env::expand(text, self.env) {
            Ok(expanded) => Some(expanded.into_owned()),
            Err(errors) => {
                for error in errors {
                    self.error(path, error.to_string());
                }
                None
            }
        }
    }

    fn mapping<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v Mapping> {
        match value {
            Value::Mapping(mapping) => Some(mapping),
            other => {
                self.type_error(path, "a mapping of `key: value` fields", other);
                None
            }
        }
    }

    /// The text of a mapping key; the seed's keys are all strings.
    fn key_name<'v>(&mut self, key: &'v Value, path: &str) -> Option<&'v str> {
        match key {
            Value::String(name) => Some(name),
            other => {
                self.error(
                    path,
                    format!("field names must be strings, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn unknown_field(&mut self, path: &str, known: &[&str]) {
        let name = path.rsplit('.').next().unwrap_or(path);
        let message = match closest(name, known) {
            Some(suggestion) => format!("unknown field, did you mean `{suggestion}`?"),
            None => "unknown field".to_owned(),
        };
        self.error(path, message);
    }
}

/// A field as found in the file. `Invalid` (already reported) is kept apart
/// from `Absent` so that validation does not add "missing" on top of "wrong type".
#[derive(Debug, Default)]
pub(super) enum Field<T> {
    /// Not in the file, or `null` (the seed's zero value).
    #[default]
    Absent,
    Invalid,
    Set(T),
}

impl<T: FromYaml> Field<T> {
    fn decode(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Self {
        if value.is_null() {
            return Field::Absent;
        }
        match T::from_yaml(value, path, cx) {
            Some(decoded) => Field::Set(decoded),
            None => Field::Invalid,
        }
    }
}

impl<T> Field<T> {
    pub(super) fn set(self) -> Option<T> {
        match self {
            Field::Set(value) => Some(value),
            Field::Absent | Field::Invalid => None,
        }
    }
}

/// A value read from one YAML node. `None` means a problem was recorded.
pub(super) trait FromYaml: Sized {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self>;
}

impl FromYaml for bool {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        match value {
            Value::Bool(flag) => Some(*flag),
            // yaml.v3 read YAML 1.1 booleans into the seed's bool fields.
            Value::String(text) => match text.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
                _ => {
                    cx.type_error(path, "`true` or `false`", value);
                    None
                }
            },
            other => {
                cx.type_error(path, "`true` or `false`", other);
                None
            }
        }
    }
}

/// A plain string; like yaml.v3, numbers and booleans are taken as their text.
impl FromYaml for String {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        match value {
            Value::String(text) => cx.expand(text, path),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            other => {
                cx.type_error(path, "a string", other);
                None
            }
        }
    }
}

impl FromYaml for Secret {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        String::from_yaml(value, path, cx).map(Secret::new)
    }
}

/// Any integer; signs and ranges are checked by validation.
impl FromYaml for i128 {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        match value {
            Value::Number(number) => {
                if let Some(int) = number.as_i64() {
                    return Some(int.into());
                }
                if let Some(uint) = number.as_u64() {
                    return Some(uint.into());
                }
            }
            // yaml.v3 read `1_000_000` as an integer; YAML 1.2 (serde_yaml)
            // makes it a string.
            Value::String(text) if text.contains('_') => {
                if let Ok(int) = text.replace('_', "").parse::<i64>() {
                    return Some(int.into());
                }
            }
            Value::String(text) if text.trim().parse::<i128>().is_ok() => {
                cx.error(
                    path,
                    "expected an integer, found a string (write it without quotes)",
                );
                return None;
            }
            _ => {}
        }
        cx.type_error(path, "an integer", value);
        None
    }
}

impl FromYaml for f64 {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        match value {
            Value::Number(number) => {
                if let Some(float) = number.as_f64() {
                    return Some(float);
                }
            }
            // Only finite numbers get the hint: `nan` and `inf` parse too,
            // but YAML spells those `.nan` and `.inf`.
            Value::String(text)
                if text
                    .trim()
                    .parse::<f64>()
                    .is_ok_and(|float| float.is_finite()) =>
            {
                cx.error(
                    path,
                    "expected a number, found a string (write it without quotes)",
                );
                return None;
            }
            _ => {}
        }
        cx.type_error(path, "a number", value);
        None
    }
}

/// A list; one bad item makes the whole field invalid (each bad item reported).
impl<T: FromYaml> FromYaml for Vec<T> {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        let Value::Sequence(items) = value else {
            cx.type_error(path, "a list", value);
            return None;
        };
        let mut decoded = Vec::with_capacity(items.len());
        let mut all_valid = true;
        for (index, item) in items.iter().enumerate() {
            match T::from_yaml(item, &format!("{path}[{index}]"), cx) {
                Some(value) => decoded.push(value),
                None => all_valid = false,
            }
        }
        all_valid.then_some(decoded)
    }
}

/// A list of sections (`models`, `api_keys`) that keeps each item's position
/// for messages, and keeps the valid items when others are broken so that
/// cross-item checks still run.
#[derive(Debug, Default)]
pub(super) struct Entries<T>(pub Vec<(usize, T)>);

impl<T: FromYaml> FromYaml for Entries<T> {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        let Value::Sequence(items) = value else {
            cx.type_error(path, "a list", value);
            return None;
        };
        let entries = items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| {
                T::from_yaml(item, &format!("{path}[{index}]"), cx).map(|entry| (index, entry))
            })
            .collect();
        Some(Entries(entries))
    }
}

/// A Go duration string (`10s`, `1m30s`); a bare number is refused, as by the seed.
impl FromYaml for Duration {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        match value {
            Value::String(text) => {
                let text = cx.expand(text, path)?;
                match scalar::parse_go_duration(text.trim()) {
                    Ok(duration) => Some(duration),
                    Err(DurationError::Syntax) => {
                        cx.error(path, format!("expected {DURATION_FORMAT}, found `{text}`"));
                        None
                    }
                    Err(error) => {
                        cx.error(path, error.to_string());
                        None
                    }
                }
            }
            Value::Number(number) if number.is_i64() || number.is_u64() => {
                cx.error(
                    path,
                    format!(
                        "expected {DURATION_FORMAT}, found the bare number {number} \
                         (add a unit, e.g. `{number}s`)"
                    ),
                );
                None
            }
            other => {
                cx.type_error(path, DURATION_FORMAT, other);
                None
            }
        }
    }
}

/// A YAML timestamp or RFC 3339 string (serde_yaml hands both over as text).
impl FromYaml for OffsetDateTime {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        let Value::String(text) = value else {
            cx.type_error(path, TIMESTAMP_FORMAT, value);
            return None;
        };
        let text = cx.expand(text, path)?;
        let parsed = scalar::parse_timestamp(&text);
        if parsed.is_none() {
            cx.error(path, format!("expected {TIMESTAMP_FORMAT}, found `{text}`"));
        }
        parsed
    }
}

/// `server.port`: the seed's string, or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Port(pub u16);

impl FromYaml for Port {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        const EXPECTED: &str = "a port number from 0 to 65535";
        let found = match value {
            Value::Number(number) => match number.as_u64().map(u16::try_from) {
                Some(Ok(port)) => return Some(Port(port)),
                _ => format!("{number}"),
            },
            Value::String(text) => {
                let text = cx.expand(text, path)?;
                match text.trim().parse::<u16>() {
                    Ok(port) => return Some(Port(port)),
                    Err(_) => format!("`{text}`"),
                }
            }
            other => describe(other),
        };
        cx.error(path, format!("expected {EXPECTED}, found {found}"));
        None
    }
}

impl FromYaml for IpAddr {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        const EXPECTED: &str = "an IP address such as `127.0.0.1`, `0.0.0.0` or `::`";
        let Value::String(text) = value else {
            cx.type_error(path, EXPECTED, value);
            return None;
        };
        let text = cx.expand(text, path)?;
        let parsed = text.trim().parse().ok();
        if parsed.is_none() {
            cx.error(path, format!("expected {EXPECTED}, found `{text}`"));
        }
        parsed
    }
}

/// `budget_period`: `day` or `month`. Like a boolean's, a wrong value is
/// not shown (a key pasted on the wrong line would be); a near miss gets the
/// period it most likely meant.
impl FromYaml for BudgetPeriod {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        const EXPECTED: &str = "`day` or `month`";
        const PERIODS: &[&str] = &["day", "month"];
        let Value::String(text) = value else {
            cx.type_error(path, EXPECTED, value);
            return None;
        };
        let text = cx.expand(text, path)?;
        let text = text.trim();
        match text {
            "day" => return Some(BudgetPeriod::Day),
            "month" => return Some(BudgetPeriod::Month),
            _ => {}
        }
        let found = if text.is_empty() {
            "an empty string"
        } else {
            "a string"
        };
        let suggestion = match text.to_ascii_lowercase().as_str() {
            "daily" => Some("day"),
            "monthly" => Some("month"),
            other => closest(other, PERIODS),
        };
        let message = match suggestion {
            Some(period) => format!("expected {EXPECTED}, found {found}; did you mean `{period}`?"),
            None => format!("expected {EXPECTED}, found {found}"),
        };
        cx.error(path, message);
        None
    }
}

/// A field the seed reads but nothing uses (`created_at`): any scalar will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unused;

impl FromYaml for Unused {
    fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
        match value {
            Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => {
                cx.type_error(path, TIMESTAMP_FORMAT, value);
                None
            }
            _ => Some(Unused),
        }
    }
}

/// Declares a section struct whose fields are all [`Field`]s named like the
/// YAML keys, and its walk: known keys are decoded with their type, unknown
/// ones are reported with the closest known key.
macro_rules! section {
    (
        $(#[$meta:meta])*
        struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub(super) struct $name {
            $( $(#[$field_meta])* pub $field: Field<$ty>, )*
        }

        impl $name {
            /// The keys this section accepts, in documentation order.
            pub(super) const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        impl FromYaml for $name {
            fn from_yaml(value: &Value, path: &str, cx: &mut Ctx<'_>) -> Option<Self> {
                let mapping = cx.mapping(value, path)?;
                let mut section = Self::default();
                for (key, item) in mapping {
                    let Some(key) = cx.key_name(key, path) else { continue };
                    let item_path = join_path(path, key);
                    match key {
                        $( stringify!($field) => section.$field = Field::decode(item, &item_path, cx), )*
                        _ => cx.unknown_field(&item_path, Self::FIELDS),
                    }
                }
                Some(section)
            }
        }
    };
}

section! {
    /// `server:`.
    struct RawServer {
        host: IpAddr,
        port: Port,
        shutdown_timeout: Duration,
        max_body_bytes: i128,
        sse_keepalive: Duration,
        max_sse_event_bytes: i128,
        connect_timeout: Duration,
        request_timeout: Duration,
        /// Ours: from sending a request upstream to its response head.
        first_byte_timeout: Duration,
        /// Ours: the longest silence inside an upstream stream.
        idle_timeout: Duration,
        /// Ours: serve and feed `/metrics`.
        metrics: bool,
    }
}

section! {
    /// One item of `models:`.
    struct RawModel {
        id: i128,
        name: String,
        provider_model_name: String,
        display_name: String,
        description: String,
        supports_chat: bool,
        supports_completion: bool,
        supports_embedding: bool,
        supports_image_gen: bool,
        supports_image_edit: bool,
        supports_image_var: bool,
        supports_input_image: bool,
        supports_audio_trans: bool,
        supports_audio_trans2: bool,
        support_google_thinking: bool,
        rpm: i128,
        rph: i128,
        rpd: i128,
        tpm: i128,
        tph: i128,
        tpd: i128,
        created_at: Unused,
        updated_at: Unused,
        input_price_per_token: f64,
        output_price_per_token: f64,
        /// Ours: USD per prompt token read from the provider's cache.
        cached_input_price_per_token: f64,
        max_tokens: i128,
        context_length: i128,
        supported_parameters: Vec<String>,
        /// Ours: the adapter's registered name.
        provider: String,
        provider_api_key: Vec<Secret>,
        is_openai_compatibility: bool,
        base_url: String,
        base_url_direct: bool,
        stream_only: bool,
        enabled: bool,
        visible: bool,
        /// Ours: the entry's own upstream timeouts, overriding the server's.
        connect_timeout: Duration,
        first_byte_timeout: Duration,
        idle_timeout: Duration,
        request_timeout: Duration,
    }
}

section! {
    /// One item of `api_keys:`.
    struct RawApiKey {
        id: i128,
        key: Secret,
        name: String,
        is_active: bool,
        user_id: i128,
        expires_at: OffsetDateTime,
        rps: i128,
        rpm: i128,
        rph: i128,
        rpd: i128,
        tps: i128,
        tpm: i128,
        tph: i128,
        tpd: i128,
        /// Ours: spend allowed per `budget_period`.
        max_budget_usd: f64,
        /// Ours.
        budget_period: BudgetPeriod,
        /// Ours: may read every key's usage.
        admin: bool,
    }
}

section! {
    /// `limits:` (ours).
    struct RawLimits {
        default_output_tokens: i128,
        database: String,
        flush_interval: Duration,
        /// Keep the usage ledger and counters in `database`.
        ledger: bool,
        /// `memory` or `redis`.
        backend: String,
        redis: RawRedis,
        /// A PostgreSQL URL for the shared ledger.
        ledger_url: Secret,
    }
}

section! {
    /// `limits.redis:` (ours).
    struct RawRedis {
        url: Secret,
        key_prefix: String,
        connect_timeout: Duration,
        command_timeout: Duration,
        /// `fail_open` or `fail_closed`.
        on_unavailable: String,
        replicas: i128,
    }
}

section! {
    /// `retry:` (ours).
    struct RawRetry {
        max_attempts: i128,
        max_retry_time: Duration,
        backoff_base: Duration,
        backoff_max: Duration,
        budget_ratio: f64,
        budget_min_per_second: i128,
    }
}

section! {
    /// `cooldown:` (ours).
    struct RawCooldown {
        rate_limited: Duration,
        failures_to_open: i128,
        open_for: Duration,
    }
}

/// The whole file.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub server: Field<RawServer>,
    pub models: Field<Entries<RawModel>>,
    pub api_keys: Field<Entries<RawApiKey>>,
    pub limits: Field<RawLimits>,
    pub retry: Field<RawRetry>,
    pub cooldown: Field<RawCooldown>,
}

impl RawConfig {
    pub(super) const FIELDS: &'static [&'static str] = &[
        "server", "models", "api_keys", "limits", "retry", "cooldown",
    ];

    /// Walks the document. Problems land in `cx`; what could be read is returned.
    pub(super) fn decode(document: &Value, cx: &mut Ctx<'_>) -> Self {
        const EXPECTED: &str = "a mapping with `server`, `models`, `api_keys` and `limits`";
        let mut config = Self::default();
        let mapping = match document {
            Value::Mapping(mapping) => mapping,
            Value::Null => {
                cx.error("", format!("the file is empty; expected {EXPECTED}"));
                return config;
            }
            other => {
                cx.error(
                    "",
                    format!(
                        "expected {EXPECTED} at the top level, found {}",
                        describe(other)
                    ),
                );
                return config;
            }
        };
        for (key, item) in mapping {
            let Some(key) = cx.key_name(key, "") else {
                continue;
            };
            match key {
                "server" => config.server = Field::decode(item, key, cx),
                "models" => config.models = Field::decode(item, key, cx),
                "api_keys" => config.api_keys = Field::decode(item, key, cx),
                "limits" => config.limits = Field::decode(item, key, cx),
                "retry" => config.retry = Field::decode(item, key, cx),
                "cooldown" => config.cooldown = Field::decode(item, key, cx),
                // Room for YAML anchors shared through `<<` merges, as in
                // docker compose files: `x-defaults: &defaults {...}`.
                _ if key.starts_with("x-") => {}
                _ => cx.unknown_field(key, Self::FIELDS),
            }
        }
        config
    }
}

/// A value's kind for messages. Strings are never quoted: they may be secrets.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(flag) => format!("the boolean `{flag}`"),
        Value::Number(number) => format!("the number {number}"),
        Value::String(_) => "a string".to_owned(),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged `{}`", tagged.tag),
    }
}

/// The known key closest to a misspelt one, if it is close enough to be a typo.
pub(super) fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let normalized = name.to_ascii_lowercase().replace('-', "_");
    let allowed = (normalized.chars().count() / 3).max(1);
    known
        .iter()
        .map(|candidate| (edit_distance(&normalized, candidate), *candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance counting a swap of two neighbours as one edit (optimal
/// string alignment), since `prot` for `port` is as much a typo as `pot`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // distances[i][j]: distance between the first i chars of a and the first j of b.
    let mut distances = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in distances.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in distances[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = distances[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitution
                .min(distances[i - 1][j] + 1)
                .min(distances[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(distances[i - 2][j - 2] + 1);
            }
            distances[i][j] = best;
        }
    }
    distances[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("9000".to_owned()),
            "SECRET" => Some("sk-from-env".to_owned()),
            _ => None,
        }
    }

    /// Decodes `yaml` as a `T` at path `field`; returns the value (or None)
    /// and the problems as `path: message` strings.
    fn decode<T: FromYaml>(yaml: &str) -> (Option<T>, Vec<String>) {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        let mut cx = Ctx::new(&env);
        let decoded = T::from_yaml(&value, "field", &mut cx);
        let problems = cx
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        (decoded, problems)
    }

    fn check<T: FromYaml + PartialEq + std::fmt::Debug>(yaml: &str, expected: Result<T, &[&str]>) {
        let (decoded, problems) = decode::<T>(yaml);
        match expected {
            Ok(value) => {
                assert_eq!(problems, Vec::<String>::new(), "yaml: {yaml}");
                assert_eq!(decoded, Some(value), "yaml: {yaml}");
            }
            Err(messages) => {
                assert_eq!(problems, messages, "yaml: {yaml}");
                assert_eq!(decoded, None, "yaml: {yaml}");
            }
        }
    }

    #[test]
    fn booleans() {
        check("true", Ok(true));
        check("false", Ok(false));
        check("yes", Ok(true));
        check("Off", Ok(false));
        check::<bool>(
            "1",
            Err(&["field: expected `true` or `false`, found the number 1"]),
        );
        check::<bool>(
            "\"sure\"",
            Err(&["field: expected `true` or `false`, found a string"]),
        );
        check::<bool>(
            "[true]",
            Err(&["field: expected `true` or `false`, found a list"]),
        );
    }

    #[test]
    fn strings() {
        check("abc", Ok("abc".to_owned()));
        check("8316", Ok("8316".to_owned()));
        check("1.5", Ok("1.5".to_owned()));
        check("true", Ok("true".to_owned()));
        check("\"${SECRET}\"", Ok("sk-from-env".to_owned()));
        check("\"$${SECRET}\"", Ok("${SECRET}".to_owned()));
        check::<String>(
            "{a: 1}",
            Err(&["field: expected a string, found a mapping"]),
        );
        check::<String>(
            "\"${NOPE}-${ALSO_NOPE}\"",
            Err(&[
                "field: environment variable `NOPE` is not set",
                "field: environment variable `ALSO_NOPE` is not set",
            ]),
        );
    }

    #[test]
    fn integers() {
        check("5", Ok(5i128));
        check("-5", Ok(-5i128));
        check("0x10", Ok(16i128));
        check("18446744073709551615", Ok(i128::from(u64::MAX)));
        check("1_000_000", Ok(1_000_000i128));
        check::<i128>(
            "1.5",
            Err(&["field: expected an integer, found the number 1.5"]),
        );
        check::<i128>(
            "\"5\"",
            Err(&["field: expected an integer, found a string (write it without quotes)"]),
        );
        check::<i128>("five", Err(&["field: expected an integer, found a string"]));
        check::<i128>(
            "~",
            Err(&["field: expected an integer, found nothing (null)"]),
        );
    }

    #[test]
    fn floats() {
        check("0.000001", Ok(0.000_001f64));
        check("3", Ok(3.0f64));
        check("-2", Ok(-2.0f64));
        check::<f64>("cheap", Err(&["field: expected a number, found a string"]));
        check::<f64>(
            "\"0.5\"",
            Err(&["field: expected a number, found a string (write it without quotes)"]),
        );
        // YAML writes these `.nan` and `.inf`; the bare words are strings.
        check::<f64>("nan", Err(&["field: expected a number, found a string"]));
        check::<f64>("inf", Err(&["field: expected a number, found a string"]));
        check::<f64>(
            "true",
            Err(&["field: expected a number, found the boolean `true`"]),
        );
    }

    #[test]
    fn budget_periods() {
        check("day", Ok(BudgetPeriod::Day));
        check("month", Ok(BudgetPeriod::Month));
        check("\"month\"", Ok(BudgetPeriod::Month));
        check::<BudgetPeriod>(
            "week",
            Err(&["field: expected `day` or `month`, found a string"]),
        );
        check::<BudgetPeriod>(
            "Month",
            Err(&["field: expected `day` or `month`, found a string; did you mean `month`?"]),
        );
        check::<BudgetPeriod>(
            "mnth",
            Err(&["field: expected `day` or `month`, found a string; did you mean `month`?"]),
        );
        check::<BudgetPeriod>(
            "daily",
            Err(&["field: expected `day` or `month`, found a string; did you mean `day`?"]),
        );
        check::<BudgetPeriod>(
            "monthly",
            Err(&["field: expected `day` or `month`, found a string; did you mean `month`?"]),
        );
        check::<BudgetPeriod>(
            "\"\"",
            Err(&["field: expected `day` or `month`, found an empty string"]),
        );
        check::<BudgetPeriod>(
            "30",
            Err(&["field: expected `day` or `month`, found the number 30"]),
        );
        check::<BudgetPeriod>(
            "\"${NOPE}\"",
            Err(&["field: environment variable `NOPE` is not set"]),
        );
    }

    #[test]
    fn lists_report_every_bad_item() {
        check("[a, b]", Ok(vec!["a".to_owned(), "b".to_owned()]));
        check("[]", Ok(Vec::<String>::new()));
        check::<Vec<String>>(
            "[a, [b], {c: 1}]",
            Err(&[
                "field[1]: expected a string, found a list",
                "field[2]: expected a string, found a mapping",
            ]),
        );
        check::<Vec<String>>("a", Err(&["field: expected a list, found a string"]));
        check::<Vec<bool>>(
            "[true, ~]",
            Err(&["field[1]: expected `true` or `false`, found nothing (null)"]),
        );
    }

    #[test]
    fn secrets_are_never_echoed() {
        let (decoded, problems) = decode::<Vec<Secret>>("sk-live-123");
        assert!(decoded.is_none());
        assert_eq!(problems, ["field: expected a list, found a string"]);
        let (decoded, problems) = decode::<Secret>("[sk-live-123]");
        assert!(decoded.is_none());
        assert_eq!(problems, ["field: expected a string, found a list"]);
        let (decoded, _) = decode::<Secret>("${SECRET}");
        assert_eq!(
            decoded.map(|s| s.expose().to_owned()),
            Some("sk-from-env".to_owned())
        );
    }

    #[test]
    fn durations() {
        check("10s", Ok(Duration::from_secs(10)));
        check("1m30s", Ok(Duration::from_secs(90)));
        check("500ms", Ok(Duration::from_millis(500)));
        check::<Duration>(
            "10",
            Err(&["field: expected a duration such as `10s`, `1m30s` or `500ms` (units: ns, us, ms, s, \
                   m, h), found the bare number 10 (add a unit, e.g. `10s`)"]),
        );
        check::<Duration>(
            "10 seconds",
            Err(&["field: expected a duration such as `10s`, `1m30s` or `500ms` (units: ns, us, ms, s, \
                   m, h), found `10 seconds`"]),
        );
        check::<Duration>("-1s", Err(&["field: must not be negative"]));
        check::<Duration>(
            "1.5",
            Err(&["field: expected a duration such as `10s`, `1m30s` or `500ms` (units: ns, us, ms, s, \
                   m, h), found the number 1.5"]),
        );
    }

    #[test]
    fn ports_and_hosts() {
        check("8316", Ok(Port(8316)));
        check("\"8316\"", Ok(Port(8316)));
        check("\"${PORT}\"", Ok(Port(9000)));
        check("0", Ok(Port(0)));
        check::<Port>(
            "70000",
            Err(&["field: expected a port number from 0 to 65535, found 70000"]),
        );
        check::<Port>(
            "-1",
            Err(&["field: expected a port number from 0 to 65535, found -1"]),
        );
        check::<Port>(
            "http",
            Err(&["field: expected a port number from 0 to 65535, found `http`"]),
        );
        check::<Port>(
            "[1]",
            Err(&["field: expected a port number from 0 to 65535, found a list"]),
        );
        check("127.0.0.1", Ok(IpAddr::from([127, 0, 0, 1])));
        check("\"::\"", Ok(IpAddr::from([0u16; 8])));
        check::<IpAddr>(
            "localhost",
            Err(&["field: expected an IP address such as `127.0.0.1`, `0.0.0.0` or `::`, found `localhost`"]),
        );
    }

    #[test]
    fn timestamps() {
        check(
            "2030-01-02T03:04:05Z",
            Ok(time::macros::datetime!(2030-01-02 03:04:05 UTC)),
        );
        check(
            "2030-01-02",
            Ok(time::macros::datetime!(2030-01-02 0:00 UTC)),
        );
        check::<OffsetDateTime>(
            "soon",
            Err(&["field: expected a timestamp such as `2025-12-31T23:59:59Z`, `2025-12-31 23:59:59` \
                   or `2025-12-31`, found `soon`"]),
        );
    }

    #[test]
    fn sections_report_unknown_fields_with_a_suggestion() {
        let (section, problems) = decode::<RawServer>("prot: 1\nhost: ::1\nfoo: 2\nHost: x\n");
        assert!(matches!(section.map(|s| s.host), Some(Field::Set(_))));
        assert_eq!(
            problems,
            [
                "field.prot: unknown field, did you mean `port`?",
                "field.foo: unknown field",
                "field.Host: unknown field, did you mean `host`?",
            ]
        );
        let (_, problems) = decode::<RawServer>("1: x\n");
        assert_eq!(
            problems,
            ["field: field names must be strings, found the number 1"]
        );
        let (section, problems) = decode::<RawServer>("[]");
        assert!(section.is_none());
        assert_eq!(
            problems,
            ["field: expected a mapping of `key: value` fields, found a list"]
        );
    }

    #[test]
    fn limits_section_reports_unknown_fields() {
        let (section, problems) =
            decode::<RawLimits>("databse: a.db\nflush_interval: 2s\nmax_tokens: 5\n");
        let section = section.unwrap();
        assert!(matches!(section.database, Field::Absent));
        assert!(matches!(section.flush_interval, Field::Set(d) if d == Duration::from_secs(2)));
        assert_eq!(
            problems,
            [
                "field.databse: unknown field, did you mean `database`?",
                "field.max_tokens: unknown field",
            ]
        );
    }

    #[test]
    fn null_fields_are_absent() {
        let (section, problems) = decode::<RawModel>("name: ~\nenabled:\n");
        let section = section.unwrap();
        assert!(problems.is_empty());
        assert!(matches!(section.name, Field::Absent));
        assert!(matches!(section.enabled, Field::Absent));
    }

    #[test]
    fn suggestions() {
        let known = RawModel::FIELDS;
        let cases = [
            ("bse_url", Some("base_url")),
            ("base-url", Some("base_url")),
            ("BASE_URL", Some("base_url")),
            ("nme", Some("name")),
            ("enable", Some("enabled")),
            ("provider_api_keys", Some("provider_api_key")),
            ("suports_chat", Some("supports_chat")),
            ("rpx", Some("rpm")),
            ("colour", None),
            ("x", None),
        ];
        for (name, expected) in cases {
            assert_eq!(closest(name, known), expected, "name {name}");
        }
        assert_eq!(closest("model", RawConfig::FIELDS), Some("models"));
        assert_eq!(closest("api_key", RawConfig::FIELDS), Some("api_keys"));
        assert_eq!(closest("limit", RawConfig::FIELDS), Some("limits"));
        assert_eq!(
            closest("budget_perod", RawApiKey::FIELDS),
            Some("budget_period")
        );
        assert_eq!(
            closest("max_budget_us", RawApiKey::FIELDS),
            Some("max_budget_usd")
        );
        assert_eq!(closest("Admin", RawApiKey::FIELDS), Some("admin"));
        assert_eq!(
            closest("cache_input_price_per_token", RawModel::FIELDS),
            Some("cached_input_price_per_token")
        );
        assert_eq!(
            closest("flush-interval", RawLimits::FIELDS),
            Some("flush_interval")
        );
        assert_eq!(closest("databse", RawLimits::FIELDS), Some("database"));
        assert_eq!(closest("ledgr", RawLimits::FIELDS), Some("ledger"));
        assert_eq!(closest("Ledger", RawLimits::FIELDS), Some("ledger"));
        assert_eq!(closest("metric", RawServer::FIELDS), Some("metrics"));
        assert_eq!(closest("matrics", RawServer::FIELDS), Some("metrics"));
        assert_eq!(
            closest("default_output_token", RawLimits::FIELDS),
            Some("default_output_tokens")
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("prot", "port"), 1);
    }
}
