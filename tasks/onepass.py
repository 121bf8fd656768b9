"""One decode per video: the source is decoded once and its frames feed shot detection,
the encoder and the per-clip stages.

One ffmpeg process decodes the source and splits every decoded frame three ways:

1. the detector's raster (``SplitConfig.analysis_width``, 64x36 RGB, area filter), piped
   to Python: the same frames :func:`~worldmill.tasks.split_backends.decode_analysis` gives;
2. the transcode's output size (bicubic, yuv420p, exactly what the encoder would have
   scaled to) into a raw *spool* file;
3. ``STAGE_FPS`` (4) frames per second at ``STAGE_WIDTH`` (320) px RGB into a second raw
   file, memory-mapped: the frames every built-in per-clip stage reads.

Detection then plans the clips, each clip's :class:`~worldmill.media.ClipView` is handed
its slice of (3), so the per-clip stages decode nothing, and only then does one encoder
process read the spool (a raw read, no decode) for the clips the stages kept, with
keyframes forced at the clip boundaries and the segment muxer (see
:mod:`worldmill.tasks.transcode`): frames of rejected clips and of the gaps between clips
are never encoded. Both raw files live in a
per-call temp directory under the clip directory (named like the segment directories,
so :func:`~worldmill.tasks.transcode.remove_stale_temp` cleans up after a killed run)
and are deleted when the :func:`decode_once` context exits.

The spool holds the whole video uncompressed at the output size (W x H x 1.5 bytes a
frame: 456x256 at 24 fps is ~10 GB an hour), so a video whose spool would not fit in
half the free disk space, or :data:`SPOOL_MAX_BYTES`, takes the two-decode path
(``eligible`` says which). So do other detection methods, a resampled frame rate, and
every video when ``WORLDMILL_ONEPASS=0`` is set (the switch the speed bench compares with).
"Free" excludes what the spools other workers are writing now will still add: each
running decode reserves its size in ``OUT/clips/.spools`` (:func:`reserved_bytes`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from worldmill.config import SplitConfig, TranscodeConfig
from worldmill.media import ClipView, MediaError, even, ffmpeg_bin
from worldmill.records import Clip, Video
from worldmill.tasks.filter_motion import ANALYSIS_FPS as STAGE_FPS
from worldmill.tasks.filter_motion import ANALYSIS_WIDTH as STAGE_WIDTH
from worldmill.tasks.split_backends import analysis_size, no_frames_message
from worldmill.tasks.transcode import RESERVATIONS, SEG_PREFIX, output_size, raise_if_infra

log = logging.getLogger(__name__)

SPOOL_MAX_BYTES = 64 << 30  # larger spools take the two-decode path


@dataclass
class Spool:
    """Raw yuv420p frames at the output size, ``n_frames`` of them at ``rate`` per second:
    what the encoder reads instead of decoding the source again."""

    path: Path
    width: int
    height: int
    rate: Fraction  # exact frame rate (timestamps are k / rate)
    n_frames: int

    def input_args(self) -> list[str]:
        """ffmpeg input options that read the spool as a video."""
        size = f"{self.width}x{self.height}"
        fr = f"{self.rate.numerator}/{self.rate.denominator}"
        return ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", size, "-framerate", fr]

    @property
    def duration_s(self) -> float:
        return self.n_frames / float(self.rate)


@dataclass
class Decoded:
    """Everything one decode of a video gives (see the module doc)."""

    analysis: np.ndarray  # (T, h, w, 3) uint8 RGB detector frames
    fps: float  # frame rate of ``analysis`` and the spool
    spool: Spool
    stage_frames: np.ndarray | None  # (N, h4, STAGE_WIDTH, 3) RGB at STAGE_FPS (memory map)
    source: str = ""  # the decoded video's path: what a view decodes for frames not put in it

    def clip_view(self, clip: Clip) -> ClipView:
        """A view of ``clip`` preloaded with its stage frames (those of the ``STAGE_FPS``
        grid inside ``[start_s, end_s)``), so stages decode nothing. The clip need not be
        encoded yet: its size and rate are the spool's (what the encoder will write), and
        frames at another size or rate come from the source span (``ClipView.source``)."""
        sp = self.spool
        view = ClipView(
            clip.clip_uri or None,
            fps=clip.fps or float(sp.rate),
            width=clip.width or sp.width,
            height=clip.height or sp.height,
            source=(self.source, clip.start_s, clip.duration_s) if self.source else None,
        )
        if self.stage_frames is None:
            return view
        n = len(self.stage_frames)
        a = min(math.ceil(clip.start_s * STAGE_FPS - 1e-6), n - 1)
        b = max(min(math.ceil(clip.end_s * STAGE_FPS - 1e-6), n), a + 1)
        view.put(self.stage_frames[a:b], STAGE_WIDTH, STAGE_FPS)
        return view


def eligible(video: Video, split: SplitConfig, tc: TranscodeConfig, work_dir: str) -> bool:
    """True when ``video`` can take the one-decode path (else: detect, then transcode).
    ``WORLDMILL_ONEPASS=0`` in the environment turns the one-decode path off."""
    if os.environ.get("WORLDMILL_ONEPASS", "1") == "0":
        return False
    if split.method != "worldmill" or tc.fps or video.fps <= 0 or video.duration_s <= 0:
        return False
    need = spool_bytes(video, tc)
    probe_dir = Path(work_dir)
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    # Spools other workers are writing now will still grow: their unwritten bytes are
    # not free for this one (else two concurrent spools could each take half the disk).
    free = shutil.disk_usage(probe_dir).free - reserved_bytes(work_dir)
    return need <= min(SPOOL_MAX_BYTES, free / 2)


def spool_bytes(video: Video, tc: TranscodeConfig) -> int:
    """Bytes the two raw files of :func:`decode_once` take for ``video``."""
    w, h = output_size(video, tc)
    return int(video.duration_s * video.fps * (w * h * 1.5 + _stage_bytes(w, h) / video.fps))


def _reservation_dir(work_dir: str) -> Path:
    """One folder per OUT (``OUT/clips/.spools``) where every running decode says how big
    its raw files will get; work dirs are ``OUT/clips/<video_id>``."""
    return Path(work_dir).parent / RESERVATIONS


def reserved_bytes(work_dir: str) -> int:
    """Bytes the decodes running now under the same OUT have yet to write (what each
    reserved, less what its temp directory holds already)."""
    total = 0
    for f in _reservation_dir(work_dir).glob("*"):
        try:
            size, tmp = f.read_text().split("\n", 1)
            written = sum(p.stat().st_size for p in Path(tmp).iterdir())
        except (OSError, ValueError):
            continue  # finished (files gone) or half-written: nothing left to reserve
        total += max(0, int(size) - written)
    return total


def _stage_size(w: int, h: int) -> tuple[int, int]:
    return STAGE_WIDTH, even(h * STAGE_WIDTH / w)


def _stage_bytes(w: int, h: int) -> int:
    """Bytes per second of video of the stage frames."""
    sw, sh = _stage_size(w, h)
    return int(sw * sh * 3 * STAGE_FPS)


def _rate(fps: float) -> Fraction:
    """Exact frame rate from a probed float (29.97002997 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(10010)


@contextlib.contextmanager
def decode_once(
    video: Video,
    split: SplitConfig,
    tc: TranscodeConfig,
    work_dir: str,
    timeout: float = 0,
    threads: int = 0,
) -> Iterator[Decoded]:
    """Decode ``video`` once (see the module doc); the raw files are removed on exit.

    ``threads``: the decoder's threads, 0 = ffmpeg's choice (frame threads on every core).
    One thread decodes the same frames for about 10 % less CPU: the right choice while other
    videos keep the other cores busy.

    Raises MediaError when nothing decodes (the video's fault) and
    :class:`~worldmill.media.InfraError` when ffmpeg was killed or could not write."""
    src = video.local_path or video.path
    aw, ah = analysis_size(split.analysis_width)
    w, h = output_size(video, tc)
    sw, sh = _stage_size(w, h)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{SEG_PREFIX}{video.video_id}_dec_", dir=work_dir))
    reservation = _reservation_dir(work_dir) / tmp.name.removeprefix(SEG_PREFIX)
    try:
        reservation.parent.mkdir(exist_ok=True)
        reservation.write_text(f"{spool_bytes(video, tc)}\n{tmp}")
        spool_path, stage_path = tmp / "spool.yuv", tmp / "stage.rgb"
        graph = (
            "[0:v:0]split=3[a][o][s];"
            f"[a]scale={aw}:{ah}:flags=area,format=rgb24[ao];"
            f"[o]scale={w}:{h}:flags=bicubic,format=yuv420p[oo];"
            f"[s]fps={STAGE_FPS:g},scale={sw}:{sh}:flags=area,format=rgb24[so]"
        )
        raw = ["-f", "rawvideo", "-fps_mode", "passthrough"]
        cmd = [ffmpeg_bin(), "-hide_banner", "-nostdin", "-nostats", "-v", "error"]
        cmd += ["-threads", str(threads), "-i", src]
        cmd += ["-filter_complex", graph]
        cmd += ["-map", "[ao]", *raw, "pipe:1"]
        cmd += ["-map", "[oo]", *raw, str(spool_path)]
        cmd += ["-map", "[so]", *raw, str(stage_path)]
        try:
            r = subprocess.run(
                cmd, capture_output=True, timeout=timeout or max(600, 10 * video.duration_s)
            )
        except subprocess.TimeoutExpired as e:
            raise MediaError(f"decode timed out after {e.timeout:.0f} s") from e
        n = len(r.stdout) // (aw * ah * 3)
        if r.returncode != 0 or n == 0:
            raise_if_infra(r, src, tmp)
        if n == 0:
            raise MediaError(
                no_frames_message(r.stderr.decode(errors="replace"), r.returncode, src)
            )
        if r.returncode != 0:  # a damaged tail: keep what decoded, like the detector did
            log.warning("%s: ffmpeg exit %d after %d frames", video.video_id, r.returncode, n)
        frame_bytes = w * h * 3 // 2
        n = min(n, spool_path.stat().st_size // frame_bytes)  # same frames in both outputs
        if n == 0:
            raise MediaError("no frames decoded (empty stream)")
        stage_n = stage_path.stat().st_size // (sw * sh * 3)
        stage = None  # none: stages decode the clip files (the two-decode path's way)
        if stage_n > 0:
            stage = np.memmap(stage_path, np.uint8, "r", shape=(stage_n, sh, sw, 3))
        analysis = np.frombuffer(r.stdout, np.uint8, count=n * aw * ah * 3)
        yield Decoded(
            analysis=analysis.reshape(n, ah, aw, 3),
            fps=video.fps,
            spool=Spool(spool_path, w, h, _rate(video.fps), n),
            stage_frames=stage,
            source=src,
        )
    finally:
        # The stage frames stay readable after this (a memory map outlives its file name).
        shutil.rmtree(tmp, ignore_errors=True)
        reservation.unlink(missing_ok=True)
