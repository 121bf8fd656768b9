"""The run machinery end to end: a Prefect flow launches torchrun (2 ranks, gloo), one rank
is SIGKILLed mid-run, Prefect retries the task, the retry resumes from the latest
megatron-core dist checkpoint, and the loss trajectory equals an uninterrupted run's --
for every model kind (parametrised)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.training.conftest import TINY, TINY_AR
from worldmill.flows.train import train
from worldmill.training import launch, metrics
from worldmill.training.registry import resolve_config

STEPS, EVERY, KILL_AT = 24, 6, 9
RUN = TINY + [f"run.steps={STEPS}", f"run.checkpoint_every={EVERY}"]
RUN_AR = TINY_AR + [f"run.steps={STEPS}", f"run.checkpoint_every={EVERY}"]
FIGURE = {"tokenizer": "recon.png", "ar": "predict.png"}


@pytest.fixture(params=["tokenizer", "ar"])
def kind_run(request, shards) -> tuple[str, list[str]]:
    """(kind, overrides) of a tiny 2-rank run of each kind (upstream runs included)."""
    if request.param == "ar":
        tok = request.getfixturevalue("dv_tokenizer")
        return "ar", [*RUN_AR, f"tokenizer={tok}"]
    return "tokenizer", RUN


def _uninterrupted(kind: str, overrides: list[str], shards: Path, out: Path) -> list[dict]:
    cfg = resolve_config(kind, None, overrides)
    launch.write_run_config(out, cfg)
    launch.launch_trainer(kind, shards, out, nproc=2, log=lambda _: None)
    return metrics.read_log(out / "log.jsonl")


def _trainer_ranks() -> list[psutil.Process]:
    ranks = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "worldmill.training.loop" in cmd and "torch.distributed.run" not in cmd:
            ranks.append(p)
    return ranks


def _kill_a_rank_at(run: Path, step: int, killed: dict) -> None:
    """Watch RUN/log.jsonl; once it reaches ``step``, SIGKILL rank 1 (like an OOM kill)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        log = metrics.read_log(run / "log.jsonl") if (run / "log.jsonl").exists() else []
        if log and log[-1]["step"] >= step:
            ranks = sorted(_trainer_ranks(), key=lambda p: p.pid)
            if ranks:
                os.kill(ranks[-1].pid, signal.SIGKILL)
                killed.update(pid=ranks[-1].pid, at_step=log[-1]["step"])
                return
        time.sleep(0.02)


def test_sigkill_mid_run_then_flow_retry_resumes_with_identical_losses(kind_run, shards, tmp_path):
    kind, overrides = kind_run
    ref = _uninterrupted(kind, overrides, shards, tmp_path / "ref")
    assert [r["step"] for r in ref] == list(range(1, STEPS + 1))

    run = tmp_path / "run"
    killed: dict = {}
    watcher = threading.Thread(target=_kill_a_rank_at, args=(run, KILL_AT, killed), daemon=True)
    watcher.start()
    result = train(kind=kind, data=str(shards), out=str(run), overrides=overrides)
    watcher.join(timeout=5)

    assert killed and KILL_AT <= killed["at_step"] < STEPS, killed
    attempts = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 2, attempts  # the killed launch and the retry
    assert attempts[0]["start_step"] == 0
    resumed = attempts[1]["start_step"]
    assert resumed % EVERY == 0 and EVERY <= resumed <= killed["at_step"], (attempts, killed)

    log = metrics.read_log(run / "log.jsonl")
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))  # no gaps, no duplicates
    # bit-identical: same data, same RNG, same optimizer state after the resume
    assert [r["loss"] for r in log] == [r["loss"] for r in ref]

    assert (run / "checkpoints" / "latest").read_text() == f"step_{STEPS:08d}"
    for k in ("psnr", "ssim", "baseline_psnr", "baseline_ssim"):
        assert isinstance(result[k], float)
    assert json.loads((run / "metrics.json").read_text())["steps"] == STEPS
    assert (run / "loss.png").stat().st_size > 1000
    assert (run / FIGURE[kind]).stat().st_size > 1000

    _assert_visible_in_prefect(attempts=2)


def _assert_visible_in_prefect(attempts: int) -> None:
    """The run, its retry, the trainer's streamed log lines and the artifacts are recorded
    by the Prefect server (here the test session's own server, SQLite)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["train"])))
        fr = max(runs, key=lambda r: r.start_time or r.created)
        assert fr.state.is_completed(), fr.state
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id]))
        )
        trainer = [t for t in tasks if t.name.startswith("run-trainer")]
        assert len(trainer) == 1 and trainer[0].run_count == attempts, [
            (t.name, t.run_count) for t in tasks
        ]
        assert trainer[0].state.is_completed()
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[fr.id])))
        assert any("rank" in lg.message.lower() or "step" in lg.message.lower() for lg in logs), (
            len(logs)
        )
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[fr.id]))
        )
        kinds = {a.type for a in arts}
        assert {"table", "markdown"} <= kinds, kinds
