//! Keeps the operator's account details out of what the router says about an
//! upstream failure.
//!
//! Upstream error messages are useful to clients ("maximum context length is
//! 4096 tokens", "Invalid value for 'temperature'") but they are written for
//! the owner of the account, and our clients are not that owner: OpenAI
//! names the organization and project (`org-…`, `proj_…`) and echoes a masked
//! fragment of a refused key (`sk-abc…xyz`), other vendors echo key
//! prefixes, project numbers and account emails.
//!
//! A [`Scrubber`] is built once from the config and replaces, with
//! [`MARKER`]:
//! - every configured provider key and client key, verbatim, longest first,
//!   and any word that is a piece of one (at least [`MIN_FRAGMENT_CHARS`]);
//! - words shaped like a credential or an account id: known key prefixes
//!   (`sk-`, `sk-ant-`, `sk-proj-`, `AIza`, ...), organization, project and
//!   user ids (`org-…`, `proj_…`, `user-…`), masked fragments (`abc…xyz`,
//!   `abc***xyz`, `****abcd`), long random-looking tokens (a run of at least
//!   16 letters and digits that mixes both, or of at least 32 of anything),
//!   UUIDs, runs of ten or more digits (project and account numbers), and
//!   email addresses.
//!
//! The rest of the message stays as the upstream wrote it. The engine wraps
//! every provider in [`guard`], so every [`ProviderError`] it sees — before a
//! stream, inside one, in a log line or in a usage record — is already
//! scrubbed.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;

use crate::config::Config;
use crate::provider::{ChunkStream, Completion, Provider, ProviderError, ProviderRequest};

/// What a removed secret is replaced with.
pub const MARKER: &str = "[redacted]";

/// Configured secrets shorter than this are not replaced verbatim: no
/// provider issues keys that short, and replacing them would eat ordinary
/// words of the message (a test key `k1`).
pub const MIN_SECRET_CHARS: usize = 8;

/// A word of the message that is a piece of a configured secret is removed
/// when it is at least this long (an upstream that echoes a key's prefix).
pub const MIN_FRAGMENT_CHARS: usize = 8;

/// Prefixes of credentials as vendors issue them, and how many characters
/// must follow for a word to be taken as one.
const KEY_PREFIXES: &[(&str, usize)] = &[
    // OpenAI (`sk-proj-`, `sk-svcacct-`), Anthropic (`sk-ant-`), OpenRouter
    // (`sk-or-`), DeepSeek and most OpenAI-compatible vendors.
    ("sk-", 0),
    ("sk_", 0),
    // Google API keys.
    ("AIza", 4),
    ("gsk_", 4),
    ("xai-", 4),
    ("hf_", 4),
    ("pplx-", 4),
    ("nvapi-", 4),
    ("r8_", 4),
    ("fw_", 4),
];

/// Prefixes of account identifiers: OpenAI organizations, projects and users.
const ACCOUNT_PREFIXES: &[&str] = &["org-", "proj_", "user-", "acct_"];

/// Replaces the operator's secrets and account details in upstream messages.
/// Cheap to share; holds the secrets, so its `Debug` only counts them.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Configured secrets of at least [`MIN_SECRET_CHARS`], longest first
    /// (so a key that contains another is replaced whole), without repeats.
    secrets: Vec<Box<str>>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Scrubber {
    /// A scrubber that also replaces each of `secrets` verbatim.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut secrets: Vec<Box<str>> = secrets
            .into_iter()
            .map(|secret| secret.as_ref().trim().to_owned())
            .filter(|secret| secret.chars().count() >= MIN_SECRET_CHARS)
            .map(String::into_boxed_str)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self { secrets }
    }

    /// The scrubber for `config`: every provider key of every entry (enabled
    /// or not), the credentials in each `base_url`'s query string (where
    /// some vendors take their key: `?key=`, `?sig=`), and every client key.
    pub fn from_config(config: &Config) -> Self {
        // Exposed only to be recognised in upstream messages; they stay in
        // this value, whose `Debug` shows only how many there are.
        let provider_keys = config
            .models
            .iter()
            .flat_map(|entry| entry.provider_api_keys.iter())
            .map(|key| key.expose().to_owned());
        let url_values = config
            .models
            .iter()
            .filter_map(|entry| entry.base_url.as_ref())
            .flat_map(|url| {
                url.query_pairs()
                    .filter(|(name, _)| is_credential_parameter(name))
                    .map(|(_, value)| value.into_owned())
                    .collect::<Vec<_>>()
            });
        let client_keys = config
            .api_keys
            .iter()
            .map(|key| key.key.expose().to_owned());
        Self::new(provider_keys.chain(url_values).chain(client_keys))
    }

    /// `text` without secrets or account details; borrowed when nothing
    /// had to go.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for secret in &self.secrets {
            if text.contains(&**secret) {
                text = Cow::Owned(text.replace(&**secret, MARKER));
            }
        }
        match redact_words(&text, &self.secrets) {
            Some(redacted) => Cow::Owned(redacted),
            None => text,
        }
    }

    /// `error` with its message or detail scrubbed; its kind, status and
    /// `Retry-After` unchanged.
    pub fn provider_error(&self, error: ProviderError) -> ProviderError {
        let scrub = |text: String| match self.scrub(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(scrubbed) => scrubbed,
        };
        match error {
            ProviderError::Connect { detail } => ProviderError::Connect {
                detail: scrub(detail),
            },
            ProviderError::Timeout { after } => ProviderError::Timeout { after },
            ProviderError::Status {
                status,
                message,
                retry_after,
            } => ProviderError::Status {
                status,
                message: scrub(message),
                retry_after,
            },
            ProviderError::InvalidResponse { detail } => ProviderError::InvalidResponse {
                detail: scrub(detail),
            },
            ProviderError::Truncated { detail } => ProviderError::Truncated {
                detail: scrub(detail),
            },
            // Our own words, naming only the endpoint.
            ProviderError::Unsupported { endpoint } => ProviderError::Unsupported { endpoint },
        }
    }
}

/// Whether a query parameter of a `base_url` carries a credential (`key`,
/// `api_key`, `sig`, `token`...) rather than, say, Azure's `api-version`,
/// which is no secret and which messages quote usefully.
fn is_credential_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["key", "sig", "token", "secret", "auth", "code", "password"]
        .iter()
        .any(|credential| name.contains(credential))
}

/// `provider` with every error it returns, or yields inside a stream,
/// scrubbed. The engine wraps each provider in this once, when it is built.
pub fn guard(provider: Arc<dyn Provider>, scrubber: &Arc<Scrubber>) -> Arc<dyn Provider> {
    Arc::new(Guarded {
        inner: provider,
        scrubber: Arc::clone(scrubber),
    })
}

#[derive(Debug)]
struct Guarded {
    inner: Arc<dyn Provider>,
    scrubber: Arc<Scrubber>,
}

impl Guarded {
    /// A stream whose every error is scrubbed on its way out.
    fn guard_stream(
        &self,
        opened: Result<ChunkStream, ProviderError>,
    ) -> Result<ChunkStream, ProviderError> {
        let stream = opened.map_err(|error| self.scrubber.provider_error(error))?;
        let scrubber = Arc::clone(&self.scrubber);
        Ok(Box::pin(stream.map(move |item| {
            item.map_err(|error| scrubber.provider_error(error))
        })))
    }
}

/// Every method of `Provider` is forwarded: one left to its default would
/// answer `Unsupported` whatever the wrapped adapter can do.
#[async_trait]
impl Provider for Guarded {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        self.inner
            .complete(request)
            .await
            .map_err(|error| self.scrubber.provider_error(error))
    }

    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        self.guard_stream(self.inner.stream(request).await)
    }

    async fn complete_text(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        self.inner
            .complete_text(request)
            .await
            .map_err(|error| self.scrubber.provider_error(error))
    }

    async fn stream_text(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        self.guard_stream(self.inner.stream_text(request).await)
    }

    async fn embed(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        self.inner
            .embed(request)
            .await
            .map_err(|error| self.scrubber.provider_error(error))
    }
}

/// Characters a word is made of: what keys, ids, emails, base64 and masked
/// fragments are written with. Anything else (spaces, quotes, brackets,
/// `:`, `,`, `?`) separates words.
fn is_word_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '+' | '/' | '=' | '.' | '@' | '*' | '…')
}

/// `text` with every word that must go replaced by [`MARKER`], or `None`
/// when no word must.
fn redact_words(text: &str, secrets: &[Box<str>]) -> Option<String> {
    let mut out: Option<String> = None;
    // Everything before `copied` is already in `out`.
    let mut copied = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((start, ch)) = chars.next() {
        if !is_word_char(ch) {
            continue;
        }
        let mut end = start + ch.len_utf8();
        while let Some(&(index, next)) = chars.peek() {
            if !is_word_char(next) {
                break;
            }
            end = index + next.len_utf8();
            chars.next();
        }
        let word = sentence_trimmed(&text[start..end]);
        // A marker put there before (scrubbing twice changes nothing).
        let marker = word == "redacted"
            && text[..start].ends_with('[')
            && text[start + word.len()..].starts_with(']');
        if !word.is_empty() && !marker && must_go(word, secrets) {
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..start]);
            out.push_str(MARKER);
            copied = start + word.len();
        }
    }
    let mut out = out?;
    out.push_str(&text[copied..]);
    Some(out)
}

/// A word without the full stop of its sentence (`org-abc.` ends a
/// sentence); an ellipsis (`..`, `...`) stays, it may be a mask.
fn sentence_trimmed(word: &str) -> &str {
    match word.strip_suffix('.') {
        Some(rest) if !rest.ends_with('.') => rest,
        _ => word,
    }
}

fn must_go(word: &str, secrets: &[Box<str>]) -> bool {
    is_email(word)
        || has_key_prefix(word)
        || is_account_id(word)
        || is_masked(word)
        || alnum_runs(word).any(|run| looks_random(run) || is_long_number(run))
        || has_uuid(word)
        || is_secret_fragment(word, secrets)
}

/// `local@domain.tld`.
fn is_email(word: &str) -> bool {
    let Some((local, domain)) = word.split_once('@') else {
        return false;
    };
    let local = local.trim_start_matches(['.', '-', '/', '*']);
    !local.is_empty()
        && domain
            .split_once('.')
            .is_some_and(|(name, tld)| !name.is_empty() && tld.chars().any(char::is_alphanumeric))
}

/// The places in `word` where a key or an id may begin: its start, and
/// after a character that joins it to what comes before without being
/// part of a name (`key=sk-…`, `/organizations/org-…`).
fn starts(word: &str) -> impl Iterator<Item = &str> {
    word.char_indices()
        .filter(|&(index, _)| {
            word[..index]
                .chars()
                .next_back()
                .is_none_or(|before| matches!(before, '=' | '/' | '@' | '+' | '*' | '…'))
        })
        .map(|(index, _)| &word[index..])
}

fn has_key_prefix(word: &str) -> bool {
    starts(word).any(|rest| {
        KEY_PREFIXES.iter().any(|(prefix, min_tail)| {
            rest.strip_prefix(prefix)
                .is_some_and(|tail| tail.chars().count() >= *min_tail)
        })
    })
}

/// `org-…`, `proj_…`: the prefix, then at least four letters and digits
/// with an upper-case letter or a digit among them (real ids are random;
/// `org-wide` is a word).
fn is_account_id(word: &str) -> bool {
    starts(word).any(|rest| {
        ACCOUNT_PREFIXES.iter().any(|prefix| {
            rest.strip_prefix(prefix).is_some_and(|tail| {
                let id: &str = tail
                    .split(|ch: char| !ch.is_ascii_alphanumeric())
                    .next()
                    .unwrap_or_default();
                id.len() >= 4
                    && id
                        .chars()
                        .any(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit())
            })
        })
    })
}

/// A masked credential: a run of `*` next to a letter or digit
/// (`abcd****`, `****wxyz`), or an ellipsis between two letters or digits
/// (`abc…xyz`, `abc...xyz`). A trailing ellipsis alone is prose or a
/// truncation, not a mask.
fn is_masked(word: &str) -> bool {
    let chars: Vec<char> = word.chars().collect();
    let alnum = |index: Option<usize>| {
        index
            .and_then(|index| chars.get(index))
            .is_some_and(char::is_ascii_alphanumeric)
    };
    let mut index = 0;
    while index < chars.len() {
        let ch = chars[index];
        let run = chars[index..].iter().take_while(|&&c| c == ch).count();
        let before = index.checked_sub(1);
        let after = Some(index + run);
        let masked = match ch {
            '*' => run >= 2 && (alnum(before) || alnum(after)),
            '…' => alnum(before) && alnum(after),
            '.' => run >= 2 && alnum(before) && alnum(after),
            _ => false,
        };
        if masked {
            return true;
        }
        index += run;
    }
    false
}

/// The maximal runs of ASCII letters and digits in `word`.
fn alnum_runs(word: &str) -> impl Iterator<Item = &str> {
    word.split(|ch: char| !ch.is_ascii_alphanumeric())
        .filter(|run| !run.is_empty())
}

/// A run no language writes: 16 or more letters and digits mixing both
/// (keys, hex digests, request ids), or 32 or more of anything. Model
/// names (`claude-3-5-sonnet-20241022`) and API identifiers
/// (`ChatCompletions_Create`) are made of shorter runs.
fn looks_random(run: &str) -> bool {
    run.len() >= 32
        || (run.len() >= 16
            && run.bytes().any(|byte| byte.is_ascii_digit())
            && run.bytes().any(|byte| byte.is_ascii_alphabetic()))
}

/// Ten digits or more: project and account numbers (token counts and
/// limits are shorter).
fn is_long_number(run: &str) -> bool {
    run.len() >= 10 && run.bytes().all(|byte| byte.is_ascii_digit())
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` somewhere in the word: Azure
/// subscription and resource ids, among others.
fn has_uuid(word: &str) -> bool {
    let groups: Vec<&str> = word.split(['-', '/', '_', '.', '=']).collect();
    groups.windows(5).any(|window| {
        window
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// The word, or a run of letters and digits in it, is a piece of a
/// configured secret: an echoed prefix, or a key cut off by truncation.
fn is_secret_fragment(word: &str, secrets: &[Box<str>]) -> bool {
    let is_piece = |part: &str| {
        part.len() >= MIN_FRAGMENT_CHARS && secrets.iter().any(|secret| secret.contains(part))
    };
    is_piece(word) || alnum_runs(word).any(is_piece)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDER_KEY: &str = "pk-live-Q2hhbmdlTWU";
    const CLIENT_KEY: &str = "router-client-key-77";

    fn scrubber() -> Scrubber {
        Scrubber::new([PROVIDER_KEY, CLIENT_KEY, "k1"])
    }

    #[track_caller]
    fn check(input: &str, expected: &str) {
        assert_eq!(scrubber().scrub(input), expected, "{input}");
    }

    #[test]
    fn configured_keys_go_verbatim_and_longest_first() {
        check(
            "Incorrect API key provided: pk-live-Q2hhbmdlTWU.",
            "Incorrect API key provided: [redacted].",
        );
        check(
            "client router-client-key-77 and pk-live-Q2hhbmdlTWU",
            "client [redacted] and [redacted]",
        );
        check("glued:xxpk-live-Q2hhbmdlTWUyy", "glued:xx[redacted]yy");
        let nested = Scrubber::new(["abcdefgh", "abcdefgh-longer-one"]);
        assert_eq!(nested.scrub("key abcdefgh-longer-one!"), "key [redacted]!");
        // Too short to be a key: left alone rather than eating words.
        check("model k1 is not found", "model k1 is not found");
    }

    #[test]
    fn pieces_of_configured_keys_go() {
        check(
            "key starting pk-live-Q2h is invalid",
            "key starting [redacted] is invalid",
        );
        check("key router-client is invalid", "key [redacted] is invalid");
        check("ends with Q2hhbmdl", "ends with [redacted]");
        // Shorter pieces are ordinary words.
        check("a live key", "a live key");
    }

    #[test]
    fn openai_messages_keep_what_was_wrong() {
        check(
            "Incorrect API key provided: sk-abc...xyz. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
            "Incorrect API key provided: [redacted]. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
        );
        check(
            "Incorrect API key provided: sk-proj-********************************rI4A. You can \
             find your API key at https://platform.openai.com/account/api-keys.",
            "Incorrect API key provided: [redacted]. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
        );
        check(
            "Rate limit reached for gpt-4o in organization org-2mJx8HqT1wQ0zLkP4RbN9cVe on \
             tokens per min (TPM): Limit 30000, Used 29950, Requested 1200. Please try again \
             in 2.3s. Visit https://platform.openai.com/account/rate-limits to learn more.",
            "Rate limit reached for gpt-4o in organization [redacted] on \
             tokens per min (TPM): Limit 30000, Used 29950, Requested 1200. Please try again \
             in 2.3s. Visit https://platform.openai.com/account/rate-limits to learn more.",
        );
        check(
            "Project `proj_Ab12Cd34Ef56` does not have access to model `gpt-4o-2024-08-06`",
            "Project `[redacted]` does not have access to model `gpt-4o-2024-08-06`",
        );
        check(
            "This model's maximum context length is 128000 tokens. However, your messages \
             resulted in 130512 tokens. Please reduce the length of the messages.",
            "This model's maximum context length is 128000 tokens. However, your messages \
             resulted in 130512 tokens. Please reduce the length of the messages.",
        );
        check(
            "Invalid value for 'temperature': expected a number <= 2, got 3.5.",
            "Invalid value for 'temperature': expected a number <= 2, got 3.5.",
        );
        check("org-wide limits apply", "org-wide limits apply");
    }

    #[test]
    fn other_vendors() {
        check(
            "API key not valid. Please pass a valid API key.",
            "API key not valid. Please pass a valid API key.",
        );
        check(
            "API key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY is invalid",
            "API key [redacted] is invalid",
        );
        check(
            "Generative Language API has not been used in project 123456789012 before. \
             Enable it at https://console.developers.google.com/apis/api/generativelanguage.\
             googleapis.com/overview?project=123456789012 then retry.",
            "Generative Language API has not been used in project [redacted] before. \
             Enable it at https://console.developers.google.com/apis/api/generativelanguage.\
             googleapis.com/overview?[redacted] then retry.",
        );
        check(
            "invalid x-api-key sk-ant-api03-abc…xyz",
            "invalid x-api-key [redacted]",
        );
        check(
            "Authentication Fails, Your api key: ****f3a9 is invalid",
            "Authentication Fails, Your api key: [redacted] is invalid",
        );
        check(
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version \
             2024-02-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. \
             Please retry after 6 seconds.",
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version \
             2024-02-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. \
             Please retry after 6 seconds.",
        );
        check(
            "subscription 0f8fad5b-d9cb-469f-a165-70867728950e is disabled",
            "subscription [redacted] is disabled",
        );
        check(
            "account owner jane.doe+ai@example.co.uk has no credit.",
            "account owner [redacted] has no credit.",
        );
        check(
            "request req_9f8e7d6c5b4a39281706f5e4 failed",
            "request [redacted] failed",
        );
        check(
            "token 3f786850e387550fdab836ed7e6dc881de23001b leaked",
            "token [redacted] leaked",
        );
        check(
            "model 'llama3:70b' not found, try pulling it first",
            "model 'llama3:70b' not found, try pulling it first",
        );
        check(
            "model claude-3-5-sonnet-20241022 and Llama-3.3-70B-Instruct-Turbo exist",
            "model claude-3-5-sonnet-20241022 and Llama-3.3-70B-Instruct-Turbo exist",
        );
        check("Please wait... then retry…", "Please wait... then retry…");
        check(
            "GET /v1/organizations/org-Zx81KqLm/usage?key=sk-abc123 failed",
            "GET [redacted]?[redacted] failed",
        );
    }

    #[test]
    fn scrubbing_is_idempotent_and_borrows_when_clean() {
        let clean = "maximum context length is 4096 tokens";
        assert!(matches!(scrubber().scrub(clean), Cow::Borrowed(_)));
        let once = scrubber()
            .scrub("org-ABCD1234 sk-x pk-live-Q2hhbmdlTWU")
            .into_owned();
        assert_eq!(once, "[redacted] [redacted] [redacted]");
        assert_eq!(scrubber().scrub(&once), once);
    }

    #[test]
    fn provider_errors_keep_their_kind() {
        let error = scrubber().provider_error(ProviderError::Status {
            status: 429,
            message: "organization org-ABCD1234 is over quota".into(),
            retry_after: Some(std::time::Duration::from_secs(3)),
        });
        match error {
            ProviderError::Status {
                status,
                message,
                retry_after,
            } => {
                assert_eq!(status, 429);
                assert_eq!(message, "organization [redacted] is over quota");
                assert_eq!(retry_after, Some(std::time::Duration::from_secs(3)));
            }
            other => panic!("unexpected {other:?}"),
        }
        let error = scrubber().provider_error(ProviderError::InvalidResponse {
            detail: "the upstream reported an error mid-stream: key pk-live-Q2hhbmdlTWU".into(),
        });
        assert_eq!(
            error.to_string(),
            "the upstream sent an invalid response: the upstream reported an error mid-stream: \
             key [redacted]"
        );
    }

    #[test]
    fn debug_does_not_show_the_secrets() {
        let shown = format!("{:?}", scrubber());
        assert_eq!(shown, "Scrubber { secrets: 2 }");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// A configured key put anywhere in an upstream message never
            /// comes out, whatever surrounds it.
            #[test]
            fn a_configured_key_never_comes_out(
                key in "[A-Za-z0-9_.-]{8,64}",
                other in "[A-Za-z0-9_-]{8,40}",
                before in any::<String>(),
                after in any::<String>(),
                copies in 1usize..3,
            ) {
                // A key that is a piece of the marker would be "found" in
                // the marker itself.
                prop_assume!(!MARKER.contains(key.as_str()));
                let scrubber = Scrubber::new([key.as_str(), other.as_str()]);
                let message = format!("{before}{}{after}", key.repeat(copies));
                let scrubbed = scrubber.scrub(&message);
                prop_assert!(!scrubbed.contains(key.as_str()), "{scrubbed:?}");
                let error = scrubber.provider_error(ProviderError::Status {
                    status: 400,
                    message,
                    retry_after: None,
                });
                prop_assert!(!error.to_string().contains(key.as_str()));
            }

            /// Scrubbing twice changes nothing more.
            #[test]
            fn scrubbing_is_idempotent(text in any::<String>(), key in "[a-z0-9]{8,20}") {
                prop_assume!(!MARKER.contains(key.as_str()));
                let scrubber = Scrubber::new([key]);
                let once = scrubber.scrub(&text).into_owned();
                prop_assert_eq!(scrubber.scrub(&once), once.as_str());
            }
        }
    }
}
