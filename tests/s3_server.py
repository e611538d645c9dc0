"""A real S3-compatible server on loopback for tests: moto's server mode, started as
its own process on a free port, with one bucket. Nothing leaves the machine: the
endpoint is 127.0.0.1 and the credentials are moto's test ones."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUCKET = "actormux-test"


@dataclass(frozen=True)
class S3Server:
    """Where the server listens and the fsspec options that reach it."""

    endpoint: str
    bucket: str

    @property
    def options(self) -> dict[str, dict[str, Any]]:
        """fsspec storage options per protocol."""
        return {
            "s3": {
                "endpoint_url": self.endpoint, "key": "testing", "secret": "testing",
                "client_kwargs": {"region_name": "eu-west-1"}, "skip_instance_cache": True,
            }
        }  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def s3_server(log_dir: Path) -> Iterator[S3Server]:
    """Run ``moto_server`` on 127.0.0.1 until the block ends; one bucket made."""
    import s3fs

    port = _free_port()
    moto = Path(sys.executable).parent / "moto_server"
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    with (log_dir / "moto.log").open("w") as out:
        proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log_dir}/moto.log") from None
                time.sleep(0.1)
        server = S3Server(f"http://127.0.0.1:{port}", BUCKET)
        s3fs.S3FileSystem(**server.options["s3"]).mkdir(BUCKET)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
