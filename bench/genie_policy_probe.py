"""How readable is the CoinRun action from the frames, per rollout policy? (no training)

    .venv/bin/python bench/genie_policy_probe.py [--episodes 48] [--steps 300] [--only TEXT]

For each policy (which actions, how long a sticky hold lasts, how many simulator steps a
recorded frame spans: ``--frame-skip``) it plays the episodes
``bench/genie.py`` records (``worldmill rollouts coinrun``, seed 0; frames kept in memory,
no mp4), measures hand-made motion features per transition t -> t+1 -- the global shift
(phase correlation: CoinRun's camera follows the agent, so the agent's motion is a scroll
of the frame) of x_{t-1} -> x_t and x_t -> x_{t+1}, and how much the agent's sprite at the
centre changes -- and fits the Genie action probe's classifier (standardised multinomial
logistic regression, as ``worldmill.genie.metrics.action_probe``) plus gradient boosting
from them to the true action on the first 70 % of episodes, scored on the rest against the
same chance (majority class of the held-out actions). A perfect motion reader's accuracy
bounds what a latent action model's probe can reach on the same data.
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from worldmill.rollouts.record import RolloutsConfig, episode_seeds, run_episode
from worldmill.rollouts.registry import make_env

POLICIES = {  # name -> (actions, min_repeat, max_repeat, frame_skip); holds in agent steps
    "all 15, hold 1-8 (round 1-2)": ("all", 1, 8, 1),
    "distinct 6, hold 1-8": ("distinct", 1, 8, 1),
    "distinct 6, hold 4-16 (round 3)": ("distinct", 4, 16, 1),
    "distinct 6, hold 8-24": ("distinct", 8, 24, 1),
    "distinct 6, hold 4-16, skip 2": ("distinct", 4, 16, 2),
    "distinct 6, hold 4-16, skip 3 (default since round 4)": ("distinct", 4, 16, 3),
    "distinct 6, hold 4-16, skip 4": ("distinct", 4, 16, 4),
    "distinct 6, hold 2-8, skip 3": ("distinct", 2, 8, 3),
    "distinct 6, hold 8-24, skip 3": ("distinct", 8, 24, 3),
}


def _shift(a: np.ndarray, b: np.ndarray, win: np.ndarray) -> list[float]:
    """(dx, dy, peak response) of the global shift a -> b (grayscale float32)."""
    (dx, dy), resp = cv2.phaseCorrelate(a, b, win)
    return [dx, dy, resp]


def features(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 -> ``(T - 2, F)``: one row per transition t -> t+1, t >= 1."""
    g = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in frames]
    h, w = g[0].shape
    win = cv2.createHanningWindow((w, h), cv2.CV_32F)
    c = slice(h // 2 - h // 8, h // 2 + h // 8)  # the agent: the camera's centre
    sh = [_shift(g[t], g[t + 1], win) for t in range(len(g) - 1)]
    centre = [float(np.abs(g[t + 1][c, c] - g[t][c, c]).mean()) for t in range(len(g) - 1)]
    rows = [sh[t - 1] + sh[t] + [centre[t - 1], centre[t]] for t in range(1, len(g) - 1)]
    return np.asarray(rows, np.float32)


def probe(policy: tuple[str, int, int, int], episodes: int, steps: int) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    which, lo, hi, skip = policy
    cfg = RolloutsConfig(
        env="coinrun", episodes=episodes, steps=steps, actions=which, min_repeat=lo,
        max_repeat=hi, frame_skip=skip,
    )  # fmt: skip
    env = make_env("coinrun", 64)
    xs, ys, frames = [], [], 0
    try:
        for i in range(episodes):
            ep = run_episode(env, cfg, *episode_seeds(cfg.seed, i))
            f = np.stack(ep.frames)
            frames += len(f)
            xs.append(features(f) if len(f) > 2 else np.zeros((0, 8), np.float32))
            ys.append(np.asarray(ep.actions[1 : len(f) - 1]))
    finally:
        env.close()
    n_tr = int(0.7 * episodes)
    xtr, ytr = np.concatenate(xs[:n_tr]), np.concatenate(ys[:n_tr])
    xte, yte = np.concatenate(xs[n_tr:]), np.concatenate(ys[n_tr:])
    logit = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(xtr, ytr)
    gbm = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(xtr, ytr)
    _, counts = np.unique(yte, return_counts=True)
    return {
        "frames": frames,
        "train": len(ytr),
        "test": len(yte),
        "chance": round(float(counts.max() / counts.sum()), 3),
        "logistic": round(float((logit.predict(xte) == yte).mean()), 3),
        "boosting": round(float((gbm.predict(xte) == yte).mean()), 3),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=48)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--only", default="", help="run the policies whose name contains this")
    a = ap.parse_args(argv)
    res = {}
    for name, pol in POLICIES.items():
        if a.only not in name:
            continue
        res[name] = probe(pol, a.episodes, a.steps)
        print(name, json.dumps(res[name]), flush=True)
    return res


if __name__ == "__main__":
    main()
