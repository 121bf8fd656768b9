import pytest

from worldmill.training.registry import get_spec

# A tokenizer small enough that a 2-rank torchrun step takes tens of milliseconds on CPU.
TINY = list(get_spec("tokenizer").tiny)


# -- world models: an upstream DV tokenizer run and a tiny AR config -------------------------

TINY_DV = TINY + [*get_spec("ar").tiny_upstream["tokenizer"], "run.steps=2", "run.nproc=1"]

TINY_AR = list(get_spec("ar").tiny)


@pytest.fixture(scope="session")
def dv_tokenizer(shards, tmp_path_factory):
    """A finished tiny DV tokenizer run (64-code FSQ) on ``shards``: the AR kind's upstream."""
    from worldmill.training import launch
    from worldmill.training.registry import resolve_config

    run = tmp_path_factory.mktemp("dv_tokenizer")
    launch.write_run_config(run, resolve_config("tokenizer", None, TINY_DV))
    launch.launch_trainer("tokenizer", shards, run, nproc=1, log=lambda _: None)
    return run
