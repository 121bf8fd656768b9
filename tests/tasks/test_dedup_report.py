"""The dedup similarity report and its plot, on the real-video ``corpus`` (conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tasks._dedup_corpus import DUP_BASES, TRANSFORMS
from worldmill.config import DedupConfig
from worldmill.tasks.dedup import find_duplicates
from worldmill.tasks.dedup_report import plot_similarity, similarity_report

CFG = DedupConfig()  # eps = 0.05


def test_similarity_report_and_plot(corpus, tmp_path):
    ids, vis, base = corpus
    res = find_duplicates(ids, vis, np.ones(len(ids)), np.zeros(len(ids), bool), CFG)
    grid = [0.01, 0.05, 0.1, 0.5, 0.99]
    rep = similarity_report(res.nn_similarity, grid, visual=vis, eps=CFG.eps)
    assert rep["n"] == len(ids)
    assert sum(rep["histogram"]["counts"]) == len(ids)
    assert len(rep["histogram"]["bin_edges"]) == len(rep["histogram"]["counts"]) + 1
    removed = rep["fraction_removed"]
    assert removed == sorted(removed)  # monotone in eps
    # At eps = 0.05 exactly the transformed copies go: 3 bases x 4 transforms.
    assert removed[1] == pytest.approx(len(DUP_BASES) * len(TRANSFORMS) / len(ids))
    assert all(r <= w + 1e-9 for r, w in zip(removed, rep["fraction_with_neighbour"], strict=True))
    png = plot_similarity(rep, str(tmp_path / "sim.png"))
    data = open(png, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    rep2 = similarity_report(np.array([np.nan]), grid)  # a single clip: nothing to plot
    assert rep2["fraction_removed"] is None and sum(rep2["histogram"]["counts"]) == 0
    plot_similarity(rep2, str(tmp_path / "one.png"))
