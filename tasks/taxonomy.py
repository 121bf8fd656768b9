"""Topic taxonomy of the kept clips: k-means on caption embeddings + c-TF-IDF labels.

* k: ``cfg.n_topics`` when > 0, else chosen from the data: the best cosine silhouette over
  k = 2 .. min(10, n-1) (plus ``round(sqrt(n/2))`` for large n), scored on at most 2000
  sampled rows; the final k-means is fitted on at most 5000 sampled rows, then every clip
  is assigned; k = 1 when no k reaches a silhouette of ``MIN_SILHOUETTE`` (the
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
from prefect import task

from worldmill.config import TaxonomyConfig

MIN_SILHOUETTE = 0.1
FIT_ROWS = 5000  # k-means is fitted on at most this many sampled rows (then all assigned)
SEP = " · "
_TOKEN = r"(?u)\b[^\W\d_][^\W\d_]+\b"  # words of >= 2 letters, no digits


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _n_distinct(x: np.ndarray) -> int:
    r = np.ascontiguousarray(x.round(5))
    return len(np.unique(r.view(np.dtype((np.void, r.itemsize * r.shape[1])))))


def _kmeans(x: np.ndarray, k: int, seed: int = 0, fit_rows: int = FIT_ROWS) -> np.ndarray:
    """k-means labels ``(N,)``; fitted on at most ``fit_rows`` sampled rows, then assigned."""
    from sklearn.cluster import KMeans

    n = len(x)
    rows = np.arange(n)
    if n > fit_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, fit_rows, replace=False))
    return KMeans(n_clusters=k, random_state=seed, n_init=4).fit(x[rows]).predict(x)


def choose_k(x: np.ndarray, max_k: int = 10, seed: int = 0) -> int:
    """Number of topics for unit-norm ``(N, D)`` embeddings (see module doc)."""
    from sklearn.metrics import silhouette_score

    n = len(x)
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
    if n > 2000:  # score candidate k on a sample
        x = x[np.sort(np.random.default_rng(seed).choice(n, 2000, replace=False))]
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

    topics = sorted(int(t) for t in np.unique(labels))
    docs = [
        " ".join(c for c, lab in zip(captions, labels, strict=True) if lab == t) for t in topics
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
    x = _normalise(np.asarray(text_emb).reshape(n, -1))  # (N, D)
    if cfg.n_topics > 0:
        n_distinct = _n_distinct(x)
        k = max(1, min(cfg.n_topics, n_distinct))
    else:
        k = choose_k(x)
    raw = np.zeros(n, dtype=np.int64) if k == 1 else _kmeans(x, k)  # (N,)

    # Renumber: largest topic first, ties by smallest member id.
    uniq = np.unique(raw)
    key = {
        u: (-int((raw == u).sum()), min(i for i, r in zip(ids, raw, strict=True) if r == u))
        for u in uniq
    }
    remap = {u: rank for rank, u in enumerate(sorted(uniq, key=lambda u: key[u]))}
    topics = np.array([remap[r] for r in raw], dtype=np.int64)

    names = topic_labels(captions, topics, cfg.labels_per_topic)
    return {i: (int(t), names[int(t)]) for i, t in zip(ids, topics, strict=True)}


# --------------------------------------------------------------------------- Prefect task


@task(name="taxonomy", retries=2, retry_delay_seconds=5)
def taxonomy_task(out: str, cfg: TaxonomyConfig) -> int:
    """Prefect task: (re)build topics over every clip with a caption embedding and write
    ``cluster``/``topic``; deterministic, so an unchanged database gets unchanged labels.
    Returns the number of topics."""
    from worldmill.store import Store

    store = Store(out)
    rows = [
        r
        for r in store.clip_rows(["clip_id", "caption", "embedding", "cluster", "topic"])
        if r["embedding"] is not None and r["caption"]  # rejected clips carry no caption
    ]
    if not rows:
        return 0
    emb = np.asarray([r["embedding"] for r in rows], dtype=np.float32)  # (N, 384)
    topics = build_taxonomy(
        [r["clip_id"] for r in rows], [r["caption"] or "" for r in rows], emb, cfg
    )
    updates = [
        {
            "clip_id": r["clip_id"],
            "cluster": topics[r["clip_id"]][0],
            "topic": topics[r["clip_id"]][1],
        }
        for r in rows
        if (r["cluster"], r["topic"]) != topics[r["clip_id"]]
    ]
    store.update_clips(updates)
    return len({c for c, _ in topics.values()})
