//! `stream_only`: building one `chat.completion` from the chunks of a stream,
//! for entries whose upstream only answers in streams. Unlike the seed, tool
//! calls survive, every choice is kept, and a malformed chunk is an error
//! rather than a crash.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::provider::{Chunk, Completion, JsonObject};

/// Accumulates the chunks of one stream.
#[derive(Debug, Default)]
pub struct Aggregator {
    /// `id`, `created`, `model`, `system_fingerprint`, from the first chunk that has them.
    header: JsonObject,
    choices: BTreeMap<u64, ChoiceState>,
    usage: Option<Value>,
    chunks: usize,
}

#[derive(Debug, Default)]
struct ChoiceState {
    role: Option<String>,
    content: String,
    has_content: bool,
    reasoning: String,
    has_reasoning: bool,
    /// Tool calls by their `index`; `arguments` arrive in fragments.
    tool_calls: BTreeMap<u64, JsonObject>,
    finish_reason: Option<Value>,
}

impl Aggregator {
    pub fn push(&mut self, chunk: &Chunk) {
        self.chunks += 1;
        let chunk = &chunk.0;
        for key in ["id", "created", "model", "system_fingerprint"] {
            if let Some(value) = chunk.get(key) {
                if !value.is_null() && !self.header.contains_key(key) {
                    self.header.insert(key.to_owned(), value.clone());
                }
            }
        }
        if let Some(usage) = chunk.get("usage") {
            if !usage.is_null() {
                self.usage = Some(usage.clone());
            }
        }
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return;
        };
        for choice in choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let state = self.choices.entry(index).or_default();
            if let Some(reason) = choice.get("finish_reason") {
                if !reason.is_null() {
                    state.finish_reason = Some(reason.clone());
                }
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            if let Some(role) = delta.get("role").and_then(Value::as_str) {
                state.role = Some(role.to_owned());
            }
            if let Some(content) = delta.get("content").and_then(Value::as_str) {
                state.content.push_str(content);
                state.has_content = true;
            }
            if let Some(reasoning) = delta.get("reasoning_content").and_then(Value::as_str) {
                state.reasoning.push_str(reasoning);
                state.has_reasoning = true;
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                merge_tool_call(&mut state.tool_calls, call);
            }
        }
    }

    /// Whether any chunk arrived.
    pub fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    pub fn finish(self) -> Completion {
        let mut out = Map::new();
        out.insert(
            "id".to_owned(),
            self.header.get("id").cloned().unwrap_or(Value::Null),
        );
        out.insert("object".to_owned(), Value::from("chat.completion"));
        for key in ["created", "model", "system_fingerprint"] {
            if let Some(value) = self.header.get(key) {
                out.insert(key.to_owned(), value.clone());
            }
        }
        let choices = self
            .choices
            .into_iter()
            .map(|(index, state)| {
                let mut message = Map::new();
                message.insert(
                    "role".to_owned(),
                    Value::from(state.role.unwrap_or_else(|| "assistant".to_owned())),
                );
                let content = if state.has_content || state.tool_calls.is_empty() {
                    Value::from(state.content)
                } else {
                    Value::Null
                };
                message.insert("content".to_owned(), content);
                if state.has_reasoning {
                    message.insert("reasoning_content".to_owned(), Value::from(state.reasoning));
                }
                if !state.tool_calls.is_empty() {
                    let calls = state.tool_calls.into_values().map(Value::Object).collect();
                    message.insert("tool_calls".to_owned(), Value::Array(calls));
                }
                let mut choice = Map::new();
                choice.insert("index".to_owned(), Value::from(index));
                choice.insert("message".to_owned(), Value::Object(message));
                choice.insert(
                    "finish_reason".to_owned(),
                    state.finish_reason.unwrap_or(Value::Null),
                );
                Value::Object(choice)
            })
            .collect();
        out.insert("choices".to_owned(), Value::Array(choices));
        if let Some(usage) = self.usage {
            out.insert("usage".to_owned(), usage);
        }
        Completion::from(out)
    }
}

/// Merges one streamed tool-call fragment: the first fragment of an index
/// carries `id`, `type` and the function name; later ones append to `arguments`.
fn merge_tool_call(calls: &mut BTreeMap<u64, JsonObject>, fragment: &Value) {
    let index = fragment.get("index").and_then(Value::as_u64).unwrap_or(0);
    let call = calls.entry(index).or_default();
    for key in ["id", "type"] {
        if let Some(value) = fragment.get(key).filter(|v| !v.is_null()) {
            call.insert(key.to_owned(), value.clone());
        }
    }
    let Some(function) = fragment.get("function") else {
        return;
    };
    let target = call
        .entry("function".to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(target) = target.as_object_mut() else {
        return;
    };
    if let Some(name) = function.get("name").and_then(Value::as_str) {
        target.insert("name".to_owned(), Value::from(name));
    }
    if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
        let entry = target
            .entry("arguments".to_owned())
            .or_insert_with(|| Value::from(""));
        if let Value::String(so_far) = entry {
            so_far.push_str(arguments);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(value: Value) -> Chunk {
        match value {
            Value::Object(map) => Chunk(map),
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn builds_content_and_usage() {
        let mut aggregator = Aggregator::default();
        for value in [
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m",
                "system_fingerprint": null,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
            json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        ] {
            aggregator.push(&chunk(value));
        }
        assert_eq!(
            Value::Object(aggregator.finish().into_object().unwrap()),
            json!({"id": "c1", "object": "chat.completion", "created": 7, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                    "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        );
    }

    #[test]
    fn keeps_tool_calls() {
        let mut aggregator = Aggregator::default();
        for value in [
            json!({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "{\"city\":"}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "\"Paris\"}"}},
                {"index": 1, "id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ] {
            aggregator.push(&chunk(value));
        }
        assert_eq!(
            Value::Object(aggregator.finish().into_object().unwrap()),
            json!({"id": "c", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
                    "finish_reason": "tool_calls"}]})
        );
    }
}
