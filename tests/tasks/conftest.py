"""Fixtures shared by tests/tasks modules: the real-video dedup corpus of test_dedup.py,
test_dedup_report.py and test_embed.py (session scope, so the videos are encoded and
described once)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tasks._dedup_corpus import DUP_BASES, make_corpus
from worldmill.media import ClipView, probe
from worldmill.tasks.embed import visual_descriptor


@pytest.fixture(scope="session")
def corpus_descriptors(tmp_path_factory) -> dict[str, np.ndarray]:
    """The visual descriptor (256,) of every clip of the corpus, by clip name."""
    paths = make_corpus(tmp_path_factory.mktemp("dedup_corpus"), DUP_BASES)
    out = {}
    for name, p in paths.items():
        info = probe(str(p))
        out[name] = visual_descriptor(ClipView(str(p), info.fps, info.width, info.height))
    return out


@pytest.fixture(scope="session")
def corpus(corpus_descriptors):
    """ids, descriptors (N, 256) and ground-truth base of every clip."""
    ids, vecs, base = [], [], []
    for name, v in corpus_descriptors.items():
        vecs.append(v)
        ids.append(name.replace(".", "_"))
        base.append(name.split(".")[0])
    return ids, np.stack(vecs), base
