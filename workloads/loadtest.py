"""Run the Locust side of a workload plan in its own process and collect its records.

Locust monkey-patches the standard library with gevent when imported, so it never
runs inside the caller's process: ``run_locust`` saves the plan, starts
``python -m locust`` on ``workloads/locustfile.py`` headless, waits, and reads the
per-request records it wrote. Only loopback endpoints are accepted: actormux's load
never leaves the machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from workloads.plan import Plan

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def check_loopback(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is http(s) to localhost or a loopback address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"locust.host: expected http://127.0.0.1:PORT, got {url!r}")
    if parts.hostname == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"locust.host: {parts.hostname} is not a loopback address; actormux only sends "
            "load to this machine (127.0.0.0/8, ::1, localhost)"
        )


@dataclass
class LocustRun:
    """What a Locust run produced."""

    records: pd.DataFrame  # per request, the schema of control/metrics.py
    t0_unix: float  # when the test started (plan time 0)
    returncode: int
    output: str  # Locust's stdout and stderr


def run_locust(
    plan: Plan,
    host: str,
    out_dir: Path,
    *,
    actor_domain: str = "actors.local",
    request_path: str = "/",
    request_timeout_s: float = 30.0,
) -> LocustRun:
    """Play ``plan`` against ``host`` with Locust, headless; files go to ``out_dir``."""
    check_loopback(host)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan_path = out_dir / "plan.npz"
    records = out_dir / "locust_requests.parquet"
    plan.save(plan_path)
    env = {
        **os.environ,
        "ACTORMUX_PLAN": str(plan_path),
        "ACTORMUX_RECORDS": str(records),
        "ACTORMUX_ACTOR_DOMAIN": actor_domain,
        "ACTORMUX_REQUEST_PATH": request_path,
        "ACTORMUX_REQUEST_TIMEOUT_S": str(request_timeout_s),
    }
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=plan.duration_s + request_timeout_s + 120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if not records.exists():
        raise RuntimeError(f"Locust wrote no records (exit {proc.returncode}):\n{output[-3000:]}")
    meta = json.loads(records.with_suffix(".json").read_text())
    return LocustRun(pd.read_parquet(records), float(meta["t0_unix"]), proc.returncode, output)
