"""Sweeps on a Ray cluster: Hydra's Ray launcher sends each job of a sweep to a Ray
cluster that this test starts, and the jobs give exactly the summaries the joblib
launcher gives (the same seeds, the same numbers).

Ray binds its services to every address the machine has, so the cluster runs in a
network namespace the test creates (``actormux-ray-<pid>``, only loopback in it), and
the sweep runs there too. It is stopped by its process id and the namespace deleted by
its name; no Ray process is left behind (checked). Runs in the Ray venv
(``make test-ray``; in ``make pytest``, beside the gVisor tests).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real, pytest.mark.ray]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SEEDS = (0, 1, 2, 3)
SWEEP = ["experiment=oversub_250_on_8", "duration_s=120", f"seed={','.join(map(str, SEEDS))}"]
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"the Ray test must run in CI, but: {reason}")
        pytest.skip(reason)


@pytest.fixture
def netns():
    """A network namespace with only loopback up, deleted afterwards."""
    _need(os.geteuid() == 0 and shutil.which("ip") is not None, "needs root and ip (iproute2)")
    name = f"actormux-ray-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def ray_cluster(netns, tmp_path_factory):
    """A Ray head (2 CPUs) in ``netns`` on 127.0.0.1:6379; its temp dir names its
    processes, so that what it started can be found and checked gone."""
    _need((BIN / "ray").exists(), "Ray is not installed in this venv: run make test-ray")
    temp = Path(f"/tmp/actormux-ray-{os.getpid()}")  # short: Ray's sockets live under it
    head = subprocess.Popen(
        ["ip", "netns", "exec", netns, str(BIN / "ray"), "start", "--head", "--block",
         "--node-ip-address=127.0.0.1", "--port=6379", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env={**os.environ, **RAY_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            status = subprocess.run(
                ["ip", "netns", "exec", netns, str(BIN / "ray"), "status",
                 "--address=127.0.0.1:6379"],
                env={**os.environ, **RAY_ENV}, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if status.returncode == 0:
                break
            assert head.poll() is None, f"the Ray head exited: {head.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"Ray did not come up: {status.stderr[-2000:]}"
            time.sleep(1)
        yield netns, "127.0.0.1:6379"
    finally:
        head.send_signal(signal.SIGTERM)  # --block: it stops what it started, then exits
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        deadline = time.monotonic() + 30
        while (left := _processes_mentioning(str(temp))) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:  # by the ids found, never by name
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


def _sweep(out: Path, *extra: str, netns: str | None = None) -> dict[int, dict]:
    command = [str(BIN / "actormux"), "-m", *SWEEP, f"hydra.sweep.dir={out}", *extra]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **RAY_ENV}, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    summaries = {}
    for job in sorted(out.iterdir()):
        if (job / "summary.json").exists():
            summary = json.loads((job / "summary.json").read_text())
            summary.pop("wall_s")  # the only thing that may differ
            summaries[summary["seed"]] = summary
    return summaries | {-1: {"log": done.stdout + done.stderr}}


def test_a_sweep_on_a_ray_cluster_gives_what_the_joblib_launcher_gives(ray_cluster, tmp_path):
    netns, address = ray_cluster
    on_ray = _sweep(
        tmp_path / "ray", "hydra/launcher=ray_cluster",
        f"hydra.launcher.ray.init.address={address}", netns=netns,
    )  # fmt: skip
    log = on_ray.pop(-1)["log"]
    assert f"Ray Launcher is launching {len(SEEDS)} jobs" in log
    assert "(_run_job pid=" in log  # the jobs printed from Ray's worker processes
    with_joblib = _sweep(tmp_path / "joblib", "hydra/launcher=joblib")
    with_joblib.pop(-1)
    assert sorted(on_ray) == sorted(with_joblib) == list(SEEDS)
    assert on_ray == with_joblib
    assert len({s["requests"] for s in on_ray.values()}) > 1  # the seeds differ
