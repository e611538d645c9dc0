"""A throwaway Ray cluster on this machine, for the Ray launcher's test and benchmark.

Ray binds its services to every address the machine has, so the head runs in a network
namespace of its own (only loopback up in it), and whatever talks to it (a sweep) runs
there too (:func:`in_netns`). The head is ``ray start --head --block``: stopped by its
process id it stops what it started; anything still running with the cluster's temp
directory in its command line is then killed by process id, never by name, and the
namespace deleted by its name. Needs root, ``ip`` (iproute2) and Ray (the Ray venv,
``make test-ray``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # nothing leaves
PORT = 6379


@dataclass(frozen=True)
class RayCluster:
    """Where the cluster is: its namespace and the head's address inside it."""

    netns: str
    address: str


def in_netns(netns: str, command: list[str]) -> list[str]:
    """``command`` run inside ``netns``."""
    return ["ip", "netns", "exec", netns, *command]


def processes_mentioning(text: str) -> list[int]:
    """Ids of the processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@contextmanager
def ray_cluster(ray_bin: Path, *, cpus: int = 2, name: str | None = None) -> Iterator[RayCluster]:
    """Start a Ray head with ``cpus`` CPUs in a new network namespace; stop it after.
    Raises RuntimeError if it does not come up or leaves processes behind."""
    name = name or f"actormux-ray-{os.getpid()}"
    temp = Path(f"/tmp/{name}")  # short: Ray's sockets live under it
    env = {**os.environ, **RAY_ENV}
    subprocess.run(["ip", "netns", "add", name], check=True)
    head = None
    try:
        subprocess.run(in_netns(name, ["ip", "link", "set", "lo", "up"]), check=True)
        head = subprocess.Popen(
            in_netns(name, [str(ray_bin), "start", "--head", "--block",
                            "--node-ip-address=127.0.0.1", f"--port={PORT}",
                            f"--num-cpus={cpus}", "--include-dashboard=false",
                            "--disable-usage-stats", f"--temp-dir={temp}"]),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            status = subprocess.run(
                in_netns(name, [str(ray_bin), "status", f"--address=127.0.0.1:{PORT}"]),
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if status.returncode == 0:
                break
            if head.poll() is not None:
                said = head.stderr.read() if head.stderr is not None else ""
                raise RuntimeError(f"the Ray head exited: {said[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray did not come up: {status.stderr[-2000:]}")
            time.sleep(1)
        yield RayCluster(name, f"127.0.0.1:{PORT}")
    finally:
        left = _stop(head, temp)
        subprocess.run(["ip", "netns", "del", name], check=False)
        if left:
            raise RuntimeError(f"Ray processes were left behind and killed: {left}")


def _stop(head: subprocess.Popen[str] | None, temp: Path) -> list[int]:
    """Stop the head (it stops what it started); kill by id what is left; say what was."""
    if head is not None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
    deadline = time.monotonic() + 30
    while (left := processes_mentioning(str(temp))) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)
    return left
