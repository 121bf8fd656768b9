"""``worldmill rollouts ENV --episodes N --steps T --out DIR [--policy sticky|random]
[--actions distinct|all] [--min-repeat A] [--max-repeat B] [--frame-skip K] [--seed S]
[--size 64] [--crf 10]``.

Exit codes: 0 done; 2 bad arguments (an unknown ENV lists the valid names; a bad value names
its key), nothing written; 1 the simulator cannot be imported or started (the message names
the missing package).
"""

from __future__ import annotations

import argparse
import sys

from worldmill.config import ConfigError, load_config
from worldmill.rollouts.policies import MAX_REPEAT, MIN_REPEAT, POLICIES
from worldmill.rollouts.record import RolloutsConfig, rollouts
from worldmill.rollouts.registry import ENVS, SimulatorUnavailable, UnknownEnv, check_name


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="worldmill rollouts",
        description="Roll out a policy in a real simulator: one mp4 per episode plus per-frame "
        "actions, rewards and done flags (.npy), and DIR/manifest.json.",
    )
    envs = "; ".join(f"{k}: {v.description}" for k, v in ENVS.items())
    p.add_argument("env", help=f"simulator ({envs})")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--steps", type=int, default=200, help="actions per episode (max)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--policy", default="sticky", help=f"{' | '.join(POLICIES)} (default sticky)")
    p.add_argument(
        "--actions", default="distinct",
        help="distinct (default: the env's actions with distinct effects; CoinRun: 6 of 15) | all",
    )  # fmt: skip
    p.add_argument("--min-repeat", type=int, default=MIN_REPEAT, help="sticky: shortest hold")
    p.add_argument("--max-repeat", type=int, default=MAX_REPEAT, help="sticky: longest hold")
    p.add_argument(
        "--frame-skip", type=int, default=None,
        help="simulator steps per recorded frame, under its action (default: the env's; "
        "CoinRun 3, others 1); holds count frames",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="square frame side in pixels")
    p.add_argument("--crf", type=int, default=10, help="libx264 crf (0 = lossless)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    fields = {k: getattr(args, k) for k in RolloutsConfig.model_fields}
    try:
        check_name(args.env)
        cfg = load_config(RolloutsConfig, None, None, **fields)
    except (UnknownEnv, ConfigError) as e:
        print(f"worldmill rollouts: {e}", file=sys.stderr)
        return 2
    try:
        m = rollouts(cfg)
    except SimulatorUnavailable as e:
        print(f"worldmill rollouts: {e}", file=sys.stderr)
        return 1
    t = m["timing"]
    fps = m["n_frames"] / max(t["simulate_s"], 1e-9)
    print(
        f"{cfg.env}: {m['n_episodes']} episodes, {m['n_frames']} frames -> {cfg.out} "
        f"(simulate {t['simulate_s']:.1f} s = {fps:.0f} frames/s, encode {t['encode_s']:.1f} s)"
    )
    return 0
