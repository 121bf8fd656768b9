"""Camera motion named by captions and read from frames: what the ``diffusion`` kind's
Text2World camera-control metric compares (``kinds/diffusion.py``).

Captions name a motion in the offline captioner's words (``tasks/caption.py``: "pan to the
left", "tilt up", "zoom out", "static shot", ...); frames are read by the same optical-flow
estimator the captioner uses (``filter_motion.camera_motion_stats`` + ``classify_camera``),
on frame pairs ``stride`` frames apart; ``camera_control`` scores a DiT's Text2World samples.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

# The offline captioner's words (tasks/caption.py) -> its camera_motion classes.
_MOTION = [
    (re.compile(r"\bpan to the left\b"), "pan_left"),
    (re.compile(r"\bpan to the right\b"), "pan_right"),
    (re.compile(r"\btilt up\b"), "tilt_up"),
    (re.compile(r"\btilt down\b"), "tilt_down"),
    (re.compile(r"\bzoom in\b"), "zoom_in"),
    (re.compile(r"\bzoom out\b"), "zoom_out"),
    (re.compile(r"\bstatic shot\b"), "static"),
]
# Each motion as the content motion it causes in the frame, (vx, vy, zoom): the conventions
# of ``tasks.caption.classify_camera`` (a pan left moves content right, a tilt up moves it
# down, a zoom in expands it) -- the motion code of ``models/dit.py`` (``MOTION_DIM``).
MOTION_CODE = {
    "pan_left": (1.0, 0.0, 0.0),
    "pan_right": (-1.0, 0.0, 0.0),
    "tilt_up": (0.0, 1.0, 0.0),
    "tilt_down": (0.0, -1.0, 0.0),
    "zoom_in": (0.0, 0.0, 1.0),
    "zoom_out": (0.0, 0.0, -1.0),
    "static": (0.0, 0.0, 0.0),
}
# Captioner-style prompts, used when no corpus caption names a motion.
TEMPLATES = {
    "pan_left": "A slow pan to the left across a bright scene.",
    "pan_right": "A slow pan to the right across a bright scene.",
    "tilt_up": "A slow tilt up over a bright scene.",
    "tilt_down": "A slow tilt down over a bright scene.",
    "zoom_in": "A slow zoom in on a bright scene.",
    "zoom_out": "A slow zoom out from a bright scene.",
}


# The captioner's pace words ("A {pace} pan to the left", tasks/caption.py), kept with the
# motion in the camera phrase a prompt is conditioned on.
_PACE = re.compile(r"\b(?:slow|steady|fast)\s+$")


def camera_phrase(caption: str) -> str | None:
    """The camera phrase of a prompt in the captioner's words, with its pace word when
    there is one ("steady pan to the left", "zoom in", "static shot"), or None."""
    low = caption.lower()
    for pat, _ in _MOTION:
        m = pat.search(low)
        if m:
            pace = _PACE.search(low[: m.start()])
            return (pace.group(0) if pace else "") + m.group(0)
    return None


def prompt_conditions(captions: list[str], embeddings: np.ndarray | None = None) -> np.ndarray:
    """``(N, 771)`` float32 conditioning of the diffusion kind for prompts ``captions``:
    each prompt's MiniLM embedding (``embeddings`` ``(N, 384)`` when already computed),
    the MiniLM embedding of its camera phrase alone (:func:`camera_phrase`; zeros when it
    names none) and the motion code of that phrase (:data:`MOTION_CODE`, 3 values; zeros
    when it names none). In the pooled prompt embedding the few motion words are drowned by
    the rest (colours, people: RESULTS.md, diffusion round 2); on their own "pan to the
    left" and "pan to the right" embed far apart, and the code is what the model's per-cell
    camera field is drawn from (``models/dit.camera_field``)."""
    from worldmill.config import EmbedConfig
    from worldmill.tasks.embed import embed_texts

    if embeddings is None:
        embeddings = embed_texts(list(captions), EmbedConfig())
    phrases = [camera_phrase(c) for c in captions]
    known = sorted({p for p in phrases if p})
    table = dict(zip(known, embed_texts(known, EmbedConfig()), strict=True)) if known else {}
    cam = np.zeros_like(embeddings)
    code = np.zeros((len(captions), len(MOTION_CODE["static"])), np.float32)
    for i, p in enumerate(phrases):
        if p:
            cam[i] = table[p]
            code[i] = MOTION_CODE[caption_motion(p)]
    return np.concatenate([embeddings, cam, code], 1).astype(np.float32)


# A camera motion played backwards (``reverse_caption``, the diffusion kind's time-reversed
# training windows).
REVERSED = {
    "pan to the left": "pan to the right",
    "pan to the right": "pan to the left",
    "tilt up": "tilt down",
    "tilt down": "tilt up",
    "zoom in": "zoom out",
    "zoom out": "zoom in",
}
_REVERSE = re.compile(r"\b(" + "|".join(map(re.escape, REVERSED)) + r")\b", re.IGNORECASE)


def reverse_caption(caption: str) -> str:
    """The caption of the clip played backwards: its camera words swapped ("pan to the
    left" <-> "pan to the right", "tilt up" <-> "tilt down", "zoom in" <-> "zoom out"); a
    static shot or a caption naming no motion is unchanged."""
    return _REVERSE.sub(lambda m: REVERSED[m.group(1).lower()], caption)


def caption_motion(caption: str) -> str | None:
    """The camera motion a caption names (the captioner's phrasing), or None."""
    low = caption.lower()
    for pat, name in _MOTION:
        if pat.search(low):
            return name
    return None


def estimate_camera(frames: np.ndarray, fps: float, stride: int = 1) -> str:
    """Camera motion of ``(T, H, W, 3)`` uint8 frames by the project's optical-flow
    estimator (the one the captioner uses), on the frame pairs ``(i, i + stride)``.

    ``stride`` > 1 measures ``stride`` times the displacement per pair: the world corpus's
    camera moves ~0.3-1.4 px per frame at the 96 px training size, below what DIS reads
    reliably between consecutive frames, and a video tokenizer's decoded frames move
    smoothly from one latent frame to the next (``stride = t_c``) but not always within one
    (bench/RESULTS.md: real decoded windows read 78 % correctly at stride 1, 94 % at 4)."""
    from worldmill.tasks.caption import classify_camera
    from worldmill.tasks.filter_motion import camera_motion_stats, flow_fields, to_gray

    gray = to_gray(frames, frames.shape[2])  # (T, H, W) uint8
    pairs = [flow_fields(gray[[i, i + stride]]) for i in range(len(gray) - stride)]
    flow = np.concatenate(pairs) if pairs else flow_fields(gray[:1])  # (P, H, W, 2) px/pair
    return classify_camera(camera_motion_stats(flow, fps / stride))[0]


def camera_prompts(
    text: dict[str, tuple[str, np.ndarray]], held_ids: set[str], per_class: int
) -> list[tuple[str, str, np.ndarray | None]]:
    """``(motion, caption, embedding or None)``: up to ``per_class`` corpus captions per
    motion they name (held-out clips first, then by clip id); the templates when none do."""
    by: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    for cid in sorted(text, key=lambda c: (c not in held_ids, c)):
        cap, emb = text[cid]
        motion = caption_motion(cap)
        if motion is not None and cap not in {c for _, c, _ in by.get(motion, [])}:
            by.setdefault(motion, []).append((motion, cap, emb))
    if not by:
        return [(m, cap, None) for m, cap in TEMPLATES.items()]
    return [p for m in sorted(by) for p in by[m][:per_class]]


def camera_control(dit, tok, text: dict, held_ids: set[str], cfg, figure: Path, fps: float) -> dict:
    """The ``diffusion`` kind's camera-control metrics: Text2World samples of the DiT
    ``dit`` (``models/dit.py``) from motion-naming prompts (``camera_prompts`` over the
    caption dict ``text``), decoded by ``tok`` and read by :func:`estimate_camera` one
    latent frame apart, at ``cfg.sample.guidance`` and at 1; ``figure``: one sample per
    motion. ``cfg``: the run's ``DiffusionTrainConfig``."""
    from worldmill.training import metrics

    d, s = cfg.data, cfg.sample
    tc = tok.cfg.temporal_compression
    if cfg.eval.camera_prompts == 0:
        return {}
    prompts = camera_prompts(text, held_ids, cfg.eval.camera_prompts)
    if any(e is None for _, _, e in prompts):  # the templates: embed them here
        embs = prompt_conditions([c for _, c, _ in prompts])
    else:  # the corpus captions' conditioning (``prompt_conditions``, made by the data)
        embs = np.stack([e for _, _, e in prompts])
    emb = torch.from_numpy(embs).float().to(dit.latent_mean.device)
    want = [m for m, _, _ in prompts]
    res: dict = {}
    for key, g in (("camera_motion_accuracy", s.guidance), ("camera_motion_accuracy_g1", 1.0)):
        # one batch: every prompt one sample (the seed fixes all of them)
        lat = dit.text2world(emb, d.frames, (d.size, d.size), s.text2world == "first_frame",
                             steps=s.steps, guidance=g, shift=s.shift, seed=s.seed)  # fmt: skip
        videos = tok.decode(lat).clamp(-1, 1).float().cpu()  # (P, 3, T, H, W)
        got = [estimate_camera(v, fps, stride=tc) for v in metrics.to_uint8(videos)]
        res[key] = float(np.mean([a == b for a, b in zip(got, want, strict=True)]))
        res[f"{key}_estimated"] = got
        if key == "camera_motion_accuracy":
            first = {m: v for m, v in zip(want[::-1], list(videos)[::-1], strict=True)}
            metrics.plot_recon(first, figure, n_frames=6)
    classes = sorted(set(want))
    res.update(
        camera_motion_chance=1.0 / len(classes),
        camera_motion_classes=classes,
        camera_motion_prompts=[c for _, c, _ in prompts],
        camera_motion_prompted=want,
        camera_motion_guidance=s.guidance,
    )
    return res
