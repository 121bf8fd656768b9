"""Acceptance (slow): the default CPU-sized diffusion run, on ``curate`` output of
``worldmill sample-data --world``, beats copying the last latent frame (Video2World) and
follows the camera motion its prompt names (Text2World) at least twice as often as chance.

The documented recipe through the real CLI: a CV tokenizer with its defaults on the default
sample shards, the 96-video world corpus (seed 0) curated with the defaults, then
``worldmill train diffusion`` with its defaults. Figures: bench/RESULTS.md.

Both are met and asserted (RESULTS.md, diffusion round 4: camera field, reversed training
windows, a first-frame pixel sample; 1,600 steps): psnr 25.42 vs baseline_psnr 24.98, and
camera_motion_accuracy 0.875 (21 of 24 Text2World samples read as the prompted motion) vs
chance 0.17, the metric's ceiling on real decoded windows 1.0.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from worldmill.training import cli
from worldmill.training.registry import resolve_config
from worldmill.training.sample_shards import write_sample_shards

CAMERA_YET = True  # camera control met since bench/RESULTS.md, diffusion round 4


@pytest.mark.slow
def test_default_cpu_diffusion_run_beats_copy_and_follows_camera_prompts(tmp_path):
    shards, tok, run = write_sample_shards(tmp_path / "shards"), tmp_path / "tok", tmp_path / "dit"
    assert cli.main(["tokenizer", "--data", str(shards), "--out", str(tok), "--no-prefect"]) == 0
    r = run_cli("sample-data", str(tmp_path / "world"), "--world", "--seed", "0")
    assert r.returncode == 0, r.stderr
    r = run_cli("curate", str(tmp_path / "world"), "--out", str(tmp_path / "worldc"), timeout=3600)
    assert r.returncode == 0, r.stderr
    args = ["diffusion", "--data", str(tmp_path / "worldc" / "shards"), "--tokenizer", str(tok)]
    assert cli.main([*args, "--out", str(run), "--no-prefect"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    default = resolve_config("diffusion", None, [f"tokenizer={tok}"])
    assert m["steps"] == default.run.steps and m["eval_clips"] == default.data.holdout
    assert m["camera_motion_chance"] == pytest.approx(1 / 6)  # six motions prompted
    assert m["camera_motion_accuracy_real"] >= 0.9  # the metric can read real motion
    assert m["psnr"] > m["baseline_psnr"], m  # Video2World beats copying the last latent
    follows = m["camera_motion_accuracy"] >= 2 * m["camera_motion_chance"]
    if CAMERA_YET:
        assert follows, m
    else:  # documented shortfall: reported as xfail, not as a pass (set CAMERA_YET when fixed)
        pytest.xfail(
            f"camera accuracy {m['camera_motion_accuracy']:.2f} vs chance "
            f"{m['camera_motion_chance']:.2f} (psnr {m['psnr']:.2f} > {m['baseline_psnr']:.2f})"
        )
