//! The router in use now, swapped whole when the config is reloaded.
//!
//! A request loads the current [`Router`] once, when it arrives, and keeps
//! that `Arc` until its answer ends: a stream that started before a reload
//! finishes on the config it started with, and a request that arrives after
//! it sees the new one. A load is one atomic operation (`arc-swap`), so
//! requests never wait on a reload, and a reload never waits on them.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{ConfigChanges, ConfigErrors};
use crate::Router;

/// The current router, shared by the HTTP server and whatever reloads it.
pub struct LiveRouter(ArcSwap<Router>);

impl LiveRouter {
    pub fn new(router: Router) -> Self {
        Self(ArcSwap::from_pointee(router))
    }

    /// The router for a request that arrives now.
    pub fn load(&self) -> Arc<Router> {
        self.0.load_full()
    }

    /// Makes `router` serve every request that arrives from now on; the
    /// previous one is dropped once its last request has ended.
    pub fn store(&self, router: Arc<Router>) {
        self.0.store(router);
    }
}

impl From<Arc<Router>> for LiveRouter {
    fn from(router: Arc<Router>) -> Self {
        Self(ArcSwap::new(router))
    }
}

impl From<Router> for LiveRouter {
    fn from(router: Router) -> Self {
        Self::new(router)
    }
}

impl fmt::Debug for LiveRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LiveRouter").finish_non_exhaustive()
    }
}

/// Reloads a running router's config: reads it again, validates it fully,
/// and swaps in the router built from it, or keeps the running one and
/// answers every problem. router-server implements it (its SIGHUP, its
/// file watch and router-http's `POST /admin/reload` all call the same
/// one); reloads are serialised by the implementation.
pub trait Reload: Send + Sync + fmt::Debug {
    fn reload(&self) -> Result<ConfigChanges, ConfigErrors>;
}
