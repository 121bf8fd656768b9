"""Launch a trainer under ``torchrun`` as a subprocess and stream its output line by line.

The caller (a Prefect task) passes a ``log`` callable, so every trainer line lands in the
Prefect run logs as it is printed. A non-zero exit raises ``TrainerFailed``, which is what
makes the Prefect task fail and retry. The trainer runs in its own process group; if the
caller is interrupted every process of the launch (torchrun, its ranks, what they spawned) is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any


class TrainerFailed(RuntimeError):
    """The torchrun trainer exited non-zero (crash, OOM, SIGKILL of a rank, ...)."""

    def __init__(self, returncode: int, tail: list[str]):
        self.returncode = returncode
        self.tail = tail
        super().__init__(f"trainer exited with code {returncode}; last lines:\n" + "\n".join(tail))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(module: str, args: list[str], nproc: int) -> list[str]:
    """``python -m torch.distributed.run`` (same interpreter as the caller: same venv)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--nnodes",
        "1",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        module,
        *args,
    ]


def run_torchrun(
    module: str,
    args: list[str],
    nproc: int = 1,
    log: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
    threads_per_proc: int = 1,
) -> int:
    """Run ``torchrun -m module args`` to completion, calling ``log(line)`` for each output
    line. Returns 0; raises ``TrainerFailed`` (with the last 40 lines) on failure."""
    tag = uuid.uuid4().hex  # marks every process of this launch, whatever session it is in
    full_env = {
        **os.environ,
        _TAG: tag,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(threads_per_proc),  # torchrun would warn and set 1 otherwise
        **(env or {}),
    }
    proc = subprocess.Popen(
        torchrun_cmd(module, args, nproc),
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=40)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log(line)

    # Read in a thread and wait on the process, not on EOF: helpers that a killed rank
    # leaves behind (dist_checkpointing's multiprocessing workers) inherit the pipe and
    # would keep it open forever.
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait()
    finally:
        # Whatever happened, nothing of this launch outlives it: kill torchrun's group, then
        # every process carrying this launch's tag -- torchrun starts each rank in a session
        # of its own, so the ranks and what they spawned are not in torchrun's group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_tagged(tag)
        reader.join(timeout=10)
    if rc != 0:
        raise TrainerFailed(rc, list(tail))
    return rc


_TAG = "WORLDMILL_LAUNCH"


def kill_tagged(tag: str) -> int:
    """SIGKILL every process whose environment has ``WORLDMILL_LAUNCH=tag`` (children inherit
    it). Returns how many were killed."""
    import psutil

    n = 0
    for p in psutil.process_iter():
        try:
            if p.environ().get(_TAG) == tag:
                p.kill()
                n += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return n


def write_run_config(out: str | Path, cfg: Any) -> Path:
    """Write the validated run config (a pydantic model) to ``RUN/config.json``; the trainer
    reads it from there. Returns its path."""
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    path = run / "config.json"
    path.write_text(cfg.model_dump_json(indent=2))
    return path


TRAINER = "worldmill.training.loop"


def launch_trainer(
    kind: str,
    data: str | Path,
    out: str | Path,
    nproc: int,
    threads_per_proc: int = 1,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> int:
    """torchrun the one training loop for ``kind`` on ``data`` with ``RUN/config.json``
    (written by ``write_run_config``); ``resume`` continues from RUN/checkpoints/latest."""
    args = [
        "--kind",
        kind,
        "--data",
        str(data),
        "--out",
        str(out),
        "--config",
        str(Path(out) / "config.json"),
    ]
    if resume:
        args.append("--resume")
    return run_torchrun(TRAINER, args, nproc=nproc, log=log, threads_per_proc=threads_per_proc)
