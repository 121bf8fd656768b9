"""Dedup over the LanceDB store: the ANN candidate path (real LanceDB IVF_PQ index) gives
the same groups and keep-best decisions as the exhaustive path on a planted corpus, and an
incremental second batch searches only the new clips."""

from __future__ import annotations

import numpy as np
import pytest

from worldmill.config import DedupConfig
from worldmill.records import Clip
from worldmill.store import Store
from worldmill.tasks.dedup_index import EDGES, NN_COL, run_dedup

D, DT = 64, 384  # DT: the clips schema's caption-embedding width
EXACT_CFG = DedupConfig(ann_min_rows=10**9)  # always exhaustive
ANN_CFG = DedupConfig(ann_min_rows=1)  # always the ANN path


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def planted(n: int, seed: int, start: int = 0, sources: tuple | None = None) -> tuple:
    """``n`` clips: 85 % distinct, 10 % near copies (some copies of copies), 2 % exact
    copies, 3 % semantic copies (visual cos ~0.85, same caption embedding). Copies point to
    earlier rows of this batch or to ``sources`` (vis, text) of an earlier batch."""
    rng = np.random.default_rng(seed)
    centres = _unit(np.random.default_rng(99).normal(size=(20, D)))
    vis = _unit(0.5 * centres[rng.integers(0, 20, n)] + rng.normal(size=(n, D)) / np.sqrt(D))
    text = _unit(rng.normal(size=(n, DT)))
    pool_vis = vis if sources is None else np.concatenate([sources[0], vis])
    pool_txt = text if sources is None else np.concatenate([sources[1], text])
    off = 0 if sources is None else len(sources[0])
    kinds = rng.permutation(["near"] * (n // 10) + ["exact"] * (n // 50) + ["sem"] * (n * 3 // 100))
    rows = np.sort(rng.choice(np.arange(n // 4, n), len(kinds), replace=False))
    for r, kind in zip(rows, kinds, strict=True):
        src = int(rng.integers(0, off + r))  # any earlier clip
        g = rng.normal(size=D) / np.sqrt(D)
        if kind == "exact":
            v = pool_vis[src]
        else:
            v = _unit(pool_vis[src] + (rng.uniform(0.1, 0.25) if kind == "near" else 0.62) * g)
        vis[r] = pool_vis[off + r] = v
        if kind == "sem":
            text[r] = pool_txt[off + r] = pool_txt[src]
    clips = []
    for i in range(n):
        cid = f"v{start + i:05d}_0000"
        c = Clip(cid, cid[:6], 0.0, 2.0, kept=True, visual_embedding=vis[i].tolist())
        c.embedding = text[i].tolist()
        c.quality_score = float(rng.uniform())
        c.extra = {
            "source_width": int(rng.choice([854, 1280])),
            "source_height": 720,
            "source_bitrate": int(rng.integers(1, 5)) * 1_000_000,
        }
        clips.append(c)
    return clips, (vis, text)


def _fill(out, clips, protect: int = 0) -> Store:
    s = Store(out)
    s.replace_clips([], clips)
    if protect:  # the first rows are in a shard of an earlier run
        s.update_clips([{"clip_id": c.clip_id, "shard": "s-000"} for c in clips[:protect]])
    return s


def _verdicts(s: Store) -> dict:
    rows = s.clip_rows(["clip_id", "kept", "dup_of", "dup_reason"])
    return {r["clip_id"]: (r["kept"], r["dup_of"] or "", r["dup_reason"] or "") for r in rows}


@pytest.fixture(scope="module")
def batches():
    first, src = planted(2000, seed=0)
    second, _ = planted(400, seed=1, start=2000, sources=src)
    return first, second


def test_ann_path_matches_exhaustive_decisions(batches, tmp_path):
    clips = batches[0]
    exact = _fill(tmp_path / "exact", clips, protect=300)
    info_e = run_dedup(str(tmp_path / "exact"), EXACT_CFG)
    ann = _fill(tmp_path / "ann", clips, protect=300)
    info_a = run_dedup(str(tmp_path / "ann"), ANN_CFG)
    assert info_e["path"] == "exact" and info_a["path"] == "ann"
    assert info_a["searched"] == len(clips)
    assert ann.clips().list_indices(), "the ANN path runs on a real LanceDB index"
    got, want = _verdicts(ann), _verdicts(exact)
    assert info_e["duplicates"] > 200  # the corpus plants ~14 % copies
    assert set(info_e["by_reason"]) == {"exact", "near", "semantic"}
    assert got == want
    assert info_a["by_reason"] == info_e["by_reason"]
    # Protected (sharded) rows are never rejected.
    assert all(got[c.clip_id][0] for c in clips[:300])
    assert ann.count("clips", f"{NN_COL} IS NULL") == 0


def test_second_batch_searches_only_new_clips(batches, tmp_path):
    first, second = batches
    s = _fill(tmp_path / "inc", first, protect=300)
    assert run_dedup(str(tmp_path / "inc"), ANN_CFG)["searched"] == len(first)
    s.replace_clips([], second)
    info = run_dedup(str(tmp_path / "inc"), ANN_CFG)
    assert info["searched"] == len(second)
    # Same decisions as one exhaustive pass over both batches.
    full = _fill(tmp_path / "full", first + second, protect=300)
    run_dedup(str(tmp_path / "full"), EXACT_CFG)
    assert _verdicts(s) == _verdicts(full)
    # Nothing new: nothing searched, nothing changed; the edges stay.
    n_edges = s.table(EDGES).count_rows()
    again = run_dedup(str(tmp_path / "inc"), ANN_CFG)
    assert again["searched"] == 0 and again["changed"] == 0
    assert s.table(EDGES).count_rows() == n_edges
    # Another eps: the stored pairs no longer apply, everything is searched again.
    assert run_dedup(str(tmp_path / "inc"), DedupConfig(ann_min_rows=1, eps=0.04))[
        "searched"
    ] == len(first) + len(second)
