"""Write kept clips as WebDataset shards, bucketed, append-only, with Megatron-Energon metadata.

Layout under ``out_dir``::

    out_dir/
      256p_16x9_5-10s/<run_id>-000000.tar       # samples <clip_id>.mp4 / .json / .txt
                                                # (+ .actions.npy for rollout clips)
      256p_16x9_5-10s/<run_id>-000000.tar.idx   # Energon tar index (sample byte offsets)
      ...
      manifest.json                             # every shard: path, bucket, n_samples, ...
      .nv-meta/.info.yaml                       # Energon: shard_counts
      .nv-meta/split.yaml                       # Energon: split_parts train/val/test
      .nv-meta/dataset.yaml                     # Energon: CrudeWebdataset

* Buckets: ``<height>p_<aspect>_<length>``; aspect is the nearest of 21x9, 16x9, 3x2,
  4x3, 1x1, 3x4, 2x3, 9x16 (within 6 %, else ``<w>x<h>`` reduced); length bucket edges are
  ``cfg.length_buckets_s`` (``[5, 10, 30]`` -> ``0-5s``, ``5-10s``, ``10-30s``, ``ge30s``).
* Append-only: a run writes new tars named ``<run_id>-NNNNNN.tar`` (numbering continues past
  any existing tar of the same run id), each written to ``.tmp`` first and renamed, so a
  crash never leaves a truncated ``.tar``. A clip id already present in any shard is not
  written again (its existing shard path is returned): re-running a flow is idempotent.
* ``manifest.json`` and ``.nv-meta`` are rewritten over *all* tars under ``out_dir`` after
  each call (tars already in the manifest with unchanged size are not re-read), under an
  exclusive lock file so concurrent writers do not interleave. The manifest, the Energon
  format and ``read_shards`` are in ``tasks/shard_manifest.py``.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import fsspec
from prefect import task

from worldmill.config import ShardConfig
from worldmill.shards import TarSampleWriter
from worldmill.tasks.actions import actions_npy
from worldmill.tasks.shard_manifest import (
    SHARD_RE,
    scan_shards,
    write_energon_meta,
    write_manifest,
)

_ASPECTS = {
    "21x9": 21 / 9,
    "16x9": 16 / 9,
    "3x2": 3 / 2,
    "4x3": 4 / 3,
    "1x1": 1.0,
    "3x4": 3 / 4,
    "2x3": 2 / 3,
    "9x16": 9 / 16,
}
_ASPECT_TOL = 0.06  # relative distance to snap to a standard aspect ratio


def aspect_name(width: int, height: int) -> str:
    """``1920x1080`` -> ``16x9``; odd ratios -> reduced ``<w>x<h>`` (at most /50)."""
    if width <= 0 or height <= 0:
        return "unknown"
    r = width / height
    name, ref = min(_ASPECTS.items(), key=lambda kv: abs(math.log(r / kv[1])))
    if abs(math.log(r / ref)) <= math.log1p(_ASPECT_TOL):
        return name
    f = Fraction(width, height).limit_denominator(50)
    return f"{f.numerator}x{f.denominator}"


def length_name(duration_s: float, edges: list[float]) -> str:
    """Length bucket of a duration for sorted ``edges`` (e.g. 7.0, [5, 10, 30] -> ``5-10s``)."""
    e = sorted(float(x) for x in edges)

    def fmt(x: float) -> str:
        return f"{x:g}"

    lo = 0.0
    for hi in e:
        if duration_s < hi:
            return f"{fmt(lo)}-{fmt(hi)}s"
        lo = hi
    return f"ge{fmt(lo)}s"


def _duration(c: dict[str, Any]) -> float:
    if c.get("end_s") is not None and c.get("start_s") is not None:
        return float(c["end_s"]) - float(c["start_s"])
    fps = float(c.get("fps") or 0)
    return float(c.get("num_frames") or 0) / fps if fps > 0 else 0.0


def bucket_name(clip: dict[str, Any], cfg: ShardConfig) -> str:
    """``<height>p_<aspect>_<length>`` for one clip dict."""
    w, h = int(clip.get("width") or 0), int(clip.get("height") or 0)
    return f"{h}p_{aspect_name(w, h)}_{length_name(_duration(clip), cfg.length_buckets_s)}"


def _json_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def sample_metadata(clip: dict[str, Any], bucket: str) -> dict[str, Any]:
    """The ``.json`` part: every scalar field of the clip (NaN/inf -> null) plus the bucket.
    Lists (embeddings) and nested values are left out; ``extra`` scalars are flattened in."""
    meta: dict[str, Any] = {}
    items = list(clip.items())
    extra = clip.get("extra")
    if isinstance(extra, dict):
        items += [(k, v) for k, v in extra.items() if k not in clip]
    for k, v in items:
        if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
            v = v.item()  # numpy scalar
        if not _json_scalar(v):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        meta[k] = v
    meta["duration_s"] = _duration(clip)
    meta["bucket"] = bucket
    return meta


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".shard.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as f:
        return f.read()


def _next_index(bucket_dir: Path, run_id: str) -> int:
    used = [
        int(m["idx"])
        for p in bucket_dir.glob(f"{glob_escape(run_id)}-*.tar*")
        if (m := SHARD_RE.match(p.name.removesuffix(".tmp").removesuffix(".idx")))
        and m["run"] == run_id
    ]
    return max(used, default=-1) + 1


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


class _ShardSeries:
    """Consecutive tars ``<run_id>-NNNNNN.tar`` in one bucket folder, rolled over by count
    and size; each is written as ``.tmp`` and renamed when complete."""

    def __init__(self, bdir: Path, run_id: str, start: int, cfg: ShardConfig):
        self.bdir, self.run_id, self.idx, self.cfg = bdir, run_id, start, cfg
        self.writer: TarSampleWriter | None = None
        self.path = self.tmp = bdir
        self.n = self.size = 0

    def write(self, key: str, parts: dict[str, bytes]) -> Path:
        est = sum(len(v) for v in parts.values()) + 1024 * (len(parts) + 1)  # + tar headers
        if self.writer is not None and (
            self.n >= self.cfg.max_clips_per_shard or self.size + est > self.cfg.max_shard_bytes
        ):
            self.close()
            self.idx += 1
        if self.writer is None:
            self.path = self.bdir / f"{self.run_id}-{self.idx:06d}.tar"
            self.tmp = self.path.with_name(self.path.name + ".tmp")
            # Integer mtime: plain ustar headers, no PAX extension records.
            self.writer = TarSampleWriter(self.tmp, mtime=int(time.time()))
            self.n = self.size = 0
        self.writer.write({"__key__": key, **parts})
        self.n += 1
        self.size += est
        return self.path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            os.replace(self.tmp, self.path)  # the .tar.idx is written by scan_shards
            self.writer = None


def write_shards(
    clips: list[dict[str, Any]],
    out_dir: str,
    cfg: ShardConfig,
    run_id: str,
    *,
    val_fraction: float = 0.0,
) -> dict[str, str]:
    """Write ``clips`` into new bucketed WebDataset tars and refresh manifest + ``.nv-meta``.

    Args:
        clips: dicts with at least ``clip_id``, ``clip_uri`` (mp4, local path or fsspec
            URI), ``caption``, ``width``, ``height``, ``fps``, ``start_s``, ``end_s``,
            ``video_id``, ``num_frames``; other scalar fields go into the ``.json``.
        out_dir: shard root (created if missing).
        cfg: ``max_clips_per_shard``, ``max_shard_bytes``, ``length_buckets_s``.
        run_id: names this call's tars (``<run_id>-NNNNNN.tar``); no dots or slashes.
        val_fraction: share of shards put in the Energon ``val`` split (by a stable hash of
            the shard path, so a shard never changes split when later runs append).

    Returns:
        ``{clip_id: shard path relative to out_dir}`` for every given clip (for clips that
        were already sharded earlier, their existing shard).
    """
    if not run_id or any(ch in run_id for ch in "/\\.") or run_id.startswith("-"):
        raise ValueError(f"run_id {run_id!r} must be non-empty, without '.', '/' or '\\'")
    seen_ids = [c["clip_id"] for c in clips]
    if len(set(seen_ids)) != len(seen_ids):
        raise ValueError("clip ids must be unique")
    for cid in seen_ids:
        if not cid or "." in cid or "/" in cid:
            raise ValueError(f"clip id {cid!r} must be non-empty without '.' or '/'")
    out = Path(out_dir)
    with _locked(out):
        manifest = scan_shards(out)
        existing = {cid: s["path"] for s in manifest["shards"] for cid in s["clip_ids"]}
        result = {c["clip_id"]: existing[c["clip_id"]] for c in clips if c["clip_id"] in existing}

        by_bucket: dict[str, list[dict[str, Any]]] = {}
        for c in clips:
            if c["clip_id"] not in existing:
                by_bucket.setdefault(bucket_name(c, cfg), []).append(c)

        for bucket in sorted(by_bucket):
            bdir = out / bucket
            bdir.mkdir(parents=True, exist_ok=True)
            w = _ShardSeries(bdir, run_id, _next_index(bdir, run_id), cfg)
            try:
                for c in sorted(by_bucket[bucket], key=lambda d: d["clip_id"]):
                    data = _read_bytes(str(c["clip_uri"]))
                    acts = c.get("actions")  # rollout clips: per-frame actions (JSON)
                    c = {k: v for k, v in c.items() if k != "actions"}
                    meta = json.dumps(sample_metadata(c, bucket), sort_keys=True).encode()
                    txt = str(c.get("caption") or "").encode()
                    parts = {"mp4": data, "json": meta, "txt": txt}
                    if acts:
                        parts["actions.npy"] = actions_npy(acts)
                    path = w.write(c["clip_id"], parts)
                    result[c["clip_id"]] = path.relative_to(out).as_posix()
            finally:
                w.close()

        manifest = scan_shards(out, previous=manifest)
        write_manifest(out, manifest)
        write_energon_meta(out, manifest, val_fraction=val_fraction)
    return result


__all__ = [
    "aspect_name",
    "bucket_name",
    "length_name",
    "sample_metadata",
    "write_shards",
]


# --------------------------------------------------------------------------- Prefect task

SHARD_COLUMNS = [
    "clip_id", "video_id", "clip_uri", "caption", "width", "height", "fps", "num_frames",
    "start_s", "end_s", "motion_score", "quality_score", "text_score", "cluster", "topic",
    "source_path",
]  # fmt: skip


@task(name="shard", retries=2, retry_delay_seconds=5)
def shard_task(out: str, cfg: ShardConfig, run_id: str) -> dict:
    """Prefect task: write every kept clip that is in no shard yet into new (append-only)
    tars under ``OUT/shards`` and record each clip's shard. Returns the new shard paths."""
    from worldmill.store import Store

    store = Store(out)
    t = store.clips()
    rollout = ["actions", "action_start_frame"]  # columns only rollout clips have
    cols = SHARD_COLUMNS + [c for c in rollout if t is not None and c in t.schema.names]
    rows = store.clip_rows(cols, where="kept = true AND shard = ''")
    if not rows:
        return {"new_shards": [], "clips": 0}
    shard_dir = os.path.join(out, "shards")
    placed = write_shards(rows, shard_dir, cfg, run_id)
    store.update_clips([{"clip_id": cid, "shard": path} for cid, path in placed.items()])
    return {"new_shards": sorted(set(placed.values())), "clips": len(placed)}
