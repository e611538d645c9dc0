"""The readiness probe: wait until an actor answers ``GET /healthz``, telling it which
actor and activation (generation) it now is (the template's server stamps both on
every response, so a client can see a fork)."""

from __future__ import annotations

import asyncio
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
