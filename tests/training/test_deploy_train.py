"""The training deployment registers validated parameters on a real (temporary) server."""

import pytest

from worldmill.config import ConfigError
from worldmill.deployments import train as dep


def test_bad_config_never_becomes_a_deployment(tmp_path):
    with pytest.raises(ConfigError, match="run.steps"):
        dep.parameters("tokenizer", str(tmp_path), str(tmp_path / "run"), None, ["run.steps=-1"])
    with pytest.raises(ConfigError, match="lam.run.steps"):  # genie: every stage checked
        dep.parameters("genie", str(tmp_path), str(tmp_path / "run"), None, ["lam.run.steps=0"])


def test_deploy_registers_train_flow_with_resume(tmp_path, shards):
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    params = dep.parameters("tokenizer", str(shards), str(tmp_path / "run"), None, ["run.steps=5"])
    genie = dep.parameters("genie", str(shards), str(tmp_path / "g"), None, ["lam.run.steps=7"])
    with prefect_test_harness(server_startup_timeout=120):
        dep_id = dep.deploy(params, pool="test-train-pool")
        genie_id = dep.deploy(genie, pool="test-train-pool")
        with get_client(sync_client=True) as client:
            d = client.read_deployment(dep_id)
            flow = client.read_flow(d.flow_id)
            g = client.read_deployment_by_name("train/genie")
    assert flow.name == "train" and d.name == "tokenizer"
    assert d.parameters["overrides"] == ["run.steps=5"] and d.parameters["resume"] is True
    assert d.entrypoint.endswith("train.py:train")
    assert str(g.id) == genie_id and g.parameters["kind"] == "genie"  # train/genie
    assert g.parameters["overrides"] == ["lam.run.steps=7"]


def test_deploy_train_ar_names_its_tokenizer_run(tmp_path, shards, dv_tokenizer):
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    with pytest.raises(ConfigError, match="tokenizer"):  # no upstream run: never registered
        dep.parameters("ar", str(shards), str(tmp_path / "run"), None, [])
    with prefect_test_harness(server_startup_timeout=120):
        argv = ["ar", "--data", str(shards), "--out", str(tmp_path / "run")]
        argv += ["--tokenizer", str(dv_tokenizer), "--pool", "test-train-pool"]
        assert dep.main(argv) == 0
        with get_client(sync_client=True) as client:
            d = client.read_deployment_by_name("train/ar")
    assert d.parameters["kind"] == "ar"
    assert d.parameters["overrides"] == [f"tokenizer={dv_tokenizer.absolute()}"]
