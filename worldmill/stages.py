"""Per-clip stage plug-ins.

A stage is one module that defines::

    def run(clip: Clip, view: ClipView, **params) -> Clip

It reads frames through ``view`` (decoded once, shared by all stages), writes its scores
onto the clip (``clip.motion_score`` or ``clip.extra["blur_score"]``) and calls
``clip.reject("<stage name>")`` to reject. It must not raise for a bad clip: the runner
turns an exception into ``clip.errors[name]`` and a rejection anyway, so one bad clip never
crashes a flow. Adding a stage is one module plus one line of config::

    stages:
      - {name: blur, module: my_filters.blur, params: {min_sharpness: 40}}
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from worldmill.config import ConfigError, StageSpec
from worldmill.media import ClipView
from worldmill.records import Clip

log = logging.getLogger(__name__)

StageFn = Callable[..., Clip]

# Built-in stage names -> module holding `run`.
BUILTIN = {
    "limits": "worldmill.tasks.filter_limits",
    "motion": "worldmill.tasks.filter_motion",
    "quality": "worldmill.tasks.filter_quality",
    "text": "worldmill.tasks.filter_text",
    "caption": "worldmill.tasks.caption",
    "visual_embed": "worldmill.tasks.embed",
}


@dataclass
class Stage:
    name: str
    fn: StageFn
    params: dict

    def __call__(self, clip: Clip, view: ClipView) -> Clip:
        t0 = time.perf_counter()
        try:
            out = self.fn(clip, view, **self.params)
            clip = out if isinstance(out, Clip) else clip
        except Exception as e:  # a bad clip is data, not a crash
            msg = f"{type(e).__name__}: {e}"
            log.warning("stage %s failed on %s: %s", self.name, clip.clip_id, msg)
            log.debug("%s", traceback.format_exc())
            clip.error(self.name, msg)
        clip.extra.setdefault("stage_seconds", 0.0)
        clip.extra["stage_seconds"] = float(clip.extra["stage_seconds"]) + time.perf_counter() - t0
        return clip


def load_stage(spec: StageSpec) -> Stage:
    """Resolve a StageSpec to a callable; a missing module or `run` is a ConfigError."""
    module_name = spec.module or BUILTIN.get(spec.name) or f"worldmill.tasks.{spec.name}"
    try:
        mod = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"stage {spec.name!r}: cannot import module {module_name!r}: {e}") from e
    fn = getattr(mod, "run", None)
    if not callable(fn):
        raise ConfigError(
            f"stage {spec.name!r}: module {module_name!r} defines no run(clip, view, **params)"
        )
    return Stage(spec.name, fn, dict(spec.params))


def load_stages(specs: list[StageSpec]) -> list[Stage]:
    return [load_stage(s) for s in specs if s.enabled]


def run_stages(clip: Clip, view: ClipView, stages: list[Stage]) -> Clip:
    """Run every stage on the clip, even after a rejection, so every clip gets all its
    scores (reports and threshold tuning need the scores of rejected clips too)."""
    for stage in stages:
        clip = stage(clip, view)
    return clip
