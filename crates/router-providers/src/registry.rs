//! Provider factories by name, and the factories of the built-in adapters.
//!
//! The binary builds one [`Registry`] (usually [`Registry::builtin`], plus any
//! third-party factory it links), then asks it for the provider of each model
//! entry by the entry's `provider` name.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use router_core::config::{ModelEntry, MOCK_PROVIDER, OPENAI_PROVIDER};
use router_core::provider::ProviderFactory;
use router_core::Provider;

use crate::client::HttpClient;
use crate::mock::MockProvider;
use crate::openai::OpenAiProvider;

/// Builds [`OpenAiProvider`]s that share one pooled client.
#[derive(Debug, Clone)]
pub struct OpenAiFactory {
    client: HttpClient,
}

impl OpenAiFactory {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }
}

impl ProviderFactory for OpenAiFactory {
    fn build(&self, entry: &ModelEntry) -> Result<Arc<dyn Provider>, String> {
        let provider =
            OpenAiProvider::new(self.client.clone(), entry).map_err(|error| error.to_string())?;
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

    /// `openai` (sharing `client`) and `mock`.
    pub fn builtin(client: HttpClient) -> Self {
        let mut registry = Self::new();
        registry.register(OPENAI_PROVIDER, Arc::new(OpenAiFactory::new(client)));
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
        assert_eq!(registry.names(), ["mock", "openai"]);
        assert!(registry.build(&entry("mock", None)).is_ok());
        assert!(registry
            .build(&entry("openai", Some("https://api.example.com/v1")))
            .is_ok());
    }

    #[test]
    fn errors_name_the_entry() {
        let client = HttpClient::new(&ServerConfig::default()).unwrap();
        let registry = Registry::builtin(client);
        let error = registry.build(&entry("anthropic", None)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "models[3]: unknown provider `anthropic` (known: mock, openai)"
        );
        let error = registry.build(&entry("openai", None)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "models[3]: the openai provider cannot serve this entry: the openai provider needs a base_url"
        );
    }
}
