"""``actormux cleanup`` and ``actormux admin``: operating the local backend."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

RUN_BASE = Path("/run/actormux")


def cleanup_main(argv: list[str]) -> int:
    """Remove every sandbox, namespace and run directory actormux created."""
    parser = argparse.ArgumentParser(
        prog="actormux cleanup",
        description="Remove every gVisor sandbox, network namespace, veth, firewall table "
        "and run directory the local backend created (also after a crash). Sandboxes that "
        "still run are first checkpointed into their state dir, as a restarted serve would. "
        "Snapshots and the state database are kept unless --purge-state names their "
        "directory. Refuses while a serve runs on the instance.",
    )
    parser.add_argument("--instance", type=int, help="only this backend instance (default: all)")
    parser.add_argument(
        "--purge-state", type=Path, help="also delete this state directory (an actormux one)"
    )
    parser.add_argument(
        "--discard",
        action="store_true",
        help="kill running sandboxes without saving them (their acknowledged state is lost)",
    )
    args = parser.parse_args(argv)
    from backends.local.cleanup import CleanupRefused, cleanup, leftovers
    from backends.local.lock import InstanceBusy

    try:
        report = cleanup(args.instance, purge_state=args.purge_state, discard=args.discard)
    except (CleanupRefused, InstanceBusy) as e:
        print(f"actormux cleanup: {e}", file=sys.stderr)
        return 2
    print(report)
    left = leftovers(args.instance)
    if left:
        print("still present:", ", ".join(left), file=sys.stderr)
        return 1
    return 0


def _call(url: str, token: str, method: str, path: str, body: dict[str, Any] | None) -> int:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    except urllib.error.URLError as e:
        print(f"actormux admin: cannot reach {url}: {e.reason} (is `actormux serve` running?)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        print(json.dumps(json.loads(payload), indent=2))
    except ValueError:
        print(payload.decode(errors="replace"))
    return 0 if status < 400 else 1


def admin_main(argv: list[str]) -> int:
    """Talk to a running ``actormux serve``'s admin API."""
    parser = argparse.ArgumentParser(
        prog="actormux admin", description="Operate the actors of a running `actormux serve`."
    )
    parser.add_argument("--url", default="http://127.0.0.1:8001", help="the admin API")
    parser.add_argument("--token", help="admin token (default: read from the run directory)")
    parser.add_argument("--instance", type=int, default=0, help="backend instance (for the token)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="all actors and their states")
    sub.add_parser("workers", help="workers and the actor on each")
    sub.add_parser("stats", help="counters")
    sub.add_parser("losses", help="reported losses: what acknowledged state is gone, and why")
    create = sub.add_parser("create", help="create an actor")
    create.add_argument("actor")
    create.add_argument(
        "--template",
        default="counter",
        help="counter, agent or agent-<MiB> (one per backend.agent_state_mb); default counter",
    )
    create.add_argument("--owner", default="", help="its tenant, for per-caller budgets")
    for name in ("show", "suspend", "resume", "delete"):
        sub.add_parser(name, help=f"{name} an actor").add_argument("actor")
    recover = sub.add_parser(
        "recover", help="let a failed actor go on from an older snapshot (the loss is recorded)"
    )
    recover.add_argument("actor")
    recover.add_argument(
        "--version", type=int, required=True, help="snapshot version (0: template)"
    )
    args = parser.parse_args(argv)
    token = args.token
    if token is None:
        path = RUN_BASE / str(args.instance) / "admin_token"
        try:
            token = path.read_text().strip()
        except OSError:
            print(f"actormux admin: no --token and cannot read {path}", file=sys.stderr)
            return 2
    routes: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "list": ("GET", "/actors", None),
        "workers": ("GET", "/workers", None),
        "stats": ("GET", "/stats", None),
        "losses": ("GET", "/losses", None),
    }
    if args.command in routes:
        method, path, body = routes[args.command]
    elif args.command == "create":
        body = {"id": args.actor, "template": args.template, "owner": args.owner}
        method, path = "POST", "/actors"
    elif args.command == "show":
        method, path, body = "GET", f"/actors/{args.actor}", None
    elif args.command == "delete":
        method, path, body = "DELETE", f"/actors/{args.actor}", None
    elif args.command == "recover":
        method, path, body = "POST", f"/actors/{args.actor}/recover", {"version": args.version}
    else:
        method, path, body = "POST", f"/actors/{args.actor}/{args.command}", None
    return _call(args.url, token, method, path, body)
