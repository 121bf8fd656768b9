"""The interactive World API on a tiny trained genie (tokenizer DV, lam, dynamics):
the contract ``play`` builds on -- sizes, action range, sliding history, determinism for
(run, image, seed, actions) -- and ``worldmill.genie.tiny_runs``."""

from __future__ import annotations

import numpy as np
import pytest

from worldmill.genie import TINY_TOKENIZER, tiny_runs
from worldmill.genie.world import GenieWorld, find_run, fit_image, play_frames
from worldmill.training.registry import get_spec


@pytest.fixture(scope="module")
def genie(shards, tiny_run, tmp_path_factory):
    """``tiny_runs`` into a folder whose tokenizer and lam runs are the session's tiny
    ones (reused: only the dynamics run trains here); returns that folder."""
    assert tuple(get_spec("dynamics").tiny_upstream["tokenizer"]) == TINY_TOKENIZER
    out = tmp_path_factory.mktemp("genie")
    (out / "tokenizer").symlink_to(tiny_run("tokenizer", TINY_TOKENIZER))
    (out / "lam").symlink_to(tiny_run("lam"))
    dyn = tiny_runs(shards, out)
    assert dyn == out / "dynamics" and (dyn / "metrics.json").is_file()
    return out


def _image(h=45, w=80, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_world_contract(genie):
    world = GenieWorld.load(genie)  # the folder holding RUN/dynamics
    assert find_run(genie) == genie / "dynamics"
    assert world.num_actions == 8 and world.size == 32  # tiny lam: 8 codes at 32 px
    img = _image()
    first = world.reset(img, seed=0)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, fit_image(img, 32))
    max_t = world.dynamics.cfg.max_t
    for a in [0, 7, 3, 3, 1, 2, 5]:  # longer than the model's window: the history slides
        f = world.step(a)
        assert f.shape == (32, 32, 3) and f.dtype == np.uint8
    assert world._tokens.shape[1] == max_t - 1
    with pytest.raises(ValueError, match="action 8"):
        world.step(world.num_actions)
    with pytest.raises(RuntimeError, match="reset"):
        GenieWorld.load(genie / "dynamics").step(0)


def test_same_run_image_seed_actions_give_identical_frames(genie):
    img, acts = _image(70, 40, seed=1), [1, 2, 3, 0, 6]
    a = play_frames(genie, img, acts, seed=7)
    b = play_frames(GenieWorld.load(genie / "dynamics"), img, acts, seed=7)
    assert len(a) == len(acts) + 1
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = play_frames(genie, img, acts, seed=8)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))  # seed matters


def test_not_a_dynamics_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dynamics run"):
        GenieWorld.load(tmp_path)
