"""Kind ``dynamics``: Genie's MaskGIT dynamics model (``models/dynamics.py``).

    worldmill train dynamics --data SHARDS --tokenizer TOKRUN --lam LAMRUN --out RUN

Upstream: ``tokenizer``, a finished DV (FSQ) tokenizer run (each frame is encoded as an
image: ``(size / s_c)^2`` tokens of ``prod(fsq_levels)`` codes), and ``lam``, a finished
``lam`` run (its ``data.size`` is the frame size, its ``num_codes`` the action count).
Data: rank 0 encodes every clip once -- tokens per frame and LAM latent actions per
transition -- into ``RUN/genie_cache.npz`` (``data.cache``), reused when the shards and
both upstream checkpoints are unchanged (``worldmill.genie.data.ensure_cache``). Training:
windows of ``data.frames`` frames, MaskGIT masking with r ~ U(``data.mask_min``, 1).

Evaluation (``metrics.json``, held-out clips = whole episodes, also held out of the LAM run
when its ``data.holdout`` is the same): from the first frame of windows every 5 frames,
``eval.horizon`` frames are generated (MaskGIT, ``sample.steps`` / ``sample.temperature``)
twice -- with the latent actions the LAM infers from the real video, and with uniformly
random ones -- decoded by the tokenizer and compared with the real frames:

    psnr_inferred / psnr_random   PSNR at t = eval.delta_t (4)
    delta_t_psnr                  psnr_inferred - psnr_random (Genie's controllability)
    rollout_psnr                  mean PSNR over the horizon, inferred actions
    copy_psnr                     copying the real first frame over the horizon
    tokenizer_psnr                the true tokens decoded (the ceiling)
    action_probe_accuracy / _chance   LAM vector+code -> simulator action (rollout shards)
    seconds_per_frame             one interactive step (MaskGIT + decode), batch 1

plus ``rollout.png`` (real, tokenizer, inferred-action and random-action rollouts).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field

from worldmill.config import ConfigError, StrictModel
from worldmill.genie import data as gd
from worldmill.genie import metrics as gm
from worldmill.models.dynamics import DynamicsConfig, DynamicsModel
from worldmill.training import metrics
from worldmill.training.config import OptimConfig, RunConfig, TrainConfig
from worldmill.training.kinds.ar import tokenizer_levels
from worldmill.training.kinds.lam import probe_metrics
from worldmill.training.spec import RunContext, Spec, StreamData


class DynModelConfig(StrictModel):
    """Mirrors ``worldmill.models.dynamics.DynamicsConfig``; vocabulary, action count and
    token grid come from the upstream runs, ``max_t`` from ``data.frames``."""

    hidden: int = Field(96, ge=8)
    layers: int = Field(3, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: int = Field(4, ge=1)
    copy_logit: float = Field(5.0, ge=0)  # start of the learned copy-previous-token gain; 0 = off


class DynDataConfig(StrictModel):
    frames: int = Field(6, ge=2)  # frames per training window = the model's context
    batch_size: int = Field(8, ge=1)  # windows per rank per step
    holdout: int = Field(60, ge=1)  # clips held out (whole episodes); keep = the LAM run's
    mask_min: float = Field(0.5, ge=0, le=1)  # MaskGIT mask rate r ~ U(mask_min, 1)
    # P(only the last frame is masked), as at generation: 1 by default (at 0.5 the CPU-sized
    # model learnt to fill masked context and copied the previous frame worse)
    clean_context: float = Field(1.0, ge=0, le=1)
    cache: str = ""  # tokens + latent actions cache; "" = RUN/genie_cache.npz


class GenieSampleConfig(StrictModel):
    """MaskGIT decoding (evaluation and the default of ``GenieWorld``)."""

    # Rounds per frame. Genie used 25; 8 is the CPU default (64 tokens a frame; eval and
    # play cost ~steps forward passes per frame). --set sample.steps=25 for Genie's.
    steps: int = Field(8, ge=1)
    temperature: float = Field(2.0, ge=0)  # Gumbel noise on confidences (Genie: 2)
    # take each round's most likely tokens instead of drawing them: the CPU default (a
    # briefly trained model's softmax has a long tail; one drawn outlier token is a wrong
    # 8x8-px block); false = Genie's drawing
    argmax: bool = True
    seed: int = 0


class GenieEvalConfig(StrictModel):
    horizon: int = Field(8, ge=1)  # generated frames per held-out window
    delta_t: int = Field(4, ge=1)  # the t of delta_t_psnr
    # window starts every `stride` frames of a held-out clip: 5 gives 5 windows a 30-frame clip
    stride: int = Field(5, ge=1)


class DynamicsTrainConfig(TrainConfig):
    """``worldmill train dynamics``: Genie's dynamics model over DV tokens + LAM actions."""

    kind: Literal["dynamics"] = "dynamics"
    tokenizer: str = ""  # upstream DV tokenizer run (--tokenizer RUN)
    lam: str = ""  # upstream latent action model run (--lam RUN)
    model: DynModelConfig = Field(default_factory=DynModelConfig)
    data: DynDataConfig = Field(default_factory=DynDataConfig)
    sample: GenieSampleConfig = Field(default_factory=GenieSampleConfig)
    eval: GenieEvalConfig = Field(default_factory=GenieEvalConfig)
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.01, pca_init_clips=0)
    )
    # Δt on the first 30 held-out clips (150 windows; at 16 clips and stride 10 its sign was
    # noise); the action probe uses every held-out clip
    run: RunConfig = Field(
        default_factory=lambda: RunConfig(steps=600, checkpoint_every=200, eval_max_clips=30)
    )


def upstream_shapes(tokenizer_run: str | Path, lam_run: str | Path) -> dict:
    """Vocabulary, action count, frame size and token grid from the upstream runs."""
    from worldmill.training.registry import load_run_config

    levels = tokenizer_levels(tokenizer_run)  # DV only (ConfigError otherwise)
    tcfg, lcfg = load_run_config(tokenizer_run), load_run_config(lam_run)
    size, s_c = lcfg.data.size, tcfg.model.spatial_compression
    if size % s_c:
        raise ConfigError(
            f"lam: frame size {size} (its data.size) is not divisible by the tokenizer's "
            f"spatial_compression {s_c}"
        )
    return {
        "vocab_size": math.prod(levels),
        "num_actions": lcfg.model.num_codes,
        "size": size,
        "grid": size // s_c,
    }


def dynamics_config(cfg: DynamicsTrainConfig, shapes: dict) -> DynamicsConfig:
    g = shapes["grid"]
    return DynamicsConfig(
        vocab_size=shapes["vocab_size"], num_actions=shapes["num_actions"],
        max_t=cfg.data.frames, h=g, w=g, **cfg.model.model_dump(),
    )  # fmt: skip


class DynamicsData(StreamData):
    """Upstream models (every rank loads them collectively), the cache, the stream."""

    def __init__(self, cfg: DynamicsTrainConfig, ctx: RunContext):
        from worldmill.training import encode
        from worldmill.training.kinds.lam import load_lam

        self.tokenizer = encode.load_tokenizer(ctx.upstream["tokenizer"])[0]
        self.lam, lcfg = load_lam(ctx.upstream["lam"])
        self.clips = gd.FrameClips(ctx.data_root, lcfg.data.size, cfg.data.holdout, lcfg.data.fps)
        self.held_out = self.clips.held_out
        path = Path(cfg.data.cache or ctx.run / gd.CACHE)
        if ctx.is_main:
            gd.ensure_cache(
                path, self.clips, self.tokenizer, self.lam,
                ctx.upstream["tokenizer"], ctx.upstream["lam"], ctx.log,
            )  # fmt: skip
        if dist.is_initialized():
            dist.barrier()
        self.cache = gd.GenieCache(path)
        d = cfg.data
        self.stream = gd.TokenWindowStream(
            self.clips.train, self.cache, d.frames, d.batch_size, d.mask_min, d.clean_context,
            cfg.run.seed, ctx.rank, ctx.world,
        )  # fmt: skip


class DynamicsSpec(Spec):
    name = "dynamics"
    config = DynamicsTrainConfig
    upstream = {"tokenizer": "tokenizer", "lam": "lam"}
    figures = {"rollout.png": "rollouts from a held-out first frame: inferred vs random actions"}
    tiny = (
        "model.hidden=16",
        "model.layers=1",
        "model.heads=2",
        "data.frames=3",
        "data.batch_size=2",
        "data.holdout=2",
        "sample.steps=2",
        "sample.argmax=false",  # drawn tokens: the world/play tests check that the seed matters
        "eval.horizon=4",
        "eval.delta_t=2",
        "optim.warmup_steps=1",
        "run.nproc=2",
        "run.eval_max_clips=2",
    )
    tiny_upstream = {"tokenizer": ("model.kind=dv", "model.fsq_levels=[4, 4, 4]")}

    def resolve_upstream(self, cfg: DynamicsTrainConfig) -> dict[str, Path]:
        out = super().resolve_upstream(cfg)
        upstream_shapes(out["tokenizer"], out["lam"])  # DV, sizes agree: ConfigError naming
        return out

    def build_model(self, cfg: DynamicsTrainConfig, ctx: RunContext) -> DynamicsModel:
        shapes = upstream_shapes(ctx.upstream["tokenizer"], ctx.upstream["lam"])
        return DynamicsModel(dynamics_config(cfg, shapes))

    def build_data(self, cfg: DynamicsTrainConfig, ctx: RunContext) -> DynamicsData:
        return DynamicsData(cfg, ctx)

    def step(self, model, batch: dict, ctx: RunContext):
        b = {k: v.to(ctx.device) for k, v in batch.items()}
        loss = model(b["tokens"], b["actions"], b["mask"])
        return loss, {"masked_frac": float(b["mask"].float().mean())}

    def evaluate(self, model, data_: DynamicsData, cfg: DynamicsTrainConfig, ctx) -> dict:
        dyn = model.module if hasattr(model, "module") else model
        tok, cache, clips = data_.tokenizer.to(ctx.device), data_.cache, data_.clips
        e, s = cfg.eval, cfg.sample
        H, k = e.horizon, dyn.cfg.num_actions
        starts, reals, trues = [], [], []
        for r in data_.held_out[: cfg.run.eval_max_clips]:
            frames = gd.to_frames(clips.frames(r))  # (T, 3, S, S)
            for t0 in range(0, len(frames) - H, e.stride):
                starts.append((r.clip_id, t0))
                reals.append(frames[t0 : t0 + H + 1])
                trues.append(torch.from_numpy(cache.tokens[r.clip_id][t0 : t0 + H + 1]).long())
        if not starts:
            raise ValueError(f"no held-out clip is longer than eval.horizon + 1 = {H + 1} frames")
        real = torch.stack(reals)  # (N, H+1, 3, S, S)
        true_tok = torch.stack(trues)  # (N, H+1, h, w)
        inferred = torch.stack(
            [torch.from_numpy(cache.codes[c][t0 : t0 + H]).long() for c, t0 in starts]
        )
        gen = torch.Generator().manual_seed(s.seed)
        rand = torch.randint(0, k, inferred.shape, generator=gen)
        ctx0 = true_tok[:, :1].to(ctx.device)
        out = {}
        i = min(e.delta_t, H) - 1
        for name, acts in (("inferred", inferred), ("random", rand)):
            g = torch.Generator(device=ctx.device).manual_seed(s.seed)
            toks = dyn.rollout(ctx0, acts.to(ctx.device), s.steps, s.temperature, g, not s.argmax)
            out[name] = gd.decode_frames(tok, toks[:, 1:].flatten(0, 1)).view(real[:, 1:].shape)
            # the other decoding (argmax <-> drawn tokens), up to delta_t only
            g = torch.Generator(device=ctx.device).manual_seed(s.seed)
            acts_t = acts[:, : i + 1].to(ctx.device)
            toks = dyn.rollout(ctx0, acts_t, s.steps, s.temperature, g, s.argmax)[:, -1]
            out[f"{name}_other"] = gd.decode_frames(tok, toks)
        out["tokenizer"] = gd.decode_frames(tok, true_tok[:, 1:].flatten(0, 1)).view(
            real[:, 1:].shape
        )
        target = real[:, 1:].flatten(0, 1)

        def per_frame(x: torch.Tensor) -> torch.Tensor:  # (N, H) dB
            return gm.frame_psnr(x.flatten(0, 1), target).view(len(real), H)

        p_inf, p_rand = per_frame(out["inferred"]), per_frame(out["random"])
        copy = per_frame(real[:, :1].expand(-1, H, -1, -1, -1))
        other = {
            n: float(gm.frame_psnr(out[f"{n}_other"], real[:, i + 1]).mean())
            for n in ("inferred", "random")
        }
        metrics.plot_recon(
            {
                "real": real[0].transpose(0, 1),
                "tokenizer": torch.cat([real[0, :1], out["tokenizer"][0]]).transpose(0, 1),
                "inferred actions": torch.cat([real[0, :1], out["inferred"][0]]).transpose(0, 1),
                "random actions": torch.cat([real[0, :1], out["random"][0]]).transpose(0, 1),
            },
            ctx.run / "rollout.png",
            n_frames=H + 1,
        )
        res = {
            "kind": "dynamics",
            "delta_t_psnr": float(p_inf[:, i].mean() - p_rand[:, i].mean()),
            "psnr_inferred": float(p_inf[:, i].mean()),
            "psnr_random": float(p_rand[:, i].mean()),
            "delta_t": i + 1,
            # the same with the other token choice (drawn <-> argmax), same seed
            "delta_t_psnr_other_decoding": other["inferred"] - other["random"],
            "other_decoding": "draw" if s.argmax else "argmax",
            "rollout_psnr": float(p_inf.mean()),
            "rollout_psnr_random": float(p_rand.mean()),
            "copy_psnr": float(copy.mean()),
            "tokenizer_psnr": float(per_frame(out["tokenizer"]).mean()),
            "rollout_psnr_per_step": [round(float(v), 3) for v in p_inf.mean(0)],
            "copy_psnr_per_step": [round(float(v), 3) for v in copy.mean(0)],
            "horizon": H,
            "eval_clips": len({c for c, _ in starts}),
            "eval_windows": len(starts),
            "sampling": s.model_dump(),
            "num_actions": k,
            "vocab_size": dyn.cfg.vocab_size,
            "params": sum(p.numel() for p in dyn.parameters()),
            "seconds_per_frame": _seconds_per_frame(dyn, tok, true_tok[:1], s, ctx.device),
        }
        res.update(self._probe(data_, k))
        return res

    @staticmethod
    def _probe(data_: DynamicsData, k: int) -> dict:
        def rows(refs) -> dict:
            out = {}
            for r in refs:
                acts = gd.true_actions(r)
                c = data_.cache.codes[r.clip_id]
                out[r.clip_id] = (c, data_.cache.z[r.clip_id], None if acts is None else
                                  np.asarray(acts)[: len(c)])  # fmt: skip
            return out

        return probe_metrics(rows(data_.clips.train), rows(data_.held_out), k)


def _seconds_per_frame(dyn, tok, tokens, s: GenieSampleConfig, device, n: int = 4) -> float:
    """Wall seconds of one interactive step at batch 1 with a full context window:
    MaskGIT decoding of the next frame plus its tokenizer decode."""
    ctx = tokens[:, : dyn.cfg.max_t - 1].to(device)
    ctx = torch.cat([ctx, ctx[:, -1:].expand(-1, dyn.cfg.max_t - 1 - ctx.shape[1], -1, -1)], 1)
    acts = torch.zeros(1, ctx.shape[1], dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(n):
        new = dyn.next_frame(ctx, acts, s.steps, s.temperature, g, not s.argmax)
        gd.decode_frames(tok, new)
    return (time.perf_counter() - t0) / n


SPEC = DynamicsSpec()
