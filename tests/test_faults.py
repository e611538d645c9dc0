"""Fault tests with real gVisor sandboxes: inject a fault, then check that every
acknowledged update is present (the counter read back equals the increments the
clients saw acknowledged) or that its loss is reported precisely, that the system
recovered without manual steps, and that cleanup leaves nothing behind.

Crashes of the control plane are real ``kill -9``s of ``actormux serve``, at named
points (``backends/local/failpoints.py``) armed through the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time

import pytest
from gvisor_harness import (
    ACTORMUX,
    INSTANCE,
    RUN_DIR,
    admin,
    admin_json,
    free_port,
    kill9,
    post,
    serve_process,
    status_of,
    stop,
    wait_for,
    wait_until,
)

from backends.gvisor.runsc import process_alive
from backends.local.cleanup import leftovers

pytestmark = pytest.mark.usefixtures("gvisor")


WORKER_AGENTS = {False: ("backend.worker_agents=false",), True: ("backend.worker_agents=true",)}


class Serve:
    """``actormux serve`` on instance 7, restartable on the same ports and state dir."""

    def __init__(self, tmp_path, *overrides: str) -> None:
        self.tmp_path = tmp_path
        self.port, self.admin_port = free_port(), free_port()
        self.overrides = overrides
        self.proc: subprocess.Popen | None = None

    def start(self, *, failpoint: str | None = None) -> Serve:
        env = {"ACTORMUX_FAILPOINT": failpoint} if failpoint else None
        self.proc = serve_process(
            self.tmp_path, self.port, self.admin_port, *self.overrides, env=env
        )
        wait_for(self.admin_port, self.proc)
        wait_for(self.port, self.proc)
        return self

    def admin(self, *args: str):
        return admin_json(self.admin_port, *args)

    def post(self, actor: str, method: str = "POST") -> dict:
        return post(self.port, actor, method)

    def crashed(self, timeout: float = 60) -> bool:
        """Wait for the failpoint's kill -9."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return self.proc.returncode == -9

    def stop(self) -> str:
        assert self.proc is not None
        return stop(self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        kill9(self.proc)


def counts_after_increments(serve: Serve, actor: str, n: int) -> None:
    for i in range(n):
        assert serve.post(actor)["count"] == i + 1


@pytest.mark.parametrize("agents", [False, True], ids=["in_process", "worker_agents"])
@pytest.mark.parametrize("failpoint", ["checkpoint.runsc_started", "checkpoint.before_commit"])
def test_kill_9_of_serve_during_a_checkpoint_loses_no_acknowledged_update(
    tmp_path, failpoint, agents
):
    serve = Serve(tmp_path, *WORKER_AGENTS[agents]).start(failpoint=failpoint)
    try:
        assert admin(serve.admin_port, "create", "k1").returncode == 0
        counts_after_increments(serve, "k1", 3)  # three acknowledged updates
        admin(serve.admin_port, "suspend", "k1")  # the checkpoint crashes serve
        assert serve.crashed(), "the failpoint did not fire"
    finally:
        serve.kill()
    serve.start()  # recovery: the orphaned checkpoint's verdict, then its commit
    try:
        assert serve.post("k1", "GET")["count"] == 3
        assert serve.post("k1")["count"] == 4
        shown = serve.admin("show", "k1")
        assert shown["snapshot_version"] >= 1 and shown["failure"] is None
        assert serve.admin("losses") == []
    finally:
        out = serve.stop()
    assert "stopped" in out


@pytest.mark.parametrize("agents", [False, True], ids=["in_process", "worker_agents"])
def test_kill_9_of_serve_during_a_restore_loses_no_acknowledged_update(tmp_path, agents):
    serve = Serve(tmp_path, *WORKER_AGENTS[agents]).start()
    try:
        assert admin(serve.admin_port, "create", "k1").returncode == 0
        counts_after_increments(serve, "k1", 2)
        admin(serve.admin_port, "suspend", "k1")
        wait_until(lambda: serve.admin("show", "k1")["state"] == "suspended")
    finally:
        serve.stop()
    serve.start(failpoint="restore.runsc_started")
    with contextlib.suppress(OSError):
        assert status_of(serve.port, "k1") != 200  # the restore crashes serve
    assert serve.crashed(), "the failpoint did not fire"
    serve.start()  # the orphaned restore's sandbox is saved (or dropped), never forked
    try:
        assert serve.post("k1", "GET")["count"] == 2
        assert serve.post("k1")["count"] == 3
    finally:
        serve.stop()


@pytest.mark.parametrize("agents", [False, True], ids=["in_process", "worker_agents"])
def test_kill_9_of_serve_mid_request_then_the_restart_saves_the_sandbox(tmp_path, agents):
    """Found by the soak: serve dies while an actor is still answering; the kernel
    half-closes serve's connection, and the restart's checkpoint of that sandbox failed
    on it ("encoding error at object tcp.endpoint") and destroyed the sandbox with
    every update it held. Recovery now resets such connections and waits first. With
    worker agents, the agents die with serve (and the sandboxes outlive them)."""
    serve = Serve(tmp_path, *WORKER_AGENTS[agents]).start()
    agent_pids = [int(p.read_text()) for p in (RUN_DIR / "agents").glob("w*.pid")]
    assert len(agent_pids) == (2 if agents else 0)
    try:
        assert admin(serve.admin_port, "create", "k1").returncode == 0
        counts_after_increments(serve, "k1", 3)
        slow = threading.Thread(
            target=lambda: status_of_slow(serve.port, "k1"), daemon=True
        )  # a request the actor takes 4 s over: still open when serve dies
        slow.start()
        time.sleep(1.0)
    finally:
        serve.kill()
    wait_until(lambda: not any(process_alive(pid) for pid in agent_pids), timeout=10,
               what="the agents to die with serve")  # fmt: skip
    serve.start()
    try:
        assert serve.admin("losses") == []  # saved, not destroyed
        assert serve.post("k1", "GET")["count"] in (3, 4)  # 4: the unacknowledged one ran
    finally:
        serve.stop()


def status_of_slow(port: int, actor: str) -> None:
    with contextlib.suppress(OSError):
        post(port, actor, "POST", **{"X-Actormux-Service": "4"})


@pytest.mark.parametrize(
    ("damage", "problem"),
    [("corrupt", "does not match its sha256"), ("truncate", "truncated?")],
)
@pytest.mark.parametrize("agents", [False, True], ids=["in_process", "worker_agents"])
def test_a_damaged_snapshot_is_detected_before_restore_and_reported_precisely(
    tmp_path, damage, problem, agents
):
    serve = Serve(tmp_path, *WORKER_AGENTS[agents]).start()
    try:
        assert admin(serve.admin_port, "create", "c1").returncode == 0
        counts_after_increments(serve, "c1", 2)
        admin(serve.admin_port, "suspend", "c1")  # v1: count 2
        wait_until(lambda: serve.admin("show", "c1")["state"] == "suspended")
        assert post(serve.port, "c1", **{"X-Request-Id": "third"})["count"] == 3
        admin(serve.admin_port, "suspend", "c1")  # v2: count 3
        wait_until(lambda: serve.admin("show", "c1")["snapshot_version"] == 2)
        image = tmp_path / "state" / "snapshots" / "c1" / "v000002" / "checkpoint.img"
        data = bytearray(image.read_bytes())
        if damage == "corrupt":
            data[len(data) // 2] ^= 0xFF
        else:
            data = data[: len(data) // 2]
        image.write_bytes(bytes(data))
        assert status_of(serve.port, "c1") == 503  # never served from a damaged snapshot
        shown = serve.admin("show", "c1")
        assert shown["state"] == "failed"
        assert shown["failure"].startswith("snapshot v2 of c1 is unusable")
        assert problem in shown["failure"] and "newest intact snapshot: v1" in shown["failure"]
        assert status_of(serve.port, "c1") == 503  # and not silently replaced by v1
        # An operator decides: go on from v1, and the loss is on record.
        recovered = admin(serve.admin_port, "recover", "c1", "--version", "1")
        assert recovered.returncode == 0, recovered.stdout
        assert serve.post("c1", "GET")["count"] == 2
        (loss,) = serve.admin("losses")
        assert (loss["actor"], loss["version"]) == ("c1", 1)
        assert "operator" in loss["reason"] and ".set-aside-v000002" in loss["reason"]
        assert loss["requests"] == ["third"] and loss["known"]  # exactly what v2 held
    finally:
        serve.stop()


def test_a_second_serve_on_the_same_instance_refuses_and_changes_nothing(tmp_path):
    first = Serve(tmp_path).start()
    try:
        assert admin(first.admin_port, "create", "s1").returncode == 0
        first.post("s1")
        netns_before = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        )
        second = serve_process(tmp_path, free_port(), free_port())
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 1, out
        assert f"in use by pid {first.proc.pid}" in out
        netns_after = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        )
        assert netns_after.stdout == netns_before.stdout  # nothing recreated
        assert first.post("s1")["count"] == 2  # the first one never noticed
        # Nor may a second serve use the same state dir under another instance.
        third = serve_process(tmp_path, free_port(), free_port(), "backend.instance=8")
        out, _ = third.communicate(timeout=120)
        assert third.returncode == 1 and "state dir" in out and "in use" in out
        # Nor may cleanup pull the floor from under it.
        done = subprocess.run([ACTORMUX, "cleanup", "--instance", str(INSTANCE)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 2 and "in use" in done.stderr
        assert first.post("s1")["count"] == 3
    finally:
        out = first.stop()
    assert "stopped" in out


def test_cleanup_after_a_crash_saves_running_actors_instead_of_killing_them(tmp_path):
    serve = Serve(tmp_path).start()
    try:
        for actor in ("k1", "k2"):
            assert admin(serve.admin_port, "create", actor).returncode == 0
        counts_after_increments(serve, "k1", 3)
        counts_after_increments(serve, "k2", 1)
    finally:
        serve.kill()
    done = subprocess.run([ACTORMUX, "cleanup", "--instance", str(INSTANCE)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("saved: saved") == 2 and "LOST" not in done.stdout
    assert leftovers(INSTANCE) == []
    serve.start()
    try:
        assert serve.post("k1", "GET")["count"] == 3
        assert serve.post("k2", "GET")["count"] == 1
    finally:
        serve.stop()


def test_cleanup_refuses_to_guess_without_a_state_dir_unless_told_to_discard(tmp_path):
    serve = Serve(tmp_path).start()
    try:
        assert admin(serve.admin_port, "create", "k1").returncode == 0
        serve.post("k1")
    finally:
        serve.kill()
    (RUN_DIR / "state_dir").unlink()  # the run dir no longer says where state goes
    done = subprocess.run([ACTORMUX, "cleanup", "--instance", str(INSTANCE)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2 and "--discard" in done.stderr
    assert any(x.startswith("sandbox ") for x in leftovers(INSTANCE))  # untouched
    done = subprocess.run([ACTORMUX, "cleanup", "--instance", str(INSTANCE), "--discard"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0 and leftovers(INSTANCE) == []


def test_a_full_snapshot_disk_declines_checkpoints_instead_of_killing_the_sandbox(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "none", str(disk)], check=True)
    try:
        serve = Serve(disk, "backend.snapshot_reserve_mb=4", "recovery.checkpoint_retry_s=0.5",
                      "recovery.checkpoint_retry_max_s=1")  # fmt: skip
        serve.start()
        try:
            assert admin(serve.admin_port, "create", "d1").returncode == 0
            counts_after_increments(serve, "d1", 3)
            ballast = disk / "ballast"
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            ballast.write_bytes(b"\0" * (free - (1 << 20)))  # leave 1 MiB
            admin(serve.admin_port, "suspend", "d1")
            wait_until(
                lambda: "snapshot disk full" in (serve.admin("show", "d1")["failure"] or ""),
                what="a declined checkpoint",
            )
            assert serve.admin("show", "d1")["state"] == "running"  # untouched, still there
            assert serve.post("d1")["count"] == 4  # and still serving
            ballast.unlink()  # an operator frees space: the retry goes through by itself
            admin(serve.admin_port, "suspend", "d1")
            wait_until(lambda: serve.admin("show", "d1")["state"] == "suspended", timeout=60)
            assert serve.post("d1", "GET")["count"] == 4
            assert serve.admin("losses") == []
        finally:
            serve.stop()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_admin_reports_are_json_an_operator_can_read(tmp_path):
    serve = Serve(tmp_path).start()
    try:
        assert admin(serve.admin_port, "create", "j1").returncode == 0
        workers = serve.admin("workers")
        assert {w["id"] for w in workers} == {"w0", "w1"}
        assert all(w["quarantined"] is None for w in workers)
        stats = serve.admin("stats")
        assert stats["losses"] == 0 and stats["reliability"]["stale_completions"] == 0
        shown = serve.admin("show", "j1")
        assert (shown["generation"], shown["failure"]) == (0, None)
        bad = admin(serve.admin_port, "recover", "j1", "--version", "1")
        assert bad.returncode == 1 and "not failed" in json.loads(bad.stdout)["detail"]
    finally:
        serve.stop()
