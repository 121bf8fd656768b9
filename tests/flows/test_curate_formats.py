"""Every format ffmpeg reads goes through the real curate flow, and the run summary lists
every file it did not curate with why (nothing is skipped silently)."""

from __future__ import annotations

import numpy as np

from tests.tasks._stage_clips import camera, photo
from worldmill.config import CurateConfig, StageSpec
from worldmill.store import Store
from worldmill.synth import write_video


def test_theora_ogg_is_curated_and_sidecars_are_listed(tmp_path):
    from worldmill.flows.curate import curate

    raw = tmp_path / "raw"
    raw.mkdir()
    frames = camera(photo("astronaut", 360), 72, 20, 20, vx=3.0)  # 3 s pan, 320x180
    write_video(raw / "take3.ogg", frames, 24, codec="libtheora", extra_args=["-q:v", "7"])
    (raw / "take3.txt").write_text("camera A, take 3")
    (raw / "blob.bin").write_bytes(np.random.default_rng(0).bytes(8192))
    cfg = CurateConfig(
        input=str(raw),
        out=str(tmp_path / "out"),
        stages=[StageSpec(name="limits")],
        dask={"n_workers": 1, "processes": "no"},
    )
    s = curate(cfg)
    assert s["videos_new"] == 1 and s["files_seen"] == 3
    assert s["files_skipped"] == [
        {"path": str(raw / "take3.txt"), "reason": "sidecar extension .txt (skip_extensions)"}
    ]
    assert [f["path"] for f in s["files_failed"]] == [str(raw / "blob.bin")]
    assert "not a readable media file" in s["files_failed"][0]["reason"]
    # The Theora video was split, transcoded and sharded like any mp4.
    store = Store(tmp_path / "out")
    vids = {v["path"]: v for v in store.video_rows()}
    assert vids[str(raw / "take3.ogg")]["status"] == "ok"
    assert vids[str(raw / "take3.ogg")]["codec"] == "theora"
    assert vids[str(raw / "blob.bin")]["status"] == "failed"
    clips = store.clip_rows()
    assert clips and all(c["kept"] and c["shard"] for c in clips)
    # The report lists both files with their verdicts.
    md = (tmp_path / "out" / "report" / s["run_id"] / "report.md").read_text()
    assert f"| `{raw / 'take3.txt'}` | skipped | sidecar extension .txt" in md
    assert f"| `{raw / 'blob.bin'}` | failed | probe: not a readable media file" in md
