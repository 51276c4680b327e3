//! A throwaway redis-server: no persistence, a free 127.0.0.1 port, a
//! temporary working folder.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, on_path, wait_for_exit, wait_until_ready, TempDir};

/// How many fresh ports `start` tries when the one it picked was taken.
const PORT_ATTEMPTS: usize = 3;

#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    server: Option<Child>,
    /// The working folder and `redis.log`; declared after the process so
    /// that it is removed after the server has stopped.
    dir: TempDir,
}

impl RedisServer {
    /// Starts redis-server and returns once it answers PING.
    pub fn start() -> Self {
        let binary = on_path("redis-server")
            .or_else(|| {
                let debian = PathBuf::from("/usr/bin/redis-server");
                debian.is_file().then_some(debian)
            })
            .unwrap_or_else(|| {
                panic!(
                    "redis-server is not on PATH: install the `redis-server` package \
                     (apt-get install redis-server)"
                )
            });
        let mut server = Self {
            binary,
            port: 0,
            server: None,
            dir: TempDir::new("redis"),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(log) if attempt < PORT_ATTEMPTS && log.contains("Address already in use") => {}
                Err(log) => panic!("redis-server did not start: {log}"),
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it answers PING now.
    pub fn answers_ping(&self) -> bool {
        ping(self.port)
    }

    /// Kills the server by its PID and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let pid = child.id();
            wait_for_exit("redis-server", pid, Some(&mut child));
        }
    }

    /// Starts the stopped server again on the same port (empty: it keeps
    /// nothing on disk).
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "start_again while it runs");
        if let Err(log) = self.spawn() {
            panic!(
                "redis-server did not start again on port {}: {log}",
                self.port
            );
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("redis.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", log_path.display()));
        let mut child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .unwrap_or_else(|error| panic!("cannot share the redis log: {error}")),
            )
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start redis-server: {error}"));
        let port = self.port;
        wait_until_ready("redis-server", &mut child, &log_path, || ping(port))?;
        self.server = Some(child);
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends an inline `PING` and expects `+PONG`: enough of the protocol to
/// tell that the server is up.
fn ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
