//! The health port: how replicas tell each other what they learnt about a
//! provider key.
//!
//! Each router keeps the health of its keys in atomics (`health.rs`): a
//! request never waits to learn whether a key may be used. What one replica
//! learns the hard way — an upstream 429 and its `Retry-After`, a key
//! refused with 401/403, a circuit that opened or closed — the others should
//! not have to learn again with their own clients' requests. So the engine
//! hands every such change to a [`HealthBoard`] before it answers, and the
//! board hands the changes of other replicas to the router's
//! [`HealthListener`], which applies them to its own atomics.
//!
//! The default board, [`LocalHealth`], has nobody to tell: one process.
//! router-limits implements a board on Redis (publish and subscribe, plus a
//! snapshot for replicas that start or reconnect later). The engine knows
//! only this port, never Redis.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// What changed in the health of one provider key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// The key rests for this long after an upstream 429.
    Rest(Duration),
    /// The upstream refused the key (401/403): it is not used again until
    /// the router is restarted or its config reloaded.
    Disabled,
    /// The circuit opened for this long after a run of failures.
    Open(Duration),
    /// The circuit closed: a probe succeeded.
    Closed,
}

/// A change of one provider key of one entry, as replicas exchange it.
///
/// Entries are named by their position in `models:` and their `id`, keys by
/// their position in the entry's `provider_api_key` (an entry without keys
/// has one, position `None`). Replicas run the same config; a board that
/// crosses processes checks that both sides mean the same entry and key
/// (router-limits' Redis board names them by id and key fingerprint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthNotice {
    pub entry_index: usize,
    pub provider_key: Option<usize>,
    pub change: HealthChange,
}

/// The future of [`HealthBoard::publish`]: ready at once for a board that
/// has nobody to tell.
pub type Publish<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where a router tells the others what it learnt about a key.
pub trait HealthBoard: Send + Sync + fmt::Debug {
    /// Tells the other replicas. Resolves once they can see it, or once the
    /// board gave up (bounded: a board never makes a request wait longer
    /// than its store's timeout). Never fails: a notice that cannot be sent
    /// only costs the other replicas a request of their own to learn it.
    fn publish(&self, notice: HealthNotice) -> Publish<'_>;
}

/// Takes the notices of other replicas (the engine's [`crate::Router`]).
pub trait HealthListener: Send + Sync {
    fn apply(&self, notice: HealthNotice);
}

/// The board of a router that runs alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalHealth;

impl HealthBoard for LocalHealth {
    fn publish(&self, _notice: HealthNotice) -> Publish<'_> {
        Box::pin(std::future::ready(()))
    }
}
