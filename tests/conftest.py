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
