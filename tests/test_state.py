"""The control plane's state: one contract, two stores (SQLite, and a real redis-server
on loopback), and Redis's fencing of a deposed leader."""

from __future__ import annotations

import pytest
import redis

from backends.local.db import StateDB
from backends.state import ActorExists, ControlState, Deposed, StaleGeneration
from backends.state.redis_state import RedisState

pytestmark = pytest.mark.real  # starts servers or processes: run one at a time


@pytest.fixture(params=["sqlite", "redis"])
def state(request, tmp_path):
    if request.param == "sqlite":
        store: ControlState = StateDB(tmp_path / "state.sqlite")
    else:
        server = request.getfixturevalue("redis_server")
        store = RedisState(server.url, namespace="test", token=1)
    yield store
    store.close()


def test_actors_are_listed_in_creation_order_and_ids_are_unique(state):
    for actor in ("b", "a", "c"):
        state.add_actor(actor, "counter")
    with pytest.raises(ActorExists):
        state.add_actor("a", "agent")
    assert [(row.id, row.template, row.generation) for row in state.actors()] == [
        ("b", "counter", 0), ("a", "counter", 0), ("c", "counter", 0),
    ]  # fmt: skip
    assert state.has_actor("a") and not state.has_actor("zz")
    state.delete_actor("a")
    assert [row.id for row in state.actors()] == ["b", "c"]
    with pytest.raises(KeyError):
        state.generation("a")


def test_owners_and_wakeups_are_kept_and_a_deleted_actor_takes_its_wakeups_along(state):
    state.add_actor("a", "counter", "tenant-1")
    state.add_actor("b", "counter")
    assert [(row.id, row.owner) for row in state.actors()] == [("a", "tenant-1"), ("b", "")]
    later = state.add_wake("a", 2000.5)
    sooner = state.add_wake("b", 1000.25)
    third = state.add_wake("a", 3000.0)
    assert len({later, sooner, third}) == 3
    assert [(w.id, w.actor, w.at_unix) for w in state.wakes()] == [
        (sooner, "b", 1000.25), (later, "a", 2000.5), (third, "a", 3000.0),
    ]  # fmt: skip
    state.remove_wake(sooner)
    state.remove_wake(sooner)  # delivered twice: harmless
    state.delete_actor("a")
    assert state.wakes() == []


def test_an_activation_must_be_newer_than_the_fence(state):
    state.add_actor("a", "counter")
    state.begin_activation("a", 1, "a_g1_i0", "w0", "ns0")
    for stale in (1, 0):
        with pytest.raises(StaleGeneration):
            state.begin_activation("a", stale, f"a_g{stale}_x", "w1", "ns1")
    with pytest.raises(StaleGeneration):
        state.begin_activation("nobody", 1, "nobody_g1_i0", "w0", "ns0")
    state.begin_activation("a", 3, "a_g3_i0", "w1", "ns1")
    assert state.generation("a") == 3
    state.raise_generation("a", 2)  # never lowers
    assert state.generation("a") == 3
    state.raise_generation("a", 7)
    assert state.generation("a") == 7
    state.raise_generation("nobody", 9)  # an unknown actor is not created
    assert not state.has_actor("nobody")


def test_sandboxes_stay_listed_until_stopped(state):
    state.add_actor("a", "counter")
    state.begin_activation("a", 1, "a_g1_i0", "w0", "ns0")
    state.add_actor("b", "counter")
    state.begin_activation("b", 1, "b_g1_i0", "w1", "ns1")
    state.sandbox_running("a_g1_i0")
    state.sandbox_stopping("b_g1_i0")
    live = {(row.id, row.actor, row.worker, row.netns, row.generation, row.status)
            for row in state.live_sandboxes()}  # fmt: skip
    assert live == {("a_g1_i0", "a", "w0", "ns0", 1, "running"),
                    ("b_g1_i0", "b", "w1", "ns1", 1, "stopping")}  # fmt: skip
    state.sandbox_stopped("a_g1_i0")
    assert [row.id for row in state.live_sandboxes()] == ["b_g1_i0"]
    assert state.netns_of("a_g1_i0") == "ns0" and state.netns_of("zz") is None
    state.activation("a_g1_i0", actor="a", worker="w0", kind="cold", version=0,
                     outcome="ok", seconds=0.5)  # fmt: skip


def test_losses_keep_their_request_ids(state):
    state.add_actor("a", "counter")
    state.record_loss("a", 2, 1, "its sandbox died", ["r1", "r2"], known=True)
    state.record_loss("a", 3, 1, "disk", [], known=False)
    rows = state.losses()
    assert [(r.actor, r.generation, r.version, r.reason, r.requests, r.known) for r in rows] == [
        ("a", 2, 1, "its sandbox died", ("r1", "r2"), True),
        ("a", 3, 1, "disk", (), False),
    ]


def test_a_deposed_leader_cannot_write_once_the_new_one_has(redis_server):
    old = RedisState(redis_server.url, namespace="test", token=1)
    old.add_actor("a", "counter")
    old.begin_activation("a", 1, "a_g1_i0", "w0", "ns0")
    new = RedisState(redis_server.url, namespace="test", token=2)
    new.claim()
    for write in (
        lambda: old.add_actor("b", "counter"),
        lambda: old.begin_activation("a", 2, "a_g2_i0", "w1", "ns1"),
        lambda: old.sandbox_stopped("a_g1_i0"),
        lambda: old.record_loss("a", 1, 0, "old leader", ["r1"], known=True),
        lambda: old.delete_actor("a"),
        old.claim,
    ):
        with pytest.raises(Deposed):
            write()
    # Nothing of the deposed leader's landed; the new one goes on.
    assert [row.id for row in new.actors()] == ["a"] and new.generation("a") == 1
    assert [row.id for row in new.live_sandboxes()] == ["a_g1_i0"] and new.losses() == []
    new.begin_activation("a", 2, "a_g2_i0", "w1", "ns1")
    assert new.fence() == 2
    # A token older than the fence can never come back, even for a fresh client.
    with pytest.raises(Deposed):
        RedisState(redis_server.url, namespace="test", token=1).add_actor("c", "counter")
    for state in (old, new):
        state.close()


def test_namespaces_do_not_see_each_other(redis_server):
    one = RedisState(redis_server.url, namespace="one", token=5)
    two = RedisState(redis_server.url, namespace="two", token=1)
    one.add_actor("a", "counter")
    two.add_actor("b", "counter")  # token 1 is fine: fences are per namespace
    assert [row.id for row in one.actors()] == ["a"]
    assert [row.id for row in two.actors()] == ["b"]
    with pytest.raises(ValueError, match="plain name"):
        RedisState(redis_server.url, namespace="x}:y", token=1)
    with pytest.raises(ValueError, match=">= 1"):
        RedisState(redis_server.url, namespace="one", token=0)


def test_acknowledged_writes_survive_kill_9_of_redis(redis_server):
    state = RedisState(redis_server.url, namespace="test", token=1)
    for i in range(50):
        state.add_actor(f"a{i}", "counter")
        state.begin_activation(f"a{i}", 1, f"a{i}_g1_i0", "w0", "ns0")
    state.record_loss("a0", 1, 0, "test", ["r1"], known=True)
    redis_server.kill()
    redis_server.start()
    again = RedisState(redis_server.url, namespace="test", token=1)
    assert len(again.actors()) == 50 and all(row.generation == 1 for row in again.actors())
    assert len(again.live_sandboxes()) == 50 and again.losses()[0].requests == ("r1",)


def test_a_redis_that_does_not_fsync_every_write_is_refused(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("appendfsync", "everysec")
    with pytest.raises(RuntimeError, match="appendfsync always"):
        RedisState(redis_server.url, namespace="test", token=1)
    RedisState(redis_server.url, namespace="test", token=1, require_fsync=False).close()
