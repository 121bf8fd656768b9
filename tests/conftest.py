"""Shared fixtures. Every test session gets its own PREFECT_HOME (a fresh SQLite database)
and never touches a model hub."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from worldmill.training.registry import get_spec
from worldmill.training.sample_shards import write_sample_shards

_HOME = tempfile.mkdtemp(prefix="worldmill-prefect-")
os.environ.setdefault("PREFECT_HOME", _HOME)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# INFO so that flows send their log lines to the server (tests read them back).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral server's default 20 s start-up budget is not enough on a loaded 2-core CI box.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

# Prefect logs "Stopping temporary server" from an atexit hook, after pytest has closed
# the streams it captured; don't print a "Logging error" traceback for that at exit.
logging.raiseExceptions = False

WORLDMILL = [sys.executable, "-m", "worldmill.cli"]


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run the real `worldmill` CLI in a subprocess (as a user would)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [*WORLDMILL, *args], capture_output=True, text=True, timeout=timeout, env=e
    )


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A small generated corpus (seed 101) with ground truth."""
    from worldmill.sample_data import generate

    d = tmp_path_factory.mktemp("small_corpus")
    generate(d, seed=101, small=True)
    return d


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """8 real H.264 clips (64x64, 24 frames, panning photos) in 2 WebDataset shards."""
    return write_sample_shards(
        tmp_path_factory.mktemp("shards"), n_clips=8, size=64, frames=24, clips_per_shard=5
    )


@pytest.fixture(scope="session")
def tiny_run(shards, tmp_path_factory):
    """``tiny_run(kind)``: the folder of a finished tiny run of ``kind`` on ``shards`` (with
    tiny runs of the kinds it depends on trained first), trained once per test session."""
    from worldmill.training import launch
    from worldmill.training.registry import resolve_config

    done: dict[tuple, Path] = {}

    def make(kind: str, extra: tuple[str, ...] = ()) -> Path:
        if (kind, extra) not in done:
            out = tmp_path_factory.mktemp(f"tiny-{kind}")
            over = tiny_overrides(kind, make) + list(extra) + ["run.steps=4"]
            launch.write_run_config(out, resolve_config(kind, None, over))
            launch.launch_trainer(kind, shards, out, nproc=1, log=lambda _: None)
            done[kind, extra] = out
        return done[kind, extra]

    return make


def tiny_overrides(kind: str, upstream_run) -> list[str]:
    """The kind's tiny config plus ``field=RUN`` for each run it depends on (itself tiny,
    with the spec's ``tiny_upstream`` overrides)."""
    spec = get_spec(kind)
    ups = [
        f"{field}={upstream_run(up, spec.tiny_upstream.get(field, ()))}"
        for field, up in spec.upstream.items()
    ]
    return list(spec.tiny) + ups


def tiny_genie(steps: int = 4) -> list[str]:
    """``stage.key=value`` overrides for ``worldmill train genie``: every stage's tiny
    config, the tokenizer and lam exactly as ``tiny_run`` makes them (so the chain can reuse
    the session's runs), the dynamics stage in 1 process; ``steps`` steps."""
    from worldmill.genie.pipeline import STAGES

    dyn = get_spec("dynamics")
    out = []
    for stage in STAGES:
        extra = dyn.tiny_upstream.get(stage, ()) if stage in dyn.upstream else ()
        nproc = ("run.nproc=1",) if stage == "dynamics" else ()
        for item in (*get_spec(stage).tiny, *extra, *nproc, f"run.steps={steps}"):
            out.append(f"{stage}.{item}")
    return out


@pytest.fixture(scope="session")
def genie_run(shards, tiny_run, tmp_path_factory) -> Path:
    """A tiny genie run folder made by the genie flow on ``shards``, once per session: its
    tokenizer and lam stages are the session's ``tiny_run`` runs (linked in; the flow
    reuses them: same configs), the flow trains the encode and dynamics stages."""
    from worldmill.flows.genie import genie

    run = tmp_path_factory.mktemp("genie") / "run"
    run.mkdir()
    dyn = get_spec("dynamics")
    (run / "tokenizer").symlink_to(tiny_run("tokenizer", dyn.tiny_upstream["tokenizer"]))
    (run / "lam").symlink_to(tiny_run("lam"))
    genie(data=str(shards), out=str(run), overrides=tiny_genie())
    return run
