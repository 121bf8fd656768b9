"""Shard index, deterministic resumable clip stream, and sequence packing."""

import torch

from worldmill.training import data


def test_index_reads_every_clip_with_its_metadata(shards):
    refs = data.index_shards(shards)
    assert len(refs) == 8
    assert [r.clip_id for r in refs] == sorted(r.clip_id for r in refs)
    assert all(r.meta["width"] == 64 and r.member.endswith(".mp4") for r in refs)
    frames = data.decode_clip(refs[0], width=64)
    assert frames.shape == (24, 64, 64, 3)


def test_holdout_is_stable_and_disjoint(shards):
    refs = data.index_shards(shards)
    train, held = data.split_holdout(refs, 2)
    train2, held2 = data.split_holdout(list(reversed(refs)), 2)
    assert {r.clip_id for r in held} == {r.clip_id for r in held2}
    assert len(held) == 2 and not {r.clip_id for r in held} & {r.clip_id for r in train}


def test_stream_is_a_pure_function_of_step_and_ranks_partition_the_global_batch(shards):
    train, _ = data.split_holdout(data.index_shards(shards), 2)
    kw = dict(batch_size=2, num_frames=5, crop_size=32, width=64, seed=3)
    single = data.ResumableClipStream(train, **{**kw, "batch_size": 4})
    r0 = data.ResumableClipStream(train, **kw, rank=0, world=2)
    r1 = data.ResumableClipStream(train, **kw, rank=1, world=2)
    fresh = data.ResumableClipStream(train, **kw, rank=1, world=2)
    for step in (0, 1, 5, 2):  # 6 clips, 4 per step: step 1 spans the epoch boundary
        b = single.batch(step)
        assert b.shape == (4, 3, 5, 32, 32)
        torch.testing.assert_close(torch.cat([r0.batch(step), r1.batch(step)]), b)
    # a new stream (a resumed process) at step 5 sees the same clips and crops
    torch.testing.assert_close(fresh.batch(5), r1.batch(5))
    assert r0.position(5) == 20
    # different steps differ (random crops / clip order)
    assert not torch.equal(single.batch(0), single.batch(1))


def test_each_epoch_visits_every_training_clip_once(shards):
    train, _ = data.split_holdout(data.index_shards(shards), 2)
    s = data.ResumableClipStream(train, 1, 5, 32, 64, seed=0)
    for e in range(2):
        seen = [s.ref_at(p).clip_id for p in range(e * 6, e * 6 + 6)]
        assert sorted(seen) == sorted(r.clip_id for r in train)


def test_pack_builds_block_diagonal_causal_mask():
    seqs = [torch.arange(3), torch.arange(10, 12), torch.arange(20, 24)]
    p = data.pack(seqs, max_len=10, pad_value=-1)
    assert p.tokens.tolist() == [0, 1, 2, 10, 11, 20, 21, 22, 23, -1]
    assert p.seq_ids.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, -1]
    assert p.position_ids.tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3, 0]
    m = p.attention_mask(causal=True)
    assert m[4, 3] and not m[3, 4]  # causal inside sequence 1
    assert not m[3, 2] and not m[5, 4]  # never across sequences
    assert m[9].tolist() == [False] * 9 + [True]  # padding attends only to itself
    full = p.attention_mask(causal=False)
    assert full[3, 4] and not full[0, 3]
    assert full[:3, :3].all() and full[5:9, 5:9].all()


def test_pack_greedy_fills_bins_without_overflow():
    seqs = [torch.zeros(n) for n in (7, 3, 5, 2, 6, 1)]
    bins = data.pack_greedy(seqs, max_len=8)
    assert sorted(i for b in bins for i in b) == list(range(6))
    assert all(sum(len(seqs[i]) for i in b) <= 8 for b in bins)
    assert len(bins) == 3  # 24 tokens in bins of 8: optimal


def test_decode_keeps_the_short_side_for_landscape_and_portrait_clips(tmp_path):
    """curate writes 16:9 (and portrait) clips: the short side must reach the crop size."""
    import numpy as np
    import webdataset as wds

    from worldmill.synth import write_video

    rng = np.random.default_rng(0)
    shard_dir = tmp_path / "shards" / "180p_16x9_0-5s"
    shard_dir.mkdir(parents=True)
    with wds.TarWriter(str(shard_dir / "r-000000.tar")) as tw:
        for key, (h, w) in {"land_0000": (180, 320), "port_0000": (320, 180)}.items():
            mp4 = write_video(
                tmp_path / f"{key}.mp4", rng.integers(0, 255, (9, h, w, 3), dtype=np.uint8), 8
            )
            meta = {"clip_id": key, "width": w, "height": h, "fps": 8.0, "num_frames": 9}
            tw.write({"__key__": key, "mp4": mp4.read_bytes(), "json": meta, "txt": "x"})
    refs = {r.clip_id: r for r in data.index_shards(tmp_path / "shards")}
    land = data.decode_clip(refs["land_0000"], 96)
    port = data.decode_clip(refs["port_0000"], 96)
    assert land.shape[1:3] == (96, 170) and port.shape[1:3] == (170, 96)
    assert data.crop(land, 9, 96, None).shape == (9, 96, 96, 3)


def test_holdout_never_splits_a_source_video():
    refs = [
        data.ClipRef(clip_id=f"v{v}_{i:04d}", shard="", member="", meta={"video_id": f"v{v}"})
        for v in range(5)
        for i in range(3)
    ]
    train, held = data.split_holdout(refs, 2)
    assert len(held) == 3  # one whole video (3 clips) covers the 2 asked for
    assert {r.meta["video_id"] for r in train}.isdisjoint({r.meta["video_id"] for r in held})
