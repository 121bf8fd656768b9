"""The shard-folder catalogue (``tasks/shard_manifest.py``) on a folder of small tars written
with the project's tar writer: the manifest, its reuse of unchanged shards, the Energon
``.nv-meta`` and the sample reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from worldmill.shards import TarSampleWriter, read_tar_index
from worldmill.tasks.shard_manifest import (
    MANIFEST,
    NV_META,
    read_shards,
    scan_shards,
    write_energon_meta,
    write_manifest,
)


def _shard(path: Path, keys: list[str], mp4_bytes: int = 700) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = TarSampleWriter(path, mtime=0)
    for k in keys:
        w.write({"__key__": k, "mp4": b"\x00" * mp4_bytes, "json": json.dumps({"id": k}), "txt": k})
    w.close()


def _folder(tmp_path: Path) -> Path:
    out = tmp_path / "shards"
    _shard(out / "16x9" / "short" / "run1-000000.tar", ["a", "b", "c"])
    _shard(out / "16x9" / "long" / "run2-000003.tar", ["d"])
    return out


def test_scan_counts_every_shard_and_writes_its_index(tmp_path):
    out = _folder(tmp_path)
    m = scan_shards(out)
    assert (m["n_shards"], m["n_samples"]) == (2, 4)
    assert m["buckets"] == {
        "16x9/long": {"n_shards": 1, "n_samples": 1},
        "16x9/short": {"n_shards": 1, "n_samples": 3},
    }
    by_path = {s["path"]: s for s in m["shards"]}
    short = by_path["16x9/short/run1-000000.tar"]
    assert (short["run_id"], short["clip_ids"]) == ("run1", ["a", "b", "c"])
    assert by_path["16x9/long/run2-000003.tar"]["run_id"] == "run2"
    tar = out / short["path"]
    assert short["bytes"] == tar.stat().st_size
    assert len(read_tar_index(tar)) == 3 + 1  # each sample's start, then the end


def test_rescan_reuses_unchanged_shards_and_reindexes_changed_ones(tmp_path):
    out = _folder(tmp_path)
    write_manifest(out, scan_shards(out))
    previous = json.loads((out / MANIFEST).read_text())
    entry = {s["path"]: s for s in previous["shards"]}
    long, short = entry["16x9/long/run2-000003.tar"], entry["16x9/short/run1-000000.tar"]
    # An entry whose tar kept its size and its .idx is reused as it is (not read again) ...
    long["clip_ids"] = ["kept-from-manifest"]
    m = scan_shards(out, previous)
    assert {s["path"]: s for s in m["shards"]}[long["path"]]["clip_ids"] == ["kept-from-manifest"]
    # ... a tar whose size changed is indexed again, and so is one whose .idx is missing.
    _shard(out / long["path"], ["d", "e"], mp4_bytes=20_000)
    short["clip_ids"] = ["stale"]
    (out / "16x9" / "short" / "run1-000000.tar.idx").unlink()
    m = scan_shards(out, previous)
    by_path = {s["path"]: s for s in m["shards"]}
    assert by_path[long["path"]]["clip_ids"] == ["d", "e"]
    assert by_path[long["path"]]["n_samples"] == 2 and m["n_samples"] == 5
    assert by_path[short["path"]]["clip_ids"] == ["a", "b", "c"]
    assert (out / "16x9" / "short" / "run1-000000.tar.idx").is_file()


def test_rescan_reindexes_a_tar_rewritten_with_the_same_size(tmp_path):
    """Tars are padded to 10 KiB records: different samples can give the same size. A tar
    newer than its index is read again all the same."""
    out = _folder(tmp_path)
    previous = scan_shards(out)
    rel = "16x9/short/run1-000000.tar"
    tar, idx = out / rel, out / (rel + ".idx")
    size = tar.stat().st_size
    _shard(tar, ["x", "y", "z"])  # same sample sizes, other keys
    assert tar.stat().st_size == size
    t = idx.stat().st_mtime_ns
    os.utime(tar, ns=(t + 1000, t + 1000))  # written (1 us) after its index
    m = scan_shards(out, previous)
    entry = {s["path"]: s for s in m["shards"]}[rel]
    assert entry["clip_ids"] == ["x", "y", "z"] and idx.stat().st_mtime_ns > t + 1000
    # Indexed again, it is unchanged since: the next scan reuses its entry without reading it.
    entry["clip_ids"] = ["kept-from-manifest"]
    again = {s["path"]: s for s in scan_shards(out, m)["shards"]}
    assert again[rel]["clip_ids"] == ["kept-from-manifest"]


def test_energon_meta_lists_every_non_empty_shard_in_one_split(tmp_path):
    out = _folder(tmp_path)
    _shard(out / "empty" / "run3-000000.tar", [])
    m = scan_shards(out)
    write_energon_meta(out, m, val_fraction=0.0)
    info = yaml.safe_load((out / NV_META / ".info.yaml").read_text())
    assert info["shard_counts"] == {
        "16x9/long/run2-000003.tar": 1,
        "16x9/short/run1-000000.tar": 3,
    }
    split = yaml.safe_load((out / NV_META / "split.yaml").read_text())["split_parts"]
    assert sorted(split["train"]) == sorted(info["shard_counts"]) and split["val"] == []
    write_energon_meta(out, m, val_fraction=1.0)
    split = yaml.safe_load((out / NV_META / "split.yaml").read_text())["split_parts"]
    assert split["train"] == [] and sorted(split["val"]) == sorted(info["shard_counts"])
    dataset = yaml.safe_load((out / NV_META / "dataset.yaml").read_text())
    assert dataset == {"__module__": "megatron.energon", "__class__": "CrudeWebdataset"}


def test_read_shards_yields_every_sample_with_decoded_parts(tmp_path):
    out = _folder(tmp_path)
    write_energon_meta(out, scan_shards(out))  # .nv-meta is never read as a shard
    samples = list(read_shards(str(out)))
    assert [s["__key__"] for s in samples] == ["d", "a", "b", "c"]  # by shard path
    assert samples[0]["__shard__"] == "16x9/long/run2-000003.tar"
    assert samples[1]["json"] == {"id": "a"} and samples[1]["txt"] == "a"
    assert samples[1]["mp4"] == b"\x00" * 700
