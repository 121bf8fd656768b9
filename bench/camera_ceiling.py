"""Ceiling of the diffusion kind's camera-motion metric: how often the project's flow
estimator (``worldmill/training/camera.py: estimate_camera``) reads the captioned camera
motion of REAL latent windows decoded by the CV tokenizer (as generated windows are read).

    python bench/camera_ceiling.py --latents CACHE --tokenizer TOKRUN [--frames 4]
        [--sizes 8,12] [--strides 1,4] [--holdout 4]

For every clip of a latent cache (``RUN/tokens`` of a diffusion run, or ``worldmill
encode`` output) whose caption names a motion: the centre and corner windows of
``frames x size x size`` latents from latent frame 0 (the kind's ``eval_windows``), decoded,
read at each stride. Prints one JSON line per (size, stride): accuracy on the held-out clips
(what ``metrics.json`` reports as ``camera_motion_accuracy_real``), on all clips, per motion,
and centre vs corner windows. No training; CPU minutes.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--sizes", default="8,12")
    ap.add_argument("--strides", default="1,4")
    ap.add_argument("--holdout", type=int, default=4)
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    from worldmill.training import encode, latents, metrics
    from worldmill.training import megatron as mc
    from worldmill.training.camera import caption_motion, estimate_camera

    refs = latents.index_latents(a.latents, "latent")
    _, held = latents.split_holdout(refs, a.holdout)
    held_ids = {r.clip_id for r in held}
    text = latents.caption_embeddings(Path(a.latents) / latents.TEXT_FILE)
    strides = [int(x) for x in a.strides.split(",")]
    with mc.single_process():
        tok, _, _ = encode.load_tokenizer(a.tokenizer)
        tc = tok.cfg.temporal_compression
        for size in (int(x) for x in a.sizes.split(",")):
            hits: dict[int, dict[str, list[bool]]] = {s: {} for s in strides}
            for r in refs:
                want = caption_motion(text[r.clip_id][0])
                if want is None:
                    continue
                grid = torch.from_numpy(latents.load_array(r).astype(np.float32))
                H, W = grid.shape[-2:]
                centre = ((H - size) // 2, (W - size) // 2)
                offs = sorted({centre, (0, 0), (0, W - size), (H - size, 0), (H - size, W - size)})
                win = torch.stack(
                    [grid[:, : a.frames, y : y + size, x : x + size] for y, x in offs]
                )
                with torch.no_grad():
                    videos = metrics.to_uint8(tok.decode(win).clamp(-1, 1).float())
                for off, v in zip(offs, videos, strict=True):
                    for s in strides:
                        ok = estimate_camera(v, 24.0, stride=s) == want
                        keys = ["all", want, "centre" if off == centre else "corner"]
                        keys += ["held"] if r.clip_id in held_ids else []
                        for k in keys:
                            hits[s].setdefault(k, []).append(ok)
            for s in strides:
                row = {k: round(float(np.mean(v)), 3) for k, v in sorted(hits[s].items())}
                n = {k: len(v) for k, v in hits[s].items() if k in ("all", "held")}
                print(json.dumps({"frames": a.frames, "size": size, "pixels": size * tok.cfg.spatial_compression,
                                  "stride": s, "t_c": tc, "windows": n, "accuracy": row}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
