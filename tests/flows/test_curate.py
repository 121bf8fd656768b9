"""End to end: `worldmill curate` on a generated corpus it never saw (seed 7), scored
against the corpus' ground truth: cuts, filter verdicts, duplicates, shards, bad files;
then a re-run that must add nothing."""

from __future__ import annotations

import json
import math
import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import run_cli
from worldmill.store import Store

SEED = 7  # never used while tuning detectors/thresholds (those used seeds 0 and 101)
TOL_S = 0.5  # cut tolerance, seconds


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    from worldmill.sample_data import generate

    root = tmp_path_factory.mktemp("e2e")
    raw, out = root / "raw", root / "out"
    gt = generate(raw, seed=SEED)
    r = run_cli("curate", str(raw), "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return raw, out, gt, r


def _by_name(out: Path) -> tuple[dict, list[dict], dict]:
    s = Store(out)
    videos = s.video_rows()
    clips = s.clip_rows()
    name = {v["video_id"]: Path(v["path"]).name for v in videos}
    return {Path(v["path"]).name: v for v in videos}, clips, name


def _gt_shot(gt_video: dict, clip: dict) -> dict | None:
    mid = (clip["start_s"] + clip["end_s"]) / 2
    for shot in gt_video["shots"]:
        if shot["start_s"] <= mid < shot["end_s"]:
            return shot
    return None


def test_video_statuses_match_ground_truth(curated):
    raw, out, gt, _ = curated
    videos, _, _ = _by_name(out)
    assert set(videos) == set(gt["videos"]), "every input file is registered exactly once"
    for fname, g in gt["videos"].items():
        v = videos[fname]
        assert v["status"] == g["expect_status"], (fname, v["status"], v["error"])
        if v["status"] == "failed":
            assert v["error"], f"{fname}: failed without a readable error"
        else:
            assert v["error"] == ""
        if v["status"] == "duplicate":
            orig = videos[g["copy_of"]]
            assert v["dup_of"] == orig["video_id"]


def test_cut_detection_f1(curated):
    raw, out, gt, _ = curated
    videos, clips, name = _by_name(out)
    tp = fp = fn = 0
    for fname, g in gt["videos"].items():
        if g["expect_status"] != "ok":
            continue
        vid = videos[fname]["video_id"]
        cs = sorted((c for c in clips if c["video_id"] == vid), key=lambda c: c["start_s"])
        found = [(a["end_s"] + b["start_s"]) / 2 for a, b in zip(cs, cs[1:], strict=False)]
        truth = list(g["cuts_s"])
        for t in found:
            match = [x for x in truth if abs(x - t) <= TOL_S]
            if match:
                truth.remove(match[0])
                tp += 1
            else:
                fp += 1
        fn += len(truth)
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    assert f1 >= 0.85, f"cut F1 {f1:.3f} (tp={tp} fp={fp} fn={fn})"


def test_filter_verdicts(curated):
    """Each clip's verdict matches the ground truth of the shot it comes from."""
    raw, out, gt, _ = curated
    videos, clips, name = _by_name(out)
    right, wrong = 0, []
    for c in clips:
        g = gt["videos"][name[c["video_id"]]]
        shot = _gt_shot(g, c)
        if shot is None:
            continue
        if c["reject_reason"] in ("duration",) and c["end_s"] - c["start_s"] < 2.0:
            continue  # a sliver between transitions; recorded, not scored
        if shot["expect_kept"]:
            ok = c["kept"] or c["reject_reason"] == "duplicate"
        else:
            ok = (not c["kept"]) and c["reject_reason"] == shot["expect_reason"]
        if ok:
            right += 1
        else:
            wrong.append(
                (
                    name[c["video_id"]],
                    shot["content"],
                    c["reject_reason"],
                    c["motion_score"],
                    c["quality_score"],
                    c["text_score"],
                )
            )
    acc = right / max(1, right + len(wrong))
    assert right > 10
    assert acc >= 0.9, f"verdict accuracy {acc:.2f}; wrong: {wrong}"


def test_dedup_precision_recall(curated):
    raw, out, gt, _ = curated
    videos, clips, name = _by_name(out)
    content = {}
    for c in clips:
        shot = _gt_shot(gt["videos"][name[c["video_id"]]], c)
        content[c["clip_id"]] = shot["content_id"] if shot else None
    survivors = [c for c in clips if c["kept"] or c["reject_reason"] == "duplicate"]
    groups = Counter(content[c["clip_id"]] for c in survivors if content[c["clip_id"]])
    expected = sum(n - 1 for n in groups.values() if n > 1)
    marked = [c for c in survivors if c["reject_reason"] == "duplicate"]
    correct = sum(1 for c in marked if content[c["clip_id"]] == content.get(c["dup_of"]))
    assert expected > 0, "the corpus has near-duplicates"
    precision = correct / max(1, len(marked))
    recall = correct / expected
    assert precision >= 0.9 and recall >= 0.8, f"dedup P={precision:.2f} R={recall:.2f}"
    for c in marked:
        assert c["dup_of"] and c["dup_of"] != c["clip_id"]


def test_clips_table_schema_and_values(curated):
    raw, out, gt, _ = curated
    _, clips, _ = _by_name(out)
    need = {
        "clip_id",
        "video_id",
        "start_s",
        "end_s",
        "clip_uri",
        "kept",
        "reject_reason",
        "motion_score",
        "quality_score",
        "text_score",
        "caption",
        "embedding",
        "dup_of",
        "cluster",
        "topic",
        "shard",
    }
    assert need <= set(clips[0])
    for c in clips:
        assert "." not in c["clip_id"]
        assert (c["reject_reason"] == "") == c["kept"]
        assert c["end_s"] > c["start_s"]
        # OCR reads every clip that reached the text stage still kept, and no other.
        ocr_read = c["reject_reason"] in ("", "text", "duplicate", "transcode")
        scored = c["text_score"] is not None and math.isfinite(c["text_score"])
        assert scored == ocr_read, (c["reject_reason"], c["text_score"])
        if c["kept"]:
            assert os.path.exists(c["clip_uri"])
            assert c["caption"] and c["topic"] and c["cluster"] >= 0
            assert c["shard"]
            assert len(c["embedding"]) == 384
        else:
            assert c["shard"] == ""


def test_shards_hold_every_kept_clip_once(curated):
    raw, out, gt, _ = curated
    _, clips, _ = _by_name(out)
    kept = {c["clip_id"] for c in clips if c["kept"]}
    seen = Counter()
    exts = {}
    for tar in Path(out, "shards").rglob("*.tar"):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                key, ext = m.name.split("/")[-1].split(".", 1)
                exts.setdefault(key, set()).add(ext)
                if ext == "mp4":
                    seen[key] += 1
    assert set(seen) == kept
    assert all(n == 1 for n in seen.values())
    assert all(exts[k] >= {"mp4", "json", "txt"} for k in kept)
    manifest = json.loads(Path(out, "shards", "manifest.json").read_text())
    # The manifest lists exactly the tars on disk, each with the clips it holds.
    tars = sorted(
        p.relative_to(Path(out, "shards")).as_posix() for p in Path(out, "shards").rglob("*.tar")
    )
    assert sorted(sh["path"] for sh in manifest["shards"]) == tars
    assert manifest["n_shards"] == len(tars) and manifest["n_samples"] == len(kept)
    listed = [cid for sh in manifest["shards"] for cid in sh["clip_ids"]]
    assert sorted(listed) == sorted(kept)
    by_clip = {c["clip_id"]: c["shard"] for c in clips if c["kept"]}
    for sh in manifest["shards"]:
        assert (
            sh["n_samples"] == len(sh["clip_ids"]) and sh["bucket"] == sh["path"].rsplit("/", 1)[0]
        )
        assert all(by_clip[cid] == sh["path"] for cid in sh["clip_ids"])  # clips.shard agrees
    assert sum(b["n_samples"] for b in manifest["buckets"].values()) == len(kept)
    assert Path(out, "shards", ".nv-meta", "dataset.yaml").exists()


def test_report_written(curated):
    raw, out, gt, r = curated
    reports = list(Path(out, "report").glob("*/report.md"))
    assert reports
    text = reports[0].read_text()
    assert "rejected this run" in text
    assert Path(reports[0].parent, "contact_sheet.png").stat().st_size > 1000
    assert "shards written" in r.stdout


def test_runs_and_logs_reach_prefect_before_the_temporary_server_stops(curated):
    """Without PREFECT_API_URL the CLI runs its own temporary server (on this session's
    database): both flow runs end Completed there, with their log lines, the outer flow's
    last one included (Prefect's log worker drains before the server is stopped), and the
    server is gone when the CLI has exited."""
    import re
    import urllib.request

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    _, _, _, r = curated
    url = re.search(r"temporary Prefect server on (\S+)", r.stderr).group(1)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)
    run_id = re.search(r"curate run (\S+) finished", r.stdout).group(1)
    with get_client(sync_client=True) as client:
        dag = next(
            fr
            for fr in client.read_flow_runs(limit=200)
            if str(fr.id).startswith(run_id.rsplit("-", 1)[1])
        )
        outer = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[client.read_task_run(dag.parent_task_run_id).flow_run_id])
            )
        )[0]
        for fr in (dag, outer):
            assert fr.state.is_completed(), fr.state
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[fr.id]))
            )
            assert logs and logs[-1].message == "Finished in state Completed()", logs[-3:]
        dag_lines = [lg.message for lg in client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[dag.id]))
        )]  # fmt: skip
    assert any(re.match(r"progress: \d+/\d+ videos committed", m) for m in dag_lines)


def test_committed_captions_are_embedded_while_the_last_videos_run(curated):
    """Once a task slot has no video left to take, the flow embeds the captions of the
    clips committed so far on that idle core; the embed stage after the last video then
    does the rest. Every clip ends with its caption embedding either way."""
    import re

    _, out, _, r = curated
    logs = r.stdout + r.stderr
    tasks, slots = map(
        int, re.search(r"new videos in (\d+) tasks on (\d+) task slots", logs).groups()
    )
    assert tasks > slots, "the corpus must leave a slot idle before the last video ends"
    early = re.search(r"embedded the captions of (\d+) committed clips while the last", logs)
    assert early, logs[-3000:]
    store = Store(out)
    assert 0 < int(early.group(1)) < store.count("clips")
    # it ran after the commit that left a slot idle, and before the last commit
    at = logs.index(early.group(0))
    assert logs.index(f"progress: {tasks - slots + 1}/") < at < logs.index(f"progress: {tasks}/")
    assert store.count("clips", "embedding IS NULL") == 0


def test_rerun_adds_nothing(curated):
    raw, out, gt, _ = curated
    s = Store(out)
    before = (
        s.count("videos"),
        s.count("clips"),
        sorted(p.name for p in Path(out, "shards").rglob("*.tar")),
    )
    r = run_cli("curate", str(raw), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    s = Store(out)
    after = (
        s.count("videos"),
        s.count("clips"),
        sorted(p.name for p in Path(out, "shards").rglob("*.tar")),
    )
    assert after == before
    assert "0 new" in r.stdout
