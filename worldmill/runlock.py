"""One curate run at a time per output root.

Two ``worldmill curate`` runs into the same OUT (a nightly deployment run and a manual one)
would ingest the same new videos and process them concurrently. The run lock serialises
them: the second run waits up to ``lock_timeout_s`` for the first to finish, then either
starts (and finds the work already done) or gives up with :class:`RunLockTimeout`, which
the CLI turns into exit code 3.

The lock is an OS file lock (``flock`` through the ``filelock`` library) on
``OUT/.curate.lock``: the kernel releases it when its process dies, SIGKILL included, so a
crashed run never leaves a stale lock behind. ``OUT/.curate.lock.owner`` says who holds it
(pid, host, start time), for the waiting run's messages.

Re-entrant within a process: the CLI takes the lock before it starts Prefect and Dask (so
a run that cannot get it exits fast), and the flow, which always takes it too (deployment
runs have no CLI around them), then finds it held by its own process.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

LOCK_NAME = ".curate.lock"
EXIT_LOCKED = 3  # CLI exit code: another run held the lock for longer than the timeout


class RunLockTimeout(Exception):
    """Another run held OUT's lock for longer than the timeout; the message is for people."""


# Locks this process holds: lock path -> (FileLock, depth). A guard, not the lock itself.
_held: dict[str, tuple[FileLock, int]] = {}
_guard = threading.Lock()


def lock_path(out: str | os.PathLike) -> Path:
    return Path(out) / LOCK_NAME


def lock_owner(out: str | os.PathLike) -> dict:
    """Who holds (or last held) the lock: ``{"pid", "host", "since"}``; {} if unknown."""
    try:
        return json.loads(Path(str(lock_path(out)) + ".owner").read_text())
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "another run"
    return f"run pid {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')})"


@contextmanager
def run_lock(
    out: str | os.PathLike,
    timeout_s: float,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold OUT's run lock for the ``with`` block; wait at most ``timeout_s`` seconds for it
    (a negative value waits forever). Raises :class:`RunLockTimeout` when it stays taken.
    ``on_wait`` receives one human-readable line when the lock is busy (default: log it)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    path = str(lock_path(out).resolve())
    with _guard:
        entry = _held.get(path)
        if entry is not None:  # this process holds it already (CLI, then the flow)
            _held[path] = (entry[0], entry[1] + 1)
    if entry is not None:
        try:
            yield
        finally:
            _release(path)
        return

    lock = FileLock(path, thread_local=False)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        owner = lock_owner(out)
        wait = "forever" if timeout_s < 0 else f"up to {timeout_s:g} s"
        (on_wait or log.warning)(
            f"{out} is being curated by {_describe(owner)}; waiting {wait} for it to finish"
        )
        t0 = time.monotonic()
        try:
            lock.acquire(timeout=timeout_s, poll_interval=0.5)
        except Timeout:
            raise RunLockTimeout(
                f"{out} is locked by {_describe(lock_owner(out))}: gave up after "
                f"{time.monotonic() - t0:.0f} s (lock file {path}; raise lock_timeout_s to wait longer)"
            ) from None
    owner_file = Path(path + ".owner")
    tmp = owner_file.with_name(f"{owner_file.name}.{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
    )
    os.replace(tmp, owner_file)
    with _guard:
        _held[path] = (lock, 1)
    try:
        yield
    finally:
        _release(path)


def _release(path: str) -> None:
    with _guard:
        lock, depth = _held[path]
        if depth > 1:
            _held[path] = (lock, depth - 1)
            return
        del _held[path]
    lock.release()
