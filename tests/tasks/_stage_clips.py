"""Synthetic test clips for the per-clip stage tests: real photos (shipped with
scikit-image) moved by a virtual camera and encoded with real ffmpeg."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

from worldmill.media import ClipView, probe
from worldmill.records import Clip
from worldmill.synth import write_video

W, H, FPS = 320, 180, 24.0  # test clip size and frame rate


def photo(name: str = "astronaut", side: int = 720) -> np.ndarray:
    """A scikit-image photo as ``(side, side*w/h, 3)`` uint8 RGB (upscaled with cubic)."""
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    h, w = img.shape[:2]
    return cv2.resize(img[..., :3], (int(round(side * w / h)), side), interpolation=cv2.INTER_CUBIC)


def camera(
    img: np.ndarray,
    n: int,
    x0: float,
    y0: float,
    vx: float = 0.0,
    vy: float = 0.0,
    zoom_rate: float = 0.0,
    width: int = W,
    height: int = H,
) -> np.ndarray:
    """``(n, height, width, 3)`` frames of a virtual camera over ``img``.

    The window's top-left starts at ``(x0, y0)`` px and moves ``(vx, vy)`` px per frame
    (the window moving left = the camera panning left); ``zoom_rate`` > 0 shrinks the window
    by that fraction per frame about its centre (zooming in). Sub-pixel motion is exact
    (affine warp with bilinear interpolation).
    """
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        s = 1.0 / (1.0 + zoom_rate) ** i  # window size relative to the output
        cx = x0 + vx * i + width / 2.0
        cy = y0 + vy * i + height / 2.0
        # Output pixel (u, v) samples image point (cx + (u - width/2) * s, cy + (v - height/2) * s).
        m = np.array([[s, 0, cx - width / 2.0 * s], [0, s, cy - height / 2.0 * s]], np.float32)
        out[i] = cv2.warpAffine(
            img, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        )
    return out


def still_with_noise(img: np.ndarray, n: int, sigma: float = 4.0, seed: int = 0) -> np.ndarray:
    """``n`` copies of a ``(H, W)`` crop of ``img`` with fresh Gaussian sensor noise each."""
    rng = np.random.default_rng(seed)
    base = img[:H, :W].astype(np.float32)
    return np.stack(
        [
            np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)
            for _ in range(n)
        ]
    )


def put_text(frames: np.ndarray, text: str, scale: float = 2.5, thickness: int = 6) -> np.ndarray:
    """Burn a big yellow caption with a dark outline into every frame (a text overlay)."""
    out = frames.copy()
    font = cv2.FONT_HERSHEY_DUPLEX
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    org = ((out.shape[2] - tw) // 2, (out.shape[1] + th) // 2)
    for f in out:
        cv2.putText(f, text, org, font, scale, (0, 0, 0), thickness + 6, cv2.LINE_AA)
        cv2.putText(f, text, org, font, scale, (255, 230, 0), thickness, cv2.LINE_AA)
    return out


def encode(path: Path, frames: np.ndarray, fps: float = FPS) -> tuple[Clip, ClipView]:
    """Encode frames to an H.264 mp4 and return a fresh clip record and view for it."""
    write_video(path, frames, fps=fps, crf=23)
    info = probe(str(path))
    clip = Clip(
        clip_id=path.stem, video_id="v", start_s=0.0, end_s=info.duration_s, clip_uri=str(path),
        width=info.width, height=info.height, fps=info.fps, num_frames=info.num_frames,
    )  # fmt: skip
    return clip, ClipView(str(path), info.fps, info.width, info.height)


def fresh(clip: Clip, view: ClipView) -> tuple[Clip, ClipView]:
    """A new record for the same clip (kept, no scores), sharing the decoded-frame cache."""
    return Clip(**{**clip.to_dict(), "extra": {}, "errors": {}}), view
