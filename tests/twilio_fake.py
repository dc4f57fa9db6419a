"""A local stand-in for Twilio's Messages API: real HTTP, Twilio's JSON, scripted failures.

It serves ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded
``To``, ``From`` or ``MessagingServiceSid``, ``Body``, ...) on 127.0.0.1, checks
HTTP Basic auth (account sid + auth token; wrong: 401 with Twilio code 20003),
records every request, and answers as Twilio documents: 201 with a message
resource (``sid`` "SM" + 32 hex), or an error ``{"code", "message", "more_info",
"status"}``.

Answers are scripted with :class:`Reply`, per recipient or for whatever comes next::

    fake = start_fake()                                   # a free port; fake.base_url
    fake.script("+14155552671", Reply(400, 21211))        # that number's next answers
    fake.queue(Reply(429, 20429, headers={"Retry-After": "7"}))  # the next answers, any number
    fake.queue(Reply(hang=True))                          # hold the request, never answer
    ...
    fake.wait_for_requests(2)                             # blocks on a Condition, no sleeping
    fake.stop()

A recipient's script is used before the shared queue; with neither, the message
is accepted.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

_MESSAGES = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json")

# Twilio's wording for the errors the hub's tests provoke.
ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service unavailable",
    21211: "The 'To' number is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message",
    21604: "A 'To' phone number is required.",
    21608: "The number is unverified. Trial accounts cannot send messages to unverified numbers.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
}
# The Twilio code a scripted error gets when the test names only the HTTP status.
DEFAULT_CODES = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``status`` below 400 accepts the message; ``hang`` never answers."""

    status: int = 201
    code: int | None = None
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True)
class Request:
    """One request as the fake saw it, and what it answered."""

    path: str
    form: dict[str, str]
    arrived_at: float
    authorized: bool
    status: int | None  # the HTTP status answered; None for a request held without answer
    sid: str | None  # the message sid issued, for accepted messages


class TwilioFake:
    """The server's state: credentials, scripts, and the record of requests."""

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None) -> None:
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self._requests: list[Request] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._queue: deque[Reply] = deque()
        self._changed = threading.Condition()
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> TwilioFake:
        """Listen on 127.0.0.1 (a free port) in a background thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging requests, stop listening and wait for the server thread."""
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> TwilioFake:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What ``channels.sms.api_base`` should be, e.g. ``http://127.0.0.1:8123``."""
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- scripting and inspection -------------------------------------------

    def script(self, to: str, *replies: Reply) -> None:
        """Answer the next requests to ``to`` (E.164) with ``replies``, in order."""
        with self._changed:
            self._scripts.setdefault(to, deque()).extend(replies)

    def queue(self, *replies: Reply) -> None:
        """Answer the next requests, whatever their recipient, with ``replies``, in order."""
        with self._changed:
            self._queue.extend(replies)

    @property
    def requests(self) -> list[Request]:
        """Every request so far, in arrival order."""
        with self._changed:
            return list(self._requests)

    def wait_for_requests(self, count: int, timeout_s: float = 10.0) -> list[Request]:
        """Block until ``count`` requests have arrived (then return them all), or fail."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= count, timeout_s):
                raise AssertionError(
                    f"Twilio fake: {len(self._requests)} requests, not {count}, in {timeout_s}s"
                )
            return list(self._requests)

    # -- answering (called from the server's threads) ------------------------

    def _answer(
        self, path: str, authorization: str | None, form: dict[str, str]
    ) -> tuple[Reply, dict[str, Any]]:
        """Choose and record the answer to one request: (reply, JSON body)."""
        with self._changed:
            reply, body = self._choose(path, authorization, form)
            self._requests.append(
                Request(
                    path=path,
                    form=form,
                    arrived_at=time.time(),
                    authorized=self._authorized(authorization),
                    status=None if reply.hang else reply.status,
                    sid=body.get("sid") if reply.status < 400 and not reply.hang else None,
                )
            )
            self._changed.notify_all()
        return reply, body

    def _choose(
        self, path: str, authorization: str | None, form: dict[str, str]
    ) -> tuple[Reply, dict[str, Any]]:
        match = _MESSAGES.fullmatch(path)
        if not self._authorized(authorization):
            reply = Reply(401, 20003, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        elif not match or match["account"] != self.account_sid:
            reply = Reply(404, 20404)
        elif missing := _missing_field(form):
            reply = Reply(400, missing)
        else:
            reply = self._scripted(form["To"]) or Reply()
        if reply.status >= 400:
            return reply, _error(reply)
        return reply, self._message(form)

    def _scripted(self, to: str) -> Reply | None:
        if script := self._scripts.get(to):
            return script.popleft()
        return self._queue.popleft() if self._queue else None

    def _authorized(self, authorization: str | None) -> bool:
        token = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return authorization == f"Basic {token}"

    def _message(self, form: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        service = form.get("MessagingServiceSid")
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": str(_rough_segments(form["Body"])),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # Twilio says "accepted" until a Messaging Service has picked a sender.
            "status": "accepted" if service else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": form["To"],
            "uri": f"{uri}.json",
        }


def start_fake(account_sid: str | None = None, auth_token: str | None = None) -> TwilioFake:
    """A started :class:`TwilioFake`; call ``stop()`` when done."""
    return TwilioFake(account_sid, auth_token).start()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Twilio's client pools connections

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        self._handle(form)

    def do_GET(self) -> None:
        self._handle({})

    def _handle(self, form: dict[str, str]) -> None:
        fake: TwilioFake = self.server.fake  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        reply, body = fake._answer(path, self.headers.get("Authorization"), form)
        if reply.hang:
            fake._released.wait()
            self.close_connection = True
            return
        payload = json.dumps(body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's record of requests is the log."""


def _missing_field(form: dict[str, str]) -> int | None:
    if not form.get("To"):
        return 21604
    if not (form.get("From") or form.get("MessagingServiceSid")):
        return 21603
    if not form.get("Body"):
        return 21602
    return None


def _error(reply: Reply) -> dict[str, Any]:
    code = reply.code or DEFAULT_CODES.get(reply.status, reply.status)
    return {
        "code": code,
        "message": reply.message or ERROR_MESSAGES.get(code, f"HTTP {reply.status}"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": reply.status,
    }


def _rough_segments(body: str) -> int:
    """Twilio's num_segments, roughly (ASCII as GSM-7, else UCS-2); the hub counts exactly."""
    units = len(body.encode("utf-16-le")) // 2
    single, part = (160, 153) if body.isascii() else (70, 67)
    return 1 if units <= single else -(-units // part)
