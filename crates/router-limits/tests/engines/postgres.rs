//! A throwaway PostgreSQL cluster: `initdb` into a temporary folder, one
//! postmaster on a free 127.0.0.1 port with its unix socket in that folder,
//! trust authentication, durability off (a test's data dies with it anyway).

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{free_port, is_root, on_path, signal, wait_for_exit, wait_until_ready, TempDir};

/// The role every test connects as; `initdb -U` makes it the superuser.
pub const USER: &str = "router";

/// The unprivileged account PostgreSQL runs as when the tests run as root.
const SYSTEM_USER: &str = "postgres";

/// How many fresh ports `start` tries when the one it picked was taken.
const PORT_ATTEMPTS: usize = 3;

/// A running (or stopped, between `stop` and `start_again`) cluster.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    port: u16,
    /// Holds `data/`, the socket and `postgres.log`. Declared after the
    /// process so that it is removed after the server has stopped.
    dir: TempDir,
    postmaster: Option<Child>,
    /// Whether the programs run as [`SYSTEM_USER`] (we are root).
    as_system_user: bool,
}

impl PostgresServer {
    /// Creates a cluster and starts it; returns once it accepts connections
    /// and the database `router` exists. Panics with the reason (and the
    /// server's log) when it cannot.
    pub fn start() -> Self {
        let bin = find_bin_dir();
        let as_system_user = is_root();
        let dir = TempDir::new("pg");
        if as_system_user {
            run_checked(Command::new("chown").args([
                &format!("{SYSTEM_USER}:{SYSTEM_USER}"),
                &dir.path().display().to_string(),
            ]));
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", USER, "--no-sync", "--no-locale", "-E"])
            .arg("UTF8");
        run_checked(&mut privileged(initdb, as_system_user));
        let mut server = Self {
            bin,
            port: 0,
            dir,
            postmaster: None,
            as_system_user,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = free_port();
            match server.spawn_postmaster() {
                Ok(()) => break,
                Err(log) if attempt < PORT_ATTEMPTS && log.contains("could not bind") => {}
                Err(log) => panic!("PostgreSQL did not start; its log:\n{log}"),
            }
        }
        server.psql("postgres", "CREATE DATABASE router");
        server
    }

    /// The URL of the `router` database.
    pub fn url(&self) -> String {
        self.database_url("router")
    }

    /// The URL of another database on this server (see `create_database`).
    pub fn database_url(&self, database: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, database: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{database}\""));
        self.database_url(database)
    }

    /// Runs one SQL command with `psql` and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(self.tool("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run psql: {error}"));
        assert!(
            output.status.success(),
            "psql -c {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Stops the server (a fast shutdown: open connections are cut) and
    /// waits until the postmaster, found by the PID it wrote, has exited.
    pub fn stop(&mut self) {
        let pid = self.postmaster_pid();
        if let Some(pid) = pid {
            signal(pid, "INT");
        }
        match (self.postmaster.as_mut(), pid) {
            (Some(child), pid) => {
                let pid = pid.unwrap_or(child.id());
                wait_for_exit("postgres", pid, Some(child));
            }
            (None, Some(pid)) => wait_for_exit("postgres", pid, None),
            (None, None) => {}
        }
        self.postmaster = None;
    }

    /// Starts the stopped server again on the same port and data folder.
    pub fn start_again(&mut self) {
        assert!(self.postmaster.is_none(), "start_again while it runs");
        if let Err(log) = self.spawn_postmaster() {
            panic!(
                "PostgreSQL did not start again on port {}; its log:\n{log}",
                self.port
            );
        }
    }

    /// Starts the postmaster on `self.port` and waits until it accepts
    /// connections; on failure returns its log.
    fn spawn_postmaster(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("postgres.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", log_path.display()));
        let log_for_stderr = log
            .try_clone()
            .unwrap_or_else(|error| panic!("cannot share {}: {error}", log_path.display()));
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            // Nothing here must survive a crash of the machine.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"])
            .args(["-c", "max_connections=50"]);
        let mut child = privileged(postgres, self.as_system_user)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start postgres: {error}"));
        let mut is_ready = Command::new(self.tool("pg_isready"));
        is_ready
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        wait_until_ready("postgres", &mut child, &log_path, || {
            is_ready.status().is_ok_and(|status| status.success())
        })?;
        self.postmaster = Some(child);
        Ok(())
    }

    /// A client program from the server's own folder (Debian's `/usr/bin`
    /// wrappers pick a version by their own rules).
    fn tool(&self, name: &str) -> PathBuf {
        let path = self.bin.join(name);
        assert!(
            path.is_file(),
            "{} is missing: install the `postgresql-client` package",
            path.display()
        );
        path
    }

    /// The postmaster's PID, the first line of `data/postmaster.pid`.
    fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.dir.path().join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.postmaster.is_some() {
            // Immediate shutdown: nothing to keep, and drop should be quick.
            if let Some(pid) = self.postmaster_pid() {
                signal(pid, "QUIT");
            }
            if let Some(mut child) = self.postmaster.take() {
                let pid = child.id();
                wait_for_exit("postgres", pid, Some(&mut child));
            }
        }
    }
}

/// `command`, run as [`SYSTEM_USER`] when we are root.
fn privileged(command: Command, as_system_user: bool) -> Command {
    if !as_system_user {
        return command;
    }
    let mut wrapped = Command::new("setpriv");
    wrapped
        .args([
            &format!("--reuid={SYSTEM_USER}"),
            &format!("--regid={SYSTEM_USER}"),
            "--init-groups",
            "--",
        ])
        .arg(command.get_program())
        .args(command.get_args());
    wrapped
}

fn run_checked(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {:?}: {error}", command.get_program()));
    assert!(
        output.status.success(),
        "{:?} failed ({}): {}{}",
        command,
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The folder holding `initdb` and `postgres`: the one `initdb` on `PATH`
/// lives in (through symlinks), else Debian's
/// `/usr/lib/postgresql/<version>/bin`, newest version first.
fn find_bin_dir() -> PathBuf {
    let from_path = on_path("initdb")
        .and_then(|initdb| fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(PathBuf::from))
        .filter(|folder| folder.join("postgres").is_file());
    if let Some(folder) = from_path {
        return folder;
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's initdb is neither on PATH nor in /usr/lib/postgresql/*/bin: \
             install the `postgresql` package (apt-get install postgresql)"
        ),
    }
}
