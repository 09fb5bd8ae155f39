"""One owner per collection across processes: the process holding a collection's lock applies
its writes; other processes (uvicorn workers, or servers sharing the data directory) follow it
read-only and forward writes to it over a Unix socket.

The owner serves every collection it owns on one socket (in a fresh temporary directory: socket
paths are limited to about 100 bytes) and points ``<data_dir>/.lsr-owners/<name>.owner`` at it
(written while it holds the collection's lock, so two owners never race). A forwarded write is
one JSON line ``{"collection", "op", "body"}`` answered by one JSON line
``{"status": 200, "body": ...}`` or ``{"status": 4xx, "body": {"error": ...}}``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import socketserver
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

OWNERS_DIR = ".lsr-owners"
Handler = Callable[[str, str, Any], tuple[int, Any]]  # (collection, op, body) -> (status, body)


class OwnerGone(ConnectionError):
    """The owner named by the pointer file is not answering (it died or is shutting down)."""


class OwnerServer:
    """This process's socket for writes forwarded by followers."""

    def __init__(self, data_dir: Path, handle: Handler) -> None:
        self.folder = Path(data_dir) / OWNERS_DIR
        self.folder.mkdir(exist_ok=True)
        self._socket_dir = Path(tempfile.mkdtemp(prefix="lsr-owner-"))
        self.path = self._socket_dir / "writes.sock"
        handle_line = _line_handler(handle)

        class _Request(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline()
                if line:
                    self.wfile.write(handle_line(line) + b"\n")

        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), _Request)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="lsr-owner"
        )
        self._thread.start()

    def claim(self, name: str) -> None:
        """Point ``name``'s followers here (call while holding the collection's lock)."""
        pointer = self.folder / f"{name}.owner"
        temp = self.folder / f".{name}.owner.tmp-{os.getpid()}"
        temp.write_text(str(self.path), encoding="utf-8")
        os.replace(temp, pointer)

    def release(self, name: str) -> None:
        pointer = self.folder / f"{name}.owner"
        try:
            if pointer.read_text(encoding="utf-8") == str(self.path):
                pointer.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)


def _line_handler(handle: Handler) -> Callable[[bytes], bytes]:
    def answer(line: bytes) -> bytes:
        try:
            request = json.loads(line)
            status, body = handle(request["collection"], request["op"], request["body"])
        except Exception as exc:  # the follower answers its client; never kill the server
            status, body = 500, {"error": f"owner failed: {type(exc).__name__}"}
        return json.dumps({"status": status, "body": body}).encode()

    return answer


def forward(data_dir: Path, name: str, op: str, body: Any, timeout: float = 120) -> tuple[int, Any]:
    """Send a write to ``name``'s owner; (status, body) as the owner answered. OwnerGone when no
    owner answers (none recorded, the socket is gone, or the connection broke before an answer)."""
    pointer = Path(data_dir) / OWNERS_DIR / f"{name}.owner"
    try:
        path = pointer.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OwnerGone(f"no owner recorded for {name!r}") from None
    message = json.dumps({"collection": name, "op": op, "body": body}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(message)
            with conn.makefile("rb") as reader:
                line = reader.readline()
    except (TimeoutError, FileNotFoundError, ConnectionError) as exc:
        raise OwnerGone(f"the owner of {name!r} did not answer: {exc}") from None
    if not line:
        raise OwnerGone(f"the owner of {name!r} closed the connection")
    answer = json.loads(line)
    return int(answer["status"]), answer["body"]
