"""Token / latent datasets: what ``worldmill encode`` writes, read back for world models.

World models train on cached tokenizer outputs, not on pixels re-encoded every step.
``worldmill encode`` (``worldmill/training/encode.py``) writes, per clip of a shard set,
``<key>.tokens.npy`` (DV: int32 ``(T', H', W')``) or ``<key>.latent.npy`` (CV: float16
``(C, T', H', W')``) plus ``<key>.json`` into tars mirroring the input, and
``manifest.json``. This module

* ``ensure_encoded``: finds or makes that cache for (shards, tokenizer run + step):
  reused when its manifest names the same tokenizer checkpoint and source shards;
  otherwise encoded into ``<dir>.partial`` and renamed when complete (a killed encode
  leaves no half cache; the next attempt starts it again);
* ``caption_embeddings``: MiniLM embeddings of every clip's caption (from the source shard's
  json / txt), computed once and stored beside the cache (``text_embeddings.npz``);
* ``index_latents`` / ``LatentRef``: one entry per encoded clip (array read by tar offset);
* ``ResumableWindowStream``: random ``(frames, size, size)`` windows of the token / latent
  grids, a pure function of (seed, step, rank) like ``data.ResumableClipStream``, so the
  loader position is the step and a resumed run sees the same batches.

Held-out clips are split by whole source video (``data.split_holdout`` on the source
clips' metadata), exactly like the tokenizer's split.
"""

from __future__ import annotations

import functools
import io
import json
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worldmill import shards
from worldmill.training import data

TEXT_FILE = "text_embeddings.npz"


@dataclass(frozen=True)
class LatentRef:
    clip_id: str
    shard: str  # tar holding the array
    member: str  # ``<key>.tokens.npy`` or ``<key>.latent.npy``
    offset: int  # byte offset of the member's data in the tar
    size: int
    info: dict  # the ``<key>.json`` written by encode
    source: data.ClipRef | None = None  # the clip in the source shards (pixels, caption)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.info["shape"])


def is_encoded(root: str | Path) -> bool:
    """``root`` is an encode output (tokens / latents + manifest), not curate shards."""
    m = Path(root) / "manifest.json"
    return m.is_file() and "tokenizer_run" in json.loads(m.read_text())


def cache_matches(root: Path, tokenizer_run: str | Path, step: int, shards: str | Path) -> bool:
    if not is_encoded(root):
        return False
    m = json.loads((root / "manifest.json").read_text())
    return (
        Path(m["tokenizer_run"]) == Path(tokenizer_run).absolute()
        and m["step"] == step
        and m.get("source") == str(Path(shards).absolute())
    )


def ensure_encoded(
    shards: str | Path, tokenizer_run: str | Path, out: str | Path, tokenizer=None, log=print
) -> Path:
    """The token / latent cache of ``shards`` under ``tokenizer_run``'s latest checkpoint
    at ``out``: reused if it matches, else (re-)encoded atomically. ``tokenizer``: a loaded
    ``encode.load_tokenizer`` result (a trainer passes its own; one process calls this)."""
    from worldmill.training import checkpoint, encode

    out = Path(out)
    step = checkpoint.latest(tokenizer_run)[1]["step"]
    if cache_matches(out, tokenizer_run, step, shards):
        log(f"tokens: reusing {out} (tokenizer {tokenizer_run} step {step})")
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log(f"tokens: encoding {shards} with {tokenizer_run} (step {step}) -> {out}")
    manifest = encode.encode_shards(tokenizer_run, shards, partial, log=log, tokenizer=tokenizer)
    manifest["source"] = str(Path(shards).absolute())
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
    embed_captions(data.index_shards(shards), partial / TEXT_FILE)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


@functools.lru_cache(maxsize=16)
def _samples(shard: str) -> dict[str, shards.Sample]:
    return {s.key: s for s in shards.index_shard(shard)}


def _caption(ref: data.ClipRef) -> str:
    if ref.meta.get("caption"):
        return str(ref.meta["caption"])
    key = ref.member[: -len(f".{shards.VIDEO}")]
    sample = _samples(ref.shard).get(key)
    if sample is None or shards.CAPTION not in sample.parts:
        return ""
    return sample.read(shards.CAPTION).decode("utf-8", "replace").strip()


def embed_captions(refs: list[data.ClipRef], out: str | Path) -> Path:
    """MiniLM (384-d, unit norm) embeddings of the captions of source clips ``refs`` ->
    ``out`` (``.npz``: ``clip_ids``, ``captions``, ``embeddings``)."""
    from worldmill.config import EmbedConfig
    from worldmill.tasks.embed import embed_texts

    captions = [_caption(r) for r in refs]
    emb = embed_texts(captions, EmbedConfig())
    path = Path(out)
    np.savez(
        path,
        clip_ids=np.array([r.clip_id for r in refs]),
        captions=np.array(captions),
        embeddings=emb,
    )
    return path


def caption_embeddings(path: str | Path) -> dict[str, tuple[str, np.ndarray]]:
    """clip_id -> (caption, embedding (384,) float32) from an ``embed_captions`` file."""
    z = np.load(Path(path))
    return {
        str(c): (str(t), e)
        for c, t, e in zip(z["clip_ids"], z["captions"], z["embeddings"], strict=True)
    }


def index_latents(root: str | Path, kind: str = "tokens") -> list[LatentRef]:
    """One LatentRef per encoded clip (``kind`` "tokens" or "latent"), sorted by clip id.
    Each ref points back at its source clip (for pixels and the held-out split)."""
    part = f"{kind}.npy"
    suffix = f".{part}"
    refs: list[LatentRef] = []
    for shard in data.list_shards(root):
        for s in shards.index_shard(shard):
            if part not in s.parts:
                continue
            info = json.loads(s.read(shards.META)) if shards.META in s.parts else {}
            cid = str(info.get("clip_id") or s.key)
            rng = s.parts[part]
            refs.append(LatentRef(cid, str(shard), f"{s.key}{suffix}", rng.offset, rng.size, info))
    if not refs:
        raise FileNotFoundError(f"no *{suffix} samples under {root}")
    sources: dict[str, data.ClipRef] = {}
    for shard in sorted({r.info.get("source_shard", "") for r in refs}):
        if shard and Path(shard).is_file():
            sources.update({c.clip_id: c for c in data.index_shards(shard)})
    refs = [LatentRef(*(getattr(r, f) for f in _FIELDS[:-1]), sources.get(r.clip_id)) for r in refs]
    return sorted(refs, key=lambda r: r.clip_id)


_FIELDS = ("clip_id", "shard", "member", "offset", "size", "info", "source")


def split_holdout(refs: list[LatentRef], n: int) -> tuple[list[LatentRef], list[LatentRef]]:
    """(train, held-out) by whole source video, the same split ``data.split_holdout`` makes
    of the source clips (so a tokenizer and a world model on one corpus hold out alike)."""
    as_clips = [
        data.ClipRef(r.clip_id, r.shard, r.member, r.source.meta if r.source else {}) for r in refs
    ]
    _, held = data.split_holdout(as_clips, n)
    ids = {c.clip_id for c in held}
    return [r for r in refs if r.clip_id not in ids], [r for r in refs if r.clip_id in ids]


def load_array(ref: LatentRef) -> np.ndarray:
    """The clip's tokens ``(T', H', W')`` int32 or latent ``(C, T', H', W')`` float16,
    read by offset (no tar scan)."""
    return np.load(io.BytesIO(shards.read_part(ref.shard, shards.Part(ref.offset, ref.size))))


class ArrayCache:
    """LRU of loaded arrays (token grids are small: a whole corpus usually fits)."""

    def __init__(self, max_items: int = 4096):
        self.max_items = max_items
        self._c: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, ref: LatentRef) -> np.ndarray:
        if ref.clip_id in self._c:
            self._c.move_to_end(ref.clip_id)
            return self._c[ref.clip_id]
        a = self._c[ref.clip_id] = load_array(ref)
        if len(self._c) > self.max_items:
            self._c.popitem(last=False)
        return a


def window(
    a: np.ndarray, t: int, size: int, gen: torch.Generator | None, random_start: bool = False
) -> np.ndarray:
    """``t`` latent frames and a ``size x size`` window of the last two axes of ``a``
    (``(..., T', H', W')``): a random window if ``gen``, else the centre. Time starts at
    latent frame 0 (a causal tokenizer's image frame) unless ``random_start`` (and ``gen``).
    Short clips repeat their last latent frame."""
    T, H, W = a.shape[-3:]
    if T < t:
        a = np.concatenate([a, np.repeat(a[..., -1:, :, :], t - T, -3)], -3)
        T = t
    if H < size or W < size:
        raise ValueError(f"latent grid {H}x{W} is smaller than window {size}; lower data.size")

    def pick(n: int) -> int:
        return n // 2 if gen is None else int(torch.randint(0, n + 1, (1,), generator=gen))

    t0 = pick(T - t) if gen is not None and random_start else 0
    y0, x0 = pick(H - size), pick(W - size)
    return a[..., t0 : t0 + t, y0 : y0 + size, x0 : x0 + size]


class ResumableWindowStream(data.EpochStream):
    """Deterministic, resumable batches of token / latent windows for one rank:
    ``batch(step)`` -> ``{"x": (B, [C,] t, size, size), "text": (B, 384) float32}``."""

    def __init__(
        self,
        refs: list[LatentRef],
        text: dict[str, tuple[str, np.ndarray]],
        batch_size: int,
        frames: int,
        size: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        random_start: bool = False,
    ):
        super().__init__(refs, batch_size, seed, rank, world)
        self.text, self.t, self.size = text, frames, size
        self.random_start = random_start
        self.cache = ArrayCache()

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        start = self.position(step) + self.rank * self.b
        xs, texts = [], []
        for p in range(start, start + self.b):
            ref = self.ref_at(p)
            g = torch.Generator().manual_seed(self.seed * 7_919 + p)
            xs.append(
                torch.from_numpy(
                    np.array(window(self.cache.get(ref), self.t, self.size, g, self.random_start))
                )
            )
            texts.append(torch.from_numpy(self.text[ref.clip_id][1]))
        x = torch.stack(xs)
        return {"x": x.long() if x.dtype == torch.int32 else x.float(), "text": torch.stack(texts)}


class ReversibleWindowStream(ResumableWindowStream):
    """``ResumableWindowStream`` whose windows are, with probability ``reverse_prob`` each,
    played backwards (latent frames in reverse order) and conditioned on
    ``reversed_text[clip_id]`` (the conditioning of the caption with its camera words
    swapped). Drawn per stream position, so a resumed run reads the same batches."""

    def __init__(self, *args, reverse_prob: float = 0.0, reversed_text=None, **kw):
        super().__init__(*args, **kw)
        self.reverse_prob, self.reversed_text = reverse_prob, reversed_text or {}

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        out = super().batch(step)
        if self.reverse_prob <= 0:
            return out
        start = self.position(step) + self.rank * self.b
        for i, p in enumerate(range(start, start + self.b)):
            g = torch.Generator().manual_seed(self.seed * 7_919 + p + 104_729)
            if float(torch.rand(1, generator=g)) < self.reverse_prob:
                out["x"][i] = out["x"][i].flip(-3)  # ([C,] t, H, W): time reversed
                out["text"][i] = torch.from_numpy(self.reversed_text[self.ref_at(p).clip_id])
        return out
