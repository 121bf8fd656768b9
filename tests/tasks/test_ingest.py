from __future__ import annotations

import shutil

import fsspec
import numpy as np
import pytest

from worldmill.records import DUPLICATE, FAILED, OK
from worldmill.synth import write_video
from worldmill.tasks.ingest import ingest, list_inputs


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    write_video(d / "good one.mp4", rng.integers(0, 255, (24, 64, 96, 3), dtype=np.uint8), 12)
    shutil.copy(d / "good one.mp4", d / "copy $(rm -rf x) `q` 'é'.mp4")
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("hello, not a video")
    data = (d / "good one.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "notes.txt").write_text("ignored: not a video extension")
    (d / ".hidden.mp4").write_bytes(data)
    return d


def test_lists_by_extension_and_skips_hidden(folder):
    names = [p.rsplit("/", 1)[-1] for p in list_inputs(str(folder), [".mp4"])]
    assert "notes.txt" not in names and ".hidden.mp4" not in names
    assert len(names) == 5


def test_statuses_and_incremental(folder):
    res = ingest(str(folder), [], [".mp4"], cache_dir="")
    by = {v.path.rsplit("/", 1)[-1]: v for v in res.todo + res.recorded}
    # the sorted-first name is the original; the other name is the duplicate
    orig, dupe = by["copy $(rm -rf x) `q` 'é'.mp4"], by["good one.mp4"]
    assert orig.status == OK and orig.duration_s == pytest.approx(2.0)
    assert dupe.status == DUPLICATE and dupe.dup_of == orig.video_id
    for bad, words in [
        ("empty.mp4", "empty"),
        ("text.mp4", "not a readable"),
        ("truncated.mp4", ""),
    ]:
        assert by[bad].status == FAILED, bad
        assert words in by[bad].error and by[bad].error
    # second pass with the rows registered: nothing new
    rows = [dict(v.__dict__) for v in res.todo + res.recorded]
    again = ingest(str(folder), rows, [".mp4"], cache_dir="")
    assert again.todo == [] and again.recorded == [] and again.skipped == 5


def test_fsspec_uri_is_cached_locally(folder, tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/raw/clip.mp4", (folder / "good one.mp4").read_bytes())
    res = ingest("memory://bucket/raw", [], [".mp4"], cache_dir=str(tmp_path / "cache"))
    assert len(res.todo) == 1
    v = res.todo[0]
    assert v.path.startswith("memory://") and v.local_path.startswith(str(tmp_path / "cache"))
    assert v.width == 96 and v.height == 64
