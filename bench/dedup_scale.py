"""Curation at scale: dedup (and the other catalogue stages) over N synthetic clip rows.

Writes N synthetic ``clips`` rows (256-d visual descriptors, 384-d caption embeddings,
captions, source properties) into a fresh LanceDB store in batches, with planted
duplicates: exact copies, near copies (visual cosine 0.96-0.995, some copies of copies so
groups are transitive) and semantic copies (visual cosine ~0.85, identical caption
embedding). Then it runs the real Prefect task functions on it.

    python bench/dedup_scale.py --clips 1000000 --json
        -> {"clips", "seconds", "recall", "peak_rss_gb", ...}

``seconds`` is the dedup pass (ANN index + candidate search + keep-best + writes);
``recall`` is the share of the exact near-duplicate pairs (visual cosine distance < eps) of
a sample of query clips, found by exhaustive search over all N, that the dedup pass found
(half the sample are planted copies, half random clips). ``peak_rss_gb`` is
``ru_maxrss`` of this process and its children.

    python bench/dedup_scale.py --clips 100000 --stages --json
        -> seconds of the catalogue stages embed (index), dedup, taxonomy at N rows
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

VIS_DIM, TEXT_DIM = 256, 384
N_CENTRES = 1000  # visual cluster centres (real descriptors are not uniformly spread)
N_TEMPLATES = 40  # caption templates (real default captions are template-like)
BATCH = 50_000  # rows generated and written per batch (bounds memory)
NOUNS = "city beach forest kitchen street river mountain office garden market".split()
VERBS = "walking driving cooking talking running flying swimming dancing reading".split()
MOVES = "pan_left pan_right zoom_in static tilt_up handheld".split()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synth_batch(start: int, n: int, seed: int) -> tuple[pa.Table, dict]:
    """``n`` rows with ids ``start..start+n-1``; duplicates point to rows of the same batch.

    Returns the rows and ``{"copies": row offsets of planted near/exact copies}``.
    """
    rng = np.random.default_rng([seed, start])
    glob = np.random.default_rng(seed)
    centres = _unit(glob.normal(size=(N_CENTRES, VIS_DIM)))  # (C, 256)
    templates = _unit(glob.normal(size=(N_TEMPLATES, TEXT_DIM)))  # (T, 384)
    # Base clips: centre component 0.5, noise ~1 -> unrelated clips of one centre ~0.2 cos.
    c = rng.integers(0, N_CENTRES, n)
    vis = _unit(0.5 * centres[c] + rng.normal(size=(n, VIS_DIM)) / np.sqrt(VIS_DIM))
    tpl = rng.integers(0, N_TEMPLATES, n)
    text = _unit(templates[tpl] + 0.5 * rng.normal(size=(n, TEXT_DIM)) / np.sqrt(TEXT_DIM))
    # Planted duplicates in the second half, each of a random earlier row of the batch
    # (which may itself be a copy: transitive chains).
    half = n // 2
    slots = rng.permutation(np.arange(half, n))
    n_near, n_exact, n_sem = int(0.05 * n), int(0.005 * n), int(0.01 * n)
    near, exact, sem = np.split(slots[: n_near + n_exact + n_sem], [n_near, n_near + n_exact])
    for rows, kind in ((np.sort(near), "near"), (exact, "exact"), (sem, "sem")):
        src = (rng.random(len(rows)) * rows).astype(np.int64)  # an earlier row
        if kind == "exact":
            vis[rows] = vis[src]
        else:
            sigma = rng.uniform(0.1, 0.28, (len(rows), 1)) if kind == "near" else 0.62
            # Sequential for near copies so a copy of a copy sees its source's final vector.
            for r, s, sg in zip(rows, src, np.broadcast_to(sigma, (len(rows), 1)), strict=True):
                g = rng.normal(size=VIS_DIM).astype(np.float32) / np.sqrt(VIS_DIM)
                v = vis[s] + sg[0] * g
                vis[r] = v / np.linalg.norm(v)
        text[rows] = text[src] if kind == "sem" else text[rows]
        tpl[rows] = tpl[src]
    words = [
        f"a video of a {NOUNS[t % 10]} {VERBS[(t // 10) % 9]} {MOVES[t % 6]}".replace("_", " ")
        for t in range(N_TEMPLATES)
    ]
    ids = [f"s{start + i:08d}_0000" for i in range(n)]
    sizes = np.array([[1920, 1080], [1280, 720], [854, 480]])[rng.integers(0, 3, n)]
    cols = {
        "clip_id": ids,
        "video_id": [i[:9] for i in ids],
        "start_s": np.zeros(n),
        "end_s": np.full(n, 4.0),
        "clip_uri": [f"/clips/{i}.mp4" for i in ids],
        "kept": np.ones(n, bool),
        "reject_reason": [""] * n,
        "quality_score": rng.uniform(0, 1, n),
        "caption": [words[t] for t in tpl],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(text.ravel()), TEXT_DIM),
        "visual_embedding": pa.FixedSizeListArray.from_arrays(pa.array(vis.ravel()), VIS_DIM),
        "source_width": sizes[:, 0].astype(np.int64),
        "source_height": sizes[:, 1].astype(np.int64),
        "source_bitrate": rng.integers(1, 20, n).astype(np.int64) * 1_000_000,
    }
    return pa.table(cols), {"copies": np.concatenate([near, exact])}


def build_store(out: str, n: int, seed: int = 0) -> np.ndarray:
    """Write ``n`` synthetic rows; returns the row numbers of the planted near/exact copies."""
    from worldmill.store import Store

    store = Store(out)
    t = store.clips(visual_dim=VIS_DIM)
    extra = [pa.field(c, pa.int64()) for c in ("source_width", "source_height", "source_bitrate")]
    t.add_columns(extra)
    schema = t.schema
    copies = []
    for start in range(0, n, BATCH):
        tab, meta = synth_batch(start, min(BATCH, n - start), seed)
        copies.append(meta["copies"] + start)
        full = {
            f.name: tab[f.name].cast(f.type)
            if f.name in tab.column_names
            else pa.array(_default(f.type, tab.num_rows), f.type)
            for f in schema
        }
        t.add(pa.table(full, schema=schema))
    return np.concatenate(copies)


def _default(typ: pa.DataType, n: int) -> list:
    if pa.types.is_string(typ):
        return [""] * n
    return [None] * n


def _vectors(out: str) -> tuple[np.ndarray, np.ndarray]:
    """All ``clip_id`` and ``(N, 256)`` visual vectors, streamed column-wise from LanceDB."""
    from worldmill.store import Store

    ids, vecs = [], []
    for b in Store(out).clip_batches(["clip_id", "visual_embedding"]):
        ids.append(b["clip_id"].to_numpy(zero_copy_only=False))
        col = b["visual_embedding"]
        vecs.append(col.flatten().to_numpy().reshape(len(col), VIS_DIM))
    return np.concatenate(ids), np.concatenate(vecs)


def exact_recall(out: str, copies: np.ndarray, eps: float, sample: int, seed: int) -> dict:
    """Recall of the stored candidate edges against exhaustive search for ``sample`` queries."""
    from worldmill.store import Store
    from worldmill.tasks.dedup import EXACT, NEAR
    from worldmill.tasks.dedup_index import EDGES

    ids, vis = _vectors(out)
    n = len(ids)
    rng = np.random.default_rng(seed + 1)
    q = np.unique(
        np.concatenate(
            [
                rng.choice(copies, min(len(copies), sample // 2), replace=False),
                rng.choice(n, sample // 2, replace=False),
            ]
        )
    )
    truth: set[tuple[str, str]] = set()
    for s in range(0, len(q), 256):
        qi = q[s : s + 256]
        sim = vis[qi] @ vis.T  # (B, N)
        sim[np.arange(len(qi)), qi] = -np.inf
        bi, bj = np.nonzero(sim > 1.0 - eps)
        truth |= {tuple(sorted((ids[qi[a]], ids[b]))) for a, b in zip(bi, bj, strict=True)}
    edges = Store(out).table(EDGES).to_arrow()
    keep = np.isin(edges["reason"].to_numpy(zero_copy_only=False), [EXACT, NEAR])
    a = edges["a"].to_numpy(zero_copy_only=False)[keep]
    b = edges["b"].to_numpy(zero_copy_only=False)[keep]
    found = {tuple(sorted(p)) for p in zip(a, b, strict=True)}
    hit = len(truth & found)
    return {"queries": len(q), "true_pairs": len(truth), "found": hit, "recall": hit / len(truth)}


def _has_edges(out: str) -> bool:
    from worldmill.store import Store

    return Store(out).has("dup_edges")


def _peak_rss_gb() -> float:
    # ru_maxrss is in KiB on Linux; children: the largest finished child.
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(me, kids) / 2**20, 3)


def _cpu_s() -> float:
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _timed(fn, *args) -> tuple[float, float, object]:
    t0, c0 = time.perf_counter(), _cpu_s()
    res = fn(*args)
    return round(time.perf_counter() - t0, 2), round(_cpu_s() - c0, 1), res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=int, default=1000, help="recall query clips")
    ap.add_argument("--stages", action="store_true", help="time embed/dedup/taxonomy")
    ap.add_argument("--out", default="", help="store root (default: a temp dir, removed)")
    ap.add_argument("--ann-min-rows", type=int, default=None, help="dedup.ann_min_rows")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from worldmill.config import DedupConfig, EmbedConfig, TaxonomyConfig
    from worldmill.tasks.dedup import dedup_task
    from worldmill.tasks.embed import embed_task
    from worldmill.tasks.taxonomy import taxonomy_task

    out = args.out or tempfile.mkdtemp(prefix="dedup_scale_")
    try:
        build_s, _, copies = _timed(build_store, out, args.clips, args.seed)
        result: dict = {"clips": args.clips, "build_s": build_s}
        if args.stages:
            for name, fn, cfg in (
                ("embed", embed_task.fn, EmbedConfig()),
                ("dedup", dedup_task.fn, DedupConfig()),
                ("taxonomy", taxonomy_task.fn, TaxonomyConfig()),
            ):
                wall, cpu, _ = _timed(fn, out, cfg)
                result[f"{name}_s"], result[f"{name}_cpu_s"] = wall, cpu
                print(name, wall, "s", file=sys.stderr, flush=True)
            result["seconds"] = round(sum(result[f"{s}_s"] for s in ("embed", "dedup")), 2)
            result["cpu_seconds"] = round(sum(result[f"{s}_cpu_s"] for s in ("embed", "dedup")), 1)
            if _has_edges(out):  # the ANN-era code: measure recall too
                rec = exact_recall(out, copies, DedupConfig().eps, args.sample, args.seed)
                result["recall"] = round(rec["recall"], 4)
                result["recall_detail"] = rec
        else:
            cfg = DedupConfig(**({"ann_min_rows": args.ann_min_rows} if args.ann_min_rows else {}))
            idx_s, idx_cpu, _ = _timed(embed_task.fn, out, EmbedConfig())  # builds the index
            dd_s, dd_cpu, info = _timed(dedup_task.fn, out, cfg)
            result.update(
                seconds=round(idx_s + dd_s, 2),
                cpu_seconds=round(idx_cpu + dd_cpu, 1),
                index_s=idx_s,
                dedup_s=dd_s,
                duplicates=info["duplicates"],
                by_reason=info.get("by_reason"),
                path=info.get("path"),
                searched=info.get("searched"),
            )
            rec = exact_recall(out, copies, cfg.eps, args.sample, args.seed)
            result["recall"] = round(rec["recall"], 4)
            result["recall_detail"] = rec
        result["peak_rss_gb"] = _peak_rss_gb()
        result["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
