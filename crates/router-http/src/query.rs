//! The query string of `GET /v1/usage`, parsed into the engine's question.
//!
//! Strict on purpose: an unknown or repeated parameter is a 400 naming it,
//! because a typo (`group=model`) silently ignored would answer a different
//! question than the one asked. Values are never echoed back (a client may
//! paste its key in the wrong place, and errors are logged).

use router_core::usage::GroupBy;
use router_core::UsageRequest;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

use crate::error::ApiError;
use crate::handler::percent_decode;

const KNOWN: &str = "key_id, all, model, group_by, since, until";

/// Parses `key_id`, `all`, `model`, `group_by`, `since` and `until`.
///
/// `since` and `until` take RFC 3339 (any offset, converted to UTC) or a
/// UTC date `YYYY-MM-DD`. A date means its whole day: `since=2024-05-01`
/// starts at that midnight and `until=2024-05-31` takes in all of the 31st,
/// so `since=D&until=D` is the day D. `+` is taken literally, not as a
/// space, so an unescaped offset (`+02:00`) arrives intact.
pub(crate) fn usage_request(query: Option<&str>) -> Result<UsageRequest, ApiError> {
    let mut request = UsageRequest::default();
    let mut seen: Vec<String> = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name);
        let value = percent_decode(value);
        if seen.iter().any(|seen| *seen == name) {
            return Err(ApiError::invalid_param(
                &name,
                format!("Query parameter `{name}` is given more than once"),
            ));
        }
        let invalid = |expected: &str| {
            ApiError::invalid_param(
                &name,
                format!("Query parameter `{name}` must be {expected}"),
            )
        };
        match &*name {
            "key_id" => {
                let id = value
                    .parse()
                    .map_err(|_| invalid("a key id (a whole number)"))?;
                request.key_id = Some(id);
            }
            "all" => {
                request.all_keys = match &*value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("`true` or `false`")),
                }
            }
            "model" if value.is_empty() => return Err(invalid("a model name")),
            "model" => request.model = Some(value.into_owned()),
            "group_by" => {
                request.group_by = match &*value {
                    "none" => GroupBy::Nothing,
                    "key" => GroupBy::Key,
                    "model" => GroupBy::Model,
                    "day" => GroupBy::Day,
                    "hour" => GroupBy::Hour,
                    "minute" => GroupBy::Minute,
                    _ => {
                        return Err(invalid(
                            "one of `none`, `key`, `model`, `day`, `hour`, `minute`",
                        ))
                    }
                }
            }
            "since" => {
                request.since = Some(
                    moment(&value, DayEdge::Start)
                        .ok_or_else(|| invalid("an RFC 3339 time or a date YYYY-MM-DD"))?,
                );
            }
            "until" => {
                request.until = Some(
                    moment(&value, DayEdge::End)
                        .ok_or_else(|| invalid("an RFC 3339 time or a date YYYY-MM-DD"))?,
                );
            }
            _ => return Err(ApiError::unknown_param(&name, KNOWN)),
        }
        seen.push(name.into_owned());
    }
    if request.all_keys && request.key_id.is_some() {
        return Err(ApiError::invalid_param(
            "all",
            "Give either `key_id` (one key) or `all=true` (every key), not both".to_owned(),
        ));
    }
    if let (Some(since), Some(until)) = (request.since, request.until) {
        if until <= since {
            return Err(ApiError::invalid_param(
                "until",
                "`until` must be later than `since`".to_owned(),
            ));
        }
    }
    Ok(request)
}

/// Which edge of a day a bare date stands for.
#[derive(Debug, Clone, Copy)]
enum DayEdge {
    Start,
    /// The next midnight (`until` is exclusive), so the day is taken in whole.
    End,
}

fn moment(text: &str, edge: DayEdge) -> Option<OffsetDateTime> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(time.to_offset(UtcOffset::UTC));
    }
    let date = Date::parse(text, format_description!("[year]-[month]-[day]")).ok()?;
    let date = match edge {
        DayEdge::Start => date,
        DayEdge::End => date.next_day()?,
    };
    Some(date.midnight().assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::Value;
    use time::macros::datetime;

    fn parsed(query: &str) -> UsageRequest {
        usage_request(Some(query)).unwrap_or_else(|error| panic!("{query}: {error:?}"))
    }

    /// The `param` of the 400 the query gets.
    fn refused(query: &str) -> String {
        let error = usage_request(Some(query)).expect_err(query);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{query}");
        let json: Value = serde_json::from_slice(&error.to_json()).unwrap();
        json["error"]["param"].as_str().unwrap().to_owned()
    }

    #[test]
    fn nothing_asks_for_the_own_key_this_month() {
        assert_eq!(usage_request(None).unwrap(), UsageRequest::default());
        assert_eq!(parsed(""), UsageRequest::default());
        assert_eq!(parsed("&&"), UsageRequest::default());
    }

    #[test]
    fn every_parameter() {
        let request = parsed(
            "key_id=42&model=openai%2Fgpt-4o&group_by=day&since=2024-05-01\
             &until=2024-05-31T12:00:00+02:00",
        );
        assert_eq!(
            request,
            UsageRequest {
                key_id: Some(42),
                all_keys: false,
                model: Some("openai/gpt-4o".into()),
                group_by: GroupBy::Day,
                since: Some(datetime!(2024-05-01 0:00 UTC)),
                until: Some(datetime!(2024-05-31 10:00 UTC)),
            }
        );
        assert!(parsed("all=true&group_by=key").all_keys);
        assert!(!parsed("all=false").all_keys);
        assert_eq!(parsed("group_by=model").group_by, GroupBy::Model);
        assert_eq!(parsed("group_by=none").group_by, GroupBy::Nothing);
        assert_eq!(parsed("group_by=hour").group_by, GroupBy::Hour);
        assert_eq!(parsed("group_by=minute").group_by, GroupBy::Minute);
    }

    #[test]
    fn a_date_means_its_whole_day() {
        let day = parsed("since=2024-02-29&until=2024-02-29");
        assert_eq!(day.since, Some(datetime!(2024-02-29 0:00 UTC)));
        assert_eq!(day.until, Some(datetime!(2024-03-01 0:00 UTC)));
        let year_end = parsed("until=2024-12-31");
        assert_eq!(year_end.until, Some(datetime!(2025-01-01 0:00 UTC)));
        let escaped = parsed("since=2024-05-01T00%3A00%3A00%2B02%3A00");
        assert_eq!(escaped.since, Some(datetime!(2024-04-30 22:00 UTC)));
    }

    #[test]
    fn bad_parameters_are_named() {
        fn check(query: &str, param: &str) {
            assert_eq!(refused(query), param, "{query}");
        }
        check("key_id=abc", "key_id");
        check("key_id=-1", "key_id");
        check("key_id=", "key_id");
        check("all=yes", "all");
        check("group_by=week", "group_by");
        check("model=", "model");
        check("since=yesterday", "since");
        check("since=2024-13-01", "since");
        check("until=2024-05-01T25:00:00Z", "until");
        check("group=model", "group");
        check("key=sk-live-123", "key");
        check("model=a&model=b", "model");
        check("all=true&key_id=3", "all");
        check("since=2024-05-02&until=2024-05-01", "until");
        check(
            "since=2024-05-01T00:00:00Z&until=2024-05-01T00:00:00Z",
            "until",
        );
    }

    #[test]
    fn values_are_not_echoed() {
        let error = usage_request(Some("key_id=sk-live-123")).unwrap_err();
        assert!(!error.message().contains("sk-live"), "{}", error.message());
        let error = usage_request(Some("key=sk-live-123")).unwrap_err();
        assert!(!error.message().contains("sk-live"), "{}", error.message());
    }
}
