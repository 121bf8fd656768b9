"""The sample-corpus generator: deterministic per seed, different across seeds, and covering
every case the pipeline is scored on (real files, checked with real ffprobe/ffmpeg)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worldmill.media import MediaError, decode_frames, probe
from worldmill.sample_data import generate

SHOT_KEYS = {"start_s", "end_s", "content", "expect_kept", "expect_reason", "content_id"}
VIDEO_KEYS = {"expect_status", "copy_of", "transform", "duration_s", "cuts_s", "cut_types", "shots"}
HOSTILE = set("'\"; $`") | {"$("}


@pytest.fixture(scope="module")
def small_a(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("sample_a")
    return d, generate(d, seed=5, small=True)


@pytest.fixture(scope="module")
def small_b(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("sample_b")
    return d, generate(d, seed=5, small=True)


@pytest.fixture(scope="module")
def small_other_seed(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("sample_c")
    return d, generate(d, seed=6, small=True)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("sample_full")
    return d, generate(d, seed=3)


def _media_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name != "ground_truth.json")


def test_deterministic_per_seed(small_a, small_b) -> None:
    (da, gta), (db, gtb) = small_a, small_b
    assert gta == gtb
    assert json.loads((da / "ground_truth.json").read_text()) == gta
    fa, fb = _media_files(da), _media_files(db)
    assert [p.name for p in fa] == [p.name for p in fb] == sorted(gta["videos"])
    for a, b in zip(fa, fb, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_other_seed_gives_other_corpus(small_a, small_other_seed) -> None:
    (da, gta), (dc, gtc) = small_a, small_other_seed
    ids_a = {s["content_id"] for v in gta["videos"].values() for s in v["shots"]}
    ids_c = {s["content_id"] for v in gtc["videos"].values() for s in v["shots"]}
    assert ids_a.isdisjoint(ids_c)
    ok = [n for n, v in gta["videos"].items() if v["expect_status"] == "ok" and not v["transform"]]
    for name in ok:
        assert (da / name).read_bytes() != (dc / name).read_bytes()
    assert [v["cuts_s"] for v in gta["videos"].values()] != [
        v["cuts_s"] for v in gtc["videos"].values()
    ]


def _check_format(gt: dict) -> None:
    assert gt["fps"] == 24 and isinstance(gt["seed"], int)
    for name, v in gt["videos"].items():
        assert VIDEO_KEYS <= set(v), name
        assert v["expect_status"] in ("ok", "failed", "duplicate")
        assert len(v["cuts_s"]) == len(v["cut_types"])
        assert set(v["cut_types"]) <= {"hard", "dissolve", "fade"}
        assert v["cuts_s"] == sorted(v["cuts_s"])
        if v["expect_status"] == "failed":
            assert v["transform"].startswith("bad:") and not v["shots"]
            continue
        assert v["copy_of"] == "" or v["copy_of"] in gt["videos"]
        shots = v["shots"]
        assert len(shots) == len(v["cuts_s"]) + 1
        assert shots[0]["start_s"] == 0 and shots[-1]["end_s"] == pytest.approx(v["duration_s"])
        for s, cut in zip(shots[:-1], v["cuts_s"], strict=True):
            assert s["end_s"] == cut
        for s in shots:
            assert SHOT_KEYS <= set(s)
            assert 3.0 - 1e-6 <= s["end_s"] - s["start_s"] <= 8.0 + 1e-6, (name, s)
            assert s["expect_kept"] == (s["expect_reason"] == "")
            want = {
                "moving": "",
                "static": "motion",
                "text": "text",
                "dark": "quality",
                "blurry": "quality",
            }[s["content"]]
            assert s["expect_reason"] == want


def _check_files(d: Path, gt: dict) -> None:
    for name, v in gt["videos"].items():
        path = str(d / name)
        if v["expect_status"] == "failed":
            with pytest.raises(MediaError):
                probe(path)
            continue
        info = probe(path)
        assert info.fps == pytest.approx(24.0)
        assert abs(info.duration_s - v["duration_s"]) < 1.5 / 24, name
        want = (256, 144) if v["transform"] == "rescale" else (320, 180)
        assert (info.width, info.height) == want
    for name, v in gt["videos"].items():
        if v["transform"] == "exact":
            assert v["expect_status"] == "duplicate"
            assert (d / name).read_bytes() == (d / v["copy_of"]).read_bytes()
        elif v["copy_of"]:  # near-duplicate: same shots, other bytes
            src = gt["videos"][v["copy_of"]]
            assert v["transform"] in ("reencode", "rescale", "crop", "brightness")
            assert [s["content_id"] for s in v["shots"]] == [s["content_id"] for s in src["shots"]]
            assert (d / name).read_bytes() != (d / v["copy_of"]).read_bytes()


def test_small_corpus_covers_the_cases(small_a) -> None:
    d, gt = small_a
    _check_format(gt)
    _check_files(d, gt)
    vids = gt["videos"]
    assert len(vids) <= 7
    cut_types = {t for v in vids.values() for t in v["cut_types"]}
    assert {"hard", "dissolve", "fade"} <= cut_types
    contents = {s["content"] for v in vids.values() for s in v["shots"]}
    assert {"moving", "static", "text"} <= contents
    assert sum(v["transform"] == "exact" for v in vids.values()) == 1
    assert sum(v["copy_of"] != "" and v["transform"] != "exact" for v in vids.values()) == 1
    assert sum(v["expect_status"] == "failed" for v in vids.values()) >= 2
    hostile = [n for n in vids if any(c in n for c in HOSTILE)]
    assert hostile and all(vids[n]["expect_status"] == "ok" for n in hostile)
    assert sum(v["duration_s"] for v in vids.values()) < 60


def test_full_corpus_covers_the_cases(full) -> None:
    d, gt = full
    _check_format(gt)
    _check_files(d, gt)
    vids = gt["videos"]
    assert 10 <= len(vids) <= 15
    assert sum(v["duration_s"] for v in vids.values()) < 150
    types = [t for v in vids.values() if not v["copy_of"] for t in v["cut_types"]]
    assert types.count("dissolve") >= 2 and types.count("fade") >= 2 and types.count("hard") >= 4
    contents = {s["content"] for v in vids.values() for s in v["shots"]}
    assert contents == {"moving", "static", "text", "dark", "blurry"}
    assert {v["transform"] for v in vids.values()} >= {
        "",
        "exact",
        "reencode",
        "rescale",
        "crop",
        "brightness",
        "bad:truncated",
        "bad:empty",
        "bad:text",
        "bad:audio_only",
        "bad:garbage",
    }
    names = "".join(vids)
    for token in (" ", "'", '"', ";", "$(touch x)", "`", "é", "東京"):
        assert token in names, token
    assert (d / "empty.mp4").stat().st_size == 0


def test_distinct_shots_look_distinct(full) -> None:
    """Shots with different content ids must not look alike (dedup is scored on that):
    the middle frames of every pair differ clearly at 32x18."""
    d, gt = full
    thumbs: dict[str, np.ndarray] = {}
    for name, v in gt["videos"].items():
        if v["expect_status"] != "ok" or v["copy_of"]:
            continue
        frames = decode_frames(str(d / name), 32, 18).astype(np.float32) / 255.0
        for s in v["shots"]:
            mid = int((s["start_s"] + s["end_s"]) / 2 * gt["fps"])
            thumbs[s["content_id"]] = frames[min(mid, len(frames) - 1)]
    ids = sorted(thumbs)
    assert len(ids) >= 12
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            diff = float(np.abs(thumbs[a] - thumbs[b]).mean())
            assert diff > 0.04, (a, b, diff)
