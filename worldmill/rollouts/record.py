"""Run episodes and write them: one mp4 per episode plus per-frame actions, rewards and
done flags, and ``DIR/manifest.json``.

Layout of ``DIR``::

    ep_000000.mp4           H.264 (libx264, crf 10 by default), one frame per agent step
                            (``frame_skip`` simulator steps: fps = the env's rate / frame_skip)
    ep_000000.actions.npy   (T,) int64 for discrete envs, (T, D) float32 for continuous
    ep_000000.rewards.npy   (T,) float32
    ep_000000.dones.npy     (T,) bool
    manifest.json           env, policy, seed, fps, action space, one entry per episode

Frame ``t`` is what the agent saw before taking ``actions[t]``; ``rewards[t]`` and
``dones[t]`` are that action's outcome. An episode ends after ``steps`` actions or at the
first done (then ``dones[-1]`` is true), so frames and actions always have the same length
and frame ``t`` of the mp4 pairs with row ``t`` of every ``.npy``.

Determinism: episode ``i`` of seed ``S`` uses ``SeedSequence([S, i])`` for both the
simulator's seed and the policy's generator, so the same ``(S, i)`` gives the same actions
and frames whatever the number of episodes; nothing in the manifest depends on the clock.
A re-run into the same DIR replaces the set: episode files an earlier manifest listed and
the new one does not are removed. ``<stem>.actions.npy`` is also the sidecar ``worldmill curate`` reads (tasks/actions.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from worldmill.config import StrictModel
from worldmill.media import ffmpeg_bin
from worldmill.rollouts.policies import MAX_REPEAT, MIN_REPEAT, make_policy
from worldmill.rollouts.registry import Env, make_env

MANIFEST = "manifest.json"


class RolloutsConfig(StrictModel):
    """Parameters of ``worldmill rollouts``."""

    env: str = "coinrun"  # a name from worldmill.rollouts.registry.ENVS
    episodes: int = Field(1, ge=1)
    steps: int = Field(200, ge=1)  # actions per episode (fewer when the episode ends)
    out: str = "rollouts"  # output folder
    policy: Literal["sticky", "random"] = "sticky"
    # discrete envs: draw from the env's actions with distinct effects (CoinRun: 6 of
    # procgen's 15 combos, the rest are duplicates or no-ops) or from all of them
    actions: Literal["distinct", "all"] = "distinct"
    min_repeat: int = Field(MIN_REPEAT, ge=1)  # sticky: shortest hold, steps
    max_repeat: int = Field(MAX_REPEAT, ge=1)  # sticky: longest hold, steps
    # simulator steps per recorded frame, all under the frame's action (Atari's frame skip /
    # action repeat); None = the env's default (CoinRun: FRAME_SKIP, the rest 1). Sticky
    # holds count recorded frames (agent steps), so a hold lasts repeat x frame_skip steps.
    frame_skip: int | None = Field(None, ge=1, le=16)
    seed: int = Field(0, ge=0)
    size: int = Field(64, ge=16, le=1024)  # frame side in pixels (square frames)
    crf: int = Field(10, ge=0, le=51)  # libx264 quality; 0 = lossless (in yuv420p)

    @model_validator(mode="after")
    def _repeats(self) -> RolloutsConfig:
        if self.min_repeat > self.max_repeat:
            raise ValueError(
                f"min_repeat ({self.min_repeat}) must be <= max_repeat ({self.max_repeat})"
            )
        return self


@dataclass
class Episode:
    frames: list[np.ndarray] = field(default_factory=list)  # (size, size, 3) uint8 each
    actions: list[Any] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    dones: list[bool] = field(default_factory=list)


def episode_seeds(seed: int, episode: int) -> tuple[int, np.random.Generator]:
    """(simulator seed, policy generator) of one episode: functions of (seed, episode)."""
    ss = np.random.SeedSequence([seed, episode])
    env_seed = int(ss.generate_state(1)[0] & 0x7FFFFFFF)
    return env_seed, np.random.default_rng(ss.spawn(1)[0])


def policy_actions(env: Env, which: str) -> tuple[int, ...] | None:
    """The discrete action ids a policy draws from (``which``: distinct | all); None = all."""
    return getattr(env, "distinct_actions", None) if which == "distinct" else None


def frame_skip(env: Env, cfg: RolloutsConfig) -> int:
    """Simulator steps per recorded frame: ``cfg.frame_skip``, else the env's default."""
    return cfg.frame_skip or getattr(env, "frame_skip", 1)


def run_episode(env: Env, cfg: RolloutsConfig, env_seed: int, rng) -> Episode:
    """Play one episode of at most ``cfg.steps`` actions (agent steps); each action is
    applied for ``frame_skip`` simulator steps, its rewards summed, and the episode ends
    at the first done inside them."""
    act = make_policy(
        cfg.policy, env.action_space, rng, cfg.max_repeat, cfg.min_repeat,
        policy_actions(env, cfg.actions),
    )  # fmt: skip
    skip = frame_skip(env, cfg)
    ep = Episode()
    frame = env.reset(env_seed)
    for _ in range(cfg.steps):
        a = act()
        ep.frames.append(frame)
        ep.actions.append(a)
        reward, done = 0.0, False
        for _ in range(skip):
            frame, r, done = env.step(a)
            reward += r
            if done:
                break
        ep.rewards.append(reward)
        ep.dones.append(done)
        if done:
            break
    return ep


def encode_mp4(frames: list[np.ndarray], path: Path, fps: float, crf: int) -> None:
    """H.264 mp4 of RGB frames through one ffmpeg rawvideo pipe (written to a temporary
    name and renamed, so a killed run never leaves a truncated mp4)."""
    h, w, _ = frames[0].shape
    part = path.with_name(path.name + ".part.mp4")
    cmd = [
        ffmpeg_bin(), "-v", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "pipe:0",
        "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-movflags", "+faststart", str(part),
    ]  # fmt: skip
    data = np.ascontiguousarray(np.stack(frames)).tobytes()
    r = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if r.returncode != 0:
        part.unlink(missing_ok=True)
        raise RuntimeError(
            f"ffmpeg failed on {path.name}: {r.stderr.decode(errors='replace')[-400:]}"
        )
    os.replace(part, path)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def write_episode(
    out: Path, name: str, ep: Episode, env: Env, crf: int, fps: float | None = None
) -> dict[str, Any]:
    """Write one episode's files (the mp4 at ``fps``, default ``env.fps``); returns its
    manifest entry."""
    space = env.action_space
    actions = np.asarray(ep.actions, dtype=space.dtype).reshape(len(ep.actions), *space.shape)
    encode_mp4(ep.frames, out / f"{name}.mp4", fps or env.fps, crf)
    _save_npy(out / f"{name}.actions.npy", actions)
    _save_npy(out / f"{name}.rewards.npy", np.asarray(ep.rewards, np.float32))
    _save_npy(out / f"{name}.dones.npy", np.asarray(ep.dones, bool))
    return {
        "name": name,
        "video": f"{name}.mp4",
        "actions": f"{name}.actions.npy",
        "rewards": f"{name}.rewards.npy",
        "dones": f"{name}.dones.npy",
        "num_frames": len(ep.frames),
        "return": float(np.sum(ep.rewards)),
        "done": bool(ep.dones and ep.dones[-1]),
    }


_FILES = ("video", "actions", "rewards", "dones")


def _previous_files(out: Path) -> set[str]:
    """Files listed by a manifest an earlier run left in ``out`` (only those are removed
    when this run does not rewrite them, so that curate never picks up a stale episode)."""
    try:
        old = json.loads((out / MANIFEST).read_text())
        return {str(e[k]) for e in old["episodes"] for k in _FILES if "/" not in str(e[k])}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def rollouts(cfg: RolloutsConfig) -> dict[str, Any]:
    """Run ``cfg.episodes`` episodes of ``cfg.env`` into ``cfg.out``. Returns the manifest
    plus ``timing`` (seconds simulating and encoding; not written to the manifest)."""
    out = Path(cfg.out)
    env = make_env(cfg.env, cfg.size)  # UnknownEnv / SimulatorUnavailable before any file
    skip = frame_skip(env, cfg)
    fps = env.fps / skip  # one frame per agent step: game time runs at the simulator's rate
    out.mkdir(parents=True, exist_ok=True)
    entries, sim_s, enc_s, frames = [], 0.0, 0.0, 0
    try:
        for i in range(cfg.episodes):
            env_seed, rng = episode_seeds(cfg.seed, i)
            t0 = time.perf_counter()
            ep = run_episode(env, cfg, env_seed, rng)
            t1 = time.perf_counter()
            entry = write_episode(out, f"ep_{i:06d}", ep, env, cfg.crf, fps)
            enc_s += time.perf_counter() - t1
            sim_s += t1 - t0
            frames += len(ep.frames)
            entries.append({**entry, "env_seed": env_seed})
    finally:
        env.close()
    manifest = {
        "version": 1,
        "env": cfg.env,
        "policy": cfg.policy,
        "policy_actions": (None if (a := policy_actions(env, cfg.actions)) is None else list(a)),
        "repeat": [cfg.min_repeat, cfg.max_repeat] if cfg.policy == "sticky" else None,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "size": cfg.size,
        "crf": cfg.crf,
        "fps": fps,
        "frame_skip": skip,  # simulator steps per frame (and per action), at env_fps
        "env_fps": env.fps,
        "action_space": env.action_space.to_json(),
        "alignment": "frame t is observed before actions[t]; rewards[t], dones[t] follow it",
        "n_episodes": len(entries),
        "n_frames": frames,
        "episodes": entries,
    }
    stale = _previous_files(out) - {e[k] for e in entries for k in _FILES}
    tmp = out / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    for name in stale:  # episodes of an earlier, longer run into DIR: not in this manifest
        (out / name).unlink(missing_ok=True)
    return {**manifest, "timing": {"simulate_s": sim_s, "encode_s": enc_s}}
