"""The worker agent without sandboxes: every order a client can send is checked,
snapshots travel through file:// and a real S3-compatible server (moto's server mode
on loopback) and are checked on arrival, and each operation id runs once."""

from __future__ import annotations

import asyncio
import json
import stat

import pytest

from backends import manifest
from backends.agent import transfer
from backends.agent.api import (
    Activate,
    BadOrder,
    Checkpoint,
    Outcome,
    Result,
    Stop,
    order_json,
    parse_activate,
    parse_checkpoint,
    parse_stop,
)
from backends.agent.worker import OpConflict, Operations

GOOD_ACTIVATE = {"op": "c1:7", "actor": "a1", "generation": 3, "template": "counter"}
GOOD_CHECKPOINT = {
    "op": "c1:8", "actor": "a1", "generation": 3, "version": 2,
    "destination": "s3://bucket/actors/a1/v000002-g3", "requests": ["r-1", "r-2"],
}  # fmt: skip


def test_good_orders_survive_the_round_trip():
    for order in (
        parse_activate(GOOD_ACTIVATE),
        parse_activate({**GOOD_ACTIVATE, "snapshot": "file:///s/a1/v1/", "version": 1}),
        parse_checkpoint(GOOD_CHECKPOINT),
        parse_stop({"op": "x", "actor": "a1", "generation": 1}),
    ):
        parse = {Activate: parse_activate, Checkpoint: parse_checkpoint, Stop: parse_stop}
        again = parse[type(order)](json.loads(json.dumps(order_json(order))))
        assert again == order
    assert parse_activate({**GOOD_ACTIVATE, "snapshot": "file:///s/a1/v1/", "version": 1}
                          ).snapshot == "file:///s/a1/v1"  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"op": ""}, "op"),
        ({"op": "a b"}, "op"),
        ({"op": "x" * 81}, "op"),
        ({"op": 7}, "op"),
        ({"actor": "nl1\n"}, "actor"),
        ({"actor": "../etc"}, "actor"),
        ({"actor": "A1"}, "actor"),
        ({"generation": 0}, "generation"),
        ({"generation": -1}, "generation"),
        ({"generation": True}, "generation"),
        ({"generation": "3"}, "generation"),
        ({"generation": 2**60}, "generation"),
        ({"template": "../counter"}, "template"),
        ({"template": None}, "template"),
        ({"snapshot": "http://169.254.169.254/latest", "version": 1}, "snapshot"),
        ({"snapshot": "file://relative/dir", "version": 1}, "snapshot"),
        ({"snapshot": "file:///s/a1/../../etc", "version": 1}, "snapshot"),
        ({"snapshot": "s3://bucket/a1", "version": 0}, "version"),
        ({"snapshot": 5, "version": 1}, "snapshot"),
        ({"version": 2}, "version"),
        ({"shell": "rm -rf /"}, "unknown fields"),
    ],
)
def test_every_bad_activation_field_is_named(change, field):
    with pytest.raises(BadOrder, match=field):
        parse_activate({**GOOD_ACTIVATE, **change})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"requests": "r-1"}, "requests"),
        ({"requests": ["ok", "bad id"]}, "requests"),
        ({"requests": [1]}, "requests"),
        ({"requests": ["r"] * 100_001}, "requests"),
        ({"destination": "ftp://x/y"}, "destination"),
        ({"version": 0}, "version"),
    ],
)
def test_every_bad_checkpoint_field_is_named(change, field):
    with pytest.raises(BadOrder, match=field):
        parse_checkpoint({**GOOD_CHECKPOINT, **change})


def test_missing_fields_and_non_objects_are_refused():
    for parse in (parse_activate, parse_checkpoint, parse_stop):
        for body in ([], "x", None, 3):
            with pytest.raises(BadOrder, match="JSON object"):
                parse(body)
    with pytest.raises(BadOrder, match="generation: missing"):
        parse_stop({"op": "x", "actor": "a1"})


# ---------------------------------------------------------------- snapshots


def _image(directory, payload=b"pages" * 1000):
    directory.mkdir()
    (directory / "checkpoint.img").write_bytes(b"state" * 100)
    (directory / "pages.bin").write_bytes(payload)
    return transfer.describe(directory, actor="a1", version=1, generation=4,
                             requests=("r-1",), created_unix=1.0)  # fmt: skip


def test_file_snapshots_are_committed_whole_private_and_immutable(tmp_path):
    snapshot = _image(tmp_path / "staging")
    final = tmp_path / "store" / "a1" / "v000001-g4"
    uri = f"file://{final}"
    transfer.publish(tmp_path / "staging", snapshot, uri)
    assert manifest.read(final) == snapshot
    assert stat.S_IMODE(final.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in final.iterdir()} == {0o600}
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no leftovers
    with pytest.raises(transfer.AlreadyPublishedError):
        transfer.publish(tmp_path / "staging", snapshot, uri)
    found, where = transfer.fetch(uri, tmp_path / "unused", actor="a1", version=1)
    assert (found, where) == (snapshot, final)  # checked in place, not copied
    assert not (tmp_path / "unused").exists()
    with pytest.raises(transfer.Unusable, match="not a2 v1"):
        transfer.fetch(uri, tmp_path / "unused", actor="a2", version=1)


@pytest.mark.parametrize(
    ("damage", "verdict"),
    [
        (lambda d: (d / "pages.bin").write_bytes(b"x" * 10), "truncated"),
        (lambda d: (d / "pages.bin").write_bytes(b"papes" * 1000), "sha256"),
        (lambda d: (d / "pages.bin").unlink(), "missing"),
        (lambda d: (d / "manifest.json").write_text("{"), "manifest"),
    ],
)
def test_a_damaged_file_snapshot_is_unusable_and_says_why(tmp_path, damage, verdict):
    snapshot = _image(tmp_path / "staging")
    final = tmp_path / "a1-v1"
    transfer.publish(tmp_path / "staging", snapshot, f"file://{final}")
    damage(final)
    with pytest.raises(transfer.Unusable, match=verdict):
        transfer.fetch(f"file://{final}", tmp_path / "into", actor="a1", version=1)


def test_s3_snapshots_round_trip_and_are_checked_on_arrival(tmp_path, s3):
    import s3fs

    snapshot = _image(tmp_path / "staging", payload=bytes(range(256)) * 4096)
    uri = f"s3://{s3.bucket}/actors/a1/v000001-g4"
    transfer.publish(tmp_path / "staging", snapshot, uri, s3.options)
    with pytest.raises(transfer.AlreadyPublishedError):
        transfer.publish(tmp_path / "staging", snapshot, uri, s3.options)
    found, where = transfer.fetch(uri, tmp_path / "down", actor="a1", version=1,
                                  options=s3.options)  # fmt: skip
    assert found == snapshot and where == tmp_path / "down"
    assert (where / "pages.bin").read_bytes() == (tmp_path / "staging" / "pages.bin").read_bytes()
    assert stat.S_IMODE((where / "pages.bin").stat().st_mode) == 0o600

    fs = s3fs.S3FileSystem(**s3.options["s3"])
    fs.pipe_file(f"{uri.removeprefix('s3://')}/pages.bin", b"\0" * (256 * 4096))  # bit rot
    with pytest.raises(transfer.Unusable, match="sha256"):
        transfer.fetch(uri, tmp_path / "down2", actor="a1", version=1, options=s3.options)
    half = f"s3://{s3.bucket}/actors/a1/v000002-g5"  # files, but no manifest: not published
    fs.pipe_file(f"{half.removeprefix('s3://')}/pages.bin", b"x")
    with pytest.raises(transfer.Unusable, match="no manifest"):
        transfer.fetch(half, tmp_path / "down3", actor="a1", version=2, options=s3.options)


# ---------------------------------------------------------------- operations


def test_each_operation_runs_once_and_a_repeat_gets_the_first_answer():
    async def body():
        operations = Operations(kept=2)
        runs = []

        async def work():
            runs.append(1)
            await asyncio.sleep(0.05)
            return Result("op-1", Outcome.OK, seconds=len(runs))

        order = Stop("op-1", "a1", 1)
        first, second = await asyncio.gather(
            operations.run(order, work), operations.run(order, work)
        )
        third = await operations.run(order, work)
        assert runs == [1] and first == second == third and operations.repeats == 2
        with pytest.raises(OpConflict):
            await operations.run(Stop("op-1", "a1", 2), work)
        for i in range(3):  # older answers are forgotten beyond `kept`
            await operations.run(Stop(f"other-{i}", "a1", 1), work)
        await operations.run(order, work)
        assert len(runs) == 5

    asyncio.run(body())


def test_a_cancelled_caller_does_not_cancel_the_operation():
    async def body():
        operations = Operations(kept=8)
        finished = asyncio.Event()

        async def work():
            await asyncio.sleep(0.05)
            finished.set()
            return Result("op", Outcome.OK)

        caller = asyncio.create_task(operations.run(Stop("op", "a1", 1), work))
        await asyncio.sleep(0.01)
        caller.cancel()  # the client hung up; the sandbox work must still finish
        await asyncio.wait_for(finished.wait(), 5)
        assert (await operations.run(Stop("op", "a1", 1), work)).outcome is Outcome.OK

    asyncio.run(body())
