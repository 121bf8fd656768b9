"""Atari games through the Arcade Learning Environment (``ale-py`` ships the ROMs) and its
gymnasium ids (``ALE/Pong-v5``).

v5 defaults are kept: ``frameskip=4`` (so one frame per agent step, 15 frames/s of the 60 Hz
console) and sticky actions ``repeat_action_probability=0.25``, seeded by ``reset(seed)`` so
the episode stays a function of the seed. Frames are the 210x160 screen resized to
``size`` x ``size`` (aspect not kept, as in the usual 84x84 / 64x64 Atari preprocessing).
"""

from __future__ import annotations

import cv2
import numpy as np

from worldmill.rollouts.registry import ActionSpace, cannot_start, missing

GAMES = {"pong": "ALE/Pong-v5", "breakout": "ALE/Breakout-v5"}
FPS = 15.0  # 60 Hz / frameskip 4


class Atari:
    fps = FPS
    distinct_actions = None  # the minimal action set (full_action_space=False) is distinct

    def __init__(self, env, size: int):
        self._env, self.size = env, size
        names = tuple(s.lower() for s in env.unwrapped.get_action_meanings())
        self.action_space = ActionSpace("discrete", n=int(env.action_space.n), names=names)

    def _frame(self, obs: np.ndarray) -> np.ndarray:
        return cv2.resize(obs, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def reset(self, seed: int) -> np.ndarray:
        obs, _ = self._env.reset(seed=int(seed) % 2**31)
        return self._frame(obs)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        obs, rew, terminated, truncated, _ = self._env.step(int(action))
        return self._frame(obs), float(rew), bool(terminated or truncated)

    def close(self) -> None:
        self._env.close()


def make(name: str, size: int) -> Atari:
    try:
        import gymnasium
    except ImportError as e:
        raise missing(name, "gymnasium", e) from e
    try:
        import ale_py
    except ImportError as e:
        raise missing(name, "ale-py", e) from e
    try:
        gymnasium.register_envs(ale_py)
        env = gymnasium.make(GAMES[name], full_action_space=False)
    except Exception as e:  # ROM missing, ALE library failed to load
        raise cannot_start(name, "ale-py", e) from e
    return Atari(env, size)
