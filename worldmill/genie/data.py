"""Frames, true actions and cached tokens / latent actions for the Genie kinds.

* ``FrameClips``: the clips of a shard set as square ``size x size`` frames (decoded like
  the trainers decode: short side to ``size``, centre crop), held out by whole source video
  (``data.split_holdout``: rollout episodes never trained on), with the simulator's
  per-frame actions when the shard carries ``<clip_id>.actions.npy`` (``None`` otherwise).
* ``FrameWindowStream``: resumable batches of ``n`` consecutive frames (the LAM's input).
* ``ensure_cache`` / ``GenieCache``: what the dynamics model trains on, computed once per
  (shards, tokenizer step, LAM step) by rank 0 -- every clip's per-frame DV tokens
  ``(T, h, w)`` (each frame encoded as an image by the causal tokenizer), its LAM codes
  ``(T - 1,)`` and pre-quantisation vectors ``(T - 1, D)`` -- in one ``.npz`` written
  atomically (``.partial`` then rename), reused by later runs and retries.
* ``TokenWindowStream``: resumable batches of token windows, latent actions and MaskGIT
  masks (the mask is drawn here, a pure function of (seed, position), so resumed and DDP
  runs see the same masks).
"""

from __future__ import annotations

import functools
import io
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from worldmill import shards
from worldmill.training import data

ACTIONS = "actions.npy"
CACHE = "genie_cache.npz"


def square(frames: np.ndarray, size: int) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 (short side already ``size``) -> centre ``size x size``."""
    h, w = frames.shape[1:3]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frames[:, y : y + size, x : x + size])


@functools.lru_cache(maxsize=64)
def _samples(shard: str) -> dict[str, shards.Sample]:
    return {s.key: s for s in shards.index_shard(shard)}


def true_actions(ref: data.ClipRef) -> np.ndarray | None:
    """The clip's per-frame simulator actions ``(T,)`` (``actions[t]`` acts on frame t,
    so it causes the transition t -> t+1), or None when the shard has none."""
    key = ref.member[: -len(f".{shards.VIDEO}")]
    s = _samples(ref.shard).get(key)
    if s is None or ACTIONS not in s.parts:
        return None
    return np.load(io.BytesIO(s.read(ACTIONS)))


class FrameClips:
    """Train / held-out clips of a shard set as ``(T, size, size, 3)`` uint8 frames."""

    def __init__(self, root: str | Path, size: int, holdout: int, fps: float = 0.0):
        self.root, self.size, self.fps = str(Path(root).absolute()), size, fps
        self.refs = data.index_shards(root)
        self.train, self.held_out = data.split_holdout(self.refs, holdout)
        self.cache = data.ClipCache(size, fps, max_clips=100_000)  # a corpus of 64 px clips fits

    def frames(self, ref: data.ClipRef) -> np.ndarray:
        return square(self.cache.get(ref), self.size)


def to_frames(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, H, W)`` float in [-1, 1]."""
    return torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


class FrameWindowStream(data.EpochStream):
    """``batch(step)`` -> ``(B, n, 3, size, size)``: ``n`` consecutive frames at a random
    start of each clip, a pure function of (seed, step, rank)."""

    def __init__(self, clips: FrameClips, n: int, batch_size: int, seed=0, rank=0, world=1):
        super().__init__(clips.train, batch_size, seed, rank, world)
        self.clips, self.n = clips, n

    def batch(self, step: int) -> torch.Tensor:
        start = self.position(step) + self.rank * self.b
        out = []
        for p in range(start, start + self.b):
            frames = self.clips.frames(self.ref_at(p))
            g = torch.Generator().manual_seed(self.seed * 7_919 + p)
            t0 = int(torch.randint(0, max(1, len(frames) - self.n + 1), (1,), generator=g))
            w = frames[t0 : t0 + self.n]
            if len(w) < self.n:  # a clip shorter than the window repeats its last frame
                w = np.concatenate([w, np.repeat(w[-1:], self.n - len(w), 0)])
            out.append(to_frames(w))
        return torch.stack(out)


# -- the dynamics model's cache --------------------------------------------------------------


@torch.no_grad()
def encode_frames(tokenizer, frames: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``(T, 3, H, W)`` in [-1, 1] -> ``(T, h, w)`` DV tokens, each frame an image."""
    dev = next(tokenizer.parameters()).device
    out = []
    for i in range(0, len(frames), chunk):
        x = frames[i : i + chunk].to(dev)[:, :, None]  # (n, 3, 1, H, W)
        out.append(tokenizer.encode(x)[1][:, 0].cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_frames(tokenizer, tokens: torch.Tensor) -> torch.Tensor:
    """``(N, h, w)`` DV tokens -> ``(N, 3, H, W)`` in [-1, 1], each frame an image."""
    dev = next(tokenizer.parameters()).device
    return tokenizer.decode_tokens(tokens.to(dev)[:, None]).clamp(-1, 1)[:, :, 0].float().cpu()


def _stamp(root: str | Path, tokenizer_run: Path, lam_run: Path, size: int) -> dict:
    from worldmill.training import checkpoint

    return {
        "source": str(Path(root).absolute()),
        "tokenizer_run": str(Path(tokenizer_run).absolute()),
        "tokenizer_step": checkpoint.latest(tokenizer_run)[1]["step"],
        "lam_run": str(Path(lam_run).absolute()),
        "lam_step": checkpoint.latest(lam_run)[1]["step"],
        "size": size,
    }


def ensure_cache(
    path: Path, clips: FrameClips, tokenizer, lam, tokenizer_run, lam_run, log=print
) -> Path:
    """Tokens and latent actions of every clip of ``clips`` at ``path`` (``.npz``):
    reused when its stamp names the same shards, tokenizer and LAM checkpoints, else
    computed and written atomically."""
    stamp = _stamp(clips.root, tokenizer_run, lam_run, clips.size)
    stamp["clips"] = [r.clip_id for r in clips.refs]
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == stamp:
        log(f"genie cache: reusing {path}")
        return path
    log(f"genie cache: {len(clips.refs)} clips -> {path}")
    arrays: dict[str, np.ndarray] = {}
    for r in clips.refs:
        x = to_frames(clips.frames(r))
        arrays[f"tokens/{r.clip_id}"] = encode_frames(tokenizer, x).numpy().astype(np.int32)
        dev = next(lam.parameters()).device
        codes, z = lam.infer(x[None].to(dev))
        arrays[f"codes/{r.clip_id}"] = codes[0].cpu().numpy()
        arrays[f"z/{r.clip_id}"] = z[0].float().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        np.savez(f, **arrays)
    meta.write_text(json.dumps(stamp))
    shutil.move(partial, path)
    return path


class GenieCache:
    """Read side of ``ensure_cache``: clip id -> tokens, codes, vectors."""

    def __init__(self, path: Path):
        z = np.load(path)
        self.tokens = {k[7:]: z[k] for k in z.files if k.startswith("tokens/")}
        self.codes = {k[6:]: z[k] for k in z.files if k.startswith("codes/")}
        self.z = {k[2:]: z[k] for k in z.files if k.startswith("z/")}


class TokenWindowStream(data.EpochStream):
    """``batch(step)`` -> ``{"tokens": (B, T, h, w), "actions": (B, T - 1), "mask":
    (B, T, h, w) bool}``: ``T`` consecutive frames at a random start, their latent actions,
    and a MaskGIT mask (rate r ~ U(``mask_min``, 1) per clip on frames 1..T-1; with
    probability ``clean_context`` only the last frame is masked, as at generation time)."""

    def __init__(self, refs, cache: GenieCache, t: int, batch_size: int, mask_min: float,
                 clean_context: float, seed=0, rank=0, world=1):  # fmt: skip
        super().__init__(refs, batch_size, seed, rank, world)
        self.cache, self.t = cache, t
        self.mask_min, self.clean = mask_min, clean_context

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        start = self.position(step) + self.rank * self.b
        toks, acts, masks = [], [], []
        for p in range(start, start + self.b):
            ref = self.ref_at(p)
            tok, code = self.cache.tokens[ref.clip_id], self.cache.codes[ref.clip_id]
            g = torch.Generator().manual_seed(self.seed * 7_919 + p)
            t0 = int(torch.randint(0, max(1, len(tok) - self.t + 1), (1,), generator=g))
            tk = torch.from_numpy(tok[t0 : t0 + self.t].astype(np.int64))
            ac = torch.from_numpy(code[t0 : t0 + self.t - 1].astype(np.int64))
            if len(tk) < self.t:  # short clip: repeat the last frame under action 0
                tk = torch.cat([tk, tk[-1:].expand(self.t - len(tk), -1, -1)])
                ac = torch.cat([ac, ac.new_zeros(self.t - 1 - len(ac))])
            r = self.mask_min + (1 - self.mask_min) * float(torch.rand(1, generator=g))
            m = torch.rand(tk.shape, generator=g) < r
            m[0] = False
            if float(torch.rand(1, generator=g)) < self.clean:
                m[:-1] = False
            if not m.any():  # at least one target
                m[-1, 0, 0] = True
            toks.append(tk), acts.append(ac), masks.append(m)
        return {
            "tokens": torch.stack(toks),
            "actions": torch.stack(acts),
            "mask": torch.stack(masks),
        }
