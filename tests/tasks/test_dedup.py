"""Dedup on real videos with real ffmpeg transforms, plus policy tests on constructed arrays.

The real-video ``corpus`` fixture is in tests/tasks/conftest.py (shared with
test_dedup_report.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.tasks._dedup_corpus import DUP_BASES
from worldmill.config import DedupConfig
from worldmill.tasks.dedup import find_duplicates, resolve_pairs

CFG = DedupConfig()  # eps = 0.05


def _groups(ids, base):
    return {b: {i for i, bb in zip(ids, base, strict=True) if bb == b} for b in set(base)}


def test_near_duplicates_found_and_best_kept(corpus):
    ids, vis, base = corpus
    # The original has the highest quality; transforms are worse.
    quality = np.array([1.0 if "_" not in i else 0.5 for i in ids])
    res = find_duplicates(ids, vis, quality, np.zeros(len(ids), bool), CFG)

    # Precision / recall over rejected clips: exactly the transformed copies.
    truth = {i for i in ids if "_" in i}
    got = set(res.dup_of)
    tp = len(truth & got)
    precision = tp / max(1, len(got))
    recall = tp / len(truth)
    assert precision == 1.0 and recall == 1.0, got ^ truth
    for rid, kept in res.dup_of.items():
        assert kept == rid.split("_")[0]  # kept = the original of the same shot
        assert res.reason[rid] == "near"
    # Different content is never merged.
    for b, members in _groups(ids, base).items():
        assert not (members - {b}) & {r for r, k in res.dup_of.items() if k != b}
    assert res.nn_similarity.shape == (len(ids),)
    assert np.all(res.nn_similarity[[i.startswith(DUP_BASES) for i in ids]] > 0.95)


def test_higher_quality_copy_wins(corpus):
    ids, vis, base = corpus
    quality = np.full(len(ids), 0.5)
    quality[ids.index("shp0_crf35")] = 0.9  # the re-encode scored best: keep it
    res = find_duplicates(ids, vis, quality, np.zeros(len(ids), bool), CFG)
    assert "shp0_crf35" not in res.dup_of
    assert res.dup_of["shp0"] == "shp0_crf35"
    # Ties: smallest id kept.
    assert res.dup_of["tex0_crf35"] == "tex0"  # "tex0" < "tex0_..."


def test_protected_row_wins_against_new_rows(corpus):
    ids, vis, base = corpus
    quality = np.array([1.0 if "_" not in i else 0.5 for i in ids])
    protected = np.array([i in ("tex3_half", "tex3_crop5") for i in ids])  # sharded earlier
    res = find_duplicates(ids, vis, quality, protected, CFG)
    assert "tex3_half" not in res.dup_of and "tex3_crop5" not in res.dup_of
    assert res.dup_of["tex3"] in ("tex3_half", "tex3_crop5")  # best original is rejected
    assert {res.dup_of[i] for i in ids if i.startswith("tex3") and i in res.dup_of} == {
        res.dup_of["tex3"]
    }


def test_different_content_alone_is_not_merged(corpus):
    ids, vis, base = corpus
    keep = [k for k, i in enumerate(ids) if "_" not in i]  # only distinct shots
    res = find_duplicates(
        [ids[k] for k in keep], vis[keep], np.ones(len(keep)), np.zeros(len(keep), bool), CFG
    )
    assert res.dup_of == {}
    assert np.all(res.nn_similarity < 0.95)


def test_exact_and_transitive_groups():
    rng = np.random.default_rng(0)
    a = rng.normal(size=64).astype(np.float32)
    a /= np.linalg.norm(a)
    ortho = rng.normal(size=64).astype(np.float32)
    ortho -= (ortho @ a) * a
    ortho /= np.linalg.norm(ortho)
    rot = [np.cos(t) * a + np.sin(t) * ortho for t in (0.0, 0.25, 0.5)]  # cos 0.25 = 0.969
    other = rng.normal(size=64).astype(np.float32)
    vis = np.stack([rot[0], rot[0], rot[1], rot[2], other])
    ids = ["a", "a_copy", "b", "c", "z"]
    res = find_duplicates(ids, vis, np.array([0.1, 0.9, 0.5, 0.5, 0.5]), np.zeros(5, bool), CFG)
    # a~b~c chain (a and c are 0.878 apart: not within eps) is one group; best = a_copy.
    assert res.dup_of == {"a": "a_copy", "b": "a_copy", "c": "a_copy"}
    assert res.reason == {"a": "exact", "b": "near", "c": "near"}
    assert float(vis[0] @ vis[3]) < 0.95
    # nan quality counts as lowest; protected keeps both protected rows.
    res2 = find_duplicates(
        ids, vis, np.array([np.nan, np.nan, 0.0, 0.1, 0.0]), np.array([1, 1, 0, 0, 0], bool), CFG
    )
    assert res2.dup_of == {"b": "a", "c": "a"}


def test_semantic_needs_caption_and_visual_agreement():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(4, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    noise = rng.normal(size=32).astype(np.float32)
    noise -= (noise @ base[0]) * base[0]
    noise /= np.linalg.norm(noise)
    related = 0.9 * base[0] + np.sqrt(1 - 0.81) * noise  # visual cos 0.9: beyond eps, same scene
    vis = np.stack([base[0], related, base[1], base[2], base[3]])
    t = rng.normal(size=(3, 16)).astype(np.float32)
    text = np.stack([t[0], t[0], t[0], t[1], t[2]])  # identical captions for rows 0, 1, 2
    ids = ["s0", "s1", "s2", "s3", "s4"]
    q = np.array([0.9, 0.5, 0.5, 0.5, 0.5])
    res = find_duplicates(ids, vis, q, np.zeros(5, bool), CFG, text=text)
    # s1: same caption and related footage -> semantic dup. s2: same template caption but
    # unrelated footage -> kept.
    assert res.dup_of == {"s1": "s0"} and res.reason == {"s1": "semantic"}
    off = find_duplicates(ids, vis, q, np.zeros(5, bool), DedupConfig(semantic=False), text=text)
    assert off.dup_of == {}


def test_scales_blockwise():
    rng = np.random.default_rng(2)
    n, d, k = 6000, 256, 300
    vis = rng.normal(size=(n, d)).astype(np.float32)
    src = rng.choice(n - k, k, replace=False)
    vis[-k:] = vis[src] + 0.05 * rng.normal(size=(k, d))  # near copies (cos ~ 0.999)
    ids = [f"c{i:05d}" for i in range(n)]
    q = np.ones(n)
    q[-k:] = 0.0
    t0 = time.perf_counter()
    res = find_duplicates(ids, vis, q, np.zeros(n, bool), CFG, block=512)
    assert time.perf_counter() - t0 < 10
    assert res.dup_of == {ids[n - k + m]: ids[src[m]] for m in range(k)}


def test_resolve_pairs_from_ann_candidates():
    ids = ["x", "y", "z"]
    pairs = {"near": (np.array([2]), np.array([0]))}
    res = resolve_pairs(ids, np.array([0.1, 0.2, 0.3]), np.zeros(3, bool), pairs)
    assert res.dup_of == {"x": "z"} and res.reason == {"x": "near"}


def test_edge_cases():
    empty = find_duplicates([], np.zeros((0, 8)), np.zeros(0), np.zeros(0, bool), CFG)
    assert empty.dup_of == {} and empty.nn_similarity.shape == (0,)
    one = find_duplicates(["a"], np.ones((1, 8)), np.ones(1), np.zeros(1, bool), CFG, text=None)
    assert one.dup_of == {} and np.isnan(one.nn_similarity[0])
    with pytest.raises(ValueError):
        find_duplicates(["a", "a"], np.ones((2, 8)), np.ones(2), np.zeros(2, bool), CFG)


def test_keep_best_order_source_pixels_then_bitrate_then_quality():
    """protected > source pixels > source bitrate > quality > id, with the reason in words."""
    vis = np.tile(np.ones(8, np.float32), (4, 1))
    vis[1:] += np.float32(1e-3) * np.arange(1, 4)[:, None]  # near, not bit-identical
    ids = ["a", "b", "c", "d"]
    size = np.array([[854, 480], [1280, 720], [1280, 720], [1280, 720]])
    rate = np.array([9e6, 2e6, 1e6, 2e6])
    quality = np.array([0.9, 0.1, 0.9, 0.5])  # measured after transcoding: misleading
    res = find_duplicates(
        ids, vis, quality, np.zeros(4, bool), CFG, source_size=size, source_bitrate=rate
    )
    # b and d tie on pixels and bitrate; d has the better quality score.
    assert res.dup_of == {"a": "d", "b": "d", "c": "d"}
    assert res.explain == {
        "a": "near: lower source resolution than d (854x480 < 1280x720)",
        "b": "near: lower quality score than d (0.100 < 0.500)",
        "c": "near: lower source bitrate than d (1000 < 2000 kb/s)",
    }
    # A protected (already sharded) low-resolution copy stays and wins the group.
    prot = np.array([True, False, False, False])
    res = find_duplicates(ids, vis, quality, prot, CFG, source_size=size, source_bitrate=rate)
    assert res.dup_of == {"b": "a", "c": "a", "d": "a"}
    assert res.explain["d"] == "near: a is already sharded (shards are append-only)"
    # Unknown source properties (older rows) rank lowest, so quality decides among them.
    res = find_duplicates(ids, vis, quality, np.zeros(4, bool), CFG)
    assert res.dup_of == {"b": "a", "c": "a", "d": "a"}
    assert res.explain["c"] == "near: same source and quality as a, which has the smaller id"
