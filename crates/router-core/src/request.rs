//! Parsing and validating request bodies: chat completions, text
//! completions and embeddings.
//!
//! The body is parsed once into a [`JsonObject`] that keeps every field, known
//! or not, so unknown parameters reach the upstream untouched. Validation
//! follows the seed's schema (types of the known optional fields), without its
//! bugs: assistant turns with `content: null` and `top_k: null` are valid.
//! Text completions check `prompt` and embeddings `input` (a string, strings,
//! token ids or arrays of token ids); `encoding_format` and the rest pass
//! through as they came.

use serde_json::Value;

use crate::error::ChatError;
use crate::provider::{Endpoint, JsonObject};

/// A parsed, validated request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The whole body, unknown fields included.
    pub body: JsonObject,
    /// The requested model, as the client wrote it.
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
}

/// What a known field may hold. `null` is accepted for every optional field.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Integer,
    NonNegativeInteger,
    PositiveInteger,
    /// A token count: 0 ..= u32::MAX (no model generates more in one answer).
    TokenCount,
    /// `n`: 1 ..= 128, OpenAI's own bound.
    ChoiceCount,
    Number,
    Bool,
    Object,
    Array,
    StringOrStrings,
    ObjectOfNumbers,
    Integers,
    ReasoningEffort,
    ResponseFormat,
}

/// The typed optional fields of the seed's schema (plus `n`, `max_completion_tokens`
/// and `stream_options`, which OpenAI defines).
const FIELDS: &[(&str, Shape)] = &[
    ("seed", Shape::Integer),
    ("stop", Shape::StringOrStrings),
    ("min_p", Shape::Number),
    ("top_k", Shape::Integer),
    ("top_p", Shape::Number),
    ("temperature", Shape::Number),
    ("presence_penalty", Shape::Number),
    ("frequency_penalty", Shape::Number),
    ("repetition_penalty", Shape::Number),
    ("length_penalty", Shape::Number),
    ("stream", Shape::Bool),
    ("logprobs", Shape::Bool),
    ("ignore_eos", Shape::Bool),
    ("use_beam_search", Shape::Bool),
    ("skip_special_tokens", Shape::Bool),
    ("include_stop_str_in_output", Shape::Bool),
    ("spaces_between_special_tokens", Shape::Bool),
    ("parallel_tool_calls", Shape::Bool),
    ("reasoning_effort", Shape::ReasoningEffort),
    ("best_of", Shape::PositiveInteger),
    ("n", Shape::ChoiceCount),
    ("max_tokens", Shape::TokenCount),
    ("max_completion_tokens", Shape::TokenCount),
    ("min_tokens", Shape::NonNegativeInteger),
    ("top_logprobs", Shape::NonNegativeInteger),
    ("prompt_logprobs", Shape::NonNegativeInteger),
    ("logit_bias", Shape::ObjectOfNumbers),
    ("stop_token_ids", Shape::Integers),
    ("response_format", Shape::ResponseFormat),
    ("stream_options", Shape::Object),
    ("tools", Shape::Array),
    ("metadata", Shape::Object),
];

/// The typed optional fields of `/v1/completions`. Unlike chat, `logprobs`
/// is a count there.
const COMPLETION_FIELDS: &[(&str, Shape)] = &[
    ("seed", Shape::Integer),
    ("stop", Shape::StringOrStrings),
    ("top_p", Shape::Number),
    ("temperature", Shape::Number),
    ("presence_penalty", Shape::Number),
    ("frequency_penalty", Shape::Number),
    ("stream", Shape::Bool),
    ("echo", Shape::Bool),
    ("logprobs", Shape::NonNegativeInteger),
    ("best_of", Shape::PositiveInteger),
    ("n", Shape::ChoiceCount),
    ("max_tokens", Shape::TokenCount),
    ("logit_bias", Shape::ObjectOfNumbers),
    ("stream_options", Shape::Object),
];

/// The typed optional fields of `/v1/embeddings`. `encoding_format` is the
/// upstream's to judge (vendors add their own formats).
const EMBEDDING_FIELDS: &[(&str, Shape)] = &[("dimensions", Shape::PositiveInteger)];

const REASONING_EFFORTS: &[&str] = &["none", "minimal", "auto", "low", "medium", "high"];
const RESPONSE_FORMATS: &[&str] = &["text", "json_object", "json_schema"];

fn invalid(param: &str, message: impl Into<String>) -> ChatError {
    ChatError::InvalidField {
        message: message.into(),
        param: Some(param.to_owned()),
    }
}

/// Parses and validates a chat completion request body.
pub fn parse(body: &[u8]) -> Result<ChatRequest, ChatError> {
    parse_for(Endpoint::ChatCompletions, body)
}

/// Parses and validates a request body for `endpoint`. An embeddings
/// request never streams, whatever its `stream` says.
pub fn parse_for(endpoint: Endpoint, body: &[u8]) -> Result<ChatRequest, ChatError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| ChatError::InvalidBody {
        detail: if body.iter().all(u8::is_ascii_whitespace) {
            "the body is empty".to_owned()
        } else {
            format!("not valid JSON ({error})")
        },
    })?;
    let Value::Object(body) = value else {
        return Err(ChatError::InvalidBody {
            detail: "expected a JSON object".to_owned(),
        });
    };

    let model = match body.get("model") {
        None | Some(Value::Null) => return Err(invalid("model", "model is required")),
        Some(Value::String(model)) if model.is_empty() => {
            return Err(invalid("model", "`model` must not be empty"))
        }
        Some(Value::String(model)) => model.clone(),
        Some(other) => {
            return Err(invalid(
                "model",
                format!("`model` must be a string, got {}", type_name(other)),
            ))
        }
    };

    let fields = match endpoint {
        Endpoint::ChatCompletions => {
            validate_messages(body.get("messages"))?;
            FIELDS
        }
        Endpoint::Completions => {
            validate_text_input("prompt", body.get("prompt"))?;
            COMPLETION_FIELDS
        }
        Endpoint::Embeddings => {
            validate_text_input("input", body.get("input"))?;
            EMBEDDING_FIELDS
        }
    };
    // One pass over the body's few fields instead of one hash lookup per known
    // field; a body with several bad fields still reports the first in
    // `FIELDS` order.
    let mut first_bad: Option<(usize, &str, Shape, &Value)> = None;
    for (key, value) in &body {
        let Some(index) = fields.iter().position(|(name, _)| *name == key.as_str()) else {
            continue;
        };
        let (name, shape) = fields[index];
        if first_bad.is_some_and(|(first, ..)| first < index) {
            continue;
        }
        if !shape_fits(shape, value) {
            first_bad = Some((index, name, shape, value));
        }
    }
    if let Some((_, name, shape, value)) = first_bad {
        check_shape(name, shape, value)?;
    }

    let stream =
        endpoint != Endpoint::Embeddings && matches!(body.get("stream"), Some(Value::Bool(true)));
    Ok(ChatRequest {
        body,
        model,
        stream,
    })
}

fn validate_messages(messages: Option<&Value>) -> Result<(), ChatError> {
    let messages = match messages {
        None | Some(Value::Null) => return Err(invalid("messages", "messages is required")),
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(invalid(
                "messages",
                "`messages` must hold at least one message",
            ))
        }
        Some(Value::Array(messages)) => messages,
        Some(other) => {
            return Err(invalid(
                "messages",
                format!("`messages` must be an array, got {}", type_name(other)),
            ))
        }
    };
    for (index, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(invalid(
                &format!("messages[{index}]"),
                format!(
                    "`messages[{index}]` must be an object, got {}",
                    type_name(message)
                ),
            ));
        };
        let role = match message.get("role") {
            Some(Value::String(role)) => role.as_str(),
            None | Some(Value::Null) => {
                return Err(invalid(
                    &format!("messages[{index}].role"),
                    format!("`messages[{index}].role` is required"),
                ))
            }
            Some(other) => {
                return Err(invalid(
                    &format!("messages[{index}].role"),
                    format!(
                        "`messages[{index}].role` must be a string, got {}",
                        type_name(other)
                    ),
                ))
            }
        };
        match message.get("content") {
            Some(Value::String(_) | Value::Array(_)) => {}
            // An assistant turn that only calls tools has no content (OpenAI
            // sends `null` or omits it); the seed wrongly refused these.
            None | Some(Value::Null) if role == "assistant" => {}
            None | Some(Value::Null) => {
                return Err(invalid(
                    &format!("messages[{index}].content"),
                    format!(
                        "`messages[{index}].content` is required for role `{}`",
                        crate::error::shorten(role)
                    ),
                ))
            }
            Some(other) => {
                return Err(invalid(
                    &format!("messages[{index}].content"),
                    format!(
                        "`messages[{index}].content` must be a string or an array, got {}",
                        type_name(other)
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// `prompt` or `input`: a string, an array of strings, an array of token
/// ids, or an array of such arrays; never an empty array (nothing to do).
/// `param` names the field, or the first bad element of it.
fn validate_text_input(name: &str, value: Option<&Value>) -> Result<(), ChatError> {
    const EXPECTED: &str =
        "a string, an array of strings, an array of token ids or an array of token id arrays";
    let items = match value {
        None | Some(Value::Null) => return Err(invalid(name, format!("{name} is required"))),
        Some(Value::String(_)) => return Ok(()),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(invalid(
                name,
                format!("`{name}` must not be an empty array"),
            ))
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(invalid(
                name,
                format!("`{name}` must be {EXPECTED}, got {}", type_name(other)),
            ))
        }
    };
    let is_token = |item: &Value| item.as_u64().is_some_and(|id| id <= u64::from(u32::MAX));
    // The first element decides which of the array forms this is.
    let fits = |item: &Value| match &items[0] {
        Value::String(_) => item.is_string(),
        Value::Number(_) => is_token(item),
        Value::Array(_) => item
            .as_array()
            .is_some_and(|ids| !ids.is_empty() && ids.iter().all(is_token)),
        _ => false,
    };
    match items.iter().position(|item| !fits(item)) {
        None => Ok(()),
        Some(index) => Err(invalid(
            &format!("{name}[{index}]"),
            format!(
                "`{name}` must be {EXPECTED}; `{name}[{index}]` is {}",
                describe_element(&items[index])
            ),
        )),
    }
}

/// What an element of `prompt` or `input` is, for a message.
fn describe_element(value: &Value) -> String {
    match value {
        Value::Array(ids) if ids.is_empty() => "an empty array".to_owned(),
        Value::Array(_) => "an array holding something other than token ids".to_owned(),
        other => describe(other),
    }
}

/// Whether `value` has the shape; `null` fits every optional field.
fn shape_fits(shape: Shape, value: &Value) -> bool {
    if value.is_null() {
        return true;
    }
    match shape {
        Shape::Integer => value.is_i64() || value.is_u64(),
        Shape::NonNegativeInteger => value.is_u64(),
        Shape::PositiveInteger => value.as_u64().is_some_and(|n| n >= 1),
        Shape::TokenCount => value.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)),
        Shape::ChoiceCount => value.as_u64().is_some_and(|n| (1..=128).contains(&n)),
        Shape::Number => value.is_number(),
        Shape::Bool => value.is_boolean(),
        Shape::Object => value.is_object(),
        Shape::Array => value.is_array(),
        Shape::StringOrStrings => match value {
            Value::String(_) => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        },
        Shape::ObjectOfNumbers => value
            .as_object()
            .is_some_and(|map| map.values().all(Value::is_number)),
        Shape::Integers => value
            .as_array()
            .is_some_and(|items| items.iter().all(|v| v.is_i64() || v.is_u64())),
        Shape::ReasoningEffort => value
            .as_str()
            .is_some_and(|effort| REASONING_EFFORTS.contains(&effort)),
        Shape::ResponseFormat => value.as_object().is_some_and(|format| {
            format
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|kind| RESPONSE_FORMATS.contains(&kind))
        }),
    }
}

fn check_shape(name: &str, shape: Shape, value: &Value) -> Result<(), ChatError> {
    if shape_fits(shape, value) {
        return Ok(());
    }
    let expected = match shape {
        Shape::Integer => "an integer".to_owned(),
        Shape::NonNegativeInteger => "a non-negative integer".to_owned(),
        Shape::PositiveInteger => "an integer of at least 1".to_owned(),
        Shape::TokenCount => format!("an integer from 0 to {}", u32::MAX),
        Shape::ChoiceCount => "an integer from 1 to 128".to_owned(),
        Shape::Number => "a number".to_owned(),
        Shape::Bool => "a boolean".to_owned(),
        Shape::Object => "an object".to_owned(),
        Shape::Array => "an array".to_owned(),
        Shape::StringOrStrings => "a string or an array of strings".to_owned(),
        Shape::ObjectOfNumbers => "an object whose values are numbers".to_owned(),
        Shape::Integers => "an array of integers".to_owned(),
        Shape::ReasoningEffort => format!("one of {}", REASONING_EFFORTS.join(", ")),
        Shape::ResponseFormat => format!(
            "an object whose `type` is one of {}",
            RESPONSE_FORMATS.join(", ")
        ),
    };
    Err(invalid(
        name,
        format!("`{name}` must be {expected}, got {}", describe(value)),
    ))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short description of a bad value: small scalars are shown, the rest by type,
/// so a huge or sensitive value is never echoed whole.
fn describe(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) if s.len() <= 32 => format!("{s:?}"),
        other => type_name(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok(model)` or `Err((param, message))`.
    fn check(body: &str, expected: Result<&str, (Option<&str>, &str)>) {
        let got = parse(body.as_bytes());
        match (got, expected) {
            (Ok(request), Ok(model)) => assert_eq!(request.model, model),
            (Err(ChatError::InvalidField { message, param }), Err((want_param, want))) => {
                assert_eq!(param.as_deref(), want_param, "{body}");
                assert_eq!(message, want, "{body}");
            }
            (Err(ChatError::InvalidBody { detail }), Err((None, want))) => {
                assert!(detail.contains(want), "{detail:?} lacks {want:?}")
            }
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    const HI: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

    #[test]
    fn accepts_valid_requests() {
        check(&format!(r#"{{"model":"m",{HI}}}"#), Ok("m"));
        // Assistant tool-call turn with null content, and top_k null: both valid.
        check(
            r#"{"model":"m","top_k":null,"messages":[{"role":"user","content":"hi"},
               {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
               {"role":"tool","tool_call_id":"c","content":"42"}]}"#,
            Ok("m"),
        );
        check(
            &format!(
                r#"{{"model":"m",{HI},"stop":["a","b"],"seed":-3,"logit_bias":{{"1":-100}},
                "response_format":{{"type":"json_object"}},"reasoning_effort":"high","unknown":{{"x":1}}}}"#
            ),
            Ok("m"),
        );
        check(
            &format!(r#"{{"model":"m",{HI},"content_parts":[{{"type":"text","text":"x"}}]}}"#),
            Ok("m"),
        );
    }

    #[test]
    fn refuses_bad_bodies() {
        check("", Err((None, "the body is empty")));
        check("{", Err((None, "not valid JSON")));
        check("[1]", Err((None, "expected a JSON object")));
        check(HI, Err((None, "not valid JSON")));
    }

    #[test]
    fn refuses_bad_fields() {
        check(
            &format!("{{{HI}}}"),
            Err((Some("model"), "model is required")),
        );
        check(
            &format!(r#"{{"model":"",{HI}}}"#),
            Err((Some("model"), "`model` must not be empty")),
        );
        check(
            &format!(r#"{{"model":7,{HI}}}"#),
            Err((Some("model"), "`model` must be a string, got a number")),
        );
        check(
            r#"{"model":"m"}"#,
            Err((Some("messages"), "messages is required")),
        );
        check(
            r#"{"model":"m","messages":"hi"}"#,
            Err((
                Some("messages"),
                "`messages` must be an array, got a string",
            )),
        );
        check(
            r#"{"model":"m","messages":[{"content":"hi"}]}"#,
            Err((Some("messages[0].role"), "`messages[0].role` is required")),
        );
        check(
            r#"{"model":"m","messages":[{"role":"user","content":null}]}"#,
            Err((
                Some("messages[0].content"),
                "`messages[0].content` is required for role `user`",
            )),
        );
        check(
            &format!(r#"{{"model":"m",{HI},"stream":"yes"}}"#),
            Err((Some("stream"), "`stream` must be a boolean, got \"yes\"")),
        );
        check(
            &format!(r#"{{"model":"m",{HI},"max_tokens":-1}}"#),
            Err((
                Some("max_tokens"),
                "`max_tokens` must be an integer from 0 to 4294967295, got -1",
            )),
        );
        check(
            &format!(r#"{{"model":"m",{HI},"n":0}}"#),
            Err((Some("n"), "`n` must be an integer from 1 to 128, got 0")),
        );
        check(
            &format!(r#"{{"model":"m",{HI},"max_completion_tokens":9999999999}}"#),
            Err((
                Some("max_completion_tokens"),
                "`max_completion_tokens` must be an integer from 0 to 4294967295, got 9999999999",
            )),
        );
        check(
            r#"{"model":"m","messages":[]}"#,
            Err((
                Some("messages"),
                "`messages` must hold at least one message",
            )),
        );
        check(
            &format!(r#"{{"model":"m",{HI},"reasoning_effort":"max"}}"#),
            Err((
                Some("reasoning_effort"),
                "`reasoning_effort` must be one of none, minimal, auto, low, medium, high, got \"max\"",
            )),
        );
        check(
            &format!(r#"{{"model":"m",{HI},"response_format":{{"type":"xml"}}}}"#),
            Err((
                Some("response_format"),
                "`response_format` must be an object whose `type` is one of text, json_object, json_schema, got an object",
            )),
        );
    }

    #[test]
    fn stream_flag() {
        let request = parse(format!(r#"{{"model":"m",{HI},"stream":true}}"#).as_bytes()).unwrap();
        assert!(request.stream);
        let request = parse(format!(r#"{{"model":"m",{HI},"stream":null}}"#).as_bytes()).unwrap();
        assert!(!request.stream);
    }
}
