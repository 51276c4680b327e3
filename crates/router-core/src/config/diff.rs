//! What a reloaded config changes, as an operator reads it: models and
//! client keys added, removed and changed (named by name and id or
//! position, never by a secret), and the settings that only a restart
//! applies.

use serde::Serialize;

use super::{ClientKeyConfig, Config, ModelEntry};

/// What changed between the running config and a reloaded one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigChanges {
    pub models: Changes,
    pub keys: Changes,
    /// Field paths whose new value is ignored until the router restarts
    /// (the listen address, the ledger, the limits backend, the HTTP
    /// server's settings); the running value stays in force.
    pub needs_restart: Vec<String>,
}

impl ConfigChanges {
    /// Whether the reload changed nothing at all.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty() && self.keys.is_empty() && self.needs_restart.is_empty()
    }
}

/// Labels of what was added, removed or changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares the running config with a reloaded one.
pub fn diff(old: &Config, new: &Config) -> ConfigChanges {
    ConfigChanges {
        models: changes(
            &old.models,
            &new.models,
            same_entry_identity,
            same_entry,
            entry_label,
        ),
        keys: changes(
            &old.api_keys,
            &new.api_keys,
            same_key_identity,
            same_key,
            key_label,
        ),
        needs_restart: needs_restart(old, new),
    }
}

fn changes<T>(
    old: &[T],
    new: &[T],
    same_identity: fn(&T, &T) -> bool,
    same: fn(&T, &T) -> bool,
    label: fn(&T) -> String,
) -> Changes {
    let mut changes = Changes::default();
    for item in new {
        match old.iter().find(|before| same_identity(before, item)) {
            None => changes.added.push(label(item)),
            Some(before) if !same(before, item) => changes.changed.push(label(item)),
            Some(_) => {}
        }
    }
    for item in old {
        if !new.iter().any(|after| same_identity(item, after)) {
            changes.removed.push(label(item));
        }
    }
    changes
}

/// Entries are the same entry by `id`, or without ids by name and position
/// (as the engine carries their state over).
fn same_entry_identity(a: &ModelEntry, b: &ModelEntry) -> bool {
    if a.id != 0 || b.id != 0 {
        a.id == b.id
    } else {
        a.name == b.name && a.index == b.index
    }
}

fn same_entry(a: &ModelEntry, b: &ModelEntry) -> bool {
    let keys_equal = a.provider_api_keys.len() == b.provider_api_keys.len()
        && a.provider_api_keys
            .iter()
            .zip(&b.provider_api_keys)
            .all(|(x, y)| x.expose() == y.expose());
    // Debug masks the keys (compared above) and covers every other field;
    // the position alone moving is not a change.
    let (mut a, mut b) = (a.clone(), b.clone());
    (a.index, b.index) = (0, 0);
    keys_equal && format!("{a:?}") == format!("{b:?}")
}

fn entry_label(entry: &ModelEntry) -> String {
    if entry.id != 0 {
        format!("{} (id {})", entry.name, entry.id)
    } else {
        format!("{} (models[{}])", entry.name, entry.index)
    }
}

/// Client keys are the same key by `id`, or without ids by the key itself.
fn same_key_identity(a: &ClientKeyConfig, b: &ClientKeyConfig) -> bool {
    if a.id != 0 || b.id != 0 {
        a.id == b.id
    } else {
        a.key.expose() == b.key.expose()
    }
}

fn same_key(a: &ClientKeyConfig, b: &ClientKeyConfig) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    (a.index, b.index) = (0, 0);
    a.key.expose() == b.key.expose() && format!("{a:?}") == format!("{b:?}")
}

/// A key by name and id, or its position: never the key.
fn key_label(key: &ClientKeyConfig) -> String {
    match (key.name.is_empty(), key.id) {
        (false, 0) => format!("{} (api_keys[{}])", key.name, key.index),
        (false, id) => format!("{} (id {id})", key.name),
        (true, 0) => format!("api_keys[{}]", key.index),
        (true, id) => format!("id {id}"),
    }
}

fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut paths = Vec::new();
    let mut check = |path: &str, same: bool| {
        if !same {
            paths.push(path.to_owned());
        }
    };
    let (a, b) = (&old.server, &new.server);
    check("server.host", a.host == b.host);
    check("server.port", a.port == b.port);
    check(
        "server.shutdown_timeout",
        a.shutdown_timeout == b.shutdown_timeout,
    );
    check(
        "server.max_body_bytes",
        a.max_body_bytes == b.max_body_bytes,
    );
    check("server.sse_keepalive", a.sse_keepalive == b.sse_keepalive);
    check(
        "server.max_sse_event_bytes",
        a.max_sse_event_bytes == b.max_sse_event_bytes,
    );
    check("server.metrics", a.metrics == b.metrics);
    let (a, b) = (&old.limits, &new.limits);
    check("limits.database", a.database == b.database);
    check(
        "limits.flush_interval",
        a.flush_interval == b.flush_interval,
    );
    check("limits.ledger", a.ledger == b.ledger);
    check("limits.backend", a.backend == b.backend);
    check(
        "limits.ledger_url",
        a.ledger_url.as_ref().map(|url| url.expose())
            == b.ledger_url.as_ref().map(|url| url.expose()),
    );
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        super::super::parse(Path::new("diff.yaml"), text, &|_| None).unwrap()
    }

    const BASE: &str = "server:\n  port: 8000\nmodels:\n  - name: a\n    provider: mock\n    enabled: true\n  - name: b\n    id: 7\n    provider: mock\n    enabled: true\n    provider_api_key: [pk-1]\napi_keys:\n  - key: sk-one\n    name: one\n  - key: sk-two\n    id: 2\n    name: two\n";

    #[test]
    fn an_identical_config_changes_nothing() {
        assert!(diff(&config(BASE), &config(BASE)).is_empty());
    }

    #[test]
    fn models_and_keys_are_named_never_by_their_secrets() {
        let new = BASE
            .replace("[pk-1]", "[pk-2]")
            .replace("  - key: sk-one\n    name: one\n", "")
            .replace(
                "name: two\n",
                "name: two\n    rpm: 5\n  - key: sk-three\n    name: three\n",
            )
            .replace("port: 8000", "port: 8001");
        let changes = diff(&config(BASE), &config(&new));
        assert_eq!(changes.models.changed, ["b (id 7)"]);
        assert_eq!(
            changes.keys,
            Changes {
                added: vec!["three (api_keys[1])".to_owned()],
                removed: vec!["one (api_keys[0])".to_owned()],
                changed: vec!["two (id 2)".to_owned()],
            }
        );
        assert_eq!(changes.needs_restart, ["server.port"]);
        let text = format!("{changes:?}");
        for secret in ["sk-one", "sk-two", "sk-three", "pk-1", "pk-2"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
