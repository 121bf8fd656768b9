"""worldmill.training.checkpoint: complete-or-absent checkpoints, pruning, half-written
directories, optimizer-agnostic state, EMA, strict loading (a 1-process group here; the
2-rank paths run in test_resume.py and the model testers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from worldmill.training import checkpoint
from worldmill.training import megatron as mc
from worldmill.training.config import OptimConfig
from worldmill.training.loop import EMA, build_optimizer


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3))


def _step(model: nn.Module, opt: torch.optim.Optimizer, i: int) -> float:
    g = torch.Generator().manual_seed(i)
    x, y = torch.randn(4, 6, generator=g), torch.randn(4, 3, generator=g)
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


@pytest.fixture
def group():
    with mc.single_process():
        yield


def _steps(root) -> list[str]:
    return sorted(p.name for p in (root / "checkpoints").glob("step_*"))


def test_keep_prunes_to_the_newest_and_latest_names_a_complete_one(tmp_path, group):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for s in range(1, 5):
        _step(model, opt, s)
        checkpoint.save(tmp_path, s, model, opt, samples=4 * s, extra={"s": s}, keep=2)
    assert _steps(tmp_path) == ["step_00000003", "step_00000004"]
    path, meta = checkpoint.latest(tmp_path)
    assert path.name == "step_00000004"
    assert meta["step"] == 4 and meta["samples"] == 16 and meta["extra"] == {"s": 4}
    assert meta["optimizer"] == "SGD" and meta["world_size"] == 1


def test_half_written_checkpoints_are_never_latest_and_are_cleaned_up(tmp_path, group):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    checkpoint.save(tmp_path, 2, model, opt, samples=2, keep=3)
    # A run killed mid-save leaves a step dir with shards but no meta file ...
    torn = tmp_path / "checkpoints" / "step_00000003"
    torn.mkdir()
    (torn / "__0_0.distcp").write_bytes(b"\0" * 64)
    assert checkpoint.latest(tmp_path)[0].name == "step_00000002"  # ... which is never used
    # `latest` pointing at a dir without meta (torn copy of a run folder) reads as no ckpt
    (tmp_path / "checkpoints" / "latest").write_text("step_00000003")
    assert checkpoint.latest(tmp_path) is None
    checkpoint.save(tmp_path, 3, model, opt, samples=3, keep=3)  # same step: rewritten whole
    checkpoint.save(tmp_path, 5, model, opt, samples=5, keep=3)
    assert _steps(tmp_path) == ["step_00000002", "step_00000003", "step_00000005"]
    torn4 = tmp_path / "checkpoints" / "step_00000004"
    torn4.mkdir()
    checkpoint.save(tmp_path, 6, model, opt, samples=6, keep=3)
    assert not torn4.exists()  # an older half-written dir goes at the next save
    assert checkpoint.latest(tmp_path)[1]["step"] == 6


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_resume_continues_exactly_for_every_optimizer(tmp_path, group, name):
    o = OptimConfig(optimizer=name, lr=1e-2, momentum=0.9)
    model = _model()
    opt = build_optimizer(model, o)
    ema = EMA(model, 0.9)
    for s in range(3):
        _step(model, opt, s)
        ema.update(model)
    checkpoint.save(tmp_path, 3, model, opt, samples=3, keep=1, ema=ema.shadow)
    want = [_step(model, opt, s) for s in range(3, 6)]

    other = _model(seed=9)
    opt2 = build_optimizer(other, o)
    ema2 = EMA(other, 0.9)
    meta = checkpoint.load(checkpoint.latest(tmp_path)[0], other, opt2, ema=ema2.shadow)
    assert meta["step"] == 3
    for n, t in ema.shadow.items():
        assert torch.equal(ema2.shadow[n], t), n
    assert [_step(other, opt2, s) for s in range(3, 6)] == want  # bit-identical continuation


def test_changed_optimizer_or_model_is_refused(tmp_path, group):
    model = _model()
    checkpoint.save(tmp_path, 1, model, torch.optim.AdamW(model.parameters()), samples=1)
    path = checkpoint.latest(tmp_path)[0]
    with pytest.raises(ValueError, match="AdamW"):
        checkpoint.load(path, _model(), torch.optim.SGD(_model().parameters(), lr=0.1))
    # strict both ways: a parameter the checkpoint lacks, or one it has that the model lacks
    bigger = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3), nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"missing \['model.3.bias', 'model.3.weight'\]"):
        checkpoint.load_model(path, bigger)
    smaller = nn.Sequential(nn.Linear(6, 8))
    with pytest.raises(ValueError, match=r"unexpected \['model.2.bias', 'model.2.weight'\]"):
        checkpoint.load_model(path, smaller)


def test_load_model_prefers_ema_weights_unless_asked(tmp_path, group):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ema = EMA(model, 0.5)
    for s in range(4):
        _step(model, opt, s)
        ema.update(model)
    checkpoint.save(tmp_path, 4, model, opt, samples=4, ema=ema.shadow)
    path = checkpoint.latest(tmp_path)[0]
    raw, avg = _model(seed=3), _model(seed=3)
    checkpoint.load_model(path, raw, use_ema=False)
    checkpoint.load_model(path, avg)
    for (n, p), q, r in zip(
        model.named_parameters(), raw.parameters(), avg.parameters(), strict=True
    ):
        assert torch.equal(q, p), n
        assert torch.equal(r, ema.shadow[n]), n
        assert not torch.equal(r, p), n
