"""Typed records that flow between curation stages.

Stages are pure functions over these records. A per-item failure is *data*: it is written
into ``errors[stage]`` and, for a clip, rejects it with ``reject_reason=stage``. Only
infrastructure errors (disk full, database gone) raise.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

# Video.status values (the `videos` table contract).
OK, FAILED, DUPLICATE = "ok", "failed", "duplicate"

Scalar = float | int | str | bool


def video_id_for(sha256: str) -> str:
    """Deterministic id: the same bytes always get the same id (idempotent re-runs)."""
    return sha256[:16]


def clip_id_for(video_id: str, index: int) -> str:
    """Clip ids contain no dots (WebDataset splits keys on the first dot)."""
    return f"{video_id}_{index:04d}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Video:
    """One input file. ``path`` is a local path or fsspec URI exactly as listed."""

    video_id: str
    path: str
    sha256: str
    status: str = OK
    error: str = ""
    duration_s: float = 0.0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    num_frames: int = 0
    codec: str = ""
    size_bytes: int = 0
    bit_rate: int = 0  # source video bits/s from the probe (keep-best prefers higher)
    local_path: str = ""  # where the bytes can be read by ffmpeg (a cached copy for remote URIs)
    dup_of: str = ""  # for status=duplicate: the video_id with the same bytes

    def fail(self, stage: str, message: str) -> Video:
        self.status = FAILED
        self.error = f"{stage}: {message}"
        return self


@dataclass
class Clip:
    """One candidate clip (a shot or a piece of one). Every candidate is recorded."""

    clip_id: str
    video_id: str
    start_s: float  # seconds from the start of the source video
    end_s: float
    clip_uri: str = ""  # transcoded H.264 mp4
    kept: bool = True
    reject_reason: str = ""  # "" when kept, else the first stage that rejected it
    motion_score: float = float("nan")
    quality_score: float = float("nan")
    text_score: float = float("nan")
    caption: str = ""
    embedding: list[float] | None = None  # caption text embedding (sentence-transformers)
    visual_embedding: list[float] | None = None  # perceptual descriptor of the frames
    dup_of: str = ""
    dup_reason: str = ""  # for duplicates: why dup_of was kept instead (see tasks/dedup.py)
    cluster: int = -1
    topic: str = ""
    shard: str = ""
    width: int = 0  # of the transcoded clip
    height: int = 0
    fps: float = 0.0
    num_frames: int = 0
    source_path: str = ""  # the source video's path (for reports)
    errors: dict[str, str] = field(default_factory=dict)
    # Extra per-stage outputs: each key becomes a column of `clips` (e.g. a plug-in
    # filter's "blur_score"). Values must be scalars.
    extra: dict[str, Scalar] = field(default_factory=dict)
    # Per-frame actions of a rollout clip (one row per frame; tasks/actions.py), else None.
    actions: list | None = None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def reject(self, stage: str) -> Clip:
        """Reject this clip; the first rejecting stage is the one recorded."""
        if self.kept:
            self.kept = False
            self.reject_reason = stage
        return self

    def error(self, stage: str, message: str) -> Clip:
        """Record a per-clip failure of ``stage`` and reject the clip for it."""
        self.errors[stage] = message
        return self.reject(stage)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
