"""Acceptance (slow): the default CPU-sized AR run beats copying the last latent frame.

The documented recipe through the real CLI (README, AR section): the world-model corpus
(``worldmill sample-data DIR --world``: 96 single-shot videos, one camera motion each)
curated by ``worldmill curate``; a 1,000-code DV tokenizer (``fsq_levels=[8, 5, 5, 5]``,
default steps) on the same curated shards with the same 16 whole videos held out (so the
tokenizer never sees the AR's held-out videos); then ``worldmill train ar`` with its
defaults on the curated shards. ``psnr`` is the default prediction
(``sample.predict``), ``baseline_psnr`` copies the last context latent frame through the
same tokenizer. The AR defaults hold 16 more whole videos out of training for validation
(``data.val``; the copy bias of ``sample.calibrate`` is picked there) and copy from the
previous frame's 3 x 3 neighbours (``model.copy_radius=1``). Figures: bench/RESULTS.md
("AR world model, round 4" and "round 5").

Measured (bench/RESULTS.md, round 4): this recipe on the coordinator's seed-0 corpus (the
default 150 steps, the round-3 tokenizer) gave held-out psnr 21.018 vs baseline_psnr 21.005
(+0.013 dB; SSIM 0.557 vs 0.546; validation videos 22.92 vs 22.58) -- a thin margin; the
end-to-end run of this test then failed (-0.044 dB). Round 5: with 8 validation videos the
validation set under-represents the procedural scenes the model loses on; 16 validation
videos (the default now) gave +0.108 dB on the round-4 upstream and +0.086 dB on this
test's own earlier upstream (its curate output and tokenizer, reused) -- still thin.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from worldmill.training import cli
from worldmill.training.registry import resolve_config

DV_CPU = ["--set", "model.kind=dv", "--set", "model.fsq_levels=[8, 5, 5, 5]"]


@pytest.mark.slow
def test_default_cpu_ar_run_beats_copy_last_latent_frame(tmp_path):
    raw, cur = tmp_path / "world", tmp_path / "curated"
    r = run_cli("sample-data", str(raw), "--world", timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("curate", str(raw), "--out", str(cur), timeout=3 * 3600)
    assert r.returncode == 0, r.stderr[-2000:]
    tok, run = tmp_path / "tok", tmp_path / "ar"
    shards = str(cur / "shards")
    args = ["tokenizer", "--data", shards, "--out", str(tok), "--no-prefect", *DV_CPU]
    assert cli.main([*args, "--set", "data.holdout=16"]) == 0
    args = ["ar", "--data", shards, "--tokenizer", str(tok), "--out", str(run)]
    assert cli.main([*args, "--no-prefect", "--set", "data.holdout=16"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    default = resolve_config("ar", None, [f"tokenizer={tok}"])
    assert m["steps"] == default.run.steps and m["vocab_size"] == 1000
    assert m["eval_clips"] == 16 and m["predict"] == default.sample.predict
    assert m["calibration"]["val_clips"] >= default.data.val and "val_psnr" in m
    assert m["params"] == 2125642  # the cpu preset with the 3 x 3 neighbour-copy head
    assert m["psnr"] > 0 and m["baseline_psnr"] > 0 and m["tokenizer_psnr"] > 0, m
    assert m["psnr"] > m["baseline_psnr"], m
