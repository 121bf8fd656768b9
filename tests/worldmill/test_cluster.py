from __future__ import annotations

import threading
import time

import pytest

from worldmill.cluster import runner_spec
from worldmill.config import DaskConfig


def test_address_wins():
    assert runner_spec(DaskConfig(address="tcp://10.1.2.3:8786")) == {
        "address": "tcp://10.1.2.3:8786"
    }


def test_local_cluster_without_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    from worldmill import cluster

    cluster.visible_gpus.cache_clear()
    spec = runner_spec(DaskConfig(n_workers=2, processes="no"))
    assert spec["cluster_class"] == "worldmill.cluster.local_cluster"
    kw = spec["cluster_kwargs"]
    assert kw["cluster_class"] == "distributed.LocalCluster" and kw["worker_profile"] is False
    assert kw["n_workers"] == 2 and kw["processes"] is False
    assert kw["dashboard_address"] == ":0"
    assert runner_spec(DaskConfig(profile=True))["cluster_kwargs"]["worker_profile"] is True
    cluster.visible_gpus.cache_clear()


def _profiling(dask_worker) -> bool:
    return "profile" in dask_worker.periodic_callbacks


@pytest.mark.parametrize("processes", [False, True])
def test_worker_profiler_follows_the_config_and_is_scoped_to_the_cluster(processes):
    """The cluster a run starts has Dask's 10-ms stack sampler off unless ``dask.profile``
    asks for it, for thread and process workers alike, and the process's own Dask config
    is untouched afterwards."""
    import dask
    from distributed import Client

    from worldmill.cluster import local_cluster

    before = dask.config.get("distributed.worker.profile.enabled")
    wanted = [False] if processes else [False, True]  # a process cluster costs seconds
    for profile in wanted:
        kw = {"n_workers": 1, "threads_per_worker": 1, "processes": processes}
        with local_cluster("distributed.LocalCluster", profile, dashboard_address=":0", **kw) as c:
            assert dask.config.get("distributed.worker.profile.enabled") == before
            with Client(c) as client:
                assert list(client.run(_profiling).values()) == [profile]


def test_processes_follow_server(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        assert runner_spec(DaskConfig(use_gpu="no"))["cluster_kwargs"]["processes"] is True
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert runner_spec(DaskConfig(use_gpu="no"))["cluster_kwargs"]["processes"] is False


def test_limit_threads_caps_library_pools_inside_a_worker_only(monkeypatch):
    """In a Dask worker the OpenCV pool (and onnxruntime's, through WORLDMILL_THREADS) is
    capped at the worker's threads; outside a worker nothing changes."""
    import cv2
    from distributed import Client, LocalCluster

    from worldmill.cluster import limit_threads

    monkeypatch.delenv("WORLDMILL_THREADS", raising=False)
    before = cv2.getNumThreads()
    assert limit_threads() == 0 and cv2.getNumThreads() == before

    def probe():
        import os

        import cv2

        return limit_threads(), cv2.getNumThreads(), os.environ.get("WORLDMILL_THREADS")

    try:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                          dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
            assert client.submit(probe).result() == (1, 1, "1")
    finally:
        cv2.setNumThreads(before)


_RELEASE = threading.Event()  # thread workers share this process: an in-memory latch


def _held_task():
    from worldmill.cluster import idle_slots

    _RELEASE.wait(30)
    return idle_slots()


def _tail_task():
    from worldmill.cluster import idle_slots

    return idle_slots()


def test_idle_slots_counts_task_slots_no_task_holds():
    """Two one-thread workers: while the other slot holds a task, a task sees no idle
    slot; alone at the tail it sees one. Outside a worker: 0, and no client is made.
    ``cluster_slots`` is the cluster's thread count seen from the submitting side."""
    from distributed import Client, LocalCluster

    from worldmill.cluster import cluster_slots, idle_slots

    assert idle_slots() == 0
    _RELEASE.clear()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
        assert cluster_slots() == 2
        held = client.submit(_held_task, pure=False)
        assert client.submit(_tail_task, pure=False).result() == 0  # the other slot is held
        _RELEASE.set()
        assert held.result() in (0, 1)  # the other task may or may not have left yet
        assert client.submit(_tail_task, pure=False).result() == 1  # alone: one idle slot


_SUBMITTED = threading.Event()


def _queued_probe():
    from worldmill.cluster import queued_tasks

    _SUBMITTED.wait(30)
    return queued_tasks()


def _n_tasks(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)


def test_queued_tasks_counts_tasks_waiting_for_a_slot():
    """Two one-thread workers: a held task and a probe take both slots while two more wait;
    the probe sees 2 queued. Once all have run, a probe alone sees none. Outside a worker: 0."""
    from distributed import Client, LocalCluster

    from worldmill.cluster import queued_tasks

    assert queued_tasks() == 0
    _RELEASE.clear()
    _SUBMITTED.clear()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
        first = client.submit(_held_task, pure=False)
        probe = client.submit(_queued_probe, pure=False)
        rest = [client.submit(_held_task, pure=False) for _ in range(2)]
        while client.run_on_scheduler(_n_tasks) < 4:  # the scheduler knows all four
            time.sleep(0.01)
        _SUBMITTED.set()
        assert probe.result() == 2  # 4 unfinished on 2 slots
        _RELEASE.set()
        client.gather([first, *rest])
        assert client.submit(_queued_probe, pure=False).result() == 0
