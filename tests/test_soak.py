"""The soak, short: real gVisor actors under a run of faults from the failure model.

``actormux experiment=soak`` runs 30 minutes (a benchmark, numbers in the README); this
runs its machinery for 100 s with five fault kinds, so it cannot rot: every fault is
recovered from without manual steps, nothing acknowledged is lost silently, and the
independent monitor sees no actor run twice.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from gvisor_harness import ACTORMUX, INSTANCE, ROOT, free_port

pytestmark = [pytest.mark.usefixtures("gvisor"), pytest.mark.slow]


def test_a_short_soak_recovers_from_every_fault_and_loses_nothing_silently(tmp_path):
    faults = ["kill_sandbox_in_request", "kill_serve_before_commit", "corrupt_snapshot",
              "kill_locust", "second_serve"]  # fmt: skip
    proc = subprocess.run(
        [ACTORMUX, "experiment=soak", f"backend.instance={INSTANCE}",
         f"backend.port={free_port()}", f"backend.admin_port={free_port()}",
         "backend.duration_s=100", "workload.actors=40", "cluster.workers=4",
         "soak.fault_interval_s=15", "soak.disk_mb=512", f"soak.faults=[{','.join(faults)}]",
         f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "soak.json").read_text())
    assert len(report["faults"]) >= 4
    assert all(f["recovered"] for f in report["faults"]), report["faults"]
    assert report["lost_updates"] == 0 and report["double_activations"] == 0
    assert report["unreadable_actors"] == 0 and report["acknowledged_updates"] > 50
    assert report["monitor_gaps_over_100ms"] == 0
    # Whatever was lost was reported, and named when it could be.
    assert report["reported_lost_updates"] <= sum(x["requests"] for x in report["losses"])
    assert "lost updates (silent) | 0" in (tmp_path / "report.md").read_text()
