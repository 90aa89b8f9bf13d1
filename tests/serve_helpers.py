"""``agriseries serve`` in its own process on a free loopback port, started the way a user
starts it and polled until it answers: shared by the distribution and portal tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``agriseries serve TARGET ARGS --port P``; ``url`` once started. ``ready_path`` is the
    route polled until it answers 200 (within ``start_s``). Usable as a context manager or
    with ``start()`` / ``stop()`` / ``restart()``; ``log_dir`` receives ``serve-PORT.log``."""

    def __init__(self, target: list[str], *args: str, log_dir: Path,
                 ready_path: str = "/_mgmt/ping", start_s: float = 60.0) -> None:
        self.target, self.args = list(target), args
        self.log_dir, self.ready_path, self.start_s = Path(log_dir), ready_path, start_s
        self.proc: subprocess.Popen | None = None
        self.log = None
        self.url = ""

    def start(self):
        import httpx

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(self.log_dir / f"serve-{port}.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agriseries.cli", "serve", *self.target, "--port", str(port),
             *self.args], stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"})
        deadline = time.monotonic() + self.start_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                text = self.log.read()[-3000:]
                self.stop()
                raise AssertionError(f"agriseries serve exited: {text}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"agriseries serve did not answer within {self.start_s:.0f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.log is not None:
            self.log.close()
            self.log = None

    def restart(self):
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
