//! Real database engines for integration tests: a PostgreSQL cluster and a
//! redis-server, each in a temporary folder of its own, listening on a free
//! 127.0.0.1 port, stopped and removed on drop.
//!
//! Other crates' tests include this by path
//! (`#[path = "../../router-limits/tests/engines/mod.rs"] mod engines;`), so it
//! uses std alone. The engines are found on the machine, never downloaded: a
//! missing one fails the test with the package to install, it never skips it.
//!
//! Tests run as root in CI, and PostgreSQL refuses to: as root, its programs
//! run as the unprivileged `postgres` user (created by Debian's `postgresql`
//! package) through `setpriv`, which execs rather than forks, so the child we
//! hold is the server itself.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test crate that includes the harness uses a different part of it"
)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod postgres;
pub mod redis;

pub use postgres::PostgresServer;
pub use redis::RedisServer;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long an engine may take to accept connections after it is started.
/// Generous: on two shared cores a parallel test run starts several at once.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopped engine may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A folder under the system's temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0);
        // Short: PostgreSQL puts its unix socket in here, and a socket path
        // is limited to about 100 bytes.
        let unique = format!(
            "{prefix}-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            nanos % 1_000_000_000
        );
        let path = std::env::temp_dir().join(unique);
        fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A port on 127.0.0.1 that was free a moment ago: bound to port 0, read
/// back, released. Another process could take it before the engine binds
/// it; the engines' `start` retries with a new port when that happens.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|error| panic!("cannot bind 127.0.0.1:0 to pick a port: {error}"));
    listener
        .local_addr()
        .unwrap_or_else(|error| panic!("cannot read the picked port: {error}"))
        .port()
}

/// The first file called `name` in the folders of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|folder| folder.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether this process runs as root, read from `/proc` (std has no geteuid
/// and the workspace forbids unsafe code).
pub fn is_root() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|effective| effective == "0")
}

/// Calls `ready` until it answers true. When `child` exits first, returns
/// the end of its `log` (a port taken meanwhile is a reason to try another);
/// when neither happens within [`READY_TIMEOUT`], kills it and panics.
pub fn wait_until_ready(
    what: &str,
    child: &mut Child,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{what} exited ({status}); its log:\n{}",
                read_log(log)
            ));
        }
        if started.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not accept connections within {READY_TIMEOUT:?}; its log:\n{}",
                read_log(log)
            );
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// The end of a log file, for a failure message.
pub fn read_log(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_else(|error| format!("(no log: {error})"));
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|&index| text.is_char_boundary(index))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// Whether a process with this id still exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: `Z` is a zombie,
        // which has exited and only waits to be reaped.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Sends `signal` (`INT`, `TERM`, `KILL`) to a process with the `kill`
/// program: std can only send SIGKILL, and only to its own children.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits until the process is gone, reaping `child` if it is ours.
pub fn wait_for_exit(what: &str, pid: u32, child: Option<&mut Child>) {
    let started = Instant::now();
    let mut child = child;
    loop {
        if let Some(child) = child.as_deref_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
        } else if !process_alive(pid) {
            return;
        }
        if started.elapsed() > EXIT_TIMEOUT {
            signal(pid, "KILL");
            if let Some(child) = child.as_deref_mut() {
                let _ = child.wait();
            }
            panic!("{what} (pid {pid}) did not exit within {EXIT_TIMEOUT:?}; killed it");
        }
        thread::sleep(Duration::from_millis(10));
    }
}
