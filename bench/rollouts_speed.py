"""Rollout speed per env: frames per second simulating (policy + simulator + rendering) and
encoding (ffmpeg libx264), on this machine, one process.

    .venv/bin/python bench/rollouts_speed.py [--envs coinrun pong breakout arm]
        [--episodes 4 --steps 200 --size 64 --policy sticky]

Runs ``worldmill.rollouts.rollouts`` into a temporary folder per env and prints one JSON
line per env: frames, simulate/encode seconds and frames/s, and CPU seconds of this process
and its ffmpeg children (the fairer figure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

from worldmill.rollouts import ENVS, RolloutsConfig, rollouts


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", nargs="+", default=sorted(ENVS))
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--policy", default="sticky")
    args = p.parse_args()
    for env in args.envs:
        with tempfile.TemporaryDirectory() as d:
            cfg = RolloutsConfig(
                env=env, episodes=args.episodes, steps=args.steps, out=d,
                policy=args.policy, size=args.size,
            )  # fmt: skip
            cpu0, t0 = _cpu(), time.perf_counter()
            m = rollouts(cfg)
            wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        t, n = m["timing"], m["n_frames"]
        row = {
            "env": env,
            "episodes": m["n_episodes"],
            "frames": n,
            "size": args.size,
            "simulate_s": round(t["simulate_s"], 2),
            "simulate_fps": round(n / t["simulate_s"], 1),
            "encode_s": round(t["encode_s"], 2),
            "encode_fps": round(n / t["encode_s"], 1),
            "total_fps": round(n / wall, 1),
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "frames_per_cpu_s": round(n / cpu, 1),  # simulate + encode, per core-second
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
