"""The temporary Prefect server of ``worldmill curate`` (``worldmill/tempserver.py``): a real
uvicorn + Prefect API subprocess on the test session's SQLite database."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from worldmill import tempserver
from worldmill.tempserver import TemporaryServer


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_starts_answers_and_stops():
    s = TemporaryServer()
    s.start()
    try:
        s.wait(180)
        assert _answers(s.api_url)
        # a real Prefect API, not just a health route: it lists flows (none named so)
        req = urllib.request.Request(
            f"{s.api_url}/flows/filter",
            data=b'{"flows": {"name": {"any_": ["no-such-flow"]}}}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and r.read() == b"[]"
    finally:
        s.stop()
    assert s.process is None and not _answers(s.api_url)


def _block_types(api_url: str) -> list:
    req = urllib.request.Request(
        f"{api_url}/block_types/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("explicit", [None, "true"])
def test_registers_no_block_types_unless_the_environment_asks(tmp_path, monkeypatch, explicit):
    """Block-type registration (half a second of the boot) is off on the temporary server:
    flows need none. ``PREFECT_API_BLOCKS_REGISTER_ON_START`` set by the user still wins.
    Each case starts on a fresh database, so what it finds is what this boot registered."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    if explicit:
        monkeypatch.setenv("PREFECT_API_BLOCKS_REGISTER_ON_START", explicit)
    s = TemporaryServer()
    s.start()
    try:
        s.wait(180)
        names = {b["slug"] for b in _block_types(s.api_url)}
    finally:
        s.stop()
    if explicit:
        assert {"local-file-system", "secret"} <= names
    else:
        assert names == set()


def test_moves_to_another_port_when_its_port_is_taken(monkeypatch):
    """Another process may bind the port between the pick and uvicorn's bind: uvicorn exits
    3, and wait() starts the server again on a new port."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    ports = iter([busy])
    real_free_port = tempserver._free_port
    monkeypatch.setattr(tempserver, "_free_port", lambda: next(ports, None) or real_free_port())
    s = TemporaryServer()
    try:
        s.start()
        assert s.port == busy
        s.wait(180)
        assert s.port != busy and _answers(s.api_url)
    finally:
        s.stop()
        taken.close()


def test_a_server_that_cannot_start_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "nosuchdriver://x")
    s = TemporaryServer()
    s.start()
    with pytest.raises(RuntimeError, match="temporary Prefect server exited") as e:
        s.wait(180)
    assert "nosuchdriver" in str(e.value)  # the server's own output is in the message
    s.stop()


def test_the_temporary_server_does_not_count_as_a_configured_one(monkeypatch):
    """``dask.processes: auto`` picks threads on the CLI's temporary server, as it did on
    Prefect's own ephemeral one, and processes on a long-lived server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from worldmill.cluster import server_configured

    url = "http://127.0.0.1:1/api"
    monkeypatch.setenv(tempserver.TEMPORARY_URL_ENV, url)
    with temporary_settings({PREFECT_API_URL: url}):
        assert server_configured() is False
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:2/api"}):
        assert server_configured() is True


def test_the_server_dies_with_a_killed_parent():
    """A CLI killed with SIGKILL runs no atexit hook; the kernel then stops its server
    (PR_SET_PDEATHSIG), so killed runs leave no server processes behind."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    code = (
        "from worldmill.tempserver import TemporaryServer\n"
        "s = TemporaryServer(); s.start(); s.wait(180)\n"
        "print(s.process.pid, s.api_url, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid, url = parent.stdout.readline().split()
    assert _answers(url)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # gone, or a zombie waiting for its new parent to reap it: either way not serving
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.2)
    else:
        os.kill(int(pid), signal.SIGKILL)
        raise AssertionError("the server outlived its killed parent")
    assert not _answers(url)
