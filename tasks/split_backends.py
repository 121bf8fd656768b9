"""Shot-detection backends of the split stage (``SplitConfig.method``) and the analysis
decode the worldmill detector runs on.

* ``worldmill`` (default): :func:`decode_analysis` decodes the video once at
  ``analysis_width`` pixels wide through one ffmpeg rawvideo pipe, and
  :func:`worldmill.tasks.shot_detect.analyse_frames` finds the boundaries in those frames.
  :func:`analysis_size` and :func:`no_frames_message` are shared with the one-pass decoder
  (:mod:`worldmill.tasks.onepass`), which produces the same frames.
* ``pyscenedetect``: PySceneDetect's ``ContentDetector`` (the baseline).
* ``transnetv2``: TransNetV2 through ``transnetv2_pytorch`` when it is installed (weights
  from ``$WORLDMILL_TRANSNETV2_WEIGHTS``).

Each backend maps ``(path, cfg, info)`` to ``(transitions, analysed duration in seconds)``
and is listed in :data:`BACKENDS`; ``fixed`` (no detection) is handled by
:func:`worldmill.tasks.split.detect_transitions` itself.
"""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np

from worldmill.config import SplitConfig
from worldmill.media import MediaError, ProbeInfo, decode_frames, ffmpeg_bin, probe
from worldmill.tasks.shot_detect import Transition, analyse_frames, mask_runs


def analysis_size(width: int) -> tuple[int, int]:
    """A fixed 16:9 analysis raster (aspect does not matter for boundaries), both sides
    multiples of 4 so that it halves twice exactly."""
    w = max(16, int(width) // 4 * 4)
    return w, max(8, int(round(w * 9 / 16 / 4)) * 4)


_NTSC = {
    23.98: 24000 / 1001,
    29.97: 30000 / 1001,
    47.95: 48000 / 1001,
    59.94: 60000 / 1001,
    119.88: 120000 / 1001,
}


def _fps_from_log(log_text: str) -> float:
    """Frame rate of the first input video stream from ffmpeg's banner (``24 fps``,
    ``29.97 fps``; rounded NTSC rates are snapped to their exact value)."""
    for line in log_text.splitlines():
        if "Stream #0:" in line and "Video:" in line:
            m = re.search(r"([\d.]+)(k?) fps", line) or re.search(r"([\d.]+)(k?) tbr", line)
            if m:
                v = float(m.group(1)) * (1000 if m.group(2) else 1)
                return _NTSC.get(round(v, 2), v)
    return 0.0


def no_frames_message(log_text: str, returncode: int, path: str) -> str:
    """A readable reason why ffmpeg decoded no frame, from its log (the path hidden)."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    if any("matches no streams" in ln for ln in lines):
        reason = "no video stream"
    elif not lines:
        reason = f"exit code {returncode}"
    else:
        err = [ln for ln in lines if "rror" in ln or "nvalid" in ln or "not found" in ln]
        reason = (err or lines)[-1]
    return f"no frames decoded ({reason.replace(path, '<file>')})"


def decode_analysis(
    path: str, width: int = 64, info: ProbeInfo | None = None, timeout: float = 3600
) -> tuple[np.ndarray, float]:
    """Decode every frame once, scaled to a small fixed raster, through one ffmpeg rawvideo
    pipe (argv list, no shell, no separate ffprobe). Returns ``(T, h, w, 3)`` uint8 RGB
    frames and the frame rate (from ``info`` when given, else from ffmpeg's log).
    Raises MediaError with a readable reason when nothing decodes."""
    w, h = analysis_size(width)
    # Deblocking is skipped (invisible at analysis size, ~20 % of H.264 decode time).
    cmd = [
        ffmpeg_bin(),
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "info",
        "-skip_loop_filter",
        "all",
        "-i",
        path,
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        "-vf",
        f"scale={w}:{h}:flags=area",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "pipe:1",
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise MediaError(f"decode timed out after {timeout:.0f} s") from e
    log_text = r.stderr.decode(errors="replace")
    n = len(r.stdout) // (w * h * 3)
    if n == 0:
        raise MediaError(no_frames_message(log_text, r.returncode, path))
    fps = info.fps if info is not None and info.fps > 0 else _fps_from_log(log_text)
    if fps <= 0:
        raise MediaError("video stream has no frame rate")
    frames = np.frombuffer(r.stdout, np.uint8, count=n * w * h * 3).reshape(n, h, w, 3)
    return frames, fps


def _worldmill(
    path: str, cfg: SplitConfig, info: ProbeInfo | None
) -> tuple[list[Transition], float]:
    frames, fps = decode_analysis(path, cfg.analysis_width, info)
    return analyse_frames(frames, fps, cfg.threshold), len(frames) / fps


def _pyscenedetect(
    path: str, cfg: SplitConfig, info: ProbeInfo | None
) -> tuple[list[Transition], float]:
    try:
        from scenedetect import ContentDetector, SceneManager, open_video
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise RuntimeError("method=pyscenedetect needs scenedetect-headless") from e
    try:
        video = open_video(path, backend="opencv")
    except Exception as e:  # OpenCV/PySceneDetect raise assorted errors for bad files
        msg = f"PySceneDetect could not open the video ({type(e).__name__}: {e})"
        raise MediaError(msg.replace(path, "<file>")) from e
    sm = SceneManager()
    sm.add_detector(ContentDetector(threshold=cfg.threshold or 27.0))
    sm.detect_scenes(video, show_progress=False)
    scenes = sm.get_scene_list()
    out = []
    for start, _ in scenes[1:]:
        t = start.get_seconds()
        out.append(Transition(t, t, t, "hard"))
    dur = scenes[-1][1].get_seconds() if scenes else video.duration.get_seconds()
    return out, dur


def _transnetv2(
    path: str, cfg: SplitConfig, info: ProbeInfo | None
) -> tuple[list[Transition], float]:
    try:
        import torch
        from transnetv2_pytorch import TransNetV2  # first: fails fast when absent
    except ImportError as e:
        raise RuntimeError(
            "method=transnetv2 needs the optional package transnetv2_pytorch (not installed) "
            "and its weights file in $WORLDMILL_TRANSNETV2_WEIGHTS; use method=worldmill"
        ) from e
    weights = os.environ.get("WORLDMILL_TRANSNETV2_WEIGHTS", "")
    if not weights or not os.path.isfile(weights):
        raise RuntimeError("method=transnetv2: set WORLDMILL_TRANSNETV2_WEIGHTS to the .pth file")
    model = TransNetV2()
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    model.eval()
    info = info or probe(path)
    frames = decode_frames(path, 48, 27)  # the network's input size, (T, 27, 48, 3)
    n = len(frames)
    # Windows of 100 frames, stride 50, 25 frames of context (padding by edge frames).
    end_pad = 25 + 50 - (n % 50 if n % 50 else 50)
    padded = np.concatenate([frames[:1]] * 25 + [frames] + [frames[-1:]] * end_pad)
    preds = []
    with torch.no_grad():
        for i in range(0, len(padded) - 50, 50):
            x = torch.from_numpy(padded[i : i + 100][None])
            single, _ = model(x)
            preds.append(torch.sigmoid(single)[0, 25:75, 0].numpy())
    p = np.concatenate(preds)[:n]
    thr = cfg.threshold or 0.5
    out = []
    for a, b in mask_runs(p > thr):
        t = (a + b) / 2 / info.fps
        out.append(Transition(t, a / info.fps, b / info.fps, "hard" if b - a <= 1 else "dissolve"))
    return out, n / info.fps


BACKENDS = {"worldmill": _worldmill, "pyscenedetect": _pyscenedetect, "transnetv2": _transnetv2}
