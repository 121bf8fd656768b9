"""Frame post-guard on a real face: scikit-image's astronaut, through real ffmpeg, the real
Haar cascades and the real NudeNet detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.guardrails._astronaut import (
    astronaut_frames,
    laplacian_var,
    outside_mask,
    write_astronaut_mp4,
)
from worldmill.guardrails import Guardrails, guard_frames, guard_video, record
from worldmill.guardrails.frames import detect_faces
from worldmill.media import decode_frames
from worldmill.synth import write_video


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return astronaut_frames()


@pytest.fixture(scope="module")
def guarded(frames):
    return guard_frames(frames, Guardrails())


def _rects(report: dict, t: int) -> list[tuple[int, ...]]:
    """The regions the report says were blurred in frame ``t``."""
    return [tuple(r[1:]) for r in report["blurred"] if r[0] == t]


def test_the_one_face_is_found_in_every_frame(frames, guarded):
    _, rep = guarded
    assert rep["frames"] == len(frames)
    assert rep["frames_with_faces"] == len(frames)
    assert rep["faces_detected"] == len(frames)  # one face, no false positives
    for _, _x, y, w, _h in rep["face_boxes"]:
        assert 40 <= w <= 70 and 15 <= y <= 60  # her face: upper middle of the frame


def test_face_blurred_rest_of_frame_untouched(frames, guarded):
    out, rep = guarded
    assert rep["faces_blurred"] == len(frames)  # one (merged) region per frame
    for t, x, y, w, h in rep["face_boxes"]:
        # the face lies inside a blurred region of its frame, with the padding around it
        assert any(
            x0 < x and y0 < y and x + w < x1 and y + h < y1 for x0, y0, x1, y1 in _rects(rep, t)
        )
        before = laplacian_var(frames[t, y : y + h, x : x + w])
        after = laplacian_var(out[t, y : y + h, x : x + w])
        assert before > 300  # a sharp face to begin with
        assert after * 100 < before, (t, before, after)  # measured: 540-650x
    for t in range(len(frames)):
        m = outside_mask(out.shape[1:], _rects(rep, t))
        assert m.mean() > 0.8
        assert np.array_equal(out[t][m], frames[t][m])  # exactly unchanged outside the boxes


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_guard_video_mp4_in_mp4_out(tmp_path):
    src = write_astronaut_mp4(tmp_path / "astronaut.mp4")
    dst = tmp_path / "guarded.mp4"
    rep = guard_video(str(src), str(dst))
    # Decoded from the mp4 the cascades may add a false positive: blurred too, harmless.
    assert rep["frames_with_faces"] == rep["frames"] == 8 and rep["frames_withheld"] == 0
    a = decode_frames(str(src), width=256, height=256)  # (8, 256, 256, 3)
    b = decode_frames(str(dst), width=256, height=256)
    assert a.shape == b.shape
    # The same frames re-encoded without guarding, at guard_video's CRF: the loss a
    # second encode costs anyway.
    write_video(tmp_path / "plain.mp4", a, fps=8.0, crf=18)
    c = decode_frames(str(tmp_path / "plain.mp4"), width=256, height=256)
    # Her face in each frame, as found on the original (uncompressed) frames.
    faces = [detect_faces(f) for f in astronaut_frames()]
    assert all(len(f) == 1 for f in faces)
    for t, [(x, y, w, h)] in enumerate(faces):
        drop = laplacian_var(a[t, y : y + h, x : x + w]) / laplacian_var(b[t, y : y + h, x : x + w])
        assert drop >= 100, (t, drop)  # measured after H.264 re-encoding: 300-350x
    for t, x, y, w, h in rep["face_boxes"]:  # any other box (the odd false positive) too
        drop = laplacian_var(a[t, y : y + h, x : x + w]) / laplacian_var(b[t, y : y + h, x : x + w])
        assert drop >= 10, (t, drop)
    for t in range(len(a)):
        m = outside_mask(a.shape[1:], _rects(rep, t))
        guarded, plain = _psnr(a[t][m], b[t][m]), _psnr(a[t][m], c[t][m])
        # Outside the boxes nothing but re-encoding: measured 38-39 dB for both.
        assert guarded > 35 and guarded > plain - 1.0, (t, guarded, plain)


def test_no_face_no_change():
    rng = np.random.default_rng(0)
    sky = np.tile(np.linspace(80, 200, 128, dtype=np.uint8)[None, :, None], (96, 1, 3))
    frames = np.stack([sky] * 3)
    frames = np.clip(frames + rng.integers(0, 3, frames.shape), 0, 255).astype(np.uint8)
    assert detect_faces(frames[0]) == []
    out, rep = guard_frames(frames)
    assert rep["faces_detected"] == 0 and rep["frames_withheld"] == 0
    assert np.array_equal(out, frames)


def test_nsfw_detector_runs_and_withholds(frames):
    # The astronaut is not NSFW: nothing withheld with the default classes ...
    _, rep = guard_frames(frames[:2], Guardrails(face_blur=False))
    assert rep["frames_withheld"] == 0 and rep["nsfw"] == []
    # ... while the same real detector, told that a female face is a withholding class,
    # withholds every frame (black) and says why: the withholding path itself works.
    cfg = Guardrails(face_blur=False, nsfw_classes=["FACE_FEMALE"])
    out, rep = guard_frames(frames[:2], cfg)
    assert rep["frames_withheld"] == 2 and rep["withheld"] == [0, 1]
    assert {h["class"] for h in rep["nsfw"]} == {"FACE_FEMALE"}
    assert not out.any()


def test_disabled_is_a_no_op_and_recorded(frames):
    cfg = Guardrails(enabled=False)
    out, rep = guard_frames(frames[:2], cfg)
    assert out is not None and np.array_equal(out, frames[:2]) and rep["enabled"] is False
    rec = record(cfg, frames_report=rep)["guardrails"]
    assert rec["enabled"] is False and rec["disabled_by"] == "--no-guardrails"
    on = record(Guardrails(), frames_report=guard_frames(frames[:1])[1])["guardrails"]
    assert on["enabled"] is True and "disabled_by" not in on
    assert on["frames"]["faces_blurred"] >= 1


def test_bad_frames_rejected():
    with pytest.raises(ValueError, match="uint8"):
        guard_frames(np.zeros((2, 8, 8, 3), dtype=np.float32))


def _with_tone(video: Path, out: Path, audio_codec: str = "aac") -> Path:
    """``video`` plus a 440 Hz tone as long as the video, muxed by real ffmpeg."""
    import subprocess

    from worldmill.media import ffmpeg_bin, probe

    dur = probe(str(video)).duration_s
    cmd = [ffmpeg_bin(), "-v", "error", "-y", "-i", str(video)]
    cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={dur}"]
    cmd += ["-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", audio_codec, str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def _audio(path: Path) -> np.ndarray:
    """The first audio stream of ``path`` as mono float samples at 16 kHz."""
    import subprocess

    from worldmill.media import ffmpeg_bin

    cmd = [ffmpeg_bin(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1"]
    cmd += ["-ar", "16000", "-f", "s16le", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.int16).astype(np.float64) / 32768.0


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def test_guard_video_carries_the_audio_over(tmp_path):
    from worldmill.media import probe

    src = _with_tone(write_astronaut_mp4(tmp_path / "a.mp4"), tmp_path / "a_tone.mp4")
    dst = tmp_path / "guarded.mp4"
    rep = guard_video(str(src), str(dst))
    assert rep["audio"] == "copied" and probe(str(dst)).has_audio
    a, b = _audio(src), _audio(dst)
    assert abs(len(a) - len(b)) <= 1024 and _rms(b) > 0.05  # the tone (RMS 0.088), its whole length
    assert not list(tmp_path.glob("*.video.mp4"))  # the video-only temp file is gone


def test_guard_video_without_audio_says_so(tmp_path):
    src = write_astronaut_mp4(tmp_path / "a.mp4")
    assert guard_video(str(src), str(tmp_path / "g.mp4"))["audio"] == "none"


def test_withheld_frames_become_time_ranges():
    from worldmill.guardrails.frames import withheld_ranges

    assert withheld_ranges([7, 2, 3, 4], fps=8.0) == [(0.25, 0.625), (0.875, 1.0)]
    assert withheld_ranges([], fps=8.0) == []


def test_audio_is_muted_where_frames_were_withheld(tmp_path):
    """Withheld frames are black; their audio is silenced too (it was never checked)."""
    from worldmill.guardrails.frames import mux_audio

    frames = np.full((24, 64, 64, 3), 128, np.uint8)  # 3 s at 8 fps
    src = _with_tone(write_video(tmp_path / "v.mp4", frames, fps=8.0), tmp_path / "src.mp4")
    dst = tmp_path / "dst.mp4"
    assert mux_audio(str(tmp_path / "v.mp4"), str(src), str(dst), [(1.0, 2.0)]) == "muted 1 ranges"
    x, sr = _audio(dst), 16000
    assert _rms(x[int(1.1 * sr) : int(1.9 * sr)]) < 1e-3  # silent inside the range
    assert (
        _rms(x[int(0.1 * sr) : int(0.9 * sr)]) > 0.05
    )  # the tone before it (ffmpeg sine: amplitude 1/8, RMS 0.088)
    assert _rms(x[int(2.1 * sr) : int(2.9 * sr)]) > 0.05  # and after it


def test_audio_mp4_cannot_hold_is_reencoded(tmp_path):
    """PCM audio (from a .mov) is not allowed in mp4 as is: it is re-encoded to AAC."""
    from worldmill.guardrails.frames import mux_audio
    from worldmill.media import probe

    frames = np.full((16, 64, 64, 3), 90, np.uint8)
    video = write_video(tmp_path / "v.mp4", frames, fps=8.0)
    src = _with_tone(video, tmp_path / "src.mov", audio_codec="pcm_s16le")
    dst = tmp_path / "dst.mp4"
    assert mux_audio(str(video), str(src), str(dst), []) == "re-encoded"
    assert probe(str(dst)).has_audio and _rms(_audio(dst)) > 0.05
