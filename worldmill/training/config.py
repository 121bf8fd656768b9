"""Training-run configuration shared by every model kind (one YAML per run + ``key=value``).

A kind's config (declared in its spec, ``worldmill/training/kinds/<kind>.py``) subclasses
:class:`TrainConfig` and adds its own ``model`` and ``data`` sections; ``optim`` and ``run``
are the loop's and the same for every kind. Resolve one with
``worldmill.training.registry.resolve_config(kind, path, overrides)``: every value is
validated (types, ranges, cross-field rules) before any process starts; a bad value is a
``ConfigError`` naming the key. The resolved config is written to ``RUN/config.json``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from worldmill.config import StrictModel


class VideoDataConfig(StrictModel):
    """Clips decoded from curate shards (kinds that read pixels)."""

    width: int = Field(96, ge=16)  # decode size of the short side, px (aspect kept)
    fps: float = Field(0.0, ge=0)  # resample to this frame rate; 0 = keep the clip's
    crop: int = Field(64, ge=8)  # square crop: random for training, centre for eval
    num_frames: int = Field(9, ge=1)  # frames per training clip
    batch_size: int = Field(2, ge=1)  # clips per rank per step
    holdout: int = Field(4, ge=1)  # clips held out for evaluation, whole source videos
    workers: int = Field(0, ge=0)  # DataLoader worker processes per rank; 0 = in-process

    @model_validator(mode="after")
    def _crop_fits(self) -> VideoDataConfig:
        if self.crop > self.width:
            raise ValueError(f"data.crop ({self.crop}) exceeds data.width ({self.width})")
        return self


# Back-compat name (the tokenizer's data section before the kinds were split out).
DataConfig = VideoDataConfig


class OptimConfig(StrictModel):
    """Optimizer, schedule and the loop's numerics (every kind)."""

    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)  # adam(w) only
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"  # after warmup
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = Field(20, ge=0)
    grad_clip: float = Field(1.0, ge=0)  # global grad-norm clip; 0 = off
    grad_accum: int = Field(1, ge=1)  # micro-batches per step (data.batch_size % grad_accum == 0)
    ema_decay: float = Field(0.0, ge=0, lt=1)  # EMA of the weights (eval uses it); 0 = off
    # tokenizer: crops for the patch codec's PCA; 0 = off; None = the tokenizer's choice
    # (64 CV, 256 DV: TokenizerTrainConfig.pca_crops)
    pca_init_clips: int | None = Field(None, ge=0)


class RunConfig(StrictModel):
    """Length, checkpoints, processes (every kind)."""

    steps: int = Field(600, ge=1)  # optimizer steps in total (a resumed run continues to this)
    checkpoint_every: int = Field(100, ge=1)  # steps between dist checkpoints (and at the end)
    keep_checkpoints: int = Field(2, ge=1)
    nproc: int = Field(2, ge=1)  # torchrun processes (ranks)
    tensor_parallel: int = Field(1, ge=1)  # megatron tensor-parallel size (divides nproc)
    threads_per_proc: int = Field(1, ge=1)  # torch intra-op threads per rank
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    seed: int = 0
    retries: int = Field(2, ge=0)  # Prefect task retries; each retry resumes from `latest`
    eval_max_clips: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _tp_divides(self) -> RunConfig:
        if self.nproc % self.tensor_parallel:
            raise ValueError(
                f"run.tensor_parallel ({self.tensor_parallel}) must divide run.nproc ({self.nproc})"
            )
        return self


class TrainConfig(StrictModel):
    """Base of every kind's run config. ``kind`` is fixed per subclass (written to
    RUN/config.json, so a run folder says what it is); ``init_from`` starts the weights from
    another run's latest checkpoint (post-training: a new kind that fine-tunes a pretrained
    one is a spec with ``init_from``)."""

    kind: str = ""
    init_from: str = ""  # run folder whose model weights initialise this run ("" = fresh)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @classmethod
    def from_run(cls, data: dict) -> TrainConfig:
        """The config of an existing run from its ``RUN/config.json`` dict. A kind whose
        defaults changed since older runs were written overrides this to rebuild those runs
        as they were trained (keys a run's file lacks take their old default there, not in
        validation, where a partial dict is normal)."""
        return cls.model_validate(data)

    @model_validator(mode="after")
    def _accum_divides(self) -> TrainConfig:
        data = getattr(self, "data", None)
        b = getattr(data, "batch_size", None)
        if b is not None and b % self.optim.grad_accum:
            raise ValueError(
                f"optim.grad_accum ({self.optim.grad_accum}) must divide data.batch_size ({b})"
            )
        return self
