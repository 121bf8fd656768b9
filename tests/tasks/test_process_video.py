"""tasks/process_video.py: the per-video pipeline (split -> transcode -> stages -> staging
file) on a real two-shot video, and its failure handling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.tasks._stage_clips import camera, photo
from worldmill.config import CurateConfig, StageSpec
from worldmill.records import FAILED, OK
from worldmill.synth import write_video
from worldmill.tasks.ingest import inspect_file
from worldmill.tasks.process_video import (
    process_video,
    process_video_task,
    read_staging,
    staging_dir,
)

FPS = 24


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A 320x180 video: a 3-s pan over one photo, a hard cut, a 3-s pan over another."""
    d = tmp_path_factory.mktemp("pv")
    a = camera(photo("astronaut", 360), 3 * FPS, 20, 20, vx=3.0)
    b = camera(photo("coffee", 360), 3 * FPS, 40, 60, vy=2.0)
    path = write_video(d / "two shots.mp4", np.concatenate([a, b]), FPS, crf=20)
    v = inspect_file(str(path), "")
    assert v.status == OK
    return v


def _cfg(tmp_path, **kw) -> CurateConfig:
    stages = [StageSpec(name="limits"), StageSpec(name="quality")]
    return CurateConfig(input="x", out=str(tmp_path / "out"), stages=stages, **kw)


def test_two_shots_become_two_scored_clips(video, tmp_path):
    v, clips = process_video(video, _cfg(tmp_path))
    assert v.status == OK and [c.clip_id for c in clips] == [
        f"{v.video_id}_0000",
        f"{v.video_id}_0001",
    ]
    assert clips[0].end_s == pytest.approx(3.0, abs=0.1)
    assert clips[1].start_s == pytest.approx(3.0, abs=0.1)
    for c in clips:
        assert c.kept, (c.reject_reason, c.errors)
        assert c.clip_uri.startswith(str(tmp_path / "out" / "clips" / v.video_id))
        assert c.height == 180 and c.width == 320  # never upscaled to 256
        assert 0.0 <= c.quality_score <= 1.0  # the configured stage ran
        assert len(c.visual_embedding) > 0  # the visual descriptor always runs last
        assert (c.extra["source_width"], c.extra["source_height"]) == (320, 180)
        assert c.extra["source_bitrate"] == video.bit_rate > 0
        assert c.source_path == video.path


def test_stages_run_before_the_encode_and_rejected_clips_are_not_encoded(video, tmp_path):
    """One decode: the stages see every clip before any is encoded (a plug-in stage may
    ask for frames at its own size: they come from the source); a clip they reject gets
    no mp4, only the contact-sheet thumbnail every clip gets."""
    picky = StageSpec(name="picky", module="tests.tasks._reject_clip")
    cfg = CurateConfig(input="x", out=str(tmp_path / "out"), stages=[picky])
    v, clips = process_video(video, cfg)
    assert [(c.kept, c.reject_reason) for c in clips] == [(True, ""), (False, "picky")]
    assert all(c.extra["picky_frames"] == 6 for c in clips)  # 3 s at 2 fps, from the source
    d = tmp_path / "out" / "clips" / v.video_id
    assert sorted(p.name for p in d.iterdir()) == [
        f"{v.video_id}_0000.jpg", f"{v.video_id}_0000.mp4", f"{v.video_id}_0001.jpg",
    ]  # fmt: skip
    assert clips[0].clip_uri == str(d / f"{v.video_id}_0000.mp4") and clips[1].clip_uri == ""
    assert clips[1].num_frames == 3 * FPS and clips[1].width == 320  # what it would have had


def test_task_writes_staging_and_reuses_it(video, tmp_path):
    cfg = _cfg(tmp_path)
    (uri,) = process_video_task.fn([video], cfg)
    assert uri == str(staging_dir(cfg.out) / f"{video.video_id}.json")
    v, clips = read_staging(uri)
    assert v.video_id == video.video_id and len(clips) == 2
    json.loads(open(uri).read())  # plain JSON, one file per video
    # A staging file left by a killed run is reused, not recomputed.
    before = open(uri).read()
    for c in clips:  # empty the clip files: a recompute would have to rewrite them
        open(c.clip_uri, "wb").close()
    assert process_video_task.fn([video], cfg) == [uri] and open(uri).read() == before


def test_unexpected_per_video_error_is_recorded_not_raised(video, tmp_path):
    cfg = _cfg(tmp_path)
    cfg.embed.visual_module = "no_such_visual_module"  # fails when stages load
    (uri,) = process_video_task.fn([video], cfg)
    v, clips = read_staging(uri)
    assert v.status == FAILED and clips == []
    assert v.error.startswith("process: ConfigError") and "no_such_visual_module" in v.error


def test_unreadable_video_fails_at_split(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    v = inspect_file(str(bad), "")
    v.status, v.error, v.width, v.height, v.fps, v.duration_s = OK, "", 320, 180, 24.0, 2.0
    out, clips = process_video(v, _cfg(tmp_path))
    assert out.status == FAILED and out.error.startswith("split: ") and clips == []
