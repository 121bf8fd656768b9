"""Action policies for rollouts: ``sticky`` (default) and ``random``.

* ``random``: every step an independent uniform action (discrete: uniform over the
  policy's actions; continuous: uniform in the box).
* ``sticky``: a uniform action held for a uniform number of steps in
  ``[min_repeat, max_repeat]``, then a new one. Held actions make each action's effect
  visible over several frames (what a latent action model needs to tell actions apart), and
  uniform choice means every action is seen.

Discrete policies draw from ``actions`` when given (an env's actions with distinct effects,
``Env.distinct_actions``: CoinRun's 6 of procgen's 15 combos), else from all ``n``.

A policy is a pure function of its generator: same seed, same actions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from worldmill.rollouts.registry import ActionSpace

POLICIES = ("sticky", "random")
# sticky: shortest and longest hold in steps. 4-16 (mean 10, up to 1 s at 15 fps) rather
# than 1-8: CoinRun's ground speed follows the stick with a time constant of ~5 steps
# (mixrate 0.2) and a jump lasts ~15, so a short hold is mostly spent undoing the last one's
# momentum and a frame pair says little about the action taken (bench/RESULTS.md, genie3).
MIN_REPEAT, MAX_REPEAT = 4, 16


def _uniform(space: ActionSpace, rng: np.random.Generator, actions: Sequence[int] | None) -> Any:
    if space.kind == "discrete":
        if actions is not None:
            return int(actions[int(rng.integers(len(actions)))])
        return int(rng.integers(space.n))
    return rng.uniform(space.low, space.high).astype(np.float32)


def make_policy(
    kind: str,
    space: ActionSpace,
    rng: np.random.Generator,
    max_repeat: int = MAX_REPEAT,
    min_repeat: int = MIN_REPEAT,
    actions: Sequence[int] | None = None,
) -> Callable[[], Any]:
    """A zero-argument callable returning the next action (int, or float32 ``(D,)``);
    discrete actions are drawn from ``actions`` (ids in ``[0, n)``) when given."""
    if actions is not None and not all(0 <= a < space.n for a in actions):
        raise ValueError(f"actions {list(actions)} are not all in [0, {space.n})")
    if kind == "random":
        return lambda: _uniform(space, rng, actions)
    if kind != "sticky":
        raise ValueError(f"unknown policy {kind!r}; valid: {', '.join(POLICIES)}")
    if not 1 <= min_repeat <= max_repeat:
        raise ValueError(f"need 1 <= min_repeat ({min_repeat}) <= max_repeat ({max_repeat})")
    state = {"left": 0, "action": None}

    def sticky() -> Any:
        if state["left"] == 0:
            state["action"] = _uniform(space, rng, actions)
            state["left"] = int(rng.integers(min_repeat, max_repeat + 1))
        state["left"] -= 1
        return state["action"]

    return sticky
