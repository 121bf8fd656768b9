"""Kind ``lam``: Genie's latent action model (``models/lam.py``) on raw frames.

    worldmill train lam --data SHARDS --out RUN [--set k=v ...]

Data: ``model.context + 1`` consecutive frames at a random start of a training clip,
decoded square at ``data.size`` px (``worldmill.genie.data``); held out: whole source
videos (rollout episodes). No action labels are used for training.

Logged per step (besides the loss): ``recon`` (next-frame MSE), ``entropy`` (batch code
entropy), ``codes_used`` and ``code_perplexity`` of the batch's codes.

Evaluation (``metrics.json``, held-out clips, every transition, PSNR of the pooled MSE):
``psnr`` of the decoder's next frame given the inferred code, ``psnr_random_code`` (a random code instead: how much
the code matters), ``copy_psnr`` (copy x_t), codebook usage, and -- when the shards carry
the simulator's actions -- the action probe (``worldmill.genie.metrics.action_probe``);
``lam.png``: real next frames, predictions, copy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from worldmill.config import StrictModel
from worldmill.genie import metrics as gm
from worldmill.genie.data import FrameClips, FrameWindowStream, to_frames, true_actions
from worldmill.models.lam import LAMConfig, LatentActionModel
from worldmill.training import metrics
from worldmill.training.config import OptimConfig, RunConfig, TrainConfig
from worldmill.training.spec import RunContext, Spec, StreamData


class LamModelConfig(StrictModel):
    """Mirrors ``worldmill.models.lam.LAMConfig`` (see its comments); ``size`` is
    ``data.size``."""

    context: int = Field(2, ge=1)
    channels: int = Field(16, ge=8)  # conv width at full resolution
    levels: int = Field(3, ge=1, le=6)
    latent_dim: int = Field(16, ge=1)
    num_codes: int = Field(8, ge=2)
    beta: float = Field(0.25, ge=0)
    entropy_weight: float = Field(0.1, ge=0)
    cost_radius: int = Field(2, ge=0, le=4)  # x_t -> x_{t+1} motion cost volume, px; 0 = off


class FrameDataConfig(StrictModel):
    """Square frames decoded from curate shards (short side to ``size``, centre crop)."""

    size: int = Field(64, ge=8)  # frame side, px
    fps: float = Field(0.0, ge=0)  # resample; 0 = the clip's own rate (actions are per frame)
    batch_size: int = Field(8, ge=1)  # windows per rank per step
    # clips held out, whole source videos (episodes); 60 of bench/genie.py's 157 clips: the
    # probe's chance (held-out majority-class rate) is uneven on fewer -- sticky holds make
    # long runs of one action (0.275 on 30 clips, 0.205 on 60; RESULTS.md genie4)
    holdout: int = Field(60, ge=1)


class LamTrainConfig(TrainConfig):
    """``worldmill train lam``: a latent action model on curate shards (rollouts)."""

    kind: Literal["lam"] = "lam"
    model: LamModelConfig = Field(default_factory=LamModelConfig)
    data: FrameDataConfig = Field(default_factory=FrameDataConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-3, pca_init_clips=0))
    # 1200 steps: a code moves the predicted next frame by ~4 dB, ~2.5 at 400 (RESULTS genie4)
    run: RunConfig = Field(default_factory=lambda: RunConfig(steps=1200, checkpoint_every=400))

    @model_validator(mode="after")
    def _size(self) -> LamTrainConfig:
        if self.data.size % 2**self.model.levels:
            raise ValueError(
                f"data.size ({self.data.size}) must be divisible by 2**model.levels "
                f"({2**self.model.levels})"
            )
        return self


def lam_config(cfg: LamTrainConfig) -> LAMConfig:
    return LAMConfig(size=cfg.data.size, **cfg.model.model_dump())


class LamData(StreamData):
    def __init__(self, cfg: LamTrainConfig, ctx: RunContext):
        d = cfg.data
        self.clips = FrameClips(ctx.data_root, d.size, d.holdout, d.fps)
        self.held_out = self.clips.held_out
        self.stream = FrameWindowStream(
            self.clips, cfg.model.context + 1, d.batch_size, cfg.run.seed, ctx.rank, ctx.world
        )


def infer_clips(lam: LatentActionModel, clips: FrameClips, refs, device) -> dict:
    """clip id -> (codes ``(T-1,)``, vectors ``(T-1, D)``, true actions ``(T-1,)`` or None)."""
    out = {}
    for r in refs:
        x = to_frames(clips.frames(r))[None].to(device)
        codes, z = lam.infer(x)
        acts = true_actions(r)
        out[r.clip_id] = (
            codes[0].cpu().numpy(),
            z[0].float().cpu().numpy(),
            None if acts is None else np.asarray(acts)[: x.shape[1] - 1],
        )
    return out


def probe_metrics(train: dict, test: dict, num_codes: int) -> dict:
    """The action probe over ``infer_clips`` results; {} when clips carry no actions."""

    def stack(d: dict):
        rows = [(z, c, a) for c, z, a in d.values() if a is not None and len(a) == len(c)]
        if not rows:
            return None
        return tuple(np.concatenate([r[i] for r in rows]) for i in range(3))

    tr, te = stack(train), stack(test)
    if tr is None or te is None or len(np.unique(tr[2])) < 2:
        return {}
    return gm.action_probe(tr, te, num_codes)


class LamSpec(Spec):
    name = "lam"
    config = LamTrainConfig
    figures = {"lam.png": "next-frame predictions from the inferred latent action (held out)"}
    tiny = (
        "model.channels=8",
        "model.levels=2",
        "model.latent_dim=4",
        "data.size=32",
        "data.batch_size=2",
        "data.holdout=2",
        "optim.warmup_steps=1",
        "run.nproc=2",
        "run.eval_max_clips=2",
    )

    def build_model(self, cfg: LamTrainConfig, ctx: RunContext) -> LatentActionModel:
        return LatentActionModel(lam_config(cfg))

    def build_data(self, cfg: LamTrainConfig, ctx: RunContext) -> LamData:
        return LamData(cfg, ctx)

    def step(self, model, batch: torch.Tensor, ctx: RunContext):
        loss, parts = model(batch.to(ctx.device))
        k = (model.module if hasattr(model, "module") else model).cfg.num_codes
        use = gm.codebook_usage(parts["codes"].cpu(), k)
        return loss, {"recon": float(parts["recon"]), "entropy": float(parts["entropy"]), **use}

    def evaluate(self, model, data_: LamData, cfg: LamTrainConfig, ctx: RunContext) -> dict:
        lam = model.module if hasattr(model, "module") else model
        clips, k, c = data_.clips, lam.cfg.num_codes, lam.cfg.context
        held = data_.held_out[: cfg.run.eval_max_clips]
        inferred = infer_clips(lam, clips, held, ctx.device)
        gen = torch.Generator().manual_seed(cfg.run.seed)
        preds, rand, copy, targets, first = [], [], [], [], None
        for r in held:
            x = to_frames(clips.frames(r))[None].to(ctx.device)  # (1, T, 3, H, W)
            w = lam.windows(x)[0]  # (T-1, c+1, 3, H, W)
            codes = torch.from_numpy(inferred[r.clip_id][0]).to(ctx.device)
            other = torch.randint(0, k, codes.shape, generator=gen).to(ctx.device)
            pred = lam.predict(w[:, :c], codes).cpu()
            target = w[:, -1].cpu()
            preds.append(pred)
            rand.append(lam.predict(w[:, :c], other).cpu())
            copy.append(w[:, -2].cpu())
            targets.append(target)
            if first is None:
                first = {"real next": target, "LAM": pred, "copy x_t": w[:, -2].cpu()}
        metrics.plot_recon(
            {n: v.clamp(-1, 1).transpose(0, 1) for n, v in first.items()},
            ctx.run / "lam.png",
            n_frames=8,
        )
        tgt = torch.cat(targets)
        all_codes = np.concatenate([v[0] for v in inferred.values()])
        res = {
            "kind": "lam",
            # pooled over every held-out transition (most game frames barely change)
            "psnr": gm.pooled_psnr(torch.cat(preds), tgt),
            "psnr_random_code": gm.pooled_psnr(torch.cat(rand), tgt),
            "copy_psnr": gm.pooled_psnr(torch.cat(copy), tgt),
            **gm.codebook_usage(all_codes, k),
            "code_histogram": np.bincount(all_codes, minlength=k).tolist(),
            "eval_clips": len(held),
            "eval_transitions": int(len(all_codes)),
            "num_codes": k,
            "params": sum(p.numel() for p in lam.parameters()),
        }
        if any(v[2] is not None for v in inferred.values()):
            train = infer_clips(lam, clips, clips.train, ctx.device)
            res.update(probe_metrics(train, inferred, k))
        return res


SPEC = LamSpec()


def load_lam(run_dir) -> tuple[LatentActionModel, LamTrainConfig]:
    """(model in eval mode, run config) from the latest checkpoint of a ``lam`` run; inside
    a trainer collectively in its process group, else in a 1-process group."""
    import contextlib
    import json
    from pathlib import Path

    import torch.distributed as dist

    from worldmill.training import checkpoint
    from worldmill.training import megatron as mc

    run = Path(run_dir)
    cfg = LamTrainConfig.model_validate(json.loads((run / "config.json").read_text()))
    ck = checkpoint.latest(run)
    if ck is None:
        raise FileNotFoundError(f"no complete checkpoint under {run / 'checkpoints'}")
    model = LatentActionModel(lam_config(cfg))
    group = contextlib.nullcontext() if dist.is_initialized() else mc.single_process(cfg.run.seed)
    with group:
        checkpoint.load_model(ck[0], model)
    return model.eval(), cfg
