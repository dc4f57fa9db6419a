"""A real HTTP server on 127.0.0.1 that records every request and answers as scripted.

::

    with HttpReceiver() as receiver:                       # listening on a free port
        receiver.script(Response(429, {"Retry-After": "7"}))     # the next request
        receiver.script(Response(404, body="no_service"), path="/slack")  # next on /slack
        ... point a channel at receiver.url("/slack") ...
        [request] = receiver.wait_for(1)                   # blocks on a Condition, no sleeps
        request.body, request.headers["X-Hub-Signature"]

Scripted answers are used once each, per path first, then for any path; with
none left, requests get ``200 ok``. ``Response(stall_s=...)`` holds the answer
back (until the receiver stops) to make a client time out.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    """One scripted answer."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str = b"ok"
    stall_s: float = 0.0


@dataclass(frozen=True)
class Request:
    """One request as it arrived: ``headers`` looks names up case-insensitively."""

    method: str
    path: str
    headers: Message
    body: bytes
    arrived_at: float


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: HttpReceiver


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers do
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.receiver._connected(self.connection)

    def finish(self) -> None:
        super().finish()
        self.server.receiver._disconnected(self.connection)

    def _handle(self) -> None:
        body = self._read_body()
        receiver = self.server.receiver
        response = receiver._record(
            Request(self.command, self.path, self.headers, body, time.time())
        )
        if response.stall_s and receiver._stopping.wait(response.stall_s):
            self.close_connection = True
            return
        content = response.body.encode() if isinstance(response.body, str) else response.body
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if "content-type" not in {name.lower() for name in response.headers}:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: object) -> None:
        pass  # tests read .requests, not stderr


class HttpReceiver:
    """The server, its record of requests and its script of answers."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.connections = 0  # TCP connections accepted, to see clients reuse theirs
        self._changed = threading.Condition()
        self._script: deque[Response] = deque()
        self._by_path: dict[str, deque[Response]] = {}
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self.port: int = self._server.server_address[1]
        # A short poll interval only makes stop() quick; requests never wait on it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        with self._changed:
            for connection in self._open:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def script(self, *responses: Response, path: str | None = None) -> None:
        """Answer the next requests (to ``path`` only, if given) with ``responses`` in order."""
        with self._changed:
            queue = self._script if path is None else self._by_path.setdefault(path, deque())
            queue.extend(responses)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Request]:
        """Block until at least ``count`` requests arrived; return them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout_s):
                raise AssertionError(
                    f"HTTP receiver: {len(self.requests)} of {count} requests in {timeout_s}s"
                )
            return list(self.requests)

    def _record(self, request: Request) -> Response:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
            for queue in (self._by_path.get(urlsplit(request.path).path), self._script):
                if queue:
                    return queue.popleft()
            return Response()

    def _connected(self, connection: socket.socket) -> None:
        with self._changed:
            self.connections += 1
            self._open.add(connection)

    def _disconnected(self, connection: socket.socket) -> None:
        with self._changed:
            self._open.discard(connection)
