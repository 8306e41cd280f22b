"""A real `dogbreed serve` process on a free loopback port, for tests that need the whole stack (uvicorn included)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def written_bytes(pid: int) -> int:
    """Bytes the process has passed to write() calls: files (the multipart spool) and sockets alike."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise KeyError("wchar")


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def rss_mb(self) -> float:
        return proc_status_kb(self.proc.pid, "VmRSS") / 1024

    def post(self, files: list[tuple[str, bytes]], **kw) -> httpx.Response:
        return httpx.post(self.url + "/v1/predict", files=[("file", (n, b)) for n, b in files], timeout=120, **kw)


def start_server(tmp: Path, *args: str) -> Server:
    port = free_port()
    log = tmp / "server.log"
    cmd = [sys.executable, "-m", "dogbreed.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--feedback-db", str(tmp / "fb.sqlite3"), *args]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return Server(proc, port, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start in 180 s")


def stop_server(s: Server) -> None:
    s.proc.terminate()
    try:
        s.proc.wait(20)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        s.proc.wait(20)
