//! [`Completion`]: a complete answer, its top-level fields in order, each
//! one either a parsed [`Value`] or the upstream's own text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::provider::JsonObject;
use crate::usage::Tokens;

/// A complete (non-streamed) answer: a JSON object whose top-level fields
/// keep their order.
///
/// An adapter that builds its answer builds a [`JsonObject`] and converts
/// it in one call:
///
/// ```
/// use router_core::{Completion, JsonObject};
/// use serde_json::json;
///
/// let mut object = JsonObject::new();
/// object.insert("id".to_owned(), json!("cmpl-1"));
/// object.insert("object".to_owned(), json!("chat.completion"));
/// let completion = Completion::from(object);
/// assert_eq!(completion.get("id").as_deref(), Some(&json!("cmpl-1")));
/// ```
///
/// An adapter that relays an upstream's answer as it is uses
/// [`Completion::from_json_slice`]: each top-level field is then kept as
/// the upstream's text (a [`RawValue`]), checked to be valid JSON but not
/// built into a tree, and parsed only when it is read ([`Completion::get`],
/// [`Completion::get_mut`]). The engine touches top-level fields only
/// (`model`, `provider`, `usage`, and `choices` for Gemini's thoughts), so
/// the other fields go out exactly as they arrived: whitespace, escapes
/// and numbers included, integers beyond 64 bits and floats beyond `f64`
/// too.
///
/// Serialized (with serde_json), the fields come out in their order, a
/// replaced field where it was and a new one last: the same object a
/// [`JsonObject`] of the same answer would give.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Unique keys.
    fields: Vec<(String, Field)>,
}

/// One top-level field's value.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum Field {
    /// The upstream's text, not parsed.
    Raw(Box<RawValue>),
    Value(Value),
}

impl Completion {
    /// An answer from its JSON text, each top-level field kept as its text.
    /// An error if `bytes` is not one JSON object.
    ///
    /// An object that repeats a key is parsed whole instead, so that the
    /// last value wins in the place of the first, as in a [`JsonObject`].
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let RawFields(fields) = serde_json::from_slice(bytes)?;
        if has_duplicate_keys(&fields) {
            return serde_json::from_slice::<JsonObject>(bytes).map(Self::from);
        }
        Ok(Self { fields })
    }

    /// Whether the answer has the top-level field `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.field(key).is_some()
    }

    /// The top-level field `key`. `None` when there is none, or when it is
    /// the upstream's text and that text is no [`Value`]: a number beyond
    /// `f64`, or nesting deeper than serde_json parses.
    pub fn get(&self, key: &str) -> Option<Cow<'_, Value>> {
        match self.field(key)? {
            Field::Value(value) => Some(Cow::Borrowed(value)),
            Field::Raw(raw) => serde_json::from_str(raw.get()).ok().map(Cow::Owned),
        }
    }

    /// The top-level field `key`, to edit in place: that field alone is
    /// parsed (once) if it was the upstream's text. `None` when there is
    /// none, or when its text is no [`Value`] (see [`Completion::get`]); the
    /// text is then kept as it is.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        let field = self.field_mut(key)?;
        if let Field::Raw(raw) = field {
            *field = Field::Value(serde_json::from_str(raw.get()).ok()?);
        }
        match field {
            Field::Value(value) => Some(value),
            Field::Raw(_) => None,
        }
    }

    /// Sets the top-level field `key`: in its place if the answer has it,
    /// else after the others.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.field_mut(key) {
            Some(field) => *field = Field::Value(value),
            None => self.fields.push((key.to_owned(), Field::Value(value))),
        }
    }

    /// Removes the top-level field `key`, if any; the others keep their order.
    pub fn remove(&mut self, key: &str) {
        self.fields.retain(|(name, _)| name != key);
    }

    /// The answer as a tree, every field parsed. An error if a field is the
    /// upstream's text and that text is no [`Value`] (see [`Completion::get`]).
    pub fn into_object(self) -> Result<JsonObject, serde_json::Error> {
        self.fields
            .into_iter()
            .map(|(key, field)| {
                let value = match field {
                    Field::Value(value) => value,
                    Field::Raw(raw) => serde_json::from_str(raw.get())?,
                };
                Ok((key, value))
            })
            .collect()
    }

    /// The token counts of `usage`, as [`Tokens::from_usage`] reads them.
    /// When `usage` is the upstream's text, the counts are read from it
    /// without building its tree: a request's books read them every time,
    /// and the tree cost more than the rest of closing them.
    pub(crate) fn usage_tokens(&self) -> Option<Tokens> {
        if let Some(Field::Raw(raw)) = self.field("usage") {
            if let Some(usage) = UsageText::read(raw) {
                return usage.tokens();
            }
        }
        Tokens::from_usage(self.get("usage")?.as_ref())
    }

    /// Puts `cost` into `usage` (replacing one the upstream sent), when
    /// `usage` is an object. Upstream text without a `cost` gets it
    /// appended to the text; anything else is parsed and edited.
    pub(crate) fn set_usage_cost(&mut self, cost: f64) {
        let spliced = match self.field("usage") {
            Some(Field::Raw(raw)) => UsageText::read(raw)
                .filter(|usage| !usage.cost)
                .and_then(|_| with_cost(raw.get(), cost)),
            _ => None,
        };
        if let Some(text) = spliced {
            if let Some(usage) = self.field_mut("usage") {
                *usage = Field::Raw(text);
            }
            return;
        }
        if let Some(usage) = self.get_mut("usage").and_then(Value::as_object_mut) {
            usage.insert("cost".to_owned(), Value::from(cost));
        }
    }

    fn field_mut(&mut self, key: &str) -> Option<&mut Field> {
        self.fields
            .iter_mut()
            .find_map(|(name, field)| (name == key).then_some(field))
    }

    fn field(&self, key: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find_map(|(name, field)| (name == key).then_some(field))
    }
}

impl From<JsonObject> for Completion {
    fn from(object: JsonObject) -> Self {
        Self {
            fields: object
                .into_iter()
                .map(|(key, value)| (key, Field::Value(value)))
                .collect(),
        }
    }
}

impl Serialize for Completion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (key, value) in &self.fields {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// What the books read of `usage` when it is the upstream's text: the
/// counts [`Tokens::from_usage`] reads, and whether a `cost` is there.
/// Read only from an object's text (a JSON array would fill the fields by
/// position); any count that is not a `u64` (a float, a negative, a
/// string) or a repeated key fails the read, and the caller falls back to
/// the tree, so both paths agree on every input.
#[derive(Deserialize)]
struct UsageText {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
    #[serde(default, deserialize_with = "present")]
    cost: bool,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl UsageText {
    fn read(raw: &RawValue) -> Option<Self> {
        let text = raw.get();
        if !text.starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    fn tokens(&self) -> Option<Tokens> {
        Some(Tokens {
            prompt: self.prompt_tokens?,
            completion: self.completion_tokens.unwrap_or(0),
            cached: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|details| details.cached_tokens)
                .unwrap_or(0),
            reasoning: self
                .completion_tokens_details
                .as_ref()
                .and_then(|details| details.reasoning_tokens)
                .unwrap_or(0),
        })
    }
}

/// True for any value, `null` included (an `Option` would read `null` as
/// absent, and a spliced `cost` would then repeat the key).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// An object's text with `"cost":` appended before its closing brace; the
/// cost written as serde_json writes an `f64` (`null` if not finite, as
/// `Value::from` would make it).
fn with_cost(object: &str, cost: f64) -> Option<Box<RawValue>> {
    let open = object.strip_suffix('}')?;
    let number = serde_json::to_string(&cost).ok()?;
    let empty = open.strip_prefix('{')?.trim().is_empty();
    let separator = if empty { "" } else { "," };
    RawValue::from_string(format!("{open}{separator}\"cost\":{number}}}")).ok()
}

/// A JSON object's fields in order, each value as its text: one pass over
/// the input, no tree.
struct RawFields(Vec<(String, Field)>);

impl<'de> Deserialize<'de> for RawFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawFieldsVisitor)
    }
}

struct RawFieldsVisitor;

impl<'de> Visitor<'de> for RawFieldsVisitor {
    type Value = RawFields;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFields, A::Error> {
        // An OpenAI chat completion has up to eight top-level fields.
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
            fields.push((key, Field::Raw(value)));
        }
        Ok(RawFields(fields))
    }
}

/// Whether a key appears twice: pairwise for the few fields of an answer,
/// sorted beyond, so that a huge object costs no quadratic time.
fn has_duplicate_keys(fields: &[(String, Field)]) -> bool {
    const PAIRWISE_UP_TO: usize = 16;
    if fields.len() <= PAIRWISE_UP_TO {
        return fields
            .iter()
            .enumerate()
            .any(|(at, (key, _))| fields[at + 1..].iter().any(|(other, _)| other == key));
    }
    let mut keys: Vec<&str> = fields.iter().map(|(key, _)| key.as_str()).collect();
    keys.sort_unstable();
    keys.windows(2).any(|pair| pair[0] == pair[1])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(text: &str) -> Completion {
        Completion::from_json_slice(text.as_bytes()).unwrap()
    }

    fn text(completion: &Completion) -> String {
        serde_json::to_string(completion).unwrap()
    }

    const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":7,"model":"gpt-4o-2024","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4},"system_fingerprint":"fp"}"#;

    #[test]
    fn relays_the_fields_in_order_as_they_came() {
        assert_eq!(text(&raw(ANSWER)), ANSWER);
    }

    #[test]
    fn a_replaced_field_keeps_its_place_and_a_new_one_comes_last() {
        let mut completion = raw(ANSWER);
        completion.set("model", json!("my-alias"));
        completion.set("extra", json!({"a": 1}));
        completion.remove("system_fingerprint");
        completion.remove("absent");
        assert_eq!(
            text(&completion),
            ANSWER
                .replace("gpt-4o-2024", "my-alias")
                .replace(r#","system_fingerprint":"fp"}"#, r#","extra":{"a":1}}"#)
        );
    }

    #[test]
    fn cost_goes_into_usage_in_place() {
        let mut completion = raw(ANSWER);
        let usage = completion.get_mut("usage").unwrap();
        usage
            .as_object_mut()
            .unwrap()
            .insert("cost".to_owned(), json!(0.5));
        assert_eq!(
            text(&completion),
            ANSWER.replace(r#""total_tokens":4}"#, r#""total_tokens":4,"cost":0.5}"#)
        );
        // Parsed once: the edit stays.
        assert_eq!(completion.get("usage").unwrap()["cost"], 0.5);
    }

    /// What the books did before the text path: the whole `usage` parsed,
    /// read with `Tokens::from_usage`, and `cost` inserted into the object.
    fn by_tree(answer: &str, cost: f64) -> (Option<Tokens>, String) {
        let mut object: JsonObject = serde_json::from_str(answer).unwrap();
        let tokens = object.get("usage").and_then(Tokens::from_usage);
        if let Some(usage) = object.get_mut("usage").and_then(Value::as_object_mut) {
            usage.insert("cost".to_owned(), Value::from(cost));
        }
        (tokens, serde_json::to_string(&object).unwrap())
    }

    #[test]
    fn usage_read_and_priced_from_text_as_from_the_tree() {
        let usages = [
            r#"{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}"#,
            r#"{ "prompt_tokens" : 3 , "completion_tokens" : 1 }"#,
            r#"{"prompt_tokens":1200,"completion_tokens":350,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":64}}"#,
            r#"{"completion_tokens":5}"#,
            r#"{"prompt_tokens":null,"completion_tokens":5}"#,
            r#"{"prompt_tokens":2.0,"completion_tokens":5}"#,
            r#"{"prompt_tokens":-2,"completion_tokens":5}"#,
            r#"{"prompt_tokens":"2"}"#,
            r#"{"prompt_tokens":2,"prompt_tokens_details":null}"#,
            r#"{"prompt_tokens":2,"prompt_tokens_details":7}"#,
            r#"{"prompt_tokens":2,"prompt_tokens":9}"#,
            r#"{"prompt_tokens":2,"cost":0.25,"total_tokens":2}"#,
            r#"{"prompt_tokens":2,"cost":null}"#,
            r#"{}"#,
            r#"{ }"#,
            r#"[3,1]"#,
            r#"null"#,
            r#"7"#,
        ];
        for usage in usages {
            for cost in [0.000_405, 0.0, f64::NAN] {
                let answer = format!(r#"{{"id":"x","usage":{usage},"model":"m"}}"#);
                let mut completion = raw(&answer);
                let tokens = completion.usage_tokens();
                completion.set_usage_cost(cost);
                let (expected_tokens, expected_text) = by_tree(&answer, cost);
                assert_eq!(tokens, expected_tokens, "tokens of {usage}");
                let spliced: Value = serde_json::from_str(&text(&completion)).unwrap();
                assert_eq!(
                    serde_json::to_string(&spliced).unwrap(),
                    expected_text,
                    "text of {usage} priced at {cost}"
                );
            }
        }
        // No usage at all: nothing to read, nothing added.
        let mut completion = raw(r#"{"id":"x"}"#);
        assert_eq!(completion.usage_tokens(), None);
        completion.set_usage_cost(1.0);
        assert_eq!(text(&completion), r#"{"id":"x"}"#);
    }

    #[test]
    fn a_priced_usage_keeps_the_upstreams_text() {
        let mut completion = raw(ANSWER);
        completion.set_usage_cost(0.5);
        assert_eq!(
            text(&completion),
            ANSWER.replace(r#""total_tokens":4}"#, r#""total_tokens":4,"cost":0.5}"#)
        );
    }

    #[test]
    fn reads_top_level_fields() {
        let completion = raw(ANSWER);
        assert!(completion.contains_key("choices"));
        assert!(!completion.contains_key("message"));
        assert_eq!(completion.get("created").as_deref(), Some(&json!(7)));
        assert_eq!(
            completion.get("choices").unwrap()[0]["message"]["content"],
            "Hi"
        );
        assert!(completion.get("absent").is_none());
    }

    #[test]
    fn only_a_json_object_is_an_answer() {
        for text in [
            "",
            "[]",
            "\"id\"",
            "null",
            "<html>Bad gateway</html>",
            r#"{"id":"c1""#,
            r#"{"id":"c1"} trailing"#,
            r#"{"id":"c1","x":tru}"#,
            "{\"id\":\"\u{1}\"}",
        ] {
            assert!(
                Completion::from_json_slice(text.as_bytes()).is_err(),
                "{text:?}"
            );
        }
        assert!(Completion::from_json_slice(b"{\"id\":\"\xff\"}").is_err());
        assert!(Completion::from_json_slice(b" {} ").is_ok());
    }

    #[test]
    fn escapes_unicode_and_numbers_go_out_verbatim() {
        let answer = concat!(
            r#"{"id":"\u0063\"1\/","object":"chat.completion","#,
            r#""choices":[{"message":{"content":"caf\u00e9 ☕ \ud83d\ude00 \n"}}],"#,
            r#""big":123456789012345678901234567890,"float":1e400,"small":-0.000000000000000000001,"#,
            r#""exact":0.1000000000000000055511151231257827,"pretty":[ 1 , {"a" : 2} ]}"#
        );
        let mut completion = raw(answer);
        completion.set("model", json!("m"));
        assert_eq!(
            text(&completion),
            format!("{},\"model\":\"m\"}}", &answer[..answer.len() - 1])
        );
        // Strings decode as they should where the engine reads them.
        assert_eq!(completion.get("id").as_deref(), Some(&json!("c\"1/")));
        assert_eq!(
            completion.get("choices").unwrap()[0]["message"]["content"],
            "café ☕ 😀 \n"
        );
        // A field no `Value` can hold is read as absent, yet relayed as is.
        assert!(completion.get("float").is_none());
        assert!(completion.get_mut("float").is_none());
        assert!(text(&completion).contains(r#""float":1e400,"#));
        assert!(completion.into_object().is_err());
    }

    #[test]
    fn keys_are_matched_decoded_and_written_out_plain() {
        let mut completion = raw(r#"{"mo\u0064el":"upstream","id":"c"}"#);
        completion.set("model", json!("alias"));
        assert_eq!(text(&completion), r#"{"model":"alias","id":"c"}"#);
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        for extra in [0, 20] {
            let filler: String = (0..extra).map(|n| format!(r#""f{n}":{n},"#)).collect();
            let answer = format!(r#"{{"model":"a",{filler}"id":"c","model":"b"}}"#);
            let completion = raw(&answer);
            let expected: JsonObject = serde_json::from_str(&answer).unwrap();
            assert_eq!(text(&completion), serde_json::to_string(&expected).unwrap());
            assert!(text(&completion).starts_with(r#"{"model":"b","#));
        }
    }

    #[test]
    fn materializes_for_a_deep_edit() {
        let mut completion = raw(ANSWER);
        completion.get_mut("choices").unwrap()[0]["message"]["content"] = json!("Hello");
        let object = completion.clone().into_object().unwrap();
        let mut expected: JsonObject = serde_json::from_str(ANSWER).unwrap();
        expected["choices"][0]["message"]["content"] = json!("Hello");
        assert_eq!(object, expected);
        assert_eq!(text(&completion), serde_json::to_string(&expected).unwrap());
    }

    #[test]
    fn an_object_built_by_an_adapter_serializes_as_the_object() {
        let object: JsonObject = serde_json::from_str(ANSWER).unwrap();
        let mut completion = Completion::from(object.clone());
        assert_eq!(text(&completion), ANSWER);
        completion.set("model", json!("alias"));
        completion.remove("provider");
        let mut expected = object;
        expected["model"] = json!("alias");
        assert_eq!(completion.into_object().unwrap(), expected);
    }
}
