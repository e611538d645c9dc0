"""The simulator's records: compact columns, and a request log that spills ended
requests to disk gives the same tables as one that holds everything."""

from __future__ import annotations

import gc
import glob
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from control.metrics import ACTIVATION_COLUMNS, ActivationRow, table
from experiments.runs.build import build
from experiments.runs.runner import make_simulation
from sim.records import RequestLog, RowLog


def _spill_dirs() -> set[str]:
    return set(glob.glob(f"{tempfile.gettempdir()}/actormux-requests-*"))


def _open_spill_files() -> set[str]:
    """This process's open temporary files that have no name (deleted or never named)."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(tempfile.gettempdir()) and target.endswith("(deleted)"):
            found.add(f"{fd.name}:{target}")
    return found


def test_a_run_that_spills_requests_gives_the_same_tables_and_leaves_no_files(compose_cfg):
    spec = build(compose_cfg("experiment=oversub_250_on_8", "duration_s=120"))
    held = make_simulation(spec).run()
    before, unnamed_before = _spill_dirs(), _open_spill_files()
    sim = make_simulation(spec)
    sim._log = RequestLog(spill_rows=64)  # spill every few dozen requests
    spilled = sim.run()
    assert sim._log.spilled_rows > len(held.requests["request"]) // 2
    assert _spill_dirs() == before  # anonymous files: nothing to find, killed or not
    for name in ("requests", "activations", "checkpoints"):
        one, other = getattr(held, name), getattr(spilled, name)
        assert list(one) == list(other)
        for column in one:
            assert one[column].dtype == other[column].dtype, column
            np.testing.assert_array_equal(one[column], other[column], err_msg=column)
    del spilled, sim, one, other
    gc.collect()
    assert _open_spill_files() <= unnamed_before  # the maps held the space, now it is gone


def test_spilled_rows_are_in_anonymous_files_that_a_killed_run_leaves_nowhere():
    unnamed_before = _open_spill_files()
    log = RequestLog(spill_rows=2)
    for t in range(5):
        log.outcome[log.add(float(t), t, 1.0) - log.base] = 0
    assert len(_open_spill_files() - unnamed_before) == 11  # a file a column, no names
    assert _spill_dirs() == set()  # nothing named on disk while the run goes on
    np.testing.assert_array_equal(log.columns()["arrival"], [0.0, 1.0, 2.0, 3.0, 4.0])
    assert _open_spill_files() <= unnamed_before


def test_a_request_that_ended_and_was_spilled_cannot_be_changed_again():
    log = RequestLog(spill_rows=4)
    rids = [log.add(float(t), t, 1.0) for t in range(3)]
    for rid in rids[:2]:
        log.outcome[rid - log.base] = 0
    log.add(3.0, 3, 1.0)  # the fourth row spills the two that ended, not the open one
    assert log.base == 2 and log.spilled_rows == 2 and len(log) == 4
    assert log.outcome[rids[2] - log.base] == -1  # still open, still in memory
    columns = log.columns()
    np.testing.assert_array_equal(columns["arrival"], [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(columns["outcome"], [0, 0, -1, -1])
    with pytest.raises(ValueError):
        RequestLog(spill_rows=0)


def test_rows_stored_as_columns_match_the_tuples_they_replace():
    rows = [
        ActivationRow.of("a1", "w0", "n0", 0.0, cold=True, cache_hit=False, snapshot_bytes=0,
                         control_plane_s=0.001, download_s=0.0, restore_s=0.5),
        ActivationRow.of("a22", "w13", "n0", 1.5, cold=False, cache_hit=True,
                         snapshot_bytes=7 << 20, control_plane_s=0.0, download_s=0.0,
                         restore_s=0.25),
    ]  # fmt: skip
    log = RowLog(ActivationRow)
    for row in rows:
        log.append(row)
    got, want = log.table(), table(ACTIVATION_COLUMNS, rows)
    assert list(got) == list(want)
    for column in want:
        if want[column].dtype.kind == "U":  # names: objects sharing one str per name
            assert got[column].dtype == object, column
            assert got[column].tolist() == want[column].tolist(), column
        else:
            assert got[column].dtype == want[column].dtype, column
            np.testing.assert_array_equal(got[column], want[column])
    assert got["worker"][0] is log.table()["worker"][0]  # one str per name
    empty = RowLog(ActivationRow).table()
    assert {c: v.size for c, v in empty.items()} == dict.fromkeys(ACTIVATION_COLUMNS, 0)
