"""The router's HTTP/1.1 client to actors: one connection per request, ended by us.

gVisor cannot checkpoint a sandbox while any of its TCP connections is open or
half-closed, and a failed checkpoint destroys it. Measured on these machines: a
connection the host closes with a FIN while the actor is still working leaves the
sandbox's end in CLOSE_WAIT and the next checkpoint kills it; the same connection
ended with a reset (RST) leaves it checkpointable, state intact. So:

* after a complete exchange we close first (a FIN; the actor's end closes cleanly,
  the TIME_WAIT stays on the host);
* a connection we give up on (timeout, error, cancellation) is reset, never
  half-closed;
* if the actor closes first (its FIN arrives before ours, or it says
  ``Connection: close``), :attr:`ActorHTTPError.actor_closed_first` /
  :attr:`ActorResponse.actor_closed_first` says so: its TIME_WAIT then blocks a
  checkpoint for about a minute.

Parsing is h11's; no connection is pooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import h11

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_OURS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class ActorHTTPError(RuntimeError):
    """The actor could not be reached or did not answer with a whole HTTP/1.1 response."""

    def __init__(
        self, message: str, *, timed_out: bool = False, actor_closed_first: bool = False
    ) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.actor_closed_first = actor_closed_first


@dataclass(frozen=True)
class ActorResponse:
    """An actor's answer."""

    status: int
    headers: dict[str, str]
    body: bytes
    actor_closed_first: bool = False


def reset(writer: asyncio.StreamWriter) -> None:
    """End a connection with a reset (RST) at once: nothing of it lingers half-closed."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def request(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 30.0,
    host_header: str | None = None,
) -> ActorResponse:
    """Send one request and return the response (see the module docstring)."""
    outgoing = _Outgoing(method, path, dict(headers or {}), body, host_header or host)
    try:
        return await asyncio.wait_for(_exchange(host, port, outgoing), timeout)
    except TimeoutError:
        raise ActorHTTPError(f"no answer from {host}:{port} within {timeout} s",
                             timed_out=True) from None  # fmt: skip
    except OSError as e:
        raise ActorHTTPError(f"cannot reach {host}:{port}: {e}") from None


@dataclass(frozen=True)
class _Outgoing:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    host_header: str


async def _exchange(host: str, port: int, outgoing: _Outgoing) -> ActorResponse:
    reader, writer = await asyncio.open_connection(host, port)
    done = False
    try:
        response = await _talk(reader, writer, outgoing)
        done = True
    finally:
        if not done:
            reset(writer)  # a timeout (cancellation), an error: never a half-close
    closed_first = response.actor_closed_first or reader.at_eof()
    writer.close()  # we close first: the TIME_WAIT stays on our side
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    if closed_first and not response.actor_closed_first:
        return ActorResponse(response.status, response.headers, response.body, True)
    return response


async def _talk(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, outgoing: _Outgoing
) -> ActorResponse:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
    body = outgoing.body
    fields = [("Host", outgoing.host_header), ("Content-Length", str(len(body)))]
    fields += [(k, v) for k, v in outgoing.headers.items() if k.lower() not in _OURS]
    try:
        request = h11.Request(method=outgoing.method, target=outgoing.path, headers=fields)
        out = conn.send(request)
        out += conn.send(h11.Data(data=body)) if body else b""
        out += conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError as e:
        raise ActorHTTPError(f"cannot send this request: {e}") from None
    writer.write(out)
    await writer.drain()
    status, found, chunks, size = 0, {}, [], 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                raise ActorHTTPError("the actor closed the connection mid-response",
                                     actor_closed_first=True)  # fmt: skip
            try:
                conn.receive_data(data)
            except h11.RemoteProtocolError as e:
                raise ActorHTTPError(f"not an HTTP/1.1 response: {e}") from None
            continue
        if isinstance(event, h11.RemoteProtocolError):  # pragma: no cover - raised, not returned
            raise ActorHTTPError(str(event))
        if isinstance(event, h11.Response):
            status = event.status_code
            found = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY_BYTES:
                raise ActorHTTPError(f"response body too large (over {MAX_BODY_BYTES} bytes)")
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            closing = "close" in found.get("connection", "").lower()
            return ActorResponse(status, found, b"".join(chunks), closing)
        elif isinstance(event, h11.ConnectionClosed):
            raise ActorHTTPError("the actor closed the connection", actor_closed_first=True)
