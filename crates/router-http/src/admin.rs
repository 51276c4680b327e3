//! The operator's side: the read-only JSON views on `/admin/*` (admin keys
//! only) and the dashboard on `/ui` that reads them.
//!
//! The dashboard is three files compiled into the binary (`assets/ui.html`,
//! `ui.js`, `ui.css`): no CDN, no build step, nothing fetched at run time.
//! The page itself holds no data and needs no key; it asks for an admin key,
//! keeps it in the tab's `sessionStorage`, and sends it to `/admin/*` as a
//! bearer token like any client would.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::error::ApiError;
use crate::handler::percent_decode;

/// One of the JSON views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminView {
    Models,
    Keys,
    Usage,
    Errors,
}

impl AdminView {
    pub(crate) fn find(path: &str) -> Option<Self> {
        match path {
            "/admin/models" => Some(Self::Models),
            "/admin/keys" => Some(Self::Keys),
            "/admin/usage" => Some(Self::Usage),
            "/admin/errors" => Some(Self::Errors),
            _ => None,
        }
    }

    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Models => "/admin/models",
            Self::Keys => "/admin/keys",
            Self::Usage => "/admin/usage",
            Self::Errors => "/admin/errors",
        }
    }

    /// The `route` label of `http_requests_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Models => "admin_models",
            Self::Keys => "admin_keys",
            Self::Usage => "admin_usage",
            Self::Errors => "admin_errors",
        }
    }
}

/// One file of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asset {
    Page,
    Script,
    Style,
}

const PAGE: &str = include_str!("../assets/ui.html");
const SCRIPT: &str = include_str!("../assets/ui.js");
const STYLE: &str = include_str!("../assets/ui.css");

/// The page loads nothing but its own script and style, talks to nothing
/// but this origin, and may not be framed: a page that holds an admin key
/// must not run anyone else's code.
const CONTENT_SECURITY_POLICY: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
);
/// The assets change with the binary only; revalidating keeps a browser
/// from running the script of an older build.
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
/// Admin answers describe keys and traffic: no cache keeps a copy.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

impl Asset {
    pub(crate) fn find(path: &str) -> Option<Self> {
        match path {
            "/ui" | "/ui/" => Some(Self::Page),
            "/ui/ui.js" => Some(Self::Script),
            "/ui/ui.css" => Some(Self::Style),
            _ => None,
        }
    }

    pub(crate) fn respond(self) -> Response<ResponseBody> {
        let (text, content_type) = match self {
            Self::Page => (PAGE, "text/html; charset=utf-8"),
            Self::Script => (SCRIPT, "text/javascript; charset=utf-8"),
            Self::Style => (STYLE, "text/css; charset=utf-8"),
        };
        let mut response = Response::new(ResponseBody::full(Bytes::from_static(text.as_bytes())));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(CACHE_CONTROL, NO_CACHE);
        headers.insert("content-security-policy", CONTENT_SECURITY_POLICY);
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        response
    }
}

/// How many errors `/admin/errors` lists when not told.
pub(crate) const DEFAULT_ERRORS: usize = 50;

/// The query string of an admin view: `limit` on `/admin/errors`, nothing
/// on the others. Strict like `/v1/usage`'s: an unknown parameter is a 400.
pub(crate) fn limit(view: AdminView, query: Option<&str>) -> Result<usize, ApiError> {
    let mut limit = None;
    for pair in query.unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name);
        match (&*name, view) {
            ("limit", AdminView::Errors) if limit.is_none() => {
                let max = router_core::admin::MAX_ERRORS;
                limit = Some(
                    percent_decode(value)
                        .parse::<usize>()
                        .ok()
                        .filter(|limit| (1..=max).contains(limit))
                        .ok_or_else(|| {
                            ApiError::invalid_param(
                                "limit",
                                format!("Query parameter `limit` must be a number from 1 to {max}"),
                            )
                        })?,
                );
            }
            ("limit", AdminView::Errors) => {
                return Err(ApiError::invalid_param(
                    "limit",
                    "Query parameter `limit` is given more than once".to_owned(),
                ))
            }
            (_, AdminView::Errors) => return Err(ApiError::unknown_param(&name, "limit")),
            _ => return Err(ApiError::unknown_param(&name, "(none)")),
        }
    }
    Ok(limit.unwrap_or(DEFAULT_ERRORS))
}

/// A view's JSON with the headers admin answers carry.
pub(crate) fn json(body: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, crate::error::APPLICATION_JSON);
    headers.insert(CACHE_CONTROL, NO_STORE);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(AdminView::find("/admin/models"), Some(AdminView::Models));
        assert_eq!(AdminView::find("/admin/errors"), Some(AdminView::Errors));
        assert_eq!(AdminView::find("/admin/"), None);
        assert_eq!(AdminView::find("/admin/models/"), None);
        for view in [
            AdminView::Models,
            AdminView::Keys,
            AdminView::Usage,
            AdminView::Errors,
        ] {
            assert_eq!(AdminView::find(view.path()), Some(view));
        }
        assert_eq!(Asset::find("/ui"), Some(Asset::Page));
        assert_eq!(Asset::find("/ui/"), Some(Asset::Page));
        assert_eq!(Asset::find("/ui/ui.js"), Some(Asset::Script));
        assert_eq!(Asset::find("/ui/ui.css"), Some(Asset::Style));
        assert_eq!(Asset::find("/ui/other.js"), None);
    }

    #[test]
    fn only_errors_take_a_limit() {
        let check = |view, query: &str, expected: Result<usize, &str>| {
            let query = (!query.is_empty()).then_some(query);
            let answer = limit(view, query).map_err(|error| error.message().to_owned());
            match expected {
                Ok(n) => assert_eq!(answer, Ok(n), "{query:?}"),
                Err(part) => {
                    let message = answer.unwrap_err();
                    assert!(message.contains(part), "{query:?}: {message}");
                }
            }
        };
        check(AdminView::Errors, "", Ok(DEFAULT_ERRORS));
        check(AdminView::Errors, "limit=5", Ok(5));
        check(AdminView::Errors, "limit=200", Ok(200));
        check(AdminView::Errors, "limit=0", Err("from 1 to 200"));
        check(AdminView::Errors, "limit=201", Err("from 1 to 200"));
        check(AdminView::Errors, "limit=x", Err("from 1 to 200"));
        check(AdminView::Errors, "limit=1&limit=2", Err("more than once"));
        check(AdminView::Errors, "since=1", Err("`since`"));
        check(AdminView::Models, "", Ok(DEFAULT_ERRORS));
        check(AdminView::Models, "limit=5", Err("`limit`"));
    }

    #[test]
    fn assets_are_compiled_in_and_locked_down() {
        let page = Asset::Page.respond();
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        // The page names its own files and nothing from elsewhere.
        assert!(PAGE.contains("/ui/ui.js") && PAGE.contains("/ui/ui.css"));
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
        // The one URL in the script is SVG's namespace name, which is never fetched.
        let script = SCRIPT.replace("http://www.w3.org/2000/svg", "");
        assert!(!script.contains("http://") && !script.contains("https://"));
        // The key is kept for the tab only.
        assert!(SCRIPT.contains("sessionStorage") && !SCRIPT.contains("localStorage"));
    }
}
