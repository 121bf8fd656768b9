"""Kind ``diffusion``: the diffusion world model (``models/dit.py``) over CV tokenizer latents.

    worldmill train diffusion --data SHARDS --tokenizer TOKRUN --out RUN [--set k=v ...]

Upstream: ``tokenizer``, a finished CV tokenizer run (its ``latent_channels`` are the
model's). Data: the run's latent cache (``RUN/tokens``, or ``data.tokens_dir``), made by
rank 0 before training with the tokenizer's latest checkpoint when missing or stale
(``latents.ensure_encoded``, shared with the ``ar`` kind, whose ``TokenData`` this reuses),
with every caption's MiniLM embedding; ``--data`` may also name a ``worldmill encode``
output. Training: random ``data.frames x data.size x data.size`` latent windows; each
sample gets 0 (Text2World, ``model.t2w_prob``) or 1..frames-1 given leading frames, a
rectified-flow noise level for the rest and, with ``model.cond_drop``, the null caption;
with ``data.reverse_prob`` a window is played backwards with its caption's camera words
swapped (``ReversibleWindowStream``), so only the camera words tell the motion.
Fresh runs first measure the cache's per-channel mean / std (``init_model``; saved with the
weights).

Evaluation (``metrics.json``), on held-out whole source videos (``ar``'s windows: centre and
corners of each clip's latent grid, from latent frame 0):

    psnr / ssim                    Video2World: frames 0 .. frames-2 given, the last one
                                   sampled (``sample.*``), decoded by the tokenizer, its
                                   pixel frames scored against the real ones
    baseline_psnr / baseline_ssim  copy the last given latent frame (same tokenizer)
    copy_psnr                      copy the last real context frame (raw pixels)
    tokenizer_psnr                 the tokenizer's reconstruction of the true latents (ceiling)

and camera control, Text2World: prompts that name a camera motion (corpus captions parsed
for the captioner's words: "pan to the left/right", "tilt up/down", "zoom in/out", "static
shot"; ``eval.camera_prompts`` per motion; the captioner's own phrasing as templates when
no caption names one), one sample each, decoded, and classified by the project's
optical-flow estimator (``tasks/filter_motion.camera_motion_stats`` +
``tasks/caption.classify_camera``) on the generated frames, on frame pairs one latent frame
(``t_c`` pixel frames) apart (``camera.estimate_camera``):

    camera_motion_accuracy     fraction whose estimated motion is the prompted one
    camera_motion_accuracy_g1  the same at guidance 1 (caption only, no CFG)
    camera_motion_chance       1 / number of motion classes prompted
    camera_motion_accuracy_real  the estimator on the real held-out windows, decoded by the
                                 tokenizer as generated ones are (the metric's ceiling)

plus ``predict.png`` (rows: real, tokenizer, diffusion, copy-latent baseline) and
``text2world.png`` (one Text2World sample per prompted motion).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from worldmill.config import ConfigError, StrictModel
from worldmill.models.dit import PRESETS, DiTConfig, DiTWorldModel, preset
from worldmill.training import data, latents, metrics
from worldmill.training.camera import (
    camera_control,
    camera_prompts,
    caption_motion,
    estimate_camera,
    prompt_conditions,
    reverse_caption,
)
from worldmill.training.config import OptimConfig, RunConfig, TrainConfig
from worldmill.training.encode import fit_clip
from worldmill.training.kinds.ar import TokenData
from worldmill.training.kinds.ar_eval import eval_windows
from worldmill.training.spec import RunContext, Spec


class DitModelConfig(StrictModel):
    """A size preset of ``models/dit.py`` (``tiny``, ``cpu``); any field set here replaces the
    preset's. Latent channels come from the tokenizer run, window sizes from ``data``."""

    preset: Literal["tiny", "cpu"] = "cpu"
    num_layers: int | None = Field(None, ge=1)
    hidden_size: int | None = Field(None, ge=8)
    num_heads: int | None = Field(None, ge=1)
    ffn_hidden_size: int | None = Field(None, ge=0)
    patch: int | None = Field(None, ge=1)  # latent rows = columns per token
    patch_t: int | None = Field(None, ge=1)  # latent frames per token
    text_tokens: int | None = Field(None, ge=1)
    cond_drop: float | None = Field(None, ge=0, lt=1)  # P(null caption) in training (CFG)
    t2w_prob: float | None = Field(None, ge=0, le=1)  # P(no given frame) in training
    logit_mean: float | None = None  # training noise level t = sigmoid(N(mean, std))
    logit_std: float | None = Field(None, gt=0)
    t1_prob: float | None = Field(None, ge=0, le=1)  # P(t = 1, pure noise) in training
    given_inputs: bool | None = None  # tokens also read the anchor + its change (Video2World)
    anchor_gradients: bool | None = None  # ... and the anchor's spatial derivatives
    camera_field: bool | None = None  # ... and the prompt's camera displacement per cell
    camera_dim: int | None = Field(None, ge=0)  # camera-phrase embedding -> adaLN; 0 = off
    pixel_loss: float | None = Field(None, ge=0)  # weight of the decoded-pixel x0 MSE; 0 = off
    pixel_samples: int | None = Field(None, ge=1)  # samples per rank and step that get it
    pixel_first: int | None = Field(None, ge=0)  # ... of them with the fewest given frames
    loss_weight: Literal["variance", "uniform"] | None = None  # x0 MSE per channel
    backend: Literal["megatron", "torch"] = "megatron"


class LatentDataConfig(StrictModel):
    """Latent windows from the CV latent cache."""

    frames: int = Field(4, ge=2)  # latent frames per window (4 at 4x = 13 pixel frames)
    # latent rows = columns per window: 12 at 8x = 96 px, the full height of the default
    # tokenizer's 96 px clips, so a zoom about the frame centre reads as a zoom in every
    # window (in 64 px corner windows it reads as a pan: RESULTS.md, diffusion round 2)
    size: int = Field(12, ge=1)
    batch_size: int = Field(8, ge=1)  # windows per rank per step
    holdout: int = Field(4, ge=1)  # clips held out, whole source videos
    random_start: bool = True  # windows may start after latent frame 0 (eval: always at 0)
    # P(a training window is played backwards, with its caption's camera words swapped:
    # ``camera.reverse_caption``). A clip's content and caption otherwise tell its motion,
    # and the model learnt each training clip's own move instead of the one its prompt
    # names (RESULTS.md, diffusion round 4); reversed, the same content and caption come
    # with both directions and only the camera words decide which.
    reverse_prob: float = Field(0.5, ge=0, le=1)
    tokens_dir: str = ""  # latent cache; "" = RUN/tokens


class DiffusionSampleConfig(StrictModel):
    """The sampler for evaluation and the default of ``worldmill generate``."""

    steps: int = Field(8, ge=1)  # Euler steps of the flow ODE (model calls, x2 with CFG)
    guidance: float = Field(4.0, ge=0)  # classifier-free guidance; 1 = caption only
    shift: float = Field(1.0, gt=0)  # time-grid shift (> 1: more steps at high noise)
    # Text2World: "first_frame" = sample, keep its first latent frame, sample the rest given
    # it (Cosmos-Predict2's Text2Image -> Video2World); "joint" = all frames at once
    text2world: Literal["first_frame", "joint"] = "first_frame"
    seed: int = 0


class DiffusionEvalConfig(StrictModel):
    # Sampler steps of the Video2World ``psnr`` / ``ssim``: 1 = the one-step x0 prediction
    # E[x0 | given frames] (what PSNR rewards); ``psnr_sampled`` uses ``sample.steps``.
    v2w_steps: int = Field(1, ge=1)
    # Guidance of the Video2World ``psnr``: 1 = the caption-conditioned E[x0 | given frames];
    # CFG (g > 1) pushes the estimate away from that mean (``psnr_guided`` reports
    # ``sample.guidance``). Text2World and ``psnr_sampled`` use ``sample.guidance``.
    v2w_guidance: float = Field(1.0, ge=0)
    camera_prompts: int = Field(4, ge=0)  # Text2World prompts per camera motion; 0 = off


class DiffusionTrainConfig(TrainConfig):
    """``worldmill train diffusion``: the DiT world model on a CV tokenizer run's latents."""

    kind: Literal["diffusion"] = "diffusion"
    tokenizer: str = ""  # upstream CV tokenizer run folder (--tokenizer RUN)
    model: DitModelConfig = Field(default_factory=DitModelConfig)
    data: LatentDataConfig = Field(default_factory=LatentDataConfig)
    sample: DiffusionSampleConfig = Field(default_factory=DiffusionSampleConfig)
    eval: DiffusionEvalConfig = Field(default_factory=DiffusionEvalConfig)
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(
            lr=1e-3, weight_decay=0.01, pca_init_clips=0, ema_decay=0.99
        )  # evaluation and generation use the EMA weights
    )
    run: RunConfig = Field(default_factory=lambda: RunConfig(steps=1600, checkpoint_every=400))

    @classmethod
    def from_run(cls, data: dict) -> DiffusionTrainConfig:
        """A run's config.json from before the camera-phrase conditioning, the pixel loss,
        the anchor gradients or the camera field lacks ``model.camera_dim`` / ``pixel_loss``
        / ``anchor_gradients`` / ``camera_field`` (a fresh run's file has them, null when
        unset): it is rebuilt as it was trained, without them."""
        model = dict(data.get("model", {}))
        if "pixel_first" not in model and model.get("pixel_samples") is None:
            model["pixel_samples"] = 2  # the default before the first-frame sample
        for key in ("camera_dim", "pixel_loss", "anchor_gradients", "camera_field", "pixel_first"):
            model.setdefault(key, 0)
        data_ = {"reverse_prob": 0.0, **data.get("data", {})}  # ... and time reversal
        return cls.model_validate({**data, "model": model, "data": data_})


def tokenizer_channels(tokenizer_run: str | Path) -> int:
    """Latent channels of a CV tokenizer run (ConfigError naming ``tokenizer`` for DV)."""
    from worldmill.training.registry import load_run_config

    tcfg = load_run_config(tokenizer_run)
    if tcfg.model.kind != "cv":
        raise ConfigError(
            f"tokenizer: {tokenizer_run} is a {tcfg.model.kind.upper()} tokenizer; the "
            "diffusion model needs continuous latents (a CV tokenizer, the default)"
        )
    return tcfg.model.latent_channels


def model_config(cfg: DiffusionTrainConfig, channels: int) -> DiTConfig:
    m, d = cfg.model, cfg.data
    over = {k: v for k, v in m.model_dump().items() if k != "preset" and v is not None}
    return preset(m.preset, latent_channels=channels, max_t=d.frames, max_h=d.size,
                  max_w=d.size, **over)  # fmt: skip


class LatentData(TokenData):
    """``ar``'s token-cache data, over CV latents: ``batch(step)`` ->
    ``{"x": (B, C, frames, size, size) float32, "text": (B, 771)}``, the text being each
    caption's conditioning (``camera.prompt_conditions``: its MiniLM embedding, its camera
    phrase's, the phrase's motion code)."""

    array = "latent"

    def __init__(self, cfg: DiffusionTrainConfig, ctx: RunContext):
        super().__init__(cfg, ctx)
        ids = sorted(self.text)
        conds = prompt_conditions(
            [self.text[i][0] for i in ids], np.stack([self.text[i][1] for i in ids])
        )
        for i, cond in zip(ids, conds, strict=True):  # the stream reads this same dict
            self.text[i] = (self.text[i][0], cond)

    def reversed_text(self, ids: list[str]) -> dict[str, np.ndarray]:
        """The conditioning (``prompt_conditions``) of each clip's reversed caption."""
        back = prompt_conditions([reverse_caption(self.text[i][0]) for i in ids])
        return dict(zip(ids, back, strict=True))


# -- the spec --------------------------------------------------------------------------------


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class DiffusionSpec(Spec):
    name = "diffusion"
    config = DiffusionTrainConfig
    upstream = {"tokenizer": "tokenizer"}
    figures = {
        "predict.png": "next-latent-frame predictions (held out)",
        "text2world.png": "Text2World samples, one per prompted camera motion",
    }
    tiny = (
        "model.preset=tiny",
        "data.frames=3",
        "data.size=4",
        "data.batch_size=2",
        "data.holdout=2",
        "sample.steps=2",
        "eval.camera_prompts=1",
        "optim.warmup_steps=1",
        "run.nproc=2",
    )
    generates = True

    def resolve_upstream(self, cfg: DiffusionTrainConfig) -> dict[str, Path]:
        out = super().resolve_upstream(cfg)
        tokenizer_channels(out["tokenizer"])  # CV only: ConfigError naming `tokenizer`
        return out

    def build_model(self, cfg: DiffusionTrainConfig, ctx: RunContext) -> DiTWorldModel:
        return DiTWorldModel(model_config(cfg, tokenizer_channels(ctx.upstream["tokenizer"])))

    def build_data(self, cfg: DiffusionTrainConfig, ctx: RunContext) -> LatentData:
        data_ = LatentData(cfg, ctx)
        # the frozen tokenizer decoder of the model's pixel loss (one run per process)
        self.decode = data_.tokenizer.to(ctx.device).requires_grad_(False).decode
        return data_

    def init_model(self, model, data_: LatentData, cfg, ctx: RunContext) -> None:
        """Per-channel mean / std of the training latents and the whitening of the training
        captions' camera phrases (every rank reads the same cache, so every rank computes
        the same statistics)."""
        arrs = [latents.load_array(r).astype(np.float32) for r in data_.train_refs]
        flat = np.concatenate([a.reshape(a.shape[0], -1) for a in arrs], 1)  # (C, values)
        mean, std = torch.from_numpy(flat.mean(1)), torch.from_numpy(flat.std(1))
        dit = _unwrap(model)
        dit.set_latent_stats(mean, std)
        ctx.log(f"latent stats over {len(arrs)} clips: std {[round(float(s), 3) for s in std]}")
        if dit.cfg.camera_dim:  # whitening of the training captions' camera phrases
            conds = np.stack([data_.text[r.clip_id][1] for r in data_.train_refs])
            phrase = conds[:, dit.cfg.text_dim : dit.cfg.text_dim + dit.cfg.camera_dim]
            dit.set_camera_stats(torch.from_numpy(phrase))

    def step(self, model, batch: dict, ctx: RunContext):
        x, text = batch["x"].to(ctx.device), batch["text"].to(ctx.device)
        loss = model(x, text, decode=self.decode)
        return loss, dict(_unwrap(model).terms)

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(self, model, data_: LatentData, cfg: DiffusionTrainConfig, ctx) -> dict:
        """Video2World next-latent-frame metrics and Text2World camera control."""
        tok = data_.tokenizer.to(ctx.device)
        tc, sc = tok.cfg.temporal_compression, tok.cfg.spatial_compression
        d, s = cfg.data, cfg.sample
        dit = _unwrap(model)
        v2w_steps = cfg.eval.v2w_steps
        rows: dict[str, list[torch.Tensor]] = {
            "real": [],
            "tok": [],
            "dit": [],
            "base": [],
            "sampled": [],
            "guided": [],
        }
        copy: list[torch.Tensor] = []
        real_motion: list[bool] = []  # the estimator on real held-out centre windows
        fps = 24.0
        for ref in data_.held_out[: cfg.run.eval_max_clips]:
            if ref.source is None:
                raise FileNotFoundError(f"{ref.clip_id}: source clip of the latents not found")
            fps = float(data_.tok_cfg.data.fps or ref.source.meta.get("fps") or fps)
            frames = data.decode_clip(ref.source, data_.tok_cfg.data.width, data_.tok_cfg.data.fps)
            video = fit_clip(data.to_tensor(frames), tc, sc)
            grid = torch.from_numpy(latents.load_array(ref).astype(np.float32))  # (C, T', H', W')
            caption, emb = data_.text[ref.clip_id]
            text = torch.from_numpy(emb)[None].to(ctx.device)
            for w, px in eval_windows(grid, video, d.size, d.frames, tc, sc):
                w = w[None].to(ctx.device)  # (1, C, frames, size, size)
                pred = dit.sample(
                    w[:, :, :-1],
                    1,
                    text,
                    steps=v2w_steps,
                    guidance=cfg.eval.v2w_guidance,
                    shift=s.shift,
                    seed=s.seed,
                )
                guided = dit.sample(w[:, :, :-1], 1, text, steps=v2w_steps, guidance=s.guidance,
                                    shift=s.shift, seed=s.seed)  # fmt: skip
                sampled = dit.sample(w[:, :, :-1], 1, text, steps=s.steps, guidance=s.guidance,
                                     shift=s.shift, seed=s.seed)  # fmt: skip
                base = torch.cat([w[:, :, :-1], w[:, :, -2:-1]], 2)
                lats = {"tok": w, "dit": pred, "base": base, "sampled": sampled, "guided": guided}
                for name, lat in lats.items():
                    rows[name].append(tok.decode(lat).clamp(-1, 1).float().cpu()[0])
                rows["real"].append(px)
                copy.append(px[:, -tc - 1 : -tc].expand(-1, tc, -1, -1))
                want = caption_motion(caption)
                if want is not None:  # as generated windows are read: decoded, stride t_c
                    real = metrics.to_uint8(rows["tok"][-1][None])[0]
                    real_motion.append(estimate_camera(real, fps, stride=tc) == want)
        if not rows["real"]:
            raise ValueError("no held-out clips to evaluate")
        stack = {k: torch.stack(v) for k, v in rows.items()}  # (N, 3, T, H, W)
        part = {k: v[:, :, -tc:] for k, v in stack.items()}  # the predicted frame's pixels
        target = part["real"]
        metrics.plot_recon(
            {"real": stack["real"][0], "tokenizer": stack["tok"][0],
             "diffusion": stack["dit"][0], "copy latent": stack["base"][0]},
            ctx.run / "predict.png", n_frames=6,
        )  # fmt: skip
        out = {
            "kind": "diffusion",
            "psnr": metrics.psnr(part["dit"], target),
            "ssim": metrics.ssim(part["dit"], target),
            "psnr_guided": metrics.psnr(part["guided"], target),  # v2w_steps, sample.guidance
            "psnr_sampled": metrics.psnr(part["sampled"], target),  # sample.* settings
            "ssim_sampled": metrics.ssim(part["sampled"], target),
            "baseline_psnr": metrics.psnr(part["base"], target),
            "baseline_ssim": metrics.ssim(part["base"], target),
            "copy_psnr": metrics.psnr(torch.stack(copy), target),
            "tokenizer_psnr": metrics.psnr(part["tok"], target),
            "tokenizer_ssim": metrics.ssim(part["tok"], target),
            "baseline": "copy the last context latent frame, decoded by the same tokenizer",
            "eval_clips": min(len(data_.held_out), cfg.run.eval_max_clips),
            "eval_windows": len(target),
            "eval_window": [d.frames, d.size, d.size],
            "predicted_pixel_frames": tc,
            "v2w_steps": v2w_steps,
            "v2w_guidance": cfg.eval.v2w_guidance,
            "sampling": s.model_dump(),
            "params": sum(p.numel() for p in dit.parameters()),
        }
        if real_motion:
            out["camera_motion_accuracy_real"] = float(np.mean(real_motion))
        held = {r.clip_id for r in data_.held_out}
        out.update(camera_control(dit, tok, data_.text, held, cfg, ctx.run / "text2world.png", fps))
        return out

    # -- generation ------------------------------------------------------------------------

    def generate(self, run: Path, req, context):
        """Text2World (``context`` None) or Video2World (given frames kept, the rest
        denoised) for ``req.frames`` new latent frames; see :func:`generate_diffusion`."""
        return generate_diffusion(
            run, req.prompt, context, frames=req.frames, seed=req.seed,
            guidance=req.guidance or None,
        )  # fmt: skip


@torch.no_grad()
def generate_diffusion(
    run, prompt: str, video_or_image=None, frames: int = 2, seed: int = 0, guidance=None
) -> np.ndarray:
    """Generate with a trained ``diffusion`` run: ``frames`` latent frames (``t_c`` pixel
    frames each) after the given clip / image, or from the caption alone (Text2World,
    ``video_or_image`` None). Returns the decoded video ``(T, H, W, 3)`` uint8, given frames
    included as the tokenizer reconstructs them. The input is resized (short side) and
    centre-cropped to the model's ``data.size`` latent grid and cut to at most
    ``data.frames - 1`` latent frames; past ``data.frames`` the window slides (the last
    ``data.frames - 1`` latent frames are given). ``guidance`` None = the run's
    ``sample.guidance``. Deterministic for a seed; no Prefect, no side effects."""
    import contextlib

    import torch.distributed as dist

    from worldmill.models.ar import _read_input
    from worldmill.training import checkpoint, encode
    from worldmill.training import megatron as mc
    from worldmill.training.registry import load_run_config

    run = Path(run)
    cfg = load_run_config(run)
    if cfg.kind != "diffusion":
        raise ValueError(f"{run} is a {cfg.kind!r} run, not a 'diffusion' run")
    ck = checkpoint.latest(run)
    if ck is None:
        raise FileNotFoundError(f"no complete checkpoint under {run / 'checkpoints'}")
    s = cfg.sample
    g = s.guidance if guidance is None else guidance
    group = contextlib.nullcontext() if dist.is_initialized() else mc.single_process(seed)
    with group:
        tok, _, _ = encode.load_tokenizer_in_group(cfg.tokenizer)
        model = DiTWorldModel(model_config(cfg, tokenizer_channels(cfg.tokenizer)))
        checkpoint.load_model(ck[0], model)
        dev = mc.device()
        model, tok = model.to(dev).eval(), tok.to(dev)
        tc, sc = tok.cfg.temporal_compression, tok.cfg.spatial_compression
        size, max_t = cfg.data.size, model.cfg.max_t
        text = torch.from_numpy(prompt_conditions([prompt])).to(dev)
        kw = dict(steps=s.steps, guidance=g, shift=s.shift)
        if video_or_image is None:  # Text2World: the first window from the caption alone
            k = min(frames, max_t)
            first = s.text2world == "first_frame"
            out = model.text2world(text, k, (size, size), first, seed=seed, **kw)
            left, step_seed = frames - k, seed + 1
        else:
            px = size * sc
            clip = _read_input(video_or_image, px)  # (T, H, W, 3), short side px
            h, w = clip.shape[1:3]
            y0, x0 = (h - px) // 2, (w - px) // 2
            clip = clip[:, y0 : y0 + px, x0 : x0 + px]
            n = 1 + min((len(clip) - 1) // tc, max_t - 2) * tc  # <= max_t - 1 latent frames
            video = data.to_tensor(clip[len(clip) - n :]).to(dev)[None]
            out, left, step_seed = tok.encode(video)[0], frames, seed
        while left > 0:
            window = out[:, :, -(max_t - 1) :]
            k = min(left, max_t - window.shape[2])
            new = model.sample(window, k, text, seed=step_seed, **kw)[:, :, window.shape[2] :]
            out, left, step_seed = torch.cat([out, new], 2), left - k, step_seed + 1
        video = tok.decode(out).clamp(-1, 1).float().cpu()
        return metrics.to_uint8(video)[0]


SPEC = DiffusionSpec()

__all__ = [
    "PRESETS",
    "SPEC",
    "caption_motion",
    "camera_prompts",
    "DiffusionSpec",
    "DiffusionTrainConfig",
    "generate_diffusion",
]
