"""Write synthetic frames to real video files with real ffmpeg (sample corpus, tests)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from worldmill.media import ffmpeg_bin


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float = 24.0,
    crf: int = 18,
    codec: str = "libx264",
    extra_args: list[str] | None = None,
) -> Path:
    """Encode ``(H, W, 3)`` uint8 RGB frames (an array ``(T, H, W, 3)`` or an iterable) to
    ``path``. H and W must be even for yuv420p. Returns the path."""
    path = Path(path)
    it = iter(frames)
    first = next(it)
    h, w = first.shape[:2]
    cmd = [
        ffmpeg_bin(),
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-r",
        f"{fps}",
        "-i",
        "pipe:0",
        "-an",
        "-c:v",
        codec,
    ]
    if codec == "libx264":
        cmd += ["-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p"]
    # An absolute path: a name starting with "-" is never read as an option.
    cmd += list(extra_args or []) + [str(path.absolute())]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        proc.stdin.write(np.ascontiguousarray(first, dtype=np.uint8).tobytes())
        for f in it:
            proc.stdin.write(np.ascontiguousarray(f, dtype=np.uint8).tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}: {err.strip()}")
    return path
