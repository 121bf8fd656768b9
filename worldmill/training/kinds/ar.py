"""Kind ``ar``: the autoregressive world model (``models/ar.py``) over DV tokenizer tokens.

    worldmill train ar --data SHARDS --tokenizer TOKRUN --out RUN [--set k=v ...]

Upstream: ``tokenizer``, a finished DV (FSQ) tokenizer run; its codebook
``prod(fsq_levels)`` is the vocabulary. Data: the run's token cache (``RUN/tokens``, or
``data.tokens_dir``), made by rank 0 before training with the tokenizer's latest checkpoint
when missing or stale (``latents.ensure_encoded``: idempotent, atomic), with every caption's
MiniLM embedding; ``--data`` may also name a ``worldmill encode`` output directly.
Training: random ``data.frames x data.size x data.size`` token windows (starting at any
latent frame with ``data.random_start``, else at frame 0, the tokenizer's image frame),
next-token cross-entropy.

Evaluation (held-out whole source videos, ``metrics.json``): for each held-out clip and
window (centre and corners), the model is given latent frames ``0 .. frames-2`` and predicts
the last one (``predict_next``: ``sample.predict`` picks which prediction is ``psnr``; all
three are scored as ``psnr_<mode>``); everything is decoded through the tokenizer and the
*last latent frame's pixel frames* are scored against the real frames:

    psnr / ssim                    AR prediction (sample.predict)
    baseline_psnr / baseline_ssim  copy the last context latent frame (same tokenizer)
    copy_psnr                      copy the last real context frame (raw pixels)
    tokenizer_psnr                 the tokenizer's reconstruction of the true tokens (ceiling)

plus ``predict.png`` (rows: real, tokenizer, AR, copy-latent baseline).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from einops import rearrange, reduce, repeat
from pydantic import Field

from worldmill.config import ConfigError, StrictModel
from worldmill.models.ar import PRESETS, ARConfig, ARWorldModel, preset
from worldmill.training import data, latents, metrics
from worldmill.training.config import OptimConfig, RunConfig, TrainConfig
from worldmill.training.encode import fit_clip
from worldmill.training.spec import RunContext, Spec, StreamData


class ArModelConfig(StrictModel):
    """A size preset of ``models/ar.py`` (``tiny``, ``cpu``, ``4b``, ``12b``); any field set
    here replaces the preset's. Vocabulary and position tables come from the tokenizer run
    and ``data``."""

    preset: Literal["tiny", "cpu", "4b", "12b"] = "cpu"
    num_layers: int | None = Field(None, ge=1)
    hidden_size: int | None = Field(None, ge=8)
    num_heads: int | None = Field(None, ge=1)
    num_query_groups: int | None = Field(None, ge=0)
    ffn_hidden_size: int | None = Field(None, ge=0)
    prefix_tokens: int | None = Field(None, ge=0)  # caption prefix slots; 0 = unconditional
    code_init: bool = True  # token embeddings start from the FSQ code geometry (models/ar.py)
    prev_frame: bool | None = None  # add the (t-1, h, w) token to each slot (None: preset's)
    dropout: float | None = Field(None, ge=0, lt=1)  # hidden + attention dropout
    first_frame_weight: float | None = Field(None, ge=0)  # loss weight of latent frame 0
    caption_dropout: float | None = Field(None, ge=0, le=1)  # train the empty caption (CFG)
    copy_logit: float | None = None  # start of the learned copy-previous-frame logit gain
    copy_radius: int | None = Field(None, ge=0, le=3)  # copy from (2r+1)^2 neighbours; 0 = off


class TokenDataConfig(StrictModel):
    """Token windows from the token cache."""

    frames: int = Field(4, ge=2)  # latent frames per window (4 at 4x = 13 pixel frames)
    size: int = Field(8, ge=1)  # latent rows = columns per window (8 at 8x = 64 px)
    batch_size: int = Field(8, ge=1)  # windows per rank per step
    holdout: int = Field(4, ge=1)  # clips held out, whole source videos
    # Clips (whole source videos, the next ones in split order) also kept out of training:
    # the validation videos ``sample.calibrate`` fits on and ``val_*`` metrics score. 0 = none.
    val: int = Field(8, ge=0)
    random_start: bool = True  # windows may start after latent frame 0 (eval: always at 0)
    tokens_dir: str = ""  # token cache; "" = RUN/tokens


class SampleConfig(StrictModel):
    """How evaluation predicts the next latent frame (``predict_next``); every mode is
    scored (``psnr_<mode>``), ``predict`` picks the one reported as ``psnr``."""

    # expected_code: the best of the three on held-out videos (bench/RESULTS.md, round 2)
    predict: Literal["tokens", "expected_code", "pixel_mean"] = "expected_code"
    temperature: float = Field(0.0, ge=0)  # token chain; 0 = greedy
    top_k: int = Field(0, ge=0)  # 0 = off
    top_p: float = Field(1.0, gt=0, le=1)  # 1 = off
    draws: int = Field(8, ge=1)  # pixel_mean: token chains averaged (at temperature or 1)
    guidance: float = Field(1.0, ge=0)  # classifier-free guidance scale; 1 = off
    seed: int = 0
    # Pick an extra copy-logit bias (models/ar.py ``calibrate``, ``COPY_BIASES``) by the
    # PSNR of ``predict`` on the validation videos (``data.val``) and use it in every
    # prediction and in ``worldmill generate``; off, or without validation videos, none.
    calibrate: bool = True


PREDICTS = ("tokens", "expected_code", "pixel_mean")
# Extra copy-logit biases ``sample.calibrate`` tries on the validation videos (the best
# val PSNR of ``sample.predict`` is used for the held-out videos and ``generate``).
COPY_BIASES = (0.0, 1.0, 2.0, 4.0, 8.0)


@torch.no_grad()
def predict_next(
    ar: ARWorldModel,
    tok,
    context: torch.Tensor,
    text: torch.Tensor,
    s: SampleConfig,
    how: str,
    calibration: tuple[float, float] = (0.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict one latent frame after ``context`` ``(B, T0, h, w)`` and decode it with the
    tokenizer ``tok``: (video ``(B, 3, 1 + T0 * t_c, H, W)`` in [-1, 1], tokens
    ``(B, T0 + 1, h, w)``). Only the context (and caption ``text`` ``(B, 384)``) is seen.

    ``how``: ``tokens`` one token chain (``s.temperature``, 0 = greedy) decoded as is;
    ``expected_code`` the same chain, but each new position decoded from the *expected*
    FSQ code under the model's distribution there (a point estimate that hedges between
    nearby codes instead of committing to one); ``pixel_mean`` the mean of ``s.draws``
    decoded chains drawn at ``s.temperature`` (1 if 0), a Monte-Carlo estimate of the
    expected frame. ``calibration``: ``(copy_bias, temperature)`` applied to every logit."""
    kw = dict(top_k=s.top_k, top_p=s.top_p, seed=s.seed, guidance=s.guidance,
              calibration=calibration)  # fmt: skip
    if how == "tokens":
        toks = ar.sample(context, 1, text, temperature=s.temperature, **kw)
        return tok.decode_tokens(toks).clamp(-1, 1).float(), toks
    if how == "expected_code":
        toks, probs = ar.sample(
            context, 1, text, temperature=s.temperature, return_probs=True, **kw
        )
        book = tok.fsq.ids_to_codes(torch.arange(probs.shape[-1], device=probs.device))  # (V, d)
        codes = torch.cat([tok.fsq.ids_to_codes(context), probs @ book.to(probs.dtype)], 1)
        z = rearrange(codes, "b t h w d -> b d t h w")
        return tok.decode(z).clamp(-1, 1).float(), toks
    if how == "pixel_mean":
        k = s.draws
        toks = ar.sample(
            repeat(context, "b t h w -> (b k) t h w", k=k), 1,
            repeat(text, "b c -> (b k) c", k=k), temperature=s.temperature or 1.0, **kw,
        )  # fmt: skip
        video = tok.decode_tokens(toks).clamp(-1, 1).float()
        return reduce(video, "(b k) c t h w -> b c t h w", "mean", k=k), toks[::k]
    raise ValueError(f"unknown prediction {how!r}; one of {PREDICTS}")


class ArTrainConfig(TrainConfig):
    """``worldmill train ar``: the AR world model on a DV tokenizer run's tokens."""

    kind: Literal["ar"] = "ar"
    tokenizer: str = ""  # upstream DV tokenizer run folder (--tokenizer RUN)
    model: ArModelConfig = Field(default_factory=ArModelConfig)
    data: TokenDataConfig = Field(default_factory=TokenDataConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.01, pca_init_clips=0)
    )
    # 150 steps: +0.13 dB over 300 on the validation videos (bench/RESULTS.md, AR round 4)
    run: RunConfig = Field(default_factory=lambda: RunConfig(steps=150, checkpoint_every=100))

    @classmethod
    def from_run(cls, data: dict) -> ArTrainConfig:
        """A run's config.json from before ``model.copy_radius`` lacks the key (a fresh
        run's file always has it): it is rebuilt as it was trained, with the same-place
        copy gain only."""
        model = data.get("model", {})
        if "copy_radius" not in model:
            data = {**data, "model": {**model, "copy_radius": 0}}
        return cls.model_validate(data)


def tokenizer_levels(tokenizer_run: str | Path) -> list[int]:
    """FSQ levels of a DV tokenizer run (their product is the AR vocabulary)."""
    from worldmill.training.registry import load_run_config

    tcfg = load_run_config(tokenizer_run)
    if tcfg.model.kind != "dv":
        raise ConfigError(
            f"tokenizer: {tokenizer_run} is a {tcfg.model.kind.upper()} tokenizer; the AR "
            "model needs discrete tokens (train one with --set model.kind=dv)"
        )
    return list(tcfg.model.fsq_levels)


def tokenizer_vocab(tokenizer_run: str | Path) -> int:
    return math.prod(tokenizer_levels(tokenizer_run))


def model_config(cfg: ArTrainConfig, levels: list[int]) -> ARConfig:
    m = cfg.model
    over = {
        k: v
        for k, v in m.model_dump().items()
        if k not in ("preset", "code_init") and v is not None
    }
    return preset(
        m.preset, vocab_size=math.prod(levels), max_t=cfg.data.frames, max_h=cfg.data.size,
        max_w=cfg.data.size, fsq_levels=tuple(levels) if m.code_init else (), **over,
    )  # fmt: skip


class TokenData(StreamData):
    """The token cache's training stream (this rank's slice), held-out clips, the loaded
    tokenizer (for evaluation) and caption embeddings."""

    array = "tokens"  # what the cache holds: "tokens" (DV) or "latent" (CV, the diffusion kind)

    def __init__(self, cfg: ArTrainConfig, ctx: RunContext):
        from worldmill.training import encode

        tok_run = ctx.upstream["tokenizer"]
        # collective (every rank): the tokenizer's weights, for encoding and evaluation
        loaded = encode.load_tokenizer(tok_run)
        self.tokenizer, self.tok_cfg, _ = loaded
        root = Path(ctx.data_root)
        if latents.is_encoded(root):  # --data is a `worldmill encode` output
            self.root, text = root, ctx.run / latents.TEXT_FILE
        else:
            self.root = Path(cfg.data.tokens_dir or ctx.run / "tokens")
            text = self.root / latents.TEXT_FILE
        if ctx.is_main:  # rank 0 encodes (or reuses) before anyone trains
            if self.root != root:
                latents.ensure_encoded(root, tok_run, self.root, loaded, ctx.log)
            elif not text.is_file():
                srcs = [r.source for r in latents.index_latents(root, self.array) if r.source]
                latents.embed_captions(srcs, text)
        if dist.is_initialized():
            dist.barrier()
        refs = latents.index_latents(self.root, self.array)
        self.text = latents.caption_embeddings(text)
        self.train_refs, self.held_out = latents.split_holdout(refs, cfg.data.holdout)
        self.val_refs = []  # validation videos (ar: data.val; diffusion's data has none)
        if getattr(cfg.data, "val", 0):
            self.train_refs, self.val_refs = latents.split_holdout(self.train_refs, cfg.data.val)
        d = cfg.data
        self.stream = latents.ResumableWindowStream(
            self.train_refs, self.text, d.batch_size, d.frames, d.size,
            seed=cfg.run.seed, rank=ctx.rank, world=ctx.world, random_start=d.random_start,
        )  # fmt: skip


def eval_windows(
    tokens: torch.Tensor, video: torch.Tensor, size: int, frames: int, t_c: int, s_c: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(tokens ``(frames, size, size)``, pixels ``(3, 1 + (frames-1)*t_c, size*s_c, ...)``)
    for the centre and the four corners of a clip's token grid (deduplicated), time from
    latent frame 0. CV latents ``(C, T', H', W')`` are cut the same way (leading axes kept)."""
    H, W = tokens.shape[-2:]
    if H < size or W < size:
        raise ValueError(f"latent grid {H}x{W} is smaller than data.size {size}")
    offsets = {((H - size) // 2, (W - size) // 2), (0, 0), (0, W - size), (H - size, 0)}
    offsets.add((H - size, W - size))
    n_px = 1 + (frames - 1) * t_c
    out = []
    for y, x in sorted(offsets):
        tok = tokens[..., :frames, y : y + size, x : x + size]
        px = video[:, :n_px, y * s_c : (y + size) * s_c, x * s_c : (x + size) * s_c]
        out.append((tok, px))
    return out


class ArSpec(Spec):
    name = "ar"
    config = ArTrainConfig
    upstream = {"tokenizer": "tokenizer"}
    figures = {"predict.png": "next-latent-frame predictions (held out)"}
    tiny = (
        "model.preset=tiny",  # vocab = the tiny tokenizer's 64 codes
        "data.frames=3",
        "data.size=4",
        "data.batch_size=2",
        "data.holdout=2",
        "data.val=1",
        "optim.warmup_steps=1",
        "run.nproc=2",
    )
    tiny_upstream = {"tokenizer": ("model.kind=dv", "model.fsq_levels=[4, 4, 4]")}

    generates = True

    def generate(self, run: Path, req, context):
        """Video2World: continue the given clip or image by ``req.frames`` latent frames."""
        from worldmill.config import ConfigError
        from worldmill.models.ar import generate_ar

        if context is None:
            raise ConfigError(
                "image/video: an ar run continues a clip or an image (--image/--video)"
            )
        return generate_ar(
            run,
            req.prompt,
            context,
            frames=req.frames,
            seed=req.seed,
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
        )

    def resolve_upstream(self, cfg: ArTrainConfig) -> dict[str, Path]:
        out = super().resolve_upstream(cfg)
        tokenizer_vocab(out["tokenizer"])  # DV only: ConfigError naming `tokenizer`
        return out

    def build_model(self, cfg: ArTrainConfig, ctx: RunContext) -> ARWorldModel:
        return ARWorldModel(model_config(cfg, tokenizer_levels(ctx.upstream["tokenizer"])))

    def build_data(self, cfg: ArTrainConfig, ctx: RunContext) -> TokenData:
        return TokenData(cfg, ctx)

    def step(self, model, batch: dict, ctx: RunContext):
        x, text = batch["x"].to(ctx.device), batch["text"].to(ctx.device)
        loss = model(x, text)
        return loss, {"bits_per_token": float(loss.detach()) / math.log(2)}

    def evaluate(self, model, data_: TokenData, cfg: ArTrainConfig, ctx: RunContext) -> dict:
        """Next-latent-frame prediction on held-out videos vs copy-last-frame baselines,
        after fitting the calibration on the validation videos (``sample.calibrate``)."""
        tok = data_.tokenizer.to(ctx.device)
        d, s = cfg.data, cfg.sample
        ar = model.module if hasattr(model, "module") else model
        out: dict = {}
        cal = (0.0, 1.0)
        if data_.val_refs:  # videos neither trained on nor held out: choose settings here
            val = [_clip_windows(r, data_, d, tok, ctx.device) for r in data_.val_refs]
            tc = tok.cfg.temporal_compression
            # the NLL-optimal calibration, for the record: it wants *less* copying than the
            # model (true tokens often differ from the copy), which costs PSNR (RESULTS.md)
            nll = ar.fit_calibration(torch.cat([w for w, _, _ in val]),
                                     torch.cat([t for _, _, t in val]))  # fmt: skip
            scores = {}  # val PSNR of sample.predict per extra copy bias
            for bias in COPY_BIASES if s.calibrate else (0.0,):
                rows = _predict_rows(ar, tok, val, s, (s.predict,), (bias, 1.0))
                target = rows["real"][:, :, -tc:]
                scores[bias] = metrics.psnr(rows[s.predict][:, :, -tc:], target)
            best = max(scores, key=scores.get)
            cal = (best, 1.0)
            out.update(
                calibration={
                    "copy_bias": best,
                    "temperature": 1.0,
                    "val_psnr": scores,
                    "val_clips": len(val),
                    "nll_fit": nll,
                },  # fmt: skip
                val_psnr=scores[best],
                val_psnr_uncalibrated=scores[0.0],
                val_baseline_psnr=metrics.psnr(rows["base"][:, :, -tc:], target),
                val_windows=len(target),
            )
        held = data_.held_out[: cfg.run.eval_max_clips]
        wins = [_clip_windows(r, data_, d, tok, ctx.device) for r in held]
        if not wins:
            raise ValueError("no held-out clips to evaluate")
        stack = _predict_rows(ar, tok, wins, s, PREDICTS, cal)  # (N, 3, T, H, W) each
        same = stack.pop("same", None)  # (N,) greedy tokens == copy
        tc = tok.cfg.temporal_compression
        target = stack["real"][:, :, -tc:]  # the predicted latent frame's pixel frames
        part = {k: v[:, :, -tc:] for k, v in stack.items()}
        if cal != (0.0, 1.0):  # what the calibration adds, on the same windows
            raw = _predict_rows(ar, tok, wins, s, (s.predict,), (0.0, 1.0))[s.predict]
            out["psnr_uncalibrated"] = metrics.psnr(raw[:, :, -tc:], target)
        # the last real context frame, repeated over the predicted frames (raw pixel copy)
        copy = stack["real"][:, :, -tc - 1 : -tc].expand(-1, -1, tc, -1, -1)
        metrics.plot_recon(
            {
                "real": stack["real"][0],
                "tokenizer": stack["tok"][0],
                f"AR ({s.predict})": stack[s.predict][0],
                "copy latent": stack["base"][0],
            },
            ctx.run / "predict.png",
            n_frames=6,
        )
        return {
            "kind": "ar",
            "psnr": metrics.psnr(part[s.predict], target),
            "ssim": metrics.ssim(part[s.predict], target),
            "predict": s.predict,
            "baseline_psnr": metrics.psnr(part["base"], target),
            "baseline_ssim": metrics.ssim(part["base"], target),
            "copy_psnr": metrics.psnr(copy, target),
            "tokenizer_psnr": metrics.psnr(part["tok"], target),
            "tokenizer_ssim": metrics.ssim(part["tok"], target),
            # every prediction mode, for comparison (psnr / ssim above: sample.predict's)
            **{f"psnr_{p}": metrics.psnr(part[p], target) for p in PREDICTS},
            **{f"ssim_{p}": metrics.ssim(part[p], target) for p in PREDICTS},
            "baseline": "copy the last context latent frame, decoded by the same tokenizer",
            "eval_clips": len(held),
            "eval_windows": len(target),
            "eval_window": [d.frames, d.size, d.size],
            "predicted_pixel_frames": tc,
            # windows where the greedy AR frame equals the copied one
            "ar_equals_copy": float(same.float().mean()) if same is not None else None,
            "sampling": s.model_dump(),
            "vocab_size": ar.cfg.vocab_size,
            "params": sum(p.numel() for p in ar.parameters()),
            **out,
        }


def _clip_windows(
    ref, data_: TokenData, d: TokenDataConfig, tok, device
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """One clip's evaluation windows (``eval_windows``): tokens ``(N, frames, size, size)``
    on ``device``, their real pixels ``[(3, T, H, W)] * N`` and the caption ``(N, 384)``."""
    if ref.source is None:
        raise FileNotFoundError(f"{ref.clip_id}: source clip of the tokens not found")
    tc, sc = tok.cfg.temporal_compression, tok.cfg.spatial_compression
    # pixels decoded exactly as `worldmill encode` decoded them for the tokens
    frames = data.decode_clip(ref.source, data_.tok_cfg.data.width, data_.tok_cfg.data.fps)
    video = fit_clip(data.to_tensor(frames), tc, sc)
    grid = torch.from_numpy(latents.load_array(ref)).long()
    wins = eval_windows(grid, video, d.size, d.frames, tc, sc)
    w_tok = torch.stack([w for w, _ in wins]).to(device)
    text = torch.from_numpy(data_.text[ref.clip_id][1])[None].to(device)
    return w_tok, [px for _, px in wins], text.expand(len(wins), -1)


def _predict_rows(
    ar: ARWorldModel, tok, clips: list, s: SampleConfig, modes, cal: tuple[float, float]
) -> dict[str, torch.Tensor]:
    """Decoded windows ``(N, 3, T, H, W)`` of ``clips`` (``_clip_windows`` results): the
    real pixels (``real``), the tokenizer's reconstruction (``tok``), the copy-last-latent
    baseline (``base``) and each prediction mode in ``modes``; ``same`` ``(N,)``: the
    greedy token prediction equals the copy (when ``tokens`` is among ``modes``)."""
    rows: dict[str, list[torch.Tensor]] = {"real": [], "tok": [], "base": []}
    rows.update({p: [] for p in modes})
    same = []
    for w_tok, pxs, text in clips:
        base = torch.cat([w_tok[:, :-1], w_tok[:, -2:-1]], 1)
        for p in modes:
            vid, pred = predict_next(ar, tok, w_tok[:, :-1], text, s, p, cal)
            rows[p].extend(vid.cpu())
            if p == "tokens" and s.temperature == 0:
                same.extend((pred == base).flatten(1).all(1).cpu())
        for name, t in (("tok", w_tok), ("base", base)):
            rows[name].extend(tok.decode_tokens(t).clamp(-1, 1).float().cpu())
        rows["real"].extend(pxs)
    out = {k: torch.stack(v) for k, v in rows.items()}
    if same:
        out["same"] = torch.stack(same)
    return out


SPEC = ArSpec()

__all__ = [
    "PREDICTS", "PRESETS", "SPEC", "ArSpec", "ArTrainConfig", "TokenData", "eval_windows",
    "predict_next",
]  # fmt: skip
