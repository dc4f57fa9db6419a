"""A TCP proxy on 127.0.0.1 that can hold back the server's replies.

::

    with TcpProxy(upstream_port) as proxy:      # listening on proxy.port
        proxy.hold_replies()                    # requests still reach the server...
        ...                                     # ...but the client hears nothing back
        proxy.release_replies()

It makes the one fault a broker client cannot see through: the server did
what was asked, and the answer never came.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._replies = threading.Event()
        self._replies.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> TcpProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._replies.set()
        for sock in [self._listener, *self._sockets]:
            sock.close()

    def hold_replies(self) -> None:
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, reply: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if reply:
                    self._replies.wait()
                    if self._closed.is_set():
                        return
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
