//! `GET /v1/usage`: what a key has used and what its limits leave.

use serde::Serialize;
use time::{Date, Duration as TimeDuration, OffsetDateTime, Time};

use crate::engine::{ledger_key_id, ClientKey, Router};
use crate::error::UsageError;
use crate::limits::Headroom;
use crate::usage::{GroupBy, UsageQuery, UsageTotals};

/// The question, as router-http parsed it from the query string.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRequest {
    /// Another key's id (admin keys only); `None` for the asking key, or,
    /// for an admin key with `all_keys`, every key.
    pub key_id: Option<u64>,
    /// Admin keys only: every key at once.
    pub all_keys: bool,
    pub model: Option<String>,
    pub group_by: GroupBy,
    /// Default: the start of the current UTC month.
    pub since: Option<OffsetDateTime>,
    /// Default: now.
    pub until: Option<OffsetDateTime>,
}

impl Default for UsageRequest {
    fn default() -> Self {
        Self {
            key_id: None,
            all_keys: false,
            model: None,
            group_by: GroupBy::Nothing,
            since: None,
            until: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageReport {
    pub object: &'static str,
    /// The key reported on; `null` when an admin asked about every key.
    pub key: Option<KeyView>,
    pub today: TotalsView,
    pub month: TotalsView,
    /// The key's limits and what remains of them.
    pub limits: Vec<LimitView>,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    pub group_by: &'static str,
    pub data: Vec<TotalsView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyView {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct TotalsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    pub cost_usd: f64,
}

impl From<UsageTotals> for TotalsView {
    fn from(totals: UsageTotals) -> Self {
        Self {
            group: totals.group,
            requests: totals.requests,
            prompt_tokens: totals.tokens.prompt,
            completion_tokens: totals.tokens.completion,
            cached_tokens: totals.tokens.cached,
            reasoning_tokens: totals.tokens.reasoning,
            total_tokens: totals.tokens.total(),
            cost_usd: totals.cost_usd,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LimitView {
    /// E.g. `key rpm`, `key budget per month`.
    pub limit: String,
    /// The limit (requests, tokens, or micro-USD for budgets).
    pub max: u64,
    pub remaining: u64,
    pub reset_seconds: f64,
}

impl From<Headroom> for LimitView {
    fn from(headroom: Headroom) -> Self {
        Self {
            limit: headroom.name.to_string(),
            max: headroom.limit,
            remaining: headroom.remaining,
            reset_seconds: headroom.reset.as_secs_f64(),
        }
    }
}

fn group_name(group_by: GroupBy) -> &'static str {
    match group_by {
        GroupBy::Nothing => "none",
        GroupBy::Key => "key",
        GroupBy::Model => "model",
        GroupBy::Day => "day",
        GroupBy::Hour => "hour",
        GroupBy::Minute => "minute",
    }
}

pub(crate) async fn usage(
    router: &Router,
    asker: &ClientKey,
    request: UsageRequest,
) -> Result<UsageReport, UsageError> {
    let asker_id = ledger_key_id(asker);
    let target = match (request.key_id, request.all_keys) {
        (_, true) if asker.admin => None,
        (Some(id), false) if asker.admin || id == asker_id => Some(id),
        (None, false) => Some(asker_id),
        // Every key, or another key than its own: admin keys only.
        _ => return Err(UsageError::Forbidden),
    };
    let store = router
        .services()
        .store
        .as_ref()
        .ok_or(UsageError::NoLedger)?;

    let now = OffsetDateTime::now_utc();
    let day_start = now.replace_time(Time::MIDNIGHT);
    let month_start = Date::from_calendar_date(now.year(), now.month(), 1)
        .map(|date| date.midnight().assume_utc())
        .unwrap_or(day_start);
    // `until` is exclusive: a moment past now takes in what was just written.
    let later = now + TimeDuration::seconds(1);
    let totals = |since, group_by| UsageQuery {
        key_id: target,
        model: request.model.clone(),
        since,
        until: later,
        group_by,
    };
    let first = |rows: Vec<UsageTotals>| {
        rows.into_iter()
            .next()
            .map(TotalsView::from)
            .unwrap_or_default()
    };
    let today = first(store.totals(totals(day_start, GroupBy::Nothing)).await?);
    let month = first(store.totals(totals(month_start, GroupBy::Nothing)).await?);
    let since = request.since.unwrap_or(month_start);
    let until = request.until.unwrap_or(later);
    let data = store
        .totals(UsageQuery {
            since,
            until,
            ..totals(since, request.group_by)
        })
        .await?
        .into_iter()
        .map(TotalsView::from)
        .collect();

    let key = target.and_then(|id| {
        if id == asker_id {
            Some(asker.as_ref())
        } else {
            router.key_by_ledger_id(id)
        }
    });
    let limits = match key {
        Some(key) => router
            .services()
            .limiter
            .key_headroom(key)
            .await
            .into_iter()
            .map(LimitView::from)
            .collect(),
        None => Vec::new(),
    };
    Ok(UsageReport {
        object: "usage",
        key: target.map(|id| KeyView {
            id,
            name: key.map(|key| key.name.clone()).unwrap_or_default(),
        }),
        today,
        month,
        limits,
        since,
        until,
        group_by: group_name(request.group_by),
        data,
    })
}
