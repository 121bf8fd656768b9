"""The LanceDB store behind a curation output root: tables ``videos`` and ``clips``.

One writer at a time: Prefect tasks on Dask workers compute and write *staging* files
(URIs); the flow commits them here. Every write is keyed (``video_id``, ``clip_id`` are
deterministic hashes/indices), so a killed-and-rerun flow never duplicates rows.

Columns beyond the contract (a plug-in stage's ``clip.extra["blur_score"]``) are added to
the ``clips`` schema on first sight; older rows read them as null.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Lance sizes its compute pool as "CPUs - 2" (2 cores reserved for I/O), i.e. ONE thread
# on a 2-core machine: an ANN search then used half of it. Read once, when Lance first
# runs a compute task; a value the user set wins.
os.environ.setdefault("LANCE_CPU_THREADS", str(max(1, os.cpu_count() or 1)))

import lancedb  # noqa: E402
import numpy as np
import pyarrow as pa

from worldmill.records import Clip, Video

VIDEOS, CLIPS = "videos", "clips"

VIDEO_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("status", pa.string()),  # ok | failed | duplicate
        ("error", pa.string()),  # "" when ok
        ("duration_s", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("num_frames", pa.int64()),
        ("codec", pa.string()),
        ("size_bytes", pa.int64()),
        ("dup_of", pa.string()),
        ("run_id", pa.string()),
    ]
)

# Text embedding width of all-MiniLM-L6-v2 (the default caption embedder).
TEXT_DIM = 384

_CLIP_BASE = [
    ("clip_id", pa.string()),
    ("video_id", pa.string()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
    ("clip_uri", pa.string()),
    ("kept", pa.bool_()),
    ("reject_reason", pa.string()),
    ("motion_score", pa.float64()),
    ("quality_score", pa.float64()),
    ("text_score", pa.float64()),
    ("caption", pa.string()),
    ("dup_of", pa.string()),
    ("dup_reason", pa.string()),
    ("cluster", pa.int32()),
    ("topic", pa.string()),
    ("shard", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("fps", pa.float64()),
    ("num_frames", pa.int64()),
    ("source_path", pa.string()),
    ("errors", pa.string()),  # JSON {stage: message}
    ("run_id", pa.string()),
]
_VECTOR_COLS = ("embedding", "visual_embedding")


def clip_schema(visual_dim: int, text_dim: int = TEXT_DIM) -> pa.Schema:
    fields = [pa.field(n, t) for n, t in _CLIP_BASE]
    fields.insert(11, pa.field("embedding", pa.list_(pa.float32(), text_dim)))
    fields.insert(12, pa.field("visual_embedding", pa.list_(pa.float32(), visual_dim)))
    return pa.schema(fields)


def _arrow_type(value: Any) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


_write_lock = threading.Lock()


class Store:
    """LanceDB tables under ``<out>/lancedb``."""

    def __init__(self, out: str | Path):
        self.out = str(out)
        self.uri = str(Path(out) / "lancedb") if "://" not in str(out) else f"{out}/lancedb"
        self.db = lancedb.connect(self.uri)

    # ---------------------------------------------------------------- tables
    def _names(self) -> set[str]:
        res = self.db.list_tables()
        names = getattr(res, "tables", res)
        return set(names)

    def has(self, name: str) -> bool:
        return name in self._names()

    def videos(self):
        if not self.has(VIDEOS):
            return self.db.create_table(VIDEOS, schema=VIDEO_SCHEMA, exist_ok=True)
        return self.db.open_table(VIDEOS)

    def clips(self, visual_dim: int | None = None):
        if not self.has(CLIPS):
            if visual_dim is None:
                return None
            return self.db.create_table(CLIPS, schema=clip_schema(visual_dim), exist_ok=True)
        return self.db.open_table(CLIPS)

    # ---------------------------------------------------------------- reads
    def video_rows(self, columns: list[str] | None = None) -> list[dict]:
        t = self.videos()
        return t.to_arrow().select(columns).to_pylist() if columns else t.to_arrow().to_pylist()

    def clip_table(self, columns: list[str] | None = None, where: str | None = None) -> pa.Table:
        """Rows as Arrow; ``columns`` and the ``where`` filter are pushed down to LanceDB (only
        the named columns are read: a scalar read never touches the vector columns)."""
        t = self.clips()
        if t is None:
            return pa.table({c: [] for c in (columns or ["clip_id"])})
        q = t.search().limit(None)
        if where:
            q = q.where(where)
        if columns:
            q = q.select(columns)
        return q.to_arrow()

    def clip_batches(
        self, columns: list[str], where: str | None = None, batch_size: int = 50_000
    ) -> Iterable[pa.RecordBatch]:
        """Stream ``columns`` of the rows matching ``where`` in Arrow batches (bounded memory:
        1M x 384-d float32 vectors are 1.5 GB)."""
        t = self.clips()
        if t is None:
            return
        q = t.search().limit(None).select(columns)
        if where:
            q = q.where(where)
        for batch in q.to_batches(batch_size):
            if batch.num_rows:
                yield batch.select(columns)

    def clip_rows(self, columns: list[str] | None = None, where: str | None = None) -> list[dict]:
        return self.clip_table(columns, where).to_pylist()

    def table(self, name: str):
        """Open table ``name`` (None when it does not exist)."""
        return self.db.open_table(name) if self.has(name) else None

    def count(self, name: str, where: str | None = None) -> int:
        if not self.has(name):
            return 0
        return self.db.open_table(name).count_rows(where)

    # ---------------------------------------------------------------- writes
    def upsert_videos(self, videos: Iterable[Video], run_id: str = "") -> None:
        rows = []
        for v in videos:
            d = {f.name: getattr(v, f.name, None) for f in VIDEO_SCHEMA if f.name != "run_id"}
            d["run_id"] = run_id
            rows.append(d)
        if not rows:
            return
        data = pa.Table.from_pylist(rows, schema=VIDEO_SCHEMA)
        with _write_lock:
            t = self.videos()
            t.merge_insert(
                "video_id"
            ).when_matched_update_all().when_not_matched_insert_all().execute(data)

    def replace_clips(self, video_ids: list[str], clips: list[Clip], run_id: str = "") -> None:
        """Replace all clips of ``video_ids`` by ``clips`` (idempotent per video)."""
        rows = [clip_row(c, run_id) for c in clips]
        with _write_lock:
            dim = _visual_dim(rows)
            t = self.clips(visual_dim=dim or 1)
            if t is None:
                return
            if video_ids:
                ids = ", ".join(_sql_str(v) for v in video_ids)
                t.delete(f"video_id IN ({ids})")
            if rows:
                t.add(self._align(t, rows), on_bad_vectors="null")

    def update_clips(self, updates: list[dict]) -> None:
        """Update columns of existing clips: each dict has ``clip_id`` plus new values.

        Only the named columns are written (rows with the same set of keys go in one
        column-subset merge); the other columns, vectors included, are not read or rewritten.
        Unknown ``clip_id``s are ignored."""
        groups: dict[tuple[str, ...], list[dict]] = {}
        for u in updates:
            groups.setdefault(tuple(sorted(k for k in u if k != "clip_id")), []).append(u)
        for keys, rows in groups.items():
            if keys:
                self.update_clip_columns(
                    {
                        "clip_id": [r["clip_id"] for r in rows],
                        **{k: [r[k] for r in rows] for k in keys},
                    }
                )

    def update_clip_columns(self, columns: dict[str, Any] | pa.Table) -> int:
        """Arrow-native update: ``columns`` holds ``clip_id`` and equally long value columns
        (lists, numpy arrays or Arrow arrays); those columns of the matching rows are set.
        New extra columns are added to the schema first. Returns the rows given."""
        tab = columns if isinstance(columns, pa.Table) else None
        names = tab.column_names if tab is not None else list(columns)
        n = tab.num_rows if tab is not None else len(columns["clip_id"])
        if n == 0 or names == ["clip_id"]:
            return 0
        with _write_lock:
            t = self.clips()
            if t is None:
                return 0
            schema = t.schema
            new = []
            for k in names:
                if k not in schema.names:
                    vals = tab[k] if tab is not None else columns[k]
                    first = next((v for v in _pylist(vals) if v is not None), None)
                    if first is not None:
                        new.append(pa.field(k, _arrow_type(first)))
            if new:
                t.add_columns(new)
                schema = t.schema
            cols = {}
            for k in names:
                if k not in schema.names:
                    continue  # an all-null new column: nothing to write
                typ = schema.field(k).type
                vals = tab[k] if tab is not None else columns[k]
                cols[k] = _to_arrow(vals, typ)
            data = pa.table(cols)
            t.merge_insert("clip_id").when_matched_update_all().execute(data, on_bad_vectors="null")
        return n

    def _align(self, t, rows: list[dict]) -> pa.Table:
        """Rows -> an Arrow table in the table's schema, adding new extra columns first."""
        schema = t.schema
        new_fields = {}
        for r in rows:
            for k, v in r.items():
                if k not in schema.names and k not in new_fields and v is not None:
                    new_fields[k] = pa.field(k, _arrow_type(v))
        if new_fields:
            t.add_columns(list(new_fields.values()))
            schema = t.schema
        cols = {}
        for f in schema:
            vals = [_coerce(r.get(f.name), f.type) for r in rows]
            cols[f.name] = pa.array(vals, type=f.type)
        return pa.table(cols, schema=schema)

    def ensure_vector_index(self, column: str, min_rows: int) -> bool:
        """Make sure ``column`` has a cosine ANN index once the table has ``min_rows`` rows.

        Built once (parameters in :func:`vector_index_config`); later passes only fold new
        rows into it (``optimize``, no retraining) once more than ``REINDEX_FRACTION`` of
        the rows are unindexed (LanceDB searches unindexed rows exhaustively meanwhile, so
        answers stay complete). Returns True when an index covers the column."""
        t = self.clips()
        if t is None:
            return False
        n = t.count_rows()
        if n < min_rows:
            return False
        name = f"{column}_idx"
        try:
            stats = t.index_stats(name) if name in {i.name for i in t.list_indices()} else None
            if stats is None or stats.distance_type != "cosine":
                t.create_index(column, config=vector_index_config(n), name=name, replace=True)
            elif stats.num_unindexed_rows > REINDEX_FRACTION * max(1, stats.num_indexed_rows):
                t.optimize()  # adds the new rows to the existing partitions
            return True
        except Exception:  # index build is an optimisation; brute force still answers
            return False


# Index parameters, chosen by measured recall (bench/RESULTS.md, "curation at a million
# clips"): IVF_PQ with ~sqrt(N) partitions and 8-d sub-vectors (32 bytes per 256-d
# descriptor); searches re-rank on the full vectors (refine_factor), so distances of the
# returned neighbours are exact and the eps cut is the exact one.
REINDEX_FRACTION = 0.2


def vector_index_config(n_rows: int, dim: int = 256):
    """LanceDB index config for ``n_rows`` unit vectors of ``dim`` (cosine)."""
    from lancedb.index import IvfPq

    parts = int(max(1, min(4096, round(math.sqrt(n_rows)))))
    return IvfPq(distance_type="cosine", num_partitions=parts, num_sub_vectors=max(1, dim // 8))


def _pylist(vals: Any) -> list:
    if isinstance(vals, pa.ChunkedArray | pa.Array):
        return vals.to_pylist()
    return list(vals)


def _to_arrow(vals: Any, typ: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """Values -> Arrow of ``typ`` (vectors from a ``(N, D)`` array without Python lists)."""
    if isinstance(vals, pa.ChunkedArray | pa.Array):
        return vals.cast(typ)
    if pa.types.is_fixed_size_list(typ):
        try:
            arr = np.asarray(vals, dtype=np.float32) if len(vals) else None
        except (TypeError, ValueError):  # ragged or None entries: row by row below
            arr = None
        if arr is not None and arr.ndim == 2 and arr.shape[1] == typ.list_size:
            flat = pa.array(arr.astype(np.float32).ravel())
            return pa.FixedSizeListArray.from_arrays(flat, typ.list_size)
    if isinstance(vals, np.ndarray) and vals.dtype != object:
        return pa.array(vals).cast(typ)
    return pa.array([_coerce(v, typ) for v in vals], type=typ)


def _visual_dim(rows: list[dict]) -> int | None:
    for r in rows:
        v = r.get("visual_embedding")
        if v is not None:
            return len(v)
    return None


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _in(col: str, values: list[str]) -> str:
    return f"{col} IN ({', '.join(_sql_str(v) for v in values)})"


def _coerce(v: Any, typ: pa.DataType) -> Any:
    if v is None:
        return None
    if pa.types.is_fixed_size_list(typ):
        arr = np.asarray(v, dtype=np.float32)
        return arr.tolist() if arr.size == typ.list_size else None
    if pa.types.is_floating(typ):
        try:
            return float(v)
        except (TypeError, ValueError):
            return None
    if pa.types.is_integer(typ):
        try:
            return int(v)
        except (TypeError, ValueError):
            return None
    if pa.types.is_boolean(typ):
        return bool(v)
    if pa.types.is_string(typ):
        return v if isinstance(v, str) else json.dumps(v) if isinstance(v, dict | list) else str(v)
    return v


def clip_row(c: Clip, run_id: str = "") -> dict[str, Any]:
    """Flatten a Clip into a `clips` row (extras become columns; NaN scores stay NaN)."""
    row: dict[str, Any] = {
        name: getattr(c, name) for name, _ in _CLIP_BASE if name not in ("errors", "run_id")
    }
    row["embedding"] = c.embedding
    row["visual_embedding"] = c.visual_embedding
    row["errors"] = json.dumps(c.errors) if c.errors else ""
    row["run_id"] = run_id
    if c.actions is not None:  # rollout clips only: a JSON column added on first sight
        row["actions"] = json.dumps(c.actions)
    for k, v in c.extra.items():
        if k in row:
            continue
        if isinstance(v, float) and math.isnan(v):
            v = None
        row[k] = v
    return row
