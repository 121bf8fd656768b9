"""Acceptance (slow): the default CPU-sized AR run beats copying the last latent frame.

The documented recipe through the real CLI: default sample shards (16 panning photos,
96x96; 4 whole photos held out), a 1,000-code DV tokenizer (``fsq_levels=[8, 5, 5, 5]``,
default steps), then ``worldmill train ar`` with its defaults. Figures: bench/RESULTS.md.
"""

from __future__ import annotations

import json

import pytest

from worldmill.training import cli
from worldmill.training.registry import resolve_config
from worldmill.training.sample_shards import write_sample_shards

DV_CPU = ["--set", "model.kind=dv", "--set", "model.fsq_levels=[8, 5, 5, 5]"]


@pytest.mark.slow
def test_default_cpu_ar_run_beats_copy_last_latent_frame(tmp_path):
    shards = write_sample_shards(tmp_path / "shards")
    tok, run = tmp_path / "tok", tmp_path / "ar"
    assert (
        cli.main(["tokenizer", "--data", str(shards), "--out", str(tok), "--no-prefect", *DV_CPU])
        == 0
    )
    args = ["ar", "--data", str(shards), "--tokenizer", str(tok), "--out", str(run)]
    assert cli.main([*args, "--no-prefect"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    default = resolve_config("ar", None, [f"tokenizer={tok}"])
    assert m["steps"] == default.run.steps and m["vocab_size"] == 1000
    assert m["eval_clips"] == default.data.holdout
    assert m["psnr"] > m["baseline_psnr"], m
