"""Genie's evaluation figures: codebook usage, the action probe, per-frame PSNR.

* ``codebook_usage``: how evenly the latent actions are used (fraction of codes seen,
  perplexity ``exp(H)`` of their histogram: ``num_codes`` when uniform, 1 when collapsed).
* ``action_probe``: does a latent action say which simulator action was taken? A
  multinomial logistic regression (scikit-learn) from the LAM's pre-quantisation vector and
  its code (one-hot) to the true action, fit on training episodes, scored on held-out ones;
  chance = the held-out majority-class rate.
* ``frame_psnr``: PSNR per frame of ``(N, 3, H, W)`` images in [-1, 1] (capped at 8-bit
  quantisation noise); ``pooled_psnr``: PSNR of the pooled MSE.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def codebook_usage(codes: torch.Tensor | np.ndarray, num_codes: int) -> dict[str, float]:
    c = np.asarray(codes).reshape(-1)
    hist = np.bincount(c, minlength=num_codes).astype(np.float64)
    p = hist / max(1.0, hist.sum())
    nz = p[p > 0]
    return {
        "codes_used": float((hist > 0).mean()),
        "code_perplexity": float(math.exp(-(nz * np.log(nz)).sum())) if len(nz) else 0.0,
    }


def _features(z: np.ndarray, codes: np.ndarray, num_codes: int) -> np.ndarray:
    return np.concatenate([z, np.eye(num_codes)[codes]], 1)


def action_probe(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    num_codes: int,
) -> dict[str, float | int]:
    """``train`` / ``test``: (vectors ``(N, D)``, codes ``(N,)``, true actions ``(N,)``).
    Returns ``action_probe_accuracy``, ``action_probe_chance`` (majority class of the test
    actions), the same from the code alone (``action_probe_code_accuracy``: the most common
    true action per code, learnt on train), and the sample counts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (ztr, ctr, ytr), (zte, cte, yte) = train, test
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(_features(ztr, ctr, num_codes), ytr)
    acc = float((probe.predict(_features(zte, cte, num_codes)) == yte).mean())
    _, counts = np.unique(yte, return_counts=True)
    # code -> most frequent training action (a probe that sees only the discrete action)
    table = {c: np.bincount(ytr[ctr == c]).argmax() for c in np.unique(ctr)}
    fallback = np.bincount(ytr).argmax()
    code_pred = np.array([table.get(c, fallback) for c in cte])
    return {
        "action_probe_accuracy": acc,
        "action_probe_chance": float(counts.max() / counts.sum()),
        "action_probe_code_accuracy": float((code_pred == yte).mean()),
        "action_probe_train": len(ytr),
        "action_probe_test": len(yte),
    }


# 8-bit quantisation noise in [-1, 1] units: (2/255)^2 / 12. Identical game frames (a
# still scene) would otherwise score ~100 dB and dominate any mean; capped, PSNR <= 58.9 dB.
MSE_FLOOR = (2 / 255) ** 2 / 12


def frame_psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` in [-1, 1] -> ``(N,)`` PSNR in dB (peak-to-peak 2), at most
    58.9 dB (``MSE_FLOOR``)."""
    mse = ((x.clamp(-1, 1) - y.clamp(-1, 1)) ** 2).flatten(1).mean(1).clamp_min(MSE_FLOOR)
    return 10 * torch.log10(4.0 / mse)


def pooled_psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR of the mean squared error over all of ``x`` vs ``y`` (every pixel weighs the
    same; frames that barely change cannot dominate)."""
    mse = float(((x.clamp(-1, 1) - y.clamp(-1, 1)) ** 2).mean())
    return 10 * math.log10(4.0 / max(mse, MSE_FLOOR))
