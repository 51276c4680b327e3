"""An in-process upstream that replays recorded provider streams, for the checks that
compare a translated stream with a native one.

`POST /v1/messages` answers Anthropic's recorded stream, anything else OpenAI's
recorded stream of the same answer. Both are read from router-providers' fixtures,
which the Rust golden tests pin down as well.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2].parent / "router-providers" / "tests" / "fixtures"
ANTHROPIC_STREAM = FIXTURES / "anthropic" / "tool_calls_only.sse"
OPENAI_STREAM = FIXTURES / "openai" / "chat_stream_tool_calls.sse"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        if self.path == "/v1/messages":
            # What an Anthropic upstream insists on.
            if not self.headers.get("x-api-key") or self.headers.get("anthropic-version") != "2023-06-01":
                self._answer(401, "application/json",
                             b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}')
                return
            body = ANTHROPIC_STREAM.read_bytes()
        else:
            body = OPENAI_STREAM.read_bytes()
        self._answer(200, "text/event-stream", body)

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class RecordedUpstream:
    """Serves on 127.0.0.1, port 0, until the `with` block ends."""

    def __enter__(self) -> "RecordedUpstream":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        host, port = self._server.server_address[:2]
        self.root = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
