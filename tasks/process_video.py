"""Stages 2–6 for one video, as one Prefect task: split → transcode → per-clip stages
(filters, caption, visual embedding) → a staging file. On the one-decode path
(``tasks/onepass.py``) the per-clip stages run before the transcode, on the decoded
frames, and only the clips they keep are encoded.

Why one task per video and not one per stage: each Prefect task on Dask costs about a
second of bookkeeping, more than a stage spends on a short clip; per-video tasks keep the
orchestration overhead out of the hot path while Dask still spreads videos over cores.
The result is a small JSON staging file (a URI), never frames or arrays; the flow commits
it to LanceDB. A video that fails anywhere is recorded as failed: it never crashes the run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from prefect import task

from worldmill.cluster import idle_slots, limit_threads, queued_tasks
from worldmill.config import CurateConfig, StageSpec
from worldmill.media import ClipView, MediaError
from worldmill.records import FAILED, OK, Clip, Video
from worldmill.stages import load_stages, run_stages_batch, to_json_value
from worldmill.tasks import onepass
from worldmill.tasks.actions import attach_actions
from worldmill.tasks.onepass import STAGE_FPS, STAGE_WIDTH
from worldmill.tasks.report import thumb_path, write_thumb
from worldmill.tasks.split import split_video
from worldmill.tasks.transcode import fill_from_spool, transcode_clips

log = logging.getLogger(__name__)

# Always run last: the visual descriptor feeds dedup.
VISUAL_STAGE = StageSpec(name="visual_embed")


def staging_dir(out: str) -> Path:
    return Path(out) / "staging"


def process_video(video: Video, cfg: CurateConfig) -> tuple[Video, list[Clip]]:
    """Pure pipeline for one video; every clip comes back, kept or with its reject reason."""
    t0 = time.perf_counter()
    phases: dict[str, float] = {}  # seconds per phase, for the log line

    def lap(name: str) -> None:  # time since the previous phase ended
        phases[name] = time.perf_counter() - t0 - sum(phases.values())

    clip_dir = os.path.join(cfg.out, "clips", video.video_id)
    if video.status == OK and onepass.eligible(video, cfg.split, cfg.transcode, clip_dir):
        try:
            # While videos wait for a slot, the other cores stay busy with them: one decoder
            # thread then costs less CPU than frame threads (same frames). Alone at the
            # tail, the decoder takes every core.
            threads = 1 if queued_tasks() > 0 else 0
            with onepass.decode_once(
                video, cfg.split, cfg.transcode, clip_dir, threads=threads
            ) as dec:
                # Stages first, on the decoded frames; then only the clips they kept are
                # encoded (a rejected clip's frames are never encoded).
                lap("decode")
                clips = _split(video, cfg, dec)
                lap("split")
                if video.status == FAILED:
                    return video, clips
                for c in clips:
                    if c.kept:
                        fill_from_spool(c, dec.spool)
                views = {c.clip_id: dec.clip_view(c) for c in clips if c.kept}
                clips = _run_stages(clips, views, cfg)
                _write_thumbs(views, clip_dir)
                lap("stages")
                _transcode(video, clips, cfg, clip_dir, dec)
                lap("encode")
        except MediaError as e:  # the source does not decode: as the detector would say
            return video.fail("split", str(e)), []
    else:  # detect, then transcode: the source is decoded twice
        clips = _split_transcode(video, cfg, clip_dir)
        if video.status == FAILED:
            return video, clips
        views = {
            c.clip_id: ClipView(c.clip_uri, fps=c.fps, width=c.width, height=c.height)
            for c in clips
            if c.clip_uri
        }
        clips = _run_stages(clips, views, cfg)
    kept = sum(c.kept for c in clips)
    log.info(
        "%s: %d clips, %d kept (%.1f s of video in %.1f s%s)",
        video.path,
        len(clips),
        kept,
        video.duration_s,
        time.perf_counter() - t0,
        "".join(f", {k} {v:.1f}" for k, v in phases.items()),
    )
    return video, clips


def _split(video: Video, cfg: CurateConfig, dec: onepass.Decoded | None) -> list[Clip]:
    """Stage 2: the clip list (``video`` is marked failed when nothing decodes)."""
    clips = split_video(video, cfg.split, (dec.analysis, dec.fps) if dec else None)
    for c in clips:
        c.source_path = video.path
        # Source resolution and bitrate: dedup's keep-best ranks copies by these before
        # any score measured on the (same-size) transcodes.
        c.extra["source_width"], c.extra["source_height"] = video.width, video.height
        c.extra["source_bitrate"] = video.bit_rate
    return clips


def _transcode(
    video: Video, clips: list[Clip], cfg: CurateConfig, clip_dir: str, dec: onepass.Decoded | None
) -> None:
    """Stage 3: a file for every kept clip (and its actions, for rollout videos)."""
    transcode_clips(video, clips, clip_dir, cfg.transcode, dec.spool if dec else None)
    if dec is not None:
        dec.spool.path.unlink(missing_ok=True)  # encoded: free its disk space now
    attach_actions(video, clips)  # rollout videos: per-frame actions from their sidecar


def _split_transcode(video: Video, cfg: CurateConfig, clip_dir: str) -> list[Clip]:
    """Stages 2-3 of the two-decode path: the clip list, and a file for every kept clip."""
    clips = _split(video, cfg, None)
    if video.status != FAILED:
        _transcode(video, clips, cfg, clip_dir, None)
    return clips


def _run_stages(clips: list[Clip], views: dict[str, ClipView], cfg: CurateConfig) -> list[Clip]:
    """Stages 4-5 on every clip that has a file (too-short clips and failed transcodes
    have none), the visual descriptor last."""
    visual = VISUAL_STAGE.model_copy(update={"module": cfg.embed.visual_module})
    stages = load_stages([*cfg.stages, visual])
    todo = [c for c in clips if c.clip_id in views]
    # Alone at the tail of a run (no task waiting for the other slots), this video's
    # clips use the idle cores too: otherwise the run's last minutes run on one core.
    threads = min(1 + idle_slots(), os.cpu_count() or 1)
    views_todo = [views[c.clip_id] for c in todo]
    done = {c.clip_id: c for c in run_stages_batch(todo, views_todo, stages, threads)}
    return [done.get(c.clip_id, c) for c in clips]


def _write_thumbs(views: dict[str, ClipView], clip_dir: str) -> None:
    """A contact-sheet thumbnail of every clip the stages saw, from its decoded frames
    (the report then decodes no clip, and shows rejected clips, which get no mp4)."""
    for clip_id, view in views.items():
        try:  # the decoded frames are pinned in the view: no decode here
            frames = view.frames(width=STAGE_WIDTH, sample_fps=STAGE_FPS)
        except MediaError:
            continue  # no thumbnail: the report decodes the clip, if it has a file
        if len(frames):
            write_thumb(frames, thumb_path(clip_dir, clip_id))


def write_staging(out: str, video: Video, clips: list[Clip]) -> str:
    """Atomically write the results of one video; returns the staging file's path."""
    d = staging_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{video.video_id}.json"
    tmp = path.with_suffix(f".{os.getpid()}-{time.monotonic_ns()}.part")  # unique per writer
    payload = {"video": video.__dict__, "clips": [c.to_dict() for c in clips]}
    # default=: a numpy value a stage left anywhere on a clip is written as its JSON form
    # instead of failing the whole task (stages.coerce_clip already handles clip.extra).
    tmp.write_text(json.dumps(payload, allow_nan=True, default=_json_default))
    os.replace(tmp, path)
    return str(path)


def _json_default(v):
    try:
        return to_json_value(v)
    except TypeError:
        return repr(v)


def read_staging(path: str) -> tuple[Video, list[Clip]]:
    data = json.loads(Path(path).read_text())
    return Video(**data["video"]), [Clip(**c) for c in data["clips"]]


@task(name="process-video", retries=1, retry_delay_seconds=5)
def process_video_task(videos: list[Video], cfg: CurateConfig) -> list[str]:
    """Prefect task: run the per-video pipeline on a small batch; returns staging URIs.

    A staging file already present (a killed run left it) is reused, not recomputed.
    """
    limit_threads()  # one task per core already: no nested library thread pools
    uris = []
    for video in videos:
        existing = staging_dir(cfg.out) / f"{video.video_id}.json"
        if existing.exists():
            uris.append(str(existing))
            continue
        try:
            v, clips = process_video(video, cfg)
        except (OSError, MemoryError):  # infrastructure (disk full, OOM): retry the task
            raise
        except Exception as e:  # an unexpected per-video error is still data
            log.exception("video %s failed", video.path)
            v, clips = video.fail("process", f"{type(e).__name__}: {e}"), []
        uris.append(write_staging(cfg.out, v, clips))
    return uris
