"""The HTTP/1.1 server the templates share (standard library only).

It never closes a connection first: not after a response, not on bad input (it
answers 400 and waits for the peer to close), not on a handler error (500). A sandbox
with a connection it closed first, or one left half-closed, cannot be checkpointed,
and a failed checkpoint destroys it; the router always closes first.

The readiness probe (``GET /healthz`` with ``X-Actormux-Actor`` and
``X-Actormux-Generation``) tells the actor which actor and which activation
generation it now is (a restored actor keeps its memory, including the old
generation, until then). A request that names another generation or actor gets 409
and is not served: a stale sandbox can never serve. Every answer carries the
generation, so a client can see a fork. ``/healthz`` also says how many other
connections the server still holds open (``connections``): a checkpoint waits for 0.
``X-Actormux-Service`` seconds of sleep stand for the tool's work.

A POST is carried out once per ``X-Request-Id``: a client that lost its answer and
resends the same id (Agent Executor's reconnect-and-resend) gets the first answer
again, marked ``"duplicate": true``, without the actor doing it twice; a resend that
comes while the first is still being done waits for it. The ids and answers are the
actor's memory, so they survive a checkpoint and restore (the newest
``KEEP_REQUEST_IDS``; an id longer than ``MAX_REQUEST_ID`` characters gets 400).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

MAX_SERVICE_S = 60.0
KEEP_REQUEST_IDS = 4096
MAX_REQUEST_ID = 200  # characters: the ids kept stay under 1 MiB per actor
MAX_LINE = 8192
MAX_HEADERS = 100
MAX_BODY = 64 << 20
Handler = Callable[[str, str, bytes], tuple[int, dict[str, object]]]


class RequestError(Exception):
    """The peer sent something that is not a request we can frame."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Request(NamedTuple):
    """One request as read off the connection."""

    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: bytes


class Applied:
    """The request ids this actor carried out, with their answers (the newest
    :data:`KEEP_REQUEST_IDS`), and those it is carrying out now."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: OrderedDict[str, tuple[int, dict[str, object]]] = OrderedDict()
        self.running: dict[str, threading.Event] = {}

    def begin(self, request_id: str) -> tuple[int, dict[str, object]] | None:
        """None: carry ``request_id`` out (then :meth:`end`); else its earlier answer
        (waiting for it if it is being carried out now)."""
        with self.lock:
            done = self.answers.get(request_id)
            running = self.running.get(request_id)
            if done is None and running is None:
                self.running[request_id] = threading.Event()
                return None
        if done is None and running is not None:
            running.wait(MAX_SERVICE_S + 30)
            with self.lock:
                done = self.answers.get(request_id)
        if done is None:  # the first attempt failed: answer as it did not
            return 503, {"error": f"request {request_id} is still being carried out"}
        status, reply = done
        return status, {**reply, "duplicate": True}

    def end(self, request_id: str, status: int, reply: dict[str, object]) -> None:
        """``request_id`` was carried out with this answer."""
        with self.lock:
            if status < 500:
                self.answers[request_id] = (status, reply)
                while len(self.answers) > KEEP_REQUEST_IDS:
                    self.answers.popitem(last=False)
            running = self.running.pop(request_id, None)
        if running is not None:
            running.set()


class Identity:
    """Which actor this sandbox is, and which activation of it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.actor = ""
        self.generation = 0
        self.open_connections = 0  # connections not yet closed by this server

    def opened(self, change: int) -> None:
        """A connection was accepted (+1) or closed (-1)."""
        with self.lock:
            self.open_connections += change

    def adopt(self, actor: str, generation: int) -> None:
        """The probe says who we are now (generations only move forward)."""
        with self.lock:
            if generation >= self.generation:
                self.actor, self.generation = actor, generation

    def refuses(self, headers: dict[str, str]) -> str | None:
        """Why a request meant for another actor or activation is not ours to serve."""
        with self.lock:
            actor, generation = self.actor, self.generation
        wanted = headers.get("x-actormux-generation")
        if wanted is not None and wanted != str(generation):
            return f"this sandbox is generation {generation}, not {wanted}"
        named = headers.get("x-actormux-actor")
        if named is not None and actor and named != actor:
            return f"this sandbox is {actor}, not {named}"
        return None


def _read_head(stream: BinaryIO) -> tuple[str, str, dict[str, str]] | None:
    """One request line and its headers (None: the peer closed between requests)."""
    line = stream.readline(MAX_LINE + 1)
    while line in (b"\r\n", b"\n"):  # tolerated blank lines between requests
        line = stream.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE:
        raise RequestError(414, "request line too long")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise RequestError(400, "not an HTTP/1.x request line")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        raw = stream.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE:
            raise RequestError(431, "header line too long")
        if raw in (b"\r\n", b"\n"):
            return parts[0], parts[1], headers
        if not raw:
            raise RequestError(400, "connection closed inside the headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name.strip():
            raise RequestError(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    raise RequestError(431, "too many headers")


def _body(stream: BinaryIO, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise RequestError(411, "send Content-Length, not chunked bodies")
    try:
        length = int(headers.get("content-length") or 0)
    except ValueError:
        raise RequestError(400, "bad Content-Length") from None
    if length < 0 or length > MAX_BODY:
        raise RequestError(413, "body too large")
    body = stream.read(length) if length else b""
    if len(body) != length:
        raise RequestError(400, "connection closed inside the body")
    return body


def _send(conn: socket.socket, status: int, reply: dict[str, object]) -> None:
    data = (json.dumps(reply) + "\n").encode()
    wake = reply.get("wake_after_s")  # the actor asks to be woken then
    value = "".join(ch for ch in str(wake)[:32] if ch.isprintable())  # no CR/LF: one header
    wake_header = f"X-Actormux-Wake-After: {value}\r\n" if wake is not None else ""
    head = (
        f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}\r\n"
        "Content-Type: application/json\r\n"
        f"{wake_header}"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    conn.sendall(head.encode("latin-1") + data)


def _drain_until_closed(stream: BinaryIO) -> None:
    """After input we cannot frame: wait for the peer to close (never close first)."""
    while stream.read(65536):
        pass


def _connection(conn: socket.socket, handle: Handler, identity: Identity, applied: Applied) -> None:
    stream = conn.makefile("rb")
    identity.opened(+1)
    try:
        while True:
            try:
                head = _read_head(stream)
                if head is None:
                    return  # the peer closed first, as it should: now we may close too
                method, path, headers = head
                body = _body(stream, headers)
            except RequestError as e:
                _send(conn, e.status, {"error": str(e)})
                _drain_until_closed(stream)
                return
            _send(conn, *_dispatch(Request(method, path, headers, body), handle, identity, applied))
    except OSError:
        return  # reset by the peer
    finally:
        stream.close()
        conn.close()
        identity.opened(-1)


def _dispatch(
    request: Request, handle: Handler, identity: Identity, applied: Applied
) -> tuple[int, dict[str, object]]:
    headers = request.headers
    if request.path == "/healthz":
        try:
            generation = int(headers.get("x-actormux-generation", "0"))
        except ValueError:
            return 400, {"error": "bad X-Actormux-Generation"}
        if generation:
            identity.adopt(headers.get("x-actormux-actor", ""), generation)
        # connections open besides the probe's own: 0 means nothing is in flight
        return 200, {
            "ok": True,
            "generation": identity.generation,
            "connections": identity.open_connections - 1,
        }
    why = identity.refuses(headers)
    if why is not None:
        return 409, {"error": why, "generation": identity.generation}
    request_id = headers.get("x-request-id", "")
    if len(request_id) > MAX_REQUEST_ID:
        return 400, {"error": f"X-Request-Id longer than {MAX_REQUEST_ID} characters",
                     "generation": identity.generation}  # fmt: skip
    if request.method != "POST" or not request_id:
        status, reply = _carry_out(request, handle)
        return status, {**reply, "generation": identity.generation}
    earlier = applied.begin(request_id)
    if earlier is not None:
        status, reply = earlier
    else:
        status, reply = _carry_out(request, handle)
        applied.end(request_id, status, reply)
    return status, {**reply, "generation": identity.generation}


def _carry_out(request: Request, handle: Handler) -> tuple[int, dict[str, object]]:
    """The tool's work (``X-Actormux-Service`` seconds), then the handler's answer."""
    try:
        service = float(request.headers.get("x-actormux-service") or 0)
    except ValueError:
        service = 0.0
    if service > 0:
        time.sleep(min(service, MAX_SERVICE_S))
    try:
        return handle(request.method, request.path, request.body)
    except Exception as e:  # the actor's bug: answer, keep the connection and the sandbox
        return 500, {"error": f"{type(e).__name__}: {e}"}


def serve(port: int, handle: Handler) -> None:
    """Serve forever: ``handle(method, path, body) -> (status, json body)``."""
    identity = Identity()
    applied = Applied()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(128)
    while True:
        conn, _ = listener.accept()
        threading.Thread(
            target=_connection, args=(conn, handle, identity, applied), daemon=True
        ).start()
