from __future__ import annotations

import numpy as np

from worldmill.config import TranscodeConfig
from worldmill.media import probe
from worldmill.records import Clip, Video
from worldmill.synth import write_video
from worldmill.tasks.transcode import transcode_clips


def test_one_pass_cuts_frame_accurately(tmp_path):
    rng = np.random.default_rng(0)
    levels = (30, 120, 200, 80)
    frames = np.concatenate(
        [
            np.full((48, 90, 160, 3), v, np.uint8)
            + rng.integers(0, 9, (48, 90, 160, 3), dtype=np.uint8)
            for v in levels
        ]
    )
    src = write_video(tmp_path / "a 'b' $(c).mp4", frames, 24)
    i = probe(str(src))
    v = Video(
        "vid", str(src), "s", duration_s=i.duration_s, width=i.width, height=i.height, fps=i.fps
    )
    clips = [
        Clip("vid_0000", "vid", 0, 2),
        Clip("vid_0001", "vid", 2.25, 4),
        Clip("vid_0002", "vid", 4, 8),
    ]
    clips.append(Clip("vid_0003", "vid", 7.5, 7.9, kept=False, reject_reason="duration"))
    transcode_clips(v, clips, str(tmp_path / "clips"), TranscodeConfig(height=64))
    assert [c.num_frames for c in clips[:3]] == [48, 42, 96]
    assert all(c.height == 64 and c.width == 114 for c in clips[:3])
    assert clips[3].clip_uri == ""  # rejected clips are not transcoded
    # each clip holds the right content: mean level of its frames
    from worldmill.media import decode_frames

    means = [decode_frames(c.clip_uri, 32, 18).mean() for c in clips[:3]]
    assert abs(means[0] - 34) < 6 and abs(means[1] - 124) < 6
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 3  # gap segments removed


def _two_shot_video(tmp_path):
    rng = np.random.default_rng(1)
    frames = np.concatenate(
        [
            np.full((36, 90, 160, 3), v, np.uint8)
            + rng.integers(0, 9, (36, 90, 160, 3), dtype=np.uint8)
            for v in (40, 180)
        ]
    )
    src = write_video(tmp_path / "src.mp4", frames, 24)
    i = probe(str(src))
    v = Video(
        "vid", str(src), "s", duration_s=i.duration_s, width=i.width, height=i.height, fps=i.fps
    )
    return v, lambda: [Clip("vid_0000", "vid", 0, 1.5), Clip("vid_0001", "vid", 1.5, 3)]


def _fake_ffmpeg(tmp_path, body: str) -> str:
    """An `ffmpeg` that does ``body`` first, then runs the real one (fault injection)."""
    import shutil

    path = tmp_path / "ffmpeg-fault"
    path.write_text(f'#!/bin/bash\n{body}\nexec {shutil.which("ffmpeg")} "$@"\n')
    path.chmod(0o755)
    return str(path)


def test_concurrent_transcodes_of_one_video_do_not_collide(tmp_path, caplog):
    """Runs transcoding the same video into the same folder at once (what overlapping runs
    did): per-call segment directories, so every segment pass succeeds (no fallback to
    clip-by-clip cutting) with the right clips."""
    from concurrent.futures import ThreadPoolExecutor

    v, make = _two_shot_video(tmp_path)
    out = str(tmp_path / "clips")
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda _: transcode_clips(v, make(), out, TranscodeConfig(height=64)), range(4)
            )
        )
    assert not [r for r in caplog.records if "segment pass failed" in r.getMessage()]
    for clips in results:
        assert [c.errors for c in clips] == [{}, {}]
        assert [c.num_frames for c in clips] == [36, 36]
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [
        "vid_0000.mp4",
        "vid_0001.mp4",
    ]


def test_killed_ffmpeg_is_infrastructure_not_a_rejection(tmp_path, monkeypatch):
    import pytest

    from worldmill.media import InfraError
    from worldmill.tasks import transcode

    v, make = _two_shot_video(tmp_path)
    monkeypatch.setattr(transcode, "ffmpeg_bin", lambda: _fake_ffmpeg(tmp_path, "kill -KILL $$"))
    clips = make()
    with pytest.raises(InfraError, match="killed by signal 9"):
        transcode_clips(v, clips, str(tmp_path / "clips"), TranscodeConfig(height=64))
    assert all(c.kept and not c.errors for c in clips), "nothing recorded against the clips"
    assert list((tmp_path / "clips").iterdir()) == [], "no temp files left"


def test_vanished_segment_dir_is_infrastructure(tmp_path, monkeypatch):
    import pytest

    from worldmill.media import InfraError
    from worldmill.tasks import transcode

    v, make = _two_shot_video(tmp_path)
    # The output pattern is the last argument; its folder is removed before ffmpeg starts.
    fake = _fake_ffmpeg(tmp_path, 'rm -rf "$(dirname "${@: -1}")"')
    monkeypatch.setattr(transcode, "ffmpeg_bin", lambda: fake)
    clips = make()
    with pytest.raises(InfraError, match="vanished"):
        transcode_clips(v, clips, str(tmp_path / "clips"), TranscodeConfig(height=64))
    assert all(c.kept and not c.errors for c in clips)


def test_unreadable_source_is_still_the_clips_failure(tmp_path):
    """A source that ffmpeg cannot decode (the clip's own problem) stays data."""
    v, make = _two_shot_video(tmp_path)
    data = open(v.path, "rb").read()
    open(v.path, "wb").write(data[:200] + bytes(len(data) - 200))  # header kept, rest zeroed
    clips = transcode_clips(v, make(), str(tmp_path / "clips"), TranscodeConfig(height=64))
    assert all("transcode" in c.errors and not c.kept for c in clips)


def test_remove_stale_temp(tmp_path):
    from worldmill.tasks.transcode import remove_stale_temp

    d = tmp_path / "clips" / "vid"
    (d / ".seg_vid_abc").mkdir(parents=True)
    (d / ".seg_vid_abc" / "00000.mp4").write_bytes(b"x")
    (d / "vid_0000.mp4.1234.part.mp4").write_bytes(b"x")
    (d / "vid_0001.mp4").write_bytes(b"keep")
    assert remove_stale_temp(str(tmp_path / "clips")) == 2
    assert [p.name for p in d.iterdir()] == ["vid_0001.mp4"]
