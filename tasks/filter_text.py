"""Stage ``text``: reject clips with on-screen text overlays, by real OCR (RapidOCR).

RapidOCR (PP-OCRv4 detection + recognition as ONNX models shipped inside the
``rapidocr-onnxruntime`` wheel: no download) runs on ``n_frames`` keyframes from the shared
analysis decode (320 px wide). Detection runs at the frame's own size (``det_limit_type=max``:
never upscaled to the library's default 736 px short side, which costs ~20x), about 50 ms
per 320x180 frame on one CPU core; the angle classifier is skipped (overlays are upright).

Score (``clip.text_score``): the fraction of the frame area covered by the union of text
boxes recognised with confidence >= ``min_confidence``, the maximum over the sampled frames.
A subtitle line covers ~0.02-0.04, a title card 0.1-0.4, a corner logo/watermark < 0.01.
The recognised strings (unique, in reading order) go to ``clip.extra["ocr_text"]`` and the
number of confident boxes to ``extra["n_text_boxes"]``. A clip an earlier stage rejected is
not OCR'd (``only_kept``, as NeMo Curator's filters drop a clip for the stages after them):
its text cannot change the verdict, and OCR is the costliest filter (on the long bench
corpus, 40 of the 134 clips it used to read were already rejected). Its ``text_score``
stays NaN. ``get_ocr()`` is the per-process cached engine the captioner reuses;
``ocr_frames()`` is the reusable OCR call.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from worldmill.media import ClipView
from worldmill.records import Clip
from worldmill.tasks.filter_motion import ANALYSIS_WIDTH

STAGE = "text"
MAX_TEXT_CHARS = 500  # ocr_text is truncated to this many characters

_lock = threading.Lock()
_engines: dict[int, object] = {}


def get_ocr(threads: int = 0):
    """The process-wide RapidOCR engine (loading takes ~0.5-1 s, so it is built once).

    ``threads``: onnxruntime intra-op threads; 0 = the Dask worker's threads inside a
    curate worker (``worldmill.cluster.limit_threads``), else onnxruntime's default (all
    cores): several worker processes sharing a machine must not oversubscribe the cores.
    """
    threads = threads or int(os.environ.get("WORLDMILL_THREADS", "0") or 0)
    with _lock:
        eng = _engines.get(threads)
        if eng is None:
            from rapidocr_onnxruntime import RapidOCR  # heavy import: only when OCR is used

            kwargs: dict = {"det_limit_type": "max", "det_limit_side_len": 960}
            if threads > 0:
                kwargs["intra_op_num_threads"] = threads
            eng = _engines[threads] = RapidOCR(**kwargs)
        return eng


@dataclass
class TextBox:
    box: np.ndarray  # (4, 2) float32 corner points in pixels of the OCR'd frame
    text: str
    confidence: float  # recognition confidence in [0, 1]


def ocr_frame(rgb: np.ndarray, threads: int = 0) -> list[TextBox]:
    """OCR one ``(H, W, 3)`` uint8 RGB frame. Returns every box RapidOCR reports."""
    engine = get_ocr(threads)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # RapidOCR takes arrays as BGR
    with _lock:  # the engine keeps per-call state (pre-processing op): one call at a time
        result, _ = engine(bgr, use_cls=False)
    return [
        TextBox(np.asarray(box, dtype=np.float32).reshape(4, 2), str(text), float(conf))
        for box, text, conf in (result or [])
    ]


def edge_density(rgb: np.ndarray) -> float:
    """Fraction of Canny edge pixels of an ``(H, W, 3)`` RGB frame: text is dense in edges,
    so frames below ~0.01 (sky, walls, blur) cannot hold legible text."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return float((cv2.Canny(gray, 100, 200) > 0).mean())


def text_area_fraction(boxes: list[TextBox], shape: tuple[int, ...]) -> float:
    """Fraction of an ``(H, W, ...)`` frame covered by the union of the boxes."""
    h, w = shape[:2]
    if not boxes:
        return 0.0
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(b.box).astype(np.int32) for b in boxes], 1)
    return float(mask.mean())


def ocr_frames(
    frames: np.ndarray,
    min_confidence: float = 0.6,
    min_edge_density: float = 0.01,
    threads: int = 0,
) -> tuple[float, list[str], int]:
    """OCR ``(N, H, W, 3)`` RGB frames.

    Returns ``(text_score, texts, n_boxes)``: the max over frames of the confident-text area
    fraction, the unique confident strings in order of appearance, and the largest number
    of confident boxes in one frame. Frames with edge density below ``min_edge_density``
    are skipped (0 disables the pre-check).
    """
    score, n_boxes, texts = 0.0, 0, []
    for rgb in frames:
        if min_edge_density > 0 and edge_density(rgb) < min_edge_density:
            continue
        boxes = [b for b in ocr_frame(rgb, threads) if b.confidence >= min_confidence]
        boxes = [b for b in boxes if b.text.strip()]
        score = max(score, text_area_fraction(boxes, rgb.shape))
        n_boxes = max(n_boxes, len(boxes))
        for b in boxes:
            t = " ".join(b.text.split())
            if t not in texts:
                texts.append(t)
    return score, texts, n_boxes


def run(
    clip: Clip,
    view: ClipView,
    *,
    max_score: float = 0.04,  # reject when text covers more than 4 % of the frame
    only_kept: bool = True,  # skip clips an earlier stage rejected (their OCR decides nothing)
    n_frames: int = 3,  # keyframes OCR'd, evenly spread over the clip
    width: int = ANALYSIS_WIDTH,  # px; OCR frame width (320 shares the analysis decode)
    min_confidence: float = 0.6,  # recognition confidence for a box to count
    min_edge_density: float = 0.01,  # cheap pre-check; 0 = OCR every sampled frame
    threads: int = 0,  # onnxruntime threads; 0 = the worker's (all cores outside one)
) -> Clip:
    """OCR a few keyframes; reject when ``text_score > max_score``."""
    if only_kept and not clip.kept:
        return clip
    frames = view.keyframes(n=n_frames, width=width)  # (n, H, W, 3) uint8 RGB
    score, texts, n_boxes = ocr_frames(frames, min_confidence, min_edge_density, threads)
    clip.text_score = score
    clip.extra["ocr_text"] = " | ".join(texts)[:MAX_TEXT_CHARS]
    clip.extra["n_text_boxes"] = n_boxes
    if score > max_score:
        clip.reject(STAGE)
    return clip
