//! router-core: the domain of the router, free of any transport.
//!
//! It owns the configuration (loading and validation), the model catalog,
//! client-key authentication, request parsing and validation, and the routing
//! engine (chat completions, text completions and embeddings through one
//! dispatch: resolution, round robin, failover with retries, provider-key
//! cooldown and circuit breaking, response rewriting), plus the
//! traits the engine depends on ([`provider::Provider`]). It also owns what
//! may leave the router about an upstream failure ([`scrub`]: no account
//! details) and how client text appears in a log line ([`escape`]), and the
//! operator's read-only views of the engine, the limiter and the ledger
//! ([`admin`]).
//!
//! It deliberately does not own sockets, HTTP (no hyper, no status codes),
//! rate-limiter implementations (no governor) or any concrete provider.

mod accounting;
pub mod admin;
mod aggregate;
mod auth;
mod catalog;
mod completion;
pub mod config;
pub mod engine;
pub mod error;
pub mod escape;
pub mod estimate;
mod health;
pub mod health_board;
pub mod limits;
pub mod live;
pub mod provider;
mod report;
pub mod request;
pub mod scrub;
pub mod secret;
mod thinking;
pub mod usage;

pub use admin::AdminError;
pub use config::Config;
pub use engine::{
    ledger_key_id, BuildError, ChatOutcome, ChatResponse, ClientKey, RequestContext, Router,
    Services,
};
pub use error::{AuthError, ChatError, UsageError};
pub use live::LiveRouter;
pub use provider::{
    Chunk, ChunkStream, Completion, Endpoint, JsonObject, Provider, ProviderError, ProviderRequest,
};
pub use report::{UsageReport, UsageRequest};
pub use scrub::Scrubber;
pub use secret::Secret;
