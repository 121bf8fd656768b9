"""Stage ``caption``: a pluggable captioner.

``backend="default"`` works offline on a CPU and only says what real detectors measured:

* camera motion from the optical flow of the analysis frames (``filter_motion``): the
  median global translation gives a pan (horizontal) or tilt (vertical), the flow's
  isotropic scale rate a zoom; small global motion is a static shot, "with movement in the
  scene" when part of the frame still moves on its own;
* on-screen text: ``extra["ocr_text"]`` from the ``text`` stage when it ran, else OCR of
  the keyframes with the same cached engine;
* faces (OpenCV Haar cascade, frontal faces >= 20 px at 320 px wide) and people (OpenCV
  HOG pedestrian detector on keyframes upscaled ``people_scale`` times, SVM margin >= 1,
  non-maximum suppressed); counts are the median over keyframes (seen in most of them);
* dominant colours: k-means (k=6) over the keyframes' pixels, each centre named from its
  hue/saturation/value, shares summed per name;
* brightness: mean luma.

It writes a one- or two-sentence caption, e.g. "A slow pan to the left over a bright
scene dominated by blue and white, with no people in view. On-screen text reads 'SALE'.",
and the facts to ``clip.extra``: ``camera_motion`` (static, pan_left, pan_right, tilt_up,
tilt_down, zoom_in, zoom_out), ``camera_speed`` (frame widths per second), ``scene_motion``
(fraction of pixels moving independently of the camera), ``n_faces``, ``n_people``,
``colors`` (comma-separated names), ``brightness`` (if the quality stage did not set it),
``caption_backend``.

``backend="vlm"`` captions with a local vision-language model (any checkpoint that
``transformers.AutoModelForImageTextToText`` + ``AutoProcessor`` load, e.g. Qwen2.5-VL or
LLaVA, from a local folder only: ``local_files_only=True``), given ``n_frames`` keyframes
as images and ``prompt``; greedy decoding of at most ``max_new_tokens``. The model is loaded
once per process and cached. Qwen2-VL/2.5-VL processors need ``torchvision`` installed
(transformers 5 builds their video processor with it).

``only_kept`` (default True): clips already rejected by an earlier stage are not captioned
(their ``caption`` stays ""), because captions only feed the kept clips' embeddings,
dedup and shards, and the caption is the most expensive stage with a VLM. Set it to False to
caption every candidate (e.g. to review what the filters threw away).
"""

from __future__ import annotations

import colorsys
import os
import threading
from typing import Any

import cv2
import numpy as np

from worldmill.media import ClipView
from worldmill.records import Clip
from worldmill.tasks.filter_motion import (
    ANALYSIS_FPS,
    ANALYSIS_WIDTH,
    analysis_frames,
    camera_motion_stats,
    clip_flow,
)
from worldmill.tasks.filter_text import ocr_frames

STAGE = "caption"
DEFAULT_PROMPT = (
    "These are frames from one video clip, in order. Describe the clip in one or two "
    "sentences: the scene, the main subjects and actions, and how the camera moves."
)

# --------------------------------------------------------------------------- detectors

# One detector of each kind per thread: OpenCV's CascadeClassifier keeps per-call state and
# is not safe to share between the Dask worker threads of `worldmill curate`.
_local = threading.local()


def _face_detector() -> cv2.CascadeClassifier:
    det = getattr(_local, "face", None)
    if det is None:
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        det = cv2.CascadeClassifier(path)
        if det.empty():
            raise RuntimeError(f"cannot load Haar cascade {path}")
        _local.face = det
    return det


def _people_detector() -> cv2.HOGDescriptor:
    hog = getattr(_local, "people", None)
    if hog is None:
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        _local.people = hog
    return hog


def count_faces(frames: np.ndarray) -> int:
    """Median over ``(N, H, W, 3)`` RGB frames of the number of frontal faces (a face must
    be seen in most frames: one-frame false positives do not count)."""
    det, counts = _face_detector(), []
    for rgb in frames:
        if _median_settled(counts, len(frames)):
            break
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        found = det.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20))
        counts.append(len(found))
    return int(np.median(counts)) if counts else 0


def _median_settled(counts: list[int], n: int) -> bool:
    """True when the median of ``n`` counts is already fixed by the first ``len(counts)``:
    more than half of all ``n`` are one value (then the rest cannot move the median of an
    odd ``n``). Skips the last detector run when two of three keyframes agree."""
    if n % 2 == 0 or not counts:
        return False
    return max(counts.count(c) for c in set(counts)) > n // 2


def count_people(frames: np.ndarray, scale: float = 1.5, min_weight: float = 1.0) -> int:
    """Median over ``(N, H, W, 3)`` RGB frames of the number of HOG pedestrian detections.

    The default detector's window is 64x128 px, so frames are upscaled ``scale`` times
    (a person must be >= 128/scale px tall in the frame). Detections with an SVM margin
    below ``min_weight`` are dropped (big text overlays score up to ~0.8) and overlapping
    ones merged (NMS, IoU 0.3).
    """
    hog, counts = _people_detector(), []
    for rgb in frames:
        if _median_settled(counts, len(frames)):
            break
        img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if scale != 1.0:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        rects, weights = hog.detectMultiScale(img, winStride=(8, 8), padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            counts.append(0)
            continue
        w = np.asarray(weights, dtype=np.float32).ravel()
        keep = cv2.dnn.NMSBoxes([list(map(int, r)) for r in rects], w.tolist(), min_weight, 0.3)
        counts.append(len(np.asarray(keep).ravel()))
    return int(np.median(counts)) if counts else 0


# --------------------------------------------------------------------------- colours


def color_name(rgb: np.ndarray) -> str:
    """Plain name of one RGB colour (``(3,)`` values in 0..255)."""
    r, g, b = (float(x) / 255.0 for x in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    hue = h * 360.0
    if v < 0.2:
        return "black"
    if s < 0.2 or (s < 0.3 and v < 0.4):
        return "white" if v > 0.8 else "gray"
    if hue < 15 or hue >= 345:
        return "brown" if v < 0.5 else "red"
    if hue < 45:
        return "brown" if v < 0.65 or s < 0.45 else "orange"
    if hue < 70:
        return "olive" if v < 0.5 else "yellow"
    if hue < 165:
        return "green"
    if hue < 195:
        return "teal" if v < 0.6 else "cyan"
    if hue < 255:
        return "blue"
    if hue < 290:
        return "purple"
    return "pink"


def dominant_colors(
    frames: np.ndarray, k: int = 6, min_share: float = 0.15
) -> list[tuple[str, float]]:
    """Named dominant colours of ``(N, H, W, 3)`` RGB frames, as ``(name, share)`` pairs
    with share >= ``min_share`` (at least the largest one), largest first."""
    small = np.concatenate([cv2.resize(f, (64, max(1, 64 * f.shape[0] // f.shape[1])),
                                       interpolation=cv2.INTER_AREA).reshape(-1, 3)
                            for f in frames])  # fmt: skip
    pix = small.astype(np.float32)  # (P, 3)
    k = min(k, len(pix))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    cv2.setRNGSeed(0)
    _, labels, centers = cv2.kmeans(pix, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    counts = np.bincount(labels.ravel(), minlength=k) / len(pix)
    shares: dict[str, float] = {}
    for c, n in zip(centers, counts, strict=True):
        name = color_name(c)
        shares[name] = shares.get(name, 0.0) + float(n)
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    return [kv for i, kv in enumerate(ranked) if i == 0 or kv[1] >= min_share]


# --------------------------------------------------------------------------- facts


def classify_camera(stats: dict[str, float], static_speed: float = 0.01) -> tuple[str, float]:
    """``(camera_motion, speed)`` from ``camera_motion_stats``.

    Speed is in frame widths per second; a zoom counts as the speed of the frame's left/right
    edge (half the scale rate). Below ``static_speed`` the camera is ``static``. Content
    moving right (dx > 0) means the camera pans *left*; content moving down means it tilts
    *up*; content expanding means it zooms *in*.
    """
    dx, dy, zoom = stats["dx"], stats["dy"], stats["zoom"]
    trans, zoom_speed = float(np.hypot(dx, dy)), abs(zoom) / 2.0
    speed = max(trans, zoom_speed)
    if speed < static_speed:
        return "static", speed
    if zoom_speed > trans:
        return ("zoom_in" if zoom > 0 else "zoom_out"), speed
    if abs(dx) >= abs(dy):
        return ("pan_left" if dx > 0 else "pan_right"), speed
    return ("tilt_up" if dy > 0 else "tilt_down"), speed


def clip_facts(
    clip: Clip,
    view: ClipView,
    n_frames: int = 3,
    people_scale: float = 1.5,
    static_speed: float = 0.01,
) -> dict[str, Any]:
    """Measure everything the default captioner talks about (see the module doc)."""
    frames = analysis_frames(view)  # (T, H, 320, 3) uint8 RGB at 4 fps
    idx = np.linspace(0, len(frames) - 1, num=min(n_frames, len(frames))).round().astype(int)
    keyframes = frames[idx]  # same frames as view.keyframes(n_frames, 320)
    flow = clip_flow(view, 160)  # (T-1, h, 160, 2), shared with the motion stage
    stats = camera_motion_stats(flow, ANALYSIS_FPS)
    motion, speed = classify_camera(stats, static_speed)
    if "ocr_text" in clip.extra:  # the text stage already ran: reuse its OCR
        ocr_text = str(clip.extra["ocr_text"])
    else:
        _, texts, _ = ocr_frames(keyframes)
        ocr_text = " | ".join(texts)
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in keyframes])
    return {
        "camera_motion": motion,
        "camera_speed": speed,
        "scene_motion": stats["moving_fraction"],
        "ocr_text": ocr_text,
        "n_faces": count_faces(keyframes),
        "n_people": count_people(keyframes, people_scale),
        "colors": dominant_colors(keyframes),
        "brightness": float(gray.mean() / 255.0),
    }


_NUMBERS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _count(n: int, singular: str, plural: str) -> str:
    word = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    return f"{word} {singular if n == 1 else plural}"


def _quote(text: str, max_chars: int = 80) -> str:
    text = " ".join(text.replace("|", " ").split())
    if len(text) > max_chars:
        text = text[: max_chars - 3].rsplit(" ", 1)[0] + "..."
    return text.replace("'", "\u2019")


def describe(facts: dict[str, Any]) -> str:
    """Fluent one- or two-sentence caption from ``clip_facts``."""
    motion, speed = facts["camera_motion"], facts["camera_speed"]
    pace = "slow" if speed < 0.05 else ("fast" if speed > 0.25 else "steady")
    if motion == "static":
        shot, prep = "A static shot", "of"
    else:
        kind, direction = motion.split("_")
        if kind == "pan":
            shot, prep = f"A {pace} pan to the {direction}", "across"
        elif kind == "tilt":
            shot, prep = f"A {pace} tilt {direction}", "over"
        else:
            shot, prep = f"A {pace} zoom {direction}", "on" if direction == "in" else "from"
    b = facts["brightness"]
    light = "dark " if b < 0.2 else "dim " if b < 0.35 else "bright " if b > 0.65 else ""
    names = [n for n, _ in facts["colors"]][:3]
    colours = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    scene = f"a {light}scene dominated by {colours}"
    extras = []
    if motion == "static" and facts["scene_motion"] > 0.03:
        extras.append("movement in the frame")
    n_people = max(int(facts["n_people"]), int(facts["n_faces"]))
    people = f"{_count(n_people, 'person', 'people')} in view"
    if facts["n_faces"]:
        people += " (" + ("a face" if facts["n_faces"] == 1 else "faces") + " clearly visible)"
    extras.append(people)
    text = f"{shot} {prep} {scene}, with {' and '.join(extras)}."
    if facts["ocr_text"].strip():
        text += f" On-screen text reads '{_quote(facts['ocr_text'])}'."
    return text


# --------------------------------------------------------------------------- VLM backend

_vlm_lock = threading.Lock()
_vlms: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def _resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_vlm(model_path: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """``(model, processor)`` from a local folder, loaded once per process.

    ``dtype``: "auto" (bfloat16 on CUDA, float32 on CPU), or a torch dtype name.
    Never downloads: a path that is not a local model folder is an error.
    """
    if not model_path or not os.path.isdir(model_path):
        raise FileNotFoundError(
            f"caption backend vlm: model_path {model_path!r} is not a local folder"
        )
    device = _resolve_device(device)
    key = (os.path.abspath(model_path), device, dtype)
    with _vlm_lock:
        if key not in _vlms:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            if dtype == "auto":
                torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            else:
                torch_dtype = getattr(torch, dtype)
            processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(
                model_path, local_files_only=True, dtype=torch_dtype
            )
            model.to(device).eval()
            _vlms[key] = (model, processor)
        return _vlms[key]


def vlm_caption(
    frames: np.ndarray,
    model_path: str,
    prompt: str = DEFAULT_PROMPT,
    max_new_tokens: int = 64,
    device: str = "auto",
    dtype: str = "auto",
) -> tuple[str, int]:
    """Caption ``(N, H, W, 3)`` RGB frames with a local VLM. Returns ``(text, n_new_tokens)``."""
    model, processor = load_vlm(model_path, device, dtype)
    import torch
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": content}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:  # no chat template: one image placeholder per image, then the prompt
        text = str(getattr(processor, "image_token", "<image>")) * len(images) + prompt
    inputs = processor(text=[text], images=images, return_tensors="pt").to(model.device)
    for k, v in inputs.items():  # pixel values in the model's dtype (bf16 on GPU)
        if torch.is_tensor(v) and v.is_floating_point():
            inputs[k] = v.to(model.dtype)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, inputs["input_ids"].shape[1] :]  # (1, n_new) generated token ids
    caption = processor.batch_decode(new, skip_special_tokens=True)[0]
    return " ".join(caption.split()), int(new.shape[1])


# --------------------------------------------------------------------------- stage


def run(
    clip: Clip,
    view: ClipView,
    *,
    backend: str = "default",  # "default" (offline detectors) or "vlm"
    only_kept: bool = True,  # skip clips an earlier stage rejected (see module doc)
    n_frames: int = 3,  # keyframes looked at (faces, people, colours, OCR; VLM images)
    people_scale: float = 1.5,  # HOG upscale: people >= 128/scale px tall are found
    static_speed: float = 0.01,  # frame widths/s of global motion below which: static
    model_path: str = "",  # vlm: local model folder (never downloaded)
    prompt: str = DEFAULT_PROMPT,  # vlm: instruction given with the frames
    max_new_tokens: int = 64,  # vlm: greedy decoding budget
    frame_width: int = ANALYSIS_WIDTH,  # vlm: px width of the frames given to the model
    device: str = "auto",  # vlm: "auto" = cuda when available, else cpu
    dtype: str = "auto",  # vlm: "auto" = bfloat16 on cuda, float32 on cpu
) -> Clip:
    """Caption the clip with ``backend``; facts go to ``clip.extra``."""
    if only_kept and not clip.kept:
        return clip
    if backend == "default":
        facts = clip_facts(clip, view, n_frames, people_scale, static_speed)
        clip.caption = describe(facts)
        clip.extra["camera_motion"] = facts["camera_motion"]
        clip.extra["camera_speed"] = round(float(facts["camera_speed"]), 5)
        clip.extra["scene_motion"] = round(float(facts["scene_motion"]), 5)
        clip.extra["n_faces"] = int(facts["n_faces"])
        clip.extra["n_people"] = int(facts["n_people"])
        clip.extra["colors"] = ",".join(n for n, _ in facts["colors"])
        clip.extra.setdefault("brightness", float(facts["brightness"]))
        if "ocr_text" not in clip.extra:
            clip.extra["ocr_text"] = facts["ocr_text"]
    elif backend == "vlm":
        frames = view.keyframes(n=n_frames, width=frame_width)
        clip.caption, n_tokens = vlm_caption(
            frames, model_path, prompt, max_new_tokens, device, dtype
        )
        clip.extra["caption_model"] = os.path.basename(os.path.normpath(model_path))
        clip.extra["caption_tokens"] = n_tokens
    else:
        raise ValueError(f"unknown caption backend {backend!r} (expected 'default' or 'vlm')")
    clip.extra["caption_backend"] = backend
    return clip
