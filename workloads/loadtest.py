"""Run the Locust side of a workload plan (or closed-loop session scripts) in its own
process and collect its records.

Locust monkey-patches the standard library with gevent when imported, so it never
runs inside the caller's process: ``run_locust`` saves the plan or the scripts, starts
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
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from control.metrics import REQUEST_COLUMNS
from workloads.plan import Plan
from workloads.sessions import Scripts

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
    client: dict[str, int] | None = None  # closed loop: retries, gave_up, turns_cut
    calls_path: Path | None = None  # closed loop: every call, as JSON lines


class LocustProcess:
    """Locust playing a plan in its own process (see :func:`start_locust`)."""

    def __init__(self, proc: subprocess.Popen[str], out_dir: Path, timeout_s: float) -> None:
        self.proc = proc
        self.out_dir = out_dir
        self.timeout_s = timeout_s
        self.records_path = out_dir / "locust_requests.parquet"
        self.stream_path = out_dir / "locust_requests.jsonl"

    def kill(self) -> None:
        """kill -9 (what it saw acknowledged so far stays in the stream file)."""
        self.proc.kill()
        self.proc.wait()

    def streamed(self) -> pd.DataFrame:
        """Every record written so far, also after a crash (the schema of the requests
        table; a line cut by a crash is skipped)."""
        rows = []
        if self.stream_path.exists():
            for line in self.stream_path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
        return pd.DataFrame(rows, columns=list(REQUEST_COLUMNS))

    def wait(self) -> LocustRun:
        """Wait for the end of the plan and return the records Locust wrote."""
        try:
            output, _ = self.proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        if not self.records_path.exists():
            raise RuntimeError(
                f"Locust wrote no records (exit {self.proc.returncode}):\n{output[-3000:]}"
            )
        meta = json.loads(self.records_path.with_suffix(".json").read_text())
        calls = self.out_dir / "locust_calls.jsonl"
        return LocustRun(
            pd.read_parquet(self.records_path), float(meta["t0_unix"]), self.proc.returncode,
            output, meta.get("client"), calls if calls.exists() else None,
        )  # fmt: skip


def start_locust(
    plan: Plan | Scripts,
    host: str,
    out_dir: Path,
    *,
    actor_domain: str = "actors.local",
    request_path: str = "/",
    request_timeout_s: float = 30.0,
    start_at_s: float = 0.0,
) -> LocustProcess:
    """Start Locust playing ``plan`` against ``host`` (from plan time ``start_at_s``);
    closed loop when ``plan`` is :class:`Scripts` (from the start only)."""
    check_loopback(host)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(plan, Scripts):
        if start_at_s:
            raise ValueError("closed-loop sessions are played from the start only")
        source = {
            "ACTORMUX_SCRIPTS": str(out_dir / "scripts.npz"),
            "ACTORMUX_CALLS_LOG": str(out_dir / "locust_calls.jsonl"),
        }
        plan.save(out_dir / "scripts.npz")
    else:
        source = {"ACTORMUX_PLAN": str(out_dir / "plan.npz")}
        plan.save(out_dir / "plan.npz")
    sources = ("ACTORMUX_PLAN", "ACTORMUX_SCRIPTS", "ACTORMUX_CALLS_LOG")
    inherited = {k: v for k, v in os.environ.items() if k not in sources}
    env = {
        **inherited,
        **source,
        "ACTORMUX_RECORDS": str(out_dir / "locust_requests.parquet"),
        "ACTORMUX_RECORDS_STREAM": str(out_dir / "locust_requests.jsonl"),
        "ACTORMUX_ACTOR_DOMAIN": actor_domain,
        "ACTORMUX_REQUEST_PATH": request_path,
        "ACTORMUX_REQUEST_TIMEOUT_S": str(request_timeout_s),
        "ACTORMUX_PLAN_START_S": repr(float(start_at_s)),
    }
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5",
        "--exit-code-on-error", "0",  # failed requests are measurements, not Locust's errors
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    timeout = plan.duration_s - start_at_s + request_timeout_s + 120
    return LocustProcess(proc, out_dir, timeout)


def run_locust(plan: Plan | Scripts, host: str, out_dir: Path, **options: Any) -> LocustRun:
    """Play ``plan`` against ``host`` with Locust, headless, to the end; files go to
    ``out_dir``; ``options`` as for :func:`start_locust`."""
    return start_locust(plan, host, out_dir, **options).wait()
