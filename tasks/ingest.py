"""Stage 1 — ingest: list the input (local folder, glob or fsspec URI), hash, probe.

What is a video is decided by **probing**, not by the name: every file ffmpeg can read as
a video (``.ogg`` Theora, ``.mxf``, ``.y4m``, no extension at all, ...) is processed. Only
obvious non-media sidecars (``skip_extensions``: ``.json``, ``.txt``, ``.md``, ...) and
hidden files are skipped without opening them, and nothing is skipped silently: each
skipped file is listed in :attr:`IngestResult.files_skipped` with the reason, and each
file that fails the probe is recorded as ``failed`` with a readable error.

Incremental by content: a file whose sha256 is already in ``videos`` is not processed
again (a nightly re-run only does new work); a byte-identical copy under another name is
recorded as ``duplicate``. Nothing here raises for a bad file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
from prefect import task

from worldmill.media import MediaError, probe
from worldmill.records import DUPLICATE, FAILED, OK, Video, video_id_for

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # hash in 1 MiB reads


@dataclass
class IngestResult:
    """What ingest decided. ``todo`` go on to split; ``recorded`` are final already."""

    todo: list[Video] = field(default_factory=list)
    recorded: list[Video] = field(default_factory=list)  # failed / duplicate, to register now
    skipped: int = 0  # already processed in an earlier run
    files_seen: int = 0  # every file listed under the input, hidden and sidecars included
    # Files not opened at all: {"path", "reason"} ("hidden file", "sidecar extension .txt").
    files_skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def files_failed(self) -> list[dict[str, str]]:
        """Files of this run that could not be read as a video: {"path", "reason"}."""
        return [{"path": v.path, "reason": v.error} for v in self.recorded if v.status == FAILED]


def list_inputs(
    uri: str,
    skip_extensions: list[str] | None = None,
    include_all: bool = False,
    extensions: list[str] | None = None,
    skipped: list[dict[str, str]] | None = None,
) -> list[str]:
    """Candidate files under ``uri`` (a folder, a single file, a glob, or any fsspec URI),
    sorted. Candidates are probed later; the name alone never makes a file a video.

    Not candidates (appended to ``skipped`` as ``{"path", "reason"}`` when given): hidden
    files, names ending in one of ``skip_extensions`` (sidecars; case-insensitive) unless
    ``include_all``, and, when ``extensions`` is non-empty, names ending in none of them.
    """
    fs, root = fsspec.core.url_to_fs(uri)
    if any(ch in root for ch in "*?["):
        paths = fs.glob(root)
    elif fs.isdir(root):
        paths = fs.find(root)
    elif fs.exists(root):
        paths = [root]
    else:
        raise FileNotFoundError(f"input not found: {uri}")
    only = tuple(e.lower() for e in (extensions or []))
    skip = tuple(e.lower() for e in (skip_extensions or []))
    out = []
    for p in sorted(paths):
        if fs.isdir(p):
            continue
        full = p if fs.protocol in ("file", ("file", "local")) else fs.unstrip_protocol(p)
        name = p.rsplit("/", 1)[-1].lower()
        rel = p[len(root) :] if p.startswith(root.rstrip("/") + "/") else name
        why = ""
        if any(part.startswith(".") for part in rel.split("/") if part):
            why = "hidden file"  # or inside a hidden folder (.git/, .cache/)
        elif skip and not include_all and name.endswith(skip):
            why = f"sidecar extension {next(e for e in skip if name.endswith(e))} (skip_extensions)"
        elif only and not name.endswith(only):
            why = "extension not in extensions"
        if why:
            if skipped is not None:
                skipped.append({"path": full, "reason": why})
            continue
        out.append(full)
    return out


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def hash_file(path: str) -> tuple[str, int]:
    """(sha256 hex, size in bytes) streaming through fsspec."""
    h = hashlib.sha256()
    size = 0
    with fsspec.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def inspect_file(path: str, cache_dir: str) -> Video:
    """Hash and probe one file into a Video (status ok or failed; never raises for bad data)."""
    try:
        sha, size = hash_file(path)
    except OSError as e:
        v = Video(video_id="", path=path, sha256="")
        return v.fail("ingest", f"cannot read file: {e}")
    v = Video(video_id=video_id_for(sha), path=path, sha256=sha, size_bytes=size)
    if size == 0:
        return v.fail("ingest", "empty file (0 bytes)")
    local = path.removeprefix("file://")
    if not _is_local(path):
        # ffmpeg reads local files; remote objects are cached once by content hash.
        suffix = Path(path.rsplit("/", 1)[-1]).suffix
        local = os.path.join(cache_dir, sha + suffix)
        if not os.path.exists(local):
            os.makedirs(cache_dir, exist_ok=True)
            tmp = local + ".part"
            with fsspec.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            os.replace(tmp, local)
    v.local_path = local
    try:
        info = probe(local)
    except MediaError as e:
        return v.fail("probe", str(e))
    v.duration_s, v.width, v.height = info.duration_s, info.width, info.height
    v.fps, v.num_frames, v.codec = info.fps, info.num_frames, info.codec
    v.bit_rate = info.bit_rate
    return v


def ingest(
    uri: str,
    rows: list[dict],
    skip_extensions: list[str] | None = None,
    include_all: bool = False,
    retry_failed: bool = False,
    cache_dir: str = "",
    workers: int = 4,
    extensions: list[str] | None = None,
) -> IngestResult:
    """Decide what to process, given the existing `videos` rows.

    Every listed file is accounted for: skipped without opening (``files_skipped``, with
    why), already processed (``skipped``), recorded as failed/duplicate (``recorded``) or to
    be processed (``todo``). Byte-identical files (same sha256) are processed once: the
    first path in sorted order (or the one already in the table) is the original, the
    others become ``duplicate``.
    """
    res = IngestResult()
    paths = list_inputs(uri, skip_extensions, include_all, extensions, res.files_skipped)
    res.files_seen = len(paths) + len(res.files_skipped)
    known_paths = {r["path"]: r for r in rows}
    known = {r["sha256"]: r for r in rows if r["status"] != DUPLICATE and r["sha256"]}
    fresh = []
    for p in paths:
        row = known_paths.get(p)
        if row is not None and not (retry_failed and row["status"] == FAILED):
            # Same path seen before: re-hash only if the size changed (cheap change check).
            try:
                size = fsspec.core.url_to_fs(p)[0].size(p)
            except OSError:
                size = -1
            if size == row.get("size_bytes"):
                res.skipped += 1
                continue
        fresh.append(p)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # hashing/probe release the GIL
        videos = list(pool.map(lambda p: inspect_file(p, cache_dir), fresh))
    seen: dict[str, Video] = {}
    for v in videos:
        if not v.sha256:
            v.video_id = "nohash_" + hashlib.sha256(v.path.encode()).hexdigest()[:9]
            res.recorded.append(v)
            continue
        prev = known.get(v.sha256)
        if prev is not None:
            if prev["path"] == v.path:
                if retry_failed and prev["status"] == FAILED:
                    res.todo.append(v) if v.status == OK else res.recorded.append(v)
                else:
                    res.skipped += 1
                continue
            dup = _as_duplicate(v, prev["video_id"])
            res.recorded.append(dup)
            continue
        if v.sha256 in seen:
            res.recorded.append(_as_duplicate(v, seen[v.sha256].video_id))
            continue
        seen[v.sha256] = v
        (res.todo if v.status == OK else res.recorded).append(v)
    return res


def _as_duplicate(v: Video, original_id: str) -> Video:
    # A duplicate row keeps its own id (hash of path) so that it never overwrites the
    # original's row; dup_of names the original.
    v.video_id = "dup_" + hashlib.sha256(v.path.encode()).hexdigest()[:12]
    v.status, v.dup_of, v.error = DUPLICATE, original_id, ""
    return v


@task(name="ingest", retries=2, retry_delay_seconds=5)
def ingest_task(
    uri: str,
    rows: list[dict],
    skip_extensions: list[str],
    include_all: bool,
    retry_failed: bool,
    cache_dir: str,
    extensions: list[str] | None = None,
) -> IngestResult:
    """Prefect task: list + hash + probe the input; returns small Video records (no arrays)."""
    res = ingest(
        uri, rows, skip_extensions, include_all, retry_failed, cache_dir, extensions=extensions
    )
    log.info(
        "ingest: %d files seen: %d new, %d recorded (failed/duplicate), %d already processed,"
        " %d skipped without probing",
        res.files_seen,
        len(res.todo),
        len(res.recorded),
        res.skipped,
        len(res.files_skipped),
    )
    for f in res.files_skipped:
        log.info("ingest: skipped %s: %s", f["path"], f["reason"])
    return res
