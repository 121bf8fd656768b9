"""worldmill.training.loop, the parts every kind shares: the LR schedule, DataLoader
workers that do not change what a run computes, gradient accumulation equal to the full
batch, and EMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.training.conftest import TINY
from worldmill.training import launch, metrics
from worldmill.training.config import OptimConfig
from worldmill.training.loop import EMA, lr_at
from worldmill.training.registry import resolve_config


def test_warmup_then_cosine_to_min_lr():
    o = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, o, 110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))  # then decays
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert lr_at(50, o.model_copy(update={"schedule": "constant"}), 110) == 1.0


def test_ema_tracks_the_average_and_swaps_back():
    m = nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.5)
    for v in (1.0, 1.0):
        with torch.no_grad():
            m.weight.fill_(v)
        ema.update(m)
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.75))
    with ema.swap(m):
        assert torch.allclose(m.weight, torch.full((1, 2), 0.75))
    assert torch.allclose(m.weight, torch.ones(1, 2))


def _losses(shards, out, extra: list[str]) -> list[float]:
    cfg = resolve_config("tokenizer", None, TINY + ["run.steps=6", "data.batch_size=2", *extra])
    launch.write_run_config(out, cfg)
    launch.launch_trainer("tokenizer", shards, out, nproc=1, log=lambda _: None)
    return [r["loss"] for r in metrics.read_log(out / "log.jsonl")]


def test_dataloader_workers_and_accumulation_keep_the_run_the_same(shards, tmp_path):
    base = _losses(shards, tmp_path / "base", [])
    assert len(base) == 6
    # workers decode ahead in other processes; the batches are a function of the step
    assert _losses(shards, tmp_path / "workers", ["data.workers=2"]) == base
    # two micro-batches of 1 == one batch of 2 (up to float summation order)
    accum = _losses(shards, tmp_path / "accum", ["optim.grad_accum=2"])
    assert accum == pytest.approx(base, rel=1e-4)
