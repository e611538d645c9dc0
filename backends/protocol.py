"""What every real backend offers, and what a run needs to know about where it runs.

Two halves, so that experiments (``experiments/real/run.py``), ``serve`` and the bench
work with any real backend without knowing which:

* the driver is a :class:`backends.controlplane.ControlPlane`: the router and the admin
  API talk to that, and a run prepares, opens, closes, samples it and gives it actors
  (optionally starting from a template's :class:`GoldenImage`).
  :class:`backends.local.driver.LocalBackend` (runsc on this machine, in process or
  through worker agents) and :class:`backends.kube.backend.KubeBackend` (worker pods on
  a cluster) are the two;
* :class:`Deployment` is a checked ``backend:`` config section: it makes the driver for
  a controller, says where the router listens and how many workers there are, and
  tidies up around a run (``backends.local.settings.LocalConfig``,
  ``backends.kube.settings.KubeConfig``).

The simulator drives the same controller (``control/``) in virtual time instead; the
experiment layer puts all three behind one entry point (``experiments/backends.py``),
and all three write the same summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from backends.local.router import RouterLimits
from control.controller import Controller
from control.recovery import RecoverySettings

if TYPE_CHECKING:
    from backends.controlplane import ControlPlane


class MonitorReport(Protocol):
    """What an independent double-activation monitor saw."""

    @property
    def double_activations(self) -> int: ...

    @property
    def samples(self) -> int: ...

    @property
    def max_gap_s(self) -> float: ...

    @property
    def gaps_over_100ms(self) -> int: ...


class Monitor(Protocol):
    """An independent check, while a run lasts, that no actor is ever alive twice."""

    def stop(self) -> MonitorReport: ...


class Deployment(Protocol):
    """A checked ``backend:`` section of a real backend (see the module docstring)."""

    @property
    def name(self) -> str:
        """``local``, ``kind`` or ``gke``."""
        ...

    @property
    def port(self) -> int:
        """The router's, on 127.0.0.1."""
        ...

    @property
    def listen_host(self) -> str:
        """Where ``serve`` listens: 127.0.0.1, or, for a control plane in a pod, the
        pod's addresses (0.0.0.0) so that its Service reaches it."""
        ...

    @property
    def admin_port(self) -> int:
        """The admin API's, on 127.0.0.1."""
        ...

    @property
    def actor_domain(self) -> str: ...

    @property
    def router(self) -> RouterLimits: ...

    @property
    def template(self) -> str:
        """What experiment actors run."""
        ...

    @property
    def duration_s(self) -> float | None:
        """Experiments: real seconds of load (None: the experiment's)."""
        ...

    @property
    def workers(self) -> int: ...

    @property
    def request_timeout_s(self) -> float: ...

    def recovery(self, configured: RecoverySettings) -> RecoverySettings: ...

    def make_backend(self, controller: Controller) -> ControlPlane: ...

    def actor_templates(self, actors: int) -> list[str]:
        """Each experiment actor's template, in population order."""
        ...

    def before_run(self) -> None:
        """Remove what an earlier crashed run of this deployment left."""
        ...

    def after_run(self) -> None:
        """Remove what this run made (its sandboxes, snapshots and state)."""
        ...

    def start_monitor(self, backend: ControlPlane, out: Path) -> Monitor | None:
        """An independent double-activation monitor, where the deployment has one."""
        ...
