//! The Ollama adapter against an in-process server on 127.0.0.1 that speaks
//! Ollama's `/api/chat` wire format: JSON answers, NDJSON streams sent in
//! pieces that cut lines in two, error bodies, and streams that break off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use example_ollama_provider::OllamaProvider;
use futures_util::StreamExt;
use router_core::config::ModelEntry;
use router_core::provider::ErrorKind;
use router_core::{JsonObject, Provider, ProviderError, ProviderRequest};
use serde_json::{json, Value};
use support::{start, Script};
use tokio::net::TcpListener;

fn provider(addr: SocketAddr) -> OllamaProvider {
    let mut entry = ModelEntry::new("llama", "ollama");
    entry.provider_model_name = "llama3.2".to_owned();
    entry.base_url = Some(format!("http://{addr}").parse().unwrap());
    entry.timeouts.idle = Duration::from_secs(2);
    OllamaProvider::new(&entry).unwrap()
}

fn request(stream: bool) -> ProviderRequest {
    let mut body = json!({
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "max_tokens": 64,
        "temperature": 0.5,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    ProviderRequest {
        body: match body {
            Value::Object(map) => map,
            _ => JsonObject::new(),
        },
        api_key: None,
    }
}

/// Ollama's lines for "The sky is blue." with a done line and its counts.
fn transcript() -> Vec<String> {
    let line = |content: &str| {
        json!({"model": "llama3.2", "created_at": "2024-07-22T20:33:28Z",
            "message": {"role": "assistant", "content": content}, "done": false})
        .to_string()
            + "\n"
    };
    let done = json!({"model": "llama3.2", "created_at": "2024-07-22T20:33:29Z",
        "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop",
        "total_duration": 4883583458u64, "prompt_eval_count": 26, "eval_count": 5})
    .to_string()
        + "\n";
    let all = [line("The"), line(" sky"), line(" is blue."), done].concat();
    // Pieces that cut lines in two, as a network may.
    let (a, rest) = all.split_at(30);
    let (b, c) = rest.split_at(rest.len() / 2);
    vec![a.to_owned(), b.to_owned(), c.to_owned()]
}

#[tokio::test]
async fn a_complete_answer_is_an_openai_completion() {
    let answer = json!({"model": "llama3.2", "created_at": "2024-07-22T20:33:28Z",
        "message": {"role": "assistant", "content": "Rayleigh scattering."},
        "done": true, "done_reason": "stop", "prompt_eval_count": 26, "eval_count": 4})
    .to_string();
    let mock = start(Script {
        status: 200,
        pieces: vec![answer],
        cut: false,
    })
    .await;
    let completion = provider(mock.addr).complete(request(false)).await.unwrap();
    let completion = Value::Object(completion.into_object().unwrap());
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "llama3.2");
    assert_eq!(
        completion["choices"][0]["message"],
        json!({"role": "assistant", "content": "Rayleigh scattering."})
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        completion["usage"],
        json!({"prompt_tokens": 26, "completion_tokens": 4, "total_tokens": 30})
    );
    let requests = mock.requests.lock().unwrap();
    assert_eq!(requests[0].0, "/api/chat");
    assert_eq!(
        requests[0].1,
        json!({"model": "llama3.2",
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            "stream": false, "options": {"temperature": 0.5, "num_predict": 64}})
    );
}

#[tokio::test]
async fn a_stream_becomes_openai_chunks_then_usage() {
    let mock = start(Script {
        status: 200,
        pieces: transcript(),
        cut: false,
    })
    .await;
    let stream = provider(mock.addr).stream(request(true)).await.unwrap();
    let chunks: Vec<Value> = stream
        .map(|chunk| Value::Object(chunk.unwrap().0))
        .collect()
        .await;
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta"))
        .collect();
    assert_eq!(
        deltas,
        [
            &json!({"role": "assistant", "content": "The"}),
            &json!({"content": " sky"}),
            &json!({"content": " is blue."}),
            &json!({}),
        ]
    );
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/finish_reason"))
        .collect();
    assert_eq!(finishes.last().unwrap(), &&json!("stop"));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 26, "completion_tokens": 5, "total_tokens": 31})
    );
    assert!(chunks
        .iter()
        .all(|chunk| chunk["object"] == "chat.completion.chunk" && chunk["model"] == "llama3.2"));
    assert_eq!(mock.requests.lock().unwrap()[0].1["stream"], true);
}

#[tokio::test]
async fn tool_calls_in_a_stream_keep_their_own_index() {
    let calls = json!({"model": "llama3.2", "message": {"role": "assistant", "content": "",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}
        ]}, "done": false})
    .to_string()
        + "\n";
    let done = json!({"model": "llama3.2", "message": {"role": "assistant", "content": ""},
        "done": true, "done_reason": "stop", "prompt_eval_count": 40, "eval_count": 20})
    .to_string()
        + "\n";
    let mock = start(Script {
        status: 200,
        pieces: vec![calls, done],
        cut: false,
    })
    .await;
    let stream = provider(mock.addr).stream(request(true)).await.unwrap();
    let chunks: Vec<Value> = stream
        .map(|chunk| Value::Object(chunk.unwrap().0))
        .collect()
        .await;
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["tool_calls"],
        json!([
            {"id": "call_0", "type": "function", "index": 0,
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_1", "type": "function", "index": 1,
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
        ])
    );
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn a_stream_that_breaks_off_before_done_is_truncated() {
    let mut pieces = transcript();
    pieces.pop();
    let mock = start(Script {
        status: 200,
        pieces,
        cut: true,
    })
    .await;
    let stream = provider(mock.addr).stream(request(true)).await.unwrap();
    let results: Vec<Result<_, ProviderError>> = stream.collect().await;
    let last = results.last().unwrap().as_ref().unwrap_err();
    assert_eq!(last.kind(), ErrorKind::Truncated, "{last}");
    assert!(results[..results.len() - 1].iter().all(Result::is_ok));
}

#[tokio::test]
async fn an_error_line_mid_stream_ends_the_stream_with_an_error() {
    let line = json!({"model": "llama3.2", "message": {"role": "assistant", "content": "The"},
        "done": false})
    .to_string()
        + "\n";
    let mock = start(Script {
        status: 200,
        pieces: vec![
            line,
            "{\"error\":\"an unexpected error occurred\"}\n".to_owned(),
        ],
        cut: false,
    })
    .await;
    let stream = provider(mock.addr).stream(request(true)).await.unwrap();
    let results: Vec<Result<_, ProviderError>> = stream.collect().await;
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    let error = results[1].as_ref().unwrap_err();
    assert!(
        error.to_string().contains("an unexpected error occurred"),
        "{error}"
    );
}

#[tokio::test]
async fn statuses_are_classified_with_ollamas_message() {
    for (status, kind) in [
        (404, ErrorKind::ClientError),
        (400, ErrorKind::ClientError),
        (500, ErrorKind::ServerError),
        (503, ErrorKind::ServerError),
    ] {
        let mock = start(Script {
            status,
            pieces: vec![
                r#"{"error":"model \"llama3.2\" not found, try pulling it first"}"#.to_owned(),
            ],
            cut: false,
        })
        .await;
        let error = provider(mock.addr)
            .complete(request(false))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), kind, "{status}");
        assert!(
            error.to_string().contains("try pulling it first"),
            "{error}"
        );
        let error = provider(mock.addr)
            .stream(request(true))
            .await
            .err()
            .unwrap();
        assert_eq!(error.kind(), kind, "{status}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    // Bound, then released: nothing listens there now.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let error = provider(addr).complete(request(false)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
}
