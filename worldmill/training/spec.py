"""What a model kind gives the one training loop (``worldmill/training/loop.py``).

A kind is a :class:`Spec` subclass in ``worldmill/training/kinds/<kind>.py`` plus one line in
``worldmill.training.registry.KINDS``. The loop owns everything generic -- process groups,
DDP, optimizer and schedule, clipping, accumulation, autocast, EMA, checkpoints, logs,
metrics and figures -- and calls the spec for the rest, in the shape of Megatron's
``forward_step_func``::

    cfg   = Spec.config(...)                     # validated before any process starts
    model = spec.build_model(cfg, ctx)           # plain torch or megatron-core modules
    data  = spec.build_data(cfg, ctx)            # .batch(step) is a pure fn of (seed, step, rank)
    spec.init_model(model, data, cfg, ctx)       # fresh runs only (e.g. PCA init)
    loss, scalars = spec.step(model, batch, ctx) # per micro-batch; the model owns its loss
    metrics = spec.evaluate(model, data, cfg, ctx)   # rank 0, after the last step

Upstream runs (a world model reads a tokenizer run) are config fields named in
``upstream``; the loop resolves them to run folders in ``ctx.upstream`` and checks each is a
finished run of the right kind before anything starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from worldmill.config import ConfigError
from worldmill.training.config import TrainConfig


class Data(Protocol):
    """A rank's training stream plus the held-out set; resumable because ``batch`` is a
    pure function of the step (no iterator state: the loader position is the step)."""

    held_out: list

    def batch(self, step: int) -> Any: ...  # this rank's batch at ``step``

    def position(self, step: int) -> int: ...  # global samples consumed before ``step``

    def epoch(self, step: int) -> float: ...


class StreamData:
    """Base of a kind's :class:`Data` whose batches come from ``self.stream`` (a
    ``data.EpochStream``): a step's batch, loader position and epoch are the stream's."""

    stream: Any

    def batch(self, step: int) -> Any:
        return self.stream.batch(step)

    def position(self, step: int) -> int:
        return self.stream.position(step)

    def epoch(self, step: int) -> float:
        return self.stream.epoch(step)


@dataclass
class RunContext:
    """Where and how this process trains."""

    run: Path  # the run folder
    data_root: str  # what --data named
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    upstream: dict[str, Path] = field(default_factory=dict)  # config field -> run folder
    log: Callable[[str], None] = print

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Spec:
    """Base class of a model kind. Subclasses set ``name`` and ``config`` and implement
    ``build_model``, ``build_data``, ``step`` and ``evaluate``."""

    name: ClassVar[str] = ""
    config: ClassVar[type[TrainConfig]] = TrainConfig
    upstream: ClassVar[dict[str, str]] = {}  # config field -> kind of the run it names
    figures: ClassVar[dict[str, str]] = {}  # PNG written into the run by evaluate -> title
    # The smallest config worth training, as ``key=value`` overrides: a 2-rank CPU step in
    # tens of milliseconds. The machinery tests (resume, DDP) run every kind with it.
    tiny: ClassVar[tuple[str, ...]] = ()
    generates: ClassVar[bool] = False  # implements ``generate`` (``worldmill generate``)
    # Extra overrides for the tiny upstream runs, per upstream field (e.g. a DV tokenizer).
    tiny_upstream: ClassVar[dict[str, tuple[str, ...]]] = {}

    def build_model(self, cfg: Any, ctx: RunContext) -> nn.Module:
        raise NotImplementedError

    def build_data(self, cfg: Any, ctx: RunContext) -> Data:
        raise NotImplementedError

    def init_model(self, model: nn.Module, data: Data, cfg: Any, ctx: RunContext) -> None:
        """Fresh runs only (not on resume, not with ``init_from``). Default: nothing."""

    def step(self, model: nn.Module, batch: Any, ctx: RunContext) -> tuple[torch.Tensor, dict]:
        """One micro-batch: ``(scalar loss, {name: float})``; the loop does the rest."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, data: Data, cfg: Any, ctx: RunContext) -> dict:
        """Held-out metrics (rank 0, model in eval mode, EMA weights when enabled)."""
        raise NotImplementedError

    def generate(self, run: Path, req: Any, context: Any) -> Any:
        """``worldmill generate`` for a finished run of this kind: ``req`` is a
        ``worldmill.generate.GenerateRequest``, ``context`` the conditioning frames
        ``(T, H, W, 3)`` uint8 or None (Text2World); returns ``(T, H, W, 3)`` uint8 frames.
        The caller runs the guardrails and writes the files."""
        raise NotImplementedError(f"{self.name} runs do not generate")

    def split_batch(self, batch: Any, n: int) -> list[Any]:
        """``n`` micro-batches of a batch (gradient accumulation): tensors and lists are cut
        along their first axis, dicts item by item."""
        return _split(batch, n)

    # -- upstream runs ----------------------------------------------------------------

    def resolve_upstream(self, cfg: Any) -> dict[str, Path]:
        """Run folders named by the ``upstream`` fields; each must be a finished run of the
        required kind. Raises ConfigError naming the key otherwise."""
        out: dict[str, Path] = {}
        for key, kind in self.upstream.items():
            value = getattr(cfg, key, "")
            if not value:
                raise ConfigError(f"{key}: a {kind} run folder is required (--{key} RUN)")
            out[key] = check_run(value, kind, key)
        return out


def check_run(path: str | Path, kind: str | None, key: str) -> Path:
    """``path`` is a run folder with a config and a complete checkpoint (of ``kind``)."""
    from worldmill.training import checkpoint

    run = Path(path)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{key}: {run} is not a training run (no config.json)")
    got = json.loads(cfg_path.read_text()).get("kind", "tokenizer")
    if kind is not None and got != kind:
        raise ConfigError(f"{key}: {run} is a {got!r} run, expected a {kind!r} run")
    if checkpoint.latest(run) is None:
        raise ConfigError(f"{key}: {run} has no complete checkpoint yet")
    return run


def _split(batch: Any, n: int) -> list[Any]:
    if n == 1:
        return [batch]
    if isinstance(batch, torch.Tensor):
        return list(batch.chunk(n))
    if isinstance(batch, dict):
        parts = {k: _split(v, n) for k, v in batch.items()}
        return [{k: parts[k][i] for k in batch} for i in range(n)]
    if isinstance(batch, list | tuple):
        size = len(batch) // n
        return [batch[i * size : (i + 1) * size] for i in range(n)]
    raise TypeError(f"cannot split a batch of type {type(batch).__name__}")
