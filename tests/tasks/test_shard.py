"""WebDataset shards of real mp4 clips: buckets, append-only runs, manifest, Energon metadata."""

from __future__ import annotations

import hashlib
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from worldmill.config import ShardConfig
from worldmill.synth import write_video
from worldmill.tasks.shard import aspect_name, length_name, write_shards
from worldmill.tasks.shard_manifest import read_shards

CFG = ShardConfig(max_clips_per_shard=2, length_buckets_s=[5.0, 10.0, 30.0])


def _clip(tmp: Path, cid: str, w: int, h: int, dur: float, seed: int) -> dict:
    frames = np.random.default_rng(seed).integers(0, 255, (4, h, w, 3), dtype=np.uint8)
    path = write_video(tmp / f"{cid}.mp4", frames, fps=8)
    return {
        "clip_id": cid,
        "clip_uri": str(path),
        "caption": f"caption of {cid}",
        "width": w,
        "height": h,
        "fps": 8.0,
        "start_s": 1.0,
        "end_s": 1.0 + dur,
        "video_id": cid.split("_")[0],
        "num_frames": int(dur * 8),
        "quality_score": 0.5,
        "motion_score": float("nan"),
        "embedding": [0.1, 0.2],  # not scalar: left out of the .json
        "extra": {"blur_score": 3.5},
    }


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("shard_clips")
    spec = [  # (id, w, h, duration) -> expected bucket
        ("va_0000", 64, 36, 3.0),  # 36p_16x9_0-5s
        ("va_0001", 64, 36, 4.0),  # 36p_16x9_0-5s
        ("va_0002", 64, 36, 4.5),  # 36p_16x9_0-5s  (3 clips, 2 per shard -> 2 tars)
        ("vb_0000", 48, 36, 7.0),  # 36p_4x3_5-10s
        ("vc_0000", 36, 36, 12.0),  # 36p_1x1_10-30s
        ("vd_0000", 36, 64, 40.0),  # 64p_9x16_ge30s
        ("ve_0000", 64, 36, 5.0),  # 36p_16x9_5-10s (edge belongs to the upper bucket)
        ("ve_0001", 64, 36, 8.0),
        ("ve_0002", 64, 36, 9.0),
    ]
    return [_clip(tmp, c, w, h, d, i) for i, (c, w, h, d) in enumerate(spec)]


EXPECTED_BUCKET = {
    "va": "36p_16x9_0-5s",
    "vb": "36p_4x3_5-10s",
    "vc": "36p_1x1_10-30s",
    "vd": "64p_9x16_ge30s",
    "ve": "36p_16x9_5-10s",
}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _check_consistent(out: Path, expected_ids: set[str], by_id: dict[str, dict]) -> dict:
    samples = list(read_shards(str(out)))
    keys = [s["__key__"] for s in samples]
    assert sorted(keys) == sorted(expected_ids)  # every clip exactly once
    for s in samples:
        src = by_id[s["__key__"]]
        assert s["mp4"] == Path(src["clip_uri"]).read_bytes()
        assert s["txt"] == src["caption"]
        meta = s["json"]
        assert meta["clip_id"] == s["__key__"] and meta["video_id"] == src["video_id"]
        assert meta["motion_score"] is None and meta["blur_score"] == 3.5
        assert "embedding" not in meta and "extra" not in meta
        bucket = EXPECTED_BUCKET[s["__key__"][:2]]
        assert meta["bucket"] == bucket and s["__shard__"].startswith(bucket + "/")

    manifest = json.loads((out / "manifest.json").read_text())
    tars = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tar"))
    assert [s["path"] for s in manifest["shards"]] == tars
    assert (
        manifest["n_samples"]
        == len(expected_ids)
        == sum(s["n_samples"] for s in manifest["shards"])
    )
    for s in manifest["shards"]:
        tar = out / s["path"]
        assert s["bytes"] == tar.stat().st_size
        assert s["bucket"] == s["path"].split("/")[0]
        assert 1 <= s["n_samples"] <= CFG.max_clips_per_shard
        with tarfile.open(tar) as tf:
            names = tf.getnames()
        assert s["clip_ids"] == [n.split(".")[0] for n in names[::3]]
        assert sorted(names) == sorted(
            f"{k}.{e}" for k in s["clip_ids"] for e in ("json", "mp4", "txt")
        )
        # Energon .tar.idx: one uint64 per sample (offset of its first header) + end offset.
        raw = (out / (s["path"] + ".idx")).read_bytes()
        offsets = struct.unpack(f"<{len(raw) // 8}Q", raw)
        assert len(offsets) == s["n_samples"] + 1
        with open(tar, "rb") as fh:  # read each sample at its offset, as Energon's ITarFile does
            for key, off in zip(s["clip_ids"], offsets[:-1], strict=True):
                fh.seek(off)
                assert tarfile.open(fileobj=fh, mode="r:").next().name == key + ".json"
        data = tar.read_bytes()
        assert data[offsets[-1] :].strip(b"\0") == b""  # only the end-of-archive blocks
        assert b"PaxHeader" not in data

    meta = out / ".nv-meta"
    info = yaml.safe_load((meta / ".info.yaml").read_text())
    assert info == {"shard_counts": {s["path"]: s["n_samples"] for s in manifest["shards"]}}
    split = yaml.safe_load((meta / "split.yaml").read_text())
    assert split["exclude"] == [] and set(split["split_parts"]) == {"train", "val", "test"}
    in_splits = [p for part in split["split_parts"].values() for p in part]
    assert sorted(in_splits) == tars
    dataset = yaml.safe_load((meta / "dataset.yaml").read_text())
    assert dataset == {"__module__": "megatron.energon", "__class__": "CrudeWebdataset"}
    return manifest


def test_write_and_append(clips, tmp_path):
    out = tmp_path / "shards"
    by_id = {c["clip_id"]: c for c in clips}
    first = clips[:6]
    res1 = write_shards(first, str(out), CFG, run_id="run1")
    assert set(res1) == {c["clip_id"] for c in first}
    for cid, path in res1.items():
        assert path.startswith(EXPECTED_BUCKET[cid[:2]] + "/run1-") and path.endswith(".tar")
        assert (out / path).is_file()
    assert res1["va_0000"] == res1["va_0001"] != res1["va_0002"]  # 2 per shard
    m1 = _check_consistent(out, set(res1), by_id)
    assert m1["n_shards"] == 5
    before = {p: _sha(p) for p in out.rglob("*.tar")}

    # A later run: new clips plus one already sharded (not written twice).
    res2 = write_shards(clips[5:], str(out), CFG, run_id="run2")
    assert res2["vd_0000"] == res1["vd_0000"]
    assert all("/run2-" in res2[c["clip_id"]] for c in clips[6:])
    assert {p: _sha(p) for p in before} == before  # earlier tars untouched
    m2 = _check_consistent(out, set(by_id), by_id)
    assert {s["path"] for s in m1["shards"]} < {s["path"] for s in m2["shards"]}
    assert {s["run_id"] for s in m2["shards"]} == {"run1", "run2"}

    # Same run id again with a new clip: a new tar name, nothing overwritten.
    extra = dict(clips[0], clip_id="va_0009")
    res3 = write_shards([extra], str(out), CFG, run_id="run1")
    assert res3["va_0009"] == "36p_16x9_0-5s/run1-000002.tar"
    assert {p: _sha(p) for p in before} == before
    by_id["va_0009"] = extra
    _check_consistent(out, set(by_id), by_id)


def test_val_split_is_deterministic(clips, tmp_path):
    out = tmp_path / "s"
    write_shards(clips, str(out), CFG, run_id="r", val_fraction=1.0)
    split = yaml.safe_load((out / ".nv-meta" / "split.yaml").read_text())
    assert split["split_parts"]["train"] == [] and len(split["split_parts"]["val"]) == 7
    write_shards(clips, str(out), CFG, run_id="r2", val_fraction=0.0)  # all already sharded
    split = yaml.safe_load((out / ".nv-meta" / "split.yaml").read_text())
    assert len(split["split_parts"]["train"]) == 7 and split["split_parts"]["val"] == []


def test_rejects_bad_ids(clips, tmp_path):
    with pytest.raises(ValueError):
        write_shards(clips[:1], str(tmp_path), CFG, run_id="bad.id")
    with pytest.raises(ValueError):
        write_shards([dict(clips[0], clip_id="a.b")], str(tmp_path), CFG, run_id="r")
    with pytest.raises(ValueError):
        write_shards([clips[0], clips[0]], str(tmp_path), CFG, run_id="r")


def test_bucket_names():
    assert aspect_name(1920, 1080) == "16x9"
    assert aspect_name(456, 256) == "16x9"  # transcoded 256p keeps ~16:9
    assert aspect_name(640, 480) == "4x3"
    assert aspect_name(1080, 1920) == "9x16"
    assert aspect_name(256, 256) == "1x1"
    assert aspect_name(500, 100) == "5x1"
    assert length_name(4.99, [5, 10, 30]) == "0-5s"
    assert length_name(10.0, [5, 10, 30]) == "10-30s"
    assert length_name(31, [5, 10, 30]) == "ge30s"
    assert length_name(2.0, [2.5]) == "0-2.5s"
