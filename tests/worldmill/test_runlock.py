"""OUT's run lock: exclusive across processes, re-entrant within one, freed by the kernel
when its holder is SIGKILLed (no stale lock), and a timeout that names the holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from worldmill.runlock import RunLockTimeout, lock_owner, run_lock

HOLD = """
import sys, time
from worldmill.runlock import run_lock
with run_lock(sys.argv[1], 0):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(out) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_process_times_out_naming_the_holder(tmp_path):
    p = _holder(tmp_path)
    try:
        waits = []
        t0 = time.monotonic()
        with pytest.raises(RunLockTimeout, match=f"locked by run pid {p.pid} on "):
            with run_lock(tmp_path, 1.0, on_wait=waits.append):
                pass
        assert 1.0 <= time.monotonic() - t0 < 10
        assert len(waits) == 1 and "waiting up to 1 s" in waits[0]
        assert lock_owner(tmp_path)["pid"] == p.pid
    finally:
        p.kill()
        p.wait()


def test_sigkilled_holder_leaves_no_stale_lock(tmp_path):
    p = _holder(tmp_path)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with run_lock(tmp_path, 0):  # at once: the kernel released the dead holder's lock
        assert lock_owner(tmp_path)["pid"] == os.getpid()


def test_reentrant_in_one_process(tmp_path):
    with run_lock(tmp_path, 0):
        with run_lock(tmp_path, 0):  # the CLI holds it, then the flow takes it again
            pass
        # still held after the inner block: another process cannot take it
        r = subprocess.run(
            [sys.executable, "-c", HOLD, str(tmp_path)], capture_output=True, text=True
        )
        assert r.returncode != 0 and "RunLockTimeout" in r.stderr
    p = _holder(tmp_path)  # released after the outer block
    p.kill()
    p.wait()
