"""The admin API of a real backend, on its own port, behind a bearer token.

List, create, show, suspend, resume, recover and delete actors; list workers (with
quarantines); reported losses; counters. ``actormux admin`` is its command line.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from backends.controlplane import ControlPlane
from backends.gvisor.names import check_actor_id, check_owner
from control.messages import ActorDeleted, ResumeRequested, SuspendRequested
from sim.engine import reliability_counters


def admin_app(backend: ControlPlane, *, token: str) -> web.Application:
    """The admin API; every call needs ``Authorization: Bearer <token>``."""

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response({"error": "missing or wrong admin token"}, status=401)
        return await handler(request)

    def actor_view(actor_id: str) -> dict[str, Any] | None:
        actor = backend.ctl.actor(actor_id)
        if actor is None:
            return None
        return {"id": actor.id, "template": actor.template, "owner": actor.owner,
                "state": str(actor.state),
                "worker": actor.worker, "snapshot_version": actor.snapshot_version,
                "generation": actor.generation, "failure": actor.failure}  # fmt: skip

    async def list_actors(req: web.Request) -> web.Response:
        return web.json_response([actor_view(a.id) for a in backend.ctl.actors()])

    async def create(req: web.Request) -> web.Response:
        try:
            spec = await req.json()
            actor, template = spec["id"], spec.get("template", "counter")
            owner = spec.get("owner", "")
            check_actor_id(actor)
            check_owner(owner)
            await backend.add_actor(actor, template, owner=owner)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            error = 'send {"id": ..., "template": ..., "owner": ...}'
            return web.json_response({"error": error}, status=400)
        except FileExistsError as e:
            return web.json_response({"error": str(e)}, status=409)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(actor_view(actor), status=201)

    async def show(req: web.Request) -> web.Response:
        view = actor_view(req.match_info["actor"])
        return (
            web.json_response(view)
            if view
            else web.json_response({"error": "unknown actor"}, status=404)
        )

    def operation(event: type[SuspendRequested | ResumeRequested | ActorDeleted]) -> Any:
        async def handler(req: web.Request) -> web.Response:
            result = backend.admin(event(req.match_info["actor"]))
            status = 200 if result.ok else (404 if result.detail == "unknown actor" else 409)
            if not result.ok and result.detail == "no free worker":
                status = 503
            return web.json_response(
                {"actor": result.actor, "ok": result.ok, "detail": result.detail}, status=status
            )

        return handler

    async def workers(req: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "id": w.id,
                    "actor": w.actor,
                    "address": backend.address(w.id)[0],
                    "quarantined": w.quarantined,
                }
                for w in backend.ctl.workers()
            ]
        )

    async def losses(req: web.Request) -> web.Response:
        return web.json_response([asdict(row) for row in backend.records.losses])

    async def recover(req: web.Request) -> web.Response:
        try:
            version = (await req.json())["version"]
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError):
            return web.json_response({"error": 'send {"version": N} (0: its template)'}, status=400)
        result = backend.recover_actor(req.match_info["actor"], version)
        status = 200 if result.ok else (404 if result.detail == "unknown actor" else 409)
        return web.json_response(
            {"actor": result.actor, "ok": result.ok, "detail": result.detail}, status=status
        )

    async def stats(req: web.Request) -> web.Response:
        counts = backend.ctl.state_counts()
        return web.json_response(
            {
                "actors": {str(k): v for k, v in counts.items()},
                "free_workers": backend.ctl.free_workers,
                "waiting_actors": backend.ctl.waiting_actors,
                "open_requests": backend.ctl.open_requests,
                "requests": len(backend.records.requests),
                "activations": len(backend.records.activations),
                "checkpoints": len(backend.records.checkpoints),
                "double_activations": backend.double_activations(),
                "quarantined_workers": backend.ctl.quarantined_workers,
                "losses": len(backend.records.losses),
                "reliability": reliability_counters(backend.ctl, {}),
            }
        )

    app = web.Application(middlewares=[auth])
    app.router.add_get("/actors", list_actors)
    app.router.add_post("/actors", create)
    app.router.add_get("/actors/{actor}", show)
    app.router.add_post("/actors/{actor}/suspend", operation(SuspendRequested))
    app.router.add_post("/actors/{actor}/resume", operation(ResumeRequested))
    app.router.add_delete("/actors/{actor}", operation(ActorDeleted))
    app.router.add_post("/actors/{actor}/recover", recover)
    app.router.add_get("/workers", workers)
    app.router.add_get("/losses", losses)
    app.router.add_get("/stats", stats)
    return app
