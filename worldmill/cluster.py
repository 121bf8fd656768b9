"""Pick where Prefect tasks run: an existing Dask scheduler, a Dask-CUDA cluster when GPUs
are visible, or a plain LocalCluster. The same flow code scales from laptop to cluster."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess

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
    """True when flows report to a real Prefect server (not the ephemeral in-process one)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


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
            return {"cluster_class": "dask_cuda.LocalCUDACluster", "cluster_kwargs": kwargs}
    n = cfg.n_workers or max(1, (os.cpu_count() or 1) // cfg.threads_per_worker)
    kwargs = {
        "n_workers": n,
        "threads_per_worker": cfg.threads_per_worker,
        "processes": processes,
        "dashboard_address": ":0",  # never collide with another cluster's dashboard port
    }
    return {"cluster_class": "distributed.LocalCluster", "cluster_kwargs": kwargs}


def make_task_runner(cfg: DaskConfig) -> DaskTaskRunner:
    spec = runner_spec(cfg)
    log.info("dask task runner: %s", spec)
    return DaskTaskRunner(**spec)
