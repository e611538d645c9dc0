"""The double-activation oracle's logic against real processes: state files in runsc's
format name them, and the monitor must count only the ones that have not exited."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.local.monitor import Sampler, read_report, watch

pytestmark = pytest.mark.real  # starts servers or processes: run one at a time


def state_file(root: Path, cid: str, pid: int) -> None:
    """What runsc writes for container ``cid`` (the fields the monitor reads)."""
    data = {"id": cid, "sandbox": {"pid": pid}, "spec": {}}
    (root / f"{cid}_sandbox:{cid}.state").write_text(json.dumps(data))


def test_two_live_sandboxes_of_one_actor_are_an_overlap_and_a_zombie_is_not(tmp_path):
    first = subprocess.Popen(["sleep", "30"])
    second = subprocess.Popen(["sleep", "30"])
    other = subprocess.Popen(["sleep", "30"])
    try:
        state_file(tmp_path, "a1_g1_i7", first.pid)
        state_file(tmp_path, "b1_g4_i7", other.pid)
        state_file(tmp_path, "a1_g9_i3", other.pid)  # another instance: not ours
        state_file(tmp_path, "golden_counter_i7", other.pid)  # not an actor
        sampler = Sampler(tmp_path, 7)
        assert sampler.sample() == {"a1": ["a1_g1_i7"], "b1": ["b1_g4_i7"]}
        state_file(tmp_path, "a1_g2_i7", second.pid)
        assert sorted(sampler.sample()["a1"]) == ["a1_g1_i7", "a1_g2_i7"]
        first.kill()  # exited: a zombie until reaped, and no longer a sandbox that runs
        time.sleep(0.1)
        assert sampler.sample()["a1"] == ["a1_g2_i7"]
        os.kill(second.pid, signal.SIGSTOP)  # frozen is still alive
        time.sleep(0.1)
        assert sampler.sample()["a1"] == ["a1_g2_i7"]
    finally:
        for proc in (first, second, other):
            proc.kill()
            proc.wait()


def test_the_monitor_reports_each_overlap_once_with_its_containers(tmp_path):
    first = subprocess.Popen(["sleep", "30"])
    second = subprocess.Popen(["sleep", "30"])
    try:
        state_file(tmp_path, "a1_g1_i7", first.pid)
        samples = iter(range(1000))
        out = io.StringIO()

        def stop() -> bool:
            n = next(samples)
            if n == 3:
                state_file(tmp_path, "a1_g2_i7", second.pid)  # overlap begins
            if n == 6:
                first.kill()  # and ends
                first.wait()
            return n >= 10

        report = watch(Sampler(tmp_path, 7), 0.01, out, stop)
        assert report.samples == 10 and report.double_activations == 1
        (overlap,) = report.overlaps
        assert overlap.actor == "a1" and overlap.containers == ["a1_g1_i7", "a1_g2_i7"]
        assert overlap.last_s >= overlap.first_s
        assert report.max_gap_s < 0.5
        assert "a1_g2_i7" in out.getvalue()
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()


def test_the_monitor_process_writes_its_summary_when_told_to_stop(tmp_path):
    root = tmp_path / "runsc"
    root.mkdir()
    out = tmp_path / "monitor.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "backends.local.monitor", "--root", str(root),
         "--instance", "7", "--interval", "0.02", "--out", str(out)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "monitoring"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    report = read_report(out)
    assert report.samples >= 10 and report.double_activations == 0
    assert report.max_gap_s < 0.2  # at least 10 samples a second
