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

The contract the runner enforces (as NeMo Curator's ProcessingStage does):

* ``params`` are checked against the signatures when stages load: a key that neither
  ``run`` nor ``setup`` accepts, or a required argument left out, is a
  :class:`~worldmill.config.ConfigError` naming ``stages.<name>.params.<key>`` (the CLI
  exits 2 before any work). Each function receives only the params it names (all of them
  if it takes ``**params``).
* Optional ``setup(**params) -> state``: called **once per worker process** (per module
  and params; e.g. load a model), and its return value is passed to ``run``/``run_batch``
  as the keyword ``state``, which they must then accept. A failing setup fails every clip
  of the stage with the error, and is tried again for the next video.
* Optional ``run_batch(clips, views, **params) -> list[Clip]``: when defined it replaces
  ``run``, called once with every transcoded clip of a video (batched inference). An
  exception or a wrong-length result is recorded on each clip of the batch.
* Values a stage writes into ``clip.extra`` are coerced to JSON types after the stage
  (``np.float32`` -> float, ``np.int64`` -> int, ``np.bool_`` -> bool, arrays -> lists);
  a value with no JSON form is dropped and recorded in ``clip.errors[name]``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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

# setup() results, once per worker process: (module, params as JSON) -> state.
_STATE: dict[tuple[str, str], Any] = {}
_STATE_LOCK = threading.Lock()  # thread workers share the process: set up only once


def to_json_value(v: Any) -> Any:
    """``v`` with numpy scalars/arrays (also inside lists and dicts) turned into Python
    JSON types. Raises TypeError for a value with no JSON form."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, list | tuple):
        return [to_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): to_json_value(x) for k, x in v.items()}
    raise TypeError(f"{type(v).__name__} is not a JSON value")


def coerce_clip(clip: Clip, stage: str) -> Clip:
    """Coerce what a stage wrote (``extra`` values, score fields) to JSON types in place;
    a value with no JSON form is dropped and recorded as an error of ``stage``."""
    for k in list(clip.extra):
        try:
            clip.extra[k] = to_json_value(clip.extra[k])
        except TypeError as e:
            del clip.extra[k]
            clip.error(stage, f"extra[{k!r}]: {e}")
    for name in ("motion_score", "quality_score", "text_score", "fps"):
        v = getattr(clip, name)
        if isinstance(v, np.generic):
            setattr(clip, name, v.item())
    for name in ("embedding", "visual_embedding"):
        v = getattr(clip, name)
        if v is not None and not isinstance(v, list):
            setattr(clip, name, np.asarray(v, dtype=np.float32).tolist())
    return clip


def _accepts(fn: Callable) -> tuple[set[str], set[str], bool]:
    """(keyword names, required keyword names, takes **kwargs) of fn beyond its first two
    positional arguments (clip, view / clips, views)."""
    sig = inspect.signature(fn)
    names, required, var_kw = set(), set(), False
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    skip = {p.name for p in positional[:2]}
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is p.VAR_POSITIONAL or p.name in skip:
            continue
        else:
            names.add(p.name)
            if p.default is p.empty:
                required.add(p.name)
    return names, required, var_kw


def _accepts_setup(fn: Callable) -> tuple[set[str], set[str], bool]:
    sig = inspect.signature(fn)
    names, required, var_kw = set(), set(), False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is not p.VAR_POSITIONAL:
            names.add(p.name)
            if p.default is p.empty:
                required.add(p.name)
    return names, required, var_kw


def _pick(params: dict, names: set[str], var_kw: bool) -> dict:
    return dict(params) if var_kw else {k: v for k, v in params.items() if k in names}


@dataclass
class Stage:
    name: str
    fn: StageFn | None  # run(clip, view, **params); None when only run_batch is defined
    params: dict
    batch_fn: Callable[..., list[Clip]] | None = None  # run_batch(clips, views, **params)
    setup_fn: Callable[..., Any] | None = None  # setup(**params) -> state, once per process
    module: str = ""
    run_params: dict | None = None  # the params run/run_batch receive; None = all params
    setup_params: dict = field(default_factory=dict)  # the params setup receives

    def __post_init__(self):
        if self.run_params is None:
            self.run_params = dict(self.params)

    @property
    def batched(self) -> bool:
        return self.batch_fn is not None

    def state(self) -> Any:
        """setup()'s result, computed once per worker process (raises what setup raised)."""
        key = (self.module or self.name, json.dumps(self.setup_params, sort_keys=True, default=str))
        if key in _STATE:
            return _STATE[key]
        with _STATE_LOCK:
            if key not in _STATE:
                _STATE[key] = self.setup_fn(**self.setup_params)  # type: ignore[misc]
        return _STATE[key]

    def _kwargs(self) -> dict:
        kw = dict(self.run_params)
        if self.setup_fn is not None:
            kw["state"] = self.state()
        return kw

    def _fail(self, clip: Clip, e: Exception) -> None:
        msg = f"{type(e).__name__}: {e}"
        log.warning("stage %s failed on %s: %s", self.name, clip.clip_id, msg)
        log.debug("%s", traceback.format_exc())
        clip.error(self.name, msg)

    @staticmethod
    def _timed(clip: Clip, seconds: float) -> None:
        prev = clip.extra.get("stage_seconds", 0.0)
        prev = float(prev) if isinstance(prev, int | float) and math.isfinite(prev) else 0.0
        clip.extra["stage_seconds"] = prev + seconds

    def __call__(self, clip: Clip, view: ClipView) -> Clip:
        if self.batched:
            return self.run_batch([clip], [view])[0]
        t0 = time.perf_counter()
        try:
            out = self.fn(clip, view, **self._kwargs())  # type: ignore[misc]
            clip = out if isinstance(out, Clip) else clip
        except Exception as e:  # a bad clip is data, not a crash
            self._fail(clip, e)
        coerce_clip(clip, self.name)
        self._timed(clip, time.perf_counter() - t0)
        return clip

    def run_batch(self, clips: list[Clip], views: list[ClipView]) -> list[Clip]:
        """Run the stage on a batch: its ``run_batch`` once, or ``run`` per clip."""
        if not self.batched:
            return [self(c, v) for c, v in zip(clips, views, strict=True)]
        if not clips:
            return clips
        t0 = time.perf_counter()
        try:
            out = self.batch_fn(list(clips), list(views), **self._kwargs())  # type: ignore[misc]
            out = list(out) if out is not None else list(clips)
            if len(out) != len(clips) or not all(isinstance(c, Clip) for c in out):
                raise ValueError(f"run_batch returned {len(out)} items for {len(clips)} clips")
            clips = out
        except Exception as e:  # every clip of the batch records it, none crashes the run
            for c in clips:
                self._fail(c, e)
        dt = (time.perf_counter() - t0) / len(clips)
        for c in clips:
            coerce_clip(c, self.name)
            self._timed(c, dt)
        return clips


def load_stage(spec: StageSpec) -> Stage:
    """Resolve a StageSpec to a Stage; a missing module or ``run``, or a ``params`` key the
    stage's functions do not accept, is a ConfigError naming it."""
    module_name = spec.module or BUILTIN.get(spec.name) or f"worldmill.tasks.{spec.name}"
    try:
        mod = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"stage {spec.name!r}: cannot import module {module_name!r}: {e}") from e
    fn = getattr(mod, "run", None)
    batch_fn = getattr(mod, "run_batch", None)
    setup_fn = getattr(mod, "setup", None)
    fn = fn if callable(fn) else None
    batch_fn = batch_fn if callable(batch_fn) else None
    setup_fn = setup_fn if callable(setup_fn) else None
    if fn is None and batch_fn is None:
        raise ConfigError(
            f"stage {spec.name!r}: module {module_name!r} defines no run(clip, view, **params)"
        )
    main = batch_fn or fn
    params = dict(spec.params)
    names, required, var_kw = _accepts(main)
    s_names, s_required, s_var_kw = _accepts_setup(setup_fn) if setup_fn else (set(), set(), False)
    where = f"stages.{spec.name}.params"
    if setup_fn is not None:
        if "state" not in names and not var_kw:
            raise ConfigError(
                f"stage {spec.name!r}: {module_name}.{main.__name__} must accept `state` "
                "(the value setup() returns)"
            )
        names.discard("state")
        required.discard("state")
        if "state" in params:
            raise ConfigError(f"{where}.state: reserved for setup()'s result")
    for key in params:
        if key not in names and key not in s_names and not var_kw and not s_var_kw:
            known = ", ".join(sorted(names | s_names)) or "none"
            raise ConfigError(
                f"{where}.{key}: unknown parameter of stage {spec.name!r} "
                f"({module_name}.{main.__name__} accepts: {known})"
            )
    for key in sorted((required | s_required) - set(params)):
        raise ConfigError(f"{where}.{key}: required by stage {spec.name!r} but not given")
    run_params = _pick(params, names, var_kw)
    setup_params = _pick(params, s_names, s_var_kw)
    if var_kw and not s_var_kw:  # **params in run: setup's own keys are not for run
        run_params = {k: v for k, v in run_params.items() if k not in s_names or k in names}
    return Stage(
        spec.name,
        fn,
        params,
        batch_fn=batch_fn,
        setup_fn=setup_fn,
        module=module_name,
        run_params=run_params,
        setup_params=setup_params,
    )


def load_stages(specs: list[StageSpec]) -> list[Stage]:
    return [load_stage(s) for s in specs if s.enabled]


def run_stages(clip: Clip, view: ClipView, stages: list[Stage]) -> Clip:
    """Run every stage on the clip, even after a rejection: the cheap filters score
    rejected clips too (the report's histograms show them against each threshold). A costly
    stage skips them itself (``only_kept`` of the text and caption stages)."""
    for stage in stages:
        clip = stage(clip, view)
    return clip


def run_stages_batch(
    clips: list[Clip], views: list[ClipView], stages: list[Stage], threads: int = 1
) -> list[Clip]:
    """Run every stage on the clips of one video, in stage order.

    Per-clip stages run clip by clip (one clip's decoded frames in memory at a time, or
    ``threads`` clips at once); a batched stage is a barrier that sees every clip at once.
    Each view's frame cache is dropped after the per-clip stages before a batch so memory
    stays bounded. Clips are independent, so the result does not depend on ``threads``
    (stages already run concurrently on different videos in thread workers).
    """
    clips = list(clips)
    i = 0
    while i < len(stages):
        if stages[i].batched:
            clips = stages[i].run_batch(clips, views)
            i += 1
            continue
        j = i
        while j < len(stages) and not stages[j].batched:
            j += 1

        def one(
            cv: tuple[Clip, ClipView], seg: list[Stage] = stages[i:j], last: bool = j >= len(stages)
        ) -> Clip:
            c = run_stages(cv[0], cv[1], seg)
            if not last:
                cv[1].clear()
            return c

        pairs = list(zip(clips, views, strict=True))
        if threads > 1 and len(pairs) > 1:
            with ThreadPoolExecutor(min(threads, len(pairs)), "stages") as pool:
                clips = list(pool.map(one, pairs))
        else:
            clips = [one(cv) for cv in pairs]
        i = j
    return clips
