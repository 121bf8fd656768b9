"""`prefect deployment run curate/nightly` against a real local Prefect server (SQLite) with
a real process worker — exactly the commands the README documents."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from worldmill.store import Store

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict | list | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _post(url: str, body: dict) -> dict | list:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    # Own process group, so the whole tree (server, worker, flow subprocess) is stopped.
    return subprocess.Popen(
        args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture
def prefect_server(tmp_path):
    port = _free_port()
    env = dict(os.environ)
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_LOGGING_LEVEL"] = "INFO"
    log = tmp_path / "server.log"
    server = _spawn(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        log,
    )
    api = env["PREFECT_API_URL"]
    deadline = time.time() + 120
    while time.time() < deadline:
        if _get(f"{api}/health") is True:
            break
        assert server.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    else:
        _stop(server)
        pytest.fail("prefect server did not become healthy:\n" + log.read_text()[-3000:])
    yield api, env
    _stop(server)


def test_prefect_deployment_run_curate_nightly(prefect_server, small_corpus, tmp_path):
    api, env = prefect_server
    out = tmp_path / "curated"
    # 1. register the deployment (creates the process work pool too)
    r = subprocess.run(
        [
            str(BIN / "worldmill"),
            "deploy",
            "--input",
            str(small_corpus),
            "--out",
            str(out),
            "--set",
            "dask.n_workers=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    deps = _post(f"{api}/deployments/filter", {})
    dep = next(d for d in deps if d["name"] == "nightly")
    crons = [s["schedule"].get("cron") for s in dep.get("schedules", [])]
    assert "0 2 * * *" in crons
    assert all(s["schedule"].get("timezone") == "UTC" for s in dep["schedules"])

    # 2. a worker on the pool, 3. `prefect deployment run curate/nightly`
    worker = _spawn(
        [str(BIN / "prefect"), "worker", "start", "--pool", "worldmill-process"],
        env,
        tmp_path / "worker.log",
    )
    try:
        r = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "curate/nightly"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        deadline = time.time() + 600
        state = None
        while time.time() < deadline:
            runs = _post(f"{api}/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}}})
            if runs:
                state = runs[0]["state"]["type"]
                if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
            time.sleep(2)
        wlog = (tmp_path / "worker.log").read_text()
        assert state == "COMPLETED", f"flow run state {state}\n{wlog[-4000:]}"
    finally:
        _stop(worker)

    # the run did the real work
    s = Store(out)
    assert s.count("videos") > 0 and s.count("clips", "kept = true") > 0
    assert list(Path(out, "shards").rglob("*.tar"))
    arts = _post(f"{api}/artifacts/filter", {})
    assert any(a.get("key") == "curation-report" for a in arts)
