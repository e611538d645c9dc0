"""Trace replay: the shipped Azure trace, the generic format, and malformed files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from experiments.runs.build import ConfigError, build
from experiments.runs.runner import simulate
from sim.distributions import Fixed
from workloads.base import concat
from workloads.trace import TraceError, TraceWorkload, assign_actors, read_trace

ROOT = Path(__file__).resolve().parent.parent
AZURE = ROOT / "data" / "azure_llm_conv_2023.csv"


def test_the_shipped_azure_trace_is_the_recorded_copy():
    digest = hashlib.sha256(AZURE.read_bytes()).hexdigest()
    assert digest in (ROOT / "data" / "README.md").read_text()


def test_azure_trace_reads_with_service_times_from_tokens():
    trace = read_trace(AZURE, prefill_tokens_per_s=1000, decode_tokens_per_s=10)
    assert trace.format == "azure" and trace.actors is None
    assert trace.times.size == 19_366
    assert trace.times[0] == 0 and trace.times[-1] == pytest.approx(3501.72, abs=0.01)
    assert (np.diff(trace.times) >= 0).all()
    # First row: 374 context and 44 generated tokens.
    assert trace.service_s[0] == pytest.approx(374 / 1000 + 44 / 10)


def test_azure_trace_replays_in_the_simulator(compose_cfg):
    cfg = compose_cfg("workload=trace", "duration_s=300", "cluster.workers=16")
    out = simulate(build(cfg))
    s = out.summary
    assert 1_000 < s["requests"] < 2_500  # ~5.5 requests/s
    assert s["ok"] + s["rejected"] + s["timed_out"] == s["requests"]
    trace_times = read_trace(AZURE).times
    np.testing.assert_allclose(
        np.sort(out.result.requests["arrival_s"]), trace_times[trace_times < 300], atol=1e-6
    )


def test_time_scale_and_window_pick_the_right_requests():
    trace = read_trace(AZURE)
    wl = TraceWorkload(trace, time_scale=2.0, window_start_s=1000.0)
    (batch,) = wl.start(600.0, seed=0).batches
    expected = trace.times[(trace.times * 2 >= 1000) & (trace.times * 2 < 1600)] * 2 - 1000
    np.testing.assert_allclose(batch.times, expected)


def test_session_assignment_is_seeded_bursty_and_skewed():
    times = read_trace(AZURE).times
    n = times.size

    def assign(seed, zipf=0.5, sessions=16):
        rng = np.random.default_rng(seed)
        return assign_actors(250, n, rng, zipf=zipf, concurrent_sessions=sessions,
                             calls_per_session=Fixed(6))  # fmt: skip

    a = assign(5)
    np.testing.assert_array_equal(a, assign(5))
    assert not np.array_equal(a, assign(6))
    counts = np.bincount(assign(5, zipf=1.0), minlength=250)
    assert counts[:10].sum() > 5 * counts[-10:].sum()  # Zipf: low ranks far busier
    # Sessions: an actor's calls come in runs of 6, ~16 / 5.5 req/s apart, then a pause.
    gaps = np.concatenate([np.diff(times[a == x]) for x in range(250)])
    in_session = np.median(np.sort(gaps)[: len(gaps) * 5 // 6])
    assert 1.0 < in_session < 6.0
    assert np.percentile(gaps, 95) > 60  # idle between sessions


def test_generic_trace_with_actors_and_service(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("timestamp,actor,service_s\n0,alice,0.5\n1.5,bob,0.2\n2,alice,1\n")
    trace = read_trace(path, service_column="service_s")
    wl = TraceWorkload(trace)
    run = wl.start(10.0, seed=0)
    batch = concat(list(run.batches))
    assert run.population.ids == ["alice", "bob"]
    assert batch.actors.tolist() == [0, 1, 0]
    assert batch.service_s.tolist() == [0.5, 0.2, 1.0]
    # Names that are not DNS labels get generated ids.
    path.write_text("timestamp,actor\n0,Alice_1\n1,Bob\n")
    run = TraceWorkload(read_trace(path), service=Fixed(0.1)).start(10.0, 0)
    assert run.population.ids == ["a0", "a1"]


def test_generic_trace_accepts_iso_datetimes(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("timestamp\n2024-01-01T00:00:00\n2024-01-01T00:00:01.5\n")
    assert read_trace(path).times.tolist() == [0.0, 1.5]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "t.csv: the file is empty"),
        ("timestamp\n", "t.csv: the trace has a header but no requests"),
        ("time,actor\n1,a\n", "t.csv: no timestamp column 'timestamp'"),
        ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n", "timestamp column"),
        ("timestamp\n1\n2\nyesterday\n", "t.csv:4: cannot parse timestamp 'yesterday'"),
        ("timestamp\n1\n3\n2\n", "t.csv:4: timestamps out of order ('2' after '3')"),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,-1\n",
            "t.csv:2: GeneratedTokens must be a number >= 0",
        ),
        ("timestamp,actor\n1,a\n2,\n", "t.csv:3: empty actor"),
    ],
)
def test_bad_traces_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert message in str(err.value)


def test_missing_trace_fails_before_the_run(compose_cfg):
    with pytest.raises(ConfigError, match=r"workload\.path: no such file"):
        build(compose_cfg("workload=trace", "workload.path=/no/such/trace.csv"))
