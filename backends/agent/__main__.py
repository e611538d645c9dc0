"""``python -m backends.agent``: run one worker agent (root, runsc).

Example (worker 3 of backend instance 0, its namespace created by the agent)::

    python -m backends.agent --instance 0 --worker 3 --listen 127.0.0.1:9103 \\
        --runtime-dir /run/actormux/0/agent-w3 --token-file /run/actormux/0/agent.token

The token is read from ``--token-file`` or the ``ACTORMUX_AGENT_TOKEN`` environment
variable. fsspec options per protocol (an S3 endpoint, say) come as JSON in
``--storage-options``, e.g. ``{"s3": {"endpoint_url": "http://127.0.0.1:9000"}}``.
It prints one line ``agent <worker> listening on http://HOST:PORT`` when it serves, and
on SIGTERM or SIGINT removes its sandboxes and (if it made it) its namespace.
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

from backends.agent.forward import Forwarder
from backends.agent.server import make_app
from backends.agent.worker import AgentSettings, WorkerAgent
from backends.gvisor.catalog import default_templates
from backends.gvisor.names import WorkerNames


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backends.agent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--instance", type=int, default=0, help="backend instance (0-49)")
    parser.add_argument("--worker", type=int, required=True, help="worker index")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    parser.add_argument("--runtime-dir", type=Path, required=True)
    parser.add_argument("--runsc-root", type=Path, help="runsc's state (default: in runtime dir)")
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--python", default="/usr/bin/python3", help="the actors' Python")
    parser.add_argument("--actor-port", type=int, default=8080)
    parser.add_argument("--agent-state-mb", type=int, nargs="+", default=[16])
    parser.add_argument("--activation-timeout-s", type=float, default=20.0)
    parser.add_argument(
        "--forward-listen",
        help="HOST:PORT to forward to the worker's actor (actor traffic through the agent)",
    )
    parser.add_argument(
        "--no-netns",
        action="store_true",
        help="use the worker's existing namespace; do not create or remove it",
    )
    parser.add_argument("--storage-options", type=json.loads, default={})
    parser.add_argument("--runsc", default="runsc")
    return parser.parse_args(argv)


def _token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        text: str = args.token_file.read_text()
        return text.strip()
    token: str = os.environ.get("ACTORMUX_AGENT_TOKEN", "")
    if not token:
        raise SystemExit("give the agent's token: --token-file or ACTORMUX_AGENT_TOKEN")
    return token


async def _serve(args: argparse.Namespace) -> None:
    host, _, port = args.listen.rpartition(":")
    settings = AgentSettings(
        worker=WorkerNames(args.instance, args.worker),
        runtime_dir=args.runtime_dir,
        runsc_root=args.runsc_root,
        templates=default_templates(args.python, args.actor_port, args.agent_state_mb),
        actor_port=args.actor_port,
        activation_timeout_s=args.activation_timeout_s,
        manage_netns=not args.no_netns,
        storage_options=args.storage_options,
        runsc=args.runsc,
    )
    agent = WorkerAgent(settings)
    app = make_app(agent, _token(args))
    await agent.start()
    forwarder = None
    if args.forward_listen:
        forward_host, _, forward_port = args.forward_listen.rpartition(":")
        forwarder = Forwarder((agent.w.actor_ip, args.actor_port))
        bound_host, bound_port = await forwarder.start(forward_host or "127.0.0.1",
                                                       int(forward_port))  # fmt: skip
        agent.forward_address = f"{bound_host}:{bound_port}"
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    bound = runner.addresses[0]
    print(f"agent {agent.w.worker_id} listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        if forwarder is not None:
            await forwarder.close()
        await agent.close()


def main(argv: list[str] | None = None) -> None:
    """Run an agent until SIGTERM or SIGINT."""
    args = _arguments(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )  # fmt: skip
    try:
        asyncio.run(_serve(args))
    except ValueError as e:  # a bad setting (worker index, token): say which, no traceback
        raise SystemExit(f"agent: {e}") from None


if __name__ == "__main__":
    main()
