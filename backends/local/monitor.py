"""An independent single-writer oracle: how many sandboxes of each actor are alive.

Run as its own process (``python -m backends.local.monitor``) beside a real backend,
it knows nothing of the driver: every ``interval`` seconds (20 Hz by default) it reads
runsc's state files under the backend's runsc root (container id -> sandbox pid) and
``/proc/<pid>/stat``, and counts, per actor, the sandboxes whose process has not
exited. Two at once is a double activation, whatever the driver believes; a
checkpointed sandbox has exited when its checkpoint returns (a zombie until reaped),
so it no longer counts. It writes one JSON line per change and a summary at the end
(SIGTERM or SIGINT): samples taken, the largest gap between samples, and every
overlap with the containers involved and when it was first and last seen.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backends.gvisor.runsc import process_alive

_CONTAINER = re.compile(r"^(?P<actor>[a-z0-9-]+)_g(?P<generation>\d+)_i(?P<instance>\d+)$")


@dataclass
class Overlap:
    """An actor with more than one live sandbox, over consecutive samples."""

    actor: str
    containers: list[str]
    first_s: float
    last_s: float


@dataclass
class MonitorReport:
    """What the monitor saw."""

    samples: int = 0
    duration_s: float = 0.0
    max_gap_s: float = 0.0
    gaps_over_100ms: int = 0  # sampling intervals longer than 0.1 s (below 10 Hz)
    sandboxes_seen: int = 0
    overlaps: list[Overlap] = field(default_factory=list)

    @property
    def double_activations(self) -> int:
        """Episodes in which an actor had two or more live sandboxes."""
        return len(self.overlaps)


class Sampler:
    """Reads the live sandboxes of one backend instance; state files are parsed once
    per change (their mtime), so a sample costs a directory listing and a few stats."""

    def __init__(self, root: Path, instance: int) -> None:
        self.root = root
        self.instance = instance
        self._pids: dict[Path, tuple[float, str, int | None]] = {}

    def sample(self) -> dict[str, list[str]]:
        """Actor -> ids of its sandboxes whose process has not exited."""
        alive: dict[str, list[str]] = {}
        seen = set()
        for path in self.root.glob("*_sandbox:*.state"):
            seen.add(path)
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            cached = self._pids.get(path)
            if cached is None or cached[0] != mtime:
                cached = self._read(path, mtime)
                if cached is None:
                    continue
                self._pids[path] = cached
            _, cid, pid = cached
            match = _CONTAINER.fullmatch(cid)
            if match and int(match["instance"]) == self.instance and pid and process_alive(pid):
                alive.setdefault(match["actor"], []).append(cid)
        for gone in set(self._pids) - seen:
            del self._pids[gone]
        return alive

    @staticmethod
    def _read(path: Path, mtime: float) -> tuple[float, str, int | None] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # being rewritten: read it next time
        pid = data.get("sandbox", {}).get("pid")
        return mtime, str(data.get("id", "")), pid if isinstance(pid, int) and pid > 0 else None


def watch(sampler: Sampler, interval_s: float, out: Any, stop: Any) -> MonitorReport:
    """Sample until ``stop()`` is true; write changes to ``out``; return the report."""
    report = MonitorReport()
    started = last = time.monotonic()
    previous: dict[str, list[str]] = {}
    open_overlaps: dict[str, Overlap] = {}
    everything: set[str] = set()
    while not stop():
        now = time.monotonic()
        current = sampler.sample()
        report.samples += 1
        report.max_gap_s = max(report.max_gap_s, now - last)
        report.gaps_over_100ms += now - last > 0.1
        last = now
        t = round(now - started, 3)
        for actor in set(previous) | set(current):
            if sorted(previous.get(actor, [])) != sorted(current.get(actor, [])):
                out.write(json.dumps({"t_s": t, "actor": actor, "alive": current.get(actor, [])}))
                out.write("\n")
        for actor, containers in current.items():
            everything.update(containers)
            if len(containers) > 1:
                overlap = open_overlaps.get(actor)
                if overlap is None:
                    overlap = Overlap(actor, sorted(containers), t, t)
                    open_overlaps[actor] = overlap
                    report.overlaps.append(overlap)
                overlap.last_s = t
                overlap.containers = sorted(set(overlap.containers) | set(containers))
        for actor in list(open_overlaps):
            if len(current.get(actor, [])) < 2:
                del open_overlaps[actor]
        previous = current
        time.sleep(max(0.0, interval_s - (time.monotonic() - now)))
    report.duration_s = round(time.monotonic() - started, 3)
    report.max_gap_s = round(report.max_gap_s, 4)
    report.sandboxes_seen = len(everything)
    return report


def read_report(path: Path) -> MonitorReport:
    """The summary a monitor wrote at the end of ``path``."""
    lines = path.read_text().splitlines()
    summary = json.loads(lines[-1])["summary"]
    overlaps = [Overlap(**o) for o in summary.pop("overlaps")]
    summary.pop("double_activations", None)
    return MonitorReport(**summary, overlaps=overlaps)


class MonitorProcess:
    """The monitor, run beside a backend for the length of an experiment."""

    def __init__(self, root: Path, instance: int, out: Path, interval_s: float = 0.05) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backends.local.monitor", "--root", str(root),
             "--instance", str(instance), "--interval", str(interval_s), "--out", str(out)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "monitoring":
            raise RuntimeError("the double-activation monitor did not start")

    def stop(self) -> MonitorReport:
        """Stop sampling and return what it saw."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        return read_report(self.out)


def main(argv: list[str] | None = None) -> int:
    """``python -m backends.local.monitor --root R --instance N --out FILE``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the backend's runsc root")
    parser.add_argument("--instance", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between samples")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # Not starved by the sandboxes it watches: the lowest real-time priority (it sleeps
    # nearly all the time), as root; otherwise it runs as it is.
    with contextlib.suppress(PermissionError, OSError):
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
    with args.out.open("w") as out:
        print("monitoring", flush=True)
        report = watch(Sampler(args.root, args.instance), args.interval, out, lambda: stopping)
        summary = {**asdict(report), "double_activations": report.double_activations}
        out.write(json.dumps({"summary": summary}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
