"""Starts a real router-server for the conformance checks and tells where it listens.

The server is started on port 0 with a config written to a temporary directory, so
checks never race for a fixed port and never depend on the repository's config file.
The bound address is read from the line the binary prints on stderr once it is
serving: `listening on http://HOST:PORT`.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

# The smallest config that serves the built-in mock provider under the name the
# checks use, with one client key.
DEFAULT_CONFIG = """\
server:
  host: 127.0.0.1
  port: 0
models:
  - id: 1
    name: mock-gpt
    provider: mock
    enabled: true
    visible: true
    supports_chat: true
    supports_completion: true
    supports_embedding: true
api_keys:
  - id: 1
    key: sk-router-dev-key
    name: dev
    is_active: true
  - id: 2
    key: sk-router-one-per-minute
    name: limited
    is_active: true
    rpm: 1
"""

CLIENT_KEY = "sk-router-dev-key"
# A key allowed one request per minute, to meet the router's 429.
LIMITED_KEY = "sk-router-one-per-minute"
MODEL = "mock-gpt"

_LISTENING = re.compile(r"listening on http://([A-Za-z0-9.\-\[\]:]+)")
# Log lines may be coloured; the address is matched on the text without escapes.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ServerError(Exception):
    """The server did not start, or did not say where it listens."""


class RouterServer:
    """A router-server child process, stopped when the `with` block ends."""

    def __init__(self, binary: str | os.PathLike[str], config: str = DEFAULT_CONFIG,
                 startup_timeout: float = 30.0) -> None:
        # Absolute, because the server runs with its temporary directory as cwd.
        self.binary = Path(binary).resolve()
        self.config = config
        self.startup_timeout = startup_timeout
        self.address: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._output: list[str] = []
        # Guards _output: two reader threads append while the main thread may read.
        self._output_lock = threading.Lock()
        self._listening = threading.Event()

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in /v1, as the SDKs want it."""
        if self.address is None:
            raise ServerError("the server is not running")
        return f"http://{self.address}/v1"

    def output(self) -> str:
        """Everything the server printed so far, stdout and stderr interleaved."""
        with self._output_lock:
            return "".join(self._output)

    def __enter__(self) -> "RouterServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        if not self.binary.is_file():
            raise ServerError(f"{self.binary} does not exist: build it with `cargo build -p router-server`")
        self._tempdir = tempfile.TemporaryDirectory(prefix="router-conformance-")
        config_path = Path(self._tempdir.name) / "config.yaml"
        config_path.write_text(self.config)
        env = dict(os.environ, NO_COLOR="1")
        try:
            self._process = subprocess.Popen(
                [str(self.binary), "--config", str(config_path)],
                cwd=self._tempdir.name,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=env,
            )
        except OSError as error:
            self.stop()
            raise ServerError(f"could not start {self.binary}: {error}") from error
        # Both pipes are drained for the whole life of the process: a full pipe would
        # block the server's logging and so the server itself.
        for stream, watch in ((self._process.stderr, True), (self._process.stdout, False)):
            threading.Thread(target=self._drain, args=(stream, watch), daemon=True).start()

        if not self._listening.wait(self.startup_timeout) or self.address is None:
            exit_code = self._process.poll()
            self.stop()
            state = f"exited with {exit_code}" if exit_code is not None else \
                f"printed no `listening on http://` line on stderr within {self.startup_timeout:.0f}s"
            raise ServerError(f"router-server {state}; its output:\n{self.output()}")

    def _drain(self, stream, watch_for_address: bool) -> None:
        for line in stream:
            with self._output_lock:
                self._output.append(line)
            if watch_for_address and not self._listening.is_set():
                match = _LISTENING.search(_ANSI_ESCAPE.sub("", line))
                if match:
                    self.address = match.group(1)
                    self._listening.set()
        # The pipe closed: the process is gone. Wake a waiting start() at once.
        self._listening.set()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
