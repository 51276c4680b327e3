//! router-limits: request and token limiters, day quotas and the usage ledger.
//!
//! This crate is the only one that names `governor`. It implements the limiter
//! and usage ports that router-core defines. Limits are not enforced yet: this
//! crate is a skeleton until the limits work lands.
