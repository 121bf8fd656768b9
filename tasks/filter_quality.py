"""Stage ``quality``: blur, exposure and contrast -> one ``clip.quality_score`` in [0, 1].

Every measurement is taken on up to ``max_frames`` frames spread over the clip, from the
shared analysis decode (gray, 320 px wide), so that numbers do not depend on the clip's
resolution. Sub-scores in [0, 1] (1 = fine), each a linear ramp between two commented
break points:

* ``sharpness``: variance of the 3x3 Laplacian of the gray frame after normalising its
  contrast to a standard deviation of 50 grey levels (amplifying at most 2.5x), so that a
  sharp but low-contrast scene is not called blurry (low contrast has its own score);
  log-scaled between ``blur_lo`` (score 0) and ``blur_hi`` (score 1); median over frames.
  At 320 px wide a sharp photo measures 3000-8000, a Gaussian blur of sigma 1 px ~500-900,
  sigma 2 px ~90-160, sigma 3 px ~30-60 (the contrast-normalised ``laplacian_var``).
* ``exposure``: mean luma (``brightness`` in [0, 1]) inside [dark_ok, bright_ok] scores 1,
  falling to 0 at ``dark_min`` / ``bright_max``.
* ``clipping``: fraction of crushed (luma <= 3) or blown (>= 252) pixels; 1 up to 0.3,
  0 from 0.8.
* ``contrast``: standard deviation of luma / 255; 0 at ``contrast_lo``, 1 from ``contrast_hi``.

``quality_score`` is the *product* of the sub-scores: defects compound (a dim *and* soft
clip is worse than either alone) and any one sub-score at 0 rejects. The lowest sub-score
says why (``extra["quality_worst"]``).
"""

from __future__ import annotations

import cv2
import numpy as np

from worldmill.media import ClipView
from worldmill.records import Clip
from worldmill.tasks.filter_motion import analysis_frames

STAGE = "quality"


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at ``x <= lo``, 1 at ``x >= hi``, linear between (``lo > hi`` ramps downwards)."""
    if hi == lo:
        return float(x >= hi)
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def frame_measurements(gray: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame raw measurements of ``(T, H, W)`` uint8 gray frames; each value ``(T,)``."""
    g = gray.astype(np.float32)
    std = g.std(axis=(1, 2))  # grey levels
    lap_var = np.array([cv2.Laplacian(f, cv2.CV_32F, ksize=3).var() for f in g], dtype=np.float64)
    # Contrast-normalised Laplacian variance: rescale each frame to std 50, but never amplify
    # more than 2.5x (std 20): in dim, flat frames that would only amplify quantisation and
    # compression noise into fake sharpness.
    lap_norm = lap_var * (50.0 / np.maximum(std, 20.0)) ** 2
    return {
        "brightness": g.mean(axis=(1, 2)) / 255.0,
        "contrast": std / 255.0,
        "clipped": ((gray <= 3) | (gray >= 252)).mean(axis=(1, 2)),
        "laplacian_var": lap_norm,
    }


def score_quality(
    gray: np.ndarray,
    blur_lo: float = 30.0,
    blur_hi: float = 300.0,
    dark_min: float = 0.03,
    dark_ok: float = 0.10,
    bright_ok: float = 0.85,
    bright_max: float = 0.96,
    contrast_lo: float = 0.015,
    contrast_hi: float = 0.06,
) -> dict[str, float]:
    """Sub-scores and ``quality_score`` of ``(T, H, W)`` uint8 gray frames (see module doc)."""
    m = frame_measurements(gray)
    lap = float(np.median(m["laplacian_var"]))
    brightness = float(m["brightness"].mean())
    contrast = float(np.median(m["contrast"]))
    clipped = float(m["clipped"].mean())
    sub = {
        "sharpness": _ramp(np.log10(max(lap, 1e-6)), np.log10(blur_lo), np.log10(blur_hi)),
        "exposure": min(
            _ramp(brightness, dark_min, dark_ok), _ramp(brightness, bright_max, bright_ok)
        ),
        "clipping": _ramp(clipped, 0.8, 0.3),
        "contrast": _ramp(contrast, contrast_lo, contrast_hi),
    }
    worst = min(sub, key=sub.__getitem__)
    return {
        **sub,
        "quality_score": float(np.prod(list(sub.values()))),
        "quality_worst": worst if sub[worst] < 1.0 else "",
        "brightness": brightness,
        "contrast_std": contrast,
        "clipped_fraction": clipped,
        "laplacian_var": lap,
    }


def run(
    clip: Clip,
    view: ClipView,
    *,
    min_score: float = 0.35,  # reject when the product of the sub-scores is below this
    max_frames: int = 8,  # frames measured, evenly spread over the clip
    blur_lo: float = 30.0,  # normalised Laplacian variance scoring sharpness 0 (log scale)
    blur_hi: float = 300.0,  # ... scoring 1
    dark_min: float = 0.03,  # mean luma in [0, 1] scoring exposure 0 (too dark)
    dark_ok: float = 0.10,  # ... scoring 1 (night scenes: 0.08-0.2)
    bright_ok: float = 0.85,  # mean luma still scoring 1
    bright_max: float = 0.96,  # ... scoring 0 (too bright)
    contrast_lo: float = 0.015,  # luma std / 255 scoring contrast 0 (flat, fog, fade)
    contrast_hi: float = 0.06,  # ... scoring 1
) -> Clip:
    """Score blur/exposure/contrast; reject when ``quality_score < min_score``.

    Writes ``clip.quality_score`` and ``extra``: ``sharpness``, ``exposure``, ``clipping``,
    ``contrast`` (sub-scores in [0, 1]), ``brightness`` (mean luma in [0, 1]),
    ``laplacian_var`` (raw normalised blur measure), ``quality_worst`` (weakest sub-score).
    """
    frames = analysis_frames(view)  # (T, H, 320, 3) uint8
    idx = np.linspace(0, len(frames) - 1, num=min(max_frames, len(frames))).round().astype(int)
    gray = np.stack([cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY) for i in idx])  # (t, H, W)
    s = score_quality(
        gray, blur_lo, blur_hi, dark_min, dark_ok, bright_ok, bright_max, contrast_lo, contrast_hi
    )
    clip.quality_score = float(s["quality_score"])
    for key in ("sharpness", "exposure", "clipping", "contrast", "brightness", "laplacian_var"):
        clip.extra[key] = float(s[key])
    clip.extra["quality_worst"] = str(s["quality_worst"])
    if clip.quality_score < min_score:
        clip.reject(STAGE)
    return clip
