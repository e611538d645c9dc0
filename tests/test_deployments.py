"""Choosing a real backend: ``backend=local|kind|gke`` for experiments and ``serve``, and
the cluster sections' checks, each a clear error before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from backends.kube.settings import kube_config

pytestmark = pytest.mark.real  # starts servers or processes: run one at a time

ROOT = Path(__file__).resolve().parent.parent
ACTORMUX = str(Path(sys.executable).parent / "actormux")


def actormux(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ACTORMUX, *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})})  # fmt: skip


def section(name: str, tmp_path: Path, **changes: object) -> dict:
    """The shipped ``backend: <name>`` section, resolved (gke told where its bucket is),
    with a readable agent token and ``changes``."""
    token = tmp_path / "token"
    token.write_text("t" * 32)
    with pytest.MonkeyPatch.context() as env:
        if name == "gke":
            env.setenv("ACTORMUX_SNAPSHOTS", "gs://bucket/snapshots")
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"backend={name}"])
        resolved = OmegaConf.to_container(cfg.backend, resolve=True)
    return {**resolved, "agent_token_file": str(token), **changes}


@pytest.mark.parametrize("name", ["kind", "gke"])
def test_the_shipped_cluster_sections_check_out(name, tmp_path):
    config = kube_config(section(name, tmp_path), workers=8)
    assert config.name == name and config.workers == 8 and config.settings.workers == 8
    assert config.settings.agent_token == "t" * 32
    if name == "kind":
        assert config.settings.snapshots == "s3://actormux/snapshots"
        assert config.settings.storage_options == {
            "s3": {"endpoint_url": "http://actormux-minio:9000"}
        }
    # each run of an experiment keeps its state apart from the deployment's and others'
    one, two = config.for_run(), config.for_run()
    assert one.settings.snapshots.startswith(config.settings.snapshots + "/run-")
    assert one.settings.snapshots != two.settings.snapshots
    assert one.settings.state_namespace != two.settings.state_namespace
    assert one.settings.state_namespace.startswith("actormux-run-")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"snapshots": "http://x/y"}, "backend.snapshots: an s3://, gs:// or file:/// URI"),
        ({"redis_url": "localhost:6379"}, "backend.redis_url: a redis:// URL"),
        ({"storage_options": "{not json"}, "backend.storage_options: not JSON"),
        ({"storage_options": '{"s3": 3}'}, "backend.storage_options: a mapping of protocol"),
        ({"agent_token_file": "/no/such/token"}, "backend.agent_token_file: [Errno 2]"),
        ({"port": 8001}, "backend.admin_port: must differ from backend.port"),
        ({"template": "bash"}, "backend.template: unknown 'bash'"),
        ({"isolate_runs": "yes"}, "backend.isolate_runs: must be true or false"),
        ({"namespace": ""}, "backend.namespace: must be a non-empty string"),
    ],
)
def test_a_bad_cluster_section_is_refused_naming_the_field(change, message, tmp_path):
    with pytest.raises(ValueError) as caught:
        kube_config(section("kind", tmp_path, **change), workers=2)
    assert message in str(caught.value)


def test_a_short_agent_token_is_refused(tmp_path):
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ValueError, match="fewer than 16 characters"):
        kube_config(section("kind", tmp_path, agent_token_file=str(short)), workers=2)


def test_experiments_and_serve_say_what_is_wrong_before_starting(tmp_path):
    # gke needs to be told where its bucket is
    env = {k: v for k, v in os.environ.items() if k != "ACTORMUX_SNAPSHOTS"}
    proc = subprocess.run([ACTORMUX, "backend=gke", f"hydra.run.dir={tmp_path / 'a'}"], cwd=ROOT,
                          capture_output=True, text=True, check=False, env=env)  # fmt: skip
    assert proc.returncode == 2 and "ACTORMUX_SNAPSHOTS" in proc.stderr, proc.stderr
    # kind outside the cluster: no agent token where the pod would have it
    proc = actormux("backend=kind", f"hydra.run.dir={tmp_path / 'b'}")
    assert proc.returncode == 2, proc.stderr
    assert "actormux: bad config: backend.agent_token_file: " in proc.stderr
    proc = actormux("serve", "backend=sim")
    assert proc.returncode == 2 and "needs a real backend" in proc.stderr
    proc = actormux("experiment=soak", "backend=kind", f"hydra.run.dir={tmp_path / 'c'}")
    assert proc.returncode == 2 and "experiment=soak: needs backend=local" in proc.stderr
    assert not (tmp_path / "b" / "summary.json").exists()


def test_the_cluster_defaults_come_from_the_pods_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTORMUX_REDIS_URL", "redis://redis.example:6380/2")
    monkeypatch.setenv(
        "ACTORMUX_STORAGE_OPTIONS", json.dumps({"s3": {"endpoint_url": "http://m:9"}})
    )
    config = kube_config(section("kind", tmp_path), workers=1)
    assert config.settings.redis_url == "redis://redis.example:6380/2"
    assert config.settings.storage_options == {"s3": {"endpoint_url": "http://m:9"}}
