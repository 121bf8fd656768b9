"""Stage ``motion``: reject static clips by the amount of optical flow.

Score (``clip.motion_score``): the mean optical-flow magnitude over the frame, in **fractions
of the frame width per second**, averaged over consecutive pairs of frames sampled at
``ANALYSIS_FPS`` (4 fps) and shrunk to ``flow_width`` (160 px) wide gray. So 0.1 means that,
on average, image content moves by a tenth of the frame width every second: a pan that
crosses the whole frame in 10 s. Being relative to the frame width, the score does not
depend on the resolution the clip was transcoded to.

Reference points (DIS optical flow, ``flow_width=160``):

* a tripod still / a photo with encoding or sensor noise only: < 0.002
* a slow Ken-Burns pan across a photo (~2 % of the width per second): ~0.02
* handheld footage, walking people: 0.02-0.1; fast pans and action: > 0.2

Also used by the captioner (``flow_fields`` and ``camera_motion_stats``).
"""

from __future__ import annotations

import cv2
import numpy as np

from worldmill.media import ClipView
from worldmill.records import Clip

STAGE = "motion"

# One shared decode for every built-in per-clip stage: RGB at this width and frame rate.
# ``ClipView.keyframes(n, width=ANALYSIS_WIDTH)`` reads from the same cached array.
ANALYSIS_WIDTH = 320  # px
ANALYSIS_FPS = 4.0  # frames per second sampled from the clip


def analysis_frames(view: ClipView) -> np.ndarray:
    """The shared ``(T, H, W, 3)`` uint8 RGB analysis frames (W = ``ANALYSIS_WIDTH``)."""
    return view.frames(width=ANALYSIS_WIDTH, sample_fps=ANALYSIS_FPS, gray=False)


def to_gray(frames: np.ndarray, width: int) -> np.ndarray:
    """``(T, H, W, 3)`` RGB uint8 -> ``(T, h, width)`` gray uint8, aspect kept (area filter)."""
    t, h, w = frames.shape[:3]
    out_h = max(8, int(round(h * width / w)))
    out = np.empty((t, out_h, width), dtype=np.uint8)
    for i in range(t):
        g = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
        out[i] = (
            g
            if (out_h, width) == g.shape
            else cv2.resize(g, (width, out_h), interpolation=cv2.INTER_AREA)
        )
    return out


def flow_fields(gray: np.ndarray) -> np.ndarray:
    """Dense optical flow between consecutive frames.

    ``gray``: ``(T, H, W)`` uint8. Returns ``(T-1, H, W, 2)`` float32 displacements in
    pixels per frame interval (x to the right, y down); ``(0, H, W, 2)`` when T < 2.
    DIS (medium preset) is both faster and more accurate near the borders than Farneback
    at these sizes (a 160x90 pair takes about 0.5 ms).
    """
    t, h, w = gray.shape
    out = np.zeros((max(t - 1, 0), h, w, 2), dtype=np.float32)
    if t < 2:
        return out
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    for i in range(t - 1):
        out[i] = dis.calc(gray[i], gray[i + 1], None)
    return out


def motion_score_from_flow(flow: np.ndarray, fps: float) -> float:
    """Mean flow magnitude in frame widths per second. ``flow``: ``(N, H, W, 2)`` px/interval."""
    if flow.shape[0] == 0:
        return 0.0
    width = flow.shape[2]
    mag = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)  # (N, H, W) px per interval
    return float(mag.mean() * fps / width)


def camera_motion_stats(flow: np.ndarray, fps: float) -> dict[str, float]:
    """Global motion of a flow sequence, robust to a few bad pairs (median over pairs).

    Returns, per second and relative to the frame width:

    * ``dx``, ``dy``: image-content translation, the per-pair *median* of the flow (a
      static overlay or a moving foreground object does not drag it). Content moving right
      (dx > 0) is the camera panning *left*; content moving down (dy > 0) is it tilting *up*;
    * ``zoom``: least-squares isotropic scale rate of the flow about the frame centre
      (content expanding: > 0, zooming in), in relative size change per second;
    * ``moving_fraction``: fraction of pixels whose flow, after removing the global
      translation, exceeds 0.02 frame widths per second (independently moving things).
    """
    n, h, w = flow.shape[:3]
    if n == 0:
        return {"dx": 0.0, "dy": 0.0, "zoom": 0.0, "moving_fraction": 0.0}
    u, v = flow[..., 0], flow[..., 1]  # (N, H, W) px per interval
    # Ignore a border strip: content entering or leaving the frame has no valid match.
    m = max(1, int(round(0.08 * min(h, w))))
    u, v = u[:, m:-m, m:-m], v[:, m:-m, m:-m]
    ys, xs = np.mgrid[m : h - m, m : w - m].astype(np.float32)
    xs -= (w - 1) / 2.0
    ys -= (h - 1) / 2.0
    tu = np.median(u.reshape(n, -1), axis=1)  # (N,) px per interval
    tv = np.median(v.reshape(n, -1), axis=1)
    # Scale s minimising |(u - tu, v - tv) - s * (x, y)|^2 per pair.
    r2 = float((xs**2 + ys**2).sum())
    s = ((u - tu[:, None, None]) * xs + (v - tv[:, None, None]) * ys).sum(axis=(1, 2)) / r2
    resid = np.sqrt((u - tu[:, None, None] - s[:, None, None] * xs) ** 2
                    + (v - tv[:, None, None] - s[:, None, None] * ys) ** 2)  # fmt: skip
    moving = (resid * fps / w > 0.02).mean(axis=(1, 2))
    return {
        "dx": float(np.median(tu) * fps / w),
        "dy": float(np.median(tv) * fps / w),
        "zoom": float(np.median(s) * fps),
        "moving_fraction": float(np.median(moving)),
    }


def clip_flow(view: ClipView, flow_width: int = 160) -> np.ndarray:
    """Optical flow of the clip's analysis frames at ``flow_width``: ``(N, H, W, 2)``."""
    # Memoised on the view: the captioner reads the same flow field.
    return view.memo(
        ("flow", flow_width), lambda: flow_fields(to_gray(analysis_frames(view), flow_width))
    )


def run(
    clip: Clip,
    view: ClipView,
    *,
    min_score: float = 0.004,  # frame widths per second; a pan crossing the frame in 250 s
    flow_width: int = 160,  # px; flow is computed on gray frames this wide
) -> Clip:
    """Score the clip's motion and reject it when ``motion_score < min_score``."""
    flow = clip_flow(view, flow_width)
    clip.motion_score = motion_score_from_flow(flow, ANALYSIS_FPS)
    if clip.motion_score < min_score:
        clip.reject(STAGE)
    return clip
