//! router-core: the domain of the router, free of any transport.
//!
//! It owns the configuration (loading and validation), the model catalog,
//! client-key authentication, request parsing and validation, and the routing
//! engine (resolution, round robin, failover, response rewriting), plus the
//! traits the engine depends on ([`provider::Provider`]).
//!
//! It deliberately does not own sockets, HTTP (no hyper, no status codes),
//! rate-limiter implementations (no governor) or any concrete provider.

mod aggregate;
mod auth;
mod catalog;
pub mod config;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod limits;
pub mod provider;
pub mod request;
pub mod secret;
mod thinking;
pub mod usage;

pub use config::Config;
pub use engine::{BuildError, ChatResponse, ClientKey, Router};
pub use error::{AuthError, ChatError};
pub use provider::{
    Chunk, ChunkStream, Completion, JsonObject, Provider, ProviderError, ProviderRequest,
};
pub use secret::Secret;
