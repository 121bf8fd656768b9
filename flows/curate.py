"""The ``curate`` flow: raw videos → curated clips, LanceDB tables and WebDataset shards.

    ingest ─► process-video (split → transcode → filters → caption → visual embed) ×N
           ─► commit ─► embed ─► dedup ─► taxonomy ─► shard ─► report

Incremental: ingest skips content already in ``videos``; the catalogue stages only run
when something new was committed. Killed mid-way? Staging files of finished videos are
committed on the next run and their work is not repeated; keyed writes mean no duplicate
rows.

One run at a time per OUT: the flow holds OUT's run lock (``worldmill/runlock.py``) from
before ingest to the end, so an overlapping run (a manual one during the nightly) waits for
it and then finds the work done, or gives up after ``lock_timeout_s``.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.futures import as_completed
from prefect.runtime import flow_run

from worldmill.cluster import cluster_slots, make_task_runner
from worldmill.config import CurateConfig
from worldmill.records import Video
from worldmill.runlock import run_lock
from worldmill.stages import load_stages
from worldmill.store import Store
from worldmill.tasks.dedup import dedup_task
from worldmill.tasks.embed import embed_new_clips, embed_task
from worldmill.tasks.ingest import ingest_task
from worldmill.tasks.process_video import process_video_task, read_staging, staging_dir
from worldmill.tasks.report import report_task
from worldmill.tasks.shard import shard_task
from worldmill.tasks.taxonomy import taxonomy_task
from worldmill.tasks.transcode import remove_stale_temp

log = logging.getLogger(__name__)


@flow(name="curate", log_prints=True)
def curate(config: CurateConfig) -> dict:
    """Curate ``config.input`` into ``config.out``. Returns a run summary (counts, paths).

    Picks the Dask cluster from ``config.dask`` (scheduler address, LocalCUDACluster when
    GPUs are visible, else LocalCluster) and runs the DAG on it.
    """
    if not config.input:
        raise ValueError("config.input is empty: set the folder or URI of raw videos")
    config = config.model_copy(update={"out": os.path.abspath(config.out)})
    load_stages(config.stages)  # fail fast on a stage that cannot be imported
    log = get_run_logger()
    # Before the cluster starts: a run that waits for the lock holds no workers.
    with run_lock(config.out, config.lock_timeout_s, on_wait=log.warning):
        # Holding the lock, no other run writes here: any temp file is a killed run's.
        n = remove_stale_temp(os.path.join(config.out, "clips"))
        for part in staging_dir(config.out).glob("*.part"):
            part.unlink(missing_ok=True)
            n += 1
        if n:
            log.info("removed %d temp files left by a killed run", n)
        runner = make_task_runner(config.dask)
        return curate_dag.with_options(task_runner=runner)(config)


@flow(name="curate-dag", log_prints=True)
def curate_dag(config: CurateConfig) -> dict:
    """The DAG itself, on whatever task runner ``curate`` chose."""
    log = get_run_logger()
    t0 = time.perf_counter()
    run_id = _run_id()
    out = config.out
    store = Store(out)
    leftover = commit_staging(store, run_id)  # results of a killed earlier run
    if leftover:
        log.info("committed %d results left by an interrupted run", leftover)

    ing = ingest_task(
        config.input,
        store.video_rows(),
        config.skip_extensions,
        config.include_all_files,
        config.retry_failed,
        os.path.join(out, "cache"),
        config.extensions,
    )
    store.upsert_videos(ing.recorded, run_id)  # failed and duplicate files: final already
    batches = _batches(ing.todo, config.videos_per_task)
    futures = process_video_task.map(batches, unmapped(config))
    # The catalogue stages' models load once a task slot has no video left to take (the
    # run's tail): loaded earlier, they would take CPU from the videos.
    slots = cluster_slots()
    log.info("%d new videos in %d tasks on %d task slots", len(ing.todo), len(futures), slots)
    prewarm_after = len(futures) - slots + 1  # completions until a slot idles
    if batches and prewarm_after <= 0:
        _start_prewarm(config)
    batch_of = {id(f): b for f, b in zip(futures, batches, strict=True)}
    done, infra_errors = 0, []
    for n, fut in enumerate(as_completed(futures), 1):
        if n == prewarm_after:
            _start_prewarm(config)
        try:
            fut.result()
        except Exception as e:  # infrastructure failure after retries: keep the rest
            # Its videos get no row, so the next run processes them again.
            paths = ", ".join(v.path for v in batch_of.get(id(fut), []))
            infra_errors.append(f"{paths}: {e}")
            log.error("process-video failed after retries (left for the next run) %s", paths)
            continue
        done += commit_staging(store, run_id)
        log.info("progress: %d/%d videos committed", done, len(ing.todo))
        if prewarm_after <= n < len(futures):
            _embed_committed(store, config, log)

    # Catalogue stages run when something was committed, or when an interrupted run left
    # clips without embeddings or kept clips outside any shard.
    pending = store.count("clips", "embedding IS NULL") + store.count(
        "clips", "kept = true AND shard = ''"
    )
    changed = bool(done or leftover or pending)
    shards: dict = {}
    dedup_info: dict = {}
    if changed:
        embed_task(out, config.embed)
        dedup_info = dedup_task(out, config.dedup)
        taxonomy_task(out, config.taxonomy)
        shards = shard_task(out, config.shard, run_id)
    summary = summarize(store, ing, run_id, shards, time.perf_counter() - t0)
    summary["dedup"] = {k: v for k, v in (dedup_info or {}).items() if k != "report"}
    summary["report"] = report_task(out, run_id, summary, dedup_info)
    if infra_errors:
        raise RuntimeError(
            f"{len(infra_errors)} process-video task(s) failed, their videos are left for the "
            f"next run: {infra_errors[0]}"
        )
    return summary


def commit_staging(store: Store, run_id: str) -> int:
    """Commit every staging file under the store's root (clips first, then the video row,
    so a crash in between re-processes the video instead of losing its clips)."""
    n = 0
    for path in sorted(staging_dir(store.out).glob("*.json")):
        video, clips = read_staging(str(path))
        store.replace_clips([video.video_id], clips, run_id)
        store.upsert_videos([video], run_id)
        path.unlink()
        n += 1
    return n


def _embed_committed(store: Store, config: CurateConfig, log) -> None:
    """At the run's tail (a task slot has no video left to take), embed the captions of the
    clips committed so far on that otherwise idle core: the embed stage after the last
    video then has only that video's clips left. A failure here is left to that stage."""
    try:
        n = embed_new_clips(store, config.embed)
    except Exception as e:  # noqa: BLE001 -- the embed stage does it again, and reports
        log.warning("early caption embedding failed (the embed stage will retry): %s", e)
        return
    if n:
        log.info("embedded the captions of %d committed clips while the last videos run", n)


def _start_prewarm(config: CurateConfig) -> None:
    threading.Thread(target=_prewarm, args=(config,), daemon=True, name="prewarm").start()


def _prewarm(config: CurateConfig) -> None:
    """Load what the catalogue stages need -- the caption text model, scikit-learn's
    k-means, the report's plotting -- while the last videos are processed
    (``curate_dag`` starts it when a task slot first has no video left): after the last
    video these loads would sit on the critical path (seconds). A failure here is left for
    the stage itself to report."""
    try:
        from worldmill.tasks.embed import text_embedder

        text_embedder(config.embed.text_model, config.embed.text_backend)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        from matplotlib.figure import Figure

        fig = Figure(figsize=(1, 1))  # a first draw loads the fonts (~0.5 s)
        fig.add_subplot().set_title("warm")
        fig.savefig(io.BytesIO(), format="png")
        import sklearn.cluster  # noqa: F401 -- dedup and taxonomy: about 1 s to import
        import sklearn.feature_extraction.text  # noqa: F401
        import sklearn.metrics  # noqa: F401
    except Exception as e:  # noqa: BLE001 -- best effort only
        log.debug("prewarm: %s", e)


def summarize(store: Store, ing, run_id: str, shards: dict, seconds: float) -> dict:
    """Counts for this run and for the whole database."""
    rows = store.clip_rows(["clip_id", "kept", "reject_reason", "run_id"])
    this_run = [r for r in rows if r["run_id"] == run_id]
    vids = store.video_rows(["status", "run_id"])
    return {
        "run_id": run_id,
        "seconds": round(seconds, 2),
        "out": store.out,
        "lancedb": store.uri,
        "shards_dir": str(Path(store.out) / "shards"),
        "videos_new": len(ing.todo),
        "videos_recorded": dict(Counter(v.status for v in ing.recorded)),
        "videos_skipped": ing.skipped,
        # Every file seen is accounted for; these two say which were not curated and why.
        "files_seen": ing.files_seen,
        "files_skipped": ing.files_skipped,
        "files_failed": ing.files_failed,
        "run_clips": len(this_run),
        "run_kept": sum(r["kept"] for r in this_run),
        "run_reject_reasons": dict(Counter(r["reject_reason"] for r in this_run if not r["kept"])),
        "total_videos": dict(Counter(v["status"] for v in vids)),
        "total_clips": len(rows),
        "total_kept": sum(r["kept"] for r in rows),
        "shards_written": len(shards.get("new_shards", [])) if shards else 0,
    }


def _batches(videos: list[Video], size: int) -> list[list[Video]]:
    # Largest first so that long videos do not end up alone at the tail of the run.
    order = sorted(videos, key=lambda v: -v.duration_s)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _run_id() -> str:
    fr = flow_run.get_id()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{str(fr)[:8]}" if fr else stamp
