"""DV tokenizer at step 0 (the quantiser-fitted linear patch codec, no training) vs bicubic at
equal latent bytes, for several FSQ level sets: which DV layout to train.

    python bench/dv_fit.py --shards CUR/shards --levels "[64,16,8,8]" "[16,16,16,16]" \
        [--set k=v ...] [--holdout N] [--json]

Per level set: the run's own config (``resolve_config("tokenizer")`` with ``model.kind=dv``,
the levels and ``--set``), the same held-out split and PCA crops as the trainer's
``init_model`` (``cfg.pca_crops()`` crops of the training videos, seed ``run.seed``),
then held-out PSNR / SSIM of the fitted codec and of bicubic with at least the latent's bytes
(``metrics.bicubic_baseline``). Nothing is trained; one process.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def fit_and_score(shards: str, levels: str, overrides: list[str], holdout: int) -> dict:
    from worldmill.training import data, metrics
    from worldmill.training.kinds.tokenizer import build_tokenizer
    from worldmill.training.registry import resolve_config

    sets = ["model.kind=dv", f"model.fsq_levels={levels}", *overrides]
    if holdout:
        sets.append(f"data.holdout={holdout}")
    cfg = resolve_config("tokenizer", None, sets)
    d = cfg.data
    train, held = data.split_holdout(data.index_shards(shards), d.holdout)
    crops = data.ResumableClipStream(
        train, cfg.pca_crops(), d.num_frames, d.crop, d.width, d.fps, seed=cfg.run.seed
    ).batch(0)
    torch.manual_seed(cfg.run.seed)
    model = build_tokenizer(cfg).eval()
    model.init_from_data(crops)
    clips = data.eval_clips(held[: cfg.run.eval_max_clips], d.num_frames, d.crop, d.width, d.fps)
    with torch.no_grad():
        recon = torch.cat([model(c[None]) for c in clips]).clamp(-1, 1)
    t, h, w = clips.shape[2:]
    budget = model.latent_bytes(t, h, w)
    base, (bh, bw) = metrics.bicubic_baseline(clips, budget)

    def per_clip(x: torch.Tensor) -> list[float]:
        return [round(metrics.psnr(x[i : i + 1], clips[i : i + 1]), 2) for i in range(len(x))]

    return {
        "levels": levels,
        "overrides": overrides,
        "eval_clips": len(clips),
        "latent_bytes": round(budget, 1),
        "baseline_bytes": 3 * t * bh * bw,
        "psnr": round(metrics.psnr(recon, clips), 2),
        "ssim": round(metrics.ssim(recon, clips), 3),
        "baseline_psnr": round(metrics.psnr(base, clips), 2),
        "baseline_ssim": round(metrics.ssim(base, clips), 3),
        "psnr_per_clip": per_clip(recon),
        "baseline_psnr_per_clip": per_clip(base),
        "held_out_sources": [r.meta.get("source_path", r.clip_id) for r in held],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", required=True, help="curated shards (curate OUT/shards)")
    ap.add_argument("--levels", nargs="+", default=["[64, 16, 8, 8]"], help="FSQ level lists")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    ap.add_argument("--holdout", type=int, default=0, help="data.holdout (0 = the default)")
    ap.add_argument("--json", action="store_true", help="one JSON line per level set")
    a = ap.parse_args()
    torch.set_num_threads(1)
    for levels in a.levels:
        t = time.process_time()
        r = fit_and_score(a.shards, levels, a.overrides, a.holdout)
        r["delta_psnr"] = round(r["psnr"] - r["baseline_psnr"], 2)
        r["cpu_s"] = round(time.process_time() - t, 1)
        print(json.dumps(r) if a.json else json.dumps(r, indent=2), flush=True)


if __name__ == "__main__":
    main()
