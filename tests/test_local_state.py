"""The local backend's durable state, without sandboxes: the snapshot store's commit
protocol and checks, crash recovery of interrupted commits, the generation fence, the
single-instance lock, the state-dir guard, and the TCP states read from the kernel."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.gvisor import tcpstate
from backends.gvisor.runsc import Runsc
from backends.gvisor.tcpstate import connections_to, open_connections
from backends.local.cleanup import CleanupRefused, cleanup
from backends.local.db import StateDB, StateDBError
from backends.local.lock import DirectoryLock, InstanceBusy
from backends.local.recovery import recover
from backends.local.statedir import MARKER, NotAStateDir, is_state_dir, open_state_dir
from backends.local.store import (
    COMPLETE,
    SnapshotStore,
    SnapshotUnusable,
    wait_for_writer,
    write_requests,
)
from backends.state import StaleGeneration
from control.policies import KeepNewest

pytestmark = pytest.mark.real  # starts servers or processes: run one at a time


def checkpoint_into(store: SnapshotStore, actor: str, version: int, generation: int,
                    payload: bytes, *, complete: bool = True) -> Path:  # fmt: skip
    """What runsc and its wrapper leave behind: an image, and the verdict marker."""
    tmp = store.begin(actor, version, generation)
    (tmp / "checkpoint.img").write_bytes(payload)
    if complete:
        (tmp / COMPLETE).touch()
    return tmp


def test_a_commit_is_one_rename_with_a_manifest_and_private_files(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    tmp = checkpoint_into(store, "a1", 1, 7, b"state one")
    assert store.versions("a1") == []  # not committed yet: invisible
    snapshot = store.commit("a1", 1, 7, tmp, fence=7)
    assert (snapshot.version, snapshot.generation, snapshot.bytes) == (1, 7, 9)
    assert store.versions("a1") == [1] and store.latest("a1") == 1
    image = store.path("a1", 1) / "checkpoint.img"
    assert stat.S_IMODE(image.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "snapshots").stat().st_mode) == 0o700
    assert store.verify("a1", 1) == snapshot
    # A new store reads the same truth back from disk.
    assert SnapshotStore(tmp_path / "snapshots").versions("a1") == [1]


def test_a_stale_generation_never_commits_and_versions_are_immutable(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    store.commit("a1", 1, 3, checkpoint_into(store, "a1", 1, 3, b"x"), fence=3)
    with pytest.raises(StaleGeneration):
        store.commit("a1", 2, 3, checkpoint_into(store, "a1", 2, 3, b"y"), fence=4)
    assert store.versions("a1") == [1]
    with pytest.raises(FileExistsError):
        store.commit("a1", 1, 4, checkpoint_into(store, "a1", 1, 4, b"z"), fence=4)
    assert (store.path("a1", 1) / "checkpoint.img").read_bytes() == b"x"


def test_old_versions_are_pruned_but_the_previous_one_is_kept(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots", keep=2)
    for v in range(1, 5):
        store.commit("a1", v, v, checkpoint_into(store, "a1", v, v, b"s" * v), fence=v)
    assert store.versions("a1") == [3, 4]
    assert not store.path("a1", 2).exists()
    assert store.total_bytes() == 3 + 4


def test_the_retention_policy_decides_what_the_store_deletes_and_when(tmp_path):
    every = SnapshotStore(tmp_path / "all", retention=KeepNewest(keep=None))
    swept = SnapshotStore(tmp_path / "swept", retention=KeepNewest(keep=1, gc_interval_s=30))
    for store in (every, swept):
        for v in range(1, 5):
            store.commit("a1", v, v, checkpoint_into(store, "a1", v, v, b"s" * v), fence=v)
        store.commit("b2", 1, 1, checkpoint_into(store, "b2", 1, 1, b"b"), fence=1)
    assert every.versions("a1") == [1, 2, 3, 4]  # no GC (Substrate #664)
    assert swept.versions("a1") == [1, 2, 3, 4]  # piled up until the sweep
    swept.collect()
    assert swept.versions("a1") == [4] and swept.versions("b2") == [1]
    assert not swept.path("a1", 3).exists() and swept.total_bytes() == 4 + 1
    every.collect()
    assert every.versions("a1") == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: (d / "checkpoint.img").write_bytes(b"v2 state, origina!"), "sha256"),
        (lambda d: (d / "checkpoint.img").write_bytes(b"v2 state, original+"), "grew?"),
        (lambda d: (d / "checkpoint.img").write_bytes(b"v2"), "truncated?"),
        (lambda d: (d / "manifest.json").unlink(), "manifest is missing"),
        (lambda d: (d / "checkpoint.img").unlink(), "checkpoint.img is missing"),
    ],
)
def test_a_damaged_snapshot_is_reported_precisely_and_never_replaced(tmp_path, damage, problem):
    store = SnapshotStore(tmp_path / "snapshots")
    store.commit("a1", 1, 1, checkpoint_into(store, "a1", 1, 1, b"v1 state"), fence=1)
    store.commit("a1", 2, 2, checkpoint_into(store, "a1", 2, 2, b"v2 state, original"), fence=2)
    damage(store.path("a1", 2))
    with pytest.raises(SnapshotUnusable) as err:
        store.verify("a1", 2)
    message = str(err.value)
    assert message.startswith("snapshot v2 of a1 is unusable: ") and problem in message
    assert "newest intact snapshot: v1" in message and "acknowledged after it is lost" in message
    assert err.value.fallback.version == 1
    assert store.latest("a1") == 2  # never silently replaced by the older one


def test_recovery_finishes_a_complete_interrupted_commit_and_discards_the_rest(tmp_path):
    state = open_state_dir(tmp_path / "state")
    store = SnapshotStore(state / "snapshots")
    db = StateDB(state / "state.sqlite")
    for actor in ("a1", "a2", "a3", "a4"):
        db.add_actor(actor, "counter")
    db.begin_activation("a1", 5, "a1_g5_i0", "w0", "ns")
    db.begin_activation("a2", 5, "a2_g5_i0", "w1", "ns")
    db.begin_activation("a3", 9, "a3_g9_i0", "w2", "ns")
    for row in db.live_sandboxes():
        db.sandbox_stopped(row.id)  # their sandboxes are accounted for
    # a1: runsc finished (crash between writing the image and committing it) -> commit,
    # naming the acknowledged requests the driver recorded before runsc ran
    write_requests(checkpoint_into(store, "a1", 1, 5, b"a1 saved"), ("r1", "r2"))
    # a2: runsc never finished -> discard, nothing half-written becomes a snapshot
    checkpoint_into(store, "a2", 1, 5, b"half", complete=False)
    # a3: complete, but of an activation older than the fence -> discard
    checkpoint_into(store, "a3", 1, 8, b"stale")
    # a4: complete, but older than what is already committed -> discard
    store.commit("a4", 2, 0, checkpoint_into(store, "a4", 2, 0, b"new"), fence=0)
    checkpoint_into(store, "a4", 1, 0, b"old")
    report = asyncio.run(recover(Runsc(tmp_path / "runsc"), store, db))
    assert store.versions("a1") == [1] and store.verify("a1", 1).generation == 5
    assert store.manifest("a1", 1).requests == ("r1", "r2")
    assert store.manifest("a1", 1).requests_known
    assert store.versions("a2") == store.versions("a3") == [] and store.versions("a4") == [2]
    assert not store.manifest("a4", 2).requests_known  # committed with no record of them
    assert store.pending() == []
    assert sum(line.startswith("committed") for line in report.actions) == 1
    assert sum(line.startswith("discarded") for line in report.actions) == 3
    assert report.losses == []
    db.close()


def test_recovery_reports_a_vanished_sandbox_only_if_its_state_is_really_gone(tmp_path):
    """After a crash, a sandbox the database still calls running is gone. That is a loss
    only if it served and nothing saved it: not when its own checkpoint was committed
    before the crash, nor when the control plane had ended it on purpose."""
    state = open_state_dir(tmp_path / "state")
    store = SnapshotStore(state / "snapshots")
    db = StateDB(state / "state.sqlite")
    for actor in ("saved", "ended", "died", "never"):
        db.add_actor(actor, "counter")
        store.commit(actor, 1, 0, checkpoint_into(store, actor, 1, 0, b"golden"), fence=0)
    for actor in ("saved", "ended", "died", "never"):
        db.begin_activation(actor, 1, f"{actor}_g1_i0", "w0", "ns")
    for actor in ("saved", "ended", "died"):
        db.sandbox_running(f"{actor}_g1_i0")  # each served requests
    # saved: its checkpoint (v2, generation 1) was committed; then the crash, before the
    # database heard that the sandbox stopped
    store.commit("saved", 2, 1, checkpoint_into(store, "saved", 2, 1, b"after"), fence=1)
    db.sandbox_stopping("ended_g1_i0")  # abandoned by the controller, then the crash
    report = asyncio.run(recover(Runsc(tmp_path / "runsc"), store, db))
    assert [loss.actor for loss in db.losses()] == ["died"]  # the one real loss, and only it
    assert len(report.losses) == 1 and report.losses[0].startswith("died:")
    assert any("saved_g1_i0 was checkpointed before the crash" in a for a in report.actions)
    assert db.live_sandboxes() == []
    db.close()


def test_recovery_waits_for_a_checkpoint_that_outlived_the_control_plane(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    tmp = checkpoint_into(store, "a1", 1, 1, b"state", complete=False)
    (tmp / ".lock").touch()
    # A checkpoint wrapper still running: it holds the lock, then writes its verdict.
    writer = subprocess.Popen(
        ["flock", str(tmp / ".lock"), "sh", "-c", f"sleep 0.5 && touch {tmp / COMPLETE}"]
    )
    time.sleep(0.1)
    started = time.monotonic()
    assert wait_for_writer(tmp, timeout_s=10)
    assert time.monotonic() - started > 0.2 and (tmp / COMPLETE).exists()
    writer.wait()


def test_the_generation_fence_only_moves_forward(tmp_path):
    db = StateDB(tmp_path / "state.sqlite")
    db.add_actor("a1", "counter")
    db.begin_activation("a1", 4, "a1_g4_i0", "w0", "ns0")
    assert db.generation("a1") == 4
    with pytest.raises(StaleGeneration):
        db.begin_activation("a1", 4, "again", "w1", "ns1")
    with pytest.raises(StaleGeneration):
        db.begin_activation("a1", 2, "older", "w1", "ns1")
    assert [r.id for r in db.live_sandboxes()] == ["a1_g4_i0"]
    assert stat.S_IMODE((tmp_path / "state.sqlite").stat().st_mode) == 0o600
    db.record_loss("a1", 4, 3, "sandbox died", ["r7", "r9"], known=True)
    (loss,) = db.losses()
    assert (loss.actor, loss.version, loss.requests, loss.known) == ("a1", 3, ("r7", "r9"), True)
    db.close()


def test_a_database_from_an_older_actormux_is_refused(tmp_path):
    import sqlite3

    conn = sqlite3.connect(tmp_path / "old.sqlite")
    conn.execute("CREATE TABLE actors (id TEXT PRIMARY KEY, template TEXT, created_unix REAL)")
    conn.execute("INSERT INTO actors VALUES ('a1', 'counter', 0)")
    conn.commit()
    conn.close()
    with pytest.raises((StateDBError, sqlite3.OperationalError)):
        StateDB(tmp_path / "old.sqlite")


def test_a_version_2_database_is_migrated_and_keeps_its_actors(tmp_path):
    import sqlite3

    path = tmp_path / "v2.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '2');"
        "CREATE TABLE actors (id TEXT PRIMARY KEY, template TEXT NOT NULL,"
        " generation INTEGER NOT NULL DEFAULT 0, created_unix REAL NOT NULL);"
        "INSERT INTO actors VALUES ('a1', 'counter', 7, 0);"
    )
    conn.commit()
    conn.close()
    db = StateDB(path)
    assert [(r.id, r.generation, r.owner) for r in db.actors()] == [("a1", 7, "")]
    db.add_actor("a2", "counter", "t1")
    db.add_wake("a2", 123.0)
    db.close()
    again = StateDB(path)  # now at the current schema: opened as is
    assert [r.owner for r in again.actors()] == ["", "t1"] and len(again.wakes()) == 1
    again.close()


def test_a_second_holder_is_refused_with_the_holders_pid_until_it_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; sys.path.insert(0, sys.argv[1]);"
         "from backends.local.lock import DirectoryLock; from pathlib import Path;"
         "DirectoryLock(Path(sys.argv[2]), 'run dir').acquire(); print('held', flush=True);"
         "time.sleep(60)", str(Path(__file__).resolve().parent.parent), str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InstanceBusy, match=f"in use by pid {holder.pid}"):
            DirectoryLock(tmp_path, "run dir").acquire()
    finally:
        holder.kill()  # a crash: the kernel drops the lock
        holder.wait()
    lock = DirectoryLock(tmp_path, "run dir").acquire()
    assert lock.held
    lock.release()


def test_a_state_dir_is_only_ever_an_actormux_one(tmp_path):
    new = open_state_dir(tmp_path / "new")
    assert is_state_dir(new) and stat.S_IMODE(new.stat().st_mode) == 0o700
    assert open_state_dir(new) == new  # opening it again is fine
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(NotAStateDir, match="not empty and not an actormux state dir"):
        open_state_dir(precious)
    assert sorted(p.name for p in precious.iterdir()) == ["thesis.tex"]  # untouched
    with pytest.raises(CleanupRefused, match="is not an actormux state dir"):
        cleanup(9, base=tmp_path / "no-run-dirs", purge_state=precious)
    assert (precious / "thesis.tex").exists()
    assert (new / MARKER).exists()


def test_purging_a_state_dir_in_use_is_refused(tmp_path):
    state = open_state_dir(tmp_path / "state")
    lock = DirectoryLock(state, "state dir").acquire()
    try:
        with pytest.raises(InstanceBusy):
            cleanup(9, base=tmp_path / "no-run-dirs", purge_state=state)
        assert state.exists()
    finally:
        lock.release()
    cleanup(9, base=tmp_path / "no-run-dirs", purge_state=state)
    assert not state.exists()


def test_tcp_states_are_read_from_the_kernel_for_one_peer():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = listener.accept()
    assert "ESTABLISHED" in connections_to("127.0.0.1", port)
    client.close()  # we close first: our end goes to FIN_WAIT2, theirs to CLOSE_WAIT
    time.sleep(0.05)
    assert "FIN_WAIT2" in connections_to("127.0.0.1", port)
    server.close()  # now both are closed: our end waits in TIME_WAIT
    time.sleep(0.05)
    assert set(connections_to("127.0.0.1", port)) == {"TIME_WAIT"}
    listener.close()
    assert os.path.exists("/proc/net/tcp")


def test_a_connection_we_closed_first_is_waited_for_and_an_open_one_is_not(monkeypatch):
    """Right after an answer the host end is in FIN_WAIT2 until the actor's FIN comes: a
    checkpoint waits for it (briefly) instead of declining; an open one is reported."""
    reads = []

    def counted(ip, port, table):
        reads.append(port)
        return connections_to(ip, port, table)

    monkeypatch.setattr(tcpstate, "connections_to", counted)

    async def body() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        assert await open_connections("127.0.0.1", port, settle_s=5) == ["ESTABLISHED"]
        assert len(reads) == 1  # not waited for: it will not end by itself
        client.close()  # ours is FIN_WAIT2 now; the peer closes 0.3 s later
        asyncio.get_running_loop().call_later(0.3, server.close)
        assert await open_connections("127.0.0.1", port, settle_s=5) == []
        assert set(connections_to("127.0.0.1", port)) == {"TIME_WAIT"}

        again = socket.create_connection(("127.0.0.1", port))
        peer, _ = listener.accept()
        again.close()  # a peer that never closes: reported once the wait is over
        assert await open_connections("127.0.0.1", port, settle_s=0.2) == ["FIN_WAIT2"]
        peer.close()
        listener.close()

    asyncio.run(body())


def test_a_stopped_process_is_alive_and_a_zombie_is_not():
    from backends.gvisor.runsc import process_alive

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert process_alive(child.pid)
        os.kill(child.pid, 19)  # SIGSTOP: frozen, not dead
        time.sleep(0.1)
        assert process_alive(child.pid)
        os.kill(child.pid, 9)
        time.sleep(0.1)
        assert not process_alive(child.pid)  # a zombie until we reap it
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)
