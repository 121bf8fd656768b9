"""tasks/report.py: the report files (markdown, contact sheet, histograms, summary.json)
from a real store with real transcoded clips."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.tasks._stage_clips import camera, photo
from worldmill.records import Clip
from worldmill.store import Store
from worldmill.synth import write_video
from worldmill.tasks.report import (
    THUMB_H,
    THUMB_W,
    artifact_markdown,
    build_report,
    thumb_path,
    write_thumb,
)  # fmt: skip

RUN = "20260101T000000-abcd1234"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    img = photo("astronaut", 360)
    clips = []
    for i, (kept, reason) in enumerate([(True, ""), (True, ""), (False, "motion")]):
        p = write_video(d / f"c{i}.mp4", camera(img, 24, 10 + 40 * i, 10, vx=2.0), 24)
        c = Clip(f"v_{i:04d}", "v", 0.0, 1.0, clip_uri=str(p), width=320, height=180, fps=24)
        c.kept, c.reject_reason = kept, reason
        c.motion_score, c.quality_score, c.text_score = 0.1 * i, 0.5 + 0.1 * i, 0.0
        c.visual_embedding = [1.0, float(i)]
        clips.append(c)
    Store(d).replace_clips(["v"], clips, RUN)
    old = Clip("w_0000", "w", 0.0, 1.0, clip_uri=str(d / "c0.mp4"))
    Store(d).replace_clips(["w"], [old], "an-older-run")  # not part of this run's report
    return d


SUMMARY = {
    "run_id": RUN,
    "videos_new": 1,
    "videos_skipped": 4,
    "videos_recorded": {"failed": 1},
    "run_clips": 3,
    "run_kept": 2,
    "run_reject_reasons": {"motion": 1},
    "total_clips": 4,
    "total_kept": 3,
    "shards_written": 1,
    "files_skipped": [{"path": "/raw/a|b.txt", "reason": "sidecar extension .txt"}],
    "files_failed": [{"path": "/raw/x.bin", "reason": "probe: not a readable media file"}],
}


def test_report_files_and_counts(out):
    rep = build_report(str(out), RUN, SUMMARY, None)
    d = out / "report" / RUN
    assert rep["dir"] == str(d)
    assert json.loads((d / "summary.json").read_text()) == SUMMARY
    md = (d / "report.md").read_text()
    assert md == rep["markdown"]
    for line in (
        "| videos_new | 1 |",
        "| videos_skipped | 4 |",
        "| run_kept | 2 |",
        "| videos failed | 1 |",
        "| motion | 1 |",
        "| `/raw/a\\|b.txt` | skipped | sidecar extension .txt |",
        "| `/raw/x.bin` | failed | probe: not a readable media file |",
    ):
        assert line in md.splitlines(), line
    assert set(rep["files"]) == {"contact_sheet", "score_histograms", "markdown"}


def test_contact_sheet_has_one_bordered_cell_per_clip_of_this_run(out):
    rep = build_report(str(out), RUN, SUMMARY, None)
    sheet = cv2.cvtColor(cv2.imread(rep["files"]["contact_sheet"]), cv2.COLOR_BGR2RGB)
    pad, cols = 4, 6
    assert sheet.shape == (THUMB_H + 2 * pad, cols * (THUMB_W + pad) + pad, 3)
    borders = []
    for i in range(cols):
        x = pad + i * (THUMB_W + pad)
        borders.append(sheet[pad + THUMB_H // 2, x + 1].astype(int))  # left border, middle
    green, red, empty = np.array([40, 200, 60]), np.array([220, 50, 40]), np.array([24] * 3)
    # kept first (green), then rejected (red); the older run's clip is not on the sheet
    assert [np.abs(b - green).max() < 40 for b in borders[:3]] == [True, True, False]
    assert np.abs(borders[2] - red).max() < 40
    assert all(np.abs(b - empty).max() < 10 for b in borders[3:])


def test_artifact_inlines_the_figures(out):
    rep = build_report(str(out), RUN, SUMMARY, None)
    md = artifact_markdown(rep)
    assert md.startswith(rep["markdown"])
    assert md.count("](data:image/jpeg;base64,") == 2  # contact sheet + histograms


def test_empty_run_writes_markdown_only(out):
    summary = {**SUMMARY, "run_id": "empty", "run_clips": 0}
    rep = build_report(str(out), "empty", summary, None)
    assert set(rep["files"]) == {"markdown"}
    assert "Input files not curated" in rep["markdown"]


def test_a_rejected_clip_without_a_file_shows_its_saved_thumbnail(tmp_path):
    """The one-decode path encodes only kept clips; a rejected clip's cell comes from the
    thumbnail the stages saved (``thumb_path``), with its red border and reason."""
    c = Clip("x_0000", "x", 0.0, 1.0, clip_uri="", width=320, height=180, fps=24)
    c.kept, c.reject_reason = False, "quality"
    Store(tmp_path).replace_clips(["x"], [c], "thumbs")
    (tmp_path / "clips" / "x").mkdir(parents=True)
    frames = np.zeros((5, 180, 320, 3), np.uint8)
    frames[2] = (30, 90, 250)  # the middle frame is what the thumbnail keeps
    write_thumb(frames, thumb_path(tmp_path / "clips" / "x", "x_0000"))
    rep = build_report(str(tmp_path), "thumbs", {**SUMMARY, "run_id": "thumbs"}, None)
    sheet = cv2.cvtColor(cv2.imread(rep["files"]["contact_sheet"]), cv2.COLOR_BGR2RGB)
    pad = 4
    border = sheet[pad + THUMB_H // 2, pad + 1].astype(int)
    inside = sheet[pad + 20 : pad + 40, pad + 60 : pad + 100].reshape(-1, 3).mean(0)
    assert np.abs(border - np.array([220, 50, 40])).max() < 40
    assert np.abs(inside - np.array([30, 90, 250])).max() < 12
