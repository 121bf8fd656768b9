"""Clip deduplication: exact, near (visual) and semantic (SemDeDup-style) duplicates.

Pure functions over arrays; the flow loads the rows (new clips plus the already-sharded,
``protected`` ones) from LanceDB, calls :func:`find_duplicates` and writes ``dup_of`` /
``reject_reason`` back. The similarity report of what it found (nearest-neighbour
similarity histogram, share removed vs ``eps``) and its plot are in
:mod:`worldmill.tasks.dedup_report`.

Policy
------
* Edges: ``exact`` (bit-identical visual descriptors), ``near`` (visual cosine distance
  ``< cfg.eps``), ``semantic`` (see below). Duplicate groups are the connected components
  of the edge graph (union-find via ``scipy.sparse.csgraph``), so transitive groups
  A~B~C collapse to one kept clip even when A and C are not within eps of each other.
* Keep the best copy per group: every ``protected`` row is kept (it is already in a shard of
  an earlier run; shards are append-only). The group's *keeper* is the first row in this
  order: protected > higher **source** pixels (width x height of the video the clip was cut
  from) > higher source bitrate > higher quality score (NaN lowest) > smaller clip id.
  Source properties come first because every clip is transcoded to the same output size:
  a score measured after transcoding cannot tell a 720p original from its 480p copy (it
  may even favour the copy), while the source probe can; Cosmos likewise keeps the
  highest-resolution copy. Every other (non-protected) row of the group is rejected with
  ``dup_of[id] = keeper``.
* ``reason``: "exact" if the rejected row is bit-identical to its keeper's group through
  exact edges, else "near" if it is connected to the keeper by visual (exact+near) edges
  alone, else "semantic". ``explain`` says in words why the keeper won, e.g.
  ``"near: lower source resolution than <id> (854x480 < 1280x720)"`` or
  ``"near: <id> is already sharded (shards are append-only)"`` (said when the shard rule
  decided it: the rejected row would have won on merit); it becomes the
  ``clips.dup_reason`` column.

Semantic dedup and template captions
------------------------------------
SemDeDup (Abbas et al. 2023) k-means-clusters the embeddings and, inside each cluster,
removes pairs closer than ``semantic_eps``. Our default captions are template-like
("a video of ... pan left ..."), so two *different* shots often get near-identical caption
embeddings; caption similarity alone would over-merge. A semantic edge therefore needs
**both** text cosine distance ``< cfg.semantic_eps`` **and** visual cosine distance
``< semantic_visual_gate`` (default 0.3, i.e. clearly related footage, but looser than
``cfg.eps``). It catches the same scene re-cut/re-graded beyond ``eps`` with the same
description, and never merges visually unrelated clips because their captions agree.
Clustering is on the text embedding (k = ``cfg.n_clusters`` or ``ceil(sqrt(n))``); pairs
are only compared within a cluster (the SemDeDup approximation).

Scale
-----
Exhaustive search is blockwise: ``(B, D) @ (D, N)`` products of ``block`` rows at a time,
O(N^2 D) flops but O(B N) memory. It is the path for tables up to ``cfg.ann_min_rows``
candidates (20k: ~0.1 TFLOP, seconds). Above that, :mod:`worldmill.tasks.dedup_index` lets
LanceDB's ANN index produce the candidate pairs, incrementally (only clips not searched
yet are queried, against the whole indexed table), stores the pairs in the ``dup_edges``
table and passes them all to :func:`resolve_pairs`, which applies exactly the same
keep-best, protected and transitive-group rules as :func:`find_duplicates`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from prefect import task
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from worldmill.config import DedupConfig

EXACT, NEAR, SEMANTIC = "exact", "near", "semantic"
KMEANS_FIT_ROWS = 5000  # SemDeDup k-means is fitted on at most this many sampled rows
_RANK = {EXACT: 0, NEAR: 1, SEMANTIC: 2}


@dataclass
class DedupResult:
    """Outcome of a dedup pass over N rows."""

    dup_of: dict[str, str] = field(default_factory=dict)  # rejected id -> kept id
    reason: dict[str, str] = field(default_factory=dict)  # rejected id -> exact|near|semantic
    explain: dict[str, str] = field(default_factory=dict)  # rejected id -> why the keeper won
    nn_similarity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (N,)

    @property
    def rejected(self) -> set[str]:
        return set(self.dup_of)


def normalise(x: np.ndarray) -> np.ndarray:
    """Row-normalise ``(N, D)`` to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return x / np.maximum(n, 1e-12)


def pairs_within(
    vis: np.ndarray,
    vis_min_sim: float,
    idx: np.ndarray | None = None,
    text: np.ndarray | None = None,
    text_min_sim: float = -2.0,
    block: int = 2048,
    nn_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``i < j`` among rows ``idx`` with visual similarity ``> vis_min_sim`` (and
    text similarity ``> text_min_sim`` when ``text`` is given), blockwise.

    ``vis``/``text`` are unit-norm ``(N, D)``. Returns global row indices ``(P,), (P,)``.
    When ``nn_out`` (N,) is given, each row's best visual similarity to another row in
    ``idx`` is written into it.
    """
    if idx is None:
        idx = np.arange(len(vis))
    m = len(idx)
    vi = vis[idx]  # (M, D)
    ti = text[idx] if text is not None else None  # (M, Dt)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    for s in range(0, m, block):
        e = min(m, s + block)
        sv = vi[s:e] @ vi.T  # (B, M)
        rows = np.arange(e - s)
        sv[rows, rows + s] = -np.inf  # no self pairs
        if nn_out is not None:
            nn_out[idx[s:e]] = sv.max(axis=1) if m > 1 else np.nan
        bi, bj = np.nonzero(sv > vis_min_sim)  # candidate pairs (few)
        keep = bj > bi + s  # i < j only
        bi, bj = bi[keep], bj[keep]
        if ti is not None and len(bi):
            keep = np.einsum("pd,pd->p", ti[bi + s], ti[bj]) > text_min_sim
            bi, bj = bi[keep], bj[keep]
        out_i.append(idx[bi + s])
        out_j.append(idx[bj])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def _exact_pairs(vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (first occurrence, other) of bit-identical rows of ``(N, D)``."""
    if len(vis) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = np.ascontiguousarray(vis).view(np.dtype((np.void, vis.dtype.itemsize * vis.shape[1])))
    _, first, inverse = np.unique(rows.ravel(), return_index=True, return_inverse=True)
    root = first[inverse.ravel()]  # (N,) index of each row's first identical row
    others = np.nonzero(root != np.arange(len(vis)))[0]
    return root[others].astype(np.int64), others.astype(np.int64)


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label per node for an undirected edge list (union-find)."""
    if len(i) == 0:
        return np.arange(n)
    g = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def _semantic_pairs(
    vis: np.ndarray,
    text: np.ndarray,
    cfg: DedupConfig,
    visual_gate: float,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """SemDeDup: k-means on text, then gated pairs within each cluster."""
    n = len(text)
    rounded = np.ascontiguousarray(text.round(4))  # identical template captions count once
    n_distinct = len(
        np.unique(rounded.view(np.dtype((np.void, rounded.itemsize * rounded.shape[1]))))
    )
    k = cfg.n_clusters or math.ceil(math.sqrt(n))
    k = max(1, min(k, n_distinct))
    if k == 1:
        labels = np.zeros(n, dtype=np.int64)
    else:
        # The clusters only partition the search, so fit on a sample and assign everyone.
        from sklearn.cluster import KMeans

        rng = np.random.default_rng(seed)
        fit_rows = np.sort(rng.choice(n, size=min(n, KMEANS_FIT_ROWS), replace=False))
        km = KMeans(n_clusters=k, random_state=seed, n_init=1, max_iter=50)
        labels = km.fit(text[fit_rows]).predict(text)  # (N,)
    pi, pj = [], []
    for c in np.unique(labels):
        members = np.nonzero(labels == c)[0]
        if len(members) < 2:
            continue
        a, b = pairs_within(
            vis, 1.0 - visual_gate, idx=members, text=text, text_min_sim=1.0 - cfg.semantic_eps
        )
        pi.append(a)
        pj.append(b)
    if not pi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pi), np.concatenate(pj)


def resolve_pairs(
    ids: list[str],
    quality: np.ndarray,
    protected: np.ndarray,
    pairs: dict[str, tuple[np.ndarray, np.ndarray]],
    nn_similarity: np.ndarray | None = None,
    source_size: np.ndarray | None = None,
    source_bitrate: np.ndarray | None = None,
) -> DedupResult:
    """Turn duplicate pairs into keep/reject decisions.

    ``pairs`` maps a reason ("exact" | "near" | "semantic") to row-index arrays ``(i, j)``
    (``(P,)`` each, any order, duplicates allowed), e.g. from LanceDB ANN search. Applies the
    module's policy: connected components, every protected row kept, keeper = first in the
    order protected > source pixels > source bitrate > quality > smallest id.
    ``source_size`` is ``(N, 2)`` source (width, height) in pixels and ``source_bitrate``
    ``(N,)`` source bits/s; unknown (None, 0 or NaN) ranks lowest.
    """
    n = len(ids)
    quality = np.asarray(quality, dtype=np.float64).reshape(n)
    protected = np.asarray(protected, dtype=bool).reshape(n)
    size = np.zeros((n, 2)) if source_size is None else np.asarray(source_size, np.float64)
    size = np.nan_to_num(size.reshape(n, 2), nan=0.0)  # (N, 2) width, height
    pixels = size[:, 0] * size[:, 1]  # (N,)
    rate = np.zeros(n) if source_bitrate is None else np.asarray(source_bitrate, np.float64)
    rate = np.nan_to_num(rate.reshape(n), nan=0.0)  # (N,) bits/s
    nn = (
        np.full(n, np.nan, np.float32)
        if nn_similarity is None
        else np.asarray(nn_similarity, np.float32)
    )
    if n == 0:
        return DedupResult(nn_similarity=nn)

    def edges(*reasons: str) -> tuple[np.ndarray, np.ndarray]:
        got = [pairs[r] for r in reasons if r in pairs and len(pairs[r][0])]
        if not got:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return (np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got]))

    comp_all = components(n, *edges(EXACT, NEAR, SEMANTIC))
    comp_vis = components(n, *edges(EXACT, NEAR))
    comp_exact = components(n, *edges(EXACT))

    # Priority order: protected, source pixels desc, source bitrate desc, quality desc (NaN
    # last), id asc. np.lexsort sorts by its last key first.
    q = np.where(np.isfinite(quality), quality, -np.inf)
    id_rank = np.argsort(np.argsort(np.asarray(ids, dtype=object), kind="stable"), kind="stable")
    order = np.lexsort((id_rank, -q, -rate, -pixels, ~protected))  # best first
    keeper = np.full(comp_all.max() + 1, -1, dtype=np.int64)
    # The first row of each component in priority order is its keeper.
    comp_sorted = comp_all[order]
    _, first_pos = np.unique(comp_sorted, return_index=True)
    keeper[comp_sorted[first_pos]] = order[first_pos]
    keep_of = keeper[comp_all]  # (N,)

    # Rank on merit alone (no protection), to say whether protection decided a group.
    merit = np.empty(n, np.int64)
    merit[np.lexsort((id_rank, -q, -rate, -pixels))] = np.arange(n)  # 0 = best

    rejected = np.nonzero((keep_of != np.arange(n)) & ~protected)[0]
    result = DedupResult(nn_similarity=nn)
    for r in rejected:
        k = keep_of[r]
        if comp_exact[r] == comp_exact[k]:
            why = EXACT
        elif comp_vis[r] == comp_vis[k]:
            why = NEAR
        else:
            why = SEMANTIC
        result.dup_of[ids[r]] = ids[k]
        result.reason[ids[r]] = why
        if protected[k] and merit[r] < merit[k]:  # would have won, but shards are final
            detail = f"{ids[k]} is already sharded (shards are append-only)"
        elif pixels[k] > pixels[r]:
            detail = (
                f"lower source resolution than {ids[k]} ({size[r, 0]:.0f}x{size[r, 1]:.0f}"
                f" < {size[k, 0]:.0f}x{size[k, 1]:.0f})"
            )
        elif rate[k] > rate[r]:
            detail = (
                f"lower source bitrate than {ids[k]} ({rate[r] / 1e3:.0f} < {rate[k] / 1e3:.0f}"
                " kb/s)"
            )
        elif q[k] > q[r]:
            detail = f"lower quality score than {ids[k]} ({q[r]:.3f} < {q[k]:.3f})"
        else:
            detail = f"same source and quality as {ids[k]}, which has the smaller id"
        result.explain[ids[r]] = f"{why}: {detail}"
    return result


def find_duplicates(
    ids: list[str],
    visual: np.ndarray,
    quality: np.ndarray,
    protected: np.ndarray,
    cfg: DedupConfig,
    text: np.ndarray | None = None,
    *,
    semantic_visual_gate: float = 0.3,
    block: int = 2048,
    source_size: np.ndarray | None = None,
    source_bitrate: np.ndarray | None = None,
) -> DedupResult:
    """Find exact, near and semantic duplicates among N clips; keep the best copy of each.

    Args:
        ids: ``N`` clip ids (unique).
        visual: ``(N, D)`` visual descriptors (normalised here; any scale is fine).
        quality: ``(N,)`` higher is better (NaN = lowest).
        protected: ``(N,)`` bool; True for rows already sharded by an earlier run: never
            rejected, and preferred as the kept copy over any new row.
        source_size: optional ``(N, 2)`` source video (width, height); more pixels win
            before bitrate and quality.
        source_bitrate: optional ``(N,)`` source video bits/s; higher wins before quality.
        cfg: ``eps`` (visual cosine distance), ``semantic``, ``semantic_eps``, ``n_clusters``.
        text: optional ``(N, Dt)`` caption embeddings; semantic dedup runs when given and
            ``cfg.semantic``.
        semantic_visual_gate: max visual cosine distance for a semantic pair (see module doc).
        block: rows per matrix-product block (memory ~ ``block * N * 4`` bytes).

    Returns:
        :class:`DedupResult` with ``dup_of``/``reason`` for rejected ids and the ``(N,)``
        nearest-neighbour visual cosine similarity of every row (NaN when N == 1).
    """
    n = len(ids)
    if len(set(ids)) != n:
        raise ValueError("ids must be unique")
    if n == 0:
        return DedupResult(nn_similarity=np.zeros(0, np.float32))
    pairs, nn = candidate_pairs(
        visual, cfg, text, semantic_visual_gate=semantic_visual_gate, block=block
    )
    return resolve_pairs(
        ids,
        quality,
        protected,
        pairs,
        nn_similarity=nn,
        source_size=source_size,
        source_bitrate=source_bitrate,
    )


def candidate_pairs(
    visual: np.ndarray,
    cfg: DedupConfig,
    text: np.ndarray | None = None,
    *,
    semantic_visual_gate: float = 0.3,
    block: int = 2048,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Exhaustive duplicate pairs of ``(N, D)`` ``visual`` (and ``(N, Dt)`` ``text``).

    Returns ``({reason: (i, j)}, nn_similarity (N,))``: the input of :func:`resolve_pairs`
    and every row's nearest-neighbour visual cosine similarity (NaN when N == 1).
    """
    n = len(visual)
    vis_raw = np.asarray(visual, dtype=np.float32).reshape(n, -1)  # (N, D)
    vis = normalise(vis_raw)
    nn = np.full(n, np.nan, np.float32)
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {
        EXACT: _exact_pairs(vis_raw),
        NEAR: pairs_within(vis, 1.0 - cfg.eps, block=block, nn_out=nn),
    }
    if cfg.semantic and text is not None and n > 1:
        txt = normalise(np.asarray(text).reshape(n, -1))  # (N, Dt)
        pairs[SEMANTIC] = _semantic_pairs(vis, txt, cfg, semantic_visual_gate)
    return pairs, np.clip(nn, -1.0, 1.0)


# --------------------------------------------------------------------------- Prefect task


@task(name="dedup", retries=2, retry_delay_seconds=5)
def dedup_task(out: str, cfg: DedupConfig) -> dict:
    """Prefect task: dedup over the whole database (exhaustive below ``cfg.ann_min_rows``
    candidates, incremental LanceDB ANN search above; see :mod:`worldmill.tasks.dedup_index`).

    Candidates are clips that passed every filter (kept, or rejected only as duplicates in
    an earlier run, so verdicts are recomputed as new copies arrive). Clips already in a
    shard are protected: they are never rejected, a new copy of them is the duplicate.
    Returns counts, the similarity report and its plot's path
    (:mod:`worldmill.tasks.dedup_report`).
    """
    from worldmill.tasks.dedup_index import run_dedup

    return run_dedup(out, cfg)
