//! router-providers: the upstream adapters behind `router_core::Provider`.
//!
//! It owns:
//! - [`client::HttpClient`], the one pooled HTTP(S) client (hyper-util,
//!   rustls with `ring` and webpki roots, HTTP/2 by ALPN) shared by every
//!   HTTP adapter instance;
//! - [`sse::SseParser`], the incremental `text/event-stream` parser;
//! - the adapters: [`openai`] (any OpenAI-compatible `base_url`),
//!   [`anthropic`] (Anthropic's Messages API, translated to and from the
//!   Chat Completions shapes) and [`mock`] (deterministic, no network);
//! - [`registry::Registry`], factories by provider name.
//!
//! It does not own routing, failover, retries, response rewriting (`model`
//! renaming, thinking post-processing) or accounting: those are the engine's
//! in router-core. It never picks an HTTP status for the client: it only
//! reports the upstream's, inside `ProviderError`. Vendor wire formats stay
//! private to their adapter module.
//!
//! Wiring, in the binary:
//!
//! ```no_run
//! # use router_core::config::ServerConfig;
//! # fn wire(server: &ServerConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let client = router_providers::HttpClient::new(server)?;
//! let registry = router_providers::Registry::builtin(client);
//! // for each entry: registry.build(&entry)?
//! # let _ = registry; Ok(()) }
//! ```

pub mod anthropic;
pub mod client;
mod event_stream;
mod exchange;
pub mod mock;
pub mod openai;
pub mod registry;
pub mod sse;

pub use anthropic::AnthropicProvider;
pub use client::{ClientError, HttpClient, UpstreamSettings};
pub use mock::MockProvider;
pub use openai::OpenAiProvider;
pub use registry::{
    AnthropicFactory, ClientPool, MockFactory, OpenAiFactory, Registry, RegistryError,
};
