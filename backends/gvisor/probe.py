"""The readiness probe: wait until an actor answers ``GET /healthz``, telling it which
actor and activation (generation) it now is (the template's server stamps both on
every response, so a client can see a fork)."""

from __future__ import annotations

import asyncio
import json
import time

from backends.gvisor.httpclient import ActorHTTPError, request


async def wait_ready(
    ip: str, port: int, *, actor: str = "", generation: int = 0, timeout_s: float = 20.0
) -> None:
    """Return once the actor at ``ip:port`` answers 200 (connections are refused while
    it starts); raise :class:`ActorHTTPError` or :class:`TimeoutError` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    headers = {"X-Actormux-Actor": actor, "X-Actormux-Generation": str(generation)}
    while True:
        try:
            response = await request(
                ip, port, "GET", "/healthz", headers=headers, timeout=min(2.0, timeout_s)
            )
            if response.status == 200:
                return
        except ActorHTTPError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"actor at {ip}:{port} not ready in {timeout_s} s")
        await asyncio.sleep(0.02)


async def open_connections(ip: str, port: int, *, timeout_s: float = 2.0) -> int | None:
    """How many connections the actor still holds open besides the probe's own, as its
    ``/healthz`` says (None: it does not say, or does not answer)."""
    try:
        response = await request(ip, port, "GET", "/healthz", timeout=timeout_s)
        count = json.loads(response.body).get("connections")
    except (ActorHTTPError, ValueError, AttributeError):
        return None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


async def wait_idle(ip: str, port: int, *, timeout_s: float) -> bool:
    """Wait until the actor holds no connection open (True), or ``timeout_s`` passes or
    it cannot say (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        count = await open_connections(ip, port)
        if count == 0:
            return True
        if count is None or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
