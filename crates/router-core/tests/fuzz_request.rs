//! Fuzz target `request`: the chat completion body parser against the
//! checked-in corpus (`fuzz/corpus/request/`), against inputs mutated from it
//! and against generated JSON.
//!
//! Properties: `request::parse` never panics; it returns a request whose
//! `model` and `stream` agree with the body, or an `InvalidBody` /
//! `InvalidField` error with a non-empty, short message (a huge value is
//! never echoed whole).
//!
//! `cargo test` runs a few hundred cases; `cargo xtask fuzz` runs it for a
//! bounded time (`ROUTER_FUZZ_SECONDS`, `ROUTER_FUZZ_CASES`, `ROUTER_FUZZ_SEED`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use proptest::prelude::*;
use router_core::request;
use router_core::ChatError;
use serde_json::{Map, Value};

const TARGET: &str = "request";
/// The longest error message that is still "short": our messages name a
/// field and a type, serde_json's name a line and column.
const MAX_MESSAGE_BYTES: usize = 1024;

#[test]
fn corpus_replays_cleanly() {
    harness::replay_corpus(TARGET, check);
}

#[test]
fn mutated_and_generated_bodies_parse_or_fail_cleanly() {
    let corpus = harness::corpus(TARGET);
    let strategy = prop_oneof![
        3 => harness::mutated(corpus, DICTIONARY),
        2 => generated_body(),
        1 => deeply_nested(),
    ];
    harness::fuzz(TARGET, strategy, check);
}

/// JSON fragments and the field names the validator knows.
const DICTIONARY: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"-0",
    b"1e999",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\"model\":",
    b"\"messages\":",
    b"\"role\":",
    b"\"content\":",
    b"\"stream\":true,",
    b"\"n\":0,",
    b"\"stop\":[],",
    b"\"response_format\":{\"type\":\"text\"},",
    b"\"reasoning_effort\":",
    b"\"logit_bias\":{},",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
];

fn check(input: &[u8]) -> Result<(), String> {
    match request::parse(input) {
        Ok(parsed) => {
            let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(input) else {
                return Err("accepted a body that is not a JSON object".to_owned());
            };
            if parsed.model.is_empty() {
                return Err("accepted an empty model".to_owned());
            }
            if body.get("model") != Some(&Value::String(parsed.model.clone())) {
                return Err(format!("model {:?} is not the body's", parsed.model));
            }
            if parsed.stream != (body.get("stream") == Some(&Value::Bool(true))) {
                return Err(format!("stream {} is not the body's", parsed.stream));
            }
            if !body.get("messages").is_some_and(Value::is_array) {
                return Err("accepted a body without a messages array".to_owned());
            }
            if parsed.body.len() != body.len() {
                return Err("fields were lost or invented".to_owned());
            }
            Ok(())
        }
        Err(ChatError::InvalidBody { detail }) => short_message("InvalidBody detail", &detail),
        Err(ChatError::InvalidField { message, param }) => {
            if param.as_deref().is_none_or(str::is_empty) {
                return Err(format!("InvalidField without a param: {message:?}"));
            }
            short_message("InvalidField message", &message)
        }
        Err(other) => Err(format!("unexpected error kind: {other:?}")),
    }
}

fn short_message(what: &str, message: &str) -> Result<(), String> {
    if message.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "{what} is {} bytes long: {}",
            message.len(),
            harness::escaped(message.as_bytes(), 200)
        ));
    }
    Ok(())
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("system"),
            Just("tool"),
            Just("text"),
            Just("json_object"),
            Just("high"),
            Just(""),
        ]
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        (1usize..2000).prop_map(|len| Value::String("x".repeat(len))),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Mostly the fields the validator knows, sometimes anything.
fn field_name() -> impl Strategy<Value = String> {
    const KNOWN: &[&str] = &[
        "model",
        "messages",
        "role",
        "content",
        "type",
        "stream",
        "seed",
        "stop",
        "top_k",
        "temperature",
        "n",
        "best_of",
        "max_tokens",
        "logit_bias",
        "stop_token_ids",
        "reasoning_effort",
        "response_format",
        "stream_options",
        "tools",
        "metadata",
    ];
    prop_oneof![
        4 => proptest::sample::select(KNOWN).prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ]
}

/// A body shaped like a request: an object with (usually) a model and
/// messages, and known fields holding any values.
fn generated_body() -> impl Strategy<Value = Vec<u8>> {
    let message = proptest::collection::vec((field_name(), json_value()), 0..4)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()));
    (
        proptest::option::weighted(0.9, json_value()),
        proptest::option::weighted(0.9, proptest::collection::vec(message, 0..4)),
        proptest::collection::vec((field_name(), json_value()), 0..6),
        any::<bool>(),
    )
        .prop_map(|(model, messages, fields, pretty)| {
            let mut body = Map::new();
            if let Some(model) = model {
                body.insert("model".to_owned(), model);
            }
            if let Some(messages) = messages {
                body.insert("messages".to_owned(), Value::Array(messages));
            }
            body.extend(fields);
            let body = Value::Object(body);
            if pretty {
                serde_json::to_vec_pretty(&body).unwrap()
            } else {
                serde_json::to_vec(&body).unwrap()
            }
        })
}

/// Nesting around and past serde_json's recursion limit, inside a field or
/// at the top, closed or not.
fn deeply_nested() -> impl Strategy<Value = Vec<u8>> {
    (1usize..400, any::<bool>(), any::<bool>()).prop_map(|(depth, in_field, closed)| {
        let mut out = Vec::new();
        if in_field {
            out.extend_from_slice(br#"{"model":"m","messages":[],"metadata":"#);
        }
        for level in 0..depth {
            out.extend_from_slice(if level % 2 == 0 { b"[" } else { b"{\"a\":" });
        }
        out.extend_from_slice(b"1");
        if closed {
            for level in (0..depth).rev() {
                out.push(if level % 2 == 0 { b']' } else { b'}' });
            }
            if in_field {
                out.push(b'}');
            }
        }
        out
    })
}

#[path = "../../../fuzz/harness.rs"]
mod harness;
