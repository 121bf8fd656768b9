"""Topic taxonomy of the kept clips: k-means on caption embeddings + c-TF-IDF labels.

* k: ``cfg.n_topics`` when > 0, else chosen from the data: the best cosine silhouette over
  k = 2 .. min(10, n-1) (plus ``round(sqrt(n/2))`` for large n), scored on at most 2000
  sampled rows; the final k-means is fitted on at most 5000 sampled rows, then every clip
  is assigned (in chunks; the Prefect task streams the embeddings from LanceDB in
  batches, so 1M x 384-d clips never sit in memory at once); k = 1 when no k reaches a silhouette of ``MIN_SILHOUETTE`` (the
  captions do not form separate groups). n = 1 -> one topic; n = 2 -> two topics only when
  the two captions are far apart (cosine distance > 0.5).
* Deterministic: fixed seeds; topics are numbered by size (0 = largest), ties by smallest
  clip id.
* Labels: class-based TF-IDF (c-TF-IDF, as in BERTopic) of the captions of each topic over
  unigrams and bigrams, English stop words removed; the top ``cfg.labels_per_topic``
  terms joined by " · ", skipping terms that overlap an already chosen one (so "pan left"
  is not followed by "pan"). Topics whose captions have no usable words are "topic <i>".
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from prefect import task

from worldmill.config import TaxonomyConfig
from worldmill.tasks.dedup import normalise

MIN_SILHOUETTE = 0.1
FIT_ROWS = 5000  # k-means is fitted on at most this many sampled rows (then all assigned)
ASSIGN_CHUNK = 50_000  # rows per k-means assignment chunk (and per streamed read batch)
SEP = " · "
_TOKEN = r"(?u)\b[^\W\d_][^\W\d_]+\b"  # words of >= 2 letters, no digits


def _n_distinct(x: np.ndarray) -> int:
    r = np.ascontiguousarray(x.round(5))
    return len(np.unique(r.view(np.dtype((np.void, r.itemsize * r.shape[1])))))


def _fit(x: np.ndarray, k: int, seed: int = 0, fit_rows: int = FIT_ROWS):
    """k-means fitted on at most ``fit_rows`` sampled rows of ``(N, D)`` ``x``."""
    from sklearn.cluster import KMeans

    n = len(x)
    rows = np.arange(n)
    if n > fit_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, fit_rows, replace=False))
    return KMeans(n_clusters=k, random_state=seed, n_init=4).fit(x[rows])


def _assign(km, x: np.ndarray, chunk: int = ASSIGN_CHUNK) -> np.ndarray:
    """Nearest k-means centre of each row of ``(N, D)`` ``x``, ``chunk`` rows at a time."""
    return np.concatenate(
        [km.predict(x[s : s + chunk]) for s in range(0, len(x), chunk)] or [np.zeros(0, int)]
    )


def _kmeans(x: np.ndarray, k: int, seed: int = 0, fit_rows: int = FIT_ROWS) -> np.ndarray:
    """k-means labels ``(N,)``; fitted on at most ``fit_rows`` sampled rows, then assigned."""
    return _assign(_fit(x, k, seed, fit_rows), x)


def choose_k(x: np.ndarray, max_k: int = 10, seed: int = 0, n_total: int | None = None) -> int:
    """Number of topics for unit-norm ``(N, D)`` embeddings (see module doc).

    ``x`` may be a sample of ``n_total`` rows (the ``sqrt(n/2)`` candidate uses ``n_total``).
    """
    from sklearn.metrics import silhouette_score

    n = len(x) if n_total is None else n_total
    n_distinct = _n_distinct(x)
    if n <= 1 or n_distinct <= 1:
        return 1
    if n == 2:
        return 2 if float(x[0] @ x[1]) < 0.5 else 1
    hi = min(max_k, n - 1, n_distinct)
    ks = set(range(2, hi + 1))
    if n > 200:
        ks.add(min(n_distinct, max(2, round(math.sqrt(n / 2)))))
    best_k, best_s = 1, MIN_SILHOUETTE
    if len(x) > 2000:  # score candidate k on a sample
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), 2000, replace=False))]
    for k in sorted(ks):
        labels = _kmeans(x, k, seed)
        if len(np.unique(labels)) < 2:
            continue
        s = silhouette_score(x, labels, metric="cosine")
        if s > best_s + 1e-9:
            best_k, best_s = k, float(s)
    return best_k


def _overlaps(term: str, chosen: list[str]) -> bool:
    words = set(term.split())
    return any(words & set(c.split()) for c in chosen)


def topic_labels(captions: list[str], labels: np.ndarray, n_terms: int) -> dict[int, str]:
    """c-TF-IDF labels: ``{topic: "term · term · term"}`` for topics ``0..max(labels)``."""
    from sklearn.feature_extraction.text import CountVectorizer

    labels = np.asarray(labels)
    topics = sorted(int(t) for t in np.unique(labels))
    # One document per topic: its captions in input order (one stable sort, not K scans).
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], topics + [topics[-1] + 1] if topics else [])
    docs = [
        " ".join(captions[i] for i in order[bounds[m] : bounds[m + 1]]) for m in range(len(topics))
    ]
    out = {t: f"topic {t}" for t in topics}
    try:
        vec = CountVectorizer(
            stop_words="english", ngram_range=(1, 2), token_pattern=_TOKEN, lowercase=True
        )
        tf = vec.fit_transform(docs).toarray().astype(np.float64)  # (K, V)
    except ValueError:  # empty vocabulary: no usable words at all
        return out
    terms = vec.get_feature_names_out()
    words_per_topic = tf.sum(axis=1, keepdims=True)  # (K, 1)
    avg_words = float(words_per_topic.mean())
    idf = np.log1p(avg_words / np.maximum(tf.sum(axis=0), 1e-12))  # (V,)
    score = tf / np.maximum(words_per_topic, 1e-12) * idf  # (K, V)
    # Prefer bigrams slightly on ties, then alphabetical (np.lexsort: last key is primary).
    n_words = np.array([len(t.split()) for t in terms])
    for row, t in enumerate(topics):
        order = np.lexsort((terms, -n_words, -score[row]))
        chosen: list[str] = []
        for j in order:
            if score[row, j] <= 0 or len(chosen) >= n_terms:
                break
            if not _overlaps(terms[j], chosen):
                chosen.append(str(terms[j]))
        if chosen:
            out[t] = SEP.join(chosen)
    return out


def build_taxonomy(
    ids: list[str], captions: list[str], text_emb: np.ndarray, cfg: TaxonomyConfig
) -> dict[str, tuple[int, str]]:
    """Cluster clips by caption embedding and label each cluster.

    Args:
        ids: ``N`` clip ids.
        captions: ``N`` captions (may be empty strings).
        text_emb: ``(N, D)`` caption embeddings (normalised here).
        cfg: ``n_topics`` (0 = choose from the data), ``labels_per_topic``.

    Returns:
        ``{clip_id: (topic, label)}``; topics are ``0..K-1`` numbered by size.
    """
    n = len(ids)
    if len(captions) != n:
        raise ValueError(f"{n} ids but {len(captions)} captions")
    if n == 0:
        return {}
    x = normalise(np.asarray(text_emb).reshape(n, -1))  # (N, D)
    km = _fit_topics(x, n, cfg)
    raw = np.zeros(n, dtype=np.int64) if km is None else _assign(km, x)  # (N,)
    topics = _renumber(np.asarray(ids, dtype=str), raw)
    names = topic_labels(captions, topics, cfg.labels_per_topic)
    return {i: (int(t), names[int(t)]) for i, t in zip(ids, topics, strict=True)}


def _fit_topics(sample: np.ndarray, n: int, cfg: TaxonomyConfig):
    """k-means model over unit-norm ``sample`` (all rows when ``n`` <= ``FIT_ROWS``, else a
    seeded sample of the ``n``), or None for a single topic."""
    if cfg.n_topics > 0:
        k = max(1, min(cfg.n_topics, _n_distinct(sample)))
    else:
        k = choose_k(sample, n_total=n)
    return None if k == 1 else _fit(sample, k)


def _renumber(ids: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Topic numbers by size (0 = largest), ties by smallest member id; vectorised."""
    if len(raw) == 0:
        return raw.astype(np.int64)
    uniq, inv, counts = np.unique(raw, return_inverse=True, return_counts=True)
    by_id = np.argsort(ids, kind="stable")
    _, first = np.unique(inv[by_id], return_index=True)  # (U,) rank of each topic's min id
    rank = np.empty(len(uniq), np.int64)
    rank[np.lexsort((first, -counts))] = np.arange(len(uniq))
    return rank[inv.ravel()]


# --------------------------------------------------------------------------- Prefect task


@task(name="taxonomy", retries=2, retry_delay_seconds=5)
def taxonomy_task(out: str, cfg: TaxonomyConfig) -> int:
    """Prefect task: (re)build topics over every clip with a caption embedding and write
    ``cluster``/``topic``; deterministic, so an unchanged database gets unchanged labels.
    Returns the number of topics."""
    from worldmill.store import Store

    store = Store(out)
    where = "embedding IS NOT NULL AND caption IS NOT NULL AND caption != ''"
    n = store.count("clips", where)  # rejected clips carry no caption
    if n == 0:
        return 0
    meta = store.clip_table(["clip_id", "caption", "cluster", "topic"], where=where)
    ids = meta["clip_id"].to_numpy(zero_copy_only=False).astype(str)
    row_of = {c: i for i, c in enumerate(ids)}
    # Pass 1: the k-means sample (all rows up to FIT_ROWS), streamed.
    pick = np.arange(n)
    if n > FIT_ROWS:
        pick = np.sort(np.random.default_rng(0).choice(n, FIT_ROWS, replace=False))
    want = np.zeros(n, bool)
    want[pick] = True
    sample = np.zeros((len(pick), 0), np.float32)
    parts: dict[int, np.ndarray] = {}
    for batch, rows in _embedding_batches(store, where, row_of):
        sel = want[rows]
        if sel.any():
            parts.update(zip(rows[sel].tolist(), normalise(batch[sel]), strict=True))
    sample = np.stack([parts[r] for r in pick]) if parts else sample  # (S, 384)
    km = _fit_topics(sample, n, cfg)
    # Pass 2: assign every clip, batch by batch.
    raw = np.zeros(n, np.int64)
    if km is not None:
        for batch, rows in _embedding_batches(store, where, row_of):
            raw[rows] = _assign(km, normalise(batch))
    topics = _renumber(ids, raw)
    captions = meta["caption"].fill_null("").to_pylist()
    names = topic_labels(captions, topics, cfg.labels_per_topic)
    label = np.asarray([names[int(t)] for t in range(int(topics.max()) + 1)], dtype=object)
    old_c = meta["cluster"].cast(pa.int64()).fill_null(-1).to_numpy()
    old_t = meta["topic"].fill_null("").to_numpy(zero_copy_only=False)
    changed = (old_c != topics) | (old_t != label[topics])
    store.update_clip_columns(
        {
            "clip_id": ids[changed],
            "cluster": topics[changed].astype(np.int32),
            "topic": label[topics[changed]],
        }
    )
    return len(np.unique(topics))


def _embedding_batches(store, where: str, row_of: dict[str, int]):
    """Yield ``((B, 384) float32 embeddings, (B,) rows of them)`` streamed from LanceDB."""
    for batch in store.clip_batches(["clip_id", "embedding"], where, ASSIGN_CHUNK):
        col = batch["embedding"]
        emb = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
        rows = np.fromiter((row_of[c] for c in batch["clip_id"].to_pylist()), np.int64)
        yield emb, rows
