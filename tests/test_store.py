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
