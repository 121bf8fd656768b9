"""Action-labelled data from real simulators: ``worldmill rollouts ENV ...``.

``registry`` lists the envs (``coinrun``, ``pong``, ``breakout``, ``arm``); one module per
simulator family (``procgen``, ``atari``, ``arm``); ``policies`` (sticky, random);
``record`` runs episodes and writes mp4 + ``.npy`` + ``manifest.json``; ``cli`` is the
command.
"""

from worldmill.rollouts.record import RolloutsConfig, rollouts
from worldmill.rollouts.registry import ENVS, SimulatorUnavailable, UnknownEnv, make_env

__all__ = ["ENVS", "RolloutsConfig", "SimulatorUnavailable", "UnknownEnv", "make_env", "rollouts"]
