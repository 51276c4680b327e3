//! Token estimates: how many tokens a prompt will cost before the upstream
//! says, and how many a relayed answer cost when it never says.
//!
//! Counting is a port ([`TokenCounter`]): router-limits implements it with a
//! real tokenizer where one applies. [`ByteCounter`] is the documented
//! fallback: one token per four bytes of UTF-8, rounded up, which is close
//! for English prose and errs high for code and most other scripts.

use std::fmt;

use serde_json::Value;

use crate::config::ModelEntry;
use crate::provider::JsonObject;

/// Counts the tokens of a text for one model entry.
pub trait TokenCounter: Send + Sync + fmt::Debug {
    fn count(&self, entry: &ModelEntry, text: &str) -> u64;
}

/// One token per four bytes, rounded up.
#[derive(Debug, Default, Clone, Copy)]
pub struct ByteCounter;

impl TokenCounter for ByteCounter {
    fn count(&self, _entry: &ModelEntry, text: &str) -> u64 {
        (text.len() as u64).div_ceil(4)
    }
}

/// Tokens OpenAI's chat format adds around each message (role and
/// delimiters) and to prime the reply.
const PER_MESSAGE: u64 = 3;
const PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;

/// The prompt tokens of a chat request, counted the way OpenAI's cookbook
/// does (and its API agrees): every string of every message on its own
/// (role, content or text parts, name, tool calls' names and arguments),
/// 3 tokens of framing per message, 1 more for a `name`, 3 to prime the
/// reply; plus the tool definitions as JSON. Images and audio are not
/// counted: their cost is the upstream's to report.
pub fn prompt_tokens(counter: &dyn TokenCounter, entry: &ModelEntry, body: &JsonObject) -> u64 {
    let count = |text: &str| counter.count(entry, text);
    let mut tokens = REPLY_PRIMING;
    for message in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        tokens += PER_MESSAGE;
        if let Some(role) = message.get("role").and_then(Value::as_str) {
            tokens += count(role);
        }
        if let Some(name) = message.get("name").and_then(Value::as_str) {
            tokens += count(name) + PER_NAME;
        }
        match message.get("content") {
            Some(Value::String(content)) => tokens += count(content),
            Some(Value::Array(parts)) => {
                for part in parts {
                    if let Some(text) = part.get("text").and_then(Value::as_str) {
                        tokens += count(text);
                    }
                }
            }
            _ => {}
        }
        for call in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let function = call.get("function");
            for key in ["name", "arguments"] {
                if let Some(text) = function
                    .and_then(|function| function.get(key))
                    .and_then(Value::as_str)
                {
                    tokens += count(text);
                }
            }
        }
    }
    if let Some(tools) = body.get("tools").filter(|tools| !tools.is_null()) {
        tokens += count(&tools.to_string());
    }
    tokens
}

/// The prompt tokens of a text completion (`prompt`, and `suffix` when it
/// is text) or of an embeddings request (`input`): each string counted on
/// its own, a token id array by its length (it is tokens already). No
/// framing: these endpoints add none.
pub fn text_input_tokens(
    counter: &dyn TokenCounter,
    entry: &ModelEntry,
    body: &JsonObject,
    field: &str,
) -> u64 {
    let count = |value: &Value| -> u64 {
        match value {
            Value::String(text) => counter.count(entry, text),
            Value::Array(ids) => ids.len() as u64,
            Value::Number(_) => 1,
            _ => 0,
        }
    };
    let mut tokens = match body.get(field) {
        Some(Value::Array(items)) => items.iter().map(count).sum(),
        Some(value) => count(value),
        None => 0,
    };
    if let Some(Value::String(suffix)) = body.get("suffix") {
        tokens += counter.count(entry, suffix);
    }
    tokens
}

/// Tokens to reserve for the answer: the request's `max_completion_tokens`
/// (else `max_tokens`, else `default`), never above the entry's `max_tokens`.
pub fn output_reservation(body: &JsonObject, entry: &ModelEntry, default: u64) -> u64 {
    let asked = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|key| body.get(*key).and_then(Value::as_u64))
        .unwrap_or(default);
    match entry.max_tokens {
        Some(cap) => asked.min(cap.get()),
        None => asked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::num::NonZeroU64;

    fn object(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => map,
            _ => JsonObject::new(),
        }
    }

    #[test]
    fn bytes_round_up() {
        let entry = ModelEntry::new("m", "mock");
        assert_eq!(ByteCounter.count(&entry, ""), 0);
        assert_eq!(ByteCounter.count(&entry, "abc"), 1);
        assert_eq!(ByteCounter.count(&entry, "abcd"), 1);
        assert_eq!(ByteCounter.count(&entry, "abcde"), 2);
    }

    #[test]
    fn prompt_counts_every_text_and_the_framing() {
        let entry = ModelEntry::new("m", "mock");
        let body = object(json!({"messages": [
            {"role": "system", "content": "abcd"},
            {"role": "user", "content": [{"type": "text", "text": "efgh"}, {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        ]}));
        // Each string on its own: system 2, abcd 1, user 1, efgh 1,
        // assistant 3, f 1, {} 1; 3 messages of framing and the priming.
        assert_eq!(prompt_tokens(&ByteCounter, &entry, &body), 10 + 3 * 3 + 3);
    }

    #[test]
    fn text_inputs_count_strings_and_token_arrays() {
        let entry = ModelEntry::new("m", "mock");
        let check = |body: Value, want: u64| {
            let got = text_input_tokens(&ByteCounter, &entry, &object(body.clone()), "input");
            assert_eq!(got, want, "{body}");
        };
        check(json!({"input": "abcdefgh"}), 2);
        check(json!({"input": ["abcd", "efghi"]}), 1 + 2);
        // Token ids are tokens already: one each, an array by its length.
        check(json!({"input": [1, 2, 3]}), 3);
        check(json!({"input": [[1, 2], [3, 4, 5]]}), 5);
        check(json!({"input": "abcd", "suffix": "efgh"}), 2);
        check(json!({}), 0);
    }

    #[test]
    fn output_reservation_prefers_max_completion_tokens_and_caps() {
        let mut entry = ModelEntry::new("m", "mock");
        let check = |body: Value, entry: &ModelEntry, want: u64| {
            assert_eq!(
                output_reservation(&object(body.clone()), entry, 1024),
                want,
                "{body}"
            );
        };
        check(json!({}), &entry, 1024);
        check(json!({"max_tokens": 50}), &entry, 50);
        check(
            json!({"max_tokens": 50, "max_completion_tokens": 70}),
            &entry,
            70,
        );
        entry.max_tokens = NonZeroU64::new(60);
        check(json!({"max_completion_tokens": 70}), &entry, 60);
        check(json!({}), &entry, 60);
    }
}
