"""Stage 3 — transcode: cut a video's clips into H.264 mp4 files.

One ffmpeg process per video decodes the source once and encodes once: keyframes are
forced at every clip boundary and the segment muxer writes each span to its own file, so
the cost is one decode+encode pass however many clips a video has (per-clip seeking would
decode overlapping GOPs again and again). Gaps between clips (trimmed transitions) become
segments that are deleted. If the segment pass fails, clips are cut one by one.

Temp paths (the segment directory, a clip's ``.part`` file) are unique per call, so two
runs or two attempts never write into each other's files. A failure that is not the
clip's — ffmpeg killed by a signal, disk full, the temp directory removed — raises
:class:`~worldmill.media.InfraError` instead of rejecting the clips: the task is retried,
and a video it still stops gets no row, so the next run processes it again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from worldmill.config import TranscodeConfig
from worldmill.media import InfraError, MediaError, even, ffmpeg_bin, probe
from worldmill.records import Clip, Video

if TYPE_CHECKING:
    from worldmill.tasks.onepass import Spool

log = logging.getLogger(__name__)

SEG_PREFIX = ".seg_"  # per-call segment directories: OUT/clips/<video_id>/.seg_<video_id>_*/
RESERVATIONS = ".spools"  # OUT/clips/.spools: one file per running decode (tasks/onepass.py)
PART_SUFFIX = ".part.mp4"  # a single clip being written: <clip_id>.mp4.<random>.part.mp4

# ffmpeg messages (strerror texts) that describe the machine, not the input.
_INFRA_MESSAGES = (
    "No space left on device",
    "Disk quota exceeded",
    "Cannot allocate memory",
    "Too many open files",
    "Read-only file system",
    "Input/output error",
)


@functools.lru_cache(maxsize=1)
def nvenc_available() -> bool:
    """True when ffmpeg has h264_nvenc *and* an NVIDIA GPU is visible."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        r = subprocess.run(
            [ffmpeg_bin(), "-hide_banner", "-encoders"], capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"h264_nvenc" in r.stdout


def encoder_args(cfg: TranscodeConfig) -> list[str]:
    enc = cfg.encoder
    if enc == "auto":
        enc = "h264_nvenc" if nvenc_available() else "libx264"
    bf = ["-bf", str(cfg.bframes)] if cfg.bframes >= 0 else []  # -1: encoder default
    if enc == "h264_nvenc":
        args = ["-c:v", "h264_nvenc", "-preset", "p4", "-cq", str(cfg.crf), "-pix_fmt", "yuv420p"]
        return args + bf
    args = ["-c:v", "libx264", "-preset", cfg.preset, "-crf", str(cfg.crf), "-pix_fmt", "yuv420p"]
    return args + bf


def output_size(video: Video, cfg: TranscodeConfig) -> tuple[int, int]:
    """(width, height), both even, never upscaled, aspect kept."""
    h = min(cfg.height, video.height)
    h -= h % 2
    return even(video.width * h / video.height), max(h, 2)


def _filters(video: Video, cfg: TranscodeConfig) -> str:
    w, h = output_size(video, cfg)
    vf = [f"scale={w}:{h}:flags=bicubic"]
    if cfg.fps:
        vf.insert(0, f"fps={cfg.fps}")
    return ",".join(vf)


def transcode_clips(
    video: Video, clips: list[Clip], out_dir: str, cfg: TranscodeConfig, spool: Spool | None = None
) -> list[Clip]:
    """Write every kept clip of ``video`` to ``out_dir/<clip_id>.mp4`` and fill in its
    ``clip_uri``, size, fps and frame count. Failures that are the clip's are recorded on
    the clips; infrastructure failures raise :class:`InfraError` (an ``OSError``).

    ``spool``: the video's frames already decoded at the output size (the one-pass
    decoder's raw file): the encoder reads them instead of decoding the source again."""
    todo = [c for c in clips if c.kept]
    if not todo:
        return clips
    os.makedirs(out_dir, exist_ok=True)
    if spool is not None:
        src, inp, vf = str(spool.path), spool.input_args(), []
    else:
        src = os.path.abspath(video.local_path or video.path)
        inp, vf = [], ["-vf", _filters(video, cfg)]
    try:
        if spool is not None:
            _spool_pass(spool, video, todo, out_dir, cfg)
        else:
            _segment_pass(src, inp, vf, video.duration_s, video, todo, out_dir, cfg)
    except (MediaError, RuntimeError, subprocess.TimeoutExpired) as e:
        log.warning("segment pass failed for %s (%s); cutting clips one by one", video.video_id, e)
        for c in todo:
            try:
                _single_clip(src, inp, vf, c, out_dir, cfg)
            except (MediaError, RuntimeError, subprocess.TimeoutExpired) as e2:
                c.error("transcode", str(e2))
    for c in todo:
        if c.kept:
            _fill_info(c) if spool is None else _fill_from_spool(c, spool)
    return clips


def _segment_pass(
    src: str,
    inp: list[str],
    vf: list[str],
    end: float,
    video: Video,
    clips: list[Clip],
    out_dir: str,
    cfg: TranscodeConfig,
) -> None:
    """One encoder over the whole input (``inp``: input options, ``vf``: filter options,
    ``end``: its duration in seconds) writing one segment per span between boundaries."""
    # Segment boundaries: every clip start/end. Segment k spans [bounds[k], bounds[k+1]].
    cuts = sorted({round(t, 3) for c in clips for t in (c.start_s, c.end_s)})
    times = [t for t in cuts if 0 < t < end - 1e-3]
    bounds = [0.0, *times, end]
    tmp = Path(tempfile.mkdtemp(prefix=f"{SEG_PREFIX}{video.video_id}_", dir=out_dir))
    fps = cfg.fps or video.fps or 24.0
    cmd = [
        ffmpeg_bin(),
        "-v",
        "error",
        "-nostdin",
        "-y",
        *inp,
        "-i",
        src,
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
    ]
    cmd += [*vf, *encoder_args(cfg)]
    try:
        produced = _segments(cmd, src, [f"{t:.3f}" for t in times], fps, end, len(bounds) - 1, tmp)
        index = {round(b, 3): k for k, b in enumerate(bounds[:-1])}
        for c in clips:
            k = index.get(round(c.start_s, 3))
            if k is None:
                raise RuntimeError(f"no segment starts at {c.start_s:.3f}s")
            dest = os.path.join(out_dir, f"{c.clip_id}.mp4")
            os.replace(produced[k], dest)  # OSError (disk, vanished dir) = infrastructure
            c.clip_uri = dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gap segments, or a failed pass's files


def _segments(
    cmd: list[str], src: str, times: list[str], fps: float, end: float, expected: int, tmp: Path
) -> list[Path]:
    """Run the encoder ``cmd`` (everything up to the output; it reads ``src``) into the
    segment muxer, cut at ``times`` (seconds, as text; keyframes forced there), and return
    the ``expected`` segment files of ``tmp`` in order. ``end``: the output's duration (for
    the timeout)."""
    if times:
        ts = ",".join(times)
        cmd = [*cmd, "-force_key_frames", ts, "-f", "segment", "-segment_times", ts]
        cmd += ["-segment_time_delta", f"{0.5 / fps:.4f}"]
    else:
        cmd = [*cmd, "-f", "segment", "-segment_time", f"{end + 3600:.0f}"]
    cmd += ["-reset_timestamps", "1", "-segment_format", "mp4", str(tmp / "%05d.mp4")]
    r = subprocess.run(cmd, capture_output=True, timeout=max(600, 10 * end))
    if r.returncode != 0:
        raise_if_infra(r, src, tmp)
        raise RuntimeError(_stderr(r) or "ffmpeg failed")
    produced = sorted(tmp.glob("*.mp4"))
    if len(produced) != expected:
        if not tmp.is_dir():
            raise InfraError(f"segment directory {tmp} vanished while ffmpeg ran")
        raise RuntimeError(f"segment muxer wrote {len(produced)} files for {expected} spans")
    return produced


def spool_range(c: Clip, rate: float) -> tuple[int, int]:
    """The spool frames ``[a, b)`` of clip ``c``: those with ``start <= k / rate < end``,
    cut times in ms rounded to the nearest frame (as ffmpeg rounds them)."""
    return round(round(c.start_s, 3) * rate), round(round(c.end_s, 3) * rate)


def _spool_pass(spool: Spool, video: Video, clips: list[Clip], out_dir: str, cfg) -> None:
    """One encoder over the spool that encodes only the frames of ``clips``: a ``select``
    of their frame ranges, re-timed to be contiguous, cut into one segment per clip at the
    cumulative frame counts. Gaps between clips and the clips the stages rejected cost a
    raw read, not an encode."""
    r = float(spool.rate)
    clips = sorted(clips, key=lambda c: c.start_s)
    ranges = [spool_range(c, r) for c in clips]
    ranges = [(a, min(b, spool.n_frames)) for a, b in ranges]
    for (a, b), c in zip(ranges, clips, strict=True):
        if b <= a:
            raise RuntimeError(f"{c.clip_id}: no spool frames in [{c.start_s}, {c.end_s})")
    if any(b0 > a1 for (_, b0), (a1, _) in zip(ranges[:-1], ranges[1:], strict=True)):
        raise RuntimeError("overlapping clips: each would need its own encode")
    # n = the spool frame's index; between() is inclusive. Commas are escaped for the graph.
    select = "+".join(f"between(n\\,{a}\\,{b - 1})" for a, b in ranges)
    vf = ["-vf", f"select={select},setpts=N/FRAME_RATE/TB"]
    counts = [b - a for a, b in ranges]
    # Cut a quarter frame before each clip's first output frame, so that the forced
    # keyframe and the segment start both land exactly on it.
    cuts, n = [], 0
    for k in counts[:-1]:
        n += k
        cuts.append(f"{(n - 0.25) / r:.6f}")
    tmp = Path(tempfile.mkdtemp(prefix=f"{SEG_PREFIX}{video.video_id}_", dir=out_dir))
    cmd = [ffmpeg_bin(), "-v", "error", "-nostdin", "-y", *spool.input_args()]
    cmd += ["-i", str(spool.path), "-map", "0:v:0", *vf, *encoder_args(cfg)]
    try:
        produced = _segments(cmd, str(spool.path), cuts, r, sum(counts) / r, len(clips), tmp)
        for c, seg in zip(clips, produced, strict=True):
            dest = os.path.join(out_dir, f"{c.clip_id}.mp4")
            os.replace(seg, dest)  # OSError (disk, vanished dir) = infrastructure
            c.clip_uri = dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _single_clip(
    src: str, inp: list[str], vf: list[str], c: Clip, out_dir: str, cfg: TranscodeConfig
) -> None:
    dest = os.path.join(out_dir, f"{c.clip_id}.mp4")
    part = f"{dest}.{uuid.uuid4().hex[:12]}{PART_SUFFIX}"
    cmd = [ffmpeg_bin(), "-v", "error", "-nostdin", "-y", "-ss", f"{c.start_s:.3f}", *inp]
    cmd += ["-i", src, "-t", f"{c.duration_s:.3f}", "-map", "0:v:0", "-an", "-sn", "-dn"]
    cmd += [*vf, *encoder_args(cfg), part]
    r = subprocess.run(cmd, capture_output=True, timeout=max(300, 10 * c.duration_s))
    if r.returncode != 0 or not os.path.exists(part):
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise_if_infra(r, src, Path(out_dir))
        raise RuntimeError(_stderr(r) or "ffmpeg failed")
    os.replace(part, dest)
    c.clip_uri = dest


def _fill_info(c: Clip) -> None:
    try:
        info = probe(c.clip_uri)
    except MediaError as e:
        c.error("transcode", f"output unreadable: {e}")
        return
    c.width, c.height, c.fps, c.num_frames = info.width, info.height, info.fps, info.num_frames


def _fill_from_spool(c: Clip, spool: Spool) -> None:
    """Size, rate and frame count of a clip cut from the spool, without an ffprobe per clip:
    the spool's frames ``k`` with ``start <= k / rate < end`` (keyframes are forced at
    exactly those times, which tests/tasks/test_onepass.py checks against ffprobe)."""
    if not os.path.getsize(c.clip_uri):
        c.error("transcode", "output unreadable: empty file")
        return
    fill_from_spool(c, spool)


def fill_from_spool(c: Clip, spool: Spool) -> None:
    """The size, rate and frame count clip ``c`` has (or will have) when cut from ``spool``."""
    r = float(spool.rate)
    c.width, c.height, c.fps = spool.width, spool.height, r
    a, b = spool_range(c, r)
    c.num_frames = min(b, spool.n_frames) - a


def _stderr(r: subprocess.CompletedProcess) -> str:
    return r.stderr.decode(errors="replace").strip()[-400:]


def raise_if_infra(r: subprocess.CompletedProcess, src: str, work_dir: Path) -> None:
    """Raise InfraError when a failed ffmpeg run says nothing about the clip: the source was
    probed fine at ingest, so a signal, a full disk or a vanished directory is the machine's."""
    if r.returncode < 0:
        raise InfraError(f"ffmpeg was killed by signal {-r.returncode} (not the clip's fault)")
    err = _stderr(r)
    for msg in _INFRA_MESSAGES:
        if msg in err:
            raise InfraError(f"ffmpeg: {msg} ({err[-200:]})")
    if not work_dir.is_dir():
        raise InfraError(f"output directory {work_dir} vanished while ffmpeg ran")
    if not os.path.exists(src):
        raise InfraError(f"source {src} vanished while ffmpeg ran")


def remove_stale_temp(clips_root: str) -> int:
    """Delete segment directories and ``.part`` files left under ``OUT/clips`` by killed runs.
    Only call it while holding OUT's run lock: then no other run is writing there."""
    root = Path(clips_root)
    n = 0
    if not root.is_dir():
        return 0
    for d in root.glob(f"*/{SEG_PREFIX}*"):
        shutil.rmtree(d, ignore_errors=True)
        n += 1
    for f in root.glob(f"{RESERVATIONS}/*"):  # a killed decode's spool reservation
        f.unlink(missing_ok=True)
        n += 1
    for f in root.glob(f"*/*{PART_SUFFIX}"):
        with contextlib.suppress(OSError):
            f.unlink()
            n += 1
    return n
