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

Evaluation (held-out whole source videos, ``metrics.json``; ``ar_eval.py``): the model
predicts each window's last latent frame from the ones before it; decoded through the
tokenizer, its pixel frames are scored against the real frames:

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

import numpy as np
import torch.distributed as dist
from pydantic import Field

from worldmill.config import ConfigError, StrictModel
from worldmill.models.ar import PRESETS, TEXT_DIM, ARConfig, ARWorldModel, preset
from worldmill.training import latents
from worldmill.training.camera import MOTION_CODE, caption_motion, reverse_caption
from worldmill.training.config import OptimConfig, RunConfig, TrainConfig
from worldmill.training.kinds import ar_eval
from worldmill.training.kinds.ar_eval import PREDICTS, eval_windows, predict_next
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
    # Append the motion code of the caption's camera words (``camera.MOTION_CODE``: 3
    # values, zeros when it names none) to its MiniLM embedding: in the pooled embedding
    # the few motion words are drowned by the rest (RESULTS.md, diffusion round 2).
    camera_code: bool = False


class TokenDataConfig(StrictModel):
    """Token windows from the token cache."""

    frames: int = Field(4, ge=2)  # latent frames per window (4 at 4x = 13 pixel frames)
    size: int = Field(8, ge=1)  # latent rows = columns per window (8 at 8x = 64 px)
    batch_size: int = Field(8, ge=1)  # windows per rank per step
    holdout: int = Field(4, ge=1)  # clips held out, whole source videos
    # Clips (whole source videos, the next ones in split order) also kept out of training:
    # the validation videos ``sample.calibrate`` fits on and ``val_*`` metrics score. 0 = none.
    # 16: with 8, validation held 3 procedural scenes of 8 (held out: 7 of 16), where the
    # model loses to the copy, and chose settings that lost held out (RESULTS.md, round 5).
    val: int = Field(16, ge=0)
    random_start: bool = True  # windows may start after latent frame 0 (eval: always at 0)
    # P(a training window is played backwards, its caption's camera words swapped:
    # ``camera.reverse_caption``; ``latents.ReversibleWindowStream``). Every clip then
    # shows both directions of its motion, told apart only by the camera words.
    reverse_prob: float = Field(0.0, ge=0, le=1)
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
        """A run's config.json from before ``model.copy_radius`` / ``data.reverse_prob`` /
        ``model.camera_code`` / ``data.val`` lacks the key (a fresh run's file always has
        it): it is rebuilt as it was trained, with the same-place copy gain only / no
        reversed windows / the caption alone / no validation videos."""
        model = data.get("model", {})
        if "copy_radius" not in model:
            data = {**data, "model": {**model, "copy_radius": 0}}
        # ... and one from before time-reversed windows / the camera code / validation
        # videos trained without them (on every video not held out)
        data = {**data, "data": {"reverse_prob": 0.0, "val": 0, **data.get("data", {})}}
        data["model"] = {"camera_code": False, **data.get("model", {})}
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
        if k not in ("preset", "code_init", "camera_code") and v is not None
    }
    return preset(
        m.preset, vocab_size=math.prod(levels), max_t=cfg.data.frames, max_h=cfg.data.size,
        max_w=cfg.data.size, fsq_levels=tuple(levels) if m.code_init else (),
        text_dim=TEXT_DIM + (len(MOTION_CODE["static"]) if m.camera_code else 0), **over,
    )  # fmt: skip


def conditions(
    captions: list[str], embeddings: np.ndarray | None = None, camera: bool = False
) -> np.ndarray:
    """``(N, 384 [+ 3])`` float32 caption conditioning of the AR model: each caption's
    MiniLM embedding (``embeddings`` when already computed), with ``camera``
    (``model.camera_code``) followed by the motion code of its camera words."""
    if embeddings is None:
        from worldmill.config import EmbedConfig
        from worldmill.tasks.embed import embed_texts

        embeddings = embed_texts(list(captions), EmbedConfig())
    if not camera:
        return np.asarray(embeddings, np.float32)
    code = [MOTION_CODE[caption_motion(c) or "static"] for c in captions]
    return np.concatenate([embeddings, np.array(code, np.float32)], 1).astype(np.float32)


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
        self.camera = bool(getattr(cfg.model, "camera_code", False))  # ar's model.camera_code
        if self.camera:
            ids = sorted(self.text)
            conds = conditions([self.text[i][0] for i in ids],
                               np.stack([self.text[i][1] for i in ids]), camera=True)  # fmt: skip
            self.text = {i: (self.text[i][0], c) for i, c in zip(ids, conds, strict=True)}
        self.train_refs, self.held_out = latents.split_holdout(refs, cfg.data.holdout)
        self.val_refs = []  # validation videos (ar: data.val; diffusion's data has none)
        if getattr(cfg.data, "val", 0):
            self.train_refs, self.val_refs = latents.split_holdout(self.train_refs, cfg.data.val)
        d = cfg.data
        rev = d.reverse_prob
        back = self.reversed_text(sorted(self.text)) if rev else {}
        self.stream = latents.ReversibleWindowStream(
            self.train_refs, self.text, d.batch_size, d.frames, d.size,
            seed=cfg.run.seed, rank=ctx.rank, world=ctx.world, random_start=d.random_start,
            reverse_prob=rev, reversed_text=back,
        )  # fmt: skip

    def reversed_text(self, ids: list[str]) -> dict[str, np.ndarray]:
        """The conditioning (``conditions``) of each clip's caption with its camera words
        swapped (``camera.reverse_caption``): the caption of the clip played backwards."""
        back = conditions([reverse_caption(self.text[i][0]) for i in ids], camera=self.camera)
        return dict(zip(ids, back, strict=True))


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
        after fitting the calibration on the validation videos (``ar_eval.evaluate``)."""
        return ar_eval.evaluate(model, data_, cfg, ctx)


SPEC = ArSpec()

__all__ = [
    "PREDICTS", "PRESETS", "SPEC", "ArSpec", "ArTrainConfig", "TokenData", "eval_windows",
    "predict_next",
]  # fmt: skip
