"""``python -m backends.kube``: the control plane on a cluster (the control plane image's
command; see ``backends/kube/manifests``).

It waits to lead (Lease), then serves the router (actors as ``Host: <actor>.<domain>``)
and the admin API until SIGTERM, when it checkpoints its running actors and gives the
Lease up. Settings come from flags or the environment (``ACTORMUX_*``), as a pod spec
gives them. Exit status 3: it was deposed (another control plane leads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from backends.admin import admin_app
from backends.config import read_token
from backends.kube.backend import KubeBackend, KubeSettings
from backends.local.router import Router, RouterLimits
from control.controller import Controller
from control.policies import EvictThenWait, Lazy, LruPlacement
from control.recovery import RecoverySettings

log = logging.getLogger("actormux.kube.main")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m backends.kube", description=__doc__)
    parser.add_argument("--namespace", default=env("ACTORMUX_NAMESPACE", "actormux"))
    parser.add_argument(
        "--identity",
        default=env("POD_NAME") or os.uname().nodename,
        help="this control plane's name on the Lease (default: $POD_NAME)",
    )
    parser.add_argument("--redis-url", default=env("ACTORMUX_REDIS_URL"))
    parser.add_argument(
        "--snapshots",
        default=env("ACTORMUX_SNAPSHOTS"),
        help="snapshot root URI: s3://bucket/prefix or gs://bucket/prefix",
    )
    parser.add_argument(
        "--storage-options",
        type=json.loads,
        default=json.loads(env("ACTORMUX_STORAGE_OPTIONS", "{}")),
    )
    parser.add_argument(
        "--agent-token-file",
        type=Path,
        default=Path(env("ACTORMUX_AGENT_TOKEN_FILE", "/var/run/actormux/agent-token/token")),
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        default=Path(env("ACTORMUX_ADMIN_TOKEN_FILE", "/var/run/actormux/admin-token/token")),
    )
    parser.add_argument("--statefulset", default=env("ACTORMUX_STATEFULSET", "actormux-worker"))
    parser.add_argument("--listen", default=env("ACTORMUX_LISTEN", "0.0.0.0:8000"))
    parser.add_argument("--admin-listen", default=env("ACTORMUX_ADMIN_LISTEN", "0.0.0.0:8001"))
    parser.add_argument("--actor-domain", default=env("ACTORMUX_ACTOR_DOMAIN", "actors.local"))
    parser.add_argument(
        "--api-host",
        default=env("ACTORMUX_API_HOST"),
        help="Kubernetes API address (default: in-cluster, else kubeconfig)",
    )
    parser.add_argument("--queue-timeout-s", type=float, default=20.0)
    args = parser.parse_args(argv)  # fmt: skip
    missing = [name for name in ("redis_url", "snapshots") if not getattr(args, name)]
    if missing:
        parser.error(f"missing: {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return args


def _read_token(path: Path, what: str) -> str:
    try:
        return read_token(path, f"{what} token")
    except ValueError as e:
        raise SystemExit(str(e)) from None


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "0.0.0.0", int(port)


async def _serve(args: argparse.Namespace) -> int:
    settings = KubeSettings(
        namespace=args.namespace, identity=args.identity, redis_url=args.redis_url,
        snapshots=args.snapshots, agent_token=_read_token(args.agent_token_file, "agent"),
        api_host=args.api_host, statefulset=args.statefulset,
        storage_options=args.storage_options,
    )  # fmt: skip
    controller = Controller(
        LruPlacement(), Lazy(), EvictThenWait(args.queue_timeout_s), router_timeout_s=30.0,
        recovery=RecoverySettings(forward_deadline_s=settings.request_timeout_s + 30.0),
    )  # fmt: skip
    backend = KubeBackend(settings, controller)
    router = Router(backend, domain=args.actor_domain, limits=RouterLimits())
    admin = web.AppRunner(
        admin_app(backend, token=_read_token(args.admin_token_file, "admin")), access_log=None
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        log.info("%s waiting to lead", settings.identity)
        await backend.prepare()
        backend.open()
        host, port = _host_port(args.listen)
        await router.start(port, host=host)
        await admin.setup()
        await web.TCPSite(admin, *_host_port(args.admin_listen)).start()
        log.info("%s leads; router on %s, admin on %s", settings.identity, args.listen,
                 args.admin_listen)  # fmt: skip
        deposed = asyncio.ensure_future(backend.deposed.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({deposed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await router.close()
        await admin.cleanup()
        await backend.close(save=not backend.deposed.is_set())
    return 3 if backend.deposed.is_set() else 0


def main(argv: list[str] | None = None) -> None:
    """Run the control plane until SIGTERM (0) or until deposed (3)."""
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    sys.exit(asyncio.run(_serve(args)))


if __name__ == "__main__":
    main()
