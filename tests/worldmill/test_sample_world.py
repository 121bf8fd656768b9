"""The world-model training corpus (``worldmill sample-data DIR --world``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worldmill.media import decode_frames
from worldmill.sample_world import MOTIONS, camera_path, generate_world
from worldmill.tasks.caption import classify_camera
from worldmill.tasks.filter_motion import camera_motion_stats, flow_fields

ANALYSIS_FPS = 4.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("world")
    return out, generate_world(out, seed=3, videos=6)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_video_per_motion_with_truth(corpus):
    out, doc = corpus
    assert json.loads((out / "world_truth.json").read_text()) == doc
    vids = doc["videos"]
    assert sorted(vids) == [f"world_{i:04d}.mp4" for i in range(6)]
    assert [v["motion"] for v in vids.values()] == list(MOTIONS)
    assert {v["content"] for v in vids.values()} & {"shapes"}  # every third is procedural
    for name, v in vids.items():
        assert 3.0 <= v["duration_s"] <= 5.0
        frames = decode_frames(str(out / name), width=320)
        assert frames.shape[1:] == (180, 320, 3)
        assert abs(len(frames) - round(v["duration_s"] * 24)) <= 1


def test_the_projects_flow_estimator_reads_the_named_motion(corpus):
    """What the captioner will write is what the truth says, for every motion."""
    out, doc = corpus
    for name, v in doc["videos"].items():
        frames = decode_frames(str(out / name), width=160, fps=ANALYSIS_FPS, gray=True)
        stats = camera_motion_stats(flow_fields(frames), ANALYSIS_FPS)
        motion, speed = classify_camera(stats)
        assert motion == v["motion"], (name, stats)
        assert speed > 0.03, (name, speed)  # far from static (0.01)


def test_same_seed_same_bytes_other_seed_other_content(corpus, tmp_path):
    out, doc = corpus
    again = generate_world(tmp_path / "a", seed=3, videos=2)
    assert again["videos"] == {k: doc["videos"][k] for k in again["videos"]}
    for name in again["videos"]:
        assert _digest(tmp_path / "a" / name) == _digest(out / name)
    other = generate_world(tmp_path / "b", seed=4, videos=2)
    assert _digest(tmp_path / "b" / "world_0000.mp4") != _digest(out / "world_0000.mp4")
    assert other["videos"]["world_0000.mp4"]["motion"] == "pan_left"


@pytest.mark.parametrize("motion", MOTIONS)
def test_camera_path_stays_inside_the_image(motion):
    rng = np.random.default_rng(0)
    for hw in [(400, 400), (400, 711), (400, 300)]:
        for _ in range(50):
            a, b, speed = camera_path(hw, motion, 5.0, rng)
            assert speed > 0
            for cx, cy, w in (a, b):
                h = w * 180 / 320
                assert w / 2 <= cx <= hw[1] - w / 2 + 1e-6
                assert h / 2 <= cy <= hw[0] - h / 2 + 1e-6


def test_cli_world_flag(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "worldmill.cli", "sample-data", str(tmp_path), "--world",
         "--videos", "0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "--videos" in r.stderr
