"""worldmill/media.py: ffprobe/ffmpeg helpers on real files made with real ffmpeg."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from worldmill.media import ClipView, MediaError, decode_frames, even, ffmpeg_bin, probe
from worldmill.synth import write_video

T, H, W, FPS = 24, 64, 96, 12.0


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    # Frame t is a flat grey of level 10 * t: decoded frames can be checked by value.
    frames = np.stack([np.full((H, W, 3), 10 * t, np.uint8) for t in range(T)])
    good = write_video(d / "-dash 'q' $(x).mp4", frames, FPS, crf=0)
    audio = d / "tone.mp4"
    subprocess.run(
        [ffmpeg_bin(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac",
         str(audio)],
        check=True,
    )  # fmt: skip
    text = d / "notes.mp4"
    text.write_text("not a video")
    trunc = d / "trunc.mp4"
    trunc.write_bytes(good.read_bytes()[:300])
    return {"good": good, "audio": audio, "text": text, "trunc": trunc}


def test_even():
    assert [even(x) for x in (0, 1, 2.9, 3, 5.2, 101)] == [2, 2, 2, 4, 6, 100]


def test_probe_reads_a_video_with_a_hostile_name(files):
    info = probe(str(files["good"]))
    assert (info.width, info.height, info.fps, info.num_frames) == (W, H, FPS, T)
    assert info.duration_s == pytest.approx(T / FPS)
    assert info.codec == "h264" and not info.has_audio
    size_bits = files["good"].stat().st_size * 8
    assert 0 < info.bit_rate <= size_bits / info.duration_s * 1.05  # video stream bits/s


@pytest.mark.parametrize(
    "name, words",
    [("audio", "no video stream (audio-only)"), ("text", "not a readable media file")],
)
def test_probe_errors_are_readable(files, name, words):
    with pytest.raises(MediaError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        probe(str(files[name]))
    assert str(files[name]) not in str(e.value)  # the path is not repeated in the message


def test_probe_truncated_file_fails(files):
    with pytest.raises(MediaError):
        probe(str(files["trunc"]))


def test_decode_frames_sizes_rates_and_seek(files):
    p = str(files["good"])
    rgb = decode_frames(p, 48)  # height from aspect, every frame
    assert rgb.shape == (T, 32, 48, 3) and rgb.dtype == np.uint8
    assert np.allclose(rgb[:, 16, 24, 0], 10 * np.arange(T), atol=3)
    gray = decode_frames(p, 48, 32, fps=6.0, gray=True)
    assert gray.shape == (T // 2, 32, 48)
    part = decode_frames(p, 48, 32, start_s=1.0, duration_s=0.5)
    assert len(part) == 6 and abs(int(part[0, 0, 0, 0]) - 10 * 12) <= 3  # starts at frame 12
    with pytest.raises(MediaError, match="no frames decoded"):
        decode_frames(str(files["text"]), 48, 32)


def test_clip_view_decodes_once_per_size_and_clears(files):
    v = ClipView(str(files["good"]), FPS, W, H)
    a = v.frames(width=48, sample_fps=None)
    assert v.frames(width=48, sample_fps=None) is a  # cached, not decoded again
    assert v.frames(width=48, sample_fps=None, gray=True).shape == (T, 32, 48)
    calls = []
    assert v.memo(("k",), lambda: calls.append(1) or 5) == 5
    assert v.memo(("k",), lambda: calls.append(1) or 6) == 5 and calls == [1]
    k = v.keyframes(n=3, width=48)
    assert k.shape == (3, 32, 48, 3)
    assert k[0, 0, 0, 0] < k[1, 0, 0, 0] < k[2, 0, 0, 0]  # first, middle, last
    v.clear()
    assert v.frames(width=48, sample_fps=None) is not a
