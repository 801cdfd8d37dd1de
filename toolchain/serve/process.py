"""Run `poolattn serve` as a child process on loopback: what `bench load --artifact`, `bench all`
and the tests use. The child gets its own session, so stopping it (or killing it, as the fault
test does) reaches LitServe's API and worker processes too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from toolchain.errors import ToolchainError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on at this moment (loopback)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The GET status of ``url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, urllib.error.URLError):
        return None


class ServerProcess:
    """``with ServerProcess(artifact, threads=2) as server: server.url``; ``kill()`` is SIGKILL
    to the whole process group (a crash), ``start()`` again serves again."""

    def __init__(self, artifact: str | Path, port: int | None = None,
                 options: list[str] | None = None, startup_s: float = 180.0,
                 log: str | Path | None = None) -> None:
        self.artifact, self.port = Path(artifact), port or free_port()
        self.options, self.startup_s, self.log = list(options or []), startup_s, log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> "ServerProcess":
        """Start and wait until /health says ready.

        Raises:
            ToolchainError: the server exited or was not ready within ``startup_s``.
        """
        command = [sys.executable, "-c", "from toolchain.cli import main; main()", "serve",
                   str(self.artifact), "--host", LOOPBACK, "--port", str(self.port),
                   *self.options]
        if self.log:
            with open(self.log, "ab") as out:  # the child keeps its own copy of the handle
                self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        else:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ToolchainError(f"poolattn serve {self.artifact} exited with "
                                     f"{self.process.returncode} before it was ready"
                                     + (f" (log: {self.log})" if self.log else ""))
            if http_status(self.url + "/health") == 200:
                return self
            time.sleep(0.25)
        self.stop()
        raise ToolchainError(f"poolattn serve {self.artifact}: not ready within "
                             f"{self.startup_s:.0f} s")

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the server and its children at once (no shutdown)."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL the group after ``grace_s``; returns
        the server's exit code (None if it had to be killed)."""
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            code = None
        self._signal_group(signal.SIGKILL)  # leftovers of a hung shutdown
        self.process.wait()
        return code

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
