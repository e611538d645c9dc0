"""The worker agent's HTTP API (aiohttp).

``GET /healthz`` (no token: the agent is up, and which worker it is); with
``Authorization: Bearer <token>``: ``GET /v1/state``, ``POST /v1/activate``,
``POST /v1/checkpoint``, ``POST /v1/stop``. Orders are JSON (``api.py``); the answer
to an order is 200 with its :class:`backends.agent.api.Result` whatever the outcome
(an outcome is the controller's business, not an HTTP error). 400: a body that is not
a well-formed order; 401: no or a wrong token; 409: an operation id reused for a
different order; 413: a body over 1 MiB; 503: runsc's state could not be read whole
just now (ask again).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from backends.agent.api import BadOrder, parse_activate, parse_checkpoint, parse_stop
from backends.agent.worker import OpConflict, StateUnreadable, WorkerAgent

log = logging.getLogger("actormux.agent")
MAX_BODY = 1 << 20
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(agent: WorkerAgent, token: str) -> web.Application:
    """The API of ``agent``, guarded by ``token``."""
    if len(token) < 16:
        raise ValueError("the agent's token must have at least 16 characters")
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz":
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                return _error(401, "missing or wrong token")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {MAX_BODY} bytes")

    async def body(request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as e:
            raise BadOrder(f"the body is not JSON: {e}") from None

    def order_route(parse: Callable[[Any], Any], run: Callable[[Any], Awaitable[Any]]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                order = parse(await body(request))
            except BadOrder as e:
                return _error(400, str(e))
            try:
                result = await run(order)
            except OpConflict as e:
                return _error(409, str(e))
            return web.json_response(result.to_json())

        return handle

    async def healthz(_: web.Request) -> web.StreamResponse:
        return web.json_response({"worker": agent.w.worker_id})

    async def state(_: web.Request) -> web.StreamResponse:
        try:
            observed = await asyncio.to_thread(agent.state)  # reads runsc's state files
        except StateUnreadable as e:
            return _error(503, str(e))
        return web.json_response(observed.to_json())

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/state", state)
    app.router.add_post("/v1/activate", order_route(parse_activate, agent.activate))
    app.router.add_post("/v1/checkpoint", order_route(parse_checkpoint, agent.checkpoint))
    app.router.add_post("/v1/stop", order_route(parse_stop, agent.stop))
    return app
