"""Stage ``limits``: duration and resolution limits (no decoding: metadata only).

Rejects with reason ``duration`` when the clip is shorter than ``min_s`` or longer than
``max_s`` seconds, and ``resolution`` when the *source* frame is smaller than
``min_width`` x ``min_height``. The source size is ``clip.extra["source_width"]`` /
``["source_height"]`` when the splitter recorded them (the transcoded clip is scaled to a
fixed height, so its own size says nothing about the source), else the clip's own size,
else the view's. Portrait sources are compared with the limits swapped (a 720x1280 phone
video passes a 1280x720 limit): ``min_width`` applies to the longer side, ``min_height``
to the shorter. A limit of 0 is off; an unknown size (0) is never rejected.
"""

from __future__ import annotations

from worldmill.media import ClipView
from worldmill.records import Clip

DURATION, RESOLUTION = "duration", "resolution"


def source_size(clip: Clip, view: ClipView | None = None) -> tuple[int, int]:
    """``(width, height)`` of the source frame in pixels; ``(0, 0)`` when unknown."""
    w = int(clip.extra.get("source_width", 0) or 0)
    h = int(clip.extra.get("source_height", 0) or 0)
    if w <= 0 or h <= 0:
        w, h = clip.width, clip.height
    if (w <= 0 or h <= 0) and view is not None:
        w, h = view.width, view.height
    return (w, h) if w > 0 and h > 0 else (0, 0)


def run(
    clip: Clip,
    view: ClipView,
    *,
    min_s: float = 2.0,  # seconds; matches split.min_clip_s
    max_s: float = 120.0,  # seconds; 0 = no upper limit (split.max_clip_s already cuts at 60)
    min_width: int = 256,  # px of the source's longer side; 0 = off
    min_height: int = 144,  # px of the source's shorter side; 0 = off
) -> Clip:
    """Reject by duration, then by source resolution. Records ``extra["source_width"]`` /
    ``["source_height"]`` (the size it judged) when they were not there."""
    dur = clip.duration_s
    if dur < min_s or (max_s > 0 and dur > max_s):
        clip.reject(DURATION)
    w, h = source_size(clip, view)
    if w and h:
        clip.extra.setdefault("source_width", w)
        clip.extra.setdefault("source_height", h)
        long_side, short_side = max(w, h), min(w, h)
        if long_side < min_width or short_side < min_height:
            clip.reject(RESOLUTION)
    return clip
