"""The shard format, one module for its writer (``tasks/shard.py``, with the index over
all tars in ``tasks/shard_manifest.py``) and its readers (the training data, ``worldmill
encode``).

A shard is a WebDataset tar: samples are consecutive members sharing a key,
``<key>.<part>`` with parts ``mp4`` (H.264 clip), ``json`` (clip metadata: ``clip_id``,
``video_id``, ``width``, ``height``, ...), ``txt`` (caption) and optional extras (e.g.
``actions.npy``). Next to each tar, ``<tar>.idx`` is Megatron-Energon's index: little-endian
uint64 byte offsets of each sample's first header, then the end offset.

Readers index a shard once (headers only, no payload) and then read any part by byte offset
-- one ``seek`` + ``read``, never a scan of the tar per sample.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

VIDEO, META, CAPTION = "mp4", "json", "txt"


@dataclass(frozen=True)
class Part:
    offset: int  # byte offset of the payload in the tar
    size: int  # payload bytes


@dataclass(frozen=True)
class Sample:
    key: str  # member name up to the first "." of its basename (dirs kept)
    shard: str  # path of the tar
    parts: dict[str, Part] = field(default_factory=dict)  # "mp4" -> Part, "json" -> Part, ...

    def read(self, part: str) -> bytes:
        return read_part(self.shard, self.parts[part])


def split_name(name: str) -> tuple[str, str]:
    """``"dir/abc_0001.actions.npy"`` -> ``("dir/abc_0001", "actions.npy")``."""
    head, _, base = name.rpartition("/")
    key, _, part = base.partition(".")
    return (f"{head}/{key}" if head else key), part


def list_shards(root: str | Path) -> list[Path]:
    """All ``*.tar`` under ``root`` (recursively), sorted: the order defines the dataset."""
    root = Path(root)
    if root.is_file() and root.suffix == ".tar":
        return [root]
    shards = sorted(root.rglob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"no WebDataset shards (*.tar) under {root}")
    return shards


def index_shard(tar_path: str | Path) -> list[Sample]:
    """The samples of one tar in order, with the byte range of every part."""
    samples: list[Sample] = []
    with tarfile.open(tar_path, "r:") as tf:
        for m in tf:
            if not m.isreg():
                continue
            key, part = split_name(m.name)
            if not part:
                continue
            if not samples or samples[-1].key != key:
                samples.append(Sample(key, str(tar_path)))
            samples[-1].parts[part] = Part(m.offset_data, m.size)
    return samples


def read_part(tar_path: str | Path, part: Part) -> bytes:
    with open(tar_path, "rb") as f:
        f.seek(part.offset)
        data = f.read(part.size)
    if len(data) != part.size:
        raise OSError(f"{tar_path}: truncated at byte {part.offset + len(data)}")
    return data


def write_tar_index(tar_path: str | Path) -> tuple[int, list[str]]:
    """Write Energon's ``<tar>.idx`` (atomically); return (n_samples, sample keys in order)."""
    tar_path = Path(tar_path)
    offsets: list[int] = []
    keys: list[str] = []
    with tarfile.open(tar_path, "r:") as tf:
        last = None
        for m in tf:
            if not m.isreg() or "." not in m.name.rsplit("/", 1)[-1]:
                continue
            key = m.name.split(".", 1)[0]
            if key != last:
                offsets.append(m.offset)
                keys.append(key.rsplit("/", 1)[-1])
                last = key
        offsets.append(tf.offset)
    tmp = tar_path.with_name(tar_path.name + ".idx.tmp")
    tmp.write_bytes(b"".join(struct.pack("<Q", o) for o in offsets))
    os.replace(tmp, tar_path.with_name(tar_path.name + ".idx"))
    return len(keys), keys


def read_tar_index(tar_path: str | Path) -> list[int]:
    """Offsets from ``<tar>.idx``: sample i spans bytes ``[o[i], o[i + 1])`` of the tar."""
    raw = Path(str(tar_path) + ".idx").read_bytes()
    return list(struct.unpack(f"<{len(raw) // 8}Q", raw))


def read_sample(tar_path: str | Path, i: int) -> dict[str, bytes]:
    """Sample ``i`` of a tar through its ``.idx`` (random access, as Energon reads it):
    ``{part: bytes}`` plus ``"__key__"``."""
    offsets = read_tar_index(tar_path)
    if not 0 <= i < len(offsets) - 1:
        raise IndexError(f"{tar_path} has {len(offsets) - 1} samples, asked for #{i}")
    out: dict[str, bytes] = {}
    with open(tar_path, "rb") as f:
        f.seek(offsets[i])
        pos = offsets[i]
        while pos < offsets[i + 1]:
            info = tarfile.TarInfo.frombuf(f.read(tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
            data = f.read(info.size)
            f.seek(-info.size % tarfile.BLOCKSIZE, os.SEEK_CUR)  # payload padding
            pos = f.tell()
            if info.isreg():
                key, part = split_name(info.name)
                out["__key__"] = key.encode()
                out[part] = data
    return out


class TarSampleWriter:
    """Write WebDataset samples to a tar: the same bytes as ``webdataset.TarWriter`` with
    ``encoder=False`` (members ``<key>.<part>`` in sorted part order, mode 0444, owner
    ``bigdata``), on the standard library alone -- importing ``webdataset`` imports torch
    (~2.6 CPU-s), which a curate process otherwise never loads.

    ``mtime``: an integer, so the headers stay plain ustar (no PAX records)."""

    def __init__(self, path: str | Path, mtime: int) -> None:
        self.mtime = int(mtime)
        self._file = open(path, "wb")  # noqa: SIM115 -- closed by close()
        self._tar = tarfile.open(fileobj=self._file, mode="w|")

    def write(self, sample: dict[str, bytes | str]) -> None:
        """``sample``: ``__key__`` plus ``{part: bytes or str}``; other ``_`` keys are
        skipped, as WebDataset does."""
        key = sample["__key__"]
        for part in sorted(sample):
            if part.startswith("_"):
                continue
            data = sample[part]
            data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            info = tarfile.TarInfo(f"{key}.{part}")
            info.size, info.mtime, info.mode = len(data), self.mtime, 0o444
            info.uname = info.gname = "bigdata"
            self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()
        self._file.close()
