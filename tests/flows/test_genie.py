"""``worldmill train genie``: one flow trains tokenizer -> lam -> encode -> dynamics into
RUN/<stage> as Prefect subflows; a second run reuses every finished stage; a longer
dynamics run resumes only that stage; bad values exit 2 naming the key before any work."""

from __future__ import annotations

import json

import pytest

from worldmill.genie import pipeline as gp
from worldmill.training import cli
from worldmill.training.registry import get_spec


def tiny_genie(steps: int = 4) -> list[str]:
    """``stage.key=value`` overrides: every stage's tiny config (the dynamics kind's tiny
    tokenizer), 1 process, ``steps`` steps."""
    dyn = get_spec("dynamics")
    out = []
    for stage in gp.STAGES:
        extra = dyn.tiny_upstream.get(stage, ()) if stage in dyn.upstream else ()
        for item in (*get_spec(stage).tiny, *extra, "run.nproc=1", f"run.steps={steps}"):
            out.append(f"{stage}.{item}")
    return out


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
def test_bad_values_exit_2_naming_the_key_before_any_work(
    override, key, shards, tmp_path, capsys
):
    out = tmp_path / "genie"
    argv = ["genie", "--data", str(shards), "--out", str(out)]
    argv += [x for item in override.split() for x in ("--set", item)]
    assert cli.main(argv) == 2
    assert key in capsys.readouterr().err
    assert not out.exists()


def test_genie_flow_trains_every_stage_then_reuses_them(shards, tmp_path):
    from worldmill.flows.genie import genie

    run = tmp_path / "genie"
    m = genie(data=str(shards), out=str(run), overrides=tiny_genie())
    for stage in gp.STAGES:
        cfg = json.loads((run / stage / "config.json").read_text())
        assert cfg["kind"] == stage and cfg["run"]["steps"] == 4
        assert [a["start_step"] for a in _attempts(run, stage)] == [0]
    dyn_cfg = json.loads((run / "dynamics" / "config.json").read_text())
    assert dyn_cfg["tokenizer"] == str(run / "tokenizer") and dyn_cfg["lam"] == str(run / "lam")
    # RUN/metrics.json is the dynamics run's; the encode stage made the cache it trained on
    assert m == json.loads((run / "metrics.json").read_text())
    assert m == json.loads((run / "dynamics" / "metrics.json").read_text())
    state = json.loads((run / gp.STATE).read_text())
    assert (run / "dynamics" / "genie_cache.npz").is_file()
    assert state["stages"]["encode"]["cache"] == str(run / "dynamics" / "genie_cache.npz")
    assert state["config"]["lam"]["run"]["steps"] == 4

    # Again: every stage is finished with the same config -> nothing is trained.
    cache = (run / "dynamics" / "genie_cache.npz").stat().st_mtime_ns
    assert genie(data=str(shards), out=str(run), overrides=tiny_genie()) == m
    for stage in gp.STAGES:
        assert len(_attempts(run, stage)) == 1, stage
    assert (run / "dynamics" / "genie_cache.npz").stat().st_mtime_ns == cache

    # Train the dynamics longer: tokenizer and lam are reused, dynamics resumes at step 4.
    over = [*tiny_genie(), "dynamics.run.steps=6"]
    m6 = genie(data=str(shards), out=str(run), overrides=over)
    assert [a["start_step"] for a in _attempts(run, "dynamics")] == [0, 4]
    assert len(_attempts(run, "tokenizer")) == len(_attempts(run, "lam")) == 1
    assert m6["steps"] == 6 == json.loads((run / "metrics.json").read_text())["steps"]

    # A changed lam config retrains lam from scratch, and so the dynamics stage that read it
    # (its own config is unchanged: the recorded lam checkpoint is not).
    over = [*tiny_genie(), "dynamics.run.steps=6", "lam.run.seed=1"]
    genie(data=str(shards), out=str(run), overrides=over)
    assert len(_attempts(run, "tokenizer")) == 1
    assert [a["start_step"] for a in _attempts(run, "lam")] == [0, 0]
    assert [a["start_step"] for a in _attempts(run, "dynamics")][-1] == 0
    assert (run / "dynamics" / "genie_cache.npz").stat().st_mtime_ns != cache
