"""Fixtures shared by tests/tasks modules: the real-video dedup corpus of test_dedup.py and
test_dedup_report.py (session scope, so the videos are encoded and described once)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tasks._dedup_corpus import DUP_BASES, make_corpus
from worldmill.media import ClipView, probe
from worldmill.tasks.embed import visual_descriptor


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """ids, descriptors (N, 256) and ground-truth base of every clip."""
    paths = make_corpus(tmp_path_factory.mktemp("dedup_corpus"), DUP_BASES)
    ids, vecs, base = [], [], []
    for name, p in paths.items():
        info = probe(str(p))
        vecs.append(visual_descriptor(ClipView(str(p), info.fps, info.width, info.height)))
        ids.append(name.replace(".", "_"))
        base.append(name.split(".")[0])
    return ids, np.stack(vecs), base
