"""Faults and extension: a SIGKILL mid-run then a re-run loses nothing and duplicates
nothing; a stage living outside the package runs from config and its scores land in
`clips`; bad config values fail fast with a clear message."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections import Counter
from pathlib import Path

from tests.conftest import WORLDMILL, run_cli
from worldmill.store import Store


def test_kill_midway_then_rerun(small_corpus, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ)
    p = subprocess.Popen(
        [*WORLDMILL, "curate", str(small_corpus), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    # Kill once some (not all) work is done: the first clip files exist.
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if list(Path(out, "clips").rglob("*.mp4")):
            break
        time.sleep(0.2)
    assert p.poll() is None, "run finished before it could be killed"
    time.sleep(1.0)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()

    r = run_cli("curate", str(small_corpus), "--out", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    s = Store(out)
    clips = s.clip_rows()
    ids = Counter(c["clip_id"] for c in clips)
    assert all(n == 1 for n in ids.values()), "no duplicate clip rows"
    vids = s.video_rows()
    assert Counter(v["path"] for v in vids).most_common(1)[0][1] == 1
    ok = [v for v in vids if v["status"] == "ok"]
    assert ok and all(any(c["video_id"] == v["video_id"] for c in clips) for v in ok), (
        "no lost clips"
    )
    kept = {c["clip_id"] for c in clips if c["kept"]}
    in_shards = Counter()
    for tar in Path(out, "shards").rglob("*.tar"):
        with tarfile.open(tar) as t:
            in_shards.update(
                m.name.split(".", 1)[0] for m in t.getmembers() if m.name.endswith(".mp4")
            )
    assert set(in_shards) == kept and all(n == 1 for n in in_shards.values())


PLUGIN = '''
"""A data engineer's own filter: rejects clips whose mean brightness is below a bound."""
from worldmill.records import Clip


def run(clip: Clip, view, min_brightness: float = 0.0) -> Clip:
    frames = view.frames(width=64, sample_fps=2.0)
    b = float(frames.mean()) / 255.0
    clip.extra["brightness_score"] = b
    if b < min_brightness:
        clip.reject("brightness")
    return clip
'''


def test_external_stage_from_config(small_corpus, tmp_path):
    mod_dir = tmp_path / "plugins"
    mod_dir.mkdir()
    (mod_dir / "my_brightness.py").write_text(PLUGIN)
    cfg = tmp_path / "curate.yaml"
    cfg.write_text(
        "stages:\n"
        "  - {name: limits}\n"
        "  - {name: brightness, module: my_brightness, params: {min_brightness: 0.99}}\n"
    )
    out = tmp_path / "out"
    env = {"PYTHONPATH": f"{mod_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = run_cli("curate", str(small_corpus), "--out", str(out), "--config", str(cfg), env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    clips = Store(out).clip_rows()
    scored = [c for c in clips if c.get("brightness_score") is not None]
    assert scored, "the plug-in's scores are a column of clips"
    assert all(0.0 <= c["brightness_score"] <= 1.0 for c in scored)
    # min_brightness=0.99 rejects every transcoded clip, naming the plug-in stage
    assert all(not c["kept"] and c["reject_reason"] == "brightness" for c in scored)


def test_bad_config_value_is_a_clear_error(small_corpus, tmp_path):
    r = run_cli(
        "curate", str(small_corpus), "--out", str(tmp_path / "o"), "--set", "split.min_clip_s=-3"
    )
    assert r.returncode == 2
    assert "split.min_clip_s" in r.stderr and "greater than 0" in r.stderr
    r = run_cli("curate", str(small_corpus), "--out", str(tmp_path / "o"), "--set", "nosuch.key=1")
    assert r.returncode == 2 and "nosuch" in r.stderr
    r = run_cli(
        "curate",
        str(small_corpus),
        "--out",
        str(tmp_path / "o"),
        "--set",
        "stages.0.module=no_such_mod",
    )
    assert r.returncode == 2 and "no_such_mod" in r.stderr  # config error, before any work
    assert not Path(tmp_path / "o" / "shards").exists() or not list(
        Path(tmp_path / "o" / "shards").rglob("*.tar")
    )


def test_missing_input_is_a_clear_error(tmp_path):
    r = run_cli("curate", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "input not found" in r.stderr


def test_hostile_names_never_reach_a_shell(small_corpus, tmp_path):
    """Names with $(...), backticks, quotes and ; are curated like any other file."""
    raw = tmp_path / "raw"
    raw.mkdir()
    gt = json.loads((small_corpus / "ground_truth.json").read_text())
    good = sorted(n for n, g in gt["videos"].items() if g["expect_status"] == "ok")
    src = small_corpus / good[0]
    for name in ["a $(touch PWNED) b.mp4", "q'uo\"te;`touch PWNED2`.mp4", "naïve 東京.mp4"]:
        shutil.copy(src, raw / name)
    out = tmp_path / "out"
    r = run_cli("curate", str(raw), "--out", str(out), "--set", "dedup.semantic=false")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list(Path.cwd().glob("PWNED*")) and not list(raw.glob("PWNED*"))
    vids = Store(out).video_rows()
    assert sorted(v["status"] for v in vids) == ["duplicate", "duplicate", "ok"]
    assert {v["path"] for v in vids} == {str(raw / n) for n in os.listdir(raw)}
