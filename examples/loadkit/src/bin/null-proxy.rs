//! `null-proxy --upstream http://127.0.0.1:PORT`: the least a forwarding proxy can do,
//! as a baseline for `cargo xtask bench`.
//!
//! Every request is sent on to the upstream (same method, path, headers and body,
//! streamed) over one pooled hyper-util client, and the upstream's status, headers and
//! body come back unchanged, streamed frame by frame, so SSE works too. Nothing is
//! parsed, checked or counted: no JSON, no authentication, no limits. A connect error
//! is a bare 502. The runtime is chosen as router-server chooses it: one thread per
//! CPU the process may use (`taskset`), and with a single one tokio's current-thread
//! scheduler.
//!
//! Measured on the router's core, it separates what any proxy costs on that
//! topology (the extra hops, the cross-core wake-ups) from the router's own work.

// The binary's interface is what it prints: the address it listens on, and errors.
#![allow(clippy::print_stderr)]

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadkit::is_loopback_http_url;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "null-proxy",
    about = "A minimal forwarding proxy: the baseline for cargo xtask bench"
)]
struct Args {
    /// Address to listen on; port 0 lets the OS pick one (printed on stderr).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// `http://127.0.0.1:PORT` (loopback only); each request's path and query are
    /// appended.
    #[arg(long)]
    upstream: String,
    /// Exit when stdin reaches end of file, so the process cannot outlive a parent
    /// that holds the other end of a pipe.
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

type Upstream = Client<HttpConnector, Incoming>;
type Answer = Response<Either<Incoming, Empty<Bytes>>>;

fn main() -> ExitCode {
    let args = Args::parse();
    if !is_loopback_http_url(&args.upstream) {
        eprintln!("null-proxy: --upstream must be an http:// loopback URL");
        return ExitCode::FAILURE;
    }
    let one_cpu = std::thread::available_parallelism().map_or(true, |cpus| cpus.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("null-proxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("null-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> io::Result<()> {
    let base = args.upstream.trim_end_matches('/').to_owned();
    // Checked once here, so forwarding a request never meets a bad base.
    base.parse::<Uri>()
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    if args.exit_on_stdin_eof {
        loadkit::exit_when_stdin_closes();
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let base = base.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(client.clone(), base.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One request sent on and its answer handed back as it is.
async fn forward(
    client: Upstream,
    base: String,
    request: Request<Incoming>,
) -> Result<Answer, hyper::Error> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str());
    let Ok(uri) = format!("{base}{path}").parse::<Uri>() else {
        return Ok(bare(StatusCode::BAD_REQUEST));
    };
    parts.uri = uri;
    // The client writes the upstream's own Host.
    parts.headers.remove(HOST);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(Either::Left)),
        Err(_) => Ok(bare(StatusCode::BAD_GATEWAY)),
    }
}

fn bare(status: StatusCode) -> Answer {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = status;
    response
}
