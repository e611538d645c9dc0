"""What a control plane calls to give a worker agent orders (aiohttp).

An order whose answer is lost (the connection fails, the agent restarts) is sent
again with the same operation id until an answer comes or ``give_up_s`` passes: the
agent carries each operation out once, so a retry can never start a second sandbox or
write a second snapshot. A 4xx answer is the caller's mistake and raises
:class:`AgentRefused` at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import aiohttp

from backends.agent.api import (
    Activate,
    AgentState,
    Checkpoint,
    Order,
    Result,
    Stop,
    order_json,
)
from control.messages import ObservedSandbox

log = logging.getLogger("actormux.agent.client")


class AgentRefused(RuntimeError):  # noqa: N818 - a verdict, not retried
    """The agent refused an order as malformed, unauthorised or conflicting."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"agent refused the order ({status}): {message}")
        self.status = status


class AgentUnreachable(ConnectionError):  # noqa: N818
    """No answer from the agent within ``give_up_s``."""


class AgentClient:
    """Orders to the agent at ``base_url`` (``http://host:port``)."""

    def __init__(
        self, base_url: str, token: str, *, give_up_s: float = 60.0, order_timeout_s: float = 120.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.give_up_s = give_up_s
        self.retries = 0
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=order_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        deadline = time.monotonic() + self.give_up_s
        delay = 0.05
        while True:
            try:
                async with self._client().request(method, self.base_url + path, json=body) as r:
                    data = await r.json(content_type=None)
                    if 400 <= r.status < 500:
                        raise AgentRefused(r.status, str((data or {}).get("error", data)))
                    r.raise_for_status()
                    return data
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                if time.monotonic() + delay > deadline:
                    raise AgentUnreachable(f"{self.base_url}{path}: {e}") from e
                self.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def order(self, order: Order) -> Result:
        """Send ``order`` (again, until answered) and return the agent's answer."""
        path = {Activate: "/v1/activate", Checkpoint: "/v1/checkpoint", Stop: "/v1/stop"}
        return Result.from_json(await self._call("POST", path[type(order)], order_json(order)))

    async def state(self) -> AgentState:
        """What the agent observes."""
        return AgentState.from_json(await self._call("GET", "/v1/state"))

    async def healthy(self) -> bool:
        """Whether the agent answers its health check now (no retries)."""
        try:
            async with self._client().get(self.base_url + "/healthz") as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


async def observe_agents(
    agents: Sequence[tuple[str, AgentClient]],
) -> tuple[ObservedSandbox, ...] | None:
    """What each ``(worker, agent)`` says runs on its worker, as the controller's
    observations; None if any agent cannot say (a partial picture would mislead the
    controller's reconciliation)."""
    try:
        states = await asyncio.gather(*(client.state() for _, client in agents))
    except (AgentUnreachable, AgentRefused) as e:
        log.warning("observed state skipped: %s", e)
        return None
    return tuple(
        ObservedSandbox(view.actor, worker, view.generation)
        for (worker, _), state in zip(agents, states, strict=True)
        for view in state.sandboxes
    )
