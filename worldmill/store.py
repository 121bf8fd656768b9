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
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lancedb
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
        t = self.clips()
        if t is None:
            return pa.table({c: [] for c in (columns or ["clip_id"])})
        if where:
            q = t.search().where(where).limit(None)
            if columns:
                q = q.select(columns)
            return q.to_arrow()
        tab = t.to_arrow()
        return tab.select(columns) if columns else tab

    def clip_rows(self, columns: list[str] | None = None, where: str | None = None) -> list[dict]:
        return self.clip_table(columns, where).to_pylist()

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
        """Update columns of existing clips: each dict has ``clip_id`` plus new values."""
        if not updates:
            return
        with _write_lock:
            t = self.clips()
            ids = [u["clip_id"] for u in updates]
            current = {
                r["clip_id"]: r
                for r in t.search().where(_in("clip_id", ids)).limit(None).to_arrow().to_pylist()
            }
            rows = []
            for u in updates:
                if u["clip_id"] not in current:
                    continue
                r = dict(current[u["clip_id"]])
                r.update(u)
                rows.append(r)
            if rows:
                data = self._align(t, rows)
                t.merge_insert("clip_id").when_matched_update_all().execute(
                    data, on_bad_vectors="null"
                )

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
        """Build an ANN index on ``column`` once the table has ``min_rows`` rows."""
        t = self.clips()
        if t is None or t.count_rows() < min_rows:
            return False
        try:
            t.create_index(metric="cosine", vector_column_name=column, replace=True)
            return True
        except Exception:  # index build is an optimisation; brute force still answers
            return False


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
