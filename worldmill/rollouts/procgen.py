"""procgen CoinRun through procgen's own gym3 API (``ProcgenGym3Env``).

``procgen-mirror`` (a cp311 build of procgen 0.10.7) declares ``numpy<2`` and ``gym<1``; it is
installed ``--no-deps`` (see ``scripts/bootstrap.sh``) because its C library talks to Python
through cffi and works with the project's numpy 2. ``import procgen`` registers gym ids, so
the old ``gym`` package must import too; gym3 needs ``cffi`` and ``imageio``.

Each episode is one procgen level: ``start_level = seed``, ``num_levels = 1`` and
``rand_seed = seed``, so the level layout and the game's own randomness are functions of the
seed. The native observation is 64x64; other sizes are resized (INTER_AREA).
"""

from __future__ import annotations

import cv2
import numpy as np

from worldmill.rollouts.registry import ActionSpace, cannot_start, missing

# procgen's 15 combos (procgen/src/game.cpp: left/down/up/right combinations, then keys D,
# A, W, S, Q, E); in CoinRun only movement and jump (up) matter, the rest are no-ops.
ACTION_NAMES = (
    "left+down", "left", "left+up", "down", "noop", "up", "right+down", "right", "right+up",
    "d", "a", "w", "s", "q", "e",
)  # fmt: skip
# The combos with distinct effects in CoinRun (procgen/src/games/coinrun.cpp): x of the move
# (left / none / right) times jump or not. ``down`` only drops the agent through a crate
# (otherwise it is ``noop``, as ``left+down`` is ``left``), and the keys d..e do nothing, so
# a policy over all 15 takes a no-op 7 times in 15 and two ids for every other effect.
DISTINCT_ACTIONS = (1, 7, 5, 2, 8, 4)  # left, right, up (jump), left+up, right+up, noop
FPS = 15.0  # procgen's interactive rate (simulator steps per second)
# Simulator steps per recorded frame (action repeat, as Atari's frame skip 4): CoinRun's
# ground speed follows the stick with a time constant of ~5 steps, air control is weak and
# a jump lasts ~15 steps, so one 1/15 s transition mostly shows the previous actions'
# momentum. At 3 steps a frame a motion reader tells the 6 actions apart ~2.6x as often as
# the majority class, 2.1x at 1 (bench/genie_policy_probe.py, bench/RESULTS.md genie4).
FRAME_SKIP = 3
DISTRIBUTION_MODE = "hard"  # what Genie's CoinRun case study used


class CoinRun:
    """One CoinRun level per episode (see the module docstring for seeding)."""

    fps = FPS
    frame_skip = FRAME_SKIP  # the default of `worldmill rollouts coinrun --frame-skip`
    action_space = ActionSpace("discrete", n=len(ACTION_NAMES), names=ACTION_NAMES)
    distinct_actions = DISTINCT_ACTIONS  # what `--actions distinct` (the default) draws from

    def __init__(self, env_name: str, size: int, name: str):
        self.env_name, self.size, self.name = env_name, size, name
        self._env = None

    def _frame(self, obs: dict) -> np.ndarray:
        f = obs["rgb"][0]  # (64, 64, 3) uint8
        if f.shape[0] != self.size:
            f = cv2.resize(f, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(f)

    def reset(self, seed: int) -> np.ndarray:
        from procgen import ProcgenGym3Env

        self.close()
        level = int(seed) % (2**31 - 1)
        self._env = ProcgenGym3Env(
            num=1,
            env_name=self.env_name,
            start_level=level,
            num_levels=1,
            rand_seed=level,
            distribution_mode=DISTRIBUTION_MODE,
            num_threads=0,  # step in this thread: deterministic and no idle pool
        )
        _, obs, _ = self._env.observe()
        return self._frame(obs)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        self._env.act(np.array([int(action)], dtype=np.int32))
        rew, obs, first = self._env.observe()
        # `first` = a new episode began: the action ended this one (obs is the next level's).
        return self._frame(obs), float(rew[0]), bool(first[0])

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def make(name: str, size: int) -> CoinRun:
    try:
        import gym3  # noqa: F401
    except ImportError as e:
        raise missing(name, "gym3", e) from e
    try:
        import procgen  # noqa: F401
    except ImportError as e:
        mod = getattr(e, "name", None) or "procgen"
        raise missing(name, {"procgen": "procgen-mirror"}.get(mod, mod), e) from e
    env = CoinRun("coinrun", size, name)
    try:
        env.reset(0)
    except Exception as e:  # the C library failed to load or build an env
        raise cannot_start(name, "procgen", e) from e
    return env
