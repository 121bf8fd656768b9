"""Kind ``tokenizer``: the causal video tokenizer (``models/tokenizer.py``), CV or DV.

Data: random ``crop x crop`` windows of ``num_frames`` frames from curate shards; held out:
whole source videos. A fresh run first sets the linear patch codec to the PCA of
``optim.pca_init_clips`` training crops (the conv paths start at zero around it), so step 0
is already a strong linear codec (for DV fitted through the quantiser); training then
improves on it. Loss: L1 (sharpness) + MSE (what PSNR measures). Evaluation: held-out PSNR /
SSIM against a bicubic baseline with the same number of bytes (8-bit pixels vs DV tokens of
``log2(vocab)`` bits, CV values of 8 bits), ``recon.png``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from worldmill.config import StrictModel
from worldmill.models.tokenizer import CausalVideoTokenizer, TokenizerConfig
from worldmill.training import data, metrics
from worldmill.training.config import TrainConfig, VideoDataConfig
from worldmill.training.spec import RunContext, Spec, StreamData


class TokenizerModelConfig(StrictModel):
    """Mirrors ``worldmill.models.tokenizer.TokenizerConfig`` (see its comments)."""

    kind: Literal["cv", "dv"] = "cv"  # continuous latents / discrete FSQ tokens
    temporal_compression: Literal[4, 8] = 4
    spatial_compression: Literal[8, 16] = 8
    patch_size: Literal[1, 2, 4, 8] = 8  # lossless space-to-depth stem (8: all convs at H/8)
    latent_channels: int = Field(16, ge=1, le=256)  # CV only
    # DV: 2^16 codes (16 bits per token), spent on 4 finely quantised channels; with the
    # context decoder [32,16,16,8] is +0.05 dB over [64,16,8,8] at step 0 (bench/RESULTS.md).
    fsq_levels: list[int] = Field(default_factory=lambda: [32, 16, 16, 8])
    channels: int = Field(128, ge=8)  # multiple of 8 (GroupNorm groups)
    channel_mult: list[int] = Field(default_factory=lambda: [1, 1], min_length=1)
    blocks_per_level: int = Field(1, ge=1, le=8)
    linear_path: bool = True  # linear patch codec (PCA-initialised) around the conv stacks
    # Keep the PCA-fitted patch codec fixed while training (the conv paths learn around it).
    # Off: on the world corpus training every weight ends level with the fitted start after
    # 100 steps, the frozen codec 0.02 dB / 0.012 SSIM below (bench/RESULTS.md).
    freeze_linear: bool = False
    # Patch decoder reads its k x k neighbours in this and the previous latent frame,
    # least-squares fitted on the quantised codes (1 = its own latent only). None: 3 for DV
    # (+0.7 dB at step 0 on held-out world clips), 1 for CV (nothing fits it there).
    patch_decoder_kernel: int | None = Field(None, ge=1, le=7)

    @model_validator(mode="after")
    def _check(self) -> TokenizerModelConfig:
        if self.spatial_compression < self.patch_size:
            raise ValueError("spatial_compression must be >= patch_size")
        if any(lv < 2 for lv in self.fsq_levels) or not self.fsq_levels:
            raise ValueError(f"fsq_levels must be a non-empty list of ints >= 2: {self.fsq_levels}")
        if self.patch_decoder_kernel is not None and self.patch_decoder_kernel % 2 == 0:
            raise ValueError(f"patch_decoder_kernel must be odd, got {self.patch_decoder_kernel}")
        if self.channels % 8:
            raise ValueError(f"channels must be a multiple of 8, got {self.channels}")
        return self


class TokenizerDataConfig(VideoDataConfig):
    """Clips from curate shards, plus the tokenizer's training-time augmentation."""

    # Random horizontal flip, time reversal and a per-clip contrast / brightness / colour
    # gain on every training clip. Off by default: on the 10-clip curation corpus it did
    # not stop the conv paths from adding error on unseen videos (bench/RESULTS.md).
    augment: bool = False


def augment(video: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``(B, 3, T, H, W)`` in [-1, 1] -> same, each clip independently: flipped left-right
    (p = 1/2), played backwards (p = 1/2: the camera motion reversed), and
    ``x -> a * (x - mean) + mean + b`` with contrast ``a`` in [0.6, 1.4], brightness ``b`` in
    [-0.3, 0.3] and a per-channel gain in [0.85, 1.15], clamped to [-1, 1]."""
    b = video.shape[0]
    u = torch.rand(b, 7, generator=g)  # per clip: flip, reverse, contrast, brightness, 3 gains
    flip, rev = u[:, 0] < 0.5, u[:, 1] < 0.5
    video = torch.where(flip[:, None, None, None, None], video.flip(-1), video)
    video = torch.where(rev[:, None, None, None, None], video.flip(2), video)
    contrast = 0.6 + 0.8 * u[:, 2]
    bright = 0.6 * u[:, 3] - 0.3
    gain = 0.85 + 0.3 * u[:, 4:]  # (B, 3)
    mean = video.mean(dim=(1, 2, 3, 4), keepdim=True)
    k = (contrast[:, None] * gain)[:, :, None, None, None]  # (B, 3, 1, 1, 1)
    out = k * (video - mean) + mean + bright[:, None, None, None, None]
    return out.clamp(-1, 1)


class TokenizerTrainConfig(TrainConfig):
    """``worldmill train tokenizer``: a causal video tokenizer trained on curate shards."""

    kind: Literal["tokenizer"] = "tokenizer"
    model: TokenizerModelConfig = Field(default_factory=TokenizerModelConfig)
    data: TokenizerDataConfig = Field(default_factory=TokenizerDataConfig)

    @classmethod
    def from_run(cls, data: dict) -> TokenizerTrainConfig:
        """A DV run's config.json from before the context decoder lacks
        ``model.patch_decoder_kernel`` (a fresh run's file always has it): it is rebuilt
        as it was trained, without the context decoder."""
        model = data.get("model", {})
        if model.get("kind") == "dv" and "patch_decoder_kernel" not in model:
            data = {**data, "model": {**model, "patch_decoder_kernel": 1}}
        return cls.model_validate(data)

    def pca_crops(self) -> int:
        """``optim.pca_init_clips``, unset: 256 for DV (the context decoder's least-squares
        fit has 73 x 768 unknowns at k = 3; +0.2 dB over 64 crops on 16 held-out world
        clips), 64 for CV."""
        n = self.optim.pca_init_clips
        return n if n is not None else (256 if self.model.kind == "dv" else 64)

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
        return self


class ClipData(StreamData):
    """Training stream (this rank's slice) and held-out clips of a shard set."""

    def __init__(self, cfg: TokenizerTrainConfig, ctx: RunContext):
        d = cfg.data
        self.augment, self.seed, self.rank = d.augment, cfg.run.seed, ctx.rank
        refs = data.index_shards(ctx.data_root)
        self.train_refs, self.held_out = data.split_holdout(refs, d.holdout)
        self.stream = data.ResumableClipStream(
            self.train_refs,
            d.batch_size,
            d.num_frames,
            d.crop,
            d.width,
            d.fps,
            seed=cfg.run.seed,
            rank=ctx.rank,
            world=ctx.world,
        )

    def batch(self, step: int) -> torch.Tensor:  # (B, 3, T, S, S) in [-1, 1]
        video = self.stream.batch(step)
        if not self.augment:
            return video
        # A pure function of (seed, step, rank), like the crops: resuming replays it exactly.
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 64 + self.rank)
        return augment(video, g)


def build_tokenizer(cfg: TokenizerTrainConfig) -> CausalVideoTokenizer:
    m = cfg.model.model_dump()
    if m["patch_decoder_kernel"] is None:
        m["patch_decoder_kernel"] = 3 if m["kind"] == "dv" else 1
    return CausalVideoTokenizer(TokenizerConfig(**m))


def loss_fn(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    # L1 for sharpness + MSE (what PSNR measures); no perceptual loss (needs pretrained nets).
    return F.l1_loss(recon, video) + F.mse_loss(recon, video)


class TokenizerSpec(Spec):
    name = "tokenizer"
    config = TokenizerTrainConfig
    figures = {"recon.png": "reconstructions"}
    tiny = (
        "model.channels=8",
        "model.channel_mult=[1, 1]",
        "model.latent_channels=4",
        "data.num_frames=5",
        "data.width=64",
        "data.crop=32",
        "data.batch_size=1",
        "data.holdout=2",
        "optim.warmup_steps=2",
        "run.nproc=2",
    )

    def build_model(self, cfg: TokenizerTrainConfig, ctx: RunContext) -> CausalVideoTokenizer:
        return build_tokenizer(cfg)

    def build_data(self, cfg: TokenizerTrainConfig, ctx: RunContext) -> ClipData:
        return ClipData(cfg, ctx)

    def init_model(self, model, data_: ClipData, cfg: TokenizerTrainConfig, ctx) -> None:
        """PCA of ``optim.pca_init_clips`` training crops for the linear patch codec. The
        crops are rank 0's first batches (a pure function of the seed), so every rank
        computes the same weights; the training stream itself is untouched."""
        n = cfg.pca_crops()
        if n == 0 or model.patch is None:
            return
        s = data_.stream
        s0 = data.ResumableClipStream(
            s.refs, n, s.t, s.size, cfg.data.width, cfg.data.fps, seed=cfg.run.seed
        )
        s0.cache = s.cache  # share decoded clips
        explained = model.init_from_data(s0.batch(0))
        ctx.log(f"patch codec PCA on {n} crops: {float(explained.sum()):.3f} variance kept")

    def step(self, model, batch: torch.Tensor, ctx: RunContext):
        video = batch.to(ctx.device)
        return loss_fn(model(video), video), {}

    def evaluate(self, model, data_: ClipData, cfg: TokenizerTrainConfig, ctx) -> dict:
        """Held-out PSNR/SSIM vs a bicubic baseline with the same number of bytes."""
        d = cfg.data
        held = data_.held_out[: cfg.run.eval_max_clips]
        clips = data.eval_clips(held, d.num_frames, d.crop, d.width, d.fps).to(ctx.device)
        recon = torch.cat([model(c[None]) for c in clips]).clamp(-1, 1).float().cpu()
        clips = clips.cpu()
        n, _, t, h, w = clips.shape
        # Equal bytes: bicubic keeps 8-bit pixels, at least as many as the latent has bytes
        # (DV: log2(vocab) bits per token; CV: one byte per value, so bytes = values); the
        # grid is rounded up, so the baseline gets a few more bytes, never fewer.
        budget = model.latent_bytes(t, h, w)
        base, base_hw = metrics.bicubic_baseline(clips, budget)
        metrics.plot_recon(
            {"input": clips[0], "tokenizer": recon[0], "bicubic": base[0]}, ctx.run / "recon.png"
        )
        values = model.latent_numel(t, h, w)
        res = {
            "kind": f"tokenizer-{cfg.model.kind}",
            "psnr": metrics.psnr(recon, clips),
            "ssim": metrics.ssim(recon, clips),
            "baseline_psnr": metrics.psnr(base, clips),
            "baseline_ssim": metrics.ssim(base, clips),
            "baseline": f"bicubic {w}x{h} -> {base_hw[1]}x{base_hw[0]} -> {w}x{h} per frame",
            "eval_clips": n,
            "eval_shape": [t, h, w],
            "latent_values_per_clip": values,
            "latent_bytes_per_clip": round(budget, 1),
            "baseline_bytes_per_clip": 3 * t * base_hw[0] * base_hw[1],
            "compression": round(3 * t * h * w / budget, 2),  # 8-bit pixels / latent bytes
            "params": sum(p.numel() for p in model.parameters()),
        }
        if model.fsq is not None:
            # The comparison before bytes were counted: bicubic with as many 8-bit values as
            # the latent has FSQ channels (3x the bytes of [8,8,8,5,5,5] tokens).
            base_v, hw_v = metrics.bicubic_baseline(clips, values)
            res["values_baseline_psnr"] = metrics.psnr(base_v, clips)
            res["values_baseline_ssim"] = metrics.ssim(base_v, clips)
            res["values_baseline"] = f"bicubic -> {hw_v[1]}x{hw_v[0]} per frame"
        return res


SPEC = TokenizerSpec()
