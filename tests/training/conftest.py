import pytest

from worldmill.training.registry import get_spec

# A tokenizer small enough that a 2-rank torchrun step takes tens of milliseconds on CPU.
TINY = list(get_spec("tokenizer").tiny)


# -- world models: the tiny AR config and its upstream DV tokenizer run ----------------------

TINY_AR = list(get_spec("ar").tiny)


@pytest.fixture(scope="session")
def dv_tokenizer(tiny_run):
    """A finished tiny DV tokenizer run (64-code FSQ) on ``shards``: the AR kind's upstream,
    the same run the machinery tests train for it."""
    return tiny_run("tokenizer", get_spec("ar").tiny_upstream["tokenizer"])
