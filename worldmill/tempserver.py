"""A temporary Prefect API server for one ``worldmill curate`` process.

Without ``PREFECT_API_URL``, Prefect starts a temporary server itself on a flow's first API
call (``prefect.server.api.server.SubprocessASGIServer``): uvicorn serving
``prefect.server.api.server:create_app`` in a subprocess. This module starts the same
subprocess (same command, same environment switches) but *without importing the server
package here* (about 3 CPU-s of imports that only the subprocess needs), and earlier: the
CLI launches it as soon as the config is valid and the run lock is held, so that the server
boots (about 3 s) while this process imports the flow modules.

The flow then reaches the server through ``PREFECT_API_URL`` (set in this process's
environment and in a settings context), exactly as it would reach a long-lived one.
``WORLDMILL_TEMPORARY_API_URL`` marks it as temporary, so that ``dask.processes: auto``
still picks threads (``worldmill.cluster.server_configured``), as before. On Linux the
server also stops when the CLI is killed outright (SIGKILL runs no atexit hook), which
Prefect's own temporary server does not.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

TEMPORARY_URL_ENV = "WORLDMILL_TEMPORARY_API_URL"
_PORT_IN_USE = 3  # uvicorn's exit status when it cannot bind its port
# Health checks go straight to 127.0.0.1, never through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    """A port the OS has just handed out (another process may still take it first: then
    uvicorn exits 3 and :meth:`TemporaryServer.wait` starts it again on a new port)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """On Linux, a function for ``preexec_fn`` that has the kernel send the server SIGTERM
    when the thread that started it dies: a CLI killed with SIGKILL (its atexit hook never
    runs) leaves no server behind. None elsewhere. ``prctl`` is looked up here, before the
    fork, so that the child only makes one C call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)


class TemporaryServer:
    """uvicorn + Prefect's API app in a subprocess, on a free local port.

    ``start()`` returns at once; ``wait()`` blocks until ``/api/health`` answers (or raises
    ``RuntimeError`` with the server's own output); ``stop()`` terminates it.
    """

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()  # the server's stdout+stderr, for errors

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        self.port = _free_port()
        spec = importlib.util.find_spec("prefect")  # finds the package, imports nothing
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("prefect is not installed")
        app_dir = Path(next(iter(spec.submodule_search_locations))).parent
        env = {
            # No block-type registration at start (0.5 CPU-s of a 3.5-s boot: it imports
            # every installed Prefect collection, prefect-dask and distributed among them,
            # only to hash them). Flows need no registered block types; the block catalogue
            # is for the UI, which a temporary server does not serve, and a long-lived
            # server on the same database registers them when it starts. An explicit
            # setting in the environment still wins.
            "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
            "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
            **os.environ,
            # as prefect's SubprocessASGIServer: no UI, ephemeral-server services only
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir),
                "--factory", "prefect.server.api.server:create_app",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent(),
        )  # fmt: skip

    def wait(self, timeout_s: float) -> None:
        """Block until the server answers its health check, at most ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None, "start() first"
            rc = self.process.poll()
            if rc == _PORT_IN_USE:  # lost the port to another process: try another
                self.start()
                continue
            if rc is not None:
                raise RuntimeError(f"temporary Prefect server exited ({rc}): {self._output()}")
            try:
                with _NO_PROXY.open(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"temporary Prefect server did not answer within {timeout_s:.0f} s "
            f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS): {self._output()}"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:].strip() or "(no output)"
