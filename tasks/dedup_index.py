"""Dedup over the LanceDB store: exhaustive for small tables, incremental ANN for large ones.

The pure policy (pairs -> keep-best decisions) is :mod:`worldmill.tasks.dedup`; this module
finds the pairs over the ``clips`` table and writes the verdicts back.

Candidate pairs are kept in the ``dup_edges`` table (``a``, ``b``, ``reason``; ``a < b``),
and every searched clip carries its nearest-neighbour visual similarity in
``clips.nn_similarity`` (NULL = not searched yet). Each pass:

1. Up to ``cfg.ann_min_rows`` candidates: exhaustive search over all of them
   (:func:`~worldmill.tasks.dedup.candidate_pairs`); ``dup_edges`` is rewritten.
2. Above: only candidates with ``nn_similarity IS NULL`` (new or re-processed clips) are
   searched, as query batches, against the whole table through its cosine IVF_PQ index
   (``ann_neighbours`` per clip, ``ann_nprobes`` partitions); the index's PQ distances
   only rank, the neighbours are re-scored exactly on the full vectors (streamed once
   into an ``(N, D)`` float32 array: 1 GB at 1M x 256) before the ``eps`` cut. Pairs with distance < ``eps`` are ``near`` (and
   ``exact`` when the vectors are bit-identical); pairs within ``semantic_visual_gate``
   whose caption embeddings are within ``semantic_eps`` are ``semantic`` (the same gated
   rule as SemDeDup's, applied to each clip's visual neighbours instead of within text
   clusters). Edges of the searched clips replace their old ones, so a re-run after a
   crash repeats the search of the same clips and ends in the same state.
3. All stored edges between current candidates go to
   :func:`~worldmill.tasks.dedup.resolve_pairs` (connected components, protected rows,
   keep-best order), and only rows whose verdict changed are written, column-wise.

A change of ``eps``/``semantic*`` (kept in the edge table's schema metadata) starts the
search over. Edges between two old clips were found when the later of them was searched,
so the incremental result equals a full search up to the ANN recall.
"""

from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from worldmill.config import DedupConfig
from worldmill.store import Store, _in
from worldmill.tasks.dedup import (
    EXACT,
    NEAR,
    SEMANTIC,
    candidate_pairs,
    normalise,
    resolve_pairs,
)
from worldmill.tasks.dedup_report import plot_similarity, similarity_report

EDGES = "dup_edges"
NN_COL = "nn_similarity"
DUPLICATE_REASON = "duplicate"
SOURCE_COLS = ("source_width", "source_height", "source_bitrate")
CANDIDATE = "(kept = true OR reject_reason = 'duplicate') AND visual_embedding IS NOT NULL"
_GATED = "gated"  # a visual pair within semantic_visual_gate, caption not checked yet
FETCH_MAX = 20_000  # up to this many caption vectors are fetched by id, else streamed
EDGE_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string()), ("reason", pa.string())])
QUERY_BATCH = 1000  # query vectors per LanceDB search call
SEARCH_THREADS = max(1, min(4, os.cpu_count() or 1))  # query batches in flight at once
READ_BATCH = 50_000  # rows per streamed Arrow batch


def _params(cfg: DedupConfig) -> str:
    keys = ("eps", "semantic", "semantic_eps", "semantic_visual_gate")
    return json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True)


def _num(tab: pa.Table, name: str, default: float = np.nan) -> np.ndarray:
    """Column as float64 numpy (nulls -> ``default``; missing column -> all ``default``)."""
    if name not in tab.column_names:
        return np.full(tab.num_rows, default)
    return np.array(tab[name].cast(pa.float64()).fill_null(default).to_numpy(), copy=True)


def _str(tab: pa.Table, name: str) -> np.ndarray:
    if name not in tab.column_names:
        return np.full(tab.num_rows, "", dtype=object)
    return tab[name].fill_null("").to_numpy(zero_copy_only=False)


def _vectors(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Fixed-size-list column -> ``(N, D)`` float32 without Python lists."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), arr.type.list_size)


class _Ids:
    """clip_id -> candidate row, vectorised (sorted array + searchsorted)."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]

    def rows(self, q: np.ndarray) -> np.ndarray:
        """Row of each id in ``q`` (-1 when not a candidate)."""
        q = np.asarray(q, dtype=self.sorted.dtype)
        if len(self.sorted) == 0 or len(q) == 0:
            return np.full(len(q), -1, np.int64)
        pos = np.minimum(np.searchsorted(self.sorted, q), len(self.sorted) - 1)
        return np.where(self.sorted[pos] == q, self.order[pos], -1).astype(np.int64)


def _dim(col: pa.Array | pa.ChunkedArray) -> int:
    return col.type.list_size


def _write_edges(store: Store, a: np.ndarray, b: np.ndarray, why: np.ndarray, params: str):
    """Replace ``dup_edges`` by the given edges (one atomic new table version)."""
    a, b, why = a.astype(str), b.astype(str), why.astype(str)
    lo, hi = np.where(a < b, a, b), np.where(a < b, b, a)
    tab = pa.table({"a": lo, "b": hi, "reason": why}, schema=EDGE_SCHEMA)
    if tab.num_rows:  # one row per (pair, reason)
        key = np.char.add(np.char.add(np.char.add(lo, "\t"), np.char.add(why, "\t")), hi)
        tab = tab.take(np.unique(key, return_index=True)[1])
    schema = EDGE_SCHEMA.with_metadata({"params": params})
    store.db.create_table(EDGES, tab.cast(schema), schema=schema, mode="overwrite")


def _exact_search(store: Store, cand: pa.Table, cfg: DedupConfig) -> tuple[np.ndarray, dict]:
    """Exhaustive pairs of all candidates (rows of ``cand`` include the vectors)."""
    n = cand.num_rows
    vis = _vectors(cand["visual_embedding"])  # (N, D)
    text = None
    if cfg.semantic and "embedding" in cand.column_names and cand["embedding"].null_count == 0:
        text = _vectors(cand["embedding"])  # (N, 384)
    pairs, nn = candidate_pairs(vis, cfg, text, semantic_visual_gate=cfg.semantic_visual_gate)
    ids = _str(cand, "clip_id")
    a, b, why = [], [], []
    for reason, (i, j) in pairs.items():
        a.append(ids[i])
        b.append(ids[j])
        why.append(np.full(len(i), reason, dtype=object))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, object)  # noqa: E731
    _write_edges(store, cat(a), cat(b), cat(why), _params(cfg))
    nn = nn.astype(np.float64)
    old = _num(cand, NN_COL)
    stored = np.zeros(n, bool)
    if NN_COL in cand.column_names:
        stored = pc.is_valid(cand[NN_COL]).to_numpy(zero_copy_only=False)
    same = stored & ((old == nn) | (np.isnan(old) & np.isnan(nn)))
    store.update_clip_columns({"clip_id": ids[~same], NN_COL: nn[~same]})
    return nn, {"searched": n, "path": "exact"}


def _semantic(store: Store, a: np.ndarray, b: np.ndarray, cfg: DedupConfig) -> tuple:
    """The gated visual pairs ``(a, b)`` whose caption embeddings are within
    ``semantic_eps``; captions fetched by id when few, else streamed once."""
    if not cfg.semantic or len(a) == 0:
        return np.zeros(0, object), np.zeros(0, object)
    need = np.unique(np.concatenate([a, b]).astype(str))
    text: dict[str, np.ndarray] = {}
    if len(need) <= FETCH_MAX:
        for s in range(0, len(need), 2000):
            where = _in("clip_id", need[s : s + 2000].tolist())
            text.update(_text_rows(store.clip_table(["clip_id", "embedding"], where=where)))
    else:
        for batch in store.clip_batches(["clip_id", "embedding"], CANDIDATE, READ_BATCH):
            tab = pa.Table.from_batches([batch])
            tab = tab.filter(pc.is_in(tab["clip_id"], value_set=pa.array(need)))
            text.update(_text_rows(tab))
    has = np.array([x in text and y in text for x, y in zip(a, b, strict=True)], bool)
    sem = np.zeros(len(a), bool)
    if has.any():
        at = normalise(np.stack([text[x] for x in a[has]]))  # (P, Dt)
        bt = normalise(np.stack([text[y] for y in b[has]]))  # (P, Dt)
        sem[has] = np.einsum("pd,pd->p", at, bt) > 1.0 - cfg.semantic_eps
    return a[sem], b[sem]


def _text_rows(tab: pa.Table) -> dict[str, np.ndarray]:
    tab = tab.filter(pc.is_valid(tab["embedding"]))
    if tab.num_rows == 0:
        return {}
    return dict(zip(tab["clip_id"].to_pylist(), _vectors(tab["embedding"]), strict=True))


def _ann_search(store: Store, cand: pa.Table, cfg: DedupConfig) -> tuple[np.ndarray, dict]:
    """Search the not-yet-searched candidates against the indexed table (module doc)."""
    ids = _str(cand, "clip_id").astype(str)
    lookup = _Ids(ids)
    params = _params(cfg)
    edges_t = store.table(EDGES)
    meta = (edges_t.schema.metadata or {}) if edges_t is not None else {}
    reset = edges_t is None or meta.get(b"params", b"").decode() != params
    before = _num(cand, NN_COL)  # (N,) NaN = none yet
    nn = before.copy()
    todo = (
        np.ones(len(ids), bool)
        if reset
        else ~pc.is_valid(cand[NN_COL]).to_numpy(zero_copy_only=False)
        if NN_COL in cand.column_names
        else np.ones(len(ids), bool)
    )
    ea, eb, er = [], [], []
    if todo.any():
        store.ensure_vector_index("visual_embedding", min_rows=1)
        t = store.clips()
        vis = _candidate_vectors(store, lookup)  # (N, D) for the exact re-rank
        q_rows = np.nonzero(todo)[0]
        parts = [q_rows[s : s + QUERY_BATCH] for s in range(0, len(q_rows), QUERY_BATCH)]
        for part, res in _searched(t, parts, vis, cfg):
            got = _score_part(res, part, ids, vis, lookup, nn, cfg)
            for arr, new in zip((ea, eb, er), got, strict=True):
                arr.append(new)
        del vis
        gated = np.concatenate(er) == _GATED if er else np.zeros(0, bool)
        sem = _semantic(store, np.concatenate(ea)[gated], np.concatenate(eb)[gated], cfg)
        ea, eb, er = (
            [np.concatenate(ea)[~gated], sem[0]],
            [np.concatenate(eb)[~gated], sem[1]],
            [np.concatenate(er)[~gated], np.full(len(sem[0]), SEMANTIC, dtype=object)],
        )
    keep_old = np.zeros(0, bool)
    if not reset:
        old = edges_t.to_arrow()
        oa, ob = _str(old, "a").astype(str), _str(old, "b").astype(str)
        ra, rb = lookup.rows(oa), lookup.rows(ob)
        keep_old = (ra >= 0) & (rb >= 0)
        keep_old[keep_old] &= ~todo[ra[keep_old]] & ~todo[rb[keep_old]]
        ea.append(oa[keep_old])
        eb.append(ob[keep_old])
        er.append(_str(old, "reason")[keep_old])
    if todo.any() or reset or len(keep_old) != int(keep_old.sum()):
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, object)  # noqa: E731
        _write_edges(store, cat(ea).astype(object), cat(eb).astype(object), cat(er), params)
    # nn of every searched row, and of old rows that a new neighbour came closer to.
    grew = todo | (np.nan_to_num(nn, nan=-9) > np.nan_to_num(before, nan=-9))
    store.update_clip_columns({"clip_id": ids[grew], NN_COL: nn[grew]})
    return nn, {"searched": int(todo.sum()), "path": "ann"}


def _candidate_vectors(store: Store, lookup: _Ids) -> np.ndarray:
    """``(N, D)`` float32 visual vectors of the candidates in ``lookup`` order, streamed
    (1M x 256-d is 1 GB; no Python lists)."""
    vis = None
    for batch in store.clip_batches(["clip_id", "visual_embedding"], CANDIDATE, READ_BATCH):
        v = _vectors(batch["visual_embedding"])  # (B, D)
        if vis is None:
            vis = np.zeros((len(lookup.ids), v.shape[1]), np.float32)
        vis[lookup.rows(batch["clip_id"].to_numpy(zero_copy_only=False).astype(str))] = v
    return vis if vis is not None else np.zeros((0, 1), np.float32)


def _query(t, q_vis: np.ndarray, cfg: DedupConfig) -> pa.Table:
    """One LanceDB multi-vector query: ``ann_neighbours`` rows per query vector
    (``query_index``, ``clip_id``, ``_distance``)."""
    return (
        t.search(q_vis, vector_column_name="visual_embedding")
        .distance_type("cosine")
        .limit(cfg.ann_neighbours)
        .nprobes(cfg.ann_nprobes)
        .select(["clip_id", "_distance"])
        .to_arrow()
    )


def _searched(t, parts: list[np.ndarray], vis: np.ndarray, cfg: DedupConfig):
    """``(rows, result)`` of every query batch in ``parts``, in order. Each LanceDB query
    runs its search on one thread, so ``SEARCH_THREADS`` batches are kept in flight while
    this thread re-scores the finished ones (at 1M rows the search is most of the time)."""
    with ThreadPoolExecutor(SEARCH_THREADS) as pool:
        flight: deque = deque()
        for part in parts:
            flight.append((part, pool.submit(_query, t, vis[part], cfg)))
            if len(flight) > SEARCH_THREADS:
                done, fut = flight.popleft()
                yield done, fut.result()
        while flight:
            done, fut = flight.popleft()
            yield done, fut.result()


def _score_part(
    res: pa.Table,
    q_rows: np.ndarray,
    ids: np.ndarray,
    vis: np.ndarray,
    lookup: _Ids,
    nn: np.ndarray,
    cfg: DedupConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(a ids, b ids, reasons)`` of one query batch's result for candidate rows
    ``q_rows``; updates ``nn``. The index's (PQ-approximate) distances only rank; the
    returned neighbours are re-scored exactly on ``vis`` before the eps cut."""
    qi = res["query_index"].to_numpy().astype(np.int64)  # (R,) index into q_rows
    nrow = lookup.rows(res["clip_id"].to_numpy(zero_copy_only=False).astype(str))  # (R,)
    qrow = q_rows[qi]
    ok = (nrow >= 0) & (nrow != qrow)  # other candidates only
    qrow, nrow = qrow[ok], nrow[ok]
    key = np.unique(np.minimum(qrow, nrow) * len(ids) + np.maximum(qrow, nrow))
    qrow, nrow = key // len(ids), key % len(ids)  # each pair once
    vq, vn = normalise(vis[qrow]), normalise(vis[nrow])
    sim = np.einsum("pd,pd->p", vq, vn).astype(np.float64)  # (P,) exact cosine
    cur = np.where(np.isnan(nn), -np.inf, nn)
    np.maximum.at(cur, qrow, sim)
    np.maximum.at(cur, nrow, sim)
    hit = np.isfinite(cur)
    nn[hit] = np.clip(cur[hit], -1.0, 1.0)
    near = sim > 1.0 - cfg.eps
    same = near & np.all(vis[qrow] == vis[nrow], axis=1)  # bit-identical copies
    a = [ids[qrow[near]], ids[qrow[same]]]
    b = [ids[nrow[near]], ids[nrow[same]]]
    why = [
        np.full(int(near.sum()), NEAR, dtype=object),
        np.full(int(same.sum()), EXACT, dtype=object),
    ]
    gate = sim > 1.0 - cfg.semantic_visual_gate  # semantic candidates, checked at the end
    a.append(ids[qrow[gate]])
    b.append(ids[nrow[gate]])
    why.append(np.full(int(gate.sum()), _GATED, dtype=object))
    return np.concatenate(a), np.concatenate(b), np.concatenate(why)


def run_dedup(out: str, cfg: DedupConfig) -> dict:
    """Dedup pass over the store at ``out`` (see module doc). Returns counts, the
    similarity report and its plot's path."""
    store = Store(out)
    t = store.clips()
    if t is None:
        return {"candidates": 0, "duplicates": 0}
    have = set(t.schema.names)
    cols = ["clip_id", "kept", "reject_reason", "dup_of", "quality_score", "shard"]
    cols += [c for c in ("dup_reason", NN_COL, *SOURCE_COLS) if c in have]
    n = t.count_rows(CANDIDATE)
    if n == 0:
        return {"candidates": 0, "duplicates": 0}
    exact = n <= cfg.ann_min_rows
    vec_cols = ["visual_embedding"] + (["embedding"] if cfg.semantic else []) if exact else []
    cand = store.clip_table(cols + vec_cols, where=CANDIDATE)
    nn, info = (_exact_search if exact else _ann_search)(store, cand, cfg)

    # Resolve every stored edge between current candidates.
    ids = _str(cand, "clip_id").astype(str)
    lookup = _Ids(ids)
    edges = store.table(EDGES).to_arrow()
    ra = lookup.rows(_str(edges, "a").astype(str))
    rb = lookup.rows(_str(edges, "b").astype(str))
    ok = (ra >= 0) & (rb >= 0)
    ra, rb, why = ra[ok], rb[ok], _str(edges, "reason")[ok]
    nodes = np.unique(np.concatenate([ra, rb]))  # rows in some pair (the rest keep)
    la, lb = np.searchsorted(nodes, ra), np.searchsorted(nodes, rb)
    pairs = {r: (la[why == r], lb[why == r]) for r in (EXACT, NEAR, SEMANTIC)}
    res = resolve_pairs(
        ids[nodes].tolist(),
        _num(cand, "quality_score")[nodes],
        np.asarray(_str(cand, "shard")[nodes] != "", bool),
        pairs,
        source_size=np.stack(
            [_num(cand, "source_width", 0.0)[nodes], _num(cand, "source_height", 0.0)[nodes]], 1
        ),
        source_bitrate=_num(cand, "source_bitrate", 0.0)[nodes],
    )
    changed = _write_verdicts(store, cand, ids, res)
    report = similarity_report(
        nn, visual=_vectors(cand["visual_embedding"]) if exact else None, eps=cfg.eps
    )
    os.makedirs(os.path.join(out, "report"), exist_ok=True)
    plot = plot_similarity(report, os.path.join(out, "report", "dedup_similarity.png"))
    return {
        "candidates": n,
        "duplicates": len(res.dup_of),
        "by_reason": {
            k: sum(1 for v in res.reason.values() if v == k) for k in set(res.reason.values())
        },
        "changed": changed,
        **info,
        "report": report,
        "plot": plot,
    }


def _write_verdicts(store: Store, cand: pa.Table, ids: np.ndarray, res) -> int:
    """Write ``kept/reject_reason/dup_of/dup_reason`` of the rows whose verdict changed."""
    n = len(ids)
    dup_of = np.full(n, "", dtype=object)
    explain = np.full(n, "", dtype=object)
    if res.dup_of:
        rows = _Ids(ids).rows(np.asarray(list(res.dup_of), dtype=str))
        dup_of[rows] = list(res.dup_of.values())
        explain[rows] = [res.explain[i] for i in res.dup_of]
    is_dup = dup_of != ""
    kept = cand["kept"].fill_null(False).to_numpy(zero_copy_only=False)
    reason = _str(cand, "reject_reason")
    stale = (
        kept
        | (reason != DUPLICATE_REASON)
        | (_str(cand, "dup_of") != dup_of)
        | (_str(cand, "dup_reason") != explain)
    )
    changed = (is_dup & stale) | (~is_dup & (reason == DUPLICATE_REASON))  # back in
    store.update_clip_columns(
        {
            "clip_id": ids[changed],
            "kept": ~is_dup[changed],
            "reject_reason": np.where(is_dup[changed], DUPLICATE_REASON, ""),
            "dup_of": dup_of[changed],
            "dup_reason": explain[changed],
        }
    )
    return int(changed.sum())
