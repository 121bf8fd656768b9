"""Keep-best on real footage: a 720p shot and its degraded copy (854x480, re-encoded,
slightly cropped, made with real ffmpeg) go through the real curate flow in both ingest
orders and in separate runs. The original wins every time, except when the copy is already
in a shard (append-only): then the copy stays and the original is its recorded duplicate."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from worldmill.config import CurateConfig, StageSpec
from worldmill.media import ffmpeg_bin, probe
from worldmill.sample_shots import kenburns, load_photo
from worldmill.store import Store
from worldmill.synth import write_video


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_bin(), "-v", "error", "-y", "-nostdin", *args], check=True)


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> dict[str, Path]:
    """``{"original": 1280x720 mp4, "copy": 854x480 degraded copy}`` of one 3-s shot."""
    d = tmp_path_factory.mktemp("keep_best_src")
    img = load_photo("coffee", None)  # a corpus photo filmed by the virtual camera
    a, b = np.array([200.0, 200.0, 380.0]), np.array([330.0, 190.0, 300.0])  # (cx, cy, w)
    small = write_video(d / "shot.mp4", kenburns(img, 72, a, b), fps=24, crf=16)
    orig, copy = d / "original.mp4", d / "copy.mp4"
    enc = ["-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    _ffmpeg("-i", str(small), "-vf", "scale=1280:720:flags=lanczos", *enc, "-crf", "18", str(orig))
    crop = "crop=trunc(iw*0.96/2)*2:trunc(ih*0.96/2)*2,scale=854:480:flags=bicubic"
    _ffmpeg("-i", str(orig), "-vf", crop, *enc, "-crf", "30", str(copy))
    assert (probe(str(orig)).width, probe(str(copy)).width) == (1280, 854)
    return {"original": orig, "copy": copy}


def _run(raw: Path, out: Path) -> dict:
    from worldmill.flows.curate import curate

    cfg = CurateConfig(
        input=str(raw),
        out=str(out),
        stages=[StageSpec(name="limits")],  # keep-best is what is under test
        dask={"n_workers": 1, "processes": "no"},
    )
    return curate(cfg)


def _place(footage: dict[str, Path], raw: Path, names: dict[str, str]) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for role, name in names.items():
        (raw / name).write_bytes(footage[role].read_bytes())


def _clips_by_role(out: Path) -> dict[str, dict]:
    s = Store(out)
    role = {v["video_id"]: Path(v["path"]).stem.split("_")[-1] for v in s.video_rows()}
    clips = s.clip_rows()
    assert len(clips) == 2, [(c["clip_id"], c["start_s"], c["end_s"]) for c in clips]
    return {role[c["video_id"]]: c for c in clips}


def _assert_original_wins(out: Path) -> None:
    c = _clips_by_role(out)
    orig, copy = c["original"], c["copy"]
    assert orig["kept"] and orig["shard"], orig["reject_reason"]
    assert (orig["source_width"], orig["source_height"]) == (1280, 720)
    assert (copy["source_width"], copy["source_height"]) == (854, 480)
    assert orig["source_bitrate"] > copy["source_bitrate"] > 0
    assert not copy["kept"] and copy["reject_reason"] == "duplicate" and not copy["shard"]
    assert copy["dup_of"] == orig["clip_id"]
    assert copy["dup_reason"] == (
        f"near: lower source resolution than {orig['clip_id']} (854x480 < 1280x720)"
    )


@pytest.mark.parametrize(
    "names",
    [
        {"original": "a_original.mp4", "copy": "b_copy.mp4"},  # original listed first
        {"original": "b_original.mp4", "copy": "a_copy.mp4"},  # copy listed first
    ],
)
def test_original_wins_in_one_run_either_order(footage, tmp_path, names):
    _place(footage, tmp_path / "raw", names)
    _run(tmp_path / "raw", tmp_path / "out")
    _assert_original_wins(tmp_path / "out")


def test_original_first_then_copy_in_a_later_run(footage, tmp_path):
    raw = tmp_path / "raw"
    _place(footage, raw, {"original": "a_original.mp4"})
    _run(raw, tmp_path / "out")
    _place(footage, raw, {"copy": "b_copy.mp4"})
    s = _run(raw, tmp_path / "out")
    assert s["videos_new"] == 1
    _assert_original_wins(tmp_path / "out")


def test_copy_already_sharded_stays_and_original_is_its_duplicate(footage, tmp_path):
    raw = tmp_path / "raw"
    _place(footage, raw, {"copy": "a_copy.mp4"})
    _run(raw, tmp_path / "out")
    first = _clips_by_role_single(tmp_path / "out")
    assert first["kept"] and first["shard"]
    _place(footage, raw, {"original": "b_original.mp4"})
    _run(raw, tmp_path / "out")
    c = _clips_by_role(tmp_path / "out")
    copy, orig = c["copy"], c["original"]
    assert copy["kept"] and copy["shard"] == first["shard"]  # append-only: never rejected
    assert not orig["kept"] and orig["reject_reason"] == "duplicate" and not orig["shard"]
    assert orig["dup_of"] == copy["clip_id"]
    assert orig["dup_reason"] == (
        f"near: {copy['clip_id']} is already sharded (shards are append-only)"
    )


def _clips_by_role_single(out: Path) -> dict:
    clips = Store(out).clip_rows()
    assert len(clips) == 1
    return clips[0]
