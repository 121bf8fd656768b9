from __future__ import annotations

from worldmill.records import Clip, Video
from worldmill.store import Store


def test_keyed_writes_are_idempotent_and_extras_become_columns(tmp_path):
    s = Store(tmp_path)
    v = Video("v1", "/x/a b.mp4", "abc", duration_s=3.0)
    s.upsert_videos([v], "r1")
    s.upsert_videos([v], "r2")
    assert s.count("videos") == 1
    c0 = Clip("v1_0000", "v1", 0, 2, visual_embedding=[0.1] * 8, motion_score=0.5)
    c1 = Clip(
        "v1_0001", "v1", 2, 4, visual_embedding=[0.2] * 8, extra={"blur_score": 3.5, "note": "x"}
    )
    s.replace_clips(["v1"], [c0])
    s.replace_clips(["v1"], [c0, c1])  # replacing a video's clips never duplicates rows
    rows = {r["clip_id"]: r for r in s.clip_rows()}
    assert set(rows) == {"v1_0000", "v1_0001"}
    assert rows["v1_0001"]["blur_score"] == 3.5 and rows["v1_0000"]["blur_score"] is None
    assert rows["v1_0001"]["note"] == "x"
    s.update_clips(
        [{"clip_id": "v1_0000", "kept": False, "reject_reason": "duplicate", "dup_of": "v1_0001"}]
    )
    assert s.count("clips", "kept = false") == 1
    row = s.clip_rows(where="clip_id = 'v1_0000'")[0]
    assert row["dup_of"] == "v1_0001" and row["motion_score"] == 0.5


def test_column_updates_leave_other_columns_and_stream(tmp_path):
    import numpy as np

    s = Store(tmp_path)
    clips = [
        Clip(f"v1_{i:04d}", "v1", i, i + 1, visual_embedding=[float(i)] * 8, quality_score=0.5)
        for i in range(5)
    ]
    s.replace_clips(["v1"], clips)
    # Arrow-native update of two columns (numpy values); an unknown id is ignored.
    n = s.update_clip_columns(
        {
            "clip_id": np.array(["v1_0001", "v1_0003", "nope"]),
            "cluster": np.array([7, 8, 9]),
            "nn_similarity": np.array([0.25, np.nan, 1.0]),  # a new column
        }
    )
    assert n == 3 and s.count("clips") == 5
    rows = {r["clip_id"]: r for r in s.clip_rows()}
    assert rows["v1_0001"]["cluster"] == 7 and rows["v1_0003"]["cluster"] == 8
    assert rows["v1_0001"]["nn_similarity"] == 0.25 and rows["v1_0000"]["nn_similarity"] is None
    assert rows["v1_0003"]["visual_embedding"] == [3.0] * 8  # vectors untouched
    assert rows["v1_0003"]["quality_score"] == 0.5 and rows["v1_0000"]["cluster"] == -1
    # Pushed-down filter and projection; streamed batches cover every row once.
    assert s.clip_table(["clip_id"], where="cluster > 0")["clip_id"].to_pylist() == [
        "v1_0001",
        "v1_0003",
    ]
    got = [c for b in s.clip_batches(["clip_id"], batch_size=2) for c in b["clip_id"].to_pylist()]
    assert sorted(got) == [c.clip_id for c in clips]
