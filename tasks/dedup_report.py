"""The dedup similarity report: how close every clip's nearest neighbour is, and what share
of clips each ``eps`` would remove; the figures to tune ``DedupConfig.eps`` by.

:func:`similarity_report` turns the ``(N,)`` nearest-neighbour visual cosine similarities
that dedup finds (``DedupResult.nn_similarity`` of :mod:`worldmill.tasks.dedup`, stored as
``clips.nn_similarity``) into a JSON-able dict: their histogram, and per ``eps`` of a grid
the share of clips with a neighbour closer than ``eps`` and, given the descriptors, the
exact share near-dedup would remove. :func:`plot_similarity` draws it as a PNG.

Who reads it: :func:`worldmill.tasks.dedup_index.run_dedup` (behind ``dedup_task``) builds
both over the whole database on every pass, writes ``OUT/report/dedup_similarity.png`` and
returns ``report`` and ``plot`` with its counts; the curate flow (``flows/curate.py``)
passes them to the curation report (:mod:`worldmill.tasks.report`), which links the plot
and tabulates the removed-vs-eps curve in ``report.md``.
"""

from __future__ import annotations

import numpy as np

from worldmill.tasks.dedup import components, normalise, pairs_within


def similarity_report(
    nn_similarity: np.ndarray,
    eps_grid: list[float] | np.ndarray | None = None,
    *,
    visual: np.ndarray | None = None,
    bins: int = 50,
    eps: float | None = None,
) -> dict:
    """Histogram of nearest-neighbour similarities and the "fraction removed vs eps" curve.

    Returns a JSON-able dict::

        {"n": N, "n_finite": M,
         "histogram": {"bin_edges": [bins+1], "counts": [bins]},   # counts sum to M
         "eps_grid": [...],
         "fraction_with_neighbour": [...],  # share of clips whose NN distance < eps
         "fraction_removed": [...] | None,  # exact share rejected by near-dup at eps
         "eps": eps}

    ``fraction_with_neighbour`` is an upper bound of the removed share (a pair flags both
    clips, one is kept). Pass ``visual`` (the same ``(N, D)`` descriptors) to get the exact
    ``fraction_removed`` (N - number of duplicate groups, per eps; protected rows ignored).
    """
    sims = np.asarray(nn_similarity, dtype=np.float64).reshape(-1)
    n = len(sims)
    finite = sims[np.isfinite(sims)]
    grid = np.asarray(
        eps_grid if eps_grid is not None else [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3], float
    )
    lo = min(0.0, float(finite.min())) if len(finite) else 0.0
    counts, edges = np.histogram(finite, bins=bins, range=(lo, 1.0))
    with_nb = [float((finite > 1.0 - e).sum() / n) if n else 0.0 for e in grid]
    removed: list[float] | None = None
    if visual is not None:
        vis = normalise(np.asarray(visual).reshape(n, -1))
        pi, pj = pairs_within(vis, 1.0 - float(grid.max()) if len(grid) else 1.0)
        s = np.einsum("pd,pd->p", vis[pi], vis[pj]) if len(pi) else np.zeros(0)  # (P,)
        removed = []
        for e in grid:
            keep = s > 1.0 - e
            n_groups = len(np.unique(components(n, pi[keep], pj[keep]))) if n else 0
            removed.append(float((n - n_groups) / n) if n else 0.0)
    return {
        "n": n,
        "n_finite": int(len(finite)),
        "histogram": {"bin_edges": edges.tolist(), "counts": counts.astype(int).tolist()},
        "eps_grid": grid.tolist(),
        "fraction_with_neighbour": with_nb,
        "fraction_removed": removed,
        "eps": eps,
    }


def plot_similarity(report: dict, path: str) -> str:
    """Write a PNG (histogram + removal curve) of a :func:`similarity_report`. Returns path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: thread-safe, no global state

    fig = Figure(figsize=(10, 4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    edges = np.asarray(report["histogram"]["bin_edges"])
    counts = np.asarray(report["histogram"]["counts"])
    ax1.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4477aa")
    ax1.set_xlabel("nearest-neighbour cosine similarity")
    ax1.set_ylabel("clips")
    ax1.set_title(f"NN similarity (n={report['n']})")
    grid = report["eps_grid"]
    ax2.plot(grid, report["fraction_with_neighbour"], "o--", label="has a neighbour < eps")
    if report.get("fraction_removed") is not None:
        ax2.plot(grid, report["fraction_removed"], "o-", label="removed")
    if report.get("eps") is not None:
        ax1.axvline(1.0 - report["eps"], color="red", linestyle=":", label="1 - eps")
        ax2.axvline(report["eps"], color="red", linestyle=":", label="eps")
        ax1.legend()
    ax2.set_xlabel("eps (cosine distance)")
    ax2.set_ylabel("fraction of clips")
    ax2.set_ylim(0, 1)
    ax2.set_title("near-duplicate removal vs eps")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
