"""`worldmill rollouts` on the real simulators: deterministic per seed, actions with the
documented meaning, clear errors for a bad ENV name or a simulator that cannot start."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from worldmill.media import decode_frames, probe
from worldmill.rollouts import RolloutsConfig, SimulatorUnavailable, make_env, rollouts
from worldmill.rollouts.cli import main as rollouts_main
from worldmill.rollouts.policies import make_policy
from worldmill.rollouts.procgen import ACTION_NAMES, DISTINCT_ACTIONS
from worldmill.rollouts.record import episode_seeds, run_episode
from worldmill.rollouts.registry import ActionSpace

STEPS = 16


def _run(env: str, out: Path, seed: int, policy: str = "sticky") -> dict:
    return rollouts(
        RolloutsConfig(env=env, episodes=2, steps=STEPS, out=str(out), seed=seed, policy=policy)
    )


def _episode(d: Path, name: str) -> tuple[bytes, np.ndarray]:
    return (d / f"{name}.actions.npy").read_bytes(), decode_frames(str(d / f"{name}.mp4"), 64, 64)


@pytest.mark.parametrize("env", ["coinrun", "pong", "arm"])
def test_deterministic_per_seed(env, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    m = _run(env, a, seed=3)
    _run(env, b, seed=3)
    _run(env, c, seed=4)
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    for e in m["episodes"]:
        n = e["num_frames"]
        acts_a, frames_a = _episode(a, e["name"])
        acts_b, frames_b = _episode(b, e["name"])
        assert acts_a == acts_b, "same seed: byte-identical actions"
        assert np.array_equal(frames_a, frames_b), "same seed: identical decoded frames"
        for part in ("rewards", "dones"):
            assert (a / f"{e['name']}.{part}.npy").read_bytes() == (
                b / f"{e['name']}.{part}.npy"
            ).read_bytes()
        # One frame per action, one reward and done flag per action.
        acts = np.load(a / e["actions"])
        assert len(acts) == n == len(frames_a) == probe(str(a / e["video"])).num_frames
        assert len(np.load(a / e["rewards"])) == len(np.load(a / e["dones"])) == n
        assert frames_a.std() > 0, "frames show something"
    if env == "coinrun":  # the default draws from the 6 actions with distinct effects
        assert m["policy_actions"] == list(DISTINCT_ACTIONS)
        assert {int(x) for e in m["episodes"] for x in np.load(a / e["actions"])} <= set(
            DISTINCT_ACTIONS
        )
    acts_c, frames_c = _episode(c, "ep_000000")
    acts_a, frames_a = _episode(a, "ep_000000")
    assert acts_a != acts_c, "another seed: other actions"
    k = min(len(frames_a), len(frames_c))
    assert not np.array_equal(frames_a[:k], frames_c[:k]), "another seed: other frames"


def test_manifest_and_action_space(tmp_path):
    m = _run("arm", tmp_path, seed=0, policy="random")
    disk = json.loads((tmp_path / "manifest.json").read_text())
    assert disk["env"] == "arm" and disk["fps"] == 10.0 and disk["n_episodes"] == 2
    assert disk["action_space"]["kind"] == "continuous" and disk["action_space"]["shape"] == [7]
    acts = np.load(tmp_path / m["episodes"][0]["actions"])
    assert acts.dtype == np.float32 and acts.shape == (STEPS, 7)
    assert acts[:, :6].min() >= -1 and acts[:, 6].min() >= 0 and acts.max() <= 1
    # random: no two consecutive equal actions (continuous iid draws)
    assert not (acts[1:] == acts[:-1]).all(axis=1).any()


def test_arm_actions_move_the_end_effector():
    env = make_env("arm", 32)
    try:
        env.reset(0)
        c, robot = env._c, env._robot
        start = np.array(c.getLinkState(robot, 11)[4])
        for _ in range(5):
            env.step(np.array([1, 0, 0, 0, 0, 0, 1], np.float32))  # +x at full speed
        moved = np.array(c.getLinkState(robot, 11)[4]) - start
        for _ in range(5):
            env.step(np.array([0, 0, -1, 0, 0, 0, 1], np.float32))  # down
        down = np.array(c.getLinkState(robot, 11)[4]) - start - moved
    finally:
        env.close()
    assert 0.06 < moved[0] < 0.11 and abs(moved[1]) < 0.02, moved  # ~5 x 2 cm along +x
    assert -0.11 < down[2] < -0.06, down


def test_coinrun_and_atari_action_spaces():
    for name, n in [("coinrun", 15), ("breakout", 4), ("pong", 6)]:
        env = make_env(name, 64)
        try:
            assert env.action_space.kind == "discrete" and env.action_space.n == n
            f = env.reset(1)
            assert f.shape == (64, 64, 3) and f.dtype == np.uint8
        finally:
            env.close()


def test_sticky_policy_holds_and_covers_every_action():
    space = ActionSpace("discrete", n=15)
    sticky = make_policy("sticky", space, np.random.default_rng(0))
    acts = np.array([sticky() for _ in range(3000)])
    runs = np.diff(np.flatnonzero(np.diff(acts) != 0))
    assert set(acts.tolist()) == set(range(15)), "every action is seen"
    assert runs.min() >= 4 and 8.0 < runs.mean() < 14.0, "held for a uniform 4..16 steps"
    rand = make_policy("random", space, np.random.default_rng(0))
    iid = np.array([rand() for _ in range(3000)])
    assert abs((iid[1:] == iid[:-1]).mean() - 1 / 15) < 0.03, "random: iid"
    # a subset of actions, longer holds
    sub = (1, 7, 4)
    sticky = make_policy("sticky", space, np.random.default_rng(0), 16, 8, actions=sub)
    acts = np.array([sticky() for _ in range(3000)])
    assert set(acts.tolist()) == set(sub), "only (and every one of) the given actions"
    # a new hold may draw the same action again: runs are >= 8, a multiple of holds
    runs = np.diff(np.flatnonzero(np.diff(acts) != 0))
    assert runs.min() >= 8 and 12 * 1.2 < runs.mean() < 12 * 2.0, runs.mean()
    with pytest.raises(ValueError, match="not all in"):
        make_policy("sticky", space, np.random.default_rng(0), actions=(3, 15))


def test_coinrun_distinct_actions_are_the_only_distinct_ones():
    """From the same start, each of procgen's 15 ids plays the same frames as one of
    ``DISTINCT_ACTIONS`` (the level start has no crate, where ``down`` would matter), and
    the 6 distinct ones play 6 different frame sequences."""
    env = make_env("coinrun", 64)
    try:
        plays = {}
        for a in range(15):
            env.reset(5)
            plays[a] = np.stack([env.step(a)[0] for _ in range(12)])
    finally:
        env.close()
    distinct = {a: plays[a] for a in DISTINCT_ACTIONS}
    for a, f in plays.items():
        twins = [d for d, g in distinct.items() if np.array_equal(f, g)]
        assert len(twins) == 1, (ACTION_NAMES[a], [ACTION_NAMES[d] for d in twins])


def test_bad_env_name_lists_valid_names(tmp_path):
    r = run_cli("rollouts", "minecraft", "--out", str(tmp_path / "o"), timeout=120)
    assert r.returncode == 2
    assert "unknown env 'minecraft'" in r.stderr
    for name in ("arm", "breakout", "coinrun", "pong"):
        assert name in r.stderr
    assert not (tmp_path / "o").exists(), "nothing written"


def test_bad_value_names_the_key(tmp_path, capsys):
    assert rollouts_main(["pong", "--steps", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "steps" in err and "greater than or equal to 1" in err
    assert rollouts_main(["pong", "--policy", "greedy", "--out", str(tmp_path / "o")]) == 2
    assert "policy" in capsys.readouterr().err
    bad = ["pong", "--min-repeat", "9", "--max-repeat", "4", "--out", str(tmp_path / "o")]
    assert rollouts_main(bad) == 2
    assert "min_repeat" in capsys.readouterr().err
    assert rollouts_main(["pong", "--actions", "some", "--out", str(tmp_path / "o")]) == 2
    assert "actions" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "module", "package"),
    [
        ("arm", "pybullet", "pybullet"),
        ("pong", "ale_py", "ale-py"),
        ("coinrun", "procgen", "procgen-mirror"),
    ],
)
def test_simulator_that_cannot_import_names_the_package(
    env, module, package, tmp_path, monkeypatch, capsys
):
    # None in sys.modules makes `import <module>` raise ImportError, as when it is absent.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SimulatorUnavailable, match=f"needs the Python package '{package}"):
        make_env(env)
    assert rollouts_main([env, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert package in err and "bootstrap.sh" in err
    assert not (tmp_path / "o").exists()


def test_rerun_with_fewer_episodes_leaves_no_stale_episode(tmp_path):
    _run("pong", tmp_path, seed=0)  # 2 episodes
    rollouts(RolloutsConfig(env="pong", episodes=1, steps=4, out=str(tmp_path), seed=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ep_000000.actions.npy", "ep_000000.dones.npy", "ep_000000.mp4",
        "ep_000000.rewards.npy", "manifest.json",
    ]  # fmt: skip


def test_frame_skip_repeats_each_action_for_k_simulator_steps(tmp_path):
    """A recorded frame is every K-th simulator frame under its action held K steps, the
    mp4 plays at the env's rate / K, and the manifest says so; a bad K names the key."""
    m = rollouts(
        RolloutsConfig(env="coinrun", episodes=1, steps=STEPS, out=str(tmp_path), frame_skip=3)
    )
    assert (m["frame_skip"], m["fps"], m["env_fps"]) == (3, 5.0, 15.0)
    assert probe(str(tmp_path / "ep_000000.mp4")).fps == pytest.approx(5.0)
    acts = np.load(tmp_path / "ep_000000.actions.npy")
    cfg = RolloutsConfig(env="coinrun", steps=STEPS, frame_skip=3)
    env = make_env("coinrun", 64)
    try:
        ep = run_episode(env, cfg, *episode_seeds(0, 0))  # the recorded episode, in memory
        sim = [env.reset(m["episodes"][0]["env_seed"])]
        for a in acts:
            for _ in range(3):
                sim.append(env.step(int(a))[0])
    finally:
        env.close()
    assert np.array_equal(np.asarray(ep.actions), acts)
    assert np.array_equal(np.stack(ep.frames), np.stack(sim[: 3 * len(acts) : 3]))
    assert not np.array_equal(np.stack(ep.frames), np.stack(sim[: len(acts)])), "not K = 1"
    assert rollouts_main(["pong", "--frame-skip", "0", "--out", str(tmp_path / "o")]) == 2
