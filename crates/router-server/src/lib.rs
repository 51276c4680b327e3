//! router-server: everything the `router-server` binary does, as a library,
//! so that a custom binary (one that links providers of its own) is a few
//! lines long and still has all of it: the command line, logging, the
//! limits and the ledger (embedded or shared), the metrics, signals and the
//! graceful drain.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     router_server::Server::from_args()
//!         // .provider("mine", my_crate::MyFactory)
//!         .run()
//! }
//! ```
//!
//! It owns the wiring: which limiter, ledger and health board a config asks
//! for, the provider registry (the built-in adapters plus those a custom
//! binary adds by name) and the process's lifetime. It does not own any
//! domain logic: that is router-core's, reached through `Router`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod reload;

use clap::{Parser, Subcommand, ValueEnum};
use reload::{Limits, Reloader};
use router_core::config::LimitsBackend;
use router_core::config::{self, Config, ConfigError, ConfigErrors};
use router_core::health_board::HealthListener;
use router_core::limits::Limiter;
use router_core::provider::ProviderFactory;
use router_core::usage::{FanOut, NoLedger, UsageSink, UsageStore};
use router_core::{LiveRouter, Router, Services};
use router_http::{HttpConfig, Metrics};
use router_limits::{
    CounterSink, MemoryLimiter, NoPersistence, PostgresStore, RedisLimiter, SqliteStore,
    SystemClock, TiktokenCounter,
};
use router_providers::client::HttpClient;
use router_providers::registry::Registry;
use time::OffsetDateTime;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "router-server",
    version,
    about = "An OpenAI-compatible LLM gateway"
)]
struct Cli {
    /// Path of the config file.
    #[arg(
        long,
        short,
        global = true,
        env = "ROUTER_CONFIG",
        default_value = "config/config.yaml"
    )]
    config: PathBuf,
    /// How log lines are written to stderr: `json` (one JSON object per
    /// line) or `pretty` (text for a person). Default: pretty when stderr is
    /// a terminal, else json.
    #[arg(long, global = true, env = "ROUTER_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Text for a person at a terminal.
    Pretty,
}

impl LogFormat {
    /// Pretty when stderr is a terminal, else JSON: a person reads a
    /// terminal, a collector reads a pipe or a file.
    pub fn for_stderr() -> Self {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Self::Pretty
        } else {
            Self::Json
        }
    }
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Validate the config file, list every problem, and exit non-zero if any.
    CheckConfig,
}

/// Where the config comes from.
enum ConfigSource {
    /// Read (and `${VAR}`-expanded) when the server runs.
    Path(PathBuf),
    /// Loaded and validated by the caller.
    Loaded(Box<Config>),
}

/// The router's server: the stock binary's `main` is
/// `Server::from_args().run()`. Add providers of your own by name with
/// [`Server::provider`] before [`Server::run`]; they sit beside the built-in
/// `openai` and `mock` (a name of theirs replaces a built-in one).
pub struct Server {
    config: ConfigSource,
    command: Command,
    /// `None`: [`LogFormat::for_stderr`].
    log_format: Option<LogFormat>,
    providers: Vec<(String, Arc<dyn ProviderFactory>)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .providers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        f.debug_struct("Server")
            .field("command", &self.command)
            .field("log_format", &self.log_format)
            .field("providers", &names)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The stock command line: `[--config PATH] [--log-format json|pretty]
    /// [serve | check-config]`, with `ROUTER_CONFIG` for the path (default
    /// `config/config.yaml`) and `ROUTER_LOG_FORMAT` for the format.
    /// Exits the process with a usage message on a bad command line.
    pub fn from_args() -> Self {
        let cli = Cli::parse();
        Self {
            config: ConfigSource::Path(cli.config),
            command: cli.command.unwrap_or(Command::Serve),
            log_format: cli.log_format,
            providers: Vec::new(),
        }
    }

    /// Serves the config file at `path`.
    pub fn from_config_path(path: impl Into<PathBuf>) -> Self {
        Self {
            config: ConfigSource::Path(path.into()),
            command: Command::Serve,
            log_format: None,
            providers: Vec::new(),
        }
    }

    /// Serves a config the caller loaded (`router_core::config::load_file`
    /// or `parse`).
    pub fn from_config(config: Config) -> Self {
        Self {
            config: ConfigSource::Loaded(Box::new(config)),
            command: Command::Serve,
            log_format: None,
            providers: Vec::new(),
        }
    }

    /// Writes log lines in `format` instead of the default for stderr.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.log_format = Some(format);
        self
    }

    /// Makes `provider: <name>` in the config build its adapters with
    /// `factory`.
    pub fn provider(
        mut self,
        name: impl Into<String>,
        factory: impl ProviderFactory + 'static,
    ) -> Self {
        self.providers.push((name.into(), Arc::new(factory)));
        self
    }

    /// Checks the config instead of serving (`check-config`): every problem
    /// is listed and the exit code is 2 if there is any.
    pub fn check_only(mut self) -> Self {
        self.command = Command::CheckConfig;
        self
    }

    /// Loads the config, builds everything and serves until SIGINT or
    /// SIGTERM, then drains; or only checks the config. The exit code is
    /// the process's: 0, 1 (could not serve, or usage records could not be
    /// written), 2 (the config has problems).
    pub fn run(self) -> ExitCode {
        init_logging(self.log_format.unwrap_or_else(LogFormat::for_stderr));
        let (config, path) = match self.config {
            ConfigSource::Loaded(config) => (*config, None),
            ConfigSource::Path(path) => {
                match config::load_file(&path, &|name| std::env::var(name).ok()) {
                    Ok(config) => (config, Some(path)),
                    Err(errors) => {
                        report_config_errors(&errors);
                        return ExitCode::from(2);
                    }
                }
            }
        };
        let mut registry = match HttpClient::new(&config.server) {
            Ok(client) => Registry::builtin(client),
            Err(error) => {
                report(&format!("cannot build the upstream HTTP client: {error}"));
                return ExitCode::FAILURE;
            }
        };
        for (name, factory) in self.providers {
            registry.register(name, factory);
        }
        if let Err(errors) = check_providers(&config, &registry) {
            report_config_errors(&errors);
            return ExitCode::from(2);
        }
        if let Command::CheckConfig = self.command {
            // check-config builds the providers (URLs, clients) but opens no
            // file and connects to nothing: checking a config must not create
            // its database.
            return match Router::new(&config, &|entry| {
                registry.build(entry).map_err(|error| error.to_string())
            }) {
                Ok(_) => {
                    say_config_ok(&config);
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    report(&format!("{}: {error}", config.source.display()));
                    ExitCode::from(2)
                }
            };
        }
        let workers = worker_threads();
        let runtime = match runtime(workers) {
            Ok(runtime) => runtime,
            Err(error) => {
                report(&format!("cannot start the async runtime: {error}"));
                return ExitCode::FAILURE;
            }
        };
        // The shared stores connect from inside the runtime.
        let (services, serving) = match runtime.block_on(open_services(&config)) {
            Ok(services) => services,
            Err(error) => {
                report(&error);
                return ExitCode::FAILURE;
            }
        };
        let router = match Router::with_services(
            &config,
            &|entry| registry.build(entry).map_err(|error| error.to_string()),
            services.clone(),
        ) {
            Ok(router) => router,
            Err(error) => {
                report(&format!("{}: {error}", config.source.display()));
                return ExitCode::from(2);
            }
        };
        let routers = Arc::new(LiveRouter::new(router));
        // A config given as a value has no file to read again.
        let reloader = path.map(|path| {
            Arc::new(Reloader::new(
                path,
                config.clone(),
                Arc::clone(&routers),
                registry,
                services,
                &serving,
                runtime.handle().clone(),
            ))
        });
        serve(&config, routers, reloader, serving, &runtime, workers)
    }
}

/// Opens the ledger and restores today's counters into the limiter (unless
/// `limits.ledger: false`), connects the shared stores (`limits.backend:
/// redis`, `limits.ledger_url`), loads the tokenizers the configured models
/// need, and builds the metrics (unless `server.metrics: false`). The usage
/// fan-out holds only the sinks that are on.
async fn open_services(config: &Config) -> Result<(Services, Serving), String> {
    let store = if config.limits.ledger {
        let store = SqliteStore::from_config(&config.limits).map_err(|error| {
            format!(
                "cannot open the usage database {}: {error}",
                config.limits.database.display()
            )
        })?;
        Some(Arc::new(store))
    } else {
        // Nothing is opened or created: counters live in this process only.
        tracing::warn!(
            "limits.ledger is false: no usage is recorded and day quotas and budgets \
             are kept in memory only, starting from zero at every restart"
        );
        None
    };
    let (limiter, limits): (Arc<dyn Limiter>, _) = match &config.limits.backend {
        LimitsBackend::Memory => {
            let (restored, counter_sink): (_, Arc<dyn CounterSink>) = match &store {
                Some(store) => (
                    store
                        .load_counters(OffsetDateTime::now_utc())
                        .map_err(|error| format!("cannot read the day counters: {error}"))?,
                    store.clone(),
                ),
                None => (Vec::new(), Arc::new(NoPersistence)),
            };
            let limiter = Arc::new(MemoryLimiter::new(
                config,
                SystemClock::new(),
                restored,
                counter_sink,
            ));
            (limiter.clone(), Limits::Memory(limiter))
        }
        // Day counters and budgets live in Redis with the other limits, and
        // so does what replicas learn about provider keys.
        LimitsBackend::Redis(redis) => {
            let limiter =
                Arc::new(RedisLimiter::new(config, redis).map_err(|error| error.to_string())?);
            let board = Arc::new(limiter.health_board(config));
            (limiter.clone(), Limits::Redis { limiter, board })
        }
    };
    let health = limits.health_board();
    // With `ledger_url`, usage rows go to PostgreSQL (which spills into the
    // SQLite file while it is unreachable); the file keeps the counters.
    let shared_ledger = match PostgresStore::from_config(&config.limits).await {
        Ok(store) => store.map(Arc::new),
        Err(error) => return Err(format!("cannot use limits.ledger_url: {error}")),
    };
    let counter = Arc::new(TiktokenCounter::new());
    counter.warm_up(config.models.iter().filter(|entry| entry.enabled));
    let metrics = config.server.metrics.then(|| {
        Arc::new(
            Metrics::new(config.models.iter().map(|entry| entry.name.clone()))
                .watch_limiter(Arc::clone(&limiter)),
        )
    });
    // Each record goes to the ledger and to the metrics, those that are on.
    let mut sinks: Vec<Arc<dyn UsageSink>> = Vec::with_capacity(2);
    let ledger: Option<(Arc<dyn UsageSink>, Arc<dyn UsageStore>)> = match (&shared_ledger, &store) {
        (Some(shared), _) => Some((shared.clone(), shared.clone())),
        (None, Some(store)) => Some((store.clone(), store.clone())),
        (None, None) => None,
    };
    if let Some((sink, _)) = &ledger {
        sinks.push(sink.clone());
    }
    if let Some(metrics) = &metrics {
        sinks.push(metrics.clone());
    }
    let usage: Arc<dyn UsageSink> = match sinks.len() {
        0 => Arc::new(NoLedger),
        1 => sinks.remove(0),
        _ => Arc::new(FanOut(sinks)),
    };
    let services = Services {
        limiter,
        usage,
        // `None`: `/v1/usage` answers that there is no ledger.
        store: ledger.map(|(_, store)| store),
        counter: counter.clone(),
        health,
    };
    Ok((
        services,
        Serving {
            store,
            shared_ledger,
            metrics,
            limits,
            counter,
        },
    ))
}

/// What serving needs besides the engine.
struct Serving {
    /// Flushed at shutdown; `None` with `limits.ledger: false`.
    store: Option<Arc<SqliteStore>>,
    /// The ledger shared by replicas (`limits.ledger_url`), closed at
    /// shutdown: what PostgreSQL cannot take then is spilled to `store`'s
    /// file and replayed at the next start.
    shared_ledger: Option<Arc<PostgresStore>>,
    /// Served on `/metrics`; `None` with `server.metrics: false`.
    metrics: Option<Arc<Metrics>>,
    /// The limiter (and, on Redis, the key health board), by kind: a reload
    /// reconfigures it. The shared one connects once the runtime runs.
    limits: Limits,
    /// Warmed up for the models of each reloaded config too.
    counter: Arc<TiktokenCounter>,
}

/// Logs to stderr at `RUST_LOG`'s levels (default info). Every request
/// leaves one line at info (router-http's `request_log`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A binary that set up logging of its own keeps it.
    let _ = match format {
        // One object per line, the event's fields at its top level beside
        // `timestamp`, `level`, `target` and `message`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder
            // Colour codes only help a person at a terminal; in files and
            // pipes they are noise.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Checks what only the binary knows: the registered provider names.
fn check_providers(config: &Config, registry: &Registry) -> Result<(), ConfigErrors> {
    let known = registry.names();
    let errors: Vec<ConfigError> = config
        .models
        .iter()
        .filter(|entry| !known.contains(&entry.provider.as_str()))
        .map(|entry| ConfigError {
            file: config.source.clone(),
            path: format!("models[{}].provider", entry.index),
            line: None,
            message: format!(
                "unknown provider `{}` (known: {})",
                entry.provider,
                known.join(", ")
            ),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Threads to serve on: `TOKIO_WORKER_THREADS` when set to a positive
/// number (tokio's own variable), else one per CPU this process may use
/// (which follows `taskset` and cgroup CPU limits).
fn worker_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .filter(|&count| count > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

/// With one thread, tokio's current-thread scheduler: everything runs on
/// the main thread, without the multi-thread scheduler's work-stealing
/// bookkeeping and its wake-ups across threads (on one pinned core,
/// `cargo xtask bench`'s setup, about 11 % more requests per second at 32
/// connections). With more, the multi-thread scheduler, one worker each.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

fn serve(
    config: &Config,
    routers: Arc<LiveRouter>,
    reloader: Option<Arc<Reloader>>,
    serving: Serving,
    runtime: &tokio::runtime::Runtime,
    workers: usize,
) -> ExitCode {
    runtime.block_on(async move {
        if let Limits::Redis { limiter, board } = &serving.limits {
            // Bounded: under fail_open the router serves without Redis, and
            // connects in the background.
            let connected = limiter.connect(REDIS_START_WAIT).await;
            tracing::info!(connected, "limits and key health are shared through redis");
            let listener: Arc<dyn HealthListener> = routers.load();
            board.listen(Arc::downgrade(&listener)).await;
        }
        if let Some(reloader) = &reloader {
            reloader.watch();
        }
        let address = SocketAddr::new(config.server.host, config.server.port);
        let listener = match TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(error) => {
                report(&format!("cannot listen on {address}: {error}"));
                return ExitCode::FAILURE;
            }
        };
        let bound = listener.local_addr().unwrap_or(address);
        tracing::info!(
            config = %config.source.display(),
            models = config.models.iter().filter(|m| m.enabled).count(),
            workers,
            scheduler = if workers == 1 { "current-thread" } else { "multi-thread" },
            "router started"
        );
        announce(bound);
        let mut http = HttpConfig::from_server_config(&config.server);
        if let Some(metrics) = serving.metrics.clone() {
            http = http.with_metrics(metrics);
        }
        if let Some(reloader) = reloader {
            http = http.with_reload(reloader);
        }
        let outcome = router_http::serve(
            listener,
            routers,
            http,
            shutdown_signal(),
            config.server.shutdown_timeout,
        )
        .await;
        // Every connection is closed by now, so every request has handed its
        // record over; write them all before exiting.
        let mut flushed = Ok(());
        if let Some(shared) = &serving.shared_ledger {
            // Rows PostgreSQL cannot take now are spilled to the SQLite file:
            // only a failure to do even that loses them.
            if let Err(error) = shared.close().await {
                flushed = Err(error.to_string());
            }
        }
        if let Some(store) = &serving.store {
            if let Err(error) = store.flush().await {
                flushed = Err(error.to_string());
            }
        }
        if !outcome.drained {
            // Requests outliving the timeout is the timeout doing its job:
            // they were told (an error event or a 503) and their usage is
            // recorded, so this alone is no failure.
            tracing::warn!(
                timeout = ?config.server.shutdown_timeout,
                ended = outcome.ended_by_shutdown,
                aborted = outcome.aborted,
                "shutdown timed out; open requests were ended with a server_shutdown error"
            );
        }
        // Losing usage records is a real failure: exit non-zero so it is noticed.
        match flushed {
            Ok(()) => {
                tracing::info!("server exited properly");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(%error, "could not write the last usage records");
                ExitCode::FAILURE
            }
        }
    })
}

/// How long start-up waits for Redis before serving without it.
const REDIS_START_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: no new connections, draining open requests");
}

// The lines below are the binary's command-line output, the one place
// printing is the point.
#[allow(clippy::print_stderr)]
fn announce(address: SocketAddr) {
    // Harnesses and people read this line to find a port chosen by the OS.
    eprintln!("listening on http://{address}");
}

#[allow(clippy::print_stderr)]
fn report(message: &str) {
    eprintln!("error: {message}");
}

/// A reloaded config's problems, for the log: the running config stays.
fn report_config_errors_to_log(path: &std::path::Path, errors: &ConfigErrors) {
    tracing::error!(
        config = %path.display(),
        problems = errors.0.len(),
        "the config was not reloaded; the running one stays"
    );
    for error in &errors.0 {
        tracing::error!(problem = %error, "config problem");
    }
}

#[allow(clippy::print_stderr)]
fn report_config_errors(errors: &ConfigErrors) {
    eprintln!(
        "error: the config has {} problem{}:",
        errors.0.len(),
        if errors.0.len() == 1 { "" } else { "s" }
    );
    for error in &errors.0 {
        eprintln!("  {error}");
    }
}

#[allow(clippy::print_stdout)]
fn say_config_ok(config: &Config) {
    println!(
        "{}: ok ({} models, {} enabled; {} client keys)",
        config.source.display(),
        config.models.len(),
        config.models.iter().filter(|m| m.enabled).count(),
        config.api_keys.len()
    );
}
