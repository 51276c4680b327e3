//! router-providers: adapters behind `router_core::Provider`.
