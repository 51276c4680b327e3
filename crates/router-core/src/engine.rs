//! The routing engine: authenticate, parse, resolve, dispatch with failover,
//! rewrite the answer.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{ClientKeyConfig, Config, ModelEntry};
use crate::error::{AuthError, ChatError};
use crate::provider::{ChunkStream, Completion, Provider};

/// An authenticated client key.
pub type ClientKey = Arc<ClientKeyConfig>;

/// The answer to a chat completion.
pub enum ChatResponse {
    /// A complete answer, `model` already the client-facing name.
    Complete(Completion),
    /// A stream whose first chunk has already arrived (so failover was still
    /// possible until then). Chunks carry the client-facing `model`.
    Stream(ChunkStream),
}

impl std::fmt::Debug for ChatResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete(c) => f.debug_tuple("Complete").field(c).finish(),
            Self::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// The engine. Cheap to share (`Arc<Router>`); all state on the hot path is
/// atomics, so no request waits for another.
#[derive(Debug)]
pub struct Router {
    _config: Arc<Config>,
    _names: HashMap<String, Vec<usize>>,
    _deployments: Vec<(ModelEntry, Arc<dyn Provider>)>,
}

impl Router {
    /// Builds the engine from a validated config. `provider_for` builds the
    /// adapter of each enabled entry.
    pub fn new(
        _config: Arc<Config>,
        _provider_for: &dyn Fn(&ModelEntry) -> Result<Arc<dyn Provider>, String>,
    ) -> Result<Self, String> {
        todo!()
    }

    /// Checks an `Authorization` header value (seed rules: `Bearer <key>` with
    /// any case of `bearer`, else the whole value is the key).
    pub fn authenticate(&self, _authorization: Option<&[u8]>) -> Result<ClientKey, AuthError> {
        todo!()
    }

    /// `GET /v1/models` body, serialized once at construction.
    pub fn models_json(&self) -> Bytes {
        todo!()
    }

    /// `GET /v1/models/{id}` body, if that model is listed.
    pub fn model_json(&self, _id: &str) -> Option<Bytes> {
        todo!()
    }

    /// `POST /v1/chat/completions` with a raw body.
    pub async fn chat(&self, _client: &ClientKey, _body: &[u8]) -> Result<ChatResponse, ChatError> {
        todo!()
    }
}
