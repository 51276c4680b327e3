//! OpenAI's rate-limit headers: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
//!
//! Clients written against OpenAI (its SDKs, LangChain, LiteLLM) read these
//! to pace themselves, so they carry the same names and formats: counts as
//! integers, resets as Go's `time.Duration` text (`1s`, `6m0s`, `120ms`),
//! which is what OpenAI's servers send.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use router_core::limits::{Headroom, Measure, RateInfo, Refusal};

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// The rate a response reports: what admission left, except that the limit
/// which refused a request speaks for its measure (it is, by definition,
/// the one that binds). Its reset is the refusal's retry time: the soonest
/// the same request may pass, which is what a client pacing itself needs.
pub(crate) fn reported(rate: RateInfo, refusal: Option<&Refusal>) -> RateInfo {
    let Some(refusal) = refusal.filter(|refusal| !refusal.never_fits) else {
        return rate;
    };
    let headroom = Headroom {
        name: refusal.name,
        limit: refusal.limit,
        remaining: refusal.remaining,
        reset: refusal.retry_after,
    };
    match refusal.name.measure {
        Measure::Requests => RateInfo {
            requests: Some(headroom),
            ..rate
        },
        Measure::Tokens => RateInfo {
            tokens: Some(headroom),
            ..rate
        },
        // Budgets have no OpenAI header; the error body names them.
        Measure::Cost => rate,
    }
}

/// Adds the triple of each measure `rate` knows about; a measure without a
/// limit gets no headers (OpenAI omits them too).
pub(crate) fn insert_headers(headers: &mut HeaderMap, rate: RateInfo) {
    let triples = [
        (
            rate.requests,
            [LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS],
        ),
        (rate.tokens, [LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS]),
    ];
    for (headroom, [limit, remaining, reset]) in triples {
        let Some(headroom) = headroom else { continue };
        headers.insert(limit, HeaderValue::from(headroom.limit));
        headers.insert(remaining, HeaderValue::from(headroom.remaining));
        // Digits and the letters h, m, s: always a valid header value.
        if let Ok(value) = HeaderValue::try_from(go_duration(headroom.reset)) {
            headers.insert(reset, value);
        }
    }
}

/// A duration as Go's `time.Duration.String()` writes it, at millisecond
/// precision (OpenAI's): `0s`, `120ms`, `1s`, `1.5s`, `6m0s`, `1h2m3.004s`.
///
/// Rounded up to the millisecond, so a client that waits this long never
/// arrives early.
pub(crate) fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis() + u128::from(duration.subsec_nanos() % 1_000_000 != 0);
    // Digits pushed by hand: `format!` costs several times as much, and this
    // runs for every limited response.
    let mut text = String::with_capacity(16);
    if millis == 0 {
        text.push_str("0s");
        return text;
    }
    if millis < 1000 {
        push_decimal(&mut text, millis);
        text.push_str("ms");
        return text;
    }
    let hours = millis / 3_600_000;
    let minutes = millis / 60_000 % 60;
    let seconds = millis / 1000 % 60;
    let fraction = millis % 1000;
    if hours > 0 {
        push_decimal(&mut text, hours);
        text.push('h');
    }
    if hours > 0 || minutes > 0 {
        push_decimal(&mut text, minutes);
        text.push('m');
    }
    push_decimal(&mut text, seconds);
    if fraction > 0 {
        // Three digits, trailing zeros dropped: `.5`, `.64`, `.004`.
        let digits = [fraction / 100, fraction / 10 % 10, fraction % 10];
        let kept = if digits[2] != 0 {
            3
        } else if digits[1] != 0 {
            2
        } else {
            1
        };
        text.push('.');
        for digit in &digits[..kept] {
            text.push(decimal_digit(*digit));
        }
    }
    text.push('s');
    text
}

/// `n` in decimal, appended to `text`.
fn push_decimal(text: &mut String, mut n: u128) {
    // u128::MAX has 39 digits.
    let mut digits = [0u8; 39];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for digit in &digits[start..] {
        text.push(char::from(*digit));
    }
}

/// The ASCII digit of `digit` (0..=9).
fn decimal_digit(digit: u128) -> char {
    char::from(b'0' + (digit % 10) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use router_core::limits::{LimitName, Scope, Window};

    #[test]
    fn durations_read_like_go() {
        fn check(duration: Duration, expected: &str) {
            assert_eq!(go_duration(duration), expected, "{duration:?}");
        }
        check(Duration::ZERO, "0s");
        check(Duration::from_nanos(1), "1ms");
        check(Duration::from_micros(999_001), "1s");
        check(Duration::from_millis(120), "120ms");
        check(Duration::from_millis(500), "500ms");
        check(Duration::from_millis(999), "999ms");
        check(Duration::from_secs(1), "1s");
        check(Duration::from_millis(1500), "1.5s");
        check(Duration::from_millis(8640), "8.64s");
        check(Duration::from_millis(59_999), "59.999s");
        check(Duration::from_secs(60), "1m0s");
        check(Duration::from_secs(360), "6m0s");
        check(Duration::from_millis(61_001), "1m1.001s");
        check(Duration::from_secs(3600), "1h0m0s");
        check(Duration::from_millis(3_723_004), "1h2m3.004s");
        check(Duration::from_secs(86_400), "24h0m0s");
        check(Duration::from_secs(31 * 86_400), "744h0m0s");
    }

    fn headroom(measure: Measure, window: Window, limit: u64, remaining: u64) -> Headroom {
        Headroom {
            name: LimitName {
                scope: Scope::Key,
                measure,
                window,
            },
            limit,
            remaining,
            reset: Duration::from_millis(1500),
        }
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).map(|value| value.to_str().unwrap())
    }

    #[test]
    fn each_known_measure_gets_its_triple() {
        let mut headers = HeaderMap::new();
        insert_headers(
            &mut headers,
            RateInfo {
                requests: Some(headroom(Measure::Requests, Window::Minute, 60, 59)),
                tokens: None,
            },
        );
        assert_eq!(header(&headers, "x-ratelimit-limit-requests"), Some("60"));
        assert_eq!(
            header(&headers, "x-ratelimit-remaining-requests"),
            Some("59")
        );
        assert_eq!(header(&headers, "x-ratelimit-reset-requests"), Some("1.5s"));
        assert_eq!(headers.len(), 3);

        let mut headers = HeaderMap::new();
        insert_headers(&mut headers, RateInfo::default());
        assert!(headers.is_empty());
    }

    fn refusal(measure: Measure, never_fits: bool) -> Refusal {
        Refusal {
            name: LimitName {
                scope: Scope::Model,
                measure,
                window: Window::Minute,
            },
            limit: 10,
            remaining: 0,
            retry_after: Duration::from_secs(6),
            never_fits,
        }
    }

    #[test]
    fn the_refusing_limit_speaks_for_its_measure() {
        let admitted = RateInfo {
            requests: Some(headroom(Measure::Requests, Window::Minute, 60, 59)),
            tokens: Some(headroom(Measure::Tokens, Window::Minute, 1000, 900)),
        };
        let tokens = reported(admitted, Some(&refusal(Measure::Tokens, false)));
        assert_eq!(tokens.requests, admitted.requests);
        let refused = tokens.tokens.unwrap();
        assert_eq!((refused.limit, refused.remaining), (10, 0));
        assert_eq!(refused.reset, Duration::from_secs(6));

        let requests = reported(
            RateInfo::default(),
            Some(&refusal(Measure::Requests, false)),
        );
        assert_eq!(requests.requests.unwrap().limit, 10);
        assert_eq!(requests.tokens, None);

        // Neither a request that can never fit nor a budget has a triple to report.
        assert_eq!(
            reported(admitted, Some(&refusal(Measure::Tokens, true))),
            admitted
        );
        assert_eq!(
            reported(admitted, Some(&refusal(Measure::Cost, false))),
            admitted
        );
        assert_eq!(reported(admitted, None), admitted);
    }
}
