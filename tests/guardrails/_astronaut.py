"""A short real video with a real face: scikit-image's astronaut photo, slowly panned."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SIZE = 256  # output frame side, px; the face is ~50 px wide
N_FRAMES = 8


def astronaut_frames(n: int = N_FRAMES, size: int = SIZE) -> np.ndarray:
    """``(n, size, size, 3)`` uint8 RGB: a 448-px window panning 32 px right over the
    512-px photo, resized to ``size``."""
    from skimage.data import astronaut

    img = astronaut()  # (512, 512, 3) uint8
    out = []
    for i in range(n):
        x = round(32 * i / max(1, n - 1))
        win = img[32 : 32 + 448, x : x + 448]
        out.append(cv2.resize(win, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def write_astronaut_mp4(path: Path) -> Path:
    from worldmill.synth import write_video

    return write_video(path, astronaut_frames(), fps=8.0, crf=12)


def laplacian_var(rgb: np.ndarray) -> float:
    """Sharpness: variance of the Laplacian of the luma."""
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def outside_mask(shape: tuple[int, ...], rects: list[tuple[int, ...]]) -> np.ndarray:
    """``(H, W)`` bool, True outside every ``(x0, y0, x1, y1)``."""
    m = np.ones(shape[:2], dtype=bool)
    for x0, y0, x1, y1 in rects:
        m[y0:y1, x0:x1] = False
    return m
