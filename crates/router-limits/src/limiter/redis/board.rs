//! Provider key health shared through Redis: the [`HealthBoard`] of
//! replicas that share a [`RedisLimiter`](super::RedisLimiter).
//!
//! A change (a 429 rest, a key refused with 401/403, a circuit opened or
//! closed) is written to one hash, `{prefix}h`, and published on the
//! channel `{prefix}health` in one atomic pipeline (`MULTI` … `EXEC`): one
//! round trip, awaited before the request that learnt it answers, so the
//! other replicas have it in their sockets before that client can send its
//! next request. Each replica subscribes to the channel and applies what it
//! hears to its own atomics; it reads the hash whenever it (re)subscribes,
//! so a replica that starts, or comes back after an outage, learns what it
//! missed.
//!
//! Fields are `{entry}:{provider key}|{kind}` — the entry by id (or name and
//! position), the key by fingerprint, never the secret — and values the
//! Unix time in milliseconds until which the state holds. Replicas compare
//! that with their own clock, which is as good as their clocks agree (NTP
//! keeps them within milliseconds; rests last seconds). The hash expires a
//! day after its last change and holds at most three fields per configured
//! key, so Redis never grows without bound; a disabled key stays disabled
//! on every replica for [`DISABLED_FOR`] or until the config changes its
//! key.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubStream;
use router_core::config::Config;
use router_core::health_board::{HealthBoard, HealthChange, HealthListener, HealthNotice, Publish};
use time::OffsetDateTime;

use super::{entry_owner, Shared, PROBE_INTERVAL};
use crate::limiter::provider_key_ids;

/// How long a key refused by the upstream stays disabled on every replica.
pub const DISABLED_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the hash lives after its last change.
const HASH_TTL: Duration = DISABLED_FOR;

/// The kinds of state, as the suffix of a field.
const REST: &str = "rest";
const OPEN: &str = "open";
const DISABLED: &str = "disabled";

/// Provider key health shared by every replica through Redis.
pub struct RedisHealthBoard {
    shared: Arc<Shared>,
    hash: String,
    channel: String,
    /// Tells this replica's own messages apart (it applied them already).
    replica: u64,
    /// Wire ids by entry index, then provider key index (0 for an entry
    /// without keys); `None` for an entry that is not enabled.
    ids: Box<[Option<Box<[String]>>]>,
    /// The other way round.
    keys: HashMap<String, (usize, Option<usize>)>,
}

impl fmt::Debug for RedisHealthBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHealthBoard")
            .field("hash", &self.hash)
            .field("channel", &self.channel)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl RedisHealthBoard {
    pub(super) fn new(shared: Arc<Shared>, config: &Config, prefix: &str) -> Self {
        let mut keys = HashMap::new();
        let ids = config
            .models
            .iter()
            .map(|entry| {
                if !entry.enabled {
                    return None;
                }
                let owner = entry_owner(entry);
                let with_keys = !entry.provider_api_keys.is_empty();
                let ids: Box<[String]> = provider_key_ids(entry)
                    .into_iter()
                    .enumerate()
                    .map(|(position, key)| {
                        let id = format!("{owner}:{key}");
                        keys.insert(id.clone(), (entry.index, with_keys.then_some(position)));
                        id
                    })
                    .collect();
                Some(ids)
            })
            .collect();
        Self {
            shared,
            hash: format!("{prefix}h"),
            channel: format!("{prefix}health"),
            replica: random_u64(),
            ids,
            keys,
        }
    }

    fn id(&self, notice: &HealthNotice) -> Option<&str> {
        let ids = self.ids.get(notice.entry_index)?.as_ref()?;
        ids.get(notice.provider_key.unwrap_or(0))
            .map(String::as_str)
    }

    /// Hands what other replicas publish to `listener`, from a task of its
    /// own, until the listener is dropped. Returns once the first
    /// subscription has read what other replicas published before (or has
    /// failed, bounded by the connect and command timeouts), so a replica
    /// that starts late serves with what the others know. Reconnects by
    /// itself after an outage, and reads what it missed each time it
    /// subscribes. Must be called inside a tokio runtime.
    pub async fn listen(self: &Arc<Self>, listener: Weak<dyn HealthListener>) {
        let first = self.subscribe(&listener).await;
        let board = Arc::clone(self);
        tokio::spawn(async move {
            let mut subscribed = first;
            loop {
                match subscribed {
                    Ok(messages) => board.relay(messages, &listener).await,
                    Err(why) => tracing::debug!(reason = %why, "health board: not subscribed"),
                }
                if listener.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
                subscribed = board.subscribe(&listener).await;
            }
        });
    }

    /// Subscribes, then applies what the hash holds: a change made in
    /// between is both in the hash and heard, and applying it twice is
    /// harmless, whereas the other order could miss one.
    async fn subscribe(&self, listener: &Weak<dyn HealthListener>) -> Result<PubSubStream, String> {
        let timeout = self.shared.connect_timeout;
        let mut pubsub = tokio::time::timeout(timeout, self.shared.client.get_async_pubsub())
            .await
            .map_err(|_| "no connection within limits.redis.connect_timeout".to_owned())?
            .map_err(|error| super::describe(&error))?;
        tokio::time::timeout(timeout, pubsub.subscribe(&self.channel))
            .await
            .map_err(|_| "no answer to SUBSCRIBE".to_owned())?
            .map_err(|error| super::describe(&error))?;
        self.apply_snapshot(listener).await?;
        Ok(pubsub.into_on_message())
    }

    /// Applies what other replicas publish until the connection ends or
    /// the listener is gone.
    async fn relay(&self, mut messages: PubSubStream, listener: &Weak<dyn HealthListener>) {
        while let Some(message) = messages.next().await {
            let Some(listener) = listener.upgrade() else {
                return;
            };
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            if let Some(notice) = self.read_message(&payload, now_millis()) {
                listener.apply(notice);
            }
        }
    }

    async fn apply_snapshot(&self, listener: &Weak<dyn HealthListener>) -> Result<(), String> {
        let Some(connection) = self.shared.connection.load_full() else {
            return Err("no connection yet".to_owned());
        };
        let mut connection = (*connection).clone();
        let fields: HashMap<String, String> = tokio::time::timeout(
            self.shared.command_timeout,
            redis::cmd("HGETALL")
                .arg(&self.hash)
                .query_async(&mut connection),
        )
        .await
        .map_err(|_| "no answer to HGETALL".to_owned())?
        .map_err(|error| super::describe(&error))?;
        let Some(listener) = listener.upgrade() else {
            return Ok(());
        };
        let now = now_millis();
        for (field, until) in &fields {
            if let Some(notice) = self.read_field(field, until, now) {
                listener.apply(notice);
            }
        }
        Ok(())
    }

    /// A message is `{replica} {field} {until}`.
    fn read_message(&self, payload: &str, now: i64) -> Option<HealthNotice> {
        let mut parts = payload.splitn(3, ' ');
        let replica: u64 = parts.next()?.parse().ok()?;
        if replica == self.replica {
            return None;
        }
        self.read_field(parts.next()?, parts.next()?, now)
    }

    fn read_field(&self, field: &str, until: &str, now: i64) -> Option<HealthNotice> {
        let (id, kind) = field.rsplit_once('|')?;
        let &(entry_index, provider_key) = self.keys.get(id)?;
        let until: i64 = until.parse().ok()?;
        if kind == OPEN && until == 0 {
            return Some(HealthNotice {
                entry_index,
                provider_key,
                change: HealthChange::Closed,
            });
        }
        let left = Duration::from_millis(u64::try_from(until.checked_sub(now)?).ok()?);
        let change = match kind {
            REST if !left.is_zero() => HealthChange::Rest(left),
            OPEN if !left.is_zero() => HealthChange::Open(left),
            DISABLED if !left.is_zero() => HealthChange::Disabled,
            _ => return None,
        };
        Some(HealthNotice {
            entry_index,
            provider_key,
            change,
        })
    }

    async fn send(&self, notice: HealthNotice) -> Result<(), String> {
        let Some(id) = self.id(&notice) else {
            return Ok(());
        };
        if !self.shared.available.load(Ordering::Acquire) {
            return Err("redis is down".to_owned());
        }
        let Some(connection) = self.shared.connection.load_full() else {
            return Err("no connection yet".to_owned());
        };
        let now = now_millis();
        let until = |for_: Duration| {
            now.saturating_add(i64::try_from(for_.as_millis()).unwrap_or(i64::MAX))
        };
        let (kind, until) = match notice.change {
            HealthChange::Rest(for_) => (REST, until(for_)),
            HealthChange::Open(for_) => (OPEN, until(for_)),
            HealthChange::Closed => (OPEN, 0),
            HealthChange::Disabled => (DISABLED, until(DISABLED_FOR)),
        };
        let field = format!("{id}|{kind}");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&self.hash, &field, until)
            .ignore()
            .pexpire(
                &self.hash,
                i64::try_from(HASH_TTL.as_millis()).unwrap_or(i64::MAX),
            )
            .ignore()
            .publish(&self.channel, format!("{} {field} {until}", self.replica))
            .ignore();
        let mut connection = (*connection).clone();
        match tokio::time::timeout(
            self.shared.command_timeout,
            pipe.query_async::<()>(&mut connection),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(super::describe(&error)),
            Err(_) => Err("no answer within limits.redis.command_timeout".to_owned()),
        }
    }
}

impl HealthBoard for RedisHealthBoard {
    fn publish(&self, notice: HealthNotice) -> Publish<'_> {
        Box::pin(async move {
            if let Err(why) = self.send(notice).await {
                // The other replicas learn it from their own requests.
                tracing::debug!(reason = %why, "health board: a change was not shared");
            }
        })
    }
}

fn now_millis() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// 64 random bits from std's randomly seeded hasher: enough to tell
/// replicas apart.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> RedisHealthBoard {
        let config = router_core::config::parse(
            std::path::Path::new("board.yaml"),
            "models:\n  - name: m\n    provider: mock\n    enabled: true\n    \
             provider_api_key: [a, b]\n  - name: n\n    provider: mock\n    enabled: true\n",
            &|_| None,
        )
        .unwrap();
        let redis = router_core::config::RedisConfig::new(router_core::Secret::new(
            "redis://127.0.0.1:1/0",
        ));
        let limiter = super::super::RedisLimiter::new(&config, &redis).unwrap();
        limiter.health_board(&config)
    }

    #[test]
    fn fields_name_entries_and_keys_without_secrets_and_read_back() {
        let board = board();
        let fingerprint = crate::limiter::fingerprint("b");
        assert_eq!(
            board.ids[0].as_ref().unwrap()[1],
            format!("m#0:{fingerprint}")
        );
        let field = format!("m#0:{fingerprint}|rest");
        assert_eq!(
            board.read_field(&field, "11000", 1000),
            Some(HealthNotice {
                entry_index: 0,
                provider_key: Some(1),
                change: HealthChange::Rest(Duration::from_secs(10)),
            })
        );
        // Past, unknown or malformed: nothing to apply.
        assert_eq!(board.read_field(&field, "900", 1000), None);
        assert_eq!(board.read_field("m#0:0000|rest", "11000", 1000), None);
        assert_eq!(board.read_field(&field, "soon", 1000), None);
        let closed = board.read_field("n#1:nokey|open", "0", 1000).unwrap();
        assert_eq!((closed.entry_index, closed.provider_key), (1, None));
        assert_eq!(closed.change, HealthChange::Closed);
    }

    #[test]
    fn a_replica_ignores_its_own_messages() {
        let board = board();
        let field = format!("m#0:{}|disabled", crate::limiter::fingerprint("a"));
        let own = format!("{} {field} 5000", board.replica);
        let other = format!("{} {field} 5000", board.replica.wrapping_add(1));
        assert_eq!(board.read_message(&own, 1000), None);
        assert_eq!(
            board.read_message(&other, 1000).map(|notice| notice.change),
            Some(HealthChange::Disabled)
        );
    }
}
