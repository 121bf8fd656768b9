"""ffmpeg/ffprobe helpers. Arguments go to ffmpeg as an argv list, never through a shell,
so file names with spaces, quotes, ``;``, ``$(...)`` or backticks are just names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np


class MediaError(Exception):
    """A file could not be probed or decoded; the message is meant for people."""


class InfraError(OSError):
    """Processing a readable file failed for a reason that is not the file's (ffmpeg killed,
    disk full, a temp directory removed under it). Never recorded as a rejection: it raises,
    Prefect retries the task, and a video it still stops is left for the next run."""


@lru_cache(maxsize=1)
def ffmpeg_bin() -> str:
    path = shutil.which("ffmpeg")
    if not path:
        raise RuntimeError("ffmpeg not found on PATH (apt-get install ffmpeg)")
    return path


@lru_cache(maxsize=1)
def ffprobe_bin() -> str:
    path = shutil.which("ffprobe")
    if not path:
        raise RuntimeError("ffprobe not found on PATH (apt-get install ffmpeg)")
    return path


def even(x: float) -> int:
    """Round a frame side to the nearest even number >= 2 (yuv420p needs even sides)."""
    return max(2, int(round(x / 2)) * 2)


@dataclass
class ProbeInfo:
    duration_s: float
    width: int
    height: int
    fps: float
    num_frames: int
    codec: str
    has_audio: bool = False
    bit_rate: int = 0  # video stream bits/s (container rate or size/duration when absent)
    raw: dict = field(default_factory=dict, repr=False)


def _rate(s: str | None) -> float:
    if not s or s in ("0/0", "N/A"):
        return 0.0
    if "/" in s:
        a, b = s.split("/", 1)
        return float(a) / float(b) if float(b) else 0.0
    return float(s)


def probe(path: str, timeout: float = 60) -> ProbeInfo:
    """Probe a local file. Raises MediaError with a readable reason for non-videos."""
    cmd = [
        ffprobe_bin(),
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "--",
        path,
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise MediaError(f"ffprobe timed out after {timeout:.0f} s") from e
    if r.returncode != 0:
        msg = r.stderr.decode(errors="replace").strip().splitlines()
        tail = msg[-1] if msg else f"exit code {r.returncode}"
        raise MediaError(f"not a readable media file ({tail.replace(path, '<file>')})")
    info = json.loads(r.stdout or b"{}")
    streams = info.get("streams", [])
    video = [
        s
        for s in streams
        if s.get("codec_type") == "video" and s.get("disposition", {}).get("attached_pic", 0) == 0
    ]
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    if not video:
        raise MediaError("no video stream (audio-only)" if has_audio else "no video stream")
    v = video[0]
    fps = _rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate"))
    dur = float(v.get("duration") or info.get("format", {}).get("duration") or 0.0)
    nb = int(v.get("nb_frames") or 0) or int(round(dur * fps))
    w, h = int(v.get("width") or 0), int(v.get("height") or 0)
    if w <= 0 or h <= 0:
        raise MediaError("video stream has no frame size")
    if dur <= 0 or fps <= 0:
        raise MediaError("video stream has no duration or frame rate (truncated?)")
    codec = v.get("codec_name", "")
    return ProbeInfo(dur, w, h, fps, nb, codec, has_audio, _bit_rate(v, info, dur), raw=info)


def _bit_rate(stream: dict, info: dict, duration_s: float) -> int:
    """Video bits/s: the stream's own rate when the container records it (mp4, mov), else
    the container's overall rate (mkv, webm, ogg record none per stream), else size/duration."""
    fmt = info.get("format", {})
    for raw in (stream.get("bit_rate"), fmt.get("bit_rate")):
        try:
            if raw and int(raw) > 0:
                return int(raw)
        except (TypeError, ValueError):
            continue
    try:
        return int(int(fmt.get("size") or 0) * 8 / duration_s) if duration_s > 0 else 0
    except (TypeError, ValueError):
        return 0


def decode_frames(
    path: str,
    width: int,
    height: int | None = None,
    fps: float | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
    gray: bool = False,
    timeout: float = 600,
) -> np.ndarray:
    """Decode a video once, scaled down, into ``(T, H, W, 3)`` uint8 RGB (or ``(T, H, W)`` gray).

    ``height`` None keeps aspect (rounded to even). ``fps`` None keeps every frame.
    Raises MediaError when nothing decodes.
    """
    if height is None:
        info = probe(path)
        height = even(info.height * width / info.width)
    vf = []
    if fps:
        vf.append(f"fps={fps}")
    vf.append(f"scale={width}:{height}:flags=area")
    cmd = [ffmpeg_bin(), "-v", "error", "-nostdin"]
    if start_s:
        cmd += ["-ss", f"{start_s:.4f}"]
    cmd += ["-i", path]
    if duration_s:
        cmd += ["-t", f"{duration_s:.4f}"]
    pix = "gray" if gray else "rgb24"
    cmd += ["-an", "-sn", "-vf", ",".join(vf), "-f", "rawvideo", "-pix_fmt", pix, "pipe:1"]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise MediaError(f"decode timed out after {timeout:.0f} s") from e
    c = 1 if gray else 3
    frame_bytes = width * height * c
    n = len(r.stdout) // frame_bytes
    if n == 0:
        err = r.stderr.decode(errors="replace").strip().splitlines()
        raise MediaError(f"no frames decoded ({err[-1] if err else 'empty stream'})")
    arr = np.frombuffer(r.stdout[: n * frame_bytes], dtype=np.uint8)
    shape = (n, height, width) if gray else (n, height, width, 3)
    return arr.reshape(shape)


def decode_bytes(
    data: bytes, width: int, height: int | None = None, fps: float | None = None
) -> np.ndarray:
    """Decode an in-memory video (e.g. a shard's mp4 part) with PyAV, no temp file and no
    subprocess: ``(T, H, W, 3)`` uint8 RGB scaled with area averaging, like
    :func:`decode_frames` (same ``fps`` / ``scale`` filters, through libavfilter).

    ``height`` None keeps the aspect (even). Raises MediaError when nothing decodes.
    """
    import io

    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as box:
            if not box.streams.video:
                raise MediaError("no video stream")
            stream = box.streams.video[0]
            stream.thread_type = "AUTO"
            src_w, src_h = stream.codec_context.width, stream.codec_context.height
            if height is None:
                height = even(src_h * width / src_w)
            graph = av.filter.Graph()
            chain = [graph.add_buffer(template=stream)]
            if fps:
                chain.append(graph.add("fps", f"{fps}"))
            chain.append(graph.add("scale", f"{width}:{height}:flags=area"))
            chain.append(graph.add("format", "rgb24"))
            chain.append(graph.add("buffersink"))
            for a, b in zip(chain, chain[1:], strict=False):
                a.link_to(b)
            graph.configure()
            frames: list[np.ndarray] = []

            def drain() -> None:
                while True:
                    try:
                        frames.append(graph.pull().to_ndarray())
                    except (av.BlockingIOError, av.EOFError):
                        return

            for frame in box.decode(stream):
                graph.push(frame)
                drain()
            graph.push(None)  # flush (the fps filter holds its last frame back)
            drain()
    except av.FFmpegError as e:
        raise MediaError(f"decode failed: {e}") from e
    if not frames:
        raise MediaError("no frames decoded (empty stream)")
    return np.stack(frames)


def _shrink(frames: np.ndarray, width: int, height: int | None, gray: bool) -> np.ndarray:
    """``(T, H, W, 3)`` RGB -> ``(T, h, width, 3)`` (``(T, h, width)`` gray), area filter."""
    t, h, w, _ = frames.shape
    if height is None:
        height = even(h * width / w)
    out = np.empty((t, height, width) if gray else (t, height, width, 3), np.uint8)
    for i in range(t):
        f = frames[i]
        if (w, h) != (width, height):
            f = cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
        out[i] = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) if gray else f
    return out


class ClipView:
    """Lazy, cached access to one transcoded clip's frames, shared by all per-clip stages
    so that the clip is decoded at most once per (size, fps) however many stages look."""

    def __init__(
        self,
        clip_uri: str | None,
        fps: float = 0.0,
        width: int = 0,
        height: int = 0,
        source: tuple[str, float, float] | None = None,
    ):
        self.uri = clip_uri
        self.fps = fps
        self.width = width
        self.height = height
        # (path, start_s, duration_s) of the clip inside its source video: what is decoded
        # while the clip has no file of its own yet (the one-pass path runs the stages before
        # it encodes, so a stage that asks for frames nobody put here reads the source).
        self.source = source
        self._cache: dict[tuple, np.ndarray] = {}
        self._pinned: set[tuple] = set()  # keys ``put`` there: they survive ``clear``

    def frames(
        self, width: int = 160, sample_fps: float | None = 4.0, gray: bool = False
    ) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 RGB frames (``(T, H, W)`` if gray), aspect kept."""
        key = (width, sample_fps, gray)
        if key not in self._cache:
            height = None
            if self.width and self.height:
                height = even(self.height * width / self.width)
            wider = self._wider(width, sample_fps)
            if wider is not None:  # same frames already held larger: shrink, do not decode
                self._cache[key] = _shrink(wider, width, height, gray)
            elif self.source is not None and not (self.uri and os.path.exists(self.uri)):
                path, start, dur = self.source
                self._cache[key] = decode_frames(
                    path, width, height, fps=sample_fps, start_s=start, duration_s=dur, gray=gray
                )
            else:
                self._cache[key] = decode_frames(self.uri, width, height, fps=sample_fps, gray=gray)
        return self._cache[key]

    def put(self, frames: np.ndarray, width: int, sample_fps: float | None) -> None:
        """Hand the view ``(T, H, W, 3)`` RGB frames already decoded at ``width`` and
        ``sample_fps`` (the one-pass decoder does): ``frames`` at that key, and at any
        smaller width of the same rate, are then served without decoding the clip file.
        They stay through :meth:`clear` (the one-pass decoder hands memory-mapped slices:
        keeping them costs no memory, dropping them would mean a decode)."""
        self._cache[(width, sample_fps, False)] = frames
        self._pinned.add((width, sample_fps, False))

    def _wider(self, width: int, sample_fps: float | None) -> np.ndarray | None:
        """A cached RGB array of the same frame rate at least ``width`` wide, if any."""
        best = None
        for key, arr in self._cache.items():
            if len(key) != 3 or not isinstance(key[0], int) or not isinstance(arr, np.ndarray):
                continue  # a memo (``("flow", 160)``), not frames
            w, f, g = key
            if f == sample_fps and not g and w >= width and arr.ndim == 4:
                if best is None or w < best.shape[2]:
                    best = arr
        return best

    def clear(self) -> None:
        """Drop every cached frame array and memo (frees memory between stage batches),
        except the frames handed in with :meth:`put`."""
        self._cache = {k: v for k, v in self._cache.items() if k in self._pinned}

    def memo(self, key: tuple, compute):
        """Cache any result derived from this clip (e.g. optical flow) under ``key`` so
        that stages sharing it compute it once: ``view.memo(("flow", 160), fn)``."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def keyframes(self, n: int = 3, width: int = 320) -> np.ndarray:
        """``n`` frames evenly spread over the clip, ``(n, H, W, 3)`` uint8 RGB."""
        allf = self.frames(width=width, sample_fps=4.0)
        idx = np.linspace(0, len(allf) - 1, num=min(n, len(allf))).round().astype(int)
        return allf[idx]
