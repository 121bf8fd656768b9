"""`prefect deployment run curate/nightly` against a real local Prefect server (SQLite) with
a real process worker — exactly the commands the README documents (fixtures in
conftest.py)."""

from __future__ import annotations

from pathlib import Path

from tests.deployments.conftest import get_json, post_json
from worldmill.store import Store


def test_prefect_deployment_run_curate_nightly(nightly_run):
    api, dep, run = nightly_run["api"], nightly_run["deployment"], nightly_run["run"]
    crons = [s["schedule"].get("cron") for s in dep.get("schedules", [])]
    assert "0 2 * * *" in crons
    assert all(s["schedule"].get("timezone") == "UTC" for s in dep["schedules"])
    state = run and run["state"]["type"]
    wlog = nightly_run["worker_log"].read_text()
    assert state == "COMPLETED", f"flow run state {state}\n{wlog[-4000:]}"

    # the run did the real work
    out = nightly_run["out"]
    s = Store(out)
    assert s.count("videos") > 0 and s.count("clips", "kept = true") > 0
    assert list(Path(out, "shards").rglob("*.tar"))
    arts = post_json(f"{api}/artifacts/filter", {})
    assert any(a.get("key") == "curation-report" for a in arts)


def test_nightly_runs_one_at_a_time(prefect_server, nightly_deployment):
    """The deployment, read back from the server, allows one active run; a second one is
    queued (ENQUEUE), not started beside it."""
    api = prefect_server[0]
    dep = get_json(f"{api}/deployments/name/curate/nightly")
    assert dep is not None
    gcl = dep["global_concurrency_limit"]
    assert gcl is not None and gcl["limit"] == 1
    assert dep["concurrency_options"]["collision_strategy"] == "ENQUEUE"
