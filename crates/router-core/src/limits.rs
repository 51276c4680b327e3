//! The limiter port: what the engine asks before it calls an upstream, and
//! what it is told.
//!
//! Admission is one call that checks and reserves every limit a request is
//! subject to, all or nothing: when one limit refuses, nothing is consumed in
//! the others. The [`Permit`] it returns is settled with the real usage when
//! the answer ends; a permit dropped unsettled keeps what it reserved (the
//! safe side: nothing is handed back that may have been used).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{ClientKeyConfig, Config, ModelEntry};

/// Who a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A client key (`api_keys[]`).
    Key,
    /// One provider key of a model entry (`models[]`).
    Model,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    Requests,
    Tokens,
    /// Spend in USD (a budget).
    Cost,
}

/// The window of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    Second,
    Minute,
    Hour,
    /// A UTC calendar day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl Window {
    /// The length of a rolling window; `None` for calendar windows.
    pub fn rolling(self) -> Option<Duration> {
        match self {
            Self::Second => Some(Duration::from_secs(1)),
            Self::Minute => Some(Duration::from_secs(60)),
            Self::Hour => Some(Duration::from_secs(3600)),
            Self::Day | Self::Month => None,
        }
    }
}

/// One limit, e.g. "key rpm" or "model tpd".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitName {
    pub scope: Scope,
    pub measure: Measure,
    pub window: Window,
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = match self.scope {
            Scope::Key => "key",
            Scope::Model => "model",
        };
        if self.measure == Measure::Cost {
            let period = if self.window == Window::Day {
                "day"
            } else {
                "month"
            };
            return write!(f, "{scope} budget per {period}");
        }
        let measure = match self.measure {
            Measure::Requests => 'r',
            Measure::Tokens => 't',
            Measure::Cost => '$',
        };
        let window = match self.window {
            Window::Second => 's',
            Window::Minute => 'm',
            Window::Hour => 'h',
            Window::Day => 'd',
            Window::Month => 'M',
        };
        write!(f, "{scope} {measure}p{window}")
    }
}

/// What one attempt asks of the limiter.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    /// The client key, when its limits are part of this admission (the first
    /// attempt of a request). Later attempts of the same request (failover)
    /// only ask for the model entry's limits: the client is charged once.
    pub key: Option<&'a ClientKeyConfig>,
    /// The entry and the index of the provider key the attempt would use
    /// (`None` when the entry has no keys: it has one budget).
    pub entry: &'a ModelEntry,
    pub provider_key: Option<usize>,
    /// Tokens to reserve: the prompt estimate plus the output reservation.
    pub tokens: u64,
    /// Worst-case cost in USD, for budgets.
    pub cost_usd: f64,
}

/// How much of one limit is left, for `x-ratelimit-*` headers and `/v1/usage`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headroom {
    pub name: LimitName,
    /// The limit itself (requests, tokens, or micro-USD for budgets).
    pub limit: u64,
    pub remaining: u64,
    /// Until the limit is whole again.
    pub reset: Duration,
}

/// The tightest request limit and the tightest token limit after admission.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateInfo {
    pub requests: Option<Headroom>,
    pub tokens: Option<Headroom>,
}

impl Headroom {
    /// What is left, as a share of the limit.
    fn share_left(&self) -> f64 {
        if self.limit == 0 {
            0.0
        } else {
            self.remaining as f64 / self.limit as f64
        }
    }
}

impl RateInfo {
    /// For each measure, the limit with the smaller share left.
    pub fn tightest(self, other: RateInfo) -> RateInfo {
        RateInfo {
            requests: tighter(self.requests, other.requests),
            tokens: tighter(self.tokens, other.tokens),
        }
    }
}

fn tighter(a: Option<Headroom>, b: Option<Headroom>) -> Option<Headroom> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.share_left() < a.share_left() {
            b
        } else {
            a
        }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Why a demand was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} limit of {limit} reached")]
pub struct Refusal {
    pub name: LimitName,
    pub limit: u64,
    pub remaining: u64,
    /// When the same demand could next succeed (at least one second when the
    /// limiter works in seconds; never zero).
    pub retry_after: Duration,
    /// The demand exceeds the whole limit: waiting will never help.
    pub never_fits: bool,
}

impl Refusal {
    /// Day quotas and budgets do not come back within a client's retry loop.
    pub fn is_quota(&self) -> bool {
        self.never_fits
            || self.name.measure == Measure::Cost
            || matches!(self.name.window, Window::Day | Window::Month)
    }
}

/// Why admission did not grant a permit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmitError {
    /// A limit refused the demand.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The limits could not be checked (a shared limiter whose store did
    /// not answer in time, configured to fail closed). Nothing was reserved.
    #[error("the shared limits cannot be checked right now")]
    Unavailable {
        /// When checking is worth trying again.
        retry_after: Duration,
    },
}

type PendingAdmission<'a> = Pin<Box<dyn Future<Output = Result<Permit, AdmitError>> + Send + 'a>>;

/// The answer of [`Limiter::admit`]: a future that is either ready at once
/// (a limiter in memory decides without waiting, and costs no allocation)
/// or pending on a shared store.
#[must_use = "an admission does nothing until it is awaited"]
pub struct Admission<'a>(AdmissionState<'a>);

enum AdmissionState<'a> {
    /// Taken when polled.
    Ready(Option<Result<Permit, AdmitError>>),
    Pending(PendingAdmission<'a>),
}

impl<'a> Admission<'a> {
    pub fn ready(result: Result<Permit, AdmitError>) -> Self {
        Self(AdmissionState::Ready(Some(result)))
    }

    pub fn pending(future: impl Future<Output = Result<Permit, AdmitError>> + Send + 'a) -> Self {
        Self(AdmissionState::Pending(Box::pin(future)))
    }
}

impl From<Result<Permit, Refusal>> for Admission<'_> {
    fn from(result: Result<Permit, Refusal>) -> Self {
        Self::ready(result.map_err(AdmitError::Refused))
    }
}

impl Future for Admission<'_> {
    type Output = Result<Permit, AdmitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            AdmissionState::Ready(result) => match result.take() {
                Some(result) => Poll::Ready(result),
                // Polled again after it answered: a caller bug, answered
                // with a refusal to check rather than a panic.
                None => Poll::Ready(Err(AdmitError::Unavailable {
                    retry_after: Duration::from_secs(1),
                })),
            },
            AdmissionState::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Admission<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            AdmissionState::Ready(_) => "ready",
            AdmissionState::Pending(_) => "pending",
        };
        f.debug_tuple("Admission").field(&state).finish()
    }
}

/// What a request really used, to settle its permit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Settlement {
    pub tokens: u64,
    pub cost_usd: f64,
}

/// The reservation of one admitted attempt. Settle it with what was used.
pub struct Permit {
    rate: RateInfo,
    reservation: Option<Box<dyn Reservation>>,
    /// Whether the model scope was settled already (after a failed attempt).
    model_settled: bool,
}

/// The limiter's side of a permit.
///
/// A permit covers two scopes: the client key's limits (when the demand
/// named the key) and the model entry's limits. They are settled apart: when
/// an attempt fails and the engine fails over, the entry's reservation is
/// settled at once (its tokens handed back, its request still counted: the
/// upstream saw it) while the key's reservation carries on to the attempt
/// that answers.
pub trait Reservation: Send + Sync {
    /// Replaces what was reserved in the limits of `scope` with what was
    /// used. The engine calls it at most once per scope; a scope the permit
    /// does not cover is ignored.
    fn settle(&mut self, scope: Scope, used: Settlement);
}

impl Permit {
    pub fn new(rate: RateInfo, reservation: Box<dyn Reservation>) -> Self {
        Self {
            rate,
            reservation: Some(reservation),
            model_settled: false,
        }
    }

    /// A permit that reserved nothing (no limits apply).
    pub fn unlimited() -> Self {
        Self {
            rate: RateInfo::default(),
            reservation: None,
            model_settled: false,
        }
    }

    pub fn rate(&self) -> RateInfo {
        self.rate
    }

    /// Settles the model entry's limits only (see [`Reservation`]).
    pub fn settle_model(&mut self, used: Settlement) {
        if self.model_settled {
            return;
        }
        self.model_settled = true;
        if let Some(reservation) = self.reservation.as_mut() {
            reservation.settle(Scope::Model, used);
        }
    }

    /// Settles every scope not settled yet.
    pub fn settle(mut self, used: Settlement) {
        if let Some(mut reservation) = self.reservation.take() {
            reservation.settle(Scope::Key, used);
            if !self.model_settled {
                reservation.settle(Scope::Model, used);
            }
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("rate", &self.rate)
            .field("settled", &self.reservation.is_none())
            .finish()
    }
}

/// Checks and reserves limits. Implementations live in router-limits.
#[async_trait]
pub trait Limiter: Send + Sync + fmt::Debug {
    /// Admits the demand, reserving it in every limit that applies, or
    /// refuses it having consumed nothing.
    ///
    /// Whatever the answer needs from `demand` is read before this returns:
    /// the admission borrows only the limiter. A limiter that decides in
    /// memory answers [`Admission::ready`]; one that asks a shared store
    /// answers [`Admission::pending`].
    fn admit(&self, demand: &Demand<'_>) -> Admission<'_>;

    /// Every limit of a client key with what is left of it.
    async fn key_headroom(&self, key: &ClientKeyConfig) -> Vec<Headroom>;

    /// How a limiter that shares its counters through a store is doing;
    /// `None` for one that keeps them in this process.
    fn shared_stats(&self) -> Option<SharedLimitsStats> {
        None
    }

    /// The limiter for a reloaded `config`, carrying this one's state over
    /// to the limits that still exist (see the implementations for what
    /// "the same limit" means). `None`: this limiter cannot take a new
    /// config, so a reload keeps it, and the limits it enforces, until the
    /// router restarts.
    fn reconfigured(&self, _config: &Config) -> Option<std::sync::Arc<dyn Limiter>> {
        None
    }
}

/// How a shared limiter is doing, for `/metrics` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedLimitsStats {
    /// Whether admissions go to the shared store now.
    pub available: bool,
    /// Times the store was found unavailable (each outage counts once).
    pub outages: u64,
    /// Admissions decided in this process while the store was unavailable
    /// (`fail_open`).
    pub fallback_admissions: u64,
    /// Admissions refused because the store was unavailable (`fail_closed`).
    pub unavailable_refusals: u64,
}

/// The limiter of a router without limits.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLimits;

#[async_trait]
impl Limiter for NoLimits {
    fn admit(&self, _demand: &Demand<'_>) -> Admission<'_> {
        Admission::ready(Ok(Permit::unlimited()))
    }

    async fn key_headroom(&self, _key: &ClientKeyConfig) -> Vec<Headroom> {
        Vec::new()
    }

    fn reconfigured(&self, _config: &Config) -> Option<std::sync::Arc<dyn Limiter>> {
        Some(std::sync::Arc::new(NoLimits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_like_the_config_fields() {
        let name = |scope, measure, window| {
            LimitName {
                scope,
                measure,
                window,
            }
            .to_string()
        };
        assert_eq!(
            name(Scope::Key, Measure::Requests, Window::Minute),
            "key rpm"
        );
        assert_eq!(name(Scope::Key, Measure::Tokens, Window::Second), "key tps");
        assert_eq!(
            name(Scope::Model, Measure::Tokens, Window::Day),
            "model tpd"
        );
        assert_eq!(
            name(Scope::Model, Measure::Requests, Window::Hour),
            "model rph"
        );
        assert_eq!(
            name(Scope::Key, Measure::Cost, Window::Month),
            "key budget per month"
        );
    }
}
