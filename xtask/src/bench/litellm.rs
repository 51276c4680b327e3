//! `cargo xtask bench --peer litellm`: LiteLLM proxy as the peer the router is compared
//! with.
//!
//! LiteLLM is installed from PyPI (`litellm[proxy]`, pinned to [`VERSION`]) into a venv
//! under `target/bench/litellm-venv`, reused while it holds that version. It runs with
//! one uvicorn worker on the router's core, one model on the same mock upstream, and a
//! master key (the router authenticates its clients too); no database, so no spend
//! logs. What LiteLLM documents to keep it quiet is set: `LITELLM_LOG=ERROR`,
//! `--telemetry False` and `litellm_settings.telemetry: false`, `set_verbose: false`,
//! `LITELLM_LOCAL_MODEL_COST_MAP=True` (no download of the cost map at start) and a
//! `--log_config` that silences uvicorn's access log. It is started in its own process
//! group, and the whole group is stopped when the handle is dropped.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{Pinning, CLIENT_KEY};
use crate::process;
use crate::soak::{http_get, spawn_logged, Guarded};

/// The LiteLLM release compared with.
pub(super) const VERSION: &str = "1.77.7";
/// LiteLLM imports a lot at start (about 10 s on one core).
const START_WAIT: Duration = Duration::from_secs(180);
/// How long the group gets to exit after SIGTERM before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The venv's `litellm` program, installing `litellm[proxy]==VERSION` first unless the
/// venv already has it.
pub(super) fn install(bench_dir: &Path) -> Result<PathBuf> {
    let venv = bench_dir.join("litellm-venv");
    let python = venv.join("bin").join("python");
    let program = venv.join("bin").join("litellm");
    if program.exists() && installed_version(&python).as_deref() == Some(VERSION) {
        println!("bench: reusing LiteLLM {VERSION} in {}", venv.display());
        return Ok(program);
    }
    println!(
        "bench: installing litellm[proxy]=={VERSION} into {}",
        venv.display()
    );
    process::run(
        bench_dir,
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
    )
    .context("creating the LiteLLM venv (needs python3 with the venv module)")?;
    process::run(
        bench_dir,
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("litellm[proxy]=={VERSION}")),
    )
    .context("installing LiteLLM from PyPI")?;
    match installed_version(&python) {
        Some(version) if version == VERSION && program.exists() => Ok(program),
        other => bail!(
            "the venv has LiteLLM {other:?} after the install, not {VERSION} with its `litellm` program"
        ),
    }
}

fn installed_version(python: &Path) -> Option<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A running LiteLLM proxy; dropping it stops its process group.
pub(super) struct Proxy {
    child: Option<Guarded>,
    pub(super) addr: String,
}

impl Proxy {
    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Guarded::id)
    }

    pub(super) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|guarded| matches!(guarded.child.try_wait(), Ok(None)))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let Some(mut guarded) = self.child.take() else {
            return;
        };
        // taskset execs litellm, which leads the group it was started in.
        let group = format!("-{}", guarded.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline && matches!(guarded.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of the group (uvicorn children, the leader itself).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        drop(guarded);
    }
}

/// LiteLLM's config: one model, `bench`, on the mock; the master key is the bench's
/// client key.
fn config_text(mock_addr: &str) -> String {
    format!(
        "# Written by `cargo xtask bench --peer litellm`.\n\
         model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/mock-bench\n      api_base: http://{mock_addr}/v1\n      api_key: dummy\n\
         litellm_settings:\n  telemetry: false\n  set_verbose: false\n\
         general_settings:\n  master_key: {CLIENT_KEY}\n"
    )
}

/// uvicorn's logging config (a `logging.dictConfig`), without the per-request access log.
const LOG_CONFIG: &str = r#"{"version": 1, "disable_existing_loggers": false, "loggers": {"uvicorn.access": {"level": "WARNING"}}}"#;

/// Starts LiteLLM on a free loopback port, on `core`, and waits until it answers.
pub(super) fn start(
    program: &Path,
    run_dir: &Path,
    core: Option<&str>,
    mock_addr: &str,
) -> Result<Proxy> {
    let config = run_dir.join("litellm.yaml");
    std::fs::write(&config, config_text(mock_addr))
        .with_context(|| format!("writing {}", config.display()))?;
    let log_config = run_dir.join("litellm-logging.json");
    std::fs::write(&log_config, LOG_CONFIG)
        .with_context(|| format!("writing {}", log_config.display()))?;
    let port = free_port()?;
    let log = run_dir.join("litellm.log");
    let mut command = Pinning::command(core, program);
    command
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--num_workers", "1", "--telemetry", "False"])
        .arg("--log_config")
        .arg(&log_config)
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .current_dir(run_dir)
        .process_group(0)
        .stdin(Stdio::null());
    let child = spawn_logged("litellm", &mut command, &log)?;
    let mut proxy = Proxy {
        child: Some(child),
        addr: format!("127.0.0.1:{port}"),
    };
    let started = Instant::now();
    loop {
        if http_get(&proxy.addr, "/health/liveliness", None).is_ok() {
            println!(
                "bench: LiteLLM {VERSION} on {} (pid {}), up after {:.1} s",
                proxy.addr,
                proxy.pid(),
                started.elapsed().as_secs_f64()
            );
            return Ok(proxy);
        }
        if !proxy.alive() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("LiteLLM exited before answering:\n{text}");
        }
        if started.elapsed() > START_WAIT {
            bail!(
                "LiteLLM did not answer within {START_WAIT:?} (log in {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
