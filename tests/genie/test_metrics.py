"""Genie metrics and data helpers on synthetic inputs: codebook usage, the action probe
(accuracy vs majority-class chance), true actions read from a shard, MaskGIT masks."""

from __future__ import annotations

import io
import json

import numpy as np
import webdataset as wds

from worldmill.genie import data as gd
from worldmill.genie.metrics import action_probe, codebook_usage
from worldmill.training import data


def test_codebook_usage():
    assert codebook_usage(np.array([0, 1, 2, 3] * 5), 4) == {
        "codes_used": 1.0,
        "code_perplexity": 4.0,
    }
    u = codebook_usage(np.zeros(10, dtype=int), 8)
    assert u["codes_used"] == 1 / 8 and u["code_perplexity"] == 1.0


def test_action_probe_reads_actions_from_vectors_and_reports_chance():
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.choice(3, n, p=[0.6, 0.3, 0.1])
        z = np.eye(3)[y] * 2 + rng.normal(0, 0.3, (n, 3))  # the vector says the action
        return z, rng.integers(0, 4, n), y

    tr, te = split(400), split(200)
    m = action_probe(tr, te, num_codes=4)
    assert m["action_probe_accuracy"] > 0.95
    assert abs(m["action_probe_chance"] - (te[2] == 0).mean()) < 1e-9
    noise = (rng.normal(0, 1, (400, 3)), tr[1], tr[2])  # vectors that know nothing
    m0 = action_probe(noise, (rng.normal(0, 1, (200, 3)), te[1], te[2]), 4)
    assert m0["action_probe_accuracy"] < m0["action_probe_chance"] + 0.1


def test_true_actions_from_a_shard(tmp_path):
    tar = tmp_path / "s.tar"
    acts = np.arange(30, dtype=np.int64) % 15
    buf = io.BytesIO()
    np.save(buf, acts)
    with wds.TarWriter(str(tar)) as w:
        w.write({"__key__": "c0", "mp4": b"x", "json": json.dumps({"clip_id": "c0"}).encode(),
                 "actions.npy": buf.getvalue()})  # fmt: skip
        w.write({"__key__": "c1", "mp4": b"y", "json": json.dumps({"clip_id": "c1"}).encode()})
    refs = data.index_shards(tmp_path)
    assert np.array_equal(gd.true_actions(refs[0]), acts)
    assert gd.true_actions(refs[1]) is None


def test_maskgit_masks_spare_frame_zero_and_follow_the_rate():
    class Cache:
        tokens = {"a": np.zeros((10, 4, 4), np.int32)}
        codes = {"a": np.arange(9) % 8}

    ref = data.ClipRef("a", "", "a.mp4", {})
    s = gd.TokenWindowStream([ref] * 4, Cache(), 5, 64, 0.5, 0.0, seed=1)
    b = s.batch(0)
    assert b["tokens"].shape == (64, 5, 4, 4) and b["actions"].shape == (64, 4)
    assert not b["mask"][:, 0].any()
    rate = b["mask"][:, 1:].float().mean()
    assert 0.6 < rate < 0.9  # E[r] = 0.75 for r ~ U(0.5, 1)
    assert all(bool((b[k] == s.batch(0)[k]).all()) for k in b)  # a pure function of the step
    clean = gd.TokenWindowStream([ref] * 4, Cache(), 5, 64, 0.5, 1.0, seed=1).batch(0)
    assert not clean["mask"][:, :-1].any() and clean["mask"][:, -1].any()
