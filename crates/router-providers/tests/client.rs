//! The shared client's connection set-up: TLS failures and stalls are
//! connect errors, bounded by `connect_timeout` rather than the much longer
//! request timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use router_core::config::ModelEntry;
use router_core::provider::{ErrorKind, JsonObject};
use router_core::{Provider, ProviderError, ProviderRequest};
use router_providers::{HttpClient, OpenAiProvider, UpstreamSettings};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn provider(base_url: &str, settings: UpstreamSettings) -> OpenAiProvider {
    let entry = ModelEntry {
        base_url: Some(url::Url::parse(base_url).unwrap()),
        is_openai_compatibility: true,
        ..ModelEntry::new("m", "openai")
    };
    OpenAiProvider::new(HttpClient::with_settings(settings).unwrap(), &entry).unwrap()
}

fn request() -> ProviderRequest {
    ProviderRequest {
        body: JsonObject::new(),
        api_key: None,
    }
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_a_connect_timeout() {
    // Accepts TCP, then never says a word: the TLS handshake hangs.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let settings = UpstreamSettings {
        connect_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_secs(30),
        max_sse_event_bytes: 1024,
    };
    let provider = provider(&format!("https://{addr}/v1"), settings);
    let started = tokio::time::Instant::now();
    let error = provider.complete(request()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
    let ProviderError::Connect { detail } = error else {
        unreachable!()
    };
    assert!(
        detail.contains("connecting took longer than 200ms"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_plain_http_server_behind_https_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let settings = UpstreamSettings {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        max_sse_event_bytes: 1024,
    };
    let provider = provider(&format!("https://{addr}/v1"), settings);
    let error = provider.complete(request()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
    let Err(error) = provider.stream(request()).await else {
        panic!("expected an error");
    };
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
}
