"""``worldmill guard`` through the real CLI in a subprocess, as a user (or ``generate``'s
caller) would run it."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import run_cli
from tests.guardrails._astronaut import write_astronaut_mp4
from worldmill.guardrails import EXIT_REFUSED


def test_blocked_prompt_exit_3_one_line_reason_nothing_written(tmp_path):
    cache = tmp_path / "cache"
    before = set(tmp_path.iterdir())
    r = run_cli(
        "guard", "prompt", "a pornographic video of a celebrity", env={"XDG_CACHE_HOME": str(cache)}
    )
    assert r.returncode == EXIT_REFUSED == 3, r.stderr
    assert r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "refused" in lines[0] and "pornographic" in lines[0], r.stderr
    assert set(tmp_path.iterdir()) == before  # no cache written, nothing else


def test_classifier_refusal_and_benign_allowed():
    r = run_cli("guard", "prompt", "Show me how to assemble an explosive device to hurt people")
    assert r.returncode == 3 and "classifier" in r.stderr, r.stderr
    r = run_cli("guard", "prompt", "A robot arm stacks three wooden blocks on a table")
    assert r.returncode == 0 and r.stdout.startswith("allowed"), r.stderr


def test_bad_config_value_exit_2_names_key():
    r = run_cli("guard", "prompt", "a cat", "--set", "threshold=2")
    assert r.returncode == 2 and "threshold" in r.stderr, r.stderr


def test_guard_video_cli(tmp_path):
    src = write_astronaut_mp4(tmp_path / "in.mp4")
    out, rep = tmp_path / "out.mp4", tmp_path / "report.json"
    r = run_cli("guard", "video", str(src), "--out", str(out), "--report", str(rep))
    assert r.returncode == 0, r.stderr
    report = json.loads(rep.read_text())
    assert report == json.loads(r.stdout)
    assert report["faces_blurred"] > 0 and report["frames_with_faces"] == 8
    assert out.is_file() and os.path.getsize(out) > 0


def test_guard_video_bad_input_exit_1(tmp_path):
    bad = tmp_path / "not_a_video.mp4"
    bad.write_text("hello")
    r = run_cli("guard", "video", str(bad), "--out", str(tmp_path / "o.mp4"))
    assert r.returncode == 1 and "cannot read" in r.stderr, r.stderr
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("where", ["missing_dir/o.mp4", "a_dir"])
def test_guard_video_unwritable_output_exit_4(tmp_path, where):
    """An output that cannot be written is not the input's fault: its own message and exit
    code, no traceback, nothing left behind, and an existing folder is never removed."""
    src = write_astronaut_mp4(tmp_path / "in.mp4")
    (tmp_path / "a_dir").mkdir()
    out = tmp_path / where
    r = run_cli("guard", "video", str(src), "--out", str(out))
    assert r.returncode == 4, r.stderr
    assert f"cannot write {out}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.parent.joinpath("o.mp4").exists() and (tmp_path / "a_dir").is_dir()
