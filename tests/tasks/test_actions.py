"""Rollout actions stay aligned with their frames through curation: frames carry their own
index in the pixels, the sidecar holds the index as the action, and every clip's
``.actions.npy`` must equal the indices decoded from its mp4."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from worldmill.config import SplitConfig, TranscodeConfig
from worldmill.media import decode_frames, probe
from worldmill.records import Video
from worldmill.rollouts.record import encode_mp4
from worldmill.store import Store
from worldmill.tasks.actions import attach_actions, first_frame, sidecar_uri
from worldmill.tasks.shard_manifest import read_shards
from worldmill.tasks.split import split_video
from worldmill.tasks.transcode import transcode_clips

ROOT = Path(__file__).resolve().parents[2]
BITS = 8  # frame index in 8 vertical stripes of 8 px, white = 1 (survives crf 10 and yuv420p)


def _indexed_frames(n: int, offset: int = 0) -> list[np.ndarray]:
    frames = []
    for t in range(offset, offset + n):
        f = np.zeros((64, 64, 3), np.uint8)
        for b in range(BITS):
            if (t >> b) & 1:
                f[:, b * 8 : (b + 1) * 8] = 255
        f[:8, :, 1] = 128  # a green band: not pure black and white
        frames.append(f)
    return frames


def _read_index(frames: np.ndarray) -> np.ndarray:
    """(T, 64, 64, 3) decoded frames -> the index each one carries."""
    stripes = frames[:, 16:, :, 0].reshape(len(frames), 48, BITS, 8).mean(axis=(1, 3))
    return ((stripes > 127) * (1 << np.arange(BITS))).sum(axis=1)


def _episode(d: Path, name: str, n: int, offset: int, continuous: bool) -> None:
    encode_mp4(_indexed_frames(n, offset), d / f"{name}.mp4", 15.0, 10)
    idx = np.arange(offset, offset + n)
    acts = np.stack([idx, -idx, idx * 0.5], 1).astype(np.float32) if continuous else idx
    np.save(d / f"{name}.actions.npy", acts)


def test_indexed_frames_round_trip(tmp_path):
    encode_mp4(_indexed_frames(40, 100), tmp_path / "v.mp4", 15.0, 10)
    assert _read_index(decode_frames(str(tmp_path / "v.mp4"), 64, 64)).tolist() == list(
        range(100, 140)
    )


def test_first_frame_and_sidecar_names():
    assert first_frame(2.0, 15.0) == 30
    assert first_frame(1.3, 15.0) == 20  # 19.5 -> the first frame at or after 1.3 s
    assert first_frame(0.0, 10.0) == 0
    assert sidecar_uri("/r/ep_000001.mp4") == "/r/ep_000001.actions.npy"
    assert sidecar_uri("s3://b/raw/ep.x.mp4") == "s3://b/raw/ep.x.actions.npy"


def _video(d: Path) -> Video:
    p = str(d / "ep.mp4")
    info = probe(p)
    v = Video("v" * 16, p, "0" * 64, local_path=p)
    v.duration_s, v.width, v.height = info.duration_s, info.width, info.height
    v.fps, v.num_frames = info.fps, info.num_frames
    return v


def _cut(d: Path, stride: float, bframes: int) -> list:
    """The curate path without the flow: split (fixed) -> transcode -> attach."""
    v = _video(d)
    clips = split_video(v, SplitConfig(method="fixed", fixed_stride_s=stride, min_clip_s=stride))
    cfg = TranscodeConfig(height=64, crf=10, bframes=bframes)
    transcode_clips(v, clips, str(d / f"clips{stride}_{bframes}"), cfg)
    attach_actions(v, clips)
    return clips


@pytest.mark.parametrize("stride", [2.0, 1.3])
def test_cuts_at_known_frames_keep_actions_aligned(tmp_path, stride):
    # Cuts at a whole number of frames (2 s = 30) and between frames (1.3 s = 19.5). Frames
    # 150.. change many stripes at 208 = 0b11010000: x264 puts a scene-cut keyframe at
    # source frame 58, two frames before the cut at 60.
    _episode(tmp_path, "ep", 64, 150, continuous=False)
    kept = [c for c in _cut(tmp_path, stride, bframes=0) if c.kept]
    assert len(kept) == int(64 / 15 // stride)
    for c in kept:
        got = _read_index(decode_frames(c.clip_uri, 64, 64))
        assert got[0] - 150 == first_frame(c.start_s, 15.0) == c.extra["action_start_frame"]
        assert np.array_equal(np.asarray(c.actions), got), c.clip_id


def test_moved_cut_is_an_error_not_a_shifted_label(tmp_path):
    # With B-frames the muxer cuts at that scene-cut keyframe: the 2-4 s clip comes out
    # with 28 frames. Its actions must not be attached as if it had the 30 of its span.
    _episode(tmp_path, "ep", 64, 150, continuous=False)
    clips = [c for c in _cut(tmp_path, 2.0, bframes=-1) if c.clip_uri]
    assert [c.kept for c in clips] == [True, False]
    for c in clips:
        got = _read_index(decode_frames(c.clip_uri, 64, 64))
        if c.kept:
            assert np.array_equal(np.asarray(c.actions), got)
        else:
            assert c.reject_reason == "actions" and "cut moved" in c.errors["actions"]
            assert c.actions is None


def test_bad_sidecar_is_a_clip_error(tmp_path):
    _episode(tmp_path, "ep", 45, 0, continuous=False)
    np.save(tmp_path / "ep.actions.npy", np.arange(44))  # one action short
    bad = [c for c in _cut(tmp_path, 2.0, bframes=0) if c.clip_uri]
    assert bad and all(c.reject_reason == "actions" for c in bad)
    assert "44 actions for 45 frames" in bad[0].errors["actions"]


def test_curate_preset_shards_aligned_actions(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    _episode(raw, "ep_000000", 100, 0, continuous=False)  # 3 clips of 30 + a 10-frame tail
    _episode(raw, "ep_000001", 64, 150, continuous=True)  # (T, 3) float32; see above
    # A loaded 2-core CI box can take longer than Prefect's default 20 s to start its server.
    slow_start = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    cfg = str(ROOT / "configs/rollouts.yaml")
    r = run_cli("curate", str(raw), "--out", str(out), "--config", cfg, env=slow_start)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    samples = list(read_shards(str(out / "shards")))
    assert len(samples) == 3 + 2
    for s in samples:
        acts = np.load(io.BytesIO(s["actions.npy"]))
        (tmp_path / "c.mp4").write_bytes(s["mp4"])
        idx = _read_index(decode_frames(str(tmp_path / "c.mp4"), 64, 64))
        assert len(idx) == len(acts) == s["json"]["num_frames"] == 30
        assert idx[0] == s["json"]["action_start_frame"] + (150 if acts.ndim == 2 else 0)
        if acts.ndim == 2:  # continuous: float32 values come back exactly
            assert acts.dtype == np.float32
            assert np.array_equal(acts, np.stack([idx, -idx, idx * 0.5], 1).astype(np.float32))
        else:
            assert acts.dtype == np.int64 and np.array_equal(acts, idx)
        assert "actions" not in s["json"]
    rows = Store(out).clip_rows(["clip_id", "kept", "actions", "reject_reason"])
    kept = [r for r in rows if r["kept"]]
    assert len(kept) == 5 and all(len(json.loads(r["actions"])) == 30 for r in kept)
    assert sorted(r["reject_reason"] for r in rows if not r["kept"]) == ["split", "split"]
