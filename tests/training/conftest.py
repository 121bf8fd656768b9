from pathlib import Path

import pytest

from worldmill.training.registry import get_spec
from worldmill.training.sample_shards import write_sample_shards


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """8 real H.264 clips (64x64, 24 frames, panning photos) in 2 WebDataset shards."""
    return write_sample_shards(
        tmp_path_factory.mktemp("shards"), n_clips=8, size=64, frames=24, clips_per_shard=5
    )


# A tokenizer small enough that a 2-rank torchrun step takes tens of milliseconds on CPU.
TINY = list(get_spec("tokenizer").tiny)


@pytest.fixture(scope="session")
def tiny_run(shards, tmp_path_factory):
    """``tiny_run(kind)``: the folder of a finished tiny run of ``kind`` on ``shards`` (with
    tiny runs of the kinds it depends on trained first), trained once per test session."""
    from worldmill.training import launch
    from worldmill.training.registry import resolve_config

    done: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in done:
            out = tmp_path_factory.mktemp(f"tiny-{kind}")
            cfg = resolve_config(kind, None, tiny_overrides(kind, make) + ["run.steps=4"])
            launch.write_run_config(out, cfg)
            launch.launch_trainer(kind, shards, out, nproc=1, log=lambda _: None)
            done[kind] = out
        return done[kind]

    return make


def tiny_overrides(kind: str, upstream_run) -> list[str]:
    """The kind's tiny config plus ``field=RUN`` for each run it depends on."""
    spec = get_spec(kind)
    ups = [f"{field}={upstream_run(up)}" for field, up in spec.upstream.items()]
    return list(spec.tiny) + ups
