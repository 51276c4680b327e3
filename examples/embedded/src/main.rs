//! Embedding the routing engine in another Rust service: build a [`Router`]
//! from config text, register a provider of your own next to the built-in
//! ones, and call it directly, without any HTTP in between.
//!
//! Run it with `cargo run -p example-embedded`.

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use router_core::{config, ChatResponse, Router};
use router_providers::client::HttpClient;
use router_providers::registry::Registry;

const CONFIG: &str = r#"
models:
  - name: mock-gpt
    provider: mock
    enabled: true
    visible: true
  - name: shout
    provider: shout
    enabled: true
    visible: true
api_keys:
  - key: ${EMBEDDED_KEY}
    name: embedded
    is_active: true
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for line in run().await? {
        show(&line);
    }
    Ok(())
}

/// Builds the engine and asks it twice; returns what it answered, a line each.
async fn run() -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut lines = Vec::new();
    // Config sources are passed in: here the "environment" is a closure.
    let config = config::parse(Path::new("embedded.yaml"), CONFIG, &|name| {
        (name == "EMBEDDED_KEY").then(|| "sk-embedded".to_owned())
    })?;
    let mut registry = Registry::builtin(HttpClient::new(&config.server)?);
    registry.register("shout", Arc::new(example_custom_provider::ShoutFactory));
    let router = Router::new(&config, &|entry| {
        registry.build(entry).map_err(|error| error.to_string())
    })?;

    let key = router.authenticate(Some(b"Bearer sk-embedded"))?;
    let body = br#"{"model":"shout","messages":[{"role":"user","content":"embedded and fast"}]}"#;
    if let ChatResponse::Complete(answer) = router.chat(&key, body).await.result? {
        let answer = answer.into_object()?;
        let content = &answer["choices"][0]["message"]["content"];
        lines.push(format!("complete: {content}"));
    }

    let body =
        br#"{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
    if let ChatResponse::Stream(mut stream) = router.chat(&key, body).await.result? {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if let Some(content) = chunk.0["choices"]
                .get(0)
                .and_then(|choice| choice["delta"]["content"].as_str())
            {
                lines.push(format!("chunk: {content:?}"));
            }
        }
    }
    Ok(lines)
}

#[allow(clippy::print_stdout)] // an example's output is the point
fn show(line: &str) {
    println!("{line}");
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_example_runs_both_providers() {
        let lines = super::run().await.unwrap();
        assert_eq!(lines[0], "complete: \"EMBEDDED AND FAST\"");
        assert_eq!(lines.last().unwrap(), "chunk: \"hello\"");
    }
}
