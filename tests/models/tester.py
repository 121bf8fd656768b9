"""The model tester every model in ``models/`` runs (diffusers' ``ModelTesterMixin`` shape).

A test class per model subclasses :class:`ModelTester` with a tiny config and gets, for free:

- determinism: the same seed builds the same weights and the same outputs, twice;
- causality, where the model claims it: changing inputs at time ``>= t`` leaves every output
  before ``t`` unchanged (and does change a later one, so the check can fail);
- a checkpoint round trip through ``worldmill.training.checkpoint`` (megatron-core
  dist_checkpointing, strict loading): a fresh model with other weights gives the saved
  model's outputs after ``load_model``;
- one DDP step on 2 ranks (gloo, spawned processes): both ranks end with the same weights,
  equal to one process stepping on the mean of both ranks' losses.

Subclasses implement ``tiny_model`` (seeded inside), ``inputs(gen)``, ``loss(model, inputs)``
and ``outputs(model, inputs)``; causal models set ``causal_from`` (see below).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.multiprocessing as mp
from torch import nn

from worldmill.training import checkpoint
from worldmill.training import megatron as mc
from worldmill.training.launch import free_port


class ModelTester:
    """Mix into a ``Test...`` class; see the module docstring."""

    # None: not causal. Else a time step t: ``perturb_from(inputs, t)`` changes the inputs at
    # time >= t and ``before(outputs, t)`` (the outputs that may only see the past) must not move.
    causal_from: ClassVar[int | None] = None
    atol: ClassVar[float] = 1e-5

    # -- what a model's test class gives --------------------------------------------------
    def tiny_model(self, seed: int = 0) -> nn.Module:
        raise NotImplementedError

    def inputs(self, gen: torch.Generator) -> Any:
        raise NotImplementedError

    def loss(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        raise NotImplementedError

    def outputs(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        raise NotImplementedError

    def perturb_from(self, inputs: Any, t: int, gen: torch.Generator) -> Any:
        """``inputs`` changed at time steps ``>= t`` (causal models)."""
        raise NotImplementedError

    def before(self, out: torch.Tensor, t: int) -> torch.Tensor:
        """The outputs that may depend only on inputs before ``t`` (causal models)."""
        raise NotImplementedError

    # -- the tests ------------------------------------------------------------------------
    def _out(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return self.outputs(model, inputs)

    def test_determinism(self):
        with mc.single_process():
            a, b = self.tiny_model(seed=0), self.tiny_model(seed=0)
            x = self.inputs(torch.Generator().manual_seed(1))
            for (na, pa), (nb, pb) in zip(
                a.state_dict().items(), b.state_dict().items(), strict=True
            ):
                assert na == nb
                if isinstance(pa, torch.Tensor):
                    assert torch.equal(pa, pb), na
            out = self._out(a, x)
            assert torch.equal(out, self._out(a, x))  # eval is repeatable
            assert torch.equal(out, self._out(b, x))  # and the same for the same seed
            other = self._out(self.tiny_model(seed=1), x)
            assert not torch.allclose(out, other)  # the seed matters (the check can fail)

    def test_causality(self):
        if self.causal_from is None:
            return
        t = self.causal_from
        with mc.single_process():
            model = self.tiny_model()
            gen = torch.Generator().manual_seed(2)
            x = self.inputs(gen)
            y = self.perturb_from(x, t, gen)
            a, b = self._out(model, x), self._out(model, y)
        torch.testing.assert_close(self.before(a, t), self.before(b, t), atol=self.atol, rtol=0)
        assert (a - b).abs().max() > 1e-4  # a later output does move

    def test_checkpoint_round_trip(self, tmp_path: Path):
        with mc.single_process():
            model = self.tiny_model(seed=0)
            x = self.inputs(torch.Generator().manual_seed(3))
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            model.train()
            self.loss(model, x).backward()
            opt.step()
            want = self._out(model, x)
            checkpoint.save(tmp_path, 1, model, opt, samples=0, extra={}, keep=1)
            fresh = self.tiny_model(seed=5)
            assert not torch.allclose(self._out(fresh, x), want)
            path, _ = checkpoint.latest(tmp_path)
            meta = checkpoint.load_model(path, fresh)
        assert meta["step"] == 1
        torch.testing.assert_close(self._out(fresh, x), want, atol=0, rtol=0)

    def test_one_ddp_step_on_two_ranks(self, tmp_path: Path):
        port = free_port()
        where = f"{type(self).__module__}:{type(self).__name__}"
        mp.start_processes(
            _ddp_rank, args=(2, port, where, str(tmp_path)), nprocs=2, start_method="spawn"
        )
        ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
        torch.testing.assert_close(ranks[0], ranks[1], atol=0, rtol=0)
        with mc.single_process():  # one process, the mean of both ranks' losses
            model = self.tiny_model(seed=0)
            start = _flat(model)
            model.train()
            xs = [self.inputs(torch.Generator().manual_seed(100 + r)) for r in range(2)]
            (sum(self.loss(model, x) for x in xs) / 2).backward()
            torch.optim.SGD(model.parameters(), lr=_DDP_LR).step()
            want = _flat(model)
        assert not torch.equal(want, start)  # the step moved the weights
        torch.testing.assert_close(ranks[0], want, atol=1e-6, rtol=1e-5)


_DDP_LR = 0.1


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _ddp_rank(rank: int, world: int, port: int, where: str, out: str) -> None:
    """One spawned rank: the tester's tiny model under DDP, one SGD step, weights to disk."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    module, name = where.split(":")
    tester = getattr(importlib.import_module(module), name)()
    mc.init(seed=0)
    try:
        model = tester.tiny_model(seed=0)
        ddp = nn.parallel.DistributedDataParallel(model)
        model.train()
        x = tester.inputs(torch.Generator().manual_seed(100 + rank))  # each rank its own data
        tester.loss(ddp, x).backward()
        torch.optim.SGD(model.parameters(), lr=_DDP_LR).step()
        torch.save(_flat(model), Path(out) / f"rank{rank}.pt")
    finally:
        mc.destroy()
