"""Acceptance (slow): the CPU-sized default Genie run on CoinRun rollouts.

``bench/genie.py`` end to end through the real CLI -- rollouts (64 episodes x 300 frames,
CoinRun's default frame skip 3), curate (30-frame clips with actions), DV tokenizer,
``lam``, ``dynamics`` with their defaults (60 clips held out) -- then Genie's must-shows on
held-out episodes: the latent actions inferred from the real video control the generated
frames better than random ones (``delta_t_psnr > 0``) and say which simulator action was
taken (probe accuracy > 2x the majority-class rate). Figures and minutes: bench/RESULTS.md.

Met since round 4 (frame skip 3, 60 held-out clips): delta_t_psnr +0.08 dB on 150 windows
(argmax tokens; +0.22 drawn; standard error ~0.07 dB) and a probe at 0.452 vs chance 0.205
(2.2x) -- both by thin margins, so a drift in any stage can flip them. Round 3 had -0.17 dB and 0.353 vs 0.258.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

MET_YET = True  # delta_t_psnr > 0 and probe > 2x chance: met in round 4 (RESULTS.md)
BENCH = Path(__file__).parents[2] / "bench" / "genie.py"


@pytest.mark.slow
def test_default_cpu_genie_on_coinrun(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_genie", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    m = bench.main(["--out", str(tmp_path), "--no-prefect"])
    assert m["eval_clips"] >= 4 and m["eval_windows"] >= 8, m
    for k in ("psnr_inferred", "psnr_random", "rollout_psnr", "copy_psnr", "seconds_per_frame"):
        assert math.isfinite(m[k]) and m[k] > 0, (k, m)
    met = m["delta_t_psnr"] > 0 and m["action_probe_accuracy"] > 2 * m["action_probe_chance"]
    if MET_YET:
        assert m["delta_t_psnr"] > 0, m
        assert m["action_probe_accuracy"] > 2 * m["action_probe_chance"], m
    elif not met:  # documented shortfall: an xfail with the figures, not a pass
        pytest.xfail(
            f"delta_t_psnr {m['delta_t_psnr']:.2f} dB, probe {m['action_probe_accuracy']:.3f}"
            f" vs 2 x chance {2 * m['action_probe_chance']:.3f}"
        )
