"""Reaching the Kubernetes API: in a pod, with its service account; elsewhere, with the
kubeconfig; or at an explicit address (a local proxy, or the emulator in the tests)."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client, config


@dataclass(frozen=True)
class KubeAPIs:
    """The API groups actormux uses."""

    core: client.CoreV1Api
    apps: client.AppsV1Api
    coordination: client.CoordinationV1Api


def connect(host: str | None = None, *, context: str | None = None) -> KubeAPIs:
    """The APIs at ``host`` (e.g. ``http://127.0.0.1:8001`` from ``kubectl proxy``), or,
    without one, in-cluster configuration if running in a pod, else the kubeconfig."""
    if host is not None:
        configuration = client.Configuration()
        configuration.host = host
        api = client.ApiClient(configuration)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config(context=context)
        api = client.ApiClient()
    return KubeAPIs(client.CoreV1Api(api), client.AppsV1Api(api), client.CoordinationV1Api(api))
