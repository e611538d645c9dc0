"""The HTTP front door of the local backend (the data plane), on 127.0.0.1.

A request for ``Host: <actor>.<domain>`` is handed to the controller; it is held
while its actor activates (concurrent requests share one activation), refused with
503/504 per the admission policy, or forwarded over HTTP/1.1 to the actor's worker,
to the actor's current generation. Responses carry ``X-Actormux-*`` headers with the
request's timings.

Nothing a client sends can destroy an actor's state (the checkpoint hazard: a
sandbox with a connection open or half-closed cannot be checkpointed, and a failed
checkpoint destroys it):

* only the methods actors serve (GET, POST, PUT, DELETE) are forwarded; the router
  answers everything else itself (405), and bad input (400, 413, 431) too;
* every forward ends with the router closing first, or, when it gives up (timeout,
  error), with a reset, and the backend re-verifies the actor before checkpointing;
* the controller reports every forwarded request finished exactly once, whatever
  happens to the client.

An actor asks to be woken later by answering with ``X-Actormux-Wake-After: SECONDS``
(a finite number > 0; the controller bounds how many and how far ahead); when it is
due the router sends it ``POST /actormux/wake`` through the same path as a client's
request. Clients cannot set it: the router reads it from the actor's answer only.

And nothing a client sends can hold the router: a request head must arrive within
``header_timeout_s`` and its body within ``body_timeout_s``, an idle keep-alive
connection closes after ``idle_timeout_s``, and beyond ``max_connections`` new ones
get 503. Clients get generic 502/504 bodies; the details go to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
from dataclasses import dataclass
from typing import Any

import h11

from backends.controlplane import ControlPlane
from backends.gvisor.httpclient import ActorHTTPError, request
from backends.gvisor.names import BadActorId, actor_from_host
from control.messages import DeliverWake, Reject

log = logging.getLogger("actormux.router")
ACTOR_METHODS = ("GET", "POST", "PUT", "DELETE")
PASS_HEADERS = ("x-request-id", "x-actormux-service", "content-type")
WAKE_AFTER_HEADER = "x-actormux-wake-after"  # an actor's answer asks for a wake-up
WAKE_PATH = "/actormux/wake"  # where a due wake-up is sent to the actor
REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Timeout",
           413: "Payload Too Large", 431: "Header Fields Too Large", 500: "Error",
           502: "Bad Gateway", 503: "Unavailable", 504: "Gateway Timeout"}  # fmt: skip


@dataclass(frozen=True)
class RouterLimits:
    """How long and how much a client may take."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0
    max_connections: int = 1024
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a finite number > 0 (got {value!r})")
        for name in ("max_connections", "max_header_bytes", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1 (got {value!r})")


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: list[tuple[str, str]]


class _ClientError(Exception):
    """What the client sent cannot be served; answer ``status`` and close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Router:
    """Serves the data plane for ``backend`` (see the module docstring)."""

    def __init__(self, backend: ControlPlane, *, domain: str, limits: RouterLimits) -> None:
        self.backend = backend
        self.domain = domain
        self.limits = limits
        self.connections = 0
        self.refused_connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        backend.wake_sender = self.deliver_wake

    async def start(self, port: int, host: str = "127.0.0.1") -> None:
        """Listen on ``host:port`` (loopback)."""
        self._server = await asyncio.start_server(self._connection, host, port, limit=65536)

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop accepting, end open connections; forwarded requests still finish."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------ connections

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        if self.connections >= self.limits.max_connections:
            self.refused_connections += 1
            await self._refuse(reader, writer, 503, "too many connections\n")
            self._handlers.discard(task)
            return
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self.connections -= 1
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, text: str
    ) -> None:
        body = text.encode()
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: text/plain\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + body)
            await writer.drain()
        await self._linger(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limits = self.limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        first = True
        loop = asyncio.get_running_loop()
        while True:
            wait = limits.header_timeout_s if first else limits.idle_timeout_s
            try:
                head = await self._next(conn, reader, loop.time() + wait, idle_ok=True)
                if head is None:
                    return  # closed, or idle too long: a quiet close
                if not isinstance(head, h11.Request):
                    raise _ClientError(400, f"expected a request, got {type(head).__name__}")
                # h11 bounds only heads still arriving; one that came whole is checked here.
                size = len(head.target) + sum(len(k) + len(v) + 4 for k, v in head.headers)
                if size > limits.max_header_bytes:
                    raise _ClientError(431, f"request head of {size} bytes")
                body = await self._body(conn, reader, loop.time() + limits.body_timeout_s)
            except _ClientError as e:
                await self._send_error(conn, reader, writer, e.status, str(e))
                return
            first = False
            try:
                answer = await self._handle(head, body)
            except Exception:  # a bug of ours: the client gets a 500, the log the details
                log.exception("handling a request failed")
                answer = _Answer(500, b"internal error\n", [])
            writer.write(self._encode(conn, answer, with_body=head.method != b"HEAD"))
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _next(
        self, conn: h11.Connection, reader: asyncio.StreamReader, deadline: float,
        *, idle_ok: bool = False,
    ) -> Any:  # fmt: skip
        """The next h11 event, reading as needed until ``deadline`` (loop time). With
        ``idle_ok``, a connection on which nothing at all arrives closes quietly (None)."""
        loop = asyncio.get_running_loop()
        started = False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                raise _ClientError(e.error_status_hint, f"bad request: {e}") from None
            if event is not h11.NEED_DATA:
                return None if isinstance(event, h11.ConnectionClosed) else event
            try:
                data = await asyncio.wait_for(reader.read(65536), deadline - loop.time())
            except TimeoutError:
                if idle_ok and not started:
                    return None  # idle: close quietly
                raise _ClientError(408, "request not received in time") from None
            started = True
            conn.receive_data(data)

    async def _body(
        self, conn: h11.Connection, reader: asyncio.StreamReader, deadline: float
    ) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next(conn, reader, deadline)
            if event is None:
                raise _ClientError(400, "connection closed inside the body")
            if isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.limits.max_body_bytes:
                    raise _ClientError(413, f"body over {self.limits.max_body_bytes} bytes")
                chunks.append(bytes(event.data))

    def _encode(self, conn: h11.Connection, answer: _Answer, *, with_body: bool = True) -> bytes:
        """The response's bytes (a response to HEAD has no body)."""
        headers = [("Content-Length", str(len(answer.body))), *answer.headers]
        reason = REASONS.get(answer.status, "")
        out = conn.send(h11.Response(status_code=answer.status, headers=headers, reason=reason))
        out += conn.send(h11.Data(data=answer.body)) if answer.body and with_body else b""
        return out + conn.send(h11.EndOfMessage())

    async def _send_error(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        status: int, detail: str,
    ) -> None:  # fmt: skip
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        text = {408: "request timeout\n", 413: "request body too large\n",
                431: "request headers too large\n"}.get(status, "bad request\n")  # fmt: skip
        log.info("refused a client: %d %s", status, detail)
        answer = _Answer(status, text.encode(), [("Connection", "close")])
        with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
            writer.write(self._encode(conn, answer))
            await writer.drain()
        await self._linger(reader, writer)

    async def _linger(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit_s: float = 1.0
    ) -> None:
        """Close after an error answer without resetting it away: stop writing, then read
        and drop what the client still sends, briefly, so that no unread bytes make the
        kernel reset the connection before the client has read the answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            if writer.can_write_eof():
                writer.write_eof()
            while await asyncio.wait_for(reader.read(65536), max(0.0, deadline - loop.time())):
                pass
        writer.close()

    # ------------------------------------------------------------ requests

    async def _handle(self, head: h11.Request, body: bytes) -> _Answer:
        method = head.method.decode("ascii", "replace").upper()
        target = head.target.decode("ascii", "replace")
        headers: dict[str, str] = {}
        try:
            for name, value in head.headers:
                headers[name.decode("ascii")] = value.decode("ascii")
        except UnicodeDecodeError:
            return _Answer(400, b"header values must be ASCII\n", [])
        try:
            actor = actor_from_host(headers.get("host", ""), self.domain)
        except BadActorId as e:
            return _Answer(400, f"{e}\n".encode(), [])
        if method not in ACTOR_METHODS:
            allow = ", ".join(ACTOR_METHODS)
            return _Answer(405, f"actors serve {allow}\n".encode(), [("Allow", allow)])
        return await self._route(actor, method, target, headers, body)

    async def deliver_wake(self, wake: DeliverWake) -> None:
        """A wake-up the actor scheduled is due: ``POST /actormux/wake`` to it, through
        the same path as a client's request (admission, activation, fencing, records)."""
        # The same id if it is delivered again after a crash: the actor may dedupe it.
        name = wake.key or secrets.token_hex(8)
        headers = {"x-request-id": f"wake-{name}"}
        answer = await self._route(
            wake.actor, "POST", WAKE_PATH, headers, b"", wait_s=wake.wait_s, wake=True
        )
        if answer.status >= 400:
            log.warning("wake-up %s of %s ended %d", name, wake.actor, answer.status)
        await self.backend.wake_done(wake)

    async def _route(
        self, actor: str, method: str, target: str, headers: dict[str, str], body: bytes,
        *, wait_s: float | None = None, wake: bool = False,
    ) -> _Answer:  # fmt: skip
        backend = self.backend
        adm = await backend.admit(actor, wait_s=wait_s)
        cp = adm.decided_s - adm.arrived_s
        timings = [("X-Actormux-Control-Plane-S", f"{cp:.6f}")]
        decision = adm.decision
        if isinstance(decision, Reject):
            backend.record_request(
                adm.request, actor, adm.arrived_s, outcome=decision.outcome,
                status=decision.status, activated=False, cp=cp, wake=wake,
            )  # fmt: skip
            return _Answer(decision.status, f"{decision.reason}\n".encode(), timings)
        ip, port = backend.address(decision.worker)
        forwarded = backend.now()
        request_id = headers.get("x-request-id") or f"router-{adm.request}"
        sent = {h: headers[h] for h in PASS_HEADERS if h in headers}
        sent["X-Actormux-Actor"] = actor
        sent["X-Actormux-Generation"] = str(decision.generation)
        forward = asyncio.ensure_future(
            request(
                ip, port, method, target, headers=sent, body=body,
                timeout=backend.request_timeout_s,
            )
        )  # fmt: skip
        backend.track_forward(actor, decision.generation, forward)
        try:
            try:
                await asyncio.wait({forward})
            except asyncio.CancelledError:
                forward.cancel()  # the router is shutting down
                raise
            if forward.cancelled():  # its sandbox was declared lost: no answer will come
                raise ActorHTTPError("the actor's sandbox is gone")
            answer = forward.result()
            status, payload = answer.status, answer.body
            content_type = answer.headers.get("content-type", "application/octet-stream")
            if answer.actor_closed_first:
                backend.connection_failed(actor, actor_closed_first=True)
            if status < 400:
                backend.acknowledged(actor, decision.generation, request_id)
                wake_after = answer.headers.get(WAKE_AFTER_HEADER)
                if wake_after is not None:
                    await backend.schedule_wake(actor, wake_after)
        except ActorHTTPError as e:
            backend.connection_failed(actor, actor_closed_first=e.actor_closed_first)
            status = 504 if e.timed_out else 502
            log.warning("request %s to %s on %s failed: %s", request_id, actor,
                        decision.worker, e)  # fmt: skip
            payload = b"gateway timeout\n" if e.timed_out else b"bad gateway\n"
            content_type = "text/plain"
        finally:
            backend.finished(adm.request)  # the connection is closed: it may be checkpointed
        service = backend.now() - forwarded
        outcome = "ok" if status < 400 else ("timeout" if status == 504 else "rejected")
        backend.record_request(
            adm.request, actor, adm.arrived_s, outcome=outcome, status=status,
            activated=decision.activated, cp=cp, queue=decision.queue_s,
            activation=decision.activation_s, service=service, wake=wake,
        )  # fmt: skip
        timings += [
            ("X-Actormux-Activated", "1" if decision.activated else "0"),
            ("X-Actormux-Queue-S", f"{decision.queue_s:.6f}"),
            ("X-Actormux-Activation-S", f"{decision.activation_s:.6f}"),
            ("X-Actormux-Service-S", f"{service:.6f}"),
            ("X-Actormux-Worker", decision.worker),
            ("X-Actormux-Generation", str(decision.generation)),
            ("Content-Type", content_type),
        ]
        return _Answer(status, payload, timings)
