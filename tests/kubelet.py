"""A STAND-IN for what a cluster's nodes do, for tests against the emulated API server
(``kube_emulator.py``): it is not a kubelet. Every 50 ms it does, against the API:

* the StatefulSet controller's part: a pod ``<set>-<i>`` for each ``i`` below
  ``spec.replicas`` (created again if it disappears, with a new uid), and the pods above
  it stopped (SIGTERM to the agent, which removes its sandboxes) and deleted;
* the kubelet's part: for each pod, a real worker agent process (``python -m
  backends.agent``, real runsc) for worker ``i`` of the test instance; then the pod's
  status says Running, Ready, IP 127.0.0.1, and its ``actormux.dev/agent-port``
  annotation where the agent listens (all agents share one IP here); with ``forward``,
  each agent also forwards actor traffic (``--forward-listen``);
* a pod deleted by someone else is treated as a lost node: its agent is killed (-9)
  and its sandboxes with it, by their container ids.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gvisor_harness import INSTANCE, RUN_DIR, start_agent, stop_agent

from backends.gvisor.names import WorkerNames, parse_sandbox_id
from backends.gvisor.runsc import Runsc
from backends.kube.api import KubeAPIs
from backends.kube.pool import AGENT_PORT_ANNOTATION

log = logging.getLogger("tests.kubelet")


def create_worker_statefulset(apis: KubeAPIs, namespace: str, name: str) -> None:
    """An empty worker StatefulSet (0 replicas) for the stand-in to follow."""
    labels = {"app.kubernetes.io/name": name}
    apis.apps.create_namespaced_stateful_set(namespace, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {"replicas": 0, "serviceName": name, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "agent", "image": "x"}]}}},
    })  # fmt: skip


@dataclass
class _Agent:
    uid: str
    worker: int
    proc: subprocess.Popen
    url: str


class StandInKubelet:
    """See the module docstring."""

    def __init__(
        self, apis: KubeAPIs, namespace: str, statefulset: str, log_dir: Path,
        storage_options: dict | None = None, *, forward: bool = False,
    ) -> None:  # fmt: skip
        self.apis, self.namespace, self.statefulset = apis, namespace, statefulset
        self.log_dir, self.storage_options = log_dir, storage_options
        self.agent_args = ("--forward-listen", "127.0.0.1:0") if forward else ()
        self.agents: dict[str, _Agent] = {}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> StandInKubelet:
        """Begin acting."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop acting; stop every agent (they remove their sandboxes)."""
        self._stop.set()
        self._thread.join(timeout=120)
        for agent in self.agents.values():
            stop_agent(agent.proc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as e:  # the test reads these
                log.exception("stand-in kubelet step failed")
                self.errors.append(e)
            self._stop.wait(0.05)

    def _selector(self) -> str:
        return f"app.kubernetes.io/name={self.statefulset}"

    def _step(self) -> None:
        core, apps = self.apis.core, self.apis.apps
        replicas = apps.read_namespaced_stateful_set(self.statefulset, self.namespace).spec.replicas
        pods = {
            pod.metadata.name: pod
            for pod in core.list_namespaced_pod(
                self.namespace, label_selector=self._selector()
            ).items
        }
        for name, agent in list(self.agents.items()):
            pod = pods.get(name)
            if pod is None or pod.metadata.uid != agent.uid:  # deleted under it: node lost
                self._kill(agent)
                del self.agents[name]
        for index in range(replicas):
            name = f"{self.statefulset}-{index}"
            if name not in pods:
                pods[name] = core.create_namespaced_pod(self.namespace, self._pod(name))
        for name, pod in pods.items():
            index = int(name.rsplit("-", 1)[1])
            if index >= replicas:
                agent = self.agents.pop(name, None)
                if agent is not None:
                    stop_agent(agent.proc)
                core.delete_namespaced_pod(name, self.namespace)
            elif name not in self.agents:
                self._run(name, pod.metadata.uid, index)

    def _pod(self, name: str) -> dict:
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": self.statefulset}},
            "spec": {"containers": [{"name": "agent", "image": "actormux-worker",
                                     "ports": [{"name": "agent", "containerPort": 8090}]}]},
        }  # fmt: skip

    def _run(self, name: str, uid: str, index: int) -> None:
        proc, url = start_agent(index, self.log_dir, self.storage_options, *self.agent_args)
        self.agents[name] = _Agent(uid, index, proc, url)
        port = url.rsplit(":", 1)[1]
        core = self.apis.core
        core.patch_namespaced_pod(
            name, self.namespace, {"metadata": {"annotations": {AGENT_PORT_ANNOTATION: port}}}
        )
        core.patch_namespaced_pod_status(name, self.namespace, {"status": {
            "phase": "Running", "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        }})  # fmt: skip

    def _kill(self, agent: _Agent) -> None:
        """A lost node: the agent dies (-9) with every process of its group (a runsc
        restore it started, say), and so do its sandboxes, by container id."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.proc.pid, signal.SIGKILL)
        agent.proc.wait(timeout=30)
        runsc = Runsc(RUN_DIR / "runsc")
        netns_path = WorkerNames(INSTANCE, agent.worker).netns_path
        quiet = 0
        while quiet < 5:  # until no sandbox of this worker has been alive for 5 looks
            alive = [
                c.id for c in runsc.containers() or []
                if parse_sandbox_id(c.id) is not None and c.netns_path == netns_path
                and runsc.alive(c.id)
            ]  # fmt: skip
            for cid in alive:
                runsc.kill_process(cid)
            quiet = 0 if alive else quiet + 1
            time.sleep(0.02)
