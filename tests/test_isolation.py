"""Actors are isolated, tested as an attacker would: a hostile actor (``tests/actors``)
reports what it can see and reach from inside a real gVisor sandbox."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import threading
from pathlib import Path

import pytest
from gvisor_harness import INSTANCE, RUN_DIR, harness

from backends.gvisor import firewall
from backends.gvisor.catalog import Template

pytestmark = pytest.mark.usefixtures("gvisor")
HOSTILE = Template(
    "hostile", ("/usr/bin/python3", "/app/hostile.py", "8080"),
    directory=Path(__file__).resolve().parent / "actors",
)  # fmt: skip


def host_service() -> tuple[socket.socket, list[bytes]]:
    """A service on the host listening on every address, recording what reaches it."""
    server = socket.create_server(("0.0.0.0", 0))
    got: list[bytes] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            got.append(conn.recv(100))
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return server, got


def test_an_actor_sees_only_its_own_minimal_root_as_nobody(tmp_path):
    async def body():
        async with harness(tmp_path, extra_templates=[HOSTILE]) as h:
            h.backend.create_actor("victim", "counter")
            assert (await h.call("victim"))[0] == 200
            await h.suspend("victim")  # a snapshot another actor might want to read
            h.backend.create_actor("evil", "hostile")

            async def ask(kind: str, **args: str) -> dict:
                query = "&".join(f"{k}={v}" for k, v in args.items())
                status, data, _ = await h.call("evil", "GET", path=f"/{kind}?{query}")
                assert status == 200, data
                return json.loads(data)

            assert await ask("whoami") == {"uid": 65534, "gid": 65534}
            root = (await ask("list", path="/"))["entries"]
            # (gVisor adds /sys: its own synthetic sysfs, not the host's)
            allowed = {"usr", "app", "proc", "tmp", "dev", "sys", "bin", "lib", "lib64", "sbin"}
            assert set(root) <= allowed, root
            victim_image = h.backend.store.path("victim", 1) / "checkpoint.img"
            secrets = [
                "/etc/shadow", "/etc/passwd", str(RUN_DIR / ".lock"), str(RUN_DIR / "state_dir"),
                str(h.backend.settings.state_dir / "state.sqlite"), str(victim_image),
                "/root/.bash_history",
            ]  # fmt: skip
            for path in secrets:
                assert Path(path).exists() or "bash_history" in path or "shadow" in path
                seen = await ask("read", path=path)
                assert seen.get("error") == "FileNotFoundError", (path, seen)
            for path in ("/usr/evil", "/app/evil", "/evil"):
                assert "error" in await ask("write", path=path), path
            assert (await ask("write", path="/tmp/scratch")) == {"written": True}

            # The host's files are private too.
            state = h.backend.settings.state_dir
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
            assert stat.S_IMODE((state / "state.sqlite").stat().st_mode) == 0o600
            assert stat.S_IMODE(victim_image.stat().st_mode) == 0o600

    asyncio.run(body())


def test_an_actor_reaches_no_host_service_and_no_other_actor(tmp_path):
    async def body():
        server, got = host_service()
        port = server.getsockname()[1]
        try:
            async with harness(tmp_path, extra_templates=[HOSTILE]) as h:
                h.backend.create_actor("evil", "hostile")
                h.backend.create_actor("victim", "counter")
                assert (await h.call("victim"))[0] == 200
                assert (await h.call("evil", "GET", path="/whoami"))[0] == 200
                evil_worker = h.backend.workers[h.backend.ctl.actor("evil").worker]
                victim_ip, _ = h.backend.address(h.backend.ctl.actor("victim").worker)

                async def connect(host: str, to: int) -> dict:
                    _, data, _ = await h.call("evil", "GET", path=f"/connect?host={host}&port={to}")
                    return json.loads(data)

                # The host end of its own veth, where a 0.0.0.0 service listens: dropped.
                blocked = await connect(evil_worker.host_ip, port)
                assert blocked.get("connected") is not True, blocked
                # Another actor: nothing is forwarded between actors.
                assert (await connect(victim_ip, 8080)).get("connected") is not True
                assert got == []
                # Control: without the firewall the same attempt gets through, so the
                # check above can tell the difference.
                await asyncio.to_thread(firewall.remove, INSTANCE)
                try:
                    assert (await connect(evil_worker.host_ip, port)) == {"connected": True}
                    await asyncio.sleep(0.2)
                    assert got == [b"hello"]
                finally:
                    await asyncio.to_thread(firewall.install, INSTANCE, 8080)
                assert (await connect(evil_worker.host_ip, port)).get("connected") is not True
                # The router still reaches actors through the firewall.
                assert (await h.call("victim"))[0] == 200
        finally:
            server.close()

    asyncio.run(body())
