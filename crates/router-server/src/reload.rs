//! Reloading the config of a running server: on SIGHUP, when the file
//! changes (a debounced watch of its folder), and on `POST /admin/reload`.
//!
//! Every trigger runs the same [`Reloader::reload`]: read the file, expand
//! `${VAR}`, validate it with the code `check-config` runs, build the new
//! [`Router`] from the running one (so key health and round-robin cursors
//! carry over) with a limiter reconfigured from the running one (so every
//! limit that still exists keeps its counters), and swap it in. Requests
//! under way keep the router they started on; the next request sees the
//! new one. An invalid file changes nothing: every problem is logged with
//! file, line and field path and counted as
//! `router_config_reloads_total{result="invalid"}`. Settings that only a
//! restart applies (the listen address, the ledger, the limits backend,
//! the HTTP server's) are reported and kept as they are.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use router_core::config::{self, Config, ConfigChanges, ConfigError, ConfigErrors};
use router_core::health_board::{HealthBoard, HealthListener, LocalHealth};
use router_core::limits::Limiter;
use router_core::live::Reload;
use router_core::{LiveRouter, Services};
use router_http::Metrics;
use router_limits::{MemoryLimiter, RedisHealthBoard, RedisLimiter, TiktokenCounter};
use router_providers::registry::Registry;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::{check_providers, report_config_errors_to_log, Serving};

/// How long the watch waits after a change before it reloads, so an editor
/// that writes a file in several steps causes one reload, of the last one.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// (Re)starts the watch of the config file at `path`: dropped first, since
/// a watch of a file that was renamed over still holds the old file. A
/// path with no file now (a remove before the new file lands) is said once
/// per change; SIGHUP and `POST /admin/reload` still work.
fn watch_file(watcher: &mut impl Watcher, path: &Path) {
    let _ = watcher.unwatch(path);
    if let Err(error) = watcher.watch(path, RecursiveMode::NonRecursive) {
        tracing::warn!(
            %error,
            path = %path.display(),
            "cannot watch the config file; reload with SIGHUP or POST /admin/reload"
        );
    }
}

/// The limiter a config asked for at start, by kind: a reload reconfigures
/// the same kind (changing `limits.backend` takes a restart).
pub(crate) enum Limits {
    Memory(Arc<MemoryLimiter>),
    Redis {
        limiter: Arc<RedisLimiter>,
        board: Arc<RedisHealthBoard>,
    },
}

impl Limits {
    pub(crate) fn health_board(&self) -> Arc<dyn HealthBoard> {
        match self {
            Self::Memory(_) => Arc::new(LocalHealth),
            Self::Redis { board, .. } => board.clone(),
        }
    }

    fn limiter(&self) -> Arc<dyn Limiter> {
        match self {
            Self::Memory(limiter) => limiter.clone(),
            Self::Redis { limiter, .. } => limiter.clone(),
        }
    }

    /// The same kind of limiter for `config`, carrying the state over.
    fn reconfigured(&self, config: &Config) -> Self {
        match self {
            Self::Memory(limiter) => Self::Memory(Arc::new(limiter.reconfigured(config))),
            Self::Redis { limiter, .. } => {
                let limiter = Arc::new(limiter.reconfigured(config));
                let board = Arc::new(limiter.health_board(config));
                Self::Redis { limiter, board }
            }
        }
    }
}

/// What a reload works on; locked for the whole of one, so reloads from
/// several triggers never interleave.
struct State {
    /// The config in force: the file's last valid version, with the
    /// restart-only settings of the one the server started with.
    config: Config,
    limits: Limits,
}

/// Reloads the config of this server (see the module docs).
pub(crate) struct Reloader {
    path: PathBuf,
    routers: Arc<LiveRouter>,
    registry: Registry,
    /// The services besides the limiter and the health board (the ledger,
    /// the usage sinks, the token counter), which a reload keeps.
    services: Services,
    counter: Arc<TiktokenCounter>,
    metrics: Option<Arc<Metrics>>,
    state: Mutex<State>,
    runtime: Handle,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub(crate) fn new(
        path: PathBuf,
        config: Config,
        routers: Arc<LiveRouter>,
        registry: Registry,
        services: Services,
        serving: &Serving,
        runtime: Handle,
    ) -> Self {
        let limits = match &serving.limits {
            Limits::Memory(limiter) => Limits::Memory(limiter.clone()),
            Limits::Redis { limiter, board } => Limits::Redis {
                limiter: limiter.clone(),
                board: board.clone(),
            },
        };
        Self {
            path,
            routers,
            registry,
            services,
            counter: serving.counter.clone(),
            metrics: serving.metrics.clone(),
            state: Mutex::new(State { config, limits }),
            runtime,
        }
    }

    /// Starts the triggers: SIGHUP, and a watch of the config file itself,
    /// renewed after every change it reports. Editors often replace a file
    /// rather than write it in place (and Kubernetes swaps the symlink a
    /// ConfigMap's file is): the old file's watch then reports its removal,
    /// and the renewed watch follows the path to the new file. Not the
    /// file's folder: a folder watch wakes for every write to every file
    /// beside the config, and the usage database often lives there, so
    /// each ledger commit (about one page write per two requests under
    /// load) woke the watcher's thread on the serving core. Must run inside
    /// the runtime.
    pub(crate) fn watch(self: &Arc<Self>) {
        let (changed, mut changes) = mpsc::unbounded_channel::<()>();
        #[cfg(unix)]
        {
            let hangup = changed.clone();
            tokio::spawn(async move {
                let kind = tokio::signal::unix::SignalKind::hangup();
                let Ok(mut signals) = tokio::signal::unix::signal(kind) else {
                    tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload");
                    return;
                };
                while signals.recv().await.is_some() {
                    if hangup.send(()).is_err() {
                        return;
                    }
                }
            });
        }
        let watched = self.path.clone();
        let on_change = changed.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if !event.kind.is_access() {
                let _ = on_change.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot watch the config file; reload with SIGHUP or POST /admin/reload"
                );
                None
            }
        };
        if let Some(watcher) = watcher.as_mut() {
            watch_file(watcher, &watched);
        }
        let reloader = Arc::clone(self);
        tokio::spawn(async move {
            // Owned by the task, so the watch lives as long as the server,
            // and so is a sender: the channel never closes before it.
            let _sender = changed;
            while changes.recv().await.is_some() {
                // Debounce: wait until the changes stop, then reload once.
                loop {
                    tokio::select! {
                        more = changes.recv() => if more.is_none() { return },
                        () = tokio::time::sleep(DEBOUNCE) => break,
                    }
                }
                // Watched again before reading, so that a file renamed
                // over the old one is the one watched from now on, and an
                // edit made meanwhile is either read now or seen next.
                if let Some(watcher) = watcher.as_mut() {
                    watch_file(watcher, &watched);
                }
                let reloader = Arc::clone(&reloader);
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = reloader.reload();
                })
                .await;
            }
        });
    }

    fn try_reload(&self) -> Result<ConfigChanges, ConfigErrors> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut config = config::load_file(&self.path, &|name| std::env::var(name).ok())?;
        check_providers(&config, &self.registry)?;
        let changes = config::diff(&state.config, &config);
        // What only a restart applies stays as the server started.
        config.server = state.config.server.clone();
        let running_limits = state.config.limits.clone();
        config.limits = config::LimitsConfig {
            default_output_tokens: config.limits.default_output_tokens,
            ..running_limits
        };
        let limits = state.limits.reconfigured(&config);
        self.counter
            .warm_up(config.models.iter().filter(|entry| entry.enabled));
        let services = Services {
            limiter: limits.limiter(),
            health: limits.health_board(),
            ..self.services.clone()
        };
        let running = self.routers.load();
        let router = running
            .reloaded(
                &config,
                &|entry| {
                    self.registry
                        .build(entry)
                        .map_err(|error| error.to_string())
                },
                services,
            )
            .map_err(|error| {
                ConfigErrors(vec![ConfigError {
                    file: self.path.clone(),
                    path: String::new(),
                    line: None,
                    message: error.to_string(),
                }])
            })?;
        let router = Arc::new(router);
        if let Limits::Redis { board, .. } = &limits {
            let board = board.clone();
            let listener: Arc<dyn HealthListener> = router.clone();
            let listener = Arc::downgrade(&listener);
            self.runtime
                .spawn(async move { board.listen(listener).await });
        }
        self.routers.store(router);
        if let Some(metrics) = &self.metrics {
            metrics.set_models(config.models.iter().map(|entry| entry.name.clone()));
        }
        state.config = config;
        state.limits = limits;
        Ok(changes)
    }
}

impl Reload for Reloader {
    fn reload(&self) -> Result<ConfigChanges, ConfigErrors> {
        let outcome = self.try_reload();
        if let Some(metrics) = &self.metrics {
            metrics.count_reload(outcome.is_ok());
        }
        match &outcome {
            Ok(changes) => log_changes(&self.path, changes),
            Err(errors) => report_config_errors_to_log(&self.path, errors),
        }
        outcome
    }
}

fn log_changes(path: &Path, changes: &ConfigChanges) {
    if changes.is_empty() {
        tracing::info!(config = %path.display(), "config reloaded: nothing changed");
        return;
    }
    tracing::info!(
        config = %path.display(),
        models_added = ?changes.models.added,
        models_removed = ?changes.models.removed,
        models_changed = ?changes.models.changed,
        keys_added = ?changes.keys.added,
        keys_removed = ?changes.keys.removed,
        keys_changed = ?changes.keys.changed,
        "config reloaded"
    );
    if !changes.needs_restart.is_empty() {
        tracing::warn!(
            fields = ?changes.needs_restart,
            "config reloaded, but these settings apply only after a restart; the running \
             values stay in force"
        );
    }
}
