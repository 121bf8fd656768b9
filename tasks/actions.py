"""Per-frame actions of rollout videos, carried through curation.

A video ``<stem>.mp4`` with a sidecar ``<stem>.actions.npy`` next to it (what ``worldmill
rollouts`` writes: one row per frame, row ``t`` = the action taken at frame ``t``) gets its
actions cut with its clips: a clip whose first frame is source frame ``s`` and which holds
``n`` frames gets rows ``s .. s + n - 1``. They land in ``clips.actions`` (JSON) and in the
shards as ``<clip_id>.actions.npy``.

The start frame is the first frame at or after ``start_s``: transcode forces a keyframe
there and the segment muxer cuts on it. With B-frames the muxer sees timestamps shifted by
the reorder delay, so an encoder-chosen keyframe (a scene cut) one or two frames before a
cut time can move the cut there; ``configs/rollouts.yaml`` sets ``transcode.bframes: 0``,
which makes the cuts exact. Alignment also needs the source's frame rate (``transcode.fps:
0``). Anything that breaks it (a moved cut: the clip holds another number of frames than
its span; a frame-rate change; a sidecar whose length is not the video's frame count; an
unreadable sidecar) is a per-clip ``actions`` error, never a silently shifted label.
"""

from __future__ import annotations

import io
import json
import math

import fsspec
import numpy as np

from worldmill.records import Clip, Video

SIDECAR = ".actions.npy"
STAGE = "actions"


def sidecar_uri(video_path: str) -> str:
    """``.../ep_000000.mp4`` -> ``.../ep_000000.actions.npy`` (any fsspec URI)."""
    head, _, name = video_path.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{head}/{stem}{SIDECAR}" if head else f"{stem}{SIDECAR}"


def load_sidecar(video_path: str) -> np.ndarray | None:
    """The video's actions ``(T,)`` or ``(T, D)``, or None when it has no sidecar. Raises
    ValueError for a sidecar that cannot be read."""
    uri = sidecar_uri(video_path)
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return None
    try:
        with fs.open(path, "rb") as f:
            arr = np.load(io.BytesIO(f.read()), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {uri.rsplit('/', 1)[-1]}: {e}") from e
    if arr.ndim not in (1, 2) or len(arr) == 0:
        raise ValueError(f"{uri.rsplit('/', 1)[-1]} has shape {arr.shape}; want (T,) or (T, D)")
    return arr


def first_frame(start_s: float, fps: float) -> int:
    """Index of the first source frame at or after ``start_s`` (1 ms tolerance)."""
    return max(0, math.ceil(start_s * fps - 1e-3))


def attach_actions(video: Video, clips: list[Clip]) -> None:
    """Set ``clip.actions`` for every transcoded clip of ``video`` that has a sidecar."""
    todo = [c for c in clips if c.clip_uri and c.kept]
    if not todo:
        return
    try:
        arr = load_sidecar(video.path)
    except ValueError as e:
        for c in todo:
            c.error(STAGE, str(e))
        return
    if arr is None:
        return
    if video.num_frames and len(arr) != video.num_frames:
        for c in todo:
            c.error(STAGE, f"sidecar has {len(arr)} actions for {video.num_frames} frames")
        return
    for c in todo:
        if abs(c.fps - video.fps) > 1e-3:
            c.error(STAGE, f"clip is {c.fps:g} fps, source {video.fps:g}: set transcode.fps: 0")
            continue
        s = first_frame(c.start_s, video.fps)
        want = min(first_frame(c.end_s, video.fps), len(arr)) - s
        if c.num_frames != want:  # the cut moved (see module doc): never shift labels
            c.error(STAGE, f"clip holds {c.num_frames} frames, {want} lie in its span: cut moved")
            continue
        if s + c.num_frames > len(arr):
            c.error(STAGE, f"frames {s}..{s + c.num_frames - 1} exceed {len(arr)} actions")
            continue
        c.actions = arr[s : s + c.num_frames].tolist()
        c.extra["action_start_frame"] = s


def actions_npy(actions_json: str) -> bytes:
    """``clips.actions`` (JSON) -> ``.npy`` bytes: int64 for integer actions, else float32
    (rollout actions are float32, so the values come back exactly)."""
    arr = np.asarray(json.loads(actions_json))
    arr = arr.astype(np.int64 if np.issubdtype(arr.dtype, np.integer) else np.float32)
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
