//! The shared limiter: every limit's counter in one Redis (or Valkey), so
//! that N replicas enforce one limit, not N times it.
//!
//! # One round trip per admission
//!
//! An admission is one `EVALSHA` of `redis.lua`, which checks every limit of
//! the client key and of the provider key and reserves all or none, exactly
//! like [`MemoryLimiter`]. Redis runs a script atomically, so admissions of
//! different replicas never interleave inside it. The script is loaded once
//! and reloaded by itself after a `NOSCRIPT` (a restarted or flushed Redis).
//! Settling a permit is one more call, sent from a task of its own so that
//! no answer waits for it.
//!
//! # Keys
//!
//! Every key starts with `limits.redis.key_prefix` and names its limit by
//! fingerprints and ids, never by a secret, the same ids the memory limiter
//! persists (`router:l:key:1a2b…:rpm`, `router:l:model:7:9c8d…:tpd:2026-12-04`).
//! Every key carries a TTL: a rolling limit's key lives until its window is
//! whole again, a calendar counter until a day after its period.
//!
//! # Semantics, and where they differ from memory
//!
//! Rolling windows are GCRA on Redis' clock, in microseconds; day and month
//! windows and budgets are counters per UTC period (the period read from
//! this replica's clock). A token reservation that used less gives the
//! difference back, but never into the past: the memory limiter also bounds
//! a refund by the least the queue held since the reservation, which a
//! script run per request cannot know without a history per key; here a
//! refund after the queue has run empty hands back slightly more.
//!
//! # When Redis does not answer
//!
//! Every call is bounded by `command_timeout`. The first failure marks Redis
//! down (one warning, however many requests follow) and a probe task pings
//! it until it answers again; meanwhile admissions do not wait for it:
//! under `fail_open` they go to an in-memory limiter holding this replica's
//! share of every limit (`limit / limits.redis.replicas`), under
//! `fail_closed` they are refused with [`AdmitError::Unavailable`]. Once the
//! probe succeeds, admissions use Redis again; its counters are exact again
//! from the next window.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use router_core::config::{ClientKeyConfig, Config, OnUnavailable, RedisConfig};
use router_core::limits::{
    Admission, AdmitError, Demand, Headroom, LimitName, Limiter, Measure, Permit, RateInfo,
    Refusal, Reservation, Scope, Settlement, SharedLimitsStats,
};
use time::OffsetDateTime;

use super::calendar::{Calendar, CalendarNow};
use super::{
    key_specs, micro_usd, model_specs, presentation_order, provider_key_ids, worst, Amounts,
    DemandAt, LimitSpec, MemoryLimiter, Rule, SystemClock,
};
use crate::NoPersistence;

mod board;

pub use board::{RedisHealthBoard, DISABLED_FOR};

const SCRIPT: &str = include_str!("redis.lua");

/// How often a probe asks a Redis marked down whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// What can go wrong building the shared limiter.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimiterError {
    /// The URL itself is never shown: it may carry a password.
    #[error("`limits.redis.url` cannot be used: {detail}")]
    Url { detail: String },
}

/// The [`Limiter`] shared by every replica through Redis.
pub struct RedisLimiter {
    shared: Arc<Shared>,
    /// `limits.redis.key_prefix`.
    prefix: String,
    /// `limits.redis.replicas`: the fallback holds `limit / replicas`.
    replicas: NonZeroU64,
    /// By `ClientKeyConfig::index`; `None` for a key without limits.
    key_sets: Box<[Option<Arc<RedisSet>>]>,
    /// By `ModelEntry::index`, then provider key index.
    model_sets: Box<[EntrySets]>,
    /// This replica's share of every limit, used while Redis is down
    /// (`fail_open`); `None` under `fail_closed`.
    fallback: Option<Arc<MemoryLimiter>>,
}

/// The sets of one entry by provider key index.
type EntrySets = Box<[Option<Arc<RedisSet>>]>;

/// What admissions, settlements and the probe share.
struct Shared {
    client: redis::Client,
    /// `None` until the first connection succeeds. The manager reconnects
    /// by itself after that; it is swapped only by the probe.
    connection: ArcSwapOption<ConnectionManager>,
    script: redis::Script,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// Whether admissions may go to Redis. Cleared by the first failed call,
    /// set again by the probe.
    available: AtomicBool,
    /// A probe task is running (at most one).
    probing: AtomicBool,
    outages: AtomicU64,
    fallback_admissions: AtomicU64,
    unavailable_refusals: AtomicU64,
}

/// The limits of one client key or one provider key.
#[derive(Debug)]
struct RedisSet {
    limits: Box<[RedisLimit]>,
}

#[derive(Debug)]
struct RedisLimit {
    name: LimitName,
    limit: u64,
    rule: RedisRule,
}

#[derive(Debug)]
enum RedisRule {
    Rolling {
        window_micros: u64,
        /// The whole Redis key.
        key: String,
    },
    Calendar {
        calendar: Calendar,
        /// The Redis key without its period, which is appended per call.
        key: String,
    },
}

impl RedisSet {
    /// `prefix` is `limits.redis.key_prefix`; `owner` starts the keys of
    /// the rolling limits (calendar limits carry their owner in their id).
    fn build(specs: Vec<LimitSpec>, prefix: &str, owner: &str) -> Option<Self> {
        if specs.is_empty() {
            return None;
        }
        let limits = specs
            .into_iter()
            .map(|spec| {
                let limit = spec.limit();
                let rule = match spec.rule {
                    Rule::Rolling(gcra) => RedisRule::Rolling {
                        window_micros: gcra.window_nanos() / 1_000,
                        key: format!("{owner}{}", rolling_id(&spec.name)),
                    },
                    Rule::Calendar { limit, id } => RedisRule::Calendar {
                        calendar: limit.calendar,
                        key: format!("{prefix}l:{id}"),
                    },
                };
                RedisLimit {
                    name: spec.name,
                    limit,
                    rule,
                }
            })
            .collect();
        Some(Self { limits })
    }
}

/// The memory limiter's specs give ids to calendar limits only (they are
/// persisted); a rolling limit is named here by its field (`rpm`, `tps`)
/// after its owner's prefix.
fn rolling_id(name: &LimitName) -> String {
    let name = name.to_string();
    name.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// The units one limit takes for a demand.
fn amount_of(measure: Measure, amounts: Amounts) -> u64 {
    amounts.of(measure)
}

/// One call of the script: its keys and arguments.
struct Call {
    keys: Vec<String>,
    args: Vec<String>,
}

impl Call {
    fn new(mode: &str, count: usize) -> Self {
        let mut args = Vec::with_capacity(2 + 4 * count);
        args.push(mode.to_owned());
        args.push(count.to_string());
        Self {
            keys: Vec::with_capacity(count),
            args,
        }
    }

    fn push(&mut self, limit: &RedisLimit, now: &CalendarNow, amount: i128) {
        match &limit.rule {
            RedisRule::Rolling { window_micros, key } => {
                self.keys.push(key.clone());
                self.args.push("r".to_owned());
                self.args.push(limit.limit.to_string());
                self.args.push(window_micros.to_string());
            }
            RedisRule::Calendar { calendar, key } => {
                let period = now.period(*calendar);
                self.keys.push(format!("{key}:{}", calendar.label(period)));
                self.args.push("c".to_owned());
                self.args.push(limit.limit.to_string());
                let until = calendar.until_next(period, now.utc);
                self.args.push(until.as_micros().max(1).to_string());
            }
        }
        self.args.push(amount.to_string());
    }
}

impl RedisLimiter {
    /// Builds every limit of `config` for the Redis at `redis.url`, and
    /// starts connecting to it in the background: the router serves from
    /// its first second whether or not Redis answers yet (per
    /// `on_unavailable`). Must be called inside a tokio runtime.
    ///
    /// The config must be the one the demands come from, as for
    /// [`MemoryLimiter::new`].
    pub fn new(config: &Config, redis: &RedisConfig) -> Result<Self, RedisLimiterError> {
        let client =
            redis::Client::open(redis.url.expose()).map_err(|error| RedisLimiterError::Url {
                detail: describe(&error),
            })?;
        let fallback = match redis.on_unavailable {
            OnUnavailable::FailOpen => Some(Arc::new(MemoryLimiter::new(
                &share_of(config, redis.replicas),
                SystemClock::new(),
                Vec::new(),
                Arc::new(NoPersistence),
            ))),
            OnUnavailable::FailClosed => None,
        };
        let shared = Arc::new(Shared {
            client,
            connection: ArcSwapOption::empty(),
            script: redis::Script::new(SCRIPT),
            connect_timeout: redis.connect_timeout,
            command_timeout: redis.command_timeout,
            // Down until the first connection: nothing waits for it.
            available: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            fallback_admissions: AtomicU64::new(0),
            unavailable_refusals: AtomicU64::new(0),
        });
        Ok(Self::with_shared(
            config,
            shared,
            redis.key_prefix.clone(),
            redis.replicas,
            fallback,
        ))
    }

    fn with_shared(
        config: &Config,
        shared: Arc<Shared>,
        prefix: String,
        replicas: NonZeroU64,
        fallback: Option<Arc<MemoryLimiter>>,
    ) -> Self {
        let key_sets = config
            .api_keys
            .iter()
            .map(|key| {
                RedisSet::build(key_specs(key), &prefix, &key_owner(&prefix, key)).map(Arc::new)
            })
            .collect();
        let model_sets = config
            .models
            .iter()
            .map(|entry| {
                provider_key_ids(entry)
                    .into_iter()
                    .map(|provider_key| {
                        let specs = model_specs(entry, &provider_key);
                        let owner = model_owner(&prefix, entry, &provider_key);
                        RedisSet::build(specs, &prefix, &owner).map(Arc::new)
                    })
                    .collect()
            })
            .collect();
        Self {
            shared,
            prefix,
            replicas,
            key_sets,
            model_sets,
            fallback,
        }
    }

    /// The limiter of a reloaded `config` on the same Redis, connection and
    /// key prefix: the counters live in Redis under names made of key
    /// fingerprints and entry ids, so every limit that still exists simply
    /// goes on from where it was (a changed limit value applies from the
    /// next admission). The fallback carries its state over like a
    /// [`MemoryLimiter`]. `limits.redis` itself is read at start only.
    pub fn reconfigured(&self, config: &Config) -> Self {
        let fallback = self
            .fallback
            .as_ref()
            .map(|fallback| Arc::new(fallback.reconfigured(&share_of(config, self.replicas))));
        Self::with_shared(
            config,
            Arc::clone(&self.shared),
            self.prefix.clone(),
            self.replicas,
            fallback,
        )
    }

    /// Starts connecting, and waits until Redis has answered once, at most
    /// `timeout`; whether it did. Until it has, admissions fall back (per
    /// `on_unavailable`) without waiting; after `timeout` the connection is
    /// still tried in the background.
    pub async fn connect(&self, timeout: Duration) -> bool {
        Shared::start_probe(&self.shared, false);
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.shared.available.load(Ordering::Acquire) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    pub fn stats(&self) -> SharedLimitsStats {
        let shared = &self.shared;
        SharedLimitsStats {
            available: shared.available.load(Ordering::Acquire),
            outages: shared.outages.load(Ordering::Relaxed),
            fallback_admissions: shared.fallback_admissions.load(Ordering::Relaxed),
            unavailable_refusals: shared.unavailable_refusals.load(Ordering::Relaxed),
        }
    }

    /// The provider key health shared through the same Redis (and the same
    /// connection). `config` must be the one this limiter was built from.
    pub fn health_board(&self, config: &Config) -> RedisHealthBoard {
        RedisHealthBoard::new(Arc::clone(&self.shared), config, &self.prefix)
    }

    fn key_set(&self, key: &ClientKeyConfig) -> Option<&Arc<RedisSet>> {
        self.key_sets.get(key.index)?.as_ref()
    }

    fn model_set(
        &self,
        entry: &router_core::config::ModelEntry,
        provider_key: Option<usize>,
    ) -> Option<&Arc<RedisSet>> {
        self.model_sets
            .get(entry.index)?
            .get(provider_key.unwrap_or(0))?
            .as_ref()
    }
}

/// The answer while Redis is down: this replica's share in memory, or a
/// refusal to check.
fn without_redis(
    shared: &Shared,
    fallback: Option<&MemoryLimiter>,
    demand: &DemandAt,
) -> Result<Permit, AdmitError> {
    match fallback {
        Some(fallback) => {
            shared.fallback_admissions.fetch_add(1, Ordering::Relaxed);
            fallback.try_admit_at(demand).map_err(AdmitError::Refused)
        }
        None => {
            shared.unavailable_refusals.fetch_add(1, Ordering::Relaxed);
            Err(AdmitError::Unavailable {
                retry_after: Duration::from_secs(1),
            })
        }
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("limited_keys", &self.key_sets.iter().flatten().count())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The owner part of a client key's Redis keys (as the memory limiter's
/// calendar ids: by fingerprint).
fn key_owner(prefix: &str, key: &ClientKeyConfig) -> String {
    format!("{prefix}l:key:{}:", super::fingerprint(key.key.expose()))
}

fn model_owner(
    prefix: &str,
    entry: &router_core::config::ModelEntry,
    provider_key: &str,
) -> String {
    format!("{prefix}l:model:{}:{provider_key}:", entry_owner(entry))
}

/// An entry as replicas name it: its `id`, else its name and position.
pub(super) fn entry_owner(entry: &router_core::config::ModelEntry) -> String {
    if entry.id != 0 {
        entry.id.to_string()
    } else {
        format!("{}#{}", entry.name, entry.index)
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    fn admit(&self, demand: &Demand<'_>) -> Admission<'_> {
        let key_set = demand.key.and_then(|key| self.key_set(key)).cloned();
        let model_set = self.model_set(demand.entry, demand.provider_key).cloned();
        if key_set.is_none() && model_set.is_none() {
            return Admission::ready(Ok(Permit::unlimited()));
        }
        let at = DemandAt::of(demand);
        if !self.shared.available.load(Ordering::Acquire) {
            return Admission::ready(without_redis(&self.shared, self.fallback.as_deref(), &at));
        }
        let amounts = Amounts {
            tokens: demand.tokens,
            micro_usd: micro_usd(demand.cost_usd),
        };
        let now = CalendarNow::new(OffsetDateTime::now_utc());
        let sets: Vec<Arc<RedisSet>> = key_set.iter().chain(model_set.iter()).cloned().collect();
        let count = sets.iter().map(|set| set.limits.len()).sum();
        let mut call = Call::new("admit", count);
        for limit in sets.iter().flat_map(|set| set.limits.iter()) {
            call.push(
                limit,
                &now,
                i128::from(amount_of(limit.name.measure, amounts)),
            );
        }
        let fallback = self.fallback.clone();
        let shared = Arc::clone(&self.shared);
        Admission::pending(async move {
            let answer: Vec<i64> = match shared.run(&call).await {
                Ok(answer) => answer,
                Err(()) => return without_redis(&shared, fallback.as_deref(), &at),
            };
            let limits: Vec<&RedisLimit> = sets.iter().flat_map(|set| set.limits.iter()).collect();
            if answer.first() == Some(&1) {
                let rate = rate_info(&limits, &answer[1..]);
                let reservation = RedisReservation {
                    shared: Arc::clone(&shared),
                    key: key_set.map(|set| Held { set, period: now }),
                    model: model_set.map(|set| Held { set, period: now }),
                    amounts,
                };
                return Ok(Permit::new(rate, Box::new(reservation)));
            }
            let mut refusal: Option<Refusal> = None;
            for chunk in answer.get(1..).unwrap_or_default().chunks_exact(4) {
                let Some(limit) = usize::try_from(chunk[0] - 1)
                    .ok()
                    .and_then(|index| limits.get(index))
                else {
                    continue;
                };
                let denial = Refusal {
                    name: limit.name,
                    limit: limit.limit,
                    remaining: u64::try_from(chunk[1]).unwrap_or(0),
                    retry_after: micros(chunk[2]).max(Duration::from_millis(1)),
                    never_fits: chunk[3] == 1,
                };
                refusal = Some(worst(refusal, denial));
            }
            match refusal {
                Some(refusal) => Err(AdmitError::Refused(refusal)),
                // An answer the script never gives: treat Redis as broken.
                None => {
                    shared.mark_down("an admission answer it cannot read");
                    without_redis(&shared, fallback.as_deref(), &at)
                }
            }
        })
    }

    fn shared_stats(&self) -> Option<SharedLimitsStats> {
        Some(self.stats())
    }

    fn reconfigured(&self, config: &Config) -> Option<Arc<dyn Limiter>> {
        Some(Arc::new(RedisLimiter::reconfigured(self, config)))
    }

    async fn key_headroom(&self, key: &ClientKeyConfig) -> Vec<Headroom> {
        let Some(set) = self.key_set(key).cloned() else {
            return Vec::new();
        };
        if self.shared.available.load(Ordering::Acquire) {
            let now = CalendarNow::new(OffsetDateTime::now_utc());
            let mut call = Call::new("peek", set.limits.len());
            for limit in set.limits.iter() {
                call.push(limit, &now, 0);
            }
            if let Ok(answer) = self.shared.run(&call).await {
                if answer.first() == Some(&1) && answer.len() == 1 + 2 * set.limits.len() {
                    let mut headroom: Vec<Headroom> = set
                        .limits
                        .iter()
                        .zip(answer[1..].chunks_exact(2))
                        .map(|(limit, pair)| headroom_of(limit, pair))
                        .collect();
                    headroom.sort_by_key(|room| presentation_order(room.name));
                    return headroom;
                }
            }
        }
        // Redis is down: what this replica enforces meanwhile.
        self.fallback
            .as_ref()
            .map(|fallback| fallback.headroom(key))
            .unwrap_or_default()
    }
}

fn micros(value: i64) -> Duration {
    Duration::from_micros(u64::try_from(value).unwrap_or(0))
}

fn headroom_of(limit: &RedisLimit, pair: &[i64]) -> Headroom {
    Headroom {
        name: limit.name,
        limit: limit.limit,
        remaining: u64::try_from(pair[0]).unwrap_or(0).min(limit.limit),
        reset: micros(pair[1]),
    }
}

/// The tightest request and token limit after an admission.
fn rate_info(limits: &[&RedisLimit], pairs: &[i64]) -> RateInfo {
    let mut rate = RateInfo::default();
    for (limit, pair) in limits.iter().zip(pairs.chunks_exact(2)) {
        let room = headroom_of(limit, pair);
        let one = match limit.name.measure {
            Measure::Requests => RateInfo {
                requests: Some(room),
                tokens: None,
            },
            Measure::Tokens => RateInfo {
                requests: None,
                tokens: Some(room),
            },
            Measure::Cost => continue,
        };
        rate = rate.tightest(one);
    }
    rate
}

impl Shared {
    /// Runs the script once, bounded by `command_timeout`. A failure marks
    /// Redis down; the caller falls back.
    async fn run(self: &Arc<Self>, call: &Call) -> Result<Vec<i64>, ()> {
        let Some(connection) = self.connection.load_full() else {
            self.mark_down("no connection yet");
            return Err(());
        };
        let mut connection = (*connection).clone();
        let mut invocation = self.script.prepare_invoke();
        for key in &call.keys {
            invocation.key(key);
        }
        for arg in &call.args {
            invocation.arg(arg);
        }
        match tokio::time::timeout(
            self.command_timeout,
            invocation.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                self.mark_down(&describe(&error));
                Err(())
            }
            Err(_) => {
                self.mark_down("no answer within limits.redis.command_timeout");
                Err(())
            }
        }
    }

    /// Marks Redis down (logging once per outage) and starts the probe.
    fn mark_down(self: &Arc<Self>, why: &str) {
        if self.available.swap(false, Ordering::AcqRel) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                reason = why,
                "redis is unavailable: limits fall back per limits.redis.on_unavailable \
                 until it answers again"
            );
        }
        Self::start_probe(self, true);
    }

    /// Starts the task that connects (first) or pings (after an outage)
    /// until Redis answers, unless one runs.
    fn start_probe(shared: &Arc<Self>, after_outage: bool) {
        if shared.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            shared.probing.store(false, Ordering::Release);
            return;
        };
        let shared = Arc::clone(shared);
        runtime.spawn(async move {
            let mut warned = after_outage;
            loop {
                match shared.probe().await {
                    Ok(()) => break,
                    Err(why) if !warned => {
                        warned = true;
                        shared.outages.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            reason = %why,
                            "cannot reach redis: limits fall back per \
                             limits.redis.on_unavailable until it answers"
                        );
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            shared.probing.store(false, Ordering::Release);
            shared.available.store(true, Ordering::Release);
            if warned {
                tracing::info!("redis answers again: limits are shared again");
            }
        });
    }

    /// Connects if there is no connection yet, then pings.
    async fn probe(&self) -> Result<(), String> {
        let connection = match self.connection.load_full() {
            Some(connection) => connection,
            None => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.command_timeout))
                    .set_number_of_retries(1);
                let manager = tokio::time::timeout(
                    self.connect_timeout.saturating_mul(2),
                    ConnectionManager::new_with_config(self.client.clone(), config),
                )
                .await
                .map_err(|_| "no connection within limits.redis.connect_timeout".to_owned())?
                .map_err(|error| describe(&error))?;
                let manager = Arc::new(manager);
                self.connection.store(Some(Arc::clone(&manager)));
                manager
            }
        };
        let mut connection = (*connection).clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(
            self.connect_timeout,
            ping.query_async::<String>(&mut connection),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(describe(&error)),
            Err(_) => Err("no answer to PING within limits.redis.connect_timeout".to_owned()),
        }
    }
}

/// A Redis error as it may be logged: its kind and code, never the URL the
/// client was built from (it may carry a password).
fn describe(error: &redis::RedisError) -> String {
    let mut text = format!("{:?}", error.kind());
    if let Some(code) = error.code() {
        text.push_str(": ");
        text.push_str(code);
    }
    if error.is_timeout() {
        text.push_str(" (timed out)");
    } else if error.is_connection_refusal() {
        text.push_str(" (connection refused)");
    } else if error.is_connection_dropped() {
        text.push_str(" (connection dropped)");
    }
    text
}

/// A reservation's hold on one set, with the periods it was counted in.
struct Held {
    set: Arc<RedisSet>,
    period: CalendarNow,
}

/// What an admitted demand holds in Redis until settled.
struct RedisReservation {
    shared: Arc<Shared>,
    key: Option<Held>,
    model: Option<Held>,
    amounts: Amounts,
}

impl Reservation for RedisReservation {
    fn settle(&mut self, scope: Scope, used: Settlement) {
        let held = match scope {
            Scope::Key => self.key.take(),
            Scope::Model => self.model.take(),
        };
        let Some(held) = held else {
            return;
        };
        let used = Amounts {
            tokens: used.tokens,
            micro_usd: micro_usd(used.cost_usd),
        };
        if used == self.amounts {
            return;
        }
        let now = CalendarNow::new(OffsetDateTime::now_utc());
        let mut corrections: Vec<(&RedisLimit, &CalendarNow, i128)> = Vec::new();
        for limit in held.set.limits.iter() {
            let measure = limit.name.measure;
            if measure == Measure::Requests {
                continue;
            }
            let delta =
                i128::from(amount_of(measure, used)) - i128::from(amount_of(measure, self.amounts));
            if delta == 0 {
                continue;
            }
            let at = match limit.rule {
                RedisRule::Calendar { calendar, .. }
                    if delta < 0 && held.period.period(calendar) != now.period(calendar) =>
                {
                    // Reserved in a period that has ended: nothing to give
                    // back (as in memory).
                    continue;
                }
                RedisRule::Calendar { .. } if delta < 0 => &held.period,
                _ => &now,
            };
            corrections.push((limit, at, delta));
        }
        if corrections.is_empty() {
            return;
        }
        let mut call = Call::new("settle", corrections.len());
        for (limit, at, delta) in corrections {
            call.push(limit, at, delta);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        // Off the answer's path: nothing the client waits for depends on it.
        // A settlement lost to an outage leaves the reservation in place,
        // the safe side.
        runtime.spawn(async move {
            if shared.available.load(Ordering::Acquire) {
                let _ = shared.run(&call).await;
            }
        });
    }
}

/// `config` with every limit divided among `replicas` (rounded down, at
/// least 1): what one replica enforces alone while Redis is down.
pub fn share_of(config: &Config, replicas: NonZeroU64) -> Config {
    let share = |limit: Option<NonZeroU64>| {
        limit.map(|limit| NonZeroU64::new(limit.get() / replicas.get()).unwrap_or(NonZeroU64::MIN))
    };
    let mut config = config.clone();
    for key in &mut config.api_keys {
        let limits = &mut key.limits;
        for limit in [
            &mut limits.rps,
            &mut limits.rpm,
            &mut limits.rph,
            &mut limits.rpd,
            &mut limits.tps,
            &mut limits.tpm,
            &mut limits.tph,
            &mut limits.tpd,
        ] {
            *limit = share(*limit);
        }
        if let Some(budget) = &mut key.budget {
            budget.max_usd /= replicas.get() as f64;
        }
    }
    for entry in &mut config.models {
        let limits = &mut entry.limits;
        for limit in [
            &mut limits.rpm,
            &mut limits.rph,
            &mut limits.rpd,
            &mut limits.tpm,
            &mut limits.tph,
            &mut limits.tpd,
        ] {
            *limit = share(*limit);
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use router_core::secret::Secret;

    #[test]
    fn a_replica_share_divides_every_limit_and_keeps_one() {
        let config = router_core::config::parse(
            std::path::Path::new("share.yaml"),
            "models:\n  - name: m\n    provider: mock\n    enabled: true\n    rpm: 7\n\
             api_keys:\n  - key: k\n    rpm: 50\n    tpd: 1000\n    rps: 2\n",
            &|_| None,
        )
        .unwrap();
        let share = share_of(&config, NonZeroU64::new(3).unwrap());
        let limits = &share.api_keys[0].limits;
        assert_eq!(limits.rpm, NonZeroU64::new(16));
        assert_eq!(limits.tpd, NonZeroU64::new(333));
        assert_eq!(limits.rps, NonZeroU64::new(1));
        assert_eq!(limits.rph, None);
        assert_eq!(share.models[0].limits.rpm, NonZeroU64::new(2));
    }

    #[test]
    fn redis_keys_name_limits_without_secrets() {
        let mut key = ClientKeyConfig::new(Secret::new("sk-secret"));
        key.limits.rpm = NonZeroU64::new(5);
        key.limits.rpd = NonZeroU64::new(5);
        let set = RedisSet::build(key_specs(&key), "router:", &key_owner("router:", &key)).unwrap();
        let keys: Vec<&str> = set
            .limits
            .iter()
            .map(|limit| match &limit.rule {
                RedisRule::Rolling { key, .. } | RedisRule::Calendar { key, .. } => key.as_str(),
            })
            .collect();
        let fingerprint = super::super::fingerprint("sk-secret");
        assert_eq!(
            keys,
            [
                format!("router:l:key:{fingerprint}:rpm"),
                format!("router:l:key:{fingerprint}:rpd"),
            ]
        );
        assert!(keys.iter().all(|key| !key.contains("sk-secret")));
    }
}
