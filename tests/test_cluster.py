from __future__ import annotations

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
    assert spec["cluster_class"] == "distributed.LocalCluster"
    assert spec["cluster_kwargs"]["n_workers"] == 2 and spec["cluster_kwargs"]["processes"] is False
    assert spec["cluster_kwargs"]["dashboard_address"] == ":0"
    cluster.visible_gpus.cache_clear()


def test_processes_follow_server(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        assert runner_spec(DaskConfig(use_gpu="no"))["cluster_kwargs"]["processes"] is True
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert runner_spec(DaskConfig(use_gpu="no"))["cluster_kwargs"]["processes"] is False
