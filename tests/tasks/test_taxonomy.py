"""Taxonomy on real caption embeddings from the shipped sentence-transformers model."""

from __future__ import annotations

import numpy as np
import pytest

from worldmill.config import EmbedConfig, TaxonomyConfig
from worldmill.tasks.embed import embed_texts
from worldmill.tasks.taxonomy import build_taxonomy, choose_k, topic_labels

BEACH = [
    f"A drone shot of a {w} ocean beach with waves and sand, the camera pans left"
    for w in ("blue", "calm", "sunny", "stormy", "tropical", "quiet")
]
CITY = [
    f"A busy city street at night with {w} cars and neon signs, text overlay"
    for w in ("red", "many", "parked", "yellow", "fast")
]


@pytest.fixture(scope="module")
def emb() -> np.ndarray:
    return embed_texts(BEACH + CITY, EmbedConfig())


def test_two_caption_groups_are_separated_and_labelled(emb):
    caps = BEACH + CITY
    ids = [f"c{i:02d}" for i in range(len(caps))]
    out = build_taxonomy(ids, caps, emb, TaxonomyConfig())
    beach_topics = {out[i][0] for i in ids[: len(BEACH)]}
    city_topics = {out[i][0] for i in ids[len(BEACH) :]}
    assert len(beach_topics) == 1 and len(city_topics) == 1 and beach_topics != city_topics
    assert out["c00"][0] == 0  # the larger group is topic 0
    beach_label, city_label = out["c00"][1], out[ids[-1]][1]
    assert len(beach_label.split(" · ")) == 3 == len(city_label.split(" · "))
    assert any(w in beach_label for w in ("beach", "ocean", "waves", "drone", "sand"))
    assert any(w in city_label for w in ("city", "street", "neon", "cars", "night"))
    for stop in (" a ", " the ", " with "):
        assert stop not in f" {beach_label} " and stop not in f" {city_label} "
    # Deterministic.
    assert build_taxonomy(ids, caps, emb, TaxonomyConfig()) == out


def test_fixed_topic_count_and_labels_per_topic(emb):
    caps = BEACH + CITY
    ids = [f"c{i:02d}" for i in range(len(caps))]
    out = build_taxonomy(ids, caps, emb, TaxonomyConfig(n_topics=3, labels_per_topic=1))
    assert {t for t, _ in out.values()} == {0, 1, 2}
    assert all(" · " not in label and label for _, label in out.values())


def test_tiny_inputs(emb):
    cfg = TaxonomyConfig()
    assert build_taxonomy([], [], np.zeros((0, 384)), cfg) == {}
    one = build_taxonomy(["a"], [BEACH[0]], emb[:1], cfg)
    assert one["a"][0] == 0 and "beach" in one["a"][1]
    two_far = build_taxonomy(["a", "b"], [BEACH[0], CITY[0]], emb[[0, len(BEACH)]], cfg)
    assert two_far["a"][0] != two_far["b"][0]
    two_close = build_taxonomy(["a", "b"], BEACH[:2], emb[:2], cfg)
    assert two_close["a"][0] == two_close["b"][0] == 0
    empty_caps = build_taxonomy(["a", "b"], ["", ""], embed_texts(["", ""], EmbedConfig()), cfg)
    assert empty_caps == {"a": (0, "topic 0"), "b": (0, "topic 0")}


def test_one_homogeneous_group_is_one_topic():
    x = np.tile(np.eye(8, dtype=np.float32)[0], (6, 1))  # six identical embeddings
    assert choose_k(x) == 1


def test_ctfidf_prefers_distinctive_terms():
    caps = ["red car street", "red car road", "green tree forest", "green tree park"]
    labels = topic_labels(caps, np.array([0, 0, 1, 1]), n_terms=2)
    assert "red car" in labels[0] or "red" in labels[0]
    assert "green" in labels[1] and "red" not in labels[1]
