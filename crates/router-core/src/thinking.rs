//! `support_google_thinking`: the seed's mapping of OpenAI's `reasoning_effort`
//! to Gemini's `extra_body.google.thinking_config`, and of Gemini's
//! `<thought>…</thought>` answers to DeepSeek-style `reasoning_content`.

use serde_json::{json, Map, Value};

use crate::provider::{Completion, JsonObject};

const OPEN: &str = "<thought>";
const CLOSE: &str = "</thought>";

/// Rewrites the request: a string `reasoning_effort` is removed and, for a
/// known effort, becomes `extra_body.google.thinking_config`. Other
/// `extra_body` keys are kept.
pub fn map_request(body: &mut JsonObject) {
    if !matches!(body.get("reasoning_effort"), Some(Value::String(_))) {
        return;
    }
    let Some(Value::String(effort)) = body.shift_remove("reasoning_effort") else {
        return;
    };
    let (budget, include_thoughts) = match effort.as_str() {
        "none" => (0, false),
        "auto" => (-1, true),
        "low" => (1024, true),
        "medium" => (8192, true),
        "high" => (24576, true),
        _ => return,
    };
    let _ = set_thinking_config(body, budget, include_thoughts);
}

fn set_thinking_config(body: &mut JsonObject, budget: i64, include_thoughts: bool) -> Option<()> {
    let config = child(
        child(child(body, "extra_body")?, "google")?,
        "thinking_config",
    )?;
    config.insert("thinking_budget".to_owned(), json!(budget));
    config.insert("include_thoughts".to_owned(), json!(include_thoughts));
    Some(())
}

/// `map[key]` as an object: created when absent, replaced when not an object.
fn child<'a>(map: &'a mut JsonObject, key: &str) -> Option<&'a mut JsonObject> {
    let entry = map.entry(key.to_owned()).or_insert(Value::Null);
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

fn insert(value: &mut Value, key: &str, item: Value) {
    if let Value::Object(map) = value {
        map.insert(key.to_owned(), item);
    }
}

fn is_thought(holder: &Value) -> bool {
    holder
        .get("extra_content")
        .and_then(|extra| extra.get("google"))
        .and_then(|google| google.get("thought"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// Non-streamed answer: choice 0's `<thought>…</thought>` moves to
/// `reasoning_content` when the upstream flagged it as a thought.
pub fn map_completion(completion: &mut Completion) {
    let Some(message) = completion
        .get_mut("choices")
        .and_then(|choices| choices.get_mut(0))
        .and_then(|choice| choice.get_mut("message"))
    else {
        return;
    };
    if !is_thought(message) {
        return;
    }
    let Some(content) = message.get("content").and_then(Value::as_str) else {
        return;
    };
    let (Some(open), Some(close)) = (content.find(OPEN), content.find(CLOSE)) else {
        return;
    };
    if close < open + OPEN.len() {
        return;
    }
    let reasoning = content[open + OPEN.len()..close].to_owned();
    let rest = format!("{}{}", &content[..open], &content[close + CLOSE.len()..]);
    insert(message, "reasoning_content", Value::String(reasoning));
    insert(message, "content", Value::String(rest));
    if let Value::Object(map) = message {
        map.shift_remove("extra_content");
    }
}

/// Streamed answer: the state that lives across chunks of one stream.
#[derive(Debug, Default)]
pub struct StreamThinking {
    in_thought: bool,
}

impl StreamThinking {
    pub fn map_chunk(&mut self, chunk: &mut JsonObject) {
        let Some(delta) = chunk
            .get_mut("choices")
            .and_then(|choices| choices.get_mut(0))
            .and_then(|choice| choice.get_mut("delta"))
        else {
            return;
        };
        if is_thought(delta) {
            self.in_thought = true;
            let Some(content) = delta.get("content").and_then(Value::as_str) else {
                return;
            };
            let reasoning = content.strip_prefix(OPEN).unwrap_or(content).to_owned();
            insert(delta, "reasoning_content", Value::String(reasoning));
            if let Value::Object(map) = delta {
                map.shift_remove("content");
                map.shift_remove("extra_content");
            }
        } else if self.in_thought {
            let Some(content) = delta.get("content").and_then(Value::as_str) else {
                return;
            };
            if let Some(rest) = content.strip_prefix(CLOSE) {
                let rest = rest.to_owned();
                insert(delta, "content", Value::String(rest));
                self.in_thought = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn check_request(effort: Value, expected: Value) {
        let mut body = object(json!({"model": "m", "reasoning_effort": effort}));
        map_request(&mut body);
        assert_eq!(Value::Object(body), expected);
    }

    #[test]
    fn maps_each_effort_exactly_as_the_seed() {
        for (effort, budget, include) in [
            ("none", 0, false),
            ("auto", -1, true),
            ("low", 1024, true),
            ("medium", 8192, true),
            ("high", 24576, true),
        ] {
            check_request(
                json!(effort),
                json!({"model": "m", "extra_body": {"google": {"thinking_config":
                    {"thinking_budget": budget, "include_thoughts": include}}}}),
            );
        }
        // Unknown strings are only removed; non-strings are left alone.
        check_request(json!("minimal"), json!({"model": "m"}));
        check_request(json!(null), json!({"model": "m", "reasoning_effort": null}));
    }

    #[test]
    fn keeps_other_extra_body_keys() {
        let mut body = object(json!({"reasoning_effort": "low",
            "extra_body": {"keep": 1, "google": {"other": true}}}));
        map_request(&mut body);
        assert_eq!(
            Value::Object(body),
            json!({"extra_body": {"keep": 1, "google": {"other": true,
                "thinking_config": {"thinking_budget": 1024, "include_thoughts": true}}}})
        );
    }

    #[test]
    fn completion_thought_becomes_reasoning_content() {
        let mut completion = Completion::from(object(json!({"choices": [{"message": {
            "role": "assistant", "content": "<thought>hmm</thought>Answer",
            "extra_content": {"google": {"thought": true}}}}]})));
        map_completion(&mut completion);
        assert_eq!(
            Value::Object(completion.into_object().unwrap()),
            json!({"choices": [{"message": {"role": "assistant",
                "content": "Answer", "reasoning_content": "hmm"}}]})
        );
        // Without the thought flag nothing changes.
        let plain = json!({"choices": [{"message": {"content": "<thought>x</thought>y"}}]});
        let mut completion = Completion::from(object(plain.clone()));
        map_completion(&mut completion);
        assert_eq!(Value::Object(completion.into_object().unwrap()), plain);
        // An answer relayed as the upstream's text: `choices` alone is parsed.
        let mut completion = Completion::from_json_slice(
            br#"{"id":"c","choices":[{"message":{"content":"<thought>hmm</thought>Answer",
                "extra_content":{"google":{"thought":true}}}}],"usage": {"prompt_tokens" : 1}}"#,
        )
        .unwrap();
        map_completion(&mut completion);
        assert_eq!(
            serde_json::to_string(&completion).unwrap(),
            r#"{"id":"c","choices":[{"message":{"content":"Answer","reasoning_content":"hmm"}}],"usage":{"prompt_tokens" : 1}}"#
        );
    }

    #[test]
    fn stream_thoughts_become_reasoning_content() {
        let mut state = StreamThinking::default();
        let mut chunks = [
            json!({"choices": [{"delta": {"content": "<thought>let me",
                "extra_content": {"google": {"thought": true}}}}]}),
            json!({"choices": [{"delta": {"content": " think",
                "extra_content": {"google": {"thought": true}}}}]}),
            json!({"choices": [{"delta": {"content": "</thought>Hello"}}]}),
            json!({"choices": [{"delta": {"content": "</thought> stays"}}]}),
        ]
        .map(object);
        for chunk in &mut chunks {
            state.map_chunk(chunk);
        }
        let got: Vec<Value> = chunks.into_iter().map(Value::Object).collect();
        assert_eq!(
            got,
            vec![
                json!({"choices": [{"delta": {"reasoning_content": "let me"}}]}),
                json!({"choices": [{"delta": {"reasoning_content": " think"}}]}),
                json!({"choices": [{"delta": {"content": "Hello"}}]}),
                json!({"choices": [{"delta": {"content": "</thought> stays"}}]}),
            ]
        );
    }
}
