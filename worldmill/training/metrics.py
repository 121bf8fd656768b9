"""Reconstruction metrics, the bicubic baseline, and per-run plots (loss curve, recon grid)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean per-clip PSNR in dB of videos in [-1, 1] (peak-to-peak 2), clamped like pixels."""
    x, y = x.clamp(-1, 1), y.clamp(-1, 1)
    mse = ((x - y) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(4.0 / mse)).mean())


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM over all frames (skimage, 7x7 window, RGB), videos ``(N, 3, T, H, W)``."""
    from skimage.metrics import structural_similarity

    a = to_uint8(x).reshape(-1, *x.shape[-2:], 3)
    b = to_uint8(y).reshape(-1, *y.shape[-2:], 3)
    return float(
        np.mean([structural_similarity(p, q, channel_axis=-1) for p, q in zip(a, b, strict=True)])
    )


def to_uint8(v: torch.Tensor) -> np.ndarray:
    """``(N, 3, T, H, W)`` in [-1, 1] -> ``(N, T, H, W, 3)`` uint8."""
    u = ((v.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(u, "n c t h w -> n t h w c").numpy()


def bicubic_baseline(video: torch.Tensor, budget: float) -> tuple[torch.Tensor, tuple[int, int]]:
    """Per-frame bicubic down- then up-sampling to the smallest size whose 8-bit values
    ``3 * T * h * w`` are *at least* ``budget`` (the tokenizer's latent bytes or values per
    clip), the aspect kept as closely as that allows: the baseline never gets fewer bytes than
    the codec it is compared with (rounding the grid down had given it 243 bytes against a
    384-byte DV latent).

    Returns (reconstruction like ``video``, (h, w)).
    """
    n, c, t, H, W = video.shape
    need = max(1, math.ceil(budget / (c * t) - 1e-9))  # pixels per frame and channel
    s = math.sqrt(H * W / need)
    h, w = min(H, math.ceil(H / s - 1e-9)), min(W, math.ceil(W / s - 1e-9))
    # Shrink a side while the grid still holds the budget (the larger side first).
    while True:
        for dh, dw in ((0, 1), (1, 0)) if w / W >= h / H else ((1, 0), (0, 1)):
            if h - dh >= 1 and w - dw >= 1 and (h - dh) * (w - dw) >= need:
                h, w = h - dh, w - dw
                break
        else:
            break
    frames = rearrange(video, "n c t h w -> (n t) c h w")
    small = F.interpolate(frames, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    up = F.interpolate(small, size=(H, W), mode="bicubic", align_corners=False).clamp(-1, 1)
    return rearrange(up, "(n t) c h w -> n c t h w", n=n), (h, w)


def read_log(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_loss(log: list[dict], out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([r["step"] for r in log], [r["loss"] for r in log], lw=1)
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def plot_recon(rows: dict[str, torch.Tensor], out: str | Path, n_frames: int = 5) -> Path:
    """Grid: one row per entry of ``rows`` (each ``(3, T, H, W)``), ``n_frames`` frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = next(iter(rows.values())).shape[1]
    idx = np.linspace(0, t - 1, min(n_frames, t)).round().astype(int)
    fig, axes = plt.subplots(
        len(rows), len(idx), figsize=(1.6 * len(idx), 1.7 * len(rows)), dpi=100, squeeze=False
    )
    for r, (name, v) in enumerate(rows.items()):
        frames = to_uint8(v[None])[0]
        for c, i in enumerate(idx):
            ax = axes[r][c]
            ax.imshow(frames[i])
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0:
                ax.set_title(f"frame {i}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
