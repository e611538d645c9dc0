"""``actormux serve backend=local [overrides]``: the control plane and router, until Ctrl-C.

Runs the configured policies on ``cluster.workers`` real gVisor worker slots; the
router listens on 127.0.0.1:``backend.port`` (actors as ``Host: <actor>.actors.local``)
and the admin API on 127.0.0.1:``backend.admin_port`` (``actormux admin --help``).
State (SQLite, snapshots) lives in ``backend.state_dir`` and survives restarts. Ctrl-C
or SIGTERM checkpoints every running actor and removes the namespaces.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys

import hydra
from aiohttp import web
from omegaconf import DictConfig

from backends.admin import admin_app
from backends.local.db import StateDBError
from backends.local.lock import InstanceBusy
from backends.local.router import Router
from backends.local.settings import LocalConfig
from backends.local.statedir import NotAStateDir
from experiments.app import CONF_DIR, build_or_exit, local_config_or_exit
from experiments.build import RunSpec


def admin_token(lc: LocalConfig) -> str:
    """The configured token, or one generated into ``<run dir>/admin_token`` (0600)."""
    if lc.admin_token:
        return lc.admin_token
    path = lc.settings.runtime_dir / "admin_token"
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


async def start_site(app: web.Application, port: int) -> web.AppRunner:
    """Serve ``app`` on 127.0.0.1:``port``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def serve(spec: RunSpec, lc: LocalConfig) -> None:
    """Run until SIGINT or SIGTERM, then save running actors and tear down."""
    backend = lc.make_backend(spec.make_controller(lc.recovery(spec.recovery)))
    runners: list[web.AppRunner] = []
    router = Router(backend, domain=lc.actor_domain, limits=lc.router)
    try:
        try:
            await backend.prepare()
        except (InstanceBusy, NotAStateDir, StateDBError) as e:
            print(f"actormux serve: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        backend.open()
        token = admin_token(lc)
        await router.start(lc.port)
        runners.append(await start_site(admin_app(backend, token=token), lc.admin_port))
        print(f"router: http://127.0.0.1:{lc.port}  (Host: <actor>.{lc.actor_domain})")
        print(
            f"admin:  http://127.0.0.1:{lc.admin_port}  (token: "
            f"{lc.settings.runtime_dir / 'admin_token' if not lc.admin_token else 'as configured'})"
        )
        print(
            f"{len(backend.workers)} workers, {len(backend.ctl.actors())} actors, "
            f"state in {lc.settings.state_dir}; Ctrl-C to stop",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("stopping: checkpointing running actors ...", flush=True)
    finally:
        await router.close()
        for runner in runners:
            await runner.cleanup()
        await backend.close(save=True)
    print("stopped; state kept in", lc.settings.state_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_serve(cfg: DictConfig) -> None:
    """The ``actormux serve`` Hydra app."""
    spec = build_or_exit(cfg)
    if spec.backend != "local":
        print("actormux serve: needs backend=local", file=sys.stderr)
        sys.exit(2)
    lc = local_config_or_exit(cfg, spec)
    asyncio.run(serve(spec, lc))
