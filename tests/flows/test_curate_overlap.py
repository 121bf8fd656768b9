"""Overlapping runs: two `worldmill curate` processes into the same OUT at once end exactly
as one run does; a run that cannot get OUT's lock in time exits 3; a transcode killed under
a run (infrastructure, not the clip) is repaired by the next run instead of being frozen as
a rejection."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import WORLDMILL, run_cli
from worldmill.runlock import EXIT_LOCKED, run_lock
from worldmill.store import Store

# The smallest useful corpus: one video with two shots, its byte-identical copy, a bad file.
TINY = ["harbor.mp4", "harbor_backup.mp4", "truncated.mp4"]


def _tiny(small_corpus: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in TINY:
        shutil.copy(small_corpus / name, dest / name)
    return dest


def _spawn(*args: str, env: dict | None = None) -> subprocess.Popen:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.Popen(
        [*WORLDMILL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=e,
        start_new_session=True,
    )


def _finish(p: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def end_state(out: Path) -> dict:
    """What a run leaves that must not depend on how runs overlapped: videos and their
    statuses, clips and their verdicts, and which clips the shards hold (with counts)."""
    s = Store(out)
    videos = sorted((Path(v["path"]).name, v["status"], v["video_id"]) for v in s.video_rows())
    clips = sorted(
        (c["clip_id"], bool(c["kept"]), c["reject_reason"], c["dup_of"], bool(c["shard"]))
        for c in s.clip_rows()
    )
    members: Counter = Counter()
    for tar in Path(out, "shards").rglob("*.tar"):
        with tarfile.open(tar) as t:
            members.update(
                m.name.split(".", 1)[0] for m in t.getmembers() if m.name.endswith(".mp4")
            )
    return {"videos": videos, "clips": clips, "shard_members": dict(members)}


def _check_overlap(corpus: Path, tmp_path: Path) -> None:
    shared, ref = tmp_path / "shared", tmp_path / "ref"
    # All three start together: two into the same OUT, one alone as the reference.
    runs = [_spawn("curate", str(corpus), "--out", str(o)) for o in (shared, shared, ref)]
    results = [_finish(p) for p in runs]
    for rc, out, err in results:
        assert rc == 0, out[-2000:] + err[-3000:]
    a, b = results[0], results[1]
    waited = [r for r in (a, b) if "waiting" in r[2] and str(shared) in r[2]]
    assert len(waited) == 1, "exactly one of the overlapping runs waited for the lock"
    assert "videos: 0 new" in waited[0][1], "the run that waited found the work done"

    got, want = end_state(shared), end_state(ref)
    assert got == want
    kept = {c[0] for c in want["clips"] if c[1]}
    assert kept and set(got["shard_members"]) == kept
    assert all(n == 1 for n in got["shard_members"].values()), "each kept clip in one shard"
    assert not any(c[2] == "transcode" for c in got["clips"])
    temp = [
        *shared.glob("clips/*/.seg_*"),
        *shared.glob("clips/*/*.part*"),
        *shared.glob("staging/*"),
    ]
    assert not temp, temp


def test_two_runs_at_once_equal_one_run(small_corpus, tmp_path):
    _check_overlap(_tiny(small_corpus, tmp_path / "raw"), tmp_path)


@pytest.mark.slow
def test_two_runs_at_once_equal_one_run_small_corpus(small_corpus, tmp_path):
    _check_overlap(small_corpus, tmp_path)


def test_lock_timeout_exits_3(small_corpus, tmp_path):
    out = tmp_path / "out"
    with run_lock(out, 0):  # this test process is "the other run"
        r = run_cli(
            "curate", str(small_corpus), "--out", str(out), "--set", "lock_timeout_s=1", timeout=300
        )
    assert r.returncode == EXIT_LOCKED, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"{out} is locked by run pid {os.getpid()}" in r.stderr
    assert "gave up after 1 s" in r.stderr and "lock_timeout_s" in r.stderr
    assert not (out / "lancedb").exists(), "nothing was started"


KILLER = """#!/bin/sh
# Stands in for ffmpeg: the transcode (an encode to libx264) is killed by SIGKILL, as the
# OOM killer would do it; every other call (decode for shot detection, probes) is real.
for a in "$@"; do
  if [ "$a" = libx264 ]; then kill -KILL $$; fi
done
exec {ffmpeg} "$@"
"""


def test_killed_transcode_is_repaired_by_rerun(small_corpus, tmp_path):
    corpus = _tiny(small_corpus, tmp_path / "raw")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ffmpeg"
    fake.write_text(KILLER.format(ffmpeg=shutil.which("ffmpeg")))
    fake.chmod(0o755)
    out, ref = tmp_path / "out", tmp_path / "ref"
    killed = _spawn(
        "curate", str(corpus), "--out", str(out), env={"PATH": f"{bindir}:{os.environ['PATH']}"}
    )
    clean = _spawn("curate", str(corpus), "--out", str(ref))
    rc, sout, serr = _finish(killed)
    assert rc == 1, sout[-2000:] + serr[-3000:]
    assert "left for the next run" in serr and "harbor.mp4: ffmpeg was killed by signal 9" in serr
    s = Store(out)
    # Not frozen: no clip of the video was recorded as a transcode rejection, and the video
    # has no row, so the next run processes it again.
    assert not [c for c in s.clip_rows() if c["reject_reason"] == "transcode"]
    assert "harbor.mp4" not in {Path(v["path"]).name for v in s.video_rows()}

    rc, sout, serr = _finish(clean)
    assert rc == 0, sout[-2000:] + serr[-3000:]
    r = run_cli("curate", str(corpus), "--out", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "videos: 1 new" in r.stdout
    assert end_state(out) == end_state(ref)
