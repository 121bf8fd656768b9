"""Training-run configuration (one YAML per run + ``key=value`` overrides).

Loaded with ``worldmill.config.load_config(TokenizerTrainConfig, path, overrides)``: every
value is validated (types, ranges, and cross-field rules such as "crop divisible by the
spatial compression") before any process starts; a bad value is a ``ConfigError`` naming
the key. The resolved config is written to ``RUN/config.json`` and handed to the trainer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from worldmill.config import StrictModel


class TokenizerModelConfig(StrictModel):
    """Mirrors ``worldmill.models.tokenizer.TokenizerConfig`` (see its comments)."""

    kind: Literal["cv", "dv"] = "cv"  # continuous latents / discrete FSQ tokens
    temporal_compression: Literal[4, 8] = 4
    spatial_compression: Literal[8, 16] = 8
    patch_size: Literal[1, 2, 4, 8] = 8  # lossless space-to-depth stem (8: all convs at H/8)
    latent_channels: int = Field(16, ge=1, le=256)  # CV only
    fsq_levels: list[int] = Field(default_factory=lambda: [8, 8, 8, 5, 5, 5])  # DV: 64k codes
    channels: int = Field(128, ge=8)  # multiple of 8 (GroupNorm groups)
    channel_mult: list[int] = Field(default_factory=lambda: [1, 1], min_length=1)
    blocks_per_level: int = Field(1, ge=1, le=8)
    linear_path: bool = True  # linear patch codec (PCA-initialised) around the conv stacks

    @model_validator(mode="after")
    def _check(self) -> TokenizerModelConfig:
        if self.spatial_compression < self.patch_size:
            raise ValueError("spatial_compression must be >= patch_size")
        if any(lv < 2 for lv in self.fsq_levels) or not self.fsq_levels:
            raise ValueError(f"fsq_levels must be a non-empty list of ints >= 2: {self.fsq_levels}")
        if self.channels % 8:
            raise ValueError(f"channels must be a multiple of 8, got {self.channels}")
        return self


class DataConfig(StrictModel):
    width: int = Field(
        96, ge=16
    )  # decode size of the short side, px (aspect kept); sample shards: 96
    fps: float = Field(0.0, ge=0)  # resample to this frame rate; 0 = keep the clip's
    crop: int = Field(64, ge=8)  # square crop: random for training, centre for eval
    num_frames: int = Field(9, ge=1)  # frames per training clip: 1 + k * temporal_compression
    batch_size: int = Field(2, ge=1)  # clips per rank per step
    holdout: int = Field(
        4, ge=1
    )  # clips held out for evaluation, whole source videos (never trained on)


class OptimConfig(StrictModel):
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)  # 0 = off
    pca_init_clips: int = Field(64, ge=0)  # training crops for the patch codec's PCA; 0 = off


class RunConfig(StrictModel):
    steps: int = Field(600, ge=1)  # optimizer steps in total (a resumed run continues to this)
    checkpoint_every: int = Field(100, ge=1)  # steps between dist checkpoints (and at the end)
    keep_checkpoints: int = Field(2, ge=1)
    nproc: int = Field(2, ge=1)  # torchrun processes (data-parallel ranks)
    threads_per_proc: int = Field(1, ge=1)  # torch intra-op threads per rank
    seed: int = 0
    retries: int = Field(2, ge=0)  # Prefect task retries; each retry resumes from `latest`
    eval_max_clips: int = Field(16, ge=1)


class TokenizerTrainConfig(StrictModel):
    """``worldmill train tokenizer``: a causal video tokenizer trained on curate shards."""

    model: TokenizerModelConfig = Field(default_factory=TokenizerModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _shapes(self) -> TokenizerTrainConfig:
        s, t = self.model.spatial_compression, self.model.temporal_compression
        if self.data.crop % s:
            raise ValueError(
                f"data.crop ({self.data.crop}) must be divisible by model.spatial_compression ({s})"
            )
        if (self.data.num_frames - 1) % t:
            raise ValueError(
                f"data.num_frames ({self.data.num_frames}) must be 1 + k * "
                f"model.temporal_compression ({t})"
            )
        if self.data.crop > self.data.width:
            raise ValueError(f"data.crop ({self.data.crop}) exceeds data.width ({self.data.width})")
        return self


CONFIGS: dict[str, type[StrictModel]] = {"tokenizer": TokenizerTrainConfig}
TRAINER_MODULES: dict[str, str] = {"tokenizer": "worldmill.training.tokenizer_train"}
