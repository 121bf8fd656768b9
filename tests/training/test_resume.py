"""The run machinery end to end, for every registered model kind: a Prefect flow launches
torchrun (2 ranks, gloo), one rank is SIGKILLed mid-run, Prefect retries the task, the retry
resumes from the latest megatron-core dist checkpoint, and the loss trajectory equals an
uninterrupted run's bit for bit."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import tiny_overrides
from worldmill.flows.train import train
from worldmill.training import launch, metrics
from worldmill.training.registry import get_spec, kinds, resolve_config

STEPS, EVERY, KILL_AT = 24, 6, 9
RUN = [f"run.steps={STEPS}", f"run.checkpoint_every={EVERY}", "run.nproc=2"]


def _uninterrupted(kind: str, shards: Path, out: Path, overrides: list[str]) -> list[dict]:
    cfg = resolve_config(kind, None, overrides)
    launch.write_run_config(out, cfg)
    launch.launch_trainer(kind, shards, out, nproc=2, log=lambda _: None)
    return metrics.read_log(out / "log.jsonl")


def _trainer_ranks() -> list[psutil.Process]:
    """The trainer's rank processes, by rank: the torchrun agent's children. A rank's
    forked DataLoader workers carry the same command line, so the command alone would
    also pick them (and killing one of those is not a rank kill)."""
    ranks = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
            parent = p.parent()
            agent = parent is not None and "torch.distributed.run" in " ".join(parent.cmdline())
            rank = int(p.environ().get("RANK", -1))
        except psutil.NoSuchProcess:
            continue
        if agent and "worldmill.training.loop" in cmd and rank >= 0:
            ranks.append((rank, p))
    return [p for _, p in sorted(ranks, key=lambda rp: rp[0])]


def _kill_at(run: Path, step: int, killed: dict, pick, poll_s: float = 0.02) -> None:
    """Watch RUN/log.jsonl; once it reaches ``step``, SIGKILL the process ``pick()`` returns
    (like an OOM kill; ``None``: nothing to kill yet, keep watching)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        log = metrics.read_log(run / "log.jsonl") if (run / "log.jsonl").exists() else []
        if log and log[-1]["step"] >= step:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):  # it just ended
                victim = pick()
                if victim is not None:
                    os.kill(victim.pid, signal.SIGKILL)
                    killed.update(pid=victim.pid, at_step=log[-1]["step"])
                    return
        time.sleep(poll_s)


def _last_rank() -> psutil.Process | None:
    ranks = _trainer_ranks()
    return ranks[-1] if ranks else None


def _forked_child_of_last_rank() -> psutil.Process | None:
    """A process the last rank forked (same command line: a DataLoader worker, a checkpoint
    writer), not its spawned multiprocessing helpers (resource tracker, manager)."""
    rank = _last_rank()
    kids = [k for k in rank.children() if k.cmdline() == rank.cmdline()] if rank else []
    return kids[0] if kids else None


@pytest.mark.parametrize("kind", kinds())
def test_sigkill_mid_run_then_flow_retry_resumes_with_identical_losses(
    kind, shards, tiny_run, tmp_path
):
    overrides = tiny_overrides(kind, tiny_run) + RUN
    ref = _uninterrupted(kind, shards, tmp_path / "ref", overrides)
    assert [r["step"] for r in ref] == list(range(1, STEPS + 1))

    run = tmp_path / "run"
    killed: dict = {}
    watcher = threading.Thread(
        target=_kill_at, args=(run, KILL_AT, killed, _last_rank), daemon=True
    )
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
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == result and on_disk["kind"].startswith(kind) and on_disk["steps"] == STEPS
    assert on_disk["final_loss"] == log[-1]["loss"]
    assert on_disk["train_seconds"] > 0
    # every held-out metric is a finite number (a NaN eval would poison the flow's artifacts)
    scores = {k: v for k, v in on_disk.items() if isinstance(v, float)}
    assert len(scores) >= 3 and all(math.isfinite(v) for v in scores.values()), on_disk
    for png in ["loss.png", *get_spec(kind).figures]:
        assert (run / png).stat().st_size > 1000, png

    _assert_visible_in_prefect(attempts=2, resumed_step=resumed)


def _assert_visible_in_prefect(attempts: int, resumed_step: int) -> None:
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
        lines = [lg.message for lg in logs]
        # the trainer's own lines, streamed: per-step losses and the retry's resume
        assert any(re.search(r"step \d+ loss \d+\.\d+ lr ", m) for m in lines), lines[-20:]
        assert any(f"resumed from step_{resumed_step:08d}" in m for m in lines), lines[-20:]
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[fr.id]))
        )
        types = {a.type for a in arts}
        assert {"table", "markdown"} <= types, types


@pytest.mark.parametrize(
    "kind,extra",
    [
        ("tokenizer", ["data.workers=1", "run.checkpoint_every=1000"]),  # a DataLoader worker
        ("ar", ["run.checkpoint_every=1"]),  # a dist_checkpointing writer (forked per save)
    ],
)
def test_a_killed_child_of_a_rank_fails_the_launch_instead_of_hanging(
    kind, extra, shards, tiny_run, tmp_path
):
    """SIGKILL of a process a rank forked (an OOM kill picks the biggest process: a decode
    worker, a checkpoint writer) must end the launch with an error the flow retries -- not
    leave the ranks waiting on it and on each other forever (megatron's checkpoint writer
    waits on a queue the killed writer never marks done)."""
    overrides = tiny_overrides(kind, tiny_run) + ["run.steps=400", "run.nproc=2", *extra]
    cfg = resolve_config(kind, None, overrides)
    out = tmp_path / "run"
    launch.write_run_config(out, cfg)
    killed: dict = {}

    def launch_it(result: dict) -> None:
        try:
            launch.launch_trainer(kind, shards, out, nproc=2, log=lambda _: None)
            result["ok"] = True
        except launch.TrainerFailed as e:
            result["failed"] = e

    threading.Thread(
        target=_kill_at, args=(out, 3, killed, _forked_child_of_last_rank, 0.005), daemon=True
    ).start()
    result: dict = {}
    launcher = threading.Thread(target=launch_it, args=(result,), daemon=True)
    launcher.start()
    launcher.join(timeout=240)
    hung = launcher.is_alive()
    if hung:  # clean up what the hung launch left, then fail
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
    assert killed, "no child process of a rank was found to kill"
    assert not hung, "the launch hung after a child of a rank was killed"
    if "failed" in result:  # a failed attempt: the flow's retry resumes it
        return
    # Or the child had already done its part (a writer that had reported its files before
    # it died): then the run must have finished whole.
    assert "ok" in result, result
    assert [r["step"] for r in metrics.read_log(out / "log.jsonl")] == list(range(1, 401))
    assert (out / "metrics.json").is_file()
