//! The shared client's connection set-up: TLS failures and stalls are
//! connect errors, bounded by the entry's `connect_timeout` rather than the
//! much longer request timeout, even when the client was built with another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use std::net::SocketAddr;
use std::sync::Arc;

use router_core::config::{ModelEntry, ServerConfig};
use router_core::provider::{ErrorKind, JsonObject};
use router_core::{Provider, ProviderError, ProviderRequest};
use router_providers::{HttpClient, OpenAiProvider, Registry};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn entry(base_url: &str, connect_timeout: Duration) -> ModelEntry {
    let mut entry = ModelEntry {
        base_url: Some(url::Url::parse(base_url).unwrap()),
        is_openai_compatibility: true,
        ..ModelEntry::new("m", "openai")
    };
    entry.timeouts.connect = connect_timeout;
    entry
}

/// A client built with the server's default connect timeout (10 s); the
/// entry's own applies.
fn provider(base_url: &str, connect_timeout: Duration) -> OpenAiProvider {
    let client = HttpClient::new(&ServerConfig::default()).unwrap();
    OpenAiProvider::new(client, &entry(base_url, connect_timeout)).unwrap()
}

/// Accepts TCP, then never says a word: a TLS handshake hangs.
async fn silent_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, server)
}

#[track_caller]
fn assert_connect_timeout(error: ProviderError, after: &str) {
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
    let ProviderError::Connect { detail } = error else {
        unreachable!()
    };
    assert!(
        detail.contains(&format!("connecting took longer than {after}")),
        "{detail}"
    );
}

fn request() -> ProviderRequest {
    ProviderRequest {
        body: JsonObject::new(),
        api_key: None,
    }
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_a_connect_timeout() {
    let (addr, _server) = silent_server().await;
    let provider = provider(&format!("https://{addr}/v1"), Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    let error = provider.complete(request()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_connect_timeout(error, "200ms");
}

#[tokio::test]
async fn the_registry_gives_each_connect_timeout_its_own_client() {
    let (addr, _server) = silent_server().await;
    // The server allows 10 s; one entry overrides it with 100 ms, one keeps it.
    let registry = Registry::builtin(HttpClient::new(&ServerConfig::default()).unwrap());
    let url = format!("https://{addr}/v1");
    let quick: Arc<dyn Provider> = registry
        .build(&entry(&url, Duration::from_millis(100)))
        .unwrap();
    let patient: Arc<dyn Provider> = registry
        .build(&entry(&url, ServerConfig::default().connect_timeout))
        .unwrap();

    let started = tokio::time::Instant::now();
    let error = quick.complete(request()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_connect_timeout(error, "100ms");
    let Err(error) = quick.stream(request()).await else {
        panic!("expected an error");
    };
    assert_connect_timeout(error, "100ms");

    // The other entry is still connecting when the quick one gave up.
    let waiting = tokio::time::timeout(Duration::from_millis(300), patient.complete(request()));
    assert!(waiting.await.is_err(), "the server's 10 s should apply");
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
    let provider = provider(&format!("https://{addr}/v1"), Duration::from_secs(5));
    let error = provider.complete(request()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
    let Err(error) = provider.stream(request()).await else {
        panic!("expected an error");
    };
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
}
