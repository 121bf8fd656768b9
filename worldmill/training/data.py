"""Training data from curate shards: deterministic, resumable mid-epoch; sequence packing.

Shards are WebDataset tars (``SHARDS/**/*.tar``); each sample is ``<clip_id>.mp4`` (H.264),
``<clip_id>.json`` (metadata) and ``<clip_id>.txt`` (caption). We index every sample once
(tar member offsets, no decoding), hold out a few clips for evaluation, and define the
training stream as a pure function of ``(seed, position)``:

    position p  ->  epoch p // N, clip perm_epoch[p % N], crop drawn from Generator(seed, p)

so the loader state is a single integer (samples consumed) and a resumed run sees exactly
the samples an uninterrupted run would, whatever step it stopped at. Rank r of W takes
positions ``step*B*W + r*B ... + B`` (B = per-rank batch).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmill import shards
from worldmill.media import decode_bytes, even


@dataclass(frozen=True)
class ClipRef:
    clip_id: str
    shard: str  # path of the tar
    member: str  # name of the .mp4 member inside the tar
    meta: dict
    video: shards.Part | None = None  # byte range of the mp4 in the tar (read by offset)


list_shards = shards.list_shards


def index_shards(root: str | Path) -> list[ClipRef]:
    """One ClipRef per sample with an mp4, sorted by clip id (stable across shard layouts).
    Reads tar headers and the small json parts only, never a video."""
    refs: list[ClipRef] = []
    for shard in list_shards(root):
        for s in shards.index_shard(shard):
            if shards.VIDEO not in s.parts:
                continue
            meta = json.loads(s.read(shards.META)) if shards.META in s.parts else {}
            clip_id = meta.get("clip_id") or os.path.basename(s.key)
            member = f"{s.key}.{shards.VIDEO}"
            refs.append(ClipRef(str(clip_id), str(shard), member, meta, s.parts[shards.VIDEO]))
    refs.sort(key=lambda r: r.clip_id)
    return refs


def split_holdout(refs: list[ClipRef], n_holdout: int) -> tuple[list[ClipRef], list[ClipRef]]:
    """(train, held-out). Held-out = at least ``n_holdout`` clips, taken whole source video
    by source video (``meta["video_id"]``, else the clip itself) in order of
    sha1(video id): no source video has clips on both sides, stable when shards are added,
    independent of shard order."""
    if n_holdout >= len(refs):
        raise ValueError(
            f"need more than {n_holdout} clips to hold {n_holdout} out, found {len(refs)}"
        )

    def group(r: ClipRef) -> str:
        return str(r.meta.get("video_id") or r.clip_id)

    groups: dict[str, list[ClipRef]] = {}
    for r in refs:
        groups.setdefault(group(r), []).append(r)
    held: set[str] = set()
    for g in sorted(groups, key=lambda g: hashlib.sha1(g.encode()).hexdigest()):
        if len(held) >= n_holdout:
            break
        held.update(r.clip_id for r in groups[g])
    if len(held) >= len(refs):
        raise ValueError(f"holding out {n_holdout} clips would leave no source video to train on")
    return [r for r in refs if r.clip_id not in held], [r for r in refs if r.clip_id in held]


def read_member(ref: ClipRef) -> bytes:
    """The clip's mp4 bytes: one seek + read at its indexed offset."""
    if ref.video is not None:
        return shards.read_part(ref.shard, ref.video)
    with tarfile.open(ref.shard) as tf:  # a ClipRef made by hand, without offsets
        f = tf.extractfile(ref.member)
        if f is None:
            raise FileNotFoundError(f"{ref.member} missing from {ref.shard}")
        return f.read()


def decode_clip(ref: ClipRef, width: int, fps: float = 0.0) -> np.ndarray:
    """mp4 bytes -> ``(T, H, W, 3)`` uint8 whose *short* side is ``width`` pixels (aspect
    kept, sides even), so landscape, portrait and square clips all fit a ``width`` crop.
    Decoded in memory (PyAV), no temp file."""
    raw = read_member(ref)
    w0, h0 = ref.meta.get("width"), ref.meta.get("height")
    if not (w0 and h0):
        import io

        import av

        with av.open(io.BytesIO(raw)) as box:
            cc = box.streams.video[0].codec_context
            w0, h0 = cc.width, cc.height
    if w0 >= h0:
        w, h = even(w0 * width / h0), even(width)
    else:
        w, h = even(width), even(h0 * width / w0)
    return decode_bytes(raw, w, h, fps=fps or None)


class ClipCache:
    """LRU cache of decoded clips (decoding is the expensive part; crops are cheap)."""

    def __init__(self, width: int, fps: float = 0.0, max_clips: int = 256):
        self.width, self.fps, self.max_clips = width, fps, max_clips
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, ref: ClipRef) -> np.ndarray:
        if ref.clip_id in self._cache:
            self._cache.move_to_end(ref.clip_id)
            return self._cache[ref.clip_id]
        frames = decode_clip(ref, self.width, self.fps)
        self._cache[ref.clip_id] = frames
        if len(self._cache) > self.max_clips:
            self._cache.popitem(last=False)
        return frames


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(3, T, H, W)`` float in [-1, 1]."""
    t = torch.from_numpy(np.array(frames))  # copy: decoded buffers are read-only
    return t.permute(3, 0, 1, 2).float() / 127.5 - 1


def crop(frames: np.ndarray, t: int, size: int, gen: torch.Generator | None) -> np.ndarray:
    """``t`` consecutive frames and a ``size x size`` window; random if ``gen`` else
    the first frames and the centre. Short clips repeat their last frame."""
    if len(frames) < t:
        frames = np.concatenate([frames, np.repeat(frames[-1:], t - len(frames), 0)])
    T, H, W = frames.shape[:3]
    if H < size or W < size:
        raise ValueError(f"clip {W}x{H} is smaller than crop {size}; lower data.crop")

    def pick(n: int) -> int:
        if gen is None:
            return n // 2
        return int(torch.randint(0, n + 1, (1,), generator=gen))

    t0 = pick(T - t) if gen is not None else 0
    y0, x0 = pick(H - size), pick(W - size)
    return frames[t0 : t0 + t, y0 : y0 + size, x0 : x0 + size]


class EpochStream:
    """The sample order every resumable stream shares: global position ``p`` -> epoch
    ``p // N``, sample ``perm_epoch[p % N]`` with the permutation drawn from
    ``Generator(seed * 1_000_003 + epoch)``; rank r of W takes positions
    ``step*B*W + r*B ... + B``. Subclasses add what a sample becomes (``batch``)."""

    def __init__(self, refs: list, batch_size: int, seed: int, rank: int, world: int):
        if not refs:
            raise ValueError("no training clips")
        self.refs, self.b = refs, batch_size
        self.seed, self.rank, self.world = seed, rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def position(self, step: int) -> int:
        return step * self.b * self.world

    def epoch(self, step: int) -> float:
        return self.position(step) / len(self.refs)

    def ref_at(self, p: int) -> Any:
        n = len(self.refs)
        e = p // n
        if e not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            self._perms = {e: torch.randperm(n, generator=g)}  # keep only the current epoch
        return self.refs[int(self._perms[e][p % n])]


class ResumableClipStream(EpochStream):
    """Deterministic, resumable batches of random clip crops for one rank.

    ``batch(step)`` is a pure function of (seed, step, rank, world): no hidden iterator state,
    so resuming = calling it with the next step. ``position(step)`` is the global number of
    samples consumed before ``step`` (what the checkpoint stores).
    """

    def __init__(
        self,
        refs: list[ClipRef],
        batch_size: int,
        num_frames: int,
        crop_size: int,
        width: int,
        fps: float = 0.0,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        super().__init__(refs, batch_size, seed, rank, world)
        self.t, self.size = num_frames, crop_size
        self.cache = ClipCache(width, fps)

    def batch(self, step: int) -> torch.Tensor:
        """``(B, 3, num_frames, crop, crop)`` float in [-1, 1] for this rank at ``step``."""
        start = self.position(step) + self.rank * self.b
        clips = []
        for p in range(start, start + self.b):
            g = torch.Generator().manual_seed(self.seed * 7_919 + p)
            frames = crop(self.cache.get(self.ref_at(p)), self.t, self.size, g)
            clips.append(to_tensor(frames))
        return torch.stack(clips)


def eval_clips(
    refs: list[ClipRef], num_frames: int, crop_size: int, width: int, fps: float = 0.0
) -> torch.Tensor:
    """Held-out clips, first ``num_frames`` frames, centre crop: ``(N, 3, T, S, S)``."""
    cache = ClipCache(width, fps)
    return torch.stack([to_tensor(crop(cache.get(r), num_frames, crop_size, None)) for r in refs])


# ---------------------------------------------------------------------------------------------
# Sequence packing (for transformers consuming tokens)
# ---------------------------------------------------------------------------------------------


@dataclass
class Packed:
    """Several variable-length sequences concatenated into one of length L."""

    tokens: torch.Tensor  # (L, ...) the sequences back to back, then padding
    seq_ids: torch.Tensor  # (L,) int64: which sequence each position belongs to; -1 = padding
    position_ids: torch.Tensor  # (L,) int64: position within its own sequence
    lengths: list[int]

    def attention_mask(self, causal: bool = True) -> torch.Tensor:
        """(L, L) bool, True = may attend: block-diagonal (own sequence only), optionally causal.
        Padding attends to itself only, so no row is empty (softmax stays finite)."""
        same = self.seq_ids[:, None] == self.seq_ids[None, :]
        same &= (self.seq_ids[:, None] >= 0) | torch.eye(len(self.seq_ids), dtype=torch.bool)
        if causal:
            same &= torch.ones_like(same).tril()
        return same


def pack(seqs: list[torch.Tensor], max_len: int, pad_value: int | float = 0) -> Packed:
    """Concatenate ``seqs`` (each ``(L_i, ...)``, e.g. a clip's flattened ``T'*h*w`` tokens)
    into one ``(max_len, ...)`` sequence. Raises if they do not fit; use ``pack_greedy`` to
    split a list into several packs."""
    total = sum(len(s) for s in seqs)
    if total > max_len:
        raise ValueError(f"sequences total {total} > max_len {max_len}")
    tail = seqs[0].shape[1:] if seqs else ()
    dtype = seqs[0].dtype if seqs else torch.int64
    tokens = torch.full((max_len, *tail), pad_value, dtype=dtype)
    seq_ids = torch.full((max_len,), -1, dtype=torch.int64)
    pos = torch.zeros(max_len, dtype=torch.int64)
    o = 0
    for i, s in enumerate(seqs):
        n = len(s)
        tokens[o : o + n], seq_ids[o : o + n], pos[o : o + n] = s, i, torch.arange(n)
        o += n
    return Packed(tokens, seq_ids, pos, [len(s) for s in seqs])


def pack_greedy(seqs: list[torch.Tensor], max_len: int) -> list[list[int]]:
    """First-fit-decreasing bins of sequence indices, each bin's total <= max_len.
    Sequences longer than ``max_len`` are an error (truncate them before packing)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i])):
        n = len(seqs[i])
        if n > max_len:
            raise ValueError(f"sequence {i} has length {n} > max_len {max_len}")
        for b, r in enumerate(room):
            if n <= r:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(max_len - n)
    return [sorted(b) for b in bins]
