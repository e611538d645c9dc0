"""The templates' HTTP server (backends/gvisor/templates/_server.py) run as a plain
process on loopback: each request id is carried out once. In a sandbox, across a
checkpoint and restore, tests/test_local_backend.py checks the same."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gvisor_harness import free_port, wait_for

pytestmark = pytest.mark.real  # starts servers or processes: run one at a time

TEMPLATES = Path(__file__).resolve().parent.parent / "backends" / "gvisor" / "templates"


@pytest.fixture
def counter() -> Iterator[int]:
    port = free_port()
    command = [sys.executable, str(TEMPLATES / "counter.py"), str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(port, proc, timeout=10)
        yield port
    finally:
        proc.kill()
        proc.communicate()


def post(port: int, request_id: str | None, service_s: float = 0.0) -> dict:
    headers = f"X-Actormux-Service: {service_s}\r\n"
    if request_id is not None:
        headers += f"X-Request-Id: {request_id}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(f"POST / HTTP/1.1\r\nHost: a\r\n{headers}Content-Length: 0\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_a_resent_request_id_is_answered_not_redone(counter):
    first = post(counter, "call-1")
    again = post(counter, "call-1")
    assert first["count"] == 1 and "duplicate" not in first
    assert again == {**first, "duplicate": True}
    assert post(counter, "call-2")["count"] == 2  # a new id is carried out
    assert post(counter, None)["count"] == 3  # no id: carried out every time
    assert post(counter, None)["count"] == 4


def test_a_resend_during_the_first_attempt_waits_for_its_answer(counter):
    answers: list[dict] = []
    slow = threading.Thread(target=lambda: answers.append(post(counter, "slow", 1.0)))
    slow.start()
    time.sleep(0.3)  # the first attempt is being carried out
    resent = post(counter, "slow")
    slow.join()
    assert answers[0]["count"] == 1 and resent == {**answers[0], "duplicate": True}
    assert post(counter, "next")["count"] == 2  # the counter moved once for "slow"


def test_an_overlong_request_id_is_refused_and_not_kept(counter):
    refused = post(counter, "x" * 201)
    assert refused["error"] == "X-Request-Id longer than 200 characters"
    assert post(counter, "x" * 200)["count"] == 1  # the refused one was not carried out
