"""A hostile actor for the isolation tests (standard library only): it reports what it
can see and reach from inside its sandbox. Never shipped as a template."""

from __future__ import annotations

import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit


def attempt(kind: str, args: dict[str, str]) -> dict[str, object]:
    try:
        if kind == "whoami":
            return {"uid": os.getuid(), "gid": os.getgid()}
        if kind == "list":
            return {"entries": sorted(os.listdir(args["path"]))}
        if kind == "read":
            with open(args["path"], "rb") as f:
                return {"read": len(f.read())}
        if kind == "write":
            with open(args["path"], "w") as f:
                f.write("hostile")
            return {"written": True}
        if kind == "connect":
            with socket.create_connection((args["host"], int(args["port"])), timeout=2) as s:
                s.sendall(b"hello")
            return {"connected": True}
    except Exception as e:  # what stopped it is the answer
        return {"error": type(e).__name__, "detail": str(e)}
    return {"error": "unknown request"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        args = {k: v[0] for k, v in parse_qs(url.query).items()}
        data = (json.dumps(attempt(url.path.strip("/") or "whoami", args)) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(HTTPServer):
    def server_bind(self) -> None:  # skip getfqdn(): it waits on DNS in a closed netns
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = "hostile", self.server_address[1]


if __name__ == "__main__":
    Server(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
