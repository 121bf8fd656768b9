"""Evaluation of the ``ar`` kind: next-latent-frame prediction on held-out whole videos.

For each held-out clip and window (``eval_windows``: centre and corners), the model is given
latent frames ``0 .. frames-2`` and predicts the last one (``predict_next``, in every mode of
``PREDICTS``); everything is decoded through the tokenizer and the last latent frame's pixel
frames are scored against the real frames (``psnr``/``ssim`` vs the copy-last-latent-frame
``baseline_*``, the raw ``copy_psnr`` and the tokenizer's ``tokenizer_psnr`` ceiling). With
validation videos (``data.val``) and ``sample.calibrate``, the extra copy-logit bias is chosen
there first (``COPY_BIASES``) and used on the held-out videos and by ``worldmill generate``.
The diffusion kind cuts its windows with the same ``eval_windows``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from einops import rearrange, reduce, repeat

from worldmill.models.ar import ARWorldModel
from worldmill.training import data, latents, metrics
from worldmill.training.encode import fit_clip

if TYPE_CHECKING:
    from worldmill.training.kinds.ar import (
        ArTrainConfig,
        SampleConfig,
        TokenData,
        TokenDataConfig,
    )  # fmt: skip
    from worldmill.training.spec import RunContext

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


def evaluate(model, data_: TokenData, cfg: ArTrainConfig, ctx: RunContext) -> dict:
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
