//! Provider factories by name, and the factories of the built-in adapters.
//!
//! The binary builds one [`Registry`] (usually [`Registry::builtin`], plus any
//! third-party factory it links), then asks it for the provider of each model
//! entry by the entry's `provider` name.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use router_core::config::{ModelEntry, ANTHROPIC_PROVIDER, MOCK_PROVIDER, OPENAI_PROVIDER};
use router_core::provider::ProviderFactory;
use router_core::Provider;

use crate::anthropic::AnthropicProvider;
use crate::client::HttpClient;
use crate::mock::MockProvider;
use crate::openai::OpenAiProvider;

/// The pooled clients of the HTTP adapters, by connect timeout: the one it
/// was given, for every entry with that client's connect timeout, and one
/// more per other connect timeout that entries set (a connect timeout
/// belongs to the pool that connects; see
/// [`HttpClient::with_connect_timeout`]). Clones share the clients, so the
/// OpenAI and Anthropic factories of one registry share connections.
#[derive(Debug, Clone)]
pub struct ClientPool {
    /// The clients by connect timeout, the given one included. Behind a
    /// mutex because `build` takes `&self` and may run on several threads;
    /// it is held only to look up or insert (building a client is
    /// synchronous and quick), never across an `.await`.
    clients: Arc<Mutex<HashMap<Duration, HttpClient>>>,
    /// The given client, the model for the others.
    base: HttpClient,
}

impl ClientPool {
    pub fn new(client: HttpClient) -> Self {
        let clients = HashMap::from([(client.settings().connect_timeout, client.clone())]);
        Self {
            clients: Arc::new(Mutex::new(clients)),
            base: client,
        }
    }

    /// The client for `connect_timeout`, built on first use.
    fn client_for(&self, connect_timeout: Duration) -> Result<HttpClient, String> {
        // A panic elsewhere cannot leave the map half-updated: an insert is
        // the only write.
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&connect_timeout) {
            return Ok(client.clone());
        }
        let client = self
            .base
            .with_connect_timeout(connect_timeout)
            .map_err(|error| error.to_string())?;
        clients.insert(connect_timeout, client.clone());
        Ok(client)
    }

    /// How many distinct clients (so pools) there are.
    pub fn client_count(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Builds [`OpenAiProvider`]s that share pooled clients (see [`ClientPool`]).
#[derive(Debug, Clone)]
pub struct OpenAiFactory {
    clients: ClientPool,
}

impl OpenAiFactory {
    pub fn new(client: HttpClient) -> Self {
        Self::with_pool(ClientPool::new(client))
    }

    pub fn with_pool(clients: ClientPool) -> Self {
        Self { clients }
    }

    /// How many distinct clients (so pools) the factory holds.
    pub fn client_count(&self) -> usize {
        self.clients.client_count()
    }
}

impl ProviderFactory for OpenAiFactory {
    fn build(&self, entry: &ModelEntry) -> Result<Arc<dyn Provider>, String> {
        let client = self.clients.client_for(entry.timeouts.connect)?;
        let provider = OpenAiProvider::new(client, entry).map_err(|error| error.to_string())?;
        Ok(Arc::new(provider))
    }
}

/// Builds [`AnthropicProvider`]s that share pooled clients (see [`ClientPool`]).
#[derive(Debug, Clone)]
pub struct AnthropicFactory {
    clients: ClientPool,
}

impl AnthropicFactory {
    pub fn new(client: HttpClient) -> Self {
        Self::with_pool(ClientPool::new(client))
    }

    pub fn with_pool(clients: ClientPool) -> Self {
        Self { clients }
    }
}

impl ProviderFactory for AnthropicFactory {
    fn build(&self, entry: &ModelEntry) -> Result<Arc<dyn Provider>, String> {
        let client = self.clients.client_for(entry.timeouts.connect)?;
        let provider = AnthropicProvider::new(client, entry).map_err(|error| error.to_string())?;
        Ok(Arc::new(provider))
    }
}

/// Builds [`MockProvider`]s; each entry gets its own answer counter.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockFactory;

impl ProviderFactory for MockFactory {
    fn build(&self, _entry: &ModelEntry) -> Result<Arc<dyn Provider>, String> {
        Ok(Arc::new(MockProvider::new()))
    }
}

/// The provider of an entry could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("models[{index}]: unknown provider `{name}` (known: {known})")]
    UnknownProvider {
        index: usize,
        name: String,
        known: String,
    },
    #[error("models[{index}]: the {name} provider cannot serve this entry: {detail}")]
    Build {
        index: usize,
        name: String,
        detail: String,
    },
}

/// Provider factories by name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Arc<dyn ProviderFactory>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// `openai` and `anthropic` (sharing `client` and the clients made from
    /// it) and `mock`.
    pub fn builtin(client: HttpClient) -> Self {
        let mut registry = Self::new();
        let clients = ClientPool::new(client);
        registry.register(
            OPENAI_PROVIDER,
            Arc::new(OpenAiFactory::with_pool(clients.clone())),
        );
        registry.register(
            ANTHROPIC_PROVIDER,
            Arc::new(AnthropicFactory::with_pool(clients)),
        );
        registry.register(MOCK_PROVIDER, Arc::new(MockFactory));
        registry
    }

    /// Adds or replaces a factory; returns the one it replaced.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        factory: Arc<dyn ProviderFactory>,
    ) -> Option<Arc<dyn ProviderFactory>> {
        self.factories.insert(name.into(), factory)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn ProviderFactory>> {
        self.factories.get(name)
    }

    /// The registered names, sorted, for messages like "known: mock, openai".
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// The provider of `entry`, by its `provider` name.
    pub fn build(&self, entry: &ModelEntry) -> Result<Arc<dyn Provider>, RegistryError> {
        let factory = self
            .get(&entry.provider)
            .ok_or_else(|| RegistryError::UnknownProvider {
                index: entry.index,
                name: entry.provider.clone(),
                known: self.names().join(", "),
            })?;
        factory.build(entry).map_err(|detail| RegistryError::Build {
            index: entry.index,
            name: entry.provider.clone(),
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use router_core::config::ServerConfig;

    fn entry(provider: &str, base_url: Option<&str>) -> ModelEntry {
        ModelEntry {
            index: 3,
            id: 1,
            is_openai_compatibility: true,
            base_url: base_url.map(|url| url::Url::parse(url).unwrap()),
            ..ModelEntry::new("m", provider)
        }
    }

    #[test]
    fn builtin_names_and_builds() {
        let client = HttpClient::new(&ServerConfig::default()).unwrap();
        let registry = Registry::builtin(client);
        assert_eq!(registry.names(), ["anthropic", "mock", "openai"]);
        assert!(registry.build(&entry("mock", None)).is_ok());
        assert!(registry
            .build(&entry("anthropic", Some("https://api.anthropic.com")))
            .is_ok());
        assert!(registry
            .build(&entry("openai", Some("https://api.example.com/v1")))
            .is_ok());
    }

    #[test]
    fn one_client_per_distinct_connect_timeout() {
        let server = ServerConfig::default();
        let factory = OpenAiFactory::new(HttpClient::new(&server).unwrap());
        let with_connect = |millis: u64| {
            let mut entry = entry("openai", Some("https://api.example.com/v1"));
            entry.timeouts.connect = Duration::from_millis(millis);
            entry
        };
        assert_eq!(factory.client_count(), 1);
        // The server's own timeout reuses the given client.
        let mut same = with_connect(0);
        same.timeouts.connect = server.connect_timeout;
        factory.build(&same).unwrap();
        assert_eq!(factory.client_count(), 1);
        factory.build(&with_connect(500)).unwrap();
        factory.build(&with_connect(500)).unwrap();
        assert_eq!(factory.client_count(), 2);
        // Clones share the clients.
        factory.clone().build(&with_connect(700)).unwrap();
        assert_eq!(factory.client_count(), 3);
    }

    #[test]
    fn errors_name_the_entry() {
        let client = HttpClient::new(&ServerConfig::default()).unwrap();
        let registry = Registry::builtin(client);
        let error = registry.build(&entry("bedrock", None)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "models[3]: unknown provider `bedrock` (known: anthropic, mock, openai)"
        );
        let error = registry.build(&entry("anthropic", None)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "models[3]: the anthropic provider cannot serve this entry: the anthropic provider needs a base_url such as `https://api.anthropic.com`"
        );
        let error = registry.build(&entry("openai", None)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "models[3]: the openai provider cannot serve this entry: the openai provider needs a base_url"
        );
    }
}
