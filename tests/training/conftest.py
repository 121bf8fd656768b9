import pytest

from worldmill.training.sample_shards import write_sample_shards


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """8 real H.264 clips (64x64, 24 frames, panning photos) in 2 WebDataset shards."""
    return write_sample_shards(
        tmp_path_factory.mktemp("shards"), n_clips=8, size=64, frames=24, clips_per_shard=5
    )


# A tokenizer small enough that a 2-rank torchrun step takes tens of milliseconds on CPU.
TINY = [
    "model.channels=8",
    "model.channel_mult=[1, 1]",
    "model.latent_channels=4",
    "data.num_frames=5",
    "data.width=64",
    "data.crop=32",
    "data.batch_size=1",
    "data.holdout=2",
    "optim.warmup_steps=2",
    "run.nproc=2",
]


# -- world models: an upstream DV tokenizer run and a tiny AR config -------------------------

TINY_DV = TINY + ["model.kind=dv", "model.fsq_levels=[4, 4, 4]", "run.steps=2", "run.nproc=1"]

TINY_AR = [
    "model.preset=tiny",  # vocab = the tokenizer's 64 codes
    "data.frames=3",
    "data.size=4",
    "data.batch_size=2",
    "data.holdout=2",
    "optim.warmup_steps=1",
    "run.nproc=2",
]


@pytest.fixture(scope="session")
def dv_tokenizer(shards, tmp_path_factory):
    """A finished tiny DV tokenizer run (64-code FSQ) on ``shards``: the AR kind's upstream."""
    from worldmill.training import launch
    from worldmill.training.registry import resolve_config

    run = tmp_path_factory.mktemp("dv_tokenizer")
    launch.write_run_config(run, resolve_config("tokenizer", None, TINY_DV))
    launch.launch_trainer("tokenizer", shards, run, nproc=1, log=lambda _: None)
    return run
