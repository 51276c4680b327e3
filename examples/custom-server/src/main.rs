//! A router binary with a provider the stock one does not have: everything
//! `router-server` does (command line, limits, ledger, metrics, signals,
//! drain), plus `provider: ollama` from the `example-ollama-provider` crate.

use example_ollama_provider::{OllamaFactory, PROVIDER_NAME};

fn main() -> std::process::ExitCode {
    router_server::Server::from_args()
        .provider(PROVIDER_NAME, OllamaFactory)
        .run()
}
