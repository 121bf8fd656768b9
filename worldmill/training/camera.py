"""Camera motion named by captions and read from frames: what the ``diffusion`` kind's
Text2World camera-control metric compares (``kinds/diffusion.py``).

Captions name a motion in the offline captioner's words (``tasks/caption.py``: "pan to the
left", "tilt up", "zoom out", "static shot", ...); frames are read by the same optical-flow
estimator the captioner uses (``filter_motion.camera_motion_stats`` + ``classify_camera``).
"""

from __future__ import annotations

import re

import numpy as np

# The offline captioner's words (tasks/caption.py) -> its camera_motion classes.
_MOTION = [
    (re.compile(r"\bpan to the left\b"), "pan_left"),
    (re.compile(r"\bpan to the right\b"), "pan_right"),
    (re.compile(r"\btilt up\b"), "tilt_up"),
    (re.compile(r"\btilt down\b"), "tilt_down"),
    (re.compile(r"\bzoom in\b"), "zoom_in"),
    (re.compile(r"\bzoom out\b"), "zoom_out"),
    (re.compile(r"\bstatic shot\b"), "static"),
]
# Captioner-style prompts, used when no corpus caption names a motion.
TEMPLATES = {
    "pan_left": "A slow pan to the left across a bright scene.",
    "pan_right": "A slow pan to the right across a bright scene.",
    "tilt_up": "A slow tilt up over a bright scene.",
    "tilt_down": "A slow tilt down over a bright scene.",
    "zoom_in": "A slow zoom in on a bright scene.",
    "zoom_out": "A slow zoom out from a bright scene.",
}


def caption_motion(caption: str) -> str | None:
    """The camera motion a caption names (the captioner's phrasing), or None."""
    low = caption.lower()
    for pat, name in _MOTION:
        if pat.search(low):
            return name
    return None


def estimate_camera(frames: np.ndarray, fps: float, stride: int = 1) -> str:
    """Camera motion of ``(T, H, W, 3)`` uint8 frames by the project's optical-flow
    estimator (the one the captioner uses), on the frame pairs ``(i, i + stride)``.

    ``stride`` > 1 measures ``stride`` times the displacement per pair: the world corpus's
    camera moves ~0.3-1.4 px per frame at the 96 px training size, below what DIS reads
    reliably between consecutive frames, and a video tokenizer's decoded frames move
    smoothly from one latent frame to the next (``stride = t_c``) but not always within one
    (bench/RESULTS.md: real decoded windows read 78 % correctly at stride 1, 94 % at 4)."""
    from worldmill.tasks.caption import classify_camera
    from worldmill.tasks.filter_motion import camera_motion_stats, flow_fields, to_gray

    gray = to_gray(frames, frames.shape[2])  # (T, H, W) uint8
    pairs = [flow_fields(gray[[i, i + stride]]) for i in range(len(gray) - stride)]
    flow = np.concatenate(pairs) if pairs else flow_fields(gray[:1])  # (P, H, W, 2) px/pair
    return classify_camera(camera_motion_stats(flow, fps / stride))[0]


def camera_prompts(
    text: dict[str, tuple[str, np.ndarray]], held_ids: set[str], per_class: int
) -> list[tuple[str, str, np.ndarray | None]]:
    """``(motion, caption, embedding or None)``: up to ``per_class`` corpus captions per
    motion they name (held-out clips first, then by clip id); the templates when none do."""
    by: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    for cid in sorted(text, key=lambda c: (c not in held_ids, c)):
        cap, emb = text[cid]
        motion = caption_motion(cap)
        if motion is not None and cap not in {c for _, c, _ in by.get(motion, [])}:
            by.setdefault(motion, []).append((motion, cap, emb))
    if not by:
        return [(m, cap, None) for m, cap in TEMPLATES.items()]
    return [p for m in sorted(by) for p in by[m][:per_class]]
