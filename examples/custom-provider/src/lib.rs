//! A provider in its own crate: it depends on `router-core` alone, implements
//! [`Provider`], and is registered by name in the binary (see the README's
//! "Adding a provider"). This one echoes the last user message back in
//! upper case, as a complete answer or as a stream of one chunk per word.

use std::sync::Arc;

use async_trait::async_trait;
use router_core::config::ModelEntry;
use router_core::provider::{BuildResult, ChunkStream, ProviderFactory};
use router_core::{Chunk, Completion, JsonObject, Provider, ProviderError, ProviderRequest};
use serde_json::{json, Value};

/// Answers with the last user message in upper case.
#[derive(Debug, Default)]
pub struct ShoutProvider;

fn last_user_text(body: &JsonObject) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|message| message["role"] == "user")
        })
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default()
        .to_uppercase()
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

#[async_trait]
impl Provider for ShoutProvider {
    async fn complete(&self, request: ProviderRequest) -> Result<Completion, ProviderError> {
        let text = last_user_text(&request.body);
        Ok(Completion::from(object(json!({
            "id": "shout-1",
            "object": "chat.completion",
            "model": request.body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"}],
        }))))
    }

    async fn stream(&self, request: ProviderRequest) -> Result<ChunkStream, ProviderError> {
        let text = last_user_text(&request.body);
        let chunks: Vec<Result<Chunk, ProviderError>> = text
            .split_inclusive(' ')
            .map(|word| {
                Ok(Chunk(object(json!({
                    "id": "shout-1",
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": word}}],
                }))))
            })
            .collect();
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }
}

/// Registered in the binary as `shout`: `registry.register("shout", Arc::new(ShoutFactory))`.
#[derive(Debug, Default)]
pub struct ShoutFactory;

impl ProviderFactory for ShoutFactory {
    fn build(&self, _entry: &ModelEntry) -> BuildResult {
        Ok(Arc::new(ShoutProvider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn request() -> ProviderRequest {
        ProviderRequest {
            body: object(json!({"model": "m", "messages": [
                {"role": "user", "content": "hello there"}]})),
            api_key: None,
        }
    }

    #[tokio::test]
    async fn shouts_the_last_user_message() {
        let answer = ShoutProvider.complete(request()).await.unwrap();
        let answer = answer.into_object().unwrap();
        assert_eq!(answer["choices"][0]["message"]["content"], "HELLO THERE");
        let words: Vec<String> = ShoutProvider
            .stream(request())
            .await
            .unwrap()
            .map(|chunk| {
                chunk.unwrap().0["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
            .await;
        assert_eq!(words, ["HELLO ", "THERE"]);
    }
}
