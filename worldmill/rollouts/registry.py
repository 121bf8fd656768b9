"""The simulators ``worldmill rollouts`` can drive, and the one interface they share.

Each env family lives in its own module (``procgen.py``, ``atari.py``, ``arm.py``) with a
``make(name, size, seed) -> Env`` that imports its simulator lazily, so that a missing
simulator only matters for the env that needs it. Two errors are meant for people:

* :class:`UnknownEnv` -- the name is not registered; the message lists the valid names;
* :class:`SimulatorUnavailable` -- the simulator cannot be imported or started; the message
  names the missing package and how to install it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

INSTALL_HINT = "bash scripts/bootstrap.sh installs every simulator"


class UnknownEnv(ValueError):
    """ENV is not one of the registered names."""


class SimulatorUnavailable(RuntimeError):
    """The simulator behind an env cannot be imported or started."""


@dataclass(frozen=True)
class ActionSpace:
    """``discrete``: actions are ints in ``[0, n)``; ``continuous``: float32 vectors in the
    box ``[low, high]`` (one value per entry of ``names``)."""

    kind: str  # "discrete" | "continuous"
    n: int = 0  # number of discrete actions
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    names: tuple[str, ...] = ()  # meaning of each action (discrete) or dimension (continuous)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one action: ``()`` for discrete, ``(D,)`` for continuous."""
        return () if self.kind == "discrete" else (len(self.low),)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int64 if self.kind == "discrete" else np.float32)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "shape": list(self.shape),
            "names": list(self.names),
        }
        if self.kind == "discrete":
            d["n"] = self.n
        else:
            d["low"], d["high"] = list(self.low), list(self.high)
        return d


class Env(Protocol):
    """One simulator instance; frames are ``(size, size, 3)`` uint8 RGB."""

    fps: float  # simulator steps per second; the mp4 plays fps / frame_skip (one frame per agent step)
    # optional ``frame_skip: int``: simulator steps per recorded frame by default (1 if absent)
    action_space: ActionSpace
    # discrete ids whose effects differ (what `--actions distinct` draws from); None = all
    distinct_actions: tuple[int, ...] | None

    def reset(self, seed: int) -> np.ndarray:
        """Start an episode that is a pure function of ``seed``; returns the first frame."""
        ...

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        """Apply one action: ``(next frame, reward, done)``. After ``done`` the episode is
        over and the returned frame belongs to no episode."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EnvEntry:
    name: str
    module: str  # worldmill.rollouts.<family>
    description: str
    packages: tuple[str, ...] = field(default=())  # pip packages (pinned in pyproject.toml)


ENVS: dict[str, EnvEntry] = {
    e.name: e
    for e in [
        EnvEntry("coinrun", "worldmill.rollouts.procgen", "procgen CoinRun (15 actions)", ("procgen-mirror", "gym3")),
        EnvEntry("pong", "worldmill.rollouts.atari", "Atari Pong via ale-py (6 actions)", ("ale-py", "gymnasium")),
        EnvEntry("breakout", "worldmill.rollouts.atari", "Atari Breakout via ale-py (4 actions)", ("ale-py", "gymnasium")),
        EnvEntry("arm", "worldmill.rollouts.arm", "pybullet Franka Panda, 7-D end-effector actions", ("pybullet",)),
    ]
}  # fmt: skip


def check_name(name: str) -> EnvEntry:
    """The registry entry of ``name``; :class:`UnknownEnv` listing the valid names else."""
    if name not in ENVS:
        valid = ", ".join(sorted(ENVS))
        raise UnknownEnv(f"unknown env {name!r}; valid names: {valid}")
    return ENVS[name]


def make_env(name: str, size: int = 64) -> Env:
    """Build the env ``name`` rendering ``size`` x ``size`` frames. Raises
    :class:`UnknownEnv` or :class:`SimulatorUnavailable` (never a bare ImportError)."""
    entry = check_name(name)
    module = importlib.import_module(entry.module)
    return module.make(name, size)


def missing(name: str, package: str, err: BaseException) -> SimulatorUnavailable:
    """The error for a simulator whose Python package cannot be imported."""
    return SimulatorUnavailable(
        f"env {name!r} needs the Python package {package!r}, which cannot be imported "
        f"({type(err).__name__}: {err}); {INSTALL_HINT}"
    )


def cannot_start(name: str, what: str, err: BaseException) -> SimulatorUnavailable:
    """The error for a simulator that imports but does not start."""
    return SimulatorUnavailable(
        f"env {name!r}: {what} failed to start ({type(err).__name__}: {err}); {INSTALL_HINT}"
    )
