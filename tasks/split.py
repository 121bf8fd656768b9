"""The split stage: shot boundaries of a video and the clip-list policy.

:func:`split_video` (what the flow calls) detects the boundaries of one video with the
backend named by ``SplitConfig.method`` (:func:`detect_transitions`; the backends are in
:mod:`worldmill.tasks.split_backends`, the default ``worldmill`` detector in
:mod:`worldmill.tasks.shot_detect`) and turns them into candidate clips
(:func:`plan_clips`): clips of ``min_clip_s``..``max_clip_s`` seconds, with the span of a
gradual transition trimmed off both neighbours; ``fixed`` skips detection and cuts fixed
``fixed_stride_s`` windows. :func:`match_boundaries` scores detected against true
boundaries (tests and ``bench/cut_detection.py``).

Times are seconds from the start of the video; a gradual transition is reported at its
midpoint, with its extent kept in :class:`~worldmill.tasks.shot_detect.Transition`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from worldmill.config import SplitConfig
from worldmill.media import MediaError, ProbeInfo, probe
from worldmill.records import OK, Clip, Video, clip_id_for
from worldmill.tasks.shot_detect import Transition, analyse_frames
from worldmill.tasks.split_backends import BACKENDS

log = logging.getLogger(__name__)

TOO_SHORT = "too_short"


# --------------------------------------------------------------------------- detection


def detect_transitions(
    path: str, cfg: SplitConfig, info: ProbeInfo | None = None
) -> tuple[list[Transition], float]:
    """Shot boundaries of a local video with their extents, and the analysed duration in
    seconds. ``info`` (from the probe stage) saves a probe where a backend needs one.
    Raises MediaError for an unreadable file, RuntimeError for a backend that is not
    installed. ``method="fixed"`` returns no boundaries."""
    if cfg.method == "fixed":
        info = info or probe(path)
        return [], info.duration_s
    return BACKENDS[cfg.method](path, cfg, info)


def detect_boundaries(path: str, cfg: SplitConfig, info: ProbeInfo | None = None) -> list[float]:
    """Shot-boundary times in seconds (the midpoint for gradual transitions), ascending.
    Raises MediaError for an unreadable file."""
    return [t.time_s for t in detect_transitions(path, cfg, info)[0]]


# --------------------------------------------------------------------------- clip policy

GUARD_S = 2 / 24  # seconds trimmed beyond a gradual transition's span on each side


def plan_clips(
    boundaries: Sequence[float | Transition], duration_s: float, cfg: SplitConfig
) -> list[tuple[float, float, str]]:
    """Turn boundaries into candidate clips ``(start_s, end_s, reason)``.

    Every candidate is returned; ``reason`` is ``""`` for a usable clip and ``"too_short"``
    for a shot shorter than ``cfg.min_clip_s``. Shots longer than ``cfg.max_clip_s`` are
    split into equal pieces no longer than it. Plain floats are hard cuts; a
    :class:`Transition` with a span (dissolve, fade) is trimmed off both neighbours plus a
    two-frame guard. ``cfg.method == "fixed"`` ignores boundaries and cuts fixed
    ``cfg.fixed_stride_s`` windows (a last remainder shorter than ``min_clip_s`` is
    ``too_short``).
    """
    eps = 1e-6
    if duration_s <= 0:
        return []
    if cfg.method == "fixed":
        out = []
        step = cfg.fixed_stride_s
        start = 0.0
        while start < duration_s - eps:
            end = min(start + step, duration_s)
            out.append((start, end, "" if end - start >= cfg.min_clip_s - eps else TOO_SHORT))
            start = end
        return out
    trans = [
        b if isinstance(b, Transition) else Transition(float(b), float(b), float(b))
        for b in boundaries
    ]
    trans = [t for t in sorted(trans, key=lambda t: t.time_s) if 0 < t.time_s < duration_s]
    shots: list[tuple[float, float]] = []
    start = 0.0
    for t in trans:
        gradual = t.end_s > t.start_s
        end = max(start, t.start_s - GUARD_S) if gradual else t.time_s
        shots.append((start, end))
        start = min(duration_s, t.end_s + GUARD_S) if gradual else t.time_s
    shots.append((start, duration_s))
    out: list[tuple[float, float, str]] = []
    for s, e in shots:
        length = e - s
        if length < cfg.min_clip_s - eps:
            if length > eps:
                out.append((s, e, TOO_SHORT))
            continue
        k = max(1, int(np.ceil(length / cfg.max_clip_s - eps)))
        edges = np.linspace(s, e, k + 1)
        out.extend((float(a), float(b), "") for a, b in zip(edges[:-1], edges[1:], strict=True))
    return out


def split_video(
    video: Video, cfg: SplitConfig, frames: tuple[np.ndarray, float] | None = None
) -> list[Clip]:
    """Detect shots in ``video`` and return every candidate clip (too-short ones rejected
    with ``reject_reason="split"`` and ``extra["split_reason"]="too_short"``). An unreadable
    video is marked ``video.fail("split", message)`` and gives ``[]``; never raises for a bad
    file.

    ``frames``: ``(analysis frames (T, h, w, 3) uint8 RGB, fps)`` already decoded by the
    one-pass decoder (:mod:`worldmill.tasks.onepass`); the worldmill detector then runs on
    them instead of decoding the video itself."""
    if video.status != OK:
        return []
    if frames is not None:
        arr, fps = frames
        trans = analyse_frames(arr, fps, cfg.threshold)
        return _plan_video_clips(video, cfg, trans, len(arr) / fps)
    path = video.local_path or video.path
    info = None
    if video.fps > 0 and video.width > 0 and video.height > 0 and video.duration_s > 0:
        info = ProbeInfo(
            video.duration_s, video.width, video.height, video.fps, video.num_frames, video.codec
        )
    try:
        trans, duration = detect_transitions(path, cfg, info)
    except MediaError as e:
        video.fail("split", str(e))
        return []
    return _plan_video_clips(video, cfg, trans, duration)


def _plan_video_clips(
    video: Video, cfg: SplitConfig, trans: list[Transition], duration: float
) -> list[Clip]:
    if duration <= 0:
        video.fail("split", "video has no duration")
        return []
    if video.duration_s > 0:
        duration = min(duration, video.duration_s)
    else:
        video.duration_s = duration
    clips = []
    for i, (s, e, reason) in enumerate(plan_clips(trans, duration, cfg)):
        c = Clip(
            clip_id=clip_id_for(video.video_id, i),
            video_id=video.video_id,
            start_s=round(s, 4),
            end_s=round(e, 4),
            source_path=video.path,
        )
        c.extra["split_method"] = cfg.method
        if reason:
            c.extra["split_reason"] = reason
            c.reject("split")
        clips.append(c)
    return clips


# --------------------------------------------------------------------------- scoring


def match_boundaries(
    pred: Sequence[float], truth: Sequence[float], tol_s: float = 0.5
) -> list[tuple[int, int]]:
    """One-to-one matching of predicted to true boundary times (seconds) within ``tol_s``,
    closest pairs first. Returns ``(pred_index, truth_index)`` pairs; precision is
    ``len(pairs) / len(pred)``, recall ``len(pairs) / len(truth)``."""
    pairs = sorted(
        (abs(p - t), i, j)
        for i, p in enumerate(pred)
        for j, t in enumerate(truth)
        if abs(p - t) <= tol_s
    )
    used_p: set[int] = set()
    used_t: set[int] = set()
    out = []
    for _, i, j in pairs:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            out.append((i, j))
    return sorted(out)
