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


def test_lists_by_probe_candidates_and_says_why_others_are_skipped(folder):
    skipped = []
    names = [p.rsplit("/", 1)[-1] for p in list_inputs(str(folder), [".txt"], skipped=skipped)]
    assert "notes.txt" not in names and ".hidden.mp4" not in names
    assert len(names) == 5
    assert sorted((s["path"].rsplit("/", 1)[-1], s["reason"]) for s in skipped) == [
        (".hidden.mp4", "hidden file"),
        ("notes.txt", "sidecar extension .txt (skip_extensions)"),
    ]
    # include_all probes sidecars too; a non-empty `extensions` restricts by name
    assert len(list_inputs(str(folder), [".txt"], include_all=True)) == 6
    skipped = []
    only = list_inputs(str(folder), [], extensions=[".txt"], skipped=skipped)
    assert [p.rsplit("/", 1)[-1] for p in only] == ["notes.txt"]
    assert sum(s["reason"] == "extension not in extensions" for s in skipped) == 5


def test_statuses_and_incremental(folder):
    res = ingest(str(folder), [], [".txt"], cache_dir="")
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
    again = ingest(str(folder), rows, [".txt"], cache_dir="")
    assert again.todo == [] and again.recorded == [] and again.skipped == 5
    assert again.files_seen == 7 and len(again.files_skipped) == 2


def test_fsspec_uri_is_cached_locally(folder, tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/raw/clip.mp4", (folder / "good one.mp4").read_bytes())
    res = ingest("memory://bucket/raw", [], [".txt"], cache_dir=str(tmp_path / "cache"))
    assert len(res.todo) == 1
    v = res.todo[0]
    assert v.path.startswith("memory://") and v.local_path.startswith(str(tmp_path / "cache"))
    assert v.width == 96 and v.height == 64


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """A Theora .ogg, a VP8 .webm and one with no extension (all made by real ffmpeg), a
    .txt sidecar and a .bin of random bytes."""
    d = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (24, 64, 96, 3), dtype=np.uint8)
    write_video(d / "theora.ogg", frames, 12, codec="libtheora", extra_args=["-q:v", "7"])
    write_video(d / "vp8.webm", frames[::-1], 12, codec="libvpx", extra_args=["-b:v", "500k"])
    write_video(d / "noext", frames[:, ::-1], 12, extra_args=["-f", "matroska"])
    (d / "theora.txt").write_text("camera: A, take 3")
    (d / "random.bin").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return d


def test_every_format_ffmpeg_reads_is_probed_and_nothing_is_silent(formats):
    from worldmill.config import CurateConfig

    res = ingest(str(formats), [], CurateConfig().skip_extensions, cache_dir="")
    todo = {v.path.rsplit("/", 1)[-1]: v for v in res.todo}
    assert set(todo) == {"theora.ogg", "vp8.webm", "noext"}
    assert (todo["theora.ogg"].codec, todo["vp8.webm"].codec) == ("theora", "vp8")
    assert all(v.width == 96 and v.height == 64 and v.bit_rate > 0 for v in todo.values())
    assert res.files_skipped == [
        {"path": str(formats / "theora.txt"), "reason": "sidecar extension .txt (skip_extensions)"}
    ]
    (failed,) = res.files_failed
    assert failed["path"] == str(formats / "random.bin")
    assert failed["reason"].startswith("probe: ")
    assert res.files_seen == 5 == len(res.todo) + len(res.files_skipped) + len(res.files_failed)


def test_files_in_hidden_folders_are_listed_as_hidden(tmp_path):
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.mp4").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "y.mp4").write_bytes(b"y")
    skipped = []
    assert list_inputs(str(tmp_path), [], skipped=skipped) == [str(tmp_path / "sub" / "y.mp4")]
    assert skipped == [{"path": str(tmp_path / ".cache" / "x.mp4"), "reason": "hidden file"}]
