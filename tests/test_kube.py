"""The cluster parts against the EMULATED Kubernetes API server (``kube_emulator.py``:
kmock's emulator, no real API server runs here) through the real Kubernetes client:
the worker pool's watch (repeated and dropped events, pods recreated), scaling, and
leader election with a Lease whose fencing token a real redis-server enforces."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from kube_emulator import emulated_api

from backends.kube.api import connect
from backends.kube.lease import LeaseElector, LeaseSettings
from backends.kube.pool import AGENT_PORT_ANNOTATION, Change, PodPool, PoolSettings
from backends.state import Deposed
from backends.state.redis_state import RedisState

# real: an API server emulator process. serial: not beside the gVisor tests, as its
# emulator streams only the watch events after a watch starts (the real API server
# replays those after the listed resourceVersion): under load a change between the
# pool's list and its watch is missed until the next relist (seen once in CI).
pytestmark = [pytest.mark.real, pytest.mark.serial]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    with emulated_api(tmp_path_factory.mktemp("kube")) as api:
        yield api


@pytest.fixture
def namespace():
    return f"t-{uuid.uuid4().hex[:8]}"


def pod_body(name: str, *, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app.kubernetes.io/name": "workers"}},
        "spec": {"containers": [{"name": "agent", "image": "actormux-worker",
                                 "ports": [{"name": "agent", "containerPort": 8090}]}]},
    }  # fmt: skip


def make_ready(core, namespace: str, name: str, ip: str, *, port: int | None = None) -> None:
    if port is not None:
        core.patch_namespaced_pod(
            name, namespace, {"metadata": {"annotations": {AGENT_PORT_ANNOTATION: str(port)}}}
        )
    core.patch_namespaced_pod_status(name, namespace, {"status": {
        "phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}],
    }})  # fmt: skip


class Recorder:
    """Collects a pool's changes from its watching thread."""

    def __init__(self) -> None:
        self.changes: list = []
        self.lock = threading.Lock()

    def __call__(self, change) -> None:
        with self.lock:
            self.changes.append(change)

    def seen(self) -> list[tuple[str, str, str]]:
        with self.lock:
            return [(c.change.value, c.worker.name, c.worker.host) for c in self.changes]


def wait_until(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_pool_follows_pods_through_repeats_drops_and_recreation(api_server, namespace):
    apis = connect(api_server.url)
    settings = PoolSettings(namespace, statefulset="workers", watch_timeout_s=30)
    pool = PodPool(apis.core, apis.apps, settings)
    recorder = Recorder()
    apis.core.create_namespaced_pod(namespace, pod_body("workers-0"))
    make_ready(apis.core, namespace, "workers-0", "10.0.0.1")
    apis.core.create_namespaced_pod(namespace, pod_body("workers-1"))  # not ready yet
    apis.core.create_namespaced_pod(namespace, pod_body("other", labels={"app": "x"}))
    make_ready(apis.core, namespace, "other", "10.0.0.9")
    watcher = threading.Thread(target=pool.run, args=(recorder,), daemon=True)
    watcher.start()
    try:
        wait_until(lambda: recorder.seen() == [("added", "workers-0", "10.0.0.1")])
        make_ready(apis.core, namespace, "workers-1", "10.0.0.2", port=9000)
        wait_until(lambda: len(recorder.seen()) == 2)
        assert pool.workers["workers-1"].url == "http://10.0.0.2:9000"
        assert pool.workers["workers-0"].port == 8090  # the container port named agent
        # The stream drops; the pool lists again and the repeated ADDED events change nothing.
        relists = pool.relists
        api_server.drop_watches()
        wait_until(lambda: pool.relists > relists)
        time.sleep(0.3)
        assert len(recorder.seen()) == 2
        # A pod deleted and created again under its name: a new worker (new uid).
        old_uid = pool.workers["workers-0"].uid
        apis.core.delete_namespaced_pod("workers-0", namespace)
        wait_until(lambda: "workers-0" not in pool.workers)
        apis.core.create_namespaced_pod(namespace, pod_body("workers-0"))
        make_ready(apis.core, namespace, "workers-0", "10.0.0.3")
        wait_until(lambda: "workers-0" in pool.workers)
        assert pool.workers["workers-0"].uid != old_uid
        assert recorder.seen()[2:] == [
            ("removed", "workers-0", "10.0.0.1"), ("added", "workers-0", "10.0.0.3"),
        ]  # fmt: skip
        # A pod that stops being ready stops taking work; the other one is never seen.
        apis.core.patch_namespaced_pod_status("workers-1", namespace, {"status": {
            "conditions": [{"type": "Ready", "status": "False"}]}})  # fmt: skip
        wait_until(lambda: "workers-1" not in pool.workers)
        assert all(name != "other" for _, name, _ in recorder.seen())
    finally:
        pool.close()
        watcher.join(timeout=10)
    assert not watcher.is_alive()


def test_a_change_missed_while_the_watch_was_down_is_found_by_the_next_list(api_server, namespace):
    apis = connect(api_server.url)
    pool = PodPool(apis.core, apis.apps, PoolSettings(namespace, statefulset="workers"))
    apis.core.create_namespaced_pod(namespace, pod_body("workers-0"))
    make_ready(apis.core, namespace, "workers-0", "10.0.0.1")
    changes, _ = pool.resync()
    assert [(c.change, c.worker.name) for c in changes] == [(Change.ADDED, "workers-0")]
    apis.core.delete_namespaced_pod("workers-0", namespace)  # no watch saw it
    changes, _ = pool.resync()
    assert [(c.change, c.worker.name) for c in changes] == [(Change.REMOVED, "workers-0")]
    assert pool.resync()[0] == []  # nothing new: nothing reported


def test_scaling_patches_the_statefulset(api_server, namespace):
    apis = connect(api_server.url)
    apis.apps.create_namespaced_stateful_set(namespace, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "workers"},
        "spec": {"replicas": 1, "serviceName": "workers",
                 "selector": {"matchLabels": {"app.kubernetes.io/name": "workers"}},
                 "template": pod_body("t")},
    })  # fmt: skip
    pool = PodPool(apis.core, apis.apps, PoolSettings(namespace, statefulset="workers"))
    pool.scale(8)
    assert apis.apps.read_namespaced_stateful_set("workers", namespace).spec.replicas == 8
    with pytest.raises(ValueError):
        pool.scale(-1)


class Clock:
    """A monotonic clock the test moves (the Lease's expiry is judged by each process's
    own clock, so each elector gets one)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_taken_over_by_a_second_controller_fences_the_first(
    api_server, namespace, redis_server
):
    apis = connect(api_server.url)
    clock_a, clock_b = Clock(), Clock()
    a = LeaseElector(
        apis.coordination, LeaseSettings(namespace, "leader", "cp-a", 15, 10), clock=clock_a
    )
    b = LeaseElector(
        apis.coordination, LeaseSettings(namespace, "leader", "cp-b", 15, 10), clock=clock_b
    )
    led_a = a.try_lead()
    assert led_a is not None and led_a.token == 1 and a.leads()
    state_a = RedisState(redis_server.url, namespace=namespace, token=led_a.token)
    state_a.claim()
    state_a.add_actor("c1", "counter")
    assert b.try_lead() is None  # held, and not expired by b's clock
    clock_a.now += 5
    assert a.try_lead().token == 1  # a renews: same token
    clock_b.now += 16  # long after b first looked, but b sees the renewal only now:
    assert b.try_lead() is None  # expiry counts from the last change b saw
    # a stops renewing (paused: a long GC, a frozen node). b watches the Lease not change.
    clock_b.now += 16
    led_b = b.try_lead()
    assert led_b is not None and led_b.token == 2
    state_b = RedisState(redis_server.url, namespace=namespace, token=led_b.token)
    state_b.claim()
    # a wakes up still believing it leads (its own deadline has not passed yet): Redis
    # refuses it, so it cannot commit anything.
    assert a.leads()
    with pytest.raises(Deposed):
        state_a.begin_activation("c1", 1, "c1_g1_i0", "w0", "ns0")
    state_b.begin_activation("c1", 1, "c1_g1_i0", "w1", "ns1")
    assert state_b.live_sandboxes()[0].worker == "w1"
    # a's next renewal finds b's name on the Lease: it steps down.
    assert a.try_lead() is None and not a.leads()
    # b gives it up on shutdown; a takes it at once, with a newer token.
    b.release()
    led_a = a.try_lead()
    assert led_a is not None and led_a.token == 3
    for state in (state_a, state_b):
        state.close()


def test_candidates_racing_for_an_expired_lease_never_both_win(api_server, namespace):
    apis = connect(api_server.url)
    clocks = [Clock() for _ in range(6)]
    electors = [
        LeaseElector(
            apis.coordination, LeaseSettings(namespace, "leader", f"cp-{i}", 3, 2), clock=clocks[i]
        )
        for i in range(6)
    ]
    tokens, holder = [], None
    for round_ in range(5):
        # Everyone but the holder (paused, not renewing) races for the Lease at once.
        racing = [i for i in range(len(electors)) if i != holder]
        barrier = threading.Barrier(len(racing))
        won: dict[int, object] = {}

        def race(i: int, barrier=barrier, won=won) -> None:
            barrier.wait()
            result = electors[i].try_lead()
            if result is not None:
                won[i] = result

        threads = [threading.Thread(target=race, args=(i,)) for i in racing]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1, f"round {round_}: {len(won)} leaders"
        ((holder, leadership),) = won.items()
        tokens.append(leadership.token)
        for i in racing:  # the others see the new holder's Lease; then it expires for all
            if i != holder:
                assert electors[i].try_lead() is None
        for clock in clocks:
            clock.now += 4
    assert tokens == list(range(1, 6))


def test_lease_settings_are_checked():
    with pytest.raises(ValueError, match="renew_deadline_s"):
        LeaseSettings("ns", "leader", "me", duration_s=10, renew_deadline_s=10)
    with pytest.raises(ValueError, match="identity"):
        LeaseSettings("ns", "leader", "")


def test_the_control_plane_process_says_what_it_is_missing(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    root = Path(__file__).parent.parent
    done = subprocess.run([sys.executable, "-m", "backends.kube"], capture_output=True,
                          text=True, env=env, cwd=root, check=False)  # fmt: skip
    assert done.returncode == 2 and "--redis-url, --snapshots" in done.stderr
    short = tmp_path / "token"
    short.write_text("short")
    done = subprocess.run(
        [sys.executable, "-m", "backends.kube", "--redis-url", "redis://127.0.0.1:1/0",
         "--snapshots", "file:///nonexistent", "--agent-token-file", str(short)],
        capture_output=True, text=True, env=env, cwd=root, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "fewer than 16 characters" in done.stderr
