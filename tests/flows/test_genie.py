"""``worldmill train genie``: one flow trains tokenizer -> lam -> encode -> dynamics into
RUN/<stage> as Prefect subflows; a second run reuses every finished stage; a longer
dynamics run resumes only that stage and a retrained upstream retrains what read it (the
plan on real runs; through the flow: slow); bad values exit 2 naming the key before any
work."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_genie
from worldmill.genie import pipeline as gp
from worldmill.training import cli


def _attempts(run, stage) -> list[dict]:
    lines = (run / stage / "attempts.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


@pytest.mark.parametrize(
    "override, key",
    [
        ("lam.run.steps=-1", "lam.run.steps"),
        ("dynamics.model.bogus=1", "dynamics.model.bogus"),
        ("run.steps=5", "address a stage"),
        ("dynamics.lam=/some/run", "dynamics.lam"),
        ("tokenizer.model.kind=cv", "tokenizer.model.kind"),
        ("lam.data.size=72 tokenizer.model.spatial_compression=16", "lam.data.size"),
    ],
)
def test_bad_values_exit_2_naming_the_key_before_any_work(override, key, shards, tmp_path, capsys):
    out = tmp_path / "genie"
    argv = ["genie", "--data", str(shards), "--out", str(out)]
    argv += [x for item in override.split() for x in ("--set", item)]
    assert cli.main(argv) == 2
    assert key in capsys.readouterr().err
    assert not out.exists()


def test_genie_flow_chains_the_stages_then_reuses_them(genie_run, shards):
    """The session's genie run: tokenizer and lam were finished runs with the same configs
    (reused), the flow encoded and trained the dynamics stage on them."""
    from worldmill.flows.genie import genie

    run = genie_run
    state = json.loads((run / gp.STATE).read_text())
    assert set(state["stages"]) == {"encode", "dynamics"}  # what this chain trained
    for stage in gp.STAGES:
        cfg = json.loads((run / stage / "config.json").read_text())
        assert cfg["kind"] == stage and cfg["run"]["steps"] == 4
        assert [a["start_step"] for a in _attempts(run, stage)] == [0]
    dyn_cfg = json.loads((run / "dynamics" / "config.json").read_text())
    assert dyn_cfg["tokenizer"] == str(run / "tokenizer") and dyn_cfg["lam"] == str(run / "lam")
    # RUN/metrics.json is the dynamics run's; the encode stage made the cache it trained on
    m = json.loads((run / "metrics.json").read_text())
    assert m == json.loads((run / "dynamics" / "metrics.json").read_text())
    cache = run / "dynamics" / "genie_cache.npz"
    assert state["stages"]["encode"]["cache"] == str(cache) and cache.is_file()
    assert state["config"]["lam"]["run"]["steps"] == 4

    # Again: every stage is finished with the same config -> nothing is trained.
    stamp = cache.stat().st_mtime_ns
    assert genie(data=str(shards), out=str(run), overrides=tiny_genie()) == m
    for stage in gp.STAGES:
        assert len(_attempts(run, stage)) == 1, stage
    assert cache.stat().st_mtime_ns == stamp


def test_stage_plan_follows_config_and_upstream_checkpoints(genie_run):
    """What a re-run would do with the finished dynamics stage, as its config or the
    checkpoints it was trained on change."""
    run = genie_run
    state = gp.read_state(run)
    cfg = json.loads((run / "dynamics" / "config.json").read_text())
    steps = cfg["run"]["steps"]
    assert gp.stage_plan("dynamics", cfg, run, state) == "reuse"
    longer = {**cfg, "run": {**cfg["run"], "steps": steps + 2}}
    assert gp.stage_plan("dynamics", longer, run, state) == "resume"
    shorter = {**cfg, "run": {**cfg["run"], "steps": steps - 1}}
    assert gp.stage_plan("dynamics", shorter, run, state) == "train"
    wider = {**cfg, "model": {**cfg["model"], "hidden": cfg["model"]["hidden"] * 2}}
    assert gp.stage_plan("dynamics", wider, run, state) == "train"
    # lam retrained since (its checkpoint is not the one dynamics was trained on)
    other = json.loads(json.dumps(state))
    other["stages"]["dynamics"]["upstream"]["lam"] = "step_00000004:0000"
    assert gp.stage_plan("dynamics", cfg, run, other) == "train"
    assert gp.stage_plan("dynamics", cfg, run, {"stages": {}}) == "train"  # not this chain's
    tok_cfg = json.loads((run / "tokenizer" / "config.json").read_text())
    assert gp.stage_plan("tokenizer", tok_cfg, run, state) == "reuse"


@pytest.mark.slow
def test_longer_dynamics_resumes_and_a_changed_lam_retrains_through_the_flow(shards, tmp_path):
    from worldmill.flows.genie import genie

    run = tmp_path / "genie"
    genie(data=str(shards), out=str(run), overrides=tiny_genie())  # every stage trained
    for stage in gp.STAGES:
        assert [a["start_step"] for a in _attempts(run, stage)] == [0]
    cache = run / "dynamics" / "genie_cache.npz"
    stamp = cache.stat().st_mtime_ns
    # Train the dynamics longer: tokenizer and lam are reused, dynamics resumes at step 4.
    longer = [*tiny_genie(), "dynamics.run.steps=6"]
    m6 = genie(data=str(shards), out=str(run), overrides=longer)
    assert [a["start_step"] for a in _attempts(run, "dynamics")] == [0, 4]
    assert len(_attempts(run, "tokenizer")) == len(_attempts(run, "lam")) == 1
    assert m6["steps"] == 6 == json.loads((run / "metrics.json").read_text())["steps"]
    assert cache.stat().st_mtime_ns == stamp
    # A changed lam retrains lam from scratch, then the cache and the dynamics stage that
    # read it (whose own config is unchanged).
    genie(data=str(shards), out=str(run), overrides=[*longer, "lam.run.seed=1"])
    assert len(_attempts(run, "tokenizer")) == 1
    assert [a["start_step"] for a in _attempts(run, "lam")] == [0, 0]
    assert [a["start_step"] for a in _attempts(run, "dynamics")] == [0, 4, 0]
    assert cache.stat().st_mtime_ns != stamp
