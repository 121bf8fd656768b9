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
