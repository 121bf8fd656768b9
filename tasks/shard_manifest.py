"""The catalogue of a shard folder: ``manifest.json`` over every tar, Megatron-Energon's
``.nv-meta`` and a reader of every sample -- what ``tasks/shard.py`` refreshes after each
write (layout in its docstring).

Energon format (``megatron.energon`` ``WebdatasetInfo`` / ``WebdatasetSplits``): shard
names in ``.info.yaml`` and ``split.yaml`` are paths relative to ``out_dir``; each shard needs
a ``<name>.tar.idx`` next to it (little-endian uint64 byte offset of each sample's first
member, plus the end offset), which is what ``energon prepare`` would write.
``dataset.yaml`` declares a ``CrudeWebdataset``: samples come to the training task encoder's
cooker as raw dicts with ``mp4`` (bytes), ``json`` and ``txt`` parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from worldmill.shards import write_tar_index

MANIFEST = "manifest.json"
NV_META = ".nv-meta"
SHARD_RE = re.compile(r"^(?P<run>.+)-(?P<idx>\d{6})\.tar$")


def scan_shards(out: Path, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Manifest over every ``*.tar`` under ``out`` (reusing unchanged entries)."""
    if previous is None:
        mp = out / MANIFEST
        previous = json.loads(mp.read_text()) if mp.is_file() else {"shards": []}
    known = {s["path"]: s for s in previous.get("shards", [])}
    shards = []
    for tar in sorted(out.rglob("*.tar")):
        rel = tar.relative_to(out).as_posix()
        if rel.startswith(NV_META + "/"):
            continue
        st = tar.stat()
        nbytes = st.st_size
        old = known.get(rel)
        idx_file = tar.with_name(tar.name + ".idx")
        # Reused only when the tar kept its size and is no newer than its index: tars are
        # padded to 10 KiB records, so a tar rewritten with different samples can keep its
        # size, but not an mtime older than the index written after it.
        try:
            idx_mtime = idx_file.stat().st_mtime_ns
        except FileNotFoundError:  # no index yet: the tar is read below
            idx_mtime = -1
        if old is not None and old.get("bytes") == nbytes and st.st_mtime_ns <= idx_mtime:
            shards.append(old)
            continue
        n, keys = write_tar_index(tar)  # also (re)creates a missing .tar.idx
        m = SHARD_RE.match(tar.name)
        shards.append(
            {
                "path": rel,
                "bucket": tar.parent.relative_to(out).as_posix(),
                "run_id": m["run"] if m else "",
                "n_samples": n,
                "bytes": nbytes,
                "clip_ids": keys,
            }
        )
    buckets: dict[str, dict[str, int]] = {}
    for s in shards:
        b = buckets.setdefault(s["bucket"], {"n_shards": 0, "n_samples": 0})
        b["n_shards"] += 1
        b["n_samples"] += s["n_samples"]
    return {
        "version": 1,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n_shards": len(shards),
        "n_samples": sum(s["n_samples"] for s in shards),
        "buckets": dict(sorted(buckets.items())),
        "shards": shards,
    }


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    _atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))


def _split_of(path: str, val_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha1(path.encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_fraction else "train"


def write_energon_meta(out: Path, manifest: dict[str, Any], val_fraction: float = 0.0) -> None:
    """(Re)write ``out/.nv-meta/{.info.yaml, split.yaml, dataset.yaml}`` from a manifest."""
    meta = out / NV_META
    shards = [s for s in manifest["shards"] if s["n_samples"] > 0]
    info = {"shard_counts": {s["path"]: int(s["n_samples"]) for s in shards}}
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for s in shards:
        parts[_split_of(s["path"], val_fraction)].append(s["path"])
    split = {"exclude": [], "split_parts": parts}
    dataset = (
        "# worldmill clips: <clip_id>.mp4 (H.264 bytes), .txt (caption), .json (metadata).\n"
        "# Crude dataset: samples reach your TaskEncoder's @cooker as dicts with keys\n"
        "# 'mp4', 'txt', 'json' (plus __key__, ...).\n"
        "__module__: megatron.energon\n"
        "__class__: CrudeWebdataset\n"
    )
    _atomic_write(meta / ".info.yaml", yaml.safe_dump(info, sort_keys=True))
    _atomic_write(meta / "split.yaml", yaml.safe_dump(split, sort_keys=False))
    _atomic_write(meta / "dataset.yaml", dataset)


def read_shards(out_dir: str) -> Iterator[dict[str, Any]]:
    """Iterate every sample of every shard under ``out_dir`` (sorted by shard path).

    Yields ``{"__key__": clip_id, "__shard__": relative tar path, "mp4": bytes,
    "txt": str, "json": dict}`` (other parts as raw bytes).
    """
    out = Path(out_dir)
    for tar in sorted(out.rglob("*.tar")):
        rel = tar.relative_to(out).as_posix()
        if rel.startswith(NV_META + "/"):
            continue
        sample: dict[str, Any] = {}
        with tarfile.open(tar, "r:") as tf:
            for m in tf:
                if not m.isreg() or "." not in m.name:
                    continue
                key, ext = m.name.split(".", 1)
                if sample and sample["__key__"] != key:
                    yield sample
                    sample = {}
                if not sample:
                    sample = {"__key__": key, "__shard__": rel}
                f = tf.extractfile(m)
                raw = f.read() if f is not None else b""
                if ext == "json":
                    sample[ext] = json.loads(raw)
                elif ext == "txt":
                    sample[ext] = raw.decode()
                else:
                    sample[ext] = raw
        if sample:
            yield sample


__all__ = [
    "SHARD_RE",
    "read_shards",
    "scan_shards",
    "write_energon_meta",
    "write_manifest",
]
