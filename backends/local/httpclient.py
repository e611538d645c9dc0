"""The router's HTTP/1.1 client to actors: one connection per request, closed by us first.

gVisor cannot checkpoint a sandbox while any of its TCP connections is open or
half-closed, and if the actor closed first its TIME_WAIT would block a checkpoint for
about a minute. So the router speaks HTTP/1.1 with keep-alive (the actor never closes
first), reads the whole response, and closes the connection itself: the TIME_WAIT
lands on the host side, outside the sandbox. No connection is pooled, so none is left
open when the actor is checkpointed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


class ActorHTTPError(RuntimeError):
    """The actor could not be reached or answered something that is not HTTP/1.1."""


@dataclass(frozen=True)
class ActorResponse:
    """An actor's answer."""

    status: int
    headers: dict[str, str]
    body: bytes


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
    """Send one request and return the response; the connection is closed by us.

    ``host_header`` overrides the Host header (default: ``host``).
    """
    try:
        return await asyncio.wait_for(
            _exchange(
                host,
                port,
                method,
                path,
                headers=headers or {},
                body=body,
                host_header=host_header or host,
            ),
            timeout,
        )
    except TimeoutError:
        raise ActorHTTPError(f"no answer from {host}:{port} within {timeout} s") from None
    except OSError as e:
        raise ActorHTTPError(f"cannot reach {host}:{port}: {e}") from None


async def _exchange(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str],
    body: bytes,
    host_header: str,
) -> ActorResponse:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {host_header}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in _OURS]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        raw = await reader.readuntil(b"\r\n\r\n")
        if len(raw) > MAX_HEADER_BYTES:
            raise ActorHTTPError("response headers too large")
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ActorHTTPError(f"not an HTTP response: {lines[0]!r}")
        fields: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            raise ActorHTTPError("chunked responses are not supported; send Content-Length")
        length = int(fields.get("content-length", "0"))
        if length > MAX_BODY_BYTES:
            raise ActorHTTPError(f"response body too large ({length} bytes)")
        data = await reader.readexactly(length) if length else b""
        return ActorResponse(int(parts[1]), fields, data)
    except asyncio.IncompleteReadError as e:
        raise ActorHTTPError(f"connection closed mid-response ({len(e.partial)} bytes)") from None
    except asyncio.LimitOverrunError:
        raise ActorHTTPError("response headers too large") from None
    finally:
        writer.close()  # we close first: the TIME_WAIT stays on our side
        with contextlib.suppress(OSError):
            await writer.wait_closed()


_OURS = {"host", "content-length", "connection", "transfer-encoding"}
