"""Shared fixtures: composing the project's Hydra configs, as a user's run would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def pytest_collection_modifyitems(config, items):
    """Mark ``real`` every test that uses real gVisor sandboxes (the ``gvisor`` fixture),
    besides the modules that mark themselves (servers, Locust): ``make pytest`` runs
    the others on both cores (pytest-xdist), then these one at a time, as their timing
    and their fixed backend instance need."""
    for item in items:
        if "gvisor" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real)
            item.add_marker(pytest.mark.gvisor)


@pytest.fixture
def compose_cfg():
    """Compose ``conf/config.yaml`` with overrides; progress bars off."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                "config",
                overrides=["backend.progress=false", *overrides],
                return_hydra_config=True,
            )

    return _compose


@pytest.fixture
def gvisor():
    """Real gVisor sandboxes on backend instance 7: skip outside CI when runsc cannot run
    here (saying why), fail in CI; clean instance 7 before and check it is clean after."""
    from backends.local.cleanup import cleanup, leftovers
    from backends.local.settings import runsc_unusable_reason

    reason = runsc_unusable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"gVisor tests must run in CI, but: {reason}")
        pytest.skip(f"gVisor cannot run here: {reason}")
    cleanup(7, discard=True)
    yield
    cleanup(7, discard=True)
    assert leftovers(7) == []


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3-compatible server (moto's server mode) on loopback, with one bucket."""
    from s3_server import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on loopback, fsyncing every write; skipped outside CI when the
    Debian package is missing (saying so), a failure in CI."""
    from redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        reason = "redis-server is not installed (apt-get install -y redis-server)"
        if os.environ.get("CI"):
            pytest.fail(f"Redis tests must run in CI, but: {reason}")
        pytest.skip(reason)
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
