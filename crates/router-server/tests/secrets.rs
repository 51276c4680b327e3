//! What clients and logs learn of the operator: the real binary in front of
//! upstreams that answer with real-shaped error bodies full of account
//! details (OpenAI, Gemini's OpenAI endpoint, Anthropic, Azure, vLLM,
//! Ollama), upstream headers that name the account, and clients that try to
//! forge log lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;
#[path = "../../router-providers/tests/support/mod.rs"]
mod upstream;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use process::{call, client, Answer, RouterProcess};
use serde_json::{json, Value};
use upstream::{Recorded, Reply, Upstream};

/// The operator's provider key: no vendor shape, so only the verbatim rule
/// can catch it.
const PROVIDER_KEY: &str = "pk-secrets-Pz7Qm2Lx";
const CLIENT_KEY: &str = "client-secrets-Hv4Wn8";
/// Another client's key, which the upstream has no business knowing but
/// echoes all the same.
const OTHER_CLIENT_KEY: &str = "client-other-Kd3Rt5";

const ORG: &str = "org-Q8mZt2LpX4vN6rB1sK3jH7dW";
const PROJECT: &str = "proj_Ab12Cd34Ef56Gh78";
const EMAIL: &str = "billing-owner@acme-corp.example";
const GOOGLE_KEY: &str = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY";
const PROJECT_NUMBER: &str = "123456789012";
const SUBSCRIPTION: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const UPSTREAM_REQUEST_ID: &str = "req_9f8e7d6c5b4a39281706f5e4";

/// Everything that must never reach a client or a log line.
const SECRETS: &[&str] = &[
    PROVIDER_KEY,
    CLIENT_KEY,
    OTHER_CLIENT_KEY,
    ORG,
    PROJECT,
    EMAIL,
    GOOGLE_KEY,
    PROJECT_NUMBER,
    SUBSCRIPTION,
    UPSTREAM_REQUEST_ID,
    // Fragments of masked keys as vendors echo them.
    "sk-abc",
    "sk-proj-",
    "sk-ant-",
    "AIza",
    "****",
];

#[track_caller]
fn assert_no_secret(text: &str, what: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
    }
}

/// One upstream error and what the client must see of it.
struct Case {
    vendor: &'static str,
    status: u16,
    body: String,
    client_status: u16,
    client_code: &'static str,
    /// Pieces of the upstream's message that say what was wrong: they stay.
    keeps: &'static [&'static str],
}

fn case(
    vendor: &'static str,
    status: u16,
    body: Value,
    client_status: u16,
    client_code: &'static str,
    keeps: &'static [&'static str],
) -> Case {
    Case {
        vendor,
        status,
        body: body.to_string(),
        client_status,
        client_code,
        keeps,
    }
}

fn openai(message: &str, kind: &str, param: Value, code: Value) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// Gemini's OpenAI endpoint wraps its native error in a one-element array.
fn gemini(code: u16, message: &str, status: &str) -> Value {
    json!([{"error": {"code": code, "message": message, "status": status}}])
}

fn anthropic(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn azure(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

fn vllm(message: &str, kind: &str, code: u16) -> Value {
    json!({"object": "error", "message": message, "type": kind, "param": null, "code": code})
}

fn ollama(message: &str) -> Value {
    json!({ "error": message })
}

fn table() -> Vec<Case> {
    vec![
        case(
            "openai",
            401,
            openai(
                "Incorrect API key provided: sk-abc...xyz. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                Value::Null,
                json!("invalid_api_key"),
            ),
            502,
            "upstream_auth_error",
            &["Incorrect API key provided", "platform.openai.com/account/api-keys"],
        ),
        case(
            "openai",
            401,
            openai(
                "Incorrect API key provided: sk-proj-****************************************\
                 ****************************rI4A. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                Value::Null,
                json!("invalid_api_key"),
            ),
            502,
            "upstream_auth_error",
            &["Incorrect API key provided"],
        ),
        case(
            "openai",
            401,
            openai(
                &format!("Incorrect API key provided: {PROVIDER_KEY}."),
                "invalid_request_error",
                Value::Null,
                json!("invalid_api_key"),
            ),
            502,
            "upstream_auth_error",
            &["Incorrect API key provided"],
        ),
        case(
            "openai",
            429,
            openai(
                &format!(
                    "Rate limit reached for gpt-4o in organization {ORG} on tokens per min \
                     (TPM): Limit 30000, Used 29950, Requested 1200. Please try again in 2.3s. \
                     Visit https://platform.openai.com/account/rate-limits to learn more."
                ),
                "tokens",
                Value::Null,
                json!("rate_limit_exceeded"),
            ),
            429,
            "rate_limit_exceeded",
            &["Rate limit reached for gpt-4o", "Limit 30000", "tokens per min"],
        ),
        case(
            "openai",
            400,
            openai(
                &format!(
                    "Invalid value for 'temperature': expected a number <= 2, got 3.5 \
                     (organization {ORG}, project {PROJECT})."
                ),
                "invalid_request_error",
                json!("temperature"),
                json!("invalid_value"),
            ),
            400,
            "upstream_client_error",
            &["Invalid value for 'temperature'", "expected a number <= 2"],
        ),
        case(
            "openai",
            400,
            openai(
                "This model's maximum context length is 128000 tokens. However, your messages \
                 resulted in 130512 tokens. Please reduce the length of the messages.",
                "invalid_request_error",
                json!("messages"),
                json!("context_length_exceeded"),
            ),
            400,
            "upstream_client_error",
            &["maximum context length is 128000 tokens", "130512 tokens"],
        ),
        case(
            "openai",
            403,
            openai(
                &format!("Project `{PROJECT}` does not have access to model `gpt-4o`"),
                "invalid_request_error",
                Value::Null,
                json!("model_not_found"),
            ),
            502,
            "upstream_auth_error",
            &["does not have access to model `gpt-4o`"],
        ),
        case(
            "openai",
            404,
            openai(
                &format!(
                    "The model `gpt-5-turbo` does not exist or you do not have access to it \
                     in organization {ORG}."
                ),
                "invalid_request_error",
                Value::Null,
                json!("model_not_found"),
            ),
            404,
            "upstream_client_error",
            &["The model `gpt-5-turbo` does not exist"],
        ),
        case(
            "openai",
            500,
            openai(
                &format!(
                    "The server had an error while processing your request. Sorry about that! \
                     You can retry your request, or contact us through our help center at \
                     help.openai.com if the error persists. (Please include the request ID \
                     {UPSTREAM_REQUEST_ID} in your message.)"
                ),
                "server_error",
                Value::Null,
                Value::Null,
            ),
            502,
            "upstream_error",
            &["The server had an error while processing your request"],
        ),
        case(
            "openai",
            400,
            openai(
                &format!(
                    "Invalid 'user': '{CLIENT_KEY}' looks like a credential, as does \
                     '{OTHER_CLIENT_KEY}'."
                ),
                "invalid_request_error",
                json!("user"),
                json!("invalid_value"),
            ),
            400,
            "upstream_client_error",
            &["Invalid 'user'", "looks like a credential"],
        ),
        case(
            "gemini",
            400,
            gemini(
                400,
                "API key not valid. Please pass a valid API key.",
                "INVALID_ARGUMENT",
            ),
            400,
            "upstream_client_error",
            &["API key not valid. Please pass a valid API key."],
        ),
        case(
            "gemini",
            403,
            gemini(
                403,
                &format!(
                    "Generative Language API has not been used in project {PROJECT_NUMBER} \
                     before or it is disabled. Enable it by visiting \
                     https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project={PROJECT_NUMBER} \
                     then retry."
                ),
                "PERMISSION_DENIED",
            ),
            502,
            "upstream_auth_error",
            &["Generative Language API has not been used in project", "then retry"],
        ),
        case(
            "gemini",
            429,
            gemini(
                429,
                &format!(
                    "Quota exceeded for quota metric 'Generate Content API requests per \
                     minute' and limit 'GenerateContent request limit per minute for a region' \
                     of service 'generativelanguage.googleapis.com' for consumer \
                     'api_key:{GOOGLE_KEY}'."
                ),
                "RESOURCE_EXHAUSTED",
            ),
            429,
            "rate_limit_exceeded",
            &["Quota exceeded for quota metric", "requests per minute"],
        ),
        case(
            "gemini",
            404,
            gemini(
                404,
                "models/gemini-9.0-pro is not found for API version v1beta, or is not \
                 supported for generateContent.",
                "NOT_FOUND",
            ),
            404,
            "upstream_client_error",
            &["models/gemini-9.0-pro is not found"],
        ),
        case(
            "anthropic",
            400,
            anthropic(
                "invalid_request_error",
                "prompt is too long: 215000 tokens > 200000 maximum",
            ),
            400,
            "upstream_client_error",
            &["prompt is too long: 215000 tokens > 200000 maximum"],
        ),
        case(
            "anthropic",
            401,
            anthropic("authentication_error", "invalid x-api-key sk-ant-api03-Xy…Q9"),
            502,
            "upstream_auth_error",
            &["invalid x-api-key"],
        ),
        case(
            "anthropic",
            403,
            anthropic(
                "permission_error",
                &format!(
                    "Your API key (sk-ant-api03-Xy…Q9) of {EMAIL} does not have permission \
                     to use the specified resource."
                ),
            ),
            502,
            "upstream_auth_error",
            &["does not have permission to use the specified resource"],
        ),
        case(
            "anthropic",
            429,
            anthropic(
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit \
                 (https://docs.anthropic.com/en/api/rate-limits); see the response headers \
                 for current usage.",
            ),
            429,
            "rate_limit_exceeded",
            &["exceeded your per-minute rate limit"],
        ),
        case(
            "anthropic",
            500,
            anthropic("api_error", "Internal server error"),
            502,
            "upstream_error",
            &["Internal server error"],
        ),
        case(
            "azure",
            429,
            azure(
                "429",
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API \
                 version 2024-02-01 have exceeded token rate limit of your current OpenAI S0 \
                 pricing tier. Please retry after 6 seconds.",
            ),
            429,
            "rate_limit_exceeded",
            &["ChatCompletions_Create", "2024-02-01", "retry after 6 seconds"],
        ),
        case(
            "azure",
            401,
            azure(
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make \
                 sure to provide a valid key for an active subscription and use a correct \
                 regional API endpoint for your resource.",
            ),
            502,
            "upstream_auth_error",
            &["Access denied due to invalid subscription key"],
        ),
        case(
            "azure",
            403,
            azure(
                "403",
                &format!(
                    "Subscription {SUBSCRIPTION} is disabled for resource /subscriptions/\
                     {SUBSCRIPTION}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices."
                ),
            ),
            502,
            "upstream_auth_error",
            &["is disabled for resource"],
        ),
        case(
            "azure",
            404,
            azure(
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the \
                 deployment within the last 5 minutes, please wait a moment and try again.",
            ),
            404,
            "upstream_client_error",
            &["The API deployment for this resource does not exist"],
        ),
        case(
            "vllm",
            400,
            vllm(
                "This model's maximum context length is 4096 tokens. However, you requested \
                 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce \
                 the length of the messages or completion.",
                "BadRequestError",
                400,
            ),
            400,
            "upstream_client_error",
            &["maximum context length is 4096 tokens", "you requested 5000 tokens"],
        ),
        case(
            "vllm",
            404,
            vllm(
                "The model `llama-3-70b` does not exist.",
                "NotFoundError",
                404,
            ),
            404,
            "upstream_client_error",
            &["The model `llama-3-70b` does not exist."],
        ),
        case(
            "vllm",
            500,
            vllm(
                &format!("Engine loop has died; contact {EMAIL}"),
                "InternalServerError",
                500,
            ),
            502,
            "upstream_error",
            &["Engine loop has died"],
        ),
        case(
            "ollama",
            404,
            ollama("model 'llama3:70b' not found, try pulling it first"),
            404,
            "upstream_client_error",
            &["model 'llama3:70b' not found, try pulling it first"],
        ),
        case(
            "ollama",
            500,
            ollama("llama runner process has terminated: exit status 2"),
            502,
            "upstream_error",
            &["llama runner process has terminated"],
        ),
    ]
}

/// A router whose model `case-<i>` goes to the upstream's `/case-<i>/v1`,
/// one entry and one provider key each (an upstream 401 disables a key
/// until restart, so cases must not share one).
fn router_for(upstream: &Upstream, names: &[String]) -> RouterProcess {
    let mut config =
        String::from("server:\n  host: 127.0.0.1\n  port: 0\n  max_body_bytes: 4194304\nmodels:\n");
    for name in names {
        config.push_str(&format!(
            "  - name: {name}\n    base_url: {}\n    is_openai_compatibility: true\n    \
             provider_api_key: [\"{PROVIDER_KEY}\"]\n    enabled: true\n",
            upstream.url(&format!("/{name}/v1"))
        ));
    }
    config.push_str(&format!(
        "api_keys:\n  - id: 1\n    key: {CLIENT_KEY}\n    name: secrets\n    is_active: true\n  \
         - id: 2\n    key: {OTHER_CLIENT_KEY}\n    name: other\n    is_active: true\n"
    ));
    pretty(&config)
}

/// The router with its text log lines, those a person reads at a terminal,
/// which are the ones a forged line could fool.
fn pretty(config: &str) -> RouterProcess {
    RouterProcess::start_with_args(config, &["--log-format", "pretty"], &[])
}

/// The `<name>` of a request to `/<name>/v1/chat/completions`.
fn entry_of(request: &Recorded) -> String {
    request
        .path_and_query
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn chat(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_errors_keep_what_was_wrong_and_lose_the_account() {
    let table = table();
    let bodies: Vec<(u16, String)> = table.iter().map(|c| (c.status, c.body.clone())).collect();
    let upstream = Upstream::start(move |request| {
        let index: usize = entry_of(request)
            .trim_start_matches("case-")
            .parse()
            .unwrap();
        let (status, body) = &bodies[index];
        Reply::json(*status, body.clone())
    })
    .await;
    let names: Vec<String> = (0..table.len()).map(|i| format!("case-{i}")).collect();
    let router = router_for(&upstream, &names);

    for (index, case) in table.iter().enumerate() {
        // Streamed and plain requests alternate: an error before the first
        // chunk is a JSON answer either way.
        let stream = index % 2 == 1;
        let answer = call(
            "POST",
            &router.url("/v1/chat/completions"),
            Some(CLIENT_KEY),
            &chat(&names[index], stream),
        )
        .await;
        let what = format!("{} {} (case-{index})", case.vendor, case.status);
        assert_eq!(
            answer.status.as_u16(),
            case.client_status,
            "{what}: {}",
            answer.text()
        );
        let body = answer.json();
        assert_eq!(body["error"]["code"], case.client_code, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        for kept in case.keeps {
            assert!(message.contains(kept), "{what} lost {kept:?}: {message}");
        }
        assert_no_secret(&answer.text(), &what);
        assert_no_secret(&format!("{:?}", answer.headers), &what);
    }
    assert_eq!(upstream.requests().len(), table.len());
    assert_no_secret(&router.logs(), "the logs");
}

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|event| format!("data: {event}\n\n"))
        .collect()
}

fn chunk(content: &str) -> Value {
    json!({"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "x",
        "choices": [{"index": 0, "delta": {"content": content}}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_inside_a_stream_lose_the_account_too() {
    let events: Vec<(&str, Value, &str, &str)> = vec![
        (
            "stream-status",
            json!({"error": {"message": format!(
                "Rate limit reached for gpt-4o in organization {ORG} on tokens per min (TPM): \
                 Limit 30000, Used 30000, Requested 900."),
                "type": "tokens", "param": null, "code": 429}}),
            "rate_limit_exceeded",
            "Limit 30000",
        ),
        (
            "stream-plain",
            json!({"error": {"message": format!(
                "The server had an error while processing your request (request ID \
                 {UPSTREAM_REQUEST_ID}, project {PROJECT}, key {PROVIDER_KEY})."),
                "type": "server_error", "param": null, "code": null}}),
            "upstream_error",
            "The server had an error while processing your request",
        ),
    ];
    let bodies: Vec<(String, String)> = events
        .iter()
        .map(|(name, error, _, _)| ((*name).to_owned(), sse(&[chunk("partial "), error.clone()])))
        .collect();
    let upstream = Upstream::start(move |request| {
        let name = entry_of(request);
        let body = bodies.iter().find(|(n, _)| *n == name).unwrap();
        Reply::sse(body.1.clone())
    })
    .await;
    let names: Vec<String> = events.iter().map(|(name, ..)| (*name).to_owned()).collect();
    let router = router_for(&upstream, &names);

    for (name, _, code, kept) in &events {
        let answer = call(
            "POST",
            &router.url("/v1/chat/completions"),
            Some(CLIENT_KEY),
            &chat(name, true),
        )
        .await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());
        let text = answer.text();
        let last = text
            .split("\n\n")
            .filter(|event| event.starts_with("data: "))
            .last()
            .unwrap();
        let error: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
        assert_eq!(error["error"]["code"], *code, "{name}: {text}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(kept), "{name} lost {kept:?}: {message}");
        assert!(text.contains("partial "), "{name}: {text}");
        assert_no_secret(&text, name);
    }
    assert_no_secret(&router.logs(), "the logs");
}

/// Headers an upstream sends that name the operator's account, its limits
/// or its session: none may reach the client.
const UPSTREAM_HEADERS: &[(&str, &str)] = &[
    ("openai-organization", ORG),
    ("openai-project", PROJECT),
    ("x-request-id", UPSTREAM_REQUEST_ID),
    (
        "set-cookie",
        "__cf_bm=Zm9vYmFyU2VjcmV0Q29va2llMTIz; path=/; HttpOnly; Secure",
    ),
    ("openai-processing-ms", "8675309417"),
    ("x-ratelimit-limit-tokens", "30000017"),
    ("anthropic-organization-id", SUBSCRIPTION),
];

fn with_upstream_headers(mut reply: Reply) -> Reply {
    for (name, value) in UPSTREAM_HEADERS {
        reply = reply.with_header(name, value);
    }
    reply
}

#[track_caller]
fn assert_no_upstream_header(headers: &HeaderMap, what: &str) {
    for (name, value) in UPSTREAM_HEADERS {
        let sent = headers.get_all(*name).iter().collect::<Vec<_>>();
        assert!(
            sent.iter().all(|sent| sent.as_bytes() != value.as_bytes()),
            "{what}: the upstream's {name} reached the client: {headers:?}"
        );
        for sent in headers.values() {
            assert!(
                !String::from_utf8_lossy(sent.as_bytes()).contains(value),
                "{what}: the upstream's {name} value reached the client: {headers:?}"
            );
        }
    }
    for name in [
        "openai-organization",
        "openai-project",
        "set-cookie",
        "openai-processing-ms",
        "anthropic-organization-id",
    ] {
        assert!(!headers.contains_key(name), "{what}: {name} in {headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_headers_never_reach_the_client() {
    let completion = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
    .to_string();
    let stream = format!("{}data: [DONE]\n\n", sse(&[chunk("fine")]));
    let refused = openai(
        "Invalid value for 'temperature'",
        "invalid_request_error",
        json!("temperature"),
        json!("invalid_value"),
    )
    .to_string();
    let upstream = Upstream::start(move |request| {
        let reply = match entry_of(request).as_str() {
            "answers" if request.body.windows(13).any(|w| w == b"\"stream\":true") => {
                Reply::sse(stream.clone())
            }
            "answers" => Reply::json(200, completion.clone()),
            _ => Reply::json(400, refused.clone()),
        };
        with_upstream_headers(reply)
    })
    .await;
    let router = router_for(&upstream, &["answers".to_owned(), "refuses".to_owned()]);

    for (model, stream, status) in [
        ("answers", false, 200),
        ("answers", true, 200),
        ("refuses", false, 400),
        ("refuses", true, 400),
    ] {
        let answer = call(
            "POST",
            &router.url("/v1/chat/completions"),
            Some(CLIENT_KEY),
            &chat(model, stream),
        )
        .await;
        let what = format!("{model} stream={stream}");
        assert_eq!(answer.status, status, "{what}: {}", answer.text());
        assert_no_upstream_header(&answer.headers, &what);
        // The router's own request id is there instead of the upstream's.
        let id = answer.headers["x-request-id"].to_str().unwrap();
        assert!(id.starts_with("req_") && id != UPSTREAM_REQUEST_ID, "{id}");
        assert_no_secret(&answer.text(), &what);
    }
    assert_eq!(upstream.requests().len(), 4);
}

// ---------------------------------------------------------------- log lines

/// Whether `line` is one the router's logger wrote: a UTC timestamp, then a
/// level. A forged line (a client's text after a newline) is not.
fn is_log_line(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.len() > 30
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && [" TRACE ", " DEBUG ", "  INFO ", "  WARN ", " ERROR "]
            .iter()
            .any(|level| line[..40.min(line.len())].contains(level))
}

/// The lines of the router's log that contain `tag`, once they stopped
/// growing (the log is read by a thread of the test).
async fn lines_with(router: &RouterProcess, tag: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = router
            .logs()
            .lines()
            .filter(|line| line.contains(tag))
            .map(str::to_owned)
            .collect();
        if !lines.is_empty() || Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return router
                .logs()
                .lines()
                .filter(|line| line.contains(tag))
                .map(str::to_owned)
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a request with a raw `Content-Type` (any bytes a header may hold).
async fn post_with_content_type(url: &str, content_type: &[u8], body: &str) -> Answer {
    let request = Request::builder()
        .method("POST")
        .uri(url)
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header(
            "content-type",
            http::HeaderValue::from_bytes(content_type).unwrap(),
        )
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_text_never_forges_a_log_line() {
    // `failing` answers 500: the request reaches an upstream and its books.
    let upstream = Upstream::start(|_| {
        Reply::json(
            500,
            ollama("llama runner process has terminated").to_string(),
        )
    })
    .await;
    let mut config = String::from(
        "server:\n  host: 127.0.0.1\n  port: 0\n  max_body_bytes: 4194304\nmodels:\n  \
         - name: mock-gpt\n    provider: mock\n    enabled: true\n",
    );
    config.push_str(&format!(
        "  - name: failing\n    base_url: {}\n    is_openai_compatibility: true\n    \
         provider_api_key: [\"{PROVIDER_KEY}\"]\n    enabled: true\n\
         api_keys:\n  - id: 1\n    key: {CLIENT_KEY}\n    name: logs\n    is_active: true\n",
        upstream.url("/v1")
    ));
    let router = pretty(&config);
    let chat_url = router.url("/v1/chat/completions");
    let megabyte = "A".repeat(1 << 20);

    // (tag, model) for chat requests refused at the edge: one line each.
    let models = [
        ("INJ0", "mock-gpt\nINJECTED log line INJ0".to_owned()),
        (
            "INJ1",
            "INJ1 \x1b[31mred\x1b[0m\r\n\x1b[2J2024-01-01T00:00:00.000000Z  INFO forged".to_owned(),
        ),
        ("INJ2", format!("INJ2{megabyte}")),
        ("INJ3", "INJ3\u{2028}\u{85}\u{9b}31m\u{202e}".to_owned()),
    ];
    for (tag, model) in &models {
        let answer = call("POST", &chat_url, Some(CLIENT_KEY), &chat(model, false)).await;
        assert_eq!(answer.status, 404, "{tag}: {}", answer.text());
        let lines = lines_with(&router, tag).await;
        assert_eq!(lines.len(), 1, "{tag}: {lines:#?}");
        assert!(lines[0].len() < 4096, "{tag}: a line of {}", lines[0].len());
    }

    // A 1 MB value that is not the model, and a field the request is
    // refused for, whose value the message quotes.
    let answer = call(
        "POST",
        &chat_url,
        Some(CLIENT_KEY),
        &json!({"model": "mock-gpt", "messages": [{"role": "user", "content": megabyte}],
            "temperature": "INJ4\nINJECTED \u{1b}[31m"})
        .to_string(),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    let lines = lines_with(&router, "INJ4").await;
    assert!(lines.len() == 1 && lines[0].len() < 4096, "{lines:#?}");

    // A path: a model id with an escaped newline and escape sequence, and a
    // very long unknown path.
    let answer = call(
        "GET",
        &router.url("/v1/models/INJ5%0AINJECTED%1B%5B31m"),
        Some(CLIENT_KEY),
        "",
    )
    .await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_eq!(lines_with(&router, "INJ5").await.len(), 1);
    let long_path = format!("/v1/INJ6{}", "p".repeat(30_000));
    let answer = call("GET", &router.url(&long_path), Some(CLIENT_KEY), "").await;
    assert_eq!(answer.status, 404);
    let lines = lines_with(&router, "INJ6").await;
    assert!(lines.len() == 1 && lines[0].len() < 4096, "{lines:#?}");

    // A header value: a C1 control (CSI, which some terminals obey) in the
    // Content-Type of a chat request.
    let answer = post_with_content_type(
        &chat_url,
        b"text/plain; INJ7=\xc2\x9b31m\xc2\x85",
        &chat("mock-gpt", false),
    )
    .await;
    assert_eq!(answer.status, 415, "{}", answer.text());
    assert_eq!(lines_with(&router, "INJ7").await.len(), 1);

    // A parse error.
    let answer = call(
        "POST",
        &chat_url,
        Some(CLIENT_KEY),
        "{\"model\": \"INJ8\n\x1b[31m",
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());

    // A model that resolves (`name:variant` falls back to `name`) and so
    // reaches the engine: the request's one line names the model.
    let answer = call(
        "POST",
        &chat_url,
        Some(CLIENT_KEY),
        &chat("failing:INJ9\nINJECTED \x1b[2J", false),
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(lines_with(&router, "INJ9").await.len(), 1);

    // Whatever each request logged, every line is one the logger wrote, and
    // no control character reached it raw.
    let logs = router.logs();
    // `listening on` is the binary's own word to whoever started it.
    for line in logs
        .lines()
        .filter(|line| !line.starts_with("listening on http://"))
    {
        assert!(is_log_line(line), "a forged log line: {line:?}\n{logs}");
    }
    for raw in ['\x1b', '\r', '\u{9b}', '\u{85}', '\u{2028}', '\u{202e}'] {
        assert!(!logs.contains(raw), "{raw:?} reached the logs raw:\n{logs}");
    }
    assert!(!logs.contains(&megabyte[..4096]), "a megabyte in the logs");
    assert_no_secret(&logs, "the logs");
}
