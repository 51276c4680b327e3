//! Read-only views for the operator: the health of every provider key, the
//! client keys with what their limits leave, usage over time, and the
//! latest failed requests. router-http serves them on `/admin/*` (and the
//! dashboard on `/ui` reads them); only admin keys may ask.
//!
//! Every view is a plain serialisable snapshot. None holds a secret: keys
//! appear by id, name or index, never by value, and error messages are the
//! ledger's, which were scrubbed before they were recorded.

use serde::Serialize;
use time::{Duration as TimeDuration, OffsetDateTime, Time};

use crate::engine::{ledger_key_id, ClientKey};
use crate::health::HealthSnapshot;
use crate::report::{LimitView, TotalsView};
use crate::usage::{
    Bucket, ErrorQuery, GroupBy, LedgerError, SeriesPoint, UsageQuery, UsageRecord, UsageStore,
};

/// Why an admin view could not be given.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The key is valid but not an admin key.
    #[error("this view is for admin keys only")]
    AdminRequired,
    /// The view reads the ledger, and this router keeps none.
    #[error("this router keeps no usage ledger")]
    NoLedger,
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

/// Admin keys only: every other key is refused before anything is read.
pub(crate) fn require_admin(asker: &ClientKey) -> Result<(), AdminError> {
    if asker.admin {
        Ok(())
    } else {
        Err(AdminError::AdminRequired)
    }
}

/// `GET /admin/models`: every enabled entry, grouped by client-facing name
/// in config order, with the health of each of its provider keys.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelsView {
    pub object: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Requests being served right now, when something counts them (the
    /// HTTP layer's metrics); `None` otherwise.
    pub in_flight: Option<u64>,
    pub models: Vec<ModelView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelView {
    pub name: String,
    pub entries: Vec<EntryView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EntryView {
    /// The entry's position in `models:`.
    pub index: usize,
    pub id: u64,
    pub provider: String,
    pub provider_model_name: String,
    /// One per provider key, in config order; one for the entry itself
    /// when it has no key.
    pub keys: Vec<KeyHealthView>,
}

/// The health of one provider key, by its index: never the key.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyHealthView {
    /// The index in the entry's `provider_api_key`; `None` for an entry
    /// without keys.
    pub index: Option<usize>,
    /// One word for the dashboard: `disabled` (refused with 401/403, out
    /// until the config is reloaded), `open` (circuit open), `resting`
    /// (after a 429), `half_open` (one probe may go), else `ok`.
    pub state: &'static str,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resting_until: Option<OffsetDateTime>,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    #[serde(with = "time::serde::rfc3339::option")]
    pub circuit_open_until: Option<OffsetDateTime>,
    /// A half-open probe is in flight.
    pub probing: bool,
    pub consecutive_failures: u64,
}

impl KeyHealthView {
    /// The view of `snapshot`, its clock times turned into wall-clock times
    /// (`clock_now` and `wall_now` being the same moment).
    pub(crate) fn new(
        index: Option<usize>,
        snapshot: HealthSnapshot,
        clock_now: u64,
        wall_now: OffsetDateTime,
    ) -> Self {
        let wall = |until: u64| {
            let ahead = until.saturating_sub(clock_now);
            wall_now + TimeDuration::nanoseconds(i64::try_from(ahead).unwrap_or(i64::MAX))
        };
        let circuit = if snapshot.open_until.is_some() {
            "open"
        } else if snapshot.half_open {
            "half_open"
        } else {
            "closed"
        };
        let state = if snapshot.disabled {
            "disabled"
        } else if snapshot.open_until.is_some() {
            "open"
        } else if snapshot.resting_until.is_some() {
            "resting"
        } else if snapshot.half_open {
            "half_open"
        } else {
            "ok"
        };
        Self {
            index,
            state,
            disabled: snapshot.disabled,
            resting_until: snapshot.resting_until.map(wall),
            circuit,
            circuit_open_until: snapshot.open_until.map(wall),
            probing: snapshot.probing,
            consecutive_failures: snapshot.consecutive_failures,
        }
    }
}

/// `GET /admin/keys`: every configured client key.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeysView {
    pub object: &'static str,
    pub keys: Vec<ClientKeyView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientKeyView {
    /// The id its ledger rows carry (`/v1/usage?key_id=`).
    pub id: u64,
    pub name: String,
    pub active: bool,
    pub admin: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Each limit of the key, what remains of it and when it is whole again.
    pub limits: Vec<LimitView>,
}

impl ClientKeyView {
    pub(crate) fn new(key: &crate::config::ClientKeyConfig, limits: Vec<LimitView>) -> Self {
        Self {
            id: ledger_key_id(key),
            name: key.name.clone(),
            active: key.is_active,
            admin: key.admin,
            expires_at: key.expires_at,
            limits,
        }
    }
}

/// The last hour, in minutes.
const HOUR_BUCKETS: i64 = 60;
/// The last days, in hours.
const DAYS: i64 = 7;

/// `GET /admin/usage`: today's totals (all keys), split by model and by key,
/// and two series for the charts: the last hour by minute and the last
/// seven days by hour, each split by model and by key.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageView {
    pub object: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Since midnight UTC, as `/v1/usage`'s `today` for all keys.
    pub today: TotalsView,
    pub today_by_model: Vec<TotalsView>,
    pub today_by_key: Vec<TotalsView>,
    pub last_hour: SeriesView,
    pub last_days: SeriesView,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesView {
    /// `minute` or `hour`: how long one bucket is.
    pub bucket: &'static str,
    /// The first bucket's start and the end of the range (exclusive).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    /// Only buckets with records appear; the chart fills the others with 0.
    pub by_model: Vec<PointView>,
    pub by_key: Vec<PointView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PointView {
    /// The bucket's UTC time prefix: `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH`.
    pub bucket: String,
    #[serde(flatten)]
    pub totals: TotalsView,
}

impl From<SeriesPoint> for PointView {
    fn from(point: SeriesPoint) -> Self {
        Self {
            bucket: point.bucket,
            totals: point.totals.into(),
        }
    }
}

pub(crate) async fn usage(store: &dyn UsageStore) -> Result<UsageView, AdminError> {
    let now = OffsetDateTime::now_utc();
    // `until` is exclusive: a moment past now takes in what was just written.
    let until = now + TimeDuration::seconds(1);
    let query = |since, group_by| UsageQuery {
        key_id: None,
        model: None,
        since,
        until,
        group_by,
    };
    let day_start = now.replace_time(Time::MIDNIGHT);
    let today = store
        .totals(query(day_start, GroupBy::Nothing))
        .await?
        .into_iter()
        .next()
        .map(TotalsView::from)
        .unwrap_or_default();
    let views = |rows: Vec<crate::usage::UsageTotals>| -> Vec<TotalsView> {
        rows.into_iter().map(TotalsView::from).collect()
    };
    let today_by_model = views(store.totals(query(day_start, GroupBy::Model)).await?);
    let today_by_key = views(store.totals(query(day_start, GroupBy::Key)).await?);

    let minute_start = now
        .replace_second(0)
        .and_then(|time| time.replace_nanosecond(0))
        .unwrap_or(now);
    let hour_start = minute_start.replace_minute(0).unwrap_or(minute_start);
    let series = |since: OffsetDateTime, bucket: Bucket| async move {
        let points = |rows: Vec<SeriesPoint>| -> Vec<PointView> {
            rows.into_iter().map(PointView::from).collect()
        };
        Ok::<_, AdminError>(SeriesView {
            bucket: bucket.as_str(),
            since,
            until,
            by_model: points(store.series(query(since, GroupBy::Model), bucket).await?),
            by_key: points(store.series(query(since, GroupBy::Key), bucket).await?),
        })
    };
    let last_hour = series(
        minute_start - TimeDuration::minutes(HOUR_BUCKETS - 1),
        Bucket::Minute,
    )
    .await?;
    let last_days = series(
        hour_start - TimeDuration::hours(DAYS * 24 - 1),
        Bucket::Hour,
    )
    .await?;
    Ok(UsageView {
        object: "admin.usage",
        time: now,
        today,
        today_by_model,
        today_by_key,
        last_hour,
        last_days,
    })
}

/// How far back `/admin/errors` looks.
const ERRORS_SINCE: TimeDuration = TimeDuration::days(DAYS);
/// The most `/admin/errors` lists, whatever it is asked.
pub const MAX_ERRORS: usize = 200;

/// `GET /admin/errors`: the latest requests that did not end `ok`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorsView {
    pub object: &'static str,
    pub data: Vec<ErrorView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorView {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub request_id: String,
    pub key_id: u64,
    pub key_name: String,
    pub model: String,
    /// How the request ended, as the ledger says: `invalid`, `refused`,
    /// `upstream_failed`, `stream_failed` or `client_gone`.
    pub outcome: &'static str,
    /// The limit that refused it (`key rpm`, ...), when one did.
    pub refused_by: Option<String>,
    /// The error's message, scrubbed of account details.
    pub message: Option<String>,
    pub entry_index: Option<usize>,
    pub provider_key_index: Option<usize>,
}

impl From<UsageRecord> for ErrorView {
    fn from(record: UsageRecord) -> Self {
        Self {
            time: record.time,
            request_id: record.request_id,
            key_id: record.key_id,
            key_name: record.key_name,
            model: record.model,
            outcome: record.outcome.as_str(),
            refused_by: record.refused_by.map(|limit| limit.to_string()),
            message: record.error,
            entry_index: record.entry_index,
            provider_key_index: record.provider_key_index,
        }
    }
}

pub(crate) async fn errors(store: &dyn UsageStore, limit: usize) -> Result<ErrorsView, AdminError> {
    let records = store
        .recent_errors(ErrorQuery {
            since: OffsetDateTime::now_utc() - ERRORS_SINCE,
            limit: limit.min(MAX_ERRORS),
        })
        .await?;
    Ok(ErrorsView {
        object: "list",
        data: records.into_iter().map(ErrorView::from).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn health_views_name_one_state_and_wall_clock_times() {
        const SECOND: u64 = 1_000_000_000;
        let wall_now = datetime!(2024-05-01 12:00 UTC);
        let check = |snapshot: HealthSnapshot, state: &str, circuit: &str| {
            let view = KeyHealthView::new(Some(1), snapshot, 10 * SECOND, wall_now);
            assert_eq!((view.state, view.circuit), (state, circuit), "{snapshot:?}");
            view
        };
        let healthy = HealthSnapshot {
            resting_until: None,
            disabled: false,
            open_until: None,
            half_open: false,
            probing: false,
            consecutive_failures: 0,
        };
        check(healthy, "ok", "closed");
        let resting = check(
            HealthSnapshot {
                resting_until: Some(13 * SECOND),
                ..healthy
            },
            "resting",
            "closed",
        );
        assert_eq!(
            resting.resting_until,
            Some(datetime!(2024-05-01 12:00:03 UTC))
        );
        let open = check(
            HealthSnapshot {
                open_until: Some(40 * SECOND),
                resting_until: Some(13 * SECOND),
                ..healthy
            },
            "open",
            "open",
        );
        assert_eq!(
            open.circuit_open_until,
            Some(datetime!(2024-05-01 12:00:30 UTC))
        );
        check(
            HealthSnapshot {
                half_open: true,
                ..healthy
            },
            "half_open",
            "half_open",
        );
        check(
            HealthSnapshot {
                disabled: true,
                open_until: Some(40 * SECOND),
                ..healthy
            },
            "disabled",
            "open",
        );
    }
}
