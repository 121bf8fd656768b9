"""A world-model training corpus: many single-shot videos, each filmed with one named camera
motion, for ``worldmill sample-data DIR --world [--videos N]``.

The curation corpus (``worldmill/sample_data.py``) exercises the curation stages with few,
varied files; after curation it keeps ~10 clips, far too few to train a tokenizer or a world
model on. This corpus is the training counterpart: ``N`` videos of one shot each (3-5 s,
320x180, 24 fps, no cuts), cycling through the six camera motions the offline captioner
names (``pan_left``, ``pan_right``, ``tilt_up``, ``tilt_down``, ``zoom_in``, ``zoom_out``),
so that ``worldmill curate`` keeps every clip and writes the motion into its caption. Content:

* the scikit-image photos that ship in the wheel (no download), flipped and tinted per
  video, each filmed from a different window;
* procedural scenes (antialiased shapes with outlines over a two-colour gradient), a new one
  per video, so the corpus has as many distinct scenes as videos.

The camera moves at a constant speed of 0.08-0.2 frame widths per second (pans, tilts) or
scales its window by 1.5-2x over the shot (zooms). Static shots are left out on purpose: the
curation motion filter rejects them. ``world_truth.json`` lists each file's motion, speed
and content (photo name or ``shapes``). Equal seeds give byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from worldmill.sample_data import X264_DETERMINISTIC
from worldmill.sample_shots import COLOR_PHOTOS, FPS, GRAY_PHOTOS, H, W, kenburns, load_photo
from worldmill.synth import write_video

MOTIONS = ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")

# The curation corpus's photos: none shows text (the OCR filter would reject it) and all
# survive the quality filter. Grey ones get a tint per video, colour ones a hue shift.
PHOTOS = COLOR_PHOTOS + GRAY_PHOTOS


def _photo(name: str, rng: np.random.Generator) -> np.ndarray:
    """A photo (float32 RGB, 400 px high), randomly mirrored; grey photos get a random
    two-colour tint, colour photos a small hue rotation."""
    gray = name in GRAY_PHOTOS
    tint = None
    if gray:
        hue = int(rng.integers(0, 180))
        hsv = np.array([[[hue, 200, 50], [(hue + 25) % 180, 80, 250]]], np.uint8)
        tint = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    img = load_photo(name, tint)
    if not gray:
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(-12, 13))) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def _shapes_scene(rng: np.random.Generator, h: int = 400, w: int = 640) -> np.ndarray:
    """A still procedural scene (float32 RGB ``(h, w, 3)``): 30-60 antialiased circles,
    rectangles and triangles with dark outlines over a two-colour diagonal gradient."""
    c0, c1 = rng.uniform(30, 225, (2, 3))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((x / w + y / h) / 2)[..., None]
    img = (c0 + (c1 - c0) * ramp).astype(np.float32)
    for _ in range(int(rng.integers(30, 61))):
        col = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(8, 48))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.circle(img, (cx, cy), r, col, -1, cv2.LINE_AA)
            cv2.circle(img, (cx, cy), r, (20, 20, 20), 2, cv2.LINE_AA)
        elif kind == 1:
            p0, p1 = (cx - r, cy - r // 2), (cx + r, cy + r // 2)
            cv2.rectangle(img, p0, p1, col, -1, cv2.LINE_AA)
            cv2.rectangle(img, p0, p1, (20, 20, 20), 2, cv2.LINE_AA)
        else:
            pts = (np.array([cx, cy]) + rng.uniform(-r, r, (3, 2))).astype(np.int32)
            cv2.fillPoly(img, [pts], col, cv2.LINE_AA)
            cv2.polylines(img, [pts], True, (20, 20, 20), 2, cv2.LINE_AA)
    return img


def camera_path(
    img_hw: tuple[int, int], motion: str, seconds: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float]:
    """Start and end windows ``(cx, cy, w)`` in source pixels for ``motion``, and its speed
    (frame widths per second; for a zoom, the speed of the frame's left/right edge).

    Image axes: a pan *left* moves the window left (content moves right in the frame), a
    tilt *up* moves it up, a zoom *in* shrinks it -- the conventions of
    ``tasks.caption.classify_camera``."""
    ih, iw = img_hw
    wmax = min(iw, ih * W / H)
    if motion.startswith("zoom"):
        big = wmax * rng.uniform(0.85, 0.98)
        small = big / rng.uniform(1.5, 2.0)
        cx = rng.uniform(big / 2, iw - big / 2)
        cy = rng.uniform(big * H / W / 2, ih - big * H / W / 2)
        a, b = np.array([cx, cy, big]), np.array([cx, cy, small])
        speed = (big / small - 1) / seconds / 2  # edge speed in frame widths per second
        return (a, b, speed) if motion == "zoom_in" else (b, a, speed)
    speed = rng.uniform(0.08, 0.2)  # frame widths per second
    horizontal = motion.startswith("pan")
    # The widest window that leaves room for the move along the motion's axis.
    room = 0.97 * (iw if horizontal else ih * W / H)
    w = min(
        wmax * rng.uniform(0.5, 0.75),
        room / (1 + speed * seconds * (1 if horizontal else W / H)),
    )
    h = w * H / W
    move = speed * seconds * w  # source pixels
    if horizontal:
        y = rng.uniform(h / 2, ih - h / 2)
        x0 = rng.uniform(w / 2, iw - w / 2 - move)
        a, b = np.array([x0, y, w]), np.array([x0 + move, y, w])  # window moves right
        return (b, a, speed) if motion == "pan_left" else (a, b, speed)
    x = rng.uniform(w / 2, iw - w / 2)
    y0 = rng.uniform(h / 2, ih - h / 2 - move)
    a, b = np.array([x, y0, w]), np.array([x, y0 + move, w])  # window moves down
    return (b, a, speed) if motion == "tilt_up" else (a, b, speed)


def generate_world(out_dir: str | Path, seed: int = 0, videos: int = 96) -> dict[str, Any]:
    """Write ``videos`` single-shot videos ``world_NNNN.mp4`` and ``world_truth.json`` into
    ``out_dir``; return the truth dict ``{seed, fps, width, height, videos: {name: {motion,
    speed, content, duration_s}}}``. Motions cycle through :data:`MOTIONS`; 2 of every 3
    videos film a photo, 1 a procedural scene."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0x574F])
    photos = list(rng.permutation(PHOTOS))
    truth: dict[str, Any] = {}
    for i in range(videos):
        motion = MOTIONS[i % len(MOTIONS)]
        vrng = np.random.default_rng(rng.integers(1 << 62))
        if i % 3 == 2:
            content, img = "shapes", _shapes_scene(vrng)
        else:
            content = str(photos[(i - i // 3) % len(photos)])
            img = _photo(content, vrng)
        seconds = float(np.round(vrng.uniform(3.0, 5.0) * FPS) / FPS)
        a, b, speed = camera_path(img.shape[:2], motion, seconds, vrng)
        frames = kenburns(img, int(round(seconds * FPS)), a, b)
        name = f"world_{i:04d}.mp4"
        write_video(out / name, frames, fps=FPS, crf=18, extra_args=X264_DETERMINISTIC)
        truth[name] = {
            "motion": motion,
            "speed": round(float(speed), 4),
            "content": content,
            "duration_s": seconds,
        }
    doc = {"seed": seed, "fps": FPS, "width": W, "height": H, "videos": truth}
    (out / "world_truth.json").write_text(json.dumps(doc, indent=2))
    return doc
