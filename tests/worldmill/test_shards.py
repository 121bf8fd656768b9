"""worldmill.shards: one format for the writer and the readers -- part byte ranges, the
Energon ``.tar.idx`` random access, and errors on truncated shards."""

import json
import tarfile

import pytest
import webdataset as wds

from worldmill import shards


def _tar(path, samples):
    with wds.TarWriter(str(path)) as w:
        for s in samples:
            w.write(s)
    shards.write_tar_index(path)
    return path


@pytest.fixture
def tar(tmp_path):
    return _tar(
        tmp_path / "a.tar",
        [
            {"__key__": f"clip_{i}", "mp4": bytes([i]) * (700 + i), "json": json.dumps({"i": i})}
            | ({"actions.npy": b"A" * i} if i % 2 else {})
            for i in range(5)
        ],
    )


def test_index_gives_the_byte_range_of_every_part(tar):
    samples = shards.index_shard(tar)
    assert [s.key for s in samples] == [f"clip_{i}" for i in range(5)]
    with tarfile.open(tar) as tf:
        for s in samples:
            for part, rng in s.parts.items():
                want = tf.extractfile(f"{s.key}.{part}").read()
                assert s.read(part) == want and rng.size == len(want)
    assert set(samples[1].parts) == {"mp4", "json", "actions.npy"}
    assert set(samples[2].parts) == {"mp4", "json"}


def test_tar_idx_random_access_matches_the_index(tar):
    offsets = shards.read_tar_index(tar)
    assert len(offsets) == 6 and offsets[-1] <= tar.stat().st_size
    for i, s in enumerate(shards.index_shard(tar)):
        got = shards.read_sample(tar, i)
        assert got.pop("__key__") == s.key.encode()
        assert got == {p: s.read(p) for p in s.parts}
    with pytest.raises(IndexError, match="5 samples"):
        shards.read_sample(tar, 5)


def test_keys_keep_folders_and_multi_dot_parts():
    assert shards.split_name("b/x_0001.actions.npy") == ("b/x_0001", "actions.npy")
    assert shards.split_name("x.mp4") == ("x", "mp4")


def test_a_truncated_shard_is_an_error_not_short_data(tar, tmp_path):
    s = shards.index_shard(tar)[-1]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(tar.read_bytes()[: s.parts["mp4"].offset + 10])
    with pytest.raises(OSError, match="truncated"):
        shards.read_part(cut, s.parts["mp4"])


def test_no_shards_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no WebDataset shards"):
        shards.list_shards(tmp_path)


def test_decode_in_memory_equals_the_ffmpeg_decode(tmp_path):
    import numpy as np

    from worldmill.media import MediaError, decode_bytes, decode_frames
    from worldmill.synth import write_video

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8)
    mp4 = write_video(tmp_path / "v.mp4", frames, fps=12)
    raw = mp4.read_bytes()
    for fps in (None, 6):
        want = decode_frames(str(mp4), 32, 24, fps=fps)
        got = decode_bytes(raw, 32, 24, fps=fps)
        assert got.shape == want.shape and np.array_equal(got, want)
    assert decode_bytes(raw, 32).shape == (12, 24, 32, 3)  # aspect kept
    for bad in (b"", b"not a video" * 50, raw[: len(raw) // 3]):
        with pytest.raises(MediaError):
            decode_bytes(bad, 32, 24)


def test_tar_sample_writer_writes_webdataset_tarwriter_bytes(tmp_path):
    """The curate shard writer (standard library only) writes byte for byte what
    webdataset's TarWriter writes, and webdataset reads the samples back."""
    import webdataset as wds

    from worldmill.shards import TarSampleWriter

    samples = [
        {"__key__": "v_0000", "mp4": b"\x00\x01" * 700, "json": b'{"a": 1}', "txt": b"caption"},
        {"__key__": "v_0001", "txt": "ünïcode".encode(), "actions.npy": b"\x93NUMPY", "_x": b"x"},
    ]
    ours, ref = tmp_path / "ours.tar", tmp_path / "ref.tar"
    w = TarSampleWriter(ours, mtime=1_700_000_000)
    for s in samples:
        w.write(s)
    w.close()
    with wds.TarWriter(str(ref), encoder=False, mtime=1_700_000_000) as r:
        for s in samples:
            r.write(s)
    assert ours.read_bytes() == ref.read_bytes()
    back = list(wds.WebDataset(str(ours), shardshuffle=False))
    assert [b["__key__"] for b in back] == ["v_0000", "v_0001"]
    assert back[1]["txt"] == "ünïcode".encode() and "_x" not in back[1]
