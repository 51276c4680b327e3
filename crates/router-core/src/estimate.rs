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
const REPLY_PRIMING: u64 = 3;

/// The prompt tokens of a chat request: the text of every message (string
/// content, text parts, tool calls' names and arguments, names), the tool
/// definitions, plus OpenAI's per-message framing. Images and audio are not
/// counted: their cost is the upstream's to report.
pub fn prompt_tokens(counter: &dyn TokenCounter, entry: &ModelEntry, body: &JsonObject) -> u64 {
    let mut text = String::new();
    let mut messages = 0;
    if let Some(list) = body.get("messages").and_then(Value::as_array) {
        for message in list {
            messages += 1;
            collect_message_text(message, &mut text);
        }
    }
    if let Some(tools) = body.get("tools").filter(|tools| !tools.is_null()) {
        text.push_str(&tools.to_string());
    }
    counter.count(entry, &text) + messages * PER_MESSAGE + REPLY_PRIMING
}

fn collect_message_text(message: &Value, text: &mut String) {
    for key in ["role", "name"] {
        if let Some(value) = message.get(key).and_then(Value::as_str) {
            push(text, value);
        }
    }
    match message.get("content") {
        Some(Value::String(content)) => push(text, content),
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(part_text) = part.get("text").and_then(Value::as_str) {
                    push(text, part_text);
                }
            }
        }
        _ => {}
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            for pointer in ["/function/name", "/function/arguments"] {
                if let Some(value) = call.pointer(pointer).and_then(Value::as_str) {
                    push(text, value);
                }
            }
        }
    }
}

fn push(text: &mut String, piece: &str) {
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(piece);
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
        // "system\nabcd\nuser\nefgh\nassistant\nf\n{}" is 34 bytes: 9 tokens; 3 messages.
        assert_eq!(prompt_tokens(&ByteCounter, &entry, &body), 9 + 3 * 3 + 3);
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
