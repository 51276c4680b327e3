//! What [`serve`](crate::serve) tells the handlers and the response bodies
//! about a shutdown in progress.
//!
//! A shutdown has two steps. First the server *drains*: `/health` answers 503
//! so load balancers stop sending, and HTTP/1 responses carry
//! `Connection: close`. If requests are still open when the shutdown timeout
//! expires, the server *cuts them off*: each open SSE stream ends with one
//! `server_shutdown` error event, and each request still waiting for its
//! upstream answer gets a 503, rather than having the connection vanish
//! under it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Resolves when the server cuts off what is left; boxed so a response body
/// can hold it without naming its type.
pub(crate) type CutOff = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Cheap to clone (one `Arc`): every handler and every stream holds one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Read on every request (a relaxed load); set once, by `serve`.
    draining: AtomicBool,
    /// A watch rather than a `Notify`: a stream that subscribes after the cut
    /// still sees it, and every subscriber is woken, not just one.
    cut_off: watch::Sender<bool>,
    /// Requests the cut ended with a `server_shutdown` error (stream event or 503).
    ended: AtomicUsize,
}

impl Shutdown {
    pub(crate) fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Tells every open stream and waiting request to end now.
    pub(crate) fn cut_off(&self) {
        self.start_draining();
        self.inner.cut_off.send_replace(true);
    }

    /// A future that resolves once [`Self::cut_off`] has been called (at once
    /// if it already has been).
    pub(crate) fn when_cut_off(&self) -> CutOff {
        let mut cut = self.inner.cut_off.subscribe();
        Box::pin(async move {
            // The sender lives in `inner`, which this future does not keep
            // alive; should it go away, the cut can never come.
            if cut.wait_for(|cut| *cut).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }

    /// Counts one request ended with the `server_shutdown` error.
    pub(crate) fn count_ended(&self) {
        self.inner.ended.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ended(&self) -> usize {
        self.inner.ended.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cut_reaches_futures_made_before_and_after_it() {
        let shutdown = Shutdown::default();
        let before = shutdown.when_cut_off();
        assert!(!shutdown.is_draining());
        shutdown.cut_off();
        assert!(shutdown.is_draining());
        before.await;
        shutdown.when_cut_off().await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_cut_the_future_never_resolves() {
        let shutdown = Shutdown::default();
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(60), shutdown.when_cut_off()).await;
        assert!(waited.is_err());
    }
}
