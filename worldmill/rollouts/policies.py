"""Action policies for rollouts: ``sticky`` (default) and ``random``.

* ``random``: every step an independent uniform action (discrete: uniform over ``n``;
  continuous: uniform in the box).
* ``sticky``: a uniform action held for a uniform number of steps in ``[1, max_repeat]``,
  then a new one. Held actions make each action's effect visible over several frames (what
  a latent action model needs to tell actions apart), and uniform choice means every action
  is seen.

A policy is a pure function of its generator: same seed, same actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from worldmill.rollouts.registry import ActionSpace

POLICIES = ("sticky", "random")
MAX_REPEAT = 8  # sticky: longest hold in steps


def _uniform(space: ActionSpace, rng: np.random.Generator) -> Any:
    if space.kind == "discrete":
        return int(rng.integers(space.n))
    return rng.uniform(space.low, space.high).astype(np.float32)


def make_policy(
    kind: str, space: ActionSpace, rng: np.random.Generator, max_repeat: int = MAX_REPEAT
) -> Callable[[], Any]:
    """A zero-argument callable returning the next action (int, or float32 ``(D,)``)."""
    if kind == "random":
        return lambda: _uniform(space, rng)
    if kind != "sticky":
        raise ValueError(f"unknown policy {kind!r}; valid: {', '.join(POLICIES)}")
    state = {"left": 0, "action": None}

    def sticky() -> Any:
        if state["left"] == 0:
            state["action"] = _uniform(space, rng)
            state["left"] = int(rng.integers(1, max_repeat + 1))
        state["left"] -= 1
        return state["action"]

    return sticky
