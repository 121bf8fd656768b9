"""Per-frame features of the worldmill shot detector (:mod:`worldmill.tasks.shot_detect`).

The detector works on a small analysis raster (``SplitConfig.analysis_width`` pixels wide,
decoded by :func:`worldmill.tasks.split_backends.decode_analysis` or the one-pass decoder).
From it this module computes, once per video, the cheap features every detector reads
(:class:`Features`): marginal HSV histograms, the frames at half and quarter size, their
luma, and motion-compensated frame differences (:func:`mc_pairs`, :func:`mc_diff`), which
tell a cut from a camera pan. They live apart from the detectors because they are plain
image measurements with no tuned thresholds in them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Histogram bins per HSV channel (OpenCV ranges: H 0..180, S and V 0..256). The hue
# histogram has one more bin for achromatic pixels, whose hue is only noise.
_HIST_BINS = (16, 8, 8)
_CHROMA_MIN = 40  # S and V (0..255) below this: achromatic


# Bin of each 8-bit value per channel (hue in OpenCV's 0..179 range).
_LUT_H = (np.arange(256) * _HIST_BINS[0] // 180).astype(np.uint8)
_LUT_S = (np.arange(256) * _HIST_BINS[1] // 256).astype(np.uint8)
_LUT_V = (np.arange(256) * _HIST_BINS[2] // 256).astype(np.uint8)


def _hsv_hist(frames: np.ndarray) -> np.ndarray:
    """Per-frame marginal HSV histograms, each channel summing to 1: ``(T, 17 + 8 + 8)``."""
    t, h, w, _ = frames.shape
    hsv = cv2.cvtColor(frames.reshape(t * h, w, 3), cv2.COLOR_RGB2HSV)
    hue, sat, val = cv2.split(hsv)  # (T * h, w) uint8 each
    hb = cv2.LUT(hue, _LUT_H)  # bin indices, uint8 (no wide temporaries: ~40x faster)
    hb[(sat < _CHROMA_MIN) | (val < _CHROMA_MIN)] = _HIST_BINS[0]  # achromatic bin
    chans = [
        (hb, _HIST_BINS[0] + 1),
        (cv2.LUT(sat, _LUT_S), _HIST_BINS[1]),
        (cv2.LUT(val, _LUT_V), _HIST_BINS[2]),
    ]
    out = np.empty((t, sum(nb for _, nb in chans)), np.float32)
    col = 0
    for b, nb in chans:  # b: bin index per pixel; calcHist of values 0..nb-1 into nb bins
        b = b.reshape(t, h * w)
        for i in range(t):
            out[i, col : col + nb] = cv2.calcHist([b[i]], [0], None, [nb], [0, nb])[:, 0]
        col += nb
    return out / (h * w)


def hist_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over channels of the total-variation distance of histograms: in [0, 1]."""
    return np.abs(a - b).sum(axis=-1) / (2 * len(_HIST_BINS))


def _halve(x: np.ndarray) -> np.ndarray:
    """2x2 block mean of a stack ``(T, H, W, C)`` with even H (one cv2 call for all frames)."""
    t, h, w, c = x.shape
    y = cv2.resize(x.reshape(t * h, w, c), (w // 2, t * h // 2), interpolation=cv2.INTER_AREA)
    return y.reshape(t, h // 2, w // 2, c)


def mc_pairs(x: np.ndarray, i: np.ndarray, j: np.ndarray, r: int) -> np.ndarray:
    """Motion-compensated difference between frames ``x[i]`` and ``x[j]`` (index arrays of
    equal length): the smallest mean absolute difference over integer shifts
    ``|dx|, |dy| <= r`` of ``x[i]`` against the centre of ``x[j]``. ``x`` is
    ``(T, h, w, C)`` float; returns ``(len(i),)``."""
    a, b = x[i], x[j]
    _, h, w, _ = x.shape
    pb = b[:, r : h - r, r : w - r]
    best = np.full(len(a), np.inf, np.float32)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            pa = a[:, r + dy : h - r + dy, r + dx : w - r + dx]
            best = np.minimum(best, np.abs(pa - pb).mean(axis=(1, 2, 3)))
    return best


def mc_diff(x: np.ndarray, lag: int = 1, r: int = 2) -> np.ndarray:
    """:func:`mc_pairs` of every frame ``i`` with ``i + lag``: ``(T - lag,)``."""
    i = np.arange(len(x) - lag)
    return mc_pairs(x, i, i + lag, r)


@dataclass
class Features:
    fps: float
    n: int
    hist: np.ndarray  # (T, 33) HSV marginals
    thumb: np.ndarray  # (T, h/4, w/4, 3) float [0, 1], ~16x9 for a 64-px analysis width
    mid: np.ndarray  # (T, h/2, w/2, 3) float [0, 1], ~32x18
    gray: np.ndarray  # (T, h/2, w/2, 1) float [0, 1] luma of ``mid``
    luma_p95: np.ndarray  # (T,) 95th percentile of luma, [0, 1]
    luma_mean: np.ndarray  # (T,)


def features(frames: np.ndarray, fps: float) -> Features:
    """``frames``: ``(T, H, W, 3)`` uint8 RGB with H and W multiples of 4."""
    mid8 = _halve(frames)  # (T, H/2, W/2, 3) uint8
    thumb8 = _halve(mid8)  # (T, H/4, W/4, 3)
    t, h, w, _ = mid8.shape
    luma = cv2.cvtColor(mid8.reshape(t * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(t, h * w)
    return Features(
        fps=fps,
        n=len(frames),
        hist=_hsv_hist(mid8),
        thumb=thumb8.astype(np.float32) / 255.0,
        mid=mid8.astype(np.float32) / 255.0,
        gray=luma.reshape(t, h, w, 1).astype(np.float32) / 255.0,
        luma_p95=np.percentile(luma, 95, axis=1) / 255.0,
        luma_mean=luma.mean(axis=1) / 255.0,
    )
