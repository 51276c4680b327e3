//! An in-process server on 127.0.0.1 that speaks Ollama's `/api/chat` wire
//! format as scripted. `examples/custom-server`'s tests use it too, by path.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// What the mock answers: a status and the body's pieces, sent one by one
/// with a pause between them; `cut` drops the connection after them.
#[derive(Clone)]
pub struct Script {
    pub status: u16,
    pub pieces: Vec<String>,
    pub cut: bool,
}

pub struct MockOllama {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<(String, Value)>>>,
}

pub async fn start(script: Script) -> MockOllama {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let script = script.clone();
                    let seen = Arc::clone(&seen);
                    async move {
                        let path = request.uri().path().to_owned();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        seen.lock()
                            .unwrap()
                            .push((path, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                        let pieces = script.pieces.clone();
                        let cut = script.cut;
                        let frames = futures_util::stream::iter(pieces.into_iter().map(Some))
                            .chain(futures_util::stream::iter([None]))
                            .then(move |piece| async move {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                match piece {
                                    Some(piece) => Ok(Frame::data(Bytes::from(piece))),
                                    None if cut => Err(std::io::Error::other("cut")),
                                    None => Ok(Frame::data(Bytes::new())),
                                }
                            });
                        let response = Response::builder()
                            .status(script.status)
                            .header("content-type", "application/x-ndjson")
                            .body(StreamBody::new(frames))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    MockOllama { addr, requests }
}
