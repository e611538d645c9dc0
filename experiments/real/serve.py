"""``actormux serve backend=local|kind|gke [overrides]``: the control plane and router,
until Ctrl-C.

Runs the configured policies on ``cluster.workers`` real gVisor workers; the router
listens on 127.0.0.1:``backend.port`` (actors as ``Host: <actor>.actors.local``) and
the admin API on 127.0.0.1:``backend.admin_port`` (``actormux admin --help``).
``backend=local``: state (SQLite, snapshots) lives in ``backend.state_dir`` and survives
restarts. ``backend=kind|gke``: state is in the cluster's Redis and object store, and
the Lease decides who leads (see ``backends/kube/settings.py`` for where it must run).
Ctrl-C or SIGTERM checkpoints every running actor and lets go of the workers.
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
from backends.config import read_token
from backends.local.db import StateDBError
from backends.local.lock import InstanceBusy
from backends.local.router import Router
from backends.local.settings import LocalConfig
from backends.local.statedir import NotAStateDir
from backends.protocol import Deployment
from backends.state import Deposed
from experiments.app import CONF_DIR, build_or_exit
from experiments.real.deployments import deployment_or_exit
from experiments.runs.build import RunSpec


def admin_token(deployment: Deployment) -> tuple[str, str]:
    """The admin API's token and where it is: the configured one, a cluster's token
    file, or one generated into ``<run dir>/admin_token`` (0600)."""
    if not isinstance(deployment, LocalConfig):
        from backends.kube.settings import KubeConfig

        assert isinstance(deployment, KubeConfig)
        path = deployment.admin_token_file
        return read_token(path, "backend.admin_token_file"), str(path)
    lc = deployment
    if lc.admin_token:
        return lc.admin_token, "as configured"
    path = lc.settings.runtime_dir / "admin_token"
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, str(path)


async def start_site(app: web.Application, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    """Serve ``app`` on ``host:port`` (loopback unless a pod's deployment says so)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def serve(spec: RunSpec, deployment: Deployment) -> None:
    """Run until SIGINT or SIGTERM (or, on a cluster, until deposed), then save running
    actors and let go."""
    backend = deployment.make_backend(spec.make_controller(deployment.recovery(spec.recovery)))
    runners: list[web.AppRunner] = []
    router = Router(backend, domain=deployment.actor_domain, limits=deployment.router)
    try:
        try:
            token, token_at = admin_token(deployment)
            await backend.prepare()
        except (InstanceBusy, NotAStateDir, StateDBError, Deposed, TimeoutError, OSError,
                ValueError, RuntimeError) as e:  # fmt: skip
            print(f"actormux serve: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        backend.open()
        host = deployment.listen_host
        await router.start(deployment.port, host=host)
        admin = admin_app(backend, token=token)
        runners.append(await start_site(admin, deployment.admin_port, host))
        print(f"router: http://{host}:{deployment.port}  (Host: <actor>.{deployment.actor_domain})")
        print(f"admin:  http://{host}:{deployment.admin_port}  (token: {token_at})")
        print(
            f"backend={deployment.name}: {len(backend.ctl.workers())} workers so far, "
            f"{len(backend.ctl.actors())} actors; Ctrl-C to stop",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ended = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(backend.deposed.wait())]
        await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
        for waiter in ended:
            waiter.cancel()
        if backend.deposed.is_set():
            print("deposed: another control plane leads; stopping without saving", flush=True)
        else:
            print("stopping: checkpointing running actors ...", flush=True)
    finally:
        await router.close()
        for runner in runners:
            await runner.cleanup()
        await backend.close(save=not backend.deposed.is_set())
    if isinstance(deployment, LocalConfig):
        print("stopped; state kept in", deployment.settings.state_dir)
    else:
        print("stopped")
    if backend.deposed.is_set():
        raise SystemExit(3)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_serve(cfg: DictConfig) -> None:
    """The ``actormux serve`` Hydra app."""
    spec = build_or_exit(cfg)
    if spec.backend == "sim":
        print("actormux serve: needs a real backend (backend=local, kind or gke)", file=sys.stderr)
        sys.exit(2)
    asyncio.run(serve(spec, deployment_or_exit(cfg, spec, command="actormux serve")))
