"""Pick where Prefect tasks run: an existing Dask scheduler, a Dask-CUDA cluster when GPUs
are visible, or a plain LocalCluster. The same flow code scales from laptop to cluster."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
from typing import Any

from prefect_dask import DaskTaskRunner

from worldmill.config import DaskConfig

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def visible_gpus() -> int:
    """Number of NVIDIA GPUs visible to this process (0 without a driver)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() in ("", "-1"):
        return 0
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20, text=True)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    n = sum(1 for line in r.stdout.splitlines() if line.startswith("GPU "))
    if cvd:
        n = min(n, len([x for x in cvd.split(",") if x.strip()]))
    return n


def server_configured() -> bool:
    """True when flows report to a long-lived Prefect server: not Prefect's ephemeral one,
    nor the temporary one ``worldmill curate`` starts for its own run
    (``worldmill/tempserver.py``), which lives only as long as that process."""
    from prefect.settings import PREFECT_API_URL

    from worldmill.tempserver import TEMPORARY_URL_ENV

    url = PREFECT_API_URL.value()
    return bool(url) and url != os.environ.get(TEMPORARY_URL_ENV)


def runner_spec(cfg: DaskConfig) -> dict:
    """The DaskTaskRunner keyword arguments for this config (inspectable, testable)."""
    if cfg.address:
        return {"address": cfg.address}
    processes = {"yes": True, "no": False}.get(cfg.processes, server_configured())
    use_gpu = cfg.use_gpu == "yes" or (cfg.use_gpu == "auto" and visible_gpus() > 0)
    if use_gpu:
        if importlib.util.find_spec("dask_cuda") is None:
            if cfg.use_gpu == "yes":
                raise RuntimeError(
                    "dask.use_gpu=yes but dask-cuda is not installed (pip install 'worldmill[gpu]')"
                )
            log.warning("GPUs visible but dask-cuda is not installed; using LocalCluster")
        else:
            kwargs = {"dashboard_address": ":0"}
            if cfg.n_workers:
                kwargs["n_workers"] = cfg.n_workers
            return _local("dask_cuda.LocalCUDACluster", kwargs, cfg.profile)
    n = cfg.n_workers or max(1, (os.cpu_count() or 1) // cfg.threads_per_worker)
    kwargs = {
        "n_workers": n,
        "threads_per_worker": cfg.threads_per_worker,
        "processes": processes,
        "dashboard_address": ":0",  # never collide with another cluster's dashboard port
    }
    return _local("distributed.LocalCluster", kwargs, cfg.profile)


def _local(cls: str, kwargs: dict, profile: bool) -> dict:
    """Runner arguments that start ``cls`` through :func:`local_cluster`."""
    return {
        "cluster_class": f"{__name__}.local_cluster",
        "cluster_kwargs": {"cluster_class": cls, "worker_profile": profile, **kwargs},
    }


def local_cluster(cluster_class: str, worker_profile: bool = False, **kwargs: Any) -> Any:
    """Start ``cluster_class`` (a qualified name: ``distributed.LocalCluster``,
    ``dask_cuda.LocalCUDACluster``) with ``kwargs``, Dask's worker profiler on or off.

    Workers read ``distributed.worker.profile.enabled`` when they are made: in this process
    for thread workers, and from the config a nanny hands its worker process, which is
    copied when the nanny is made. Both happen while the cluster starts, so the setting is
    scoped to this cluster and the process's Dask config is left as it was."""
    import dask
    from prefect.utilities.importtools import from_qualified_name  # as DaskTaskRunner does

    cls = from_qualified_name(cluster_class)
    with dask.config.set({"distributed.worker.profile.enabled": worker_profile}):
        return cls(**kwargs)


def make_task_runner(cfg: DaskConfig) -> DaskTaskRunner:
    spec = runner_spec(cfg)
    log.info("dask task runner: %s", spec)
    return DaskTaskRunner(**spec)


def limit_threads() -> int:
    """Inside a Dask worker, cap the libraries' own thread pools at the worker's threads and
    return that number (0 outside a worker: nothing changed).

    The cluster already runs one task per core; OpenCV's pool (face/people detectors,
    optical flow) and onnxruntime's (OCR, which spin-waits between calls) each start one
    thread per core on top of that, and on a busy machine those threads mostly burn CPU
    contending with the other workers. Dask's nanny already does the same for OpenMP and
    BLAS (``OMP_NUM_THREADS=1``); this covers the pools that ignore those variables.
    ``tasks.filter_text`` reads ``WORLDMILL_THREADS`` for its default.
    """
    try:
        from distributed import get_worker

        n = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return 0
    import cv2

    cv2.setNumThreads(n)
    os.environ["WORLDMILL_THREADS"] = str(n)
    return n


def cluster_slots() -> int:
    """Task slots (worker threads) of the Dask cluster this flow submits to; the local
    core count when no client is reachable from here."""
    try:
        from distributed import default_client

        return max(1, sum(default_client().nthreads().values()))
    except (ImportError, ValueError, OSError, AttributeError):
        return os.cpu_count() or 1


def queued_tasks() -> int:
    """Inside a Dask task: how many of the cluster's unfinished tasks wait for a slot (0
    outside a worker, or when the scheduler cannot say). While some do, every slot that
    frees is taken at once: the cores stay busy without a task's inner parallelism."""
    try:
        from distributed import get_worker

        client = get_worker().client  # outside a worker: ValueError, and no client made
        unfinished = client.run_on_scheduler(_unfinished_tasks)
        return max(0, int(unfinished) - sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 -- a hint only
        return 0


def _unfinished_tasks(dask_scheduler) -> int:
    """Tasks running or assigned on workers, queued at the scheduler, or with no worker."""
    s = dask_scheduler
    return len(s.queued) + len(s.unrunnable) + sum(len(w.processing) for w in s.workers.values())


def idle_slots() -> int:
    """Inside a Dask task: how many task slots of the cluster no task occupies now (0
    outside a worker, or when the scheduler cannot say). A task at the tail of a run,
    when there is no other work left, can use them for its own inner parallelism."""
    try:
        from distributed import get_worker

        client = get_worker().client  # outside a worker: ValueError, and no client made
        busy = sum(len(keys) for keys in client.processing().values())
        return max(0, sum(client.nthreads().values()) - busy)
    except Exception:  # noqa: BLE001 -- a hint only: no answer means no extra threads
        return 0
