"""A plug-in stage for tests: rejects the clip whose id ends with ``suffix`` (reason
``picky``), after reading frames at a size nobody handed the view (so it decodes)."""

from __future__ import annotations

from worldmill.media import ClipView
from worldmill.records import Clip


def run(clip: Clip, view: ClipView, *, suffix: str = "_0001") -> Clip:
    clip.extra["picky_frames"] = int(len(view.frames(width=48, sample_fps=2.0)))
    return clip.reject("picky") if clip.clip_id.endswith(suffix) else clip
