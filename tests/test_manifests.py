"""The deployment files, checked offline: every kustomize overlay renders (kubectl's
built-in kustomize) and every object validates against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields are errors); the manifests agree with the
code (ports, labels, arguments the agent and control plane accept); the shell scripts
pass shellcheck. Nothing here talks to a cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from backends.agent.__main__ import _arguments as agent_arguments
from backends.kube.pool import PoolSettings

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = {"kind": ROOT / "backends/kind/manifests", "gke": ROOT / "backends/gke/manifests"}
KUBERNETES = "1.31.0"  # kind's and GKE's regular channel at the time of writing


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        reason = f"{name} is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"manifest checks must run in CI, but: {reason}")
        pytest.skip(reason)
    return found


def render(overlay: Path) -> list[dict]:
    out = subprocess.run([_tool("kubectl"), "kustomize", str(overlay)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_object_of_each_overlay_validates_strictly(overlay):
    objects = render(OVERLAYS[overlay])
    kinds = sorted({f"{o['kind']}/{o['metadata']['name']}" for o in objects})
    for expected in ("StatefulSet/actormux-worker", "Deployment/actormux-control",
                     "Role/actormux-control", "StatefulSet/actormux-redis"):  # fmt: skip
        assert expected in kinds, kinds
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "actormux", obj["metadata"]


def test_a_broken_object_is_caught():
    (worker,) = [o for o in render(OVERLAYS["kind"]) if o["kind"] == "StatefulSet"
                 and o["metadata"]["name"] == "actormux-worker"]  # fmt: skip
    worker["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES, strict=True)


def test_the_manifests_agree_with_the_code():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render(OVERLAYS["kind"])}
    worker = objects[("StatefulSet", "actormux-worker")]
    pod = worker["spec"]["template"]
    assert (
        pod["metadata"]["labels"].items()
        >= {
            "app.kubernetes.io/name": PoolSettings("actormux").statefulset,
        }.items()
    )  # the pool finds worker pods by this label
    assert PoolSettings("actormux").statefulset == worker["metadata"]["name"]
    container = pod["spec"]["containers"][0]
    assert {p["name"] for p in container["ports"]} == {"agent", "actors"}  # pool.py, forward
    args = [a.replace("$(POD_INDEX)", "3").replace("$(ACTORMUX_STORAGE_OPTIONS)", "{}")
            for a in container["args"]]  # fmt: skip
    parsed = agent_arguments(args)  # the agent accepts exactly these
    assert parsed.worker == 3 and parsed.forward_listen == "0.0.0.0:8091"
    role = objects[("Role", "actormux-control")]
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == {"pods", "statefulsets", "statefulsets/scale", "leases"}
    assert objects[("ServiceAccount", "actormux-worker")]["automountServiceAccountToken"] is False
    redis = objects[("StatefulSet", "actormux-redis")]["spec"]["template"]["spec"]
    args = redis["containers"][0]["args"]
    assert args[args.index("--appendfsync") + 1] == "always"  # RedisState requires it


def test_the_scripts_pass_shellcheck():
    scripts = sorted(str(p) for p in (ROOT / "backends").glob("*/*.sh"))
    assert len(scripts) >= 5, scripts
    done = subprocess.run([_tool("shellcheck"), *scripts], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout


def test_the_kind_workflow_uses_only_what_exists():
    workflow = yaml.safe_load((ROOT / ".github/workflows/kind-bench.yml").read_text())
    runs = [step["run"] for step in workflow["jobs"]["kind"]["steps"] if "run" in step]
    makefile = (ROOT / "Makefile").read_text()
    for run in runs:
        for word in run.split():
            if word.startswith("backends/"):
                assert (ROOT / word).is_file(), word
        if run.startswith("make "):
            assert f"\n{run.split()[1]}:" in makefile, run


BENCH = ROOT / "backends/kube/bench"


def _pods(objects: list[dict]) -> dict[str, dict]:
    """Name -> pod spec of every Deployment, StatefulSet and Job."""
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objects
            if o["kind"] in ("Deployment", "StatefulSet", "Job")}  # fmt: skip


def test_the_bench_job_validates_and_gets_what_its_config_reads():
    (job,) = render(BENCH)
    kubernetes_validate.validate(job, KUBERNETES, strict=True)
    assert job["metadata"]["namespace"] == "actormux"
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {var["name"]: var for var in container["env"]}
    config = (ROOT / "conf/backend/kind.yaml").read_text()
    for name in ("ACTORMUX_NAMESPACE", "ACTORMUX_REDIS_URL", "ACTORMUX_SNAPSHOTS",
                 "ACTORMUX_STORAGE_OPTIONS"):  # fmt: skip
        assert "${oc.env:" + name in config, name  # what conf/backend/kind.yaml reads ...
        assert name in env, name  # ... the Job gives
    # The ConfigMap keys it takes are the ones the up scripts make (secrets.sh).
    made = (ROOT / "backends/kube/secrets.sh").read_text()
    for var in env.values():
        ref = var.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert f"--from-literal={ref['key']}=" in made, ref
    # The agent token is mounted where the config's default looks for it.
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["agent-token"]
    assert f"ACTORMUX_AGENT_TOKEN_FILE,{mount}/token}}" in config
    assert "actormux bench real" in container["args"][0]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_pods_that_run_as_the_images_user_can_read_their_secrets(overlay):
    """The control image runs as 65534 (USER in its Dockerfile): its pods must run as
    that user with that fsGroup, and their secret files must be group-readable."""
    dockerfile = (ROOT / "backends/kube/images/control.Dockerfile").read_text()
    assert "\nUSER 65534:65534\n" in dockerfile
    pods = _pods(render(OVERLAYS[overlay]) + render(BENCH))
    for name in ("actormux-control", "actormux-bench"):
        pod = pods[name]
        context = pod["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (65534,) * 3
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] & 0o040, (name, volume)


def test_the_control_plane_runs_actormux_serve_with_arguments_it_accepts(tmp_path):
    """The Deployment runs `actormux serve backend=$(ACTORMUX_BACKEND) ...`: the same
    configured policies as the simulator. Its arguments make a valid config of both
    cluster backends, listening where the Service reaches it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from backends.kube.settings import kube_config
    from experiments.runs.build import build

    objects = {(o["kind"], o["metadata"]["name"]): o for o in render(OVERLAYS["kind"])}
    pod = objects[("Deployment", "actormux-control")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["actormux"] and container["args"][0] == "serve"
    env = {var["name"] for var in container["env"]}
    assert "ACTORMUX_BACKEND" in env
    token = tmp_path / "token"
    token.write_text("t" * 32)
    for backend in ("kind", "gke"):
        overrides = [a.replace("$(ACTORMUX_BACKEND)", backend) for a in container["args"][1:]
                     if not a.startswith("hydra.")]  # fmt: skip
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ACTORMUX_SNAPSHOTS", "gs://bucket/snapshots")
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("config", overrides=overrides)
            spec = build(cfg)
            section = OmegaConf.to_container(cfg.backend, resolve=True)
        config = kube_config({**section, "agent_token_file": str(token)}, workers=spec.workers)
        assert config.name == backend and config.listen_host == "0.0.0.0"
        ports = {p["containerPort"] for p in container["ports"]}
        assert ports == {config.port, config.admin_port}
