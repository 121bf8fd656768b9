"""Diffusion world model (``models/dit.py``): megatron-core ``TransformerBlock`` vs its
plain-torch twin of equal size on CPU -- seconds per training step and latent tokens/s.

    python bench/diffusion_speed.py [--preset cpu --batch 8 --frames 4 --size 8 --iters 10 --threads 2]

One training step = forward (x0 loss at a drawn noise level) + backward + AdamW step on a
batch of ``(batch, C, frames, size, size)`` latent windows (the default run's shape). Tokens
= patches per window x batch. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from worldmill.models.dit import DiTWorldModel, preset
    from worldmill.training import megatron as mc

    res: dict = {"threads": a.threads, "preset": a.preset, "batch": a.batch}
    with mc.single_process(seed=0):
        for backend in ("megatron", "torch"):
            cfg = preset(a.preset, max_t=a.frames, max_h=a.size, max_w=a.size, backend=backend)
            model = DiTWorldModel(cfg).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            x = torch.randn(a.batch, cfg.latent_channels, a.frames, a.size, a.size)
            text = torch.randn(a.batch, 384)
            draw = model.draw(x, torch.Generator().manual_seed(0))

            def step(model=model, opt=opt, x=x, text=text, draw=draw):
                opt.zero_grad()
                model(x, text, draw).backward()
                opt.step()

            step()  # warm-up
            t, c = time.perf_counter(), time.process_time()
            for _ in range(a.iters):
                step()
            wall = (time.perf_counter() - t) / a.iters
            tokens = a.batch * (a.frames // cfg.patch_t) * (a.size // cfg.patch) ** 2
            res[f"params_{backend}"] = sum(p.numel() for p in model.parameters())
            res[f"s_per_step_{backend}"] = round(wall, 4)
            res[f"cpu_s_per_step_{backend}"] = round((time.process_time() - c) / a.iters, 4)
            res[f"tokens_per_s_{backend}"] = round(tokens / wall, 1)
    res["overhead_ratio"] = round(res["s_per_step_megatron"] / res["s_per_step_torch"], 3)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
