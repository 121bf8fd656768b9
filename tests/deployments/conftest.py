"""A real local Prefect server (SQLite) for the deployment tests, and one `curate/nightly`
run on it through a real process worker — exactly the commands the README documents. Both
are session-scoped: the run and UI tests read the same finished run instead of curating
again."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict | list | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def post_json(url: str, body: dict) -> dict | list:
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


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """(api_url, env) of a fresh `prefect server start` on a free port."""
    tmp = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = dict(os.environ)
    env["PREFECT_HOME"] = str(tmp / "prefect-home")
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_LOGGING_LEVEL"] = "INFO"
    log = tmp / "server.log"
    server = _spawn(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        log,
    )
    api = env["PREFECT_API_URL"]
    deadline = time.time() + 120
    while time.time() < deadline:
        if get_json(f"{api}/health") is True:
            break
        assert server.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    else:
        _stop(server)
        pytest.fail("prefect server did not become healthy:\n" + log.read_text()[-3000:])
    yield api, env
    _stop(server)


@pytest.fixture(scope="session")
def nightly_deployment(prefect_server, small_corpus, tmp_path_factory) -> dict:
    """`worldmill deploy` of curate/nightly (small corpus -> OUT); the deployment as the
    server lists it, and OUT."""
    api, env = prefect_server
    out = tmp_path_factory.mktemp("nightly") / "curated"
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
    deps = post_json(f"{api}/deployments/filter", {})
    return {"deployment": next(d for d in deps if d["name"] == "nightly"), "out": out}


@pytest.fixture(scope="session")
def nightly_run(prefect_server, nightly_deployment, tmp_path_factory) -> dict:
    """`prefect worker start` and `prefect deployment run curate/nightly`, waited to a final
    state. Returns api, env, the deployment, the flow run, OUT, and the worker's log."""
    api, env = prefect_server
    dep, out = nightly_deployment["deployment"], nightly_deployment["out"]
    tmp = tmp_path_factory.mktemp("worker")
    # 2. a worker on the pool, 3. `prefect deployment run curate/nightly`
    wlog = tmp / "worker.log"
    worker = _spawn(
        [str(BIN / "prefect"), "worker", "start", "--pool", "worldmill-process"], env, wlog
    )
    run = None
    try:
        r = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "curate/nightly"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        # The run this command created (the cron schedule also creates future SCHEDULED
        # runs of the same deployment: never pick one of those).
        ids = re.findall(r"UUID:\s*([0-9a-f-]{36})", r.stdout)
        assert ids, r.stdout
        deadline = time.time() + 600
        while time.time() < deadline:
            run = get_json(f"{api}/flow_runs/{ids[0]}")
            if run and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(2)
    finally:
        _stop(worker)
    return {"api": api, "env": env, "deployment": dep, "run": run, "out": out, "worker_log": wlog}
