"""``actormux experiment=... backend=kind`` end to end, the way the bench Job runs it in a
cluster (settings from the pod's environment), but against the EMULATED Kubernetes API
server (``kube_emulator.py``), a stand-in for the nodes running real worker agents with
real runsc (``kubelet.py``), a real redis-server and a real S3-compatible server (moto)
on loopback: the run scales the worker StatefulSet, makes the golden snapshot through a
worker pod's agent, copies it in the object store for every actor, plays the plan with
Locust through the router and the agents' forwarders, reads every actor back, writes
the same summary as a local run, and removes its own Redis keys and snapshots."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import redis
from gvisor_harness import ACTORMUX, AGENT_TOKEN, INSTANCE, ROOT, free_port
from kube_emulator import emulated_api
from kubelet import StandInKubelet, create_worker_statefulset

from backends.kube.api import connect

pytestmark = pytest.mark.usefixtures("gvisor")
NAMESPACE = "actormux"
WORKERS = "actormux-worker"


def test_an_experiment_runs_on_an_emulated_cluster_and_cleans_up_after_itself(
    tmp_path: Path, redis_server, s3
):
    import s3fs

    root = f"{s3.bucket}/{uuid.uuid4().hex}"
    token_file = tmp_path / "agent-token"
    token_file.write_text(AGENT_TOKEN + "\n")
    out = tmp_path / "run"
    with emulated_api(tmp_path) as api_server:
        apis = connect(api_server.url)
        create_worker_statefulset(apis, NAMESPACE, WORKERS)
        kubelet = StandInKubelet(apis, NAMESPACE, WORKERS, tmp_path, s3.options, forward=True)
        kubelet.start()
        try:
            env = {
                **os.environ,
                "ACTORMUX_API_HOST": api_server.url,
                "ACTORMUX_REDIS_URL": redis_server.url,
                "ACTORMUX_SNAPSHOTS": f"s3://{root}",
                "ACTORMUX_STORAGE_OPTIONS": json.dumps(s3.options),
                "ACTORMUX_AGENT_TOKEN_FILE": str(token_file),
                "POD_NAME": "bench-0",
            }
            proc = subprocess.run(
                [ACTORMUX, "experiment=oversub_250_on_8", "backend=kind",
                 f"backend.instance={INSTANCE}", f"backend.port={free_port()}",
                 "backend.duration_s=15", f"hydra.run.dir={out}", "workload=bursty",
                 "workload.actors=10", "cluster.workers=3",
                 "workload.think_time='lognormal(median=6, sigma=0.5)'"],
                cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            scale = apis.apps.read_namespaced_stateful_set(WORKERS, NAMESPACE)
            assert scale.spec.replicas == 3  # the run asked the API for its workers
        finally:
            kubelet.close()
        assert kubelet.errors == []

    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "kind" and summary["workers"] == 3 and summary["actors"] == 10
    assert summary["requests"] > 10 and summary["activations"] >= 3
    assert summary["restore_latency_s"]["p50"] is not None  # actors started from copies
    assert summary["lost_updates"] == summary["unacknowledged_updates"] == 0
    assert summary["unreadable_actors"] == 0 and summary["verified_actors"] >= 3
    assert summary["double_activations"] == summary["double_activations_driver"] == 0
    assert summary["monitor_samples"] == 0  # no independent monitor on a cluster
    assert summary["client_requests"] == summary["requests"]
    simulated = json.loads((out / "sim_summary.json").read_text())
    assert set(simulated) <= set(summary)  # the simulator's schema, and more
    report = (out / "report.md").read_text()
    assert "Real vs simulated" in report and "the driver's account" in report

    # The run kept its state apart (its own Redis namespace and snapshot prefix) and
    # removed both: nothing of it is left.
    client = redis.Redis.from_url(redis_server.url)
    assert list(client.scan_iter(match="*run-*")) == []
    fs = s3fs.S3FileSystem(**s3.options["s3"])
    assert not fs.exists(root) or fs.find(root) == []


def test_serve_runs_the_configured_policies_on_an_emulated_cluster(tmp_path, redis_server, s3):
    """`actormux serve backend=kind`, as the control Deployment runs it: it leads, scales
    the workers, serves an actor through the router and the admin API, and on SIGTERM
    checkpoints it and exits 0."""
    import signal
    import urllib.request

    from gvisor_harness import wait_for

    token_file, admin_file = tmp_path / "agent-token", tmp_path / "admin-token"
    token_file.write_text(AGENT_TOKEN + "\n")
    admin_file.write_text("admin-token-0123456789abcdef\n")
    port, admin_port = free_port(), free_port()
    with emulated_api(tmp_path) as api_server:
        apis = connect(api_server.url)
        create_worker_statefulset(apis, NAMESPACE, WORKERS)
        kubelet = StandInKubelet(apis, NAMESPACE, WORKERS, tmp_path, s3.options, forward=True)
        kubelet.start()
        snapshots = f"s3://{s3.bucket}/{uuid.uuid4().hex}"
        env = {
            **os.environ, "ACTORMUX_API_HOST": api_server.url,
            "ACTORMUX_REDIS_URL": redis_server.url, "ACTORMUX_SNAPSHOTS": snapshots,
            "ACTORMUX_STORAGE_OPTIONS": json.dumps(s3.options),
            "ACTORMUX_AGENT_TOKEN_FILE": str(token_file),
            "ACTORMUX_ADMIN_TOKEN_FILE": str(admin_file), "POD_NAME": "control-0",
        }  # fmt: skip
        serve = subprocess.Popen(
            [ACTORMUX, "serve", "backend=kind", f"backend.instance={INSTANCE}",
             f"backend.port={port}", f"backend.admin_port={admin_port}", "cluster.workers=2",
             "policy=substrate", f"hydra.run.dir={tmp_path / 'serve'}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            wait_for(admin_port, serve, timeout=180)
            headers = {"Authorization": "Bearer admin-token-0123456789abcdef",
                       "Content-Type": "application/json"}  # fmt: skip
            create = urllib.request.Request(
                f"http://127.0.0.1:{admin_port}/actors", method="POST", headers=headers,
                data=json.dumps({"id": "s1", "template": "counter"}).encode(),
            )  # fmt: skip
            with urllib.request.urlopen(create, timeout=30) as answer:
                assert answer.status in (200, 201)
            for expected in (1, 2):
                call = urllib.request.Request(
                    f"http://127.0.0.1:{port}/", method="POST",
                    headers={"Host": "s1.actors.local", "X-Request-Id": f"r{expected}"},
                )  # fmt: skip
                with urllib.request.urlopen(call, timeout=60) as answer:
                    assert json.loads(answer.read())["count"] == expected
            scale = apis.apps.read_namespaced_stateful_set(WORKERS, NAMESPACE)
            assert scale.spec.replicas == 2  # cluster.workers, through the API
        finally:
            serve.send_signal(signal.SIGTERM)
            out, _ = serve.communicate(timeout=180)
            kubelet.close()
    assert serve.returncode == 0, out[-3000:]
    assert "stopping: checkpointing running actors" in out and "backend=kind" in out
    assert kubelet.errors == []
    from backends.agent import transfer

    assert max(transfer.published(snapshots, "s1", s3.options)) >= 1  # saved on the way out
