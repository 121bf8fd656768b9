"""Frame post-guard: faces blurred with OpenCV Haar cascades, NSFW frames withheld with
NudeNet; plus :func:`guard_video` for mp4 in -> mp4 out through real ffmpeg.

Faces
    ``haarcascade_frontalface_alt2`` and ``haarcascade_profileface`` (run on the frame
    and on its mirror image, since the profile cascade only knows one side; skip it with
    ``face_profile=False`` to cut the cost by ~3/4), both shipped in the pinned
    ``opencv-python-headless`` wheel, on the histogram-equalised luma scaled to at most
    ``detect_width`` px wide; boxes of one face from several cascades are merged.
    Each box, padded by ``face_pad`` of its side on each side, counts in its own frame and
    in the ``face_temporal`` frames before and after (so a face the cascade misses for a
    frame or two is still covered); a frame's overlapping padded boxes are merged into
    their bounding rectangle, and each such region is replaced by a Gaussian blur of itself
    with sigma = 1/4 of its longer side -- a featureless blob: the variance of the Laplacian
    inside the face box falls ~450-900x (``tests/guardrails/test_frames.py``,
    ``bench/guardrails.py``). Pixels outside the blurred regions are left exactly as they
    were.

NSFW
    NudeNet 3.4's ``320n`` detector (ONNX inside the ``nudenet`` wheel, onnxruntime on CPU)
    on every ``nsfw_stride``-th frame; a frame with a detection of a class in
    ``nsfw_classes`` scoring >= ``nsfw_threshold`` is withheld -- replaced by a black frame,
    so the video keeps its length and timing -- together with the frames up to the next
    checked one on either side.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from worldmill.guardrails.config import Guardrails

FRONTAL = "haarcascade_frontalface_alt2.xml"  # fewer false positives than _default here
PROFILE = "haarcascade_profileface.xml"  # knows one side only: also run on the mirror image
_local = threading.local()  # CascadeClassifier keeps per-call state: one per thread


def _cascade(name: str) -> cv2.CascadeClassifier:
    cache = _local.__dict__.setdefault("cascades", {})
    if name not in cache:
        path = os.path.join(cv2.data.haarcascades, name)
        det = cv2.CascadeClassifier(path)
        if det.empty():
            raise RuntimeError(f"cannot load Haar cascade {path}")
        cache[name] = det
    return cache[name]


def _merge(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Merge boxes of one face found by several cascades: any two whose centres fall inside
    each other's box become their union, until no such pair is left."""
    out = [list(b) for b in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                (x, y, w, h), (u, v, p, q) = out[i], out[j]
                if (x <= u + p / 2 <= x + w and y <= v + q / 2 <= y + h) or (
                    u <= x + w / 2 <= u + p and v <= y + h / 2 <= v + q
                ):
                    x0, y0 = min(x, u), min(y, v)
                    out[i] = [x0, y0, max(x + w, u + p) - x0, max(y + h, v + q) - y0]
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return [tuple(b) for b in out]


def detect_faces(rgb: np.ndarray, cfg: Guardrails | None = None) -> list[tuple[int, int, int, int]]:
    """Face boxes ``(x, y, w, h)`` in pixels of the ``(H, W, 3)`` uint8 RGB frame, one per
    face (boxes of the same face from several cascades merged)."""
    cfg = cfg or Guardrails()
    h, w = rgb.shape[:2]
    scale = min(1.0, cfg.detect_width / w)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    gw = gray.shape[1]
    kw = {"scaleFactor": 1.1, "minNeighbors": 5, "minSize": (cfg.face_min_px, cfg.face_min_px)}
    found = [tuple(b) for b in _cascade(FRONTAL).detectMultiScale(gray, **kw)]
    if cfg.face_profile:
        prof = _cascade(PROFILE)
        found += [tuple(b) for b in prof.detectMultiScale(gray, **kw)]
        for x, y, bw, bh in prof.detectMultiScale(np.ascontiguousarray(gray[:, ::-1]), **kw):
            found.append((gw - x - bw, y, bw, bh))  # mirror back
    inv = 1.0 / scale
    return _merge(
        [
            (int(x * inv), int(y * inv), int(round(bw * inv)), int(round(bh * inv)))
            for x, y, bw, bh in found
        ]
    )


def padded(box: tuple[int, int, int, int], pad: float, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(x0, y0, x1, y1)`` of ``box`` grown by ``pad`` x its side on each side, clipped."""
    x, y, w, h = box
    px, py = int(round(w * pad)), int(round(h * pad))
    return max(0, x - px), max(0, y - py), min(shape[1], x + w + px), min(shape[0], y + h + py)


def _union_rects(rects: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Merge intersecting ``(x0, y0, x1, y1)`` rectangles into their bounding rectangles."""
    out = [list(r) for r in dict.fromkeys(rects)]
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return [tuple(r) for r in out]


def blur_box(frame: np.ndarray, rect: tuple[int, ...]) -> None:
    """Blur ``frame[y0:y1, x0:x1]`` in place beyond recognition."""
    x0, y0, x1, y1 = rect
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    roi = frame[y0:y1, x0:x1]
    sigma = max(x1 - x0, y1 - y0) / 4.0
    frame[y0:y1, x0:x1] = cv2.GaussianBlur(roi, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


@lru_cache(maxsize=1)
def _nude_detector() -> Any:
    from nudenet import NudeDetector

    return NudeDetector()  # loads the 320n ONNX shipped in the wheel; no download


def nsfw_detections(rgb: np.ndarray, cfg: Guardrails | None = None) -> list[dict]:
    """NudeNet detections ``{class, score, box}`` of classes in ``cfg.nsfw_classes`` scoring
    at least ``cfg.nsfw_threshold`` in one ``(H, W, 3)`` uint8 RGB frame."""
    cfg = cfg or Guardrails()
    # NudeNet expects what cv2.imread returns: BGR.
    dets = _nude_detector().detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    keep = set(cfg.nsfw_classes)
    return [d for d in dets if d["class"] in keep and d["score"] >= cfg.nsfw_threshold]


def guard_frames(frames: np.ndarray, cfg: Guardrails | None = None) -> tuple[np.ndarray, dict]:
    """Post-guard ``(T, H, W, 3)`` uint8 RGB frames -> (guarded copy, report).

    report: ``enabled``, ``frames``, ``faces_detected`` (faces found, summed over frames),
    ``frames_with_faces``, ``face_boxes`` ``[[t, x, y, w, h], ...]`` as detected,
    ``faces_blurred`` (regions blurred, summed over frames; temporal carry included),
    ``blurred`` ``[[t, x0, y0, x1, y1], ...]`` those regions, ``frames_withheld`` (count),
    ``withheld`` (frame indices), ``nsfw`` ``[{frame, class, score}, ...]`` (the hits).
    """
    cfg = cfg or Guardrails()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"expected (T, H, W, 3) uint8 RGB frames, got {frames.dtype} {frames.shape}"
        )
    t = len(frames)
    report: dict[str, Any] = {
        "enabled": cfg.enabled,
        "frames": t,
        "faces_detected": 0,
        "frames_with_faces": 0,
        "face_boxes": [],
        "faces_blurred": 0,
        "blurred": [],
        "frames_withheld": 0,
        "withheld": [],
        "nsfw": [],
    }
    if not cfg.enabled:
        return frames, report
    out = frames.copy()

    if cfg.face_blur:
        boxes = [detect_faces(f, cfg) for f in frames]  # detect on the originals
        for i, bs in enumerate(boxes):
            report["face_boxes"] += [[i, *map(int, b)] for b in bs]
        report["faces_detected"] = sum(len(b) for b in boxes)
        report["frames_with_faces"] = sum(1 for b in boxes if b)
        k = cfg.face_temporal
        for i in range(t):
            near = [b for j in range(max(0, i - k), min(t, i + k + 1)) for b in boxes[j]]
            for r in _union_rects([padded(b, cfg.face_pad, out.shape[1:]) for b in near]):
                blur_box(out[i], r)
                report["blurred"].append([i, *map(int, r)])
        report["faces_blurred"] = len(report["blurred"])

    if cfg.nsfw:
        s = cfg.nsfw_stride
        withheld: set[int] = set()
        for i in range(0, t, s):
            for d in nsfw_detections(frames[i], cfg):
                report["nsfw"].append(
                    {"frame": i, "class": d["class"], "score": round(d["score"], 3)}
                )
                withheld.update(range(max(0, i - s + 1), min(t, i + s)))
        for i in sorted(withheld):
            out[i] = 0
        report["withheld"] = sorted(withheld)
        report["frames_withheld"] = len(withheld)
    return out, report


class OutputError(Exception):
    """The guarded video could not be written (a missing folder, a full disk, ffmpeg's
    muxer refusing the audio): not the input's fault. The message is meant for people."""


def guard_video(src: str, dst: str, cfg: Guardrails | None = None, crf: int = 18) -> dict:
    """Decode ``src`` (ffmpeg, full resolution), :func:`guard_frames`, encode H.264 ``dst``
    at the source frame rate, with the source's audio carried over (muted wherever frames
    were withheld: the audio is not checked, so it goes with its frames). Returns the
    report plus ``input``, ``output``, ``fps`` and ``audio`` (see :func:`mux_audio`).
    Raises :class:`worldmill.media.MediaError` on bad input and :class:`OutputError` when
    ``dst`` cannot be written (then no partial ``dst`` file is left)."""
    from worldmill.media import decode_frames, even, probe
    from worldmill.synth import write_video

    info = probe(src)
    fps = info.fps or 24.0
    # yuv420p needs even sides: decode straight to the nearest even size.
    w, h = even(info.width), even(info.height)
    frames = decode_frames(src, width=w, height=h)  # (T, H, W, 3)
    guarded, report = guard_frames(frames, cfg)
    # With audio, the video goes to a temporary file first and ffmpeg adds the audio.
    video_only = f"{dst}.video.mp4" if info.has_audio else dst
    audio = "none"
    try:
        try:
            write_video(video_only, guarded, fps=fps, crf=crf)
        except (RuntimeError, OSError) as e:  # ffmpeg could not write it, or the pipe broke
            raise OutputError(str(e)) from e
        if info.has_audio:
            mute = withheld_ranges(report.get("withheld", []), fps)
            audio = mux_audio(video_only, src, dst, mute)
    except OutputError:
        if os.path.isfile(dst):  # whatever ffmpeg left there is not a guarded video
            os.unlink(dst)
        raise
    finally:
        if info.has_audio and os.path.exists(video_only):
            os.unlink(video_only)
    return {"input": str(src), "output": str(dst), "fps": info.fps, "audio": audio, **report}


def withheld_ranges(frames: list[int], fps: float) -> list[tuple[float, float]]:
    """Sorted frame indices -> ``[(start_s, end_s), ...]`` of the runs of consecutive
    frames (frame ``i`` lasts ``[i / fps, (i + 1) / fps)``)."""
    runs: list[list[int]] = []
    for i in sorted(frames):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(a / fps, (b + 1) / fps) for a, b in runs]


def mux_audio(video: str, src: str, dst: str, mute: list[tuple[float, float]]) -> str:
    """Write ``dst``: the video stream of ``video`` (copied) and the audio streams of ``src``.
    Audio is copied as it is unless ``mute`` has ``(start_s, end_s)`` ranges to silence
    (then AAC); a codec the mp4 container refuses is re-encoded to AAC. Returns what was
    done: "copied", "re-encoded" or "muted N ranges". Raises :class:`OutputError` when
    ffmpeg cannot write ``dst`` either way."""
    import subprocess

    from worldmill.media import ffmpeg_bin

    def run(audio_args: list[str]) -> subprocess.CompletedProcess:
        cmd = [ffmpeg_bin(), "-v", "error", "-y", "-i", video, "-i", src]
        cmd += ["-map", "0:v:0", "-map", "1:a?", "-c:v", "copy", *audio_args, dst]
        return subprocess.run(cmd, capture_output=True, text=True)

    if mute:
        on = "+".join(f"between(t,{a:.6f},{b:.6f})" for a, b in mute)
        r, done = (
            run(["-af", f"volume=0:enable='{on}'", "-c:a", "aac"]),
            f"muted {len(mute)} ranges",
        )
    else:
        r, done = run(["-c:a", "copy"]), "copied"
        if r.returncode != 0:  # e.g. PCM or Vorbis audio, which mp4 does not take as is
            r, done = run(["-c:a", "aac"]), "re-encoded"
    if r.returncode != 0:
        raise OutputError(f"could not add the audio of {src} to {dst}: {r.stderr.strip()[-500:]}")
    return done
