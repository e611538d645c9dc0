"""Where a real run runs: the ``backend:`` section, checked, as a
:class:`backends.protocol.Deployment` for ``local``, ``kind`` or ``gke``.

The one place that maps a backend name to its config checker, so that experiments,
``serve``, the bench and the fidelity procedure take any real backend alike.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from backends.protocol import Deployment
from experiments.runs.build import RunSpec

REAL_BACKENDS = ("local", "kind", "gke")


class NotHere(RuntimeError):  # noqa: N818 - a verdict on this machine
    """The backend cannot run on this machine (the message says why)."""


def deployment(
    section: Mapping[str, Any], spec: RunSpec, *, state_dir: Path | None = None
) -> Deployment:
    """The checked section (``ValueError`` if bad; :class:`NotHere` if it cannot run
    here). ``state_dir``: where a local run keeps its state (a cluster run keeps its
    own Redis namespace and snapshot prefix instead)."""
    name = section.get("name")
    if name == "local":
        from backends.local.settings import local_config, runsc_unusable_reason

        local = local_config(
            section, workers=spec.workers, state_dir=state_dir,
            resume_on_every_request=spec.resume_on_every_request,
            retention=spec.make_retention(),
        )  # fmt: skip
        reason = runsc_unusable_reason(local.settings.python)
        if reason:
            raise NotHere(f"backend=local cannot run here: {reason}")
        return local
    if name in ("kind", "gke"):
        try:
            from backends.kube.settings import kube_config
        except ImportError as e:  # the cluster extra is not installed
            raise NotHere(
                f"backend={name} needs the kube extra (pip install -e .[kube]): {e}"
            ) from e
        cluster = kube_config(
            section, workers=spec.workers, resume_on_every_request=spec.resume_on_every_request
        )
        return cluster.for_run() if state_dir is not None else cluster
    raise ValueError(f"backend.name: {name!r} is not a real backend ({', '.join(REAL_BACKENDS)})")


def section_of(cfg: DictConfig) -> dict[str, Any]:
    """The resolved ``backend`` section of a Hydra config."""
    return OmegaConf.to_container(cfg.backend, resolve=True)  # type: ignore[return-value]


def deployment_or_exit(
    cfg: DictConfig, spec: RunSpec, *, state_dir: Path | None = None, command: str = "actormux"
) -> Deployment:
    """:func:`deployment`, or print why not and exit: 2 for a bad config, 3 when the
    backend cannot run on this machine."""
    try:
        return deployment(section_of(cfg), spec, state_dir=state_dir)
    except NotHere as e:
        _exit(f"{command}: {e}", 3)
    except ValueError as e:
        _exit(f"{command}: bad config: {e}", 2)


def _exit(message: str, status: int) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(status)
