"""Real synthetic videos and real ffmpeg transforms for the embed/dedup tests.

Imported by tests/tasks/test_embed.py and conftest.py (the dedup tests' ``corpus``). Every
video is encoded with worldmill.synth.write_video and transformed with the ffmpeg binary on
PATH; nothing is mocked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

from worldmill.media import ffmpeg_bin
from worldmill.synth import write_video

W, H, FPS, SECONDS = 192, 108, 12.0, 2.0
DUP_BASES = ("tex0", "shp0", "tex3")  # bases whose TRANSFORMS are written: the duplicate groups

# ffmpeg -vf filters of the near-duplicate transforms (crop and scale keep even sizes).
TRANSFORMS: dict[str, list[str]] = {
    "crf35": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "35"],
    "half": ["-vf", "scale=trunc(iw/4)*2:trunc(ih/4)*2", "-c:v", "libx264", "-crf", "23"],
    "crop5": [
        "-vf",
        "crop=trunc(iw*0.95/2)*2:trunc(ih*0.95/2)*2",
        "-c:v",
        "libx264",
        "-crf",
        "23",
    ],
    "bright": ["-vf", "eq=brightness=0.1", "-c:v", "libx264", "-crf", "23"],
}


def _texture(seed: int, h: int, w: int, alpha: float) -> np.ndarray:
    """Random colour texture with a natural-image-like 1/f^alpha spectrum, uint8 (h, w, 3)."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w)) ** alpha  # (h, w//2+1)
    chans = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, size=amp.shape)
        img = np.fft.irfft2(amp * np.exp(1j * phase), s=(h, w))
        img = (img - img.min()) / (img.max() - img.min() + 1e-9)
        chans.append(img)
    tint = rng.uniform(0.4, 1.0, size=3)
    return (np.stack(chans, axis=-1) * tint * 230 + 10).astype(np.uint8)


def texture_pan(seed: int, dx: int, dy: int, alpha: float = 1.0) -> np.ndarray:
    """A camera pan over a random texture: (T, H, W, 3) uint8."""
    n = int(FPS * SECONDS)
    big = _texture(seed, H + abs(dy) * n + 2, W + abs(dx) * n + 2, alpha)
    frames = []
    for t in range(n):
        y0 = (dy * t) if dy >= 0 else abs(dy) * (n - t)
        x0 = (dx * t) if dx >= 0 else abs(dx) * (n - t)
        frames.append(big[y0 : y0 + H, x0 : x0 + W])
    return np.stack(frames)


def shapes(seed: int) -> np.ndarray:
    """Coloured discs moving over a vertical gradient: (T, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    n = int(FPS * SECONDS)
    base = np.zeros((H, W, 3), np.uint8)
    top, bottom = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    ramp = np.linspace(0, 1, H)[:, None, None]
    base[:] = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    discs = [
        (
            rng.uniform(20, W - 20),
            rng.uniform(20, H - 20),
            rng.uniform(-3, 3),
            rng.uniform(-2, 2),
            int(rng.integers(8, 22)),
            tuple(int(c) for c in rng.integers(0, 255, 3)),
        )
        for _ in range(4)
    ]
    frames = []
    for t in range(n):
        f = base.copy()
        for x, y, vx, vy, r, col in discs:
            cv2.circle(f, (int(x + vx * t), int(y + vy * t)), r, col, -1)
        frames.append(f)
    return np.stack(frames)


BASES = {
    "tex0": lambda: texture_pan(0, 2, 0),
    "tex1": lambda: texture_pan(1, 0, 2),
    "tex2": lambda: texture_pan(2, -2, 1),
    "tex3": lambda: texture_pan(3, 1, -1, alpha=0.8),
    "tex4": lambda: texture_pan(4, 3, 0, alpha=1.3),
    "shp0": lambda: shapes(10),
    "shp1": lambda: shapes(11),
    "shp2": lambda: shapes(12),
}


def transform(src: Path, dst: Path, args: list[str]) -> Path:
    cmd = [ffmpeg_bin(), "-v", "error", "-y", "-i", str(src), "-an", *args]
    cmd += ["-pix_fmt", "yuv420p", str(dst)]
    subprocess.run(cmd, check=True, capture_output=True)
    return dst


def make_corpus(root: Path, dup_bases: tuple[str, ...] = DUP_BASES) -> dict:
    """Write every base video, and all TRANSFORMS of ``dup_bases``.

    Returns ``{name: path}`` with names ``<base>`` and ``<base>.<transform>``.
    """
    out: dict[str, Path] = {}
    for name, fn in BASES.items():
        out[name] = write_video(root / f"{name}.mp4", fn(), fps=FPS, crf=18)
    for name in dup_bases:
        for tname, args in TRANSFORMS.items():
            out[f"{name}.{tname}"] = transform(out[name], root / f"{name}_{tname}.mp4", args)
    return out
